//! The in-process network is repeatable: one seed, run twice in one process, gives the same
//! run datagram for datagram (DESIGN.md section 10). Every layer acts: links form, the DHT
//! carries the service's descriptors, the client's lookup, introduction and rendezvous build
//! circuits, a flow runs, and relays on its path die so sessions and links recover. Any decision
//! taken in a hash table's iteration order (which differs between tables even in one process)
//! shows up here as a different digest.

use globalnet::node::NodeEvent;
use globalnet::sim::{Sim, SimConfig};

const SERVICE_SEED: [u8; 32] = [0x51; 32];
const CLIENT_SEED: [u8; 32] = [0xc1; 32];

mod sim_packets;
use sim_packets::udp;

/// What one run did: the digest of every delivered datagram, the client's and the service's
/// events, and the relays killed.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    digest: [u8; 32],
    delivered: u64,
    client_events: Vec<String>,
    service_events: Vec<String>,
    killed: Vec<usize>,
    echoes: usize,
}

fn run(seed: u64) -> Outcome {
    let mut sim = Sim::new(SimConfig {
        seed,
        jitter_ms: 5,
        loss: 0.01,
        ..SimConfig::default()
    });
    sim.record_trace();
    sim.add_node(true, &[], 8);
    for _ in 1..24 {
        sim.add_node(true, &[0], 8);
    }
    let svc = sim.add_node(false, &[0, 1], 6);
    let cli = sim.add_node(false, &[0, 1], 6);
    sim.run_for(40_000);
    sim.nodes[cli]
        .node
        .set_client_identity(CLIENT_SEED, Vec::new());
    let now = sim.now;
    sim.nodes[svc].node.add_service(now, SERVICE_SEED);
    sim.flush(svc);
    sim.run_for(30_000);
    let s_addr = globalnet::session::ServiceIdentity::from_seed(&SERVICE_SEED)
        .address()
        .octets();
    let me = sim.nodes[cli].node.pseudonym_for(s_addr).unwrap().octets();
    let mut seen_svc = 0;
    let mut echoes = 0;
    let mut killed = Vec::new();
    let mut first_echo = None;
    for i in 0..400u32 {
        // Two relays die while the flow runs: first one on the flow's path (not a guard), then
        // the busiest remaining relay.
        if i == 150 || i == 280 {
            let guards: Vec<[u8; 32]> = [cli, svc]
                .iter()
                .flat_map(|&n| sim.nodes[n].node.guards().list().to_vec())
                .map(|g| g.identity)
                .collect();
            let flow =
                globalnet::session::flows::flow_of(&udp(me, s_addr, 42000, 7, b""), true).unwrap();
            let on_path: Vec<[u8; 32]> = sim.nodes[cli]
                .node
                .flow_circuit(s_addr, &flow)
                .and_then(|c| sim.nodes[cli].node.circ.path(c))
                .map(|p| p.iter().map(|r| *r.identity()).collect())
                .unwrap_or_default();
            let victim = on_path
                .iter()
                .filter(|id| !guards.contains(id))
                .find_map(|id| sim.node_by_identity(id))
                .filter(|v| sim.nodes[*v].alive && *v != cli && *v != svc)
                .unwrap_or(2 + killed.len());
            sim.kill(victim);
            killed.push(victim);
        }
        let now = sim.now;
        let p = udp(me, s_addr, 42000, 7, &i.to_be_bytes());
        let _ = sim.nodes[cli].node.send_packet(now, s_addr, &p);
        sim.flush(cli);
        for _ in 0..10 {
            sim.run_for(10);
            let inbound: Vec<Vec<u8>> = sim.nodes[svc].events[seen_svc..]
                .iter()
                .filter_map(|e| match e {
                    NodeEvent::Packet { buf } => Some(buf.clone()),
                    _ => None,
                })
                .collect();
            seen_svc = sim.nodes[svc].events.len();
            for p in inbound {
                let mut r = p.clone();
                r[8..24].copy_from_slice(&p[24..40]);
                r[24..40].copy_from_slice(&p[8..24]);
                r[40..42].copy_from_slice(&p[42..44]);
                r[42..44].copy_from_slice(&p[40..42]);
                let dst: [u8; 16] = p[8..24].try_into().unwrap();
                let now = sim.now;
                let _ = sim.nodes[svc].node.send_packet(now, dst, &r);
                sim.flush(svc);
                first_echo.get_or_insert(now);
            }
        }
    }
    eprintln!("first packet at the service (the first session) at {first_echo:?}");
    for ev in &sim.nodes[cli].events {
        if matches!(ev, NodeEvent::Packet { .. }) {
            echoes += 1;
        }
    }
    let events = |n: usize| -> Vec<String> {
        sim.nodes[n]
            .events
            .iter()
            .map(|e| format!("{e:?}"))
            .collect()
    };
    Outcome {
        digest: sim.trace_digest().unwrap(),
        delivered: sim.delivered,
        client_events: events(cli),
        service_events: events(svc),
        killed,
        echoes,
    }
}

/// Fails with the first event where two runs part (the whole lists are too long to read).
fn same_events(who: &str, a: &[String], b: &[String]) {
    if let Some(i) = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i)) {
        panic!(
            "the {who}'s events part at {i} of {}/{}: {:?} / {:?}",
            a.len(),
            b.len(),
            a.get(i),
            b.get(i)
        );
    }
}

#[test]
fn one_seed_run_twice_in_one_process_gives_the_same_run() {
    let a = run(41);
    let b = run(41);
    eprintln!(
        "delivered {} / {}, echoes {} / {}, killed {:?} / {:?}",
        a.delivered, b.delivered, a.echoes, b.echoes, a.killed, b.killed
    );
    assert_eq!(a.killed, b.killed, "the same relays died");
    same_events("client", &a.client_events, &b.client_events);
    same_events("service", &a.service_events, &b.service_events);
    assert_eq!(a.delivered, b.delivered, "datagrams delivered");
    assert_eq!(a.digest, b.digest, "every datagram");
    // A sanity check that the flow ran through both deaths (400 sent), not a stall bound (those
    // are tests/sim_failover.rs). Seed 41 echoed 314 before the service's intro-point checks and
    // the link CLOSE on a dead peer (issue #19) and 275 after. Those changes alter the traffic, so
    // the run takes other circuits from there on, and in the new run the second victim is bad luck,
    // not a defect (instrumented, 2026-12-07: no link was closed on a HELLO that asks, and no intro
    // circuit was rebuilt in the way). Relay 18, killed for being on the client's flow circuit
    // (t = 98.1 s), is also the second hop of the service's intro circuit to intro point
    // db906331. At 100.0 s the client finds its session circuit silent (1.9 s), loses the session
    // and introduces again, through db906331: the intro point forwards the INTRODUCE1 onto the
    // service's circuit, whose break nobody has noticed yet (the relay before 18 gives its link up
    // at 102.0 s; the service rebuilds the intro circuit at once), so it is lost, and the client
    // waits out the introduction timeout (5 s) before it tries intro point e031a8dd and the
    // session is back (105.4 s). That stall is 7.5 s (75 echoes); the first death's is 5.5 s (the
    // client's new circuits try the dead relay 0 first). Without the lost introduction the second
    // stall would be about 2.5 s, which is where the 39 echoes went.
    // Timers at their deadlines for every layer (issue #21 item 6, 2026-12-07): 317 -> 306 echoes,
    // victims [0, 20] -> [0, 13], first session at 71.1 s. Timers fire at other instants (and
    // idle links under circuits are no longer pinged every second: 60,254 -> 38,215 datagrams),
    // so other datagrams meet the 1 % loss and the run takes other circuits; the earlier 1 s idle
    // tick's 93.9 s first session was such a loss hitting the first DHT_LOOKUP cell
    // (docs/decisions.md, timers).
    assert!(a.echoes >= 250, "the flow ran: {} echoes", a.echoes);
}
