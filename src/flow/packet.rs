//! A checked view of the inner IPv6 packets the flow layer handles (docs/protocol.md 10.9), and
//! the in-place edits it makes to them: address rewriting with checksum fix-up, normalisation and
//! the TCP MSS clamp.
//!
//! Only the shapes 10.9 allows are accepted: a fixed IPv6 header directly followed by TCP, UDP or
//! ICMPv6 (no extension headers, no fragments), with a payload length that matches the buffer.
//! Parsing never allocates and never panics; the edits only touch bytes the parser has seen.

use super::checksum;

/// Length of the fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;
/// Length of the ICMPv6 header of error and echo messages.
pub const ICMPV6_HEADER_LEN: usize = 8;
/// Offset of the source address in the IPv6 header.
pub const SRC_OFFSET: usize = 8;
/// Offset of the destination address in the IPv6 header.
pub const DST_OFFSET: usize = 24;
/// Offset of the quoted packet in an ICMPv6 error.
pub const QUOTE_OFFSET: usize = IPV6_HEADER_LEN + ICMPV6_HEADER_LEN;
/// TCP.
pub const PROTO_TCP: u8 = 6;
/// UDP.
pub const PROTO_UDP: u8 = 17;
/// ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;
/// Hop limit of every packet the flow layer sends or writes (`INNER_HOP_LIMIT`, 10.9).
pub const INNER_HOP_LIMIT: u8 = 64;
/// The largest TCP MSS a sender may announce: the 1280-byte MTU minus IPv6 and TCP headers.
pub const MSS_CLAMP: u16 = 1220;
/// TCP FIN flag.
pub const TCP_FIN: u8 = 0x01;
/// TCP SYN flag.
pub const TCP_SYN: u8 = 0x02;
/// TCP RST flag.
pub const TCP_RST: u8 = 0x04;
/// TCP ACK flag.
pub const TCP_ACK: u8 = 0x10;
/// ICMPv6 echo request.
pub const ICMP_ECHO_REQUEST: u8 = 128;
/// ICMPv6 echo reply.
pub const ICMP_ECHO_REPLY: u8 = 129;

const TCP_MIN_HEADER: usize = 20;
const UDP_HEADER: usize = 8;
const TCP_CHECKSUM: usize = 16;
const UDP_CHECKSUM: usize = 6;
const ICMP_CHECKSUM: usize = 2;

/// Why bytes are not an acceptable inner packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketError {
    /// Not IPv6 (version nibble).
    NotIpv6,
    /// Shorter than its headers.
    Truncated,
    /// The payload length does not match the bytes.
    LengthMismatch,
    /// An extension header, a fragment, or a protocol other than TCP, UDP and ICMPv6.
    Protocol(u8),
    /// A transport header that contradicts itself (TCP data offset, UDP length).
    BadTransport,
}

/// The transport part of a packet, as far as flows and policy need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP.
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Flags byte (FIN, SYN, RST, PSH, ACK, ...); 0 when a quote cuts it off.
        flags: u8,
    },
    /// UDP.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// ICMPv6 echo request or reply.
    Echo {
        /// Request (128) or reply (129).
        request: bool,
        /// Identifier: the flow of an echo.
        id: u16,
    },
    /// An ICMPv6 error (types 0..=127): it quotes a packet at [`QUOTE_OFFSET`].
    IcmpError {
        /// Type.
        icmp_type: u8,
    },
    /// Another ICMPv6 informational message (neighbour discovery, MLD, ...).
    IcmpOther {
        /// Type.
        icmp_type: u8,
    },
}

impl Transport {
    /// The IPv6 next-header value.
    pub fn protocol(&self) -> u8 {
        match self {
            Transport::Tcp { .. } => PROTO_TCP,
            Transport::Udp { .. } => PROTO_UDP,
            _ => PROTO_ICMPV6,
        }
    }
}

/// What the flow layer knows about one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    /// Source address.
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
    /// The transport header.
    pub transport: Transport,
}

/// A flow as the local kernel sees it: the protocol, the remote address and the two ports (or the
/// echo identifier). The local address is always the node's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// TCP, UDP or ICMPv6 (echo).
    pub proto: u8,
    /// Our address (the node's own, or a hosted service's): two services may both serve one
    /// client on one port.
    pub local: [u8; 16],
    /// The peer's address.
    pub remote: [u8; 16],
    /// Our port (echo: the identifier).
    pub local_port: u16,
    /// The peer's port (echo: 1 if we sent the requests, 0 if the peer did).
    pub remote_port: u16,
}

impl Packet {
    /// The flow this packet belongs to, `outbound` if we are its source. ICMPv6 errors have no
    /// flow of their own (they belong to the flow they quote) and other ICMPv6 messages none.
    pub fn flow_key(&self, outbound: bool) -> Option<FlowKey> {
        let (remote, local) = if outbound {
            (self.dst, self.src)
        } else {
            (self.src, self.dst)
        };
        let (proto, local_port, remote_port) = match self.transport {
            Transport::Tcp { sport, dport, .. } | Transport::Udp { sport, dport } => {
                let (l, r) = if outbound {
                    (sport, dport)
                } else {
                    (dport, sport)
                };
                (self.transport.protocol(), l, r)
            }
            // Who sent the request tells two echo flows with the same identifier apart.
            Transport::Echo { id, request } => (PROTO_ICMPV6, id, u16::from(outbound == request)),
            Transport::IcmpError { .. } | Transport::IcmpOther { .. } => return None,
        };
        Some(FlowKey {
            proto,
            local,
            remote,
            local_port,
            remote_port,
        })
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn addr(b: &[u8], at: usize) -> Option<[u8; 16]> {
    b.get(at..at + 16)?.try_into().ok()
}

/// Parses a whole packet strictly: version 6, payload length equal to the bytes after the
/// header, TCP/UDP/ICMPv6 directly after it, transport header complete and consistent.
pub fn parse(pkt: &[u8]) -> Result<Packet, PacketError> {
    match pkt.first() {
        Some(b) if b >> 4 == 6 => {}
        _ => return Err(PacketError::NotIpv6),
    }
    let plen = be16(pkt, 4).ok_or(PacketError::Truncated)?;
    if pkt.len() < IPV6_HEADER_LEN {
        return Err(PacketError::Truncated);
    }
    if usize::from(plen) != pkt.len() - IPV6_HEADER_LEN {
        return Err(PacketError::LengthMismatch);
    }
    let next = *pkt.get(6).ok_or(PacketError::Truncated)?;
    let l4 = pkt.get(IPV6_HEADER_LEN..).ok_or(PacketError::Truncated)?;
    let transport = match next {
        PROTO_TCP => {
            if l4.len() < TCP_MIN_HEADER {
                return Err(PacketError::Truncated);
            }
            let data_offset = usize::from(l4.get(12).ok_or(PacketError::Truncated)? >> 4) * 4;
            if data_offset < TCP_MIN_HEADER || data_offset > l4.len() {
                return Err(PacketError::BadTransport);
            }
            tcp(l4).ok_or(PacketError::Truncated)?
        }
        PROTO_UDP => {
            let len = be16(l4, 4).ok_or(PacketError::Truncated)?;
            if l4.len() < UDP_HEADER || usize::from(len) != l4.len() {
                return Err(PacketError::BadTransport);
            }
            udp(l4).ok_or(PacketError::Truncated)?
        }
        PROTO_ICMPV6 => {
            let t = icmp(l4).ok_or(PacketError::Truncated)?;
            let need = match t {
                Transport::Echo { .. } => ICMPV6_HEADER_LEN,
                // An error must quote at least an IPv6 header.
                Transport::IcmpError { .. } => ICMPV6_HEADER_LEN + IPV6_HEADER_LEN,
                _ => 4,
            };
            if l4.len() < need {
                return Err(PacketError::Truncated);
            }
            t
        }
        other => return Err(PacketError::Protocol(other)),
    };
    Ok(Packet {
        src: addr(pkt, SRC_OFFSET).ok_or(PacketError::Truncated)?,
        dst: addr(pkt, DST_OFFSET).ok_or(PacketError::Truncated)?,
        transport,
    })
}

/// Parses the packet quoted in an ICMPv6 error: truncation is normal there, so only the IPv6
/// header and the first 8 bytes of the transport header (ports, echo identifier) are needed.
pub fn parse_quoted(error: &[u8]) -> Result<Packet, PacketError> {
    let q = error.get(QUOTE_OFFSET..).ok_or(PacketError::Truncated)?;
    match q.first() {
        Some(b) if b >> 4 == 6 => {}
        Some(_) => return Err(PacketError::NotIpv6),
        None => return Err(PacketError::Truncated),
    }
    let l4 = q.get(IPV6_HEADER_LEN..).ok_or(PacketError::Truncated)?;
    if l4.len() < 8 {
        return Err(PacketError::Truncated);
    }
    let transport = match *q.get(6).ok_or(PacketError::Truncated)? {
        PROTO_TCP => tcp(l4),
        PROTO_UDP => udp(l4),
        PROTO_ICMPV6 => icmp(l4),
        other => return Err(PacketError::Protocol(other)),
    }
    .ok_or(PacketError::Truncated)?;
    Ok(Packet {
        src: addr(q, SRC_OFFSET).ok_or(PacketError::Truncated)?,
        dst: addr(q, DST_OFFSET).ok_or(PacketError::Truncated)?,
        transport,
    })
}

fn tcp(l4: &[u8]) -> Option<Transport> {
    Some(Transport::Tcp {
        sport: be16(l4, 0)?,
        dport: be16(l4, 2)?,
        flags: l4.get(13).copied().unwrap_or(0),
    })
}

fn udp(l4: &[u8]) -> Option<Transport> {
    Some(Transport::Udp {
        sport: be16(l4, 0)?,
        dport: be16(l4, 2)?,
    })
}

fn icmp(l4: &[u8]) -> Option<Transport> {
    let t = *l4.first()?;
    Some(match t {
        ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY => Transport::Echo {
            request: t == ICMP_ECHO_REQUEST,
            id: be16(l4, 4)?,
        },
        0..=127 => Transport::IcmpError { icmp_type: t },
        _ => Transport::IcmpOther { icmp_type: t },
    })
}

/// Which address of the outer header to rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The source address (outbound: our address as the peer knows it).
    Source,
    /// The destination address (inbound: back to the kernel's view).
    Destination,
}

/// Replaces one address of a packet accepted by [`parse`] and keeps it valid: the TCP/UDP
/// checksum is updated incrementally; in an ICMPv6 error the quoted packet's opposite address
/// (the same host seen from the other direction) is replaced too when it held the old address,
/// with its own checksum updated if it was quoted, and the ICMPv6 checksum is recomputed.
pub fn rewrite(pkt: &mut [u8], field: Field, new: &[u8; 16]) {
    let at = match field {
        Field::Source => SRC_OFFSET,
        Field::Destination => DST_OFFSET,
    };
    let Some(old) = addr(pkt, at) else { return };
    if &old == new {
        return;
    }
    set_addr(pkt, at, new);
    let proto = pkt.get(6).copied().unwrap_or(0);
    match proto {
        PROTO_TCP => fix(pkt, IPV6_HEADER_LEN + TCP_CHECKSUM, false, &old, new),
        PROTO_UDP => fix(pkt, IPV6_HEADER_LEN + UDP_CHECKSUM, true, &old, new),
        PROTO_ICMPV6 => {
            if matches!(
                pkt.get(IPV6_HEADER_LEN),
                Some(t) if *t < 128
            ) {
                // The quote travelled the other way: our source is its destination.
                let q_at = QUOTE_OFFSET
                    + match field {
                        Field::Source => DST_OFFSET,
                        Field::Destination => SRC_OFFSET,
                    };
                if addr(pkt, q_at) == Some(old) {
                    set_addr(pkt, q_at, new);
                    let q_l4 = QUOTE_OFFSET + IPV6_HEADER_LEN;
                    match pkt.get(QUOTE_OFFSET + 6).copied() {
                        Some(PROTO_TCP) => fix(pkt, q_l4 + TCP_CHECKSUM, false, &old, new),
                        Some(PROTO_UDP) => fix(pkt, q_l4 + UDP_CHECKSUM, true, &old, new),
                        Some(PROTO_ICMPV6) => fix(pkt, q_l4 + ICMP_CHECKSUM, false, &old, new),
                        _ => {}
                    }
                }
                recompute_icmp(pkt);
            } else {
                fix(pkt, IPV6_HEADER_LEN + ICMP_CHECKSUM, false, &old, new);
            }
        }
        _ => {}
    }
}

fn set_addr(pkt: &mut [u8], at: usize, a: &[u8; 16]) {
    if let Some(dst) = pkt.get_mut(at..at + 16) {
        dst.copy_from_slice(a);
    }
}

/// Updates the checksum at `at` (if it lies inside the buffer) for an address change.
fn fix(pkt: &mut [u8], at: usize, udp: bool, old: &[u8; 16], new: &[u8; 16]) {
    let Some(cur) = be16(pkt, at) else { return };
    // A zero UDP checksum means "none" (forbidden in IPv6; the receiver drops it): leave it so.
    if udp && cur == 0 {
        return;
    }
    let mut next = checksum::update(cur, old, new);
    if udp && next == 0 {
        next = 0xffff;
    }
    if let Some(b) = pkt.get_mut(at..at + 2) {
        b.copy_from_slice(&next.to_be_bytes());
    }
}

/// Recomputes the ICMPv6 checksum of a whole packet.
pub fn recompute_icmp(pkt: &mut [u8]) {
    let (Some(src), Some(dst)) = (addr(pkt, SRC_OFFSET), addr(pkt, DST_OFFSET)) else {
        return;
    };
    let at = IPV6_HEADER_LEN + ICMP_CHECKSUM;
    if let Some(b) = pkt.get_mut(at..at + 2) {
        b.copy_from_slice(&[0, 0]);
    }
    let Some(body) = pkt.get(IPV6_HEADER_LEN..) else {
        return;
    };
    let c = checksum::upper_layer(&src, &dst, PROTO_ICMPV6, body);
    if let Some(b) = pkt.get_mut(at..at + 2) {
        b.copy_from_slice(&c.to_be_bytes());
    }
}

/// Normalises a packet accepted by [`parse`] before it is sealed (10.9): DSCP and flow label
/// zero, hop limit [`INNER_HOP_LIMIT`], and the MSS of a TCP SYN at most [`MSS_CLAMP`]. The two
/// ECN bits stay: the ends' TCPs negotiated ECN in the open (the SYN's flags), and CE marks set by
/// the sending daemon's queue (`fq.rs`) must reach the receiver. None of the IPv6 header fields
/// is covered by a checksum; the MSS change is fixed up.
pub fn normalise(pkt: &mut [u8]) {
    let ecn = pkt.get(1).map_or(0, |b| b & 0x30);
    if let Some(h) = pkt.get_mut(..4) {
        h.copy_from_slice(&[0x60, ecn, 0, 0]);
    }
    if let Some(h) = pkt.get_mut(7) {
        *h = INNER_HOP_LIMIT;
    }
    if pkt.get(6) == Some(&PROTO_TCP) {
        clamp_mss(pkt);
    }
}

/// Lowers the MSS option of a TCP SYN to [`MSS_CLAMP`], updating the checksum. Malformed option
/// lists are left alone (the receiving kernel judges them).
fn clamp_mss(pkt: &mut [u8]) {
    let l4 = IPV6_HEADER_LEN;
    let Some(&flags) = pkt.get(l4 + 13) else {
        return;
    };
    if flags & TCP_SYN == 0 {
        return;
    }
    let data_offset = pkt.get(l4 + 12).map_or(0, |b| usize::from(b >> 4) * 4);
    let end = l4 + data_offset;
    let mut at = l4 + TCP_MIN_HEADER;
    while at < end {
        let Some(&kind) = pkt.get(at) else { return };
        match kind {
            0 => return,
            1 => at += 1,
            _ => {
                let len = usize::from(*pkt.get(at + 1).unwrap_or(&0));
                if len < 2 || at + len > end {
                    return;
                }
                if kind == 2 && len == 4 {
                    let Some(mss) = be16(pkt, at + 2) else { return };
                    if mss > MSS_CLAMP {
                        set_mss(pkt, at + 2);
                    }
                    return;
                }
                at += len;
            }
        }
    }
}

/// Writes [`MSS_CLAMP`] at `at` and updates the TCP checksum over the aligned words it touches.
fn set_mss(pkt: &mut [u8], at: usize) {
    let start = at & !1;
    let Some(old) = pkt
        .get(start..start + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
    else {
        return;
    };
    if let Some(b) = pkt.get_mut(at..at + 2) {
        b.copy_from_slice(&MSS_CLAMP.to_be_bytes());
    }
    let Some(new) = pkt
        .get(start..start + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
    else {
        return;
    };
    let at_csum = IPV6_HEADER_LEN + TCP_CHECKSUM;
    if let Some(cur) = be16(pkt, at_csum) {
        let next = checksum::update(cur, &old, &new);
        if let Some(b) = pkt.get_mut(at_csum..at_csum + 2) {
            b.copy_from_slice(&next.to_be_bytes());
        }
    }
}

/// Whether the transport checksum of a packet accepted by [`parse`] is valid.
pub fn checksum_valid(pkt: &[u8]) -> bool {
    let (Some(src), Some(dst), Some(&proto), Some(body)) = (
        addr(pkt, SRC_OFFSET),
        addr(pkt, DST_OFFSET),
        pkt.get(6),
        pkt.get(IPV6_HEADER_LEN..),
    ) else {
        return false;
    };
    checksum::verify(&src, &dst, proto, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, TcpOptionElement};

    const A: [u8; 16] = [0xfd, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
    const B: [u8; 16] = [0xfd, 0x52, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const P: [u8; 16] = [0xfd, 0x99, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 0x77];

    fn tcp_syn(src: [u8; 16], dst: [u8; 16], mss: u16, payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ipv6(src, dst, 7)
            .tcp(40000, 22, 12345, 64000)
            .syn()
            .options(&[
                TcpOptionElement::Noop,
                TcpOptionElement::MaximumSegmentSize(mss),
                TcpOptionElement::SelectiveAcknowledgementPermitted,
            ])
            .unwrap();
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    fn udp(src: [u8; 16], dst: [u8; 16], payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ipv6(src, dst, 7).udp(5353, 53);
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    /// Checksums as etherparse computes them from scratch.
    fn etherparse_valid(pkt: &[u8]) -> bool {
        let p = etherparse::SlicedPacket::from_ip(pkt).unwrap();
        let ip = match p.net.unwrap() {
            etherparse::NetSlice::Ipv6(ip) => ip,
            _ => panic!(),
        };
        let (s, d) = (
            ip.header().source_addr().octets(),
            ip.header().destination_addr().octets(),
        );
        let body = &pkt[40..];
        match p.transport.unwrap() {
            etherparse::TransportSlice::Tcp(t) => {
                t.to_header()
                    .calc_checksum_ipv6(&ip.header().to_header(), t.payload())
                    .unwrap()
                    == t.checksum()
            }
            etherparse::TransportSlice::Udp(u) => {
                u.to_header()
                    .calc_checksum_ipv6(&ip.header().to_header(), u.payload())
                    .unwrap()
                    == u.checksum()
            }
            etherparse::TransportSlice::Icmpv6(i) => i.is_checksum_valid(s, d) && body.len() >= 8,
            _ => false,
        }
    }

    #[test]
    fn parse_accepts_allowed_shapes_and_refuses_others() {
        let syn = tcp_syn(A, B, 1440, b"");
        let p = parse(&syn).unwrap();
        assert_eq!(
            p.transport,
            Transport::Tcp {
                sport: 40000,
                dport: 22,
                flags: TCP_SYN
            }
        );
        assert_eq!(
            p.flow_key(true).unwrap(),
            FlowKey {
                proto: 6,
                local: A,
                remote: B,
                local_port: 40000,
                remote_port: 22
            }
        );
        // Hop-by-hop options header (0), fragment (44), SCTP (132).
        for nh in [0u8, 44, 132] {
            let mut bad = syn.clone();
            bad[6] = nh;
            assert_eq!(parse(&bad), Err(PacketError::Protocol(nh)));
        }
        let mut long = syn.clone();
        long.push(0);
        assert_eq!(parse(&long), Err(PacketError::LengthMismatch));
        let mut bad_offset = syn.clone();
        bad_offset[40 + 12] = 0xf0;
        assert_eq!(parse(&bad_offset), Err(PacketError::BadTransport));
        let mut u = udp(A, B, b"hello");
        assert!(parse(&u).is_ok());
        u[40 + 5] += 1;
        assert_eq!(parse(&u), Err(PacketError::BadTransport));
        assert_eq!(parse(&[0x45; 60]), Err(PacketError::NotIpv6));
        assert_eq!(parse(&[0x60; 20]), Err(PacketError::Truncated));
    }

    #[test]
    fn rewrite_keeps_checksums_valid() {
        for mut pkt in [
            tcp_syn(A, B, 1400, b"data"),
            udp(A, B, b"odd"),
            udp(A, B, b""),
            {
                let mut v = Vec::new();
                PacketBuilder::ipv6(A, B, 64)
                    .icmpv6_echo_request(7, 1)
                    .write(&mut v, b"ping")
                    .unwrap();
                v
            },
        ] {
            assert!(etherparse_valid(&pkt));
            rewrite(&mut pkt, Field::Source, &P);
            assert_eq!(&pkt[8..24], &P);
            assert!(etherparse_valid(&pkt), "{pkt:?}");
            assert!(checksum_valid(&pkt));
            rewrite(&mut pkt, Field::Destination, &A);
            assert!(etherparse_valid(&pkt));
        }
    }

    #[test]
    fn icmp_error_quote_follows_the_rewrite() {
        // The service answered our pseudonym's UDP packet with port unreachable; the client
        // rewrites it back to the kernel's view: outer destination and quoted source.
        let quoted = udp(P, B, b"query");
        let mut err = Vec::new();
        PacketBuilder::ipv6(B, P, 64)
            .icmpv6(etherparse::Icmpv6Type::DestinationUnreachable(
                etherparse::icmpv6::DestUnreachableCode::Port,
            ))
            .write(&mut err, &quoted)
            .unwrap();
        assert!(etherparse_valid(&err));
        rewrite(&mut err, Field::Destination, &A);
        assert_eq!(&err[24..40], &A);
        assert_eq!(&err[48 + 8..48 + 24], &A, "quoted source");
        assert!(etherparse_valid(&err));
        assert!(etherparse_valid(&err[48..]), "quoted UDP checksum");
        let q = parse_quoted(&err).unwrap();
        assert_eq!(q.flow_key(true).unwrap().remote, B);
    }

    #[test]
    fn normalise_clamps_mss_and_clears_fingerprints() {
        let mut syn = tcp_syn(A, B, 1440, b"");
        syn[1] = 0xab; // traffic class and flow label bits
        syn[3] = 0x12;
        normalise(&mut syn);
        // DSCP and flow label go; the ECN bits stay (0xab & 0x30 = 0x20: ECT(0)).
        assert_eq!(&syn[..4], &[0x60, 0x20, 0, 0]);
        assert_eq!(syn[7], 64);
        let h = etherparse::TcpHeaderSlice::from_slice(&syn[40..]).unwrap();
        let mss = h
            .options_iterator()
            .find_map(|o| match o.unwrap() {
                TcpOptionElement::MaximumSegmentSize(m) => Some(m),
                _ => None,
            })
            .unwrap();
        assert_eq!(mss, 1220);
        assert!(etherparse_valid(&syn));
        // A small MSS stays.
        let mut small = tcp_syn(A, B, 536, b"");
        normalise(&mut small);
        assert!(etherparse_valid(&small));
        assert_eq!(&small[40 + 21..40 + 25], &[2, 4, 2, 24]);
    }

    proptest::proptest! {
        #[test]
        fn parse_and_edit_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..1400)) {
            let mut b = bytes;
            let _ = parse(&b);
            let _ = parse_quoted(&b);
            rewrite(&mut b, Field::Source, &P);
            rewrite(&mut b, Field::Destination, &A);
            normalise(&mut b);
            let _ = checksum_valid(&b);
        }

        #[test]
        fn checksums_valid_after_rewrite(
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..1200),
            src in proptest::array::uniform16(proptest::num::u8::ANY),
            dst in proptest::array::uniform16(proptest::num::u8::ANY),
            new in proptest::array::uniform16(proptest::num::u8::ANY),
            mss in 0u16..=65535,
            kind in 0u8..3,
        ) {
            let mut pkt = match kind {
                0 => tcp_syn(src, dst, mss, &payload),
                1 => udp(src, dst, &payload),
                _ => {
                    let mut v = Vec::new();
                    PacketBuilder::ipv6(src, dst, 64).icmpv6_echo_reply(3, 4).write(&mut v, &payload).unwrap();
                    v
                }
            };
            proptest::prop_assert!(parse(&pkt).is_ok());
            rewrite(&mut pkt, Field::Source, &new);
            normalise(&mut pkt);
            proptest::prop_assert!(etherparse_valid(&pkt));
            rewrite(&mut pkt, Field::Destination, &src);
            proptest::prop_assert!(etherparse_valid(&pkt));
            proptest::prop_assert!(checksum_valid(&pkt));
        }
    }
}
