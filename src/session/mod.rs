//! Sessions: the end-to-end layer between a client pseudonym and a service (docs/protocol.md
//! section 10; DESIGN.md section 6).
//!
//! Everything here is sans-IO. The pure pieces (byte formats, key derivation, role tables) are
//! handed bytes and hand bytes back; the session layer's state machines ([`SessionLayer`]) are
//! driven by the node through a narrow [`SessionCtx`] (build, extend, send on and destroy
//! circuits; paths; reports) and ask for DHT queries as [`DhtRequest`]s. No sockets, no clock.
//!
//! | module          | what                                                                  |
//! |-----------------|-----------------------------------------------------------------------|
//! | [`pseudonym`]   | per-destination client pseudonyms (10.1)                              |
//! | [`handshake`]   | GN-E2E-IK, the end-to-end handshake (10.2, 10.3)                      |
//! | [`frame`]       | end-to-end frames, the session replay window, e2e messages (10.4, 10.5) |
//! | [`intro`]       | introduction and rendezvous bodies, cookies, the JOIN proof (10.6, 10.7) |
//! | [`intro_pow`]   | the proof-of-work extension of INTRODUCE1 and its puzzle (10.12)      |
//! | [`roles`]       | the intro-point and rendezvous-point tables of a relay (10.6)          |
//! | [`flows`]       | flow keys of inner packets (10.8)                                     |
//! | [`ctx`]         | [`SessionCtx`], what the layer needs from the node; DHT requests       |
//! | [`layer`]       | [`SessionLayer`]: state, the owner table of its circuits, status, entry points |
//! | [`limits`]      | the layer's limits and timers                                         |
//! | `dispatch`      | events of the layer's circuits, to the state machine that owns each   |
//! | `circuits`      | paths, vanguards, suspects, stems, pool circuits for sessions          |
//! | `points`        | the intro-point and rendezvous-point roles at our last hop (10.6)     |
//! | `intro_queue`   | a service's introductions by effort, its puzzle seed and suggested effort (10.12) |
//! | `intro_watch`   | a service's end-to-end check that its intro points still hold its registration (10.6.1) |
//! | `service`       | the hidden services we host: intro points, INTRODUCE2, service sessions |
//! | `publish`       | publishing their descriptors: per epoch, through circuits of their own, first ones spread |
//! | `hosting`       | taking one hosted service down while the others run; which circuits serve which service |
//! | `silence`       | dead-path detection: per-circuit silence, probes, the verdict (10.8)  |
//! | `client`        | sessions to services we visit: setup, descriptor cache, timers; `client::intro` (introductions), `client::flows` (flows, spares, JOIN, e2e frames) |
//!
//! This module never logs or prints secret material: key holders implement `Debug` as a short
//! fingerprint of public values only. Every hash, KDF and MAC input starts with a label from
//! [`crate::crypto::labels`].

mod circuits;
mod client;
pub mod ctx;
mod dispatch;
pub mod flows;
pub mod frame;
pub mod handshake;
mod hosting;
pub mod intro;
pub mod intro_pow;
mod intro_queue;
mod intro_watch;
pub mod layer;
pub mod limits;
mod points;
pub mod pseudonym;
mod publish;
pub mod roles;
mod service;
mod silence;
pub mod trace;

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
    let out = Zeroizing::new(match crate::sim::crypto::stand_in_dh(secret, public) {
        Some(s) => s,
        None => secret.diffie_hellman(&PublicKey::from(*public)).to_bytes(),
    });
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
