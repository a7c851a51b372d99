//! Sessions: the end-to-end layer between a client pseudonym and a service (docs/protocol.md
//! section 10; DESIGN.md section 6).
//!
//! Everything here is pure: byte formats, key derivation and state machines that are handed bytes
//! (and a random number generator where one is needed) and hand bytes back. No sockets, no clock,
//! no circuits: the daemon moves the bytes between circuits and these types.
//!
//! | module        | what                                                                  |
//! |---------------|-----------------------------------------------------------------------|
//! | [`pseudonym`] | per-destination client pseudonyms (10.1)                              |
//! | [`handshake`] | GN-E2E-IK, the end-to-end handshake (10.2, 10.3)                      |
//! | [`frame`]     | end-to-end frames, the session replay window, e2e messages (10.4, 10.5) |
//! | [`intro`]     | introduction and rendezvous bodies, cookies, the JOIN proof (10.6, 10.7) |
//! | [`roles`]     | the intro-point and rendezvous-point tables of a relay (10.6)          |
//! | [`flows`]     | flow keys of inner packets (10.8)                                     |
//!
//! This module never logs or prints secret material: key holders implement `Debug` as a short
//! fingerprint of public values only. Every hash, KDF and MAC input starts with a label from
//! [`crate::crypto::labels`].

pub mod ctx;
pub mod flows;
pub mod frame;
pub mod handshake;
pub mod intro;
/// The session layer's state machines (see the table above).
pub mod layer;
pub mod pseudonym;
pub mod roles;

pub use ctx::{DhtAnswer, DhtRequest, SessionCtx};
pub use frame::{Direction, E2eMessage, FrameError, ReplayWindow, SessionChannel};
pub use handshake::{
    ClientHandshake, E2eError, IntroducedClient, ServiceIdentity, SessionKeys, E2E_MSG1_LEN,
    E2E_MSG2_LEN,
};
pub use intro::{
    EstablishIntro, IntroError, IntroPlaintext, Introduce1, RendCookie, RendHs, RendPlaintext,
    Rendezvous1, Rendezvous2,
};
pub use layer::SessionLayer;
pub use pseudonym::Pseudonym;

use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

/// `KDF(label, ikm, n)` = HKDF-Expand(HKDF-Extract(salt = label, ikm), info = label, n) (3.2).
/// Returns `false` only if HKDF refuses the length (never for the lengths used here).
#[must_use]
fn kdf(label: &[u8], ikm: &[u8], out: &mut [u8]) -> bool {
    Hkdf::<Sha256>::new(Some(label), ikm)
        .expand(label, out)
        .is_ok()
}

/// `H(label, parts…)` = SHA-256(label ‖ parts…) (3.2).
fn hash(label: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(label);
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// X25519 with the all-zero check (3.1), constant time. `None` for a low-order peer key.
fn dh(secret: &StaticSecret, public: &[u8; 32]) -> Option<Zeroizing<[u8; 32]>> {
    let out = Zeroizing::new(secret.diffie_hellman(&PublicKey::from(*public)).to_bytes());
    if bool::from(out.ct_eq(&[0u8; 32])) {
        None
    } else {
        Some(out)
    }
}

/// Reads `N` bytes at `offset` of `bytes`, or `None` if they are not there.
fn array_at<const N: usize>(bytes: &[u8], offset: usize) -> Option<[u8; N]> {
    bytes
        .get(offset..offset.checked_add(N)?)
        .and_then(|s| <[u8; N]>::try_from(s).ok())
}
