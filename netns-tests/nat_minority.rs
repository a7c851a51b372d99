//! Issue #20 item 4: a network shaped like a real peer-to-peer overlay, where public relays are a
//! minority (two of nine nodes) and the rest sit behind cone and symmetric nftables NATs. The
//! service is behind a cone NAT, the client behind a symmetric one.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::harness::{Daemon, Host, Lab, NatType};
use crate::nat::{natted_config, public_config, Servers};

const READY: Duration = Duration::from_secs(10);

/// The NATed nodes: name, NAT, whether the NAT is a cone (endpoint-independent mapping).
const NATTED: [(&str, NatType, bool); 7] = [
    ("c1", NatType::PortRestricted, true),
    ("c2", NatType::PortRestricted, true),
    ("c3", NatType::AddressRestricted, true),
    ("s1", NatType::Symmetric, false),
    ("s2", NatType::Symmetric, false),
    ("svc", NatType::PortRestricted, true),
    ("cli", NatType::Symmetric, false),
];

/// A pair's link: first seen linked, first seen direct, punched (by either side), seconds since.
type Seen = (Duration, Option<Duration>, bool, Option<u64>);

/// How `a` sees its link to the relay `b`: None (no link), or (direct, punched, seconds since
/// it was punched).
fn link_kind(lab: &Lab, a: &Daemon, b_key: &str) -> Option<(bool, bool, Option<u64>)> {
    let peers = lab.query(a, "peers");
    let p = peers
        .as_array()?
        .iter()
        .find(|p| p["relay_key"].as_str() == Some(b_key))?;
    Some((
        p["direct"].as_bool()?,
        p["punched"].as_bool().unwrap_or(false),
        p["punched_s"].as_u64(),
    ))
}

#[test]
fn a_service_behind_cone_nat_is_reached_from_symmetric_nat_with_two_public_relays() {
    let Some(mut lab) = Lab::new("natmin") else {
        return;
    };
    let public: Vec<Host> = (0..2).map(|i| lab.add_host(&format!("r{i}"))).collect();
    let mut daemons: Vec<(String, Daemon)> = Vec::new();
    for (i, h) in public.iter().enumerate() {
        let cfg = lab.write_config(h, &public_config((i > 0).then(|| &public[0])));
        let d = lab.start_daemon(h, &cfg);
        lab.wait_ready(&d, READY);
        daemons.push((h.name.clone(), d));
    }
    let boot = [&public[0], &public[1]];
    let mut servers = Servers(Vec::new());
    let token = format!("token-natmin-{}", std::process::id());
    let mut hosts: BTreeMap<&str, Host> = BTreeMap::new();
    let start = Instant::now();
    for (name, nat, _) in NATTED {
        let (_, h) = lab.add_natted_host(name, &[nat]);
        let mut cfg = natted_config(&boot);
        if name == "svc" {
            cfg.push_str("[expose]\ntcp = [8080]\n");
            let server = lab.serve_token(&h, "svc", 8080, &token);
            servers.0.push(server);
        }
        let path = lab.write_config(&h, &cfg);
        let d = lab.start_daemon(&h, &path);
        daemons.push((name.to_string(), d));
        hosts.insert(name, h);
    }
    for (_, d) in &daemons {
        lab.wait_ready(d, READY);
    }
    let by_name = |n: &str| &daemons.iter().find(|(m, _)| m == n).unwrap().1;
    let keys: BTreeMap<String, String> = daemons
        .iter()
        .map(|(n, d)| (n.clone(), lab.relay_key(d)))
        .collect();
    let address = lab.query(by_name("svc"), "status")["address"]
        .as_str()
        .unwrap()
        .to_string();

    // The client fetches the token through onion circuits, by the service's fd address.
    let url = format!("http://[{address}]:8080/token");
    let mut reached = None;
    while start.elapsed() < Duration::from_secs(180) {
        let out = lab.sh(&hosts["cli"], &format!("curl -sS -m 10 -g '{url}'"));
        if out.status.success() && String::from_utf8_lossy(&out.stdout) == token {
            reached = Some(start.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("client (symmetric NAT) reached the service (cone NAT) after {reached:?} from the NATed daemons' start");
    if reached.is_none() {
        for n in ["svc", "cli"] {
            eprintln!("{n} services: {}", lab.query(by_name(n), "services"));
            eprintln!("{n} status: {}", lab.query(by_name(n), "status"));
        }
    }

    // Cone to cone links become direct by punching (at first contact, or relayed first and
    // upgraded): watch every NATed pair until at least one pair of port-restricted cones and
    // one more cone pair are linked and every linked cone pair is direct, or 120 s.
    let pairs: Vec<(usize, usize)> = (0..NATTED.len())
        .flat_map(|i| (i + 1..NATTED.len()).map(move |j| (i, j)))
        .collect();
    let cone = |i: usize| NATTED[i].2;
    let pr = |i: usize| NATTED[i].1 == NatType::PortRestricted;
    // pair -> (first seen linked, first seen direct, punched, seconds since punched)
    let mut seen: BTreeMap<(usize, usize), Seen> = BTreeMap::new();
    let watch = Instant::now();
    loop {
        for &(i, j) in &pairs {
            let (a, b) = (NATTED[i].0, NATTED[j].0);
            if let Some((direct, punched, since)) = link_kind(&lab, by_name(a), &keys[b]) {
                // Either side may have been the one that punched (a link both sides dialled
                // at once opens without an introducer and is direct, not punched).
                let back = link_kind(&lab, by_name(b), &keys[a]);
                let punched = punched || back.is_some_and(|k| k.1);
                let since = since.or(back.and_then(|k| k.2));
                let e = seen
                    .entry((i, j))
                    .or_insert((start.elapsed(), None, false, None));
                if direct && e.1.is_none() {
                    e.1 = Some(start.elapsed());
                }
                e.2 = punched;
                e.3 = since;
            }
        }
        let cone_pairs: Vec<_> = seen
            .iter()
            .filter(|((i, j), _)| cone(*i) && cone(*j))
            .collect();
        let all_direct = cone_pairs.iter().all(|(_, v)| v.1.is_some());
        let pr_pair = cone_pairs.iter().any(|((i, j), _)| pr(*i) && pr(*j));
        if (all_direct && pr_pair && cone_pairs.len() >= 2)
            || watch.elapsed() > Duration::from_secs(120)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("links between NATed nodes (seconds from the NATed daemons' start):");
    let class = |i: usize, j: usize| match (cone(i), cone(j)) {
        (true, true) => 0,
        (false, false) => 2,
        _ => 1,
    };
    let names = ["cone-cone", "cone-sym", "sym-sym"];
    let mut direct = [0u32; 3];
    let mut linked = [0u32; 3];
    for &(i, j) in &pairs {
        let (a, b) = (NATTED[i].0, NATTED[j].0);
        let c = class(i, j);
        let text = match seen.get(&(i, j)) {
            None => "no link".to_string(),
            Some((l, d, punched, since)) => {
                linked[c] += 1;
                let mut t = format!("linked at {:.1}", l.as_secs_f64());
                if let Some(d) = d {
                    direct[c] += 1;
                    t.push_str(&format!(", direct at {:.1}", d.as_secs_f64()));
                }
                if *punched {
                    t.push_str(&format!(", punched {since:?} s ago"));
                }
                t
            }
        };
        eprintln!("  {a:>3} <-> {b:<3} {:<9}: {text}", names[c]);
    }
    for c in 0..3 {
        eprintln!(
            "{}: {} of {} linked pairs direct",
            names[c], direct[c], linked[c]
        );
    }

    // NATed relays carry circuits for others.
    let carried: Vec<(String, u64)> = NATTED
        .iter()
        .map(|(n, _, _)| {
            let s = lab.query(by_name(n), "status");
            (
                n.to_string(),
                s["circuits"]["relayed"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    eprintln!("circuits relayed by NATed nodes: {carried:?}");

    // The service's status says which path rules it relaxed: with two public relays both are its
    // guards, so its vanguards are NATed stand-ins.
    let svc_status = lab.query(by_name("svc"), "status");
    let paths = &svc_status["paths"];
    eprintln!("service status paths: {paths}");

    let t = reached.expect("the client did not reach the service within 180 s");
    assert!(t <= Duration::from_secs(150), "reached after {t:?}");
    assert!(
        carried.iter().any(|(_, c)| *c > 0),
        "no NATed relay carries a circuit for anyone"
    );
    assert_eq!(paths["public_relays"], 2, "{paths}");
    assert!(paths["natted_vanguards"].as_u64() >= Some(1), "{paths}");
    assert!(
        paths["relaxed"].as_array().is_some_and(|a| a.len() >= 2),
        "{paths}"
    );
    let cone_pairs: Vec<_> = seen
        .iter()
        .filter(|((i, j), _)| cone(*i) && cone(*j))
        .collect();
    assert!(!cone_pairs.is_empty(), "no two cones linked");
    for ((i, j), v) in cone_pairs {
        assert!(
            v.1.is_some(),
            "{} <-> {} (cones) is not direct: {v:?}",
            NATTED[*i].0,
            NATTED[*j].0
        );
    }
    assert_eq!(direct[2], 0, "a symmetric <-> symmetric link is direct");
}
