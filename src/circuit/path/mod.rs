//! Path selection, guards and layer-2 vanguards (DESIGN.md section 6; docs/protocol.md section 9).
//!
//! Sans-IO: every function takes the relay view, the time and a random generator, and returns a
//! path or an error that names the rule it could not satisfy. A rule is never relaxed silently: in
//! a network too small for the rules the selection fails, and the family prefixes
//! ([`PathRules`]) are the only knobs.
//!
//! The rules (9.2), checked for every path:
//!
//! - only relays (`FLAG_RELAY`) whose record has not expired, all distinct identities;
//! - two relays are in one family if *any* of their endpoints share the IPv4 `/ipv4_bits` or the
//!   IPv6 `/ipv6_bits` prefix; no two hops in one family and no hop in the node's own family;
//! - client circuits are guard, middle, target; service circuits are guard, layer-2 vanguard,
//!   middle, target; stems are the same without the target (pools, 9.4);
//! - the rendezvous exception: a service joining a rendezvous point chosen by a client
//!   ([`Target::PeerRendezvous`]) does not refuse it for sharing a family (or even an identity)
//!   with its guard, its vanguard or itself, which would let a client probe them; only the middle
//!   is kept distinct from it;
//! - selection is uniform among the relays that satisfy the rules: candidates are sorted by
//!   identity before sampling, so a seeded generator gives the same path for the same view.
//!
//! Guards (9.3): [`Guards`] keeps [`NUM_GUARDS`] guards, kept across restarts by the daemon
//! (`daemon::guard_file`; this module does no file I/O: [`Guards::restore`],
//! [`Guards::to_keep`]); [`Guards::maintain`] replaces expired and long-unreachable ones and
//! chooses new ones only from a view with
//! [`VIEW_MIN_SOURCES`](crate::link::view::VIEW_MIN_SOURCES) sources (otherwise temporary guards
//! that are never saved). [`Vanguards`] keeps [`NUM_L2_GUARDS`] short-lived second hops for service
//! circuits, in memory only.
//!
//! Typical use:
//!
//! ```ignore
//! let ctx = PathContext { view: &view, rules, own_endpoints: &own, now };
//! guards.maintain(&ctx, &mut rng);
//! vanguards.maintain(&ctx, &guards, &mut rng); // services only
//! let path = ctx.select(PathKind::Client(Target::Any(FLAG_RENDEZVOUS)), &guards, None, &mut rng)?;
//! ```
//!
//! Where things are: `types.rs` what a path is (hops, targets, shapes, errors), `rules.rs` the
//! family rule, `select.rs` choosing and checking paths, `guards.rs` and `vanguards.rs` the long-
//! and short-lived first hops. Everything public is re-exported here.

mod guards;
mod rules;
mod select;
#[cfg(test)]
mod tests;
mod types;
mod vanguards;

pub use guards::{Guard, GuardDropReason, GuardEvent, Guards};
pub use rules::{Families, PathRules};
pub use select::PathContext;
pub use types::{Conflict, Hop, Path, PathError, PathKind, Role, Shape, Target};
pub use vanguards::{Vanguard, Vanguards};

/// Hops of a client circuit: guard, middle, target.
pub const CLIENT_CIRCUIT_HOPS: usize = 3;
/// Hops of a service circuit: guard, layer-2 vanguard, middle, target.
pub const SERVICE_CIRCUIT_HOPS: usize = 4;
/// Guards a node keeps.
pub const NUM_GUARDS: usize = 2;
/// Guards held at most: [`NUM_GUARDS`] plus temporary stand-ins while all of them are down.
pub const MAX_GUARDS: usize = 2 * NUM_GUARDS;
/// Shortest guard lifetime, days.
pub const GUARD_LIFETIME_MIN_DAYS: u64 = 30;
/// Longest guard lifetime, days.
pub const GUARD_LIFETIME_MAX_DAYS: u64 = 60;
/// A guard unreachable (or absent from the view) for longer than this is replaced, days.
pub const GUARD_DOWN_REPLACE_DAYS: u64 = 3;
/// Layer-2 vanguards a service keeps.
pub const NUM_L2_GUARDS: usize = 4;
/// Shortest vanguard lifetime, days.
pub const L2_GUARD_LIFETIME_MIN_DAYS: u64 = 1;
/// Longest vanguard lifetime, days.
pub const L2_GUARD_LIFETIME_MAX_DAYS: u64 = 12;

const DAY_MS: u64 = 86_400_000;
