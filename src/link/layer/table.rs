//! The links of a layer, with an index of when each one's timers are due.
//!
//! The node asks the link layer for its next deadline after every datagram (daemon) or event
//! (in-process network), and runs every link's timers when it comes. Scanning every link for
//! both made a relay's work per datagram grow with its links: at 10,000 simulated nodes three
//! quarters of the simulator's CPU went to `poll_timeout` and the timer loop (docs/simulation.md,
//! "Timers of many links"). Each link's deadline depends only on its own fields and on two
//! layer-wide flags (behind NAT, view small), so it is recomputed only for the links touched
//! since the last query: every mutable access goes through [`LinkTable::get_mut`] or
//! [`LinkTable::insert`], which note the link; a change of either flag recomputes all.
//! Links whose deadline depends on more of the layer (handshakes that punching may own, relayed
//! links whose upgrade depends on the punches under way) are few and are scanned every time.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use super::discovery::VIEW_WANTED;
use super::link::{earliest, Link};
use super::{behind_nat, LinkId, LinkLayer, LINK_TIMER_TICK_MS};
use crate::time::Instant;

/// How a link's deadline is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimerEntry {
    /// Known from the link alone: at this instant (or never).
    At(Option<Instant>),
    /// Depends on layer state beyond the two flags: computed at every query.
    Scan,
}

#[derive(Debug, Default)]
struct Index {
    /// Links touched since the last flush (may repeat; bounded by `all` below).
    dirty: Vec<LinkId>,
    /// Recompute every link at the next flush.
    all: bool,
    /// The (behind NAT, view small) flags the entries were computed with.
    basis: Option<(bool, bool)>,
    entry: BTreeMap<LinkId, TimerEntry>,
    due: BTreeSet<(Instant, LinkId)>,
    scan: BTreeSet<LinkId>,
}

impl Index {
    fn forget(&mut self, id: LinkId) {
        match self.entry.remove(&id) {
            Some(TimerEntry::At(Some(at))) => {
                self.due.remove(&(at, id));
            }
            Some(TimerEntry::Scan) => {
                self.scan.remove(&id);
            }
            Some(TimerEntry::At(None)) | None => {}
        }
    }

    fn put(&mut self, id: LinkId, e: TimerEntry) {
        match e {
            TimerEntry::At(Some(at)) => {
                self.due.insert((at, id));
            }
            TimerEntry::Scan => {
                self.scan.insert(id);
            }
            TimerEntry::At(None) => {}
        }
        self.entry.insert(id, e);
    }
}

/// The layer's links by id, and when their timers are due.
#[derive(Default)]
pub(super) struct LinkTable {
    map: BTreeMap<LinkId, Link>,
    /// Behind a `RefCell` so that `poll_timeout(&self)` can bring it up to date.
    index: RefCell<Index>,
}

impl LinkTable {
    fn touch(&mut self, id: LinkId) {
        let ix = self.index.get_mut();
        if ix.all {
            return;
        }
        // Between two flushes a link is noted once per access; past a few per link, recomputing
        // everything is cheaper than the list (and keeps it bounded without a flush).
        if ix.dirty.len() > 4 * self.map.len() + 64 {
            ix.dirty.clear();
            ix.all = true;
        } else {
            ix.dirty.push(id);
        }
    }

    pub(super) fn get(&self, id: &LinkId) -> Option<&Link> {
        self.map.get(id)
    }

    /// A link to change: its deadline is recomputed at the next flush.
    pub(super) fn get_mut(&mut self, id: &LinkId) -> Option<&mut Link> {
        if self.map.contains_key(id) {
            self.touch(*id);
        }
        self.map.get_mut(id)
    }

    pub(super) fn insert(&mut self, id: LinkId, l: Link) -> Option<Link> {
        self.touch(id);
        self.map.insert(id, l)
    }

    pub(super) fn remove(&mut self, id: &LinkId) -> Option<Link> {
        let l = self.map.remove(id);
        if l.is_some() {
            self.index.get_mut().forget(*id);
        }
        l
    }

    #[cfg(test)]
    pub(super) fn contains_key(&self, id: &LinkId) -> bool {
        self.map.contains_key(id)
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn values(&self) -> std::collections::btree_map::Values<'_, LinkId, Link> {
        self.map.values()
    }

    pub(super) fn keys(&self) -> std::collections::btree_map::Keys<'_, LinkId, Link> {
        self.map.keys()
    }

    /// Brings the index up to date: `entry` says how one link's deadline is kept, computed with
    /// the layer's current `flags`.
    pub(super) fn flush(&self, flags: (bool, bool), entry: impl Fn(&Link) -> TimerEntry) {
        let mut ix = self.index.borrow_mut();
        if ix.all || ix.basis != Some(flags) {
            ix.all = false;
            ix.basis = Some(flags);
            ix.dirty.clear();
            ix.entry.clear();
            ix.due.clear();
            ix.scan.clear();
            for (id, l) in &self.map {
                ix.put(*id, entry(l));
            }
            return;
        }
        let dirty = std::mem::take(&mut ix.dirty);
        for id in &dirty {
            if let Some(l) = self.map.get(id) {
                let e = entry(l);
                if ix.entry.get(id) != Some(&e) {
                    ix.forget(*id);
                    ix.put(*id, e);
                }
            }
        }
        let mut dirty = dirty;
        dirty.clear();
        ix.dirty = dirty;
    }

    /// The earliest indexed deadline after `last`, and whether one at or before `last` is
    /// still due (a timer that ran and still reports a past instant). Call [`Self::flush`] first.
    pub(super) fn next_after(&self, last: Instant) -> (Option<Instant>, bool) {
        let ix = self.index.borrow();
        let stale = ix.due.first().is_some_and(|(at, _)| *at <= last);
        let after = ix
            .due
            .range((Bound::Excluded((last, LinkId(u32::MAX))), Bound::Unbounded))
            .next()
            .map(|(at, _)| *at);
        (after, stale)
    }

    /// Calls `f` for each link scanned at every query. Call [`Self::flush`] first.
    pub(super) fn for_scanned(&self, mut f: impl FnMut(&Link)) {
        let ix = self.index.borrow();
        for id in &ix.scan {
            if let Some(l) = self.map.get(id) {
                f(l);
            }
        }
    }

    /// Adds to `out` the links whose timers are due at `now` (and every scanned one), in id
    /// order. Call [`Self::flush`] first.
    pub(super) fn due_at(&self, now: Instant, out: &mut Vec<LinkId>) {
        let ix = self.index.borrow();
        out.extend(ix.due.range(..=(now, LinkId(u32::MAX))).map(|(_, id)| *id));
        out.extend(ix.scan.iter().copied());
        out.sort_unstable();
        out.dedup();
    }
}

impl LinkLayer {
    /// When to call [`LinkLayer::handle_timeout`] next: the earliest exact deadline of every
    /// link's timers (handshake retry, HELLO, requests, liveness PING, keepalive, PEX, upgrade of
    /// a relayed link), of punches and dials, and of housekeeping (at most
    /// `LINK_HOUSEKEEPING_MS` away, so never `None`). Costs the links changed since the last
    /// call, the scanned ones and a lookup in the index, not a pass over every link.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.flush_link_timers();
        let mut next = self.housekeeping_deadline();
        self.links
            .for_scanned(|l| next = earliest(next, self.scanned_deadline(l)));
        // The indexed links: `fresh` of each, without visiting each (a past deadline reads as
        // the tick after the last run).
        let last = self.last_timeout;
        let (after, stale) = self.links.next_after(last);
        next = earliest(next, after);
        if stale {
            next = earliest(next, Some(last + LINK_TIMER_TICK_MS));
        }
        next
    }

    /// [`LinkLayer::poll_timeout`] computed the slow way, from every link (tests compare the
    /// two: a change to a link that the index missed shows as a difference).
    #[doc(hidden)]
    pub fn poll_timeout_scanning_every_link(&self) -> Option<Instant> {
        let mut next = self.housekeeping_deadline();
        for l in self.links.values() {
            next = earliest(next, self.scanned_deadline(l));
        }
        next
    }

    /// A deadline at or before the last `handle_timeout` was due then and its work declined:
    /// it is tried a tick later, not at once (no spinning).
    fn fresh(&self, d: Option<Instant>) -> Option<Instant> {
        let last = self.last_timeout;
        d.map(|d| {
            if d <= last {
                last + LINK_TIMER_TICK_MS
            } else {
                d
            }
        })
    }

    /// Housekeeping, punches and dials.
    fn housekeeping_deadline(&self) -> Option<Instant> {
        let mut next = Some(self.next_tick);
        next = earliest(
            next,
            self.fresh(self.punches.values().map(|p| p.next).min()),
        );
        earliest(next, self.fresh(self.dials.values().map(|d| d.next).min()))
    }

    /// One link's deadline read from the whole layer (as scanned links are).
    fn scanned_deadline(&self, l: &Link) -> Option<Instant> {
        let natted = behind_nat(self.nat);
        let view_small = self.view.len() < VIEW_WANTED;
        let driven = self.dials.contains_key(&l.peer_key) || self.punches.contains_key(&l.id);
        let mut next = self.fresh(l.deadline(natted, view_small, driven));
        if self.upgrade_wanted(l) {
            next = earliest(next, self.fresh(Some(l.upgrade_next)));
        }
        next
    }

    /// Recomputes the deadlines of the links touched since the last query (`table`).
    pub(super) fn flush_link_timers(&self) {
        let natted = behind_nat(self.nat);
        let view_small = self.view.len() < VIEW_WANTED;
        self.links.flush((natted, view_small), |l| {
            // A handshake's timer is off while punching drives it, and a relayed link's upgrade
            // depends on the punches under way: both read layer state, so they are scanned.
            if !l.session.established() || l.relay.is_some() {
                TimerEntry::Scan
            } else {
                TimerEntry::At(l.deadline(natted, view_small, false))
            }
        });
    }
}

#[cfg(test)]
impl std::ops::Index<&LinkId> for LinkTable {
    type Output = Link;

    fn index(&self, id: &LinkId) -> &Link {
        &self.map[id]
    }
}
