//! Issue #9/#20 item 5 with real applications: an ssh session and an iperf3 transfer through a
//! hidden service survive relay deaths on their path (the network of `services::setup`).

use std::io::BufRead;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::Lab;

use crate::services::*;

/// Two busy relays die 6 s apart under an ssh session and an iperf3 transfer; both must carry on
/// with every stall within the limits below. Figures: docs/benchmarks.md "Relay deaths under
/// live flows".
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
            "--get-server-output",
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
    let _ = std::fs::write(lab.dir.join("iperf3-client.json"), &iperf_stdout);
    let iperf: Value = serde_json::from_slice(&iperf_stdout).unwrap_or(Value::Null);
    let per_interval = |v: &Value| -> Vec<(f64, f64)> {
        v["intervals"]
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
            .unwrap_or_default()
    };
    // Stalls are what the receiver saw. The sender's intervals count whole 128 KB writes into
    // its socket buffer: at debug-build rates (~1-2 Mbit/s, one write per 0.5-1 s) they read
    // 0 for one to four intervals while data flows, and they lag the path by the buffer. The
    // receiver's come from the server (`--get-server-output`); only when iperf3 failed before
    // exchanging results are they missing, and then the sender's stand in.
    let sent = per_interval(&iperf);
    let received = per_interval(&iperf["server_output_json"]);
    let intervals = if received.is_empty() {
        sent.clone()
    } else {
        received.clone()
    };
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
    // The transfer resumed: data reached the service in the last 2 s before it ended (by time,
    // not by count: the receiver's last interval is the short remainder after the sender's
    // 45 s). A third stall at the end fails here even when it is shorter than the limits.
    let last_end = intervals.last().map_or(0.0, |i| i.0);
    let tail: f64 = intervals
        .iter()
        .filter(|i| i.0 > last_end - 2.0)
        .map(|i| i.1)
        .sum();
    if !iperf_status.is_some_and(|s| s.success()) || received.is_empty() || tail <= 0.0 {
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
    let rates = |v: &[(f64, f64)]| {
        v.iter()
            .map(|i| format!("{:.1}", i.1))
            .collect::<Vec<_>>()
            .join(" ")
    };
    eprintln!("iperf3 Mbit/s per 0.5 s received: {}", rates(&received));
    eprintln!("iperf3 Mbit/s per 0.5 s sent: {}", rates(&sent));
    eprintln!(
        "survival test took {:.0} s",
        t_total.elapsed().as_secs_f64()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
