//! Issue #10 with real daemons behind nftables NAT boxes: NATed relays classify themselves, link
//! to public relays, and link to each other directly by punching (cone, address-restricted,
//! double NAT) or through a relay (symmetric to symmetric).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::harness::{shipped_listen, Daemon, Host, Lab, NatType};

const READY: Duration = Duration::from_secs(10);

pub(crate) fn public_config(bootstrap: Option<&Host>) -> String {
    let boot = bootstrap.map_or(String::new(), |b| format!("\"{}:7412\"", b.ip));
    format!(
        "[network]\nlisten = {}\nbootstrap = [{boot}]\n[paths]\nipv4_subnet_family_prefix = 32\n",
        shipped_listen()
    )
}

/// Behind NAT a daemon listens as shipped (the unspecified address) and learns its endpoint.
pub(crate) fn natted_config(boot: &[&Host]) -> String {
    let boot: Vec<String> = boot.iter().map(|b| format!("\"{}:7412\"", b.ip)).collect();
    format!(
        "[network]\nlisten = {}\nbootstrap = [{}]\n[paths]\nipv4_subnet_family_prefix = 32\n",
        shipped_listen(),
        boot.join(", ")
    )
}

/// relay key -> direct, for every relay peer of `d`.
pub(crate) fn peers(lab: &Lab, d: &Daemon) -> HashMap<String, bool> {
    lab.query(d, "peers")
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    Some((p["relay_key"].as_str()?.to_string(), p["direct"].as_bool()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn natted_relays_link_direct_or_relayed() {
    let Some(mut lab) = Lab::new("nat") else {
        return;
    };
    let start = Instant::now();
    let public: Vec<Host> = (0..3).map(|i| lab.add_host(&format!("r{i}"))).collect();
    let kinds: [(&str, &[NatType]); 6] = [
        ("pr1", &[NatType::PortRestricted]),
        ("pr2", &[NatType::PortRestricted]),
        ("ar", &[NatType::AddressRestricted]),
        ("sym1", &[NatType::Symmetric]),
        ("sym2", &[NatType::Symmetric]),
        ("dbl", &[NatType::PortRestricted, NatType::PortRestricted]),
    ];
    let mut natted: Vec<(String, Vec<Host>, Host)> = Vec::new();
    for (name, nats) in kinds {
        let (boxes, h) = lab.add_natted_host(name, nats);
        natted.push((name.to_string(), boxes, h));
    }
    let mut daemons: Vec<(String, Daemon)> = Vec::new();
    for (i, h) in public.iter().enumerate() {
        let cfg = lab.write_config(h, &public_config((i > 0).then(|| &public[0])));
        let d = lab.start_daemon(h, &cfg);
        lab.wait_ready(&d, READY);
        daemons.push((h.name.clone(), d));
    }
    for (name, _, h) in &natted {
        let cfg = lab.write_config(h, &natted_config(&[&public[0], &public[1]]));
        let d = lab.start_daemon(h, &cfg);
        lab.wait_ready(&d, READY);
        daemons.push((name.clone(), d));
    }
    let keys: HashMap<String, String> = daemons
        .iter()
        .map(|(n, d)| {
            let k = lab.relay_key(d);
            (k, n.clone())
        })
        .collect();
    let by_name = |n: &str| &daemons.iter().find(|(m, _)| m == n).unwrap().1;

    // Every NATed relay classifies itself and links to public relays.
    let want = [
        ("pr1", "cone"),
        ("pr2", "cone"),
        ("ar", "cone"),
        ("sym1", "symmetric"),
        ("sym2", "symmetric"),
        ("dbl", "cone"),
    ];
    lab.wait_for("NAT classes", Duration::from_secs(20), || {
        want.iter()
            .all(|(n, class)| lab.query(by_name(n), "status")["nat"] == *class)
    });
    let classified = start.elapsed();
    for (n, _) in want {
        let p = peers(&lab, by_name(n));
        let public_links = p.keys().filter(|k| keys[*k].starts_with('r')).count();
        assert!(public_links >= 2, "{n}: {p:?}");
    }
    for (i, _) in public.iter().enumerate() {
        assert_eq!(lab.query(&daemons[i].1, "status")["nat"], "none");
    }

    // The matrix: pairs of NATed relays, linked directly (punching) or relayed.
    let pairs = [
        ("pr1", "pr2", true),
        ("pr1", "ar", true),
        ("pr2", "dbl", true),
        ("ar", "sym1", true),
        ("sym1", "sym2", false),
        ("pr1", "sym2", false),
    ];
    // First link (direct or relayed) and, for pairs that can punch, the moment it is direct: a
    // punch that failed for a passing reason falls back to a relayed link, which is upgraded
    // later by punching again (13.4).
    let mut linked_at: HashMap<(&str, &str), (Duration, bool)> = HashMap::new();
    let mut direct_at: HashMap<(&str, &str), Duration> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = |l: &HashMap<_, _>, d: &HashMap<_, _>| {
        pairs.iter().all(|(a, b, direct)| {
            l.contains_key(&(*a, *b)) && (!direct || d.contains_key(&(*a, *b)))
        })
    };
    while Instant::now() < deadline && !done(&linked_at, &direct_at) {
        for (a, b, _) in pairs {
            let key_b = keys.iter().find(|(_, n)| n.as_str() == b).unwrap().0;
            if let Some(direct) = peers(&lab, by_name(a)).get(key_b) {
                linked_at
                    .entry((a, b))
                    .or_insert((start.elapsed(), *direct));
                if *direct {
                    direct_at.entry((a, b)).or_insert(start.elapsed());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("classified after {classified:?}");
    for (a, b, _) in pairs {
        match (linked_at.get(&(a, b)), direct_at.get(&(a, b))) {
            (Some((t, true)), _) => eprintln!("{a:>4} <-> {b:<4}: direct after {t:?} from start"),
            (Some((t, false)), Some(d)) => eprintln!(
                "{a:>4} <-> {b:<4}: relayed after {t:?}, upgraded to direct after {d:?} from start"
            ),
            (Some((t, false)), None) => {
                eprintln!("{a:>4} <-> {b:<4}: relayed after {t:?} from start")
            }
            (None, _) => eprintln!("{a:>4} <-> {b:<4}: not linked"),
        }
    }
    for (a, b, direct) in pairs {
        let (_, first_direct) = linked_at
            .get(&(a, b))
            .unwrap_or_else(|| panic!("{a} and {b} did not link"));
        if direct {
            assert!(
                direct_at.contains_key(&(a, b)),
                "{a} <-> {b} should be direct"
            );
        } else {
            assert!(
                !*first_direct,
                "{a} <-> {b} cannot be direct through these NATs"
            );
            let now_direct = peers(&lab, by_name(a))
                .get(keys.iter().find(|(_, n)| n.as_str() == b).unwrap().0)
                .copied();
            assert_ne!(
                now_direct,
                Some(true),
                "{a} <-> {b} cannot be direct through these NATs"
            );
        }
    }
}

/// relay key -> bytes received, for every relay peer of `d`.
fn bytes_in(lab: &Lab, d: &Daemon) -> HashMap<String, u64> {
    lab.query(d, "peers")
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    Some((
                        p["relay_key"].as_str()?.to_string(),
                        p["bytes_in"].as_u64()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Flushing a NAT box's conntrack table (what a NAT reboot or a mapping timeout does) loses every
/// mapping at once: inbound packets are dropped until the node behind it sends again, and a
/// `random,fully-random` NAT gives it a new port. The NAT keepalives (13.5) must bring every link
/// back within 10 s without a link going down, and the node's circuits must stay usable.
#[test]
fn natted_links_recover_from_a_conntrack_flush() {
    let Some(mut lab) = Lab::new("ctflush") else {
        return;
    };
    let public: Vec<Host> = (0..3).map(|i| lab.add_host(&format!("r{i}"))).collect();
    let (cone_boxes, cone) = lab.add_natted_host("cone", &[NatType::PortRestricted]);
    let (sym_boxes, sym) = lab.add_natted_host("sym", &[NatType::Symmetric]);
    let mut publics = Vec::new();
    for (i, h) in public.iter().enumerate() {
        let cfg = lab.write_config(h, &public_config((i > 0).then(|| &public[0])));
        let d = lab.start_daemon(h, &cfg);
        lab.wait_ready(&d, READY);
        publics.push(d);
    }
    let public_keys: Vec<String> = publics.iter().map(|d| lab.relay_key(d)).collect();
    let mut natted = Vec::new();
    for h in [&cone, &sym] {
        let cfg = lab.write_config(h, &natted_config(&[&public[0], &public[1]]));
        let d = lab.start_daemon(h, &cfg);
        lab.wait_ready(&d, READY);
        natted.push(d);
    }
    let public_links = |lab: &Lab, d: &Daemon| {
        let p = peers(lab, d);
        public_keys.iter().filter(|k| p.contains_key(*k)).count()
    };
    lab.wait_for(
        "NATed nodes linked to every public relay",
        Duration::from_secs(30),
        || {
            natted
                .iter()
                .all(|d| public_links(&lab, d) == public_keys.len())
        },
    );
    lab.wait_for(
        "ready circuits behind both NATs",
        Duration::from_secs(30),
        || {
            natted
                .iter()
                .all(|d| lab.query(d, "status")["circuits"]["ready"].as_u64() >= Some(1))
        },
    );

    for (name, boxes, d) in [
        ("cone", &cone_boxes, &natted[0]),
        ("sym", &sym_boxes, &natted[1]),
    ] {
        // Flush at a quiet moment, so that every byte counted afterwards crossed the NAT after
        // the flush (the status snapshot lags by up to 250 ms).
        let mut before = bytes_in(&lab, d);
        for _ in 0..40 {
            std::thread::sleep(Duration::from_millis(300));
            let now = bytes_in(&lab, d);
            if now == before {
                break;
            }
            before = now;
        }
        let entries = lab.sh_ok(&boxes[0], "conntrack -L -p udp 2>/dev/null | wc -l");
        lab.sh_ok(&boxes[0], "conntrack -F 2>&1");
        let flushed = Instant::now();
        let left = lab.sh_ok(&boxes[0], "conntrack -L -p udp 2>/dev/null | wc -l");
        let mut recovered = None;
        while flushed.elapsed() < Duration::from_secs(15) {
            let now = bytes_in(&lab, d);
            if public_keys.iter().all(|k| {
                now.get(k).copied().unwrap_or(0) > before.get(k).copied().unwrap_or(u64::MAX)
            }) {
                recovered = Some(flushed.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "{name}: conntrack entries {} -> {} at the flush; every public link carried traffic again after {recovered:?}",
            entries.trim(),
            left.trim()
        );
        let t = recovered.unwrap_or_else(|| panic!("{name}: links did not recover within 15 s"));
        assert!(t <= Duration::from_secs(10), "{name}: recovery took {t:?}");
        assert_eq!(
            public_links(&lab, d),
            public_keys.len(),
            "{name}: a link went down"
        );
        assert!(
            lab.query(d, "status")["circuits"]["ready"].as_u64() >= Some(1),
            "{name}: no ready circuit after the flush"
        );
    }
}

/// Background programs of a test (HTTP servers), killed however the test ends.
pub(crate) struct Servers(pub(crate) Vec<std::process::Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A NAT situation of a service or client: no NAT, or behind these boxes.
const SITUATIONS: [(&str, &[NatType]); 5] = [
    ("none", &[]),
    ("cone", &[NatType::PortRestricted]),
    ("addr", &[NatType::AddressRestricted]),
    ("sym", &[NatType::Symmetric]),
    ("dbl", &[NatType::PortRestricted, NatType::PortRestricted]),
];

/// Issue #10's matrix over hidden services: a service and a client in every NAT situation
/// (none, port-restricted cone, address-restricted cone, symmetric, double NAT), most relays
/// behind NAT too. Every client fetches a token from every service by its fd address, through
/// onion circuits; NATed relays carry circuits for others.
#[test]
fn hidden_services_reachable_through_every_nat() {
    let Some(mut lab) = Lab::new("natmatrix") else {
        return;
    };
    let start = Instant::now();
    // Four public relays (guards, vanguards, DHT, intro and rendezvous points need direct
    // reachability) and seven NATed ones (three NATed relays, four NATed clients, which relay too).
    let public: Vec<Host> = (0..4).map(|i| lab.add_host(&format!("r{i}"))).collect();
    let mut daemons: Vec<(String, Daemon)> = Vec::new();
    for (i, h) in public.iter().enumerate() {
        let cfg = lab.write_config(h, &public_config((i > 0).then(|| &public[0])));
        let d = lab.start_daemon(h, &cfg);
        lab.wait_ready(&d, READY);
        daemons.push((h.name.clone(), d));
    }
    let boot = [&public[0], &public[1]];
    // NATed relays (clients relay too, by default).
    for (name, nats) in [
        ("nr1", &[NatType::PortRestricted][..]),
        ("nr2", &[NatType::Symmetric][..]),
        ("nr3", &[NatType::AddressRestricted][..]),
    ] {
        let (_, h) = lab.add_natted_host(name, nats);
        let cfg = lab.write_config(&h, &natted_config(&boot));
        let d = lab.start_daemon(&h, &cfg);
        daemons.push((name.to_string(), d));
    }
    let mut servers = Servers(Vec::new());
    let mut services: Vec<(String, Host, String)> = Vec::new();
    let mut clients: Vec<(String, Host)> = Vec::new();
    for (kind, nats) in SITUATIONS {
        for role in ["svc", "cli"] {
            let name = format!("{role}-{kind}");
            let h = if nats.is_empty() {
                lab.add_host(&name)
            } else {
                lab.add_natted_host(&name, nats).1
            };
            let mut cfg = if nats.is_empty() {
                public_config(Some(&public[0]))
            } else {
                natted_config(&boot)
            };
            if role == "svc" {
                cfg.push_str("[expose]\ntcp = [8080]\n");
                let token = format!("token-{kind}-{}", std::process::id());
                let server = lab.serve_token(&h, &name, 8080, &token);
                servers.0.push(server);
                services.push((kind.to_string(), h.clone(), token));
            } else {
                clients.push((kind.to_string(), h.clone()));
            }
            let path = lab.write_config(&h, &cfg);
            let d = lab.start_daemon(&h, &path);
            daemons.push((name, d));
        }
    }
    for (_, d) in &daemons {
        lab.wait_ready(d, READY);
    }
    let by_name = |n: &str| &daemons.iter().find(|(m, _)| m == n).unwrap().1;
    let addresses: HashMap<String, String> = services
        .iter()
        .map(|(kind, _, _)| {
            let s = lab.query(by_name(&format!("svc-{kind}")), "status");
            (kind.clone(), s["address"].as_str().unwrap().to_string())
        })
        .collect();
    lab.wait_for("ready circuits everywhere", Duration::from_secs(60), || {
        daemons
            .iter()
            .all(|(_, d)| lab.query(d, "status")["circuits"]["ready"].as_u64() >= Some(1))
    });
    let formed = start.elapsed();

    // Every cell: the first successful fetch. The five clients work in parallel, each through
    // its row, with a deadline per cell (the first cells also wait for the services' first
    // descriptors).
    let started = start.elapsed();
    let cells: Vec<(String, String, Option<Duration>)> = std::thread::scope(|scope| {
        let lab = &lab;
        let (services, addresses) = (&services, &addresses);
        let rows: Vec<_> = clients
            .iter()
            .map(|(ckind, client)| {
                scope.spawn(move || {
                    let mut row = Vec::new();
                    for (skind, _, token) in services {
                        let t0 = Instant::now();
                        // The first cell of each row also waits for the network to form and
                        // the services' first descriptors (seen: up to 82 s).
                        let deadline = t0 + Duration::from_secs(120);
                        let url = format!("http://[{}]:8080/token", addresses[skind]);
                        let mut ok = None;
                        while Instant::now() < deadline {
                            let out = lab.sh(client, &format!("curl -sS -m 10 -g '{url}'"));
                            if out.status.success()
                                && String::from_utf8_lossy(&out.stdout) == *token
                            {
                                ok = Some(t0.elapsed());
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(500));
                        }
                        row.push((ckind.clone(), skind.clone(), ok));
                    }
                    row
                })
            })
            .collect();
        rows.into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    eprintln!("fetching started {started:?} after the first daemon");
    eprintln!("network formed (every node has a ready circuit) after {formed:?}");
    eprintln!("client \\ service: time to the first fetched token");
    let mut header = String::from("        ");
    for (s, _, _) in &services {
        header.push_str(&format!("{s:>9}"));
    }
    eprintln!("{header}");
    for (ckind, _) in &clients {
        let mut row = format!("{ckind:>6}  ");
        for (skind, _, _) in &services {
            let t = cells
                .iter()
                .find(|(c, s, _)| c == ckind && s == skind)
                .and_then(|(_, _, t)| *t);
            row.push_str(&match t {
                Some(t) => format!("{:>8.1}s", t.as_secs_f64()),
                None => format!("{:>9}", "FAIL"),
            });
        }
        eprintln!("{row}");
    }
    let natted_relayed: u64 = ["nr1", "nr2", "nr3"]
        .iter()
        .map(|n| {
            lab.query(by_name(n), "status")["circuits"]["relayed"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    eprintln!("circuits relayed by the NATed relays nr1..nr3: {natted_relayed}");
    let failed: Vec<_> = cells.iter().filter(|c| c.2.is_none()).collect();
    assert!(
        failed.is_empty(),
        "unreachable cells (client, service): {failed:?}"
    );
    let natted_relays_carry = daemons
        .iter()
        .filter(|(n, _)| n.starts_with("nr") || (n.starts_with("cli-") && !n.ends_with("none")))
        .any(|(_, d)| lab.query(d, "status")["circuits"]["relayed"].as_u64() > Some(0));
    assert!(
        natted_relays_carry,
        "no NATed relay carried a circuit for anyone"
    );
}
