//! The link layer of one node as a sans-IO state machine: every neighbour link, the handshake
//! responder, bootstrap, peer exchange and the relay view.
//!
//! Driven by [`LinkLayer::handle_datagram`] and [`LinkLayer::handle_timeout`] with the current
//! time; its outputs are datagrams ([`LinkLayer::poll_transmit`]), events for the layers above
//! ([`LinkLayer::poll_event`]) and the next time it wants to be woken
//! ([`LinkLayer::poll_timeout`]). The daemon drives it with a UDP socket and a real clock; the
//! in-process network ([`crate::sim`]) with an in-memory transport and virtual time.

use ed25519_dalek::SigningKey;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use x25519_dalek::{PublicKey, StaticSecret};

use super::noise::{BoringSession, NoiseOut, NoiseSession, Responder, Unsolicited, NOISE_BUF_LEN};
use super::view::{RelayView, Source};
use crate::budget::{Charge, MemoryBudget};
use crate::crypto::keys::{fingerprint, hex};
use crate::time::Millis;
use crate::wire::datagram::{self, Kind};
use crate::wire::link::{self as frame, LinkFrame, MsgType, LINK_FRAME_MAX, LINK_HEADER_LEN};
use crate::wire::record::{
    emit_endpoint, parse_endpoint, NatClass, RecordFields, RelayRecord, ENDPOINT_LEN, FLAG_DHT,
    FLAG_RELAY, FLAG_RENDEZVOUS, RELAY_RECORD_LEN, RELAY_RECORD_LIFETIME_S,
    RELAY_RECORD_REPUBLISH_S,
};

/// `update_timers` period.
pub const LINK_TIMER_TICK_MS: Millis = 250;
/// Liveness ping on links with no traffic for this long.
pub const PING_INTERVAL_MS: Millis = 15_000;
/// Link request timeout.
pub const LINK_RPC_TIMEOUT_MS: Millis = 2_000;
/// Retries of a link request.
pub const LINK_RPC_RETRIES: u8 = 2;
/// A handshake is resent after this long without an answer.
pub const HANDSHAKE_RETRY_MS: Millis = 5_000;
/// Handshake attempts before a dial gives up.
pub const HANDSHAKE_ATTEMPTS: u8 = 3;
/// An established link must send HELLO within this time.
pub const HELLO_TIMEOUT_MS: Millis = 10_000;
/// First reconnect delay; doubles per failure.
pub const BACKOFF_MIN_MS: Millis = 1_000;
/// Largest reconnect delay.
pub const BACKOFF_MAX_MS: Millis = 60_000;
/// PEX requests per link at most this often.
pub const PEX_INTERVAL_MS: Millis = 10_000;
/// Below this many records a node asks for more.
pub const VIEW_WANTED: usize = 64;
/// Records per PEX answer.
pub const PEX_MAX: u8 = 3;
/// Malformed frames per minute before a link is closed.
pub const LINK_MALFORMED_LIMIT: u32 = 20;
/// Record queries answered per second (bootstrap, unauthenticated).
pub const RECORD_QUERY_RATE: u32 = 100;
/// A bootstrap link is closed once the node has enough other links and it carried no cell for
/// this long, so that bootstrap peers do not become hubs that every node stays linked to.
pub const BOOTSTRAP_LINGER_MS: Millis = 60_000;
/// Approximate bytes one link costs (session, state, maps).
pub const LINK_COST: usize = 4096;
/// Approximate bytes one pending request costs.
pub const RPC_COST: usize = 128;
/// Most requests outstanding on one link.
pub const MAX_RPC_PER_LINK: usize = 16;

/// A link, named locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub u32);

/// A datagram to send.
#[derive(Debug)]
pub struct Transmit {
    /// Where to.
    pub dst: SocketAddr,
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
    /// A neighbour told us the endpoint it sees us at.
    Observed {
        /// Our endpoint as seen from outside.
        endpoint: SocketAddr,
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
    /// Addresses to bootstrap from.
    pub bootstrap: Vec<SocketAddr>,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    Ping { nonce: u64, sent: Millis },
    Pex,
}

struct Pending {
    rpc: Rpc,
    deadline: Millis,
    retries: u8,
    frame: Vec<u8>,
    _charge: Charge,
}

struct Link {
    id: LinkId,
    session: Box<dyn NoiseSession>,
    peer_key: [u8; 32],
    endpoint: SocketAddr,
    local_index: u32,
    dialed: bool,
    created: Millis,
    established_at: Option<Millis>,
    handshake_sent: Millis,
    attempts: u8,
    hello_sent: bool,
    hello_received: bool,
    identity: Option<[u8; 32]>,
    is_relay: bool,
    last_rx: Millis,
    last_tx: Millis,
    rtt_ms: Option<f64>,
    malformed: u32,
    malformed_since: Millis,
    last_pex: Millis,
    pex_served: Millis,
    last_cell: Millis,
    rpcs: HashMap<u64, Pending>,
    _charge: Charge,
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

struct Backoff {
    until: Millis,
    delay: Millis,
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
    nat: NatClass,
    backoff: HashMap<[u8; 32], Backoff>,
    bootstrap_queries: HashMap<SocketAddr, (u64, Millis)>,
    bootstrap_backoff: HashMap<SocketAddr, Backoff>,
    query_budget: (Millis, u32),
    expected: HashMap<[u8; 32], Millis>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<LinkEvent>,
    pool: Vec<Vec<u8>>,
    scratch: Vec<u8>,
    rx_scratch: Vec<u8>,
    next_tick: Millis,
    last_second: Millis,
    stats: LinkStats,
}

fn new_buf() -> Vec<u8> {
    Vec::with_capacity(NOISE_BUF_LEN)
}

impl LinkLayer {
    /// A link layer for a node. `seed` makes its random choices reproducible (the daemon passes
    /// a random seed; tests a fixed one).
    pub fn new(
        cfg: LinkConfig,
        keys: LinkKeys,
        budget: MemoryBudget,
        seed: u64,
        now: Millis,
    ) -> LinkLayer {
        let link_public = PublicKey::from(&keys.link).to_bytes();
        let identity = keys.identity.verifying_key().to_bytes();
        let view = RelayView::new(identity, cfg.prefix_bits, budget.clone());
        let mut l = LinkLayer {
            responder: Responder::new(keys.link.clone()),
            cfg,
            keys,
            link_public,
            budget,
            rng: StdRng::seed_from_u64(seed),
            links: HashMap::new(),
            by_index: HashMap::new(),
            by_key: HashMap::new(),
            next_id: 1,
            view,
            own_record: None,
            record_signed: 0,
            observed: None,
            nat: NatClass::Unknown,
            backoff: HashMap::new(),
            bootstrap_queries: HashMap::new(),
            bootstrap_backoff: HashMap::new(),
            query_budget: (0, 0),
            expected: HashMap::new(),
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

    // ---- outputs -------------------------------------------------------------------------

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
        Some(self.next_tick)
    }

    // ---- state for status ----------------------------------------------------------------

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
            .find(|l| l.hello_received && l.identity.as_ref() == Some(identity))
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
            .filter(|l| l.hello_received)
            .map(|l| l.id)
    }

    /// Relay links that completed HELLO.
    pub fn relay_links(&self) -> usize {
        self.links
            .values()
            .filter(|l| l.hello_received && l.is_relay)
            .count()
    }

    /// One entry per link that completed HELLO.
    pub fn peers(&self, now: Millis) -> Vec<PeerInfo> {
        let mut v: Vec<PeerInfo> = self
            .links
            .values()
            .filter(|l| l.hello_received)
            .map(|l| {
                let (tx, rx) = l.session.traffic();
                PeerInfo {
                    link: l.id,
                    relay_key: l.identity.as_ref().map(|k| hex(k)),
                    link_key: hex(&l.peer_key),
                    endpoint: l.endpoint,
                    direct: true,
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

    // ---- commands ------------------------------------------------------------------------

    /// Dials a peer by link key and endpoint (no effect if a link exists).
    pub fn connect(
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
            Some(l) if l.hello_received => l.last_cell = now,
            _ => return Err(LinkError::NoLink),
        }
        self.send_frame(now, link, MsgType::Cell, 0, cell)
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

    // ---- inputs --------------------------------------------------------------------------

    /// Handles one received datagram.
    pub fn handle_datagram(&mut self, now: Millis, from: SocketAddr, data: &[u8]) {
        self.stats.datagrams_in += 1;
        match datagram::classify(data) {
            Kind::Initiation => self.on_initiation(now, from, data),
            Kind::Indexed(idx) => match self.by_index.get(&(idx >> 8)).copied() {
                Some(id) => self.feed(now, id, from, data),
                None => self.stats.dropped += 1,
            },
            Kind::RecordQuery(nonce) => self.on_record_query(now, from, nonce),
            Kind::RecordResponse(nonce) => self.on_record_response(now, from, nonce, data),
            Kind::RelayEnvelope | Kind::Unknown => self.stats.dropped += 1,
        }
    }

    /// Runs timers: session timers, retries, pings, bootstrap, PEX, target links.
    pub fn handle_timeout(&mut self, now: Millis) {
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
        }
        if now.saturating_sub(self.record_signed) >= RELAY_RECORD_REPUBLISH_S * 1000 {
            self.refresh_record(now);
        }
        let ids: Vec<LinkId> = self.links.keys().copied().collect();
        for id in ids {
            self.link_timers(now, id);
        }
        self.bootstrap(now);
        self.maintain_links(now);
    }

    // ---- internals -----------------------------------------------------------------------

    fn take_buf(&mut self) -> Vec<u8> {
        self.pool.pop().unwrap_or_else(new_buf)
    }

    fn push_transmit(&mut self, dst: SocketAddr, bytes: &[u8]) {
        let mut data = self.take_buf();
        data.extend_from_slice(bytes);
        self.stats.datagrams_out += 1;
        self.transmits.push_back(Transmit { dst, data });
    }

    fn new_link(
        &mut self,
        now: Millis,
        peer_key: [u8; 32],
        endpoint: SocketAddr,
        dialed: bool,
    ) -> Result<LinkId, LinkError> {
        if self.links.len() >= self.cfg.max_links {
            return Err(LinkError::Limit);
        }
        let charge = match self.budget.try_charge(LINK_COST) {
            Some(c) => c,
            None => {
                // Strangers' half-open links go first.
                self.evict_unbound(now);
                self.budget.try_charge(LINK_COST).ok_or(LinkError::Limit)?
            }
        };
        let mut local_index;
        loop {
            local_index = self.rng.gen_range(1..(1u32 << 24));
            if !self.by_index.contains_key(&local_index) {
                break;
            }
        }
        let id = LinkId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let session = BoringSession::new(
            &self.keys.link,
            peer_key,
            local_index,
            None,
            self.responder.limiter(),
        );
        self.links.insert(
            id,
            Link {
                id,
                session: Box::new(session),
                peer_key,
                endpoint,
                local_index,
                dialed,
                created: now,
                established_at: None,
                handshake_sent: now,
                attempts: 0,
                hello_sent: false,
                hello_received: false,
                identity: None,
                is_relay: false,
                last_rx: now,
                last_tx: now,
                rtt_ms: None,
                malformed: 0,
                malformed_since: now,
                last_pex: 0,
                pex_served: 0,
                last_cell: 0,
                rpcs: HashMap::new(),
                _charge: charge,
            },
        );
        self.by_index.insert(local_index, id);
        self.by_key.insert(peer_key, id);
        Ok(id)
    }

    fn evict_unbound(&mut self, now: Millis) {
        let victim = self
            .links
            .values()
            .filter(|l| !l.hello_received && !l.dialed)
            .min_by_key(|l| l.created)
            .map(|l| l.id);
        if let Some(v) = victim {
            tracing::debug!("memory budget: evicting a half-open inbound link");
            let _ = now;
            self.remove_link(v, false);
        }
    }

    fn remove_link(&mut self, id: LinkId, dead: bool) {
        if let Some(l) = self.links.remove(&id) {
            self.by_index.remove(&l.local_index);
            self.by_key.remove(&l.peer_key);
            if l.hello_received {
                self.events.push_back(LinkEvent::Down {
                    link: id,
                    identity: l.identity,
                });
            }
            if dead && l.dialed {
                let b = self.backoff.entry(l.peer_key).or_insert(Backoff {
                    until: 0,
                    delay: BACKOFF_MIN_MS / 2,
                });
                b.delay = (b.delay * 2).clamp(BACKOFF_MIN_MS, BACKOFF_MAX_MS);
                let jitter = self.rng.gen_range(0..=b.delay / 4);
                b.until = l.last_tx.max(l.last_rx) + b.delay + jitter;
            }
        }
    }

    fn initiate(&mut self, id: LinkId, now: Millis, force: bool) {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.resize(NOISE_BUF_LEN, 0);
        let mut send = None;
        if let Some(l) = self.links.get_mut(&id) {
            l.handshake_sent = now;
            l.attempts += 1;
            l.last_tx = now;
            if let NoiseOut::Send(b) = l.session.initiate(&mut buf, force) {
                send = Some((l.endpoint, b.len()));
            }
        }
        if let Some((dst, n)) = send {
            if let Some(b) = buf.get(..n) {
                let b = b.to_vec();
                self.push_transmit(dst, &b);
            }
        }
        self.scratch = buf;
    }

    fn on_initiation(&mut self, now: Millis, from: SocketAddr, data: &[u8]) {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.resize(NOISE_BUF_LEN, 0);
        let verdict = self.responder.identify(from.ip(), data, &mut buf);
        match verdict {
            Unsolicited::CookieReply(n) => {
                self.stats.cookies += 1;
                if let Some(b) = buf.get(..n) {
                    let b = b.to_vec();
                    self.push_transmit(from, &b);
                }
                self.scratch = buf;
            }
            Unsolicited::Invalid => {
                self.stats.dropped += 1;
                self.scratch = buf;
            }
            Unsolicited::Initiation { peer } => {
                self.scratch = buf;
                let id = match self.by_key.get(&peer).copied() {
                    Some(id) => id,
                    None => {
                        let expected = self.expected.contains_key(&peer);
                        if !self.cfg.relay && !expected {
                            // A non-relay only talks to peers it chose (protocol.md 4.1).
                            self.stats.dropped += 1;
                            return;
                        }
                        match self.new_link(now, peer, from, false) {
                            Ok(id) => id,
                            Err(_) => {
                                self.stats.dropped += 1;
                                return;
                            }
                        }
                    }
                };
                self.feed(now, id, from, data);
            }
        }
    }

    /// Hands a datagram to a link's session and processes what comes out. Steady state (data
    /// datagrams carrying frames) allocates nothing: the plaintext lands in a reused buffer and
    /// anything to send goes out in pooled buffers.
    fn feed(&mut self, now: Millis, id: LinkId, from: SocketAddr, data: &[u8]) {
        let mut rx = std::mem::take(&mut self.rx_scratch);
        rx.resize(NOISE_BUF_LEN, 0);
        let mut frame_len = None;
        let mut expired = false;
        let mut newly_established = false;
        if let Some(l) = self.links.get_mut(&id) {
            let was = l.session.established();
            let mut authenticated = false;
            let mut sent = 0u64;
            match l.session.decapsulate(from.ip(), data, &mut rx) {
                NoiseOut::Send(b) => {
                    authenticated = true;
                    let mut d = self.pool.pop().unwrap_or_else(new_buf);
                    d.extend_from_slice(b);
                    self.transmits.push_back(Transmit { dst: from, data: d });
                    sent += 1;
                    while let NoiseOut::Send(b) = l.session.flush(&mut rx) {
                        let mut d = self.pool.pop().unwrap_or_else(new_buf);
                        d.extend_from_slice(b);
                        self.transmits.push_back(Transmit { dst: from, data: d });
                        sent += 1;
                    }
                }
                // boringtun decrypts into the start of the buffer.
                NoiseOut::Frame(f) => {
                    authenticated = true;
                    frame_len = Some(f.len());
                }
                NoiseOut::Done => authenticated = l.session.established(),
                NoiseOut::Expired => expired = true,
                NoiseOut::Refused(why) => {
                    tracing::trace!(link = id.0, why, "datagram refused");
                    self.stats.refused += 1;
                }
            }
            if authenticated {
                // Roaming: the peer's endpoint is wherever its authenticated packets come from.
                l.endpoint = from;
                l.last_rx = now;
            }
            if !was && l.session.established() {
                l.established_at = Some(now);
                newly_established = true;
            }
            if sent > 0 {
                l.last_tx = now;
                self.stats.datagrams_out += sent;
            }
        }
        if expired {
            self.rx_scratch = rx;
            self.remove_link(id, true);
            return;
        }
        if newly_established {
            self.send_hello(now, id);
        }
        if let Some(n) = frame_len {
            self.on_frame(now, id, rx.get(..n).unwrap_or(&[]));
        }
        self.rx_scratch = rx;
    }

    fn send_frame(
        &mut self,
        now: Millis,
        id: LinkId,
        t: MsgType,
        rpc_id: u64,
        payload: &[u8],
    ) -> Result<(), LinkError> {
        let mut framebuf = [0u8; LINK_FRAME_MAX];
        let n = frame::emit(&mut framebuf, t, rpc_id, payload).ok_or(LinkError::TooLarge)?;
        let plain = framebuf.get(..n).ok_or(LinkError::TooLarge)?;
        let Some(l) = self.links.get_mut(&id) else {
            return Err(LinkError::NoLink);
        };
        l.last_tx = now;
        let mut data = self.pool.pop().unwrap_or_else(new_buf);
        data.resize(NOISE_BUF_LEN, 0);
        let len = match l.session.encapsulate(plain, &mut data) {
            NoiseOut::Send(b) => Some(b.len()),
            _ => None,
        };
        match len {
            Some(len) => {
                data.truncate(len);
                let dst = l.endpoint;
                self.stats.datagrams_out += 1;
                self.transmits.push_back(Transmit { dst, data });
            }
            // Queued inside the session until the handshake completes (or refused).
            None => self.recycle(data),
        }
        Ok(())
    }

    fn send_rpc(&mut self, now: Millis, id: LinkId, rpc: Rpc, t: MsgType, payload: &[u8]) {
        let rpc_id: u64 = self.rng.gen_range(1..u64::MAX);
        let Some(l) = self.links.get(&id) else { return };
        if l.rpcs.len() >= MAX_RPC_PER_LINK {
            return;
        }
        let Some(charge) = self.budget.try_charge(RPC_COST) else {
            return;
        };
        if self.send_frame(now, id, t, rpc_id, payload).is_err() {
            return;
        }
        let mut framecopy = Vec::with_capacity(payload.len() + 1);
        framecopy.push(t as u8);
        framecopy.extend_from_slice(payload);
        if let Some(l) = self.links.get_mut(&id) {
            l.rpcs.insert(
                rpc_id,
                Pending {
                    rpc,
                    deadline: now + LINK_RPC_TIMEOUT_MS,
                    retries: LINK_RPC_RETRIES,
                    frame: framecopy,
                    _charge: charge,
                },
            );
        }
    }

    fn send_hello(&mut self, now: Millis, id: LinkId) {
        let mut payload = [0u8; 4 + RELAY_RECORD_LEN];
        let n = match &self.own_record {
            Some(r) => {
                payload[0] = 0b01;
                payload[2..4].copy_from_slice(&(RELAY_RECORD_LEN as u16).to_be_bytes());
                payload[4..].copy_from_slice(r.bytes());
                4 + RELAY_RECORD_LEN
            }
            None => {
                payload[0] = 0b10;
                4
            }
        };
        if self
            .send_frame(now, id, MsgType::Hello, 0, payload.get(..n).unwrap_or(&[]))
            .is_ok()
        {
            if let Some(l) = self.links.get_mut(&id) {
                l.hello_sent = true;
            }
        }
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
        let hello_received = self.links.get(&id).is_some_and(|l| l.hello_received);
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
            // NAT traversal and DHT messages belong to their issues; until then they are
            // well-formed but unsupported, and dropped.
            _ => self.stats.dropped += 1,
        }
    }

    fn on_hello(&mut self, now: Millis, id: LinkId, p: &[u8]) {
        let role = p.first().copied().unwrap_or(0);
        let len = p
            .get(2..4)
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .map_or(0, |b| usize::from(u16::from_be_bytes(b)));
        let mut identity = None;
        let mut record = None;
        if role & 0b01 != 0 {
            if len != RELAY_RECORD_LEN || p.len() != 4 + RELAY_RECORD_LEN {
                self.malformed(now, id, "HELLO record length");
                return;
            }
            match RelayRecord::parse(p.get(4..).unwrap_or(&[]), now) {
                Ok(r) => {
                    let peer_key = self.links.get(&id).map(|l| l.peer_key);
                    if Some(r.fields().link_key) != peer_key {
                        // The record names another link key than the one that authenticated
                        // this session: a relay can only speak for itself.
                        self.stats.bad_records += 1;
                        self.stats.closed_protocol += 1;
                        self.close(now, id, 1);
                        return;
                    }
                    identity = Some(*r.identity());
                    record = Some(r);
                }
                Err(e) => {
                    tracing::debug!(link = id.0, "HELLO with a bad record: {e}");
                    self.stats.bad_records += 1;
                    self.stats.closed_protocol += 1;
                    self.close(now, id, 1);
                    return;
                }
            }
        } else if role & 0b10 == 0 || len != 0 || p.len() != 4 {
            self.malformed(now, id, "HELLO role");
            return;
        }
        let first = match self.links.get_mut(&id) {
            Some(l) => {
                let first = !l.hello_received;
                if let (Some(old), Some(new)) = (l.identity, identity) {
                    if old != new {
                        // An identity change on a live link is not allowed.
                        drop(record);
                        self.close(now, id, 1);
                        return;
                    }
                }
                l.hello_received = true;
                l.identity = identity;
                l.is_relay = record.as_ref().is_some_and(RelayRecord::is_relay);
                first
            }
            None => return,
        };
        if let Some(r) = record {
            if let Err(why) = self.view.insert(r, Source::Itself, now) {
                tracing::trace!(?why, "record not added to the view");
            }
        }
        let hello_sent = self.links.get(&id).is_some_and(|l| l.hello_sent);
        if !hello_sent {
            self.send_hello(now, id);
        }
        if first {
            if let Some(ident) = identity {
                self.backoff
                    .remove(&self.links.get(&id).map(|l| l.peer_key).unwrap_or_default());
                tracing::debug!(link = id.0, peer = %fingerprint(&ident), "link up");
            }
            self.events.push_back(LinkEvent::Up { link: id, identity });
            // Measure RTT and learn our observed endpoint at once.
            self.ping(now, id);
        }
    }

    fn ping(&mut self, now: Millis, id: LinkId) {
        let nonce: u64 = self.rng.gen();
        self.send_rpc(
            now,
            id,
            Rpc::Ping { nonce, sent: now },
            MsgType::Ping,
            &nonce.to_be_bytes(),
        );
    }

    fn on_pong(&mut self, now: Millis, id: LinkId, rpc_id: u64, p: &[u8]) {
        let Some(l) = self.links.get_mut(&id) else {
            return;
        };
        let Some(pending) = l.rpcs.remove(&rpc_id) else {
            self.stats.dropped += 1;
            return;
        };
        let Rpc::Ping { nonce, sent } = pending.rpc else {
            self.stats.dropped += 1;
            return;
        };
        if p.get(..8) != Some(&nonce.to_be_bytes()[..]) {
            self.stats.dropped += 1;
            return;
        }
        let sample = now.saturating_sub(sent) as f64;
        l.rtt_ms = Some(match l.rtt_ms {
            Some(old) => 0.875 * old + 0.125 * sample,
            None => sample,
        });
        let ep: Option<&[u8; ENDPOINT_LEN]> =
            p.get(8..8 + ENDPOINT_LEN).and_then(|b| b.try_into().ok());
        if let Some(Ok(Some(endpoint))) = ep.map(parse_endpoint) {
            self.on_observed(now, endpoint);
        }
    }

    fn on_observed(&mut self, now: Millis, endpoint: SocketAddr) {
        if self.observed == Some(endpoint) {
            return;
        }
        self.observed = Some(endpoint);
        self.events.push_back(LinkEvent::Observed { endpoint });
        self.refresh_record(now);
    }

    /// Re-signs our record when something in it changed or it is due; sends HELLO again on change.
    fn refresh_record(&mut self, now: Millis) {
        if !self.cfg.relay {
            return;
        }
        let mut endpoints: Vec<SocketAddr> = self
            .cfg
            .advertise
            .iter()
            .copied()
            .filter(|a| !a.ip().is_unspecified() && a.port() != 0)
            .collect();
        if endpoints.is_empty() {
            endpoints.extend(self.observed);
        }
        endpoints.truncate(4);
        if endpoints.is_empty() {
            return;
        }
        // Seen from outside at an address we advertise: no NAT in between. Finer NAT
        // classification is the NAT traversal issue's.
        self.nat = match self.observed {
            Some(o) if endpoints.contains(&o) => NatClass::Public,
            _ => self.nat,
        };
        let mut flags = FLAG_RELAY;
        if self.nat.directly_reachable() {
            flags |= FLAG_DHT | FLAG_RENDEZVOUS;
        }
        let fields = RecordFields {
            flags,
            nat: self.nat,
            link_key: self.link_public,
            onion_key: self.keys.onion_public,
            seq: now.max(self.own_record.as_ref().map_or(0, |r| r.fields().seq + 1)),
            expires: now / 1000 + RELAY_RECORD_LIFETIME_S,
            endpoints,
            introducers: Vec::new(),
        };
        let changed = self.own_record.as_ref().is_none_or(|r| {
            let f = r.fields();
            f.flags != fields.flags || f.nat != fields.nat || f.endpoints != fields.endpoints
        });
        let due = now.saturating_sub(self.record_signed) >= RELAY_RECORD_REPUBLISH_S * 1000;
        if !changed && !due {
            return;
        }
        match RelayRecord::sign(&self.keys.identity, fields) {
            Ok(r) => {
                self.own_record = Some(r);
                self.record_signed = now;
                if changed {
                    let ids: Vec<LinkId> = self
                        .links
                        .values()
                        .filter(|l| l.hello_sent)
                        .map(|l| l.id)
                        .collect();
                    for id in ids {
                        self.send_hello(now, id);
                    }
                }
            }
            Err(e) => tracing::warn!("cannot sign our relay record: {e}"),
        }
    }

    fn on_pex_request(&mut self, now: Millis, id: LinkId, rpc_id: u64, p: &[u8]) {
        let max = p.first().copied().unwrap_or(0);
        if !(1..=PEX_MAX).contains(&max) {
            self.malformed(now, id, "PEX max");
            return;
        }
        let (peer_identity, served) = match self.links.get(&id) {
            Some(l) => (l.identity, l.pex_served),
            None => return,
        };
        if !self.cfg.relay || (served != 0 && now.saturating_sub(served) < PEX_INTERVAL_MS) {
            // Only relays answer, at most once per interval per link.
            self.stats.dropped += 1;
            return;
        }
        if let Some(l) = self.links.get_mut(&id) {
            l.pex_served = now;
        }
        let sample: Vec<[u8; RELAY_RECORD_LEN]> = self
            .view
            .sample(usize::from(max), peer_identity.as_ref(), &mut self.rng)
            .into_iter()
            .filter(|r| r.is_relay())
            .map(|r| *r.bytes())
            .collect();
        let mut payload = Vec::with_capacity(2 + sample.len() * RELAY_RECORD_LEN);
        payload.push(sample.len() as u8);
        payload.push(0);
        for r in &sample {
            payload.extend_from_slice(r);
        }
        let _ = self.send_frame(now, id, MsgType::PexResponse, rpc_id, &payload);
    }

    fn on_pex_response(&mut self, now: Millis, id: LinkId, rpc_id: u64, p: &[u8]) {
        let Some(l) = self.links.get_mut(&id) else {
            return;
        };
        if l.rpcs.remove(&rpc_id).map(|x| x.rpc) != Some(Rpc::Pex) {
            self.stats.dropped += 1;
            return;
        }
        let Some(source) = l.identity else { return };
        let count = usize::from(p.first().copied().unwrap_or(0));
        if count > usize::from(PEX_MAX) || p.len() != 2 + count * RELAY_RECORD_LEN {
            self.malformed(now, id, "PEX response length");
            return;
        }
        for chunk in p.get(2..).unwrap_or(&[]).chunks_exact(RELAY_RECORD_LEN) {
            match RelayRecord::parse(chunk, now) {
                Ok(r) if r.is_relay() => {
                    if let Err(why) = self.view.insert(r, Source::Pex(source), now) {
                        tracing::trace!(?why, "PEX record not added");
                    }
                }
                Ok(_) => self.stats.bad_records += 1,
                Err(e) => {
                    tracing::debug!("PEX record refused: {e}");
                    self.stats.bad_records += 1;
                }
            }
        }
    }

    fn link_timers(&mut self, now: Millis, id: LinkId) {
        // The session's own timers.
        let mut buf = std::mem::take(&mut self.scratch);
        buf.resize(NOISE_BUF_LEN, 0);
        let mut send = None;
        let mut expired = false;
        if let Some(l) = self.links.get_mut(&id) {
            match l.session.update_timers(&mut buf) {
                NoiseOut::Send(b) => send = Some((l.endpoint, b.to_vec())),
                NoiseOut::Expired => expired = true,
                _ => {}
            }
        }
        self.scratch = buf;
        if let Some((dst, b)) = send {
            self.push_transmit(dst, &b);
        }
        if expired {
            self.remove_link(id, true);
            return;
        }
        let Some(l) = self.links.get(&id) else { return };
        let established = l.session.established();
        // Handshake retries on our clock (boringtun retries on the wall clock too; in virtual
        // time only this one runs).
        if !established {
            if now.saturating_sub(l.handshake_sent) >= HANDSHAKE_RETRY_MS {
                if l.dialed && l.attempts < HANDSHAKE_ATTEMPTS {
                    self.initiate(id, now, true);
                } else {
                    self.remove_link(id, true);
                }
            }
            return;
        }
        if !l.hello_received {
            if l.established_at
                .is_some_and(|t| now.saturating_sub(t) >= HELLO_TIMEOUT_MS)
            {
                self.close(now, id, 1);
            }
            return;
        }
        // Request timeouts and retries.
        let mut retry: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut failed_ping = false;
        if let Some(l) = self.links.get_mut(&id) {
            let mut gone = Vec::new();
            for (rid, p) in l.rpcs.iter_mut() {
                if now >= p.deadline {
                    if p.retries > 0 {
                        p.retries -= 1;
                        p.deadline = now + LINK_RPC_TIMEOUT_MS;
                        retry.push((*rid, p.frame.clone()));
                    } else {
                        gone.push(*rid);
                        if matches!(p.rpc, Rpc::Ping { .. }) {
                            failed_ping = true;
                        }
                    }
                }
            }
            for rid in gone {
                l.rpcs.remove(&rid);
            }
        }
        // Dead only if the PING went unanswered *and* nothing else arrived meanwhile: on a lossy
        // path a lost PONG is not a dead neighbour.
        let silent = self.links.get(&id).is_some_and(|l| {
            now.saturating_sub(l.last_rx) >= LINK_RPC_TIMEOUT_MS * (u64::from(LINK_RPC_RETRIES) + 1)
        });
        if failed_ping && silent {
            tracing::debug!(link = id.0, "no answer to PING: link is dead");
            self.remove_link(id, true);
            return;
        }
        for (rid, f) in retry {
            if let (Some(t), Some(payload)) =
                (f.first().and_then(|b| MsgType::from_u8(*b)), f.get(1..))
            {
                let _ = self.send_frame(now, id, t, rid, payload);
            }
        }
        // Liveness.
        let Some(l) = self.links.get(&id) else { return };
        let pinging = l.rpcs.values().any(|p| matches!(p.rpc, Rpc::Ping { .. }));
        if !pinging && now.saturating_sub(l.last_rx) >= PING_INTERVAL_MS {
            self.ping(now, id);
        }
        // Peer exchange.
        let Some(l) = self.links.get(&id) else { return };
        let interval = if self.view.len() < VIEW_WANTED {
            PEX_INTERVAL_MS
        } else {
            30 * PEX_INTERVAL_MS
        };
        if l.is_relay && now.saturating_sub(l.last_pex) >= interval {
            if let Some(l) = self.links.get_mut(&id) {
                l.last_pex = now;
            }
            self.send_rpc(now, id, Rpc::Pex, MsgType::PexRequest, &[PEX_MAX, 0]);
        }
    }

    fn on_record_query(&mut self, now: Millis, from: SocketAddr, nonce: u64) {
        let Some(record) = self.own_record.as_ref().map(|r| *r.bytes()) else {
            self.stats.dropped += 1;
            return;
        };
        if now.saturating_sub(self.query_budget.0) >= 1000 {
            self.query_budget = (now, 0);
        }
        if self.query_budget.1 >= RECORD_QUERY_RATE {
            self.stats.dropped += 1;
            return;
        }
        self.query_budget.1 += 1;
        let mut out = self.take_buf();
        datagram::emit_record_response(nonce, &record, &mut out);
        self.stats.datagrams_out += 1;
        self.transmits.push_back(Transmit {
            dst: from,
            data: out,
        });
    }

    fn on_record_response(&mut self, now: Millis, from: SocketAddr, nonce: u64, data: &[u8]) {
        match self.bootstrap_queries.get(&from) {
            Some((n, _)) if *n == nonce => {}
            _ => {
                self.stats.dropped += 1;
                return;
            }
        }
        self.bootstrap_queries.remove(&from);
        let Some(bytes) = datagram::record_of_response(data) else {
            return;
        };
        match RelayRecord::parse(bytes, now) {
            Ok(r) => {
                // Trust on first use: whoever answers at the bootstrap address is the bootstrap
                // peer; the view's source caps limit what one peer can decide (threat model).
                let key = r.fields().link_key;
                if let Err(e) = self.connect(now, key, from) {
                    tracing::debug!("bootstrap {from}: {e}");
                }
                let _ = self.view.insert(r, Source::Itself, now);
            }
            Err(e) => {
                tracing::debug!("bootstrap {from} sent a bad record: {e}");
                self.stats.bad_records += 1;
            }
        }
    }

    fn bootstrap(&mut self, now: Millis) {
        let have_relay = self.links.values().any(|l| l.hello_received && l.is_relay);
        let targets: Vec<SocketAddr> = self.cfg.bootstrap.clone();
        for addr in targets {
            let linked = self.links.values().any(|l| l.endpoint == addr);
            if linked || (have_relay && self.view.len() >= self.cfg.target_links) {
                continue;
            }
            if let Some(b) = self.bootstrap_backoff.get(&addr) {
                if now < b.until {
                    continue;
                }
            }
            if let Some((_, sent)) = self.bootstrap_queries.get(&addr) {
                if now.saturating_sub(*sent) < LINK_RPC_TIMEOUT_MS {
                    continue;
                }
            }
            let nonce: u64 = self.rng.gen();
            self.bootstrap_queries.insert(addr, (nonce, now));
            let b = self.bootstrap_backoff.entry(addr).or_insert(Backoff {
                until: 0,
                delay: BACKOFF_MIN_MS / 2,
            });
            b.delay = (b.delay * 2).clamp(BACKOFF_MIN_MS, BACKOFF_MAX_MS / 4);
            // Jitter, so that nodes started together do not retry in lockstep.
            let delay = b.delay;
            b.until = now + delay + self.rng.gen_range(0..=delay / 2);
            let mut out = self.take_buf();
            datagram::emit_record_query(nonce, &mut out);
            self.stats.datagrams_out += 1;
            self.transmits.push_back(Transmit {
                dst: addr,
                data: out,
            });
        }
    }

    fn maintain_links(&mut self, now: Millis) {
        let bootstrap = &self.cfg.bootstrap;
        let others = self
            .links
            .values()
            .filter(|l| l.hello_received && l.is_relay && !bootstrap.contains(&l.endpoint))
            .count();
        if others >= self.cfg.target_links {
            let idle_bootstrap: Vec<LinkId> = self
                .links
                .values()
                .filter(|l| l.dialed && l.hello_received && bootstrap.contains(&l.endpoint))
                .filter(|l| {
                    l.established_at
                        .is_some_and(|t| now.saturating_sub(t) >= BOOTSTRAP_LINGER_MS)
                })
                .filter(|l| now.saturating_sub(l.last_cell) >= BOOTSTRAP_LINGER_MS)
                .map(|l| l.id)
                .collect();
            for id in idle_bootstrap {
                tracing::debug!(link = id.0, "enough links: closing the idle bootstrap link");
                self.close(now, id, 0);
            }
        }
        let relays = self
            .links
            .values()
            .filter(|l| l.is_relay || (l.dialed && !l.hello_received))
            .count();
        if relays >= self.cfg.target_links {
            return;
        }
        let want = (self.cfg.target_links - relays).min(2);
        let candidates: Vec<([u8; 32], SocketAddr)> = self
            .view
            .sample(self.view.len(), None, &mut self.rng)
            .into_iter()
            .filter(|r| r.is_relay())
            .filter(|r| !self.by_key.contains_key(&r.fields().link_key))
            .filter(|r| {
                self.backoff
                    .get(&r.fields().link_key)
                    .is_none_or(|b| now >= b.until)
            })
            .filter_map(|r| {
                r.fields()
                    .endpoints
                    .first()
                    .map(|e| (r.fields().link_key, *e))
            })
            .take(want)
            .collect();
        for (key, ep) in candidates {
            let _ = self.connect(now, key, ep);
        }
    }
}

/// Bytes of a link frame header, for callers sizing buffers.
pub const FRAME_OVERHEAD: usize = LINK_HEADER_LEN;
