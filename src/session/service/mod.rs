//! The hidden services this node hosts: intro points (chosen, established over 4-hop service
//! circuits, rebuilt, rotated), descriptors (built, spread over epochs, published through the
//! DHT by the node), INTRODUCE2, circuits to clients' rendezvous points, and the sessions with
//! clients (10.6 - 10.8, 12.6).

mod sessions;

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv6Addr;

use ed25519_dalek::SigningKey;
use rand::RngCore;

use crate::budget::Charge;
use crate::circuit::layer::{CircId, Purpose};
use crate::circuit::path::{PathKind, Target};
use crate::crypto::keys::fingerprint;
use crate::dht::descriptor::Descriptor;
use crate::session::circuits::single_guard;
use crate::session::ctx::SessionCtx;
use crate::session::flows::FlowKey;
use crate::session::frame::E2E_FRAME_LEN;
use crate::session::intro::RendHs;
use crate::session::intro_queue::IntroQueue;
use crate::session::intro_watch::IntroWatch;
use crate::session::layer::{addr16, seal, Owner, ServiceInfo, SessionLayer};
use crate::session::limits::*;
use crate::session::roles::{RateLimit, ReplayCache};
use crate::session::silence::{Silence, Verdict};
use crate::session::trace::note;
use crate::session::{
    E2eMessage, Introduce1, RendCookie, RendPlaintext, Rendezvous1, ServiceIdentity,
    SessionChannel, SessionKeys,
};
use crate::time::Instant;
use crate::wire::record::{RelayRecord, FLAG_RENDEZVOUS};
use crate::wire::relay::RelayCommand as C;

pub(in crate::session) struct IntroPoint {
    pub(in crate::session) circ: CircId,
    pub(in crate::session) auth: SigningKey,
    pub(in crate::session) auth_pub: [u8; 32],
    pub(in crate::session) relay: Option<RelayRecord>,
    pub(in crate::session) established: Option<Instant>,
    /// `E_c` seen through this auth key (10.6).
    pub(in crate::session) replay: ReplayCache,
    pub(in crate::session) introductions: u64,
    pub(in crate::session) retire_at: Instant,
    /// When its current circuit was started.
    pub(in crate::session) created: Instant,
    /// Established once: descriptors list it, also while its circuit is being rebuilt.
    pub(in crate::session) listed: bool,
    /// Circuits rebuilt to it since it was last established.
    pub(in crate::session) rebuilds: u8,
    /// Whether the intro point still answers on the circuit (10.6.1).
    pub(in crate::session) watch: IntroWatch,
}

pub(in crate::session) struct ServiceSession {
    pub(in crate::session) chan: SessionChannel,
    pub(in crate::session) keys: SessionKeys,
    pub(in crate::session) circuits: Vec<CircId>,
    /// The silence of each of `circuits` (10.8): the client owns the circuits, but only the
    /// service sees its own half die when it is the one sending (a download).
    pub(in crate::session) silence: Vec<(CircId, Silence)>,
    pub(in crate::session) pending: usize,
    pub(in crate::session) flows: BTreeMap<FlowKey, (CircId, Instant)>,
    pub(in crate::session) established: Instant,
    /// The rendezvous cookie of the introduction that made it: a RENDEZVOUS1 of an earlier
    /// introduction of the same client (an attempt it gave up on, answered late) must not
    /// join this session (its keys are another handshake's).
    pub(in crate::session) intro_cookie: RendCookie,
    pub(in crate::session) _charge: Charge,
}

pub(in crate::session) struct Service {
    pub(in crate::session) signing: SigningKey,
    pub(in crate::session) ident: ServiceIdentity,
    pub(in crate::session) address: [u8; 16],
    pub(in crate::session) intros: Vec<IntroPoint>,
    /// The last descriptor built per epoch.
    pub(in crate::session) descs: Vec<(u64, Descriptor)>,
    pub(in crate::session) built_at: Option<Instant>,
    pub(in crate::session) published_keys: Vec<[u8; 32]>,
    /// Per epoch: the last revision published in this run (no rollback per (index, signer),
    /// and the signer differs per epoch).
    pub(in crate::session) revisions: BTreeMap<u64, u64>,
    /// Epochs whose descriptor is due, and when.
    pub(in crate::session) queued: Vec<(u64, Instant)>,
    /// When the periodic republication is due.
    pub(in crate::session) republish_at: Option<Instant>,
    /// Last hops that carried a publication: epoch, relay, when.
    pub(in crate::session) via: VecDeque<(u64, [u8; 32], Instant)>,
    pub(in crate::session) sessions: BTreeMap<[u8; 16], ServiceSession>,
    pub(in crate::session) rate: RateLimit,
    pub(in crate::session) pending: usize,
    pub(in crate::session) next_intro_try: Instant,
    /// Introductions by effort, the puzzle and its effort (10.12, `intro_queue.rs`).
    pub(in crate::session) pow: IntroQueue,
    /// A publication failed: publish again then.
    pub(in crate::session) publish_retry_at: Option<Instant>,
    /// The latest reason an intro point could not be had (`services` shows it while some
    /// are missing).
    pub(in crate::session) intro_why: Option<String>,
    /// With other services hosted: the first descriptor waits until then (drawn when it would
    /// first go out, [`FIRST_PUBLISH_SPREAD_MS`]).
    pub(in crate::session) first_publish_at: Option<Instant>,
}

impl SessionLayer {
    /// Hosts a hidden service with the Ed25519 seed `seed` (its address is the address of the
    /// public key): intro points are chosen and established over 4-hop service circuits, and
    /// descriptors for the current (and, near the boundary, the next) epoch are published and
    /// refreshed.
    /// `false` if it is hosted already.
    pub fn add_service(&mut self, now: Instant, seed: [u8; 32]) -> bool {
        let signing = SigningKey::from_bytes(&seed);
        let ident = ServiceIdentity::from_seed(&seed);
        let address = addr16(ident.address());
        if self.services.iter().any(|s| s.address == address) {
            return false;
        }
        self.services.push(Service {
            signing,
            ident,
            address,
            intros: Vec::new(),
            descs: Vec::new(),
            built_at: None,
            published_keys: Vec::new(),
            revisions: BTreeMap::new(),
            queued: Vec::new(),
            republish_at: None,
            via: VecDeque::new(),
            sessions: BTreeMap::new(),
            rate: RateLimit::new(SERVICE_INTRO_RATE.0, SERVICE_INTRO_RATE.1, now),
            pending: 0,
            next_intro_try: now,
            pow: IntroQueue::new(&mut self.secrets, now),
            publish_retry_at: None,
            intro_why: None,
            first_publish_at: None,
        });
        true
    }

    /// The services this node hosts.
    pub fn services_info(&self) -> Vec<ServiceInfo> {
        let now = self.now;
        self.services
            .iter()
            .map(|s| ServiceInfo {
                address: Ipv6Addr::from(s.address),
                intro_points: s
                    .intros
                    .iter()
                    .filter(|i| i.established.is_some())
                    .filter_map(|i| i.relay.as_ref().map(|r| fingerprint(r.identity())))
                    .collect(),
                descriptor_age_s: s.built_at.map(|t| now.saturating_since(t) / 1000),
                sessions: s.sessions.len(),
                intro_missing: {
                    let up = s.intros.iter().filter(|i| i.established.is_some()).count();
                    (up < NUM_INTRO_POINTS).then(|| {
                        let why = s.intro_why.as_deref().unwrap_or("being established");
                        format!("{up} of {NUM_INTRO_POINTS} intro points: {why}")
                    })
                },
                pow_effort: s.pow.effort(),
                intros_with_pow: s.pow.stats.with_pow,
            })
            .collect()
    }

    /// The descriptors our services last built (current and next epoch), as published.
    pub fn service_descriptors(&self) -> Vec<Vec<u8>> {
        self.services
            .iter()
            .flat_map(|s| s.descs.iter().map(|(_, d)| d.bytes().to_vec()))
            .collect()
    }

    /// Circuits of our service `svc`'s session with the client `peer`.
    pub fn service_session_circuits(&self, svc: [u8; 16], peer: [u8; 16]) -> Vec<CircId> {
        self.services
            .iter()
            .find(|s| s.address == svc)
            .and_then(|s| s.sessions.get(&peer))
            .map(|ss| ss.circuits.clone())
            .unwrap_or_default()
    }

    /// The client addresses (pseudonyms) our service `svc` has sessions with.
    pub fn service_peers(&self, svc: [u8; 16]) -> Vec<[u8; 16]> {
        self.services
            .iter()
            .find(|s| s.address == svc)
            .map(|s| s.sessions.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Whether this node holds (as a service) the secret of the key with this public half.
    pub fn holds_service_key(&self, public: &[u8; 32]) -> bool {
        self.services.iter().any(|s| s.ident.public() == public)
    }

    pub(in crate::session) fn service_maintain(&mut self, ctx: &mut impl SessionCtx, now: Instant) {
        // A record lookup that never answered: the client gave up at its rendezvous timeout.
        self.rend_waiting
            .retain(|w| now.saturating_since(w.since) < REND_TIMEOUT_MS);
        for k in 0..self.services.len() {
            let Some(s) = self.services.get_mut(k) else {
                continue;
            };
            let svc = s.address;
            // Rotation: retire worn-out intro points (their circuits stay until the
            // descriptors listing them expire; here they simply close with the replacement).
            let retire: Vec<CircId> = s
                .intros
                .iter()
                .filter(|i| {
                    now >= i.retire_at
                        || i.introductions >= INTRO_MAX_INTRODUCTIONS
                        || (i.established.is_none()
                            && now.saturating_since(i.created) >= i.watch.establish_timeout())
                })
                .map(|i| i.circ)
                .collect();
            let timed_out = s
                .intros
                .iter()
                .filter(|i| {
                    i.established.is_none()
                        && now.saturating_since(i.created) >= i.watch.establish_timeout()
                })
                .count();
            if timed_out > 0 {
                s.intro_why = Some(format!(
                    "establishment timed out ({} s without an answer from the intro point)",
                    INTRO_ESTABLISH_TIMEOUT_MS / 1000
                ));
            }
            let need = NUM_INTRO_POINTS.saturating_sub(s.intros.len() - retire.len());
            let due = now >= s.next_intro_try;
            for id in retire {
                self.owners.remove(&id);
                ctx.destroy(now, id);
                if let Some(s) = self.service_mut(&svc) {
                    s.intros.retain(|i| i.circ != id);
                }
            }
            let mut closing = Vec::new();
            if let Some(s) = self.service_mut(&svc) {
                let old: Vec<[u8; 16]> = s
                    .sessions
                    .iter()
                    .filter(|(_, ss)| now.saturating_since(ss.established) >= SESSION_MAX_AGE_MS)
                    .map(|(p, _)| *p)
                    .collect();
                for p in old {
                    if let Some(ss) = s.sessions.remove(&p) {
                        closing.extend(ss.circuits);
                    }
                }
            }
            for c in closing {
                self.owners.remove(&c);
                ctx.destroy(now, c);
            }
            if need > 0 && due {
                // All missing ones at once: a service that lost its guard lost every intro
                // point, and clients find it again only once a new descriptor lists new ones.
                for _ in 0..need {
                    self.service_add_intro(ctx, now, svc);
                }
            }
            self.service_publish(now, svc, false);
            self.service_pow_tick(ctx, now, svc);
            self.service_watch_circuits(ctx, now, svc);
            self.service_watch_intros(ctx, now, svc);
        }
    }

    /// Probes the session circuits of `svc` that went silent while it sent on them and
    /// abandons those that stay silent (10.8): their flows answer on another circuit of the
    /// session at once, and the client, seeing a flow's packets arrive elsewhere, follows.
    fn service_watch_circuits(&mut self, ctx: &mut impl SessionCtx, now: Instant, svc: [u8; 16]) {
        let mut next_ping = self.next_ping;
        let mut dead = Vec::new();
        let Some(s) = self.service_mut(&svc) else {
            return;
        };
        for (peer, ss) in s.sessions.iter_mut() {
            for k in 0..ss.silence.len() {
                let Some((circ, silence)) = ss.silence.get_mut(k) else {
                    continue;
                };
                let circ = *circ;
                match silence.check(now) {
                    Verdict::Fine => {}
                    Verdict::Dead => dead.push((*peer, circ)),
                    Verdict::Probe => {
                        let mut out = [0u8; E2E_FRAME_LEN];
                        let ping = E2eMessage::Ping(next_ping);
                        next_ping += 1;
                        if let Some(n) = seal(&mut ss.chan, &ping, &mut out) {
                            let _ = ctx.send(circ, C::Data, out.get(..n).unwrap_or(&[]));
                        }
                    }
                }
            }
        }
        self.next_ping = next_ping;
        for (peer, circ) in dead {
            self.stats.probe_failures += 1;
            let what = || format!("service circuit {} silent: dead", circ.0);
            note(&mut self.hooks.trace_pings, peer, now, what);
            tracing::debug!(
                at = now.as_unix_ms(),
                "service session circuit silent: abandoned"
            );
            self.abandon_dead_circuit(ctx, now, circ, &[]);
            let stats = &mut self.stats;
            let Some(s) = self.services.iter_mut().find(|s| s.address == svc) else {
                continue;
            };
            let Some(ss) = s.sessions.get_mut(&peer) else {
                continue;
            };
            ss.circuits.retain(|c| *c != circ);
            ss.silence.retain(|(c, _)| *c != circ);
            let before = ss.flows.len();
            ss.flows.retain(|_, (c, _)| *c != circ);
            stats.flows_moved += (before - ss.flows.len()) as u64;
            // The client joins new circuits; with none left it introduces itself again.
            if ss.circuits.is_empty() && ss.pending == 0 {
                s.sessions.remove(&peer);
            }
        }
    }

    fn service_add_intro(&mut self, ctx: &mut impl SessionCtx, now: Instant, svc: [u8; 16]) {
        let used: Vec<[u8; 32]> = self
            .service_mut(&svc)
            .map(|s| {
                s.intros
                    .iter()
                    .filter_map(|i| {
                        i.relay.as_ref().map(|r| *r.identity()).or_else(|| {
                            ctx.path(i.circ)
                                .and_then(|p| p.last())
                                .map(|r| *r.identity())
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        // Intro circuits spread over our guards: one guard's death then leaves intro points up
        // (a service whose every registration died with its guard was unreachable until new
        // ones were listed, issue #20 item 5).
        let avoid_guards: Vec<[u8; 32]> = self
            .service_mut(&svc)
            .map(|s| s.intros.iter().map(|i| i.circ).collect::<Vec<_>>())
            .and_then(|c| single_guard(ctx, c.into_iter()))
            .into_iter()
            .collect();
        // A relay not yet an intro point of this service, chosen under every path rule.
        let mut path = None;
        let mut why = None;
        for _ in 0..4 {
            let kind = PathKind::Service(Target::Any(FLAG_RENDEZVOUS));
            match self.path_avoiding(ctx, now, kind, &avoid_guards) {
                Ok(p) if p.last().is_some_and(|r| !used.contains(r.identity())) => {
                    self.intro_path_log.clear();
                    path = Some(p);
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    let e = e.to_string();
                    if let Some(held) = self.intro_path_log.hit(now, &e) {
                        tracing::debug!(repeats = held, "intro point path: {e}");
                    }
                    why = Some(e);
                    break;
                }
            }
        }
        let Some(s) = self.service_mut(&svc) else {
            return;
        };
        s.next_intro_try = now + INTRO_RETRY_MS;
        let Some(path) = path else {
            s.intro_why = Some(match why {
                Some(e) => format!("no eligible relay ({e})"),
                None => "no eligible relay (every candidate is an intro point already)".into(),
            });
            return;
        };
        let id = match ctx.build(now, Purpose::Intro, path) {
            Ok(id) => id,
            Err(e) => {
                if let Some(s) = self.service_mut(&svc) {
                    s.intro_why = Some(format!("intro circuit not started: {e}"));
                }
                return;
            }
        };
        self.owners.insert(id, Owner::Intro { svc });
        let mut seed = [0u8; 32];
        self.secrets.fill_bytes(&mut seed);
        let span = INTRO_POINT_LIFETIME_MAX_MS - INTRO_POINT_LIFETIME_MIN_MS;
        let retire_at = now + INTRO_POINT_LIFETIME_MIN_MS + self.rng.next_u64() % span;
        let auth = SigningKey::from_bytes(&seed);
        let auth_pub = auth.verifying_key().to_bytes();
        let replay = ReplayCache::new(
            crate::session::roles::INTRO_REPLAY_CACHE_MAX,
            ctx.budget().clone(),
        );
        if let Some(s) = self.service_mut(&svc) {
            s.intros.push(IntroPoint {
                circ: id,
                auth,
                auth_pub,
                relay: None,
                established: None,
                replay,
                introductions: 0,
                retire_at,
                created: now,
                listed: false,
                rebuilds: 0,
                watch: IntroWatch::new(now),
            });
        }
    }

    /// Answers an introduction the queue let through (10.6): message 1, replay, limits, then a
    /// circuit to the client's rendezvous point.
    pub(in crate::session) fn service_accept_intro(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        svc: [u8; 16],
        id: CircId,
        intro: Introduce1,
    ) {
        let total = self.session_count();
        let secrets = &mut self.secrets;
        let stats = &mut self.stats;
        let Some(s) = self.services.iter_mut().find(|s| s.address == svc) else {
            return;
        };
        let Some(ip) = s.intros.iter_mut().find(|i| i.circ == id) else {
            return;
        };
        if intro.auth_key != ip.auth_pub {
            stats.intro_rejected += 1;
            return;
        }
        let client = match s.ident.read_msg1(&ip.auth_pub, &intro.msg1) {
            Ok(c) => c,
            Err(_) => {
                stats.intro_rejected += 1;
                return;
            }
        };
        if ip.replay.contains(client.client_ephemeral()) {
            stats.intro_replays += 1;
            return;
        }
        if s.pending >= MAX_PENDING_INTRODUCTIONS || total >= MAX_SESSIONS {
            stats.intro_limited += 1;
            return;
        }
        if ip.replay.insert(*client.client_ephemeral()).is_err() {
            stats.intro_limited += 1;
            return;
        }
        ip.introductions += 1;
        let Ok(pt) = crate::session::intro::IntroPlaintext::parse(client.intro_plaintext()) else {
            stats.intro_rejected += 1;
            return;
        };
        let peer = addr16(client.address());
        let Ok((keys, msg2)) = client.accept(secrets, &RendPlaintext::default().emit()) else {
            stats.intro_rejected += 1;
            return;
        };
        let Some(charge) = ctx.budget().try_charge(SESSION_COST) else {
            stats.intro_limited += 1;
            return;
        };
        let r1 = Rendezvous1 {
            cookie: pt.cookie.clone(),
            hs: RendHs::Ik(msg2),
        };
        // A returning client replaces its old session (its circuits close with it).
        let old = s.sessions.insert(
            peer,
            ServiceSession {
                chan: SessionChannel::service(&keys),
                keys,
                circuits: Vec::new(),
                silence: Vec::new(),
                pending: 0,
                flows: BTreeMap::new(),
                established: now,
                intro_cookie: pt.cookie.clone(),
                _charge: charge,
            },
        );
        stats.service_sessions += 1;
        let what = || format!("introduction; replaced a session: {}", old.is_some());
        note(&mut self.hooks.trace_pings, peer, now, what);
        if let Some(old) = old {
            for c in old.circuits {
                self.owners.remove(&c);
                ctx.destroy(now, c);
            }
        }
        self.service_join_rendezvous(ctx, now, svc, peer, &pt.rendezvous_link_spec, r1);
    }
}
