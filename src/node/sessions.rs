//! Sessions joined to a node (docs/protocol.md section 10): the intro-point and rendezvous-point
//! roles at the last hop of other people's circuits, the hidden services this node hosts, and the
//! sessions it has with services it visits.

use crate::circuit::layer::CircEvent;
use crate::time::Millis;

use super::dht::DhtOutcome;
use super::{Node, NodeEvent};

/// Why a packet could not be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// No session and none can be made (see [`NodeEvent::Unreachable`] for the reason).
    Unreachable(String),
}

/// The node's session state.
pub struct NodeSessions {}

impl NodeSessions {
    pub(crate) fn new(_seed: u64) -> NodeSessions {
        NodeSessions {}
    }
}

impl Node {
    /// Sends an inner IPv6 packet (source already the address the peer knows us by) to the
    /// overlay address `dst`: on the session with that peer, starting one to a service if there
    /// is none (packets wait in a bounded queue meanwhile).
    pub fn send_packet(
        &mut self,
        _now: Millis,
        dst: [u8; 16],
        _packet: &[u8],
    ) -> Result<(), SendError> {
        let why = "sessions are not wired yet".to_string();
        self.events.push(NodeEvent::Unreachable {
            dst,
            why: why.clone(),
        });
        Err(SendError::Unreachable(why))
    }

    pub(super) fn sess_on_last_hop(&mut self, _now: Millis, _slot: u64, _cmd: u8, _payload: &[u8]) {
        self.circ_dropped_role_message();
    }

    fn circ_dropped_role_message(&mut self) {}

    pub(super) fn sess_on_relayed_closed(&mut self, _now: Millis, _slot: u64) {}

    /// Circuit events for session circuits are consumed (`None`); others are handed back.
    pub(super) fn sess_on_circuit_event(
        &mut self,
        _now: Millis,
        e: CircEvent,
    ) -> Option<CircEvent> {
        Some(e)
    }

    /// A DHT outcome for a query the session layer made is consumed (`None`).
    pub(super) fn sess_on_dht(
        &mut self,
        _now: Millis,
        _token: u64,
        outcome: DhtOutcome,
    ) -> Option<DhtOutcome> {
        Some(outcome)
    }

    pub(super) fn sess_timeout(&mut self, _now: Millis) {}
}

// placeholder until wt-sessions lands: the agreed API the daemon codes against, doing nothing.

/// One hidden service this node hosts, as `globalnet services` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    /// The service's overlay address.
    pub address: std::net::Ipv6Addr,
    /// Intro points (relay key fingerprints).
    pub intro_points: Vec<String>,
    /// Age of the newest published descriptor.
    pub descriptor_age_s: Option<u64>,
}

/// One end-to-end session, as `globalnet sessions` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The peer's overlay address.
    pub peer: std::net::Ipv6Addr,
    /// "client" or "service".
    pub role: &'static str,
    /// Circuits carrying it.
    pub circuits: usize,
    /// Age in seconds.
    pub age_s: u64,
}

impl Node {
    /// Sets the key pseudonyms derive from and the destinations shown the real identity.
    // placeholder until wt-sessions lands
    pub fn set_client_identity(&mut self, _seed: [u8; 32], _real_identity_for: Vec<[u8; 16]>) {}

    /// Hosts the hidden service with key seed `seed`.
    // placeholder until wt-sessions lands
    pub fn add_service(&mut self, _now: Millis, _seed: [u8; 32]) {}

    /// The services this node hosts.
    // placeholder until wt-sessions lands
    pub fn services_info(&self) -> Vec<ServiceInfo> {
        Vec::new()
    }

    /// The sessions this node has.
    // placeholder until wt-sessions lands
    pub fn sessions_info(&self) -> Vec<SessionInfo> {
        Vec::new()
    }

    /// Sends an end-to-end PING to `dst` (starting a session if needed); the answer arrives as
    /// a PONG event with the returned id.
    // placeholder until wt-sessions lands
    pub fn e2e_ping(&mut self, _now: Millis, _dst: [u8; 16]) -> Result<u64, SendError> {
        Err(SendError::Unreachable(
            "sessions are not wired yet".to_string(),
        ))
    }
}
