//! Issue #9 scenarios: hidden services over gn0 with real applications, and `globalnet demo`.
//!
//! Ten namespaces: seven relays, a service running sshd (key auth), an HTTP server that logs its
//! clients' addresses, iperf3 and a UDP echo; a second service with an HTTP server; and a client.
//! The client reaches both services by their fd00::/8 addresses with nothing configured but the
//! bootstrap peer. Measurements go to stderr for the closing note (`--nocapture` shows them).

use std::io::BufRead;
use std::net::Ipv6Addr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{globalnet_bin, shipped_listen, Daemon, Host, Lab};

const READY: Duration = Duration::from_secs(10);
const NETTOOLS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/netns-tests/harness/nettools.py"
);
/// Bytes sent through the overlay in the clear at the ends; must never show on the underlay.
const MARKER: &str = "GN-PLAINTEXT-MARKER-5f3a9c";

/// `globalnet demo` uses fixed namespace names: its tests must not overlap.
static DEMO_LOCK: Mutex<()> = Mutex::new(());

pub(crate) fn node_config(
    lab: &Lab,
    h: &Host,
    boot: Option<&Host>,
    extra: &str,
) -> std::path::PathBuf {
    let boot = boot
        .map(|b| format!("\"{}:7412\"", b.ip))
        .unwrap_or_default();
    lab.write_config(
        h,
        &format!(
            "[network]\nlisten = {}\nbootstrap = [{boot}]\n[paths]\nipv4_subnet_family_prefix = 32\n{extra}",
            shipped_listen()
        ),
    )
}

fn ready_circuits(lab: &Lab, d: &Daemon) -> usize {
    lab.query(d, "circuits")
        .as_array()
        .map(|a| a.iter().filter(|c| c["state"] == "ready").count())
        .unwrap_or(0)
}

fn address(lab: &Lab, d: &Daemon) -> Ipv6Addr {
    lab.query(d, "status")["address"]
        .as_str()
        .expect("address in status")
        .parse()
        .expect("an IPv6 address")
}

/// Runs a command in `host` with a wall-clock limit; returns (success, stdout, stderr, elapsed).
fn timed(lab: &Lab, host: &Host, script: &str) -> (bool, String, String, Duration) {
    let t = Instant::now();
    let out = lab.sh(host, script);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        t.elapsed(),
    )
}

fn percentile(sorted: &[f64], p: usize) -> f64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Starts sshd in `host` with a fresh host key, accepting only `client_key.pub`; returns the
/// client's private key path.
pub(crate) fn start_sshd(lab: &mut Lab, host: &Host) -> std::path::PathBuf {
    let dir = lab.dir.join("ssh");
    std::fs::create_dir_all(&dir).unwrap();
    let (host_key, client_key) = (dir.join("host_key"), dir.join("client_key"));
    for k in [&host_key, &client_key] {
        crate::harness::must(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(k),
        );
    }
    let auth = dir.join("authorized_keys");
    std::fs::copy(dir.join("client_key.pub"), &auth).unwrap();
    let cfg = dir.join("sshd_config");
    std::fs::write(
        &cfg,
        format!(
            "Port 22\nListenAddress ::\nHostKey {}\nAuthorizedKeysFile {}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPidFile {}\n",
            host_key.display(),
            auth.display(),
            dir.join("sshd.pid").display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all("/run/sshd").unwrap();
    let cfg_s = cfg.display().to_string();
    lab.spawn(
        host,
        "sshd",
        "/usr/sbin/sshd",
        &["-D", "-e", "-f", &cfg_s],
        None,
    );
    lab.wait_for("sshd to listen", Duration::from_secs(5), || {
        lab.sh(host, "ss -ltn | grep -q ':22 '").status.success()
    });
    client_key
}

fn ssh_cmd(key: &std::path::Path, addr: Ipv6Addr, remote: &str) -> String {
    format!(
        "ssh -i {} -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=20 -o LogLevel=ERROR root@{addr} '{remote}'",
        key.display()
    )
}

/// Relayed-cell counters of the relays, to find the ones a transfer goes through.
fn relayed_cells(lab: &Lab, relays: &[Daemon], alive: &[bool]) -> Vec<u64> {
    relays
        .iter()
        .zip(alive)
        .map(|(d, &a)| {
            if a {
                lab.query(d, "status")["circuits"]["relayed_cells"]
                    .as_u64()
                    .unwrap_or(0)
            } else {
                0
            }
        })
        .collect()
}

/// The ten namespaces with their daemons and applications, once the client has fetched the
/// first service's page.
struct Net {
    lab: Lab,
    relays: Vec<Daemon>,
    client: Daemon,
    client_host: Host,
    svc_host: Host,
    svc: Daemon,
    svc2: Daemon,
    client_addr: Ipv6Addr,
    svc_addr: Ipv6Addr,
    svc2_addr: Ipv6Addr,
    ssh_key: std::path::PathBuf,
    token2: String,
    http_log: std::path::PathBuf,
    http2_log: std::path::PathBuf,
    /// The underlay capture (its file and pid), when asked for.
    capture: Option<(std::path::PathBuf, u32)>,
    page: String,
    t_total: Instant,
}

/// Builds the network: relays and the client first, then the services' applications, then
/// (with an underlay capture running when `capture`) the services' daemons; returns once the
/// client fetched the first service's page, printing how long that took.
fn setup(name: &str, capture: bool) -> Option<Net> {
    let mut lab = Lab::new(name)?;
    let t_total = Instant::now();
    let relay_hosts: Vec<Host> = (1..=7).map(|i| lab.add_host(&format!("r{i}"))).collect();
    let svc_host = lab.add_host("svc");
    let svc2_host = lab.add_host("svc2");
    let client_host = lab.add_host("client");
    let boot = relay_hosts[0].clone();

    // Relays and the client first: a network that is already up when the service arrives.
    let mut relays = Vec::new();
    for (i, h) in relay_hosts.iter().enumerate() {
        let cfg = node_config(&lab, h, (i > 0).then_some(&boot), "");
        relays.push(lab.start_daemon(h, &cfg));
    }
    let cfg = node_config(&lab, &client_host, Some(&boot), "");
    let client = lab.start_daemon(&client_host, &cfg);
    for d in relays.iter().chain([&client]) {
        lab.wait_ready(d, READY);
    }
    lab.wait_for(
        "relays and the client to have 2 ready circuits",
        Duration::from_secs(45),
        || {
            relays
                .iter()
                .chain([&client])
                .all(|d| ready_circuits(&lab, d) >= 2)
        },
    );
    let client_addr = address(&lab, &client);

    // The services' applications, listening on every address of their hosts.
    let token = format!("{MARKER}-svc1");
    let token2 = format!("{MARKER}-svc2");
    let (http_log, http2_log) = (lab.dir.join("svc-http.log"), lab.dir.join("svc2-http.log"));
    let gn = globalnet_bin();
    let (l1, l2) = (
        http_log.display().to_string(),
        http2_log.display().to_string(),
    );
    lab.spawn(
        &svc_host,
        "svc-http",
        &gn,
        &[
            "demo", "serve", "--port", "80", "--token", &token, "--log", &l1,
        ],
        Some("ready"),
    );
    lab.spawn(
        &svc_host,
        "svc-http-closed",
        &gn,
        &["demo", "serve", "--port", "8081", "--token", "closed"],
        Some("ready"),
    );
    lab.spawn(
        &svc2_host,
        "svc2-http",
        &gn,
        &[
            "demo", "serve", "--port", "80", "--token", &token2, "--log", &l2,
        ],
        Some("ready"),
    );
    lab.spawn(&svc_host, "iperf3", "iperf3", &["-s", "-p", "5201"], None);
    lab.spawn(
        &svc_host,
        "udp-echo",
        "python3",
        &[NETTOOLS, "udp-echo", "5300"],
        Some("ready"),
    );
    let ssh_key = start_sshd(&mut lab, &svc_host);
    // The HTTP server on 8081 is up, only not exposed.
    lab.sh_ok(
        &svc_host,
        "curl -sS --max-time 2 http://127.0.0.1:8081/ | grep -q closed",
    );

    // Everything on the underlay from here on, until the bulk transfers.
    let capture_file = lab.dir.join("underlay.raw");
    let cap_s = capture_file.display().to_string();
    let hub = lab.hub();
    let capture = capture.then(|| {
        let pid = lab.spawn(
            &hub,
            "capture",
            "python3",
            &[NETTOOLS, "capture", &cap_s],
            Some("ready"),
        );
        (capture_file.clone(), pid)
    });

    // The services join.
    let t_service = Instant::now();
    let cfg = node_config(
        &lab,
        &svc_host,
        Some(&boot),
        "[expose]\ntcp = [22, 80, 5201]\nudp = [5300]\n",
    );
    let svc = lab.start_daemon(&svc_host, &cfg);
    let cfg = node_config(&lab, &svc2_host, Some(&boot), "[expose]\ntcp = [80]\n");
    let svc2 = lab.start_daemon(&svc2_host, &cfg);
    lab.wait_ready(&svc, READY);
    lab.wait_ready(&svc2, READY);
    let (svc_addr, svc2_addr) = (address(&lab, &svc), address(&lab, &svc2));
    let services = lab.query(&svc, "services");
    assert_eq!(services[0]["address"], svc_addr.to_string(), "{services}");
    assert_eq!(services[0]["tcp"], serde_json::json!([22, 80, 5201]));

    let url = format!("http://[{svc_addr}]/{MARKER}");
    let mut page = String::new();
    let mut last = String::new();
    let reach_deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < reach_deadline {
        let (ok, out, err, _) = timed(
            &lab,
            &client_host,
            &format!("curl -sS -g --max-time 5 '{url}'"),
        );
        if ok && out.contains(&token) {
            page = out;
            break;
        }
        last = err;
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        !page.is_empty(),
        "the service was not reachable within 90 s; last curl error: {last}"
    );
    let reachable = t_service.elapsed();
    eprintln!(
        "new service reachable {:.1} s after its daemon started",
        reachable.as_secs_f64()
    );
    Some(Net {
        lab,
        relays,
        client,
        client_host,
        svc_host,
        svc,
        svc2,
        client_addr,
        svc_addr,
        svc2_addr,
        ssh_key,
        token2,
        http_log,
        http2_log,
        capture,
        page,
        t_total,
    })
}

#[test]
fn hidden_services_over_gn0() {
    let Some(net) = setup("services", true) else {
        return;
    };
    let Net {
        lab,
        client,
        client_host,
        svc_host,
        svc,
        svc2,
        client_addr,
        svc_addr,
        svc2_addr,
        ssh_key,
        token2,
        http_log,
        http2_log,
        capture,
        page,
        t_total,
        ..
    } = net;
    let mut lab = lab;
    let (capture, cap_pid) = capture.expect("capture asked for");

    // The service sees a pseudonym, not the client's own address.
    let pseudonym: Ipv6Addr = page
        .lines()
        .find_map(|l| l.strip_prefix("you are "))
        .expect("the page names the client's address")
        .parse()
        .expect("an IPv6 source address");
    assert_ne!(
        pseudonym, client_addr,
        "the service saw the client's own address"
    );
    assert_eq!(
        pseudonym.octets()[0],
        0xfd,
        "pseudonym {pseudonym} is not an overlay address"
    );

    // ssh with key auth runs a command.
    let (ok, out, err, took) = timed(
        &lab,
        &client_host,
        &ssh_cmd(&ssh_key, svc_addr, &format!("echo {MARKER}-ssh; hostname")),
    );
    assert!(
        ok && out.contains(&format!("{MARKER}-ssh")),
        "ssh failed: {out} {err}"
    );
    eprintln!(
        "ssh command round trip (new connection, key auth): {:.0} ms",
        took.as_secs_f64() * 1000.0
    );

    // A port that is listening but not exposed is refused at once.
    let (ok, _, err, took) = timed(
        &lab,
        &client_host,
        &format!("curl -sS -g --max-time 5 http://[{svc_addr}]:8081/"),
    );
    assert!(!ok, "a non-exposed port answered");
    assert!(
        took < Duration::from_secs(1),
        "refusal took {took:?}: {err}"
    );
    assert!(
        err.contains("(7)"),
        "not refused (connection refused expected): {err}"
    );
    let (ok, out, _, took) = timed(
        &lab,
        &client_host,
        &format!("python3 {NETTOOLS} udp-refused {svc_addr} 5999"),
    );
    assert!(ok, "UDP to a non-exposed port: {out}");
    eprintln!(
        "non-exposed TCP and UDP ports refused within {:.0} ms",
        took.as_secs_f64() * 1000.0
    );

    // UDP and ICMPv6 echo.
    let (ok, out, err, _) = timed(
        &lab,
        &client_host,
        &format!("python3 {NETTOOLS} udp-ask {svc_addr} 5300 {MARKER}-udp"),
    );
    assert!(
        ok && out.trim() == format!("{MARKER}-udp"),
        "UDP echo: {out} {err}"
    );
    let (ok, out, err, _) = timed(
        &lab,
        &client_host,
        &format!("ping -6 -c 5 -i 0.2 -W 3 {svc_addr}"),
    );
    assert!(ok, "ping -6 failed: {out} {err}");
    let rtt_avg: f64 = out
        .lines()
        .find(|l| l.contains("min/avg/max"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').nth(1))
        .and_then(|v| v.parse().ok())
        .expect("ping summary");

    // The second service sees another pseudonym.
    let (ok, page2, err, _) = timed(
        &lab,
        &client_host,
        &format!("curl -sS -g --max-time 30 --retry 10 --retry-all-errors --retry-delay 1 http://[{svc2_addr}]/"),
    );
    assert!(
        ok && page2.contains(&token2),
        "second service: {page2} {err}"
    );
    let pseudonym2: Ipv6Addr = page2
        .lines()
        .find_map(|l| l.strip_prefix("you are "))
        .and_then(|a| a.parse().ok())
        .expect("the second page names the client");
    assert_ne!(
        pseudonym2, pseudonym,
        "two services can link their visitors"
    );
    assert_ne!(pseudonym2, client_addr);
    for (log, want) in [(&http_log, pseudonym), (&http2_log, pseudonym2)] {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(!text.is_empty());
        for line in text.lines() {
            assert!(
                line.starts_with(&format!("{want} ")),
                "{}: {line:?} is not from the pseudonym {want}",
                log.display()
            );
            assert!(!line.contains(&client_addr.to_string()));
        }
    }

    // Nothing in the clear on the underlay.
    lab.signal(cap_pid, nix::sys::signal::Signal::SIGTERM);
    let raw = std::fs::read(&capture).unwrap();
    assert!(
        raw.len() > 20_000,
        "the capture saw only {} bytes",
        raw.len()
    );
    assert!(
        contains(&raw, &svc_host.ip.octets()),
        "the capture misses the underlay itself"
    );
    let key_of = |d: &Daemon| {
        globalnet::crypto::NodeKeys::load(&d.state_dir)
            .unwrap()
            .service
            .verifying_key()
            .to_bytes()
    };
    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("the plaintext marker".into(), MARKER.as_bytes().to_vec()),
        ("the service key".into(), key_of(&svc).to_vec()),
        ("the second service key".into(), key_of(&svc2).to_vec()),
        ("the client's service key".into(), key_of(&client).to_vec()),
    ];
    for (what, a) in [
        ("the service address", svc_addr),
        ("the second service address", svc2_addr),
        ("the client address", client_addr),
        ("the pseudonym", pseudonym),
        ("the second pseudonym", pseudonym2),
    ] {
        secrets.push((what.into(), a.octets().to_vec()));
        secrets.push((format!("{what} as text"), a.to_string().into_bytes()));
    }
    for (what, bytes) in &secrets {
        assert!(
            !contains(&raw, bytes),
            "{what} appears in the clear on the underlay"
        );
    }
    eprintln!(
        "underlay capture: {} bytes, no marker, overlay address, pseudonym or service key in the clear",
        raw.len()
    );

    // Measurements on the warm path.
    let out = lab.sh_ok(
        &client_host,
        &format!("python3 {NETTOOLS} connect-times {svc_addr} 80 30"),
    );
    let mut connects: Vec<f64> = serde_json::from_str(out.trim()).unwrap();
    connects.sort_by(f64::total_cmp);
    eprintln!(
        "new-flow TCP connect over 30 sequential connections: p50 {:.1} ms, p95 {:.1} ms (ping RTT of the warm path {rtt_avg:.1} ms)",
        percentile(&connects, 50),
        percentile(&connects, 95)
    );
    let out = lab.sh_ok(
        &client_host,
        &format!("python3 {NETTOOLS} http-requests {svc_addr} 80 100"),
    );
    let reqs: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(reqs["ok"], 100, "{reqs}");
    eprintln!(
        "100 sequential small HTTP requests (new connection each): {:.0} ms in total",
        reqs["total_ms"].as_f64().unwrap()
    );
    let out = lab.sh_ok(
        &client_host,
        &format!("iperf3 -c {svc_addr} -p 5201 -t 5 -J"),
    );
    let iperf: Value = serde_json::from_str(&out).unwrap();
    let mbps = iperf["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap()
        / 1e6;
    assert!(mbps > 0.5, "iperf3: {mbps:.2} Mbit/s");
    eprintln!("iperf3 TCP throughput over the overlay: {mbps:.1} Mbit/s");

    eprintln!(
        "services test took {:.0} s",
        t_total.elapsed().as_secs_f64()
    );
}

/// Fails today: after a relay on a flow's path dies, the flow never resumes (the ssh session stops
/// for good, iperf3 hangs); see the report in docs/benchmarks.md. Run it with `--ignored`.
#[test]
fn ssh_and_iperf3_survive_relay_deaths() {
    let Some(net) = setup("survival", false) else {
        return;
    };
    let Net {
        lab,
        relays,
        client,
        client_host,
        svc_addr,
        ssh_key,
        t_total,
        ..
    } = net;
    let mut lab = lab;
    // An ssh session and an iperf3 transfer survive relays on their paths dying.
    let lines: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let mut ssh_child = lab
        .cmd(&client_host, "sh")
        .args([
            "-c",
            // exec: the pid is ssh's own, so killing it closes the pipe the reader waits on.
            &format!(
                "exec {}",
                ssh_cmd(
                    &ssh_key,
                    svc_addr,
                    "for i in $(seq 1 30); do echo line $i; sleep 1; done",
                )
            ),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = ssh_child.stdout.take().unwrap();
    let reader = {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                lines.lock().unwrap().push((Instant::now(), l));
            }
        })
    };
    let t_transfer = Instant::now();
    let mut alive = vec![true; relays.len()];
    let mut killed = Vec::new();
    // The relay that carries the ssh session is the busiest while it is the only traffic; the
    // one that carries the iperf3 transfer is the busiest during it. Both transfers run before
    // either relay dies.
    let busiest = |lab: &Lab, alive: &[bool], window: Duration, min: u64, wait: u64| {
        let deadline = Instant::now() + Duration::from_secs(wait);
        loop {
            let before = relayed_cells(lab, &relays, alive);
            std::thread::sleep(window);
            let after = relayed_cells(lab, &relays, alive);
            let (i, delta) = after
                .iter()
                .zip(&before)
                .map(|(a, b)| a.saturating_sub(*b))
                .enumerate()
                .max_by_key(|(_, d)| *d)
                .unwrap();
            if delta >= min {
                return Some((i, delta));
            }
            if Instant::now() > deadline {
                return None;
            }
        }
    };
    std::thread::sleep(Duration::from_secs(3));
    let (ssh_relay, ssh_cells) = busiest(&lab, &alive, Duration::from_secs(2), 4, 12)
        .expect("no relay carries the ssh session");
    let t_iperf = Instant::now();
    let mut iperf_child = lab
        .cmd(&client_host, "iperf3")
        .args([
            "-c",
            &svc_addr.to_string(),
            "-p",
            "5201",
            "-t",
            "45",
            "-i",
            "0.5",
            "-J",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let Some((mut iperf_relay, iperf_cells)) =
        busiest(&lab, &alive, Duration::from_secs(1), 200, 12)
    else {
        let _ = iperf_child.kill();
        let out = iperf_child.wait_with_output().unwrap();
        panic!(
            "no relay carries the iperf3 transfer; iperf3: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let mut kill = |lab: &mut Lab, alive: &mut Vec<bool>, i: usize, why: String| {
        let d = relays[i].clone();
        let key = lab.query(&d, "status")["relay_key"]
            .as_str()
            .unwrap_or("?")
            .chars()
            .take(8)
            .collect::<String>();
        eprintln!(
            "killing {} (relay {key}; {why}) {:.1} s into the ssh session, {:.1} s into the iperf3 transfer",
            d.host.name,
            t_transfer.elapsed().as_secs_f64(),
            t_iperf.elapsed().as_secs_f64()
        );
        lab.stop(
            &d,
            nix::sys::signal::Signal::SIGKILL,
            Duration::from_secs(5),
        );
        alive[i] = false;
        killed.push((d.host.name.clone(), t_transfer.elapsed()));
    };
    kill(
        &mut lab,
        &mut alive,
        ssh_relay,
        format!("relayed {ssh_cells} cells in 2 s while only the ssh session ran"),
    );
    // Two deaths 6 s apart (issue #20): the wait here plus the 1 s the busiest relay is
    // measured over.
    std::thread::sleep(Duration::from_secs(5));
    let mut problems: Vec<String> = Vec::new();
    let second = if iperf_relay == ssh_relay {
        // Both went through one relay; the transfer should have moved: kill its new busiest relay.
        // A dead relay is noticed within ~8 s (a silent link's PINGs time out), the transfer
        // moves, and TCP's backed-off retransmission picks it up a few seconds later.
        match busiest(&lab, &alive, Duration::from_secs(1), 200, 25) {
            Some((i, cells)) => Some((
                i,
                format!(
                    "relayed {cells} cells in 1 s of the iperf3 transfer, after its first relay died"
                ),
            )),
            None => {
                problems.push(format!(
                    "the iperf3 transfer did not resume within 28 s after {} died; client sessions: {}",
                    relays[ssh_relay].host.name,
                    lab.query(&client, "sessions")
                ));
                None
            }
        }
    } else {
        Some((
            iperf_relay,
            format!("relayed {iperf_cells} cells in 1 s of the iperf3 transfer"),
        ))
    };
    if let Some((i, why)) = second {
        iperf_relay = i;
        kill(&mut lab, &mut alive, iperf_relay, why);
    }
    // Both end by themselves when they survive; a stuck one is killed after its time.
    let wait_child = |child: &mut std::process::Child, limit: Duration| {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // iperf3's JSON comes at the end: read it on the side so a full pipe cannot block it.
    let iperf_out = {
        let mut out = iperf_child.stdout.take().unwrap();
        let mut err = iperf_child.stderr.take().unwrap();
        std::thread::spawn(move || {
            use std::io::Read;
            let (mut o, mut e) = (Vec::new(), String::new());
            let _ = out.read_to_end(&mut o);
            let _ = err.read_to_string(&mut e);
            (o, e)
        })
    };
    let iperf_status = wait_child(&mut iperf_child, Duration::from_secs(50));
    let (iperf_stdout, iperf_stderr) = iperf_out.join().unwrap();
    let ssh_status = wait_child(&mut ssh_child, Duration::from_secs(40));
    reader.join().unwrap();
    let lines = lines.lock().unwrap().clone();
    let ssh_stall = lines
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or_default()
        .saturating_sub(Duration::from_secs(1));
    if !(ssh_status.is_some_and(|s| s.success()) && lines.len() == 30) {
        problems.push(format!(
            "the ssh session did not survive: {ssh_status:?}, {} of 30 lines, the last at {:?} into the session",
            lines.len(),
            lines.last().map(|l| l.0 - t_transfer)
        ));
    }
    let iperf: Value = serde_json::from_slice(&iperf_stdout).unwrap_or(Value::Null);
    let intervals: Vec<(f64, f64)> = iperf["intervals"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| {
                    (
                        i["sum"]["end"].as_f64().unwrap_or(0.0),
                        i["sum"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e6,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    // The reference rate: the median of intervals that carried data (a long stall must not
    // drag the reference to zero).
    let mut rates: Vec<f64> = intervals.iter().map(|i| i.1).filter(|r| *r > 0.0).collect();
    rates.sort_by(f64::total_cmp);
    let median = if rates.is_empty() {
        0.0
    } else {
        percentile(&rates, 50)
    };
    let (mut stall, mut run) = (0.0f64, 0.0f64);
    // Each stall: where it ended (s into the transfer) and how long it was.
    let mut stalls: Vec<(f64, f64)> = Vec::new();
    for (end, r) in &intervals {
        if *r < median * 0.05 {
            run += 0.5;
            stall = stall.max(run);
        } else {
            if run > 0.0 {
                stalls.push((*end - 0.5, run));
            }
            run = 0.0;
        }
    }
    if run > 0.0 {
        stalls.push((intervals.last().map_or(0.0, |i| i.0), run));
    }
    // Surviving means carrying on soon enough that a user would not have given up: a dead
    // relay shows in ~4 s, a new introduction takes a few more (tens of seconds when both ends
    // lost guards and the service must rebuild its intro circuits through a network that has
    // not noticed the deaths yet), and TCP retransmits on its own backed-off schedule, which
    // roughly doubles the outage. Seen: 7.5-41 s, once 63-66 s before the last fixes.
    const STALL_LIMIT_S: f64 = 60.0;
    if ssh_stall.as_secs_f64() > STALL_LIMIT_S || stall > STALL_LIMIT_S {
        problems.push(format!(
            "stalled too long: ssh {:.1} s, iperf3 {stall:.1} s (limit {STALL_LIMIT_S} s)",
            ssh_stall.as_secs_f64()
        ));
    }
    // Issue #20: a relay death that leaves the session a live circuit costs a stall of about
    // 3 s (the session finds the silent path in 2 s and moves the flows; TCP's 3 s
    // retransmission goes through). When a guard died (the client's, or the service's: every
    // circuit of that end) the client must introduce itself again, which takes longer (seen:
    // 29 s when both ends lost their guards): only the 60 s limit above applies then. The
    // client's session is as old as the ssh session unless it was introduced again.
    let sessions = lab.query(&client, "sessions");
    let age = sessions.as_array().and_then(|a| {
        a.iter()
            .find(|x| x["role"] == "client" && x["peer"] == svc_addr.to_string().as_str())
            .and_then(|x| x["age_s"].as_u64())
    });
    let reintroduced = age.is_none_or(|a| a + 2 < t_transfer.elapsed().as_secs());
    const MOVE_STALL_LIMIT_S: f64 = 20.0;
    eprintln!(
        "client session age {age:?} s, {:.0} s since the ssh session began: {}",
        t_transfer.elapsed().as_secs_f64(),
        if reintroduced {
            "introduced again (a guard died)"
        } else {
            "the same session throughout (flows moved)"
        }
    );
    if !reintroduced && (ssh_stall.as_secs_f64() > MOVE_STALL_LIMIT_S || stall > MOVE_STALL_LIMIT_S)
    {
        problems.push(format!(
            "stalled too long although the session kept a live circuit: ssh {:.1} s, iperf3 {stall:.1} s (limit {MOVE_STALL_LIMIT_S} s)",
            ssh_stall.as_secs_f64()
        ));
    }
    let tail: f64 = intervals.iter().rev().take(4).map(|i| i.1).sum();
    if !iperf_status.is_some_and(|s| s.success()) || tail <= 0.0 {
        problems.push(format!(
            "the iperf3 transfer did not survive: {iperf_status:?}, error {}, {iperf_stderr}, intervals (end s, Mbit/s) {intervals:?}",
            iperf["error"]
        ));
    }
    eprintln!(
        "relays killed: {killed:?}; ssh session: {}/30 lines, longest stall {:.1} s; iperf3: {median:.2} Mbit/s median per 0.5 s while moving, longest stall {stall:.1} s",
        lines.len(),
        ssh_stall.as_secs_f64(),
    );
    // The figure of issue #20 (goal: every stall <= 5 s in a release build with end-to-end
    // dead-path detection; a stall of one 0.5 s interval is TCP's own first retransmission).
    eprintln!(
        "STALLS iperf3 (ended s into the transfer, length s): {}; longest {stall:.1} s; ssh longest {:.1} s; build {}",
        stalls
            .iter()
            .map(|(e, l)| format!("{l:.1}@{e:.1}"))
            .collect::<Vec<_>>()
            .join(" "),
        ssh_stall.as_secs_f64(),
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    eprintln!(
        "iperf3 Mbit/s per 0.5 s: {}",
        intervals
            .iter()
            .map(|i| format!("{:.1}", i.1))
            .collect::<Vec<_>>()
            .join(" ")
    );
    eprintln!(
        "survival test took {:.0} s",
        t_total.elapsed().as_secs_f64()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn demo(args: &[&str]) -> (std::process::Output, Duration) {
    let t = Instant::now();
    let out = Command::new(globalnet_bin())
        .arg("demo")
        .args(args)
        .output()
        .unwrap();
    (out, t.elapsed())
}

fn demo_leftovers() -> (usize, usize) {
    let ns = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .lines()
    .filter(|l| l.starts_with("gndemo-"))
    .count();
    let procs = String::from_utf8_lossy(
        &Command::new("pgrep")
            .args(["-f", "globalnet-demo/"])
            .output()
            .unwrap()
            .stdout,
    )
    .lines()
    .count();
    (ns, procs)
}

#[test]
fn demo_fetches_the_token_and_leaves_nothing() {
    if !crate::harness::can_run() {
        return;
    }
    let _one = DEMO_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let (out, took) = demo(&["--once", "--timeout", "90"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed ({}):\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("fetched and checked"), "{text}");
    assert!(text.contains("ip netns exec gndemo-client curl"), "{text}");
    assert_eq!(
        demo_leftovers(),
        (0, 0),
        "the demo left namespaces or processes"
    );
    eprintln!(
        "globalnet demo --once took {:.1} s:\n{text}",
        took.as_secs_f64()
    );
}

#[test]
fn demo_tears_down_on_failure_interrupt_and_after_a_kill() {
    if !crate::harness::can_run() {
        return;
    }
    let _one = DEMO_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    // Failure: the network cannot form within 0 s.
    let (out, _) = demo(&["--once", "--timeout", "0", "--relays", "3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("did not form"), "{err}");
    assert_eq!(demo_leftovers(), (0, 0), "left after a failure");

    // Ctrl-C (SIGINT to the demo alone) while the network forms.
    let start_and_wait = || {
        let child = Command::new(globalnet_bin())
            .args(["demo", "--relays", "3"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while demo_leftovers().1 < 5 {
            assert!(
                Instant::now() < deadline,
                "the demo did not start its daemons"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        child
    };
    let child = start_and_wait();
    // One demo at a time: a second one refuses and leaves the first alone.
    let (out, _) = demo(&["--once", "--relays", "3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("another demo is running"), "{err}");
    assert!(
        demo_leftovers().1 >= 5,
        "the second demo disturbed the first"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tearing down"), "{text}");
    assert_eq!(demo_leftovers(), (0, 0), "left after Ctrl-C");

    // Killed outright: the next demo removes what is left.
    let mut child = start_and_wait();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_ne!(
        demo_leftovers().0,
        0,
        "a killed demo should leave its namespaces"
    );
    let (out, _) = demo(&["--once", "--timeout", "0", "--relays", "3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("left by an earlier demo"), "{text}");
    assert_eq!(
        demo_leftovers(),
        (0, 0),
        "left after a killed demo and a new one"
    );
}
