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
use crate::session::limits::{INTRO_CHECK_DEAD_MS, INTRO_CHECK_MS, INTRO_CHECK_RESEND_MS};
use crate::session::EstablishIntro;
use crate::time::Instant;
use crate::wire::relay::RelayCommand as C;
use ed25519_dalek::SigningKey;

/// The check of one intro circuit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(in crate::session) struct IntroWatch {
    /// When the intro point was last heard from on the circuit.
    heard: Instant,
    /// When the first and the latest check of the current silence went out.
    asked: Option<(Instant, Instant)>,
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
            asked: None,
        }
    }

    /// The intro point answered on the circuit.
    pub(in crate::session) fn heard(&mut self, now: Instant) {
        *self = IntroWatch::new(now);
    }

    /// Runs the timer. Dead only once a check had `INTRO_CHECK_RESEND_MS` to come back, so a
    /// node driven late (a stalled process) asks before it gives up on a circuit.
    pub(in crate::session) fn check(&mut self, now: Instant) -> Check {
        match self.asked {
            None if now.saturating_since(self.heard) >= INTRO_CHECK_MS => {
                self.asked = Some((now, now));
                Check::Ask
            }
            None => Check::Fine,
            Some((first, last)) => {
                if now.saturating_since(first) >= INTRO_CHECK_DEAD_MS
                    && now.saturating_since(last) >= INTRO_CHECK_RESEND_MS
                {
                    Check::Dead
                } else if now.saturating_since(last) >= INTRO_CHECK_RESEND_MS {
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
    /// Asks the established intro points of `svc` not heard from lately whether they still hold
    /// its registration, and ends the circuits of those that stay silent (their loss rebuilds
    /// them, `dispatch.rs`).
    pub(in crate::session) fn service_watch_intros(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        svc: [u8; 16],
    ) {
        let Some(s) = self.service_mut(&svc) else {
            return;
        };
        let mut dead = Vec::new();
        for ip in s.intros.iter_mut().filter(|i| i.established.is_some()) {
            match ip.watch.check(now) {
                Check::Fine => {}
                Check::Ask => send_establish(ctx, ip.circ, &ip.auth),
                Check::Dead => dead.push(ip.circ),
            }
        }
        if !dead.is_empty() {
            s.intro_why = Some(format!(
                "an intro point stopped answering ({} s without an answer to ESTABLISH_INTRO)",
                INTRO_CHECK_DEAD_MS / 1000
            ));
        }
        for id in dead {
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
