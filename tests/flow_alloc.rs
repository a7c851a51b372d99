//! Proof that the packet path allocates nothing per packet in steady state: the flow layer on
//! established flows both ways (rewrite, checksums, normalisation, table lookups), refusals, and
//! the daemon's way of moving buffers between its tasks (bounded tokio channels, buffers handed
//! back). A counting global allocator, per thread. Run with `--release -- --nocapture` for the
//! per-packet cost.

mod alloc_counter;

use alloc_counter::allocations;

use globalnet::budget::MemoryBudget;
use globalnet::flow::{FlowConfig, FlowLayer, Policy, SessionVerdict, TunVerdict};
use std::net::Ipv6Addr;
use std::time::Instant;
use zeroize::Zeroizing;

fn layer(seed: u8, tcp: &[u16]) -> (FlowLayer, [u8; 16]) {
    let seed = [seed; 32];
    let address = globalnet::crypto::address_of(
        &ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes(),
    );
    let layer = FlowLayer::new(
        FlowConfig {
            address,
            client_seed: Zeroizing::new(seed),
            real_identity_for: Vec::new(),
            policy: Policy::new(tcp, &[]),
        },
        MemoryBudget::default(),
    );
    (layer, address.octets())
}

fn tcp(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, len: usize) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ipv6(src, dst, 64)
        .tcp(sport, dport, 1, 64000)
        .ack(1)
        .write(&mut v, &vec![0x5a; len])
        .unwrap();
    v
}

#[test]
fn flow_layer_allocates_nothing_per_packet() {
    let (mut client, a) = layer(1, &[]);
    let (mut service, s) = layer(2, &[22]);
    let pseudonym = client.address_for(&s);
    let mut out = Vec::with_capacity(1280);
    let data = tcp(a, s, 40000, 22, 1180);
    let back = tcp(s, pseudonym, 22, 40000, 1180);
    let closed = tcp(pseudonym, s, 40001, 8080, 100);
    let mut pkt = data.clone();
    let mut round = |n: u32, out: &mut Vec<u8>, pkt: &mut Vec<u8>| {
        for i in 0..n {
            let now = 1_000 + u64::from(i);
            pkt.clear();
            pkt.extend_from_slice(&data);
            assert!(matches!(
                client.on_tun_packet(globalnet::time::Instant::from_unix_ms(now), pkt, out),
                TunVerdict::Send { .. }
            ));
            assert_eq!(
                service.on_session_packet(globalnet::time::Instant::from_unix_ms(now), pkt, out),
                SessionVerdict::Deliver
            );
            pkt.clear();
            pkt.extend_from_slice(&back);
            assert!(matches!(
                service.on_tun_packet(globalnet::time::Instant::from_unix_ms(now), pkt, out),
                TunVerdict::Send { .. }
            ));
            assert_eq!(
                client.on_session_packet(globalnet::time::Instant::from_unix_ms(now), pkt, out),
                SessionVerdict::Deliver
            );
            // A refusal (RST-less segment to a closed port: ICMPv6 prohibited), built in `out`.
            pkt.clear();
            pkt.extend_from_slice(&closed);
            let _ =
                service.on_session_packet(globalnet::time::Instant::from_unix_ms(now), pkt, out);
        }
    };
    // Warm-up: the flows, the pseudonym cache and the buffers exist afterwards.
    round(10, &mut out, &mut pkt);
    let before = allocations();
    let t = Instant::now();
    let n = 20_000;
    round(n, &mut out, &mut pkt);
    let took = t.elapsed();
    assert_eq!(allocations() - before, 0, "allocations in steady state");
    println!(
        "flow layer: {:.0} ns per 1240-byte packet and direction (tun->wire and wire->tun, two layers, {} packets)",
        took.as_nanos() as f64 / (f64::from(n) * 4.0),
        n * 4
    );
}

#[test]
fn buffers_through_bounded_channels_allocate_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let (to_link, mut from_tun) = tokio::sync::mpsc::channel::<Vec<u8>>(256);
        let (bufs_back, mut bufs) = tokio::sync::mpsc::channel::<Vec<u8>>(512);
        for _ in 0..8 {
            bufs_back.try_send(Vec::with_capacity(1280)).unwrap();
        }
        let mut run = |n: usize| {
            for _ in 0..n {
                // The TUN reader: a recycled buffer, filled, sent.
                let mut b = bufs.try_recv().unwrap_or_default();
                b.resize(1280, 0);
                to_link.try_send(b).unwrap();
                // The link task: takes it, hands the buffer back.
                let b = from_tun.try_recv().unwrap();
                bufs_back.try_send(b).unwrap();
            }
        };
        run(1000);
        let before = allocations();
        run(100_000);
        assert_eq!(allocations() - before, 0, "channel hand-over allocated");
    });
}

#[test]
fn pseudonym_derivation_is_cached() {
    let (mut client, _) = layer(1, &[]);
    let s: Ipv6Addr = "fd52::1".parse().unwrap();
    let first = client.address_for(&s.octets());
    let before = allocations();
    let t = Instant::now();
    for _ in 0..1000 {
        assert_eq!(client.address_for(&s.octets()), first);
    }
    assert_eq!(allocations() - before, 0);
    assert!(t.elapsed().as_millis() < 1000);
}

#[test]
fn fair_queue_allocates_nothing_per_packet() {
    use globalnet::flow::fq::{mark_ce, FairQueue, Fate};
    // The daemon's way: buffers from the TUN reader into the queue, out to the node or, when
    // CoDel drops them or the queue is full, back to the reader; a bulk flow at twice the rate
    // served (drops and overflow both happen) and a light one, ECN-capable or not.
    let mut q: FairQueue<Vec<u8>> = FairQueue::new(42);
    let mut spare: Vec<Vec<u8>> = (0..600).map(|_| Vec::with_capacity(1280)).collect();
    let bulk = tcp([0xfd; 16], [0xfd; 16], 40000, 5201, 1180);
    let mut light = tcp([0xfd; 16], [0xfd; 16], 40001, 22, 40);
    light[1] |= 0b10 << 4; // ECT(0)
    let mut now_us = 0u64;
    let mut fates = [0u64; 4];
    let mut run = |n: u64, spare: &mut Vec<Vec<u8>>, fates: &mut [u64; 4]| {
        for i in 0..n {
            now_us += 1_000;
            for p in [&bulk, &bulk, &light]
                .into_iter()
                .take(if i % 50 == 0 { 3 } else { 2 })
            {
                let mut b = spare.pop().unwrap_or_default();
                b.clear();
                b.extend_from_slice(p);
                let flow = q.classify(&b);
                let len = b.len();
                if let Some(old) = q.enqueue(flow, b, len, now_us) {
                    fates[3] += 1;
                    spare.push(old);
                }
            }
            while let Some((b, fate)) = q.dequeue(now_us, |p| mark_ce(p)) {
                spare.push(b);
                match fate {
                    Fate::Send => fates[0] += 1,
                    Fate::Marked => fates[1] += 1,
                    Fate::Dropped | Fate::Overflow => {
                        fates[2] += 1;
                        continue;
                    }
                }
                break;
            }
        }
    };
    run(2_000, &mut spare, &mut fates);
    let before = allocations();
    run(20_000, &mut spare, &mut fates);
    assert_eq!(allocations() - before, 0, "allocations in steady state");
    assert!(
        fates[2] > 0 && fates[3] > 0,
        "drops and overflow exercised: {fates:?}"
    );
}

/// The offload TUN's path (`daemon/tun_offload.rs`): a 64 KiB read cut into MTU packets in
/// recycled buffers and the writer's batch coalesced again (`flow::gro`) allocate nothing.
/// (tun-rs's GRO table, tried for the writer first, allocates a copy of every packet: counted
/// below, so that it is known when that changes.)
#[test]
fn offload_cut_allocates_nothing_and_tun_rs_gro_would() {
    use globalnet::flow::gso::{self, VNET_HDR_LEN};
    let (src, dst) = ([0xfd; 16], [0xfe; 16]);
    let mut big = Vec::new();
    etherparse::PacketBuilder::ipv6(src, dst, 64)
        .tcp(40000, 5201, 1, 64000)
        .ack(1)
        .write(&mut big, &vec![0x5a; 50 * 1208])
        .unwrap();
    let mut read_template = vec![1u8, 4]; // NEEDS_CSUM, GSO_TCPV6
    for v in [60u16, 1208, 40, 16] {
        read_template.extend_from_slice(&v.to_ne_bytes());
    }
    read_template.extend_from_slice(&big);
    let mut read = vec![0u8; VNET_HDR_LEN + 65_535];
    let mut pool: Vec<Vec<u8>> = (0..64).map(|_| Vec::with_capacity(1280)).collect();
    let mut staged: Vec<Vec<u8>> = (0..64)
        .map(|_| Vec::with_capacity(2 * VNET_HDR_LEN + 64 * 1280))
        .collect();
    let mut cut = |read: &mut Vec<u8>, staged: &mut Vec<Vec<u8>>| {
        read.clear();
        read.extend_from_slice(&read_template);
        let plan = gso::parse(read, 1280).unwrap();
        assert_eq!(plan.count(), 50);
        for (i, s) in staged.iter_mut().enumerate().take(plan.count()) {
            let mut buf = pool.pop().unwrap();
            plan.write_segment(read, i, &mut buf).unwrap();
            s.clear();
            s.resize(VNET_HDR_LEN, 0);
            s.extend_from_slice(&buf);
            pool.push(buf);
        }
    };
    cut(&mut read, &mut staged);
    let before = allocations();
    for _ in 0..100 {
        cut(&mut read, &mut staged);
    }
    assert_eq!(
        allocations() - before,
        0,
        "cutting allocated in steady state"
    );
    let mut gro = tun_rs::GROTable::new();
    gro.apply_gro(&mut staged[..50], VNET_HDR_LEN, true)
        .unwrap();
    cut(&mut read, &mut staged);
    let before = allocations();
    gro.apply_gro(&mut staged[..50], VNET_HDR_LEN, true)
        .unwrap();
    assert_eq!(staged[0][1], 4, "the packets coalesced again");
    assert!(
        allocations() - before >= 50,
        "tun-rs's GRO no longer copies each packet: the writer could coalesce with it"
    );
}
