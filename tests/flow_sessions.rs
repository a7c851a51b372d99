//! The flow layer on top of real sessions in the in-process network: what the client's kernel
//! writes (its own address as the source) reaches the service's kernel from the client's
//! pseudonym, the answer comes back in the client kernel's view, an exposed port opens a flow, a
//! closed one answers with a RST that the client's kernel gets at once, and every checksum on the
//! way stays valid. Checks that the flow layer derives the same pseudonym as the session layer
//! (otherwise every packet would be refused for its source).

use globalnet::budget::MemoryBudget;
use globalnet::flow::{FlowConfig, FlowLayer, Policy, SessionVerdict, TunVerdict};
use globalnet::node::NodeEvent;
use globalnet::sim::{Sim, SimConfig};
use std::net::Ipv6Addr;
use zeroize::Zeroizing;

const SERVICE_SEED: [u8; 32] = [0x61; 32];
const CLIENT_SEED: [u8; 32] = [0xc7; 32];

fn addr(seed: &[u8; 32]) -> [u8; 16] {
    globalnet::session::ServiceIdentity::from_seed(seed)
        .address()
        .octets()
}

fn flow_layer(seed: [u8; 32], tcp: &[u16]) -> FlowLayer {
    FlowLayer::new(
        FlowConfig {
            address: Ipv6Addr::from(addr(&seed)),
            client_seed: Zeroizing::new(seed),
            real_identity_for: Vec::new(),
            policy: Policy::new(tcp, &[]),
        },
        MemoryBudget::default(),
    )
}

fn tcp(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, syn: bool, ack: bool) -> Vec<u8> {
    let mut b = etherparse::PacketBuilder::ipv6(src, dst, 64).tcp(sport, dport, 500, 64000);
    if syn {
        b = b.syn();
    }
    if ack {
        b = b.ack(501);
    }
    let mut v = Vec::new();
    b.write(&mut v, if syn { b"" } else { b"GET / HTTP/1.0\r\n\r\n" })
        .unwrap();
    v
}

fn tcp_valid(p: &[u8]) -> bool {
    let ip = etherparse::Ipv6HeaderSlice::from_slice(p)
        .unwrap()
        .to_header();
    let t = etherparse::TcpHeaderSlice::from_slice(&p[40..]).unwrap();
    let payload = &p[40 + t.slice().len()..];
    t.to_header().calc_checksum_ipv6(&ip, payload).unwrap() == t.checksum()
}

struct World {
    sim: Sim,
    seen: Vec<usize>,
}

impl World {
    /// Packets node `i` received since the last call.
    fn packets(&mut self, i: usize) -> Vec<Vec<u8>> {
        let from = self.seen[i];
        self.seen[i] = self.sim.nodes[i].events.len();
        self.sim.nodes[i].events[from..]
            .iter()
            .filter_map(|e| match e {
                NodeEvent::Packet { buf } => Some(buf.clone()),
                _ => None,
            })
            .collect()
    }

    fn send(&mut self, i: usize, dst: [u8; 16], p: &[u8]) {
        let now = self.sim.now;
        let r = self.sim.nodes[i].node.send_packet(now, dst, p);
        assert!(r.is_ok(), "send_packet: {r:?}");
        self.sim.flush(i);
    }

    /// Runs until node `i` received a packet (at most `ms`).
    fn wait_packet(&mut self, i: usize, ms: u64) -> Vec<u8> {
        let end = self.sim.now + ms;
        while self.sim.now < end {
            self.sim.run_for(10);
            if let Some(p) = self.packets(i).into_iter().next() {
                return p;
            }
        }
        panic!("node {i} received nothing within {ms} ms");
    }
}

#[test]
fn kernel_packets_cross_sessions_through_the_flow_layer() {
    let mut sim = Sim::new(SimConfig {
        seed: 77,
        ..SimConfig::default()
    });
    sim.add_node(true, &[], 8);
    for _ in 1..20 {
        sim.add_node(true, &[0], 8);
    }
    let svc = sim.add_node(false, &[0, 1], 6);
    let cli = sim.add_node(false, &[0, 1], 6);
    let n = sim.nodes.len();
    let mut w = World {
        sim,
        seen: vec![0; n],
    };
    w.sim.run_for(30_000);
    w.sim.nodes[cli]
        .node
        .set_client_identity(CLIENT_SEED, Vec::new());
    let now = w.sim.now;
    w.sim.nodes[svc].node.add_service(now, SERVICE_SEED);
    w.sim.flush(svc);
    w.sim.run_for(20_000);
    for d in w.sim.nodes[svc].node.service_descriptors() {
        let now = w.sim.now;
        w.sim.nodes[cli].node.cache_descriptor(now, &d).unwrap();
    }
    w.packets(svc);
    w.packets(cli);

    let (c_own, s_addr) = (addr(&CLIENT_SEED), addr(&SERVICE_SEED));
    let mut client = flow_layer(CLIENT_SEED, &[]);
    let mut service = flow_layer(SERVICE_SEED, &[22]);
    let mut out = Vec::new();
    let pseudonym = client.address_for(&s_addr);
    assert_eq!(
        Some(Ipv6Addr::from(pseudonym)),
        w.sim.nodes[cli].node.pseudonym_for(s_addr),
        "the flow layer and the session layer derive the same pseudonym"
    );

    // The client's kernel connects to port 22.
    let mut syn = tcp(c_own, s_addr, 40000, 22, true, false);
    let now = w.sim.now;
    assert_eq!(
        client.on_tun_packet(now, &mut syn, &mut out),
        TunVerdict::Send { dst: s_addr }
    );
    w.send(cli, s_addr, &syn);
    let mut got = w.wait_packet(svc, 15_000);
    let now = w.sim.now;
    assert_eq!(
        service.on_session_packet(now, &mut got, &mut out),
        SessionVerdict::Deliver
    );
    assert_eq!(
        &got[8..24],
        &pseudonym,
        "the service's kernel sees the pseudonym"
    );
    assert_eq!(&got[24..40], &s_addr);
    assert!(tcp_valid(&got));

    // Its kernel answers; the client's kernel gets it in its own view.
    let mut synack = tcp(s_addr, pseudonym, 22, 40000, true, true);
    assert_eq!(
        service.on_tun_packet(now, &mut synack, &mut out),
        TunVerdict::Send { dst: pseudonym }
    );
    w.send(svc, pseudonym, &synack);
    let mut back = w.wait_packet(cli, 5_000);
    let now = w.sim.now;
    assert_eq!(
        client.on_session_packet(now, &mut back, &mut out),
        SessionVerdict::Deliver
    );
    assert_eq!(&back[8..24], &s_addr);
    assert_eq!(&back[24..40], &c_own);
    assert!(tcp_valid(&back));

    // A port the service does not expose: the RST travels back over the session.
    let mut closed = tcp(c_own, s_addr, 40001, 8080, true, false);
    assert!(matches!(
        client.on_tun_packet(now, &mut closed, &mut out),
        TunVerdict::Send { .. }
    ));
    w.send(cli, s_addr, &closed);
    let mut got = w.wait_packet(svc, 5_000);
    let now = w.sim.now;
    let SessionVerdict::Refuse { dst } = service.on_session_packet(now, &mut got, &mut out) else {
        panic!("a SYN to a closed port must be refused");
    };
    assert_eq!(dst, pseudonym);
    let rst = out.clone();
    w.send(svc, dst, &rst);
    let mut back = w.wait_packet(cli, 5_000);
    let now = w.sim.now;
    assert_eq!(
        client.on_session_packet(now, &mut back, &mut out),
        SessionVerdict::Deliver
    );
    let t = etherparse::TcpHeaderSlice::from_slice(&back[40..]).unwrap();
    assert!(t.rst() && t.destination_port() == 40001);
    assert_eq!(&back[24..40], &c_own);
    assert!(tcp_valid(&back));
}
