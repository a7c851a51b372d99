//! Proof of work: a hashcash over SHA-256 (docs/decisions.md, "Names"). Prices name claims
//! (docs/protocol.md 18.3) and introductions under load (10.12).
//!
//! `pow_hash = SHA-256(label ‖ context ‖ nonce_be64)`; a lower hash is more work. Name claims
//! count leading zero bits (each bit doubles the work); introductions need a finer scale, so
//! they read the hash's first 8 bytes as a big-endian `h64` and accept an `effort` E when
//! `h64 · E < 2^64`: one hash in E passes, so E is the expected number of hashes. The puzzle is memory-light and
//! needs no executable memory (the packaged unit has `MemoryDenyWriteExecute=yes`), unlike Equi-X,
//! at the price of favouring hardware that hashes fast.

use sha2::{Digest, Sha256};

/// The hash a nonce gives for `context` under `label`.
pub fn pow_hash(label: &[u8], context: &[u8], nonce: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(label);
    h.update(context);
    h.update(nonce.to_be_bytes());
    h.finalize().into()
}

/// Leading zero bits of a hash: the work it shows (each bit doubles the expected effort).
pub fn leading_zero_bits(hash: &[u8; 32]) -> u32 {
    let mut bits = 0;
    for b in hash {
        if *b == 0 {
            bits += 8;
        } else {
            return bits + b.leading_zeros();
        }
    }
    bits
}

/// Searches nonces from `start` for one whose hash has at least `bits` leading zero bits; gives up
/// after `max_tries`. Returns the nonce and its hash.
pub fn solve(
    label: &[u8],
    context: &[u8],
    bits: u32,
    start: u64,
    max_tries: u64,
) -> Option<(u64, [u8; 32])> {
    (0..max_tries).find_map(|i| {
        let nonce = start.wrapping_add(i);
        let h = pow_hash(label, context, nonce);
        (leading_zero_bits(&h) >= bits).then_some((nonce, h))
    })
}

/// Whether `hash` shows `effort` (expected hashes): `h64 · effort < 2^64`. Effort 0 and 1 accept
/// every hash.
pub fn meets_effort(hash: &[u8; 32], effort: u32) -> bool {
    let mut h64 = [0u8; 8];
    h64.copy_from_slice(&hash[..8]);
    u64::from_be_bytes(h64)
        .checked_mul(u64::from(effort))
        .is_some()
}

/// Searches nonces from `start` for one whose hash shows `effort`; gives up after `max_tries`.
/// The prefix `label ‖ context` is hashed once and its state cloned per nonce.
pub fn solve_effort(
    label: &[u8],
    context: &[u8],
    effort: u32,
    start: u64,
    max_tries: u64,
) -> Option<u64> {
    let mut prefix = Sha256::new();
    prefix.update(label);
    prefix.update(context);
    (0..max_tries).find_map(|i| {
        let nonce = start.wrapping_add(i);
        let mut h = prefix.clone();
        h.update(nonce.to_be_bytes());
        let h: [u8; 32] = h.finalize().into();
        meets_effort(&h, effort).then_some(nonce)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_leading_zero_bits() {
        let mut h = [0xffu8; 32];
        assert_eq!(leading_zero_bits(&h), 0);
        h[0] = 0;
        h[1] = 0x1f;
        assert_eq!(leading_zero_bits(&h), 11);
        assert_eq!(leading_zero_bits(&[0; 32]), 256);
    }

    #[test]
    fn solves_and_verifies() {
        let (nonce, h) = solve(b"test pow", b"ctx", 12, 0, 1 << 20).unwrap();
        assert_eq!(pow_hash(b"test pow", b"ctx", nonce), h);
        assert!(leading_zero_bits(&h) >= 12);
        // The context is bound: the same nonce shows nothing for another one (almost surely).
        assert_ne!(pow_hash(b"test pow", b"ctx2", nonce), h);
    }

    #[test]
    fn effort_scale() {
        let mut h = [0xffu8; 32];
        assert!(meets_effort(&h, 0) && meets_effort(&h, 1));
        assert!(!meets_effort(&h, 2));
        // h64 = 2^63 - 1: passes effort 2, not 3.
        h[0] = 0x7f;
        assert!(meets_effort(&h, 2) && !meets_effort(&h, 3));
        let n = solve_effort(b"test pow", b"ctx", 5000, 7, 1 << 24).unwrap();
        assert!(meets_effort(&pow_hash(b"test pow", b"ctx", n), 5000));
        // The solver's midstate gives the same hash as the one-shot hash.
        let (m, _) = solve(b"test pow", b"ctx", 0, 0, 1).unwrap();
        assert_eq!(solve_effort(b"test pow", b"ctx", 1, 0, 1), Some(m));
    }
}
