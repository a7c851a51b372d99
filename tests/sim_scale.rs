//! The scenario of `examples/simulate.rs` (issue #25) at CI size: relays, clients and services
//! behind NATs join, a fifth of the nodes churn per virtual hour (here faster, so that some
//! leave within the run), clients look descriptors up through the real DHT client and reach
//! services through sessions, and the figures come out sane. The full-size figures are in docs/simulation.md.

use globalnet::sim::scale::{Scale, ScaleConfig};

#[test]
fn small_network_with_churn_finds_descriptors_and_reports_figures() {
    let mut cfg = ScaleConfig::new(40, 4);
    cfg.seed = 7;
    cfg.warmup_min = 2;
    cfg.services = 3;
    cfg.lookups_per_min = 30.0;
    cfg.probes_per_min = 20.0;
    // 0.2 per hour would make no node leave in two minutes: 4 per hour makes about five.
    cfg.churn_per_hour = 4.0;
    let mut lines = 0;
    let r = Scale::new(cfg).run(
        &mut |l| {
            lines += 1;
            eprintln!("{l}");
        },
        &|| 0,
    );
    eprintln!("{}", serde_json::to_string(&r).unwrap());
    assert_eq!(lines, 4, "one progress line per virtual minute");
    assert!(
        r.left >= 3 && r.joined == r.left,
        "churn: {} left, {} joined",
        r.left,
        r.joined
    );
    assert!(r.lookups >= 25, "{} lookups", r.lookups);
    assert!(
        r.lookup_success >= 0.9,
        "lookup success {}",
        r.lookup_success
    );
    // Reachability is measured by reaching: PINGs through sessions the clients open.
    assert!(r.probes >= 5, "{} probes", r.probes);
    assert!(
        r.reachable_share >= 0.8,
        "reachable {} ({:?})",
        r.reachable_share,
        r.probe_failures
    );
    assert!(r.probe_ms_p50 > 0);
    assert!(r.intro_up_share <= r.lookup_success);
    assert!(r.circuit_build_success > 0.8, "{r:?}");
    assert!(r.circuit_build_ms_p50 > 0);
    assert!(
        r.dht_messages_per_relay_min > 0.0 && r.pex_per_node_min > 0.0,
        "{r:?}"
    );
    assert!(r.relays_learning_blinded_key >= 1.0, "{r:?}");
    assert_eq!(r.adversary.len(), 2);
    assert!(r.adversary[1].relays >= r.adversary[0].relays);
}
