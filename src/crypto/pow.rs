//! Proof of work: a hashcash over SHA-256 (docs/decisions.md, "Names"). Used to price name
//! claims (docs/protocol.md 18.3) and meant for introductions later.
//!
//! `pow_hash = SHA-256(label ‖ context ‖ nonce_be64)`; the work a nonce shows is the number of
//! leading zero bits of that hash, and a lower hash is more work. The puzzle is memory-light and
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
}
