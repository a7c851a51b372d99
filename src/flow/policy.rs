//! Inbound policy: which ports of the node's own address the overlay may reach (`[expose]`,
//! default deny), and the source check of DESIGN.md section 3: a packet whose source lies in a
//! prefix routed through another interface (a LAN's ULA prefix) never reaches the kernel, so that
//! grinding keys for an address inside a LAN's prefix buys no entry past the LAN's firewall.

use std::net::Ipv6Addr;

use super::packet::{PROTO_TCP, PROTO_UDP};
use crate::crypto::is_overlay;

/// Most foreign prefixes kept (a host has a handful; a huge table is cut, not trusted).
pub const MAX_FOREIGN_PREFIXES: usize = 1024;

/// The inbound policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    tcp: Vec<u16>,
    udp: Vec<u16>,
    /// Prefixes inside fd00::/8 routed through interfaces other than the TUN: (prefix, length).
    foreign: Vec<(u128, u8)>,
}

impl Policy {
    /// A policy exposing `tcp` and `udp` ports on the node's own address.
    pub fn new(tcp: &[u16], udp: &[u16]) -> Policy {
        Policy {
            tcp: tcp.to_vec(),
            udp: udp.to_vec(),
            foreign: Vec::new(),
        }
    }

    /// Whether `port` of protocol `proto` is exposed.
    pub fn exposed(&self, proto: u8, port: u16) -> bool {
        match proto {
            PROTO_TCP => self.tcp.contains(&port),
            PROTO_UDP => self.udp.contains(&port),
            _ => false,
        }
    }

    /// Replaces the prefixes routed elsewhere. Only prefixes longer than /8 inside fd00::/8
    /// matter (a peer's address is always in fd00::/8; a route covering all of fd00::/8 or more,
    /// such as a default route, is the overlay's own business and would refuse everything).
    pub fn set_foreign_prefixes(&mut self, prefixes: impl IntoIterator<Item = (Ipv6Addr, u8)>) {
        self.foreign.clear();
        for (addr, len) in prefixes {
            if len > 8
                && len <= 128
                && is_overlay(&addr)
                && self.foreign.len() < MAX_FOREIGN_PREFIXES
            {
                let p = mask(u128::from(addr), len);
                if !self.foreign.contains(&(p, len)) {
                    self.foreign.push((p, len));
                }
            }
        }
    }

    /// The prefixes the source check refuses.
    pub fn foreign_prefixes(&self) -> impl Iterator<Item = (Ipv6Addr, u8)> + '_ {
        self.foreign.iter().map(|(p, l)| (Ipv6Addr::from(*p), *l))
    }

    /// Whether `src` may be the source of a packet written into the TUN: inside fd00::/8 and in
    /// no prefix routed through another interface.
    pub fn source_allowed(&self, src: &[u8; 16]) -> bool {
        let a = Ipv6Addr::from(*src);
        if !is_overlay(&a) {
            return false;
        }
        let v = u128::from(a);
        !self.foreign.iter().any(|(p, l)| mask(v, *l) == *p)
    }
}

fn mask(v: u128, len: u8) -> u128 {
    match len {
        0 => 0,
        l if l >= 128 => v,
        l => v & !(u128::MAX >> l),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_default_deny() {
        let p = Policy::new(&[22, 80], &[53]);
        assert!(p.exposed(PROTO_TCP, 22) && p.exposed(PROTO_UDP, 53));
        assert!(!p.exposed(PROTO_TCP, 53) && !p.exposed(PROTO_UDP, 22) && !p.exposed(58, 0));
        assert!(!Policy::default().exposed(PROTO_TCP, 22));
    }

    #[test]
    fn lan_prefixes_are_refused() {
        let mut p = Policy::default();
        let lan: Ipv6Addr = "fd12:3456:789a:1::".parse().unwrap();
        p.set_foreign_prefixes([
            (lan, 64),
            ("::".parse().unwrap(), 0),          // default route: ignored
            ("fd00::".parse().unwrap(), 8),      // all of the overlay: ignored
            ("2001:db8::".parse().unwrap(), 32), // not overlay: irrelevant
            ("fd00::2".parse().unwrap(), 128),   // a host route
        ]);
        assert_eq!(p.foreign_prefixes().count(), 2);
        let inside: Ipv6Addr = "fd12:3456:789a:1::99".parse().unwrap();
        let outside: Ipv6Addr = "fd12:3456:789a:2::99".parse().unwrap();
        assert!(!p.source_allowed(&inside.octets()));
        assert!(p.source_allowed(&outside.octets()));
        assert!(!p.source_allowed(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets()));
        assert!(p.source_allowed(&"fd00::3".parse::<Ipv6Addr>().unwrap().octets()));
        assert!(!p.source_allowed(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets()));
    }
}
