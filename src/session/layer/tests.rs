//! The session layer on its own, driven through a fake [`SessionCtx`]: what it asks of the node
//! and what it reports, without a node, links or circuits.

use std::net::SocketAddr;

use super::*;
use crate::budget::MemoryBudget;
use crate::circuit::layer::{CircuitError, Purpose};
use crate::circuit::path::{Guards, PathRules};
use crate::crypto::Randomness;
use crate::dht::descriptor::{epochs_to_look_up, index as desc_index};
use crate::link::view::RelayView;
use crate::link::LinkId;
use crate::session::{DhtAnswer, DhtRequest, SessionCtx};
use crate::wire::record::RelayRecord;
use crate::wire::relay::RelayCommand;

/// A node with no relays in view: every path fails, so the layer can only ask and report.
struct Fake {
    view: RelayView,
    guards: Guards,
    budget: MemoryBudget,
    unreachable: Vec<([u8; 16], String)>,
}

impl Fake {
    fn new() -> Fake {
        let budget = MemoryBudget::new(64 << 20);
        Fake {
            view: RelayView::new([1; 32], (16, 32), budget.clone()),
            guards: Guards::new(),
            budget,
            unreachable: Vec::new(),
        }
    }
}

impl SessionCtx for Fake {
    fn build(
        &mut self,
        _: Instant,
        _: Purpose,
        _: Vec<RelayRecord>,
    ) -> Result<CircId, CircuitError> {
        Err(CircuitError::Limit)
    }
    fn extend(&mut self, _: Instant, _: CircId, _: RelayRecord) -> Result<(), CircuitError> {
        Err(CircuitError::NoCircuit)
    }
    fn set_purpose(&mut self, _: CircId, _: Purpose) {}
    fn path(&self, _: CircId) -> Option<&[RelayRecord]> {
        None
    }
    fn ready_ids(&self, _: Purpose) -> Vec<CircId> {
        Vec::new()
    }
    fn hop_bind(&self, _: CircId, _: usize) -> Option<[u8; 32]> {
        None
    }
    fn send(&mut self, _: CircId, _: RelayCommand, _: &[u8]) -> Result<(), CircuitError> {
        Err(CircuitError::NoCircuit)
    }
    fn destroy(&mut self, _: Instant, _: CircId) {}
    fn reply(&mut self, _: u64, _: RelayCommand, _: &[u8]) -> Result<(), CircuitError> {
        Err(CircuitError::NoCircuit)
    }
    fn relayed_bind(&self, _: u64) -> Option<[u8; 32]> {
        None
    }
    fn relayed_upstream(&self, _: u64) -> Option<LinkId> {
        None
    }
    fn splice(&mut self, _: u64, _: u64) -> Result<(), CircuitError> {
        Err(CircuitError::NoCircuit)
    }
    fn close_relayed(&mut self, _: Instant, _: u64) {}
    fn view(&self) -> &RelayView {
        &self.view
    }
    fn guards(&self) -> &Guards {
        &self.guards
    }
    fn path_rules(&self) -> PathRules {
        PathRules {
            ipv4_bits: 16,
            ipv6_bits: 32,
        }
    }
    fn own_endpoints(&self) -> Vec<SocketAddr> {
        Vec::new()
    }
    fn identity(&self) -> [u8; 32] {
        [1; 32]
    }
    fn recently_dead(&self, _: &[u8; 32], _: Instant) -> bool {
        false
    }
    fn relay_unreachable(&self, _: &[u8; 32], _: Instant) -> bool {
        false
    }
    fn budget(&self) -> &MemoryBudget {
        &self.budget
    }
    fn deliver_packet(&mut self, _: &[u8]) {}
    fn pong(&mut self, _: [u8; 16], _: u64, _: u64) {}
    fn unreachable(&mut self, dst: [u8; 16], why: &str) {
        self.unreachable.push((dst, why.to_string()));
    }
    fn packet_buf(&mut self) -> Vec<u8> {
        Vec::new()
    }
    fn recycle_packet(&mut self, _: Vec<u8>) {}
}

fn layer() -> SessionLayer {
    SessionLayer::new(Randomness::with_choice_seed([9; 32]))
}

/// An empty IPv6 packet (no next header) from `src` to `dst`.
fn packet(src: Ipv6Addr, dst: [u8; 16]) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x60;
    p[6] = 59;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst);
    p
}

const DST: [u8; 16] = [0xfd, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7];

#[test]
fn without_a_client_identity_nothing_is_sent() {
    let (mut s, mut ctx) = (layer(), Fake::new());
    let p = packet(Ipv6Addr::LOCALHOST, DST);
    assert!(matches!(
        s.send_packet(&mut ctx, Instant::ZERO, DST, &p),
        Err(SendError::Unreachable(_))
    ));
    assert!(s.poll_dht_request().is_none());
}

#[test]
fn a_new_session_asks_for_the_descriptor_and_a_failed_first_lookup_is_final() {
    let (mut s, mut ctx) = (layer(), Fake::new());
    s.set_client_identity([5; 32], Vec::new());
    let me = s.pseudonym_for(DST).expect("client identity set");
    let now = 1_000_000;
    assert_eq!(
        s.send_packet(&mut ctx, Instant::from_unix_ms(now), DST, &packet(me, DST)),
        Ok(())
    );
    let req = s.poll_dht_request().expect("a descriptor lookup");
    let (cur, _) = epochs_to_look_up(now / 1000);
    assert_eq!(
        req,
        DhtRequest::Lookup {
            dst: DST,
            key: desc_index(&DST, cur)
        }
    );
    assert!(s.poll_dht_request().is_none());
    s.dht_started(7, &req);
    // Not ours: handed back.
    assert!(!s.on_dht(
        &mut ctx,
        Instant::from_unix_ms(now),
        8,
        DhtAnswer::Other,
        Vec::new()
    ));
    assert!(s.on_dht(
        &mut ctx,
        Instant::from_unix_ms(now),
        7,
        DhtAnswer::Failed("no circuit"),
        Vec::new()
    ));
    assert_eq!(
        ctx.unreachable,
        vec![(DST, "descriptor lookup failed: no circuit".to_string())]
    );
    assert!(s.sessions_info().is_empty());
}

#[test]
fn a_service_wants_dht_circuits_and_waits_for_paths() {
    let (mut s, mut ctx) = (layer(), Fake::new());
    assert_eq!(s.dht_pools_wanted(), (false, false));
    assert!(s.add_service(Instant::ZERO, [3; 32]));
    assert!(!s.add_service(Instant::ZERO, [3; 32]));
    s.timeout(&mut ctx, Instant::ZERO);
    assert_eq!(s.dht_pools_wanted(), (false, true));
    let info = s.services_info();
    assert_eq!(info.len(), 1);
    assert!(info[0].intro_points.is_empty());
    // No intro point, no descriptor to publish.
    assert!(s.poll_dht_request().is_none());
}
