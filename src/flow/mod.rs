//! The flow layer (DESIGN.md sections 3 and 6, docs/protocol.md 10.8 and 10.9): everything
//! between the TUN and the session layer.
//!
//! Outbound (kernel → peer), [`FlowLayer::on_tun_packet`]: drops the kernel's own chatter and
//! what is not overlay traffic, answers oversize packets with Packet Too Big and unsendable
//! shapes with "administratively prohibited", tracks the packet's flow, rewrites our source to the
//! address the peer knows us by (our pseudonym for that destination, or our own address on flows a
//! client opened to our service) and normalises it. Inbound (peer → kernel),
//! [`FlowLayer::on_session_packet`]: checks the shape and the source, lets through what belongs
//! to a flow we have or opens a flow to an exposed port, refuses everything else with a TCP RST or
//! ICMPv6 "administratively prohibited" sent back to the peer, and rewrites our pseudonym back to
//! the kernel's view.
//!
//! Pure and sans-IO: the daemon's tasks move the bytes; packets are edited in place and replies
//! are built in a buffer the caller reuses, so steady state allocates nothing. It must never
//! panic on any bytes, from the TUN (any local program) or from a session (any peer). Sessions
//! queue packets while they are set up, so the flow layer keeps no packet queues, only the head
//! of each new flow's first packet so that an unreachable destination can be answered.
//!
//! | module       | what                                                         |
//! |--------------|--------------------------------------------------------------|
//! | [`packet`]   | checked view of inner packets; rewrite, checksums, normalise |
//! | [`checksum`] | Internet checksum and its incremental update                 |
//! | [`gso`]      | cutting the offload TUN's super-segments into packets        |
//! | [`gro`]      | coalescing a flow's packets for the offload TUN's writer     |
//! | [`table`]    | the flow table                                               |
//! | [`policy`]   | exposed ports and the inbound source check                   |
//! | [`reply`]    | ICMPv6 errors and TCP RST built by the daemon                |

pub mod checksum;
pub mod fq;
pub mod gro;
pub mod gso;
pub mod packet;
pub mod policy;
pub mod reply;
pub mod table;

use std::collections::HashMap;
use std::net::Ipv6Addr;
use zeroize::Zeroizing;

use crate::budget::MemoryBudget;
use crate::config::OVERLAY_MTU;
use crate::crypto::is_overlay;
use crate::session::Pseudonym;
use crate::time::{Bucket, Instant, Millis};
use packet::{Field, IPV6_HEADER_LEN, PROTO_TCP, TCP_ACK, TCP_RST, TCP_SYN};
pub use packet::{FlowKey, Packet, PacketError, Transport};
pub use policy::{Policy, ServicePorts};
use reply::{
    CODE_ADDRESS_UNREACHABLE, CODE_ADMIN_PROHIBITED, ICMP_DEST_UNREACHABLE, ICMP_PACKET_TOO_BIG,
};
pub use table::{FlowTable, LocalAddress, Origin, TableError};

/// Most pseudonym addresses cached (each costs an HKDF and an Ed25519 base multiplication).
pub const PSEUDONYM_CACHE: usize = 4096;
/// Most new flows remembered while their destination may still turn out unreachable.
pub const MAX_PENDING: usize = 256;
/// How long a new flow's first packet is kept for an unreachable answer (the session layer's
/// introduction and rendezvous take at most `REND_TIMEOUT_S` per attempt).
pub const PENDING_MS: Millis = 70_000;
/// Bytes of a new flow's first packet kept for the quote (IPv6 + TCP header with options).
pub const PENDING_HEAD: usize = 128;
/// Refusals sent to peers per second (RST or ICMPv6), and the burst.
pub const REFUSAL_RATE: u32 = 100;

/// Why a packet was dropped without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not an IPv6 packet.
    NotIpv6,
    /// Truncated or inconsistent headers.
    Malformed,
    /// Multicast destination (MLD reports, router and neighbour solicitations, ...).
    Multicast,
    /// Neighbour discovery, router discovery, MLD or another ICMPv6 informational message that
    /// no flow carries.
    LinkLocalControl,
    /// The destination is outside `fd00::/8`; nothing but overlay traffic belongs on gn0.
    NotOverlay,
    /// An ICMPv6 error that quotes no flow we know (and errors are never answered).
    IcmpError,
    /// The source is not the node's own address (kernel side), or is outside the overlay or in
    /// a prefix routed through another interface (session side).
    BadSource,
    /// The destination is neither our address nor our pseudonym for the sender.
    NotOurs,
    /// An extension header, fragment or other protocol from a peer.
    Protocol,
    /// Refused, but the refusal itself was not sent (never for a RST, over the refusal rate).
    Refused,
    /// The flow table or memory budget is full.
    TableFull,
}

/// What to do with a packet read from the TUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunVerdict {
    /// The packet (edited in place) goes to `dst` with `Node::send_packet`.
    Send {
        /// The overlay destination.
        dst: [u8; 16],
    },
    /// Write the reply built in the output buffer back into the TUN.
    Reply(ReplyKind),
    /// Drop it.
    Drop(DropReason),
}

/// What to do with a packet that arrived on a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionVerdict {
    /// Write the packet (edited in place) into the TUN.
    Deliver,
    /// Refused: send the reply built in the output buffer back to the peer `dst` with
    /// `Node::send_packet`.
    Refuse {
        /// The peer.
        dst: [u8; 16],
    },
    /// Drop it.
    Drop(DropReason),
}

/// Which ICMPv6 error a reply to the local kernel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// Destination Unreachable, code 3 (address unreachable).
    Unreachable,
    /// Destination Unreachable, code 1 (administratively prohibited): a shape 10.9 forbids.
    Prohibited,
    /// Packet Too Big with the overlay MTU.
    PacketTooBig,
}

/// Counters for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Packets from the kernel handed to sessions.
    pub to_peers: u64,
    /// Packets from sessions written to the kernel.
    pub to_kernel: u64,
    /// Refusals sent to peers (RST or ICMPv6 prohibited).
    pub refused: u64,
    /// ICMPv6 errors written to the kernel (unreachable, too big, prohibited).
    pub icmp_to_kernel: u64,
    /// Packets from the kernel dropped.
    pub dropped_from_kernel: u64,
    /// Packets from sessions dropped.
    pub dropped_from_peers: u64,
    /// Packets from sessions dropped by the source check.
    pub foreign_sources: u64,
}

/// The node's identity as the flow layer needs it.
pub struct FlowConfig {
    /// The node's own overlay address (gn0's address; its default service's address).
    pub address: Ipv6Addr,
    /// The default service key's seed: pseudonyms derive from it (docs/protocol.md 10.1).
    pub client_seed: Zeroizing<[u8; 32]>,
    /// Destinations shown our real address instead of a pseudonym (`[client] real_identity`).
    pub real_identity_for: Vec<Ipv6Addr>,
    /// The inbound policy.
    pub policy: Policy,
}

struct Pending {
    head: [u8; PENDING_HEAD],
    len: usize,
    at: Instant,
}

/// The flow layer's state.
pub struct FlowLayer {
    own: [u8; 16],
    seed: Zeroizing<[u8; 32]>,
    real_identity_for: Vec<[u8; 16]>,
    policy: Policy,
    table: FlowTable,
    pseudonyms: HashMap<[u8; 16], [u8; 16]>,
    pending: HashMap<FlowKey, Pending>,
    refusals: Bucket,
    stats: FlowStats,
}

impl FlowLayer {
    /// A flow layer for a node, charging peer-opened flows to `budget`.
    pub fn new(cfg: FlowConfig, budget: MemoryBudget) -> FlowLayer {
        FlowLayer {
            own: cfg.address.octets(),
            seed: cfg.client_seed,
            real_identity_for: cfg.real_identity_for.iter().map(|a| a.octets()).collect(),
            policy: cfg.policy,
            table: FlowTable::new(budget, table::MAX_FLOWS),
            pseudonyms: HashMap::new(),
            pending: HashMap::new(),
            refusals: Bucket::new(f64::from(REFUSAL_RATE), Instant::ZERO),
            stats: FlowStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> &FlowStats {
        &self.stats
    }

    /// Flows held now.
    pub fn flows(&self) -> usize {
        self.table.len()
    }

    /// The inbound policy (to refresh the foreign prefixes).
    pub fn policy_mut(&mut self) -> &mut Policy {
        &mut self.policy
    }

    /// The address the peer `dst` knows us by when we open a flow to it.
    pub fn address_for(&mut self, dst: &[u8; 16]) -> [u8; 16] {
        if self.real_identity_for.contains(dst) {
            return self.own;
        }
        if let Some(a) = self.pseudonyms.get(dst) {
            return *a;
        }
        let a = Pseudonym::derive(&self.seed, &Ipv6Addr::from(*dst))
            .address()
            .octets();
        if self.pseudonyms.len() >= PSEUDONYM_CACHE {
            self.pseudonyms.clear();
        }
        self.pseudonyms.insert(*dst, a);
        a
    }

    /// Decides what to do with `pkt`, read from the TUN. On [`TunVerdict::Send`] the packet has
    /// been rewritten and normalised in place; on [`TunVerdict::Reply`] `out` holds the reply.
    pub fn on_tun_packet(&mut self, now: Instant, pkt: &mut [u8], out: &mut Vec<u8>) -> TunVerdict {
        let v = self.tun_inner(now, pkt, out);
        match v {
            TunVerdict::Send { .. } => self.stats.to_peers += 1,
            TunVerdict::Reply(_) => self.stats.icmp_to_kernel += 1,
            TunVerdict::Drop(_) => self.stats.dropped_from_kernel += 1,
        }
        v
    }

    fn tun_inner(&mut self, now: Instant, pkt: &mut [u8], out: &mut Vec<u8>) -> TunVerdict {
        match pkt.first() {
            Some(b) if b >> 4 == 6 => {}
            _ => return TunVerdict::Drop(DropReason::NotIpv6),
        }
        let (Some(src), Some(dst), Some(&next)) = (
            pkt.get(8..24).and_then(|s| <[u8; 16]>::try_from(s).ok()),
            pkt.get(24..40).and_then(|s| <[u8; 16]>::try_from(s).ok()),
            pkt.get(6),
        ) else {
            return TunVerdict::Drop(DropReason::Malformed);
        };
        let icmp_type = if next == packet::PROTO_ICMPV6 {
            pkt.get(IPV6_HEADER_LEN).copied()
        } else {
            None
        };
        // Router/neighbour discovery, redirects, MLD: the kernel's own chatter.
        if matches!(icmp_type, Some(130..=137) | Some(143)) {
            return TunVerdict::Drop(DropReason::LinkLocalControl);
        }
        let dst_ip = Ipv6Addr::from(dst);
        if dst_ip.is_multicast() {
            return TunVerdict::Drop(DropReason::Multicast);
        }
        if !is_overlay(&dst_ip) {
            return TunVerdict::Drop(DropReason::NotOverlay);
        }
        // The node's own address, or a named service's answering its visitors.
        let service = src != self.own;
        if service && !self.policy.is_service(&src) {
            return TunVerdict::Drop(DropReason::BadSource);
        }
        let is_error = matches!(icmp_type, Some(t) if t < 128);
        if pkt.len() > usize::from(OVERLAY_MTU) {
            if is_error {
                return TunVerdict::Drop(DropReason::IcmpError);
            }
            let mtu = u32::from(OVERLAY_MTU);
            reply::icmp_error(out, &dst, &src, ICMP_PACKET_TOO_BIG, 0, mtu, pkt);
            return TunVerdict::Reply(ReplyKind::PacketTooBig);
        }
        let p = match packet::parse(pkt) {
            Ok(p) => p,
            Err(PacketError::Protocol(_)) if !is_error => {
                let code = CODE_ADMIN_PROHIBITED;
                reply::icmp_error(out, &dst, &src, ICMP_DEST_UNREACHABLE, code, 0, pkt);
                return TunVerdict::Reply(ReplyKind::Prohibited);
            }
            Err(_) => return TunVerdict::Drop(DropReason::Malformed),
        };
        let local = match p.transport {
            Transport::IcmpError { .. } => {
                // An error our kernel makes about a packet a peer sent: it belongs to that flow.
                let Ok(q) = packet::parse_quoted(pkt) else {
                    return TunVerdict::Drop(DropReason::IcmpError);
                };
                if q.src != dst || q.dst != src {
                    return TunVerdict::Drop(DropReason::IcmpError);
                }
                let Some(key) = q.flow_key(false) else {
                    return TunVerdict::Drop(DropReason::IcmpError);
                };
                match self.table.get_mut(&key, now) {
                    Some(f) => f.local,
                    None => return TunVerdict::Drop(DropReason::IcmpError),
                }
            }
            Transport::IcmpOther { .. } => return TunVerdict::Drop(DropReason::LinkLocalControl),
            _ => {
                let Some(key) = p.flow_key(true) else {
                    return TunVerdict::Drop(DropReason::Malformed);
                };
                let flags = tcp_flags(&p);
                if let Some(f) = self.table.get_mut(&key, now) {
                    f.touch(now, flags, true);
                    f.local
                } else if service {
                    // A named service answers its visitors; it never opens flows (its
                    // address would then be tied to this node's client side).
                    return TunVerdict::Drop(DropReason::BadSource);
                } else {
                    // A flow our kernel opens is a client flow, under our pseudonym for the
                    // destination, even towards a peer that visits our service: otherwise a
                    // service could visit us with its real identity and then recognise our
                    // address on our own visits to it. (So a service answers its visitors but
                    // never opens flows to them.)
                    let local = if self.real_identity_for.contains(&dst) {
                        LocalAddress::Own
                    } else {
                        LocalAddress::Pseudonym
                    };
                    match self.table.insert(key, Origin::Local, local, now) {
                        Ok(f) => f.touch(now, flags, true),
                        Err(_) => return TunVerdict::Drop(DropReason::TableFull),
                    }
                    self.remember_pending(key, pkt, now);
                    local
                }
            }
        };
        if local == LocalAddress::Pseudonym {
            let a = self.address_for(&dst);
            packet::rewrite(pkt, Field::Source, &a);
        }
        packet::normalise(pkt);
        TunVerdict::Send { dst }
    }

    fn remember_pending(&mut self, key: FlowKey, pkt: &[u8], now: Instant) {
        if self.pending.len() >= MAX_PENDING {
            self.pending
                .retain(|_, p| now.saturating_since(p.at) <= PENDING_MS);
            if self.pending.len() >= MAX_PENDING {
                return;
            }
        }
        let len = pkt.len().min(PENDING_HEAD);
        let mut head = [0u8; PENDING_HEAD];
        if let (Some(d), Some(s)) = (head.get_mut(..len), pkt.get(..len)) {
            d.copy_from_slice(s);
        }
        self.pending.insert(key, Pending { head, len, at: now });
    }

    /// `Node::send_packet` refused `pkt` (as [`FlowLayer::on_tun_packet`] left it) at once:
    /// writes ICMPv6 address unreachable for the kernel into `out`. Returns `false` (nothing to
    /// write) for an ICMPv6 error, which is never answered.
    pub fn on_send_failed(&mut self, pkt: &[u8], out: &mut Vec<u8>) -> bool {
        let Ok(p) = packet::parse(pkt) else {
            return false;
        };
        if matches!(p.transport, Transport::IcmpError { .. }) {
            return false;
        }
        if let Some(mut k) = p.flow_key(true) {
            // The pending head was keyed before our source became the pseudonym.
            if k.local != self.own && !self.policy.is_service(&k.local) {
                k.local = self.own;
            }
            self.pending.remove(&k);
        }
        // Quote the packet as the peer would have seen it, then turn our pseudonym back into
        // the kernel's view (outer destination and quoted source together).
        let code = CODE_ADDRESS_UNREACHABLE;
        reply::icmp_error(out, &p.dst, &p.src, ICMP_DEST_UNREACHABLE, code, 0, pkt);
        packet::rewrite(out, Field::Destination, &self.own);
        self.stats.icmp_to_kernel += 1;
        true
    }

    /// The session layer gave up on `dst` (`NodeEvent::Unreachable`): answers the first packet
    /// of every new flow that waited for it with ICMPv6 address unreachable, each written into
    /// `out` and handed to `emit`. Returns how many.
    pub fn on_unreachable(
        &mut self,
        dst: &[u8; 16],
        out: &mut Vec<u8>,
        mut emit: impl FnMut(&[u8]),
    ) -> usize {
        let mut n = 0;
        let own = self.own;
        self.pending.retain(|k, p| {
            if &k.remote != dst {
                return true;
            }
            let quote = p.head.get(..p.len).unwrap_or(&[]);
            let code = CODE_ADDRESS_UNREACHABLE;
            reply::icmp_error(out, dst, &own, ICMP_DEST_UNREACHABLE, code, 0, quote);
            emit(out);
            n += 1;
            false
        });
        self.stats.icmp_to_kernel += n as u64;
        n
    }

    /// Decides what to do with `pkt`, an inner packet a session delivered (its source is the
    /// session's peer). On [`SessionVerdict::Deliver`] the packet has been rewritten to the
    /// kernel's view in place; on [`SessionVerdict::Refuse`] `out` holds the refusal.
    pub fn on_session_packet(
        &mut self,
        now: Instant,
        pkt: &mut [u8],
        out: &mut Vec<u8>,
    ) -> SessionVerdict {
        let v = self.session_inner(now, pkt, out);
        match v {
            SessionVerdict::Deliver => self.stats.to_kernel += 1,
            SessionVerdict::Refuse { .. } => self.stats.refused += 1,
            SessionVerdict::Drop(DropReason::BadSource) => {
                self.stats.foreign_sources += 1;
                self.stats.dropped_from_peers += 1;
            }
            SessionVerdict::Drop(_) => self.stats.dropped_from_peers += 1,
        }
        v
    }

    fn session_inner(&mut self, now: Instant, pkt: &mut [u8], out: &mut Vec<u8>) -> SessionVerdict {
        let p = match packet::parse(pkt) {
            Ok(p) => p,
            Err(PacketError::Protocol(_)) => return SessionVerdict::Drop(DropReason::Protocol),
            Err(PacketError::NotIpv6) => return SessionVerdict::Drop(DropReason::NotIpv6),
            Err(_) => return SessionVerdict::Drop(DropReason::Malformed),
        };
        if !self.policy.source_allowed(&p.src) {
            return SessionVerdict::Drop(DropReason::BadSource);
        }
        let local = if p.dst == self.own || self.policy.is_service(&p.dst) {
            LocalAddress::Own
        } else if p.dst == self.address_for(&p.src) {
            LocalAddress::Pseudonym
        } else {
            return SessionVerdict::Drop(DropReason::NotOurs);
        };
        match p.transport {
            Transport::IcmpError { .. } => {
                // It must quote a packet we sent on a flow we have, as the peer saw it.
                let Ok(q) = packet::parse_quoted(pkt) else {
                    return SessionVerdict::Drop(DropReason::IcmpError);
                };
                if q.src != p.dst || q.dst != p.src {
                    return SessionVerdict::Drop(DropReason::IcmpError);
                }
                let known = q
                    .flow_key(true)
                    .map(|k| self.kernel_key(k, local))
                    .and_then(|k| self.table.get_mut(&k, now))
                    .is_some_and(|f| f.local == local);
                if !known {
                    return SessionVerdict::Drop(DropReason::IcmpError);
                }
            }
            Transport::IcmpOther { .. } => {
                return SessionVerdict::Drop(DropReason::LinkLocalControl)
            }
            _ => {
                let Some(key) = p.flow_key(false) else {
                    return SessionVerdict::Drop(DropReason::Malformed);
                };
                let key = self.kernel_key(key, local);
                let flags = tcp_flags(&p);
                match self.table.get_mut(&key, now) {
                    Some(f) if f.local == local => {
                        f.touch(now, flags, false);
                        self.pending.remove(&key);
                    }
                    Some(_) => return self.refuse(now, &p, pkt, out),
                    None => {
                        let opens = match p.transport {
                            Transport::Tcp { dport, .. } | Transport::Udp { dport, .. } => {
                                let proto = p.transport.protocol();
                                local == LocalAddress::Own
                                    && if p.dst == self.own {
                                        self.policy.exposed(proto, dport)
                                    } else {
                                        self.policy.service_exposed(&p.dst, proto, dport)
                                    }
                            }
                            Transport::Echo { request, .. } => {
                                request && local == LocalAddress::Own
                            }
                            _ => false,
                        };
                        if !opens {
                            return self.refuse(now, &p, pkt, out);
                        }
                        match self.table.insert(key, Origin::Remote, local, now) {
                            Ok(f) => f.touch(now, flags, false),
                            Err(_) => return SessionVerdict::Drop(DropReason::TableFull),
                        }
                    }
                }
            }
        }
        if local == LocalAddress::Pseudonym {
            packet::rewrite(pkt, Field::Destination, &self.own);
        }
        SessionVerdict::Deliver
    }

    /// A flow key as the peer's packet shows it, in the kernel's view: our pseudonym is the
    /// node's own address there.
    fn kernel_key(&self, mut key: FlowKey, local: LocalAddress) -> FlowKey {
        if local == LocalAddress::Pseudonym {
            key.local = self.own;
        }
        key
    }

    /// Refuses `pkt` towards its sender: RST for a SYN, ICMPv6 administratively prohibited for
    /// anything else but a RST (never answered), rate-limited.
    fn refuse(
        &mut self,
        now: Instant,
        p: &Packet,
        pkt: &[u8],
        out: &mut Vec<u8>,
    ) -> SessionVerdict {
        let flags = tcp_flags(p).unwrap_or(0);
        if flags & TCP_RST != 0
            || !self
                .refusals
                .take(now, f64::from(REFUSAL_RATE), f64::from(REFUSAL_RATE))
        {
            return SessionVerdict::Drop(DropReason::Refused);
        }
        if flags & TCP_SYN != 0 && flags & TCP_ACK == 0 {
            reply::tcp_rst(out, pkt);
        } else {
            let code = CODE_ADMIN_PROHIBITED;
            reply::icmp_error(out, &p.dst, &p.src, ICMP_DEST_UNREACHABLE, code, 0, pkt);
        }
        if out.is_empty() {
            return SessionVerdict::Drop(DropReason::Refused);
        }
        SessionVerdict::Refuse { dst: p.src }
    }

    /// Expires idle flows and stale pending heads; call about once a second.
    pub fn sweep(&mut self, now: Instant) {
        self.table.sweep(now);
        self.pending
            .retain(|_, p| now.saturating_since(p.at) <= PENDING_MS);
    }
}

fn tcp_flags(p: &Packet) -> Option<u8> {
    match p.transport {
        Transport::Tcp { flags, .. } if p.transport.protocol() == PROTO_TCP => Some(flags),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
