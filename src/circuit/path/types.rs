//! What a path is: its hops, its target and shape, and why one could not be selected.

use std::fmt;
use std::net::SocketAddr;

use super::PathRules;
use crate::circuit::handshake::HopTarget;
use crate::crypto::keys::fingerprint;
use crate::wire::record::{Contact, RelayRecord, FLAG_DHT, FLAG_RELAY, FLAG_RENDEZVOUS};

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
    /// Guard, middle: pooled, extended later to an intro point
    /// ([`PathContext::extend_stem`](super::PathContext::extend_stem)).
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

    pub(super) fn has_vanguard(self) -> bool {
        matches!(self, Shape::Service | Shape::ServiceStem)
    }
}

/// A selected path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub(super) shape: Shape,
    pub(super) hops: Vec<Hop>,
    /// The target was a client's rendezvous point (the exception applied).
    pub(super) peer_rendezvous: bool,
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
