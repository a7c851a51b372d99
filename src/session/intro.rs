//! Introduction and rendezvous message bodies (docs/protocol.md 10.6) and the JOIN proof (10.7).
//!
//! Each body has a fixed size, a `parse` that checks length and version and never panics, and an
//! `emit` into a fixed array. Reserved bytes and padding are written as zero and ignored on
//! receipt; TLV areas (8.3 format, no types defined in v1) are checked (an unknown critical type
//! is refused) and carried as raw bytes. The rendezvous link
//! specifier is carried raw too: parse it with [`crate::wire::record::LinkSpec::parse`].
//!
//! Intro points see only [`EstablishIntro`], [`Introduce1`] and its [`Introduce1::replay_tag`];
//! the rendezvous point sees only [`Rendezvous1`]/[`Rendezvous2`] and the cookie. Cookies are secret
//! to the client, the rendezvous point and the service: their `Debug` is redacted.

use core::fmt;
use ed25519_dalek::{Signature, Signer, SigningKey};
use hmac::{Hmac, Mac};
use rand::{CryptoRng, RngCore};
use sha2::Sha256;

use super::handshake::{E2E_MSG1_LEN, E2E_MSG2_LEN};
use super::{array_at, hash};
use crate::crypto::keys::{decode_public_key, fingerprint};
use crate::crypto::labels::{LABEL_E2E_JOIN, LABEL_ESTABLISH_INTRO, LABEL_INTRO_REPLAY};
use crate::session::intro_pow::{IntroPow, INTRO_POW_LEN};
use crate::wire::record::LINK_SPEC_LEN;

/// Version byte of every body in this module.
pub const INTRO_VERSION: u8 = 1;
/// Rendezvous cookie length.
pub const REND_COOKIE_LEN: usize = 32;
/// ESTABLISH_INTRO: version ‖ flags ‖ 2 reserved ‖ `auth_key` (32) ‖ `sig` (64).
pub const ESTABLISH_INTRO_LEN: usize = 100;
/// Flag bit of ESTABLISH_INTRO byte 1: the service sheds introductions by proof of work
/// (10.12), so the intro point lifts its per-key rate to `INTRO_POW_RATE` (10.6).
pub const ESTABLISH_FLAG_POW: u8 = 0x01;
/// INTRODUCE1 and INTRODUCE2: version ‖ flags ‖ 2 reserved ‖ `auth_key` (32) ‖ `msg1` (496),
/// then the proof-of-work extension if flag [`INTRO_FLAG_POW`] is set.
pub const INTRODUCE1_LEN: usize = 4 + 32 + E2E_MSG1_LEN;
/// INTRODUCE1 with the proof-of-work extension.
pub const INTRODUCE1_POW_LEN: usize = INTRODUCE1_LEN + INTRO_POW_LEN;
/// Flag bit of INTRODUCE1 byte 1: the proof-of-work extension follows `msg1` (10.12).
pub const INTRO_FLAG_POW: u8 = 0x01;
/// Intro plaintext inside `msg1`.
pub const INTRO_PLAINTEXT_LEN: usize = 400;
/// TLV area at the end of the intro plaintext.
pub const INTRO_TLV_LEN: usize = INTRO_PLAINTEXT_LEN - 4 - REND_COOKIE_LEN - LINK_SPEC_LEN - 32;
/// Rendezvous plaintext inside `msg2`.
pub const REND_PLAINTEXT_LEN: usize = 32;
/// TLV area of the rendezvous plaintext.
pub const REND_TLV_LEN: usize = REND_PLAINTEXT_LEN - 4;
/// Handshake area of RENDEZVOUS1/2.
pub const REND_HS_DATA_LEN: usize = 96;
/// RENDEZVOUS1: version ‖ 3 ‖ cookie (32) ‖ `hs_type` ‖ 3 ‖ `hs_data` (96).
pub const RENDEZVOUS1_LEN: usize = 4 + REND_COOKIE_LEN + 4 + REND_HS_DATA_LEN;
/// RENDEZVOUS2: version ‖ 3 ‖ `hs_type` ‖ 3 ‖ `hs_data` (96).
pub const RENDEZVOUS2_LEN: usize = 4 + 4 + REND_HS_DATA_LEN;
/// `hs_type` of an introduction handshake (`msg2`).
pub const HS_TYPE_IK: u8 = 1;
/// `hs_type` of a JOIN proof.
pub const HS_TYPE_JOIN: u8 = 2;
/// Length of the JOIN MAC.
pub const JOIN_MAC_LEN: usize = 32;

const _: () = assert!(
    INTRODUCE1_LEN == 532
        && INTRO_TLV_LEN == 60
        && RENDEZVOUS1_LEN == 136
        && RENDEZVOUS2_LEN == 104
        && E2E_MSG2_LEN <= REND_HS_DATA_LEN
);

/// Why a body was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntroError {
    /// Not the body's fixed length.
    Length,
    /// Unknown version byte (section 16: drop silently).
    Version(u8),
    /// Unknown `hs_type` in RENDEZVOUS1/2.
    HsType(u8),
    /// The auth key is not a canonical Ed25519 point of large order.
    BadAuthKey,
    /// The ESTABLISH_INTRO signature does not verify (strictly) for this circuit.
    BadSignature,
    /// A TLV area holds a critical type this version does not know (8.3), or a TLV runs past the
    /// area.
    Tlv(u8),
}

impl fmt::Display for IntroError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntroError::Length => f.write_str("body has the wrong length"),
            IntroError::Version(v) => write!(f, "unknown body version {v}"),
            IntroError::HsType(t) => write!(f, "unknown rendezvous hs_type {t}"),
            IntroError::BadAuthKey => f.write_str("intro auth key is not a usable Ed25519 point"),
            IntroError::BadSignature => f.write_str("ESTABLISH_INTRO signature does not verify"),
            IntroError::Tlv(t) => write!(f, "TLV area refused at type {t:#04x}"),
        }
    }
}

impl std::error::Error for IntroError {}

/// Checks length and version of a fixed-size body and returns it as an array.
fn checked<const N: usize>(bytes: &[u8]) -> Result<&[u8; N], IntroError> {
    let b: &[u8; N] = bytes.try_into().map_err(|_| IntroError::Length)?;
    match b.first() {
        Some(&INTRO_VERSION) => Ok(b),
        Some(&v) => Err(IntroError::Version(v)),
        None => Err(IntroError::Length),
    }
}

/// Checks a TLV area (8.3 format): `type ‖ len ‖ value`, type 0 ends the list. No types are
/// defined for the plaintexts of v1, so any critical type (bit 7 set) is refused and the others
/// are ignored; a TLV that runs past the area is refused.
fn check_tlvs(area: &[u8]) -> Result<(), IntroError> {
    let mut rest = area;
    while let Some((&t, after)) = rest.split_first() {
        if t == 0 {
            return Ok(());
        }
        if t & 0x80 != 0 {
            return Err(IntroError::Tlv(t));
        }
        let (&len, value) = after.split_first().ok_or(IntroError::Tlv(t))?;
        rest = value.get(usize::from(len)..).ok_or(IntroError::Tlv(t))?;
    }
    Ok(())
}

fn get<const N: usize>(bytes: &[u8], offset: usize) -> Result<[u8; N], IntroError> {
    array_at(bytes, offset).ok_or(IntroError::Length)
}

fn put(out: &mut [u8], offset: usize, src: &[u8]) {
    if let Some(dst) = out.get_mut(offset..offset + src.len()) {
        dst.copy_from_slice(src);
    }
}

/// A rendezvous cookie (10.6): 32 random bytes chosen by the client.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RendCookie(pub [u8; REND_COOKIE_LEN]);

impl RendCookie {
    /// A fresh random cookie.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut c = [0u8; REND_COOKIE_LEN];
        rng.fill_bytes(&mut c);
        RendCookie(c)
    }

    /// The cookie bytes.
    pub fn as_bytes(&self) -> &[u8; REND_COOKIE_LEN] {
        &self.0
    }
}

impl fmt::Debug for RendCookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RendCookie(..)")
    }
}

/// ESTABLISH_INTRO (service → intro point).
#[derive(Clone, PartialEq, Eq)]
pub struct EstablishIntro {
    /// The intro auth key, Ed25519.
    pub auth_key: [u8; 32],
    /// `Sign(auth key, LABEL_ESTABLISH_INTRO, bind ‖ auth_key)`.
    pub sig: [u8; 64],
    /// Byte 1: [`ESTABLISH_FLAG_POW`]; other bits reserved (sent as 0, kept as received, and
    /// ignored). Not signed: the last hop's check field (6.5) already refuses a changed cell.
    pub flags: u8,
}

/// `LABEL_ESTABLISH_INTRO ‖ bind ‖ auth_key`, on the stack.
fn establish_intro_message(bind: &[u8; 32], auth_key: &[u8; 32]) -> [u8; 92] {
    const _: () = assert!(LABEL_ESTABLISH_INTRO.len() + 64 == 92);
    let mut m = [0u8; 92];
    put(&mut m, 0, LABEL_ESTABLISH_INTRO);
    put(&mut m, LABEL_ESTABLISH_INTRO.len(), bind);
    put(&mut m, LABEL_ESTABLISH_INTRO.len() + 32, auth_key);
    m
}

impl EstablishIntro {
    /// Signs a registration of `auth` on the circuit whose last-hop `bind` value (8.2) is `bind`.
    pub fn sign(auth: &SigningKey, bind: &[u8; 32]) -> Self {
        let auth_key = auth.verifying_key().to_bytes();
        let sig = auth
            .sign(&establish_intro_message(bind, &auth_key))
            .to_bytes();
        EstablishIntro {
            auth_key,
            sig,
            flags: 0,
        }
    }

    /// The same registration with `flags` (e.g. [`ESTABLISH_FLAG_POW`]).
    pub fn with_flags(self, flags: u8) -> Self {
        EstablishIntro { flags, ..self }
    }

    /// Whether the service asks for the proof-of-work rate ([`ESTABLISH_FLAG_POW`]).
    pub fn sheds_by_pow(&self) -> bool {
        self.flags & ESTABLISH_FLAG_POW != 0
    }

    /// The intro point's check: `auth_key` canonical, of large order and torsion-free, and the
    /// signature valid (strict verification) for this circuit's `bind`.
    pub fn verify(&self, bind: &[u8; 32]) -> Result<(), IntroError> {
        let vk = decode_public_key(&self.auth_key).ok_or(IntroError::BadAuthKey)?;
        vk.verify_strict(
            &establish_intro_message(bind, &self.auth_key),
            &Signature::from_bytes(&self.sig),
        )
        .map_err(|_| IntroError::BadSignature)
    }

    /// Parses the body (length and version only; then [`verify`](Self::verify)).
    pub fn parse(bytes: &[u8]) -> Result<Self, IntroError> {
        let b = checked::<ESTABLISH_INTRO_LEN>(bytes)?;
        Ok(EstablishIntro {
            auth_key: get(b, 4)?,
            sig: get(b, 36)?,
            flags: b[1],
        })
    }

    /// The body bytes.
    pub fn emit(&self) -> [u8; ESTABLISH_INTRO_LEN] {
        let mut out = [0u8; ESTABLISH_INTRO_LEN];
        out[0] = INTRO_VERSION;
        out[1] = self.flags;
        put(&mut out, 4, &self.auth_key);
        put(&mut out, 36, &self.sig);
        out
    }
}

impl fmt::Debug for EstablishIntro {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EstablishIntro")
            .field("auth_key", &fingerprint(&self.auth_key))
            .field("flags", &self.flags)
            .finish_non_exhaustive()
    }
}

/// INTRODUCE1 (client → intro point); the intro point relays the same bytes as INTRODUCE2.
#[derive(Clone, PartialEq, Eq)]
pub struct Introduce1 {
    /// The intro point's auth key, from the descriptor.
    pub auth_key: [u8; 32],
    /// GN-E2E-IK message 1 (10.3).
    pub msg1: [u8; E2E_MSG1_LEN],
    /// The proof-of-work extension (10.12), for a service that asks for effort.
    pub pow: Option<IntroPow>,
}

/// INTRODUCE2 (intro point → service) is INTRODUCE1 byte for byte.
pub type Introduce2 = Introduce1;

impl Introduce1 {
    /// Parses the body: 532 bytes, or 548 with the proof-of-work flag (other flag bits are
    /// reserved and ignored).
    pub fn parse(bytes: &[u8]) -> Result<Self, IntroError> {
        let flags = bytes.get(1).copied().unwrap_or(0);
        if flags & INTRO_FLAG_POW == 0 {
            let b = checked::<INTRODUCE1_LEN>(bytes)?;
            return Ok(Introduce1 {
                auth_key: get(b, 4)?,
                msg1: get(b, 36)?,
                pow: None,
            });
        }
        let b = checked::<INTRODUCE1_POW_LEN>(bytes)?;
        let ext: [u8; INTRO_POW_LEN] = get(b, INTRODUCE1_LEN)?;
        Ok(Introduce1 {
            auth_key: get(b, 4)?,
            msg1: get(b, 36)?,
            pow: Some(IntroPow::parse(&ext)),
        })
    }

    /// The body bytes (532, or 548 with the proof of work).
    pub fn emit(&self) -> Vec<u8> {
        let flags = if self.pow.is_some() {
            INTRO_FLAG_POW
        } else {
            0
        };
        let mut out = vec![0u8; INTRODUCE1_LEN];
        put(&mut out, 0, &[INTRO_VERSION, flags]);
        put(&mut out, 4, &self.auth_key);
        put(&mut out, 36, &self.msg1);
        if let Some(p) = &self.pow {
            out.extend_from_slice(&p.emit());
        }
        out
    }

    /// The client's ephemeral `E_c`: the first 32 bytes of `msg1` (10.3), in the clear.
    pub fn client_ephemeral(&self) -> [u8; 32] {
        array_at(&self.msg1, 0).unwrap_or([0u8; 32])
    }

    /// The intro point's replay-cache tag `H(LABEL_INTRO_REPLAY, auth_key ‖ msg1)` (the proof
    /// of work is not part of it: another nonce for the same `msg1` is the same introduction).
    pub fn replay_tag(&self) -> [u8; 32] {
        hash(LABEL_INTRO_REPLAY, &[&self.auth_key, &self.msg1])
    }
}

impl fmt::Debug for Introduce1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Introduce1")
            .field("auth_key", &fingerprint(&self.auth_key))
            .finish_non_exhaustive()
    }
}

/// The intro plaintext the client encrypts in `msg1`: where to meet it.
#[derive(Clone, PartialEq, Eq)]
pub struct IntroPlaintext {
    /// The rendezvous cookie.
    pub cookie: RendCookie,
    /// The rendezvous point's link specifier (5.3), raw.
    pub rendezvous_link_spec: [u8; LINK_SPEC_LEN],
    /// The rendezvous point's onion key.
    pub rendezvous_onion_key: [u8; 32],
    /// TLV area (8.3 format; no types in v1).
    pub tlv: [u8; INTRO_TLV_LEN],
}

impl IntroPlaintext {
    /// Parses the plaintext (unknown version: drop silently, section 16).
    pub fn parse(bytes: &[u8]) -> Result<Self, IntroError> {
        let b = checked::<INTRO_PLAINTEXT_LEN>(bytes)?;
        let tlv: [u8; INTRO_TLV_LEN] = get(b, 68 + LINK_SPEC_LEN)?;
        check_tlvs(&tlv)?;
        Ok(IntroPlaintext {
            cookie: RendCookie(get(b, 4)?),
            rendezvous_link_spec: get(b, 36)?,
            rendezvous_onion_key: get(b, 36 + LINK_SPEC_LEN)?,
            tlv,
        })
    }

    /// The plaintext bytes.
    pub fn emit(&self) -> [u8; INTRO_PLAINTEXT_LEN] {
        let mut out = [0u8; INTRO_PLAINTEXT_LEN];
        out[0] = INTRO_VERSION;
        put(&mut out, 4, &self.cookie.0);
        put(&mut out, 36, &self.rendezvous_link_spec);
        put(&mut out, 36 + LINK_SPEC_LEN, &self.rendezvous_onion_key);
        put(&mut out, 68 + LINK_SPEC_LEN, &self.tlv);
        out
    }
}

impl fmt::Debug for IntroPlaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntroPlaintext")
            .field(
                "rendezvous_onion_key",
                &fingerprint(&self.rendezvous_onion_key),
            )
            .finish_non_exhaustive()
    }
}

/// The rendezvous plaintext the service encrypts in `msg2`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RendPlaintext {
    /// TLV area (8.3 format; no types in v1).
    pub tlv: [u8; REND_TLV_LEN],
}

impl Default for RendPlaintext {
    fn default() -> Self {
        RendPlaintext {
            tlv: [0u8; REND_TLV_LEN],
        }
    }
}

impl RendPlaintext {
    /// Parses the plaintext.
    pub fn parse(bytes: &[u8]) -> Result<Self, IntroError> {
        let b = checked::<REND_PLAINTEXT_LEN>(bytes)?;
        let tlv: [u8; REND_TLV_LEN] = get(b, 4)?;
        check_tlvs(&tlv)?;
        Ok(RendPlaintext { tlv })
    }

    /// The plaintext bytes.
    pub fn emit(&self) -> [u8; REND_PLAINTEXT_LEN] {
        let mut out = [0u8; REND_PLAINTEXT_LEN];
        out[0] = INTRO_VERSION;
        put(&mut out, 4, &self.tlv);
        out
    }
}

/// The handshake area of RENDEZVOUS1/2.
#[derive(Clone, PartialEq, Eq)]
pub enum RendHs {
    /// `hs_type` 1: GN-E2E-IK message 2 (a new session).
    Ik([u8; E2E_MSG2_LEN]),
    /// `hs_type` 2: the JOIN MAC (a circuit added to a session).
    Join([u8; JOIN_MAC_LEN]),
}

impl RendHs {
    fn parse(hs_type: u8, data: &[u8]) -> Result<Self, IntroError> {
        match hs_type {
            HS_TYPE_IK => Ok(RendHs::Ik(get(data, 0)?)),
            HS_TYPE_JOIN => Ok(RendHs::Join(get(data, 0)?)),
            t => Err(IntroError::HsType(t)),
        }
    }

    /// `hs_type` and `hs_data` (zero padded).
    fn emit(&self) -> (u8, [u8; REND_HS_DATA_LEN]) {
        let mut data = [0u8; REND_HS_DATA_LEN];
        match self {
            RendHs::Ik(m) => {
                put(&mut data, 0, m);
                (HS_TYPE_IK, data)
            }
            RendHs::Join(m) => {
                put(&mut data, 0, m);
                (HS_TYPE_JOIN, data)
            }
        }
    }
}

impl fmt::Debug for RendHs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RendHs::Ik(_) => "Ik(..)",
            RendHs::Join(_) => "Join(..)",
        })
    }
}

/// RENDEZVOUS1 (service → rendezvous point).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendezvous1 {
    /// The cookie the client registered.
    pub cookie: RendCookie,
    /// The handshake area.
    pub hs: RendHs,
}

impl Rendezvous1 {
    /// Parses the body (padding after `msg2` or the MAC is ignored).
    pub fn parse(bytes: &[u8]) -> Result<Self, IntroError> {
        let b = checked::<RENDEZVOUS1_LEN>(bytes)?;
        let hs_type = *b.get(36).ok_or(IntroError::Length)?;
        let data = b.get(40..).ok_or(IntroError::Length)?;
        Ok(Rendezvous1 {
            cookie: RendCookie(get(b, 4)?),
            hs: RendHs::parse(hs_type, data)?,
        })
    }

    /// The body bytes.
    pub fn emit(&self) -> [u8; RENDEZVOUS1_LEN] {
        let mut out = [0u8; RENDEZVOUS1_LEN];
        out[0] = INTRO_VERSION;
        put(&mut out, 4, &self.cookie.0);
        let (t, data) = self.hs.emit();
        out[36] = t;
        put(&mut out, 40, &data);
        out
    }

    /// What the rendezvous point sends on the client's circuit.
    pub fn to_rendezvous2(&self) -> Rendezvous2 {
        Rendezvous2 {
            hs: self.hs.clone(),
        }
    }
}

/// RENDEZVOUS2 (rendezvous point → client).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendezvous2 {
    /// The handshake area, as the service sent it.
    pub hs: RendHs,
}

impl Rendezvous2 {
    /// Parses the body.
    pub fn parse(bytes: &[u8]) -> Result<Self, IntroError> {
        let b = checked::<RENDEZVOUS2_LEN>(bytes)?;
        let hs_type = *b.get(4).ok_or(IntroError::Length)?;
        let data = b.get(8..).ok_or(IntroError::Length)?;
        Ok(Rendezvous2 {
            hs: RendHs::parse(hs_type, data)?,
        })
    }

    /// The body bytes.
    pub fn emit(&self) -> [u8; RENDEZVOUS2_LEN] {
        let mut out = [0u8; RENDEZVOUS2_LEN];
        out[0] = INTRO_VERSION;
        let (t, data) = self.hs.emit();
        out[4] = t;
        put(&mut out, 8, &data);
        out
    }
}

/// The JOIN proof (10.7): `MAC(k_join, LABEL_E2E_JOIN, cookie')`.
pub fn join_mac(k_join: &[u8; 32], cookie: &[u8; REND_COOKIE_LEN]) -> [u8; JOIN_MAC_LEN] {
    // HMAC accepts keys of any length.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(k_join) {
        Ok(m) => m,
        Err(_) => return [0u8; JOIN_MAC_LEN],
    };
    mac.update(LABEL_E2E_JOIN);
    mac.update(cookie);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn establish_intro_bound_to_the_circuit() {
        let auth = SigningKey::from_bytes(&[8u8; 32]);
        let e = EstablishIntro::sign(&auth, &[1u8; 32]);
        let parsed = EstablishIntro::parse(&e.emit()).unwrap();
        assert_eq!(parsed, e);
        parsed.verify(&[1u8; 32]).unwrap();
        assert_eq!(parsed.verify(&[2u8; 32]), Err(IntroError::BadSignature));
        // An auth key with a torsion component is refused before any signature check.
        let t = crate::crypto::keys::eight_torsion()[1];
        let mut torsion = parsed.clone();
        torsion.auth_key = (auth.verifying_key().to_edwards() + t)
            .compress()
            .to_bytes();
        assert_eq!(torsion.verify(&[1u8; 32]), Err(IntroError::BadAuthKey));
    }

    #[test]
    fn tlv_areas() {
        let mut b = RendPlaintext::default().emit();
        b[4..8].copy_from_slice(&[0x02, 2, 0, 0]);
        assert!(
            RendPlaintext::parse(&b).is_ok(),
            "unknown non-critical type ignored"
        );
        b[4] = 0x82;
        assert_eq!(RendPlaintext::parse(&b), Err(IntroError::Tlv(0x82)));
        b[4..6].copy_from_slice(&[0x02, 27]);
        assert_eq!(RendPlaintext::parse(&b), Err(IntroError::Tlv(0x02)));
        b[5] = 26;
        assert!(RendPlaintext::parse(&b).is_ok());
    }

    #[test]
    fn versions_and_lengths() {
        let mut b = [0u8; RENDEZVOUS2_LEN];
        assert_eq!(Rendezvous2::parse(&b), Err(IntroError::Version(0)));
        b[0] = 1;
        assert_eq!(Rendezvous2::parse(&b), Err(IntroError::HsType(0)));
        b[4] = 2;
        assert!(matches!(
            Rendezvous2::parse(&b),
            Ok(Rendezvous2 {
                hs: RendHs::Join(_)
            })
        ));
        assert_eq!(Rendezvous2::parse(&b[1..]), Err(IntroError::Length));
        assert_eq!(Introduce1::parse(&[]), Err(IntroError::Length));
    }

    #[test]
    fn introduce1_with_and_without_pow() {
        let mut i = Introduce1 {
            auth_key: [3u8; 32],
            msg1: [4u8; E2E_MSG1_LEN],
            pow: None,
        };
        let plain = i.emit();
        assert_eq!(plain.len(), INTRODUCE1_LEN);
        assert_eq!(Introduce1::parse(&plain), Ok(i.clone()));
        i.pow = Some(IntroPow {
            seed_id: [9, 8, 7, 6],
            effort: 1000,
            nonce: 42,
        });
        let b = i.emit();
        assert_eq!((b.len(), b[1]), (INTRODUCE1_POW_LEN, INTRO_FLAG_POW));
        assert_eq!(Introduce1::parse(&b), Ok(i.clone()));
        // The flag decides the length: a flagged 532-byte body or an unflagged 548 is refused.
        let mut short = plain.clone();
        short[1] = INTRO_FLAG_POW;
        assert_eq!(Introduce1::parse(&short), Err(IntroError::Length));
        let mut long = b.clone();
        long[1] = 0;
        assert_eq!(Introduce1::parse(&long), Err(IntroError::Length));
        // Reserved flag bits are ignored; the replay tag ignores the proof.
        long[1] = 0x80 | INTRO_FLAG_POW;
        assert_eq!(
            Introduce1::parse(&long).map(|x| x.replay_tag()),
            Ok(i.replay_tag())
        );
        assert_eq!(i.client_ephemeral(), [4u8; 32]);
    }
}
