//! GN-E2E-IK, the end-to-end handshake (docs/protocol.md 10.2 and 10.3).
//!
//! Noise IK shape, `<- s … -> e, es, s, ss … <- e, ee, se`, with the client as initiator. The
//! client knows the service key `A` from a descriptor; the service's static DH key is `S =
//! mont(A)`. The client's static key is its pseudonym `P` (10.1), sent encrypted, and proved only
//! by Diffie–Hellman (`ss`, `se`), never by a signature, so a service holds no transferable proof of
//! who visited it. The prologue binds the service key and the intro point's auth key.
//!
//! Client: [`ClientHandshake::new`] makes message 1 (carried in INTRODUCE1, 10.6) and
//! [`ClientHandshake::finish`] reads message 2 (from RENDEZVOUS2). Service:
//! [`ServiceIdentity::read_msg1`] opens message 1 and reveals the client's pseudonym, so policy and
//! the `E_c` replay cache can decide before any work is done; [`IntroducedClient::accept`] makes
//! message 2. Both ends get the same [`SessionKeys`].
//!
//! Pure functions of their inputs and the random number generator handed in: no I/O, no clock.
//! Ephemeral secrets, `ck` and `k` are zeroized when dropped and never appear in `Debug`.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use core::fmt;
use ed25519_dalek::SigningKey;
use hkdf::Hkdf;
use rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use std::net::Ipv6Addr;
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use super::intro::{join_mac, INTRO_PLAINTEXT_LEN, REND_PLAINTEXT_LEN};
use super::pseudonym::Pseudonym;
use super::{array_at, dh, hash};
use crate::crypto::address_of;
use crate::crypto::keys::{decode_public_key, fingerprint};
use crate::crypto::labels::{LABEL_E2E_HASH, LABEL_E2E_INIT, LABEL_E2E_MIX, LABEL_E2E_SPLIT};

/// AEAD tag length inside the handshake.
const TAG_LEN: usize = 16;
/// Encrypted `P`: 32 + 16.
const ENC_P_LEN: usize = 32 + TAG_LEN;
/// Encrypted intro plaintext: 400 + 16.
const ENC_INTRO_LEN: usize = INTRO_PLAINTEXT_LEN + TAG_LEN;
/// Encrypted rendezvous plaintext: 32 + 16.
const ENC_REND_LEN: usize = REND_PLAINTEXT_LEN + TAG_LEN;
/// Message 1: `E_c ‖ enc_P ‖ enc_1` (496 bytes).
pub const E2E_MSG1_LEN: usize = 32 + ENC_P_LEN + ENC_INTRO_LEN;
/// Message 2: `E_s ‖ enc_2` (80 bytes).
pub const E2E_MSG2_LEN: usize = 32 + ENC_REND_LEN;
/// Length of each session key and of the session id.
pub const SESSION_KEY_LEN: usize = 32;

const _: () = assert!(E2E_MSG1_LEN == 496 && E2E_MSG2_LEN == 80);

/// Why an end-to-end handshake failed. A service treats every error from message 1 the same way:
/// it drops the introduction silently and counts it (section 16: no oracle).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum E2eError {
    /// Message 1 or 2 has the wrong length.
    Length,
    /// The service key `A` is not a canonical Ed25519 point of large order.
    BadServiceKey,
    /// The pseudonym `P` in message 1 is not a canonical Ed25519 point of large order.
    BadPseudonymKey,
    /// An X25519 result was all zero (a low-order peer key).
    LowOrderKey,
    /// Message 1 does not decrypt: wrong service key, wrong intro auth key, tampering, or a
    /// client that does not hold the secret of the pseudonym it claims.
    Msg1Decrypt,
    /// Message 2 does not decrypt: the peer does not hold the service key, or tampering.
    Msg2Decrypt,
    /// HKDF refused an output length (cannot happen for the fixed lengths used).
    Kdf,
}

impl fmt::Display for E2eError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            E2eError::Length => "e2e handshake message has the wrong length",
            E2eError::BadServiceKey => "service key is not a usable Ed25519 point",
            E2eError::BadPseudonymKey => "pseudonym key is not a usable Ed25519 point",
            E2eError::LowOrderKey => "all-zero X25519 result",
            E2eError::Msg1Decrypt => "e2e message 1 does not decrypt",
            E2eError::Msg2Decrypt => "e2e message 2 does not decrypt",
            E2eError::Kdf => "key derivation failed",
        })
    }
}

impl std::error::Error for E2eError {}

/// Decodes an Ed25519 public key received from the network (3.1): a point, canonical, of large
/// order and torsion-free. Returns its Montgomery form. Torsion matters most here: X25519
/// clears the cofactor, so without the check the holder of `p` would prove `P + T` for every
/// small-order `T`, each a different pseudonym address.
fn montgomery_of(key: &[u8; 32]) -> Option<[u8; 32]> {
    Some(decode_public_key(key)?.to_montgomery().to_bytes())
}

/// The session keys both ends derive (10.3): `k_c2s`, `k_s2c`, `k_join` and `session_id = h`.
pub struct SessionKeys {
    c2s: Zeroizing<[u8; SESSION_KEY_LEN]>,
    s2c: Zeroizing<[u8; SESSION_KEY_LEN]>,
    join: Zeroizing<[u8; SESSION_KEY_LEN]>,
    session_id: [u8; 32],
}

impl SessionKeys {
    /// Key for frames from client to service.
    pub fn c2s(&self) -> &[u8; SESSION_KEY_LEN] {
        &self.c2s
    }
    /// Key for frames from service to client.
    pub fn s2c(&self) -> &[u8; SESSION_KEY_LEN] {
        &self.s2c
    }
    /// Key of the JOIN proof (10.7).
    pub fn join_key(&self) -> &[u8; SESSION_KEY_LEN] {
        &self.join
    }
    /// The session id: the final handshake hash `h`.
    pub fn session_id(&self) -> &[u8; 32] {
        &self.session_id
    }
    /// `MAC(k_join, LABEL_E2E_JOIN, cookie)`, sent by the service in RENDEZVOUS1 with `hs_type` 2.
    pub fn join_mac(&self, cookie: &[u8; 32]) -> [u8; 32] {
        join_mac(&self.join, cookie)
    }
    /// Checks a JOIN proof in constant time (the client, on RENDEZVOUS2 with `hs_type` 2).
    pub fn verify_join_mac(&self, cookie: &[u8; 32], mac: &[u8; 32]) -> bool {
        bool::from(self.join_mac(cookie).ct_eq(mac))
    }
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys")
            .field("session_id", &fingerprint(&self.session_id))
            .finish_non_exhaustive()
    }
}

/// The Noise symmetric state: handshake hash `h`, chaining key `ck`, cipher key `k`.
struct Symmetric {
    h: [u8; 32],
    ck: Zeroizing<[u8; 32]>,
    k: Zeroizing<[u8; 32]>,
}

impl Symmetric {
    fn new() -> Self {
        let h: [u8; 32] = Sha256::digest(LABEL_E2E_INIT).into();
        Symmetric {
            h,
            ck: Zeroizing::new(h),
            k: Zeroizing::new([0u8; 32]),
        }
    }

    /// `h = H(LABEL_E2E_HASH, h ‖ x)`.
    fn mix_hash(&mut self, x: &[u8]) {
        self.h = hash(LABEL_E2E_HASH, &[&self.h, x]);
    }

    /// `(ck, k) = HKDF-Expand(HKDF-Extract(salt = ck, ikm), LABEL_E2E_MIX, 64)`.
    fn mix_key(&mut self, ikm: &[u8; 32]) -> Result<(), E2eError> {
        let mut out = Zeroizing::new([0u8; 64]);
        Hkdf::<Sha256>::new(Some(self.ck.as_ref()), ikm)
            .expand(LABEL_E2E_MIX, out.as_mut())
            .map_err(|_| E2eError::Kdf)?;
        let (ck, k) = out.split_at(32);
        self.ck.copy_from_slice(ck);
        self.k.copy_from_slice(k);
        Ok(())
    }

    /// Seals `buf[..len - 16]` in place with `k`, nonce 0, ad `h`, writes the tag into the last 16
    /// bytes, then mixes the ciphertext into `h`.
    fn encrypt_and_hash(&mut self, buf: &mut [u8]) -> Result<(), E2eError> {
        let split = buf.len().checked_sub(TAG_LEN).ok_or(E2eError::Length)?;
        let (pt, tag_out) = buf.split_at_mut(split);
        let tag = ChaCha20Poly1305::new(self.k.as_ref().into())
            .encrypt_in_place_detached(&Nonce::default(), &self.h, pt)
            .map_err(|_| E2eError::Length)?;
        tag_out.copy_from_slice(&tag);
        self.mix_hash(buf);
        Ok(())
    }

    /// Opens `ct` (ciphertext ‖ tag) into `out` (`ct.len() - 16` bytes), then mixes `ct` into `h`.
    /// On failure `out` is zeroed and `err` returned.
    fn decrypt_and_hash(
        &mut self,
        ct: &[u8],
        out: &mut [u8],
        err: E2eError,
    ) -> Result<(), E2eError> {
        let split = ct.len().checked_sub(TAG_LEN).ok_or(E2eError::Length)?;
        let (body, tag) = ct.split_at(split);
        if out.len() != body.len() {
            return Err(E2eError::Length);
        }
        out.copy_from_slice(body);
        if ChaCha20Poly1305::new(self.k.as_ref().into())
            .decrypt_in_place_detached(&Nonce::default(), &self.h, out, Tag::from_slice(tag))
            .is_err()
        {
            out.zeroize();
            return Err(err);
        }
        self.mix_hash(ct);
        Ok(())
    }

    /// `(k_c2s ‖ k_s2c ‖ k_join) = HKDF-Expand(HKDF-Extract(ck, empty), LABEL_E2E_SPLIT, 96)`.
    fn split(&self) -> Result<SessionKeys, E2eError> {
        let mut out = Zeroizing::new([0u8; 3 * SESSION_KEY_LEN]);
        Hkdf::<Sha256>::new(Some(self.ck.as_ref()), &[])
            .expand(LABEL_E2E_SPLIT, out.as_mut())
            .map_err(|_| E2eError::Kdf)?;
        let key = |i: usize| {
            let mut k = Zeroizing::new([0u8; SESSION_KEY_LEN]);
            if let Some(src) = out.get(i * SESSION_KEY_LEN..(i + 1) * SESSION_KEY_LEN) {
                k.copy_from_slice(src);
            }
            k
        };
        Ok(SessionKeys {
            c2s: key(0),
            s2c: key(1),
            join: key(2),
            session_id: self.h,
        })
    }
}

/// The service's side of its key (10.2): the service key `A` used as a static DH key, secret
/// `SHA-512(a_seed)[0..32]`, public `S = mont(A)`.
pub struct ServiceIdentity {
    dh: StaticSecret,
    public: [u8; 32],
    montgomery: [u8; 32],
}

impl ServiceIdentity {
    /// From the service key's Ed25519 seed `a_seed`.
    pub fn from_seed(a_seed: &[u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(a_seed);
        let verifying = signing.verifying_key();
        let scalar = Zeroizing::new(signing.to_scalar_bytes());
        ServiceIdentity {
            dh: StaticSecret::from(*scalar),
            public: verifying.to_bytes(),
            montgomery: verifying.to_montgomery().to_bytes(),
        }
    }

    /// `A`, the service key.
    pub fn public(&self) -> &[u8; 32] {
        &self.public
    }

    /// `S = mont(A)`.
    pub fn montgomery(&self) -> &[u8; 32] {
        &self.montgomery
    }

    /// `addr(A)`, the service's address.
    pub fn address(&self) -> Ipv6Addr {
        address_of(&self.public)
    }

    /// Processes message 1 of an introduction that arrived through the intro point with auth key
    /// `intro_auth_key`. On success the client's pseudonym is known and proved (`ss`); the caller
    /// then checks its `E_c` replay cache and its policy before [`IntroducedClient::accept`].
    pub fn read_msg1(
        &self,
        intro_auth_key: &[u8; 32],
        msg1: &[u8],
    ) -> Result<IntroducedClient, E2eError> {
        if msg1.len() != E2E_MSG1_LEN {
            return Err(E2eError::Length);
        }
        let e_c: [u8; 32] = array_at(msg1, 0).ok_or(E2eError::Length)?;
        let enc_p = msg1.get(32..32 + ENC_P_LEN).ok_or(E2eError::Length)?;
        let enc_1 = msg1.get(32 + ENC_P_LEN..).ok_or(E2eError::Length)?;

        let mut sym = Symmetric::new();
        sym.mix_hash(&self.public);
        sym.mix_hash(intro_auth_key);
        sym.mix_hash(&e_c);
        sym.mix_key(&*dh(&self.dh, &e_c).ok_or(E2eError::LowOrderKey)?)?;
        let mut p = [0u8; 32];
        sym.decrypt_and_hash(enc_p, &mut p, E2eError::Msg1Decrypt)?;
        let p_mont = montgomery_of(&p).ok_or(E2eError::BadPseudonymKey)?;
        sym.mix_key(&*dh(&self.dh, &p_mont).ok_or(E2eError::LowOrderKey)?)?;
        let mut intro = Zeroizing::new([0u8; INTRO_PLAINTEXT_LEN]);
        sym.decrypt_and_hash(enc_1, intro.as_mut(), E2eError::Msg1Decrypt)?;
        Ok(IntroducedClient {
            sym,
            client_ephemeral: e_c,
            pseudonym: p,
            pseudonym_montgomery: p_mont,
            intro_plaintext: intro,
        })
    }
}

impl fmt::Debug for ServiceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceIdentity")
            .field("public", &fingerprint(&self.public))
            .finish_non_exhaustive()
    }
}

/// A client whose message 1 the service has opened: its pseudonym is proved, the handshake waits
/// for the service's decision.
pub struct IntroducedClient {
    sym: Symmetric,
    client_ephemeral: [u8; 32],
    pseudonym: [u8; 32],
    pseudonym_montgomery: [u8; 32],
    intro_plaintext: Zeroizing<[u8; INTRO_PLAINTEXT_LEN]>,
}

impl IntroducedClient {
    /// `P`, the client's pseudonym key (or its real key).
    pub fn pseudonym(&self) -> &[u8; 32] {
        &self.pseudonym
    }

    /// `addr(P)`: the address the service will see as the source of the session's packets.
    pub fn address(&self) -> Ipv6Addr {
        address_of(&self.pseudonym)
    }

    /// `E_c`, for the service's replay cache per intro auth key (10.6).
    pub fn client_ephemeral(&self) -> &[u8; 32] {
        &self.client_ephemeral
    }

    /// The intro plaintext (`INTRO_PLAINTEXT_LEN` bytes; parse with
    /// [`super::intro::IntroPlaintext::parse`]).
    pub fn intro_plaintext(&self) -> &[u8; INTRO_PLAINTEXT_LEN] {
        &self.intro_plaintext
    }

    /// Accepts the introduction: makes message 2 around `rend_plaintext` with a fresh ephemeral
    /// and derives the session keys.
    pub fn accept<R: RngCore + CryptoRng>(
        self,
        rng: &mut R,
        rend_plaintext: &[u8; REND_PLAINTEXT_LEN],
    ) -> Result<(SessionKeys, [u8; E2E_MSG2_LEN]), E2eError> {
        self.accept_with_ephemeral(StaticSecret::random_from_rng(rng), rend_plaintext)
    }

    /// [`accept`](Self::accept) with a given ephemeral secret `e_s`. Only for known-answer tests:
    /// reusing an ephemeral breaks the handshake's security.
    pub fn accept_with_ephemeral(
        mut self,
        e_s: StaticSecret,
        rend_plaintext: &[u8; REND_PLAINTEXT_LEN],
    ) -> Result<(SessionKeys, [u8; E2E_MSG2_LEN]), E2eError> {
        let e_s_pub = PublicKey::from(&e_s).to_bytes();
        let mut msg2 = [0u8; E2E_MSG2_LEN];
        let (head, enc_2) = msg2.split_at_mut(32);
        head.copy_from_slice(&e_s_pub);
        self.sym.mix_hash(&e_s_pub);
        self.sym
            .mix_key(&*dh(&e_s, &self.client_ephemeral).ok_or(E2eError::LowOrderKey)?)?;
        self.sym
            .mix_key(&*dh(&e_s, &self.pseudonym_montgomery).ok_or(E2eError::LowOrderKey)?)?;
        let pt = enc_2
            .get_mut(..REND_PLAINTEXT_LEN)
            .ok_or(E2eError::Length)?;
        pt.copy_from_slice(rend_plaintext);
        self.sym.encrypt_and_hash(enc_2)?;
        Ok((self.sym.split()?, msg2))
    }
}

impl fmt::Debug for IntroducedClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntroducedClient")
            .field("pseudonym", &fingerprint(&self.pseudonym))
            .finish_non_exhaustive()
    }
}

/// The client's side of GN-E2E-IK between message 1 and message 2.
pub struct ClientHandshake {
    sym: Symmetric,
    e_c: StaticSecret,
    p_dh: StaticSecret,
    service_key: [u8; 32],
}

impl ClientHandshake {
    /// Starts a handshake with the service whose key `A` is `service_key` (from a descriptor whose
    /// `addr(A)` the caller has checked), through the intro point with `intro_auth_key`, as
    /// `pseudonym`, carrying `intro_plaintext`. Returns the state and message 1.
    pub fn new<R: RngCore + CryptoRng>(
        rng: &mut R,
        service_key: &[u8; 32],
        intro_auth_key: &[u8; 32],
        pseudonym: &Pseudonym,
        intro_plaintext: &[u8; INTRO_PLAINTEXT_LEN],
    ) -> Result<(Self, [u8; E2E_MSG1_LEN]), E2eError> {
        Self::with_ephemeral(
            StaticSecret::random_from_rng(rng),
            service_key,
            intro_auth_key,
            pseudonym,
            intro_plaintext,
        )
    }

    /// [`new`](Self::new) with a given ephemeral secret `e_c`. Only for known-answer tests:
    /// reusing an ephemeral breaks the handshake's security.
    pub fn with_ephemeral(
        e_c: StaticSecret,
        service_key: &[u8; 32],
        intro_auth_key: &[u8; 32],
        pseudonym: &Pseudonym,
        intro_plaintext: &[u8; INTRO_PLAINTEXT_LEN],
    ) -> Result<(Self, [u8; E2E_MSG1_LEN]), E2eError> {
        Self::build(
            e_c,
            service_key,
            intro_auth_key,
            pseudonym.public(),
            pseudonym.dh_secret(),
            intro_plaintext,
        )
    }

    /// Message 1 claiming the key `claimed_p` while holding only `actual`'s secret: what a
    /// malicious client sends to pass as someone else. Test hook only (the in-process network
    /// plays such a client); an honest node never calls it.
    #[doc(hidden)]
    pub fn forged<R: RngCore + CryptoRng>(
        rng: &mut R,
        service_key: &[u8; 32],
        intro_auth_key: &[u8; 32],
        claimed_p: &[u8; 32],
        actual: &Pseudonym,
        intro_plaintext: &[u8; INTRO_PLAINTEXT_LEN],
    ) -> Result<(Self, [u8; E2E_MSG1_LEN]), E2eError> {
        Self::build(
            StaticSecret::random_from_rng(rng),
            service_key,
            intro_auth_key,
            claimed_p,
            actual.dh_secret(),
            intro_plaintext,
        )
    }

    /// Message 1 with a claimed `P` and the DH secret actually held; they differ only in tests of
    /// a malicious client.
    fn build(
        e_c: StaticSecret,
        service_key: &[u8; 32],
        intro_auth_key: &[u8; 32],
        claimed_p: &[u8; 32],
        p_dh: StaticSecret,
        intro_plaintext: &[u8; INTRO_PLAINTEXT_LEN],
    ) -> Result<(Self, [u8; E2E_MSG1_LEN]), E2eError> {
        let s = montgomery_of(service_key).ok_or(E2eError::BadServiceKey)?;
        let e_c_pub = PublicKey::from(&e_c).to_bytes();
        let mut msg1 = [0u8; E2E_MSG1_LEN];
        let (head, rest) = msg1.split_at_mut(32);
        let (enc_p, enc_1) = rest.split_at_mut(ENC_P_LEN);
        head.copy_from_slice(&e_c_pub);

        let mut sym = Symmetric::new();
        sym.mix_hash(service_key);
        sym.mix_hash(intro_auth_key);
        sym.mix_hash(&e_c_pub);
        sym.mix_key(&*dh(&e_c, &s).ok_or(E2eError::LowOrderKey)?)?;
        enc_p
            .get_mut(..32)
            .ok_or(E2eError::Length)?
            .copy_from_slice(claimed_p);
        sym.encrypt_and_hash(enc_p)?;
        sym.mix_key(&*dh(&p_dh, &s).ok_or(E2eError::LowOrderKey)?)?;
        enc_1
            .get_mut(..INTRO_PLAINTEXT_LEN)
            .ok_or(E2eError::Length)?
            .copy_from_slice(intro_plaintext);
        sym.encrypt_and_hash(enc_1)?;
        let state = ClientHandshake {
            sym,
            e_c,
            p_dh,
            service_key: *service_key,
        };
        Ok((state, msg1))
    }

    /// The handshake hash after message 1 (for tests and logs of the transcript; not secret).
    pub fn handshake_hash(&self) -> &[u8; 32] {
        &self.sym.h
    }

    /// Reads message 2: proves the peer holds the service key and derives the session keys.
    /// Returns them with the rendezvous plaintext.
    pub fn finish(
        mut self,
        msg2: &[u8],
    ) -> Result<(SessionKeys, [u8; REND_PLAINTEXT_LEN]), E2eError> {
        if msg2.len() != E2E_MSG2_LEN {
            return Err(E2eError::Length);
        }
        let e_s: [u8; 32] = array_at(msg2, 0).ok_or(E2eError::Length)?;
        let enc_2 = msg2.get(32..).ok_or(E2eError::Length)?;
        self.sym.mix_hash(&e_s);
        self.sym
            .mix_key(&*dh(&self.e_c, &e_s).ok_or(E2eError::LowOrderKey)?)?;
        self.sym
            .mix_key(&*dh(&self.p_dh, &e_s).ok_or(E2eError::LowOrderKey)?)?;
        let mut pt = [0u8; REND_PLAINTEXT_LEN];
        self.sym
            .decrypt_and_hash(enc_2, &mut pt, E2eError::Msg2Decrypt)?;
        Ok((self.sym.split()?, pt))
    }
}

impl fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHandshake")
            .field("service", &fingerprint(&self.service_key))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    fn setup() -> (ServiceIdentity, Pseudonym, [u8; 32]) {
        let service = ServiceIdentity::from_seed(&[1u8; 32]);
        let p = Pseudonym::derive(&[2u8; 32], &service.address());
        (service, p, [3u8; 32])
    }

    #[test]
    fn round_trip() {
        let (service, p, auth) = setup();
        let intro = [9u8; INTRO_PLAINTEXT_LEN];
        let (client, msg1) =
            ClientHandshake::new(&mut OsRng, service.public(), &auth, &p, &intro).unwrap();
        let introduced = service.read_msg1(&auth, &msg1).unwrap();
        assert_eq!(introduced.pseudonym(), p.public());
        assert_eq!(introduced.address(), p.address());
        assert_eq!(introduced.intro_plaintext(), &intro);
        let rend = [5u8; REND_PLAINTEXT_LEN];
        let (skeys, msg2) = introduced.accept(&mut OsRng, &rend).unwrap();
        let (ckeys, rend_got) = client.finish(&msg2).unwrap();
        assert_eq!(rend_got, rend);
        assert_eq!(skeys.c2s(), ckeys.c2s());
        assert_eq!(skeys.s2c(), ckeys.s2c());
        assert_eq!(skeys.join_key(), ckeys.join_key());
        assert_eq!(skeys.session_id(), ckeys.session_id());
    }

    /// A client that claims a pseudonym (or address) whose secret it does not hold fails at the
    /// service: `ss` differs, so the payload does not decrypt.
    #[test]
    fn claiming_another_pseudonym_fails() {
        let (service, own, auth) = setup();
        let victim = Pseudonym::derive(&[4u8; 32], &service.address());
        let (_, msg1) = ClientHandshake::build(
            StaticSecret::random_from_rng(OsRng),
            service.public(),
            &auth,
            victim.public(),
            own.dh_secret(),
            &[0u8; INTRO_PLAINTEXT_LEN],
        )
        .unwrap();
        assert_eq!(
            service.read_msg1(&auth, &msg1).unwrap_err(),
            E2eError::Msg1Decrypt
        );
        // Claiming the real identity of another node the same way fails too.
        let real = Pseudonym::real_identity(&[4u8; 32]);
        let (_, msg1) = ClientHandshake::build(
            StaticSecret::random_from_rng(OsRng),
            service.public(),
            &auth,
            real.public(),
            own.dh_secret(),
            &[0u8; INTRO_PLAINTEXT_LEN],
        )
        .unwrap();
        assert!(service.read_msg1(&auth, &msg1).is_err());
    }

    #[test]
    fn small_order_pseudonym_refused() {
        let (service, own, auth) = setup();
        // The identity point (y = 1) is of small order.
        let mut ident = [0u8; 32];
        ident[0] = 1;
        let (_, msg1) = ClientHandshake::build(
            StaticSecret::random_from_rng(OsRng),
            service.public(),
            &auth,
            &ident,
            own.dh_secret(),
            &[0u8; INTRO_PLAINTEXT_LEN],
        )
        .unwrap();
        assert_eq!(
            service.read_msg1(&auth, &msg1).unwrap_err(),
            E2eError::BadPseudonymKey
        );
    }

    /// Encodings of `y + p` for small `y` decode to valid points but are not canonical; the ones
    /// of large order must still be refused (3.1).
    #[test]
    fn non_canonical_keys_refused() {
        let mut refused_large_order = 0;
        for y in 0u8..19 {
            // p + y = 2^255 - 19 + y, little-endian.
            let mut b = [0xffu8; 32];
            b[31] = 0x7f;
            b[0] = 0xed + y;
            let Ok(vk) = ed25519_dalek::VerifyingKey::from_bytes(&b) else {
                continue;
            };
            assert!(montgomery_of(&b).is_none(), "y = {y}");
            if !vk.is_weak() {
                refused_large_order += 1;
            }
        }
        assert!(refused_large_order > 0);
        assert!(
            montgomery_of(Pseudonym::derive(&[1u8; 32], &Ipv6Addr::LOCALHOST).public()).is_some()
        );
    }

    /// A client holding `p` claims `P + T` for each small-order `T`. The Diffie–Hellman proof
    /// would pass (X25519 clears the cofactor: `s·(P + T) = s·P` for the clamped `s`), so only the
    /// torsion check stops one key from appearing as eight addresses.
    #[test]
    fn torsion_variants_of_a_pseudonym_are_refused() {
        use curve25519_dalek::edwards::CompressedEdwardsY;
        let (service, own, auth) = setup();
        let p = CompressedEdwardsY(*own.public()).decompress().unwrap();
        let s_mont = PublicKey::from(*service.montgomery());
        let honest = own.dh_secret().diffie_hellman(&s_mont).to_bytes();
        for (k, t) in crate::crypto::keys::eight_torsion()
            .iter()
            .enumerate()
            .skip(1)
        {
            let claimed = (p + t).compress().to_bytes();
            assert_ne!(address_of(&claimed), own.address());
            // What the service would compute for `ss` without the check: the honest value.
            let claimed_mont = (p + t).to_montgomery().to_bytes();
            assert_eq!(*dh(&service.dh, &claimed_mont).unwrap(), honest, "k = {k}");
            let (_, msg1) = ClientHandshake::build(
                StaticSecret::random_from_rng(OsRng),
                service.public(),
                &auth,
                &claimed,
                own.dh_secret(),
                &[0u8; INTRO_PLAINTEXT_LEN],
            )
            .unwrap();
            assert_eq!(
                service.read_msg1(&auth, &msg1).unwrap_err(),
                E2eError::BadPseudonymKey,
                "k = {k}"
            );
        }
        // A descriptor's service key with torsion is refused on the client's side too.
        let a = CompressedEdwardsY(*service.public()).decompress().unwrap();
        let t = crate::crypto::keys::eight_torsion()[1];
        let bad_a = (a + t).compress().to_bytes();
        assert_eq!(
            ClientHandshake::new(&mut OsRng, &bad_a, &auth, &own, &[0; INTRO_PLAINTEXT_LEN])
                .unwrap_err(),
            E2eError::BadServiceKey
        );
    }

    /// `-P` has the same Montgomery form as `P`, so the holder of `p` proves it too. It is
    /// accepted as a key of its own (its secret is `-p`; nobody else can claim it, and a client
    /// can make new keys anyway); what matters is that the exact encoding the client sent is the
    /// one the service sees and the one the transcript binds: `enc_P` is hashed into `h`, so the
    /// sessions of `P` and `-P` have different keys, and no one in between can flip the sign.
    #[test]
    fn negated_pseudonym_is_its_own_key_and_its_encoding_is_bound() {
        use curve25519_dalek::edwards::CompressedEdwardsY;
        let (service, own, auth) = setup();
        let p = CompressedEdwardsY(*own.public()).decompress().unwrap();
        let neg = (-p).compress().to_bytes();
        assert_eq!((-p).to_montgomery(), p.to_montgomery());
        let eph = [7u8; 32];
        let run = |claimed: &[u8; 32]| {
            let (client, msg1) = ClientHandshake::build(
                StaticSecret::from(eph),
                service.public(),
                &auth,
                claimed,
                own.dh_secret(),
                &[0u8; INTRO_PLAINTEXT_LEN],
            )
            .unwrap();
            let introduced = service.read_msg1(&auth, &msg1).unwrap();
            assert_eq!(introduced.pseudonym(), claimed);
            let (skeys, msg2) = introduced
                .accept_with_ephemeral(StaticSecret::from([8u8; 32]), &[0; REND_PLAINTEXT_LEN])
                .unwrap();
            let (ckeys, _) = client.finish(&msg2).unwrap();
            assert_eq!(skeys.c2s(), ckeys.c2s());
            (address_of(claimed), *ckeys.session_id(), msg1)
        };
        let (addr_p, id_p, msg1) = run(own.public());
        let (addr_neg, id_neg, _) = run(&neg);
        assert_ne!(addr_p, addr_neg);
        assert_ne!(id_p, id_neg, "the encoding of P is part of the transcript");
        // Flipping the sign bit inside enc_P in transit breaks the AEAD.
        let mut tampered = msg1;
        tampered[32 + 31] ^= 0x80;
        assert_eq!(
            service.read_msg1(&auth, &tampered).unwrap_err(),
            E2eError::Msg1Decrypt
        );
    }

    #[test]
    fn debug_shows_no_secrets() {
        let (service, p, auth) = setup();
        let (client, msg1) = ClientHandshake::new(
            &mut OsRng,
            service.public(),
            &auth,
            &p,
            &[0u8; INTRO_PLAINTEXT_LEN],
        )
        .unwrap();
        let introduced = service.read_msg1(&auth, &msg1).unwrap();
        let (keys, _) = introduced
            .accept(&mut OsRng, &[0u8; REND_PLAINTEXT_LEN])
            .unwrap();
        let text = format!("{client:?} {service:?} {keys:?}");
        for secret in [keys.c2s(), keys.s2c(), keys.join_key()] {
            assert!(!text.contains(&crate::crypto::keys::hex(&secret[..4])));
        }
        assert!(!text.contains(&crate::crypto::keys::hex(&client.sym.ck[..4])));
    }
}
