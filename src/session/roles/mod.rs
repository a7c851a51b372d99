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

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::budget::{Charge, MemoryBudget};
use crate::link::LinkId;
use crate::time::{Bucket, Instant, Millis};

mod intro_point;
mod rendezvous;
#[cfg(test)]
mod tests;

pub use intro_point::{IntroPointRole, IntroduceOutcome};
pub use rendezvous::{RendezvousOutcome, RendezvousRole};

use super::intro::{
    EstablishIntro, IntroError, Introduce1, RendCookie, Rendezvous1, INTRO_VERSION, RENDEZVOUS2_LEN,
};

/// INTRODUCE1 messages per second an intro point passes on for one auth key.
pub const INTRO_RATE: f64 = 25.0;
/// Burst of [`INTRO_RATE`].
pub const INTRO_BURST: f64 = 200.0;
/// INTRODUCE1 messages per second an intro point passes on for an auth key whose service set
/// [`ESTABLISH_FLAG_POW`](crate::session::intro::ESTABLISH_FLAG_POW): the service orders what
/// arrives by proof of work (10.12), which the intro point cannot check, so a flood at
/// [`INTRO_RATE`] would drop honest, paying introductions here, before the service sees them. A
/// ceiling still: the per-circuit and per-link limits hold as they are, and the replay tags
/// stay bounded per key, per link and per relay.
pub const INTRO_POW_RATE: f64 = 500.0;
/// Burst of [`INTRO_POW_RATE`].
pub const INTRO_POW_BURST: f64 = 1000.0;
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
/// Replay tags held for INTRODUCE1s that arrived over one upstream link (charged to that link,
/// whichever registration holds them; over it, the link's own oldest tag goes).
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
    pub fn new(rate: f64, burst: f64, now: Instant) -> RateLimit {
        RateLimit {
            bucket: Bucket::new(burst, now),
            rate,
            burst,
        }
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.bucket.take(now, self.rate, self.burst)
    }
}

/// A bounded set of recent 32-byte tags, oldest evicted first, charged to the budget per tag
/// held: a cache that sees one introduction costs one tag, not a chunk it may never fill.
/// `false` from [`ReplayCache::insert`] means seen before (or no memory: refused).
pub struct ReplayCache {
    set: BTreeSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
    max: usize,
    charge: Charge,
}

impl ReplayCache {
    /// Holds at most `max` tags.
    pub fn new(max: usize, budget: MemoryBudget) -> ReplayCache {
        ReplayCache {
            set: BTreeSet::new(),
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
    /// Replay tags forgotten early because the link they came over or the relay held its
    /// share, or to make room under memory pressure (the largest sender's first).
    pub tags_shed: u64,
    /// Cookies registered.
    pub cookies: u64,
    /// Circuit pairs spliced.
    pub splices: u64,
}
