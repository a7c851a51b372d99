//! Relay messages (docs/protocol.md section 7) and the fixed-size EXTEND / EXTENDED payloads (8.4).
//!
//! A relay message is the plaintext of a RELAY or RELAY_EARLY cell body, seen only by the last hop
//! (forward) or the client (backward): `check` 0^16 ‖ `version` ‖ `cmd` ‖ `length` u16 ‖ payload ‖
//! zero padding, [`CELL_BODY_LEN`] bytes in all. The `check` field is verified, in constant time, by
//! the per-hop layer in `crate::circuit` before a message is parsed here. Nothing here allocates or
//! panics.

use core::borrow::Borrow;
use core::fmt;
use num_enum::{IntoPrimitive, TryFromPrimitive};

use super::cell::CELL_BODY_LEN;
use super::handshake::{CREATED_HS_LEN, CREATE_HS_LEN};

/// Relay message header: check 16 + version 1 + command 1 + length 2.
pub const RELAY_HEADER_LEN: usize = 20;
/// The zero "check" field at the start of a relay message.
pub const RELAY_CHECK_LEN: usize = 16;
/// Room for a relay message payload.
pub const RELAY_PAYLOAD_LEN: usize = CELL_BODY_LEN - RELAY_HEADER_LEN;
/// The only relay message version.
pub const RELAY_VERSION: u8 = 1;

/// A link specifier (5.3), carried opaquely in EXTEND. Same value as the link specifier format's
/// own constant (section 5.3); EXTEND treats the bytes as opaque and leaves them to that parser.
pub const EXTEND_LINK_SPEC_LEN: usize = 272;
/// EXTEND payload: version 1 + reserved 3 + link specifier 272 + CREATE handshake 180.
pub const EXTEND_LEN: usize = 4 + EXTEND_LINK_SPEC_LEN + CREATE_HS_LEN;
/// EXTENDED payload: version 1 + status 1 + reserved 2 + CREATED handshake 148.
pub const EXTENDED_LEN: usize = 4 + CREATED_HS_LEN;
/// Version byte of EXTEND and EXTENDED.
pub const EXTEND_VERSION: u8 = 1;

/// Relay commands (7.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, TryFromPrimitive, IntoPrimitive)]
#[repr(u8)]
pub enum RelayCommand {
    /// End-to-end frame.
    Data = 0x01,
    /// Extend the circuit by one hop (RELAY_EARLY only).
    Extend = 0x02,
    /// Reply to EXTEND.
    Extended = 0x03,
    /// DHT lookup through a circuit.
    DhtLookup = 0x04,
    /// Reply to DHT_LOOKUP.
    DhtLookupReply = 0x05,
    /// Register as a service at an intro point.
    EstablishIntro = 0x06,
    /// Reply to ESTABLISH_INTRO.
    IntroEstablished = 0x07,
    /// Client to intro point.
    Introduce1 = 0x08,
    /// Intro point to service.
    Introduce2 = 0x09,
    /// Intro point to client.
    IntroduceAck = 0x0A,
    /// Client to rendezvous point.
    EstablishRendezvous = 0x0B,
    /// Reply to ESTABLISH_RENDEZVOUS.
    RendezvousEstablished = 0x0C,
    /// Service to rendezvous point.
    Rendezvous1 = 0x0D,
    /// Rendezvous point to client.
    Rendezvous2 = 0x0E,
    /// Long-range padding; ignored.
    Drop = 0x0F,
    /// Circuit probe: the last hop echoes the payload back in PROBE_REPLY (liveness, RTT).
    Probe = 0x10,
    /// The echo of a PROBE.
    ProbeReply = 0x11,
    /// One whole IPv4 or IPv6 packet to or from an exit (the circuit's last hop), both ways.
    ExitPacket = 0x12,
    /// Client to exit: open an exit session or re-attach this circuit to one (7.4).
    ExitSession = 0x13,
    /// Exit to client: the outcome of an `EXIT_SESSION`.
    ExitSessionAck = 0x14,
}

/// Why a relay message, EXTEND or EXTENDED was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// Wrong number of bytes.
    #[error("{got} bytes where {expected} were expected")]
    Length {
        /// Expected.
        expected: usize,
        /// Received.
        got: usize,
    },
    /// Unknown relay message version (a relay destroys the circuit, 7.1).
    #[error("unknown relay message version {0}")]
    UnknownVersion(u8),
    /// `length` larger than [`RELAY_PAYLOAD_LEN`].
    #[error("relay payload length {0} too large")]
    PayloadLength(u16),
    /// Unknown relay command (dropped and counted).
    #[error("unknown relay command {0}")]
    UnknownCommand(u8),
    /// Unknown EXTEND / EXTENDED version (EXTENDED status 4).
    #[error("unknown EXTEND version {0}")]
    UnknownExtendVersion(u8),
}

/// A view over a relay message: a whole [`CELL_BODY_LEN`]-byte plaintext body.
#[derive(Clone, Copy)]
pub struct RelayMessage<T> {
    buf: T,
}

impl<'a> RelayMessage<&'a [u8; CELL_BODY_LEN]> {
    /// Check length, version and payload length. The command is checked by
    /// [`RelayMessage::command`], so an unknown one can be counted separately.
    pub fn new_checked(body: &'a [u8]) -> Result<Self, RelayError> {
        let buf = <&[u8; CELL_BODY_LEN]>::try_from(body).map_err(|_| RelayError::Length {
            expected: CELL_BODY_LEN,
            got: body.len(),
        })?;
        let msg = RelayMessage { buf };
        msg.check()?;
        Ok(msg)
    }
}

impl<T: Borrow<[u8; CELL_BODY_LEN]>> RelayMessage<T> {
    /// A view over a buffer that is a body by its type (not yet checked).
    pub fn new_unchecked(buf: T) -> Self {
        RelayMessage { buf }
    }

    /// Check version and payload length.
    pub fn check(&self) -> Result<(), RelayError> {
        if self.version() != RELAY_VERSION {
            return Err(RelayError::UnknownVersion(self.version()));
        }
        if usize::from(self.length()) > RELAY_PAYLOAD_LEN {
            return Err(RelayError::PayloadLength(self.length()));
        }
        Ok(())
    }

    /// The whole body.
    pub fn as_bytes(&self) -> &[u8; CELL_BODY_LEN] {
        self.buf.borrow()
    }

    /// The check field (0^16 in a genuine message).
    pub fn check_field(&self) -> &[u8] {
        &self.buf.borrow()[..RELAY_CHECK_LEN]
    }

    /// `version`.
    pub fn version(&self) -> u8 {
        self.buf.borrow()[16]
    }

    /// `cmd` as sent.
    pub fn cmd_raw(&self) -> u8 {
        self.buf.borrow()[17]
    }

    /// The command, if known.
    pub fn command(&self) -> Result<RelayCommand, RelayError> {
        RelayCommand::try_from(self.cmd_raw())
            .map_err(|_| RelayError::UnknownCommand(self.cmd_raw()))
    }

    /// `length`.
    pub fn length(&self) -> u16 {
        let b = self.buf.borrow();
        u16::from_be_bytes([b[18], b[19]])
    }

    /// The payload (`length` bytes; empty if `length` is out of range, which `check` refuses).
    pub fn payload(&self) -> &[u8] {
        let end = RELAY_HEADER_LEN + usize::from(self.length());
        self.buf.borrow().get(RELAY_HEADER_LEN..end).unwrap_or(&[])
    }
}

impl<T: Borrow<[u8; CELL_BODY_LEN]>> fmt::Debug for RelayMessage<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayMessage")
            .field("version", &self.version())
            .field("cmd", &self.cmd_raw())
            .field("length", &self.length())
            .finish_non_exhaustive()
    }
}

/// Write a relay message into a body: zero check, version, `cmd`, length, payload, zero padding.
pub fn emit_relay_message(
    body: &mut [u8],
    cmd: RelayCommand,
    payload: &[u8],
) -> Result<(), RelayError> {
    if body.len() != CELL_BODY_LEN {
        return Err(RelayError::Length {
            expected: CELL_BODY_LEN,
            got: body.len(),
        });
    }
    let len = u16::try_from(payload.len())
        .ok()
        .filter(|&l| usize::from(l) <= RELAY_PAYLOAD_LEN)
        .ok_or(RelayError::PayloadLength(u16::MAX))?;
    let (head, rest) = body.split_at_mut(RELAY_HEADER_LEN);
    head.fill(0);
    let (_, fields) = head.split_at_mut(RELAY_CHECK_LEN);
    let l = len.to_be_bytes();
    fields.copy_from_slice(&[RELAY_VERSION, cmd as u8, l[0], l[1]]);
    let (dst, pad) = rest.split_at_mut(payload.len());
    dst.copy_from_slice(payload);
    pad.fill(0);
    Ok(())
}

/// A view over an EXTEND payload (8.4).
#[derive(Clone, Copy)]
pub struct Extend<T> {
    buf: T,
}

impl<'a> Extend<&'a [u8; EXTEND_LEN]> {
    /// Check length and version.
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, RelayError> {
        let buf = <&[u8; EXTEND_LEN]>::try_from(bytes).map_err(|_| RelayError::Length {
            expected: EXTEND_LEN,
            got: bytes.len(),
        })?;
        if buf[0] != EXTEND_VERSION {
            return Err(RelayError::UnknownExtendVersion(buf[0]));
        }
        Ok(Extend { buf })
    }
}

impl<T: Borrow<[u8; EXTEND_LEN]>> Extend<T> {
    /// The link specifier of the new hop (opaque here; section 5.3 parses it).
    pub fn link_spec(&self) -> &[u8] {
        &self.buf.borrow()[4..4 + EXTEND_LINK_SPEC_LEN]
    }

    /// The CREATE handshake bytes for the new hop (check them with
    /// [`CreateHandshake::new_checked`](super::handshake::CreateHandshake::new_checked)).
    pub fn create_handshake(&self) -> &[u8] {
        &self.buf.borrow()[4 + EXTEND_LINK_SPEC_LEN..]
    }
}

impl Extend<[u8; EXTEND_LEN]> {
    /// Build an EXTEND payload.
    pub fn emit(
        link_spec: &[u8; EXTEND_LINK_SPEC_LEN],
        create: &[u8; CREATE_HS_LEN],
    ) -> [u8; EXTEND_LEN] {
        let mut b = [0u8; EXTEND_LEN];
        b[0] = EXTEND_VERSION;
        b[4..4 + EXTEND_LINK_SPEC_LEN].copy_from_slice(link_spec);
        b[4 + EXTEND_LINK_SPEC_LEN..].copy_from_slice(create);
        b
    }
}

impl<T: Borrow<[u8; EXTEND_LEN]>> fmt::Debug for Extend<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extend").finish_non_exhaustive()
    }
}

/// EXTENDED `status` values (8.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, TryFromPrimitive, IntoPrimitive)]
#[repr(u8)]
pub enum ExtendedStatus {
    /// Extended.
    Ok = 0,
    /// The link to the target failed.
    LinkFailed = 1,
    /// The target destroyed the circuit.
    TargetDestroyed = 2,
    /// Refused.
    Refused = 4,
    /// No CREATED within `EXTEND_TIMEOUT_S`.
    Timeout = 6,
}

/// A view over an EXTENDED payload (8.4).
#[derive(Clone, Copy)]
pub struct Extended<T> {
    buf: T,
}

impl<'a> Extended<&'a [u8; EXTENDED_LEN]> {
    /// Check length and version.
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, RelayError> {
        let buf = <&[u8; EXTENDED_LEN]>::try_from(bytes).map_err(|_| RelayError::Length {
            expected: EXTENDED_LEN,
            got: bytes.len(),
        })?;
        if buf[0] != EXTEND_VERSION {
            return Err(RelayError::UnknownExtendVersion(buf[0]));
        }
        Ok(Extended { buf })
    }
}

impl<T: Borrow<[u8; EXTENDED_LEN]>> Extended<T> {
    /// `status` as sent (0 is success; anything else tears the circuit down).
    pub fn status(&self) -> u8 {
        self.buf.borrow()[1]
    }

    /// The CREATED handshake bytes (zeros unless status is 0).
    pub fn created_handshake(&self) -> &[u8] {
        &self.buf.borrow()[4..]
    }
}

impl Extended<[u8; EXTENDED_LEN]> {
    /// Build an EXTENDED payload; `created` is ignored (zeros are sent) unless `status` is Ok.
    pub fn emit(status: ExtendedStatus, created: &[u8; CREATED_HS_LEN]) -> [u8; EXTENDED_LEN] {
        let mut b = [0u8; EXTENDED_LEN];
        b[0] = EXTEND_VERSION;
        b[1] = status as u8;
        if status == ExtendedStatus::Ok {
            b[4..].copy_from_slice(created);
        }
        b
    }
}

impl<T: Borrow<[u8; EXTENDED_LEN]>> fmt::Debug for Extended<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extended")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(RELAY_PAYLOAD_LEN, 1316);
        assert_eq!(EXTEND_LEN, 456);
        assert_eq!(EXTENDED_LEN, 152);
    }

    #[test]
    fn relay_message_round_trip() {
        let mut body = [0xffu8; CELL_BODY_LEN];
        emit_relay_message(&mut body, RelayCommand::Data, b"hello").unwrap();
        let m = RelayMessage::new_checked(&body).unwrap();
        assert_eq!(m.command(), Ok(RelayCommand::Data));
        assert_eq!(m.payload(), b"hello");
        assert!(m.check_field().iter().all(|&b| b == 0));
        assert!(body[25..].iter().all(|&b| b == 0));
        let full = [7u8; RELAY_PAYLOAD_LEN];
        emit_relay_message(&mut body, RelayCommand::Drop, &full).unwrap();
        assert_eq!(RelayMessage::new_checked(&body).unwrap().payload(), &full);
        assert!(emit_relay_message(&mut body, RelayCommand::Drop, &[0; 1317]).is_err());
    }

    #[test]
    fn relay_message_refusals() {
        let mut body = [0u8; CELL_BODY_LEN];
        assert_eq!(
            RelayMessage::new_checked(&body).unwrap_err(),
            RelayError::UnknownVersion(0)
        );
        body[16] = 1;
        body[18..20].copy_from_slice(&1317u16.to_be_bytes());
        assert_eq!(
            RelayMessage::new_checked(&body).unwrap_err(),
            RelayError::PayloadLength(1317)
        );
        body[18..20].copy_from_slice(&0u16.to_be_bytes());
        body[17] = 0x7f;
        let m = RelayMessage::new_checked(&body).unwrap();
        assert_eq!(m.command(), Err(RelayError::UnknownCommand(0x7f)));
        assert!(RelayMessage::new_checked(&body[1..]).is_err());
    }

    #[test]
    fn extend_round_trip() {
        let spec = [3u8; EXTEND_LINK_SPEC_LEN];
        let hs = [4u8; CREATE_HS_LEN];
        let b = Extend::emit(&spec, &hs);
        let e = Extend::new_checked(&b).unwrap();
        assert_eq!(e.link_spec(), &spec);
        assert_eq!(e.create_handshake(), &hs);
        assert!(Extend::new_checked(&b[1..]).is_err());
        let created = [5u8; CREATED_HS_LEN];
        let b = Extended::emit(ExtendedStatus::Ok, &created);
        let x = Extended::new_checked(&b).unwrap();
        assert_eq!((x.status(), x.created_handshake()), (0, &created[..]));
        let b = Extended::emit(ExtendedStatus::Refused, &created);
        assert!(Extended::new_checked(&b)
            .unwrap()
            .created_handshake()
            .iter()
            .all(|&v| v == 0));
    }
}
