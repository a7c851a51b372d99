//! The flow layer, seen from the TUN: what to do with each packet the kernel writes into gn0.
//!
//! This is a pure function of the packet bytes and the node's state; the daemon's TUN task does the
//! reading and writing. It must never panic on any bytes (the TUN carries whatever local programs
//! send) and never allocate per packet: replies are built into a buffer the caller reuses.
//!
//! Today no overlay destination is reachable yet (sessions arrive with their issue), so unicast
//! overlay packets are answered with ICMPv6 Destination Unreachable at once, and `ping`/`curl` fail
//! fast instead of hanging. Oversized packets get Packet Too Big, and the kernel's own neighbour
//! discovery, router solicitations and MLD reports are dropped quietly.

use etherparse::icmpv6::DestUnreachableCode;
use etherparse::{Icmpv6Type, IpNumber, Ipv6Slice, PacketBuilder};
use std::net::Ipv6Addr;

use crate::config::OVERLAY_MTU;
use crate::crypto::is_overlay;

/// Length of the fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;
/// Length of the ICMPv6 header in error messages.
pub const ICMPV6_HEADER_LEN: usize = 8;
/// Hop limit of the ICMPv6 errors the daemon writes.
pub const ICMP_HOP_LIMIT: u8 = 64;

/// Why a packet from the TUN was dropped without a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not an IPv6 packet.
    NotIpv6,
    /// Truncated or inconsistent headers.
    Malformed,
    /// Multicast destination (MLD reports, router and neighbour solicitations, ...).
    Multicast,
    /// Neighbour discovery, router discovery or MLD, whatever the destination.
    LinkLocalControl,
    /// The destination is outside `fd00::/8`; nothing but overlay traffic belongs on gn0.
    NotOverlay,
    /// An ICMPv6 error is never answered with another (RFC 4443 section 2.4).
    IcmpError,
    /// The source is unspecified or not an address we may answer.
    BadSource,
}

/// The outcome for one packet read from the TUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Drop without a reply.
    Drop(DropReason),
    /// Write the reply built in the output buffer back into the TUN.
    Reply(ReplyKind),
    /// Hand the packet to the session layer for `destination`.
    Forward {
        /// The overlay destination.
        destination: Ipv6Addr,
    },
}

/// Which ICMPv6 error a reply is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// Destination Unreachable, code 3 (address unreachable).
    Unreachable,
    /// Packet Too Big with the overlay MTU.
    PacketTooBig,
}

/// Decides what to do with `packet`. When the verdict is [`Verdict::Reply`], `out` holds the reply
/// (it is cleared first; its capacity is reused, so steady state allocates nothing).
/// `reachable` says whether the session layer can carry packets to an overlay address.
pub fn classify_outbound(
    packet: &[u8],
    reachable: impl Fn(&Ipv6Addr) -> bool,
    out: &mut Vec<u8>,
) -> Verdict {
    match packet.first() {
        Some(b) if b >> 4 == 6 => {}
        _ => return Verdict::Drop(DropReason::NotIpv6),
    }
    let Ok(ip) = Ipv6Slice::from_slice(packet) else {
        return Verdict::Drop(DropReason::Malformed);
    };
    let header = ip.header();
    let src = header.source_addr();
    let dst = header.destination_addr();
    let payload = ip.payload();

    if payload.ip_number == IpNumber::IPV6_ICMP {
        match payload.payload.first().copied() {
            // Router/neighbour discovery, redirects, MLD queries/reports/done, MLDv2 reports.
            Some(130..=137) | Some(143) => return Verdict::Drop(DropReason::LinkLocalControl),
            // Error messages (types 0..=127) are never answered.
            Some(t) if t < 128 => return Verdict::Drop(DropReason::IcmpError),
            None if !payload.fragmented => return Verdict::Drop(DropReason::Malformed),
            _ => {}
        }
    }
    if dst.is_multicast() {
        return Verdict::Drop(DropReason::Multicast);
    }
    if !is_overlay(&dst) {
        return Verdict::Drop(DropReason::NotOverlay);
    }
    if src.is_unspecified() || src.is_multicast() || src.is_loopback() {
        return Verdict::Drop(DropReason::BadSource);
    }
    if packet.len() > usize::from(OVERLAY_MTU) {
        return reply(
            Icmpv6Type::PacketTooBig {
                mtu: u32::from(OVERLAY_MTU),
            },
            ReplyKind::PacketTooBig,
            src,
            dst,
            packet,
            out,
        );
    }
    if !reachable(&dst) {
        return reply(
            Icmpv6Type::DestinationUnreachable(DestUnreachableCode::Address),
            ReplyKind::Unreachable,
            src,
            dst,
            packet,
            out,
        );
    }
    Verdict::Forward { destination: dst }
}

/// Builds an ICMPv6 error about `packet` into `out`: from the unreachable destination (which is
/// what `ping` then names) to the packet's source, quoting as much as fits in 1280 bytes.
fn reply(
    kind: Icmpv6Type,
    verdict: ReplyKind,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    packet: &[u8],
    out: &mut Vec<u8>,
) -> Verdict {
    let max_quote = usize::from(OVERLAY_MTU) - IPV6_HEADER_LEN - ICMPV6_HEADER_LEN;
    let quote = packet.get(..packet.len().min(max_quote)).unwrap_or(packet);
    out.clear();
    let builder = PacketBuilder::ipv6(dst.octets(), src.octets(), ICMP_HOP_LIMIT).icmpv6(kind);
    match builder.write(out, quote) {
        Ok(()) => Verdict::Reply(verdict),
        Err(_) => Verdict::Drop(DropReason::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Icmpv6Slice, Ipv6HeaderSlice};

    const ME: [u8; 16] = [0xfd, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
    const THEM: [u8; 16] = [0xfd, 0x52, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

    fn echo(src: [u8; 16], dst: [u8; 16], payload_len: usize) -> Vec<u8> {
        let b = PacketBuilder::ipv6(src, dst, 64).icmpv6_echo_request(7, 1);
        let mut v = Vec::new();
        b.write(&mut v, &vec![0xab; payload_len]).unwrap();
        v
    }

    fn never(_: &Ipv6Addr) -> bool {
        false
    }

    #[test]
    fn unreachable_overlay_destination_gets_icmp_reply() {
        let pkt = echo(ME, THEM, 56);
        let mut out = Vec::new();
        assert_eq!(
            classify_outbound(&pkt, never, &mut out),
            Verdict::Reply(ReplyKind::Unreachable)
        );
        let ip = Ipv6Slice::from_slice(&out).unwrap();
        assert_eq!(ip.header().source_addr(), Ipv6Addr::from(THEM));
        assert_eq!(ip.header().destination_addr(), Ipv6Addr::from(ME));
        let icmp = Icmpv6Slice::from_slice(ip.payload().payload).unwrap();
        assert_eq!(
            icmp.icmp_type(),
            Icmpv6Type::DestinationUnreachable(DestUnreachableCode::Address)
        );
        assert!(icmp.is_checksum_valid(
            ip.header().source_addr().octets(),
            ip.header().destination_addr().octets()
        ));
        // The whole original packet is quoted.
        assert_eq!(&out[48..], &pkt[..]);
    }

    #[test]
    fn oversized_gets_packet_too_big_within_1280() {
        let pkt = echo(ME, THEM, 1400 - 48);
        assert_eq!(pkt.len(), 1400);
        let mut out = Vec::new();
        assert_eq!(
            classify_outbound(&pkt, |_| true, &mut out),
            Verdict::Reply(ReplyKind::PacketTooBig)
        );
        assert_eq!(out.len(), 1280);
        let ip = Ipv6Slice::from_slice(&out).unwrap();
        let icmp = Icmpv6Slice::from_slice(ip.payload().payload).unwrap();
        assert_eq!(icmp.icmp_type(), Icmpv6Type::PacketTooBig { mtu: 1280 });
        // Exactly 1280 is fine.
        let pkt = echo(ME, THEM, 1280 - 48);
        assert_eq!(
            classify_outbound(&pkt, |_| true, &mut out),
            Verdict::Forward {
                destination: THEM.into()
            }
        );
    }

    #[test]
    fn kernel_chatter_is_dropped_quietly() {
        let mut out = Vec::new();
        // Router solicitation to ff02::2 from fe80::1.
        let rs = {
            let mut link_local = [0u8; 16];
            link_local[0] = 0xfe;
            link_local[1] = 0x80;
            link_local[15] = 1;
            let all_routers: Ipv6Addr = "ff02::2".parse().unwrap();
            let b = PacketBuilder::ipv6(link_local, all_routers.octets(), 255).icmpv6(
                Icmpv6Type::Unknown {
                    type_u8: 133,
                    code_u8: 0,
                    bytes5to8: [0; 4],
                },
            );
            let mut v = Vec::new();
            b.write(&mut v, &[]).unwrap();
            v
        };
        assert_eq!(
            classify_outbound(&rs, never, &mut out),
            Verdict::Drop(DropReason::LinkLocalControl)
        );
        // Anything to a multicast group.
        let mcast: Ipv6Addr = "ff02::16".parse().unwrap();
        let pkt = echo(ME, mcast.octets(), 8);
        assert_eq!(
            classify_outbound(&pkt, never, &mut out),
            Verdict::Drop(DropReason::Multicast)
        );
        // Non-overlay destination.
        let pkt = echo(ME, "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets(), 8);
        assert_eq!(
            classify_outbound(&pkt, never, &mut out),
            Verdict::Drop(DropReason::NotOverlay)
        );
        // IPv4 and garbage.
        assert_eq!(
            classify_outbound(&[0x45, 0, 0, 20], never, &mut out),
            Verdict::Drop(DropReason::NotIpv6)
        );
        assert_eq!(
            classify_outbound(&[], never, &mut out),
            Verdict::Drop(DropReason::NotIpv6)
        );
        assert_eq!(
            classify_outbound(&[0x60, 0, 0], never, &mut out),
            Verdict::Drop(DropReason::Malformed)
        );
    }

    #[test]
    fn icmp_errors_are_not_answered() {
        let mut out = Vec::new();
        let b = PacketBuilder::ipv6(ME, THEM, 64).icmpv6(Icmpv6Type::DestinationUnreachable(
            DestUnreachableCode::Port,
        ));
        let mut pkt = Vec::new();
        b.write(&mut pkt, &[0u8; 48]).unwrap();
        assert_eq!(
            classify_outbound(&pkt, never, &mut out),
            Verdict::Drop(DropReason::IcmpError)
        );
    }

    #[test]
    fn no_allocation_after_warmup() {
        let pkt = echo(ME, THEM, 1200);
        let mut out = Vec::with_capacity(1280);
        let ptr = out.as_ptr();
        for _ in 0..100 {
            classify_outbound(&pkt, never, &mut out);
        }
        assert_eq!(ptr, out.as_ptr(), "the reply buffer was reallocated");
        let _ = Ipv6HeaderSlice::from_slice(&out).unwrap();
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..1600)) {
            let mut out = Vec::new();
            let _ = classify_outbound(&bytes, never, &mut out);
        }

        #[test]
        fn never_panics_on_ipv6_shaped(mut bytes in proptest::collection::vec(proptest::num::u8::ANY, 40..1500), next in 0u8..=255) {
            bytes[0] = 0x60;
            let len = (bytes.len() - 40) as u16;
            bytes[4..6].copy_from_slice(&len.to_be_bytes());
            bytes[6] = next;
            bytes[24] = 0xfd;
            let mut out = Vec::new();
            let v = classify_outbound(&bytes, never, &mut out);
            if let Verdict::Reply(_) = v {
                proptest::prop_assert!(out.len() <= 1280);
            }
        }
    }
}
