//! The family rule (9.2): two relays are in one family if any of their endpoints share a prefix.

use std::net::{IpAddr, SocketAddr};

use super::Hop;
use crate::link::view::family_prefix;
use crate::time::Instant;
use crate::wire::record::RelayRecord;

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
pub struct Families(pub(super) Vec<(u8, u128)>);

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
    pub fn usable(&self, r: &RelayRecord, now: Instant) -> bool {
        let f = r.fields();
        r.is_relay()
            && f.expires > now.as_unix_ms() / 1000
            && (f.nat.directly_reachable() || !f.introducers.is_empty())
    }

    pub(super) fn label(&self) -> String {
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

/// A relay with its families, or a given hop.
#[derive(Clone)]
pub(super) struct Node<'v> {
    pub(super) identity: [u8; 32],
    pub(super) fam: Families,
    pub(super) rec: Option<&'v RelayRecord>,
}

impl Node<'_> {
    pub(super) fn clashes(&self, other: &Node<'_>) -> bool {
        self.identity == other.identity || self.fam.overlaps(&other.fam)
    }

    pub(super) fn hop(&self, given: Option<&Hop>) -> Option<Hop> {
        match (self.rec, given) {
            (Some(r), _) => Some(Hop::from_record(r)),
            (None, Some(h)) => Some(h.clone()),
            (None, None) => None,
        }
    }
}
