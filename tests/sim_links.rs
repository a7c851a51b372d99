//! The link layer in the in-process network (issue #4): bootstrap, peer exchange, target links,
//! dead links, loss, hostile input and the memory budget, all in virtual time.

use globalnet::link::LinkEvent;
use globalnet::node::NodeEvent;
use globalnet::sim::{sim_addr, Sim, SimConfig};
use std::collections::HashSet;

/// Relay links per node, and the set of (node, peer node) pairs.
fn graph(sim: &Sim) -> (Vec<usize>, HashSet<(usize, usize)>) {
    let mut degree = Vec::new();
    let mut edges = HashSet::new();
    for (i, n) in sim.nodes.iter().enumerate() {
        if !n.alive {
            degree.push(0);
            continue;
        }
        let mut d = 0;
        for p in n.node.link.peers(sim.now) {
            if let Some(k) = p.relay_key {
                let id: Vec<u8> = (0..32)
                    .map(|j| u8::from_str_radix(&k[2 * j..2 * j + 2], 16).unwrap())
                    .collect();
                let j = sim.node_by_identity(&id.try_into().unwrap()).unwrap();
                edges.insert((i, j));
                d += 1;
            }
        }
        degree.push(d);
    }
    (degree, edges)
}

fn network(n: usize, cfg: SimConfig, target: usize) -> Sim {
    let mut sim = Sim::new(cfg);
    sim.add_node(true, &[], target);
    for _ in 1..n {
        sim.add_node(true, &[0], target);
    }
    sim
}

#[test]
fn fifty_relays_bootstrap_and_fill_their_views() {
    let mut sim = network(50, SimConfig::default(), 6);
    sim.run_for(90_000);
    let (degree, edges) = graph(&sim);
    for (i, d) in degree.iter().enumerate() {
        assert!(*d >= 6, "node {i} has {d} relay links: {degree:?}");
    }
    // Links are symmetric: if i lists j, j lists i.
    for (i, j) in &edges {
        assert!(edges.contains(&(*j, *i)), "link {i}->{j} is one-sided");
    }
    // Views hold many relays from several sources, not just the bootstrap.
    for (i, n) in sim.nodes.iter().enumerate() {
        assert!(
            n.node.link.view().len() >= 20,
            "node {i} view {}",
            n.node.link.view().len()
        );
        assert!(
            n.node.link.view().sources() >= 3,
            "node {i} view from {} sources",
            n.node.link.view().sources()
        );
        assert!(n.node.link.own_record().is_some());
    }
    // Nobody depends on the bootstrap node: every node has its links to others (links to the
    // bootstrap stay only while they carry circuits).
    for i in 1..50 {
        let others = edges.iter().filter(|(a, b)| *a == i && *b != 0).count();
        assert!(
            others >= 5,
            "node {i} has only {others} links besides the bootstrap"
        );
    }
    // RTT was measured on every link (2 x 10 ms latency).
    for p in sim.nodes[5].node.link.peers(sim.now) {
        let rtt = p.rtt_ms.unwrap();
        assert!((19.0..=25.0).contains(&rtt), "rtt {rtt}");
    }
}

#[test]
fn same_seed_same_network() {
    let run = || {
        let mut sim = network(
            20,
            SimConfig {
                seed: 7,
                ..SimConfig::default()
            },
            4,
        );
        sim.run_for(30_000);
        graph(&sim).1
    };
    assert_eq!(run(), run());
}

#[test]
fn dead_relays_are_detected_and_replaced() {
    let mut sim = network(40, SimConfig::default(), 5);
    sim.run_for(60_000);
    // 20% of the nodes die at once (not the bootstrap).
    let dead: Vec<usize> = (1..40).step_by(5).collect();
    for &d in &dead {
        sim.kill(d);
    }
    sim.run_for(90_000);
    let (degree, edges) = graph(&sim);
    for (i, j) in &edges {
        assert!(
            !dead.contains(j),
            "node {i} still has a link to dead node {j}"
        );
    }
    for (i, d) in degree.iter().enumerate() {
        if !dead.contains(&i) {
            assert!(*d >= 5, "node {i} has {d} links after the failure");
        }
    }
    // Each survivor saw Down events for its dead neighbours.
    let downs: usize = sim
        .nodes
        .iter()
        .map(|n| {
            n.events
                .iter()
                .filter(|e| matches!(e, NodeEvent::Link(LinkEvent::Down { .. })))
                .count()
        })
        .sum();
    assert!(downs > 0);
}

#[test]
fn converges_with_loss_and_reordering() {
    let cfg = SimConfig {
        loss: 0.15,
        jitter_ms: 30,
        latency_ms: 20,
        seed: 3,
        ..SimConfig::default()
    };
    let mut sim = network(30, cfg, 4);
    sim.run_for(120_000);
    let (degree, _) = graph(&sim);
    // At 15% loss links churn (a dead neighbour is replaced); at any instant a node may be one
    // short of its target, never more, and on average above it.
    for (i, d) in degree.iter().enumerate() {
        assert!(*d >= 3, "node {i} has {d} links with 15% loss: {degree:?}");
    }
    let avg = degree.iter().sum::<usize>() as f64 / degree.len() as f64;
    assert!(avg >= 4.0, "average {avg} links with 15% loss");
    assert!(sim.lost > 0);
}

#[test]
fn clients_are_not_dialled_and_publish_nothing() {
    let mut sim = Sim::new(SimConfig::default());
    for i in 0..10 {
        sim.add_node(true, if i == 0 { &[] } else { &[0] }, 4);
    }
    let client = sim.add_node(false, &[0, 1], 3);
    sim.run_for(60_000);
    let c = &sim.nodes[client];
    assert!(c.node.link.own_record().is_none());
    assert!(c.node.link.relay_links() >= 3);
    // No relay has the client in its view or dialled it.
    for (i, n) in sim.nodes.iter().enumerate() {
        if i == client {
            continue;
        }
        assert!(n.node.link.view().get(&c.identity).is_none());
        for p in n.node.link.peers(sim.now) {
            if p.link_key == globalnet::crypto::keys::hex(&c.link_key) {
                assert!(!p.outbound, "relay {i} dialled the client");
                assert!(p.relay_key.is_none());
            }
        }
    }
}

#[test]
fn garbage_and_forgeries_do_not_hurt() {
    let mut sim = network(5, SimConfig::default(), 3);
    sim.run_for(20_000);
    let before = graph(&sim).0;
    let stranger = "203.0.113.9:4000".parse().unwrap();
    let mut rng_state = 1u64;
    for i in 0..2000u64 {
        rng_state = rng_state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let len = (rng_state >> 33) as usize % 1500;
        let mut data: Vec<u8> = (0..len)
            .map(|k| (rng_state >> (k % 56)) as u8 ^ k as u8)
            .collect();
        // Make some of them look like WireGuard or record messages.
        if let Some(b) = data.get_mut(0) {
            *b = (i % 20) as u8;
        }
        if data.len() > 4 {
            data[1] = 0;
            data[2] = 0;
            data[3] = 0;
        }
        sim.inject(stranger, (i % 5) as usize, data);
    }
    // A WireGuard initiation-sized blob and a record response nobody asked for.
    let mut init = vec![0u8; 148];
    init[0] = 1;
    sim.inject(stranger, 1, init);
    let mut resp = vec![0u8; 440];
    resp[0] = 0x12;
    resp[4] = 1;
    sim.inject(stranger, 1, resp);
    sim.run_for(20_000);
    let after = graph(&sim).0;
    assert_eq!(before, after, "links changed under garbage");
    let dropped: u64 = sim.nodes.iter().map(|n| n.node.link.stats().dropped).sum();
    assert!(dropped >= 2000, "dropped {dropped}");
}

#[test]
fn handshake_flood_stays_within_the_memory_budget() {
    use globalnet::link::LinkLayer;
    // A victim relay with a small budget, flooded by many distinct initiators (real handshakes).
    let cfg = SimConfig {
        budget: 64 * 4096,
        ..SimConfig::default()
    };
    let mut sim = Sim::new(cfg);
    let victim = sim.add_node(true, &[], 4);
    for _ in 0..200 {
        sim.add_node(false, &[victim], 1);
    }
    sim.run_for(30_000);
    let v: &LinkLayer = &sim.nodes[victim].node.link;
    let links = v.peers(sim.now).len();
    assert!(
        links <= 64,
        "victim holds {links} links with a 64-link budget"
    );
    assert!(links >= 40, "victim holds only {links} links");
    let _ = sim_addr(0);
}

/// Hundreds of nodes: 300 relays and 100 clients, one bootstrap. Prints what it measured.
#[test]
fn four_hundred_nodes() {
    let started = std::time::Instant::now();
    let mut sim = Sim::new(SimConfig {
        latency_ms: 25,
        jitter_ms: 10,
        loss: 0.02,
        seed: 11,
        ..SimConfig::default()
    });
    sim.add_node(true, &[], 8);
    for _ in 1..300 {
        sim.add_node(true, &[0], 8);
    }
    let clients: Vec<usize> = (0..100).map(|i| sim.add_node(false, &[i % 3], 3)).collect();
    sim.run_for(120_000);
    let (degree, _) = graph(&sim);
    let relays = &degree[..300];
    let min = relays.iter().min().copied().unwrap_or(0);
    let avg = relays.iter().sum::<usize>() as f64 / 300.0;
    let views: Vec<usize> = sim.nodes[..300]
        .iter()
        .map(|n| n.node.link.view().len())
        .collect();
    let view_avg = views.iter().sum::<usize>() as f64 / 300.0;
    eprintln!(
        "400 nodes, 120 s virtual in {:.1} s real: relay links min {min} avg {avg:.1}, view avg {view_avg:.0}, \
         {} datagrams delivered, {} lost",
        started.elapsed().as_secs_f64(),
        sim.delivered,
        sim.lost
    );
    for (i, d) in relays.iter().enumerate() {
        if *d < 8 {
            let n = &sim.nodes[i];
            eprintln!(
                "node {i}: {d} links, view {}, peers {}, stats {:?}",
                n.node.link.view().len(),
                n.node.link.peers(sim.now).len(),
                n.node.link.stats()
            );
        }
    }
    assert!(min >= 8, "a relay has only {min} links");
    assert!(view_avg >= 60.0, "views average {view_avg}");
    for c in clients {
        assert!(
            sim.nodes[c].node.link.relay_links() >= 3,
            "client {c} under-linked"
        );
    }
}

#[test]
fn links_follow_a_roaming_peer() {
    let mut sim = network(6, SimConfig::default(), 5);
    sim.run_for(20_000);
    let (degree, _) = graph(&sim);
    assert!(degree.iter().all(|d| *d == 5), "{degree:?}");
    let downs_before: usize = sim.nodes.iter().map(|n| n.events.len()).sum();
    let new_addr: std::net::SocketAddr = "198.19.7.7:40000".parse().unwrap();
    sim.rebind(3, new_addr);
    // Its next pings come from the new address; peers follow without dropping the link.
    sim.run_for(40_000);
    for (i, n) in sim.nodes.iter().enumerate() {
        if i == 3 {
            continue;
        }
        let key = globalnet::crypto::keys::hex(&sim.nodes[3].link_key);
        let p = n
            .node
            .link
            .peers(sim.now)
            .into_iter()
            .find(|p| p.link_key == key)
            .expect("still linked");
        assert_eq!(p.endpoint, new_addr, "node {i} did not follow the move");
    }
    let downs: usize = sim
        .nodes
        .iter()
        .map(|n| {
            n.events
                .iter()
                .filter(|e| matches!(e, NodeEvent::Link(LinkEvent::Down { .. })))
                .count()
        })
        .sum();
    assert_eq!(
        downs, 0,
        "links dropped during the move ({downs_before} events before)"
    );
}
