//! Key names: the text form of a service key, `<56 base32 characters>.gn.alt` (docs/protocol.md
//! section 18.1), as a `.onion` v3 name carries its key.
//!
//! The label encodes `public_key (32) || checksum (2) || version (1)` in lowercase RFC 4648 base32
//! without padding; the checksum is `SHA-256(LABEL_KEYNAME_CHECKSUM || key || version)[0..2]`. A
//! key name needs nobody to vouch for it: it resolves to `address_of(key)`, and a client that
//! holds the whole key can check a descriptor against all 256 bits instead of the 120 of the
//! address. The checksum catches typing errors, not attacks; the key check is
//! [`crate::crypto::keys::decode_public_key`], the one every key from outside passes.

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};
use std::fmt;
use std::net::Ipv6Addr;

use crate::crypto::{address_of, keys::decode_public_key, labels};

/// The domain every GlobalNet name lives under: `.alt` is reserved for names outside the DNS
/// (RFC 9476); a bare `.gn` is Guinea's and is never answered.
pub const SUFFIX: &str = "gn.alt";
/// The key name format's version byte.
pub const VERSION: u8 = 1;
/// Bytes a key name's label encodes.
const RAW_LEN: usize = 35;
/// Characters of a key name's label.
pub const LABEL_LEN: usize = 56;
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Why a text is not a key name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyNameError {
    /// Not under `.gn.alt`, or more than one label before it.
    Suffix,
    /// The label is not 56 characters.
    Length,
    /// A character outside `a-z2-7`.
    Alphabet,
    /// A version this node does not know.
    Version,
    /// The checksum does not match: a typing error.
    Checksum,
    /// The 32 bytes are not an acceptable public key.
    Key,
}

impl fmt::Display for KeyNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyNameError::Suffix => "a key name is one label under .gn.alt",
            KeyNameError::Length => "a key name's label is 56 characters",
            KeyNameError::Alphabet => "a key name uses only the letters a-z and the digits 2-7",
            KeyNameError::Version => "unknown key name version",
            KeyNameError::Checksum => "the key name's checksum does not match (a typing error?)",
            KeyNameError::Key => "the key name does not hold a valid public key",
        })
    }
}

impl std::error::Error for KeyNameError {}

/// A decoded key name: a service's public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyName {
    key: [u8; 32],
}

impl fmt::Debug for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyName({self})")
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{SUFFIX}", self.label())
    }
}

impl KeyName {
    /// The key name of a public key (any 32 bytes; [`KeyName::parse`] checks the key).
    pub fn of(key: &VerifyingKey) -> KeyName {
        KeyName {
            key: key.to_bytes(),
        }
    }

    /// The public key.
    pub fn key(&self) -> [u8; 32] {
        self.key
    }

    /// The overlay address the name resolves to.
    pub fn address(&self) -> Ipv6Addr {
        address_of(&self.key)
    }

    /// The 56-character label.
    pub fn label(&self) -> String {
        let mut raw = [0u8; RAW_LEN];
        raw[..32].copy_from_slice(&self.key);
        raw[32..34].copy_from_slice(&checksum(&self.key, VERSION));
        raw[34] = VERSION;
        base32(&raw)
    }

    /// Parses `<label>.gn.alt` (any case, with or without the final dot).
    pub fn parse(name: &str) -> Result<KeyName, KeyNameError> {
        let name = name.strip_suffix('.').unwrap_or(name);
        let label = split_suffix(name).ok_or(KeyNameError::Suffix)?;
        Self::parse_label(label)
    }

    /// Parses the 56-character label alone.
    pub fn parse_label(label: &str) -> Result<KeyName, KeyNameError> {
        if label.contains('.') {
            return Err(KeyNameError::Suffix);
        }
        if label.len() != LABEL_LEN {
            return Err(KeyNameError::Length);
        }
        let raw = unbase32(label).ok_or(KeyNameError::Alphabet)?;
        let mut key = [0u8; 32];
        key.copy_from_slice(&raw[..32]);
        if raw[34] != VERSION {
            return Err(KeyNameError::Version);
        }
        // Not a secret: constant time buys nothing here.
        if raw[32..34] != checksum(&key, raw[34]) {
            return Err(KeyNameError::Checksum);
        }
        decode_public_key(&key).ok_or(KeyNameError::Key)?;
        Ok(KeyName { key })
    }
}

/// The part of `name` before `.gn.alt`, compared without regard to case; `None` when `name` is
/// not under it or is `gn.alt` itself.
pub fn split_suffix(name: &str) -> Option<&str> {
    let cut = name.len().checked_sub(SUFFIX.len() + 1)?;
    let (head, tail) = (name.get(..cut)?, name.get(cut..)?);
    let tail = tail.strip_prefix('.')?;
    (tail.eq_ignore_ascii_case(SUFFIX) && !head.is_empty()).then_some(head)
}

fn checksum(key: &[u8; 32], version: u8) -> [u8; 2] {
    let mut h = Sha256::new();
    h.update(labels::LABEL_KEYNAME_CHECKSUM);
    h.update(key);
    h.update([version]);
    let d: [u8; 32] = h.finalize().into();
    [d[0], d[1]]
}

/// RFC 4648 base32, lowercase, of exactly 35 bytes (280 bits: no padding needed).
fn base32(raw: &[u8; RAW_LEN]) -> String {
    let mut out = String::with_capacity(LABEL_LEN);
    for chunk in raw.chunks(5) {
        let mut acc = 0u64;
        for b in chunk {
            acc = acc << 8 | u64::from(*b);
        }
        for i in (0..8).rev() {
            let idx = ((acc >> (i * 5)) & 31) as u8;
            // idx < 32, and the alphabet is in order: 0..26 are letters, 26..32 the digits 2-7.
            out.push(char::from(if idx < 26 {
                b'a' + idx
            } else {
                b'2' + idx - 26
            }));
        }
    }
    out
}

/// The inverse of [`base32`] on a 56-character label, any case; `None` for another alphabet.
fn unbase32(label: &str) -> Option<[u8; RAW_LEN]> {
    let mut raw = [0u8; RAW_LEN];
    for (chunk, out) in label.as_bytes().chunks(8).zip(raw.chunks_mut(5)) {
        let mut acc = 0u64;
        for c in chunk {
            let v = ALPHABET.iter().position(|a| *a == c.to_ascii_lowercase())?;
            acc = acc << 5 | v as u64;
        }
        for (i, o) in out.iter_mut().enumerate() {
            *o = (acc >> (32 - 8 * i)) as u8;
        }
    }
    Some(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn doc() -> serde_json::Value {
        serde_json::from_str(include_str!("../../tests/vectors/keynames.json")).unwrap()
    }

    /// Vectors made by `tests/vectors/make_keynames.py` (Python, not this code).
    #[test]
    fn matches_independent_vectors() {
        let doc = doc();
        let vectors = doc["vectors"].as_array().unwrap();
        assert!(vectors.len() >= 10);
        for v in vectors {
            let seed: [u8; 32] = hex::decode(v["seed"].as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap();
            let key = SigningKey::from_bytes(&seed).verifying_key();
            assert_eq!(
                hex::encode(key.to_bytes()),
                v["public_key"].as_str().unwrap()
            );
            let name = KeyName::of(&key);
            assert_eq!(name.to_string(), v["name"].as_str().unwrap());
            let parsed = KeyName::parse(v["name"].as_str().unwrap()).unwrap();
            assert_eq!(parsed, name);
            assert_eq!(parsed.address().to_string(), v["address"].as_str().unwrap());
            let dotted = format!("{}.", v["name"].as_str().unwrap());
            assert_eq!(KeyName::parse(&dotted).unwrap(), name);
        }
        let upper = &doc["upper_case"];
        let parsed = KeyName::parse(upper["name"].as_str().unwrap()).unwrap();
        assert_eq!(
            parsed.address().to_string(),
            upper["address"].as_str().unwrap()
        );
    }

    #[test]
    fn refuses_the_independent_bad_names() {
        let doc = doc();
        for v in doc["invalid"].as_array().unwrap() {
            let name = v["name"].as_str().unwrap();
            let want = match v["why"].as_str().unwrap() {
                "checksum" => KeyNameError::Checksum,
                "version" => KeyNameError::Version,
                "length" => KeyNameError::Length,
                "alphabet" => KeyNameError::Alphabet,
                "suffix" => KeyNameError::Suffix,
                other => panic!("unknown reason {other}"),
            };
            assert_eq!(KeyName::parse(name), Err(want), "{name}");
        }
    }

    #[test]
    fn refuses_keys_with_torsion_even_with_a_good_checksum() {
        // The identity point's encoding: a small-order point, never a service key.
        let mut small = [0u8; 32];
        small[0] = 1;
        let name = KeyName { key: small }.to_string();
        assert_eq!(KeyName::parse(&name), Err(KeyNameError::Key));
    }

    #[test]
    fn suffix_is_exact() {
        assert_eq!(split_suffix("alice.gn.alt"), Some("alice"));
        assert_eq!(split_suffix("a.b.GN.ALT"), Some("a.b"));
        assert_eq!(split_suffix("gn.alt"), None);
        assert_eq!(split_suffix(".gn.alt"), None);
        assert_eq!(split_suffix("alicegn.alt"), None);
        assert_eq!(split_suffix("alice.gn"), None);
        assert_eq!(split_suffix("alice.xgn.alt"), None);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = KeyName::parse(&s);
        }

        #[test]
        fn round_trips(seed in proptest::array::uniform32(0u8..)) {
            let name = KeyName::of(&SigningKey::from_bytes(&seed).verifying_key());
            proptest::prop_assert_eq!(KeyName::parse(&name.to_string()), Ok(name));
        }
    }
}
