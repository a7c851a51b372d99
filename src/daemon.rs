//! The daemon: wires the layers together and owns the I/O tasks (TUN, control socket, signals,
//! systemd notification). Protocol decisions live in the layers; this file only moves bytes and
//! time in and out of them.

use serde_json::{json, Value};
use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::control;
use crate::crypto::NodeKeys;
use crate::flow::{self, Verdict};
use crate::platform::{self, privdrop};

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

/// What the control socket reports.
struct NodeState {
    address: Ipv6Addr,
    relay_key: String,
    config: Config,
    started: Instant,
    tun: TunCounters,
}

impl control::Handler for NodeState {
    fn handle(&self, cmd: &str) -> Result<Value, String> {
        match cmd {
            "status" => Ok(json!({
                "version": env!("CARGO_PKG_VERSION"),
                "address": self.address.to_string(),
                "relay_key": self.relay_key,
                "interface": self.config.tun.name,
                "mtu": self.config.tun.mtu,
                "relay": self.config.relay_enabled(),
                "peers": 0,
                "nat": "unknown",
                "circuits": {"own": 0, "relayed": 0},
                "uptime_s": self.started.elapsed().as_secs(),
                "pid": std::process::id(),
                "tun": {
                    "packets_in": self.tun.packets_in.load(Ordering::Relaxed),
                    "icmp_replies": self.tun.icmp_replies.load(Ordering::Relaxed),
                    "dropped": self.tun.dropped.load(Ordering::Relaxed),
                },
            })),
            "peers" | "circuits" => Ok(json!([])),
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
    let state = Arc::new(NodeState {
        address,
        relay_key: keys.relay_key_hex(),
        config: config.clone(),
        started: Instant::now(),
        tun: TunCounters::default(),
    });
    let socket_path = config.control_socket.clone();
    let result = rt.block_on(run_async(dev, control_listener, state));
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
    state: Arc<NodeState>,
) -> Result<(), DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let dev = platform::tun::into_async(dev).map_err(ctx("TUN"))?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(ctx("signals"))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(ctx("signals"))?;

    let control_task = tokio::spawn(control::serve(control_listener, state.clone()));
    let tun_task = tokio::spawn(tun_loop(dev, state.clone()));
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
