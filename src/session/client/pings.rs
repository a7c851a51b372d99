//! Our e2e PINGs (the daemon's `ping`, the simulator's reachability probes) until their PONG.
//! A PING is one frame each way over two circuits joined at a rendezvous point (7 underlay
//! datagrams each way with the service's 4-hop circuit), sent once: at 0.5% loss per datagram
//! one in 15 was lost with nothing wrong with the service (issue #25, "no_pong [open]"). The
//! session's silence tracking already finds out whether the circuit works (10.8): when a later
//! frame's PONG comes back on the circuit and ours did not, the PING or its PONG was lost, and
//! it goes again. A PING outstanding when its session loses its last circuit waits for the
//! next session as a queued one does.

use crate::circuit::layer::CircId;
use crate::session::ctx::SessionCtx;
use crate::session::layer::SessionLayer;
use crate::session::limits::{CIRCUIT_PROBE_AFTER_MS, MAX_PING_RESENDS};
use crate::session::E2eMessage;
use crate::time::Instant;

/// One of our PINGs waiting for its PONG.
#[derive(Debug, Clone, Copy)]
pub(in crate::session) struct PendingPing {
    pub(in crate::session) dst: [u8; 16],
    /// When it was asked for (the round trip reported counts from here).
    pub(in crate::session) at: Instant,
    /// Its latest send: the circuit and when (`None` while it waits for a session).
    pub(in crate::session) sent: Option<(CircId, Instant)>,
    /// Times sent again.
    pub(in crate::session) resends: u8,
}

impl PendingPing {
    pub(in crate::session) fn new(dst: [u8; 16], at: Instant) -> PendingPing {
        PendingPing {
            dst,
            at,
            sent: None,
            resends: 0,
        }
    }
}

impl SessionLayer {
    /// PING `id` left on `circ`.
    pub(in crate::session) fn ping_sent(&mut self, id: u64, circ: CircId, now: Instant) {
        if let Some(p) = self.pings.get_mut(&id) {
            p.sent = Some((circ, now));
        }
    }

    /// The PONG of a frame other than our PINGs (a silence probe's) came back on `circ` of the
    /// session to `dst`: PINGs sent there before that probe can have been sent, and still
    /// unanswered, were lost on the way (or their PONGs were): they go again, a few times.
    pub(in crate::session) fn client_resend_lost_pings(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        dst: [u8; 16],
        circ: CircId,
    ) {
        let lost: Vec<u64> = self
            .pings
            .iter()
            .filter(|(_, p)| {
                p.dst == dst
                    && p.resends < MAX_PING_RESENDS
                    && p.sent.is_some_and(|(c, t)| {
                        c == circ && now.saturating_since(t) >= CIRCUIT_PROBE_AFTER_MS
                    })
            })
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            let Some(c) = self.client_pick_circuit(ctx, now, dst, None) else {
                return;
            };
            if let Some(p) = self.pings.get_mut(&id) {
                p.resends += 1;
            }
            self.stats.pings_resent += 1;
            let ok = self.client_send_msg(ctx, now, dst, c, &E2eMessage::Ping(id));
            self.ping_sent(id, c, now);
            self.trace_ping_sent(ctx, now, dst, id, Some(c), &format!("resent ok={ok}"));
        }
    }

    /// Our PINGs to `dst` still waiting for a PONG, now waiting for a new session: `sent`
    /// cleared (they go when it opens).
    pub(in crate::session) fn client_unsent_pings(&mut self, dst: [u8; 16]) -> Vec<u64> {
        self.pings
            .iter_mut()
            .filter(|(_, p)| p.dst == dst)
            .map(|(id, p)| {
                p.sent = None;
                *id
            })
            .collect()
    }
}
