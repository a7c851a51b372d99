//! Issue #6 scenarios: eight real daemons with 2 ms of delay per host build 3-hop circuits for
//! their pools within 45 s, and relays carry circuits for each other.

use std::time::Duration;

use crate::harness::{shipped_listen, Host, Lab};

const READY: Duration = Duration::from_secs(10);

#[test]
fn eight_nodes_build_pool_circuits_within_45_s() {
    let Some(mut lab) = Lab::new("circuits") else {
        return;
    };
    let hosts: Vec<Host> = (0..8).map(|i| lab.add_host(&format!("c{i}"))).collect();
    for h in &hosts {
        lab.set_delay(h, 2);
    }
    let mut daemons = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let boot = if i == 0 {
            String::new()
        } else {
            format!("\"{}:7412\"", hosts[0].ip)
        };
        let cfg = lab.write_config(
            h,
            &format!(
                "[network]\nlisten = {}\nbootstrap = [{boot}]\n[paths]\nipv4_subnet_family_prefix = 32\n",
                shipped_listen()
            ),
        );
        daemons.push(lab.start_daemon(h, &cfg));
    }
    for d in &daemons {
        lab.wait_ready(d, READY);
    }
    let started = std::time::Instant::now();
    lab.wait_for(
        "every node to have 2 ready 3-hop circuits",
        Duration::from_secs(45),
        || {
            daemons.iter().all(|d| {
                lab.query(d, "circuits")
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|c| c["state"] == "ready" && c["hops"] == 3 && c["purpose"] == "pool")
                    .count()
                    >= 2
            })
        },
    );
    eprintln!(
        "all 8 nodes had ready pools after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut builds: Vec<u64> = Vec::new();
    let mut relayed = 0;
    for d in &daemons {
        for c in lab.query(d, "circuits").as_array().unwrap() {
            // Beside the pool, nodes keep client stems (purpose intro) and DHT circuits.
            let purpose = c["purpose"].as_str().unwrap();
            assert!(["pool", "intro", "dht"].contains(&purpose), "{c}");
            if purpose == "pool" {
                if let Some(ms) = c["build_ms"].as_u64() {
                    builds.push(ms);
                }
            }
        }
        let status = lab.query(d, "status");
        relayed += status["circuits"]["relayed"].as_u64().unwrap();
        assert!(status["circuits"]["path_error"].is_null(), "{status}");
    }
    assert!(relayed >= 8 * 2 * 3, "relays carry only {relayed} circuits");
    builds.sort_unstable();
    eprintln!(
        "circuit build time with 2 ms delay per host: p50 {} ms, p95 {} ms ({} builds)",
        builds[builds.len() / 2],
        builds[builds.len() * 95 / 100],
        builds.len()
    );
}
