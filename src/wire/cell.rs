//! Cells (docs/protocol.md section 6.1): the fixed-size unit every circuit carries.
//!
//! Every cell is exactly [`CELL_LEN`] bytes at every hop: a [`CELL_HEADER_LEN`]-byte header and a
//! [`CELL_BODY_LEN`]-byte body. [`Cell`] is a view over a `[u8; CELL_LEN]` buffer (owned or
//! borrowed); [`Cell::new_checked`] turns a received byte slice into one and refuses any other
//! length. Header accessors never fail; [`Cell::command`] checks the version and command, so a
//! receiver can still read the circuit id of a cell it refuses (6.1: a cell with an unknown version
//! or command destroys the circuit it names).
//!
//! This module never allocates and never panics on input; the per-hop cryptography that works on the
//! body lives in `crate::circuit`.

use core::borrow::{Borrow, BorrowMut};
use core::fmt;
use num_enum::{IntoPrimitive, TryFromPrimitive};

/// Every cell, at every hop.
pub const CELL_LEN: usize = 1352;
/// Cell header: circuit id 4 + version 1 + command 1 + reserved 2 + seq 8.
pub const CELL_HEADER_LEN: usize = 16;
/// Cell body: the part the per-hop layers encipher.
pub const CELL_BODY_LEN: usize = CELL_LEN - CELL_HEADER_LEN;
/// The only cell version.
pub const CELL_VERSION: u8 = 1;

/// Offset of `circ_id` (u32).
pub const CELL_CIRC_ID_OFFSET: usize = 0;
/// Offset of `version` (u8).
pub const CELL_VERSION_OFFSET: usize = 4;
/// Offset of `cmd` (u8).
pub const CELL_CMD_OFFSET: usize = 5;
/// Offset of `seq` (u64).
pub const CELL_SEQ_OFFSET: usize = 8;

/// Version byte of a DESTROY body.
pub const DESTROY_VERSION: u8 = 1;

/// Cell commands (6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, TryFromPrimitive, IntoPrimitive)]
#[repr(u8)]
pub enum CellCommand {
    /// Circuit handshake, client to relay (8.2).
    Create = 1,
    /// Circuit handshake reply (8.2).
    Created = 2,
    /// Enciphered relay message (6.4-6.6).
    Relay = 3,
    /// As RELAY, limited to extension (6.8).
    RelayEarly = 4,
    /// Tear the circuit down.
    Destroy = 5,
    /// Link-local cover; never forwarded.
    Padding = 6,
}

impl CellCommand {
    /// RELAY or RELAY_EARLY: cells whose body carries per-hop layers and whose `seq` is meaningful.
    pub fn is_relay(self) -> bool {
        matches!(self, CellCommand::Relay | CellCommand::RelayEarly)
    }
}

/// DESTROY reasons (6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, TryFromPrimitive, IntoPrimitive)]
#[repr(u8)]
pub enum DestroyReason {
    /// 0: none given.
    None = 0,
    /// 1: protocol error.
    Protocol = 1,
    /// 2: internal error.
    Internal = 2,
    /// 3: requested by the client.
    Requested = 3,
    /// 4: resource limit.
    ResourceLimit = 4,
    /// 5: connection to the next hop failed.
    ConnectFailed = 5,
    /// 6: unknown onion key.
    UnknownOnionKey = 6,
    /// 7: timeout.
    Timeout = 7,
    /// 8: link closed.
    LinkClosed = 8,
    /// 9: destroyed elsewhere on the circuit (the only reason a relay propagates).
    Destroyed = 9,
}

/// Why a cell was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CellError {
    /// The input is not exactly [`CELL_LEN`] bytes.
    #[error("cell of {got} bytes (expected {CELL_LEN})")]
    Length {
        /// How many bytes there were.
        got: usize,
    },
    /// `version` is not [`CELL_VERSION`].
    #[error("unknown cell version {0}")]
    UnknownVersion(u8),
    /// `cmd` is not a known command.
    #[error("unknown cell command {0}")]
    UnknownCommand(u8),
}

/// A view over one cell's bytes.
///
/// `T` is anything that borrows a `[u8; CELL_LEN]`: an array, `&[u8; CELL_LEN]`,
/// `&mut [u8; CELL_LEN]` or a `Box`. Because the length is in the type, every accessor is
/// infallible; [`Cell::new_checked`] is how untrusted slices get in.
#[derive(Clone, Copy)]
pub struct Cell<T> {
    buf: T,
}

impl<'a> Cell<&'a [u8; CELL_LEN]> {
    /// A view over received bytes; refuses anything but exactly [`CELL_LEN`] bytes.
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, CellError> {
        <&[u8; CELL_LEN]>::try_from(bytes)
            .map(|buf| Cell { buf })
            .map_err(|_| CellError::Length { got: bytes.len() })
    }
}

impl<'a> Cell<&'a mut [u8; CELL_LEN]> {
    /// A mutable view over received bytes; refuses anything but exactly [`CELL_LEN`] bytes.
    pub fn new_checked_mut(bytes: &'a mut [u8]) -> Result<Self, CellError> {
        let got = bytes.len();
        <&mut [u8; CELL_LEN]>::try_from(bytes)
            .map(|buf| Cell { buf })
            .map_err(|_| CellError::Length { got })
    }
}

impl<T: Borrow<[u8; CELL_LEN]>> Cell<T> {
    /// A view over a buffer that is a cell by its type.
    pub fn new(buf: T) -> Self {
        Cell { buf }
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }

    /// All [`CELL_LEN`] bytes.
    pub fn as_bytes(&self) -> &[u8; CELL_LEN] {
        self.buf.borrow()
    }

    /// `circ_id`.
    pub fn circ_id(&self) -> u32 {
        let b = self.buf.borrow();
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// `version` as sent.
    pub fn version(&self) -> u8 {
        self.buf.borrow()[CELL_VERSION_OFFSET]
    }

    /// `cmd` as sent.
    pub fn cmd_raw(&self) -> u8 {
        self.buf.borrow()[CELL_CMD_OFFSET]
    }

    /// The command, after checking the version (6.1, 16).
    pub fn command(&self) -> Result<CellCommand, CellError> {
        if self.version() != CELL_VERSION {
            return Err(CellError::UnknownVersion(self.version()));
        }
        CellCommand::try_from(self.cmd_raw()).map_err(|_| CellError::UnknownCommand(self.cmd_raw()))
    }

    /// `seq` (meaningful for RELAY and RELAY_EARLY only).
    pub fn seq(&self) -> u64 {
        let b = self.buf.borrow();
        u64::from_be_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]])
    }

    /// The [`CELL_BODY_LEN`]-byte body.
    pub fn body(&self) -> &[u8] {
        &self.buf.borrow()[CELL_HEADER_LEN..]
    }
}

impl<T: BorrowMut<[u8; CELL_LEN]>> Cell<T> {
    /// Set `circ_id`.
    pub fn set_circ_id(&mut self, id: u32) {
        let b = self.buf.borrow_mut();
        b[..4].copy_from_slice(&id.to_be_bytes());
    }

    /// Set `seq`.
    pub fn set_seq(&mut self, seq: u64) {
        let b = self.buf.borrow_mut();
        b[CELL_SEQ_OFFSET..CELL_HEADER_LEN].copy_from_slice(&seq.to_be_bytes());
    }

    /// Set `cmd` and `version` (and clear the reserved bytes).
    pub fn set_command(&mut self, cmd: CellCommand) {
        let b = self.buf.borrow_mut();
        b[CELL_VERSION_OFFSET] = CELL_VERSION;
        b[CELL_CMD_OFFSET] = cmd as u8;
        b[6] = 0;
        b[7] = 0;
    }

    /// The body, writable.
    pub fn body_mut(&mut self) -> &mut [u8] {
        &mut self.buf.borrow_mut()[CELL_HEADER_LEN..]
    }

    /// Write a whole header (the body is left as it is).
    pub fn emit_header(&mut self, header: &CellHeader) {
        self.set_circ_id(header.circ_id);
        self.set_command(header.cmd);
        self.set_seq(header.seq);
    }
}

impl<T: Borrow<[u8; CELL_LEN]>> fmt::Debug for Cell<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body is ciphertext or a relay message; neither belongs in a log.
        f.debug_struct("Cell")
            .field("circ_id", &self.circ_id())
            .field("version", &self.version())
            .field("cmd", &self.cmd_raw())
            .field("seq", &self.seq())
            .finish_non_exhaustive()
    }
}

/// A parsed cell header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CellHeader {
    /// Circuit id on this link.
    pub circ_id: u32,
    /// Command.
    pub cmd: CellCommand,
    /// Sequence number (0 unless RELAY or RELAY_EARLY).
    pub seq: u64,
}

impl CellHeader {
    /// Parse and check the header of a cell.
    pub fn parse<T: Borrow<[u8; CELL_LEN]>>(cell: &Cell<T>) -> Result<Self, CellError> {
        Ok(CellHeader {
            circ_id: cell.circ_id(),
            cmd: cell.command()?,
            seq: cell.seq(),
        })
    }
}

/// Fill `buf` with a cell whose body is `body_prefix` followed by zeros (CREATE, CREATED, DESTROY
/// and PADDING bodies). A prefix longer than the body is cut at [`CELL_BODY_LEN`].
pub fn emit_plain_cell(buf: &mut [u8; CELL_LEN], header: &CellHeader, body_prefix: &[u8]) {
    let mut cell = Cell::new(&mut *buf);
    cell.emit_header(header);
    let body = cell.body_mut();
    body.fill(0);
    let n = body_prefix.len().min(body.len());
    if let (Some(dst), Some(src)) = (body.get_mut(..n), body_prefix.get(..n)) {
        dst.copy_from_slice(src);
    }
}

/// A DESTROY body: `version` u8 = 1 ‖ `reason` u8 ‖ zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DestroyBody {
    /// The reason.
    pub reason: DestroyReason,
}

impl DestroyBody {
    /// Read a DESTROY body. An unknown version or reason reads as reason 1 (protocol error, 16);
    /// this never fails, because a DESTROY is honoured whatever it carries.
    pub fn parse(body: &[u8]) -> Self {
        let reason = match body {
            [DESTROY_VERSION, r, ..] => {
                DestroyReason::try_from(*r).unwrap_or(DestroyReason::Protocol)
            }
            _ => DestroyReason::Protocol,
        };
        DestroyBody { reason }
    }

    /// Fill `buf` with a DESTROY cell.
    pub fn emit_cell(&self, buf: &mut [u8; CELL_LEN], circ_id: u32) {
        let header = CellHeader {
            circ_id,
            cmd: CellCommand::Destroy,
            seq: 0,
        };
        emit_plain_cell(buf, &header, &[DESTROY_VERSION, self.reason as u8]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_budget() {
        assert_eq!(CELL_BODY_LEN, 1336);
        assert_eq!(CELL_LEN + 40, 1392);
    }

    #[test]
    fn header_round_trip() {
        let mut buf = [0xaau8; CELL_LEN];
        let h = CellHeader {
            circ_id: 0x8000_0001,
            cmd: CellCommand::RelayEarly,
            seq: 0x0102_0304_0506_0708,
        };
        Cell::new(&mut buf).emit_header(&h);
        let cell = Cell::new_checked(&buf[..]).unwrap();
        assert_eq!(CellHeader::parse(&cell).unwrap(), h);
        assert_eq!(
            &buf[..16],
            &hex_lit("8000000101040000 0102030405060708")[..]
        );
    }

    #[test]
    fn refuses_wrong_lengths_and_values() {
        assert_eq!(
            Cell::new_checked(&[0u8; CELL_LEN - 1]).unwrap_err(),
            CellError::Length { got: CELL_LEN - 1 }
        );
        assert!(Cell::new_checked(&[0u8; CELL_LEN + 1]).is_err());
        let mut buf = [0u8; CELL_LEN];
        buf[4] = 2;
        buf[5] = 3;
        assert_eq!(Cell::new(&buf).command(), Err(CellError::UnknownVersion(2)));
        buf[4] = 1;
        buf[5] = 7;
        assert_eq!(Cell::new(&buf).command(), Err(CellError::UnknownCommand(7)));
    }

    #[test]
    fn destroy_body() {
        let mut buf = [0u8; CELL_LEN];
        DestroyBody {
            reason: DestroyReason::Timeout,
        }
        .emit_cell(&mut buf, 7);
        let cell = Cell::new(&buf);
        assert_eq!(cell.command(), Ok(CellCommand::Destroy));
        assert_eq!(
            DestroyBody::parse(cell.body()).reason,
            DestroyReason::Timeout
        );
        assert_eq!(DestroyBody::parse(&[2, 7]).reason, DestroyReason::Protocol);
        assert_eq!(
            DestroyBody::parse(&[1, 200]).reason,
            DestroyReason::Protocol
        );
        assert_eq!(DestroyBody::parse(&[]).reason, DestroyReason::Protocol);
    }

    fn hex_lit(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        hex::decode(s).unwrap()
    }
}
