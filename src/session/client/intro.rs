//! Introductions (10.6): choosing an intro point, the rendezvous circuit and the circuit to the
//! intro point, INTRODUCE1, RENDEZVOUS2; retries, rounds with a fresh descriptor, and an
//! acknowledged attempt left to linger beside the next one.

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::RngCore;

use crate::circuit::layer::{CircId, Purpose};
use crate::circuit::path::{PathKind, Target};
use crate::dht::descriptor::{epochs_to_look_up, index as desc_index, IntroEntry};
use crate::session::client::{c_intro, Introduction, OpenSession, SessCirc};
use crate::session::ctx::{DhtRequest, SessionCtx};
use crate::session::flows::flow_of;
use crate::session::intro::{IntroPlaintext, RendHs, INTRO_TLV_LEN};
use crate::session::intro_pow::{next_effort, SolveRequest};
use crate::session::layer::{hex8, Owner, SessionLayer};
use crate::session::limits::*;
use crate::session::roles::establish_rendezvous_body;
use crate::session::silence::Silence;
use crate::session::{
    ClientHandshake, E2eMessage, Introduce1, RendCookie, Rendezvous2, SessionChannel,
};
use crate::time::Instant;
use crate::wire::record::{LinkSpec, FLAG_RENDEZVOUS};
use crate::wire::relay::RelayCommand as C;

impl SessionLayer {
    /// The most work put into one introduction (`[client] pow_max_effort`, 10.12).
    pub fn set_pow_max_effort(&mut self, effort: u32) {
        self.pow_max_effort = effort;
    }

    pub(in crate::session) fn client_start_intro(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        dst: [u8; 16],
    ) {
        let Some(c) = self.clients.get_mut(&dst) else {
            return;
        };
        let Some(content) = c.content.clone() else {
            return;
        };
        if c.tried.len() >= INTRO_ATTEMPTS {
            self.client_next_round(ctx, now, dst, "introductions failed");
            return;
        }
        let me = ctx.identity();
        let suspects = &self.suspects;
        let mut candidates: Vec<IntroEntry> = content
            .intro_points
            .iter()
            // Ourselves (a client that is a relay can be the intro point): no circuit to us.
            .filter(|e| !c.tried.contains(&e.auth_key) && e.identity != me)
            .cloned()
            .collect();
        candidates.shuffle(&mut self.rng);
        // Intro points behind relays that just stopped answering last (a circuit to one waits
        // for its EXTEND to fail), and our own guards after the rest (no pooled stem reaches
        // them: the circuit is built from scratch through another guard).
        let guards: Vec<[u8; 32]> = ctx.guards().list().iter().map(|g| g.identity).collect();
        // Intro points whose record we hold first: one we do not know costs a DHT lookup of
        // its record before its circuit can start (issue #25: views are partial at scale).
        let view = ctx.view();
        let known = |e: &IntroEntry| {
            view.get(&e.identity)
                .is_some_and(|r| r.fields().onion_key == e.onion_key)
        };
        // A relay an extension of ours could not reach lately is also left out of the view:
        // trying it costs a DHT lookup of its record and then a failed extension (netns
        // failover: 8 s on an intro point that had died 15 s before).
        let suspect = |e: &IntroEntry| {
            suspects.contains(&e.identity, now) || ctx.relay_unreachable(&e.identity, now)
        };
        candidates.sort_by_key(|e| (suspect(e), !known(e), guards.contains(&e.identity)));
        // A round tries a suspect one only as its first try (every intro point left is behind
        // a relay that stopped answering; a suspicion can be wrong): after another try failed,
        // the round ends, and the next starts with the descriptor the service republishes
        // meanwhile (it loses its circuits to a dead intro point too) rather than spend an
        // intro step timeout, or a record lookup of seconds, on each dead one.
        let only_suspects_left = !c.tried.is_empty() && candidates.first().is_some_and(suspect);
        tracing::trace!(
            candidates = ?candidates
                .iter()
                .map(|e| (hex8(&e.identity), guards.contains(&e.identity)))
                .collect::<Vec<_>>(),
            "intro point candidates"
        );
        if only_suspects_left {
            // Not at once again, even for a session made again under busy flows: the cached
            // descriptor holds only those; the next round waits for a newer one (which ends the
            // pause) or its short delay.
            self.client_end_round(
                ctx,
                now,
                dst,
                "only intro points behind relays that stopped answering are left",
                true,
            );
            return;
        }
        let Some(entry) = candidates.into_iter().next() else {
            // Every intro point of this descriptor was tried (or cannot be used from here). A
            // service publishes a new revision as its intro points come and go, so the next
            // round looks the descriptor up again instead of trying the cached one until it
            // expires.
            self.client_next_round(ctx, now, dst, "no intro point left to try");
            return;
        };
        c.tried.push(entry.auth_key);
        tracing::debug!(
            at = now.as_unix_ms(),
            intro_point = %hex8(&entry.identity),
            kept_rend = c.spare_rend.is_some(),
            "introducing"
        );
        // A rendezvous circuit kept from the last try (its cookie is registered) saves a build.
        let kept = c
            .spare_rend
            .take()
            .filter(|(id, _, _)| ctx.path(*id).is_some());
        let cookie = match &kept {
            Some((_, cookie, _)) => cookie.clone(),
            None => RendCookie::generate(&mut self.secrets),
        };
        c.intro = Some(Introduction {
            started: now,
            step_started: now,
            cookie,
            rend: None,
            rend_ready: false,
            intro: None,
            intro_ready: false,
            entry: entry.clone(),
            service_key: content.service_key,
            hs: None,
            sent_at: None,
            acked: false,
            acked_at: None,
            pow: content.pow,
            solving: None,
            fetching: false,
        });
        if let Some((id, _, ready)) = kept {
            self.client_set_rend(dst, id);
            if let Some(i) = c_intro(&mut self.clients, &dst) {
                i.rend_ready = ready;
            }
        }
        // The rendezvous point: a pooled circuit (ends at a random RENDEZVOUS relay).
        let rend = if let Some(id) = c_intro(&mut self.clients, &dst).and_then(|i| i.rend) {
            Ok(id)
        } else {
            match self.take_pool(ctx, now, &[], true) {
                Some(id) => {
                    self.owners.insert(id, Owner::ClientRend { dst });
                    self.client_set_rend(dst, id);
                    self.client_establish_rendezvous(ctx, id);
                    Ok(id)
                }
                None => self.build_circuit(
                    ctx,
                    now,
                    PathKind::Client(Target::Any(FLAG_RENDEZVOUS)),
                    Purpose::Rendezvous,
                    Owner::ClientRend { dst },
                ),
            }
        };
        match rend {
            Ok(id) => self.client_set_rend(dst, id),
            Err(e) => {
                self.client_next_round(ctx, now, dst, &format!("rendezvous circuit: {e}"));
                return;
            }
        }
        // The intro point: a stem extended to it. Its record must be in our view (the
        // descriptor's entry names it; the signed record gives the current onion key).
        let intro = match self.client_intro_circuit(ctx, now, dst, &entry) {
            Some(built) => built,
            None => {
                // Not in our view: views are partial (VIEW_WANTED), so at scale most relays
                // are not in it. The record is in the DHT; the rendezvous circuit builds
                // meanwhile.
                if let Some(i) = c_intro(&mut self.clients, &dst) {
                    i.fetching = true;
                }
                self.stats
                    .setup_failed("client: intro point record looked up in the DHT".into());
                self.fetch_relay(entry.identity);
                return;
            }
        };
        match intro {
            Ok(id) => {
                if let Some(i) = self.clients.get_mut(&dst).and_then(|c| c.intro.as_mut()) {
                    i.intro = Some(id);
                }
            }
            Err(e) => self.client_retry_intro(ctx, now, dst, &e),
        }
    }

    /// A circuit to the intro point `entry` names, extended from a stem; `None` when its record
    /// (with the descriptor's onion key) is not in our view.
    fn client_intro_circuit(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        dst: [u8; 16],
        entry: &IntroEntry,
    ) -> Option<Result<CircId, String>> {
        let record = ctx
            .view()
            .get(&entry.identity)
            .filter(|r| r.fields().onion_key == entry.onion_key)
            .cloned()?;
        Some(self.circuit_to(
            ctx,
            now,
            false,
            &record,
            Purpose::Intro,
            Owner::ClientIntro { dst },
            &[],
            &[],
        ))
    }

    /// The DHT lookup of relay `identity`'s record ended (the node put a record it found into
    /// the view): introductions waiting for it build their circuit to the intro point, or try
    /// another one.
    pub(in crate::session) fn client_relay_found(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        identity: [u8; 32],
    ) {
        let waiting: Vec<([u8; 16], IntroEntry)> = self
            .clients
            .iter()
            .filter_map(|(d, c)| c.intro.as_ref().map(|i| (*d, i)))
            .filter(|(_, i)| i.fetching && i.entry.identity == identity)
            .map(|(d, i)| (d, i.entry.clone()))
            .collect();
        for (dst, entry) in waiting {
            if let Some(i) = c_intro(&mut self.clients, &dst) {
                i.fetching = false;
                // The circuit to the intro point starts now: its step gets its whole time.
                i.step_started = now;
            }
            let intro = self
                .client_intro_circuit(ctx, now, dst, &entry)
                .unwrap_or_else(|| Err("intro point not in our view nor in the DHT".to_string()));
            match intro {
                Ok(id) => {
                    if let Some(i) = c_intro(&mut self.clients, &dst) {
                        i.intro = Some(id);
                    }
                }
                Err(e) => self.client_retry_intro(ctx, now, dst, &e),
            }
        }
    }

    /// Where the current introduction to `dst` stands, for the failure trace.
    pub(crate) fn client_intro_stage(&self, now: Instant, dst: &[u8; 16]) -> &'static str {
        let Some(c) = self.clients.get(dst) else {
            return "no session";
        };
        if c.open.is_some() {
            return "open";
        }
        let Some(i) = c.intro.as_ref() else {
            return if c.lookup.is_some() {
                "lookup"
            } else {
                "between rounds"
            };
        };
        if now.saturating_since(i.started) >= REND_TIMEOUT_MS {
            "rendezvous timeout"
        } else if i.fetching {
            "intro point record lookup"
        } else if !i.rend_ready && !i.intro_ready {
            "both circuits building"
        } else if !i.rend_ready {
            "rendezvous circuit building"
        } else if !i.intro_ready {
            "intro circuit building"
        } else if i.solving.is_some() {
            "solving puzzle"
        } else if !i.acked {
            "INTRODUCE1 unacknowledged"
        } else {
            "acknowledged, no RENDEZVOUS2"
        }
    }

    fn client_set_rend(&mut self, dst: [u8; 16], id: CircId) {
        if let Some(i) = self.clients.get_mut(&dst).and_then(|c| c.intro.as_mut()) {
            i.rend = Some(id);
        }
    }

    pub(in crate::session) fn client_retry_intro(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        dst: [u8; 16],
        why: &str,
    ) {
        tracing::debug!(
            at = now.as_unix_ms(),
            why,
            "introduction failed; trying another intro point"
        );
        let stage = self.client_intro_stage(now, &dst);
        self.stats
            .setup_failed(format!("client retry: {why} [{stage}]"));
        self.client_drop_intro(ctx, now, dst);
        self.client_start_intro(ctx, now, dst);
    }

    /// Ends the current introduction attempt. Its rendezvous circuit is kept for the next one
    /// if the service cannot have seen the attempt (no INTRODUCE_ACK yet): a late RENDEZVOUS1
    /// for an abandoned handshake would otherwise arrive on it.
    fn client_drop_intro(&mut self, ctx: &mut impl SessionCtx, now: Instant, dst: [u8; 16]) {
        let max_effort = self.pow_max_effort;
        let Some(c) = self.clients.get_mut(&dst) else {
            return;
        };
        let Some(i) = c.intro.take() else { return };
        if i.acked && i.pow.is_some() {
            // The intro point took INTRODUCE1 and no RENDEZVOUS2 came: the service may be
            // shedding introductions below the work it now wants (10.12). One refused or never
            // acknowledged by the intro point (dead, or the service replaced it) says nothing
            // about the service's queue: raising the work for it only slowed re-introductions
            // after relay deaths (netns failover: 1,000 → 16,000 in five rounds).
            c.pow_effort = next_effort(c.pow_effort, i.pow.map_or(0, |p| p.effort), max_effort);
        }
        if i.acked && i.rend.is_some() && i.hs.is_some() {
            // The service has it: let it answer late while the next attempt runs.
            let old = c.lingering.replace(i).and_then(|o| o.rend);
            if let Some(id) = old {
                self.owners.remove(&id);
                ctx.destroy(now, id);
            }
            return;
        }
        let mut close: Vec<CircId> = i.intro.into_iter().collect();
        // Only a ready one: a rendezvous circuit still building when the attempt gave up may
        // run through a dead relay, and would spoil every later attempt too.
        match i.rend {
            Some(r) if i.rend_ready && !i.acked && i.hs.is_none() && c.spare_rend.is_none() => {
                c.spare_rend = Some((r, i.cookie, true));
            }
            Some(r) => close.push(r),
            None => {}
        }
        for id in close {
            self.owners.remove(&id);
            ctx.destroy(now, id);
        }
    }

    /// Every intro point of the descriptor failed: look it up again after a short wait (the
    /// service may have replaced them), unless the session's setup time would be over.
    pub(in crate::session) fn client_next_round(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        dst: [u8; 16],
        why: &str,
    ) {
        self.client_end_round(ctx, now, dst, why, false);
    }

    /// Ends a round. A `short` one (cut after one try because only intro points behind
    /// relays that stopped answering were left) waits `INTRO_ROUND_DELAY_MS` or a newer
    /// descriptor, and does not lengthen later rounds' backoff: its cause is the relays'
    /// deaths, not a service that does not answer (netns failover: three short rounds took
    /// the pause to 8 s while the service's new descriptor was already out).
    fn client_end_round(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        dst: [u8; 16],
        why: &str,
        short: bool,
    ) {
        let stage = self.client_intro_stage(now, &dst);
        self.stats
            .setup_failed(format!("client round: {why} [{stage}]"));
        self.client_drop_intro(ctx, now, dst);
        let Some(c) = self.clients.get_mut(&dst) else {
            return;
        };
        // A session made again under busy flows does not pause after its first round (the
        // service has likely rebuilt its intro circuits meanwhile; later rounds back off).
        let full_rounds = c.rounds.saturating_sub(c.short_rounds);
        let delay = if short {
            INTRO_ROUND_DELAY_MS
        } else if c.resumed && c.rounds == 0 {
            0
        } else {
            INTRO_ROUND_DELAY_MS
                .saturating_mul(1 << full_rounds.min(8))
                .min(INTRO_ROUND_DELAY_MAX_MS)
        };
        if now + delay >= c.started + SESSION_SETUP_TIMEOUT_MS {
            // The next session looks the descriptor up afresh.
            self.forget_descriptor(now, &dst);
            self.client_fail(ctx, now, dst, why);
            return;
        }
        tracing::debug!(
            at = now.as_unix_ms(),
            why,
            round = c.rounds,
            "introductions failed; trying again after a pause"
        );
        c.rounds += 1;
        if short {
            c.short_rounds += 1;
        }
        c.tried.clear();
        c.content = None;
        c.retry_at = Some(now + delay);
        // The next round tries the cached descriptor again (a service rebuilds its circuits to
        // the same intro points, so it usually works once the service noticed) while a lookup
        // refreshes it meanwhile (a service that had to replace intro points republishes; a
        // DHT that just lost relays can take tens of seconds to answer, so not waiting for it).
        self.client_refresh_descriptor(now, dst);
    }

    /// Looks the descriptor of `dst` up again unless a recent lookup of it is under way: its
    /// answer only refreshes the cache (and ends a pause between rounds when newer). A lookup
    /// out for `DESC_REFRESH_OVERLAP_MS` without an answer gets a second one beside it (at most
    /// two at once): right after relay deaths one can spend 15 s on circuits through them
    /// while the service's new descriptor is already stored (netns failover).
    pub(in crate::session) fn client_refresh_descriptor(&mut self, now: Instant, dst: [u8; 16]) {
        let queued = self
            .dht_requests
            .iter()
            .any(|r| matches!(r, DhtRequest::Lookup { dst: d, .. } if *d == dst));
        let out: Vec<Instant> = self
            .lookups
            .values()
            .filter(|(d, _)| *d == dst)
            .map(|(_, t)| *t)
            .collect();
        let recent = out
            .iter()
            .any(|t| now.saturating_since(*t) < DESC_REFRESH_OVERLAP_MS);
        if !queued && !recent && out.len() < 2 {
            self.client_lookup_descriptor(now, dst);
        }
    }

    /// Looks the descriptor of `dst` up in the DHT. Its answer starts an introduction only if
    /// the session is waiting for it (`lookup` set); otherwise it just refreshes the cache.
    pub(in crate::session) fn client_lookup_descriptor(&mut self, now: Instant, dst: [u8; 16]) {
        self.stats.desc_lookups += 1;
        let (cur, _) = epochs_to_look_up(now.as_unix_ms() / 1000);
        self.dht_requests.push_back(DhtRequest::Lookup {
            dst,
            key: desc_index(&dst, cur),
        });
    }

    pub(in crate::session) fn client_try_introduce(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        dst: [u8; 16],
    ) {
        let hooks = self.hooks.clone();
        let Some(c) = self.clients.get_mut(&dst) else {
            return;
        };
        let Some(i) = c.intro.as_mut() else { return };
        if !(i.rend_ready && i.intro_ready) || i.hs.is_some() {
            return;
        }
        // Both circuits are up: how long that took sets the next attempts' step timeout (one
        // that ran past the bound is left out; one that waited for a record lookup only
        // lengthens it).
        let took = now.saturating_since(i.started);
        if took < INTRO_STEP_TIMEOUT_MS {
            let avg = self.intro_step_avg.map_or(took, |a| (3 * a + took) / 4);
            self.intro_step_avg = Some(avg);
        }
        let (Some(rend), Some(intro)) = (i.rend, i.intro) else {
            return;
        };
        let Some(rp) = ctx.path(rend).and_then(|p| p.last()) else {
            return;
        };
        let Ok(spec) = LinkSpec::of_record(rp).emit() else {
            return;
        };
        let pt = IntroPlaintext {
            cookie: i.cookie.clone(),
            rendezvous_link_spec: spec,
            rendezvous_onion_key: rp.fields().onion_key,
            tlv: [0u8; INTRO_TLV_LEN],
        }
        .emit();
        let made = match hooks.claim_pseudonym {
            Some(claim) => ClientHandshake::forged(
                &mut self.secrets,
                &i.service_key,
                &i.entry.auth_key,
                &claim,
                &c.pseudonym,
                &pt,
            ),
            None => ClientHandshake::new(
                &mut self.secrets,
                &i.service_key,
                &i.entry.auth_key,
                &c.pseudonym,
                &pt,
            ),
        };
        let Ok((hs, msg1)) = made else {
            self.client_retry_intro(ctx, now, dst, "handshake");
            return;
        };
        i.hs = Some(hs);
        let body = Introduce1 {
            auth_key: i.entry.auth_key,
            msg1,
            pow: None,
        };
        if let Some(p) = i.pow {
            let effort = p
                .effort
                .max(c.pow_effort)
                .max(hooks.client_min_effort)
                .min(self.pow_max_effort);
            if effort > 0 {
                // Solved off the node's task (a second at the cap would stall every circuit
                // on it); the attempt's timers run meanwhile, and INTRODUCE1 goes out on the
                // answer ([`SessionLayer::pow_solved`]).
                let token = self.next_solve;
                self.next_solve += 1;
                self.solve_requests.push_back(SolveRequest {
                    token,
                    seed: p.seed,
                    auth_key: body.auth_key,
                    e_c: body.client_ephemeral(),
                    effort,
                    start: self.rng.next_u64(),
                });
                i.solving = Some((token, Box::new(body)));
                tracing::debug!(
                    at = now.as_unix_ms(),
                    effort,
                    token,
                    "introduction waits for its proof of work"
                );
                return;
            }
        }
        i.sent_at = Some(now);
        send_introduce1(ctx, intro, &body, hooks.send_introduce_twice);
    }

    /// The driver solved the puzzle `token` (from [`SessionLayer::poll_solve_request`]): the
    /// INTRODUCE1 waiting for it goes out, unless its attempt has ended meanwhile.
    pub fn pow_solved(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        token: u64,
        pow: Option<crate::session::intro_pow::IntroPow>,
    ) {
        let twice = self.hooks.send_introduce_twice;
        let waiting = self.clients.values_mut().find_map(|c| {
            c.intro
                .as_mut()
                .filter(|i| i.solving.as_ref().is_some_and(|(t, _)| *t == token))
        });
        let Some(i) = waiting else {
            tracing::debug!(
                at = now.as_unix_ms(),
                token,
                "proof of work for an introduction that ended"
            );
            return;
        };
        let (Some((_, mut body)), Some(intro)) = (i.solving.take(), i.intro) else {
            return;
        };
        body.pow = pow;
        i.sent_at = Some(now);
        tracing::debug!(
            at = now.as_unix_ms(),
            token,
            effort = pow.map_or(0, |p| p.effort),
            "introduction with proof of work"
        );
        send_introduce1(ctx, intro, &body, twice);
    }

    pub(in crate::session) fn client_on_rendezvous2(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        dst: [u8; 16],
        id: CircId,
        payload: &[u8],
    ) {
        let Some(c) = self.clients.get_mut(&dst) else {
            return;
        };
        let msg2 = match Rendezvous2::parse(payload).map(|r| r.hs) {
            Ok(RendHs::Ik(m)) => m,
            _ => return,
        };
        let current = c.intro.as_ref().is_some_and(|i| i.rend == Some(id));
        let late = c.lingering.as_ref().is_some_and(|i| i.rend == Some(id));
        let hs = if current {
            c.intro.as_mut().and_then(|i| i.hs.take())
        } else if late {
            c.lingering.as_mut().and_then(|i| i.hs.take())
        } else {
            None
        };
        let Some(hs) = hs else { return };
        let keys = match hs.finish(&msg2) {
            Ok((keys, _)) => keys,
            Err(e) if current => {
                self.client_retry_intro(ctx, now, dst, &format!("message 2: {e}"));
                return;
            }
            Err(_) => {
                c.lingering = None;
                self.owners.remove(&id);
                ctx.destroy(now, id);
                return;
            }
        };
        // How long the service took to answer sets the next attempts' wait after the ack.
        let waited = if current {
            c.intro.as_ref()
        } else {
            c.lingering.as_ref()
        }
        .and_then(|i| i.acked_at)
        .map(|t| now.saturating_since(t))
        .filter(|w| *w < REND_AFTER_ACK_TIMEOUT_MS);
        if let Some(w) = waited {
            let avg = self.rend_wait_avg.map_or(w, |a| (3 * a + w) / 4);
            self.rend_wait_avg = Some(avg);
        }
        // Whichever attempt succeeded, the other one ends.
        let (won, other) = if current {
            (c.intro.take(), c.lingering.take())
        } else {
            (c.lingering.take(), c.intro.take())
        };
        let mut close: Vec<CircId> = won.and_then(|i| i.intro).into_iter().collect();
        if let Some(o) = other {
            close.extend([o.intro, o.rend].into_iter().flatten());
        }
        for x in close {
            self.owners.remove(&x);
            ctx.destroy(now, x);
        }
        tracing::debug!(
            at = now.as_unix_ms(),
            setup_ms = now.saturating_since(c.started),
            rounds = c.rounds,
            "client session open"
        );
        // A lingering attempt can win between rounds: the pause's timer must not start a new
        // introduction under the open session (the service takes a new handshake from the
        // same pseudonym for a restarted client and destroys the open session's circuits:
        // netns failover, a session lost again 4 s after it came back).
        c.retry_at = None;
        c.refresh_at = None;
        c.open = Some(OpenSession {
            chan: SessionChannel::client(&keys),
            keys,
            established: now,
            circuits: vec![SessCirc {
                id,
                silence: Silence::default(),
                heard_at: now,
            }],
            flows: BTreeMap::new(),
            joins: Vec::new(),
            next_request: 1,
        });
        self.stats.client_sessions += 1;
        self.owners.insert(id, Owner::ClientCirc { dst });
        ctx.set_purpose(id, Purpose::Flow);
        let (queue, pings) = match self.clients.get_mut(&dst) {
            Some(c) => (std::mem::take(&mut c.queue), std::mem::take(&mut c.pings)),
            None => return,
        };
        for p in pings {
            if let Some(circ) = self.client_pick_circuit(ctx, now, dst, None) {
                self.client_send_msg(ctx, now, dst, circ, &E2eMessage::Ping(p));
            }
        }
        for p in queue {
            let flow = flow_of(&p, true);
            if let Some(circ) = self.client_pick_circuit(ctx, now, dst, flow) {
                self.client_send_msg(ctx, now, dst, circ, &E2eMessage::Packet(&p));
            }
            ctx.recycle_packet(p);
        }
        self.client_keep_spare(ctx, now, dst);
    }

    pub(in crate::session) fn client_establish_rendezvous(
        &mut self,
        ctx: &mut impl SessionCtx,
        id: CircId,
    ) {
        let cookie = match self.owners.get(&id) {
            Some(Owner::ClientRend { dst }) => self
                .clients
                .get(dst)
                .and_then(|c| c.intro.as_ref())
                .map(|i| i.cookie.clone()),
            Some(Owner::ClientJoin { dst }) => self
                .clients
                .get(dst)
                .and_then(|c| c.open.as_ref())
                .and_then(|o| o.joins.iter().find(|j| j.circ == id))
                .map(|j| j.cookie.clone()),
            _ => None,
        };
        if let Some(cookie) = cookie {
            let _ = ctx.send(
                id,
                C::EstablishRendezvous,
                &establish_rendezvous_body(&cookie),
            );
        }
    }
}

fn send_introduce1(ctx: &mut impl SessionCtx, intro: CircId, body: &Introduce1, twice: bool) {
    let body = body.emit();
    let _ = ctx.send(intro, C::Introduce1, &body);
    if twice {
        let _ = ctx.send(intro, C::Introduce1, &body);
    }
}
