//! Fair queueing with CoDel for the packets a client or service daemon moves between its kernel
//! and its sessions (issue #21 item 5; FQ-CoDel, RFC 8290, with CoDel, RFC 8289, in every flow's
//! queue).
//!
//! Why here: inner TCP is the congestion controller, and its window stands where the path is
//! slowest to drain. Measured under a bulk flow through a hidden service, that was the service's
//! TUN writer (one `write` per packet into the kernel's TCP), behind a 256-packet FIFO whose tail
//! drops were all of TCP's losses; the relays' socket queues stayed a few packets deep and relays
//! keep no queue of their own (docs/decisions.md, "Queues"). So the daemon keeps one queue per
//! inner flow on both sides of its TUN: a flow that sends little is served first (no bulk flow
//! delays it) and CoDel drops, or marks CE on an ECN-capable packet, at the head of a flow whose
//! packets have waited longer than [`TARGET_US`] for a whole [`INTERVAL_US`], so the sender slows
//! down before a queue stands.
//!
//! Pure: the caller passes the time (microseconds, any monotonic origin) and owns the packet
//! buffers; packets come back either served or dropped so their buffers are reused. Storage is
//! a fixed slab sized at construction: nothing is allocated per packet.

use std::collections::VecDeque;

/// Sojourn time above which CoDel starts counting (RFC 8289's 5 ms).
pub const TARGET_US: u64 = 5_000;
/// How long the sojourn must stay above target before the first drop, and the base of the drop
/// spacing (RFC 8289's 100 ms: a few round trips of the overlay).
pub const INTERVAL_US: u64 = 100_000;
/// Bytes a flow may send per round before the next flow's turn (about one overlay packet).
pub const QUANTUM: u32 = 1_300;
/// Flow queues; flows are hashed onto them (with a secret salt, so a local program cannot pick
/// which flow it shares a queue with).
pub const FLOW_QUEUES: usize = 64;
/// Most packets held in all queues together; above it the longest queue loses its head.
pub const PACKET_LIMIT: usize = 512;

const NONE: u32 = u32::MAX;

/// What became of a packet the queue let go of.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Fate {
    /// Served: send it.
    Send,
    /// Served with ECN Congestion Experienced set: send it.
    Marked,
    /// Dropped by CoDel (the flow's queue stood above target): recycle the buffer.
    Dropped,
    /// Dropped because the queue was full: recycle the buffer.
    Overflow,
}

/// Counters for the status output and the benchmark.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FqStats {
    /// Packets sent on (marked ones included).
    pub served: u64,
    /// Packets sent with CE set.
    pub marked: u64,
    /// Packets CoDel dropped.
    pub codel_drops: u64,
    /// Packets dropped because the queue was full.
    pub overflow_drops: u64,
    /// Largest number of packets held at once.
    pub peak_packets: usize,
    /// Sojourn of the last packet served, microseconds.
    pub last_sojourn_us: u64,
    /// Largest sojourn of a served packet, microseconds.
    pub max_sojourn_us: u64,
}

struct Slot<T> {
    item: Option<T>,
    len: u32,
    at_us: u64,
    next: u32,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum List {
    #[default]
    None,
    New,
    Old,
}

#[derive(Default, Clone)]
struct Flow {
    head: u32,
    tail: u32,
    packets: u32,
    bytes: u64,
    deficit: i64,
    list: List,
    codel: Codel,
}

/// RFC 8289's per-queue state.
#[derive(Default, Clone)]
struct Codel {
    /// When the sojourn may first count as standing (0: it is below target).
    first_above_us: u64,
    drop_next_us: u64,
    count: u32,
    last_count: u32,
    dropping: bool,
}

/// Flow queues served in deficit round robin, CoDel in each (see the module docs).
pub struct FairQueue<T> {
    slots: Vec<Slot<T>>,
    free: u32,
    flows: Vec<Flow>,
    new_flows: VecDeque<u16>,
    old_flows: VecDeque<u16>,
    packets: usize,
    salt: u64,
    stats: FqStats,
}

impl<T> FairQueue<T> {
    /// A queue of [`PACKET_LIMIT`] packets over [`FLOW_QUEUES`] flow queues; `salt` keys the
    /// flow hash (from the OS generator in the daemon).
    pub fn new(salt: u64) -> FairQueue<T> {
        Self::with_limit(PACKET_LIMIT, salt)
    }

    /// The same with another packet limit (at least 1).
    pub fn with_limit(limit: usize, salt: u64) -> FairQueue<T> {
        let limit = limit.clamp(1, NONE as usize - 1);
        let slots = (0..limit)
            .map(|i| Slot {
                item: None,
                len: 0,
                at_us: 0,
                next: if i + 1 < limit { i as u32 + 1 } else { NONE },
            })
            .collect();
        let empty = Flow {
            head: NONE,
            tail: NONE,
            ..Flow::default()
        };
        FairQueue {
            slots,
            free: 0,
            flows: vec![empty; FLOW_QUEUES],
            new_flows: VecDeque::with_capacity(FLOW_QUEUES),
            old_flows: VecDeque::with_capacity(FLOW_QUEUES),
            packets: 0,
            salt,
            stats: FqStats::default(),
        }
    }

    /// Bytes this queue can hold at most with packets of `mtu` bytes (for the memory budget).
    pub fn capacity_bytes(&self, mtu: usize) -> usize {
        self.slots.len() * (mtu + std::mem::size_of::<Slot<T>>())
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.packets
    }

    /// No packet held.
    pub fn is_empty(&self) -> bool {
        self.packets == 0
    }

    /// Counters since the start.
    pub fn stats(&self) -> &FqStats {
        &self.stats
    }

    /// The flow queue of an inner packet: its addresses, protocol and ports (IPv6 and IPv4;
    /// anything else shares queue 0).
    pub fn classify(&self, pkt: &[u8]) -> usize {
        let mut h = Hash(self.salt);
        match pkt.first().map(|b| b >> 4) {
            Some(6) => {
                let nh = pkt.get(6).copied().unwrap_or(0);
                h.add(u64::from(nh));
                h.bytes(pkt.get(8..40).unwrap_or(&[]));
                h.bytes(pkt.get(40..44).unwrap_or(&[]));
            }
            Some(4) => {
                let ihl = usize::from(pkt.first().copied().unwrap_or(0) & 0x0f) * 4;
                h.add(u64::from(pkt.get(9).copied().unwrap_or(0)));
                h.bytes(pkt.get(12..20).unwrap_or(&[]));
                h.bytes(pkt.get(ihl..ihl + 4).unwrap_or(&[]));
            }
            _ => return 0,
        }
        (h.finish() % FLOW_QUEUES as u64) as usize
    }

    /// Queues `item` (`len` bytes) on flow queue `flow` at `now_us`. When the queue is full the
    /// head of the longest flow queue (in bytes) makes room and comes back for recycling: the
    /// flow that fills the queue loses, not a light one.
    pub fn enqueue(&mut self, flow: usize, item: T, len: usize, now_us: u64) -> Option<T> {
        let flow = flow % FLOW_QUEUES;
        let mut evicted = None;
        if self.free == NONE {
            let fattest = (0..self.flows.len())
                .max_by_key(|&i| self.flows.get(i).map_or(0, |f| f.bytes))
                .unwrap_or(0);
            evicted = self.pop_head(fattest).map(|(it, _, _)| it);
            self.stats.overflow_drops += 1;
        }
        let idx = self.free;
        let Some(slot) = self.slots.get_mut(idx as usize) else {
            // Not reachable: a full queue just freed a slot.
            return Some(item);
        };
        self.free = slot.next;
        slot.item = Some(item);
        slot.len = u32::try_from(len).unwrap_or(u32::MAX);
        slot.at_us = now_us;
        slot.next = NONE;
        let tail = match self.flows.get_mut(flow) {
            Some(f) => {
                let t = f.tail;
                f.tail = idx;
                if f.head == NONE {
                    f.head = idx;
                }
                f.packets += 1;
                f.bytes += len as u64;
                if f.list == List::None {
                    f.list = List::New;
                    f.deficit = i64::from(QUANTUM);
                    self.new_flows.push_back(flow as u16);
                }
                t
            }
            None => NONE,
        };
        if let Some(s) = self.slots.get_mut(tail as usize) {
            s.next = idx;
        }
        self.packets += 1;
        self.stats.peak_packets = self.stats.peak_packets.max(self.packets);
        evicted
    }

    /// The next packet to send at `now_us`, and what to do with it. CoDel's drops come back one
    /// by one as [`Fate::Dropped`] (the caller recycles and asks again); `mark` is offered each
    /// packet CoDel would drop and returns `true` if it set CE on it (it is then sent instead).
    pub fn dequeue(
        &mut self,
        now_us: u64,
        mut mark: impl FnMut(&mut T) -> bool,
    ) -> Option<(T, Fate)> {
        loop {
            let (flow, from_new) = match (self.new_flows.front(), self.old_flows.front()) {
                (Some(&f), _) => (usize::from(f), true),
                (None, Some(&f)) => (usize::from(f), false),
                (None, None) => return None,
            };
            let deficit = self.flows.get(flow).map_or(0, |f| f.deficit);
            if deficit <= 0 {
                if let Some(f) = self.flows.get_mut(flow) {
                    f.deficit += i64::from(QUANTUM);
                    f.list = List::Old;
                }
                self.pop_list(from_new);
                self.old_flows.push_back(flow as u16);
                continue;
            }
            match self.codel_dequeue(flow, now_us, &mut mark) {
                Some((item, len, fate)) => {
                    if fate != Fate::Dropped {
                        if let Some(f) = self.flows.get_mut(flow) {
                            f.deficit -= i64::from(len);
                        }
                    }
                    return Some((item, fate));
                }
                None => {
                    // Empty: a new flow goes behind the old ones once (RFC 8290 4.2), so a
                    // flow cannot stay "new" by emptying its queue every round.
                    self.pop_list(from_new);
                    let to_old = from_new && !self.old_flows.is_empty();
                    if let Some(f) = self.flows.get_mut(flow) {
                        f.list = if to_old { List::Old } else { List::None };
                    }
                    if to_old {
                        self.old_flows.push_back(flow as u16);
                    }
                }
            }
        }
    }

    fn pop_list(&mut self, from_new: bool) {
        if from_new {
            self.new_flows.pop_front();
        } else {
            self.old_flows.pop_front();
        }
    }

    /// RFC 8289's dequeue for one flow queue; a drop decision comes back as one packet with
    /// [`Fate::Dropped`] (or [`Fate::Marked`]) and CoDel's state moves on as if it had gone.
    fn codel_dequeue(
        &mut self,
        flow: usize,
        now: u64,
        mark: &mut impl FnMut(&mut T) -> bool,
    ) -> Option<(T, u32, Fate)> {
        let (mut item, len, ok_to_drop) = match self.do_dequeue(flow, now) {
            Some(x) => x,
            None => {
                if let Some(c) = self.flows.get_mut(flow).map(|f| &mut f.codel) {
                    c.dropping = false;
                }
                return None;
            }
        };
        let Some(c) = self.flows.get_mut(flow).map(|f| &mut f.codel) else {
            return Some((item, len, Fate::Send));
        };
        let mut congested = false;
        if c.dropping {
            if !ok_to_drop {
                c.dropping = false;
            } else if now >= c.drop_next_us {
                c.count = c.count.saturating_add(1);
                c.drop_next_us = control_law(c.drop_next_us, c.count);
                congested = true;
            }
        } else if ok_to_drop {
            c.dropping = true;
            let delta = c.count.saturating_sub(c.last_count);
            c.count = if delta > 1 && now.saturating_sub(c.drop_next_us) < 16 * INTERVAL_US {
                delta
            } else {
                1
            };
            c.drop_next_us = control_law(now, c.count);
            c.last_count = c.count;
            congested = true;
        }
        if !congested {
            self.stats.served += 1;
            return Some((item, len, Fate::Send));
        }
        if mark(&mut item) {
            self.stats.marked += 1;
            self.stats.served += 1;
            Some((item, len, Fate::Marked))
        } else {
            self.stats.codel_drops += 1;
            Some((item, len, Fate::Dropped))
        }
    }

    /// Takes the head of `flow` and says whether its queue has stood above target for an
    /// interval (RFC 8289 `dodequeue`).
    fn do_dequeue(&mut self, flow: usize, now: u64) -> Option<(T, u32, bool)> {
        let (item, len, at) = self.pop_head(flow)?;
        let sojourn = now.saturating_sub(at);
        self.stats.last_sojourn_us = sojourn;
        self.stats.max_sojourn_us = self.stats.max_sojourn_us.max(sojourn);
        let f = self.flows.get_mut(flow)?;
        let c = &mut f.codel;
        let mut ok = false;
        // A queue of at most one packet is not standing, whatever it waited.
        if sojourn < TARGET_US || f.bytes <= u64::from(QUANTUM) {
            c.first_above_us = 0;
        } else if c.first_above_us == 0 {
            c.first_above_us = now.saturating_add(INTERVAL_US).max(1);
        } else if now >= c.first_above_us {
            ok = true;
        }
        Some((item, len, ok))
    }

    fn pop_head(&mut self, flow: usize) -> Option<(T, u32, u64)> {
        let f = self.flows.get_mut(flow)?;
        let idx = f.head;
        let slot = self.slots.get_mut(idx as usize)?;
        let item = slot.item.take()?;
        f.head = slot.next;
        if f.head == NONE {
            f.tail = NONE;
        }
        f.packets -= 1;
        f.bytes = f.bytes.saturating_sub(u64::from(slot.len));
        slot.next = self.free;
        self.free = idx;
        self.packets -= 1;
        Some((item, slot.len, slot.at_us))
    }
}

fn control_law(t: u64, count: u32) -> u64 {
    let spacing = INTERVAL_US as f64 / f64::from(count.max(1)).sqrt();
    t.saturating_add(spacing as u64)
}

/// Sets ECN Congestion Experienced on an IPv6 packet that is ECN-capable (ECT(0) or ECT(1)):
/// `false` (and nothing changed) for any other packet, which CoDel then drops. IPv6 has no
/// header checksum, so two bits change and nothing else.
pub fn mark_ce(pkt: &mut [u8]) -> bool {
    let (Some(&b0), Some(&b1)) = (pkt.first(), pkt.get(1)) else {
        return false;
    };
    if b0 >> 4 != 6 {
        return false;
    }
    // Traffic class spans the low nibble of byte 0 and the high nibble of byte 1; ECN is its
    // low two bits, bits 5-4 of byte 1.
    let ecn = (b1 >> 4) & 0b11;
    if ecn == 0 {
        return false;
    }
    if let Some(b) = pkt.get_mut(1) {
        *b |= 0b11 << 4;
    }
    true
}

/// A small keyed mixing hash for flow queues (not a MAC: the salt only keeps the buckets
/// unpredictable to a local sender).
struct Hash(u64);

impl Hash {
    fn add(&mut self, v: u64) {
        self.0 = (self.0 ^ v)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }
    fn bytes(&mut self, b: &[u8]) {
        for c in b.chunks(8) {
            let mut w = [0u8; 8];
            for (d, s) in w.iter_mut().zip(c) {
                *d = *s;
            }
            self.add(u64::from_le_bytes(w));
        }
    }
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x
    }
}

#[cfg(test)]
#[path = "fq_tests.rs"]
mod tests;
