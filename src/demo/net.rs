//! The demo network's machinery: its nodes, their configs and daemons, progress lines, waiting for
//! the network to form, and teardown. The scenario itself (which nodes, the checks, the report) is
//! `Net::run` in the parent module.

// Reading a `serde_json::Value` by key returns Null for a missing key or a non-object; it cannot
// panic.
#![allow(clippy::indexing_slicing)]

use super::{is_live_demo, nap, run_dir, services, stopped, DemoArgs, NS_PREFIX, UDP_PORT};
use crate::control::proto::StatusAnswer;
use crate::control::{self, Cmd};
use globalnet_lab::{Host, Lab};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// One node of the demo network.
#[derive(Debug, Clone)]
pub(super) struct Node {
    pub(super) host: Host,
    pub(super) dir: PathBuf,
    pub(super) control: PathBuf,
    pub(super) log: PathBuf,
}

/// The demo network; dropping it tears everything down.
pub(super) struct Net {
    pub(super) lab: Lab,
    pub(super) keep: bool,
    pub(super) failed: bool,
    pub(super) interactive: bool,
    pub(super) last_progress: Option<(String, Instant)>,
}

impl Net {
    /// Cleans up a stale demo, then creates the run directory and the hub.
    pub(super) fn create(args: &DemoArgs) -> Result<Net, String> {
        let dir = run_dir();
        let pid_file = dir.join("pid");
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            if is_live_demo(pid) {
                return Err(format!(
                    "another demo is running (pid {pid}); stop it first (Ctrl-C in its terminal, or sudo kill {pid})"
                ));
            }
        }
        let stale = globalnet_lab::namespaces(NS_PREFIX);
        if !stale.is_empty() {
            println!(
                "removing {} namespace(s) left by an earlier demo that did not exit cleanly",
                stale.len()
            );
            for ns in &stale {
                globalnet_lab::delete_namespace(ns);
            }
        }
        let lab = Lab::new(NS_PREFIX, dir)?;
        std::fs::write(&pid_file, format!("{}\n", std::process::id()))
            .map_err(|e| format!("{}: {e}", pid_file.display()))?;
        Ok(Net {
            lab,
            keep: args.keep,
            failed: false,
            interactive: std::io::IsTerminal::is_terminal(&std::io::stdout()),
            last_progress: None,
        })
    }

    /// The run directory: configs, keys, logs.
    pub(super) fn dir(&self) -> &Path {
        self.lab.dir()
    }

    /// Adds a namespace on the switch with `198.18.0.<k+1>/15` and no route out.
    pub(super) fn add_node(&mut self, name: &str) -> Result<Node, String> {
        stopped()?;
        let dir = self.dir().join(name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Node {
            host: self.lab.add_host(name)?,
            control: dir.join("control.sock"),
            log: dir.join("daemon.log"),
            dir,
        })
    }

    /// Starts a long-running process, stopped with the demo, output to `log`.
    pub(super) fn spawn(&mut self, cmd: Command, log: &Path, what: String) -> Result<u32, String> {
        Ok(self.lab.spawn(cmd, log, &what)?)
    }

    pub(super) fn write_config(
        &self,
        node: &Node,
        bootstrap: Option<Ipv4Addr>,
        expose: &[u16],
    ) -> PathBuf {
        let boot = bootstrap
            .map(|b| format!("\"{b}:{UDP_PORT}\""))
            .unwrap_or_default();
        let ports: Vec<String> = expose.iter().map(u16::to_string).collect();
        let text = format!(
            "# globalnet demo node `{name}`: the defaults, except what a network in one subnet needs.\n\
             state_dir = \"{state}\"\ncontrol_socket = \"{control}\"\n\n\
             [network]\n# listen: the default, as shipped (0.0.0.0:7412).\nbootstrap = [{boot}]\n\n\
             [paths]\n# Every demo node lives in 198.18.0.0/15.\nipv4_subnet_family_prefix = 32\n\n\
             [expose]\ntcp = [{ports}]\n",
            name = node.host.name,
            state = node.dir.join("state").display(),
            control = node.control.display(),
            ports = ports.join(", "),
        );
        let path = node.dir.join("config.toml");
        let _ = std::fs::write(&path, text);
        path
    }

    pub(super) fn child_exited(&mut self, pid: u32) -> Option<std::process::ExitStatus> {
        self.lab.exited(pid)
    }

    pub(super) fn log_tail(path: &Path) -> String {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines
            .get(lines.len().saturating_sub(15)..)
            .unwrap_or_default()
            .join("\n")
    }

    /// Shows a progress line: rewritten in place on a terminal; otherwise printed when `key`
    /// changes or every 5 s, so logs stay short.
    pub(super) fn progress(&mut self, key: &str, line: &str) {
        if self.interactive {
            print!("\r\x1b[K{line}");
        } else {
            let due = self
                .last_progress
                .as_ref()
                .is_none_or(|(k, t)| k != key || t.elapsed() >= Duration::from_secs(5));
            if !due {
                return;
            }
            println!("{line}");
        }
        self.last_progress = Some((key.to_string(), Instant::now()));
        let _ = std::io::stdout().flush();
    }

    pub(super) fn progress_done(&mut self) {
        if self.interactive && self.last_progress.is_some() {
            println!();
        }
        self.last_progress = None;
    }
}

impl Net {
    /// Waits until the daemon answers on its control socket.
    pub(super) fn wait_ready(&mut self, node: &Node, pid: u32) -> Result<StatusAnswer, String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            stopped()?;
            if let Some(s) = self.child_exited(pid) {
                return Err(format!(
                    "the daemon on {} exited at start ({s}); its log ends:\n{}",
                    node.host.name,
                    Self::log_tail(&node.log)
                ));
            }
            match control::ask(&node.control, Cmd::Status) {
                Ok(v) => return Ok(v),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!(
                        "the daemon on {} is not answering: {e}",
                        node.host.name
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Shows links and circuits forming until every node has a ready circuit and two links.
    pub(super) fn wait_formed(
        &mut self,
        daemons: &[(Node, u32)],
        service: &Node,
        timeout: Duration,
    ) -> Result<Duration, String> {
        let start = Instant::now();
        loop {
            stopped()?;
            let (mut peers, mut ready, mut nodes_ready) = (0u64, 0u64, 0usize);
            for (node, pid) in daemons {
                if let Some(s) = self.child_exited(*pid) {
                    self.progress_done();
                    return Err(format!(
                        "the daemon on {} exited ({s}); its log ends:\n{}",
                        node.host.name,
                        Self::log_tail(&node.log)
                    ));
                }
                let Ok(st) = control::ask::<StatusAnswer>(&node.control, Cmd::Status) else {
                    continue;
                };
                let (p, r) = (st.peers as u64, st.circuits.ready as u64);
                peers += p;
                ready += r;
                if p >= 2 && r >= crate::node::POOL_TARGET as u64 {
                    nodes_ready += 1;
                }
            }
            let svc = services(&service.control)
                .into_iter()
                .next()
                .unwrap_or_default();
            let intro = svc.intro_points.len() as u64;
            // A client that looks the service up before its descriptor lists all intro points
            // caches the short one (and today stays stuck when that intro point is its guard),
            // so the demo's client waits for the full descriptor, as a user would wait for a
            // service to be published.
            let published =
                svc.published && intro >= crate::node::sessions::NUM_INTRO_POINTS as u64;
            let line = format!(
                "  forming: {} links, {ready} ready circuits, {nodes_ready}/{} nodes ready, service intro points: {intro}",
                peers / 2,
                daemons.len()
            );
            self.progress(
                &line,
                &format!("{line} ({:.0} s)", start.elapsed().as_secs_f64()),
            );
            if nodes_ready == daemons.len() && published {
                self.progress_done();
                // Let the last descriptor store land in the DHT.
                nap(Duration::from_secs(1))?;
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                self.progress_done();
                return Err(format!(
                    "the network did not form within {timeout:?} ({nodes_ready}/{} nodes with links and ready circuits; service descriptor {}with {intro} intro point(s))\n  logs: {}",
                    daemons.len(),
                    if published { "published " } else { "not published, " },
                    self.dir().display()
                ));
            }
            nap(Duration::from_millis(200))?;
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.lab.teardown();
        if self.failed || self.keep {
            let _ = std::fs::remove_file(self.dir().join("pid"));
            println!(
                "configs, keys and logs kept in {} (the next demo removes them)",
                self.dir().display()
            );
            self.lab.keep_dir(true);
        }
    }
}
