//! The flow table (DESIGN.md section 6): one entry per TCP or UDP 5-tuple or ICMPv6 echo
//! identifier, in the local kernel's view. An entry says who opened the flow and which address
//! the peer knows us by on it; it ends on RST, shortly after FINs both ways, or after being idle.
//!
//! Flows the peer opens (to an exposed port) are charged to the memory budget and capped per
//! peer, because a stranger makes them; flows the local kernel opens evict the oldest entry when
//! the table is full. Idle limits follow the NAT requirements (RFC 5382 for TCP, RFC 4787 for
//! UDP, RFC 5508 for ICMP queries), so a connection that passes a home NAT also survives here.

use std::collections::HashMap;

use super::packet::{FlowKey, TCP_FIN, TCP_RST, TCP_SYN};
use crate::budget::{Charge, MemoryBudget};
use crate::time::{Instant, Millis};

/// Most flows at once.
pub const MAX_FLOWS: usize = 65536;
/// Most flows one peer may open towards us.
pub const MAX_FLOWS_PER_PEER: u32 = 1024;
/// Bytes charged per peer-opened flow (entry, key and map overhead).
pub const FLOW_CHARGE: usize = 128;
/// TCP with both SYNs seen and no FIN: RFC 5382 REQ-5 (2 h 4 min).
pub const TCP_ESTABLISHED_IDLE_MS: Millis = 7_440_000;
/// TCP before both SYNs were seen, or after FINs both ways: RFC 5382's transitory 4 min.
pub const TCP_TRANSITORY_IDLE_MS: Millis = 240_000;
/// TCP after a RST: a moment for a retransmitted RST, then the flow is gone.
pub const TCP_RST_LINGER_MS: Millis = 10_000;
/// UDP: RFC 4787 REQ-5 recommends 5 min.
pub const UDP_IDLE_MS: Millis = 300_000;
/// ICMPv6 echo: RFC 5508 REQ-1 (60 s).
pub const ECHO_IDLE_MS: Millis = 60_000;

/// Who opened a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The local kernel (we are the client of the flow).
    Local,
    /// The peer (a flow to one of our exposed ports, or an echo request).
    Remote,
}

/// The address the peer knows us by on a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalAddress {
    /// Our own (service) address, the kernel's view: no rewriting.
    Own,
    /// Our pseudonym for this peer: the source is rewritten on the way out, the destination on
    /// the way in.
    Pseudonym,
}

const SEEN_SYN_OUT: u8 = 1;
const SEEN_SYN_IN: u8 = 2;
const SEEN_FIN_OUT: u8 = 4;
const SEEN_FIN_IN: u8 = 8;
const SEEN_RST: u8 = 16;

/// One flow.
#[derive(Debug)]
pub struct Flow {
    /// Who opened it.
    pub origin: Origin,
    /// The address the peer knows us by.
    pub local: LocalAddress,
    seen: u8,
    last: Instant,
    _charge: Option<Charge>,
}

impl Flow {
    /// Notes a packet of this flow at `now`: TCP flags move it towards its end.
    pub fn touch(&mut self, now: Instant, tcp_flags: Option<u8>, outbound: bool) {
        self.last = now;
        if let Some(f) = tcp_flags {
            let (syn, fin) = if outbound {
                (SEEN_SYN_OUT, SEEN_FIN_OUT)
            } else {
                (SEEN_SYN_IN, SEEN_FIN_IN)
            };
            if f & TCP_SYN != 0 {
                self.seen |= syn;
                // A new SYN on a tuple that had ended (the kernel reuses ports) starts afresh.
                if self.seen & (SEEN_RST | SEEN_FIN_IN | SEEN_FIN_OUT) != 0 {
                    self.seen = syn;
                }
            }
            if f & TCP_FIN != 0 {
                self.seen |= fin;
            }
            if f & TCP_RST != 0 {
                self.seen |= SEEN_RST;
            }
        }
    }

    fn idle_limit(&self, proto: u8) -> Millis {
        match proto {
            super::packet::PROTO_TCP => {
                if self.seen & SEEN_RST != 0 {
                    TCP_RST_LINGER_MS
                } else if self.seen & (SEEN_FIN_IN | SEEN_FIN_OUT) == SEEN_FIN_IN | SEEN_FIN_OUT
                    || self.seen & (SEEN_SYN_IN | SEEN_SYN_OUT) != SEEN_SYN_IN | SEEN_SYN_OUT
                {
                    TCP_TRANSITORY_IDLE_MS
                } else {
                    TCP_ESTABLISHED_IDLE_MS
                }
            }
            super::packet::PROTO_UDP => UDP_IDLE_MS,
            _ => ECHO_IDLE_MS,
        }
    }

    fn expired(&self, proto: u8, now: Instant) -> bool {
        now.saturating_since(self.last) > self.idle_limit(proto)
    }
}

/// Why a flow was not created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableError {
    /// The table or the memory budget is full of flows we may not evict for this one.
    Full,
    /// The peer has [`MAX_FLOWS_PER_PEER`] flows open already.
    PeerLimit,
}

/// The flow table.
pub struct FlowTable {
    flows: HashMap<FlowKey, Flow>,
    /// Peer-opened flows per peer address.
    per_peer: HashMap<[u8; 16], u32>,
    budget: MemoryBudget,
    max: usize,
}

impl FlowTable {
    /// An empty table holding at most `max` flows, charging peer-opened flows to `budget`.
    pub fn new(budget: MemoryBudget, max: usize) -> FlowTable {
        FlowTable {
            flows: HashMap::new(),
            per_peer: HashMap::new(),
            budget,
            max,
        }
    }

    /// Flows held now (some may have expired and wait for the next sweep).
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether no flow is held.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// The live flow for `key`.
    pub fn get_mut(&mut self, key: &FlowKey, now: Instant) -> Option<&mut Flow> {
        let expired = self.flows.get(key)?.expired(key.proto, now);
        if expired {
            self.remove(key);
            return None;
        }
        self.flows.get_mut(key)
    }

    /// Creates a flow (replacing an expired one with the same key).
    pub fn insert(
        &mut self,
        key: FlowKey,
        origin: Origin,
        local: LocalAddress,
        now: Instant,
    ) -> Result<&mut Flow, TableError> {
        self.remove(&key);
        let charge = match origin {
            Origin::Remote => {
                if self.per_peer.get(&key.remote).copied().unwrap_or(0) >= MAX_FLOWS_PER_PEER {
                    return Err(TableError::PeerLimit);
                }
                if self.flows.len() >= self.max {
                    self.sweep(now);
                    if self.flows.len() >= self.max {
                        return Err(TableError::Full);
                    }
                }
                Some(
                    self.budget
                        .try_charge(FLOW_CHARGE)
                        .ok_or(TableError::Full)?,
                )
            }
            Origin::Local => {
                if self.flows.len() >= self.max {
                    self.sweep(now);
                }
                if self.flows.len() >= self.max {
                    // Our own kernel's flow wins over the one idle longest.
                    if let Some(oldest) = self
                        .flows
                        .iter()
                        .min_by_key(|(_, f)| f.last)
                        .map(|(k, _)| *k)
                    {
                        self.remove(&oldest);
                    }
                }
                None
            }
        };
        if origin == Origin::Remote {
            *self.per_peer.entry(key.remote).or_insert(0) += 1;
        }
        Ok(self.flows.entry(key).or_insert(Flow {
            origin,
            local,
            seen: 0,
            last: now,
            _charge: charge,
        }))
    }

    fn remove(&mut self, key: &FlowKey) {
        if let Some(f) = self.flows.remove(key) {
            if f.origin == Origin::Remote {
                if let Some(n) = self.per_peer.get_mut(&key.remote) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.per_peer.remove(&key.remote);
                    }
                }
            }
        }
    }

    /// Drops every expired flow.
    pub fn sweep(&mut self, now: Instant) {
        let per_peer = &mut self.per_peer;
        self.flows.retain(|k, f| {
            let keep = !f.expired(k.proto, now);
            if !keep && f.origin == Origin::Remote {
                if let Some(n) = per_peer.get_mut(&k.remote) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        per_peer.remove(&k.remote);
                    }
                }
            }
            keep
        });
    }

    /// Drops every flow with `peer` (its session is gone for good).
    pub fn forget_peer(&mut self, peer: &[u8; 16]) {
        self.flows.retain(|k, _| &k.remote != peer);
        self.per_peer.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::packet::{PROTO_TCP, PROTO_UDP, TCP_ACK};

    fn key(proto: u8, port: u16, peer: u8) -> FlowKey {
        let mut remote = [0xfd; 16];
        remote[15] = peer;
        FlowKey {
            proto,
            local: [0xfd; 16],
            remote,
            local_port: port,
            remote_port: 80,
        }
    }

    #[test]
    fn tcp_lifecycle() {
        let mut t = FlowTable::new(MemoryBudget::default(), 16);
        let k = key(PROTO_TCP, 1, 1);
        t.insert(k, Origin::Local, LocalAddress::Pseudonym, Instant::ZERO)
            .unwrap()
            .touch(Instant::ZERO, Some(TCP_SYN), true);
        // Half-open flows are transitory.
        assert!(t
            .get_mut(&k, Instant::from_unix_ms(TCP_TRANSITORY_IDLE_MS))
            .is_some());
        t.get_mut(&k, Instant::from_unix_ms(TCP_TRANSITORY_IDLE_MS))
            .unwrap()
            .touch(
                Instant::from_unix_ms(TCP_TRANSITORY_IDLE_MS),
                Some(TCP_SYN | TCP_ACK),
                false,
            );
        // Established: survives a long idle period.
        let t1 = TCP_TRANSITORY_IDLE_MS + TCP_ESTABLISHED_IDLE_MS;
        assert!(t.get_mut(&k, Instant::from_unix_ms(t1)).is_some());
        t.get_mut(&k, Instant::from_unix_ms(t1)).unwrap().touch(
            Instant::from_unix_ms(t1),
            Some(TCP_FIN),
            true,
        );
        t.get_mut(&k, Instant::from_unix_ms(t1)).unwrap().touch(
            Instant::from_unix_ms(t1),
            Some(TCP_FIN),
            false,
        );
        assert!(t
            .get_mut(&k, Instant::from_unix_ms(t1 + TCP_TRANSITORY_IDLE_MS + 1))
            .is_none());
        // RST ends a flow after a short linger.
        let k2 = key(PROTO_TCP, 2, 1);
        t.insert(k2, Origin::Local, LocalAddress::Own, Instant::ZERO)
            .unwrap()
            .touch(Instant::ZERO, Some(TCP_RST), false);
        assert!(t
            .get_mut(&k2, Instant::from_unix_ms(TCP_RST_LINGER_MS + 1))
            .is_none());
        // UDP ends on idle timeout.
        let k3 = key(PROTO_UDP, 3, 1);
        t.insert(k3, Origin::Local, LocalAddress::Own, Instant::ZERO)
            .unwrap();
        assert!(t.get_mut(&k3, Instant::from_unix_ms(UDP_IDLE_MS)).is_some());
        assert!(t
            .get_mut(&k3, Instant::from_unix_ms(2 * UDP_IDLE_MS + 1))
            .is_none());
    }

    #[test]
    fn bounded_per_peer_and_in_total_and_charged() {
        let budget = MemoryBudget::new(1 << 20);
        let mut t = FlowTable::new(budget.clone(), 4);
        for p in 0..4 {
            t.insert(
                key(PROTO_UDP, p, 1),
                Origin::Remote,
                LocalAddress::Own,
                Instant::ZERO,
            )
            .unwrap();
        }
        assert_eq!(budget.used(), 4 * FLOW_CHARGE);
        // A stranger cannot push flows out.
        assert_eq!(
            t.insert(
                key(PROTO_UDP, 9, 2),
                Origin::Remote,
                LocalAddress::Own,
                Instant::from_unix_ms(1)
            )
            .err(),
            Some(TableError::Full)
        );
        // Our own kernel can.
        t.insert(
            key(PROTO_UDP, 9, 3),
            Origin::Local,
            LocalAddress::Own,
            Instant::from_unix_ms(1),
        )
        .unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(budget.used(), 3 * FLOW_CHARGE);
        // Expiry releases the charges.
        t.sweep(Instant::from_unix_ms(10 * UDP_IDLE_MS));
        assert_eq!(budget.used(), 0);
        assert!(t.is_empty());
        assert!(t.per_peer.is_empty());

        let mut t = FlowTable::new(budget.clone(), MAX_FLOWS);
        for p in 0..MAX_FLOWS_PER_PEER {
            t.insert(
                key(PROTO_UDP, p as u16, 1),
                Origin::Remote,
                LocalAddress::Own,
                Instant::ZERO,
            )
            .unwrap();
        }
        assert_eq!(
            t.insert(
                key(PROTO_UDP, 60000, 1),
                Origin::Remote,
                LocalAddress::Own,
                Instant::ZERO
            )
            .err(),
            Some(TableError::PeerLimit)
        );
        t.forget_peer(&key(PROTO_UDP, 0, 1).remote);
        assert_eq!(budget.used(), 0);
    }

    proptest::proptest! {
        /// Any sequence of inserts, packets, sweeps and forgets keeps the table within its
        /// bounds and the budget charged exactly for the peer-opened flows it holds.
        #[test]
        fn bounds_and_charges_hold(ops in proptest::collection::vec(
            (0u8..5, 0u16..40, 0u8..4, proptest::num::u8::ANY, 0u64..400_000), 0..300)
        ) {
            let budget = MemoryBudget::new(20 * FLOW_CHARGE);
            let mut t = FlowTable::new(budget.clone(), 32);
            let mut now = 0;
            for (op, port, peer, flags, dt) in ops {
                now += dt;
                let k = key(if port % 2 == 0 { PROTO_TCP } else { PROTO_UDP }, port, peer);
                match op {
                    0 => { let _ = t.insert(k, Origin::Remote, LocalAddress::Own, Instant::from_unix_ms(now)); }
                    1 => { let _ = t.insert(k, Origin::Local, LocalAddress::Pseudonym, Instant::from_unix_ms(now)); }
                    2 => if let Some(f) = t.get_mut(&k, Instant::from_unix_ms(now)) { f.touch(Instant::from_unix_ms(now), Some(flags), flags & 1 == 0) },
                    3 => t.sweep(Instant::from_unix_ms(now)),
                    _ => t.forget_peer(&k.remote),
                }
                proptest::prop_assert!(t.len() <= 32);
                let remote = t.flows.values().filter(|f| f.origin == Origin::Remote).count();
                proptest::prop_assert_eq!(budget.used(), remote * FLOW_CHARGE);
                let counted: u32 = t.per_peer.values().sum();
                proptest::prop_assert_eq!(counted as usize, remote);
            }
        }
    }
}
