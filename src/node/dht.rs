//! The DHT joined to a node: the glue between [`crate::dht::host::DhtHost`] (the DHT relay over
//! links and the DHT_LOOKUP role at the last hop of other people's circuits),
//! [`crate::dht::client::DhtClient`] (the lookups this node asks for through its own circuits)
//! and the node's link and circuit layers, which they reach through the context traits
//! implemented here by borrowing the node's fields. Finished queries go to the session layer
//! when it asked for them, else out as [`NodeEvent::Dht`].

use rand::rngs::StdRng;
use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::budget::MemoryBudget;
use crate::circuit::layer::{CircEvent, CircId, CircuitLayer, Purpose};
use crate::circuit::path::{
    Guards, PathContext, PathKind, PathRules, Target as PathTarget, Vanguards,
};
use crate::crypto::Randomness;
use crate::dht::client::{CircuitContext, DhtClient};
use crate::dht::host::{DhtHost, LinkContext};
use crate::dht::relay::DhtRelay;
use crate::link::view::VIEW_MAX;
use crate::link::{LinkId, LinkLayer};
use crate::time::{Expiring, Instant};
use crate::wire::record::{Contact, RelayRecord, FLAG_DHT};
use crate::wire::relay::RelayCommand;

use super::{Node, NodeEvent};

pub use crate::dht::client::{
    DhtOutcome, DhtQuery, DHT_MAX_QUERIES, DHT_POOL_CLIENT, DHT_POOL_MAX_AGE_MS, DHT_POOL_RETRY_MS,
    DHT_POOL_SERVICE, DHT_QUERY_TRIES, DHT_QUERY_WAIT_MS, DHT_SAMPLE_MS, DHT_VALUE_COLLECT_MS,
};
pub use crate::dht::host::{
    RoleSeen, DHT_EXPIRE_MS, DHT_LOOKUPS_CONCURRENT, DHT_LOOKUPS_PER_MIN, DHT_MAX_ROLE_SLOTS,
    DHT_MAX_WAITING, DHT_MAX_WAITING_PER_CONTACT, DHT_PUBLISH_CHECK_MS, DHT_REFRESH_MS,
    DHT_REFRESH_SMALL_MS,
};

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
    /// Second tries started while the first was still out (12.6, hedged tries).
    pub hedges: u64,
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

/// The node's DHT state.
pub struct NodeDht {
    pub(crate) host: DhtHost,
    pub(crate) client: DhtClient,
    /// Second-layer guards of our 4-hop (service) DHT circuits.
    vanguards: Vanguards,
}

impl NodeDht {
    /// The vanguards of our service DHT circuits.
    pub(super) fn vanguards(&self) -> &Vanguards {
        &self.vanguards
    }

    /// Whether `id` is one of the DHT client's circuits.
    pub(super) fn owns(&self, id: CircId) -> bool {
        self.client.owns(id)
    }

    pub(crate) fn new(rand: Randomness) -> NodeDht {
        NodeDht {
            host: DhtHost::new(rand),
            client: DhtClient::new(),
            vanguards: Vanguards::new(),
        }
    }
}

/// The node's fields the DHT parts act through, borrowed apart from the DHT state.
struct Ctx<'a> {
    link: &'a mut LinkLayer,
    circ: &'a mut CircuitLayer,
    rng: &'a mut StdRng,
    guards: &'a Guards,
    /// Guards whose session circuits just went silent (the session layer's view): a DHT query
    /// built through one would wait for a dead guard until its link is declared down.
    silent_guards: &'a Expiring<[u8; 32]>,
    prefix_bits: (u8, u8),
    vanguards: &'a mut Vanguards,
}

impl CircuitContext for Ctx<'_> {
    fn budget(&self) -> &MemoryBudget {
        self.link.budget()
    }

    fn rng(&mut self) -> &mut StdRng {
        self.rng
    }

    fn build_circuit(
        &mut self,
        now: Instant,
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
            self.vanguards.maintain(&ctx, self.guards, self.rng);
            PathKind::Service(PathTarget::Any(FLAG_DHT))
        } else {
            PathKind::Client(PathTarget::Any(FLAG_DHT))
        };
        let vanguards = service.then_some(&*self.vanguards);
        // Guards just found silent are passed over while another guard is up (as session
        // paths do): a client whose guard died asks the DHT for the service's new descriptor
        // at once, and that lookup must not ride the dead guard (in-process failover test:
        // five tries through it failed before its link was declared down).
        let silent: Vec<[u8; 32]> = self
            .guards
            .list()
            .iter()
            .map(|g| g.identity)
            .filter(|g| self.silent_guards.contains(g, now))
            .collect();
        let steered = (!silent.is_empty()).then(|| {
            let mut guards = self.guards.clone();
            for g in &silent {
                guards.mark_down(g, now);
            }
            guards
        });
        let guards = steered.as_ref().unwrap_or(self.guards);
        // A few draws for a last hop outside `avoid`; a network too small for that fails the
        // query rather than use a relay we promised ourselves not to.
        let mut path = None;
        for _ in 0..8 {
            let p = ctx
                .select(kind.clone(), guards, vanguards, self.rng)
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
        self.circ
            .build(now, Purpose::Dht, records, first)
            .map_err(|e| format!("no DHT circuit: {e}"))
    }

    fn last_hop(&self, id: CircId) -> Option<[u8; 32]> {
        self.circ
            .path(id)
            .and_then(|p| p.last().map(|r| *r.identity()))
    }

    fn send_lookup(&mut self, id: CircId, payload: &[u8]) -> bool {
        self.circ.send(id, RelayCommand::DhtLookup, payload).is_ok()
    }

    fn destroy_circuit(&mut self, now: Instant, id: CircId) {
        self.circ.destroy(now, id);
    }

    fn add_relays(&mut self, records: Vec<RelayRecord>, via: [u8; 32], now: Instant) -> usize {
        self.link.add_dht_records(records, via, now)
    }

    fn view_is_small(&self) -> bool {
        self.link.view().len() < crate::link::layer::VIEW_WANTED
    }
}

impl LinkContext for Ctx<'_> {
    fn budget(&self) -> &MemoryBudget {
        self.link.budget()
    }

    fn rng(&mut self) -> &mut StdRng {
        self.rng
    }

    fn identity(&self) -> [u8; 32] {
        self.link.identity()
    }

    fn prefix_bits(&self) -> (u8, u8) {
        self.prefix_bits
    }

    fn is_dht_relay(&self) -> bool {
        self.link
            .own_record()
            .is_some_and(|r| r.fields().flags & FLAG_DHT != 0)
    }

    fn own_record(&self) -> Option<(u64, Vec<u8>)> {
        self.link
            .own_record()
            .map(|r| (r.fields().seq, r.bytes().to_vec()))
    }

    fn contacts(&self) -> Vec<(LinkId, Contact)> {
        self.link.dht_contacts().collect()
    }

    fn identity_of(&self, link: LinkId) -> Option<[u8; 32]> {
        self.link.identity_of(link)
    }

    fn endpoint_of(&self, link: LinkId) -> Option<SocketAddr> {
        self.link.endpoint_of(link)
    }

    fn link_to(&self, identity: &[u8; 32]) -> Option<LinkId> {
        self.link.link_to(identity)
    }

    fn send_frame(
        &mut self,
        now: Instant,
        link: LinkId,
        rpc_id: u64,
        response: bool,
        data: &[u8],
    ) -> bool {
        self.link
            .send_dht(now, link, rpc_id, response, data)
            .is_ok()
    }

    fn dial(&mut self, now: Instant, to: &Contact, via: Option<&Contact>) {
        let _ = self.link.connect_dht(now, to, via);
    }

    fn dialing(&self, link_key: &[u8; 32]) -> bool {
        self.link.dialing(link_key)
    }

    fn direct_contact(&self, to: &Contact) -> bool {
        self.link
            .view()
            .by_link_key(&to.link_key)
            .is_some_and(|r| r.fields().nat.directly_reachable())
    }

    fn reply(&mut self, slot: u64, payload: &[u8]) -> bool {
        self.circ
            .reply(slot, RelayCommand::DhtLookupReply, payload)
            .is_ok()
    }

    fn sample_relays(&mut self, n: usize) -> Vec<Vec<u8>> {
        self.link
            .view()
            .sample(VIEW_MAX, None, self.rng)
            .into_iter()
            .filter(|r| r.is_relay())
            .take(n)
            .map(|r| r.bytes().to_vec())
            .collect()
    }
}

impl Node {
    /// Splits the node into the DHT parts and the context they act through.
    fn dht_split(&mut self) -> (&mut DhtHost, &mut DhtClient, Ctx<'_>) {
        let ctx = Ctx {
            link: &mut self.link,
            circ: &mut self.circ,
            rng: &mut self.rng,
            guards: &self.guards,
            silent_guards: self.sess.silent_guards(),
            prefix_bits: self.prefix_bits,
            vanguards: &mut self.dht.vanguards,
        };
        (&mut self.dht.host, &mut self.dht.client, ctx)
    }

    /// Starts a DHT query through one of our circuits (`service`: a 4-hop service circuit,
    /// else 3 hops). The answer arrives as [`NodeEvent::Dht`] with the returned token (or is
    /// consumed by the session layer when it asked). It never arrives before this returns.
    pub fn dht_query(&mut self, now: Instant, query: DhtQuery, service: bool) -> u64 {
        self.dht_query_avoiding(now, query, service, Vec::new())
    }

    /// [`Node::dht_query`] through circuits whose last hop is none of `avoid`.
    pub(super) fn dht_query_avoiding(
        &mut self,
        now: Instant,
        query: DhtQuery,
        service: bool,
        avoid: Vec<[u8; 32]>,
    ) -> u64 {
        let (_, client, mut ctx) = self.dht_split();
        client.query(&mut ctx, now, query, service, avoid)
    }

    /// The last hops a running query's request went to so far.
    pub(super) fn dht_query_via(&self, token: u64) -> &[[u8; 32]] {
        self.dht.client.via(token)
    }

    /// Test hook: while on, every DHT_LOOKUP this node receives as a last hop is logged (the
    /// circuit, the op, the key) so that tests can check what one relay sees. Turning it off
    /// drops the log. A node keeps nothing of the kind otherwise.
    #[doc(hidden)]
    pub fn dht_observe(&mut self, on: bool) {
        self.dht.host.observe(on);
    }

    /// What this node saw as a last hop since [`Node::dht_observe`] turned the log on.
    #[doc(hidden)]
    pub fn dht_observed(&self) -> &[RoleSeen] {
        self.dht.host.observed()
    }

    /// Counters of the relay side of the DHT (requests waiting for dials, last-hop lookups).
    pub fn dht_host_stats(&self) -> &crate::dht::host::HostStats {
        self.dht.host.stats()
    }

    /// Counters of the DHT parts.
    pub fn dht_stats(&self) -> DhtStats {
        let (h, c) = (self.dht.host.stats(), self.dht.client.stats());
        DhtStats {
            role_requests: h.role_requests,
            role_refused: h.role_refused,
            role_replies: h.role_replies,
            queries: c.queries,
            queries_failed: c.queries_failed,
            retries: c.retries,
            hedges: c.hedges,
            bad_replies: c.bad_replies,
            bad_records: c.bad_records,
            sampled_relays: c.sampled_relays,
            unsendable: h.unsendable,
            own_publications: h.own_publications,
            own_accepted: h.own_accepted,
        }
    }

    /// Where this node's answered DHT queries' time went, by kind.
    pub fn dht_query_times(&self) -> &BTreeMap<&'static str, crate::dht::client::QueryTimes> {
        &self.dht.client.stats().times
    }

    /// The DHT relay (routing table, store), once this node is one.
    pub fn dht_relay(&self) -> Option<&DhtRelay> {
        self.dht.host.relay()
    }

    /// Test hook: a hostile DHT relay answers every DHT request and DHT_LOOKUP with junk and
    /// acknowledges STOREs without storing. For tests that show hostile relays do not stop
    /// lookups; nothing else calls it.
    #[doc(hidden)]
    pub fn dht_set_hostile(&mut self, hostile: bool) {
        self.dht.host.set_hostile(hostile);
    }

    /// Hands finished queries to the session layer (with the last hops the request went to),
    /// or reports them.
    fn dht_deliver(&mut self, now: Instant, done: Vec<crate::dht::client::Done>) {
        for (token, outcome, via) in done {
            if let Some(outcome) = self.sess_on_dht(now, token, outcome, via) {
                self.events.push(NodeEvent::Dht { token, outcome });
            }
        }
    }

    /// A DHT_LOOKUP_REPLY on one of our circuits; `false` if it was not ours.
    pub(super) fn dht_on_reply(&mut self, now: Instant, id: CircId, payload: &[u8]) -> bool {
        let (_, client, mut ctx) = self.dht_split();
        let ours = client.on_reply(&mut ctx, now, id, payload);
        let done = client.take_done();
        self.dht_deliver(now, done);
        ours
    }

    /// Circuit events for DHT circuits are consumed (`None`); others are handed back.
    pub(super) fn dht_on_circuit_event(&mut self, now: Instant, e: CircEvent) -> Option<CircEvent> {
        let (_, client, mut ctx) = self.dht_split();
        let e = client.on_circuit_event(&mut ctx, now, e);
        let done = client.take_done();
        self.dht_deliver(now, done);
        e
    }

    pub(super) fn dht_on_frame(
        &mut self,
        now: Instant,
        link: LinkId,
        rpc_id: u64,
        response: bool,
        data: &[u8],
    ) {
        let (host, _, mut ctx) = self.dht_split();
        host.on_frame(&mut ctx, now, link, rpc_id, response, data);
    }

    pub(super) fn dht_on_last_hop(&mut self, now: Instant, slot: u64, payload: &[u8]) {
        let (host, _, mut ctx) = self.dht_split();
        host.on_last_hop(&mut ctx, now, slot, payload);
    }

    pub(super) fn dht_on_relayed_closed(&mut self, _now: Instant, slot: u64) {
        self.dht.host.on_relayed_closed(slot);
    }

    pub(super) fn dht_timeout(&mut self, now: Instant) {
        let deferred = self.dht.client.take_deferred();
        self.dht_deliver(now, deferred);
        {
            let (host, _, mut ctx) = self.dht_split();
            host.on_timer(&mut ctx, now);
        }
        // One overdue query at a time: the session layer may start another when it hears of
        // one.
        for token in self.dht.client.overdue(now) {
            let (_, client, mut ctx) = self.dht_split();
            client.on_overdue(&mut ctx, now, token);
            let done = client.take_done();
            self.dht_deliver(now, done);
        }
        let wanted = self.sess_dht_pool_wanted();
        let (_, client, mut ctx) = self.dht_split();
        client.on_timer(&mut ctx, now, wanted);
        let done = client.take_done();
        self.dht_deliver(now, done);
    }
}
