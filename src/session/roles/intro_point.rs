//! The intro-point role (10.6): registrations by circuit and by auth key, introductions passed
//! to services, replays and rates refused, memory accounted per upstream link: a registration to
//! the link its ESTABLISH_INTRO came over, a replay tag to the link its INTRODUCE1 came over.
//! A service that sheds by proof of work (ESTABLISH_INTRO flag, 10.6) gets a higher per-key rate.

use super::*;

struct IntroReg {
    auth_key: [u8; 32],
    /// The link the registering circuit arrived over: the registration's source.
    up: LinkId,
    replay: TagCache,
    bucket: Bucket,
    /// The service sheds by proof of work: [`INTRO_POW_RATE`] instead of [`INTRO_RATE`].
    pow: bool,
    introductions: u64,
    _charge: Charge,
}

/// The per-key rate and burst of a registration, by whether its service sheds by proof of work.
fn key_rate(pow: bool) -> (f64, f64) {
    if pow {
        (INTRO_POW_RATE, INTRO_POW_BURST)
    } else {
        (INTRO_RATE, INTRO_BURST)
    }
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

/// What one upstream link holds in the intro-point role: what it caused, wherever it is kept.
#[derive(Default)]
struct LinkUse {
    /// Its registrations, oldest first (at most [`MAX_INTRO_REGISTRATIONS_PER_LINK`]).
    slots: Vec<u64>,
    /// Replay tags of INTRODUCE1s that came over it, in any registration's cache (at most
    /// [`MAX_REPLAY_TAGS_PER_LINK`]).
    tags: usize,
}

impl LinkUse {
    fn bytes(&self) -> usize {
        self.slots.len() * INTRO_REG_COST + self.tags * REPLAY_TAG_COST
    }
}

/// One auth key's replay cache: like [`ReplayCache`], oldest evicted first and charged per tag,
/// but each tag remembers the link its INTRODUCE1 came over, so that the tag is charged to that
/// link and can be forgotten on its account.
struct TagCache {
    set: BTreeSet<[u8; 32]>,
    order: VecDeque<([u8; 32], LinkId)>,
    /// Tags held per sending link (at most one entry per tag held, within the tag's charge).
    senders: BTreeMap<LinkId, usize>,
    max: usize,
    charge: Charge,
}

impl TagCache {
    fn new(max: usize, budget: &MemoryBudget) -> TagCache {
        TagCache {
            set: BTreeSet::new(),
            order: VecDeque::new(),
            senders: BTreeMap::new(),
            max,
            charge: budget.empty_charge(),
        }
    }

    fn contains(&self, tag: &[u8; 32]) -> bool {
        self.set.contains(tag)
    }

    fn len(&self) -> usize {
        self.order.len()
    }

    fn is_full(&self) -> bool {
        self.order.len() >= self.max
    }

    fn held_from(&self, link: LinkId) -> usize {
        self.senders.get(&link).copied().unwrap_or(0)
    }

    fn count(&mut self, link: LinkId, grows: bool) {
        if grows {
            *self.senders.entry(link).or_insert(0) += 1;
        } else if let Some(n) = self.senders.get_mut(&link) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.senders.remove(&link);
            }
        }
    }

    /// Inserts `tag` sent over `link`. `Ok(Some(l))`: full, so the oldest tag (sent over `l`)
    /// made way; `Err(true)`: a replay; `Err(false)`: the budget refused the memory.
    fn insert(&mut self, tag: [u8; 32], link: LinkId) -> Result<Option<LinkId>, bool> {
        if self.set.contains(&tag) {
            return Err(true);
        }
        let mut replaced = None;
        if self.is_full() {
            if let Some((old, l)) = self.order.pop_front() {
                self.set.remove(&old);
                self.count(l, false);
                replaced = Some(l);
            }
        } else if !self.charge.try_grow(REPLAY_TAG_COST) {
            return Err(false);
        }
        self.set.insert(tag);
        self.order.push_back((tag, link));
        self.count(link, true);
        Ok(replaced)
    }

    /// Forgets the oldest tag sent over `link` and releases its memory; `false` if none. A scan
    /// of at most `max` entries, run only to shed (a link over its share, the relay at its total,
    /// the budget spent).
    fn pop_oldest_from(&mut self, link: LinkId) -> bool {
        if self.held_from(link) == 0 {
            return false;
        }
        let Some(i) = self.order.iter().position(|(_, l)| *l == link) else {
            return false;
        };
        let Some((old, _)) = self.order.remove(i) else {
            return false;
        };
        self.set.remove(&old);
        self.charge.shrink(REPLAY_TAG_COST);
        self.count(link, false);
        true
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
    by_slot: BTreeMap<u64, IntroReg>,
    by_key: BTreeMap<[u8; 32], u64>,
    by_link: BTreeMap<LinkId, LinkUse>,
    clients: BTreeMap<u64, IntroClient>,
    link_rate: BTreeMap<LinkId, Bucket>,
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
            by_slot: BTreeMap::new(),
            by_key: BTreeMap::new(),
            by_link: BTreeMap::new(),
            clients: BTreeMap::new(),
            link_rate: BTreeMap::new(),
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

    /// Whether the registration on `slot` lifted its per-key rate ([`INTRO_POW_RATE`]).
    pub fn sheds_by_pow(&self, slot: u64) -> bool {
        self.by_slot.get(&slot).is_some_and(|r| r.pow)
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

    /// Bytes charged to the upstream link `link` in the eviction accounting.
    pub fn link_bytes(&self, link: LinkId) -> usize {
        self.by_link.get(&link).map_or(0, LinkUse::bytes)
    }

    /// The auth keys registered here (for tests asserting what an intro point holds).
    pub fn auth_keys(&self) -> Vec<[u8; 32]> {
        self.by_key.keys().copied().collect()
    }

    /// The auth key registered on `slot`.
    pub fn key_of(&self, slot: u64) -> Option<[u8; 32]> {
        self.by_slot.get(&slot).map(|r| r.auth_key)
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
        now: Instant,
        slot: u64,
        up: LinkId,
        bind: &[u8; 32],
        body: &[u8],
    ) -> u8 {
        let code = self.try_establish(now, slot, up, bind, body);
        // EXISTS answers a service's check on its own circuit (10.6.1): nothing refused.
        match code {
            status::OK => self.stats.intro_established += 1,
            status::EXISTS => {}
            _ => self.stats.refused += 1,
        }
        code
    }

    fn try_establish(
        &mut self,
        now: Instant,
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
        // per-link cap does not apply; the tags stay charged to the links they came over.
        if let Some(old) = self.by_key.get(&est.auth_key).copied() {
            if let Some(mut reg) = self.by_slot.remove(&old) {
                self.unlink(reg.up, old);
                reg.up = up;
                reg.pow = est.sheds_by_pow();
                self.by_link.entry(up).or_default().slots.push(slot);
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
                // Under pressure the link that caused the most gives way, never the asking one:
                // a flooder cannot push out registrations that arrived over other links, and
                // the tags its INTRODUCE1s left count against its own link, not the service's.
                if !self.make_room_for_registration(up) {
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
                replay: TagCache::new(INTRO_REPLAY_CACHE_MAX, &self.budget),
                bucket: Bucket::new(key_rate(est.sheds_by_pow()).1, now),
                pow: est.sheds_by_pow(),
                introductions: 0,
                _charge: charge,
            },
        );
        status::OK
    }

    /// INTRODUCE1 from the client circuit `slot`, which arrived over `up`.
    pub fn introduce(
        &mut self,
        now: Instant,
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
        now: Instant,
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
        let full = match self.by_slot.get(&service_slot) {
            Some(reg) if reg.replay.contains(&tag) => {
                return IntroduceOutcome::Refuse(status::REPLAY)
            }
            Some(reg) => reg.replay.is_full(),
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
        let key_token = self.by_slot.get_mut(&service_slot).is_some_and(|reg| {
            let (rate, burst) = key_rate(reg.pow);
            reg.bucket.take(now, rate, burst)
        });
        if !key_token {
            return IntroduceOutcome::Refuse(status::RATE_LIMITED);
        }
        self.make_room_for_tag(up, full);
        let mut stored = self.store_tag(service_slot, tag, up);
        if stored == Err(false) && self.largest_tag_link().is_some_and(|l| self.shed_tag(l)) {
            stored = self.store_tag(service_slot, tag, up);
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

    fn take_link_token(&mut self, now: Instant, up: LinkId) -> bool {
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

    /// Inserts `tag`, sent over `from`, into the registration on `slot`, keeping the per-link
    /// and total counts.
    fn store_tag(&mut self, slot: u64, tag: [u8; 32], from: LinkId) -> Result<(), bool> {
        let Some(reg) = self.by_slot.get_mut(&slot) else {
            return Err(false);
        };
        if let Some(old) = reg.replay.insert(tag, from)? {
            self.tag_gone(old, 1);
        }
        self.tags += 1;
        self.by_link.entry(from).or_default().tags += 1;
        Ok(())
    }

    /// Keeps a new tag from `from` within that link's share and the relay's total: over its
    /// share, the link's own oldest tag goes; over the total, the oldest tag of the link that
    /// sent the most. A full cache (`full`) replaces its oldest tag and does not grow the total.
    /// The service keeps its own replay cache of client ephemerals (10.6), so a tag forgotten
    /// early lets a replay cost the service one decryption, not a second session.
    fn make_room_for_tag(&mut self, from: LinkId, full: bool) {
        let link_full = self
            .by_link
            .get(&from)
            .is_some_and(|u| u.tags >= MAX_REPLAY_TAGS_PER_LINK);
        if link_full {
            self.shed_tag(from);
        } else if !full && self.tags >= MAX_REPLAY_TAGS {
            if let Some(l) = self.largest_tag_link() {
                self.shed_tag(l);
            }
        }
    }

    /// Forgets the oldest tag `link` sent to the registration holding the most of its tags.
    fn shed_tag(&mut self, link: LinkId) -> bool {
        let victim = self
            .by_slot
            .iter()
            .map(|(s, r)| (r.replay.held_from(link), *s))
            .filter(|&(n, _)| n > 0)
            .max();
        let Some((_, victim)) = victim else {
            return false;
        };
        let popped = self
            .by_slot
            .get_mut(&victim)
            .is_some_and(|r| r.replay.pop_oldest_from(link));
        if popped {
            self.tag_gone(link, 1);
            self.stats.tags_shed += 1;
        }
        popped
    }

    /// `n` tags sent over `link` are no longer held.
    fn tag_gone(&mut self, link: LinkId, n: usize) {
        self.tags = self.tags.saturating_sub(n);
        if let Some(u) = self.by_link.get_mut(&link) {
            u.tags = u.tags.saturating_sub(n);
        }
        self.tidy(link);
    }

    /// Forgets `link` once it holds nothing.
    fn tidy(&mut self, link: LinkId) {
        if self
            .by_link
            .get(&link)
            .is_some_and(|u| u.slots.is_empty() && u.tags == 0)
        {
            self.by_link.remove(&link);
        }
    }

    /// The link that caused the most memory: its registrations plus the tags of its
    /// INTRODUCE1s (ties: the higher id, so the choice does not depend on map order).
    fn largest_link(&self) -> Option<LinkId> {
        self.by_link
            .iter()
            .max_by_key(|(l, u)| (u.bytes(), **l))
            .map(|(l, _)| *l)
    }

    /// The link whose INTRODUCE1s left the most tags.
    fn largest_tag_link(&self) -> Option<LinkId> {
        self.by_link
            .iter()
            .filter(|(_, u)| u.tags > 0)
            .max_by_key(|(l, u)| (u.tags, **l))
            .map(|(l, _)| *l)
    }

    /// Frees memory for a registration over `asking` from the largest link's own state, unless
    /// that link is `asking`: first the oldest tags its INTRODUCE1s left (enough for one
    /// registration), else its newest registration, whose circuit is handed back to be closed.
    /// Never another link's registration because of tags a third link sent.
    fn make_room_for_registration(&mut self, asking: LinkId) -> bool {
        let Some(link) = self.largest_link() else {
            return false;
        };
        if link == asking {
            return false;
        }
        let want = INTRO_REG_COST.div_ceil(REPLAY_TAG_COST);
        let (tags, newest) = match self.by_link.get(&link) {
            Some(u) => (u.tags, u.slots.last().copied()),
            None => return false,
        };
        if tags >= want || newest.is_none() {
            let mut shed = 0;
            while shed < want && self.shed_tag(link) {
                shed += 1;
            }
            return shed > 0;
        }
        let Some(victim) = newest else {
            return false;
        };
        self.closed(victim);
        self.evicted.push(victim);
        self.stats.intro_evicted += 1;
        true
    }

    fn unlink(&mut self, up: LinkId, slot: u64) {
        if let Some(u) = self.by_link.get_mut(&up) {
            u.slots.retain(|s| *s != slot);
        }
        self.tidy(up);
    }

    /// The circuit `slot` is gone: its registration and replay cache go with it, and each tag
    /// leaves the account of the link that sent it.
    pub fn closed(&mut self, slot: u64) {
        self.clients.remove(&slot);
        if let Some(reg) = self.by_slot.remove(&slot) {
            self.by_key.remove(&reg.auth_key);
            self.unlink(reg.up, slot);
            for (link, n) in &reg.replay.senders {
                self.tag_gone(*link, *n);
            }
        }
    }
}
