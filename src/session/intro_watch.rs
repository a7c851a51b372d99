//! End-to-end liveness of a service's intro circuits (10.6.1): the service sends ESTABLISH_INTRO
//! again on each established intro circuit every `INTRO_CHECK_MS` and expects an answer. An intro
//! point can lose a registration while the service's circuit looks alive to the service (a
//! DESTROY lost with a link one side thought dead, an intro point that restarted behind the same
//! link): clients then hear "unknown key" there, and nothing reaches the service. A check that
//! stays unanswered for `INTRO_CHECK_DEAD_MS` ends the circuit, and the circuit's loss rebuilds
//! it to the same relay under the same auth key (so descriptors listing it stay good).
//!
//! Any frame from the intro point on the circuit (INTRO_ESTABLISHED or INTRODUCE2) answers: an
//! intro point that forwards introductions holds the registration.

use crate::circuit::layer::CircId;
use crate::session::ctx::SessionCtx;
use crate::session::intro::ESTABLISH_FLAG_POW;
use crate::session::layer::SessionLayer;
use crate::session::limits::{
    INTRO_CHECK_DEAD_MS, INTRO_CHECK_MS, INTRO_CHECK_RESEND_MS, INTRO_DOUBT_ESTABLISH_MS,
    INTRO_ESTABLISH_TIMEOUT_MS, INTRO_QUICK_DEAD_MS, INTRO_QUICK_RESEND_MS,
};
use crate::session::EstablishIntro;
use crate::time::{Instant, Millis};
use crate::wire::relay::RelayCommand as C;
use ed25519_dalek::SigningKey;

/// The check of one intro circuit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(in crate::session) struct IntroWatch {
    /// When the intro point was last heard from on the circuit.
    heard: Instant,
    /// When the first and the latest check of the current silence went out.
    asked: Option<(Instant, Instant)>,
    /// The current check is a quick one ([`IntroWatch::alarm`]).
    quick: bool,
    /// The circuit was rebuilt to an intro point under suspicion: it has
    /// [`INTRO_DOUBT_ESTABLISH_MS`] to be established.
    doubt: bool,
}

/// What [`IntroWatch::check`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::session) enum Check {
    /// Nothing to do.
    Fine,
    /// Send ESTABLISH_INTRO on the circuit again.
    Ask,
    /// The intro point does not answer: end the circuit (it is rebuilt).
    Dead,
}

impl IntroWatch {
    /// A watch for a circuit established (or heard from) at `now`.
    pub(in crate::session) fn new(now: Instant) -> Self {
        IntroWatch {
            heard: now,
            ..IntroWatch::default()
        }
    }

    /// A watch for a circuit rebuilt at `now` to an intro point under suspicion.
    pub(in crate::session) fn doubtful(now: Instant) -> Self {
        IntroWatch {
            doubt: true,
            ..IntroWatch::new(now)
        }
    }

    /// Whether the circuit is a rebuild to an intro point under suspicion, not yet answered.
    pub(in crate::session) fn in_doubt(&self) -> bool {
        self.doubt
    }

    /// How long the circuit has to be established before its intro point is replaced.
    pub(in crate::session) fn establish_timeout(&self) -> Millis {
        if self.doubt {
            INTRO_DOUBT_ESTABLISH_MS
        } else {
            INTRO_ESTABLISH_TIMEOUT_MS
        }
    }

    /// Whether a quick check runs.
    pub(in crate::session) fn quick(&self) -> bool {
        self.quick && self.asked.is_some()
    }

    /// The intro point answered on the circuit.
    pub(in crate::session) fn heard(&mut self, now: Instant) {
        *self = IntroWatch::new(now);
    }

    /// A relay on the circuit fell under suspicion at `now`: a quick check starts (unless one
    /// runs); `true` if ESTABLISH_INTRO is to go out now.
    pub(in crate::session) fn alarm(&mut self, now: Instant) -> bool {
        if self.quick && self.asked.is_some() {
            return false;
        }
        self.quick = true;
        self.asked = Some((now, now));
        true
    }

    /// Runs the timer. Dead only once a check had its resend interval to come back, so a node
    /// driven late (a stalled process) asks before it gives up on a circuit.
    pub(in crate::session) fn check(&mut self, now: Instant) -> Check {
        let (dead_ms, resend_ms) = if self.quick {
            (INTRO_QUICK_DEAD_MS, INTRO_QUICK_RESEND_MS)
        } else {
            (INTRO_CHECK_DEAD_MS, INTRO_CHECK_RESEND_MS)
        };
        match self.asked {
            None if now.saturating_since(self.heard) >= INTRO_CHECK_MS => {
                self.asked = Some((now, now));
                Check::Ask
            }
            None => Check::Fine,
            Some((first, last)) => {
                if now.saturating_since(first) >= dead_ms && now.saturating_since(last) >= resend_ms
                {
                    Check::Dead
                } else if now.saturating_since(last) >= resend_ms {
                    self.asked = Some((first, now));
                    Check::Ask
                } else {
                    Check::Fine
                }
            }
        }
    }
}

/// Sends ESTABLISH_INTRO for `auth` on the intro circuit `id`, bound to the circuit's last hop.
/// Every service sheds introductions by proof of work (10.12; at effort 0 while idle), so every
/// registration asks for the intro point's higher rate.
pub(in crate::session) fn send_establish(ctx: &mut impl SessionCtx, id: CircId, auth: &SigningKey) {
    let last = ctx.path(id).map_or(0, |p| p.len().saturating_sub(1));
    let Some(bind) = ctx.hop_bind(id, last) else {
        return;
    };
    let body = EstablishIntro::sign(auth, &bind)
        .with_flags(ESTABLISH_FLAG_POW)
        .emit();
    let _ = ctx.send(id, C::EstablishIntro, &body);
}

impl SessionLayer {
    /// `identity` fell under suspicion: intro circuits through it are checked at the next tick.
    pub(in crate::session) fn note_suspect(&mut self, identity: &[u8; 32]) {
        if !self.services.is_empty() && !self.new_suspects.contains(identity) {
            self.new_suspects.push(*identity);
        }
    }

    /// The intro circuits of our service `svc`: circuit, auth key, whether established
    /// (tests and status).
    pub fn service_intro_circuits(&self, svc: [u8; 16]) -> Vec<(CircId, [u8; 32], bool)> {
        self.services
            .iter()
            .filter(|s| s.address == svc)
            .flat_map(|s| s.intros.iter())
            .map(|i| (i.circ, i.auth_pub, i.established.is_some()))
            .collect()
    }

    /// Asks the established intro points of `svc` not heard from lately whether they still hold
    /// its registration, and ends the circuits of those that stay silent (their loss rebuilds
    /// them, `dispatch.rs`).
    pub(in crate::session) fn service_watch_intros(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        svc: [u8; 16],
    ) {
        let alarms = &self.new_suspects;
        let Some(s) = self.services.iter_mut().find(|s| s.address == svc) else {
            return;
        };
        let mut dead = Vec::new();
        for ip in s.intros.iter_mut().filter(|i| i.established.is_some()) {
            let shares = !alarms.is_empty()
                && ctx
                    .path(ip.circ)
                    .is_some_and(|p| p.iter().any(|r| alarms.contains(r.identity())));
            if shares && ip.watch.alarm(now) {
                tracing::debug!(
                    at = now.as_unix_ms(),
                    circuit = ip.circ.0,
                    "a relay of an intro circuit is suspect: checking it"
                );
                send_establish(ctx, ip.circ, &ip.auth);
                continue;
            }
            let quick = ip.watch.quick();
            match ip.watch.check(now) {
                Check::Fine => {}
                Check::Ask => send_establish(ctx, ip.circ, &ip.auth),
                Check::Dead => dead.push((ip.circ, quick)),
            }
        }
        if let Some((_, quick)) = dead.first() {
            s.intro_why = Some(if *quick {
                "an intro point stopped answering after a relay on its circuit fell under \
                 suspicion"
                    .to_string()
            } else {
                format!(
                    "an intro point stopped answering ({} s without an answer to \
                     ESTABLISH_INTRO)",
                    INTRO_CHECK_DEAD_MS / 1000
                )
            });
        }
        for (id, _) in dead {
            self.stats.intro_checks_failed += 1;
            tracing::info!(
                at = now.as_unix_ms(),
                circuit = id.0,
                "intro point silent: rebuilding its circuit"
            );
            // The owner stays: the circuit's Closed event rebuilds it (same relay, same key).
            ctx.destroy(now, id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_intro_point_is_asked_then_dead_within_the_bound() {
        let mut w = IntroWatch::new(Instant::from_unix_ms(1_000));
        let mut asks = Vec::new();
        let mut dead_at = None;
        for t in (1_000..60_000).step_by(250) {
            match w.check(Instant::from_unix_ms(t)) {
                Check::Ask => asks.push(t),
                Check::Dead => {
                    dead_at = Some(t);
                    break;
                }
                Check::Fine => {}
            }
        }
        let dead_at = dead_at.expect("declared dead");
        assert_eq!(asks.first(), Some(&(1_000 + INTRO_CHECK_MS)));
        assert!(asks.len() >= 3, "{asks:?}");
        assert!(dead_at - 1_000 <= INTRO_CHECK_MS + INTRO_CHECK_DEAD_MS + INTRO_CHECK_RESEND_MS);
    }

    #[test]
    fn an_answer_ends_the_check() {
        let mut w = IntroWatch::new(Instant::from_unix_ms(0));
        assert_eq!(w.check(Instant::from_unix_ms(INTRO_CHECK_MS)), Check::Ask);
        w.heard(Instant::from_unix_ms(INTRO_CHECK_MS + 300));
        for t in (INTRO_CHECK_MS + 300..2 * INTRO_CHECK_MS + 300).step_by(100) {
            assert_eq!(w.check(Instant::from_unix_ms(t)), Check::Fine, "at {t}");
        }
        assert_eq!(
            w.check(Instant::from_unix_ms(2 * INTRO_CHECK_MS + 300)),
            Check::Ask
        );
    }

    #[test]
    fn a_suspect_relay_makes_a_quick_check_that_ends_within_its_bound() {
        let mut w = IntroWatch::new(Instant::from_unix_ms(0));
        let t0 = 3_000;
        assert!(w.alarm(Instant::from_unix_ms(t0)));
        // One check at a time: a second alarm during it sends nothing.
        assert!(!w.alarm(Instant::from_unix_ms(t0 + 100)));
        let mut asks = 0;
        let mut dead_at = None;
        for t in (t0..t0 + 10_000).step_by(50) {
            match w.check(Instant::from_unix_ms(t)) {
                Check::Ask => asks += 1,
                Check::Dead => {
                    dead_at = Some(t);
                    break;
                }
                Check::Fine => {}
            }
        }
        let took = dead_at.expect("declared dead") - t0;
        assert!(
            (INTRO_QUICK_DEAD_MS..INTRO_QUICK_DEAD_MS + INTRO_QUICK_RESEND_MS).contains(&took),
            "{took}"
        );
        assert!(asks >= 2, "resent: {asks}");
    }

    #[test]
    fn an_answer_ends_a_quick_check_and_the_usual_one_follows() {
        let mut w = IntroWatch::new(Instant::from_unix_ms(0));
        assert!(w.alarm(Instant::from_unix_ms(1_000)));
        w.heard(Instant::from_unix_ms(1_200));
        assert!(!w.quick());
        for t in (1_200..1_200 + INTRO_CHECK_MS).step_by(100) {
            assert_eq!(w.check(Instant::from_unix_ms(t)), Check::Fine, "at {t}");
        }
        // A new suspicion after the answer checks again.
        assert!(w.alarm(Instant::from_unix_ms(5_000)));
    }

    #[test]
    fn an_alarm_during_a_slow_check_makes_it_quick() {
        let mut w = IntroWatch::new(Instant::from_unix_ms(0));
        assert_eq!(w.check(Instant::from_unix_ms(INTRO_CHECK_MS)), Check::Ask);
        let t = INTRO_CHECK_MS + 1_000;
        assert!(w.alarm(Instant::from_unix_ms(t)));
        assert_eq!(
            w.check(Instant::from_unix_ms(t + INTRO_QUICK_DEAD_MS)),
            Check::Dead
        );
    }

    #[test]
    fn a_rebuild_to_a_suspect_intro_point_has_less_time() {
        let t = Instant::from_unix_ms(0);
        assert_eq!(
            IntroWatch::new(t).establish_timeout(),
            INTRO_ESTABLISH_TIMEOUT_MS
        );
        assert_eq!(
            IntroWatch::doubtful(t).establish_timeout(),
            INTRO_DOUBT_ESTABLISH_MS
        );
        let mut w = IntroWatch::doubtful(t);
        w.heard(Instant::from_unix_ms(300));
        assert_eq!(w.establish_timeout(), INTRO_ESTABLISH_TIMEOUT_MS);
    }

    #[test]
    fn a_late_timer_asks_before_it_gives_up() {
        let mut w = IntroWatch::new(Instant::from_unix_ms(0));
        assert_eq!(w.check(Instant::from_unix_ms(600_000)), Check::Ask);
        assert_eq!(
            w.check(Instant::from_unix_ms(600_000 + INTRO_CHECK_RESEND_MS - 1)),
            Check::Fine
        );
        assert_eq!(
            w.check(Instant::from_unix_ms(600_000 + INTRO_CHECK_RESEND_MS)),
            Check::Ask
        );
        assert_eq!(
            w.check(Instant::from_unix_ms(
                600_000 + INTRO_CHECK_DEAD_MS + INTRO_CHECK_RESEND_MS
            )),
            Check::Dead
        );
    }
}
