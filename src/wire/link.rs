//! The link frame (docs/protocol.md section 4.2): every message between two neighbours, inside
//! WireGuard, starts with this IPv6-shaped 40-byte header.
//!
//! boringtun accepts a plaintext only if it looks like an IP packet: high nibble of byte 0 is 6 and
//! the u16 at offset 4 plus 40 fits the plaintext (it then truncates to that length). Everything
//! else in the header is ours. This module is the only place that builds or parses the header.

use std::fmt;

/// Length of the link frame header.
pub const LINK_HEADER_LEN: usize = 40;
/// Link framing version (low nibble of byte 0).
pub const LINK_VERSION: u8 = 1;
/// Byte 0 of every frame: IPv6's version nibble and our framing version.
pub const LINK_VERSION_BYTE: u8 = 0x60 | LINK_VERSION;
/// Value in the IPv6 next-header position (RFC 3692 experimental).
pub const LINK_NEXT_HEADER: u8 = 253;
/// Every frame is padded to a multiple of this.
pub const LINK_FRAME_ALIGN: usize = 16;
/// Largest link payload.
pub const LINK_PAYLOAD_MAX: usize = 1352;
/// Largest link frame (header + payload + padding).
pub const LINK_FRAME_MAX: usize = 1392;
/// WireGuard's data-message overhead (type, index, counter, tag).
pub const WG_OVERHEAD: usize = 32;

const OFF_TYPE: usize = 1;
const OFF_MSG_VERSION: usize = 2;
const OFF_LEN: usize = 4;
const OFF_NEXT_HEADER: usize = 6;
const OFF_RPC_ID: usize = 8;

/// Link message types (section 4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MsgType {
    /// One cell.
    Cell = 0x01,
    /// First message on a new session: the sender's relay record, if any.
    Hello = 0x02,
    /// Liveness and RTT probe.
    Ping = 0x03,
    /// Answer to PING, with the observed endpoint.
    Pong = 0x04,
    /// Ask a relay for a few relay records.
    PexRequest = 0x05,
    /// A few relay records.
    PexResponse = 0x06,
    /// Ask an introducer to coordinate a hole punch.
    PunchRequest = 0x07,
    /// Introducer's instruction to punch.
    PunchNotify = 0x08,
    /// Ask an introducer to relay a link.
    RelayRequest = 0x09,
    /// Introducer's relay offer.
    RelayOffer = 0x0A,
    /// Ask a neighbour to have another one probe us.
    ProbeRequest = 0x0B,
    /// The probe forwarded to the prober.
    ProbeForward = 0x0C,
    /// A DHT request between relays.
    DhtRequest = 0x0D,
    /// A DHT response.
    DhtResponse = 0x0E,
    /// The link is being closed.
    Close = 0x0F,
}

impl MsgType {
    /// The type for a byte, if known.
    pub fn from_u8(b: u8) -> Option<MsgType> {
        use MsgType::*;
        Some(match b {
            0x01 => Cell,
            0x02 => Hello,
            0x03 => Ping,
            0x04 => Pong,
            0x05 => PexRequest,
            0x06 => PexResponse,
            0x07 => PunchRequest,
            0x08 => PunchNotify,
            0x09 => RelayRequest,
            0x0A => RelayOffer,
            0x0B => ProbeRequest,
            0x0C => ProbeForward,
            0x0D => DhtRequest,
            0x0E => DhtResponse,
            0x0F => Close,
            _ => return None,
        })
    }

    /// Whether `rpc_id` is meaningful for this type.
    pub fn is_rpc(self) -> bool {
        use MsgType::*;
        matches!(
            self,
            Ping | Pong
                | PexRequest
                | PexResponse
                | PunchRequest
                | PunchNotify
                | RelayRequest
                | RelayOffer
                | ProbeRequest
                | DhtRequest
                | DhtResponse
        )
    }

    /// Payload length bounds (inclusive) for this type, from the message layouts.
    pub fn payload_bounds(self) -> (usize, usize) {
        use MsgType::*;
        match self {
            Cell => (1352, 1352),
            Hello => (4, 4 + 424),
            Ping => (8, 8),
            Pong => (8 + 19, 8 + 19),
            PexRequest => (2, 2),
            PexResponse => (2, 2 + 3 * 424),
            Close => (1, 1),
            // Layouts owned by the NAT and DHT issues; bounded by the frame until they land.
            _ => (0, LINK_PAYLOAD_MAX),
        }
    }
}

/// Why a frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Shorter than the header or than its length field says.
    Truncated,
    /// Byte 0 is not `0x61`.
    BadVersion(u8),
    /// Next-header position is not 253.
    BadNextHeader(u8),
    /// Unknown message type.
    UnknownType(u8),
    /// Unknown layout version for a known type.
    UnknownMsgVersion(u8),
    /// Payload length outside the type's bounds.
    BadLength(usize),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Truncated => write!(f, "truncated link frame"),
            FrameError::BadVersion(v) => write!(f, "unknown link framing byte {v:#04x}"),
            FrameError::BadNextHeader(v) => write!(f, "bad next-header {v}"),
            FrameError::UnknownType(t) => write!(f, "unknown link message type {t:#04x}"),
            FrameError::UnknownMsgVersion(v) => write!(f, "unknown message layout version {v}"),
            FrameError::BadLength(n) => write!(f, "payload length {n} out of bounds for its type"),
        }
    }
}

impl std::error::Error for FrameError {}

/// A checked view of a received link frame.
#[derive(Debug, Clone, Copy)]
pub struct LinkFrame<'a> {
    msg_type: MsgType,
    rpc_id: u64,
    payload: &'a [u8],
}

impl<'a> LinkFrame<'a> {
    /// Parses a decrypted WireGuard plaintext. Performs every receiver check of section 4.2.
    pub fn new_checked(buf: &'a [u8]) -> Result<LinkFrame<'a>, FrameError> {
        let header: &[u8; LINK_HEADER_LEN] = buf
            .get(..LINK_HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(FrameError::Truncated)?;
        if header[0] != LINK_VERSION_BYTE {
            return Err(FrameError::BadVersion(header[0]));
        }
        if header[OFF_NEXT_HEADER] != LINK_NEXT_HEADER {
            return Err(FrameError::BadNextHeader(header[OFF_NEXT_HEADER]));
        }
        let msg_type =
            MsgType::from_u8(header[OFF_TYPE]).ok_or(FrameError::UnknownType(header[OFF_TYPE]))?;
        if header[OFF_MSG_VERSION] != 1 {
            return Err(FrameError::UnknownMsgVersion(header[OFF_MSG_VERSION]));
        }
        let len = usize::from(u16::from_be_bytes([header[OFF_LEN], header[OFF_LEN + 1]]));
        let (min, max) = msg_type.payload_bounds();
        if len < min || len > max || len > LINK_PAYLOAD_MAX {
            return Err(FrameError::BadLength(len));
        }
        let payload = buf
            .get(LINK_HEADER_LEN..LINK_HEADER_LEN + len)
            .ok_or(FrameError::Truncated)?;
        let mut rpc = [0u8; 8];
        rpc.copy_from_slice(&header[OFF_RPC_ID..OFF_RPC_ID + 8]);
        Ok(LinkFrame {
            msg_type,
            rpc_id: u64::from_be_bytes(rpc),
            payload,
        })
    }

    /// The message type.
    pub fn msg_type(&self) -> MsgType {
        self.msg_type
    }

    /// The request id (0 for non-RPC types).
    pub fn rpc_id(&self) -> u64 {
        self.rpc_id
    }

    /// The payload, without padding.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
}

/// Length of a frame carrying `payload_len` bytes, padding included.
pub const fn frame_len(payload_len: usize) -> usize {
    (LINK_HEADER_LEN + payload_len).div_ceil(LINK_FRAME_ALIGN) * LINK_FRAME_ALIGN
}

/// Size of a frame carrying one cell.
pub const LINK_FRAME_CELL_LEN: usize = frame_len(1352);

/// Writes a frame header for `msg_type` and a payload of `payload_len` bytes that the caller has
/// placed (or will place) at `buf[40..40 + payload_len]`, zeroes the padding, and returns the
/// frame length. Returns `None` if `buf` is too small or the length is out of bounds; that is a
/// bug in the sender, never a reaction to network input.
pub fn emit_header(
    buf: &mut [u8],
    msg_type: MsgType,
    rpc_id: u64,
    payload_len: usize,
) -> Option<usize> {
    let (min, max) = msg_type.payload_bounds();
    if payload_len < min || payload_len > max {
        return None;
    }
    let total = frame_len(payload_len);
    if total > LINK_FRAME_MAX {
        return None;
    }
    let frame = buf.get_mut(..total)?;
    let (header, rest) = frame.split_at_mut(LINK_HEADER_LEN);
    let header: &mut [u8; LINK_HEADER_LEN] = header.try_into().ok()?;
    header.fill(0);
    header[0] = LINK_VERSION_BYTE;
    header[OFF_TYPE] = msg_type as u8;
    header[OFF_MSG_VERSION] = 1;
    header[OFF_LEN..OFF_LEN + 2].copy_from_slice(&(payload_len as u16).to_be_bytes());
    header[OFF_NEXT_HEADER] = LINK_NEXT_HEADER;
    header[OFF_RPC_ID..OFF_RPC_ID + 8].copy_from_slice(&rpc_id.to_be_bytes());
    rest.get_mut(payload_len..)?.fill(0);
    Some(total)
}

/// Builds a whole frame from a payload slice into `buf`; returns its length.
pub fn emit(buf: &mut [u8], msg_type: MsgType, rpc_id: u64, payload: &[u8]) -> Option<usize> {
    let total = emit_header(buf, msg_type, rpc_id, payload.len())?;
    buf.get_mut(LINK_HEADER_LEN..LINK_HEADER_LEN + payload.len())?
        .copy_from_slice(payload);
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_adds_up() {
        assert_eq!(LINK_FRAME_CELL_LEN, 1392);
        assert_eq!(LINK_FRAME_CELL_LEN, LINK_FRAME_MAX);
        // 1392 + WireGuard + UDP + IPv6 within a 1500-byte underlay.
        const { assert!(LINK_FRAME_MAX + WG_OVERHEAD + 8 + 40 <= 1500) };
    }

    #[test]
    fn round_trip_and_padding() {
        let mut buf = [0xffu8; LINK_FRAME_MAX];
        let n = emit(&mut buf, MsgType::Ping, 42, &7u64.to_be_bytes()).unwrap();
        assert_eq!(n, 48);
        assert_eq!(buf[0] >> 4, 6, "boringtun needs the IPv6 version nibble");
        // boringtun's own length rule: u16 at 4 plus 40 fits the plaintext.
        assert!(usize::from(u16::from_be_bytes([buf[4], buf[5]])) + 40 <= n);
        let f = LinkFrame::new_checked(&buf[..n]).unwrap();
        assert_eq!(f.msg_type(), MsgType::Ping);
        assert_eq!(f.rpc_id(), 42);
        assert_eq!(f.payload(), &7u64.to_be_bytes());
        // Padding is zero.
        assert!(buf[48..n].iter().all(|&b| b == 0));
    }

    #[test]
    fn cell_frame_vector() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/vectors/protocol.json")).unwrap();
        let v = &doc["cells_3_hops"];
        let frame_hex = v["link_frame_of_first_forward_cell"].as_str().unwrap();
        let frame: Vec<u8> = (0..frame_hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&frame_hex[i..i + 2], 16).unwrap())
            .collect();
        assert_eq!(frame.len(), LINK_FRAME_CELL_LEN);
        let f = LinkFrame::new_checked(&frame).unwrap();
        assert_eq!(f.msg_type(), MsgType::Cell);
        let mut again = [0u8; LINK_FRAME_MAX];
        let n = emit(&mut again, MsgType::Cell, 0, f.payload()).unwrap();
        assert_eq!(&again[..n], &frame[..]);
    }

    #[test]
    fn refuses_what_the_spec_refuses() {
        let mut buf = [0u8; LINK_FRAME_MAX];
        let n = emit(&mut buf, MsgType::Close, 0, &[0]).unwrap();
        let good = buf;
        assert!(LinkFrame::new_checked(&good[..n]).is_ok());
        let cases: [(usize, u8, FrameError); 4] = [
            (0, 0x62, FrameError::BadVersion(0x62)),
            (6, 17, FrameError::BadNextHeader(17)),
            (1, 0x99, FrameError::UnknownType(0x99)),
            (2, 2, FrameError::UnknownMsgVersion(2)),
        ];
        for (off, val, err) in cases {
            let mut b = good;
            b[off] = val;
            assert_eq!(LinkFrame::new_checked(&b[..n]).unwrap_err(), err);
        }
        let mut b = good;
        b[5] = 2; // CLOSE with a 2-byte payload
        assert_eq!(
            LinkFrame::new_checked(&b[..n]).unwrap_err(),
            FrameError::BadLength(2)
        );
        assert_eq!(
            LinkFrame::new_checked(&good[..30]).unwrap_err(),
            FrameError::Truncated
        );
        // Oversized payloads are refused by the sender too.
        assert!(emit(&mut buf, MsgType::Ping, 1, &[0; 9]).is_none());
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..1500)) {
            let _ = LinkFrame::new_checked(&bytes);
        }
    }
}
