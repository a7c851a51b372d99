//! gn-delayer: hold every packet of an NFQUEUE queue for a fixed delay
//! (plus optional uniform jitter), then accept it. A stand-in for `netem`
//! on kernels without it. See README.md next to Cargo.toml.

mod nfq;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

macro_rules! log {
    ($($arg:tt)*) => {{
        // Never panic on a closed stderr.
        let _ = writeln!(std::io::stderr(), "gn-delayer: {}", format_args!($($arg)*));
    }};
}

const USAGE: &str = "\
usage: gn-delayer --queue N --delay-ms D [--jitter-ms J] [--seed S]
                  [--max-queue-len L] [--rcvbuf BYTES]

Binds NFQUEUE queue N (in the current network namespace) and accepts every
queued packet D ms (+ uniform [0, J] ms jitter) after it arrived.
Prints \"ready\" on stdout once bound. Exits 0 on SIGTERM/SIGINT.

  --queue N            NFQUEUE number, 0..=65535 (required)
  --delay-ms D         delay in ms, may be fractional, 0..=3600000 (required)
  --jitter-ms J        extra uniform jitter in [0, J] ms (default 0)
  --seed S             u64 seed for the jitter RNG (default: time and pid)
  --max-queue-len L    kernel queue length; beyond it packets pass
                       undelayed (fail-open) (default 65536)
  --rcvbuf BYTES       netlink receive buffer (default 16777216)
  -h, --help           this text
  -V, --version        version";

/// Upper bound on delay and jitter: one hour.
const MAX_MS: f64 = 3_600_000.0;
/// Verdicts are sent in datagrams of at most this many messages.
const VERDICT_BATCH: usize = 512;
/// Datagrams read per wake-up before releasing due packets again.
const RECV_BATCH: usize = 256;
/// Receive buffer: packet messages are metadata only (copy-meta), far smaller.
const RX_BUF: usize = 65536 + 8192;

#[derive(Debug, Clone, PartialEq)]
struct Config {
    queue: u16,
    delay: Duration,
    jitter: Duration,
    seed: Option<u64>,
    max_queue_len: u32,
    rcvbuf: usize,
}

#[derive(Debug, PartialEq)]
enum Cli {
    Run(Config),
    Help,
    Version,
}

fn parse_ms(flag: &str, v: &str) -> Result<Duration, String> {
    let ms: f64 = v
        .trim()
        .parse()
        .map_err(|_| format!("{flag}: not a number: {v:?}"))?;
    if !ms.is_finite() || !(0.0..=MAX_MS).contains(&ms) {
        return Err(format!("{flag}: must be between 0 and {MAX_MS}: {v:?}"));
    }
    Ok(Duration::from_nanos((ms * 1e6).round() as u64))
}

fn parse_int<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{flag}: not a valid number in range: {v:?}"))
}

fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Cli, String> {
    let mut queue = None;
    let mut delay = None;
    let mut jitter = Duration::ZERO;
    let mut seed = None;
    let mut max_queue_len: u32 = 65536;
    let mut rcvbuf: usize = 16 << 20;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Cli::Help),
            "-V" | "--version" => return Ok(Cli::Version),
            "--queue" | "--delay-ms" | "--jitter-ms" | "--seed" | "--max-queue-len"
            | "--rcvbuf" => {
                let v = match inline {
                    Some(v) => v,
                    None => it.next().ok_or_else(|| format!("{flag}: missing value"))?,
                };
                match flag.as_str() {
                    "--queue" => queue = Some(parse_int::<u16>(&flag, &v)?),
                    "--delay-ms" => delay = Some(parse_ms(&flag, &v)?),
                    "--jitter-ms" => jitter = parse_ms(&flag, &v)?,
                    "--seed" => seed = Some(parse_int::<u64>(&flag, &v)?),
                    "--max-queue-len" => {
                        max_queue_len = parse_int::<u32>(&flag, &v)?;
                        if max_queue_len == 0 {
                            return Err(format!("{flag}: must be at least 1"));
                        }
                    }
                    _ => rcvbuf = parse_int::<usize>(&flag, &v)?,
                }
            }
            _ => return Err(format!("unknown argument: {arg:?}")),
        }
    }
    Ok(Cli::Run(Config {
        queue: queue.ok_or("--queue is required")?,
        delay: delay.ok_or("--delay-ms is required")?,
        jitter,
        seed,
        max_queue_len,
        rcvbuf,
    }))
}

/// SplitMix64: tiny, good enough for jitter, reproducible with --seed.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, n].
    fn up_to(&mut self, n: u64) -> u64 {
        let span = u128::from(n) + 1;
        ((u128::from(self.next_u64()) * span) >> 64) as u64
    }
}

static STOP: AtomicBool = AtomicBool::new(false);
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    STOP_SIGNAL.store(sig, Ordering::SeqCst);
    STOP.store(true, Ordering::SeqCst);
}

/// Block SIGINT/SIGTERM, install handlers, and return the mask to use inside
/// `ppoll` (the old mask minus those two), so a signal can only be delivered
/// while we wait: no lost-wakeup race.
fn setup_signals() -> io::Result<libc::sigset_t> {
    // SAFETY: sigset_t/sigaction are plain data initialised by the libc calls;
    // the handler only stores to atomics (async-signal-safe).
    unsafe {
        let mut block: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        libc::sigaddset(&mut block, libc::SIGINT);
        libc::sigaddset(&mut block, libc::SIGTERM);
        let mut old: libc::sigset_t = std::mem::zeroed();
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old);
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        for sig in [libc::SIGINT, libc::SIGTERM] {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = 0;
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let mut wait_mask = old;
        libc::sigdelset(&mut wait_mask, libc::SIGINT);
        libc::sigdelset(&mut wait_mask, libc::SIGTERM);
        Ok(wait_mask)
    }
}

/// Wait until `fd` is readable, `timeout` passes (None = forever) or a signal
/// arrives (`Ok(None)`). Returns the poll revents.
fn wait_readable(
    fd: libc::c_int,
    timeout: Option<Duration>,
    mask: &libc::sigset_t,
) -> io::Result<Option<i16>> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = timeout.map(|d| {
        let d = d.min(Duration::from_secs(86_400));
        libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        }
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: pfd, ts and mask are valid for the duration of the call.
    let rc = unsafe { libc::ppoll(&mut pfd, 1, ts_ptr, mask) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(if rc == 0 { 0 } else { pfd.revents }))
}

/// Counts events and says whether this occurrence should be logged
/// (the first 10, then every 1000th).
#[derive(Default)]
struct RateLog(u64);

impl RateLog {
    fn hit(&mut self) -> bool {
        self.0 += 1;
        self.0 <= 10 || self.0 % 1000 == 0
    }
}

#[derive(Default)]
struct Stats {
    received: u64,
    accepted: u64,
    max_held: usize,
    enobufs: RateLog,
    verdict_errors: RateLog,
    send_errors: RateLog,
    malformed: RateLog,
    foreign_queue: RateLog,
}

struct Delayer {
    sock: nfq::Socket,
    queue: u16,
    delay: Duration,
    jitter_ns: u64,
    rng: Rng,
    /// Min-heap on (release time, arrival sequence, packet id).
    held: BinaryHeap<Reverse<(Instant, u64, u32)>>,
    arrivals: u64,
    nl_seq: u32,
    /// Config request whose ACK we wait for, and its result once seen.
    pending_cfg: Option<u32>,
    cfg_result: Option<i32>,
    /// When set, packets are accepted at once instead of being held.
    passthrough: bool,
    verdicts: Vec<u8>,
    verdicts_n: usize,
    rx: Vec<u8>,
    events: Vec<nfq::Event>,
    wait_mask: libc::sigset_t,
    stats: Stats,
}

impl Delayer {
    fn next_seq(&mut self) -> u32 {
        self.nl_seq = self.nl_seq.wrapping_add(1);
        self.nl_seq
    }

    fn push_verdict(&mut self, id: u32) {
        let seq = self.next_seq();
        nfq::append_verdict(&mut self.verdicts, self.queue, seq, id, nfq::NF_ACCEPT);
        self.verdicts_n += 1;
        if self.verdicts_n >= VERDICT_BATCH {
            self.flush_verdicts();
        }
    }

    fn flush_verdicts(&mut self) {
        if self.verdicts_n == 0 {
            return;
        }
        match self.sock.send(&self.verdicts) {
            Ok(()) => self.stats.accepted += self.verdicts_n as u64,
            Err(e) => {
                if self.stats.send_errors.hit() {
                    log!(
                        "sending {} verdicts failed: {e} (those packets stay queued in the kernel)",
                        self.verdicts_n
                    );
                }
            }
        }
        self.verdicts.clear();
        self.verdicts_n = 0;
    }

    fn on_packet(&mut self, queue: u16, id: u32, now: Instant) {
        self.stats.received += 1;
        if queue != self.queue && self.stats.foreign_queue.hit() {
            log!("packet for queue {queue} on queue {} socket", self.queue);
        }
        if self.passthrough {
            self.push_verdict(id);
            return;
        }
        let jitter = Duration::from_nanos(self.rng.up_to(self.jitter_ns));
        let release = now + self.delay + jitter;
        self.arrivals += 1;
        self.held.push(Reverse((release, self.arrivals, id)));
        self.stats.max_held = self.stats.max_held.max(self.held.len());
    }

    fn release_due(&mut self, now: Instant) {
        while let Some(&Reverse((release, _, id))) = self.held.peek() {
            if release > now {
                break;
            }
            self.held.pop();
            self.push_verdict(id);
        }
        self.flush_verdicts();
    }

    fn release_all(&mut self) {
        while let Some(Reverse((_, _, id))) = self.held.pop() {
            self.push_verdict(id);
        }
        self.flush_verdicts();
    }

    /// Read up to `max` datagrams without blocking and act on them.
    fn drain(&mut self, max: usize) -> io::Result<()> {
        for _ in 0..max {
            let n = match self.sock.recv(&mut self.rx) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    if self.stats.enobufs.hit() {
                        log!(
                            "netlink receive buffer overflowed; the kernel accepted the \
                             overflow undelayed (fail-open); raise --rcvbuf"
                        );
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    if self.stats.malformed.hit() {
                        log!("{e}");
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            let now = Instant::now();
            let mut events = std::mem::take(&mut self.events);
            events.clear();
            nfq::parse(&self.rx[..n], &mut events);
            for ev in events.drain(..) {
                match ev {
                    nfq::Event::Packet { queue, id } => self.on_packet(queue, id, now),
                    nfq::Event::Reply { seq, errno } if Some(seq) == self.pending_cfg => {
                        self.cfg_result = Some(errno);
                    }
                    nfq::Event::Reply { errno: 0, .. } => {}
                    nfq::Event::Reply { errno, .. } => {
                        if self.stats.verdict_errors.hit() {
                            log!(
                                "kernel rejected a verdict: {}",
                                io::Error::from_raw_os_error(errno)
                            );
                        }
                    }
                    nfq::Event::Malformed(what) => {
                        if self.stats.malformed.hit() {
                            log!("malformed netlink data: {what}");
                        }
                    }
                }
            }
            self.events = events;
        }
        self.flush_verdicts();
        Ok(())
    }

    /// Send a config request and wait for its ACK, handling packets meanwhile.
    fn configure(
        &mut self,
        req: &nfq::ConfigReq,
        timeout: Duration,
        stop_on_signal: bool,
    ) -> io::Result<()> {
        let seq = self.next_seq();
        self.pending_cfg = Some(seq);
        self.cfg_result = None;
        self.sock.send(&nfq::build_config(self.queue, seq, req))?;
        let deadline = Instant::now() + timeout;
        let result = loop {
            if let Some(errno) = self.cfg_result {
                break if errno == 0 {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(errno))
                };
            }
            if stop_on_signal && STOP.load(Ordering::SeqCst) {
                break Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "interrupted by signal",
                ));
            }
            let now = Instant::now();
            if now >= deadline {
                break Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no ACK from kernel",
                ));
            }
            self.release_due(now);
            let mut wait = deadline - now;
            if let Some(Reverse((release, _, _))) = self.held.peek() {
                wait = wait.min(release.saturating_duration_since(now));
            }
            if let Some(revents) = wait_readable(self.sock.raw_fd(), Some(wait), &self.wait_mask)? {
                if revents != 0 {
                    self.drain(RECV_BATCH)?;
                }
            }
        };
        self.pending_cfg = None;
        result
    }

    fn run(&mut self) -> io::Result<()> {
        loop {
            if STOP.load(Ordering::SeqCst) {
                return Ok(());
            }
            let now = Instant::now();
            self.release_due(now);
            let timeout = self
                .held
                .peek()
                .map(|Reverse((release, _, _))| release.saturating_duration_since(now));
            if let Some(revents) = wait_readable(self.sock.raw_fd(), timeout, &self.wait_mask)? {
                if revents & libc::POLLNVAL != 0 {
                    return Err(io::Error::other("netlink socket became invalid"));
                }
                if revents != 0 {
                    self.drain(RECV_BATCH)?;
                }
            }
        }
    }

    /// Graceful stop: make the kernel pass new packets through (queue length 0
    /// plus fail-open), accept everything held or still in flight, then unbind.
    /// Without this, unbinding would make the kernel drop the held packets.
    fn shutdown(&mut self) {
        self.passthrough = true;
        self.release_all();
        let close = nfq::ConfigReq {
            queue_maxlen: Some(0),
            ..Default::default()
        };
        if let Err(e) = self.configure(&close, Duration::from_secs(2), false) {
            log!("shutdown: could not set queue length 0: {e}");
        }
        if let Err(e) = self.drain(usize::MAX) {
            log!("shutdown: receive failed: {e}");
        }
        self.release_all();
        let unbind = nfq::ConfigReq {
            cmd: Some(nfq::NFQNL_CFG_CMD_UNBIND),
            ..Default::default()
        };
        if let Err(e) = self.configure(&unbind, Duration::from_secs(2), false) {
            log!("shutdown: unbind failed: {e}");
        }
    }
}

fn default_seed() -> u64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 32)
}

fn describe_bind_error(e: &io::Error, queue: u16) -> String {
    match e.raw_os_error() {
        // The kernel answers EPERM both without CAP_NET_ADMIN and when another
        // socket already owns the queue.
        Some(libc::EPERM) | Some(libc::EBUSY) => format!(
            "binding queue {queue}: {e} (needs CAP_NET_ADMIN in this network namespace, \
             and the queue must not be bound by another process)"
        ),
        Some(libc::EPROTONOSUPPORT) | Some(libc::ENOENT) | Some(libc::EOPNOTSUPP) => {
            format!("binding queue {queue}: {e} (is nfnetlink_queue available? try `modprobe nfnetlink_queue`)")
        }
        _ => format!("binding queue {queue}: {e}"),
    }
}

fn start(cfg: &Config) -> Result<(), String> {
    let wait_mask = setup_signals().map_err(|e| format!("installing signal handlers: {e}"))?;
    // Tighter timer wake-ups (default slack is 50 us); failure is harmless.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0) };

    let sock = nfq::Socket::open().map_err(|e| {
        format!("opening NETLINK_NETFILTER socket: {e} (is nfnetlink_queue available? try `modprobe nfnetlink_queue`)")
    })?;
    let rcvbuf = match sock.set_rcvbuf(cfg.rcvbuf) {
        Ok(n) => n,
        Err(e) => {
            log!("setting receive buffer to {} failed: {e}", cfg.rcvbuf);
            0
        }
    };
    if let Err(e) = sock.report_enobufs(true) {
        log!("enabling ENOBUFS reports failed: {e}");
    }

    let mut d = Delayer {
        sock,
        queue: cfg.queue,
        delay: cfg.delay,
        jitter_ns: u64::try_from(cfg.jitter.as_nanos()).unwrap_or(u64::MAX),
        rng: Rng(cfg.seed.unwrap_or_else(default_seed)),
        held: BinaryHeap::new(),
        arrivals: 0,
        nl_seq: 0,
        pending_cfg: None,
        cfg_result: None,
        passthrough: false,
        verdicts: Vec::with_capacity(VERDICT_BATCH * nfq::VERDICT_MSG_LEN),
        verdicts_n: 0,
        rx: vec![0u8; RX_BUF],
        events: Vec::new(),
        wait_mask,
        stats: Stats::default(),
    };

    // One atomic request: bind, metadata-only copies, queue length, fail-open.
    // GSO: the kernel need not segment large packets for us (payload unused).
    let flags = nfq::NFQA_CFG_F_FAIL_OPEN | nfq::NFQA_CFG_F_GSO;
    let bind = nfq::ConfigReq {
        cmd: Some(nfq::NFQNL_CFG_CMD_BIND),
        params: Some((nfq::NFQNL_COPY_META, 0)),
        queue_maxlen: Some(cfg.max_queue_len),
        flags: Some((flags, flags)),
    };
    match d.configure(&bind, Duration::from_secs(5), true) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {
            log!("stopped by signal before binding");
            return Ok(());
        }
        Err(e) => return Err(describe_bind_error(&e, cfg.queue)),
    }

    log!(
        "bound queue {} delay {:?} jitter {:?} max-queue-len {} rcvbuf {} (fail-open)",
        cfg.queue,
        cfg.delay,
        cfg.jitter,
        cfg.max_queue_len,
        rcvbuf
    );
    {
        let mut out = io::stdout().lock();
        if let Err(e) = writeln!(out, "ready").and_then(|_| out.flush()) {
            log!("writing ready line failed: {e}");
        }
    }

    let result = d.run();
    if let Err(e) = &result {
        log!("error: {e}; shutting down");
    }
    let held_at_stop = d.held.len();
    d.shutdown();
    let sig = STOP_SIGNAL.load(Ordering::SeqCst);
    log!(
        "exiting{}: received {} accepted {} max-held {} released-early-at-exit {} enobufs {} verdict-errors {} send-errors {}",
        if sig != 0 { format!(" on signal {sig}") } else { String::new() },
        d.stats.received,
        d.stats.accepted,
        d.stats.max_held,
        held_at_stop,
        d.stats.enobufs.0,
        d.stats.verdict_errors.0,
        d.stats.send_errors.0,
    );
    result.map_err(|e| format!("netlink: {e}"))
}

fn main() -> ExitCode {
    let cfg = match parse_args(std::env::args().skip(1)) {
        Ok(Cli::Run(cfg)) => cfg,
        Ok(Cli::Help) => {
            let _ = writeln!(io::stdout(), "{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Cli::Version) => {
            let _ = writeln!(io::stdout(), "gn-delayer {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            log!("{e}");
            let _ = writeln!(io::stderr(), "{USAGE}");
            return ExitCode::from(2);
        }
    };
    match start(&cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_cli() {
        let c = parse_args(args("--queue 3 --delay-ms 50 --jitter-ms=2.5 --seed 7")).unwrap();
        assert_eq!(
            c,
            Cli::Run(Config {
                queue: 3,
                delay: Duration::from_millis(50),
                jitter: Duration::from_micros(2500),
                seed: Some(7),
                max_queue_len: 65536,
                rcvbuf: 16 << 20,
            })
        );
        assert_eq!(parse_args(args("--help")).unwrap(), Cli::Help);
        for bad in [
            "",
            "--queue 1",
            "--delay-ms 5",
            "--queue 70000 --delay-ms 5",
            "--queue -1 --delay-ms 5",
            "--queue 1 --delay-ms -5",
            "--queue 1 --delay-ms NaN",
            "--queue 1 --delay-ms inf",
            "--queue 1 --delay-ms 1e300",
            "--queue 1 --delay-ms 5 --jitter-ms",
            "--queue 1 --delay-ms 5 --bogus",
            "--queue 1 --delay-ms 5 --max-queue-len 0",
            "--queue 1 --delay-ms 5 extra",
        ] {
            assert!(parse_args(args(bad)).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rng_bounds_and_reproducible() {
        let mut a = Rng(1);
        let mut b = Rng(1);
        for _ in 0..10_000 {
            let x = a.up_to(20_000_000);
            assert!(x <= 20_000_000);
            assert_eq!(x, b.up_to(20_000_000));
        }
        assert_eq!(Rng(5).up_to(0), 0);
        let _ = Rng(5).up_to(u64::MAX);
    }

    #[test]
    fn heap_releases_in_time_then_arrival_order() {
        let t0 = Instant::now();
        let mut h: BinaryHeap<Reverse<(Instant, u64, u32)>> = BinaryHeap::new();
        h.push(Reverse((t0 + Duration::from_millis(5), 1, 10)));
        h.push(Reverse((t0 + Duration::from_millis(1), 2, 20)));
        h.push(Reverse((t0 + Duration::from_millis(5), 3, 5)));
        let order: Vec<u32> =
            std::iter::from_fn(|| h.pop().map(|Reverse((_, _, id))| id)).collect();
        assert_eq!(order, vec![20, 10, 5]);
    }
}
