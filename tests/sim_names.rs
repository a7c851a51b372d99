//! Network-issued names in the in-process network (issue #24 item 6): two partitions that each
//! issued `cheesy` to a different key merge, the claims are refreshed (as every owner does every
//! 6 h), and every node then names the same owner: the claim with the most work, computed by each
//! node from the claims its own lookup collected.

use globalnet::dht::message::RecordKind;
use globalnet::names::claim::{dht_key, winner, Claim, EPOCH_S};
use globalnet::node::dht::{DhtOutcome, DhtQuery};
use globalnet::node::NodeEvent;
use globalnet::sim::{Sim, SimConfig};
use globalnet::time::Instant;

/// Relays per partition.
const SIDE: usize = 12;

fn vector_claims() -> Vec<Vec<u8>> {
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("vectors/name_claims.json")).unwrap();
    doc["claims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| hex::decode(c["claim"].as_str().unwrap()).unwrap())
        .collect()
}

fn query(sim: &mut Sim, i: usize, q: DhtQuery, service: bool) -> DhtOutcome {
    let now = sim.now;
    let token = sim.nodes[i].node.dht_query(now, q, service);
    sim.nodes[i].node.pump(now);
    let start = sim.now;
    loop {
        let found = sim.nodes[i].events.iter().find_map(|e| match e {
            NodeEvent::Dht { token: t, outcome } if *t == token => Some(outcome.clone()),
            _ => None,
        });
        if let Some(o) = found {
            return o;
        }
        assert!(sim.now - start < 120_000, "node {i}: no DHT outcome");
        sim.run_for(50);
    }
}

fn publish(sim: &mut Sim, i: usize, claim: &[u8]) {
    let q = DhtQuery::Publish {
        kind: RecordKind::NameClaim,
        record: claim.to_vec(),
    };
    match query(sim, i, q, true) {
        DhtOutcome::Published { accepted, .. } => assert!(accepted > 0, "node {i}: stored nowhere"),
        o => panic!("node {i}: publication: {o:?}"),
    }
}

/// The owner of `cheesy` as node `i` sees it: the winner among the claims its lookup found.
fn owner(sim: &mut Sim, i: usize) -> Option<[u8; 32]> {
    let q = DhtQuery::FindValue {
        kind: RecordKind::NameClaim,
        key: dht_key("cheesy"),
    };
    for _ in 0..3 {
        match query(sim, i, q.clone(), false) {
            DhtOutcome::Records(r) => {
                let now = sim.now;
                let claims: Vec<Claim> = r
                    .iter()
                    .filter_map(|b| Claim::decode_at(b, now.as_unix_ms()).ok())
                    .filter(|c| c.name == "cheesy")
                    .collect();
                return winner(&claims).map(|c| c.key);
            }
            DhtOutcome::NotFound => return None,
            // A lookup through a fresh circuit may fail; a node retries.
            _ => sim.run_for(1_000),
        }
    }
    panic!("node {i}: the lookup kept failing");
}

#[test]
fn partitions_that_issued_the_same_name_agree_on_one_owner_after_merging() {
    let raw = vector_claims();
    // The vectors are signed for days 20000 and 20001: the network runs on day 20001.
    let mut sim = Sim::new(SimConfig {
        seed: 24,
        ..SimConfig::default()
    });
    sim.now = Instant::from_unix_ms((20_001 * EPOCH_S + 3_600) * 1000);
    let a0 = sim.add_node(true, &[], 6);
    for _ in 1..SIDE {
        sim.add_node(true, &[a0], 6);
    }
    let b0 = sim.add_node(true, &[], 6);
    for _ in 1..SIDE {
        sim.add_node(true, &[b0], 6);
    }
    let issuer_a = sim.add_node(false, &[a0], 4);
    let issuer_b = sim.add_node(false, &[b0], 4);
    sim.run_for(60_000);
    let now = sim.now;
    let claims: Vec<Claim> = raw
        .iter()
        .map(|b| Claim::decode_at(b, now.as_unix_ms()).unwrap())
        .collect();
    let strong = winner(&claims).unwrap().key;
    let (ka, kb) = (claims[0].key, claims[1].key);
    assert_eq!(strong, ka, "the vectors' first claim has the most work");

    // Partition A issues cheesy to the weaker claim's key, B to the stronger one's: each
    // partition's nodes see only their own.
    publish(&mut sim, issuer_a, &raw[1]);
    publish(&mut sim, issuer_b, &raw[0]);
    assert_eq!(owner(&mut sim, a0 + 3), Some(kb), "partition A's owner");
    assert_eq!(owner(&mut sim, b0 + 3), Some(ka), "partition B's owner");

    // The partitions meet: relays that know both sides join, and views and routing tables mix.
    for _ in 0..4 {
        sim.add_node(true, &[a0, b0], 8);
    }
    sim.run_for(180_000);
    // Each owner refreshes its claim (every 6 h; here now), into the merged network.
    publish(&mut sim, issuer_a, &raw[1]);
    publish(&mut sim, issuer_b, &raw[0]);
    let mut seen = Vec::new();
    for i in 0..sim.nodes.len() {
        seen.push(owner(&mut sim, i));
    }
    assert!(
        seen.iter().all(|o| *o == Some(strong)),
        "every node names the claim with the most work: {:?}",
        seen.iter()
            .map(|o| o.map(|k| k == strong))
            .collect::<Vec<_>>()
    );
}
