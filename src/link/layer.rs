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
use rand::Rng;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use x25519_dalek::{PublicKey, StaticSecret};

use super::bootstrap::{Bootstrap, BootstrapInfo, BootstrapPeer};
use super::nat::{
    behind_nat, Observations, RateWindow, LINK_KEEPALIVE_MS, MAX_PROBE_PINGS, MAX_PUNCHES,
    MAX_RELAYED_LINKS, NAT_ENTRY_COST, NAT_KEEPALIVE_MS, NAT_RECHECK_MS, PROBE_REQUEST_RATE,
    PROBE_RETRY_MS, PROBE_WINDOW_MS, PUNCH_DURATION_MS, PUNCH_INTERVAL_MS, PUNCH_REINIT_MS,
    PUNCH_REQUEST_RATE, PUNCH_TRIES, RELAYED_LINK_IDLE_MS, RELAYED_LINK_RATE, RELAY_REQUEST_RATE,
    RELAY_UPGRADE_FIRST_MS, RELAY_UPGRADE_MAX_MS,
};
use super::noise::{BoringSession, NoiseOut, NoiseSession, Responder, Unsolicited, NOISE_BUF_LEN};
use super::view::{RelayView, Source};
use crate::budget::{Charge, MemoryBudget};
use crate::crypto::keys::{fingerprint, hex};
use crate::crypto::Randomness;
use crate::time::Millis;
use crate::wire::datagram::{self, Kind};
use crate::wire::link::{
    self as frame, parse_target, LinkFrame, MsgType, ProbeForward, PunchNotify, RelayOffer,
    LINK_FRAME_MAX, LINK_HEADER_LEN, RELAY_OK, RELAY_REFUSED,
};
use crate::wire::record::{
    emit_endpoint, parse_endpoint, Contact, NatClass, RecordFields, RelayRecord, ENDPOINT_LEN,
    FLAG_DHT, FLAG_RELAY, FLAG_RENDEZVOUS, RELAY_RECORD_LEN, RELAY_RECORD_LIFETIME_S,
    RELAY_RECORD_REPUBLISH_S,
};

/// `update_timers` period.
pub const LINK_TIMER_TICK_MS: Millis = 250;
/// Liveness ping on links with no traffic for this long: a dead neighbour on an idle link shows
/// within this plus the PING's tries (~11 s). It must stay above the NATed side's keepalive
/// period (`NAT_KEEPALIVE_MS`) minus the tries, so a NAT that lost its state (conntrack flush)
/// is repaired by that keepalive before the link is given up.
pub const PING_INTERVAL_MS: Millis = 5_000;
/// A link we sent on that has received nothing for this long is pinged without waiting for
/// `PING_INTERVAL_MS` (its death then shows within this plus the PING's timeouts).
pub const SILENT_PING_MS: Millis = 1_000;
/// The timeout of each try of such a PING: a killed neighbour is noticed ~4 s after it died
/// (every flow through it stalls until then). Only a link that stays silent through all tries
/// is dropped, so a lost PONG on a busy link costs nothing.
pub const SILENT_PING_TIMEOUT_MS: Millis = 1_000;
/// How long a peer whose link died of unanswered PINGs counts as dead for extensions (unless it
/// links to us again first).
pub const DEAD_PEER_MS: Millis = 30_000;
/// Such peers remembered at most.
const MAX_DEAD_PEERS: usize = 1024;
/// Link request timeout.
pub const LINK_RPC_TIMEOUT_MS: Millis = 2_000;
/// Retries of a link request.
pub const LINK_RPC_RETRIES: u8 = 2;
/// A handshake is resent after this long without an answer.
pub const HANDSHAKE_RETRY_MS: Millis = 1_000;
/// Handshake attempts before a dial gives up.
pub const HANDSHAKE_ATTEMPTS: u8 = 4;
/// An established link must send HELLO within this time.
pub const HELLO_TIMEOUT_MS: Millis = 10_000;
/// HELLO is resent this often, asking for an answer, until the peer's HELLO arrives (4.5).
pub const HELLO_RETRY_MS: Millis = 1_000;
/// How long a relay an extension failed to stays out of the view.
pub const SUSPECT_RELAY_MS: Millis = 120_000;
/// Suspects remembered at most.
const MAX_SUSPECTS: usize = 1024;
/// HELLO `role` bit: the sender has not received the receiver's HELLO yet; answer with one.
const HELLO_ASK: u8 = 0b100;
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
/// A NAT may keep a flow towards an address this long after our last datagram to it.
const RECENT_PEER_MS: Millis = 120_000;
/// Most such addresses remembered.
const MAX_RECENT_PEERS: usize = 4096;
/// Approximate bytes of one remembered address.
const RECENT_PEER_COST: usize = 64;
/// Approximate bytes one link costs (session, state, maps).
pub const LINK_COST: usize = 4096;
/// Approximate bytes one pending request costs.
pub const RPC_COST: usize = 128;
/// Most requests outstanding on one link.
pub const MAX_RPC_PER_LINK: usize = 16;
/// DHT requests a neighbour may send per second (docs/protocol.md 15, `DHT_REQUEST_RATE`).
pub const DHT_REQUEST_RATE: u32 = 50;
/// DHT STOREs a neighbour may send per second (`DHT_STORE_RATE`).
pub const DHT_STORE_RATE: u32 = 10;
/// Byte 1 of a DHT message is its type; 5 is STORE (12.2). The link layer peeks at it only to
/// rate-limit, the DHT parses the message.
const DHT_TYPE_STORE: u8 = 5;
/// A link dialed only to carry DHT requests is closed after this long without DHT requests or
/// cells: a relay's lookups touch dozens of contacts, and keeping a link to each would multiply
/// every node's links (and their timers and keepalives) for a request or two each.
pub const DHT_LINK_IDLE_MS: Millis = 30_000;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    Ping { nonce: u64, sent: Millis },
    Pex,
    Punch { target_key: [u8; 32] },
    Relay { target_key: [u8; 32] },
}

/// A dial to a relay behind NAT: punch through its introducers.
struct PunchDial {
    target: [u8; 32],
    introducers: Vec<Contact>,
    tries: u8,
    waits: u8,
    next: Millis,
    relay_asked: bool,
}

/// A running simultaneous open on one link.
struct Punch {
    endpoints: Vec<SocketAddr>,
    until: Millis,
    next: Millis,
    /// The initiation being repeated, and when it was made: the same bytes go out every
    /// interval (a fresh one each `PUNCH_REINIT_MS`), so a response to any copy completes it.
    init: Vec<u8>,
    init_at: Millis,
    started: Millis,
    _charge: Charge,
}

/// How a relayed link reaches its peer: envelopes with our token to the introducer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RelayPath {
    via: SocketAddr,
    via_link: LinkId,
    token: u64,
    /// Our address the introducer writes to (the via link's).
    via_local: Option<IpAddr>,
}

/// One relayed link as the introducer sees it: one entry per token (two per link).
struct RelayEntry {
    /// The link the token was offered on; envelopes must come from its endpoint.
    link: LinkId,
    /// The other side's token.
    other: u64,
    last: Millis,
    rate: RateWindow,
    _charge: Option<Charge>,
}

/// Our reachability probe in flight.
struct Probe {
    nonce: u64,
    sent: Millis,
    endpoint: SocketAddr,
}

struct Pending {
    rpc: Rpc,
    deadline: Millis,
    /// Each try's timeout.
    timeout: Millis,
    retries: u8,
    frame: Vec<u8>,
    _charge: Charge,
}

struct Link {
    id: LinkId,
    session: Box<dyn NoiseSession>,
    peer_key: [u8; 32],
    endpoint: SocketAddr,
    /// Our address the peer's authenticated datagrams arrive at; we answer from it.
    local: Option<IpAddr>,
    local_index: u32,
    dialed: bool,
    created: Millis,
    established_at: Option<Millis>,
    handshake_sent: Millis,
    attempts: u8,
    hello_sent: bool,
    /// When we last sent HELLO (resent every `HELLO_RETRY_MS` until the peer's arrives).
    hello_at: Millis,
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
    /// The NAT class and first endpoint of the peer's record.
    peer_nat: NatClass,
    peer_endpoint: Option<SocketAddr>,
    /// Came up by punching.
    punched: bool,
    /// Relayed through an introducer (section 13.4).
    relay: Option<RelayPath>,
    /// When to try again to make a relayed link direct, and how many tries so far (13.4).
    upgrade_next: Millis,
    upgrade_tries: u8,
    relay_in: RateWindow,
    last_ping: Millis,
    punch_in: RateWindow,
    punch_notify_in: RateWindow,
    probe_in: RateWindow,
    /// Flags of the peer's record (0 for clients).
    peer_flags: u8,
    /// Dialed for DHT requests and not used for anything else (yet).
    dht_only: bool,
    dht_in: RateWindow,
    dht_store_in: RateWindow,
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

fn new_buf() -> Vec<u8> {
    Vec::with_capacity(NOISE_BUF_LEN)
}

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
        let punch = self.punches.values().map(|p| p.next).min();
        Some(punch.map_or(self.next_tick, |p| p.min(self.next_tick)))
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

    // ---- commands ------------------------------------------------------------------------

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
            Some(l) if l.hello_received => {
                l.last_cell = now;
                l.dht_only = false;
            }
            _ => return Err(LinkError::NoLink),
        }
        self.send_frame(now, link, MsgType::Cell, 0, cell)
    }

    /// Sends a DHT_REQUEST (or, `response`, a DHT_RESPONSE) frame on a link that completed
    /// HELLO with a relay. The link counts as in use, so it is not closed as idle.
    pub fn send_dht(
        &mut self,
        now: Millis,
        link: LinkId,
        rpc_id: u64,
        response: bool,
        data: &[u8],
    ) -> Result<(), LinkError> {
        match self.links.get_mut(&link) {
            Some(l) if l.hello_received && l.identity.is_some() => l.last_cell = now,
            _ => return Err(LinkError::NoLink),
        }
        let t = if response {
            MsgType::DhtResponse
        } else {
            MsgType::DhtRequest
        };
        self.send_frame(now, link, t, rpc_id, data)
    }

    /// Dials a DHT contact like [`LinkLayer::connect`]; a link this creates is closed again
    /// after `DHT_LINK_IDLE_MS` without DHT requests, unless it came to carry cells.
    pub fn connect_dht(
        &mut self,
        now: Millis,
        peer_key: [u8; 32],
        endpoint: SocketAddr,
    ) -> Result<LinkId, LinkError> {
        let existed = self.by_key.contains_key(&peer_key);
        let id = self.connect(now, peer_key, endpoint)?;
        if !existed {
            if let Some(l) = self.links.get_mut(&id) {
                l.dht_only = true;
            }
        }
        Ok(id)
    }

    /// Closes links dialed for the DHT that carried nothing for `DHT_LINK_IDLE_MS`.
    fn close_idle_dht_links(&mut self, now: Millis) {
        let mut idle: Vec<LinkId> = self
            .links
            .values()
            .filter(|l| l.dht_only && l.hello_received)
            .filter(|l| {
                let since = l.last_cell.max(l.established_at.unwrap_or(l.created));
                now.saturating_sub(since) >= DHT_LINK_IDLE_MS
            })
            .map(|l| l.id)
            .collect();
        // In link order, so that a simulation with a fixed seed repeats itself.
        idle.sort_unstable();
        for id in idle {
            if !self.nat_uses(id) {
                tracing::trace!(link = id.0, "closing an idle DHT link");
                self.close(now, id, 0);
            }
        }
    }

    /// DHT contacts among our links: peers past HELLO whose record carries `FLAG_DHT`
    /// (docs/protocol.md 12.1: only these enter a routing table).
    pub fn dht_contacts(&self) -> impl Iterator<Item = (LinkId, Contact)> + '_ {
        self.links
            .values()
            .filter(|l| l.hello_received && l.peer_flags & FLAG_DHT != 0)
            .filter_map(|l| {
                Some((
                    l.id,
                    Contact {
                        identity: l.identity?,
                        link_key: l.peer_key,
                        endpoint: l.peer_endpoint?,
                    },
                ))
            })
    }

    /// Whether the peer with this link key stopped answering PINGs within the last
    /// [`DEAD_PEER_MS`] and has not linked since.
    pub fn recently_dead(&self, peer_key: &[u8; 32], now: Millis) -> bool {
        self.dead_peers.get(peer_key).is_some_and(|t| now < *t)
            && !self.by_key.contains_key(peer_key)
    }

    /// The underlay address a link's peer sends from.
    pub fn endpoint_of(&self, link: LinkId) -> Option<SocketAddr> {
        self.links.get(&link).map(|l| l.endpoint)
    }

    /// A circuit could not be extended to this relay (link failed or timed out): keep it out
    /// of the view, and so out of paths, for `SUSPECT_RELAY_MS`, unless it links to us itself.
    pub fn suspect_relay(&mut self, identity: &[u8; 32], now: Millis) {
        if self.link_to(identity).is_some() {
            // We hold a live link to it: whatever failed, it is not dead.
            return;
        }
        if self.suspects.len() >= MAX_SUSPECTS {
            self.suspects.retain(|_, t| now < *t);
            if self.suspects.len() >= MAX_SUSPECTS {
                return;
            }
        }
        self.suspects.insert(*identity, now + SUSPECT_RELAY_MS);
        self.view.remove(identity);
    }

    fn is_suspect(&self, identity: &[u8; 32], now: Millis) -> bool {
        self.suspects.get(identity).is_some_and(|t| now < *t)
    }

    /// Adds verified relay records learned through the DHT (a SAMPLE answered by the last hop
    /// `via` of one of our circuits) to the view: one more source beside PEX (9.1). Returns how
    /// many were added or refreshed.
    pub fn add_dht_records(
        &mut self,
        records: Vec<RelayRecord>,
        via: [u8; 32],
        now: Millis,
    ) -> usize {
        let mut added = 0;
        for r in records {
            if !r.is_relay() {
                self.stats.bad_records += 1;
                continue;
            }
            if self.is_suspect(r.identity(), now) {
                continue;
            }
            match self.view.insert(r, Source::Dht(via), now) {
                Ok(()) => added += 1,
                Err(why) => tracing::trace!(?why, "DHT record not added to the view"),
            }
        }
        added
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

    // ---- internals -----------------------------------------------------------------------

    fn take_buf(&mut self) -> Vec<u8> {
        self.pool.pop().unwrap_or_else(new_buf)
    }

    /// Sends a datagram of a link: in a relay envelope to the introducer if it is relayed.
    fn link_out(&mut self, id: LinkId, dst: SocketAddr, bytes: &[u8]) {
        let (relay, local) = match self.links.get(&id) {
            Some(l) => (l.relay, l.local),
            None => (None, None),
        };
        match relay {
            Some(r) => {
                let mut data = self.take_buf();
                datagram::emit_relay_envelope(r.token, bytes, &mut data);
                self.stats.datagrams_out += 1;
                self.transmits.push_back(Transmit {
                    dst: r.via,
                    src: r.via_local,
                    data,
                });
            }
            None => self.push_transmit(dst, local, bytes),
        }
    }

    fn push_transmit(&mut self, dst: SocketAddr, src: Option<IpAddr>, bytes: &[u8]) {
        let mut data = self.take_buf();
        data.extend_from_slice(bytes);
        self.stats.datagrams_out += 1;
        self.transmits.push_back(Transmit { dst, src, data });
    }

    /// Our address the datagram being handled arrived at (answers go out from it).
    fn rx_src(&self) -> Option<IpAddr> {
        self.rx_local.map(|l| l.ip())
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
                local: if dialed {
                    None
                } else {
                    self.rx_local.map(|l| l.ip())
                },
                local_index,
                dialed,
                created: now,
                established_at: None,
                handshake_sent: now,
                attempts: 0,
                hello_sent: false,
                hello_at: 0,
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
                peer_nat: NatClass::Unknown,
                peer_endpoint: None,
                punched: false,
                relay: None,
                upgrade_next: 0,
                upgrade_tries: 0,
                relay_in: RateWindow::default(),
                last_ping: 0,
                punch_in: RateWindow::default(),
                punch_notify_in: RateWindow::default(),
                probe_in: RateWindow::default(),
                peer_flags: 0,
                dht_only: false,
                dht_in: RateWindow::default(),
                dht_store_in: RateWindow::default(),
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
            self.punches.remove(&id);
            self.dials.remove(&l.peer_key);
            if let Some(r) = l.relay {
                self.relayed_tokens.remove(&r.token);
            }
            // Relayed links that ran over this one (as introducer or endpoint) are gone too.
            self.relay_table.retain(|_, e| e.link != id);
            let over: Vec<LinkId> = self
                .links
                .values()
                .filter(|x| x.relay.is_some_and(|r| r.via_link == id))
                .map(|x| x.id)
                .collect();
            for x in over {
                self.remove_link(x, false);
            }
            let at = l.last_tx.max(l.last_rx);
            self.note_recent(l.endpoint.ip(), at);
            if l.hello_received {
                self.events.push_back(LinkEvent::Down {
                    link: id,
                    identity: l.identity,
                });
            } else if dead && l.dialed {
                self.events.push_back(LinkEvent::DialFailed {
                    peer_key: l.peer_key,
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
                self.link_out(id, dst, &b);
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
                    self.push_transmit(from, self.rx_src(), &b);
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
        self.feed_via(now, id, from, data, false);
    }

    fn feed_via(&mut self, now: Millis, id: LinkId, from: SocketAddr, data: &[u8], relayed: bool) {
        let mut rx = std::mem::take(&mut self.rx_scratch);
        rx.resize(NOISE_BUF_LEN, 0);
        let mut frame_len = None;
        let mut expired = false;
        let mut newly_established = false;
        let rx_local = self.rx_local;
        let src = rx_local.map(|l| l.ip());
        let mut learned = None;
        if let Some(l) = self.links.get_mut(&id) {
            let was = l.session.established();
            let mut authenticated = false;
            let mut sent = 0u64;
            let relay = if relayed { l.relay } else { None };
            let wrap = |d: &mut Vec<u8>, b: &[u8]| match relay {
                Some(r) => datagram::emit_relay_envelope(r.token, b, d),
                None => d.extend_from_slice(b),
            };
            match l.session.decapsulate(from.ip(), data, &mut rx) {
                NoiseOut::Send(b) => {
                    authenticated = true;
                    let mut d = self.pool.pop().unwrap_or_else(new_buf);
                    wrap(&mut d, b);
                    self.transmits.push_back(Transmit {
                        dst: from,
                        src,
                        data: d,
                    });
                    sent += 1;
                    while let NoiseOut::Send(b) = l.session.flush(&mut rx) {
                        let mut d = self.pool.pop().unwrap_or_else(new_buf);
                        wrap(&mut d, b);
                        self.transmits.push_back(Transmit {
                            dst: from,
                            src,
                            data: d,
                        });
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
                if !relayed {
                    // Roaming: the peer's endpoint is wherever its authenticated packets come
                    // from. A relayed link that hears its peer directly is direct from now on,
                    // once that proves both directions: a handshake response (our initiation
                    // got there) or data (the peer already gets ours). An initiation alone
                    // proves only one.
                    let two_way = matches!(data.first(), Some(2) | Some(4));
                    if l.relay.is_none() || two_way {
                        if let Some(r) = l.relay.take() {
                            tracing::debug!(link = id.0, "relayed link upgraded to direct");
                            self.relayed_tokens.remove(&r.token);
                            self.stats.upgraded_links += 1;
                        }
                        l.endpoint = from;
                        if src.is_some() {
                            l.local = src;
                        }
                        learned = rx_local;
                    }
                }
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
        if let Some(local) = learned {
            self.learn_local(now, local);
        }
        if expired {
            self.rx_scratch = rx;
            self.remove_link(id, true);
            return;
        }
        if newly_established {
            if self.punches.remove(&id).is_some() {
                self.stats.punched_links += 1;
                if let Some(l) = self.links.get_mut(&id) {
                    l.punched = true;
                }
            }
            if let Some(k) = self.links.get(&id).map(|l| l.peer_key) {
                self.dials.remove(&k);
            }
            self.send_hello(now, id, false);
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
                let (mut dst, mut src) = (l.endpoint, l.local);
                if let Some(r) = l.relay {
                    wrap_envelope(&mut data, r.token);
                    (dst, src) = (r.via, r.via_local);
                }
                self.stats.datagrams_out += 1;
                self.transmits.push_back(Transmit { dst, src, data });
            }
            // Queued inside the session until the handshake completes (or refused).
            None => self.recycle(data),
        }
        Ok(())
    }

    fn send_rpc(&mut self, now: Millis, id: LinkId, rpc: Rpc, t: MsgType, payload: &[u8]) {
        self.send_rpc_timeout(now, id, rpc, t, payload, LINK_RPC_TIMEOUT_MS);
    }

    fn send_rpc_timeout(
        &mut self,
        now: Millis,
        id: LinkId,
        rpc: Rpc,
        t: MsgType,
        payload: &[u8],
        timeout: Millis,
    ) {
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
                    deadline: now + timeout,
                    timeout,
                    retries: LINK_RPC_RETRIES,
                    frame: framecopy,
                    _charge: charge,
                },
            );
        }
    }

    fn send_hello(&mut self, now: Millis, id: LinkId, ask: bool) {
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
        if ask {
            payload[0] |= HELLO_ASK;
        }
        if self
            .send_frame(now, id, MsgType::Hello, 0, payload.get(..n).unwrap_or(&[]))
            .is_ok()
        {
            if let Some(l) = self.links.get_mut(&id) {
                l.hello_sent = true;
                l.hello_at = now;
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
                l.peer_flags = record.as_ref().map_or(0, |r| r.fields().flags);
                if let Some(r) = &record {
                    l.peer_nat = r.fields().nat;
                    l.peer_endpoint = r.fields().endpoints.first().copied();
                }
                first
            }
            None => return,
        };
        if let Some(r) = record {
            if let Err(why) = self.view.insert(r, Source::Itself, now) {
                tracing::trace!(?why, "record not added to the view");
            }
        }
        // Answer a HELLO that asks (the peer lost ours), at most twice a second so that a
        // peer cannot turn HELLOs into a stream of our records.
        let (hello_sent, answer) = self.links.get(&id).map_or((true, false), |l| {
            (
                l.hello_sent,
                role & HELLO_ASK != 0 && now.saturating_sub(l.hello_at) >= HELLO_RETRY_MS / 2,
            )
        });
        if !hello_sent || answer {
            self.send_hello(now, id, false);
        }
        if first {
            let key = self.links.get(&id).map(|l| l.peer_key).unwrap_or_default();
            self.dead_peers.remove(&key);
            if let Some(ident) = identity {
                self.backoff.remove(&key);
                tracing::debug!(link = id.0, peer = %fingerprint(&ident), "link up");
            }
            self.events.push_back(LinkEvent::Up { link: id, identity });
            self.unsolicited_evidence(now, id);
            // Measure RTT and learn our observed endpoint at once; a link we opened for someone's
            // reachability probe carries the probe's nonce (section 13.3).
            let key = self.links.get(&id).map(|l| l.peer_key).unwrap_or_default();
            match self.probe_pings.remove(&key) {
                Some((nonce, _, _)) => self.ping_with(now, id, nonce),
                None => self.ping(now, id),
            }
        }
    }

    fn ping(&mut self, now: Millis, id: LinkId) {
        let nonce: u64 = self.rng.gen();
        self.ping_with(now, id, nonce);
    }

    fn ping_with(&mut self, now: Millis, id: LinkId, nonce: u64) {
        self.ping_timeout(now, id, nonce, LINK_RPC_TIMEOUT_MS);
    }

    fn ping_timeout(&mut self, now: Millis, id: LinkId, nonce: u64, timeout: Millis) {
        if let Some(l) = self.links.get_mut(&id) {
            l.last_ping = now;
        }
        self.send_rpc_timeout(
            now,
            id,
            Rpc::Ping { nonce, sent: now },
            MsgType::Ping,
            &nonce.to_be_bytes(),
            timeout,
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
        let reporter = l.endpoint.ip();
        if let Some(Ok(Some(endpoint))) = ep.map(parse_endpoint) {
            self.obs.add(reporter, endpoint);
            if let Some(stable) = self.obs.endpoint() {
                self.on_observed(now, stable);
            }
            let before = self.nat;
            self.reclassify();
            if self.nat != before {
                tracing::debug!(nat = self.nat.name(), "NAT class");
                self.refresh_record(now);
            }
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
        self.reclassify();
        if !self.cfg.relay {
            return;
        }
        let advertised = self.advertised();
        let mut endpoints: Vec<SocketAddr> = Vec::new();
        if self.nat == NatClass::Public {
            endpoints.extend(advertised);
        } else {
            // Behind NAT (or not known yet): the endpoint neighbours see is the one to punch to.
            endpoints.extend(self.observed);
            if endpoints.is_empty() {
                endpoints.extend(advertised);
            }
        }
        endpoints.truncate(4);
        if endpoints.is_empty() {
            return;
        }
        // Introducers: relays others can reach directly that hold a live link to us (13.1).
        let mut introducers: Vec<Contact> = Vec::new();
        if !self.nat.directly_reachable() {
            let mut cands: Vec<&Link> = self
                .links
                .values()
                .filter(|l| l.hello_received && l.is_relay && l.peer_nat.directly_reachable())
                .filter(|l| l.session.established())
                .collect();
            cands.sort_by_key(|l| l.id);
            for l in cands.into_iter().take(2) {
                if let (Some(identity), Some(endpoint)) = (l.identity, l.peer_endpoint) {
                    introducers.push(Contact {
                        identity,
                        link_key: l.peer_key,
                        endpoint,
                    });
                }
            }
        }
        // A NATed class must name an introducer; without one we publish "unknown".
        let nat = match self.nat {
            NatClass::Cone | NatClass::Symmetric if introducers.is_empty() => NatClass::Unknown,
            n => n,
        };
        let mut flags = FLAG_RELAY;
        if nat.directly_reachable() {
            flags |= FLAG_DHT | FLAG_RENDEZVOUS;
        }
        let fields = RecordFields {
            flags,
            nat,
            link_key: self.link_public,
            onion_key: self.keys.onion_public,
            seq: now.max(self.own_record.as_ref().map_or(0, |r| r.fields().seq + 1)),
            expires: now / 1000 + RELAY_RECORD_LIFETIME_S,
            endpoints,
            introducers,
        };
        let changed = self.own_record.as_ref().is_none_or(|r| {
            let f = r.fields();
            f.flags != fields.flags
                || f.onion_key != fields.onion_key
                || f.nat != fields.nat
                || f.endpoints != fields.endpoints
                || f.introducers != fields.introducers
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
                        self.send_hello(now, id, false);
                    }
                }
            }
            Err(e) => tracing::warn!("cannot sign our relay record: {e}"),
        }
    }

    /// A DHT frame from a neighbour: only relays speak the DHT (12.1); requests are
    /// rate-limited per link, STOREs more tightly. The DHT parses the message.
    fn on_dht_frame(&mut self, now: Millis, id: LinkId, response: bool, rpc_id: u64, p: &[u8]) {
        let Some(l) = self.links.get_mut(&id) else {
            return;
        };
        let allowed = l.identity.is_some()
            && (response
                || (l.dht_in.allow(now, 1000, DHT_REQUEST_RATE)
                    && (p.get(1) != Some(&DHT_TYPE_STORE)
                        || l.dht_store_in.allow(now, 1000, DHT_STORE_RATE))));
        if !allowed {
            self.stats.dht_dropped += 1;
            return;
        }
        self.stats.dht_frames += 1;
        let mut data = self.take_buf();
        data.extend_from_slice(p);
        self.events.push_back(LinkEvent::Dht {
            link: id,
            rpc_id,
            response,
            data,
        });
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
                Ok(r) if r.is_relay() && self.is_suspect(r.identity(), now) => {}
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
            self.link_out(id, dst, &b);
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
            if self.dials.contains_key(&l.peer_key) || self.punches.contains_key(&id) {
                // Punching owns this link's handshakes and lifetime.
                return;
            }
            // 1 s, 2 s, 4 s between attempts: a lost initiation costs a second, not five, and a
            // dead peer is given up after about 7 s.
            let wait = HANDSHAKE_RETRY_MS << l.attempts.saturating_sub(1).min(4);
            if now.saturating_sub(l.handshake_sent) >= wait {
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
            } else if l.hello_sent && now.saturating_sub(l.hello_at) >= HELLO_RETRY_MS {
                // Ours or theirs was lost: resend and ask for theirs.
                self.send_hello(now, id, true);
            }
            return;
        }
        // Request timeouts and retries.
        let mut retry: Vec<(u64, Vec<u8>)> = Vec::new();
        // The time a failed PING waited in all (its tries' timeouts).
        let mut failed_ping: Option<Millis> = None;
        if let Some(l) = self.links.get_mut(&id) {
            let mut gone = Vec::new();
            for (rid, p) in l.rpcs.iter_mut() {
                if now >= p.deadline {
                    if p.retries > 0 {
                        p.retries -= 1;
                        p.deadline = now + p.timeout;
                        retry.push((*rid, p.frame.clone()));
                    } else {
                        gone.push(*rid);
                        if matches!(p.rpc, Rpc::Ping { .. }) {
                            let waited = p.timeout * (u64::from(LINK_RPC_RETRIES) + 1);
                            failed_ping = Some(failed_ping.map_or(waited, |w| w.min(waited)));
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
        let silent = failed_ping.is_some_and(|waited| {
            self.links
                .get(&id)
                .is_some_and(|l| now.saturating_sub(l.last_rx) >= waited)
        });
        if silent {
            tracing::debug!(link = id.0, "no answer to PING: link is dead");
            if let Some(key) = self.links.get(&id).map(|l| l.peer_key) {
                if self.dead_peers.len() >= MAX_DEAD_PEERS {
                    self.dead_peers.retain(|_, t| now < *t);
                }
                if self.dead_peers.len() < MAX_DEAD_PEERS {
                    self.dead_peers.insert(key, now + DEAD_PEER_MS);
                }
            }
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
        // A link we keep sending on that has gone quiet is checked at once: a killed neighbour
        // sends nothing, and circuits through it should not wait the idle interval to close.
        let quiet = now.saturating_sub(l.last_rx);
        // Cells (not keepalives or PINGs): a link that only keeps a NAT mapping open may be
        // silent for a few seconds after the NAT lost its state (the NATed side's next
        // keepalive restores it); dropping it then would cost every circuit on it.
        let unanswered = l.last_cell > l.last_rx
            && quiet >= SILENT_PING_MS
            && now.saturating_sub(l.last_ping) >= SILENT_PING_MS;
        if !pinging && unanswered {
            let nonce: u64 = self.rng.gen();
            self.ping_timeout(now, id, nonce, SILENT_PING_TIMEOUT_MS);
        } else if !pinging && quiet >= PING_INTERVAL_MS {
            self.ping(now, id);
        }
        // Keepalives that hold NAT mappings (section 13.5). Behind NAT the keepalive is a PING
        // on a fixed period: its PONG also tells us at once when our NAT rebound and gave us a
        // new public port, and the PING itself shows every neighbour where we went.
        let Some(l) = self.links.get(&id) else { return };
        if behind_nat(self.nat) {
            if !pinging && now.saturating_sub(l.last_ping) >= NAT_KEEPALIVE_MS {
                self.ping(now, id);
            }
        } else if (l.punched || behind_nat(l.peer_nat))
            && now.saturating_sub(l.last_tx) >= LINK_KEEPALIVE_MS
        {
            self.send_keepalive(now, id);
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
        // The first node of a network listening on a wildcard address learns its endpoint from
        // the first query (it has no record to answer with before).
        if let Some(local) = self.rx_local {
            self.learn_local(now, local);
        }
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
            src: self.rx_src(),
            data: out,
        });
    }

    fn on_record_response(&mut self, now: Millis, from: SocketAddr, nonce: u64, data: &[u8]) {
        if !self.boot.on_response(from, nonce) {
            self.stats.dropped += 1;
            return;
        }
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
        let enough = have_relay && self.view.len() >= self.cfg.target_links;
        let links = &self.links;
        let queries = self.boot.due(
            now,
            enough,
            |a| links.values().any(|l| l.endpoint == *a),
            &mut self.rng,
        );
        for q in queries {
            self.note_recent(q.addr.ip(), now);
            let mut out = self.take_buf();
            datagram::emit_record_query(q.nonce, &mut out);
            self.stats.datagrams_out += 1;
            self.transmits.push_back(Transmit {
                dst: q.addr,
                src: None,
                data: out,
            });
        }
        let reason = self.isolation_reason(now);
        self.boot.log_isolation(now, reason.as_deref());
    }

    /// A bootstrap host name the daemon should resolve (off the event loop) and hand back with
    /// [`LinkLayer::on_resolved`].
    pub fn poll_resolve(&mut self) -> Option<String> {
        self.boot.poll_resolve()
    }

    /// The addresses a bootstrap host name resolved to, or why it did not resolve.
    pub fn on_resolved(
        &mut self,
        now: Millis,
        name: &str,
        result: Result<Vec<SocketAddr>, String>,
    ) {
        self.boot.on_resolved(now, name, result);
        self.bootstrap(now);
    }

    /// Each bootstrap peer's state, for `status`.
    pub fn bootstrap_status(&self) -> Vec<BootstrapInfo> {
        let links = &self.links;
        self.boot
            .status(|a| links.values().any(|l| l.endpoint == *a && l.hello_received))
    }

    /// Why the node has no link, in one line; `None` while a link is up.
    pub fn isolation_reason(&self, now: Millis) -> Option<String> {
        if self.links.values().any(|l| l.hello_received) {
            return None;
        }
        let listening: Vec<String> = if self.locals.is_empty() {
            self.cfg.advertise.iter().map(|a| a.to_string()).collect()
        } else {
            self.locals.iter().map(|a| a.to_string()).collect()
        };
        Some(self.boot.isolation_reason(now, &listening.join(", ")))
    }

    fn maintain_links(&mut self, now: Millis) {
        let boot = &self.boot;
        let others = self
            .links
            .values()
            .filter(|l| l.hello_received && l.is_relay && !boot.is_bootstrap(&l.endpoint))
            .count();
        if others >= self.cfg.target_links {
            let idle_bootstrap: Vec<LinkId> = self
                .links
                .values()
                .filter(|l| l.dialed && l.hello_received && boot.is_bootstrap(&l.endpoint))
                .filter(|l| {
                    l.established_at
                        .is_some_and(|t| now.saturating_sub(t) >= BOOTSTRAP_LINGER_MS)
                })
                .filter(|l| now.saturating_sub(l.last_cell) >= BOOTSTRAP_LINGER_MS)
                .filter(|l| !self.nat_uses(l.id))
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

fn wrap_envelope(data: &mut Vec<u8>, token: u64) {
    let mut head = [0u8; datagram::RELAY_ENVELOPE_HEADER];
    head[..4].copy_from_slice(&datagram::RELAY_ENVELOPE_TYPE.to_le_bytes());
    head[4..].copy_from_slice(&token.to_be_bytes());
    data.splice(0..0, head);
}

/// Host endpoints learned from received datagrams, at most.
const MAX_LOCAL_ENDPOINTS: usize = 8;

/// Private, shared, link-local and unique-local addresses: reachable only on their own network.
fn is_local_scope(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            a.is_private() || a.is_link_local() || {
                // 100.64.0.0/10, carrier-grade NAT.
                let [x, y, ..] = a.octets();
                x == 100 && (64..128).contains(&y)
            }
        }
        IpAddr::V6(a) => {
            let [s, ..] = a.segments();
            (s & 0xfe00) == 0xfc00 || (s & 0xffc0) == 0xfe80
        }
    }
}

/// Bytes of a link frame header, for callers sizing buffers.
pub const FRAME_OVERHEAD: usize = LINK_HEADER_LEN;

// ---- NAT traversal (docs/protocol.md section 13) ----------------------------------------------
impl LinkLayer {
    /// Our endpoints: the configured ones, and for a wildcard listen address the host addresses
    /// datagrams arrived at. Once neighbours tell us where they see us, learned addresses of
    /// another scope (a LAN address on a host that is reached publicly) are left out.
    fn advertised(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = self
            .cfg
            .advertise
            .iter()
            .copied()
            .filter(|a| !a.ip().is_unspecified() && a.port() != 0)
            .collect();
        let scope = self.observed.map(|o| is_local_scope(o.ip()));
        for l in &self.locals {
            if !out.contains(l) && scope.is_none_or(|s| s == is_local_scope(l.ip())) {
                out.push(*l);
            }
        }
        // The endpoint neighbours see first: it is known to work.
        if let Some(i) = self.observed.and_then(|o| out.iter().position(|a| *a == o)) {
            out.swap(0, i);
        }
        out
    }

    /// Notes that datagrams reach us at `local`. Only for wildcard listen addresses (a specific
    /// one is advertised as configured) and only a few (a host has few addresses).
    fn learn_local(&mut self, now: Millis, local: SocketAddr) {
        if self.locals.contains(&local) || self.locals.len() >= MAX_LOCAL_ENDPOINTS {
            return;
        }
        let wildcard = self
            .cfg
            .advertise
            .iter()
            .any(|a| a.ip().is_unspecified() && a.port() == local.port());
        if !wildcard || local.ip().is_unspecified() || local.ip().is_loopback() {
            return;
        }
        tracing::info!(endpoint = %local, "datagrams reach us at this endpoint");
        self.locals.push(local);
        self.refresh_record(now);
    }

    /// A new onion key (rotation): the record is signed again with it and sent to neighbours.
    pub fn set_onion_public(&mut self, now: Millis, onion_public: [u8; 32]) {
        self.keys.onion_public = onion_public;
        self.refresh_record(now);
    }

    /// Our endpoints learned from received datagrams (wildcard listen addresses).
    pub fn local_endpoints(&self) -> &[SocketAddr] {
        &self.locals
    }

    /// Section 13.1: public if neighbours see us at an address we advertise (or one datagrams
    /// arrive at: no translation on the way), reachable if a probe reached us unsolicited at the
    /// endpoint we are seen at, else what the mappings show.
    fn reclassify(&mut self) {
        let advertised = self.advertised();
        self.nat = match self.observed {
            Some(o) if advertised.contains(&o) || self.locals.contains(&o) => NatClass::Public,
            Some(o) if self.probe_ok == Some(o) => NatClass::Reachable,
            _ => self.obs.class(),
        };
    }

    fn note_recent(&mut self, ip: std::net::IpAddr, at: Millis) {
        if let Some((t, _)) = self.recent_peers.get_mut(&ip) {
            *t = (*t).max(at);
            return;
        }
        let charge = if self.recent_peers.len() < MAX_RECENT_PEERS {
            self.budget.try_charge(RECENT_PEER_COST)
        } else {
            None
        };
        match charge {
            Some(c) => {
                self.recent_peers.insert(ip, (at, c));
            }
            // Too many to remember: trust no probe until they would have expired.
            None => self.recent_overflow_until = at + RECENT_PEER_MS,
        }
    }

    fn send_keepalive(&mut self, now: Millis, id: LinkId) {
        let mut data = self.pool.pop().unwrap_or_else(new_buf);
        data.resize(NOISE_BUF_LEN, 0);
        let Some(l) = self.links.get_mut(&id) else {
            self.recycle(data);
            return;
        };
        let len = match l.session.encapsulate(&[], &mut data) {
            NoiseOut::Send(b) => Some(b.len()),
            _ => None,
        };
        match len {
            Some(len) => {
                l.last_tx = now;
                data.truncate(len);
                let (mut dst, mut src) = (l.endpoint, l.local);
                if let Some(r) = l.relay {
                    wrap_envelope(&mut data, r.token);
                    (dst, src) = (r.via, r.via_local);
                }
                self.stats.datagrams_out += 1;
                self.transmits.push_back(Transmit { dst, src, data });
            }
            None => self.recycle(data),
        }
    }

    // ---- punching ------------------------------------------------------------------------

    /// Drives dials to NATed relays: ask an introducer for a punch, in turn, a few times.
    fn run_dials(&mut self, now: Millis) {
        let keys: Vec<[u8; 32]> = self.dials.keys().copied().collect();
        for key in keys {
            let Some(id) = self.by_key.get(&key).copied() else {
                self.dials.remove(&key);
                continue;
            };
            if self.links.get(&id).is_some_and(|l| l.session.established()) {
                self.dials.remove(&key);
                continue;
            }
            let Some(d) = self.dials.get(&key) else {
                continue;
            };
            if now < d.next || self.punches.contains_key(&id) {
                continue;
            }
            if d.tries >= PUNCH_TRIES || d.introducers.is_empty() {
                if !d.relay_asked {
                    // Fall back to a relayed link through an introducer we are linked to.
                    let il = d.introducers.iter().find_map(|c| self.link_to(&c.identity));
                    let target = d.target;
                    if let Some(il) = il {
                        if let Some(d) = self.dials.get_mut(&key) {
                            d.relay_asked = true;
                            d.next = now + 4 * LINK_RPC_TIMEOUT_MS;
                        }
                        tracing::debug!(link = id.0, "punching failed: asking for a relayed link");
                        self.send_rpc(
                            now,
                            il,
                            Rpc::Relay { target_key: key },
                            MsgType::RelayRequest,
                            &target,
                        );
                        continue;
                    }
                }
                tracing::debug!(link = id.0, "punching gave up");
                self.dials.remove(&key);
                self.remove_link(id, true);
                continue;
            }
            let n = d.introducers.len();
            let Some(intro) = d.introducers.get(usize::from(d.tries) % n).copied() else {
                continue;
            };
            let target = d.target;
            let il = self.link_to(&intro.identity);
            let Some(d) = self.dials.get_mut(&key) else {
                continue;
            };
            match il {
                Some(il) => {
                    d.tries += 1;
                    d.next = now + PUNCH_DURATION_MS + LINK_RPC_TIMEOUT_MS / 4;
                    self.send_rpc(
                        now,
                        il,
                        Rpc::Punch { target_key: key },
                        MsgType::PunchRequest,
                        &target,
                    );
                }
                None => {
                    // Link to the introducer first (it is directly reachable).
                    d.waits += 1;
                    if d.waits > 4 {
                        d.tries += 1;
                        d.waits = 0;
                    }
                    d.next = now + 2 * LINK_RPC_TIMEOUT_MS;
                    if intro.link_key != key {
                        let _ = self.connect_direct(now, intro.link_key, intro.endpoint);
                    }
                }
            }
        }
    }

    fn start_punch(&mut self, now: Millis, id: LinkId, endpoints: Vec<SocketAddr>) {
        if endpoints.is_empty() || self.punches.len() >= MAX_PUNCHES {
            self.stats.dropped += 1;
            return;
        }
        let Some(charge) = self.budget.try_charge(NAT_ENTRY_COST) else {
            self.stats.dropped += 1;
            return;
        };
        if let Some(l) = self.links.get_mut(&id) {
            if let Some(e) = endpoints.first() {
                l.endpoint = *e;
            }
        }
        self.stats.punches += 1;
        for e in &endpoints {
            self.note_recent(e.ip(), now + PUNCH_DURATION_MS);
        }
        self.punches.insert(
            id,
            Punch {
                endpoints,
                until: now + PUNCH_DURATION_MS,
                next: now,
                init: Vec::new(),
                init_at: 0,
                started: now,
                _charge: charge,
            },
        );
        self.run_punches(now);
    }

    /// Re-sends handshake initiations to every endpoint of every running punch.
    fn run_punches(&mut self, now: Millis) {
        if self.punches.is_empty() {
            return;
        }
        let ids: Vec<LinkId> = self.punches.keys().copied().collect();
        for id in ids {
            let Some(p) = self.punches.get_mut(&id) else {
                continue;
            };
            // Done once the session is up and the peer was heard directly since the punch
            // began (a relayed link being upgraded hears it through the relay all along).
            let done = self
                .links
                .get(&id)
                .map(|l| l.session.established() && l.last_rx > p.started && l.relay.is_none());
            match done {
                None => {
                    self.punches.remove(&id);
                    continue;
                }
                Some(true) => {
                    self.punches.remove(&id);
                    self.stats.punched_links += 1;
                    if let Some(l) = self.links.get_mut(&id) {
                        l.punched = true;
                    }
                    continue;
                }
                Some(false) => {}
            }
            if now >= p.until {
                self.punches.remove(&id);
                let key = self.links.get(&id).map(|l| l.peer_key);
                // The dial (if we asked) decides whether to try again; a punch we were told
                // about just ends (an upgrade of a live relayed link leaves it as it was).
                let live = self.links.get(&id).is_some_and(|l| l.session.established());
                if !live && key.is_some_and(|k| !self.dials.contains_key(&k)) {
                    self.remove_link(id, false);
                }
                continue;
            }
            if now < p.next {
                continue;
            }
            p.next = now + PUNCH_INTERVAL_MS;
            let fresh = p.init.is_empty() || now.saturating_sub(p.init_at) >= PUNCH_REINIT_MS;
            if fresh {
                let mut buf = std::mem::take(&mut self.scratch);
                buf.resize(NOISE_BUF_LEN, 0);
                if let Some(l) = self.links.get_mut(&id) {
                    l.handshake_sent = now;
                    if let NoiseOut::Send(b) = l.session.initiate(&mut buf, true) {
                        p.init.clear();
                        p.init.extend_from_slice(b);
                        p.init_at = now;
                    }
                }
                self.scratch = buf;
            }
            if let Some(l) = self.links.get_mut(&id) {
                l.last_tx = now;
            }
            let (endpoints, init) = (p.endpoints.clone(), p.init.clone());
            if !init.is_empty() {
                for ep in endpoints {
                    self.push_transmit(ep, None, &init);
                }
            }
        }
    }

    /// As an introducer: tell both sides to punch (section 13.2).
    fn on_punch_request(&mut self, now: Millis, id: LinkId, rpc_id: u64, p: &[u8]) {
        let target = match parse_target(p) {
            Ok(t) => t,
            Err(e) => return self.malformed(now, id, &e.to_string()),
        };
        let allowed = self
            .links
            .get_mut(&id)
            .is_some_and(|l| l.punch_in.allow(now, 1000, PUNCH_REQUEST_RATE));
        if !allowed || !self.cfg.relay {
            self.stats.dropped += 1;
            return;
        }
        let t = self.link_to(&target).filter(|t| *t != id);
        let (Some(a), Some(t)) = (self.links.get(&id), t.and_then(|t| self.links.get(&t))) else {
            // No live link to the target: "failed".
            let failed = PunchNotify {
                peer: target,
                peer_link_key: [0; 32],
                endpoints: Vec::new(),
                attempt_id: 0,
            };
            let _ = self.send_frame(now, id, MsgType::PunchNotify, rpc_id, &failed.emit());
            return;
        };
        let endpoints_of = |l: &Link| {
            let mut v = vec![l.endpoint];
            if let Some(e) = l.peer_endpoint.filter(|e| *e != l.endpoint) {
                v.push(e);
            }
            v
        };
        let attempt_id: u64 = self.rng.gen();
        let to_a = PunchNotify {
            peer: target,
            peer_link_key: t.peer_key,
            endpoints: endpoints_of(t),
            attempt_id,
        };
        let to_t = PunchNotify {
            peer: a.identity.unwrap_or([0; 32]),
            peer_link_key: a.peer_key,
            endpoints: endpoints_of(a),
            attempt_id,
        };
        let tid = t.id;
        let fresh: u64 = self.rng.gen_range(1..u64::MAX);
        self.stats.introductions += 1;
        let _ = self.send_frame(now, tid, MsgType::PunchNotify, fresh, &to_t.emit());
        let _ = self.send_frame(now, id, MsgType::PunchNotify, rpc_id, &to_a.emit());
    }

    fn on_punch_notify(&mut self, now: Millis, id: LinkId, rpc_id: u64, p: &[u8]) {
        let n = match PunchNotify::parse(p) {
            Ok(n) => n,
            Err(e) => return self.malformed(now, id, &e.to_string()),
        };
        let answer = self
            .links
            .get_mut(&id)
            .and_then(|l| l.rpcs.remove(&rpc_id))
            .map(|pending| pending.rpc);
        if let Some(Rpc::Punch { target_key }) = answer {
            // The answer to our request.
            let link = self.by_key.get(&target_key).copied();
            match link {
                Some(link) if !n.endpoints.is_empty() && n.peer_link_key == target_key => {
                    self.start_punch(now, link, n.endpoints);
                }
                _ => {
                    // Failed: the next introducer soon.
                    if let Some(d) = self.dials.get_mut(&target_key) {
                        d.next = now + LINK_RPC_TIMEOUT_MS / 2;
                    }
                }
            }
            return;
        }
        // Unsolicited: an introducer tells us someone wants to link to us.
        let from_relay = self.links.get_mut(&id).is_some_and(|l| {
            l.is_relay
                && l.identity.is_some()
                && l.punch_notify_in.allow(now, 1000, PUNCH_REQUEST_RATE)
        });
        if !from_relay || n.endpoints.is_empty() || n.peer_link_key == self.link_public {
            self.stats.dropped += 1;
            return;
        }
        let Some(first) = n.endpoints.first().copied() else {
            return;
        };
        let link = match self.by_key.get(&n.peer_link_key).copied() {
            // Even over a session we think is up: the peer asking for a punch means it lost it
            // (a new handshake on a live session is just a rekey).
            Some(l) => l,
            None => {
                if self.punches.len() >= MAX_PUNCHES {
                    self.stats.dropped += 1;
                    return;
                }
                match self.new_link(now, n.peer_link_key, first, true) {
                    Ok(l) => l,
                    Err(_) => {
                        self.stats.dropped += 1;
                        return;
                    }
                }
            }
        };
        self.expected.insert(n.peer_link_key, now);
        self.start_punch(now, link, n.endpoints);
    }

    // ---- reachability probe --------------------------------------------------------------

    /// Asks a neighbour to have another one dial us unsolicited (section 13.3).
    fn run_probe(&mut self, now: Millis) {
        if let Some(p) = &self.probe {
            if now.saturating_sub(p.sent) < PROBE_WINDOW_MS {
                return;
            }
            self.probe = None;
        }
        let Some(observed) = self.observed else {
            return;
        };
        if !self.cfg.relay || self.nat == NatClass::Public {
            return;
        }
        let period = if self.probe_ok == Some(observed) {
            NAT_RECHECK_MS
        } else {
            PROBE_RETRY_MS
        };
        if now.saturating_sub(self.last_probe) < period && self.last_probe != 0 {
            return;
        }
        let relays: Vec<LinkId> = self
            .links
            .values()
            .filter(|l| l.hello_received && l.is_relay)
            .map(|l| l.id)
            .collect();
        if relays.len() < 2 {
            return;
        }
        let Some(n1) = relays.get(self.rng.gen_range(0..relays.len())).copied() else {
            return;
        };
        let nonce: u64 = self.rng.gen();
        self.last_probe = now;
        self.probe = Some(Probe {
            nonce,
            sent: now,
            endpoint: observed,
        });
        let rpc: u64 = self.rng.gen_range(1..u64::MAX);
        let _ = self.send_frame(now, n1, MsgType::ProbeRequest, rpc, &nonce.to_be_bytes());
    }

    /// Whether a link came to us unsolicited: we did not dial, punch or relay it, and sent
    /// nothing lately to its address (no closed link, query or punch, no other live link).
    fn unsolicited(&self, now: Millis, id: LinkId) -> bool {
        let Some(l) = self.links.get(&id) else {
            return false;
        };
        let ip = l.endpoint.ip();
        let recent = self
            .recent_peers
            .get(&ip)
            .is_some_and(|(t, _)| now.saturating_sub(*t) < RECENT_PEER_MS);
        let shared = self
            .links
            .values()
            .any(|x| x.id != id && x.endpoint.ip() == ip);
        !(l.dialed
            || l.punched
            || l.relay.is_some()
            || recent
            || shared
            || now < self.recent_overflow_until)
    }

    /// An unsolicited inbound link proves what a probe proves (section 13.3): strangers reach
    /// us at our observed endpoint.
    fn unsolicited_evidence(&mut self, now: Millis, id: LinkId) {
        let Some(observed) = self.observed else {
            return;
        };
        if !self.cfg.relay || self.probe_ok == Some(observed) || !self.unsolicited(now, id) {
            return;
        }
        self.probe_ok = Some(observed);
        self.stats.probes_ok += 1;
        let before = self.nat;
        self.reclassify();
        if self.nat != before {
            tracing::debug!(nat = self.nat.name(), "reached unsolicited");
            self.refresh_record(now);
        }
    }

    fn check_probe_ping(&mut self, now: Millis, id: LinkId, payload: &[u8]) {
        let Some(p) = &self.probe else { return };
        if payload.get(..8) != Some(&p.nonce.to_be_bytes()[..])
            || now.saturating_sub(p.sent) > PROBE_WINDOW_MS
        {
            return;
        }
        // Only an unsolicited link proves reachability: one we did not dial, from an address we
        // sent nothing to lately (our NAT may still hold a flow towards it).
        if !self.unsolicited(now, id) {
            tracing::debug!("probe arrived from an address we talked to: inconclusive");
            self.probe = None;
            return;
        }
        self.probe_ok = Some(p.endpoint);
        self.probe = None;
        self.stats.probes_ok += 1;
        let before = self.nat;
        self.reclassify();
        if self.nat != before {
            tracing::debug!(nat = self.nat.name(), "reachability probe succeeded");
            self.refresh_record(now);
        }
    }

    /// As N1: forward a neighbour's probe to another neighbour with a different address.
    fn on_probe_request(&mut self, now: Millis, id: LinkId, p: &[u8]) {
        let Some(nonce) = p
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
        else {
            return self.malformed(now, id, "PROBE_REQUEST");
        };
        let Some(a) = self.links.get_mut(&id) else {
            return;
        };
        if !self.cfg.relay || !a.probe_in.allow(now, 60_000, PROBE_REQUEST_RATE) {
            self.stats.dropped += 1;
            return;
        }
        let fwd = ProbeForward {
            subject: a.identity.unwrap_or([0; 32]),
            subject_link_key: a.peer_key,
            endpoint: a.endpoint,
            nonce,
        };
        let ip = a.endpoint.ip();
        let cands: Vec<LinkId> = self
            .links
            .values()
            .filter(|l| l.hello_received && l.is_relay && l.id != id && l.endpoint.ip() != ip)
            .filter(|l| l.peer_key != fwd.subject_link_key)
            .map(|l| l.id)
            .collect();
        if cands.is_empty() {
            self.stats.dropped += 1;
            return;
        }
        if let Some(n2) = cands.get(self.rng.gen_range(0..cands.len())).copied() {
            let _ = self.send_frame(now, n2, MsgType::ProbeForward, 0, &fwd.emit());
        }
    }

    /// As N2: dial the subject directly and PING it with its nonce.
    fn on_probe_forward(&mut self, now: Millis, id: LinkId, p: &[u8]) {
        let f = match ProbeForward::parse(p) {
            Ok(f) => f,
            Err(e) => return self.malformed(now, id, &e.to_string()),
        };
        let ok = self
            .links
            .get_mut(&id)
            .is_some_and(|l| l.is_relay && l.probe_in.allow(now, 1000, 10 * PROBE_REQUEST_RATE));
        if !ok
            || self.by_key.contains_key(&f.subject_link_key)
            || self.probe_pings.len() >= MAX_PROBE_PINGS
        {
            // Already linked (cannot test unsolicited reachability) or too many pending.
            self.stats.dropped += 1;
            return;
        }
        let Some(charge) = self.budget.try_charge(NAT_ENTRY_COST) else {
            self.stats.dropped += 1;
            return;
        };
        self.probe_pings
            .insert(f.subject_link_key, (f.nonce, now, charge));
        if self
            .connect_direct(now, f.subject_link_key, f.endpoint)
            .is_err()
        {
            self.probe_pings.remove(&f.subject_link_key);
        }
    }
}

// ---- relayed links (docs/protocol.md section 13.4) --------------------------------------------
impl LinkLayer {
    fn fresh_token(&mut self) -> u64 {
        loop {
            let t: u64 = self.rng.gen_range(1..u64::MAX);
            if !self.relay_table.contains_key(&t) && !self.relayed_tokens.contains_key(&t) {
                return t;
            }
        }
    }

    /// As an introducer: set up a relayed link between the requester and the target.
    fn on_relay_request(&mut self, now: Millis, id: LinkId, rpc_id: u64, p: &[u8]) {
        let target = match parse_target(p) {
            Ok(t) => t,
            Err(e) => return self.malformed(now, id, &e.to_string()),
        };
        let allowed = self
            .links
            .get_mut(&id)
            .is_some_and(|l| l.relay_in.allow(now, 1000, RELAY_REQUEST_RATE));
        if !allowed || !self.cfg.relay {
            self.stats.dropped += 1;
            return;
        }
        let refuse = |l: &mut LinkLayer| {
            let o = RelayOffer {
                status: RELAY_REFUSED,
                peer: target,
                peer_link_key: [0; 32],
                token: 0,
                lifetime_s: 0,
            };
            let _ = l.send_frame(now, id, MsgType::RelayOffer, rpc_id, &o.emit());
        };
        let t = self.link_to(&target).filter(|t| *t != id);
        let (Some(t), true) = (t, self.relay_table.len() / 2 < MAX_RELAYED_LINKS) else {
            return refuse(self);
        };
        let (Some(c1), Some(c2)) = (
            self.budget.try_charge(NAT_ENTRY_COST),
            self.budget.try_charge(NAT_ENTRY_COST),
        ) else {
            return refuse(self);
        };
        let (Some(a), Some(tl)) = (self.links.get(&id), self.links.get(&t)) else {
            return;
        };
        let (a_ident, a_key, t_key) = (a.identity.unwrap_or([0; 32]), a.peer_key, tl.peer_key);
        let ta = self.fresh_token();
        let tt = self.fresh_token();
        for (tok, link, other, c) in [(ta, id, tt, c1), (tt, t, ta, c2)] {
            self.relay_table.insert(
                tok,
                RelayEntry {
                    link,
                    other,
                    last: now,
                    rate: RateWindow::default(),
                    _charge: Some(c),
                },
            );
        }
        let lifetime_s = (RELAYED_LINK_IDLE_MS / 1000) as u32;
        let to_t = RelayOffer {
            status: RELAY_OK,
            peer: a_ident,
            peer_link_key: a_key,
            token: tt,
            lifetime_s,
        };
        let to_a = RelayOffer {
            status: RELAY_OK,
            peer: target,
            peer_link_key: t_key,
            token: ta,
            lifetime_s,
        };
        let fresh: u64 = self.rng.gen_range(1..u64::MAX);
        let _ = self.send_frame(now, t, MsgType::RelayOffer, fresh, &to_t.emit());
        let _ = self.send_frame(now, id, MsgType::RelayOffer, rpc_id, &to_a.emit());
    }

    fn set_relayed(&mut self, now: Millis, id: LinkId, via_link: LinkId, token: u64) {
        let Some((via, via_local)) = self.links.get(&via_link).map(|l| (l.endpoint, l.local))
        else {
            return;
        };
        self.punches.remove(&id);
        if let Some(l) = self.links.get_mut(&id) {
            if let Some(old) = l.relay.replace(RelayPath {
                via,
                via_link,
                token,
                via_local,
            }) {
                self.relayed_tokens.remove(&old.token);
            }
            self.relayed_tokens.insert(token, id);
            self.stats.relayed_links += 1;
            l.upgrade_next = now + RELAY_UPGRADE_FIRST_MS;
            l.upgrade_tries = 0;
        }
    }

    /// Tries now and then to turn relayed links into direct ones by punching again (13.4): a
    /// punch can fail for passing reasons (loss, a NAT that was still holding a stale mapping).
    /// One side asks (the one with the smaller link key), through an introducer of the peer; the
    /// relayed link carries on meanwhile and is upgraded when the peer answers directly.
    fn run_upgrades(&mut self, now: Millis) {
        let due: Vec<(LinkId, [u8; 32], [u8; 32])> = self
            .links
            .values()
            .filter(|l| {
                l.relay.is_some()
                    && l.session.established()
                    && l.hello_received
                    && now >= l.upgrade_next
                    && self.link_public < l.peer_key
                    && !(self.nat == NatClass::Symmetric && l.peer_nat == NatClass::Symmetric)
                    && !self.punches.contains_key(&l.id)
            })
            .filter_map(|l| Some((l.id, l.identity?, l.peer_key)))
            .collect();
        for (id, identity, key) in due {
            let intro = self.view.get(&identity).and_then(|r| {
                r.fields()
                    .introducers
                    .iter()
                    .find_map(|c| self.link_to(&c.identity))
            });
            if let Some(l) = self.links.get_mut(&id) {
                let wait = RELAY_UPGRADE_FIRST_MS
                    .saturating_mul(1 << l.upgrade_tries.min(6))
                    .min(RELAY_UPGRADE_MAX_MS);
                l.upgrade_tries = l.upgrade_tries.saturating_add(1);
                l.upgrade_next = now + wait;
            }
            if let Some(il) = intro.filter(|il| *il != id) {
                tracing::debug!(link = id.0, "trying to make a relayed link direct");
                self.stats.upgrade_attempts += 1;
                self.send_rpc(
                    now,
                    il,
                    Rpc::Punch { target_key: key },
                    MsgType::PunchRequest,
                    &identity,
                );
            }
        }
    }

    fn on_relay_offer(&mut self, now: Millis, id: LinkId, rpc_id: u64, p: &[u8]) {
        let o = match RelayOffer::parse(p) {
            Ok(o) => o,
            Err(e) => return self.malformed(now, id, &e.to_string()),
        };
        let answer = self
            .links
            .get_mut(&id)
            .and_then(|l| l.rpcs.remove(&rpc_id))
            .map(|pending| pending.rpc);
        if let Some(Rpc::Relay { target_key }) = answer {
            let link = self.by_key.get(&target_key).copied();
            match link {
                Some(link) if o.status == RELAY_OK && o.peer_link_key == target_key => {
                    self.set_relayed(now, link, id, o.token);
                    self.initiate(link, now, true);
                }
                _ => {
                    if let Some(d) = self.dials.get_mut(&target_key) {
                        d.next = now;
                    }
                }
            }
            return;
        }
        // Unsolicited: someone asked our neighbour for a relayed link to us.
        let ok = self.links.get_mut(&id).is_some_and(|l| {
            l.is_relay
                && l.identity.is_some()
                && l.relay_in.allow(now, 1000, 2 * RELAY_REQUEST_RATE)
        });
        if !ok || o.status != RELAY_OK || o.peer_link_key == self.link_public {
            self.stats.dropped += 1;
            return;
        }
        let Some(via) = self.links.get(&id).map(|l| l.endpoint) else {
            return;
        };
        let link = match self.by_key.get(&o.peer_link_key).copied() {
            Some(l) => l,
            None => match self.new_link(now, o.peer_link_key, via, false) {
                Ok(l) => l,
                Err(_) => {
                    self.stats.dropped += 1;
                    return;
                }
            },
        };
        self.expected.insert(o.peer_link_key, now);
        self.set_relayed(now, link, id, o.token);
    }

    /// A relay envelope: forward it as an introducer, or take it as a relayed link's datagram.
    fn on_envelope(&mut self, now: Millis, from: SocketAddr, data: &[u8]) {
        let Some((token, inner)) = datagram::parse_relay_envelope(data) else {
            self.stats.dropped += 1;
            return;
        };
        if let Some(e) = self.relay_table.get_mut(&token) {
            let src_ok = self.links.get(&e.link).map(|l| l.endpoint) == Some(from);
            if !src_ok || !e.rate.allow(now, 1000, RELAYED_LINK_RATE) {
                self.stats.dropped += 1;
                return;
            }
            e.last = now;
            let other = e.other;
            let dst = match self.relay_table.get_mut(&other) {
                Some(o) => {
                    o.last = now;
                    self.links.get(&o.link).map(|l| (l.endpoint, l.local))
                }
                None => None,
            };
            let Some((dst, src)) = dst else {
                self.stats.dropped += 1;
                return;
            };
            // Only the token changes: the introducer sees WireGuard ciphertext, nothing else.
            let mut out = self.take_buf();
            datagram::emit_relay_envelope(other, inner, &mut out);
            self.stats.datagrams_out += 1;
            self.stats.relayed_datagrams += 1;
            self.transmits.push_back(Transmit {
                dst,
                src,
                data: out,
            });
            return;
        }
        if let Some(id) = self.relayed_tokens.get(&token).copied() {
            let via = self.links.get(&id).and_then(|l| l.relay).map(|r| r.via);
            if via != Some(from) {
                self.stats.dropped += 1;
                return;
            }
            self.feed_via(now, id, from, inner, true);
            return;
        }
        self.stats.dropped += 1;
    }
}

impl LinkLayer {
    /// Whether NAT traversal needs this link kept: it carries relayed links (as introducer or
    /// endpoint), or its peer is one of our introducers.
    fn nat_uses(&self, id: LinkId) -> bool {
        if self.relay_table.values().any(|e| e.link == id)
            || self
                .links
                .values()
                .any(|l| l.relay.is_some_and(|r| r.via_link == id))
        {
            return true;
        }
        let ident = self.links.get(&id).and_then(|l| l.identity);
        match (ident, &self.own_record) {
            (Some(i), Some(r)) => r.fields().introducers.iter().any(|c| c.identity == i),
            _ => false,
        }
    }
}
