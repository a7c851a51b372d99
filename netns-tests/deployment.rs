//! Issue #16: the network as users install it. Daemons run `config.example.toml` as shipped
//! (wildcard `listen`), with only the state paths, bootstrap peers and the path-family prefix (the
//! lab lives in one /15) changed; bootstrap peers by host name; a multi-homed, dual-stack seed;
//! an isolated node that says why; guards that survive a restart in the root-then-`user` mode.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::{globalnet_bin, Daemon, Host, Lab};

const READY: Duration = Duration::from_secs(10);

/// `config.example.toml` verbatim but for the lines a user edits for this lab. Each edit must
/// find its line, so a changed example shows here.
fn example_config(lab: &Lab, h: &Host, bootstrap: &[String], edits: &[(&str, &str)]) -> PathBuf {
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml"),
    )
    .expect("config.example.toml");
    let state = lab.dir.join(format!("{}-state", h.name));
    let control = lab.dir.join(format!("{}-run/control.sock", h.name));
    let boot: Vec<String> = bootstrap.iter().map(|b| format!("\"{b}\"")).collect();
    let state_line = format!("state_dir = \"{}\"", state.display());
    let control_line = format!("control_socket = \"{}\"", control.display());
    let boot_line = format!("bootstrap = [{}]", boot.join(", "));
    let mut all: Vec<(&str, &str)> = vec![
        ("state_dir = \"/var/lib/globalnet\"", &state_line),
        (
            "control_socket = \"/run/globalnet/control.sock\"",
            &control_line,
        ),
        ("bootstrap = []", &boot_line),
        (
            "ipv4_subnet_family_prefix = 16",
            "ipv4_subnet_family_prefix = 32",
        ),
    ];
    all.extend_from_slice(edits);
    let mut text = example;
    for (from, to) in all {
        let line = text
            .lines()
            .position(|l| l.trim() == from)
            .unwrap_or_else(|| panic!("config.example.toml has no line `{from}`"));
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines[line] = to.to_string();
        text = lines.join("\n") + "\n";
    }
    let path = lab.dir.join(format!("{}.toml", h.name));
    std::fs::write(&path, text).expect("write config");
    path
}

fn address(lab: &Lab, d: &Daemon) -> Ipv6Addr {
    lab.query(d, "status")["address"]
        .as_str()
        .expect("address")
        .parse()
        .expect("IPv6")
}

/// relay_key -> endpoint, of a daemon's links.
fn endpoints(lab: &Lab, d: &Daemon) -> HashMap<String, String> {
    lab.query(d, "peers")
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p["relay_key"].as_str()?.to_string(),
                p["endpoint"].as_str()?.to_string(),
            ))
        })
        .collect()
}

#[test]
fn example_config_forms_a_network_that_reaches_a_service() {
    let Some(mut lab) = Lab::new("example") else {
        return;
    };
    let t0 = Instant::now();
    let relays: Vec<Host> = (0..5).map(|i| lab.add_host(&format!("r{i}"))).collect();
    let seed = format!("{}:7412", relays[0].ip);
    let mut daemons = Vec::new();
    for (i, h) in relays.iter().enumerate() {
        let boot = if i == 0 { vec![] } else { vec![seed.clone()] };
        let cfg = example_config(&lab, h, &boot, &[]);
        let d = lab.start_daemon(h, &cfg);
        lab.wait_ready(&d, READY);
        daemons.push(d);
    }
    let svc_host = lab.add_host("svc");
    let cli_host = lab.add_host("cli");
    let token = format!("gn-example-{}", std::process::id());
    let gn = globalnet_bin().display().to_string();
    let log = lab.dir.join("http.log").display().to_string();
    lab.spawn(
        &svc_host,
        "http",
        &gn,
        &[
            "demo", "serve", "--port", "8080", "--token", &token, "--log", &log,
        ],
        Some("ready"),
    );
    let boot = vec![
        format!("{}:7412", relays[1].ip),
        format!("{}:7412", relays[2].ip),
    ];
    let cfg = example_config(&lab, &svc_host, &boot, &[("tcp = []", "tcp = [8080]")]);
    let svc = lab.start_daemon(&svc_host, &cfg);
    let cfg = example_config(&lab, &cli_host, &boot, &[]);
    let cli = lab.start_daemon(&cli_host, &cfg);
    lab.wait_ready(&svc, READY);
    lab.wait_ready(&cli, READY);

    // Every relay knows where it is reached although it listens on 0.0.0.0, and others link to
    // it there.
    lab.wait_for(
        "every relay to publish a record",
        Duration::from_secs(30),
        || {
            daemons.iter().all(|d| {
                let s = lab.query(d, "status");
                s["relay_record"] == true && s["nat"] == "none"
            })
        },
    );
    let keys: Vec<String> = daemons.iter().map(|d| lab.relay_key(d)).collect();
    for (i, d) in daemons.iter().enumerate() {
        let s = lab.query(d, "status");
        assert_eq!(
            s["local_endpoints"],
            serde_json::json!([format!("{}:7412", relays[i].ip)]),
            "relay {i}: {s}"
        );
        assert!(
            s["reason"].is_null() || s["reason"].as_str().unwrap().starts_with("no circuits"),
            "{s}"
        );
        for (key, ep) in endpoints(&lab, d) {
            if let Some(j) = keys.iter().position(|k| *k == key) {
                assert_eq!(
                    ep,
                    format!("{}:7412", relays[j].ip),
                    "relay {i} sees relay {j}"
                );
            }
        }
    }

    let svc_addr = address(&lab, &svc);
    let url = format!("http://[{svc_addr}]:8080/");
    let t_fetch = Instant::now();
    let mut got = String::new();
    while t_fetch.elapsed() < Duration::from_secs(120) {
        let out = lab.sh(&cli_host, &format!("curl -sS -g --max-time 5 '{url}'"));
        got = String::from_utf8_lossy(&out.stdout).into_owned();
        if got.contains(&token) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        got.contains(&token),
        "the service was not reached within 120 s"
    );
    eprintln!(
        "example config: service reached {:.1} s after the first fetch, {:.1} s after the first daemon started",
        t_fetch.elapsed().as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn seed_by_host_name_multihomed_dual_stack_and_an_isolated_node_that_says_why() {
    let Some(mut lab) = Lab::new("deploy") else {
        return;
    };
    let seed = lab.add_host("seed");
    // The seed is reached at a second address; it must answer from that one, not from the
    // first address the routing table would pick.
    let second = std::net::Ipv4Addr::new(198, 19, 0, 1);
    lab.add_address(&seed, second);
    let others: Vec<Host> = (1..5).map(|i| lab.add_host(&format!("n{i}"))).collect();
    let lonely = lab.add_host("lonely");
    for h in others.iter().chain([&lonely]) {
        lab.set_hosts_file(h, &format!("{second} seed.gn.test\n"));
    }
    let cfg = example_config(
        &lab,
        &seed,
        &[],
        &[("listen = [\"0.0.0.0:7412\"]", "listen = [\"[::]:7412\"]")],
    );
    let seed_d = lab.start_daemon(&seed, &cfg);
    lab.wait_ready(&seed_d, READY);
    let mut nodes = Vec::new();
    for (i, h) in others.iter().enumerate() {
        // n1 is started as root and drops to `nobody`: its guards must persist.
        let edits: &[(&str, &str)] = if i == 0 {
            &[("# user = \"globalnet\"", "user = \"nobody\"")]
        } else {
            &[]
        };
        let cfg = example_config(&lab, h, &["seed.gn.test:7412".to_string()], edits);
        let d = lab.start_daemon(h, &cfg);
        lab.wait_ready(&d, READY);
        nodes.push(d);
    }
    let cfg = example_config(
        &lab,
        &lonely,
        &[
            "nowhere.gn.test:7412".to_string(),
            "198.18.0.250:7412".to_string(),
        ],
        &[],
    );
    let lonely_d = lab.start_daemon(&lonely, &cfg);
    lab.wait_ready(&lonely_d, READY);

    let seed_key = lab.relay_key(&seed_d);
    lab.wait_for(
        "everyone to link to the seed by name",
        Duration::from_secs(30),
        || {
            nodes
                .iter()
                .all(|d| endpoints(&lab, d).contains_key(&seed_key))
        },
    );
    for d in &nodes {
        assert_eq!(
            endpoints(&lab, d)[&seed_key],
            format!("{second}:7412"),
            "the seed answers from the address it was written to"
        );
        let s = lab.query(d, "status");
        assert_eq!(s["bootstrap"][0]["peer"], "seed.gn.test:7412", "{s}");
        assert_eq!(
            s["bootstrap"][0]["addrs"],
            serde_json::json!([format!("{second}:7412")])
        );
    }
    lab.wait_for(
        "the seed to see itself as public",
        Duration::from_secs(20),
        || {
            let s = lab.query(&seed_d, "status");
            s["nat"] == "none" && s["relay_record"] == true
        },
    );
    let s = lab.query(&seed_d, "status");
    assert_eq!(s["local_endpoints"][0], format!("{second}:7412"), "{s}");

    // The isolated node: both bootstrap peers fail, each for its own reason, and it says so.
    lab.wait_for(
        "the isolated node to give up a few times",
        Duration::from_secs(20),
        || {
            let s = lab.query(&lonely_d, "status");
            let b = s["bootstrap"].as_array().cloned().unwrap_or_default();
            b.len() == 2
                && b[0]["state"] == "unresolved"
                && b[1]["state"] == "not answering"
                && b[1]["tries"].as_u64().unwrap_or(0) >= 3
        },
    );
    let s = lab.query(&lonely_d, "status");
    let reason = s["reason"].as_str().unwrap_or("").to_string();
    assert!(reason.starts_with("no links:"), "{s}");
    assert!(
        reason.contains("nowhere.gn.test:7412: does not resolve"),
        "{reason}"
    );
    assert!(reason.contains("198.18.0.250:7412: no answer"), "{reason}");
    let human = lab.sh_ok(
        &lonely,
        &format!(
            "{} status --control {}",
            globalnet_bin().display(),
            lonely_d.control.display()
        ),
    );
    assert!(human.contains("why        no links:"), "{human}");
    assert!(
        human.contains("bootstrap  nowhere.gn.test:7412 unresolved"),
        "{human}"
    );
    // No log floods: the same message (numbers aside) at most a few times in these seconds.
    let log = std::fs::read_to_string(&lonely_d.log).unwrap();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for line in log.lines() {
        // Drop the timestamp and every number, keep level, target and message.
        let text: String = line
            .split_once('Z')
            .map_or(line, |(_, rest)| rest)
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .collect();
        *counts.entry(text).or_default() += 1;
    }
    let worst = counts
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(l, n)| (l.clone(), *n));
    if let Some((line, n)) = worst {
        assert!(n <= 4, "logged {n} times while alone: {line}");
    }

    // Guards of the node that dropped to `nobody`: saved where it may write, kept on restart.
    let n1 = nodes[0].clone();
    let guards_file = n1.state_dir.join("cache/guards.json");
    lab.wait_for("n1 to save its guards", Duration::from_secs(40), || {
        let s = lab.query(&n1, "status");
        s["guards"]["count"].as_u64().unwrap_or(0) > 0
            && !s["guards"]["temporary"].as_bool().unwrap_or(true)
            && guards_file.exists()
    });
    let s = lab.query(&n1, "status");
    assert!(s["guards"]["save_error"].is_null(), "{s}");
    let ids = |text: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        let mut ids: Vec<String> = v["guards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["identity"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let before = ids(&std::fs::read_to_string(&guards_file).unwrap());
    assert!(!before.is_empty());
    let meta = std::fs::metadata(&guards_file).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        nix::unistd::User::from_name("nobody")
            .unwrap()
            .unwrap()
            .uid
            .as_raw(),
        "written by the dropped user"
    );
    lab.stop(&n1, Signal::SIGTERM, Duration::from_secs(10));
    let n1b = lab.start_daemon(&n1.host, &n1.config);
    lab.wait_ready(&n1b, READY);
    lab.wait_for("n1 to have guards again", Duration::from_secs(30), || {
        lab.query(&n1b, "status")["guards"]["count"]
            .as_u64()
            .unwrap_or(0)
            > 0
    });
    std::thread::sleep(Duration::from_secs(2));
    let s = lab.query(&n1b, "status");
    assert!(s["guards"]["save_error"].is_null(), "{s}");
    assert_eq!(
        ids(&std::fs::read_to_string(&guards_file).unwrap()),
        before,
        "same guards after a restart"
    );
    let log = std::fs::read_to_string(&n1b.log).unwrap();
    assert!(
        !log.contains("choosing new guards"),
        "the guard file was not read"
    );
}
