//! The in-process network: many nodes' state machines in one process, joined by an in-memory
//! datagram transport with latency, jitter and loss, under virtual time. No root, no sockets,
//! deterministic for a seed (DESIGN.md section 10).
//!
//! Each node is the same [`LinkLayer`] the daemon runs; later layers add their state machines to
//! [`SimNode`]. Virtual time starts at [`SIM_EPOCH`] so records and expiries behave as on a real
//! clock.

use ed25519_dalek::SigningKey;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::budget::MemoryBudget;
use crate::circuit::OnionKey;
use crate::link::{LinkConfig, LinkKeys, LinkLayer};
use crate::node::{Node, NodeEvent};
use crate::time::Millis;

/// Virtual time at the start of every simulation (2027-01-15, Unix milliseconds).
pub const SIM_EPOCH: Millis = 1_800_000_000_000;

/// Network conditions of a simulation.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// One-way latency.
    pub latency_ms: Millis,
    /// Extra uniform random latency (reorders datagrams).
    pub jitter_ms: Millis,
    /// Fraction of datagrams lost.
    pub loss: f64,
    /// Seed of every random choice (keys, loss, the nodes' own randomness).
    pub seed: u64,
    /// Memory budget per node.
    pub budget: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            latency_ms: 10,
            jitter_ms: 0,
            loss: 0.0,
            seed: 1,
            budget: 64 << 20,
        }
    }
}

/// One node of the simulation.
pub struct SimNode {
    /// Its underlay address.
    pub addr: SocketAddr,
    /// Its protocol state (link and circuit layers).
    pub node: Node,
    /// Events it produced, oldest first.
    pub events: Vec<NodeEvent>,
    /// Whether it runs (a dead node neither receives nor wakes).
    pub alive: bool,
    /// Its relay identity.
    pub identity: [u8; 32],
    /// Its link key.
    pub link_key: [u8; 32],
}

/// A datagram in flight: delivery time, sequence (ties), destination node, source, bytes.
type InFlight = Reverse<(Millis, u64, usize, SocketAddr, Vec<u8>)>;

/// The simulated network.
pub struct Sim {
    /// Virtual now.
    pub now: Millis,
    /// The nodes.
    pub nodes: Vec<SimNode>,
    by_addr: HashMap<SocketAddr, usize>,
    queue: BinaryHeap<InFlight>,
    timers: BinaryHeap<Reverse<(Millis, usize)>>,
    wake: Vec<Millis>,
    rng: StdRng,
    cfg: SimConfig,
    seq: u64,
    /// Datagrams delivered.
    pub delivered: u64,
    /// Datagrams lost (by the loss rate or to dead or unknown nodes).
    pub lost: u64,
}

fn derive(seed: u64, what: &str, i: usize) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"globalnet sim key");
    h.update(seed.to_be_bytes());
    h.update(what.as_bytes());
    h.update((i as u64).to_be_bytes());
    h.finalize().into()
}

/// The underlay address of the i-th node: 198.18.0.0/15, one /32 each.
pub fn sim_addr(i: usize) -> SocketAddr {
    let n = u32::from(Ipv4Addr::new(198, 18, 0, 1)) + i as u32;
    SocketAddr::from((Ipv4Addr::from(n), 7412))
}

impl Sim {
    /// An empty network.
    pub fn new(cfg: SimConfig) -> Sim {
        Sim {
            now: SIM_EPOCH,
            nodes: Vec::new(),
            by_addr: HashMap::new(),
            queue: BinaryHeap::new(),
            timers: BinaryHeap::new(),
            wake: Vec::new(),
            rng: StdRng::seed_from_u64(cfg.seed),
            cfg,
            seq: 0,
            delivered: 0,
            lost: 0,
        }
    }

    /// Adds a node. `relay` nodes advertise their address; `bootstrap` lists node indices.
    pub fn add_node(&mut self, relay: bool, bootstrap: &[usize], target_links: usize) -> usize {
        let i = self.nodes.len();
        let addr = sim_addr(i);
        let identity = SigningKey::from_bytes(&derive(self.cfg.seed, "identity", i));
        let link = StaticSecret::from(derive(self.cfg.seed, "link", i));
        let onion = StaticSecret::from(derive(self.cfg.seed, "onion", i));
        let ident_pub = identity.verifying_key().to_bytes();
        let link_pub = PublicKey::from(&link).to_bytes();
        let cfg = LinkConfig {
            relay,
            advertise: if relay { vec![addr] } else { Vec::new() },
            bootstrap: bootstrap.iter().map(|&b| sim_addr(b)).collect(),
            target_links,
            max_links: 1024,
            prefix_bits: (32, 128),
        };
        let keys = LinkKeys {
            identity,
            link,
            onion_public: PublicKey::from(&onion).to_bytes(),
        };
        let seed = self.cfg.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let budget = MemoryBudget::new(self.cfg.budget);
        let layer = LinkLayer::new(cfg, keys, budget, seed, self.now);
        let node = Node::new(layer, OnionKey::from_secret(onion), seed, self.now);
        self.nodes.push(SimNode {
            addr,
            node,
            events: Vec::new(),
            alive: true,
            identity: ident_pub,
            link_key: link_pub,
        });
        self.by_addr.insert(addr, i);
        self.wake.push(self.now);
        self.timers.push(Reverse((self.now, i)));
        i
    }

    /// Stops a node at once, as if its host lost power.
    pub fn kill(&mut self, i: usize) {
        if let Some(n) = self.nodes.get_mut(i) {
            n.alive = false;
        }
    }

    /// Moves a node to a new underlay address, as a NAT rebinding or a roaming laptop does. Its
    /// sessions stay; peers must follow it to the new address.
    pub fn rebind(&mut self, i: usize, addr: SocketAddr) {
        let Some(n) = self.nodes.get_mut(i) else {
            return;
        };
        self.by_addr.remove(&n.addr);
        n.addr = addr;
        self.by_addr.insert(addr, i);
    }

    /// Injects a datagram as if `from` had sent it to node `to` (arrives after the latency).
    pub fn inject(&mut self, from: SocketAddr, to: usize, data: Vec<u8>) {
        self.seq += 1;
        let at = self.now + self.cfg.latency_ms;
        self.queue.push(Reverse((at, self.seq, to, from, data)));
    }

    fn collect(&mut self, i: usize) {
        let Some(node) = self.nodes.get_mut(i) else {
            return;
        };
        let from = node.addr;
        let mut out = Vec::new();
        while let Some(t) = node.node.poll_transmit() {
            out.push(t);
        }
        node.events.extend(node.node.drain_events());
        let next = node.node.poll_timeout();
        for t in out {
            let lost = self.rng.gen_bool(self.cfg.loss.clamp(0.0, 1.0));
            match self.by_addr.get(&t.dst).copied() {
                Some(to) if !lost => {
                    let jitter = if self.cfg.jitter_ms > 0 {
                        self.rng.gen_range(0..=self.cfg.jitter_ms)
                    } else {
                        0
                    };
                    self.seq += 1;
                    let at = self.now + self.cfg.latency_ms + jitter;
                    self.queue.push(Reverse((at, self.seq, to, from, t.data)));
                }
                _ => self.lost += 1,
            }
        }
        if let Some(at) = next {
            let at = at.max(self.now);
            if let Some(w) = self.wake.get_mut(i) {
                *w = at;
            }
            self.timers.push(Reverse((at, i)));
        }
    }

    /// Runs until virtual time `until`.
    pub fn run_until(&mut self, until: Millis) {
        loop {
            let next_dgram = self.queue.peek().map(|Reverse((t, ..))| *t);
            let next_timer = loop {
                match self.timers.peek().copied() {
                    // Skip stale timer entries (superseded by a later poll_timeout).
                    Some(Reverse((t, i))) if self.wake.get(i) != Some(&t) => {
                        self.timers.pop();
                    }
                    Some(Reverse((t, _))) => break Some(t),
                    None => break None,
                }
            };
            let next = match (next_dgram, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).unwrap_or(until),
            };
            if next > until {
                break;
            }
            self.now = next;
            if next_dgram == Some(next) {
                if let Some(Reverse((_, _, to, from, data))) = self.queue.pop() {
                    let alive = self.nodes.get(to).is_some_and(|n| n.alive);
                    if alive {
                        self.delivered += 1;
                        if let Some(n) = self.nodes.get_mut(to) {
                            n.node.handle_datagram(self.now, from, &data);
                            n.node.recycle(data);
                        }
                        self.collect(to);
                    } else {
                        self.lost += 1;
                    }
                }
            } else if let Some(Reverse((_, i))) = self.timers.pop() {
                if self.wake.get(i) == Some(&next) {
                    if let Some(w) = self.wake.get_mut(i) {
                        *w = Millis::MAX;
                    }
                    let alive = self.nodes.get(i).is_some_and(|n| n.alive);
                    if alive {
                        if let Some(n) = self.nodes.get_mut(i) {
                            n.node.handle_timeout(self.now);
                        }
                        self.collect(i);
                    }
                }
            }
        }
        self.now = until;
    }

    /// Runs for `ms` more milliseconds of virtual time.
    pub fn run_for(&mut self, ms: Millis) {
        let until = self.now + ms;
        self.run_until(until);
    }

    /// Index of the node with this relay identity.
    pub fn node_by_identity(&self, identity: &[u8; 32]) -> Option<usize> {
        self.nodes.iter().position(|n| &n.identity == identity)
    }
}
