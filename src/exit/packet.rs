//! The IP packets of `EXIT_PACKET` (protocol.md 7.3): a checked view of the fields an exit needs,
//! address rewrites with incremental checksum updates (RFC 1624), and the refusals an exit
//! answers with (TCP RST, ICMP/ICMPv6 "administratively prohibited"). Nothing here allocates
//! beyond the caller's reused buffer, and nothing panics on network data.

use std::net::IpAddr;

use crate::flow::checksum;

/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;
/// Largest packet in one `EXIT_PACKET` (the overlay MTU; fits `RELAY_PAYLOAD_LEN`).
pub const EXIT_PACKET_MAX: usize = 1280;
/// TTL / hop limit an exit gives every packet it lets out, so the destination does not learn the
/// client's initial TTL minus nothing (the client's OS shows through it otherwise).
pub const EXIT_TTL: u8 = 64;
/// Bytes of the refused packet an ICMP error quotes (RFC 1812 4.3.2.3: as much as fits in 576).
const ICMP4_QUOTE: usize = 576 - 20 - 8;

const TCP: u8 = super::policy::PROTO_TCP;
const UDP: u8 = super::policy::PROTO_UDP;

/// The fields of an IPv4/IPv6 packet an exit looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpView {
    /// Source.
    pub src: IpAddr,
    /// Destination.
    pub dst: IpAddr,
    /// Transport protocol (after IPv6 extension headers).
    pub proto: u8,
    /// Offset of the transport header.
    pub l4: usize,
    /// Length the IP header says the packet has (trailing bytes beyond it are ignored).
    pub len: usize,
    /// A fragment, or fragmented: transport fields may be missing.
    pub fragment: bool,
}

impl IpView {
    /// Parses the IP header(s) of `p`; `None` for anything that is not a well-formed packet.
    pub fn parse(p: &[u8]) -> Option<IpView> {
        let ip = etherparse::IpSlice::from_slice(p).ok()?;
        let payload = ip.payload();
        let l4 = (payload.payload.as_ptr() as usize).checked_sub(p.as_ptr() as usize)?;
        Some(IpView {
            src: ip.source_addr(),
            dst: ip.destination_addr(),
            proto: payload.ip_number.0,
            l4,
            len: l4 + payload.payload.len(),
            fragment: ip.is_fragmenting_payload(),
        })
    }

    /// The transport checksum's offset, if this packet has one that covers the addresses.
    fn l4_checksum(&self) -> Option<usize> {
        if self.fragment {
            return None;
        }
        match (self.proto, self.src) {
            (TCP, _) => Some(self.l4 + 16),
            (UDP, _) => Some(self.l4 + 6),
            (PROTO_ICMPV6, IpAddr::V6(_)) => Some(self.l4 + 2),
            _ => None,
        }
    }

    /// Replaces the source (`dst` false) or destination address with `new` (same family), and
    /// fixes the IPv4 header checksum and the transport checksum.
    pub fn set_address(&mut self, p: &mut [u8], dst: bool, new: IpAddr) -> bool {
        let (at, ok) = match (self.src, new) {
            (IpAddr::V4(_), IpAddr::V4(_)) => (if dst { 16 } else { 12 }, true),
            (IpAddr::V6(_), IpAddr::V6(_)) => (if dst { 24 } else { 8 }, true),
            _ => (0, false),
        };
        if !ok {
            return false;
        }
        let mut new_buf = [0u8; 16];
        let n = match new {
            IpAddr::V4(a) => {
                if let Some(b) = new_buf.get_mut(..4) {
                    b.copy_from_slice(&a.octets());
                }
                4
            }
            IpAddr::V6(a) => {
                new_buf = a.octets();
                16
            }
        };
        let new_bytes = new_buf.get(..n).unwrap_or(&[]);
        let mut old = [0u8; 16];
        let (Some(old), Some(field)) = (old.get_mut(..n), p.get_mut(at..at + n)) else {
            return false;
        };
        old.copy_from_slice(field);
        field.copy_from_slice(new_bytes);
        if matches!(new, IpAddr::V4(_)) {
            update_at(p, 10, old, new_bytes);
        }
        if let Some(c) = self.l4_checksum() {
            // A UDP/IPv4 checksum of zero means "none" and stays so.
            let none = self.proto == UDP
                && matches!(new, IpAddr::V4(_))
                && p.get(c..c + 2) == Some(&[0, 0][..]);
            if !none {
                update_at(p, c, old, new_bytes);
            }
        }
        if dst {
            self.dst = new;
        } else {
            self.src = new;
        }
        true
    }

    /// Sets the TTL / hop limit to [`EXIT_TTL`].
    pub fn reset_ttl(&self, p: &mut [u8]) {
        match self.src {
            IpAddr::V4(_) => {
                let Some(&[ttl, proto]) = p.get(8..10) else {
                    return;
                };
                if let Some(b) = p.get_mut(8) {
                    *b = EXIT_TTL;
                }
                update_at(p, 10, &[ttl, proto], &[EXIT_TTL, proto]);
            }
            IpAddr::V6(_) => {
                if let Some(b) = p.get_mut(7) {
                    *b = EXIT_TTL;
                }
            }
        }
    }

    /// The destination port (TCP/UDP, not a later fragment).
    pub fn dst_port(&self, p: &[u8]) -> Option<u16> {
        if self.fragment || (self.proto != TCP && self.proto != UDP) {
            return None;
        }
        match p.get(self.l4 + 2..self.l4 + 4) {
            Some(&[a, b]) => Some(u16::from_be_bytes([a, b])),
            _ => None,
        }
    }
}

/// In an ICMP/ICMPv6 error (unreachable, time exceeded, parameter problem, too big) viewed as
/// `v`, replaces the quoted packet's source `old` with `new` (same family), with every checksum
/// the change touches: the quoted IPv4 header's, the quoted TCP/UDP checksum when the quote
/// holds it, and the ICMP one. The exit's kernel NAT leaves the circuit's inner address in the
/// quote; the client's kernel matches an error to its socket by the quoted source, so without
/// this a router's "unreachable" never reaches the program. Returns whether it rewrote.
pub fn rewrite_quoted_source(p: &mut [u8], v: &IpView, old: IpAddr, new: IpAddr) -> bool {
    let is_error = !v.fragment
        && match (v.src, v.proto) {
            (IpAddr::V4(_), PROTO_ICMP) => matches!(p.get(v.l4), Some(3 | 11 | 12)),
            (IpAddr::V6(_), PROTO_ICMPV6) => matches!(p.get(v.l4), Some(1..=4)),
            _ => false,
        };
    if !is_error {
        return false;
    }
    let end = v.len.min(p.len());
    let icmp_sum = v.l4 + 2;
    let q = v.l4 + 8;
    let version = p.get(q).map(|b| b >> 4);
    let (src_at, header_sum, inner_proto, inner_l4, old_b, new_b) = match (old, new, version) {
        (IpAddr::V4(o), IpAddr::V4(n), Some(4)) => {
            let ihl = usize::from(p.get(q).map_or(0, |b| b & 0x0f)) * 4;
            if ihl < 20 {
                return false;
            }
            let (mut ob, mut nb) = ([0u8; 16], [0u8; 16]);
            ob[..4].copy_from_slice(&o.octets());
            nb[..4].copy_from_slice(&n.octets());
            (q + 12, Some(q + 10), p.get(q + 9).copied(), q + ihl, ob, nb)
        }
        (IpAddr::V6(o), IpAddr::V6(n), Some(6)) => (
            q + 8,
            None,
            p.get(q + 6).copied(),
            q + 40,
            o.octets(),
            n.octets(),
        ),
        _ => return false,
    };
    let n = if old.is_ipv4() { 4 } else { 16 };
    let (old_b, new_b) = (old_b.get(..n).unwrap_or(&[]), new_b.get(..n).unwrap_or(&[]));
    if src_at + n > end || p.get(src_at..src_at + n) != Some(old_b) {
        return false;
    }
    if let Some(f) = p.get_mut(src_at..src_at + n) {
        f.copy_from_slice(new_b);
    }
    // Every field changed inside the ICMP message changes its checksum too (all at even
    // offsets from the ICMP header, so the one's-complement update applies as is).
    update_at(p, icmp_sum, old_b, new_b);
    let covered = |p: &mut [u8], at: usize, zero_is_none: bool| {
        let Some(&[a, b]) = p.get(at..at + 2).filter(|_| at + 2 <= end) else {
            return;
        };
        if zero_is_none && [a, b] == [0, 0] {
            return;
        }
        update_at(p, at, old_b, new_b);
        if let Some(&[c, d]) = p.get(at..at + 2) {
            update_at(p, icmp_sum, &[a, b], &[c, d]);
        }
    };
    if let Some(h) = header_sum {
        covered(p, h, false);
    }
    match inner_proto {
        Some(TCP) => covered(p, inner_l4 + 16, false),
        Some(UDP) => covered(p, inner_l4 + 6, n == 4),
        _ => {}
    }
    true
}

/// Applies a change of `old` into `new` to the 16-bit checksum at `at`.
fn update_at(p: &mut [u8], at: usize, old: &[u8], new: &[u8]) {
    if let Some(f) = p.get_mut(at..at + 2) {
        if let [a, b] = f {
            let c = checksum::update(u16::from_be_bytes([*a, *b]), old, new);
            f.copy_from_slice(&c.to_be_bytes());
        }
    }
}

/// Writes into `out` the answer to a refused packet `p` (viewed as `v`), from its destination
/// back to its source: a RST for TCP (none for a RST), ICMP "administratively prohibited" for
/// anything else, nothing for an ICMP error (never answered). Returns whether there is one.
pub fn refusal(out: &mut Vec<u8>, p: &[u8], v: &IpView) -> bool {
    out.clear();
    let p = p.get(..v.len).unwrap_or(p);
    let l4 = p.get(v.l4..).unwrap_or(&[]);
    if v.proto == TCP && !v.fragment {
        let (Some(&[s0, s1, d0, d1]), Some(seq), Some(&off), Some(&flags)) =
            (l4.get(..4), l4.get(4..8), l4.get(12), l4.get(13))
        else {
            return false;
        };
        if flags & 0x04 != 0 {
            return false;
        }
        let seq = <[u8; 4]>::try_from(seq).map_or(0, u32::from_be_bytes);
        let data = l4.len().saturating_sub(usize::from(off >> 4) * 4) as u32;
        let ack = seq
            .wrapping_add(data)
            .wrapping_add(u32::from(flags & 0x02 != 0) + u32::from(flags & 0x01 != 0));
        let (sport, dport) = (u16::from_be_bytes([d0, d1]), u16::from_be_bytes([s0, s1]));
        let b = match (v.dst, v.src) {
            (IpAddr::V4(d), IpAddr::V4(s)) => {
                etherparse::PacketBuilder::ipv4(d.octets(), s.octets(), EXIT_TTL)
                    .tcp(sport, dport, 0, 0)
            }
            (IpAddr::V6(d), IpAddr::V6(s)) => {
                etherparse::PacketBuilder::ipv6(d.octets(), s.octets(), EXIT_TTL)
                    .tcp(sport, dport, 0, 0)
            }
            _ => return false,
        };
        return b.rst().ack(ack).write(out, &[]).is_ok();
    }
    prohibited(out, p, v)
}

/// Writes into `out` ICMP/ICMPv6 "administratively prohibited" for `p` (viewed as `v`), from its
/// destination back to its source, whatever its protocol; nothing for an ICMP error. The client
/// answers so when no exit lets a destination out: `connect()` fails at once (EHOSTUNREACH).
pub fn prohibited(out: &mut Vec<u8>, p: &[u8], v: &IpView) -> bool {
    out.clear();
    let p = p.get(..v.len).unwrap_or(p);
    let l4 = p.get(v.l4..).unwrap_or(&[]);
    match (v.dst, v.src) {
        (IpAddr::V4(d), IpAddr::V4(s)) => {
            // Type 3 and above 0x0b... is an error; echo (8) and others are queries.
            if v.proto == PROTO_ICMP
                && l4
                    .first()
                    .is_some_and(|&t| matches!(t, 3 | 4 | 5 | 11 | 12))
            {
                return false;
            }
            let quote = p.get(..p.len().min(ICMP4_QUOTE)).unwrap_or(&[]);
            use etherparse::icmpv4::DestUnreachableHeader;
            etherparse::PacketBuilder::ipv4(d.octets(), s.octets(), EXIT_TTL)
                .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                    DestUnreachableHeader::FilterProhibited,
                ))
                .write(out, quote)
                .is_ok()
        }
        (IpAddr::V6(d), IpAddr::V6(s)) => {
            if v.proto == PROTO_ICMPV6 && l4.first().is_some_and(|&t| t < 128) {
                return false;
            }
            crate::flow::reply::icmp_error(
                out,
                &d.octets(),
                &s.octets(),
                crate::flow::reply::ICMP_DEST_UNREACHABLE,
                crate::flow::reply::CODE_ADMIN_PROHIBITED,
                0,
                p,
            );
            !out.is_empty()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn syn4() -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv4([100, 127, 255, 1], [198, 19, 250, 2], 7)
            .tcp(40000, 80, 1000, 64000)
            .syn()
            .write(&mut v, b"")
            .unwrap();
        v
    }

    /// Rewrites keep every checksum valid: etherparse recomputes and compares.
    #[test]
    fn rewrites_keep_checksums_valid() {
        let mut p = syn4();
        let mut v = IpView::parse(&p).unwrap();
        assert!(v.set_address(&mut p, false, IpAddr::V4(Ipv4Addr::new(100, 127, 0, 9))));
        v.reset_ttl(&mut p);
        let s = SlicedPacket::from_ip(&p).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &s.net else {
            panic!()
        };
        let h = ip.header().to_header();
        assert_eq!(h.source, [100, 127, 0, 9]);
        assert_eq!(h.time_to_live, EXIT_TTL);
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        let TransportSlice::Tcp(t) = s.transport.unwrap() else {
            panic!()
        };
        let want = t
            .to_header()
            .calc_checksum_ipv4_raw(h.source, h.destination, t.payload())
            .unwrap();
        assert_eq!(t.checksum(), want);

        let mut u = Vec::new();
        let a6: Ipv6Addr = "fc00:676e:6578::ff01".parse().unwrap();
        let b6: Ipv6Addr = "2a00:1450::1".parse().unwrap();
        PacketBuilder::ipv6(a6.octets(), b6.octets(), 3)
            .udp(5000, 443)
            .write(&mut u, b"hello")
            .unwrap();
        let mut v = IpView::parse(&u).unwrap();
        let new: Ipv6Addr = "fc00:676e:6578::7".parse().unwrap();
        assert!(v.set_address(&mut u, false, new.into()));
        assert!(!v.set_address(&mut u, true, IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let s = SlicedPacket::from_ip(&u).unwrap();
        let TransportSlice::Udp(t) = s.transport.unwrap() else {
            panic!()
        };
        let want = t
            .to_header()
            .calc_checksum_ipv6_raw(new.octets(), b6.octets(), t.payload())
            .unwrap();
        assert_eq!(t.checksum(), want);
    }

    #[test]
    fn refusals() {
        let p = syn4();
        let v = IpView::parse(&p).unwrap();
        let mut out = Vec::new();
        assert!(refusal(&mut out, &p, &v));
        {
            let s = SlicedPacket::from_ip(&out).unwrap();
            let TransportSlice::Tcp(t) = s.transport.unwrap() else {
                panic!()
            };
            assert!(t.rst() && t.ack());
            assert_eq!(t.acknowledgment_number(), 1001);
            assert_eq!((t.source_port(), t.destination_port()), (80, 40000));
        }
        let r = IpView::parse(&out).unwrap();
        assert_eq!(r.src, v.dst);
        assert_eq!(r.dst, v.src);
        // A RST is not answered.
        assert!(!refusal(&mut Vec::new(), &out, &r));

        let mut u = Vec::new();
        PacketBuilder::ipv4([100, 127, 255, 1], [10, 0, 0, 1], 64)
            .udp(5000, 53)
            .write(&mut u, b"q")
            .unwrap();
        let v = IpView::parse(&u).unwrap();
        assert!(refusal(&mut out, &u, &v));
        {
            let s = SlicedPacket::from_ip(&out).unwrap();
            let Some(TransportSlice::Icmpv4(i)) = s.transport else {
                panic!()
            };
            assert_eq!((i.type_u8(), i.code_u8()), (3, 13));
        }
        // An ICMP error is never answered.
        let e = IpView::parse(&out).unwrap();
        assert!(!refusal(&mut Vec::new(), &out, &e));
    }

    #[test]
    fn junk_never_panics() {
        let p = syn4();
        for n in 0..p.len() {
            if let Some(mut v) = IpView::parse(&p[..n]) {
                let mut q = p[..n].to_vec();
                v.set_address(&mut q, true, IpAddr::V4(Ipv4Addr::BROADCAST));
                refusal(&mut Vec::new(), &q, &v);
            }
        }
        assert!(IpView::parse(&[0x45, 0, 0]).is_none());
    }

    /// ICMP errors from beyond the exit quote the circuit's inner address (the kernel's NAT
    /// rewrote the quote to it); the gateway gives the client its own address back in the quote
    /// with every checksum right: the bytes equal an error built for the client directly.
    #[test]
    fn icmp_errors_from_beyond_quote_the_clients_address() {
        use crate::budget::MemoryBudget;
        use crate::exit::gateway::{ExitGateway, Outbound, CLIENT_V4, CLIENT_V6};
        use crate::exit::policy::ExitPolicy;
        use crate::time::Instant;
        use etherparse::icmpv4::DestUnreachableHeader;
        let nets = [
            "198.19.250.0/24".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ];
        let mut g = ExitGateway::new(
            ExitPolicy::new(&[53, 80], &nets),
            MemoryBudget::new(1 << 20),
        );
        let mut reply = Vec::new();
        let (web, router) = ([198, 19, 250, 2], [198, 19, 250, 1]);
        let icmp4 = |from: [u8; 4], to: Ipv4Addr, quote: &[u8]| {
            let mut e = Vec::new();
            PacketBuilder::ipv4(from, to.octets(), 60)
                .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                    DestUnreachableHeader::Port,
                ))
                .write(&mut e, quote)
                .unwrap();
            e
        };
        // UDP, the whole packet quoted (so its UDP checksum too), and TCP with only the 8
        // transport bytes RFC 792 asks for (no TCP checksum in the quote).
        let mut udp = Vec::new();
        PacketBuilder::ipv4(CLIENT_V4.octets(), web, 9)
            .udp(5000, 53)
            .write(&mut udp, b"query")
            .unwrap();
        let mut tcp = Vec::new();
        PacketBuilder::ipv4(CLIENT_V4.octets(), web, 9)
            .tcp(40000, 80, 1, 1000)
            .syn()
            .write(&mut tcp, b"")
            .unwrap();
        for (slot, sent, quoted) in [(7, udp, 28 + 5), (8, tcp, 28)] {
            let mut out = sent.clone();
            let now = Instant::from_unix_ms(0);
            assert_eq!(
                g.on_circuit_packet(now, slot, &mut out, &mut reply),
                Outbound::Forward
            );
            let IpAddr::V4(inner) = IpView::parse(&out).unwrap().src else {
                panic!()
            };
            // What the client would have sent with the exit's TTL: what the quote must show.
            let mut as_client = sent.clone();
            let v = IpView::parse(&as_client).unwrap();
            v.reset_ttl(&mut as_client);
            let mut error = icmp4(router, inner, &out[..quoted]);
            assert_eq!(g.on_tun_packet(&mut error), Some(slot));
            assert_eq!(error, icmp4(router, CLIENT_V4, &as_client[..quoted]));
        }
        // IPv6: ICMPv6 "port unreachable", whose checksum covers the addresses too.
        let dst: Ipv6Addr = "2001:db8::53".parse().unwrap();
        let router6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let mut sent = Vec::new();
        PacketBuilder::ipv6(CLIENT_V6.octets(), dst.octets(), 9)
            .udp(5000, 53)
            .write(&mut sent, b"query")
            .unwrap();
        let mut out = sent.clone();
        let now = Instant::from_unix_ms(0);
        assert_eq!(
            g.on_circuit_packet(now, 9, &mut out, &mut reply),
            Outbound::Forward
        );
        let IpAddr::V6(inner) = IpView::parse(&out).unwrap().src else {
            panic!()
        };
        let mut as_client = sent.clone();
        IpView::parse(&as_client).unwrap().reset_ttl(&mut as_client);
        let icmp6 = |to: Ipv6Addr, quote: &[u8]| {
            let mut e = Vec::new();
            crate::flow::reply::icmp_error(&mut e, &router6.octets(), &to.octets(), 1, 4, 0, quote);
            e
        };
        let mut error = icmp6(inner, &out);
        assert_eq!(g.on_tun_packet(&mut error), Some(9));
        assert_eq!(error, icmp6(CLIENT_V6, &as_client));
        // Not an error (an echo reply), or a quote from another address: only the destination.
        let mut echo = icmp4(router, Ipv4Addr::from(web), &[0; 8]);
        echo[20] = 0;
        let v = IpView::parse(&echo).unwrap();
        assert!(!rewrite_quoted_source(
            &mut echo,
            &v,
            IpAddr::V4(Ipv4Addr::from(web)),
            IpAddr::V4(CLIENT_V4)
        ));
        let mut elsewhere = Vec::new();
        PacketBuilder::ipv4(web, [192, 0, 2, 1], 9)
            .udp(5000, 53)
            .write(&mut elsewhere, b"")
            .unwrap();
        let mut other = icmp4(router, CLIENT_V4, &elsewhere);
        let v = IpView::parse(&other).unwrap();
        assert!(!rewrite_quoted_source(
            &mut other,
            &v,
            IpAddr::V4(CLIENT_V4),
            IpAddr::V4(Ipv4Addr::from(web))
        ));
    }
}
