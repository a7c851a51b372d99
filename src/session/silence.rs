//! Dead-path detection at the session (docs/protocol.md 10.8): a circuit we send on that sends
//! nothing back is probed with an e2e PING when the silence starts, again while it lasts, and is
//! abandoned when it lasts `CIRCUIT_DEAD_AFTER_MS`. This catches a relay death anywhere on the
//! path (a dead middle relay sends no DESTROY; the link layer notices only its own neighbours,
//! and only after its link timeouts), end to end, at either side of a session.
//!
//! Two timestamps per circuit, no allocation: the per-packet path only sets or clears them.

use crate::session::limits::{CIRCUIT_DEAD_AFTER_MS, CIRCUIT_PROBE_AFTER_MS, CIRCUIT_REPROBE_MS};
use crate::time::Instant;

/// The silence of one circuit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(in crate::session) struct Silence {
    /// When we first sent on the circuit after the last frame that came back on it.
    since: Option<Instant>,
    /// When the first and the latest probe of this silence went out.
    probes: Option<(Instant, Instant)>,
}

/// What [`Silence::check`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::session) enum Verdict {
    /// Nothing to do.
    Fine,
    /// Send an e2e PING on the circuit.
    Probe,
    /// The path is dead: abandon the circuit, move its flows.
    Dead,
}

impl Silence {
    /// We sent a frame on the circuit.
    pub(in crate::session) fn sent(&mut self, now: Instant) {
        if self.since.is_none() {
            self.since = Some(now);
        }
    }

    /// An authenticated end-to-end frame arrived on the circuit (any frame, not only the PONG:
    /// a lost PONG on a circuit that carries traffic back must not kill it).
    pub(in crate::session) fn heard(&mut self) {
        *self = Silence::default();
    }

    /// Whether we are waiting for an answer on the circuit.
    pub(in crate::session) fn silent(&self) -> bool {
        self.since.is_some()
    }

    /// Runs the timer. Dead only once a probe had `CIRCUIT_REPROBE_MS` to come back, so a node
    /// driven late (a stalled process) probes before it gives up on a circuit.
    pub(in crate::session) fn check(&mut self, now: Instant) -> Verdict {
        let Some(since) = self.since else {
            return Verdict::Fine;
        };
        let quiet = now.saturating_since(since);
        match self.probes {
            Some((first, _))
                if quiet >= CIRCUIT_DEAD_AFTER_MS
                    && now.saturating_since(first) >= CIRCUIT_REPROBE_MS =>
            {
                Verdict::Dead
            }
            Some((first, last)) if now.saturating_since(last) >= CIRCUIT_REPROBE_MS => {
                self.probes = Some((first, now));
                Verdict::Probe
            }
            None if quiet >= CIRCUIT_PROBE_AFTER_MS => {
                self.probes = Some((now, now));
                Verdict::Probe
            }
            _ => Verdict::Fine,
        }
    }

    /// When [`Silence::check`] next has a verdict other than `Fine` for it (the node wakes
    /// then, not on a tick: the bounds in `limits.rs` count from these instants).
    pub(in crate::session) fn deadline(&self) -> Option<Instant> {
        let since = self.since?;
        Some(match self.probes {
            None => since + CIRCUIT_PROBE_AFTER_MS,
            Some((first, last)) => (last + CIRCUIT_REPROBE_MS)
                .min((since + CIRCUIT_DEAD_AFTER_MS).max(first + CIRCUIT_REPROBE_MS)),
        })
    }
}

impl crate::session::SessionLayer {
    /// The earliest silence deadline of any session circuit, ours or a service's (10.8): the
    /// one session timer that runs at its exact deadline; the layer's others run on the node's
    /// coarse upper-layer tick (`Node::poll_timeout`). O(session circuits).
    pub fn silence_deadline(&self) -> Option<Instant> {
        let clients = self
            .clients
            .values()
            .filter_map(|c| c.open.as_ref())
            .flat_map(|o| o.circuits.iter())
            .filter_map(|sc| sc.silence.deadline());
        let services = self
            .services
            .iter()
            .flat_map(|s| s.sessions.values())
            .flat_map(|ss| ss.silence.iter())
            .filter_map(|(_, s)| s.deadline());
        clients.chain(services).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The deadline is the first instant `check` acts: a millisecond before, nothing; at it, a
    /// probe or the verdict. Driven only at its deadlines, a silence probes at 0.6, 1.1 and 1.6 s
    /// and gives the path up at exactly 2.0 s.
    #[test]
    fn the_deadline_is_when_check_first_acts() {
        let t0 = Instant::from_unix_ms(1_000_000);
        let mut s = Silence::default();
        assert_eq!(s.deadline(), None);
        s.sent(t0);
        let mut seen = Vec::new();
        while let Some(d) = s.deadline() {
            let mut early = s;
            assert_eq!(early.check(d - 1), Verdict::Fine, "before {d:?}");
            let v = s.check(d);
            assert_ne!(v, Verdict::Fine, "at {d:?}");
            seen.push((d.saturating_since(t0), v));
            if v == Verdict::Dead || seen.len() > 10 {
                break;
            }
        }
        assert_eq!(
            seen,
            [
                (600, Verdict::Probe),
                (1_100, Verdict::Probe),
                (1_600, Verdict::Probe),
                (CIRCUIT_DEAD_AFTER_MS, Verdict::Dead)
            ]
        );
        s.heard();
        assert_eq!(s.deadline(), None);
    }

    #[test]
    fn a_silent_circuit_is_probed_then_dead_within_the_bound() {
        let mut s = Silence::default();
        assert_eq!(s.check(Instant::ZERO), Verdict::Fine);
        s.sent(Instant::from_unix_ms(1_000));
        s.sent(Instant::from_unix_ms(1_100));
        let mut probes = 0;
        let mut dead_at = None;
        for t in (1_000..6_000).step_by(50) {
            match s.check(Instant::from_unix_ms(t)) {
                Verdict::Probe => probes += 1,
                Verdict::Dead => {
                    dead_at = Some(t);
                    break;
                }
                Verdict::Fine => {}
            }
        }
        let dead_at = dead_at.expect("declared dead");
        assert_eq!(dead_at - 1_000, CIRCUIT_DEAD_AFTER_MS);
        assert!(probes >= 2, "{probes} probes");
    }

    #[test]
    fn any_frame_back_ends_the_silence() {
        let mut s = Silence::default();
        s.sent(Instant::ZERO);
        assert_eq!(
            s.check(Instant::from_unix_ms(CIRCUIT_PROBE_AFTER_MS)),
            Verdict::Probe
        );
        s.heard();
        assert!(!s.silent());
        for t in (0..10_000).step_by(100) {
            assert_eq!(s.check(Instant::from_unix_ms(t)), Verdict::Fine);
        }
        // Sending again starts a new silence from then.
        s.sent(Instant::from_unix_ms(10_000));
        assert_eq!(
            s.check(Instant::from_unix_ms(10_000 + CIRCUIT_DEAD_AFTER_MS - 1)),
            Verdict::Probe
        );
    }

    #[test]
    fn a_late_timer_probes_before_it_gives_up() {
        let mut s = Silence::default();
        s.sent(Instant::ZERO);
        assert_eq!(s.check(Instant::from_unix_ms(60_000)), Verdict::Probe);
        assert_eq!(
            s.check(Instant::from_unix_ms(60_000 + CIRCUIT_REPROBE_MS - 1)),
            Verdict::Fine
        );
        assert_eq!(
            s.check(Instant::from_unix_ms(60_000 + CIRCUIT_REPROBE_MS)),
            Verdict::Dead
        );
    }
}
