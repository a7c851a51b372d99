//! Choosing a path uniformly among the relays that satisfy the rules, and checking one (9.2).

use rand::seq::SliceRandom;
use rand::Rng;
use std::net::SocketAddr;

use super::rules::Node;
use super::{
    Conflict, Families, Guards, Hop, Path, PathError, PathKind, PathRules, Role, Shape, Target,
    Vanguards,
};
use crate::link::view::RelayView;
use crate::time::Instant;
use crate::wire::record::{RelayRecord, FLAG_RELAY};

/// Work bound for counting family-disjoint relays in an error message.
const DISJOINT_SEARCH_STEPS: usize = 200_000;

/// The inputs of a selection: the view, the rules, the node's own endpoints and the time.
#[derive(Clone, Copy)]
pub struct PathContext<'a> {
    /// The relay view (9.1).
    pub view: &'a RelayView,
    /// The family prefixes.
    pub rules: PathRules,
    /// The node's own endpoints (may be empty if it does not know them).
    pub own_endpoints: &'a [SocketAddr],
    /// Now.
    pub now: Instant,
}

impl<'a> PathContext<'a> {
    pub(super) fn own(&self) -> Families {
        self.rules.families(self.own_endpoints)
    }

    pub(super) fn node_of(&self, r: &'a RelayRecord) -> Node<'a> {
        Node {
            identity: *r.identity(),
            fam: self.rules.families(&r.fields().endpoints),
            rec: Some(r),
        }
    }

    fn node_of_hop(&self, h: &Hop) -> Node<'a> {
        Node {
            identity: h.identity,
            fam: self.rules.families(&h.endpoints),
            rec: None,
        }
    }

    /// A usable relay in the view outside the node's family, by identity.
    pub(super) fn lookup(&self, identity: &[u8; 32], own: &Families) -> Option<Node<'a>> {
        let r = self.view.get(identity)?;
        if !self.rules.usable(r, self.now) {
            return None;
        }
        let n = self.node_of(r);
        (!n.fam.overlaps(own)).then_some(n)
    }

    /// Usable relays outside the node's own family, sorted by identity.
    pub(super) fn pool(&self, own: &Families) -> Vec<Node<'a>> {
        let mut v: Vec<Node<'a>> = self
            .view
            .iter()
            .filter(|r| self.rules.usable(r, self.now))
            .map(|r| self.node_of(r))
            .filter(|n| !n.fam.overlaps(own))
            .collect();
        v.sort_by_key(|a| a.identity);
        v
    }

    /// Selects a path. `vanguards` is needed for service circuits and stems.
    pub fn select<R: Rng + ?Sized>(
        &self,
        kind: PathKind,
        guards: &Guards,
        vanguards: Option<&Vanguards>,
        rng: &mut R,
    ) -> Result<Path, PathError> {
        let shape = kind.shape();
        let target = match kind {
            PathKind::Client(Target::PeerRendezvous(_)) => {
                return Err(PathError::Request(
                    "a client's rendezvous point is a target only for service circuits",
                ))
            }
            PathKind::Client(t) | PathKind::Service(t) => Some(t),
            PathKind::ClientStem | PathKind::ServiceStem => None,
        };
        let own = self.own();
        let pool = self.pool(&own);
        // A given target that clashes with our first guard is reached through the next usable
        // one (Tor's guard restriction): otherwise a client whose guard is a service's intro
        // point, or in its family, could never use that intro point.
        let avoid = match &target {
            Some(Target::Relay(h)) => Some(self.node_of_hop(h)),
            _ => None,
        };
        let guard = match guards.first_hop_node_avoiding(self, &own, avoid.as_ref()) {
            Some(g) => g,
            None => {
                return Err(self
                    .families_error(shape, target.as_ref(), &pool)
                    .unwrap_or(PathError::NoGuard {
                        guards: guards.len(),
                    }))
            }
        };
        let mut seconds: Vec<Option<Node<'a>>> = if shape.has_vanguard() {
            let held = vanguards.map_or(0, Vanguards::len);
            let usable = vanguards.map_or_else(Vec::new, |v| v.usable(self, &own, &guard));
            if usable.is_empty() {
                return Err(self
                    .families_error(shape, target.as_ref(), &pool)
                    .unwrap_or(PathError::NoVanguard {
                        vanguards: held,
                        rules: self.rules,
                    }));
            }
            usable.into_iter().map(Some).collect()
        } else {
            vec![None]
        };
        seconds.shuffle(rng);

        let given = match &target {
            Some(Target::Relay(h)) | Some(Target::PeerRendezvous(h)) => Some(h),
            _ => None,
        };
        let strict = !matches!(target, Some(Target::PeerRendezvous(_)));
        let given_node = given.map(|h| self.node_of_hop(h));
        // A client's rendezvous point that is one of our vanguards is accepted (the exception
        // above), but not reached through that vanguard: the middle would be asked to extend
        // back to the relay it came from and refuses (8.3). Another vanguard first; the same one
        // only when no other is usable.
        if let (false, Some(t)) = (strict, &given_node) {
            seconds.sort_by_key(|v| v.as_ref().is_some_and(|v| v.identity == t.identity));
        }
        let mut first_conflict: Option<PathError> = None;

        for second in &seconds {
            let mut prefix: Vec<Node<'a>> = vec![guard.clone()];
            if let Some(v) = second {
                prefix.push(v.clone());
            }
            match &target {
                None => {
                    if let Some(m) = pick_middle(&pool, &prefix, None, rng) {
                        prefix.push(m);
                        return self.finish(shape, prefix, None, false);
                    }
                }
                Some(Target::Any(flags)) => {
                    let mut targets: Vec<&Node<'a>> = pool
                        .iter()
                        .filter(|n| has_flags(n, *flags) && !prefix.iter().any(|p| p.clashes(n)))
                        .collect();
                    targets.shuffle(rng);
                    for t in targets {
                        if let Some(m) = pick_middle(&pool, &prefix, Some(t), rng) {
                            prefix.push(m);
                            prefix.push(t.clone());
                            return self.finish(shape, prefix, None, false);
                        }
                    }
                }
                Some(Target::Relay(_)) | Some(Target::PeerRendezvous(_)) => {
                    let Some(t) = &given_node else { continue };
                    if strict {
                        if let Some(e) = self.conflict(t, &own, &prefix, shape) {
                            first_conflict.get_or_insert(e);
                            continue;
                        }
                    }
                    if let Some(m) = pick_middle(&pool, &prefix, Some(t), rng) {
                        prefix.push(m);
                        prefix.push(t.clone());
                        return self.finish(shape, prefix, given, !strict);
                    }
                }
            }
        }
        Err(self.diagnose(
            shape,
            target.as_ref(),
            &pool,
            &guard,
            &seconds,
            first_conflict,
        ))
    }

    /// Extends a pooled stem to a target: a client stem (guard, middle) to a client path, a
    /// service stem (guard, vanguard, middle) to a service path. Fails with
    /// [`PathError::TargetConflict`] (or `NoTarget`) if the target does not fit this stem; the
    /// caller then tries another stem or selects a fresh path with [`PathContext::select`].
    pub fn extend_stem<R: Rng + ?Sized>(
        &self,
        stem: &Path,
        target: Target,
        rng: &mut R,
    ) -> Result<Path, PathError> {
        let shape = match stem.shape {
            Shape::ClientStem => Shape::Client,
            Shape::ServiceStem => Shape::Service,
            _ => return Err(PathError::Request("only a stem can be extended")),
        };
        let own = self.own();
        let hops: Vec<Node<'a>> = stem.hops.iter().map(|h| self.node_of_hop(h)).collect();
        let Some(middle) = hops.last() else {
            return Err(PathError::Request("empty stem"));
        };
        let mut out = stem.hops.clone();
        match target {
            Target::Any(flags) => {
                let pool = self.pool(&own);
                let in_view = pool.iter().filter(|n| has_flags(n, flags)).count();
                let ok: Vec<&Node<'a>> = pool
                    .iter()
                    .filter(|n| has_flags(n, flags) && !hops.iter().any(|p| p.clashes(n)))
                    .collect();
                let t = ok.choose(rng).ok_or(PathError::NoTarget {
                    flags,
                    in_view,
                    rules: self.rules,
                })?;
                out.extend(t.hop(None));
                Ok(Path {
                    shape,
                    hops: out,
                    peer_rendezvous: false,
                })
            }
            Target::Relay(h) => {
                let t = self.node_of_hop(&h);
                if let Some(e) = self.conflict(&t, &own, &hops, shape) {
                    return Err(e);
                }
                out.push(h);
                Ok(Path {
                    shape,
                    hops: out,
                    peer_rendezvous: false,
                })
            }
            Target::PeerRendezvous(h) => {
                if shape != Shape::Service {
                    return Err(PathError::Request(
                        "a client's rendezvous point is a target only for service circuits",
                    ));
                }
                let t = self.node_of_hop(&h);
                if t.clashes(middle) {
                    return Err(PathError::TargetConflict {
                        with: Conflict::Hop(Role::Middle),
                        same_identity: t.identity == middle.identity,
                        rules: self.rules,
                    });
                }
                out.push(h);
                Ok(Path {
                    shape,
                    hops: out,
                    peer_rendezvous: true,
                })
            }
        }
    }

    /// Whether a path (from [`PathContext::select`] or elsewhere) satisfies every rule against
    /// this context: usable records in the view for every hop chosen from it, distinct
    /// identities, family-disjoint hops (with the rendezvous exception) and none in the node's
    /// family. `Ok(())` or the first broken rule.
    pub fn check(&self, path: &Path) -> Result<(), PathError> {
        if path.hops.len() != path.shape.hops() {
            return Err(PathError::Request("wrong number of hops for the shape"));
        }
        let own = self.own();
        let exempt_last = path.peer_rendezvous;
        let n = path.hops.len();
        let nodes: Vec<Node<'a>> = path.hops.iter().map(|h| self.node_of_hop(h)).collect();
        for (i, (a, role)) in nodes.iter().zip(path.shape.roles()).enumerate() {
            let is_last = i + 1 == n;
            if is_last && exempt_last {
                // Only the middle (the hop before it) is kept distinct.
                if let Some(m) = i.checked_sub(1).and_then(|j| nodes.get(j)) {
                    if a.clashes(m) {
                        return Err(PathError::TargetConflict {
                            with: Conflict::Hop(Role::Middle),
                            same_identity: a.identity == m.identity,
                            rules: self.rules,
                        });
                    }
                }
                continue;
            }
            if *role != Role::Target {
                match self.view.get(&a.identity) {
                    Some(r) if self.rules.usable(r, self.now) => {}
                    _ => {
                        return Err(PathError::Request(
                            "a hop is not a usable relay in the view",
                        ))
                    }
                }
            }
            if a.fam.overlaps(&own) {
                return Err(PathError::TargetConflict {
                    with: Conflict::ThisNode,
                    same_identity: false,
                    rules: self.rules,
                });
            }
            for (b, brole) in nodes.iter().zip(path.shape.roles()).take(i) {
                if a.clashes(b) {
                    return Err(PathError::TargetConflict {
                        with: Conflict::Hop(*brole),
                        same_identity: a.identity == b.identity,
                        rules: self.rules,
                    });
                }
            }
        }
        Ok(())
    }

    fn finish(
        &self,
        shape: Shape,
        nodes: Vec<Node<'a>>,
        given: Option<&Hop>,
        peer_rendezvous: bool,
    ) -> Result<Path, PathError> {
        let n = nodes.len();
        let mut hops = Vec::with_capacity(n);
        for (i, node) in nodes.iter().enumerate() {
            let g = if i + 1 == n { given } else { None };
            hops.push(
                node.hop(g)
                    .ok_or(PathError::Request("internal: hop without a record"))?,
            );
        }
        if hops.len() != shape.hops() {
            return Err(PathError::Request("internal: wrong path length"));
        }
        Ok(Path {
            shape,
            hops,
            peer_rendezvous,
        })
    }

    /// The first rule a given target breaks against the node and the hops before the middle.
    fn conflict(
        &self,
        t: &Node<'a>,
        own: &Families,
        prefix: &[Node<'a>],
        shape: Shape,
    ) -> Option<PathError> {
        if t.fam.overlaps(own) {
            return Some(PathError::TargetConflict {
                with: Conflict::ThisNode,
                same_identity: false,
                rules: self.rules,
            });
        }
        for (p, role) in prefix.iter().zip(shape.roles()) {
            if t.clashes(p) {
                return Some(PathError::TargetConflict {
                    with: Conflict::Hop(*role),
                    same_identity: t.identity == p.identity,
                    rules: self.rules,
                });
            }
        }
        None
    }

    /// `Families` if the view cannot hold such a path whatever the guard.
    fn families_error(
        &self,
        shape: Shape,
        target: Option<&Target>,
        pool: &[Node<'a>],
    ) -> Option<PathError> {
        let from_view = match target {
            Some(Target::Relay(_)) => shape.hops() - 1,
            // The rendezvous point may share a family with the guard and vanguard.
            Some(Target::PeerRendezvous(_)) => shape.hops() - 1,
            _ => shape.hops(),
        };
        let have = max_disjoint(pool, from_view);
        (have < from_view).then_some(PathError::Families {
            needed: from_view,
            have,
            rules: self.rules,
        })
    }

    fn diagnose(
        &self,
        shape: Shape,
        target: Option<&Target>,
        pool: &[Node<'a>],
        guard: &Node<'a>,
        seconds: &[Option<Node<'a>>],
        first_conflict: Option<PathError>,
    ) -> PathError {
        if let Some(e) = self.families_error(shape, target, pool) {
            return e;
        }
        if let Some(e) = first_conflict {
            return e;
        }
        if let Some(Target::Any(flags)) = target {
            let flagged: Vec<&Node<'a>> = pool.iter().filter(|n| has_flags(n, *flags)).collect();
            let reachable = seconds.iter().any(|s| {
                flagged
                    .iter()
                    .any(|t| !t.clashes(guard) && s.as_ref().is_none_or(|v| !t.clashes(v)))
            });
            if !reachable {
                return PathError::NoTarget {
                    flags: *flags,
                    in_view: flagged.len(),
                    rules: self.rules,
                };
            }
        }
        PathError::NoMiddle { rules: self.rules }
    }
}

fn has_flags(n: &Node<'_>, flags: u8) -> bool {
    n.rec
        .is_some_and(|r| r.fields().flags & (flags | FLAG_RELAY) == (flags | FLAG_RELAY))
}

/// A middle, uniformly among the pool's relays clashing with no hop and not the target.
fn pick_middle<'v, R: Rng + ?Sized>(
    pool: &[Node<'v>],
    prefix: &[Node<'v>],
    target: Option<&Node<'v>>,
    rng: &mut R,
) -> Option<Node<'v>> {
    let ok: Vec<&Node<'v>> = pool
        .iter()
        .filter(|n| !prefix.iter().any(|p| p.clashes(n)) && !target.is_some_and(|t| t.clashes(n)))
        .collect();
    ok.choose(rng).map(|n| (*n).clone())
}

/// The size of the largest set of pairwise family-disjoint relays in `pool`, up to `cap` (an
/// exact search over distinct family sets, bounded in work; a lower bound if the bound is hit).
pub(super) fn max_disjoint(pool: &[Node<'_>], cap: usize) -> usize {
    let mut sets: Vec<&Families> = pool.iter().map(|n| &n.fam).collect();
    sets.sort_by(|a, b| a.0.len().cmp(&b.0.len()).then_with(|| a.0.cmp(&b.0)));
    sets.dedup();
    let mut chosen: Vec<&Families> = Vec::new();
    let mut steps = 0usize;
    fn go<'f>(
        sets: &[&'f Families],
        chosen: &mut Vec<&'f Families>,
        cap: usize,
        steps: &mut usize,
    ) -> usize {
        let mut best = chosen.len();
        for (i, s) in sets.iter().enumerate() {
            if best >= cap || *steps >= DISJOINT_SEARCH_STEPS {
                break;
            }
            *steps += 1;
            if chosen.iter().any(|c| c.overlaps(s)) {
                continue;
            }
            chosen.push(s);
            let rest = sets.get(i + 1..).unwrap_or(&[]);
            best = best.max(go(rest, chosen, cap, steps));
            chosen.pop();
        }
        best
    }
    go(&sets, &mut chosen, cap, &mut steps).min(cap)
}
