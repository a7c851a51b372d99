//! Layer-2 vanguards (vanguards-lite): a service's short-lived second hops, in memory only.

use rand::seq::SliceRandom;
use rand::Rng;

use super::rules::Node;
use super::{
    Families, Guards, PathContext, DAY_MS, L2_GUARD_LIFETIME_MAX_DAYS, L2_GUARD_LIFETIME_MIN_DAYS,
    NUM_L2_GUARDS,
};
use crate::time::Instant;

/// One layer-2 vanguard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vanguard {
    /// The relay's identity.
    pub identity: [u8; 32],
    /// When it is replaced.
    pub expires: Instant,
}

/// A service's layer-2 vanguards (vanguards-lite), in memory only.
#[derive(Debug, Clone, Default)]
pub struct Vanguards {
    list: Vec<Vanguard>,
}

impl Vanguards {
    /// None yet.
    pub fn new() -> Vanguards {
        Vanguards::default()
    }

    /// The vanguards.
    pub fn list(&self) -> &[Vanguard] {
        &self.list
    }

    /// Number held.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Whether a relay is one of them.
    pub fn contains(&self, identity: &[u8; 32]) -> bool {
        self.list.iter().any(|v| v.identity == *identity)
    }

    /// Drops expired vanguards and those whose record left the view (or is in the node's family
    /// now), and fills up to [`NUM_L2_GUARDS`] with random relays outside the families of the
    /// node and of its guards, each with a lifetime uniform in [1, 12] days. Returns how many
    /// were replaced.
    pub fn maintain<R: Rng + ?Sized>(
        &mut self,
        ctx: &PathContext<'_>,
        guards: &Guards,
        rng: &mut R,
    ) -> usize {
        let own = ctx.own();
        let now = ctx.now;
        let before = self.list.len();
        self.list
            .retain(|v| now < v.expires && ctx.lookup(&v.identity, &own).is_some());
        let pool = ctx.pool(&own);
        let guard_nodes: Vec<Node<'_>> = guards
            .list
            .iter()
            .map(|g| match ctx.view.get(&g.identity) {
                Some(r) => ctx.node_of(r),
                None => Node {
                    identity: g.identity,
                    fam: Families::default(),
                    rec: None,
                },
            })
            .collect();
        // A NATed vanguard is a stand-in for a network without a fitting public relay: once one
        // fits (public relays joined, or the guards changed), the NATed ones go at once rather
        // than at the end of their lifetime.
        let natted = |id: &[u8; 32]| {
            ctx.view
                .get(id)
                .is_some_and(|r| !r.fields().nat.directly_reachable())
        };
        if self.list.iter().any(|v| natted(&v.identity)) {
            let public_fits = pool.iter().any(|n| {
                n.rec.is_some_and(|r| r.fields().nat.directly_reachable())
                    && !guard_nodes.iter().any(|g| g.clashes(n))
                    && !self.contains(&n.identity)
            });
            if public_fits {
                self.list.retain(|v| !natted(&v.identity));
            }
        }
        let dropped = before - self.list.len();
        while self.list.len() < NUM_L2_GUARDS {
            let fits = |n: &&Node<'_>| {
                !guard_nodes.iter().any(|g| g.clashes(n)) && !self.contains(&n.identity)
            };
            // Like guards, vanguards are directly reachable where the view allows. When the
            // guards take every directly reachable relay (a network with two or three public
            // relays), a NATed relay that names an introducer is taken rather than none: a
            // service without a vanguard builds no circuit at all, and the guard reaches a NATed
            // vanguard by one punch or a relayed link (docs/threat-model.md, "Few public relays").
            let direct: Vec<&Node<'_>> = pool
                .iter()
                .filter(|n| n.rec.is_some_and(|r| r.fields().nat.directly_reachable()))
                .filter(fits)
                .collect();
            let ok: Vec<&Node<'_>> = if direct.is_empty() && self.list.is_empty() {
                pool.iter().filter(fits).collect()
            } else {
                direct
            };
            let Some(pick) = ok.choose(rng) else { break };
            let lifetime = rng.gen_range(
                L2_GUARD_LIFETIME_MIN_DAYS * DAY_MS..=L2_GUARD_LIFETIME_MAX_DAYS * DAY_MS,
            );
            self.list.push(Vanguard {
                identity: pick.identity,
                expires: now.saturating_add(lifetime),
            });
        }
        dropped
    }

    /// How many of them are behind NAT (stand-ins while no public relay fits, 9.3).
    pub fn behind_nat(&self, view: &crate::link::view::RelayView) -> usize {
        self.list
            .iter()
            .filter(|v| {
                view.get(&v.identity)
                    .is_some_and(|r| !r.fields().nat.directly_reachable())
            })
            .count()
    }

    /// The vanguards usable after this guard, sorted by identity.
    pub(super) fn usable<'v>(
        &self,
        ctx: &PathContext<'v>,
        own: &Families,
        guard: &Node<'v>,
    ) -> Vec<Node<'v>> {
        let mut v: Vec<Node<'v>> = self
            .list
            .iter()
            .filter(|v| ctx.now < v.expires)
            .filter_map(|v| ctx.lookup(&v.identity, own))
            .filter(|n| !n.clashes(guard))
            .collect();
        v.sort_by_key(|a| a.identity);
        v
    }
}
