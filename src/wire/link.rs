//! The link frame (docs/protocol.md section 4.2): every message between two neighbours, inside
//! WireGuard, starts with this IPv6-shaped 40-byte header.
//!
//! boringtun accepts a plaintext only if it looks like an IP packet: high nibble of byte 0 is 6 and
//! the u16 at offset 4 plus 40 fits the plaintext (it then truncates to that length). Everything
//! else in the header is ours. This module is the only place that builds or parses the header.

use num_enum::{IntoPrimitive, TryFromPrimitive};
use std::net::SocketAddr;

use super::record::{emit_endpoint, parse_endpoint, ENDPOINT_LEN};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, TryFromPrimitive, IntoPrimitive)]
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
    /// An exit's signed policy record (5.5).
    ExitPolicy = 0x10,
    /// Ask a relay for the policies of a few exits (5.5).
    ExitPolicyRequest = 0x11,
}

impl MsgType {
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
            ExitPolicy => (
                crate::wire::exit_policy::EXIT_POLICY_LEN,
                crate::wire::exit_policy::EXIT_POLICY_LEN,
            ),
            ExitPolicyRequest => (
                2 + 32,
                2 + 32 * crate::wire::exit_policy::EXIT_POLICY_REQUEST_MAX,
            ),
            PunchRequest | RelayRequest => (32, 32),
            PunchNotify => (PUNCH_NOTIFY_LEN, PUNCH_NOTIFY_LEN),
            RelayOffer => (RELAY_OFFER_LEN, RELAY_OFFER_LEN),
            ProbeRequest => (8, 8),
            ProbeForward => (PROBE_FORWARD_LEN, PROBE_FORWARD_LEN),
            // Layouts owned by the DHT issue; bounded by the frame until they land.
            DhtRequest | DhtResponse => (0, LINK_PAYLOAD_MAX),
        }
    }
}

/// Payload of PUNCH_NOTIFY (section 13.2).
pub const PUNCH_NOTIFY_LEN: usize = 32 + 32 + 1 + 2 * ENDPOINT_LEN + 8;
/// Payload of RELAY_OFFER (section 13.4).
pub const RELAY_OFFER_LEN: usize = 1 + 32 + 32 + 8 + 4;
/// Payload of PROBE_FORWARD (section 13.3).
pub const PROBE_FORWARD_LEN: usize = 32 + 32 + ENDPOINT_LEN + 8;

/// Why a NAT traversal payload was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NatMsgError {
    /// Wrong payload length.
    #[error("NAT message payload of {0} bytes")]
    Length(usize),
    /// A malformed field.
    #[error("malformed NAT message field: {0}")]
    Field(&'static str),
}

fn arr<const N: usize>(p: &[u8], off: usize) -> Result<[u8; N], NatMsgError> {
    p.get(off..off + N)
        .and_then(|b| <[u8; N]>::try_from(b).ok())
        .ok_or(NatMsgError::Length(p.len()))
}

fn endpoint_at(p: &[u8], off: usize) -> Result<Option<SocketAddr>, NatMsgError> {
    let b: [u8; ENDPOINT_LEN] = arr(p, off)?;
    parse_endpoint(&b).map_err(|_| NatMsgError::Field("endpoint"))
}

fn put_endpoint(out: &mut [u8], off: usize, ep: Option<SocketAddr>) {
    let mut b = [0u8; ENDPOINT_LEN];
    emit_endpoint(ep, &mut b);
    if let Some(dst) = out.get_mut(off..off + ENDPOINT_LEN) {
        dst.copy_from_slice(&b);
    }
}

/// The 32-byte identity payload of PUNCH_REQUEST and RELAY_REQUEST.
pub fn parse_target(p: &[u8]) -> Result<[u8; 32], NatMsgError> {
    if p.len() != 32 {
        return Err(NatMsgError::Length(p.len()));
    }
    arr(p, 0)
}

/// PUNCH_NOTIFY: punch towards `peer` at these endpoints (none: the introducer failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PunchNotify {
    /// The peer's relay identity (zero for a client-only peer).
    pub peer: [u8; 32],
    /// The peer's link key.
    pub peer_link_key: [u8; 32],
    /// 0 to 2 endpoints: as the introducer observes the peer, then the one in its record.
    pub endpoints: Vec<SocketAddr>,
    /// The same random value in both notifications of one attempt.
    pub attempt_id: u64,
}

impl PunchNotify {
    /// Parses a payload; every malformed field is an error.
    pub fn parse(p: &[u8]) -> Result<PunchNotify, NatMsgError> {
        if p.len() != PUNCH_NOTIFY_LEN {
            return Err(NatMsgError::Length(p.len()));
        }
        let peer = arr(p, 0)?;
        let peer_link_key = arr(p, 32)?;
        let n: [u8; 1] = arr(p, 64)?;
        let n = usize::from(n[0]);
        if n > 2 {
            return Err(NatMsgError::Field("n_endpoints"));
        }
        let mut endpoints = Vec::with_capacity(n);
        for i in 0..2 {
            match (i < n, endpoint_at(p, 65 + i * ENDPOINT_LEN)?) {
                (true, Some(e)) => endpoints.push(e),
                (false, None) => {}
                _ => return Err(NatMsgError::Field("endpoint slots")),
            }
        }
        if n > 0 && peer_link_key == [0u8; 32] {
            return Err(NatMsgError::Field("zero link key"));
        }
        let attempt_id = u64::from_be_bytes(arr(p, 65 + 2 * ENDPOINT_LEN)?);
        Ok(PunchNotify {
            peer,
            peer_link_key,
            endpoints,
            attempt_id,
        })
    }

    /// The payload (at most two endpoints are written).
    pub fn emit(&self) -> [u8; PUNCH_NOTIFY_LEN] {
        let mut b = [0u8; PUNCH_NOTIFY_LEN];
        b[..32].copy_from_slice(&self.peer);
        b[32..64].copy_from_slice(&self.peer_link_key);
        let n = self.endpoints.len().min(2);
        b[64] = n as u8;
        for (i, e) in self.endpoints.iter().take(2).enumerate() {
            put_endpoint(&mut b, 65 + i * ENDPOINT_LEN, Some(*e));
        }
        b[65 + 2 * ENDPOINT_LEN..].copy_from_slice(&self.attempt_id.to_be_bytes());
        b
    }
}

/// RELAY_OFFER status: the relayed link is set up.
pub const RELAY_OK: u8 = 0;
/// RELAY_OFFER status: refused (no capacity, no link to the target).
pub const RELAY_REFUSED: u8 = 3;

/// RELAY_OFFER: send the peer's datagrams in relay envelopes with this token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayOffer {
    /// [`RELAY_OK`] or [`RELAY_REFUSED`].
    pub status: u8,
    /// The peer's identity (zero for a client-only peer).
    pub peer: [u8; 32],
    /// The peer's link key.
    pub peer_link_key: [u8; 32],
    /// Our token for envelopes to the introducer.
    pub token: u64,
    /// Seconds the offer holds while idle.
    pub lifetime_s: u32,
}

impl RelayOffer {
    /// Parses a payload.
    pub fn parse(p: &[u8]) -> Result<RelayOffer, NatMsgError> {
        if p.len() != RELAY_OFFER_LEN {
            return Err(NatMsgError::Length(p.len()));
        }
        let [status] = arr::<1>(p, 0)?;
        if status != RELAY_OK && status != RELAY_REFUSED {
            return Err(NatMsgError::Field("relay offer status"));
        }
        let o = RelayOffer {
            status,
            peer: arr(p, 1)?,
            peer_link_key: arr(p, 33)?,
            token: u64::from_be_bytes(arr(p, 65)?),
            lifetime_s: u32::from_be_bytes(arr(p, 73)?),
        };
        if status == RELAY_OK && (o.peer_link_key == [0u8; 32] || o.token == 0) {
            return Err(NatMsgError::Field("relay offer without key or token"));
        }
        Ok(o)
    }

    /// The payload.
    pub fn emit(&self) -> [u8; RELAY_OFFER_LEN] {
        let mut b = [0u8; RELAY_OFFER_LEN];
        b[0] = self.status;
        b[1..33].copy_from_slice(&self.peer);
        b[33..65].copy_from_slice(&self.peer_link_key);
        b[65..73].copy_from_slice(&self.token.to_be_bytes());
        b[73..77].copy_from_slice(&self.lifetime_s.to_be_bytes());
        b
    }
}

/// PROBE_FORWARD: please dial `subject` at `endpoint` and PING it with `nonce`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeForward {
    /// The subject's identity (zero for a client-only node).
    pub subject: [u8; 32],
    /// The subject's link key.
    pub subject_link_key: [u8; 32],
    /// Where the forwarding neighbour sees the subject.
    pub endpoint: SocketAddr,
    /// The subject's nonce, to be echoed as a PING nonce.
    pub nonce: u64,
}

impl ProbeForward {
    /// Parses a payload.
    pub fn parse(p: &[u8]) -> Result<ProbeForward, NatMsgError> {
        if p.len() != PROBE_FORWARD_LEN {
            return Err(NatMsgError::Length(p.len()));
        }
        let subject_link_key: [u8; 32] = arr(p, 32)?;
        if subject_link_key == [0u8; 32] {
            return Err(NatMsgError::Field("zero link key"));
        }
        Ok(ProbeForward {
            subject: arr(p, 0)?,
            subject_link_key,
            endpoint: endpoint_at(p, 64)?.ok_or(NatMsgError::Field("empty endpoint"))?,
            nonce: u64::from_be_bytes(arr(p, 64 + ENDPOINT_LEN)?),
        })
    }

    /// The payload.
    pub fn emit(&self) -> [u8; PROBE_FORWARD_LEN] {
        let mut b = [0u8; PROBE_FORWARD_LEN];
        b[..32].copy_from_slice(&self.subject);
        b[32..64].copy_from_slice(&self.subject_link_key);
        put_endpoint(&mut b, 64, Some(self.endpoint));
        b[64 + ENDPOINT_LEN..].copy_from_slice(&self.nonce.to_be_bytes());
        b
    }
}

/// Why a frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than the header or than its length field says.
    #[error("truncated link frame")]
    Truncated,
    /// Byte 0 is not `0x61`.
    #[error("unknown link framing byte {0:#04x}")]
    BadVersion(u8),
    /// Next-header position is not 253.
    #[error("bad next-header {0}")]
    BadNextHeader(u8),
    /// Unknown message type.
    #[error("unknown link message type {0:#04x}")]
    UnknownType(u8),
    /// Unknown layout version for a known type.
    #[error("unknown message layout version {0}")]
    UnknownMsgVersion(u8),
    /// Payload length outside the type's bounds.
    #[error("payload length {0} out of bounds for its type")]
    BadLength(usize),
}

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
        let msg_type = MsgType::try_from(header[OFF_TYPE])
            .map_err(|_| FrameError::UnknownType(header[OFF_TYPE]))?;
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
        let frame: Vec<u8> = hex::decode(frame_hex).unwrap();
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

    #[test]
    fn nat_messages_round_trip() {
        let n = PunchNotify {
            peer: [1; 32],
            peer_link_key: [2; 32],
            endpoints: vec![
                "198.18.0.7:7412".parse().unwrap(),
                "[2001:db8::1]:9".parse().unwrap(),
            ],
            attempt_id: 99,
        };
        assert_eq!(PunchNotify::parse(&n.emit()).unwrap(), n);
        let failed = PunchNotify {
            endpoints: vec![],
            ..n.clone()
        };
        assert_eq!(PunchNotify::parse(&failed.emit()).unwrap(), failed);
        let mut bad = n.emit();
        bad[64] = 3;
        assert!(PunchNotify::parse(&bad).is_err());
        bad[64] = 1; // second slot filled but count says one
        assert!(PunchNotify::parse(&bad).is_err());
        assert!(PunchNotify::parse(&n.emit()[..50]).is_err());
        let o = RelayOffer {
            status: RELAY_OK,
            peer: [3; 32],
            peer_link_key: [4; 32],
            token: 5,
            lifetime_s: 120,
        };
        assert_eq!(RelayOffer::parse(&o.emit()).unwrap(), o);
        let mut bad = o.emit();
        bad[0] = 7;
        assert!(RelayOffer::parse(&bad).is_err());
        let f = ProbeForward {
            subject: [0; 32],
            subject_link_key: [6; 32],
            endpoint: "198.18.0.9:1".parse().unwrap(),
            nonce: 8,
        };
        assert_eq!(ProbeForward::parse(&f.emit()).unwrap(), f);
        assert!(parse_target(&[0; 31]).is_err());
        assert_eq!(parse_target(&[9; 32]).unwrap(), [9; 32]);
        // Frames carry the fixed payload sizes.
        let mut buf = [0u8; LINK_FRAME_MAX];
        assert!(emit(&mut buf, MsgType::PunchNotify, 1, &n.emit()).is_some());
        assert!(emit(&mut buf, MsgType::PunchRequest, 1, &[0; 31]).is_none());
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..1500)) {
            let _ = LinkFrame::new_checked(&bytes);
            let _ = PunchNotify::parse(&bytes);
            let _ = RelayOffer::parse(&bytes);
            let _ = ProbeForward::parse(&bytes);
            let _ = parse_target(&bytes);
        }
    }
}
