//! The session layer (docs/protocol.md section 10): the intro-point and rendezvous-point roles at
//! the last hop of other people's circuits, the hidden services this node hosts, and the
//! sessions it has with services it visits. Sans-IO: the node drives it with a [`SessionCtx`]
//! (circuits, paths, reports) and carries out the DHT queries it asks for.
//!
//! Who holds what. The roles ([`crate::session::roles`]) hold auth keys, cookies and local slot
//! numbers only. A service holds its key and, per session, the client's pseudonym address and the
//! session keys; it reaches the client only through the rendezvous point, so it never learns the
//! client's underlay address (and the client never learns the service's). Every circuit a
//! session uses ends at a rendezvous point the client chose; the service's side has four hops
//! with a layer-2 vanguard (9.3).
//!
//! Flows (10.8): each flow of a session rides its own circuit; one joined, unused circuit is kept
//! as a spare so that a new flow never waits for a build; a circuit that dies (DESTROY, or no
//! answer to an e2e PING) loses its flows to the spare or another live circuit, and the client
//! joins a replacement. The e2e counters belong to the session, so nothing is renegotiated.
//!
//! This file holds the layer's state, the owner table of its circuits (`Owner`), what it
//! shows (status, counters) and its entry points; the rest is in the files named in
//! [`crate::session`]'s table.

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv6Addr;

use rand::rngs::StdRng;

use crate::budget::Charge;
use crate::circuit::layer::{CircEvent, CircId};
use crate::circuit::path::Vanguards;
use crate::crypto::{Randomness, SecretRng};
use crate::dht::descriptor::Descriptor;
use crate::session::client::ClientSession;
use crate::session::ctx::{DhtAnswer, DhtRequest, SessionCtx};
use crate::session::flows::{addresses, length_consistent, FlowKey};
use crate::session::frame::{E2E_FRAME_LEN, E2E_PLAINTEXT_OFFSET};
use crate::session::intro_pow::SolveRequest;
use crate::session::limits::*;
use crate::session::roles::{IntroPointRole, RendezvousRole};
use crate::session::service::Service;
use crate::session::{E2eMessage, Pseudonym, Rendezvous1, SessionChannel};
use crate::time::{Expiring, Instant, Millis, RepeatLog};

/// Why a packet could not be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// No session and none can be made, or the packet is not one this node may send (wrong
    /// source, malformed): the reason, for logs and ICMPv6 codes (see also
    /// [`crate::node::NodeEvent::Unreachable`]).
    Unreachable(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Unreachable(m) => write!(f, "unreachable: {m}"),
        }
    }
}

impl std::error::Error for SendError {}

/// One hidden service this node hosts, as `globalnet services` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    /// The service's overlay address.
    pub address: Ipv6Addr,
    /// Its established intro points (relay key fingerprints).
    pub intro_points: Vec<String>,
    /// Seconds since its descriptors were last built, if ever.
    pub descriptor_age_s: Option<u64>,
    /// Open sessions (clients).
    pub sessions: usize,
    /// Why fewer than the wanted intro points are established (the latest reason), if so.
    pub intro_missing: Option<String>,
    /// The effort its puzzle asks for now (10.12; 0 while idle).
    pub pow_effort: u32,
    /// Introductions it queued that carried a valid proof of work.
    pub intros_with_pow: u64,
}

/// One end-to-end session, as `globalnet sessions` / `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The peer's overlay address (the service, or the client's pseudonym).
    pub peer: Ipv6Addr,
    /// "client" or "service".
    pub role: &'static str,
    /// Our address in the session (our pseudonym for the service, or the service's address).
    pub local: Ipv6Addr,
    /// `lookup`, `introducing` or `open`.
    pub state: &'static str,
    /// Circuits joined to the session.
    pub circuits: usize,
    /// Flows tracked.
    pub flows: usize,
    /// Age in seconds.
    pub age_s: u64,
}

/// Counters of the session layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Relay-record lookups (`DhtRequest::Relay`) that ended.
    pub relay_lookups_done: u64,
    /// Their summed time (ms).
    pub relay_lookups_ms: u64,
    /// Sessions opened as a client.
    pub client_sessions: u64,
    /// Descriptor lookups this node asked of the DHT as a client (first lookups and refreshes).
    pub desc_lookups: u64,
    /// Sessions accepted as a service.
    pub service_sessions: u64,
    /// INTRODUCE2 whose message 1 did not open (forged pseudonym, garbage).
    pub intro_rejected: u64,
    /// INTRODUCE2 dropped by the service's `E_c` replay cache.
    pub intro_replays: u64,
    /// INTRODUCE2 dropped by the service's rate or limits.
    pub intro_limited: u64,
    /// Circuits joined to sessions (JOIN, 10.7).
    pub joins: u64,
    /// Circuits declared dead by probing.
    pub probe_failures: u64,
    /// Our e2e PINGs sent again because the circuit answered a later probe and not them
    /// (`client/pings.rs`).
    pub pings_resent: u64,
    /// Intro circuits ended because the intro point stopped answering the service's checks
    /// (10.6.1).
    pub intro_checks_failed: u64,
    /// Flows moved off a dead circuit.
    pub flows_moved: u64,
    /// Inbound packets dropped by the session checks (10.9).
    pub packets_refused: u64,
    /// E2e frames that failed to open (replay, forgery).
    pub frames_refused: u64,
    /// INTRODUCE_ACK statuses other than 0 seen as a client.
    pub intro_acks_refused: u64,
    /// Circuits to an intro or rendezvous point made by extending a pooled stem.
    pub stem_extends: u64,
    /// ... and those built from scratch (no fitting stem was ready).
    pub fresh_builds: u64,
    /// Descriptors refused because their key is not the full key a name gave for the address.
    pub desc_wrong_key: u64,
    /// Why session setups (client side) and rendezvous joins (service side) failed, by step
    /// and reason: the trace of issue #25's reachability figure. At most
    /// [`SETUP_TRACE_KEYS`] reasons; later new ones count under `other`.
    pub setup_failures: BTreeMap<String, u64>,
}

/// Distinct reasons [`SessionStats::setup_failures`] keeps (reasons come from local code, a
/// few dozen at most; the cap keeps a stranger's error texts from growing the map).
pub const SETUP_TRACE_KEYS: usize = 64;

impl SessionStats {
    /// Counts one setup failure under `why`.
    pub(in crate::session) fn setup_failed(&mut self, why: String) {
        let n = self.setup_failures.len();
        match self.setup_failures.get_mut(&why) {
            Some(c) => *c += 1,
            None if n < SETUP_TRACE_KEYS => {
                self.setup_failures.insert(why, 1);
            }
            None => *self.setup_failures.entry("other".into()).or_default() += 1,
        }
    }
}

/// Test hooks: a node that misbehaves on purpose, to show that peers refuse it.
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct SessionTestHooks {
    /// Claim this pseudonym key in message 1 without holding its secret.
    pub claim_pseudonym: Option<[u8; 32]>,
    /// Send INTRODUCE1 twice (a replay).
    pub send_introduce_twice: bool,
    /// Skip the client's source-address check in `send_packet`.
    pub skip_source_check: bool,
    /// As an intro point, pass every introduction to the service twice (a replaying intro point).
    pub replay_introduce2: bool,
    /// Take an expected service key for an address even when it does not hash to it: stands in
    /// for a second key with the same address (a ~2^60 search) in tests of the key check.
    pub expect_colliding_key: bool,
    /// As a client, offer at least this effort to a service that publishes a puzzle.
    pub client_min_effort: u32,
    /// As an intro point, answer nothing on the circuits of these registrations' auth keys
    /// (a registration lost with a circuit that the service still thinks alive).
    pub mute_intro_keys: Vec<[u8; 32]>,
    /// As a client, build the next spare of a session to this rendezvous point (once): stands
    /// in for a client whose random pick is a relay of the service's half (its guard, say).
    pub spare_rendezvous: Option<[u8; 32]>,
    /// As a client, keep every spare on the first guard (as before a busy session's second
    /// spare went through the other one): tests of a session lost with the client's guard.
    pub spares_on_one_guard: bool,
    /// Record where e2e PINGs went (the simulator's reachability probes, issue #25).
    pub trace_pings: Option<crate::session::trace::PingTrace>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::session) enum Owner {
    ClientStem,
    ServiceStem,
    /// A service's circuit to one of its intro points.
    Intro {
        svc: [u8; 16],
    },
    /// A service's circuit to a client's rendezvous point, before RENDEZVOUS1.
    ServiceRend {
        svc: [u8; 16],
        peer: [u8; 16],
    },
    /// A service's session circuit.
    ServiceCirc {
        svc: [u8; 16],
        peer: [u8; 16],
    },
    /// A client's circuit to an intro point.
    ClientIntro {
        dst: [u8; 16],
    },
    /// A client's first rendezvous circuit (introducing).
    ClientRend {
        dst: [u8; 16],
    },
    /// A client's circuit being joined to a session.
    ClientJoin {
        dst: [u8; 16],
    },
    /// A client's session circuit.
    ClientCirc {
        dst: [u8; 16],
    },
}

/// A service's join to a client's rendezvous point that waits for the point's relay record.
pub(in crate::session) struct RendWaiting {
    pub(in crate::session) svc: [u8; 16],
    pub(in crate::session) peer: [u8; 16],
    pub(in crate::session) rp: [u8; 32],
    pub(in crate::session) r1: Rendezvous1,
    pub(in crate::session) since: Instant,
}

/// The node's session state.
pub struct SessionLayer {
    /// Choices: intro point lifetimes, candidate order, vanguards.
    pub(in crate::session) rng: StdRng,
    /// Intro-point auth keys, descriptor salts, rendezvous cookies, end-to-end handshake
    /// ephemerals.
    pub(in crate::session) secrets: SecretRng,
    pub(in crate::session) intro_role: Option<IntroPointRole>,
    pub(in crate::session) rend_role: Option<RendezvousRole>,
    pub(in crate::session) client_seed: Option<[u8; 32]>,
    pub(in crate::session) real_for: Vec<[u8; 16]>,
    pub(in crate::session) services: Vec<Service>,
    pub(in crate::session) desc_cache: BTreeMap<[u8; 32], (Descriptor, Charge)>,
    /// Full service keys named for addresses (key names, `client/keys.rs`), and when.
    pub(in crate::session) expected_keys: BTreeMap<[u8; 16], ([u8; 32], Instant)>,
    pub(in crate::session) clients: BTreeMap<[u8; 16], ClientSession>,
    pub(in crate::session) owners: BTreeMap<CircId, Owner>,
    /// Service circuits to a client's rendezvous point, before RENDEZVOUS1: what to send, the
    /// rendezvous point, and which try this is.
    pub(in crate::session) pending_r1: BTreeMap<CircId, (Rendezvous1, [u8; 32], u8)>,
    /// The latest time the node was driven with (for status output).
    pub(in crate::session) now: Instant,
    /// Relays (past the first hop) of circuits that died without a DESTROY, until when.
    pub(in crate::session) suspects: Expiring<[u8; 32]>,
    /// Our guards that started a session circuit found silent, until when (new session paths
    /// take another guard meanwhile; `circuits.rs`).
    pub(in crate::session) silent_guards: Expiring<[u8; 32]>,
    /// Relays that fell under suspicion since the last tick (a silent session circuit, a link
    /// down), while we host services: intro circuits through them are checked at once
    /// (`intro_watch.rs`).
    pub(in crate::session) new_suspects: Vec<[u8; 32]>,
    /// Descriptor lookups under way: token → service.
    pub(in crate::session) lookups: BTreeMap<u64, ([u8; 16], Instant)>,
    /// DHT queries for the node to start.
    pub(in crate::session) dht_requests: VecDeque<DhtRequest>,
    /// Descriptor publications under way: token → service and epoch.
    pub(in crate::session) publishes: BTreeMap<u64, ([u8; 16], u64, Instant)>,
    pub(in crate::session) stems: Vec<(CircId, bool)>,
    pub(in crate::session) vanguards: Vanguards,
    /// Our e2e PINGs waiting for their PONG.
    pub(in crate::session) pings: BTreeMap<u64, crate::session::client::PendingPing>,
    /// Relay-record lookups under way (`DhtRequest::Relay`): token → relay, and when asked.
    pub(in crate::session) relay_lookups: BTreeMap<u64, ([u8; 32], Instant)>,
    /// How long our relay-record lookups take (moving average of the found ones): a service
    /// that does not know our rendezvous point takes as long before it can build to it.
    pub(in crate::session) relay_lookup_ms: Millis,
    /// Rendezvous joins waiting for the rendezvous point's record from the DHT.
    pub(in crate::session) rend_waiting: Vec<RendWaiting>,
    pub(in crate::session) next_ping: u64,
    /// Counters.
    pub stats: SessionStats,
    pub(in crate::session) hooks: SessionTestHooks,
    /// Why stems or intro-point paths cannot be built, logged when it starts or changes.
    pub(in crate::session) stem_log: RepeatLog,
    pub(in crate::session) intro_path_log: RepeatLog,
    /// The most work a client puts into one introduction (`[client] pow_max_effort`).
    pub(in crate::session) pow_max_effort: u32,
    /// Puzzles for the driver to solve (10.12), and the token of the next one.
    pub(in crate::session) solve_requests: VecDeque<SolveRequest>,
    pub(in crate::session) next_solve: u64,
    /// How long our introductions' two circuits took to be ready (a moving average, ms): the
    /// step timeout derives from it ([`INTRO_STEP_BUILDS`]).
    pub(in crate::session) intro_step_avg: Option<crate::time::Millis>,
    /// How long our acknowledged introductions waited for RENDEZVOUS2 (a moving average, ms).
    pub(in crate::session) rend_wait_avg: Option<crate::time::Millis>,
}

pub(in crate::session) fn addr16(a: Ipv6Addr) -> [u8; 16] {
    a.octets()
}

/// Seals `msg` on `chan` into `buf`; the frame length.
pub(in crate::session) fn seal(
    chan: &mut SessionChannel,
    msg: &E2eMessage<'_>,
    buf: &mut [u8; E2E_FRAME_LEN],
) -> Option<usize> {
    let n = msg.emit(buf.get_mut(E2E_PLAINTEXT_OFFSET..)?).ok()?;
    chan.seal_in_place(buf, n).ok()
}

/// Forgets the least recently used flow.
pub(in crate::session) fn evict_lru(flows: &mut BTreeMap<FlowKey, (CircId, Instant)>) {
    let lru = flows.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k);
    if let Some(k) = lru {
        flows.remove(&k);
    }
}

/// The first 4 bytes of a key in hex, for logs.
pub(in crate::session) fn hex8(k: &[u8; 32]) -> String {
    k.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

impl SessionLayer {
    /// The services' layer-2 vanguards.
    pub fn vanguards(&self) -> &crate::circuit::path::Vanguards {
        &self.vanguards
    }

    /// Whether every secret the layer makes comes from the operating system's generator.
    pub fn secrets_from_os(&self) -> bool {
        self.secrets.is_os()
    }

    /// A layer with no services and no client identity; `rand` gives its choices and secrets.
    pub fn new(rand: Randomness) -> SessionLayer {
        let (rng, secrets) = rand.into_parts();
        SessionLayer {
            rng,
            secrets,
            intro_role: None,
            rend_role: None,
            client_seed: None,
            real_for: Vec::new(),
            services: Vec::new(),
            desc_cache: BTreeMap::new(),
            expected_keys: BTreeMap::new(),
            clients: BTreeMap::new(),
            owners: BTreeMap::new(),
            pending_r1: BTreeMap::new(),
            now: Instant::ZERO,
            suspects: Expiring::new(),
            silent_guards: Expiring::new(),
            new_suspects: Vec::new(),
            lookups: BTreeMap::new(),
            dht_requests: VecDeque::new(),
            publishes: BTreeMap::new(),
            stems: Vec::new(),
            vanguards: Vanguards::new(),
            pings: BTreeMap::new(),
            relay_lookups: BTreeMap::new(),
            relay_lookup_ms: RELAY_LOOKUP_PRIOR_MS,
            rend_waiting: Vec::new(),
            next_ping: 1,
            stats: SessionStats::default(),
            hooks: SessionTestHooks::default(),
            stem_log: RepeatLog::default(),
            intro_path_log: RepeatLog::default(),
            pow_max_effort: crate::session::intro_pow::POW_CLIENT_MAX_EFFORT,
            solve_requests: VecDeque::new(),
            next_solve: 1,
            intro_step_avg: None,
            rend_wait_avg: None,
        }
    }

    /// Entries of the layer's tables, by table (the simulator's memory trace, issue #25).
    pub fn table_sizes(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("sess.desc_cache", self.desc_cache.len()),
            ("sess.expected_keys", self.expected_keys.len()),
            ("sess.clients", self.clients.len()),
            (
                "sess.service_sessions",
                self.services.iter().map(|s| s.sessions.len()).sum(),
            ),
            ("sess.owners", self.owners.len()),
            ("sess.pending_r1", self.pending_r1.len()),
            ("sess.suspects", self.suspects.len()),
            ("sess.lookups", self.lookups.len()),
            ("sess.dht_requests", self.dht_requests.len()),
            ("sess.publishes", self.publishes.len()),
            ("sess.stems", self.stems.len()),
            ("sess.pings", self.pings.len()),
            ("sess.relay_lookups", self.relay_lookups.len()),
            ("sess.rend_waiting", self.rend_waiting.len()),
            (
                "sess.intro_role",
                self.intro_role.as_ref().map_or(0, |r| r.len()),
            ),
            (
                "sess.rend_role",
                self.rend_role.as_ref().map_or(0, |r| r.len()),
            ),
        ]
    }

    pub(in crate::session) fn session_count(&self) -> usize {
        self.clients.len()
            + self
                .services
                .iter()
                .map(|s| s.sessions.len())
                .sum::<usize>()
    }

    pub(in crate::session) fn service_mut(&mut self, addr: &[u8; 16]) -> Option<&mut Service> {
        self.services.iter_mut().find(|s| &s.address == addr)
    }

    pub(in crate::session) fn ping_id(&mut self) -> u64 {
        let id = self.next_ping;
        self.next_ping += 1;
        id
    }

    /// Sends an inner IPv6 packet (source already the address the peer knows us by) to the
    /// overlay address `dst`: on the session with that peer, starting one to a service if there
    /// is none (packets wait in a bounded queue meanwhile).
    pub fn send_packet(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        dst: [u8; 16],
        packet: &[u8],
    ) -> Result<(), SendError> {
        let Some((src, pdst)) = addresses(packet) else {
            return Err(SendError::Unreachable("not an IPv6 packet".into()));
        };
        if pdst != dst || !(40..=1280).contains(&packet.len()) || !length_consistent(packet) {
            return Err(SendError::Unreachable(
                "destination or length does not match".into(),
            ));
        }
        // As a service: to one of our sessions' clients.
        // (With the real identity shown to `dst`, our service address is also our client
        // address: the service path is taken only if `dst` is a client of that service.)
        if let Some(svc) = self
            .services
            .iter()
            .position(|s| s.address == src && s.sessions.contains_key(&dst))
        {
            return self.service_send(ctx, now, svc, dst, packet);
        }
        let Some(seed) = self.client_seed else {
            return Err(SendError::Unreachable("no client identity".into()));
        };
        let real = self.real_for.contains(&dst);
        // Deriving a pseudonym is an Ed25519 key derivation (tens of µs, a fifth of a client's
        // CPU under bulk traffic when done per packet): a session keeps the one it was made
        // with, which is the one derived here (deterministic in the seed and `dst`) unless the
        // real-identity choice changed since.
        let existing = self
            .clients
            .get(&dst)
            .map(|c| &c.pseudonym)
            .filter(|p| p.is_real_identity() == real)
            .map(|p| addr16(p.address()));
        let (address, pseudonym) = match existing {
            Some(a) => (a, None),
            None => {
                let p = Pseudonym::for_destination(&seed, &Ipv6Addr::from(dst), real);
                (addr16(p.address()), Some(p))
            }
        };
        if address != src && !self.hooks.skip_source_check {
            return Err(SendError::Unreachable(
                "source is not our address for this destination".into(),
            ));
        }
        self.client_send(ctx, now, dst, pseudonym, packet)
    }

    /// The sessions this node has, as a client and as a service.
    pub fn sessions_info(&self) -> Vec<SessionInfo> {
        let now = self.now;
        let clients = self.clients.iter().map(|(dst, c)| SessionInfo {
            peer: Ipv6Addr::from(*dst),
            role: "client",
            local: c.pseudonym.address(),
            state: if c.open.is_some() {
                "open"
            } else if c.intro.is_some() {
                "introducing"
            } else {
                "lookup"
            },
            circuits: c.open.as_ref().map_or(0, |o| o.circuits.len()),
            flows: c.open.as_ref().map_or(0, |o| o.flows.len()),
            age_s: now.saturating_since(c.started) / 1000,
        });
        let services = self.services.iter().flat_map(|s| {
            s.sessions.iter().map(move |(peer, ss)| SessionInfo {
                peer: Ipv6Addr::from(*peer),
                role: "service",
                local: Ipv6Addr::from(s.address),
                state: if ss.circuits.is_empty() {
                    "introducing"
                } else {
                    "open"
                },
                circuits: ss.circuits.len(),
                flows: ss.flows.len(),
                age_s: now.saturating_since(ss.established) / 1000,
            })
        });
        clients.chain(services).collect()
    }

    /// Counters of the session layer.
    pub fn session_stats(&self) -> &SessionStats {
        &self.stats
    }

    /// The intro-point role's table, if this relay ever acted as one.
    pub fn intro_role(&self) -> Option<&IntroPointRole> {
        self.intro_role.as_ref()
    }

    /// Drops every intro registration held here without closing or answering on their circuits
    /// (tests: an intro point that lost its registrations while their services noticed nothing).
    #[doc(hidden)]
    pub fn forget_intro_registrations(&mut self) {
        self.intro_role = None;
    }

    /// The rendezvous-point role's table, if this relay ever acted as one.
    pub fn rendezvous_role(&self) -> Option<&RendezvousRole> {
        self.rend_role.as_ref()
    }

    /// Test hooks (a node that misbehaves on purpose).
    #[doc(hidden)]
    pub fn session_test_hooks(&mut self) -> &mut SessionTestHooks {
        &mut self.hooks
    }

    /// Our guards whose session circuits went silent lately: other layers' paths pass them
    /// over too while another guard is up.
    pub(crate) fn silent_guards(&self) -> &Expiring<[u8; 32]> {
        &self.silent_guards
    }

    /// A link to a relay went down (it may have died): new paths avoid it for a while.
    pub fn on_link_down(&mut self, now: Instant, identity: &[u8; 32]) {
        let until = now + LINK_DOWN_SUSPECT_MS;
        self.suspects.extend(*identity, until);
        self.note_suspect(identity);
    }

    /// A link to a relay is up: it is not suspect (any more).
    pub fn on_link_up(&mut self, identity: &[u8; 32]) {
        self.suspects.remove(identity);
        self.silent_guards.remove(identity);
    }

    /// Circuit events for session circuits are consumed (`None`); others are handed back.
    /// Whether `id` is one of the session layer's circuits.
    pub fn owns(&self, id: CircId) -> bool {
        self.owners.contains_key(&id)
    }

    /// Handles an event of one of our circuits; `false` if the circuit is not ours.
    pub fn on_circuit_event(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        e: &CircEvent,
    ) -> bool {
        match e {
            CircEvent::Built { id, .. } | CircEvent::Extended { id, .. } if self.owns(*id) => {
                self.circuit_ready(ctx, now, *id);
                true
            }
            CircEvent::Closed { id, why } if self.owns(*id) => {
                self.circuit_closed(ctx, now, *id, why);
                true
            }
            CircEvent::Message { id, cmd, payload } if self.owns(*id) => {
                self.on_message(ctx, now, *id, *cmd, payload);
                true
            }
            _ => false,
        }
    }

    /// Whether the DHT layer should keep unused circuits built for client lookups and for
    /// service publications.
    pub fn dht_pools_wanted(&self) -> (bool, bool) {
        (self.client_seed.is_some(), !self.services.is_empty())
    }

    /// The running descriptor publications of `svc` for epochs other than `epoch` (their DHT
    /// tokens): a publication for `epoch` must not end where they go.
    pub fn publications_of(&self, svc: [u8; 16], epoch: u64) -> Vec<u64> {
        self.publishes
            .iter()
            .filter(|(_, (s, e, _))| *s == svc && *e != epoch)
            .map(|(t, _)| *t)
            .collect()
    }

    /// The next puzzle the session layer wants solved; the answer goes to
    /// [`SessionLayer::pow_solved`].
    pub fn poll_solve_request(&mut self) -> Option<SolveRequest> {
        self.solve_requests.pop_front()
    }

    /// The next DHT query the session layer wants made (the node starts it and reports its
    /// token with [`SessionLayer::dht_started`]).
    pub fn poll_dht_request(&mut self) -> Option<DhtRequest> {
        self.dht_requests.pop_front()
    }

    /// The node started `req` as the DHT query `token`.
    pub fn dht_started(&mut self, token: u64, req: &DhtRequest) {
        match req {
            DhtRequest::Lookup { dst, .. } => {
                self.lookups.insert(token, (*dst, self.now));
            }
            DhtRequest::Publish { svc, epoch, .. } => {
                self.publishes.insert(token, (*svc, *epoch, self.now));
            }
            DhtRequest::Relay { identity } => {
                self.relay_lookups.insert(token, (*identity, self.now));
            }
        }
    }

    /// The relay whose record the DHT query `token` looks up, if it is one of ours.
    pub fn relay_lookup(&self, token: u64) -> Option<[u8; 32]> {
        self.relay_lookups.get(&token).map(|(r, _)| *r)
    }

    /// Asks the DHT for the record of the relay `identity`, unless a lookup is under way.
    pub(in crate::session) fn fetch_relay(&mut self, identity: [u8; 32]) {
        let asked = self.relay_lookups.values().any(|(r, _)| *r == identity)
            || self
                .dht_requests
                .iter()
                .any(|r| matches!(r, DhtRequest::Relay { identity: i } if *i == identity));
        if !asked {
            self.dht_requests.push_back(DhtRequest::Relay { identity });
        }
    }

    /// The outcome of a DHT query the session layer asked for (via the last hops it went to);
    /// `false` if `token` is not one of ours.
    pub fn on_dht(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        token: u64,
        answer: DhtAnswer<'_>,
        via: Vec<[u8; 32]>,
    ) -> bool {
        if let Some((svc, e, asked)) = self.publishes.remove(&token) {
            tracing::debug!(
                at = now.as_unix_ms(),
                took_ms = now.saturating_since(asked),
                last_hops = via.len(),
                failed = matches!(answer, DhtAnswer::Failed(_)),
                "descriptor publication answered"
            );
            // The outcome is consumed either way.
            if let Some(s) = self.service_mut(&svc) {
                for r in via {
                    if s.via.len() >= DESC_VIA_MAX {
                        s.via.pop_front();
                    }
                    s.via.push_back((e, r, now));
                }
                if let DhtAnswer::Failed(why) = answer {
                    tracing::debug!("descriptor publication failed: {why}");
                    // Clients would keep finding the old revision (intro points that are gone).
                    s.publish_retry_at = Some(now + PUBLISH_RETRY_MS);
                }
            }
            return true;
        }
        if let Some((identity, asked)) = self.relay_lookups.remove(&token) {
            self.stats.relay_lookups_done += 1;
            self.stats.relay_lookups_ms += now.saturating_since(asked);
            if let DhtAnswer::Records(r) = &answer {
                if !r.is_empty() {
                    let took = now.saturating_since(asked);
                    self.relay_lookup_ms = (self.relay_lookup_ms * 3 + took) / 4;
                }
            }
            // The node put a record it found into the view; whoever waits for it goes on.
            self.client_relay_found(ctx, now, identity);
            self.service_relay_found(ctx, now, identity);
            return true;
        }
        let Some((dst, asked)) = self.lookups.remove(&token) else {
            return false;
        };
        tracing::debug!(
            at = now.as_unix_ms(),
            took_ms = now.saturating_since(asked),
            answer = match &answer {
                DhtAnswer::Records(r) => format!("{} records", r.len()),
                DhtAnswer::Failed(why) => format!("failed: {why}"),
                DhtAnswer::Other => "other".into(),
            },
            "descriptor lookup answered"
        );
        self.client_lookup_done(ctx, now, dst, answer);
        true
    }

    /// Whether [`SessionLayer::timeout`] has work for the node's coarse upper tick
    /// (`node::UPPER_TICK_MS`). Its timers are spread over many small tables (introduction
    /// steps, rendezvous and lookup timeouts, spares, the service's intro queue that serves a
    /// share per run, intro-point checks, publication delays) with "again on the next run"
    /// steps, and the limits in `limits.rs` count on that period; only the silences report
    /// exact deadlines ([`SessionLayer::silence_deadline`]). So the tick runs while any of
    /// those tables holds something: a node with a client session or a hosted service, or
    /// with lookups, pings, introductions or stems under way. A relay (intro and rendezvous
    /// point roles only: their entries expire by their own clocks) or an idle client has none,
    /// and its sessions wait for the node's cap.
    pub fn wants_tick(&self) -> bool {
        let stems = |owner: Owner| {
            self.stems
                .iter()
                .filter(|(id, _)| self.owners.get(id) == Some(&owner))
                .count()
        };
        !self.clients.is_empty()
            || !self.services.is_empty()
            || !self.rend_waiting.is_empty()
            || !self.pings.is_empty()
            || !self.pending_r1.is_empty()
            || !self.lookups.is_empty()
            || !self.dht_requests.is_empty()
            || !self.publishes.is_empty()
            || !self.relay_lookups.is_empty()
            || !self.solve_requests.is_empty()
            || (self.client_seed.is_some() && stems(Owner::ClientStem) < CLIENT_POOL_STEMS)
    }

    /// Runs timers: stems, services, client sessions.
    pub fn timeout(&mut self, ctx: &mut impl SessionCtx, now: Instant) {
        self.now = now;
        if let Some(r) = self.rend_role.as_mut() {
            r.expire(now);
        }
        self.maintain_stems(ctx, now);
        self.service_maintain(ctx, now);
        self.new_suspects.clear();
        self.client_maintain(ctx, now);
        self.pings
            .retain(|_, p| now.saturating_since(p.at) < PING_TIMEOUT_MS);
    }
}

#[cfg(test)]
mod tests;
