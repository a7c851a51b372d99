//! The exit's side of the data path (docs/decisions.md "Exits", protocol.md 7.3), sans-IO: each
//! circuit that sends `EXIT_PACKET` gets an inner address pair; every packet passes the policy
//! and the circuit's rate limit, gets the circuit's inner source and leaves through `gnx0`, where
//! the kernel's NAT gives it the host's address. Answers coming back on `gnx0` name their circuit
//! by their inner destination. The daemon owns `gnx0` and the circuits; this only decides.
//!
//! Must never: let a packet out without the policy check, let one circuit's traffic spend
//! another's budget, or allocate per packet.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use zeroize::Zeroizing;

use super::packet::{refusal, IpView, EXIT_PACKET_MAX};
use super::policy::{ExitPolicy, Verdict};
use super::session::{self, AckStatus, SessionAck, SessionRequest, SID_LEN};
use crate::budget::{Charge, MemoryBudget};
use crate::time::{Bucket, Instant};

/// The exit's inner IPv4 network (inside CGNAT 100.64.0.0/10, which no exit lets out).
pub const INNER_V4_NET: Ipv4Addr = Ipv4Addr::new(100, 127, 0, 0);
/// Prefix length of [`INNER_V4_NET`].
pub const INNER_V4_LEN: u8 = 16;
/// The exit's inner IPv6 network (inside fc00::/7, outside the overlay's fd00::/8).
pub const INNER_V6_NET: Ipv6Addr = Ipv6Addr::new(0xfc00, 0x676e, 0x6578, 0, 0, 0, 0, 0);
/// Prefix length of [`INNER_V6_NET`].
pub const INNER_V6_LEN: u8 = 64;
/// `gnx0`'s own IPv4 address.
pub const GNX_V4: Ipv4Addr = Ipv4Addr::new(100, 127, 255, 254);
/// The exit's virtual resolver: DNS (port 53) to it is let out whatever the policy, and the
/// exit's NAT sends it to the host's own resolver, so names are resolved at the exit.
pub const RESOLVER_V4: Ipv4Addr = Ipv4Addr::new(100, 127, 255, 53);
/// `gnx0`'s own IPv6 address.
pub const GNX_V6: Ipv6Addr = Ipv6Addr::new(0xfc00, 0x676e, 0x6578, 0, 0, 0, 0xff, 0xfffe);
/// The client's own inner IPv4 address on gn0 for routed traffic and SOCKS without a user name
/// (isolation group 1; never published, never leaves the host: the exit rewrites it).
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(100, 127, 255, 1);
/// The client's own inner IPv6 address on gn0 (group 1).
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfc00, 0x676e, 0x6578, 0, 0, 0, 0xff, 1);
/// Isolation groups a client has: group `g` sends from `100.127.255.g` / `fc00:676e:6578::ff:g`
/// and has its own circuit to an exit. Group 1 is routed traffic and SOCKS without a user name;
/// SOCKS user names take the others, first come.
pub const CLIENT_GROUPS: u8 = 16;

/// The client's inner IPv4 address of isolation group `g` (1..=[`CLIENT_GROUPS`]).
pub fn client_v4(g: u8) -> Ipv4Addr {
    Ipv4Addr::new(100, 127, 255, g)
}

/// The client's inner IPv6 address of isolation group `g`.
pub fn client_v6(g: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfc00, 0x676e, 0x6578, 0, 0, 0, 0xff, u16::from(g))
}

/// The isolation group a client address belongs to.
pub fn group_of(ip: IpAddr) -> Option<u8> {
    let g = match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            (o[..3] == [100, 127, 255]).then_some(o[3])?
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            let base = CLIENT_V6.segments();
            (s[..7] == base[..7] && s[7] <= 0xff).then_some(s[7] as u8)?
        }
    };
    (1..=CLIENT_GROUPS).contains(&g).then_some(g)
}
/// Circuits get inner addresses 1..=`MAX_EXIT_CIRCUITS` (100.127.0.1 to 100.127.254.255); the
/// last /24 is kept for the exit's and the client's own addresses.
pub const MAX_EXIT_CIRCUITS: u16 = 0xfeff;
/// Bytes a circuit may send out per second on average.
pub const EXIT_BYTES_PER_S: f64 = 4.0 * 1024.0 * 1024.0;
/// Burst of bytes.
pub const EXIT_BYTES_BURST: f64 = 1024.0 * 1024.0;
/// New TCP connections (SYNs) a circuit may open per second on average: an exit's conntrack
/// table is shared by all circuits.
pub const EXIT_SYN_PER_S: f64 = 20.0;
/// Burst of SYNs.
pub const EXIT_SYN_BURST: f64 = 64.0;
/// What a circuit's state costs in the memory budget.
const CIRCUIT_COST: usize = 256;
/// What a session's state costs (its inner address state, key and id).
const SESSION_COST: usize = 384;
/// A session no circuit carries is kept this long for the client's next circuit (a retired
/// circuit is replaced within a build, at most 15 s, and its retries).
pub const EXIT_SESSION_LINGER_MS: crate::time::Millis = 600_000;
/// No circuit re-attaches to a session older than this: the lifetime over which the exit can
/// link one client's circuits (docs/threat-model.md); the client opens a new one before.
pub const EXIT_SESSION_MAX_AGE_MS: crate::time::Millis = 86_400_000;
/// Circuits attached to one session at most.
pub const EXIT_SESSION_CIRCUITS: usize = 4;
/// `EXIT_SESSION`s one circuit may send (resends of a lost answer, a new open after an
/// unknown session); the rest are dropped.
pub const EXIT_SESSION_ATTACHES: u8 = 4;

/// What to do with a client's packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbound {
    /// Rewritten in place: write it to `gnx0`.
    Forward,
    /// Refused: send the answer in the reply buffer back on the circuit.
    Refuse(Verdict),
    /// Dropped silently (rate limit, budget, junk, a refused ICMP error).
    Drop(DropReason),
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not a well-formed IPv4/IPv6 packet, or larger than [`EXIT_PACKET_MAX`].
    Malformed,
    /// The circuit spent its byte or SYN budget.
    RateLimited,
    /// No inner address or no memory for another circuit.
    Full,
    /// Refused, and the refusal itself would be an answer to an error.
    RefusedSilently,
}

/// Exit counters for `globalnet status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitStats {
    /// Circuits with an inner address now.
    pub circuits: u64,
    /// Packets let out.
    pub packets_out: u64,
    /// Bytes let out.
    pub bytes_out: u64,
    /// Answers sent back on circuits.
    pub packets_in: u64,
    /// Bytes of answers.
    pub bytes_in: u64,
    /// Packets refused by the policy (answered).
    pub refused: u64,
    /// Packets dropped by a circuit's rate limit.
    pub rate_limited: u64,
    /// Malformed packets, full tables, answers for no circuit.
    pub dropped: u64,
    /// Exit sessions now (attached or lingering).
    #[serde(default)]
    pub sessions: u64,
    /// Circuits re-attached to an existing session.
    #[serde(default)]
    pub resumed: u64,
}

/// One inner address pair: an exit session's, or one circuit's when it has none.
struct Inner {
    /// The circuits carrying it, the one answers go to (the newest) last; a circuit without a
    /// session is the only one.
    slots: Vec<u64>,
    session: Option<Session>,
    client_v4: Option<Ipv4Addr>,
    client_v6: Option<Ipv6Addr>,
    bytes: Bucket,
    syns: Bucket,
    _charge: Charge,
}

/// An exit session (protocol.md 7.4): what keeps the inner address across circuits.
struct Session {
    sid: [u8; SID_LEN],
    key: Zeroizing<[u8; 32]>,
    opened: Instant,
    /// Since when no circuit carries it (it lingers for [`EXIT_SESSION_LINGER_MS`]).
    detached: Option<Instant>,
}

/// What the exit knows of one circuit.
#[derive(Default)]
struct SlotState {
    index: Option<u16>,
    /// `EXIT_SESSION`s received on it.
    attaches: u8,
    /// Detached from its session by a newer circuit: its packets are dropped, never sent out
    /// from another inner address.
    evicted: bool,
}

/// The exit's circuits and their inner addresses.
pub struct ExitGateway {
    policy: ExitPolicy,
    by_slot: BTreeMap<u64, SlotState>,
    by_index: BTreeMap<u16, Inner>,
    by_sid: BTreeMap<[u8; SID_LEN], u16>,
    next: u16,
    budget: MemoryBudget,
    stats: ExitStats,
    ipv6: bool,
}

impl ExitGateway {
    /// An exit enforcing `policy`, its circuit states charged to `budget`.
    pub fn new(policy: ExitPolicy, budget: MemoryBudget) -> ExitGateway {
        ExitGateway {
            policy,
            by_slot: BTreeMap::new(),
            by_index: BTreeMap::new(),
            by_sid: BTreeMap::new(),
            next: 1,
            budget,
            stats: ExitStats::default(),
            ipv6: true,
        }
    }

    /// Whether IPv6 leaves this exit (the host forwards IPv6). When not, IPv6 packets are
    /// refused at once (ICMPv6 prohibited) rather than lost in the kernel.
    pub fn set_ipv6(&mut self, on: bool) {
        self.ipv6 = on;
    }

    /// The policy (the daemon refreshes its own networks).
    pub fn policy_mut(&mut self) -> &mut ExitPolicy {
        &mut self.policy
    }

    /// Counters.
    pub fn stats(&self) -> ExitStats {
        ExitStats {
            circuits: self.by_slot.values().filter(|s| s.index.is_some()).count() as u64,
            sessions: self.by_sid.len() as u64,
            ..self.stats.clone()
        }
    }

    /// The inner addresses of circuit index `i`.
    pub fn inner_addresses(i: u16) -> (Ipv4Addr, Ipv6Addr) {
        let [hi, lo] = i.to_be_bytes();
        let v4 = Ipv4Addr::new(100, 127, hi, lo);
        let mut o = INNER_V6_NET.octets();
        if let Some(b) = o.get_mut(14..16) {
            b.copy_from_slice(&[hi, lo]);
        }
        (v4, Ipv6Addr::from(o))
    }

    /// The circuit index an inner address names.
    fn index_of(ip: IpAddr) -> Option<u16> {
        let i = match ip {
            IpAddr::V4(a) => {
                let o = a.octets();
                (o[0] == 100 && o[1] == 127).then(|| u16::from_be_bytes([o[2], o[3]]))?
            }
            IpAddr::V6(a) => {
                let o = a.octets();
                let net = INNER_V6_NET.octets();
                (o.get(..14) == net.get(..14)).then(|| u16::from_be_bytes([o[14], o[15]]))?
            }
        };
        (1..=MAX_EXIT_CIRCUITS).contains(&i).then_some(i)
    }

    /// A free inner index with its state charged, handed out round-robin.
    fn allocate(&mut self, now: Instant, cost: usize, session: Option<Session>) -> Option<u16> {
        let charge = self.budget.try_charge(cost)?;
        // The next free index after the last one handed out, so a closed circuit's address is
        // not reused at once (its conntrack entries may still be alive).
        let mut i = self.next;
        for _ in 0..MAX_EXIT_CIRCUITS {
            if !self.by_index.contains_key(&i) {
                break;
            }
            i = if i >= MAX_EXIT_CIRCUITS { 1 } else { i + 1 };
        }
        if self.by_index.contains_key(&i) {
            return None;
        }
        self.next = if i >= MAX_EXIT_CIRCUITS { 1 } else { i + 1 };
        self.by_index.insert(
            i,
            Inner {
                slots: Vec::with_capacity(1),
                session,
                client_v4: None,
                client_v6: None,
                bytes: Bucket::new(EXIT_BYTES_BURST, now),
                syns: Bucket::new(EXIT_SYN_BURST, now),
                _charge: charge,
            },
        );
        Some(i)
    }

    /// The inner index of circuit `slot`, a new one of its own if it has no session.
    fn circuit(&mut self, now: Instant, slot: u64) -> Option<u16> {
        match self.by_slot.get(&slot) {
            Some(SlotState { index: Some(i), .. }) => return Some(*i),
            Some(SlotState { evicted: true, .. }) => return None,
            _ => {}
        }
        let i = self.allocate(now, CIRCUIT_COST, None)?;
        if let Some(inner) = self.by_index.get_mut(&i) {
            inner.slots.push(slot);
        }
        self.by_slot.entry(slot).or_default().index = Some(i);
        Some(i)
    }

    /// An `EXIT_SESSION` on circuit `slot`, whose hop value at this exit is `bind`: the answer
    /// to send back, or `None` past [`EXIT_SESSION_ATTACHES`] on the circuit (dropped).
    pub fn on_session(
        &mut self,
        now: Instant,
        slot: u64,
        bind: &[u8; 32],
        payload: &[u8],
    ) -> Option<SessionAck> {
        let state = self.by_slot.entry(slot).or_default();
        if state.attaches >= EXIT_SESSION_ATTACHES {
            self.stats.dropped += 1;
            return None;
        }
        state.attaches += 1;
        let current = state.index;
        let ack = |status, sid| Some(SessionAck { status, sid });
        let req = match SessionRequest::parse(payload) {
            Ok(r) => r,
            Err(_) => return ack(AckStatus::Refused, [0; SID_LEN]),
        };
        let sid = *req.sid();
        if let Some(i) = current {
            // A resend whose answer was lost is answered again; anything else is refused: a
            // circuit belongs to one session, and one that sent packets without keeps its own.
            let same = self
                .by_index
                .get(&i)
                .and_then(|c| c.session.as_ref())
                .is_some_and(|s| s.sid == sid);
            return ack(
                if same {
                    AckStatus::Ok
                } else {
                    AckStatus::Taken
                },
                sid,
            );
        }
        let i = match req {
            SessionRequest::Open { sid, key } => {
                if self.by_sid.contains_key(&sid) {
                    return ack(AckStatus::Taken, sid);
                }
                let session = Session {
                    sid,
                    key: Zeroizing::new(key),
                    opened: now,
                    detached: None,
                };
                let Some(i) = self.allocate(now, SESSION_COST, Some(session)) else {
                    return ack(AckStatus::Full, sid);
                };
                self.by_sid.insert(sid, i);
                i
            }
            SessionRequest::Resume { sid, proof } => {
                let Some(&i) = self.by_sid.get(&sid) else {
                    return ack(AckStatus::Unknown, sid);
                };
                let Some(s) = self.by_index.get(&i).and_then(|c| c.session.as_ref()) else {
                    return ack(AckStatus::Unknown, sid);
                };
                if now.saturating_since(s.opened) >= EXIT_SESSION_MAX_AGE_MS {
                    return ack(AckStatus::Unknown, sid);
                }
                if !session::proof_ok(&s.key, bind, &sid, &proof) {
                    return ack(AckStatus::Refused, sid);
                }
                self.stats.resumed += 1;
                i
            }
        };
        let Some(inner) = self.by_index.get_mut(&i) else {
            return ack(AckStatus::Unknown, sid);
        };
        if let Some(s) = inner.session.as_mut() {
            s.detached = None;
        }
        // At most EXIT_SESSION_CIRCUITS circuits per session: the oldest makes room (a client
        // has one at a time; old ones linger only while their DESTROY is on its way).
        let evict = (inner.slots.len() >= EXIT_SESSION_CIRCUITS).then(|| inner.slots.remove(0));
        inner.slots.push(slot);
        if let Some(old) = evict {
            if let Some(o) = self.by_slot.get_mut(&old) {
                o.index = None;
                o.evicted = true;
            }
        }
        if let Some(st) = self.by_slot.get_mut(&slot) {
            st.index = Some(i);
        }
        ack(AckStatus::Ok, sid)
    }

    /// Timer upkeep: sessions no circuit carried for [`EXIT_SESSION_LINGER_MS`] are forgotten
    /// and their inner addresses freed.
    pub fn expire(&mut self, now: Instant) {
        let gone: Vec<(u16, [u8; SID_LEN])> = self
            .by_index
            .iter()
            .filter_map(|(i, c)| {
                let s = c.session.as_ref()?;
                let d = s.detached?;
                (now.saturating_since(d) >= EXIT_SESSION_LINGER_MS).then_some((*i, s.sid))
            })
            .collect();
        for (i, sid) in gone {
            self.by_index.remove(&i);
            self.by_sid.remove(&sid);
        }
    }

    /// A packet from the client of circuit `slot`. On `Forward` the packet in `p` is ready for
    /// `gnx0` (its length may shrink to the IP length: `p` is truncated); on `Refuse` the answer
    /// for the circuit is in `reply`.
    pub fn on_circuit_packet(
        &mut self,
        now: Instant,
        slot: u64,
        p: &mut Vec<u8>,
        reply: &mut Vec<u8>,
    ) -> Outbound {
        let Some(mut v) = IpView::parse(p).filter(|_| p.len() <= EXIT_PACKET_MAX) else {
            self.stats.dropped += 1;
            return Outbound::Drop(DropReason::Malformed);
        };
        p.truncate(v.len);
        let verdict = if v.fragment {
            Verdict::Protocol
        } else if !self.ipv6 && v.dst.is_ipv6() {
            Verdict::Network
        } else {
            match v.dst_port(p) {
                Some(53) if v.dst == IpAddr::V4(RESOLVER_V4) => Verdict::Allow,
                Some(port) => self.policy.check(v.dst, v.proto, port),
                None if !self.policy.network_allowed(v.dst) => Verdict::Network,
                None => Verdict::Protocol,
            }
        };
        if verdict != Verdict::Allow {
            // Refusals cost nothing at the destination, but are answered at the exit's
            // expense: they take from the circuit's byte budget too, when it has one.
            if let Some(i) = self.by_slot.get(&slot).and_then(|s| s.index) {
                if let Some(c) = self.by_index.get_mut(&i) {
                    if !c
                        .bytes
                        .take_n(now, p.len() as f64, EXIT_BYTES_PER_S, EXIT_BYTES_BURST)
                    {
                        self.stats.rate_limited += 1;
                        return Outbound::Drop(DropReason::RateLimited);
                    }
                }
            }
            return if refusal(reply, p, &v) {
                self.stats.refused += 1;
                Outbound::Refuse(verdict)
            } else {
                self.stats.dropped += 1;
                Outbound::Drop(DropReason::RefusedSilently)
            };
        }
        let Some(i) = self.circuit(now, slot) else {
            self.stats.dropped += 1;
            return Outbound::Drop(DropReason::Full);
        };
        let Some(c) = self.by_index.get_mut(&i) else {
            return Outbound::Drop(DropReason::Full);
        };
        let syn = v.proto == super::policy::PROTO_TCP
            && p.get(v.l4 + 13).is_some_and(|f| f & 0x12 == 0x02);
        if !c
            .bytes
            .take_n(now, p.len() as f64, EXIT_BYTES_PER_S, EXIT_BYTES_BURST)
            || (syn && !c.syns.take(now, EXIT_SYN_PER_S, EXIT_SYN_BURST))
        {
            self.stats.rate_limited += 1;
            return Outbound::Drop(DropReason::RateLimited);
        }
        let (v4, v6) = Self::inner_addresses(i);
        let inner = match v.src {
            IpAddr::V4(s) => {
                c.client_v4 = Some(s);
                IpAddr::V4(v4)
            }
            IpAddr::V6(s) => {
                c.client_v6 = Some(s);
                IpAddr::V6(v6)
            }
        };
        v.set_address(p, false, inner);
        v.reset_ttl(p);
        self.stats.packets_out += 1;
        self.stats.bytes_out += p.len() as u64;
        Outbound::Forward
    }

    /// A packet the kernel wrote to `gnx0`: the circuit it belongs to, with its destination
    /// rewritten to the client's own address. `None`: no such circuit (dropped).
    pub fn on_tun_packet(&mut self, p: &mut Vec<u8>) -> Option<u64> {
        let routed = IpView::parse(p).and_then(|v| {
            let i = Self::index_of(v.dst)?;
            let c = self.by_index.get(&i)?;
            let client = match v.dst {
                IpAddr::V4(_) => c.client_v4.map(IpAddr::V4),
                IpAddr::V6(_) => c.client_v6.map(IpAddr::V6),
            }?;
            // A lingering session has no circuit: the answer is lost, as on a broken link.
            Some((v, client, *c.slots.last()?))
        });
        let Some((mut v, client, slot)) = routed.filter(|(v, ..)| v.len <= EXIT_PACKET_MAX) else {
            self.stats.dropped += 1;
            return None;
        };
        p.truncate(v.len);
        let inner = v.dst;
        v.set_address(p, true, client);
        // An error from beyond quotes what left here, from the inner address.
        super::packet::rewrite_quoted_source(p, &v, inner, client);
        self.stats.packets_in += 1;
        self.stats.bytes_in += p.len() as u64;
        Some(slot)
    }

    /// The circuit `slot` is gone: without a session its inner addresses are free again; a
    /// session's stay with the session, which lingers when no circuit is left.
    pub fn on_circuit_closed(&mut self, now: Instant, slot: u64) {
        let Some(i) = self.by_slot.remove(&slot).and_then(|s| s.index) else {
            return;
        };
        let Some(c) = self.by_index.get_mut(&i) else {
            return;
        };
        c.slots.retain(|s| *s != slot);
        match c.session.as_mut() {
            Some(s) if c.slots.is_empty() => s.detached = Some(now),
            Some(_) => {}
            None => {
                self.by_index.remove(&i);
            }
        }
    }
}

#[cfg(test)]
#[path = "gateway_session_tests.rs"]
mod session_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn gw() -> ExitGateway {
        ExitGateway::new(
            ExitPolicy::new(&[80, 443], &["198.19.250.0/24".parse().unwrap()]),
            MemoryBudget::new(1 << 20),
        )
    }

    fn tcp(src: [u8; 4], dst: [u8; 4], port: u16, syn: bool, data: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ipv4(src, dst, 9).tcp(40000, port, 1, 1000);
        let b = if syn { b.syn() } else { b.ack(1) };
        let mut v = Vec::new();
        b.write(&mut v, data).unwrap();
        v
    }

    fn answer(to: Ipv4Addr, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv4([198, 19, 250, 2], to.octets(), 64)
            .tcp(80, 40000, 1, 1000)
            .ack(2)
            .write(&mut v, data)
            .unwrap();
        v
    }

    #[test]
    fn circuits_get_their_own_inner_address_and_answers_find_them() {
        let mut g = gw();
        let mut reply = Vec::new();
        let client = [100, 127, 255, 1];
        let mut a = tcp(client, [198, 19, 250, 2], 80, true, b"");
        let mut b = a.clone();
        assert_eq!(
            g.on_circuit_packet(Instant::from_unix_ms(0), 7, &mut a, &mut reply),
            Outbound::Forward
        );
        assert_eq!(
            g.on_circuit_packet(Instant::from_unix_ms(0), 9, &mut b, &mut reply),
            Outbound::Forward
        );
        let (sa, sb) = (
            IpView::parse(&a).unwrap().src,
            IpView::parse(&b).unwrap().src,
        );
        assert_ne!(sa, sb, "two circuits share an inner address");
        assert_eq!(IpView::parse(&a).unwrap().dst.to_string(), "198.19.250.2");
        let IpAddr::V4(sb4) = sb else { panic!() };
        let mut ans = answer(sb4, b"hi");
        assert_eq!(g.on_tun_packet(&mut ans), Some(9));
        assert_eq!(IpView::parse(&ans).unwrap().dst, IpAddr::V4(client.into()));
        assert!(etherparse::SlicedPacket::from_ip(&ans).is_ok());
        // Closed circuits' addresses route nowhere.
        g.on_circuit_closed(Instant::from_unix_ms(0), 9);
        let mut ans = answer(sb4, b"hi");
        assert_eq!(g.on_tun_packet(&mut ans), None);
        assert_eq!(g.stats().circuits, 1);
        // An answer to an address no circuit has, or outside the inner network.
        assert_eq!(g.on_tun_packet(&mut answer(GNX_V4, b"")), None);
        assert_eq!(
            g.on_tun_packet(&mut answer(Ipv4Addr::new(1, 2, 3, 4), b"")),
            None
        );
    }

    #[test]
    fn refused_destinations_are_answered_at_once() {
        let mut g = gw();
        let mut reply = Vec::new();
        for (dst, port, why) in [
            ([10, 0, 0, 1], 80, Verdict::Network),
            ([198, 19, 251, 1], 80, Verdict::Network),
            ([100, 127, 0, 2], 80, Verdict::Network),
            ([198, 19, 250, 2], 22, Verdict::Port),
        ] {
            let mut p = tcp([100, 127, 255, 1], dst, port, true, b"");
            assert_eq!(
                g.on_circuit_packet(Instant::from_unix_ms(0), 1, &mut p, &mut reply),
                Outbound::Refuse(why)
            );
            let r = IpView::parse(&reply).unwrap();
            assert_eq!(r.src, IpAddr::V4(dst.into()));
            assert_eq!(r.dst.to_string(), "100.127.255.1");
        }
        // Refusals take no inner address.
        assert_eq!(g.stats().circuits, 0);
        assert_eq!(g.stats().refused, 4);
    }

    /// DNS to the virtual resolver leaves although 100.127.0.0/16 and port 53 are refused.
    #[test]
    fn dns_to_the_virtual_resolver() {
        let mut g = gw();
        let mut reply = Vec::new();
        let mut q = Vec::new();
        PacketBuilder::ipv4(CLIENT_V4.octets(), RESOLVER_V4.octets(), 64)
            .udp(5353, 53)
            .write(&mut q, b"query")
            .unwrap();
        assert_eq!(
            g.on_circuit_packet(Instant::from_unix_ms(0), 1, &mut q, &mut reply),
            Outbound::Forward
        );
        let mut other = tcp(CLIENT_V4.octets(), RESOLVER_V4.octets(), 80, true, b"");
        assert_eq!(
            g.on_circuit_packet(Instant::from_unix_ms(0), 1, &mut other, &mut reply),
            Outbound::Refuse(Verdict::Network)
        );
    }

    /// One circuit's flood never blocks another.
    #[test]
    fn rate_limit_is_per_circuit() {
        let mut g = gw();
        let mut reply = Vec::new();
        let data = [0u8; 1200];
        let mut limited = 0;
        for _ in 0..2000 {
            let mut p = tcp([100, 127, 255, 1], [198, 19, 250, 2], 80, false, &data);
            if g.on_circuit_packet(Instant::from_unix_ms(0), 1, &mut p, &mut reply)
                == Outbound::Drop(DropReason::RateLimited)
            {
                limited += 1;
            }
        }
        assert!(limited > 1000, "{limited}");
        let mut p = tcp([100, 127, 255, 1], [198, 19, 250, 2], 80, false, &data);
        assert_eq!(
            g.on_circuit_packet(Instant::from_unix_ms(0), 2, &mut p, &mut reply),
            Outbound::Forward
        );
        // Time refills the bucket.
        let mut p = tcp([100, 127, 255, 1], [198, 19, 250, 2], 80, false, &data);
        assert_eq!(
            g.on_circuit_packet(Instant::from_unix_ms(1000), 1, &mut p, &mut reply),
            Outbound::Forward
        );
        // SYNs have their own, smaller budget.
        let mut syn_limited = 0;
        for _ in 0..200 {
            let mut p = tcp([100, 127, 255, 1], [198, 19, 250, 2], 80, true, b"");
            if g.on_circuit_packet(Instant::from_unix_ms(1000), 3, &mut p, &mut reply)
                != Outbound::Forward
            {
                syn_limited += 1;
            }
        }
        assert!(syn_limited >= 100, "{syn_limited}");
    }

    #[test]
    fn budget_and_junk() {
        let mut g = ExitGateway::new(ExitPolicy::new(&[80], &[]), MemoryBudget::new(CIRCUIT_COST));
        let mut reply = Vec::new();
        let mut p = tcp([100, 127, 255, 1], [1, 1, 1, 1], 80, true, b"");
        assert_eq!(
            g.on_circuit_packet(Instant::from_unix_ms(0), 1, &mut p.clone(), &mut reply),
            Outbound::Forward
        );
        assert_eq!(
            g.on_circuit_packet(Instant::from_unix_ms(0), 2, &mut p, &mut reply),
            Outbound::Drop(DropReason::Full)
        );
        g.on_circuit_closed(Instant::from_unix_ms(0), 1);
        let mut p = tcp([100, 127, 255, 1], [1, 1, 1, 1], 80, true, b"");
        assert_eq!(
            g.on_circuit_packet(Instant::from_unix_ms(0), 2, &mut p, &mut reply),
            Outbound::Forward
        );
        for junk in [&[][..], &[0x45; 10], &[0x60; 30], &[0u8; 1400]] {
            assert_eq!(
                g.on_circuit_packet(Instant::from_unix_ms(0), 3, &mut junk.to_vec(), &mut reply),
                Outbound::Drop(DropReason::Malformed)
            );
            assert_eq!(g.on_tun_packet(&mut junk.to_vec()), None);
        }
    }

    #[test]
    fn ipv6_round_trip() {
        let mut g = gw();
        let mut reply = Vec::new();
        let dst: Ipv6Addr = "2a00:1450::1".parse().unwrap();
        let mut p = Vec::new();
        PacketBuilder::ipv6(CLIENT_V6.octets(), dst.octets(), 5)
            .udp(5000, 443)
            .write(&mut p, b"x")
            .unwrap();
        assert_eq!(
            g.on_circuit_packet(Instant::from_unix_ms(0), 4, &mut p, &mut reply),
            Outbound::Forward
        );
        let v = IpView::parse(&p).unwrap();
        let IpAddr::V6(inner) = v.src else { panic!() };
        assert_eq!(&inner.octets()[..8], &INNER_V6_NET.octets()[..8]);
        let mut a = Vec::new();
        PacketBuilder::ipv6(dst.octets(), inner.octets(), 60)
            .udp(443, 5000)
            .write(&mut a, b"y")
            .unwrap();
        assert_eq!(g.on_tun_packet(&mut a), Some(4));
        assert_eq!(IpView::parse(&a).unwrap().dst, IpAddr::V6(CLIENT_V6));
        // An exit whose host does not forward IPv6 refuses it at once.
        g.set_ipv6(false);
        let mut p = Vec::new();
        PacketBuilder::ipv6(CLIENT_V6.octets(), dst.octets(), 5)
            .udp(5000, 443)
            .write(&mut p, b"x")
            .unwrap();
        assert_eq!(
            g.on_circuit_packet(Instant::from_unix_ms(0), 4, &mut p, &mut reply),
            Outbound::Refuse(Verdict::Network)
        );
        assert_eq!(IpView::parse(&reply).unwrap().src, IpAddr::V6(dst));
    }
}
