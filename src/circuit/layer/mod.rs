//! Circuits in the network (DESIGN.md sections 5-6, docs/protocol.md sections 6-9): building and
//! extending our own circuits over links, relaying cells for others with per-link circuit ids,
//! teardown, expiry and the limits a stranger cannot exceed.
//!
//! A sans-IO state machine above the link layer: it is fed link events and cells
//! ([`CircuitLayer::on_link_up`], [`CircuitLayer::on_cell`], ...) with the current time, and emits
//! actions for the link layer ([`CircuitLayer::poll_action`]: send this cell on that link, dial
//! that relay) and events for the layers above ([`CircuitLayer::poll_event`]). A relay's state per
//! circuit is its [`RelayHop`](crate::circuit::RelayHop) plus the two (link, circuit id) pairs it
//! joins: it never learns more than its two neighbours on the circuit.
//!
//! By role: this file holds the façade (ids, actions, events, counters, links, cell dispatch and
//! the timer entry point), `origin.rs` the circuits we build, `relay.rs` the circuits we carry for
//! others. Both roles share the links, the circuit-id space and the quarantine.

mod origin;
mod relay;

use rand::rngs::StdRng;
use rand::Rng;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use super::handshake::OnionKey;
use super::onion::OnionKeys;
use crate::budget::MemoryBudget;
use crate::crypto::{Randomness, SecretRng};
use crate::link::LinkId;
use crate::time::{Bucket, Expiring, Instant, Millis};
use crate::wire::cell::{Cell, CellCommand, DestroyBody, DestroyReason, CELL_HEADER_LEN, CELL_LEN};
use origin::{Own, OwnState};
pub use relay::relay_state_bytes;
use relay::Relayed;

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
    /// To an exit, carrying `EXIT_PACKET`s.
    Exit,
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
            Purpose::Exit => "exit",
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
    links: BTreeMap<LinkId, LinkInfo>,
    relayed: BTreeMap<u64, Relayed>,
    routes: BTreeMap<(LinkId, u32), (u64, Dir)>,
    next_slot: u64,
    own: BTreeMap<CircId, Own>,
    own_routes: BTreeMap<(LinkId, u32), CircId>,
    next_own: u64,
    quarantine: Expiring<(LinkId, u32)>,
    total_creates: Bucket,
    actions: VecDeque<CircAction>,
    events: VecDeque<CircEvent>,
    stats: CircuitStats,
    /// Payload buffers of delivered messages, handed back with [`CircuitLayer::recycle_payload`]
    /// so that a steady stream of DATA allocates nothing per message.
    payloads: Vec<Vec<u8>>,
    /// Relays our extensions could not reach, for [`CircuitLayer::take_unreachable`]; `true`
    /// when another relay reported it (EXTENDED status 1 or 6), `false` when we could not link
    /// to it as a first hop ourselves.
    unreachable: Vec<([u8; 32], bool)>,
    /// What crossed our splices, when a test asked (`None`: nothing is recorded).
    spliced_seen: Option<Vec<SplicedMessage>>,
    /// Our circuits retire at this age: [`CIRCUIT_MAX_AGE_MS`] but in tests that need a
    /// rotation soon ([`CircuitLayer::set_max_age`]).
    max_age: Millis,
    /// No relayed circuit's setup timer (EXTEND timeout, CREATE and EXTENDED resends) is due
    /// before this: lowered where one is armed, recomputed by `relay_timeouts` (see
    /// [`CircuitLayer::deadline`]).
    relay_timer: Option<Instant>,
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
    /// Entries of the layer's tables, by table (the simulator's memory trace, issue #25).
    pub fn table_sizes(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("circ.links", self.links.len()),
            ("circ.relayed", self.relayed.len()),
            ("circ.routes", self.routes.len()),
            ("circ.own", self.own.len()),
            ("circ.own_routes", self.own_routes.len()),
            ("circ.quarantine", self.quarantine.len()),
            ("circ.actions", self.actions.len()),
            ("circ.events", self.events.len()),
            ("circ.payloads", self.payloads.len()),
            ("circ.unreachable", self.unreachable.len()),
            (
                "circ.spliced_seen",
                self.spliced_seen.as_ref().map_or(0, |v| v.len()),
            ),
        ]
    }

    /// A circuit layer for a node with relay `identity` and the current onion key.
    pub fn new(
        identity: [u8; 32],
        onion: OnionKey,
        relay: bool,
        budget: MemoryBudget,
        rand: Randomness,
        now: Instant,
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
            links: BTreeMap::new(),
            relayed: BTreeMap::new(),
            routes: BTreeMap::new(),
            next_slot: 1,
            own: BTreeMap::new(),
            own_routes: BTreeMap::new(),
            next_own: 1,
            quarantine: Expiring::new(),
            total_creates: Bucket::new(CREATE_RATE_TOTAL, now),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            stats: CircuitStats::default(),
            payloads: Vec::new(),
            unreachable: Vec::new(),
            spliced_seen: None,
            max_age: CIRCUIT_MAX_AGE_MS,
            relay_timer: None,
        }
    }

    /// Retire our circuits at `ms` instead of [`CIRCUIT_MAX_AGE_MS`], never later: a test hook
    /// (the daemon's `GLOBALNET_TEST_CIRCUIT_MAX_AGE_MS`), so a test sees circuits rotate
    /// within its run.
    pub fn set_max_age(&mut self, ms: Millis) {
        self.max_age = ms.min(CIRCUIT_MAX_AGE_MS);
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
    pub fn set_onion_key_since(&mut self, since: Instant) {
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

    /// Links that carry at least one circuit (ours or relayed).
    pub fn links_in_use(&self) -> impl Iterator<Item = LinkId> + '_ {
        self.links
            .iter()
            .filter(|(_, i)| i.circuits > 0)
            .map(|(id, _)| *id)
    }

    // ---- links ---------------------------------------------------------------------------

    /// A link completed HELLO. `ours`/`theirs` are the two link keys (for id allocation).
    pub fn on_link_up(
        &mut self,
        now: Instant,
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
        if let Some(ident) = identity {
            self.start_waiting(now, link, ident);
        }
    }

    /// A link that came up anonymous is now known to be this relay's (its record came in a
    /// later HELLO): builds and extensions waiting for the relay use it.
    pub fn on_link_identified(&mut self, now: Instant, link: LinkId, identity: [u8; 32]) {
        let Some(info) = self.links.get_mut(&link) else {
            return;
        };
        info.identity = Some(identity);
        self.start_waiting(now, link, identity);
    }

    /// Builds waiting for this first hop, and extends waiting for this target.
    fn start_waiting(&mut self, now: Instant, link: LinkId, ident: [u8; 32]) {
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

    /// A link is gone: every circuit on it ends; relayed ones are destroyed on their other side.
    pub fn on_link_down(&mut self, now: Instant, link: LinkId) {
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

    fn alloc_id(&mut self, link: LinkId, now: Instant) -> Option<u32> {
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
            let quarantined = self.quarantine.contains(&key, now);
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
    pub fn on_cell(&mut self, now: Instant, link: LinkId, bytes: &[u8]) {
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
        if self.quarantine.contains(&key, now) {
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

    // ---- timers --------------------------------------------------------------------------

    /// Timeouts: builds, extends, idle and old circuits, quarantine. Each role keeps its own
    /// timers (`origin.rs`, `relay.rs`); ours run first, so the cells they resend queue ahead of
    /// the relayed circuits' cells.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.quarantine.sweep(now);
        self.onion_key_timers(now);
        self.origin_timeouts(now);
        self.relay_timeouts(now);
    }

    /// When [`CircuitLayer::handle_timeout`] next has something to do that cannot wait for the
    /// node's once-a-second cap (`node::UPPER_CAP_MS`), exactly: our circuits' build timeouts,
    /// retirements and CREATE/EXTEND resends (O(our circuits)), and relayed circuits' EXTEND
    /// timeouts and CREATED/EXTENDED resends (a bound kept as they are armed, O(1): a relay
    /// carries thousands of circuits and this is asked on every turn of the daemon's loop).
    /// Relayed circuits' idle and age limits (15 min, 2 h), onion key rotation (days) and the
    /// quarantine sweep (ids it holds are refused by their own expiry) ride on the cap, up to a
    /// second late. May be early (a timer armed and then answered): one wake-up for nothing.
    pub fn deadline(&self) -> Option<Instant> {
        let own = self.own.values().map(|o| o.deadline(self.max_age)).min();
        match (own, self.relay_timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Lowers the relayed circuits' timer bound to `at`.
    pub(super) fn arm_relay_timer(&mut self, at: Instant) {
        self.relay_timer = Some(self.relay_timer.map_or(at, |t| t.min(at)));
    }
}
