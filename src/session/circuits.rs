//! Circuits for sessions: paths (with vanguards for services, 9.3, and without relays that
//! just stopped answering), pre-built stems extended to intro and rendezvous points, and pool
//! circuits taken for rendezvous points.

use crate::circuit::layer::{CircId, Purpose};
use crate::circuit::path::{Hop, PathContext, PathKind, Target};
use crate::session::ctx::SessionCtx;
use crate::session::layer::{hex8, Owner, SessionLayer};
use crate::session::limits::*;
use crate::time::{Expiring, Instant};
use crate::wire::record::RelayRecord;

fn hop_of(r: &RelayRecord) -> Hop {
    Hop::from_record(r)
}

impl SessionLayer {
    /// A path of `kind` starting at a guard outside `avoid_guards` and outside the guards whose
    /// session circuits just went silent, when one such guard is usable (else the usual first
    /// guard: only our own guards are ever first hops).
    pub(in crate::session) fn path_avoiding(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        kind: PathKind,
        avoid_guards: &[[u8; 32]],
    ) -> Result<Vec<RelayRecord>, String> {
        self.silent_guards.sweep(now);
        // A copy with those guards marked down: selection then takes another guard if one is
        // up, and falls back to the first guard if none is (the real list is untouched).
        let avoided: Vec<[u8; 32]> = ctx
            .guards()
            .list()
            .iter()
            .map(|g| g.identity)
            .filter(|g| avoid_guards.contains(g) || self.silent_guards.contains(g, now))
            .collect();
        let steered = (!avoided.is_empty()).then(|| {
            let mut guards = ctx.guards().clone();
            for id in &avoided {
                guards.mark_down(id, now);
            }
            guards
        });
        let own_endpoints = ctx.own_endpoints();
        let pc = PathContext {
            view: ctx.view(),
            rules: ctx.path_rules(),
            own_endpoints: &own_endpoints,
            now,
        };
        if matches!(kind, PathKind::Service(_) | PathKind::ServiceStem) {
            self.vanguards.maintain(&pc, ctx.guards(), &mut self.rng);
        }
        // A relay that just stopped answering is still in the view for a while: paths through
        // it would wait for an EXTEND to fail. A few tries find one without; else the last.
        self.suspects.sweep(now);
        let mut tries = 0;
        let path = loop {
            tries += 1;
            let path = pc
                .select(
                    kind.clone(),
                    steered.as_ref().unwrap_or(ctx.guards()),
                    Some(&self.vanguards),
                    &mut self.rng,
                )
                .map_err(|e| e.to_string())?;
            let clean = !path
                .hops()
                .iter()
                .skip(1)
                .any(|h| self.suspects.contains(&h.identity, now));
            if clean || tries >= SUSPECT_PATH_TRIES {
                break path;
            }
        };
        path.hops()
            .iter()
            .map(|h| pc.view.get(&h.identity).cloned())
            .collect::<Option<Vec<RelayRecord>>>()
            .ok_or_else(|| "path: a hop left the view".to_string())
    }

    pub(in crate::session) fn build_circuit(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        kind: PathKind,
        purpose: Purpose,
        owner: Owner,
    ) -> Result<CircId, String> {
        self.build_avoiding(ctx, now, kind, purpose, owner, &[])
    }

    /// A circuit as [`SessionLayer::build_circuit`] builds, through a guard outside
    /// `avoid_guards` when one is usable ([`SessionLayer::path_avoiding`]).
    // The node's parts come as `ctx`: one argument more than clippy's default limit.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::session) fn build_avoiding(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        kind: PathKind,
        purpose: Purpose,
        owner: Owner,
        avoid_guards: &[[u8; 32]],
    ) -> Result<CircId, String> {
        let path = self.path_avoiding(ctx, now, kind, avoid_guards)?;
        let id = ctx.build(now, purpose, path).map_err(|e| e.to_string())?;
        tracing::debug!(
            at = now.as_unix_ms(),
            circuit = id.0,
            path = %path_hex(ctx, id),
            "fresh session path"
        );
        self.owners.insert(id, owner);
        Ok(id)
    }

    /// A circuit ending at `target`: a ready stem extended by one hop, or a fresh build.
    /// Stems sharing fewest relays with `avoid` (the relays of a session's other circuits; a
    /// shared guard counts double) come first, so that one relay's death, a guard's or a
    /// vanguard's, does not take every circuit of the session. Stems starting at a guard in
    /// `avoid_guards` (or one whose circuit just went silent) are left for later: the circuit
    /// is built through another guard.
    // The node's parts come as `ctx`: one argument more than clippy's default limit.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::session) fn circuit_to(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        service: bool,
        target: &RelayRecord,
        purpose: Purpose,
        owner: Owner,
        avoid: &[[u8; 32]],
        avoid_guards: &[[u8; 32]],
    ) -> Result<CircId, String> {
        let want = if service {
            Owner::ServiceStem
        } else {
            Owner::ClientStem
        };
        let mut stems: Vec<CircId> = self
            .stems
            .iter()
            .filter(|(id, ready)| *ready && self.owners.get(id) == Some(&want))
            .map(|(id, _)| *id)
            .collect();
        stems.sort_by_key(|id| ctx.path(*id).map_or(usize::MAX, |p| shared(p, avoid)));
        for id in stems {
            let suspect = ctx
                .path(id)
                .is_some_and(|p| p.iter().any(|h| self.suspects.contains(h.identity(), now)));
            if suspect {
                self.owners.remove(&id);
                self.stems.retain(|(s, _)| *s != id);
                ctx.destroy(now, id);
                continue;
            }
            let fits = ctx.path(id).is_some_and(|p| {
                p.iter().all(|h| h.identity() != target.identity())
                    && !p.first().is_some_and(|g| {
                        avoid_guards.contains(g.identity())
                            || self.silent_guards.contains(g.identity(), now)
                    })
            });
            if !fits {
                continue;
            }
            if ctx.extend(now, id, target.clone()).is_ok() {
                self.stats.stem_extends += 1;
                self.stems.retain(|(s, _)| *s != id);
                self.owners.insert(id, owner);
                ctx.set_purpose(id, purpose);
                return Ok(id);
            }
        }
        self.stats.fresh_builds += 1;
        tracing::debug!(
            at = now.as_unix_ms(),
            target = %hex8(target.identity()),
            "no pooled stem fits: building a circuit from scratch"
        );
        // An intro point is the service's own choice: every path rule applies (no hop of ours
        // may be it or share its family); only a client's rendezvous point is taken as given.
        let kind = if service && purpose == Purpose::Intro {
            PathKind::Service(Target::Relay(hop_of(target)))
        } else if service {
            PathKind::Service(Target::PeerRendezvous(hop_of(target)))
        } else {
            PathKind::Client(Target::Relay(hop_of(target)))
        };
        self.build_least_shared(ctx, now, kind, purpose, owner, avoid, avoid_guards)
    }

    /// A circuit built from scratch through a guard outside `avoid_guards` when one is usable:
    /// of a few paths drawn, the one sharing fewest relays with `avoid` (the session's other
    /// circuits; a shared guard counts double), as sorting the stems or scoring the pool does
    /// for a pooled one (a fresh path through the other guard would otherwise often share their
    /// vanguard, middle or rendezvous point, and die with them).
    // The node's parts come as `ctx`: one argument more than clippy's default limit.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::session) fn build_least_shared(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        kind: PathKind,
        purpose: Purpose,
        owner: Owner,
        avoid: &[[u8; 32]],
        avoid_guards: &[[u8; 32]],
    ) -> Result<CircId, String> {
        let draws = if avoid.is_empty() {
            1
        } else {
            FRESH_PATH_DRAWS
        };
        let mut best: Option<(usize, Vec<RelayRecord>)> = None;
        for _ in 0..draws {
            let path = match self.path_avoiding(ctx, now, kind.clone(), avoid_guards) {
                Ok(p) => p,
                Err(e) if best.is_none() => return Err(e),
                Err(_) => break,
            };
            let score = shared(&path, avoid);
            if best.as_ref().is_none_or(|(b, _)| score < *b) {
                best = Some((score, path));
            }
            if score == 0 {
                break;
            }
        }
        let Some((_, path)) = best else {
            return Err("path: none drawn".to_string());
        };
        let id = ctx.build(now, purpose, path).map_err(|e| e.to_string())?;
        tracing::debug!(
            at = now.as_unix_ms(),
            circuit = id.0,
            path = %path_hex(ctx, id),
            "fresh session path"
        );
        self.owners.insert(id, owner);
        Ok(id)
    }

    /// A ready pool circuit for a rendezvous: none through a suspect relay (those are torn
    /// down, the pool rebuilds), with `pass_silent` none through a guard whose session circuit
    /// just went silent (kept: the guard may be fine), preferably none through a relay in
    /// `avoid` (the session's other circuits, so that one relay's death does not take the spare
    /// too), and above all not through the same guard when a pool circuit through another
    /// guard is ready: a guard carries every circuit through it, so its death would leave the
    /// session none.
    pub(in crate::session) fn take_pool(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        avoid: &[[u8; 32]],
        pass_silent: bool,
    ) -> Option<CircId> {
        self.suspects.sweep(now);
        self.silent_guards.sweep(now);
        // Lowest score wins: 2 for a shared guard, 1 per other shared relay.
        let mut best: Option<(usize, CircId)> = None;
        for id in ctx.ready_ids(Purpose::Pool) {
            let Some(path) = ctx.path(id) else {
                continue;
            };
            if path
                .iter()
                .any(|r| self.suspects.contains(r.identity(), now))
            {
                ctx.destroy(now, id);
                continue;
            }
            // The guard is judged by its link, seconds later; a rendezvous circuit through a
            // dead one waited for that (a lost session's new introduction took 4 to 6 s more,
            // issue #20 item 5). The caller builds through another guard instead.
            if pass_silent
                && path
                    .first()
                    .is_some_and(|g| self.silent_guards.contains(g.identity(), now))
            {
                continue;
            }
            let score = shared(path, avoid);
            if best.is_none_or(|(b, _)| score < b) {
                best = Some((score, id));
            }
            if score == 0 {
                break;
            }
        }
        let (_, id) = best?;
        ctx.set_purpose(id, Purpose::Rendezvous);
        Some(id)
    }

    pub(in crate::session) fn maintain_stems(&mut self, ctx: &mut impl SessionCtx, now: Instant) {
        let wants = [
            (
                Owner::ClientStem,
                if self.client_seed.is_some() {
                    CLIENT_POOL_STEMS
                } else {
                    0
                },
                PathKind::ClientStem,
            ),
            (
                Owner::ServiceStem,
                if self.services.is_empty() {
                    0
                } else {
                    SERVICE_POOL_STEMS
                },
                PathKind::ServiceStem,
            ),
        ];
        for (owner, want, kind) in wants {
            let have = self
                .stems
                .iter()
                .filter(|(id, _)| self.owners.get(id) == Some(&owner))
                .count();
            if have < want {
                let purpose = if owner == Owner::ServiceStem {
                    Purpose::Rendezvous
                } else {
                    Purpose::Intro
                };
                match self.build_circuit(ctx, now, kind, purpose, owner) {
                    Ok(id) => {
                        self.stems.push((id, false));
                        self.stem_log.clear();
                    }
                    Err(e) => {
                        let e = e.to_string();
                        if let Some(held) = self.stem_log.hit(now, &e) {
                            tracing::debug!(repeats = held, "stem: {e}");
                        }
                    }
                }
            }
        }
    }
}

impl SessionLayer {
    /// A session circuit found dead by its silence (10.8): its relays past the first hop are
    /// suspect (a dead relay sends no DESTROY and its record outlives it), and it is torn down.
    /// The first hop is a guard, judged by its link; until that link says, new session paths
    /// take the other guard ([`SILENT_GUARD_MS`]): the guard may be the dead relay, and its
    /// link is declared down only seconds later, so replacements built through it meanwhile
    /// would die with it (a service's guard took its whole session so, issue #20 item 5).
    /// Relays in `alive` (on another circuit heard from just now) are not made suspect: in a
    /// small network every relay past the guard of two dead circuits was suspect, the new
    /// spares all ran through the two or three relays left, and the next death took every
    /// circuit of the session (issue #20 item 5, netns logs).
    pub(in crate::session) fn abandon_dead_circuit(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        id: CircId,
        alive: &[[u8; 32]],
    ) {
        if let Some(p) = ctx.path(id) {
            for r in p.iter().skip(1) {
                if !alive.contains(r.identity()) {
                    self.suspects.insert(*r.identity(), now + SUSPECT_MS);
                }
            }
            for r in p {
                self.note_suspect(r.identity());
            }
            if let Some(g) = p.first() {
                self.silent_guards
                    .extend(*g.identity(), now + SILENT_GUARD_MS);
            }
        }
        self.owners.remove(&id);
        ctx.destroy(now, id);
    }
}

/// Whether circuit `id` runs through a relay in `suspects` at `now` (past its first hop).
pub(in crate::session) fn through_suspect(
    suspects: &Expiring<[u8; 32]>,
    ctx: &impl SessionCtx,
    now: Instant,
    id: CircId,
) -> bool {
    ctx.path(id).is_some_and(|p| {
        p.iter()
            .skip(1)
            .any(|r| suspects.contains(r.identity(), now))
    })
}

/// The guard every one of `circuits` starts at, if they share one (and there is one): a
/// circuit for the same session is then built through another guard.
pub(in crate::session) fn single_guard(
    ctx: &impl SessionCtx,
    circuits: impl Iterator<Item = CircId>,
) -> Option<[u8; 32]> {
    let mut guard = None;
    for id in circuits {
        let g = ctx
            .path(id)
            .and_then(|p| p.first().map(|r| *r.identity()))?;
        if guard.get_or_insert(g) != &g {
            return None;
        }
    }
    guard
}

/// A circuit's relays as short fingerprints, for the debug log: which relay's death took which
/// session circuit is read from it (issue #20 item 5).
pub(in crate::session) fn path_hex(ctx: &impl SessionCtx, id: CircId) -> String {
    ctx.path(id).map_or_else(String::new, |p| {
        p.iter()
            .map(|r| hex8(r.identity()))
            .collect::<Vec<_>>()
            .join(">")
    })
}

/// The relays on every one of `circuits` (none when there are none): one of their deaths
/// would take all of them, so a further circuit of the same session must not run through any.
pub(in crate::session) fn common_relays(
    ctx: &impl SessionCtx,
    circuits: impl Iterator<Item = CircId>,
) -> Vec<[u8; 32]> {
    let mut common: Option<Vec<[u8; 32]>> = None;
    for id in circuits {
        let relays: Vec<[u8; 32]> = ctx
            .path(id)
            .map(|p| p.iter().map(|r| *r.identity()).collect())
            .unwrap_or_default();
        common = Some(match common {
            None => relays,
            Some(c) => c.into_iter().filter(|r| relays.contains(r)).collect(),
        });
    }
    common.unwrap_or_default()
}

/// How much a path shares with `avoid`: 2 for a shared guard, 1 per other shared relay, each
/// times the number of times `avoid` lists it (a relay on more of the session's circuits
/// weighs more: a service lists its relays per circuit).
fn shared(path: &[RelayRecord], avoid: &[[u8; 32]]) -> usize {
    path.iter()
        .enumerate()
        .map(|(i, r)| {
            let n = avoid.iter().filter(|a| *a == r.identity()).count();
            if i == 0 {
                2 * n
            } else {
                n
            }
        })
        .sum()
}
