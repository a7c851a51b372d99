//! Packets the flow layer makes itself: ICMPv6 errors (RFC 4443) for the local kernel or for a
//! peer, and the TCP RST that refuses a SYN to a closed port. They are written into a buffer the
//! caller reuses, so steady state allocates nothing.

use super::checksum;
use super::packet::{
    ICMPV6_HEADER_LEN, INNER_HOP_LIMIT, IPV6_HEADER_LEN, PROTO_ICMPV6, PROTO_TCP, TCP_ACK, TCP_RST,
};
use crate::config::OVERLAY_MTU;

/// ICMPv6 Destination Unreachable.
pub const ICMP_DEST_UNREACHABLE: u8 = 1;
/// ICMPv6 Packet Too Big.
pub const ICMP_PACKET_TOO_BIG: u8 = 2;
/// Destination Unreachable code 1: communication administratively prohibited.
pub const CODE_ADMIN_PROHIBITED: u8 = 1;
/// Destination Unreachable code 3: address unreachable.
pub const CODE_ADDRESS_UNREACHABLE: u8 = 3;
/// Length of the TCP header of a RST.
const TCP_HEADER_LEN: usize = 20;

fn ipv6_header(out: &mut Vec<u8>, src: &[u8; 16], dst: &[u8; 16], next: u8, plen: usize) {
    out.extend_from_slice(&[0x60, 0, 0, 0]);
    out.extend_from_slice(&(plen as u16).to_be_bytes());
    out.extend_from_slice(&[next, INNER_HOP_LIMIT]);
    out.extend_from_slice(src);
    out.extend_from_slice(dst);
}

/// Writes an ICMPv6 error from `src` to `dst` quoting as much of `quoted` as fits in the
/// 1280-byte minimum MTU (RFC 4443 2.4(c)). `rest` is the 4-byte field after the checksum (the
/// MTU for Packet Too Big, zero otherwise).
pub fn icmp_error(
    out: &mut Vec<u8>,
    src: &[u8; 16],
    dst: &[u8; 16],
    icmp_type: u8,
    code: u8,
    rest: u32,
    quoted: &[u8],
) {
    let max_quote = usize::from(OVERLAY_MTU) - IPV6_HEADER_LEN - ICMPV6_HEADER_LEN;
    let quote = quoted.get(..quoted.len().min(max_quote)).unwrap_or(&[]);
    let plen = ICMPV6_HEADER_LEN + quote.len();
    out.clear();
    ipv6_header(out, src, dst, PROTO_ICMPV6, plen);
    out.extend_from_slice(&[icmp_type, code, 0, 0]);
    out.extend_from_slice(&rest.to_be_bytes());
    out.extend_from_slice(quote);
    let c = checksum::upper_layer(
        src,
        dst,
        PROTO_ICMPV6,
        out.get(IPV6_HEADER_LEN..).unwrap_or(&[]),
    );
    if let Some(b) = out.get_mut(IPV6_HEADER_LEN + 2..IPV6_HEADER_LEN + 4) {
        b.copy_from_slice(&c.to_be_bytes());
    }
}

/// Writes the RST that refuses `syn` (RFC 9293 3.10.7.1: SEG.ACK = SEG.SEQ + SEG.LEN, where a
/// SYN counts one), from the SYN's destination back to its source. `syn` is a packet accepted by
/// [`super::packet::parse`].
pub fn tcp_rst(out: &mut Vec<u8>, syn: &[u8]) {
    out.clear();
    let field = |at: usize, n: usize| syn.get(at..at + n).unwrap_or(&[]);
    let (Ok(src), Ok(dst)) = (
        <[u8; 16]>::try_from(field(24, 16)),
        <[u8; 16]>::try_from(field(8, 16)),
    ) else {
        return;
    };
    let l4 = IPV6_HEADER_LEN;
    let seq = field(l4 + 4, 4)
        .try_into()
        .map(u32::from_be_bytes)
        .unwrap_or(0);
    let data_offset = syn.get(l4 + 12).map_or(20, |b| usize::from(b >> 4) * 4);
    let seg_len = syn.len().saturating_sub(l4 + data_offset) as u32;
    let syn_flag = syn.get(l4 + 13).map_or(0, |f| u32::from(f & 0x02 != 0));
    let fin_flag = syn.get(l4 + 13).map_or(0, |f| u32::from(f & 0x01 != 0));
    let ack = seq.wrapping_add(seg_len + syn_flag + fin_flag);
    ipv6_header(out, &src, &dst, PROTO_TCP, TCP_HEADER_LEN);
    out.extend_from_slice(field(l4 + 2, 2)); // source port = their destination port
    out.extend_from_slice(field(l4, 2));
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&ack.to_be_bytes());
    out.extend_from_slice(&[(TCP_HEADER_LEN as u8 / 4) << 4, TCP_RST | TCP_ACK]);
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // window, checksum, urgent pointer
    if out.len() != IPV6_HEADER_LEN + TCP_HEADER_LEN {
        out.clear();
        return;
    }
    let c = checksum::upper_layer(&src, &dst, PROTO_TCP, out.get(l4..).unwrap_or(&[]));
    if let Some(b) = out.get_mut(l4 + 16..l4 + 18) {
        b.copy_from_slice(&c.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Icmpv6Type, PacketBuilder, SlicedPacket, TransportSlice};

    const A: [u8; 16] = [0xfd, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
    const B: [u8; 16] = [0xfd, 0x52, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

    #[test]
    fn rst_answers_a_syn() {
        let mut syn = Vec::new();
        PacketBuilder::ipv6(B, A, 64)
            .tcp(40000, 8080, 1000, 64000)
            .syn()
            .write(&mut syn, &[])
            .unwrap();
        let mut out = Vec::new();
        tcp_rst(&mut out, &syn);
        let p = SlicedPacket::from_ip(&out).unwrap();
        let TransportSlice::Tcp(t) = p.transport.unwrap() else {
            panic!()
        };
        assert!(t.rst() && t.ack());
        assert_eq!((t.source_port(), t.destination_port()), (8080, 40000));
        assert_eq!(t.acknowledgment_number(), 1001);
        assert_eq!(
            t.to_header()
                .calc_checksum_ipv6(
                    &etherparse::Ipv6HeaderSlice::from_slice(&out)
                        .unwrap()
                        .to_header(),
                    &[]
                )
                .unwrap(),
            t.checksum()
        );
        assert_eq!(&out[8..24], &A);
    }

    #[test]
    fn errors_fit_in_1280_and_verify() {
        let big = vec![0x60u8; 2000];
        let mut out = Vec::new();
        icmp_error(&mut out, &A, &B, ICMP_DEST_UNREACHABLE, 1, 0, &big);
        assert_eq!(out.len(), 1280);
        let p = SlicedPacket::from_ip(&out).unwrap();
        let TransportSlice::Icmpv6(i) = p.transport.unwrap() else {
            panic!()
        };
        assert!(i.is_checksum_valid(A, B));
        assert_eq!(
            i.icmp_type(),
            Icmpv6Type::DestinationUnreachable(etherparse::icmpv6::DestUnreachableCode::Prohibited)
        );
    }
}
