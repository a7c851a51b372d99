//! The session layer joined to a node: the public session API of [`Node`], which hands each call
//! to [`crate::session::SessionLayer`] with a [`SessionCtx`] made of borrows of the node's link and circuit
//! layers, and then starts the DHT queries the session layer asked for. The state machines
//! themselves live in [`crate::session`] (see its module table).

use std::net::{Ipv6Addr, SocketAddr};

use crate::budget::MemoryBudget;
use crate::circuit::layer::{CircEvent, CircId, CircuitError, CircuitLayer, Purpose};
use crate::circuit::path::{Guards, PathRules};
use crate::dht::message::RecordKind;
use crate::link::view::RelayView;
use crate::link::{LinkId, LinkLayer};
use crate::session::flows::FlowKey;
use crate::session::roles::{IntroPointRole, RendezvousRole};
use crate::session::{DhtAnswer, DhtRequest, SessionCtx};
use crate::time::Instant;
use crate::wire::record::RelayRecord;
use crate::wire::relay::RelayCommand;

use super::dht::{DhtOutcome, DhtQuery};
use super::{Node, NodeEvent};

pub use crate::session::layer::{
    SendError, ServiceInfo, SessionInfo, SessionStats, SessionTestHooks,
};
pub use crate::session::limits::*;

/// The node as the session layer sees it: split borrows of the node's parts.
struct Ctx<'a> {
    link: &'a LinkLayer,
    circ: &'a mut CircuitLayer,
    guards: &'a Guards,
    prefix_bits: (u8, u8),
    events: &'a mut Vec<NodeEvent>,
    packet_bufs: &'a mut Vec<Vec<u8>>,
}

impl SessionCtx for Ctx<'_> {
    fn build(
        &mut self,
        now: Instant,
        purpose: Purpose,
        path: Vec<RelayRecord>,
    ) -> Result<CircId, CircuitError> {
        let first = path.first().and_then(|r| self.link.link_to(r.identity()));
        self.circ.build(now, purpose, path, first)
    }

    fn extend(
        &mut self,
        now: Instant,
        id: CircId,
        target: RelayRecord,
    ) -> Result<(), CircuitError> {
        self.circ.extend(now, id, target)
    }

    fn set_purpose(&mut self, id: CircId, purpose: Purpose) {
        self.circ.set_purpose(id, purpose);
    }

    fn path(&self, id: CircId) -> Option<&[RelayRecord]> {
        self.circ.path(id)
    }

    fn ready_ids(&self, purpose: Purpose) -> Vec<CircId> {
        self.circ.ready_ids(purpose)
    }

    fn hop_bind(&self, id: CircId, i: usize) -> Option<[u8; 32]> {
        self.circ.hop_bind(id, i)
    }

    fn send(&mut self, id: CircId, cmd: RelayCommand, payload: &[u8]) -> Result<(), CircuitError> {
        self.circ.send(id, cmd, payload)
    }

    fn destroy(&mut self, now: Instant, id: CircId) {
        self.circ.destroy(now, id);
    }

    fn reply(&mut self, slot: u64, cmd: RelayCommand, payload: &[u8]) -> Result<(), CircuitError> {
        self.circ.reply(slot, cmd, payload)
    }

    fn relayed_bind(&self, slot: u64) -> Option<[u8; 32]> {
        self.circ.relayed_bind(slot)
    }

    fn relayed_upstream(&self, slot: u64) -> Option<LinkId> {
        self.circ.relayed_upstream(slot)
    }

    fn splice(&mut self, a: u64, b: u64) -> Result<(), CircuitError> {
        self.circ.splice(a, b)
    }

    fn close_relayed(&mut self, now: Instant, slot: u64) {
        self.circ.close_relayed(now, slot);
    }

    fn view(&self) -> &RelayView {
        self.link.view()
    }

    fn guards(&self) -> &Guards {
        self.guards
    }

    fn path_rules(&self) -> PathRules {
        PathRules {
            ipv4_bits: self.prefix_bits.0,
            ipv6_bits: self.prefix_bits.1,
        }
    }

    fn own_endpoints(&self) -> Vec<SocketAddr> {
        super::own_endpoints(self.link)
    }

    fn identity(&self) -> [u8; 32] {
        self.link.identity()
    }

    fn recently_dead(&self, peer_key: &[u8; 32], now: Instant) -> bool {
        self.link.recently_dead(peer_key, now)
    }

    fn relay_unreachable(&self, identity: &[u8; 32], now: Instant) -> bool {
        self.link.is_suspect(identity, now) && self.link.link_to(identity).is_none()
    }

    fn budget(&self) -> &MemoryBudget {
        self.link.budget()
    }

    fn deliver_packet(&mut self, packet: &[u8]) {
        let mut buf = self.packet_bufs.pop().unwrap_or_default();
        buf.extend_from_slice(packet);
        self.events.push(NodeEvent::Packet { buf });
    }

    fn pong(&mut self, dst: [u8; 16], id: u64, rtt_ms: u64) {
        self.events.push(NodeEvent::Pong { dst, id, rtt_ms });
    }

    fn unreachable(&mut self, dst: [u8; 16], why: &str) {
        self.events.push(NodeEvent::Unreachable {
            dst,
            why: why.to_string(),
        });
    }

    fn packet_buf(&mut self) -> Vec<u8> {
        self.packet_bufs.pop().unwrap_or_default()
    }

    fn recycle_packet(&mut self, mut buf: Vec<u8>) {
        if self.packet_bufs.len() < 256 {
            buf.clear();
            self.packet_bufs.push(buf);
        }
    }
}

impl Node {
    /// Runs `f` on the session layer with a context of the node's parts, then starts the DHT
    /// queries it asked for.
    fn with_sessions<R>(
        &mut self,
        now: Instant,
        f: impl FnOnce(&mut crate::session::SessionLayer, &mut Ctx<'_>) -> R,
    ) -> R {
        let mut ctx = Ctx {
            link: &self.link,
            circ: &mut self.circ,
            guards: &self.guards,
            prefix_bits: self.prefix_bits,
            events: &mut self.events,
            packet_bufs: &mut self.packet_bufs,
        };
        let r = f(&mut self.sess, &mut ctx);
        self.sess_dht_requests(now);
        self.sess_solve_requests(now);
        r
    }

    /// Solves the puzzles the session layer asked for, or reports them to the driver.
    fn sess_solve_requests(&mut self, now: Instant) {
        while let Some(req) = self.sess.poll_solve_request() {
            if !self.solve_inline {
                self.events.push(NodeEvent::Solve(req));
                continue;
            }
            let pow = req.solve();
            let mut ctx = Ctx {
                link: &self.link,
                circ: &mut self.circ,
                guards: &self.guards,
                prefix_bits: self.prefix_bits,
                events: &mut self.events,
                packet_bufs: &mut self.packet_bufs,
            };
            self.sess.pow_solved(&mut ctx, now, req.token, pow);
        }
    }

    /// Whether puzzles are solved on the node's task (the default, for the simulator) or
    /// reported as [`NodeEvent::Solve`] for the driver to solve elsewhere.
    pub fn set_solve_inline(&mut self, inline: bool) {
        self.solve_inline = inline;
    }

    /// The answer to a [`NodeEvent::Solve`]: its INTRODUCE1 goes out (if its introduction
    /// attempt is still on).
    pub fn pow_solved(
        &mut self,
        now: Instant,
        token: u64,
        pow: Option<crate::session::intro_pow::IntroPow>,
    ) {
        self.with_sessions(now, |s, ctx| s.pow_solved(ctx, now, token, pow));
        self.pump(now);
    }

    /// Starts the DHT queries the session layer asked for.
    fn sess_dht_requests(&mut self, now: Instant) {
        while let Some(req) = self.sess.poll_dht_request() {
            let token = match &req {
                DhtRequest::Lookup { key, .. } => self.dht_query(
                    now,
                    DhtQuery::FindValue {
                        kind: RecordKind::Descriptor,
                        key: *key,
                    },
                    false,
                ),
                DhtRequest::Relay { identity } => self.dht_query(
                    now,
                    DhtQuery::FindValue {
                        kind: RecordKind::Relay,
                        key: crate::dht::relay_key(identity),
                    },
                    false,
                ),
                DhtRequest::Publish {
                    svc,
                    epoch,
                    record,
                    avoid,
                } => {
                    // Not where the service's records of other epochs go now (12.6).
                    let mut avoid = avoid.clone();
                    for t in self.sess.publications_of(*svc, *epoch) {
                        avoid.extend_from_slice(self.dht_query_via(t));
                    }
                    avoid.sort_unstable();
                    avoid.dedup();
                    self.dht_query_avoiding(
                        now,
                        DhtQuery::Publish {
                            kind: RecordKind::Descriptor,
                            record: record.clone(),
                        },
                        true,
                        avoid,
                    )
                }
            };
            self.sess.dht_started(token, &req);
        }
    }

    // ---- public API ----------------------------------------------------------------------

    /// Hosts a hidden service with the Ed25519 seed `seed` (its address is the address of the
    /// public key): intro points are chosen and established over 4-hop service circuits, and
    /// descriptors for the current (and, near the boundary, the next) epoch are published and
    /// refreshed.
    pub fn add_service(&mut self, now: Instant, seed: [u8; 32]) {
        if !self.sess.add_service(now, seed) {
            return;
        }
        self.sess_timeout(now);
        self.pump(now);
    }

    /// Hosts the default service (the client identity's key) as well, e.g. after a reload.
    pub fn add_default_service(&mut self, now: Instant) {
        if let Some(seed) = self.sess.client_seed() {
            self.add_service(now, seed);
        }
    }

    /// Stops hosting the service at `address`; the other services keep their circuits and
    /// sessions.
    pub fn remove_service(&mut self, now: Instant, address: [u8; 16]) {
        if self.with_sessions(now, |s, ctx| s.remove_service(ctx, now, address)) {
            self.pump(now);
        }
    }

    /// Which service each of the services' circuits works for.
    pub fn circuit_services(&self) -> Vec<(CircId, [u8; 16])> {
        self.sess.circuit_services()
    }

    /// Sets the node's own service seed, from which per-destination pseudonyms are derived
    /// (10.1); destinations in `real_identity_for` see the real identity instead.
    pub fn set_client_identity(&mut self, seed: [u8; 32], real_identity_for: Vec<[u8; 16]>) {
        self.sess.set_client_identity(seed, real_identity_for);
    }

    /// The most proof of work put into one introduction (`[client] pow_max_effort`).
    pub fn set_pow_max_effort(&mut self, effort: u32) {
        self.sess.set_pow_max_effort(effort);
    }

    /// The address this node shows `dst` as a client (its pseudonym for `dst`, or its real
    /// address where configured), if a client identity is set.
    pub fn pseudonym_for(&self, dst: [u8; 16]) -> Option<Ipv6Addr> {
        self.sess.pseudonym_for(dst)
    }

    /// Sends an inner IPv6 packet (source already the address the peer knows us by) to the
    /// overlay address `dst`: on the session with that peer, starting one to a service if there
    /// is none (packets wait in a bounded queue meanwhile).
    pub fn send_packet(
        &mut self,
        now: Instant,
        dst: [u8; 16],
        packet: &[u8],
    ) -> Result<(), SendError> {
        let r = self.with_sessions(now, |s, ctx| s.send_packet(ctx, now, dst, packet));
        self.pump(now);
        r
    }

    /// A name carrying the full service key `key` (a key name, or a petname or claim naming
    /// one) resolved to `address`: descriptors for `address` are used only if they carry `key`
    /// (`client/keys.rs`). `false` when `key` does not hash to `address`.
    pub fn expect_service_key(&mut self, now: Instant, address: [u8; 16], key: [u8; 32]) -> bool {
        self.sess.expect_service_key(now, address, key)
    }

    /// Sends an e2e PING on the session to `dst` (starting one if needed). The answer is a
    /// [`NodeEvent::Pong`] with the returned id.
    pub fn e2e_ping(&mut self, now: Instant, dst: [u8; 16]) -> Result<u64, SendError> {
        let r = self.with_sessions(now, |s, ctx| s.e2e_ping(ctx, now, dst));
        self.pump(now);
        r
    }

    /// The services this node hosts.
    pub fn services_info(&self) -> Vec<ServiceInfo> {
        self.sess.services_info()
    }

    /// The sessions this node has, as a client and as a service.
    pub fn sessions_info(&self) -> Vec<SessionInfo> {
        self.sess.sessions_info()
    }

    /// The descriptors our services last built (current and next epoch), as published.
    pub fn service_descriptors(&self) -> Vec<Vec<u8>> {
        self.sess.service_descriptors()
    }

    /// Puts a descriptor into the client cache (after the storage checks of 11.5; the client
    /// checks run when it is used).
    pub fn cache_descriptor(&mut self, now: Instant, bytes: &[u8]) -> Result<(), String> {
        self.sess.cache_descriptor(self.link.budget(), now, bytes)
    }

    /// Counters of the session layer.
    pub fn session_stats(&self) -> &SessionStats {
        self.sess.session_stats()
    }

    /// The intro-point role's table, if this relay ever acted as one.
    pub fn intro_role(&self) -> Option<&IntroPointRole> {
        self.sess.intro_role()
    }

    /// Drops every intro registration held here, silently (tests).
    #[doc(hidden)]
    pub fn forget_intro_registrations(&mut self) {
        self.sess.forget_intro_registrations()
    }

    /// The rendezvous-point role's table, if this relay ever acted as one.
    pub fn rendezvous_role(&self) -> Option<&RendezvousRole> {
        self.sess.rendezvous_role()
    }

    /// Circuits of our client session to `dst` and the flows on each (for tests and status).
    pub fn session_circuits(&self, dst: [u8; 16]) -> Vec<(CircId, usize)> {
        self.sess.session_circuits(dst)
    }

    /// The circuit a flow of our session to `dst` rides.
    pub fn flow_circuit(&self, dst: [u8; 16], flow: &FlowKey) -> Option<CircId> {
        self.sess.flow_circuit(dst, flow)
    }

    /// Circuits of our service `svc`'s session with the client `peer`.
    pub fn service_session_circuits(&self, svc: [u8; 16], peer: [u8; 16]) -> Vec<CircId> {
        self.sess.service_session_circuits(svc, peer)
    }

    /// The intro circuits of our service `svc`: circuit, auth key, whether established.
    pub fn service_intro_circuits(&self, svc: [u8; 16]) -> Vec<(CircId, [u8; 32], bool)> {
        self.sess.service_intro_circuits(svc)
    }

    /// The client addresses (pseudonyms) our service `svc` has sessions with.
    pub fn service_peers(&self, svc: [u8; 16]) -> Vec<[u8; 16]> {
        self.sess.service_peers(svc)
    }

    /// Whether this node holds (as a service) the secret of the key with this public half.
    pub fn holds_service_key(&self, public: &[u8; 32]) -> bool {
        self.sess.holds_service_key(public)
    }

    /// Test hooks (a node that misbehaves on purpose).
    #[doc(hidden)]
    pub fn session_test_hooks(&mut self) -> &mut SessionTestHooks {
        self.sess.session_test_hooks()
    }

    // ---- events from the other layers ----------------------------------------------------

    /// A relay message at the last hop of someone else's circuit (intro and rendezvous points).
    pub(super) fn sess_on_last_hop(&mut self, now: Instant, slot: u64, cmd: u8, payload: &[u8]) {
        self.with_sessions(now, |s, ctx| s.on_last_hop(ctx, now, slot, cmd, payload));
    }

    pub(super) fn sess_on_relayed_closed(&mut self, now: Instant, slot: u64) {
        self.sess.on_relayed_closed(now, slot);
    }

    /// A link to a relay went down (it may have died): new paths avoid it for a while.
    pub(super) fn sess_on_link_down(&mut self, now: Instant, identity: &[u8; 32]) {
        self.sess.on_link_down(now, identity);
    }

    /// A link to a relay is up: it is not suspect (any more).
    pub(super) fn sess_on_link_up(&mut self, identity: &[u8; 32]) {
        self.sess.on_link_up(identity);
    }

    /// Circuit events for session circuits are consumed (`None`); others are handed back.
    pub(super) fn sess_on_circuit_event(
        &mut self,
        now: Instant,
        e: CircEvent,
    ) -> Option<CircEvent> {
        if !self.with_sessions(now, |s, ctx| s.on_circuit_event(ctx, now, &e)) {
            return Some(e);
        }
        if let CircEvent::Message { payload, .. } = e {
            self.circ.recycle_payload(payload);
        }
        None
    }

    /// Whether the DHT layer should keep unused circuits built for client lookups and for
    /// service publications (how many of each).
    pub(super) fn sess_dht_pool_wanted(&self) -> (usize, usize) {
        let (clients, services) = self.sess.dht_pools_wanted();
        (
            if clients {
                super::dht::DHT_POOL_CLIENT
            } else {
                0
            },
            if services {
                super::dht::DHT_POOL_SERVICE
            } else {
                0
            },
        )
    }

    /// A DHT outcome for a query the session layer made is consumed (`None`).
    pub(super) fn sess_on_dht(
        &mut self,
        now: Instant,
        token: u64,
        outcome: DhtOutcome,
        via: Vec<[u8; 32]>,
    ) -> Option<DhtOutcome> {
        if let (Some(identity), DhtOutcome::Records(rs)) = (self.sess.relay_lookup(token), &outcome)
        {
            // A relay record a peer's choice needs (intro or rendezvous point): verified, and
            // only the relay asked for, vouched for by the last hop that answered (9.1).
            let found: Vec<RelayRecord> = rs
                .iter()
                .filter_map(|b| RelayRecord::parse(b, now.as_unix_ms()).ok())
                .filter(|r| *r.identity() == identity)
                .take(1)
                .collect();
            let via_hop = via.last().copied().unwrap_or(identity);
            self.link.add_dht_records(found, via_hop, now);
        }
        let answer = match &outcome {
            DhtOutcome::Records(r) => DhtAnswer::Records(r),
            DhtOutcome::Failed(why) => DhtAnswer::Failed(why),
            _ => DhtAnswer::Other,
        };
        if self.with_sessions(now, |s, ctx| s.on_dht(ctx, now, token, answer, via)) {
            None
        } else {
            Some(outcome)
        }
    }

    pub(super) fn sess_timeout(&mut self, now: Instant) {
        self.with_sessions(now, |s, ctx| s.timeout(ctx, now));
    }
}
