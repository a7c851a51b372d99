//! The relay view: verified relay records a node knows, for linking and path selection
//! (docs/protocol.md section 9.1).
//!
//! A stranger can fill this table (PEX answers, HELLOs), so it is capped in three ways: a total
//! (`VIEW_MAX`), a cap per family prefix (`VIEW_MAX_PER_PREFIX`, so one operator with one subnet
//! cannot flood it), and, once three sources have answered, a cap on what any one source may
//! contribute (a third), so no single bootstrap or neighbour decides what a node sees. Every entry
//! holds a charge against the node's memory budget.

use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use crate::budget::{Charge, MemoryBudget};
use crate::time::Instant;
use crate::wire::record::RelayRecord;

/// Records in the view.
pub const VIEW_MAX: usize = 512;
/// Records per family prefix.
pub const VIEW_MAX_PER_PREFIX: usize = 2;
/// Sources needed before the view counts as diverse.
pub const VIEW_MIN_SOURCES: usize = 3;
/// Approximate bytes one entry costs (record, parsed fields, map overhead).
pub const VIEW_ENTRY_COST: usize = 1024;

/// Where a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// From the relay itself, over a link with it (HELLO or bootstrap query).
    Itself,
    /// From a neighbour's PEX answer (the neighbour's identity).
    Pex([u8; 32]),
    /// From a DHT SAMPLE answered by the last hop of one of our circuits (its identity).
    Dht([u8; 32]),
}

/// The family prefix of an address: IPv4 addresses masked to `v4` bits, IPv6 to `v6` bits.
pub fn family_prefix(ip: IpAddr, v4: u8, v6: u8) -> (u8, u128) {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let mask = if v4 == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(v4.min(32)))
            };
            (4, u128::from(bits & mask))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let mask = if v6 == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(v6.min(128)))
            };
            (6, bits & mask)
        }
    }
}

/// Why a record was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Older than the one we hold (no rollback).
    Rollback,
    /// Its family prefix is full.
    PrefixFull,
    /// Its source already contributes its share.
    SourceShare,
    /// The memory budget is exhausted.
    Budget,
    /// It is our own record.
    Own,
}

struct Entry {
    record: RelayRecord,
    first_source: Source,
    refreshed: Instant,
    prefix: (u8, u128),
    _charge: Charge,
}

/// The view.
pub struct RelayView {
    own: [u8; 32],
    entries: BTreeMap<[u8; 32], Entry>,
    prefix_bits: (u8, u8),
    max: usize,
    budget: MemoryBudget,
    /// Counts kept with the entries, so that the caps and the diversity check on every insert
    /// (and every path selection) do not walk the whole view (issue #25: at 1,000 nodes these
    /// walks were a tenth of the run's time).
    index: Index,
}

#[derive(Default)]
struct Index {
    per_prefix: BTreeMap<(u8, u128), usize>,
    per_source: BTreeMap<Source, usize>,
    /// Entries per vouching relay (PEX and DHT from one relay count as one source).
    per_voucher: BTreeMap<[u8; 32], usize>,
    direct: usize,
    /// (link key, identity): which relay a link key belongs to.
    link_keys: BTreeSet<([u8; 32], [u8; 32])>,
}

fn bump<K: Ord>(m: &mut BTreeMap<K, usize>, k: K, add: bool) {
    if add {
        *m.entry(k).or_default() += 1;
    } else if let Some(n) = m.get_mut(&k) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            m.remove(&k);
        }
    }
}

impl Index {
    fn source(&mut self, s: Source, add: bool) {
        bump(&mut self.per_source, s, add);
        match s {
            Source::Itself if add => self.direct += 1,
            Source::Itself => self.direct = self.direct.saturating_sub(1),
            Source::Pex(k) | Source::Dht(k) => bump(&mut self.per_voucher, k, add),
        }
    }

    fn entry(&mut self, id: &[u8; 32], e: &Entry, add: bool) {
        bump(&mut self.per_prefix, e.prefix, add);
        self.source(e.first_source, add);
        let k = (e.record.fields().link_key, *id);
        if add {
            self.link_keys.insert(k);
        } else {
            self.link_keys.remove(&k);
        }
    }
}

impl RelayView {
    /// An empty view for the node with identity `own`.
    pub fn new(own: [u8; 32], prefix_bits: (u8, u8), budget: MemoryBudget) -> RelayView {
        RelayView {
            own,
            entries: BTreeMap::new(),
            prefix_bits,
            max: VIEW_MAX,
            budget,
            index: Index::default(),
        }
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the view is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A record by identity.
    pub fn get(&self, identity: &[u8; 32]) -> Option<&RelayRecord> {
        self.entries.get(identity).map(|e| &e.record)
    }

    /// Distinct sources that contributed records: each neighbour whose PEX answers we kept, and
    /// each relay whose record came from itself (it vouches only for itself).
    pub fn sources(&self) -> usize {
        // A relay vouching through PEX or through the DHT is one source either way.
        self.index.per_voucher.len() + self.index.direct
    }

    /// The record whose link key is `link_key` (the one with the smallest identity if several
    /// claim it).
    pub fn by_link_key(&self, link_key: &[u8; 32]) -> Option<&RelayRecord> {
        let (_, id) = self
            .index
            .link_keys
            .range((*link_key, [0u8; 32])..)
            .next()
            .filter(|(k, _)| k == link_key)?;
        self.get(id)
    }

    fn prefix_of(&self, r: &RelayRecord) -> (u8, u128) {
        let ip = r
            .fields()
            .endpoints
            .first()
            .map_or(IpAddr::from([0u8; 4]), SocketAddr::ip);
        family_prefix(ip, self.prefix_bits.0, self.prefix_bits.1)
    }

    /// Adds or refreshes a verified record.
    pub fn insert(
        &mut self,
        record: RelayRecord,
        source: Source,
        now: Instant,
    ) -> Result<(), Refused> {
        let id = *record.identity();
        if id == self.own {
            return Err(Refused::Own);
        }
        if let Some(e) = self.entries.get_mut(&id) {
            if record.fields().seq < e.record.fields().seq {
                return Err(Refused::Rollback);
            }
            self.index.entry(&id, e, false);
            e.record = record;
            e.refreshed = now;
            if source == Source::Itself {
                e.first_source = Source::Itself;
            }
            self.index.entry(&id, e, true);
            return Ok(());
        }
        let prefix = self.prefix_of(&record);
        if self.index.per_prefix.get(&prefix).copied().unwrap_or(0) >= VIEW_MAX_PER_PREFIX {
            return Err(Refused::PrefixFull);
        }
        if let Source::Pex(_) | Source::Dht(_) = source {
            if self.sources() >= VIEW_MIN_SOURCES {
                let mine = self.index.per_source.get(&source).copied().unwrap_or(0);
                if (mine + 1) * 3 > self.entries.len() + 1 {
                    return Err(Refused::SourceShare);
                }
            }
        }
        if self.entries.len() >= self.max {
            self.evict_oldest();
        }
        let charge = match self.budget.try_charge(VIEW_ENTRY_COST) {
            Some(c) => c,
            None => {
                self.evict_oldest();
                self.budget
                    .try_charge(VIEW_ENTRY_COST)
                    .ok_or(Refused::Budget)?
            }
        };
        let e = Entry {
            record,
            first_source: source,
            refreshed: now,
            prefix,
            _charge: charge,
        };
        self.index.entry(&id, &e, true);
        self.entries.insert(id, e);
        Ok(())
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .entries
            .iter()
            .min_by_key(|(_, e)| e.refreshed)
            .map(|(k, _)| *k);
        if let Some(k) = oldest {
            self.remove(&k);
        }
    }

    /// Drops expired records.
    pub fn prune(&mut self, now: Instant) {
        let now_s = now.as_unix_ms() / 1000;
        let index = &mut self.index;
        self.entries.retain(|id, e| {
            let keep = e.record.fields().expires > now_s;
            if !keep {
                index.entry(id, e, false);
            }
            keep
        });
    }

    /// Removes a relay.
    pub fn remove(&mut self, identity: &[u8; 32]) {
        if let Some(e) = self.entries.remove(identity) {
            self.index.entry(identity, &e, false);
        }
    }

    /// Up to `n` random records, none of them `exclude`.
    pub fn sample<R: Rng>(
        &self,
        n: usize,
        exclude: Option<&[u8; 32]>,
        rng: &mut R,
    ) -> Vec<&RelayRecord> {
        let mut all: Vec<&RelayRecord> = self
            .entries
            .values()
            .map(|e| &e.record)
            .filter(|r| Some(r.identity()) != exclude)
            .collect();
        // Sort first so that the same seed gives the same sample whatever the map's order.
        all.sort_by_key(|r| *r.identity());
        all.shuffle(rng);
        all.truncate(n);
        all
    }

    /// Every record.
    pub fn iter(&self) -> impl Iterator<Item = &RelayRecord> {
        self.entries.values().map(|e| &e.record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::record::{NatClass, RecordFields, FLAG_RELAY};
    use ed25519_dalek::SigningKey;
    use rand::SeedableRng;

    const NOW: Instant = Instant::from_unix_ms(1_800_000_000_000);

    fn rec(seed: u8, ip: &str, seq: u64) -> RelayRecord {
        let key = SigningKey::from_bytes(&[seed; 32]);
        RelayRecord::sign(
            &key,
            RecordFields {
                flags: FLAG_RELAY,
                nat: NatClass::Public,
                link_key: [seed; 32],
                onion_key: [seed; 32],
                seq,
                expires: NOW.as_unix_ms() / 1000 + 3600,
                endpoints: vec![format!("{ip}:7412").parse().unwrap()],
                introducers: vec![],
            },
        )
        .unwrap()
    }

    #[test]
    fn caps_and_rollback() {
        let budget = MemoryBudget::new(1 << 20);
        let mut v = RelayView::new([0; 32], (16, 32), budget.clone());
        v.insert(rec(1, "10.1.0.1", NOW.as_unix_ms()), Source::Itself, NOW)
            .unwrap();
        v.insert(rec(2, "10.1.0.2", NOW.as_unix_ms()), Source::Itself, NOW)
            .unwrap();
        assert_eq!(
            v.insert(rec(3, "10.1.9.9", NOW.as_unix_ms()), Source::Itself, NOW),
            Err(Refused::PrefixFull)
        );
        v.insert(rec(3, "10.2.0.1", NOW.as_unix_ms()), Source::Itself, NOW)
            .unwrap();
        // No rollback; a newer record replaces.
        assert_eq!(
            v.insert(
                rec(1, "10.1.0.1", (NOW - 1).as_unix_ms()),
                Source::Itself,
                NOW
            ),
            Err(Refused::Rollback)
        );
        v.insert(
            rec(1, "10.1.0.1", (NOW + 1).as_unix_ms()),
            Source::Itself,
            NOW,
        )
        .unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(budget.used(), 3 * VIEW_ENTRY_COST);
        v.prune(NOW + 3601 * 1000);
        assert!(v.is_empty());
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn one_source_cannot_dominate() {
        let mut v = RelayView::new([0; 32], (32, 128), MemoryBudget::new(1 << 20));
        let (a, b, c) = (
            Source::Pex([1; 32]),
            Source::Pex([2; 32]),
            Source::Pex([3; 32]),
        );
        v.insert(rec(1, "10.0.0.1", NOW.as_unix_ms()), a, NOW)
            .unwrap();
        v.insert(rec(2, "10.0.0.2", NOW.as_unix_ms()), b, NOW)
            .unwrap();
        v.insert(rec(3, "10.0.0.3", NOW.as_unix_ms()), c, NOW)
            .unwrap();
        let mut refused = 0;
        for i in 4..40u8 {
            if v.insert(rec(i, &format!("10.0.1.{i}"), NOW.as_unix_ms()), a, NOW)
                .is_err()
            {
                refused += 1;
            }
        }
        assert!(
            refused > 30,
            "source a got {} of {}",
            40 - 4 - refused,
            v.len()
        );
    }

    #[test]
    fn budget_evicts_oldest() {
        let budget = MemoryBudget::new(2 * VIEW_ENTRY_COST);
        let mut v = RelayView::new([0; 32], (32, 128), budget.clone());
        v.insert(rec(1, "10.0.0.1", NOW.as_unix_ms()), Source::Itself, NOW)
            .unwrap();
        v.insert(
            rec(2, "10.0.0.2", NOW.as_unix_ms()),
            Source::Itself,
            NOW + 1,
        )
        .unwrap();
        v.insert(
            rec(3, "10.0.0.3", NOW.as_unix_ms()),
            Source::Itself,
            NOW + 2,
        )
        .unwrap();
        assert_eq!(v.len(), 2);
        assert!(v
            .get(&SigningKey::from_bytes(&[1; 32]).verifying_key().to_bytes())
            .is_none());
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(v.sample(5, None, &mut rng).len(), 2);
    }

    #[test]
    fn counts_follow_inserts_refreshes_and_removals() {
        let mut v = RelayView::new([0; 32], (32, 128), MemoryBudget::new(1 << 20));
        let (a, b) = (Source::Pex([1; 32]), Source::Dht([1; 32]));
        v.insert(rec(1, "10.0.0.1", NOW.as_unix_ms()), a, NOW)
            .unwrap();
        v.insert(rec(2, "10.0.0.2", NOW.as_unix_ms()), b, NOW)
            .unwrap();
        // PEX and DHT from one relay are one source.
        assert_eq!(v.sources(), 1);
        v.insert(rec(3, "10.0.0.3", NOW.as_unix_ms()), Source::Itself, NOW)
            .unwrap();
        assert_eq!(v.sources(), 2);
        // A refresh from the relay itself makes it direct.
        v.insert(
            rec(1, "10.0.0.1", NOW.as_unix_ms() + 1),
            Source::Itself,
            NOW,
        )
        .unwrap();
        assert_eq!(v.sources(), 3);
        let id1 = *rec(1, "10.0.0.1", 0).identity();
        assert_eq!(v.by_link_key(&[1; 32]).map(|r| *r.identity()), Some(id1));
        assert!(v.by_link_key(&[9; 32]).is_none());
        v.remove(&id1);
        assert!(v.by_link_key(&[1; 32]).is_none());
        assert_eq!(v.sources(), 2);
        v.prune(NOW + 3601 * 1000);
        assert_eq!(v.sources(), 0);
        // The prefix cap counts only what is held.
        for i in 1..=2u8 {
            v.insert(
                rec(i, "10.0.0.9", NOW.as_unix_ms() + 5),
                Source::Itself,
                NOW,
            )
            .unwrap();
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            family_prefix("10.1.2.3".parse().unwrap(), 16, 32),
            (4, 0x0a01_0000)
        );
        assert_eq!(
            family_prefix("2001:db8:1::1".parse().unwrap(), 16, 32).1,
            0x2001_0db8u128 << 96
        );
        assert_eq!(
            family_prefix("10.1.2.3".parse().unwrap(), 32, 128).1,
            0x0a01_0203
        );
    }
}
