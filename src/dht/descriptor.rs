//! Service descriptors and key blinding (docs/protocol.md section 11).
//!
//! A service with key `A` and address `D = addr(A)` publishes, per epoch `e`, a descriptor stored
//! under `index(D, e)`, signed by the blinded key `A' = h(D, e)·A` and carrying an encrypted body
//! (the key `A` and the intro points) that only someone who knows `D` can open. A storage node
//! checks the signature by `A'`, the size, the expiry and the version ([`Descriptor::parse`]) and
//! learns neither the address nor the service key; a client checks everything
//! ([`Descriptor::open`]).
//!
//! This module never signs with the unblinded service key, never logs addresses or keys (the
//! `Debug` impls print short fingerprints of public values), and never panics on network bytes.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::Scalar;
use ed25519_dalek::hazmat::{raw_sign, ExpandedSecretKey};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use hkdf::Hkdf;
use sha2::{Digest, Sha256, Sha512};
use std::fmt;
use std::net::SocketAddr;

use crate::crypto::keys::fingerprint;
use crate::crypto::labels::{
    LABEL_ADDRESS, LABEL_BLIND, LABEL_BLIND_NONCE, LABEL_DESC_BODY_KEY, LABEL_DESC_INDEX,
    LABEL_DESC_SIG,
};
use crate::crypto::sigcache::Verified;
use crate::dht::desc_pow::PowParams;
use crate::wire::record::{emit_endpoint, parse_endpoint, ENDPOINT_LEN, MAX_CLOCK_SKEW_S};

/// Length of an epoch (14.2): UTC days.
pub const EPOCH_LEN_S: u64 = 86400;
/// Publication overlap on both sides of an epoch boundary (14.2).
pub const EPOCH_OVERLAP_S: u64 = 7200;
/// Lifetime of a descriptor.
pub const DESC_LIFETIME_S: u64 = 10800;
/// How often a service republishes its descriptor.
pub const DESC_REPUBLISH_S: u64 = 3600;
/// How often a service fetches its own descriptor to check it is there.
pub const DESC_SELF_CHECK_S: u64 = 900;
/// Records (signers) a storage node keeps per index.
pub const DESC_MAX_SIGNERS_PER_INDEX: usize = 8;
/// A new signer for a full index is admitted at most once per this interval.
pub const DESC_NEW_SIGNER_INTERVAL_S: u64 = 30;

/// Record kind byte of descriptors.
pub const RECORD_KIND_DESCRIPTOR: u8 = 0x02;
/// Descriptor layout version.
pub const DESC_VERSION: u8 = 1;
/// Body layout version.
pub const DESC_BODY_VERSION: u8 = 1;
/// Length of a descriptor.
pub const DESC_LEN: usize = 922;
/// Length of the cleartext header (the AEAD associated data).
pub const DESC_HEADER_LEN: usize = 102;
/// Length of the body plaintext.
pub const DESC_BODY_LEN: usize = 740;
/// Length of the encrypted body (plaintext and tag): the `body_len` field.
pub const DESC_CIPHERTEXT_LEN: usize = DESC_BODY_LEN + 16;
/// Length of the signed part (header and ciphertext).
pub const DESC_SIGNED_LEN: usize = DESC_HEADER_LEN + DESC_CIPHERTEXT_LEN;
/// Length of an intro entry in the body.
pub const INTRO_ENTRY_LEN: usize = 168;
/// Intro entry slots in the body.
pub const DESC_MAX_INTRO: usize = 4;
/// Endpoint slots in an intro entry.
pub const INTRO_MAX_ENDPOINTS: usize = 2;
/// Length of the salt.
pub const DESC_SALT_LEN: usize = 16;

const OFF_INDEX: usize = 4;
const OFF_BLINDED: usize = 36;
const OFF_REVISION: usize = 68;
const OFF_EXPIRES: usize = 76;
const OFF_SALT: usize = 84;
const OFF_BODY_LEN: usize = 100;
const BODY_OFF_KEY: usize = 4;
const BODY_OFF_INTRO: usize = 36;
const BODY_OFF_TLV: usize = BODY_OFF_INTRO + DESC_MAX_INTRO * INTRO_ENTRY_LEN;

/// Why a descriptor, or one of its parts, was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DescError {
    /// Wrong length.
    #[error("descriptor length {0}, expected {DESC_LEN}")]
    Length(usize),
    /// Unknown kind or version.
    #[error("unknown record kind {kind} version {version}")]
    UnknownVersion {
        /// The kind byte.
        kind: u8,
        /// The version byte.
        version: u8,
    },
    /// A malformed field.
    #[error("malformed descriptor field: {0}")]
    Field(&'static str),
    /// The blinded key is not canonical or of small order.
    #[error("blinded key not canonical or of small order")]
    BlindedKey,
    /// The signature does not verify under the blinded key.
    #[error("descriptor signature does not verify")]
    Signature,
    /// Expired, or valid too far in the future.
    #[error("descriptor expired or not yet valid")]
    Expired,
    /// The revision is in the future.
    #[error("descriptor revision is in the future")]
    FutureRevision,
    /// The body does not decrypt (wrong address or epoch, or tampered).
    #[error("descriptor body does not decrypt")]
    Decrypt,
    /// The body's service key does not hash to the address.
    #[error("descriptor service key does not match the address")]
    WrongAddress,
    /// The blinded key is not `h·A`.
    #[error("blinded key does not match the service key")]
    WrongBlinding,
    /// The blinding factor is zero for this address and epoch (probability 2^-252): do not publish.
    #[error("blinding factor is zero for this epoch")]
    ZeroBlinding,
}

fn u64_be(x: u64) -> [u8; 8] {
    x.to_be_bytes()
}

fn field<const N: usize>(b: &[u8], off: usize) -> Result<[u8; N], DescError> {
    off.checked_add(N)
        .and_then(|end| b.get(off..end))
        .and_then(|s| s.try_into().ok())
        .ok_or(DescError::Field("out of bounds"))
}

fn put(b: &mut [u8], off: usize, src: &[u8]) -> Result<(), DescError> {
    off.checked_add(src.len())
        .and_then(|end| b.get_mut(off..end))
        .ok_or(DescError::Field("out of bounds"))?
        .copy_from_slice(src);
    Ok(())
}

/// The epoch of a Unix time in seconds.
pub fn epoch(t_s: u64) -> u64 {
    t_s / EPOCH_LEN_S
}

/// The first second of an epoch.
pub fn epoch_start(e: u64) -> u64 {
    e.saturating_mul(EPOCH_LEN_S)
}

/// The epochs a service publishes for at `now_s` (11.6): the current one, plus the next during the
/// last `EPOCH_OVERLAP_S` of an epoch, plus the previous during the first `EPOCH_OVERLAP_S`.
pub fn epochs_to_publish(now_s: u64) -> Vec<u64> {
    let e = epoch(now_s);
    let into = now_s - epoch_start(e);
    let mut out = vec![e];
    if into >= EPOCH_LEN_S - EPOCH_OVERLAP_S {
        out.push(e + 1);
    }
    if into < EPOCH_OVERLAP_S && e > 0 {
        out.push(e - 1);
    }
    out
}

/// The epoch a client looks up first, and the adjacent one to try if nothing valid was found and
/// `now_s` is within `EPOCH_OVERLAP_S` of a boundary (11.6).
pub fn epochs_to_look_up(now_s: u64) -> (u64, Option<u64>) {
    let e = epoch(now_s);
    let into = now_s - epoch_start(e);
    let adjacent = if into >= EPOCH_LEN_S - EPOCH_OVERLAP_S {
        Some(e + 1)
    } else if into < EPOCH_OVERLAP_S {
        e.checked_sub(1)
    } else {
        None
    };
    (e, adjacent)
}

/// The DHT key of the descriptors of address `d` in epoch `e`: `H(LABEL_DESC_INDEX, D ‖ u64(e))`.
pub fn index(address: &[u8; 16], e: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(LABEL_DESC_INDEX);
    h.update(address);
    h.update(u64_be(e));
    h.finalize().into()
}

/// The overlay address of a key as bytes (3.4).
pub fn address_bytes(key: &[u8; 32]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(LABEL_ADDRESS);
    h.update(key);
    let d: [u8; 32] = h.finalize().into();
    let mut out = [0u8; 16];
    out[0] = 0xfd;
    out[1..].copy_from_slice(&d[..15]);
    out
}

/// The blinding factor `h = int_le(SHA-512(LABEL_BLIND ‖ D ‖ u64(e))) mod ℓ`.
pub fn blinding_factor(address: &[u8; 16], e: u64) -> Scalar {
    let mut h = Sha512::new();
    h.update(LABEL_BLIND);
    h.update(address);
    h.update(u64_be(e));
    Scalar::from_bytes_mod_order_wide(&h.finalize().into())
}

/// Decodes a public key from the network: refuses non-canonical encodings and small-order points.
fn strict_key(bytes: &[u8; 32]) -> Result<VerifyingKey, DescError> {
    crate::wire::record::check_identity(bytes).map_err(|_| DescError::BlindedKey)
}

/// The blinded public key `A' = h·A` for a service key `A`, as anyone who knows `A` computes it.
pub fn blind_public(
    service_key: &[u8; 32],
    address: &[u8; 16],
    e: u64,
) -> Result<[u8; 32], DescError> {
    strict_key(service_key)?;
    let point = CompressedEdwardsY(*service_key)
        .decompress()
        .ok_or(DescError::BlindedKey)?;
    let h = blinding_factor(address, e);
    if h == Scalar::ZERO {
        return Err(DescError::ZeroBlinding);
    }
    Ok((h * point).compress().to_bytes())
}

/// The blinded signing key of a service for one epoch (11.2). Prints only a fingerprint of `A'`.
pub struct BlindedKey {
    esk: ExpandedSecretKey,
    public: VerifyingKey,
}

impl fmt::Debug for BlindedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlindedKey({})", fingerprint(&self.public.to_bytes()))
    }
}

impl BlindedKey {
    /// Derives the blinded key of `service` for epoch `e`: `a' = h·a`,
    /// `prefix' = SHA-512(LABEL_BLIND_NONCE ‖ prefix ‖ D ‖ u64(e))[0..32]`.
    pub fn derive(service: &SigningKey, e: u64) -> Result<BlindedKey, DescError> {
        let address = address_bytes(&service.verifying_key().to_bytes());
        let h = blinding_factor(&address, e);
        if h == Scalar::ZERO {
            return Err(DescError::ZeroBlinding);
        }
        let expanded: [u8; 64] = Sha512::digest(service.to_bytes()).into();
        let mut a_bytes = [0u8; 32];
        a_bytes.copy_from_slice(&expanded[..32]);
        a_bytes[0] &= 248;
        a_bytes[31] &= 127;
        a_bytes[31] |= 64;
        let a = Scalar::from_bytes_mod_order(a_bytes);
        let mut n = Sha512::new();
        n.update(LABEL_BLIND_NONCE);
        n.update(&expanded[32..]);
        n.update(address);
        n.update(u64_be(e));
        let nd: [u8; 64] = n.finalize().into();
        let mut hash_prefix = [0u8; 32];
        hash_prefix.copy_from_slice(&nd[..32]);
        let esk = ExpandedSecretKey {
            scalar: h * a,
            hash_prefix,
        };
        let public = VerifyingKey::from(&esk);
        Ok(BlindedKey { esk, public })
    }

    /// `A'`.
    pub fn public(&self) -> [u8; 32] {
        self.public.to_bytes()
    }

    /// The blinded scalar `a'` (little-endian), for known-answer tests.
    pub fn scalar_bytes(&self) -> [u8; 32] {
        self.esk.scalar.to_bytes()
    }

    /// The blinded nonce prefix, for known-answer tests.
    pub fn prefix(&self) -> [u8; 32] {
        self.esk.hash_prefix
    }

    /// An RFC 8032 signature of `message` under `A'` (the expanded-secret-key form).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        raw_sign::<Sha512>(&self.esk, message, &self.public).to_bytes()
    }
}

/// An intro point as listed in a descriptor body (11.4).
#[derive(Clone, PartialEq, Eq)]
pub struct IntroEntry {
    /// The intro relay's Ed25519 identity.
    pub identity: [u8; 32],
    /// Its X25519 link key.
    pub link_key: [u8; 32],
    /// Its X25519 onion key.
    pub onion_key: [u8; 32],
    /// The service's auth key at this intro point.
    pub auth_key: [u8; 32],
    /// 1 or 2 endpoints.
    pub endpoints: Vec<SocketAddr>,
}

impl fmt::Debug for IntroEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IntroEntry({} @ {:?})",
            fingerprint(&self.identity),
            self.endpoints
        )
    }
}

impl IntroEntry {
    fn emit(&self, out: &mut [u8]) -> Result<(), DescError> {
        if self.endpoints.is_empty() || self.endpoints.len() > INTRO_MAX_ENDPOINTS {
            return Err(DescError::Field("intro entry endpoint count"));
        }
        put(out, 0, &self.identity)?;
        put(out, 32, &self.link_key)?;
        put(out, 64, &self.onion_key)?;
        put(out, 96, &self.auth_key)?;
        put(out, 128, &[self.endpoints.len() as u8])?;
        for (i, ep) in self.endpoints.iter().enumerate() {
            let mut slot = [0u8; ENDPOINT_LEN];
            emit_endpoint(Some(*ep), &mut slot);
            put(out, 129 + i * ENDPOINT_LEN, &slot)?;
        }
        Ok(())
    }

    fn parse(b: &[u8]) -> Result<IntroEntry, DescError> {
        let identity = field::<32>(b, 0)?;
        strict_key(&identity).map_err(|_| DescError::Field("intro identity"))?;
        let link_key = field::<32>(b, 32)?;
        let onion_key = field::<32>(b, 64)?;
        let auth_key = field::<32>(b, 96)?;
        strict_key(&auth_key).map_err(|_| DescError::Field("intro auth key"))?;
        if link_key == [0; 32] || onion_key == [0; 32] {
            return Err(DescError::Field("zero intro link or onion key"));
        }
        let [n] = field::<1>(b, 128)?;
        let n = usize::from(n);
        if !(1..=INTRO_MAX_ENDPOINTS).contains(&n) {
            return Err(DescError::Field("intro entry endpoint count"));
        }
        let mut endpoints = Vec::with_capacity(n);
        for i in 0..INTRO_MAX_ENDPOINTS {
            let slot = field::<ENDPOINT_LEN>(b, 129 + i * ENDPOINT_LEN)?;
            let ep = parse_endpoint(&slot).map_err(|_| DescError::Field("intro endpoint"))?;
            match (i < n, ep) {
                (true, Some(ep)) => endpoints.push(ep),
                (false, None) => {}
                _ => {
                    return Err(DescError::Field(
                        "intro endpoint slots do not match the count",
                    ))
                }
            }
        }
        Ok(IntroEntry {
            identity,
            link_key,
            onion_key,
            auth_key,
            endpoints,
        })
    }
}

/// What a client learns from a descriptor it opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorContent {
    /// The service key `A` (checked: `addr(A)` is the address looked up).
    pub service_key: [u8; 32],
    /// 1 to 4 intro points.
    pub intro_points: Vec<IntroEntry>,
    /// The revision (for client-side no-rollback).
    pub revision: u64,
    /// Unix seconds after which the descriptor is invalid.
    pub expires: u64,
    /// The service's puzzle for introductions (10.12); `None` in descriptors without it.
    pub pow: Option<PowParams>,
}

/// Inputs of one publication besides the key, the epoch and the intro points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publication {
    /// `revision_for(now_ms, last)`.
    pub revision: u64,
    /// `expires_for(now_s, epoch)`.
    pub expires: u64,
    /// Fresh random bytes.
    pub salt: [u8; DESC_SALT_LEN],
}

/// The revision of a new publication: `max(now_ms, last_published + 1)` (11.6).
pub fn revision_for(now_ms: u64, last_published: Option<u64>) -> u64 {
    match last_published {
        Some(last) => now_ms.max(last.saturating_add(1)),
        None => now_ms,
    }
}

/// The expiry of a descriptor for epoch `e` published at `now_s` (11.6).
pub fn expires_for(now_s: u64, e: u64) -> u64 {
    (now_s + DESC_LIFETIME_S).min(epoch_start(e + 1) + EPOCH_OVERLAP_S)
}

/// The body key and nonce: `KDF(LABEL_DESC_BODY_KEY, D ‖ u64(e) ‖ A' ‖ u64(revision) ‖ salt, 44)`.
pub fn body_key(
    address: &[u8; 16],
    e: u64,
    blinded: &[u8; 32],
    revision: u64,
    salt: &[u8; DESC_SALT_LEN],
) -> ([u8; 32], [u8; 12]) {
    let mut ikm = Vec::with_capacity(16 + 8 + 32 + 8 + DESC_SALT_LEN);
    ikm.extend_from_slice(address);
    ikm.extend_from_slice(&u64_be(e));
    ikm.extend_from_slice(blinded);
    ikm.extend_from_slice(&u64_be(revision));
    ikm.extend_from_slice(salt);
    let mut okm = [0u8; 44];
    // 44 bytes is far below the HKDF-SHA256 limit, so expand cannot fail.
    let _ =
        Hkdf::<Sha256>::new(Some(LABEL_DESC_BODY_KEY), &ikm).expand(LABEL_DESC_BODY_KEY, &mut okm);
    let mut key = [0u8; 32];
    let mut nonce = [0u8; 12];
    key.copy_from_slice(&okm[..32]);
    nonce.copy_from_slice(&okm[32..]);
    (key, nonce)
}

fn signed_message(b: &[u8; DESC_LEN]) -> Vec<u8> {
    let mut m = Vec::with_capacity(LABEL_DESC_SIG.len() + DESC_SIGNED_LEN);
    m.extend_from_slice(LABEL_DESC_SIG);
    m.extend_from_slice(&b[..DESC_SIGNED_LEN]);
    m
}

/// A descriptor that passed the storage-node checks: its exact bytes and cleartext header fields.
/// Holds nothing a storage node could link to an address or a service key.
#[derive(Clone, PartialEq, Eq)]
pub struct Descriptor {
    bytes: Box<[u8; DESC_LEN]>,
    index: [u8; 32],
    blinded_key: [u8; 32],
    revision: u64,
    expires: u64,
}

impl fmt::Debug for Descriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Descriptor")
            .field("index", &fingerprint(&self.index))
            .field("signer", &fingerprint(&self.blinded_key))
            .field("revision", &self.revision)
            .field("expires", &self.expires)
            .finish()
    }
}

impl Descriptor {
    /// Builds and signs a descriptor for epoch `e` (service side), without a puzzle.
    pub fn build(
        service: &SigningKey,
        e: u64,
        intro_points: &[IntroEntry],
        p: Publication,
    ) -> Result<Descriptor, DescError> {
        Descriptor::build_with_pow(service, e, intro_points, p, None)
    }

    /// [`Descriptor::build`] with the service's proof-of-work parameters in the body's TLV area.
    pub fn build_with_pow(
        service: &SigningKey,
        e: u64,
        intro_points: &[IntroEntry],
        p: Publication,
        pow: Option<PowParams>,
    ) -> Result<Descriptor, DescError> {
        if intro_points.is_empty() || intro_points.len() > DESC_MAX_INTRO {
            return Err(DescError::Field("1 to 4 intro points"));
        }
        let service_key = service.verifying_key().to_bytes();
        let address = address_bytes(&service_key);
        let blinded = BlindedKey::derive(service, e)?;
        let a_blinded = blinded.public();
        let idx = index(&address, e);

        let mut body = [0u8; DESC_BODY_LEN];
        body[0] = DESC_BODY_VERSION;
        body[2] = intro_points.len() as u8;
        put(&mut body, BODY_OFF_KEY, &service_key)?;
        for (i, entry) in intro_points.iter().enumerate() {
            let off = BODY_OFF_INTRO + i * INTRO_ENTRY_LEN;
            let slot = body
                .get_mut(off..off + INTRO_ENTRY_LEN)
                .ok_or(DescError::Field("intro slot"))?;
            entry.emit(slot)?;
        }
        if let Some(pow) = pow {
            let area = body.get_mut(BODY_OFF_TLV..).unwrap_or(&mut []);
            if !pow.emit_tlv(area) {
                return Err(DescError::Field("TLV area"));
            }
        }

        let mut b = [0u8; DESC_LEN];
        b[0] = RECORD_KIND_DESCRIPTOR;
        b[1] = DESC_VERSION;
        put(&mut b[..], OFF_INDEX, &idx)?;
        put(&mut b[..], OFF_BLINDED, &a_blinded)?;
        put(&mut b[..], OFF_REVISION, &u64_be(p.revision))?;
        put(&mut b[..], OFF_EXPIRES, &u64_be(p.expires))?;
        put(&mut b[..], OFF_SALT, &p.salt)?;
        put(
            &mut b[..],
            OFF_BODY_LEN,
            &(DESC_CIPHERTEXT_LEN as u16).to_be_bytes(),
        )?;
        let (key, nonce) = body_key(&address, e, &a_blinded, p.revision, &p.salt);
        let ct = ChaCha20Poly1305::new(&key.into())
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: &body,
                    aad: b.get(..DESC_HEADER_LEN).ok_or(DescError::Field("header"))?,
                },
            )
            .map_err(|_| DescError::Decrypt)?;
        put(&mut b[..], DESC_HEADER_LEN, &ct)?;
        let sig = blinded.sign(&signed_message(&b));
        put(&mut b[..], DESC_SIGNED_LEN, &sig)?;
        Ok(Descriptor {
            bytes: Box::new(b),
            index: idx,
            blinded_key: a_blinded,
            revision: p.revision,
            expires: p.expires,
        })
    }

    /// The storage-node checks of 11.5 (everything but the STORE key and the per-signer rules,
    /// which the store applies): length, kind and version, body length, `A'` canonical and not of
    /// small order, signature by `A'`, expiry and revision against the local clock.
    pub fn parse(bytes: &[u8], now_ms: u64) -> Result<Descriptor, DescError> {
        let b: &[u8; DESC_LEN] = bytes
            .try_into()
            .map_err(|_| DescError::Length(bytes.len()))?;
        if b[0] != RECORD_KIND_DESCRIPTOR || b[1] != DESC_VERSION {
            return Err(DescError::UnknownVersion {
                kind: b[0],
                version: b[1],
            });
        }
        if u16::from_be_bytes(field::<2>(b, OFF_BODY_LEN)?) as usize != DESC_CIPHERTEXT_LEN {
            return Err(DescError::Field("body_len"));
        }
        let index = field::<32>(b, OFF_INDEX)?;
        let blinded_key = field::<32>(b, OFF_BLINDED)?;
        let revision = u64::from_be_bytes(field::<8>(b, OFF_REVISION)?);
        let expires = u64::from_be_bytes(field::<8>(b, OFF_EXPIRES)?);
        // Replicas and repeated lookups bring the same bytes again (crypto::sigcache).
        let memo = Verified::key(LABEL_DESC_SIG, b);
        if !memo.seen() {
            let key = strict_key(&blinded_key)?;
            let sig = Signature::from_bytes(&field::<64>(b, DESC_SIGNED_LEN)?);
            key.verify_strict(&signed_message(b), &sig)
                .map_err(|_| DescError::Signature)?;
            memo.remember();
        }
        let now_s = now_ms / 1000;
        if expires <= now_s.saturating_sub(MAX_CLOCK_SKEW_S)
            || expires > now_s + DESC_LIFETIME_S + MAX_CLOCK_SKEW_S
        {
            return Err(DescError::Expired);
        }
        if revision > now_ms + MAX_CLOCK_SKEW_S * 1000 {
            return Err(DescError::FutureRevision);
        }
        Ok(Descriptor {
            bytes: Box::new(*b),
            index,
            blinded_key,
            revision,
            expires,
        })
    }

    /// The client checks of 11.5 on a descriptor that passed [`Descriptor::parse`]: decrypts the
    /// body with the key derived from `address` and `e`, checks `addr(A) == address`, `A`
    /// canonical, `h·A == A'` and the intro entries.
    pub fn open(&self, address: &[u8; 16], e: u64) -> Result<DescriptorContent, DescError> {
        if index(address, e) != self.index {
            return Err(DescError::Field(
                "index does not match the address and epoch",
            ));
        }
        let salt = field::<DESC_SALT_LEN>(&self.bytes[..], OFF_SALT)?;
        let (key, nonce) = body_key(address, e, &self.blinded_key, self.revision, &salt);
        let ct = self
            .bytes
            .get(DESC_HEADER_LEN..DESC_SIGNED_LEN)
            .ok_or(DescError::Field("body"))?;
        let body = ChaCha20Poly1305::new(&key.into())
            .decrypt(
                &nonce.into(),
                Payload {
                    msg: ct,
                    aad: self
                        .bytes
                        .get(..DESC_HEADER_LEN)
                        .ok_or(DescError::Field("header"))?,
                },
            )
            .map_err(|_| DescError::Decrypt)?;
        let [version, _flags, n_intro, _] = field::<4>(&body, 0)?;
        if version != DESC_BODY_VERSION {
            return Err(DescError::UnknownVersion {
                kind: RECORD_KIND_DESCRIPTOR,
                version,
            });
        }
        let service_key = field::<32>(&body, BODY_OFF_KEY)?;
        if address_bytes(&service_key) != *address {
            return Err(DescError::WrongAddress);
        }
        let expected = blind_public(&service_key, address, e).map_err(|err| match err {
            DescError::BlindedKey => DescError::Field("service key not canonical"),
            other => other,
        })?;
        if expected != self.blinded_key {
            return Err(DescError::WrongBlinding);
        }
        let n = usize::from(n_intro);
        if !(1..=DESC_MAX_INTRO).contains(&n) {
            return Err(DescError::Field("intro point count"));
        }
        let mut intro_points = Vec::with_capacity(n);
        for i in 0..DESC_MAX_INTRO {
            let off = BODY_OFF_INTRO + i * INTRO_ENTRY_LEN;
            let slot = body
                .get(off..off + INTRO_ENTRY_LEN)
                .ok_or(DescError::Field("intro slot"))?;
            if i < n {
                intro_points.push(IntroEntry::parse(slot)?);
            } else if slot.iter().any(|&x| x != 0) {
                return Err(DescError::Field("unused intro slot not zero"));
            }
        }
        let pow = PowParams::from_tlvs(body.get(BODY_OFF_TLV..).unwrap_or(&[]))
            .map_err(|_| DescError::Field("body TLV area"))?;
        Ok(DescriptorContent {
            service_key,
            intro_points,
            revision: self.revision,
            expires: self.expires,
            pow,
        })
    }

    /// Parses with the storage checks, then opens with the client checks.
    pub fn parse_and_open(
        bytes: &[u8],
        address: &[u8; 16],
        e: u64,
        now_ms: u64,
    ) -> Result<DescriptorContent, DescError> {
        Descriptor::parse(bytes, now_ms)?.open(address, e)
    }

    /// The exact bytes.
    pub fn bytes(&self) -> &[u8; DESC_LEN] {
        &self.bytes
    }

    /// The DHT key it is stored under.
    pub fn index(&self) -> &[u8; 32] {
        &self.index
    }

    /// The signer `A'`.
    pub fn blinded_key(&self) -> &[u8; 32] {
        &self.blinded_key
    }

    /// The revision.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Unix seconds after which it is invalid.
    pub fn expires(&self) -> u64 {
        self.expires
    }
}

#[cfg(test)]
mod tests;
