//! Circuits in the network (DESIGN.md sections 5-6, docs/protocol.md sections 6-9): building and
//! extending our own circuits over links, relaying cells for others with per-link circuit ids,
//! teardown, expiry and the limits a stranger cannot exceed.
//!
//! A sans-IO state machine above the link layer: it is fed link events and cells
//! ([`CircuitLayer::on_link_up`], [`CircuitLayer::on_cell`], ...) with the current time, and emits
//! actions for the link layer ([`CircuitLayer::poll_action`]: send this cell on that link, dial
//! that relay) and events for the layers above ([`CircuitLayer::poll_event`]). A relay's state per
//! circuit is its [`RelayHop`] plus the two (link, circuit id) pairs it joins: it never learns
//! more than its two neighbours on the circuit.

use rand::rngs::StdRng;
use rand::Rng;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use super::client::ClientError;
use super::handshake::{respond, HopTarget, OnionKey};
use super::hop::{Forward, HopError, RelayHop};
use super::onion::OnionKeys;
use super::replay::ReplayError;
use super::ClientCircuit;
use crate::budget::{Charge, MemoryBudget};
use crate::crypto::{Randomness, SecretRng};
use crate::link::LinkId;
use crate::time::{Bucket, Millis};
use crate::wire::cell::{
    Cell, CellCommand, CellHeader, DestroyBody, DestroyReason, CELL_HEADER_LEN, CELL_LEN,
};
use crate::wire::handshake::{ServerExt, CREATED_HS_LEN, CREATE_HS_LEN};
use crate::wire::record::{LinkSpec, RelayRecord};
use crate::wire::relay::{
    Extend, ExtendedStatus, RelayCommand, EXTEND_LINK_SPEC_LEN, RELAY_PAYLOAD_LEN,
};

/// Circuits one link may carry.
pub const MAX_CIRCUITS_PER_LINK: usize = 4096;
/// Circuits a relay carries for others in total.
pub const MAX_RELAYED_CIRCUITS: usize = 16384;
/// CREATE cells per second per link (token bucket rate) ...
pub const CREATE_RATE_PER_LINK: f64 = 20.0;
/// ... and burst.
pub const CREATE_BURST_PER_LINK: f64 = 100.0;
/// CREATE cells per second in total (each costs three X25519 operations).
pub const CREATE_RATE_TOTAL: f64 = 500.0;
/// A torn-down circuit id is not reused for this long.
pub const CIRC_ID_QUARANTINE_MS: Millis = 120_000;
/// A relay waits this long for CREATED after sending CREATE for an EXTEND.
pub const EXTEND_TIMEOUT_MS: Millis = 10_000;
/// A whole build may take this long.
pub const CIRCUIT_BUILD_TIMEOUT_MS: Millis = 15_000;
/// Clients retire circuits after this age.
pub const CIRCUIT_MAX_AGE_MS: Millis = 3_600_000;
/// Relays destroy circuits older than this.
pub const CIRCUIT_HARD_MAX_AGE_MS: Millis = 7_200_000;
/// Relays destroy circuits idle for this long.
pub const RELAY_CIRCUIT_IDLE_TIMEOUT_MS: Millis = 900_000;
/// A CREATE (or a client's EXTEND) unanswered for this long is resent, identically ...
pub const CREATE_RETRY_MS: Millis = 1_000;
/// ... at most this many times.
pub const CREATE_RETRIES: u8 = 2;
/// An unanswered EXTEND is resent (in a fresh cell) after this long: longer than the relay's own
/// EXTENDED resends ([`EXTENDED_RESEND_MS`]), so that a lost EXTENDED is repaired by the relay
/// and the client resends only when its EXTEND itself was lost.
pub const EXTEND_RESEND_MS: Millis = 2_500;
/// EXTEND resends per hop (each costs a RELAY_EARLY cell at every earlier hop).
pub const EXTEND_RESENDS: u8 = 1;
/// A relay resends its EXTENDED this often until the client's next cell shows it arrived.
pub const EXTENDED_RESEND_MS: Millis = 1_000;
/// EXTENDED resends.
pub const EXTENDED_RESENDS: u8 = 2;
/// Cells held for a circuit while its next hop is being reached.
pub const CIRCUIT_QUEUE_CELLS: usize = 128;
/// Memory charged per relayed circuit (hop state, two routes, maps).
pub const RELAY_CIRCUIT_COST: usize = 1024;
/// Memory charged per own circuit.
pub const OWN_CIRCUIT_COST: usize = 4096;

/// One side of a relayed circuit: the link and the circuit id on it.
pub type Route = (LinkId, u32);

/// Our own circuit, named locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CircId(pub u64);

/// What a circuit is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Pre-built, waiting for a use.
    Pool,
    /// Carrying a flow.
    Flow,
    /// To an introduction point.
    Intro,
    /// To a rendezvous point.
    Rendezvous,
    /// A DHT lookup.
    Dht,
    /// A test or measurement circuit.
    Probe,
}

impl Purpose {
    /// The name used in `circuits --json`.
    pub fn name(self) -> &'static str {
        match self {
            Purpose::Pool => "pool",
            Purpose::Flow => "flow",
            Purpose::Intro => "intro",
            Purpose::Rendezvous => "rendezvous",
            Purpose::Dht => "dht",
            Purpose::Probe => "probe",
        }
    }
}

/// Something the link layer must do.
// Cells travel inline, not boxed, so that relaying allocates nothing per cell.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum CircAction {
    /// Send a cell on a link.
    SendCell {
        /// The link.
        link: LinkId,
        /// The cell.
        cell: [u8; CELL_LEN],
    },
    /// Dial a relay (an EXTEND or our first hop needs a link to it).
    Connect {
        /// Its link key.
        link_key: [u8; 32],
        /// Where.
        endpoint: SocketAddr,
    },
}

/// What the layers above hear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CircEvent {
    /// Our circuit is built.
    Built {
        /// It.
        id: CircId,
        /// Build time in milliseconds.
        build_ms: Millis,
    },
    /// Our circuit failed to build or was torn down.
    Closed {
        /// It.
        id: CircId,
        /// Why, for logs.
        why: String,
    },
    /// Our built circuit grew by one hop ([`CircuitLayer::extend`]).
    Extended {
        /// It.
        id: CircId,
        /// Its length now.
        hops: usize,
    },
    /// A relay message for a last-hop role (DHT relay, intro point, rendezvous point) arrived
    /// on a circuit someone else built and that ends at us. Answer with
    /// [`CircuitLayer::reply`].
    LastHop {
        /// The relayed circuit, named locally.
        slot: u64,
        /// Raw relay command.
        cmd: u8,
        /// Payload.
        payload: Vec<u8>,
    },
    /// A relayed circuit that had produced [`CircEvent::LastHop`] events is gone; roles forget
    /// what they kept for it.
    RelayedClosed {
        /// The slot.
        slot: u64,
    },
    /// A relay message arrived on our circuit from its last hop.
    Message {
        /// The circuit.
        id: CircId,
        /// Raw relay command.
        cmd: u8,
        /// Payload.
        payload: Vec<u8>,
    },
}

/// Errors of commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CircuitError {
    /// No such circuit, or not built.
    NoCircuit,
    /// Path problem (from path selection).
    Path(String),
    /// A limit or the memory budget refused it.
    Limit,
    /// The cell could not be built.
    Crypto(String),
}

impl std::fmt::Display for CircuitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CircuitError::NoCircuit => write!(f, "no such circuit"),
            CircuitError::Path(m) => write!(f, "{m}"),
            CircuitError::Limit => write!(f, "circuit limit or memory budget reached"),
            CircuitError::Crypto(m) => write!(f, "circuit crypto: {m}"),
        }
    }
}

impl std::error::Error for CircuitError {}

struct LinkInfo {
    identity: Option<[u8; 32]>,
    /// Circuit ids we allocate on this link have bit 31 set (our link key is the smaller).
    high_bit: bool,
    circuits: usize,
    creates: Bucket,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dir {
    /// The (link, id) is the upstream side: cells there travel forward.
    Up,
    /// The downstream side: cells there travel backward.
    Down,
}

struct PendingExtend {
    identity: [u8; 32],
    link_key: [u8; 32],
    create: [u8; CREATE_HS_LEN],
    started: Millis,
    sent: Option<Millis>,
    retries: u8,
}

/// A relay's answer kept for a resend, until the client's next cell shows it arrived.
enum Answer {
    /// Our CREATED, with the hash of the CREATE it answers (a resent CREATE gets it again).
    Created([u8; 32], [u8; CELL_LEN]),
    /// Our EXTENDED, resent on a timer up to [`EXTENDED_RESENDS`] times, and again whenever the
    /// client resends the EXTEND with the same CREATE bytes (8.4).
    Extended {
        /// When it was last sent.
        at: Millis,
        /// Timed resends so far.
        resends: u8,
        /// The CREATE handshake bytes of the EXTEND it answers.
        create: [u8; CREATE_HS_LEN],
        /// The cell.
        cell: [u8; CELL_LEN],
    },
}

struct Relayed {
    hop: RelayHop,
    up: (LinkId, u32),
    down: Option<(LinkId, u32)>,
    created_at: Millis,
    last_cell: Millis,
    /// While extending (boxed: most relayed circuits never extend, or only once).
    extend: Option<Box<PendingExtend>>,
    /// Hash of the CREATE bytes and our CREATED cell, to answer a resent CREATE identically
    /// (dropped once the first relay cell shows the client got it).
    answer: Option<Box<Answer>>,
    /// The circuit this one is spliced to (a rendezvous point joins two circuits, 10.6).
    splice: Option<u64>,
    /// Whether a role above saw this circuit (then it hears when it closes).
    role: bool,
    _charge: Charge,
}

enum OwnState {
    /// Waiting for a link to the first hop.
    Linking,
    /// CREATE or EXTEND sent for hop `next` (0-based).
    Extending {
        next: usize,
    },
    Ready,
}

struct Own {
    circ: Option<ClientCircuit>,
    path: Vec<RelayRecord>,
    link: Option<LinkId>,
    circ_id: u32,
    state: OwnState,
    purpose: Purpose,
    started: Millis,
    built_at: Option<Millis>,
    /// The CREATE or EXTEND cell in flight, resent identically if unanswered.
    setup: Option<Box<[u8; CELL_LEN]>>,
    setup_sent: Millis,
    setup_retries: u8,
    _charge: Charge,
}

/// Public facts about one of our circuits, for `globalnet circuits`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitInfo {
    /// Local id.
    pub id: CircId,
    /// Hops (path length).
    pub hops: usize,
    /// Purpose.
    pub purpose: Purpose,
    /// Seconds since the build started.
    pub age_s: u64,
    /// Whether it is built.
    pub ready: bool,
    /// Build time, once built.
    pub build_ms: Option<Millis>,
}

/// What a rendezvous point reads in clear of one DATA message it passes across a splice: the
/// relay header's `length` and the first bytes of the payload (where an e2e frame keeps its
/// version and counter). Recorded only when [`CircuitLayer::observe_splices`] asked for it, so
/// tests can check what a hostile rendezvous point learns (docs/threat-model.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplicedMessage {
    /// The relayed circuit (slot) the message arrived on.
    pub from: u64,
    /// The relay header's `length` field.
    pub length: u16,
    /// The first [`SPLICED_HEAD_LEN`] payload bytes (zero where the payload is shorter).
    pub head: [u8; SPLICED_HEAD_LEN],
}

/// Payload bytes a [`SplicedMessage`] keeps.
pub const SPLICED_HEAD_LEN: usize = 16;
/// Most [`SplicedMessage`]s kept; later ones are not recorded.
pub const MAX_SPLICED_OBSERVATIONS: usize = 4096;

/// Counters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CircuitStats {
    /// Cells forwarded for others (both directions).
    pub relayed_cells: u64,
    /// CREATE cells refused (limits, budget, bad handshakes).
    pub creates_refused: u64,
    /// Relayed circuits destroyed to make memory for a new one (the largest link's first).
    pub evicted_for_memory: u64,
    /// Cells dropped (unknown circuit, replay, tamper, malformed).
    pub dropped: u64,
    /// Circuits we built.
    pub built: u64,
    /// Our builds that failed.
    pub build_failures: u64,
    /// EXTENDED cells sent again for a client's resent EXTEND, after the extension (8.4).
    pub extended_again: u64,
    /// Relayed circuits destroyed at the first failed check field, as their last hop (6.5).
    pub tampered: u64,
    /// Circuits (relayed or ours) destroyed for a seq more than `MAX_SEQ_JUMP` ahead (6.7).
    pub jumps_too_far: u64,
}

/// The circuit layer of one node.
pub struct CircuitLayer {
    identity: [u8; 32],
    onion: OnionKeys,
    /// A key made by rotation that the node has not taken yet (to publish and keep).
    rotated: Option<OnionKey>,
    relay: bool,
    budget: MemoryBudget,
    /// Choices: circuit ids.
    rng: StdRng,
    /// Handshake ephemerals (ours as a client, ours as a relay).
    secrets: SecretRng,
    links: HashMap<LinkId, LinkInfo>,
    relayed: HashMap<u64, Relayed>,
    routes: HashMap<(LinkId, u32), (u64, Dir)>,
    next_slot: u64,
    own: HashMap<CircId, Own>,
    own_routes: HashMap<(LinkId, u32), CircId>,
    next_own: u64,
    quarantine: HashMap<(LinkId, u32), Millis>,
    total_creates: Bucket,
    actions: VecDeque<CircAction>,
    events: VecDeque<CircEvent>,
    stats: CircuitStats,
    /// Payload buffers of delivered messages, handed back with [`CircuitLayer::recycle_payload`]
    /// so that a steady stream of DATA allocates nothing per message.
    payloads: Vec<Vec<u8>>,
    /// Relays our extensions could not reach, for [`CircuitLayer::take_unreachable`].
    unreachable: Vec<[u8; 32]>,
    /// What crossed our splices, when a test asked (`None`: nothing is recorded).
    spliced_seen: Option<Vec<SplicedMessage>>,
}

fn create_digest(cell: &[u8; CELL_LEN]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(cell.get(CELL_HEADER_LEN..).unwrap_or(&[])).into()
}

fn cell_header(cell: &[u8; CELL_LEN]) -> Option<(u32, CellCommand)> {
    let c = Cell::new(cell);
    let cmd = c.command().ok()?;
    Some((c.circ_id(), cmd))
}

impl CircuitLayer {
    /// A circuit layer for a node with relay `identity` and the current onion key.
    pub fn new(
        identity: [u8; 32],
        onion: OnionKey,
        relay: bool,
        budget: MemoryBudget,
        rand: Randomness,
        now: Millis,
    ) -> Self {
        let (rng, secrets) = rand.into_parts();
        CircuitLayer {
            identity,
            onion: OnionKeys::new(onion, now),
            rotated: None,
            relay,
            budget,
            rng,
            secrets,
            links: HashMap::new(),
            relayed: HashMap::new(),
            routes: HashMap::new(),
            next_slot: 1,
            own: HashMap::new(),
            own_routes: HashMap::new(),
            next_own: 1,
            quarantine: HashMap::new(),
            total_creates: Bucket::new(CREATE_RATE_TOTAL, now),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            stats: CircuitStats::default(),
            payloads: Vec::new(),
            unreachable: Vec::new(),
            spliced_seen: None,
        }
    }

    /// A new onion key made by rotation, once: publish it in the relay record and keep it.
    pub fn take_rotated_onion_key(&mut self) -> Option<OnionKey> {
        self.rotated.take()
    }

    /// The current onion key.
    pub fn onion_key(&self) -> &OnionKey {
        self.onion.current()
    }

    /// Sets when the current onion key was made (from its file), so rotation keeps its schedule
    /// across restarts.
    pub fn set_onion_key_since(&mut self, since: Millis) {
        self.onion.set_since(since);
    }

    /// The next action for the link layer.
    pub fn poll_action(&mut self) -> Option<CircAction> {
        self.actions.pop_front()
    }

    /// The next event for the layers above.
    pub fn poll_event(&mut self) -> Option<CircEvent> {
        self.events.pop_front()
    }

    /// Whether this layer's handshake ephemerals come from the operating system (false only in
    /// the in-process network).
    pub fn secrets_from_os(&self) -> bool {
        self.secrets.is_os()
    }

    /// Counters.
    pub fn stats(&self) -> &CircuitStats {
        &self.stats
    }

    /// Circuits relayed for others now.
    pub fn relayed_count(&self) -> usize {
        self.relayed.len()
    }

    /// The links a relayed circuit touches, for tests (a relay knows only its two neighbours).
    pub fn relayed_neighbours(&self) -> Vec<(LinkId, Option<LinkId>)> {
        self.relayed
            .values()
            .map(|r| (r.up.0, r.down.map(|d| d.0)))
            .collect()
    }

    /// The (link, circuit id) pairs of every relayed circuit, upstream and downstream, for tests
    /// (which cells could reach it, and from whom).
    pub fn relayed_routes(&self) -> Vec<(Route, Option<Route>)> {
        self.relayed.values().map(|r| (r.up, r.down)).collect()
    }

    /// The link to the first hop of our circuit and the circuit id on it, for tests (a cell a
    /// hostile first hop would pass on travels there).
    pub fn first_hop_route(&self, id: CircId) -> Option<Route> {
        let o = self.own.get(&id)?;
        o.link.map(|l| (l, o.circ_id))
    }

    /// The forward counter `c` the next cell of our circuit will carry, for tests.
    pub fn next_forward_seq(&self, id: CircId) -> Option<u64> {
        self.own
            .get(&id)
            .and_then(|o| o.circ.as_ref())
            .map(ClientCircuit::next_forward_seq)
    }

    /// Our circuits.
    pub fn circuits(&self, now: Millis) -> Vec<CircuitInfo> {
        let mut v: Vec<CircuitInfo> = self
            .own
            .iter()
            .map(|(id, o)| CircuitInfo {
                id: *id,
                hops: o.path.len(),
                purpose: o.purpose,
                age_s: now.saturating_sub(o.started) / 1000,
                ready: matches!(o.state, OwnState::Ready),
                build_ms: o.built_at.map(|b| b.saturating_sub(o.started)),
            })
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// Links that carry at least one circuit (ours or relayed).
    pub fn links_in_use(&self) -> impl Iterator<Item = LinkId> + '_ {
        self.links
            .iter()
            .filter(|(_, i)| i.circuits > 0)
            .map(|(id, _)| *id)
    }

    /// Our built circuits of a purpose.
    pub fn ready(&self, purpose: Purpose) -> usize {
        self.own
            .values()
            .filter(|o| o.purpose == purpose && matches!(o.state, OwnState::Ready))
            .count()
    }

    /// Our circuits of a purpose, built or building.
    pub fn count(&self, purpose: Purpose) -> usize {
        self.own.values().filter(|o| o.purpose == purpose).count()
    }

    // ---- links ---------------------------------------------------------------------------

    /// A link completed HELLO. `ours`/`theirs` are the two link keys (for id allocation).
    pub fn on_link_up(
        &mut self,
        now: Millis,
        link: LinkId,
        identity: Option<[u8; 32]>,
        ours: [u8; 32],
        theirs: [u8; 32],
    ) {
        self.links.insert(
            link,
            LinkInfo {
                identity,
                high_bit: ours < theirs,
                circuits: 0,
                creates: Bucket::new(CREATE_BURST_PER_LINK, now),
            },
        );
        // Builds waiting for this first hop, and extends waiting for this target.
        if let Some(ident) = identity {
            let waiting: Vec<CircId> = self
                .own
                .iter()
                .filter(|(_, o)| matches!(o.state, OwnState::Linking))
                .filter(|(_, o)| o.path.first().map(|r| r.identity()) == Some(&ident))
                .map(|(id, _)| *id)
                .collect();
            for id in waiting {
                self.start_create(now, id, link);
            }
            let extends: Vec<u64> = self
                .relayed
                .iter()
                .filter(|(_, r)| {
                    r.down.is_none() && r.extend.as_ref().is_some_and(|e| e.identity == ident)
                })
                .map(|(k, _)| *k)
                .collect();
            for slot in extends {
                self.send_extend_create(now, slot, link);
            }
        }
    }

    /// A link to the relay with this link key could not be made (a dial failed, or the peer
    /// died a moment ago): extensions waiting for it fail now, not at their timeout.
    pub fn on_link_failed(&mut self, link_key: &[u8; 32]) {
        let slots: Vec<u64> = self
            .relayed
            .iter()
            .filter(|(_, r)| {
                r.down.is_none() && r.extend.as_ref().is_some_and(|e| e.link_key == *link_key)
            })
            .map(|(k, _)| *k)
            .collect();
        for slot in slots {
            self.fail_extend_link(slot);
        }
    }

    /// Answers a relayed circuit's pending EXTEND with EXTENDED(link failed).
    fn fail_extend_link(&mut self, slot: u64) {
        let Some(r) = self.relayed.get_mut(&slot) else {
            return;
        };
        r.extend = None;
        let mut cell = [0u8; CELL_LEN];
        let up = r.up.0;
        if r.hop
            .fail_extend(ExtendedStatus::LinkFailed, &mut cell)
            .is_ok()
        {
            self.push_cell(up, cell);
        }
    }

    /// A link is gone: every circuit on it ends; relayed ones are destroyed on their other side.
    pub fn on_link_down(&mut self, now: Millis, link: LinkId) {
        self.links.remove(&link);
        let slots: Vec<u64> = self
            .routes
            .iter()
            .filter(|((l, _), _)| *l == link)
            .map(|(_, (s, _))| *s)
            .collect();
        for slot in slots {
            self.destroy_relayed(now, slot, Some(link));
        }
        let own: Vec<CircId> = self
            .own
            .iter()
            .filter(|(_, o)| o.link == Some(link))
            .map(|(id, _)| *id)
            .collect();
        for id in own {
            self.close_own(now, id, "link to the first hop closed", false);
        }
    }

    fn alloc_id(&mut self, link: LinkId, now: Millis) -> Option<u32> {
        let high = self.links.get(&link)?.high_bit;
        for _ in 0..64 {
            let mut id: u32 = self.rng.gen::<u32>() & 0x7fff_ffff;
            if high {
                id |= 0x8000_0000;
            }
            if id == 0 || id == 0x8000_0000 {
                continue;
            }
            let key = (link, id);
            let quarantined = self.quarantine.get(&key).is_some_and(|t| now < *t);
            if !quarantined
                && !self.routes.contains_key(&key)
                && !self.own_routes.contains_key(&key)
            {
                return Some(id);
            }
        }
        None
    }

    fn push_cell(&mut self, link: LinkId, cell: [u8; CELL_LEN]) {
        self.actions.push_back(CircAction::SendCell { link, cell });
    }

    fn send_destroy(&mut self, link: LinkId, circ_id: u32, reason: DestroyReason) {
        let mut cell = [0u8; CELL_LEN];
        DestroyBody { reason }.emit_cell(&mut cell, circ_id);
        self.push_cell(link, cell);
    }

    // ---- cells ---------------------------------------------------------------------------

    /// A cell arrived on a link (exactly `CELL_LEN` bytes; anything else is dropped).
    pub fn on_cell(&mut self, now: Millis, link: LinkId, bytes: &[u8]) {
        let Ok(cell) = <[u8; CELL_LEN]>::try_from(bytes) else {
            self.stats.dropped += 1;
            return;
        };
        let mut cell = cell;
        let Some((circ_id, cmd)) = cell_header(&cell) else {
            self.stats.dropped += 1;
            return;
        };
        let key = (link, circ_id);
        if self.quarantine.get(&key).is_some_and(|t| now < *t) {
            self.stats.dropped += 1;
            return;
        }
        match cmd {
            CellCommand::Create => self.on_create(now, link, circ_id, &cell),
            CellCommand::Created => {
                if let Some(id) = self.own_routes.get(&key).copied() {
                    self.own_created(now, id, &cell);
                } else if let Some((slot, Dir::Down)) = self.routes.get(&key).copied() {
                    self.extend_created(now, slot, &cell);
                } else {
                    self.stats.dropped += 1;
                }
            }
            CellCommand::Relay | CellCommand::RelayEarly => {
                if let Some(id) = self.own_routes.get(&key).copied() {
                    self.own_receive(now, id, &mut cell);
                } else if let Some((slot, dir)) = self.routes.get(&key).copied() {
                    match dir {
                        Dir::Up => self.relay_forward(now, slot, &mut cell),
                        Dir::Down => self.relay_backward(now, slot, &mut cell),
                    }
                } else {
                    self.stats.dropped += 1;
                }
            }
            CellCommand::Destroy => {
                if let Some(id) = self.own_routes.get(&key).copied() {
                    self.close_own(now, id, "destroyed by the network", false);
                } else if let Some((slot, _)) = self.routes.get(&key).copied() {
                    self.destroy_relayed(now, slot, Some(link));
                }
            }
            CellCommand::Padding => {}
        }
    }

    fn on_create(&mut self, now: Millis, link: LinkId, circ_id: u32, cell: &[u8; CELL_LEN]) {
        let Some(info) = self.links.get_mut(&link) else {
            self.stats.dropped += 1;
            return;
        };
        // The peer allocates ids with the other high bit than ours.
        let wrong_half = (circ_id & 0x8000_0000 != 0) == info.high_bit;
        let key = (link, circ_id);
        if let Some((slot, Dir::Up)) = self.routes.get(&key).copied() {
            // A resent CREATE (its CREATED was lost): answer identically.
            let digest = create_digest(cell);
            if let Some(Some(Answer::Created(d, out))) =
                self.relayed.get(&slot).map(|r| r.answer.as_deref())
            {
                if *d == digest {
                    let out = *out;
                    self.push_cell(link, out);
                    return;
                }
            }
        }
        if !self.relay || wrong_half || self.routes.contains_key(&key) || circ_id == 0 {
            self.stats.creates_refused += 1;
            if !self.routes.contains_key(&key) {
                self.send_destroy(link, circ_id, DestroyReason::Protocol);
            }
            return;
        }
        let per_link_ok = info
            .creates
            .take(now, CREATE_RATE_PER_LINK, CREATE_BURST_PER_LINK);
        let over =
            info.circuits >= MAX_CIRCUITS_PER_LINK || self.relayed.len() >= MAX_RELAYED_CIRCUITS;
        if !per_link_ok
            || over
            || !self
                .total_creates
                .take(now, CREATE_RATE_TOTAL, CREATE_RATE_TOTAL)
        {
            self.stats.creates_refused += 1;
            self.send_destroy(link, circ_id, DestroyReason::ResourceLimit);
            return;
        }
        let charge = match self.budget.try_charge(RELAY_CIRCUIT_COST) {
            Some(c) => c,
            None => {
                self.evict_for_memory(now);
                match self.budget.try_charge(RELAY_CIRCUIT_COST) {
                    Some(c) => c,
                    None => {
                        self.stats.creates_refused += 1;
                        self.send_destroy(link, circ_id, DestroyReason::ResourceLimit);
                        return;
                    }
                }
            }
        };
        let create = cell
            .get(CELL_HEADER_LEN..CELL_HEADER_LEN + CREATE_HS_LEN)
            .unwrap_or(&[]);
        let (keys, n) = self.onion.accepted(now);
        let hs = match respond(
            &mut self.secrets,
            create,
            &self.identity,
            keys.get(..n).unwrap_or(&[]),
            &ServerExt::default(),
        ) {
            Ok(hs) => hs,
            Err(e) => {
                self.stats.creates_refused += 1;
                self.send_destroy(link, circ_id, e.destroy_reason());
                return;
            }
        };
        let mut out = [0u8; CELL_LEN];
        crate::wire::cell::emit_plain_cell(
            &mut out,
            &CellHeader {
                circ_id,
                cmd: CellCommand::Created,
                seq: 0,
            },
            &hs.created,
        );
        let hop = RelayHop::from_handshake(hs, circ_id);
        let slot = self.next_slot;
        self.next_slot += 1;
        self.relayed.insert(
            slot,
            Relayed {
                hop,
                up: (link, circ_id),
                down: None,
                created_at: now,
                last_cell: now,
                extend: None,
                answer: Some(Box::new(Answer::Created(create_digest(cell), out))),
                splice: None,
                role: false,
                _charge: charge,
            },
        );
        self.routes.insert((link, circ_id), (slot, Dir::Up));
        if let Some(i) = self.links.get_mut(&link) {
            i.circuits += 1;
        }
        self.push_cell(link, out);
    }

    /// Frees one relayed circuit for a new one: the longest-idle circuit of the upstream link
    /// carrying the most relayed circuits (ties: the higher link id). The longest-idle circuit
    /// overall would be an honest service's quiet intro circuit or a client's spare, while a
    /// flooder keeps its own fresh; by link, the flood pays for itself (protocol.md section 15).
    fn evict_for_memory(&mut self, now: Millis) {
        let mut per_link: HashMap<LinkId, usize> = HashMap::new();
        for r in self.relayed.values() {
            *per_link.entry(r.up.0).or_default() += 1;
        }
        let Some(link) = per_link
            .into_iter()
            .max_by_key(|&(l, n)| (n, l))
            .map(|(l, _)| l)
        else {
            return;
        };
        let victim = self
            .relayed
            .iter()
            .filter(|(_, r)| r.up.0 == link)
            .min_by_key(|(k, r)| (r.last_cell, **k))
            .map(|(k, _)| *k);
        if let Some(v) = victim {
            self.stats.evicted_for_memory += 1;
            self.destroy_relayed(now, v, None);
        }
    }

    fn relay_forward(&mut self, now: Millis, slot: u64, cell: &mut [u8; CELL_LEN]) {
        let Some(r) = self.relayed.get_mut(&slot) else {
            return;
        };
        r.last_cell = now;
        let down = r.down;
        let up = r.up.0;
        match r.hop.forward(cell) {
            Ok(Forward::ResentExtend { message }) => {
                // The client did not get our EXTENDED: send it again, unless this is not the
                // EXTEND we carried out (then drop it: it is not for the next hop either).
                let again = match r.answer.as_deref() {
                    Some(Answer::Extended { create, cell, .. })
                        if message.cmd_raw() == RelayCommand::Extend as u8
                            && Extend::new_checked(message.payload())
                                .is_ok_and(|e| e.create_handshake() == &create[..]) =>
                    {
                        Some(*cell)
                    }
                    _ => None,
                };
                match again {
                    Some(out) => {
                        self.stats.extended_again += 1;
                        self.push_cell(up, out);
                    }
                    None => self.stats.dropped += 1,
                }
            }
            Ok(Forward::Relayed) => {
                // The client's next cell: our CREATED or EXTENDED got through.
                r.answer = None;
                if let Some((link, _)) = down {
                    self.stats.relayed_cells += 1;
                    self.push_cell(link, *cell);
                }
            }
            Ok(Forward::Delivered { early, message }) => {
                r.answer = None;
                let cmd = message.cmd_raw();
                if let Some(other) = r.splice {
                    // A spliced rendezvous point passes DATA across, and nothing else (10.6).
                    if cmd == RelayCommand::Data as u8 {
                        if let Some(seen) = self.spliced_seen.as_mut() {
                            if seen.len() < MAX_SPLICED_OBSERVATIONS {
                                let mut head = [0u8; SPLICED_HEAD_LEN];
                                for (h, b) in head.iter_mut().zip(message.payload()) {
                                    *h = *b;
                                }
                                seen.push(SplicedMessage {
                                    from: slot,
                                    length: message.length(),
                                    head,
                                });
                            }
                        }
                        self.splice_data(other, message.payload());
                    } else {
                        self.stats.dropped += 1;
                    }
                    return;
                }
                let mut payload = [0u8; 1316];
                let p = message.payload();
                let n = p.len().min(payload.len());
                if let (Some(dst), Some(src)) = (payload.get_mut(..n), p.get(..n)) {
                    dst.copy_from_slice(src);
                }
                self.last_hop_message(now, slot, early, cmd, payload.get(..n).unwrap_or(&[]));
            }
            Err(e) => {
                self.count_error(&e);
                if e.destroy_reason().is_some() {
                    self.destroy_relayed(now, slot, None);
                }
            }
        }
    }

    fn relay_backward(&mut self, now: Millis, slot: u64, cell: &mut [u8; CELL_LEN]) {
        let Some(r) = self.relayed.get_mut(&slot) else {
            return;
        };
        r.last_cell = now;
        let up = r.up.0;
        match r.hop.backward(cell) {
            Ok(()) => {
                self.stats.relayed_cells += 1;
                self.push_cell(up, *cell);
            }
            Err(e) => {
                self.count_error(&e);
                if e.destroy_reason().is_some() {
                    self.destroy_relayed(now, slot, None);
                }
            }
        }
    }

    fn count_error(&mut self, e: &HopError) {
        self.stats.dropped += 1;
        match e {
            HopError::Tampered => self.stats.tampered += 1,
            HopError::Replay(ReplayError::TooFarAhead) => self.stats.jumps_too_far += 1,
            _ => {}
        }
    }

    /// A relay message for us as the last hop of someone's circuit.
    fn last_hop_message(&mut self, now: Millis, slot: u64, early: bool, cmd: u8, payload: &[u8]) {
        match RelayCommand::from_u8(cmd) {
            Some(RelayCommand::Extend) => self.on_extend(now, slot, early, payload),
            Some(RelayCommand::Probe) => {
                // Echo, same size: liveness and RTT checks of a circuit.
                let Some(r) = self.relayed.get_mut(&slot) else {
                    return;
                };
                let mut cell = [0u8; CELL_LEN];
                let up = r.up.0;
                if r.hop
                    .originate(RelayCommand::ProbeReply, payload, &mut cell)
                    .is_ok()
                {
                    self.push_cell(up, cell);
                }
            }
            Some(RelayCommand::Drop) => {}
            Some(
                RelayCommand::DhtLookup
                | RelayCommand::EstablishIntro
                | RelayCommand::Introduce1
                | RelayCommand::EstablishRendezvous
                | RelayCommand::Rendezvous1,
            ) => {
                if let Some(r) = self.relayed.get_mut(&slot) {
                    r.role = true;
                    self.events.push_back(CircEvent::LastHop {
                        slot,
                        cmd,
                        payload: payload.to_vec(),
                    });
                }
            }
            _ => self.stats.dropped += 1,
        }
    }

    fn splice_data(&mut self, other: u64, payload: &[u8]) {
        let Some(r) = self.relayed.get_mut(&other) else {
            self.stats.dropped += 1;
            return;
        };
        let mut cell = [0u8; CELL_LEN];
        let up = r.up.0;
        if r.hop
            .originate(RelayCommand::Data, payload, &mut cell)
            .is_ok()
        {
            self.stats.relayed_cells += 1;
            self.push_cell(up, cell);
        }
    }

    /// Sends a relay message backward, to the client of a relayed circuit that ends at us (the
    /// answer of a last-hop role).
    pub fn reply(
        &mut self,
        slot: u64,
        cmd: RelayCommand,
        payload: &[u8],
    ) -> Result<(), CircuitError> {
        let r = self.relayed.get_mut(&slot).ok_or(CircuitError::NoCircuit)?;
        if r.down.is_some() {
            return Err(CircuitError::NoCircuit);
        }
        let mut cell = [0u8; CELL_LEN];
        let up = r.up.0;
        r.hop
            .originate(cmd, payload, &mut cell)
            .map_err(|e| CircuitError::Crypto(e.to_string()))?;
        self.push_cell(up, cell);
        Ok(())
    }

    /// `bind` of the handshake of a relayed circuit ending at us (binds an intro registration
    /// to its circuit, 10.6).
    pub fn relayed_bind(&self, slot: u64) -> Option<[u8; 32]> {
        self.relayed.get(&slot).map(|r| *r.hop.bind())
    }

    /// The link the client side of a relayed circuit arrives on (for per-source limits).
    pub fn relayed_upstream(&self, slot: u64) -> Option<LinkId> {
        self.relayed.get(&slot).map(|r| r.up.0)
    }

    /// Joins two relayed circuits that both end at us: from now on DATA arriving on one is sent
    /// backward on the other, and destroying one destroys both (10.6).
    pub fn splice(&mut self, a: u64, b: u64) -> Result<(), CircuitError> {
        if a == b {
            return Err(CircuitError::NoCircuit);
        }
        for s in [a, b] {
            let r = self.relayed.get(&s).ok_or(CircuitError::NoCircuit)?;
            if r.down.is_some() || r.splice.is_some() {
                return Err(CircuitError::NoCircuit);
            }
        }
        if let Some(r) = self.relayed.get_mut(&a) {
            r.splice = Some(b);
        }
        if let Some(r) = self.relayed.get_mut(&b) {
            r.splice = Some(a);
        }
        Ok(())
    }

    /// Starts recording what crosses our splices (see [`SplicedMessage`]).
    pub fn observe_splices(&mut self) {
        self.spliced_seen.get_or_insert_with(Vec::new);
    }

    /// What crossed our splices since [`observe_splices`](Self::observe_splices).
    pub fn spliced_seen(&self) -> &[SplicedMessage] {
        self.spliced_seen.as_deref().unwrap_or(&[])
    }

    /// Tears down a relayed circuit that ends at us (a role refused it).
    pub fn close_relayed(&mut self, now: Millis, slot: u64) {
        self.destroy_relayed(now, slot, None);
    }

    fn on_extend(&mut self, now: Millis, slot: u64, early: bool, payload: &[u8]) {
        let refuse = |this: &mut Self, status: ExtendedStatus| {
            if let Some(r) = this.relayed.get_mut(&slot) {
                let mut cell = [0u8; CELL_LEN];
                let up = r.up.0;
                if r.hop.fail_extend(status, &mut cell).is_ok() {
                    this.push_cell(up, cell);
                }
            }
        };
        let Ok(ext) = Extend::new_checked(payload) else {
            refuse(self, ExtendedStatus::Refused);
            return;
        };
        let Ok(spec) = LinkSpec::parse(ext.link_spec()) else {
            refuse(self, ExtendedStatus::Refused);
            return;
        };
        let mut create = [0u8; CREATE_HS_LEN];
        create.copy_from_slice(
            ext.create_handshake()
                .get(..CREATE_HS_LEN)
                .unwrap_or(&[0; CREATE_HS_LEN]),
        );
        let Some(r) = self.relayed.get_mut(&slot) else {
            return;
        };
        let upstream_identity = self.links.get(&r.up.0).and_then(|l| l.identity);
        if spec.identity == self.identity || Some(spec.identity) == upstream_identity {
            refuse(self, ExtendedStatus::Refused);
            return;
        }
        let Some(r) = self.relayed.get_mut(&slot) else {
            return;
        };
        if r.extend.as_ref().is_some_and(|e| e.create == create) {
            // The client resent an EXTEND we are still working on (its timer ran out before
            // our CREATE was answered): our own retries carry on.
            return;
        }
        if r.hop.begin_extend(early).is_err() {
            refuse(self, ExtendedStatus::Refused);
            return;
        }
        r.extend = Some(Box::new(PendingExtend {
            identity: spec.identity,
            link_key: spec.link_key,
            create,
            started: now,
            sent: None,
            retries: 0,
        }));
        let existing = self
            .links
            .iter()
            .find(|(_, l)| l.identity == Some(spec.identity))
            .map(|(id, _)| *id);
        match (existing, spec.endpoints.first()) {
            (Some(link), _) => self.send_extend_create(now, slot, link),
            (None, Some(ep)) => self.actions.push_back(CircAction::Connect {
                link_key: spec.link_key,
                endpoint: *ep,
            }),
            (None, None) => self.fail_extend_link(slot),
        }
    }

    fn send_extend_create(&mut self, now: Millis, slot: u64, link: LinkId) {
        let Some(id) = self.alloc_id(link, now) else {
            return;
        };
        let Some(r) = self.relayed.get_mut(&slot) else {
            return;
        };
        let Some(ext) = r.extend.as_mut() else { return };
        ext.sent = Some(now);
        let mut cell = [0u8; CELL_LEN];
        crate::wire::cell::emit_plain_cell(
            &mut cell,
            &CellHeader {
                circ_id: id,
                cmd: CellCommand::Create,
                seq: 0,
            },
            &ext.create,
        );
        r.down = Some((link, id));
        self.routes.insert((link, id), (slot, Dir::Down));
        if let Some(i) = self.links.get_mut(&link) {
            i.circuits += 1;
        }
        self.push_cell(link, cell);
    }

    fn extend_created(&mut self, now: Millis, slot: u64, cell: &[u8; CELL_LEN]) {
        let Some(r) = self.relayed.get_mut(&slot) else {
            return;
        };
        let Some((_, down_id)) = r.down else { return };
        let Some(create) = r.extend.as_ref().map(|e| e.create) else {
            self.stats.dropped += 1;
            return;
        };
        let mut created = [0u8; CREATED_HS_LEN];
        created.copy_from_slice(
            Cell::new(cell)
                .body()
                .get(..CREATED_HS_LEN)
                .unwrap_or(&[0; CREATED_HS_LEN]),
        );
        let mut out = [0u8; CELL_LEN];
        let up = r.up.0;
        r.last_cell = now;
        match r.hop.finish_extend(&created, down_id, &mut out) {
            Ok(()) => {
                r.extend = None;
                r.answer = Some(Box::new(Answer::Extended {
                    at: now,
                    resends: 0,
                    create,
                    cell: out,
                }));
                self.push_cell(up, out);
            }
            Err(_) => self.destroy_relayed(now, slot, None),
        }
    }

    /// Tears a relayed circuit down, telling the side(s) other than `from`.
    fn destroy_relayed(&mut self, now: Millis, slot: u64, from: Option<LinkId>) {
        let Some(r) = self.relayed.remove(&slot) else {
            return;
        };
        if r.role {
            self.events.push_back(CircEvent::RelayedClosed { slot });
        }
        if let Some(other) = r.splice {
            self.destroy_relayed(now, other, None);
        }
        let mut sides = vec![r.up];
        sides.extend(r.down);
        for (link, id) in sides {
            self.routes.remove(&(link, id));
            self.quarantine
                .insert((link, id), now + CIRC_ID_QUARANTINE_MS);
            if let Some(i) = self.links.get_mut(&link) {
                i.circuits = i.circuits.saturating_sub(1);
            }
            if Some(link) != from && self.links.contains_key(&link) {
                // Reasons never cross hops (6.1).
                self.send_destroy(link, id, DestroyReason::Destroyed);
            }
        }
    }

    // ---- our own circuits ----------------------------------------------------------------

    /// Starts building a circuit along `path` (first hop first).
    pub fn build(
        &mut self,
        now: Millis,
        purpose: Purpose,
        path: Vec<RelayRecord>,
        first_hop_link: Option<LinkId>,
    ) -> Result<CircId, CircuitError> {
        if path.is_empty() || path.len() > super::MAX_CIRCUIT_HOPS {
            return Err(CircuitError::Path("path: empty or too long".into()));
        }
        let charge = self
            .budget
            .try_charge(OWN_CIRCUIT_COST)
            .ok_or(CircuitError::Limit)?;
        let id = CircId(self.next_own);
        self.next_own += 1;
        let first = path.first().cloned();
        self.own.insert(
            id,
            Own {
                circ: None,
                path,
                link: None,
                circ_id: 0,
                state: OwnState::Linking,
                purpose,
                started: now,
                built_at: None,
                setup: None,
                setup_sent: now,
                setup_retries: 0,
                _charge: charge,
            },
        );
        let linked = first_hop_link
            .filter(|l| self.links.contains_key(l))
            .or_else(|| {
                let ident = first.as_ref().map(|r| *r.identity());
                self.links
                    .iter()
                    .find(|(_, l)| l.identity.is_some() && l.identity == ident)
                    .map(|(id, _)| *id)
            });
        match (linked, first) {
            (Some(link), _) => self.start_create(now, id, link),
            (None, Some(r)) => {
                if let Some(ep) = r.fields().endpoints.first() {
                    self.actions.push_back(CircAction::Connect {
                        link_key: r.fields().link_key,
                        endpoint: *ep,
                    });
                }
            }
            (None, None) => {}
        }
        Ok(id)
    }

    fn start_create(&mut self, now: Millis, id: CircId, link: LinkId) {
        let Some(circ_id) = self.alloc_id(link, now) else {
            self.close_own(now, id, "no free circuit id", false);
            return;
        };
        let Some(o) = self.own.get_mut(&id) else {
            return;
        };
        let Some(first) = o.path.first() else { return };
        let target = HopTarget {
            identity: *first.identity(),
            onion_key: first.fields().onion_key,
        };
        let mut cell = [0u8; CELL_LEN];
        match ClientCircuit::create(&mut self.secrets, circ_id, &target, &mut cell) {
            Ok(c) => {
                o.circ = Some(c);
                o.link = Some(link);
                o.circ_id = circ_id;
                o.state = OwnState::Extending { next: 0 };
                o.setup = Some(Box::new(cell));
                o.setup_sent = now;
                o.setup_retries = 0;
                self.own_routes.insert((link, circ_id), id);
                if let Some(i) = self.links.get_mut(&link) {
                    i.circuits += 1;
                }
                self.push_cell(link, cell);
            }
            Err(e) => self.close_own(now, id, &format!("CREATE: {e}"), true),
        }
    }

    fn own_created(&mut self, now: Millis, id: CircId, cell: &[u8; CELL_LEN]) {
        let Some(o) = self.own.get_mut(&id) else {
            return;
        };
        if !matches!(o.state, OwnState::Extending { next: 0 }) {
            // A duplicate CREATED (we resent CREATE): the first one already counted.
            self.stats.dropped += 1;
            return;
        }
        let Some(c) = o.circ.as_mut() else { return };
        if let Err(e) = c.on_created(cell) {
            self.close_own(now, id, &format!("CREATED: {e}"), true);
            return;
        }
        self.extend_or_finish(now, id, 1);
    }

    fn extend_or_finish(&mut self, now: Millis, id: CircId, next: usize) {
        let Some(o) = self.own.get_mut(&id) else {
            return;
        };
        if next >= o.path.len() {
            o.state = OwnState::Ready;
            o.setup = None;
            if o.built_at.is_some() {
                let hops = o.path.len();
                self.events.push_back(CircEvent::Extended { id, hops });
                return;
            }
            o.built_at = Some(now);
            let build_ms = now.saturating_sub(o.started);
            self.stats.built += 1;
            self.events.push_back(CircEvent::Built { id, build_ms });
            return;
        }
        let Some(target_rec) = o.path.get(next) else {
            return;
        };
        let target = HopTarget {
            identity: *target_rec.identity(),
            onion_key: target_rec.fields().onion_key,
        };
        let spec = match LinkSpec::of_record(target_rec).emit() {
            Ok(s) => s,
            Err(e) => {
                self.close_own(now, id, &format!("link specifier: {e}"), true);
                return;
            }
        };
        let spec: [u8; EXTEND_LINK_SPEC_LEN] = spec;
        let (Some(link), Some(c)) = (o.link, o.circ.as_mut()) else {
            return;
        };
        let mut cell = [0u8; CELL_LEN];
        match c.extend(&mut self.secrets, &target, &spec, &mut cell) {
            Ok(()) => {
                o.state = OwnState::Extending { next };
                o.setup = Some(Box::new(cell));
                o.setup_sent = now;
                o.setup_retries = 0;
                self.push_cell(link, cell);
            }
            Err(e) => self.close_own(now, id, &format!("EXTEND: {e}"), true),
        }
    }

    fn own_receive(&mut self, now: Millis, id: CircId, cell: &mut [u8; CELL_LEN]) {
        let Some(o) = self.own.get_mut(&id) else {
            return;
        };
        let Some(c) = o.circ.as_mut() else { return };
        let mut buf = self
            .payloads
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(RELAY_PAYLOAD_LEN));
        buf.clear();
        let (cmd, payload) = match c.receive(cell) {
            Ok(m) => {
                buf.extend_from_slice(m.payload());
                (m.cmd_raw(), buf)
            }
            Err(e) => {
                self.stats.dropped += 1;
                if e == ClientError::Replay(ReplayError::TooFarAhead) {
                    self.stats.jumps_too_far += 1;
                }
                if e.tears_down() {
                    self.close_own(now, id, &format!("circuit broken: {e}"), true);
                }
                return;
            }
        };
        if cmd == RelayCommand::Extended as u8 {
            let next = match o.state {
                OwnState::Extending { next } => next,
                _ => {
                    self.stats.dropped += 1;
                    return;
                }
            };
            let target = o.path.get(next).map(|r| *r.identity());
            let Some(c) = o.circ.as_mut() else { return };
            match c.on_extended(&payload) {
                Ok(()) => self.extend_or_finish(now, id, next + 1),
                Err(e) => {
                    // Status 1 (no link) or 6 (timed out): the relay before could not reach
                    // it, which is what a dead relay looks like.
                    if matches!(e, ClientError::ExtendFailed(1 | 6)) {
                        if let Some(t) = target {
                            if self.unreachable.len() < 64 {
                                self.unreachable.push(t);
                            }
                        }
                    }
                    self.close_own(now, id, &format!("EXTENDED: {e}"), true)
                }
            }
            return;
        }
        self.events
            .push_back(CircEvent::Message { id, cmd, payload });
    }

    /// Relays an extension of ours failed to reach since the last call (EXTENDED status 1 or 6).
    pub fn take_unreachable(&mut self) -> Vec<[u8; 32]> {
        std::mem::take(&mut self.unreachable)
    }

    /// Returns the payload buffer of a [`CircEvent::Message`] for reuse.
    pub fn recycle_payload(&mut self, buf: Vec<u8>) {
        if self.payloads.len() < 64 && buf.capacity() >= RELAY_PAYLOAD_LEN {
            self.payloads.push(buf);
        }
    }

    /// Sends a relay message to the last hop of our built circuit.
    pub fn send(
        &mut self,
        id: CircId,
        cmd: RelayCommand,
        payload: &[u8],
    ) -> Result<(), CircuitError> {
        let o = self.own.get_mut(&id).ok_or(CircuitError::NoCircuit)?;
        if !matches!(o.state, OwnState::Ready) {
            return Err(CircuitError::NoCircuit);
        }
        let link = o.link.ok_or(CircuitError::NoCircuit)?;
        let c = o.circ.as_mut().ok_or(CircuitError::NoCircuit)?;
        let mut cell = [0u8; CELL_LEN];
        c.send(cmd, payload, &mut cell)
            .map_err(|e| CircuitError::Crypto(e.to_string()))?;
        self.push_cell(link, cell);
        Ok(())
    }

    /// Extends our built circuit by one hop to `target` (a 4th hop to an intro or rendezvous
    /// point). [`CircEvent::Extended`] follows, or [`CircEvent::Closed`].
    pub fn extend(
        &mut self,
        now: Millis,
        id: CircId,
        target: RelayRecord,
    ) -> Result<(), CircuitError> {
        let o = self.own.get_mut(&id).ok_or(CircuitError::NoCircuit)?;
        if !matches!(o.state, OwnState::Ready) {
            return Err(CircuitError::NoCircuit);
        }
        if o.path.len() >= super::MAX_CIRCUIT_HOPS {
            return Err(CircuitError::Path("path: too long to extend".into()));
        }
        if o.path.iter().any(|h| h.identity() == target.identity()) {
            return Err(CircuitError::Path(
                "path: relay already on the circuit".into(),
            ));
        }
        o.path.push(target);
        let next = o.path.len() - 1;
        self.extend_or_finish(now, id, next);
        Ok(())
    }

    /// Sets what one of our circuits is for (a pool circuit taken for a use).
    pub fn set_purpose(&mut self, id: CircId, purpose: Purpose) {
        if let Some(o) = self.own.get_mut(&id) {
            o.purpose = purpose;
        }
    }

    /// The path of one of our circuits, first hop first.
    pub fn path(&self, id: CircId) -> Option<&[RelayRecord]> {
        self.own.get(&id).map(|o| o.path.as_slice())
    }

    /// Ready circuits of `purpose`, oldest first.
    pub fn ready_ids(&self, purpose: Purpose) -> Vec<CircId> {
        let mut v: Vec<(Millis, CircId)> = self
            .own
            .iter()
            .filter(|(_, o)| o.purpose == purpose && matches!(o.state, OwnState::Ready))
            .map(|(id, o)| (o.built_at.unwrap_or(0), *id))
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// `bind` of hop `i` of our built circuit (10.6: ESTABLISH_INTRO signs the intro point's).
    pub fn hop_bind(&self, id: CircId, i: usize) -> Option<[u8; 32]> {
        self.own
            .get(&id)
            .and_then(|o| o.circ.as_ref())
            .and_then(|c| c.hop_bind(i).copied())
    }

    /// Tears one of our circuits down.
    pub fn destroy(&mut self, now: Millis, id: CircId) {
        self.close_own(now, id, "closed by us", true);
    }

    fn close_own(&mut self, now: Millis, id: CircId, why: &str, tell: bool) {
        let Some(o) = self.own.remove(&id) else {
            return;
        };
        if let Some(link) = o.link {
            self.own_routes.remove(&(link, o.circ_id));
            self.quarantine
                .insert((link, o.circ_id), now + CIRC_ID_QUARANTINE_MS);
            if let Some(i) = self.links.get_mut(&link) {
                i.circuits = i.circuits.saturating_sub(1);
            }
            if tell && o.circ_id != 0 {
                self.send_destroy(link, o.circ_id, DestroyReason::Requested);
            }
        }
        if o.built_at.is_none() {
            self.stats.build_failures += 1;
        }
        tracing::debug!(circuit = id.0, why, "circuit closed");
        self.events.push_back(CircEvent::Closed {
            id,
            why: why.to_string(),
        });
    }

    // ---- timers --------------------------------------------------------------------------

    /// Timeouts: builds, extends, idle and old circuits, quarantine.
    pub fn handle_timeout(&mut self, now: Millis) {
        self.quarantine.retain(|_, t| now < *t);
        self.onion.expire(now);
        if self.relay && self.onion.due(now) {
            let next = OnionKey::generate(&mut self.secrets);
            tracing::info!(key = ?next, "onion key rotated; the previous one is accepted for 2 days");
            self.rotated = Some(next.clone());
            self.onion.rotate(now, next);
        }
        let stale: Vec<CircId> = self
            .own
            .iter()
            .filter(|(_, o)| match o.built_at {
                None => now.saturating_sub(o.started) >= CIRCUIT_BUILD_TIMEOUT_MS,
                Some(b) => now.saturating_sub(b) >= CIRCUIT_MAX_AGE_MS,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            let why = match self.own.get(&id) {
                Some(o) if o.built_at.is_some() => "retired (age)".to_string(),
                Some(o) => match o.state {
                    OwnState::Linking => {
                        if let Some(first) = o.path.first() {
                            if self.unreachable.len() < 64 {
                                self.unreachable.push(*first.identity());
                            }
                        }
                        "build timed out (no link to the first hop)".to_string()
                    }
                    OwnState::Extending { next } => {
                        format!("build timed out (hop {} of {})", next + 1, o.path.len())
                    }
                    OwnState::Ready => "build timed out".to_string(),
                },
                None => continue,
            };
            self.close_own(now, id, &why, true);
        }
        let mut failed_extends = Vec::new();
        let mut expired = Vec::new();
        for (slot, r) in &self.relayed {
            if r.extend
                .as_ref()
                .is_some_and(|e| now.saturating_sub(e.started) >= EXTEND_TIMEOUT_MS)
            {
                failed_extends.push(*slot);
            }
            if now.saturating_sub(r.last_cell) >= RELAY_CIRCUIT_IDLE_TIMEOUT_MS
                || now.saturating_sub(r.created_at) >= CIRCUIT_HARD_MAX_AGE_MS
            {
                expired.push(*slot);
            }
        }
        // Resend unanswered CREATE/EXTEND cells, identically (a duplicate that did arrive is
        // answered again by the relay, or dropped by its replay window).
        let mut resend: Vec<(LinkId, [u8; CELL_LEN])> = Vec::new();
        for o in self.own.values_mut() {
            let Some(link) = o.link else { continue };
            match o.state {
                OwnState::Extending { next: 0 } => {
                    if let Some(cell) = o.setup.as_ref() {
                        if now.saturating_sub(o.setup_sent) >= CREATE_RETRY_MS
                            && o.setup_retries < CREATE_RETRIES
                        {
                            o.setup_retries += 1;
                            o.setup_sent = now;
                            resend.push((link, **cell));
                        }
                    }
                }
                OwnState::Extending { .. }
                    if now.saturating_sub(o.setup_sent) >= EXTEND_RESEND_MS
                        && o.setup_retries < EXTEND_RESENDS =>
                {
                    let mut cell = [0u8; CELL_LEN];
                    if let Some(c) = o.circ.as_mut() {
                        if c.resend_extend(&mut cell).is_ok() {
                            o.setup_retries += 1;
                            o.setup_sent = now;
                            resend.push((link, cell));
                        }
                    }
                }
                _ => {}
            }
        }
        for r in self.relayed.values_mut() {
            let Some(Answer::Extended {
                at, resends, cell, ..
            }) = r.answer.as_deref_mut()
            else {
                continue;
            };
            // After the timed resends the answer stays for a resent EXTEND (8.4), until the
            // client's next cell or the circuit's end.
            if now.saturating_sub(*at) >= EXTENDED_RESEND_MS && *resends < EXTENDED_RESENDS {
                *at = now;
                *resends += 1;
                resend.push((r.up.0, *cell));
            }
        }
        for r in self.relayed.values_mut() {
            let Some((link, id)) = r.down else { continue };
            let Some(ext) = r.extend.as_mut() else {
                continue;
            };
            if let Some(sent) = ext.sent {
                if now.saturating_sub(sent) >= CREATE_RETRY_MS && ext.retries < CREATE_RETRIES {
                    ext.retries += 1;
                    ext.sent = Some(now);
                    let mut cell = [0u8; CELL_LEN];
                    crate::wire::cell::emit_plain_cell(
                        &mut cell,
                        &CellHeader {
                            circ_id: id,
                            cmd: CellCommand::Create,
                            seq: 0,
                        },
                        &ext.create,
                    );
                    resend.push((link, cell));
                }
            }
        }
        for (link, cell) in resend {
            self.push_cell(link, cell);
        }
        for slot in failed_extends {
            if let Some(r) = self.relayed.get_mut(&slot) {
                r.extend = None;
                if let Some(d) = r.down.take() {
                    self.routes.remove(&d);
                    self.quarantine.insert(d, now + CIRC_ID_QUARANTINE_MS);
                }
                let mut cell = [0u8; CELL_LEN];
                let up = r.up.0;
                if r.hop
                    .fail_extend(ExtendedStatus::Timeout, &mut cell)
                    .is_ok()
                {
                    self.push_cell(up, cell);
                }
            }
        }
        for slot in expired {
            self.destroy_relayed(now, slot, None);
        }
    }
}

/// Approximate bytes of relay state per circuit (hop state plus the two route entries).
pub fn relay_state_bytes() -> usize {
    std::mem::size_of::<Relayed>()
        + 2 * (std::mem::size_of::<(LinkId, u32)>() + std::mem::size_of::<(u64, Dir)>())
}
