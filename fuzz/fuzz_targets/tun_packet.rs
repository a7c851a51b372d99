//! Packets read from the TUN: classification and ICMPv6 reply construction.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    let reachable = data.first().is_some_and(|b| b & 1 == 1);
    if let globalnet::flow::Verdict::Reply(_) =
        globalnet::flow::classify_outbound(data, |_| reachable, &mut out)
    {
        assert!(out.len() <= 1280, "ICMPv6 error larger than the minimum MTU");
    }
});
