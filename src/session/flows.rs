//! Flow keys (docs/protocol.md 10.8): which flow an inner IPv6 packet belongs to, so that each
//! flow rides its own circuit of a session. A session's two addresses are fixed, so a flow is
//! named by its protocol and the ports (or the ICMPv6 echo id) alone, from the client's side:
//! a client's packet and the service's answer map to the same key. An ICMPv6 error belongs to
//! the flow of the packet it quotes.
//!
//! Reads only headers; never allocates, never panics on any input.

/// IPv6 fixed header length.
pub const IPV6_HEADER_LEN: usize = 40;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;

/// A flow of a session, as the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// 6 (TCP), 17 (UDP) or 58 (ICMPv6 echo).
    pub proto: u8,
    /// The client's port (or the echo id).
    pub client_port: u16,
    /// The service's port (0 for echo).
    pub service_port: u16,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The source and destination addresses of an IPv6 packet (version 6, at least a header).
pub fn addresses(packet: &[u8]) -> Option<([u8; 16], [u8; 16])> {
    if packet.len() < IPV6_HEADER_LEN || packet.first()? >> 4 != 6 {
        return None;
    }
    let src = <[u8; 16]>::try_from(packet.get(8..24)?).ok()?;
    let dst = <[u8; 16]>::try_from(packet.get(24..40)?).ok()?;
    Some((src, dst))
}

/// Whether the payload length field matches the bytes (10.9 receiver check).
pub fn length_consistent(packet: &[u8]) -> bool {
    u16_at(packet, 4).is_some_and(|n| usize::from(n) + IPV6_HEADER_LEN == packet.len())
}

/// The flow of `packet`. `from_client`: the packet travels client → service.
pub fn flow_of(packet: &[u8], from_client: bool) -> Option<FlowKey> {
    flow_inner(packet, from_client, true)
}

fn flow_inner(packet: &[u8], from_client: bool, follow_errors: bool) -> Option<FlowKey> {
    addresses(packet)?;
    let proto = *packet.get(6)?;
    let l4 = packet.get(IPV6_HEADER_LEN..)?;
    match proto {
        PROTO_TCP | PROTO_UDP => {
            let (sp, dp) = (u16_at(l4, 0)?, u16_at(l4, 2)?);
            let (client_port, service_port) = if from_client { (sp, dp) } else { (dp, sp) };
            Some(FlowKey {
                proto,
                client_port,
                service_port,
            })
        }
        PROTO_ICMPV6 => {
            let ty = *l4.first()?;
            match ty {
                // Echo request and reply: the id names the flow.
                128 | 129 => Some(FlowKey {
                    proto,
                    client_port: u16_at(l4, 4)?,
                    service_port: 0,
                }),
                // Errors quote the offending packet after 8 bytes; it travelled the other way.
                1..=4 if follow_errors => flow_inner(l4.get(8..)?, !from_client, false),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(proto: u8, src: u8, dst: u8, l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
        p[6] = proto;
        p[8] = 0xfd;
        p[23] = src;
        p[24] = 0xfd;
        p[39] = dst;
        p.extend_from_slice(l4);
        p
    }

    #[test]
    fn both_directions_name_one_flow() {
        let mut l4 = vec![0u8; 20];
        l4[..2].copy_from_slice(&40000u16.to_be_bytes());
        l4[2..4].copy_from_slice(&22u16.to_be_bytes());
        let out = packet(6, 1, 2, &l4);
        assert!(length_consistent(&out));
        let mut back = vec![0u8; 20];
        back[..2].copy_from_slice(&22u16.to_be_bytes());
        back[2..4].copy_from_slice(&40000u16.to_be_bytes());
        let reply = packet(6, 2, 1, &back);
        assert_eq!(flow_of(&out, true), flow_of(&reply, false));
        assert_eq!(flow_of(&out, true).unwrap().service_port, 22);
        // An ICMPv6 error from the service quoting the client's packet is in the same flow.
        let mut err = vec![1u8, 0, 0, 0, 0, 0, 0, 0];
        err.extend_from_slice(&out);
        assert_eq!(flow_of(&packet(58, 2, 1, &err), false), flow_of(&out, true));
    }

    #[test]
    fn echo_ids_and_garbage() {
        let echo = packet(58, 1, 2, &[128, 0, 0, 0, 0x12, 0x34, 0, 1]);
        assert_eq!(
            flow_of(&echo, true),
            Some(FlowKey {
                proto: 58,
                client_port: 0x1234,
                service_port: 0
            })
        );
        assert_eq!(flow_of(&[0x60; 39], true), None);
        assert_eq!(flow_of(&packet(6, 1, 2, &[0, 1]), true), None);
        assert_eq!(flow_of(&packet(50, 1, 2, &[0; 8]), true), None);
    }
}
