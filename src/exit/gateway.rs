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

use super::packet::{refusal, IpView, EXIT_PACKET_MAX};
use super::policy::{ExitPolicy, Verdict};
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
}

struct Circuit {
    slot: u64,
    client_v4: Option<Ipv4Addr>,
    client_v6: Option<Ipv6Addr>,
    bytes: Bucket,
    syns: Bucket,
    _charge: Charge,
}

/// The exit's circuits and their inner addresses.
pub struct ExitGateway {
    policy: ExitPolicy,
    by_slot: BTreeMap<u64, u16>,
    by_index: BTreeMap<u16, Circuit>,
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
            circuits: self.by_slot.len() as u64,
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

    fn circuit(&mut self, now: Instant, slot: u64) -> Option<u16> {
        if let Some(&i) = self.by_slot.get(&slot) {
            return Some(i);
        }
        let charge = self.budget.try_charge(CIRCUIT_COST)?;
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
        self.by_slot.insert(slot, i);
        self.by_index.insert(
            i,
            Circuit {
                slot,
                client_v4: None,
                client_v6: None,
                bytes: Bucket::new(EXIT_BYTES_BURST, now),
                syns: Bucket::new(EXIT_SYN_BURST, now),
                _charge: charge,
            },
        );
        Some(i)
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
            if let Some(&i) = self.by_slot.get(&slot) {
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
            Some((v, client, c.slot))
        });
        let Some((mut v, client, slot)) = routed.filter(|(v, ..)| v.len <= EXIT_PACKET_MAX) else {
            self.stats.dropped += 1;
            return None;
        };
        p.truncate(v.len);
        v.set_address(p, true, client);
        self.stats.packets_in += 1;
        self.stats.bytes_in += p.len() as u64;
        Some(slot)
    }

    /// The circuit `slot` is gone: its inner addresses are free again.
    pub fn on_circuit_closed(&mut self, slot: u64) {
        if let Some(i) = self.by_slot.remove(&slot) {
            self.by_index.remove(&i);
        }
    }
}

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
        g.on_circuit_closed(9);
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
        g.on_circuit_closed(1);
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
