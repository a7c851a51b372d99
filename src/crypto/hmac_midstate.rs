//! HMAC-SHA256 (RFC 2104) keyed once: only the two SHA-256 states after the `ipad` and `opad`
//! blocks are kept (32 bytes each), and every MAC starts from them.
//!
//! Why not `hmac::Hmac<Sha256>` kept keyed: its state carries two block buffers besides the two
//! chaining values, and keyed copies of GN-WB's four round keys per direction made a relay's
//! per-circuit state 1280 bytes, over protocol.md 6.3's 1 KiB. Keying per MAC instead (two extra
//! compressions each time) cost about 12% of a GN-WB layer (issue #21). The compression function
//! is sha2's own (`compress256`, which picks SHA-NI at run time), so only the padding is done
//! here; the tests check every length against the `hmac` crate.

use sha2::digest::generic_array::GenericArray;
use zeroize::{Zeroize, ZeroizeOnDrop};

const BLOCK: usize = 64;

/// SHA-256's initial chaining value (FIPS 180-4, 5.3.3).
const IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

fn compress(state: &mut [u32; 8], block: &[u8; BLOCK]) {
    sha2::compress256(
        state,
        core::slice::from_ref(GenericArray::from_slice(block)),
    );
}

/// An HMAC-SHA256 key as its inner and outer midstates. Erased on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct HmacKey {
    inner: [u32; 8],
    outer: [u32; 8],
}

impl HmacKey {
    /// Key with a 32-byte key (shorter than a block, so used as is, zero-padded).
    pub fn new(key: &[u8; 32]) -> Self {
        let mut block = [0u8; BLOCK];
        let mut midstate = |pad: u8| {
            block.fill(pad);
            block.iter_mut().zip(key).for_each(|(b, k)| *b ^= k);
            let mut s = IV;
            compress(&mut s, &block);
            s
        };
        let inner = midstate(0x36);
        let outer = midstate(0x5c);
        block.zeroize();
        HmacKey { inner, outer }
    }

    /// Constant-time equality of the keyed states (equal keys give equal states).
    pub fn ct_eq(&self, other: &HmacKey) -> subtle::Choice {
        use subtle::ConstantTimeEq;
        self.inner.ct_eq(&other.inner) & self.outer.ct_eq(&other.outer)
    }

    /// `HMAC-SHA256(key, a ‖ b ‖ c)`.
    pub fn mac3(&self, a: &[u8], b: &[u8], c: &[u8]) -> [u8; 32] {
        let mut h = Inner::new(self.inner);
        h.update(a);
        h.update(b);
        h.update(c);
        let mut digest = h.finish();
        // The outer hash is one block: the inner digest, the padding and the length of
        // `opad ‖ digest` in bits.
        let mut block = [0u8; BLOCK];
        let (head, tail) = block.split_at_mut(32);
        head.copy_from_slice(&digest);
        digest.zeroize();
        if let Some((first, _)) = tail.split_first_mut() {
            *first = 0x80;
        }
        if let Some((_, len)) = tail.split_last_chunk_mut::<8>() {
            *len = (((BLOCK + 32) * 8) as u64).to_be_bytes();
        }
        let mut s = self.outer;
        compress(&mut s, &block);
        block.zeroize();
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(s) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        s.zeroize();
        out
    }
}

/// The inner hash in progress: whole blocks go straight from the input to the compression
/// function; only the pieces that straddle block boundaries are copied.
struct Inner {
    state: [u32; 8],
    buf: [u8; BLOCK],
    buffered: usize,
    /// Bytes hashed so far, the `ipad` block included.
    total: u64,
}

impl Inner {
    fn new(state: [u32; 8]) -> Self {
        Inner {
            state,
            buf: [0; BLOCK],
            buffered: 0,
            total: BLOCK as u64,
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        self.total = self.total.wrapping_add(data.len() as u64);
        if self.buffered > 0 {
            let free = self.buf.get_mut(self.buffered..).unwrap_or_default();
            let n = free.len().min(data.len());
            let (now, rest) = data.split_at(n);
            if let Some(dst) = free.get_mut(..n) {
                dst.copy_from_slice(now);
            }
            self.buffered += n;
            data = rest;
            if self.buffered < BLOCK {
                return;
            }
            compress(&mut self.state, &self.buf);
            self.buffered = 0;
        }
        let mut blocks = data.chunks_exact(BLOCK);
        for b in &mut blocks {
            if let Ok(b) = <&[u8; BLOCK]>::try_from(b) {
                compress(&mut self.state, b);
            }
        }
        let rest = blocks.remainder();
        if let Some(dst) = self.buf.get_mut(..rest.len()) {
            dst.copy_from_slice(rest);
        }
        self.buffered = rest.len();
    }

    fn finish(mut self) -> [u8; 32] {
        let bits = self.total.wrapping_mul(8).to_be_bytes();
        // `buffered` < 64 always, so there is room for the 0x80.
        let used = self.buffered;
        if let Some(b) = self.buf.get_mut(used) {
            *b = 0x80;
        }
        if let Some(rest) = self.buf.get_mut(used + 1..) {
            rest.fill(0);
        }
        if used + 1 > BLOCK - 8 {
            compress(&mut self.state, &self.buf);
            self.buf.fill(0);
        }
        if let Some((_, len)) = self.buf.split_last_chunk_mut::<8>() {
            *len = bits;
        }
        compress(&mut self.state, &self.buf);
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.state.zeroize();
        self.buf.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    fn reference(key: &[u8; 32], parts: [&[u8]; 3]) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    /// Every total length across two blocks' worth of padding cases, split three ways at
    /// every boundary pattern that matters (empty parts, parts ending inside and on a block).
    #[test]
    fn matches_the_hmac_crate_for_every_length_and_split() {
        let data: Vec<u8> = (0..1400u32).map(|i| (i * 7 + 3) as u8).collect();
        for key_byte in [0u8, 0x5a] {
            let key = [key_byte; 32];
            let k = HmacKey::new(&key);
            for len in (0..200).chain([1303, 1304, 1338, 1339, 1400]) {
                let m = &data[..len];
                for (i, j) in [
                    (0, 0),
                    (0, len),
                    (len / 3, 2 * len / 3),
                    (len.min(22), len.min(34)),
                ] {
                    let parts = [&m[..i], &m[i..j], &m[j..]];
                    assert_eq!(
                        k.mac3(parts[0], parts[1], parts[2]),
                        reference(&key, parts),
                        "len {len} split {i},{j}"
                    );
                }
            }
        }
    }

    /// RFC 4231 test case 2 does not have a 32-byte key; this is HMAC-SHA256 with the key of
    /// RFC 4231 case 1 zero-padded to 32 bytes, whose value equals case 1's (HMAC pads short keys
    /// with zeros), so the published vector checks the padding and the IV independently of
    /// the `hmac` crate.
    #[test]
    fn rfc4231_case_1() {
        let mut key = [0u8; 32];
        key[..20].fill(0x0b);
        let want = "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7";
        let got = HmacKey::new(&key).mac3(b"Hi ", b"", b"There");
        let hex: String = got.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, want);
    }

    #[test]
    fn ct_eq_tells_keys_apart() {
        let a = HmacKey::new(&[1; 32]);
        assert!(bool::from(a.ct_eq(&HmacKey::new(&[1; 32]))));
        assert!(!bool::from(a.ct_eq(&HmacKey::new(&[2; 32]))));
    }
}
