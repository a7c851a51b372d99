//! Circuits in the in-process network (issue #6): pools fill, 3-hop circuits carry data both ways
//! through loss and reordering, relays know only their neighbours, CREATE floods hit the limits,
//! and a dead relay takes its circuits down cleanly.

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
    eprintln!("5% loss: {built_total} circuits built, {failures} builds failed, {full}/30 nodes with a full pool");
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
