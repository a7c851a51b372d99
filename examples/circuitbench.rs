//! Circuit benchmark (issue #6): a client [`Node`] joins a running network of real daemons over
//! a real UDP socket, waits for a ready 3-hop pool circuit and measures what the circuit carries.
//!
//! ```text
//! circuitbench --listen 198.18.50.9:7412 --bootstrap 198.18.50.1:7412 --seconds 10 --window 64
//!     joins (non-relay client, links to --links relays), prints every circuit build it observes,
//!     then sends PROBE relay messages (--payload bytes, default 1000, with a sequence number)
//!     through the first ready pool circuit for --seconds, keeping at most --window outstanding,
//!     and prints per-second echo counts and a `result ...` line
//! ```
//!
//! The last hop of a circuit echoes each PROBE as PROBE_REPLY with the same payload, so every
//! echoed probe crossed the guard and the middle relay twice (forward and back) and was decrypted,
//! answered and encrypted by the exit: 6 relay cell operations per echo, 2 per relay. The process
//! is a plain blocking `std::net::UdpSocket` loop bound the way the daemon binds
//! ([`globalnet::wire::udp::bind`]), driving a [`Node`] the way the daemon's `link_loop` does
//! (datagram in, timers when due, transmits out, events drained); no async runtime. A probe not
//! echoed within --probe-timeout-ms counts as lost and frees its window slot.
//!
//! Output lines are `word key=value ...` (`built`, `join`, `rx`, `result`, `builds`) so a script
//! can pick numbers out; errors go to stderr and give a non-zero exit code.

use clap::Parser;
use ed25519_dalek::SigningKey;
use globalnet::budget::MemoryBudget;
use globalnet::circuit::layer::{CircEvent, CircId, Purpose};
use globalnet::circuit::OnionKey;
use globalnet::crypto::Randomness;
use globalnet::link::{LinkConfig, LinkEvent, LinkKeys, LinkLayer};
use globalnet::node::{Node, NodeEvent, POOL_HOPS};
use globalnet::time::Clock;
use globalnet::wire::relay::{RelayCommand, RELAY_PAYLOAD_LEN};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use x25519_dalek::{PublicKey, StaticSecret};

const MAGIC: &[u8; 4] = b"GNCB";
/// Bytes of a probe payload that carry the magic and the sequence number.
const PROBE_HEADER: usize = 12;
/// How often lost probes are looked for.
const EXPIRY_CHECK: Duration = Duration::from_millis(50);

#[derive(Parser)]
#[command(about = "GlobalNet circuit benchmark: PROBE echoes through a 3-hop circuit")]
struct Cli {
    /// UDP address to bind.
    #[arg(long)]
    listen: SocketAddr,
    /// A relay to bootstrap from (repeatable).
    #[arg(long, required = true)]
    bootstrap: Vec<SocketAddr>,
    /// How long to send probes.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Most probes outstanding at once.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Probe payload bytes (12..=1316: magic, sequence number, filler).
    #[arg(long, default_value_t = 1000)]
    payload: usize,
    /// A probe not echoed after this long is lost.
    #[arg(long, default_value_t = 2000)]
    probe_timeout_ms: u64,
    /// Links to relays the client keeps.
    #[arg(long, default_value_t = 3)]
    links: usize,
    /// Ready pool circuits the client keeps (the first built one carries the probes).
    #[arg(long, default_value_t = 2)]
    pool: usize,
    /// IPv4 family prefix for path selection (32 for a test network in one subnet).
    #[arg(long, default_value_t = 32)]
    ipv4_prefix: u8,
    /// Seed of this node's keys (default: from the pid and the time).
    #[arg(long)]
    key_seed: Option<u64>,
    /// Give up if no circuit is built after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

fn derive(label: &str, seed: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"globalnet circuitbench ");
    h.update(label.as_bytes());
    h.update(seed.to_be_bytes());
    h.finalize().into()
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat` (Linux; clock ticks
/// of 10 ms, fine over seconds). `None` elsewhere.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn rate(n: f64, secs: f64) -> f64 {
    if secs > 0.0 {
        n / secs
    } else {
        0.0
    }
}

/// Nearest-rank percentile of sorted values, or `None` when there are none.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or("?".into(), |x| format!("{x:.decimals$}"))
}

/// The filler byte at offset `i` of probe `seq` (so a garbled echo is noticed).
fn filler(seq: u64, i: usize) -> u8 {
    (i as u8) ^ (seq as u8) ^ 0x5a
}

fn write_probe(buf: &mut [u8], seq: u64) {
    for (i, b) in buf.iter_mut().enumerate().skip(PROBE_HEADER) {
        *b = filler(seq, i);
    }
    if let Some(m) = buf.get_mut(..4) {
        m.copy_from_slice(MAGIC);
    }
    if let Some(s) = buf.get_mut(4..PROBE_HEADER) {
        s.copy_from_slice(&seq.to_be_bytes());
    }
}

/// What an echo says: its sequence number, or why it is not one of ours.
enum Echo {
    Ok(u64),
    Corrupt,
}

fn read_echo(payload: &[u8], len: usize) -> Echo {
    if payload.len() != len || payload.get(..4) != Some(&MAGIC[..]) {
        return Echo::Corrupt;
    }
    let Some(seq) = payload
        .get(4..PROBE_HEADER)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
    else {
        return Echo::Corrupt;
    };
    let intact = payload
        .iter()
        .enumerate()
        .skip(PROBE_HEADER)
        .all(|(i, b)| *b == filler(seq, i));
    if intact {
        Echo::Ok(seq)
    } else {
        Echo::Corrupt
    }
}

/// The client: a node, its socket and what it saw.
struct Client {
    node: Node,
    sock: UdpSocket,
    clock: Clock,
    buf: Vec<u8>,
    started: Instant,
    send_errors: u64,
    first_link: Option<Instant>,
    /// Built circuits still open, oldest first.
    ready: Vec<CircId>,
    /// Build times (ms) of every circuit built.
    builds: Vec<u64>,
    first_built: Option<Instant>,
    /// Echoes delivered by the last `step` (sequence number or corrupt), in order.
    echoes: Vec<(CircId, Echo, Instant)>,
    /// Circuits closed by the last `step`.
    closed: Vec<CircId>,
    payload_len: usize,
    evbuf: Vec<NodeEvent>,
}

impl Client {
    fn new(cli: &Cli) -> Result<Client, String> {
        let seed = cli.key_seed.unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            t ^ u64::from(std::process::id()).rotate_left(32)
        });
        let onion = StaticSecret::from(derive("onion", seed));
        let keys = LinkKeys {
            identity: SigningKey::from_bytes(&derive("identity", seed)),
            link: StaticSecret::from(derive("link", seed)),
            onion_public: PublicKey::from(&onion).to_bytes(),
        };
        // The daemon's own socket set-up (4 MiB buffers asked for), then made blocking: the loop
        // blocks in recv only when it has nothing to send.
        let sock = globalnet::wire::udp::bind(cli.listen)
            .map_err(|e| format!("bind {}: {e}", cli.listen))?;
        sock.set_nonblocking(false)
            .map_err(|e| format!("set_nonblocking: {e}"))?;
        sock.set_read_timeout(Some(Duration::from_millis(5)))
            .map_err(|e| format!("set_read_timeout: {e}"))?;
        let clock = Clock::new();
        let cfg = LinkConfig {
            relay: false,
            advertise: vec![],
            bootstrap: cli
                .bootstrap
                .iter()
                .map(|a| globalnet::link::BootstrapPeer::Addr(*a))
                .collect(),
            target_links: cli.links.max(1),
            max_links: 64,
            prefix_bits: (cli.ipv4_prefix, 128),
            exit: false,
        };
        let choices = Randomness::with_choice_seed(derive("choices", seed));
        let link = LinkLayer::new(
            cfg,
            keys,
            MemoryBudget::new(256 << 20),
            choices,
            clock.now(),
        );
        let rand = Randomness::with_choice_seed(derive("node choices", seed));
        let mut node = Node::new(link, OnionKey::from_secret(onion), rand, clock.now());
        node.set_pool_target(cli.pool.max(1));
        Ok(Client {
            node,
            sock,
            clock,
            buf: vec![0u8; 65536],
            started: Instant::now(),
            send_errors: 0,
            first_link: None,
            ready: Vec::new(),
            builds: Vec::new(),
            first_built: None,
            echoes: Vec::new(),
            closed: Vec::new(),
            payload_len: cli.payload,
            evbuf: Vec::new(),
        })
    }

    fn socket_buffers(&self) -> String {
        let s = socket2::SockRef::from(&self.sock);
        format!(
            "rcvbuf={} sndbuf={}",
            s.recv_buffer_size().unwrap_or(0),
            s.send_buffer_size().unwrap_or(0)
        )
    }

    fn since_start_ms(&self) -> f64 {
        ms(self.started.elapsed())
    }

    /// Sends everything the node queued.
    fn flush(&mut self) {
        while let Some(t) = self.node.poll_transmit() {
            if self.sock.send_to(&t.data, t.dst).is_err() {
                self.send_errors += 1;
            }
            self.node.recycle(t.data);
        }
    }

    fn timers(&mut self) {
        let now = self.clock.now();
        if self.node.poll_timeout().is_some_and(|t| now >= t) {
            self.node.handle_timeout(now);
        }
    }

    /// Waits up to the read timeout for one datagram, runs timers, sends what is queued and
    /// sorts the node's events. Returns whether a datagram arrived.
    fn step(&mut self) -> Result<bool, String> {
        let got = match self.sock.recv_from(&mut self.buf) {
            Ok((n, from)) => {
                let now = self.clock.now();
                if let Some(d) = self.buf.get(..n) {
                    self.node.handle_datagram(now, from, d);
                }
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(e) if e.kind() == ErrorKind::Interrupted => false,
            // ICMP port unreachable from an earlier send shows up here on Linux; not fatal.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => false,
            Err(e) => return Err(format!("recv: {e}")),
        };
        self.timers();
        self.flush();
        self.events();
        Ok(got)
    }

    fn events(&mut self) {
        let at = Instant::now();
        // A buffer kept across calls: no allocation per datagram.
        let mut events = std::mem::take(&mut self.evbuf);
        events.extend(self.node.drain_events());
        for e in events.drain(..) {
            match e {
                NodeEvent::Link(LinkEvent::Up { link, identity }) => {
                    self.first_link.get_or_insert(at);
                    println!(
                        "up link={} relay={} since_start_ms={:.1}",
                        link.0,
                        identity.is_some(),
                        self.since_start_ms()
                    );
                }
                NodeEvent::Link(LinkEvent::Down { link, .. }) => {
                    println!(
                        "down link={} since_start_ms={:.1}",
                        link.0,
                        self.since_start_ms()
                    )
                }
                NodeEvent::Link(_) => {}
                NodeEvent::Circuit(CircEvent::Built { id, build_ms }) => {
                    let now = self.clock.now();
                    let info = self
                        .node
                        .circ
                        .circuits(now)
                        .into_iter()
                        .find(|c| c.id == id);
                    let hops = info.as_ref().map_or(0, |c| c.hops);
                    let purpose = info.map_or("?", |c| c.purpose.name());
                    println!(
                        "built circuit={} hops={hops} purpose={purpose} build_ms={build_ms} since_start_ms={:.1}",
                        id.0,
                        self.since_start_ms()
                    );
                    self.builds.push(build_ms);
                    if hops == POOL_HOPS {
                        self.first_built.get_or_insert(at);
                        self.ready.push(id);
                    }
                }
                NodeEvent::Circuit(CircEvent::Closed { id, why }) => {
                    println!(
                        "closed circuit={} why={:?} since_start_ms={:.1}",
                        id.0,
                        why,
                        self.since_start_ms()
                    );
                    self.ready.retain(|c| *c != id);
                    self.closed.push(id);
                }
                NodeEvent::Circuit(CircEvent::Message { id, cmd, payload })
                    if cmd == RelayCommand::ProbeReply as u8 =>
                {
                    let echo = read_echo(&payload, self.payload_len);
                    self.echoes.push((id, echo, at));
                }
                _ => {}
            }
        }
        self.evbuf = events;
    }

    /// Destroys our circuits and closes our links, so the relays drop their state at once.
    fn shut_down(&mut self) {
        let now = self.clock.now();
        let ids: Vec<CircId> = self.node.circ.circuits(now).iter().map(|c| c.id).collect();
        for id in ids {
            self.node.circ.destroy(now, id);
        }
        self.node.pump(now);
        self.flush();
        let links: Vec<_> = self.node.link.ready_links().collect();
        for l in links {
            self.node.link.close(now, l, 0);
        }
        self.flush();
    }
}

fn run(cli: Cli) -> Result<(), String> {
    if cli.payload < PROBE_HEADER || cli.payload > RELAY_PAYLOAD_LEN {
        return Err(format!(
            "--payload must be {PROBE_HEADER}..={RELAY_PAYLOAD_LEN} bytes"
        ));
    }
    let window = cli.window.max(1);
    let mut c = Client::new(&cli)?;
    println!("socket {}", c.socket_buffers());
    // ---- join and wait for a circuit ------------------------------------------------------
    let deadline = Duration::from_secs(cli.timeout);
    let now = c.clock.now();
    c.node.handle_timeout(now);
    c.flush();
    while c.ready.is_empty() {
        if c.started.elapsed() >= deadline {
            return Err(format!(
                "no {POOL_HOPS}-hop circuit after {} s (links up: {}, relays in view: {}, path: {})",
                cli.timeout,
                c.node.link.ready_links().count(),
                c.node.link.view().len(),
                c.node.path_error().unwrap_or("-")
            ));
        }
        c.step()?;
    }
    // Let the rest of the pool finish (up to 2 s) so its builds do not share the probe window.
    let settle = Instant::now();
    while c.ready.len() < cli.pool.max(1) && settle.elapsed() < Duration::from_secs(2) {
        c.step()?;
    }
    let join = |t: Option<Instant>| t.map_or("?".into(), |t| format!("{:.1}", ms(t - c.started)));
    println!(
        "join first_link_ms={} first_circuit_ms={} links={} view_relays={}",
        join(c.first_link),
        join(c.first_built),
        c.node.link.ready_links().count(),
        c.node.link.view().len()
    );
    // ---- probing --------------------------------------------------------------------------
    let mut active = c.ready.first().copied().ok_or("no ready circuit")?;
    println!(
        "probing circuit={} window={window} payload={}",
        active.0, cli.payload
    );
    let mut probe = vec![0u8; cli.payload];
    let mut outstanding: HashMap<u64, Instant> = HashMap::with_capacity(window * 2);
    let mut rtts_us: Vec<f64> = Vec::with_capacity(1 << 16);
    let probe_timeout = Duration::from_millis(cli.probe_timeout_ms.max(1));
    let (mut seq, mut sent, mut echoed) = (0u64, 0u64, 0u64);
    let (mut lost, mut late, mut corrupt, mut refused) = (0u64, 0u64, 0u64, 0u64);
    let (mut switched, mut paused_steps) = (0u64, 0u64);
    let mut last_echo: Option<Instant> = None;
    let duration = Duration::from_secs_f64(cli.seconds.max(0.0));
    let cpu0 = cpu_seconds();
    let err0 = c.send_errors;
    let start = Instant::now();
    let mut last_expiry = start;
    let mut second_start = start;
    let (mut second_echoes, mut second_no) = (0u64, 0u32);
    loop {
        let sending = start.elapsed() < duration;
        if !sending && (outstanding.is_empty() || start.elapsed() >= duration + probe_timeout) {
            break;
        }
        // Fill the window, then hand the cells to the link layer in one go.
        if sending && c.ready.contains(&active) {
            let mut queued = false;
            while outstanding.len() < window {
                write_probe(&mut probe, seq);
                match c.node.circ.send(active, RelayCommand::Probe, &probe) {
                    Ok(()) => {
                        outstanding.insert(seq, Instant::now());
                        seq += 1;
                        sent += 1;
                        queued = true;
                    }
                    Err(e) => {
                        refused += 1;
                        if refused == 1 {
                            println!("send refused: {e}");
                        }
                        break;
                    }
                }
            }
            if queued {
                let now = c.clock.now();
                c.node.pump(now);
                c.flush();
            }
        } else if sending {
            paused_steps += 1;
        }
        c.step()?;
        for (id, echo, at) in c.echoes.drain(..) {
            match echo {
                Echo::Ok(s) if id == active => match outstanding.remove(&s) {
                    Some(t0) => {
                        echoed += 1;
                        second_echoes += 1;
                        last_echo = Some(at);
                        rtts_us.push(at.saturating_duration_since(t0).as_secs_f64() * 1e6);
                    }
                    None => late += 1,
                },
                Echo::Ok(_) => late += 1,
                Echo::Corrupt => corrupt += 1,
            }
        }
        // The probing circuit closed: its probes are lost; carry on over another one.
        if c.closed.contains(&active) {
            lost += outstanding.len() as u64;
            outstanding.clear();
            if let Some(next) = c.ready.first().copied() {
                switched += 1;
                active = next;
                println!("probing circuit={} (switched)", active.0);
            }
        }
        c.closed.clear();
        if last_expiry.elapsed() >= EXPIRY_CHECK {
            last_expiry = Instant::now();
            let before = outstanding.len();
            outstanding.retain(|_, t0| t0.elapsed() < probe_timeout);
            lost += (before - outstanding.len()) as u64;
        }
        if second_start.elapsed() >= Duration::from_secs(1) && sending {
            second_no += 1;
            println!("rx second={second_no} echoes={second_echoes}");
            second_echoes = 0;
            second_start += Duration::from_secs(1);
        }
    }
    lost += outstanding.len() as u64;
    // Probes/s over the time echoes kept arriving (the last ones come after sending stopped).
    let secs = last_echo
        .map_or(start.elapsed(), |t| t - start)
        .as_secs_f64();
    let cpu = match (cpu0, cpu_seconds()) {
        (Some(a), Some(b)) => {
            let s = (b - a).max(0.0);
            let wall = start.elapsed().as_secs_f64();
            format!(
                "cpu_s={s:.2} cpu_pct={:.0} cpu_us_per_echo={:.1}",
                100.0 * rate(s, wall),
                if echoed > 0 {
                    1e6 * s / echoed as f64
                } else {
                    0.0
                }
            )
        }
        _ => "cpu_s=? cpu_pct=? cpu_us_per_echo=?".into(),
    };
    rtts_us.sort_by(|a, b| a.total_cmp(b));
    let rtt = |p: f64| fmt_opt(percentile(&rtts_us, p).map(|u| u / 1000.0), 3);
    let pps = rate(echoed as f64, secs);
    println!(
        "result sent={sent} echoes={echoed} lost={lost} loss_pct={} late={late} corrupt={corrupt} refused={refused} seconds={secs:.3} probes_per_s={pps:.0} echo_mbit={:.2} rtt_min_ms={} rtt_p50_ms={} rtt_p95_ms={} rtt_p99_ms={} rtt_max_ms={} relay_cells_per_s={:.0} per_relay_cells_per_s={:.0} window={window} payload={} circuits_switched={switched} paused_steps={paused_steps} send_errors={} {cpu}",
        if sent > 0 {
            format!("{:.2}", 100.0 * lost as f64 / sent as f64)
        } else {
            "?".into()
        },
        rate(echoed as f64 * cli.payload as f64 * 8.0, secs) / 1e6,
        rtt(0.0),
        rtt(50.0),
        rtt(95.0),
        rtt(99.0),
        rtt(100.0),
        6.0 * pps,
        2.0 * pps,
        cli.payload,
        c.send_errors - err0,
    );
    let mut builds: Vec<f64> = c.builds.iter().map(|b| *b as f64).collect();
    builds.sort_by(|a, b| a.total_cmp(b));
    println!(
        "builds n={} build_ms={} p50_ms={} p95_ms={}",
        builds.len(),
        c.builds
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(","),
        fmt_opt(percentile(&builds, 50.0), 0),
        fmt_opt(percentile(&builds, 95.0), 0),
    );
    if c.node.circ.ready(Purpose::Pool) == 0 {
        println!("note: no ready pool circuit left at the end");
    }
    c.shut_down();
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("circuitbench: {e}");
            ExitCode::FAILURE
        }
    }
}
