//! The DHT (docs/protocol.md sections 11 and 12; DESIGN.md section 7), as sans-IO modules.
//!
//! | module         | job                                                                  |
//! |----------------|----------------------------------------------------------------------|
//! | [`descriptor`] | epochs, descriptor index, key blinding, descriptor build/check/open   |
//! | [`message`]    | the DHT message format of 12.2 (`parse`/`emit`)                       |
//! | [`routing`]    | the Kademlia routing table with per-prefix caps (12.1)                |
//! | [`store`]      | record storage with no-rollback, signer and prefix caps (12.4, 11.5)  |
//! | [`lookup`]     | the iterative S/Kademlia lookup over disjoint paths (12.3)            |
//! | [`server`]     | answering FIND_NODE, FIND_VALUE and STORE (12.2, 12.4)               |
//! | [`relay`]      | a DHT relay: table, store, lookups and publications it runs (12.1-12.5) |
//! | [`lookup_msg`] | the DHT_LOOKUP / DHT_LOOKUP_REPLY payloads of circuits (12.6)        |
//! | [`host`]       | a relay node's DHT side: the relay over links, the last-hop role (12.6) |
//! | [`client`]     | the lookups a node asks for through its own circuits (12.6)          |
//!
//! Nothing here touches a socket or a clock: callers feed messages and the current time in and
//! get messages to send out. Nothing here learns or logs an overlay address of a service it
//! stores for; network bytes never cause a panic.

pub mod client;
pub mod desc_pow;
pub mod descriptor;
pub mod host;
pub mod lookup;
pub mod lookup_msg;
pub mod message;
pub mod relay;
pub mod routing;
pub mod server;
pub mod store;

use sha2::{Digest, Sha256};

use crate::crypto::labels::{LABEL_DHT_NODE_ID, LABEL_RELAY_DHT_KEY};

/// A 256-bit DHT node id or key.
pub type Key = [u8; 32];

/// Bucket size and shortlist length.
pub const DHT_K: usize = 8;
/// Parallel requests per lookup path.
pub const DHT_ALPHA: usize = 3;
/// Disjoint lookup paths.
pub const DHT_DISJOINT_PATHS: usize = 3;
/// Nodes a record is stored on.
pub const DHT_REPLICAS: usize = 5;
/// Rounds per lookup path.
pub const DHT_MAX_STEPS: usize = 20;
/// Timeout of one DHT request.
pub const DHT_RPC_TIMEOUT_MS: u64 = 2000;
/// Timeout of a whole lookup.
pub const DHT_LOOKUP_TIMEOUT_S: u64 = 10;
/// A FIND_VALUE lookup for relay records or descriptors ends this long after its first valid
/// record came (or earlier, when every path is done): the replicas that answer at all answer
/// within it, while the paths' last contacts, often waiting for dials or dead, took the lookup
/// to ~7.5 s where the first record came after ~0.35 s (docs/simulation.md, "DHT lookups:
/// hedged tries"). Name claims keep the full lookup (the lowest work hash must be found).
pub const DHT_VALUE_GRACE_MS: u64 = 1000;
/// Replacement cache per bucket.
pub const DHT_REPLACEMENT_CACHE: usize = 4;
/// Contacts per family prefix in one bucket.
pub const DHT_BUCKET_PER_PREFIX: usize = 2;
/// Contacts per family prefix in the whole table.
pub const DHT_TABLE_PER_PREFIX: usize = 16;
/// Nodes per family prefix in a lookup result.
pub const DHT_RESULT_PER_PREFIX: usize = 1;
/// Consecutive failed requests before a contact is evicted.
pub const DHT_EVICT_FAILURES: u32 = 3;
/// Records a node stores in total.
pub const DHT_STORE_MAX_RECORDS: usize = 65536;
/// Records stored on behalf of one source family prefix.
pub const DHT_STORE_PER_SOURCE_PREFIX: usize = 1024;

/// A node's DHT id: `H(LABEL_DHT_NODE_ID, identity)`.
pub fn node_id(identity: &[u8; 32]) -> Key {
    let mut h = Sha256::new();
    h.update(LABEL_DHT_NODE_ID);
    h.update(identity);
    h.finalize().into()
}

/// The DHT key of a relay's record: `H(LABEL_RELAY_DHT_KEY, identity)`.
pub fn relay_key(identity: &[u8; 32]) -> Key {
    let mut h = Sha256::new();
    h.update(LABEL_RELAY_DHT_KEY);
    h.update(identity);
    h.finalize().into()
}

/// XOR distance, compared as a big-endian integer (byte arrays compare lexicographically).
pub fn distance(a: &Key, b: &Key) -> Key {
    let mut d = [0u8; 32];
    for ((o, x), y) in d.iter_mut().zip(a).zip(b) {
        *o = x ^ y;
    }
    d
}

/// Length of the shared prefix of two ids in bits (256 if equal).
pub fn shared_prefix_len(a: &Key, b: &Key) -> usize {
    let mut n = 0;
    for (x, y) in a.iter().zip(b) {
        let z = x ^ y;
        if z == 0 {
            n += 8;
        } else {
            return n + z.leading_zeros() as usize;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    #[test]
    fn relay_record_keys_match_the_vectors() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/vectors/protocol.json")).unwrap();
        let v = &doc["relay_record"];
        let seed: [u8; 32] = unhex(v["identity_seed"].as_str().unwrap())
            .try_into()
            .unwrap();
        let identity = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        assert_eq!(
            relay_key(&identity).to_vec(),
            unhex(v["dht_key"].as_str().unwrap())
        );
        assert_eq!(
            node_id(&identity).to_vec(),
            unhex(v["dht_node_id"].as_str().unwrap())
        );
        // And from the record's own identity field.
        let rec = unhex(v["record"].as_str().unwrap());
        let id: [u8; 32] = rec[4..36].try_into().unwrap();
        assert_eq!(id, identity);
    }

    #[test]
    fn distances() {
        let a = [0u8; 32];
        let mut b = [0u8; 32];
        b[0] = 0x10;
        assert_eq!(shared_prefix_len(&a, &b), 3);
        assert_eq!(shared_prefix_len(&a, &a), 256);
        b[0] = 0;
        b[31] = 1;
        assert_eq!(shared_prefix_len(&a, &b), 255);
        assert_eq!(distance(&a, &b), b);
    }
}
