//! The lookups a node asks of the DHT through its own circuits (docs/protocol.md section 12.6),
//! as one sans-IO state machine: the queries, the circuits they run on and the pool of unused
//! DHT circuits.
//!
//! A node never queries the DHT from its own address for itself: each query goes through a
//! circuit whose last hop runs it, and each query gets a circuit of its own, which is retired
//! when the query ends or moves on. A last hop sees one key (one destination, one epoch's
//! descriptor) per circuit and nothing that ties it to our other queries. A few unused circuits
//! are kept built so that a query does not wait for a build.
//!
//! The client builds, uses and closes circuits through a [`CircuitContext`] the node
//! implements; finished queries wait in an outbox ([`DhtClient::take_done`]) for the node to
//! hand them to the layer that asked.

use rand::rngs::StdRng;
use rand::Rng;
use std::collections::BTreeMap;

use crate::budget::MemoryBudget;
use crate::circuit::layer::{CircEvent, CircId};
use crate::dht::lookup_msg::{LookupReply, LookupStatus, ReplyBody};
use crate::dht::message::RecordKind;
use crate::dht::store::checked_key;
use crate::dht::{Key, DHT_LOOKUP_TIMEOUT_S};
use crate::time::{Instant, Millis};
use crate::wire::record::RelayRecord;

mod query;
mod timers;
mod timing;
use query::{kind_name, op_index, op_of, records_outcome, request_of, ClientQuery, Rtt, Try};
pub use query::{DHT_HEDGE_INITIAL_MS, DHT_HEDGE_MIN_MS, DHT_TRIES_OUTSTANDING};
pub use timing::{QueryTimes, TIME_BUCKETS_MS};

/// A requester gives up a try that got no reply after this long (12.6); it has started a
/// hedge long before (`DHT_HEDGE_MIN_MS`).
pub const DHT_QUERY_WAIT_MS: Millis = (DHT_LOOKUP_TIMEOUT_S + 5) * 1000;
/// Circuits (builds or sends) a query tries before it fails. Generous, because a view holds dead
/// relays until their records expire, and a build through one fails only after its timeout.
pub const DHT_QUERY_TRIES: u8 = 5;
/// After the first FIND_VALUE reply, the rest of a multi-record answer is awaited this long.
pub const DHT_VALUE_COLLECT_MS: Millis = 3_000;
/// Unused 3-hop DHT circuits a node that visits services keeps built, so that a first
/// descriptor lookup does not wait for a build. One: lookups rarely come together, and the pool
/// refills within a build.
pub const DHT_POOL_CLIENT: usize = 1;
/// Unused 4-hop DHT circuits a node that hosts services keeps built (one publication per epoch
/// near a boundary, each on its own circuit).
pub const DHT_POOL_SERVICE: usize = 2;
/// An unused pooled DHT circuit is replaced after this long, so that a lookup rarely meets a
/// relay that died since the build.
pub const DHT_POOL_MAX_AGE_MS: Millis = 600_000;
/// After a pool circuit could not be built (no path), the next try.
pub const DHT_POOL_RETRY_MS: Millis = 2_000;
/// SAMPLE period on nodes whose view is below `VIEW_WANTED`.
pub const DHT_SAMPLE_MS: Millis = 60_000;
/// Our own queries at once.
pub const DHT_MAX_QUERIES: usize = 256;
/// Memory charged per own query (the request, collected records).
const QUERY_COST: usize = 4096;

/// What a node asks of the DHT (through one of its circuits, never from its own address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhtQuery {
    /// Every valid record stored under `key`.
    FindValue {
        /// Relay record or descriptor.
        kind: RecordKind,
        /// The DHT key (relay key or descriptor index).
        key: Key,
    },
    /// Store `record` on the replicas responsible for its key.
    Publish {
        /// Relay record or descriptor.
        kind: RecordKind,
        /// The record bytes.
        record: Vec<u8>,
    },
    /// A few random relay records from the last hop's view (relay discovery).
    Sample,
}

/// What came of a [`DhtQuery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhtOutcome {
    /// FIND_VALUE: the valid records found (highest revision per signer).
    Records(Vec<Vec<u8>>),
    /// FIND_VALUE: nothing stored under the key.
    NotFound,
    /// PUBLISH: replicas that accepted and refused.
    Published {
        /// Accepted.
        accepted: u8,
        /// Refused.
        refused: u8,
    },
    /// SAMPLE: relay records.
    Relays(Vec<RelayRecord>),
    /// No answer or no circuit (the reason, for logs).
    Failed(String),
}

/// Counters of the client side.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ClientStats {
    /// Our own queries.
    pub queries: u64,
    /// Our queries that failed.
    pub queries_failed: u64,
    /// Lookups re-sent (timeout or a refusing last hop).
    pub retries: u64,
    /// Second tries started while the first was still out (no reply within the hedge
    /// timeout).
    pub hedges: u64,
    /// Replies on our circuits that did not parse or match.
    pub bad_replies: u64,
    /// Records in replies that failed verification (forged, expired, wrong key).
    pub bad_records: u64,
    /// Relay records SAMPLE added to the view.
    pub sampled_relays: u64,
    /// Where answered queries' time went, by kind (`find_descriptor`, `find_relay`,
    /// `find_name`, `publish`, `sample`).
    pub times: BTreeMap<&'static str, QueryTimes>,
}

/// What the client needs of the node: circuits to build, use and close, the view to feed and
/// the memory budget.
pub trait CircuitContext {
    /// The memory budget queries are charged to.
    fn budget(&self) -> &MemoryBudget;
    /// The node's random choices (lookup ids).
    fn rng(&mut self) -> &mut StdRng;
    /// Starts building a DHT circuit: 3 hops (4 for `service`) ending at a relay with
    /// `FLAG_DHT` that is none of `avoid`. Its `Built` or `Closed` event comes later.
    fn build_circuit(
        &mut self,
        now: Instant,
        service: bool,
        avoid: &[[u8; 32]],
    ) -> Result<CircId, String>;
    /// The identity of a circuit's last hop.
    fn last_hop(&self, id: CircId) -> Option<[u8; 32]>;
    /// Sends a DHT_LOOKUP on a built circuit; whether it went.
    fn send_lookup(&mut self, id: CircId, payload: &[u8]) -> bool;
    /// Closes a circuit; its `Closed` event still comes.
    fn destroy_circuit(&mut self, now: Instant, id: CircId);
    /// Adds relay records a SAMPLE returned through the last hop `via` to the view; how many.
    fn add_relays(&mut self, records: Vec<RelayRecord>, via: [u8; 32], now: Instant) -> usize;
    /// Whether the view is small enough to look for more relays through the DHT.
    fn view_is_small(&self) -> bool;
}

struct DhtCirc {
    service: bool,
    ready: bool,
    /// Given to a query: it never carries another one, and closes when that query is done with
    /// it.
    taken: bool,
    created: Instant,
}

/// A finished query: its token, what came of it and the last hops its request went to.
pub type Done = (u64, DhtOutcome, Vec<[u8; 32]>);

/// The queries this node asks of the DHT and their circuits.
pub struct DhtClient {
    next_token: u64,
    circs: BTreeMap<CircId, DhtCirc>,
    queries: BTreeMap<u64, ClientQuery>,
    by_lookup_id: BTreeMap<u32, u64>,
    /// Outcomes of queries that ended while their token was being handed out: delivered on the
    /// next timer, so that an answer never arrives before `query` returns.
    deferred: Vec<Done>,
    done: Vec<Done>,
    in_query: bool,
    next_pool_try: Instant,
    next_sample: Instant,
    /// Smoothed round trips of answered tries, by op (FIND_VALUE, PUBLISH, SAMPLE).
    rtt: [Rtt; 3],
    stats: ClientStats,
}

impl Default for DhtClient {
    fn default() -> Self {
        Self::new()
    }
}

impl DhtClient {
    /// Entries of the client's tables, by table (the simulator's memory trace, issue #25).
    pub fn table_sizes(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("dhtc.circs", self.circs.len()),
            ("dhtc.queries", self.queries.len()),
            ("dhtc.by_lookup_id", self.by_lookup_id.len()),
            ("dhtc.deferred", self.deferred.len()),
            ("dhtc.done", self.done.len()),
        ]
    }

    /// No queries, no circuits.
    pub fn new() -> DhtClient {
        DhtClient {
            next_token: 1,
            circs: BTreeMap::new(),
            queries: BTreeMap::new(),
            by_lookup_id: BTreeMap::new(),
            deferred: Vec::new(),
            done: Vec::new(),
            in_query: false,
            next_pool_try: Instant::ZERO,
            next_sample: Instant::ZERO,
            rtt: [Rtt::default(); 3],
            stats: ClientStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Starts a query through circuits whose last hop is none of `avoid` (`service`: 4-hop
    /// service circuits, else 3 hops). Returns its token; its outcome comes out of
    /// [`DhtClient::take_deferred`] or [`DhtClient::take_done`] later, never before this
    /// returns.
    pub fn query<C: CircuitContext>(
        &mut self,
        ctx: &mut C,
        now: Instant,
        query: DhtQuery,
        service: bool,
        avoid: Vec<[u8; 32]>,
    ) -> u64 {
        self.in_query = true;
        let token = self.start_query(ctx, now, query, service, false, avoid);
        self.in_query = false;
        token
    }

    /// Whether `id` is one of the DHT client's circuits (its own or taken from the pool).
    pub fn owns(&self, id: CircId) -> bool {
        self.circs.contains_key(&id)
    }

    /// The last hops a running query's request went to so far.
    pub fn via(&self, token: u64) -> &[[u8; 32]] {
        self.queries.get(&token).map_or(&[], |q| &q.via)
    }

    /// Queries that ended since the last call (to hand to whoever asked).
    pub fn take_done(&mut self) -> Vec<Done> {
        std::mem::take(&mut self.done)
    }

    /// Outcomes held back while their query's token was handed out; the first thing a timer
    /// delivers.
    pub fn take_deferred(&mut self) -> Vec<Done> {
        self.in_query = false;
        std::mem::take(&mut self.deferred)
    }

    fn start_query<C: CircuitContext>(
        &mut self,
        ctx: &mut C,
        now: Instant,
        query: DhtQuery,
        service: bool,
        internal: bool,
        avoid: Vec<[u8; 32]>,
    ) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        self.stats.queries += 1;
        if let DhtQuery::Publish { kind, record } = &query {
            if !kind.len_ok(record.len()) {
                self.finish(
                    ctx,
                    now,
                    token,
                    DhtOutcome::Failed("record of the wrong length".into()),
                );
                return token;
            }
        }
        let charge = if self.queries.len() < DHT_MAX_QUERIES {
            ctx.budget().try_charge(QUERY_COST)
        } else {
            None
        };
        let Some(charge) = charge else {
            self.finish(
                ctx,
                now,
                token,
                DhtOutcome::Failed("too many DHT queries".into()),
            );
            return token;
        };
        let q = ClientQuery::new(query, service, internal, avoid, now, charge);
        self.queries.insert(token, q);
        self.dispatch(ctx, now, token);
        token
    }

    /// Ends a query: internal ones feed the view; others go to the outbox (the deferred one if
    /// we are still inside `query`). The circuits of its tries are retired.
    fn finish<C: CircuitContext>(
        &mut self,
        ctx: &mut C,
        now: Instant,
        token: u64,
        outcome: DhtOutcome,
    ) {
        let q = self.queries.remove(&token);
        let circs: Vec<CircId> = q
            .as_ref()
            .map(|q| q.tries.iter().map(|t| t.circ).collect())
            .unwrap_or_default();
        if let Some(q) = &q {
            for t in &q.tries {
                if self.by_lookup_id.get(&t.lookup_id) == Some(&token) {
                    self.by_lookup_id.remove(&t.lookup_id);
                }
            }
        }
        let via = q.as_ref().map(|q| q.via.clone()).unwrap_or_default();
        if let DhtOutcome::Failed(why) = &outcome {
            self.stats.queries_failed += 1;
            tracing::debug!(token, "DHT query failed: {why}");
        } else if let Some(q) = &q {
            if let (Some(first), Some((_, sent, reply))) = (q.first_sent, q.answer) {
                let t = self.stats.times.entry(kind_name(&q.query)).or_default();
                t.add(
                    first.saturating_since(q.started),
                    sent.saturating_since(first),
                    reply.saturating_since(sent),
                    now.saturating_since(reply),
                );
            }
        }
        if q.as_ref().is_some_and(|q| q.internal) {
            if let DhtOutcome::Relays(rs) = outcome {
                // The last hop that answered is the source: it vouches for what it sampled.
                let via = q
                    .and_then(|q| q.answer)
                    .and_then(|(id, ..)| ctx.last_hop(id));
                if let Some(via) = via {
                    let n = ctx.add_relays(rs, via, now);
                    self.stats.sampled_relays += n as u64;
                }
            }
            for id in circs {
                self.retire(ctx, now, Some(id));
            }
            return;
        }
        for id in circs {
            self.retire(ctx, now, Some(id));
        }
        if self.in_query {
            self.deferred.push((token, outcome, via));
        } else {
            self.done.push((token, outcome, via));
        }
    }

    /// Closes a circuit a query is done with: it never carries another query. Its entry goes
    /// with the `Closed` event, which is ours to consume.
    fn retire<C: CircuitContext>(&mut self, ctx: &mut C, now: Instant, circ: Option<CircId>) {
        let Some(id) = circ else { return };
        if let Some(c) = self.circs.get_mut(&id) {
            c.taken = true;
            ctx.destroy_circuit(now, id);
        }
    }

    /// Starts a try of a query on a DHT circuit of its kind that has carried nothing (building
    /// one if there is none); its last hop is none of the query's `avoid` nor the last hop of
    /// its other try. With no try out and none left, the query fails; a hedge that finds no
    /// circuit leaves the running try alone.
    fn dispatch<C: CircuitContext>(&mut self, ctx: &mut C, now: Instant, token: u64) {
        let Some(q) = self.queries.get(&token) else {
            return;
        };
        if q.started_tries >= DHT_QUERY_TRIES {
            if q.tries.is_empty() {
                let why = format!("no answer through {} circuits", q.started_tries);
                self.finish(ctx, now, token, DhtOutcome::Failed(why));
            }
            return;
        }
        let service = q.service;
        let hedge = !q.tries.is_empty();
        let mut avoid = q.avoid.clone();
        avoid.extend(q.tries.iter().filter_map(|t| ctx.last_hop(t.circ)));
        // An unused pool circuit of the kind, ready ones first (then the oldest).
        let mut pick: Option<(CircId, bool)> = None;
        for (id, c) in &self.circs {
            if c.service != service || c.taken {
                continue;
            }
            let last = ctx.last_hop(*id);
            if last.is_none_or(|r| avoid.contains(&r)) {
                continue;
            }
            if pick.is_none_or(|(p, ready)| (c.ready && !ready) || (c.ready == ready && *id < p)) {
                pick = Some((*id, c.ready));
            }
        }
        let (id, ready) = match pick {
            Some(p) => p,
            None => match self.build(ctx, now, service, &avoid) {
                Ok(id) => (id, false),
                Err(why) if hedge => {
                    tracing::debug!(token, "no circuit for a DHT hedge: {why}");
                    return;
                }
                Err(why) => {
                    self.finish(ctx, now, token, DhtOutcome::Failed(why));
                    return;
                }
            },
        };
        if let Some(c) = self.circs.get_mut(&id) {
            c.taken = true;
        }
        if let Some(q) = self.queries.get_mut(&token) {
            q.tries.push(Try::new(id, now));
            q.started_tries += 1;
        }
        if ready {
            self.send(ctx, now, token, id);
        }
    }

    fn build<C: CircuitContext>(
        &mut self,
        ctx: &mut C,
        now: Instant,
        service: bool,
        avoid: &[[u8; 32]],
    ) -> Result<CircId, String> {
        let id = ctx.build_circuit(now, service, avoid)?;
        self.circs.insert(
            id,
            DhtCirc {
                service,
                ready: false,
                taken: false,
                created: now,
            },
        );
        Ok(id)
    }

    /// Sends a query's DHT_LOOKUP on the (ready) circuit of one of its tries under a fresh
    /// `lookup_id`.
    fn send<C: CircuitContext>(&mut self, ctx: &mut C, now: Instant, token: u64, circ: CircId) {
        let lookup_id = loop {
            let id: u32 = ctx.rng().gen();
            if !self.by_lookup_id.contains_key(&id) {
                break id;
            }
        };
        let Some(q) = self.queries.get_mut(&token) else {
            return;
        };
        let bytes = request_of(&q.query, lookup_id).emit();
        let Some(t) = q.try_on(circ) else { return };
        t.lookup_id = lookup_id;
        t.sent = true;
        t.sent_at = now;
        t.seen.clear();
        t.total = 0;
        t.junk = false;
        t.first_reply = None;
        q.first_sent = q.first_sent.or(Some(now));
        if let Some(last) = ctx.last_hop(circ) {
            if !q.via.contains(&last) {
                q.via.push(last);
            }
        }
        self.by_lookup_id.insert(lookup_id, token);
        if !ctx.send_lookup(circ, &bytes) {
            self.retry(ctx, now, token, circ);
        }
    }

    /// Gives up one try of a query (its last hop refused or never answered, or its circuit
    /// closed) and retires its circuit; the query goes on with its other try, or at once on a
    /// fresh circuit if none is out.
    fn retry<C: CircuitContext>(&mut self, ctx: &mut C, now: Instant, token: u64, circ: CircId) {
        let Some(q) = self.queries.get_mut(&token) else {
            return;
        };
        let Some(at) = q.tries.iter().position(|t| t.circ == circ) else {
            return;
        };
        self.stats.retries += 1;
        let t = q.tries.remove(at);
        // The hedge of the tries left (if this was it) is gone: they may get another.
        for o in &mut q.tries {
            o.hedged = false;
        }
        if q.records.is_empty() && q.answer.is_some_and(|(c, ..)| c == circ) {
            // Its answer brought nothing: the time split counts the answer that ends the query.
            q.answer = None;
        }
        if self.by_lookup_id.get(&t.lookup_id) == Some(&token) {
            self.by_lookup_id.remove(&t.lookup_id);
        }
        self.retire(ctx, now, Some(circ));
        self.top_up(ctx, now, token);
    }

    /// Starts a try if the query has none out, or a hedge if one of its tries is past its
    /// hedge timeout and there is room.
    fn top_up<C: CircuitContext>(&mut self, ctx: &mut C, now: Instant, token: u64) {
        let Some(q) = self.queries.get_mut(&token) else {
            return;
        };
        if q.tries.is_empty() {
            self.dispatch(ctx, now, token);
            return;
        }
        let after = self
            .rtt
            .get(op_index(&q.query))
            .map_or(DHT_HEDGE_INITIAL_MS, Rtt::hedge_after);
        let Some(at) = q.hedge_at(after, DHT_QUERY_TRIES) else {
            return;
        };
        if at > now {
            return;
        }
        for t in q.tries.iter_mut().filter(|t| t.first_reply.is_none()) {
            t.hedged = true;
        }
        let out = q.tries.len();
        self.dispatch(ctx, now, token);
        if self
            .queries
            .get(&token)
            .is_some_and(|q| q.tries.len() > out)
        {
            self.stats.hedges += 1;
        }
    }

    /// How long a sent try of this query's op waits for a reply before it gets a hedge.
    fn hedge_after(&self, q: &DhtQuery) -> Millis {
        self.rtt
            .get(op_index(q))
            .map_or(DHT_HEDGE_INITIAL_MS, Rtt::hedge_after)
    }

    /// A DHT_LOOKUP_REPLY on circuit `id`; `false` if the circuit is not ours.
    pub fn on_reply<C: CircuitContext>(
        &mut self,
        ctx: &mut C,
        now: Instant,
        id: CircId,
        payload: &[u8],
    ) -> bool {
        if !self.circs.contains_key(&id) {
            return false;
        }
        let reply = match LookupReply::parse(payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(circuit = id.0, "DHT_LOOKUP_REPLY refused: {e}");
                self.stats.bad_replies += 1;
                return true;
            }
        };
        let Some(token) = self.by_lookup_id.get(&reply.lookup_id).copied() else {
            return true;
        };
        let Some(q) = self.queries.get_mut(&token) else {
            return true;
        };
        let status = reply.status;
        let refusal = matches!(
            status,
            LookupStatus::Timeout | LookupStatus::RateLimited | LookupStatus::Refused
        );
        let op = op_index(&q.query);
        let Some(t) = q
            .tries
            .iter_mut()
            .find(|t| t.circ == id && t.sent && t.lookup_id == reply.lookup_id)
        else {
            self.stats.bad_replies += 1;
            return true;
        };
        if t.first_reply.is_none() && !refusal {
            // Each try has a lookup id of its own: the sample is the round trip of this one.
            if let Some(r) = self.rtt.get_mut(op) {
                r.sample(now.saturating_since(t.sent_at));
            }
            q.answer = q.answer.or(Some((id, t.sent_at, now)));
        }
        t.first_reply = t.first_reply.or(Some(now));
        let outcome = match (&q.query, status, reply.body) {
            (
                DhtQuery::FindValue { kind, key },
                LookupStatus::Ok,
                ReplyBody::FindValue {
                    seq_no,
                    total,
                    record,
                },
            ) => {
                match checked_key(*kind, &record, now) {
                    Some((k, signer, version)) if k == *key => {
                        let better = q.records.get(&signer).is_none_or(|(v, _)| version > *v);
                        if better {
                            q.records.insert(signer, (version, record));
                        }
                    }
                    _ => {
                        self.stats.bad_records += 1;
                        t.junk = true;
                    }
                }
                if !t.seen.contains(&seq_no) {
                    t.seen.push(seq_no);
                }
                t.total = t.total.max(total);
                let complete = t.seen.len() >= usize::from(t.total);
                if complete && q.records.is_empty() && t.junk {
                    // Only junk from this last hop: ask through another one.
                    self.retry(ctx, now, token, id);
                    return true;
                } else if complete {
                    Some(records_outcome(q))
                } else {
                    let until = now + DHT_VALUE_COLLECT_MS;
                    q.collect_until = Some(q.collect_until.map_or(until, |c| c.min(until)));
                    None
                }
            }
            (DhtQuery::FindValue { .. }, LookupStatus::NotFound, ReplyBody::FindValue { .. }) => {
                Some(records_outcome(q))
            }
            (
                DhtQuery::Publish { .. },
                LookupStatus::Ok | LookupStatus::Stale | LookupStatus::Timeout,
                ReplyBody::Publish { accepted, refused },
            ) => Some(DhtOutcome::Published { accepted, refused }),
            (DhtQuery::Publish { .. }, LookupStatus::Invalid, ReplyBody::Publish { .. }) => Some(
                DhtOutcome::Failed("the DHT relay refused the record as invalid".into()),
            ),
            (DhtQuery::Sample, LookupStatus::Ok, ReplyBody::Sample(rs)) => {
                let mut relays = Vec::new();
                for b in rs {
                    match RelayRecord::parse(&b, now.as_unix_ms()) {
                        Ok(r) if r.is_relay() => relays.push(r),
                        _ => self.stats.bad_records += 1,
                    }
                }
                Some(DhtOutcome::Relays(relays))
            }
            (_, LookupStatus::Timeout | LookupStatus::RateLimited | LookupStatus::Refused, b)
                if b.op() == op_of(&q.query) =>
            {
                self.retry(ctx, now, token, id);
                return true;
            }
            _ => {
                self.stats.bad_replies += 1;
                return true;
            }
        };
        if let Some(o) = outcome {
            self.finish(ctx, now, token, o);
        }
        true
    }

    /// Circuit events for DHT circuits are consumed (`None`); others are handed back.
    pub fn on_circuit_event<C: CircuitContext>(
        &mut self,
        ctx: &mut C,
        now: Instant,
        e: CircEvent,
    ) -> Option<CircEvent> {
        match &e {
            CircEvent::Built { id, .. } if self.circs.contains_key(id) => {
                let id = *id;
                if let Some(c) = self.circs.get_mut(&id) {
                    c.ready = true;
                }
                let mut waiting: Vec<u64> = self
                    .queries
                    .iter()
                    .filter(|(_, q)| q.tries.iter().any(|t| t.circ == id && !t.sent))
                    .map(|(t, _)| *t)
                    .collect();
                waiting.sort_unstable();
                for t in waiting {
                    self.send(ctx, now, t, id);
                }
                None
            }
            CircEvent::Closed { id, .. } if self.circs.contains_key(id) => {
                let id = *id;
                if self.circs.remove(&id).is_some_and(|c| !c.ready && !c.taken) {
                    // A pool build that failed: not again at once.
                    self.next_pool_try = now + DHT_POOL_RETRY_MS;
                }
                // The try on it moves on at once (the query's other try, if out, goes on).
                let mut on_it: Vec<u64> = self
                    .queries
                    .iter()
                    .filter(|(_, q)| q.tries.iter().any(|t| t.circ == id))
                    .map(|(t, _)| *t)
                    .collect();
                on_it.sort_unstable();
                for t in on_it {
                    self.retry(ctx, now, t, id);
                }
                None
            }
            CircEvent::Extended { id, .. } | CircEvent::Message { id, .. }
                if self.circs.contains_key(id) =>
            {
                None
            }
            _ => Some(e),
        }
    }
}

#[cfg(test)]
mod tests;
