//! A reusable harness for tests with real daemons in network namespaces.
//!
//! A [`Lab`] is one switched underlay: a hub namespace holding a bridge, and one namespace per
//! host attached to it by a veth pair, with an address in 198.18.0.0/15 and no route anywhere
//! else. Daemons run inside the hosts with generated configs; their logs, configs and state live
//! in a run directory that is kept (and printed) when a test fails and removed when it passes.
//!
//! Teardown always happens: on drop (also while a test panics), on Ctrl-C or SIGTERM (a signal
//! handler kills every child and deletes every namespace of this process), and for namespaces
//! left by a process that was killed outright (the next lab removes namespaces whose owning pid
//! is gone).
//!
//! Loss and delay: this kernel has no netem, so loss is an nftables rule in the host's output
//! chain (`numgen random mod 100 < N drop`) and delay is `gn-delayer` holding the host's outgoing
//! packets from an NFQUEUE (DESIGN.md section 10).
//!
//! The namespaces, the switch, children and teardown are the `globalnet-lab` crate's, which
//! `globalnet demo` uses too; this file adds what only tests need (daemons with generated
//! configs, NAT boxes, delay, the control queries) and turns the lab's errors into panics.
#![allow(dead_code)]

use globalnet_lab::signals::{self, OnSignal};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use globalnet_lab::Host;

/// Prefix of every namespace this harness creates.
pub const NS_PREFIX: &str = "gnt-";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Whether netns tests can run here. Without root they are skipped, unless
/// `GN_NETNS_REQUIRED=1` (CI and the README's test command set it), which turns that into a failure.
pub fn can_run() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("GN_NETNS_REQUIRED").as_deref() == Ok("1") {
        panic!("netns tests need root (GN_NETNS_REQUIRED=1 is set)");
    }
    eprintln!("skipping: netns tests need root");
    false
}

/// The `globalnet` binary under test.
pub fn globalnet_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_globalnet"))
}

/// A workspace binary built beside `globalnet` (e.g. `gn-delayer`).
pub fn sibling_bin(name: &str) -> PathBuf {
    let p = globalnet_bin().with_file_name(name);
    assert!(
        p.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace`)",
        p.display()
    );
    p
}

/// An example binary of the main crate (built by `cargo build --all-targets`).
pub fn example_bin(name: &str) -> PathBuf {
    let p = globalnet_bin().with_file_name("examples").join(name);
    assert!(
        p.exists(),
        "{} is missing: build the examples first (`cargo build --workspace --all-targets`)",
        p.display()
    );
    p
}

/// Runs a command and returns its output (whatever the exit status); panics if it cannot start.
fn run(cmd: &mut Command) -> Output {
    globalnet_lab::run(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs a command and panics with its output if it fails.
pub fn must(cmd: &mut Command) -> Output {
    globalnet_lab::must(cmd).unwrap_or_else(|e| panic!("{e}"))
}

fn ip(args: &[&str]) {
    globalnet_lab::ip(args).unwrap_or_else(|e| panic!("{e}"))
}

/// A lab step that must work, or the test cannot go on.
fn ok<T>(r: globalnet_lab::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// Removes namespaces left behind by harness processes that no longer exist.
fn remove_stale_namespaces() {
    for name in globalnet_lab::namespaces(NS_PREFIX) {
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            globalnet_lab::delete_namespace(&name);
        }
    }
}

/// The `listen` value of the shipped `config.example.toml` (what every package installs), as
/// TOML, e.g. `["0.0.0.0:7412"]`: tests listen as users do unless a test is about another value.
pub fn shipped_listen() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let text = std::fs::read_to_string(&path).expect("config.example.toml");
    let value = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("listen").map(str::trim))
        .and_then(|rest| rest.strip_prefix('='))
        .map(|v| v.split('#').next().unwrap_or("").trim().to_string())
        .expect("config.example.toml has a `listen` line");
    assert!(value.contains(":7412"), "tests assume port 7412: {value}");
    value
}

/// A daemon started by [`Lab::start_daemon`].
#[derive(Debug, Clone)]
pub struct Daemon {
    /// Its pid.
    pub pid: u32,
    /// The host it runs on.
    pub host: Host,
    /// Its config file.
    pub config: PathBuf,
    /// Its state directory.
    pub state_dir: PathBuf,
    /// Its control socket.
    pub control: PathBuf,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
}

/// A switched underlay of namespaces.
pub struct Lab {
    lab: globalnet_lab::Lab,
    /// Run directory: configs, state, logs.
    pub dir: PathBuf,
}

impl Lab {
    /// A new lab named after the test; `None` when netns tests cannot run here.
    pub fn new(test: &str) -> Option<Lab> {
        if !can_run() {
            return None;
        }
        ok(signals::handle_signals(OnSignal::TeardownAndExit));
        remove_stale_namespaces();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{NS_PREFIX}{}-{n}-", std::process::id());
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/netns-runs")
            .join(format!("{test}-{}-{n}", std::process::id()));
        let lab = ok(globalnet_lab::Lab::new(&tag, dir.clone()));
        Some(Lab { lab, dir })
    }

    /// Adds a host on the switch: `198.18.0.<k+1>/15` for the k-th host.
    pub fn add_host(&mut self, name: &str) -> Host {
        ok(self.lab.add_host(name))
    }

    /// Gives `host` its own `/etc/hosts` (`ip netns exec` mounts `/etc/netns/<ns>/hosts` over
    /// it), so its programs resolve the lab's names without any outside DNS. Removed with the
    /// namespace.
    pub fn set_hosts_file(&self, host: &Host, text: &str) {
        ok(self.lab.set_hosts_file(host, text))
    }

    /// Makes `host`'s programs resolve through `resolv_conf` alone (its own empty `/etc/hosts` and
    /// `/etc/netns/<ns>/resolv.conf`, both mounted by `ip netns exec`; removed with the namespace).
    pub fn set_resolver(&self, host: &Host, resolv_conf: &str) {
        self.set_hosts_file(host, "");
        let path = Path::new("/etc/netns").join(&host.ns).join("resolv.conf");
        std::fs::write(&path, resolv_conf)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// A web server (python3 http.server on `[::]:port`) in `host` serving `token` as
    /// `/token` from `<run dir>/<name>-www`. The caller keeps the child and kills it.
    pub fn serve_token(
        &self,
        host: &Host,
        name: &str,
        port: u16,
        token: &str,
    ) -> std::process::Child {
        let dir = self.dir.join(format!("{name}-www"));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        std::fs::write(dir.join("token"), token)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        self.cmd(host, "python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "::",
                "--directory",
            ])
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("python3 http.server: {e}"))
    }

    /// Adds another underlay address to `host` (a multi-homed host).
    pub fn add_address(&self, host: &Host, addr: Ipv4Addr) {
        ok(self.lab.add_address(host, addr))
    }

    /// A command that runs inside `host`.
    pub fn cmd(&self, host: &Host, program: impl AsRef<std::ffi::OsStr>) -> Command {
        host.cmd(program)
    }

    /// Runs a shell command inside `host` and returns its output (whatever the exit status).
    pub fn sh(&self, host: &Host, script: &str) -> Output {
        run(self.cmd(host, "sh").args(["-c", script]))
    }

    /// Like [`Lab::sh`] but panics when the command fails; returns stdout.
    pub fn sh_ok(&self, host: &Host, script: &str) -> String {
        let out = must(self.cmd(host, "sh").args(["-c", script]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a bash script inside `host` (for `/dev/udp` and friends); panics when it fails.
    pub fn bash_ok(&self, host: &Host, script: &str) -> String {
        let out = must(self.cmd(host, "bash").args(["-c", script]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Drops `percent` of the host's outgoing packets (nftables, output hook).
    pub fn set_loss(&self, host: &Host, percent: u32) {
        ok(self.lab.set_loss(host, percent))
    }

    /// Delays every outgoing packet of the host by `ms` milliseconds (gn-delayer on an NFQUEUE).
    pub fn set_delay(&mut self, host: &Host, ms: u32) {
        let queue = 7;
        let log = self.dir.join(format!("{}-delayer.log", host.name));
        let logf = std::fs::File::create(&log).expect("delayer log");
        let mut child = self
            .cmd(host, sibling_bin("gn-delayer"))
            .args(["--queue", &queue.to_string(), "--delay-ms", &ms.to_string()])
            .stdout(Stdio::piped())
            .stderr(logf)
            .spawn()
            .expect("start gn-delayer");
        // Wait for its "ready" line before steering packets into the queue.
        let stdout = child.stdout.take().expect("delayer stdout");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("delayer ready line");
        assert!(
            line.contains("ready"),
            "gn-delayer did not get ready: {line:?}"
        );
        self.track(child, format!("{}-delayer", host.name));
        for tool in ["iptables", "ip6tables"] {
            self.sh_ok(
                host,
                &format!("{tool} -A OUTPUT -j NFQUEUE --queue-num {queue} --queue-bypass"),
            );
        }
    }

    fn track(&mut self, child: std::process::Child, what: String) {
        self.lab.track(child, &what);
    }

    /// Writes a daemon config for `host`: state and control socket inside the run directory,
    /// listening on the host's underlay address; `extra` is appended (TOML).
    pub fn write_config(&self, host: &Host, extra: &str) -> PathBuf {
        let state = self.dir.join(format!("{}-state", host.name));
        let control = self.dir.join(format!("{}-run/control.sock", host.name));
        let path = self.dir.join(format!("{}.toml", host.name));
        let text = format!(
            "state_dir = \"{}\"\ncontrol_socket = \"{}\"\n{extra}\n",
            state.display(),
            control.display()
        );
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// Starts `globalnet daemon --config <config>` inside `host`.
    pub fn start_daemon(&mut self, host: &Host, config: &Path) -> Daemon {
        self.start_daemon_env(host, config, &[])
    }

    /// [`Lab::start_daemon`] with extra environment variables (test hooks such as
    /// `GLOBALNET_TEST_CIRCUIT_MAX_AGE_MS`), for this daemon only.
    pub fn start_daemon_env(&mut self, host: &Host, config: &Path, env: &[(&str, &str)]) -> Daemon {
        let cfg_text = std::fs::read_to_string(config).expect("config");
        let field = |key: &str| -> PathBuf {
            cfg_text
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once('=')?;
                    (k.trim() == key).then(|| PathBuf::from(v.trim().trim_matches('"')))
                })
                .expect("config written by write_config")
        };
        let (state_dir, control) = (field("state_dir"), field("control_socket"));
        let log = self.dir.join(format!("{}-daemon.log", host.name));
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("daemon log");
        let child = self
            .cmd(host, globalnet_bin())
            .args(["daemon", "--config"])
            .arg(config)
            // GN_NETNS_LOG overrides the daemons' filter when a run needs a closer look (for
            // example `debug,globalnet::session=trace`).
            .env(
                "GLOBALNET_LOG",
                std::env::var("GN_NETNS_LOG").unwrap_or_else(|_| "debug".into()),
            )
            .envs(env.iter().copied())
            .stdout(logf.try_clone().expect("log"))
            .stderr(logf)
            .spawn()
            .expect("start daemon");
        let pid = child.id();
        self.track(child, format!("{}-daemon", host.name));
        Daemon {
            pid,
            host: host.clone(),
            config: config.to_path_buf(),
            state_dir,
            control,
            log,
        }
    }

    /// The hub namespace (the switch) as a host, e.g. to capture the underlay's traffic.
    pub fn hub(&self) -> Host {
        self.lab.hub()
    }

    /// Starts a long-running program inside `host`, stopped with the lab; its output goes to
    /// `<run dir>/<name>.log`. With `ready`, waits until the program prints a line containing it
    /// (panicking with the log if it exits first). Returns its pid.
    pub fn spawn(
        &mut self,
        host: &Host,
        name: &str,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
        ready: Option<&str>,
    ) -> u32 {
        let log = self.dir.join(format!("{name}.log"));
        let logf = std::fs::File::create(&log).expect("log file");
        let mut cmd = self.cmd(host, program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stderr(logf.try_clone().expect("log"));
        if ready.is_some() {
            cmd.stdout(Stdio::piped());
        } else {
            cmd.stdout(logf.try_clone().expect("log"));
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        if let Some(word) = ready {
            let stdout = child.stdout.take().expect("stdout");
            let mut reader = std::io::BufReader::new(stdout);
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut reader, &mut line);
            assert!(
                line.contains(word),
                "{name} did not get ready (first line {line:?}); log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            // Keep draining, or the program dies of SIGPIPE on its next line.
            let mut logf = logf;
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut reader, &mut logf);
            });
        }
        let pid = child.id();
        self.track(child, name.to_string());
        pid
    }

    /// Sends `signal` to a process started by this lab and waits up to 5 s for it to exit.
    pub fn signal(&mut self, pid: u32, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match self.child_mut(pid).map(|c| c.try_wait()) {
                Some(Ok(None)) => std::thread::sleep(Duration::from_millis(20)),
                _ => return,
            }
        }
        panic!("process {pid} did not exit within 5 s after {signal:?}");
    }

    /// Waits until the daemon answers `status` on its control socket; returns the status JSON.
    pub fn wait_ready(&mut self, d: &Daemon, timeout: Duration) -> serde_json::Value {
        let mut last = String::new();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait(d) {
                panic!(
                    "daemon on {} exited early ({status}); log:\n{}",
                    d.host.name,
                    std::fs::read_to_string(&d.log).unwrap_or_default()
                );
            }
            let out = run(Command::new(globalnet_bin())
                .args(["status", "--json", "--control"])
                .arg(&d.control));
            if out.status.success() {
                return serde_json::from_slice(&out.stdout).expect("status JSON");
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "daemon on {} not ready after {timeout:?}: {last}\nlog:\n{}",
            d.host.name,
            std::fs::read_to_string(&d.log).unwrap_or_default()
        );
    }

    /// `globalnet <args> --json --control <d's socket>`, parsed.
    pub fn query(&self, d: &Daemon, what: &str) -> serde_json::Value {
        let out = must(
            Command::new(globalnet_bin())
                .args([what, "--json", "--control"])
                .arg(&d.control),
        );
        serde_json::from_slice(&out.stdout).expect("JSON")
    }

    fn child_mut(&mut self, pid: u32) -> Option<&mut std::process::Child> {
        self.lab.child_mut(pid)
    }

    /// The daemon's exit status if it has exited.
    pub fn try_wait(&mut self, d: &Daemon) -> Option<ExitStatus> {
        self.lab.exited(d.pid)
    }

    /// Sends `signal` to the daemon and waits up to `timeout` for it to exit.
    pub fn stop(
        &mut self,
        d: &Daemon,
        signal: nix::sys::signal::Signal,
        timeout: Duration,
    ) -> ExitStatus {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid as i32), signal);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait(d) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "daemon on {} did not exit within {timeout:?} after {signal:?}",
                d.host.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's relay key, from `status`.
    pub fn relay_key(&self, d: &Daemon) -> String {
        self.query(d, "status")["relay_key"]
            .as_str()
            .expect("relay_key in status")
            .to_string()
    }

    /// Polls `cond` every 50 ms until it holds, or panics after `timeout` naming `what`.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out after {timeout:?} waiting for {what}");
    }
}

/// What a NAT box in a lab does (nftables, docs/protocol.md section 13; recipes from the
/// research notes on Tailscale's natlab).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatType {
    /// `masquerade`: endpoint-independent mapping (the port is kept when free), filtering by
    /// address and port (conntrack) — a port-restricted cone.
    PortRestricted,
    /// `masquerade` plus a set of addresses the inside host sent to, whose datagrams from any
    /// port are let in to the inside host's UDP port 7412 — an address-restricted cone.
    AddressRestricted,
    /// `masquerade random,fully-random`: a random port per flow — symmetric.
    Symmetric,
}

impl Lab {
    /// A host behind one or more NAT boxes. `nats[0]` is the box on the switch (it gets the next
    /// underlay address, like [`Lab::add_host`]); each later entry is a box inside the previous
    /// one (double NAT). Every box is a namespace with `eth0` outside and `in0` inside
    /// (198.19.<n>.1/24), forwarding on, nothing but NAT. The inside host has 198.19.<n>.2/24
    /// and a default route through its box; there is no route out of the lab. Returns the boxes
    /// (outermost first) and the inside host. All namespaces are registered for cleanup.
    pub fn add_natted_host(&mut self, name: &str, nats: &[NatType]) -> (Vec<Host>, Host) {
        assert!(!nats.is_empty(), "at least one NAT box");
        let outer = self.add_host(&format!("{name}-nat0"));
        let mut boxes = vec![outer];
        for (level, kind) in nats.iter().enumerate() {
            let nat_box = boxes.last().cloned().expect("a box");
            let n = self.lab.hosts().len();
            assert!(n < 250, "too many hosts for this addressing plan");
            let last = level + 1 == nats.len();
            let inner_name = if last {
                name.to_string()
            } else {
                format!("{name}-nat{}", level + 1)
            };
            let gw = Ipv4Addr::new(198, 19, n as u8, 1);
            let addr = Ipv4Addr::new(198, 19, n as u8, 2);
            let host = ok(self.lab.add_bare_host(&inner_name, addr));
            let ns = host.ns.clone();
            ip(&[
                "-n",
                &nat_box.ns,
                "link",
                "add",
                "in0",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &ns,
            ]);
            ip(&[
                "-n",
                &nat_box.ns,
                "addr",
                "add",
                &format!("{gw}/24"),
                "dev",
                "in0",
            ]);
            ip(&["-n", &nat_box.ns, "link", "set", "in0", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "route", "add", "default", "via", &gw.to_string()]);
            self.set_nat(&nat_box, *kind, addr);
            boxes.push(host);
        }
        let inside = boxes.pop().expect("the inside host");
        (boxes, inside)
    }

    /// Turns `nat_box` (WAN `eth0`, LAN `in0`) into a NAT of `kind` for the inside host `lan`.
    /// Like a home router it drops unsolicited UDP to itself from the WAN: a datagram the box
    /// accepts locally leaves a conntrack entry that clashes with the inside host's later flow
    /// to the same peer, and conntrack then gives that flow another port.
    fn set_nat(&self, nat_box: &Host, kind: NatType, lan: Ipv4Addr) {
        self.sh_ok(nat_box, "sysctl -qw net.ipv4.ip_forward=1");
        let masq = match kind {
            NatType::Symmetric => "masquerade random,fully-random",
            _ => "masquerade",
        };
        let mut rules = format!(
            "table ip gnnat {{\n set seen {{ type ipv4_addr; flags dynamic,timeout; timeout 120s; }}\n \
             chain post {{ type nat hook postrouting priority srcnat; policy accept; oifname \"eth0\" {masq}; }}\n \
             chain wan_in {{ type filter hook input priority 0; policy accept;\n  \
             ct state established,related accept\n  iifname \"eth0\" meta l4proto udp drop\n }}\n \
             chain filt {{ type filter hook forward priority 0; policy drop;\n  \
             ct state established,related accept\n  iifname \"in0\" oifname \"eth0\" update @seen {{ ip daddr }} accept\n"
        );
        if kind == NatType::AddressRestricted {
            // Inbound from any port of an address the inside host sent to.
            rules.push_str(&format!(
                "  iifname \"eth0\" oifname \"in0\" ip daddr {lan} udp dport 7412 ip saddr @seen accept\n }}\n \
                 chain pre {{ type nat hook prerouting priority dstnat; policy accept;\n  \
                 iifname \"eth0\" udp dport 7412 ip saddr @seen dnat to {lan}:7412\n }}\n}}\n"
            ));
        } else {
            rules.push_str(" }\n}\n");
        }
        let path = self.dir.join(format!("{}-nat.nft", nat_box.name));
        std::fs::write(&path, rules).expect("write nft rules");
        must(self.cmd(nat_box, "nft").arg("-f").arg(&path));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.lab.teardown();
        if std::thread::panicking() {
            self.lab.keep_dir(true);
            eprintln!(
                "netns test failed: logs, configs and state kept in {}",
                self.dir.display()
            );
        } else if std::env::var_os("GN_NETNS_KEEP").is_some() {
            self.lab.keep_dir(true);
            eprintln!("GN_NETNS_KEEP: logs kept in {}", self.dir.display());
        }
    }
}
