//! The large-network scenario of issue #25 (`examples/simulate.rs`, `tests/sim_scale.rs`): relays,
//! clients and services joining over a warm-up, churn, descriptor lookups through the real DHT
//! client, and the figures users and attackers get (docs/simulation.md).
//!
//! Everything protocol-side is the real node code in [`Sim`]; this module only decides who joins,
//! leaves and looks up what, and reads counters and state the nodes already keep.
// Indices here are the scenario's own (members and nodes are pushed together and never removed),
// never bytes from a network, so indexing cannot be driven by an attacker.
#![allow(clippy::indexing_slicing)]

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use super::{NatKind, Sim, SimConfig};
pub use dhtq::DhtQueryFigures;
pub use trace::DhtPaths;
use trace::{dht_paths, tables};

mod dhtq;
mod reach;
mod report;
mod trace;
use crate::circuit::layer::CircEvent;
use crate::dht::descriptor::{epoch, index, Descriptor};
use crate::dht::message::RecordKind;
use crate::node::dht::{DhtOutcome, DhtQuery};
use crate::node::NodeEvent;
use crate::time::{Instant, Millis};
pub use report::{AdversaryFigures, ScaleReport};

/// A scenario.
#[derive(Debug, Clone)]
pub struct ScaleConfig {
    /// Nodes at the start (churn replaces nodes, so about this many run at any time).
    pub nodes: usize,
    /// Virtual minutes in all, warm-up included.
    pub minutes: u64,
    /// Share of the nodes that leave (and as many new ones that join) per virtual hour.
    pub churn_per_hour: f64,
    /// Seed of every choice.
    pub seed: u64,
    /// Share of the nodes that are public relays.
    pub relay_share: f64,
    /// Share of the non-relay nodes behind NAT.
    pub nat_share: f64,
    /// Share of the relays behind NAT, after the first five (the bootstrap set stays public).
    pub relay_nat_share: f64,
    /// Hidden services (each on its own host).
    pub services: usize,
    /// Descriptor lookups per virtual minute, from random clients to random services.
    pub lookups_per_min: f64,
    /// Reachability probes (an e2e PING from a random client to a random service, through a
    /// session) per virtual minute.
    pub probes_per_min: f64,
    /// Adversarial shares of the relays (by count) whose figures are reported.
    pub adversary: Vec<f64>,
    /// Virtual minutes before lookups and churn start (nodes join over its first half).
    pub warmup_min: u64,
    /// One-way latency, its uniform jitter and the loss rate of the underlay.
    pub latency_ms: Millis,
    /// See `latency_ms`.
    pub jitter_ms: Millis,
    /// See `latency_ms`.
    pub loss: f64,
    /// Run links and handshakes on the simulator's crypto stand-in (`crate::sim::crypto`);
    /// off by default, `examples/simulate.rs` turns it on.
    pub stand_in_crypto: bool,
}

impl ScaleConfig {
    /// The defaults for `nodes` nodes over `minutes` virtual minutes.
    pub fn new(nodes: usize, minutes: u64) -> ScaleConfig {
        ScaleConfig {
            nodes,
            minutes,
            churn_per_hour: 0.2,
            seed: 1,
            relay_share: 0.4,
            nat_share: 0.5,
            relay_nat_share: 0.0,
            services: (nodes / 100).max(3),
            lookups_per_min: (nodes as f64 / 50.0).max(10.0),
            probes_per_min: (nodes as f64 / 100.0).max(5.0),
            adversary: vec![0.05, 0.1],
            warmup_min: 5.min(minutes / 2),
            latency_ms: 20,
            jitter_ms: 60,
            loss: 0.005,
            stand_in_crypto: false,
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Relay,
    Client,
    Service(usize),
}

struct Member {
    role: Role,
    joined: Instant,
    nat: Option<NatKind>,
}

struct Pending {
    svc: usize,
    started: Instant,
}

/// A running scenario.
pub struct Scale {
    /// The network.
    pub sim: Sim,
    cfg: ScaleConfig,
    rng: StdRng,
    members: Vec<Member>,
    by_identity: BTreeMap<[u8; 32], usize>,
    /// Joins still to come: (when, role, NAT).
    to_join: Vec<(Instant, Role, Option<NatKind>)>,
    /// Service seed and host, and when the service was started.
    services: Vec<HostedService>,
    pending: BTreeMap<(usize, u64), Pending>,
    lookup_ms: Vec<u64>,
    lookups_ok: u64,
    lookups_done: u64,
    failures: BTreeMap<String, u64>,
    /// Lookups whose descriptor named an intro point that was running (`intro_up_share`).
    intro_up: u64,
    reach: reach::Reach,
    build_ms: Vec<u64>,
    closures: u64,
    relay_deaths: usize,
    relayed_at_death: usize,
    left: usize,
    joined: usize,
    churn_due: f64,
    lookups_due: f64,
    /// Per adversary level: its relays, and per member the minute it first had one as guard.
    adversaries: Vec<Adversary>,
    start: Instant,
    warm: Instant,
    /// Counters at the end of the warm-up: DHT requests, PEX answered, datagrams.
    at_warm: Option<(u64, u64, u64)>,
    /// Mean table sizes per node at the end of the warm-up (the memory trace).
    tables_at_warm: BTreeMap<String, f64>,
    /// What discarded nodes contributed before they left (their state is freed).
    dead: Dead,
}

/// Figures of churned-out nodes, read before [`Sim::discard`] freed them.
#[derive(Default)]
struct Dead {
    requests_out: u64,
    pex_answered: u64,
    built: u64,
    failed: u64,
    /// (node, blinded key it saw as a last hop or held as a replica).
    learned: Vec<(usize, [u8; 32])>,
    /// Their session setup failures by reason.
    setup_failures: BTreeMap<String, u64>,
    /// Their DHT query times and relay-record lookups.
    times: dhtq::DeadTimes,
}

/// A service: its seed, its address, its host and when it was started.
type HostedService = ([u8; 32], [u8; 16], Option<usize>, Option<Instant>);
/// One adversary level: its relays, and per member the minute it first had one as guard.
type Adversary = (BTreeSet<[u8; 32]>, BTreeMap<usize, Instant>);

fn relay_stats(sim: &Sim) -> (u64, u64, u64) {
    let mut t = (0, 0, 0);
    for n in &sim.nodes {
        if let Some(r) = n.node.dht_relay() {
            t.0 += r.stats().requests_out;
        }
        t.1 += n.node.link.stats().pex_answered;
    }
    t.2 = sim.delivered + sim.lost + sim.nat_dropped;
    t
}

fn percentile(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v.get(i).copied().unwrap_or(0)
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

impl Scale {
    /// Sets the network up: bootstrap relays now, the other nodes spread over the first half of
    /// the warm-up.
    pub fn new(cfg: ScaleConfig) -> Scale {
        let sim = Sim::new(SimConfig {
            latency_ms: cfg.latency_ms,
            jitter_ms: cfg.jitter_ms,
            loss: cfg.loss,
            seed: cfg.seed,
            stand_in_crypto: cfg.stand_in_crypto,
            ..SimConfig::default()
        });
        let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x5ca1e);
        let start = sim.now;
        let warm = start + cfg.warmup_min * 60_000;
        let relays = ((cfg.nodes as f64 * cfg.relay_share).round() as usize).max(4);
        let hosts = cfg.nodes.saturating_sub(relays);
        let services: Vec<_> = (0..cfg.services.min(hosts))
            .map(|s| {
                let mut seed = [0u8; 32];
                seed[..8].copy_from_slice(&cfg.seed.to_be_bytes());
                seed[8..16].copy_from_slice(&(s as u64).to_be_bytes());
                seed[16] = 0x5e;
                let addr = crate::session::ServiceIdentity::from_seed(&seed)
                    .address()
                    .octets();
                (seed, addr, None, None)
            })
            .collect();
        let spread = (cfg.warmup_min * 60_000 / 2).max(1);
        let mut to_join = Vec::new();
        for i in 0..cfg.nodes {
            let role = if i < relays {
                Role::Relay
            } else if i - relays < services.len() {
                Role::Service(i - relays)
            } else {
                Role::Client
            };
            let natted = if role == Role::Relay {
                // No draw while relays are all public: runs repeat the figures of older ones.
                cfg.relay_nat_share > 0.0 && i >= 5 && rng.gen_bool(cfg.relay_nat_share)
            } else {
                rng.gen_bool(cfg.nat_share)
            };
            let nat = natted.then(|| random_nat(&mut rng));
            // Relays first (the first few at once: the bootstrap set), hosts after.
            let at = if i < 5 {
                start
            } else if role == Role::Relay {
                start + rng.gen_range(0..spread / 2)
            } else {
                start + spread / 2 + rng.gen_range(0..spread / 2)
            };
            to_join.push((at, role, nat));
        }
        // Latest first, so that due joins pop off the end.
        to_join.sort_by_key(|j| Reverse(j.0));
        let adversaries = cfg
            .adversary
            .iter()
            .map(|_| (BTreeSet::new(), BTreeMap::new()))
            .collect();
        Scale {
            sim,
            rng,
            members: Vec::new(),
            by_identity: BTreeMap::new(),
            to_join,
            services,
            pending: BTreeMap::new(),
            lookup_ms: Vec::new(),
            lookups_ok: 0,
            lookups_done: 0,
            failures: BTreeMap::new(),
            intro_up: 0,
            reach: reach::Reach::default(),
            build_ms: Vec::new(),
            closures: 0,
            relay_deaths: 0,
            relayed_at_death: 0,
            dead: Dead::default(),
            left: 0,
            joined: 0,
            churn_due: 0.0,
            lookups_due: 0.0,
            adversaries,
            start,
            warm,
            at_warm: None,
            tables_at_warm: BTreeMap::new(),
            cfg,
        }
    }

    fn add(&mut self, role: Role, nat: Option<NatKind>) {
        // Bootstrap from two running public relays among the first ones (the shipped config
        // lists a few well-known relays). A relay behind NAT cannot be one: its NAT drops a
        // stranger's handshake (and the simulator's bootstrap address is its inside one), so
        // with 80% of relays NATed most new nodes drew two unreachable peers and never linked
        // (issue #20: no service published, no lookup found a descriptor).
        let boot: Vec<usize> = (0..self.members.len().min(64))
            .filter(|&i| {
                self.members[i].role == Role::Relay
                    && self.members[i].nat.is_none()
                    && self.sim.nodes[i].alive
            })
            .collect();
        let boot: Vec<usize> = boot.choose_multiple(&mut self.rng, 2).copied().collect();
        let relay = role == Role::Relay;
        let links = if relay { 8 } else { 6 };
        let i = match nat {
            Some(k) => self.sim.add_node_behind(relay, &boot, links, &[k]),
            None => self.sim.add_node(relay, &boot, links),
        };
        if relay {
            self.sim.nodes[i].node.dht_observe(true);
        }
        if role == Role::Client {
            // A client needs an identity to open sessions (the reachability probes): the
            // daemon makes one from the OS generator, the scenario from its seed.
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&self.cfg.seed.to_be_bytes());
            seed[8..16].copy_from_slice(&(i as u64).to_be_bytes());
            seed[16] = 0xc1;
            self.sim.nodes[i].node.set_client_identity(seed, Vec::new());
        }
        if !relay {
            // Where a probe's PING went, when it gets no PONG (issue #25).
            self.sim.nodes[i].node.session_test_hooks().trace_pings = Some(Default::default());
        }
        let id = self.sim.nodes[i].identity;
        self.by_identity.insert(id, i);
        if let Role::Service(s) = role {
            if let Some(svc) = self.services.get_mut(s) {
                svc.2 = Some(i);
            }
        }
        self.members.push(Member {
            role,
            joined: self.sim.now,
            nat,
        });
        if relay {
            // Adversarial relays: a share of the relays by count, nested (the 5% set is part of
            // the 10% set), drawn as relays join.
            let u: f64 = self.rng.gen();
            for (k, share) in self.cfg.adversary.clone().iter().enumerate() {
                if u < *share {
                    if let Some(a) = self.adversaries.get_mut(k) {
                        a.0.insert(id);
                    }
                }
            }
        }
    }

    /// Runs the whole scenario, calling `progress` once per virtual minute with a line to print
    /// and `heap` (live heap bytes, 0 if unknown) at the end.
    pub fn run(&mut self, progress: &mut dyn FnMut(&str), heap: &dyn Fn() -> u64) -> ScaleReport {
        let wall = std::time::Instant::now();
        let end = self.start + self.cfg.minutes * 60_000;
        let mut next_minute = self.start + 60_000;
        while self.sim.now < end {
            self.step();
            if self.sim.now >= next_minute {
                next_minute += 60_000;
                self.watch_guards();
                let alive = self.sim.nodes.iter().filter(|n| n.alive).count();
                // Links per running node: they grew without bound before links without
                // circuits were closed (docs/simulation.md, heap growth).
                let links: usize = self
                    .sim
                    .nodes
                    .iter()
                    .filter(|n| n.alive)
                    .map(|n| n.node.link.peers(self.sim.now).len())
                    .sum();
                progress(&format!(
                    "[simulate] {:>3}/{} min  wall {:>6.1} s  nodes {alive} running ({} made)  lookups {}/{} ok  reached {}/{}  circuits {} built  links/node {:.1}  heap {} MiB",
                    (self.sim.now - self.start) / 60_000,
                    self.cfg.minutes,
                    wall.elapsed().as_secs_f64(),
                    self.sim.nodes.len(),
                    self.lookups_ok,
                    self.lookups_done,
                    self.reach.ok,
                    self.reach.done,
                    self.dead.built
                        + self.sim.nodes.iter().map(|n| n.node.circ.stats().built).sum::<u64>(),
                    links as f64 / alive.max(1) as f64,
                    heap() >> 20,
                ));
            }
        }
        self.report(heap(), wall.elapsed().as_secs_f64())
    }

    /// One virtual second: joins, leaves, services, lookups, then the network, then the events.
    fn step(&mut self) {
        let now = self.sim.now;
        while self.to_join.last().is_some_and(|j| j.0 <= now) {
            if let Some((_, role, nat)) = self.to_join.pop() {
                self.add(role, nat);
            }
        }
        // A service starts a minute after its host joined (links, view, guards first).
        for s in 0..self.services.len() {
            let (seed, _, host, started) = self.services[s];
            if let (Some(h), None) = (host, started) {
                if now >= self.members[h].joined + 60_000 {
                    self.sim.nodes[h].node.add_service(now, seed);
                    self.sim.flush(h);
                    self.services[s].3 = Some(now);
                }
            }
        }
        if now >= self.warm {
            if self.at_warm.is_none() {
                self.at_warm = Some(relay_stats(&self.sim));
                self.tables_at_warm = tables(&self.sim);
            }
            self.churn();
            self.lookups();
            self.probes();
        }
        self.sim.run_for(1_000);
        self.read_events();
    }

    fn churn(&mut self) {
        self.churn_due += self.cfg.nodes as f64 * self.cfg.churn_per_hour / 3_600.0;
        while self.churn_due >= 1.0 {
            self.churn_due -= 1.0;
            // Leave: a running relay or client (services and the first relays, the bootstrap
            // set, stay: the figures are about the network, not about services going away).
            let candidates = self.sim.nodes.len();
            let mut victim = None;
            for _ in 0..32 {
                let i = self.rng.gen_range(5..candidates.max(6));
                if self.sim.nodes.get(i).is_some_and(|n| n.alive)
                    && !matches!(self.members.get(i).map(|m| m.role), Some(Role::Service(_)))
                {
                    victim = Some(i);
                    break;
                }
            }
            let Some(v) = victim else { continue };
            let role = self.members[v].role;
            if role == Role::Relay {
                self.relay_deaths += 1;
                self.relayed_at_death += self.sim.nodes[v].node.circ.relayed_count();
            }
            self.bury(v);
            self.left += 1;
            // Join: a new node of the same kind.
            let nat = self.members[v].nat;
            self.add(role, nat);
            self.joined += 1;
        }
    }

    /// Kills node `v`, keeps the figures it contributed and frees its state.
    fn bury(&mut self, v: usize) {
        let now = self.sim.now;
        let e = epoch(now.as_unix_ms() / 1000);
        let n = &self.sim.nodes[v].node;
        let s = n.circ.stats();
        self.dead.built += s.built;
        self.dead.failed += s.build_failures;
        self.dead.pex_answered += n.link.stats().pex_answered;
        self.dead.times.bury(n);
        for (k, c) in &n.session_stats().setup_failures {
            *self.dead.setup_failures.entry(k.clone()).or_default() += c;
        }
        for seen in n.dht_observed() {
            self.dead.learned.push((v, seen.key));
        }
        if let Some(r) = n.dht_relay() {
            self.dead.requests_out += r.stats().requests_out;
            for x in &self.services {
                let k = index(&x.1, e);
                if r.store.get(&k, RecordKind::Descriptor, 0, now).1.is_some() {
                    self.dead.learned.push((v, k));
                }
            }
        }
        self.sim.discard(v);
    }

    fn lookups(&mut self) {
        self.lookups_due += self.cfg.lookups_per_min / 60.0;
        let now = self.sim.now;
        let ready: Vec<usize> = (0..self.services.len())
            .filter(|&s| self.services[s].3.is_some_and(|t| now >= t + 60_000))
            .collect();
        while self.lookups_due >= 1.0 {
            self.lookups_due -= 1.0;
            let Some(&s) = ready.choose(&mut self.rng) else {
                continue;
            };
            let Some(c) = self.random_client(now) else {
                continue;
            };
            let key = index(&self.services[s].1, epoch(now.as_unix_ms() / 1000));
            let q = DhtQuery::FindValue {
                kind: RecordKind::Descriptor,
                key,
            };
            let token = self.sim.nodes[c].node.dht_query(now, q, false);
            self.sim.nodes[c].node.pump(now);
            self.sim.flush(c);
            self.pending.insert(
                (c, token),
                Pending {
                    svc: s,
                    started: now,
                },
            );
        }
    }

    /// A random client that has run for a minute.
    fn random_client(&mut self, now: Instant) -> Option<usize> {
        for _ in 0..32 {
            let i = self.rng.gen_range(0..self.members.len());
            let m = &self.members[i];
            if m.role == Role::Client && self.sim.nodes[i].alive && now >= m.joined + 60_000 {
                return Some(i);
            }
        }
        None
    }

    fn read_events(&mut self) {
        let now = self.sim.now;
        let mut done = Vec::new();
        let mut pongs = Vec::new();
        let mut unreachable = Vec::new();
        for (i, n) in self.sim.nodes.iter_mut().enumerate() {
            for e in n.events.drain(..) {
                match e {
                    NodeEvent::Dht { token, outcome } => done.push((i, token, outcome)),
                    NodeEvent::Pong { id, .. } => pongs.push((i, id)),
                    NodeEvent::Unreachable { dst, why } => unreachable.push((i, dst, why)),
                    NodeEvent::Circuit(CircEvent::Built { build_ms, .. }) => {
                        self.build_ms.push(build_ms)
                    }
                    NodeEvent::Circuit(CircEvent::Closed { .. }) => self.closures += 1,
                    _ => {}
                }
            }
        }
        for (i, id) in pongs {
            self.on_pong(i, id);
        }
        for (i, dst, why) in unreachable {
            self.on_unreachable(i, dst, &why);
        }
        self.expire_probes();
        for (i, token, outcome) in done {
            if let Some(p) = self.pending.remove(&(i, token)) {
                self.finish(p, Some(outcome));
            }
        }
        // A lookup without an answer in two minutes failed (the client gave up long before).
        let late: Vec<(usize, u64)> = self
            .pending
            .iter()
            .filter(|(_, p)| now > p.started + 120_000)
            .map(|(k, _)| *k)
            .collect();
        for k in late {
            if let Some(p) = self.pending.remove(&k) {
                self.finish(p, None);
            }
        }
    }

    fn finish(&mut self, p: Pending, outcome: Option<DhtOutcome>) {
        let now = self.sim.now;
        self.lookups_done += 1;
        let rs = match outcome {
            Some(DhtOutcome::Records(rs)) => rs,
            other => {
                let why = match other {
                    None => "no_answer".to_string(),
                    Some(DhtOutcome::NotFound) => "not_found".to_string(),
                    Some(DhtOutcome::Failed(why)) => why,
                    Some(_) => "other".to_string(),
                };
                *self.failures.entry(why).or_default() += 1;
                return;
            }
        };
        let addr = self.services[p.svc].1;
        let e = epoch(p.started.as_unix_ms() / 1000);
        let opened = rs
            .iter()
            .find_map(|b| Descriptor::parse_and_open(b, &addr, e, now.as_unix_ms()).ok());
        let Some(d) = opened else {
            *self.failures.entry("unopened".to_string()).or_default() += 1;
            return;
        };
        self.lookups_ok += 1;
        self.lookup_ms.push(now - p.started);
        let up = d.intro_points.iter().any(|ip| {
            self.by_identity
                .get(&ip.identity)
                .is_some_and(|&i| self.sim.nodes[i].alive)
        });
        if up {
            self.intro_up += 1;
        }
    }

    /// Once a minute: which hosts hold an adversarial relay among their guards.
    fn watch_guards(&mut self) {
        let now = self.sim.now;
        for (i, m) in self.members.iter().enumerate() {
            if m.role == Role::Relay || !self.sim.nodes[i].alive {
                continue;
            }
            let guards = self.sim.nodes[i].node.guards().list();
            for (bad, first) in &mut self.adversaries {
                if !first.contains_key(&i) && guards.iter().any(|g| bad.contains(&g.identity)) {
                    first.insert(i, now);
                }
            }
        }
    }

    fn bad_guard(&self, i: usize, bad: &BTreeSet<[u8; 32]>) -> bool {
        self.sim.nodes[i]
            .node
            .guards()
            .list()
            .iter()
            .any(|g| bad.contains(&g.identity))
    }
}

fn random_nat(rng: &mut StdRng) -> NatKind {
    // Home routers are mostly port-restricted (Linux masquerade); some are symmetric.
    match rng.gen_range(0..20) {
        0..=13 => NatKind::PortRestricted,
        14..=16 => NatKind::AddressRestricted,
        _ => NatKind::Symmetric,
    }
}
