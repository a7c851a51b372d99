//! GN-WB, the per-hop layer (docs/protocol.md section 6.4): a tweakable LIONESS (four-round
//! unbalanced Feistel) built from ChaCha20 and HMAC-SHA256.
//!
//! Each stream round keys ChaCha20 with `HMAC-SHA256(K, LABEL_WIDEBLOCK_STREAM ‖ tweak ‖ L)`, a
//! PRF output, never with `L ⊕ K`: the left half is chosen by whoever sends the cell, so an XOR
//! would hand ChaCha20 keys with known differences and the layer would need ChaCha20 to resist
//! related-key attacks. Derived keys need only that HMAC-SHA256 is a PRF and ChaCha20 a PRG.
//!
//! A body is split into `L` ([`WB_LEFT_LEN`] = 32 bytes) and `R` (the rest). Any change to the
//! ciphertext garbles the whole plaintext, which is what makes tagging attacks visible at the end
//! of a circuit. The layer works in place, keeps no state between cells and never allocates.

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;
use core::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::crypto::hmac_midstate::HmacKey;
use crate::crypto::labels::{LABEL_WIDEBLOCK, LABEL_WIDEBLOCK_STREAM};

/// Left part of the Feistel (the part the hash rounds produce).
pub const WB_LEFT_LEN: usize = 32;
/// The tweak: `u64(seq) ‖ u8(cmd) ‖ 0x00 0x00 0x00`.
pub const WB_TWEAK_LEN: usize = 12;

/// The GN-WB tweak for a cell: `u64(seq) ‖ u8(cmd) ‖ 0^3`.
pub fn tweak(seq: u64, cmd: u8) -> [u8; WB_TWEAK_LEN] {
    let mut t = [0u8; WB_TWEAK_LEN];
    t[..8].copy_from_slice(&seq.to_be_bytes());
    t[8] = cmd;
    t
}

/// Why a body could not be processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WbError {
    /// The body is not longer than [`WB_LEFT_LEN`].
    BodyTooShort,
}

impl fmt::Display for WbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("wide-block body too short")
    }
}

impl std::error::Error for WbError {}

/// The four round keys of one GN-WB instance (`Kf1..4` or `Kb1..4`), each kept as its HMAC
/// midstates: keying once saves two SHA-256 compressions per MAC (about 12% of a layer), and
/// 64 bytes per key keep a relay's per-circuit state under 1 KiB (protocol.md 6.3). The raw
/// keys are not kept. Erased on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct WbKeys {
    k: [HmacKey; 4],
}

impl fmt::Debug for WbKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WbKeys(<secret>)")
    }
}

impl WbKeys {
    /// Keys `K1..K4`.
    pub fn new(mut k: [[u8; 32]; 4]) -> Self {
        let keyed = WbKeys {
            k: k.each_ref().map(HmacKey::new),
        };
        k.zeroize();
        keyed
    }

    /// Constant-time equality (for tests and known-answer checks).
    pub fn ct_eq(&self, other: &WbKeys) -> bool {
        self.k
            .iter()
            .zip(&other.k)
            .fold(subtle::Choice::from(1), |acc, (a, b)| acc & a.ct_eq(b))
            .into()
    }

    /// WB-Encrypt in place.
    pub fn encrypt(&self, tweak: &[u8; WB_TWEAK_LEN], body: &mut [u8]) -> Result<(), WbError> {
        let [k1, k2, k3, k4] = &self.k;
        let (l, r) = split(body)?;
        stream_round(k1, l, tweak, r);
        hash_round(k2, tweak, r, l);
        stream_round(k3, l, tweak, r);
        hash_round(k4, tweak, r, l);
        Ok(())
    }

    /// WB-Decrypt in place.
    pub fn decrypt(&self, tweak: &[u8; WB_TWEAK_LEN], body: &mut [u8]) -> Result<(), WbError> {
        let [k1, k2, k3, k4] = &self.k;
        let (l, r) = split(body)?;
        hash_round(k4, tweak, r, l);
        stream_round(k3, l, tweak, r);
        hash_round(k2, tweak, r, l);
        stream_round(k1, l, tweak, r);
        Ok(())
    }
}

fn split(body: &mut [u8]) -> Result<(&mut [u8; WB_LEFT_LEN], &mut [u8]), WbError> {
    match body.split_first_chunk_mut::<WB_LEFT_LEN>() {
        Some((l, r)) if !r.is_empty() => Ok((l, r)),
        _ => Err(WbError::BodyTooShort),
    }
}

/// `R ← R ⊕ ChaCha20(key = HMAC-SHA256(k, LABEL_WIDEBLOCK_STREAM ‖ tweak ‖ L), nonce = 0^12,
/// counter = 0)`.
fn stream_round(k: &HmacKey, l: &[u8; WB_LEFT_LEN], tweak: &[u8; WB_TWEAK_LEN], r: &mut [u8]) {
    let mut key = k.mac3(LABEL_WIDEBLOCK_STREAM, tweak, l);
    // The cipher state erases itself on drop (chacha20 `zeroize` feature).
    let mut cipher = ChaCha20::new(&key.into(), &[0u8; 12].into());
    key.zeroize();
    cipher.apply_keystream(r);
}

/// `L ← L ⊕ HMAC-SHA256(k, LABEL_WIDEBLOCK ‖ tweak ‖ R)`.
fn hash_round(k: &HmacKey, tweak: &[u8; WB_TWEAK_LEN], r: &[u8], l: &mut [u8; WB_LEFT_LEN]) {
    let tag = k.mac3(LABEL_WIDEBLOCK, tweak, r);
    for (d, s) in l.iter_mut().zip(tag.iter()) {
        *d ^= s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(seed: u8) -> WbKeys {
        WbKeys::new([[seed; 32], [seed + 1; 32], [seed + 2; 32], [seed + 3; 32]])
    }

    #[test]
    fn round_trip_and_diffusion() {
        let k = keys(1);
        let tw = tweak(5, 3);
        let plain: Vec<u8> = (0..1336u32).map(|i| i as u8).collect();
        let mut b = plain.clone();
        k.encrypt(&tw, &mut b).unwrap();
        assert_ne!(b, plain);
        let mut d = b.clone();
        k.decrypt(&tw, &mut d).unwrap();
        assert_eq!(d, plain);
        // one flipped bit anywhere garbles the first 16 bytes (the check field)
        for pos in [0usize, 31, 32, 700, 1335] {
            let mut t = b.clone();
            t[pos] ^= 1;
            k.decrypt(&tw, &mut t).unwrap();
            assert_ne!(&t[..16], &plain[..16], "flip at {pos}");
        }
        // a different tweak garbles too
        let mut t = b.clone();
        k.decrypt(&tweak(5, 4), &mut t).unwrap();
        assert_ne!(&t[..16], &plain[..16]);
    }

    /// 6.4: a stream round's key is a PRF output. With `L ⊕ K` keying, `(K ⊕ Δ, L ⊕ Δ)` gave
    /// the same keystream as `(K, L)` for every `Δ`: the related-key structure the derived key
    /// removes.
    #[test]
    fn stream_round_keys_are_derived_not_xored() {
        let k = [7u8; 32];
        let keyed = HmacKey::new(&k);
        let l = [9u8; WB_LEFT_LEN];
        let tw = tweak(1, 3);
        let mut a = [0u8; 64];
        stream_round(&keyed, &l, &tw, &mut a);
        for delta in [[1u8; 32], [0x80; 32]] {
            let (mut k2, mut l2) = (k, l);
            k2.iter_mut().zip(&delta).for_each(|(x, d)| *x ^= d);
            l2.iter_mut().zip(&delta).for_each(|(x, d)| *x ^= d);
            let mut b = [0u8; 64];
            stream_round(&HmacKey::new(&k2), &l2, &tw, &mut b);
            assert_ne!(a, b);
        }
        // The key depends on the tweak too (the nonce is fixed).
        let mut c = [0u8; 64];
        stream_round(&keyed, &l, &tweak(2, 3), &mut c);
        assert_ne!(a, c);
    }

    #[test]
    fn short_bodies_are_refused() {
        assert_eq!(
            keys(0).encrypt(&[0; 12], &mut [0u8; 32]),
            Err(WbError::BodyTooShort)
        );
        assert_eq!(
            keys(0).decrypt(&[0; 12], &mut [0u8; 3]),
            Err(WbError::BodyTooShort)
        );
    }

    #[test]
    fn debug_hides_keys() {
        assert_eq!(format!("{:?}", keys(7)), "WbKeys(<secret>)");
    }
}
