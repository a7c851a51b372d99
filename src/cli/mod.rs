//! The `globalnet` command line (DESIGN.md section 11). Subcommands that need the daemon talk to
//! it over the control socket; `keygen`, `address` and `check` work without one.

use clap::{Args, Parser, Subcommand};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{Config, DEFAULT_CONFIG_PATH, DEFAULT_CONTROL_SOCKET, DEFAULT_STATE_DIR};
use crate::control::proto::{PingAnswer, ResolveAnswer};
use crate::control::{self, Cmd};
use crate::crypto::NodeKeys;
use crate::names::KeyName;

mod print;
mod services;
use print::*;
use services::print_services;

#[derive(Parser, Debug)]
#[command(
    name = "globalnet",
    version,
    about = "A decentralized, anonymous overlay network: hidden services as fd00::/8 IPv6 addresses",
    after_help = "Examples:\n  sudo globalnet keygen            create this node's keys, print its address\n  globalnet check --config my.toml validate a config\n  sudo globalnet daemon            run the node with /etc/globalnet/config.toml\n  globalnet status                 ask the running daemon how it is\n  globalnet ping fd52:b1e::9a33    reach a hidden service and time the round trip"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create this node's keys (or a named service's key) if absent (never overwrites) and print the address
    #[command(
        after_help = "Examples:\n  sudo globalnet keygen\n  sudo globalnet keygen --service web\n  globalnet keygen --state-dir ./state"
    )]
    Keygen(KeygenArgs),
    /// Print this node's overlay address (its default service's), or a named service's
    #[command(
        after_help = "Examples:\n  globalnet address\n  globalnet address --name\n  globalnet address --service web --json\n  globalnet address --state-dir ./state"
    )]
    Address(AddressArgs),
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
    /// List this node's own hidden services: name, address, open ports, intro points, descriptor age, sessions
    #[command(
        after_help = "Examples:\n  globalnet services\n  globalnet services --json\n\nA node hosts its default service when [expose] in the config lists ports, and one more per\n[[service]] table; only a service's own ports are reachable on its address, everything else is\nrefused. `systemctl reload globalnet` applies changed services."
    )]
    Services(QueryArgs),
    /// List end-to-end sessions with hidden services (as client) and with their visitors (as service)
    #[command(after_help = "Examples:\n  globalnet sessions\n  globalnet sessions --json")]
    Sessions(QueryArgs),
    /// Reach an overlay address end to end and report the round-trip time (exit 0 if it answered)
    #[command(
        after_help = "Examples:\n  globalnet ping fd52:b1e::9a33\n  globalnet ping -c 10 fd52:b1e::9a33\n  globalnet ping --json -c 3 fd52:b1e::9a33\n\nThe daemon sends an end-to-end PING on the session with the address (making one if needed:\nthe first answer includes the introduction and rendezvous) and times the PONG. Unlike\nping(8) it needs no open port and no ICMPv6 on the far side; ping(8) works too, over gn0."
    )]
    Ping(PingArgs),
    /// What a .gn.alt name resolves to, and which layer said so (petname, key name, network)
    #[command(
        after_help = "Examples:\n  globalnet resolve alice.gn.alt\n  globalnet resolve alice\n  globalnet resolve --json <key>.gn.alt\n\nPetnames (the names file, /etc/globalnet/names, and [names] local) win over every other layer;\na key name (globalnet address --name) resolves by itself."
    )]
    Resolve(ResolveArgs),
    /// Claim, show or release a network-issued name NAME.gn.alt for this node's service
    #[command(
        subcommand,
        after_help = "Examples:\n  sudo globalnet name claim cheesy\n  globalnet name show cheesy\n  sudo globalnet name release cheesy\n  sudo globalnet name claim myblog --service web\n\nA claim is signed by the service's key and priced with proof of work (about 10^6 hashes); among claims of one name the one with the most work wins (docs/protocol.md 18.3).\nThe claim is kept in the state directory; the running daemon publishes it in the DHT within seconds and refreshes it."
    )]
    Name(NameCommand),
    /// A local network in namespaces reaching a hidden service (root; Ctrl-C tears it down)
    #[command(
        after_help = "Examples:\n  sudo globalnet demo\n  sudo globalnet demo --once --relays 8"
    )]
    Demo(crate::demo::DemoArgs),
}

#[derive(Args, Debug)]
struct PingArgs {
    /// The overlay address to reach (fd00::/8)
    #[arg(value_name = "ADDR")]
    addr: String,
    /// Stop after COUNT pings
    #[arg(short = 'c', long, value_name = "COUNT", default_value_t = 4)]
    count: u32,
    /// Seconds between pings
    #[arg(short = 'i', long, value_name = "SECS", default_value_t = 1.0)]
    interval: f64,
    #[command(flatten)]
    query: QueryArgs,
}

#[derive(Subcommand, Debug)]
enum NameCommand {
    /// Do the work, sign a claim of NAME.gn.alt with the service key and keep it
    #[command(after_help = "Examples:\n  sudo globalnet name claim cheesy")]
    Claim(NameArgs),
    /// Show this node's claim of NAME.gn.alt
    #[command(after_help = "Examples:\n  globalnet name show cheesy")]
    Show(NameArgs),
    /// Drop this node's claim of NAME.gn.alt (published copies expire within 7 days)
    #[command(after_help = "Examples:\n  sudo globalnet name release cheesy")]
    Release(NameArgs),
    /// Trust the key the network now names for NAME.gn.alt instead of the pinned one
    #[command(
        after_help = "Examples:\n  globalnet resolve cheesy        # shows the conflict\n  sudo globalnet name accept cheesy"
    )]
    Accept(AcceptArgs),
}

#[derive(Args, Debug)]
struct AcceptArgs {
    /// The name: one label, with or without .gn.alt
    #[arg(value_name = "NAME")]
    name: String,
    #[command(flatten)]
    query: QueryArgs,
}

#[derive(Args, Debug)]
struct NameArgs {
    /// The name: one label, with or without .gn.alt
    #[arg(value_name = "NAME")]
    name: String,
    /// The service whose key claims it: `default` ([expose]'s) or a [[service]]'s name
    #[arg(long, value_name = "NAME", default_value = "default")]
    service: String,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(Args, Debug)]
struct ResolveArgs {
    /// The name: NAME.gn.alt, or NAME alone for NAME.gn.alt
    #[arg(value_name = "NAME")]
    name: String,
    #[command(flatten)]
    query: QueryArgs,
}

#[derive(Args, Debug)]
struct KeygenArgs {
    /// Create the key of this [[service]] instead (its `key` file, else service_NAME.key)
    #[arg(long, value_name = "NAME")]
    service: Option<String>,
    /// Print JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(Args, Debug)]
struct AddressArgs {
    /// The service: `default` ([expose]'s, the node's own address) or a [[service]]'s name
    #[arg(long, value_name = "NAME")]
    service: Option<String>,
    /// Print JSON: service, address and key name
    #[arg(long)]
    json: bool,
    /// Print the key name (<key>.gn.alt) instead: it carries the whole service key, so a client
    /// can check the service against it
    #[arg(long)]
    name: bool,
    #[command(flatten)]
    state: StateArgs,
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
        Command::Keygen(KeygenArgs {
            service: Some(name),
            json,
            state,
        }) => services::keygen(&state, &name, json),
        Command::Keygen(KeygenArgs { json, state, .. }) => {
            let dir = state_dir(&state)?;
            let (keys, created) =
                NodeKeys::load_or_create(&dir).map_err(|e| Failure::Runtime(e.to_string()))?;
            for name in &created.0 {
                eprintln!("created {}", dir.join(name).display());
            }
            if created.0.is_empty() {
                eprintln!("keys already present in {}; nothing changed", dir.display());
            }
            if json {
                println!(
                    "{}",
                    serde_json::json!({"service": "default", "address": keys.address().to_string(), "created": created.0})
                );
            } else {
                println!("{}", keys.address());
            }
            Ok(())
        }
        Command::Address(args) if args.service.is_some() || args.json => {
            services::address(&args.state, args.service.as_deref(), args.name, args.json)
        }
        Command::Address(args) => {
            let dir = state_dir(&args.state)?;
            let keys = NodeKeys::load(&dir).map_err(|e| Failure::Runtime(e.to_string()))?;
            if args.name {
                println!("{}", KeyName::of(&keys.service.verifying_key()));
            } else {
                println!("{}", keys.address());
            }
            Ok(())
        }
        Command::Check(args) => {
            let c = load_config(&args.config)?;
            let pets = c.petnames().map_err(|e| Failure::Usage(e.to_string()))?;
            println!(
                "{}: OK (tun {} mtu {}, {} listen address(es), {} bootstrap peer(s), relay {}, exposed tcp {:?} udp {:?}, {} more service(s), {} petname(s))",
                args.config.display(),
                c.tun.name,
                c.tun.mtu,
                c.network.listen.len(),
                c.network.bootstrap.len(),
                if c.relay_enabled() { "on" } else { "off" },
                c.expose.tcp,
                c.expose.udp,
                c.services.len(),
                pets.len()
            );
            Ok(())
        }
        Command::Daemon(args) => {
            let c = load_config(&args.config)?;
            crate::daemon::run(c, args.config.clone()).map_err(|e| Failure::Runtime(e.to_string()))
        }
        Command::Status(q) => query(&q, Cmd::Status, print_status),
        Command::Peers(q) => query(&q, Cmd::Peers, |l: &Vec<_>| print_peers(l)),
        Command::Circuits(q) => query(&q, Cmd::Circuits, |l: &Vec<_>| print_circuits(l)),
        Command::Services(q) => query(&q, Cmd::Services, |l: &Vec<_>| print_services(l)),
        Command::Sessions(q) => query(&q, Cmd::Sessions, |l: &Vec<_>| print_sessions(l)),
        Command::Ping(args) => ping(&args),
        Command::Resolve(args) => resolve(&args),
        Command::Name(cmd) => name(cmd),
        Command::Demo(args) => crate::demo::run(args).map_err(Failure::Runtime),
    }
}

fn ping(args: &PingArgs) -> Result<(), Failure> {
    let addr: std::net::Ipv6Addr = args.addr.parse().map_err(|_| {
        Failure::Usage(format!(
            "`{}` is not an IPv6 address; give a GlobalNet address such as fd52:b1e::9a33 (see `globalnet services` on the other node)",
            args.addr
        ))
    })?;
    if !crate::crypto::is_overlay(&addr) {
        return Err(Failure::Usage(format!(
            "{addr} is not an overlay address; GlobalNet addresses are in fd00::/8"
        )));
    }
    if args.count == 0 || !(0.2..=60.0).contains(&args.interval) {
        return Err(Failure::Usage(
            "give a count of at least 1 and an interval between 0.2 and 60 seconds".into(),
        ));
    }
    let path = control_path(&args.query)?;
    let json = args.query.json;
    if !json {
        println!("PING {addr}: end to end through onion circuits");
    }
    let started = std::time::Instant::now();
    let mut rtts: Vec<f64> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for seq in 1..=args.count {
        let t0 = std::time::Instant::now();
        let req = control::Request::ping(addr.to_string());
        let answer = control::request_with(&path, &req, std::time::Duration::from_secs(45))
            .and_then(control::decode::<PingAnswer>);
        match answer {
            Ok(PingAnswer { rtt_ms: rtt, .. }) => {
                rtts.push(rtt);
                if !json {
                    println!("reply from {addr}: seq={seq} time={rtt:.1} ms");
                }
            }
            Err(control::ControlError::Daemon(m)) => {
                if !json {
                    println!("no reply: seq={seq}: {m}");
                }
                errors.push(m);
            }
            // The daemon is not there or not ours to use: nothing to retry.
            Err(e) => return Err(Failure::Runtime(e.to_string())),
        }
        if seq < args.count {
            let wait = std::time::Duration::from_secs_f64(args.interval);
            std::thread::sleep(wait.saturating_sub(t0.elapsed()));
        }
    }
    let sent = args.count as usize;
    let received = rtts.len();
    let loss = 100.0 * (sent - received) as f64 / sent as f64;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "addr": addr.to_string(),
                "sent": sent,
                "received": received,
                "rtt_ms": rtts,
                "errors": errors,
            })
        );
    } else {
        println!("--- {addr} ping statistics ---");
        println!(
            "{sent} sent, {received} received, {loss:.0}% loss, time {:.1} s",
            started.elapsed().as_secs_f64()
        );
        if received > 0 {
            let min = rtts.iter().copied().fold(f64::INFINITY, f64::min);
            let max = rtts.iter().copied().fold(0.0, f64::max);
            let avg = rtts.iter().sum::<f64>() / received as f64;
            println!("rtt min/avg/max = {min:.1}/{avg:.1}/{max:.1} ms");
        }
    }
    if received > 0 {
        Ok(())
    } else {
        Err(Failure::Runtime(format!(
            "{addr} did not answer; check the address, that its node runs (`globalnet services` there) and that this node has peers (`globalnet status`)"
        )))
    }
}

fn name(cmd: NameCommand) -> Result<(), Failure> {
    use crate::names::claim_files;
    let args = match &cmd {
        NameCommand::Accept(a) => return accept(a),
        NameCommand::Claim(a) | NameCommand::Show(a) | NameCommand::Release(a) => a,
    };
    let label = args
        .name
        .strip_suffix('.')
        .unwrap_or(&args.name)
        .to_ascii_lowercase();
    let label = crate::names::keyname::split_suffix(&label)
        .unwrap_or(&label)
        .to_string();
    if !crate::names::claim::claimable(&label) {
        return Err(Failure::Usage(format!(
            "`{}` cannot be claimed: give one label of letters, digits and '-', e.g. cheesy or cheesy.gn.alt (key names resolve by themselves)",
            args.name
        )));
    }
    let dir = state_dir(&args.state)?;
    let show = |c: &crate::names::claim::Claim| {
        let key = c.key_name().map_or("-".into(), |k| k.to_string());
        format!(
            "name     {}.gn.alt\nkey      {key}\nwork     {} bits (at least {})\nsigned   day {}\nfile     {}\n",
            c.name,
            c.work_bits(),
            crate::names::claim::MIN_WORK_BITS,
            c.epoch,
            claim_files::claim_path(&dir, &c.name).display()
        )
    };
    match cmd {
        NameCommand::Claim(_) => {
            let (_, key) = services::service_key(&args.state, &args.service)?;
            let (c, secs) = claim_files::claim(&dir, &label, &key).map_err(Failure::Runtime)?;
            print!("{}", show(&c));
            println!("service  {}", args.service);
            println!("took     {secs:.1} s of work");
            eprintln!("note: a running daemon that hosts this service publishes the claim within a few seconds");
        }
        NameCommand::Show(_) => match claim_files::load(&dir, &label).map_err(Failure::Runtime)? {
            Some(c) => print!("{}", show(&c)),
            None => {
                return Err(Failure::Runtime(format!(
                    "this node does not claim {label}.gn.alt (globalnet name claim {label})"
                )))
            }
        },
        // Answered by the daemon, above.
        NameCommand::Accept(_) => {}
        NameCommand::Release(_) => {
            if claim_files::release(&dir, &label).map_err(Failure::Runtime)? {
                println!("released {label}.gn.alt");
            } else {
                return Err(Failure::Runtime(format!(
                    "this node does not claim {label}.gn.alt"
                )));
            }
        }
    }
    Ok(())
}

fn accept(args: &AcceptArgs) -> Result<(), Failure> {
    ask_about_name(&args.query, &args.name, control::Request::accept)
}

fn resolve(args: &ResolveArgs) -> Result<(), Failure> {
    ask_about_name(&args.query, &args.name, control::Request::resolve)
}

/// Sends the request `make` builds for `name` and prints the daemon's resolve answer.
fn ask_about_name(
    query: &QueryArgs,
    name: &str,
    make: impl FnOnce(String) -> control::Request,
) -> Result<(), Failure> {
    // A bare label means NAME.gn.alt; anything with a dot is taken as written, so a name under
    // another domain is refused rather than quietly moved under .gn.alt.
    let name = if name.contains('.') {
        name.to_owned()
    } else {
        format!("{name}.{}", crate::names::SUFFIX)
    };
    let path = control_path(query)?;
    let result = control::request_with(&path, &make(name), std::time::Duration::from_secs(10))
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    if query.json {
        println!("{result}");
        return Ok(());
    }
    let a: ResolveAnswer = control::decode(result).map_err(|e| Failure::Runtime(e.to_string()))?;
    print!("{}", print_resolve(&a));
    Ok(())
}

/// Asks the daemon `cmd`; prints its answer as it came with `--json` (fields this CLI does not
/// know yet included), else read as the command's answer type and shown by `human`.
fn query<T: DeserializeOwned>(
    args: &QueryArgs,
    cmd: Cmd,
    human: impl Fn(&T) -> String,
) -> Result<(), Failure> {
    let path = control_path(args)?;
    let result = control::request(&path, cmd).map_err(|e| Failure::Runtime(e.to_string()))?;
    if args.json {
        println!("{result}");
    } else {
        let answer: T = control::decode(result).map_err(|e| Failure::Runtime(e.to_string()))?;
        print!("{}", human(&answer));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
