//! What a UDP datagram is, from its first four bytes (docs/protocol.md sections 4.1 and 4.6), and
//! the two unencrypted bootstrap messages that learn a peer's relay record from its address alone.

use super::record::RELAY_RECORD_LEN;

/// WireGuard handshake initiation.
pub const WG_INITIATION: u32 = 1;
/// WireGuard handshake response.
pub const WG_RESPONSE: u32 = 2;
/// WireGuard cookie reply.
pub const WG_COOKIE: u32 = 3;
/// WireGuard data.
pub const WG_DATA: u32 = 4;
/// Relay envelope (section 13.4).
pub const RELAY_ENVELOPE_TYPE: u32 = 0x10;
/// Record query (section 4.6).
pub const RECORD_QUERY_TYPE: u32 = 0x11;
/// Record response (section 4.6).
pub const RECORD_RESPONSE_TYPE: u32 = 0x12;
/// Version of the record query/response layout.
pub const RECORD_QUERY_VERSION: u8 = 1;
/// A record query is padded to this size, larger than the response, so answering one amplifies
/// nothing.
pub const RECORD_QUERY_LEN: usize = 448;
/// Size of a record response.
pub const RECORD_RESPONSE_LEN: usize = 16 + RELAY_RECORD_LEN;

/// The kind of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// WireGuard handshake initiation.
    Initiation,
    /// WireGuard response, cookie or data, with the receiver index it names.
    Indexed(u32),
    /// Relay envelope.
    RelayEnvelope,
    /// Record query with its nonce.
    RecordQuery(u64),
    /// Record response with its nonce.
    RecordResponse(u64),
    /// Anything else.
    Unknown,
}

fn u32_le(b: &[u8], off: usize) -> Option<u32> {
    let s: [u8; 4] = b.get(off..off + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(s))
}

fn u64_be(b: &[u8], off: usize) -> Option<u64> {
    let s: [u8; 8] = b.get(off..off + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(s))
}

/// Classifies a datagram. Exact sizes are checked for the WireGuard handshake types (boringtun
/// checks them again) and the record messages.
pub fn classify(d: &[u8]) -> Kind {
    let Some(t) = u32_le(d, 0) else {
        return Kind::Unknown;
    };
    match t {
        WG_INITIATION if d.len() == 148 => Kind::Initiation,
        WG_RESPONSE if d.len() == 92 => u32_le(d, 8).map_or(Kind::Unknown, Kind::Indexed),
        WG_COOKIE if d.len() == 64 => u32_le(d, 4).map_or(Kind::Unknown, Kind::Indexed),
        WG_DATA if d.len() >= 32 => u32_le(d, 4).map_or(Kind::Unknown, Kind::Indexed),
        RELAY_ENVELOPE_TYPE if d.len() > 12 => Kind::RelayEnvelope,
        RECORD_QUERY_TYPE
            if d.len() == RECORD_QUERY_LEN && d.get(4) == Some(&RECORD_QUERY_VERSION) =>
        {
            u64_be(d, 8).map_or(Kind::Unknown, Kind::RecordQuery)
        }
        RECORD_RESPONSE_TYPE
            if d.len() == RECORD_RESPONSE_LEN && d.get(4) == Some(&RECORD_QUERY_VERSION) =>
        {
            u64_be(d, 8).map_or(Kind::Unknown, Kind::RecordResponse)
        }
        _ => Kind::Unknown,
    }
}

/// Builds a record query into `out` (cleared first).
pub fn emit_record_query(nonce: u64, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&RECORD_QUERY_TYPE.to_le_bytes());
    out.extend_from_slice(&[RECORD_QUERY_VERSION, 0, 0, 0]);
    out.extend_from_slice(&nonce.to_be_bytes());
    out.resize(RECORD_QUERY_LEN, 0);
}

/// Builds a record response into `out` (cleared first).
pub fn emit_record_response(nonce: u64, record: &[u8; RELAY_RECORD_LEN], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&RECORD_RESPONSE_TYPE.to_le_bytes());
    out.extend_from_slice(&[RECORD_QUERY_VERSION, 0, 0, 0]);
    out.extend_from_slice(&nonce.to_be_bytes());
    out.extend_from_slice(record);
}

/// The record bytes of a response (after [`classify`] said `RecordResponse`).
pub fn record_of_response(d: &[u8]) -> Option<&[u8]> {
    d.get(16..RECORD_RESPONSE_LEN)
}

/// Bytes a relay envelope adds in front of the WireGuard datagram (section 13.4).
pub const RELAY_ENVELOPE_HEADER: usize = 12;

/// Wraps a WireGuard datagram in a relay envelope with `token` into `out` (cleared first).
pub fn emit_relay_envelope(token: u64, inner: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&RELAY_ENVELOPE_TYPE.to_le_bytes());
    out.extend_from_slice(&token.to_be_bytes());
    out.extend_from_slice(inner);
}

/// The token and the inner datagram of a relay envelope; `None` unless the inner datagram is
/// one of the four WireGuard types (an envelope never nests or carries bootstrap messages).
pub fn parse_relay_envelope(d: &[u8]) -> Option<(u64, &[u8])> {
    if u32_le(d, 0)? != RELAY_ENVELOPE_TYPE {
        return None;
    }
    let token = u64_be(d, 4)?;
    let inner = d.get(RELAY_ENVELOPE_HEADER..)?;
    match classify(inner) {
        Kind::Initiation | Kind::Indexed(_) => Some((token, inner)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_and_round_trip() {
        let mut q = Vec::new();
        emit_record_query(77, &mut q);
        assert_eq!(classify(&q), Kind::RecordQuery(77));
        let rec = [5u8; RELAY_RECORD_LEN];
        let mut r = Vec::new();
        emit_record_response(77, &rec, &mut r);
        assert!(
            r.len() < q.len(),
            "a response must not be larger than its query"
        );
        assert_eq!(classify(&r), Kind::RecordResponse(77));
        assert_eq!(record_of_response(&r).unwrap(), &rec[..]);
        let mut data = vec![0u8; 48];
        data[0] = 4;
        data[4..8].copy_from_slice(&0x1234_5600u32.to_le_bytes());
        assert_eq!(classify(&data), Kind::Indexed(0x1234_5600));
        assert_eq!(classify(&[1, 0, 0]), Kind::Unknown);
        assert_eq!(classify(&[1, 0, 0, 0, 0]), Kind::Unknown);
        q.truncate(100);
        assert_eq!(classify(&q), Kind::Unknown);
        let mut env = Vec::new();
        emit_relay_envelope(0xabcd, &data, &mut env);
        assert_eq!(classify(&env), Kind::RelayEnvelope);
        assert_eq!(parse_relay_envelope(&env), Some((0xabcd, &data[..])));
        emit_relay_envelope(1, &r, &mut env);
        assert_eq!(
            parse_relay_envelope(&env),
            None,
            "only WireGuard inside envelopes"
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = classify(&bytes);
            let _ = record_of_response(&bytes);
            let _ = parse_relay_envelope(&bytes);
        }
    }
}
