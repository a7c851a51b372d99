//! Proof that the exit's packet path allocates nothing per packet in steady state: the gateway
//! (policy check, source rewrite, checksums, the circuit's buckets), answers from gnx0 back to
//! their circuit, refusals built in the reused reply buffer, and the client's filters. Run with
//! `--release -- --nocapture` for the per-packet cost.

mod alloc_counter;

use alloc_counter::allocations;

use globalnet::budget::MemoryBudget;
use globalnet::exit::client::{accept_from_exit, for_exit};
use globalnet::exit::gateway::{ExitGateway, Outbound, CLIENT_V4};
use globalnet::exit::policy::ExitPolicy;
use std::time::Instant;

fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, len: usize) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ipv4(src, dst, 64)
        .tcp(sport, dport, 1, 64000)
        .ack(1)
        .write(&mut v, &vec![0x5a; len])
        .unwrap();
    v
}

#[test]
fn exit_gateway_allocates_nothing_per_packet() {
    let mut g = ExitGateway::new(
        ExitPolicy::new(&[80, 443], &["198.19.250.0/24".parse().unwrap()]),
        MemoryBudget::new(1 << 20),
    );
    let web = [198, 19, 250, 2];
    let out = tcp(CLIENT_V4.octets(), web, 40000, 80, 1200);
    let refused = tcp(CLIENT_V4.octets(), web, 40001, 8080, 100);
    let (inner, _) = ExitGateway::inner_addresses(1);
    let back = tcp(web, inner.octets(), 80, 40000, 1200);
    let mut pkt = Vec::with_capacity(1500);
    let mut reply = Vec::with_capacity(1500);
    let mut round = |n: u64, start: u64, pkt: &mut Vec<u8>, reply: &mut Vec<u8>| {
        for i in 0..n {
            // One packet a millisecond each way: well inside a circuit's byte budget.
            let now = globalnet::time::Instant::from_unix_ms(start + i);
            pkt.clear();
            pkt.extend_from_slice(&out);
            assert_eq!(for_exit(pkt), Some(1));
            assert_eq!(g.on_circuit_packet(now, 7, pkt, reply), Outbound::Forward);
            pkt.clear();
            pkt.extend_from_slice(&back);
            assert_eq!(g.on_tun_packet(pkt), Some(7));
            assert!(accept_from_exit(pkt, 1));
            pkt.clear();
            pkt.extend_from_slice(&refused);
            assert!(matches!(
                g.on_circuit_packet(now, 7, pkt, reply),
                Outbound::Refuse(_)
            ));
        }
    };
    round(10, 0, &mut pkt, &mut reply);
    let before = allocations();
    let t = Instant::now();
    let n = 20_000;
    round(n, 10, &mut pkt, &mut reply);
    let took = t.elapsed();
    assert_eq!(allocations() - before, 0, "allocations in steady state");
    println!(
        "exit gateway: {:.0} ns per packet (out, answer, refusal; {} packets)",
        took.as_nanos() as f64 / (n as f64 * 3.0),
        n * 3
    );
}
