//! Exit policy records between neighbours (docs/protocol.md 4.4 `EXIT_POLICY`, 5.5): an exit
//! sends its own to each neighbour when a link comes up, and a relay that answers PEX sends the
//! policies of the exits in its answer, so clients learn them where they learn relay records.
//! Exits whose policy did not come that way (known from a DHT sample) are asked of relay
//! neighbours with EXIT_POLICY_REQUEST, all of them, never only one about to be used.
//!
//! A policy is kept only while the view holds a relay record with the `EXIT` flag for the same
//! identity: the table can never grow past the view (whose size strangers cannot push), and a
//! made-up identity's policy is dropped after one signature check.

use ipnet::IpNet;
use rand::seq::SliceRandom;
use std::collections::BTreeMap;

use crate::budget::Charge;
use crate::exit::policy::ExitPolicy;
use crate::time::Instant;
use crate::wire::exit_policy::{
    emit_policy_request, parse_policy_request, ExitPolicyRecord, EXIT_POLICY_LEN,
    EXIT_POLICY_REQUEST_MAX,
};
use crate::wire::link::MsgType;
use crate::wire::record::FLAG_EXIT;

use super::discovery::PEX_INTERVAL_MS;
use super::{LinkId, LinkLayer};

/// Most policies held (the view is smaller than this in practice).
pub const MAX_EXIT_POLICIES: usize = 1024;
/// EXIT_POLICY messages a neighbour may send per [`EXIT_POLICY_WINDOW_MS`]: a neighbour sends its
/// own at link set-up and at most `1 + PEX_MAX` (4) with each answer to our PEX request, every
/// `PEX_INTERVAL_MS` (10 s), and at most [`EXIT_POLICY_REQUEST_MAX`] (4) answering our
/// EXIT_POLICY_REQUEST, asked as often: 48 a minute. More are dropped before any parsing or
/// signature check.
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

    /// Exits in the view whose policy we lack (known only from the DHT, or whose copy was
    /// lost): at most [`EXIT_POLICY_REQUEST_MAX`], a random few of them, so each is asked for in
    /// time however many there are. Every exit that lacks one, never only one we mean to use.
    pub(super) fn exit_policies_wanted(&mut self, now: Instant) -> Vec<[u8; 32]> {
        let own = self.own_policy.as_ref().map(|r| *r.identity());
        let missing: Vec<[u8; 32]> = self
            .view
            .iter()
            .filter(|r| r.fields().flags & FLAG_EXIT != 0)
            .map(|r| *r.identity())
            .filter(|k| Some(*k) != own && self.exit_policy(k, now).is_none())
            .collect();
        missing
            .choose_multiple(&mut self.rng, EXIT_POLICY_REQUEST_MAX)
            .copied()
            .collect()
    }

    /// Asks the relay on link `id`, every `PEX_INTERVAL_MS`, for the policies of exits we lack
    /// (4.4 EXIT_POLICY_REQUEST). A neighbour, never the circuit to an exit: see decisions.md.
    pub(super) fn ask_exit_policies(&mut self, now: Instant, id: LinkId) {
        let due = self.links.get(&id).is_some_and(|l| {
            l.is_relay
                && l.state.ready()
                && now.saturating_since(l.last_policy_ask) >= PEX_INTERVAL_MS
        });
        if !due {
            return;
        }
        if let Some(l) = self.links.get_mut(&id) {
            l.last_policy_ask = now;
        }
        let want = self.exit_policies_wanted(now);
        if let Some(p) = emit_policy_request(&want) {
            self.stats.exit_policy_asks += 1;
            let _ = self.send_frame(now, id, MsgType::ExitPolicyRequest, 0, &p);
        }
    }

    /// The policies we hold of these exits (ours too, if named), for an EXIT_POLICY_REQUEST.
    pub(super) fn exit_policy_answers(
        &self,
        now: Instant,
        ids: &[[u8; 32]],
    ) -> Vec<[u8; EXIT_POLICY_LEN]> {
        ids.iter()
            .filter_map(|k| {
                self.own_policy
                    .as_ref()
                    .filter(|r| r.identity() == k)
                    .or_else(|| self.exit_policy(k, now))
                    .map(|r| *r.bytes())
            })
            .collect()
    }

    pub(super) fn on_exit_policy_request(&mut self, now: Instant, id: LinkId, p: &[u8]) {
        let ids = match parse_policy_request(p) {
            Ok(ids) => ids,
            Err(e) => {
                self.malformed(now, id, &format!("EXIT_POLICY_REQUEST: {e}"));
                return;
            }
        };
        let relay = self.cfg.relay;
        let Some(l) = self.links.get_mut(&id) else {
            return;
        };
        // Relays answer, at most once per half interval per link: an honest asker sends one
        // per interval, and an answer is at most 4 records we already hold (no signing).
        if !relay
            || (l.policy_served != Instant::ZERO
                && now.saturating_since(l.policy_served) < PEX_INTERVAL_MS / 2)
        {
            self.stats.dropped += 1;
            return;
        }
        l.policy_served = now;
        for b in self.exit_policy_answers(now, &ids) {
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
        layer_of(budget, 9)
    }

    fn layer_of(budget: MemoryBudget, n: u8) -> LinkLayer {
        LinkLayer::new(
            LinkConfig::default(),
            LinkKeys {
                identity: SigningKey::from_bytes(&[n; 32]),
                link: x25519_dalek::StaticSecret::from([n; 32]),
                onion_public: [n; 32],
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

    /// Exits known only from a DHT sample: the client asks a neighbouring relay for the
    /// policies of all of them (not of one it means to use), through the link message, and
    /// takes the answer as any EXIT_POLICY; the relay answers once per half interval per link.
    #[test]
    fn exits_learned_from_the_dht_get_their_policy_from_a_neighbour() {
        use crate::wire::exit_policy::emit_policy_request;
        use crate::wire::link::{emit, LINK_FRAME_MAX};
        let exp = NOW.as_unix_ms() / 1000 + 3600;
        let key = |n: u8| SigningKey::from_bytes(&[n; 32]).verifying_key().to_bytes();
        // Relay 5 holds exit 2's record and policy (from its link to 2, or PEX); not exit 3's.
        let mut relay = layer_of(MemoryBudget::new(1 << 20), 5);
        let from_exit = ready_link_from(&mut relay, 2);
        for n in [2, 3] {
            relay
                .view
                .insert(record(n, FLAG_RELAY | FLAG_EXIT), Source::Itself, NOW)
                .unwrap();
        }
        let p2 = policy(2, &[80, 443], NOW.as_unix_ms(), exp);
        relay.on_exit_policy(NOW, from_exit, p2.bytes());
        assert_eq!(relay.exit_policy(&key(2), NOW), Some(&p2));

        // The client learns exits 2 and 3 from a DHT sample only.
        let mut client = layer_of(MemoryBudget::new(1 << 20), 8);
        let to_relay = ready_link_from(&mut client, 5);
        let recs = vec![
            record(2, FLAG_RELAY | FLAG_EXIT),
            record(3, FLAG_RELAY | FLAG_EXIT),
        ];
        assert_eq!(client.add_dht_records(recs, [7; 32], NOW), 2);
        assert_eq!(client.exit_policy(&key(2), NOW), None);
        let mut want = client.exit_policies_wanted(NOW);
        want.sort();
        assert_eq!(want, vec![key(2), key(3)]);

        // Asked only of a relay, once per interval.
        client.ask_exit_policies(NOW, to_relay);
        assert_eq!(client.stats.exit_policy_asks, 0, "the peer is no relay yet");
        client.links.get_mut(&to_relay).unwrap().is_relay = true;
        client.ask_exit_policies(NOW, to_relay);
        client.ask_exit_policies(NOW + 1_000, to_relay);
        assert_eq!(client.stats.exit_policy_asks, 1);

        // The request through the relay's frame dispatch.
        let at_relay = ready_link_from(&mut relay, 8);
        let mut frame = [0u8; LINK_FRAME_MAX];
        let payload = emit_policy_request(&want).unwrap();
        let n = emit(&mut frame, MsgType::ExitPolicyRequest, 0, &payload).unwrap();
        relay.on_frame(NOW, at_relay, &frame[..n]);
        assert_eq!(relay.links[&at_relay].policy_served, NOW);
        let dropped = relay.stats.dropped;
        relay.on_frame(NOW + 1_000, at_relay, &frame[..n]);
        assert_eq!(
            relay.stats.dropped,
            dropped + 1,
            "a second request too soon"
        );
        let answers = relay.exit_policy_answers(NOW, &want);
        assert_eq!(answers.len(), 1, "the relay holds only exit 2's");
        for a in &answers {
            client.on_exit_policy(NOW, to_relay, a);
        }
        assert_eq!(client.exit_policy(&key(2), NOW), Some(&p2));
        // Exit 3's is still wanted, and asked for in the next interval.
        assert_eq!(client.exit_policies_wanted(NOW), vec![key(3)]);
        client.ask_exit_policies(NOW + PEX_INTERVAL_MS, to_relay);
        assert_eq!(client.stats.exit_policy_asks, 2);

        // A count that does not match the identities is malformed (within the frame's bounds).
        let mut bad = payload[..2 + 32].to_vec();
        bad[0] = 2;
        let n = emit(&mut frame, MsgType::ExitPolicyRequest, 0, &bad).unwrap();
        assert_eq!(relay.links[&at_relay].malformed, 0);
        relay.on_frame(NOW + PEX_INTERVAL_MS, at_relay, &frame[..n]);
        assert_eq!(relay.links[&at_relay].malformed, 1);
    }
}
