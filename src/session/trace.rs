//! Where e2e PINGs went, for the simulator's reachability probes that got no PONG (issue #25).
//! Off unless a driver turns it on (`SessionTestHooks::trace_pings`): each hook is then one
//! branch on a `None`. PINGs and refused frames are not the packet path, so the cost when on
//! (a few strings per PING) stays off the hot path too.

use std::collections::BTreeMap;

use crate::circuit::layer::CircId;
use crate::time::Instant;

/// Most events kept per PING and per peer (oldest dropped).
const MAX_EVENTS: usize = 32;

/// One of our e2e PINGs, as a client.
#[derive(Debug, Clone, Default)]
pub struct PingTrail {
    /// The service's address.
    pub dst: [u8; 16],
    /// The circuit it was last sent on.
    pub circ: Option<CircId>,
    /// Relays of that circuit, guard first (the simulator looks up which died).
    pub path: Vec<[u8; 32]>,
    /// What happened, when.
    pub events: Vec<(Instant, String)>,
}

/// The trace, as one node saw it.
#[derive(Debug, Clone, Default)]
pub struct PingTrace {
    /// Our PINGs as a client, by id.
    pub client: BTreeMap<u64, PingTrail>,
    /// As a service: per client pseudonym address, PINGs answered and frames refused.
    pub service: BTreeMap<[u8; 16], Vec<(Instant, String)>>,
}

fn push(v: &mut Vec<(Instant, String)>, now: Instant, what: String) {
    if v.len() >= MAX_EVENTS {
        v.remove(0);
    }
    v.push((now, what));
}

/// A service event about the client `peer`, when the trace is on (`what` runs only then).
pub(in crate::session) fn note(
    t: &mut Option<PingTrace>,
    peer: [u8; 16],
    now: Instant,
    what: impl FnOnce() -> String,
) {
    if let Some(t) = t.as_mut() {
        t.peer(peer, now, what());
    }
}

impl PingTrace {
    /// A client event for PING `id`.
    pub(in crate::session) fn ping(&mut self, id: u64, now: Instant, what: String) {
        if let Some(t) = self.client.get_mut(&id) {
            push(&mut t.events, now, what);
        }
    }

    /// A client event for every PING to `dst` last sent on `circ` (its circuit closed).
    pub(in crate::session) fn circuit(
        &mut self,
        dst: [u8; 16],
        circ: CircId,
        now: Instant,
        what: &str,
    ) {
        for t in self.client.values_mut() {
            if t.dst == dst && t.circ == Some(circ) {
                push(&mut t.events, now, what.to_string());
            }
        }
    }

    /// A client event for every PING to `dst`.
    pub(in crate::session) fn dst(&mut self, dst: [u8; 16], now: Instant, what: &str) {
        for t in self.client.values_mut().filter(|t| t.dst == dst) {
            push(&mut t.events, now, what.to_string());
        }
    }

    /// A service event about the client `peer`.
    pub(in crate::session) fn peer(&mut self, peer: [u8; 16], now: Instant, what: String) {
        push(self.service.entry(peer).or_default(), now, what);
    }
}

impl crate::session::SessionLayer {
    /// The client pseudonym address this node uses towards `dst` (to find its PINGs in the
    /// service's trace).
    pub fn client_address_for(&self, dst: &[u8; 16]) -> Option<[u8; 16]> {
        self.clients
            .get(dst)
            .map(|c| crate::session::layer::addr16(c.pseudonym.address()))
    }

    /// A client PING `id` to `dst` left on `circ` (or waits for the session, `circ` `None`).
    pub(in crate::session) fn trace_ping_sent(
        &mut self,
        ctx: &impl crate::session::SessionCtx,
        now: Instant,
        dst: [u8; 16],
        id: u64,
        circ: Option<CircId>,
        what: &str,
    ) {
        let Some(t) = self.hooks.trace_pings.as_mut() else {
            return;
        };
        let n = self
            .clients
            .get(&dst)
            .and_then(|c| c.open.as_ref())
            .map_or(0, |o| o.circuits.len());
        let trail = t.client.entry(id).or_insert_with(|| PingTrail {
            dst,
            ..PingTrail::default()
        });
        if let Some(c) = circ {
            trail.circ = Some(c);
            trail.path = ctx
                .path(c)
                .map(|p| p.iter().map(|r| *r.identity()).collect())
                .unwrap_or_default();
            push(
                &mut trail.events,
                now,
                format!("{what}: sent on circuit {} ({n} session circuits)", c.0),
            );
        } else {
            push(&mut trail.events, now, format!("{what}: not sent"));
        }
    }
}

impl crate::session::SessionLayer {
    /// The client session to `dst` as it stands: its circuits (id, silent, ms since heard).
    pub fn client_session_summary(&self, now: Instant, dst: &[u8; 16]) -> String {
        let Some(c) = self.clients.get(dst) else {
            return "no session".into();
        };
        let Some(o) = c.open.as_ref() else {
            return "not open".into();
        };
        let circs: Vec<String> = o
            .circuits
            .iter()
            .map(|sc| {
                format!(
                    "{}{} heard {} ms ago",
                    sc.id.0,
                    if sc.silence.silent() { " silent" } else { "" },
                    now.saturating_since(sc.heard_at)
                )
            })
            .collect();
        format!(
            "open {} ms, circuits [{}], joins {}, flows {}",
            now.saturating_since(o.established),
            circs.join("; "),
            o.joins.len(),
            o.flows.len()
        )
    }
}
