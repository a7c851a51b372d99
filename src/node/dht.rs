//! The DHT joined to a node (docs/protocol.md section 12): the DHT relay (its routing table,
//! store and lookups, over DHT_REQUEST/DHT_RESPONSE link frames), the DHT_LOOKUP role at the last
//! hop of other people's circuits (12.6), and the lookups this node asks for through its own
//! circuits.

use crate::circuit::layer::{CircEvent, CircId};
use crate::dht::message::RecordKind;
use crate::dht::Key;
use crate::link::LinkId;
use crate::time::Millis;
use crate::wire::record::RelayRecord;

use super::{Node, NodeEvent};

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

/// The node's DHT state.
pub struct NodeDht {
    next_token: u64,
}

impl NodeDht {
    pub(crate) fn new(_seed: u64) -> NodeDht {
        NodeDht { next_token: 1 }
    }
}

impl Node {
    /// Starts a DHT query through one of our circuits (`service`: a 4-hop service circuit,
    /// else 3 hops). The answer arrives as [`NodeEvent::Dht`] with the returned token (or is
    /// consumed by the session layer when it asked).
    pub fn dht_query(&mut self, _now: Millis, _query: DhtQuery, _service: bool) -> u64 {
        let token = self.dht.next_token;
        self.dht.next_token += 1;
        self.dht_done(
            _now,
            token,
            DhtOutcome::Failed("the DHT is not wired yet".into()),
        );
        token
    }

    /// Delivers an outcome to the session layer, or reports it.
    fn dht_done(&mut self, now: Millis, token: u64, outcome: DhtOutcome) {
        if let Some(outcome) = self.sess_on_dht(now, token, outcome) {
            self.events.push(NodeEvent::Dht { token, outcome });
        }
    }

    pub(super) fn dht_on_frame(
        &mut self,
        _now: Millis,
        _link: LinkId,
        _rpc_id: u64,
        _response: bool,
        _data: &[u8],
    ) {
    }

    pub(super) fn dht_on_last_hop(&mut self, _now: Millis, _slot: u64, _payload: &[u8]) {}

    pub(super) fn dht_on_relayed_closed(&mut self, _now: Millis, _slot: u64) {}

    /// A DHT_LOOKUP_REPLY on one of our circuits; `false` if it was not ours.
    pub(super) fn dht_on_reply(&mut self, _now: Millis, _id: CircId, _payload: &[u8]) -> bool {
        false
    }

    /// Circuit events for DHT circuits are consumed (`None`); others are handed back.
    pub(super) fn dht_on_circuit_event(&mut self, _now: Millis, e: CircEvent) -> Option<CircEvent> {
        Some(e)
    }

    pub(super) fn dht_timeout(&mut self, _now: Millis) {}
}
