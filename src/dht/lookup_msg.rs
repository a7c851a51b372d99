//! The DHT_LOOKUP and DHT_LOOKUP_REPLY payloads (docs/protocol.md section 12.6): what a client or
//! service sends to the last hop of its circuit, and what that DHT relay answers. Checked parsing
//! that never panics and never allocates beyond the input's size; `emit` writes the exact layout.

use crate::wire::reader::{ReadError, Reader};
use core::fmt;
use num_enum::{IntoPrimitive, TryFromPrimitive};

use super::message::{emit_contact, parse_contact, RecordKind, DHT_MAX_CONTACTS};
use super::Key;
use crate::wire::record::{Contact, CONTACT_LEN, RELAY_RECORD_LEN};

/// The only DHT_LOOKUP version.
pub const DHT_LOOKUP_VERSION: u8 = 1;
/// DHT_LOOKUP header: version, op, kind, reserved, lookup_id u32, key 32, record_len u16.
pub const DHT_LOOKUP_HEADER_LEN: usize = 42;
/// DHT_LOOKUP_REPLY header: version, op, status, reserved, lookup_id u32.
pub const DHT_LOOKUP_REPLY_HEADER_LEN: usize = 8;
/// Relay records in one SAMPLE answer.
pub const DHT_SAMPLE_MAX: usize = 3;

/// What the requester asks the last hop to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, TryFromPrimitive, IntoPrimitive)]
#[repr(u8)]
pub enum LookupOp {
    /// The closest DHT nodes to a key.
    FindNodes = 1,
    /// Every valid record under a key.
    FindValue = 2,
    /// Store a record on the replicas of its key.
    Publish = 3,
    /// Random relay records from the last hop's view.
    Sample = 4,
}

/// How the last hop fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, TryFromPrimitive, IntoPrimitive)]
#[repr(u8)]
pub enum LookupStatus {
    /// Done.
    Ok = 0,
    /// FIND_VALUE: nothing valid found.
    NotFound = 1,
    /// The lookup ran out of time without an answer.
    Timeout = 2,
    /// Per-circuit or relay limits.
    RateLimited = 3,
    /// PUBLISH: the record fails the storage checks.
    Invalid = 4,
    /// PUBLISH: every replica holds a newer revision.
    Stale = 5,
    /// The request was malformed, of an unknown version, or the last hop is no DHT relay.
    Refused = 6,
}

/// Why a payload was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LookupMsgError {
    /// Shorter than its fixed part or its length fields say.
    #[error("truncated")]
    Truncated,
    /// Bytes after the end.
    #[error("trailing bytes")]
    Trailing,
    /// Unknown `version`.
    #[error("unknown version {0}")]
    UnknownVersion(u8),
    /// A field out of range.
    #[error("bad field: {0}")]
    Field(&'static str),
}

// Reads that run short or leave bytes over keep the variants they always had.
impl From<ReadError> for LookupMsgError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Truncated => LookupMsgError::Truncated,
            ReadError::Trailing => LookupMsgError::Trailing,
        }
    }
}

/// A DHT_LOOKUP payload.
#[derive(Clone, PartialEq, Eq)]
pub struct LookupRequest {
    /// What to do.
    pub op: LookupOp,
    /// FIND_VALUE and PUBLISH: the record kind; else `None`.
    pub kind: Option<RecordKind>,
    /// Chosen by the requester, echoed in every reply.
    pub lookup_id: u32,
    /// FIND_NODES and FIND_VALUE: the key; zero otherwise.
    pub key: Key,
    /// PUBLISH: the record (unverified); else empty.
    pub record: Vec<u8>,
}

impl fmt::Debug for LookupRequest {
    // The key is the index of a descriptor: not worth keeping in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupRequest")
            .field("op", &self.op)
            .field("kind", &self.kind)
            .field("lookup_id", &self.lookup_id)
            .field("record_len", &self.record.len())
            .finish()
    }
}

impl LookupRequest {
    /// Parses a DHT_LOOKUP payload.
    pub fn parse(bytes: &[u8]) -> Result<LookupRequest, LookupMsgError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != DHT_LOOKUP_VERSION {
            return Err(LookupMsgError::UnknownVersion(version));
        }
        let op = LookupOp::try_from(r.u8()?).map_err(|_| LookupMsgError::Field("op"))?;
        let kind_b = r.u8()?;
        let _reserved = r.u8()?;
        let lookup_id = r.u32()?;
        let key = r.array::<32>()?;
        let record_len = usize::from(r.u16()?);
        let kind = match op {
            LookupOp::FindValue | LookupOp::Publish => {
                Some(RecordKind::try_from(kind_b).map_err(|_| LookupMsgError::Field("kind"))?)
            }
            LookupOp::FindNodes | LookupOp::Sample if kind_b == 0 => None,
            _ => return Err(LookupMsgError::Field("kind")),
        };
        let len_ok = match (op, kind) {
            (LookupOp::Publish, Some(k)) => k.len_ok(record_len),
            _ => record_len == 0,
        };
        if !len_ok {
            return Err(LookupMsgError::Field("record_len"));
        }
        let record = r.take(record_len)?.to_vec();
        r.end()?;
        Ok(LookupRequest {
            op,
            kind,
            lookup_id,
            key,
            record,
        })
    }

    /// Writes the payload.
    pub fn emit(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(DHT_LOOKUP_HEADER_LEN + self.record.len());
        out.push(DHT_LOOKUP_VERSION);
        out.push(self.op as u8);
        out.push(self.kind.map_or(0, |k| k as u8));
        out.push(0);
        out.extend_from_slice(&self.lookup_id.to_be_bytes());
        out.extend_from_slice(&self.key);
        out.extend_from_slice(&(self.record.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.record);
        out
    }
}

/// The op-specific body of a DHT_LOOKUP_REPLY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyBody {
    /// Up to 8 contacts, closest first.
    FindNodes(Vec<Contact>),
    /// One record of several (`seq_no` of `total`); no record with status NOT_FOUND.
    FindValue {
        /// This record's number, from 0.
        seq_no: u8,
        /// Distinct valid records found (0 with status NOT_FOUND).
        total: u8,
        /// The record (unverified), empty if none.
        record: Vec<u8>,
    },
    /// How many replicas took the record.
    Publish {
        /// Accepted.
        accepted: u8,
        /// Refused.
        refused: u8,
    },
    /// Relay records (unverified), at most three.
    Sample(Vec<Vec<u8>>),
}

impl ReplyBody {
    /// The op this body answers.
    pub fn op(&self) -> LookupOp {
        match self {
            ReplyBody::FindNodes(_) => LookupOp::FindNodes,
            ReplyBody::FindValue { .. } => LookupOp::FindValue,
            ReplyBody::Publish { .. } => LookupOp::Publish,
            ReplyBody::Sample(_) => LookupOp::Sample,
        }
    }

    /// The body of a reply that carries nothing (errors) for `op`.
    pub fn empty(op: LookupOp) -> ReplyBody {
        match op {
            LookupOp::FindNodes => ReplyBody::FindNodes(Vec::new()),
            LookupOp::FindValue => ReplyBody::FindValue {
                seq_no: 0,
                total: 0,
                record: Vec::new(),
            },
            LookupOp::Publish => ReplyBody::Publish {
                accepted: 0,
                refused: 0,
            },
            LookupOp::Sample => ReplyBody::Sample(Vec::new()),
        }
    }
}

/// A DHT_LOOKUP_REPLY payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupReply {
    /// How it went.
    pub status: LookupStatus,
    /// The requester's `lookup_id`.
    pub lookup_id: u32,
    /// What was found (its op is the reply's `op`).
    pub body: ReplyBody,
}

impl LookupReply {
    /// Parses a DHT_LOOKUP_REPLY payload. Records inside are only length-checked: the caller
    /// verifies them.
    pub fn parse(bytes: &[u8]) -> Result<LookupReply, LookupMsgError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != DHT_LOOKUP_VERSION {
            return Err(LookupMsgError::UnknownVersion(version));
        }
        let op = LookupOp::try_from(r.u8()?).map_err(|_| LookupMsgError::Field("op"))?;
        let status =
            LookupStatus::try_from(r.u8()?).map_err(|_| LookupMsgError::Field("status"))?;
        let _reserved = r.u8()?;
        let lookup_id = r.u32()?;
        let body = match op {
            LookupOp::FindNodes => {
                let n = usize::from(r.u8()?);
                if n > DHT_MAX_CONTACTS {
                    return Err(LookupMsgError::Field("count"));
                }
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    let c = parse_contact(&r.array::<CONTACT_LEN>()?)
                        .map_err(|_| LookupMsgError::Field("contact"))?;
                    v.push(c);
                }
                ReplyBody::FindNodes(v)
            }
            LookupOp::FindValue => {
                let seq_no = r.u8()?;
                let total = r.u8()?;
                let len = usize::from(r.u16()?);
                let ok_len = len == 0
                    || RecordKind::Relay.len_ok(len)
                    || RecordKind::Descriptor.len_ok(len)
                    || RecordKind::NameClaim.len_ok(len);
                // A record is present exactly when `seq_no` < `total`.
                if !ok_len || (len != 0) != (seq_no < total) {
                    return Err(LookupMsgError::Field("record_len"));
                }
                ReplyBody::FindValue {
                    seq_no,
                    total,
                    record: r.take(len)?.to_vec(),
                }
            }
            LookupOp::Publish => {
                let accepted = r.u8()?;
                let refused = r.u8()?;
                let _reserved = r.u16()?;
                ReplyBody::Publish { accepted, refused }
            }
            LookupOp::Sample => {
                let n = usize::from(r.u8()?);
                if n > DHT_SAMPLE_MAX {
                    return Err(LookupMsgError::Field("count"));
                }
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(r.take(RELAY_RECORD_LEN)?.to_vec());
                }
                ReplyBody::Sample(v)
            }
        };
        r.end()?;
        Ok(LookupReply {
            status,
            lookup_id,
            body,
        })
    }

    /// Writes the payload; `None` if a list or record is out of range.
    pub fn emit(&self) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(DHT_LOOKUP_REPLY_HEADER_LEN + 1300);
        out.push(DHT_LOOKUP_VERSION);
        out.push(self.body.op() as u8);
        out.push(self.status as u8);
        out.push(0);
        out.extend_from_slice(&self.lookup_id.to_be_bytes());
        match &self.body {
            ReplyBody::FindNodes(cs) => {
                if cs.len() > DHT_MAX_CONTACTS {
                    return None;
                }
                out.push(cs.len() as u8);
                for c in cs {
                    emit_contact(c, &mut out);
                }
            }
            ReplyBody::FindValue {
                seq_no,
                total,
                record,
            } => {
                if (record.is_empty()) == (seq_no < total) {
                    return None;
                }
                out.push(*seq_no);
                out.push(*total);
                out.extend_from_slice(&u16::try_from(record.len()).ok()?.to_be_bytes());
                out.extend_from_slice(record);
            }
            ReplyBody::Publish { accepted, refused } => {
                out.extend_from_slice(&[*accepted, *refused, 0, 0]);
            }
            ReplyBody::Sample(rs) => {
                if rs.len() > DHT_SAMPLE_MAX || rs.iter().any(|r| r.len() != RELAY_RECORD_LEN) {
                    return None;
                }
                out.push(rs.len() as u8);
                for r in rs {
                    out.extend_from_slice(r);
                }
            }
        }
        Some(out)
    }
}

/// Reads the `op` and `lookup_id` of a request that failed to parse, so that the refusal can
/// still be matched by the requester (both are at fixed offsets in every version-1 payload).
pub fn salvage_ids(bytes: &[u8]) -> Option<(LookupOp, u32)> {
    let op = LookupOp::try_from(*bytes.get(1)?).ok()?;
    let id: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
    Some((op, u32::from_be_bytes(id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::relay::RELAY_PAYLOAD_LEN;
    use std::net::SocketAddr;

    fn contact(i: u8) -> Contact {
        let key = ed25519_dalek::SigningKey::from_bytes(&[i; 32]);
        Contact {
            identity: key.verifying_key().to_bytes(),
            link_key: [i; 32],
            endpoint: SocketAddr::from(([198, 18, 0, i], 7412)),
        }
    }

    #[test]
    fn requests_round_trip_and_fit_a_cell() {
        for (op, kind, len) in [
            (LookupOp::FindNodes, None, 0),
            (LookupOp::FindValue, Some(RecordKind::Descriptor), 0),
            (LookupOp::Publish, Some(RecordKind::Descriptor), 922),
            (LookupOp::Publish, Some(RecordKind::Relay), 424),
            (LookupOp::Sample, None, 0),
        ] {
            let r = LookupRequest {
                op,
                kind,
                lookup_id: 0xdead_beef,
                key: [7; 32],
                record: vec![9; len],
            };
            let b = r.emit();
            assert!(b.len() <= RELAY_PAYLOAD_LEN);
            assert_eq!(LookupRequest::parse(&b).unwrap(), r);
            // Every truncation and any extra byte is refused.
            for n in 0..b.len() {
                assert!(LookupRequest::parse(&b[..n]).is_err());
            }
            let mut long = b.clone();
            long.push(0);
            assert!(LookupRequest::parse(&long).is_err());
        }
    }

    #[test]
    fn bad_requests_are_refused() {
        let ok = LookupRequest {
            op: LookupOp::Publish,
            kind: Some(RecordKind::Relay),
            lookup_id: 1,
            key: [0; 32],
            record: vec![1; 424],
        }
        .emit();
        let mut v = ok.clone();
        v[0] = 2;
        assert_eq!(
            LookupRequest::parse(&v),
            Err(LookupMsgError::UnknownVersion(2))
        );
        let mut v = ok.clone();
        v[1] = 9;
        assert!(LookupRequest::parse(&v).is_err());
        let mut v = ok.clone();
        v[2] = 2; // kind says descriptor, length says relay record
        assert!(LookupRequest::parse(&v).is_err());
        let mut v = ok.clone();
        v[1] = LookupOp::Sample as u8; // kind must be 0 and no record
        assert!(LookupRequest::parse(&v).is_err());
        assert_eq!(salvage_ids(&ok), Some((LookupOp::Publish, 1)));
    }

    #[test]
    fn replies_round_trip_and_fit_a_cell() {
        let bodies = vec![
            ReplyBody::FindNodes((1..=8).map(contact).collect()),
            ReplyBody::FindValue {
                seq_no: 1,
                total: 3,
                record: vec![5; 922],
            },
            ReplyBody::empty(LookupOp::FindValue),
            ReplyBody::Publish {
                accepted: 4,
                refused: 1,
            },
            ReplyBody::Sample(vec![vec![3; 424]; 3]),
        ];
        for body in bodies {
            let r = LookupReply {
                status: LookupStatus::Ok,
                lookup_id: 42,
                body,
            };
            let b = r.emit().unwrap();
            assert!(b.len() <= RELAY_PAYLOAD_LEN, "{} bytes", b.len());
            assert_eq!(LookupReply::parse(&b).unwrap(), r);
            for n in 0..b.len() {
                assert!(LookupReply::parse(&b[..n]).is_err());
            }
        }
        // A record without seq_no < total, or of a length no record has, is refused.
        let r = LookupReply {
            status: LookupStatus::Ok,
            lookup_id: 1,
            body: ReplyBody::FindValue {
                seq_no: 0,
                total: 1,
                record: vec![1; 424],
            },
        };
        let mut b = r.emit().unwrap();
        b[9] = 0; // total 0
        assert!(LookupReply::parse(&b).is_err());
        let mut b = r.emit().unwrap();
        b[11] = 100; // record_len 100... (424 = 0x01a8, low byte changed)
        assert!(LookupReply::parse(&b).is_err());
        let too_many = LookupReply {
            status: LookupStatus::Ok,
            lookup_id: 1,
            body: ReplyBody::Sample(vec![vec![3; 424]; 4]),
        };
        assert!(too_many.emit().is_none());
    }
}
