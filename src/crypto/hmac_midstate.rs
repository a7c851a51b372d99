//! HMAC-SHA256 (RFC 2104) keyed once: only the two SHA-256 states after the `ipad` and `opad`
//! blocks are kept (32 bytes each), and every MAC starts from them.
//!
//! Why not `hmac::Hmac<Sha256>` kept keyed: its state carries two block buffers besides the two
//! chaining values, and keyed copies of GN-WB's four round keys per direction made a relay's
//! per-circuit state 1280 bytes, over protocol.md 6.3's 1 KiB. Keying per MAC instead (two extra
//! compressions each time) cost about 12% of a GN-WB layer (issue #21). The compression function
//! is sha2's own (`compress256`, which picks SHA-NI at run time) and the buffering and padding
//! block-buffer's, as inside sha2; only the HMAC construction is here, and the tests check it
//! for every length against the `hmac` crate and RFC 4231.

use sha2::digest::block_buffer::{BlockBuffer, Eager};
use sha2::digest::consts::U64;
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

/// An HMAC-SHA256 key as its inner and outer midstates. Erased on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct HmacKey {
    inner: [u32; 8],
    outer: [u32; 8],
}

impl HmacKey {
    /// Key with a 32-byte key (shorter than a block, so used as is, zero-padded).
    pub fn new(key: &[u8; 32]) -> Self {
        let mut block = GenericArray::<u8, U64>::default();
        let mut midstate = |pad: u8| {
            block.fill(pad);
            block.iter_mut().zip(key).for_each(|(b, k)| *b ^= k);
            let mut s = IV;
            sha2::compress256(&mut s, core::slice::from_ref(&block));
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
        let mut h = Hash::resume(self.inner);
        h.update(a);
        h.update(b);
        h.update(c);
        let mut digest = h.finish();
        let mut o = Hash::resume(self.outer);
        o.update(&digest);
        digest.zeroize();
        o.finish()
    }
}

/// SHA-256 resumed from a midstate one block in (the `ipad` or `opad` block). The buffering
/// and padding are the `block-buffer` crate's (what sha2 itself uses), so whole blocks reach
/// the compression function straight from the input, many per call.
struct Hash {
    state: [u32; 8],
    buffer: BlockBuffer<U64, Eager>,
    /// Bytes hashed so far, the key block included.
    total: u64,
}

impl Hash {
    fn resume(state: [u32; 8]) -> Self {
        Hash {
            state,
            buffer: BlockBuffer::default(),
            total: BLOCK as u64,
        }
    }

    fn update(&mut self, data: &[u8]) {
        self.total = self.total.wrapping_add(data.len() as u64);
        let state = &mut self.state;
        self.buffer
            .digest_blocks(data, |blocks| sha2::compress256(state, blocks));
    }

    fn finish(mut self) -> [u8; 32] {
        let state = &mut self.state;
        self.buffer
            .len64_padding_be(self.total.wrapping_mul(8), |b| {
                sha2::compress256(state, core::slice::from_ref(b))
            });
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out
    }
}

impl Drop for Hash {
    fn drop(&mut self) {
        self.state.zeroize();
        // The buffer holds message bytes (cell bytes, the inner digest): overwritten too.
        self.buffer.set(GenericArray::default(), 0);
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
