//! Sessions to services this node visits: the client state machine. A session starts with a
//! descriptor (cached, else looked up through the DHT by the node), goes through introductions
//! ([`intro`]) and is open once RENDEZVOUS2 completes the handshake; its flows ride joined
//! circuits ([`flows`]). Here: starting, failing, the descriptor cache, timers, closing.

mod flows;
mod intro;
mod keys;
mod pings;

pub(in crate::session) use pings::PendingPing;

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv6Addr;

use crate::budget::{Charge, MemoryBudget};
use crate::circuit::layer::CircId;
use crate::dht::desc_pow::PowParams;
use crate::dht::descriptor::{
    epochs_to_look_up, index as desc_index, Descriptor, DescriptorContent, IntroEntry,
};
use crate::session::ctx::{DhtAnswer, SessionCtx};
use crate::session::flows::{flow_of, FlowKey};
use crate::session::layer::{SendError, SessionLayer};
use crate::session::limits::*;
use crate::session::silence::{Silence, Verdict};
use crate::session::Introduce1;
use crate::session::{
    ClientHandshake, E2eMessage, Pseudonym, RendCookie, SessionChannel, SessionKeys,
};
use crate::time::{Instant, Millis};

pub(in crate::session) struct Introduction {
    pub(in crate::session) started: Instant,
    /// When the circuits' step began: the attempt's start, or the arrival of the intro point's
    /// record when it had to be looked up (a lookup of seconds must not eat the build's time).
    pub(in crate::session) step_started: Instant,
    pub(in crate::session) cookie: RendCookie,
    pub(in crate::session) rend: Option<CircId>,
    pub(in crate::session) rend_ready: bool,
    pub(in crate::session) intro: Option<CircId>,
    pub(in crate::session) intro_ready: bool,
    pub(in crate::session) entry: IntroEntry,
    pub(in crate::session) service_key: [u8; 32],
    pub(in crate::session) hs: Option<ClientHandshake>,
    /// When INTRODUCE1 was sent.
    pub(in crate::session) sent_at: Option<Instant>,
    pub(in crate::session) acked: bool,
    pub(in crate::session) acked_at: Option<Instant>,
    /// The service's puzzle, from the descriptor (10.12).
    pub(in crate::session) pow: Option<PowParams>,
    /// INTRODUCE1 waiting for its proof of work: the solve request's token and the body.
    pub(in crate::session) solving: Option<(u64, Box<Introduce1>)>,
    /// The intro point's record is being looked up in the DHT (it was not in our view).
    pub(in crate::session) fetching: bool,
}

pub(in crate::session) struct SessCirc {
    pub(in crate::session) id: CircId,
    pub(in crate::session) silence: Silence,
    /// When a frame last came back on it (or it was joined).
    pub(in crate::session) heard_at: Instant,
}

pub(in crate::session) struct Join {
    pub(in crate::session) circ: CircId,
    pub(in crate::session) cookie: RendCookie,
    pub(in crate::session) started: Instant,
    pub(in crate::session) requested: bool,
}

pub(in crate::session) struct OpenSession {
    pub(in crate::session) chan: SessionChannel,
    pub(in crate::session) keys: SessionKeys,
    pub(in crate::session) established: Instant,
    pub(in crate::session) circuits: Vec<SessCirc>,
    pub(in crate::session) flows: BTreeMap<FlowKey, (CircId, Instant)>,
    pub(in crate::session) joins: Vec<Join>,
    pub(in crate::session) next_request: u32,
}

pub(in crate::session) struct ClientSession {
    pub(in crate::session) pseudonym: Pseudonym,
    pub(in crate::session) started: Instant,
    pub(in crate::session) queue: VecDeque<Vec<u8>>,
    pub(in crate::session) pings: Vec<u64>,
    pub(in crate::session) lookup: Option<Instant>,
    pub(in crate::session) content: Option<DescriptorContent>,
    pub(in crate::session) tried: Vec<[u8; 32]>,
    /// Descriptor rounds that failed (every intro point tried).
    pub(in crate::session) rounds: u32,
    /// Of those, rounds cut short (only suspect intro points left): no backoff for them.
    pub(in crate::session) short_rounds: u32,
    /// While waiting between rounds: when to look the descriptor up again.
    pub(in crate::session) retry_at: Option<Instant>,
    /// When to ask the DHT again for a newer descriptor while the session cannot be set up
    /// with the cached one (its last refresh brought nothing newer).
    pub(in crate::session) refresh_at: Option<Instant>,
    /// A ready rendezvous circuit (and its registered cookie) kept from an introduction that
    /// failed on the intro point's side, for the next try.
    pub(in crate::session) spare_rend: Option<(CircId, RendCookie, bool)>,
    pub(in crate::session) intro: Option<Introduction>,
    /// An earlier attempt the service acknowledged but has not answered yet: it may still
    /// succeed while the next one runs (its RENDEZVOUS2 is accepted until it expires).
    pub(in crate::session) lingering: Option<Introduction>,
    pub(in crate::session) open: Option<OpenSession>,
    /// The effort the next introduction pays at least: raised by each one left unanswered
    /// (10.12).
    pub(in crate::session) pow_effort: u32,
    /// Made again because an open session with busy flows lost its last circuit: the flows'
    /// packets wait, so its first round of introductions does not pause before the next.
    pub(in crate::session) resumed: bool,
    pub(in crate::session) _charge: Charge,
}

/// Reports `dst` unreachable; the error for the caller.
pub(in crate::session) fn unreachable(
    ctx: &mut impl SessionCtx,
    dst: [u8; 16],
    why: &str,
) -> SendError {
    ctx.unreachable(dst, why);
    SendError::Unreachable(why.to_string())
}

pub(in crate::session) fn c_intro<'a>(
    clients: &'a mut BTreeMap<[u8; 16], ClientSession>,
    dst: &[u8; 16],
) -> Option<&'a mut Introduction> {
    clients.get_mut(dst).and_then(|c| c.intro.as_mut())
}

impl SessionLayer {
    /// Sets the node's own service seed, from which per-destination pseudonyms are derived
    /// (10.1); destinations in `real_identity_for` see the real identity instead.
    pub fn set_client_identity(&mut self, seed: [u8; 32], real_identity_for: Vec<[u8; 16]>) {
        self.client_seed = Some(seed);
        self.real_for = real_identity_for;
    }

    /// The address this node shows `dst` as a client (its pseudonym for `dst`, or its real
    /// address where configured), if a client identity is set.
    pub fn pseudonym_for(&self, dst: [u8; 16]) -> Option<Ipv6Addr> {
        let seed = self.client_seed.as_ref()?;
        let real = self.real_for.contains(&dst);
        Some(Pseudonym::for_destination(seed, &Ipv6Addr::from(dst), real).address())
    }

    /// Sends an e2e PING on the session to `dst` (starting one if needed). The answer is a
    /// [`crate::node::NodeEvent::Pong`] with the returned id.
    pub fn e2e_ping(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        dst: [u8; 16],
    ) -> Result<u64, SendError> {
        let Some(seed) = self.client_seed else {
            return Err(SendError::Unreachable("no client identity".into()));
        };
        let id = self.ping_id();
        self.pings.insert(id, PendingPing::new(dst, now));
        let real = self.real_for.contains(&dst);
        let pseudonym = Pseudonym::for_destination(&seed, &Ipv6Addr::from(dst), real);
        self.client_session(ctx, now, dst, pseudonym)?;
        let open = self.clients.get(&dst).is_some_and(|c| c.open.is_some());
        if self.hooks.trace_pings.is_some() {
            let stage = self.client_intro_stage(now, &dst);
            self.trace_ping_sent(ctx, now, dst, id, None, &format!("PING [{stage}]"));
        }
        if open {
            let circ = self.client_pick_circuit(ctx, now, dst, None);
            if let Some(circ) = circ {
                let ok = self.client_send_msg(ctx, now, dst, circ, &E2eMessage::Ping(id));
                self.ping_sent(id, circ, now);
                self.trace_ping_sent(ctx, now, dst, id, Some(circ), &format!("sent ok={ok}"));
            }
        } else if let Some(c) = self.clients.get_mut(&dst) {
            if c.pings.len() < MAX_QUEUED_PACKETS {
                c.pings.push(id);
            }
        }
        Ok(id)
    }

    /// Puts a descriptor into the client cache (after the storage checks of 11.5; the client
    /// checks run when it is used).
    pub fn cache_descriptor(
        &mut self,
        budget: &MemoryBudget,
        now: Instant,
        bytes: &[u8],
    ) -> Result<(), String> {
        let d = Descriptor::parse(bytes, now.as_unix_ms()).map_err(|e| e.to_string())?;
        let now_s = now.as_unix_ms() / 1000;
        self.desc_cache.retain(|_, (d, _)| d.expires() > now_s);
        if let Some((old, _)) = self.desc_cache.get(d.index()) {
            if old.revision() >= d.revision() {
                return Ok(());
            }
        }
        if self.desc_cache.len() >= MAX_CACHED_DESCRIPTORS {
            let oldest = self
                .desc_cache
                .iter()
                .min_by_key(|(_, (d, _))| d.expires())
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.desc_cache.remove(&k);
            }
        }
        let charge = budget.try_charge(DESC_CACHE_COST).ok_or("memory budget")?;
        self.desc_cache.insert(*d.index(), (d, charge));
        Ok(())
    }

    /// Circuits of our client session to `dst` and the flows on each (for tests and status).
    pub fn session_circuits(&self, dst: [u8; 16]) -> Vec<(CircId, usize)> {
        let Some(o) = self.clients.get(&dst).and_then(|c| c.open.as_ref()) else {
            return Vec::new();
        };
        o.circuits
            .iter()
            .map(|c| (c.id, o.flows.values().filter(|(f, _)| *f == c.id).count()))
            .collect()
    }

    /// The circuit a flow of our session to `dst` rides.
    pub fn flow_circuit(&self, dst: [u8; 16], flow: &FlowKey) -> Option<CircId> {
        self.clients
            .get(&dst)
            .and_then(|c| c.open.as_ref())
            .and_then(|o| o.flows.get(flow))
            .map(|(c, _)| *c)
    }

    /// Finds or starts the client session to `dst`.
    fn client_session(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        dst: [u8; 16],
        pseudonym: Pseudonym,
    ) -> Result<(), SendError> {
        if self.clients.contains_key(&dst) {
            return Ok(());
        }
        if self.session_count() >= MAX_SESSIONS {
            return Err(unreachable(ctx, dst, "session limit reached"));
        }
        let Some(charge) = ctx.budget().try_charge(SESSION_COST) else {
            return Err(unreachable(ctx, dst, "memory budget"));
        };
        self.clients.insert(
            dst,
            ClientSession {
                pseudonym,
                started: now,
                queue: VecDeque::new(),
                pings: Vec::new(),
                lookup: None,
                content: None,
                tried: Vec::new(),
                rounds: 0,
                short_rounds: 0,
                retry_at: None,
                refresh_at: None,
                spare_rend: None,
                intro: None,
                lingering: None,
                pow_effort: 0,
                resumed: false,
                open: None,
                _charge: charge,
            },
        );
        self.client_find_descriptor(ctx, now, dst);
        Ok(())
    }

    pub(in crate::session) fn client_fail(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        dst: [u8; 16],
        why: &str,
    ) {
        self.stats.setup_failed(format!("client failed: {why}"));
        if let Some(c) = self.clients.remove(&dst) {
            let spare = c.spare_rend.map(|(id, _, _)| id);
            let lingering = c.lingering.and_then(|l| l.rend);
            if let Some(i) = c.intro {
                for id in [i.rend, i.intro].into_iter().flatten() {
                    self.owners.remove(&id);
                    ctx.destroy(now, id);
                }
            }
            for id in [spare, lingering].into_iter().flatten() {
                self.owners.remove(&id);
                ctx.destroy(now, id);
            }
            self.pings.retain(|_, p| p.dst != dst);
        }
        tracing::debug!(why, "destination unreachable");
        unreachable(ctx, dst, why);
    }

    /// Drops the cached descriptors of `dst` (both epochs a lookup would ask for).
    pub(in crate::session) fn forget_descriptor(&mut self, now: Instant, dst: &[u8; 16]) {
        let (cur, other) = epochs_to_look_up(now.as_unix_ms() / 1000);
        for e in [Some(cur), other].into_iter().flatten() {
            self.desc_cache.remove(&desc_index(dst, e));
        }
    }

    /// The revisions of the cached descriptors of `dst` (both epochs a lookup would ask for).
    fn cached_revisions(&self, now: Instant, dst: &[u8; 16]) -> [Option<u64>; 2] {
        let (cur, other) = epochs_to_look_up(now.as_unix_ms() / 1000);
        let rev = |e: u64| {
            self.desc_cache
                .get(&desc_index(dst, e))
                .map(|(d, _)| d.revision())
        };
        [rev(cur), other.and_then(rev)]
    }

    /// A valid cached descriptor for `dst` (current epoch first), opened.
    fn cached_content(&self, now: Instant, dst: &[u8; 16]) -> Option<DescriptorContent> {
        let now_s = now.as_unix_ms() / 1000;
        let (cur, other) = epochs_to_look_up(now_s);
        [Some(cur), other].into_iter().flatten().find_map(|e| {
            let (d, _) = self.desc_cache.get(&desc_index(dst, e))?;
            if d.expires() <= now_s {
                return None;
            }
            d.open(dst, e).ok().filter(|c| self.key_as_expected(dst, c))
        })
    }

    /// Whether a valid cached descriptor for `dst` was set aside because its key is not the key
    /// a name gave for `dst`.
    fn cached_wrong_key(&self, now: Instant, dst: &[u8; 16]) -> bool {
        let now_s = now.as_unix_ms() / 1000;
        let (cur, other) = epochs_to_look_up(now_s);
        [Some(cur), other].into_iter().flatten().any(|e| {
            self.desc_cache
                .get(&desc_index(dst, e))
                .filter(|(d, _)| d.expires() > now_s)
                .and_then(|(d, _)| d.open(dst, e).ok())
                .is_some_and(|c| !self.key_as_expected(dst, &c))
        })
    }

    fn client_find_descriptor(&mut self, ctx: &mut impl SessionCtx, now: Instant, dst: [u8; 16]) {
        if let Some(content) = self.cached_content(now, &dst) {
            if let Some(c) = self.clients.get_mut(&dst) {
                c.content = Some(content);
                c.lookup = None;
            }
            self.client_start_intro(ctx, now, dst);
            return;
        }
        if let Some(c) = self.clients.get_mut(&dst) {
            c.lookup = Some(now);
        }
        self.client_lookup_descriptor(now, dst);
    }

    pub(in crate::session) fn client_lookup_done(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        dst: [u8; 16],
        answer: DhtAnswer<'_>,
    ) {
        let before = self.cached_revisions(now, &dst);
        if let DhtAnswer::Records(records) = answer {
            for r in records {
                if let Err(e) = self.cache_descriptor(ctx.budget(), now, r) {
                    tracing::debug!("descriptor from the DHT: {e}");
                }
            }
        }
        let newer = self.cached_revisions(now, &dst) != before;
        let content = self.cached_content(now, &dst);
        let wrong_key = content.is_none() && self.cached_wrong_key(now, &dst);
        if wrong_key {
            self.stats.desc_wrong_key += 1;
        }
        let Some(c) = self.clients.get_mut(&dst) else {
            return;
        };
        // A refresh (or a lookup that already timed out) has no lookup time: only the cache
        // changed, and the outcome is consumed. A newer descriptor ends a pause between rounds
        // (the service replaced its intro points: the next round should not wait for nothing).
        if c.lookup.is_none() {
            if !newer && c.open.is_none() && (c.rounds > 0 || c.resumed) {
                // The service may republish any moment now (it lost intro circuits to the
                // same deaths, or replaced an intro point that refused us): one lookup at a
                // time keeps asking until the session is up, not only at the end of a round.
                c.refresh_at = Some(now + DESC_REFRESH_RETRY_MS);
            }
            if newer && c.retry_at.is_some() && c.open.is_none() {
                tracing::debug!(
                    at = now.as_unix_ms(),
                    "a newer descriptor: the next round starts now"
                );
                c.retry_at = Some(now);
            } else if let (true, Some(content)) = (newer && c.open.is_none(), content) {
                // During a round: its next tries come from the newer list, and an attempt on
                // an intro point the service dropped (it died, or the service lost its circuit
                // to it) ends now instead of at its timeout.
                let dropped = c.intro.as_ref().is_some_and(|i| {
                    !i.acked
                        && !content
                            .intro_points
                            .iter()
                            .any(|e| e.auth_key == i.entry.auth_key)
                });
                if c.content.is_some() {
                    c.content = Some(content);
                }
                if dropped {
                    self.client_retry_intro(
                        ctx,
                        now,
                        dst,
                        "the service's newer descriptor no longer lists this intro point",
                    );
                }
            }
            return;
        }
        c.lookup = None;
        match content {
            Some(content) => {
                c.content = Some(content);
                self.client_start_intro(ctx, now, dst);
            }
            None => {
                let why = match answer {
                    // Final: the key name says which key the address must be, and the network
                    // serves another one for it.
                    _ if wrong_key => {
                        let why = "the descriptor's key is not the key of the name used (another key with this address)";
                        self.client_fail(ctx, now, dst, why);
                        return;
                    }
                    DhtAnswer::Failed(e) => format!("descriptor lookup failed: {e}"),
                    _ => "no descriptor for this address".to_string(),
                };
                // The first lookup's failure is final (an unknown address fails fast); one
                // between rounds is tried again (the service may be republishing).
                if c.rounds > 0 {
                    self.client_next_round(ctx, now, dst, &why);
                } else {
                    self.client_fail(ctx, now, dst, &why);
                }
            }
        }
    }

    pub(in crate::session) fn client_lost_circuit(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        dst: [u8; 16],
        id: CircId,
    ) {
        let Some(c) = self.clients.get_mut(&dst) else {
            return;
        };
        let Some(o) = c.open.as_mut() else { return };
        o.circuits.retain(|x| x.id != id);
        let left = o.circuits.len();
        let active = o
            .flows
            .values()
            .any(|(_, t)| now.saturating_since(*t) < RESUME_ACTIVE_MS);
        // The flows stay listed (each moves when its next packet picks a circuit): forgetting
        // them here made the session look idle when a second circuit died in the same tick (a
        // busy session keeps two spares), and a lost session was then not made again at once.
        self.stats.flows_moved += o.flows.values().filter(|(f, _)| *f == id).count() as u64;
        if let Some(t) = self.hooks.trace_pings.as_mut() {
            t.circuit(
                dst,
                id,
                now,
                &format!("its circuit lost, {left} left, flows active={active}"),
            );
        }
        if left == 0 {
            // No circuit left: the session ends and a new introduction starts (10.8); flow-layer
            // state survives. At once only if a flow carried a packet lately (its next one then
            // finds the session up, not starting), or a PING of ours waits for its PONG (it goes
            // again on the new session): a session nobody uses should not come back
            // by itself (and a twin with the same pseudonym, a restarted node, would otherwise
            // fight it for the service's single session slot).
            self.client_close(ctx, now, dst);
            let waiting = self.client_unsent_pings(dst);
            let active = active || !waiting.is_empty();
            if let (true, Some(seed)) = (active, self.client_seed) {
                let real = self.real_for.contains(&dst);
                let pseudonym = Pseudonym::for_destination(&seed, &Ipv6Addr::from(dst), real);
                tracing::debug!(
                    at = now.as_unix_ms(),
                    "session lost with active flows: introducing again"
                );
                let _ = self.client_session(ctx, now, dst, pseudonym);
                if let Some(c) = self.clients.get_mut(&dst) {
                    c.resumed = true;
                    c.pings.extend(waiting);
                }
                // The first round runs on the cached descriptor; the service has likely lost
                // intro circuits to the same deaths and republishes within seconds: fetch it
                // meanwhile, not only after that round failed.
                self.client_refresh_descriptor(now, dst);
            }
        } else {
            self.client_keep_spare(ctx, now, dst);
        }
    }

    pub(in crate::session) fn client_send(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        dst: [u8; 16],
        pseudonym: Option<Pseudonym>,
        packet: &[u8],
    ) -> Result<(), SendError> {
        // `None`: the session exists (the caller checked), so there is nothing to start.
        if let Some(p) = pseudonym {
            self.client_session(ctx, now, dst, p)?;
        }
        let open = match self.clients.get(&dst) {
            Some(c) => c.open.is_some(),
            // It failed at once (the lookup answered synchronously).
            None => return Err(SendError::Unreachable("no session could be made".into())),
        };
        if !open {
            let mut buf = ctx.packet_buf();
            buf.extend_from_slice(packet);
            if let Some(c) = self.clients.get_mut(&dst) {
                if c.queue.len() >= MAX_QUEUED_PACKETS {
                    c.queue.pop_front();
                }
                c.queue.push_back(buf);
            }
            return Ok(());
        }
        let flow = flow_of(packet, true);
        let Some(circ) = self.client_pick_circuit(ctx, now, dst, flow) else {
            return Err(SendError::Unreachable("session has no circuit".into()));
        };
        if self.client_send_msg(ctx, now, dst, circ, &E2eMessage::Packet(packet)) {
            Ok(())
        } else {
            Err(SendError::Unreachable("circuit refused the frame".into()))
        }
    }

    /// How long RENDEZVOUS1 is waited for after INTRODUCE_ACK before another intro point is
    /// tried too. The service may not know our rendezvous point (views are partial, issue
    /// #25): it then looks its record up before building to it, so the wait covers such a
    /// lookup as we measure them. A second attempt meanwhile would replace the service's
    /// session with one whose keys the first attempt's RENDEZVOUS2 does not carry.
    /// Once this node has measured its acknowledged introductions' waits, the wait follows
    /// them ([`rend_after_ack_timeout`]) with this as the ceiling.
    pub(in crate::session) fn rend_after_ack_ms(&self) -> Millis {
        let ceiling = (REND_AFTER_ACK_TIMEOUT_MS + self.relay_lookup_ms).min(REND_AFTER_ACK_MAX_MS);
        rend_after_ack_timeout(self.rend_wait_avg, ceiling)
    }

    pub(in crate::session) fn client_maintain(&mut self, ctx: &mut impl SessionCtx, now: Instant) {
        let ack_wait = self.rend_after_ack_ms();
        let dsts: Vec<[u8; 16]> = self.clients.keys().copied().collect();
        for dst in dsts {
            let Some(c) = self.clients.get_mut(&dst) else {
                continue;
            };
            if c.lookup
                .is_some_and(|t| now.saturating_since(t) >= LOOKUP_TIMEOUT_MS)
            {
                self.client_fail(ctx, now, dst, "descriptor lookup timed out");
                continue;
            }
            if c.open.is_none() && now.saturating_since(c.started) >= SESSION_SETUP_TIMEOUT_MS {
                self.client_fail(ctx, now, dst, "session setup timed out");
                continue;
            }
            if c.refresh_at.is_some_and(|t| now >= t) {
                c.refresh_at = None;
                if c.open.is_none() {
                    self.client_refresh_descriptor(now, dst);
                }
            }
            let Some(c) = self.clients.get_mut(&dst) else {
                continue;
            };
            if c.retry_at.is_some_and(|t| now >= t) {
                c.retry_at = None;
                if c.open.is_none() {
                    self.client_find_descriptor(ctx, now, dst);
                }
                continue;
            }
            let step_timeout = intro_step_timeout(self.intro_step_avg);
            let stuck = c.intro.as_ref().is_some_and(|i| {
                let age = now.saturating_since(i.started);
                let step = now.saturating_since(i.step_started);
                let since = |t: Option<Instant>| t.map(|t| now.saturating_since(t));
                age >= REND_TIMEOUT_MS
                    || (step >= step_timeout && !(i.rend_ready && i.intro_ready) && !i.fetching)
                    || (!i.acked && since(i.sent_at) >= Some(step_timeout))
                    || since(i.acked_at) >= Some(ack_wait)
            });
            // A rendezvous circuit that did not come up in time most likely runs through a
            // relay that just died, our guard as likely as any: the next attempt's circuits
            // take the other guard meanwhile (as after a silent session circuit), or a guard
            // that died during an introduction takes every retry with it until its link says.
            let late_rend = c
                .intro
                .as_ref()
                .filter(|i| stuck && !i.rend_ready && !i.fetching)
                .and_then(|i| i.rend);
            if let Some(g) = late_rend
                .and_then(|r| ctx.path(r))
                .and_then(|p| p.first().map(|g| *g.identity()))
            {
                self.silent_guards.extend(g, now + SILENT_GUARD_MS);
            }
            let Some(c) = self.clients.get_mut(&dst) else {
                continue;
            };
            let expired = c.lingering.as_ref().is_some_and(|l| {
                l.acked_at
                    .is_none_or(|t| now.saturating_since(t) >= REND_LINGER_MS)
            });
            if expired {
                if let Some(id) = c.lingering.take().and_then(|l| l.rend) {
                    self.owners.remove(&id);
                    ctx.destroy(now, id);
                }
            }
            let Some(c) = self.clients.get_mut(&dst) else {
                continue;
            };
            if stuck {
                self.client_retry_intro(ctx, now, dst, "introduction timed out");
                continue;
            }
            let Some(o) = c.open.as_mut() else { continue };
            // Circuits that stopped answering get an e2e PING; no PONG: dead (10.8).
            let mut probes = Vec::new();
            let mut dead = Vec::new();
            let busy = o
                .flows
                .values()
                .any(|(_, t)| now.saturating_since(*t) < RESUME_ACTIVE_MS);
            for sc in o.circuits.iter_mut() {
                let spare = !o.flows.values().any(|(f, _)| *f == sc.id);
                if busy
                    && spare
                    && !sc.silence.silent()
                    && now.saturating_since(sc.heard_at) >= SPARE_WARM_MS
                {
                    // Its PING starts a silence like any frame sent: no answer, dead (10.8).
                    sc.silence.sent(now);
                    let id = self.next_ping;
                    self.next_ping += 1;
                    probes.push((sc.id, id));
                    continue;
                }
                match sc.silence.check(now) {
                    Verdict::Dead => dead.push(sc.id),
                    Verdict::Probe => {
                        let id = self.next_ping;
                        self.next_ping += 1;
                        probes.push((sc.id, id));
                    }
                    Verdict::Fine => {}
                }
            }
            let expired_joins: Vec<CircId> = o
                .joins
                .iter()
                .filter(|j| now.saturating_since(j.started) >= JOIN_TIMEOUT_MS)
                .map(|j| j.circ)
                .collect();
            o.joins.retain(|j| !expired_joins.contains(&j.circ));
            o.flows
                .retain(|_, (_, t)| now.saturating_since(*t) < FLOW_IDLE_MS);
            let old = now.saturating_since(o.established) >= SESSION_MAX_AGE_MS;
            // Relays on a circuit that answered just now are alive, whatever else died.
            let answering: Vec<CircId> = o
                .circuits
                .iter()
                .filter(|c| {
                    !dead.contains(&c.id) && now.saturating_since(c.heard_at) < HEARD_ALIVE_MS
                })
                .map(|c| c.id)
                .collect();
            let alive: Vec<[u8; 32]> = answering
                .into_iter()
                .filter_map(|id| ctx.path(id))
                .flat_map(|p| p.iter().map(|r| *r.identity()).collect::<Vec<_>>())
                .collect();
            for (circ, id) in probes {
                self.client_send_msg(ctx, now, dst, circ, &E2eMessage::Ping(id));
            }
            for id in expired_joins {
                self.owners.remove(&id);
                ctx.destroy(now, id);
            }
            for id in dead {
                self.stats.probe_failures += 1;
                if let Some(t) = self.hooks.trace_pings.as_mut() {
                    t.circuit(dst, id, now, "its circuit silent: dead");
                }
                tracing::debug!(
                    at = now.as_unix_ms(),
                    "session circuit silent: abandoned, flows move"
                );
                self.abandon_dead_circuit(ctx, now, id, &alive);
                self.client_lost_circuit(ctx, now, dst, id);
                self.client_probe_suspect_spares(ctx, now, dst);
            }
            if old {
                self.client_close(ctx, now, dst);
                continue;
            }
            self.client_keep_spare(ctx, now, dst);
        }
    }

    /// Ends a client session (its circuits close; the next packet makes a new one).
    fn client_close(&mut self, ctx: &mut impl SessionCtx, now: Instant, dst: [u8; 16]) {
        let Some(c) = self.clients.remove(&dst) else {
            return;
        };
        if let Some(t) = self.hooks.trace_pings.as_mut() {
            t.dst(dst, now, "client session closed");
        }
        tracing::debug!(at = now.as_unix_ms(), "client session closed");
        let mut ids: Vec<CircId> = Vec::new();
        if let Some(o) = c.open {
            ids.extend(o.circuits.iter().map(|c| c.id));
            ids.extend(o.joins.iter().map(|j| j.circ));
        }
        if let Some(i) = c.intro {
            ids.extend([i.rend, i.intro].into_iter().flatten());
        }
        ids.extend(c.spare_rend.map(|(id, _, _)| id));
        ids.extend(c.lingering.and_then(|l| l.rend));
        for id in ids {
            self.owners.remove(&id);
            ctx.destroy(now, id);
        }
    }
}

/// The introduction step timeout: [`INTRO_STEP_BUILDS`] times the measured time our
/// introductions' circuits take, within [`INTRO_STEP_MIN_MS`] and [`INTRO_STEP_TIMEOUT_MS`].
pub(in crate::session) fn intro_step_timeout(
    avg: Option<crate::time::Millis>,
) -> crate::time::Millis {
    avg.map_or(INTRO_STEP_TIMEOUT_MS, |m| {
        m.saturating_mul(INTRO_STEP_BUILDS)
            .clamp(INTRO_STEP_MIN_MS, INTRO_STEP_TIMEOUT_MS)
    })
}

/// How long an acknowledged introduction waits for RENDEZVOUS2 before the next intro point is
/// tried beside it: [`INTRO_STEP_BUILDS`] times the measured wait, within
/// [`REND_AFTER_ACK_MIN_MS`] and `ceiling` (the base wait plus a relay-record lookup, which a
/// service that does not know our rendezvous point makes first); `ceiling` until measured.
pub(in crate::session) fn rend_after_ack_timeout(
    avg: Option<crate::time::Millis>,
    ceiling: crate::time::Millis,
) -> crate::time::Millis {
    avg.map_or(ceiling, |m| {
        m.saturating_mul(INTRO_STEP_BUILDS)
            .clamp(REND_AFTER_ACK_MIN_MS.min(ceiling), ceiling)
    })
}
