use super::*;
use rand::SeedableRng;

/// A node that is no DHT relay, with one relayed circuit.
struct Mock {
    budget: MemoryBudget,
    rng: StdRng,
    replies: Vec<(u64, Vec<u8>)>,
}

impl LinkContext for Mock {
    fn budget(&self) -> &MemoryBudget {
        &self.budget
    }
    fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }
    fn identity(&self) -> [u8; 32] {
        [1; 32]
    }
    fn prefix_bits(&self) -> (u8, u8) {
        (16, 32)
    }
    fn is_dht_relay(&self) -> bool {
        false
    }
    fn own_record(&self) -> Option<(u64, Vec<u8>)> {
        None
    }
    fn contacts(&self) -> Vec<(LinkId, Contact)> {
        Vec::new()
    }
    fn identity_of(&self, _: LinkId) -> Option<[u8; 32]> {
        None
    }
    fn endpoint_of(&self, _: LinkId) -> Option<SocketAddr> {
        None
    }
    fn link_to(&self, _: &[u8; 32]) -> Option<LinkId> {
        None
    }
    fn send_frame(&mut self, _: Instant, _: LinkId, _: u64, _: bool, _: &[u8]) -> bool {
        false
    }
    fn dial(&mut self, _: Instant, _: &Contact, _: Option<&Contact>) {}
    fn dialing(&self, _: &[u8; 32]) -> bool {
        false
    }
    fn direct_contact(&self, _: &Contact) -> bool {
        false
    }
    fn reply(&mut self, slot: u64, payload: &[u8]) -> bool {
        self.replies.push((slot, payload.to_vec()));
        true
    }
    fn sample_relays(&mut self, _: usize) -> Vec<Vec<u8>> {
        Vec::new()
    }
}

#[test]
fn a_node_that_is_no_dht_relay_refuses_lookups_and_keeps_nothing() {
    let mut m = Mock {
        budget: MemoryBudget::new(1 << 20),
        rng: StdRng::seed_from_u64(1),
        replies: Vec::new(),
    };
    let mut h = DhtHost::new(Randomness::with_choice_seed([1; 32]));
    h.observe(true);
    h.on_timer(&mut m, Instant::ZERO);
    assert!(h.relay().is_none());
    let req = LookupRequest {
        op: LookupOp::FindNodes,
        kind: None,
        lookup_id: 77,
        key: [5; 32],
        record: Vec::new(),
    };
    h.on_last_hop(&mut m, Instant::from_unix_ms(1), 9, &req.emit());
    let (slot, bytes) = m.replies.pop().unwrap();
    let reply = LookupReply::parse(&bytes).unwrap();
    assert_eq!(
        (slot, reply.status, reply.lookup_id),
        (9, LookupStatus::Refused, 77)
    );
    assert_eq!(h.observed().len(), 1);
    assert_eq!((h.stats().role_requests, h.stats().role_refused), (1, 1));
    // Junk gets no reply it could not salvage ids for, and is counted.
    h.on_last_hop(&mut m, Instant::from_unix_ms(2), 9, &[0xff]);
    assert_eq!(h.stats().role_refused, 2);
    assert!(h.slots.is_empty() && h.role_ops.is_empty());
}
