//! Guards (9.3): the node's long-lived first hops. Persistence is the daemon's
//! (`daemon::guard_file`): state in ([`Guards::restore`]), state out ([`Guards::to_keep`]).

use rand::seq::SliceRandom;
use rand::Rng;
use std::fmt;

use super::rules::Node;
use super::{
    Families, PathContext, DAY_MS, GUARD_DOWN_REPLACE_DAYS, GUARD_LIFETIME_MAX_DAYS,
    GUARD_LIFETIME_MIN_DAYS, MAX_GUARDS, NUM_GUARDS,
};
use crate::crypto::keys::fingerprint;
use crate::link::view::VIEW_MIN_SOURCES;
use crate::time::Instant;
use crate::wire::record::RelayRecord;

/// One guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    /// The relay's identity.
    pub identity: [u8; 32],
    /// When it was chosen.
    pub chosen_at: Instant,
    /// When it is replaced.
    pub expires: Instant,
    /// The last time a link to it worked.
    pub last_seen_up: Option<Instant>,
    /// Since when it is unreachable (cleared by [`Guards::mark_up`]).
    pub down_since: Option<Instant>,
    /// Since when its record is absent from the view (or unusable).
    pub missing_since: Option<Instant>,
    /// Chosen from a view with fewer than `VIEW_MIN_SOURCES` sources: not saved, and replaced as
    /// soon as the view is diverse.
    pub temporary: bool,
}

/// Why a guard was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardDropReason {
    /// Its lifetime ended.
    Expired,
    /// Unreachable for more than `GUARD_DOWN_REPLACE_DAYS`.
    Down,
    /// Its record was absent from the view for more than `GUARD_DOWN_REPLACE_DAYS`.
    Missing,
    /// A temporary guard, dropped because the view is now diverse.
    Temporary,
    /// It is now in the node's own family (the node moved).
    OwnFamily,
}

/// What [`Guards::maintain`] changed, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardEvent {
    /// A guard was dropped.
    Dropped([u8; 32], GuardDropReason),
    /// A guard was chosen.
    Chosen {
        /// Its identity.
        identity: [u8; 32],
        /// Whether it is temporary.
        temporary: bool,
    },
}

impl fmt::Display for GuardEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuardEvent::Dropped(id, why) => {
                let why = match why {
                    GuardDropReason::Expired => "lifetime ended",
                    GuardDropReason::Down => "unreachable for more than 3 days",
                    GuardDropReason::Missing => "record absent from the view for more than 3 days",
                    GuardDropReason::Temporary => "temporary guard, the view is now diverse",
                    GuardDropReason::OwnFamily => "in this node's own family",
                };
                write!(f, "guard {} dropped: {why}", fingerprint(id))
            }
            GuardEvent::Chosen {
                identity,
                temporary: false,
            } => write!(f, "guard {} chosen", fingerprint(identity)),
            GuardEvent::Chosen {
                identity,
                temporary: true,
            } => write!(
                f,
                "temporary guard {} chosen (view: few sources; not saved)",
                fingerprint(identity)
            ),
        }
    }
}

/// The node's guards, in order of preference (9.3).
#[derive(Debug, Clone, Default)]
pub struct Guards {
    pub(super) list: Vec<Guard>,
    dirty: bool,
}

impl Guard {
    /// Down (its link failed) or missing from the view (a relay that left, or one our own link
    /// never reached): paths cannot start at it now, so a temporary stand-in may. A brand-new
    /// client whose chosen guards had left the network waited days for a replacement before.
    fn unavailable(&self) -> bool {
        self.down_since.is_some() || self.missing_since.is_some()
    }
}

impl Guards {
    /// No guards yet.
    pub fn new() -> Guards {
        Guards::default()
    }

    /// Guards restored from a saved list (the daemon's guard file): checked as a file from disk
    /// must be (no more than [`NUM_GUARDS`], no duplicates, lifetimes in range); the reason when
    /// not.
    pub fn restore(list: Vec<Guard>) -> Result<Guards, String> {
        if list.len() > NUM_GUARDS {
            return Err(format!("{} guards", list.len()));
        }
        for (i, g) in list.iter().enumerate() {
            if list.iter().take(i).any(|o| o.identity == g.identity) {
                return Err("duplicate guard".to_string());
            }
            if g.expires <= g.chosen_at
                || g.expires - g.chosen_at > GUARD_LIFETIME_MAX_DAYS * DAY_MS
            {
                return Err("lifetime out of range".to_string());
            }
        }
        Ok(Guards { list, dirty: false })
    }

    /// The guards to keep across restarts (temporary ones are not kept).
    pub fn to_keep(&self) -> Vec<Guard> {
        self.list.iter().filter(|g| !g.temporary).cloned().collect()
    }

    /// What [`Guards::to_keep`] returned is on disk now.
    pub fn mark_saved(&mut self) {
        self.dirty = false;
    }

    /// A save failed: it is still to be done.
    pub fn mark_unsaved(&mut self) {
        self.dirty = true;
    }

    /// The guards, in order of preference.
    pub fn list(&self) -> &[Guard] {
        &self.list
    }

    /// Number of guards held.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Whether any guard is temporary (for `status`).
    pub fn has_temporary(&self) -> bool {
        self.list.iter().any(|g| g.temporary)
    }

    /// Whether something [`Guards::to_keep`] returns changed since the last restore or save.
    pub fn needs_save(&self) -> bool {
        self.dirty
    }

    /// A link to the guard failed (or a circuit through it could not be created).
    pub fn mark_down(&mut self, identity: &[u8; 32], now: Instant) {
        if let Some(g) = self.list.iter_mut().find(|g| g.identity == *identity) {
            if g.down_since.is_none() {
                g.down_since = Some(now);
                self.dirty |= !g.temporary;
            }
        }
    }

    /// A link to the guard works.
    pub fn mark_up(&mut self, identity: &[u8; 32], now: Instant) {
        if let Some(g) = self.list.iter_mut().find(|g| g.identity == *identity) {
            g.down_since = None;
            g.last_seen_up = Some(now);
            self.dirty |= !g.temporary;
        }
    }

    /// Drops expired, long-unreachable, long-absent and (once the view is diverse) temporary
    /// guards, and fills the list up to [`NUM_GUARDS`] with random directly reachable relays
    /// (nat public or reachable) outside the families of the node and of the other guards.
    /// New guards are temporary while the view has fewer than `VIEW_MIN_SOURCES` sources.
    /// Call it when the view changes and periodically; save afterwards if
    /// [`Guards::needs_save`].
    pub fn maintain<R: Rng + ?Sized>(
        &mut self,
        ctx: &PathContext<'_>,
        rng: &mut R,
    ) -> Vec<GuardEvent> {
        let now = ctx.now;
        let diverse = ctx.view.sources() >= VIEW_MIN_SOURCES;
        let own = ctx.own();
        let replace_ms = GUARD_DOWN_REPLACE_DAYS * DAY_MS;
        let mut events = Vec::new();
        let mut kept = Vec::with_capacity(NUM_GUARDS);
        let snapshot: Vec<([u8; 32], bool)> = self
            .list
            .iter()
            .map(|g| (g.identity, g.unavailable()))
            .collect();
        for mut g in std::mem::take(&mut self.list) {
            let rec = ctx
                .view
                .get(&g.identity)
                .filter(|r| ctx.rules.usable(r, now));
            match rec {
                Some(_) => {
                    if g.missing_since.take().is_some() {
                        self.dirty |= !g.temporary;
                    }
                }
                None => {
                    if g.missing_since.is_none() {
                        g.missing_since = Some(now);
                        self.dirty |= !g.temporary;
                    }
                }
            }
            let reason = if now >= g.expires {
                Some(GuardDropReason::Expired)
            } else if g
                .down_since
                .is_some_and(|d| now.saturating_since(d) > replace_ms)
            {
                Some(GuardDropReason::Down)
            } else if g
                .missing_since
                .is_some_and(|d| now.saturating_since(d) > replace_ms)
            {
                Some(GuardDropReason::Missing)
            } else if g.temporary && diverse && !stand_in_needed(&snapshot, &g) {
                Some(GuardDropReason::Temporary)
            } else if rec.is_some_and(|r| ctx.rules.families(&r.fields().endpoints).overlaps(&own))
            {
                Some(GuardDropReason::OwnFamily)
            } else {
                None
            };
            match reason {
                Some(why) => {
                    self.dirty |= !g.temporary;
                    events.push(GuardEvent::Dropped(g.identity, why));
                }
                None => kept.push(g),
            }
        }
        self.list = kept;
        // While a guard is down (killed, unreachable), temporary stand-ins keep `NUM_GUARDS` of
        // them up: with every guard down circuits could not be built at all, and with one down
        // a target that is the other one (an intro point) could not be reached. Paths still
        // take the first guard that is up and fits, so a stand-in carries circuits only when no
        // real guard can; it goes once the real guards are up again.
        let short = |l: &[Guard]| {
            l.iter().any(Guard::unavailable)
                && l.iter().filter(|g| !g.unavailable()).count() < NUM_GUARDS
        };
        if self.list.len() < NUM_GUARDS || short(&self.list) {
            let pool = ctx.pool(&own);
            while self.list.len() < NUM_GUARDS
                || (short(&self.list) && self.list.len() < MAX_GUARDS)
            {
                let stand_in = self.list.len() >= NUM_GUARDS;
                let taken: Vec<Node<'_>> = self
                    .list
                    .iter()
                    .filter_map(|g| {
                        ctx.view
                            .get(&g.identity)
                            .map(|r| ctx.node_of(r))
                            .or(Some(Node {
                                identity: g.identity,
                                fam: Families::default(),
                                rec: None,
                            }))
                    })
                    .collect();
                let ok: Vec<&Node<'_>> = pool
                    .iter()
                    .filter(|n| {
                        n.rec.is_some_and(|r| r.fields().nat.directly_reachable())
                            && !taken.iter().any(|t| t.clashes(n))
                    })
                    .collect();
                let Some(pick) = ok.choose(rng) else { break };
                let lifetime = rng
                    .gen_range(GUARD_LIFETIME_MIN_DAYS * DAY_MS..=GUARD_LIFETIME_MAX_DAYS * DAY_MS);
                let g = Guard {
                    identity: pick.identity,
                    chosen_at: now,
                    expires: now.saturating_add(lifetime),
                    last_seen_up: None,
                    down_since: None,
                    missing_since: None,
                    temporary: !diverse || stand_in,
                };
                self.dirty |= !g.temporary;
                events.push(GuardEvent::Chosen {
                    identity: g.identity,
                    temporary: g.temporary,
                });
                self.list.push(g);
            }
        }
        events
    }

    /// The guard circuits start at now: the first guard with a usable record in the view (outside
    /// the node's family) that is not marked down. If every such guard is marked down, the first
    /// of them (a retry: never a relay that is not a guard). `None` if no guard has a usable
    /// record.
    pub fn first_hop<'v>(&self, ctx: &PathContext<'v>) -> Option<&'v RelayRecord> {
        self.first_hop_node(ctx, &ctx.own()).and_then(|n| n.rec)
    }

    fn first_hop_node<'v>(&self, ctx: &PathContext<'v>, own: &Families) -> Option<Node<'v>> {
        self.first_hop_node_avoiding(ctx, own, None)
    }

    /// The first hop for a path to `avoid` (if given): the first usable guard that does not
    /// clash with it, else (the error names the clash) the one [`Guards::first_hop`] gives.
    pub(super) fn first_hop_node_avoiding<'v>(
        &self,
        ctx: &PathContext<'v>,
        own: &Families,
        avoid: Option<&Node<'_>>,
    ) -> Option<Node<'v>> {
        if let Some(t) = avoid {
            let mut fallback = None;
            for g in &self.list {
                let Some(n) = ctx.lookup(&g.identity, own) else {
                    continue;
                };
                if n.identity == t.identity || n.fam.overlaps(&t.fam) {
                    continue;
                }
                if g.down_since.is_none() {
                    return Some(n);
                }
                fallback.get_or_insert(n);
            }
            if fallback.is_some() {
                return fallback;
            }
        }
        let mut fallback = None;
        for g in &self.list {
            let Some(n) = ctx.lookup(&g.identity, own) else {
                continue;
            };
            if g.down_since.is_none() {
                return Some(n);
            }
            fallback.get_or_insert(n);
        }
        fallback
    }
}

/// Whether temporary guard `g` stands in for guards that are down or missing: another guard
/// (`snapshot`: identity, unavailable) is unavailable, fewer than [`NUM_GUARDS`] others are
/// available, and `g` is available itself.
fn stand_in_needed(snapshot: &[([u8; 32], bool)], g: &Guard) -> bool {
    let others = || snapshot.iter().filter(|(id, _)| *id != g.identity);
    others().any(|(_, down)| *down)
        && others().filter(|(_, down)| !*down).count() < NUM_GUARDS
        && !g.unavailable()
}
