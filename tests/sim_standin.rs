//! The scenario of `tests/sim_scale.rs` on the simulator's crypto stand-in (src/sim/crypto.rs,
//! docs/simulation.md): links without WireGuard's DH and hashed handshake secrets must still
//! carry the real protocol, so the figures must be as sane as with real crypto.

use globalnet::sim::scale::{Scale, ScaleConfig};

#[test]
fn stand_in_crypto_runs_the_same_scenario() {
    let mut cfg = ScaleConfig::new(40, 4);
    cfg.seed = 7;
    cfg.warmup_min = 2;
    cfg.services = 3;
    cfg.lookups_per_min = 30.0;
    cfg.churn_per_hour = 4.0;
    cfg.stand_in_crypto = true;
    let r = Scale::new(cfg).run(&mut |l| eprintln!("{l}"), &|| 0);
    eprintln!("{}", serde_json::to_string(&r).unwrap());
    assert!(r.left >= 3 && r.joined == r.left, "{r:?}");
    assert!(r.lookups >= 25, "{} lookups", r.lookups);
    assert!(r.lookup_success >= 0.9, "{r:?}");
    assert!(r.reachable_share >= 0.9, "{r:?}");
    assert!(r.circuit_build_success > 0.8, "{r:?}");
    assert!(
        r.dht_messages_per_relay_min > 0.0 && r.pex_per_node_min > 0.0,
        "{r:?}"
    );
}
