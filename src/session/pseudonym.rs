//! Client pseudonyms (docs/protocol.md 10.1).
//!
//! A client shows each destination a different, stable key: `p_seed = KDF(LABEL_PSEUDONYM,
//! c_seed ‖ D, 32)`, `P` its Ed25519 public key, `addr(P)` the address the service sees. The same
//! client secret and destination always give the same pseudonym (stable across restarts); two
//! destinations get unlinkable ones. With real-identity access the client uses `c_seed` itself.
//!
//! The pseudonym key is used only for Diffie–Hellman (`p_dh = SHA-512(p_seed)[0..32]`,
//! `X25519(p_dh, 9) = mont(P)`, 3.5), never for a signature. Nothing here prints the seed: `Debug`
//! shows a fingerprint of `P`.

use core::fmt;
use ed25519_dalek::SigningKey;
use std::net::Ipv6Addr;
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::crypto::address_of;
use crate::crypto::keys::fingerprint;
use crate::crypto::labels::LABEL_PSEUDONYM;

/// The key a client presents to one destination: a derived pseudonym or its real service key.
pub struct Pseudonym {
    seed: Zeroizing<[u8; 32]>,
    public: [u8; 32],
    montgomery: [u8; 32],
    address: Ipv6Addr,
    real_identity: bool,
}

impl Pseudonym {
    /// The pseudonym of the client with service key seed `client_seed` for destination address
    /// `destination` (10.1). Deterministic.
    pub fn derive(client_seed: &[u8; 32], destination: &Ipv6Addr) -> Self {
        let mut ikm = Zeroizing::new([0u8; 48]);
        let (seed_part, dest_part) = ikm.split_at_mut(32);
        seed_part.copy_from_slice(client_seed);
        dest_part.copy_from_slice(&destination.octets());
        let mut seed = Zeroizing::new([0u8; 32]);
        // HKDF-SHA256 always accepts 32 output bytes.
        let ok = super::kdf(LABEL_PSEUDONYM, ikm.as_ref(), seed.as_mut());
        debug_assert!(ok);
        Self::from_seed(seed, false)
    }

    /// The client's real identity, for destinations the configuration names for real-identity
    /// access: `c_seed` is used in place of `p_seed`, so the service sees the client's own address.
    pub fn real_identity(client_seed: &[u8; 32]) -> Self {
        Self::from_seed(Zeroizing::new(*client_seed), true)
    }

    /// The key to present to `destination`: the real identity if `present_real_identity`, else
    /// the derived pseudonym.
    pub fn for_destination(
        client_seed: &[u8; 32],
        destination: &Ipv6Addr,
        present_real_identity: bool,
    ) -> Self {
        if present_real_identity {
            Self::real_identity(client_seed)
        } else {
            Self::derive(client_seed, destination)
        }
    }

    fn from_seed(seed: Zeroizing<[u8; 32]>, real_identity: bool) -> Self {
        let signing = SigningKey::from_bytes(&seed);
        let verifying = signing.verifying_key();
        let public = verifying.to_bytes();
        Pseudonym {
            montgomery: verifying.to_montgomery().to_bytes(),
            address: address_of(&public),
            public,
            seed,
            real_identity,
        }
    }

    /// `P`, the Ed25519 public key (sent, encrypted, in GN-E2E-IK message 1).
    pub fn public(&self) -> &[u8; 32] {
        &self.public
    }

    /// `mont(P)`, the X25519 form of `P` (3.5).
    pub fn montgomery(&self) -> &[u8; 32] {
        &self.montgomery
    }

    /// `addr(P)`: the source address the destination sees.
    pub fn address(&self) -> Ipv6Addr {
        self.address
    }

    /// Whether this is the client's real identity rather than a derived pseudonym.
    pub fn is_real_identity(&self) -> bool {
        self.real_identity
    }

    /// `p_dh = SHA-512(p_seed)[0..32]` as an X25519 secret (clamped by X25519 itself).
    pub(crate) fn dh_secret(&self) -> StaticSecret {
        let scalar = Zeroizing::new(SigningKey::from_bytes(&self.seed).to_scalar_bytes());
        StaticSecret::from(*scalar)
    }
}

impl fmt::Debug for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pseudonym")
            .field("public", &fingerprint(&self.public))
            .field("real_identity", &self.real_identity)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x25519_dalek::PublicKey;

    #[test]
    fn dh_secret_matches_montgomery_form() {
        let p = Pseudonym::derive(&[7u8; 32], &"fd00::1".parse().unwrap());
        assert_eq!(PublicKey::from(&p.dh_secret()).as_bytes(), p.montgomery());
        let r = Pseudonym::real_identity(&[7u8; 32]);
        assert_eq!(PublicKey::from(&r.dh_secret()).as_bytes(), r.montgomery());
        assert!(r.is_real_identity() && !p.is_real_identity());
    }

    #[test]
    fn debug_hides_the_seed() {
        let p = Pseudonym::derive(&[7u8; 32], &"fd00::1".parse().unwrap());
        let dbg = format!("{p:?}");
        assert!(!dbg.contains(&crate::crypto::keys::hex(&p.seed[..])));
        assert!(!dbg.contains(&crate::crypto::keys::hex(&p.seed[..4])));
    }
}
