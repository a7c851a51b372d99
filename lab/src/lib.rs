//! A switched underlay of Linux network namespaces, shared by `globalnet demo` and the netns
//! tests: namespaces, a bridge and veths, hosts on it, children started inside them, and a
//! teardown that always happens — on drop, on a signal ([`signals`]), and for what a killed
//! process left behind ([`namespaces`], [`delete_namespace`]).
//!
//! It knows nothing of GlobalNet (no daemons, configs or control sockets: those belong to the
//! demo and the test harness), drives `ip` and `nft` with `std::process::Command`, needs root,
//! and returns errors instead of panicking, so the demo can report them and still tear down.
//!
//! The plan: a hub namespace `<prefix>hub` holding bridge `br0`; the k-th host is namespace
//! `<prefix><name>` whose `eth0` (198.18.0.<k+1>/15) is a veth with its other end `p<k>` on the
//! bridge; no route leaves the lab. A run directory beside it holds whatever the owner writes
//! (configs, logs, rule files) and is removed with the lab unless kept.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

mod process;
pub mod signals;

pub use process::{ip, must, run, run_for, Abandoned};

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What went wrong, in words for the person running the demo or the test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<Error> for String {
    fn from(e: Error) -> String {
        e.0
    }
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;

fn io_error(what: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error(format!("{}: {e}", what.display()))
}

/// How long children get between SIGTERM and SIGKILL at teardown.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// One host (namespace) of a lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Short name, used in logs and file names.
    pub name: String,
    /// Its namespace.
    pub ns: String,
    /// Its underlay address (unspecified for the hub).
    pub ip: Ipv4Addr,
}

impl Host {
    /// A command that runs `program` inside this host's namespace.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }
}

/// A switched underlay of namespaces and the children running in it; dropping it tears
/// everything down.
pub struct Lab {
    prefix: String,
    hub: String,
    hosts: Vec<Host>,
    children: Vec<(Child, String)>,
    dir: PathBuf,
    keep_dir: bool,
    torn_down: bool,
}

impl Lab {
    /// A lab whose namespaces are named `<prefix>…`, with a fresh run directory `dir` (whatever
    /// was there is removed) and the hub namespace with its bridge.
    pub fn new(prefix: &str, dir: PathBuf) -> Result<Lab> {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        // Daemons may drop to an unprivileged user; let them reach their own files.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(io_error(&dir))?;
        let hub = format!("{prefix}hub");
        let lab = Lab {
            prefix: prefix.to_string(),
            hub: hub.clone(),
            hosts: Vec::new(),
            children: Vec::new(),
            dir,
            keep_dir: false,
            torn_down: false,
        };
        // Registered before it exists, so a failure half-way still removes it.
        signals::register_namespace(&hub);
        ip(&["netns", "add", &hub])?;
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        Ok(lab)
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The prefix of this lab's namespace names.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The hosts added so far, hub excluded, in order.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The hub namespace (the switch) as a host, e.g. to capture the underlay's traffic.
    pub fn hub(&self) -> Host {
        Host {
            name: "hub".into(),
            ns: self.hub.clone(),
            ip: Ipv4Addr::UNSPECIFIED,
        }
    }

    /// Adds namespace `<prefix><name>` with its loopback up and nothing else; it counts as a
    /// host (it is torn down with the lab and takes a place in the addressing plan). For hosts
    /// wired another way, e.g. behind a NAT box.
    pub fn add_bare_host(&mut self, name: &str, ip4: Ipv4Addr) -> Result<Host> {
        let host = Host {
            name: name.to_string(),
            ns: format!("{}{name}", self.prefix),
            ip: ip4,
        };
        // Registered before it exists, so a failure half-way still removes it.
        signals::register_namespace(&host.ns);
        self.hosts.push(host.clone());
        ip(&["netns", "add", &host.ns])?;
        ip(&["-n", &host.ns, "link", "set", "lo", "up"])?;
        Ok(host)
    }

    /// Adds a host on the switch: `198.18.0.<k+1>/15` for the k-th host.
    pub fn add_host(&mut self, name: &str) -> Result<Host> {
        let k = self.hosts.len();
        let last = u8::try_from(k + 1)
            .ok()
            .filter(|&n| n <= 250)
            .ok_or_else(|| Error("too many hosts for this addressing plan".into()))?;
        let host = self.add_bare_host(name, Ipv4Addr::new(198, 18, 0, last))?;
        let (hub, ns, port) = (&self.hub, &host.ns, format!("p{k}"));
        ip(&[
            "-n", hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])?;
        ip(&["-n", hub, "link", "set", &port, "master", "br0", "up"])?;
        self.add_address(&host, host.ip)?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        Ok(host)
    }

    /// Adds another underlay address to `host`'s `eth0` (a multi-homed host).
    pub fn add_address(&self, host: &Host, addr: Ipv4Addr) -> Result<()> {
        let cidr = format!("{addr}/15");
        ip(&["-n", &host.ns, "addr", "add", &cidr, "dev", "eth0"])
    }

    /// Gives `host` its own `/etc/hosts` (`ip netns exec` mounts `/etc/netns/<ns>/hosts` over
    /// it), so its programs resolve the lab's names without any outside DNS. Removed with the
    /// namespace.
    pub fn set_hosts_file(&self, host: &Host, text: &str) -> Result<()> {
        let dir = Path::new("/etc/netns").join(&host.ns);
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let hosts = dir.join("hosts");
        std::fs::write(
            &hosts,
            format!("127.0.0.1 localhost\n::1 localhost\n{text}"),
        )
        .map_err(io_error(&hosts))?;
        // A name not in the file must fail here and now, never ask a resolver outside the lab.
        let resolv = dir.join("resolv.conf");
        std::fs::write(
            &resolv,
            "nameserver 127.0.0.1\noptions attempts:1 timeout:1\n",
        )
        .map_err(io_error(&resolv))
    }

    /// Drops `percent` of the host's outgoing packets: an nftables `numgen random` rule in its
    /// output hook (this kernel has no netem). The rules are kept in the run directory.
    pub fn set_loss(&self, host: &Host, percent: u32) -> Result<()> {
        let rules = format!(
            "table inet gnloss {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n  numgen random mod 100 < {percent} drop\n }}\n}}\n"
        );
        let path = self.dir.join(format!("{}-loss.nft", host.name));
        std::fs::write(&path, rules).map_err(io_error(&path))?;
        run(host
            .cmd("sh")
            .args(["-c", "nft delete table inet gnloss 2>/dev/null"]))?;
        must(host.cmd("nft").arg("-f").arg(&path)).map(|_| ())
    }

    /// Starts `cmd` as a child of the lab, stopped with it: stdin from /dev/null, stdout and
    /// stderr appended to `log`, in a process group of its own (so a Ctrl-C in the terminal
    /// reaches only this program, which then stops everything in order). Returns its pid.
    pub fn spawn(&mut self, mut cmd: Command, log: &Path, what: &str) -> Result<u32> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io_error(log))?;
        let err = out.try_clone().map_err(io_error(log))?;
        let child = std::os::unix::process::CommandExt::process_group(
            cmd.stdin(Stdio::null()).stdout(out).stderr(err),
            0,
        )
        .spawn()
        .map_err(|e| Error(format!("cannot start {what}: {e}")))?;
        Ok(self.track(child, what))
    }

    /// Makes a child started elsewhere the lab's, stopped with it; returns its pid.
    pub fn track(&mut self, child: Child, what: &str) -> u32 {
        let pid = child.id();
        signals::register_pid(pid);
        self.children.push((child, what.to_string()));
        pid
    }

    /// The child with this pid, if the lab started it.
    pub fn child_mut(&mut self, pid: u32) -> Option<&mut Child> {
        self.children
            .iter_mut()
            .find(|(c, _)| c.id() == pid)
            .map(|(c, _)| c)
    }

    /// The exit status of the lab's child `pid`, once it has exited.
    pub fn exited(&mut self, pid: u32) -> Option<ExitStatus> {
        self.child_mut(pid)
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Whether the run directory stays when the lab is dropped (it is removed by default).
    pub fn keep_dir(&mut self, keep: bool) {
        self.keep_dir = keep;
    }

    /// Stops every child (SIGTERM, then SIGKILL after [`STOP_GRACE`]) and deletes every
    /// namespace, which removes the veths and what the children set up inside. Runs once; the
    /// drop calls it too.
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        for (child, _) in &mut self.children {
            let _ = nix::sys::signal::kill(pid_of(child.id()), nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        for (child, _) in &mut self.children {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let mut names: Vec<String> = self.hosts.iter().map(|h| h.ns.clone()).collect();
        names.push(self.hub.clone());
        for ns in &names {
            delete_namespace(ns);
        }
        let pids: Vec<u32> = self.children.iter().map(|(c, _)| c.id()).collect();
        signals::forget(&names, &pids);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn pid_of(pid: u32) -> nix::unistd::Pid {
    nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX))
}

/// The namespaces whose names start with `prefix`, e.g. those a killed run left behind.
pub fn namespaces(prefix: &str) -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Deletes a namespace after killing whatever still runs inside (or it outlives its name), with
/// its `/etc/netns/<ns>` files.
pub fn delete_namespace(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<u32>() {
                let _ = nix::sys::signal::kill(pid_of(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(Stdio::null())
        .status();
    let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
}
