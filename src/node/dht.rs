//! The DHT joined to a node (docs/protocol.md section 12): the DHT relay (its routing table,
//! store and lookups, over DHT_REQUEST/DHT_RESPONSE link frames), the DHT_LOOKUP role at the last
//! hop of other people's circuits (12.6), and the lookups this node asks for through its own
//! circuits.
//!
//! The protocol logic lives in [`crate::dht::relay::DhtRelay`] and the message formats in
//! [`crate::dht::lookup_msg`]; this file moves their requests onto links (dialing contacts and
//! holding a bounded queue meanwhile), answers circuits, and keeps the client side's queries
//! and circuits. A node never queries the DHT from its own address for itself: its own lookups
//! go through a circuit whose last hop runs them. Nothing kept for a last-hop lookup outlives the
//! reply or the circuit.
//!
//! Each of our queries gets a circuit of its own, which is retired when the query ends or moves
//! on: a last hop sees one key (one destination, one epoch's descriptor) per circuit and nothing
//! that ties it to our other queries. A few unused circuits are kept built so that a query does
//! not wait for a build (12.6).

use rand::Rng;
use std::collections::HashMap;
use std::net::SocketAddr;

use crate::budget::Charge;
use crate::circuit::layer::{CircEvent, CircId, Purpose};
use crate::circuit::path::{PathContext, PathKind, PathRules, Target as PathTarget, Vanguards};
use crate::crypto::Randomness;
use crate::dht::lookup::Target;
use crate::dht::lookup_msg::{
    salvage_ids, LookupOp, LookupReply, LookupRequest, LookupStatus, ReplyBody, DHT_SAMPLE_MAX,
};
use crate::dht::message::{RecordKind, StoreStatus, DHT_MAX_CONTACTS};
use crate::dht::relay::{DhtRelay, OpHandle, OpResult, RelayOut};
use crate::dht::store::checked_key;
use crate::dht::{Key, DHT_LOOKUP_TIMEOUT_S, DHT_RPC_TIMEOUT_MS};
use crate::link::nat::RateWindow;
use crate::link::view::VIEW_MAX;
use crate::link::LinkId;
use crate::time::Millis;
use crate::wire::record::{Contact, RelayRecord, FLAG_DHT, RELAY_RECORD_REPUBLISH_S};
use crate::wire::relay::RelayCommand;

use super::{Node, NodeEvent};

/// Lookups one circuit may have running at its last hop (`DHT_LOOKUPS_CONCURRENT`).
pub const DHT_LOOKUPS_CONCURRENT: u8 = 4;
/// Lookups one circuit may start per minute (`DHT_LOOKUPS_PER_MIN`).
pub const DHT_LOOKUPS_PER_MIN: u32 = 30;
/// A requester re-sends a lookup that got no reply after this long (12.6).
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
/// Routing-table refresh period (a self-lookup and one random key).
pub const DHT_REFRESH_MS: Millis = 900_000;
/// Refresh period while the table holds fewer than `DHT_K` contacts.
pub const DHT_REFRESH_SMALL_MS: Millis = 30_000;
/// How often a DHT relay checks whether its own record needs publishing.
pub const DHT_PUBLISH_CHECK_MS: Millis = 60_000;
/// Store expiry sweep period.
pub const DHT_EXPIRE_MS: Millis = 60_000;
/// SAMPLE period on nodes whose view is below `VIEW_WANTED`.
pub const DHT_SAMPLE_MS: Millis = 60_000;
/// Requests waiting for a link to their contact, in total.
pub const DHT_MAX_WAITING: usize = 256;
/// Requests waiting for one contact.
pub const DHT_MAX_WAITING_PER_CONTACT: usize = 8;
/// Our own queries at once.
pub const DHT_MAX_QUERIES: usize = 256;
/// Circuits with last-hop DHT state at once.
pub const DHT_MAX_ROLE_SLOTS: usize = 4096;
/// Memory charged per waiting request (the frame and its entry).
const WAITING_COST: usize = 1536;
/// Memory charged per own query (the request, collected records).
const QUERY_COST: usize = 4096;
/// Memory charged per circuit with last-hop DHT state.
const ROLE_SLOT_COST: usize = 128;
/// Contacts of links are scanned into the routing table this often.
const SCAN_MS: Millis = 500;

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

/// Counters of the node's DHT parts, for status and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DhtStats {
    /// DHT_LOOKUPs received as a last hop.
    pub role_requests: u64,
    /// Of those, refused (malformed, limits, not a DHT relay).
    pub role_refused: u64,
    /// DHT_LOOKUP_REPLYs sent as a last hop.
    pub role_replies: u64,
    /// Our own queries.
    pub queries: u64,
    /// Our queries that failed.
    pub queries_failed: u64,
    /// Lookups re-sent (timeout or a refusing last hop).
    pub retries: u64,
    /// Replies on our circuits that did not parse or match.
    pub bad_replies: u64,
    /// Records in replies that failed verification (forged, expired, wrong key).
    pub bad_records: u64,
    /// Relay records SAMPLE added to the view.
    pub sampled_relays: u64,
    /// Requests for contacts dropped because the waiting queue was full.
    pub unsendable: u64,
    /// Publications of our own relay record (and replicas that took the last one).
    pub own_publications: u64,
    /// Replicas that accepted our last own publication.
    pub own_accepted: u8,
}

/// What a last hop saw of one DHT_LOOKUP, kept only while a test asks for it
/// ([`Node::dht_observe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSeen {
    /// The relayed circuit it came on.
    pub slot: u64,
    /// What was asked.
    pub op: LookupOp,
    /// The key looked up, or the key of the published record (zero for SAMPLE).
    pub key: Key,
    /// When.
    pub at: Millis,
}

struct Waiting {
    frames: Vec<(u64, Vec<u8>, Millis, Charge)>,
}

/// Last-hop state of one relayed circuit.
struct RoleSlot {
    active: u8,
    minute: RateWindow,
    _charge: Charge,
}

struct RoleOp {
    slot: u64,
    lookup_id: u32,
    op: LookupOp,
    kind: Option<RecordKind>,
    key: Key,
}

enum OwnOp {
    Refresh,
    PublishSelf { seq: u64 },
}

struct DhtCirc {
    service: bool,
    ready: bool,
    /// Given to a query: it never carries another one, and closes when that query is done with
    /// it.
    taken: bool,
    created: Millis,
}

struct ClientQuery {
    query: DhtQuery,
    service: bool,
    internal: bool,
    circ: Option<CircId>,
    sent: bool,
    lookup_id: u32,
    deadline: Millis,
    tries: u8,
    seen: Vec<u8>,
    total: u8,
    /// This attempt's last hop sent a record that failed verification.
    junk: bool,
    /// Relays that must not be the last hop of this query's circuits.
    avoid: Vec<[u8; 32]>,
    /// Last hops the request went to (every attempt).
    via: Vec<[u8; 32]>,
    records: HashMap<[u8; 32], (u64, Vec<u8>)>,
    _charge: Charge,
}

/// The node's DHT state.
pub struct NodeDht {
    next_token: u64,
    relay: Option<DhtRelay>,
    rand: Randomness,
    hostile: bool,
    waiting: HashMap<[u8; 32], Waiting>,
    waiting_total: usize,
    slots: HashMap<u64, RoleSlot>,
    role_ops: HashMap<OpHandle, RoleOp>,
    own_ops: HashMap<OpHandle, OwnOp>,
    circs: HashMap<CircId, DhtCirc>,
    queries: HashMap<u64, ClientQuery>,
    by_lookup_id: HashMap<u32, u64>,
    deferred: Vec<(u64, DhtOutcome, Vec<[u8; 32]>)>,
    in_query: bool,
    next_pool_try: Millis,
    observe: Option<Vec<RoleSeen>>,
    vanguards: Vanguards,
    next_scan: Millis,
    next_refresh: Millis,
    next_publish: Millis,
    published: Option<(u64, Millis)>,
    next_expire: Millis,
    next_sample: Millis,
    stats: DhtStats,
}

impl NodeDht {
    pub(crate) fn new(rand: Randomness) -> NodeDht {
        NodeDht {
            next_token: 1,
            relay: None,
            rand,
            hostile: false,
            waiting: HashMap::new(),
            waiting_total: 0,
            slots: HashMap::new(),
            role_ops: HashMap::new(),
            own_ops: HashMap::new(),
            circs: HashMap::new(),
            queries: HashMap::new(),
            by_lookup_id: HashMap::new(),
            deferred: Vec::new(),
            in_query: false,
            next_pool_try: 0,
            observe: None,
            vanguards: Vanguards::new(),
            next_scan: 0,
            next_refresh: 0,
            next_publish: 0,
            published: None,
            next_expire: 0,
            next_sample: 0,
            stats: DhtStats::default(),
        }
    }
}

fn request_of(q: &DhtQuery, lookup_id: u32) -> LookupRequest {
    let (op, kind, key, record) = match q {
        DhtQuery::FindValue { kind, key } => (LookupOp::FindValue, Some(*kind), *key, Vec::new()),
        DhtQuery::Publish { kind, record } => {
            (LookupOp::Publish, Some(*kind), [0; 32], record.clone())
        }
        DhtQuery::Sample => (LookupOp::Sample, None, [0; 32], Vec::new()),
    };
    LookupRequest {
        op,
        kind,
        lookup_id,
        key,
        record,
    }
}

impl Node {
    /// Starts a DHT query through one of our circuits (`service`: a 4-hop service circuit,
    /// else 3 hops). The answer arrives as [`NodeEvent::Dht`] with the returned token (or is
    /// consumed by the session layer when it asked). It never arrives before this returns.
    pub fn dht_query(&mut self, now: Millis, query: DhtQuery, service: bool) -> u64 {
        self.dht_query_avoiding(now, query, service, Vec::new())
    }

    /// [`Node::dht_query`] through circuits whose last hop is none of `avoid`.
    pub(super) fn dht_query_avoiding(
        &mut self,
        now: Millis,
        query: DhtQuery,
        service: bool,
        avoid: Vec<[u8; 32]>,
    ) -> u64 {
        self.dht.in_query = true;
        let token = self.dht_start_query(now, query, service, false, avoid);
        self.dht.in_query = false;
        token
    }

    /// The last hops a running query's request went to so far.
    pub(super) fn dht_query_via(&self, token: u64) -> &[[u8; 32]] {
        self.dht.queries.get(&token).map_or(&[], |q| &q.via)
    }

    /// Test hook: while on, every DHT_LOOKUP this node receives as a last hop is logged (the
    /// circuit, the op, the key) so that tests can check what one relay sees. Turning it off
    /// drops the log. A node keeps nothing of the kind otherwise.
    #[doc(hidden)]
    pub fn dht_observe(&mut self, on: bool) {
        self.dht.observe = on.then(Vec::new);
    }

    /// What this node saw as a last hop since [`Node::dht_observe`] turned the log on.
    #[doc(hidden)]
    pub fn dht_observed(&self) -> &[RoleSeen] {
        self.dht.observe.as_deref().unwrap_or(&[])
    }

    /// Counters of the DHT parts.
    pub fn dht_stats(&self) -> &DhtStats {
        &self.dht.stats
    }

    /// The DHT relay (routing table, store), once this node is one.
    pub fn dht_relay(&self) -> Option<&DhtRelay> {
        self.dht.relay.as_ref()
    }

    /// Test hook: a hostile DHT relay answers every DHT request and DHT_LOOKUP with junk and
    /// acknowledges STOREs without storing. For tests that show hostile relays do not stop
    /// lookups; nothing else calls it.
    #[doc(hidden)]
    pub fn dht_set_hostile(&mut self, hostile: bool) {
        self.dht.hostile = hostile;
    }

    fn dht_start_query(
        &mut self,
        now: Millis,
        query: DhtQuery,
        service: bool,
        internal: bool,
        avoid: Vec<[u8; 32]>,
    ) -> u64 {
        let token = self.dht.next_token;
        self.dht.next_token += 1;
        self.dht.stats.queries += 1;
        if let DhtQuery::Publish { kind, record } = &query {
            if record.len() != kind.record_len() {
                self.dht_finish(
                    now,
                    token,
                    DhtOutcome::Failed("record of the wrong length".into()),
                );
                return token;
            }
        }
        let charge = if self.dht.queries.len() < DHT_MAX_QUERIES {
            self.link.budget().try_charge(QUERY_COST)
        } else {
            None
        };
        let Some(charge) = charge else {
            self.dht_finish(
                now,
                token,
                DhtOutcome::Failed("too many DHT queries".into()),
            );
            return token;
        };
        self.dht.queries.insert(
            token,
            ClientQuery {
                query,
                service,
                internal,
                circ: None,
                sent: false,
                lookup_id: 0,
                deadline: 0,
                tries: 0,
                seen: Vec::new(),
                total: 0,
                junk: false,
                avoid,
                via: Vec::new(),
                records: HashMap::new(),
                _charge: charge,
            },
        );
        self.dht_dispatch(now, token);
        token
    }

    /// Delivers an outcome to the session layer (with the last hops the request went to), or
    /// reports it.
    fn dht_done(&mut self, now: Millis, token: u64, outcome: DhtOutcome, via: Vec<[u8; 32]>) {
        if let Some(outcome) = self.sess_on_dht(now, token, outcome, via) {
            self.events.push(NodeEvent::Dht { token, outcome });
        }
    }

    /// Ends a query: internal ones feed the view; others go to `dht_done` (later, if we are
    /// still inside `dht_query`). Its circuit is retired.
    fn dht_finish(&mut self, now: Millis, token: u64, outcome: DhtOutcome) {
        let q = self.dht.queries.remove(&token);
        if let Some(q) = &q {
            if self.dht.by_lookup_id.get(&q.lookup_id) == Some(&token) {
                self.dht.by_lookup_id.remove(&q.lookup_id);
            }
        }
        let circ = q.as_ref().and_then(|q| q.circ);
        let via = q.as_ref().map(|q| q.via.clone()).unwrap_or_default();
        if let DhtOutcome::Failed(why) = &outcome {
            self.dht.stats.queries_failed += 1;
            tracing::debug!(token, "DHT query failed: {why}");
        }
        if q.as_ref().is_some_and(|q| q.internal) {
            if let DhtOutcome::Relays(rs) = outcome {
                // The last hop that answered is the source: it vouches for what it sampled.
                let via = q.and_then(|q| q.circ).and_then(|id| {
                    self.circ
                        .path(id)
                        .and_then(|p| p.last().map(|r| *r.identity()))
                });
                if let Some(via) = via {
                    let n = self.link.add_dht_records(rs, via, now);
                    self.dht.stats.sampled_relays += n as u64;
                }
            }
            self.dht_retire(now, circ);
            return;
        }
        self.dht_retire(now, circ);
        if self.dht.in_query {
            self.dht.deferred.push((token, outcome, via));
        } else {
            self.dht_done(now, token, outcome, via);
        }
    }

    /// Closes a circuit a query is done with: it never carries another query. Its entry goes
    /// with the `Closed` event, which is ours to consume.
    fn dht_retire(&mut self, now: Millis, circ: Option<CircId>) {
        let Some(id) = circ else { return };
        if let Some(c) = self.dht.circs.get_mut(&id) {
            c.taken = true;
            self.circ.destroy(now, id);
        }
    }

    /// Puts a query on a DHT circuit of its kind, building one if there is none.
    fn dht_dispatch(&mut self, now: Millis, token: u64) {
        let Some(q) = self.dht.queries.get(&token) else {
            return;
        };
        if q.tries >= DHT_QUERY_TRIES {
            let why = format!("no answer through {} circuits", q.tries);
            self.dht_finish(now, token, DhtOutcome::Failed(why));
            return;
        }
        let service = q.service;
        let avoid = q.avoid.clone();
        // An unused pool circuit of the kind, ready ones first (then the oldest).
        let mut pick: Option<(CircId, bool)> = None;
        for (id, c) in &self.dht.circs {
            if c.service != service || c.taken {
                continue;
            }
            let last = self.circ.path(*id).and_then(|p| p.last());
            if last.is_none_or(|r| avoid.contains(r.identity())) {
                continue;
            }
            if pick.is_none_or(|(p, ready)| (c.ready && !ready) || (c.ready == ready && *id < p)) {
                pick = Some((*id, c.ready));
            }
        }
        let (id, ready) = match pick {
            Some(p) => p,
            None => match self.dht_build(now, service, &avoid) {
                Ok(id) => (id, false),
                Err(why) => {
                    self.dht_finish(now, token, DhtOutcome::Failed(why));
                    return;
                }
            },
        };
        if let Some(c) = self.dht.circs.get_mut(&id) {
            c.taken = true;
        }
        if let Some(q) = self.dht.queries.get_mut(&token) {
            q.circ = Some(id);
            q.sent = false;
            q.tries += 1;
        }
        if ready {
            self.dht_send(now, token);
        }
    }

    /// Builds a DHT circuit: 3 hops (4 for services) ending at a relay with `FLAG_DHT` that is
    /// none of `avoid`.
    fn dht_build(
        &mut self,
        now: Millis,
        service: bool,
        avoid: &[[u8; 32]],
    ) -> Result<CircId, String> {
        let own_endpoints: Vec<SocketAddr> = match self.link.own_record() {
            Some(r) => r.fields().endpoints.clone(),
            None => self.link.observed().into_iter().collect(),
        };
        let ctx = PathContext {
            view: self.link.view(),
            rules: PathRules {
                ipv4_bits: self.prefix_bits.0,
                ipv6_bits: self.prefix_bits.1,
            },
            own_endpoints: &own_endpoints,
            now,
        };
        let kind = if service {
            self.dht
                .vanguards
                .maintain(&ctx, &self.guards, &mut self.rng);
            PathKind::Service(PathTarget::Any(FLAG_DHT))
        } else {
            PathKind::Client(PathTarget::Any(FLAG_DHT))
        };
        let vanguards = service.then_some(&self.dht.vanguards);
        // A few draws for a last hop outside `avoid`; a network too small for that fails the
        // query rather than use a relay we promised ourselves not to.
        let mut path = None;
        for _ in 0..8 {
            let p = ctx
                .select(kind.clone(), &self.guards, vanguards, &mut self.rng)
                .map_err(|e| format!("no DHT circuit: {e}"))?;
            if p.hops()
                .last()
                .is_some_and(|h| !avoid.contains(&h.identity))
            {
                path = Some(p);
                break;
            }
        }
        let path = path.ok_or_else(|| {
            format!(
                "no DHT circuit: no last hop outside the {} to avoid",
                avoid.len()
            )
        })?;
        let records = path
            .hops()
            .iter()
            .map(|h| ctx.view.get(&h.identity).cloned())
            .collect::<Option<Vec<RelayRecord>>>()
            .ok_or_else(|| "no DHT circuit: a hop left the view".to_string())?;
        let first = records
            .first()
            .and_then(|r| self.link.link_to(r.identity()));
        let id = self
            .circ
            .build(now, Purpose::Dht, records, first)
            .map_err(|e| format!("no DHT circuit: {e}"))?;
        self.dht.circs.insert(
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

    /// Sends a query's DHT_LOOKUP on its (ready) circuit under a fresh `lookup_id`.
    fn dht_send(&mut self, now: Millis, token: u64) {
        let lookup_id = loop {
            let id: u32 = self.rng.gen();
            if !self.dht.by_lookup_id.contains_key(&id) {
                break id;
            }
        };
        let Some(q) = self.dht.queries.get_mut(&token) else {
            return;
        };
        let Some(id) = q.circ else { return };
        self.dht.by_lookup_id.remove(&q.lookup_id);
        q.lookup_id = lookup_id;
        q.sent = true;
        q.deadline = now + DHT_QUERY_WAIT_MS;
        q.seen.clear();
        q.total = 0;
        q.junk = false;
        let bytes = request_of(&q.query, lookup_id).emit();
        if let Some(last) = self.circ.path(id).and_then(|p| p.last()) {
            if !q.via.contains(last.identity()) {
                q.via.push(*last.identity());
            }
        }
        self.dht.by_lookup_id.insert(lookup_id, token);
        if self.circ.send(id, RelayCommand::DhtLookup, &bytes).is_err() {
            self.dht_retry(now, token);
        }
    }

    /// Tries a query again on a fresh circuit (its last hop refused or never answered, or the
    /// circuit closed); the old circuit is retired.
    fn dht_retry(&mut self, now: Millis, token: u64) {
        self.dht.stats.retries += 1;
        let Some(q) = self.dht.queries.get_mut(&token) else {
            return;
        };
        q.sent = false;
        let circ = q.circ.take();
        if self.dht.by_lookup_id.get(&q.lookup_id) == Some(&token) {
            self.dht.by_lookup_id.remove(&q.lookup_id);
        }
        self.dht_retire(now, circ);
        self.dht_dispatch(now, token);
    }

    /// A DHT_LOOKUP_REPLY on one of our circuits; `false` if it was not ours.
    pub(super) fn dht_on_reply(&mut self, now: Millis, id: CircId, payload: &[u8]) -> bool {
        if !self.dht.circs.contains_key(&id) {
            return false;
        }
        let reply = match LookupReply::parse(payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(circuit = id.0, "DHT_LOOKUP_REPLY refused: {e}");
                self.dht.stats.bad_replies += 1;
                return true;
            }
        };
        let Some(token) = self.dht.by_lookup_id.get(&reply.lookup_id).copied() else {
            return true;
        };
        let Some(q) = self.dht.queries.get_mut(&token) else {
            return true;
        };
        if q.circ != Some(id) || !q.sent {
            self.dht.stats.bad_replies += 1;
            return true;
        }
        let status = reply.status;
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
                        self.dht.stats.bad_records += 1;
                        q.junk = true;
                    }
                }
                if !q.seen.contains(&seq_no) {
                    q.seen.push(seq_no);
                }
                q.total = q.total.max(total);
                if q.seen.len() >= usize::from(q.total) && q.records.is_empty() && q.junk {
                    // Only junk from this last hop: ask through another one.
                    self.dht_retry(now, token);
                    return true;
                } else if q.seen.len() >= usize::from(q.total) {
                    Some(records_outcome(q))
                } else {
                    q.deadline = q.deadline.min(now + DHT_VALUE_COLLECT_MS);
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
                    match RelayRecord::parse(&b, now) {
                        Ok(r) if r.is_relay() => relays.push(r),
                        _ => self.dht.stats.bad_records += 1,
                    }
                }
                Some(DhtOutcome::Relays(relays))
            }
            (_, LookupStatus::Timeout | LookupStatus::RateLimited | LookupStatus::Refused, b)
                if b.op() == op_of(&q.query) =>
            {
                self.dht_retry(now, token);
                return true;
            }
            _ => {
                self.dht.stats.bad_replies += 1;
                return true;
            }
        };
        if let Some(o) = outcome {
            self.dht_finish(now, token, o);
        }
        true
    }

    /// Circuit events for DHT circuits are consumed (`None`); others are handed back.
    pub(super) fn dht_on_circuit_event(&mut self, now: Millis, e: CircEvent) -> Option<CircEvent> {
        match &e {
            CircEvent::Built { id, .. } if self.dht.circs.contains_key(id) => {
                let id = *id;
                if let Some(c) = self.dht.circs.get_mut(&id) {
                    c.ready = true;
                }
                let mut waiting: Vec<u64> = self
                    .dht
                    .queries
                    .iter()
                    .filter(|(_, q)| q.circ == Some(id) && !q.sent)
                    .map(|(t, _)| *t)
                    .collect();
                waiting.sort_unstable();
                for t in waiting {
                    self.dht_send(now, t);
                }
                None
            }
            CircEvent::Closed { id, .. } if self.dht.circs.contains_key(id) => {
                let id = *id;
                if self
                    .dht
                    .circs
                    .remove(&id)
                    .is_some_and(|c| !c.ready && !c.taken)
                {
                    // A pool build that failed: not again at once.
                    self.dht.next_pool_try = now + DHT_POOL_RETRY_MS;
                }
                let mut on_it: Vec<u64> = self
                    .dht
                    .queries
                    .iter()
                    .filter(|(_, q)| q.circ == Some(id))
                    .map(|(t, _)| *t)
                    .collect();
                on_it.sort_unstable();
                for t in on_it {
                    self.dht_retry(now, t);
                }
                None
            }
            CircEvent::Extended { id, .. } | CircEvent::Message { id, .. }
                if self.dht.circs.contains_key(id) =>
            {
                None
            }
            _ => Some(e),
        }
    }

    // ---- the DHT relay -------------------------------------------------------------------

    fn dht_is_relay(&self) -> bool {
        self.link
            .own_record()
            .is_some_and(|r| r.fields().flags & FLAG_DHT != 0)
    }

    pub(super) fn dht_on_frame(
        &mut self,
        now: Millis,
        link: LinkId,
        rpc_id: u64,
        response: bool,
        data: &[u8],
    ) {
        let serving = self.dht_is_relay();
        let Some(identity) = self.link.identity_of(link) else {
            return;
        };
        let hostile = self.dht.hostile;
        let Some(relay) = self.dht.relay.as_mut() else {
            return;
        };
        if response {
            relay.on_response(&identity, rpc_id, data, now);
        } else if serving {
            let reply = if hostile {
                // Junk: a NODES message claiming more contacts than allowed.
                Some(vec![1, 2, 0, 0, 9])
            } else {
                self.link
                    .endpoint_of(link)
                    .and_then(|ep| relay.respond(data, ep.ip(), now))
            };
            if let Some(reply) = reply {
                let _ = self.link.send_dht(now, link, rpc_id, true, &reply);
            }
        }
        self.dht_pump_relay(now);
    }

    /// Moves the relay's requests onto links and its finished operations to their owners.
    fn dht_pump_relay(&mut self, now: Millis) {
        loop {
            let outs = match self.dht.relay.as_mut() {
                Some(r) => r.take_out(),
                None => return,
            };
            if outs.is_empty() {
                return;
            }
            for o in outs {
                match o {
                    RelayOut::Request { to, rpc_id, data } => {
                        self.dht_send_request(now, to, rpc_id, data)
                    }
                    RelayOut::Done { handle, result } => self.dht_op_done(now, handle, result),
                }
            }
        }
    }

    /// Sends a DHT request to a contact, dialing it first (the request waits, bounded).
    fn dht_send_request(&mut self, now: Millis, to: Contact, rpc_id: u64, data: Vec<u8>) {
        if let Some(l) = self.link.link_to(&to.identity) {
            if self.link.send_dht(now, l, rpc_id, false, &data).is_ok() {
                return;
            }
        }
        let queued = self
            .dht
            .waiting
            .get(&to.identity)
            .map_or(0, |w| w.frames.len());
        let charge =
            if self.dht.waiting_total < DHT_MAX_WAITING && queued < DHT_MAX_WAITING_PER_CONTACT {
                self.link.budget().try_charge(WAITING_COST)
            } else {
                None
            };
        // Dropped requests time out in their lookup like lost ones.
        let Some(charge) = charge else {
            self.dht.stats.unsendable += 1;
            return;
        };
        self.dht
            .waiting
            .entry(to.identity)
            .or_insert_with(|| Waiting { frames: Vec::new() })
            .frames
            .push((rpc_id, data, now, charge));
        self.dht.waiting_total += 1;
        let _ = self.link.connect_dht(now, to.link_key, to.endpoint);
    }

    /// Sends what waits for links that came up; drops what waited longer than a request lives.
    fn dht_flush_waiting(&mut self, now: Millis) {
        let mut ids: Vec<[u8; 32]> = self.dht.waiting.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let link = self.link.link_to(&id);
            let Some(w) = self.dht.waiting.get_mut(&id) else {
                continue;
            };
            let frames = std::mem::take(&mut w.frames);
            let mut keep = Vec::new();
            for f in frames {
                if let Some(l) = link {
                    let _ = self.link.send_dht(now, l, f.0, false, &f.1);
                } else if now.saturating_sub(f.2) < DHT_RPC_TIMEOUT_MS {
                    keep.push(f);
                }
            }
            if keep.is_empty() {
                self.dht.waiting.remove(&id);
            } else if let Some(w) = self.dht.waiting.get_mut(&id) {
                w.frames = keep;
            }
        }
        self.dht.waiting_total = self.dht.waiting.values().map(|w| w.frames.len()).sum();
    }

    fn dht_op_done(&mut self, now: Millis, handle: OpHandle, result: OpResult) {
        if let Some(r) = self.dht.role_ops.remove(&handle) {
            if let Some(s) = self.dht.slots.get_mut(&r.slot) {
                s.active = s.active.saturating_sub(1);
            }
            self.dht_role_reply(now, r, result);
            return;
        }
        // Refresh lookups only feed the routing table, which the relay did already.
        if let (Some(OwnOp::PublishSelf { seq }), OpResult::Published { accepted, .. }) =
            (self.dht.own_ops.remove(&handle), result)
        {
            self.dht.stats.own_publications += 1;
            self.dht.stats.own_accepted = accepted;
            if accepted > 0 {
                self.dht.published = Some((seq, now));
            }
            tracing::debug!(accepted, "published our relay record");
        }
    }

    // ---- the last-hop role (12.6) --------------------------------------------------------

    fn dht_role_send(&mut self, slot: u64, reply: &LookupReply) {
        if let Some(bytes) = reply.emit() {
            if self
                .circ
                .reply(slot, RelayCommand::DhtLookupReply, &bytes)
                .is_ok()
            {
                self.dht.stats.role_replies += 1;
            }
        }
    }

    fn dht_role_refuse(&mut self, slot: u64, op: LookupOp, lookup_id: u32, status: LookupStatus) {
        self.dht.stats.role_refused += 1;
        self.dht_role_send(
            slot,
            &LookupReply {
                status,
                lookup_id,
                body: ReplyBody::empty(op),
            },
        );
    }

    pub(super) fn dht_on_last_hop(&mut self, now: Millis, slot: u64, payload: &[u8]) {
        self.dht.stats.role_requests += 1;
        let req = match LookupRequest::parse(payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("DHT_LOOKUP refused: {e}");
                if let Some((op, id)) = salvage_ids(payload) {
                    self.dht_role_refuse(slot, op, id, LookupStatus::Refused);
                } else {
                    self.dht.stats.role_refused += 1;
                }
                return;
            }
        };
        if let Some(log) = self.dht.observe.as_mut() {
            let key = match (req.op, req.kind) {
                (LookupOp::Publish, Some(kind)) => {
                    checked_key(kind, &req.record, now).map_or([0; 32], |(k, _, _)| k)
                }
                _ => req.key,
            };
            log.push(RoleSeen {
                slot,
                op: req.op,
                key,
                at: now,
            });
        }
        if !self.dht_is_relay() || self.dht.relay.is_none() {
            self.dht_role_refuse(slot, req.op, req.lookup_id, LookupStatus::Refused);
            return;
        }
        if self.dht.hostile {
            // Junk: a reply for an op nobody asked, with a lookup id that matches.
            self.dht_role_send(
                slot,
                &LookupReply {
                    status: LookupStatus::Ok,
                    lookup_id: req.lookup_id,
                    body: ReplyBody::FindValue {
                        seq_no: 0,
                        total: 1,
                        record: vec![0xAA; RecordKind::Relay.record_len()],
                    },
                },
            );
            return;
        }
        if !self.dht.slots.contains_key(&slot) {
            let charge = if self.dht.slots.len() < DHT_MAX_ROLE_SLOTS {
                self.link.budget().try_charge(ROLE_SLOT_COST)
            } else {
                None
            };
            let Some(charge) = charge else {
                self.dht_role_refuse(slot, req.op, req.lookup_id, LookupStatus::RateLimited);
                return;
            };
            self.dht.slots.insert(
                slot,
                RoleSlot {
                    active: 0,
                    minute: RateWindow::default(),
                    _charge: charge,
                },
            );
        }
        let allowed = self.dht.slots.get_mut(&slot).is_some_and(|s| {
            s.active < DHT_LOOKUPS_CONCURRENT && s.minute.allow(now, 60_000, DHT_LOOKUPS_PER_MIN)
        });
        if !allowed {
            self.dht_role_refuse(slot, req.op, req.lookup_id, LookupStatus::RateLimited);
            return;
        }
        let Some(relay) = self.dht.relay.as_mut() else {
            return;
        };
        let started = match (req.op, req.kind) {
            (LookupOp::Sample, _) => {
                let records: Vec<Vec<u8>> = self
                    .link
                    .view()
                    .sample(VIEW_MAX, None, &mut self.rng)
                    .into_iter()
                    .filter(|r| r.is_relay())
                    .take(DHT_SAMPLE_MAX)
                    .map(|r| r.bytes().to_vec())
                    .collect();
                self.dht_role_send(
                    slot,
                    &LookupReply {
                        status: LookupStatus::Ok,
                        lookup_id: req.lookup_id,
                        body: ReplyBody::Sample(records),
                    },
                );
                return;
            }
            (LookupOp::FindNodes, _) => relay
                .start_lookup(req.key, Target::Nodes, now)
                .ok_or(StoreStatus::Full),
            (LookupOp::FindValue, Some(kind)) => relay
                .start_lookup(req.key, Target::Value(kind), now)
                .ok_or(StoreStatus::Full),
            (LookupOp::Publish, Some(kind)) => relay.start_publish(kind, &req.record, now),
            _ => Err(StoreStatus::Invalid),
        };
        match started {
            Ok(handle) => {
                if let Some(s) = self.dht.slots.get_mut(&slot) {
                    s.active += 1;
                }
                self.dht.role_ops.insert(
                    handle,
                    RoleOp {
                        slot,
                        lookup_id: req.lookup_id,
                        op: req.op,
                        kind: req.kind,
                        key: req.key,
                    },
                );
                self.dht_pump_relay(now);
            }
            Err(StoreStatus::Invalid) => {
                self.dht_role_refuse(slot, req.op, req.lookup_id, LookupStatus::Invalid)
            }
            Err(_) => self.dht_role_refuse(slot, req.op, req.lookup_id, LookupStatus::RateLimited),
        }
    }

    /// Answers a finished last-hop lookup; nothing about it is kept afterwards.
    fn dht_role_reply(&mut self, now: Millis, r: RoleOp, result: OpResult) {
        let reply = |status, body| LookupReply {
            status,
            lookup_id: r.lookup_id,
            body,
        };
        match (r.op, result) {
            (LookupOp::FindNodes, OpResult::Lookup(res)) => {
                let mut cs = res.closest;
                cs.truncate(DHT_MAX_CONTACTS);
                self.dht_role_send(r.slot, &reply(LookupStatus::Ok, ReplyBody::FindNodes(cs)));
            }
            (LookupOp::FindValue, OpResult::Lookup(res)) => {
                let kind = r.kind.unwrap_or(RecordKind::Descriptor);
                // Our own store counts too: we may be one of the replicas.
                let mut best: HashMap<[u8; 32], (u64, Vec<u8>)> = HashMap::new();
                let mut all = res.records.clone();
                if let Some(relay) = &self.dht.relay {
                    let (total, _) = relay.store.get(&r.key, kind, 0, now);
                    for c in 0..total {
                        if let (_, Some(b)) = relay.store.get(&r.key, kind, c, now) {
                            all.push(b.to_vec());
                        }
                    }
                }
                for b in all {
                    if let Some((k, signer, v)) = checked_key(kind, &b, now) {
                        if k == r.key && best.get(&signer).is_none_or(|(old, _)| v > *old) {
                            best.insert(signer, (v, b));
                        }
                    }
                }
                let mut records: Vec<Vec<u8>> = best.into_values().map(|(_, b)| b).collect();
                records.sort();
                records.truncate(usize::from(u8::MAX));
                if records.is_empty() {
                    let status = if res.timed_out_overall && res.answered.is_empty() {
                        LookupStatus::Timeout
                    } else {
                        LookupStatus::NotFound
                    };
                    self.dht_role_send(
                        r.slot,
                        &reply(status, ReplyBody::empty(LookupOp::FindValue)),
                    );
                }
                let total = records.len() as u8;
                for (i, record) in records.into_iter().enumerate() {
                    let body = ReplyBody::FindValue {
                        seq_no: i as u8,
                        total,
                        record,
                    };
                    self.dht_role_send(r.slot, &reply(LookupStatus::Ok, body));
                }
            }
            (
                LookupOp::Publish,
                OpResult::Published {
                    accepted,
                    refused,
                    stale,
                },
            ) => {
                let status = if accepted > 0 {
                    LookupStatus::Ok
                } else if stale > 0 {
                    LookupStatus::Stale
                } else {
                    LookupStatus::Timeout
                };
                self.dht_role_send(
                    r.slot,
                    &reply(status, ReplyBody::Publish { accepted, refused }),
                );
            }
            (op, _) => {
                self.dht_role_send(r.slot, &reply(LookupStatus::Timeout, ReplyBody::empty(op)))
            }
        }
    }

    pub(super) fn dht_on_relayed_closed(&mut self, _now: Millis, slot: u64) {
        if self.dht.slots.remove(&slot).is_none() {
            return;
        }
        let handles: Vec<OpHandle> = self
            .dht
            .role_ops
            .iter()
            .filter(|(_, r)| r.slot == slot)
            .map(|(h, _)| *h)
            .collect();
        for h in handles {
            self.dht.role_ops.remove(&h);
            if let Some(relay) = self.dht.relay.as_mut() {
                relay.cancel(h);
            }
        }
    }

    // ---- timers --------------------------------------------------------------------------

    pub(super) fn dht_timeout(&mut self, now: Millis) {
        self.dht.in_query = false;
        for (token, outcome, via) in std::mem::take(&mut self.dht.deferred) {
            self.dht_done(now, token, outcome, via);
        }
        self.dht_relay_timers(now);
        self.dht_client_timers(now);
    }

    fn dht_relay_timers(&mut self, now: Millis) {
        let serving = self.dht_is_relay();
        if serving && self.dht.relay.is_none() {
            self.dht.relay = Some(DhtRelay::new(
                self.link.identity(),
                self.prefix_bits,
                self.link.budget().clone(),
                self.dht.rand.split("dht relay"),
            ));
            // Jittered, so that relays started together do not all look up and publish at once.
            self.dht.next_refresh = now + 3_000 + self.rng.gen_range(0..5_000);
            self.dht.next_publish = now + 10_000 + self.rng.gen_range(0..20_000);
            self.dht.next_expire = now + DHT_EXPIRE_MS;
        }
        if self.dht.relay.is_none() {
            return;
        }
        if now >= self.dht.next_scan {
            self.dht.next_scan = now + SCAN_MS;
            let mut contacts: Vec<(LinkId, Contact)> = self.link.dht_contacts().collect();
            // In link order: the table keeps what fits first, and a seed must repeat a run.
            contacts.sort_unstable_by_key(|(l, _)| *l);
            if let Some(relay) = self.dht.relay.as_mut() {
                for (_, c) in contacts {
                    if !relay.table.contains(&c.identity) {
                        relay.table.insert(c, now);
                    }
                }
            }
            self.dht_flush_waiting(now);
        }
        if let Some(relay) = self.dht.relay.as_mut() {
            relay.on_timer(now);
            if now >= self.dht.next_expire {
                self.dht.next_expire = now + DHT_EXPIRE_MS;
                relay.store.expire(now);
            }
        }
        if serving {
            self.dht_own_work(now);
        }
        self.dht_pump_relay(now);
    }

    /// Refresh and the publication of our own record (12.1, 12.5).
    fn dht_own_work(&mut self, now: Millis) {
        let own_record = self
            .link
            .own_record()
            .map(|r| (r.fields().seq, r.bytes().to_vec()));
        let Some(relay) = self.dht.relay.as_mut() else {
            return;
        };
        if relay.table.is_empty() {
            return;
        }
        if now >= self.dht.next_refresh {
            let small = relay.table.len() < crate::dht::DHT_K;
            self.dht.next_refresh = now
                + if small {
                    DHT_REFRESH_SMALL_MS
                } else {
                    DHT_REFRESH_MS
                };
            // A small table only looks for its own neighbourhood; a random key refreshes the
            // far buckets once the table stands.
            let own = *relay.table.own_id();
            let mut targets = vec![own];
            if !small {
                targets.push(self.rng.gen());
            }
            for target in targets {
                if let Some(h) = relay.start_lookup(target, Target::Nodes, now) {
                    self.dht.own_ops.insert(h, OwnOp::Refresh);
                }
            }
        }
        if now >= self.dht.next_publish {
            self.dht.next_publish = now + DHT_PUBLISH_CHECK_MS;
            if let Some((seq, bytes)) = own_record {
                let due = match self.dht.published {
                    Some((s, at)) => {
                        s != seq || now.saturating_sub(at) >= RELAY_RECORD_REPUBLISH_S * 1000
                    }
                    None => true,
                };
                let running = self
                    .dht
                    .own_ops
                    .values()
                    .any(|o| matches!(o, OwnOp::PublishSelf { .. }));
                if due && !running {
                    if let Ok(h) = relay.start_publish(RecordKind::Relay, &bytes, now) {
                        self.dht.own_ops.insert(h, OwnOp::PublishSelf { seq });
                    }
                }
            }
        }
    }

    fn dht_client_timers(&mut self, now: Millis) {
        // Replies that did not come (or the rest of a multi-record answer).
        let mut due: Vec<u64> = self
            .dht
            .queries
            .iter()
            .filter(|(_, q)| q.sent && q.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        due.sort_unstable();
        for t in due {
            let partial = self
                .dht
                .queries
                .get(&t)
                .is_some_and(|q| !q.records.is_empty());
            if partial {
                let o = self.dht.queries.get(&t).map(records_outcome);
                if let Some(o) = o {
                    self.dht_finish(now, t, o);
                }
            } else {
                self.dht_retry(now, t);
            }
        }
        // Taken circuits whose query is gone, and pool circuits grown old unused.
        let mut idle: Vec<CircId> = self
            .dht
            .circs
            .iter()
            .filter(|(id, c)| {
                if c.taken {
                    !self.dht.queries.values().any(|q| q.circ == Some(**id))
                } else {
                    now.saturating_sub(c.created) >= DHT_POOL_MAX_AGE_MS
                }
            })
            .map(|(id, _)| *id)
            .collect();
        idle.sort_unstable();
        for id in idle {
            self.dht_retire(now, Some(id));
        }
        self.dht_fill_pool(now);
        // Relay discovery through the DHT while the view is small (9.1).
        if self.dht.next_sample == 0 {
            self.dht.next_sample = now + 20_000;
        }
        if now >= self.dht.next_sample {
            self.dht.next_sample = now + DHT_SAMPLE_MS;
            let small = self.link.view().len() < crate::link::layer::VIEW_WANTED;
            let running = self.dht.queries.values().any(|q| q.internal);
            if small && !running {
                self.dht_start_query(now, DhtQuery::Sample, false, true, Vec::new());
            }
        }
    }

    /// Keeps the pools of unused DHT circuits the session layer wants (client lookups,
    /// service publications) built.
    fn dht_fill_pool(&mut self, now: Millis) {
        if now < self.dht.next_pool_try {
            return;
        }
        let (clients, services) = self.sess_dht_pool_wanted();
        for (service, want) in [(false, clients), (true, services)] {
            let have = self
                .dht
                .circs
                .values()
                .filter(|c| c.service == service && !c.taken)
                .count();
            for _ in have..want {
                if let Err(e) = self.dht_build(now, service, &[]) {
                    tracing::debug!("DHT circuit pool: {e}");
                    self.dht.next_pool_try = now + DHT_POOL_RETRY_MS;
                    return;
                }
            }
        }
    }
}

fn op_of(q: &DhtQuery) -> LookupOp {
    match q {
        DhtQuery::FindValue { .. } => LookupOp::FindValue,
        DhtQuery::Publish { .. } => LookupOp::Publish,
        DhtQuery::Sample => LookupOp::Sample,
    }
}

fn records_outcome(q: &ClientQuery) -> DhtOutcome {
    if q.records.is_empty() {
        return DhtOutcome::NotFound;
    }
    let mut v: Vec<Vec<u8>> = q.records.values().map(|(_, b)| b.clone()).collect();
    v.sort();
    DhtOutcome::Records(v)
}
