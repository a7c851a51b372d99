//! Overlay addresses: `0xfd || SHA-256("globalnet address v1" || ed25519_pub)[0..15]`.
//!
//! The address is the name of a service: nobody issues it and a key cannot be chosen to hit a given
//! one (~2^120 work). A receiver always checks `address_of(key) == address` on the full key it got
//! from a signed descriptor; 120 bits are never trusted as a key.

use sha2::{Digest, Sha256};
use std::net::Ipv6Addr;

use super::labels;

/// The overlay prefix `fd00::/8`: every GlobalNet address lies inside it.
pub const OVERLAY_PREFIX: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0);
/// Length in bits of [`OVERLAY_PREFIX`].
pub const OVERLAY_PREFIX_LEN: u8 = 8;

/// The overlay address of an Ed25519 public key.
pub fn address_of(ed25519_public: &[u8; 32]) -> Ipv6Addr {
    let mut h = Sha256::new();
    h.update(labels::LABEL_ADDRESS);
    h.update(ed25519_public);
    let digest = h.finalize();
    let mut octets = [0u8; 16];
    octets[0] = 0xfd;
    for (o, d) in octets.iter_mut().skip(1).zip(digest.iter()) {
        *o = *d;
    }
    Ipv6Addr::from(octets)
}

/// Whether an address lies in the overlay prefix `fd00::/8`.
pub fn is_overlay(addr: &Ipv6Addr) -> bool {
    addr.octets()[0] == 0xfd
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn hex32(s: &str) -> [u8; 32] {
        crate::crypto::keys::unhex32(s).unwrap()
    }

    /// Vectors made by `tests/vectors/make_addresses.py` (Python `cryptography`, not this code).
    #[test]
    fn matches_independent_vectors() {
        let text = include_str!("../../tests/vectors/addresses.json");
        let doc: serde_json::Value = serde_json::from_str(text).unwrap();
        let vectors = doc["vectors"].as_array().unwrap();
        assert!(vectors.len() >= 10);
        for v in vectors {
            let seed = hex32(v["seed"].as_str().unwrap());
            let public = hex32(v["public_key"].as_str().unwrap());
            let key = SigningKey::from_bytes(&seed);
            assert_eq!(
                key.verifying_key().to_bytes(),
                public,
                "public key of seed {seed:02x?}"
            );
            let addr = address_of(&public);
            assert_eq!(addr.to_string(), v["address"].as_str().unwrap());
            let full: Ipv6Addr = v["address_full"].as_str().unwrap().parse().unwrap();
            assert_eq!(addr, full);
            assert!(is_overlay(&addr));
        }
    }

    #[test]
    fn overlay_prefix() {
        assert!(is_overlay(&"fd00::1".parse().unwrap()));
        assert!(is_overlay(&"fdff:ffff::".parse().unwrap()));
        assert!(!is_overlay(&"fc00::1".parse().unwrap()));
        assert!(!is_overlay(&"fe80::1".parse().unwrap()));
    }
}
