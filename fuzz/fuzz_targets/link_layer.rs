//! The whole link layer on hostile input: raw datagrams from strangers and decrypted frames from
//! an authenticated but malicious neighbour, interleaved with timers. Nothing may panic.
#![no_main]
use globalnet::budget::MemoryBudget;
use globalnet::crypto::Randomness;
use globalnet::link::{LinkConfig, LinkKeys, LinkLayer};
use globalnet::time::Instant;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = LinkKeys {
        identity: ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
        link: x25519_dalek::StaticSecret::from([8; 32]),
        onion_public: [9; 32],
    };
    let cfg = LinkConfig {
        advertise: vec!["198.18.0.1:7412".parse().unwrap()],
        bootstrap: vec![globalnet::link::BootstrapPeer::Addr(
            "198.18.0.2:7412".parse().unwrap(),
        )],
        ..LinkConfig::default()
    };
    let mut now = Instant::from_unix_ms(1_800_000_000_000);
    let mut l = LinkLayer::new(cfg, keys, MemoryBudget::new(1 << 20), Randomness::with_choice_seed([1; 32]), now);
    let from = "198.18.0.3:7412".parse().unwrap();
    // Input: repeated [kind u8][len u16][bytes].
    let mut rest = data;
    while rest.len() >= 3 {
        let kind = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let chunk = &rest[3..3 + len];
        rest = &rest[3 + len..];
        match kind % 3 {
            0 => l.handle_datagram(now, from, chunk),
            1 => l.fuzz_frame(now, chunk),
            _ => {
                now += 300;
                l.handle_timeout(now);
            }
        }
        while let Some(t) = l.poll_transmit() {
            assert!(t.data.len() <= 1500, "datagram larger than the underlay MTU");
            l.recycle(t.data);
        }
        while l.poll_event().is_some() {}
    }
});
