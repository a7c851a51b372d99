//! An open client session's circuits and flows (10.8): each flow on its own circuit, a joined
//! spare for the next one, JOINs for replacements, e2e frames in and out.

use std::collections::BTreeMap;

use crate::circuit::layer::{CircId, Purpose};
use crate::circuit::path::{PathKind, Target};
use crate::session::circuits::{single_guard, through_suspect};
use crate::session::client::{Join, SessCirc};
use crate::session::ctx::SessionCtx;
use crate::session::flows::{addresses, flow_of, length_consistent, FlowKey};
use crate::session::frame::E2E_FRAME_LEN;
use crate::session::intro::RendHs;
use crate::session::layer::{addr16, evict_lru, seal, Owner, SessionLayer};
use crate::session::limits::*;
use crate::session::silence::Silence;
use crate::session::{E2eMessage, RendCookie, Rendezvous2};
use crate::time::Instant;
use crate::wire::record::{LinkSpec, FLAG_RENDEZVOUS};
use crate::wire::relay::RelayCommand as C;

impl SessionLayer {
    /// The circuit for a packet of `flow`: its own, else the spare (a circuit no flow uses),
    /// else the least loaded. Starts a JOIN when the spare is taken.
    pub(in crate::session) fn client_pick_circuit(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        dst: [u8; 16],
        flow: Option<FlowKey>,
    ) -> Option<CircId> {
        let suspects = &self.suspects;
        let o = self.clients.get_mut(&dst)?.open.as_mut()?;
        if let Some(f) = flow {
            if let Some((c, t)) = o.flows.get_mut(&f) {
                let c = *c;
                if o.circuits.iter().any(|x| x.id == c) {
                    *t = now;
                    return Some(c);
                }
            }
        }
        let load = |id: CircId, flows: &BTreeMap<FlowKey, (CircId, Instant)>| {
            flows.values().filter(|(c, _)| *c == id).count()
        };
        // A flow whose circuit just died must not land on one through the relay that killed
        // it (a spare that shares the dead relay is no spare): clean circuits first.
        let pick = o
            .circuits
            .iter()
            .map(|c| {
                let suspect = through_suspect(suspects, ctx, now, c.id);
                (suspect, load(c.id, &o.flows), c.id)
            })
            .min()
            .map(|(_, _, id)| id)?;
        if let Some(f) = flow {
            if o.flows.len() >= MAX_FLOWS_PER_SESSION {
                evict_lru(&mut o.flows);
            }
            o.flows.insert(f, (pick, now));
            self.client_keep_spare(ctx, now, dst);
        }
        Some(pick)
    }

    /// After a circuit of the session to `dst` died: its spares through a relay now suspect
    /// are probed at once (a spare nobody sends on would be found out only when a flow lands
    /// on it). They used to be closed: but the suspects are every relay past the guard of the
    /// dead circuit, mostly alive, and closing the spares through them closed the circuits
    /// the session would have lived on (netns logs: a death took a session's every circuit
    /// so). A spare that answers clears its relays of suspicion; one that does not is dead
    /// in `CIRCUIT_DEAD_AFTER_MS`. Meanwhile a clean replacement is joined beside it.
    pub(in crate::session) fn client_probe_suspect_spares(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        dst: [u8; 16],
    ) {
        let suspects = &self.suspects;
        let Some(o) = self.clients.get_mut(&dst).and_then(|c| c.open.as_mut()) else {
            return;
        };
        let probe: Vec<CircId> = o
            .circuits
            .iter()
            .filter(|c| {
                !o.flows.values().any(|(f, _)| *f == c.id)
                    && !c.silence.silent()
                    && through_suspect(suspects, ctx, now, c.id)
            })
            .map(|c| c.id)
            .collect();
        for id in probe {
            let ping = self.next_ping;
            self.next_ping += 1;
            self.client_send_msg(ctx, now, dst, id, &E2eMessage::Ping(ping));
        }
    }

    /// Keeps `SESSION_SPARE_CIRCUITS` joined circuits without flows (10.8), and
    /// `BUSY_SESSION_SPARE_CIRCUITS` while a flow is busy: the client cannot know the service's
    /// relays, so a spare's rendezvous point may be a relay of the service's half of the flow's
    /// circuit (its guard, say) and die with it; two spares at two rendezvous points do not
    /// both (docs/threat-model.md, "A session's spares").
    pub(in crate::session) fn client_keep_spare(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        dst: [u8; 16],
    ) {
        let Some(o) = self.clients.get_mut(&dst).and_then(|c| c.open.as_mut()) else {
            return;
        };
        // A spare through a suspect relay is being probed: it does not count until it answers.
        let suspects = &self.suspects;
        let spare = o
            .circuits
            .iter()
            .filter(|c| {
                !o.flows.values().any(|(f, _)| *f == c.id)
                    && !through_suspect(suspects, ctx, now, c.id)
            })
            .count();
        let busy = o
            .flows
            .values()
            .any(|(_, t)| now.saturating_since(*t) < RESUME_ACTIVE_MS);
        let want = if busy {
            BUSY_SESSION_SPARE_CIRCUITS
        } else {
            SESSION_SPARE_CIRCUITS
        };
        if spare + o.joins.len() >= want || o.circuits.len() + o.joins.len() >= MAX_SESSION_CIRCUITS
        {
            return;
        }
        // The second spare of a busy session whose circuits all start at one guard is built
        // through another: that guard's death takes every other circuit (netns: the client's
        // guard was the second relay killed, and the session was introduced again). The first
        // spare stays pooled (a fresh one as the only spare shared the flow's later relays
        // more often: docs/decisions.md, "silent_guards").
        let one_guard = if spare + o.joins.len() >= 1 && !self.hooks.spares_on_one_guard {
            let ids: Vec<CircId> = o
                .circuits
                .iter()
                .map(|c| c.id)
                .chain(o.joins.iter().map(|j| j.circ))
                .collect();
            single_guard(ctx, ids.into_iter())
        } else {
            None
        };
        let cookie = RendCookie::generate(&mut self.secrets);
        let avoid = self.session_relays(ctx, &dst);
        let forced = self
            .hooks
            .spare_rendezvous
            .take()
            .and_then(|rp| ctx.view().get(&rp).cloned());
        // A spare may take a pool circuit through a silent guard (the session's other circuits
        // run there too, and a spare built fresh through the other guard shared their later
        // relays more often: docs/decisions.md, "silent_guards").
        let pooled = match (&forced, one_guard) {
            (Some(_), _) => None,
            (None, Some(g)) => Some(self.build_least_shared(
                ctx,
                now,
                PathKind::Client(Target::Any(FLAG_RENDEZVOUS)),
                Purpose::Rendezvous,
                Owner::ClientJoin { dst },
                &avoid,
                &[g],
            )),
            (None, None) => self.take_pool(ctx, now, &avoid, false).map(|id| {
                self.owners.insert(id, Owner::ClientJoin { dst });
                Ok(id)
            }),
        };
        let id = match (pooled, forced) {
            (Some(id), _) => id,
            (None, Some(rp)) => self.build_circuit(
                ctx,
                now,
                PathKind::Client(Target::Relay(crate::circuit::path::Hop::from_record(&rp))),
                Purpose::Rendezvous,
                Owner::ClientJoin { dst },
            ),
            (None, None) => self.build_circuit(
                ctx,
                now,
                PathKind::Client(Target::Any(FLAG_RENDEZVOUS)),
                Purpose::Rendezvous,
                Owner::ClientJoin { dst },
            ),
        };
        let Ok(id) = id else { return };
        let ready = ctx.ready_ids(Purpose::Rendezvous).contains(&id);
        if let Some(o) = self.clients.get_mut(&dst).and_then(|c| c.open.as_mut()) {
            o.joins.push(Join {
                circ: id,
                cookie,
                started: now,
                requested: false,
            });
        }
        if ready {
            self.client_establish_rendezvous(ctx, id);
        }
    }

    pub(in crate::session) fn client_request_join(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        dst: [u8; 16],
        id: CircId,
    ) {
        let Some(rp) = ctx.path(id).and_then(|p| p.last()).cloned() else {
            return;
        };
        let Ok(spec) = LinkSpec::of_record(&rp).emit() else {
            return;
        };
        let Some(o) = self.clients.get_mut(&dst).and_then(|c| c.open.as_mut()) else {
            return;
        };
        let Some(j) = o.joins.iter_mut().find(|j| j.circ == id) else {
            return;
        };
        j.requested = true;
        let cookie = j.cookie.0;
        let request_id = o.next_request;
        o.next_request = o.next_request.wrapping_add(1);
        let onion = rp.fields().onion_key;
        let msg = E2eMessage::NewCircuit(crate::session::frame::NewCircuit {
            request_id,
            cookie: &cookie,
            rendezvous_link_spec: &spec,
            rendezvous_onion_key: &onion,
        });
        // On the circuit heard from last: the least loaded may be one a relay's death just
        // silenced, not yet found dead, and the request would be lost with it (netns logs: a
        // replacement spare waited there until the session's last circuit died).
        let heard = o
            .circuits
            .iter()
            .filter(|c| !c.silence.silent())
            .max_by_key(|c| c.heard_at)
            .map(|c| c.id);
        let circ = match heard {
            Some(c) => Some(c),
            None => self.client_pick_circuit(ctx, now, dst, None),
        };
        if let Some(circ) = circ {
            self.client_send_msg(ctx, now, dst, circ, &msg);
        }
    }

    pub(in crate::session) fn client_on_join(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        dst: [u8; 16],
        id: CircId,
        payload: &[u8],
    ) {
        let Some(o) = self.clients.get_mut(&dst).and_then(|c| c.open.as_mut()) else {
            return;
        };
        let Some(pos) = o.joins.iter().position(|j| j.circ == id) else {
            return;
        };
        let ok = match Rendezvous2::parse(payload).map(|r| r.hs) {
            Ok(RendHs::Join(mac)) => o
                .joins
                .get(pos)
                .is_some_and(|j| o.keys.verify_join_mac(&j.cookie.0, &mac)),
            _ => false,
        };
        o.joins.remove(pos);
        if !ok {
            self.owners.remove(&id);
            ctx.destroy(now, id);
            return;
        }
        o.circuits.push(SessCirc {
            id,
            silence: Silence::default(),
            heard_at: now,
        });
        self.stats.joins += 1;
        tracing::debug!(
            at = now.as_unix_ms(),
            circuit = id.0,
            path = %crate::session::circuits::path_hex(ctx, id),
            "client session circuit joined"
        );
        self.owners.insert(id, Owner::ClientCirc { dst });
        ctx.set_purpose(id, Purpose::Flow);
    }

    /// Seals and sends an e2e message on one of the session's circuits.
    pub(in crate::session) fn client_send_msg(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        dst: [u8; 16],
        circ: CircId,
        msg: &E2eMessage<'_>,
    ) -> bool {
        let Some(o) = self.clients.get_mut(&dst).and_then(|c| c.open.as_mut()) else {
            return false;
        };
        let mut buf = [0u8; E2E_FRAME_LEN];
        let Some(n) = seal(&mut o.chan, msg, &mut buf) else {
            return false;
        };
        // A PONG asks for nothing back (the peer's own silence tracking waits for it).
        if !matches!(msg, E2eMessage::Pong(_)) {
            if let Some(c) = o.circuits.iter_mut().find(|c| c.id == circ) {
                c.silence.sent(now);
            }
        }
        ctx.send(circ, C::Data, buf.get(..n).unwrap_or(&[])).is_ok()
    }

    pub(in crate::session) fn client_on_data(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        dst: [u8; 16],
        id: CircId,
        payload: &[u8],
    ) {
        let mut buf = [0u8; E2E_FRAME_LEN];
        let Some(frame) = buf.get_mut(..payload.len()) else {
            return;
        };
        frame.copy_from_slice(payload);
        let stats = &mut self.stats;
        let Some(c) = self.clients.get_mut(&dst) else {
            return;
        };
        let own = addr16(c.pseudonym.address());
        let Some(o) = c.open.as_mut() else { return };
        let Ok(pt) = o.chan.open_in_place(frame) else {
            stats.frames_refused += 1;
            if let Some(t) = self.hooks.trace_pings.as_mut() {
                t.dst(dst, now, &format!("frame refused on circuit {}", id.0));
            }
            return;
        };
        if let Some(sc) = o.circuits.iter_mut().find(|x| x.id == id) {
            sc.silence.heard();
            sc.heard_at = now;
        }
        let Ok(msg) = E2eMessage::parse(pt) else {
            stats.frames_refused += 1;
            return;
        };
        match msg {
            E2eMessage::Packet(p) => match addresses(p) {
                Some((src, d)) if src == dst && d == own && length_consistent(p) => {
                    // The service moves a flow off a circuit it saw die (the client may not
                    // know yet: a killed relay sends nothing): answer where it arrives.
                    if let Some((c, t)) = flow_of(p, false).and_then(|f| o.flows.get_mut(&f)) {
                        *c = id;
                        *t = now;
                    }
                    ctx.deliver_packet(p);
                }
                _ => stats.packets_refused += 1,
            },
            E2eMessage::Pong(x) => {
                // The circuit answers: none of its relays is the dead one another circuit's
                // silence made suspect (its spares are probed for this).
                if let Some(p) = ctx.path(id) {
                    for r in p {
                        self.suspects.remove(r.identity());
                    }
                }
                // A probe's PONG ended the silence above; the node hears only its own pings.
                if let Some(t) = self.hooks.trace_pings.as_mut() {
                    t.ping(x, now, format!("PONG on circuit {}", id.0));
                }
                match self.pings.remove(&x) {
                    Some(p) => ctx.pong(p.dst, x, now.saturating_since(p.at)),
                    // Not ours: a silence probe's, so the circuit works (10.8).
                    None => self.client_resend_lost_pings(ctx, now, dst, id),
                }
            }
            E2eMessage::Ping(x) => {
                let _ = self.client_send_msg(ctx, now, dst, id, &E2eMessage::Pong(x));
            }
            E2eMessage::NewCircuitRefused { .. } => {
                // The service is at its limit: flows share the circuits there are.
                let stale: Vec<CircId> = o
                    .joins
                    .iter()
                    .filter(|j| j.requested)
                    .map(|j| j.circ)
                    .collect();
                o.joins.retain(|j| !j.requested);
                for s in stale {
                    self.owners.remove(&s);
                    ctx.destroy(now, s);
                }
            }
            _ => {}
        }
    }

    /// The relays of the client session's circuits to `dst` and of its joins under way (a
    /// second spare must not take the first one's rendezvous point), each once.
    fn session_relays(&self, ctx: &impl SessionCtx, dst: &[u8; 16]) -> Vec<[u8; 32]> {
        let Some(o) = self.clients.get(dst).and_then(|c| c.open.as_ref()) else {
            return Vec::new();
        };
        let mut relays: Vec<[u8; 32]> = o
            .circuits
            .iter()
            .map(|c| c.id)
            .chain(o.joins.iter().map(|j| j.circ))
            .filter_map(|id| ctx.path(id))
            .flat_map(|p| p.iter().map(|r| *r.identity()))
            .collect();
        relays.sort_unstable();
        relays.dedup();
        relays
    }
}
