//! Test tool (issue #19 item 5): a hostile node that floods one relay, or a service's intro points,
//! speaking the real protocol through the library's own layers. Only ever aimed at namespaces a
//! test made (198.18.0.0/15).
//!
//! ```text
//! hostile --mode MODE --target IP:PORT [--bind IP] [--agents N] [--rate R] [--seconds S]
//!         [--count C] [--service fd00::...] [--near-bits B]
//! ```
//!
//! Modes:
//! - `create`: N client identities (one link each to the target) build 1-hop circuits to the
//!   target at R per second in all and keep C open (rebuilding those the target closes).
//! - `establish-intro`: the same circuits, each registering a made-up intro auth key (a fresh
//!   Ed25519 key, signed for the circuit's `bind`): C registrations.
//! - `introduce`: looks the service's descriptor up through the DHT like a client, then builds
//!   1-hop circuits to each of its intro points and sends 2 INTRODUCE1 on each (the descriptor's
//!   auth key, a random `msg1`: the intro point cannot tell it from a real one), R INTRODUCE1 per
//!   second (`sent` counts INTRODUCE1s, `built` circuits).
//! - `store`: N relay identities (each a link to the target) send DHT STOREs of descriptors of
//!   made-up services whose index shares its first B bits with the service's current index, R per
//!   second in all.
//! - `junk`: random datagrams (1–1400 bytes) from 16 source ports, R per second.
//! - `none`: sends nothing for S seconds (the control run of a test).
//!
//! Every secret is from the OS generator. Output lines are `word key=value ...`: `ready` when the
//! flood starts, `tick` every second, `result` at the end (what was sent and how the target
//! answered). Set-up failures go to stderr with a non-zero exit code.

use clap::{Parser, ValueEnum};
use ed25519_dalek::SigningKey;
use globalnet::circuit::layer::{CircId, Purpose};
use globalnet::dht::descriptor::{self, Descriptor, IntroEntry, Publication};
use globalnet::dht::message::{DhtMessage, RecordKind};
use globalnet::link::LinkKeys;
use globalnet::node::dht::{DhtOutcome, DhtQuery};
use globalnet::session::intro::{EstablishIntro, Introduce1};
use globalnet::time::{self, Clock};
use globalnet::wire::record::RelayRecord;
use globalnet::wire::relay::RelayCommand;
use rand::rngs::OsRng;
use rand::RngCore;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use x25519_dalek::{PublicKey, StaticSecret};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Create,
    EstablishIntro,
    Introduce,
    Store,
    Junk,
    /// Nothing: the control run.
    None,
}

#[derive(Parser)]
#[command(about = "GlobalNet hostile-node flood tool (test namespaces only)")]
struct Cli {
    /// What to flood with.
    #[arg(long, value_enum)]
    mode: Mode,
    /// The relay to attack (and bootstrap from).
    #[arg(long)]
    target: SocketAddr,
    /// Local address to bind the agents' sockets to.
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// Identities (one link each) the flood is spread over.
    #[arg(long, default_value_t = 8)]
    agents: usize,
    /// Messages (circuits, registrations, INTRODUCE1, STOREs, datagrams) per second, in all.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// How long to flood.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Most circuits or registrations (create, establish-intro).
    #[arg(long, default_value_t = 3200)]
    count: usize,
    /// The service (its fd00::/8 address) for introduce and store.
    #[arg(long)]
    service: Option<Ipv6Addr>,
    /// Leading bits a flooded record's index shares with the service's (store).
    #[arg(long, default_value_t = 4)]
    near_bits: u32,
    /// Give up if the flood cannot start within this many seconds.
    #[arg(long, default_value_t = 60.0)]
    setup_timeout: f64,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// CPU seconds (user + system) this process used so far (Linux; 10-ms ticks).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

fn hex4(b: &[u8; 32]) -> String {
    b.iter().take(4).map(|x| format!("{x:02x}")).collect()
}

/// Fresh link keys from the OS generator.
fn fresh_keys() -> (LinkKeys, StaticSecret) {
    let onion = StaticSecret::random_from_rng(OsRng);
    let keys = LinkKeys {
        identity: SigningKey::generate(&mut OsRng),
        link: StaticSecret::random_from_rng(OsRng),
        onion_public: PublicKey::from(&onion).to_bytes(),
    };
    (keys, onion)
}

mod agent;
use agent::*;

/// Counters printed at the end.
#[derive(Default)]
struct Tally {
    sent: u64,
    built: u64,
    closed: u64,
    links_down: u64,
    answers: BTreeMap<String, u64>,
}

impl Tally {
    fn answer(&mut self, what: String) {
        *self.answers.entry(what).or_default() += 1;
    }

    fn line(&self) -> String {
        let mut s = format!(
            "sent={} built={} closed={} links_down={}",
            self.sent, self.built, self.closed, self.links_down
        );
        for (k, v) in &self.answers {
            s.push_str(&format!(" {k}={v}"));
        }
        s
    }
}

fn intro_status(code: u8) -> &'static str {
    match code {
        0 => "ok",
        1 => "unknown_key",
        2 => "replay",
        3 => "limited",
        5 => "in_use",
        _ => "other",
    }
}

/// Runs every agent once; returns the events with the agent index.
fn step_all(agents: &mut [Agent], clock: &Clock, evs: &mut Vec<(usize, Ev)>) -> bool {
    let now = clock.now();
    let mut busy = false;
    let mut out = Vec::new();
    for (i, a) in agents.iter_mut().enumerate() {
        busy |= a.step(now, &mut out);
        for e in out.drain(..) {
            if let Ev::Up(link, Some(_)) = &e {
                a.link.get_or_insert(*link);
            }
            evs.push((i, e));
        }
    }
    busy
}

/// Steps the agents until `done` holds or the set-up time is over.
fn wait_for(
    agents: &mut [Agent],
    clock: &Clock,
    until: Instant,
    what: &str,
    mut done: impl FnMut(&mut [Agent], &[(usize, Ev)]) -> bool,
) -> Result<(), String> {
    let mut evs = Vec::new();
    loop {
        evs.clear();
        let busy = step_all(agents, clock, &mut evs);
        if done(agents, &evs) {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(format!("set-up: timed out waiting for {what}"));
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// The target's relay record, from any agent's view.
fn target_record(agents: &mut [Agent], identity: &[u8; 32]) -> Option<RelayRecord> {
    agents.iter_mut().find_map(|a| match &a.engine {
        Engine::Node(n) => n.link.view().get(identity).cloned(),
        Engine::Link(l) => l.view().get(identity).cloned(),
    })
}

/// The flood loop: calls `send` whenever one more message is due (`rate` per second in all),
/// `on_event` for every event, prints a tick a second.
fn flood(
    cli: &Cli,
    agents: &mut [Agent],
    clock: &Clock,
    tally: &mut Tally,
    mut send: impl FnMut(&mut [Agent], time::Instant, u64, &mut Tally) -> bool,
    mut on_event: impl FnMut(&mut [Agent], time::Instant, usize, Ev, &mut Tally),
) {
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(cli.seconds);
    let mut next_tick = start + Duration::from_secs(1);
    let mut evs = Vec::new();
    let mut attempts: u64 = 0;
    println!("ready mode={:?} agents={}", cli.mode, agents.len());
    while Instant::now() < end {
        let due = (start.elapsed().as_secs_f64() * cli.rate) as u64;
        let now = clock.now();
        let mut n = 0;
        while attempts < due && n < 64 {
            if send(agents, now, attempts, tally) {
                tally.sent += 1;
            }
            attempts += 1;
            n += 1;
        }
        for a in agents.iter_mut() {
            a.flush(now);
        }
        evs.clear();
        let busy = step_all(agents, clock, &mut evs);
        let now = clock.now();
        for (i, e) in evs.drain(..) {
            match e {
                Ev::Down => tally.links_down += 1,
                Ev::Built(_) => tally.built += 1,
                Ev::Closed(_) => tally.closed += 1,
                _ => {}
            }
            on_event(agents, now, i, e, tally);
        }
        if Instant::now() >= next_tick {
            next_tick += Duration::from_secs(1);
            println!(
                "tick t={:.0} {}",
                start.elapsed().as_secs_f64(),
                tally.line()
            );
        }
        if !busy && attempts >= due {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "result mode={:?} seconds={secs:.1} rate={:.1} tool_cpu_s={:.1} {}",
        cli.mode,
        tally.sent as f64 / secs.max(0.001),
        cpu_seconds(),
        tally.line()
    );
}

/// Brings `n` agents up with links to the target; returns the target's record.
fn start_agents(
    cli: &Cli,
    clock: &Clock,
    n: usize,
    relay: bool,
) -> Result<(Vec<Agent>, RelayRecord), String> {
    let until = Instant::now() + Duration::from_secs_f64(cli.setup_timeout);
    let mut agents = Vec::new();
    for _ in 0..n.max(1) {
        agents.push(Agent::new(cli, clock, relay, 1)?);
    }
    let mut target: Option<[u8; 32]> = None;
    wait_for(
        &mut agents,
        clock,
        until,
        "links to the target",
        |agents, evs| {
            for (_, e) in evs {
                if let Ev::Up(_, Some(id)) = e {
                    target.get_or_insert(*id);
                }
            }
            agents.iter().all(|a| a.link.is_some())
        },
    )?;
    let identity = target.ok_or("no target identity")?;
    let mut record = None;
    wait_for(
        &mut agents,
        clock,
        until,
        "the target's record",
        |agents, _| {
            record = target_record(agents, &identity);
            record.is_some()
        },
    )?;
    let record = record.ok_or("no target record")?;
    eprintln!("target relay={} agents={}", hex4(&identity), agents.len());
    Ok((agents, record))
}

fn run_create(cli: &Cli, clock: &Clock, register: bool) -> Result<(), String> {
    let (mut agents, record) = start_agents(cli, clock, cli.agents, false)?;
    let mut tally = Tally::default();
    let mut rr = 0usize;
    let count = cli.count;
    let open_ref = std::cell::Cell::new(0usize);
    flood(
        cli,
        &mut agents,
        clock,
        &mut tally,
        |agents, now, _, _| {
            if open_ref.get() >= count {
                return false;
            }
            rr = (rr + 1) % agents.len();
            let Some(a) = agents.get_mut(rr) else {
                return false;
            };
            let link = a.link;
            let Some(node) = a.node() else { return false };
            match node
                .circ
                .build(now, Purpose::Probe, vec![record.clone()], link)
            {
                Ok(_) => {
                    open_ref.set(open_ref.get() + 1);
                    true
                }
                Err(_) => false,
            }
        },
        |agents, _, i, e, tally| match e {
            Ev::Built(id) if register => {
                let Some(node) = agents.get_mut(i).and_then(Agent::node) else {
                    return;
                };
                let Some(bind) = node.circ.hop_bind(id, 0) else {
                    return;
                };
                let reg = EstablishIntro::sign(&SigningKey::generate(&mut OsRng), &bind);
                if node
                    .circ
                    .send(id, RelayCommand::EstablishIntro, &reg.emit())
                    .is_ok()
                {
                    tally.answer("registrations_sent".into());
                }
            }
            Ev::Closed(_) => {
                open_ref.set(open_ref.get().saturating_sub(1));
            }
            Ev::Msg(_, cmd, payload) if cmd == RelayCommand::IntroEstablished as u8 => {
                let s = globalnet::session::roles::parse_status(&payload).unwrap_or(255);
                tally.answer(format!("intro_{}", intro_status(s)));
            }
            _ => {}
        },
    );
    println!("open circuits={}", open_ref.get());
    Ok(())
}

/// Looks the service's descriptor up through the DHT; returns its intro points.
fn find_intro_points(
    cli: &Cli,
    clock: &Clock,
    service: Ipv6Addr,
) -> Result<(Agent, Vec<IntroEntry>), String> {
    let until = Instant::now() + Duration::from_secs_f64(cli.setup_timeout);
    let mut scout = vec![Agent::new(cli, clock, false, 3)?];
    let address = service.octets();
    let mut found: Option<Vec<IntroEntry>> = None;
    let mut token: Option<u64> = None;
    let mut asked = Instant::now() - Duration::from_secs(10);
    wait_for(
        &mut scout,
        clock,
        until,
        "the service's descriptor",
        |agents, evs| {
            for (_, e) in evs {
                if let Ev::Dht(t, outcome) = e {
                    if Some(*t) != token {
                        continue;
                    }
                    token = None;
                    if let DhtOutcome::Records(records) = outcome {
                        let now_ms = unix_ms();
                        let e = descriptor::epoch(now_ms / 1000);
                        for r in records {
                            if let Ok(c) = Descriptor::parse_and_open(r, &address, e, now_ms) {
                                found = Some(c.intro_points);
                            }
                        }
                    }
                }
            }
            if found.is_some() {
                return true;
            }
            let ready = agents
                .first_mut()
                .and_then(Agent::node)
                .is_some_and(|n| n.circ.ready(Purpose::Pool) > 0);
            if token.is_none() && ready && asked.elapsed() > Duration::from_secs(2) {
                asked = Instant::now();
                let now_ms = unix_ms();
                let key = descriptor::index(&address, descriptor::epoch(now_ms / 1000));
                let now = clock.now();
                if let Some(n) = agents.first_mut().and_then(Agent::node) {
                    token = Some(n.dht_query(
                        now,
                        DhtQuery::FindValue {
                            kind: RecordKind::Descriptor,
                            key,
                        },
                        false,
                    ));
                }
            }
            false
        },
    )?;
    let scout = scout.pop().ok_or("no scout")?;
    Ok((scout, found.unwrap_or_default()))
}

fn run_introduce(cli: &Cli, clock: &Clock) -> Result<(), String> {
    let service = cli.service.ok_or("--service is needed for introduce")?;
    let (scout, intros) = find_intro_points(cli, clock, service)?;
    eprintln!(
        "descriptor intro_points={}",
        intros
            .iter()
            .map(|i| hex4(&i.identity))
            .collect::<Vec<_>>()
            .join(",")
    );
    let records: Vec<(RelayRecord, [u8; 32])> = intros
        .iter()
        .filter_map(|i| {
            let r = match &scout.engine {
                Engine::Node(n) => n.link.view().get(&i.identity).cloned(),
                Engine::Link(_) => None,
            };
            r.map(|r| (r, i.auth_key))
        })
        .collect();
    if records.is_empty() {
        return Err("set-up: no intro point's relay record in the view".into());
    }
    drop(scout);
    let (mut agents, _) = start_agents(cli, clock, cli.agents, false)?;
    let mut tally = Tally::default();
    // Which auth key each of our circuits is for.
    let mut circ_key: HashMap<(usize, CircId), [u8; 32]> = HashMap::new();
    let mut acked: HashMap<(usize, CircId), u64> = HashMap::new();
    let pending = std::cell::RefCell::new(Vec::<(usize, CircId, [u8; 32])>::new());
    let mut rr = 0usize;
    // Two INTRODUCE1 per circuit: one circuit per two messages due.
    let per_circuit = 2u64;
    flood(
        cli,
        &mut agents,
        clock,
        &mut tally,
        |agents, now, attempt, _| {
            if attempt % per_circuit != 0 {
                return false;
            }
            rr = rr.wrapping_add(1);
            let n = agents.len();
            let Some((record, auth)) = records.get((rr / n) % records.len()) else {
                return false;
            };
            let i = rr % n;
            let Some(node) = agents.get_mut(i).and_then(Agent::node) else {
                return false;
            };
            match node
                .circ
                .build(now, Purpose::Probe, vec![record.clone()], None)
            {
                Ok(id) => {
                    pending.borrow_mut().push((i, id, *auth));
                    // Counted when its INTRODUCE1s go out.
                    false
                }
                Err(_) => false,
            }
        },
        |agents, now, i, e, tally| {
            for (a, id, key) in pending.borrow_mut().drain(..) {
                circ_key.insert((a, id), key);
            }
            match e {
                Ev::Built(id) => {
                    let Some(auth_key) = circ_key.get(&(i, id)).copied() else {
                        return;
                    };
                    let Some(node) = agents.get_mut(i).and_then(Agent::node) else {
                        return;
                    };
                    for _ in 0..per_circuit {
                        let mut msg1 = [0u8; globalnet::session::E2E_MSG1_LEN];
                        OsRng.fill_bytes(&mut msg1);
                        let m = Introduce1 {
                            auth_key,
                            msg1,
                            pow: None,
                        };
                        if node
                            .circ
                            .send(id, RelayCommand::Introduce1, &m.emit())
                            .is_ok()
                        {
                            tally.sent += 1;
                        }
                    }
                }
                Ev::Msg(id, cmd, payload) if cmd == RelayCommand::IntroduceAck as u8 => {
                    let s = globalnet::session::roles::parse_status(&payload).unwrap_or(255);
                    tally.answer(format!("ack_{}", intro_status(s)));
                    // Like a client: the intro circuit is done after its answers.
                    let acks = acked.entry((i, id)).or_insert(0u64);
                    *acks += 1;
                    if *acks >= per_circuit {
                        acked.remove(&(i, id));
                        if let Some(node) = agents.get_mut(i).and_then(Agent::node) {
                            node.circ.destroy(now, id);
                        }
                    }
                }
                Ev::Closed(id) => {
                    circ_key.remove(&(i, id));
                    acked.remove(&(i, id));
                }
                _ => {}
            }
        },
    );
    Ok(())
}

/// A descriptor of a made-up service whose index shares `bits` leading bits with `target`.
fn near_descriptor(target: &[u8; 32], bits: u32, e: u64, intro: &IntroEntry) -> Option<Vec<u8>> {
    let bits = bits.min(24);
    let want = u32::from_be_bytes([0, target[0], target[1], target[2]]) >> (24 - bits);
    for _ in 0..(1u32 << bits).saturating_mul(64) {
        let key = SigningKey::generate(&mut OsRng);
        let address = descriptor::address_bytes(&key.verifying_key().to_bytes());
        let idx = descriptor::index(&address, e);
        let got = u32::from_be_bytes([0, idx[0], idx[1], idx[2]]) >> (24 - bits);
        if got != want {
            continue;
        }
        let now_ms = unix_ms();
        let mut salt = [0u8; descriptor::DESC_SALT_LEN];
        OsRng.fill_bytes(&mut salt);
        let p = Publication {
            revision: descriptor::revision_for(now_ms, None),
            expires: descriptor::expires_for(now_ms / 1000, e),
            salt,
        };
        return Descriptor::build(&key, e, std::slice::from_ref(intro), p)
            .ok()
            .map(|d| d.bytes().to_vec());
    }
    None
}

fn run_store(cli: &Cli, clock: &Clock) -> Result<(), String> {
    let service = cli.service.ok_or("--service is needed for store")?;
    let (mut agents, record) = start_agents(cli, clock, cli.agents, true)?;
    let now_ms = unix_ms();
    let e = descriptor::epoch(now_ms / 1000);
    let target = descriptor::index(&service.octets(), e);
    eprintln!("index {}", hex4(&target));
    // A made-up intro point (the target's own keys: any valid-looking entry will do).
    let f = record.fields();
    let intro = IntroEntry {
        identity: *record.identity(),
        link_key: f.link_key,
        onion_key: f.onion_key,
        auth_key: SigningKey::generate(&mut OsRng).verifying_key().to_bytes(),
        endpoints: f.endpoints.iter().take(1).copied().collect(),
    };
    let mut tally = Tally::default();
    let mut rpc = 1u64;
    flood(
        cli,
        &mut agents,
        clock,
        &mut tally,
        |agents, now, attempt, _| {
            let Some(bytes) = near_descriptor(&target, cli.near_bits, e, &intro) else {
                return false;
            };
            let Ok(msg) = (DhtMessage::Store {
                kind: RecordKind::Descriptor,
                record: bytes,
            })
            .emit() else {
                return false;
            };
            let n = agents.len();
            let Some(a) = agents.get_mut(attempt as usize % n) else {
                return false;
            };
            let (Some(link), Engine::Link(l)) = (a.link, &mut a.engine) else {
                return false;
            };
            rpc += 1;
            l.send_dht(now, link, rpc, false, &msg).is_ok()
        },
        |_, _, _, e, tally| {
            if let Ev::DhtReply(data) = e {
                match DhtMessage::parse(&data) {
                    Ok(DhtMessage::StoreResult { status }) => {
                        tally.answer(format!("store_{status:?}").to_lowercase())
                    }
                    Ok(_) => tally.answer("other_reply".into()),
                    Err(_) => tally.answer("bad_reply".into()),
                }
            }
        },
    );
    Ok(())
}

fn run_junk(cli: &Cli) -> Result<(), String> {
    let mut socks = Vec::new();
    for _ in 0..16 {
        let s = UdpSocket::bind(SocketAddr::new(cli.bind, 0)).map_err(|e| format!("bind: {e}"))?;
        s.set_nonblocking(true).map_err(|e| format!("{e}"))?;
        socks.push(s);
    }
    println!("ready mode=Junk agents={}", socks.len());
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(cli.seconds);
    let mut buf = [0u8; 1400];
    let (mut sent, mut attempts) = (0u64, 0u64);
    let mut next_tick = start + Duration::from_secs(1);
    while Instant::now() < end {
        let due = (start.elapsed().as_secs_f64() * cli.rate) as u64;
        while attempts < due {
            let len = (OsRng.next_u32() as usize % buf.len()) + 1;
            let b = buf.get_mut(..len).unwrap_or_default();
            OsRng.fill_bytes(b);
            // Some look like link frames: a WireGuard message type in the first byte.
            if let Some(first) = b.first_mut() {
                *first = (attempts % 5) as u8;
            }
            if let Some(s) = socks.get(attempts as usize % socks.len()) {
                if s.send_to(b, cli.target).is_ok() {
                    sent += 1;
                }
            }
            attempts += 1;
        }
        if Instant::now() >= next_tick {
            next_tick += Duration::from_secs(1);
            println!("tick t={:.0} sent={sent}", start.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "result mode=Junk seconds={secs:.1} rate={:.1} tool_cpu_s={:.1} sent={sent}",
        sent as f64 / secs.max(0.001),
        cpu_seconds()
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let clock = Clock::new();
    let r = match cli.mode {
        Mode::Create => run_create(&cli, &clock, false),
        Mode::EstablishIntro => run_create(&cli, &clock, true),
        Mode::Introduce => run_introduce(&cli, &clock),
        Mode::Store => run_store(&cli, &clock),
        Mode::Junk => run_junk(&cli),
        Mode::None => {
            println!("ready mode=None agents=0");
            std::thread::sleep(Duration::from_secs_f64(cli.seconds));
            println!(
                "result mode=None seconds={:.1} rate=0 tool_cpu_s=0 sent=0",
                cli.seconds
            );
            Ok(())
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hostile: {e}");
            ExitCode::FAILURE
        }
    }
}
