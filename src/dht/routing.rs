//! The Kademlia routing table (docs/protocol.md section 12.1).
//!
//! 256 buckets by shared-prefix length with the own node id, `DHT_K` live contacts each plus a
//! replacement cache of `DHT_REPLACEMENT_CACHE`. A stranger can try to fill it, so it is capped per
//! family prefix (`DHT_BUCKET_PER_PREFIX` per bucket, `DHT_TABLE_PER_PREFIX` in the table, counting
//! live and cached entries) and every entry holds a charge against the node's memory budget.
//! The caller inserts a contact only after a link to it completed HELLO with a valid record
//! carrying the `DHT` flag; this table does no I/O.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{
    distance, node_id, shared_prefix_len, Key, DHT_BUCKET_PER_PREFIX, DHT_EVICT_FAILURES, DHT_K,
    DHT_REPLACEMENT_CACHE, DHT_TABLE_PER_PREFIX,
};
use crate::budget::{Charge, MemoryBudget};
use crate::link::view::family_prefix;
use crate::time::Instant;
use crate::wire::record::Contact;

/// Approximate bytes one routing entry costs.
pub const ROUTING_ENTRY_COST: usize = 192;
/// Number of buckets.
pub const BUCKETS: usize = 256;

/// A family prefix as `family_prefix` returns it.
pub type Prefix = (u8, u128);

/// The family prefix of an address, with IPv4-mapped IPv6 addresses treated as IPv4.
pub fn prefix_of(ip: IpAddr, bits: (u8, u8)) -> Prefix {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    family_prefix(ip, bits.0, bits.1)
}

/// What `insert` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// A new live contact.
    Added,
    /// An existing contact was refreshed (endpoint and link key updated, failures reset).
    Updated,
    /// The bucket is full: kept in the replacement cache.
    Cached,
    /// Not kept.
    Refused(Refusal),
}

/// Why a contact was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It is this node.
    Own,
    /// `DHT_BUCKET_PER_PREFIX` reached in its bucket.
    BucketPrefix,
    /// `DHT_TABLE_PER_PREFIX` reached.
    TablePrefix,
    /// The memory budget is exhausted.
    Budget,
}

#[derive(Debug)]
struct Entry {
    contact: Contact,
    id: Key,
    prefix: Prefix,
    failures: u32,
    last_seen: Instant,
    _charge: Charge,
}

#[derive(Debug, Default)]
struct Bucket {
    live: Vec<Entry>,
    cache: Vec<Entry>,
}

/// The routing table of one DHT node.
#[derive(Debug)]
pub struct RoutingTable {
    own_id: Key,
    buckets: Vec<Bucket>,
    per_prefix: BTreeMap<Prefix, usize>,
    prefix_bits: (u8, u8),
    budget: MemoryBudget,
}

impl RoutingTable {
    /// An empty table for the node with this identity; `prefix_bits` are the family-prefix
    /// lengths (IPv4, IPv6) of 9.2.
    pub fn new(own_identity: &[u8; 32], prefix_bits: (u8, u8), budget: MemoryBudget) -> Self {
        RoutingTable {
            own_id: node_id(own_identity),
            buckets: (0..BUCKETS).map(|_| Bucket::default()).collect(),
            per_prefix: BTreeMap::new(),
            prefix_bits,
            budget,
        }
    }

    /// The own node id.
    pub fn own_id(&self) -> &Key {
        &self.own_id
    }

    fn bucket_of(&self, id: &Key) -> Option<usize> {
        let n = shared_prefix_len(&self.own_id, id);
        (n < BUCKETS).then_some(n)
    }

    fn find(&self, identity: &[u8; 32]) -> Option<(usize, bool, usize)> {
        let b = self.bucket_of(&node_id(identity))?;
        let bucket = self.buckets.get(b)?;
        if let Some(i) = bucket
            .live
            .iter()
            .position(|e| e.contact.identity == *identity)
        {
            return Some((b, true, i));
        }
        let i = bucket
            .cache
            .iter()
            .position(|e| e.contact.identity == *identity)?;
        Some((b, false, i))
    }

    /// Adds or refreshes a contact that just proved itself (HELLO with a `DHT` record, or an
    /// answered request).
    pub fn insert(&mut self, contact: Contact, now: Instant) -> Inserted {
        let id = node_id(&contact.identity);
        let Some(b) = self.bucket_of(&id) else {
            return Inserted::Refused(Refusal::Own);
        };
        let prefix = prefix_of(contact.endpoint.ip(), self.prefix_bits);
        if let Some((b, live, i)) = self.find(&contact.identity) {
            let old_prefix;
            {
                let Some(bucket) = self.buckets.get_mut(b) else {
                    return Inserted::Refused(Refusal::Own);
                };
                let list = if live {
                    &mut bucket.live
                } else {
                    &mut bucket.cache
                };
                let Some(e) = list.get_mut(i) else {
                    return Inserted::Refused(Refusal::Own);
                };
                old_prefix = e.prefix;
                if old_prefix == prefix {
                    e.contact = contact;
                    e.failures = 0;
                    e.last_seen = now;
                    return if live {
                        Inserted::Updated
                    } else {
                        Inserted::Cached
                    };
                }
            }
            // It moved to another prefix: re-admit it under the caps.
            let _ = old_prefix;
            self.remove(&contact.identity);
        }
        let in_bucket = self
            .buckets
            .get(b)
            .map(|bk| {
                bk.live
                    .iter()
                    .chain(&bk.cache)
                    .filter(|e| e.prefix == prefix)
                    .count()
            })
            .unwrap_or(0);
        if in_bucket >= DHT_BUCKET_PER_PREFIX {
            return Inserted::Refused(Refusal::BucketPrefix);
        }
        if self.per_prefix.get(&prefix).copied().unwrap_or(0) >= DHT_TABLE_PER_PREFIX {
            return Inserted::Refused(Refusal::TablePrefix);
        }
        let Some(charge) = self.budget.try_charge(ROUTING_ENTRY_COST) else {
            return Inserted::Refused(Refusal::Budget);
        };
        let entry = Entry {
            contact,
            id,
            prefix,
            failures: 0,
            last_seen: now,
            _charge: charge,
        };
        let Some(bucket) = self.buckets.get_mut(b) else {
            return Inserted::Refused(Refusal::Own);
        };
        let result = if bucket.live.len() < DHT_K {
            bucket.live.push(entry);
            Inserted::Added
        } else {
            if bucket.cache.len() >= DHT_REPLACEMENT_CACHE {
                // Keep the most recently seen candidates.
                let old = bucket.cache.remove(0);
                if let Some(n) = self.per_prefix.get_mut(&old.prefix) {
                    *n = n.saturating_sub(1);
                }
            }
            bucket.cache.push(entry);
            Inserted::Cached
        };
        *self.per_prefix.entry(prefix).or_insert(0) += 1;
        result
    }

    /// A request to this contact was answered.
    pub fn on_success(&mut self, identity: &[u8; 32], now: Instant) {
        if let Some((b, true, i)) = self.find(identity) {
            if let Some(e) = self.buckets.get_mut(b).and_then(|bk| bk.live.get_mut(i)) {
                e.failures = 0;
                e.last_seen = now;
            }
        }
    }

    /// A request to this contact failed (timeout or junk). After `DHT_EVICT_FAILURES`
    /// consecutive failures it is replaced from the cache; returns whether it was evicted.
    pub fn on_failure(&mut self, identity: &[u8; 32]) -> bool {
        let Some((b, live, i)) = self.find(identity) else {
            return false;
        };
        let failures = {
            let Some(bucket) = self.buckets.get_mut(b) else {
                return false;
            };
            let list = if live {
                &mut bucket.live
            } else {
                &mut bucket.cache
            };
            let Some(e) = list.get_mut(i) else {
                return false;
            };
            e.failures += 1;
            e.failures
        };
        if failures >= DHT_EVICT_FAILURES {
            self.remove(identity);
            true
        } else {
            false
        }
    }

    /// Removes a contact (and promotes the most recent cache entry into a freed live slot).
    pub fn remove(&mut self, identity: &[u8; 32]) -> bool {
        let Some((b, live, i)) = self.find(identity) else {
            return false;
        };
        let Some(bucket) = self.buckets.get_mut(b) else {
            return false;
        };
        let removed = if live {
            let e = bucket.live.remove(i);
            if let Some(promoted) = bucket.cache.pop() {
                bucket.live.push(promoted);
            }
            e
        } else {
            bucket.cache.remove(i)
        };
        if let Some(n) = self.per_prefix.get_mut(&removed.prefix) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_prefix.remove(&removed.prefix);
            }
        }
        true
    }

    /// Whether a live contact with this identity is in the table.
    pub fn contains(&self, identity: &[u8; 32]) -> bool {
        matches!(self.find(identity), Some((_, true, _)))
    }

    /// Live contacts.
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.live.len()).sum()
    }

    /// Whether there are no live contacts.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Contacts in replacement caches.
    pub fn cached(&self) -> usize {
        self.buckets.iter().map(|b| b.cache.len()).sum()
    }

    /// All live contacts.
    pub fn contacts(&self) -> impl Iterator<Item = &Contact> {
        self.buckets
            .iter()
            .flat_map(|b| b.live.iter().map(|e| &e.contact))
    }

    /// The `n` live contacts closest to `target`, closest first.
    pub fn closest(&self, target: &Key, n: usize) -> Vec<Contact> {
        let mut all: Vec<(Key, &Entry)> = self
            .buckets
            .iter()
            .flat_map(|b| b.live.iter())
            .map(|e| (distance(&e.id, target), e))
            .collect();
        all.sort_by_key(|a| a.0);
        all.into_iter().take(n).map(|(_, e)| e.contact).collect()
    }

    /// Whether this node is among the `DHT_K` closest to `key` of itself and its live contacts
    /// (the STORE responsibility rule of 12.4).
    pub fn is_responsible(&self, key: &Key) -> bool {
        let own = distance(&self.own_id, key);
        let closer = self
            .buckets
            .iter()
            .flat_map(|b| b.live.iter())
            .filter(|e| distance(&e.id, key) < own)
            .count();
        closer < DHT_K
    }

    /// Consecutive failures of a contact, if it is in the table.
    pub fn failures(&self, identity: &[u8; 32]) -> Option<u32> {
        let (b, live, i) = self.find(identity)?;
        let bucket = self.buckets.get(b)?;
        let list = if live { &bucket.live } else { &bucket.cache };
        list.get(i).map(|e| e.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn contact(seed: u32, ip: &str) -> Contact {
        let mut s = [0u8; 32];
        s[..4].copy_from_slice(&seed.to_be_bytes());
        Contact {
            identity: SigningKey::from_bytes(&s).verifying_key().to_bytes(),
            link_key: [1; 32],
            endpoint: format!("{ip}:7412").parse().unwrap(),
        }
    }

    fn table() -> RoutingTable {
        RoutingTable::new(
            &contact(0, "10.0.0.1").identity,
            (16, 32),
            MemoryBudget::new(1 << 20),
        )
    }

    #[test]
    fn caps_per_prefix() {
        let mut t = table();
        // Many contacts from one /16: at most 2 per bucket and 16 in total.
        let mut kept = 0;
        for i in 1..2000u32 {
            let c = contact(i, &format!("10.9.{}.{}", i / 250, i % 250 + 1));
            if matches!(
                t.insert(c, Instant::ZERO),
                Inserted::Added | Inserted::Cached
            ) {
                kept += 1;
            }
        }
        assert_eq!(kept, DHT_TABLE_PER_PREFIX);
        assert!(t
            .buckets
            .iter()
            .all(|b| b.live.len() + b.cache.len() <= DHT_BUCKET_PER_PREFIX));
    }

    #[test]
    fn buckets_cache_eviction_and_closest() {
        let mut t = table();
        for i in 1..3000u32 {
            let c = contact(i, &format!("{}.{}.0.1", i / 200 + 1, i % 200));
            t.insert(c, Instant::ZERO);
        }
        assert!(t
            .buckets
            .iter()
            .all(|b| b.live.len() <= DHT_K && b.cache.len() <= DHT_REPLACEMENT_CACHE));
        // Bucket 0 holds half the id space: full, with a cache.
        assert_eq!(t.buckets[0].live.len(), DHT_K);
        assert_eq!(t.buckets[0].cache.len(), DHT_REPLACEMENT_CACHE);
        let victim = t.buckets[0].live[0].contact.identity;
        let promoted = t.buckets[0].cache.last().unwrap().contact.identity;
        for _ in 0..DHT_EVICT_FAILURES - 1 {
            assert!(!t.on_failure(&victim));
        }
        assert!(t.on_failure(&victim));
        assert!(!t.contains(&victim));
        assert!(t.contains(&promoted));
        assert_eq!(t.buckets[0].live.len(), DHT_K);
        // A success resets the failure count.
        let other = t.buckets[0].live[0].contact.identity;
        t.on_failure(&other);
        t.on_success(&other, Instant::from_unix_ms(5));
        assert_eq!(t.failures(&other), Some(0));

        let target = [0x5a; 32];
        let c = t.closest(&target, 8);
        assert_eq!(c.len(), 8);
        let d: Vec<Key> = c
            .iter()
            .map(|c| distance(&node_id(&c.identity), &target))
            .collect();
        assert!(d.windows(2).all(|w| w[0] <= w[1]));
        // Nothing in the table is closer than the eighth result.
        let all = t.closest(&target, usize::MAX);
        assert_eq!(&all[..8], &c[..]);
        // The own id is refused.
        assert_eq!(
            t.insert(contact(0, "10.0.0.1"), Instant::ZERO),
            Inserted::Refused(Refusal::Own)
        );
        assert!(t.is_responsible(t.own_id()));
    }

    #[test]
    fn budget_is_charged_and_released() {
        let budget = MemoryBudget::new(ROUTING_ENTRY_COST * 3);
        let mut t = RoutingTable::new(&contact(0, "10.0.0.1").identity, (32, 128), budget.clone());
        for i in 1..10u32 {
            t.insert(contact(i, &format!("10.0.0.{}", i + 1)), Instant::ZERO);
        }
        assert_eq!(t.len() + t.cached(), 3);
        assert_eq!(budget.used(), 3 * ROUTING_ENTRY_COST);
        let id = t.contacts().next().unwrap().identity;
        t.remove(&id);
        assert_eq!(budget.used(), 2 * ROUTING_ENTRY_COST);
    }
}
