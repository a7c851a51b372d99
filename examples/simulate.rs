//! The 10,000-node in-process network of issue #25: real node code under virtual time, with
//! churn, NATs and adversarial relays; a progress line per virtual minute on stderr, and last one
//! JSON object of figures on stdout (docs/simulation.md says what each means).
//!
//! `cargo run --release --example simulate -- --nodes 10000 --minutes 60 --churn 0.2`

use clap::Parser;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use globalnet::sim::scale::{Scale, ScaleConfig};

/// Counts live heap bytes, for the memory-per-node figure.
struct Counting;

static LIVE: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as u64, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as u64, Ordering::Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as u64, Ordering::Relaxed);
        LIVE.fetch_sub(l.size() as u64, Ordering::Relaxed);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static A: Counting = Counting;

#[derive(Parser)]
#[command(about = "Runs the in-process network at scale and prints its figures as JSON")]
struct Args {
    /// Nodes at the start (about this many run at any time).
    #[arg(long, default_value_t = 2000)]
    nodes: usize,
    /// Virtual minutes, warm-up included.
    #[arg(long, default_value_t = 30)]
    minutes: u64,
    /// Share of the nodes leaving (and as many joining) per virtual hour.
    #[arg(long, default_value_t = 0.2)]
    churn: f64,
    /// Seed of every choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Share of the non-relay nodes behind NAT.
    #[arg(long, default_value_t = 0.5)]
    nat: f64,
    /// Share of the relays behind NAT (the first five, the bootstrap set, stay public). Hosts
    /// only dial relays, so without NATed relays no link ever needs a punch.
    #[arg(long, default_value_t = 0.2)]
    relay_nat: f64,
    /// Share of the nodes that are relays.
    #[arg(long, default_value_t = 0.4)]
    relays: f64,
    /// Adversarial shares of the relays, comma-separated.
    #[arg(long, default_value = "0.05,0.1", value_delimiter = ',')]
    adversary: Vec<f64>,
    /// Hidden services (default: 1% of the nodes, at least 3).
    #[arg(long)]
    services: Option<usize>,
    /// Descriptor lookups per virtual minute (default: nodes / 50, at least 10).
    #[arg(long)]
    lookups: Option<f64>,
    /// Reachability probes (e2e PINGs from random clients to random services) per virtual
    /// minute (default: nodes / 100, at least 5).
    #[arg(long)]
    probes: Option<f64>,
    /// Virtual minutes of warm-up before lookups and churn (default: 5, or half the run).
    #[arg(long)]
    warmup: Option<u64>,
    /// Real X25519 and WireGuard on every link and handshake instead of the simulator's
    /// stand-in (docs/simulation.md, "Crypto stand-in"): slower, same protocol.
    #[arg(long)]
    real_crypto: bool,
    /// Loss rate of the underlay, per datagram (default 0.005).
    #[arg(long)]
    loss: Option<f64>,
}

fn main() {
    let a = Args::parse();
    let mut cfg = ScaleConfig::new(a.nodes, a.minutes);
    cfg.churn_per_hour = a.churn;
    cfg.seed = a.seed;
    cfg.nat_share = a.nat;
    cfg.relay_nat_share = a.relay_nat;
    cfg.relay_share = a.relays;
    cfg.adversary = a.adversary;
    cfg.stand_in_crypto = !a.real_crypto;
    if let Some(s) = a.services {
        cfg.services = s;
    }
    if let Some(l) = a.lookups {
        cfg.lookups_per_min = l;
    }
    if let Some(p) = a.probes {
        cfg.probes_per_min = p;
    }
    if let Some(l) = a.loss {
        cfg.loss = l;
    }
    if let Some(w) = a.warmup {
        cfg.warmup_min = w;
    }
    let mut scale = Scale::new(cfg);
    let report = scale.run(
        &mut |line| eprintln!("{line}  cpu {:.1} s", cpu_seconds()),
        &|| LIVE.load(Ordering::Relaxed),
    );
    // The machine is shared: wall time says little without the CPU time the run got.
    let mut json = match serde_json::to_value(&report) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("simulate: cannot print the figures: {e}");
            return;
        }
    };
    if let Some(o) = json.as_object_mut() {
        o.insert("cpu_s".into(), cpu_seconds().into());
        o.insert("peak_rss_bytes".into(), peak_rss().into());
    }
    println!("{json}");
}

/// User and system CPU seconds of this process.
fn cpu_seconds() -> f64 {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole rusage into the buffer it is given.
    let r = unsafe { libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr()) };
    if r != 0 {
        return 0.0;
    }
    // SAFETY: initialised by the successful call above.
    let u = unsafe { u.assume_init() };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(u.ru_utime) + s(u.ru_stime)
}

/// Peak resident set, bytes (VmHWM).
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
