//! A hidden service's sessions with clients: joining a client's rendezvous point (RENDEZVOUS1),
//! the circuits of a session, and the packets sent and received over them (10.7, 10.8).

use crate::circuit::layer::{CircId, Purpose};
use crate::session::circuits::{common_relays, single_guard};
use crate::session::ctx::SessionCtx;
use crate::session::flows::{addresses, flow_of, length_consistent};
use crate::session::frame::E2E_FRAME_LEN;
use crate::session::intro::RendHs;
use crate::session::layer::{evict_lru, seal, Owner, RendWaiting, SendError, SessionLayer};
use crate::session::limits::*;
use crate::session::silence::Silence;
use crate::session::trace::note;
use crate::session::{E2eMessage, RendCookie, Rendezvous1};
use crate::time::Instant;
use crate::wire::record::LinkSpec;
use crate::wire::relay::RelayCommand as C;

impl SessionLayer {
    /// Extends a stem to the client's rendezvous point and sends RENDEZVOUS1 when there.
    pub(in crate::session) fn service_join_rendezvous(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        svc: [u8; 16],
        peer: [u8; 16],
        link_spec: &[u8],
        r1: Rendezvous1,
    ) -> bool {
        let Ok(spec) = LinkSpec::parse(link_spec) else {
            return false;
        };
        if ctx.view().get(&spec.identity).is_none()
            && self.rend_waiting.len() < MAX_PENDING_INTRODUCTIONS
        {
            // The client chose a relay our partial view does not hold (issue #25: at 1,000
            // nodes most of them): its record is in the DHT. The client waits at the point
            // until its rendezvous timeout.
            self.stats
                .setup_failed("service: rendezvous point record looked up in the DHT".into());
            self.rend_waiting.push(RendWaiting {
                svc,
                peer,
                rp: spec.identity,
                r1,
                since: now,
            });
            self.fetch_relay(spec.identity);
            return true;
        }
        self.service_rend_circuit(ctx, now, svc, peer, &spec.identity, r1, 1)
    }

    /// The DHT lookup of relay `identity`'s record ended: joins waiting for it as their
    /// rendezvous point go on (or fail, counted, if the record is still not in the view).
    pub(in crate::session) fn service_relay_found(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        identity: [u8; 32],
    ) {
        let (ready, rest): (Vec<RendWaiting>, Vec<RendWaiting>) =
            std::mem::take(&mut self.rend_waiting)
                .into_iter()
                .partition(|w| w.rp == identity);
        self.rend_waiting = rest;
        for w in ready {
            let live = self
                .service_mut(&w.svc)
                .is_some_and(|s| s.sessions.contains_key(&w.peer));
            if live && now.saturating_since(w.since) < REND_TIMEOUT_MS {
                self.service_rend_circuit(ctx, now, w.svc, w.peer, &w.rp, w.r1, 1);
            }
        }
    }

    /// A circuit to the rendezvous point `rp` that sends `r1` when there (try `tries`).
    // The node's parts come as `ctx`: one argument more than clippy's default limit.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::session) fn service_rend_circuit(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        svc: [u8; 16],
        peer: [u8; 16],
        rp: &[u8; 32],
        r1: Rendezvous1,
        tries: u8,
    ) -> bool {
        // The rendezvous point must be a relay we know (its signed record gives the onion key).
        let Some(target) = ctx.view().get(rp).cloned() else {
            tracing::debug!("rendezvous point not in our view");
            self.stats
                .setup_failed("service: rendezvous point not in our view".into());
            return false;
        };
        let owner = Owner::ServiceRend { svc, peer };
        // The relays of the session's live circuits: a join through other ones (another guard,
        // another vanguard) survives the death of theirs (issue #20 item 5).
        let live = self
            .service_mut(&svc)
            .and_then(|s| s.sessions.get(&peer))
            .map(|ss| ss.circuits.clone())
            .unwrap_or_default();
        // Listed once per circuit: a relay on more of them weighs more.
        let mut avoid: Vec<[u8; 32]> = live
            .iter()
            .filter_map(|c| ctx.path(*c))
            .flat_map(|p| p.iter().map(|r| *r.identity()).collect::<Vec<_>>())
            .collect();
        // Stems all start at our first guard: when every circuit of the session does too, the
        // join goes through another guard, or that guard's death takes the whole session (and
        // with it the circuit the client would ask for a replacement on). The same for a relay
        // on every circuit of the session anywhere: the client's spare may have our guard (or
        // vanguard) as its rendezvous point, which the client cannot know, and then the guard
        // the flow's half starts at is on both; this join (the client's second spare) must not
        // be a third circuit through it. Nothing is refused: a refusal would tell a client
        // probing rendezvous points which relays are ours (docs/threat-model.md).
        let common = common_relays(ctx, live.iter().copied());
        let mut avoid_guards: Vec<[u8; 32]> =
            single_guard(ctx, live.into_iter()).into_iter().collect();
        let guards: Vec<[u8; 32]> = ctx.guards().list().iter().map(|g| g.identity).collect();
        let shared_guards: Vec<[u8; 32]> = guards
            .iter()
            .filter(|g| common.contains(g) && *g != rp && !avoid_guards.contains(g))
            .copied()
            .collect();
        // Only while a guard is left to build through (with every guard avoided the first one
        // is taken, whichever the circuits share).
        if guards
            .iter()
            .any(|g| !avoid_guards.contains(g) && !shared_guards.contains(g))
        {
            avoid_guards.extend(shared_guards);
        }
        for r in &common {
            // Heavier than any relay on some of them only.
            avoid.extend(std::iter::repeat_n(*r, MAX_SESSION_CIRCUITS));
        }
        let purpose = Purpose::Rendezvous;
        match self.circuit_to(
            ctx,
            now,
            true,
            &target,
            purpose,
            owner,
            &avoid,
            &avoid_guards,
        ) {
            Ok(id) => {
                self.pending_r1.insert(id, (r1, *rp, tries));
                if let Some(s) = self.service_mut(&svc) {
                    s.pending += 1;
                    if let Some(ss) = s.sessions.get_mut(&peer) {
                        ss.pending += 1;
                    }
                }
                true
            }
            Err(e) => {
                tracing::debug!("rendezvous circuit: {e}");
                self.stats
                    .setup_failed(format!("service: rendezvous circuit: {e}"));
                false
            }
        }
    }

    pub(in crate::session) fn service_rend_ready(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        id: CircId,
        svc: [u8; 16],
        peer: [u8; 16],
    ) {
        let r1 = self.pending_r1.remove(&id);
        let Some(s) = self.service_mut(&svc) else {
            return;
        };
        s.pending = s.pending.saturating_sub(1);
        let live = match s.sessions.get_mut(&peer) {
            Some(ss) => {
                ss.pending = ss.pending.saturating_sub(1);
                // Of this session: its introduction's, or a join it asked for. A client that
                // gave up on an attempt and introduced itself again replaced the session the
                // late one made (issue #20 item 5: a lost session's new introduction does not
                // wait long for an answer).
                r1.as_ref().is_some_and(|(r1, _, _)| match &r1.hs {
                    RendHs::Ik(_) => r1.cookie == ss.intro_cookie,
                    RendHs::Join(mac) => *mac == ss.keys.join_mac(&r1.cookie.0),
                })
            }
            None => false,
        };
        let sent = match (&r1, live) {
            (Some((r1, _, _)), true) => ctx.send(id, C::Rendezvous1, &r1.emit()).is_ok(),
            _ => false,
        };
        if !sent {
            self.owners.remove(&id);
            ctx.destroy(now, id);
            return;
        }
        ctx.set_purpose(id, Purpose::Flow);
        tracing::debug!(
            at = now.as_unix_ms(),
            circuit = id.0,
            path = %crate::session::circuits::path_hex(ctx, id),
            "service session circuit joined"
        );
        let what = || format!("RENDEZVOUS1 sent on circuit {}", id.0);
        note(&mut self.hooks.trace_pings, peer, now, what);
        self.owners.insert(id, Owner::ServiceCirc { svc, peer });
        if let Some(ss) = self
            .service_mut(&svc)
            .and_then(|s| s.sessions.get_mut(&peer))
        {
            ss.circuits.push(id);
            ss.silence.push((id, Silence::default()));
        }
    }

    pub(in crate::session) fn service_send(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        svc: usize,
        dst: [u8; 16],
        packet: &[u8],
    ) -> Result<(), SendError> {
        let Some(s) = self.services.get_mut(svc) else {
            return Err(SendError::Unreachable("no such service".into()));
        };
        let Some(ss) = s.sessions.get_mut(&dst) else {
            return Err(SendError::Unreachable("no session with this client".into()));
        };
        let flow = flow_of(packet, false);
        // A flow without a circuit (new, or its circuit died) answers on the newest circuit
        // that is not waiting for an answer (the client's packets then show the flow's own).
        let circ = flow
            .and_then(|f| ss.flows.get(&f))
            .map(|(c, _)| *c)
            .filter(|c| ss.circuits.contains(c))
            .or_else(|| {
                ss.silence
                    .iter()
                    .rev()
                    .find(|(_, s)| !s.silent())
                    .map(|(c, _)| *c)
            })
            .or_else(|| ss.circuits.last().copied());
        let Some(circ) = circ else {
            return Err(SendError::Unreachable("session has no live circuit".into()));
        };
        if let Some((_, s)) = ss.silence.iter_mut().find(|(c, _)| *c == circ) {
            s.sent(now);
        }
        let mut buf = [0u8; E2E_FRAME_LEN];
        let n = seal(&mut ss.chan, &E2eMessage::Packet(packet), &mut buf)
            .ok_or_else(|| SendError::Unreachable("packet does not fit a frame".into()))?;
        ctx.send(circ, C::Data, buf.get(..n).unwrap_or(&[]))
            .map_err(|e| SendError::Unreachable(e.to_string()))
    }

    pub(in crate::session) fn service_on_data(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        svc: [u8; 16],
        peer: [u8; 16],
        id: CircId,
        payload: &[u8],
    ) {
        let mut buf = [0u8; E2E_FRAME_LEN];
        let Some(frame) = buf.get_mut(..payload.len()) else {
            return;
        };
        frame.copy_from_slice(payload);
        let stats = &mut self.stats;
        let Some(s) = self.services.iter_mut().find(|s| s.address == svc) else {
            return;
        };
        let trace = &mut self.hooks.trace_pings;
        let Some(ss) = s.sessions.get_mut(&peer) else {
            note(trace, peer, now, || format!("data on {}: no session", id.0));
            return;
        };
        let Ok(pt) = ss.chan.open_in_place(frame) else {
            stats.frames_refused += 1;
            note(trace, peer, now, || format!("frame refused on {}", id.0));
            return;
        };
        if let Some((_, s)) = ss.silence.iter_mut().find(|(c, _)| *c == id) {
            s.heard();
        }
        let Ok(msg) = E2eMessage::parse(pt) else {
            stats.frames_refused += 1;
            return;
        };
        let mut reply = None;
        let mut join = None;
        match msg {
            E2eMessage::Packet(p) => {
                // 10.9: source is the session peer, destination this service.
                match addresses(p) {
                    Some((src, dst)) if src == peer && dst == svc && length_consistent(p) => {
                        if let Some(f) = flow_of(p, true) {
                            if ss.flows.len() >= MAX_FLOWS_PER_SESSION && !ss.flows.contains_key(&f)
                            {
                                evict_lru(&mut ss.flows);
                            }
                            ss.flows.insert(f, (id, now));
                        }
                        ctx.deliver_packet(p);
                    }
                    _ => stats.packets_refused += 1,
                }
            }
            E2eMessage::Ping(x) => reply = Some(E2eMessage::Pong(x)),
            E2eMessage::NewCircuit(nc) => {
                let refused = ss.circuits.len() + ss.pending >= MAX_SESSION_CIRCUITS
                    || s.pending >= MAX_PENDING_INTRODUCTIONS;
                if refused {
                    reply = Some(E2eMessage::NewCircuitRefused {
                        request_id: nc.request_id,
                        reason: 1,
                    });
                } else {
                    let cookie = RendCookie(*nc.cookie);
                    let mac = ss.keys.join_mac(nc.cookie);
                    join = Some((
                        *nc.rendezvous_link_spec,
                        Rendezvous1 {
                            cookie,
                            hs: RendHs::Join(mac),
                        },
                    ));
                }
            }
            _ => {}
        }
        if let Some(r) = reply {
            let mut out = [0u8; E2E_FRAME_LEN];
            if let Some(n) = seal(&mut ss.chan, &r, &mut out) {
                let sent = ctx.send(id, C::Data, out.get(..n).unwrap_or(&[]));
                let ok = sent.is_ok();
                note(trace, peer, now, || {
                    format!("{r:?} sent on {} ok={ok}", id.0)
                });
            }
        }
        if let Some((spec, r1)) = join {
            self.service_join_rendezvous(ctx, now, svc, peer, &spec, r1);
        }
    }
}
