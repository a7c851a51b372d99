//! Proof of work on introductions in the in-process network (issue #19 item 3, protocol.md
//! 10.12): a client's puzzle is handed to the node's driver instead of being solved on the
//! node's task (where a solve at the client's cap would stall every circuit on the node for
//! about a second), the node keeps running meanwhile, and INTRODUCE1 goes out, with the proof,
//! only when the driver gives the answer back.

use globalnet::node::NodeEvent;
use globalnet::session::intro_pow::SolveRequest;
use globalnet::sim::{Sim, SimConfig};

mod sim_packets;
use sim_packets::udp;

const SERVICE_SEED: [u8; 32] = [0x51; 32];
const CLIENT_SEED: [u8; 32] = [0xc1; 32];
/// The effort the client offers (a test hook: the idle service asks for none).
const EFFORT: u32 = 20_000;

fn solve_requests(sim: &Sim, i: usize, from: usize) -> Vec<SolveRequest> {
    sim.nodes[i].events[from..]
        .iter()
        .filter_map(|e| match e {
            NodeEvent::Solve(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn packets(sim: &Sim, i: usize) -> usize {
    sim.nodes[i]
        .events
        .iter()
        .filter(|e| matches!(e, NodeEvent::Packet { .. }))
        .count()
}

#[test]
fn a_clients_proof_of_work_is_solved_by_the_driver_off_the_node() {
    let mut sim = Sim::new(SimConfig {
        seed: 19,
        ..SimConfig::default()
    });
    sim.add_node(true, &[], 8);
    for _ in 1..16 {
        sim.add_node(true, &[0], 8);
    }
    let svc = sim.add_node(false, &[0, 1], 6);
    let cli = sim.add_node(false, &[0, 1], 6);
    sim.run_for(30_000);
    let now = sim.now;
    sim.nodes[svc].node.add_service(now, SERVICE_SEED);
    sim.flush(svc);
    sim.run_for(20_000);
    let info = sim.nodes[svc].node.services_info();
    assert_eq!(info[0].intro_points.len(), 3, "{info:?}");
    for d in sim.nodes[svc].node.service_descriptors() {
        let now = sim.now;
        sim.nodes[cli].node.cache_descriptor(now, &d).unwrap();
    }
    let s_addr = info[0].address.octets();

    let node = &mut sim.nodes[cli].node;
    node.set_client_identity(CLIENT_SEED, Vec::new());
    node.set_solve_inline(false);
    node.session_test_hooks().client_min_effort = EFFORT;
    let me = node.pseudonym_for(s_addr).unwrap().octets();
    let from = sim.nodes[cli].events.len();
    let now = sim.now;
    sim.nodes[cli]
        .node
        .send_packet(now, s_addr, &udp(me, s_addr, 7000, 7, b"paid"))
        .unwrap();
    sim.flush(cli);

    // The introduction gets as far as its puzzle, which goes to the driver.
    let mut reqs = Vec::new();
    for _ in 0..1000 {
        sim.run_for(20);
        reqs = solve_requests(&sim, cli, from);
        if !reqs.is_empty() {
            break;
        }
    }
    assert_eq!(reqs.len(), 1, "one puzzle for one introduction");
    let req = reqs.remove(0);
    assert_eq!(req.effort, EFFORT);
    // While the driver works, the node runs on and nothing reaches the service: the INTRODUCE1
    // waits for its proof.
    sim.run_for(3_000);
    let svc_info = &sim.nodes[svc].node.services_info()[0];
    assert_eq!(svc_info.intros_with_pow, 0);
    assert_eq!(sim.nodes[svc].node.session_stats().service_sessions, 0);
    assert_eq!(packets(&sim, svc), 0);

    // The driver solves it on a thread of its own and hands the answer back.
    let token = req.token;
    let pow = std::thread::spawn(move || req.solve()).join().unwrap();
    assert!(pow.is_some_and(|p| p.effort == EFFORT));
    let now = sim.now;
    sim.nodes[cli].node.pow_solved(now, token, pow);
    sim.flush(cli);
    sim.run_for(10_000);
    let svc_info = &sim.nodes[svc].node.services_info()[0];
    assert_eq!(svc_info.intros_with_pow, 1, "the service saw the proof");
    assert_eq!(sim.nodes[svc].node.session_stats().service_sessions, 1);
    assert_eq!(packets(&sim, svc), 1, "the queued packet arrived");

    // The same answer again belongs to no waiting introduction: nothing is sent.
    let now = sim.now;
    sim.nodes[cli].node.pow_solved(now, token, pow);
    sim.flush(cli);
    sim.run_for(5_000);
    assert_eq!(sim.nodes[svc].node.services_info()[0].intros_with_pow, 1);
    assert_eq!(sim.nodes[svc].node.session_stats().service_sessions, 1);
}
