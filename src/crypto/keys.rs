//! The node's long-term keys and their files in the state directory.
//!
//! Files are created with mode 0600 inside a 0700 directory, written to a temporary name first and
//! then hard-linked into place, so a key is never overwritten and never half-written. A key file
//! that other users can read is refused rather than used.
//!
//! File format (text, so a human can tell what a file is):
//! ```text
//! globalnet-secret-key v1 <kind>
//! <64 lowercase hex digits>
//! ```

use crate::crypto::sigcache::Verified;
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::rngs::OsRng;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use x25519_dalek::{PublicKey as X25519Public, StaticSecret};

use super::address_of;

/// File holding the relay identity (Ed25519 seed): signs relay records.
pub const RELAY_IDENTITY_FILE: &str = "relay_identity.key";
/// File holding the relay's X25519 link key (the WireGuard static key of its links).
pub const RELAY_LINK_FILE: &str = "relay_link.key";
/// File holding the relay's current X25519 onion key (circuit handshakes; rotated by the circuit
/// layer, docs/protocol.md section 14.3).
pub const RELAY_ONION_FILE: &str = "relay_onion.key";
/// File holding the default service identity (Ed25519 seed): the node's own overlay address.
pub const SERVICE_DEFAULT_FILE: &str = "service_default.key";

const MAGIC: &str = "globalnet-secret-key v1";
const MAX_KEY_FILE_LEN: u64 = 4096;

/// What can go wrong with key files. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No key files yet.
    #[error(
        "no key at {}; create the keys with `globalnet keygen --state-dir {}`",
        path.display(),
        KeyError::missing_hint(path)
    )]
    Missing {
        /// The file that is absent.
        path: PathBuf,
    },
    /// A key file others can read or write.
    #[error(
        "key file {} has mode {:04o}, so other users may read it; fix with `chmod 600 {}`",
        path.display(),
        mode & 0o7777,
        path.display()
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file that is not a GlobalNet key of the expected kind.
    #[error(
        "{} is not a usable GlobalNet key ({reason}); move it away to create a new key, \
         which changes this node's identity",
        path.display()
    )]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An I/O error on a path.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path being read or written.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl KeyError {
    fn missing_hint(path: &Path) -> String {
        path.parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The kinds of secret key file.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum KeyKind {
    /// An Ed25519 seed (relay identity, service identity).
    Ed25519,
    /// An X25519 secret (link key).
    X25519,
}

impl KeyKind {
    fn name(self) -> &'static str {
        match self {
            KeyKind::Ed25519 => "ed25519",
            KeyKind::X25519 => "x25519",
        }
    }
}

/// The long-term keys of one node.
pub struct NodeKeys {
    /// The relay identity: public, signs relay records, tied to the node's IP.
    pub relay_identity: SigningKey,
    /// The relay's X25519 link key: public, used for WireGuard links.
    pub relay_link: StaticSecret,
    /// The relay's current X25519 onion key: public, used for circuit handshakes.
    pub relay_onion: StaticSecret,
    /// The default service identity: anonymous; its address is the node's overlay address. It
    /// must never appear in anything tied to the relay identity or the node's IP.
    pub service: SigningKey,
}

impl fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Public fingerprints only; the service key is not shown at all, because logs that carry
        // the relay identity must not also carry the service identity.
        f.debug_struct("NodeKeys")
            .field(
                "relay_identity",
                &fingerprint(&self.relay_identity.verifying_key().to_bytes()),
            )
            .field("service", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Decodes an Ed25519 public key received from the network (docs/protocol.md 3.1). Every key
/// that becomes an identity, an address, a signer or a Diffie–Hellman key passes here. Refused:
///
/// - bytes that are not a point, or a non-canonical encoding (`y ≥ p`, or `x = 0` with the sign
///   bit set): two encodings of one point would be two addresses of one key;
/// - points of small order (no secret stands behind them);
/// - points with a torsion component (`P + T`, `T` of order 2, 4 or 8): X25519 and cofactored
///   arithmetic clear the cofactor, so the holder of `p` could prove each of the eight `P + T`
///   as well as `P`, each a different address.
///
/// `-P` is accepted: it is a key of its own, whose secret `-p` only the holder of `p` knows, so it
/// gives that holder nothing a fresh key would not (threat model 6.4).
pub fn decode_public_key(bytes: &[u8; 32]) -> Option<VerifyingKey> {
    // The torsion check is a full scalar multiplication, and the same keys (relays' identities
    // in every DHT answer and record) arrive again and again: keys that passed are remembered
    // (crypto::sigcache; only passes are stored, so a refused key is checked every time).
    let memo = Verified::key(LABEL_CHECKED_KEY, bytes);
    if memo.seen() {
        return VerifyingKey::from_bytes(bytes).ok();
    }
    let key = VerifyingKey::from_bytes(bytes).ok()?;
    let point = key.to_edwards();
    // `VerifyingKey::to_bytes` echoes the input; re-encoding the decoded point is what catches a
    // non-canonical encoding.
    if key.is_weak() || !point.is_torsion_free() || point.compress().to_bytes() != *bytes {
        return None;
    }
    memo.remember();
    Some(key)
}

/// Whether `bytes` would pass [`decode_public_key`], without decoding a key that passed before.
pub fn valid_public_key(bytes: &[u8; 32]) -> bool {
    Verified::key(LABEL_CHECKED_KEY, bytes).seen() || decode_public_key(bytes).is_some()
}

/// Memo kind of keys that passed [`decode_public_key`].
const LABEL_CHECKED_KEY: &[u8] = b"canonical prime-order Ed25519 key";

/// A short, printable fingerprint of a public key (never of a secret).
pub fn fingerprint(public: &[u8; 32]) -> String {
    hex(&public[..4])
}

/// Lowercase hex of some bytes.
pub fn hex(bytes: &[u8]) -> String {
    ::hex::encode(bytes)
}

/// 32 bytes from 64 hex digits; `None` for anything else.
pub fn unhex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    ::hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Parses the text of a key file of the given kind. Never panics, whatever the bytes.
pub fn parse_key_file(text: &[u8], kind: KeyKind) -> Result<[u8; 32], String> {
    let text = std::str::from_utf8(text).map_err(|_| "not UTF-8 text".to_string())?;
    let mut lines = text.lines();
    let header = lines.next().ok_or("empty file")?;
    let expected = format!("{MAGIC} {}", kind.name());
    if header.trim_end() != expected {
        return Err(format!("first line is not `{expected}`"));
    }
    let body = lines.next().ok_or("no key line")?.trim();
    if lines.any(|l| !l.trim().is_empty()) {
        return Err("extra lines after the key".into());
    }
    unhex32(body).ok_or_else(|| "key line is not 64 hex digits".to_string())
}

fn render_key_file(secret: &[u8; 32], kind: KeyKind) -> String {
    format!("{MAGIC} {}\n{}\n", kind.name(), hex(secret))
}

fn read_key(path: &Path, kind: KeyKind) -> Result<[u8; 32], KeyError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(KeyError::Missing {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(io_err(path)(e)),
    };
    if !meta.file_type().is_file() {
        return Err(KeyError::Malformed {
            path: path.to_path_buf(),
            reason: "not a regular file".into(),
        });
    }
    if meta.mode() & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_path_buf(),
            mode: meta.mode(),
        });
    }
    if meta.len() > MAX_KEY_FILE_LEN {
        return Err(KeyError::Malformed {
            path: path.to_path_buf(),
            reason: format!("{} bytes is too long", meta.len()),
        });
    }
    let bytes = fs::read(path).map_err(io_err(path))?;
    parse_key_file(&bytes, kind).map_err(|reason| KeyError::Malformed {
        path: path.to_path_buf(),
        reason,
    })
}

/// Writes `secret` to a fresh temporary file (0600) beside `name` in `dir` and syncs it; returns
/// its path. The caller links or renames it into place.
fn write_temp_key(
    dir: &Path,
    name: &str,
    secret: &[u8; 32],
    kind: KeyKind,
) -> Result<std::path::PathBuf, KeyError> {
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    let written = file
        .write_all(render_key_file(secret, kind).as_bytes())
        .and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(&tmp)(e));
    }
    Ok(tmp)
}

/// Writes a new key file; returns false (and writes nothing) if the file already exists.
fn create_key(dir: &Path, name: &str, secret: &[u8; 32], kind: KeyKind) -> Result<bool, KeyError> {
    let path = dir.join(name);
    let tmp = write_temp_key(dir, name, secret, kind)?;
    // link() refuses to replace an existing file: this is what makes "never overwrite" hold even
    // when two keygens race.
    let linked = fs::hard_link(&tmp, &path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Replaces a key file (a rotated onion key): written to a temporary file (0600), synced, then
/// renamed over the old one, whose secret is then gone from the file system.
pub fn replace_key_file(
    dir: &Path,
    name: &str,
    secret: &[u8; 32],
    kind: KeyKind,
) -> Result<(), KeyError> {
    let path = dir.join(name);
    let tmp = write_temp_key(dir, name, secret, kind)?;
    if let Err(e) = fs::rename(&tmp, &path) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(&path)(e));
    }
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads a key file that may be absent (`None`), with the time it was written.
pub fn read_key_file_if_present(
    path: &Path,
    kind: KeyKind,
) -> Result<Option<([u8; 32], std::time::SystemTime)>, KeyError> {
    if !path.exists() {
        return Ok(None);
    }
    let key = read_key(path, kind)?;
    let at = fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(io_err(path))?;
    Ok(Some((key, at)))
}

fn ensure_dir(dir: &Path) -> Result<(), KeyError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(KeyError::Malformed {
            path: dir.to_path_buf(),
            reason: "the state directory is not a directory".into(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(0o700)))
            .map_err(io_err(dir)),
        Err(e) => Err(io_err(dir)(e)),
    }
}

/// Which key files `load_or_create` had to create.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Created(pub Vec<&'static str>);

impl NodeKeys {
    /// Loads the keys from `dir`, creating any that are absent. Existing files are never changed.
    pub fn load_or_create(dir: &Path) -> Result<(NodeKeys, Created), KeyError> {
        ensure_dir(dir)?;
        let mut created = Created::default();
        let specs: [(&'static str, KeyKind); 4] = [
            (RELAY_IDENTITY_FILE, KeyKind::Ed25519),
            (RELAY_LINK_FILE, KeyKind::X25519),
            (RELAY_ONION_FILE, KeyKind::X25519),
            (SERVICE_DEFAULT_FILE, KeyKind::Ed25519),
        ];
        for (name, kind) in specs {
            if dir.join(name).exists() {
                continue;
            }
            let secret: [u8; 32] = match kind {
                KeyKind::Ed25519 => SigningKey::generate(&mut OsRng).to_bytes(),
                KeyKind::X25519 => StaticSecret::random_from_rng(OsRng).to_bytes(),
            };
            if create_key(dir, name, &secret, kind)? {
                created.0.push(name);
            }
        }
        Ok((Self::load(dir)?, created))
    }

    /// Loads existing keys; a missing file is an error that says how to create it.
    pub fn load(dir: &Path) -> Result<NodeKeys, KeyError> {
        let identity = read_key(&dir.join(RELAY_IDENTITY_FILE), KeyKind::Ed25519)?;
        let link = read_key(&dir.join(RELAY_LINK_FILE), KeyKind::X25519)?;
        let onion = read_key(&dir.join(RELAY_ONION_FILE), KeyKind::X25519)?;
        let service = read_key(&dir.join(SERVICE_DEFAULT_FILE), KeyKind::Ed25519)?;
        Ok(NodeKeys {
            relay_identity: SigningKey::from_bytes(&identity),
            relay_link: StaticSecret::from(link),
            relay_onion: StaticSecret::from(onion),
            service: SigningKey::from_bytes(&service),
        })
    }

    /// The node's overlay address: the address of its default service key.
    pub fn address(&self) -> std::net::Ipv6Addr {
        address_of(&self.service.verifying_key().to_bytes())
    }

    /// The relay identity's public key, as shown by `status` and `peers`.
    pub fn relay_key_hex(&self) -> String {
        hex(&self.relay_identity.verifying_key().to_bytes())
    }

    /// The public half of the link key.
    pub fn link_public(&self) -> X25519Public {
        X25519Public::from(&self.relay_link)
    }
}

/// Loads the key of a named service from `file` in `dir`, creating it (0600) when absent; an
/// existing file is never changed. `true` when it was created.
pub fn load_or_create_service_key(dir: &Path, file: &str) -> Result<(SigningKey, bool), KeyError> {
    ensure_dir(dir)?;
    let mut created = false;
    if !dir.join(file).exists() {
        let secret = SigningKey::generate(&mut OsRng).to_bytes();
        created = create_key(dir, file, &secret, KeyKind::Ed25519)?;
    }
    let seed = read_key(&dir.join(file), KeyKind::Ed25519)?;
    Ok((SigningKey::from_bytes(&seed), created))
}

/// Loads the existing key of a named service from `file` in `dir`.
pub fn load_service_key(dir: &Path, file: &str) -> Result<SigningKey, KeyError> {
    let seed = read_key(&dir.join(file), KeyKind::Ed25519)?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The eight points of small order, `k·T8` for a generator `T8` of the torsion subgroup (for
/// tests of [`decode_public_key`] and its callers).
#[cfg(test)]
pub(crate) fn eight_torsion() -> Vec<curve25519_dalek::edwards::EdwardsPoint> {
    use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
    use curve25519_dalek::Scalar;
    // A point of order 8 (from the usual list of small-order encodings).
    let b = unhex32("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a").unwrap();
    let t8 = CompressedEdwardsY(b).decompress().unwrap();
    // Small order, and 4·T8 is not the identity: the order is exactly 8.
    assert!(t8.is_small_order());
    assert_ne!(
        (Scalar::from(4u64) * t8).compress(),
        EdwardsPoint::default().compress()
    );
    (0u64..8).map(|k| Scalar::from(k) * t8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_error_is_the_source() {
        use std::error::Error;
        let e = KeyError::Io {
            path: PathBuf::from("/x/k.key"),
            source: io::Error::new(io::ErrorKind::NotFound, "gone"),
        };
        assert_eq!(e.to_string(), "/x/k.key: gone");
        assert_eq!(e.source().map(|s| s.to_string()).as_deref(), Some("gone"));
    }

    #[test]
    fn a_rotated_key_replaces_the_file_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert!(
            read_key_file_if_present(&dir.path().join("k.key"), KeyKind::X25519)
                .unwrap()
                .is_none()
        );
        assert!(create_key(dir.path(), "k.key", &[1; 32], KeyKind::X25519).unwrap());
        assert!(!create_key(dir.path(), "k.key", &[2; 32], KeyKind::X25519).unwrap());
        replace_key_file(dir.path(), "k.key", &[3; 32], KeyKind::X25519).unwrap();
        let (key, _) = read_key_file_if_present(&dir.path().join("k.key"), KeyKind::X25519)
            .unwrap()
            .unwrap();
        assert_eq!(key, [3; 32]);
        let mode = fs::metadata(dir.path().join("k.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    /// One secret, one accepted point: torsion variants and small-order points are refused;
    /// `-P` is a key of its own and is accepted. Twice: the second time `P` and `-P` are
    /// remembered as checked (crypto::sigcache) and the refused ones are still refused.
    #[test]
    fn network_keys_are_torsion_free_canonical_points() {
        for _ in 0..2 {
            let p = SigningKey::from_bytes(&[3; 32]).verifying_key();
            let pe = p.to_edwards();
            assert!(decode_public_key(&p.to_bytes()).is_some());
            assert!(decode_public_key(&(-pe).compress().to_bytes()).is_some());
            let torsion = eight_torsion();
            for (k, t) in torsion.iter().enumerate() {
                let variant = (pe + t).compress().to_bytes();
                assert_eq!(decode_public_key(&variant).is_some(), k == 0, "P + {k}·T8");
                assert_eq!(valid_public_key(&variant), k == 0, "P + {k}·T8");
                assert_eq!(
                    decode_public_key(&(-pe + t).compress().to_bytes()).is_some(),
                    k == 0,
                    "-P + {k}·T8"
                );
                assert!(
                    decode_public_key(&t.compress().to_bytes()).is_none(),
                    "{k}·T8"
                );
            }
            // A non-canonical encoding of a valid point (y + p for y = 2 is y = 2^255 - 17).
            let mut non_canonical = [0xffu8; 32];
            non_canonical[31] = 0x7f;
            non_canonical[0] = 0xef;
            assert!(decode_public_key(&non_canonical).is_none());
            assert!(!valid_public_key(&non_canonical));
        }
    }

    #[test]
    fn create_load_never_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let (k1, created) = NodeKeys::load_or_create(&dir).unwrap();
        assert_eq!(created.0.len(), 4);
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        for name in [
            RELAY_IDENTITY_FILE,
            RELAY_LINK_FILE,
            RELAY_ONION_FILE,
            SERVICE_DEFAULT_FILE,
        ] {
            let m = fs::metadata(dir.join(name)).unwrap();
            assert_eq!(m.mode() & 0o777, 0o600, "{name}");
        }
        let before = fs::read(dir.join(SERVICE_DEFAULT_FILE)).unwrap();
        let (k2, created) = NodeKeys::load_or_create(&dir).unwrap();
        assert!(created.0.is_empty());
        assert_eq!(k1.address(), k2.address());
        assert_eq!(before, fs::read(dir.join(SERVICE_DEFAULT_FILE)).unwrap());
        // No temporary files left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 4);
        // The service and relay identities are different keys.
        assert_ne!(
            k1.relay_identity.verifying_key().to_bytes(),
            k1.service.verifying_key().to_bytes()
        );
    }

    #[test]
    fn creates_only_the_missing_key() {
        let tmp = tempfile::tempdir().unwrap();
        let (k1, _) = NodeKeys::load_or_create(tmp.path()).unwrap();
        fs::remove_file(tmp.path().join(RELAY_LINK_FILE)).unwrap();
        let (k2, created) = NodeKeys::load_or_create(tmp.path()).unwrap();
        assert_eq!(created.0, vec![RELAY_LINK_FILE]);
        assert_eq!(k1.address(), k2.address());
        assert_eq!(k1.relay_key_hex(), k2.relay_key_hex());
    }

    #[test]
    fn refuses_readable_key() {
        let tmp = tempfile::tempdir().unwrap();
        NodeKeys::load_or_create(tmp.path()).unwrap();
        let p = tmp.path().join(SERVICE_DEFAULT_FILE);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let err = NodeKeys::load(tmp.path()).unwrap_err();
        assert!(matches!(err, KeyError::Permissions { .. }), "{err}");
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn missing_keys_say_how_to_create_them() {
        let tmp = tempfile::tempdir().unwrap();
        let err = NodeKeys::load(tmp.path()).unwrap_err();
        assert!(err.to_string().contains("globalnet keygen"), "{err}");
    }

    #[test]
    fn malformed_files_are_errors() {
        for bad in [
            &b""[..],
            b"\xff\xfe",
            b"globalnet-secret-key v1 x25519\n00\n",
            b"globalnet-secret-key v2 ed25519\n0000000000000000000000000000000000000000000000000000000000000000\n",
            b"globalnet-secret-key v1 ed25519\n000000000000000000000000000000000000000000000000000000000000000g\n",
            b"globalnet-secret-key v1 ed25519\n0000000000000000000000000000000000000000000000000000000000000000\nmore\n",
        ] {
            assert!(parse_key_file(bad, KeyKind::Ed25519).is_err(), "{bad:?}");
        }
        let good = render_key_file(&[7u8; 32], KeyKind::X25519);
        assert_eq!(
            parse_key_file(good.as_bytes(), KeyKind::X25519).unwrap(),
            [7u8; 32]
        );
        assert!(parse_key_file(good.as_bytes(), KeyKind::Ed25519).is_err());
    }

    #[test]
    fn debug_shows_no_secret() {
        let tmp = tempfile::tempdir().unwrap();
        let (k, _) = NodeKeys::load_or_create(tmp.path()).unwrap();
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(&hex(&k.service.to_bytes())));
        assert!(!dbg.contains(&hex(&k.relay_identity.to_bytes())));
        assert!(!dbg.contains(&k.address().to_string()));
    }

    proptest::proptest! {
        #[test]
        fn key_parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse_key_file(&bytes, KeyKind::Ed25519);
        }
    }
}
