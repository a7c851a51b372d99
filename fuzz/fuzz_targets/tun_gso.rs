//! The offload TUN's byte paths: a read (virtio-net header and packet, any local program's bytes
//! in it) is parsed and cut without panicking, every packet fitting the MTU-sized buffer without
//! growing it; the cut packets, and the input taken as a batch of arbitrary packets (peers'
//! bytes), are coalesced for the writer without panicking or growing a buffer, and what
//! coalesced cuts back into exactly the packets that went in.
#![no_main]
use globalnet::flow::{gro, gso};
use libfuzzer_sys::fuzz_target;

const MTU: usize = 1280;
const HDR: usize = gso::VNET_HDR_LEN;

fn stage(packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
    packets
        .iter()
        .map(|p| {
            let mut b = Vec::with_capacity(2 * HDR + 8 * MTU);
            b.resize(HDR, 0);
            b.extend_from_slice(p);
            b
        })
        .collect()
}

fn coalesce_and_check(packets: &[Vec<u8>]) {
    let mut batch = stage(packets);
    let mut write = vec![false; batch.len()];
    gro::coalesce(&mut batch, &mut write);
    let mut back = Vec::new();
    for (b, w) in batch.iter_mut().zip(&write) {
        assert_eq!(b.capacity(), 2 * HDR + 8 * MTU);
        if !*w {
            continue;
        }
        let r = gso::parse(b, usize::MAX).expect("a written buffer parses");
        for i in 0..r.count() {
            let mut p = Vec::new();
            r.write_segment(b, i, &mut p).expect("and cuts");
            back.push(p);
        }
    }
    assert_eq!(back.len(), packets.len());
}

fuzz_target!(|data: &[u8]| {
    let mut read = data.to_vec();
    if let Ok(r) = gso::parse(&mut read, MTU) {
        let mut out = Vec::with_capacity(MTU);
        let count = r.count();
        assert!((1..=65_535).contains(&count));
        let mut packets = Vec::new();
        for i in 0..count {
            r.write_segment(&read, i, &mut out).expect("a parsed read cuts");
            assert!(out.len() <= MTU);
            assert_eq!(out.capacity(), MTU);
            if packets.len() < 64 {
                packets.push(out.clone());
            }
        }
        coalesce_and_check(&packets);
    }
    // The input as packets: each chunk's length is its first byte (times 8).
    let mut packets = Vec::new();
    let mut rest = data;
    while let Some((&n, tail)) = rest.split_first() {
        let (p, t) = tail.split_at((usize::from(n) * 8).min(tail.len()));
        packets.push(p.to_vec());
        rest = t;
    }
    coalesce_and_check(&packets);
});
