//! The client's side of the data path (docs/decisions.md "Exits"): which packets from gn0 go to
//! an exit, and which packets from an exit may reach the kernel. Sans-IO; the node owns the exit
//! circuit and the daemon the TUN.
//!
//! Must never: send a packet whose source is the node's overlay address to an exit (it would name
//! the node), or let an exit deliver a packet that poses as an overlay address.

use std::net::IpAddr;

use super::gateway::group_of;
use super::packet::{IpView, EXIT_PACKET_MAX};
use crate::crypto::is_overlay;

/// The isolation group of a packet the kernel wrote to gn0, if it goes to an exit: it parses,
/// fits one cell, leaves from one of the client's inner addresses and is not for the overlay.
pub fn for_exit(p: &[u8]) -> Option<u8> {
    let v = IpView::parse(p)?;
    let ok = p.len() <= EXIT_PACKET_MAX
        && match (v.src, v.dst) {
            (IpAddr::V4(_), IpAddr::V4(_)) => true,
            (IpAddr::V6(_), IpAddr::V6(d)) => !is_overlay(&d),
            _ => false,
        };
    ok.then(|| group_of(v.src)).flatten()
}

/// Whether a packet from the exit circuit of isolation group `group` may be written to gn0: it
/// parses, it is for that group's inner address, and its source is neither the overlay nor the
/// inner networks (but for the exit's virtual resolver).
pub fn accept_from_exit(p: &[u8], group: u8) -> bool {
    IpView::parse(p).is_some_and(|v| {
        p.len() <= EXIT_PACKET_MAX
            && group_of(v.dst) == Some(group)
            && match v.src {
                IpAddr::V4(s) => {
                    s == super::gateway::RESOLVER_V4
                        || !(s.octets()[0] == 100 && s.octets()[1] == 127)
                }
                IpAddr::V6(s) => {
                    !is_overlay(&s)
                        && s.segments()[..4] != super::gateway::CLIENT_V6.segments()[..4]
                }
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::gateway::CLIENT_V4;
    use etherparse::PacketBuilder;

    fn v6(src: &str, dst: &str) -> Vec<u8> {
        let (s, d): (std::net::Ipv6Addr, std::net::Ipv6Addr) =
            (src.parse().unwrap(), dst.parse().unwrap());
        let mut v = Vec::new();
        PacketBuilder::ipv6(s.octets(), d.octets(), 64)
            .udp(1, 443)
            .write(&mut v, b"x")
            .unwrap();
        v
    }

    fn v4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv4(src, dst, 64)
            .udp(1, 443)
            .write(&mut v, b"x")
            .unwrap();
        v
    }

    #[test]
    fn only_inner_sources_leave_and_no_overlay_source_enters() {
        let me = CLIENT_V4.octets();
        assert_eq!(for_exit(&v4(me, [198, 19, 250, 2])), Some(1));
        assert_eq!(for_exit(&v4([100, 127, 255, 7], [1, 1, 1, 1])), Some(7));
        assert_eq!(for_exit(&v4([100, 127, 255, 17], [1, 1, 1, 1])), None);
        assert_eq!(for_exit(&v4([198, 18, 0, 5], [198, 19, 250, 2])), None);
        assert_eq!(for_exit(&v6("fc00:676e:6578::ff:1", "2a00::1")), Some(1));
        // The overlay address must never reach an exit.
        assert_eq!(for_exit(&v6("fd12::1", "2a00::1")), None);
        assert_eq!(for_exit(&v6("fc00:676e:6578::ff:1", "fd12::1")), None);
        assert_eq!(for_exit(&[0x45; 30]), None);

        assert!(accept_from_exit(&v4([198, 19, 250, 2], me), 1));
        // Another group's address: an exit cannot reach a circuit it does not serve.
        assert!(!accept_from_exit(&v4([198, 19, 250, 2], me), 2));
        assert!(!accept_from_exit(
            &v4([198, 19, 250, 2], [100, 127, 0, 1]),
            1
        ));
        assert!(!accept_from_exit(&v4([100, 127, 255, 254], me), 1));
        assert!(accept_from_exit(&v4([100, 127, 255, 53], me), 1));
        assert!(accept_from_exit(&v6("2a00::1", "fc00:676e:6578::ff:1"), 1));
        assert!(!accept_from_exit(&v6("fd12::1", "fc00:676e:6578::ff:1"), 1));
        assert!(!accept_from_exit(&v6("2a00::1", "fd12::1"), 1));
    }
}
