//! EXIT_SESSION / EXIT_SESSION_ACK payloads (protocol.md 7.4): the parsers and the exit's
//! gateway, on one circuit and then another. Any bytes are answered, refused or dropped, never a
//! panic.
#![no_main]
use globalnet::budget::MemoryBudget;
use globalnet::exit::gateway::ExitGateway;
use globalnet::exit::policy::ExitPolicy;
use globalnet::exit::session::{SessionAck, SessionRequest};
use globalnet::time::Instant;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = SessionRequest::parse(data);
    let _ = SessionAck::parse(data);
    let mut g = ExitGateway::new(ExitPolicy::new(&[80], &[]), MemoryBudget::new(1 << 16));
    for slot in 1..4u64 {
        let _ = g.on_session(Instant::ZERO, slot, &[slot as u8; 32], data);
        g.on_circuit_closed(Instant::ZERO, slot);
    }
    g.expire(Instant::from_unix_ms(1 << 40));
});
