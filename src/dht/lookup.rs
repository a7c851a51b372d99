//! The iterative S/Kademlia lookup (docs/protocol.md section 12.3) as a sans-IO state machine.
//!
//! A [`Lookup`] is started with the closest contacts of the own routing table, dealt round-robin
//! to `DHT_DISJOINT_PATHS` paths. Each path is an ordinary iterative Kademlia lookup with its own
//! shortlist of `DHT_K` and up to `DHT_ALPHA` requests in flight; a node queried or queued by one
//! path is never used by another (one shared claimed set), so the paths are node-disjoint and one
//! hostile node can mislead at most one of them. The driver feeds replies, failures and time in
//! (`on_reply`, `on_junk`, `on_timer`) and takes requests out (`poll`); the result is the union
//! over paths, cut to `DHT_RESULT_PER_PREFIX` node per family prefix, plus for FIND_VALUE every
//! record that passed the storage checks (highest version per signer).
//!
//! A node that answers junk (wrong message type, unsorted or duplicate contacts, itself as a
//! contact, a record that fails its checks or is stored under another key) is penalised: its
//! answer is ignored, it counts as failed and it is listed in [`LookupResult::penalised`] for the
//! caller's routing table. Nothing here trusts a peer's clock or keeps anything after the result.

use std::collections::{BTreeMap, BTreeSet};

use super::descriptor::DESC_MAX_SIGNERS_PER_INDEX;
use super::message::{DhtMessage, RecordKind};
use super::routing::{prefix_of, Prefix};
use super::store::checked_key;
use super::{
    distance, node_id, Key, DHT_ALPHA, DHT_DISJOINT_PATHS, DHT_K, DHT_LOOKUP_TIMEOUT_S,
    DHT_MAX_STEPS, DHT_RESULT_PER_PREFIX, DHT_RPC_TIMEOUT_MS, DHT_VALUE_GRACE_MS,
};
use crate::time::{Instant, Millis};
use crate::wire::record::Contact;

/// What a lookup looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The closest nodes (FIND_NODE).
    Nodes,
    /// The records of a kind stored under the key (FIND_VALUE).
    Value(RecordKind),
}

/// Who runs the lookup and how it groups addresses.
#[derive(Debug, Clone, Copy)]
pub struct LookupConfig {
    /// The running node's identity (never queried).
    pub own_identity: [u8; 32],
    /// Family-prefix lengths (IPv4, IPv6), 9.2.
    pub prefix_bits: (u8, u8),
}

/// A request the driver must send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Identifies the request in `on_reply`, `on_junk`.
    pub query: u64,
    /// Where to send it.
    pub to: Contact,
    /// The contact that named `to` in its answer (`None` for a seed): linked to it, so it can
    /// introduce us when `to` sits behind NAT and its record is not in our view.
    pub via: Option<Contact>,
    /// What to send.
    pub message: DhtMessage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Queued,
    InFlight,
    Answered,
    Failed,
}

#[derive(Debug)]
struct Cand {
    contact: Contact,
    via: Option<Contact>,
    dist: Key,
    state: State,
}

#[derive(Debug, Default)]
struct Path {
    cands: Vec<Cand>,
    queries: usize,
    in_flight: usize,
    done: bool,
}

impl Path {
    fn add(&mut self, contact: Contact, via: Option<Contact>, target: &Key) {
        let dist = distance(&node_id(&contact.identity), target);
        let at = self.cands.partition_point(|c| c.dist < dist);
        self.cands.insert(
            at,
            Cand {
                contact,
                via,
                dist,
                state: State::Queued,
            },
        );
    }

    /// The `DHT_K` closest candidates that have not failed.
    fn window(&mut self) -> impl Iterator<Item = &mut Cand> {
        self.cands
            .iter_mut()
            .filter(|c| c.state != State::Failed)
            .take(DHT_K)
    }
}

#[derive(Debug)]
struct Pending {
    path: usize,
    to: Contact,
    via: Option<Contact>,
    cursor: u8,
    deadline: Instant,
}

/// The outcome of a lookup.
#[derive(Debug, Clone, Default)]
pub struct LookupResult {
    /// Up to `DHT_K` nodes that answered, closest first, at most one per family prefix.
    pub closest: Vec<Contact>,
    /// FIND_VALUE: the records found (storage checks passed, right key), highest version per
    /// signer.
    pub records: Vec<Vec<u8>>,
    /// Nodes that answered junk.
    pub penalised: Vec<[u8; 32]>,
    /// Nodes whose requests timed out.
    pub timed_out: Vec<[u8; 32]>,
    /// Nodes that answered properly.
    pub answered: Vec<[u8; 32]>,
    /// Requests sent.
    pub requests: usize,
    /// Longest chain of answers on any path (the lookup's hop count).
    pub hops: usize,
    /// Whether the overall timeout ended it.
    pub timed_out_overall: bool,
    /// How long it ran, and (FIND_VALUE) how long until the first valid record came (where a
    /// last hop's lookup spends its time).
    pub elapsed_ms: Millis,
    /// See `elapsed_ms`.
    pub first_record_ms: Option<Millis>,
}

/// One iterative lookup.
#[derive(Debug)]
pub struct Lookup {
    target: Key,
    kind: Target,
    cfg: LookupConfig,
    deadline: Instant,
    started: Instant,
    /// FIND_VALUE for relay records and descriptors: the end, `DHT_VALUE_GRACE_MS` after the
    /// first valid record.
    value_until: Option<Instant>,
    paths: Vec<Path>,
    claimed: BTreeSet<[u8; 32]>,
    pending: BTreeMap<u64, Pending>,
    next_query: u64,
    outbox: Vec<Outgoing>,
    records: BTreeMap<[u8; 32], (u64, Vec<u8>)>,
    depth: BTreeMap<[u8; 32], usize>,
    result: LookupResult,
    finished: bool,
}

impl Lookup {
    /// Starts a lookup for `target` at `now` from `seeds` (the own table's
    /// `DHT_K · DHT_DISJOINT_PATHS` closest contacts).
    pub fn new(
        target: Key,
        kind: Target,
        seeds: &[Contact],
        cfg: LookupConfig,
        now: Instant,
    ) -> Lookup {
        let mut l = Lookup {
            target,
            kind,
            cfg,
            deadline: now + DHT_LOOKUP_TIMEOUT_S * 1000,
            started: now,
            value_until: None,
            paths: (0..DHT_DISJOINT_PATHS).map(|_| Path::default()).collect(),
            claimed: BTreeSet::new(),
            pending: BTreeMap::new(),
            next_query: 1,
            outbox: Vec::new(),
            records: BTreeMap::new(),
            depth: BTreeMap::new(),
            result: LookupResult::default(),
            finished: false,
        };
        let mut sorted: Vec<Contact> = seeds.to_vec();
        sorted.sort_by_key(|c| distance(&node_id(&c.identity), &target));
        let mut i = 0;
        for c in sorted {
            if c.identity == cfg.own_identity || !l.claimed.insert(c.identity) {
                continue;
            }
            if let Some(p) = l.paths.get_mut(i % DHT_DISJOINT_PATHS) {
                p.add(c, None, &target);
                l.depth.insert(c.identity, 0);
                i += 1;
            }
        }
        l
    }

    /// The key looked up.
    pub fn target(&self) -> &Key {
        &self.target
    }

    fn request(&self, cursor: u8) -> DhtMessage {
        match self.kind {
            Target::Nodes => DhtMessage::FindNode {
                target: self.target,
            },
            Target::Value(kind) => DhtMessage::FindValue {
                key: self.target,
                kind,
                cursor,
            },
        }
    }

    fn send(&mut self, path: usize, to: Contact, via: Option<Contact>, cursor: u8, now: Instant) {
        let query = self.next_query;
        self.next_query += 1;
        let message = self.request(cursor);
        self.pending.insert(
            query,
            Pending {
                path,
                to,
                via,
                cursor,
                deadline: now + DHT_RPC_TIMEOUT_MS,
            },
        );
        self.result.requests += 1;
        self.outbox.push(Outgoing {
            query,
            to,
            via,
            message,
        });
    }

    /// `query` waits for a link to its contact to come up, at the latest until `until`: its
    /// `DHT_RPC_TIMEOUT_MS` starts when it is sent ([`Lookup::on_sent`]), not before. Reaching
    /// a contact behind NAT (a punch, a relayed link) takes longer than a request lives.
    pub fn on_waiting(&mut self, query: u64, until: Instant) {
        if let Some(p) = self.pending.get_mut(&query) {
            p.deadline = until;
        }
    }

    /// `query` went out on a link at `now`, after waiting for it.
    pub fn on_sent(&mut self, query: u64, now: Instant) {
        if let Some(p) = self.pending.get_mut(&query) {
            p.deadline = now + DHT_RPC_TIMEOUT_MS;
        }
    }

    /// `query` could not be sent (no link came up, or no room to wait): it fails now, as a
    /// timeout, rather than at its deadline.
    pub fn on_unsent(&mut self, query: u64) {
        if let Some(p) = self.pending.remove(&query) {
            self.fail(&p, false);
        }
    }

    /// Requests to send now. Call after starting and after every input.
    pub fn poll(&mut self, now: Instant) -> Vec<Outgoing> {
        if now >= self.deadline && !self.finished {
            self.finish(true, now);
        }
        if self.value_until.is_some_and(|t| now >= t) {
            self.finish(false, now);
        }
        if self.finished {
            return std::mem::take(&mut self.outbox);
        }
        for pi in 0..self.paths.len() {
            while let Some(path) = self.paths.get_mut(pi) {
                if path.done
                    || path.in_flight >= DHT_ALPHA
                    || path.queries >= DHT_MAX_STEPS * DHT_ALPHA
                {
                    break;
                }
                let Some(c) = path.window().find(|c| c.state == State::Queued) else {
                    break;
                };
                c.state = State::InFlight;
                let (to, via) = (c.contact, c.via);
                path.in_flight += 1;
                path.queries += 1;
                self.send(pi, to, via, 0, now);
            }
            if let Some(path) = self.paths.get_mut(pi) {
                let budget_left = path.queries < DHT_MAX_STEPS * DHT_ALPHA;
                let waiting = path.window().any(|c| c.state == State::Queued);
                if path.in_flight == 0 && !(budget_left && waiting) {
                    path.done = true;
                }
            }
        }
        if self.paths.iter().all(|p| p.done) && self.pending.is_empty() {
            self.finish(false, now);
        }
        std::mem::take(&mut self.outbox)
    }

    fn mark(&mut self, path: usize, identity: &[u8; 32], state: State) {
        if let Some(p) = self.paths.get_mut(path) {
            if let Some(c) = p.cands.iter_mut().find(|c| c.contact.identity == *identity) {
                if c.state == State::InFlight {
                    p.in_flight = p.in_flight.saturating_sub(1);
                }
                c.state = state;
            }
        }
    }

    fn fail(&mut self, p: &Pending, junk: bool) {
        let id = p.to.identity;
        if p.cursor == 0 {
            self.mark(p.path, &id, State::Failed);
        }
        if junk {
            if !self.result.penalised.contains(&id) {
                self.result.penalised.push(id);
            }
            // Whatever it answered before counts for nothing.
            self.result.answered.retain(|a| *a != id);
            if let Some(c) = self
                .paths
                .get_mut(p.path)
                .and_then(|path| path.cands.iter_mut().find(|c| c.contact.identity == id))
            {
                c.state = State::Failed;
            }
        } else if !self.result.timed_out.contains(&id) {
            self.result.timed_out.push(id);
        }
    }

    /// The reply to `query` could not be parsed (or was otherwise junk).
    pub fn on_junk(&mut self, query: u64) {
        if let Some(p) = self.pending.remove(&query) {
            self.fail(&p, true);
        }
    }

    /// The reply to `query`; replies to unknown or finished queries are ignored.
    pub fn on_reply(&mut self, query: u64, message: DhtMessage, now: Instant) {
        let Some(p) = self.pending.remove(&query) else {
            return;
        };
        let contacts = match (self.kind, message) {
            (Target::Nodes, DhtMessage::Nodes { contacts }) => contacts,
            (
                Target::Value(want),
                DhtMessage::Value {
                    kind,
                    cursor,
                    total,
                    record,
                    contacts,
                },
            ) => {
                let max_total = match want {
                    RecordKind::Relay => 1,
                    RecordKind::Descriptor => DESC_MAX_SIGNERS_PER_INDEX,
                    RecordKind::NameClaim => crate::names::claim::KEEP_PER_NAME,
                };
                if kind != want || cursor != p.cursor || usize::from(total) > max_total {
                    return self.fail(&p, true);
                }
                if let Some(bytes) = record {
                    match checked_key(want, &bytes, now) {
                        Some((key, signer, version)) if key == self.target => {
                            let better =
                                self.records.get(&signer).is_none_or(|(v, _)| version > *v);
                            if better {
                                self.records.insert(signer, (version, bytes));
                                let since = now.saturating_since(self.started);
                                self.result.first_record_ms.get_or_insert(since);
                                if want != RecordKind::NameClaim && self.value_until.is_none() {
                                    self.value_until = Some(now + DHT_VALUE_GRACE_MS);
                                }
                            }
                        }
                        _ => return self.fail(&p, true),
                    }
                }
                if p.cursor == 0 {
                    for cursor in 1..total {
                        self.send(p.path, p.to, p.via, cursor, now);
                    }
                }
                contacts
            }
            (_, DhtMessage::Error { .. }) => return self.fail(&p, false),
            _ => return self.fail(&p, true),
        };
        if p.cursor != 0 {
            return;
        }
        // Junk checks on the contact list.
        let dists: Vec<Key> = contacts
            .iter()
            .map(|c| distance(&node_id(&c.identity), &self.target))
            .collect();
        let sorted = dists.windows(2).all(|w| matches!(w, [a, b] if a < b));
        let has_self = contacts.iter().any(|c| c.identity == p.to.identity);
        if !sorted || has_self {
            return self.fail(&p, true);
        }
        self.mark(p.path, &p.to.identity, State::Answered);
        if !self.result.answered.contains(&p.to.identity) {
            self.result.answered.push(p.to.identity);
        }
        let d = self.depth.get(&p.to.identity).copied().unwrap_or(0) + 1;
        self.result.hops = self.result.hops.max(d);
        for c in contacts {
            if c.identity == self.cfg.own_identity || !self.claimed.insert(c.identity) {
                continue;
            }
            self.depth.insert(c.identity, d);
            if let Some(path) = self.paths.get_mut(p.path) {
                path.add(c, Some(p.to), &self.target);
            }
        }
    }

    /// Times out requests whose deadline passed, and the whole lookup at its deadline.
    pub fn on_timer(&mut self, now: Instant) {
        let mut expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(q, _)| *q)
            .collect();
        // In query order: results (and the routing table fed from them) must not depend on a
        // hash map's order.
        expired.sort_unstable();
        for q in expired {
            if let Some(p) = self.pending.remove(&q) {
                self.fail(&p, false);
            }
        }
        if now >= self.deadline {
            self.finish(true, now);
        }
        if self.value_until.is_some_and(|t| now >= t) {
            self.finish(false, now);
        }
    }

    /// When `on_timer` should be called next (`None` once finished).
    pub fn next_timeout(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        let end = self
            .value_until
            .map_or(self.deadline, |v| v.min(self.deadline));
        self.pending
            .values()
            .map(|p| p.deadline)
            .min()
            .map(|d| d.min(end))
            .or(Some(end))
    }

    /// Whether the lookup has ended.
    pub fn is_done(&self) -> bool {
        self.finished
    }

    fn finish(&mut self, timeout: bool, now: Instant) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.result.timed_out_overall = timeout;
        self.result.elapsed_ms = now.saturating_since(self.started);
        let mut pending: Vec<(u64, Pending)> =
            std::mem::take(&mut self.pending).into_iter().collect();
        pending.sort_unstable_by_key(|(q, _)| *q);
        // Ended by the value grace, requests still out did not time out: the routing table
        // must not count them as failures.
        let cut_short = !timeout && self.value_until.is_some_and(|t| now >= t);
        for (_, p) in pending {
            if !cut_short {
                self.fail(&p, false);
            }
        }
        let penalised: BTreeSet<[u8; 32]> = self.result.penalised.iter().copied().collect();
        let mut answered: Vec<(Key, Contact)> = self
            .paths
            .iter()
            .flat_map(|p| p.cands.iter())
            .filter(|c| c.state == State::Answered && !penalised.contains(&c.contact.identity))
            .map(|c| (c.dist, c.contact))
            .collect();
        answered.sort_by_key(|a| a.0);
        let mut per_prefix: BTreeMap<Prefix, usize> = BTreeMap::new();
        let mut closest = Vec::new();
        for (_, c) in answered {
            let n = per_prefix
                .entry(prefix_of(c.endpoint.ip(), self.cfg.prefix_bits))
                .or_insert(0);
            if *n >= DHT_RESULT_PER_PREFIX {
                continue;
            }
            *n += 1;
            closest.push(c);
            if closest.len() >= DHT_K {
                break;
            }
        }
        self.result.closest = closest;
        self.result.records = std::mem::take(&mut self.records)
            .into_values()
            .map(|(_, b)| b)
            .collect();
        self.result.records.sort();
    }

    /// The result, once `is_done`.
    pub fn result(&self) -> Option<&LookupResult> {
        self.finished.then_some(&self.result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn contact(i: u32) -> Contact {
        let mut s = [0u8; 32];
        s[..4].copy_from_slice(&i.to_be_bytes());
        Contact {
            identity: SigningKey::from_bytes(&s).verifying_key().to_bytes(),
            link_key: [1; 32],
            endpoint: format!("10.{}.{}.1:7412", i / 250, i % 250)
                .parse()
                .unwrap(),
        }
    }

    fn cfg() -> LookupConfig {
        LookupConfig {
            own_identity: contact(0).identity,
            prefix_bits: (32, 128),
        }
    }

    fn sorted_from(target: &Key, pool: &[Contact], n: usize) -> Vec<Contact> {
        let mut v = pool.to_vec();
        v.sort_by_key(|c| distance(&node_id(&c.identity), target));
        v.truncate(n);
        v
    }

    #[test]
    fn paths_are_disjoint_and_the_lookup_converges() {
        let pool: Vec<Contact> = (1..200).map(contact).collect();
        let target = [0x33; 32];
        let seeds: Vec<Contact> = pool[..24].to_vec();
        let mut l = Lookup::new(target, Target::Nodes, &seeds, cfg(), Instant::ZERO);
        let mut seen: BTreeMap<[u8; 32], usize> = BTreeMap::new();
        let mut now = 0;
        while !l.is_done() {
            let out = l.poll(Instant::from_unix_ms(now));
            for o in out {
                *seen.entry(o.to.identity).or_default() += 1;
                // Everyone answers with the 8 closest of the pool to the target.
                let reply = DhtMessage::Nodes {
                    contacts: sorted_from(&target, &pool, 8)
                        .into_iter()
                        .filter(|c| c.identity != o.to.identity)
                        .collect(),
                };
                l.on_reply(o.query, reply, Instant::from_unix_ms(now));
            }
            now += 10;
            if now > 100_000 {
                panic!("no progress");
            }
        }
        assert!(seen.values().all(|&n| n == 1), "a node was queried twice");
        let r = l.result().unwrap();
        let best = sorted_from(&target, &pool, 8);
        assert_eq!(r.closest.first(), best.first());
        assert!(r.penalised.is_empty());
    }

    #[test]
    fn a_value_lookup_ends_a_grace_after_its_first_record() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/vectors/protocol.json")).unwrap();
        let v = &doc["relay_record"];
        let bytes = hex::decode(v["record"].as_str().unwrap()).unwrap();
        let key: Key = hex::decode(v["dht_key"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let t0 = 1_767_225_600_000 + 60_000;
        let at = |ms: u64| Instant::from_unix_ms(t0 + ms);
        let pool: Vec<Contact> = (1..50).map(contact).collect();
        let kind = Target::Value(RecordKind::Relay);
        let mut l = Lookup::new(key, kind, &pool[..24], cfg(), at(0));
        let out = l.poll(at(0));
        // One replica answers with the record at once; nobody else ever answers.
        let value = DhtMessage::Value {
            kind: RecordKind::Relay,
            cursor: 0,
            total: 1,
            record: Some(bytes.clone()),
            contacts: Vec::new(),
        };
        l.on_reply(out[0].query, value, at(300));
        assert!(
            l.poll(at(300)).len() <= 1,
            "the path may ask its next contact"
        );
        assert!(!l.is_done());
        // It ends a grace after the record, not when the silent requests time out (2 s) or
        // the lookup does (10 s).
        assert_eq!(l.next_timeout(), Some(at(300 + DHT_VALUE_GRACE_MS)));
        l.on_timer(at(300 + DHT_VALUE_GRACE_MS));
        assert!(l.is_done());
        let r = l.result().unwrap();
        assert_eq!(r.records, vec![bytes]);
        assert!(!r.timed_out_overall);
        assert!(
            r.timed_out.is_empty(),
            "requests cut short did not time out: the routing table must not count them"
        );
        assert_eq!(r.first_record_ms, Some(300));
        assert_eq!(r.elapsed_ms, 300 + DHT_VALUE_GRACE_MS);
    }

    #[test]
    fn timeouts_and_junk() {
        let pool: Vec<Contact> = (1..50).map(contact).collect();
        let target = [0x11; 32];
        let mut l = Lookup::new(target, Target::Nodes, &pool[..9], cfg(), Instant::ZERO);
        let out = l.poll(Instant::ZERO);
        assert_eq!(out.len(), DHT_ALPHA * DHT_DISJOINT_PATHS);
        // First answers with the wrong type, second with unsorted contacts, the rest time out.
        l.on_reply(
            out[0].query,
            DhtMessage::StoreResult {
                status: crate::dht::message::StoreStatus::Stored,
            },
            Instant::from_unix_ms(5),
        );
        let mut unsorted = sorted_from(&target, &pool[20..], 3);
        unsorted.reverse();
        l.on_reply(
            out[1].query,
            DhtMessage::Nodes { contacts: unsorted },
            Instant::from_unix_ms(5),
        );
        assert_eq!(
            l.next_timeout(),
            Some(Instant::from_unix_ms(DHT_RPC_TIMEOUT_MS))
        );
        let mut now = 0;
        while !l.is_done() {
            now = l.next_timeout().unwrap().as_unix_ms();
            l.on_timer(Instant::from_unix_ms(now));
            l.poll(Instant::from_unix_ms(now));
        }
        let r = l.result().unwrap();
        assert_eq!(r.penalised.len(), 2);
        assert!(r.closest.is_empty());
        assert!(now <= DHT_LOOKUP_TIMEOUT_S * 1000);
        assert_eq!(r.timed_out.len(), 7);
    }

    #[test]
    fn a_request_waiting_for_its_link_times_out_from_when_it_is_sent() {
        let pool: Vec<Contact> = (1..50).map(contact).collect();
        let target = [0x22; 32];
        let mut l = Lookup::new(target, Target::Nodes, &pool[..3], cfg(), Instant::ZERO);
        let out = l.poll(Instant::ZERO);
        assert_eq!(out.len(), 3);
        assert!(
            out.iter().all(|o| o.via.is_none()),
            "seeds are named by nobody"
        );
        // The first waits for a punch; the second is sent at once; the third gets no link.
        l.on_waiting(out[0].query, Instant::from_unix_ms(8_000));
        l.on_waiting(out[2].query, Instant::from_unix_ms(8_000));
        l.on_unsent(out[2].query);
        l.on_timer(Instant::from_unix_ms(DHT_RPC_TIMEOUT_MS));
        // The plain request timed out at 2 s; the waiting one did not.
        assert_eq!(
            l.result.timed_out,
            vec![out[2].to.identity, out[1].to.identity]
        );
        l.on_sent(out[0].query, Instant::from_unix_ms(5_000));
        l.on_timer(Instant::from_unix_ms(6_999));
        let named = sorted_from(&target, &pool[10..], 2);
        l.on_reply(
            out[0].query,
            DhtMessage::Nodes {
                contacts: named.clone(),
            },
            Instant::from_unix_ms(6_999),
        );
        assert_eq!(l.result.answered, vec![out[0].to.identity]);
        // What it named is asked next, through it.
        let next = l.poll(Instant::from_unix_ms(6_999));
        assert_eq!(next.len(), 2);
        assert!(next.iter().all(|o| o.via == Some(out[0].to)));
    }
}
