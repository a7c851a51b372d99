//! The link layer of one node as a sans-IO state machine: every neighbour link, the handshake
//! responder, bootstrap, peer exchange and the relay view.
//!
//! Driven by [`LinkLayer::handle_datagram`] and [`LinkLayer::handle_timeout`] with the current
//! time; its outputs are datagrams ([`LinkLayer::poll_transmit`]), events for the layers above
//! ([`LinkLayer::poll_event`]) and the next time it wants to be woken
//! ([`LinkLayer::poll_timeout`]). The daemon drives it with a UDP socket and a real clock; the
//! in-process network ([`crate::sim`]) with an in-memory transport and virtual time.
//!
//! [`LinkLayer`] is the façade and the router: it owns the tables, takes datagrams and timer
//! ticks, and hands each to the part that deals with it (issue #17):
//! - `link`: one link's state and its timers;
//! - `routing`: the link tables, creating and removing links, our own endpoints;
//! - `session`: datagrams into and out of a link's WireGuard session, handshakes;
//! - `rpc`: requests and their retries, PING/PONG;
//! - `hello`: HELLO and our own record;
//! - `discovery`: bootstrap, peer exchange, dialling with backoff, suspects;
//! - `dht`: DHT frames over links;
//! - `punch`, `probe`, `relayed`: NAT traversal (hole punching, the reachability probe and our
//!   NAT class, relayed links).

mod dht;
mod discovery;
mod hello;
mod link;
mod probe;
mod punch;
mod relayed;
mod routing;
mod rpc;
mod session;

use ed25519_dalek::SigningKey;
use rand::rngs::StdRng;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::budget::{Charge, MemoryBudget};
use crate::crypto::keys::hex;
use crate::crypto::Randomness;
use crate::link::bootstrap::{Bootstrap, BootstrapPeer};
use crate::link::nat::{Observations, PROBE_WINDOW_MS, PUNCH_TRIES, RELAYED_LINK_IDLE_MS};
use crate::link::noise::{Responder, NOISE_BUF_LEN};
use crate::link::view::RelayView;
use crate::time::Millis;
use crate::wire::datagram::{self, Kind};
use crate::wire::link::{LinkFrame, MsgType, LINK_HEADER_LEN};
use crate::wire::record::{
    emit_endpoint, NatClass, RelayRecord, ENDPOINT_LEN, RELAY_RECORD_REPUBLISH_S,
};

pub use dht::{DHT_LINK_IDLE_MS, DHT_REQUEST_RATE, DHT_STORE_RATE};
use discovery::Backoff;
pub use discovery::{
    BACKOFF_MAX_MS, BACKOFF_MIN_MS, BOOTSTRAP_LINGER_MS, PEX_INTERVAL_MS, PEX_MAX,
    RECORD_QUERY_RATE, SUSPECT_RELAY_MS, VIEW_WANTED,
};
pub use hello::{HELLO_RETRY_MS, HELLO_TIMEOUT_MS};
use link::Link;
pub use link::{
    DEAD_PEER_MS, HANDSHAKE_ATTEMPTS, HANDSHAKE_RETRY_MS, PING_INTERVAL_MS, SILENT_PING_MS,
    SILENT_PING_TIMEOUT_MS,
};
use probe::{Probe, RECENT_PEER_MS};
use punch::{Punch, PunchDial};
use relayed::RelayEntry;
pub use routing::LINK_COST;
pub use rpc::{LINK_RPC_RETRIES, LINK_RPC_TIMEOUT_MS, MAX_RPC_PER_LINK, RPC_COST};

/// `update_timers` period.
pub const LINK_TIMER_TICK_MS: Millis = 250;

/// Malformed frames per minute before a link is closed.
pub const LINK_MALFORMED_LIMIT: u32 = 20;

/// A link, named locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub u32);

/// A datagram to send.
#[derive(Debug)]
pub struct Transmit {
    /// Where to.
    pub dst: SocketAddr,
    /// Our address to send from: the one the peer wrote to (`None`: the kernel chooses).
    pub src: Option<IpAddr>,
    /// The bytes; hand the buffer back with [`LinkLayer::recycle`] when sent.
    pub data: Vec<u8>,
}

/// What the layers above hear from the link layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A link completed HELLO. `identity` is `None` for a client-only peer.
    Up {
        /// The link.
        link: LinkId,
        /// The peer's relay identity, if it is a relay.
        identity: Option<[u8; 32]>,
    },
    /// A link is gone.
    Down {
        /// The link.
        link: LinkId,
        /// The peer's relay identity, if it was bound.
        identity: Option<[u8; 32]>,
    },
    /// A cell arrived (exactly `CELL_LEN` bytes; hand the buffer back with
    /// [`LinkLayer::recycle`]).
    Cell {
        /// The link it came on.
        link: LinkId,
        /// The cell.
        cell: Vec<u8>,
    },
    /// A DHT_REQUEST or DHT_RESPONSE frame (docs/protocol.md 12.2) from a neighbour.
    Dht {
        /// The link it came on.
        link: LinkId,
        /// The frame's `rpc_id`.
        rpc_id: u64,
        /// DHT_RESPONSE (else DHT_REQUEST).
        response: bool,
        /// The DHT message.
        data: Vec<u8>,
    },
    /// A neighbour told us the endpoint it sees us at.
    Observed {
        /// Our endpoint as seen from outside.
        endpoint: SocketAddr,
    },
    /// A link we dialled (for [`LinkLayer::connect`]) never came up.
    DialFailed {
        /// The peer's link key.
        peer_key: [u8; 32],
    },
}

/// Errors of the link layer's commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// No such link, or it is not ready.
    NoLink,
    /// The memory budget or a link limit refused it.
    Limit,
    /// The message does not fit a frame.
    TooLarge,
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::NoLink => write!(f, "no such link"),
            LinkError::Limit => write!(f, "link or memory limit reached"),
            LinkError::TooLarge => write!(f, "message too large for a link frame"),
        }
    }
}

impl std::error::Error for LinkError {}

/// The node's keys as the link layer needs them. The service identity is deliberately absent.
pub struct LinkKeys {
    /// Relay identity (signs the relay record).
    pub identity: SigningKey,
    /// X25519 link key.
    pub link: StaticSecret,
    /// Current onion public key (published in the record).
    pub onion_public: [u8; 32],
}

/// Settings of the link layer.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Relay for others: accept links from anyone and publish a relay record.
    pub relay: bool,
    /// Our endpoints as others should dial them; empty means "learn from reflection".
    pub advertise: Vec<SocketAddr>,
    /// Peers to bootstrap from.
    pub bootstrap: Vec<BootstrapPeer>,
    /// Links to relays to keep.
    pub target_links: usize,
    /// Most links at once.
    pub max_links: usize,
    /// Family prefix lengths (IPv4, IPv6) for the view's caps.
    pub prefix_bits: (u8, u8),
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            relay: true,
            advertise: Vec::new(),
            bootstrap: Vec::new(),
            target_links: 8,
            max_links: 1024,
            prefix_bits: (16, 32),
        }
    }
}

/// Counters, for status and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Datagrams dropped before any link took them (unknown type or index, refused handshakes).
    pub dropped: u64,
    /// Frames refused by a link (malformed, wrong state).
    pub malformed: u64,
    /// Datagrams a session refused (authentication, replay).
    pub refused: u64,
    /// Records refused (bad signature, expired, ...).
    pub bad_records: u64,
    /// Links closed because they broke the protocol.
    pub closed_protocol: u64,
    /// Cookie replies sent (handshake load).
    pub cookies: u64,
    /// Punches started (as initiator or target).
    pub punches: u64,
    /// Links that came up while punching.
    pub punched_links: u64,
    /// PUNCH_NOTIFYs sent as an introducer.
    pub introductions: u64,
    /// Reachability probes that succeeded.
    pub probes_ok: u64,
    /// Relayed links set up (as an endpoint).
    pub relayed_links: u64,
    /// Punches asked for to make a relayed link direct.
    pub upgrade_attempts: u64,
    /// Relayed links that became direct.
    pub upgraded_links: u64,
    /// Relay envelopes forwarded as an introducer.
    pub relayed_datagrams: u64,
    /// DHT frames handed up.
    pub dht_frames: u64,
    /// DHT frames dropped (rate limits, not from a relay).
    pub dht_dropped: u64,
}

/// What `globalnet peers` shows about a link.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerInfo {
    /// Local name.
    pub link: LinkId,
    /// Relay identity (hex), if the peer is a relay.
    pub relay_key: Option<String>,
    /// The peer's link key (hex).
    pub link_key: String,
    /// Current endpoint.
    pub endpoint: SocketAddr,
    /// Direct (not relayed through a neighbour).
    pub direct: bool,
    /// The link came up by simultaneous open through an introducer (section 13.2).
    pub punched: bool,
    /// Last measured round-trip time.
    pub rtt_ms: Option<f64>,
    /// Seconds since the link was established.
    pub established_s: Option<u64>,
    /// Seconds since the last WireGuard handshake (rekey) on it.
    pub last_handshake_s: Option<u64>,
    /// Whether we dialled.
    pub outbound: bool,
    /// Plaintext bytes sent / received.
    pub bytes_out: u64,
    /// Plaintext bytes received.
    pub bytes_in: u64,
}

/// The link layer of one node.
pub struct LinkLayer {
    cfg: LinkConfig,
    keys: LinkKeys,
    link_public: [u8; 32],
    responder: Responder,
    budget: MemoryBudget,
    rng: StdRng,
    links: HashMap<LinkId, Link>,
    by_index: HashMap<u32, LinkId>,
    by_key: HashMap<[u8; 32], LinkId>,
    next_id: u32,
    view: RelayView,
    own_record: Option<RelayRecord>,
    record_signed: Millis,
    observed: Option<SocketAddr>,
    /// Our own endpoints learned from where datagrams arrive (wildcard listen addresses).
    locals: Vec<SocketAddr>,
    /// The local endpoint of the datagram being handled.
    rx_local: Option<SocketAddr>,
    nat: NatClass,
    backoff: HashMap<[u8; 32], Backoff>,
    /// Peers (by link key) whose link died of unanswered PINGs, until when
    /// [`LinkLayer::recently_dead`] says so: an EXTEND towards a relay that just died fails at
    /// once instead of dialling it. (Our own dialling is not stopped: its backoff applies.)
    dead_peers: HashMap<[u8; 32], Millis>,
    boot: Bootstrap,
    query_budget: (Millis, u32),
    expected: HashMap<[u8; 32], Millis>,
    obs: Observations,
    /// Addresses we sent to outside a live link lately (closed links, bootstrap queries,
    /// punches): a probe from one of them proves nothing.
    recent_peers: HashMap<std::net::IpAddr, (Millis, Charge)>,
    /// Relays a circuit extension to failed, kept out of the view until the time given unless
    /// they speak to us themselves (records of dead relays linger in others' views until they
    /// expire, and every path through one fails only after a timeout).
    suspects: HashMap<[u8; 32], Millis>,
    recent_overflow_until: Millis,
    probe: Option<Probe>,
    probe_ok: Option<SocketAddr>,
    last_probe: Millis,
    probe_pings: HashMap<[u8; 32], (u64, Millis, Charge)>,
    dials: HashMap<[u8; 32], PunchDial>,
    punches: HashMap<LinkId, Punch>,
    /// As an introducer: token -> relayed link entry.
    relay_table: HashMap<u64, RelayEntry>,
    /// As an endpoint: our token -> relayed link.
    relayed_tokens: HashMap<u64, LinkId>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<LinkEvent>,
    pool: Vec<Vec<u8>>,
    scratch: Vec<u8>,
    rx_scratch: Vec<u8>,
    next_tick: Millis,
    last_second: Millis,
    stats: LinkStats,
}

/// Bytes of a link frame header, for callers sizing buffers.
pub const FRAME_OVERHEAD: usize = LINK_HEADER_LEN;

impl LinkLayer {
    /// A link layer for a node. `rand` seeds its choices (indices, RPC ids, nonces, jitter): the
    /// daemon passes [`Randomness::from_os`]. It makes no secrets: boringtun draws the link
    /// handshake's ephemerals from the operating system itself.
    pub fn new(
        cfg: LinkConfig,
        keys: LinkKeys,
        budget: MemoryBudget,
        rand: Randomness,
        now: Millis,
    ) -> LinkLayer {
        let link_public = PublicKey::from(&keys.link).to_bytes();
        let identity = keys.identity.verifying_key().to_bytes();
        let view = RelayView::new(identity, cfg.prefix_bits, budget.clone());
        let boot = Bootstrap::new(&cfg.bootstrap);
        let mut l = LinkLayer {
            responder: Responder::new(keys.link.clone()),
            cfg,
            keys,
            link_public,
            budget,
            rng: rand.choices(),
            links: HashMap::new(),
            by_index: HashMap::new(),
            by_key: HashMap::new(),
            next_id: 1,
            view,
            own_record: None,
            record_signed: 0,
            observed: None,
            locals: Vec::new(),
            rx_local: None,
            nat: NatClass::Unknown,
            backoff: HashMap::new(),
            dead_peers: HashMap::new(),
            boot,
            query_budget: (0, 0),
            expected: HashMap::new(),
            obs: Observations::default(),
            recent_peers: HashMap::new(),
            suspects: HashMap::new(),
            recent_overflow_until: 0,
            probe: None,
            probe_ok: None,
            last_probe: 0,
            probe_pings: HashMap::new(),
            dials: HashMap::new(),
            punches: HashMap::new(),
            relay_table: HashMap::new(),
            relayed_tokens: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            pool: Vec::new(),
            scratch: vec![0u8; NOISE_BUF_LEN],
            rx_scratch: vec![0u8; NOISE_BUF_LEN],
            next_tick: now,
            last_second: now,
            stats: LinkStats::default(),
        };
        l.refresh_record(now);
        l
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Returns a sent datagram's buffer for reuse (no allocation per datagram in steady state).
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.pool.len() < 1024 {
            buf.clear();
            self.pool.push(buf);
        }
    }

    /// The next event for the layers above.
    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }

    /// When to call [`LinkLayer::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let punch = self.punches.values().map(|p| p.next).min();
        Some(punch.map_or(self.next_tick, |p| p.min(self.next_tick)))
    }

    /// Counters.
    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// Our relay record, once we have endpoints to put in it.
    pub fn own_record(&self) -> Option<&RelayRecord> {
        self.own_record.as_ref()
    }

    /// The relay view.
    pub fn view(&self) -> &RelayView {
        &self.view
    }

    /// Our NAT class as far as we know it.
    pub fn nat(&self) -> NatClass {
        self.nat
    }

    /// The endpoint a neighbour last reported seeing us at.
    pub fn observed(&self) -> Option<SocketAddr> {
        self.observed
    }

    /// Tells the link layer that a link carries circuits, so that it is not closed as idle
    /// (bootstrap links are closed once unused).
    pub fn mark_in_use(&mut self, link: LinkId, now: Millis) {
        if let Some(l) = self.links.get_mut(&link) {
            l.last_cell = now;
            l.dht_only = false;
        }
    }

    /// Our relay identity (public key).
    pub fn identity(&self) -> [u8; 32] {
        self.keys.identity.verifying_key().to_bytes()
    }

    /// The memory budget this layer charges (shared with the layers above).
    pub fn budget(&self) -> &MemoryBudget {
        &self.budget
    }

    /// The settings it runs with.
    pub fn config(&self) -> &LinkConfig {
        &self.cfg
    }

    /// Our X25519 link public key.
    pub fn link_public(&self) -> [u8; 32] {
        self.link_public
    }

    /// The X25519 link key of a link's peer.
    pub fn peer_key(&self, link: LinkId) -> Option<[u8; 32]> {
        self.links.get(&link).map(|l| l.peer_key)
    }

    /// The link (past HELLO) bound to a relay identity, if any.
    pub fn link_to(&self, identity: &[u8; 32]) -> Option<LinkId> {
        self.links
            .values()
            .find(|l| l.state.ready() && l.identity.as_ref() == Some(identity))
            .map(|l| l.id)
    }

    /// The relay identity of a link's peer.
    pub fn identity_of(&self, link: LinkId) -> Option<[u8; 32]> {
        self.links.get(&link).and_then(|l| l.identity)
    }

    /// Links that completed HELLO.
    pub fn ready_links(&self) -> impl Iterator<Item = LinkId> + '_ {
        self.links
            .values()
            .filter(|l| l.state.ready())
            .map(|l| l.id)
    }

    /// Relay links that completed HELLO.
    pub fn relay_links(&self) -> usize {
        self.links
            .values()
            .filter(|l| l.state.ready() && l.is_relay)
            .count()
    }

    /// One entry per link that completed HELLO.
    pub fn peers(&self, now: Millis) -> Vec<PeerInfo> {
        let mut v: Vec<PeerInfo> = self
            .links
            .values()
            .filter(|l| l.state.ready())
            .map(|l| {
                let (tx, rx) = l.session.traffic();
                PeerInfo {
                    link: l.id,
                    relay_key: l.identity.as_ref().map(|k| hex(k)),
                    link_key: hex(&l.peer_key),
                    endpoint: l.endpoint,
                    direct: l.relay.is_none(),
                    punched: l.punched,
                    rtt_ms: l.rtt_ms,
                    established_s: l.established_at.map(|t| now.saturating_sub(t) / 1000),
                    last_handshake_s: l.session.since_handshake(),
                    outbound: l.dialed,
                    bytes_out: tx,
                    bytes_in: rx,
                }
            })
            .collect();
        v.sort_by_key(|p| p.link);
        v
    }

    /// Dials a peer by link key and endpoint (no effect if a link exists).
    pub fn connect(
        &mut self,
        now: Millis,
        peer_key: [u8; 32],
        endpoint: SocketAddr,
    ) -> Result<LinkId, LinkError> {
        if peer_key == self.link_public {
            return Err(LinkError::NoLink);
        }
        // A relay behind NAT is reached by punching through its introducers (section 13.2).
        let natted = self
            .view
            .iter()
            .find(|r| r.fields().link_key == peer_key)
            .filter(|r| !r.fields().nat.directly_reachable() && !r.fields().introducers.is_empty())
            .map(|r| {
                (
                    *r.identity(),
                    r.fields().introducers.clone(),
                    r.fields().nat,
                )
            });
        let id = match self.by_key.get(&peer_key).copied() {
            Some(id) => {
                let up = self.links.get(&id).is_some_and(|l| l.session.established());
                if up || self.dials.contains_key(&peer_key) || natted.is_none() {
                    return Ok(id);
                }
                id
            }
            None => {
                let id = self.new_link(now, peer_key, endpoint, true)?;
                self.expected.insert(peer_key, now);
                // No plain initiation towards a NATed target: its NAT would drop it, and a
                // Linux NAT may even keep a conntrack entry for it that later clashes with the
                // target's own mapping towards us and spoils the punch.
                if natted.is_none() {
                    self.initiate(id, now, false);
                }
                id
            }
        };
        if let Some((target, introducers, their_nat)) = natted {
            // Symmetric on both sides cannot punch: go straight to a relayed link. With one
            // symmetric side only an address-restricted cone on the other side lets it through:
            // one try.
            let symmetric = usize::from(self.nat == NatClass::Symmetric)
                + usize::from(their_nat == NatClass::Symmetric);
            let tries = match symmetric {
                0 => 0,
                1 => PUNCH_TRIES - 1,
                _ => PUNCH_TRIES,
            };
            self.dials.insert(
                peer_key,
                PunchDial {
                    target,
                    introducers,
                    tries,
                    waits: 0,
                    next: now,
                    relay_asked: false,
                },
            );
        }
        Ok(id)
    }

    /// Dials without punching (reachability probes must test the plain path).
    fn connect_direct(
        &mut self,
        now: Millis,
        peer_key: [u8; 32],
        endpoint: SocketAddr,
    ) -> Result<LinkId, LinkError> {
        if let Some(id) = self.by_key.get(&peer_key) {
            return Ok(*id);
        }
        if peer_key == self.link_public {
            return Err(LinkError::NoLink);
        }
        let id = self.new_link(now, peer_key, endpoint, true)?;
        self.expected.insert(peer_key, now);
        self.initiate(id, now, false);
        Ok(id)
    }

    /// Sends a cell (exactly `CELL_LEN` bytes) on a link that completed HELLO.
    pub fn send_cell(&mut self, now: Millis, link: LinkId, cell: &[u8]) -> Result<(), LinkError> {
        match self.links.get_mut(&link) {
            Some(l) if l.state.ready() => {
                l.last_cell = now;
                l.dht_only = false;
            }
            _ => return Err(LinkError::NoLink),
        }
        self.send_frame(now, link, MsgType::Cell, 0, cell)
    }

    /// The underlay address a link's peer sends from.
    pub fn endpoint_of(&self, link: LinkId) -> Option<SocketAddr> {
        self.links.get(&link).map(|l| l.endpoint)
    }

    /// Closes a link (sends CLOSE, forgets it).
    pub fn close(&mut self, now: Millis, link: LinkId, reason: u8) {
        let _ = self.send_frame(now, link, MsgType::Close, 0, &[reason]);
        self.remove_link(link, false);
    }

    /// Fuzzing hook: processes `bytes` as a decrypted frame from a peer with a fixed link key, as
    /// if it had arrived on an authenticated session (the fuzzer cannot forge WireGuard).
    #[cfg(fuzzing)]
    #[doc(hidden)]
    pub fn fuzz_frame(&mut self, now: Millis, bytes: &[u8]) {
        let key = [0x42u8; 32];
        let id = match self.by_key.get(&key) {
            Some(id) => *id,
            None => match self.new_link(now, key, SocketAddr::from(([198, 18, 0, 9], 7412)), false)
            {
                Ok(id) => id,
                Err(_) => return,
            },
        };
        self.on_frame(now, id, bytes);
    }

    /// Handles one received datagram.
    pub fn handle_datagram(&mut self, now: Millis, from: SocketAddr, data: &[u8]) {
        self.handle_datagram_at(now, from, None, data);
    }

    /// Handles one received datagram that arrived at our endpoint `local` (known when the socket
    /// reports packet info; a wildcard listen address learns its endpoints this way).
    pub fn handle_datagram_at(
        &mut self,
        now: Millis,
        from: SocketAddr,
        local: Option<SocketAddr>,
        data: &[u8],
    ) {
        self.rx_local = local;
        self.handle_datagram_inner(now, from, data);
        self.rx_local = None;
    }

    fn handle_datagram_inner(&mut self, now: Millis, from: SocketAddr, data: &[u8]) {
        self.stats.datagrams_in += 1;
        match datagram::classify(data) {
            Kind::Initiation => self.on_initiation(now, from, data),
            Kind::Indexed(idx) => match self.by_index.get(&(idx >> 8)).copied() {
                Some(id) => self.feed(now, id, from, data),
                None => self.stats.dropped += 1,
            },
            Kind::RecordQuery(nonce) => self.on_record_query(now, from, nonce),
            Kind::RecordResponse(nonce) => self.on_record_response(now, from, nonce, data),
            Kind::RelayEnvelope => self.on_envelope(now, from, data),
            Kind::Unknown => self.stats.dropped += 1,
        }
    }

    /// Runs timers: session timers, retries, pings, bootstrap, PEX, target links.
    pub fn handle_timeout(&mut self, now: Millis) {
        self.run_punches(now);
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + LINK_TIMER_TICK_MS;
        if now.saturating_sub(self.last_second) >= 1000 {
            self.last_second = now;
            self.responder.tick();
            self.query_budget = (now, 0);
            self.view.prune(now);
            self.expected
                .retain(|_, t| now.saturating_sub(*t) < 120_000);
            self.probe_pings
                .retain(|_, (_, t, _)| now.saturating_sub(*t) < PROBE_WINDOW_MS * 2);
            self.recent_peers
                .retain(|_, (t, _)| now.saturating_sub(*t) < RECENT_PEER_MS);
            self.suspects.retain(|_, t| now < *t);
            self.relay_table
                .retain(|_, e| now.saturating_sub(e.last) < RELAYED_LINK_IDLE_MS);
            self.run_probe(now);
            // Introducers follow our links; a changed set re-signs the record.
            self.refresh_record(now);
            self.close_idle_dht_links(now);
        }
        if now.saturating_sub(self.record_signed) >= RELAY_RECORD_REPUBLISH_S * 1000 {
            self.refresh_record(now);
        }
        self.run_dials(now);
        self.run_upgrades(now);
        let ids: Vec<LinkId> = self.links.keys().copied().collect();
        for id in ids {
            self.link_timers(now, id);
        }
        self.bootstrap(now);
        self.maintain_links(now);
    }

    fn malformed(&mut self, now: Millis, id: LinkId, why: &str) {
        self.stats.malformed += 1;
        tracing::debug!(link = id.0, why, "malformed frame");
        let close = match self.links.get_mut(&id) {
            Some(l) => {
                if now.saturating_sub(l.malformed_since) > 60_000 {
                    l.malformed_since = now;
                    l.malformed = 0;
                }
                l.malformed += 1;
                l.malformed > LINK_MALFORMED_LIMIT
            }
            None => false,
        };
        if close {
            self.stats.closed_protocol += 1;
            self.close(now, id, 1);
        }
    }

    fn on_frame(&mut self, now: Millis, id: LinkId, bytes: &[u8]) {
        let f = match LinkFrame::new_checked(bytes) {
            Ok(f) => f,
            Err(e) => {
                // A keepalive is an empty plaintext; boringtun never hands those up, but be safe.
                if !bytes.is_empty() {
                    self.malformed(now, id, &e.to_string());
                }
                return;
            }
        };
        let hello_received = self.links.get(&id).is_some_and(|l| l.state.ready());
        let t = f.msg_type();
        if !hello_received
            && !matches!(
                t,
                MsgType::Hello | MsgType::Ping | MsgType::Pong | MsgType::Close
            )
        {
            self.malformed(now, id, "message before HELLO");
            return;
        }
        let payload = f.payload();
        match t {
            MsgType::Hello => self.on_hello(now, id, payload),
            MsgType::Ping => {
                self.check_probe_ping(now, id, payload);
                let mut p = [0u8; 8 + ENDPOINT_LEN];
                p[..8].copy_from_slice(payload.get(..8).unwrap_or(&[0; 8]));
                let endpoint = self.links.get(&id).map(|l| l.endpoint);
                let mut ep = [0u8; ENDPOINT_LEN];
                emit_endpoint(endpoint, &mut ep);
                p[8..].copy_from_slice(&ep);
                let _ = self.send_frame(now, id, MsgType::Pong, f.rpc_id(), &p);
            }
            MsgType::Pong => self.on_pong(now, id, f.rpc_id(), payload),
            MsgType::PexRequest => self.on_pex_request(now, id, f.rpc_id(), payload),
            MsgType::PexResponse => self.on_pex_response(now, id, f.rpc_id(), payload),
            MsgType::Cell => {
                if let Some(l) = self.links.get_mut(&id) {
                    l.last_cell = now;
                    l.dht_only = false;
                }
                // A pooled buffer: the consumer hands it back with `recycle`.
                let mut cell = self.take_buf();
                cell.extend_from_slice(payload);
                self.events.push_back(LinkEvent::Cell { link: id, cell });
            }
            MsgType::Close => {
                tracing::debug!(
                    link = id.0,
                    reason = payload.first().copied().unwrap_or(0),
                    "peer closed the link"
                );
                self.remove_link(id, false);
            }
            MsgType::PunchRequest => self.on_punch_request(now, id, f.rpc_id(), payload),
            MsgType::PunchNotify => self.on_punch_notify(now, id, f.rpc_id(), payload),
            MsgType::ProbeRequest => self.on_probe_request(now, id, payload),
            MsgType::ProbeForward => self.on_probe_forward(now, id, payload),
            MsgType::RelayRequest => self.on_relay_request(now, id, f.rpc_id(), payload),
            MsgType::RelayOffer => self.on_relay_offer(now, id, f.rpc_id(), payload),
            MsgType::DhtRequest | MsgType::DhtResponse => {
                self.on_dht_frame(now, id, t == MsgType::DhtResponse, f.rpc_id(), payload)
            }
        }
    }
}
