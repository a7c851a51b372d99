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
    /// The named services' addresses and their TCP and UDP ports.
    services: Vec<ServicePorts>,
}

/// A named hosted service's address and the ports open on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServicePorts {
    /// The service's overlay address.
    pub address: [u8; 16],
    /// TCP ports open on it.
    pub tcp: Vec<u16>,
    /// UDP ports open on it.
    pub udp: Vec<u16>,
}

impl Policy {
    /// A policy exposing `tcp` and `udp` ports on the node's own address.
    pub fn new(tcp: &[u16], udp: &[u16]) -> Policy {
        Policy {
            tcp: tcp.to_vec(),
            udp: udp.to_vec(),
            foreign: Vec::new(),
            services: Vec::new(),
        }
    }

    /// Replaces the named services (a reload); the node's own address keeps its ports.
    pub fn set_services(&mut self, services: Vec<ServicePorts>) {
        self.services = services;
    }

    /// Replaces the ports of the node's own address (`[expose]`, on a reload).
    pub fn set_own_ports(&mut self, tcp: &[u16], udp: &[u16]) {
        self.tcp = tcp.to_vec();
        self.udp = udp.to_vec();
    }

    /// Whether `addr` is a named service's address.
    pub fn is_service(&self, addr: &[u8; 16]) -> bool {
        self.services.iter().any(|s| &s.address == addr)
    }

    /// Whether `port` of protocol `proto` is open on the named service at `addr`: each service
    /// opens its own ports only.
    pub fn service_exposed(&self, addr: &[u8; 16], proto: u8, port: u16) -> bool {
        self.services.iter().any(|s| {
            &s.address == addr
                && match proto {
                    PROTO_TCP => s.tcp.contains(&port),
                    PROTO_UDP => s.udp.contains(&port),
                    _ => false,
                }
        })
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
    fn each_service_opens_its_own_ports() {
        let mut p = Policy::new(&[22], &[]);
        let (a, b) = ([0xfd; 16], [0xfe; 16]);
        p.set_services(vec![
            ServicePorts {
                address: a,
                tcp: vec![80],
                udp: vec![],
            },
            ServicePorts {
                address: b,
                tcp: vec![],
                udp: vec![53],
            },
        ]);
        assert!(p.is_service(&a) && p.is_service(&b) && !p.is_service(&[1; 16]));
        assert!(p.service_exposed(&a, PROTO_TCP, 80) && p.service_exposed(&b, PROTO_UDP, 53));
        assert!(!p.service_exposed(&b, PROTO_TCP, 80) && !p.service_exposed(&a, PROTO_UDP, 53));
        assert!(!p.service_exposed(&a, PROTO_TCP, 22) && !p.exposed(PROTO_TCP, 80));
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
