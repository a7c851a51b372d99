//! An in-memory DHT of 500 nodes: the sans-IO routing tables, stores, responders and lookups of
//! `globalnet::dht` talking to each other directly, with virtual time and a fixed seed (no link
//! layer). Every message goes through `emit` and `parse`.
//!
//! Shows: lookups succeed after 20% of the nodes leave at once (>= 99%) and with 20% hostile
//! nodes that drop, lie with closer-looking contacts or answer junk (>= 95%); a storage node's
//! database holds no overlay address, no service key and nothing that repeats across epochs.
//! Prints hops, messages and time per lookup and bytes stored per node.

use ed25519_dalek::SigningKey;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use globalnet::budget::MemoryBudget;
use globalnet::dht::descriptor::{
    address_bytes, epoch, epochs_to_publish, expires_for, index, revision_for, Descriptor,
    IntroEntry, Publication,
};
use globalnet::dht::lookup::{Lookup, LookupConfig, LookupResult, Target};
use globalnet::dht::message::{DhtMessage, RecordKind, StoreStatus};
use globalnet::dht::routing::RoutingTable;
use globalnet::dht::store::Store;
use globalnet::dht::{
    distance, node_id, relay_key, server, DHT_DISJOINT_PATHS, DHT_K, DHT_REPLICAS,
};
use globalnet::time::Instant;
use globalnet::wire::record::{Contact, NatClass, RecordFields, RelayRecord, FLAG_DHT, FLAG_RELAY};

const N: usize = 500;
const PREFIX_BITS: (u8, u8) = (16, 48);
/// One hour into an epoch: inside the overlap, so services publish for two epochs.
const T0: u64 = 1_767_225_600_000 + 3_600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Honest,
    Gone,
    Drop,
    Lie,
    Junk,
}

struct Node {
    key: SigningKey,
    contact: Contact,
    table: RoutingTable,
    store: Store,
    behaviour: Behaviour,
}

struct Net {
    nodes: Vec<Node>,
    /// Identities nobody runs, which liars hand out as closer-looking contacts.
    phantoms: Vec<Contact>,
    by_identity: HashMap<[u8; 32], usize>,
    rng: StdRng,
}

#[derive(Default, Debug)]
struct Stats {
    lookups: usize,
    ok: usize,
    hops: usize,
    max_hops: usize,
    messages: usize,
    bytes: usize,
    time_ms: u64,
    max_time_ms: u64,
}

impl Stats {
    fn print(&self, what: &str) {
        let n = self.lookups.max(1);
        println!(
            "{what}: {}/{} ok ({:.1}%), hops avg {:.2} max {}, messages avg {:.1}, bytes avg {:.0}, time avg {} ms max {} ms",
            self.ok,
            self.lookups,
            100.0 * self.ok as f64 / n as f64,
            self.hops as f64 / n as f64,
            self.max_hops,
            self.messages as f64 / n as f64,
            self.bytes as f64 / n as f64,
            self.time_ms / n as u64,
            self.max_time_ms
        );
    }
}

fn ip_of(i: usize) -> IpAddr {
    // Every node in its own /16 (the honest case for the prefix caps).
    IpAddr::V4(Ipv4Addr::new(11 + (i / 200) as u8, (i % 200) as u8, 7, 1))
}

impl Net {
    fn new(seed: u64) -> Net {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut nodes = Vec::with_capacity(N);
        let mut by_identity = HashMap::new();
        for i in 0..N {
            let key = SigningKey::from_bytes(&rng.gen());
            let identity = key.verifying_key().to_bytes();
            let contact = Contact {
                identity,
                link_key: rng.gen(),
                endpoint: SocketAddr::new(ip_of(i), 7412),
            };
            by_identity.insert(identity, i);
            nodes.push(Node {
                table: RoutingTable::new(&identity, PREFIX_BITS, MemoryBudget::new(8 << 20)),
                store: Store::new(node_id(&identity), MemoryBudget::new(64 << 20)),
                key,
                contact,
                behaviour: Behaviour::Honest,
            });
        }
        // Bootstrap: every node hears of every other in random order (as if after HELLOs); the
        // buckets and caches keep what fits.
        let contacts: Vec<Contact> = nodes.iter().map(|n| n.contact).collect();
        for node in nodes.iter_mut() {
            let mut order = contacts.clone();
            order.shuffle(&mut rng);
            for c in order {
                node.table.insert(c, Instant::ZERO);
            }
        }
        let phantoms = (0..1000)
            .map(|i| Contact {
                identity: SigningKey::from_bytes(&rng.gen())
                    .verifying_key()
                    .to_bytes(),
                link_key: rng.gen(),
                endpoint: SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::new(100, 64 + (i / 250) as u8, (i % 250) as u8, 1)),
                    7412,
                ),
            })
            .collect();
        Net {
            nodes,
            phantoms,
            by_identity,
            rng,
        }
    }

    /// What node `to` answers to `request` (bytes), if anything.
    fn answer(
        &mut self,
        to: usize,
        from: usize,
        target: &[u8; 32],
        request: &[u8],
        now: u64,
    ) -> Option<Vec<u8>> {
        let behaviour = self.nodes.get(to)?.behaviour;
        let reply = match behaviour {
            Behaviour::Gone | Behaviour::Drop => return None,
            Behaviour::Junk => {
                if self.rng.gen_bool(0.5) {
                    let len = self.rng.gen_range(0..600);
                    let mut b: Vec<u8> = (0..len).map(|_| self.rng.gen()).collect();
                    if b.len() > 2 {
                        b[0] = 1;
                        b[1] = 2;
                    }
                    return Some(b);
                }
                DhtMessage::StoreResult {
                    status: StoreStatus::Stored,
                }
            }
            Behaviour::Lie => {
                // Collude: point at the hostile nodes and at phantom identities (nobody runs
                // them) closest to the target, sorted properly so they look like an honest,
                // closer answer, and claim to hold nothing.
                let mut liars: Vec<Contact> = self
                    .nodes
                    .iter()
                    .filter(|n| n.behaviour != Behaviour::Honest && n.behaviour != Behaviour::Gone)
                    .filter(|n| n.contact.identity != self.nodes[to].contact.identity)
                    .map(|n| n.contact)
                    .chain(self.phantoms.iter().copied())
                    .collect();
                liars.sort_by_cached_key(|c| distance(&node_id(&c.identity), target));
                match DhtMessage::parse(request).ok()? {
                    DhtMessage::FindNode { .. } => DhtMessage::Nodes {
                        contacts: liars.into_iter().take(8).collect(),
                    },
                    DhtMessage::FindValue { kind, cursor, .. } => DhtMessage::Value {
                        kind,
                        cursor,
                        total: 0,
                        record: None,
                        contacts: liars.into_iter().take(8).collect(),
                    },
                    DhtMessage::Store { .. } => DhtMessage::StoreResult {
                        status: StoreStatus::Stored,
                    },
                    _ => return None,
                }
            }
            Behaviour::Honest => {
                let source = self.nodes.get(from)?.contact.endpoint.ip();
                let node = self.nodes.get_mut(to)?;
                server::respond(
                    &node.table,
                    &mut node.store,
                    request,
                    source,
                    PREFIX_BITS,
                    Instant::from_unix_ms(now),
                    &mut self.rng,
                )?
            }
        };
        Some(reply.emit().expect("emit"))
    }

    /// Runs one lookup from node `from` to completion in virtual time starting at `now`.
    fn lookup(
        &mut self,
        from: usize,
        target: [u8; 32],
        kind: Target,
        now: u64,
        stats: &mut Stats,
    ) -> LookupResult {
        let seeds = self.nodes[from]
            .table
            .closest(&target, DHT_K * DHT_DISJOINT_PATHS);
        let cfg = LookupConfig {
            own_identity: self.nodes[from].contact.identity,
            prefix_bits: PREFIX_BITS,
        };
        let mut lk = Lookup::new(target, kind, &seeds, cfg, Instant::from_unix_ms(now));
        let mut events: BinaryHeap<Reverse<(u64, u64, Vec<u8>)>> = BinaryHeap::new();
        let mut t = now;
        let mut messages = 0;
        let mut bytes = 0;
        loop {
            for o in lk.poll(Instant::from_unix_ms(t)) {
                let req = o.message.emit().expect("emit request");
                messages += 1;
                bytes += req.len();
                let Some(&to) = self.by_identity.get(&o.to.identity) else {
                    continue; // a contact nobody runs: it times out
                };
                if let Some(reply) = self.answer(to, from, &target, &req, t) {
                    messages += 1;
                    bytes += reply.len();
                    let rtt = self.rng.gen_range(20..200);
                    events.push(Reverse((t + rtt, o.query, reply)));
                }
            }
            if lk.is_done() {
                break;
            }
            let next_event = events.peek().map(|e| e.0 .0);
            let next_timer = lk.next_timeout().unwrap_or(Instant::from_unix_ms(u64::MAX));
            match next_event {
                Some(te) if te <= next_timer.as_unix_ms() => {
                    let Reverse((te, q, reply)) = events.pop().unwrap();
                    t = te;
                    match DhtMessage::parse(&reply) {
                        Ok(m) => lk.on_reply(q, m, Instant::from_unix_ms(t)),
                        Err(_) => lk.on_junk(q),
                    }
                }
                _ => {
                    t = next_timer.as_unix_ms();
                    lk.on_timer(Instant::from_unix_ms(t));
                }
            }
        }
        let r = lk.result().expect("done").clone();
        // Feed the outcome back into the runner's routing table.
        let table = &mut self.nodes[from].table;
        for id in r.penalised.iter().chain(&r.timed_out) {
            table.on_failure(id);
        }
        for id in &r.answered {
            table.on_success(id, Instant::from_unix_ms(t));
        }
        stats.lookups += 1;
        stats.messages += messages;
        stats.bytes += bytes;
        stats.hops += r.hops;
        stats.max_hops = stats.max_hops.max(r.hops);
        stats.time_ms += t - now;
        stats.max_time_ms = stats.max_time_ms.max(t - now);
        r
    }

    /// Publishes a record: FIND_NODE for the key, STORE on the `DHT_REPLICAS` closest.
    fn publish(
        &mut self,
        from: usize,
        key: [u8; 32],
        kind: RecordKind,
        record: &[u8],
        now: u64,
        stats: &mut Stats,
    ) -> usize {
        let r = self.lookup(from, key, Target::Nodes, now, stats);
        let store = DhtMessage::Store {
            kind,
            record: record.to_vec(),
        }
        .emit()
        .unwrap();
        let mut accepted = 0;
        for c in r.closest.iter().take(DHT_REPLICAS) {
            let Some(&to) = self.by_identity.get(&c.identity) else {
                continue;
            };
            if let Some(reply) = self.answer(to, from, &key, &store, now) {
                if let Ok(DhtMessage::StoreResult {
                    status: StoreStatus::Stored,
                }) = DhtMessage::parse(&reply)
                {
                    accepted += 1;
                }
            }
        }
        if accepted > 0 {
            stats.ok += 1;
        }
        accepted
    }

    fn honest(&self) -> Vec<usize> {
        (0..N)
            .filter(|&i| self.nodes[i].behaviour == Behaviour::Honest)
            .collect()
    }
}

struct Service {
    key: SigningKey,
    address: [u8; 16],
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
            IpAddr::V4(Ipv4Addr::new(198, 18, rng.gen(), rng.gen_range(1..255))),
            7412,
        )],
    }
}

fn relay_record(n: &Node, now: u64) -> RelayRecord {
    RelayRecord::sign(
        &n.key,
        RecordFields {
            flags: FLAG_RELAY | FLAG_DHT,
            nat: NatClass::Public,
            link_key: n.contact.link_key,
            onion_key: [5; 32],
            seq: now,
            expires: now / 1000 + 86400,
            endpoints: vec![n.contact.endpoint],
            introducers: vec![],
        },
    )
    .unwrap()
}

/// Publishes `n` services (for every epoch `epochs_to_publish` gives) and some relay records.
fn populate(net: &mut Net, services: usize, relays: usize, stats: &mut Stats) -> Vec<Service> {
    let mut out = Vec::new();
    let mut now = T0;
    for _ in 0..services {
        let key = SigningKey::from_bytes(&net.rng.gen());
        let address = address_bytes(&key.verifying_key().to_bytes());
        let intros: Vec<IntroEntry> = (0..3).map(|_| intro(&mut net.rng)).collect();
        let honest = net.honest();
        let from = *honest.choose(&mut net.rng).unwrap();
        let mut last = None;
        for e in epochs_to_publish(now / 1000) {
            let revision = revision_for(now, last);
            last = Some(revision);
            let d = Descriptor::build(
                &key,
                e,
                &intros,
                Publication {
                    revision,
                    expires: expires_for(now / 1000, e),
                    salt: net.rng.gen(),
                },
            )
            .unwrap();
            net.publish(
                from,
                *d.index(),
                RecordKind::Descriptor,
                d.bytes(),
                now,
                stats,
            );
        }
        out.push(Service { key, address });
        now += 1000;
    }
    for i in 0..relays {
        let rec = relay_record(&net.nodes[i], now);
        let id = net.nodes[i].contact.identity;
        net.publish(
            i,
            relay_key(&id),
            RecordKind::Relay,
            rec.bytes(),
            now,
            stats,
        );
    }
    out
}

/// Looks up every service's descriptor from a random honest node and opens it as a client.
fn look_up_all(net: &mut Net, services: &[Service], rounds: usize, now: u64, stats: &mut Stats) {
    for round in 0..rounds {
        for s in services {
            let honest = net.honest();
            let from = *honest.choose(&mut net.rng).unwrap();
            let e = epoch(now / 1000);
            let t = now + (round as u64) * 1000;
            let r = net.lookup(
                from,
                index(&s.address, e),
                Target::Value(RecordKind::Descriptor),
                t,
                stats,
            );
            let opened = r.records.iter().any(|b| {
                Descriptor::parse_and_open(b, &s.address, e, t)
                    .map(|c| c.service_key == s.key.verifying_key().to_bytes())
                    .unwrap_or(false)
            });
            if opened {
                stats.ok += 1;
            }
        }
    }
}

fn storage_report(net: &Net) -> (usize, usize, f64) {
    let sizes: Vec<usize> = net.nodes.iter().map(|n| n.store.bytes_stored()).collect();
    let total: usize = sizes.iter().sum();
    (total, *sizes.iter().max().unwrap(), total as f64 / N as f64)
}

#[test]
fn lookups_survive_20_percent_leaving() {
    let mut net = Net::new(7);
    let mut publish = Stats::default();
    let services = populate(&mut net, 100, 50, &mut publish);
    publish.print("publish (FIND_NODE + STORE)");
    assert_eq!(
        publish.ok, publish.lookups,
        "every publication stored somewhere"
    );
    let (total, max, avg) = storage_report(&net);
    println!("stored: {total} bytes in total, {avg:.0} bytes per node on average, max {max}");

    let mut before = Stats::default();
    look_up_all(&mut net, &services, 1, T0 + 60_000, &mut before);
    before.print("lookups before churn");
    assert_eq!(before.ok, before.lookups);

    // 20% leave at once.
    let mut idx: Vec<usize> = (0..N).collect();
    idx.shuffle(&mut net.rng);
    for &i in idx.iter().take(N / 5) {
        net.nodes[i].behaviour = Behaviour::Gone;
    }
    let mut after = Stats::default();
    look_up_all(&mut net, &services, 3, T0 + 120_000, &mut after);
    after.print("lookups after 20% left");
    assert!(after.ok * 100 >= after.lookups * 99, "{after:?}");

    // Relay records too.
    let mut relays = Stats::default();
    for i in 0..50 {
        if net.nodes[i].behaviour != Behaviour::Honest {
            continue;
        }
        let honest = net.honest();
        let from = *honest.choose(&mut net.rng).unwrap();
        let id = net.nodes[i].contact.identity;
        let r = net.lookup(
            from,
            relay_key(&id),
            Target::Value(RecordKind::Relay),
            T0 + 200_000,
            &mut relays,
        );
        if r.records.iter().any(|b| b[4..36] == id) {
            relays.ok += 1;
        }
    }
    relays.print("relay record lookups after 20% left");
    assert!(relays.ok * 100 >= relays.lookups * 99);
}

#[test]
fn lookups_survive_20_percent_hostile() {
    let mut net = Net::new(11);
    let mut idx: Vec<usize> = (0..N).collect();
    idx.shuffle(&mut net.rng);
    for (n, &i) in idx.iter().take(N / 5).enumerate() {
        net.nodes[i].behaviour = match n % 3 {
            0 => Behaviour::Drop,
            1 => Behaviour::Lie,
            _ => Behaviour::Junk,
        };
    }
    let mut publish = Stats::default();
    let services = populate(&mut net, 100, 0, &mut publish);
    publish.print("publish with 20% hostile");
    let mut stats = Stats::default();
    look_up_all(&mut net, &services, 2, T0 + 60_000, &mut stats);
    stats.print("lookups with 20% hostile (drop / lie / junk)");
    assert!(stats.ok * 100 >= stats.lookups * 95, "{stats:?}");
}

#[test]
fn storage_nodes_learn_no_address_no_key_and_nothing_repeats_across_epochs() {
    let mut net = Net::new(3);
    let mut publish = Stats::default();
    let services = populate(&mut net, 40, 0, &mut publish);
    let dump: Vec<([u8; 32], Vec<u8>)> = net.nodes.iter().flat_map(|n| n.store.dump()).collect();
    assert!(!dump.is_empty());
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    for s in &services {
        let a = s.key.verifying_key().to_bytes();
        for (k, rec) in &dump {
            for part in [&k[..], &rec[..]] {
                assert!(!contains(part, &s.address), "address in a storage database");
                assert!(!contains(part, &a), "service key in a storage database");
                assert!(!contains(part, &a[..12]));
            }
        }
    }
    // Each service was published for two epochs (T0 is inside the overlap): its records of one
    // epoch share no 16-byte run with those of the other, and the keys differ.
    let epochs = epochs_to_publish(T0 / 1000);
    assert_eq!(epochs.len(), 2);
    let mut checked = 0;
    for s in &services {
        let k0 = index(&s.address, epochs[0]);
        let k1 = index(&s.address, epochs[1]);
        assert_ne!(k0, k1);
        let r0: Vec<&Vec<u8>> = dump
            .iter()
            .filter(|(k, _)| *k == k0)
            .map(|(_, r)| r)
            .collect();
        let r1: Vec<&Vec<u8>> = dump
            .iter()
            .filter(|(k, _)| *k == k1)
            .map(|(_, r)| r)
            .collect();
        for x in &r0 {
            for y in &r1 {
                for w in x.windows(16) {
                    assert!(!contains(y, w), "a 16-byte run repeats across epochs");
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 0);
    let (total, max, avg) = storage_report(&net);
    println!(
        "40 services x 2 epochs: {total} bytes stored, {avg:.0} per node on average, max {max}"
    );
}
