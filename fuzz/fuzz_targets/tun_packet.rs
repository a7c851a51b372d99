//! The flow layer on packets from the TUN (any local program) and from sessions (any peer):
//! classification, flow tracking, address rewriting, refusals and ICMPv6 replies. The first byte
//! picks the side and whether to plant the node's own address (so the fuzzer reaches the flow
//! table and the rewriting, not only the early checks); a second packet runs on the same state.
#![no_main]
use globalnet::budget::MemoryBudget;
use globalnet::flow::{FlowConfig, FlowLayer, Policy, SessionVerdict, TunVerdict};
use libfuzzer_sys::fuzz_target;

const SEED: [u8; 32] = [7; 32];

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let own = globalnet::crypto::address_of(
        &ed25519_dalek::SigningKey::from_bytes(&SEED)
            .verifying_key()
            .to_bytes(),
    );
    let mut flow = FlowLayer::new(
        FlowConfig {
            address: own,
            client_seed: zeroize::Zeroizing::new(SEED),
            real_identity_for: Vec::new(),
            policy: Policy::new(&[22, 80], &[53]),
        },
        MemoryBudget::new(1 << 20),
    );
    let (a, b) = rest.split_at(rest.len() / 2);
    let mut out = Vec::new();
    for (i, part) in [a, b].into_iter().enumerate() {
        let mut pkt = part.to_vec();
        let tun_side = (ctl >> i) & 1 == 0;
        if tun_side {
            if ctl & 4 != 0 {
                if let Some(s) = pkt.get_mut(8..24) {
                    s.copy_from_slice(&own.octets());
                }
            }
            match flow.on_tun_packet(globalnet::time::Instant::from_unix_ms(1000), &mut pkt, &mut out) {
                TunVerdict::Reply(_) => assert!(out.len() <= 1280),
                TunVerdict::Send { .. } => {
                    assert!(pkt.len() <= 1280);
                    let _ = flow.on_send_failed(&pkt, &mut out);
                    assert!(out.len() <= 1280);
                }
                TunVerdict::Drop(_) => {}
            }
        } else {
            if ctl & 8 != 0 {
                if let Some(s) = pkt.get_mut(24..40) {
                    s.copy_from_slice(&own.octets());
                }
            }
            if let SessionVerdict::Refuse { .. } = flow.on_session_packet(globalnet::time::Instant::from_unix_ms(1000), &mut pkt, &mut out)
            {
                assert!(out.len() <= 1280);
            }
        }
    }
    let dst: [u8; 16] = a.get(24..40).and_then(|s| s.try_into().ok()).unwrap_or([0xfd; 16]);
    flow.on_unreachable(&dst, &mut out, |r| assert!(r.len() <= 1280));
    flow.sweep(globalnet::time::Instant::from_unix_ms(1_000_000_000));
});
