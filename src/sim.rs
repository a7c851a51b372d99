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
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::budget::MemoryBudget;
use crate::circuit::OnionKey;
use crate::crypto::Randomness;
use crate::link::{LinkConfig, LinkKeys, LinkLayer};
use crate::node::{Node, NodeEvent};
use crate::time::{Instant, Millis};

pub mod crypto;
pub mod scale;

/// Virtual time at the start of every simulation (2027-01-15, Unix milliseconds).
pub const SIM_EPOCH: Instant = Instant::from_unix_ms(1_800_000_000_000);

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
    /// Links and handshakes use the cheap stand-in of [`crypto`] instead of X25519 and
    /// WireGuard (the large scenario; the tests keep real crypto).
    pub stand_in_crypto: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            latency_ms: 10,
            jitter_ms: 0,
            loss: 0.0,
            seed: 1,
            budget: 64 << 20,
            stand_in_crypto: false,
        }
    }
}

/// How a simulated NAT box maps and filters (modelled on Tailscale's natlab and on Linux
/// conntrack with nftables `masquerade`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// Endpoint-independent mapping, no filtering (a port forward).
    FullCone,
    /// Endpoint-independent mapping; inbound only from IPs the mapping sent to.
    AddressRestricted,
    /// Endpoint-independent mapping; inbound only from exact endpoints it sent to (`masquerade`).
    PortRestricted,
    /// A new random port per destination, port-restricted filtering (`masquerade fully-random`).
    Symmetric,
}

/// A mapping is forgotten after this long without traffic (conntrack's UDP timeout).
pub const NAT_MAPPING_TIMEOUT_MS: Millis = 30_000;

struct Mapping {
    port: u16,
    inner: SocketAddr,
    peers: HashMap<SocketAddr, Instant>,
    last: Instant,
}

struct NatBox {
    public_ip: Ipv4Addr,
    kind: NatKind,
    /// The box this one sits behind (double NAT).
    parent: Option<usize>,
    /// (inner source, destination for symmetric NATs) -> mapping.
    mappings: HashMap<(SocketAddr, Option<SocketAddr>), Mapping>,
    by_port: HashMap<u16, (SocketAddr, Option<SocketAddr>)>,
    next_port: u16,
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
    /// The innermost NAT box it sits behind, if any.
    nat: Option<usize>,
}

/// A datagram in flight: delivery time, sequence (ties), destination (a node by index, or an
/// address resolved through NAT boxes on arrival), source, bytes.
type InFlight = Reverse<(Instant, u64, Dest, SocketAddr, Vec<u8>)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Dest {
    Node(usize),
    Addr(SocketAddr),
}

/// What a [`Sim::tap`] does with a datagram a node sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tap {
    /// Send it as usual.
    Pass,
    /// Lose it.
    Drop,
    /// Keep it in [`Sim::held`]; a test delivers it later with [`Sim::inject`] (reordering) or
    /// more than once (duplication).
    Hold,
}

/// A test's hook on sent datagrams: the sending node, the destination and the datagram.
pub type TapFn = Box<dyn FnMut(usize, SocketAddr, &[u8]) -> Tap + Send>;

/// The simulated network.
pub struct Sim {
    /// Virtual now.
    pub now: Instant,
    /// The nodes.
    pub nodes: Vec<SimNode>,
    by_addr: HashMap<SocketAddr, usize>,
    queue: BinaryHeap<InFlight>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    wake: Vec<Instant>,
    rng: StdRng,
    cfg: SimConfig,
    seq: u64,
    /// Datagrams delivered.
    pub delivered: u64,
    /// Datagrams lost (by the loss rate or to dead or unknown nodes).
    pub lost: u64,
    /// Datagrams a NAT box dropped (no mapping, or filtered).
    pub nat_dropped: u64,
    /// Pairs of underlay IPs that cannot reach each other (either direction): a firewall
    /// between two networks, for tests of fallbacks and recovery.
    pub blocked: Vec<(IpAddr, IpAddr)>,
    /// An underlay IP whose incoming datagrams are counted in `watched_datagrams` (a victim
    /// address in reflection tests; it need not belong to a node).
    pub watched: Option<IpAddr>,
    /// Datagrams sent to `watched`, by source IP (a NATed node's is its NAT's public IP).
    pub watched_datagrams: HashMap<IpAddr, u64>,
    /// Decides the fate of every datagram a node sends, when set (tests of reordering, loss and
    /// duplication of particular messages).
    pub tap: Option<TapFn>,
    /// Datagrams the tap held: the sending node's address, the destination, the bytes.
    pub held: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    boxes: Vec<NatBox>,
    /// NAT boxes by public IP: resolving an inbound datagram must not scan every box.
    box_by_ip: HashMap<Ipv4Addr, usize>,
    /// Running digest of every datagram handed to a node (time, source, node, length, type), when
    /// [`Sim::record_trace`] turned it on: two runs of one seed must end with the same digest.
    trace: Option<Sha256>,
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
        crypto::SimCrypto::set_dh(cfg.stand_in_crypto);
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
            nat_dropped: 0,
            blocked: Vec::new(),
            watched: None,
            watched_datagrams: HashMap::new(),
            tap: None,
            held: Vec::new(),
            boxes: Vec::new(),
            box_by_ip: HashMap::new(),
            trace: None,
        }
    }

    /// Adds a node. `relay` nodes advertise their address; `bootstrap` lists node indices.
    pub fn add_node(&mut self, relay: bool, bootstrap: &[usize], target_links: usize) -> usize {
        self.add_node_behind(relay, bootstrap, target_links, &[])
    }

    /// Adds a node behind a chain of NAT boxes (`nats[0]` is the one next to the node; two
    /// entries make a double NAT). Each box is its own; the node has a private address and
    /// advertises nothing, so it learns its endpoint by reflection.
    pub fn add_node_behind(
        &mut self,
        relay: bool,
        bootstrap: &[usize],
        target_links: usize,
        nats: &[NatKind],
    ) -> usize {
        let i = self.nodes.len();
        let mut inner = None;
        for kind in nats.iter().rev() {
            let b = self.boxes.len();
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 128, 1)) + b as u32);
            self.box_by_ip.insert(ip, b);
            self.boxes.push(NatBox {
                public_ip: ip,
                kind: *kind,
                parent: inner,
                mappings: HashMap::new(),
                by_port: HashMap::new(),
                next_port: 20_000 + (b as u16 % 100) * 100,
            });
            inner = Some(b);
        }
        let addr = if inner.is_some() {
            let n = u32::from(Ipv4Addr::new(10, 0, 0, 1)) + i as u32;
            SocketAddr::from((Ipv4Addr::from(n), 7412))
        } else {
            sim_addr(i)
        };
        let identity = SigningKey::from_bytes(&derive(self.cfg.seed, "identity", i));
        let link = StaticSecret::from(derive(self.cfg.seed, "link", i));
        let onion = StaticSecret::from(derive(self.cfg.seed, "onion", i));
        let ident_pub = identity.verifying_key().to_bytes();
        let link_pub = PublicKey::from(&link).to_bytes();
        let cfg = LinkConfig {
            relay,
            advertise: if relay && inner.is_none() {
                vec![addr]
            } else {
                Vec::new()
            },
            bootstrap: bootstrap
                .iter()
                .map(|&b| crate::link::BootstrapPeer::Addr(sim_addr(b)))
                .collect(),
            target_links,
            max_links: 1024,
            prefix_bits: (32, 128),
            exit: false,
        };
        let keys = LinkKeys {
            identity,
            link,
            onion_public: PublicKey::from(&onion).to_bytes(),
        };
        let budget = MemoryBudget::new(self.cfg.budget);
        // Seeded secrets too, so a failing seed replays byte for byte: the simulator is the one
        // place allowed to (crate::crypto::rng).
        let link_rand = Randomness::simulated(derive(self.cfg.seed, "link choices", i));
        let mut layer = LinkLayer::new(cfg, keys, budget, link_rand, self.now);
        layer.run_in_virtual_time();
        if self.cfg.stand_in_crypto {
            layer.use_sim_crypto(crypto::SimCrypto::new());
        }
        let rand = Randomness::simulated(derive(self.cfg.seed, "node randomness", i));
        let node = Node::new(layer, OnionKey::from_secret(onion), rand, self.now);
        self.nodes.push(SimNode {
            addr,
            node,
            events: Vec::new(),
            alive: true,
            identity: ident_pub,
            link_key: link_pub,
            nat: inner,
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

    /// Stops a node for good and frees its state (links, circuits, DHT store), keeping its slot
    /// so node indices stay valid: at scale, churned-out nodes would otherwise hold their memory
    /// to the end of the run. Read whatever figures the node has before calling this.
    pub fn discard(&mut self, i: usize) {
        let now = self.now;
        let budget = self.cfg.budget;
        if let Some(n) = self.nodes.get_mut(i) {
            n.alive = false;
            n.events = Vec::new();
            n.node = Self::placeholder(budget, now);
        }
        if let Some(w) = self.wake.get_mut(i) {
            *w = Instant::MAX;
        }
    }

    /// The smallest node there is, for a discarded slot: never started, never woken.
    fn placeholder(budget: usize, now: Instant) -> Node {
        let cfg = LinkConfig {
            relay: false,
            advertise: Vec::new(),
            bootstrap: Vec::new(),
            target_links: 0,
            max_links: 0,
            prefix_bits: (32, 128),
            exit: false,
        };
        let keys = LinkKeys {
            identity: SigningKey::from_bytes(&[1; 32]),
            link: StaticSecret::from([2; 32]),
            onion_public: [0; 32],
        };
        let layer = LinkLayer::new(
            cfg,
            keys,
            MemoryBudget::new(budget),
            Randomness::simulated([3; 32]),
            now,
        );
        Node::new(
            layer,
            OnionKey::from_secret(StaticSecret::from([4; 32])),
            Randomness::simulated([5; 32]),
            now,
        )
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
        self.queue
            .push(Reverse((at, self.seq, Dest::Node(to), from, data)));
    }

    /// Forgets every mapping of the NAT boxes in front of node `i`, as a NAT reboot or a
    /// conntrack flush does: the node's next datagrams get new public ports.
    pub fn flush_nat(&mut self, i: usize) {
        let mut b = self.nodes.get(i).and_then(|n| n.nat);
        while let Some(x) = b {
            let Some(nb) = self.boxes.get_mut(x) else {
                break;
            };
            nb.mappings.clear();
            nb.by_port.clear();
            nb.next_port = nb.next_port.wrapping_add(1000).max(1024);
            b = nb.parent;
        }
    }

    /// The public address of the outermost NAT box in front of node `i` (its own address if it
    /// has none).
    pub fn public_ip(&self, i: usize) -> Option<IpAddr> {
        let n = self.nodes.get(i)?;
        let mut b = n.nat?;
        loop {
            let nb = self.boxes.get(b)?;
            match nb.parent {
                Some(p) => b = p,
                None => return Some(IpAddr::V4(nb.public_ip)),
            }
        }
    }

    /// Outbound through box `b`: the public source address for `src` sending to `dst`.
    fn translate(&mut self, b: usize, src: SocketAddr, dst: SocketAddr) -> SocketAddr {
        let now = self.now;
        let Some(nb) = self.boxes.get_mut(b) else {
            return src;
        };
        let key = (src, (nb.kind == NatKind::Symmetric).then_some(dst));
        let expired = nb
            .mappings
            .get(&key)
            .is_some_and(|m| now.saturating_since(m.last) > NAT_MAPPING_TIMEOUT_MS);
        if expired {
            if let Some(m) = nb.mappings.remove(&key) {
                nb.by_port.remove(&m.port);
            }
        }
        if !nb.mappings.contains_key(&key) {
            let port = loop {
                let p = if nb.kind == NatKind::Symmetric {
                    self.rng.gen_range(1024..=u16::MAX)
                } else {
                    nb.next_port = nb.next_port.wrapping_add(1).max(1024);
                    nb.next_port
                };
                if !nb.by_port.contains_key(&p) {
                    break p;
                }
            };
            nb.by_port.insert(port, key);
            nb.mappings.insert(
                key,
                Mapping {
                    port,
                    inner: src,
                    peers: HashMap::new(),
                    last: now,
                },
            );
        }
        let mut public = src;
        if let Some(m) = nb.mappings.get_mut(&key) {
            m.last = now;
            m.peers.insert(dst, now);
            public = SocketAddr::from((nb.public_ip, m.port));
        }
        match nb.parent {
            Some(p) => self.translate(p, public, dst),
            None => public,
        }
    }

    /// Inbound: the node a datagram to `dst` from `from` reaches, through NAT boxes.
    fn resolve(&mut self, dst: SocketAddr, from: SocketAddr) -> Option<usize> {
        let now = self.now;
        let mut dst = dst;
        for _ in 0..8 {
            if let Some(i) = self.by_addr.get(&dst).copied() {
                return Some(i);
            }
            let IpAddr::V4(ip) = dst.ip() else {
                return None;
            };
            let b = *self.box_by_ip.get(&ip)?;
            let nb = self.boxes.get_mut(b)?;
            let key = *nb.by_port.get(&dst.port())?;
            let kind = nb.kind;
            let m = nb.mappings.get_mut(&key)?;
            if now.saturating_since(m.last) > NAT_MAPPING_TIMEOUT_MS {
                return None;
            }
            let allowed = match kind {
                NatKind::FullCone => true,
                NatKind::AddressRestricted => m.peers.iter().any(|(p, t)| {
                    p.ip() == from.ip() && now.saturating_since(*t) <= NAT_MAPPING_TIMEOUT_MS
                }),
                NatKind::PortRestricted | NatKind::Symmetric => m
                    .peers
                    .get(&from)
                    .is_some_and(|t| now.saturating_since(*t) <= NAT_MAPPING_TIMEOUT_MS),
            };
            if !allowed {
                return None;
            }
            m.last = now;
            if let Some(t) = m.peers.get_mut(&from) {
                *t = now;
            }
            dst = m.inner;
        }
        None
    }

    fn collect(&mut self, i: usize) {
        let Some(node) = self.nodes.get_mut(i) else {
            return;
        };
        let from = node.addr;
        let nat = node.nat;
        let mut out = Vec::new();
        while let Some(t) = node.node.poll_transmit() {
            out.push(t);
        }
        node.events.extend(node.node.drain_events());
        let next = node.node.poll_timeout();
        for t in out {
            match self
                .tap
                .as_mut()
                .map_or(Tap::Pass, |f| f(i, t.dst, &t.data))
            {
                Tap::Pass => {}
                Tap::Drop => {
                    self.lost += 1;
                    continue;
                }
                Tap::Hold => {
                    self.held.push((from, t.dst, t.data));
                    continue;
                }
            }
            let lost = self.rng.gen_bool(self.cfg.loss.clamp(0.0, 1.0));
            if lost {
                self.lost += 1;
                continue;
            }
            let src = match nat {
                Some(b) => self.translate(b, from, t.dst),
                None => from,
            };
            let jitter = if self.cfg.jitter_ms > 0 {
                self.rng.gen_range(0..=self.cfg.jitter_ms)
            } else {
                0
            };
            self.seq += 1;
            let at = self.now + self.cfg.latency_ms + jitter;
            self.queue
                .push(Reverse((at, self.seq, Dest::Addr(t.dst), src, t.data)));
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
    pub fn run_until(&mut self, until: Instant) {
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
                if let Some(Reverse((_, _, dest, from, data))) = self.queue.pop() {
                    if let Dest::Addr(a) = dest {
                        if self.watched == Some(a.ip()) {
                            *self.watched_datagrams.entry(from.ip()).or_default() += 1;
                        }
                        let (x, y) = (from.ip(), a.ip());
                        if self
                            .blocked
                            .iter()
                            .any(|&(p, q)| (p, q) == (x, y) || (p, q) == (y, x))
                        {
                            self.lost += 1;
                            continue;
                        }
                    }
                    let to = match dest {
                        Dest::Node(i) => Some(i),
                        Dest::Addr(a) => {
                            let direct = self.by_addr.get(&a).copied();
                            match direct {
                                // A node behind NAT is not reachable at its private address.
                                Some(i) if self.nodes.get(i).is_some_and(|n| n.nat.is_none()) => {
                                    Some(i)
                                }
                                Some(_) => None,
                                None => {
                                    let r = self.resolve(a, from);
                                    let natted = match a.ip() {
                                        IpAddr::V4(ip) => self.box_by_ip.contains_key(&ip),
                                        IpAddr::V6(_) => false,
                                    };
                                    if r.is_none() && natted {
                                        self.nat_dropped += 1;
                                    }
                                    r
                                }
                            }
                        }
                    };
                    let Some(to) = to else {
                        self.lost += 1;
                        continue;
                    };
                    let alive = self.nodes.get(to).is_some_and(|n| n.alive);
                    if alive {
                        self.delivered += 1;
                        if let Some(h) = self.trace.as_mut() {
                            h.update(self.now.as_unix_ms().to_be_bytes());
                            h.update(from.to_string().as_bytes());
                            h.update((to as u64).to_be_bytes());
                            h.update((data.len() as u64).to_be_bytes());
                            // The message type only: link ciphertext differs between runs (the
                            // WireGuard ephemerals come from the OS inside boringtun).
                            h.update(data.get(..1).unwrap_or_default());
                        }
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
                        *w = Instant::MAX;
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

    /// Sends what node `i` queued after a direct call into it (`send_packet`, `e2e_ping`, ...),
    /// collects its events and reschedules its timer.
    pub fn flush(&mut self, i: usize) {
        self.collect(i);
    }

    /// Runs for `ms` more milliseconds of virtual time.
    pub fn run_for(&mut self, ms: Millis) {
        let until = self.now + ms;
        self.run_until(until);
    }

    /// Starts the digest of delivered datagrams (see [`Sim::trace_digest`]).
    pub fn record_trace(&mut self) {
        self.trace = Some(Sha256::new());
    }

    /// The digest of every datagram delivered since [`Sim::record_trace`], with the count
    /// delivered, lost and NAT-dropped; `None` when not recording.
    pub fn trace_digest(&self) -> Option<[u8; 32]> {
        let mut h = self.trace.clone()?;
        h.update(self.delivered.to_be_bytes());
        h.update(self.lost.to_be_bytes());
        h.update(self.nat_dropped.to_be_bytes());
        Some(h.finalize().into())
    }

    /// Entries of the simulator's own tables: NAT mappings, the peers they remember, datagrams
    /// in flight, timers (the memory trace of issue #25 tells them from the nodes' tables).
    pub fn table_sizes(&self) -> Vec<(&'static str, usize)> {
        let mappings = self.boxes.iter().map(|b| b.mappings.len()).sum();
        let peers = self
            .boxes
            .iter()
            .flat_map(|b| b.mappings.values())
            .map(|m| m.peers.len())
            .sum();
        vec![
            ("sim.nat_mappings", mappings),
            ("sim.nat_peers", peers),
            ("sim.in_flight", self.queue.len()),
            ("sim.timers", self.timers.len()),
        ]
    }

    /// Index of the node with this relay identity.
    pub fn node_by_identity(&self, identity: &[u8; 32]) -> Option<usize> {
        self.nodes.iter().position(|n| &n.identity == identity)
    }
}
