//! Exit sessions at the gateway (protocol.md 7.4): the inner address, and so the exit's NAT
//! state, follows the session across circuits; proofs are bound to their circuit; the state is
//! bounded per circuit, per session and in time.

use super::*;
use crate::exit::session::{proof, sid_of};
use etherparse::PacketBuilder;

const WEB: [u8; 4] = [198, 19, 250, 2];

fn gw(budget: usize) -> ExitGateway {
    ExitGateway::new(
        ExitPolicy::new(&[80, 443], &["198.19.250.0/24".parse().unwrap()]),
        MemoryBudget::new(budget),
    )
}

fn t(ms: u64) -> Instant {
    Instant::from_unix_ms(ms)
}

/// A TCP segment of one connection (client port 40000 to the web server's port 80).
fn segment(syn: bool) -> Vec<u8> {
    let b = PacketBuilder::ipv4(CLIENT_V4.octets(), WEB, 9).tcp(40000, 80, 1, 1000);
    let b = if syn { b.syn() } else { b.ack(1) };
    let mut v = Vec::new();
    b.write(&mut v, b"data").unwrap();
    v
}

/// Sends a segment on circuit `slot`: the inner source it left with.
fn out(g: &mut ExitGateway, now: Instant, slot: u64, syn: bool) -> Option<IpAddr> {
    let mut p = segment(syn);
    let mut reply = Vec::new();
    (g.on_circuit_packet(now, slot, &mut p, &mut reply) == Outbound::Forward)
        .then(|| IpView::parse(&p).unwrap().src)
}

/// The web server's answer to inner address `to`: the circuit it goes back on.
fn answer(g: &mut ExitGateway, to: IpAddr) -> Option<u64> {
    let IpAddr::V4(to) = to else { panic!() };
    let mut v = Vec::new();
    PacketBuilder::ipv4(WEB, to.octets(), 64)
        .tcp(80, 40000, 1, 1000)
        .ack(2)
        .write(&mut v, b"answer")
        .unwrap();
    g.on_tun_packet(&mut v)
}

fn bind(slot: u64) -> [u8; 32] {
    [slot as u8; 32]
}

fn open(g: &mut ExitGateway, now: Instant, slot: u64, key: &[u8; 32]) -> Option<AckStatus> {
    let req = SessionRequest::open(key).to_bytes();
    g.on_session(now, slot, &bind(slot), &req).map(|a| a.status)
}

fn resume(g: &mut ExitGateway, now: Instant, slot: u64, key: &[u8; 32]) -> Option<AckStatus> {
    let req = SessionRequest::resume(key, &bind(slot)).to_bytes();
    g.on_session(now, slot, &bind(slot), &req).map(|a| a.status)
}

/// The defect of issue #23: a circuit retires under a live TCP connection. With a session the
/// next circuit sends from the same inner address, so the kernel's NAT entry still matches and
/// the answers find the new circuit; without one the connection's packets leave from another
/// address (a different connection to the server).
#[test]
fn a_new_circuit_resumes_the_session_and_keeps_the_inner_address() {
    let mut g = gw(1 << 20);
    let key = [0x11u8; 32];
    assert_eq!(open(&mut g, t(0), 7, &key), Some(AckStatus::Ok));
    let inner = out(&mut g, t(0), 7, true).unwrap();
    assert_eq!(answer(&mut g, inner), Some(7));

    // Circuit 7 retires (CIRCUIT_MAX_AGE_MS); circuit 9 is the group's next one.
    g.on_circuit_closed(t(3_600_000), 7);
    assert_eq!(
        g.stats().sessions,
        1,
        "the session lingers without a circuit"
    );
    assert_eq!(answer(&mut g, inner), None, "no circuit carries it for now");
    assert_eq!(resume(&mut g, t(3_601_000), 9, &key), Some(AckStatus::Ok));
    assert_eq!(
        out(&mut g, t(3_601_000), 9, false),
        Some(inner),
        "the connection continues from the same inner address"
    );
    assert_eq!(
        answer(&mut g, inner),
        Some(9),
        "answers follow the new circuit"
    );
    assert_eq!(g.stats().resumed, 1);

    // Without a session (as before): another circuit, another inner address.
    let other = out(&mut g, t(3_601_000), 11, false).unwrap();
    assert_ne!(other, inner);
    g.on_circuit_closed(t(3_602_000), 11);
    assert_eq!(
        answer(&mut g, other),
        None,
        "a circuit's own address dies with it"
    );
}

/// A proof is bound to its circuit's `bind`: one seen on one circuit (by the exit, the only
/// party that reads it) does not attach another, and neither does a wrong key or an unknown id.
#[test]
fn proofs_for_another_circuit_or_key_are_refused() {
    let mut g = gw(1 << 20);
    let key = [0x22u8; 32];
    assert_eq!(open(&mut g, t(0), 1, &key), Some(AckStatus::Ok));
    out(&mut g, t(0), 1, true).unwrap();
    g.on_circuit_closed(t(10), 1);
    let sid = sid_of(&key);
    // Circuit 1's proof replayed on circuit 2.
    let replay = SessionRequest::Resume {
        sid,
        proof: proof(&key, &bind(1), &sid),
    }
    .to_bytes();
    assert_eq!(
        g.on_session(t(20), 2, &bind(2), &replay).map(|a| a.status),
        Some(AckStatus::Refused)
    );
    let wrong_key = SessionRequest::Resume {
        sid,
        proof: proof(&[0x23; 32], &bind(3), &sid),
    }
    .to_bytes();
    assert_eq!(
        g.on_session(t(20), 3, &bind(3), &wrong_key)
            .map(|a| a.status),
        Some(AckStatus::Refused)
    );
    assert_eq!(
        resume(&mut g, t(20), 4, &[0x99; 32]),
        Some(AckStatus::Unknown)
    );
    // Opening an id that exists is refused (the key is not replaced).
    assert_eq!(open(&mut g, t(20), 5, &key), Some(AckStatus::Taken));
    // A refused circuit got no address; the right proof still works.
    assert_eq!(g.stats().circuits, 0);
    assert_eq!(resume(&mut g, t(30), 6, &key), Some(AckStatus::Ok));
    // A resend on the attached circuit is answered again; another session on it is not.
    assert_eq!(resume(&mut g, t(31), 6, &key), Some(AckStatus::Ok));
    assert_eq!(open(&mut g, t(31), 6, &[0x33; 32]), Some(AckStatus::Taken));
    // A circuit that already sent packets without a session keeps its own address.
    out(&mut g, t(40), 8, true).unwrap();
    assert_eq!(resume(&mut g, t(40), 8, &key), Some(AckStatus::Taken));
    // Junk.
    assert_eq!(
        g.on_session(t(50), 10, &bind(10), b"junk")
            .map(|a| a.status),
        Some(AckStatus::Refused)
    );
}

/// Bounds: tries per circuit, circuits per session, lingering, the session's lifetime, memory.
#[test]
fn session_state_is_bounded() {
    let mut g = gw(1 << 20);
    let key = [0x44u8; 32];
    for _ in 0..EXIT_SESSION_ATTACHES {
        assert_eq!(resume(&mut g, t(0), 1, &key), Some(AckStatus::Unknown));
    }
    assert_eq!(
        open(&mut g, t(0), 1, &key),
        None,
        "a circuit's tries are spent"
    );

    // Circuits per session: a fifth detaches the oldest, whose packets are dropped rather than
    // sent from another address.
    assert_eq!(open(&mut g, t(0), 2, &key), Some(AckStatus::Ok));
    let inner = out(&mut g, t(0), 2, true).unwrap();
    for slot in 3..=(2 + EXIT_SESSION_CIRCUITS as u64) {
        assert_eq!(resume(&mut g, t(0), slot, &key), Some(AckStatus::Ok));
    }
    assert_eq!(out(&mut g, t(0), 2, false), None);
    assert_eq!(out(&mut g, t(0), 3, false), Some(inner));
    assert_eq!(
        answer(&mut g, inner),
        Some(2 + EXIT_SESSION_CIRCUITS as u64)
    );

    // Lingering: kept for EXIT_SESSION_LINGER_MS after its last circuit, then freed.
    for slot in 2..=(2 + EXIT_SESSION_CIRCUITS as u64) {
        g.on_circuit_closed(t(1_000), slot);
    }
    g.expire(t(1_000 + EXIT_SESSION_LINGER_MS - 1));
    assert_eq!(g.stats().sessions, 1);
    g.expire(t(1_000 + EXIT_SESSION_LINGER_MS));
    assert_eq!(g.stats().sessions, 0);
    assert_eq!(
        resume(&mut g, t(700_000), 20, &key),
        Some(AckStatus::Unknown)
    );

    // Lifetime: no re-attach after EXIT_SESSION_MAX_AGE_MS.
    let key2 = [0x55u8; 32];
    assert_eq!(open(&mut g, t(0), 30, &key2), Some(AckStatus::Ok));
    assert_eq!(
        resume(&mut g, t(EXIT_SESSION_MAX_AGE_MS - 1), 31, &key2),
        Some(AckStatus::Ok)
    );
    assert_eq!(
        resume(&mut g, t(EXIT_SESSION_MAX_AGE_MS), 32, &key2),
        Some(AckStatus::Unknown)
    );

    // Memory: a session is charged to the budget.
    let mut small = gw(SESSION_COST - 1);
    assert_eq!(open(&mut small, t(0), 1, &key), Some(AckStatus::Full));
}
