//! One relay's state for one circuit, and what it does to cells (docs/protocol.md sections 6.3,
//! 6.5-6.8 and 8.4).
//!
//! [`RelayHop`] holds the hop keys, the circuit ids on both sides, a forward and a backward replay
//! window, the RELAY_EARLY count and the backward origin counter: about 700 bytes. Its methods work
//! in place on a `[u8; CELL_LEN]` buffer and leave it ready to send on the other link:
//!
//! - [`RelayHop::forward`]: a RELAY/RELAY_EARLY cell from upstream. An intermediate hop removes its
//!   layer and passes it on (a hop that has just extended first recognises the client's resent
//!   EXTEND by its own check field); the last hop also checks the zero check field and hands out
//!   the relay message.
//!
//! Errors say whether the circuit ends ([`HopError::destroy_reason`]): the first failed check
//! field at the last hop and any seq more than `MAX_SEQ_JUMP` ahead destroy it (6.5, 6.7), since
//! loss, duplicates and reordering never cause either, and only the circuit's two neighbours can
//! send a cell that reaches it.
//! - [`RelayHop::backward`]: a RELAY cell from downstream, given this hop's layer and passed up.
//! - [`RelayHop::originate`]: the last hop sends a relay message towards the client.
//! - [`RelayHop::begin_extend`] / [`RelayHop::finish_extend`] / [`RelayHop::fail_extend`]: the
//!   last hop's part of EXTEND (8.4).
//!
//! Nothing here allocates, reads a clock or does I/O; the caller owns links, timers and queues.

use core::fmt;
use subtle::ConstantTimeEq;

use super::handshake::RelayHandshake;
use super::keys::{HopKeys, BACKWARD_SEQ_GAP};
use super::replay::{ReplayError, ReplayWindow};
use super::wideblock::{tweak, WbError};
use crate::wire::cell::{
    Cell, CellCommand, CellError, DestroyReason, CELL_BODY_LEN, CELL_HEADER_LEN, CELL_LEN,
};
use crate::wire::handshake::CREATED_HS_LEN;
use crate::wire::relay::{
    emit_relay_message, Extended, ExtendedStatus, RelayCommand, RelayError, RelayMessage,
    RELAY_CHECK_LEN,
};

/// RELAY_EARLY cells a circuit may carry forward (6.8); the next one destroys it.
pub const MAX_RELAY_EARLY: u8 = 8;
/// Cells a circuit carries per direction before the client must replace it.
pub const CIRCUIT_MAX_CELLS: u64 = 1 << 31;

/// Why a relay refused a cell or a request. [`HopError::destroy_reason`] says whether the circuit
/// must be destroyed; every other error means "drop and count".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HopError {
    /// Unknown cell version or command.
    Cell(CellError),
    /// A cell that is not RELAY or RELAY_EARLY (the caller handles those).
    NotRelay(CellCommand),
    /// Refused by the replay window. Too far ahead destroys the circuit (reason 1, 6.7); a
    /// replay or a seq too old is dropped.
    Replay(ReplayError),
    /// The check field at the last hop was not zero: tampering or garbage. The first one
    /// destroys the circuit (reason 1, 6.5): loss, reordering and duplicates never cause one.
    Tampered,
    /// The 9th RELAY_EARLY (destroy, reason 1).
    TooManyRelayEarly,
    /// A RELAY_EARLY with a seq above that of a RELAY cell already seen (destroy, reason 1).
    RelayEarlyAfterRelay,
    /// A RELAY_EARLY travelling backward (destroy, reason 1).
    BackwardRelayEarly,
    /// The relay message in a cell that passed the check field has an unknown version or length
    /// (destroy, reason 1, for an unknown version; 7.1).
    Relay(RelayError),
    /// A backward cell on a circuit with no next hop.
    NoNextHop,
    /// Only the last hop originates backward cells.
    NotLastHop,
    /// The origin counter advanced by [`BACKWARD_SEQ_GAP`] during an extension, so this hop can no
    /// longer originate without reusing the next hop's tweak values.
    OriginExhausted,
    /// An EXTEND that is not allowed now (EXTENDED status 4 when it came in RELAY_EARLY).
    ExtendRefused,
    /// No extension in progress.
    NotExtending,
    /// The per-hop layer refused the body (cannot happen for [`CELL_LEN`] buffers).
    Wb(WbError),
}

impl HopError {
    /// The DESTROY reason, if this error ends the circuit.
    pub fn destroy_reason(&self) -> Option<DestroyReason> {
        match self {
            HopError::Cell(_)
            | HopError::Tampered
            | HopError::Replay(ReplayError::TooFarAhead)
            | HopError::TooManyRelayEarly
            | HopError::RelayEarlyAfterRelay
            | HopError::BackwardRelayEarly
            | HopError::Relay(RelayError::UnknownVersion(_)) => Some(DestroyReason::Protocol),
            HopError::Wb(_) => Some(DestroyReason::Internal),
            _ => None,
        }
    }
}

impl fmt::Display for HopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HopError::Cell(e) => write!(f, "{e}"),
            HopError::NotRelay(c) => write!(f, "{c:?} cell where a relay cell was expected"),
            HopError::Replay(e) => write!(f, "{e}"),
            HopError::Tampered => f.write_str("check field failed"),
            HopError::TooManyRelayEarly => f.write_str("too many RELAY_EARLY cells"),
            HopError::RelayEarlyAfterRelay => f.write_str("RELAY_EARLY after RELAY"),
            HopError::BackwardRelayEarly => f.write_str("RELAY_EARLY travelling backward"),
            HopError::Relay(e) => write!(f, "relay message refused: {e}"),
            HopError::NoNextHop => f.write_str("backward cell on a circuit with no next hop"),
            HopError::NotLastHop => f.write_str("only the last hop originates cells"),
            HopError::OriginExhausted => f.write_str("backward origin counter exhausted"),
            HopError::ExtendRefused => f.write_str("EXTEND refused"),
            HopError::NotExtending => f.write_str("no extension in progress"),
            HopError::Wb(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for HopError {}

impl From<ReplayError> for HopError {
    fn from(e: ReplayError) -> Self {
        HopError::Replay(e)
    }
}

impl From<WbError> for HopError {
    fn from(e: WbError) -> Self {
        HopError::Wb(e)
    }
}

impl From<CellError> for HopError {
    fn from(e: CellError) -> Self {
        HopError::Cell(e)
    }
}

/// What became of a forward cell.
#[derive(Debug)]
pub enum Forward<'a> {
    /// Layer removed; the cell now carries the next circuit id and seq: send it downstream.
    Relayed,
    /// This is the last hop and the cell passed the check field: here is the relay message (its
    /// command is not checked yet). `early` says it came in RELAY_EARLY (EXTEND requires it).
    Delivered {
        /// Whether the cell was RELAY_EARLY.
        early: bool,
        /// The relay message, in the cell buffer.
        message: RelayMessage<&'a [u8; CELL_BODY_LEN]>,
    },
    /// This hop extended the circuit and has not forwarded a cell since, and this RELAY_EARLY
    /// cell passed its own check field: the client resent its EXTEND because the EXTENDED was
    /// lost (8.4). Answer with the same EXTENDED if the CREATE bytes are the ones this hop sent
    /// on; never forward it (the next hop would see garbage and destroy the circuit).
    ResentExtend {
        /// The relay message, in the cell buffer.
        message: RelayMessage<&'a [u8; CELL_BODY_LEN]>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// The last hop.
    Last,
    /// The last hop, waiting for CREATED from the next hop.
    Extending,
    /// Forwarding to the next hop, on `circ_id`.
    Intermediate(u32),
}

/// One relay's per-circuit cell state.
pub struct RelayHop {
    keys: HopKeys,
    upstream_circ_id: u32,
    role: Role,
    fwd_window: ReplayWindow,
    bwd_window: ReplayWindow,
    relay_early: u8,
    /// The lowest seq of a forward RELAY cell seen (6.8), once `relay_seen`. Not an
    /// `Option<u64>`: its tag took 8 bytes with padding, and a relayed circuit has only a few
    /// bytes left under its 1 KiB (6.3); the flag shares a word with the small fields.
    lowest_relay_seq: u64,
    relay_seen: bool,
    origin_start: u64,
    origin_next: u64,
    /// Set by [`finish_extend`](Self::finish_extend), cleared by the first cell forwarded: until
    /// then a RELAY_EARLY that passes this hop's check field is a resent EXTEND.
    just_extended: bool,
}

impl fmt::Debug for RelayHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayHop")
            .field("upstream_circ_id", &self.upstream_circ_id)
            .field("role", &self.role)
            .field("relay_early", &self.relay_early)
            .finish_non_exhaustive()
    }
}

/// Whether a body's check field (its first [`RELAY_CHECK_LEN`] bytes) is zero, in constant time.
pub(crate) fn check_field_is_zero(body: &[u8]) -> bool {
    body.get(..RELAY_CHECK_LEN)
        .is_some_and(|c| c.ct_eq(&[0u8; RELAY_CHECK_LEN]).into())
}

fn signed_gt(a: u64, b: u64) -> bool {
    (a.wrapping_sub(b) as i64) > 0
}

impl RelayHop {
    /// State for a new circuit whose CREATE arrived on `upstream_circ_id`; `backward_seq_start`
    /// is `W_j` from the client's extension area.
    pub fn new(keys: HopKeys, backward_seq_start: u64, upstream_circ_id: u32) -> Self {
        let origin_start = backward_seq_start.wrapping_sub(keys.db);
        RelayHop {
            keys,
            upstream_circ_id,
            role: Role::Last,
            fwd_window: ReplayWindow::new(),
            bwd_window: ReplayWindow::new(),
            relay_early: 0,
            lowest_relay_seq: 0,
            relay_seen: false,
            origin_start,
            origin_next: origin_start,
            just_extended: false,
        }
    }

    /// State from the relay side of a handshake.
    pub fn from_handshake(hs: RelayHandshake, upstream_circ_id: u32) -> Self {
        let w = hs.client_ext.backward_seq_start;
        Self::new(hs.keys, w, upstream_circ_id)
    }

    /// The circuit id on the upstream link.
    pub fn upstream_circ_id(&self) -> u32 {
        self.upstream_circ_id
    }

    /// The circuit id on the downstream link, once extended.
    pub fn downstream_circ_id(&self) -> Option<u32> {
        match self.role {
            Role::Intermediate(id) => Some(id),
            _ => None,
        }
    }

    /// Whether this relay is (still) the last hop.
    pub fn is_last_hop(&self) -> bool {
        !matches!(self.role, Role::Intermediate(_))
    }

    /// `bind` from the handshake.
    pub fn bind(&self) -> &[u8; 32] {
        self.keys.bind()
    }

    /// Process a RELAY or RELAY_EARLY cell that arrived from upstream (6.5, 6.8).
    pub fn forward<'a>(&mut self, cell: &'a mut [u8; CELL_LEN]) -> Result<Forward<'a>, HopError> {
        let mut view = Cell::new(&mut *cell);
        let cmd = view.command()?;
        let seq = view.seq();
        let early = match cmd {
            CellCommand::Relay => false,
            CellCommand::RelayEarly => true,
            other => return Err(HopError::NotRelay(other)),
        };
        // 1. RELAY_EARLY rules.
        if early {
            if self.relay_early >= MAX_RELAY_EARLY {
                return Err(HopError::TooManyRelayEarly);
            }
            if self.relay_seen && signed_gt(seq, self.lowest_relay_seq) {
                return Err(HopError::RelayEarlyAfterRelay);
            }
        }
        // 2. Replay window, before any decryption.
        self.fwd_window.check(seq)?;
        if early {
            self.relay_early += 1;
        } else if !self.relay_seen || signed_gt(self.lowest_relay_seq, seq) {
            self.lowest_relay_seq = seq;
            self.relay_seen = true;
        }
        // 3. Remove this hop's layer.
        self.keys
            .kf
            .decrypt(&tweak(seq, cmd as u8), view.body_mut())?;
        match self.role {
            // 4. Pass it on (unless it is a resent EXTEND meant for this hop, 8.4).
            Role::Intermediate(next) => {
                self.fwd_window.mark(seq);
                if self.just_extended {
                    if early && check_field_is_zero(view.body()) {
                        let body: &'a [u8] = &cell[CELL_HEADER_LEN..];
                        let message = RelayMessage::new_checked(body).map_err(HopError::Relay)?;
                        return Ok(Forward::ResentExtend { message });
                    }
                    self.just_extended = false;
                }
                view.set_circ_id(next);
                view.set_seq(seq.wrapping_add(self.keys.df));
                Ok(Forward::Relayed)
            }
            // 5. The last hop: the check field decides, and the first failure ends the circuit.
            Role::Last | Role::Extending => {
                if !check_field_is_zero(view.body()) {
                    return Err(HopError::Tampered);
                }
                self.fwd_window.mark(seq);
                let body: &'a [u8] = &cell[CELL_HEADER_LEN..];
                let message = RelayMessage::new_checked(body).map_err(HopError::Relay)?;
                Ok(Forward::Delivered { early, message })
            }
        }
    }

    /// Process a RELAY cell that arrived from downstream (6.6, forwarding).
    pub fn backward(&mut self, cell: &mut [u8; CELL_LEN]) -> Result<(), HopError> {
        let mut view = Cell::new(cell);
        match view.command()? {
            CellCommand::Relay => {}
            CellCommand::RelayEarly => return Err(HopError::BackwardRelayEarly),
            other => return Err(HopError::NotRelay(other)),
        }
        if !matches!(self.role, Role::Intermediate(_)) {
            return Err(HopError::NoNextHop);
        }
        let seq = view.seq();
        self.bwd_window.check(seq)?;
        self.keys
            .kb
            .encrypt(&tweak(seq, CellCommand::Relay as u8), view.body_mut())?;
        self.bwd_window.mark(seq);
        view.set_circ_id(self.upstream_circ_id);
        view.set_seq(seq.wrapping_add(self.keys.db));
        Ok(())
    }

    /// Originate a relay message towards the client (the last hop only; 6.6): fill `cell` with it,
    /// ready to send upstream.
    pub fn originate(
        &mut self,
        cmd: RelayCommand,
        payload: &[u8],
        cell: &mut [u8; CELL_LEN],
    ) -> Result<(), HopError> {
        let mut view = Cell::new(&mut *cell);
        emit_relay_message(view.body_mut(), cmd, payload).map_err(HopError::Relay)?;
        self.seal_originated(cell)
    }

    /// Originate the relay message already written in `cell`'s body (zero copy: emit it with
    /// [`emit_relay_message`] or write it directly), and fill in the header.
    pub fn seal_originated(&mut self, cell: &mut [u8; CELL_LEN]) -> Result<(), HopError> {
        match self.role {
            Role::Intermediate(_) => return Err(HopError::NotLastHop),
            Role::Extending if self.origin_advance() >= BACKWARD_SEQ_GAP => {
                return Err(HopError::OriginExhausted)
            }
            _ => {}
        }
        let t = self.origin_next;
        let mut view = Cell::new(cell);
        self.keys
            .kb
            .encrypt(&tweak(t, CellCommand::Relay as u8), view.body_mut())?;
        view.set_circ_id(self.upstream_circ_id);
        view.set_command(CellCommand::Relay);
        view.set_seq(t.wrapping_add(self.keys.db));
        self.origin_next = t.wrapping_add(1);
        Ok(())
    }

    fn origin_advance(&self) -> u64 {
        self.origin_next.wrapping_sub(self.origin_start)
    }

    /// Accept an EXTEND (8.4) delivered by [`forward`](Self::forward). Refused (answer EXTENDED
    /// status 4) unless it came in RELAY_EARLY, this is the last hop with no extension in progress,
    /// and the origin counter has advanced by less than [`BACKWARD_SEQ_GAP`]. The caller also
    /// refuses a target identity equal to its own or its upstream neighbour's, and checks the new
    /// link's HELLO identity.
    pub fn begin_extend(&mut self, early: bool) -> Result<(), HopError> {
        if !early || self.role != Role::Last || self.origin_advance() >= BACKWARD_SEQ_GAP {
            return Err(HopError::ExtendRefused);
        }
        self.role = Role::Extending;
        Ok(())
    }

    /// CREATED arrived from the next hop on `downstream_circ_id`: originate EXTENDED (status 0) in
    /// `cell` and become an intermediate hop.
    pub fn finish_extend(
        &mut self,
        created: &[u8; CREATED_HS_LEN],
        downstream_circ_id: u32,
        cell: &mut [u8; CELL_LEN],
    ) -> Result<(), HopError> {
        if self.role != Role::Extending {
            return Err(HopError::NotExtending);
        }
        let payload = Extended::emit(ExtendedStatus::Ok, created);
        self.originate(RelayCommand::Extended, &payload, cell)?;
        self.role = Role::Intermediate(downstream_circ_id);
        self.just_extended = true;
        Ok(())
    }

    /// The extension failed (or was refused): originate EXTENDED with `status` in `cell`. The hop
    /// stays the last hop; the client will tear the circuit down.
    pub fn fail_extend(
        &mut self,
        status: ExtendedStatus,
        cell: &mut [u8; CELL_LEN],
    ) -> Result<(), HopError> {
        if self.role == Role::Extending {
            self.role = Role::Last;
        }
        let payload = Extended::emit(status, &[0u8; CREATED_HS_LEN]);
        self.originate(RelayCommand::Extended, &payload, cell)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_circuit_state_is_small() {
        // 6.3: about 870 bytes per circuit per relay (GN-WB keys as HMAC midstates), under the
        // 1 KiB target; tests/sim_circuits.rs checks it with the route entries.
        assert!(
            core::mem::size_of::<RelayHop>() < 1024,
            "{}",
            core::mem::size_of::<RelayHop>()
        );
    }
}
