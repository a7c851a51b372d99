//! Events of the session layer's circuits, handed to the state machine that owns each circuit
//! (the owner table, [`super::layer::Owner`]): built or extended, closed, a message arrived.

use crate::circuit::layer::{CircId, Purpose};
use crate::session::circuits::single_guard;
use crate::session::client::c_intro;
use crate::session::ctx::SessionCtx;
use crate::session::intro_watch::{send_establish, IntroWatch};
use crate::session::layer::{Owner, SessionLayer};
use crate::session::limits::*;
use crate::session::roles::{parse_status, status};
use crate::time::Instant;
use crate::wire::relay::RelayCommand as C;

impl SessionLayer {
    pub(in crate::session) fn circuit_ready(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        id: CircId,
    ) {
        let Some(owner) = self.owners.get(&id).copied() else {
            return;
        };
        match owner {
            Owner::ClientStem | Owner::ServiceStem => {
                for s in self.stems.iter_mut() {
                    if s.0 == id {
                        s.1 = true;
                    }
                }
            }
            Owner::Intro { svc } => {
                let relay = ctx.path(id).and_then(|p| p.last().cloned());
                let Some(s) = self.service_mut(&svc) else {
                    return;
                };
                let Some(ip) = s.intros.iter_mut().find(|i| i.circ == id) else {
                    return;
                };
                ip.relay = relay;
                send_establish(ctx, id, &ip.auth);
            }
            Owner::ServiceRend { svc, peer } => self.service_rend_ready(ctx, now, id, svc, peer),
            Owner::ClientIntro { dst } => {
                if let Some(i) = self.clients.get_mut(&dst).and_then(|c| c.intro.as_mut()) {
                    i.intro_ready = true;
                }
                self.client_try_introduce(ctx, now, dst);
            }
            Owner::ClientRend { .. } | Owner::ClientJoin { .. } => {
                self.client_establish_rendezvous(ctx, id);
            }
            Owner::ServiceCirc { .. } | Owner::ClientCirc { .. } => {}
        }
    }

    pub(in crate::session) fn circuit_closed(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        id: CircId,
        why: &str,
    ) {
        let Some(owner) = self.owners.remove(&id) else {
            return;
        };
        tracing::debug!(circuit = id.0, why, "session circuit closed");
        match owner {
            Owner::ClientStem | Owner::ServiceStem => self.stems.retain(|(s, _)| *s != id),
            Owner::Intro { svc } => {
                if let Some(s) = self.service_mut(&svc) {
                    if s.intros
                        .iter()
                        .any(|i| i.circ == id && i.established.is_none())
                    {
                        s.intro_why = Some(format!("intro circuit closed before it was up: {why}"));
                    }
                }
                // A relay on the way died, most likely, not the intro point: a new circuit to
                // the same relay under the same auth key keeps every descriptor that lists it
                // good (the intro point moves the registration), so clients need no new one —
                // republishing through a DHT that just lost relays can take half a minute.
                // A rebuild to a suspect intro point that failed before it was answered is not
                // tried again: the suspicion was right (in netns the second try to an intro
                // point that had died cost 4 s more before its replacement).
                let again = self.service_mut(&svc).and_then(|s| {
                    s.intros
                        .iter()
                        .find(|i| {
                            i.circ == id
                                && i.listed
                                && i.rebuilds < INTRO_REBUILDS
                                && !(i.watch.in_doubt() && i.established.is_none())
                        })
                        .and_then(|i| i.relay.as_ref().map(|r| *r.identity()))
                });
                let alive = again.and_then(|r| {
                    let suspect = self.suspects.contains(&r, now);
                    let rec = ctx.view().get(&r).cloned();
                    let dead = ctx.relay_unreachable(&r, now)
                        || rec
                            .as_ref()
                            .is_some_and(|rec| ctx.recently_dead(&rec.fields().link_key, now));
                    // Suspect only (it rode a session circuit that went silent, most often
                    // behind the relay that died): rebuilt all the same, with a short time to
                    // be established. Replacing a live intro point costs a new descriptor,
                    // which clients learn seconds later through the DHT, and meanwhile the
                    // one they hold is refused there (status 1) once the old circuit's DESTROY
                    // arrives (issue #20 item 5).
                    rec.filter(|_| !dead).map(|rec| (rec, suspect))
                });
                // Through the other guard when the other intro circuits share one (spread).
                let others: Vec<CircId> = self
                    .service_mut(&svc)
                    .map(|s| {
                        s.intros
                            .iter()
                            .map(|i| i.circ)
                            .filter(|c| *c != id)
                            .collect()
                    })
                    .unwrap_or_default();
                let avoid_guards: Vec<[u8; 32]> =
                    single_guard(ctx, others.into_iter()).into_iter().collect();
                let rebuilt = alive.and_then(|(rec, suspect)| {
                    self.circuit_to(
                        ctx,
                        now,
                        true,
                        &rec,
                        Purpose::Intro,
                        Owner::Intro { svc },
                        &[],
                        &avoid_guards,
                    )
                    .ok()
                    .map(|c| (c, suspect))
                });
                if let Some(s) = self.service_mut(&svc) {
                    match (rebuilt, s.intros.iter_mut().find(|i| i.circ == id)) {
                        (Some((new, suspect)), Some(ip)) => {
                            tracing::debug!(
                                at = now.as_unix_ms(),
                                suspect,
                                "intro circuit lost: rebuilding it"
                            );
                            ip.watch = if suspect {
                                IntroWatch::doubtful(now)
                            } else {
                                IntroWatch::new(now)
                            };
                            ip.circ = new;
                            ip.established = None;
                            ip.created = now;
                            ip.rebuilds += 1;
                        }
                        _ => {
                            // Descriptors listing it stay valid for a while; a replacement is
                            // chosen at the next tick and the descriptors are rebuilt then.
                            s.intros.retain(|i| i.circ != id);
                            s.next_intro_try = now;
                        }
                    }
                }
            }
            Owner::ServiceRend { svc, peer } => {
                self.stats
                    .setup_failed(format!("service rendezvous circuit: {why}"));
                let retry = self
                    .pending_r1
                    .remove(&id)
                    .filter(|(_, _, tries)| *tries < SERVICE_REND_TRIES);
                if let Some(s) = self.service_mut(&svc) {
                    s.pending = s.pending.saturating_sub(1);
                    if let Some(ss) = s.sessions.get_mut(&peer) {
                        ss.pending = ss.pending.saturating_sub(1);
                        if ss.pending == 0 && ss.circuits.is_empty() && retry.is_none() {
                            s.sessions.remove(&peer);
                        }
                    }
                }
                // A relay on the way died: the client waits at its rendezvous point, so try
                // once more by a fresh path (the dead relay is suspect now).
                if let Some((r1, rp, tries)) = retry {
                    let live = self
                        .service_mut(&svc)
                        .is_some_and(|s| s.sessions.contains_key(&peer));
                    if !live || !self.service_rend_circuit(ctx, now, svc, peer, &rp, r1, tries + 1)
                    {
                        if let Some(s) = self.service_mut(&svc) {
                            if s.sessions
                                .get(&peer)
                                .is_some_and(|ss| ss.pending == 0 && ss.circuits.is_empty())
                            {
                                s.sessions.remove(&peer);
                            }
                        }
                    }
                }
            }
            Owner::ServiceCirc { svc, peer } => {
                if let Some(t) = self.hooks.trace_pings.as_mut() {
                    t.peer(peer, now, format!("service circuit {} closed: {why}", id.0));
                }
                if let Some(s) = self.service_mut(&svc) {
                    if let Some(ss) = s.sessions.get_mut(&peer) {
                        ss.circuits.retain(|c| *c != id);
                        ss.silence.retain(|(c, _)| *c != id);
                        // Flows answer on any live circuit until the client's packets show
                        // their new one.
                        ss.flows.retain(|_, (c, _)| *c != id);
                        if ss.circuits.is_empty() && ss.pending == 0 {
                            s.sessions.remove(&peer);
                        }
                    }
                }
            }
            Owner::ClientIntro { dst } => {
                let failed = self
                    .clients
                    .get_mut(&dst)
                    .and_then(|c| c.intro.as_mut())
                    .filter(|i| i.intro == Some(id))
                    .map(|i| {
                        i.intro = None;
                        !i.acked
                    })
                    .unwrap_or(false);
                if failed {
                    self.client_retry_intro(ctx, now, dst, &format!("intro circuit: {why}"));
                }
            }
            Owner::ClientRend { dst } => {
                if let Some(c) = self.clients.get_mut(&dst) {
                    if c.lingering.as_ref().is_some_and(|l| l.rend == Some(id)) {
                        c.lingering = None;
                    }
                }
                let ours = match c_intro(&mut self.clients, &dst) {
                    Some(i) if i.rend == Some(id) => {
                        i.rend = None;
                        true
                    }
                    _ => false,
                };
                if ours {
                    self.client_retry_intro(ctx, now, dst, &format!("rendezvous circuit: {why}"));
                }
            }
            Owner::ClientJoin { dst } => {
                if let Some(o) = self.clients.get_mut(&dst).and_then(|c| c.open.as_mut()) {
                    o.joins.retain(|j| j.circ != id);
                }
            }
            Owner::ClientCirc { dst } => {
                if let Some(t) = self.hooks.trace_pings.as_mut() {
                    t.circuit(dst, id, now, &format!("its circuit closed: {why}"));
                }
                self.client_lost_circuit(ctx, now, dst, id)
            }
        }
    }

    pub(in crate::session) fn on_message(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        id: CircId,
        cmd: u8,
        payload: &[u8],
    ) {
        let Some(owner) = self.owners.get(&id).copied() else {
            return;
        };
        match (owner, C::try_from(cmd).ok()) {
            (Owner::Intro { svc }, Some(C::IntroEstablished)) => {
                let code = parse_status(payload);
                let ok = code == Ok(status::OK);
                if let Some(ip) = self
                    .service_mut(&svc)
                    .and_then(|s| s.intros.iter_mut().find(|i| i.circ == id))
                {
                    // The answer to a check (10.6.1): the registration is still held here.
                    if code == Ok(status::EXISTS) && ip.established.is_some() {
                        ip.watch.heard(now);
                        return;
                    }
                    if ok {
                        ip.watch.heard(now);
                        if ip.established.is_some() {
                            // A check found the registration lost and made it again.
                            tracing::info!(
                                at = now.as_unix_ms(),
                                "intro point had lost the registration"
                            );
                            return;
                        }
                        ip.established = Some(now);
                        ip.listed = true;
                        ip.rebuilds = 0;
                        tracing::debug!(at = now.as_unix_ms(), "intro point established");
                    }
                }
                if !ok {
                    if let Some(s) = self.service_mut(&svc) {
                        s.intro_why = Some(format!(
                            "an intro point refused the registration (status {:?})",
                            parse_status(payload)
                        ));
                    }
                }
                if ok {
                    self.service_publish(now, svc, false);
                } else {
                    ctx.destroy(now, id);
                }
            }
            (Owner::Intro { svc }, Some(C::Introduce2)) => {
                // Introductions come only through a registration the intro point holds.
                if let Some(ip) = self
                    .service_mut(&svc)
                    .and_then(|s| s.intros.iter_mut().find(|i| i.circ == id))
                {
                    ip.watch.heard(now);
                }
                self.service_on_introduce2(ctx, now, svc, id, payload)
            }
            (Owner::ClientRend { dst }, Some(C::RendezvousEstablished)) => {
                if parse_status(payload) == Ok(status::OK) {
                    if let Some(i) = self.clients.get_mut(&dst).and_then(|c| c.intro.as_mut()) {
                        i.rend_ready = true;
                    }
                    self.client_try_introduce(ctx, now, dst);
                } else {
                    ctx.destroy(now, id);
                }
            }
            (Owner::ClientIntro { dst }, Some(C::IntroduceAck)) => {
                let code = parse_status(payload).unwrap_or(status::REFUSED);
                let Some(c) = self.clients.get_mut(&dst) else {
                    return;
                };
                let Some(i) = c.intro.as_mut() else { return };
                if code == status::OK && !i.acked {
                    i.acked = true;
                    i.acked_at = Some(now);
                    i.intro = None;
                    self.owners.remove(&id);
                    ctx.destroy(now, id);
                } else if code != status::OK {
                    self.stats.intro_acks_refused += 1;
                    if !i.acked {
                        // The intro point holds no registration for the key our descriptor
                        // lists: the service replaced it and republished. Refresh the
                        // descriptor now (once at a time), not only when the round fails.
                        self.client_refresh_descriptor(now, dst);
                        let why = format!("intro point refused (status {code})");
                        self.client_retry_intro(ctx, now, dst, &why);
                    }
                }
            }
            (Owner::ClientRend { dst }, Some(C::Rendezvous2)) => {
                self.client_on_rendezvous2(ctx, now, dst, id, payload)
            }
            (Owner::ClientJoin { dst }, Some(C::RendezvousEstablished)) => {
                if parse_status(payload) == Ok(status::OK) {
                    self.client_request_join(ctx, now, dst, id);
                } else {
                    ctx.destroy(now, id);
                }
            }
            (Owner::ClientJoin { dst }, Some(C::Rendezvous2)) => {
                self.client_on_join(ctx, now, dst, id, payload)
            }
            (Owner::ClientCirc { dst }, Some(C::Data)) => {
                self.client_on_data(ctx, now, dst, id, payload)
            }
            (Owner::ServiceCirc { svc, peer }, Some(C::Data)) => {
                self.service_on_data(ctx, now, svc, peer, id, payload)
            }
            _ => {}
        }
    }
}
