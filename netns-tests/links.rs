//! Issue #4 scenarios: real daemons link over UDP with WireGuard, exchange relay records, measure
//! RTT, detect a dead neighbour, re-link when it returns, and shrug off garbage.

use nix::sys::signal::Signal;
use std::time::Duration;

use crate::harness::{shipped_listen, Daemon, Host, Lab};

const READY: Duration = Duration::from_secs(10);

fn config(bootstrap: Option<&Host>) -> String {
    let boot = bootstrap.map_or(String::new(), |b| format!("\"{}:7412\"", b.ip));
    format!(
        "[network]\nlisten = {}\nbootstrap = [{boot}]\n[paths]\nipv4_subnet_family_prefix = 32\n",
        shipped_listen()
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
        let cfg = lab.write_config(h, &config(if i == 0 { None } else { Some(&hosts[0]) }));
        let d = lab.start_daemon(h, &cfg);
        lab.wait_ready(&d, READY);
        daemons.push(d);
    }
    let keys: Vec<String> = daemons.iter().map(|d| lab.relay_key(d)).collect();

    // Everyone links to everyone (5 nodes, 8 wanted links each).
    // A full mesh, every link confirmed by a PING round trip (an RTT).
    lab.wait_for("a full mesh of 5 relays", Duration::from_secs(30), || {
        daemons.iter().all(|d| {
            let peers = lab.query(d, "peers");
            let list = peers.as_array().unwrap();
            list.len() == 4 && list.iter().all(|p| p["rtt_ms"].is_number())
        })
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

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap()
}

#[test]
fn eight_nodes_one_bootstrap_loss_and_flood() {
    let Some(mut lab) = Lab::new("links8") else {
        return;
    };
    let hosts: Vec<Host> = (0..9).map(|i| lab.add_host(&format!("n{i}"))).collect();
    let budget = "[limits]\nmemory_budget_mb = 16\n";
    let mut daemons = Vec::new();
    for (i, h) in hosts.iter().take(8).enumerate() {
        let extra = format!(
            "{}{budget}",
            config(if i == 0 { None } else { Some(&hosts[0]) })
        );
        let cfg = lab.write_config(h, &extra);
        let d = lab.start_daemon(h, &cfg);
        daemons.push(d);
    }
    for d in &daemons {
        lab.wait_ready(d, READY);
    }
    // Every node has at least 3 links within 60 s, each confirmed by a ping RPC (an RTT).
    let started = std::time::Instant::now();
    lab.wait_for(
        "8 nodes with 3 confirmed links each",
        Duration::from_secs(60),
        || {
            daemons.iter().all(|d| {
                lab.query(d, "peers")
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|p| p["relay_key"].is_string() && p["rtt_ms"].is_number())
                    .count()
                    >= 3
            })
        },
    );
    eprintln!(
        "8 nodes linked (>= 3 confirmed links each) after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // 10% loss on one host: its links survive.
    lab.set_loss(&hosts[5], 10);
    std::thread::sleep(Duration::from_secs(30));
    let peers = peer_keys(&lab, &daemons[5]);
    assert!(
        peers.len() >= 3,
        "with 10% loss n5 kept only {} links",
        peers.len()
    );

    // A 10-second junk and handshake flood at the bootstrap from a ninth host.
    let victim = &daemons[0];
    let key = lab.query(victim, "status")["link_key"]
        .as_str()
        .unwrap()
        .to_string();
    let before = rss_kib(victim.pid);
    let out = lab
        .cmd(&hosts[8], crate::harness::example_bin("handshake_flood"))
        .args([
            "--target",
            &format!("{}:7412", hosts[0].ip),
            "--target-key",
            &key,
            "--seconds",
            "10",
            "--rate",
            "1500",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("flood: {}", String::from_utf8_lossy(&out.stdout).trim());
    let after = rss_kib(victim.pid);
    eprintln!("bootstrap RSS {before} KiB before the flood, {after} KiB after (budget 16 MiB)");
    assert!(
        lab.try_wait(victim).is_none(),
        "the bootstrap died under the flood"
    );
    assert!(
        after.saturating_sub(before) <= 16 * 1024,
        "RSS grew by {} KiB",
        after - before
    );
    let status = lab.query(victim, "status");
    assert!(
        status["memory"]["used"].as_u64().unwrap() <= 16 << 20,
        "{status}"
    );
    assert!(
        status["links"]["dropped"].as_u64().unwrap() > 1000,
        "{status}"
    );
    // Still serving: it keeps its relay links and answers a newcomer.
    lab.wait_for(
        "the bootstrap to keep 3 relay links",
        Duration::from_secs(30),
        || peer_keys(&lab, victim).len() >= 3,
    );
    let late = lab.write_config(&hosts[8], &config(Some(&hosts[0])));
    let d8 = lab.start_daemon(&hosts[8], &late);
    lab.wait_ready(&d8, READY);
    lab.wait_for(
        "a newcomer to bootstrap after the flood",
        Duration::from_secs(40),
        || peer_keys(&lab, &d8).len() >= 3,
    );
}
