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
//! (`daemon::guard_file`; this module does no file I/O: [`Guards::restore`], [`Guards::to_keep`]); [`Guards::maintain`] replaces expired and long-unreachable ones and chooses
//! new ones only from a view with [`VIEW_MIN_SOURCES`] sources (otherwise temporary guards that
//! are never saved). [`Vanguards`] keeps [`NUM_L2_GUARDS`] short-lived second hops for service
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

use rand::seq::SliceRandom;
use rand::Rng;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::circuit::handshake::HopTarget;
use crate::crypto::keys::fingerprint;
use crate::link::view::{family_prefix, RelayView, VIEW_MIN_SOURCES};
use crate::time::Millis;
use crate::wire::record::{Contact, RelayRecord, FLAG_DHT, FLAG_RELAY, FLAG_RENDEZVOUS};

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
/// The guard file's name in the state directory.
pub const GUARDS_FILE: &str = "guards.json";
/// Version of the guard file format.
pub const GUARDS_FILE_VERSION: u32 = 1;

const DAY_MS: u64 = 86_400_000;
/// Work bound for counting family-disjoint relays in an error message.
const DISJOINT_SEARCH_STEPS: usize = 200_000;

/// The family rule's prefix lengths (`[paths]` in the config; test networks use 32 and 128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathRules {
    /// IPv4 family prefix length (default 16).
    pub ipv4_bits: u8,
    /// IPv6 family prefix length (default 32).
    pub ipv6_bits: u8,
}

impl Default for PathRules {
    fn default() -> Self {
        PathRules {
            ipv4_bits: 16,
            ipv6_bits: 32,
        }
    }
}

/// The set of family prefixes of a relay's (or a node's) endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Families(Vec<(u8, u128)>);

impl Families {
    /// Whether two sets share a prefix: the relays are then in one family.
    pub fn overlaps(&self, other: &Families) -> bool {
        self.0.iter().any(|p| other.0.contains(p))
    }

    /// Whether there are no endpoints at all (a node that does not know its own address).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl PathRules {
    /// Test networks: every address is its own family.
    pub const TEST_NET: PathRules = PathRules {
        ipv4_bits: 32,
        ipv6_bits: 128,
    };

    /// The family prefixes of some endpoints (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn families(&self, endpoints: &[SocketAddr]) -> Families {
        let mut v: Vec<(u8, u128)> = endpoints
            .iter()
            .map(|ep| family_prefix(canonical(ep.ip()), self.ipv4_bits, self.ipv6_bits))
            .collect();
        v.sort_unstable();
        v.dedup();
        Families(v)
    }

    /// Whether two sets of endpoints are in one family (any shared prefix).
    pub fn same_family(&self, a: &[SocketAddr], b: &[SocketAddr]) -> bool {
        self.families(a).overlaps(&self.families(b))
    }

    /// Whether a record may be a hop at `now`: it is a relay, has not expired, and can be
    /// reached — directly, or behind NAT through an introducer it names (a relay whose NAT class
    /// is not known yet names none, and an EXTEND to it would only time out).
    pub fn usable(&self, r: &RelayRecord, now: Millis) -> bool {
        let f = r.fields();
        r.is_relay()
            && f.expires > now / 1000
            && (f.nat.directly_reachable() || !f.introducers.is_empty())
    }

    fn label(&self) -> String {
        format!("/{}", self.ipv4_bits)
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(a),
        },
        v4 => v4,
    }
}

/// What the circuit builder needs to reach and extend to one hop.
#[derive(Clone, PartialEq, Eq)]
pub struct Hop {
    /// Ed25519 identity.
    pub identity: [u8; 32],
    /// X25519 link key.
    pub link_key: [u8; 32],
    /// X25519 onion key (GN-NTOR `B`).
    pub onion_key: [u8; 32],
    /// Endpoints (also what the family rule looks at).
    pub endpoints: Vec<SocketAddr>,
    /// Introducers, for relays behind NAT (13.4).
    pub introducers: Vec<Contact>,
}

impl Hop {
    /// The hop a verified record describes.
    pub fn from_record(r: &RelayRecord) -> Hop {
        let f = r.fields();
        Hop {
            identity: *r.identity(),
            link_key: f.link_key,
            onion_key: f.onion_key,
            endpoints: f.endpoints.clone(),
            introducers: f.introducers.clone(),
        }
    }

    /// The circuit handshake's view of the hop.
    pub fn handshake_target(&self) -> HopTarget {
        HopTarget {
            identity: self.identity,
            onion_key: self.onion_key,
        }
    }
}

impl fmt::Debug for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Hop({} @ {:?})",
            fingerprint(&self.identity),
            self.endpoints
        )
    }
}

/// The last hop of a circuit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Any relay in the view that has all these `FLAG_*` bits (`FLAG_RENDEZVOUS` for rendezvous
    /// points and a service's intro points, `FLAG_DHT` for lookups), chosen uniformly among those
    /// the rules allow.
    Any(u8),
    /// This relay, under every rule: an intro point from a descriptor, or the rendezvous point a
    /// client chose itself. It need not be in the view.
    Relay(Hop),
    /// A rendezvous point chosen by a client, joined by a service (service circuits only). The
    /// rendezvous exception of 9.2 applies: only the middle is kept distinct from it.
    PeerRendezvous(Hop),
}

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathKind {
    /// Guard, middle, target.
    Client(Target),
    /// Guard, layer-2 vanguard, middle, target.
    Service(Target),
    /// Guard, middle: pooled, extended later to an intro point ([`PathContext::extend_stem`]).
    ClientStem,
    /// Guard, layer-2 vanguard, middle: pooled, extended later to a rendezvous point.
    ServiceStem,
}

impl PathKind {
    /// The shape of the resulting path.
    pub fn shape(&self) -> Shape {
        match self {
            PathKind::Client(_) => Shape::Client,
            PathKind::Service(_) => Shape::Service,
            PathKind::ClientStem => Shape::ClientStem,
            PathKind::ServiceStem => Shape::ServiceStem,
        }
    }
}

/// The shape of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// Guard, middle, target.
    Client,
    /// Guard, vanguard, middle, target.
    Service,
    /// Guard, middle.
    ClientStem,
    /// Guard, vanguard, middle.
    ServiceStem,
}

/// What a hop is in its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The first hop, one of the node's guards.
    Guard,
    /// The second hop of a service circuit, one of its layer-2 vanguards.
    Vanguard,
    /// The hop before the target (or the last hop of a stem).
    Middle,
    /// The last hop.
    Target,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Guard => "the guard",
            Role::Vanguard => "the layer-2 vanguard",
            Role::Middle => "the middle",
            Role::Target => "the target",
        }
    }
}

impl Shape {
    /// The roles of its hops, in order.
    pub fn roles(self) -> &'static [Role] {
        match self {
            Shape::Client => &[Role::Guard, Role::Middle, Role::Target],
            Shape::Service => &[Role::Guard, Role::Vanguard, Role::Middle, Role::Target],
            Shape::ClientStem => &[Role::Guard, Role::Middle],
            Shape::ServiceStem => &[Role::Guard, Role::Vanguard, Role::Middle],
        }
    }

    /// Number of hops.
    pub fn hops(self) -> usize {
        self.roles().len()
    }

    fn has_vanguard(self) -> bool {
        matches!(self, Shape::Service | Shape::ServiceStem)
    }
}

/// A selected path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    shape: Shape,
    hops: Vec<Hop>,
    /// The target was a client's rendezvous point (the exception applied).
    peer_rendezvous: bool,
}

impl Path {
    /// Its shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The hops, first (guard) to last.
    pub fn hops(&self) -> &[Hop] {
        &self.hops
    }

    /// The hop with a role, if the shape has it.
    pub fn hop(&self, role: Role) -> Option<&Hop> {
        self.shape
            .roles()
            .iter()
            .position(|r| *r == role)
            .and_then(|i| self.hops.get(i))
    }

    /// The first hop.
    pub fn guard(&self) -> Option<&Hop> {
        self.hops.first()
    }

    /// The last hop.
    pub fn last(&self) -> Option<&Hop> {
        self.hops.last()
    }

    /// Whether the last hop is a client's rendezvous point, held only to the middle's family.
    pub fn is_peer_rendezvous(&self) -> bool {
        self.peer_rendezvous
    }

    /// The hops as the circuit handshake sees them.
    pub fn handshake_targets(&self) -> Vec<HopTarget> {
        self.hops.iter().map(Hop::handshake_target).collect()
    }
}

/// Something a target collides with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// The node itself (its own family).
    ThisNode,
    /// A hop of the path.
    Hop(Role),
}

/// Why no path could be selected. Each names the rule it could not satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// The view does not hold enough family-disjoint relays for the path at all.
    Families {
        /// Relays the path needs from the view in distinct families.
        needed: usize,
        /// The most relays in distinct families (outside the node's own) the view holds, up to
        /// `needed`.
        have: usize,
        /// The rules in force.
        rules: PathRules,
    },
    /// No guard can be used.
    NoGuard {
        /// Guards the node holds (0: none could be chosen).
        guards: usize,
    },
    /// No layer-2 vanguard can be used with the current guard.
    NoVanguard {
        /// Vanguards the node holds (0: none could be chosen, or the caller passed none).
        vanguards: usize,
        /// The rules in force.
        rules: PathRules,
    },
    /// No relay with the target flags satisfies the rules.
    NoTarget {
        /// The `FLAG_*` bits asked for.
        flags: u8,
        /// Usable relays with those flags outside the node's own family.
        in_view: usize,
        /// The rules in force.
        rules: PathRules,
    },
    /// The given target breaks a rule.
    TargetConflict {
        /// What it collides with.
        with: Conflict,
        /// Same identity (otherwise same family).
        same_identity: bool,
        /// The rules in force.
        rules: PathRules,
    },
    /// No middle relay outside the families of the other hops.
    NoMiddle {
        /// The rules in force.
        rules: PathRules,
    },
    /// The request itself is wrong (a caller bug).
    Request(&'static str),
}

fn flag_names(flags: u8) -> String {
    let mut names = Vec::new();
    for (bit, name) in [
        (FLAG_RELAY, "RELAY"),
        (FLAG_DHT, "DHT"),
        (FLAG_RENDEZVOUS, "RENDEZVOUS"),
    ] {
        if flags & bit != 0 {
            names.push(name);
        }
    }
    if names.is_empty() {
        "RELAY".to_string()
    } else {
        names.join("+")
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::Families {
                needed,
                have,
                rules,
            } => write!(
                f,
                "path: need {needed} relays in distinct {} families, view has {have} \
                 (family: IPv4 /{} or IPv6 /{} prefix, outside this node's own)",
                rules.label(),
                rules.ipv4_bits,
                rules.ipv6_bits
            ),
            PathError::NoGuard { guards: 0 } => write!(
                f,
                "path: no guard: the view has no directly reachable relay (nat public or \
                 reachable) outside this node's family"
            ),
            PathError::NoGuard { guards } => write!(
                f,
                "path: no usable guard: none of the {guards} guards has a current relay record \
                 in the view outside this node's family"
            ),
            PathError::NoVanguard {
                vanguards: 0,
                rules,
            } => write!(
                f,
                "path: no layer-2 vanguard: the view has no relay outside the {} families of \
                 the guards and this node",
                rules.label()
            ),
            PathError::NoVanguard { vanguards, rules } => write!(
                f,
                "path: none of the {vanguards} layer-2 vanguards is usable with the current \
                 guard (record not in the view, or in the {} family of the guard or this node)",
                rules.label()
            ),
            PathError::NoTarget {
                flags,
                in_view: 0,
                rules,
            } => write!(
                f,
                "path: the view has no {} relay outside this node's {} family",
                flag_names(*flags),
                rules.label()
            ),
            PathError::NoTarget {
                flags,
                in_view,
                rules,
            } => write!(
                f,
                "path: no {} relay outside the {} families of the other hops ({in_view} in the \
                 view)",
                flag_names(*flags),
                rules.label()
            ),
            PathError::TargetConflict {
                with,
                same_identity,
                rules,
            } => {
                let what = match with {
                    Conflict::ThisNode => "this node",
                    Conflict::Hop(r) => r.name(),
                };
                if *same_identity {
                    write!(f, "path: the target relay is {what}")
                } else {
                    write!(
                        f,
                        "path: the target relay is in the {} family of {what}",
                        rules.label()
                    )
                }
            }
            PathError::NoMiddle { rules } => write!(
                f,
                "path: no middle relay outside the {} families of the other hops and this node",
                rules.label()
            ),
            PathError::Request(what) => write!(f, "path: {what}"),
        }
    }
}

impl std::error::Error for PathError {}

/// A relay with its families, or a given hop.
#[derive(Clone)]
struct Node<'v> {
    identity: [u8; 32],
    fam: Families,
    rec: Option<&'v RelayRecord>,
}

impl Node<'_> {
    fn clashes(&self, other: &Node<'_>) -> bool {
        self.identity == other.identity || self.fam.overlaps(&other.fam)
    }

    fn hop(&self, given: Option<&Hop>) -> Option<Hop> {
        match (self.rec, given) {
            (Some(r), _) => Some(Hop::from_record(r)),
            (None, Some(h)) => Some(h.clone()),
            (None, None) => None,
        }
    }
}

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
    pub now: Millis,
}

impl<'a> PathContext<'a> {
    fn own(&self) -> Families {
        self.rules.families(self.own_endpoints)
    }

    fn node_of(&self, r: &'a RelayRecord) -> Node<'a> {
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
    fn lookup(&self, identity: &[u8; 32], own: &Families) -> Option<Node<'a>> {
        let r = self.view.get(identity)?;
        if !self.rules.usable(r, self.now) {
            return None;
        }
        let n = self.node_of(r);
        (!n.fam.overlaps(own)).then_some(n)
    }

    /// Usable relays outside the node's own family, sorted by identity.
    fn pool(&self, own: &Families) -> Vec<Node<'a>> {
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
fn max_disjoint(pool: &[Node<'_>], cap: usize) -> usize {
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

// ---------------------------------------------------------------------------------------------
// Guards

/// One guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    /// The relay's identity.
    pub identity: [u8; 32],
    /// When it was chosen.
    pub chosen_at: Millis,
    /// When it is replaced.
    pub expires: Millis,
    /// The last time a link to it worked.
    pub last_seen_up: Option<Millis>,
    /// Since when it is unreachable (cleared by [`Guards::mark_up`]).
    pub down_since: Option<Millis>,
    /// Since when its record is absent from the view (or unusable).
    pub missing_since: Option<Millis>,
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
    list: Vec<Guard>,
    dirty: bool,
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
    pub fn mark_down(&mut self, identity: &[u8; 32], now: Millis) {
        if let Some(g) = self.list.iter_mut().find(|g| g.identity == *identity) {
            if g.down_since.is_none() {
                g.down_since = Some(now);
                self.dirty |= !g.temporary;
            }
        }
    }

    /// A link to the guard works.
    pub fn mark_up(&mut self, identity: &[u8; 32], now: Millis) {
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
            .map(|g| (g.identity, g.down_since.is_some()))
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
                .is_some_and(|d| now.saturating_sub(d) > replace_ms)
            {
                Some(GuardDropReason::Down)
            } else if g
                .missing_since
                .is_some_and(|d| now.saturating_sub(d) > replace_ms)
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
            l.iter().any(|g| g.down_since.is_some())
                && l.iter().filter(|g| g.down_since.is_none()).count() < NUM_GUARDS
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
    fn first_hop_node_avoiding<'v>(
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

/// Whether temporary guard `g` stands in for guards that are down: another guard
/// (`snapshot`: identity, marked down) is marked down, fewer than [`NUM_GUARDS`] others are up,
/// and `g` is not down itself.
fn stand_in_needed(snapshot: &[([u8; 32], bool)], g: &Guard) -> bool {
    let others = || snapshot.iter().filter(|(id, _)| *id != g.identity);
    others().any(|(_, down)| *down)
        && others().filter(|(_, down)| !*down).count() < NUM_GUARDS
        && g.down_since.is_none()
}

// ---------------------------------------------------------------------------------------------
// Vanguards

/// One layer-2 vanguard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vanguard {
    /// The relay's identity.
    pub identity: [u8; 32],
    /// When it is replaced.
    pub expires: Millis,
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
        let dropped = before - self.list.len();
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
        while self.list.len() < NUM_L2_GUARDS {
            let ok: Vec<&Node<'_>> = pool
                .iter()
                .filter(|n| {
                    // Like guards, vanguards are directly reachable: then a NATed relay is only
                    // ever a middle between two relays that can reach it by one punch.
                    n.rec.is_some_and(|r| r.fields().nat.directly_reachable())
                        && !guard_nodes.iter().any(|g| g.clashes(n))
                        && !self.contains(&n.identity)
                })
                .collect();
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

    /// The vanguards usable after this guard, sorted by identity.
    fn usable<'v>(&self, ctx: &PathContext<'v>, own: &Families, guard: &Node<'v>) -> Vec<Node<'v>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::MemoryBudget;
    use crate::link::view::Source;
    use crate::wire::record::{NatClass, RecordFields};
    use ed25519_dalek::SigningKey;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const NOW: Millis = 1_800_000_000_000;

    fn rec(seed: u8, eps: &[&str], flags: u8, nat: NatClass) -> RelayRecord {
        let key = SigningKey::from_bytes(&[seed; 32]);
        RelayRecord::sign(
            &key,
            RecordFields {
                flags,
                nat,
                link_key: [seed; 32],
                onion_key: [seed; 32],
                seq: NOW,
                expires: NOW / 1000 + 3600,
                endpoints: eps.iter().map(|e| e.parse().unwrap()).collect(),
                introducers: vec![],
            },
        )
        .unwrap()
    }

    fn view(records: Vec<RelayRecord>) -> RelayView {
        let mut v = RelayView::new([0; 32], (32, 128), MemoryBudget::new(1 << 22));
        for r in records {
            v.insert(r, Source::Itself, NOW).unwrap();
        }
        v
    }

    fn ctx<'a>(v: &'a RelayView, own: &'a [SocketAddr], rules: PathRules) -> PathContext<'a> {
        PathContext {
            view: v,
            rules,
            own_endpoints: own,
            now: NOW,
        }
    }

    #[test]
    fn families_any_endpoint_and_mapped() {
        let r = PathRules::default();
        let a: Vec<SocketAddr> = vec![
            "10.1.2.3:1".parse().unwrap(),
            "[2001:db8::1]:1".parse().unwrap(),
        ];
        let b: Vec<SocketAddr> = vec!["[2001:db8:ffff::9]:1".parse().unwrap()];
        let c: Vec<SocketAddr> = vec!["[::ffff:10.1.9.9]:1".parse().unwrap()];
        let d: Vec<SocketAddr> = vec!["10.2.0.1:1".parse().unwrap()];
        assert!(r.same_family(&a, &b));
        assert!(r.same_family(&a, &c));
        assert!(!r.same_family(&a, &d));
        assert!(!r.same_family(&[], &a));
        assert!(!PathRules::TEST_NET.same_family(&a, &c));
    }

    #[test]
    fn small_network_names_the_rule() {
        let v = view(vec![
            rec(
                1,
                &["10.1.0.1:7"],
                FLAG_RELAY | FLAG_RENDEZVOUS,
                NatClass::Public,
            ),
            rec(
                2,
                &["10.2.0.1:7"],
                FLAG_RELAY | FLAG_RENDEZVOUS,
                NatClass::Public,
            ),
            rec(3, &["10.2.0.2:7"], FLAG_RELAY, NatClass::Public),
        ]);
        let c = ctx(&v, &[], PathRules::default());
        let mut rng = StdRng::seed_from_u64(1);
        let mut g = Guards::new();
        g.maintain(&c, &mut rng);
        let e = c
            .select(
                PathKind::Client(Target::Any(FLAG_RENDEZVOUS)),
                &g,
                None,
                &mut rng,
            )
            .unwrap_err();
        assert_eq!(
            e,
            PathError::Families {
                needed: 3,
                have: 2,
                rules: PathRules::default()
            }
        );
        assert!(e
            .to_string()
            .starts_with("path: need 3 relays in distinct /16 families, view has 2"));
        // Test-net prefixes: every address is its own family.
        let c = ctx(&v, &[], PathRules::TEST_NET);
        let mut g = Guards::new();
        g.maintain(&c, &mut rng);
        let p = c
            .select(
                PathKind::Client(Target::Any(FLAG_RENDEZVOUS)),
                &g,
                None,
                &mut rng,
            )
            .unwrap();
        assert_eq!(p.hops().len(), 3);
        c.check(&p).unwrap();
    }

    #[test]
    fn max_disjoint_with_multi_endpoint_relays() {
        // A bridges families 1 and 2; B is in 1, C in 2: the best is {B, C}, not {A}.
        let v = view(vec![
            rec(
                1,
                &["10.1.0.1:7", "10.2.0.1:7"],
                FLAG_RELAY,
                NatClass::Public,
            ),
            rec(2, &["10.1.0.2:7"], FLAG_RELAY, NatClass::Public),
            rec(3, &["10.2.0.2:7"], FLAG_RELAY, NatClass::Public),
        ]);
        let c = ctx(&v, &[], PathRules::default());
        let pool = c.pool(&Families::default());
        assert_eq!(max_disjoint(&pool, 5), 2);
        assert_eq!(max_disjoint(&pool, 1), 1);
    }

    #[test]
    fn rendezvous_exception() {
        let v = view(vec![
            rec(1, &["10.1.0.1:7"], FLAG_RELAY, NatClass::Public),
            rec(2, &["10.2.0.1:7"], FLAG_RELAY, NatClass::Public),
            rec(3, &["10.3.0.1:7"], FLAG_RELAY, NatClass::Public),
        ]);
        let c = ctx(&v, &[], PathRules::default());
        let mut rng = StdRng::seed_from_u64(2);
        let mut g = Guards::new();
        g.maintain(&c, &mut rng);
        let mut vg = Vanguards::new();
        vg.maintain(&c, &g, &mut rng);
        let guard = *g.first_hop(&c).unwrap().identity();
        // A rendezvous point in the guard's family, even the guard itself, is accepted.
        let rp = Hop::from_record(v.get(&guard).unwrap());
        let p = c
            .select(
                PathKind::Service(Target::PeerRendezvous(rp.clone())),
                &g,
                Some(&vg),
                &mut rng,
            )
            .unwrap();
        assert!(p.is_peer_rendezvous());
        c.check(&p).unwrap();
        // As a client's own target the next guard is taken (here no middle is left for it).
        let e = c
            .select(
                PathKind::Service(Target::Relay(rp)),
                &g,
                Some(&vg),
                &mut rng,
            )
            .unwrap_err();
        assert!(matches!(e, PathError::NoMiddle { .. }), "{e:?}");
    }

    #[test]
    fn target_that_is_our_guard_goes_through_the_other_guard() {
        let v = view(
            (1..=6)
                .map(|i| {
                    rec(
                        i,
                        &[&format!("10.{i}.0.1:7")],
                        FLAG_RELAY | FLAG_RENDEZVOUS,
                        NatClass::Public,
                    )
                })
                .collect(),
        );
        let c = ctx(&v, &[], PathRules::default());
        let mut rng = StdRng::seed_from_u64(7);
        let mut g = Guards::new();
        g.maintain(&c, &mut rng);
        assert_eq!(g.len(), NUM_GUARDS);
        let first = *g.first_hop(&c).unwrap().identity();
        let target = Hop::from_record(v.get(&first).unwrap());
        for _ in 0..20 {
            let p = c
                .select(
                    PathKind::Client(Target::Relay(target.clone())),
                    &g,
                    None,
                    &mut rng,
                )
                .unwrap();
            c.check(&p).unwrap();
            assert_ne!(p.hops()[0].identity, first);
            assert!(g.list().iter().any(|x| x.identity == p.hops()[0].identity));
            assert_eq!(p.hops().last().unwrap().identity, first);
        }
        // Every other path keeps the first guard.
        let p = c
            .select(
                PathKind::Client(Target::Any(FLAG_RENDEZVOUS)),
                &g,
                None,
                &mut rng,
            )
            .unwrap();
        assert_eq!(p.hops()[0].identity, first);
        // With the other guard gone from the view there is no way round: the error says why.
        let other = g
            .list()
            .iter()
            .find(|x| x.identity != first)
            .unwrap()
            .identity;
        let v2 = view(
            (1..=6)
                .map(|i| {
                    rec(
                        i,
                        &[&format!("10.{i}.0.1:7")],
                        FLAG_RELAY | FLAG_RENDEZVOUS,
                        NatClass::Public,
                    )
                })
                .filter(|r| *r.identity() != other)
                .collect(),
        );
        let c2 = ctx(&v2, &[], PathRules::default());
        let e = c2
            .select(PathKind::Client(Target::Relay(target)), &g, None, &mut rng)
            .unwrap_err();
        assert_eq!(e.to_string(), "path: the target relay is the guard");
    }
}
