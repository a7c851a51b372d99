//! A DHT relay as one sans-IO state machine (docs/protocol.md sections 12.1 to 12.5): its routing
//! table and store, the requests it answers, and the lookups and publications it runs, for itself
//! (refresh, its own relay record) and for the last hop role of 12.6.
//!
//! It knows contacts, not links: requests go out as [`RelayOut::Request`] to a contact, and the
//! caller delivers them over a link (dialing first if need be) and feeds the answers back with
//! [`DhtRelay::on_response`]. Every running operation is bounded in number and charged to the
//! memory budget; an answer is accepted only from the contact it was asked of.

use rand::rngs::StdRng;
use rand::Rng;
use std::collections::BTreeMap;
use std::net::IpAddr;

use super::lookup::{Lookup, LookupConfig, LookupResult, Target};
use super::message::{DhtMessage, RecordKind, StoreStatus};
use super::routing::{Prefix, RoutingTable};
use super::store::{checked_key, Store};
use super::{distance, node_id, server, Key, DHT_DISJOINT_PATHS, DHT_K, DHT_REPLICAS};
use super::{DHT_LOOKUP_TIMEOUT_S, DHT_RPC_TIMEOUT_MS};
use crate::budget::{Charge, MemoryBudget};
use crate::crypto::Randomness;
use crate::time::Instant;
use crate::wire::record::Contact;

/// Lookups and publications a relay runs at once (its own and those of circuits).
pub const DHT_MAX_OPS: usize = 256;
/// Memory charged per running operation (lookup state: candidates, pending requests, records).
pub const DHT_OP_COST: usize = 16 * 1024;
/// The store source prefix of records published on behalf of circuits (the requester is
/// anonymous, so all of them share one budget of `DHT_STORE_PER_SOURCE_PREFIX`).
pub const LOCAL_SOURCE: Prefix = (0, 0);

/// A handle on a running lookup or publication.
pub type OpHandle = u64;

/// What a relay asks its driver to do.
#[derive(Debug, Clone)]
pub enum RelayOut {
    /// Send a DHT_REQUEST with `rpc_id` to `to`.
    Request {
        /// The contact.
        to: Contact,
        /// The contact that named `to` in a lookup (it can introduce us; see [`Outgoing`]).
        ///
        /// [`Outgoing`]: super::lookup::Outgoing
        via: Option<Contact>,
        /// The frame's rpc id (the answer must carry it).
        rpc_id: u64,
        /// The DHT message.
        data: Vec<u8>,
    },
    /// An operation ended.
    Done {
        /// Its handle.
        handle: OpHandle,
        /// What came of it.
        result: OpResult,
    },
}

/// The outcome of an operation.
#[derive(Debug, Clone)]
pub enum OpResult {
    /// A lookup's result (FIND_NODE or FIND_VALUE).
    Lookup(LookupResult),
    /// A publication: STORE answers from the replicas.
    Published {
        /// Replicas that stored it (the relay itself included when it is one).
        accepted: u8,
        /// Replicas that refused it.
        refused: u8,
        /// Of the refusals, those that hold a newer version.
        stale: u8,
    },
}

/// Counters, for status and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RelayStats {
    /// Requests answered.
    pub requests_in: u64,
    /// Requests sent.
    pub requests_out: u64,
    /// Answers that failed to parse or came from the wrong contact.
    pub junk_in: u64,
    /// Answers to requests we no longer wait for.
    pub late_in: u64,
    /// Lookups started.
    pub lookups: u64,
    /// Publications started.
    pub publications: u64,
    /// Operations refused by the limits.
    pub refused_ops: u64,
}

enum Rpc {
    Lookup {
        handle: OpHandle,
        query: u64,
        to: [u8; 32],
        deadline: Instant,
    },
    Store {
        handle: OpHandle,
        to: [u8; 32],
        deadline: Instant,
    },
}

impl Rpc {
    fn handle(&self) -> OpHandle {
        match self {
            Rpc::Lookup { handle, .. } | Rpc::Store { handle, .. } => *handle,
        }
    }
}

struct Publish {
    kind: RecordKind,
    record: Vec<u8>,
    storing: bool,
    waiting: usize,
    accepted: u8,
    refused: u8,
    stale: u8,
    deadline: Instant,
}

struct Op {
    lookup: Lookup,
    publish: Option<Publish>,
    _charge: Charge,
}

/// One node's DHT relay.
pub struct DhtRelay {
    /// The routing table.
    pub table: RoutingTable,
    /// The records stored for others.
    pub store: Store,
    cfg: LookupConfig,
    ops: BTreeMap<OpHandle, Op>,
    rpcs: BTreeMap<u64, Rpc>,
    next_handle: OpHandle,
    rng: StdRng,
    out: Vec<RelayOut>,
    budget: MemoryBudget,
    stats: RelayStats,
}

impl DhtRelay {
    /// A relay with an empty table and store, charging `budget`.
    pub fn new(
        identity: [u8; 32],
        prefix_bits: (u8, u8),
        budget: MemoryBudget,
        rand: Randomness,
    ) -> DhtRelay {
        DhtRelay {
            table: RoutingTable::new(&identity, prefix_bits, budget.clone()),
            store: Store::new(node_id(&identity), budget.clone()),
            cfg: LookupConfig {
                own_identity: identity,
                prefix_bits,
            },
            ops: BTreeMap::new(),
            rpcs: BTreeMap::new(),
            next_handle: 1,
            rng: rand.choices(),
            out: Vec::new(),
            budget,
            stats: RelayStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }

    /// Operations running.
    pub fn running(&self) -> usize {
        self.ops.len()
    }

    /// What to send and what ended since the last call.
    pub fn take_out(&mut self) -> Vec<RelayOut> {
        std::mem::take(&mut self.out)
    }

    /// Answers a DHT_REQUEST from a neighbour at `source` (its underlay address, for the
    /// store's per-prefix caps). `None` for bytes that parse as an answer.
    pub fn respond(&mut self, request: &[u8], source: IpAddr, now: Instant) -> Option<Vec<u8>> {
        self.stats.requests_in += 1;
        let reply = server::respond(
            &self.table,
            &mut self.store,
            request,
            source,
            self.cfg.prefix_bits,
            now,
            &mut self.rng,
        )?;
        reply.emit().ok()
    }

    fn new_op(&mut self, lookup: Lookup, publish: Option<Publish>) -> Option<OpHandle> {
        if self.ops.len() >= DHT_MAX_OPS {
            self.stats.refused_ops += 1;
            return None;
        }
        let Some(charge) = self.budget.try_charge(DHT_OP_COST) else {
            self.stats.refused_ops += 1;
            return None;
        };
        let handle = self.next_handle;
        self.next_handle += 1;
        self.ops.insert(
            handle,
            Op {
                lookup,
                publish,
                _charge: charge,
            },
        );
        Some(handle)
    }

    fn seeds(&self, target: &Key) -> Vec<Contact> {
        self.table.closest(target, DHT_K * DHT_DISJOINT_PATHS)
    }

    /// Starts a lookup for `target`; `None` if the limits refuse it. The result arrives as
    /// [`RelayOut::Done`].
    pub fn start_lookup(&mut self, target: Key, kind: Target, now: Instant) -> Option<OpHandle> {
        let lookup = Lookup::new(target, kind, &self.seeds(&target), self.cfg, now);
        let h = self.new_op(lookup, None)?;
        self.stats.lookups += 1;
        self.drive(h, now);
        Some(h)
    }

    /// Starts publishing `record` (12.5): FIND_NODE for its key, then STORE to the
    /// `DHT_REPLICAS` closest (this relay included if it is among them). `Err(Invalid)` if the
    /// record fails the storage checks, `Err(Full)` if the limits refuse the operation.
    pub fn start_publish(
        &mut self,
        kind: RecordKind,
        record: &[u8],
        now: Instant,
    ) -> Result<OpHandle, StoreStatus> {
        let (key, _, _) = checked_key(kind, record, now).ok_or(StoreStatus::Invalid)?;
        let lookup = Lookup::new(key, Target::Nodes, &self.seeds(&key), self.cfg, now);
        let publish = Publish {
            kind,
            record: record.to_vec(),
            storing: false,
            waiting: 0,
            accepted: 0,
            refused: 0,
            stale: 0,
            deadline: now + DHT_LOOKUP_TIMEOUT_S * 1000 + DHT_RPC_TIMEOUT_MS,
        };
        let h = self
            .new_op(lookup, Some(publish))
            .ok_or(StoreStatus::Full)?;
        self.stats.publications += 1;
        self.drive(h, now);
        Ok(h)
    }

    /// Drops an operation whose result nobody wants any more (its circuit closed).
    pub fn cancel(&mut self, handle: OpHandle) {
        if self.ops.remove(&handle).is_some() {
            self.rpcs.retain(|_, r| r.handle() != handle);
        }
    }

    /// An answer (DHT_RESPONSE) from the relay `from` to our request `rpc_id`.
    pub fn on_response(&mut self, from: &[u8; 32], rpc_id: u64, data: &[u8], now: Instant) {
        let to = match self.rpcs.get(&rpc_id) {
            Some(Rpc::Lookup { to, .. } | Rpc::Store { to, .. }) => *to,
            None => {
                self.stats.late_in += 1;
                return;
            }
        };
        if to != *from {
            // Someone else's answer (or a guess at our rpc ids): not evidence about anyone.
            self.stats.junk_in += 1;
            return;
        }
        let Some(rpc) = self.rpcs.remove(&rpc_id) else {
            return;
        };
        let msg = DhtMessage::parse(data);
        if msg.is_err() {
            self.stats.junk_in += 1;
        }
        match rpc {
            Rpc::Lookup { handle, query, .. } => {
                if let Some(op) = self.ops.get_mut(&handle) {
                    match msg {
                        Ok(m) => op.lookup.on_reply(query, m, now),
                        Err(_) => op.lookup.on_junk(query),
                    }
                }
                self.drive(handle, now);
            }
            Rpc::Store { handle, .. } => {
                match msg {
                    Ok(DhtMessage::StoreResult { .. }) => self.table.on_success(from, now),
                    _ => {
                        self.table.on_failure(from);
                    }
                }
                if let Some(p) = self.ops.get_mut(&handle).and_then(|o| o.publish.as_mut()) {
                    p.waiting = p.waiting.saturating_sub(1);
                    match msg {
                        Ok(DhtMessage::StoreResult {
                            status: StoreStatus::Stored,
                        }) => p.accepted = p.accepted.saturating_add(1),
                        Ok(DhtMessage::StoreResult {
                            status: StoreStatus::Stale,
                        }) => {
                            p.stale = p.stale.saturating_add(1);
                            p.refused = p.refused.saturating_add(1);
                        }
                        _ => p.refused = p.refused.saturating_add(1),
                    }
                }
                self.drive(handle, now);
            }
        }
    }

    /// A store request that timed out or could not be sent counts as a refusal by a failed
    /// contact.
    fn store_failed(&mut self, rpc_id: u64) {
        if let Some(Rpc::Store { handle, to, .. }) = self.rpcs.remove(&rpc_id) {
            self.table.on_failure(&to);
            if let Some(p) = self.ops.get_mut(&handle).and_then(|o| o.publish.as_mut()) {
                p.waiting = p.waiting.saturating_sub(1);
                p.refused = p.refused.saturating_add(1);
            }
        }
    }

    /// Request `rpc_id` waits for a link to its contact, at the latest until `until`: it does
    /// not time out meanwhile (its time starts when it is sent, [`DhtRelay::on_sent`]).
    pub fn on_waiting(&mut self, rpc_id: u64, until: Instant) {
        self.set_deadline(rpc_id, until);
    }

    /// Request `rpc_id` went out at `now` after waiting for its link.
    pub fn on_sent(&mut self, rpc_id: u64, now: Instant) {
        self.set_deadline(rpc_id, now + DHT_RPC_TIMEOUT_MS);
    }

    fn set_deadline(&mut self, rpc_id: u64, at: Instant) {
        match self.rpcs.get_mut(&rpc_id) {
            Some(Rpc::Lookup {
                handle,
                query,
                deadline,
                ..
            }) => {
                *deadline = at;
                if let Some(op) = self.ops.get_mut(handle) {
                    op.lookup.on_waiting(*query, at);
                }
            }
            Some(Rpc::Store {
                handle, deadline, ..
            }) => {
                *deadline = at;
                // The publication waits for its slowest store.
                if let Some(p) = self.ops.get_mut(handle).and_then(|o| o.publish.as_mut()) {
                    p.deadline = p.deadline.max(at + 1);
                }
            }
            None => {}
        }
    }

    /// Request `rpc_id` could not be sent (its link did not come up, or no room to wait): it
    /// fails now rather than at its deadline.
    pub fn on_unsent(&mut self, rpc_id: u64, now: Instant) {
        match self.rpcs.get(&rpc_id) {
            Some(Rpc::Lookup { handle, query, .. }) => {
                let (h, q) = (*handle, *query);
                self.rpcs.remove(&rpc_id);
                if let Some(op) = self.ops.get_mut(&h) {
                    op.lookup.on_unsent(q);
                }
                self.drive(h, now);
            }
            Some(Rpc::Store { handle, .. }) => {
                let h = *handle;
                self.store_failed(rpc_id);
                self.finish_publish(h, now);
            }
            None => {}
        }
    }

    /// When [`DhtRelay::on_timer`] next has something to do: a lookup's request or overall
    /// timeout, or a store request's deadline. O(operations + requests in flight).
    pub fn deadline(&self) -> Option<Instant> {
        let lookups = self.ops.values().filter_map(|op| op.lookup.next_timeout());
        let stores = self.rpcs.values().filter_map(|r| match r {
            Rpc::Store { deadline, .. } => Some(*deadline),
            Rpc::Lookup { .. } => None,
        });
        lookups.chain(stores).min()
    }

    /// Timeouts of requests and operations.
    pub fn on_timer(&mut self, now: Instant) {
        // Store requests past their deadline count as refusals by a failed contact.
        let mut expired: Vec<u64> = self
            .rpcs
            .iter()
            .filter(|(_, r)| matches!(r, Rpc::Store { deadline, .. } if *deadline <= now))
            .map(|(id, _)| *id)
            .collect();
        expired.sort_unstable();
        for id in expired {
            self.store_failed(id);
        }
        // Lookup requests are timed out by the lookups themselves; forget our side of them.
        self.rpcs.retain(
            |_, r| !matches!(r, Rpc::Lookup { deadline, .. } if *deadline + DHT_RPC_TIMEOUT_MS <= now),
        );
        // In handle order, so that a simulation with a fixed seed repeats itself.
        let mut handles: Vec<OpHandle> = self.ops.keys().copied().collect();
        handles.sort_unstable();
        for h in handles {
            if let Some(op) = self.ops.get_mut(&h) {
                op.lookup.on_timer(now);
            }
            self.drive(h, now);
        }
    }

    /// Sends what an operation wants sent and finishes it when it is done.
    fn drive(&mut self, h: OpHandle, now: Instant) {
        let Some(op) = self.ops.get_mut(&h) else {
            return;
        };
        for o in op.lookup.poll(now) {
            let rpc_id: u64 = self.rng.gen_range(1..u64::MAX);
            let Ok(data) = o.message.emit() else {
                continue;
            };
            self.rpcs.insert(
                rpc_id,
                Rpc::Lookup {
                    handle: h,
                    query: o.query,
                    to: o.to.identity,
                    deadline: now + DHT_RPC_TIMEOUT_MS,
                },
            );
            self.stats.requests_out += 1;
            self.out.push(RelayOut::Request {
                to: o.to,
                via: o.via,
                rpc_id,
                data,
            });
        }
        let Some(op) = self.ops.get(&h) else {
            return;
        };
        let Some(result) = op.lookup.result().cloned() else {
            return;
        };
        let storing = op.publish.as_ref().map(|p| p.storing);
        match storing {
            None => {
                self.feed_table(&result, now);
                self.ops.remove(&h);
                self.rpcs.retain(|_, r| r.handle() != h);
                self.out.push(RelayOut::Done {
                    handle: h,
                    result: OpResult::Lookup(result),
                });
            }
            Some(false) => {
                self.feed_table(&result, now);
                self.rpcs.retain(|_, r| r.handle() != h);
                self.start_stores(h, &result, now);
                self.finish_publish(h, now);
            }
            Some(true) => self.finish_publish(h, now),
        }
    }

    /// Routing-table bookkeeping after a lookup: answers prove a contact, timeouts and junk
    /// count against it.
    fn feed_table(&mut self, r: &LookupResult, now: Instant) {
        for id in &r.answered {
            self.table.on_success(id, now);
        }
        for id in r.timed_out.iter().chain(&r.penalised) {
            self.table.on_failure(id);
        }
    }

    fn start_stores(&mut self, h: OpHandle, result: &LookupResult, now: Instant) {
        let Some(p) = self.ops.get_mut(&h).and_then(|o| o.publish.as_mut()) else {
            return;
        };
        p.storing = true;
        let (kind, record) = (p.kind, p.record.clone());
        let Some((key, _, _)) = checked_key(kind, &record, now) else {
            return;
        };
        // This relay is a replica too when it is closer than the DHT_REPLICAS-th node found.
        let own = distance(self.table.own_id(), &key);
        let mut replicas: Vec<Contact> = result.closest.clone();
        replicas.truncate(DHT_REPLICAS);
        let own_is_replica = replicas.len() < DHT_REPLICAS
            || replicas
                .last()
                .is_some_and(|c| own < distance(&node_id(&c.identity), &key));
        let mut local = None;
        if own_is_replica {
            replicas.truncate(DHT_REPLICAS - 1);
            local = Some(
                self.store
                    .store(kind, &record, LOCAL_SOURCE, now, &mut self.rng),
            );
        }
        let mut sent = 0;
        for to in replicas {
            let msg = DhtMessage::Store {
                kind,
                record: record.clone(),
            };
            let Ok(data) = msg.emit() else { continue };
            let rpc_id: u64 = self.rng.gen_range(1..u64::MAX);
            self.rpcs.insert(
                rpc_id,
                Rpc::Store {
                    handle: h,
                    to: to.identity,
                    deadline: now + DHT_RPC_TIMEOUT_MS,
                },
            );
            self.stats.requests_out += 1;
            self.out.push(RelayOut::Request {
                to,
                via: None,
                rpc_id,
                data,
            });
            sent += 1;
        }
        if let Some(p) = self.ops.get_mut(&h).and_then(|o| o.publish.as_mut()) {
            p.waiting = sent;
            p.deadline = p.deadline.min(now + DHT_RPC_TIMEOUT_MS + 1);
            match local {
                Some(StoreStatus::Stored) => p.accepted = p.accepted.saturating_add(1),
                Some(StoreStatus::Stale) => {
                    p.stale = p.stale.saturating_add(1);
                    p.refused = p.refused.saturating_add(1);
                }
                Some(_) => p.refused = p.refused.saturating_add(1),
                None => {}
            }
        }
    }

    fn finish_publish(&mut self, h: OpHandle, now: Instant) {
        let done = self
            .ops
            .get(&h)
            .and_then(|o| o.publish.as_ref())
            .is_some_and(|p| p.storing && (p.waiting == 0 || now >= p.deadline));
        if !done {
            return;
        }
        if let Some(p) = self.ops.remove(&h).and_then(|o| o.publish) {
            self.rpcs.retain(|_, r| r.handle() != h);
            self.out.push(RelayOut::Done {
                handle: h,
                result: OpResult::Published {
                    accepted: p.accepted,
                    refused: p.refused.saturating_add(p.waiting as u8),
                    stale: p.stale,
                },
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::record::{NatClass, RecordFields, RelayRecord, FLAG_DHT, FLAG_RELAY};
    use ed25519_dalek::SigningKey;
    use std::net::SocketAddr;

    const NOW: Instant = Instant::from_unix_ms(1_800_000_000_000);

    struct Net {
        keys: Vec<SigningKey>,
        contacts: Vec<Contact>,
        relays: Vec<DhtRelay>,
        /// Relays that answer every request with junk.
        junk: Vec<usize>,
    }

    fn net(n: usize) -> Net {
        let keys: Vec<SigningKey> = (0..n)
            .map(|i| SigningKey::from_bytes(&[i as u8 + 1; 32]))
            .collect();
        let contacts: Vec<Contact> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Contact {
                identity: k.verifying_key().to_bytes(),
                link_key: x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(
                    [i as u8 + 1; 32],
                ))
                .to_bytes(),
                endpoint: SocketAddr::from(([198, 18, 0, i as u8 + 1], 7412)),
            })
            .collect();
        let mut relays: Vec<DhtRelay> = contacts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                DhtRelay::new(
                    c.identity,
                    (32, 128),
                    MemoryBudget::new(64 << 20),
                    Randomness::simulated([i as u8; 32]),
                )
            })
            .collect();
        for r in relays.iter_mut() {
            for c in &contacts {
                r.table.insert(*c, NOW);
            }
        }
        Net {
            keys,
            contacts,
            relays,
            junk: Vec::new(),
        }
    }

    impl Net {
        /// Delivers requests until `from` is quiet; returns what ended.
        fn run(&mut self, from: usize, now: Instant) -> Vec<(OpHandle, OpResult)> {
            let mut done = Vec::new();
            loop {
                let outs = self.relays[from].take_out();
                if outs.is_empty() {
                    return done;
                }
                for o in outs {
                    match o {
                        RelayOut::Request {
                            to, rpc_id, data, ..
                        } => {
                            let t = self
                                .contacts
                                .iter()
                                .position(|c| c.identity == to.identity)
                                .unwrap();
                            let src = self.contacts[from].endpoint.ip();
                            let answer = if self.junk.contains(&t) {
                                Some(vec![1, 2, 0, 0, 9])
                            } else {
                                self.relays[t].respond(&data, src, now)
                            };
                            if let Some(a) = answer {
                                let id = self.contacts[t].identity;
                                self.relays[from].on_response(&id, rpc_id, &a, now);
                            }
                        }
                        RelayOut::Done { handle, result } => done.push((handle, result)),
                    }
                }
            }
        }
    }

    fn record(k: &SigningKey, c: &Contact) -> RelayRecord {
        RelayRecord::sign(
            k,
            RecordFields {
                flags: FLAG_RELAY | FLAG_DHT,
                nat: NatClass::Public,
                link_key: c.link_key,
                onion_key: [5; 32],
                seq: NOW.as_unix_ms(),
                expires: NOW.as_unix_ms() / 1000 + 86400,
                endpoints: vec![c.endpoint],
                introducers: vec![],
            },
        )
        .unwrap()
    }

    #[test]
    fn publish_then_find_with_a_junk_answering_relay() {
        let mut n = net(24);
        let rec = record(&n.keys[3], &n.contacts[3]);
        let key = crate::dht::relay_key(&n.contacts[3].identity);
        // The node closest to the key answers junk.
        let closest = (0..24)
            .min_by_key(|&i| distance(&node_id(&n.contacts[i].identity), &key))
            .unwrap();
        n.junk.push(closest);
        let from = (closest + 1) % 24;
        let h = n.relays[from]
            .start_publish(RecordKind::Relay, rec.bytes(), NOW)
            .unwrap();
        let done = n.run(from, NOW);
        match &done[..] {
            [(dh, OpResult::Published { accepted, .. })] if *dh == h => {
                assert!(*accepted >= 4, "accepted {accepted}")
            }
            other => panic!("{other:?}"),
        }
        let asker = (closest + 7) % 24;
        n.relays[asker].start_lookup(key, Target::Value(RecordKind::Relay), NOW + 1000);
        let done = n.run(asker, NOW + 1000);
        match &done[..] {
            [(_, OpResult::Lookup(r))] => {
                assert_eq!(r.records, vec![rec.bytes().to_vec()]);
                assert!(r.penalised.contains(&n.contacts[closest].identity));
            }
            other => panic!("{other:?}"),
        }
        assert!(n.relays[asker].stats().junk_in > 0);
    }

    #[test]
    fn invalid_records_are_not_published_and_answers_from_strangers_are_ignored() {
        let mut n = net(8);
        let rec = record(&n.keys[1], &n.contacts[1]);
        let mut bad = rec.bytes().to_vec();
        bad[100] ^= 1;
        assert_eq!(
            n.relays[0]
                .start_publish(RecordKind::Relay, &bad, NOW)
                .err(),
            Some(StoreStatus::Invalid)
        );
        // An answer that comes from someone other than the contact asked is junk.
        n.relays[0].start_lookup([7; 32], Target::Nodes, NOW);
        let outs = n.relays[0].take_out();
        let Some(RelayOut::Request { rpc_id, .. }) = outs.first() else {
            panic!("no request");
        };
        let nodes = DhtMessage::Nodes { contacts: vec![] }.emit().unwrap();
        n.relays[0].on_response(&[9; 32], *rpc_id, &nodes, NOW);
        assert_eq!(n.relays[0].stats().junk_in, 1);
        // Cancelling forgets the operation; late answers are only counted.
        n.relays[0].cancel(1);
        assert_eq!(n.relays[0].running(), 0);
        n.relays[0].on_response(&n.contacts[2].identity, *rpc_id, &nodes, NOW);
        assert_eq!(n.relays[0].stats().late_in, 1);
    }
}
