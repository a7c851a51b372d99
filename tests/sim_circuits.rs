//! Circuits in the in-process network (issue #6): pools fill, 3-hop circuits carry data both ways
//! through loss and reordering, relays know only their neighbours, CREATE floods hit the limits,
//! and a dead relay takes its circuits down cleanly. Issue #18: a tagged cell or a jump too far
//! closes a circuit, an off-path neighbour cannot, and builds still survive loss.

use globalnet::circuit::layer::{CircEvent, CircId, Purpose};
use globalnet::node::NodeEvent;
use globalnet::sim::{Sim, SimConfig};
use globalnet::wire::relay::RelayCommand;

fn network(n: usize, cfg: SimConfig) -> Sim {
    let mut sim = Sim::new(cfg);
    sim.add_node(true, &[], 6);
    for _ in 1..n {
        sim.add_node(true, &[0], 6);
    }
    sim
}

fn built(sim: &Sim, i: usize) -> Vec<(CircId, u64)> {
    sim.nodes[i]
        .events
        .iter()
        .filter_map(|e| match e {
            NodeEvent::Circuit(CircEvent::Built { id, build_ms }) => Some((*id, *build_ms)),
            _ => None,
        })
        .collect()
}

#[test]
fn fifty_relays_fill_their_pools() {
    let mut sim = network(50, SimConfig::default());
    sim.run_for(60_000);
    let mut relayed = 0;
    let mut builds = Vec::new();
    for (i, n) in sim.nodes.iter().enumerate() {
        assert!(
            n.node.circ.ready(Purpose::Pool) >= 2,
            "node {i} has {} ready pool circuits ({:?})",
            n.node.circ.ready(Purpose::Pool),
            n.node.path_error()
        );
        for c in n.node.circ.circuits(sim.now) {
            assert_eq!(c.hops, 3);
        }
        relayed += n.node.circ.relayed_count();
        builds.extend(built(&sim, i).into_iter().map(|(_, ms)| ms));
    }
    // Every pool circuit has three relays holding a hop of it.
    assert!(relayed >= 50 * 2 * 3, "relays carry {relayed} circuits");
    builds.sort_unstable();
    let p50 = builds[builds.len() / 2];
    let p95 = builds[builds.len() * 95 / 100];
    eprintln!(
        "build time with 10 ms one-way latency: p50 {p50} ms, p95 {p95} ms over {} builds",
        builds.len()
    );
    // Three round trips of 20 ms at least; links may need setting up first.
    assert!(p50 >= 60, "p50 {p50}");
}

fn probe_circuit(sim: &Sim, client: usize) -> CircId {
    sim.nodes[client]
        .node
        .circ
        .circuits(sim.now)
        .into_iter()
        .find(|c| c.ready)
        .map(|c| c.id)
        .expect("a ready pool circuit")
}

#[test]
fn three_hop_circuits_carry_data_both_ways_through_loss_and_reordering() {
    let cfg = SimConfig {
        loss: 0.02,
        jitter_ms: 15,
        latency_ms: 10,
        seed: 5,
        ..SimConfig::default()
    };
    let mut sim = network(50, cfg);
    sim.run_for(30_000);
    let client = 17;
    let id = probe_circuit(&sim, client);
    let before = sim.nodes[client].events.len();
    for i in 0u32..300 {
        let mut payload = vec![0u8; 1000];
        payload[..4].copy_from_slice(&i.to_be_bytes());
        payload[4..]
            .iter_mut()
            .enumerate()
            .for_each(|(k, b)| *b = (k as u32 ^ i) as u8);
        sim.nodes[client]
            .node
            .circ
            .send(id, RelayCommand::Probe, &payload)
            .unwrap();
        sim.nodes[client].node.pump(sim.now);
        sim.run_for(5);
    }
    sim.run_for(5_000);
    let mut seen = std::collections::HashSet::new();
    for e in &sim.nodes[client].events[before..] {
        if let NodeEvent::Circuit(CircEvent::Message {
            id: got,
            cmd,
            payload,
        }) = e
        {
            assert_eq!(*got, id);
            assert_eq!(*cmd, RelayCommand::ProbeReply as u8);
            assert_eq!(payload.len(), 1000);
            let i = u32::from_be_bytes(payload[..4].try_into().unwrap());
            for (k, b) in payload[4..].iter().enumerate() {
                assert_eq!(*b, (k as u32 ^ i) as u8, "payload {i} corrupted");
            }
            assert!(seen.insert(i), "reply {i} delivered twice");
        }
    }
    // 6 datagrams per round trip at 2% loss: about 89% expected.
    assert!(
        seen.len() >= 240,
        "only {} of 300 echoes came back",
        seen.len()
    );
    assert!(seen.len() < 300 || sim.lost > 0);
}

#[test]
fn relays_know_only_their_neighbours() {
    let mut sim = network(20, SimConfig::default());
    sim.run_for(40_000);
    // For every relayed circuit, the two links it joins are the only links its state names, and a
    // relay never holds more than one upstream and one downstream link per circuit.
    for n in &sim.nodes {
        for (up, down) in n.node.circ.relayed_neighbours() {
            assert!(n.node.link.identity_of(up).is_some() || n.node.link.peer_key(up).is_some());
            if let Some(d) = down {
                assert_ne!(up, d, "a circuit looped back on one link");
                assert!(
                    n.node.link.identity_of(d).is_some(),
                    "downstream of a circuit is always a relay"
                );
            }
        }
    }
    eprintln!(
        "relay state per circuit: about {} bytes",
        globalnet::circuit::layer::relay_state_bytes()
    );
    assert!(globalnet::circuit::layer::relay_state_bytes() < 1024);
}

#[test]
fn create_flood_hits_the_limits() {
    let mut sim = network(6, SimConfig::default());
    sim.run_for(20_000);
    let attacker = 5;
    let victim_rec = sim.nodes[0].node.link.own_record().unwrap().clone();
    sim.nodes[attacker].node.set_pool_target(0);
    let first = sim.nodes[attacker].node.link.link_to(victim_rec.identity());
    let relayed_before = sim.nodes[0].node.circ.relayed_count();
    // 2000 one-hop circuits at once through the victim.
    for _ in 0..2000 {
        let _ = sim.nodes[attacker].node.circ.build(
            sim.now,
            Purpose::Probe,
            vec![victim_rec.clone()],
            first,
        );
    }
    let now = sim.now;
    sim.nodes[attacker].node.pump(now);
    sim.run_for(2_000);
    let v = &sim.nodes[0].node.circ;
    let accepted = v.relayed_count() - relayed_before;
    eprintln!(
        "CREATE flood: {accepted} accepted, {} refused",
        v.stats().creates_refused
    );
    assert!(
        accepted <= 100 + 2 * 20 + 5,
        "{accepted} circuits accepted from one link in 2 s"
    );
    assert!(v.stats().creates_refused >= 1800);
}

#[test]
fn a_dead_relay_closes_the_circuits_through_it() {
    let mut sim = network(12, SimConfig::default());
    sim.run_for(40_000);
    let victim = 4;
    let carried = sim.nodes[victim].node.circ.relayed_count();
    assert!(carried > 0, "pick a relay that carries circuits");
    sim.kill(victim);
    sim.run_for(60_000);
    let closed: usize = sim
        .nodes
        .iter()
        .map(|n| {
            n.events
                .iter()
                .filter(|e| matches!(e, NodeEvent::Circuit(CircEvent::Closed { .. })))
                .count()
        })
        .sum();
    assert!(closed > 0);
    // Pools were rebuilt around the dead relay.
    for (i, n) in sim.nodes.iter().enumerate() {
        if i != victim {
            assert!(
                n.node.circ.ready(Purpose::Pool) >= 2,
                "node {i} did not rebuild its pool"
            );
        }
    }
}

#[test]
fn builds_survive_five_percent_loss() {
    let cfg = SimConfig {
        loss: 0.05,
        jitter_ms: 20,
        seed: 9,
        ..SimConfig::default()
    };
    let mut sim = network(30, cfg);
    sim.run_for(90_000);
    let mut failures = 0;
    let mut built_total = 0;
    let mut reasons: std::collections::BTreeMap<String, usize> = Default::default();
    for n in &sim.nodes {
        for e in &n.events {
            if let NodeEvent::Circuit(CircEvent::Closed { why, .. }) = e {
                *reasons.entry(why.clone()).or_default() += 1;
            }
        }
    }
    eprintln!("circuit closes: {reasons:?}");
    let mut full = 0;
    for (i, n) in sim.nodes.iter().enumerate() {
        // At any instant a pool circuit may be mid-rebuild; never none.
        assert!(
            n.node.circ.ready(Purpose::Pool) >= 1,
            "node {i}: no ready pool circuit ({:?})",
            n.node.path_error()
        );
        if n.node.circ.ready(Purpose::Pool) >= 2 {
            full += 1;
        }
        failures += n.node.circ.stats().build_failures;
        built_total += n.node.circ.stats().built;
    }
    let again: u64 = sim
        .nodes
        .iter()
        .map(|n| n.node.circ.stats().extended_again)
        .sum();
    let tampered: u64 = sim.nodes.iter().map(|n| n.node.circ.stats().tampered).sum();
    eprintln!("5% loss: {built_total} circuits built, {failures} builds failed, {full}/30 nodes with a full pool");
    eprintln!("EXTENDED sent again for a resent EXTEND: {again}; circuits closed on a failed check: {tampered}");
    // Loss never fails a check (6.5): no circuit is closed for tampering.
    assert_eq!(tampered, 0);
    assert!(full >= 24, "only {full} of 30 nodes have a full pool");
    // Failed builds are replaced; the pool stays usable. (The failure rate itself is reported:
    // link set-up under loss is the slow part, see the closing note of issue #6.)
    assert!(
        built_total > failures,
        "{failures} failures for {built_total} builds"
    );
    // EXTEND and EXTENDED are resent (protocol 8.4): most builds survive a lost cell.
    assert!(
        failures * 100 <= (built_total + failures) * 15,
        "{failures} failures for {built_total} builds"
    );
}

/// The ready pool circuits of node `client`.
fn pool_circuits(sim: &Sim, client: usize) -> Vec<CircId> {
    sim.nodes[client]
        .node
        .circ
        .circuits(sim.now)
        .into_iter()
        .filter(|c| c.ready && c.purpose == Purpose::Pool)
        .map(|c| c.id)
        .collect()
}

/// Sends a PROBE on our circuit `id` and runs the network a little: whether the echo came back.
fn probe_answered(sim: &mut Sim, client: usize, id: CircId) -> bool {
    let before = sim.nodes[client].events.len();
    if sim.nodes[client]
        .node
        .circ
        .send(id, RelayCommand::Probe, b"are you there")
        .is_err()
    {
        return false;
    }
    sim.nodes[client].node.pump(sim.now);
    sim.run_for(2_000);
    sim.nodes[client].events[before..].iter().any(|e| {
        matches!(e, NodeEvent::Circuit(CircEvent::Message { id: got, cmd, .. })
            if *got == id && *cmd == RelayCommand::ProbeReply as u8)
    })
}

fn closed_why(sim: &Sim, client: usize, id: CircId) -> Option<String> {
    sim.nodes[client].events.iter().find_map(|e| match e {
        NodeEvent::Circuit(CircEvent::Closed { id: got, why }) if *got == id => Some(why.clone()),
        _ => None,
    })
}

/// The guard of our circuit, as a node index.
fn guard_of(sim: &Sim, client: usize, id: CircId) -> usize {
    let path = sim.nodes[client].node.circ.path(id).unwrap();
    sim.node_by_identity(path[0].identity()).unwrap()
}

/// A RELAY cell with `circ_id` and `seq` and a body no hop can decrypt to anything.
fn garbage_cell(circ_id: u32, seq: u64, fill: u8) -> Vec<u8> {
    use globalnet::wire::cell::{Cell, CellCommand, CellHeader, CELL_LEN};
    let mut cell = [fill; CELL_LEN];
    Cell::new(&mut cell).emit_header(&CellHeader {
        circ_id,
        cmd: CellCommand::Relay,
        seq,
    });
    cell.to_vec()
}

/// Threat model 6.1 (tagging) and 6.7 (jumps): a cell modified on the first link — what a
/// tagging guard passes on — reaches the last hop, which destroys the circuit at that first
/// cell; the DESTROY reaches the client and every relay frees the circuit. A cell more than
/// MAX_SEQ_JUMP ahead is destroyed at the first hop that sees it.
#[test]
fn a_tagged_cell_or_a_jump_too_far_closes_the_circuit() {
    use globalnet::circuit::MAX_SEQ_JUMP;
    let mut sim = network(20, SimConfig::default());
    sim.run_for(30_000);
    let client = 7;
    for (k, ahead) in [(0, 0u64), (1, MAX_SEQ_JUMP + 1)] {
        let ids = pool_circuits(&sim, client);
        let id = ids[k % ids.len()];
        assert!(
            probe_answered(&mut sim, client, id),
            "case {k}: circuit {id:?} does not answer ({:?}, {:?})",
            closed_why(&sim, client, id),
            sim.nodes[client].node.circ.circuits(sim.now)
        );
        let guard = guard_of(&sim, client, id);
        let (link, circ_id) = sim.nodes[client].node.circ.first_hop_route(id).unwrap();
        let client_identity = sim.nodes[client].identity;
        let guard_route = |sim: &Sim| {
            let g = &sim.nodes[guard].node;
            let up = g.link.link_to(&client_identity);
            g.circ
                .relayed_routes()
                .into_iter()
                .any(|(r, _)| Some(r.0) == up && r.1 == circ_id)
        };
        assert!(guard_route(&sim));
        let seq = sim.nodes[client]
            .node
            .circ
            .next_forward_seq(id)
            .unwrap()
            .wrapping_add(ahead);
        let now = sim.now;
        sim.nodes[client]
            .node
            .link
            .send_cell(now, link, &garbage_cell(circ_id, seq, 0x5a))
            .unwrap();
        sim.nodes[client].node.pump(sim.now);
        sim.run_for(3_000);
        let why = closed_why(&sim, client, id).expect("the circuit was closed");
        assert!(why.contains("destroyed by the network"), "{why}");
        assert!(!guard_route(&sim), "the guard still carries the circuit");
    }
}

/// The relay closing a circuit on a failed check or a jump too far cannot be made to close an
/// honest circuit by anyone but the circuit's own neighbours: cells arrive only over WireGuard
/// links, and a circuit is found by (link, circuit id). A neighbour of the guard that is not on
/// the circuit sends garbage and far-ahead cells and DESTROY with the circuit's ids on both of
/// the guard's links: the circuit carries on.
#[test]
fn an_off_path_neighbour_cannot_close_a_circuit() {
    use globalnet::circuit::MAX_SEQ_JUMP;
    use globalnet::wire::cell::{DestroyBody, DestroyReason, CELL_LEN};
    let mut sim = network(20, SimConfig::default());
    sim.run_for(30_000);
    let client = 3;
    let id = pool_circuits(&sim, client)[0];
    assert!(probe_answered(&mut sim, client, id));
    let guard = guard_of(&sim, client, id);
    let (_, up_id) = sim.nodes[client].node.circ.first_hop_route(id).unwrap();
    let client_identity = sim.nodes[client].identity;
    let middle_identity = *sim.nodes[client].node.circ.path(id).unwrap()[1].identity();
    // the ids the guard uses for this circuit on both its links
    let g = &sim.nodes[guard].node;
    let up_link = g.link.link_to(&client_identity).unwrap();
    let down_id = g
        .circ
        .relayed_routes()
        .into_iter()
        .find(|(up, _)| *up == (up_link, up_id))
        .and_then(|(_, down)| down)
        .map(|(_, d)| d)
        .unwrap();
    assert!(g.link.link_to(&middle_identity).is_some());
    // an outsider: a neighbour of the guard that is neither the client nor the middle hop
    let outsider = (0..sim.nodes.len())
        .find(|&i| {
            i != client
                && i != guard
                && sim.nodes[i].identity != middle_identity
                && sim.nodes[i]
                    .node
                    .link
                    .link_to(&sim.nodes[guard].identity)
                    .is_some()
        })
        .expect("the guard has another neighbour");
    let o_link = sim.nodes[outsider]
        .node
        .link
        .link_to(&sim.nodes[guard].identity)
        .unwrap();
    let dropped_before = sim.nodes[guard].node.circ.stats().dropped;
    let now = sim.now;
    for cid in [up_id, down_id] {
        for (n, seq) in [0u64, 1, 2, MAX_SEQ_JUMP + 10, u64::MAX / 2]
            .into_iter()
            .enumerate()
        {
            sim.nodes[outsider]
                .node
                .link
                .send_cell(now, o_link, &garbage_cell(cid, seq, n as u8))
                .unwrap();
        }
        let mut destroy = [0u8; CELL_LEN];
        DestroyBody {
            reason: DestroyReason::Protocol,
        }
        .emit_cell(&mut destroy, cid);
        sim.nodes[outsider]
            .node
            .link
            .send_cell(now, o_link, &destroy)
            .unwrap();
    }
    sim.nodes[outsider].node.pump(sim.now);
    sim.run_for(1_000);
    assert!(sim.nodes[guard].node.circ.stats().dropped >= dropped_before + 10);
    assert_eq!(closed_why(&sim, client, id), None);
    assert!(
        probe_answered(&mut sim, client, id),
        "the circuit still works"
    );
}

/// 6.7: a burst of more than MAX_SEQ_JUMP cells lost in a row (the link from the client to its
/// guard blacked out while the client sends) closes the circuit at the guard, as a relay death
/// would; fewer is harmless.
#[test]
fn a_burst_longer_than_max_seq_jump_closes_the_circuit() {
    use globalnet::circuit::MAX_SEQ_JUMP;
    let mut sim = network(12, SimConfig::default());
    sim.run_for(30_000);
    let client = 5;
    let ids = pool_circuits(&sim, client);
    for (k, lost) in [(0usize, MAX_SEQ_JUMP - 1), (1, MAX_SEQ_JUMP)] {
        let id = ids[k % ids.len()];
        assert!(probe_answered(&mut sim, client, id));
        let guard = guard_of(&sim, client, id);
        let pair = (sim.nodes[client].addr.ip(), sim.nodes[guard].addr.ip());
        sim.blocked.push(pair);
        for _ in 0..lost {
            sim.nodes[client]
                .node
                .circ
                .send(id, RelayCommand::Drop, &[])
                .unwrap();
        }
        sim.nodes[client].node.pump(sim.now);
        sim.run_for(200);
        sim.blocked.retain(|p| *p != pair);
        // the next cell jumps by `lost + 1`
        let answered = probe_answered(&mut sim, client, id);
        if lost < MAX_SEQ_JUMP {
            assert!(answered, "{lost} lost cells closed the circuit");
            assert_eq!(closed_why(&sim, client, id), None);
        } else {
            assert!(!answered);
            let why = closed_why(&sim, client, id).expect("closed");
            assert!(why.contains("destroyed by the network"), "{why}");
        }
    }
}

/// Issue #19 item 1: under memory pressure a CREATE flood evicts circuits of the link it comes
/// over, not the longest-idle circuits (which are honest pool circuits: a flooder keeps its own
/// fresh).
#[test]
fn create_flood_under_memory_pressure_evicts_the_flooders_circuits() {
    use std::collections::HashMap;
    let mut sim = network(6, SimConfig::default());
    sim.run_for(20_000);
    let attacker = 5;
    let victim_rec = sim.nodes[0].node.link.own_record().unwrap().clone();
    sim.nodes[attacker].node.set_pool_target(0);
    let first = sim.nodes[attacker].node.link.link_to(victim_rec.identity());
    let flood_link = sim.nodes[0]
        .node
        .link
        .link_to(
            sim.nodes[attacker]
                .node
                .link
                .own_record()
                .unwrap()
                .identity(),
        )
        .unwrap();
    let per_link = |sim: &Sim| {
        let mut m: HashMap<_, usize> = HashMap::new();
        for (up, _) in sim.nodes[0].node.circ.relayed_neighbours() {
            *m.entry(up).or_default() += 1;
        }
        m
    };
    let honest_before = per_link(&sim);
    let honest_total: usize = honest_before
        .iter()
        .filter(|(l, _)| **l != flood_link)
        .map(|(_, n)| n)
        .sum();
    assert!(
        honest_total >= 3,
        "honest circuits through the victim: {honest_total}"
    );
    // Leave room for 40 more relayed circuits: the flood meets a full budget.
    let budget = sim.nodes[0].node.link.budget().clone();
    let free = budget.limit() - budget.used();
    let _hog = budget.try_charge(free - 40 * globalnet::circuit::layer::RELAY_CIRCUIT_COST);
    for _ in 0..2000 {
        let _ = sim.nodes[attacker].node.circ.build(
            sim.now,
            Purpose::Probe,
            vec![victim_rec.clone()],
            first,
        );
    }
    let now = sim.now;
    sim.nodes[attacker].node.pump(now);
    sim.run_for(10_000);
    let v = &sim.nodes[0].node.circ;
    let after = per_link(&sim);
    eprintln!(
        "CREATE flood under pressure: {} evicted, {} refused, per link before {honest_before:?} after {after:?}",
        v.stats().evicted_for_memory,
        v.stats().creates_refused
    );
    assert!(v.stats().evicted_for_memory > 0);
    for (l, n) in &honest_before {
        if *l != flood_link {
            assert!(
                after.get(l).copied().unwrap_or(0) >= *n,
                "honest circuits over {l:?} evicted: {n} before, {:?} after",
                after.get(l)
            );
        }
    }
}
