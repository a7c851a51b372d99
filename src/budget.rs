//! One memory budget for every queue and table a stranger can fill (DESIGN.md section 4).
//!
//! Every entry that a remote party can make us keep (a link being set up, a relay record, a queued
//! cell, a relayed circuit, a DHT record, ...) holds a [`Charge`] for its approximate size. When a
//! charge would exceed the budget it is refused; a table that can tell who fills it then evicts
//! from its own largest consumer (the upstream link holding the most of it) and tries again, and
//! every other table refuses the new entry (protocol.md section 15, "Memory pressure", lists what
//! each table does). Evicting the longest-idle entry instead would hand the memory to whoever
//! keeps its own entries fresh, which is exactly a flooder. Dropping an entry drops its charge, so
//! the accounting cannot drift.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Default budget (protocol.md section 15, `MEMORY_BUDGET`).
pub const DEFAULT_MEMORY_BUDGET: usize = 256 << 20;

/// A shared budget; clones share the same account.
#[derive(Clone, Debug)]
pub struct MemoryBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limit: usize,
    used: AtomicUsize,
    refused: AtomicUsize,
}

/// A reservation against the budget, released on drop.
#[derive(Debug)]
pub struct Charge {
    budget: MemoryBudget,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget
            .inner
            .used
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl Charge {
    /// Bytes reserved.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Reserves `bytes` more on the same charge, or returns `false` (and reserves nothing) if
    /// that would exceed the limit. Lets a table that grows one entry at a time charge what it
    /// holds instead of a chunk it may never fill.
    pub fn try_grow(&mut self, bytes: usize) -> bool {
        match self.budget.try_charge(bytes) {
            Some(mut more) => {
                // Fold the new reservation into this one; `more` must not release it on drop.
                self.bytes += more.bytes;
                more.bytes = 0;
                true
            }
            None => false,
        }
    }

    /// Releases up to `bytes` of this charge now.
    pub fn shrink(&mut self, bytes: usize) {
        let n = bytes.min(self.bytes);
        self.bytes -= n;
        self.budget.inner.used.fetch_sub(n, Ordering::Relaxed);
    }
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> MemoryBudget {
        MemoryBudget {
            inner: Arc::new(Inner {
                limit,
                used: AtomicUsize::new(0),
                refused: AtomicUsize::new(0),
            }),
        }
    }

    /// Reserves `bytes`, or `None` if that would exceed the limit.
    pub fn try_charge(&self, bytes: usize) -> Option<Charge> {
        let used = &self.inner.used;
        let mut cur = used.load(Ordering::Relaxed);
        loop {
            let next = cur.checked_add(bytes)?;
            if next > self.inner.limit {
                self.inner.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            match used.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    return Some(Charge {
                        budget: self.clone(),
                        bytes,
                    })
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// A charge of nothing, to be grown with [`Charge::try_grow`].
    pub fn empty_charge(&self) -> Charge {
        Charge {
            budget: self.clone(),
            bytes: 0,
        }
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// How many charges were refused so far.
    pub fn refused(&self) -> usize {
        self.inner.refused.load(Ordering::Relaxed)
    }
}

impl Default for MemoryBudget {
    fn default() -> Self {
        MemoryBudget::new(DEFAULT_MEMORY_BUDGET)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_release_on_drop_and_respect_the_limit() {
        let b = MemoryBudget::new(100);
        let c1 = b.try_charge(60).unwrap();
        assert!(b.try_charge(50).is_none());
        assert_eq!(b.refused(), 1);
        let c2 = b.clone().try_charge(40).unwrap();
        assert_eq!(b.used(), 100);
        drop(c1);
        assert_eq!(b.used(), 40);
        drop(c2);
        assert_eq!(b.used(), 0);
        assert!(b.try_charge(usize::MAX).is_none());
    }

    #[test]
    fn charges_grow_and_shrink_within_the_limit() {
        let b = MemoryBudget::new(100);
        let mut c = b.empty_charge();
        assert!(c.try_grow(70));
        assert!(!c.try_grow(40));
        assert_eq!((c.bytes(), b.used()), (70, 70));
        c.shrink(30);
        assert!(c.try_grow(60));
        assert_eq!((c.bytes(), b.used()), (100, 100));
        c.shrink(1000);
        assert_eq!((c.bytes(), b.used()), (0, 0));
        assert!(c.try_grow(10));
        drop(c);
        assert_eq!(b.used(), 0);
    }
}
