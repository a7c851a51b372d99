//! GN-NTOR, the circuit handshake (docs/protocol.md sections 8.1-8.3).
//!
//! One round trip per hop, one-way authenticated: the relay proves it knows the onion key `b`, the
//! client stays anonymous. The client's extension area is encrypted to the onion key, so the
//! previous hop, which carries the CREATE bytes, cannot read it. The keys bind the whole CREATE
//! transcript.
//!
//! [`ClientHandshake::new`] makes CREATE bytes and [`ClientHandshake::finish`] checks CREATED;
//! [`respond`] is the relay side. Both are pure functions of their inputs and the random number
//! generator handed in; no I/O, no clock. Every failure is a typed [`HandshakeError`] that says
//! which DESTROY reason a relay answers with.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Tag};
use core::fmt;
use hkdf::Hkdf;
use rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use super::keys::{HopKeys, HOP_KEYS_LEN};
use crate::crypto::keys::fingerprint;
use crate::crypto::labels::{
    LABEL_CIRC_HS_CLIENT_MSG, LABEL_CIRC_HS_KEYS, LABEL_CIRC_HS_TRANSCRIPT,
};
use crate::wire::cell::DestroyReason;
use crate::wire::handshake::{
    ClientExt, CreateHandshake, CreatedHandshake, ExtError, HandshakeWireError, ServerExt,
    CREATED_HS_LEN, CREATE_HS_LEN, HS_CLIENT_EXT_LEN, HS_SERVER_EXT_LEN, HS_TAG_LEN,
};

/// Why a circuit handshake failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// Malformed bytes, unknown version or type, or CREATED status not 0.
    Wire(HandshakeWireError),
    /// CREATE names another relay's identity.
    WrongIdentity,
    /// CREATE uses an onion key this relay does not hold (DESTROY reason 6).
    UnknownOnionKey,
    /// An X25519 result was all zero (a low-order peer key).
    LowOrderKey,
    /// An extension area did not decrypt.
    ExtDecrypt,
    /// An extension area decrypted but was refused.
    Ext(ExtError),
    /// CREATED's `AUTH` does not match (the relay does not know the onion key).
    AuthMismatch,
    /// HKDF refused the output length (cannot happen for the fixed lengths used).
    Kdf,
}

impl HandshakeError {
    /// The DESTROY reason a relay answers this failure with (8.2).
    pub fn destroy_reason(&self) -> DestroyReason {
        match self {
            HandshakeError::UnknownOnionKey => DestroyReason::UnknownOnionKey,
            HandshakeError::Kdf => DestroyReason::Internal,
            _ => DestroyReason::Protocol,
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Wire(e) => write!(f, "handshake bytes refused: {e}"),
            HandshakeError::WrongIdentity => f.write_str("CREATE for another relay identity"),
            HandshakeError::UnknownOnionKey => f.write_str("unknown onion key"),
            HandshakeError::LowOrderKey => f.write_str("all-zero X25519 result"),
            HandshakeError::ExtDecrypt => f.write_str("extension area does not decrypt"),
            HandshakeError::Ext(e) => write!(f, "extension area refused: {e}"),
            HandshakeError::AuthMismatch => f.write_str("relay failed to authenticate"),
            HandshakeError::Kdf => f.write_str("key derivation failed"),
        }
    }
}

impl std::error::Error for HandshakeError {}

impl From<HandshakeWireError> for HandshakeError {
    fn from(e: HandshakeWireError) -> Self {
        HandshakeError::Wire(e)
    }
}

impl From<ExtError> for HandshakeError {
    fn from(e: ExtError) -> Self {
        HandshakeError::Ext(e)
    }
}

/// A relay's onion key pair (`b`, `B`). `Debug` shows a fingerprint of `B` only.
#[derive(Clone)]
pub struct OnionKey {
    secret: StaticSecret,
    public: [u8; 32],
}

impl OnionKey {
    /// A fresh onion key.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self::from_secret(StaticSecret::random_from_rng(rng))
    }

    /// An onion key from its secret.
    pub fn from_secret(secret: StaticSecret) -> Self {
        let public = PublicKey::from(&secret).to_bytes();
        OnionKey { secret, public }
    }

    /// `B`.
    pub fn public(&self) -> &[u8; 32] {
        &self.public
    }

    /// `b`, to write to the key file (zeroed when dropped).
    pub fn secret_bytes(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.secret.to_bytes())
    }
}

impl fmt::Debug for OnionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OnionKey({})", fingerprint(&self.public))
    }
}

/// Which relay a client handshakes with: its identity and the onion key from its relay record.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HopTarget {
    /// `ID`, the relay's Ed25519 identity.
    pub identity: [u8; 32],
    /// `B`, the relay's current onion key.
    pub onion_key: [u8; 32],
}

impl fmt::Debug for HopTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HopTarget({})", fingerprint(&self.identity))
    }
}

/// X25519 with the all-zero check (3.1), constant time.
fn dh(secret: &StaticSecret, public: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, HandshakeError> {
    let out = Zeroizing::new(match crate::sim::crypto::stand_in_dh(secret, public) {
        Some(s) => s,
        None => secret.diffie_hellman(&PublicKey::from(*public)).to_bytes(),
    });
    if bool::from(out.ct_eq(&[0u8; 32])) {
        return Err(HandshakeError::LowOrderKey);
    }
    Ok(out)
}

/// `KDF(label, ikm, n)` = HKDF-Expand(HKDF-Extract(salt = label, ikm), info = label, n).
fn kdf(label: &[u8], ikm: &[u8], out: &mut [u8]) -> Result<(), HandshakeError> {
    Hkdf::<Sha256>::new(Some(label), ikm)
        .expand(label, out)
        .map_err(|_| HandshakeError::Kdf)
}

/// `k_cm = KDF(LABEL_CIRC_HS_CLIENT_MSG, s1 ‖ ID ‖ B ‖ X, 32)`.
fn client_msg_key(
    s1: &[u8; 32],
    id: &[u8; 32],
    b: &[u8; 32],
    x: &[u8; 32],
) -> Result<Zeroizing<[u8; 32]>, HandshakeError> {
    let mut ikm = Zeroizing::new([0u8; 128]);
    for (dst, src) in ikm.chunks_exact_mut(32).zip([s1, id, b, x]) {
        dst.copy_from_slice(src);
    }
    let mut k = Zeroizing::new([0u8; 32]);
    kdf(LABEL_CIRC_HS_CLIENT_MSG, &ikm[..], &mut k[..])?;
    Ok(k)
}

/// `th = H(LABEL_CIRC_HS_TRANSCRIPT, CREATE bytes)`.
fn transcript_hash(create: &[u8; CREATE_HS_LEN]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(LABEL_CIRC_HS_TRANSCRIPT);
    h.update(create);
    h.finalize().into()
}

/// Inputs of the hop key derivation (8.2 step 4).
struct KeyInputs<'a> {
    s2: &'a [u8; 32],
    s1: &'a [u8; 32],
    id: &'a [u8; 32],
    b: &'a [u8; 32],
    x: &'a [u8; 32],
    y: &'a [u8; 32],
    th: &'a [u8; 32],
}

/// `km = KDF(LABEL_CIRC_HS_KEYS, s2 ‖ s1 ‖ ID ‖ B ‖ X ‖ Y ‖ th, HOP_KEYS_LEN)`.
fn key_material(i: &KeyInputs<'_>) -> Result<Zeroizing<[u8; HOP_KEYS_LEN]>, HandshakeError> {
    let mut ikm = Zeroizing::new([0u8; 7 * 32]);
    for (dst, src) in ikm
        .chunks_exact_mut(32)
        .zip([i.s2, i.s1, i.id, i.b, i.x, i.y, i.th])
    {
        dst.copy_from_slice(src);
    }
    let mut km = Zeroizing::new([0u8; HOP_KEYS_LEN]);
    kdf(LABEL_CIRC_HS_KEYS, &ikm[..], &mut km[..])?;
    Ok(km)
}

const ZERO_NONCE: [u8; 12] = [0u8; 12];

fn seal(key: &[u8; 32], ad: &[u8], plaintext: &[u8], out: &mut [u8]) -> Result<(), HandshakeError> {
    let (ct, tag_out) = out
        .split_at_mut_checked(plaintext.len())
        .ok_or(HandshakeError::Kdf)?;
    ct.copy_from_slice(plaintext);
    let tag = ChaCha20Poly1305::new(key.into())
        .encrypt_in_place_detached(&ZERO_NONCE.into(), ad, ct)
        .map_err(|_| HandshakeError::Kdf)?;
    tag_out.copy_from_slice(&tag);
    Ok(())
}

fn open<const N: usize>(
    key: &[u8; 32],
    ad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<[u8; N]>, HandshakeError> {
    let (ct, tag) = sealed
        .split_at_checked(N)
        .filter(|(_, t)| t.len() == HS_TAG_LEN)
        .ok_or(HandshakeError::ExtDecrypt)?;
    let mut pt = Zeroizing::new([0u8; N]);
    pt.copy_from_slice(ct);
    ChaCha20Poly1305::new(key.into())
        .decrypt_in_place_detached(&ZERO_NONCE.into(), ad, &mut pt[..], Tag::from_slice(tag))
        .map_err(|_| HandshakeError::ExtDecrypt)?;
    Ok(pt)
}

/// The client's side of one hop's handshake, between CREATE and CREATED. Holds the ephemeral
/// secret `x`, which is erased when this is dropped or finished.
pub struct ClientHandshake {
    x: StaticSecret,
    x_pub: [u8; 32],
    s1: Zeroizing<[u8; 32]>,
    target: HopTarget,
    th: [u8; 32],
    backward_seq_start: u64,
}

impl fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHandshake")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl ClientHandshake {
    /// Start a handshake with `target`: a fresh ephemeral key and the CREATE bytes carrying `ext`.
    pub fn new<R: RngCore + CryptoRng>(
        rng: &mut R,
        target: &HopTarget,
        ext: &ClientExt,
    ) -> Result<(Self, [u8; CREATE_HS_LEN]), HandshakeError> {
        let x = StaticSecret::random_from_rng(rng);
        let x_pub = PublicKey::from(&x).to_bytes();
        let s1 = dh(&x, &target.onion_key)?;
        let k_cm = client_msg_key(&s1, &target.identity, &target.onion_key, &x_pub)?;
        let mut create = [0u8; CREATE_HS_LEN];
        let mut view = CreateHandshake::new_unchecked(&mut create);
        view.emit_head(&target.identity, &target.onion_key, &x_pub);
        let (ad, enc) = view.split_ad_mut();
        let mut area = ext.emit();
        let sealed = seal(&k_cm, ad, &area, enc);
        area.zeroize();
        sealed?;
        let th = transcript_hash(&create);
        Ok((
            ClientHandshake {
                x,
                x_pub,
                s1,
                target: *target,
                th,
                backward_seq_start: ext.backward_seq_start,
            },
            create,
        ))
    }

    /// The `BACKWARD_SEQ_START` this handshake carried.
    pub fn backward_seq_start(&self) -> u64 {
        self.backward_seq_start
    }

    /// The relay this handshake is with.
    pub fn target(&self) -> &HopTarget {
        &self.target
    }

    /// Check CREATED and derive the hop keys. Consumes the handshake, erasing `x`.
    pub fn finish(self, created: &[u8]) -> Result<(HopKeys, ServerExt), HandshakeError> {
        let view = CreatedHandshake::new_checked(created)?;
        let y = view.relay_key();
        let s2 = dh(&self.x, &y)?;
        let km = key_material(&KeyInputs {
            s2: &s2,
            s1: &self.s1,
            id: &self.target.identity,
            b: &self.target.onion_key,
            x: &self.x_pub,
            y: &y,
            th: &self.th,
        })?;
        let (keys, hs) = HopKeys::split(&km);
        if !bool::from(hs.auth.ct_eq(&view.auth())) {
            return Err(HandshakeError::AuthMismatch);
        }
        let area = open::<HS_SERVER_EXT_LEN>(&hs.k_sm, view.associated_data(), view.enc_ext())?;
        let ext = ServerExt::parse(&area)?;
        Ok((keys, ext))
    }
}

/// What the relay side of a handshake produces.
pub struct RelayHandshake {
    /// The CREATED handshake bytes to send (also kept to answer a duplicate CREATE, 8.4).
    pub created: [u8; CREATED_HS_LEN],
    /// The hop keys.
    pub keys: HopKeys,
    /// The client's extension area.
    pub client_ext: ClientExt,
}

impl fmt::Debug for RelayHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayHandshake")
            .field("client_ext", &self.client_ext)
            .finish_non_exhaustive()
    }
}

/// The relay side of GN-NTOR (8.2): check a CREATE handshake and answer it.
///
/// `identity` is this relay's Ed25519 identity; `onion_keys` are the onion keys it accepts (the
/// current one and, within `ONION_KEY_GRACE_S`, the previous one: the caller decides). Checks in
/// the order of 8.2: version and type, identity, onion key, `s1`, the client extension area
/// (decryption and TLVs), then `s2`. The error says which DESTROY reason to answer with.
pub fn respond<R: RngCore + CryptoRng>(
    rng: &mut R,
    create: &[u8],
    identity: &[u8; 32],
    onion_keys: &[&OnionKey],
    server_ext: &ServerExt,
) -> Result<RelayHandshake, HandshakeError> {
    let view = CreateHandshake::new_checked(create)?;
    if view.identity() != *identity {
        return Err(HandshakeError::WrongIdentity);
    }
    let b_pub = view.onion_key();
    let onion = onion_keys
        .iter()
        .find(|k| k.public == b_pub)
        .ok_or(HandshakeError::UnknownOnionKey)?;
    let x_pub = view.client_key();
    let s1 = dh(&onion.secret, &x_pub)?;
    let k_cm = client_msg_key(&s1, identity, &b_pub, &x_pub)?;
    let area = open::<HS_CLIENT_EXT_LEN>(&k_cm, view.associated_data(), view.enc_ext())?;
    let client_ext = ClientExt::parse(&area)?;

    let y = StaticSecret::random_from_rng(rng);
    let y_pub = PublicKey::from(&y).to_bytes();
    let s2 = dh(&y, &x_pub)?;
    drop(y);
    let th = transcript_hash(view.as_bytes());
    let km = key_material(&KeyInputs {
        s2: &s2,
        s1: &s1,
        id: identity,
        b: &b_pub,
        x: &x_pub,
        y: &y_pub,
        th: &th,
    })?;
    let (keys, hs) = HopKeys::split(&km);
    let mut created = [0u8; CREATED_HS_LEN];
    let mut out = CreatedHandshake::new_unchecked(&mut created);
    out.emit_head(&y_pub, &hs.auth);
    let (ad, enc) = out.split_ad_mut();
    seal(&hs.k_sm, ad, &server_ext.emit(), enc)?;
    Ok(RelayHandshake {
        created,
        keys,
        client_ext,
    })
}

#[cfg(test)]
mod tests {
    //! Known answers for the internal steps (k_cm, th, km); the public API is checked against the
    //! same vectors in tests/cell_vectors.rs.
    use super::*;
    use serde_json::Value;

    fn hex32(v: &Value) -> [u8; 32] {
        let b = hex(v);
        b.try_into().unwrap()
    }

    fn hex(v: &Value) -> Vec<u8> {
        let s = v.as_str().unwrap();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn internal_steps_match_the_vector() {
        let doc: Value =
            serde_json::from_str(include_str!("../../tests/vectors/protocol.json")).unwrap();
        let v = &doc["circuit_handshake"];
        let i = &v["inputs"];
        let id = hex32(&i["relay_identity"]);
        let b = hex32(&i["onion_key_B"]);
        let x = StaticSecret::from(hex32(&i["client_ephemeral_secret_x"]));
        let y = StaticSecret::from(hex32(&i["relay_ephemeral_secret_y"]));
        let x_pub = PublicKey::from(&x).to_bytes();
        let y_pub = PublicKey::from(&y).to_bytes();
        assert_eq!(x_pub, hex32(&i["client_ephemeral_X"]));
        assert_eq!(y_pub, hex32(&i["relay_ephemeral_Y"]));
        let onion = OnionKey::from_secret(StaticSecret::from(hex32(&i["onion_secret"])));
        assert_eq!(onion.public(), &b);
        let s1 = dh(&x, &b).unwrap();
        assert_eq!(*s1, hex32(&v["dh_xB"]));
        let s2 = dh(&y, &x_pub).unwrap();
        assert_eq!(*s2, hex32(&v["dh_xY"]));
        let k_cm = client_msg_key(&s1, &id, &b, &x_pub).unwrap();
        assert_eq!(*k_cm, hex32(&v["k_cm"]));
        let create: [u8; CREATE_HS_LEN] = hex(&v["create_handshake"]).try_into().unwrap();
        let th = transcript_hash(&create);
        assert_eq!(th, hex32(&v["transcript_hash"]));
        let km = key_material(&KeyInputs {
            s2: &s2,
            s1: &s1,
            id: &id,
            b: &b,
            x: &x_pub,
            y: &y_pub,
            th: &th,
        })
        .unwrap();
        assert_eq!(&km[..], &hex(&v["key_material"])[..]);
        let (_, hs) = HopKeys::split(&km);
        assert_eq!(hs.auth, hex32(&v["keys"]["auth"]));
        assert_eq!(hs.k_sm, hex32(&v["keys"]["k_sm"]));
        // the client extension area decrypts to the vector's plaintext
        let view = CreateHandshake::new_checked(&create).unwrap();
        let area = open::<64>(&k_cm, view.associated_data(), view.enc_ext()).unwrap();
        assert_eq!(&area[..], &hex(&i["client_ext_plaintext"])[..]);
    }

    #[test]
    fn low_order_keys_are_refused() {
        let x = StaticSecret::from([7u8; 32]);
        assert_eq!(dh(&x, &[0u8; 32]).unwrap_err(), HandshakeError::LowOrderKey);
        // 1 is a point of order 4 on the Montgomery curve (u = 1 → all-zero output after clamping)
        let mut one = [0u8; 32];
        one[0] = 1;
        assert_eq!(dh(&x, &one).unwrap_err(), HandshakeError::LowOrderKey);
    }

    #[test]
    fn debug_has_no_secrets() {
        let k = OnionKey::from_secret(StaticSecret::from([9u8; 32]));
        let s = format!("{k:?}");
        assert!(s.starts_with("OnionKey(") && s.len() < 24, "{s}");
    }
}
