//! The in-process network of the session tests (tests/sim_sessions.rs, tests/sim_failover.rs): a
//! service, a client and relays, with helpers to send flows between them.
#![allow(dead_code)]

use globalnet::node::NodeEvent;
use globalnet::session::flows::{flow_of, FlowKey};
use globalnet::sim::{Sim, SimConfig};
use globalnet::time::Instant;

pub mod failover;

#[path = "../sim_packets/mod.rs"]
mod sim_packets;
pub use sim_packets::udp;

pub const SERVICE_SEED: [u8; 32] = [0x51; 32];
pub const OTHER_SERVICE_SEED: [u8; 32] = [0x52; 32];
pub const CLIENT_SEED: [u8; 32] = [0xc1; 32];

pub fn service_addr(seed: &[u8; 32]) -> [u8; 16] {
    globalnet::session::ServiceIdentity::from_seed(seed)
        .address()
        .octets()
}

pub fn swap(p: &[u8]) -> Vec<u8> {
    let mut r = p.to_vec();
    r[8..24].copy_from_slice(&p[24..40]);
    r[24..40].copy_from_slice(&p[8..24]);
    r[40..42].copy_from_slice(&p[42..44]);
    r[42..44].copy_from_slice(&p[40..42]);
    r
}

pub struct World {
    pub sim: Sim,
    pub relays: usize,
    /// Per node: events up to here were already echoed (services) or read (clients).
    pub echoed: std::collections::HashMap<usize, usize>,
    /// When the echoing services received packets.
    pub arrivals: Vec<Instant>,
}

impl World {
    pub fn new(relays: usize, seed: u64) -> World {
        World::with_latency(relays, seed, SimConfig::default().latency_ms)
    }

    /// A world whose datagrams take `latency_ms` one way (every step of a build then takes
    /// longer than a timer tick, as at scale).
    pub fn with_latency(relays: usize, seed: u64, latency_ms: u64) -> World {
        let mut sim = Sim::new(SimConfig {
            seed,
            latency_ms,
            ..SimConfig::default()
        });
        sim.add_node(true, &[], 8);
        for _ in 1..relays {
            sim.add_node(true, &[0], 8);
        }
        World {
            sim,
            relays,
            echoed: Default::default(),
            arrivals: Vec::new(),
        }
    }

    pub fn add_host(&mut self) -> usize {
        self.sim.add_node(false, &[0, 1], 6)
    }

    /// Packets node `i` received since `from` (event index).
    pub fn packets(&self, i: usize, from: usize) -> Vec<Vec<u8>> {
        self.sim.nodes[i].events[from..]
            .iter()
            .filter_map(|e| match e {
                NodeEvent::Packet { buf } => Some(buf.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn send(&mut self, i: usize, dst: [u8; 16], p: &[u8]) {
        let now = self.sim.now;
        let r = self.sim.nodes[i].node.send_packet(now, dst, p);
        assert!(r.is_ok(), "send_packet: {r:?}");
        self.sim.flush(i);
    }

    /// Runs `ms` in steps of `step`, letting `svc` echo every packet back (UDP ports swapped).
    /// Returns the echoes `cli` received, with their arrival times.
    pub fn run_echo(
        &mut self,
        cli: usize,
        svc: usize,
        ms: u64,
        step: u64,
    ) -> Vec<(Instant, Vec<u8>)> {
        let mut seen_svc = *self.echoed.get(&svc).unwrap_or(&0);
        let mut seen_cli = self.sim.nodes[cli].events.len();
        let mut got = Vec::new();
        let end = self.sim.now + ms;
        while self.sim.now < end {
            self.sim.run_for(step);
            let inbound = self.packets(svc, seen_svc);
            seen_svc = self.sim.nodes[svc].events.len();
            for p in inbound {
                self.arrivals.push(self.sim.now);
                let dst: [u8; 16] = p[8..24].try_into().unwrap();
                let reply = swap(&p);
                let now = self.sim.now;
                let _ = self.sim.nodes[svc].node.send_packet(now, dst, &reply);
                self.sim.flush(svc);
            }
            for p in self.packets(cli, seen_cli) {
                got.push((self.sim.now, p));
            }
            seen_cli = self.sim.nodes[cli].events.len();
        }
        self.echoed.insert(svc, seen_svc);
        got
    }

    pub fn unreachable(&self, i: usize) -> Vec<String> {
        self.sim.nodes[i]
            .events
            .iter()
            .filter_map(|e| match e {
                NodeEvent::Unreachable { why, .. } => Some(why.clone()),
                _ => None,
            })
            .collect()
    }

    /// Starts a service on `svc` and waits for its intro points; hands its descriptors to
    /// `clients`' caches.
    pub fn publish(&mut self, svc: usize, seed: [u8; 32], clients: &[usize]) {
        let now = self.sim.now;
        self.sim.nodes[svc].node.add_service(now, seed);
        self.sim.flush(svc);
        self.sim.run_for(20_000);
        let info = self.sim.nodes[svc].node.services_info();
        let me = info
            .iter()
            .find(|s| s.address.octets() == service_addr(&seed))
            .unwrap();
        assert_eq!(me.intro_points.len(), 3, "intro points: {info:?}");
        let descs = self.sim.nodes[svc].node.service_descriptors();
        assert!(!descs.is_empty());
        for &c in clients {
            for d in &descs {
                let now = self.sim.now;
                self.sim.nodes[c].node.cache_descriptor(now, d).unwrap();
            }
        }
    }
}

/// The usual stage of a session test: `relays` relays, a service host and a client host, the
/// service published (its descriptors in the client's cache) and the client's identity set.
pub struct Stage {
    pub w: World,
    pub svc: usize,
    pub cli: usize,
    pub s_addr: [u8; 16],
    /// The client's pseudonym towards the service.
    pub me: [u8; 16],
}

impl Stage {
    pub fn new(relays: usize, seed: u64) -> Stage {
        Stage::in_world(World::new(relays, seed))
    }

    /// [`Stage::new`] in a world of [`World::with_latency`].
    pub fn with_latency(relays: usize, seed: u64, latency_ms: u64) -> Stage {
        Stage::in_world(World::with_latency(relays, seed, latency_ms))
    }

    fn in_world(mut w: World) -> Stage {
        let svc = w.add_host();
        let cli = w.add_host();
        w.sim.run_for(30_000);
        w.publish(svc, SERVICE_SEED, &[cli]);
        let s_addr = service_addr(&SERVICE_SEED);
        w.sim.nodes[cli]
            .node
            .set_client_identity(CLIENT_SEED, Vec::new());
        let me = w.sim.nodes[cli]
            .node
            .pseudonym_for(s_addr)
            .unwrap()
            .octets();
        Stage {
            w,
            svc,
            cli,
            s_addr,
            me,
        }
    }
}

pub fn key_of(p: &[u8]) -> FlowKey {
    flow_of(p, true).unwrap()
}

/// RUST_LOG=globalnet::node=debug shows the session layer's steps of a failing run.
pub fn init_log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .without_time()
        .with_test_writer()
        .try_init();
}
