//! The daemon: wires the layers together and owns the I/O tasks (TUN, control socket, signals,
//! systemd notification). Protocol decisions live in the layers; this file only moves bytes and
//! time in and out of them.

use serde_json::Value;
use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

use crate::budget::MemoryBudget;
use crate::circuit::layer::{CircEvent, CircuitInfo, CircuitStats};
use crate::circuit::OnionKey;
use crate::config::{Config, PeerAddr};
use crate::control::proto::{
    BootstrapStatus, CircuitAnswer, CircuitCounts, CircuitState, FlowCounts, GuardStatus,
    LinkCounts, MemoryStatus, PeerAnswer, PingAnswer, ServiceAnswer, SessionAnswer, StatusAnswer,
    TunCounts, ViewStatus,
};
use crate::control::{self, Answer, Cmd, Request};
use crate::crypto::{is_overlay, NodeKeys, Randomness};
use crate::flow::{FlowConfig, FlowLayer, FlowStats, Policy, SessionVerdict, TunVerdict};
use crate::link::{
    BootstrapInfo, BootstrapPeer, LinkConfig, LinkEvent, LinkKeys, LinkLayer, LinkStats, PeerInfo,
};
use crate::node::sessions::{ServiceInfo, SessionInfo};
use crate::node::{Node, NodeEvent};
use crate::platform::{self, privdrop};
use crate::time::{self, Clock, Millis};
use crate::wire::udp;

/// Packets waiting between the TUN tasks and the link task, each way. The TUN reader waits when
/// the link task is behind (the kernel's queue then holds or drops, and TCP backs off); the link
/// task never waits for the TUN writer: a packet that finds its queue full is dropped.
const PACKET_QUEUE: usize = 256;
/// Packets from the TUN handled per wake-up of the link task before it sends.
const PACKET_BATCH: usize = 64;
/// Spare buffers the link task keeps for what it writes to the kernel.
const SPARE_BUFFERS: usize = 64;
/// How long a `ping` waits for the peer (a first ping includes introduction and rendezvous):
/// as long as the session layer keeps it.
const PING_TIMEOUT_MS: Millis = crate::session::limits::PING_TIMEOUT_MS;
/// Pings in flight at once.
const MAX_PINGS: usize = 64;
/// How often the routes behind the inbound source check are read again.
const ROUTE_REFRESH: Duration = Duration::from_secs(30);

/// Errors that stop the daemon, with the context of the step that failed.
#[derive(Debug)]
pub struct DaemonError(pub String);

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DaemonError {}

fn ctx<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> DaemonError {
    move |e| DaemonError(format!("{what}: {e}"))
}

/// Counters of the TUN tasks.
#[derive(Default)]
struct TunCounters {
    packets_in: AtomicU64,
    packets_out: AtomicU64,
    write_errors: AtomicU64,
    /// gn0 has TSO/USO offload (`tun_offload`), and that reader's and writer's syscalls.
    offload: std::sync::atomic::AtomicBool,
    reads: AtomicU64,
    writes: AtomicU64,
    /// Offload reads that could not be cut.
    read_errors: AtomicU64,
    /// ICMPv6 errors handed to the TUN writer (counted at once, not with the snapshot, so a
    /// test or an operator sees a reply counted as soon as the application saw it).
    icmp_replies: AtomicU64,
}

/// What the control socket asks of the link task.
enum Command {
    /// An end-to-end ping; the answer goes to `reply`.
    Ping { dst: [u8; 16], reply: AnswerTx },
    /// The prefixes routed through other interfaces changed (inbound source check).
    ForeignPrefixes(Vec<(Ipv6Addr, u8)>),
    /// The guard file was written (or not).
    GuardsSaved(Result<(), String>),
    /// A reload changed the hosted services.
    Services(reload::ServiceChange),
    /// A bootstrap host name resolved (or not).
    Resolved {
        name: String,
        result: Result<Vec<SocketAddr>, String>,
    },
    /// The user accepts the network's key for a name in conflict with its pin (the label);
    /// the key accepted, if a conflict was known, goes to `reply`.
    AcceptName {
        name: String,
        reply: tokio::sync::oneshot::Sender<Option<[u8; 32]>>,
    },
    /// A name carrying the full key `key` resolved to `address` (descriptors for it must carry
    /// that key).
    ExpectKey { address: [u8; 16], key: [u8; 32] },
    /// The claims in `state_dir/names` changed (`globalnet name claim|release`, or a SIGHUP).
    Claims(Vec<crate::names::claim::Claim>),
    /// Look a network-issued name up (its label); the answer goes to `reply`.
    Name {
        name: String,
        reply: tokio::sync::oneshot::Sender<crate::names::network::NetAnswer>,
    },
    /// Would an exit carry this destination for this isolation group (SOCKS, before it
    /// connects)? The answer goes to `reply`.
    ExitAllows {
        group: u8,
        dst: crate::exit::choose::Destination,
        reply: tokio::sync::oneshot::Sender<bool>,
    },
    /// A proof of work for an introduction was solved (`spawn_solve`).
    PowSolved {
        token: u64,
        pow: Option<crate::session::intro_pow::IntroPow>,
    },
}

/// Solves an introduction's proof of work off the event loop (up to about a second of hashing
/// at the client's cap, in a release build) and hands the answer to the link task, which drops
/// it if the attempt it was for has ended.
fn spawn_solve(req: crate::session::intro_pow::SolveRequest, commands: mpsc::Sender<Command>) {
    tokio::spawn(async move {
        let token = req.token;
        let pow = tokio::task::spawn_blocking(move || req.solve())
            .await
            .ok()
            .flatten();
        let _ = commands.send(Command::PowSolved { token, pow }).await;
    });
}

/// How long one resolution of a bootstrap host name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves a bootstrap host name off the event loop (getaddrinfo blocks; tokio runs it on its
/// blocking pool) and hands the answer to the link task.
fn spawn_resolve(name: String, commands: mpsc::Sender<Command>) {
    tokio::spawn(async move {
        let result =
            match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(&name)).await {
                Ok(Ok(addrs)) => Ok(addrs
                    .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()))
                    .collect()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {} s", RESOLVE_TIMEOUT.as_secs())),
            };
        let _ = commands.send(Command::Resolved { name, result }).await;
    });
}

mod answers;
mod dns;
mod exit;
pub mod guard_file;
mod hosted;
mod io;
mod names;
mod reload;
mod socks;
mod tun_offload;

use answers::{tenths, to_result, LinkSnapshot, NodeState};
use io::AnswerTx;
use io::{link_loop, route_refresher, tun_reader, tun_writer, Pipes};

/// Runs the node until SIGTERM or SIGINT.
///
/// Order: keys, TUN, routes, control socket (all privileged), then the privilege drop while the
/// process has one thread, then the multi-threaded runtime.
pub fn run(config: Config, config_path: PathBuf) -> Result<(), DaemonError> {
    let (keys, created) = NodeKeys::load_or_create(&config.state_dir).map_err(ctx("keys"))?;
    if !created.0.is_empty() {
        tracing::info!(files = ?created.0, dir = %config.state_dir.display(), "created missing keys");
    }
    let address = keys.address();
    // Named services' keys are read (and made) before the privilege drop, like the node's.
    let hosted = hosted::load(&config, address).map_err(DaemonError)?;
    // Read before the privilege drop: the names file may be readable by root only.
    let petnames = config.petnames().map_err(|e| DaemonError(e.to_string()))?;
    tracing::info!(count = petnames.len(), file = %config.names.file.display(), "petnames");

    let ids = config
        .user
        .as_deref()
        .map(privdrop::lookup)
        .transpose()
        .map_err(ctx("config `user`"))?;
    let dev = platform::tun::create_offload(&config.tun.name, config.tun.mtu, config.tun.offload)
        .map_err(ctx("set-up"))?;
    let serve_exit = config.exit.enabled && config.relay_enabled();
    if config.exit.enabled && !serve_exit {
        tracing::warn!("[exit] enabled but the node does not relay: not serving as an exit");
    }
    let mut exit_kernel: Option<platform::exit_net::ExitKernel> = None;
    let gnx = serve_exit
        .then(|| platform::tun::create(platform::exit_net::GNX_NAME, crate::config::OVERLAY_MTU))
        .transpose()
        .map_err(ctx("exit set-up"))?;
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ctx("set-up runtime"))?;
        rt.block_on(platform::routes::configure(&config.tun.name, address))
            .map_err(ctx("configuring the TUN device"))?;
        let named: Vec<Ipv6Addr> = hosted
            .iter()
            .filter(|(_, seed)| seed.is_some())
            .map(|(h, _)| h.address)
            .collect();
        rt.block_on(platform::routes::set_service_addresses(
            &config.tun.name,
            &named,
            &[],
        ))
        .map_err(ctx("adding the services' addresses"))?;
        if serve_exit {
            let resolver = platform::exit_net::host_resolver();
            if resolver.is_none() {
                tracing::warn!("no IPv4 nameserver in /etc/resolv.conf: clients cannot resolve names through this exit");
            }
            let kernel = rt
                .block_on(platform::exit_net::set_up_exit(resolver))
                .map_err(ctx("setting up the exit (gnx0, NAT)"))?;
            if !kernel.ipv6 {
                tracing::warn!("IPv6 does not leave this exit: the kernel has no per-interface force_forwarding (Linux 6.17) and net.ipv6.conf.all.forwarding is 0");
            }
            tracing::info!(
                ports = ?config.exit.allow_ports,
                networks = ?config.exit.allow_networks,
                resolver = ?resolver,
                ipv6 = kernel.ipv6,
                forwarding = ?kernel.forced,
                forwarding_v4 = ?kernel.forced_v4,
                "serving as an exit"
            );
            exit_kernel = Some(kernel);
        }
        if config.outbound.enabled() {
            rt.block_on(platform::exit_net::set_up_outbound(
                &config.tun.name,
                &config.outbound.routes,
                config.outbound.socks.is_some(),
            ))
            .map_err(ctx("routes through exits"))?;
            tracing::info!(routes = ?config.outbound.routes, socks = ?config.outbound.socks, "traffic to the outside goes through exits");
        }
    }
    // Only a root daemon hands the socket to the drop user; an unprivileged one (systemd's
    // User=) owns it already and may not chown.
    let root = nix::unistd::geteuid().is_root();
    let owner = ids.filter(|_| root).map(|i| (i.uid, i.gid));
    let dual = udp::dual_stack_for(&config.network.listen);
    let sockets = config
        .network
        .listen
        .iter()
        .zip(dual)
        .map(|(a, d)| {
            udp::bind_with(*a, d)
                .and_then(|s| {
                    // The underlay never enters gn0: the exit routes' rule skips marked packets.
                    if !config.outbound.routes.is_empty() {
                        nix::sys::socket::setsockopt(
                            &s,
                            nix::sys::socket::sockopt::Mark,
                            &platform::exit_net::EXIT_MARK,
                        )?;
                    }
                    Ok(s)
                })
                .map(|s| (s, d))
                .map_err(|e| DaemonError(format!("cannot listen on UDP {a}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // What the running daemon writes goes where the dropped user may write it.
    let cache = platform::state::prepare_cache(
        &config.state_dir,
        owner,
        &[crate::daemon::guard_file::GUARDS_FILE],
    )
    .map_err(|e| {
        DaemonError(format!(
            "state directory {}: {e}",
            config.state_dir.join(platform::state::CACHE_DIR).display()
        ))
    })?;
    let (onion_secret, onion_since) = onion_key(&config.state_dir, &cache, &keys)?;
    let control_listener = control::bind(&config.control_socket, owner).map_err(|e| {
        DaemonError(format!(
            "control socket {}: {e}",
            config.control_socket.display()
        ))
    })?;

    let dns_socket = config.names.dns.then(|| dns::bind(address)).flatten();
    let socks_listener = config
        .outbound
        .socks
        .map(|a| {
            std::net::TcpListener::bind(a)
                .map_err(|e| DaemonError(format!("cannot listen for SOCKS on {a}: {e}")))
        })
        .transpose()?;
    if dns_socket.is_some() {
        dns::register_with_resolved(&config.tun.name, address);
    }

    // Every way of starting ends with CAP_NET_ADMIN as the only capability (docs/decisions.md).
    let caps = match ids {
        Some(ids) if root => {
            let caps = privdrop::drop_to_user(ids).map_err(ctx("dropping privileges"))?;
            tracing::info!(uid = ids.uid, "dropped privileges");
            caps
        }
        _ => {
            if ids.is_some() {
                tracing::warn!("not started as root: `user` has nothing to drop and is ignored");
            } else if root {
                tracing::warn!("running as root: set `user` so that the daemon drops uid 0");
            }
            privdrop::limit_capabilities().map_err(ctx("limiting capabilities"))?
        }
    };
    tracing::info!(%caps, "capabilities after set-up");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("globalnet")
        .build()
        .map_err(ctx("runtime"))?;
    let budget = MemoryBudget::new(config.limits.memory_budget_mb as usize * (1 << 20));
    // The table of verified signatures is one fixed size per process: charged once, held for
    // the daemon's life.
    let _sig_cache = budget.try_charge(crate::crypto::sigcache::SIG_CACHE_BYTES);
    let (commands_tx, commands_rx) = mpsc::channel(MAX_PINGS);
    let state = Arc::new(NodeState {
        address,
        relay_key: keys.relay_key_hex(),
        link_key: crate::crypto::keys::hex(keys.link_public().as_bytes()),
        config: config.clone(),
        started: Instant::now(),
        tun: TunCounters::default(),
        links: Mutex::new(LinkSnapshot::default()),
        budget: budget.clone(),
        commands: commands_tx.clone(),
        petnames: std::sync::RwLock::new(petnames),
        hosted: Mutex::new(hosted.iter().map(|(h, _)| h.clone()).collect()),
        reload: Mutex::new(reload::ReloadState::default()),
        config_path,
    });
    let clock = Clock::new();
    let link_cfg = LinkConfig {
        relay: config.relay_enabled(),
        // Explicit endpoints, or the listen addresses (a wildcard one learns the host's).
        advertise: if config.network.advertise.is_empty() {
            config.network.listen.clone()
        } else {
            config.network.advertise.clone()
        },
        bootstrap: config
            .network
            .bootstrap
            .iter()
            .map(|p| match p {
                PeerAddr::Addr(a) => BootstrapPeer::Addr(*a),
                PeerAddr::Name { .. } => BootstrapPeer::Name(p.to_string()),
            })
            .collect(),
        target_links: config.network.links as usize,
        max_links: config.limits.max_links as usize,
        prefix_bits: (
            config.paths.ipv4_subnet_family_prefix,
            config.paths.ipv6_subnet_family_prefix,
        ),
        exit: serve_exit,
    };
    let link_keys = LinkKeys {
        identity: keys.relay_identity.clone(),
        link: keys.relay_link.clone(),
        onion_public: x25519_dalek::PublicKey::from(&onion_secret).to_bytes(),
    };
    // The service key stays out of the link layer entirely (it is never tied to the relay); the
    // session layer and the flow layer get its seed for pseudonyms and the hosted service.
    let onion = OnionKey::from_secret(onion_secret);
    let service_seed = Zeroizing::new(keys.service.to_bytes());
    drop(keys);
    let mut flow = FlowLayer::new(
        FlowConfig {
            address,
            client_seed: service_seed.clone(),
            real_identity_for: config.client.real_identity.clone(),
            policy: Policy::new(&config.expose.tcp, &config.expose.udp),
        },
        budget.clone(),
    );
    let list: Vec<hosted::Hosted> = hosted.iter().map(|(h, _)| h.clone()).collect();
    flow.policy_mut()
        .set_services(hosted::ports(&list, address));
    // Everything random from the operating system: secrets read it afresh, choices get 256 bits.
    let link = LinkLayer::new(
        link_cfg,
        link_keys,
        budget,
        Randomness::from_os(),
        clock.now(),
    );
    let mut link = link;
    link.set_exit_policy(
        clock.now(),
        serve_exit.then(|| {
            (
                config.exit.allow_ports.clone(),
                config.exit.allow_networks.clone(),
            )
        }),
    );
    if let Some(k) = &exit_kernel {
        link.set_exit_ipv6(clock.now(), k.ipv6);
    }
    let mut node = Node::new(link, onion, Randomness::from_os(), clock.now());
    if !node.secrets_from_os() {
        return Err(DaemonError(
            "secret randomness is not the operating system's: refusing to run".into(),
        ));
    }
    let guards_path = cache.join(crate::daemon::guard_file::GUARDS_FILE);
    match guard_file::load(&guards_path) {
        Ok(g) => node.set_guards(g),
        Err(e) => tracing::warn!("{e}; choosing new guards"),
    }
    node.set_onion_key_since(onion_since);
    if let Some(ms) = test_circuit_max_age() {
        tracing::warn!(ms, "test hook: our circuits retire after {ms} ms");
        node.circ.set_max_age(ms);
    }
    node.set_client_identity(
        *service_seed,
        config
            .client
            .real_identity
            .iter()
            .map(|a| a.octets())
            .collect(),
    );
    node.set_pow_max_effort(config.client.pow_max_effort);
    node.set_exit_role(serve_exit);
    node.set_outbound(config.outbound.enabled(), config.outbound.exit);
    let gateway = serve_exit.then(|| {
        let mut g = crate::exit::gateway::ExitGateway::new(
            crate::exit::policy::ExitPolicy::new(
                &config.exit.allow_ports,
                &config.exit.allow_networks,
            ),
            node.link.budget().clone(),
        );
        g.set_ipv6(exit_kernel.as_ref().is_some_and(|k| k.ipv6));
        g
    });
    // Proofs of work for introductions are solved on tokio's blocking pool (`spawn_solve`).
    node.set_solve_inline(false);
    // Each service its own key, intro points, descriptors and circuits (docs/threat-model.md).
    for (h, seed) in &hosted {
        let seed = seed.as_deref().copied().unwrap_or(*service_seed);
        tracing::info!(service = %h.name, "hosting");
        node.add_service(clock.now(), seed);
    }
    let mut name_keys = vec![(address.octets(), *service_seed)];
    name_keys.extend(
        hosted
            .iter()
            .filter_map(|(h, seed)| seed.as_deref().map(|s| (h.address.octets(), *s))),
    );
    drop(hosted);
    let name_task = network_names(&config.state_dir, &cache, &name_keys, clock.now());
    drop(name_keys);
    drop(service_seed);
    let socket_path = config.control_socket.clone();
    if let Some(s) = dns_socket {
        rt.spawn(dns::serve(s, state.clone()));
    }
    if let Some(l) = socks_listener {
        rt.spawn(socks::serve(l, state.clone()));
    }
    let result = rt.block_on(run_async(
        dev,
        control_listener,
        sockets,
        Core {
            node,
            flow,
            commands: commands_rx,
            names: name_task,
            exit: gnx.zip(gateway),
        },
        commands_tx,
        clock,
        state,
    ));
    remove_socket(&socket_path);
    if serve_exit {
        match platform::exit_net::tear_down_exit(&exit_kernel.unwrap_or_default()) {
            Ok(()) => tracing::info!("exit NAT table removed"),
            Err(e) => tracing::warn!("{e}"),
        }
    }
    if config.outbound.enabled() {
        let done = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| {
                rt.block_on(platform::exit_net::tear_down_outbound(
                    &config.outbound.routes,
                    config.outbound.socks.is_some(),
                ))
                .map_err(|e| e.to_string())
            });
        match done {
            Ok(()) => tracing::info!("routes through exits removed"),
            Err(e) => tracing::warn!("removing the routes through exits: {e}"),
        }
    }
    result
}

/// This node's claims (`state_dir/names`, made by `globalnet name claim`), for every hosted
/// service's key (`keys`: address and seed, the default service's first), and its pins (in the
/// cache, where the daemon may write after the privilege drop).
fn network_names(
    state_dir: &std::path::Path,
    cache: &std::path::Path,
    keys: &[([u8; 16], [u8; 32])],
    now: time::Instant,
) -> names::NameTask {
    let (own, bad) = crate::names::claim_files::load_all(state_dir);
    for e in bad {
        tracing::warn!("{e}");
    }
    let pins = crate::names::claim_files::load_pins(cache).unwrap_or_else(|e| {
        tracing::warn!("{e}; starting with no name pins");
        Default::default()
    });
    names::NameTask::new(keys, own, pins, cache.to_path_buf(), now)
}

/// The current onion key and when it was made. A rotated key is kept in `state_dir` when the
/// daemon may write there (the packaged unit), else in the cache (root-then-`user` mode), which
/// then holds the newer key.
fn onion_key(
    state_dir: &std::path::Path,
    cache: &std::path::Path,
    keys: &NodeKeys,
) -> Result<(x25519_dalek::StaticSecret, time::Instant), DaemonError> {
    use crate::crypto::keys::{read_key_file_if_present, KeyKind, RELAY_ONION_FILE};
    let unix_ms = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(time::Instant::ZERO, |d| {
                time::Instant::from_unix_ms(d.as_millis() as Millis)
            })
    };
    let cached = read_key_file_if_present(&cache.join(RELAY_ONION_FILE), KeyKind::X25519)
        .map_err(ctx("rotated onion key"))?;
    if let Some((secret, at)) = cached {
        return Ok((x25519_dalek::StaticSecret::from(secret), unix_ms(at)));
    }
    let at = std::fs::metadata(state_dir.join(RELAY_ONION_FILE))
        .and_then(|m| m.modified())
        .map_or(time::Instant::ZERO, unix_ms);
    Ok((keys.relay_onion.clone(), at))
}

/// Writes the guards to keep off the event loop (a synced file) and reports how it went.
fn save_guards(
    path: PathBuf,
    guards: Vec<crate::circuit::path::Guard>,
    commands: mpsc::Sender<Command>,
) {
    tokio::spawn(async move {
        let result = tokio::task::spawn_blocking(move || guard_file::save_list(&guards, &path))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        let _ = commands.send(Command::GuardsSaved(result)).await;
    });
}

/// Keeps a rotated onion key (0600), off the event loop: over the old key in `state_dir` where
/// the daemon may write (the old secret is gone then), else in the cache.
fn save_onion_key(state_dir: PathBuf, cache: PathBuf, key: OnionKey) {
    use crate::crypto::keys::{replace_key_file, KeyKind, RELAY_ONION_FILE};
    tokio::task::spawn_blocking(move || {
        let secret = key.secret_bytes();
        match replace_key_file(&state_dir, RELAY_ONION_FILE, &secret, KeyKind::X25519) {
            Ok(()) => {
                let _ = std::fs::remove_file(cache.join(RELAY_ONION_FILE));
            }
            Err(first) => {
                if let Err(e) = replace_key_file(&cache, RELAY_ONION_FILE, &secret, KeyKind::X25519)
                {
                    tracing::warn!("keeping the new onion key: {first}; {e}");
                }
            }
        }
    });
}

fn remove_socket(path: &PathBuf) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::debug!("removing {}: {e}", path.display());
    }
}

/// What the link task owns: the node, the flow layer, and the control commands' receiver.
struct Core {
    node: Node,
    flow: FlowLayer,
    commands: mpsc::Receiver<Command>,
    names: names::NameTask,
    /// `gnx0` and the gateway, at an exit (started inside the runtime).
    exit: Option<(tun_rs::SyncDevice, crate::exit::gateway::ExitGateway)>,
}

async fn run_async(
    dev: tun_rs::SyncDevice,
    control_listener: std::os::unix::net::UnixListener,
    sockets: Vec<(std::net::UdpSocket, bool)>,
    core: Core,
    commands: mpsc::Sender<Command>,
    clock: Clock,
    state: Arc<NodeState>,
) -> Result<(), DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let dev = Arc::new(platform::tun::into_async(dev).map_err(ctx("TUN"))?);
    let mut sigterm = signal(SignalKind::terminate()).map_err(ctx("signals"))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(ctx("signals"))?;
    // Without a handler a HUP would end the daemon; it reloads the config instead.
    let mut sighup = signal(SignalKind::hangup()).map_err(ctx("signals"))?;

    let control_task = tokio::spawn(control::serve(control_listener, state.clone()));
    let petnames_task = tokio::spawn(names::watch_petnames(state.clone()));
    let claims_task = tokio::spawn(names::watch_claims(state.clone()));
    // TUN reader -> link task (packets from the kernel), and their buffers back.
    let (from_tun_tx, from_tun_rx) = mpsc::channel(PACKET_QUEUE);
    let (read_bufs_tx, read_bufs_rx) = mpsc::channel(PACKET_QUEUE * 2);
    // Link task -> TUN writer (packets for the kernel), and their buffers back.
    let (to_tun_tx, to_tun_rx) = mpsc::channel(PACKET_QUEUE);
    let (write_bufs_tx, write_bufs_rx) = mpsc::channel(PACKET_QUEUE * 2);
    let buf_len = usize::from(state.config.tun.mtu);
    // With offload gn0's reads and writes carry a virtio-net header: the offload pair of tasks.
    let offload = dev.tcp_gso();
    state.tun.offload.store(offload, Ordering::Relaxed);
    let tun_task = if offload {
        tokio::spawn(tun_offload::tun_reader(
            dev.clone(),
            from_tun_tx,
            read_bufs_rx,
            buf_len,
            state.clone(),
        ))
    } else {
        tokio::spawn(tun_reader(
            dev.clone(),
            from_tun_tx,
            read_bufs_rx,
            buf_len,
            state.clone(),
        ))
    };
    let writer_task = if offload {
        tokio::spawn(tun_offload::tun_writer(
            dev,
            to_tun_rx,
            write_bufs_tx,
            state.clone(),
            buf_len,
        ))
    } else {
        tokio::spawn(tun_writer(dev, to_tun_rx, write_bufs_tx, state.clone()))
    };
    let routes_task = tokio::spawn(route_refresher(state.config.tun.name.clone(), commands));
    let sockets = sockets
        .into_iter()
        .map(|(s, dual)| udp::Port::new(s, dual))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ctx("UDP"))?;
    let pipes = Pipes {
        from_tun: from_tun_rx,
        read_bufs: read_bufs_tx,
        to_tun: to_tun_tx,
        write_bufs: write_bufs_rx,
    };
    let mut link_task = tokio::spawn(link_loop(sockets, core, pipes, clock, state.clone()));
    let mut tun_task = tun_task;
    let watchdog = tokio::spawn(watchdog_loop());

    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("running"),
    ]);
    tracing::info!(
        interface = %state.config.tun.name,
        mtu = state.config.tun.mtu,
        offload,
        relay = state.config.relay_enabled(),
        "globalnet is up"
    );

    let outcome = loop {
        break tokio::select! {
            _ = sighup.recv() => {
                notify(&[sd_notify::NotifyState::Reloading]);
                reload::reload(&state.config_path, &state).await;
                state.reload_petnames();
                names::reload_claims(&state).await;
                notify(&[sd_notify::NotifyState::Ready]);
                continue;
            }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping"); Ok(()) }
            _ = sigint.recv() => { tracing::info!("SIGINT: stopping"); Ok(()) }
            r = &mut tun_task => Err(DaemonError(format!("TUN task ended: {}", match r {
                Ok(Err(e)) => e.to_string(),
                Ok(Ok(())) => "device closed".to_string(),
                Err(e) => e.to_string(),
            }))),
            r = &mut link_task => Err(DaemonError(format!("link task ended: {}", match r {
                Ok(Err(e)) => e.to_string(),
                Ok(Ok(())) => "no sockets".to_string(),
                Err(e) => e.to_string(),
            }))),
        };
    };
    notify(&[sd_notify::NotifyState::Stopping]);
    control_task.abort();
    petnames_task.abort();
    claims_task.abort();
    watchdog.abort();
    writer_task.abort();
    routes_task.abort();
    outcome
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!("sd_notify: {e}");
    }
}

/// Pets the systemd watchdog at half its interval; does nothing without one.
async fn watchdog_loop() {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_micros(usec / 2));
    loop {
        tick.tick().await;
        notify(&[sd_notify::NotifyState::Watchdog]);
    }
}

/// The environment variable that makes circuits retire sooner, for tests of what outlives a
/// circuit (the netns test of exit sessions). At least 10 s, so a circuit can carry something.
pub const TEST_CIRCUIT_MAX_AGE_ENV: &str = "GLOBALNET_TEST_CIRCUIT_MAX_AGE_MS";

fn test_circuit_max_age() -> Option<u64> {
    std::env::var(TEST_CIRCUIT_MAX_AGE_ENV)
        .ok()?
        .parse::<u64>()
        .ok()
        .map(|ms| ms.max(10_000))
}
