//! Choosing an exit for a destination (issue #23 item 4; docs/decisions.md "Exits"): policy match
//! on the published policy, the usual path rules (no exit in the family of another hop, the guard
//! among them), a pinned exit, and one exit per destination for a while.

use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use super::policy::{refused_by_default, PROTO_TCP, PROTO_UDP};
use crate::circuit::path::PathRules;
use crate::time::{Instant, Millis};
use crate::wire::exit_policy::{
    ExitPolicyFields, ExitPolicyRecord, EXIT_FLAG_IPV4, EXIT_FLAG_IPV6,
};
use crate::wire::record::{RelayRecord, FLAG_EXIT};

/// How long a destination keeps its exit, so a site does not see one user arrive from many
/// addresses (Tor keeps a stream's circuit for 10 minutes too).
pub const EXIT_STICKY_MS: Millis = 10 * 60 * 1000;
/// Most remembered (isolation group, destination) pairs; the oldest go first.
pub const EXIT_STICKY_MAX: usize = 4096;

/// An exit as the client knows it: its relay record and its policy, signed by one identity.
#[derive(Debug, Clone, Copy)]
pub struct ExitCandidate<'a> {
    /// The relay record (with the `EXIT` flag).
    pub record: &'a RelayRecord,
    /// Its exit policy record.
    pub policy: &'a ExitPolicyRecord,
}

/// A destination as an exit sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Destination {
    /// The address (a name is resolved at the exit first; the query's destination is the exit's
    /// resolver).
    pub ip: IpAddr,
    /// `PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
    /// The destination port.
    pub port: u16,
}

/// Why no exit was chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChooseError {
    /// The pinned exit is unknown, unusable, or its policy refuses the destination.
    #[error("the pinned exit does not carry this destination")]
    Pinned,
    /// No known exit's policy lets the destination out.
    #[error("no exit lets this destination out")]
    NoExit,
}

/// Whether a published policy lets `d` out: the family, the port, and either the public internet
/// or one of the listed networks. (The exit's own networks are not published; it refuses those
/// itself, at once.)
pub fn policy_allows(p: &ExitPolicyFields, d: &Destination) -> bool {
    let family = match d.ip {
        IpAddr::V4(_) => EXIT_FLAG_IPV4,
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => EXIT_FLAG_IPV4,
        IpAddr::V6(_) => EXIT_FLAG_IPV6,
    };
    p.flags & family != 0
        && (d.proto == PROTO_TCP || d.proto == PROTO_UDP)
        && p.ports.binary_search(&d.port).is_ok()
        && (p.networks.iter().any(|n| n.contains(&d.ip)) || !refused_by_default(d.ip))
}

/// The exits that may carry `d` on a path whose other hops (the guard among them) and the client
/// itself have the endpoints in `avoid`.
pub fn eligible<'a>(
    candidates: &[ExitCandidate<'a>],
    d: &Destination,
    rules: &PathRules,
    avoid: &[&[SocketAddr]],
    now: Instant,
) -> Vec<ExitCandidate<'a>> {
    candidates
        .iter()
        .filter(|c| {
            c.record.fields().flags & FLAG_EXIT != 0
                && c.record.identity() == c.policy.identity()
                && c.policy.fields().expires > now.as_unix_ms() / 1000
                && rules.usable(c.record, now)
                && policy_allows(c.policy.fields(), d)
                && !avoid
                    .iter()
                    .any(|eps| rules.same_family(&c.record.fields().endpoints, eps))
        })
        .copied()
        .collect()
}

/// Chooses an exit for `d`: the pinned one if it qualifies, else one of the eligible at random.
pub fn choose<'a, R: Rng>(
    candidates: &[ExitCandidate<'a>],
    d: &Destination,
    rules: &PathRules,
    avoid: &[&[SocketAddr]],
    pin: Option<&[u8; 32]>,
    now: Instant,
    rng: &mut R,
) -> Result<&'a RelayRecord, ChooseError> {
    let ok = eligible(candidates, d, rules, avoid, now);
    match pin {
        Some(key) => ok
            .iter()
            .find(|c| c.record.identity() == key)
            .map(|c| c.record)
            .ok_or(ChooseError::Pinned),
        None => ok.choose(rng).map(|c| c.record).ok_or(ChooseError::NoExit),
    }
}

/// Which exit each (isolation group, destination) used last, for [`EXIT_STICKY_MS`]. Bounded: at
/// [`EXIT_STICKY_MAX`] the oldest entry goes.
#[derive(Debug, Default)]
pub struct StickyExits {
    map: BTreeMap<(u32, IpAddr), ([u8; 32], Instant)>,
}

impl StickyExits {
    /// The exit `group` used for `ip`, if still fresh.
    pub fn get(&self, group: u32, ip: IpAddr, now: Instant) -> Option<[u8; 32]> {
        self.map
            .get(&(group, ip))
            .filter(|(_, at)| now.saturating_since(*at) < EXIT_STICKY_MS)
            .map(|(key, _)| *key)
    }

    /// Marks a fresh entry as used now (no sweep, no allocation: once per packet).
    pub fn touch(&mut self, group: u32, ip: IpAddr, now: Instant) {
        if let Some((_, at)) = self.map.get_mut(&(group, ip)) {
            if now.saturating_since(*at) < EXIT_STICKY_MS {
                *at = now;
            }
        }
    }

    /// Remembers (or refreshes) `exit` for `group` and `ip`.
    pub fn remember(&mut self, group: u32, ip: IpAddr, exit: [u8; 32], now: Instant) {
        self.map
            .retain(|_, (_, at)| now.saturating_since(*at) < EXIT_STICKY_MS);
        if self.map.len() >= EXIT_STICKY_MAX && !self.map.contains_key(&(group, ip)) {
            if let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| *k)
            {
                self.map.remove(&oldest);
            }
        }
        self.map.insert((group, ip), (exit, now));
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::record::{NatClass, RecordFields, FLAG_RELAY};
    use ed25519_dalek::SigningKey;
    use rand::SeedableRng;

    const NOW: Instant = Instant::from_unix_ms(1_767_225_600_000);

    fn exit(
        n: u8,
        ip: &str,
        flags: u8,
        ports: &[u16],
        nets: &[&str],
    ) -> (RelayRecord, ExitPolicyRecord) {
        let key = SigningKey::from_bytes(&[n; 32]);
        let record = RelayRecord::sign(
            &key,
            RecordFields {
                flags,
                nat: NatClass::Public,
                link_key: [n; 32],
                onion_key: [n; 32],
                seq: NOW.as_unix_ms(),
                expires: NOW.as_unix_ms() / 1000 + 3600,
                endpoints: vec![format!("{ip}:7412").parse().unwrap()],
                introducers: vec![],
            },
        )
        .unwrap();
        let policy = ExitPolicyRecord::sign(
            &key,
            ExitPolicyFields {
                flags: EXIT_FLAG_IPV4 | EXIT_FLAG_IPV6,
                ports: ports.to_vec(),
                networks: nets.iter().map(|s| s.parse().unwrap()).collect(),
                seq: NOW.as_unix_ms(),
                expires: NOW.as_unix_ms() / 1000 + 3600,
            },
        )
        .unwrap();
        (record, policy)
    }

    fn dst(ip: &str, port: u16) -> Destination {
        Destination {
            ip: ip.parse().unwrap(),
            proto: PROTO_TCP,
            port,
        }
    }

    #[test]
    fn policy_match_family_rule_and_pin() {
        let exits = [
            exit(
                1,
                "198.18.0.1",
                FLAG_RELAY | FLAG_EXIT,
                &[80, 443],
                &["198.19.250.0/24"],
            ),
            exit(2, "198.18.0.2", FLAG_RELAY | FLAG_EXIT, &[443], &[]),
            // Not flagged as an exit: its policy is ignored.
            exit(
                3,
                "198.18.0.3",
                FLAG_RELAY,
                &[80, 443],
                &["198.19.250.0/24"],
            ),
        ];
        let c: Vec<ExitCandidate> = exits
            .iter()
            .map(|(record, policy)| ExitCandidate { record, policy })
            .collect();
        let rules = PathRules::TEST_NET;
        let ids = |v: Vec<ExitCandidate>| -> Vec<u8> {
            v.iter().map(|c| c.record.fields().link_key[0]).collect()
        };
        assert_eq!(
            ids(eligible(&c, &dst("198.19.250.2", 80), &rules, &[], NOW)),
            vec![1]
        );
        assert_eq!(
            ids(eligible(&c, &dst("1.1.1.1", 443), &rules, &[], NOW)),
            vec![1, 2]
        );
        assert!(eligible(&c, &dst("10.0.0.1", 443), &rules, &[], NOW).is_empty());
        assert!(eligible(&c, &dst("1.1.1.1", 22), &rules, &[], NOW).is_empty());
        // Exit 1 shares a family with the guard: not eligible.
        let guard: Vec<SocketAddr> = vec!["198.18.0.1:9000".parse().unwrap()];
        assert_eq!(
            ids(eligible(&c, &dst("1.1.1.1", 443), &rules, &[&guard], NOW)),
            vec![2]
        );
        // With the default /16 family rule every relay here is in the guard's family.
        assert!(eligible(
            &c,
            &dst("1.1.1.1", 443),
            &PathRules::default(),
            &[&guard],
            NOW
        )
        .is_empty());
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let pin = *exits[1].0.identity();
        assert_eq!(
            choose(
                &c,
                &dst("1.1.1.1", 443),
                &rules,
                &[],
                Some(&pin),
                NOW,
                &mut rng
            )
            .unwrap()
            .identity(),
            &pin
        );
        assert_eq!(
            choose(
                &c,
                &dst("1.1.1.1", 80),
                &rules,
                &[],
                Some(&pin),
                NOW,
                &mut rng
            ),
            Err(ChooseError::Pinned)
        );
        assert_eq!(
            choose(&c, &dst("1.1.1.1", 25), &rules, &[], None, NOW, &mut rng),
            Err(ChooseError::NoExit)
        );
        // Expired policies do not count.
        assert!(eligible(&c, &dst("1.1.1.1", 443), &rules, &[], NOW + 7_200_000).is_empty());
    }

    #[test]
    fn a_destination_keeps_its_exit_for_a_while() {
        let mut s = StickyExits::default();
        let ip: IpAddr = "1.1.1.1".parse().unwrap();
        s.remember(1, ip, [7; 32], NOW);
        assert_eq!(s.get(1, ip, NOW + 60_000), Some([7; 32]));
        // Another isolation group does not share it.
        assert_eq!(s.get(2, ip, NOW), None);
        assert_eq!(s.get(1, ip, NOW + EXIT_STICKY_MS), None);
        // Use keeps it.
        s.touch(1, ip, NOW + EXIT_STICKY_MS - 1);
        assert_eq!(s.get(1, ip, NOW + EXIT_STICKY_MS + 60_000), Some([7; 32]));
        for i in 0..EXIT_STICKY_MAX as u32 + 10 {
            s.remember(i, ip, [1; 32], NOW + u64::from(i));
        }
        assert_eq!(s.len(), EXIT_STICKY_MAX);
    }
}
