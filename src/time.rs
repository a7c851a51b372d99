//! Time as the state machines see it: milliseconds since the Unix epoch, passed in by the caller.
//!
//! The daemon anchors a monotonic clock to the wall clock once at start (so timers never jump);
//! the in-process network passes virtual time. Epochs and record expiries are computed from the
//! same value, with the skew tolerance of docs/protocol.md section 14.1. Time is never taken from
//! peers.

use std::time::{SystemTime, UNIX_EPOCH};

/// A length of time in milliseconds (timeouts, ages, the `*_MS` constants). Points in time are
/// [`Instant`]s, so that one cannot stand for the other (docs/decisions.md, "Time").
pub type Millis = u64;

/// A point in time: milliseconds since the Unix epoch, on the caller's clock (the daemon's
/// [`Clock`] or the simulator's virtual time). Serialized as the plain number.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Debug,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Instant(u64);

impl Instant {
    /// The Unix epoch (also "never" / "not yet" where a state machine starts from zero).
    pub const ZERO: Instant = Instant(0);
    /// The end of time (a timer that never fires).
    pub const MAX: Instant = Instant(u64::MAX);

    /// The instant `ms` milliseconds after the Unix epoch (wire formats, files, tests).
    pub const fn from_unix_ms(ms: u64) -> Instant {
        Instant(ms)
    }

    /// Milliseconds since the Unix epoch (for wire formats, files and answers).
    pub const fn as_unix_ms(self) -> u64 {
        self.0
    }

    /// How long after `earlier` this is; zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Millis {
        self.0.saturating_sub(earlier.0)
    }

    /// How long after `earlier` this is; `None` if `earlier` is later.
    pub fn checked_since(self, earlier: Instant) -> Option<Millis> {
        self.0.checked_sub(earlier.0)
    }

    /// `d` later, stopping at [`Instant::MAX`].
    pub fn saturating_add(self, d: Millis) -> Instant {
        Instant(self.0.saturating_add(d))
    }

    /// `d` earlier, stopping at [`Instant::ZERO`].
    pub fn saturating_sub(self, d: Millis) -> Instant {
        Instant(self.0.saturating_sub(d))
    }

    /// `d` later; `None` past [`Instant::MAX`].
    pub fn checked_add(self, d: Millis) -> Option<Instant> {
        self.0.checked_add(d).map(Instant)
    }
}

impl std::ops::Add<Millis> for Instant {
    type Output = Instant;
    fn add(self, d: Millis) -> Instant {
        Instant(self.0 + d)
    }
}

impl std::ops::AddAssign<Millis> for Instant {
    fn add_assign(&mut self, d: Millis) {
        self.0 += d;
    }
}

/// Saturating: an instant before the epoch is the epoch (the state machines' "long ago").
impl std::ops::Sub<Millis> for Instant {
    type Output = Instant;
    fn sub(self, d: Millis) -> Instant {
        self.saturating_sub(d)
    }
}

/// The time between two instants, as `u64` subtraction was (use `saturating_since` where the
/// order is not known).
impl std::ops::Sub<Instant> for Instant {
    type Output = Millis;
    fn sub(self, earlier: Instant) -> Millis {
        self.0 - earlier.0
    }
}

/// A monotonic clock that reads as Unix milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: std::time::Instant,
    start_ms: u64,
}

impl Clock {
    /// Anchors to the wall clock now.
    pub fn new() -> Clock {
        let start_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            start: std::time::Instant::now(),
            start_ms,
        }
    }

    /// Now, in Unix milliseconds.
    pub fn now(&self) -> Instant {
        Instant(self.start_ms + self.start.elapsed().as_millis() as u64)
    }

    /// The monotonic `std::time::Instant` at which the clock reads `at`.
    pub fn instant_at(&self, at: Instant) -> std::time::Instant {
        self.start + std::time::Duration::from_millis(at.0.saturating_sub(self.start_ms))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// A token bucket: `take` succeeds at most `rate` times a second on average, with bursts up to
/// `burst`. The rate limiter of every smooth rate (CREATE cells, introductions, ...), on the
/// caller's clock so that it runs in virtual time too. Caps that must hold as exact counts per
/// window use [`RateWindow`] (docs/decisions.md, "Building blocks").
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    /// Whether the bucket would be full at `now` (then forgetting it loses nothing).
    pub fn is_full(&self, now: Instant, rate: f64, burst: f64) -> bool {
        let dt = now.saturating_since(self.at) as f64 / 1000.0;
        self.tokens + dt * rate >= burst
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant, rate: f64, burst: f64) -> bool {
        self.take_n(now, 1.0, rate, burst)
    }

    /// Takes `n` tokens if there are that many (a byte budget: `n` is a packet's length).
    pub fn take_n(&mut self, now: Instant, n: f64, rate: f64, burst: f64) -> bool {
        let dt = now.saturating_since(self.at) as f64 / 1000.0;
        self.at = now;
        self.tokens = (self.tokens + dt * rate).min(burst);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// A fixed window counter: at most `limit` events per `period`. The second shape of rate limit,
/// for caps that must hold as exact counts per window (docs/decisions.md, "Building blocks").
#[derive(Debug, Default, Clone, Copy)]
pub struct RateWindow {
    start: Instant,
    count: u32,
}

impl RateWindow {
    /// Counts one event; false if it exceeds the limit.
    pub fn allow(&mut self, now: Instant, period: Millis, limit: u32) -> bool {
        if now.saturating_since(self.start) >= period {
            self.start = now;
            self.count = 0;
        }
        if self.count >= limit {
            return false;
        }
        self.count += 1;
        true
    }

    /// Whether [`RateWindow::allow`] would allow one more event now (counts nothing).
    pub fn would_allow(&self, now: Instant, period: Millis, limit: u32) -> bool {
        now.saturating_since(self.start) >= period || self.count < limit
    }

    /// Whether the window ran out (a fresh one would start at the next event).
    pub fn expired(&self, now: Instant, period: Millis) -> bool {
        now.saturating_since(self.start) >= period
    }
}

/// Keys that hold until an instant: the one expiring table (relays judged dead or suspect,
/// quarantined circuit ids, ...). Lookups ignore lapsed entries; [`Expiring::sweep`] drops them.
/// Ordered, so that sweeps and iteration are repeatable in the simulator.
#[derive(Debug, Clone)]
pub struct Expiring<K> {
    until: std::collections::BTreeMap<K, Instant>,
}

impl<K> Default for Expiring<K> {
    fn default() -> Self {
        Expiring {
            until: std::collections::BTreeMap::new(),
        }
    }
}

impl<K: Ord> Expiring<K> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Holds `key` until `until` (replacing an earlier entry).
    pub fn insert(&mut self, key: K, until: Instant) {
        self.until.insert(key, until);
    }

    /// Holds `key` until `until` or its current end, whichever is later.
    pub fn extend(&mut self, key: K, until: Instant) {
        let e = self.until.entry(key).or_insert(until);
        *e = (*e).max(until);
    }

    /// Whether `key` is held at `now`.
    pub fn contains(&self, key: &K, now: Instant) -> bool {
        self.until.get(key).is_some_and(|t| now < *t)
    }

    /// Forgets `key`.
    pub fn remove(&mut self, key: &K) {
        self.until.remove(key);
    }

    /// Drops every entry that lapsed at `now`.
    pub fn sweep(&mut self, now: Instant) {
        self.until.retain(|_, t| now < *t);
    }

    /// Entries, lapsed ones included until the next sweep.
    pub fn len(&self) -> usize {
        self.until.len()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }
}

/// How often a condition that persists is logged again (docs/decisions.md, "Logs").
pub const REPEAT_LOG_MS: Millis = 60_000;

/// Decides when a repeated condition is logged: when it starts, when it changes, and at most
/// once every [`REPEAT_LOG_MS`] in between (a node alone on the network would otherwise log the
/// same "cannot build a path" several times a second). Keyed by the message text, so a changed
/// reason is logged at once.
#[derive(Debug, Default, Clone)]
pub struct RepeatLog {
    last: Option<(String, Instant)>,
    suppressed: u32,
}

impl RepeatLog {
    /// A condition holds now, described by `message`. Returns `Some(n)` when it should be logged,
    /// `n` being how many repeats were held back since it was last logged.
    pub fn hit(&mut self, now: Instant, message: &str) -> Option<u32> {
        match &mut self.last {
            Some((m, at)) if m == message && now.saturating_since(*at) < REPEAT_LOG_MS => {
                self.suppressed = self.suppressed.saturating_add(1);
                None
            }
            Some((m, at)) if m == message => {
                *at = now;
                Some(std::mem::take(&mut self.suppressed))
            }
            _ => {
                self.last = Some((message.to_string(), now));
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// The condition ended; returns whether it was being logged (so the caller can say so once).
    pub fn clear(&mut self) -> bool {
        self.suppressed = 0;
        self.last.take().is_some()
    }

    /// Whether the condition holds (was hit and not cleared).
    pub fn active(&self) -> bool {
        self.last.is_some()
    }
}

#[cfg(test)]
mod repeat_log_tests {
    use super::*;

    #[test]
    fn expiring_keys_lapse() {
        let at = Instant::from_unix_ms;
        let mut e = Expiring::new();
        e.insert(1u8, at(100));
        e.extend(1u8, at(50));
        assert!(e.contains(&1, at(99)));
        assert!(!e.contains(&1, at(100)));
        e.sweep(at(100));
        assert!(e.is_empty());
    }

    #[test]
    fn logs_start_change_and_once_a_minute() {
        let at = Instant::from_unix_ms;
        let mut r = RepeatLog::default();
        assert_eq!(r.hit(at(0), "a"), Some(0));
        // Four times a second for a minute: nothing more.
        for t in 1..240 {
            assert_eq!(r.hit(at(t * 250), "a"), None, "at {t}");
        }
        assert_eq!(r.hit(at(60_000), "a"), Some(239));
        assert_eq!(
            r.hit(at(60_250), "b"),
            Some(0),
            "a change is logged at once"
        );
        assert!(r.clear());
        assert!(!r.clear());
        assert_eq!(r.hit(at(61_000), "b"), Some(0), "a new start is logged");
    }
}
