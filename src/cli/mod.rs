//! The `globalnet` command line (DESIGN.md section 11). Subcommands that need the daemon talk to
//! it over the control socket; `keygen`, `address` and `check` work without one.

// Reading a `serde_json::Value` by key returns Null for a missing key or a non-object; it cannot
// panic, and it keeps the printers short.
#![allow(clippy::indexing_slicing)]

use clap::{Args, Parser, Subcommand};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{Config, DEFAULT_CONFIG_PATH, DEFAULT_CONTROL_SOCKET, DEFAULT_STATE_DIR};
use crate::control;
use crate::crypto::NodeKeys;

#[derive(Parser, Debug)]
#[command(
    name = "globalnet",
    version,
    about = "A decentralized, anonymous overlay network: hidden services as fd00::/8 IPv6 addresses",
    after_help = "Examples:\n  sudo globalnet keygen            create this node's keys, print its address\n  globalnet check --config my.toml validate a config\n  sudo globalnet daemon            run the node with /etc/globalnet/config.toml\n  globalnet status                 ask the running daemon how it is"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create this node's keys if they are absent (never overwrites) and print its overlay address
    #[command(
        after_help = "Examples:\n  sudo globalnet keygen\n  globalnet keygen --state-dir ./state"
    )]
    Keygen(StateArgs),
    /// Print this node's overlay address (the address of its default service key)
    #[command(
        after_help = "Examples:\n  globalnet address\n  globalnet address --state-dir ./state"
    )]
    Address(StateArgs),
    /// Validate a config file and exit: 0 when valid, else the file, line, key and a hint
    #[command(
        after_help = "Examples:\n  globalnet check\n  globalnet check --config ./node1.toml"
    )]
    Check(ConfigArg),
    /// Run the node: create the TUN device, routes and control socket (needs root or CAP_NET_ADMIN)
    #[command(
        after_help = "Examples:\n  sudo globalnet daemon\n  sudo globalnet daemon --config ./node1.toml\n\nLogging: set GLOBALNET_LOG (e.g. debug, or globalnet=trace)."
    )]
    Daemon(ConfigArg),
    /// Show the running daemon's state
    #[command(
        after_help = "Examples:\n  globalnet status\n  globalnet status --json --control /run/globalnet/control.sock"
    )]
    Status(QueryArgs),
    /// List neighbour links
    #[command(after_help = "Examples:\n  globalnet peers\n  globalnet peers --json")]
    Peers(QueryArgs),
    /// List circuits (own and relayed)
    #[command(after_help = "Examples:\n  globalnet circuits\n  globalnet circuits --json")]
    Circuits(QueryArgs),
    /// List this node's own hidden services
    #[command(after_help = "Examples:\n  globalnet services\n  globalnet services --json")]
    Services(QueryArgs),
    /// A local network in namespaces reaching a hidden service (root; Ctrl-C tears it down)
    #[command(
        after_help = "Examples:\n  sudo globalnet demo\n  sudo globalnet demo --once --relays 8"
    )]
    Demo(crate::demo::DemoArgs),
}

#[derive(Args, Debug)]
struct StateArgs {
    /// State directory holding the keys [default: the config's state_dir, else /var/lib/globalnet]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Read state_dir from this config file
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ConfigArg {
    /// Config file
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
}

#[derive(Args, Debug)]
struct QueryArgs {
    /// Print JSON (stable; fields may be added)
    #[arg(long)]
    json: bool,
    /// The daemon's control socket [default: the config's control_socket, else /run/globalnet/control.sock]
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// Read control_socket from this config file
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(matches!(cli.command, Command::Daemon(_)));
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}

enum Failure {
    /// Bad input from the user (config, arguments): exit 2.
    Usage(String),
    /// Something failed while doing what was asked: exit 1.
    Runtime(String),
}

fn init_logging(daemon: bool) {
    let default = if daemon { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("GLOBALNET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn load_config(path: &Path) -> Result<Config, Failure> {
    Config::load(path).map_err(|e| Failure::Usage(e.to_string()))
}

fn state_dir(args: &StateArgs) -> Result<PathBuf, Failure> {
    if let Some(dir) = &args.state_dir {
        return Ok(dir.clone());
    }
    if let Some(cfg) = &args.config {
        return Ok(load_config(cfg)?.state_dir);
    }
    Ok(PathBuf::from(DEFAULT_STATE_DIR))
}

fn control_path(args: &QueryArgs) -> Result<PathBuf, Failure> {
    if let Some(p) = &args.control {
        return Ok(p.clone());
    }
    if let Some(cfg) = &args.config {
        return Ok(load_config(cfg)?.control_socket);
    }
    // Follow the system config when it is readable, so a custom control_socket just works.
    Ok(Config::load(Path::new(DEFAULT_CONFIG_PATH))
        .map(|c| c.control_socket)
        .unwrap_or_else(|_| PathBuf::from(DEFAULT_CONTROL_SOCKET)))
}

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Keygen(args) => {
            let dir = state_dir(&args)?;
            let (keys, created) =
                NodeKeys::load_or_create(&dir).map_err(|e| Failure::Runtime(e.to_string()))?;
            for name in &created.0 {
                eprintln!("created {}", dir.join(name).display());
            }
            if created.0.is_empty() {
                eprintln!("keys already present in {}; nothing changed", dir.display());
            }
            println!("{}", keys.address());
            Ok(())
        }
        Command::Address(args) => {
            let dir = state_dir(&args)?;
            let keys = NodeKeys::load(&dir).map_err(|e| Failure::Runtime(e.to_string()))?;
            println!("{}", keys.address());
            Ok(())
        }
        Command::Check(args) => {
            let c = load_config(&args.config)?;
            println!(
                "{}: OK (tun {} mtu {}, {} listen address(es), {} bootstrap peer(s), relay {}, exposed tcp {:?} udp {:?})",
                args.config.display(),
                c.tun.name,
                c.tun.mtu,
                c.network.listen.len(),
                c.network.bootstrap.len(),
                if c.relay_enabled() { "on" } else { "off" },
                c.expose.tcp,
                c.expose.udp
            );
            Ok(())
        }
        Command::Daemon(args) => {
            let c = load_config(&args.config)?;
            crate::daemon::run(c).map_err(|e| Failure::Runtime(e.to_string()))
        }
        Command::Status(q) => query(&q, "status", print_status),
        Command::Peers(q) => query(&q, "peers", print_peers),
        Command::Circuits(q) => query(&q, "circuits", print_circuits),
        Command::Services(q) => query(&q, "services", print_services),
        Command::Demo(args) => crate::demo::run(args).map_err(Failure::Runtime),
    }
}

fn query(args: &QueryArgs, cmd: &str, human: fn(&Value) -> String) -> Result<(), Failure> {
    let path = control_path(args)?;
    let result = control::request(&path, cmd).map_err(|e| Failure::Runtime(e.to_string()))?;
    if args.json {
        println!("{result}");
    } else {
        print!("{}", human(&result));
    }
    Ok(())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// Left-aligned columns, each as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
    out
}

fn print_status(v: &Value) -> String {
    let rows = [
        ("address", s(&v["address"])),
        (
            "interface",
            format!("{} (mtu {})", s(&v["interface"]), s(&v["mtu"])),
        ),
        ("relay key", s(&v["relay_key"])),
        (
            "relaying",
            if v["relay"] == Value::Bool(true) {
                "yes".into()
            } else {
                "no".into()
            },
        ),
        ("peers", s(&v["peers"])),
        (
            "circuits",
            format!(
                "{} own ({} ready), {} relayed for others",
                s(&v["circuits"]["own"]),
                s(&v["circuits"]["ready"]),
                s(&v["circuits"]["relayed"])
            ),
        ),
        ("nat", s(&v["nat"])),
        (
            "view",
            format!(
                "{} relays from {} sources",
                s(&v["view"]["relays"]),
                s(&v["view"]["sources"])
            ),
        ),
        ("uptime", duration(v["uptime_s"].as_u64().unwrap_or(0))),
        ("version", s(&v["version"])),
    ];
    rows.iter()
        .map(|(k, val)| format!("{k:<10} {val}\n"))
        .collect()
}

fn print_peers(v: &Value) -> String {
    let list = v.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return "no peers yet\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|p| {
            let key = match &p["relay_key"] {
                Value::String(k) => k.get(..16).unwrap_or(k).to_string(),
                _ => "(client)".to_string(),
            };
            vec![
                key,
                s(&p["endpoint"]),
                if p["direct"] == Value::Bool(true) {
                    "direct".into()
                } else {
                    "relayed".into()
                },
                if p["outbound"] == Value::Bool(true) {
                    "out".into()
                } else {
                    "in".into()
                },
                s(&p["rtt_ms"]),
                p["last_handshake_s"]
                    .as_u64()
                    .map_or("-".into(), |t| duration(t) + " ago"),
                bytes(p["bytes_in"].as_u64().unwrap_or(0)),
                bytes(p["bytes_out"].as_u64().unwrap_or(0)),
            ]
        })
        .collect();
    table(
        &[
            "RELAY KEY",
            "ENDPOINT",
            "PATH",
            "DIR",
            "RTT MS",
            "HANDSHAKE",
            "IN",
            "OUT",
        ],
        &rows,
    )
}

fn bytes(n: u64) -> String {
    match n {
        0..=9999 => format!("{n} B"),
        10_000..=9_999_999 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1048576.0),
    }
}

fn print_circuits(v: &Value) -> String {
    let list = v.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return "no circuits yet\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            vec![
                s(&c["id"]),
                s(&c["hops"]),
                s(&c["purpose"]),
                s(&c["state"]),
                s(&c["build_ms"]),
                duration(c["age_s"].as_u64().unwrap_or(0)),
            ]
        })
        .collect();
    table(
        &["ID", "HOPS", "PURPOSE", "STATE", "BUILD MS", "AGE"],
        &rows,
    )
}

fn print_services(v: &Value) -> String {
    let list = v.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return "no services\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            vec![
                s(&c["address"]),
                s(&c["tcp"]),
                s(&c["udp"]),
                c["intro_points"]
                    .as_array()
                    .map_or(0, |a| a.len())
                    .to_string(),
                s(&c["descriptor_age_s"]),
            ]
        })
        .collect();
    table(
        &["ADDRESS", "TCP", "UDP", "INTRO POINTS", "DESCRIPTOR AGE S"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn table_aligns() {
        let t = table(
            &["A", "BB"],
            &[
                vec!["long".into(), "x".into()],
                vec!["s".into(), "yy".into()],
            ],
        );
        assert_eq!(t, "A     BB\nlong  x\ns     yy\n");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(63), "1m 3s");
        assert_eq!(duration(7300), "2h 1m");
        assert_eq!(duration(90000), "1d 1h");
    }
}
