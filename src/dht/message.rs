//! DHT messages (docs/protocol.md section 12.2), carried in DHT_REQUEST/DHT_RESPONSE link frames.
//!
//! [`DhtMessage::parse`] checks lengths, counts and contact slots and returns an error (never
//! panics) on anything else; it does not verify the records a message carries (the store and the
//! lookup do that with the record parsers and their own clock). [`DhtMessage::emit`] writes the
//! exact layout back. Reserved bytes are written as zero and ignored on receipt (section 1).

use crate::wire::reader::{ReadError, Reader};
use num_enum::{IntoPrimitive, TryFromPrimitive};
use std::fmt;

use super::descriptor::DESC_LEN;
use super::{Key, DHT_K};
use crate::names::claim::{MAX_CLAIM_LEN, MIN_CLAIM_LEN};
use crate::wire::record::{Contact, CONTACT_LEN, RELAY_RECORD_LEN};

/// The DHT message version this node speaks.
pub const DHT_VERSION: u8 = 1;
/// Length of the message header (version, type, reserved).
pub const DHT_HEADER_LEN: usize = 4;
/// Contacts in a NODES reply, or a VALUE reply without a record.
pub const DHT_MAX_CONTACTS: usize = DHT_K;
/// Contacts in a VALUE reply that carries a record.
pub const DHT_MAX_CONTACTS_WITH_RECORD: usize = 4;
/// Largest DHT message: VALUE with a descriptor and 4 contacts.
pub const DHT_MESSAGE_MAX: usize = DHT_HEADER_LEN + 6 + DESC_LEN + 4 * CONTACT_LEN;

/// Message type bytes.
pub mod msg_type {
    /// FIND_NODE.
    pub const FIND_NODE: u8 = 1;
    /// NODES.
    pub const NODES: u8 = 2;
    /// FIND_VALUE.
    pub const FIND_VALUE: u8 = 3;
    /// VALUE.
    pub const VALUE: u8 = 4;
    /// STORE.
    pub const STORE: u8 = 5;
    /// STORE_RESULT.
    pub const STORE_RESULT: u8 = 6;
    /// ERROR.
    pub const ERROR: u8 = 255;
}

/// The kinds of records the DHT stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, TryFromPrimitive, IntoPrimitive)]
#[repr(u8)]
pub enum RecordKind {
    /// A relay record (5.4), 424 bytes.
    Relay = 1,
    /// A service descriptor (11.3), 922 bytes.
    Descriptor = 2,
    /// A name claim (18.3), 111 to 173 bytes.
    NameClaim = 3,
}

impl RecordKind {
    /// Whether a record of this kind may be `len` bytes long: relay records and descriptors
    /// have one length, claims as many as their name allows.
    pub fn len_ok(self, len: usize) -> bool {
        match self {
            RecordKind::Relay => len == RELAY_RECORD_LEN,
            RecordKind::Descriptor => len == DESC_LEN,
            RecordKind::NameClaim => (MIN_CLAIM_LEN..=MAX_CLAIM_LEN).contains(&len),
        }
    }

    /// The longest record of this kind.
    pub fn max_len(self) -> usize {
        match self {
            RecordKind::Relay => RELAY_RECORD_LEN,
            RecordKind::Descriptor => DESC_LEN,
            RecordKind::NameClaim => MAX_CLAIM_LEN,
        }
    }
}

/// STORE_RESULT status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, TryFromPrimitive, IntoPrimitive)]
#[repr(u8)]
pub enum StoreStatus {
    /// Stored (or already held identically).
    Stored = 0,
    /// Rollback refused.
    Stale = 1,
    /// The record fails the checks.
    Invalid = 2,
    /// A limit was reached or the new-signer rate was exceeded.
    Full = 3,
    /// The node is not among the closest to the key.
    NotResponsible = 4,
}

/// ERROR codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, TryFromPrimitive, IntoPrimitive)]
#[repr(u8)]
pub enum ErrorCode {
    /// Unsupported version.
    UnsupportedVersion = 1,
    /// Malformed request or unknown type.
    Malformed = 2,
    /// Overloaded.
    Overloaded = 3,
}

/// A DHT message.
#[derive(Clone, PartialEq, Eq)]
pub enum DhtMessage {
    /// Ask for the closest contacts to `target`.
    FindNode {
        /// The id looked for.
        target: Key,
    },
    /// Up to 8 contacts, closest first.
    Nodes {
        /// The contacts.
        contacts: Vec<Contact>,
    },
    /// Ask for the record number `cursor` stored under `key`.
    FindValue {
        /// The DHT key.
        key: Key,
        /// Which kind of record.
        kind: RecordKind,
        /// Which stored record, from 0.
        cursor: u8,
    },
    /// A stored record (if any) and closer contacts.
    Value {
        /// The kind asked for.
        kind: RecordKind,
        /// The cursor asked for.
        cursor: u8,
        /// Records held for the key (0 = none).
        total: u8,
        /// The record at `cursor`, unverified; `None` if there is none.
        record: Option<Vec<u8>>,
        /// Up to 4 contacts with a record, up to 8 without.
        contacts: Vec<Contact>,
    },
    /// Store a record (its key is implied by the record).
    Store {
        /// The kind.
        kind: RecordKind,
        /// The record bytes, unverified.
        record: Vec<u8>,
    },
    /// The answer to STORE.
    StoreResult {
        /// What happened.
        status: StoreStatus,
    },
    /// A request could not be served.
    Error {
        /// Why.
        code: ErrorCode,
        /// The highest version the responder speaks.
        max_version: u8,
    },
}

impl fmt::Debug for DhtMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::crypto::keys::fingerprint;
        match self {
            DhtMessage::FindNode { target } => write!(f, "FindNode({})", fingerprint(target)),
            DhtMessage::Nodes { contacts } => write!(f, "Nodes({})", contacts.len()),
            DhtMessage::FindValue { key, kind, cursor } => {
                write!(f, "FindValue({}, {kind:?}, {cursor})", fingerprint(key))
            }
            DhtMessage::Value {
                kind,
                cursor,
                total,
                record,
                contacts,
            } => write!(
                f,
                "Value({kind:?}, {cursor}/{total}, record: {}, contacts: {})",
                record.is_some(),
                contacts.len()
            ),
            DhtMessage::Store { kind, .. } => write!(f, "Store({kind:?})"),
            DhtMessage::StoreResult { status } => write!(f, "StoreResult({status:?})"),
            DhtMessage::Error { code, max_version } => {
                write!(f, "Error({code:?}, max_version {max_version})")
            }
        }
    }
}

/// Why a DHT message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Shorter than its layout requires.
    #[error("DHT message truncated")]
    Truncated,
    /// Longer than its layout.
    #[error("trailing bytes after DHT message")]
    Trailing,
    /// A version this node does not speak.
    #[error("unsupported DHT version {0}")]
    UnsupportedVersion(u8),
    /// An unknown message type.
    #[error("unknown DHT message type {0}")]
    UnknownType(u8),
    /// A malformed field.
    #[error("malformed DHT message field: {0}")]
    Field(&'static str),
}

impl MessageError {
    /// The ERROR reply a responder sends for a request that failed to parse this way (12.2).
    pub fn reply(&self) -> DhtMessage {
        match self {
            MessageError::UnsupportedVersion(_) => DhtMessage::Error {
                code: ErrorCode::UnsupportedVersion,
                max_version: DHT_VERSION,
            },
            _ => DhtMessage::Error {
                code: ErrorCode::Malformed,
                max_version: DHT_VERSION,
            },
        }
    }
}

// Reads that run short or leave bytes over keep the variants they always had.
impl From<ReadError> for MessageError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Truncated => MessageError::Truncated,
            ReadError::Trailing => MessageError::Trailing,
        }
    }
}

/// Parses one contact (5.2); an empty (all-zero) contact is an error here.
pub fn parse_contact(b: &[u8; CONTACT_LEN]) -> Result<Contact, MessageError> {
    crate::wire::record::parse_contact(b)
        .map_err(|_| MessageError::Field("contact"))?
        .ok_or(MessageError::Field("contact without endpoint"))
}

/// Writes one contact (5.2).
pub fn emit_contact(c: &Contact, out: &mut Vec<u8>) {
    let mut slot = [0u8; CONTACT_LEN];
    crate::wire::record::emit_contact(Some(c), &mut slot);
    out.extend_from_slice(&slot);
}

fn contacts(r: &mut Reader<'_>, n: usize) -> Result<Vec<Contact>, MessageError> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(parse_contact(&r.array::<CONTACT_LEN>()?)?);
    }
    Ok(out)
}

fn kind(b: u8) -> Result<RecordKind, MessageError> {
    RecordKind::try_from(b).map_err(|_| MessageError::Field("record kind"))
}

impl DhtMessage {
    /// The type byte.
    pub fn type_byte(&self) -> u8 {
        match self {
            DhtMessage::FindNode { .. } => msg_type::FIND_NODE,
            DhtMessage::Nodes { .. } => msg_type::NODES,
            DhtMessage::FindValue { .. } => msg_type::FIND_VALUE,
            DhtMessage::Value { .. } => msg_type::VALUE,
            DhtMessage::Store { .. } => msg_type::STORE,
            DhtMessage::StoreResult { .. } => msg_type::STORE_RESULT,
            DhtMessage::Error { .. } => msg_type::ERROR,
        }
    }

    /// Whether this is a request (FIND_NODE, FIND_VALUE, STORE).
    pub fn is_request(&self) -> bool {
        matches!(
            self,
            DhtMessage::FindNode { .. } | DhtMessage::FindValue { .. } | DhtMessage::Store { .. }
        )
    }

    /// Parses and checks one message.
    pub fn parse(bytes: &[u8]) -> Result<DhtMessage, MessageError> {
        let mut r = Reader::new(bytes);
        let [version, ty, _, _] = r.array::<DHT_HEADER_LEN>()?;
        if version != DHT_VERSION {
            return Err(MessageError::UnsupportedVersion(version));
        }
        let msg = match ty {
            msg_type::FIND_NODE => DhtMessage::FindNode {
                target: r.array::<32>()?,
            },
            msg_type::NODES => {
                let n = usize::from(r.u8()?);
                if n > DHT_MAX_CONTACTS {
                    return Err(MessageError::Field("NODES count"));
                }
                DhtMessage::Nodes {
                    contacts: contacts(&mut r, n)?,
                }
            }
            msg_type::FIND_VALUE => DhtMessage::FindValue {
                key: r.array::<32>()?,
                kind: kind(r.u8()?)?,
                cursor: r.u8()?,
            },
            msg_type::VALUE => {
                let kind = kind(r.u8()?)?;
                let cursor = r.u8()?;
                let total = r.u8()?;
                let n = usize::from(r.u8()?);
                let len = usize::from(r.u16()?);
                let record = match len {
                    0 => None,
                    l if kind.len_ok(l) => Some(r.take(l)?.to_vec()),
                    _ => return Err(MessageError::Field("VALUE record_len")),
                };
                if record.is_some() && cursor >= total {
                    return Err(MessageError::Field("VALUE record beyond total"));
                }
                if record.is_none() && total > 0 && cursor < total {
                    return Err(MessageError::Field("VALUE without the record at cursor"));
                }
                let max = if record.is_some() {
                    DHT_MAX_CONTACTS_WITH_RECORD
                } else {
                    DHT_MAX_CONTACTS
                };
                if n > max {
                    return Err(MessageError::Field("VALUE contact count"));
                }
                DhtMessage::Value {
                    kind,
                    cursor,
                    total,
                    record,
                    contacts: contacts(&mut r, n)?,
                }
            }
            msg_type::STORE => {
                let kind = kind(r.u8()?)?;
                let _reserved = r.u8()?;
                let len = usize::from(r.u16()?);
                if !kind.len_ok(len) {
                    return Err(MessageError::Field("STORE record_len"));
                }
                DhtMessage::Store {
                    kind,
                    record: r.take(len)?.to_vec(),
                }
            }
            msg_type::STORE_RESULT => DhtMessage::StoreResult {
                status: StoreStatus::try_from(r.u8()?)
                    .map_err(|_| MessageError::Field("status"))?,
            },
            msg_type::ERROR => DhtMessage::Error {
                code: ErrorCode::try_from(r.u8()?)
                    .map_err(|_| MessageError::Field("error code"))?,
                max_version: r.u8()?,
            },
            other => return Err(MessageError::UnknownType(other)),
        };
        r.end()?;
        Ok(msg)
    }

    /// Encodes the message; refuses counts or lengths the format cannot carry.
    pub fn emit(&self) -> Result<Vec<u8>, MessageError> {
        let mut out = Vec::with_capacity(DHT_MESSAGE_MAX);
        out.extend_from_slice(&[DHT_VERSION, self.type_byte(), 0, 0]);
        match self {
            DhtMessage::FindNode { target } => out.extend_from_slice(target),
            DhtMessage::Nodes { contacts } => {
                if contacts.len() > DHT_MAX_CONTACTS {
                    return Err(MessageError::Field("NODES count"));
                }
                out.push(contacts.len() as u8);
                contacts.iter().for_each(|c| emit_contact(c, &mut out));
            }
            DhtMessage::FindValue { key, kind, cursor } => {
                out.extend_from_slice(key);
                out.push(*kind as u8);
                out.push(*cursor);
            }
            DhtMessage::Value {
                kind,
                cursor,
                total,
                record,
                contacts,
            } => {
                let (len, max) = match record {
                    Some(r) if kind.len_ok(r.len()) && cursor < total => {
                        (r.len(), DHT_MAX_CONTACTS_WITH_RECORD)
                    }
                    None if cursor >= total => (0, DHT_MAX_CONTACTS),
                    _ => return Err(MessageError::Field("VALUE record")),
                };
                if contacts.len() > max {
                    return Err(MessageError::Field("VALUE contact count"));
                }
                out.extend_from_slice(&[*kind as u8, *cursor, *total, contacts.len() as u8]);
                out.extend_from_slice(&(len as u16).to_be_bytes());
                if let Some(r) = record {
                    out.extend_from_slice(r);
                }
                contacts.iter().for_each(|c| emit_contact(c, &mut out));
            }
            DhtMessage::Store { kind, record } => {
                if !kind.len_ok(record.len()) {
                    return Err(MessageError::Field("STORE record_len"));
                }
                out.extend_from_slice(&[*kind as u8, 0]);
                out.extend_from_slice(&(record.len() as u16).to_be_bytes());
                out.extend_from_slice(record);
            }
            DhtMessage::StoreResult { status } => out.push(*status as u8),
            DhtMessage::Error { code, max_version } => {
                out.extend_from_slice(&[*code as u8, *max_version]);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(i: u8) -> Contact {
        Contact {
            identity: ed25519_dalek::SigningKey::from_bytes(&[i; 32])
                .verifying_key()
                .to_bytes(),
            link_key: [i; 32],
            endpoint: format!("198.18.1.{i}:7412").parse().unwrap(),
        }
    }

    fn samples() -> Vec<DhtMessage> {
        vec![
            DhtMessage::FindNode { target: [7; 32] },
            DhtMessage::Nodes {
                contacts: (1..=8).map(contact).collect(),
            },
            DhtMessage::Nodes { contacts: vec![] },
            DhtMessage::FindValue {
                key: [1; 32],
                kind: RecordKind::Descriptor,
                cursor: 3,
            },
            DhtMessage::Value {
                kind: RecordKind::Descriptor,
                cursor: 0,
                total: 2,
                record: Some(vec![0xab; DESC_LEN]),
                contacts: (1..=4).map(contact).collect(),
            },
            DhtMessage::Value {
                kind: RecordKind::Relay,
                cursor: 0,
                total: 0,
                record: None,
                contacts: (1..=8).map(contact).collect(),
            },
            DhtMessage::Store {
                kind: RecordKind::Relay,
                record: vec![1; RELAY_RECORD_LEN],
            },
            DhtMessage::StoreResult {
                status: StoreStatus::NotResponsible,
            },
            DhtMessage::Error {
                code: ErrorCode::UnsupportedVersion,
                max_version: 1,
            },
        ]
    }

    #[test]
    fn round_trip() {
        for m in samples() {
            let b = m.emit().unwrap();
            assert_eq!(DhtMessage::parse(&b).unwrap(), m, "{m:?}");
            // Every truncation and one trailing byte are refused.
            for n in 0..b.len() {
                assert!(DhtMessage::parse(&b[..n]).is_err());
            }
            let mut long = b.clone();
            long.push(0);
            assert_eq!(
                DhtMessage::parse(&long).unwrap_err(),
                MessageError::Trailing
            );
        }
    }

    /// Claims in DHT messages, against `tests/vectors/make_name_claims.py` (Python, not this
    /// code), and the lengths a claim may have.
    #[test]
    fn claims_match_independent_vectors() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/vectors/name_claims.json")).unwrap();
        let v = |k: &str| hex::decode(doc["dht"][k].as_str().unwrap()).unwrap();
        let claim = hex::decode(doc["claims"][0]["claim"].as_str().unwrap()).unwrap();
        let key: Key = hex::decode(doc["claims"][0]["dht_key"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let store = DhtMessage::Store {
            kind: RecordKind::NameClaim,
            record: claim.clone(),
        };
        assert_eq!(store.emit().unwrap(), v("store_message"));
        assert_eq!(DhtMessage::parse(&v("store_message")).unwrap(), store);
        let find = DhtMessage::FindValue {
            key,
            kind: RecordKind::NameClaim,
            cursor: 0,
        };
        assert_eq!(find.emit().unwrap(), v("find_value_message"));
        let publish = crate::dht::lookup_msg::LookupRequest::parse(&v("lookup_publish")).unwrap();
        assert_eq!(publish.kind, Some(RecordKind::NameClaim));
        assert_eq!(publish.record, claim);
        assert_eq!(publish.emit(), v("lookup_publish"));
        let k = RecordKind::NameClaim;
        assert!(!k.len_ok(110) && k.len_ok(111) && k.len_ok(173) && !k.len_ok(174));
        let mut long = v("store_message");
        long.push(0);
        assert!(DhtMessage::parse(&long).is_err());
    }

    #[test]
    fn largest_message_is_the_documented_one() {
        let big = samples()[4].emit().unwrap();
        assert_eq!(big.len(), DHT_MESSAGE_MAX);
        assert_eq!(DHT_MESSAGE_MAX, 1264);
    }

    #[test]
    fn versions_and_types() {
        let mut b = samples()[0].emit().unwrap();
        b[0] = 2;
        let e = DhtMessage::parse(&b).unwrap_err();
        assert_eq!(e, MessageError::UnsupportedVersion(2));
        assert_eq!(
            e.reply().emit().unwrap(),
            vec![1, msg_type::ERROR, 0, 0, 1, 1]
        );
        let mut b = samples()[0].emit().unwrap();
        b[1] = 9;
        let e = DhtMessage::parse(&b).unwrap_err();
        assert_eq!(e, MessageError::UnknownType(9));
        assert!(matches!(
            e.reply(),
            DhtMessage::Error {
                code: ErrorCode::Malformed,
                ..
            }
        ));
        // Reserved bytes are ignored.
        let mut b = samples()[0].emit().unwrap();
        b[2] = 0xff;
        assert!(DhtMessage::parse(&b).is_ok());
    }

    #[test]
    fn bad_counts_and_lengths() {
        // 9 contacts in NODES.
        let mut b = vec![1, msg_type::NODES, 0, 0, 9];
        for i in 1..=9 {
            emit_contact(&contact(i), &mut b);
        }
        assert!(DhtMessage::parse(&b).is_err());
        // Wrong record length for the kind.
        let m = DhtMessage::Store {
            kind: RecordKind::Descriptor,
            record: vec![0; RELAY_RECORD_LEN],
        };
        assert!(m.emit().is_err());
        // A zero contact slot.
        let mut b = vec![1, msg_type::NODES, 0, 0, 1];
        b.extend_from_slice(&[0; CONTACT_LEN]);
        assert!(DhtMessage::parse(&b).is_err());
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..1400)) {
            if let Ok(m) = DhtMessage::parse(&bytes) {
                let again = m.emit().unwrap();
                proptest::prop_assert_eq!(DhtMessage::parse(&again).unwrap(), m);
            }
        }

        #[test]
        fn near_valid_never_panics(which in 0usize..9, idx in 0usize..1300, val in proptest::num::u8::ANY) {
            let mut b = samples()[which].emit().unwrap();
            if idx < b.len() {
                b[idx] = val;
            }
            let _ = DhtMessage::parse(&b);
        }
    }
}
