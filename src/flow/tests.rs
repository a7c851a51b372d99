//! A client's and a service's flow layers talking to each other directly (the sessions between
//! them replaced by handing the bytes over), checked against etherparse.

use super::*;
use etherparse::{Icmpv6Type, PacketBuilder, SlicedPacket, TransportSlice};

const NOW: Instant = Instant::from_unix_ms(1_000_000);

fn layer(seed: u8, tcp: &[u16], udp: &[u16]) -> (FlowLayer, [u8; 16]) {
    let seed = [seed; 32];
    let address = crate::crypto::address_of(
        &ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes(),
    );
    let cfg = FlowConfig {
        address,
        client_seed: Zeroizing::new(seed),
        real_identity_for: Vec::new(),
        policy: Policy::new(tcp, udp),
    };
    (
        FlowLayer::new(cfg, MemoryBudget::default()),
        address.octets(),
    )
}

fn tcp(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, syn: bool, ack: bool) -> Vec<u8> {
    let mut b = PacketBuilder::ipv6(src, dst, 64).tcp(sport, dport, 100, 64000);
    if syn {
        b = b.syn();
    }
    if ack {
        b = b.ack(1);
    }
    let b = b
        .options(&[etherparse::TcpOptionElement::MaximumSegmentSize(1440)])
        .unwrap();
    let mut v = Vec::new();
    b.write(&mut v, if syn { b"" } else { b"data" }).unwrap();
    v
}

fn udp(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv6(src, dst, 64)
        .udp(sport, dport)
        .write(&mut v, b"hello")
        .unwrap();
    v
}

fn echo(src: [u8; 16], dst: [u8; 16], request: bool) -> Vec<u8> {
    let b = PacketBuilder::ipv6(src, dst, 64);
    let b = if request {
        b.icmpv6_echo_request(77, 1)
    } else {
        b.icmpv6_echo_reply(77, 1)
    };
    let mut v = Vec::new();
    b.write(&mut v, b"ping").unwrap();
    v
}

/// Every checksum in the packet (and in a quoted packet, if whole) is valid.
fn valid(pkt: &[u8]) -> bool {
    let p = SlicedPacket::from_ip(pkt).unwrap();
    let ip = match p.net.unwrap() {
        etherparse::NetSlice::Ipv6(ip) => ip,
        _ => return false,
    };
    let (s, d) = (
        ip.header().source_addr().octets(),
        ip.header().destination_addr().octets(),
    );
    match p.transport.unwrap() {
        TransportSlice::Tcp(t) => {
            t.to_header()
                .calc_checksum_ipv6(&ip.header().to_header(), t.payload())
                .unwrap()
                == t.checksum()
        }
        TransportSlice::Udp(u) => {
            u.to_header()
                .calc_checksum_ipv6(&ip.header().to_header(), u.payload())
                .unwrap()
                == u.checksum()
        }
        TransportSlice::Icmpv6(i) => i.is_checksum_valid(s, d),
        _ => false,
    }
}

fn src_of(p: &[u8]) -> [u8; 16] {
    p[8..24].try_into().unwrap()
}
fn dst_of(p: &[u8]) -> [u8; 16] {
    p[24..40].try_into().unwrap()
}

#[test]
fn tcp_to_exposed_port_both_ways_with_pseudonym_rewriting() {
    let (mut client, a) = layer(1, &[], &[]);
    let (mut service, s) = layer(2, &[22], &[]);
    let mut out = Vec::new();
    let pseudonym = client.address_for(&s);
    assert_ne!(pseudonym, a);

    let mut syn = tcp(a, s, 40000, 22, true, false);
    syn[1] = 0x5a; // a flow label the kernel chose
    syn[7] = 3;
    assert_eq!(
        client.on_tun_packet(NOW, &mut syn, &mut out),
        TunVerdict::Send { dst: s }
    );
    assert_eq!(src_of(&syn), pseudonym);
    // Only the ECN bits of the traffic class stay (0x5a: ECT(1)).
    assert_eq!((syn[1], syn[7]), (0x10, 64), "normalised");
    assert!(valid(&syn));

    assert_eq!(
        service.on_session_packet(NOW, &mut syn, &mut out),
        SessionVerdict::Deliver
    );
    assert_eq!((src_of(&syn), dst_of(&syn)), (pseudonym, s));
    assert!(valid(&syn));

    // The service's kernel answers; its source stays the service address.
    let mut synack = tcp(s, pseudonym, 22, 40000, true, true);
    assert_eq!(
        service.on_tun_packet(NOW, &mut synack, &mut out),
        TunVerdict::Send { dst: pseudonym }
    );
    assert_eq!(src_of(&synack), s);
    assert_eq!(
        client.on_session_packet(NOW, &mut synack, &mut out),
        SessionVerdict::Deliver
    );
    assert_eq!((src_of(&synack), dst_of(&synack)), (s, a), "kernel's view");
    assert!(valid(&synack));
    assert_eq!(client.flows(), 1);
    assert_eq!(service.flows(), 1);
    assert_eq!(service.stats().to_kernel, 1);
}

#[test]
fn closed_ports_are_refused_fast() {
    let (mut client, a) = layer(1, &[], &[]);
    let (mut service, s) = layer(2, &[22], &[]);
    let mut out = Vec::new();
    let pseudonym = client.address_for(&s);

    // SYN to a port that is not exposed: RST back over the session.
    let mut syn = tcp(a, s, 40001, 8080, true, false);
    client.on_tun_packet(NOW, &mut syn, &mut out);
    assert_eq!(
        service.on_session_packet(NOW, &mut syn, &mut out),
        SessionVerdict::Refuse { dst: pseudonym }
    );
    let mut rst = out.clone();
    assert!(valid(&rst));
    assert_eq!((src_of(&rst), dst_of(&rst)), (s, pseudonym));
    assert_eq!(
        client.on_session_packet(NOW, &mut rst, &mut out),
        SessionVerdict::Deliver
    );
    assert_eq!(dst_of(&rst), a);
    assert!(valid(&rst));
    let t = etherparse::TcpHeaderSlice::from_slice(&rst[40..]).unwrap();
    assert!(t.rst() && t.destination_port() == 40001);

    // UDP to a closed port: administratively prohibited, which the client's kernel gets with
    // the quote in its own view.
    let mut u = udp(a, s, 5000, 53);
    client.on_tun_packet(NOW, &mut u, &mut out);
    assert_eq!(
        service.on_session_packet(NOW, &mut u, &mut out),
        SessionVerdict::Refuse { dst: pseudonym }
    );
    let mut err = out.clone();
    assert_eq!(
        client.on_session_packet(NOW, &mut err, &mut out),
        SessionVerdict::Deliver
    );
    assert!(valid(&err));
    assert_eq!(dst_of(&err), a);
    assert_eq!(
        &err[48 + 8..48 + 24],
        &a,
        "quoted source in the kernel's view"
    );
    assert!(valid(&err[48..]), "quoted UDP checksum");
    let p = SlicedPacket::from_ip(&err).unwrap();
    let TransportSlice::Icmpv6(i) = p.transport.unwrap() else {
        panic!()
    };
    assert_eq!(
        i.icmp_type(),
        Icmpv6Type::DestinationUnreachable(etherparse::icmpv6::DestUnreachableCode::Prohibited)
    );

    // A non-SYN TCP segment on no flow, and a RST, to the service.
    let mut ack = tcp(pseudonym, s, 40002, 8080, false, true);
    assert!(matches!(
        service.on_session_packet(NOW, &mut ack, &mut out),
        SessionVerdict::Refuse { .. }
    ));
    let mut stray_rst = tcp(pseudonym, s, 40002, 8080, false, false);
    stray_rst[40 + 13] = TCP_RST;
    assert_eq!(
        service.on_session_packet(NOW, &mut stray_rst, &mut out),
        SessionVerdict::Drop(DropReason::Refused)
    );
}

#[test]
fn a_service_cannot_open_flows_to_its_clients() {
    let (mut client, _a) = layer(1, &[22], &[53]);
    let (_service, s) = layer(2, &[], &[]);
    let mut out = Vec::new();
    let pseudonym = client.address_for(&s);
    // Even to a port the client exposes on its own address: the pseudonym is not a service.
    let mut syn = tcp(s, pseudonym, 1234, 22, true, false);
    assert!(matches!(
        client.on_session_packet(NOW, &mut syn, &mut out),
        SessionVerdict::Refuse { .. }
    ));
    let mut u = udp(s, pseudonym, 1234, 53);
    assert!(matches!(
        client.on_session_packet(NOW, &mut u, &mut out),
        SessionVerdict::Refuse { .. }
    ));
    // Nor answer for a flow that does not exist.
    let mut reply = echo(s, pseudonym, false);
    assert!(matches!(
        client.on_session_packet(NOW, &mut reply, &mut out),
        SessionVerdict::Refuse { .. }
    ));
    // A packet to an address that is not ours at all.
    let mut other = udp(s, [0xfd; 16], 1, 2);
    assert_eq!(
        client.on_session_packet(NOW, &mut other, &mut out),
        SessionVerdict::Drop(DropReason::NotOurs)
    );
}

#[test]
fn echo_both_ways() {
    let (mut client, a) = layer(1, &[], &[]);
    let (mut service, s) = layer(2, &[], &[]);
    let mut out = Vec::new();
    let pseudonym = client.address_for(&s);
    let mut req = echo(a, s, true);
    assert_eq!(
        client.on_tun_packet(NOW, &mut req, &mut out),
        TunVerdict::Send { dst: s }
    );
    assert_eq!(
        service.on_session_packet(NOW, &mut req, &mut out),
        SessionVerdict::Deliver
    );
    let mut rep = echo(s, pseudonym, false);
    assert_eq!(
        service.on_tun_packet(NOW, &mut rep, &mut out),
        TunVerdict::Send { dst: pseudonym }
    );
    assert_eq!(
        client.on_session_packet(NOW, &mut rep, &mut out),
        SessionVerdict::Deliver
    );
    assert!(valid(&rep));
    assert_eq!(dst_of(&rep), a);
    // A service never opens flows to its visitors: its kernel's ping to the client's pseudonym
    // leaves under the service's own pseudonym for that address (the session layer will find no
    // service there), never from the service address ...
    let mut req = echo(s, pseudonym, true);
    assert!(matches!(
        service.on_tun_packet(NOW, &mut req, &mut out),
        TunVerdict::Send { .. }
    ));
    assert_ne!(src_of(&req), s);
    // ... and a crafted echo request to the client's pseudonym is refused there.
    let mut req = echo(s, pseudonym, true);
    assert!(matches!(
        client.on_session_packet(NOW, &mut req, &mut out),
        SessionVerdict::Refuse { .. }
    ));
}

#[test]
fn a_visitor_with_its_real_identity_does_not_unmask_our_visits() {
    // X visits our service under its real address X, and then we visit X's service: our flow to
    // X must still come from our pseudonym for X.
    let (mut us, a) = layer(1, &[22], &[]);
    let (_, x) = layer(2, &[], &[]);
    let mut out = Vec::new();
    let mut syn = tcp(x, a, 50000, 22, true, false);
    assert_eq!(
        us.on_session_packet(NOW, &mut syn, &mut out),
        SessionVerdict::Deliver
    );
    let mut reply = tcp(a, x, 22, 50000, true, true);
    us.on_tun_packet(NOW, &mut reply, &mut out);
    assert_eq!(
        src_of(&reply),
        a,
        "answers on its flow come from our address"
    );
    let mut visit = tcp(a, x, 41000, 80, true, false);
    us.on_tun_packet(NOW, &mut visit, &mut out);
    assert_eq!(src_of(&visit), us.address_for(&x));
    assert_ne!(src_of(&visit), a);
}

#[test]
fn foreign_sources_never_reach_the_kernel() {
    let (mut service, s) = layer(2, &[22], &[]);
    let lan: Ipv6Addr = "fd12:3456:789a:1::".parse().unwrap();
    service.policy_mut().set_foreign_prefixes([(lan, 64)]);
    let mut out = Vec::new();
    let inside: Ipv6Addr = "fd12:3456:789a:1::7".parse().unwrap();
    let mut syn = tcp(inside.octets(), s, 1, 22, true, false);
    assert_eq!(
        service.on_session_packet(NOW, &mut syn, &mut out),
        SessionVerdict::Drop(DropReason::BadSource)
    );
    assert_eq!(service.stats().foreign_sources, 1);
    let mut syn = tcp([0xfd; 16], s, 1, 22, true, false);
    assert_eq!(
        service.on_session_packet(NOW, &mut syn, &mut out),
        SessionVerdict::Deliver
    );
}

#[test]
fn unreachable_destinations_answer_the_waiting_flows() {
    let (mut client, a) = layer(1, &[], &[]);
    let s = [0xfd, 0x52, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
    let mut out = Vec::new();
    let mut syn1 = tcp(a, s, 40000, 22, true, false);
    let mut syn2 = tcp(a, s, 40001, 80, true, false);
    client.on_tun_packet(NOW, &mut syn1, &mut out);
    client.on_tun_packet(NOW, &mut syn2, &mut out);
    let mut replies = Vec::new();
    let n = client.on_unreachable(&s, &mut out, |r| replies.push(r.to_vec()));
    assert_eq!(n, 2);
    for r in &replies {
        assert!(valid(r));
        assert_eq!((src_of(r), dst_of(r)), (s, a));
        assert_eq!(r[40..42], [1, 3]);
        assert_eq!(&r[48 + 8..48 + 24], &a, "quoted in the kernel's view");
    }
    assert_eq!(client.on_unreachable(&s, &mut out, |_| {}), 0);

    // A refusal from send_packet is answered at once, in the kernel's view.
    let mut u = udp(a, s, 5000, 53);
    client.on_tun_packet(NOW, &mut u, &mut out);
    assert!(client.on_send_failed(&u, &mut out));
    assert!(valid(&out));
    assert_eq!((src_of(&out), dst_of(&out)), (s, a));
    assert_eq!(&out[48 + 8..48 + 24], &a);
    assert!(
        valid(&out[48..]),
        "quoted UDP checksum back in the kernel's view"
    );
    assert_eq!(client.on_unreachable(&s, &mut out, |_| {}), 0);
}

#[test]
fn kernel_side_checks() {
    let (mut client, a) = layer(1, &[], &[]);
    let s = [0xfd, 0x52, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
    let mut out = Vec::new();
    // Oversize: Packet Too Big within 1280.
    let mut big = Vec::new();
    PacketBuilder::ipv6(a, s, 64)
        .udp(1, 2)
        .write(&mut big, &[0u8; 1400])
        .unwrap();
    assert_eq!(
        client.on_tun_packet(NOW, &mut big, &mut out),
        TunVerdict::Reply(ReplyKind::PacketTooBig)
    );
    assert_eq!(out.len(), 1280);
    assert!(valid(&out));
    // An extension header: administratively prohibited, locally.
    let mut ext = udp(a, s, 1, 2);
    ext[6] = 0;
    assert_eq!(
        client.on_tun_packet(NOW, &mut ext, &mut out),
        TunVerdict::Reply(ReplyKind::Prohibited)
    );
    // Another source than our address (an application bound to a LAN address).
    let mut other = udp([0xfd; 16], s, 1, 2);
    assert_eq!(
        client.on_tun_packet(NOW, &mut other, &mut out),
        TunVerdict::Drop(DropReason::BadSource)
    );
    // Chatter and garbage.
    let mut ns = Vec::new();
    PacketBuilder::ipv6(a, s, 255)
        .icmpv6(Icmpv6Type::Unknown {
            type_u8: 135,
            code_u8: 0,
            bytes5to8: [0; 4],
        })
        .write(&mut ns, &[0; 16])
        .unwrap();
    assert_eq!(
        client.on_tun_packet(NOW, &mut ns, &mut out),
        TunVerdict::Drop(DropReason::LinkLocalControl)
    );
    let mut mc = udp(a, "ff02::16".parse::<Ipv6Addr>().unwrap().octets(), 1, 2);
    assert_eq!(
        client.on_tun_packet(NOW, &mut mc, &mut out),
        TunVerdict::Drop(DropReason::Multicast)
    );
    let mut lan = udp(a, "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets(), 1, 2);
    assert_eq!(
        client.on_tun_packet(NOW, &mut lan, &mut out),
        TunVerdict::Drop(DropReason::NotOverlay)
    );
    assert_eq!(
        client.on_tun_packet(NOW, &mut [0x45, 0, 0, 20], &mut out),
        TunVerdict::Drop(DropReason::NotIpv6)
    );
    // An ICMPv6 error our kernel makes about a flow that does not exist is not sent.
    let mut err = Vec::new();
    PacketBuilder::ipv6(a, s, 64)
        .icmpv6(Icmpv6Type::DestinationUnreachable(
            etherparse::icmpv6::DestUnreachableCode::Port,
        ))
        .write(&mut err, &udp(s, a, 1, 2))
        .unwrap();
    assert_eq!(
        client.on_tun_packet(NOW, &mut err, &mut out),
        TunVerdict::Drop(DropReason::IcmpError)
    );
}

#[test]
fn real_identity_destinations_see_our_address() {
    let seed = [1u8; 32];
    let a = crate::crypto::address_of(
        &ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes(),
    );
    let s: Ipv6Addr = "fd52::9".parse().unwrap();
    let mut client = FlowLayer::new(
        FlowConfig {
            address: a,
            client_seed: Zeroizing::new(seed),
            real_identity_for: vec![s],
            policy: Policy::default(),
        },
        MemoryBudget::default(),
    );
    let mut out = Vec::new();
    let mut syn = tcp(a.octets(), s.octets(), 1, 22, true, false);
    client.on_tun_packet(NOW, &mut syn, &mut out);
    assert_eq!(src_of(&syn), a.octets());
    let mut synack = tcp(s.octets(), a.octets(), 22, 1, true, true);
    assert_eq!(
        client.on_session_packet(NOW, &mut synack, &mut out),
        SessionVerdict::Deliver
    );
}

#[test]
fn refusals_are_rate_limited() {
    let (mut service, s) = layer(2, &[], &[]);
    let mut out = Vec::new();
    let mut refused = 0;
    for i in 0..1000u16 {
        let mut u = udp([0xfd; 16], s, i, 9);
        if let SessionVerdict::Refuse { .. } = service.on_session_packet(NOW, &mut u, &mut out) {
            refused += 1;
        }
    }
    assert_eq!(refused, REFUSAL_RATE);
    let mut u = udp([0xfd; 16], s, 1, 9);
    assert!(matches!(
        service.on_session_packet(NOW + 1000, &mut u, &mut out),
        SessionVerdict::Refuse { .. }
    ));
}

#[test]
fn flows_expire_and_then_refuse() {
    let (mut client, a) = layer(1, &[], &[]);
    let (_, s) = layer(2, &[], &[]);
    let mut out = Vec::new();
    let pseudonym = client.address_for(&s);
    let mut u = udp(a, s, 5000, 53);
    client.on_tun_packet(NOW, &mut u, &mut out);
    let mut back = udp(s, pseudonym, 53, 5000);
    assert_eq!(
        client.on_session_packet(NOW + 1000, &mut back.clone(), &mut out),
        SessionVerdict::Deliver
    );
    client.sweep(NOW + 1000 + table::UDP_IDLE_MS + 1);
    assert_eq!(client.flows(), 0);
    assert!(matches!(
        client.on_session_packet(NOW + 1000 + table::UDP_IDLE_MS + 2, &mut back, &mut out),
        SessionVerdict::Refuse { .. }
    ));
}

proptest::proptest! {
    #[test]
    fn never_panics_on_any_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..1600)) {
        let (mut l, _) = layer(1, &[22], &[53]);
        let mut out = Vec::new();
        let mut b = bytes.clone();
        let _ = l.on_tun_packet(NOW, &mut b, &mut out);
        let mut b = bytes.clone();
        let _ = l.on_session_packet(NOW, &mut b, &mut out);
        let _ = l.on_send_failed(&bytes, &mut out);
        let _ = l.on_unreachable(&[0xfd; 16], &mut out, |_| {});
    }

    #[test]
    fn never_panics_on_ipv6_shaped(
        mut bytes in proptest::collection::vec(proptest::num::u8::ANY, 40..1500),
        next in proptest::sample::select(vec![6u8, 17, 58, 0, 44]),
        icmp in 0u8..=255,
        own_src in proptest::bool::ANY,
    ) {
        let (mut l, a) = layer(1, &[22], &[53]);
        bytes[0] = 0x60;
        let len = (bytes.len() - 40) as u16;
        bytes[4..6].copy_from_slice(&len.to_be_bytes());
        bytes[6] = next;
        bytes[24] = 0xfd;
        bytes[8] = 0xfd;
        if bytes.len() > 40 {
            bytes[40] = icmp;
        }
        if own_src {
            bytes[8..24].copy_from_slice(&a);
        }
        let mut out = Vec::new();
        let mut b = bytes.clone();
        match l.on_tun_packet(NOW, &mut b, &mut out) {
            TunVerdict::Reply(_) => proptest::prop_assert!(out.len() <= 1280),
            TunVerdict::Send { .. } => proptest::prop_assert!(b[7] == 64),
            TunVerdict::Drop(_) => {}
        }
        let mut b = bytes.clone();
        b[24..40].copy_from_slice(&a);
        if let SessionVerdict::Refuse { .. } = l.on_session_packet(NOW, &mut b, &mut out) {
            proptest::prop_assert!(out.len() <= 1280);
        }
    }

    #[test]
    fn checksums_stay_valid_through_both_layers(
        sport in 1u16..65535, dport in proptest::sample::select(vec![22u16, 53, 80]),
        kind in 0u8..3,
    ) {
        let (mut client, a) = layer(1, &[], &[]);
        let (mut service, s) = layer(2, &[22], &[53]);
        let mut out = Vec::new();
        let mut pkt = match kind {
            0 => tcp(a, s, sport, dport, true, false),
            1 => udp(a, s, sport, dport),
            _ => echo(a, s, true),
        };
        let sent = client.on_tun_packet(NOW, &mut pkt, &mut out);
        proptest::prop_assert!(matches!(sent, TunVerdict::Send { .. }), "{sent:?}");
        proptest::prop_assert!(valid(&pkt));
        match service.on_session_packet(NOW, &mut pkt, &mut out) {
            SessionVerdict::Deliver => proptest::prop_assert!(valid(&pkt)),
            SessionVerdict::Refuse { .. } => {
                proptest::prop_assert!(valid(&out));
                let mut back = out.clone();
                proptest::prop_assert_eq!(client.on_session_packet(NOW, &mut back, &mut out), SessionVerdict::Deliver);
                proptest::prop_assert!(valid(&back));
            }
            SessionVerdict::Drop(d) => proptest::prop_assert!(false, "{d:?}"),
        }
    }
}

/// Named services on one node: each address opens its own ports only, answers its visitors
/// from its own address, never opens flows, and one client port may reach two services.
#[test]
fn named_services_open_only_their_own_ports() {
    let (mut svc, own) = layer(1, &[22], &[]);
    let (a, b, c) = (
        [0xfd, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        [0xfd, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        [0xfd, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    );
    svc.policy_mut().set_services(vec![
        ServicePorts {
            address: a,
            tcp: vec![80],
            udp: vec![],
        },
        ServicePorts {
            address: b,
            tcp: vec![80, 443],
            udp: vec![],
        },
    ]);
    let mut out = Vec::new();
    let mut verdict = |svc: &mut FlowLayer, dst: [u8; 16], sport: u16, dport: u16| {
        let mut p = tcp(c, dst, sport, dport, true, false);
        svc.on_session_packet(NOW, &mut p, &mut out)
    };
    assert_eq!(verdict(&mut svc, a, 5000, 80), SessionVerdict::Deliver);
    assert_eq!(verdict(&mut svc, b, 5000, 80), SessionVerdict::Deliver);
    assert_eq!(verdict(&mut svc, b, 5001, 443), SessionVerdict::Deliver);
    for (dst, port) in [(a, 443), (a, 22), (own, 80), (b, 22)] {
        assert_eq!(
            verdict(&mut svc, dst, 5002, port),
            SessionVerdict::Refuse { dst: c },
            "{port}"
        );
    }
    assert_eq!(svc.flows(), 3);
    // The answer leaves from the service's address, unchanged.
    let mut synack = tcp(a, c, 80, 5000, true, true);
    assert_eq!(
        svc.on_tun_packet(NOW, &mut synack, &mut out),
        TunVerdict::Send { dst: c }
    );
    assert_eq!(synack[8..24], a);
    // A service's address opens nothing, and an address we do not host sends nothing.
    let mut open = tcp(a, c, 6000, 22, true, false);
    assert_eq!(
        svc.on_tun_packet(NOW, &mut open, &mut out),
        TunVerdict::Drop(DropReason::BadSource)
    );
    let mut stranger = tcp(
        [0xfd, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        c,
        80,
        5000,
        true,
        true,
    );
    assert_eq!(
        svc.on_tun_packet(NOW, &mut stranger, &mut out),
        TunVerdict::Drop(DropReason::BadSource)
    );
}
