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

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Millis, rate: f64, burst: f64) -> bool {
        let dt = now.saturating_sub(self.at) as f64 / 1000.0;
        self.at = now;
        self.tokens = (self.tokens + dt * rate).min(burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
