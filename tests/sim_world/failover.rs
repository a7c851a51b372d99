//! Helpers of the failover tests (tests/sim_failover.rs, tests/sim_failover_guards.rs): a flow
//! of numbered packets echoed by the service, relay deaths under it.

use super::*;
use globalnet::session::flows::FlowKey;
use globalnet::time::{Instant, Millis};

/// Runs a flow that sends a numbered packet every 100 ms for `ms`; returns the numbers echoed.
pub fn run_flow(
    w: &mut World,
    cli: usize,
    svc: usize,
    me: [u8; 16],
    s: [u8; 16],
    seq: &mut u32,
    ms: u64,
) -> Vec<(Instant, u32)> {
    run_flow_with(w, cli, svc, me, s, seq, ms, true)
}

/// [`run_flow`]; with `hand_descriptors` false the client learns the service's descriptors
/// only through the DHT.
#[allow(clippy::too_many_arguments)]
pub fn run_flow_with(
    w: &mut World,
    cli: usize,
    svc: usize,
    me: [u8; 16],
    s: [u8; 16],
    seq: &mut u32,
    ms: u64,
    hand_descriptors: bool,
) -> Vec<(Instant, u32)> {
    let mut got = Vec::new();
    for i in 0..ms / 100 {
        // A shortcut past the DHT: the client's cache gets the service's current descriptors
        // every second, as a fresh lookup would.
        if hand_descriptors && i % 10 == 0 {
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

/// Kills `victim` while the flow runs `ms` more: the echoes, and how long after the death the
/// first packet sent after it came back.
#[allow(clippy::too_many_arguments)]
pub fn kill_and_resume(
    w: &mut World,
    victim: usize,
    cli: usize,
    svc: usize,
    me: [u8; 16],
    s: [u8; 16],
    seq: &mut u32,
    ms: u64,
) -> (Vec<(Instant, u32)>, Option<Millis>) {
    let killed_at = w.sim.now;
    let first_after = *seq + 1;
    w.sim.kill(victim);
    let got = run_flow(w, cli, svc, me, s, seq, ms);
    let resumed = got
        .iter()
        .find(|(_, n)| *n >= first_after)
        .map(|(t, _)| *t - killed_at);
    (got, resumed)
}

/// A network with a service and a client whose UDP flow has run for 10 s (checked).
pub struct BusyFlow {
    pub w: World,
    pub svc: usize,
    pub cli: usize,
    pub s_addr: [u8; 16],
    pub me: [u8; 16],
    pub seq: u32,
    pub flow: FlowKey,
}

pub fn busy_flow(seed: u64) -> BusyFlow {
    busy_flow_spares(seed, false)
}

/// [`busy_flow`]; with `one_guard` every spare of the client stays on its first guard (a busy
/// session's second spare otherwise goes through the other guard), so that guard's death
/// loses the session: for the tests of a lost session made again.
pub fn busy_flow_spares(seed: u64, one_guard: bool) -> BusyFlow {
    init_log();
    let Stage {
        mut w,
        svc,
        cli,
        s_addr,
        me,
    } = Stage::new(24, seed);
    w.sim.nodes[cli]
        .node
        .session_test_hooks()
        .spares_on_one_guard = one_guard;
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

/// The client's guard that carries every circuit of its session to `s_addr` (the spare stays
/// on the first guard), if one does.
pub fn one_client_guard(w: &World, cli: usize, s_addr: [u8; 16]) -> Option<usize> {
    let firsts: Vec<[u8; 32]> = w.sim.nodes[cli]
        .node
        .session_circuits(s_addr)
        .into_iter()
        .filter_map(|(c, _)| {
            w.sim.nodes[cli]
                .node
                .circ
                .path(c)
                .and_then(|p| p.first().map(|r| *r.identity()))
        })
        .collect();
    let g = firsts.first().copied()?;
    if !firsts.iter().all(|x| *x == g) {
        return None;
    }
    w.sim.node_by_identity(&g)
}
