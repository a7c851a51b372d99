//! The Internet checksum (RFC 1071) over IPv6 pseudo-headers, and its incremental update
//! (RFC 1624) for the address and MSS rewrites of the flow layer.
//!
//! Sums are kept unfolded in a `u32`-sized accumulator (`u64` here, so no packet can overflow
//! it) and folded once at the end. Nothing here allocates or panics.

/// Adds `data` as big-endian 16-bit words to `acc`; an odd last byte is padded with zero.
pub fn add(mut acc: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        if let [hi, lo] = w {
            acc += u64::from(u16::from_be_bytes([*hi, *lo]));
        }
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds an accumulator into 16 bits with end-around carry (not inverted).
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The sum of the IPv6 pseudo-header (RFC 8200 section 8.1).
pub fn pseudo_header(src: &[u8; 16], dst: &[u8; 16], upper_len: u32, next_header: u8) -> u64 {
    let acc = add(add(0, src), dst);
    acc + u64::from(upper_len >> 16) + u64::from(upper_len & 0xffff) + u64::from(next_header)
}

/// The checksum of an upper-layer segment over the IPv6 pseudo-header. The segment's own
/// checksum field must be zero (or the caller subtracts it).
pub fn upper_layer(src: &[u8; 16], dst: &[u8; 16], next_header: u8, segment: &[u8]) -> u16 {
    let len = u32::try_from(segment.len()).unwrap_or(u32::MAX);
    !fold(add(pseudo_header(src, dst, len, next_header), segment))
}

/// Updates checksum `csum` for a change of the bytes `old` into `new` at the same even offset
/// of the checksummed data (RFC 1624, equation 3: `HC' = ~(~HC + ~m + m')`). `old` and `new`
/// have the same length; an odd length is padded with zero on both sides, which adds nothing.
pub fn update(csum: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut acc = u64::from(!csum);
    for w in old.chunks(2) {
        let word = match w {
            [hi, lo] => u16::from_be_bytes([*hi, *lo]),
            [hi] => u16::from_be_bytes([*hi, 0]),
            _ => 0,
        };
        acc += u64::from(!word);
    }
    !fold(add(acc, new))
}

/// Verifies an upper-layer checksum: the sum over pseudo-header and segment (checksum field
/// included) must fold to 0xffff.
pub fn verify(src: &[u8; 16], dst: &[u8; 16], next_header: u8, segment: &[u8]) -> bool {
    let len = u32::try_from(segment.len()).unwrap_or(u32::MAX);
    fold(add(pseudo_header(src, dst, len, next_header), segment)) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: 0001 f203 f4f5 f6f7 sums to ddf2.
        assert_eq!(
            fold(add(0, &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7])),
            0xddf2
        );
    }

    proptest::proptest! {
        #[test]
        fn incremental_equals_recomputed(
            mut data in proptest::collection::vec(proptest::num::u8::ANY, 4..200),
            at in 0usize..100,
            new in proptest::collection::vec(proptest::num::u8::ANY, 16),
        ) {
            let at = (at % (data.len() / 2)) * 2;
            let end = (at + 16).min(data.len() & !1);
            proptest::prop_assume!(end > at);
            let before = !fold(add(0, &data));
            let old: Vec<u8> = data[at..end].to_vec();
            data[at..end].copy_from_slice(&new[..end - at]);
            let after = !fold(add(0, &data));
            let inc = update(before, &old, &new[..end - at]);
            // 0x0000 and 0xffff are the same number in ones' complement.
            proptest::prop_assert!(inc == after || (inc ^ after) == 0xffff && (inc == 0 || after == 0),
                "inc {inc:04x} after {after:04x}");
        }
    }
}
