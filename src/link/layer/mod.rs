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
mod exit_policies;
mod hello;
mod idle;
mod link;
mod probe;
mod punch;
mod relayed;
mod routing;
mod rpc;
mod session;
mod table;
mod types;

use rand::rngs::StdRng;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use x25519_dalek::PublicKey;

use crate::budget::{Charge, MemoryBudget};
use crate::crypto::keys::hex;
use crate::crypto::Randomness;
use crate::link::bootstrap::Bootstrap;
use crate::link::nat::{
    behind_nat, Observations, PunchCaps, PROBE_WINDOW_MS, PUNCH_TRIES, RELAYED_LINK_IDLE_MS,
};
use crate::link::noise::{Responder, NOISE_BUF_LEN};
use crate::link::view::RelayView;
use crate::time::{Expiring, Instant, Millis};
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
pub use exit_policies::MAX_EXIT_POLICIES;
pub use hello::{HELLO_RETRY_MS, HELLO_TIMEOUT_MS};
pub use idle::RELAY_LINK_IDLE_MS;
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
pub use types::{
    LinkConfig, LinkError, LinkEvent, LinkId, LinkKeys, LinkStats, PeerInfo, Transmit,
};

/// Housekeeping period of a settled node (not dialling for more links): the per-second sweeps,
/// bootstrap, dialling for more links, record refresh, and boringtun's `update_timers` for every
/// link (boringtun has no next-deadline call; its timers are seconds long: rekey, its passive
/// keepalive, expiry). Every other link timer runs at its exact deadline
/// ([`LinkLayer::poll_timeout`]). Also the longest the layer ever sleeps: the safety cap.
pub const LINK_HOUSEKEEPING_MS: Millis = 1000;

/// Housekeeping period while the node is dialling relays for more links, and
/// the retry period of a timer that was due but could not do its work (a PING the per-link
/// request cap refused): the old fixed tick, so that a declined timer never spins.
pub const LINK_TIMER_TICK_MS: Millis = 250;

/// Malformed frames per minute before a link is closed.
pub const LINK_MALFORMED_LIMIT: u32 = 20;

/// The link layer of one node.
pub struct LinkLayer {
    cfg: LinkConfig,
    keys: LinkKeys,
    link_public: [u8; 32],
    responder: Responder,
    budget: MemoryBudget,
    rng: StdRng,
    links: table::LinkTable,
    /// Reused by `handle_timeout` for the ids of the links whose timers are due.
    due_links: Vec<LinkId>,
    by_index: BTreeMap<u32, LinkId>,
    by_key: BTreeMap<[u8; 32], LinkId>,
    next_id: u32,
    view: RelayView,
    own_record: Option<RelayRecord>,
    record_signed: Instant,
    /// `[exit]` ports and networks, when we serve as an exit.
    exit_policy: Option<(Vec<u16>, Vec<ipnet::IpNet>)>,
    /// Our signed exit policy (protocol.md 5.5).
    own_policy: Option<crate::wire::exit_policy::ExitPolicyRecord>,
    /// IPv6 does not leave this exit (the host cannot forward it): not published.
    exit_without_ipv6: bool,
    /// Exits' policies learned from neighbours.
    policies: exit_policies::ExitPolicies,
    /// A hostile node's lie in its own record (tests only: [`LinkLayer::forge_record_endpoint`]).
    forged_endpoint: Option<SocketAddr>,
    observed: Option<SocketAddr>,
    /// Our own endpoints learned from where datagrams arrive (wildcard listen addresses).
    locals: Vec<SocketAddr>,
    /// The local endpoint of the datagram being handled.
    rx_local: Option<SocketAddr>,
    nat: NatClass,
    backoff: BTreeMap<[u8; 32], Backoff>,
    /// Peers (by link key) whose link died of unanswered PINGs, until when
    /// [`LinkLayer::recently_dead`] says so: an EXTEND towards a relay that just died fails at
    /// once instead of dialling it. (Our own dialling is not stopped: its backoff applies.)
    dead_peers: Expiring<[u8; 32]>,
    boot: Bootstrap,
    query_budget: (Instant, u32),
    expected: BTreeMap<[u8; 32], Instant>,
    obs: Observations,
    /// Addresses we sent to outside a live link lately (closed links, bootstrap queries,
    /// punches): a probe from one of them proves nothing.
    recent_peers: BTreeMap<std::net::IpAddr, (Instant, Charge)>,
    /// Relays a circuit extension to failed, kept out of the view until the time given unless
    /// they speak to us themselves (records of dead relays linger in others' views until they
    /// expire, and every path through one fails only after a timeout).
    suspects: Expiring<[u8; 32]>,
    recent_overflow_until: Instant,
    probe: Option<Probe>,
    probe_ok: Option<SocketAddr>,
    last_probe: Instant,
    probe_pings: BTreeMap<[u8; 32], (u64, Instant, Charge)>,
    dials: BTreeMap<[u8; 32], PunchDial>,
    punches: BTreeMap<LinkId, Punch>,
    /// Caps on punch datagrams per endpoint and per IP, over all punches.
    punch_caps: PunchCaps,
    /// As an introducer: token -> relayed link entry.
    relay_table: BTreeMap<u64, RelayEntry>,
    /// As an endpoint: our token -> relayed link.
    relayed_tokens: BTreeMap<u64, LinkId>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<LinkEvent>,
    pool: Vec<Vec<u8>>,
    scratch: Vec<u8>,
    rx_scratch: Vec<u8>,
    /// When housekeeping runs next.
    next_tick: Instant,
    /// The `now` of the last `handle_timeout`: a deadline at or before it was due then and not
    /// cleared, so it is retried `LINK_TIMER_TICK_MS` later instead of at once (no spinning).
    last_timeout: Instant,
    last_second: Instant,
    stats: LinkStats,
    /// Relays whose links are not closed as idle (`idle.rs`).
    kept: Vec<[u8; 32]>,
    /// Driven by the in-process network: boringtun's own timers run on the wall clock, so they
    /// are left out (the link's own handshake retries and keepalives run on `now`).
    virtual_time: bool,
    /// The simulator's link stand-in (src/sim/crypto.rs); `None` in the daemon.
    sim_crypto: Option<crate::sim::crypto::SimCrypto>,
}

/// Bytes of a link frame header, for callers sizing buffers.
pub const FRAME_OVERHEAD: usize = LINK_HEADER_LEN;

impl LinkLayer {
    /// Entries of the layer's tables, by table (the simulator's memory trace, issue #25).
    pub fn table_sizes(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("link.links", self.links.len()),
            ("link.view", self.view.len()),
            ("link.backoff", self.backoff.len()),
            ("link.dead_peers", self.dead_peers.len()),
            ("link.expected", self.expected.len()),
            ("link.recent_peers", self.recent_peers.len()),
            ("link.suspects", self.suspects.len()),
            ("link.probe_pings", self.probe_pings.len()),
            ("link.dials", self.dials.len()),
            ("link.punches", self.punches.len()),
            ("link.relay_table", self.relay_table.len()),
            ("link.relayed_tokens", self.relayed_tokens.len()),
            ("link.transmits", self.transmits.len()),
            ("link.events", self.events.len()),
        ]
    }

    /// A link layer for a node. `rand` seeds its choices (indices, RPC ids, nonces, jitter): the
    /// daemon passes [`Randomness::from_os`]. It makes no secrets: boringtun draws the link
    /// handshake's ephemerals from the operating system itself.
    pub fn new(
        cfg: LinkConfig,
        keys: LinkKeys,
        budget: MemoryBudget,
        rand: Randomness,
        now: Instant,
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
            links: table::LinkTable::default(),
            due_links: Vec::new(),
            by_index: BTreeMap::new(),
            by_key: BTreeMap::new(),
            next_id: 1,
            view,
            own_record: None,
            record_signed: Instant::ZERO,
            exit_policy: None,
            own_policy: None,
            exit_without_ipv6: false,
            policies: exit_policies::ExitPolicies::default(),
            forged_endpoint: None,
            observed: None,
            locals: Vec::new(),
            rx_local: None,
            nat: NatClass::Unknown,
            backoff: BTreeMap::new(),
            dead_peers: Expiring::new(),
            boot,
            query_budget: (Instant::ZERO, 0),
            expected: BTreeMap::new(),
            obs: Observations::default(),
            recent_peers: BTreeMap::new(),
            suspects: Expiring::new(),
            recent_overflow_until: Instant::ZERO,
            probe: None,
            probe_ok: None,
            last_probe: Instant::ZERO,
            probe_pings: BTreeMap::new(),
            dials: BTreeMap::new(),
            punches: BTreeMap::new(),
            punch_caps: PunchCaps::default(),
            relay_table: BTreeMap::new(),
            relayed_tokens: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            pool: Vec::new(),
            scratch: vec![0u8; NOISE_BUF_LEN],
            rx_scratch: vec![0u8; NOISE_BUF_LEN],
            next_tick: now,
            last_timeout: Instant::ZERO,
            last_second: now,
            stats: LinkStats::default(),
            kept: Vec::new(),
            virtual_time: false,
            sim_crypto: None,
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

    /// When the layer's housekeeping runs next (the node runs its upper layers' cap on the
    /// same wake-up).
    pub fn next_housekeeping(&self) -> Instant {
        self.next_tick
    }

    // ---- state for status ----------------------------------------------------------------

    /// Counters.
    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// For the in-process network: never run boringtun's wall-clock timers, whose retries and
    /// keepalives would land at virtual times that depend on how fast the host runs the test.
    pub(crate) fn run_in_virtual_time(&mut self) {
        self.virtual_time = true;
    }

    /// For the in-process network at scale: links run the simulator's stand-in session instead
    /// of WireGuard (no DH). Only `crate::sim` can make the token.
    pub(crate) fn use_sim_crypto(&mut self, token: crate::sim::crypto::SimCrypto) {
        self.sim_crypto = Some(token);
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
    /// (bootstrap links are closed once unused). Not a use on a public node: only cells arm the
    /// silence PING, so a link under idle circuits gets the idle link's PING, not one a second
    /// (docs/decisions.md, idle links under circuits). Behind NAT it is a use: a neighbour whose
    /// cell met a NAT that lost its state gives the link up about 4 s later (the silence PING's
    /// tries), before our idle PING or keepalive would open the NAT again, so a NATed node
    /// keeps checking its links under circuits every second.
    pub fn mark_in_use(&mut self, link: LinkId, now: Instant) {
        let natted = behind_nat(self.nat);
        if let Some(l) = self.links.get_mut(&link) {
            l.held_at = now;
            if natted {
                l.last_cell = l.last_cell.max(now);
            }
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
    pub fn peers(&self, now: Instant) -> Vec<PeerInfo> {
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
                    punched: l.punched_at.is_some(),
                    punched_s: l.punched_at.map(|t| now.saturating_since(t) / 1000),
                    rtt_ms: l.rtt_ms,
                    established_s: l.established_at.map(|t| now.saturating_since(t) / 1000),
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
        now: Instant,
        peer_key: [u8; 32],
        endpoint: SocketAddr,
    ) -> Result<LinkId, LinkError> {
        if peer_key == self.link_public {
            return Err(LinkError::NoLink);
        }
        // A relay behind NAT is reached by punching through its introducers (section 13.2).
        let natted = self
            .view
            .by_link_key(&peer_key)
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
        now: Instant,
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
    pub fn send_cell(&mut self, now: Instant, link: LinkId, cell: &[u8]) -> Result<(), LinkError> {
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
    pub fn close(&mut self, now: Instant, link: LinkId, reason: u8) {
        let _ = self.send_frame(now, link, MsgType::Close, 0, &[reason]);
        self.remove_link(link, false);
    }

    /// Hostile-node hook for the in-process network: from now on our own record lists `endpoint`
    /// first, whether or not it is ours. A record is self-signed, so any node can lie in it this
    /// way; tests use this to check that nobody acts on such a lie in ways that harm a third
    /// party (docs/threat-model.md section 7).
    #[doc(hidden)]
    pub fn forge_record_endpoint(&mut self, now: Instant, endpoint: SocketAddr) {
        self.forged_endpoint = Some(endpoint);
        self.refresh_record(now);
    }

    /// Test hook: forgets a link without telling the peer (a node that gave the link up while
    /// its CLOSE was lost, or that restarted), so tests can show that the peer finds out.
    #[doc(hidden)]
    pub fn forget_link(&mut self, link: LinkId) {
        self.remove_link(link, false);
    }

    /// Fuzzing hook: processes `bytes` as a decrypted frame from a peer with a fixed link key, as
    /// if it had arrived on an authenticated session (the fuzzer cannot forge WireGuard).
    #[cfg(fuzzing)]
    #[doc(hidden)]
    pub fn fuzz_frame(&mut self, now: Instant, bytes: &[u8]) {
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
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.handle_datagram_at(now, from, None, data);
    }

    /// Handles one received datagram that arrived at our endpoint `local` (known when the socket
    /// reports packet info; a wildcard listen address learns its endpoints this way).
    pub fn handle_datagram_at(
        &mut self,
        now: Instant,
        from: SocketAddr,
        local: Option<SocketAddr>,
        data: &[u8],
    ) {
        self.rx_local = local;
        self.handle_datagram_inner(now, from, data);
        self.rx_local = None;
    }

    fn handle_datagram_inner(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
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
    pub fn handle_timeout(&mut self, now: Instant) {
        self.run_punches(now);
        self.last_timeout = now;
        let housekeeping = now >= self.next_tick;
        if now.saturating_since(self.last_second) >= 1000 {
            self.last_second = now;
            self.responder.tick();
            self.query_budget = (now, 0);
            self.view.prune(now);
            self.expected
                .retain(|_, t| now.saturating_since(*t) < 120_000);
            self.probe_pings
                .retain(|_, (_, t, _)| now.saturating_since(*t) < PROBE_WINDOW_MS * 2);
            self.recent_peers
                .retain(|_, (t, _)| now.saturating_since(*t) < RECENT_PEER_MS);
            self.suspects.sweep(now);
            self.relay_table
                .retain(|_, e| now.saturating_since(e.last) < RELAYED_LINK_IDLE_MS);
            self.run_probe(now);
            // Introducers follow our links; a changed set re-signs the record.
            self.refresh_record(now);
            self.close_idle_dht_links(now);
            self.close_idle_relay_links(now);
        }
        if now.saturating_since(self.record_signed) >= RELAY_RECORD_REPUBLISH_S * 1000 {
            self.refresh_record(now);
        }
        self.run_dials(now);
        self.run_upgrades(now);
        // Every link at housekeeping when boringtun's own timers must run (they cannot say
        // when they are due); else only the links whose timers are due (`table`).
        let mut ids = std::mem::take(&mut self.due_links);
        ids.clear();
        if housekeeping && !self.virtual_time {
            ids.extend(self.links.keys().copied());
        } else {
            self.flush_link_timers();
            self.links.due_at(now, &mut ids);
        }
        for id in &ids {
            self.link_timers(now, *id);
        }
        self.due_links = ids;
        self.bootstrap(now);
        let dialling = self.maintain_links(now);
        if housekeeping {
            // Fast while dialling finds relays to link to (links up sooner at start); a node
            // short of its target with no one left to dial is idle, not looking.
            let period = if dialling {
                LINK_TIMER_TICK_MS
            } else {
                LINK_HOUSEKEEPING_MS
            };
            self.next_tick = now + period;
        }
    }

    // ---- frames --------------------------------------------------------------------------

    /// Counts a malformed frame; too many in a minute close the link.
    fn malformed(&mut self, now: Instant, id: LinkId, why: &str) {
        self.stats.malformed += 1;
        tracing::debug!(link = id.0, why, "malformed frame");
        let close = match self.links.get_mut(&id) {
            Some(l) => {
                if now.saturating_since(l.malformed_since) > 60_000 {
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

    /// Hands a decrypted frame to the part that deals with its type.
    fn on_frame(&mut self, now: Instant, id: LinkId, bytes: &[u8]) {
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
                MsgType::Hello
                    | MsgType::Ping
                    | MsgType::Pong
                    | MsgType::Close
                    | MsgType::ExitPolicy
            )
        {
            self.malformed(now, id, "message before HELLO");
            return;
        }
        if t != MsgType::Hello {
            if let Some(l) = self.links.get_mut(&id).filter(|_| hello_received) {
                l.peer_was_up |= !matches!(t, MsgType::Ping | MsgType::Pong);
            }
        }
        let payload = f.payload();
        match t {
            MsgType::Hello => self.on_hello(now, id, payload),
            MsgType::Ping => {
                self.check_probe_ping(now, id, payload);
                let mut p = [0u8; 8 + ENDPOINT_LEN];
                p[..8].copy_from_slice(payload.get(..8).unwrap_or(&[0; 8]));
                // Over a relayed link the source we see is the relay's, not the peer's: saying
                // nothing beats a reflection that would make the peer think its NAT symmetric.
                let endpoint = self
                    .links
                    .get(&id)
                    .filter(|l| l.relay.is_none())
                    .map(|l| l.endpoint);
                let mut ep = [0u8; ENDPOINT_LEN];
                emit_endpoint(endpoint, &mut ep);
                p[8..].copy_from_slice(&ep);
                let _ = self.send_frame(now, id, MsgType::Pong, f.rpc_id(), &p);
            }
            MsgType::Pong => self.on_pong(now, id, f.rpc_id(), payload),
            MsgType::PexRequest => self.on_pex_request(now, id, f.rpc_id(), payload),
            MsgType::PexResponse => self.on_pex_response(now, id, f.rpc_id(), payload),
            MsgType::ExitPolicy => self.on_exit_policy(now, id, payload),
            MsgType::ExitPolicyRequest => self.on_exit_policy_request(now, id, payload),
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
