//! What the session layer needs from the node under it, as one narrow trait: the circuits it
//! builds, extends, sends on and destroys; the relayed circuits that end here (for the intro and
//! rendezvous point roles); the relay view and guards for path selection; the memory budget;
//! and where to report packets and failures. The node implements it with borrows of its link
//! and circuit layers; the session state machines never see the node itself.
//!
//! DHT work goes the other way round, as requests the node carries out after each call
//! ([`crate::session::SessionLayer::poll_dht_request`]): the DHT client is another layer, and
//! the two meet only in the node.

use std::net::SocketAddr;

use crate::budget::MemoryBudget;
use crate::circuit::layer::{CircId, CircuitError, Purpose};
use crate::circuit::path::{Guards, PathRules};
use crate::link::view::RelayView;
use crate::link::LinkId;
use crate::time::Instant;
use crate::wire::record::RelayRecord;
use crate::wire::relay::RelayCommand;

/// The node as the session layer sees it.
pub trait SessionCtx {
    // ---- our circuits ----

    /// Builds a circuit along `path` (first hop first).
    fn build(
        &mut self,
        now: Instant,
        purpose: Purpose,
        path: Vec<RelayRecord>,
    ) -> Result<CircId, CircuitError>;
    /// Extends a ready circuit by one hop.
    fn extend(&mut self, now: Instant, id: CircId, target: RelayRecord)
        -> Result<(), CircuitError>;
    /// Sets what a circuit is for (the circuit layer's pool and status use it).
    fn set_purpose(&mut self, id: CircId, purpose: Purpose);
    /// The path of one of our circuits, first hop first.
    fn path(&self, id: CircId) -> Option<&[RelayRecord]>;
    /// Ready circuits of `purpose`, oldest first.
    fn ready_ids(&self, purpose: Purpose) -> Vec<CircId>;
    /// The handshake binding of hop `i` of one of our circuits.
    fn hop_bind(&self, id: CircId, i: usize) -> Option<[u8; 32]>;
    /// Sends a relay message to the last hop of one of our circuits.
    fn send(&mut self, id: CircId, cmd: RelayCommand, payload: &[u8]) -> Result<(), CircuitError>;
    /// Tears one of our circuits down (its `Closed` event follows).
    fn destroy(&mut self, now: Instant, id: CircId);

    // ---- relayed circuits that end at this node ----

    /// Answers on a relayed circuit whose last hop we are.
    fn reply(&mut self, slot: u64, cmd: RelayCommand, payload: &[u8]) -> Result<(), CircuitError>;
    /// The handshake binding of a relayed circuit.
    fn relayed_bind(&self, slot: u64) -> Option<[u8; 32]>;
    /// The link the client side of a relayed circuit arrives on.
    fn relayed_upstream(&self, slot: u64) -> Option<LinkId>;
    /// Joins two relayed circuits that both end here.
    fn splice(&mut self, a: u64, b: u64) -> Result<(), CircuitError>;
    /// Closes a relayed circuit.
    fn close_relayed(&mut self, now: Instant, slot: u64);

    // ---- paths ----

    /// The relays we know.
    fn view(&self) -> &RelayView;
    /// Our guards.
    fn guards(&self) -> &Guards;
    /// The family prefixes of the path rules.
    fn path_rules(&self) -> PathRules;
    /// Our own endpoints (paths leave them out).
    fn own_endpoints(&self) -> Vec<SocketAddr>;
    /// Our relay identity.
    fn identity(&self) -> [u8; 32];
    /// Whether a link to this peer failed lately.
    fn recently_dead(&self, peer_key: &[u8; 32], now: Instant) -> bool;
    /// Whether an extension to this relay (by identity) failed lately and no link of ours to
    /// it is up: the node left it out of its view and its paths for a while.
    fn relay_unreachable(&self, identity: &[u8; 32], now: Instant) -> bool;

    // ---- memory and reports ----

    /// The node's memory budget.
    fn budget(&self) -> &MemoryBudget;
    /// An inner packet that passed a session's checks, for the node's user.
    fn deliver_packet(&mut self, packet: &[u8]);
    /// The answer to an e2e ping.
    fn pong(&mut self, dst: [u8; 16], id: u64, rtt_ms: u64);
    /// Packets for `dst` cannot be delivered.
    fn unreachable(&mut self, dst: [u8; 16], why: &str);
    /// A cleared buffer for a queued packet.
    fn packet_buf(&mut self) -> Vec<u8>;
    /// Hands a queued packet's buffer back.
    fn recycle_packet(&mut self, buf: Vec<u8>);
}

/// A DHT query the session layer wants made. The node starts it and tells the session layer its
/// token ([`crate::session::SessionLayer::dht_started`]); the outcome comes back through
/// [`crate::session::SessionLayer::on_dht`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhtRequest {
    /// Look up the descriptor of the service `dst` stored under `key` (3-hop circuit).
    Lookup {
        /// The service.
        dst: [u8; 16],
        /// The descriptor index.
        key: [u8; 32],
    },
    /// Look up the signed record of the relay `identity` (a peer named it as intro or
    /// rendezvous point and it is not in our view; 3-hop circuit). The node adds a record
    /// that verifies and carries that identity to the view before the answer is reported.
    Relay {
        /// The relay.
        identity: [u8; 32],
    },
    /// Publish a descriptor of our service `svc` for `epoch` (4-hop service circuit).
    Publish {
        /// Our service.
        svc: [u8; 16],
        /// The descriptor's epoch.
        epoch: u64,
        /// The descriptor.
        record: Vec<u8>,
        /// Last hops the publication must not end at (besides those of the service's other
        /// running publications, which the node adds: see
        /// [`crate::session::SessionLayer::publications_of`]).
        avoid: Vec<[u8; 32]>,
    },
}

/// How a DHT query of the session layer ended, as far as sessions care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhtAnswer<'a> {
    /// Records found.
    Records(&'a [Vec<u8>]),
    /// No answer or no circuit (the reason).
    Failed(&'a str),
    /// Anything else (nothing found, a publication's counts).
    Other,
}
