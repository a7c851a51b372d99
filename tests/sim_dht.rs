//! The DHT wired into full nodes (issue #7) in the in-process network with virtual time: relays
//! build routing tables from their links and publish their own records; clients publish and find
//! descriptors through their own circuits (4 hops for a service, 3 for a client), whose last hop
//! runs the lookup; records survive 20% of the relays dying at once and a hostile relay that
//! answers junk; storage nodes hold no overlay address and no service key; SAMPLE feeds the
//! relay view; forged records are refused.

use ed25519_dalek::SigningKey;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use globalnet::dht::descriptor::{
    address_bytes, epoch, expires_for, index, revision_for, Descriptor, IntroEntry, Publication,
};
use globalnet::dht::message::RecordKind;
use globalnet::dht::{distance, node_id, relay_key};
use globalnet::node::dht::{DhtOutcome, DhtQuery};
use globalnet::node::NodeEvent;
use globalnet::sim::{Sim, SimConfig};
use globalnet::wire::record::FLAG_DHT;

const RELAYS: usize = 44;

/// 44 relays (node 0 the bootstrap) and 3 client-only nodes.
fn network(seed: u64) -> (Sim, Vec<usize>) {
    let mut sim = Sim::new(SimConfig {
        seed,
        ..SimConfig::default()
    });
    sim.add_node(true, &[], 6);
    for _ in 1..RELAYS {
        sim.add_node(true, &[0], 6);
    }
    let clients = (0..3).map(|_| sim.add_node(false, &[0], 4)).collect();
    (sim, clients)
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
        assert!(
            sim.now - start < 120_000,
            "node {i}: no DHT outcome for token {token}"
        );
        sim.run_for(50);
    }
}

fn intro(rng: &mut StdRng) -> IntroEntry {
    IntroEntry {
        identity: SigningKey::from_bytes(&rng.gen())
            .verifying_key()
            .to_bytes(),
        link_key: rng.gen(),
        onion_key: rng.gen(),
        auth_key: SigningKey::from_bytes(&rng.gen())
            .verifying_key()
            .to_bytes(),
        endpoints: vec![SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(198, 18, 200, rng.gen_range(1..255))),
            7412,
        )],
    }
}

struct Service {
    key: SigningKey,
    address: [u8; 16],
    epoch: u64,
    descriptor: Vec<u8>,
}

fn service(now_ms: u64, seed: u64) -> Service {
    let mut rng = StdRng::seed_from_u64(seed);
    let key = SigningKey::from_bytes(&rng.gen());
    let address = address_bytes(&key.verifying_key().to_bytes());
    let e = epoch(now_ms / 1000);
    let intros: Vec<IntroEntry> = (0..3).map(|_| intro(&mut rng)).collect();
    let d = Descriptor::build(
        &key,
        e,
        &intros,
        Publication {
            revision: revision_for(now_ms, None),
            expires: expires_for(now_ms / 1000, e),
            salt: rng.gen(),
        },
    )
    .unwrap();
    Service {
        key,
        address,
        epoch: e,
        descriptor: d.bytes().to_vec(),
    }
}

/// Finds the service's descriptor from client `c` and opens it as a client would.
fn find(sim: &mut Sim, c: usize, s: &Service) -> bool {
    let key = index(&s.address, s.epoch);
    let requests = |sim: &Sim| -> u64 {
        sim.nodes
            .iter()
            .filter_map(|n| n.node.dht_relay())
            .map(|r| r.stats().requests_out)
            .sum()
    };
    let (t0, m0) = (sim.now, requests(sim));
    let outcome = query(
        sim,
        c,
        DhtQuery::FindValue {
            kind: RecordKind::Descriptor,
            key,
        },
        false,
    );
    // Messages between DHT relays while the lookup ran (background refresh included).
    eprintln!(
        "FIND_VALUE through a circuit: {} ms (virtual, 10 ms one-way latency), {} DHT requests",
        sim.now - t0,
        requests(sim) - m0
    );
    match outcome {
        DhtOutcome::Records(rs) => rs.iter().any(|b| {
            Descriptor::parse_and_open(b, &s.address, s.epoch, sim.now.as_unix_ms())
                .map(|c| c.service_key == s.key.verifying_key().to_bytes())
                .unwrap_or(false)
        }),
        other => {
            eprintln!("client {c}: {other:?}");
            false
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn descriptors_published_through_circuits_are_found_through_circuits() {
    let (mut sim, clients) = network(11);
    sim.run_for(60_000);

    // Every relay is a DHT relay with a routing table, and published its own record.
    let mut tables = Vec::new();
    let mut published = 0;
    for i in 0..RELAYS {
        let n = &sim.nodes[i].node;
        let rec = n.link.own_record().expect("relay record");
        assert!(
            rec.fields().flags & FLAG_DHT != 0,
            "relay {i} lacks FLAG_DHT"
        );
        let relay = n.dht_relay().expect("a DHT relay");
        tables.push(relay.table.len());
        if n.dht_stats().own_accepted > 0 {
            published += 1;
        }
    }
    tables.sort_unstable();
    eprintln!(
        "routing tables after 60 s: min {} median {} max {}; {published}/{RELAYS} relays published their record",
        tables[0],
        tables[tables.len() / 2],
        tables[tables.len() - 1]
    );
    assert!(tables[0] >= 4, "{tables:?}");
    assert!(published >= RELAYS * 9 / 10, "{published} published");

    // A relay's record is found by its key, through a client's circuit, and verified.
    let target = 17;
    let id = sim.nodes[target].identity;
    match query(
        &mut sim,
        clients[0],
        DhtQuery::FindValue {
            kind: RecordKind::Relay,
            key: relay_key(&id),
        },
        false,
    ) {
        DhtOutcome::Records(rs) => {
            assert_eq!(rs.len(), 1);
            assert_eq!(&rs[0][4..36], &id[..]);
        }
        other => panic!("relay record lookup: {other:?}"),
    }

    // The relay closest to the descriptor's index turns hostile: it answers junk and
    // acknowledges STOREs without storing.
    let s = service(sim.now.as_unix_ms(), 5);
    let key = index(&s.address, s.epoch);
    let hostile = (0..RELAYS)
        .min_by_key(|&i| distance(&node_id(&sim.nodes[i].identity), &key))
        .unwrap();
    sim.nodes[hostile].node.dht_set_hostile(true);

    // A service publishes through a 4-hop circuit.
    let publisher = clients[1];
    match query(
        &mut sim,
        publisher,
        DhtQuery::Publish {
            kind: RecordKind::Descriptor,
            record: s.descriptor.clone(),
        },
        true,
    ) {
        DhtOutcome::Published { accepted, refused } => {
            eprintln!("descriptor published: {accepted} accepted, {refused} refused");
            assert!(accepted >= 3, "accepted {accepted}");
        }
        other => panic!("publish: {other:?}"),
    }
    let holders: Vec<usize> = (0..RELAYS)
        .filter(|&i| {
            sim.nodes[i]
                .node
                .dht_relay()
                .is_some_and(|r| r.store.dump().iter().any(|(k, _)| *k == key))
        })
        .collect();
    eprintln!("descriptor stored on relays {holders:?} (hostile: {hostile})");
    assert!(!holders.contains(&hostile));

    // Another client finds it through its own circuit.
    assert!(find(&mut sim, clients[2], &s), "descriptor not found");

    // Storage nodes hold no overlay address and no service key.
    let a = s.key.verifying_key().to_bytes();
    let mut stored = 0;
    for i in 0..RELAYS {
        if let Some(r) = sim.nodes[i].node.dht_relay() {
            for (k, rec) in r.store.dump() {
                stored += 1;
                for part in [&k[..], &rec[..]] {
                    assert!(!contains(part, &s.address), "address stored on relay {i}");
                    assert!(!contains(part, &a[..16]), "service key stored on relay {i}");
                }
            }
        }
    }
    assert!(stored > RELAYS, "{stored} records stored");

    // 20% of the relays die at once (not the clients' guards, whose loss is another matter).
    let guards: Vec<[u8; 32]> = clients
        .iter()
        .flat_map(|&c| sim.nodes[c].node.guards().list().iter().map(|g| g.identity))
        .collect();
    let mut killed = 0;
    for i in (1..RELAYS).rev() {
        if killed == RELAYS / 5 {
            break;
        }
        if guards.contains(&sim.nodes[i].identity) || i == hostile {
            continue;
        }
        sim.kill(i);
        killed += 1;
    }
    assert_eq!(killed, RELAYS / 5);
    sim.run_for(10_000);
    let mut found = 0;
    for _ in 0..3 {
        if find(&mut sim, clients[2], &s) {
            found += 1;
        }
        sim.run_for(1_000);
    }
    assert!(found >= 2, "found {found}/3 after 20% of the relays died");
    assert!(
        find(&mut sim, clients[0], &s),
        "not found by a third client"
    );

    // SAMPLE fed the clients' views from the DHT as one more source.
    let sampled: u64 = clients
        .iter()
        .map(|&c| sim.nodes[c].node.dht_stats().sampled_relays)
        .sum();
    assert!(sampled > 0, "no relay came from SAMPLE");
    // The hostile relay was noticed by the relays that asked it.
    let junk: u64 = (0..RELAYS)
        .filter_map(|i| sim.nodes[i].node.dht_relay())
        .map(|r| r.stats().junk_in)
        .sum();
    assert!(junk > 0);
}

#[test]
fn forged_records_are_refused_and_counted() {
    let (mut sim, clients) = network(12);
    sim.run_for(45_000);
    let s = service(sim.now.as_unix_ms(), 9);
    // A flipped bit in the signature: the last hop refuses to publish it.
    let mut forged = s.descriptor.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    match query(
        &mut sim,
        clients[0],
        DhtQuery::Publish {
            kind: RecordKind::Descriptor,
            record: forged,
        },
        true,
    ) {
        DhtOutcome::Failed(why) => assert!(why.contains("invalid"), "{why}"),
        other => panic!("forged publish: {other:?}"),
    }
    // An expired one likewise.
    let old = service((sim.now - 6 * 3_600_000).as_unix_ms(), 9);
    match query(
        &mut sim,
        clients[0],
        DhtQuery::Publish {
            kind: RecordKind::Descriptor,
            record: old.descriptor,
        },
        true,
    ) {
        DhtOutcome::Failed(why) => assert!(why.contains("invalid"), "{why}"),
        other => panic!("expired publish: {other:?}"),
    }
    let refused: u64 = (0..RELAYS)
        .map(|i| sim.nodes[i].node.dht_stats().role_refused)
        .sum();
    assert!(refused >= 2);
    // Nothing was stored, and the real one is not found (it was never published).
    assert!(!find(&mut sim, clients[1], &s));
    // A record of the wrong length never leaves the client.
    match query(
        &mut sim,
        clients[1],
        DhtQuery::Publish {
            kind: RecordKind::Relay,
            record: vec![1; 100],
        },
        false,
    ) {
        DhtOutcome::Failed(_) => {}
        other => panic!("short record: {other:?}"),
    }
}

#[test]
fn a_client_without_a_usable_view_fails_cleanly() {
    let mut sim = Sim::new(SimConfig::default());
    sim.add_node(true, &[], 2);
    let c = sim.add_node(false, &[0], 2);
    sim.run_for(5_000);
    match query(&mut sim, c, DhtQuery::Sample, false) {
        DhtOutcome::Failed(why) => assert!(why.contains("no DHT circuit"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_last_hop_enforces_the_per_circuit_limits_and_refuses_junk() {
    use globalnet::circuit::layer::{CircEvent, Purpose};
    use globalnet::dht::lookup_msg::{LookupOp, LookupReply, LookupRequest, LookupStatus};
    use globalnet::wire::relay::RelayCommand;

    let (mut sim, clients) = network(13);
    sim.run_for(30_000);
    let c = clients[0];
    // A pool circuit: its last hop is a rendezvous-capable relay, which here is a DHT relay too.
    let id = sim.nodes[c]
        .node
        .take_pool_circuit(Purpose::Probe)
        .expect("a ready pool circuit");
    let before = sim.nodes[c].events.len();
    for i in 0..40u32 {
        let req = LookupRequest {
            op: LookupOp::Sample,
            kind: None,
            lookup_id: i,
            key: [0; 32],
            record: Vec::new(),
        };
        sim.nodes[c]
            .node
            .circ
            .send(id, RelayCommand::DhtLookup, &req.emit())
            .unwrap();
    }
    // Junk: an unknown op, and an unknown version.
    let mut junk = LookupRequest {
        op: LookupOp::Sample,
        kind: None,
        lookup_id: 100,
        key: [0; 32],
        record: Vec::new(),
    }
    .emit();
    junk[1] = 9;
    sim.nodes[c]
        .node
        .circ
        .send(id, RelayCommand::DhtLookup, &junk)
        .unwrap();
    junk[0] = 7;
    junk[1] = LookupOp::Sample as u8;
    sim.nodes[c]
        .node
        .circ
        .send(id, RelayCommand::DhtLookup, &junk)
        .unwrap();
    sim.nodes[c].node.pump(sim.now);
    sim.run_for(3_000);
    let (mut ok, mut limited, mut refused) = (0, 0, 0);
    for e in &sim.nodes[c].events[before..] {
        if let NodeEvent::Circuit(CircEvent::Message { cmd, payload, .. }) = e {
            if *cmd != RelayCommand::DhtLookupReply as u8 {
                continue;
            }
            let r = LookupReply::parse(payload).expect("a well-formed reply");
            match r.status {
                LookupStatus::Ok => ok += 1,
                LookupStatus::RateLimited => limited += 1,
                LookupStatus::Refused => {
                    assert_eq!(r.lookup_id, 100);
                    refused += 1
                }
                s => panic!("{s:?}"),
            }
        }
    }
    assert_eq!((ok, limited), (30, 10), "DHT_LOOKUPS_PER_MIN");
    // The unknown op cannot be salvaged (no op to answer with); the unknown version can.
    assert_eq!(refused, 1);
}
