//! What a DHT relay node runs for others (docs/protocol.md section 12): the [`DhtRelay`] over
//! links (DHT_REQUEST/DHT_RESPONSE frames, dialing contacts and holding a bounded queue
//! meanwhile), its upkeep (table refresh, store expiry, publishing its own relay record), and
//! the DHT_LOOKUP role at the last hop of other people's circuits (12.6).
//!
//! Sans-IO: the node drives it with frames, last-hop payloads and the time, and it acts through
//! a [`LinkContext`] the node implements. Nothing kept for a last-hop lookup outlives the reply
//! or the circuit, and every table a stranger fills is bounded and charged to the memory
//! budget.

use rand::rngs::StdRng;
use rand::Rng;
use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::budget::{Charge, MemoryBudget};
use crate::crypto::Randomness;
use crate::dht::lookup::Target;
use crate::dht::lookup_msg::{
    salvage_ids, LookupOp, LookupReply, LookupRequest, LookupStatus, ReplyBody, DHT_SAMPLE_MAX,
};
use crate::dht::message::{RecordKind, StoreStatus, DHT_MAX_CONTACTS};
use crate::dht::relay::{DhtRelay, OpHandle, OpResult, RelayOut};
use crate::dht::store::checked_key;
use crate::dht::Key;
use crate::link::nat::RateWindow;
use crate::link::LinkId;
use crate::time::{Instant, Millis};
use crate::wire::record::{Contact, RELAY_RECORD_REPUBLISH_S};

/// Lookups one circuit may have running at its last hop (`DHT_LOOKUPS_CONCURRENT`).
pub const DHT_LOOKUPS_CONCURRENT: u8 = 4;
/// Lookups one circuit may start per minute (`DHT_LOOKUPS_PER_MIN`).
pub const DHT_LOOKUPS_PER_MIN: u32 = 30;
/// Routing-table refresh period (a self-lookup and one random key).
pub const DHT_REFRESH_MS: Millis = 900_000;
/// Refresh period while the table holds fewer than `DHT_K` contacts.
pub const DHT_REFRESH_SMALL_MS: Millis = 30_000;
/// How often a DHT relay checks whether its own record needs publishing.
pub const DHT_PUBLISH_CHECK_MS: Millis = 60_000;
/// Store expiry sweep period.
pub const DHT_EXPIRE_MS: Millis = 60_000;
/// Requests waiting for a link to their contact, in total.
pub const DHT_MAX_WAITING: usize = 256;
/// Requests waiting for one contact.
pub const DHT_MAX_WAITING_PER_CONTACT: usize = 8;
/// Longest a request waits for its link to come up (a punch through an introducer, or the
/// relayed link after it, takes several seconds); it is dropped at once when the link attempt
/// ends. Below `DHT_LOOKUP_TIMEOUT_S` less a request's own time, so an answer can still count.
pub const DHT_LINK_WAIT_MS: Millis = 8_000;
/// The same for a contact our view lists as directly reachable: a plain handshake, answered
/// within a round trip by a live relay, retried once after `HANDSHAKE_RETRY_MS` (1 s). A dead
/// relay not yet known dead here otherwise held its lookup path (and a service's descriptor
/// publication with it) for the whole `DHT_LINK_WAIT_MS`.
pub const DHT_DIRECT_LINK_WAIT_MS: Millis = 3_000;
/// Circuits with last-hop DHT state at once.
pub const DHT_MAX_ROLE_SLOTS: usize = 4096;
/// Memory charged per waiting request (the frame and its entry).
const WAITING_COST: usize = 1536;
/// Memory charged per circuit with last-hop DHT state.
const ROLE_SLOT_COST: usize = 128;
/// Contacts of links are scanned into the routing table this often.
const SCAN_MS: Millis = 500;

/// Counters of the relay side.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HostStats {
    /// DHT_LOOKUPs received as a last hop.
    pub role_requests: u64,
    /// Of those, refused (malformed, limits, not a DHT relay).
    pub role_refused: u64,
    /// DHT_LOOKUP_REPLYs sent as a last hop.
    pub role_replies: u64,
    /// Requests for contacts dropped because the waiting queue was full.
    pub unsendable: u64,
    /// Publications of our own relay record (and replicas that took the last one).
    pub own_publications: u64,
    /// Replicas that accepted our last own publication.
    pub own_accepted: u8,
    /// Requests that waited for a link to their contact to come up (a dial), and of those the
    /// ones sent once it did and the ones dropped because it did not within a request's life.
    pub waited: u64,
    /// See `waited`.
    pub waited_sent: u64,
    /// See `waited`.
    pub waited_expired: u64,
    /// Lookups run for a DHT_LOOKUP as a last hop: contacts that answered, contacts whose
    /// request timed out, and lookups that found a record (FIND_VALUE).
    pub role_answered: u64,
    /// See `role_answered`.
    pub role_timed_out: u64,
    /// See `role_answered`.
    pub role_found: u64,
    /// Those lookups: how many, their summed time (ms), how many the overall timeout ended,
    /// and for those that found a record the summed time until the first one came.
    pub role_lookups: u64,
    /// See `role_lookups`.
    pub role_lookup_ms: u64,
    /// See `role_lookups`.
    pub role_lookup_timeouts: u64,
    /// See `role_lookups`.
    pub role_first_record_ms: u64,
}

/// What a last hop saw of one DHT_LOOKUP, kept only while a test asks for it
/// ([`DhtHost::observe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSeen {
    /// The relayed circuit it came on.
    pub slot: u64,
    /// What was asked.
    pub op: LookupOp,
    /// The key looked up, or the key of the published record (zero for SAMPLE).
    pub key: Key,
    /// When.
    pub at: Instant,
}

/// What the relay side needs of the node: its links, its relay record and view, replies on
/// relayed circuits, and the memory budget.
pub trait LinkContext {
    /// The memory budget.
    fn budget(&self) -> &MemoryBudget;
    /// The node's random choices (timer jitter, refresh keys, samples).
    fn rng(&mut self) -> &mut StdRng;
    /// Our identity key.
    fn identity(&self) -> [u8; 32];
    /// Family prefix lengths (IPv4, IPv6) for the routing table and store caps.
    fn prefix_bits(&self) -> (u8, u8);
    /// Whether our relay record carries `FLAG_DHT`.
    fn is_dht_relay(&self) -> bool;
    /// Our relay record's sequence number and bytes.
    fn own_record(&self) -> Option<(u64, Vec<u8>)>;
    /// The relays we have links to, as DHT contacts.
    fn contacts(&self) -> Vec<(LinkId, Contact)>;
    /// The identity of the relay at the other end of a link.
    fn identity_of(&self, link: LinkId) -> Option<[u8; 32]>;
    /// The address a link's peer sends from.
    fn endpoint_of(&self, link: LinkId) -> Option<SocketAddr>;
    /// A link to a relay, if one is up.
    fn link_to(&self, identity: &[u8; 32]) -> Option<LinkId>;
    /// Sends a DHT_REQUEST (or `response`, a DHT_RESPONSE) frame; whether it went.
    fn send_frame(
        &mut self,
        now: Instant,
        link: LinkId,
        rpc_id: u64,
        response: bool,
        data: &[u8],
    ) -> bool;
    /// Dials a DHT contact; `via`, the relay that named it, is linked to us and may introduce
    /// us when the contact's record is not in our view.
    fn dial(&mut self, now: Instant, to: &Contact, via: Option<&Contact>);
    /// Whether a link to `link_key` is being set up (a handshake, a punch or a relayed link
    /// under way).
    fn dialing(&self, link_key: &[u8; 32]) -> bool;
    /// Whether our view lists this contact as directly reachable (no punch needed).
    fn direct_contact(&self, to: &Contact) -> bool;
    /// Sends a DHT_LOOKUP_REPLY back on a relayed circuit; whether it went.
    fn reply(&mut self, slot: u64, payload: &[u8]) -> bool;
    /// Up to `n` random relay records of the view (bytes).
    fn sample_relays(&mut self, n: usize) -> Vec<Vec<u8>>;
}

struct Waiting {
    link_key: [u8; 32],
    /// Request id, bytes, how long it may wait, charge.
    frames: Vec<(u64, Vec<u8>, Instant, Charge)>,
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

/// The relay side of a node's DHT: the DHT relay once the node is one, and the last-hop role.
pub struct DhtHost {
    relay: Option<DhtRelay>,
    rand: Randomness,
    hostile: bool,
    waiting: BTreeMap<[u8; 32], Waiting>,
    waiting_total: usize,
    slots: BTreeMap<u64, RoleSlot>,
    role_ops: BTreeMap<OpHandle, RoleOp>,
    own_ops: BTreeMap<OpHandle, OwnOp>,
    observe: Option<Vec<RoleSeen>>,
    next_scan: Instant,
    next_refresh: Instant,
    next_publish: Instant,
    published: Option<(u64, Instant)>,
    next_expire: Instant,
    stats: HostStats,
}

impl DhtHost {
    /// Entries of the host's tables, by table (the simulator's memory trace, issue #25).
    pub fn table_sizes(&self) -> Vec<(&'static str, usize)> {
        let mut v = vec![
            ("dht.waiting", self.waiting.len()),
            ("dht.slots", self.slots.len()),
            ("dht.role_ops", self.role_ops.len()),
            ("dht.own_ops", self.own_ops.len()),
            ("dht.observed", self.observe.as_ref().map_or(0, |o| o.len())),
        ];
        if let Some(r) = &self.relay {
            v.push(("dht.table", r.table.len()));
            v.push(("dht.store", r.store.len()));
        }
        v
    }

    /// Not a relay yet: the relay starts on the first timer after our record carries
    /// `FLAG_DHT`. `rand` seeds it.
    pub fn new(rand: Randomness) -> DhtHost {
        DhtHost {
            relay: None,
            rand,
            hostile: false,
            waiting: BTreeMap::new(),
            waiting_total: 0,
            slots: BTreeMap::new(),
            role_ops: BTreeMap::new(),
            own_ops: BTreeMap::new(),
            observe: None,
            next_scan: Instant::ZERO,
            next_refresh: Instant::ZERO,
            next_publish: Instant::ZERO,
            published: None,
            next_expire: Instant::ZERO,
            stats: HostStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> &HostStats {
        &self.stats
    }

    /// The DHT relay (routing table, store), once this node is one.
    pub fn relay(&self) -> Option<&DhtRelay> {
        self.relay.as_ref()
    }

    /// Test hook: while on, every DHT_LOOKUP received as a last hop is logged (the circuit, the
    /// op, the key). Turning it off drops the log.
    pub fn observe(&mut self, on: bool) {
        self.observe = on.then(Vec::new);
    }

    /// What was seen as a last hop since [`DhtHost::observe`] turned the log on.
    pub fn observed(&self) -> &[RoleSeen] {
        self.observe.as_deref().unwrap_or(&[])
    }

    /// Test hook: a hostile relay answers every DHT request and DHT_LOOKUP with junk and
    /// acknowledges STOREs without storing.
    pub fn set_hostile(&mut self, hostile: bool) {
        self.hostile = hostile;
    }

    // ---- the DHT relay -------------------------------------------------------------------

    /// A DHT_REQUEST or DHT_RESPONSE frame from a link.
    pub fn on_frame<C: LinkContext>(
        &mut self,
        ctx: &mut C,
        now: Instant,
        link: LinkId,
        rpc_id: u64,
        response: bool,
        data: &[u8],
    ) {
        let serving = ctx.is_dht_relay();
        let Some(identity) = ctx.identity_of(link) else {
            return;
        };
        let hostile = self.hostile;
        let Some(relay) = self.relay.as_mut() else {
            return;
        };
        if response {
            relay.on_response(&identity, rpc_id, data, now);
        } else if serving {
            let reply = if hostile {
                // Junk: a NODES message claiming more contacts than allowed.
                Some(vec![1, 2, 0, 0, 9])
            } else {
                ctx.endpoint_of(link)
                    .and_then(|ep| relay.respond(data, ep.ip(), now))
            };
            if let Some(reply) = reply {
                ctx.send_frame(now, link, rpc_id, true, &reply);
            }
        }
        self.pump_relay(ctx, now);
    }

    /// Moves the relay's requests onto links and its finished operations to their owners.
    fn pump_relay<C: LinkContext>(&mut self, ctx: &mut C, now: Instant) {
        loop {
            let outs = match self.relay.as_mut() {
                Some(r) => r.take_out(),
                None => return,
            };
            if outs.is_empty() {
                return;
            }
            for o in outs {
                match o {
                    RelayOut::Request {
                        to,
                        via,
                        rpc_id,
                        data,
                    } => self.send_request(ctx, now, to, via, rpc_id, data),
                    RelayOut::Done { handle, result } => self.op_done(ctx, now, handle, result),
                }
            }
        }
    }

    /// Sends a DHT request to a contact, dialing it first (the request waits, bounded).
    fn send_request<C: LinkContext>(
        &mut self,
        ctx: &mut C,
        now: Instant,
        to: Contact,
        via: Option<Contact>,
        rpc_id: u64,
        data: Vec<u8>,
    ) {
        if let Some(l) = ctx.link_to(&to.identity) {
            if ctx.send_frame(now, l, rpc_id, false, &data) {
                return;
            }
        }
        let queued = self.waiting.get(&to.identity).map_or(0, |w| w.frames.len());
        let charge = if self.waiting_total < DHT_MAX_WAITING && queued < DHT_MAX_WAITING_PER_CONTACT
        {
            ctx.budget().try_charge(WAITING_COST)
        } else {
            None
        };
        // A dropped request fails in its lookup at once.
        let Some(charge) = charge else {
            self.stats.unsendable += 1;
            if let Some(r) = self.relay.as_mut() {
                r.on_unsent(rpc_id, now);
            }
            return;
        };
        let wait = if ctx.direct_contact(&to) {
            DHT_DIRECT_LINK_WAIT_MS
        } else {
            DHT_LINK_WAIT_MS
        };
        self.waiting
            .entry(to.identity)
            .or_insert_with(|| Waiting {
                link_key: to.link_key,
                frames: Vec::new(),
            })
            .frames
            .push((rpc_id, data, now + wait, charge));
        self.waiting_total += 1;
        self.stats.waited += 1;
        if let Some(r) = self.relay.as_mut() {
            r.on_waiting(rpc_id, now + wait);
        }
        ctx.dial(now, &to, via.as_ref().filter(|v| v.identity != to.identity));
    }

    /// Sends what waits for links that came up; drops what waits for a link attempt that
    /// ended, or waited `DHT_LINK_WAIT_MS`.
    fn flush_waiting<C: LinkContext>(&mut self, ctx: &mut C, now: Instant) {
        let mut ids: Vec<[u8; 32]> = self.waiting.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let link = ctx.link_to(&id);
            let Some(w) = self.waiting.get_mut(&id) else {
                continue;
            };
            let dialing = ctx.dialing(&w.link_key);
            let frames = std::mem::take(&mut w.frames);
            let mut keep = Vec::new();
            for f in frames {
                if let Some(l) = link {
                    ctx.send_frame(now, l, f.0, false, &f.1);
                    self.stats.waited_sent += 1;
                    if let Some(r) = self.relay.as_mut() {
                        r.on_sent(f.0, now);
                    }
                } else if dialing && now < f.2 {
                    keep.push(f);
                } else {
                    self.stats.waited_expired += 1;
                    if let Some(r) = self.relay.as_mut() {
                        r.on_unsent(f.0, now);
                    }
                }
            }
            if keep.is_empty() {
                self.waiting.remove(&id);
            } else if let Some(w) = self.waiting.get_mut(&id) {
                w.frames = keep;
            }
        }
        self.waiting_total = self.waiting.values().map(|w| w.frames.len()).sum();
    }

    fn op_done<C: LinkContext>(
        &mut self,
        ctx: &mut C,
        now: Instant,
        handle: OpHandle,
        result: OpResult,
    ) {
        if let Some(r) = self.role_ops.remove(&handle) {
            if let OpResult::Lookup(res) = &result {
                self.stats.role_answered += res.answered.len() as u64;
                self.stats.role_timed_out += res.timed_out.len() as u64;
                self.stats.role_found += u64::from(!res.records.is_empty());
                self.stats.role_lookups += 1;
                self.stats.role_lookup_ms += res.elapsed_ms;
                self.stats.role_lookup_timeouts += u64::from(res.timed_out_overall);
                self.stats.role_first_record_ms += res.first_record_ms.unwrap_or(0);
            }
            if let Some(s) = self.slots.get_mut(&r.slot) {
                s.active = s.active.saturating_sub(1);
            }
            self.role_reply(ctx, now, r, result);
            return;
        }
        // Refresh lookups only feed the routing table, which the relay did already.
        if let (Some(OwnOp::PublishSelf { seq }), OpResult::Published { accepted, .. }) =
            (self.own_ops.remove(&handle), result)
        {
            self.stats.own_publications += 1;
            self.stats.own_accepted = accepted;
            if accepted > 0 {
                self.published = Some((seq, now));
            }
            tracing::debug!(accepted, "published our relay record");
        }
    }

    // ---- the last-hop role (12.6) --------------------------------------------------------

    fn role_send<C: LinkContext>(&mut self, ctx: &mut C, slot: u64, reply: &LookupReply) {
        if let Some(bytes) = reply.emit() {
            if ctx.reply(slot, &bytes) {
                self.stats.role_replies += 1;
            }
        }
    }

    fn role_refuse<C: LinkContext>(
        &mut self,
        ctx: &mut C,
        slot: u64,
        op: LookupOp,
        lookup_id: u32,
        status: LookupStatus,
    ) {
        self.stats.role_refused += 1;
        self.role_send(
            ctx,
            slot,
            &LookupReply {
                status,
                lookup_id,
                body: ReplyBody::empty(op),
            },
        );
    }

    /// A DHT_LOOKUP that arrived at the end of relayed circuit `slot`.
    pub fn on_last_hop<C: LinkContext>(
        &mut self,
        ctx: &mut C,
        now: Instant,
        slot: u64,
        payload: &[u8],
    ) {
        self.stats.role_requests += 1;
        let req = match LookupRequest::parse(payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("DHT_LOOKUP refused: {e}");
                if let Some((op, id)) = salvage_ids(payload) {
                    self.role_refuse(ctx, slot, op, id, LookupStatus::Refused);
                } else {
                    self.stats.role_refused += 1;
                }
                return;
            }
        };
        if let Some(log) = self.observe.as_mut() {
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
        if !ctx.is_dht_relay() || self.relay.is_none() {
            self.role_refuse(ctx, slot, req.op, req.lookup_id, LookupStatus::Refused);
            return;
        }
        if self.hostile {
            // Junk: a reply for an op nobody asked, with a lookup id that matches.
            self.role_send(
                ctx,
                slot,
                &LookupReply {
                    status: LookupStatus::Ok,
                    lookup_id: req.lookup_id,
                    body: ReplyBody::FindValue {
                        seq_no: 0,
                        total: 1,
                        record: vec![0xAA; RecordKind::Relay.max_len()],
                    },
                },
            );
            return;
        }
        if !self.slots.contains_key(&slot) {
            let charge = if self.slots.len() < DHT_MAX_ROLE_SLOTS {
                ctx.budget().try_charge(ROLE_SLOT_COST)
            } else {
                None
            };
            let Some(charge) = charge else {
                self.role_refuse(ctx, slot, req.op, req.lookup_id, LookupStatus::RateLimited);
                return;
            };
            self.slots.insert(
                slot,
                RoleSlot {
                    active: 0,
                    minute: RateWindow::default(),
                    _charge: charge,
                },
            );
        }
        let allowed = self.slots.get_mut(&slot).is_some_and(|s| {
            s.active < DHT_LOOKUPS_CONCURRENT && s.minute.allow(now, 60_000, DHT_LOOKUPS_PER_MIN)
        });
        if !allowed {
            self.role_refuse(ctx, slot, req.op, req.lookup_id, LookupStatus::RateLimited);
            return;
        }
        if self.relay.is_none() {
            return;
        }
        if req.op == LookupOp::Sample {
            let records = ctx.sample_relays(DHT_SAMPLE_MAX);
            self.role_send(
                ctx,
                slot,
                &LookupReply {
                    status: LookupStatus::Ok,
                    lookup_id: req.lookup_id,
                    body: ReplyBody::Sample(records),
                },
            );
            return;
        }
        let Some(relay) = self.relay.as_mut() else {
            return;
        };
        let started = match (req.op, req.kind) {
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
                if let Some(s) = self.slots.get_mut(&slot) {
                    s.active += 1;
                }
                self.role_ops.insert(
                    handle,
                    RoleOp {
                        slot,
                        lookup_id: req.lookup_id,
                        op: req.op,
                        kind: req.kind,
                        key: req.key,
                    },
                );
                self.pump_relay(ctx, now);
            }
            Err(StoreStatus::Invalid) => {
                self.role_refuse(ctx, slot, req.op, req.lookup_id, LookupStatus::Invalid)
            }
            Err(_) => self.role_refuse(ctx, slot, req.op, req.lookup_id, LookupStatus::RateLimited),
        }
    }

    /// Answers a finished last-hop lookup; nothing about it is kept afterwards.
    fn role_reply<C: LinkContext>(
        &mut self,
        ctx: &mut C,
        now: Instant,
        r: RoleOp,
        result: OpResult,
    ) {
        let reply = |status, body| LookupReply {
            status,
            lookup_id: r.lookup_id,
            body,
        };
        match (r.op, result) {
            (LookupOp::FindNodes, OpResult::Lookup(res)) => {
                let mut cs = res.closest;
                cs.truncate(DHT_MAX_CONTACTS);
                self.role_send(
                    ctx,
                    r.slot,
                    &reply(LookupStatus::Ok, ReplyBody::FindNodes(cs)),
                );
            }
            (LookupOp::FindValue, OpResult::Lookup(res)) => {
                let kind = r.kind.unwrap_or(RecordKind::Descriptor);
                // Our own store counts too: we may be one of the replicas.
                let mut best: BTreeMap<[u8; 32], (u64, Vec<u8>)> = BTreeMap::new();
                let mut all = res.records.clone();
                if let Some(relay) = &self.relay {
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
                    self.role_send(
                        ctx,
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
                    self.role_send(ctx, r.slot, &reply(LookupStatus::Ok, body));
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
                self.role_send(
                    ctx,
                    r.slot,
                    &reply(status, ReplyBody::Publish { accepted, refused }),
                );
            }
            (op, _) => self.role_send(
                ctx,
                r.slot,
                &reply(LookupStatus::Timeout, ReplyBody::empty(op)),
            ),
        }
    }

    /// A relayed circuit closed: its last-hop lookups are cancelled and forgotten.
    pub fn on_relayed_closed(&mut self, slot: u64) {
        if self.slots.remove(&slot).is_none() {
            return;
        }
        let handles: Vec<OpHandle> = self
            .role_ops
            .iter()
            .filter(|(_, r)| r.slot == slot)
            .map(|(h, _)| *h)
            .collect();
        for h in handles {
            self.role_ops.remove(&h);
            if let Some(relay) = self.relay.as_mut() {
                relay.cancel(h);
            }
        }
    }

    // ---- timers --------------------------------------------------------------------------

    /// When [`DhtHost::on_timer`] next has something to do that cannot wait for the node's
    /// once-a-second cap, exactly: the relay's request and lookup timeouts, the store's expiry,
    /// refresh and our record's publication (while the table has contacts: `own_work` does
    /// nothing without), and the next scan while requests wait for links (they are sent then).
    /// The scan that enters new links' contacts into the table, and the relay's start once our
    /// record carries `FLAG_DHT`, ride on the cap: up to a second later than with the tick's
    /// half second.
    pub fn deadline(&self) -> Option<Instant> {
        let relay = self.relay.as_ref()?;
        let mut d = Some(self.next_expire);
        let mut at = |t: Option<Instant>| {
            if let Some(t) = t {
                d = Some(d.map_or(t, |x: Instant| x.min(t)));
            }
        };
        at(relay.deadline());
        if !relay.table.is_empty() {
            at(Some(self.next_refresh));
            at(Some(self.next_publish));
        }
        if !self.waiting.is_empty() {
            at(Some(self.next_scan));
        }
        d
    }

    /// Starts the relay once our record carries `FLAG_DHT`, and runs its timers: contacts of
    /// new links into the table, waiting requests, expiry, refresh and our own record.
    pub fn on_timer<C: LinkContext>(&mut self, ctx: &mut C, now: Instant) {
        let serving = ctx.is_dht_relay();
        if serving && self.relay.is_none() {
            self.relay = Some(DhtRelay::new(
                ctx.identity(),
                ctx.prefix_bits(),
                ctx.budget().clone(),
                self.rand.split("dht relay"),
            ));
            // Jittered, so that relays started together do not all look up and publish at once.
            self.next_refresh = now + 3_000 + ctx.rng().gen_range(0..5_000);
            self.next_publish = now + 10_000 + ctx.rng().gen_range(0..20_000);
            self.next_expire = now + DHT_EXPIRE_MS;
        }
        if self.relay.is_none() {
            return;
        }
        if now >= self.next_scan {
            self.next_scan = now + SCAN_MS;
            let mut contacts = ctx.contacts();
            // In link order: the table keeps what fits first, and a seed must repeat a run.
            contacts.sort_unstable_by_key(|(l, _)| *l);
            if let Some(relay) = self.relay.as_mut() {
                for (_, c) in contacts {
                    if !relay.table.contains(&c.identity) {
                        relay.table.insert(c, now);
                    }
                }
            }
            self.flush_waiting(ctx, now);
        }
        if let Some(relay) = self.relay.as_mut() {
            relay.on_timer(now);
            if now >= self.next_expire {
                self.next_expire = now + DHT_EXPIRE_MS;
                relay.store.expire(now);
            }
        }
        if serving {
            self.own_work(ctx, now);
        }
        self.pump_relay(ctx, now);
    }

    /// Refresh and the publication of our own record (12.1, 12.5).
    fn own_work<C: LinkContext>(&mut self, ctx: &mut C, now: Instant) {
        let own_record = ctx.own_record();
        let Some(relay) = self.relay.as_mut() else {
            return;
        };
        if relay.table.is_empty() {
            return;
        }
        if now >= self.next_refresh {
            let small = relay.table.len() < crate::dht::DHT_K;
            self.next_refresh = now
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
                targets.push(ctx.rng().gen());
            }
            for target in targets {
                if let Some(h) = relay.start_lookup(target, Target::Nodes, now) {
                    self.own_ops.insert(h, OwnOp::Refresh);
                }
            }
        }
        if now >= self.next_publish {
            self.next_publish = now + DHT_PUBLISH_CHECK_MS;
            if let Some((seq, bytes)) = own_record {
                let due = match self.published {
                    Some((s, at)) => {
                        s != seq || now.saturating_since(at) >= RELAY_RECORD_REPUBLISH_S * 1000
                    }
                    None => true,
                };
                let running = self
                    .own_ops
                    .values()
                    .any(|o| matches!(o, OwnOp::PublishSelf { .. }));
                if due && !running {
                    if let Ok(h) = relay.start_publish(RecordKind::Relay, &bytes, now) {
                        self.own_ops.insert(h, OwnOp::PublishSelf { seq });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
