//! Issue #4 scenarios: real daemons link over UDP with WireGuard, exchange relay records, measure
//! RTT, detect a dead neighbour, re-link when it returns, and shrug off garbage.

use nix::sys::signal::Signal;
use std::time::Duration;

use crate::harness::{Daemon, Host, Lab};

const READY: Duration = Duration::from_secs(10);

fn config(h: &Host, bootstrap: Option<&Host>) -> String {
    let boot = bootstrap.map_or(String::new(), |b| format!("\"{}:7412\"", b.ip));
    format!(
        "[network]\nlisten = [\"{}:7412\"]\nbootstrap = [{boot}]\n[paths]\nipv4_subnet_family_prefix = 32\n",
        h.ip
    )
}

fn peer_keys(lab: &Lab, d: &Daemon) -> Vec<String> {
    lab.query(d, "peers")
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["relay_key"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn five_relays_link_up_and_recover() {
    let Some(mut lab) = Lab::new("links") else {
        return;
    };
    let hosts: Vec<Host> = (0..5).map(|i| lab.add_host(&format!("n{i}"))).collect();
    let mut daemons = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let cfg = lab.write_config(h, &config(h, if i == 0 { None } else { Some(&hosts[0]) }));
        let d = lab.start_daemon(h, &cfg);
        lab.wait_ready(&d, READY);
        daemons.push(d);
    }
    let keys: Vec<String> = daemons
        .iter()
        .map(|d| {
            lab.query(d, "status")["relay_key"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();

    // Everyone links to everyone (5 nodes, 8 wanted links each).
    lab.wait_for("a full mesh of 5 relays", Duration::from_secs(30), || {
        daemons.iter().all(|d| peer_keys(&lab, d).len() == 4)
    });
    for (i, d) in daemons.iter().enumerate() {
        let peers = lab.query(d, "peers");
        for p in peers.as_array().unwrap() {
            let key = p["relay_key"].as_str().unwrap();
            let j = keys
                .iter()
                .position(|k| k == key)
                .expect("peer is one of ours");
            assert_ne!(i, j);
            assert_eq!(p["endpoint"], format!("{}:7412", hosts[j].ip).as_str());
            assert_eq!(p["direct"], true);
            let rtt = p["rtt_ms"].as_f64().expect("rtt measured");
            assert!(rtt < 50.0, "rtt {rtt}");
        }
        let status = lab.query(d, "status");
        assert_eq!(status["peers"], 4);
        assert_eq!(status["relay_record"], true);
        assert_eq!(
            status["nat"], "none",
            "node {i} sees itself at its own address"
        );
        assert!(status["view"]["relays"].as_u64().unwrap() >= 4);
    }

    // n3 dies without a word: the others notice and drop it.
    let victim = daemons[3].clone();
    lab.stop(&victim, Signal::SIGKILL, Duration::from_secs(5));
    lab.wait_for(
        "neighbours to drop the dead relay",
        Duration::from_secs(40),
        || {
            daemons
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != 3)
                .all(|(_, d)| !peer_keys(&lab, d).contains(&keys[3]))
        },
    );

    // It comes back with the same keys and is linked again.
    let back = lab.start_daemon(&hosts[3], &victim.config);
    lab.wait_ready(&back, READY);
    lab.wait_for(
        "the returning relay to be linked again",
        Duration::from_secs(60),
        || peer_keys(&lab, &back).len() >= 2,
    );

    // Garbage at the UDP port changes nothing and crashes nothing.
    let target = hosts[0].ip;
    lab.bash_ok(
        &hosts[1],
        &format!(
            "for i in $(seq 1 300); do head -c $((i * 5 % 1400 + 1)) /dev/urandom > /dev/udp/{target}/7412; done; \
             printf '\\001\\000\\000\\000' > /dev/udp/{target}/7412"
        ),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        lab.try_wait(&daemons[0]).is_none(),
        "daemon died on garbage"
    );
    let status = lab.query(&daemons[0], "status");
    assert!(
        status["links"]["dropped"].as_u64().unwrap() >= 300,
        "{status}"
    );
    assert!(peer_keys(&lab, &daemons[0]).len() >= 3);
}
