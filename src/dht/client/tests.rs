use super::*;
use rand::SeedableRng;

/// Circuits that build when told to, and a record of what went out on them.
struct Mock {
    budget: MemoryBudget,
    rng: StdRng,
    next: u64,
    built: Vec<CircId>,
    sent: Vec<(CircId, Vec<u8>)>,
    destroyed: Vec<CircId>,
    no_paths: bool,
}

impl Mock {
    fn new() -> Mock {
        Mock {
            budget: MemoryBudget::new(1 << 20),
            rng: StdRng::seed_from_u64(7),
            next: 1,
            built: Vec::new(),
            sent: Vec::new(),
            destroyed: Vec::new(),
            no_paths: false,
        }
    }
}

impl CircuitContext for Mock {
    fn budget(&self) -> &MemoryBudget {
        &self.budget
    }
    fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }
    fn build_circuit(&mut self, _: Instant, _: bool, _: &[[u8; 32]]) -> Result<CircId, String> {
        if self.no_paths {
            return Err("no path".into());
        }
        let id = CircId(self.next);
        self.next += 1;
        self.built.push(id);
        Ok(id)
    }
    fn last_hop(&self, id: CircId) -> Option<[u8; 32]> {
        Some([id.0 as u8; 32])
    }
    fn send_lookup(&mut self, id: CircId, payload: &[u8]) -> bool {
        self.sent.push((id, payload.to_vec()));
        true
    }
    fn destroy_circuit(&mut self, _: Instant, id: CircId) {
        self.destroyed.push(id);
    }
    fn add_relays(&mut self, records: Vec<RelayRecord>, _: [u8; 32], _: Instant) -> usize {
        records.len()
    }
    fn view_is_small(&self) -> bool {
        false
    }
}

fn find(key: Key) -> DhtQuery {
    DhtQuery::FindValue {
        kind: RecordKind::Descriptor,
        key,
    }
}

#[test]
fn a_query_builds_its_own_circuit_sends_once_built_and_retires_it() {
    let (mut c, mut m) = (DhtClient::new(), Mock::new());
    let token = c.query(&mut m, Instant::ZERO, find([3; 32]), false, Vec::new());
    assert_eq!(m.built, vec![CircId(1)]);
    assert!(
        m.sent.is_empty(),
        "nothing goes out before the circuit is built"
    );
    let built = CircEvent::Built {
        id: CircId(1),
        build_ms: 10,
    };
    assert_eq!(
        c.on_circuit_event(&mut m, Instant::from_unix_ms(10), built),
        None
    );
    let (id, payload) = m.sent.pop().unwrap();
    assert_eq!(id, CircId(1));
    let req = LookupRequest::parse(&payload).unwrap();
    assert_eq!((req.op, req.key), (LookupOp::FindValue, [3; 32]));
    assert_eq!(c.via(token), &[[1; 32]]);
    let reply = LookupReply {
        status: LookupStatus::NotFound,
        lookup_id: req.lookup_id,
        body: ReplyBody::empty(LookupOp::FindValue),
    };
    assert!(c.on_reply(
        &mut m,
        Instant::from_unix_ms(20),
        CircId(1),
        &reply.emit().unwrap()
    ));
    assert_eq!(
        c.take_done(),
        vec![(token, DhtOutcome::NotFound, vec![[1; 32]])]
    );
    assert_eq!(m.destroyed, vec![CircId(1)]);
    // A reply on a circuit that is not ours is handed back.
    assert!(!c.on_reply(&mut m, Instant::from_unix_ms(20), CircId(9), &[]));
}

#[test]
fn an_outcome_never_comes_before_the_token() {
    let (mut c, mut m) = (DhtClient::new(), Mock::new());
    m.no_paths = true;
    let token = c.query(&mut m, Instant::ZERO, find([1; 32]), false, Vec::new());
    assert!(c.take_done().is_empty());
    let deferred = c.take_deferred();
    assert_eq!(deferred.len(), 1);
    assert_eq!(deferred[0].0, token);
    assert!(matches!(deferred[0].1, DhtOutcome::Failed(_)));
    assert_eq!(c.stats().queries_failed, 1);
}

#[test]
fn a_refusing_last_hop_moves_the_query_to_a_new_circuit() {
    let (mut c, mut m) = (DhtClient::new(), Mock::new());
    c.query(&mut m, Instant::ZERO, find([2; 32]), false, Vec::new());
    c.on_circuit_event(
        &mut m,
        Instant::from_unix_ms(1),
        CircEvent::Built {
            id: CircId(1),
            build_ms: 1,
        },
    );
    let req = LookupRequest::parse(&m.sent[0].1).unwrap();
    let refusal = LookupReply {
        status: LookupStatus::RateLimited,
        lookup_id: req.lookup_id,
        body: ReplyBody::empty(LookupOp::FindValue),
    };
    c.on_reply(
        &mut m,
        Instant::from_unix_ms(2),
        CircId(1),
        &refusal.emit().unwrap(),
    );
    assert_eq!(m.destroyed, vec![CircId(1)]);
    assert_eq!(m.built, vec![CircId(1), CircId(2)]);
    assert_eq!(c.stats().retries, 1);
    assert!(c.take_done().is_empty());
}
