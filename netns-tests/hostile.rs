//! Issue #19 item 5: hostile nodes. `examples/hostile/` floods a relay that is one of a hidden
//! service's intro points (or the service's intro points themselves) with the real protocol:
//! CREATE floods, thousands of ESTABLISH_INTRO registrations, INTRODUCE1 floods, DHT STOREs near
//! the service's descriptor index and junk datagrams. While each runs, an honest client that has
//! never seen the network starts and fetches a page from the service.
//!
//! Checked for every mode: no daemon dies or panics; the target's RSS stays under its memory
//! budget plus its idle RSS; the honest client gets through within `HONEST_BOUND` (under the
//! INTRODUCE1 flood with proof of work, issue #19 item 3: the flood pays nothing, the service
//! raises its effort and the client pays it). Checked where it holds today (all but the INTRODUCE1
//! floods, which have been seen to kill one of the service's intro circuits): the service keeps
//! the same intro points and intro circuits. Under the INTRODUCE1 floods (issue #19 item 5, "the
//! service's intro circuits survive"), intro circuits may be lost and rebuilt
//! (`session/intro_watch.rs`), so what is checked is that they are there: at the end of the flood
//! and for `RESTORE_WATCH` after it the service lists at least one established intro point; how
//! many it had at the least, and how long it took to have all of them again, are printed. `introduce-nopow` is the same INTRODUCE1 flood with a
//! client that will not pay (`[client] pow_max_effort = 0`): its connect time is printed, not
//! asserted, as the comparison. Printed (`hostile ...` lines on stderr, `--nocapture`): the
//! attack rate, the honest connect time, the RSS figures, the effort the service reached.
//!
//! Environment (for `scripts/bench-hostile`, the long version): `GN_HOSTILE_SECONDS` (flood
//! length, default 20), `GN_HOSTILE_SCALE` (rate multiplier, default 1), `GN_HOSTILE_MODES`
//! (comma-separated subset of `none,junk,create,establish-intro,store,introduce,introduce-nopow`;
//! `none` is the control run, no flood).

use std::net::Ipv6Addr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{example_bin, globalnet_bin, shipped_listen, Daemon, Host, Lab};

const READY: Duration = Duration::from_secs(10);
/// The relays' memory budget: the config's minimum but one step, so that the floods reach it.
const BUDGET_MB: u64 = 32;
/// An honest client that starts during a flood fetches the page within this (docs/benchmarks.md).
const HONEST_BOUND: Duration = Duration::from_secs(60);
/// After an INTRODUCE1 flood the service's intro points are watched this long (every reading must
/// list one at least; the time until all are back is printed). An intro point that lost its
/// registration is found within 17.5 s (10.6.1) and rebuilt in a few seconds more.
const RESTORE_WATCH: Duration = Duration::from_secs(30);
/// The intro points a service keeps (`session::limits::NUM_INTRO_POINTS`).
const INTRO_POINTS: usize = 3;

fn config(boot: Option<&Host>, extra: &str) -> String {
    let boot = boot
        .map(|b| format!("\"{}:7412\"", b.ip))
        .unwrap_or_default();
    format!(
        "[network]\nlisten = {}\nbootstrap = [{boot}]\n[paths]\nipv4_subnet_family_prefix = 32\n{extra}",
        shipped_listen()
    )
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) a process used so far (10-ms ticks).
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

fn ready_circuits(lab: &Lab, d: &Daemon) -> usize {
    lab.query(d, "circuits")
        .as_array()
        .map(|a| a.iter().filter(|c| c["state"] == "ready").count())
        .unwrap_or(0)
}

/// The service's intro points (relay key fingerprints), sorted.
fn intro_points(lab: &Lab, svc: &Daemon) -> Vec<String> {
    let mut v: Vec<String> = lab.query(svc, "services")[0]["intro_points"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The ids of the service's intro circuits, sorted: a replaced intro circuit (even at the same
/// relay) shows as a new id.
fn intro_circuits(lab: &Lab, svc: &Daemon) -> Vec<String> {
    let mut v: Vec<String> = lab
        .query(svc, "circuits")
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["purpose"] == "intro")
                .filter_map(|c| c["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The service's established intro points as read during and after a flood.
#[derive(Default)]
struct IntroTrack {
    /// The fewest read.
    min: Option<usize>,
    /// When (since the flood started) a reading first had fewer than `INTRO_POINTS`.
    first_short: Option<Duration>,
    /// When a reading had all of them again after that.
    restored: Option<Duration>,
}

impl IntroTrack {
    fn see(&mut self, n: usize, at: Duration) {
        self.min = Some(self.min.map_or(n, |m| m.min(n)));
        if n < INTRO_POINTS {
            if self.first_short.is_none() {
                self.first_short = Some(at);
            }
            self.restored = None;
        } else if self.first_short.is_some() && self.restored.is_none() {
            self.restored = Some(at);
        }
    }

    /// Seconds from the first short reading to all intro points listed again, `never-short`, or
    /// `not` (still short at the last reading).
    fn restored_s(&self) -> String {
        match (self.first_short, self.restored) {
            (None, _) => "never-short".into(),
            (Some(_), None) => "not".into(),
            (Some(a), Some(b)) => format!("{:.1}", b.saturating_sub(a).as_secs_f64()),
        }
    }
}

/// The flood tool, killed if the test gives up first.
struct Flood(Child);

impl Drop for Flood {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One attack: its tool arguments and whether an honest client is expected to get through.
struct Attack {
    mode: &'static str,
    args: Vec<String>,
    /// An honest client gets through within `HONEST_BOUND` today.
    honest_must_connect: bool,
    /// The service's intro circuits are known to survive this flood today.
    intro_circuits_must_survive: bool,
    /// The flood may cost the service intro circuits, which are rebuilt: at least one intro point
    /// must be listed at the end of the flood and while `RESTORE_WATCH` runs after it.
    intro_points_must_remain: bool,
    /// The honest client's extra configuration.
    client_extra: &'static str,
}

/// The service's current proof-of-work effort, introductions received with a proof and
/// established intro points; `None` if its control socket does not answer (a daemon busy with a
/// flood may let its backlog fill: that is the figure's loss, not a failure).
fn service_pow(svc: &Daemon) -> Option<(u64, u64, usize)> {
    let out = std::process::Command::new(globalnet_bin())
        .args(["services", "--json", "--control"])
        .arg(&svc.control)
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let s = &v[0];
    Some((
        s["pow_effort"].as_u64().unwrap_or(0),
        s["intros_with_pow"].as_u64().unwrap_or(0),
        s["intro_points"].as_array().map_or(0, Vec::len),
    ))
}

/// The service's established intro points, asked until its control socket answers (for up to
/// 10 s; `None` if it never does).
fn intro_count(svc: &Daemon) -> Option<usize> {
    let t = Instant::now();
    loop {
        if let Some(p) = service_pow(svc) {
            return Some(p.2);
        }
        if t.elapsed() > Duration::from_secs(10) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn hostile_nodes_flood_a_relay_and_an_honest_client_gets_through() {
    let Some(mut lab) = Lab::new("hostile") else {
        return;
    };
    let secs = env_f64("GN_HOSTILE_SECONDS", 20.0);
    let scale = env_f64("GN_HOSTILE_SCALE", 1.0);
    let modes: Vec<String> = std::env::var("GN_HOSTILE_MODES")
        .unwrap_or_else(|_| {
            "none,junk,create,establish-intro,store,introduce,introduce-nopow".into()
        })
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();

    let relay_hosts: Vec<Host> = (1..=6).map(|i| lab.add_host(&format!("r{i}"))).collect();
    let svc_host = lab.add_host("svc");
    let evil = lab.add_host("evil");
    let boot = relay_hosts[0].clone();
    let limits = format!("[limits]\nmemory_budget_mb = {BUDGET_MB}\n");
    let mut relays = Vec::new();
    for (i, h) in relay_hosts.iter().enumerate() {
        let cfg = lab.write_config(h, &config((i > 0).then_some(&boot), &limits));
        relays.push(lab.start_daemon(h, &cfg));
    }
    for d in &relays {
        lab.wait_ready(d, READY);
    }
    lab.wait_for(
        "relays to have 2 ready circuits",
        Duration::from_secs(60),
        || relays.iter().all(|d| ready_circuits(&lab, d) >= 2),
    );

    // The service: a web server behind its daemon.
    let token = format!("hostile-token-{}", std::process::id());
    lab.spawn(
        &svc_host,
        "web",
        globalnet_bin(),
        &["demo", "serve", "--port", "80", "--token", &token],
        Some("ready"),
    );
    let cfg = lab.write_config(&svc_host, &config(Some(&boot), "[expose]\ntcp = [80]\n"));
    let svc = lab.start_daemon(&svc_host, &cfg);
    let svc_addr: Ipv6Addr = lab.wait_ready(&svc, READY)["address"]
        .as_str()
        .expect("address")
        .parse()
        .expect("an IPv6 address");
    lab.wait_for(
        "the service's descriptor with 3 intro points",
        Duration::from_secs(90),
        || {
            let s = lab.query(&svc, "services");
            s[0]["published"] == true && intro_points(&lab, &svc).len() >= 3
        },
    );
    let intros = intro_points(&lab, &svc);
    // The target: an intro point of the service (so its intro circuit is at stake), not the
    // bootstrap relay if another one will do.
    let keys: Vec<String> = relays.iter().map(|d| lab.relay_key(d)).collect();
    let (ti, _) = keys
        .iter()
        .enumerate()
        .filter(|(_, k)| intros.iter().any(|f| k.starts_with(f.as_str())))
        .min_by_key(|(i, _)| usize::from(*i == 0))
        .expect("an intro point among the relays");
    let target = relays[ti].clone();
    let target_ip = relay_hosts[ti].ip;
    eprintln!(
        "hostile: service {svc_addr} intro points {intros:?}; target r{} ({})",
        ti + 1,
        &keys[ti][..8]
    );

    // Idle baseline of the target.
    std::thread::sleep(Duration::from_secs(3));
    let idle_kib = rss_kib(target.pid);
    let idle_used = lab.query(&target, "status")["memory"]["used"]
        .as_u64()
        .unwrap_or(0);
    let budget_kib = BUDGET_MB * 1024;
    eprintln!(
        "hostile: target idle RSS {idle_kib} KiB (budget charged {} KiB); bound {} KiB",
        idle_used / 1024,
        budget_kib + idle_kib
    );

    let rate = |r: f64| format!("{}", (r * scale).max(1.0) as u64);
    let base = |mode: &str| {
        vec![
            "--mode".to_string(),
            mode.to_string(),
            "--target".into(),
            format!("{target_ip}:7412"),
            "--bind".into(),
            evil.ip.to_string(),
            "--seconds".into(),
            format!("{secs}"),
        ]
    };
    let with = |mode: &str, extra: &[String]| {
        let mut v = base(mode);
        v.extend(extra.iter().cloned());
        v
    };
    let svc_s = svc_addr.to_string();
    // The INTRODUCE1 flood goes last: it can leave the service unreachable after it ends (its
    // client keeps trying for the whole bound), which would blame the floods after it.
    // 3,200 circuits or registrations (issue #19: "3,000+"), more in the long version.
    let count = format!("{}", (3200.0 * scale.max(1.0)) as u64);
    let introduce_flood = with(
        "introduce",
        &[
            "--rate".into(),
            rate(300.0),
            "--agents".into(),
            "8".into(),
            "--service".into(),
            svc_s.clone(),
        ],
    );
    let attacks = [
        Attack {
            mode: "none",
            args: base("none"),
            honest_must_connect: true,
            intro_circuits_must_survive: true,
            intro_points_must_remain: false,
            client_extra: "",
        },
        Attack {
            mode: "junk",
            args: with("junk", &["--rate".into(), rate(5000.0)]),
            honest_must_connect: true,
            intro_circuits_must_survive: true,
            intro_points_must_remain: false,
            client_extra: "",
        },
        Attack {
            mode: "create",
            args: with(
                "create",
                &[
                    "--rate".into(),
                    rate(300.0),
                    "--agents".into(),
                    "16".into(),
                    "--count".into(),
                    count.clone(),
                ],
            ),
            honest_must_connect: true,
            intro_circuits_must_survive: true,
            intro_points_must_remain: false,
            client_extra: "",
        },
        Attack {
            mode: "establish-intro",
            args: with(
                "establish-intro",
                &[
                    "--rate".into(),
                    rate(300.0),
                    "--agents".into(),
                    "16".into(),
                    "--count".into(),
                    count.clone(),
                ],
            ),
            honest_must_connect: true,
            intro_circuits_must_survive: true,
            intro_points_must_remain: false,
            client_extra: "",
        },
        Attack {
            mode: "store",
            args: with(
                "store",
                &[
                    "--rate".into(),
                    rate(80.0),
                    "--agents".into(),
                    "8".into(),
                    "--service".into(),
                    svc_s.clone(),
                ],
            ),
            honest_must_connect: true,
            intro_circuits_must_survive: true,
            intro_points_must_remain: false,
            client_extra: "",
        },
        Attack {
            mode: "introduce",
            args: introduce_flood.clone(),
            honest_must_connect: true,
            intro_circuits_must_survive: false,
            intro_points_must_remain: true,
            client_extra: "",
        },
        Attack {
            mode: "introduce-nopow",
            args: introduce_flood,
            honest_must_connect: false,
            intro_circuits_must_survive: false,
            intro_points_must_remain: true,
            client_extra: "[client]\npow_max_effort = 0\n",
        },
    ];

    let mut failures = Vec::new();
    let mut last_paid = 0;
    // The rate the `introduce` flood reached: `introduce-nopow` asks for it, so that the two
    // honest connect times compare like for like (the tool reaches less than it is asked for on a
    // loaded machine, and not the same each run).
    let mut introduce_rate: Option<String> = None;
    for (n, attack) in attacks
        .iter()
        .filter(|a| modes.iter().any(|m| m == a.mode))
        .enumerate()
    {
        let mut args = attack.args.clone();
        if attack.mode == "introduce-nopow" {
            if let (Some(r), Some(i)) = (
                &introduce_rate,
                args.iter().position(|a| a == "--rate").map(|i| i + 1),
            ) {
                if let Some(a) = args.get_mut(i) {
                    a.clone_from(r);
                }
            }
        }
        let before = intro_points(&lab, &svc);
        let circuits_before = intro_circuits(&lab, &svc);
        let log = lab.dir.join(format!("hostile-{}.log", attack.mode));
        let logf = std::fs::File::create(&log).expect("log");
        let mut child = lab
            .cmd(&evil, example_bin("hostile"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(logf.try_clone().expect("log"))
            .spawn()
            .expect("start hostile");
        // Wait for the flood to start (its first line), then copy the rest to the log.
        let stdout = child.stdout.take().expect("stdout");
        let flood = Flood(child);
        let mut reader = std::io::BufReader::new(stdout);
        let mut first = String::new();
        let _ = std::io::BufRead::read_line(&mut reader, &mut first);
        assert!(
            first.starts_with("ready"),
            "{}: the flood did not start ({first:?}); log:\n{}",
            attack.mode,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let copier = {
            let mut logf = logf;
            std::thread::spawn(move || {
                let mut out = String::new();
                let _ = std::io::Read::read_to_string(&mut reader, &mut out);
                let _ = std::io::Write::write_all(&mut logf, out.as_bytes());
                out
            })
        };
        let flood_start = Instant::now();
        let cpu_before = cpu_s(target.pid);

        // A client that never saw the network starts a few seconds into the flood.
        std::thread::sleep(Duration::from_secs(3).min(Duration::from_secs_f64(secs / 4.0)));
        let host = lab.add_host(&format!("c{n}"));
        let cfg = lab.write_config(&host, &config(Some(&boot), attack.client_extra));
        let client = lab.start_daemon(&host, &cfg);
        let t0 = Instant::now();
        let mut max_kib = rss_kib(target.pid);
        let mut connected = None;
        let url = format!("http://[{svc_addr}]/");
        // The counter only grows: if the service does not answer now, the last reading stands.
        let paid_before = service_pow(&svc).map_or(last_paid, |p| p.1);
        let mut effort_max = 0;
        let mut intros = IntroTrack::default();
        let mut polled = Instant::now();
        while t0.elapsed() < HONEST_BOUND {
            max_kib = max_kib.max(rss_kib(target.pid));
            if polled.elapsed() >= Duration::from_secs(1) {
                polled = Instant::now();
                if let Some(p) = service_pow(&svc) {
                    effort_max = effort_max.max(p.0);
                    intros.see(p.2, flood_start.elapsed());
                }
            }
            let out = lab.sh(&host, &format!("curl -sS -g --max-time 5 '{url}'"));
            if out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&token) {
                connected = Some(t0.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        // Until the flood ends.
        let paid_after = service_pow(&svc).map_or(paid_before, |p| p.1);
        last_paid = paid_after;
        while flood_start.elapsed() < Duration::from_secs_f64(secs + 1.0) {
            max_kib = max_kib.max(rss_kib(target.pid));
            if polled.elapsed() >= Duration::from_secs(1) {
                polled = Instant::now();
                if let Some(p) = service_pow(&svc) {
                    effort_max = effort_max.max(p.0);
                    intros.see(p.2, flood_start.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let target_cpu = cpu_s(target.pid) - cpu_before;
        let mut flood = flood;
        let _ = flood.0.wait();
        // The flood is over: intro points at its end, then (for the floods that may cost intro
        // circuits) for `RESTORE_WATCH` after it.
        let flood_secs = flood_start.elapsed();
        let at_end = intro_count(&svc);
        if let Some(n) = at_end {
            intros.see(n, flood_start.elapsed());
        }
        let mut min_after = at_end;
        if attack.intro_points_must_remain {
            while flood_start.elapsed() < flood_secs + RESTORE_WATCH {
                std::thread::sleep(Duration::from_millis(500));
                if let Some(p) = service_pow(&svc) {
                    intros.see(p.2, flood_start.elapsed());
                    min_after = Some(min_after.map_or(p.2, |m| m.min(p.2)));
                }
            }
        }
        let out = copier.join().unwrap_or_default();
        let result = out
            .lines()
            .find(|l| l.starts_with("result"))
            .unwrap_or("result missing")
            .to_string();
        if attack.mode == "introduce" {
            introduce_rate = result
                .split_whitespace()
                .find_map(|w| w.strip_prefix("rate="))
                .and_then(|r| r.parse::<f64>().ok())
                .map(|r| format!("{}", r.round().max(1.0) as u64));
        }
        let after = intro_points(&lab, &svc);
        let circuits_after = intro_circuits(&lab, &svc);
        let used = lab.query(&target, "status")["memory"]["used"]
            .as_u64()
            .unwrap_or(0);
        eprintln!(
            "hostile mode={} rate_asked={} {} honest_connect_s={} rss_idle_kib={idle_kib} rss_max_kib={max_kib} \
             rss_bound_kib={} budget_used_kib={} target_cpu_s={target_cpu:.1} \
             intro_points_before={} intro_points_after={} intro_circuits_kept={} \
             svc_effort_max={effort_max} paid_intros={} intro_points_min={} \
             intro_points_at_end={} intro_points_min_after={} intro_first_short_s={} \
             intro_restored_s={} intro_restored_at_s={}",
            attack.mode,
            args.iter()
                .position(|a| a == "--rate")
                .and_then(|i| args.get(i + 1))
                .map_or("-", String::as_str),
            result
                .split_whitespace()
                .filter(|w| !w.starts_with("mode=") && *w != "result")
                .collect::<Vec<_>>()
                .join(" "),
            connected.map_or("none".into(), |d| format!("{:.1}", d.as_secs_f64())),
            budget_kib + idle_kib,
            used / 1024,
            before.join(","),
            after.join(","),
            circuits_after == circuits_before,
            paid_after.saturating_sub(paid_before),
            intros.min.map_or("?".into(), |n| n.to_string()),
            at_end.map_or("?".into(), |n| n.to_string()),
            min_after.map_or("?".into(), |n| n.to_string()),
            intros
                .first_short
                .map_or("never".into(), |d| format!("{:.1}", d.as_secs_f64())),
            intros.restored_s(),
            intros
                .restored
                .map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64())),
        );
        lab.stop(
            &client,
            nix::sys::signal::Signal::SIGTERM,
            Duration::from_secs(10),
        );

        // What must hold.
        for d in relays.iter().chain([&svc]) {
            if lab.try_wait(d).is_some() {
                failures.push(format!("{}: daemon {} died", attack.mode, d.host.name));
            }
        }
        if max_kib > budget_kib + idle_kib {
            failures.push(format!(
                "{}: target RSS {max_kib} KiB over budget + idle {} KiB",
                attack.mode,
                budget_kib + idle_kib
            ));
        }
        if attack.intro_circuits_must_survive && after != before {
            failures.push(format!(
                "{}: the service's intro points changed under the flood: {before:?} -> {after:?}",
                attack.mode
            ));
        }
        if attack.intro_circuits_must_survive && circuits_after != circuits_before {
            failures.push(format!(
                "{}: the service's intro circuits changed under the flood: {circuits_before:?} -> \
                 {circuits_after:?}",
                attack.mode
            ));
        }
        if attack.intro_points_must_remain && at_end.is_none_or(|n| n == 0) {
            failures.push(format!(
                "{}: the service listed no intro point at the end of the flood ({at_end:?})",
                attack.mode
            ));
        }
        if attack.intro_points_must_remain && min_after.is_none_or(|n| n == 0) {
            failures.push(format!(
                "{}: the service listed no intro point in the {RESTORE_WATCH:?} after the flood \
                 (least {min_after:?})",
                attack.mode
            ));
        }
        if attack.honest_must_connect && connected.is_none() {
            failures.push(format!(
                "{}: the honest client did not reach the service within {HONEST_BOUND:?}",
                attack.mode
            ));
        }
    }
    for d in relays.iter().chain([&svc]) {
        let log = std::fs::read_to_string(&d.log).unwrap_or_default();
        if log.contains("panicked") {
            failures.push(format!("daemon {} panicked", d.host.name));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
