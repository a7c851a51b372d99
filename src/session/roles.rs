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
/// Rendezvous cookies one relay holds.
pub const MAX_REND_COOKIES: usize = 16_384;
/// Replay tags are charged to the budget in chunks of this many.
const REPLAY_CHUNK: usize = 1024;
/// Bytes charged per registration (key, bucket, map entries).
const INTRO_REG_COST: usize = 256;
/// Bytes charged per replay tag (the tag in a set and a queue).
const REPLAY_TAG_COST: usize = 80;
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

/// A bounded set of recent 32-byte tags, oldest evicted first, charged to the budget in
/// chunks. `false` from [`ReplayCache::insert`] means seen before (or no memory: refused).
pub struct ReplayCache {
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
    max: usize,
    charges: Vec<Charge>,
    budget: MemoryBudget,
}

impl ReplayCache {
    /// Holds at most `max` tags.
    pub fn new(max: usize, budget: MemoryBudget) -> ReplayCache {
        ReplayCache {
            set: HashSet::new(),
            order: VecDeque::new(),
            max,
            charges: Vec::new(),
            budget,
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
        } else if self.order.len() >= self.charges.len() * REPLAY_CHUNK {
            match self.budget.try_charge(REPLAY_CHUNK * REPLAY_TAG_COST) {
                Some(c) => self.charges.push(c),
                None => return Err(false),
            }
        }
        self.set.insert(tag);
        self.order.push_back(tag);
        Ok(())
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

/// The intro-point role: registrations by circuit and by auth key.
pub struct IntroPointRole {
    by_slot: HashMap<u64, IntroReg>,
    by_key: HashMap<[u8; 32], u64>,
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

    /// The auth keys registered here (for tests asserting what an intro point holds).
    pub fn auth_keys(&self) -> Vec<[u8; 32]> {
        self.by_key.keys().copied().collect()
    }

    /// ESTABLISH_INTRO on `slot`, whose handshake `bind` is `bind`. The caller has checked that
    /// the circuit has no other role. Returns the INTRO_ESTABLISHED status.
    pub fn establish(&mut self, now: Millis, slot: u64, bind: &[u8; 32], body: &[u8]) -> u8 {
        let code = self.try_establish(now, slot, bind, body);
        if code == status::OK {
            self.stats.intro_established += 1;
        } else {
            self.stats.refused += 1;
        }
        code
    }

    fn try_establish(&mut self, now: Millis, slot: u64, bind: &[u8; 32], body: &[u8]) -> u8 {
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
        // replay cache and all, so descriptors listing us stay good.
        if let Some(old) = self.by_key.get(&est.auth_key).copied() {
            if let Some(reg) = self.by_slot.remove(&old) {
                self.by_key.insert(est.auth_key, slot);
                self.by_slot.insert(slot, reg);
                self.stats.intro_moved += 1;
                return status::OK;
            }
        }
        if self.by_slot.len() >= MAX_INTRO_REGISTRATIONS {
            return status::RATE_LIMITED;
        }
        let Some(charge) = self.budget.try_charge(INTRO_REG_COST) else {
            return status::RATE_LIMITED;
        };
        self.by_key.insert(est.auth_key, slot);
        self.by_slot.insert(
            slot,
            IntroReg {
                auth_key: est.auth_key,
                replay: ReplayCache::new(INTRO_REPLAY_CACHE_MAX, self.budget.clone()),
                bucket: Bucket::new(INTRO_BURST, now),
                introductions: 0,
                _charge: charge,
            },
        );
        status::OK
    }

    /// INTRODUCE1 from a client's circuit.
    pub fn introduce(&mut self, now: Millis, body: &[u8]) -> IntroduceOutcome {
        let out = self.try_introduce(now, body);
        match out {
            IntroduceOutcome::Forward { .. } => self.stats.introductions += 1,
            IntroduceOutcome::Refuse(status::REPLAY) => self.stats.replays += 1,
            IntroduceOutcome::Refuse(status::RATE_LIMITED) => self.stats.rate_limited += 1,
            IntroduceOutcome::Refuse(_) => self.stats.refused += 1,
        }
        out
    }

    fn try_introduce(&mut self, now: Millis, body: &[u8]) -> IntroduceOutcome {
        let Ok(intro) = Introduce1::parse(body) else {
            return IntroduceOutcome::Refuse(status::REFUSED);
        };
        let Some(&service_slot) = self.by_key.get(&intro.auth_key) else {
            return IntroduceOutcome::Refuse(status::UNKNOWN);
        };
        let Some(reg) = self.by_slot.get_mut(&service_slot) else {
            return IntroduceOutcome::Refuse(status::UNKNOWN);
        };
        let tag = intro.replay_tag();
        if reg.replay.contains(&tag) {
            return IntroduceOutcome::Refuse(status::REPLAY);
        }
        // The rate is checked after the replay cache, so replays cannot drain the bucket.
        if !reg.bucket.take(now, INTRO_RATE, INTRO_BURST) {
            return IntroduceOutcome::Refuse(status::RATE_LIMITED);
        }
        match reg.replay.insert(tag) {
            Ok(()) => {}
            Err(true) => return IntroduceOutcome::Refuse(status::REPLAY),
            Err(false) => return IntroduceOutcome::Refuse(status::RATE_LIMITED),
        }
        reg.introductions += 1;
        IntroduceOutcome::Forward { service_slot }
    }

    /// The circuit `slot` is gone: its registration and replay cache go with it.
    pub fn closed(&mut self, slot: u64) {
        if let Some(reg) = self.by_slot.remove(&slot) {
            self.by_key.remove(&reg.auth_key);
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
        assert_eq!(role.establish(0, 1, &[4; 32], &est), status::REFUSED);
        assert_eq!(role.establish(0, 1, &bind, &est), status::OK);
        // Again on the same circuit: already established.
        assert_eq!(role.establish(0, 1, &bind, &est), status::EXISTS);
        let intro = Introduce1 {
            auth_key: auth.verifying_key().to_bytes(),
            msg1: [9; E2E_MSG1_LEN],
        }
        .emit();
        assert_eq!(
            role.introduce(0, &intro),
            IntroduceOutcome::Forward { service_slot: 1 }
        );
        assert_eq!(
            role.introduce(1, &intro),
            IntroduceOutcome::Refuse(status::REPLAY)
        );
        let other = Introduce1 {
            auth_key: [5; 32],
            msg1: [9; E2E_MSG1_LEN],
        }
        .emit();
        assert_eq!(
            role.introduce(1, &other),
            IntroduceOutcome::Refuse(status::UNKNOWN)
        );
        assert_eq!(
            role.introduce(1, &[0u8; INTRODUCE1_LEN - 1]),
            IntroduceOutcome::Refuse(status::REFUSED)
        );
        // The key's holder on a second circuit (signed for that circuit's bind): the
        // registration moves there, its replay cache with it; the first circuit no longer has it.
        let bind2 = [6u8; 32];
        let est2 = EstablishIntro::sign(&auth, &bind2).emit();
        assert_eq!(role.establish(0, 2, &bind, &est2), status::REFUSED);
        assert_eq!(role.establish(0, 2, &bind2, &est2), status::OK);
        assert_eq!(role.len(), 1);
        assert_eq!(
            role.introduce(1, &intro),
            IntroduceOutcome::Refuse(status::REPLAY)
        );
        let fresh = Introduce1 {
            auth_key: auth.verifying_key().to_bytes(),
            msg1: [10; E2E_MSG1_LEN],
        }
        .emit();
        assert_eq!(
            role.introduce(1, &fresh),
            IntroduceOutcome::Forward { service_slot: 2 }
        );
        role.closed(1);
        assert_eq!(role.len(), 1);
        role.closed(2);
        assert!(role.is_empty());
        assert_eq!(
            role.introduce(2, &intro),
            IntroduceOutcome::Refuse(status::UNKNOWN)
        );
    }

    #[test]
    fn intro_point_rate_limits_per_key() {
        let mut role = IntroPointRole::new(budget());
        let auth = SigningKey::from_bytes(&[8; 32]);
        let bind = [1u8; 32];
        assert_eq!(
            role.establish(0, 1, &bind, &EstablishIntro::sign(&auth, &bind).emit()),
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
            if role.introduce(0, &body) == IntroduceOutcome::Refuse(status::RATE_LIMITED) {
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
        assert!(b.used() >= 3 * REPLAY_CHUNK * REPLAY_TAG_COST);
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
        assert_eq!(intro.establish(0, 1, &bind, &est(1)), status::OK);
        assert_eq!(
            rend.establish(0, 2, &establish_rendezvous_body(&RendCookie([1; 32]))),
            status::OK
        );
        // Full: both refuse with "rate limited" instead of growing.
        assert_eq!(intro.establish(0, 3, &bind, &est(2)), status::RATE_LIMITED);
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
            intro.introduce(0, &body),
            IntroduceOutcome::Refuse(status::RATE_LIMITED)
        );
        intro.closed(1);
        rend.closed(2);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn status_bodies_round_trip() {
        assert_eq!(parse_status(&status_body(3)), Ok(3));
        assert!(parse_status(&[2, 0, 0, 0]).is_err());
        assert!(parse_status(&[1, 0]).is_err());
    }
}
