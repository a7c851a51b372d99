use super::*;
use std::collections::VecDeque;

/// A packet in these tests: (flow, sequence, enqueued at).
type P = (usize, u64, u64);

const LEN: usize = 1200;
/// The link serves one packet per millisecond (about 10 Mbit/s of 1200-byte packets).
const SERVICE_US: u64 = 1_000;

/// Serves the next packet that is sent (CoDel's drops are free: they take no link time).
fn serve(q: &mut FairQueue<P>, now: u64, ecn: bool, drops: &mut u64) -> Option<(P, Fate)> {
    loop {
        match q.dequeue(now, |_| ecn)? {
            (_, Fate::Dropped) => *drops += 1,
            x => return Some(x),
        }
    }
}

/// A standing queue: 300 packets arrive at once, then exactly as fast as the link serves them,
/// so without AQM the queue never shrinks. Returns the sojourns (µs) of the packets served in
/// the last two seconds of eight, and the drops.
fn standing_queue(ecn: bool) -> (Vec<u64>, u64, FqStats) {
    let mut q = FairQueue::new(7);
    let mut seq = 0;
    for _ in 0..300 {
        assert!(q.enqueue(3, (3, seq, 0), LEN, 0).is_none());
        seq += 1;
    }
    let mut drops = 0;
    let mut late = Vec::new();
    let mut now = 0;
    while now < 8_000_000 {
        now += SERVICE_US;
        assert!(q.enqueue(3, (3, seq, now), LEN, now).is_none());
        seq += 1;
        if let Some(((_, _, at), _)) = serve(&mut q, now, ecn, &mut drops) {
            if now >= 6_000_000 {
                late.push(now - at);
            }
        }
    }
    (late, drops, q.stats().clone())
}

#[test]
fn standing_queue_is_drained_to_target() {
    // What a FIFO (the channel the daemon had) does with the same arrivals: 300 ms, for ever.
    let mut fifo: VecDeque<u64> = (0..300).map(|_| 0).collect();
    let mut now = 0;
    let mut fifo_late = 0;
    while now < 8_000_000 {
        now += SERVICE_US;
        fifo.push_back(now);
        if let Some(at) = fifo.pop_front() {
            fifo_late = now - at;
        }
    }
    assert!(
        fifo_late >= 299_000,
        "the scenario is a standing queue: {fifo_late}"
    );

    let (late, drops, stats) = standing_queue(false);
    let worst = late.iter().copied().max().unwrap_or(u64::MAX);
    assert!(
        worst <= TARGET_US + SERVICE_US,
        "sojourn after 6 s: {worst} µs (target {TARGET_US}), {drops} drops"
    );
    // It got there by dropping the standing part, not more: about 300 packets.
    assert!((280..=310).contains(&drops), "{drops} drops");
    assert_eq!(stats.codel_drops, drops);
    assert_eq!(stats.marked, 0);
}

#[test]
fn ecn_capable_packets_are_marked_instead_of_dropped() {
    let (_, drops, stats) = standing_queue(true);
    assert_eq!(drops, 0);
    assert_eq!(stats.codel_drops, 0);
    // Marks do not shrink the queue (the test's sender ignores them), so CoDel keeps marking.
    assert!(stats.marked > 100, "{} marks", stats.marked);
}

#[test]
fn sparse_flow_is_not_delayed_behind_bulk_flow() {
    let mut q = FairQueue::new(11);
    let bulk_pkt = ipv6_tcp(40000, 5201, 0);
    let ping_pkt = ipv6_echo(7);
    let (bulk, ping) = (q.classify(&bulk_pkt), q.classify(&ping_pkt));
    assert_ne!(bulk, ping, "the salt must put the two flows on two queues");
    // Bulk arrives at twice the link's rate (an unresponsive sender: the worst case); a ping
    // every 200 ms. FIFO reference alongside, with the same limit.
    let mut fifo: VecDeque<P> = VecDeque::new();
    let (mut drops, mut seq, mut now) = (0, 0, 0);
    let (mut ping_fq, mut ping_fifo) = (Vec::new(), Vec::new());
    while now < 4_000_000 {
        now += SERVICE_US;
        for _ in 0..2 {
            q.enqueue(bulk, (bulk, seq, now), LEN, now);
            if fifo.len() < PACKET_LIMIT {
                fifo.push_back((bulk, seq, now));
            }
            seq += 1;
        }
        if now % 200_000 == 0 {
            q.enqueue(ping, (ping, seq, now), 104, now);
            fifo.push_back((ping, seq, now));
            seq += 1;
        }
        if let Some(((f, _, at), _)) = serve(&mut q, now, false, &mut drops) {
            if f == ping {
                ping_fq.push(now - at);
            }
        }
        if let Some((f, _, at)) = fifo.pop_front() {
            if f == ping {
                ping_fifo.push(now - at);
            }
        }
    }
    let worst_fifo = ping_fifo.iter().copied().max().unwrap_or(0);
    assert!(
        worst_fifo >= 100_000,
        "FIFO delays the ping: {worst_fifo} µs"
    );
    assert!(ping_fq.len() >= 19, "pings served: {}", ping_fq.len());
    let worst = ping_fq.iter().copied().max().unwrap_or(u64::MAX);
    // Served at the next turn: at most one bulk packet's time.
    assert!(
        worst <= SERVICE_US,
        "ping waited {worst} µs behind the bulk flow"
    );
}

#[test]
fn full_queue_drops_from_the_longest_flow() {
    let mut q = FairQueue::with_limit(8, 1);
    for i in 0..8 {
        assert!(q.enqueue(1, (1, i, 0), LEN, 0).is_none());
    }
    // The light flow's packet takes the bulk flow's oldest packet's place.
    assert_eq!(q.enqueue(2, (2, 100, 0), 100, 0), Some((1, 0, 0)));
    assert_eq!(q.len(), 8);
    assert_eq!(q.stats().overflow_drops, 1);
    let mut served = Vec::new();
    while let Some(((f, s, _), fate)) = q.dequeue(10, |_| false) {
        assert_eq!(fate, Fate::Send);
        served.push((f, s));
    }
    assert!(served.contains(&(2, 100)));
    // The light flow waits one quantum of the bulk flow at most; the bulk flow keeps its order.
    let at = served.iter().position(|p| *p == (2, 100));
    assert!(at.is_some_and(|i| i <= 2), "light packet served at {at:?}");
    let bulk: Vec<u64> = served.iter().filter(|p| p.0 == 1).map(|p| p.1).collect();
    assert_eq!(bulk, (1..8).collect::<Vec<u64>>());
    assert!(q.is_empty());
}

#[test]
fn flows_share_the_link_by_bytes() {
    // Two backlogged flows with 1200- and 300-byte packets get about the same bytes.
    let mut q = FairQueue::new(5);
    let mut bytes = [0u64; 2];
    for i in 0..200 {
        q.enqueue(0, (0, i, 0), 1200, 0);
        q.enqueue(1, (1, i, 0), 300, 0);
    }
    for _ in 0..100 {
        if let Some(((f, _, _), _)) = q.dequeue(1, |_| false) {
            bytes[f] += if f == 0 { 1200 } else { 300 };
        }
    }
    let (a, b) = (bytes[0] as f64, bytes[1] as f64);
    assert!((a / b - 1.0).abs() < 0.25, "{a} vs {b} bytes");
}

#[test]
fn ce_is_set_only_on_ecn_capable_ipv6() {
    let mut p = ipv6_tcp(1, 2, 0b10); // ECT(0)
    assert!(mark_ce(&mut p));
    assert_eq!((p[1] >> 4) & 0b11, 0b11);
    assert_eq!(p[0], 0x60);
    let mut p = ipv6_tcp(1, 2, 0b01); // ECT(1)
    assert!(mark_ce(&mut p));
    assert_eq!((p[1] >> 4) & 0b11, 0b11);
    let mut p = ipv6_tcp(1, 2, 0);
    let before = p.clone();
    assert!(!mark_ce(&mut p));
    assert_eq!(p, before);
    let mut v4 = vec![0x45, 0x02, 0, 20];
    assert!(!mark_ce(&mut v4));
    assert!(!mark_ce(&mut []));
}

#[test]
fn classify_separates_flows_and_takes_any_bytes() {
    let q: FairQueue<P> = FairQueue::new(99);
    let a = q.classify(&ipv6_tcp(40000, 22, 0));
    assert_eq!(a, q.classify(&ipv6_tcp(40000, 22, 0)));
    let distinct: std::collections::BTreeSet<usize> = (0..32)
        .map(|i| q.classify(&ipv6_tcp(40000 + i, 22, 0)))
        .collect();
    assert!(
        distinct.len() > 16,
        "{} queues for 32 flows",
        distinct.len()
    );
    for n in 0..64 {
        let junk: Vec<u8> = (0..n).map(|i| (i * 37 + 0x41) as u8).collect();
        assert!(q.classify(&junk) < FLOW_QUEUES);
    }
}

fn ipv6_tcp(sport: u16, dport: u16, ecn: u8) -> Vec<u8> {
    let mut p = vec![0u8; 60];
    p[0] = 0x60;
    p[1] = ecn << 4;
    p[6] = 6;
    p[8] = 0xfd;
    p[24] = 0xfd;
    p[23] = 1;
    p[39] = 2;
    p[40..42].copy_from_slice(&sport.to_be_bytes());
    p[42..44].copy_from_slice(&dport.to_be_bytes());
    p
}

fn ipv6_echo(id: u16) -> Vec<u8> {
    let mut p = vec![0u8; 104];
    p[0] = 0x60;
    p[6] = 58;
    p[8] = 0xfd;
    p[24] = 0xfd;
    p[40] = 128;
    p[44..46].copy_from_slice(&id.to_be_bytes());
    p
}
