//! What an exit lets out: the default refusals, the operator's ports and extra networks, and the
//! check every packet passes before it leaves (docs/decisions.md "Exits").

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr};

/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

/// Why an exit refuses a packet (or `Allow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Leaves through the exit.
    Allow,
    /// The destination lies in a refused range.
    Network,
    /// TCP/UDP to a port the exit does not list.
    Port,
    /// Neither TCP nor UDP, or a fragment whose ports cannot be seen.
    Protocol,
    /// Not a well-formed IPv4/IPv6 packet.
    Malformed,
}

/// An exit's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitPolicy {
    ports: Vec<u16>,
    allow: Vec<IpNet>,
    local: Vec<IpNet>,
}

impl ExitPolicy {
    /// The policy of `[exit] allow_ports` and `allow_networks`.
    pub fn new(ports: &[u16], allow_networks: &[IpNet]) -> ExitPolicy {
        let mut ports = ports.to_vec();
        ports.sort_unstable();
        ports.dedup();
        ExitPolicy {
            ports,
            allow: allow_networks.to_vec(),
            local: Vec::new(),
        }
    }

    /// The exit host's own networks and its neighbours' underlay addresses, refused unless
    /// `allow_networks` covers them. The daemon refreshes them from its routes and links.
    pub fn set_local(&mut self, nets: Vec<IpNet>) {
        self.local = nets;
    }

    /// The ports.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The extra networks.
    pub fn allow_networks(&self) -> &[IpNet] {
        &self.allow
    }

    /// What the exit publishes (protocol.md 5.5), valid from `now_ms` for a relay record's
    /// lifetime: its ports and extra networks, both families. Its own networks stay unpublished.
    pub fn published(&self, now_ms: u64) -> crate::wire::exit_policy::ExitPolicyFields {
        use crate::wire::exit_policy::{EXIT_FLAG_IPV4, EXIT_FLAG_IPV6};
        crate::wire::exit_policy::ExitPolicyFields {
            flags: EXIT_FLAG_IPV4 | EXIT_FLAG_IPV6,
            ports: self.ports.clone(),
            networks: self.allow.clone(),
            seq: now_ms,
            expires: now_ms / 1000 + crate::wire::record::RELAY_RECORD_LIFETIME_S,
        }
    }

    /// Whether the exit lets anything out to `dst`.
    pub fn network_allowed(&self, dst: IpAddr) -> bool {
        let dst = canonical(dst);
        if self.allow.iter().any(|n| n.contains(&dst)) {
            return true;
        }
        !refused_by_default(dst) && !self.local.iter().any(|n| n.contains(&dst))
    }

    /// The verdict on a TCP/UDP destination.
    pub fn check(&self, dst: IpAddr, proto: u8, port: u16) -> Verdict {
        if !self.network_allowed(dst) {
            Verdict::Network
        } else if proto != PROTO_TCP && proto != PROTO_UDP {
            Verdict::Protocol
        } else if self.ports.binary_search(&port).is_err() {
            Verdict::Port
        } else {
            Verdict::Allow
        }
    }

    /// The verdict on one packet from a client (IPv4 or IPv6, as it arrives in `EXIT_PACKET`).
    /// Fragments are refused: a later fragment has no port to check.
    pub fn check_packet(&self, packet: &[u8]) -> Verdict {
        let Ok(ip) = etherparse::IpSlice::from_slice(packet) else {
            return Verdict::Malformed;
        };
        if ip.is_fragmenting_payload() {
            return Verdict::Protocol;
        }
        let dst = ip.destination_addr();
        let payload = ip.payload();
        let proto = payload.ip_number.0;
        if proto != PROTO_TCP && proto != PROTO_UDP {
            return if self.network_allowed(dst) {
                Verdict::Protocol
            } else {
                Verdict::Network
            };
        }
        match payload.payload.get(2..4) {
            Some(&[a, b]) => self.check(dst, proto, u16::from_be_bytes([a, b])),
            _ => Verdict::Malformed,
        }
    }
}

/// IPv4-mapped and NAT64 (64:ff9b::/96) IPv6 addresses are judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let o = v6.octets();
                return IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            IpAddr::V6(v6)
        }
        v4 => v4,
    }
}

/// Ranges no exit reaches unless the operator lists them: everything that is not the public
/// internet (RFC 6890 special-purpose registries), including the overlay's own fd00::/8 and the
/// 198.18.0.0/15 benchmarking range GlobalNet's tests use as underlay.
pub fn refused_by_default(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(a) => {
            let o = a.octets();
            a.is_unspecified()
                || a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_multicast()
                || a.is_broadcast()
                || a.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64.0.0/10
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18.0.0/15
                || o[0] >= 240 // reserved
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local, the overlay's fd00::/8 among them
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // old site-local
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x2001 && s[1] < 0x0200) // IETF protocol assignments (Teredo, ORCHID...)
                || s[0] == 0x0100 && s[1..4] == [0, 0, 0] // discard-only 100::/64
                || (s[0] & 0xe000) != 0x2000 // outside global unicast 2000::/3
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use std::net::Ipv6Addr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_refusals() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "100.127.255.53",
            "224.0.0.1",
            "255.255.255.255",
            "0.1.2.3",
            "198.18.0.1",
            "198.19.250.1",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "fc00:676e:6578::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(refused_by_default(ip(a)), "{a}");
        }
        for a in ["1.1.1.1", "93.184.216.34", "2a00:1450::1", "::ffff:1.1.1.1"] {
            assert!(!refused_by_default(ip(a)), "{a}");
        }
    }

    #[test]
    fn allow_networks_and_own_networks() {
        let mut p = ExitPolicy::new(&[443, 80], &["198.19.250.0/24".parse().unwrap()]);
        assert_eq!(p.ports(), &[80, 443]);
        assert_eq!(p.check(ip("198.19.250.2"), PROTO_TCP, 80), Verdict::Allow);
        assert_eq!(p.check(ip("198.19.251.2"), PROTO_TCP, 80), Verdict::Network);
        assert_eq!(p.check(ip("1.1.1.1"), PROTO_UDP, 443), Verdict::Allow);
        assert_eq!(p.check(ip("1.1.1.1"), PROTO_TCP, 22), Verdict::Port);
        assert_eq!(p.check(ip("1.1.1.1"), 1, 0), Verdict::Protocol);
        // The exit's own public network and a neighbour's underlay address.
        p.set_local(vec![
            "203.0.113.0/24".parse().unwrap(),
            "1.1.1.1/32".parse().unwrap(),
        ]);
        assert_eq!(p.check(ip("1.1.1.1"), PROTO_TCP, 80), Verdict::Network);
        assert_eq!(
            p.check(ip("::ffff:1.1.1.1"), PROTO_TCP, 80),
            Verdict::Network
        );
    }

    /// What clients choose by (the published policy) and what the exit enforces agree.
    #[test]
    fn the_published_policy_is_the_enforced_one() {
        use crate::exit::choose::{policy_allows, Destination};
        use crate::wire::exit_policy::ExitPolicyRecord;
        let p = ExitPolicy::new(&[80, 443], &["198.19.250.0/24".parse().unwrap()]);
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let now = 1_767_225_600_000;
        let rec = ExitPolicyRecord::sign(&key, p.published(now)).unwrap();
        let rec = ExitPolicyRecord::parse(rec.bytes(), now).unwrap();
        for dst in [
            "198.19.250.7",
            "198.19.251.7",
            "1.1.1.1",
            "10.0.0.1",
            "2a00::1",
            "fd00::1",
        ] {
            for (proto, port) in [(PROTO_TCP, 80), (PROTO_UDP, 443), (PROTO_TCP, 22), (1, 0)] {
                let d = Destination {
                    ip: ip(dst),
                    proto,
                    port,
                };
                assert_eq!(
                    policy_allows(rec.fields(), &d),
                    p.check(d.ip, proto, port) == Verdict::Allow,
                    "{dst} {proto} {port}"
                );
            }
        }
    }

    fn tcp(src: [u8; 4], dst: [u8; 4], port: u16) -> Vec<u8> {
        let b = PacketBuilder::ipv4(src, dst, 64).tcp(40000, port, 1, 1000);
        let mut out = Vec::new();
        b.write(&mut out, &[]).unwrap();
        out
    }

    #[test]
    fn packets() {
        let p = ExitPolicy::new(&[80], &["198.19.250.0/24".parse().unwrap()]);
        let ok = tcp([100, 127, 0, 2], [198, 19, 250, 2], 80);
        assert_eq!(p.check_packet(&ok), Verdict::Allow);
        assert_eq!(
            p.check_packet(&tcp([100, 127, 0, 2], [198, 19, 250, 2], 81)),
            Verdict::Port
        );
        assert_eq!(
            p.check_packet(&tcp([100, 127, 0, 2], [10, 0, 0, 1], 80)),
            Verdict::Network
        );
        let mut v6 = Vec::new();
        PacketBuilder::ipv6([0xfc; 16], ip_octets("2a00:1450::1"), 64)
            .udp(5000, 80)
            .write(&mut v6, b"x")
            .unwrap();
        assert_eq!(p.check_packet(&v6), Verdict::Allow);
        let mut icmp = Vec::new();
        PacketBuilder::ipv4([100, 127, 0, 2], [198, 19, 250, 2], 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut icmp, &[])
            .unwrap();
        assert_eq!(p.check_packet(&icmp), Verdict::Protocol);
        // Truncations and junk are refused, never a panic.
        for n in 0..ok.len() {
            assert_ne!(p.check_packet(&ok[..n]), Verdict::Allow, "{n}");
        }
        assert_eq!(p.check_packet(&[0x45; 3]), Verdict::Malformed);
    }

    fn ip_octets(s: &str) -> [u8; 16] {
        s.parse::<Ipv6Addr>().unwrap().octets()
    }
}
