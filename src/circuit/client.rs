//! The client's side of one circuit: building it hop by hop and onion-wrapping cells (docs/protocol.md
//! sections 6.5, 6.6, 6.8 and 8.5).
//!
//! [`ClientCircuit`] holds the keys of every hop, the forward counter `c`, the backward replay
//! window and the handshake in flight. Both sequence starts, `c` and `W_1`, are uniformly random
//! ([`SeqStart`]), so the first hop sees what any other hop sees and cannot tell that it is first;
//! the first failed check field or a backward seq too far ahead ends the circuit. It is a plain
//! state machine over cell buffers: [`ClientCircuit::create`] fills a CREATE cell, [`ClientCircuit::on_created`] takes the
//! CREATED cell, [`ClientCircuit::extend`] fills a RELAY_EARLY cell carrying EXTEND and
//! [`ClientCircuit::on_extended`] takes the EXTENDED payload. Once built, [`ClientCircuit::send`]
//! wraps a relay message in one layer per hop and [`ClientCircuit::receive`] removes them from a
//! backward cell. Sending and receiving never allocate; growing the circuit allocates one hop.

use core::fmt;
use rand::{CryptoRng, RngCore};

use super::handshake::{ClientHandshake, HandshakeError, HopTarget};
use super::hop::{check_field_is_zero, CIRCUIT_MAX_CELLS, MAX_RELAY_EARLY};
use super::keys::{next_backward_seq_start, HopKeys};
use super::replay::{ReplayError, ReplayWindow};
use super::wideblock::{tweak, WbError};
use crate::wire::cell::{
    emit_plain_cell, Cell, CellCommand, CellError, CellHeader, DestroyReason, CELL_BODY_LEN,
    CELL_HEADER_LEN, CELL_LEN,
};
use crate::wire::handshake::{ClientExt, CreatedHandshake};
use crate::wire::relay::{
    emit_relay_message, Extend, Extended, RelayCommand, RelayError, RelayMessage, EXTEND_LEN,
    EXTEND_LINK_SPEC_LEN,
};

/// The most hops a circuit can have: every honest hop refuses the 9th RELAY_EARLY (6.8).
pub const MAX_CIRCUIT_HOPS: usize = MAX_RELAY_EARLY as usize + 1;

/// Why the client refused a cell or an operation. [`ClientError::tears_down`] says whether the
/// circuit is finished; every other error means "drop and count".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// Unknown cell version or command.
    Cell(CellError),
    /// A cell of a kind this call does not take.
    UnexpectedCell(CellCommand),
    /// A RELAY_EARLY travelling backward.
    BackwardRelayEarly,
    /// Refused by the backward replay window. Too far ahead tears the circuit down (6.7); a
    /// replay or a seq too old is dropped.
    Replay(ReplayError),
    /// The check field failed after removing every layer: tampering or garbage. The first one
    /// tears the circuit down (6.6): loss, reordering and duplicates never cause one.
    Tampered,
    /// The relay message (after a good check field) is malformed.
    Relay(RelayError),
    /// The handshake with a hop failed.
    Handshake(HandshakeError),
    /// The relay answered EXTEND with a non-zero status.
    ExtendFailed(u8),
    /// No hop yet.
    NotBuilt,
    /// A handshake is in flight; wait for CREATED / EXTENDED.
    HandshakePending,
    /// CREATED or EXTENDED without a handshake in flight.
    NoHandshakePending,
    /// A RELAY cell was already sent, so the circuit can no longer be extended (6.8).
    ExtendAfterRelay,
    /// The circuit already has [`MAX_CIRCUIT_HOPS`] hops.
    TooManyHops,
    /// EXTEND goes through [`ClientCircuit::extend`], never through `send`.
    ExtendViaSend,
    /// [`CIRCUIT_MAX_CELLS`] cells sent: replace the circuit.
    Exhausted,
    /// The per-hop layer refused the body (cannot happen for [`CELL_LEN`] buffers).
    Wb(WbError),
}

impl ClientError {
    /// Whether the circuit must be torn down (DESTROY reason 1 where one is sent).
    pub fn tears_down(&self) -> bool {
        matches!(
            self,
            ClientError::Cell(_)
                | ClientError::BackwardRelayEarly
                | ClientError::Replay(ReplayError::TooFarAhead)
                | ClientError::Tampered
                | ClientError::Relay(RelayError::UnknownVersion(_))
                | ClientError::Handshake(_)
                | ClientError::ExtendFailed(_)
                | ClientError::Exhausted
                | ClientError::Wb(_)
        )
    }

    /// The reason to put in the DESTROY the client sends, if the circuit is torn down.
    pub fn destroy_reason(&self) -> Option<DestroyReason> {
        self.tears_down().then_some(DestroyReason::Protocol)
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Cell(e) => write!(f, "{e}"),
            ClientError::UnexpectedCell(c) => write!(f, "unexpected {c:?} cell"),
            ClientError::BackwardRelayEarly => f.write_str("RELAY_EARLY travelling backward"),
            ClientError::Replay(e) => write!(f, "{e}"),
            ClientError::Tampered => f.write_str("check field failed"),
            ClientError::Relay(e) => write!(f, "relay message refused: {e}"),
            ClientError::Handshake(e) => write!(f, "handshake failed: {e}"),
            ClientError::ExtendFailed(s) => write!(f, "EXTEND failed with status {s}"),
            ClientError::NotBuilt => f.write_str("circuit has no hop yet"),
            ClientError::HandshakePending => f.write_str("a handshake is in flight"),
            ClientError::NoHandshakePending => f.write_str("no handshake in flight"),
            ClientError::ExtendAfterRelay => f.write_str("cannot extend after sending RELAY"),
            ClientError::TooManyHops => f.write_str("circuit has the most hops allowed"),
            ClientError::ExtendViaSend => f.write_str("EXTEND must be sent with extend()"),
            ClientError::Exhausted => f.write_str("circuit carried its maximum number of cells"),
            ClientError::Wb(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<HandshakeError> for ClientError {
    fn from(e: HandshakeError) -> Self {
        ClientError::Handshake(e)
    }
}

impl From<WbError> for ClientError {
    fn from(e: WbError) -> Self {
        ClientError::Wb(e)
    }
}

impl From<CellError> for ClientError {
    fn from(e: CellError) -> Self {
        ClientError::Cell(e)
    }
}

/// Where a circuit's sequence numbers start (6.5, 6.6): the forward counter `c` of the first
/// cell and `W_1`, the first backward seq hop 1 emits. A new circuit draws both uniformly at
/// random, so the values hop 1 sees are distributed exactly like those hop 2 or 3 sees
/// (`c + ΣDf`, `W_j`), and a guard cannot tell a client's own circuits from those it extends
/// for others by them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqStart {
    /// `c` of the first RELAY/RELAY_EARLY cell.
    pub forward: u64,
    /// `W_1`, sent to hop 1 in `BACKWARD_SEQ_START`.
    pub backward: u64,
}

impl SeqStart {
    /// Both starts uniformly random.
    pub fn random<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        SeqStart {
            forward: rng.next_u64(),
            backward: rng.next_u64(),
        }
    }
}

/// The client's state for one circuit.
pub struct ClientCircuit {
    circ_id: u32,
    hops: Vec<HopKeys>,
    pending: Option<ClientHandshake>,
    /// The EXTEND payload in flight, to resend in a fresh cell if no EXTENDED comes back.
    pending_extend: Option<Box<[u8; EXTEND_LEN]>>,
    /// `W` for the next hop.
    next_w: u64,
    /// `c` for the next forward cell.
    fwd_counter: u64,
    /// Forward cells sent so far.
    sent: u64,
    bwd_window: ReplayWindow,
    relay_sent: bool,
}

impl fmt::Debug for ClientCircuit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCircuit")
            .field("circ_id", &self.circ_id)
            .field("hops", &self.hops.len())
            .field("pending", &self.pending.is_some())
            .field("cells_sent", &self.sent)
            .finish_non_exhaustive()
    }
}

impl ClientCircuit {
    /// Start a circuit on `circ_id` (allocated on the link to the first hop): fill `cell` with the
    /// CREATE cell for `first_hop`. `c` and `W_1` are drawn at random.
    pub fn create<R: RngCore + CryptoRng>(
        rng: &mut R,
        circ_id: u32,
        first_hop: &HopTarget,
        cell: &mut [u8; CELL_LEN],
    ) -> Result<Self, ClientError> {
        let start = SeqStart::random(rng);
        Self::create_at(rng, circ_id, first_hop, start, cell)
    }

    /// [`create`](Self::create) with given sequence starts (known-answer tests; anything else
    /// uses random ones).
    pub fn create_at<R: RngCore + CryptoRng>(
        rng: &mut R,
        circ_id: u32,
        first_hop: &HopTarget,
        start: SeqStart,
        cell: &mut [u8; CELL_LEN],
    ) -> Result<Self, ClientError> {
        let ext = ClientExt {
            backward_seq_start: start.backward,
            features: 0,
        };
        let (hs, create) = ClientHandshake::new(rng, first_hop, &ext)?;
        let header = CellHeader {
            circ_id,
            cmd: CellCommand::Create,
            seq: 0,
        };
        emit_plain_cell(cell, &header, &create);
        Ok(ClientCircuit {
            circ_id,
            hops: Vec::with_capacity(4),
            pending: Some(hs),
            pending_extend: None,
            next_w: start.backward,
            fwd_counter: start.forward,
            sent: 0,
            bwd_window: ReplayWindow::new(),
            relay_sent: false,
        })
    }

    /// A circuit whose handshakes happened elsewhere (tests, benchmarks, or a restored state):
    /// `hops` in path order, hop 1 first, built with sequence starts `start`.
    pub fn from_hops(
        circ_id: u32,
        start: SeqStart,
        hops: Vec<HopKeys>,
    ) -> Result<Self, ClientError> {
        if hops.len() > MAX_CIRCUIT_HOPS {
            return Err(ClientError::TooManyHops);
        }
        let next_w = hops
            .iter()
            .fold(start.backward, |w, h| next_backward_seq_start(w, h.db));
        Ok(ClientCircuit {
            circ_id,
            hops,
            pending: None,
            pending_extend: None,
            next_w,
            fwd_counter: start.forward,
            sent: 0,
            bwd_window: ReplayWindow::new(),
            relay_sent: false,
        })
    }

    /// The circuit id on the link to the first hop.
    pub fn circ_id(&self) -> u32 {
        self.circ_id
    }

    /// Hops with keys installed.
    pub fn hops(&self) -> usize {
        self.hops.len()
    }

    /// Whether a CREATE or EXTEND is waiting for its answer.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// RELAY/RELAY_EARLY cells sent so far.
    pub fn cells_sent(&self) -> u64 {
        self.sent
    }

    /// The forward counter `c` the next cell will carry (hop 1 sees it as the cell's seq).
    pub fn next_forward_seq(&self) -> u64 {
        self.fwd_counter
    }

    /// `bind` of hop `i` (0-based), if built.
    pub fn hop_bind(&self, i: usize) -> Option<&[u8; 32]> {
        self.hops.get(i).map(HopKeys::bind)
    }

    /// `W` the next hop will get in `BACKWARD_SEQ_START`.
    pub fn next_backward_seq_start(&self) -> u64 {
        self.next_w
    }

    fn install(&mut self, hs: ClientHandshake, created: &[u8]) -> Result<(), ClientError> {
        let w = hs.backward_seq_start();
        let (keys, _server_ext) = hs.finish(created)?;
        self.next_w = next_backward_seq_start(w, keys.db);
        self.hops.push(keys);
        Ok(())
    }

    /// Take the CREATED cell from the first hop.
    pub fn on_created(&mut self, cell: &[u8; CELL_LEN]) -> Result<(), ClientError> {
        let view = Cell::new(cell);
        match view.command()? {
            CellCommand::Created => {}
            other => return Err(ClientError::UnexpectedCell(other)),
        }
        if !self.hops.is_empty() {
            return Err(ClientError::NoHandshakePending);
        }
        let hs = self.pending.take().ok_or(ClientError::NoHandshakePending)?;
        let created = CreatedHandshake::from_cell_body(view.body())
            .map_err(|e| ClientError::Handshake(e.into()))?;
        self.install(hs, created.as_bytes())
    }

    /// Extend the circuit to `target`, reached through the link specifier `link_spec`: fill `cell`
    /// with the RELAY_EARLY cell carrying EXTEND. Refused once a RELAY cell was sent, while
    /// another handshake is in flight, and at [`MAX_CIRCUIT_HOPS`].
    pub fn extend<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        target: &HopTarget,
        link_spec: &[u8; EXTEND_LINK_SPEC_LEN],
        cell: &mut [u8; CELL_LEN],
    ) -> Result<(), ClientError> {
        if self.hops.is_empty() {
            return Err(ClientError::NotBuilt);
        }
        if self.pending.is_some() {
            return Err(ClientError::HandshakePending);
        }
        if self.relay_sent {
            return Err(ClientError::ExtendAfterRelay);
        }
        if self.hops.len() >= MAX_CIRCUIT_HOPS {
            return Err(ClientError::TooManyHops);
        }
        let ext = ClientExt {
            backward_seq_start: self.next_w,
            features: 0,
        };
        let (hs, create) = ClientHandshake::new(rng, target, &ext)?;
        let payload = Extend::emit(link_spec, &create);
        let mut view = Cell::new(&mut *cell);
        emit_relay_message(view.body_mut(), RelayCommand::Extend, &payload)
            .map_err(ClientError::Relay)?;
        self.seal_forward(CellCommand::RelayEarly, cell)?;
        self.pending = Some(hs);
        let mut keep = Box::new([0u8; EXTEND_LEN]);
        if let (Some(dst), Some(src)) = (keep.get_mut(..payload.len()), payload.get(..EXTEND_LEN)) {
            dst.copy_from_slice(src);
        }
        self.pending_extend = Some(keep);
        Ok(())
    }

    /// Resend the EXTEND in flight in a fresh RELAY_EARLY cell (a new sequence number: an
    /// identical cell would be dropped as a replay by every hop it already reached). The
    /// handshake inside is the same, so the new hop answers a duplicate identically.
    pub fn resend_extend(&mut self, cell: &mut [u8; CELL_LEN]) -> Result<(), ClientError> {
        let payload = self
            .pending_extend
            .as_deref()
            .copied()
            .ok_or(ClientError::NoHandshakePending)?;
        if self.pending.is_none() {
            return Err(ClientError::NoHandshakePending);
        }
        let mut view = Cell::new(&mut *cell);
        emit_relay_message(view.body_mut(), RelayCommand::Extend, &payload)
            .map_err(ClientError::Relay)?;
        self.seal_forward(CellCommand::RelayEarly, cell)
    }

    /// Take the payload of an EXTENDED message [`receive`](Self::receive) delivered.
    pub fn on_extended(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        let hs = self.pending.take().ok_or(ClientError::NoHandshakePending)?;
        self.pending_extend = None;
        let ext = Extended::new_checked(payload).map_err(ClientError::Relay)?;
        if ext.status() != 0 {
            return Err(ClientError::ExtendFailed(ext.status()));
        }
        self.install(hs, ext.created_handshake())
    }

    /// Wrap a relay message for the last hop and fill `cell` with it (a RELAY cell).
    pub fn send(
        &mut self,
        cmd: RelayCommand,
        payload: &[u8],
        cell: &mut [u8; CELL_LEN],
    ) -> Result<(), ClientError> {
        if cmd == RelayCommand::Extend {
            return Err(ClientError::ExtendViaSend);
        }
        self.ready()?;
        let mut view = Cell::new(&mut *cell);
        emit_relay_message(view.body_mut(), cmd, payload).map_err(ClientError::Relay)?;
        self.seal_forward(CellCommand::Relay, cell)
    }

    /// Wrap the relay message already written in `cell`'s body (zero copy) as a RELAY cell.
    pub fn seal(&mut self, cell: &mut [u8; CELL_LEN]) -> Result<(), ClientError> {
        self.ready()?;
        self.seal_forward(CellCommand::Relay, cell)
    }

    fn ready(&self) -> Result<(), ClientError> {
        if self.hops.is_empty() {
            return Err(ClientError::NotBuilt);
        }
        if self.pending.is_some() {
            return Err(ClientError::HandshakePending);
        }
        Ok(())
    }

    /// Add one layer per hop (innermost for the last hop) and write the header (6.5).
    fn seal_forward(
        &mut self,
        cmd: CellCommand,
        cell: &mut [u8; CELL_LEN],
    ) -> Result<(), ClientError> {
        if self.sent >= CIRCUIT_MAX_CELLS {
            return Err(ClientError::Exhausted);
        }
        let c = self.fwd_counter;
        // s_1 = c, s_{j+1} = s_j + Df_j
        let mut seqs = [0u64; MAX_CIRCUIT_HOPS];
        let mut s = c;
        for (slot, hop) in seqs.iter_mut().zip(&self.hops) {
            *slot = s;
            s = s.wrapping_add(hop.df);
        }
        let mut view = Cell::new(cell);
        for (seq, hop) in seqs.iter().zip(&self.hops).rev() {
            hop.kf.encrypt(&tweak(*seq, cmd as u8), view.body_mut())?;
        }
        view.emit_header(&CellHeader {
            circ_id: self.circ_id,
            cmd,
            seq: c,
        });
        self.fwd_counter = c.wrapping_add(1);
        self.sent += 1;
        if cmd == CellCommand::Relay {
            self.relay_sent = true;
        }
        Ok(())
    }

    /// Remove every layer from a backward RELAY cell (6.6) and return the relay message from the
    /// last hop. A check field that is not zero is tampering and ends the circuit
    /// ([`ClientError::Tampered`] tears down); the window is marked only for cells that pass.
    pub fn receive<'a>(
        &mut self,
        cell: &'a mut [u8; CELL_LEN],
    ) -> Result<RelayMessage<&'a [u8; CELL_BODY_LEN]>, ClientError> {
        let mut view = Cell::new(&mut *cell);
        match view.command()? {
            CellCommand::Relay => {}
            CellCommand::RelayEarly => return Err(ClientError::BackwardRelayEarly),
            other => return Err(ClientError::UnexpectedCell(other)),
        }
        if self.hops.is_empty() {
            return Err(ClientError::NotBuilt);
        }
        let v = view.seq();
        self.bwd_window.check(v).map_err(ClientError::Replay)?;
        let mut t = v;
        for hop in &self.hops {
            t = t.wrapping_sub(hop.db);
            hop.kb
                .decrypt(&tweak(t, CellCommand::Relay as u8), view.body_mut())?;
        }
        if !check_field_is_zero(view.body()) {
            return Err(ClientError::Tampered);
        }
        self.bwd_window.mark(v);
        let body: &'a [u8] = &cell[CELL_HEADER_LEN..];
        RelayMessage::new_checked(body).map_err(ClientError::Relay)
    }
}
