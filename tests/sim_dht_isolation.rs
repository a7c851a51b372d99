//! Isolated DHT circuits (issue #18, item 4) in the in-process network: every descriptor
//! publication and every descriptor lookup goes through a circuit of its own, so one last hop
//! never holds two of a service's blinded keys, nor two destinations of one client; the two
//! epochs' descriptors go out at different times with unrelated revisions; circuits are retired
//! after use.

use std::collections::{HashMap, HashSet};

use globalnet::circuit::layer::Purpose;
use globalnet::dht::descriptor::{epoch, epoch_start, index, Descriptor};
use globalnet::dht::lookup_msg::LookupOp;
use globalnet::node::dht::DHT_POOL_CLIENT;
use globalnet::node::sessions::DESC_SPREAD_MS;
use globalnet::sim::{Sim, SimConfig, SIM_EPOCH};
use globalnet::time::Instant;

const RELAYS: usize = 24;
const SERVICE_SEED: [u8; 32] = [0x61; 32];
const CLIENT_SEED: [u8; 32] = [0xc3; 32];

fn service_addr(seed: &[u8; 32]) -> [u8; 16] {
    globalnet::session::ServiceIdentity::from_seed(seed)
        .address()
        .octets()
}

/// A network of relays whose clock starts `before_s` seconds before the next epoch boundary
/// after `SIM_EPOCH`, with every relay logging what it sees as a DHT last hop.
fn network(seed: u64, before_s: u64) -> Sim {
    let mut sim = Sim::new(SimConfig {
        seed,
        ..SimConfig::default()
    });
    let next = epoch(SIM_EPOCH.as_unix_ms() / 1000) + 1;
    sim.now = Instant::from_unix_ms((epoch_start(next) - before_s) * 1000);
    sim.add_node(true, &[], 8);
    for _ in 1..RELAYS {
        sim.add_node(true, &[0], 8);
    }
    for i in 0..RELAYS {
        sim.nodes[i].node.dht_observe(true);
    }
    sim
}

/// Per relay and circuit, the keys its DHT_LOOKUPs carried (of `ops`).
fn seen(sim: &Sim, ops: &[LookupOp]) -> Vec<HashMap<u64, HashSet<[u8; 32]>>> {
    (0..RELAYS)
        .map(|i| {
            let mut m: HashMap<u64, HashSet<[u8; 32]>> = HashMap::new();
            for s in sim.nodes[i].node.dht_observed() {
                if ops.contains(&s.op) {
                    m.entry(s.slot).or_default().insert(s.key);
                }
            }
            m
        })
        .collect()
}

#[test]
fn no_last_hop_sees_both_blinded_keys_of_a_service() {
    // One hour before the boundary: the service publishes for this epoch and the next.
    let mut sim = network(31, 3_600);
    let svc = sim.add_node(false, &[0, 1], 6);
    sim.run_for(30_000);
    let now = sim.now;
    sim.nodes[svc].node.add_service(now, SERVICE_SEED);
    sim.flush(svc);
    // Intro points, then the current epoch's descriptor at once and the next one's within
    // the spread.
    sim.run_for(30_000 + DESC_SPREAD_MS.1);

    let addr = service_addr(&SERVICE_SEED);
    let e = epoch(sim.now.as_unix_ms() / 1000);
    let keys = [index(&addr, e), index(&addr, e + 1)];
    let descs: Vec<Descriptor> = sim.nodes[svc]
        .node
        .service_descriptors()
        .iter()
        .map(|b| Descriptor::parse(b, sim.now.as_unix_ms()).unwrap())
        .collect();
    assert_eq!(descs.len(), 2, "descriptors for two epochs");

    // Which relays carried which of the two keys, and when.
    let mut by_relay: Vec<(usize, [u8; 32], u64)> = Vec::new();
    for i in 0..RELAYS {
        for s in sim.nodes[i].node.dht_observed() {
            if s.op == LookupOp::Publish && keys.contains(&s.key) {
                by_relay.push((i, s.key, s.at.as_unix_ms()));
            }
        }
    }
    for k in &keys {
        assert!(
            by_relay.iter().any(|(_, key, _)| key == k),
            "a publication of each epoch reached a last hop: {by_relay:?}"
        );
    }
    for i in 0..RELAYS {
        let held: HashSet<[u8; 32]> = by_relay
            .iter()
            .filter(|(r, _, _)| *r == i)
            .map(|(_, k, _)| *k)
            .collect();
        assert!(held.len() < 2, "relay {i} saw both blinded keys");
    }
    // One key per circuit, whatever the op.
    for (i, circuits) in seen(&sim, &[LookupOp::Publish, LookupOp::FindValue])
        .iter()
        .enumerate()
    {
        for (slot, ks) in circuits {
            assert!(
                ks.len() <= 1,
                "relay {i}, circuit {slot}: {} keys",
                ks.len()
            );
        }
    }
    // The two epochs' records went out apart, with revisions that are not r and r + 1.
    let first = |k: &[u8; 32]| {
        by_relay
            .iter()
            .filter(|(_, key, _)| key == k)
            .map(|(_, _, at)| *at)
            .min()
            .unwrap()
    };
    let apart = first(&keys[1]).abs_diff(first(&keys[0]));
    let revs: Vec<u64> = descs.iter().map(|d| d.revision()).collect();
    eprintln!(
        "the next epoch's descriptor went out {apart} ms after the current one's; revisions {revs:?}"
    );
    assert!(apart >= DESC_SPREAD_MS.0, "published {apart} ms apart");
    assert!(revs[0].abs_diff(revs[1]) > 1_000, "revisions {revs:?}");
}

#[test]
fn no_last_hop_sees_two_destinations_of_one_client() {
    let mut sim = network(32, 40_000);
    let cli = sim.add_node(false, &[0, 1], 6);
    sim.run_for(30_000);
    let now = sim.now;
    sim.nodes[cli]
        .node
        .set_client_identity(CLIENT_SEED, Vec::new());
    sim.nodes[cli].node.handle_timeout(now);
    sim.run_for(10_000);
    // The pool holds a built, unused DHT circuit before the first lookup.
    let pooled = sim.nodes[cli].node.circ.ready_ids(Purpose::Dht);
    assert_eq!(pooled.len(), DHT_POOL_CLIENT, "pool: {pooled:?}");

    // Three destinations nobody serves, each looked up (no descriptor: the lookup's answer is
    // "not found"), one of them twice.
    let dsts: Vec<[u8; 16]> = (1..=3u8).map(|b| service_addr(&[b; 32])).collect();
    for &d in dsts.iter().chain(std::iter::once(&dsts[0])) {
        let now = sim.now;
        let me = sim.nodes[cli].node.pseudonym_for(d).unwrap().octets();
        let p = udp(me, d);
        let _ = sim.nodes[cli].node.send_packet(now, d, &p);
        sim.flush(cli);
        sim.run_for(20_000);
    }
    let e = epoch(sim.now.as_unix_ms() / 1000);
    let keys: Vec<[u8; 32]> = dsts.iter().map(|d| index(d, e)).collect();
    let mut circuits_per_key: HashMap<[u8; 32], usize> = HashMap::new();
    for (i, circuits) in seen(&sim, &[LookupOp::FindValue]).iter().enumerate() {
        for (slot, ks) in circuits {
            let ours: Vec<&[u8; 32]> = ks.iter().filter(|k| keys.contains(k)).collect();
            assert!(
                ours.len() <= 1,
                "relay {i} saw {} of the client's destinations on circuit {slot}",
                ours.len()
            );
            for k in ours {
                *circuits_per_key.entry(*k).or_default() += 1;
            }
        }
    }
    for k in &keys {
        assert!(
            circuits_per_key.contains_key(k),
            "every destination looked up"
        );
    }
    // The destination looked up twice went through two circuits.
    assert!(circuits_per_key[&keys[0]] >= 2, "{circuits_per_key:?}");
    // Used circuits are retired: what is left is the pool, none of the used ones.
    let left = sim.nodes[cli].node.circ.ready_ids(Purpose::Dht);
    assert!(left.len() <= DHT_POOL_CLIENT, "DHT circuits left: {left:?}");
    assert!(!left.iter().any(|id| pooled.contains(id)), "{left:?}");
}

/// A UDP packet (checksum left zero: nothing on the way checks it).
fn udp(src: [u8; 16], dst: [u8; 16]) -> Vec<u8> {
    let body = b"hello";
    let len = 8 + body.len();
    let mut p = vec![0u8; 40];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(len as u16).to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(&src);
    p[24..40].copy_from_slice(&dst);
    p.extend_from_slice(&40000u16.to_be_bytes());
    p.extend_from_slice(&7u16.to_be_bytes());
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(body);
    p
}
