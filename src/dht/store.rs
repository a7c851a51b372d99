//! Record storage of a DHT node (docs/protocol.md sections 12.4 and 11.5).
//!
//! Relay records are kept under `H(LABEL_RELAY_DHT_KEY, identity)`, one per identity (highest
//! `seq`); descriptors under their `index`, at most `DESC_MAX_SIGNERS_PER_INDEX` signers per index
//! with no rollback per (index, signer) and the new-signer interval rule. Totals are capped
//! (`DHT_STORE_MAX_RECORDS`, `DHT_STORE_PER_SOURCE_PREFIX` per source family prefix) and every
//! record holds a charge against the memory budget. Records are dropped at `expires`.
//!
//! At the total cap a new record is not simply refused (an attacker with circuits through many
//! last hops could fill the store and lock out every later publisher): the source holding the
//! most records pays, with its record farthest from this node's id (oldest revision on a tie).
//! A source smaller than the largest always gets its record in; one of the largest only when its
//! record is nearer than that victim. Honest records are the ones this node is responsible for,
//! so they cluster near its id, and pushing one out takes keys ground nearer still.
//!
//! The store keeps exactly the record bytes a STORE carried plus the source prefix: never an
//! address or a service key (it never sees one), and nothing that repeats across epochs.
//! The responsibility rule (status 4) needs the routing table and is checked by the caller
//! ([`crate::dht::server`]).

use rand::Rng;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use super::descriptor::{Descriptor, DESC_MAX_SIGNERS_PER_INDEX, DESC_NEW_SIGNER_INTERVAL_S};
use super::message::{RecordKind, StoreStatus};
use super::routing::Prefix;
use super::{distance, relay_key, Key, DHT_STORE_MAX_RECORDS, DHT_STORE_PER_SOURCE_PREFIX};
use crate::budget::{Charge, MemoryBudget};
use crate::names::claim::{self, Claim, KEEP_PER_NAME};
use crate::time::Instant;
use crate::wire::record::RelayRecord;

/// Approximate bytes one stored record costs beyond its bytes (parsed fields, map overhead and
/// its entry in the eviction order).
pub const STORE_ENTRY_OVERHEAD: usize = 256;
/// Sources tied for the most records whose farthest record is looked at when choosing what to
/// evict (bounds the work of one STORE when many sources hold the same count).
const EVICT_TIED_SOURCES: usize = 64;

/// Where a record stands in the eviction order of its source: greater goes first (farther
/// from the node's id, then older revision; the signer only makes entries unique).
type Rank = (Key, Reverse<u64>, [u8; 32]);

#[derive(Debug)]
struct Stored {
    bytes: Vec<u8>,
    signer: [u8; 32],
    version: u64,
    expires: u64,
    /// A claim's work hash (lower is more work); zero for the other kinds.
    work: [u8; 32],
    source: Prefix,
    _charge: Charge,
}

#[derive(Debug)]
struct Slot {
    kind: RecordKind,
    records: Vec<Stored>,
    last_new_signer_s: Option<u64>,
}

impl Default for Slot {
    fn default() -> Slot {
        Slot {
            kind: RecordKind::Descriptor,
            records: Vec::new(),
            last_new_signer_s: None,
        }
    }
}

/// The records one DHT node stores for others.
#[derive(Debug)]
pub struct Store {
    own_id: Key,
    slots: BTreeMap<Key, Slot>,
    total: usize,
    shares: Shares,
    budget: MemoryBudget,
    stats_evicted: u64,
}

/// What each source holds: counts for the per-source cap, and the order in which the largest
/// source's records are evicted at the total cap.
#[derive(Debug, Default)]
struct Shares {
    count: BTreeMap<Prefix, usize>,
    by_count: BTreeSet<(usize, Prefix)>,
    ranked: BTreeMap<Prefix, BTreeSet<Rank>>,
}

impl Shares {
    fn held(&self, source: &Prefix) -> usize {
        self.count.get(source).copied().unwrap_or(0)
    }

    fn set_count(&mut self, source: Prefix, old: usize, new: usize) {
        self.by_count.remove(&(old, source));
        if new == 0 {
            self.count.remove(&source);
        } else {
            self.count.insert(source, new);
            self.by_count.insert((new, source));
        }
    }

    fn add(&mut self, source: Prefix, rank: Rank) {
        let n = self.held(&source);
        self.set_count(source, n, n + 1);
        self.ranked.entry(source).or_default().insert(rank);
    }

    fn remove(&mut self, source: Prefix, rank: &Rank) {
        let n = self.held(&source);
        self.set_count(source, n, n.saturating_sub(1));
        if let Some(r) = self.ranked.get_mut(&source) {
            r.remove(rank);
            if r.is_empty() {
                self.ranked.remove(&source);
            }
        }
    }

    /// The record to evict at the total cap: the farthest (then oldest) record among the
    /// sources holding the most, with its source and how many that source holds.
    fn victim(&self) -> Option<(Prefix, usize, Rank)> {
        let &(most, _) = self.by_count.last()?;
        self.by_count
            .iter()
            .rev()
            .take_while(|(n, _)| *n == most)
            .take(EVICT_TIED_SOURCES)
            .filter_map(|(_, src)| {
                let r = self.ranked.get(src)?.last()?;
                Some((*src, most, *r))
            })
            .max_by(|a, b| a.2.cmp(&b.2))
    }
}

/// A record checked for storage: its key, signer and version (seq, revision or claim epoch).
struct Checked {
    key: Key,
    signer: [u8; 32],
    version: u64,
    expires: u64,
    work: [u8; 32],
}

fn check(kind: RecordKind, bytes: &[u8], now_ms: Instant) -> Option<Checked> {
    match kind {
        RecordKind::Relay => {
            let r = RelayRecord::parse(bytes, now_ms.as_unix_ms()).ok()?;
            Some(Checked {
                key: relay_key(r.identity()),
                signer: *r.identity(),
                version: r.fields().seq,
                expires: r.fields().expires,
                work: [0; 32],
            })
        }
        RecordKind::Descriptor => {
            let d = Descriptor::parse(bytes, now_ms.as_unix_ms()).ok()?;
            Some(Checked {
                key: *d.index(),
                signer: *d.blinded_key(),
                version: d.revision(),
                expires: d.expires(),
                work: [0; 32],
            })
        }
        RecordKind::NameClaim => {
            let c = Claim::decode_at(bytes, now_ms.as_unix_ms()).ok()?;
            Some(Checked {
                key: claim::dht_key(&c.name),
                signer: c.key,
                version: u64::from(c.epoch),
                expires: c.expires_s(),
                work: c.work_hash(),
            })
        }
    }
}

/// The DHT key, signer and version of a record that passes the storage checks, for lookups that
/// collect records (12.3): `None` if it fails them.
pub fn checked_key(
    kind: RecordKind,
    bytes: &[u8],
    now_ms: Instant,
) -> Option<(Key, [u8; 32], u64)> {
    check(kind, bytes, now_ms).map(|c| (c.key, c.signer, c.version))
}

impl Store {
    /// An empty store of the node with DHT id `own_id`, charged to `budget`.
    pub fn new(own_id: Key, budget: MemoryBudget) -> Store {
        Store {
            own_id,
            slots: BTreeMap::new(),
            total: 0,
            shares: Shares::default(),
            budget,
            stats_evicted: 0,
        }
    }

    fn rank(&self, key: &Key, version: u64, signer: [u8; 32]) -> Rank {
        (distance(&self.own_id, key), Reverse(version), signer)
    }

    /// Drops one record (an eviction at the total cap).
    fn evict(&mut self, source: Prefix, rank: &Rank) {
        let key = distance(&self.own_id, &rank.0);
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        let before = slot.records.len();
        slot.records
            .retain(|s| !(s.signer == rank.2 && s.version == rank.1 .0));
        let removed = before - slot.records.len();
        if slot.records.is_empty() {
            self.slots.remove(&key);
        }
        if removed > 0 {
            self.total -= removed;
            self.shares.remove(source, rank);
        }
    }

    /// Applies a STORE of `bytes` from a source in family prefix `source` (responsibility already
    /// checked by the caller).
    pub fn store<R: Rng>(
        &mut self,
        kind: RecordKind,
        bytes: &[u8],
        source: Prefix,
        now_ms: Instant,
        rng: &mut R,
    ) -> StoreStatus {
        if !kind.len_ok(bytes.len()) {
            return StoreStatus::Invalid;
        }
        let Some(c) = check(kind, bytes, now_ms) else {
            return StoreStatus::Invalid;
        };
        self.expire_key(&c.key, now_ms);
        let now_s = now_ms.as_unix_ms() / 1000;
        let relay = kind == RecordKind::Relay;
        let (existing, n_records, rate_ok, kind_clash, weakest) = match self.slots.get(&c.key) {
            Some(slot) => (
                slot.records.iter().position(|s| s.signer == c.signer),
                slot.records.len(),
                slot.last_new_signer_s
                    .is_none_or(|t| now_s >= t + DESC_NEW_SIGNER_INTERVAL_S),
                slot.kind != kind,
                slot.records
                    .iter()
                    .enumerate()
                    .max_by_key(|(_, s)| s.work)
                    .map(|(i, s)| (i, s.work)),
            ),
            None => (None, 0, true, false, None),
        };
        if kind_clash {
            // Keys of two kinds (hashes under different labels) collide only by a SHA-256
            // collision.
            return StoreStatus::Invalid;
        }
        // Where the record goes: replacing the same signer, a random signer, or a new slot.
        let replace = match existing {
            Some(i) => {
                let Some(old) = self.slots.get(&c.key).and_then(|s| s.records.get(i)) else {
                    return StoreStatus::Invalid;
                };
                if c.version < old.version || (c.version == old.version && old.bytes != bytes) {
                    return StoreStatus::Stale;
                }
                if c.version == old.version {
                    return StoreStatus::Stored;
                }
                Some(i)
            }
            None if kind == RecordKind::NameClaim => {
                // The claims that could win are kept: a new key takes the place of the claim
                // with the least work, and only with more work than it (protocol.md 18.3).
                match weakest {
                    Some((i, w)) if n_records >= KEEP_PER_NAME => {
                        if c.work >= w {
                            return StoreStatus::Stale;
                        }
                        Some(i)
                    }
                    _ => None,
                }
            }
            None => {
                let cap = if relay { 1 } else { DESC_MAX_SIGNERS_PER_INDEX };
                if n_records >= cap {
                    if relay || !rate_ok {
                        return StoreStatus::Full;
                    }
                    Some(rng.gen_range(0..n_records))
                } else {
                    None
                }
            }
        };
        // A source replacing a record it stored itself does not grow its share.
        let same_source = replace
            .and_then(|i| self.slots.get(&c.key).and_then(|s| s.records.get(i)))
            .is_some_and(|old| old.source == source);
        let held = self.shares.held(&source);
        if !same_source && held >= DHT_STORE_PER_SOURCE_PREFIX {
            return StoreStatus::Full;
        }
        let rank = self.rank(&c.key, c.version, c.signer);
        let mut victim = None;
        if replace.is_none() && self.total >= DHT_STORE_MAX_RECORDS {
            let Some((v_source, most, v_rank)) = self.shares.victim() else {
                return StoreStatus::Full;
            };
            // A source smaller than the largest (even after this record and the eviction) takes
            // from the largest; one of the largest only displaces a farther or older record.
            if held + 2 > most && rank >= v_rank {
                return StoreStatus::Full;
            }
            victim = Some((v_source, v_rank));
        }
        let Some(charge) = self.budget.try_charge(bytes.len() + STORE_ENTRY_OVERHEAD) else {
            return StoreStatus::Full;
        };
        if let Some((v_source, v_rank)) = victim {
            self.stats_evicted += 1;
            self.evict(v_source, &v_rank);
        }
        let new = Stored {
            bytes: bytes.to_vec(),
            signer: c.signer,
            version: c.version,
            expires: c.expires,
            work: c.work,
            source,
            _charge: charge,
        };
        let slot = self.slots.entry(c.key).or_insert_with(|| Slot {
            kind,
            ..Slot::default()
        });
        if existing.is_none()
            && n_records >= DESC_MAX_SIGNERS_PER_INDEX
            && kind == RecordKind::Descriptor
        {
            slot.last_new_signer_s = Some(now_s);
        }
        match replace.and_then(|i| slot.records.get_mut(i)) {
            Some(old) => {
                let old_source = old.source;
                let old_rank = (rank.0, Reverse(old.version), old.signer);
                *old = new;
                self.shares.remove(old_source, &old_rank);
            }
            None => {
                slot.records.push(new);
                self.total += 1;
            }
        }
        self.shares.add(source, rank);
        StoreStatus::Stored
    }

    fn expire_key(&mut self, key: &Key, now_ms: Instant) {
        let now_s = now_ms.as_unix_ms() / 1000;
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let shares = &mut self.shares;
        let dist = distance(&self.own_id, key);
        let before = slot.records.len();
        slot.records.retain(|s| {
            let keep = s.expires > now_s;
            if !keep {
                shares.remove(s.source, &(dist, Reverse(s.version), s.signer));
            }
            keep
        });
        self.total -= before - slot.records.len();
        if slot.records.is_empty() {
            self.slots.remove(key);
        }
    }

    /// Drops every record whose `expires` has passed.
    pub fn expire(&mut self, now_ms: Instant) {
        let keys: Vec<Key> = self.slots.keys().copied().collect();
        for k in keys {
            self.expire_key(&k, now_ms);
        }
    }

    /// The FIND_VALUE answer for `key`: how many unexpired records of `kind` are held and the one
    /// at `cursor`, if any.
    pub fn get(
        &self,
        key: &Key,
        kind: RecordKind,
        cursor: u8,
        now_ms: Instant,
    ) -> (u8, Option<&[u8]>) {
        let now_s = now_ms.as_unix_ms() / 1000;
        let Some(slot) = self.slots.get(key) else {
            return (0, None);
        };
        if slot.kind != kind {
            return (0, None);
        }
        let live: Vec<&Stored> = slot.records.iter().filter(|s| s.expires > now_s).collect();
        let total = u8::try_from(live.len()).unwrap_or(u8::MAX);
        (
            total,
            live.get(usize::from(cursor)).map(|s| s.bytes.as_slice()),
        )
    }

    /// Records evicted at the total cap to make room for others.
    pub fn evicted(&self) -> u64 {
        self.stats_evicted
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Bytes of record data held.
    pub fn bytes_stored(&self) -> usize {
        self.slots
            .values()
            .flat_map(|s| s.records.iter())
            .map(|r| r.bytes.len())
            .sum()
    }

    /// Everything the store holds, as a database dump would show it: each key and its records'
    /// bytes (for tests that check what a storage node learns).
    pub fn dump(&self) -> Vec<(Key, Vec<u8>)> {
        self.slots
            .iter()
            .flat_map(|(k, s)| s.records.iter().map(move |r| (*k, r.bytes.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests;
