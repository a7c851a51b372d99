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
use crate::time::{Clock, Millis};
use crate::wire::udp;

/// Packets waiting between the TUN tasks and the link task, each way. The TUN reader waits when
/// the link task is behind (the kernel's queue then holds or drops, and TCP backs off); the link
/// task never waits for the TUN writer: a packet that finds its queue full is dropped.
const PACKET_QUEUE: usize = 256;
/// Packets from the TUN handled per wake-up of the link task before it sends.
const PACKET_BATCH: usize = 64;
/// Spare buffers the link task keeps for what it writes to the kernel.
const SPARE_BUFFERS: usize = 64;
/// How long a `ping` waits for the peer (a first ping includes introduction and rendezvous).
const PING_TIMEOUT_MS: Millis = 30_000;
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
    /// A bootstrap host name resolved (or not).
    Resolved {
        name: String,
        result: Result<Vec<SocketAddr>, String>,
    },
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

/// The link layer's state as the control socket shows it, refreshed by the link task.
#[derive(Default)]
struct LinkSnapshot {
    peers: Vec<PeerInfo>,
    stats: LinkStats,
    view: usize,
    view_sources: usize,
    nat: &'static str,
    observed: Option<SocketAddr>,
    record: bool,
    circuits: Vec<CircuitInfo>,
    relayed: usize,
    circ_stats: CircuitStats,
    path_error: Option<String>,
    flow: FlowStats,
    flows: usize,
    queue_drops: u64,
    foreign_prefixes: Vec<String>,
    services: Vec<ServiceInfo>,
    sessions: Vec<SessionInfo>,
    bootstrap: Vec<BootstrapInfo>,
    /// Why the node has no links or no circuits, in one line.
    reason: Option<String>,
    local_endpoints: Vec<SocketAddr>,
    /// Unix ms of the snapshot (for "since" fields).
    at: Millis,
    guards: usize,
    guards_temporary: bool,
    guard_save_error: Option<String>,
}

/// What the control socket reports.
struct NodeState {
    address: Ipv6Addr,
    relay_key: String,
    link_key: String,
    config: Config,
    started: Instant,
    tun: TunCounters,
    links: Mutex<LinkSnapshot>,
    budget: MemoryBudget,
    commands: mpsc::Sender<Command>,
}

impl From<&PeerInfo> for PeerAnswer {
    fn from(p: &PeerInfo) -> PeerAnswer {
        PeerAnswer {
            relay_key: p.relay_key.clone(),
            link_key: p.link_key.clone(),
            endpoint: p.endpoint.to_string(),
            direct: p.direct,
            punched: p.punched,
            rtt_ms: p.rtt_ms.map(tenths),
            established_s: p.established_s,
            last_handshake_s: p.last_handshake_s,
            outbound: p.outbound,
            bytes_in: p.bytes_in,
            bytes_out: p.bytes_out,
        }
    }
}

impl From<&CircuitInfo> for CircuitAnswer {
    fn from(c: &CircuitInfo) -> CircuitAnswer {
        CircuitAnswer {
            id: format!("{:x}", c.id.0),
            hops: c.hops,
            purpose: c.purpose.name().to_string(),
            age_s: c.age_s,
            state: if c.ready {
                CircuitState::Ready
            } else {
                CircuitState::Building
            },
            build_ms: c.build_ms,
        }
    }
}

impl From<&SessionInfo> for SessionAnswer {
    fn from(s: &SessionInfo) -> SessionAnswer {
        SessionAnswer {
            peer: s.peer.to_string(),
            role: s.role.to_string(),
            local: s.local.to_string(),
            state: s.state.to_string(),
            circuits: s.circuits,
            flows: s.flows,
            age_s: s.age_s,
        }
    }
}

/// Milliseconds rounded to a tenth, as the answers show them.
fn tenths(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
}

/// An answer as the control socket carries it. The JSON value's object keys are sorted, which
/// keeps the bytes on the wire what they were when the answers were built by hand.
fn to_result<T: serde::Serialize>(answer: &T) -> Result<Value, String> {
    serde_json::to_value(answer).map_err(|e| format!("internal error: {e}"))
}

impl control::Handler for NodeState {
    fn handle(&self, req: &Request) -> Answer {
        if req.cmd == Cmd::Ping {
            return self.ping(req.addr.as_deref());
        }
        Answer::Now(self.snapshot_answer(&req.cmd))
    }
}

impl NodeState {
    fn ping(&self, addr: Option<&str>) -> Answer {
        let Some(addr) = addr else {
            return Answer::Now(Err("ping needs an address (`addr`)".into()));
        };
        let dst = match addr.parse::<Ipv6Addr>() {
            Ok(a) if is_overlay(&a) => a,
            _ => {
                return Answer::Now(Err(format!(
                    "`{addr}` is not an overlay address; GlobalNet addresses are in fd00::/8"
                )))
            }
        };
        if dst == self.address {
            return Answer::Now(Err(
                "that is this node's own address; ping another node's address".into(),
            ));
        }
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Ping {
            dst: dst.octets(),
            reply: tx,
        };
        match self.commands.try_send(cmd) {
            Ok(()) => Answer::Later(rx),
            Err(_) => Answer::Now(Err("the daemon is busy; try again".into())),
        }
    }

    fn snapshot_answer(&self, cmd: &Cmd) -> Result<Value, String> {
        let links = self
            .links
            .lock()
            .map_err(|_| "internal error: state lock poisoned".to_string())?;
        match cmd {
            Cmd::Status => to_result(&self.status(&links)),
            Cmd::Peers => to_result(&links.peers.iter().map(PeerAnswer::from).collect::<Vec<_>>()),
            Cmd::Circuits => to_result(
                &links
                    .circuits
                    .iter()
                    .map(CircuitAnswer::from)
                    .collect::<Vec<_>>(),
            ),
            Cmd::Services => to_result(&self.services(&links.services)),
            Cmd::Sessions => to_result(
                &links
                    .sessions
                    .iter()
                    .map(SessionAnswer::from)
                    .collect::<Vec<_>>(),
            ),
            // `ping` never gets here: the link task answers it (see `handle`).
            Cmd::Ping | Cmd::Unknown(_) => Err(format!(
                "unknown command `{cmd}`; this daemon knows status, peers, circuits, services, sessions, ping"
            )),
        }
    }

    fn status(&self, links: &LinkSnapshot) -> StatusAnswer {
        let strings = |addrs: &[SocketAddr]| addrs.iter().map(|a| a.to_string()).collect();
        StatusAnswer {
            version: env!("CARGO_PKG_VERSION").to_string(),
            address: self.address.to_string(),
            relay_key: self.relay_key.clone(),
            link_key: self.link_key.clone(),
            interface: self.config.tun.name.clone(),
            mtu: self.config.tun.mtu,
            relay: self.config.relay_enabled(),
            peers: links.peers.len(),
            nat: links.nat.to_string(),
            observed_endpoint: links.observed.map(|e| e.to_string()),
            relay_record: links.record,
            local_endpoints: strings(&links.local_endpoints),
            bootstrap: links
                .bootstrap
                .iter()
                .map(|b| BootstrapStatus {
                    peer: b.peer.clone(),
                    addrs: strings(&b.addrs),
                    state: b.state.to_string(),
                    failing_s: b.failing_since.map(|t| links.at.saturating_sub(t) / 1000),
                    tries: b.tries,
                    last_error: b.last_error.clone(),
                })
                .collect(),
            reason: links.reason.clone(),
            guards: GuardStatus {
                count: links.guards,
                temporary: links.guards_temporary,
                save_error: links.guard_save_error.clone(),
            },
            view: ViewStatus {
                relays: links.view,
                sources: links.view_sources,
            },
            links: LinkCounts {
                datagrams_in: links.stats.datagrams_in,
                datagrams_out: links.stats.datagrams_out,
                dropped: links.stats.dropped,
                refused: links.stats.refused,
                malformed: links.stats.malformed,
                bad_records: links.stats.bad_records,
            },
            memory: MemoryStatus {
                used: self.budget.used(),
                limit: self.budget.limit(),
            },
            circuits: CircuitCounts {
                own: links.circuits.len(),
                ready: links.circuits.iter().filter(|c| c.ready).count(),
                relayed: links.relayed,
                relayed_cells: links.circ_stats.relayed_cells,
                built: links.circ_stats.built,
                build_failures: links.circ_stats.build_failures,
                creates_refused: links.circ_stats.creates_refused,
                path_error: links.path_error.clone(),
            },
            sessions: links.sessions.len(),
            services: links.services.len(),
            flows: FlowCounts {
                active: links.flows,
                to_peers: links.flow.to_peers,
                to_kernel: links.flow.to_kernel,
                refused: links.flow.refused,
                icmp_to_kernel: links.flow.icmp_to_kernel,
                dropped_from_kernel: links.flow.dropped_from_kernel,
                dropped_from_peers: links.flow.dropped_from_peers,
                foreign_sources: links.flow.foreign_sources,
                foreign_prefixes: links.foreign_prefixes.clone(),
            },
            uptime_s: self.started.elapsed().as_secs(),
            pid: std::process::id(),
            tun: TunCounts {
                packets_in: self.tun.packets_in.load(Ordering::Relaxed),
                packets_out: self.tun.packets_out.load(Ordering::Relaxed),
                icmp_replies: self.tun.icmp_replies.load(Ordering::Relaxed),
                dropped: links.flow.dropped_from_kernel + links.queue_drops,
                write_errors: self.tun.write_errors.load(Ordering::Relaxed),
            },
        }
    }

    /// The services the node hosts, with the ports `[expose]` opens on the node's own address.
    /// The default service is listed as soon as `[expose]` lists ports, published or not yet.
    fn services(&self, hosted: &[ServiceInfo]) -> Vec<ServiceAnswer> {
        let expose = &self.config.expose;
        let exposes = !expose.tcp.is_empty() || !expose.udp.is_empty();
        let mut out: Vec<ServiceAnswer> = hosted
            .iter()
            .map(|s| {
                let own = s.address == self.address;
                ServiceAnswer {
                    address: s.address.to_string(),
                    tcp: if own { expose.tcp.clone() } else { Vec::new() },
                    udp: if own { expose.udp.clone() } else { Vec::new() },
                    intro_points: s.intro_points.clone(),
                    descriptor_age_s: s.descriptor_age_s,
                    published: s.descriptor_age_s.is_some(),
                    sessions: s.sessions,
                }
            })
            .collect();
        if exposes && !hosted.iter().any(|s| s.address == self.address) {
            out.push(ServiceAnswer {
                address: self.address.to_string(),
                tcp: expose.tcp.clone(),
                udp: expose.udp.clone(),
                intro_points: Vec::new(),
                descriptor_age_s: None,
                published: false,
                sessions: 0,
            });
        }
        out
    }
}

/// Runs the node until SIGTERM or SIGINT.
///
/// Order: keys, TUN, routes, control socket (all privileged), then the privilege drop while the
/// process has one thread, then the multi-threaded runtime.
pub fn run(config: Config) -> Result<(), DaemonError> {
    let (keys, created) = NodeKeys::load_or_create(&config.state_dir).map_err(ctx("keys"))?;
    if !created.0.is_empty() {
        tracing::info!(files = ?created.0, dir = %config.state_dir.display(), "created missing keys");
    }
    let address = keys.address();

    let ids = config
        .user
        .as_deref()
        .map(privdrop::lookup)
        .transpose()
        .map_err(ctx("config `user`"))?;
    let dev = platform::tun::create(&config.tun.name, config.tun.mtu).map_err(ctx("set-up"))?;
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ctx("set-up runtime"))?;
        rt.block_on(platform::routes::configure(&config.tun.name, address))
            .map_err(ctx("configuring the TUN device"))?;
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
                .map(|s| (s, d))
                .map_err(|e| DaemonError(format!("cannot listen on UDP {a}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // What the running daemon writes goes where the dropped user may write it.
    let cache = platform::state::prepare_cache(
        &config.state_dir,
        owner,
        &[crate::circuit::path::GUARDS_FILE],
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
    let flow = FlowLayer::new(
        FlowConfig {
            address,
            client_seed: service_seed.clone(),
            real_identity_for: config.client.real_identity.clone(),
            policy: Policy::new(&config.expose.tcp, &config.expose.udp),
        },
        budget.clone(),
    );
    // Everything random from the operating system: secrets read it afresh, choices get 256 bits.
    let link = LinkLayer::new(
        link_cfg,
        link_keys,
        budget,
        Randomness::from_os(),
        clock.now(),
    );
    let mut node = Node::new(link, onion, Randomness::from_os(), clock.now());
    if !node.secrets_from_os() {
        return Err(DaemonError(
            "secret randomness is not the operating system's: refusing to run".into(),
        ));
    }
    node.set_guard_file(cache.join(crate::circuit::path::GUARDS_FILE));
    node.set_onion_key_since(onion_since);
    node.set_client_identity(
        *service_seed,
        config
            .client
            .real_identity
            .iter()
            .map(|a| a.octets())
            .collect(),
    );
    if !config.expose.tcp.is_empty() || !config.expose.udp.is_empty() {
        node.add_service(clock.now(), *service_seed);
    }
    drop(service_seed);
    let socket_path = config.control_socket.clone();
    let result = rt.block_on(run_async(
        dev,
        control_listener,
        sockets,
        Core {
            node,
            flow,
            commands: commands_rx,
        },
        commands_tx,
        clock,
        state,
    ));
    remove_socket(&socket_path);
    result
}

/// The current onion key and when it was made. A rotated key is kept in `state_dir` when the
/// daemon may write there (the packaged unit), else in the cache (root-then-`user` mode), which
/// then holds the newer key.
fn onion_key(
    state_dir: &std::path::Path,
    cache: &std::path::Path,
    keys: &NodeKeys,
) -> Result<(x25519_dalek::StaticSecret, Millis), DaemonError> {
    use crate::crypto::keys::{read_key_file_if_present, KeyKind, RELAY_ONION_FILE};
    let unix_ms = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as Millis)
    };
    let cached = read_key_file_if_present(&cache.join(RELAY_ONION_FILE), KeyKind::X25519)
        .map_err(ctx("rotated onion key"))?;
    if let Some((secret, at)) = cached {
        return Ok((x25519_dalek::StaticSecret::from(secret), unix_ms(at)));
    }
    let at = std::fs::metadata(state_dir.join(RELAY_ONION_FILE))
        .and_then(|m| m.modified())
        .map_or(0, unix_ms);
    Ok((keys.relay_onion.clone(), at))
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

    let control_task = tokio::spawn(control::serve(control_listener, state.clone()));
    // TUN reader -> link task (packets from the kernel), and their buffers back.
    let (from_tun_tx, from_tun_rx) = mpsc::channel(PACKET_QUEUE);
    let (read_bufs_tx, read_bufs_rx) = mpsc::channel(PACKET_QUEUE * 2);
    // Link task -> TUN writer (packets for the kernel), and their buffers back.
    let (to_tun_tx, to_tun_rx) = mpsc::channel(PACKET_QUEUE);
    let (write_bufs_tx, write_bufs_rx) = mpsc::channel(PACKET_QUEUE * 2);
    let buf_len = usize::from(state.config.tun.mtu);
    let tun_task = tokio::spawn(tun_reader(
        dev.clone(),
        from_tun_tx,
        read_bufs_rx,
        buf_len,
        state.clone(),
    ));
    let writer_task = tokio::spawn(tun_writer(dev, to_tun_rx, write_bufs_tx, state.clone()));
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
    let link_task = tokio::spawn(link_loop(sockets, core, pipes, clock, state.clone()));
    let watchdog = tokio::spawn(watchdog_loop());

    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("running"),
    ]);
    tracing::info!(
        interface = %state.config.tun.name,
        mtu = state.config.tun.mtu,
        relay = state.config.relay_enabled(),
        "globalnet is up"
    );

    let outcome = tokio::select! {
        _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping"); Ok(()) }
        _ = sigint.recv() => { tracing::info!("SIGINT: stopping"); Ok(()) }
        r = tun_task => Err(DaemonError(format!("TUN task ended: {}", match r {
            Ok(Err(e)) => e.to_string(),
            Ok(Ok(())) => "device closed".to_string(),
            Err(e) => e.to_string(),
        }))),
        r = link_task => Err(DaemonError(format!("link task ended: {}", match r {
            Ok(Err(e)) => e.to_string(),
            Ok(Ok(())) => "no sockets".to_string(),
            Err(e) => e.to_string(),
        }))),
    };
    notify(&[sd_notify::NotifyState::Stopping]);
    control_task.abort();
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

/// Reads the kernel's packets from the TUN into recycled buffers and hands them to the link
/// task, waiting when it is behind.
async fn tun_reader(
    dev: Arc<tun_rs::AsyncDevice>,
    to_link: mpsc::Sender<Vec<u8>>,
    mut bufs: mpsc::Receiver<Vec<u8>>,
    buf_len: usize,
    state: Arc<NodeState>,
) -> std::io::Result<()> {
    loop {
        let mut buf = bufs
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(buf_len));
        buf.resize(buf_len, 0);
        let n = dev.recv(&mut buf).await?;
        buf.truncate(n);
        state.tun.packets_in.fetch_add(1, Ordering::Relaxed);
        if to_link.send(buf).await.is_err() {
            return Ok(());
        }
    }
}

/// Writes the packets the link task has for the kernel and hands their buffers back.
async fn tun_writer(
    dev: Arc<tun_rs::AsyncDevice>,
    mut from_link: mpsc::Receiver<Vec<u8>>,
    bufs: mpsc::Sender<Vec<u8>>,
    state: Arc<NodeState>,
) {
    while let Some(buf) = from_link.recv().await {
        match dev.send(&buf).await {
            Ok(_) => state.tun.packets_out.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                tracing::debug!("writing to the TUN: {e}");
                state.tun.write_errors.fetch_add(1, Ordering::Relaxed)
            }
        };
        let _ = bufs.try_send(buf);
    }
}

/// Reads the routes through other interfaces now and then, for the inbound source check.
async fn route_refresher(ifname: String, commands: mpsc::Sender<Command>) {
    let mut warned = false;
    loop {
        match platform::routes::prefixes_elsewhere(&ifname).await {
            Ok(p) => {
                if commands.send(Command::ForeignPrefixes(p)).await.is_err() {
                    return;
                }
            }
            Err(e) if !warned => {
                warned = true;
                tracing::warn!("reading routes for the inbound source check: {e}");
            }
            Err(_) => {}
        }
        tokio::time::sleep(ROUTE_REFRESH).await;
    }
}

/// Receives on up to two sockets; pending forever when there is no such socket.
async fn recv_on(
    socket: Option<&udp::Port>,
    buf: &mut [u8],
) -> std::io::Result<(usize, usize, udp::Received)> {
    match socket {
        Some(s) => s.recv(buf).await,
        None => std::future::pending().await,
    }
}

/// Hands one read to the node: several datagrams of `stride` bytes when GRO coalesced them.
fn deliver(node: &mut Node, now: Millis, buf: &[u8], n: usize, stride: usize, rx: udp::Received) {
    for d in buf.get(..n).unwrap_or(&[]).chunks(stride) {
        node.handle_datagram_at(now, rx.from, rx.local, d);
    }
}

/// Handles what else is already queued on the socket (up to a batch) before going back to the
/// event loop: fewer wake-ups and timer re-arms per datagram under load.
fn drain(socket: Option<&udp::Port>, node: &mut Node, clock: &Clock, buf: &mut [u8]) {
    let Some(s) = socket else { return };
    for _ in 0..63 {
        match s.try_recv(buf) {
            Ok((n, stride, rx)) => deliver(node, clock.now(), buf, n, stride, rx),
            Err(_) => break,
        }
    }
}

/// The channels between the link task and the TUN tasks.
struct Pipes {
    from_tun: mpsc::Receiver<Vec<u8>>,
    read_bufs: mpsc::Sender<Vec<u8>>,
    to_tun: mpsc::Sender<Vec<u8>>,
    write_bufs: mpsc::Receiver<Vec<u8>>,
}

/// The link task's side of the packet path: the flow layer between the TUN and the node.
struct PacketPath {
    flow: FlowLayer,
    reply: Vec<u8>,
    spare: Vec<Vec<u8>>,
    to_tun: mpsc::Sender<Vec<u8>>,
    read_bufs: mpsc::Sender<Vec<u8>>,
    queue_drops: u64,
    state: Arc<NodeState>,
}

impl PacketPath {
    /// A packet from the kernel: through the flow layer to a session, or answered locally.
    fn kernel_packet(&mut self, node: &mut Node, now: Millis, mut buf: Vec<u8>) {
        match self.flow.on_tun_packet(now, &mut buf, &mut self.reply) {
            TunVerdict::Send { dst } => {
                if node.send_packet(now, dst, &buf).is_err()
                    && self.flow.on_send_failed(&buf, &mut self.reply)
                {
                    self.reply_to_kernel();
                }
            }
            TunVerdict::Reply(kind) => {
                tracing::trace!(?kind, "ICMPv6 reply to the kernel");
                self.reply_to_kernel();
            }
            TunVerdict::Drop(reason) => tracing::trace!(?reason, "dropped a packet from the TUN"),
        }
        let _ = self.read_bufs.try_send(buf);
    }

    /// A packet from a session: into the kernel, or refused back to the peer.
    fn peer_packet(&mut self, node: &mut Node, now: Millis, mut buf: Vec<u8>) {
        match self.flow.on_session_packet(now, &mut buf, &mut self.reply) {
            SessionVerdict::Deliver => {
                if let Err(e) = self.to_tun.try_send(buf) {
                    self.queue_drops += 1;
                    node.recycle_packet(e.into_inner());
                }
                return;
            }
            SessionVerdict::Refuse { dst } => {
                if let Err(e) = node.send_packet(now, dst, &self.reply) {
                    tracing::trace!(?e, "refusal not sent");
                }
            }
            SessionVerdict::Drop(reason) => {
                tracing::trace!(?reason, "dropped a packet from a session")
            }
        }
        node.recycle_packet(buf);
    }

    /// The session layer gave up on `dst`: the flows waiting for it learn at once.
    fn unreachable(&mut self, dst: &[u8; 16]) {
        let (spare, to_tun, drops) = (&mut self.spare, &self.to_tun, &mut self.queue_drops);
        let counter = &self.state.tun.icmp_replies;
        self.flow.on_unreachable(dst, &mut self.reply, |r| {
            let mut b = spare.pop().unwrap_or_default();
            b.clear();
            b.extend_from_slice(r);
            match to_tun.try_send(b) {
                Ok(()) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    *drops += 1;
                    spare.push(e.into_inner());
                }
            }
        });
    }

    fn reply_to_kernel(&mut self) {
        let mut b = self.spare.pop().unwrap_or_default();
        b.clear();
        b.extend_from_slice(&self.reply);
        match self.to_tun.try_send(b) {
            Ok(()) => {
                self.state.tun.icmp_replies.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.queue_drops += 1;
                self.spare.push(e.into_inner());
            }
        }
    }

    /// A buffer the TUN writer is done with: kept for replies, or handed back to the node.
    fn returned(&mut self, node: &mut Node, buf: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS {
            self.spare.push(buf);
        } else {
            node.recycle_packet(buf);
        }
    }
}

/// Where a control answer goes.
type AnswerTx = oneshot::Sender<Result<Value, String>>;

/// Pings waiting for their PONG: id -> (destination, answer, sent at).
#[derive(Default)]
struct Pings {
    waiting: HashMap<u64, (Ipv6Addr, AnswerTx, Millis)>,
}

impl Pings {
    fn start(&mut self, node: &mut Node, now: Millis, dst: [u8; 16], reply: AnswerTx) {
        if self.waiting.len() >= MAX_PINGS {
            let _ = reply.send(Err("too many pings in flight; try again".into()));
            return;
        }
        match node.e2e_ping(now, dst) {
            Ok(id) => {
                self.waiting.insert(id, (Ipv6Addr::from(dst), reply, now));
            }
            Err(crate::node::sessions::SendError::Unreachable(why)) => {
                let _ = reply.send(Err(format!(
                    "{} is unreachable: {why}",
                    Ipv6Addr::from(dst)
                )));
            }
        }
    }

    /// The PONG for ping `id` arrived.
    fn answer(&mut self, id: u64, rtt_ms: f64) {
        if let Some((dst, reply, _)) = self.waiting.remove(&id) {
            let _ = reply.send(to_result(&PingAnswer {
                addr: dst.to_string(),
                rtt_ms: tenths(rtt_ms),
            }));
        }
    }

    fn unreachable(&mut self, dst: &[u8; 16], why: &str) {
        let dst = Ipv6Addr::from(*dst);
        let ids: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, (d, _, _))| *d == dst)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some((_, reply, _)) = self.waiting.remove(&id) {
                let _ = reply.send(Err(format!("{dst} is unreachable: {why}")));
            }
        }
    }

    fn expire(&mut self, now: Millis) {
        let old: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, (_, _, at))| now.saturating_sub(*at) >= PING_TIMEOUT_MS)
            .map(|(id, _)| *id)
            .collect();
        for id in old {
            if let Some((dst, reply, _)) = self.waiting.remove(&id) {
                let _ = reply.send(Err(format!(
                    "no answer from {dst} within {} s; the address may be wrong or its service offline",
                    PING_TIMEOUT_MS / 1000
                )));
            }
        }
    }
}

/// The link task: owns the UDP sockets, the node's state machine and the flow layer.
/// Sends every datagram the node has queued, each on a socket of its address family, from the
/// address the peer wrote to.
async fn send_transmits(node: &mut Node, sockets: &[udp::Port]) {
    while let Some(t) = node.poll_transmit() {
        if let Some(s) = sockets.iter().find(|s| s.serves(&t.dst)) {
            if let Err(e) = s.send(t.dst, t.src, &t.data).await {
                tracing::debug!("UDP send to {}: {e}", t.dst);
            }
        }
        node.recycle(t.data);
    }
}

async fn link_loop(
    sockets: Vec<udp::Port>,
    core: Core,
    pipes: Pipes,
    clock: Clock,
    state: Arc<NodeState>,
) -> std::io::Result<()> {
    if sockets.is_empty() {
        return Ok(());
    }
    let Core {
        node: mut link,
        flow,
        mut commands,
    } = core;
    let Pipes {
        mut from_tun,
        read_bufs,
        to_tun,
        mut write_bufs,
    } = pipes;
    let mut path = PacketPath {
        flow,
        reply: Vec::with_capacity(usize::from(crate::config::OVERLAY_MTU)),
        spare: Vec::new(),
        to_tun,
        read_bufs,
        queue_drops: 0,
        state: state.clone(),
    };
    let mut pings = Pings::default();
    let mut buf0 = vec![0u8; sockets.first().map_or(0, udp::Port::buffer_len)];
    let mut buf1 = vec![0u8; sockets.get(1).map_or(0, udp::Port::buffer_len)];
    let mut events: Vec<NodeEvent> = Vec::new();
    let mut last_snapshot = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = link
            .poll_timeout()
            .map(|t| tokio::time::Instant::from_std(clock.instant_at(t)));
        tokio::select! {
            r = recv_on(sockets.first(), &mut buf0) => match r {
                Ok((n, stride, rx)) => {
                    deliver(&mut link, clock.now(), &buf0, n, stride, rx);
                    drain(sockets.first(), &mut link, &clock, &mut buf0);
                }
                Err(e) => tracing::debug!("UDP receive: {e}"),
            },
            r = recv_on(sockets.get(1), &mut buf1) => match r {
                Ok((n, stride, rx)) => {
                    deliver(&mut link, clock.now(), &buf1, n, stride, rx);
                    drain(sockets.get(1), &mut link, &clock, &mut buf1);
                }
                Err(e) => tracing::debug!("UDP receive: {e}"),
            },
            p = from_tun.recv() => {
                let Some(p) = p else {
                    return Err(std::io::Error::other("the TUN reader stopped"));
                };
                let now = clock.now();
                path.kernel_packet(&mut link, now, p);
                for _ in 1..PACKET_BATCH {
                    match from_tun.try_recv() {
                        Ok(p) => path.kernel_packet(&mut link, now, p),
                        Err(_) => break,
                    }
                }
            }
            Some(b) = write_bufs.recv() => {
                path.returned(&mut link, b);
                while let Ok(b) = write_bufs.try_recv() {
                    path.returned(&mut link, b);
                }
            }
            Some(cmd) = commands.recv() => match cmd {
                Command::Ping { dst, reply } => pings.start(&mut link, clock.now(), dst, reply),
                Command::Resolved { name, result } => {
                    link.link.on_resolved(clock.now(), &name, result);
                }
                Command::ForeignPrefixes(p) => {
                    path.flow.policy_mut().set_foreign_prefixes(p);
                    if let Ok(mut snap) = state.links.lock() {
                        snap.foreign_prefixes = path
                            .flow
                            .policy_mut()
                            .foreign_prefixes()
                            .map(|(a, l)| format!("{a}/{l}"))
                            .collect();
                    }
                }
            },
            _ = tick.tick() => {
                let now = clock.now();
                path.flow.sweep(now);
                pings.expire(now);
            }
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => link.handle_timeout(clock.now()),
        }
        send_transmits(&mut link, &sockets).await;
        events.extend(link.drain_events());
        for e in events.drain(..) {
            match e {
                NodeEvent::Link(LinkEvent::Up { link: id, identity }) => {
                    tracing::info!(link = id.0, relay = identity.is_some(), "link up")
                }
                NodeEvent::Link(LinkEvent::Down { link: id, .. }) => {
                    tracing::info!(link = id.0, "link down")
                }
                NodeEvent::Link(LinkEvent::Observed { endpoint }) => {
                    tracing::info!(%endpoint, "a neighbour sees us at this endpoint")
                }
                NodeEvent::Link(LinkEvent::Cell { .. }) => {}
                NodeEvent::Circuit(CircEvent::Built { id, build_ms }) => {
                    tracing::debug!(circuit = id.0, build_ms, "circuit built")
                }
                NodeEvent::Circuit(CircEvent::Closed { id, why }) => {
                    tracing::debug!(circuit = id.0, why, "circuit closed")
                }
                NodeEvent::Circuit(CircEvent::Message { .. }) => {}
                NodeEvent::Circuit(_) => {}
                NodeEvent::Dht { token, outcome } => {
                    tracing::debug!(token, ?outcome, "DHT query done")
                }
                NodeEvent::Packet { buf } => path.peer_packet(&mut link, clock.now(), buf),
                NodeEvent::Unreachable { dst, why } => {
                    tracing::debug!(why, "an overlay destination is unreachable");
                    path.unreachable(&dst);
                    pings.unreachable(&dst, &why);
                }
                NodeEvent::Pong { id, rtt_ms, .. } => pings.answer(id, rtt_ms as f64),
                NodeEvent::Link(LinkEvent::Dht { .. } | LinkEvent::DialFailed { .. }) => {}
            }
        }
        // Replies made while handling events (refusals) leave now, not at the next wake-up.
        send_transmits(&mut link, &sockets).await;
        while let Some(name) = link.link.poll_resolve() {
            spawn_resolve(name, state.commands.clone());
        }
        if let Some(k) = link.take_onion_key_to_save() {
            let dir = state.config.state_dir.clone();
            save_onion_key(dir.clone(), dir.join(platform::state::CACHE_DIR), k);
        }
        let now = clock.now();
        if now.saturating_sub(last_snapshot) >= 250 {
            last_snapshot = now;
            if let Ok(mut snap) = state.links.lock() {
                let l = &link.link;
                snap.peers = l.peers(now);
                snap.stats = l.stats().clone();
                snap.view = l.view().len();
                snap.view_sources = l.view().sources();
                snap.nat = l.nat().name();
                snap.observed = l.observed();
                snap.record = l.own_record().is_some();
                snap.circuits = link.circ.circuits(now);
                snap.relayed = link.circ.relayed_count();
                snap.circ_stats = link.circ.stats().clone();
                snap.path_error = link.path_error().map(str::to_string);
                snap.flow = path.flow.stats().clone();
                snap.flows = path.flow.flows();
                snap.queue_drops = path.queue_drops;
                snap.services = link.services_info();
                snap.sessions = link.sessions_info();
                snap.bootstrap = l.bootstrap_status();
                snap.guards = link.guards().len();
                snap.guards_temporary = link.guards().has_temporary();
                snap.guard_save_error = link.guard_save_error().map(str::to_string);
                snap.local_endpoints = l.local_endpoints().to_vec();
                snap.at = now;
                let ready = snap.circuits.iter().any(|c| c.ready);
                snap.reason = l.isolation_reason(now).or_else(|| {
                    (!ready).then(|| match &snap.path_error {
                        Some(e) => format!("no circuits: {e}"),
                        None if snap.circuits.is_empty() => {
                            "no circuits yet: waiting for relays to choose paths from".to_string()
                        }
                        None => format!("no circuits yet: {} building", snap.circuits.len()),
                    })
                });
            }
        }
    }
}
