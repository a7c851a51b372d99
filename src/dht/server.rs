//! The responder side of the DHT (docs/protocol.md sections 12.2 and 12.4): one request in, one
//! reply out, from the node's routing table and store. Sans-IO: the daemon hands it the bytes of
//! a DHT_REQUEST frame, the source address and the time, and sends back what it returns.

use rand::Rng;
use std::net::IpAddr;

use super::message::{DhtMessage, StoreStatus, DHT_MAX_CONTACTS, DHT_MAX_CONTACTS_WITH_RECORD};
use super::routing::{prefix_of, RoutingTable};
use super::store::{checked_key, Store};
use crate::time::Instant;

/// Answers one request; `None` for bytes that parse as a reply (never answered).
pub fn respond<R: Rng>(
    table: &RoutingTable,
    store: &mut Store,
    request: &[u8],
    source: IpAddr,
    prefix_bits: (u8, u8),
    now_ms: Instant,
    rng: &mut R,
) -> Option<DhtMessage> {
    let msg = match DhtMessage::parse(request) {
        Ok(m) => m,
        Err(e) => return Some(e.reply()),
    };
    Some(match msg {
        DhtMessage::FindNode { target } => DhtMessage::Nodes {
            contacts: table.closest(&target, DHT_MAX_CONTACTS),
        },
        DhtMessage::FindValue { key, kind, cursor } => {
            let (total, record) = store.get(&key, kind, cursor, now_ms);
            let n = if record.is_some() {
                DHT_MAX_CONTACTS_WITH_RECORD
            } else {
                DHT_MAX_CONTACTS
            };
            DhtMessage::Value {
                kind,
                cursor,
                total,
                record: record.map(<[u8]>::to_vec),
                contacts: table.closest(&key, n),
            }
        }
        DhtMessage::Store { kind, record } => {
            let status = match checked_key(kind, &record, now_ms) {
                None => StoreStatus::Invalid,
                Some((key, _, _)) if !table.is_responsible(&key) => StoreStatus::NotResponsible,
                Some(_) => store.store(kind, &record, prefix_of(source, prefix_bits), now_ms, rng),
            };
            DhtMessage::StoreResult { status }
        }
        _ => return None,
    })
}
