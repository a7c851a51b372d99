//! Relay deaths under live flows in the in-process network (issues #8, #20 item 5): killing any
//! relay on a flow's path stalls the flow but it continues, a flow only the service sends on
//! survives a silent relay death, two deaths on a busy path each stall it under 3.5 s, and a flow
//! whose circuit loses too many cells moves.

use globalnet::circuit::layer::CircId;
use globalnet::time::Instant;
mod sim_world;
#[allow(unused_imports)]
use sim_world::failover::*;
#[allow(unused_imports)]
use sim_world::*;

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
        let (got, resumed) =
            kill_and_resume(&mut w, victim, cli, svc, me, s_addr, &mut seq, 30_000);
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
    let Stage {
        mut w,
        svc,
        cli,
        s_addr,
        me,
    } = Stage::new(24, 23);
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
        let (_, resumed) = kill_and_resume(&mut w, victim, cli, svc, me, s_addr, &mut seq, 6_000);
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

/// Issue #18 item 5, protocol 6.7: a burst of more than `MAX_SEQ_JUMP` cells lost in a row on a
/// flow's circuit (the client's link to its guard blacked out while the flow sends at full speed)
/// closes that circuit at the guard, and the flow moves to another circuit exactly as when a
/// relay on it dies.
#[test]
fn a_flow_whose_circuit_loses_more_than_max_seq_jump_cells_moves() {
    use globalnet::circuit::MAX_SEQ_JUMP;
    init_log();
    let Stage {
        mut w,
        svc,
        cli,
        s_addr,
        me,
    } = Stage::new(24, 29);
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
