//! Exit policy records between neighbours (docs/protocol.md 4.4 `EXIT_POLICY`, 5.5): an exit
//! sends its own to each neighbour when a link comes up, and a relay that answers PEX sends the
//! policies of the exits in its answer, so clients learn them where they learn relay records.
//!
//! A policy is kept only while the view holds a relay record with the `EXIT` flag for the same
//! identity: the table can never grow past the view (whose size strangers cannot push), and a
//! made-up identity's policy is dropped after one signature check.

use ipnet::IpNet;
use std::collections::BTreeMap;

use crate::budget::Charge;
use crate::exit::policy::ExitPolicy;
use crate::time::Instant;
use crate::wire::exit_policy::{ExitPolicyRecord, EXIT_POLICY_LEN};
use crate::wire::link::MsgType;
use crate::wire::record::FLAG_EXIT;

use super::{LinkId, LinkLayer};

/// Most policies held (the view is smaller than this in practice).
pub const MAX_EXIT_POLICIES: usize = 1024;
/// EXIT_POLICY messages a neighbour may send per [`EXIT_POLICY_WINDOW_MS`]: a neighbour sends its
/// own at link set-up and at most `1 + PEX_MAX` (4) with each answer to our PEX request, every
/// `PEX_INTERVAL_MS` (10 s): 24 a minute. More are dropped before any parsing or signature check.
pub const EXIT_POLICY_RATE: u32 = 60;
/// The window of [`EXIT_POLICY_RATE`].
pub const EXIT_POLICY_WINDOW_MS: crate::time::Millis = 60_000;
/// What one held policy costs the memory budget (record, key, map node).
const ENTRY_COST: usize = EXIT_POLICY_LEN + 128;

/// The exit policies a node knows, by identity, each charged to the budget.
#[derive(Debug, Default)]
pub(super) struct ExitPolicies {
    map: BTreeMap<[u8; 32], (ExitPolicyRecord, Charge)>,
}

impl ExitPolicies {
    pub(super) fn get(&self, identity: &[u8; 32]) -> Option<&ExitPolicyRecord> {
        self.map.get(identity).map(|(r, _)| r)
    }
}

impl LinkLayer {
    /// Serve as an exit with this policy: a record is signed with our relay record and sent to
    /// neighbours. `None` stops sending it.
    pub fn set_exit_policy(&mut self, now: Instant, policy: Option<(Vec<u16>, Vec<IpNet>)>) {
        if policy.is_none() {
            self.own_policy = None;
        }
        // The old record stays until the new one replaces it: its seq must grow.
        self.exit_policy = policy;
        self.sign_exit_policy(now);
    }

    /// Whether our policy says IPv6 leaves here (it does unless the host cannot forward IPv6):
    /// clients then send IPv6 only to exits that can carry it.
    pub fn set_exit_ipv6(&mut self, now: Instant, on: bool) {
        if self.exit_without_ipv6 == on {
            self.exit_without_ipv6 = !on;
            self.sign_exit_policy(now);
        }
    }

    /// Our own exit policy record, if we serve as an exit.
    pub fn own_exit_policy(&self) -> Option<&ExitPolicyRecord> {
        self.own_policy.as_ref()
    }

    /// The verified, unexpired exit policy of `identity`, if known and bound to a relay record
    /// with the `EXIT` flag in the view.
    pub fn exit_policy(&self, identity: &[u8; 32], now: Instant) -> Option<&ExitPolicyRecord> {
        let r = self.policies.get(identity)?;
        let bound = self
            .view
            .get(identity)
            .is_some_and(|rec| rec.fields().flags & FLAG_EXIT != 0);
        (bound && r.fields().expires > now.as_unix_ms() / 1000).then_some(r)
    }

    /// Exit policies held.
    pub fn exit_policy_count(&self) -> usize {
        self.policies.map.len()
    }

    /// Signs our policy again (with our relay record, so both expire together).
    pub(super) fn sign_exit_policy(&mut self, now: Instant) {
        let Some((ports, nets)) = &self.exit_policy else {
            return;
        };
        let mut fields = ExitPolicy::new(ports, nets).published(now.as_unix_ms());
        if self.exit_without_ipv6 {
            fields.flags &= !crate::wire::exit_policy::EXIT_FLAG_IPV6;
        }
        if let Some(old) = &self.own_policy {
            fields.seq = fields.seq.max(old.fields().seq + 1);
        }
        match ExitPolicyRecord::sign(&self.keys.identity, fields) {
            Ok(r) => {
                self.own_policy = Some(r);
                let ids: Vec<LinkId> = self
                    .links
                    .values()
                    .filter(|l| l.state.ready())
                    .map(|l| l.id)
                    .collect();
                for id in ids {
                    self.send_own_exit_policy(now, id);
                }
            }
            Err(e) => tracing::warn!("cannot sign our exit policy: {e}"),
        }
    }

    /// Sends our exit policy on link `id`, if we serve as an exit.
    pub(super) fn send_own_exit_policy(&mut self, now: Instant, id: LinkId) {
        if let Some(bytes) = self.own_policy.as_ref().map(|r| *r.bytes()) {
            let _ = self.send_frame(now, id, MsgType::ExitPolicy, 0, &bytes);
        }
    }

    /// After a PEX answer: the policies of the exits in it that we hold.
    pub(super) fn send_exit_policies_of(&mut self, now: Instant, id: LinkId, ids: &[[u8; 32]]) {
        let out: Vec<[u8; EXIT_POLICY_LEN]> = ids
            .iter()
            .filter_map(|k| self.exit_policy(k, now).map(|r| *r.bytes()))
            .collect();
        for b in out {
            let _ = self.send_frame(now, id, MsgType::ExitPolicy, 0, &b);
        }
    }

    pub(super) fn on_exit_policy(&mut self, now: Instant, id: LinkId, p: &[u8]) {
        let Some(link) = self.links.get_mut(&id).filter(|l| l.state.ready()) else {
            // Sent right after HELLO; ours may not have arrived first. PEX brings it again.
            self.stats.dropped += 1;
            return;
        };
        // Per link, so one neighbour's flood of fresh records never costs more than this in
        // signature checks, and never stops another neighbour's policies arriving.
        if !link
            .limits
            .exit_policy
            .allow(now, EXIT_POLICY_WINDOW_MS, EXIT_POLICY_RATE)
        {
            self.stats.dropped += 1;
            return;
        }
        let (Some(identity), Some(seq)) = (
            p.get(8..40).and_then(|b| <[u8; 32]>::try_from(b).ok()),
            p.get(40..48)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes),
        ) else {
            self.malformed(now, id, "EXIT_POLICY length");
            return;
        };
        // Cheap checks before the signature: an exit we know, and news.
        let is_exit = self
            .view
            .get(&identity)
            .is_some_and(|r| r.fields().flags & FLAG_EXIT != 0);
        let held = self.policies.get(&identity).map(|r| r.fields().seq);
        if !is_exit || held.is_some_and(|s| s >= seq) {
            self.stats.dropped += 1;
            return;
        }
        let r = match ExitPolicyRecord::parse(p, now.as_unix_ms()) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("exit policy refused: {e}");
                self.stats.bad_records += 1;
                return;
            }
        };
        if held.is_none() {
            self.policies.map.retain(|k, (r, _)| {
                self.view
                    .get(k)
                    .is_some_and(|rec| rec.fields().flags & FLAG_EXIT != 0)
                    && r.fields().expires > now.as_unix_ms() / 1000
            });
            if self.policies.map.len() >= MAX_EXIT_POLICIES {
                self.stats.dropped += 1;
                return;
            }
        }
        let charge = match self.policies.map.remove(&identity) {
            Some((_, c)) => c,
            None => match self.budget.try_charge(ENTRY_COST) {
                Some(c) => c,
                None => {
                    self.stats.dropped += 1;
                    return;
                }
            },
        };
        self.policies.map.insert(identity, (r, charge));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::MemoryBudget;
    use crate::crypto::Randomness;
    use crate::link::layer::{LinkConfig, LinkKeys};
    use crate::link::view::Source;
    use crate::wire::exit_policy::ExitPolicyFields;
    use crate::wire::record::{NatClass, RecordFields, RelayRecord, FLAG_RELAY};
    use ed25519_dalek::SigningKey;

    const NOW: Instant = Instant::from_unix_ms(1_767_225_600_000);

    fn layer(budget: MemoryBudget) -> LinkLayer {
        LinkLayer::new(
            LinkConfig::default(),
            LinkKeys {
                identity: SigningKey::from_bytes(&[9; 32]),
                link: x25519_dalek::StaticSecret::from([9; 32]),
                onion_public: [9; 32],
            },
            budget,
            Randomness::simulated([4; 32]),
            NOW,
        )
    }

    fn record(n: u8, flags: u8) -> RelayRecord {
        RelayRecord::sign(
            &SigningKey::from_bytes(&[n; 32]),
            RecordFields {
                flags,
                nat: NatClass::Public,
                link_key: [n; 32],
                onion_key: [n; 32],
                seq: NOW.as_unix_ms(),
                expires: NOW.as_unix_ms() / 1000 + 3600,
                endpoints: vec![format!("198.18.{n}.1:7412").parse().unwrap()],
                introducers: vec![],
            },
        )
        .unwrap()
    }

    fn policy(n: u8, ports: &[u16], seq: u64, expires_s: u64) -> ExitPolicyRecord {
        ExitPolicyRecord::sign(
            &SigningKey::from_bytes(&[n; 32]),
            ExitPolicyFields {
                flags: 3,
                ports: ports.to_vec(),
                networks: vec![],
                seq,
                expires: expires_s,
            },
        )
        .unwrap()
    }

    /// A link whose HELLO arrived (the handler only needs one that is ready).
    fn ready_link(l: &mut LinkLayer) -> LinkId {
        ready_link_from(l, 5)
    }

    fn ready_link_from(l: &mut LinkLayer, n: u8) -> LinkId {
        let id = l
            .new_link(
                NOW,
                [n; 32],
                format!("198.18.0.{n}:7412").parse().unwrap(),
                true,
            )
            .unwrap();
        l.links.get_mut(&id).unwrap().state.on_hello_received();
        id
    }

    #[test]
    fn policies_bind_to_exit_records_and_the_newest_wins() {
        let budget = MemoryBudget::new(1 << 20);
        let mut l = layer(budget.clone());
        let id = ready_link(&mut l);
        let exp = NOW.as_unix_ms() / 1000 + 3600;
        let p1 = policy(1, &[80], NOW.as_unix_ms(), exp);
        // Unknown identity: dropped, nothing charged.
        let before = budget.used();
        l.on_exit_policy(NOW, id, p1.bytes());
        assert_eq!(l.exit_policy_count(), 0);
        // A relay without the EXIT flag: its policy is not kept either.
        l.view
            .insert(record(1, FLAG_RELAY), Source::Itself, NOW)
            .unwrap();
        l.on_exit_policy(NOW, id, p1.bytes());
        assert_eq!(l.exit_policy_count(), 0);
        l.view
            .insert(record(2, FLAG_RELAY | FLAG_EXIT), Source::Itself, NOW)
            .unwrap();
        let p2 = policy(2, &[80], NOW.as_unix_ms(), exp);
        l.on_exit_policy(NOW, id, p2.bytes());
        assert_eq!(l.exit_policy(&[0; 32], NOW), None);
        let key2 = *p2.identity();
        assert_eq!(l.exit_policy(&key2, NOW), Some(&p2));
        assert!(budget.used() >= before + ENTRY_COST);
        // An older or equal seq does not replace it; a newer one does.
        let old = policy(2, &[8080], NOW.as_unix_ms() - 1, exp);
        l.on_exit_policy(NOW, id, old.bytes());
        assert_eq!(l.exit_policy(&key2, NOW), Some(&p2));
        let new = policy(2, &[8080], NOW.as_unix_ms() + 1, exp);
        l.on_exit_policy(NOW, id, new.bytes());
        assert_eq!(l.exit_policy(&key2, NOW), Some(&new));
        // A bad signature is refused.
        let mut bad = *policy(2, &[443], NOW.as_unix_ms() + 2, exp).bytes();
        bad[EXIT_POLICY_LEN - 1] ^= 1;
        l.on_exit_policy(NOW, id, &bad);
        assert_eq!(l.exit_policy(&key2, NOW), Some(&new));
        // Expired: no longer returned.
        assert_eq!(l.exit_policy(&key2, NOW + 3_600_000), None);
        // Once the relay record is gone the policy is unbound.
        l.view.remove(&key2);
        assert_eq!(l.exit_policy(&key2, NOW), None);
    }

    #[test]
    fn an_exit_signs_its_policy_and_a_full_budget_refuses_others() {
        let mut l = layer(MemoryBudget::new(1 << 20));
        l.set_exit_policy(NOW, Some((vec![443, 80], vec![])));
        let own = l.own_exit_policy().unwrap();
        assert_eq!(own.fields().ports, vec![80, 443]);
        assert_eq!(
            own.identity(),
            &SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes()
        );
        let seq = own.fields().seq;
        l.set_exit_policy(NOW, Some((vec![80], vec![])));
        assert!(l.own_exit_policy().unwrap().fields().seq > seq);
        // A host that cannot forward IPv6 does not publish it (clients then keep IPv6 away).
        use crate::wire::exit_policy::{EXIT_FLAG_IPV4, EXIT_FLAG_IPV6};
        assert_eq!(
            l.own_exit_policy().unwrap().fields().flags,
            EXIT_FLAG_IPV4 | EXIT_FLAG_IPV6
        );
        l.set_exit_ipv6(NOW, false);
        assert_eq!(l.own_exit_policy().unwrap().fields().flags, EXIT_FLAG_IPV4);

        // A full budget: the policy is refused, not held uncharged.
        let budget = MemoryBudget::new(1 << 20);
        let mut l = layer(budget.clone());
        let id = ready_link(&mut l);
        l.view
            .insert(record(2, FLAG_RELAY | FLAG_EXIT), Source::Itself, NOW)
            .unwrap();
        let _rest = budget.try_charge(budget.limit() - budget.used()).unwrap();
        let p2 = policy(2, &[80], NOW.as_unix_ms(), NOW.as_unix_ms() / 1000 + 3600);
        l.on_exit_policy(NOW, id, p2.bytes());
        assert_eq!(l.exit_policy_count(), 0);
        drop(_rest);
        l.on_exit_policy(NOW, id, p2.bytes());
        assert_eq!(l.exit_policy_count(), 1);
    }

    /// One neighbour sending fresh policies as fast as it can: past the per-link rate they are
    /// dropped unparsed (the held one stays), another neighbour's still arrive, and the first
    /// neighbour's are taken again in the next window.
    #[test]
    fn exit_policies_are_rate_limited_per_link() {
        let mut l = layer(MemoryBudget::new(1 << 20));
        let flood = ready_link_from(&mut l, 5);
        let other = ready_link_from(&mut l, 6);
        for n in [2, 3] {
            l.view
                .insert(record(n, FLAG_RELAY | FLAG_EXIT), Source::Itself, NOW)
                .unwrap();
        }
        let exp = NOW.as_unix_ms() / 1000 + 3600;
        let key2 = SigningKey::from_bytes(&[2; 32]).verifying_key().to_bytes();
        let mut last = 0;
        for i in 0..u64::from(EXIT_POLICY_RATE) + 20 {
            let seq = NOW.as_unix_ms() + i;
            let before = l.stats.dropped;
            l.on_exit_policy(NOW, flood, policy(2, &[80], seq, exp).bytes());
            if l.stats.dropped == before {
                last = seq;
            }
        }
        assert_eq!(last, NOW.as_unix_ms() + u64::from(EXIT_POLICY_RATE) - 1);
        assert_eq!(l.stats.dropped, 20);
        assert_eq!(l.exit_policy(&key2, NOW).unwrap().fields().seq, last);
        // Another neighbour is not held back by the flood.
        let p3 = policy(3, &[443], NOW.as_unix_ms(), exp);
        l.on_exit_policy(NOW, other, p3.bytes());
        assert_eq!(l.exit_policy(p3.identity(), NOW), Some(&p3));
        // The next window takes the flooding link's news again.
        let later = NOW + EXIT_POLICY_WINDOW_MS;
        let p = policy(2, &[80], last + 1, exp);
        l.on_exit_policy(later, flood, p.bytes());
        assert_eq!(l.exit_policy(&key2, later), Some(&p));
    }
}
