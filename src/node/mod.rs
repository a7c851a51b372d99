//! One node's protocol state: the link layer and the circuit layer, joined. Sans-IO like its
//! parts: the daemon drives it with a UDP socket and a clock, the in-process network with an
//! in-memory transport and virtual time. It moves link events and cells up to the circuit layer,
//! circuit actions down to the link layer, and keeps the pool of ready circuits.
//!
//! The upper layers join here too, each in its own file of glue so that a reader finds them by
//! name: [`dht`] (joining [`crate::dht::host`] and [`crate::dht::client`]) and [`sessions`]
//! (intro and rendezvous points, hidden services we host, sessions to services we visit).

pub mod dht;
pub mod exits;
pub mod sessions;

use crate::crypto::Randomness;
use rand::rngs::StdRng;
use std::net::SocketAddr;

use crate::circuit::layer::{CircAction, CircEvent, CircId, CircuitLayer, Purpose};
use crate::circuit::path::{Guards, PathContext, PathKind, PathRules, Target};
use crate::circuit::OnionKey;
use crate::link::{LinkEvent, LinkLayer, Transmit};
use crate::time::{Instant, Millis};
use crate::wire::record::{RelayRecord, FLAG_RENDEZVOUS};

/// Ready 3-hop circuits a node keeps so that no later feature builds from scratch.
pub const POOL_TARGET: usize = 2;
/// Hops of a pool circuit.
pub const POOL_HOPS: usize = 3;

/// The coarse tick of the upper layers' timers that have no deadline of their own (most of the
/// session layer's, work that waits for "the next run"): while a layer has such work
/// ([`Node::upper_deadline`]) the upper layers run this often, as they all did before issue #21
/// item 6; the session bounds in `session/limits.rs` assume this period. A deadline that was
/// already due at the last run and is still there (its work was declined) is also retried this
/// much later rather than at once, so that nothing spins.
pub const UPPER_TICK_MS: Millis = 250;
/// The upper layers run at least this often (the safety cap): the timers left to it are long
/// (relayed circuits' idle and age limits, onion key rotation, the DHT's start and contact scan,
/// guard upkeep, sweeps) and may run up to this late; a deadline a change forgot to report is
/// late by at most this, never lost. The link layer's housekeeping has the same period, and the
/// node runs both on one wake-up when it can.
pub const UPPER_CAP_MS: Millis = crate::link::layer::LINK_HOUSEKEEPING_MS;

/// What a node reports upwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// From the link layer (cells are consumed by the circuit layer and not reported).
    Link(LinkEvent),
    /// From the circuit layer (events the upper layers did not consume).
    Circuit(CircEvent),
    /// A DHT query made with [`Node::dht_query`] finished.
    Dht {
        /// The token `dht_query` returned.
        token: u64,
        /// What came of it.
        outcome: dht::DhtOutcome,
    },
    /// An inner IPv6 packet arrived on a session and passed the session's checks: its source
    /// is the session peer's address, its destination the address the session belongs to.
    Packet {
        /// The packet (hand the buffer back with [`Node::recycle_packet`]).
        buf: Vec<u8>,
    },
    /// The answer to [`Node::e2e_ping`].
    Pong {
        /// The peer pinged.
        dst: [u8; 16],
        /// The id `e2e_ping` returned.
        id: u64,
        /// Round trip through the session's circuits.
        rtt_ms: u64,
    },
    /// A client's packet for the outside on a circuit that ends at us, an exit (hand the buffer
    /// back with [`Node::recycle_message`]).
    ExitPacket {
        /// The relayed circuit.
        slot: u64,
        /// The packet.
        buf: Vec<u8>,
    },
    /// An `EXIT_SESSION` on a circuit that ends at us, an exit (protocol.md 7.4): answer with
    /// [`Node::exit_session_reply`].
    ExitSession {
        /// The relayed circuit.
        slot: u64,
        /// Our hop value on it, which a re-attach proof is bound to.
        bind: [u8; 32],
        /// The request.
        buf: Vec<u8>,
    },
    /// A circuit that had sent `EXIT_PACKET`s to us, an exit, is gone.
    ExitClosed {
        /// The relayed circuit.
        slot: u64,
    },
    /// A packet from our exit for gn0, checked (hand the buffer back with
    /// [`Node::recycle_message`]).
    ExitAnswer {
        /// The packet.
        buf: Vec<u8>,
    },
    /// A proof of work to solve for an introduction (10.12), reported only after
    /// [`Node::set_solve_inline`]`(false)`: solve it off the node's task and hand the answer to
    /// [`Node::pow_solved`].
    Solve(crate::session::intro_pow::SolveRequest),
    /// Packets for `dst` cannot be delivered (no descriptor, introductions failed, session
    /// limits). Queued packets for it were dropped.
    Unreachable {
        /// The overlay address.
        dst: [u8; 16],
        /// Why, for logs and ICMPv6 codes.
        why: String,
    },
}

/// The layer that owns one of our circuits ([`Node::circuit_owner`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CircOwner {
    Dht,
    Sessions,
    Exit,
}

/// With this many directly reachable relays or fewer, `status` says that the guards come from a
/// tiny set (threat-model.md 5.4).
pub const FEW_PUBLIC_RELAYS: usize = 3;

/// Path rules relaxed for a NAT-heavy view, and why (threat-model.md 5.4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathRelaxation {
    /// Directly reachable relays in the view (the only guard candidates).
    pub public_relays: usize,
    /// Vanguards (of services and of service DHT circuits) behind NAT.
    pub natted_vanguards: usize,
    /// One line per relaxation or warning.
    pub notes: Vec<String>,
}

/// A node: link layer, circuit layer and the glue.
pub struct Node {
    /// The link layer.
    pub link: LinkLayer,
    /// The circuit layer.
    pub circ: CircuitLayer,
    /// Family prefix lengths for path selection.
    pub prefix_bits: (u8, u8),
    pool_target: usize,
    /// Solve the session layer's puzzles in place (the simulator) or report them as
    /// [`NodeEvent::Solve`] (the daemon, which solves them on a blocking thread).
    solve_inline: bool,
    events: Vec<NodeEvent>,
    rng: StdRng,
    last_path_error: Option<String>,
    guards: Guards,
    guard_save_failed: Option<Instant>,
    guard_save_error: Option<String>,
    /// A rotated onion key the daemon has not written to disk yet.
    onion_to_save: Option<OnionKey>,
    pub(crate) dht: dht::NodeDht,
    pub(crate) sess: crate::session::SessionLayer,
    pub(crate) exits: exits::NodeExits,
    /// Exit session keys (protocol.md 7.4).
    exit_secrets: crate::crypto::rng::SecretRng,
    packet_bufs: Vec<Vec<u8>>,
    /// When the upper layers' timers last ran ([`Node::upper_deadline`]).
    upper_last: Instant,
}

impl Node {
    /// Joins the layers. `onion` is the relay's current onion key; identity, relay role, family
    /// prefixes and the memory budget come from the link layer. `rand` is split among the
    /// layers: the daemon passes [`Randomness::from_os`].
    pub fn new(link: LinkLayer, onion: OnionKey, mut rand: Randomness, now: Instant) -> Node {
        let cfg = link.config();
        let (relay, prefix_bits) = (cfg.relay, cfg.prefix_bits);
        Node {
            circ: CircuitLayer::new(
                link.identity(),
                onion,
                relay,
                link.budget().clone(),
                rand.split("circuit"),
                now,
            ),
            link,
            prefix_bits,
            pool_target: POOL_TARGET,
            solve_inline: true,
            events: Vec::new(),
            rng: rand.split("node").choices(),
            last_path_error: None,
            guards: Guards::new(),
            guard_save_failed: None,
            guard_save_error: None,
            onion_to_save: None,
            dht: dht::NodeDht::new(rand.split("dht")),
            sess: crate::session::SessionLayer::new(rand.split("sessions")),
            exit_secrets: rand.split("exits").into_secrets(),
            exits: exits::NodeExits::default(),
            packet_bufs: Vec::new(),
            upper_last: Instant::ZERO,
        }
    }

    /// Entries of every layer's tables, by table, and the bytes charged to the node's memory
    /// budget (`budget`): what the simulator's memory trace reads (issue #25).
    pub fn table_sizes(&self) -> Vec<(&'static str, usize)> {
        let mut v = vec![("budget", self.link.budget().used())];
        v.extend(self.link.table_sizes());
        v.extend(self.circ.table_sizes());
        v.extend(self.dht.host.table_sizes());
        v.extend(self.dht.client.table_sizes());
        v.extend(self.sess.table_sizes());
        v.push(("node.packet_bufs", self.packet_bufs.len()));
        v.push(("node.events", self.events.len()));
        v
    }

    /// Whether every secret this node makes comes from the operating system's generator (false
    /// only in the in-process network). The daemon refuses to run otherwise.
    pub fn secrets_from_os(&self) -> bool {
        self.circ.secrets_from_os() && self.sess.secrets_from_os() && self.exit_secrets.is_os()
    }

    /// Returns the payload of a reported [`CircEvent::Message`] for reuse.
    pub fn recycle_message(&mut self, buf: Vec<u8>) {
        self.circ.recycle_payload(buf);
    }

    /// Returns a packet buffer from [`NodeEvent::Packet`] for reuse.
    pub fn recycle_packet(&mut self, mut buf: Vec<u8>) {
        if self.packet_bufs.len() < 256 {
            buf.clear();
            self.packet_bufs.push(buf);
        }
    }

    /// Takes the oldest ready pool circuit for `purpose` (the pool refills itself).
    pub fn take_pool_circuit(&mut self, purpose: Purpose) -> Option<CircId> {
        let id = self.circ.ready_ids(Purpose::Pool).into_iter().next()?;
        self.circ.set_purpose(id, purpose);
        Some(id)
    }

    /// The guards the daemon loaded from its guard file.
    pub fn set_guards(&mut self, guards: Guards) {
        self.guards = guards;
    }

    /// The guards to write to the guard file when they changed (at most every ten minutes after
    /// a failed save); the daemon writes them off the event loop and reports back with
    /// [`Node::guards_saved`].
    pub fn take_guards_to_save(
        &mut self,
        now: Instant,
    ) -> Option<Vec<crate::circuit::path::Guard>> {
        let retry = self
            .guard_save_failed
            .is_none_or(|t| now.saturating_since(t) >= 600_000);
        if !self.guards.needs_save() || !retry {
            return None;
        }
        self.guards.mark_saved();
        Some(self.guards.to_keep())
    }

    /// How the last save went.
    pub fn guards_saved(&mut self, now: Instant, result: Result<(), String>) {
        match result {
            Ok(()) => {
                if self.guard_save_error.take().is_some() {
                    tracing::info!("guards saved again");
                }
                self.guard_save_failed = None;
            }
            Err(e) => {
                tracing::warn!("saving guards: {e}");
                self.guards.mark_unsaved();
                self.guard_save_failed = Some(now);
                self.guard_save_error = Some(e);
            }
        }
    }

    /// A rotated onion key to keep (0600) so that a restart still accepts CREATEs built from the
    /// record that publishes it; once.
    pub fn take_onion_key_to_save(&mut self) -> Option<OnionKey> {
        self.onion_to_save.take()
    }

    /// Sets when the current onion key was made (its file's age).
    pub fn set_onion_key_since(&mut self, since: Instant) {
        self.circ.set_onion_key_since(since);
    }

    /// Why the guards could not be saved last time (`None` after a good save).
    pub fn guard_save_error(&self) -> Option<&str> {
        self.guard_save_error.as_deref()
    }

    /// The current guards (identity, temporary?) for status output.
    pub fn guards(&self) -> &Guards {
        &self.guards
    }

    /// How far path selection departs from the usual rules in this view (threat-model.md 5.4),
    /// for `status`.
    pub fn path_relaxation(&self, now: Instant) -> PathRelaxation {
        let view = self.link.view();
        let public_relays = view
            .iter()
            .filter(|r| {
                r.is_relay()
                    && r.fields().nat.directly_reachable()
                    && r.fields().expires > now.as_unix_ms() / 1000
            })
            .count();
        let natted_vanguards =
            self.sess.vanguards().behind_nat(view) + self.dht.vanguards().behind_nat(view);
        let mut notes = Vec::new();
        if natted_vanguards > 0 {
            notes.push(format!(
                "{natted_vanguards} vanguard(s) behind NAT: no directly reachable relay outside the guards' families; replaced as soon as one fits"
            ));
        }
        if !view.is_empty() && public_relays <= FEW_PUBLIC_RELAYS {
            notes.push(format!(
                "only {public_relays} directly reachable relay(s) known: every guard is one of them"
            ));
        }
        PathRelaxation {
            public_relays,
            natted_vanguards,
            notes,
        }
    }

    /// Sets how many ready pool circuits to keep (0 turns the pool off).
    pub fn set_pool_target(&mut self, n: usize) {
        self.pool_target = n;
    }

    /// Why the pool could not build, if it could not.
    pub fn path_error(&self) -> Option<&str> {
        self.last_path_error.as_deref()
    }

    /// Handles a datagram.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.handle_datagram_at(now, from, None, data);
    }

    /// A datagram that arrived at our endpoint `local` (see [`LinkLayer::handle_datagram_at`]).
    pub fn handle_datagram_at(
        &mut self,
        now: Instant,
        from: SocketAddr,
        local: Option<SocketAddr>,
        data: &[u8],
    ) {
        self.link.handle_datagram_at(now, from, local, data);
        self.pump(now);
    }

    /// Runs timers: the link layer's that are due, and the upper layers' at their deadline
    /// ([`Node::upper_deadline`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.upper_deadline() {
            self.link.handle_timeout(now);
            self.pump(now);
            return;
        }
        self.upper_last = now;
        // Links under our circuits are kept (not closed as idle bootstrap or DHT links); this
        // does not make them look busy to the silence check (docs/decisions.md, idle links).
        let busy: Vec<crate::link::LinkId> = self.circ.links_in_use().collect();
        for l in busy {
            self.link.mark_in_use(l, now);
        }
        let guards: Vec<[u8; 32]> = self.guards().list().iter().map(|g| g.identity).collect();
        self.link.keep_links_to(&guards);
        self.link.handle_timeout(now);
        self.circ.handle_timeout(now);
        if let Some(k) = self.circ.take_rotated_onion_key() {
            self.link.set_onion_public(now, *k.public());
            self.onion_to_save = Some(k);
        }
        self.pump(now);
        self.maintain_pool(now);
        self.dht_timeout(now);
        self.sess_timeout(now);
        self.exit_timeout(now);
        self.pump(now);
    }

    /// When the upper layers' timers run next: the earliest of each layer's exact deadline
    /// (circuits, DHT host and client, session silences, exits), the coarse tick while a layer
    /// has work without a deadline (the pool short of its target, most session timers: see
    /// [`UPPER_TICK_MS`]), and the cap ([`UPPER_CAP_MS`]). Computed from the layers' state on
    /// each call, so work that appears between runs (a packet for a new destination, a query)
    /// is seen at once; a deadline already past at the last run waits for the tick.
    /// O(our circuits + session circuits + DHT queries and lookups).
    pub fn upper_deadline(&self) -> Instant {
        let last = self.upper_last;
        let fresh = |d: Instant| {
            if d <= last {
                last + UPPER_TICK_MS
            } else {
                d
            }
        };
        // The cap rides on the link layer's housekeeping (also once a second): one wake-up
        // for both.
        let cap =
            (last + UPPER_CAP_MS).min(self.link.next_housekeeping().max(last + UPPER_TICK_MS));
        let mut next = cap;
        let mut at = |d: Option<Instant>| {
            if let Some(d) = d {
                next = next.min(fresh(d));
            }
        };
        // A pool that could not find a path (too few relays known) tries again on the cap: a
        // view does not grow in a quarter second, and a small network would tick for ever.
        let pool_short = self.pool_target > 0
            && self.last_path_error.is_none()
            && self.circ.count(Purpose::Pool) < self.pool_target;
        if pool_short || self.sess.wants_tick() {
            at(Some(Instant::ZERO));
        }
        at(self.circ.deadline());
        at(self.sess.silence_deadline());
        at(self.dht.host.deadline());
        at(self.dht.client.deadline(self.sess_dht_pool_wanted()));
        at(self.exit_deadline());
        next
    }

    /// When to call [`Node::handle_timeout`] next: the earlier of the link layer's exact
    /// deadlines and the upper layers' ([`Node::upper_deadline`]); never more than a second
    /// away (both layers' cap).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let upper = self.upper_deadline();
        Some(self.link.poll_timeout().map_or(upper, |l| l.min(upper)))
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.link.poll_transmit()
    }

    /// Returns a datagram buffer for reuse.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.link.recycle(buf);
    }

    /// Events since the last call.
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, NodeEvent> {
        self.events.drain(..)
    }

    /// Moves events and actions between the layers until both are quiet.
    pub fn pump(&mut self, now: Instant) {
        loop {
            let mut progress = false;
            while let Some(e) = self.link.poll_event() {
                progress = true;
                match e {
                    LinkEvent::Cell { link, cell } => {
                        self.circ.on_cell(now, link, &cell);
                        self.link.recycle(cell);
                    }
                    LinkEvent::Up { link, identity } => {
                        if let Some(id) = &identity {
                            self.guards.mark_up(id, now);
                            self.sess_on_link_up(id);
                        }
                        if let Some(theirs) = self.link.peer_key(link) {
                            let ours = self.link.link_public();
                            self.circ.on_link_up(now, link, identity, ours, theirs);
                        }
                        self.events
                            .push(NodeEvent::Link(LinkEvent::Up { link, identity }));
                    }
                    LinkEvent::Identified { link, identity } => {
                        self.guards.mark_up(&identity, now);
                        self.sess_on_link_up(&identity);
                        self.circ.on_link_identified(now, link, identity);
                        self.events
                            .push(NodeEvent::Link(LinkEvent::Identified { link, identity }));
                    }
                    LinkEvent::Down { link, identity } => {
                        if let Some(id) = &identity {
                            if self.guards.list().iter().any(|g| g.identity == *id) {
                                self.guards.mark_down(id, now);
                                self.maintain_guards(now);
                            }
                            self.sess_on_link_down(now, id);
                        }
                        self.circ.on_link_down(now, link);
                        self.events
                            .push(NodeEvent::Link(LinkEvent::Down { link, identity }));
                    }
                    LinkEvent::Dht {
                        link,
                        rpc_id,
                        response,
                        data,
                    } => self.dht_on_frame(now, link, rpc_id, response, &data),
                    LinkEvent::DialFailed { peer_key } => self.circ.on_link_failed(&peer_key),
                    other => self.events.push(NodeEvent::Link(other)),
                }
            }
            while let Some(a) = self.circ.poll_action() {
                progress = true;
                match a {
                    CircAction::SendCell { link, cell } => {
                        if self.link.send_cell(now, link, &cell).is_err() {
                            tracing::trace!(link = link.0, "cell for a link that is gone");
                        }
                    }
                    CircAction::Connect { link_key, endpoint } => {
                        if self.link.recently_dead(&link_key, now)
                            || self.link.connect(now, link_key, endpoint).is_err()
                        {
                            self.circ.on_link_failed(&link_key);
                        }
                    }
                }
            }
            while let Some(e) = self.circ.poll_event() {
                progress = true;
                self.route_circuit_event(now, e);
            }
            for (r, reported) in self.circ.take_unreachable() {
                // Our guards are first hops through our own links: while our own link to one is
                // up, another relay failing to reach it (a busy relay's EXTEND timing out) says
                // nothing about it, and dropping both guards from the view that way left a client
                // under an INTRODUCE1 flood without any path for two minutes. Once our link to
                // it is down too, the report is believed: kept in the view, a dead guard was
                // picked as a later hop behind its stand-in and every such path failed (netns
                // failover: 30 s of failed introductions).
                if reported
                    && self.guards.list().iter().any(|g| g.identity == r)
                    && self.link.link_to(&r).is_some()
                {
                    tracing::debug!(relay = %crate::crypto::keys::fingerprint(&r), "an extension could not reach our guard: kept");
                    continue;
                }
                tracing::debug!(relay = %crate::crypto::keys::fingerprint(&r), "an extension could not reach this relay: left out of paths for a while");
                self.link.suspect_relay(&r, now);
            }
            if !progress {
                break;
            }
        }
    }

    /// Which layer owns our circuit `id`: each layer keeps the table of the circuits it built
    /// or took from the pool, and no circuit is in two of them. A circuit no layer owns (a pool
    /// circuit, one the daemon built) is reported upwards.
    fn circuit_owner(&self, id: CircId) -> Option<CircOwner> {
        if self.dht.owns(id) {
            Some(CircOwner::Dht)
        } else if self.sess.owns(id) {
            Some(CircOwner::Sessions)
        } else if self.exits.owns(id) {
            Some(CircOwner::Exit)
        } else {
            None
        }
    }

    /// Hands a circuit event to the layer it belongs to: last-hop roles by relay command,
    /// events of our circuits by owner; what none takes is reported.
    fn route_circuit_event(&mut self, now: Instant, e: CircEvent) {
        use crate::wire::relay::RelayCommand as C;
        let e = match e {
            CircEvent::LastHop { slot, cmd, payload } if cmd == C::ExitPacket as u8 => {
                self.exit_on_last_hop(slot, payload);
                return;
            }
            CircEvent::LastHop { slot, cmd, payload } if cmd == C::ExitSession as u8 => {
                self.exit_on_session(slot, payload);
                return;
            }
            e => e,
        };
        let id = match &e {
            CircEvent::LastHop { slot, cmd, payload } => {
                if *cmd == C::DhtLookup as u8 {
                    self.dht_on_last_hop(now, *slot, payload);
                } else {
                    self.sess_on_last_hop(now, *slot, *cmd, payload);
                }
                return;
            }
            CircEvent::RelayedClosed { slot } => {
                self.dht_on_relayed_closed(now, *slot);
                self.sess_on_relayed_closed(now, *slot);
                self.exit_on_relayed_closed(*slot);
                return;
            }
            CircEvent::Built { id, .. }
            | CircEvent::Closed { id, .. }
            | CircEvent::Extended { id, .. }
            | CircEvent::Message { id, .. } => *id,
        };
        let unclaimed = match self.circuit_owner(id) {
            Some(CircOwner::Dht) => match e {
                CircEvent::Message { id, cmd, payload } if cmd == C::DhtLookupReply as u8 => {
                    self.dht_on_reply(now, id, &payload);
                    None
                }
                e => self.dht_on_circuit_event(now, e),
            },
            // Only the DHT client reads lookup replies; on another circuit one is reported.
            Some(CircOwner::Sessions) => match e {
                e @ CircEvent::Message { cmd, .. } if cmd == C::DhtLookupReply as u8 => Some(e),
                e => self.sess_on_circuit_event(now, e),
            },
            Some(CircOwner::Exit) => {
                self.exit_on_circuit_event(now, e);
                None
            }
            None => Some(e),
        };
        if let Some(e) = unclaimed {
            self.events.push(NodeEvent::Circuit(e));
        }
    }

    /// Our endpoints for path rules (from our record, else as neighbours see us).
    pub(super) fn own_endpoints(&self) -> Vec<SocketAddr> {
        own_endpoints(&self.link)
    }

    /// The family prefixes of the path rules.
    pub(super) fn path_rules(&self) -> PathRules {
        PathRules {
            ipv4_bits: self.prefix_bits.0,
            ipv6_bits: self.prefix_bits.1,
        }
    }

    /// Guard upkeep: replacements, and a temporary stand-in at once when every guard is down
    /// (called on every tick and when a guard's link goes down, before the circuits that ran
    /// through it are rebuilt — else they would pick the dead guard and wait out a build).
    fn maintain_guards(&mut self, now: Instant) {
        let own_endpoints = self.own_endpoints();
        let ctx = PathContext {
            view: self.link.view(),
            rules: self.path_rules(),
            own_endpoints: &own_endpoints,
            now,
        };
        for e in self.guards.maintain(&ctx, &mut self.rng) {
            tracing::info!("{e}");
        }
    }

    fn maintain_pool(&mut self, now: Instant) {
        self.maintain_guards(now);
        let own_endpoints = self.own_endpoints();
        let ctx = PathContext {
            view: self.link.view(),
            rules: self.path_rules(),
            own_endpoints: &own_endpoints,
            now,
        };
        if self.pool_target == 0 || self.circ.count(Purpose::Pool) >= self.pool_target {
            return;
        }
        let kind = PathKind::Client(Target::Any(FLAG_RENDEZVOUS));
        let path = ctx
            .select(kind, &self.guards, None, &mut self.rng)
            .map_err(|e| e.to_string())
            .and_then(|p| {
                p.hops()
                    .iter()
                    .map(|h| ctx.view.get(&h.identity).cloned())
                    .collect::<Option<Vec<RelayRecord>>>()
                    .ok_or_else(|| "path: a hop left the view".to_string())
            });
        match path {
            Ok(path) => {
                self.last_path_error = None;
                let first = path.first().and_then(|r| self.link.link_to(r.identity()));
                if let Err(e) = self.circ.build(now, Purpose::Pool, path, first) {
                    self.last_path_error = Some(e.to_string());
                }
            }
            Err(e) => {
                if self.last_path_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!("cannot build pool circuits: {e}");
                }
                self.last_path_error = Some(e);
            }
        }
    }
}

/// Our endpoints for path rules (from our record, else as neighbours see us).
fn own_endpoints(link: &LinkLayer) -> Vec<SocketAddr> {
    match link.own_record() {
        Some(r) => r.fields().endpoints.clone(),
        None => link.observed().into_iter().collect(),
    }
}
