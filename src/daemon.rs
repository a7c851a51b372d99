//! The daemon: wires the layers together and owns the I/O tasks (TUN, control socket, signals,
//! systemd notification). Protocol decisions live in the layers; this file only moves bytes and
//! time in and out of them.

use serde_json::{json, Value};
use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

use crate::budget::MemoryBudget;
use crate::circuit::layer::{CircEvent, CircuitInfo, CircuitStats};
use crate::circuit::OnionKey;
use crate::config::Config;
use crate::control;
use crate::crypto::NodeKeys;
use crate::flow::{self, Verdict};
use crate::link::{LinkConfig, LinkEvent, LinkKeys, LinkLayer, LinkStats, PeerInfo};
use crate::node::{Node, NodeEvent};
use crate::platform::{self, privdrop};
use crate::time::Clock;
use crate::wire::udp;

/// Largest packet read from the TUN (the MTU may be configured up to 65535).
const TUN_BUF_LEN: usize = 65536;

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

/// Counters of the TUN task.
#[derive(Default)]
struct TunCounters {
    packets_in: AtomicU64,
    icmp_replies: AtomicU64,
    dropped: AtomicU64,
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
}

fn peer_json(p: &PeerInfo) -> Value {
    json!({
        "relay_key": p.relay_key,
        "link_key": p.link_key,
        "endpoint": p.endpoint.to_string(),
        "direct": p.direct,
        "punched": p.punched,
        "rtt_ms": p.rtt_ms.map(|r| (r * 10.0).round() / 10.0),
        "established_s": p.established_s,
        "last_handshake_s": p.last_handshake_s,
        "outbound": p.outbound,
        "bytes_in": p.bytes_in,
        "bytes_out": p.bytes_out,
    })
}

impl control::Handler for NodeState {
    fn handle(&self, cmd: &str) -> Result<Value, String> {
        let links = self
            .links
            .lock()
            .map_err(|_| "internal error: state lock poisoned".to_string())?;
        match cmd {
            "status" => Ok(json!({
                "version": env!("CARGO_PKG_VERSION"),
                "address": self.address.to_string(),
                "relay_key": self.relay_key,
                "link_key": self.link_key,
                "interface": self.config.tun.name,
                "mtu": self.config.tun.mtu,
                "relay": self.config.relay_enabled(),
                "peers": links.peers.len(),
                "nat": links.nat,
                "observed_endpoint": links.observed.map(|e| e.to_string()),
                "relay_record": links.record,
                "view": {"relays": links.view, "sources": links.view_sources},
                "links": {
                    "datagrams_in": links.stats.datagrams_in,
                    "datagrams_out": links.stats.datagrams_out,
                    "dropped": links.stats.dropped,
                    "refused": links.stats.refused,
                    "malformed": links.stats.malformed,
                    "bad_records": links.stats.bad_records,
                },
                "memory": {"used": self.budget.used(), "limit": self.budget.limit()},
                "circuits": {
                    "own": links.circuits.len(),
                    "ready": links.circuits.iter().filter(|c| c.ready).count(),
                    "relayed": links.relayed,
                    "relayed_cells": links.circ_stats.relayed_cells,
                    "built": links.circ_stats.built,
                    "build_failures": links.circ_stats.build_failures,
                    "creates_refused": links.circ_stats.creates_refused,
                    "path_error": links.path_error,
                },
                "uptime_s": self.started.elapsed().as_secs(),
                "pid": std::process::id(),
                "tun": {
                    "packets_in": self.tun.packets_in.load(Ordering::Relaxed),
                    "icmp_replies": self.tun.icmp_replies.load(Ordering::Relaxed),
                    "dropped": self.tun.dropped.load(Ordering::Relaxed),
                },
            })),
            "peers" => Ok(Value::Array(links.peers.iter().map(peer_json).collect())),
            "circuits" => Ok(Value::Array(
                links
                    .circuits
                    .iter()
                    .map(|c| {
                        json!({
                            "id": format!("{:x}", c.id.0),
                            "hops": c.hops,
                            "purpose": c.purpose.name(),
                            "age_s": c.age_s,
                            "state": if c.ready { "ready" } else { "building" },
                            "build_ms": c.build_ms,
                        })
                    })
                    .collect(),
            )),
            "services" => Ok(json!([{
                "address": self.address.to_string(),
                "tcp": self.config.expose.tcp,
                "udp": self.config.expose.udp,
                "intro_points": [],
                "descriptor_age_s": null,
            }])),
            other => Err(format!(
                "unknown command `{other}`; this daemon knows status, peers, circuits, services"
            )),
        }
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
    let sockets = config
        .network
        .listen
        .iter()
        .map(|a| udp::bind(*a).map_err(|e| DaemonError(format!("cannot listen on UDP {a}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let control_listener = control::bind(&config.control_socket, owner).map_err(|e| {
        DaemonError(format!(
            "control socket {}: {e}",
            config.control_socket.display()
        ))
    })?;

    if let Some(ids) = ids {
        if root {
            privdrop::drop_to_user(ids).map_err(ctx("dropping privileges"))?;
            tracing::info!(uid = ids.uid, "dropped privileges; kept CAP_NET_ADMIN only");
        } else {
            tracing::warn!("not started as root: `user` has nothing to drop and is ignored");
        }
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("globalnet")
        .build()
        .map_err(ctx("runtime"))?;
    let budget = MemoryBudget::new(config.limits.memory_budget_mb as usize * (1 << 20));
    let state = Arc::new(NodeState {
        address,
        relay_key: keys.relay_key_hex(),
        link_key: crate::crypto::keys::hex(keys.link_public().as_bytes()),
        config: config.clone(),
        started: Instant::now(),
        tun: TunCounters::default(),
        links: Mutex::new(LinkSnapshot::default()),
        budget: budget.clone(),
    });
    let clock = Clock::new();
    let link_cfg = LinkConfig {
        relay: config.relay_enabled(),
        advertise: config.network.listen.clone(),
        bootstrap: config.network.bootstrap.clone(),
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
        onion_public: x25519_dalek::PublicKey::from(&keys.relay_onion).to_bytes(),
    };
    // The service key stays out of the link layer entirely (it is never tied to the relay).
    let onion = OnionKey::from_secret(keys.relay_onion.clone());
    drop(keys);
    let link = LinkLayer::new(link_cfg, link_keys, budget, rand::random(), clock.now());
    let mut link = Node::new(link, onion, rand::random(), clock.now());
    link.set_guard_file(config.state_dir.join(crate::circuit::path::GUARDS_FILE));
    let socket_path = config.control_socket.clone();
    let result = rt.block_on(run_async(
        dev,
        control_listener,
        sockets,
        link,
        clock,
        state,
    ));
    remove_socket(&socket_path);
    result
}

fn remove_socket(path: &PathBuf) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::debug!("removing {}: {e}", path.display());
    }
}

async fn run_async(
    dev: tun_rs::SyncDevice,
    control_listener: std::os::unix::net::UnixListener,
    sockets: Vec<std::net::UdpSocket>,
    link: Node,
    clock: Clock,
    state: Arc<NodeState>,
) -> Result<(), DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let dev = platform::tun::into_async(dev).map_err(ctx("TUN"))?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(ctx("signals"))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(ctx("signals"))?;

    let control_task = tokio::spawn(control::serve(control_listener, state.clone()));
    let tun_task = tokio::spawn(tun_loop(dev, state.clone()));
    let sockets = sockets
        .into_iter()
        .map(UdpSocket::from_std)
        .collect::<Result<Vec<_>, _>>()
        .map_err(ctx("UDP"))?;
    let link_task = tokio::spawn(link_loop(sockets, link, clock, state.clone()));
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

async fn tun_loop(dev: tun_rs::AsyncDevice, state: Arc<NodeState>) -> std::io::Result<()> {
    let mut buf = vec![0u8; TUN_BUF_LEN];
    let mut out = Vec::with_capacity(usize::from(crate::config::OVERLAY_MTU));
    loop {
        let n = dev.recv(&mut buf).await?;
        state.tun.packets_in.fetch_add(1, Ordering::Relaxed);
        let packet = buf.get(..n).unwrap_or(&[]);
        // No session layer yet: no overlay destination is reachable.
        match flow::classify_outbound(packet, |_| false, &mut out) {
            Verdict::Reply(kind) => {
                tracing::trace!(?kind, "ICMPv6 reply");
                state.tun.icmp_replies.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = dev.send(&out).await {
                    tracing::debug!("writing ICMPv6 reply: {e}");
                }
            }
            Verdict::Drop(reason) => {
                tracing::trace!(?reason, "dropped a packet from the TUN");
                state.tun.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Verdict::Forward { .. } => {
                state.tun.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Receives on up to two sockets (one per family); pending forever when there is no second one.
async fn recv_on(
    socket: Option<&UdpSocket>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// Handles what else is already queued on the socket (up to a batch) before going back to the
/// event loop: fewer wake-ups and timer re-arms per datagram under load.
fn drain(socket: Option<&UdpSocket>, node: &mut Node, clock: &Clock, buf: &mut [u8]) {
    let Some(s) = socket else { return };
    for _ in 0..63 {
        match s.try_recv_from(buf) {
            Ok((n, from)) => node.handle_datagram(clock.now(), from, buf.get(..n).unwrap_or(&[])),
            Err(_) => break,
        }
    }
}

/// The link task: owns the UDP sockets and the link layer's state machine.
async fn link_loop(
    sockets: Vec<UdpSocket>,
    mut link: Node,
    clock: Clock,
    state: Arc<NodeState>,
) -> std::io::Result<()> {
    if sockets.is_empty() {
        return Ok(());
    }
    // Which family each socket serves, worked out once (not a syscall per datagram).
    let families: Vec<bool> = sockets
        .iter()
        .map(|s| s.local_addr().map(|a| a.is_ipv4()).unwrap_or(true))
        .collect();
    let mut buf0 = vec![0u8; 65536];
    let mut buf1 = vec![0u8; 65536];
    let mut last_snapshot = 0;
    loop {
        let deadline = link
            .poll_timeout()
            .map(|t| tokio::time::Instant::from_std(clock.instant_at(t)));
        tokio::select! {
            r = recv_on(sockets.first(), &mut buf0) => match r {
                Ok((n, from)) => {
                    link.handle_datagram(clock.now(), from, buf0.get(..n).unwrap_or(&[]));
                    drain(sockets.first(), &mut link, &clock, &mut buf0);
                }
                Err(e) => tracing::debug!("UDP receive: {e}"),
            },
            r = recv_on(sockets.get(1), &mut buf1) => match r {
                Ok((n, from)) => {
                    link.handle_datagram(clock.now(), from, buf1.get(..n).unwrap_or(&[]));
                    drain(sockets.get(1), &mut link, &clock, &mut buf1);
                }
                Err(e) => tracing::debug!("UDP receive: {e}"),
            },
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => link.handle_timeout(clock.now()),
        }
        while let Some(t) = link.poll_transmit() {
            let socket = sockets
                .iter()
                .zip(&families)
                .find(|(_, v4)| **v4 == t.dst.is_ipv4())
                .map(|(s, _)| s);
            if let Some(s) = socket {
                if let Err(e) = s.send_to(&t.data, t.dst).await {
                    tracing::debug!("UDP send to {}: {e}", t.dst);
                }
            }
            link.recycle(t.data);
        }
        let events: Vec<NodeEvent> = link.drain_events().collect();
        for e in events {
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
                NodeEvent::Packet { buf } => link.recycle_packet(buf),
                NodeEvent::Unreachable { .. } => {}
                NodeEvent::Pong { .. } => {}
                NodeEvent::Link(LinkEvent::Dht { .. }) => {}
            }
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
            }
        }
    }
}
