//! Sessions in the in-process network (issue #8): a client reaches a hidden service through an
//! intro point and a rendezvous point, data flows both ways, new flows start on the spare
//! circuit, pseudonyms differ per service and stay stable, forged pseudonyms and replayed
//! introductions are refused, flows survive the death of any relay on their path, and the relays
//! in the middle hold neither the service key nor both ends' addresses, and a rendezvous point
//! reads one length and no counter in what it splices.

use globalnet::circuit::layer::CircId;
use globalnet::node::NodeEvent;
use globalnet::session::flows::{flow_of, FlowKey};
use globalnet::sim::{Sim, SimConfig};
use globalnet::time::Instant;

const SERVICE_SEED: [u8; 32] = [0x51; 32];
const OTHER_SERVICE_SEED: [u8; 32] = [0x52; 32];
const CLIENT_SEED: [u8; 32] = [0xc1; 32];

fn service_addr(seed: &[u8; 32]) -> [u8; 16] {
    globalnet::session::ServiceIdentity::from_seed(seed)
        .address()
        .octets()
}

mod sim_packets;
use sim_packets::udp;

fn swap(p: &[u8]) -> Vec<u8> {
    let mut r = p.to_vec();
    r[8..24].copy_from_slice(&p[24..40]);
    r[24..40].copy_from_slice(&p[8..24]);
    r[40..42].copy_from_slice(&p[42..44]);
    r[42..44].copy_from_slice(&p[40..42]);
    r
}

struct World {
    sim: Sim,
    relays: usize,
    /// Per node: events up to here were already echoed (services) or read (clients).
    echoed: std::collections::HashMap<usize, usize>,
    /// When the echoing services received packets.
    arrivals: Vec<Instant>,
}

impl World {
    fn new(relays: usize, seed: u64) -> World {
        let mut sim = Sim::new(SimConfig {
            seed,
            ..SimConfig::default()
        });
        sim.add_node(true, &[], 8);
        for _ in 1..relays {
            sim.add_node(true, &[0], 8);
        }
        World {
            sim,
            relays,
            echoed: Default::default(),
            arrivals: Vec::new(),
        }
    }

    fn add_host(&mut self) -> usize {
        self.sim.add_node(false, &[0, 1], 6)
    }

    /// Packets node `i` received since `from` (event index).
    fn packets(&self, i: usize, from: usize) -> Vec<Vec<u8>> {
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

    /// Runs `ms` in steps of `step`, letting `svc` echo every packet back (UDP ports swapped).
    /// Returns the echoes `cli` received, with their arrival times.
    fn run_echo(&mut self, cli: usize, svc: usize, ms: u64, step: u64) -> Vec<(Instant, Vec<u8>)> {
        let mut seen_svc = *self.echoed.get(&svc).unwrap_or(&0);
        let mut seen_cli = self.sim.nodes[cli].events.len();
        let mut got = Vec::new();
        let end = self.sim.now + ms;
        while self.sim.now < end {
            self.sim.run_for(step);
            let inbound = self.packets(svc, seen_svc);
            seen_svc = self.sim.nodes[svc].events.len();
            for p in inbound {
                self.arrivals.push(self.sim.now);
                let dst: [u8; 16] = p[8..24].try_into().unwrap();
                let reply = swap(&p);
                let now = self.sim.now;
                let _ = self.sim.nodes[svc].node.send_packet(now, dst, &reply);
                self.sim.flush(svc);
            }
            for p in self.packets(cli, seen_cli) {
                got.push((self.sim.now, p));
            }
            seen_cli = self.sim.nodes[cli].events.len();
        }
        self.echoed.insert(svc, seen_svc);
        got
    }

    fn unreachable(&self, i: usize) -> Vec<String> {
        self.sim.nodes[i]
            .events
            .iter()
            .filter_map(|e| match e {
                NodeEvent::Unreachable { why, .. } => Some(why.clone()),
                _ => None,
            })
            .collect()
    }

    /// Starts a service on `svc` and waits for its intro points; hands its descriptors to
    /// `clients`' caches.
    fn publish(&mut self, svc: usize, seed: [u8; 32], clients: &[usize]) {
        let now = self.sim.now;
        self.sim.nodes[svc].node.add_service(now, seed);
        self.sim.flush(svc);
        self.sim.run_for(20_000);
        let info = self.sim.nodes[svc].node.services_info();
        let me = info
            .iter()
            .find(|s| s.address.octets() == service_addr(&seed))
            .unwrap();
        assert_eq!(me.intro_points.len(), 3, "intro points: {info:?}");
        let descs = self.sim.nodes[svc].node.service_descriptors();
        assert!(!descs.is_empty());
        for &c in clients {
            for d in &descs {
                let now = self.sim.now;
                self.sim.nodes[c].node.cache_descriptor(now, d).unwrap();
            }
        }
    }
}

fn key_of(p: &[u8]) -> FlowKey {
    flow_of(p, true).unwrap()
}

/// RUST_LOG=globalnet::node=debug shows the session layer's steps of a failing run.
fn init_log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .without_time()
        .with_test_writer()
        .try_init();
}

#[test]
fn client_reaches_service_and_new_flows_take_the_spare() {
    init_log();
    let mut w = World::new(24, 21);
    let svc = w.add_host();
    let cli = w.add_host();
    w.sim.run_for(30_000);
    // The client identity first, so that its stems are built while the service starts.
    w.sim.nodes[cli]
        .node
        .set_client_identity(CLIENT_SEED, Vec::new());
    w.publish(svc, SERVICE_SEED, &[cli]);
    let s_addr = service_addr(&SERVICE_SEED);
    let me = w.sim.nodes[cli]
        .node
        .pseudonym_for(s_addr)
        .unwrap()
        .octets();

    // First contact (descriptor cached, pools warm): introduction, rendezvous, handshake.
    let t0 = w.sim.now;
    let first = udp(me, s_addr, 40000, 7, b"hello service");
    w.send(cli, s_addr, &first);
    let mut echoes = w.run_echo(cli, svc, 2_000, 1);
    echoes.extend(w.run_echo(cli, svc, 8_000, 20));
    let first_arrival = *w
        .arrivals
        .first()
        .expect("the service got the first packet")
        - t0;
    // Whether the service reached the rendezvous point by extending a pooled stem (it cannot
    // when the client's rendezvous point happens to be on every stem, e.g. its guard).
    let stem_used = w.sim.nodes[svc].node.session_stats().fresh_builds == 0;
    assert!(
        !echoes.is_empty(),
        "no echo; unreachable: {:?}",
        w.unreachable(cli)
    );
    let first_contact = echoes[0].0 - t0;
    assert_eq!(echoes[0].1, swap(&first), "the echo came back intact");
    // The service saw the pseudonym as the source.
    assert_eq!(w.sim.nodes[svc].node.service_peers(s_addr), vec![me]);

    // Data both ways, many packets.
    let mut echoes = Vec::new();
    for i in 0..50u16 {
        let p = udp(me, s_addr, 40000, 7, &i.to_be_bytes().repeat(300));
        w.send(cli, s_addr, &p);
        echoes.extend(w.run_echo(cli, svc, 2, 2));
    }
    echoes.extend(w.run_echo(cli, svc, 3_000, 5));
    assert_eq!(echoes.len(), 50, "echoes of 50 packets");

    // One path round trip (client -> rendezvous point -> service and back): an e2e PING.
    w.sim.run_for(5_000);
    let now = w.sim.now;
    let id = w.sim.nodes[cli].node.e2e_ping(now, s_addr).unwrap();
    w.sim.flush(cli);
    let from = w.sim.nodes[cli].events.len();
    w.sim.run_for(2_000);
    let rtt = w.sim.nodes[cli].events[from..]
        .iter()
        .find_map(|e| match e {
            NodeEvent::Pong {
                id: got, rtt_ms, ..
            } if *got == id => Some(*rtt_ms),
            _ => None,
        })
        .expect("PONG");

    // A new flow: its first packet takes the spare joined circuit, so its set-up costs no
    // circuit build at all.
    let circuits = w.sim.nodes[cli].node.session_circuits(s_addr);
    assert!(circuits.len() >= 2, "a spare circuit joined: {circuits:?}");
    let t1 = w.sim.now;
    let p2 = udp(me, s_addr, 40001, 7, b"second flow");
    w.send(cli, s_addr, &p2);
    let echoes = w.run_echo(cli, svc, 3_000, 1);
    let setup = echoes.first().expect("echo on the new flow").0 - t1;
    let c1 = w.sim.nodes[cli].node.flow_circuit(s_addr, &key_of(&first));
    let c2 = w.sim.nodes[cli].node.flow_circuit(s_addr, &key_of(&p2));
    assert!(
        c1.is_some() && c2.is_some() && c1 != c2,
        "each flow on its own circuit"
    );
    eprintln!(
        "path RTT {rtt} ms; first contact (descriptor cached, no session): first packet at the \
         service after {first_arrival} ms ({:.1} RTT), its echo back after {first_contact} ms \
         ({:.1} RTT); new flow on an open session: first answer after {setup} ms ({:.2} RTT)",
        first_arrival as f64 / rtt as f64,
        first_contact as f64 / rtt as f64,
        setup as f64 / rtt as f64
    );
    // Introduction, rendezvous and handshake with warm pools and stems: the session is up and
    // the first packet delivered within 3 path round trips, plus up to half of one for where
    // the intro point happens to lie (the service picks them at random: 2.5 or 3.1 RTT here).
    // A 4-hop build from scratch on the service's side adds about 2.
    let bound = if stem_used {
        3 * rtt + rtt / 2
    } else {
        5 * rtt + rtt / 2
    };
    eprintln!("the service extended a stem to the rendezvous point: {stem_used}");
    assert!(
        first_arrival <= bound,
        "first contact {first_arrival} ms > {bound} ms"
    );
    assert!(
        setup <= 3 * rtt,
        "new flow set-up {setup} ms > 3 x {rtt} ms"
    );
    // A spare is joined again in the background.
    w.run_echo(cli, svc, 5_000, 50);
    let circuits = w.sim.nodes[cli].node.session_circuits(s_addr);
    assert!(
        circuits.iter().any(|(_, flows)| *flows == 0),
        "a new spare: {circuits:?}"
    );
    let _ = w.relays;
}

/// The nodes a relay's circuit state names, for every circuit it relays.
fn circuit_neighbours(w: &World, relay: usize) -> Vec<Vec<usize>> {
    let n = &w.sim.nodes[relay].node;
    n.circ
        .relayed_neighbours()
        .into_iter()
        .map(|(up, down)| {
            [Some(up), down]
                .into_iter()
                .flatten()
                .filter_map(|l| n.link.peer_key(l))
                .filter_map(|k| w.sim.nodes.iter().position(|s| s.link_key == k))
                .collect()
        })
        .collect()
}

#[test]
fn middle_relays_hold_neither_the_service_key_nor_both_ends() {
    let mut w = World::new(16, 13);
    let svc = w.add_host();
    let cli = w.add_host();
    w.sim.run_for(30_000);
    w.publish(svc, SERVICE_SEED, &[cli]);
    let s_addr = service_addr(&SERVICE_SEED);
    w.sim.nodes[cli]
        .node
        .set_client_identity(CLIENT_SEED, Vec::new());
    let me = w.sim.nodes[cli]
        .node
        .pseudonym_for(s_addr)
        .unwrap()
        .octets();
    for port in 0..4u16 {
        w.send(cli, s_addr, &udp(me, s_addr, 41000 + port, 9, b"x"));
        w.run_echo(cli, svc, 3_000, 20);
    }
    assert!(!w.packets(cli, 0).is_empty());
    let s_pub = *globalnet::session::ServiceIdentity::from_seed(&SERVICE_SEED).public();
    let (mut intro_points, mut splices) = (0, 0);
    for r in 0..w.relays {
        let node = &w.sim.nodes[r].node;
        assert!(!node.holds_service_key(&s_pub));
        if let Some(role) = node.intro_role() {
            assert!(
                !role.auth_keys().contains(&s_pub),
                "relay {r} holds the service key"
            );
            intro_points += role.len();
        }
        if let Some(role) = node.rendezvous_role() {
            splices += role.stats.splices;
        }
        for ends in circuit_neighbours(&w, r) {
            assert!(
                !(ends.contains(&cli) && ends.contains(&svc)),
                "relay {r} joins the client and the service on one circuit"
            );
        }
    }
    assert!(intro_points >= 3, "intro points registered: {intro_points}");
    assert!(splices >= 2, "rendezvous splices: {splices}");
    // The ends know each other only by overlay address: the service's session circuits all
    // start at its own guards, the client's at its own.
    let peers = w.sim.nodes[svc].node.service_peers(s_addr);
    assert_eq!(peers, vec![me]);
}

#[test]
fn pseudonyms_differ_per_service_and_stay_stable() {
    let mut w = World::new(16, 14);
    let svc_a = w.add_host();
    let svc_b = w.add_host();
    let cli = w.add_host();
    let cli_restarted = w.add_host();
    let cli_real = w.add_host();
    w.sim.run_for(30_000);
    w.publish(svc_a, SERVICE_SEED, &[cli, cli_restarted]);
    w.publish(svc_b, OTHER_SERVICE_SEED, &[cli, cli_real]);
    let (a, b) = (
        service_addr(&SERVICE_SEED),
        service_addr(&OTHER_SERVICE_SEED),
    );
    for c in [cli, cli_restarted] {
        w.sim.nodes[c]
            .node
            .set_client_identity(CLIENT_SEED, Vec::new());
    }
    // The same key, configured to show its real identity to service B.
    w.sim.nodes[cli_real]
        .node
        .set_client_identity(CLIENT_SEED, vec![b]);
    let mut seen = Vec::new();
    for (c, s_node, s_addr) in [
        (cli, svc_a, a),
        (cli, svc_b, b),
        (cli_restarted, svc_a, a),
        (cli_real, svc_b, b),
    ] {
        let me = w.sim.nodes[c].node.pseudonym_for(s_addr).unwrap().octets();
        w.send(c, s_addr, &udp(me, s_addr, 5000, 53, b"visit"));
        let echoes = w.run_echo(c, s_node, 10_000, 20);
        assert!(
            !echoes.is_empty(),
            "visit of {c} to {s_node} failed: {:?} {:?} {:?} {:?}",
            w.unreachable(c),
            w.sim.nodes[c].node.session_stats(),
            w.sim.nodes[s_node].node.session_stats(),
            w.sim.nodes[c].node.sessions_info()
        );
        let peers = w.sim.nodes[s_node].node.service_peers(s_addr);
        assert!(peers.contains(&me));
        seen.push(me);
    }
    let real = globalnet::session::ServiceIdentity::from_seed(&CLIENT_SEED)
        .address()
        .octets();
    assert_ne!(seen[0], seen[1], "two services see two pseudonyms");
    assert_eq!(
        seen[0], seen[2],
        "one service sees the same pseudonym on every visit"
    );
    assert!(![seen[0], seen[1]].contains(&real));
    assert_eq!(seen[3], real, "real identity where configured");

    // An address without a descriptor is unreachable once the lookup finds nothing.
    let nowhere = service_addr(&[0x99; 32]);
    let me = w.sim.nodes[cli]
        .node
        .pseudonym_for(nowhere)
        .unwrap()
        .octets();
    let now = w.sim.now;
    let _ = w.sim.nodes[cli]
        .node
        .send_packet(now, nowhere, &udp(me, nowhere, 1, 2, b"?"));
    w.sim.flush(cli);
    w.sim.run_for(40_000);
    assert!(w
        .unreachable(cli)
        .iter()
        .any(|why| why.contains("descriptor")));
}

#[test]
fn a_client_claiming_another_pseudonym_or_address_is_refused() {
    let mut w = World::new(16, 15);
    let svc = w.add_host();
    let mallory = w.add_host();
    w.sim.run_for(30_000);
    w.publish(svc, SERVICE_SEED, &[mallory]);
    let s_addr = service_addr(&SERVICE_SEED);
    let victim = globalnet::session::Pseudonym::for_destination(
        &CLIENT_SEED,
        &std::net::Ipv6Addr::from(s_addr),
        false,
    );
    let victim_addr = victim.address().octets();
    w.sim.nodes[mallory]
        .node
        .set_client_identity([0x66; 32], Vec::new());
    // An honest node refuses to send from an address that is not its own for the destination.
    let now = w.sim.now;
    let forged = udp(victim_addr, s_addr, 6000, 22, b"let me in");
    assert!(w.sim.nodes[mallory]
        .node
        .send_packet(now, s_addr, &forged)
        .is_err());

    // The test hook plays a malicious client: message 1 claims the victim's pseudonym key.
    {
        let hooks = w.sim.nodes[mallory].node.session_test_hooks();
        hooks.claim_pseudonym = Some(*victim.public());
        hooks.skip_source_check = true;
    }
    w.send(mallory, s_addr, &forged);
    let echoes = w.run_echo(mallory, svc, 70_000, 100);
    assert!(echoes.is_empty());
    assert!(
        w.packets(svc, 0).is_empty(),
        "the service accepted a forged pseudonym"
    );
    let stats = w.sim.nodes[svc].node.session_stats().clone();
    assert!(stats.intro_rejected >= 1, "{stats:?}");
    assert_eq!(stats.service_sessions, 0);
    assert!(
        !w.unreachable(mallory).is_empty(),
        "the forger's introductions failed"
    );

    // With an honest session of its own, a packet with someone else's source is dropped. (The
    // failed introductions made the client drop the descriptor; the DHT would give it back.)
    for d in w.sim.nodes[svc].node.service_descriptors() {
        let now = w.sim.now;
        w.sim.nodes[mallory].node.cache_descriptor(now, &d).unwrap();
    }
    w.sim.nodes[mallory]
        .node
        .session_test_hooks()
        .claim_pseudonym = None;
    let own = w.sim.nodes[mallory]
        .node
        .pseudonym_for(s_addr)
        .unwrap()
        .octets();
    w.send(mallory, s_addr, &udp(own, s_addr, 6001, 22, b"hello"));
    assert_eq!(w.run_echo(mallory, svc, 10_000, 20).len(), 1);
    w.send(mallory, s_addr, &forged);
    w.run_echo(mallory, svc, 3_000, 20);
    assert!(w.sim.nodes[svc].node.session_stats().packets_refused >= 1);
    for p in w.packets(svc, 0) {
        assert_eq!(
            &p[8..24],
            &own,
            "only the proved pseudonym reaches the service"
        );
    }
}

#[test]
fn replayed_introduce_is_dropped() {
    let mut w = World::new(16, 16);
    let svc = w.add_host();
    let cli = w.add_host();
    w.sim.run_for(30_000);
    w.publish(svc, SERVICE_SEED, &[cli]);
    let s_addr = service_addr(&SERVICE_SEED);
    w.sim.nodes[cli]
        .node
        .set_client_identity(CLIENT_SEED, Vec::new());
    w.sim.nodes[cli]
        .node
        .session_test_hooks()
        .send_introduce_twice = true;
    let me = w.sim.nodes[cli]
        .node
        .pseudonym_for(s_addr)
        .unwrap()
        .octets();
    w.send(cli, s_addr, &udp(me, s_addr, 7000, 7, b"once"));
    assert_eq!(w.run_echo(cli, svc, 10_000, 20).len(), 1);
    let replays: u64 = (0..w.relays)
        .filter_map(|r| w.sim.nodes[r].node.intro_role().map(|x| x.stats.replays))
        .sum();
    assert_eq!(replays, 1, "the intro point dropped the copy");
    assert_eq!(w.sim.nodes[svc].node.session_stats().service_sessions, 1);

    // A replaying intro point: every relay passes each introduction to the service twice. The
    // service's own cache of client ephemerals drops the copy.
    for r in 0..w.relays {
        w.sim.nodes[r].node.session_test_hooks().replay_introduce2 = true;
    }
    let cli2 = w.add_host();
    w.sim.run_for(20_000);
    for d in w.sim.nodes[svc].node.service_descriptors() {
        let now = w.sim.now;
        w.sim.nodes[cli2].node.cache_descriptor(now, &d).unwrap();
    }
    w.sim.nodes[cli2]
        .node
        .set_client_identity([0xc2; 32], Vec::new());
    let me2 = w.sim.nodes[cli2]
        .node
        .pseudonym_for(s_addr)
        .unwrap()
        .octets();
    w.send(cli2, s_addr, &udp(me2, s_addr, 7001, 7, b"twice?"));
    assert_eq!(w.run_echo(cli2, svc, 10_000, 20).len(), 1);
    let stats = w.sim.nodes[svc].node.session_stats().clone();
    assert_eq!(stats.intro_replays, 1, "{stats:?}");
    assert_eq!(stats.service_sessions, 2, "one session per introduction");
}

/// Runs a flow that sends a numbered packet every 100 ms for `ms`; returns the numbers echoed.
fn run_flow(
    w: &mut World,
    cli: usize,
    svc: usize,
    me: [u8; 16],
    s: [u8; 16],
    seq: &mut u32,
    ms: u64,
) -> Vec<(Instant, u32)> {
    let mut got = Vec::new();
    for i in 0..ms / 100 {
        // A stand-in for the DHT (not merged yet): the client's cache gets the service's
        // current descriptors every second, as a fresh lookup would.
        if i % 10 == 0 {
            for d in w.sim.nodes[svc].node.service_descriptors() {
                let now = w.sim.now;
                let _ = w.sim.nodes[cli].node.cache_descriptor(now, &d);
            }
        }
        *seq += 1;
        w.send(cli, s, &udp(me, s, 42000, 7, &seq.to_be_bytes()));
        for (t, p) in w.run_echo(cli, svc, 100, 10) {
            got.push((t, u32::from_be_bytes(p[48..52].try_into().unwrap())));
        }
    }
    got
}

/// A network with a service and a client whose UDP flow has run for 10 s (checked).
struct BusyFlow {
    w: World,
    svc: usize,
    cli: usize,
    s_addr: [u8; 16],
    me: [u8; 16],
    seq: u32,
    flow: FlowKey,
}

fn busy_flow(seed: u64) -> BusyFlow {
    init_log();
    let mut w = World::new(24, seed);
    let svc = w.add_host();
    let cli = w.add_host();
    w.sim.run_for(30_000);
    w.publish(svc, SERVICE_SEED, &[cli]);
    let s_addr = service_addr(&SERVICE_SEED);
    w.sim.nodes[cli]
        .node
        .set_client_identity(CLIENT_SEED, Vec::new());
    let me = w.sim.nodes[cli]
        .node
        .pseudonym_for(s_addr)
        .unwrap()
        .octets();
    let mut seq = 0u32;
    let got = run_flow(&mut w, cli, svc, me, s_addr, &mut seq, 10_000);
    assert!(got.len() >= 80, "flow runs: {} echoes", got.len());
    let flow = key_of(&udp(me, s_addr, 42000, 7, b""));
    BusyFlow {
        w,
        svc,
        cli,
        s_addr,
        me,
        seq,
        flow,
    }
}

#[test]
fn killing_any_relay_on_a_flow_path_stalls_the_flow_but_it_continues() {
    let BusyFlow {
        mut w,
        svc,
        cli,
        s_addr,
        me,
        mut seq,
        flow,
    } = busy_flow(17);
    let guards: Vec<[u8; 32]> = w.sim.nodes[cli]
        .node
        .guards()
        .list()
        .iter()
        .map(|g| g.identity)
        .collect();
    // The client's middle, the rendezvous point, then the service's middle.
    let mut any_guard_killed = false;
    for round in 0..3 {
        let circ: CircId = w.sim.nodes[cli]
            .node
            .flow_circuit(s_addr, &flow)
            .expect("flow circuit");
        let path = w.sim.nodes[cli].node.circ.path(circ).unwrap().to_vec();
        let rp = *path[2].identity();
        let victim_id = match round {
            0 => *path[1].identity(),
            1 => rp,
            _ => {
                let sc = w.sim.nodes[svc]
                    .node
                    .service_session_circuits(s_addr, me)
                    .into_iter()
                    .find(|c| {
                        w.sim.nodes[svc]
                            .node
                            .circ
                            .path(*c)
                            .and_then(|p| p.last().map(|r| *r.identity()))
                            == Some(rp)
                    })
                    .expect("the service's side of the flow's circuit");
                *w.sim.nodes[svc].node.circ.path(sc).unwrap()[2].identity()
            }
        };
        // A guard carries all of a node's circuits: its death ends the session, and the flow
        // continues on a new one (the flow layer keeps its state).
        let svc_guards: Vec<[u8; 32]> = w.sim.nodes[svc]
            .node
            .guards()
            .list()
            .iter()
            .map(|g| g.identity)
            .collect();
        let guard_killed = guards.contains(&victim_id) || svc_guards.contains(&victim_id);
        // So does the death of a relay on every circuit of one side of the session: the spare
        // circuit may share relays with the flow's when the pool had no disjoint one (the
        // fallback of the pool choice), and a small network makes that likely.
        let on_all = |node: usize, circuits: Vec<CircId>| {
            !circuits.is_empty()
                && circuits.iter().all(|c| {
                    w.sim.nodes[node]
                        .node
                        .circ
                        .path(*c)
                        .is_some_and(|p| p.iter().skip(1).any(|r| *r.identity() == victim_id))
                })
        };
        let cli_circs = w.sim.nodes[cli]
            .node
            .session_circuits(s_addr)
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        let svc_circs = w.sim.nodes[svc].node.service_session_circuits(s_addr, me);
        let guard_killed = guard_killed || on_all(cli, cli_circs) || on_all(svc, svc_circs);
        any_guard_killed |= guard_killed;
        let victim = w.sim.node_by_identity(&victim_id).unwrap();
        assert!(victim != cli && victim != svc);
        let killed_at = w.sim.now;
        let first_after = seq + 1;
        w.sim.kill(victim);
        let got = run_flow(&mut w, cli, svc, me, s_addr, &mut seq, 30_000);
        let resumed = got
            .iter()
            .find(|(_, n)| *n >= first_after)
            .map(|(t, _)| *t - killed_at);
        let late: Vec<u32> = got
            .iter()
            .map(|(_, n)| *n)
            .filter(|n| *n >= seq - 100)
            .collect();
        eprintln!(
            "round {round}: relay {victim} killed (a guard or on all session circuits: \
             {guard_killed}); flow resumed after \
             {resumed:?} ms; {} of the last 100 packets echoed",
            late.len()
        );
        assert!(
            resumed.is_some_and(|r| r < if guard_killed { 30_000 } else { 20_000 }),
            "flow did not resume: {:?} {:?} {:?} {:?}",
            w.unreachable(cli),
            w.sim.nodes[cli].node.session_stats(),
            w.sim.nodes[cli].node.sessions_info(),
            w.sim.nodes[cli].node.session_circuits(s_addr)
        );
        assert!(late.len() >= 95, "flow continues: {} of 100", late.len());
        let now_circ = w.sim.nodes[cli].node.flow_circuit(s_addr, &flow).unwrap();
        assert_ne!(now_circ, circ, "the flow moved to another circuit");
    }
    // One session throughout unless a guard (or a relay every session circuit of one side went
    // through) died: the flow moved, nothing was renegotiated.
    if !any_guard_killed {
        assert_eq!(w.sim.nodes[svc].node.session_stats().service_sessions, 1);
        assert_eq!(w.sim.nodes[cli].node.session_stats().client_sessions, 1);
    }
    assert!(w.sim.nodes[cli].node.session_stats().flows_moved >= 3);
}

/// A flow only the service sends on (a download, an ssh session's output: the client's TCP has
/// nothing to say while nothing arrives) survives a relay on its path dying silently. The client
/// never probes; the relay next to the dead one must notice (its link PINGs go unanswered) and
/// close the circuit, and the service answers on another one.
#[test]
fn a_flow_only_the_service_sends_on_survives_a_silent_relay_death() {
    let mut w = World::new(24, 23);
    let svc = w.add_host();
    let cli = w.add_host();
    w.sim.run_for(30_000);
    w.publish(svc, SERVICE_SEED, &[cli]);
    let s_addr = service_addr(&SERVICE_SEED);
    w.sim.nodes[cli]
        .node
        .set_client_identity(CLIENT_SEED, Vec::new());
    let me = w.sim.nodes[cli]
        .node
        .pseudonym_for(s_addr)
        .unwrap()
        .octets();
    let mut seq = 0u32;
    // The client opens the flow; from then on only the service sends.
    let got = run_flow(&mut w, cli, svc, me, s_addr, &mut seq, 3_000);
    assert!(!got.is_empty(), "the flow runs");
    let flow = key_of(&udp(me, s_addr, 42000, 7, b""));
    let circ = w.sim.nodes[cli].node.flow_circuit(s_addr, &flow).unwrap();
    // A relay on the flow's circuit only (not a guard, on no other circuit of the session):
    // the session stays and only that circuit dies. The flow's relays are the busy ones.
    let ids = |n: usize, c: CircId| -> Vec<[u8; 32]> {
        w.sim.nodes[n]
            .node
            .circ
            .path(c)
            .map(|p| p.iter().skip(1).map(|r| *r.identity()).collect())
            .unwrap_or_default()
    };
    let mut shared: Vec<[u8; 32]> = Vec::new();
    for (c, _) in w.sim.nodes[cli].node.session_circuits(s_addr) {
        if c != circ {
            shared.extend(ids(cli, c));
        }
    }
    let svc_circs = w.sim.nodes[svc].node.service_session_circuits(s_addr, me);
    let svc_relays: Vec<[u8; 32]> = svc_circs.iter().flat_map(|c| ids(svc, *c)).collect();
    for r in &svc_relays {
        if svc_relays.iter().filter(|x| *x == r).count() > 1 {
            shared.push(*r);
        }
    }
    let relayed = |w: &World| -> Vec<u64> {
        w.sim
            .nodes
            .iter()
            .map(|n| n.node.circ.stats().relayed_cells)
            .collect()
    };
    let c0 = relayed(&w);
    let push = |w: &mut World, n: u32, ms: u64| -> Vec<(Instant, u32)> {
        let mut got = Vec::new();
        let mut seen = w.sim.nodes[cli].events.len();
        for i in 0..ms / 100 {
            let now = w.sim.now;
            let p = udp(s_addr, me, 7, 42000, &(n + i as u32).to_be_bytes());
            let _ = w.sim.nodes[svc].node.send_packet(now, me, &p);
            w.sim.flush(svc);
            w.sim.run_for(100);
            for p in w.packets(cli, seen) {
                got.push((w.sim.now, u32::from_be_bytes(p[48..52].try_into().unwrap())));
            }
            seen = w.sim.nodes[cli].events.len();
        }
        got
    };
    let before = push(&mut w, 0, 3_000);
    assert!(before.len() >= 25, "pushed before: {}", before.len());
    let c1 = relayed(&w);
    let (cg, sg) = (
        w.sim.nodes[cli].node.guards().list().to_vec(),
        w.sim.nodes[svc].node.guards().list().to_vec(),
    );
    let victim = (0..w.sim.nodes.len())
        .filter(|i| c1[*i].saturating_sub(c0[*i]) >= 20)
        .find(|i| {
            let id = w.sim.nodes[*i].identity;
            !shared.contains(&id)
                && !cg.iter().chain(sg.iter()).any(|g| g.identity == id)
                && *i != cli
                && *i != svc
        })
        .expect("a relay only the flow's circuit uses");
    let killed_at = w.sim.now;
    w.sim.kill(victim);
    let after = push(&mut w, 1_000, 30_000);
    eprintln!(
        "service circuits before {svc_circs:?} after {:?}; client {:?}",
        w.sim.nodes[svc].node.service_session_circuits(s_addr, me),
        w.sim.nodes[cli].node.session_circuits(s_addr)
    );
    let resumed = after.first().map(|(t, _)| *t - killed_at);
    eprintln!("service-only flow resumed {resumed:?} ms after its relay died");
    // Before dead links were PINGed as soon as they went quiet this took about 18 s (the idle
    // PING interval plus its timeouts).
    assert!(
        resumed.is_some_and(|r| r < 14_000),
        "the service's packets resumed after {resumed:?} ms; {:?}",
        w.sim.nodes[svc].node.session_stats()
    );
    assert!(after.len() >= 100, "the flow continues: {}", after.len());
}

/// Two relay deaths 6 s apart on a busy flow's path (a relay on that circuit only, not a guard):
/// each time the session finds the circuit silent (no frame back, no answer to its PINGs) within
/// `CIRCUIT_DEAD_AFTER_MS` and the flow moves to the spare at once (10.8). In virtual time the
/// flow's packets are back within 3.5 s of each death (detection 2 s, the node's 250 ms timer
/// tick, a round trip, the flow's 100 ms packet interval); before end-to-end detection this took
/// 4 to 8 s (the neighbours' link timeouts, then a 5 s probe plus a 3 s wait).
#[test]
fn two_relay_deaths_on_a_busy_path_each_stall_the_flow_under_3_5_s() {
    let BusyFlow {
        mut w,
        svc,
        cli,
        s_addr,
        me,
        mut seq,
        flow,
    } = busy_flow(31);
    let mut stalls = Vec::new();
    for round in 0..2 {
        let circ = w.sim.nodes[cli].node.flow_circuit(s_addr, &flow).unwrap();
        let ids = |w: &World, n: usize, c: CircId| -> Vec<[u8; 32]> {
            w.sim.nodes[n]
                .node
                .circ
                .path(c)
                .map(|p| p.iter().skip(1).map(|r| *r.identity()).collect())
                .unwrap_or_default()
        };
        // Relays on other circuits of the session (either side) and guards are left alone: this
        // is about one circuit's path dying, not the session's.
        let mut other: Vec<[u8; 32]> = Vec::new();
        for (c, _) in w.sim.nodes[cli].node.session_circuits(s_addr) {
            if c != circ {
                other.extend(ids(&w, cli, c));
            }
        }
        let svc_circs = w.sim.nodes[svc].node.service_session_circuits(s_addr, me);
        let svc_relays: Vec<[u8; 32]> = svc_circs.iter().flat_map(|c| ids(&w, svc, *c)).collect();
        for r in &svc_relays {
            if svc_relays.iter().filter(|x| *x == r).count() > 1 {
                other.push(*r);
            }
        }
        for n in [cli, svc] {
            other.extend(
                w.sim.nodes[n]
                    .node
                    .guards()
                    .list()
                    .iter()
                    .map(|g| g.identity),
            );
        }
        let mine = ids(&w, cli, circ);
        let rp = *mine.last().unwrap();
        let svc_half = svc_circs
            .iter()
            .find(|c| {
                w.sim.nodes[svc]
                    .node
                    .circ
                    .path(**c)
                    .and_then(|p| p.last().map(|r| *r.identity()))
                    == Some(rp)
            })
            .map(|c| ids(&w, svc, *c))
            .unwrap_or_default();
        let Some(victim_id) = mine
            .iter()
            .chain(svc_half.iter())
            .find(|r| !other.contains(r))
            .copied()
        else {
            eprintln!("round {round}: every relay of the flow's path is shared; skipped");
            continue;
        };
        let victim = w.sim.node_by_identity(&victim_id).unwrap();
        assert!(victim != cli && victim != svc);
        let killed_at = w.sim.now;
        let first_after = seq + 1;
        w.sim.kill(victim);
        let got = run_flow(&mut w, cli, svc, me, s_addr, &mut seq, 6_000);
        let resumed = got
            .iter()
            .find(|(_, n)| *n >= first_after)
            .map(|(t, _)| *t - killed_at);
        eprintln!("round {round}: relay {victim} on the flow's path killed; stall {resumed:?} ms");
        assert!(
            resumed.is_some_and(|r| r <= 3_500),
            "stall {resumed:?} ms; {:?} {:?}",
            w.sim.nodes[cli].node.session_stats(),
            w.sim.nodes[svc].node.session_stats()
        );
        stalls.push(resumed);
        assert_ne!(
            w.sim.nodes[cli].node.flow_circuit(s_addr, &flow),
            Some(circ),
            "the flow moved"
        );
    }
    assert!(!stalls.is_empty(), "no relay could be killed");
    assert!(w.sim.nodes[cli].node.session_stats().probe_failures >= 1);
    assert_eq!(w.sim.nodes[cli].node.session_stats().client_sessions, 1);
}

/// The main scenario end to end through the DHT: the service publishes its descriptors through
/// a 4-hop circuit, the client looks them up through a 3-hop circuit, then data both ways.
#[test]
fn client_finds_the_service_through_the_dht() {
    let mut w = World::new(30, 18);
    let svc = w.add_host();
    let cli = w.add_host();
    w.sim.run_for(40_000);
    w.sim.nodes[cli]
        .node
        .set_client_identity(CLIENT_SEED, Vec::new());
    let now = w.sim.now;
    w.sim.nodes[svc].node.add_service(now, SERVICE_SEED);
    w.sim.flush(svc);
    // Intro points, descriptors, publication through a 4-hop circuit.
    w.sim.run_for(30_000);
    let s_addr = service_addr(&SERVICE_SEED);
    let me = w.sim.nodes[cli]
        .node
        .pseudonym_for(s_addr)
        .unwrap()
        .octets();
    let t0 = w.sim.now;
    let p = udp(me, s_addr, 43000, 7, b"found you");
    w.send(cli, s_addr, &p);
    let echoes = w.run_echo(cli, svc, 30_000, 20);
    assert!(
        !echoes.is_empty(),
        "no answer through the DHT path: {:?}",
        w.unreachable(cli)
    );
    eprintln!(
        "first contact with a DHT lookup: {} ms to the first echo",
        echoes[0].0 - t0
    );
    let mut echoes = Vec::new();
    for i in 0..20u16 {
        w.send(
            cli,
            s_addr,
            &udp(me, s_addr, 43000 + i % 4, 7, &[i as u8; 600]),
        );
        echoes.extend(w.run_echo(cli, svc, 20, 5));
    }
    echoes.extend(w.run_echo(cli, svc, 3_000, 20));
    assert_eq!(echoes.len(), 20, "data both ways on four flows");
}

/// What one hostile rendezvous point reads (issue #18 item 2, docs/threat-model.md): over
/// packets of many sizes both ways, e2e PINGs and PONGs, and the NEW_CIRCUIT frames that join
/// spare circuits for new flows, every DATA message a rendezvous point splices has one length,
/// and the bytes where the e2e counter travels do not count.
#[test]
fn a_rendezvous_point_sees_one_length_and_no_counter() {
    use globalnet::session::frame::{E2E_COUNTER_LIMIT, E2E_HEADER_LEN, E2E_VERSION};
    use globalnet::wire::relay::RELAY_PAYLOAD_LEN;

    let mut w = World::new(16, 17);
    let svc = w.add_host();
    let cli = w.add_host();
    w.sim.run_for(30_000);
    for n in &mut w.sim.nodes {
        n.node.circ.observe_splices();
    }
    w.sim.nodes[cli]
        .node
        .set_client_identity(CLIENT_SEED, Vec::new());
    w.publish(svc, SERVICE_SEED, &[cli]);
    let s_addr = service_addr(&SERVICE_SEED);
    let me = w.sim.nodes[cli]
        .node
        .pseudonym_for(s_addr)
        .unwrap()
        .octets();
    // UDP bodies from 1 byte to a full 1280-byte packet, on four flows.
    let sizes = [1usize, 100, 500, 1000, 1232];
    let mut pongs = 0;
    for i in 0..60usize {
        let body = vec![i as u8; sizes[i % sizes.len()]];
        w.send(
            cli,
            s_addr,
            &udp(me, s_addr, 42000 + (i % 4) as u16, 7, &body),
        );
        w.run_echo(cli, svc, 100, 5);
        if i % 10 == 9 {
            let now = w.sim.now;
            let id = w.sim.nodes[cli].node.e2e_ping(now, s_addr).unwrap();
            w.sim.flush(cli);
            let from = w.sim.nodes[cli].events.len();
            w.run_echo(cli, svc, 1_000, 20);
            pongs += w.sim.nodes[cli].events[from..]
                .iter()
                .filter(|e| matches!(e, NodeEvent::Pong { id: got, .. } if *got == id))
                .count();
        }
    }
    w.run_echo(cli, svc, 5_000, 20);
    let echoes = w.packets(cli, 0).len();
    assert!(echoes >= 50, "echoes: {echoes}");
    assert!(pongs >= 5, "pongs: {pongs}");
    let joins = w.sim.nodes[cli].node.session_stats().joins;
    assert!(joins >= 1, "NEW_CIRCUIT frames joined circuits: {joins}");

    // Per rendezvous point and arriving circuit, in arrival order.
    let mut streams: std::collections::BTreeMap<(usize, u64), Vec<u64>> = Default::default();
    let mut total = 0;
    for (i, n) in w.sim.nodes.iter().enumerate() {
        for m in n.node.circ.spliced_seen() {
            total += 1;
            assert_eq!(
                usize::from(m.length),
                RELAY_PAYLOAD_LEN,
                "relay {i} read a length"
            );
            assert_eq!(m.head[0], E2E_VERSION);
            let c = u64::from_be_bytes(m.head[1..E2E_HEADER_LEN].try_into().unwrap());
            streams.entry((i, m.from)).or_default().push(c);
        }
    }
    assert!(total >= 2 * echoes, "spliced messages: {total}");
    let mut small = 0;
    for ((relay, _), cs) in &streams {
        // A clear counter starts near 0 and steps by one (with gaps where the session's other
        // circuits took the numbers between). What the relay reads does neither.
        small += cs.iter().filter(|c| **c < E2E_COUNTER_LIMIT).count();
        let steps = cs
            .windows(2)
            .filter(|p| p[1].wrapping_sub(p[0]) < 1 << 20)
            .count();
        assert_eq!(steps, 0, "relay {relay} reads a counter: {cs:x?}");
    }
    // A masked counter falls below 2^48 once in 2^16 frames.
    assert!(small <= 2, "{small} of {total} look like counters");
    eprintln!(
        "{total} spliced messages on {} circuit directions, {echoes} echoes, {pongs} pongs, \
         {joins} joins",
        streams.len()
    );
}

/// Issue #18 item 5, protocol 6.7: a burst of more than `MAX_SEQ_JUMP` cells lost in a row on a
/// flow's circuit (the client's link to its guard blacked out while the flow sends at full speed)
/// closes that circuit at the guard, and the flow moves to another circuit exactly as when a
/// relay on it dies.
#[test]
fn a_flow_whose_circuit_loses_more_than_max_seq_jump_cells_moves() {
    use globalnet::circuit::MAX_SEQ_JUMP;
    init_log();
    let mut w = World::new(24, 29);
    let svc = w.add_host();
    let cli = w.add_host();
    w.sim.run_for(30_000);
    w.publish(svc, SERVICE_SEED, &[cli]);
    let s_addr = service_addr(&SERVICE_SEED);
    w.sim.nodes[cli]
        .node
        .set_client_identity(CLIENT_SEED, Vec::new());
    let me = w.sim.nodes[cli]
        .node
        .pseudonym_for(s_addr)
        .unwrap()
        .octets();
    let mut seq = 0u32;
    let got = run_flow(&mut w, cli, svc, me, s_addr, &mut seq, 5_000);
    assert!(got.len() >= 40, "flow runs: {} echoes", got.len());
    let flow = key_of(&udp(me, s_addr, 42000, 7, b""));
    let circ = w.sim.nodes[cli].node.flow_circuit(s_addr, &flow).unwrap();
    let path = w.sim.nodes[cli].node.circ.path(circ).unwrap().to_vec();
    let guard = w.sim.node_by_identity(path[0].identity()).unwrap();
    let jumps_before = w.sim.nodes[guard].node.circ.stats().jumps_too_far;
    // The burst: MAX_SEQ_JUMP + 1 packets of the flow, each one cell on its circuit, all lost
    // (what the local link queue does not hold is dropped there, which is loss too).
    let pair = (w.sim.nodes[cli].addr.ip(), w.sim.nodes[guard].addr.ip());
    w.sim.blocked.push(pair);
    let c0 = w.sim.nodes[cli].node.circ.next_forward_seq(circ).unwrap();
    for _ in 0..=MAX_SEQ_JUMP {
        seq += 1;
        let now = w.sim.now;
        w.sim.nodes[cli]
            .node
            .send_packet(now, s_addr, &udp(me, s_addr, 42000, 7, &seq.to_be_bytes()))
            .unwrap();
        w.sim.nodes[cli].node.pump(now);
    }
    let c1 = w.sim.nodes[cli].node.circ.next_forward_seq(circ).unwrap();
    assert_eq!(c1.wrapping_sub(c0), MAX_SEQ_JUMP + 1, "one cell per packet");
    let lost_before = w.sim.lost;
    w.sim.flush(cli);
    w.sim.run_for(200);
    assert!(w.sim.lost - lost_before > MAX_SEQ_JUMP / 4);
    w.sim.blocked.retain(|p| *p != pair);
    let burst_end = w.sim.now;
    let first_after = seq + 1;
    let got = run_flow(&mut w, cli, svc, me, s_addr, &mut seq, 20_000);
    // The guard saw the jump and destroyed the circuit; the client no longer has it.
    assert!(w.sim.nodes[guard].node.circ.stats().jumps_too_far > jumps_before);
    assert!(
        !w.sim.nodes[cli]
            .node
            .circ
            .circuits(w.sim.now)
            .iter()
            .any(|c| c.id == circ),
        "the flow's circuit is closed"
    );
    let resumed = got
        .iter()
        .find(|(_, n)| *n >= first_after)
        .map(|(t, _)| *t - burst_end);
    eprintln!(
        "burst of {} lost cells: the guard closed the circuit; the flow resumed after {resumed:?} ms",
        MAX_SEQ_JUMP + 1
    );
    assert!(resumed.is_some_and(|r| r < 10_000), "flow did not resume");
    let now_circ = w.sim.nodes[cli].node.flow_circuit(s_addr, &flow).unwrap();
    assert_ne!(now_circ, circ, "the flow moved to another circuit");
    assert!(w.sim.nodes[cli].node.session_stats().flows_moved >= 1);
}
