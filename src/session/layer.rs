use std::collections::{HashMap, VecDeque};
use std::net::Ipv6Addr;

use ed25519_dalek::SigningKey;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore};

use crate::budget::Charge;
use crate::circuit::layer::{CircEvent, CircId, Purpose};
use crate::circuit::path::{Hop, PathContext, PathKind, Target, Vanguards};
use crate::crypto::keys::fingerprint;
use crate::crypto::{Randomness, SecretRng};
use crate::dht::descriptor::{
    epoch, epochs_to_look_up, epochs_to_publish, expires_for, index as desc_index, revision_for,
    Descriptor, DescriptorContent, IntroEntry, Publication, DESC_MAX_INTRO, DESC_REPUBLISH_S,
    EPOCH_OVERLAP_S,
};
use crate::session::flows::{addresses, flow_of, length_consistent, FlowKey};
use crate::session::frame::{E2E_FRAME_LEN, E2E_PLAINTEXT_OFFSET};
use crate::session::intro::{IntroPlaintext, RendHs, INTRO_TLV_LEN};
use crate::session::roles::{
    establish_rendezvous_body, parse_status, status, status_body, IntroPointRole, IntroduceOutcome,
    RateLimit, RendezvousOutcome, RendezvousRole, ReplayCache,
};
use crate::session::{
    ClientHandshake, E2eMessage, EstablishIntro, Introduce1, Pseudonym, RendCookie, RendPlaintext,
    Rendezvous1, Rendezvous2, ServiceIdentity, SessionChannel, SessionKeys,
};
use crate::time::{Millis, RepeatLog};
use crate::wire::record::{LinkSpec, RelayRecord, FLAG_RENDEZVOUS};
use crate::wire::relay::RelayCommand as C;

use crate::budget::MemoryBudget;
use crate::session::ctx::{DhtAnswer, DhtRequest, SessionCtx};

/// Intro points a service keeps.
pub const NUM_INTRO_POINTS: usize = 3;
/// How long a new service waits for all its intro points before publishing fewer.
pub const FIRST_DESC_WAIT_MS: Millis = 5_000;
/// Intro point lifetime bounds (rotation, 10.6).
pub const INTRO_POINT_LIFETIME_MIN_MS: Millis = 64_800_000;
/// Upper bound of the intro point lifetime.
pub const INTRO_POINT_LIFETIME_MAX_MS: Millis = 86_400_000;
/// Introductions after which an intro point is rotated.
pub const INTRO_MAX_INTRODUCTIONS: u64 = 16_384;
/// Introductions a service acts on per second, and the burst.
pub const SERVICE_INTRO_RATE: (f64, f64) = (10.0, 100.0);
/// Intro points a client tries before giving up.
pub const INTRO_ATTEMPTS: usize = 3;
/// An introduction (or a JOIN) must finish this long after it started.
pub const REND_TIMEOUT_MS: Millis = 20_000;
/// After INTRODUCE_ACK, the service's RENDEZVOUS1 is waited for this long before another intro
/// point is tried too (an intro point acknowledges once it passed the introduction on; a relay
/// that died on the service's side of it loses it silently).
pub const REND_AFTER_ACK_TIMEOUT_MS: Millis = 3_000;
/// ... and an attempt that waited that long stays open beside the next one until this long
/// after its acknowledgement (a slow service still gets through).
pub const REND_LINGER_MS: Millis = 15_000;
/// A descriptor lookup is given up after this long.
pub const LOOKUP_TIMEOUT_MS: Millis = 30_000;
/// A new session that is not open this long after its first packet gives up (its queued
/// packets are answered unreachable). Until then failed introductions are retried with a fresh
/// descriptor: a service replaces intro points it lost within seconds, so the next revision
/// usually works.
pub const SESSION_SETUP_TIMEOUT_MS: Millis = 40_000;
/// The first wait before looking the descriptor up again after every intro point failed;
/// doubles each round up to [`INTRO_ROUND_DELAY_MAX_MS`].
pub const INTRO_ROUND_DELAY_MS: Millis = 1_000;
/// The longest wait between rounds.
pub const INTRO_ROUND_DELAY_MAX_MS: Millis = 8_000;
/// An intro point that is not established this long after its circuit was started (a lost
/// ESTABLISH_INTRO or a circuit stuck in extension) is replaced.
pub const INTRO_ESTABLISH_TIMEOUT_MS: Millis = 20_000;
/// A service's circuit to an intro point that died is rebuilt to the same relay this many
/// times (until it is established again) before the intro point is replaced.
pub const INTRO_REBUILDS: u8 = 2;
/// A service's circuit to a client's rendezvous point is built this many times at most (a
/// relay on the first path may have died).
pub const SERVICE_REND_TRIES: u8 = 2;
/// A client session that lost its last circuit is made again at once if a flow used it this
/// recently.
pub const RESUME_ACTIVE_MS: Millis = 10_000;
/// After a failed descriptor publication, the next try.
pub const PUBLISH_RETRY_MS: Millis = 10_000;
/// A descriptor for an epoch other than the current one goes out this long after the current
/// epoch's (uniformly at random in the range), so that storage nodes and last hops do not see a
/// service's two blinded keys arrive together (12.6).
pub const DESC_SPREAD_MS: (Millis, Millis) = (5_000, 120_000);
/// The periodic republication comes up to this much before `DESC_REPUBLISH_S` (at random), so
/// that its time does not tie a service's epochs either.
pub const DESC_REPUBLISH_JITTER_MS: Millis = 900_000;
/// A revision after the first of a run is up to this much below the time it is made (and
/// still above the previous one): revisions of two epochs made at once do not match.
pub const DESC_REVISION_JITTER_MS: Millis = 60_000;
/// The last hops of a service's publications it remembers, to keep the records of two epochs
/// off one relay (12.6).
pub const DESC_VIA_MAX: usize = 32;
/// Joined, unused circuits a session keeps for new flows.
pub const SESSION_SPARE_CIRCUITS: usize = 1;
/// A session is renewed (new introduction) after this long.
pub const SESSION_MAX_AGE_MS: Millis = 86_400_000;
/// Sessions per node, both roles.
pub const MAX_SESSIONS: usize = 4096;
/// Introductions a service has in progress (rendezvous not yet joined).
pub const MAX_PENDING_INTRODUCTIONS: usize = 64;
/// Flows a session tracks (the least recently used is forgotten first).
pub const MAX_FLOWS_PER_SESSION: usize = 256;
/// Circuits one session may hold (flows share circuits beyond it).
pub const MAX_SESSION_CIRCUITS: usize = 16;
/// Packets queued per destination while a session is made.
pub const MAX_QUEUED_PACKETS: usize = 32;
/// Descriptors a client caches.
pub const MAX_CACHED_DESCRIPTORS: usize = 1024;
/// A circuit that carried our cells this long without an answer gets an e2e PING.
pub const CIRCUIT_PROBE_AFTER_MS: Millis = 5_000;
/// ... and is dead if the PONG does not come within this.
pub const CIRCUIT_PROBE_TIMEOUT_MS: Millis = 3_000;
/// A flow unused this long is forgotten (its circuit goes back to being a spare).
pub const FLOW_IDLE_MS: Millis = 300_000;
/// Relays on a circuit that stopped answering are avoided for this long.
pub const SUSPECT_MS: Millis = 120_000;
/// An introduction whose two circuits are not both ready by now is retried elsewhere.
pub const INTRO_STEP_TIMEOUT_MS: Millis = 5_000;
/// Pre-built client stems (guard, middle), extended to intro points.
pub const CLIENT_POOL_STEMS: usize = 2;
/// Pre-built service stems (guard, vanguard, middle), extended to rendezvous points.
pub const SERVICE_POOL_STEMS: usize = 4;
/// Memory charged per session.
const SESSION_COST: usize = 16 * 1024;
/// Memory charged per cached descriptor.
const DESC_CACHE_COST: usize = 1200;
/// Paths drawn to find one without a suspect relay.
const SUSPECT_PATH_TRIES: usize = 8;
/// A relay whose link to us went down is avoided in new paths for this long (or until a link to
/// it is up again): its record outlives it in every view, and an EXTEND to it fails only after
/// the extending relay's dial times out.
const LINK_DOWN_SUSPECT_MS: Millis = SUSPECT_MS;
/// Intro circuits are rebuilt no faster than this after a failure.
const INTRO_RETRY_MS: Millis = 2_000;

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
    /// Sessions opened as a client.
    pub client_sessions: u64,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
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

struct IntroPoint {
    circ: CircId,
    auth: SigningKey,
    auth_pub: [u8; 32],
    relay: Option<RelayRecord>,
    established: Option<Millis>,
    /// `E_c` seen through this auth key (10.6).
    replay: ReplayCache,
    introductions: u64,
    retire_at: Millis,
    /// When its current circuit was started.
    created: Millis,
    /// Established once: descriptors list it, also while its circuit is being rebuilt.
    listed: bool,
    /// Circuits rebuilt to it since it was last established.
    rebuilds: u8,
}

struct ServiceSession {
    chan: SessionChannel,
    keys: SessionKeys,
    circuits: Vec<CircId>,
    pending: usize,
    flows: HashMap<FlowKey, (CircId, Millis)>,
    established: Millis,
    _charge: Charge,
}

struct Service {
    signing: SigningKey,
    ident: ServiceIdentity,
    address: [u8; 16],
    intros: Vec<IntroPoint>,
    /// The last descriptor built per epoch.
    descs: Vec<(u64, Descriptor)>,
    built_at: Option<Millis>,
    published_keys: Vec<[u8; 32]>,
    /// Per epoch: the last revision published in this run (no rollback per (index, signer),
    /// and the signer differs per epoch).
    revisions: HashMap<u64, u64>,
    /// Epochs whose descriptor is due, and when.
    queued: Vec<(u64, Millis)>,
    /// When the periodic republication is due.
    republish_at: Option<Millis>,
    /// Last hops that carried a publication: epoch, relay, when.
    via: VecDeque<(u64, [u8; 32], Millis)>,
    sessions: HashMap<[u8; 16], ServiceSession>,
    rate: RateLimit,
    pending: usize,
    next_intro_try: Millis,
    /// A publication failed: publish again then.
    publish_retry_at: Option<Millis>,
}

struct Introduction {
    started: Millis,
    cookie: RendCookie,
    rend: Option<CircId>,
    rend_ready: bool,
    intro: Option<CircId>,
    intro_ready: bool,
    entry: IntroEntry,
    service_key: [u8; 32],
    hs: Option<ClientHandshake>,
    /// When INTRODUCE1 was sent.
    sent_at: Option<Millis>,
    acked: bool,
    acked_at: Option<Millis>,
}

struct SessCirc {
    id: CircId,
    /// When we first sent on it after its last answer.
    unanswered_since: Option<Millis>,
    probe: Option<(u64, Millis)>,
}

struct Join {
    circ: CircId,
    cookie: RendCookie,
    started: Millis,
    requested: bool,
}

struct OpenSession {
    chan: SessionChannel,
    keys: SessionKeys,
    established: Millis,
    circuits: Vec<SessCirc>,
    flows: HashMap<FlowKey, (CircId, Millis)>,
    joins: Vec<Join>,
    next_request: u32,
}

struct ClientSession {
    pseudonym: Pseudonym,
    started: Millis,
    queue: VecDeque<Vec<u8>>,
    pings: Vec<u64>,
    lookup: Option<Millis>,
    content: Option<DescriptorContent>,
    tried: Vec<[u8; 32]>,
    /// Descriptor rounds that failed (every intro point tried).
    rounds: u32,
    /// While waiting between rounds: when to look the descriptor up again.
    retry_at: Option<Millis>,
    /// A ready rendezvous circuit (and its registered cookie) kept from an introduction that
    /// failed on the intro point's side, for the next try.
    spare_rend: Option<(CircId, RendCookie, bool)>,
    intro: Option<Introduction>,
    /// An earlier attempt the service acknowledged but has not answered yet: it may still
    /// succeed while the next one runs (its RENDEZVOUS2 is accepted until it expires).
    lingering: Option<Introduction>,
    open: Option<OpenSession>,
    _charge: Charge,
}

/// The node's session state.
pub struct SessionLayer {
    /// Choices: intro point lifetimes, candidate order, vanguards.
    rng: StdRng,
    /// Intro-point auth keys, descriptor salts, rendezvous cookies, end-to-end handshake
    /// ephemerals.
    secrets: SecretRng,
    intro_role: Option<IntroPointRole>,
    rend_role: Option<RendezvousRole>,
    client_seed: Option<[u8; 32]>,
    real_for: Vec<[u8; 16]>,
    services: Vec<Service>,
    desc_cache: HashMap<[u8; 32], (Descriptor, Charge)>,
    clients: HashMap<[u8; 16], ClientSession>,
    owners: HashMap<CircId, Owner>,
    /// Service circuits to a client's rendezvous point, before RENDEZVOUS1: what to send, the
    /// rendezvous point, and which try this is.
    pending_r1: HashMap<CircId, (Rendezvous1, [u8; 32], u8)>,
    /// The latest time the node was driven with (for status output).
    now: Millis,
    /// Relays (past the first hop) of circuits that died without a DESTROY, until when.
    suspects: HashMap<[u8; 32], Millis>,
    /// Descriptor lookups under way: token → service.
    lookups: HashMap<u64, [u8; 16]>,
    /// DHT queries for the node to start.
    dht_requests: VecDeque<DhtRequest>,
    /// Descriptor publications under way: token → service and epoch.
    publishes: HashMap<u64, ([u8; 16], u64)>,
    stems: Vec<(CircId, bool)>,
    vanguards: Vanguards,
    pings: HashMap<u64, ([u8; 16], Millis)>,
    next_ping: u64,
    /// Counters.
    pub stats: SessionStats,
    hooks: SessionTestHooks,
    /// Why stems or intro-point paths cannot be built, logged when it starts or changes.
    stem_log: RepeatLog,
    intro_path_log: RepeatLog,
}

impl SessionLayer {
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
            desc_cache: HashMap::new(),
            clients: HashMap::new(),
            owners: HashMap::new(),
            pending_r1: HashMap::new(),
            now: 0,
            suspects: HashMap::new(),
            lookups: HashMap::new(),
            dht_requests: VecDeque::new(),
            publishes: HashMap::new(),
            stems: Vec::new(),
            vanguards: Vanguards::new(),
            pings: HashMap::new(),
            next_ping: 1,
            stats: SessionStats::default(),
            hooks: SessionTestHooks::default(),
            stem_log: RepeatLog::default(),
            intro_path_log: RepeatLog::default(),
        }
    }

    fn session_count(&self) -> usize {
        self.clients.len()
            + self
                .services
                .iter()
                .map(|s| s.sessions.len())
                .sum::<usize>()
    }

    fn service_mut(&mut self, addr: &[u8; 16]) -> Option<&mut Service> {
        self.services.iter_mut().find(|s| &s.address == addr)
    }

    fn ping_id(&mut self) -> u64 {
        let id = self.next_ping;
        self.next_ping += 1;
        id
    }
}

fn addr16(a: Ipv6Addr) -> [u8; 16] {
    a.octets()
}

fn hop_of(r: &RelayRecord) -> Hop {
    Hop::from_record(r)
}

/// Seals `msg` on `chan` into `buf`; the frame length.
fn seal(
    chan: &mut SessionChannel,
    msg: &E2eMessage<'_>,
    buf: &mut [u8; E2E_FRAME_LEN],
) -> Option<usize> {
    let n = msg.emit(buf.get_mut(E2E_PLAINTEXT_OFFSET..)?).ok()?;
    chan.seal_in_place(buf, n).ok()
}

impl SessionLayer {
    // ---- public API ----------------------------------------------------------------------

    /// Hosts a hidden service with the Ed25519 seed `seed` (its address is the address of the
    /// public key): intro points are chosen and established over 4-hop service circuits, and
    /// descriptors for the current (and, near the boundary, the next) epoch are published and
    /// refreshed.
    /// `false` if it is hosted already.
    pub fn add_service(&mut self, now: Millis, seed: [u8; 32]) -> bool {
        let signing = SigningKey::from_bytes(&seed);
        let ident = ServiceIdentity::from_seed(&seed);
        let address = addr16(ident.address());
        if self.services.iter().any(|s| s.address == address) {
            return false;
        }
        self.services.push(Service {
            signing,
            ident,
            address,
            intros: Vec::new(),
            descs: Vec::new(),
            built_at: None,
            published_keys: Vec::new(),
            revisions: HashMap::new(),
            queued: Vec::new(),
            republish_at: None,
            via: VecDeque::new(),
            sessions: HashMap::new(),
            rate: RateLimit::new(SERVICE_INTRO_RATE.0, SERVICE_INTRO_RATE.1, now),
            pending: 0,
            next_intro_try: now,
            publish_retry_at: None,
        });
        true
    }

    /// Sets the node's own service seed, from which per-destination pseudonyms are derived
    /// (10.1); destinations in `real_identity_for` see the real identity instead.
    pub fn set_client_identity(&mut self, seed: [u8; 32], real_identity_for: Vec<[u8; 16]>) {
        self.client_seed = Some(seed);
        self.real_for = real_identity_for;
    }

    /// The address this node shows `dst` as a client (its pseudonym for `dst`, or its real
    /// address where configured), if a client identity is set.
    pub fn pseudonym_for(&self, dst: [u8; 16]) -> Option<Ipv6Addr> {
        let seed = self.client_seed.as_ref()?;
        let real = self.real_for.contains(&dst);
        Some(Pseudonym::for_destination(seed, &Ipv6Addr::from(dst), real).address())
    }

    /// Sends an inner IPv6 packet (source already the address the peer knows us by) to the
    /// overlay address `dst`: on the session with that peer, starting one to a service if there
    /// is none (packets wait in a bounded queue meanwhile).
    pub fn send_packet(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Millis,
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
        let pseudonym = Pseudonym::for_destination(&seed, &Ipv6Addr::from(dst), real);
        if addr16(pseudonym.address()) != src && !self.hooks.skip_source_check {
            return Err(SendError::Unreachable(
                "source is not our address for this destination".into(),
            ));
        }
        self.client_send(ctx, now, dst, pseudonym, packet)
    }

    /// Sends an e2e PING on the session to `dst` (starting one if needed). The answer is a
    /// [`crate::node::NodeEvent::Pong`] with the returned id.
    pub fn e2e_ping(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Millis,
        dst: [u8; 16],
    ) -> Result<u64, SendError> {
        let Some(seed) = self.client_seed else {
            return Err(SendError::Unreachable("no client identity".into()));
        };
        let id = self.ping_id();
        self.pings.insert(id, (dst, now));
        let real = self.real_for.contains(&dst);
        let pseudonym = Pseudonym::for_destination(&seed, &Ipv6Addr::from(dst), real);
        self.client_session(ctx, now, dst, pseudonym)?;
        let open = self.clients.get(&dst).is_some_and(|c| c.open.is_some());
        if open {
            let circ = self.client_pick_circuit(ctx, now, dst, None);
            if let Some(circ) = circ {
                self.client_send_msg(ctx, now, dst, circ, &E2eMessage::Ping(id));
            }
        } else if let Some(c) = self.clients.get_mut(&dst) {
            if c.pings.len() < MAX_QUEUED_PACKETS {
                c.pings.push(id);
            }
        }
        Ok(id)
    }

    /// The services this node hosts.
    pub fn services_info(&self) -> Vec<ServiceInfo> {
        let now = self.now;
        self.services
            .iter()
            .map(|s| ServiceInfo {
                address: Ipv6Addr::from(s.address),
                intro_points: s
                    .intros
                    .iter()
                    .filter(|i| i.established.is_some())
                    .filter_map(|i| i.relay.as_ref().map(|r| fingerprint(r.identity())))
                    .collect(),
                descriptor_age_s: s.built_at.map(|t| now.saturating_sub(t) / 1000),
                sessions: s.sessions.len(),
            })
            .collect()
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
            age_s: now.saturating_sub(c.started) / 1000,
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
                age_s: now.saturating_sub(ss.established) / 1000,
            })
        });
        clients.chain(services).collect()
    }

    /// The descriptors our services last built (current and next epoch), as published.
    pub fn service_descriptors(&self) -> Vec<Vec<u8>> {
        self.services
            .iter()
            .flat_map(|s| s.descs.iter().map(|(_, d)| d.bytes().to_vec()))
            .collect()
    }

    /// Puts a descriptor into the client cache (after the storage checks of 11.5; the client
    /// checks run when it is used).
    pub fn cache_descriptor(
        &mut self,
        budget: &MemoryBudget,
        now: Millis,
        bytes: &[u8],
    ) -> Result<(), String> {
        let d = Descriptor::parse(bytes, now).map_err(|e| e.to_string())?;
        let now_s = now / 1000;
        self.desc_cache.retain(|_, (d, _)| d.expires() > now_s);
        if let Some((old, _)) = self.desc_cache.get(d.index()) {
            if old.revision() >= d.revision() {
                return Ok(());
            }
        }
        if self.desc_cache.len() >= MAX_CACHED_DESCRIPTORS {
            let oldest = self
                .desc_cache
                .iter()
                .min_by_key(|(_, (d, _))| d.expires())
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.desc_cache.remove(&k);
            }
        }
        let charge = budget.try_charge(DESC_CACHE_COST).ok_or("memory budget")?;
        self.desc_cache.insert(*d.index(), (d, charge));
        Ok(())
    }

    /// Counters of the session layer.
    pub fn session_stats(&self) -> &SessionStats {
        &self.stats
    }

    /// The intro-point role's table, if this relay ever acted as one.
    pub fn intro_role(&self) -> Option<&IntroPointRole> {
        self.intro_role.as_ref()
    }

    /// The rendezvous-point role's table, if this relay ever acted as one.
    pub fn rendezvous_role(&self) -> Option<&RendezvousRole> {
        self.rend_role.as_ref()
    }

    /// Circuits of our client session to `dst` and the flows on each (for tests and status).
    pub fn session_circuits(&self, dst: [u8; 16]) -> Vec<(CircId, usize)> {
        let Some(o) = self.clients.get(&dst).and_then(|c| c.open.as_ref()) else {
            return Vec::new();
        };
        o.circuits
            .iter()
            .map(|c| (c.id, o.flows.values().filter(|(f, _)| *f == c.id).count()))
            .collect()
    }

    /// The circuit a flow of our session to `dst` rides.
    pub fn flow_circuit(&self, dst: [u8; 16], flow: &FlowKey) -> Option<CircId> {
        self.clients
            .get(&dst)
            .and_then(|c| c.open.as_ref())
            .and_then(|o| o.flows.get(flow))
            .map(|(c, _)| *c)
    }

    /// Circuits of our service `svc`'s session with the client `peer`.
    pub fn service_session_circuits(&self, svc: [u8; 16], peer: [u8; 16]) -> Vec<CircId> {
        self.services
            .iter()
            .find(|s| s.address == svc)
            .and_then(|s| s.sessions.get(&peer))
            .map(|ss| ss.circuits.clone())
            .unwrap_or_default()
    }

    /// The client addresses (pseudonyms) our service `svc` has sessions with.
    pub fn service_peers(&self, svc: [u8; 16]) -> Vec<[u8; 16]> {
        self.services
            .iter()
            .find(|s| s.address == svc)
            .map(|s| s.sessions.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Whether this node holds (as a service) the secret of the key with this public half.
    pub fn holds_service_key(&self, public: &[u8; 32]) -> bool {
        self.services.iter().any(|s| s.ident.public() == public)
    }

    /// Test hooks (a node that misbehaves on purpose).
    #[doc(hidden)]
    pub fn session_test_hooks(&mut self) -> &mut SessionTestHooks {
        &mut self.hooks
    }

    // ---- the roles at the last hop -------------------------------------------------------

    /// A relay message at the last hop of someone else's circuit: the intro-point and
    /// rendezvous-point roles (10.6).
    pub fn on_last_hop(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Millis,
        slot: u64,
        cmd: u8,
        payload: &[u8],
    ) {
        let budget = ctx.budget().clone();
        let intro = self
            .intro_role
            .get_or_insert_with(|| IntroPointRole::new(budget.clone()));
        let intro_holds = intro.holds(slot);
        let rend = self
            .rend_role
            .get_or_insert_with(|| RendezvousRole::new(budget));
        let rend_holds = rend.holds(slot);
        let has_role = intro_holds || rend_holds;
        match C::from_u8(cmd) {
            Some(C::EstablishIntro) => {
                let up = ctx.relayed_upstream(slot);
                let code = match (has_role, ctx.relayed_bind(slot), up) {
                    (false, Some(bind), Some(up)) => {
                        self.intro_role.as_mut().map_or(status::REFUSED, |r| {
                            r.establish(now, slot, up, &bind, payload)
                        })
                    }
                    _ => status::REFUSED,
                };
                let _ = ctx.reply(slot, C::IntroEstablished, &status_body(code));
                // Registrations dropped for memory: closing their circuits tells their services
                // to register elsewhere.
                let evicted = self
                    .intro_role
                    .as_mut()
                    .map(|r| r.take_evicted())
                    .unwrap_or_default();
                for s in evicted {
                    ctx.close_relayed(now, s);
                }
            }
            Some(C::Introduce1) => {
                let up = ctx.relayed_upstream(slot);
                let outcome = match (has_role, up) {
                    (false, Some(up)) => self
                        .intro_role
                        .as_mut()
                        .map_or(IntroduceOutcome::Refuse(status::REFUSED), |r| {
                            r.introduce(now, slot, up, payload)
                        }),
                    _ => IntroduceOutcome::Refuse(status::REFUSED),
                };
                let code = match outcome {
                    IntroduceOutcome::Forward { service_slot } => {
                        if self.hooks.replay_introduce2 {
                            let _ = ctx.reply(service_slot, C::Introduce2, payload);
                        }
                        match ctx.reply(service_slot, C::Introduce2, payload) {
                            Ok(()) => status::OK,
                            Err(_) => status::UNKNOWN,
                        }
                    }
                    IntroduceOutcome::Refuse(c) => c,
                };
                let _ = ctx.reply(slot, C::IntroduceAck, &status_body(code));
            }
            Some(C::EstablishRendezvous) => {
                let code = if has_role {
                    status::REFUSED
                } else {
                    self.rend_role
                        .as_mut()
                        .map_or(status::REFUSED, |r| r.establish(now, slot, payload))
                };
                let _ = ctx.reply(slot, C::RendezvousEstablished, &status_body(code));
            }
            Some(C::Rendezvous1) => {
                let outcome = if has_role {
                    RendezvousOutcome::Destroy
                } else {
                    self.rend_role
                        .as_mut()
                        .map_or(RendezvousOutcome::Destroy, |r| {
                            r.rendezvous1(now, slot, payload)
                        })
                };
                match outcome {
                    RendezvousOutcome::Splice {
                        client_slot,
                        rendezvous2,
                    } => {
                        let sent = ctx.reply(client_slot, C::Rendezvous2, &rendezvous2);
                        if sent.is_err() || ctx.splice(client_slot, slot).is_err() {
                            ctx.close_relayed(now, slot);
                        }
                    }
                    RendezvousOutcome::Destroy => ctx.close_relayed(now, slot),
                }
            }
            _ => {}
        }
    }

    /// A relayed circuit that ended here is gone: the roles forget it.
    pub fn on_relayed_closed(&mut self, _now: Millis, slot: u64) {
        if let Some(r) = self.intro_role.as_mut() {
            r.closed(slot);
        }
        if let Some(r) = self.rend_role.as_mut() {
            r.closed(slot);
        }
    }

    // ---- circuits and paths --------------------------------------------------------------

    fn sess_path(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Millis,
        kind: PathKind,
    ) -> Result<Vec<RelayRecord>, String> {
        let own_endpoints = ctx.own_endpoints();
        let pc = PathContext {
            view: ctx.view(),
            rules: ctx.path_rules(),
            own_endpoints: &own_endpoints,
            now,
        };
        if matches!(kind, PathKind::Service(_) | PathKind::ServiceStem) {
            self.vanguards.maintain(&pc, ctx.guards(), &mut self.rng);
        }
        // A relay that just stopped answering is still in the view for a while: paths through
        // it would wait for an EXTEND to fail. A few tries find one without; else the last.
        self.suspects.retain(|_, until| now < *until);
        let mut tries = 0;
        let path = loop {
            tries += 1;
            let path = pc
                .select(
                    kind.clone(),
                    ctx.guards(),
                    Some(&self.vanguards),
                    &mut self.rng,
                )
                .map_err(|e| e.to_string())?;
            let clean = !path
                .hops()
                .iter()
                .skip(1)
                .any(|h| self.suspects.contains_key(&h.identity));
            if clean || tries >= SUSPECT_PATH_TRIES {
                break path;
            }
        };
        path.hops()
            .iter()
            .map(|h| pc.view.get(&h.identity).cloned())
            .collect::<Option<Vec<RelayRecord>>>()
            .ok_or_else(|| "path: a hop left the view".to_string())
    }

    fn sess_build(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Millis,
        kind: PathKind,
        purpose: Purpose,
        owner: Owner,
    ) -> Result<CircId, String> {
        let path = self.sess_path(ctx, now, kind)?;
        let id = ctx.build(now, purpose, path).map_err(|e| e.to_string())?;
        self.owners.insert(id, owner);
        Ok(id)
    }

    /// A circuit ending at `target`: a ready stem extended by one hop, or a fresh build.
    fn sess_circuit_to(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Millis,
        service: bool,
        target: &RelayRecord,
        purpose: Purpose,
        owner: Owner,
    ) -> Result<CircId, String> {
        let want = if service {
            Owner::ServiceStem
        } else {
            Owner::ClientStem
        };
        let stems: Vec<CircId> = self
            .stems
            .iter()
            .filter(|(id, ready)| *ready && self.owners.get(id) == Some(&want))
            .map(|(id, _)| *id)
            .collect();
        for id in stems {
            let suspect = ctx.path(id).is_some_and(|p| {
                p.iter()
                    .any(|h| self.suspects.get(h.identity()).is_some_and(|t| now < *t))
            });
            if suspect {
                self.owners.remove(&id);
                self.stems.retain(|(s, _)| *s != id);
                ctx.destroy(now, id);
                continue;
            }
            let fits = ctx
                .path(id)
                .is_some_and(|p| p.iter().all(|h| h.identity() != target.identity()));
            if !fits {
                continue;
            }
            if ctx.extend(now, id, target.clone()).is_ok() {
                self.stats.stem_extends += 1;
                self.stems.retain(|(s, _)| *s != id);
                self.owners.insert(id, owner);
                ctx.set_purpose(id, purpose);
                return Ok(id);
            }
        }
        self.stats.fresh_builds += 1;
        tracing::debug!(
            at = now,
            target = %hex8(target.identity()),
            "no pooled stem fits: building a circuit from scratch"
        );
        let kind = if service {
            PathKind::Service(Target::PeerRendezvous(hop_of(target)))
        } else {
            PathKind::Client(Target::Relay(hop_of(target)))
        };
        self.sess_build(ctx, now, kind, purpose, owner)
    }

    /// A ready pool circuit for a rendezvous: none through a suspect relay (those are torn
    /// down, the pool rebuilds), preferably none through a relay in `avoid` (the session's
    /// other circuits, so that one relay's death does not take the spare too).
    fn sess_take_pool(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Millis,
        avoid: &[[u8; 32]],
    ) -> Option<CircId> {
        self.suspects.retain(|_, until| now < *until);
        let mut fallback = None;
        let mut chosen = None;
        for id in ctx.ready_ids(Purpose::Pool) {
            let Some(path) = ctx.path(id) else {
                continue;
            };
            if path
                .iter()
                .any(|r| self.suspects.contains_key(r.identity()))
            {
                ctx.destroy(now, id);
                continue;
            }
            if path.iter().skip(1).any(|r| avoid.contains(r.identity())) {
                fallback.get_or_insert(id);
                continue;
            }
            chosen = Some(id);
            break;
        }
        let id = chosen.or(fallback)?;
        ctx.set_purpose(id, Purpose::Rendezvous);
        Some(id)
    }

    /// Relays past the first hop of the client session's circuits to `dst`.
    fn session_relays(&self, ctx: &impl SessionCtx, dst: &[u8; 16]) -> Vec<[u8; 32]> {
        let Some(o) = self.clients.get(dst).and_then(|c| c.open.as_ref()) else {
            return Vec::new();
        };
        o.circuits
            .iter()
            .filter_map(|c| ctx.path(c.id))
            .flat_map(|p| p.iter().skip(1).map(|r| *r.identity()))
            .collect()
    }

    fn maintain_stems(&mut self, ctx: &mut impl SessionCtx, now: Millis) {
        let wants = [
            (
                Owner::ClientStem,
                if self.client_seed.is_some() {
                    CLIENT_POOL_STEMS
                } else {
                    0
                },
                PathKind::ClientStem,
            ),
            (
                Owner::ServiceStem,
                if self.services.is_empty() {
                    0
                } else {
                    SERVICE_POOL_STEMS
                },
                PathKind::ServiceStem,
            ),
        ];
        for (owner, want, kind) in wants {
            let have = self
                .stems
                .iter()
                .filter(|(id, _)| self.owners.get(id) == Some(&owner))
                .count();
            if have < want {
                let purpose = if owner == Owner::ServiceStem {
                    Purpose::Rendezvous
                } else {
                    Purpose::Intro
                };
                match self.sess_build(ctx, now, kind, purpose, owner) {
                    Ok(id) => {
                        self.stems.push((id, false));
                        self.stem_log.clear();
                    }
                    Err(e) => {
                        let e = e.to_string();
                        if let Some(held) = self.stem_log.hit(now, &e) {
                            tracing::debug!(repeats = held, "stem: {e}");
                        }
                    }
                }
            }
        }
    }

    /// A link to a relay went down (it may have died): new paths avoid it for a while.
    pub fn on_link_down(&mut self, now: Millis, identity: &[u8; 32]) {
        let until = now + LINK_DOWN_SUSPECT_MS;
        let e = self.suspects.entry(*identity).or_insert(until);
        *e = (*e).max(until);
    }

    /// A link to a relay is up: it is not suspect (any more).
    pub fn on_link_up(&mut self, identity: &[u8; 32]) {
        self.suspects.remove(identity);
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
        now: Millis,
        e: &CircEvent,
    ) -> bool {
        match e {
            CircEvent::Built { id, .. } | CircEvent::Extended { id, .. } if self.owns(*id) => {
                self.sess_circuit_ready(ctx, now, *id);
                true
            }
            CircEvent::Closed { id, why } if self.owns(*id) => {
                self.sess_circuit_closed(ctx, now, *id, why);
                true
            }
            CircEvent::Message { id, cmd, payload } if self.owns(*id) => {
                self.sess_message(ctx, now, *id, *cmd, payload);
                true
            }
            _ => false,
        }
    }

    fn sess_circuit_ready(&mut self, ctx: &mut impl SessionCtx, now: Millis, id: CircId) {
        let Some(owner) = self.owners.get(&id).copied() else {
            return;
        };
        match owner {
            Owner::ClientStem | Owner::ServiceStem => {
                for s in self.stems.iter_mut() {
                    if s.0 == id {
                        s.1 = true;
                    }
                }
            }
            Owner::Intro { svc } => {
                let last = ctx.path(id).map_or(0, |p| p.len().saturating_sub(1));
                let relay = ctx.path(id).and_then(|p| p.last().cloned());
                let Some(bind) = ctx.hop_bind(id, last) else {
                    return;
                };
                let Some(s) = self.service_mut(&svc) else {
                    return;
                };
                let Some(ip) = s.intros.iter_mut().find(|i| i.circ == id) else {
                    return;
                };
                ip.relay = relay;
                let body = EstablishIntro::sign(&ip.auth, &bind).emit();
                let _ = ctx.send(id, C::EstablishIntro, &body);
            }
            Owner::ServiceRend { svc, peer } => self.service_rend_ready(ctx, now, id, svc, peer),
            Owner::ClientIntro { dst } => {
                if let Some(i) = self.clients.get_mut(&dst).and_then(|c| c.intro.as_mut()) {
                    i.intro_ready = true;
                }
                self.client_try_introduce(ctx, now, dst);
            }
            Owner::ClientRend { .. } | Owner::ClientJoin { .. } => {
                self.client_establish_rendezvous(ctx, id);
            }
            Owner::ServiceCirc { .. } | Owner::ClientCirc { .. } => {}
        }
    }

    fn client_establish_rendezvous(&mut self, ctx: &mut impl SessionCtx, id: CircId) {
        let cookie = match self.owners.get(&id) {
            Some(Owner::ClientRend { dst }) => self
                .clients
                .get(dst)
                .and_then(|c| c.intro.as_ref())
                .map(|i| i.cookie.clone()),
            Some(Owner::ClientJoin { dst }) => self
                .clients
                .get(dst)
                .and_then(|c| c.open.as_ref())
                .and_then(|o| o.joins.iter().find(|j| j.circ == id))
                .map(|j| j.cookie.clone()),
            _ => None,
        };
        if let Some(cookie) = cookie {
            let _ = ctx.send(
                id,
                C::EstablishRendezvous,
                &establish_rendezvous_body(&cookie),
            );
        }
    }

    fn sess_circuit_closed(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Millis,
        id: CircId,
        why: &str,
    ) {
        let Some(owner) = self.owners.remove(&id) else {
            return;
        };
        tracing::debug!(circuit = id.0, why, "session circuit closed");
        match owner {
            Owner::ClientStem | Owner::ServiceStem => self.stems.retain(|(s, _)| *s != id),
            Owner::Intro { svc } => {
                // A relay on the way died, most likely, not the intro point: a new circuit to
                // the same relay under the same auth key keeps every descriptor that lists it
                // good (the intro point moves the registration), so clients need no new one —
                // republishing through a DHT that just lost relays can take half a minute.
                let again = self.service_mut(&svc).and_then(|s| {
                    s.intros
                        .iter()
                        .find(|i| i.circ == id && i.listed && i.rebuilds < INTRO_REBUILDS)
                        .and_then(|i| i.relay.as_ref().map(|r| *r.identity()))
                });
                let alive = again.and_then(|r| {
                    let suspect = self.suspects.get(&r).is_some_and(|t| now < *t);
                    let rec = ctx.view().get(&r).cloned();
                    rec.filter(|rec| !suspect && !ctx.recently_dead(&rec.fields().link_key, now))
                });
                let rebuilt = alive.and_then(|rec| {
                    self.sess_circuit_to(ctx, now, true, &rec, Purpose::Intro, Owner::Intro { svc })
                        .ok()
                });
                if let Some(s) = self.service_mut(&svc) {
                    match (rebuilt, s.intros.iter_mut().find(|i| i.circ == id)) {
                        (Some(new), Some(ip)) => {
                            tracing::debug!(at = now, "intro circuit lost: rebuilding it");
                            ip.circ = new;
                            ip.established = None;
                            ip.created = now;
                            ip.rebuilds += 1;
                        }
                        _ => {
                            // Descriptors listing it stay valid for a while; a replacement is
                            // chosen at the next tick and the descriptors are rebuilt then.
                            s.intros.retain(|i| i.circ != id);
                            s.next_intro_try = now;
                        }
                    }
                }
            }
            Owner::ServiceRend { svc, peer } => {
                let retry = self
                    .pending_r1
                    .remove(&id)
                    .filter(|(_, _, tries)| *tries < SERVICE_REND_TRIES);
                if let Some(s) = self.service_mut(&svc) {
                    s.pending = s.pending.saturating_sub(1);
                    if let Some(ss) = s.sessions.get_mut(&peer) {
                        ss.pending = ss.pending.saturating_sub(1);
                        if ss.pending == 0 && ss.circuits.is_empty() && retry.is_none() {
                            s.sessions.remove(&peer);
                        }
                    }
                }
                // A relay on the way died: the client waits at its rendezvous point, so try
                // once more by a fresh path (the dead relay is suspect now).
                if let Some((r1, rp, tries)) = retry {
                    let live = self
                        .service_mut(&svc)
                        .is_some_and(|s| s.sessions.contains_key(&peer));
                    if !live || !self.service_rend_circuit(ctx, now, svc, peer, &rp, r1, tries + 1)
                    {
                        if let Some(s) = self.service_mut(&svc) {
                            if s.sessions
                                .get(&peer)
                                .is_some_and(|ss| ss.pending == 0 && ss.circuits.is_empty())
                            {
                                s.sessions.remove(&peer);
                            }
                        }
                    }
                }
            }
            Owner::ServiceCirc { svc, peer } => {
                if let Some(s) = self.service_mut(&svc) {
                    if let Some(ss) = s.sessions.get_mut(&peer) {
                        ss.circuits.retain(|c| *c != id);
                        // Flows answer on any live circuit until the client's packets show
                        // their new one.
                        ss.flows.retain(|_, (c, _)| *c != id);
                        if ss.circuits.is_empty() && ss.pending == 0 {
                            s.sessions.remove(&peer);
                        }
                    }
                }
            }
            Owner::ClientIntro { dst } => {
                let failed = self
                    .clients
                    .get_mut(&dst)
                    .and_then(|c| c.intro.as_mut())
                    .filter(|i| i.intro == Some(id))
                    .map(|i| {
                        i.intro = None;
                        !i.acked
                    })
                    .unwrap_or(false);
                if failed {
                    self.client_retry_intro(ctx, now, dst, "intro circuit failed");
                }
            }
            Owner::ClientRend { dst } => {
                if let Some(c) = self.clients.get_mut(&dst) {
                    if c.lingering.as_ref().is_some_and(|l| l.rend == Some(id)) {
                        c.lingering = None;
                    }
                }
                let ours = match c_intro(&mut self.clients, &dst) {
                    Some(i) if i.rend == Some(id) => {
                        i.rend = None;
                        true
                    }
                    _ => false,
                };
                if ours {
                    self.client_retry_intro(ctx, now, dst, "rendezvous circuit failed");
                }
            }
            Owner::ClientJoin { dst } => {
                if let Some(o) = self.clients.get_mut(&dst).and_then(|c| c.open.as_mut()) {
                    o.joins.retain(|j| j.circ != id);
                }
            }
            Owner::ClientCirc { dst } => self.client_lost_circuit(ctx, now, dst, id),
        }
    }

    fn client_lost_circuit(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Millis,
        dst: [u8; 16],
        id: CircId,
    ) {
        let Some(c) = self.clients.get_mut(&dst) else {
            return;
        };
        let Some(o) = c.open.as_mut() else { return };
        o.circuits.retain(|x| x.id != id);
        let active = o
            .flows
            .values()
            .any(|(_, t)| now.saturating_sub(*t) < RESUME_ACTIVE_MS);
        let before = o.flows.len();
        o.flows.retain(|_, (f, _)| *f != id);
        self.stats.flows_moved += (before - o.flows.len()) as u64;
        if o.circuits.is_empty() {
            // No circuit left: the session ends and a new introduction starts (10.8); flow-layer
            // state survives. At once only if a flow carried a packet lately (its next one then
            // finds the session up, not starting): a session nobody uses should not come back
            // by itself (and a twin with the same pseudonym, a restarted node, would otherwise
            // fight it for the service's single session slot).
            self.client_close(ctx, now, dst);
            if let (true, Some(seed)) = (active, self.client_seed) {
                let real = self.real_for.contains(&dst);
                let pseudonym = Pseudonym::for_destination(&seed, &Ipv6Addr::from(dst), real);
                tracing::debug!(
                    at = now,
                    "session lost with active flows: introducing again"
                );
                let _ = self.client_session(ctx, now, dst, pseudonym);
            }
        } else {
            self.client_keep_spare(ctx, now, dst);
        }
    }

    fn sess_message(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Millis,
        id: CircId,
        cmd: u8,
        payload: &[u8],
    ) {
        let Some(owner) = self.owners.get(&id).copied() else {
            return;
        };
        match (owner, C::from_u8(cmd)) {
            (Owner::Intro { svc }, Some(C::IntroEstablished)) => {
                let ok = parse_status(payload) == Ok(status::OK);
                if let Some(ip) = self
                    .service_mut(&svc)
                    .and_then(|s| s.intros.iter_mut().find(|i| i.circ == id))
                {
                    if ok {
                        ip.established = Some(now);
                        ip.listed = true;
                        ip.rebuilds = 0;
                        tracing::debug!(at = now, "intro point established");
                    }
                }
                if ok {
                    self.service_publish(now, svc, false);
                } else {
                    ctx.destroy(now, id);
                }
            }
            (Owner::Intro { svc }, Some(C::Introduce2)) => {
                self.service_on_introduce2(ctx, now, svc, id, payload)
            }
            (Owner::ClientRend { dst }, Some(C::RendezvousEstablished)) => {
                if parse_status(payload) == Ok(status::OK) {
                    if let Some(i) = self.clients.get_mut(&dst).and_then(|c| c.intro.as_mut()) {
                        i.rend_ready = true;
                    }
                    self.client_try_introduce(ctx, now, dst);
                } else {
                    ctx.destroy(now, id);
                }
            }
            (Owner::ClientIntro { dst }, Some(C::IntroduceAck)) => {
                let code = parse_status(payload).unwrap_or(status::REFUSED);
                let Some(c) = self.clients.get_mut(&dst) else {
                    return;
                };
                let Some(i) = c.intro.as_mut() else { return };
                if code == status::OK && !i.acked {
                    i.acked = true;
                    i.acked_at = Some(now);
                    i.intro = None;
                    self.owners.remove(&id);
                    ctx.destroy(now, id);
                } else if code != status::OK {
                    self.stats.intro_acks_refused += 1;
                    if !i.acked {
                        self.client_retry_intro(ctx, now, dst, "intro point refused");
                    }
                }
            }
            (Owner::ClientRend { dst }, Some(C::Rendezvous2)) => {
                self.client_on_rendezvous2(ctx, now, dst, id, payload)
            }
            (Owner::ClientJoin { dst }, Some(C::RendezvousEstablished)) => {
                if parse_status(payload) == Ok(status::OK) {
                    self.client_request_join(ctx, now, dst, id);
                } else {
                    ctx.destroy(now, id);
                }
            }
            (Owner::ClientJoin { dst }, Some(C::Rendezvous2)) => {
                self.client_on_join(ctx, now, dst, id, payload)
            }
            (Owner::ClientCirc { dst }, Some(C::Data)) => {
                self.client_on_data(ctx, now, dst, id, payload)
            }
            (Owner::ServiceCirc { svc, peer }, Some(C::Data)) => {
                self.service_on_data(ctx, now, svc, peer, id, payload)
            }
            _ => {}
        }
    }

    // ---- services ------------------------------------------------------------------------

    fn service_maintain(&mut self, ctx: &mut impl SessionCtx, now: Millis) {
        for k in 0..self.services.len() {
            let Some(s) = self.services.get_mut(k) else {
                continue;
            };
            let svc = s.address;
            // Rotation: retire worn-out intro points (their circuits stay until the
            // descriptors listing them expire; here they simply close with the replacement).
            let retire: Vec<CircId> = s
                .intros
                .iter()
                .filter(|i| {
                    now >= i.retire_at
                        || i.introductions >= INTRO_MAX_INTRODUCTIONS
                        || (i.established.is_none()
                            && now.saturating_sub(i.created) >= INTRO_ESTABLISH_TIMEOUT_MS)
                })
                .map(|i| i.circ)
                .collect();
            let need = NUM_INTRO_POINTS.saturating_sub(s.intros.len() - retire.len());
            let due = now >= s.next_intro_try;
            for id in retire {
                self.owners.remove(&id);
                ctx.destroy(now, id);
                if let Some(s) = self.service_mut(&svc) {
                    s.intros.retain(|i| i.circ != id);
                }
            }
            let mut closing = Vec::new();
            if let Some(s) = self.service_mut(&svc) {
                let old: Vec<[u8; 16]> = s
                    .sessions
                    .iter()
                    .filter(|(_, ss)| now.saturating_sub(ss.established) >= SESSION_MAX_AGE_MS)
                    .map(|(p, _)| *p)
                    .collect();
                for p in old {
                    if let Some(ss) = s.sessions.remove(&p) {
                        closing.extend(ss.circuits);
                    }
                }
            }
            for c in closing {
                self.owners.remove(&c);
                ctx.destroy(now, c);
            }
            if need > 0 && due {
                // All missing ones at once: a service that lost its guard lost every intro
                // point, and clients find it again only once a new descriptor lists new ones.
                for _ in 0..need {
                    self.service_add_intro(ctx, now, svc);
                }
            }
            self.service_publish(now, svc, false);
        }
    }

    fn service_add_intro(&mut self, ctx: &mut impl SessionCtx, now: Millis, svc: [u8; 16]) {
        let used: Vec<[u8; 32]> = self
            .service_mut(&svc)
            .map(|s| {
                s.intros
                    .iter()
                    .filter_map(|i| {
                        i.relay.as_ref().map(|r| *r.identity()).or_else(|| {
                            ctx.path(i.circ)
                                .and_then(|p| p.last())
                                .map(|r| *r.identity())
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        // A relay not yet an intro point of this service, chosen under every path rule.
        let mut path = None;
        for _ in 0..4 {
            match self.sess_path(ctx, now, PathKind::Service(Target::Any(FLAG_RENDEZVOUS))) {
                Ok(p) if p.last().is_some_and(|r| !used.contains(r.identity())) => {
                    self.intro_path_log.clear();
                    path = Some(p);
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    let e = e.to_string();
                    if let Some(held) = self.intro_path_log.hit(now, &e) {
                        tracing::debug!(repeats = held, "intro point path: {e}");
                    }
                    break;
                }
            }
        }
        let Some(s) = self.service_mut(&svc) else {
            return;
        };
        s.next_intro_try = now + INTRO_RETRY_MS;
        let Some(path) = path else { return };
        let Ok(id) = ctx.build(now, Purpose::Intro, path) else {
            return;
        };
        self.owners.insert(id, Owner::Intro { svc });
        let mut seed = [0u8; 32];
        self.secrets.fill_bytes(&mut seed);
        let span = INTRO_POINT_LIFETIME_MAX_MS - INTRO_POINT_LIFETIME_MIN_MS;
        let retire_at = now + INTRO_POINT_LIFETIME_MIN_MS + self.rng.next_u64() % span;
        let auth = SigningKey::from_bytes(&seed);
        let auth_pub = auth.verifying_key().to_bytes();
        let replay = ReplayCache::new(
            crate::session::roles::INTRO_REPLAY_CACHE_MAX,
            ctx.budget().clone(),
        );
        if let Some(s) = self.service_mut(&svc) {
            s.intros.push(IntroPoint {
                circ: id,
                auth,
                auth_pub,
                relay: None,
                established: None,
                replay,
                introductions: 0,
                retire_at,
                created: now,
                listed: false,
                rebuilds: 0,
            });
        }
    }

    /// Schedules descriptors when the set of established intro points changed or the
    /// republish time came (`force`: now), and publishes those that are due. The current
    /// epoch's goes at once; another epoch's at a random later time, each through a circuit of
    /// its own whose last hop carried no other epoch's record of this service lately.
    fn service_publish(&mut self, now: Millis, svc: [u8; 16], force: bool) {
        let rng = &mut self.rng;
        let Some(s) = self.services.iter_mut().find(|s| s.address == svc) else {
            return;
        };
        let mut entries: Vec<IntroEntry> = s
            .intros
            .iter()
            .filter(|i| i.listed)
            .filter_map(|i| {
                let r = i.relay.as_ref()?;
                Some(IntroEntry {
                    identity: *r.identity(),
                    link_key: r.fields().link_key,
                    onion_key: r.fields().onion_key,
                    auth_key: i.auth_pub,
                    endpoints: r.fields().endpoints.iter().take(2).copied().collect(),
                })
            })
            .collect();
        entries.truncate(DESC_MAX_INTRO);
        if entries.is_empty() {
            return;
        }
        // The first descriptor waits a moment for all intro points: one listing a single intro
        // point stays in clients' caches, and a client whose guard is that relay cannot use it.
        let first_up = s.intros.iter().filter_map(|i| i.established).min();
        if s.published_keys.is_empty()
            && entries.len() < NUM_INTRO_POINTS
            && first_up.is_some_and(|t| now.saturating_sub(t) < FIRST_DESC_WAIT_MS)
        {
            return;
        }
        let keys: Vec<[u8; 32]> = entries.iter().map(|e| e.auth_key).collect();
        let now_s = now / 1000;
        let current = epoch(now_s);
        let epochs = epochs_to_publish(now_s);
        let stale =
            s.republish_at.is_none_or(|t| now >= t) || s.publish_retry_at.is_some_and(|t| now >= t);
        if force || stale || keys != s.published_keys {
            let mut queued = Vec::new();
            for &e in &epochs {
                let at = if e == current {
                    now
                } else {
                    // A pending later time stays: repeated changes must not postpone it.
                    let spread = now + rng.gen_range(DESC_SPREAD_MS.0..DESC_SPREAD_MS.1);
                    s.queued
                        .iter()
                        .find(|(q, _)| *q == e)
                        .map_or(spread, |(_, t)| (*t).min(spread))
                };
                queued.push((e, at));
            }
            s.queued = queued;
            s.republish_at =
                Some(now + DESC_REPUBLISH_S * 1000 - rng.gen_range(0..DESC_REPUBLISH_JITTER_MS));
            s.built_at = Some(now);
            s.publish_retry_at = None;
            s.published_keys = keys;
            s.descs.retain(|(e, _)| epochs.contains(e));
            s.revisions.retain(|e, _| epochs.contains(e));
            let keep_after = now.saturating_sub(EPOCH_OVERLAP_S * 1000);
            s.via.retain(|(_, _, at)| *at >= keep_after);
        }
        let due: Vec<u64> = s
            .queued
            .iter()
            .filter(|(_, at)| *at <= now)
            .map(|(e, _)| *e)
            .collect();
        if due.is_empty() {
            return;
        }
        s.queued.retain(|(_, at)| *at > now);
        let mut sends = Vec::new();
        for e in due {
            let last = s.revisions.get(&e).copied();
            // The first revision of a run is the time itself, so that a restarted service
            // always publishes above its own older records.
            let at = match last {
                Some(_) => now.saturating_sub(rng.gen_range(0..DESC_REVISION_JITTER_MS)),
                None => now,
            };
            let revision = revision_for(at, last);
            s.revisions.insert(e, revision);
            let mut salt = [0u8; 16];
            self.secrets.fill_bytes(&mut salt);
            let p = Publication {
                revision,
                expires: expires_for(now_s, e),
                salt,
            };
            match Descriptor::build(&s.signing, e, &entries, p) {
                Ok(d) => {
                    s.descs.retain(|(de, _)| *de != e);
                    s.descs.push((e, d.clone()));
                    sends.push((e, d));
                }
                Err(err) => tracing::warn!("descriptor: {err}"),
            }
        }
        for (e, d) in sends {
            tracing::debug!(at = now, epoch = e, "publishing a descriptor");
            let avoid = self.service_publish_avoid(svc, e);
            self.dht_requests.push_back(DhtRequest::Publish {
                svc,
                epoch: e,
                record: d.bytes().to_vec(),
                avoid,
            });
        }
    }

    /// Relays a publication of `svc` for epoch `e` must not end at: the last hops that carried
    /// its records of other epochs (the node adds those its other running publications go
    /// to, [`SessionLayer::publications_of`]).
    fn service_publish_avoid(&self, svc: [u8; 16], e: u64) -> Vec<[u8; 32]> {
        let mut avoid: Vec<[u8; 32]> = self
            .services
            .iter()
            .filter(|s| s.address == svc)
            .flat_map(|s| s.via.iter())
            .filter(|(ve, _, _)| *ve != e)
            .map(|(_, r, _)| *r)
            .collect();
        avoid.sort_unstable();
        avoid.dedup();
        avoid
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
            .filter(|(_, (s, e))| *s == svc && *e != epoch)
            .map(|(t, _)| *t)
            .collect()
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
                self.lookups.insert(token, *dst);
            }
            DhtRequest::Publish { svc, epoch, .. } => {
                self.publishes.insert(token, (*svc, *epoch));
            }
        }
    }

    fn service_on_introduce2(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Millis,
        svc: [u8; 16],
        id: CircId,
        payload: &[u8],
    ) {
        let Ok(intro) = Introduce1::parse(payload) else {
            self.stats.intro_rejected += 1;
            return;
        };
        let total = self.session_count();
        let secrets = &mut self.secrets;
        let stats = &mut self.stats;
        let Some(s) = self.services.iter_mut().find(|s| s.address == svc) else {
            return;
        };
        let Some(ip) = s.intros.iter_mut().find(|i| i.circ == id) else {
            return;
        };
        if intro.auth_key != ip.auth_pub {
            stats.intro_rejected += 1;
            return;
        }
        let client = match s.ident.read_msg1(&ip.auth_pub, &intro.msg1) {
            Ok(c) => c,
            Err(_) => {
                stats.intro_rejected += 1;
                return;
            }
        };
        if ip.replay.contains(client.client_ephemeral()) {
            stats.intro_replays += 1;
            return;
        }
        if s.pending >= MAX_PENDING_INTRODUCTIONS || total >= MAX_SESSIONS || !s.rate.take(now) {
            stats.intro_limited += 1;
            return;
        }
        if ip.replay.insert(*client.client_ephemeral()).is_err() {
            stats.intro_limited += 1;
            return;
        }
        ip.introductions += 1;
        let Ok(pt) = crate::session::intro::IntroPlaintext::parse(client.intro_plaintext()) else {
            stats.intro_rejected += 1;
            return;
        };
        let peer = addr16(client.address());
        let Ok((keys, msg2)) = client.accept(secrets, &RendPlaintext::default().emit()) else {
            stats.intro_rejected += 1;
            return;
        };
        let Some(charge) = ctx.budget().try_charge(SESSION_COST) else {
            stats.intro_limited += 1;
            return;
        };
        let r1 = Rendezvous1 {
            cookie: pt.cookie.clone(),
            hs: RendHs::Ik(msg2),
        };
        // A returning client replaces its old session (its circuits close with it).
        let old = s.sessions.insert(
            peer,
            ServiceSession {
                chan: SessionChannel::service(&keys),
                keys,
                circuits: Vec::new(),
                pending: 0,
                flows: HashMap::new(),
                established: now,
                _charge: charge,
            },
        );
        stats.service_sessions += 1;
        if let Some(old) = old {
            for c in old.circuits {
                self.owners.remove(&c);
                ctx.destroy(now, c);
            }
        }
        self.service_join_rendezvous(ctx, now, svc, peer, &pt.rendezvous_link_spec, r1);
    }

    /// Extends a stem to the client's rendezvous point and sends RENDEZVOUS1 when there.
    fn service_join_rendezvous(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Millis,
        svc: [u8; 16],
        peer: [u8; 16],
        link_spec: &[u8],
        r1: Rendezvous1,
    ) -> bool {
        let Ok(spec) = LinkSpec::parse(link_spec) else {
            return false;
        };
        self.service_rend_circuit(ctx, now, svc, peer, &spec.identity, r1, 1)
    }

    /// A circuit to the rendezvous point `rp` that sends `r1` when there (try `tries`).
    // The node's parts come as `ctx`: one argument more than clippy's default limit.
    #[allow(clippy::too_many_arguments)]
    fn service_rend_circuit(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Millis,
        svc: [u8; 16],
        peer: [u8; 16],
        rp: &[u8; 32],
        r1: Rendezvous1,
        tries: u8,
    ) -> bool {
        // The rendezvous point must be a relay we know (its signed record gives the onion key).
        let Some(target) = ctx.view().get(rp).cloned() else {
            tracing::debug!("rendezvous point not in our view");
            return false;
        };
        let owner = Owner::ServiceRend { svc, peer };
        match self.sess_circuit_to(ctx, now, true, &target, Purpose::Rendezvous, owner) {
            Ok(id) => {
                self.pending_r1.insert(id, (r1, *rp, tries));
                if let Some(s) = self.service_mut(&svc) {
                    s.pending += 1;
                    if let Some(ss) = s.sessions.get_mut(&peer) {
                        ss.pending += 1;
                    }
                }
                true
            }
            Err(e) => {
                tracing::debug!("rendezvous circuit: {e}");
                false
            }
        }
    }

    fn service_rend_ready(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Millis,
        id: CircId,
        svc: [u8; 16],
        peer: [u8; 16],
    ) {
        let r1 = self.pending_r1.remove(&id);
        let Some(s) = self.service_mut(&svc) else {
            return;
        };
        s.pending = s.pending.saturating_sub(1);
        let live = match s.sessions.get_mut(&peer) {
            Some(ss) => {
                ss.pending = ss.pending.saturating_sub(1);
                true
            }
            None => false,
        };
        let sent = match (&r1, live) {
            (Some((r1, _, _)), true) => ctx.send(id, C::Rendezvous1, &r1.emit()).is_ok(),
            _ => false,
        };
        if !sent {
            self.owners.remove(&id);
            ctx.destroy(now, id);
            return;
        }
        ctx.set_purpose(id, Purpose::Flow);
        self.owners.insert(id, Owner::ServiceCirc { svc, peer });
        if let Some(ss) = self
            .service_mut(&svc)
            .and_then(|s| s.sessions.get_mut(&peer))
        {
            ss.circuits.push(id);
        }
    }

    fn service_send(
        &mut self,
        ctx: &mut impl SessionCtx,
        _now: Millis,
        svc: usize,
        dst: [u8; 16],
        packet: &[u8],
    ) -> Result<(), SendError> {
        let Some(s) = self.services.get_mut(svc) else {
            return Err(SendError::Unreachable("no such service".into()));
        };
        let Some(ss) = s.sessions.get_mut(&dst) else {
            return Err(SendError::Unreachable("no session with this client".into()));
        };
        let flow = flow_of(packet, false);
        let circ = flow
            .and_then(|f| ss.flows.get(&f))
            .map(|(c, _)| *c)
            .filter(|c| ss.circuits.contains(c))
            .or_else(|| ss.circuits.last().copied());
        let Some(circ) = circ else {
            return Err(SendError::Unreachable("session has no live circuit".into()));
        };
        let mut buf = [0u8; E2E_FRAME_LEN];
        let n = seal(&mut ss.chan, &E2eMessage::Packet(packet), &mut buf)
            .ok_or_else(|| SendError::Unreachable("packet does not fit a frame".into()))?;
        ctx.send(circ, C::Data, buf.get(..n).unwrap_or(&[]))
            .map_err(|e| SendError::Unreachable(e.to_string()))
    }

    fn service_on_data(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Millis,
        svc: [u8; 16],
        peer: [u8; 16],
        id: CircId,
        payload: &[u8],
    ) {
        let mut buf = [0u8; E2E_FRAME_LEN];
        let Some(frame) = buf.get_mut(..payload.len()) else {
            return;
        };
        frame.copy_from_slice(payload);
        let stats = &mut self.stats;
        let Some(s) = self.services.iter_mut().find(|s| s.address == svc) else {
            return;
        };
        let Some(ss) = s.sessions.get_mut(&peer) else {
            return;
        };
        let Ok(pt) = ss.chan.open_in_place(frame) else {
            stats.frames_refused += 1;
            return;
        };
        let Ok(msg) = E2eMessage::parse(pt) else {
            stats.frames_refused += 1;
            return;
        };
        let mut reply = None;
        let mut join = None;
        match msg {
            E2eMessage::Packet(p) => {
                // 10.9: source is the session peer, destination this service.
                match addresses(p) {
                    Some((src, dst)) if src == peer && dst == svc && length_consistent(p) => {
                        if let Some(f) = flow_of(p, true) {
                            if ss.flows.len() >= MAX_FLOWS_PER_SESSION && !ss.flows.contains_key(&f)
                            {
                                evict_lru(&mut ss.flows);
                            }
                            ss.flows.insert(f, (id, now));
                        }
                        ctx.deliver_packet(p);
                    }
                    _ => stats.packets_refused += 1,
                }
            }
            E2eMessage::Ping(x) => reply = Some(E2eMessage::Pong(x)),
            E2eMessage::NewCircuit(nc) => {
                let refused = ss.circuits.len() + ss.pending >= MAX_SESSION_CIRCUITS
                    || s.pending >= MAX_PENDING_INTRODUCTIONS;
                if refused {
                    reply = Some(E2eMessage::NewCircuitRefused {
                        request_id: nc.request_id,
                        reason: 1,
                    });
                } else {
                    let cookie = RendCookie(*nc.cookie);
                    let mac = ss.keys.join_mac(nc.cookie);
                    join = Some((
                        *nc.rendezvous_link_spec,
                        Rendezvous1 {
                            cookie,
                            hs: RendHs::Join(mac),
                        },
                    ));
                }
            }
            _ => {}
        }
        if let Some(r) = reply {
            let mut out = [0u8; E2E_FRAME_LEN];
            if let Some(n) = seal(&mut ss.chan, &r, &mut out) {
                let _ = ctx.send(id, C::Data, out.get(..n).unwrap_or(&[]));
            }
        }
        if let Some((spec, r1)) = join {
            self.service_join_rendezvous(ctx, now, svc, peer, &spec, r1);
        }
    }

    // ---- clients -------------------------------------------------------------------------

    /// Finds or starts the client session to `dst`.
    fn client_session(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Millis,
        dst: [u8; 16],
        pseudonym: Pseudonym,
    ) -> Result<(), SendError> {
        if self.clients.contains_key(&dst) {
            return Ok(());
        }
        if self.session_count() >= MAX_SESSIONS {
            return Err(unreachable(ctx, dst, "session limit reached"));
        }
        let Some(charge) = ctx.budget().try_charge(SESSION_COST) else {
            return Err(unreachable(ctx, dst, "memory budget"));
        };
        self.clients.insert(
            dst,
            ClientSession {
                pseudonym,
                started: now,
                queue: VecDeque::new(),
                pings: Vec::new(),
                lookup: None,
                content: None,
                tried: Vec::new(),
                rounds: 0,
                retry_at: None,
                spare_rend: None,
                intro: None,
                lingering: None,
                open: None,
                _charge: charge,
            },
        );
        self.client_find_descriptor(ctx, now, dst);
        Ok(())
    }

    fn client_fail(&mut self, ctx: &mut impl SessionCtx, now: Millis, dst: [u8; 16], why: &str) {
        if let Some(c) = self.clients.remove(&dst) {
            let spare = c.spare_rend.map(|(id, _, _)| id);
            let lingering = c.lingering.and_then(|l| l.rend);
            if let Some(i) = c.intro {
                for id in [i.rend, i.intro].into_iter().flatten() {
                    self.owners.remove(&id);
                    ctx.destroy(now, id);
                }
            }
            for id in [spare, lingering].into_iter().flatten() {
                self.owners.remove(&id);
                ctx.destroy(now, id);
            }
            for (id, (d, _)) in self.pings.clone() {
                if d == dst {
                    self.pings.remove(&id);
                }
            }
        }
        tracing::debug!(why, "destination unreachable");
        unreachable(ctx, dst, why);
    }

    /// Drops the cached descriptors of `dst` (both epochs a lookup would ask for).
    fn forget_descriptor(&mut self, now: Millis, dst: &[u8; 16]) {
        let (cur, other) = epochs_to_look_up(now / 1000);
        for e in [Some(cur), other].into_iter().flatten() {
            self.desc_cache.remove(&desc_index(dst, e));
        }
    }

    /// A valid cached descriptor for `dst` (current epoch first), opened.
    fn cached_content(&self, now: Millis, dst: &[u8; 16]) -> Option<DescriptorContent> {
        let now_s = now / 1000;
        let (cur, other) = epochs_to_look_up(now_s);
        [Some(cur), other].into_iter().flatten().find_map(|e| {
            let (d, _) = self.desc_cache.get(&desc_index(dst, e))?;
            if d.expires() <= now_s {
                return None;
            }
            d.open(dst, e).ok()
        })
    }

    fn client_find_descriptor(&mut self, ctx: &mut impl SessionCtx, now: Millis, dst: [u8; 16]) {
        if let Some(content) = self.cached_content(now, &dst) {
            if let Some(c) = self.clients.get_mut(&dst) {
                c.content = Some(content);
                c.lookup = None;
            }
            self.client_start_intro(ctx, now, dst);
            return;
        }
        if let Some(c) = self.clients.get_mut(&dst) {
            c.lookup = Some(now);
        }
        self.client_lookup_descriptor(now, dst);
    }

    /// The outcome of a DHT query the session layer asked for (via the last hops it went to);
    /// `false` if `token` is not one of ours.
    pub fn on_dht(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Millis,
        token: u64,
        answer: DhtAnswer<'_>,
        via: Vec<[u8; 32]>,
    ) -> bool {
        if let Some((svc, e)) = self.publishes.remove(&token) {
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
        let Some(dst) = self.lookups.remove(&token) else {
            return false;
        };
        self.client_lookup_done(ctx, now, dst, answer);
        true
    }

    fn client_lookup_done(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Millis,
        dst: [u8; 16],
        answer: DhtAnswer<'_>,
    ) {
        if let DhtAnswer::Records(records) = answer {
            for r in records {
                if let Err(e) = self.cache_descriptor(ctx.budget(), now, r) {
                    tracing::debug!("descriptor from the DHT: {e}");
                }
            }
        }
        let content = self.cached_content(now, &dst);
        let Some(c) = self.clients.get_mut(&dst) else {
            return;
        };
        // A refresh (or a lookup that already timed out) has no lookup time: only the cache
        // changed, and the outcome is consumed.
        if c.lookup.is_none() {
            return;
        }
        c.lookup = None;
        match content {
            Some(content) => {
                c.content = Some(content);
                self.client_start_intro(ctx, now, dst);
            }
            None => {
                let why = match answer {
                    DhtAnswer::Failed(e) => format!("descriptor lookup failed: {e}"),
                    _ => "no descriptor for this address".to_string(),
                };
                // The first lookup's failure is final (an unknown address fails fast); one
                // between rounds is tried again (the service may be republishing).
                if c.rounds > 0 {
                    self.client_next_round(ctx, now, dst, &why);
                } else {
                    self.client_fail(ctx, now, dst, &why);
                }
            }
        }
    }

    fn client_start_intro(&mut self, ctx: &mut impl SessionCtx, now: Millis, dst: [u8; 16]) {
        let Some(c) = self.clients.get_mut(&dst) else {
            return;
        };
        let Some(content) = c.content.clone() else {
            return;
        };
        if c.tried.len() >= INTRO_ATTEMPTS {
            self.client_next_round(ctx, now, dst, "introductions failed");
            return;
        }
        let me = ctx.identity();
        let suspects = &self.suspects;
        let mut candidates: Vec<IntroEntry> = content
            .intro_points
            .iter()
            // Ourselves (a client that is a relay can be the intro point): no circuit to us.
            .filter(|e| !c.tried.contains(&e.auth_key) && e.identity != me)
            .cloned()
            .collect();
        candidates.shuffle(&mut self.rng);
        // Intro points behind relays that just stopped answering last (a circuit to one waits
        // for its EXTEND to fail), and our own guards after the rest (no pooled stem reaches
        // them: the circuit is built from scratch through another guard).
        let guards: Vec<[u8; 32]> = ctx.guards().list().iter().map(|g| g.identity).collect();
        candidates.sort_by_key(|e| {
            (
                suspects.get(&e.identity).is_some_and(|t| now < *t),
                guards.contains(&e.identity),
            )
        });
        tracing::trace!(
            candidates = ?candidates
                .iter()
                .map(|e| (hex8(&e.identity), guards.contains(&e.identity)))
                .collect::<Vec<_>>(),
            "intro point candidates"
        );
        let Some(entry) = candidates.into_iter().next() else {
            // Every intro point of this descriptor was tried (or cannot be used from here). A
            // service publishes a new revision as its intro points come and go, so the next
            // round looks the descriptor up again instead of trying the cached one until it
            // expires.
            self.client_next_round(ctx, now, dst, "no intro point left to try");
            return;
        };
        c.tried.push(entry.auth_key);
        tracing::debug!(
            at = now,
            intro_point = %hex8(&entry.identity),
            kept_rend = c.spare_rend.is_some(),
            "introducing"
        );
        // A rendezvous circuit kept from the last try (its cookie is registered) saves a build.
        let kept = c
            .spare_rend
            .take()
            .filter(|(id, _, _)| ctx.path(*id).is_some());
        let cookie = match &kept {
            Some((_, cookie, _)) => cookie.clone(),
            None => RendCookie::generate(&mut self.secrets),
        };
        c.intro = Some(Introduction {
            started: now,
            cookie,
            rend: None,
            rend_ready: false,
            intro: None,
            intro_ready: false,
            entry: entry.clone(),
            service_key: content.service_key,
            hs: None,
            sent_at: None,
            acked: false,
            acked_at: None,
        });
        if let Some((id, _, ready)) = kept {
            self.client_set_rend(dst, id);
            if let Some(i) = c_intro(&mut self.clients, &dst) {
                i.rend_ready = ready;
            }
        }
        // The rendezvous point: a pooled circuit (ends at a random RENDEZVOUS relay).
        let rend = if let Some(id) = c_intro(&mut self.clients, &dst).and_then(|i| i.rend) {
            Ok(id)
        } else {
            match self.sess_take_pool(ctx, now, &[]) {
                Some(id) => {
                    self.owners.insert(id, Owner::ClientRend { dst });
                    self.client_set_rend(dst, id);
                    self.client_establish_rendezvous(ctx, id);
                    Ok(id)
                }
                None => self.sess_build(
                    ctx,
                    now,
                    PathKind::Client(Target::Any(FLAG_RENDEZVOUS)),
                    Purpose::Rendezvous,
                    Owner::ClientRend { dst },
                ),
            }
        };
        match rend {
            Ok(id) => self.client_set_rend(dst, id),
            Err(e) => {
                self.client_next_round(ctx, now, dst, &format!("rendezvous circuit: {e}"));
                return;
            }
        }
        // The intro point: a stem extended to it. Its record must be in our view (the
        // descriptor's entry names it; the signed record gives the current onion key).
        let record = ctx
            .view()
            .get(&entry.identity)
            .filter(|r| r.fields().onion_key == entry.onion_key)
            .cloned();
        let intro = match record {
            Some(r) => self.sess_circuit_to(
                ctx,
                now,
                false,
                &r,
                Purpose::Intro,
                Owner::ClientIntro { dst },
            ),
            None => Err("intro point not in our view".to_string()),
        };
        match intro {
            Ok(id) => {
                if let Some(i) = self.clients.get_mut(&dst).and_then(|c| c.intro.as_mut()) {
                    i.intro = Some(id);
                }
            }
            Err(e) => self.client_retry_intro(ctx, now, dst, &e),
        }
    }

    fn client_set_rend(&mut self, dst: [u8; 16], id: CircId) {
        if let Some(i) = self.clients.get_mut(&dst).and_then(|c| c.intro.as_mut()) {
            i.rend = Some(id);
        }
    }

    fn client_retry_intro(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Millis,
        dst: [u8; 16],
        why: &str,
    ) {
        tracing::debug!(
            at = now,
            why,
            "introduction failed; trying another intro point"
        );
        self.client_drop_intro(ctx, now, dst);
        self.client_start_intro(ctx, now, dst);
    }

    /// Ends the current introduction attempt. Its rendezvous circuit is kept for the next one
    /// if the service cannot have seen the attempt (no INTRODUCE_ACK yet): a late RENDEZVOUS1
    /// for an abandoned handshake would otherwise arrive on it.
    fn client_drop_intro(&mut self, ctx: &mut impl SessionCtx, now: Millis, dst: [u8; 16]) {
        let Some(c) = self.clients.get_mut(&dst) else {
            return;
        };
        let Some(i) = c.intro.take() else { return };
        if i.acked && i.rend.is_some() && i.hs.is_some() {
            // The service has it: let it answer late while the next attempt runs.
            let old = c.lingering.replace(i).and_then(|o| o.rend);
            if let Some(id) = old {
                self.owners.remove(&id);
                ctx.destroy(now, id);
            }
            return;
        }
        let mut close: Vec<CircId> = i.intro.into_iter().collect();
        // Only a ready one: a rendezvous circuit still building when the attempt gave up may
        // run through a dead relay, and would spoil every later attempt too.
        match i.rend {
            Some(r) if i.rend_ready && !i.acked && i.hs.is_none() && c.spare_rend.is_none() => {
                c.spare_rend = Some((r, i.cookie, true));
            }
            Some(r) => close.push(r),
            None => {}
        }
        for id in close {
            self.owners.remove(&id);
            ctx.destroy(now, id);
        }
    }

    /// Every intro point of the descriptor failed: look it up again after a short wait (the
    /// service may have replaced them), unless the session's setup time would be over.
    fn client_next_round(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Millis,
        dst: [u8; 16],
        why: &str,
    ) {
        self.client_drop_intro(ctx, now, dst);
        let Some(c) = self.clients.get_mut(&dst) else {
            return;
        };
        let delay = INTRO_ROUND_DELAY_MS
            .saturating_mul(1 << c.rounds.min(8))
            .min(INTRO_ROUND_DELAY_MAX_MS);
        if now + delay >= c.started + SESSION_SETUP_TIMEOUT_MS {
            // The next session looks the descriptor up afresh.
            self.forget_descriptor(now, &dst);
            self.client_fail(ctx, now, dst, why);
            return;
        }
        tracing::debug!(
            at = now,
            why,
            round = c.rounds,
            "introductions failed; trying again after a pause"
        );
        c.rounds += 1;
        c.tried.clear();
        c.content = None;
        c.retry_at = Some(now + delay);
        // The next round tries the cached descriptor again (a service rebuilds its circuits to
        // the same intro points, so it usually works once the service noticed) while a lookup
        // refreshes it meanwhile (a service that had to replace intro points republishes; a
        // DHT that just lost relays can take tens of seconds to answer, so not waiting for it).
        self.client_lookup_descriptor(now, dst);
    }

    /// Looks the descriptor of `dst` up in the DHT. Its answer starts an introduction only if
    /// the session is waiting for it (`lookup` set); otherwise it just refreshes the cache.
    fn client_lookup_descriptor(&mut self, now: Millis, dst: [u8; 16]) {
        let (cur, _) = epochs_to_look_up(now / 1000);
        self.dht_requests.push_back(DhtRequest::Lookup {
            dst,
            key: desc_index(&dst, cur),
        });
    }

    fn client_try_introduce(&mut self, ctx: &mut impl SessionCtx, now: Millis, dst: [u8; 16]) {
        let hooks = self.hooks.clone();
        let Some(c) = self.clients.get_mut(&dst) else {
            return;
        };
        let Some(i) = c.intro.as_mut() else { return };
        if !(i.rend_ready && i.intro_ready) || i.hs.is_some() {
            return;
        }
        let (Some(rend), Some(intro)) = (i.rend, i.intro) else {
            return;
        };
        let Some(rp) = ctx.path(rend).and_then(|p| p.last()) else {
            return;
        };
        let Ok(spec) = LinkSpec::of_record(rp).emit() else {
            return;
        };
        let pt = IntroPlaintext {
            cookie: i.cookie.clone(),
            rendezvous_link_spec: spec,
            rendezvous_onion_key: rp.fields().onion_key,
            tlv: [0u8; INTRO_TLV_LEN],
        }
        .emit();
        let made = match hooks.claim_pseudonym {
            Some(claim) => ClientHandshake::forged(
                &mut self.secrets,
                &i.service_key,
                &i.entry.auth_key,
                &claim,
                &c.pseudonym,
                &pt,
            ),
            None => ClientHandshake::new(
                &mut self.secrets,
                &i.service_key,
                &i.entry.auth_key,
                &c.pseudonym,
                &pt,
            ),
        };
        let Ok((hs, msg1)) = made else {
            self.client_retry_intro(ctx, now, dst, "handshake");
            return;
        };
        i.hs = Some(hs);
        i.sent_at = Some(now);
        let body = Introduce1 {
            auth_key: i.entry.auth_key,
            msg1,
        }
        .emit();
        let _ = ctx.send(intro, C::Introduce1, &body);
        if hooks.send_introduce_twice {
            let _ = ctx.send(intro, C::Introduce1, &body);
        }
    }

    fn client_on_rendezvous2(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Millis,
        dst: [u8; 16],
        id: CircId,
        payload: &[u8],
    ) {
        let Some(c) = self.clients.get_mut(&dst) else {
            return;
        };
        let msg2 = match Rendezvous2::parse(payload).map(|r| r.hs) {
            Ok(RendHs::Ik(m)) => m,
            _ => return,
        };
        let current = c.intro.as_ref().is_some_and(|i| i.rend == Some(id));
        let late = c.lingering.as_ref().is_some_and(|i| i.rend == Some(id));
        let hs = if current {
            c.intro.as_mut().and_then(|i| i.hs.take())
        } else if late {
            c.lingering.as_mut().and_then(|i| i.hs.take())
        } else {
            None
        };
        let Some(hs) = hs else { return };
        let keys = match hs.finish(&msg2) {
            Ok((keys, _)) => keys,
            Err(e) if current => {
                self.client_retry_intro(ctx, now, dst, &format!("message 2: {e}"));
                return;
            }
            Err(_) => {
                c.lingering = None;
                self.owners.remove(&id);
                ctx.destroy(now, id);
                return;
            }
        };
        // Whichever attempt succeeded, the other one ends.
        let (won, other) = if current {
            (c.intro.take(), c.lingering.take())
        } else {
            (c.lingering.take(), c.intro.take())
        };
        let mut close: Vec<CircId> = won.and_then(|i| i.intro).into_iter().collect();
        if let Some(o) = other {
            close.extend([o.intro, o.rend].into_iter().flatten());
        }
        for x in close {
            self.owners.remove(&x);
            ctx.destroy(now, x);
        }
        tracing::debug!(
            at = now,
            setup_ms = now.saturating_sub(c.started),
            rounds = c.rounds,
            "client session open"
        );
        c.open = Some(OpenSession {
            chan: SessionChannel::client(&keys),
            keys,
            established: now,
            circuits: vec![SessCirc {
                id,
                unanswered_since: None,
                probe: None,
            }],
            flows: HashMap::new(),
            joins: Vec::new(),
            next_request: 1,
        });
        self.stats.client_sessions += 1;
        self.owners.insert(id, Owner::ClientCirc { dst });
        ctx.set_purpose(id, Purpose::Flow);
        let (queue, pings) = match self.clients.get_mut(&dst) {
            Some(c) => (std::mem::take(&mut c.queue), std::mem::take(&mut c.pings)),
            None => return,
        };
        for p in pings {
            if let Some(circ) = self.client_pick_circuit(ctx, now, dst, None) {
                self.client_send_msg(ctx, now, dst, circ, &E2eMessage::Ping(p));
            }
        }
        for p in queue {
            let flow = flow_of(&p, true);
            if let Some(circ) = self.client_pick_circuit(ctx, now, dst, flow) {
                self.client_send_msg(ctx, now, dst, circ, &E2eMessage::Packet(&p));
            }
            ctx.recycle_packet(p);
        }
        self.client_keep_spare(ctx, now, dst);
    }

    fn client_send(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Millis,
        dst: [u8; 16],
        pseudonym: Pseudonym,
        packet: &[u8],
    ) -> Result<(), SendError> {
        self.client_session(ctx, now, dst, pseudonym)?;
        let open = match self.clients.get(&dst) {
            Some(c) => c.open.is_some(),
            // It failed at once (the lookup answered synchronously).
            None => return Err(SendError::Unreachable("no session could be made".into())),
        };
        if !open {
            let mut buf = ctx.packet_buf();
            buf.extend_from_slice(packet);
            if let Some(c) = self.clients.get_mut(&dst) {
                if c.queue.len() >= MAX_QUEUED_PACKETS {
                    c.queue.pop_front();
                }
                c.queue.push_back(buf);
            }
            return Ok(());
        }
        let flow = flow_of(packet, true);
        let Some(circ) = self.client_pick_circuit(ctx, now, dst, flow) else {
            return Err(SendError::Unreachable("session has no circuit".into()));
        };
        if self.client_send_msg(ctx, now, dst, circ, &E2eMessage::Packet(packet)) {
            Ok(())
        } else {
            Err(SendError::Unreachable("circuit refused the frame".into()))
        }
    }

    /// The circuit for a packet of `flow`: its own, else the spare (a circuit no flow uses),
    /// else the least loaded. Starts a JOIN when the spare is taken.
    fn client_pick_circuit(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Millis,
        dst: [u8; 16],
        flow: Option<FlowKey>,
    ) -> Option<CircId> {
        let o = self.clients.get_mut(&dst)?.open.as_mut()?;
        if let Some(f) = flow {
            if let Some((c, t)) = o.flows.get_mut(&f) {
                let c = *c;
                if o.circuits.iter().any(|x| x.id == c) {
                    *t = now;
                    return Some(c);
                }
            }
        }
        let load = |id: CircId, flows: &HashMap<FlowKey, (CircId, Millis)>| {
            flows.values().filter(|(c, _)| *c == id).count()
        };
        let pick = o
            .circuits
            .iter()
            .map(|c| (load(c.id, &o.flows), c.id))
            .min()
            .map(|(_, id)| id)?;
        if let Some(f) = flow {
            if o.flows.len() >= MAX_FLOWS_PER_SESSION {
                evict_lru(&mut o.flows);
            }
            o.flows.insert(f, (pick, now));
            self.client_keep_spare(ctx, now, dst);
        }
        Some(pick)
    }

    /// Keeps `SESSION_SPARE_CIRCUITS` joined circuits without flows (10.8).
    fn client_keep_spare(&mut self, ctx: &mut impl SessionCtx, now: Millis, dst: [u8; 16]) {
        let Some(o) = self.clients.get_mut(&dst).and_then(|c| c.open.as_mut()) else {
            return;
        };
        let spare = o
            .circuits
            .iter()
            .filter(|c| !o.flows.values().any(|(f, _)| *f == c.id))
            .count();
        if spare + o.joins.len() >= SESSION_SPARE_CIRCUITS
            || o.circuits.len() + o.joins.len() >= MAX_SESSION_CIRCUITS
        {
            return;
        }
        let cookie = RendCookie::generate(&mut self.secrets);
        let avoid = self.session_relays(ctx, &dst);
        let id = match self.sess_take_pool(ctx, now, &avoid) {
            Some(id) => {
                self.owners.insert(id, Owner::ClientJoin { dst });
                Ok(id)
            }
            None => self.sess_build(
                ctx,
                now,
                PathKind::Client(Target::Any(FLAG_RENDEZVOUS)),
                Purpose::Rendezvous,
                Owner::ClientJoin { dst },
            ),
        };
        let Ok(id) = id else { return };
        let ready = ctx.ready_ids(Purpose::Rendezvous).contains(&id);
        if let Some(o) = self.clients.get_mut(&dst).and_then(|c| c.open.as_mut()) {
            o.joins.push(Join {
                circ: id,
                cookie,
                started: now,
                requested: false,
            });
        }
        if ready {
            self.client_establish_rendezvous(ctx, id);
        }
    }

    fn client_request_join(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Millis,
        dst: [u8; 16],
        id: CircId,
    ) {
        let Some(rp) = ctx.path(id).and_then(|p| p.last()).cloned() else {
            return;
        };
        let Ok(spec) = LinkSpec::of_record(&rp).emit() else {
            return;
        };
        let Some(o) = self.clients.get_mut(&dst).and_then(|c| c.open.as_mut()) else {
            return;
        };
        let Some(j) = o.joins.iter_mut().find(|j| j.circ == id) else {
            return;
        };
        j.requested = true;
        let cookie = j.cookie.0;
        let request_id = o.next_request;
        o.next_request = o.next_request.wrapping_add(1);
        let onion = rp.fields().onion_key;
        let msg = E2eMessage::NewCircuit(crate::session::frame::NewCircuit {
            request_id,
            cookie: &cookie,
            rendezvous_link_spec: &spec,
            rendezvous_onion_key: &onion,
        });
        if let Some(circ) = self.client_pick_circuit(ctx, now, dst, None) {
            self.client_send_msg(ctx, now, dst, circ, &msg);
        }
    }

    fn client_on_join(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Millis,
        dst: [u8; 16],
        id: CircId,
        payload: &[u8],
    ) {
        let Some(o) = self.clients.get_mut(&dst).and_then(|c| c.open.as_mut()) else {
            return;
        };
        let Some(pos) = o.joins.iter().position(|j| j.circ == id) else {
            return;
        };
        let ok = match Rendezvous2::parse(payload).map(|r| r.hs) {
            Ok(RendHs::Join(mac)) => o
                .joins
                .get(pos)
                .is_some_and(|j| o.keys.verify_join_mac(&j.cookie.0, &mac)),
            _ => false,
        };
        o.joins.remove(pos);
        if !ok {
            self.owners.remove(&id);
            ctx.destroy(now, id);
            return;
        }
        o.circuits.push(SessCirc {
            id,
            unanswered_since: None,
            probe: None,
        });
        self.stats.joins += 1;
        self.owners.insert(id, Owner::ClientCirc { dst });
        ctx.set_purpose(id, Purpose::Flow);
    }

    /// Seals and sends an e2e message on one of the session's circuits.
    fn client_send_msg(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Millis,
        dst: [u8; 16],
        circ: CircId,
        msg: &E2eMessage<'_>,
    ) -> bool {
        let Some(o) = self.clients.get_mut(&dst).and_then(|c| c.open.as_mut()) else {
            return false;
        };
        let mut buf = [0u8; E2E_FRAME_LEN];
        let Some(n) = seal(&mut o.chan, msg, &mut buf) else {
            return false;
        };
        if let Some(c) = o.circuits.iter_mut().find(|c| c.id == circ) {
            c.unanswered_since.get_or_insert(now);
        }
        ctx.send(circ, C::Data, buf.get(..n).unwrap_or(&[])).is_ok()
    }

    fn client_on_data(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Millis,
        dst: [u8; 16],
        id: CircId,
        payload: &[u8],
    ) {
        let mut buf = [0u8; E2E_FRAME_LEN];
        let Some(frame) = buf.get_mut(..payload.len()) else {
            return;
        };
        frame.copy_from_slice(payload);
        let stats = &mut self.stats;
        let Some(c) = self.clients.get_mut(&dst) else {
            return;
        };
        let own = addr16(c.pseudonym.address());
        let Some(o) = c.open.as_mut() else { return };
        let Ok(pt) = o.chan.open_in_place(frame) else {
            stats.frames_refused += 1;
            return;
        };
        if let Some(sc) = o.circuits.iter_mut().find(|x| x.id == id) {
            sc.unanswered_since = None;
        }
        let Ok(msg) = E2eMessage::parse(pt) else {
            stats.frames_refused += 1;
            return;
        };
        match msg {
            E2eMessage::Packet(p) => match addresses(p) {
                Some((src, d)) if src == dst && d == own && length_consistent(p) => {
                    // The service moves a flow off a circuit it saw die (the client may not
                    // know yet: a killed relay sends nothing): answer where it arrives.
                    if let Some((c, t)) = flow_of(p, false).and_then(|f| o.flows.get_mut(&f)) {
                        *c = id;
                        *t = now;
                    }
                    ctx.deliver_packet(p);
                }
                _ => stats.packets_refused += 1,
            },
            E2eMessage::Pong(x) => {
                for sc in o.circuits.iter_mut() {
                    if sc.probe.is_some_and(|(p, _)| p == x) {
                        sc.probe = None;
                    }
                }
                if let Some((d, at)) = self.pings.remove(&x) {
                    ctx.pong(d, x, now.saturating_sub(at));
                }
            }
            E2eMessage::Ping(x) => {
                let _ = self.client_send_msg(ctx, now, dst, id, &E2eMessage::Pong(x));
            }
            E2eMessage::NewCircuitRefused { .. } => {
                // The service is at its limit: flows share the circuits there are.
                let stale: Vec<CircId> = o
                    .joins
                    .iter()
                    .filter(|j| j.requested)
                    .map(|j| j.circ)
                    .collect();
                o.joins.retain(|j| !j.requested);
                for s in stale {
                    self.owners.remove(&s);
                    ctx.destroy(now, s);
                }
            }
            _ => {}
        }
    }

    fn client_maintain(&mut self, ctx: &mut impl SessionCtx, now: Millis) {
        let dsts: Vec<[u8; 16]> = self.clients.keys().copied().collect();
        for dst in dsts {
            let Some(c) = self.clients.get_mut(&dst) else {
                continue;
            };
            if c.lookup
                .is_some_and(|t| now.saturating_sub(t) >= LOOKUP_TIMEOUT_MS)
            {
                self.client_fail(ctx, now, dst, "descriptor lookup timed out");
                continue;
            }
            if c.open.is_none() && now.saturating_sub(c.started) >= SESSION_SETUP_TIMEOUT_MS {
                self.client_fail(ctx, now, dst, "session setup timed out");
                continue;
            }
            if c.retry_at.is_some_and(|t| now >= t) {
                c.retry_at = None;
                self.client_find_descriptor(ctx, now, dst);
                continue;
            }
            let stuck = c.intro.as_ref().is_some_and(|i| {
                let age = now.saturating_sub(i.started);
                let since = |t: Option<Millis>| t.map(|t| now.saturating_sub(t));
                age >= REND_TIMEOUT_MS
                    || (age >= INTRO_STEP_TIMEOUT_MS && !(i.rend_ready && i.intro_ready))
                    || (!i.acked && since(i.sent_at) >= Some(INTRO_STEP_TIMEOUT_MS))
                    || since(i.acked_at) >= Some(REND_AFTER_ACK_TIMEOUT_MS)
            });
            let expired = c.lingering.as_ref().is_some_and(|l| {
                l.acked_at
                    .is_none_or(|t| now.saturating_sub(t) >= REND_LINGER_MS)
            });
            if expired {
                if let Some(id) = c.lingering.take().and_then(|l| l.rend) {
                    self.owners.remove(&id);
                    ctx.destroy(now, id);
                }
            }
            let Some(c) = self.clients.get_mut(&dst) else {
                continue;
            };
            if stuck {
                self.client_retry_intro(ctx, now, dst, "introduction timed out");
                continue;
            }
            let Some(o) = c.open.as_mut() else { continue };
            // Circuits that stopped answering get an e2e PING; no PONG: dead (10.8).
            let mut probes = Vec::new();
            let mut dead = Vec::new();
            for sc in o.circuits.iter_mut() {
                match (sc.probe, sc.unanswered_since) {
                    (Some((_, at)), _) if now.saturating_sub(at) >= CIRCUIT_PROBE_TIMEOUT_MS => {
                        dead.push(sc.id)
                    }
                    (None, Some(t)) if now.saturating_sub(t) >= CIRCUIT_PROBE_AFTER_MS => {
                        let id = self.next_ping;
                        self.next_ping += 1;
                        sc.probe = Some((id, now));
                        probes.push((sc.id, id));
                    }
                    _ => {}
                }
            }
            let expired_joins: Vec<CircId> = o
                .joins
                .iter()
                .filter(|j| now.saturating_sub(j.started) >= REND_TIMEOUT_MS)
                .map(|j| j.circ)
                .collect();
            o.joins.retain(|j| !expired_joins.contains(&j.circ));
            o.flows
                .retain(|_, (_, t)| now.saturating_sub(*t) < FLOW_IDLE_MS);
            let old = now.saturating_sub(o.established) >= SESSION_MAX_AGE_MS;
            for (circ, id) in probes {
                self.client_send_msg(ctx, now, dst, circ, &E2eMessage::Ping(id));
            }
            for id in expired_joins {
                self.owners.remove(&id);
                ctx.destroy(now, id);
            }
            for id in dead {
                self.stats.probe_failures += 1;
                let relays: Vec<[u8; 32]> = ctx
                    .path(id)
                    .map(|p| p.iter().skip(1).map(|r| *r.identity()).collect())
                    .unwrap_or_default();
                for r in relays {
                    self.suspects.insert(r, now + SUSPECT_MS);
                }
                self.owners.remove(&id);
                ctx.destroy(now, id);
                self.client_lost_circuit(ctx, now, dst, id);
            }
            if old {
                self.client_close(ctx, now, dst);
                continue;
            }
            self.client_keep_spare(ctx, now, dst);
        }
    }

    /// Ends a client session (its circuits close; the next packet makes a new one).
    fn client_close(&mut self, ctx: &mut impl SessionCtx, now: Millis, dst: [u8; 16]) {
        let Some(c) = self.clients.remove(&dst) else {
            return;
        };
        tracing::debug!(at = now, "client session closed");
        let mut ids: Vec<CircId> = Vec::new();
        if let Some(o) = c.open {
            ids.extend(o.circuits.iter().map(|c| c.id));
            ids.extend(o.joins.iter().map(|j| j.circ));
        }
        if let Some(i) = c.intro {
            ids.extend([i.rend, i.intro].into_iter().flatten());
        }
        ids.extend(c.spare_rend.map(|(id, _, _)| id));
        ids.extend(c.lingering.and_then(|l| l.rend));
        for id in ids {
            self.owners.remove(&id);
            ctx.destroy(now, id);
        }
    }

    /// Runs timers: stems, services, client sessions.
    pub fn timeout(&mut self, ctx: &mut impl SessionCtx, now: Millis) {
        self.now = now;
        if let Some(r) = self.rend_role.as_mut() {
            r.expire(now);
        }
        self.maintain_stems(ctx, now);
        self.service_maintain(ctx, now);
        self.client_maintain(ctx, now);
        self.pings
            .retain(|_, (_, at)| now.saturating_sub(*at) < LOOKUP_TIMEOUT_MS);
    }
}

/// The first 4 bytes of a key in hex, for logs.
fn hex8(k: &[u8; 32]) -> String {
    k.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

fn c_intro<'a>(
    clients: &'a mut HashMap<[u8; 16], ClientSession>,
    dst: &[u8; 16],
) -> Option<&'a mut Introduction> {
    clients.get_mut(dst).and_then(|c| c.intro.as_mut())
}

/// Forgets the least recently used flow.
fn evict_lru(flows: &mut HashMap<FlowKey, (CircId, Millis)>) {
    let lru = flows.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k);
    if let Some(k) = lru {
        flows.remove(&k);
    }
}
/// Reports `dst` unreachable; the error for the caller.
fn unreachable(ctx: &mut impl SessionCtx, dst: [u8; 16], why: &str) -> SendError {
    ctx.unreachable(dst, why);
    SendError::Unreachable(why.to_string())
}
