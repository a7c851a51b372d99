//! A service's introductions under load (docs/protocol.md 10.12): INTRODUCE2 is checked cheaply
//! (auth key, proof of work, replay of the proof) and queued by effort; the queue is served at
//! the rate the service takes introductions (`SERVICE_INTRO_RATE`, `MAX_PENDING_INTRODUCTIONS`),
//! highest effort first; the effort the descriptor suggests rises while introductions that paid
//! it are lost and decays once the queue is quiet.
//!
//! [`IntroQueue`] is the pure state (one per service); the `SessionLayer` methods at the bottom
//! are the hooks `service.rs` calls. An idle service at effort 0 queues and serves each
//! INTRODUCE2 in the same call, so nothing changes for it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::RngCore;

use crate::budget::{Charge, MemoryBudget};
use crate::circuit::layer::CircId;
use crate::dht::desc_pow::PowParams;
use crate::session::ctx::SessionCtx;
use crate::session::intro_pow::{seed_id, POW_SEED_LEN};
use crate::session::layer::SessionLayer;
use crate::session::limits::MAX_PENDING_INTRODUCTIONS;
use crate::session::Introduce1;
use crate::time::{Instant, Millis};

/// Introductions a service holds waiting (each about 600 bytes, charged to the budget).
pub const INTRO_QUEUE_MAX: usize = 256;
/// A queued introduction older than this is dropped: its client has tried elsewhere (it waits
/// `REND_LINGER_MS` = 15 s at most for an acknowledged attempt).
pub const INTRO_QUEUE_MAX_AGE_MS: Millis = 10_000;
/// Proofs a service remembers (the most work kept longest).
pub const POW_REPLAY_MAX: usize = 16_384;
/// The effort controller looks at the queue this often.
pub const EFFORT_UPDATE_MS: Millis = 10_000;
/// A descriptor with a new suggested effort goes out at most this often.
pub const EFFORT_REPUBLISH_MIN_MS: Millis = 60_000;
/// The puzzle seed rotates this often (as long as a descriptor lives, so a cached descriptor's
/// seed is always the current or the previous one).
pub const POW_SEED_ROTATE_MS: Millis = crate::dht::descriptor::DESC_LIFETIME_S * 1000;
/// The first effort a loaded service suggests (about 50 µs of hashing); a decaying effort
/// below it becomes 0.
pub const POW_MIN_EFFORT: u32 = 1000;
/// The highest effort a service suggests (about 4 s of hashing on one core).
pub const POW_MAX_SUGGESTED: u32 = 1 << 26;

const QUEUED_COST: usize = 640;
const PROOF_COST: usize = 64;

/// What became of an INTRODUCE2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Waiting, at this effort.
    Queued(u32),
    /// The proof does not show its effort for a seed of ours: dropped.
    Invalid,
    /// The proof was used before: dropped.
    Replay,
    /// The queue is full of more work: dropped.
    Full,
    /// The memory budget refused: dropped.
    NoMemory,
}

/// Counters of the queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Introductions queued.
    pub queued: u64,
    /// ... of them with a valid proof of work.
    pub with_pow: u64,
    /// Handed on to be answered.
    pub served: u64,
    /// Dropped for more work (overflow) or on arrival below the queue's least.
    pub shed: u64,
    /// Dropped after waiting too long.
    pub expired: u64,
    /// Proofs that did not verify.
    pub invalid: u64,
    /// Proofs seen before.
    pub replays: u64,
    /// Proofs for a seed we no longer know (queued at effort 0).
    pub stale: u64,
}

/// A queued introduction.
pub struct Queued {
    /// The intro circuit it came on.
    pub circ: CircId,
    /// The body.
    pub intro: Introduce1,
    /// When it came.
    pub at: Instant,
}

/// One service's introduction queue, puzzle and effort controller.
pub struct IntroQueue {
    seed: [u8; POW_SEED_LEN],
    previous: Option<[u8; POW_SEED_LEN]>,
    rotate_at: Instant,
    effort: u32,
    published: u32,
    publish_wanted: bool,
    last_publish: Option<Instant>,
    queue: BTreeMap<(u32, u64), Queued>,
    seq: u64,
    proofs: HashMap<[u8; 16], (u32, u64)>,
    proof_order: BTreeSet<(u32, u64, [u8; 16])>,
    window_start: Instant,
    /// Introductions at or above the suggested effort lost in this window (shed or expired),
    /// and the most work among them.
    lost_paid: u64,
    lost_max: u32,
    peak: usize,
    charge: Option<Charge>,
    /// Counters.
    pub stats: QueueStats,
}

impl IntroQueue {
    /// An empty queue at effort 0 with a fresh seed from `rng` (the OS generator in the daemon).
    pub fn new(rng: &mut impl RngCore, now: Instant) -> IntroQueue {
        let mut seed = [0u8; POW_SEED_LEN];
        rng.fill_bytes(&mut seed);
        IntroQueue {
            seed,
            previous: None,
            rotate_at: now + POW_SEED_ROTATE_MS,
            effort: 0,
            published: 0,
            publish_wanted: false,
            last_publish: None,
            queue: BTreeMap::new(),
            seq: 0,
            proofs: HashMap::new(),
            proof_order: BTreeSet::new(),
            window_start: now,
            lost_paid: 0,
            lost_max: 0,
            peak: 0,
            charge: None,
            stats: QueueStats::default(),
        }
    }

    /// What the next descriptor carries.
    pub fn params(&self) -> PowParams {
        PowParams {
            seed: self.seed,
            effort: self.effort,
        }
    }

    /// The suggested effort.
    pub fn effort(&self) -> u32 {
        self.effort
    }

    /// Introductions waiting.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// A descriptor with [`IntroQueue::params`] was built.
    pub fn published(&mut self, now: Instant) {
        self.published = self.effort;
        self.publish_wanted = false;
        self.last_publish = Some(now);
    }

    fn grow(&mut self, budget: &MemoryBudget, bytes: usize) -> bool {
        self.charge
            .get_or_insert_with(|| budget.empty_charge())
            .try_grow(bytes)
    }

    fn shrink(&mut self, bytes: usize) {
        if let Some(c) = self.charge.as_mut() {
            c.shrink(bytes);
        }
    }

    /// Checks and queues an INTRODUCE2 whose auth key is the intro circuit's. One hash at most;
    /// no public-key work.
    pub fn admit(
        &mut self,
        now: Instant,
        budget: &MemoryBudget,
        circ: CircId,
        intro: Introduce1,
    ) -> Admit {
        let effort = match intro.pow {
            None => 0,
            Some(p) => {
                let seed = [Some(self.seed), self.previous]
                    .into_iter()
                    .flatten()
                    .find(|s| seed_id(s) == p.seed_id);
                match seed {
                    None => {
                        // A descriptor older than two rotations: served as if it had no proof.
                        self.stats.stale += 1;
                        0
                    }
                    Some(seed) => {
                        let e_c = intro.client_ephemeral();
                        let h = p.hash(&seed, &intro.auth_key, &e_c);
                        if !p.verify(&seed, &intro.auth_key, &e_c) {
                            self.stats.invalid += 1;
                            return Admit::Invalid;
                        }
                        let mut key = [0u8; 16];
                        key.copy_from_slice(&h[..16]);
                        if self.proofs.contains_key(&key) {
                            self.stats.replays += 1;
                            return Admit::Replay;
                        }
                        if !self.remember_proof(budget, key, p.effort) {
                            return Admit::NoMemory;
                        }
                        self.stats.with_pow += 1;
                        p.effort
                    }
                }
            }
        };
        if self.queue.len() >= INTRO_QUEUE_MAX {
            // The least work goes: the oldest of the lowest effort, or the newcomer if it
            // brings less than anything waiting.
            let least = self.queue.keys().next().copied();
            match least {
                Some(k) if k.0 <= effort => {
                    self.queue.remove(&k);
                    self.shrink(QUEUED_COST);
                    self.stats.shed += 1;
                    self.lost(k.0);
                }
                _ => {
                    self.stats.shed += 1;
                    self.lost(effort);
                    return Admit::Full;
                }
            }
        }
        if !self.grow(budget, QUEUED_COST) {
            return Admit::NoMemory;
        }
        self.seq += 1;
        self.queue.insert(
            (effort, self.seq),
            Queued {
                circ,
                intro,
                at: now,
            },
        );
        self.peak = self.peak.max(self.queue.len());
        self.stats.queued += 1;
        Admit::Queued(effort)
    }

    /// Remembers a proof; when full, the least work (oldest first) is forgotten: a replay of it
    /// is worth that little, and the service's `E_c` cache still catches it after decryption.
    fn remember_proof(&mut self, budget: &MemoryBudget, key: [u8; 16], effort: u32) -> bool {
        if self.proofs.len() >= POW_REPLAY_MAX {
            if let Some(old) = self.proof_order.pop_first() {
                self.proofs.remove(&old.2);
            }
        } else if !self.grow(budget, PROOF_COST) {
            return false;
        }
        self.seq += 1;
        self.proofs.insert(key, (effort, self.seq));
        self.proof_order.insert((effort, self.seq, key));
        true
    }

    /// An introduction was dropped unserved: it counts against the suggested effort only if it
    /// paid it (a flood below the suggestion is already shed).
    fn lost(&mut self, effort: u32) {
        if effort >= self.effort {
            self.lost_paid += 1;
            self.lost_max = self.lost_max.max(effort);
        }
    }

    /// The next introduction to answer: the most work, the newest among equals (its client is
    /// the likeliest still waiting). Expired ones are dropped on the way.
    pub fn pop(&mut self, now: Instant) -> Option<Queued> {
        while let Some((k, q)) = self.queue.pop_last() {
            self.shrink(QUEUED_COST);
            if now.saturating_since(q.at) > INTRO_QUEUE_MAX_AGE_MS {
                self.stats.expired += 1;
                self.lost(k.0);
                continue;
            }
            self.stats.served += 1;
            return Some(q);
        }
        None
    }

    /// Timers: drops expired introductions, rotates the seed, runs the effort controller.
    /// `true` when a descriptor with new parameters should go out now.
    pub fn tick(&mut self, rng: &mut impl RngCore, now: Instant) -> bool {
        let old: Vec<(u32, u64)> = self
            .queue
            .iter()
            .filter(|(_, q)| now.saturating_since(q.at) > INTRO_QUEUE_MAX_AGE_MS)
            .map(|(k, _)| *k)
            .collect();
        for k in old {
            self.queue.remove(&k);
            self.shrink(QUEUED_COST);
            self.stats.expired += 1;
            self.lost(k.0);
        }
        if now >= self.rotate_at {
            self.previous = Some(self.seed);
            rng.fill_bytes(&mut self.seed);
            self.rotate_at = now + POW_SEED_ROTATE_MS;
            self.publish_wanted = true;
        }
        if now.saturating_since(self.window_start) >= EFFORT_UPDATE_MS {
            self.update_effort();
            self.window_start = now;
        }
        self.publish_wanted
            && self
                .last_publish
                .is_none_or(|t| now.saturating_since(t) >= EFFORT_REPUBLISH_MIN_MS)
    }

    /// Once per window: up when introductions that paid the suggested effort were lost (to at
    /// least twice the effort and above the most work lost), down by a third when the queue
    /// stayed short, else unchanged (a flood below the suggestion is shed at no cost to honest
    /// clients, so it does not push the effort up).
    fn update_effort(&mut self) {
        let before = self.effort;
        if self.lost_paid > 0 {
            self.effort = self
                .effort
                .saturating_mul(2)
                .max(self.lost_max.saturating_add(1))
                .clamp(POW_MIN_EFFORT, POW_MAX_SUGGESTED);
        } else if self.peak <= INTRO_QUEUE_MAX / 16 {
            let lower = self.effort / 3 * 2;
            self.effort = if lower < POW_MIN_EFFORT { 0 } else { lower };
        }
        if self.effort != before {
            tracing::info!(
                effort = self.effort,
                was = before,
                queued = self.queue.len(),
                "introduction effort changed"
            );
        }
        let (p, e) = (u64::from(self.published), u64::from(self.effort));
        if p != e && ((p == 0) != (e == 0) || e >= 2 * p || 2 * e <= p) {
            self.publish_wanted = true;
        }
        self.lost_paid = 0;
        self.lost_max = 0;
        self.peak = self.queue.len();
    }
}

impl SessionLayer {
    /// INTRODUCE2 on the intro circuit `id` of our service `svc`: checked and queued, then the
    /// queue is served.
    pub(in crate::session) fn service_on_introduce2(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        svc: [u8; 16],
        id: CircId,
        payload: &[u8],
    ) {
        let Ok(intro) = Introduce1::parse(payload) else {
            self.stats.intro_rejected += 1;
            return;
        };
        let stats = &mut self.stats;
        let Some(s) = self.services.iter_mut().find(|s| s.address == svc) else {
            return;
        };
        let key_ok = s
            .intros
            .iter()
            .any(|i| i.circ == id && i.auth_pub == intro.auth_key);
        if !key_ok {
            stats.intro_rejected += 1;
            return;
        }
        match s.pow.admit(now, ctx.budget(), id, intro) {
            Admit::Queued(_) => {}
            Admit::Invalid | Admit::Replay => stats.intro_replays += 1,
            Admit::Full | Admit::NoMemory => stats.intro_limited += 1,
        }
        self.service_serve_intros(ctx, now, svc);
    }

    /// Answers queued introductions while the service's rate and pending limits allow.
    pub(in crate::session) fn service_serve_intros(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        svc: [u8; 16],
    ) {
        loop {
            let Some(s) = self.service_mut(&svc) else {
                return;
            };
            if s.pow.is_empty() || s.pending >= MAX_PENDING_INTRODUCTIONS || !s.rate.take(now) {
                return;
            }
            let Some(q) = s.pow.pop(now) else { return };
            self.service_accept_intro(ctx, now, svc, q.circ, q.intro);
        }
    }

    /// The effort our service `svc` suggests now (10.12).
    pub fn service_pow_effort(&self, svc: [u8; 16]) -> Option<u32> {
        self.services
            .iter()
            .find(|s| s.address == svc)
            .map(|s| s.pow.effort())
    }

    /// Timers of the queue; republishes when the suggested effort or the seed changed.
    pub(in crate::session) fn service_pow_tick(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        svc: [u8; 16],
    ) {
        let secrets = &mut self.secrets;
        let Some(s) = self.services.iter_mut().find(|s| s.address == svc) else {
            return;
        };
        if s.pow.tick(secrets, now) {
            self.service_publish(now, svc, true);
        }
        self.service_serve_intros(ctx, now, svc);
    }
}

#[cfg(test)]
mod tests;
