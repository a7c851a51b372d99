//! The intro-point and rendezvous-point roles (protocol.md 10.6) and the flow keys of inner
//! packets (10.8) on hostile bytes: a sequence of role messages from the data drives both
//! tables (registrations, introductions, cookies, rendezvous, closes, expiry) without a panic,
//! with every answer a defined status, and the parsers of status bodies, ESTABLISH_RENDEZVOUS
//! and flow keys never panic.
#![no_main]
use globalnet::budget::MemoryBudget;
use globalnet::link::LinkId;
use globalnet::session::flows::{addresses, flow_of, length_consistent};
use globalnet::time::Instant;
use globalnet::session::roles::{
    parse_establish_rendezvous, parse_status, IntroPointRole, IntroduceOutcome,
    RendezvousOutcome, RendezvousRole,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_status(data);
    let _ = parse_establish_rendezvous(data);
    let _ = addresses(data);
    let _ = length_consistent(data);
    for dir in [true, false] {
        let _ = flow_of(data, dir);
    }

    // Messages: op ‖ slot ‖ len ‖ body, up to the end of the data.
    let budget = MemoryBudget::new(1 << 20);
    let mut intro = IntroPointRole::new(budget.clone());
    let mut rend = RendezvousRole::new(budget.clone());
    let mut rest = data;
    let mut now = Instant::ZERO;
    while let [op, slot, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (body, after) = tail.split_at(n);
        rest = after;
        let slot = u64::from(*slot % 8);
        // Two upstream links, so the per-link accounts and caps are exercised too.
        let up = LinkId(u32::from(*len & 1));
        now += 100;
        match op % 6 {
            0 => {
                let code = intro.establish(now, slot, up, &[slot as u8; 32], body);
                assert!(code <= 6);
            }
            1 => match intro.introduce(now, slot, up, body) {
                IntroduceOutcome::Forward { service_slot } => assert!(intro.holds(service_slot)),
                IntroduceOutcome::Refuse(c) => assert!(c <= 6),
            },
            2 => assert!(rend.establish(now, slot, body) <= 6),
            3 => {
                if let RendezvousOutcome::Splice { client_slot, .. } =
                    rend.rendezvous1(now, slot, body)
                {
                    assert_ne!(client_slot, slot);
                    assert!(!rend.holds(client_slot));
                }
            }
            4 => {
                intro.closed(slot);
                rend.closed(slot);
                assert!(!intro.holds(slot) && !rend.holds(slot));
            }
            _ => {
                now += 200_000;
                rend.expire(now);
            }
        }
    }
    drop((intro, rend));
    assert_eq!(budget.used(), 0, "every charge is returned");
});
