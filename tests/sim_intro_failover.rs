//! A relay on a service's intro circuit dies (issue #20 item 5, lead (a) of helper intro20): the
//! intro point drops the registration when the DESTROY reaches it and refuses clients with
//! status 1, while the service, whose side of the circuit is idle, learns of it only through its
//! periodic check (10.6.1, up to 20 s). These tests measure how long the registration is lost
//! and how long until the service has it again.

use globalnet::circuit::layer::CircId;
mod sim_world;
#[allow(unused_imports)]
use sim_world::*;

/// Runs the echo flow (one packet every 100 ms) for `ms`, handing the client the service's
/// descriptors every second; calls `each` every 100 ms.
fn flow_for(st: &mut Stage, seq: &mut u32, ms: u64, mut each: impl FnMut(&World)) {
    for i in 0..ms / 100 {
        if i % 10 == 0 {
            for d in st.w.sim.nodes[st.svc].node.service_descriptors() {
                let now = st.w.sim.now;
                let _ = st.w.sim.nodes[st.cli].node.cache_descriptor(now, &d);
            }
        }
        *seq += 1;
        let (cli, s, me) = (st.cli, st.s_addr, st.me);
        st.w.send(cli, s, &udp(me, s, 42000, 7, &seq.to_be_bytes()));
        let _ = st.w.run_echo(cli, st.svc, 100, 10);
        each(&st.w);
    }
}

fn path_of(w: &World, node: usize, c: CircId) -> Vec<[u8; 32]> {
    w.sim.nodes[node]
        .node
        .circ
        .path(c)
        .map(|p| p.iter().map(|r| *r.identity()).collect())
        .unwrap_or_default()
}

/// The node holding a registration for `key`, if any does.
fn holder(w: &World, key: &[u8; 32]) -> Option<usize> {
    (0..w.sim.nodes.len()).find(|&n| {
        w.sim.nodes[n]
            .node
            .intro_role()
            .is_some_and(|r| r.auth_keys().contains(key))
    })
}

/// What one kill measured (virtual ms after the death).
#[derive(Debug)]
struct Outage {
    /// When no intro point held a registration for the key (clients: status 1): from, to.
    lost: Vec<(u64, Option<u64>)>,
    /// When the service had the key registered again on a circuit without the dead relay
    /// (or, if it gave the intro point up, three intro points established again).
    back: Option<u64>,
    /// Whether the service still had the key at the end (else it chose another intro point).
    kept: bool,
}

/// Kills `victim` (a relay on the service's intro circuit for `key`) under the busy flow and
/// follows the registration for `ms`.
fn follow(st: &mut Stage, seq: &mut u32, victim: usize, key: [u8; 32], ms: u64) -> Outage {
    let t0 = st.w.sim.now;
    let dead = st.w.sim.nodes[victim].identity;
    let (svc, s_addr) = (st.svc, st.s_addr);
    let mut out = Outage {
        lost: Vec::new(),
        back: None,
        kept: false,
    };
    st.w.sim.kill(victim);
    flow_for(st, seq, ms, |w| {
        let at = w.sim.now - t0;
        let held = holder(w, &key).is_some();
        match out.lost.last_mut() {
            Some((_, end @ None)) if held => *end = Some(at),
            Some((_, None)) => {}
            _ if !held => out.lost.push((at, None)),
            _ => {}
        }
        if out.back.is_none() {
            let intros = w.sim.nodes[svc].node.service_intro_circuits(s_addr);
            let kept = intros.iter().find(|(_, k, _)| *k == key);
            let ok = match kept {
                Some((c, _, up)) => {
                    *up && !path_of(w, svc, *c).contains(&dead) && holder(w, &key).is_some()
                }
                None => intros.iter().filter(|(_, _, up)| *up).count() == 3,
            };
            if ok {
                out.back = Some(at);
            }
        }
    });
    out.kept = st.w.sim.nodes[svc]
        .node
        .service_intro_circuits(s_addr)
        .iter()
        .any(|(_, k, _)| *k == key);
    out
}

/// The seeds to run: `SEEDS=17,31` picks some (to follow one run's log).
fn seeds(all: &[u64]) -> Vec<u64> {
    match std::env::var("SEEDS") {
        Ok(v) => v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) => all.to_vec(),
    }
}

/// A relay in the middle of one of the service's intro circuits (not its guard, not the intro
/// point, not on any session circuit of either end): the service has no sign of its death but
/// the circuit's own silence.
#[test]
fn a_middle_relay_of_an_intro_circuit_dies_and_the_service_registers_again() {
    init_log();
    let mut got = Vec::new();
    for seed in seeds(&[17, 31, 47, 53]) {
        let mut st = Stage::new(24, seed);
        let mut seq = 0u32;
        flow_for(&mut st, &mut seq, 10_000, |_| {});
        let w = &st.w;
        let mut session_relays: Vec<[u8; 32]> = Vec::new();
        for (c, _) in w.sim.nodes[st.cli].node.session_circuits(st.s_addr) {
            session_relays.extend(path_of(w, st.cli, c));
        }
        for p in w.sim.nodes[st.svc].node.service_peers(st.s_addr) {
            for c in w.sim.nodes[st.svc]
                .node
                .service_session_circuits(st.s_addr, p)
            {
                session_relays.extend(path_of(w, st.svc, c));
            }
        }
        let intros = w.sim.nodes[st.svc].node.service_intro_circuits(st.s_addr);
        let intro_points: Vec<[u8; 32]> = intros
            .iter()
            .filter_map(|(c, _, _)| path_of(w, st.svc, *c).last().copied())
            .collect();
        let pick = intros.iter().find_map(|(c, key, up)| {
            let path = path_of(w, st.svc, *c);
            let mid = path.get(1..path.len().saturating_sub(1))?;
            let r = mid
                .iter()
                .find(|r| !session_relays.contains(r) && !intro_points.contains(r) && *up)?;
            let n = w.sim.node_by_identity(r)?;
            (n != st.cli && n != st.svc).then_some((n, *key))
        });
        let Some((victim, key)) = pick else {
            eprintln!("seed {seed}: no quiet middle relay; next seed");
            continue;
        };
        let o = follow(&mut st, &mut seq, victim, key, 30_000);
        eprintln!(
            "seed {seed}: middle relay {victim} of an intro circuit killed: {o:?}; service {:?}",
            st.w.sim.nodes[st.svc].node.session_stats()
        );
        got.push((seed, o));
    }
    eprintln!("INTRO_OUTAGE middle relay: {got:?}");
    assert!(got.len() >= 2, "{} seeds had a relay to kill", got.len());
    // The DESTROYs from the dead relay's neighbours (their links find it dead) reach the
    // service before the intro point drops the key: same relay, same key, no refusal.
    for (seed, o) in &got {
        assert!(
            o.kept && o.lost.is_empty() && o.back.is_some_and(|b| b <= 6_000),
            "seed {seed}: {o:?}"
        );
    }
}

/// A relay both a session circuit of the service and one of its intro circuits run through
/// (its guard, when they share one; else any shared relay): the session circuit's silence
/// tells the service that relay may be dead.
#[test]
fn a_relay_shared_with_a_session_circuit_dies_and_the_intro_circuit_is_checked_at_once() {
    init_log();
    let mut got = Vec::new();
    for seed in seeds(&[17, 31, 47, 53, 61, 71]) {
        let mut st = Stage::new(24, seed);
        let mut seq = 0u32;
        flow_for(&mut st, &mut seq, 10_000, |_| {});
        let w = &st.w;
        let mut svc_session: Vec<[u8; 32]> = Vec::new();
        for p in w.sim.nodes[st.svc].node.service_peers(st.s_addr) {
            for c in w.sim.nodes[st.svc]
                .node
                .service_session_circuits(st.s_addr, p)
            {
                svc_session.extend(path_of(w, st.svc, c));
            }
        }
        let intros = w.sim.nodes[st.svc].node.service_intro_circuits(st.s_addr);
        let intro_points: Vec<[u8; 32]> = intros
            .iter()
            .filter_map(|(c, _, _)| path_of(w, st.svc, *c).last().copied())
            .collect();
        let pick = intros.iter().find_map(|(c, key, up)| {
            let path = path_of(w, st.svc, *c);
            let r = path
                .iter()
                .take(path.len().saturating_sub(1))
                .find(|r| svc_session.contains(r) && !intro_points.contains(r) && *up)?;
            let n = w.sim.node_by_identity(r)?;
            (n != st.cli && n != st.svc).then_some((n, *key))
        });
        let Some((victim, key)) = pick else {
            eprintln!("seed {seed}: no relay shared by a session and an intro circuit");
            continue;
        };
        let o = follow(&mut st, &mut seq, victim, key, 30_000);
        eprintln!(
            "seed {seed}: shared relay {victim} killed: {o:?}; service {:?}",
            st.w.sim.nodes[st.svc].node.session_stats()
        );
        got.push((seed, o));
    }
    eprintln!("INTRO_OUTAGE shared relay: {got:?}");
    assert!(got.len() >= 2, "{} seeds had a relay to kill", got.len());
    // Before, seeds 17, 47 and 53 gave the intro point up: it rode the silent session circuit
    // behind the dead guard, so it was suspect, and the service chose a new one under a new
    // key; the intro point refused the key clients held from 7.0-7.6 s on (status 1) until
    // they fetched the new descriptor.
    for (seed, o) in &got {
        assert!(
            o.kept && o.lost.is_empty(),
            "seed {seed}: the intro point was given up or refused clients: {o:?}"
        );
        assert!(
            o.back.is_some_and(|b| b <= 6_000),
            "seed {seed}: registered again: {o:?}"
        );
    }
}

/// The intro point itself dies, and it also carried a session circuit of the service (so the
/// service finds it suspect before its intro circuit closes): the service rebuilds to it once
/// (it is only suspect), and replaces it when that fails. The cost of trying a suspect intro
/// point: how long until three are established again.
#[test]
fn an_intro_point_that_died_on_a_session_circuit_is_replaced() {
    init_log();
    let mut got = Vec::new();
    for seed in seeds(&[17, 31, 47, 53, 61, 71]) {
        let mut st = Stage::new(24, seed);
        let mut seq = 0u32;
        flow_for(&mut st, &mut seq, 10_000, |_| {});
        let w = &st.w;
        let mut svc_session: Vec<[u8; 32]> = Vec::new();
        for p in w.sim.nodes[st.svc].node.service_peers(st.s_addr) {
            for c in w.sim.nodes[st.svc]
                .node
                .service_session_circuits(st.s_addr, p)
            {
                svc_session.extend(path_of(w, st.svc, c).into_iter().skip(1));
            }
        }
        let intros = w.sim.nodes[st.svc].node.service_intro_circuits(st.s_addr);
        let pick = intros.iter().find_map(|(c, key, up)| {
            let ip = *path_of(w, st.svc, *c).last()?;
            let n = w.sim.node_by_identity(&ip)?;
            (*up && svc_session.contains(&ip) && n != st.cli && n != st.svc).then_some((n, *key))
        });
        let Some((victim, key)) = pick else {
            eprintln!("seed {seed}: no intro point on a session circuit");
            continue;
        };
        let t0 = st.w.sim.now;
        st.w.sim.kill(victim);
        let (svc, s_addr) = (st.svc, st.s_addr);
        let mut replaced = None;
        flow_for(&mut st, &mut seq, 30_000, |w| {
            let intros = w.sim.nodes[svc].node.service_intro_circuits(s_addr);
            if replaced.is_none()
                && !intros.iter().any(|(_, k, _)| *k == key)
                && intros.iter().filter(|(_, _, up)| *up).count() == 3
            {
                replaced = Some(w.sim.now - t0);
            }
        });
        eprintln!("seed {seed}: intro point {victim} killed: replaced after {replaced:?} ms");
        got.push((seed, replaced));
    }
    eprintln!("INTRO_POINT_DEAD replaced: {got:?}");
    assert!(
        !got.is_empty(),
        "no seed had an intro point on a session circuit"
    );
    for (seed, r) in &got {
        assert!(
            r.is_some_and(|r| r <= 12_000),
            "seed {seed}: replaced after {r:?} ms"
        );
    }
}
