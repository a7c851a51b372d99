//! EXIT_PACKET payloads (protocol.md 7.3) at both ends: the exit's gateway (policy, rewrite,
//! refusal) and its answers from gnx0 (with ICMP errors' quotes), and the client's filters. Any bytes are forwarded,
//! refused, dropped or accepted, never a panic.
#![no_main]
use globalnet::budget::MemoryBudget;
use globalnet::exit::client::{accept_from_exit, for_exit};
use globalnet::exit::gateway::{ExitGateway, CLIENT_V4, CLIENT_V6};
use globalnet::exit::packet::{rewrite_quoted_source, IpView};
use globalnet::exit::policy::ExitPolicy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut g = ExitGateway::new(
        ExitPolicy::new(&[80, 443], &["198.19.250.0/24".parse().unwrap()]),
        MemoryBudget::new(1 << 20),
    );
    let mut p = data.to_vec();
    let mut reply = Vec::new();
    let _ = g.on_circuit_packet(globalnet::time::Instant::ZERO, 1, &mut p, &mut reply);
    let _ = g.on_tun_packet(&mut p);
    let mut q = data.to_vec();
    let _ = g.on_tun_packet(&mut q);
    // An ICMP error's quote rewritten as the gateway does (whatever quotes the destination).
    let mut r = data.to_vec();
    if let Some(v) = IpView::parse(&r) {
        let new = match v.dst {
            std::net::IpAddr::V4(_) => std::net::IpAddr::V4(CLIENT_V4),
            std::net::IpAddr::V6(_) => std::net::IpAddr::V6(CLIENT_V6),
        };
        let _ = rewrite_quoted_source(&mut r, &v, v.dst, new);
    }
    let _ = for_exit(data);
    let _ = accept_from_exit(data, 1);
});
