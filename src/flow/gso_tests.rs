//! The segments are checked byte for byte against packets etherparse builds with its own
//! checksums (not this module's), and against tun-rs's GRO (wireguard-go's algorithm): what it
//! coalesces, we cut back into the same packets.

use super::*;
use etherparse::{IpHeaders, Ipv4Extensions, Ipv4Header, PacketBuilder, TcpOptionElement};

const SRC6: [u8; 16] = [0xfd, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
const DST6: [u8; 16] = [0xfd, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 1];
const SRC4: [u8; 4] = [198, 18, 0, 1];
const DST4: [u8; 4] = [198, 18, 7, 9];
const SEQ: u32 = 0xffff_f000; // wraps within the read

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[derive(Clone, Copy)]
struct Flags {
    psh: bool,
    fin: bool,
    cwr: bool,
}

fn tcp6(seq: u32, f: Flags, data: &[u8]) -> Vec<u8> {
    let mut b = PacketBuilder::ipv6(SRC6, DST6, 64)
        .tcp(40000, 22, seq, 64000)
        .ack(77)
        .options(&[
            TcpOptionElement::Noop,
            TcpOptionElement::Noop,
            TcpOptionElement::Timestamp(123, 456),
        ])
        .unwrap();
    if f.psh {
        b = b.psh();
    }
    if f.fin {
        b = b.fin();
    }
    if f.cwr {
        b = b.cwr();
    }
    let mut v = Vec::new();
    b.write(&mut v, data).unwrap();
    v
}

fn tcp4(id: u16, seq: u32, f: Flags, data: &[u8]) -> Vec<u8> {
    let mut h = Ipv4Header::new(0, 64, etherparse::IpNumber::TCP, SRC4, DST4).unwrap();
    h.identification = id;
    h.dont_fragment = true;
    let mut b = PacketBuilder::ip(IpHeaders::Ipv4(h, Ipv4Extensions::default()))
        .tcp(40000, 5201, seq, 64000)
        .ack(77);
    if f.psh {
        b = b.psh();
    }
    if f.fin {
        b = b.fin();
    }
    let mut v = Vec::new();
    b.write(&mut v, data).unwrap();
    v
}

fn udp6(data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv6(SRC6, DST6, 64)
        .udp(5353, 5201)
        .write(&mut v, data)
        .unwrap();
    v
}

/// A read as the kernel gives it: virtio-net header (host order), then the packet.
fn read_of(flags: u8, gso_type: u8, gso_size: u16, csum: (u16, u16), pkt: &[u8]) -> Vec<u8> {
    let mut r = vec![flags, gso_type];
    for v in [0u16, gso_size, csum.0, csum.1] {
        r.extend_from_slice(&v.to_ne_bytes());
    }
    r.extend_from_slice(pkt);
    r
}

/// The kernel's `CHECKSUM_PARTIAL` field: the folded pseudo-header sum, not complemented.
fn partial(pkt: &mut [u8], v6: bool, at: usize) {
    let (ip, addrs) = if v6 { (40, 8..40) } else { (20, 12..20) };
    let proto = if v6 { pkt[6] } else { pkt[9] };
    let mut sum: u64 = pkt[addrs]
        .chunks(2)
        .map(|w| u64::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    sum += u64::from(proto) + (pkt.len() - ip) as u64;
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    pkt[at..at + 2].copy_from_slice(&(sum as u16).to_be_bytes());
}

fn split(read: &mut [u8], max: usize) -> Vec<Vec<u8>> {
    let r = parse(read, max).unwrap();
    (0..r.count())
        .map(|i| {
            let mut out = Vec::with_capacity(max);
            r.write_segment(read, i, &mut out).unwrap();
            assert!(out.capacity() == max, "segment {i} grew its buffer");
            out
        })
        .collect()
}

const NONE: Flags = Flags {
    psh: false,
    fin: false,
    cwr: false,
};

#[test]
fn tcp6_super_segment_is_cut_like_the_kernel() {
    let data = payload(3 * 1188 + 500);
    let last = Flags {
        psh: true,
        fin: true,
        cwr: false,
    };
    let first = Flags { cwr: true, ..NONE };
    let mut big = tcp6(SEQ, Flags { cwr: true, ..last }, &data);
    // The kernel leaves a super-segment's checksum partial; we must not depend on it.
    partial(&mut big, true, 56);
    let mut read = read_of(F_NEEDS_CSUM, GSO_TCPV6 | GSO_ECN, 1188, (40, 16), &big);
    let got = split(&mut read, 1280);
    let want: Vec<Vec<u8>> = data
        .chunks(1188)
        .enumerate()
        .map(|(i, c)| {
            let f = match i {
                0 => first,
                3 => last,
                _ => NONE,
            };
            tcp6(SEQ.wrapping_add(1188 * i as u32), f, c)
        })
        .collect();
    assert_eq!(got.len(), 4);
    assert_eq!(got, want);
}

#[test]
fn tcp4_super_segment_counts_ids_and_header_checksums() {
    let data = payload(2 * 1000 + 1);
    let psh = Flags { psh: true, ..NONE };
    let mut big = tcp4(0xfffe, SEQ, psh, &data);
    partial(&mut big, false, 36);
    let mut read = read_of(F_NEEDS_CSUM, GSO_TCPV4, 1000, (20, 16), &big);
    let got = split(&mut read, 1280);
    let want: Vec<Vec<u8>> = data
        .chunks(1000)
        .enumerate()
        .map(|(i, c)| {
            let f = if i == 2 { psh } else { NONE };
            tcp4(
                0xfffe_u16.wrapping_add(i as u16),
                SEQ.wrapping_add(1000 * i as u32),
                f,
                c,
            )
        })
        .collect();
    assert_eq!(got, want);
}

#[test]
fn udp_super_segment_gets_lengths_and_checksums() {
    let data = payload(5 * 1200);
    let mut big = udp6(&data);
    partial(&mut big, true, 46);
    let mut read = read_of(F_NEEDS_CSUM, GSO_UDP_L4, 1200, (40, 6), &big);
    let got = split(&mut read, 1280);
    let want: Vec<Vec<u8>> = data.chunks(1200).map(udp6).collect();
    assert_eq!(got, want);
}

#[test]
fn single_packet_checksum_is_completed() {
    let data = payload(700);
    let want = tcp6(SEQ, NONE, &data);
    let mut pkt = want.clone();
    partial(&mut pkt, true, 56);
    assert_ne!(pkt, want);
    let mut read = read_of(F_NEEDS_CSUM, GSO_NONE, 0, (40, 16), &pkt);
    assert_eq!(split(&mut read, 1280), vec![want.clone()]);
    // Without the flag the packet goes as it is.
    let mut read = read_of(0, GSO_NONE, 0, (0, 0), &want);
    let r = parse(&mut read, 1280).unwrap();
    assert!(!r.is_segmented());
    assert_eq!(split(&mut read, 1280), vec![want]);
}

#[test]
fn bad_reads_are_refused() {
    let big = tcp6(SEQ, NONE, &payload(3000));
    let ok = read_of(F_NEEDS_CSUM, GSO_TCPV6, 1188, (40, 16), &big);
    let refused = |mut r: Vec<u8>, e: GsoError| assert_eq!(parse(&mut r, 1280), Err(e));
    refused(ok[..5].to_vec(), GsoError::Short);
    // Segments that do not fit the caller's buffers.
    refused(
        read_of(F_NEEDS_CSUM, GSO_TCPV6, 1300, (40, 16), &big),
        GsoError::TooLong,
    );
    refused(read_of(0, GSO_NONE, 0, (0, 0), &big), GsoError::TooLong);
    // TCPv4 offload on an IPv6 packet, and UDP offload on a TCP packet.
    refused(
        read_of(F_NEEDS_CSUM, GSO_TCPV4, 1188, (40, 16), &big),
        GsoError::Kind,
    );
    refused(
        read_of(F_NEEDS_CSUM, GSO_UDP_L4, 1188, (40, 6), &big),
        GsoError::Ip,
    );
    refused(
        read_of(F_NEEDS_CSUM, GSO_TCPV6, 0, (40, 16), &big),
        GsoError::Kind,
    );
    refused(
        read_of(F_NEEDS_CSUM, GSO_TCPV6, 1188, (44, 16), &big),
        GsoError::Ip,
    );
    let mut bad_off = ok.clone();
    bad_off[VNET_HDR_LEN + 52] = 0x40; // data offset 16 bytes
    refused(bad_off, GsoError::Transport);
    let headers_only = tcp6(SEQ, NONE, &[]);
    refused(
        read_of(F_NEEDS_CSUM, GSO_TCPV6, 1188, (40, 16), &headers_only),
        GsoError::Empty,
    );
    refused(
        read_of(F_NEEDS_CSUM, GSO_NONE, 0, (40, 2000), &big[..1000]),
        GsoError::Checksum,
    );
}

/// tun-rs's GRO (what the TUN writer uses) coalesces a flow's packets; cutting its output gives
/// the same packets back, so the two agree on headers, lengths and checksums.
#[test]
fn tun_rs_gro_output_cuts_back_into_its_input() {
    let data = payload(6 * 1188);
    let packets: Vec<Vec<u8>> = data
        .chunks(1188)
        .enumerate()
        .map(|(i, c)| {
            let f = if i == 5 {
                Flags { psh: true, ..NONE }
            } else {
                NONE
            };
            tcp6(SEQ.wrapping_add(1188 * i as u32), f, c)
        })
        .collect();
    let mut bufs: Vec<Vec<u8>> = packets
        .iter()
        .map(|p| {
            let mut b = Vec::with_capacity(16 * 1280);
            b.resize(VNET_HDR_LEN, 0);
            b.extend_from_slice(p);
            b
        })
        .collect();
    let mut gro = tun_rs::GROTable::new();
    gro.apply_gro(&mut bufs, VNET_HDR_LEN, true).unwrap();
    let written: Vec<&Vec<u8>> = bufs
        .iter()
        .filter(|b| b.len() > VNET_HDR_LEN + 1280)
        .collect();
    assert_eq!(written.len(), 1, "one coalesced packet");
    let mut read = written[0].clone();
    assert_eq!(read[1], GSO_TCPV6);
    assert_eq!(split(&mut read, 1280), packets);
}

/// A packet whose checksum is wrong (a peer's corruption the flow layer passed on) is not
/// coalesced: it goes alone with a plain header, so the kernel still checks it; coalesced ones
/// arrive as `CHECKSUM_PARTIAL`, which the kernel trusts.
#[test]
fn tun_rs_gro_leaves_a_bad_checksum_to_the_kernel() {
    let data = payload(4 * 1188);
    let mut bufs: Vec<Vec<u8>> = data
        .chunks(1188)
        .enumerate()
        .map(|(i, c)| {
            let mut b = Vec::with_capacity(16 * 1280);
            b.resize(VNET_HDR_LEN, 0);
            b.extend_from_slice(&tcp6(SEQ.wrapping_add(1188 * i as u32), NONE, c));
            b
        })
        .collect();
    let last = bufs[3].len() - 1;
    bufs[3][last] ^= 0x55;
    let corrupted = bufs[3].clone();
    let mut gro = tun_rs::GROTable::new();
    gro.apply_gro(&mut bufs, VNET_HDR_LEN, true).unwrap();
    assert_eq!(bufs[0][1], GSO_TCPV6, "the good ones coalesce");
    assert_eq!(bufs[0].len(), VNET_HDR_LEN + 40 + 32 + 3 * 1188);
    assert_eq!(
        bufs[3][..2],
        [0, GSO_NONE],
        "the bad one goes alone, unflagged"
    );
    assert_eq!(bufs[3][VNET_HDR_LEN..], corrupted[VNET_HDR_LEN..]);
}
