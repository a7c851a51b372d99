//! Checked against tun-rs's GRO (wireguard-go's algorithm, not this code) byte for byte, and
//! against the packets themselves by cutting the result again with `gso`.

use super::*;
use crate::flow::gso;
use etherparse::PacketBuilder;

const A: [u8; 16] = [0xfd, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
const B: [u8; 16] = [0xfd, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 1];

fn tcp6(sport: u16, seq: u32, psh: bool, data: &[u8]) -> Vec<u8> {
    let mut b = PacketBuilder::ipv6(A, B, 64)
        .tcp(sport, 5201, seq, 64000)
        .ack(99)
        .options(&[
            etherparse::TcpOptionElement::Noop,
            etherparse::TcpOptionElement::Noop,
            etherparse::TcpOptionElement::Timestamp(5, 6),
        ])
        .unwrap();
    if psh {
        b = b.psh();
    }
    let mut v = Vec::new();
    b.write(&mut v, data).unwrap();
    v
}

fn staged(packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
    packets
        .iter()
        .map(|p| {
            let mut b = Vec::with_capacity(2 * VNET_HDR_LEN + 16 * 1280);
            b.resize(VNET_HDR_LEN, 0xee);
            b.extend_from_slice(p);
            b
        })
        .collect()
}

/// Two interleaved bulk flows (one ending in PSH), a UDP packet and a pure ACK.
fn batch() -> Vec<Vec<u8>> {
    let d: Vec<u8> = (0..1188u32 * 8).map(|i| (i * 13 + i / 97) as u8).collect();
    let mut v = Vec::new();
    for (i, c) in d.chunks(1188).enumerate() {
        let seq = 0xffff_fa00u32.wrapping_add(1188 * (i as u32 / 2));
        v.push(tcp6(40000 + (i % 2) as u16, seq, i == 6, c));
    }
    let mut udp = Vec::new();
    PacketBuilder::ipv6(A, B, 64)
        .udp(1, 2)
        .write(&mut udp, &[1, 2, 3])
        .unwrap();
    v.insert(3, udp);
    v.push(tcp6(40002, 7, false, &[]));
    v
}

#[test]
fn same_bytes_as_tun_rs_gro() {
    let packets = batch();
    let mut ours = staged(&packets);
    let mut write = vec![false; ours.len()];
    coalesce(&mut ours, &mut write);
    let mut theirs = staged(&packets);
    tun_rs::GROTable::new()
        .apply_gro(&mut theirs, VNET_HDR_LEN, false)
        .unwrap();
    assert_eq!(
        write,
        [true, true, false, true, false, false, false, false, false, true]
    );
    for (i, w) in write.iter().enumerate() {
        if *w {
            assert_eq!(ours[i], theirs[i], "buffer {i}");
        }
    }
    assert_eq!(ours[0][1], GSO_TCPV6);
    assert_eq!(ours[3][..2], [0, 0], "the UDP packet goes as it is");
}

#[test]
fn coalesced_heads_cut_back_into_the_packets() {
    let packets = batch();
    let mut b = staged(&packets);
    let caps: Vec<usize> = b.iter().map(Vec::capacity).collect();
    let mut write = vec![false; b.len()];
    coalesce(&mut b, &mut write);
    let mut out = Vec::new();
    for (i, buf) in b.iter_mut().enumerate().filter(|(i, _)| write[*i]) {
        let r = gso::parse(buf, 1280).unwrap();
        for k in 0..r.count() {
            let mut p = Vec::with_capacity(1280);
            r.write_segment(buf, k, &mut p).unwrap();
            out.push(p);
        }
        assert_eq!(buf.capacity(), caps[i], "no buffer grew");
    }
    // The same packets, in the same order within each flow (a stable sort by flow).
    let key = |p: &Vec<u8>| {
        (
            p.get(40..42).map(<[u8]>::to_vec),
            p.get(44..48).map(<[u8]>::to_vec),
        )
    };
    let mut got_sorted = out.clone();
    got_sorted.sort_by_key(key);
    let mut want_sorted = packets.clone();
    want_sorted.sort_by_key(key);
    assert_eq!(got_sorted, want_sorted);
    assert_eq!(out.len(), packets.len());
}

#[test]
fn a_bad_checksum_goes_alone() {
    let mut packets = batch();
    let last = packets[2].len() - 1;
    packets[2][last] ^= 0x01; // flow 40000's second packet
    let mut b = staged(&packets);
    let mut write = vec![false; b.len()];
    coalesce(&mut b, &mut write);
    assert!(write[2], "the corrupted packet is written");
    assert_eq!(
        b[2][..VNET_HDR_LEN],
        [0; VNET_HDR_LEN],
        "with a plain header"
    );
    assert_eq!(b[2][VNET_HDR_LEN..], packets[2][..]);
    assert_eq!(b[1][1], GSO_TCPV6, "the other flow still coalesces");
    // The flow's first packet joined nothing (the next in sequence was the bad one).
    assert_eq!(b[0][1], 0);
}

#[test]
fn no_room_no_join() {
    let packets = batch();
    let mut b: Vec<Vec<u8>> = packets
        .iter()
        .map(|p| {
            let mut v = Vec::with_capacity(VNET_HDR_LEN + p.len());
            v.resize(VNET_HDR_LEN, 0);
            v.extend_from_slice(p);
            v
        })
        .collect();
    let mut write = vec![false; b.len()];
    coalesce(&mut b, &mut write);
    assert!(write.iter().all(|w| *w));
    for (g, p) in b.iter().zip(&packets) {
        assert_eq!(g[VNET_HDR_LEN..], p[..]);
    }
}
