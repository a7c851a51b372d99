//! A service notices when its intro points lose its registration (issue #19, docs/protocol.md
//! 10.6.1): under an INTRODUCE1 flood the netns hostile suite saw intro points that no longer held
//! the service's key while the service's intro circuits looked alive to it, so clients heard
//! "unknown key" everywhere and the service stayed unreachable after the flood. Here the intro
//! points drop the registration silently (no DESTROY, no answer), and the service must register
//! again within a stated bound, under the same auth keys, so that descriptors clients already
//! hold stay good.

use globalnet::node::NodeEvent;
use globalnet::session::limits::{
    INTRO_CHECK_DEAD_MS, INTRO_CHECK_MS, INTRO_CHECK_RESEND_MS, INTRO_ESTABLISH_TIMEOUT_MS,
};
use globalnet::sim::{Sim, SimConfig};

mod sim_packets;
use sim_packets::udp;

const SERVICE_SEED: [u8; 32] = [0x61; 32];

fn service_addr() -> [u8; 16] {
    globalnet::session::ServiceIdentity::from_seed(&SERVICE_SEED)
        .address()
        .octets()
}

struct World {
    sim: Sim,
    relays: usize,
    svc: usize,
}

impl World {
    fn new(seed: u64) -> World {
        let mut sim = Sim::new(SimConfig {
            seed,
            ..SimConfig::default()
        });
        let relays = 16;
        sim.add_node(true, &[], 8);
        for _ in 1..relays {
            sim.add_node(true, &[0], 8);
        }
        let svc = sim.add_node(false, &[0, 1], 6);
        sim.run_for(30_000);
        let now = sim.now;
        sim.nodes[svc].node.add_service(now, SERVICE_SEED);
        sim.flush(svc);
        sim.run_for(20_000);
        let w = World { sim, relays, svc };
        assert_eq!(w.intro_relays().len(), 3, "three intro points held");
        w
    }

    /// The relays that hold a registration of the service, with its auth keys there.
    fn intro_relays(&self) -> Vec<(usize, Vec<[u8; 32]>)> {
        (0..self.relays)
            .filter_map(|r| {
                let keys = self.sim.nodes[r].node.intro_role()?.auth_keys();
                (!keys.is_empty()).then_some((r, keys))
            })
            .collect()
    }

    /// Runs until `done` holds (checked every 250 ms) or `ms` passed; how long it took.
    fn run_until(&mut self, ms: u64, mut done: impl FnMut(&World) -> bool) -> Option<u64> {
        let t0 = self.sim.now;
        while self.sim.now - t0 < ms {
            self.sim.run_for(250);
            if done(self) {
                return Some(self.sim.now - t0);
            }
        }
        None
    }

    /// A fresh client given the descriptors the service published before `t`: it sends one
    /// packet; whether the service got it within `ms`.
    fn client_reaches(&mut self, descs: &[Vec<u8>], ms: u64) -> bool {
        let cli = self.sim.add_node(false, &[0, 1], 6);
        self.sim.run_for(10_000);
        for d in descs {
            let now = self.sim.now;
            self.sim.nodes[cli].node.cache_descriptor(now, d).unwrap();
        }
        self.sim.nodes[cli]
            .node
            .set_client_identity([0xc3; 32], Vec::new());
        let s = service_addr();
        let me = self.sim.nodes[cli].node.pseudonym_for(s).unwrap().octets();
        let now = self.sim.now;
        let seen = self.sim.nodes[self.svc].events.len();
        self.sim.nodes[cli]
            .node
            .send_packet(now, s, &udp(me, s, 7100, 7, b"still there?"))
            .unwrap();
        self.sim.flush(cli);
        let svc = self.svc;
        self.run_until(ms, |w| {
            w.sim.nodes[svc].events[seen..]
                .iter()
                .any(|e| matches!(e, NodeEvent::Packet { .. }))
        })
        .is_some()
    }
}

#[test]
fn intro_points_that_forgot_the_registration_get_it_back() {
    let mut w = World::new(41);
    let before = w.intro_relays();
    let descs = w.sim.nodes[w.svc].node.service_descriptors();
    // Past the first check, so the service has had an answer (EXISTS) and waits a full interval.
    w.sim.run_for(INTRO_CHECK_MS + 2_000);
    assert_eq!(w.intro_relays(), before, "the checks changed nothing");
    // Answered on the same circuits (EXISTS): no registration was made again.
    let made = |w: &World| -> u64 {
        (0..w.relays)
            .filter_map(|r| {
                w.sim.nodes[r]
                    .node
                    .intro_role()
                    .map(|x| x.stats.intro_established)
            })
            .sum()
    };
    assert_eq!(made(&w), 3, "one registration per intro point");
    for (r, _) in &before {
        w.sim.nodes[*r].node.forget_intro_registrations();
    }
    assert!(w.intro_relays().is_empty());
    // The next check finds the registrations gone and makes them again on the same circuits.
    let bound = INTRO_CHECK_MS + INTRO_CHECK_RESEND_MS;
    let took = w.run_until(bound, |w| w.intro_relays() == before);
    assert!(
        took.is_some(),
        "not registered again within {bound} ms: {:?} (before {before:?})",
        w.intro_relays()
    );
    eprintln!("registered again after {} ms", took.unwrap_or(0));
    assert_eq!(
        w.sim.nodes[w.svc].node.session_stats().intro_checks_failed,
        0,
        "no circuit needed ending"
    );
    // The descriptors published before still work.
    assert!(
        w.client_reaches(&descs, 15_000),
        "client with the old descriptor"
    );
}

#[test]
fn an_intro_point_that_stopped_answering_is_rebuilt() {
    let mut w = World::new(42);
    let before = w.intro_relays();
    let descs = w.sim.nodes[w.svc].node.service_descriptors();
    // One intro point answers nothing more on the service's circuit (it lost it while the
    // service did not notice); its registration stays, so the service's next circuit there
    // takes it over (under the same key) and is answered.
    let (mute, keys) = before[0].clone();
    w.sim.nodes[mute].node.session_test_hooks().mute_intro_keys = keys;
    let svc = w.svc;
    let bound = INTRO_CHECK_MS + INTRO_CHECK_DEAD_MS + INTRO_CHECK_RESEND_MS;
    let took = w.run_until(bound + 1_000, |w| {
        w.sim.nodes[svc].node.session_stats().intro_checks_failed > 0
    });
    assert!(took.is_some(), "the silent intro point went unnoticed");
    eprintln!("silent intro point found after {} ms", took.unwrap_or(0));
    w.sim.nodes[mute]
        .node
        .session_test_hooks()
        .mute_intro_keys
        .clear();
    // Its circuit is rebuilt to the same relay under the same key: descriptors stay good.
    let back = w.run_until(INTRO_ESTABLISH_TIMEOUT_MS, |w| {
        w.sim.nodes[svc].node.services_info()[0].intro_points.len() == 3
    });
    assert!(
        back.is_some(),
        "{:?}",
        w.sim.nodes[svc].node.services_info()
    );
    assert_eq!(w.intro_relays(), before, "the same relays, the same keys");
    assert!(
        w.client_reaches(&descs, 15_000),
        "client with the old descriptor"
    );
}
