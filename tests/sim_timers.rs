//! Timers fire at their deadlines (issue #21 item 6): a node asks to be woken at the exact
//! instant its next timer is due, not on a fixed 250 ms tick. Checked in virtual time, where the
//! node is woken exactly when `poll_timeout` asks: a timer late here is late by design.

use globalnet::circuit::layer::{Purpose, CREATE_RETRY_MS};
use globalnet::dht::client::{DhtQuery, DHT_HEDGE_INITIAL_MS, DHT_QUERY_WAIT_MS};
use globalnet::dht::message::RecordKind;
use globalnet::link::LinkId;
use globalnet::sim::{sim_addr, Sim, SimConfig, Tap};
use globalnet::time::Instant;
use globalnet::wire::cell::CELL_LEN;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Datagrams sent, as (sender, destination, length), since the last look.
type Sent = Arc<Mutex<Vec<(usize, SocketAddr, usize)>>>;

/// Set: cells from node 0 are lost.
type Block = Arc<AtomicBool>;

fn network() -> (Sim, Sent) {
    let (sim, sent, _) = network_of(3, 0);
    (sim, sent)
}

/// `relays` relays (node 0 first, the others bootstrapped from it), each keeping `pool` pool
/// circuits, settled for 20 s.
fn network_of(relays: usize, pool: usize) -> (Sim, Sent, Block) {
    let mut sim = Sim::new(SimConfig {
        seed: 7,
        ..SimConfig::default()
    });
    sim.add_node(true, &[], 2);
    for _ in 1..relays {
        sim.add_node(true, &[0], 2);
    }
    // Without pool circuits unless asked: a link that carries circuits used to be marked in
    // use on every tick, which kept it from ever being quiet for long.
    for n in &mut sim.nodes {
        n.node.set_pool_target(pool);
    }
    let sent: Sent = Arc::default();
    let block: Block = Arc::default();
    let (s, b) = (sent.clone(), block.clone());
    sim.tap = Some(Box::new(move |i, dst, data| {
        s.lock().unwrap().push((i, dst, data.len()));
        // Cells only (the only datagrams this large): links stay up, circuits lose their cells.
        if i == 0 && data.len() >= CELL_LEN && b.load(Ordering::SeqCst) {
            Tap::Drop
        } else {
            Tap::Pass
        }
    }));
    sim.run_for(20_000);
    sent.lock().unwrap().clear();
    (sim, sent, block)
}

/// Node 0's link to node 1.
fn link_0_to_1(sim: &Sim) -> LinkId {
    let key = sim.nodes[1]
        .identity
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    sim.nodes[0]
        .node
        .link
        .peers(sim.now)
        .into_iter()
        .find(|p| p.relay_key.as_deref() == Some(key.as_str()))
        .expect("node 0 links to node 1")
        .link
}

/// A link that has been quiet both ways for over a second and then carries a cell is pinged at
/// once (the link layer's silence check, `SILENT_PING_MS`): the PING leaves in the same
/// millisecond as the cell. With the fixed tick it left at the next tick, up to 250 ms later;
/// the cell is sent just after a wake-up, so there it would be ~250 ms.
#[test]
fn a_quiet_link_that_carries_a_cell_is_pinged_at_once() {
    let (mut sim, sent) = network();
    let link = link_0_to_1(&sim);
    let (a, b) = (sim_addr(0), sim_addr(1));
    // Wait (in 1 ms steps) for a second and a half with nothing between nodes 0 and 1.
    let mut last_traffic = sim.now;
    let deadline = sim.now + 120_000;
    loop {
        sim.run_for(1);
        let between = sent
            .lock()
            .unwrap()
            .drain(..)
            .any(|(i, dst, _)| (i == 0 && dst == b) || (i == 1 && dst == a));
        if between {
            last_traffic = sim.now;
        }
        if sim.now.saturating_since(last_traffic) >= 1_500 {
            break;
        }
        assert!(
            sim.now < deadline,
            "the link between 0 and 1 never went quiet"
        );
    }
    // Just after node 0's next wake-up (on the old tick: the worst phase for it).
    let wake = sim.nodes[0].node.poll_timeout().unwrap();
    sim.run_until(wake + 1);
    sent.lock().unwrap().clear();
    let t0 = sim.now;
    let cell = vec![0u8; globalnet::wire::cell::CELL_LEN];
    sim.nodes[0].node.link.send_cell(t0, link, &cell).unwrap();
    sim.flush(0);
    let mut ping_at: Option<Instant> = None;
    for _ in 0..400 {
        let small = sent
            .lock()
            .unwrap()
            .drain(..)
            .any(|(i, dst, len)| i == 0 && dst == b && len < 200);
        if small {
            ping_at = Some(sim.now);
            break;
        }
        sim.run_for(1);
    }
    let ping_at = ping_at.expect("node 0 pinged its quiet link within 400 ms");
    let late = ping_at.saturating_since(t0);
    eprintln!("cell at {t0:?}, PING {late} ms later");
    assert!(late <= 2, "the PING left {late} ms after the cell");
}

/// The link layer of an idle relay asks to be woken about once a second (its housekeeping, and
/// its links' PINGs and PEX at their own deadlines), not on a fixed 250 ms tick. Counted over a
/// quiet minute of a settled three-relay network by following the link layer's own deadlines
/// (the whole node, upper layers too: `an_idle_relay_with_pool_circuits_wakes_about_once_a_second`).
#[test]
fn an_idle_link_layer_wakes_less_often_than_the_old_tick() {
    let (mut sim, _sent) = network();
    sim.run_for(60_000);
    let start = sim.now;
    let mut wakes = 0u64;
    let mut at = sim.nodes[0].node.link.poll_timeout().unwrap();
    while at < start + 60_000 {
        sim.run_until(at);
        wakes += 1;
        let next = sim.nodes[0].node.link.poll_timeout().unwrap();
        assert!(
            next > at,
            "the link layer asked for {next:?}, not after {at:?}"
        );
        at = next;
    }
    let per_s = wakes as f64 / 60.0;
    eprintln!("node 0's link layer: {wakes} deadlines in 60 s ({per_s:.2}/s)");
    assert!(per_s < 3.0, "{per_s:.2} deadlines per second");
}

/// Node 0 runs its next timers just now: a step started here is the worst phase for a fixed
/// 250 ms tick (its timer would be up to 250 ms late).
fn just_after_a_wake_up(sim: &mut Sim) {
    let wake = sim.nodes[0].node.poll_timeout().unwrap();
    sim.run_until(wake + 1);
}

/// Circuit layer: a CREATE that is not answered is resent `CREATE_RETRY_MS` after it was sent,
/// to the millisecond (with the 250 ms tick: 1.0–1.25 s, 1.25 s at this phase).
#[test]
fn an_unanswered_create_is_resent_at_its_deadline() {
    let (mut sim, sent, block) = network_of(3, 0);
    let link = link_0_to_1(&sim);
    let b = sim_addr(1);
    let rec = sim.nodes[0]
        .node
        .link
        .view()
        .get(&sim.nodes[1].identity)
        .cloned()
        .expect("node 0 knows node 1's record");
    just_after_a_wake_up(&mut sim);
    block.store(true, Ordering::SeqCst);
    sent.lock().unwrap().clear();
    let t0 = sim.now;
    sim.nodes[0]
        .node
        .circ
        .build(t0, Purpose::Pool, vec![rec], Some(link))
        .unwrap();
    sim.nodes[0].node.pump(t0);
    sim.flush(0);
    // Cells are the only datagrams this large (CREATE here: nothing else runs on the link).
    let mut cells: Vec<Instant> = Vec::new();
    for _ in 0..3_000 {
        let n = sent
            .lock()
            .unwrap()
            .drain(..)
            .filter(|(i, dst, len)| *i == 0 && *dst == b && *len >= CELL_LEN)
            .count();
        cells.extend(std::iter::repeat_n(sim.now, n));
        if cells.len() >= 2 {
            break;
        }
        sim.run_for(1);
    }
    assert!(cells.len() >= 2, "no CREATE resent within 3 s: {cells:?}");
    let first = cells[0].saturating_since(t0);
    let gap = cells[1].saturating_since(cells[0]);
    eprintln!("CREATE {first} ms after the build, resent {gap} ms later");
    assert!(first <= 1, "the CREATE left {first} ms after the build");
    assert!(
        (CREATE_RETRY_MS..=CREATE_RETRY_MS + 2).contains(&gap),
        "resent {gap} ms after the CREATE, not at {CREATE_RETRY_MS}"
    );
}

/// The whole node, idle (circuits, DHT, sessions, exits, the pool and the link layer): a relay
/// of a settled network that keeps its pool circuits asks to be woken about once a second, not
/// four times (the upper layers' 250 ms tick). And the links under its idle pool circuits are
/// not pinged every second (they were: marked in use on every tick, which armed the silence
/// PING): node 0 sends few small datagrams.
#[test]
fn an_idle_relay_with_pool_circuits_wakes_about_once_a_second() {
    let (mut sim, sent, _) = network_of(5, 2);
    sim.run_for(40_000);
    assert!(
        sim.nodes[0].node.circ.count(Purpose::Pool) >= 2,
        "node 0 built its pool"
    );
    sent.lock().unwrap().clear();
    let start = sim.now;
    let mut wakes = 0u64;
    let mut at = sim.nodes[0].node.poll_timeout().unwrap();
    while at < start + 60_000 {
        sim.run_until(at);
        wakes += 1;
        let next = sim.nodes[0].node.poll_timeout().unwrap();
        assert!(next > at, "node 0 asked for {next:?}, not after {at:?}");
        at = next;
    }
    let per_s = wakes as f64 / 60.0;
    let links = sim.nodes[0].node.link.peers(sim.now).len().max(1);
    let small = sent
        .lock()
        .unwrap()
        .iter()
        .filter(|(i, _, len)| *i == 0 && *len < 200)
        .count();
    let small_per_link_s = small as f64 / 60.0 / links as f64;
    eprintln!(
        "node 0: {wakes} wake-ups in 60 s ({per_s:.2}/s); {small} small datagrams on {links} links ({small_per_link_s:.2}/link/s)"
    );
    assert!(per_s < 2.0, "{per_s:.2} wake-ups per second");
    assert!(
        small_per_link_s < 0.6,
        "{small_per_link_s:.2} small datagrams per link per second"
    );
}

/// DHT client: a query whose lookup went out and got no answer gets its hedge (a second try)
/// exactly `DHT_HEDGE_INITIAL_MS` after it was sent (no query answered yet), and the try is
/// given up exactly `DHT_QUERY_WAIT_MS` after it was sent (with the 250 ms tick: up to 250 ms
/// later, 250 at the phase the test picks). Node 0 is a client with a ready DHT circuit; the
/// query is sent on it at once and every cell node 0 sends from then on is lost.
#[test]
fn an_unanswered_dht_query_is_retried_at_its_deadline() {
    let (mut sim, _sent, block) = network_of(5, 0);
    sim.nodes[0]
        .node
        .set_client_identity([0xc7; 32], Vec::new());
    sim.run_for(10_000);
    let ready = sim.nodes[0]
        .node
        .circ
        .circuits(sim.now)
        .into_iter()
        .any(|c| c.purpose == Purpose::Dht && c.ready);
    assert!(ready, "node 0 has a ready DHT circuit");
    just_after_a_wake_up(&mut sim);
    block.store(true, Ordering::SeqCst);
    let before = sim.nodes[0].node.dht_stats().retries;
    let t0 = sim.now;
    let query = DhtQuery::FindValue {
        kind: RecordKind::Descriptor,
        key: [0x5a; 32],
    };
    sim.nodes[0].node.dht_query(t0, query, false);
    sim.flush(0);
    sim.run_until(t0 + DHT_HEDGE_INITIAL_MS - 5);
    let mut hedged = None;
    for _ in 0..400 {
        if sim.nodes[0].node.dht_stats().hedges > 0 {
            hedged = Some(sim.now.saturating_since(t0));
            break;
        }
        sim.run_for(1);
    }
    let hedged = hedged.expect("the query got a hedge within 400 ms of its timeout");
    eprintln!("DHT query sent at {t0:?}, hedged {hedged} ms later");
    assert!(
        (DHT_HEDGE_INITIAL_MS..=DHT_HEDGE_INITIAL_MS + 2).contains(&hedged),
        "hedged {hedged} ms after it was sent, not at {DHT_HEDGE_INITIAL_MS}"
    );
    sim.run_until(t0 + DHT_QUERY_WAIT_MS - 5);
    let mut retried = None;
    for _ in 0..400 {
        if sim.nodes[0].node.dht_stats().retries > before {
            retried = Some(sim.now);
            break;
        }
        sim.run_for(1);
    }
    let retried = retried.expect("the query was retried within 400 ms of its deadline");
    let after = retried.saturating_since(t0);
    eprintln!("DHT query sent at {t0:?}, retried {after} ms later");
    assert!(
        (DHT_QUERY_WAIT_MS..=DHT_QUERY_WAIT_MS + 2).contains(&after),
        "retried {after} ms after it was sent, not at {DHT_QUERY_WAIT_MS}"
    );
}

/// The link layer keeps each link's deadline in an index recomputed only for the links touched
/// since the last query (`link::layer::table`), so that a relay's work per datagram does not
/// grow with its links. Every access that can move a deadline must be seen by the index: in a
/// network with NATed nodes (punches, relayed links, dials), a relay death and a restart, the
/// indexed deadline equals the one computed from every link, after every step of every node.
#[test]
fn the_indexed_link_deadline_equals_a_scan_of_every_link() {
    use globalnet::sim::NatKind;
    let mut sim = Sim::new(SimConfig {
        seed: 11,
        ..SimConfig::default()
    });
    sim.add_node(true, &[], 4);
    for _ in 1..8 {
        sim.add_node(true, &[0], 4);
    }
    // NATed relays and hosts: punched and relayed links, punches and dials under way.
    for (i, nat) in [
        NatKind::PortRestricted,
        NatKind::Symmetric,
        NatKind::AddressRestricted,
        NatKind::Symmetric,
        NatKind::FullCone,
    ]
    .into_iter()
    .enumerate()
    {
        sim.add_node_behind(i % 2 == 0, &[0, 1], 4, &[nat]);
    }
    let mut checked = 0u64;
    let mut check = |sim: &Sim| {
        for (i, n) in sim.nodes.iter().enumerate().filter(|(_, n)| n.alive) {
            assert_eq!(
                n.node.link.poll_timeout(),
                n.node.link.poll_timeout_scanning_every_link(),
                "node {i} at {:?}",
                sim.now
            );
            checked += 1;
        }
    };
    for step in 0..1_800u64 {
        // Steps of a prime number of ms, so that checks fall between and on timers.
        sim.run_for(37);
        check(&sim);
        if step == 600 {
            sim.kill(3);
        }
    }
    assert!(checked > 10_000, "{checked} checks");
}
