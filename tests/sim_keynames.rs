//! Key names carry the whole service key (issue #24 item 1, docs/protocol.md 18.1): once a name
//! that carries a key resolved to an address, the client uses a descriptor for that address only
//! if it carries that key, not merely a key that hashes to the address.
//!
//! A second key with the same 120-bit address costs ~2^60 work, so the test stands in for one: a
//! test hook lets the client expect another key (`expect_colliding_key`) for the service's
//! address, exactly what it would hold after resolving the key name of a colliding key.

use globalnet::node::NodeEvent;
use globalnet::sim::{Sim, SimConfig};

const SERVICE_SEED: [u8; 32] = [0x61; 32];
const OTHER_SEED: [u8; 32] = [0x62; 32];
const CLIENT_SEEDS: [[u8; 32]; 2] = [[0xc2; 32], [0xc3; 32]];

fn identity(seed: &[u8; 32]) -> globalnet::session::ServiceIdentity {
    globalnet::session::ServiceIdentity::from_seed(seed)
}

fn pongs(sim: &Sim, node: usize, from: usize) -> usize {
    sim.nodes[node].events[from..]
        .iter()
        .filter(|e| matches!(e, NodeEvent::Pong { .. }))
        .count()
}

fn unreachable(sim: &Sim, node: usize, from: usize) -> Vec<String> {
    sim.nodes[node].events[from..]
        .iter()
        .filter_map(|e| match e {
            NodeEvent::Unreachable { why, .. } => Some(why.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_descriptor_is_checked_against_the_full_key_of_the_name() {
    let mut sim = Sim::new(SimConfig {
        seed: 24,
        ..SimConfig::default()
    });
    sim.add_node(true, &[], 8);
    for _ in 1..24 {
        sim.add_node(true, &[0], 8);
    }
    let svc = sim.add_node(false, &[0, 1], 6);
    let right = sim.add_node(false, &[0, 1], 6);
    let wrong = sim.add_node(false, &[0, 1], 6);
    sim.run_for(40_000);
    // Two client identities: the same one would be one client to the service (a returning
    // client replaces its session).
    for (c, seed) in [right, wrong].into_iter().zip(CLIENT_SEEDS) {
        sim.nodes[c].node.set_client_identity(seed, Vec::new());
    }
    let now = sim.now;
    sim.nodes[svc].node.add_service(now, SERVICE_SEED);
    sim.flush(svc);
    sim.run_for(30_000);

    let id = identity(&SERVICE_SEED);
    let addr = id.address().octets();
    let key = *id.public();
    let other = *identity(&OTHER_SEED).public();
    let now = sim.now;
    // Without the hook a key that does not hash to the address is not taken at all.
    assert!(!sim.nodes[wrong].node.expect_service_key(now, addr, other));
    sim.nodes[wrong]
        .node
        .session_test_hooks()
        .expect_colliding_key = true;
    assert!(sim.nodes[wrong].node.expect_service_key(now, addr, other));
    // The right key name: the service is reached as by its address.
    assert!(sim.nodes[right].node.expect_service_key(now, addr, key));

    let from = [right, wrong].map(|c| sim.nodes[c].events.len());
    for c in [right, wrong] {
        let now = sim.now;
        sim.nodes[c].node.e2e_ping(now, addr).unwrap();
        sim.flush(c);
    }
    sim.run_for(30_000);
    assert_eq!(
        pongs(&sim, right, from[0]),
        1,
        "the key name's own key reaches the service: {:?}",
        unreachable(&sim, right, from[0])
    );
    assert_eq!(
        pongs(&sim, wrong, from[1]),
        0,
        "a descriptor with another key was used"
    );
    let why = unreachable(&sim, wrong, from[1]);
    assert!(
        why.iter().any(|w| w.contains("not the key of the name")),
        "{why:?}"
    );
    assert!(sim.nodes[wrong].node.session_stats().desc_wrong_key >= 1);
}
