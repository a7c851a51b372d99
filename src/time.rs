//! Time as the state machines see it: milliseconds since the Unix epoch, passed in by the caller.
//!
//! The daemon anchors a monotonic clock to the wall clock once at start (so timers never jump);
//! the in-process network passes virtual time. Epochs and record expiries are computed from the
//! same value, with the skew tolerance of docs/protocol.md section 14.1. Time is never taken from
//! peers.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

/// A monotonic clock that reads as Unix milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    start_ms: Millis,
}

impl Clock {
    /// Anchors to the wall clock now.
    pub fn new() -> Clock {
        let start_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or(0);
        Clock {
            start: Instant::now(),
            start_ms,
        }
    }

    /// Now, in Unix milliseconds.
    pub fn now(&self) -> Millis {
        self.start_ms + self.start.elapsed().as_millis() as Millis
    }

    /// The `Instant` at which the clock reads `at`.
    pub fn instant_at(&self, at: Millis) -> Instant {
        self.start + std::time::Duration::from_millis(at.saturating_sub(self.start_ms))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// A token bucket: `take` succeeds at most `rate` times a second on average, with bursts up to
/// `burst`. The one rate limiter of every layer (CREATE cells, introductions, ...), on the
/// caller's clock so that it runs in virtual time too.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    at: Millis,
}

impl Bucket {
    /// A full bucket.
    pub fn new(burst: f64, now: Millis) -> Bucket {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    /// Whether the bucket would be full at `now` (then forgetting it loses nothing).
    pub fn is_full(&self, now: Millis, rate: f64, burst: f64) -> bool {
        let dt = now.saturating_sub(self.at) as f64 / 1000.0;
        self.tokens + dt * rate >= burst
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Millis, rate: f64, burst: f64) -> bool {
        self.take_n(now, 1.0, rate, burst)
    }

    /// Takes `n` tokens if there are that many (a byte budget: `n` is a packet's length).
    pub fn take_n(&mut self, now: Millis, n: f64, rate: f64, burst: f64) -> bool {
        let dt = now.saturating_sub(self.at) as f64 / 1000.0;
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

/// How often a condition that persists is logged again (docs/decisions.md, "Logs").
pub const REPEAT_LOG_MS: Millis = 60_000;

/// Decides when a repeated condition is logged: when it starts, when it changes, and at most
/// once every [`REPEAT_LOG_MS`] in between (a node alone on the network would otherwise log the
/// same "cannot build a path" several times a second). Keyed by the message text, so a changed
/// reason is logged at once.
#[derive(Debug, Default, Clone)]
pub struct RepeatLog {
    last: Option<(String, Millis)>,
    suppressed: u32,
}

impl RepeatLog {
    /// A condition holds now, described by `message`. Returns `Some(n)` when it should be logged,
    /// `n` being how many repeats were held back since it was last logged.
    pub fn hit(&mut self, now: Millis, message: &str) -> Option<u32> {
        match &mut self.last {
            Some((m, at)) if m == message && now.saturating_sub(*at) < REPEAT_LOG_MS => {
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
    fn logs_start_change_and_once_a_minute() {
        let mut r = RepeatLog::default();
        assert_eq!(r.hit(0, "a"), Some(0));
        // Four times a second for a minute: nothing more.
        for t in 1..240 {
            assert_eq!(r.hit(t * 250, "a"), None, "at {t}");
        }
        assert_eq!(r.hit(60_000, "a"), Some(239));
        assert_eq!(r.hit(60_250, "b"), Some(0), "a change is logged at once");
        assert!(r.clear());
        assert!(!r.clear());
        assert_eq!(r.hit(61_000, "b"), Some(0), "a new start is logged");
    }
}
