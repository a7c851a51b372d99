//! `globalnet demo`: a local network in network namespaces that reaches a hidden service.
//!
//! The demo builds a switched underlay (a hub namespace with a bridge, one namespace per node
//! attached by a veth pair, 198.18.0.0/15 addresses, no route out), starts real daemons with the
//! default config except the settings a one-subnet test network needs, starts a small HTTP server
//! behind the service's `[expose]`d port, and fetches a random token from the client namespace
//! with `curl` over the service's fd00::/8 address. Then it prints the path's shape, the timings
//! and the commands to try by hand, and waits for Ctrl-C (or exits at once with `--once`).
//!
//! Everything it creates is removed on exit, on Ctrl-C, on SIGTERM and on failure; a demo that
//! was killed outright is cleaned up by the next one (fixed namespace names with the prefix
//! [`NS_PREFIX`], and a pid file in the run directory). The namespaces, children, signals and
//! teardown are the `globalnet-lab` crate's, which the netns tests' harness uses too; this file
//! is the demo itself: which nodes, their configs, the HTTP server, the checks and the report.

// Reading a `serde_json::Value` by key returns Null for a missing key or a non-object; it cannot
// panic.
#![allow(clippy::indexing_slicing)]

use crate::control::proto::{ServiceAnswer, StatusAnswer};
use crate::control::{self, Cmd};
use clap::{Args, Subcommand};
use globalnet_lab::signals::{self, OnSignal};
use globalnet_lab::Abandoned;
use serde_json::Value;
use std::io::{BufRead, Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Prefix of every namespace the demo creates (the test harness uses `gnt-`).
pub const NS_PREFIX: &str = "gndemo-";
/// TCP port of the demo's HTTP service.
pub const HTTP_PORT: u16 = 8080;
/// UDP port every demo node listens on.
const UDP_PORT: u16 = 7412;

const INTERRUPTED: &str = "interrupted";

/// Arguments of `globalnet demo`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DemoArgs {
    /// Relays in the demo network besides the service and the client (3-40)
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u8).range(3..=40))]
    relays: u8,
    /// Exit as soon as the token was fetched and checked, instead of waiting for Ctrl-C
    #[arg(long)]
    once: bool,
    /// Give up when the network has not formed or the service is not reachable within this many seconds
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    timeout: u64,
    /// Keep the run directory (configs, keys, logs) after the demo ends
    #[arg(long)]
    keep: bool,
    #[command(subcommand)]
    internal: Option<Internal>,
}

#[derive(Subcommand, Debug)]
enum Internal {
    /// The demo's HTTP server (run by the demo inside the service's namespace)
    #[command(hide = true)]
    Serve {
        /// TCP port to listen on (all addresses)
        #[arg(long)]
        port: u16,
        /// The token every page carries
        #[arg(long)]
        token: String,
        /// Append one line per request (client address, request line) to this file
        #[arg(long)]
        log: Option<PathBuf>,
    },
}

/// Runs `globalnet demo` (or its internal HTTP server).
pub fn run(args: DemoArgs) -> Result<(), String> {
    if let Some(Internal::Serve { port, token, log }) = args.internal {
        return serve(port, &token, log.as_deref());
    }
    preflight()?;
    signals::handle_signals(OnSignal::Stop)?;
    let mut net = Net::create(&args)?;
    let result = net.run(&args);
    match &result {
        Ok(()) => net.failed = false,
        Err(e) if e == INTERRUPTED => net.failed = false,
        Err(_) => net.failed = true,
    }
    println!("\ntearing down the demo network ...");
    drop(net);
    match result {
        Err(e) if e == INTERRUPTED => {
            Err("interrupted before the demo finished; everything removed".into())
        }
        Ok(()) => {
            println!("done: namespaces, links and processes removed");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn preflight() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err(
            "the demo needs root: it creates network namespaces, TUN devices and routes.\n  hint: sudo target/release/globalnet demo"
                .into(),
        );
    }
    for (tool, package) in [("ip", "iproute2"), ("curl", "curl")] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Err(format!(
                "`{tool}` is missing; the demo needs it.\n  hint: sudo apt-get install {package}  (or sudo scripts/install-deps)"
            ));
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        return Err("/dev/net/tun is missing: TUN devices are not available here".into());
    }
    Ok(())
}

fn stopped() -> Result<(), String> {
    if signals::stop_requested() {
        Err(INTERRUPTED.into())
    } else {
        Ok(())
    }
}

/// Sleeps `d`, waking early (with an error) when the demo is interrupted.
fn nap(d: Duration) -> Result<(), String> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        stopped()?;
        std::thread::sleep(Duration::from_millis(25).min(end - Instant::now()));
    }
    stopped()
}

/// Runs a command to completion (all of its output), killing it after `timeout` or when the
/// demo is interrupted.
fn run_cmd(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    globalnet_lab::run_for(cmd, timeout, signals::stop_requested).map_err(|e| match e {
        Abandoned::Stopped => INTERRUPTED.to_string(),
        Abandoned::Failed(e) => e.into(),
    })
}

/// Runs a command and fails with its output when it fails.
fn must(cmd: &mut Command) -> Result<Output, String> {
    let what = format!("{cmd:?}");
    let out = run_cmd(cmd, Duration::from_secs(20))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn run_dir() -> PathBuf {
    std::env::temp_dir().join("globalnet-demo")
}

/// Whether `pid` is a live `globalnet demo` (not a reused pid).
fn is_live_demo(pid: i32) -> bool {
    if pid <= 0 || pid == std::process::id() as i32 {
        return false;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
            args.iter().any(|a| *a == b"demo") && !args.iter().any(|a| *a == b"serve")
        })
        .unwrap_or(false)
}

impl Net {
    fn run(&mut self, args: &DemoArgs) -> Result<(), String> {
        let t0 = Instant::now();
        let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
        let timeout = Duration::from_secs(args.timeout);
        let ssh = SshSetup::available();
        println!(
            "globalnet demo: {} relays, a hidden service and a client, each in a network namespace ({NS_PREFIX}*)",
            args.relays
        );

        // The underlay.
        let mut relays = Vec::new();
        for i in 1..=args.relays {
            relays.push(self.add_node(&format!("relay{i}"))?);
        }
        let service = self.add_node("service")?;
        let client = self.add_node("client")?;
        let boot = relays.first().map(|r| r.host.ip);

        // The daemons.
        let mut expose = vec![HTTP_PORT];
        if ssh.is_some() {
            expose.push(22);
        }
        let mut daemons = Vec::new();
        for node in relays.iter().chain([&service, &client]) {
            let bootstrap = if Some(node.host.ip) == boot {
                None
            } else {
                boot
            };
            let ports: &[u16] = if node.host.name == "service" {
                &expose
            } else {
                &[]
            };
            let cfg = self.write_config(node, bootstrap, ports);
            let mut c = node.host.cmd(&exe);
            c.args(["daemon", "--config"]).arg(&cfg);
            let pid = self.spawn(c, &node.log, format!("daemon on {}", node.host.name))?;
            daemons.push((node.clone(), pid));
        }
        let mut statuses = Vec::new();
        for (node, pid) in &daemons {
            statuses.push(self.wait_ready(node, *pid)?);
        }
        let addr_of = |i: usize| -> String {
            statuses
                .get(i)
                .map(|s: &StatusAnswer| s.address.clone())
                .unwrap_or_default()
        };
        let (service_addr, client_addr) = (addr_of(relays.len()), addr_of(relays.len() + 1));
        if service_addr.is_empty() || client_addr.is_empty() {
            return Err("a daemon reported no overlay address".into());
        }
        let names: Vec<(String, String, Ipv4Addr)> = daemons
            .iter()
            .zip(&statuses)
            .map(|((n, _), s)| (n.host.name.clone(), s.relay_key.clone(), n.host.ip))
            .collect();
        println!(
            "  {} daemons up after {:.1} s; the service is {service_addr}, the client is {client_addr}",
            daemons.len(),
            t0.elapsed().as_secs_f64()
        );

        // The applications behind the service's exposed ports.
        let token = random_token();
        let http_log = service.dir.join("http.log");
        let mut serve = service.host.cmd(&exe);
        serve
            .args(["demo", "serve", "--port", &HTTP_PORT.to_string(), "--token"])
            .arg(&token)
            .arg("--log")
            .arg(&http_log);
        self.spawn(
            serve,
            &service.dir.join("http-server.out"),
            "HTTP server".into(),
        )?;
        let ssh_hint = match &ssh {
            Some(s) => match s.start(self, &service) {
                Ok(hint) => Some(hint),
                Err(e) => {
                    println!("  (no ssh in this demo: {e})");
                    None
                }
            },
            None => None,
        };

        // Links and circuits form.
        let formed = self.wait_formed(&daemons, &service, timeout)?;
        println!("  network formed after {:.1} s", formed.as_secs_f64());

        // The client reaches the service.
        let url = format!("http://[{service_addr}]:{HTTP_PORT}/");
        let t_reach = Instant::now();
        let mut attempts = 0u32;
        let mut last_err = String::new();
        let page = loop {
            stopped()?;
            if t_reach.elapsed() > timeout {
                self.progress_done();
                return Err(format!(
                    "the service was not reachable within {timeout:?} ({attempts} attempts); last curl error: {last_err}\n  the client's daemon says: {}\n  the service's descriptor: {}\n  logs: {} (GLOBALNET_LOG=debug gives the daemons' session decisions)",
                    overlay_ping_error(&exe, &client, &service_addr),
                    control::request(&service.control, Cmd::Services)
                        .map(|v| v[0].to_string())
                        .unwrap_or_else(|e| e.to_string()),
                    self.dir().display()
                ));
            }
            attempts += 1;
            let published = services(&service.control)
                .first()
                .is_some_and(|s| s.published);
            let key = format!(
                "{published}{}",
                last_err.split(':').take(2).collect::<String>()
            );
            self.progress(
                &key,
                &format!(
                    "  reaching the service (descriptor {}): curl attempt {attempts} ({:.0} s){}",
                    if published {
                        "published"
                    } else {
                        "not published yet"
                    },
                    t_reach.elapsed().as_secs_f64(),
                    if last_err.is_empty() {
                        String::new()
                    } else {
                        format!(" — last: {last_err}")
                    }
                ),
            );
            let out = run_cmd(
                client
                    .host
                    .cmd("curl")
                    .args(["-sS", "-g", "--max-time", "8", &url]),
                Duration::from_secs(10),
            )?;
            let body = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() && body.contains(&token) {
                break body;
            }
            last_err = if out.status.success() {
                format!("unexpected page: {}", body.trim())
            } else {
                String::from_utf8_lossy(&out.stderr).trim().to_string()
            };
            nap(Duration::from_millis(500))?;
        };
        let reachable = t_reach.elapsed();
        self.progress_done();
        println!(
            "  token {token} fetched and checked: the service was reachable {:.1} s after the network formed",
            reachable.as_secs_f64()
        );
        let seen_as = page
            .lines()
            .find_map(|l| l.strip_prefix("you are "))
            .map(str::to_string)
            .unwrap_or_default();

        // A fresh connection on the warm network.
        let timing = run_cmd(
            client.host.cmd("curl").args([
                "-sS",
                "-g",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{time_connect} %{time_total}",
                &url,
            ]),
            Duration::from_secs(12),
        )?;
        let fetch = String::from_utf8_lossy(&timing.stdout).into_owned();
        let mut f = fetch
            .split_whitespace()
            .filter_map(|x| x.parse::<f64>().ok());
        let (connect, total) = (f.next(), f.next());

        // The overlay round trip, end to end (needs no open port on the service).
        let ping = run_cmd(
            Command::new(&exe)
                .args([
                    "ping",
                    "--json",
                    "-c",
                    "3",
                    "-i",
                    "0.2",
                    &service_addr,
                    "--control",
                ])
                .arg(&client.control),
            Duration::from_secs(60),
        )?;
        let rtts: Vec<f64> = serde_json::from_slice::<Value>(&ping.stdout)
            .ok()
            .and_then(|v| {
                v["rtt_ms"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_f64).collect())
            })
            .unwrap_or_default();

        // The path's shape.
        println!("\nThe path (ready circuits of each end; a flow runs on one circuit of each):");
        let mut flow_hops = Vec::new();
        for (who, node) in [("client", &client), ("service", &service)] {
            let circuits = control::request(&node.control, Cmd::Circuits)
                .map_err(|e| format!("{who}: {e}"))?;
            let (line, hops) = describe_circuits(&circuits, &names);
            println!("  {who:<8} {line}");
            flow_hops.push(hops);
        }
        if let [Some(c), Some(s)] = flow_hops[..] {
            println!(
                "  shape    client ─{c} hops─▶ rendezvous relay ◀─{s} hops─ service: {} relays in all, none sees both ends",
                c + s - 1
            );
        }
        println!("\nTimings:");
        println!(
            "  network formed (links, pool circuits, service published) {:6.1} s",
            formed.as_secs_f64()
        );
        println!(
            "  service reachable (first successful fetch)               {:6.1} s after that",
            reachable.as_secs_f64()
        );
        match (connect, total) {
            (Some(c), Some(t)) => println!(
                "  a new connection on the warm network: connect {:.0} ms, fetch {:.0} ms",
                c * 1000.0,
                t * 1000.0
            ),
            _ => println!(
                "  a new connection on the warm network: failed ({})",
                String::from_utf8_lossy(&timing.stderr).trim()
            ),
        }
        if rtts.is_empty() {
            println!(
                "  overlay round trip (globalnet ping): no answer ({})",
                String::from_utf8_lossy(&ping.stderr)
                    .lines()
                    .next()
                    .unwrap_or("")
            );
        } else {
            let avg = rtts.iter().sum::<f64>() / rtts.len() as f64;
            println!(
                "  overlay round trip (globalnet ping, {} pings): {avg:.1} ms on average",
                rtts.len()
            );
        }
        if !seen_as.is_empty() {
            println!(
                "\nThe service saw the client as {seen_as} — a pseudonym for this service only; the client's own address is {client_addr}."
            );
        }

        println!("\nTry it by hand:");
        println!("  sudo ip netns exec {} curl {url}", client.host.ns);
        println!(
            "  sudo ip netns exec {} ping -6 -c 3 {service_addr}",
            client.host.ns
        );
        println!(
            "  sudo {} ping {service_addr} --control {}",
            exe.display(),
            client.control.display()
        );
        println!(
            "  sudo {} circuits --control {}",
            exe.display(),
            client.control.display()
        );
        if let Some(h) = &ssh_hint {
            println!(
                "  {}",
                h.replace("{ns}", &client.host.ns)
                    .replace("{addr}", &service_addr)
            );
        }
        println!(
            "  sudo ip netns exec {} curl -g http://[{service_addr}]:9999/   # not exposed: refused at once",
            client.host.ns
        );
        if args.once {
            return Ok(());
        }
        println!("  configs, keys and logs: {}", self.dir().display());
        println!("\nThe network stays up until Ctrl-C.");
        let mut gone: Vec<u32> = Vec::new();
        loop {
            if nap(Duration::from_secs(1)).is_err() {
                // Ctrl-C is how this demo ends.
                return Ok(());
            }
            // Someone trying things by hand may kill a relay: say so, and carry on while the
            // service and the client live.
            for (node, pid) in &daemons {
                if gone.contains(pid) {
                    continue;
                }
                if let Some(s) = self.child_exited(*pid) {
                    gone.push(*pid);
                    let log = Self::log_tail(&node.log);
                    let last = log.lines().last().unwrap_or("");
                    if node.host.name == "service" || node.host.name == "client" {
                        return Err(format!(
                            "the daemon on {} exited ({s}); its log ends:\n{log}",
                            node.host.name
                        ));
                    }
                    println!(
                        "the daemon on {} exited ({s}); the network carries on without it. Its last log line: {last}",
                        node.host.name
                    );
                }
            }
        }
    }
}

mod net;
mod report;
mod serve;
mod ssh;

use net::{Net, Node};
use report::{describe_circuits, overlay_ping_error, random_token, services};
use serve::serve;
use ssh::SshSetup;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circuits_are_described_by_demo_names() {
        let names = vec![
            (
                "relay1".to_string(),
                "aa11".to_string(),
                Ipv4Addr::new(198, 18, 0, 1),
            ),
            (
                "relay2".to_string(),
                "bb22".to_string(),
                Ipv4Addr::new(198, 18, 0, 2),
            ),
        ];
        let c = serde_json::json!([
            {"purpose": "pool", "hops": 3, "state": "ready"},
            {"purpose": "flow", "hops": 3, "state": "ready", "path": ["aa11", "198.18.0.2:7412", {"relay_key": "cc"}]},
            {"purpose": "pool", "hops": 3, "state": "building"},
            {"purpose": "intro", "hops": 2, "state": "ready"},
            {"purpose": "intro", "hops": 4, "state": "ready"},
            {"purpose": "flow", "hops": 3, "state": "ready"}
        ]);
        let (line, hops) = describe_circuits(&c, &names);
        assert_eq!(
            line,
            "2 flow (3 hops), 2 intro (2/4 hops), 1 pool (3 hops); a flow goes through relay1 → relay2 → cc"
        );
        assert_eq!(hops, Some(3));
        let (line, hops) = describe_circuits(&serde_json::json!([]), &names);
        assert_eq!((line.as_str(), hops), ("no circuits ready", None));
    }

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
