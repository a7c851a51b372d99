//! Exits joined to the node (docs/decisions.md "Exits"): at an exit, `EXIT_PACKET`s from
//! circuits that end here go up to the daemon's `gnx0` path and answers go back on their circuit;
//! at a client, one circuit to an exit carries the packets gn0 routes outside the overlay.

use std::collections::BTreeMap;

use crate::circuit::layer::{CircEvent, CircId, Purpose};
use crate::circuit::path::{Hop, PathContext, PathKind, Target};
use crate::exit::client::accept_from_exit;
use crate::time::{Instant, Millis};
use crate::wire::record::{RelayRecord, FLAG_EXIT};
use crate::wire::relay::RelayCommand;

use super::{Node, NodeEvent};

/// Wait after a failed exit circuit before building another.
pub const EXIT_RETRY_MS: Millis = 1_000;
/// Packets a group keeps while its circuit is built (a new connection's SYN, a DNS query), sent
/// when it is ready instead of waiting for the sender's retransmission.
pub const EXIT_PENDING_MAX: usize = 16;

/// Why a packet did not go to an exit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExitSendError {
    /// `[outbound]` is off.
    #[error("no outbound traffic configured")]
    Off,
    /// The exit circuit is being built (the packet is dropped; TCP sends it again).
    #[error("the exit circuit is not ready yet")]
    NotReady,
    /// The circuit layer refused it.
    #[error("the exit circuit refused the packet: {0}")]
    Circuit(String),
}

/// One isolation group's circuit to an exit.
#[derive(Debug, Default)]
struct GroupCircuit {
    circ: Option<CircId>,
    ready: bool,
    /// The exit at its end, for status.
    exit: Option<[u8; 32]>,
    retry_at: Instant,
    last_error: Option<String>,
    /// Packets waiting for the circuit.
    pending: Vec<Vec<u8>>,
}

/// The node's exit state, both roles.
#[derive(Debug, Default)]
pub(crate) struct NodeExits {
    /// We are an exit: `EXIT_PACKET`s ending here go up.
    serving: bool,
    /// We send traffic to exits (`[outbound] routes` or `socks`).
    outbound: bool,
    /// A pinned exit.
    pin: Option<[u8; 32]>,
    /// Each isolation group's circuit (group 1: routes and SOCKS without a user name); groups
    /// never share a circuit.
    groups: BTreeMap<u8, GroupCircuit>,
    /// `EXIT_PACKET`s that arrived here while we are not an exit.
    pub(crate) refused_not_exit: u64,
    /// Answers from our exit that failed the client's checks.
    pub(crate) refused_answers: u64,
}

/// The client's exit circuit, for status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitCircuitInfo {
    /// The exit's relay key (hex), once chosen.
    pub exit: Option<String>,
    /// Built and carrying packets.
    pub ready: bool,
    /// Why no circuit could be built, if so.
    pub error: Option<String>,
    /// Isolation groups with a ready circuit (group 1 and SOCKS user names).
    pub groups: usize,
}

impl NodeExits {
    pub(super) fn owns(&self, id: CircId) -> bool {
        self.group_of(id).is_some()
    }

    fn group_of(&self, id: CircId) -> Option<u8> {
        self.groups
            .iter()
            .find(|(_, g)| g.circ == Some(id))
            .map(|(k, _)| *k)
    }
}

impl Node {
    /// Serve as an exit: `EXIT_PACKET`s on circuits ending here are reported as
    /// [`NodeEvent::ExitPacket`] (the daemon's `gnx0` path decides on them).
    pub fn set_exit_role(&mut self, on: bool) {
        self.exits.serving = on;
    }

    /// Send traffic to exits: keeps one circuit to an exit (pinned by key, or any relay with the
    /// `EXIT` flag under the path rules).
    pub fn set_outbound(&mut self, on: bool, pin: Option<[u8; 32]>) {
        self.exits.outbound = on;
        self.exits.pin = pin;
    }

    /// The client's exit circuit, when outbound traffic is on.
    pub fn exit_circuit_info(&self) -> Option<ExitCircuitInfo> {
        let g = self.exits.groups.get(&1);
        self.exits.outbound.then(|| ExitCircuitInfo {
            exit: g.and_then(|g| g.exit).map(|k| crate::crypto::keys::hex(&k)),
            ready: g.is_some_and(|g| g.ready),
            error: g.and_then(|g| g.last_error.clone()),
            groups: self.exits.groups.values().filter(|g| g.ready).count(),
        })
    }

    /// Sends one packet from gn0 of isolation group `group` (as
    /// [`crate::exit::client::for_exit`] says) to that group's exit.
    pub fn send_exit_packet(
        &mut self,
        now: Instant,
        group: u8,
        p: &[u8],
    ) -> Result<(), ExitSendError> {
        if !self.exits.outbound {
            return Err(ExitSendError::Off);
        }
        let g = self.exits.groups.entry(group).or_default();
        match g.circ {
            Some(id) if g.ready => {
                let r = self
                    .circ
                    .send(id, RelayCommand::ExitPacket, p)
                    .map_err(|e| ExitSendError::Circuit(e.to_string()));
                self.pump(now);
                r
            }
            Some(_) => {
                self.queue_exit_packet(group, p);
                Err(ExitSendError::NotReady)
            }
            None => {
                self.queue_exit_packet(group, p);
                self.build_exit_circuit(now, group);
                self.pump(now);
                Err(ExitSendError::NotReady)
            }
        }
    }

    /// Keeps a copy of `p` until `group`'s circuit is ready (at most [`EXIT_PENDING_MAX`]).
    fn queue_exit_packet(&mut self, group: u8, p: &[u8]) {
        let mut buf = self.packet_bufs.pop().unwrap_or_default();
        let Some(g) = self.exits.groups.get_mut(&group) else {
            return;
        };
        if g.pending.len() < EXIT_PENDING_MAX {
            buf.clear();
            buf.extend_from_slice(p);
            g.pending.push(buf);
        } else {
            self.packet_bufs.push(buf);
        }
    }

    /// Sends an answer from `gnx0` (or a refusal) back on the circuit `slot` that ends here.
    pub fn exit_reply(&mut self, now: Instant, slot: u64, p: &[u8]) -> Result<(), String> {
        let r = self
            .circ
            .reply(slot, RelayCommand::ExitPacket, p)
            .map_err(|e| e.to_string());
        self.pump(now);
        r
    }

    /// Timer upkeep: a client with outbound traffic keeps its exit circuit built.
    pub(super) fn exit_timeout(&mut self, now: Instant) {
        if self.exits.outbound {
            self.build_exit_circuit(now, 1);
        }
    }

    /// Builds isolation group `group`'s circuit (a new path: groups never share a circuit).
    fn build_exit_circuit(&mut self, now: Instant, group: u8) {
        let g = self.exits.groups.entry(group).or_default();
        if g.circ.is_some() || now < g.retry_at {
            return;
        }
        g.retry_at = now + EXIT_RETRY_MS;
        let pin = self.exits.pin;
        let own_endpoints = self.own_endpoints();
        let ctx = PathContext {
            view: self.link.view(),
            rules: self.path_rules(),
            own_endpoints: &own_endpoints,
            now,
        };
        let mut error = |e: String| {
            if let Some(g) = self.exits.groups.get_mut(&group) {
                if g.last_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!("cannot build a circuit to an exit: {e}");
                }
                g.last_error = Some(e);
            }
        };
        let target = match pin {
            Some(k) => match ctx.view.get(&k) {
                Some(r) if r.fields().flags & FLAG_EXIT != 0 => Target::Relay(Hop::from_record(r)),
                _ => {
                    error("the pinned exit is not in the view with the EXIT flag".into());
                    return;
                }
            },
            // Chosen first, then reached like an intro point: a guard that is the exit itself
            // or in its family is passed over for the next one (Tor's guard restriction), which
            // `Target::Any` cannot do.
            None => {
                use rand::seq::SliceRandom;
                let own = self.link.identity();
                let exits: Vec<&RelayRecord> = ctx
                    .view
                    .iter()
                    .filter(|r| r.fields().flags & FLAG_EXIT != 0 && *r.identity() != own)
                    .collect();
                match exits.choose(&mut self.rng) {
                    Some(r) => Target::Relay(Hop::from_record(r)),
                    None => {
                        error("no relay with the EXIT flag known".into());
                        return;
                    }
                }
            }
        };
        let path = ctx
            .select(PathKind::Client(target), &self.guards, None, &mut self.rng)
            .map_err(|e| e.to_string())
            .and_then(|p| {
                p.hops()
                    .iter()
                    .map(|h| ctx.view.get(&h.identity).cloned())
                    .collect::<Option<Vec<RelayRecord>>>()
                    .ok_or_else(|| "path: a hop left the view".to_string())
            });
        let path = match path {
            Ok(p) => p,
            Err(e) => {
                error(e);
                return;
            }
        };
        let exit = path.last().map(|r| *r.identity());
        let first = path.first().and_then(|r| self.link.link_to(r.identity()));
        let built = self.circ.build(now, Purpose::Exit, path, first);
        if let Some(g) = self.exits.groups.get_mut(&group) {
            match built {
                Ok(id) => {
                    g.circ = Some(id);
                    g.ready = false;
                    g.exit = exit;
                }
                Err(e) => g.last_error = Some(e.to_string()),
            }
        }
    }

    /// An event of our exit circuit.
    pub(super) fn exit_on_circuit_event(&mut self, e: CircEvent) {
        let id = match &e {
            CircEvent::Built { id, .. }
            | CircEvent::Closed { id, .. }
            | CircEvent::Message { id, .. }
            | CircEvent::Extended { id, .. } => *id,
            CircEvent::LastHop { .. } | CircEvent::RelayedClosed { .. } => return,
        };
        let Some(group) = self.exits.group_of(id) else {
            return;
        };
        let Some(g) = self.exits.groups.get_mut(&group) else {
            return;
        };
        match e {
            CircEvent::Built { id, build_ms } => {
                g.ready = true;
                g.last_error = None;
                let pending = std::mem::take(&mut g.pending);
                tracing::info!(
                    circuit = id.0,
                    build_ms,
                    group,
                    exit = %g.exit.map_or_else(String::new, |k| crate::crypto::keys::fingerprint(&k)),
                    "circuit to an exit ready"
                );
                for p in pending {
                    if let Err(e) = self.circ.send(id, RelayCommand::ExitPacket, &p) {
                        tracing::trace!("a packet kept for the exit circuit was lost: {e}");
                    }
                    self.recycle_packet(p);
                }
            }
            CircEvent::Closed { id, why } => {
                tracing::info!(circuit = id.0, group, why, "circuit to an exit closed");
                g.circ = None;
                g.ready = false;
                g.last_error = Some(why);
                let dropped = std::mem::take(&mut g.pending);
                for p in dropped {
                    self.recycle_packet(p);
                }
            }
            CircEvent::Message { cmd, payload, .. } => {
                if cmd == RelayCommand::ExitPacket as u8 && accept_from_exit(&payload, group) {
                    self.events.push(NodeEvent::ExitAnswer { buf: payload });
                } else {
                    self.exits.refused_answers += 1;
                    self.circ.recycle_payload(payload);
                }
            }
            CircEvent::Extended { .. }
            | CircEvent::LastHop { .. }
            | CircEvent::RelayedClosed { .. } => {}
        }
    }

    /// An `EXIT_PACKET` on a circuit that ends here.
    pub(super) fn exit_on_last_hop(&mut self, slot: u64, payload: Vec<u8>) {
        if self.exits.serving {
            self.events
                .push(NodeEvent::ExitPacket { slot, buf: payload });
        } else {
            self.exits.refused_not_exit += 1;
            self.circ.recycle_payload(payload);
        }
    }

    /// A circuit ending here is gone.
    pub(super) fn exit_on_relayed_closed(&mut self, slot: u64) {
        if self.exits.serving {
            self.events.push(NodeEvent::ExitClosed { slot });
        }
    }
}
