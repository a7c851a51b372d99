//! The two roles a relay plays for hidden services at the last hop of someone else's circuit
//! (docs/protocol.md 10.6): the **intro point**, which holds one intro auth key per circuit and
//! passes introductions to the service, and the **rendezvous point**, which holds a client's
//! cookie until the service's RENDEZVOUS1 arrives and then splices the two circuits.
//!
//! Pure tables: the node feeds them the slot (the relayed circuit's local name), the bytes and
//! the time, and acts on what they return (replies, INTRODUCE2, splices). They never see a
//! service key or an underlay address: an auth key identifies a registration, a cookie a
//! meeting, and slots name circuits only locally. Every entry is bounded and charged to the
//! memory budget.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::budget::{Charge, MemoryBudget};
use crate::link::LinkId;
use crate::time::{Bucket, Millis};

use super::intro::{
    EstablishIntro, IntroError, Introduce1, RendCookie, Rendezvous1, INTRO_VERSION, RENDEZVOUS2_LEN,
};

/// INTRODUCE1 messages per second an intro point passes on for one auth key.
pub const INTRO_RATE: f64 = 25.0;
/// Burst of [`INTRO_RATE`].
pub const INTRO_BURST: f64 = 200.0;
/// Replay tags kept per auth key (oldest evicted).
pub const INTRO_REPLAY_CACHE_MAX: usize = 65_536;
/// An unused rendezvous cookie is forgotten after this long.
pub const REND_COOKIE_LIFETIME_MS: Millis = 120_000;
/// Intro registrations one relay holds.
pub const MAX_INTRO_REGISTRATIONS: usize = 4096;
/// Intro registrations whose circuits arrive over one upstream link. The link is the only
/// source a relay can see; an honest relay passes on a handful of services' intro circuits to
/// any one intro point, so 64 binds only a flooder (and the services that share its relay, which
/// then pick another intro point).
pub const MAX_INTRO_REGISTRATIONS_PER_LINK: usize = 64;
/// INTRODUCE1 messages one client circuit may send. An honest client sends one and closes the
/// circuit; the second is room for a resend (which the replay cache then drops).
pub const MAX_INTRODUCE1_PER_CIRCUIT: u8 = 2;
/// INTRODUCE1 messages per second from circuits arriving over one upstream link.
pub const INTRO_LINK_RATE: f64 = 50.0;
/// Burst of [`INTRO_LINK_RATE`].
pub const INTRO_LINK_BURST: f64 = 500.0;
/// Replay tags held for registrations arriving over one upstream link.
pub const MAX_REPLAY_TAGS_PER_LINK: usize = 65_536;
/// Replay tags held for all registrations together.
pub const MAX_REPLAY_TAGS: usize = 262_144;
/// Upstream links with an INTRODUCE1 rate bucket held at once (more than a node has links).
const MAX_INTRO_LINK_BUCKETS: usize = 4096;
/// Rendezvous cookies one relay holds.
pub const MAX_REND_COOKIES: usize = 16_384;
/// Bytes charged per registration (key, bucket, map entries, its place in its link's list).
pub const INTRO_REG_COST: usize = 256;
/// Bytes charged per replay tag (the tag in a set and a queue).
pub const REPLAY_TAG_COST: usize = 80;
/// Bytes charged per client circuit that sent an INTRODUCE1 (its counter, until it closes).
pub const INTRO_CLIENT_COST: usize = 64;
/// Bytes charged per cookie.
const REND_COOKIE_COST: usize = 128;

/// Status codes of INTRO_ESTABLISHED, INTRODUCE_ACK and RENDEZVOUS_ESTABLISHED (7.2).
pub mod status {
    /// Accepted.
    pub const OK: u8 = 0;
    /// Unknown auth key or cookie.
    pub const UNKNOWN: u8 = 1;
    /// Replayed.
    pub const REPLAY: u8 = 2;
    /// Over a rate limit.
    pub const RATE_LIMITED: u8 = 3;
    /// Malformed or refused by policy (also: the circuit already has another role).
    pub const REFUSED: u8 = 4;
    /// The auth key or cookie is already in use.
    pub const EXISTS: u8 = 5;
    /// Timed out.
    pub const TIMEOUT: u8 = 6;
}

/// The 4-byte body of INTRO_ESTABLISHED, INTRODUCE_ACK and RENDEZVOUS_ESTABLISHED.
pub fn status_body(code: u8) -> [u8; 4] {
    [INTRO_VERSION, code, 0, 0]
}

/// Parses a status body (version 1, at least 4 bytes; later bytes are a later version's).
pub fn parse_status(body: &[u8]) -> Result<u8, IntroError> {
    match body {
        [v, code, _, _, ..] if *v == INTRO_VERSION => Ok(*code),
        [v, ..] if *v != INTRO_VERSION => Err(IntroError::Version(*v)),
        _ => Err(IntroError::Length),
    }
}

/// Length of ESTABLISH_RENDEZVOUS: `version` ‖ 3 reserved ‖ cookie.
pub const ESTABLISH_RENDEZVOUS_LEN: usize = 36;

/// The ESTABLISH_RENDEZVOUS body.
pub fn establish_rendezvous_body(cookie: &RendCookie) -> [u8; ESTABLISH_RENDEZVOUS_LEN] {
    let mut b = [0u8; ESTABLISH_RENDEZVOUS_LEN];
    b[0] = INTRO_VERSION;
    b[4..].copy_from_slice(cookie.as_bytes());
    b
}

/// Parses an ESTABLISH_RENDEZVOUS body.
pub fn parse_establish_rendezvous(body: &[u8]) -> Result<RendCookie, IntroError> {
    let b: &[u8; ESTABLISH_RENDEZVOUS_LEN] = body.try_into().map_err(|_| IntroError::Length)?;
    if b[0] != INTRO_VERSION {
        return Err(IntroError::Version(b[0]));
    }
    let mut c = [0u8; 32];
    c.copy_from_slice(&b[4..]);
    Ok(RendCookie(c))
}

/// A token bucket with a rate and a burst (used by services for `SERVICE_INTRO_RATE`).
pub struct RateLimit {
    bucket: Bucket,
    rate: f64,
    burst: f64,
}

impl RateLimit {
    /// Full at `now`.
    pub fn new(rate: f64, burst: f64, now: Millis) -> RateLimit {
        RateLimit {
            bucket: Bucket::new(burst, now),
            rate,
            burst,
        }
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now: Millis) -> bool {
        self.bucket.take(now, self.rate, self.burst)
    }
}

/// A bounded set of recent 32-byte tags, oldest evicted first, charged to the budget per tag
/// held: a cache that sees one introduction costs one tag, not a chunk it may never fill.
/// `false` from [`ReplayCache::insert`] means seen before (or no memory: refused).
pub struct ReplayCache {
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
    max: usize,
    charge: Charge,
}

impl ReplayCache {
    /// Holds at most `max` tags.
    pub fn new(max: usize, budget: MemoryBudget) -> ReplayCache {
        ReplayCache {
            set: HashSet::new(),
            order: VecDeque::new(),
            max,
            charge: budget.empty_charge(),
        }
    }

    /// Whether `tag` was seen.
    pub fn contains(&self, tag: &[u8; 32]) -> bool {
        self.set.contains(tag)
    }

    /// Inserts `tag`; `Err(true)` if it was there (a replay), `Err(false)` if the budget
    /// refused the memory.
    pub fn insert(&mut self, tag: [u8; 32]) -> Result<(), bool> {
        if self.set.contains(&tag) {
            return Err(true);
        }
        if self.order.len() >= self.max {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        } else if !self.charge.try_grow(REPLAY_TAG_COST) {
            return Err(false);
        }
        self.set.insert(tag);
        self.order.push_back(tag);
        Ok(())
    }

    /// Forgets the oldest tag and releases its memory; `false` if empty.
    pub fn pop_oldest(&mut self) -> bool {
        match self.order.pop_front() {
            Some(old) => {
                self.set.remove(&old);
                self.charge.shrink(REPLAY_TAG_COST);
                true
            }
            None => false,
        }
    }

    /// Whether the next insert replaces the oldest tag instead of growing.
    pub fn is_full(&self) -> bool {
        self.order.len() >= self.max
    }

    /// Tags held.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

struct IntroReg {
    auth_key: [u8; 32],
    /// The link the registering circuit arrived over: the registration's source.
    up: LinkId,
    replay: ReplayCache,
    bucket: Bucket,
    introductions: u64,
    _charge: Charge,
}

/// Counters of both roles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleStats {
    /// Registrations accepted.
    pub intro_established: u64,
    /// Registrations moved to a new circuit of the same auth key's holder.
    pub intro_moved: u64,
    /// Introductions passed to a service.
    pub introductions: u64,
    /// INTRODUCE1 dropped as replays.
    pub replays: u64,
    /// INTRODUCE1 refused by the rate limit.
    pub rate_limited: u64,
    /// Messages refused (malformed, wrong role, unknown key, limits).
    pub refused: u64,
    /// Registrations dropped to free memory for another link's (the largest consumer's first).
    pub intro_evicted: u64,
    /// Replay tags forgotten early because their link or the relay held its share.
    pub tags_shed: u64,
    /// Cookies registered.
    pub cookies: u64,
    /// Circuit pairs spliced.
    pub splices: u64,
}

/// What the intro point does with an INTRODUCE1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntroduceOutcome {
    /// Send the same bytes as INTRODUCE2 on `service_slot`, and INTRODUCE_ACK(0) to the client.
    Forward {
        /// The service's intro circuit.
        service_slot: u64,
    },
    /// Answer INTRODUCE_ACK with this status and pass nothing on.
    Refuse(u8),
}

/// What one upstream link holds in the intro-point role.
#[derive(Default)]
struct LinkUse {
    /// Its registrations, oldest first (at most [`MAX_INTRO_REGISTRATIONS_PER_LINK`]).
    slots: Vec<u64>,
    /// Replay tags its registrations hold.
    tags: usize,
}

impl LinkUse {
    fn bytes(&self) -> usize {
        self.slots.len() * INTRO_REG_COST + self.tags * REPLAY_TAG_COST
    }
}

/// A client circuit's INTRODUCE1 count.
struct IntroClient {
    sent: u8,
    _charge: Charge,
}

/// The intro-point role: registrations by circuit and by auth key, accounted per upstream link
/// so that memory pressure falls on the link that holds the most (docs/protocol.md section 15).
pub struct IntroPointRole {
    by_slot: HashMap<u64, IntroReg>,
    by_key: HashMap<[u8; 32], u64>,
    by_link: HashMap<LinkId, LinkUse>,
    clients: HashMap<u64, IntroClient>,
    link_rate: HashMap<LinkId, Bucket>,
    tags: usize,
    evicted: Vec<u64>,
    budget: MemoryBudget,
    /// Counters.
    pub stats: RoleStats,
}

impl IntroPointRole {
    /// An empty role charging `budget`.
    pub fn new(budget: MemoryBudget) -> IntroPointRole {
        IntroPointRole {
            by_slot: HashMap::new(),
            by_key: HashMap::new(),
            by_link: HashMap::new(),
            clients: HashMap::new(),
            link_rate: HashMap::new(),
            tags: 0,
            evicted: Vec::new(),
            budget,
            stats: RoleStats::default(),
        }
    }

    /// Whether `slot` is a registered intro circuit.
    pub fn holds(&self, slot: u64) -> bool {
        self.by_slot.contains_key(&slot)
    }

    /// Registrations held.
    pub fn len(&self) -> usize {
        self.by_slot.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.by_slot.is_empty()
    }

    /// Replay tags held by all registrations.
    pub fn replay_tags(&self) -> usize {
        self.tags
    }

    /// Replay tags held by the registration on `slot`.
    pub fn replay_tags_of(&self, slot: u64) -> usize {
        self.by_slot.get(&slot).map_or(0, |r| r.replay.len())
    }

    /// The auth keys registered here (for tests asserting what an intro point holds).
    pub fn auth_keys(&self) -> Vec<[u8; 32]> {
        self.by_key.keys().copied().collect()
    }

    /// Registrations dropped for memory since the last call: the caller closes their circuits,
    /// so their services notice and register elsewhere.
    pub fn take_evicted(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.evicted)
    }

    /// ESTABLISH_INTRO on `slot`, which arrived over `up` and whose handshake `bind` is `bind`.
    /// The caller has checked that the circuit has no other role. Returns the INTRO_ESTABLISHED
    /// status.
    pub fn establish(
        &mut self,
        now: Millis,
        slot: u64,
        up: LinkId,
        bind: &[u8; 32],
        body: &[u8],
    ) -> u8 {
        let code = self.try_establish(now, slot, up, bind, body);
        if code == status::OK {
            self.stats.intro_established += 1;
        } else {
            self.stats.refused += 1;
        }
        code
    }

    fn try_establish(
        &mut self,
        now: Millis,
        slot: u64,
        up: LinkId,
        bind: &[u8; 32],
        body: &[u8],
    ) -> u8 {
        let Ok(est) = EstablishIntro::parse(body) else {
            return status::REFUSED;
        };
        if est.verify(bind).is_err() {
            return status::REFUSED;
        }
        if self.by_slot.contains_key(&slot) {
            return status::EXISTS;
        }
        // The key's holder on a new circuit (its signature covers this circuit's bind): the
        // service lost its old circuit to us, perhaps before we noticed. The registration moves,
        // replay cache and all, so descriptors listing us stay good. A move adds nothing, so the
        // per-link cap does not apply; the tags move to the new link's account.
        if let Some(old) = self.by_key.get(&est.auth_key).copied() {
            if let Some(mut reg) = self.by_slot.remove(&old) {
                self.unlink(reg.up, old, reg.replay.len());
                reg.up = up;
                let u = self.by_link.entry(up).or_default();
                u.slots.push(slot);
                u.tags += reg.replay.len();
                self.by_key.insert(est.auth_key, slot);
                self.by_slot.insert(slot, reg);
                self.stats.intro_moved += 1;
                return status::OK;
            }
        }
        if self.by_slot.len() >= MAX_INTRO_REGISTRATIONS {
            return status::RATE_LIMITED;
        }
        if self
            .by_link
            .get(&up)
            .is_some_and(|u| u.slots.len() >= MAX_INTRO_REGISTRATIONS_PER_LINK)
        {
            return status::RATE_LIMITED;
        }
        let charge = match self.budget.try_charge(INTRO_REG_COST) {
            Some(c) => c,
            None => {
                // Under pressure the link holding the most gives way, never the asking one: a
                // flooder cannot push out registrations that arrived over other links.
                if !self.evict_largest_registration(up) {
                    return status::RATE_LIMITED;
                }
                match self.budget.try_charge(INTRO_REG_COST) {
                    Some(c) => c,
                    None => return status::RATE_LIMITED,
                }
            }
        };
        self.by_key.insert(est.auth_key, slot);
        self.by_link.entry(up).or_default().slots.push(slot);
        self.by_slot.insert(
            slot,
            IntroReg {
                auth_key: est.auth_key,
                up,
                replay: ReplayCache::new(INTRO_REPLAY_CACHE_MAX, self.budget.clone()),
                bucket: Bucket::new(INTRO_BURST, now),
                introductions: 0,
                _charge: charge,
            },
        );
        status::OK
    }

    /// INTRODUCE1 from the client circuit `slot`, which arrived over `up`.
    pub fn introduce(
        &mut self,
        now: Millis,
        slot: u64,
        up: LinkId,
        body: &[u8],
    ) -> IntroduceOutcome {
        let out = self.try_introduce(now, slot, up, body);
        match out {
            IntroduceOutcome::Forward { .. } => self.stats.introductions += 1,
            IntroduceOutcome::Refuse(status::REPLAY) => self.stats.replays += 1,
            IntroduceOutcome::Refuse(status::RATE_LIMITED) => self.stats.rate_limited += 1,
            IntroduceOutcome::Refuse(_) => self.stats.refused += 1,
        }
        out
    }

    fn try_introduce(
        &mut self,
        now: Millis,
        slot: u64,
        up: LinkId,
        body: &[u8],
    ) -> IntroduceOutcome {
        let Ok(intro) = Introduce1::parse(body) else {
            return IntroduceOutcome::Refuse(status::REFUSED);
        };
        let Some(&service_slot) = self.by_key.get(&intro.auth_key) else {
            return IntroduceOutcome::Refuse(status::UNKNOWN);
        };
        let tag = intro.replay_tag();
        let (reg_up, full) = match self.by_slot.get(&service_slot) {
            Some(reg) if reg.replay.contains(&tag) => {
                return IntroduceOutcome::Refuse(status::REPLAY)
            }
            Some(reg) => (reg.up, reg.replay.is_full()),
            None => return IntroduceOutcome::Refuse(status::UNKNOWN),
        };
        // Limits are checked after the replay cache, so replays cannot drain them; the client
        // circuit's and its link's first, so one flooding client cannot drain a key's bucket.
        if self
            .clients
            .get(&slot)
            .is_some_and(|c| c.sent >= MAX_INTRODUCE1_PER_CIRCUIT)
        {
            return IntroduceOutcome::Refuse(status::RATE_LIMITED);
        }
        if !self.take_link_token(now, up) {
            return IntroduceOutcome::Refuse(status::RATE_LIMITED);
        }
        if !self.clients.contains_key(&slot) {
            let Some(charge) = self.budget.try_charge(INTRO_CLIENT_COST) else {
                return IntroduceOutcome::Refuse(status::RATE_LIMITED);
            };
            self.clients.insert(
                slot,
                IntroClient {
                    sent: 0,
                    _charge: charge,
                },
            );
        }
        if let Some(c) = self.clients.get_mut(&slot) {
            c.sent = c.sent.saturating_add(1);
        }
        let key_token = self
            .by_slot
            .get_mut(&service_slot)
            .is_some_and(|reg| reg.bucket.take(now, INTRO_RATE, INTRO_BURST));
        if !key_token {
            return IntroduceOutcome::Refuse(status::RATE_LIMITED);
        }
        if !full {
            self.make_room_for_tag(reg_up, service_slot);
        }
        let mut stored = self.store_tag(service_slot, tag);
        if stored == Err(false) && self.shed_tag(None, service_slot) {
            stored = self.store_tag(service_slot, tag);
        }
        match stored {
            Ok(()) => {}
            Err(true) => return IntroduceOutcome::Refuse(status::REPLAY),
            Err(false) => return IntroduceOutcome::Refuse(status::RATE_LIMITED),
        }
        if let Some(reg) = self.by_slot.get_mut(&service_slot) {
            reg.introductions += 1;
        }
        IntroduceOutcome::Forward { service_slot }
    }

    fn take_link_token(&mut self, now: Millis, up: LinkId) -> bool {
        if !self.link_rate.contains_key(&up) && self.link_rate.len() >= MAX_INTRO_LINK_BUCKETS {
            // A full bucket says nothing a new one would not.
            self.link_rate
                .retain(|_, b| !b.is_full(now, INTRO_LINK_RATE, INTRO_LINK_BURST));
            if self.link_rate.len() >= MAX_INTRO_LINK_BUCKETS {
                return false;
            }
        }
        self.link_rate
            .entry(up)
            .or_insert_with(|| Bucket::new(INTRO_LINK_BURST, now))
            .take(now, INTRO_LINK_RATE, INTRO_LINK_BURST)
    }

    /// Inserts `tag` into the registration on `slot`, keeping the link and total counts.
    fn store_tag(&mut self, slot: u64, tag: [u8; 32]) -> Result<(), bool> {
        let Some(reg) = self.by_slot.get_mut(&slot) else {
            return Err(false);
        };
        let grows = !reg.replay.is_full();
        reg.replay.insert(tag)?;
        if grows {
            self.tags += 1;
            if let Some(u) = self.by_link.get_mut(&reg.up) {
                u.tags += 1;
            }
        }
        Ok(())
    }

    /// Keeps a new tag within its link's share and the relay's total: over either, the oldest
    /// tag of the largest registration of the link over its share (or of the largest link)
    /// goes. The service keeps its own replay cache of client ephemerals (10.6), so a tag
    /// forgotten early lets a replay cost the service one decryption, not a second session.
    fn make_room_for_tag(&mut self, up: LinkId, not_slot: u64) {
        let link_full = self
            .by_link
            .get(&up)
            .is_some_and(|u| u.tags >= MAX_REPLAY_TAGS_PER_LINK);
        if link_full {
            self.shed_tag(Some(up), not_slot);
        } else if self.tags >= MAX_REPLAY_TAGS {
            self.shed_tag(None, not_slot);
        }
    }

    /// Forgets the oldest tag of the registration holding the most tags on `link`, or on the
    /// link holding the most memory if `None`. The registration `prefer_not` gives its own only
    /// if it is the only one there.
    fn shed_tag(&mut self, link: Option<LinkId>, prefer_not: u64) -> bool {
        let Some(link) = link.or_else(|| self.largest_link()) else {
            return false;
        };
        let Some(u) = self.by_link.get(&link) else {
            return false;
        };
        let victim = u
            .slots
            .iter()
            .filter_map(|s| self.by_slot.get(s).map(|r| (*s, r.replay.len())))
            .max_by_key(|&(s, n)| (n, s != prefer_not, s));
        let Some((victim, _)) = victim else {
            return false;
        };
        let popped = self
            .by_slot
            .get_mut(&victim)
            .is_some_and(|r| r.replay.pop_oldest());
        if popped {
            self.tags = self.tags.saturating_sub(1);
            if let Some(u) = self.by_link.get_mut(&link) {
                u.tags = u.tags.saturating_sub(1);
            }
            self.stats.tags_shed += 1;
        }
        popped
    }

    /// The link whose registrations hold the most memory (ties: the higher id, so the choice
    /// does not depend on map order).
    fn largest_link(&self) -> Option<LinkId> {
        self.by_link
            .iter()
            .max_by_key(|(l, u)| (u.bytes(), **l))
            .map(|(l, _)| *l)
    }

    /// Drops the registration holding the most tags (then the newest) on the largest link,
    /// unless that link is `asking`.
    fn evict_largest_registration(&mut self, asking: LinkId) -> bool {
        let Some(link) = self.largest_link() else {
            return false;
        };
        if link == asking {
            return false;
        }
        let victim = self.by_link.get(&link).and_then(|u| {
            u.slots
                .iter()
                .enumerate()
                .filter_map(|(i, s)| self.by_slot.get(s).map(|r| (r.replay.len(), i, *s)))
                .max()
                .map(|(_, _, s)| s)
        });
        let Some(victim) = victim else {
            return false;
        };
        self.closed(victim);
        self.evicted.push(victim);
        self.stats.intro_evicted += 1;
        true
    }

    fn unlink(&mut self, up: LinkId, slot: u64, tags: usize) {
        if let Some(u) = self.by_link.get_mut(&up) {
            u.slots.retain(|s| *s != slot);
            u.tags = u.tags.saturating_sub(tags);
            if u.slots.is_empty() {
                self.by_link.remove(&up);
            }
        }
        self.tags = self.tags.saturating_sub(tags);
    }

    /// The circuit `slot` is gone: its registration and replay cache go with it.
    pub fn closed(&mut self, slot: u64) {
        self.clients.remove(&slot);
        if let Some(reg) = self.by_slot.remove(&slot) {
            self.by_key.remove(&reg.auth_key);
            self.unlink(reg.up, slot, reg.replay.len());
        }
    }
}

struct Cookie {
    slot: u64,
    expires: Millis,
    _charge: Charge,
}

/// What the rendezvous point does with a RENDEZVOUS1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RendezvousOutcome {
    /// Send `rendezvous2` on `client_slot`, then splice it with the service's circuit.
    Splice {
        /// The client's circuit that registered the cookie.
        client_slot: u64,
        /// The RENDEZVOUS2 body.
        rendezvous2: [u8; RENDEZVOUS2_LEN],
    },
    /// Unknown cookie or malformed: destroy the service's circuit (10.6).
    Destroy,
}

/// The rendezvous-point role: cookies waiting for their service.
pub struct RendezvousRole {
    cookies: HashMap<[u8; 32], Cookie>,
    by_slot: HashMap<u64, [u8; 32]>,
    budget: MemoryBudget,
    /// Counters.
    pub stats: RoleStats,
}

impl RendezvousRole {
    /// An empty role charging `budget`.
    pub fn new(budget: MemoryBudget) -> RendezvousRole {
        RendezvousRole {
            cookies: HashMap::new(),
            by_slot: HashMap::new(),
            budget,
            stats: RoleStats::default(),
        }
    }

    /// Whether `slot` waits with a cookie.
    pub fn holds(&self, slot: u64) -> bool {
        self.by_slot.contains_key(&slot)
    }

    /// Cookies held.
    pub fn len(&self) -> usize {
        self.cookies.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.cookies.is_empty()
    }

    /// ESTABLISH_RENDEZVOUS on `slot` (the caller checked it has no other role). Returns the
    /// RENDEZVOUS_ESTABLISHED status.
    pub fn establish(&mut self, now: Millis, slot: u64, body: &[u8]) -> u8 {
        let code = self.try_establish(now, slot, body);
        if code == status::OK {
            self.stats.cookies += 1;
        } else {
            self.stats.refused += 1;
        }
        code
    }

    fn try_establish(&mut self, now: Millis, slot: u64, body: &[u8]) -> u8 {
        let Ok(cookie) = parse_establish_rendezvous(body) else {
            return status::REFUSED;
        };
        if self.by_slot.contains_key(&slot) || self.cookies.contains_key(&cookie.0) {
            return status::EXISTS;
        }
        if self.cookies.len() >= MAX_REND_COOKIES {
            self.expire(now);
            if self.cookies.len() >= MAX_REND_COOKIES {
                return status::RATE_LIMITED;
            }
        }
        let Some(charge) = self.budget.try_charge(REND_COOKIE_COST) else {
            return status::RATE_LIMITED;
        };
        self.by_slot.insert(slot, cookie.0);
        self.cookies.insert(
            cookie.0,
            Cookie {
                slot,
                expires: now + REND_COOKIE_LIFETIME_MS,
                _charge: charge,
            },
        );
        status::OK
    }

    /// RENDEZVOUS1 on the service's circuit `slot`. The cookie is single use.
    pub fn rendezvous1(&mut self, now: Millis, slot: u64, body: &[u8]) -> RendezvousOutcome {
        let Ok(r1) = Rendezvous1::parse(body) else {
            self.stats.refused += 1;
            return RendezvousOutcome::Destroy;
        };
        let live = self
            .cookies
            .get(&r1.cookie.0)
            .is_some_and(|c| now < c.expires && c.slot != slot);
        if !live {
            self.stats.refused += 1;
            return RendezvousOutcome::Destroy;
        }
        let Some(c) = self.cookies.remove(&r1.cookie.0) else {
            return RendezvousOutcome::Destroy;
        };
        self.by_slot.remove(&c.slot);
        self.stats.splices += 1;
        RendezvousOutcome::Splice {
            client_slot: c.slot,
            rendezvous2: r1.to_rendezvous2().emit(),
        }
    }

    /// Forgets cookies older than [`REND_COOKIE_LIFETIME_MS`].
    pub fn expire(&mut self, now: Millis) {
        let by_slot = &mut self.by_slot;
        self.cookies.retain(|_, c| {
            let keep = now < c.expires;
            if !keep {
                by_slot.remove(&c.slot);
            }
            keep
        });
    }

    /// The circuit `slot` is gone.
    pub fn closed(&mut self, slot: u64) {
        if let Some(c) = self.by_slot.remove(&slot) {
            self.cookies.remove(&c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::intro::{RendHs, Rendezvous2, INTRODUCE1_LEN};
    use crate::session::E2E_MSG1_LEN;
    use ed25519_dalek::SigningKey;

    const L: LinkId = LinkId(1);

    fn budget() -> MemoryBudget {
        MemoryBudget::new(64 << 20)
    }

    #[test]
    fn intro_point_registers_forwards_and_drops_replays() {
        let mut role = IntroPointRole::new(budget());
        let auth = SigningKey::from_bytes(&[7; 32]);
        let bind = [3u8; 32];
        let est = EstablishIntro::sign(&auth, &bind).emit();
        // Signed for another circuit: refused.
        assert_eq!(role.establish(0, 1, L, &[4; 32], &est), status::REFUSED);
        assert_eq!(role.establish(0, 1, L, &bind, &est), status::OK);
        // Again on the same circuit: already established.
        assert_eq!(role.establish(0, 1, L, &bind, &est), status::EXISTS);
        let intro = Introduce1 {
            auth_key: auth.verifying_key().to_bytes(),
            msg1: [9; E2E_MSG1_LEN],
        }
        .emit();
        assert_eq!(
            role.introduce(0, 100, L, &intro),
            IntroduceOutcome::Forward { service_slot: 1 }
        );
        assert_eq!(
            role.introduce(1, 100, L, &intro),
            IntroduceOutcome::Refuse(status::REPLAY)
        );
        let other = Introduce1 {
            auth_key: [5; 32],
            msg1: [9; E2E_MSG1_LEN],
        }
        .emit();
        assert_eq!(
            role.introduce(1, 100, L, &other),
            IntroduceOutcome::Refuse(status::UNKNOWN)
        );
        assert_eq!(
            role.introduce(1, 100, L, &[0u8; INTRODUCE1_LEN - 1]),
            IntroduceOutcome::Refuse(status::REFUSED)
        );
        // The key's holder on a second circuit (signed for that circuit's bind): the
        // registration moves there, its replay cache with it; the first circuit no longer has it.
        let bind2 = [6u8; 32];
        let est2 = EstablishIntro::sign(&auth, &bind2).emit();
        assert_eq!(role.establish(0, 2, L, &bind, &est2), status::REFUSED);
        assert_eq!(role.establish(0, 2, L, &bind2, &est2), status::OK);
        assert_eq!(role.len(), 1);
        assert_eq!(
            role.introduce(1, 100, L, &intro),
            IntroduceOutcome::Refuse(status::REPLAY)
        );
        let fresh = Introduce1 {
            auth_key: auth.verifying_key().to_bytes(),
            msg1: [10; E2E_MSG1_LEN],
        }
        .emit();
        assert_eq!(
            role.introduce(1, 100, L, &fresh),
            IntroduceOutcome::Forward { service_slot: 2 }
        );
        role.closed(1);
        assert_eq!(role.len(), 1);
        role.closed(2);
        assert!(role.is_empty());
        assert_eq!(
            role.introduce(2, 100, L, &intro),
            IntroduceOutcome::Refuse(status::UNKNOWN)
        );
    }

    #[test]
    fn intro_point_rate_limits_per_key() {
        let mut role = IntroPointRole::new(budget());
        let auth = SigningKey::from_bytes(&[8; 32]);
        let bind = [1u8; 32];
        assert_eq!(
            role.establish(0, 1, L, &bind, &EstablishIntro::sign(&auth, &bind).emit()),
            status::OK
        );
        let mut limited = 0;
        for i in 0..400u32 {
            let mut msg1 = [0u8; E2E_MSG1_LEN];
            msg1[..4].copy_from_slice(&i.to_be_bytes());
            let body = Introduce1 {
                auth_key: auth.verifying_key().to_bytes(),
                msg1,
            }
            .emit();
            // One circuit per introduction, as honest clients do.
            let out = role.introduce(0, 100 + u64::from(i), L, &body);
            if out == IntroduceOutcome::Refuse(status::RATE_LIMITED) {
                limited += 1;
            }
        }
        assert_eq!(limited, 400 - INTRO_BURST as usize);
    }

    #[test]
    fn replay_cache_is_bounded_and_charged() {
        let b = MemoryBudget::new(1 << 20);
        let mut c = ReplayCache::new(3000, b.clone());
        for i in 0..5000u32 {
            let mut t = [0u8; 32];
            t[..4].copy_from_slice(&i.to_be_bytes());
            c.insert(t).unwrap();
        }
        assert_eq!(c.len(), 3000);
        // Charged per tag held, not per chunk (issue #19: a first tag cost a 1,024-tag chunk).
        assert_eq!(b.used(), 3000 * REPLAY_TAG_COST);
        assert!(c.pop_oldest());
        assert_eq!(b.used(), 2999 * REPLAY_TAG_COST);
        let mut t = [0u8; 32];
        t[..4].copy_from_slice(&4999u32.to_be_bytes());
        assert_eq!(c.insert(t), Err(true));
        drop(c);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn rendezvous_point_matches_cookies_once() {
        let mut role = RendezvousRole::new(budget());
        let cookie = RendCookie([4; 32]);
        let body = establish_rendezvous_body(&cookie);
        assert_eq!(role.establish(0, 10, &body), status::OK);
        assert_eq!(role.establish(0, 11, &body), status::EXISTS);
        let r1 = Rendezvous1 {
            cookie: cookie.clone(),
            hs: RendHs::Join([1; 32]),
        }
        .emit();
        match role.rendezvous1(5, 20, &r1) {
            RendezvousOutcome::Splice {
                client_slot,
                rendezvous2,
            } => {
                assert_eq!(client_slot, 10);
                assert_eq!(
                    Rendezvous2::parse(&rendezvous2).unwrap().hs,
                    RendHs::Join([1; 32])
                );
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(role.rendezvous1(6, 21, &r1), RendezvousOutcome::Destroy);
        assert!(role.is_empty());
    }

    #[test]
    fn rendezvous_cookies_expire() {
        let mut role = RendezvousRole::new(budget());
        let cookie = RendCookie([5; 32]);
        assert_eq!(
            role.establish(0, 1, &establish_rendezvous_body(&cookie)),
            status::OK
        );
        let r1 = Rendezvous1 {
            cookie,
            hs: RendHs::Join([1; 32]),
        }
        .emit();
        assert_eq!(
            role.rendezvous1(REND_COOKIE_LIFETIME_MS, 2, &r1),
            RendezvousOutcome::Destroy
        );
        role.expire(REND_COOKIE_LIFETIME_MS);
        assert!(role.is_empty() && !role.holds(1));
    }

    #[test]
    fn roles_refuse_when_the_budget_is_spent() {
        let b = MemoryBudget::new(INTRO_REG_COST + REND_COOKIE_COST);
        let mut intro = IntroPointRole::new(b.clone());
        let mut rend = RendezvousRole::new(b.clone());
        let bind = [2u8; 32];
        let est = |k: u8| EstablishIntro::sign(&SigningKey::from_bytes(&[k; 32]), &bind).emit();
        assert_eq!(intro.establish(0, 1, L, &bind, &est(1)), status::OK);
        assert_eq!(
            rend.establish(0, 2, &establish_rendezvous_body(&RendCookie([1; 32]))),
            status::OK
        );
        // Full: both refuse with "rate limited" instead of growing.
        assert_eq!(
            intro.establish(0, 3, L, &bind, &est(2)),
            status::RATE_LIMITED
        );
        assert_eq!(
            rend.establish(0, 4, &establish_rendezvous_body(&RendCookie([2; 32]))),
            status::RATE_LIMITED
        );
        // The first registration cannot store a replay tag either: introductions are refused
        // rather than passed on unrecorded.
        let body = Introduce1 {
            auth_key: SigningKey::from_bytes(&[1; 32]).verifying_key().to_bytes(),
            msg1: [3; E2E_MSG1_LEN],
        }
        .emit();
        assert_eq!(
            intro.introduce(0, 100, L, &body),
            IntroduceOutcome::Refuse(status::RATE_LIMITED)
        );
        intro.closed(1);
        rend.closed(2);
        assert_eq!(b.used(), 0);
    }

    fn made_up_registration(role: &mut IntroPointRole, slot: u64, up: LinkId) -> (u8, [u8; 32]) {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&slot.to_be_bytes());
        let auth = SigningKey::from_bytes(&seed);
        let bind = [slot as u8; 32];
        let code = role.establish(
            0,
            slot,
            up,
            &bind,
            &EstablishIntro::sign(&auth, &bind).emit(),
        );
        (code, auth.verifying_key().to_bytes())
    }

    fn introduction(auth_key: [u8; 32], n: u64) -> Vec<u8> {
        let mut msg1 = [0u8; E2E_MSG1_LEN];
        msg1[..8].copy_from_slice(&n.to_be_bytes());
        Introduce1 { auth_key, msg1 }.emit().to_vec()
    }

    /// Issue #19 item 1: 3,200 registrations with made-up keys and one INTRODUCE1 each used to
    /// charge a 1,024-tag chunk apiece, about 256 MiB. Now each charges what it stores.
    #[test]
    fn registration_flood_charges_what_it_stores() {
        let b = MemoryBudget::default();
        let mut role = IntroPointRole::new(b.clone());
        let mut keys = Vec::new();
        for i in 0..3200u64 {
            let up = LinkId(1000 + (i / MAX_INTRO_REGISTRATIONS_PER_LINK as u64) as u32);
            let (code, key) = made_up_registration(&mut role, 10 + i, up);
            assert_eq!(code, status::OK);
            keys.push(key);
        }
        // The per-link cap: a 65th registration over the same link is refused.
        assert_eq!(
            made_up_registration(&mut role, 9999, LinkId(1000)).0,
            status::RATE_LIMITED
        );
        for (i, key) in keys.iter().enumerate() {
            let client = 100_000 + i as u64;
            let up = LinkId(2000 + (i / 200) as u32);
            let out = role.introduce(0, client, up, &introduction(*key, 0));
            assert!(matches!(out, IntroduceOutcome::Forward { .. }));
            // A second and third INTRODUCE1 on the same circuit: the third is over the cap.
            role.introduce(0, client, up, &introduction(*key, 1));
            let third = role.introduce(0, client, up, &introduction(*key, 2));
            assert_eq!(third, IntroduceOutcome::Refuse(status::RATE_LIMITED));
        }
        let per_reg = INTRO_REG_COST + 2 * REPLAY_TAG_COST + INTRO_CLIENT_COST;
        assert!(b.used() <= 3200 * per_reg, "{} bytes", b.used());
        assert!(b.used() < 2 << 20);
        // An honest service over another link still registers, and its client gets through
        // over a third.
        let (code, key) = made_up_registration(&mut role, 50_000, LinkId(7));
        assert_eq!(code, status::OK);
        assert_eq!(
            role.introduce(1, 50_001, LinkId(8), &introduction(key, 0)),
            IntroduceOutcome::Forward {
                service_slot: 50_000
            }
        );
        drop(role);
        assert_eq!(b.used(), 0);
    }

    /// A flood of INTRODUCE1s at the flooder's own registrations sheds the flooder's replay tags
    /// once its link holds its share; an honest registration over another link keeps its own.
    #[test]
    fn tag_flood_sheds_the_flooders_tags() {
        let b = MemoryBudget::default();
        let mut role = IntroPointRole::new(b.clone());
        let (_, honest) = made_up_registration(&mut role, 1, LinkId(7));
        for n in 0..100 {
            let out = role.introduce(0, 10 + n, LinkId(8), &introduction(honest, n));
            assert_eq!(out, IntroduceOutcome::Forward { service_slot: 1 });
        }
        let flooder: Vec<[u8; 32]> = (0..64)
            .map(|i| made_up_registration(&mut role, 100 + i, LinkId(1000)).1)
            .collect();
        let mut now = 0;
        let total = MAX_REPLAY_TAGS_PER_LINK as u64 + 5_000;
        for n in 0..total {
            // Spread over keys and sender links, within every rate limit.
            now += 20;
            let key = flooder[(n % 64) as usize];
            let client = 1_000_000 + n;
            let up = LinkId(2000 + (n % 64) as u32);
            let out = role.introduce(now, client, up, &introduction(key, n));
            assert!(
                matches!(out, IntroduceOutcome::Forward { .. }),
                "{n}: {out:?}"
            );
            role.closed(client);
        }
        assert_eq!(role.replay_tags(), MAX_REPLAY_TAGS_PER_LINK + 100);
        assert_eq!(role.replay_tags_of(1), 100);
        assert_eq!(role.stats.tags_shed, 5_000);
        // 65 registrations, the tags kept, and the honest clients' 100 open circuits.
        let bound = 65 * INTRO_REG_COST
            + (MAX_REPLAY_TAGS_PER_LINK + 100) * REPLAY_TAG_COST
            + 100 * INTRO_CLIENT_COST;
        assert_eq!(b.used(), bound);
        // The honest service is still reachable through the flood.
        assert_eq!(
            role.introduce(now, 5, LinkId(8), &introduction(honest, 1 << 40)),
            IntroduceOutcome::Forward { service_slot: 1 }
        );
    }

    /// Under memory pressure a registration over the largest link goes, never one over the
    /// asking link, and its circuit is handed back to be closed.
    #[test]
    fn budget_pressure_evicts_the_largest_links_registration() {
        let b = MemoryBudget::new(41 * INTRO_REG_COST);
        let mut role = IntroPointRole::new(b.clone());
        assert_eq!(made_up_registration(&mut role, 1, LinkId(7)).0, status::OK);
        for i in 0..40 {
            let (code, _) = made_up_registration(&mut role, 100 + i, LinkId(1000));
            assert_eq!(code, status::OK, "{i}");
        }
        // Full: the flooder's own link asking gets nothing.
        assert_eq!(
            made_up_registration(&mut role, 200, LinkId(1000)).0,
            status::RATE_LIMITED
        );
        assert!(role.take_evicted().is_empty());
        // A second honest service over another link: the flooder's link gives way.
        assert_eq!(made_up_registration(&mut role, 2, LinkId(8)).0, status::OK);
        let evicted = role.take_evicted();
        assert_eq!(evicted.len(), 1);
        assert!((100..140).contains(&evicted[0]));
        assert!(role.holds(1) && role.holds(2));
        assert_eq!(role.stats.intro_evicted, 1);
    }

    #[test]
    fn status_bodies_round_trip() {
        assert_eq!(parse_status(&status_body(3)), Ok(3));
        assert!(parse_status(&[2, 0, 0, 0]).is_err());
        assert!(parse_status(&[1, 0]).is_err());
    }
}
