//! Link-layer throughput benchmark (issue #4): drives two real [`LinkLayer`]s over real UDP
//! sockets, one per process, and measures link set-up time and the cell rate one link carries.
//!
//! ```text
//! linkbench recv --listen 198.18.100.2:7412 --key-seed 1
//!     prints `key <hex>` and `ready`, then counts cells per second and prints `result ...`
//!     when the sender's end marker arrives (or after --timeout seconds without traffic)
//! linkbench send --listen 198.18.100.1:7412 --peer 198.18.100.2:7412 --peer-key <hex> --seconds 10
//!     dials, prints the WireGuard handshake and link set-up (handshake + HELLO) times, sends
//!     cells as fast as it can (or at --rate cells/s) and prints what it sent
//! linkbench local --seconds 3
//!     both link layers in this process, no sockets: the link layer's own cost per cell
//! ```
//!
//! Each process is a plain blocking `std::net::UdpSocket` loop, bound the way the daemon binds
//! ([`globalnet::wire::udp::bind`], same buffer sizes); no async runtime. Keys are derived from
//! `--key-seed` so the receiver's key is known in advance. The sender's cells carry a magic, a
//! kind and a sequence number; the end marker (repeated, since UDP may lose it) carries the count
//! of cells sent, so the receiver reports loss and its own goodput.

use clap::{Parser, Subcommand};
use ed25519_dalek::SigningKey;
use globalnet::budget::MemoryBudget;
use globalnet::crypto::Randomness;
use globalnet::link::{LinkConfig, LinkEvent, LinkId, LinkKeys, LinkLayer};
use globalnet::time::{self, Clock};
use globalnet::wire::cell::CELL_LEN;
use sha2::{Digest, Sha256};
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use x25519_dalek::{PublicKey, StaticSecret};

const MAGIC: &[u8; 4] = b"GNLB";
const KIND_DATA: u8 = 1;
const KIND_END: u8 = 2;
/// End markers sent (UDP may drop some).
const END_REPEATS: u32 = 20;
/// WireGuard handshake message types and sizes (initiation, response).
const WG_INITIATION: (u8, usize) = (1, 148);
const WG_RESPONSE: (u8, usize) = (2, 92);

#[derive(Parser)]
#[command(about = "GlobalNet link-layer throughput benchmark")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Both ends in this process, datagrams handed over in memory (no sockets, one thread): the
    /// link layer's own cost per cell (framing, WireGuard encrypt and decrypt, events).
    Local {
        /// How long to send.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// Serve: accept a link and count the cells that arrive.
    Recv {
        /// UDP address to bind (and advertise).
        #[arg(long)]
        listen: SocketAddr,
        /// Seed of this node's keys.
        #[arg(long, default_value_t = 1)]
        key_seed: u64,
        /// Give up after this many seconds without a link or without cells.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Dial a receiver and send cells to it.
    Send {
        /// UDP address to bind (and advertise).
        #[arg(long)]
        listen: SocketAddr,
        /// The receiver's UDP address.
        #[arg(long)]
        peer: SocketAddr,
        /// The receiver's link public key (64 hex digits, as `recv` prints it).
        #[arg(long)]
        peer_key: String,
        /// Seed of this node's keys.
        #[arg(long, default_value_t = 2)]
        key_seed: u64,
        /// How long to send.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Cells per second (default: as fast as possible).
        #[arg(long)]
        rate: Option<f64>,
        /// Give up if the link is not up after this many seconds.
        #[arg(long, default_value_t = 20)]
        timeout: u64,
    },
}

fn derive(label: &str, seed: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"globalnet linkbench ");
    h.update(label.as_bytes());
    h.update(seed.to_be_bytes());
    h.finalize().into()
}

fn keys(seed: u64) -> LinkKeys {
    let onion = StaticSecret::from(derive("onion", seed));
    LinkKeys {
        identity: SigningKey::from_bytes(&derive("identity", seed)),
        link: StaticSecret::from(derive("link", seed)),
        onion_public: PublicKey::from(&onion).to_bytes(),
    }
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn parse_key(s: &str) -> Result<[u8; 32], String> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return Err(format!("a link key is 64 hex digits, got {:?}", s));
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        let pair = s.get(2 * i..2 * i + 2).ok_or("bad hex")?;
        *o = u8::from_str_radix(pair, 16).map_err(|e| format!("bad hex {pair:?}: {e}"))?;
    }
    Ok(out)
}

/// One node: the link layer, its socket and counters of what crossed the socket.
struct Node {
    layer: LinkLayer,
    sock: UdpSocket,
    clock: Clock,
    buf: Vec<u8>,
    /// Datagrams and bytes sent; send errors.
    tx_dgrams: u64,
    tx_bytes: u64,
    tx_errors: u64,
    /// Datagrams and bytes received.
    rx_dgrams: u64,
    rx_bytes: u64,
    /// When we sent the first WireGuard initiation and got the first response (dialer side),
    /// or got the first initiation (responder side).
    wg_init_sent: Option<Instant>,
    wg_response_rx: Option<Instant>,
    wg_init_rx: Option<Instant>,
}

impl Node {
    fn new(listen: SocketAddr, seed: u64) -> Result<(Node, [u8; 32]), String> {
        let k = keys(seed);
        let public = PublicKey::from(&k.link).to_bytes();
        // The daemon's own socket set-up (4 MiB buffers asked for), then made blocking.
        let sock = globalnet::wire::udp::bind(listen).map_err(|e| format!("bind {listen}: {e}"))?;
        sock.set_nonblocking(false)
            .map_err(|e| format!("set_nonblocking: {e}"))?;
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .map_err(|e| format!("set_read_timeout: {e}"))?;
        let clock = Clock::new();
        let cfg = LinkConfig {
            relay: true,
            advertise: vec![listen],
            bootstrap: vec![],
            target_links: 1,
            max_links: 16,
            prefix_bits: (32, 128),
            exit: false,
        };
        let rand = Randomness::with_choice_seed(derive("choices", seed));
        let layer = LinkLayer::new(cfg, k, MemoryBudget::new(256 << 20), rand, clock.now());
        Ok((
            Node {
                layer,
                sock,
                clock,
                buf: vec![0u8; 65536],
                tx_dgrams: 0,
                tx_bytes: 0,
                tx_errors: 0,
                rx_dgrams: 0,
                rx_bytes: 0,
                wg_init_sent: None,
                wg_response_rx: None,
                wg_init_rx: None,
            },
            public,
        ))
    }

    fn socket_buffers(&self) -> String {
        let s = socket2::SockRef::from(&self.sock);
        format!(
            "rcvbuf={} sndbuf={}",
            s.recv_buffer_size().unwrap_or(0),
            s.send_buffer_size().unwrap_or(0)
        )
    }

    fn now(&self) -> time::Instant {
        self.clock.now()
    }

    /// Sends everything the link layer queued.
    fn flush(&mut self) {
        while let Some(t) = self.layer.poll_transmit() {
            if self.wg_init_sent.is_none()
                && t.data.len() == WG_INITIATION.1
                && t.data.first() == Some(&WG_INITIATION.0)
            {
                self.wg_init_sent = Some(Instant::now());
            }
            match self.sock.send_to(&t.data, t.dst) {
                Ok(n) => {
                    self.tx_dgrams += 1;
                    self.tx_bytes += n as u64;
                }
                Err(_) => self.tx_errors += 1,
            }
            self.layer.recycle(t.data);
        }
    }

    /// Hands one datagram to the link layer.
    fn input(&mut self, n: usize, from: SocketAddr) {
        let Some(d) = self.buf.get(..n) else { return };
        self.rx_dgrams += 1;
        self.rx_bytes += n as u64;
        if d.first() == Some(&WG_RESPONSE.0) && n == WG_RESPONSE.1 && self.wg_response_rx.is_none()
        {
            self.wg_response_rx = Some(Instant::now());
        }
        if d.first() == Some(&WG_INITIATION.0) && n == WG_INITIATION.1 && self.wg_init_rx.is_none()
        {
            self.wg_init_rx = Some(Instant::now());
        }
        let now = self.clock.now();
        self.layer.handle_datagram(now, from, d);
    }

    /// Blocks up to the read timeout for one datagram; runs timers; sends what is queued.
    /// Returns whether a datagram arrived.
    fn step_blocking(&mut self) -> Result<bool, String> {
        let got = match self.sock.recv_from(&mut self.buf) {
            Ok((n, from)) => {
                self.input(n, from);
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
        Ok(got)
    }

    /// Reads whatever is already queued on the socket without blocking.
    fn drain_nonblocking(&mut self) -> Result<(), String> {
        self.sock
            .set_nonblocking(true)
            .map_err(|e| format!("set_nonblocking: {e}"))?;
        let mut r = Ok(());
        for _ in 0..1024 {
            match self.sock.recv_from(&mut self.buf) {
                Ok((n, from)) => self.input(n, from),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::ConnectionRefused
                    ) => {}
                Err(e) => {
                    r = Err(format!("recv: {e}"));
                    break;
                }
            }
        }
        self.sock
            .set_nonblocking(false)
            .map_err(|e| format!("set_nonblocking: {e}"))?;
        r
    }

    fn timers(&mut self) {
        let now = self.clock.now();
        if self.layer.poll_timeout().is_some_and(|t| now >= t) {
            self.layer.handle_timeout(now);
        }
    }
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat` (Linux; clock ticks
/// of 10 ms, fine over seconds). `None` elsewhere.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// `cpu_s=.. cpu_pct=.. cpu_us_per_cell=..` for a window, or `?`s.
fn cpu_report(start: Option<f64>, secs: f64, cells: u64) -> String {
    match (start, cpu_seconds()) {
        (Some(a), Some(b)) => {
            let c = (b - a).max(0.0);
            format!(
                "cpu_s={c:.2} cpu_pct={:.0} cpu_us_per_cell={:.2}",
                if secs > 0.0 { 100.0 * c / secs } else { 0.0 },
                if cells > 0 {
                    1e6 * c / cells as f64
                } else {
                    0.0
                }
            )
        }
        _ => "cpu_s=? cpu_pct=? cpu_us_per_cell=?".into(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mbit(bytes: f64, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes * 8.0 / secs / 1e6
    } else {
        0.0
    }
}

fn rate(n: f64, secs: f64) -> f64 {
    if secs > 0.0 {
        n / secs
    } else {
        0.0
    }
}

/// What a benchmark cell says.
enum Marker {
    Data(u64),
    End(u64),
    Other,
}

fn read_marker(cell: &[u8]) -> Marker {
    if cell.get(..4) != Some(&MAGIC[..]) {
        return Marker::Other;
    }
    let n = cell
        .get(8..16)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes);
    match cell.get(4) {
        Some(&KIND_DATA) => Marker::Data(n),
        Some(&KIND_END) => Marker::End(n),
        _ => Marker::Other,
    }
}

fn write_marker(cell: &mut [u8; CELL_LEN], kind: u8, n: u64) {
    cell[..4].copy_from_slice(MAGIC);
    cell[4] = kind;
    cell[8..16].copy_from_slice(&n.to_be_bytes());
}

fn recv(listen: SocketAddr, seed: u64, timeout_s: u64) -> Result<(), String> {
    let (mut node, public) = Node::new(listen, seed)?;
    println!("key {}", to_hex(&public));
    println!("socket {}", node.socket_buffers());
    println!("ready");
    let timeout = Duration::from_secs(timeout_s);
    let started = Instant::now();
    let mut last_activity = Instant::now();
    let mut up_at: Option<Instant> = None;
    let mut first_cell: Option<Instant> = None;
    let mut last_cell: Option<Instant> = None;
    let mut rx_cells: u64 = 0;
    let mut cpu_at_first: Option<f64> = None;
    let mut rx_bytes_at_first = 0u64;
    let mut rx_bytes_at_last = 0u64;
    let mut max_seq: u64 = 0;
    let mut reordered: u64 = 0;
    let mut sent_cells: Option<u64> = None;
    let mut second_start: Option<Instant> = None;
    let mut second_cells: u64 = 0;
    let mut second_no: u32 = 0;
    let mut ended = false;
    while !ended {
        let got = node.step_blocking()?;
        if got {
            last_activity = Instant::now();
        }
        while let Some(e) = node.layer.poll_event() {
            match e {
                LinkEvent::Up { link, identity } => {
                    let now = Instant::now();
                    up_at.get_or_insert(now);
                    let hs = node
                        .wg_init_rx
                        .map(|t| format!(" since_initiation_ms={:.3}", ms(now - t)))
                        .unwrap_or_default();
                    println!("up link={} relay={}{hs}", link.0, identity.is_some());
                }
                LinkEvent::Down { link, .. } => println!("down link={}", link.0),
                LinkEvent::Identified { link, .. } => println!("identified link={}", link.0),
                LinkEvent::DialFailed { .. } => println!("dial failed"),
                LinkEvent::Cell { cell, .. } => {
                    match read_marker(&cell) {
                        Marker::Data(seq) => {
                            let now = Instant::now();
                            if first_cell.is_none() {
                                first_cell = Some(now);
                                cpu_at_first = cpu_seconds();
                                second_start = Some(now);
                                rx_bytes_at_first = node.rx_bytes;
                            }
                            last_cell = Some(now);
                            rx_bytes_at_last = node.rx_bytes;
                            rx_cells += 1;
                            second_cells += 1;
                            if seq < max_seq {
                                reordered += 1;
                            }
                            max_seq = max_seq.max(seq);
                        }
                        Marker::End(n) => {
                            sent_cells = Some(n);
                            ended = true;
                        }
                        Marker::Other => {}
                    }
                    node.layer.recycle(cell);
                }
                LinkEvent::Dht { .. } => {}
                LinkEvent::Observed { .. } => {}
            }
        }
        if let Some(s) = second_start {
            if s.elapsed() >= Duration::from_secs(1) {
                second_no += 1;
                println!("rx second={second_no} cells={second_cells}");
                second_cells = 0;
                second_start = Some(s + Duration::from_secs(1));
            }
        }
        if last_activity.elapsed() >= timeout {
            println!(
                "timeout: nothing for {timeout_s} s (link up: {})",
                up_at.is_some()
            );
            break;
        }
    }
    // The sender repeats its end marker; leave the rest unread.
    let window = match (first_cell, last_cell) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => 0.0,
    };
    // Cells counted from the first to the last: the first one opens the window.
    let counted = rx_cells.saturating_sub(1) as f64;
    let udp_bytes = rx_bytes_at_last.saturating_sub(rx_bytes_at_first) as f64;
    let lost = sent_cells.map(|s| s.saturating_sub(rx_cells));
    // The CPU window runs to now, a few ms past the last cell; the time window matches it.
    let cpu_window = first_cell.map_or(0.0, |a| a.elapsed().as_secs_f64());
    let cpu = cpu_report(cpu_at_first, cpu_window, rx_cells);
    println!(
        "result role=recv rx_cells={rx_cells} sent_cells={} lost={} loss_pct={} window_s={window:.3} pps={:.0} cell_mbit={:.1} udp_mbit={:.1} reordered={reordered} datagrams_in={} total_s={:.1} {cpu}",
        sent_cells.map_or("?".into(), |s| s.to_string()),
        lost.map_or("?".into(), |l| l.to_string()),
        match (sent_cells, lost) {
            (Some(s), Some(l)) if s > 0 => format!("{:.2}", 100.0 * l as f64 / s as f64),
            _ => "?".into(),
        },
        rate(counted, window),
        mbit(counted * CELL_LEN as f64, window),
        mbit(udp_bytes, window),
        node.layer.stats().datagrams_in,
        started.elapsed().as_secs_f64(),
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn send(
    listen: SocketAddr,
    peer: SocketAddr,
    peer_key: &str,
    seed: u64,
    seconds: f64,
    pps: Option<f64>,
    timeout_s: u64,
) -> Result<(), String> {
    let peer_key = parse_key(peer_key)?;
    let (mut node, public) = Node::new(listen, seed)?;
    println!("key {}", to_hex(&public));
    println!("socket {}", node.socket_buffers());
    // ---- link set-up -------------------------------------------------------------------
    let t0 = Instant::now();
    let now = node.now();
    let link: LinkId = node
        .layer
        .connect(now, peer_key, peer)
        .map_err(|e| format!("connect: {e}"))?;
    node.flush();
    let mut up = None;
    let mut peer_relay = false;
    while up.is_none() {
        if t0.elapsed() >= Duration::from_secs(timeout_s) {
            return Err(format!("link not up after {timeout_s} s"));
        }
        node.step_blocking()?;
        while let Some(e) = node.layer.poll_event() {
            match e {
                LinkEvent::Up { link: l, identity } if l == link => {
                    up = Some(Instant::now());
                    peer_relay = identity.is_some();
                }
                LinkEvent::Cell { cell, .. } => node.layer.recycle(cell),
                _ => {}
            }
        }
    }
    let up = up.unwrap_or_else(Instant::now);
    let handshake = match (node.wg_init_sent, node.wg_response_rx) {
        (Some(a), Some(b)) => format!("{:.3}", ms(b.saturating_duration_since(a))),
        _ => "?".into(),
    };
    println!(
        "setup link_setup_ms={:.3} wg_handshake_ms={handshake} peer_relay={peer_relay}",
        ms(up - t0)
    );
    // Let the post-Up PING/PONG finish so it does not share the first milliseconds.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_millis(50) {
        node.step_blocking()?;
        while let Some(e) = node.layer.poll_event() {
            if let LinkEvent::Cell { cell, .. } = e {
                node.layer.recycle(cell);
            }
        }
    }
    // ---- sending -----------------------------------------------------------------------
    let mut cell = [0u8; CELL_LEN];
    for (i, b) in cell.iter_mut().enumerate().skip(16) {
        *b = i as u8;
    }
    let (tx_d0, tx_b0, err0) = (node.tx_dgrams, node.tx_bytes, node.tx_errors);
    let mut sent: u64 = 0;
    let mut refused: u64 = 0;
    let duration = Duration::from_secs_f64(seconds.max(0.0));
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let mut elapsed = Duration::ZERO;
    while elapsed < duration {
        if let Some(r) = pps {
            let due = Duration::from_secs_f64(sent as f64 / r.max(1e-3));
            let now = start.elapsed();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        write_marker(&mut cell, KIND_DATA, sent);
        let now = node.now();
        match node.layer.send_cell(now, link, &cell) {
            Ok(()) => sent += 1,
            Err(e) => {
                refused += 1;
                if refused == 1 {
                    println!("send_cell refused: {e}");
                }
            }
        }
        node.flush();
        if (sent + refused) % 256 == 0 {
            node.drain_nonblocking()?;
            node.timers();
            node.flush();
            while let Some(e) = node.layer.poll_event() {
                match e {
                    LinkEvent::Cell { cell, .. } => node.layer.recycle(cell),
                    LinkEvent::Down { .. } => return Err("link went down while sending".into()),
                    _ => {}
                }
            }
            elapsed = start.elapsed();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let dgrams = node.tx_dgrams - tx_d0;
    let udp_bytes = (node.tx_bytes - tx_b0) as f64;
    let errors = node.tx_errors - err0;
    let cpu = cpu_report(cpu0, secs, sent);
    // ---- end marker ----------------------------------------------------------------------
    write_marker(&mut cell, KIND_END, sent);
    for _ in 0..END_REPEATS {
        let now = node.now();
        let _ = node.layer.send_cell(now, link, &cell);
        node.flush();
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = node.drain_nonblocking();
    println!(
        "result role=send sent_cells={sent} seconds={secs:.3} pps={:.0} cell_mbit={:.1} udp_mbit={:.1} datagrams={dgrams} udp_bytes_per_cell={:.0} send_errors={errors} refused={refused} {cpu}",
        rate(sent as f64, secs),
        mbit(sent as f64 * CELL_LEN as f64, secs),
        mbit(udp_bytes, secs),
        if dgrams > 0 { udp_bytes / dgrams as f64 } else { 0.0 },
    );
    let now = node.now();
    node.layer.close(now, link, 0);
    node.flush();
    Ok(())
}

/// A link layer without a socket, for `local`.
fn layer_for(seed: u64, addr: SocketAddr, now: time::Instant) -> (LinkLayer, [u8; 32]) {
    let k = keys(seed);
    let public = PublicKey::from(&k.link).to_bytes();
    let cfg = LinkConfig {
        relay: true,
        advertise: vec![addr],
        bootstrap: vec![],
        target_links: 1,
        max_links: 16,
        prefix_bits: (32, 128),
        exit: false,
    };
    let rand = Randomness::with_choice_seed(derive("choices", seed));
    let l = LinkLayer::new(cfg, k, MemoryBudget::new(256 << 20), rand, now);
    (l, public)
}

/// Moves every queued datagram from `from` (at `src`) into `to`; returns how many moved.
fn hand_over(
    now: time::Instant,
    from: &mut LinkLayer,
    src: SocketAddr,
    to: &mut LinkLayer,
) -> usize {
    let mut n = 0;
    while let Some(t) = from.poll_transmit() {
        to.handle_datagram(now, src, &t.data);
        from.recycle(t.data);
        n += 1;
    }
    n
}

fn local(seconds: f64) -> Result<(), String> {
    let clock = Clock::new();
    let a_addr = SocketAddr::from(([198, 18, 100, 1], 7412));
    let b_addr = SocketAddr::from(([198, 18, 100, 2], 7412));
    let (mut a, _) = layer_for(2, a_addr, clock.now());
    let (mut b, b_key) = layer_for(1, b_addr, clock.now());
    let t0 = Instant::now();
    let link = a
        .connect(clock.now(), b_key, b_addr)
        .map_err(|e| format!("connect: {e}"))?;
    let mut up = false;
    for _ in 0..100 {
        let now = clock.now();
        let moved = hand_over(now, &mut a, a_addr, &mut b) + hand_over(now, &mut b, b_addr, &mut a);
        while let Some(e) = a.poll_event() {
            if matches!(e, LinkEvent::Up { link: l, .. } if l == link) {
                up = true;
            }
        }
        while b.poll_event().is_some() {}
        if up && moved == 0 {
            break;
        }
    }
    if !up {
        return Err("in-process link did not come up".into());
    }
    let setup = t0.elapsed();
    let mut cell = [0u8; CELL_LEN];
    let duration = Duration::from_secs_f64(seconds.max(0.0));
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let (mut sent, mut got) = (0u64, 0u64);
    while start.elapsed() < duration {
        for _ in 0..256 {
            write_marker(&mut cell, KIND_DATA, sent);
            let now = clock.now();
            if a.send_cell(now, link, &cell).is_ok() {
                sent += 1;
            }
            hand_over(now, &mut a, a_addr, &mut b);
            while let Some(e) = b.poll_event() {
                if let LinkEvent::Cell { cell, .. } = e {
                    if matches!(read_marker(&cell), Marker::Data(_)) {
                        got += 1;
                    }
                    b.recycle(cell);
                }
            }
            hand_over(now, &mut b, b_addr, &mut a);
            while a.poll_event().is_some() {}
        }
        let now = clock.now();
        a.handle_timeout(now);
        b.handle_timeout(now);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "result role=local setup_ms={:.3} sent_cells={sent} rx_cells={got} seconds={secs:.3} pps={:.0} cell_mbit={:.1} us_per_cell={:.2} {}",
        ms(setup),
        rate(got as f64, secs),
        mbit(got as f64 * CELL_LEN as f64, secs),
        if got > 0 { 1e6 * secs / got as f64 } else { 0.0 },
        cpu_report(cpu0, secs, got),
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.mode {
        Mode::Recv {
            listen,
            key_seed,
            timeout,
        } => recv(listen, key_seed, timeout),
        Mode::Send {
            listen,
            peer,
            peer_key,
            key_seed,
            seconds,
            rate,
            timeout,
        } => send(listen, peer, &peer_key, key_seed, seconds, rate, timeout),
        Mode::Local { seconds } => local(seconds),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("linkbench: {e}");
            ExitCode::FAILURE
        }
    }
}
