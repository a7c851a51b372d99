use super::*;
use crate::dht::lookup_msg::{LookupOp, LookupRequest};
use rand::SeedableRng;

/// Circuits that build when told to, and a record of what went out on them.
struct Mock {
    budget: MemoryBudget,
    rng: StdRng,
    next: u64,
    built: Vec<CircId>,
    /// The relays each build was told to avoid as its last hop.
    avoided: Vec<Vec<[u8; 32]>>,
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
            avoided: Vec::new(),
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
    fn build_circuit(&mut self, _: Instant, _: bool, avoid: &[[u8; 32]]) -> Result<CircId, String> {
        self.avoided.push(avoid.to_vec());
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

fn built(c: &mut DhtClient, m: &mut Mock, id: u64, at: u64) {
    let e = CircEvent::Built {
        id: CircId(id),
        build_ms: 1,
    };
    assert_eq!(c.on_circuit_event(m, Instant::from_unix_ms(at), e), None);
}

/// The lookup id of the last request sent on circuit `id`.
fn lookup_id_on(m: &Mock, id: u64) -> u32 {
    let (_, payload) = m.sent.iter().rev().find(|(c, _)| *c == CircId(id)).unwrap();
    LookupRequest::parse(payload).unwrap().lookup_id
}

fn not_found(lookup_id: u32) -> Vec<u8> {
    LookupReply {
        status: LookupStatus::NotFound,
        lookup_id,
        body: ReplyBody::empty(LookupOp::FindValue),
    }
    .emit()
    .unwrap()
}

/// Runs the node's timer steps at `at`.
fn tick(c: &mut DhtClient, m: &mut Mock, at: u64) {
    let now = Instant::from_unix_ms(at);
    for t in c.overdue(now) {
        c.on_overdue(m, now, t);
    }
}

#[test]
fn an_unanswered_try_gets_a_hedge_and_the_first_answer_wins() {
    let (mut c, mut m) = (DhtClient::new(), Mock::new());
    let token = c.query(&mut m, Instant::ZERO, find([5; 32]), false, Vec::new());
    built(&mut c, &mut m, 1, 100);
    let first = lookup_id_on(&m, 1);
    // Before any query was answered the hedge waits DHT_HEDGE_INITIAL_MS, not 15 s.
    let hedge_at = 100 + DHT_HEDGE_INITIAL_MS;
    tick(&mut c, &mut m, hedge_at - 1);
    assert_eq!(m.built, vec![CircId(1)]);
    tick(&mut c, &mut m, hedge_at);
    assert_eq!(
        m.built,
        vec![CircId(1), CircId(2)],
        "a second, fresh circuit"
    );
    assert_eq!(
        m.avoided[1],
        vec![[1; 32]],
        "its last hop is not the first try's"
    );
    assert!(m.destroyed.is_empty(), "the first try stays out");
    assert_eq!(c.stats().hedges, 1);
    built(&mut c, &mut m, 2, hedge_at + 100);
    let second = lookup_id_on(&m, 2);
    assert_ne!(first, second, "each try has its own lookup id");
    // No third try while two are out, until the first one's 15 s are over.
    tick(&mut c, &mut m, hedge_at + 8_000);
    assert_eq!(m.built.len(), 2);
    // The first try answers late: it wins, and both circuits are retired.
    assert!(c.on_reply(
        &mut m,
        Instant::from_unix_ms(hedge_at + 9_000),
        CircId(1),
        &not_found(first)
    ));
    assert_eq!(
        c.take_done(),
        vec![(token, DhtOutcome::NotFound, vec![[1; 32], [2; 32]])]
    );
    let mut gone = m.destroyed.clone();
    gone.sort();
    assert_eq!(gone, vec![CircId(1), CircId(2)]);
    // The other try's answer, coming after, is nobody's.
    let before = c.stats().clone();
    c.on_reply(
        &mut m,
        Instant::from_unix_ms(hedge_at + 9_100),
        CircId(2),
        &not_found(second),
    );
    assert!(c.take_done().is_empty());
    assert_eq!(c.stats().queries, before.queries);
}

#[test]
fn the_hedge_timeout_follows_answered_queries() {
    let (mut c, mut m) = (DhtClient::new(), Mock::new());
    c.query(&mut m, Instant::ZERO, find([6; 32]), false, Vec::new());
    built(&mut c, &mut m, 1, 0);
    let id = lookup_id_on(&m, 1);
    c.on_reply(
        &mut m,
        Instant::from_unix_ms(300),
        CircId(1),
        &not_found(id),
    );
    assert_eq!(c.take_done().len(), 1);
    // Answers in 300 ms: the next try waits the floor, DHT_HEDGE_MIN_MS, before its hedge.
    let token = c.query(
        &mut m,
        Instant::from_unix_ms(1_000),
        find([7; 32]),
        false,
        Vec::new(),
    );
    built(&mut c, &mut m, 2, 1_000);
    tick(&mut c, &mut m, 1_000 + DHT_HEDGE_MIN_MS - 1);
    assert_eq!(m.built.len(), 2);
    tick(&mut c, &mut m, 1_000 + DHT_HEDGE_MIN_MS);
    assert_eq!(m.built.len(), 3);
    assert_eq!(c.via(token), &[[2; 32]]);
    // Slow answers raise it again (never above the 15 s wait).
    let mut r = Rtt::default();
    r.sample(300);
    assert_eq!(r.hedge_after(), DHT_HEDGE_MIN_MS);
    for _ in 0..20 {
        r.sample(9_000);
    }
    assert!(r.hedge_after() > 9_000 && r.hedge_after() <= DHT_QUERY_WAIT_MS);
}

#[test]
fn a_closed_circuit_moves_its_try_on_at_once_and_a_refused_hedge_is_replaced() {
    let (mut c, mut m) = (DhtClient::new(), Mock::new());
    c.query(&mut m, Instant::ZERO, find([8; 32]), false, Vec::new());
    built(&mut c, &mut m, 1, 0);
    // The circuit dies (a hop's link went down): a new try starts at once, not after a wait.
    let closed = CircEvent::Closed {
        id: CircId(1),
        why: "link down".into(),
    };
    c.on_circuit_event(&mut m, Instant::from_unix_ms(50), closed);
    assert_eq!(m.built, vec![CircId(1), CircId(2)]);
    built(&mut c, &mut m, 2, 60);
    tick(&mut c, &mut m, 60 + DHT_HEDGE_INITIAL_MS);
    assert_eq!(m.built.len(), 3, "the hedge");
    built(&mut c, &mut m, 3, 70 + DHT_HEDGE_INITIAL_MS);
    // The hedge's last hop refuses: it is retired, the first try stays out, and as it is past
    // its hedge timeout another hedge starts at once.
    let refusal = LookupReply {
        status: LookupStatus::RateLimited,
        lookup_id: lookup_id_on(&m, 3),
        body: ReplyBody::empty(LookupOp::FindValue),
    };
    c.on_reply(
        &mut m,
        Instant::from_unix_ms(80 + DHT_HEDGE_INITIAL_MS),
        CircId(3),
        &refusal.emit().unwrap(),
    );
    assert_eq!(m.destroyed, vec![CircId(3)]);
    assert_eq!(m.built.len(), 4);
    assert_eq!(c.stats().hedges, 2);
    // The first still answers, and wins.
    let answer = not_found(lookup_id_on(&m, 2));
    c.on_reply(
        &mut m,
        Instant::from_unix_ms(90 + DHT_HEDGE_INITIAL_MS),
        CircId(2),
        &answer,
    );
    assert_eq!(c.take_done().len(), 1);
}

#[test]
fn a_query_without_answers_fails_after_its_tries() {
    let (mut c, mut m) = (DhtClient::new(), Mock::new());
    let token = c.query(&mut m, Instant::ZERO, find([9; 32]), false, Vec::new());
    let mut t = 0;
    while m.built.len() < 10 && t < 200_000 {
        for id in m.built.clone() {
            if !m.sent.iter().any(|(c2, _)| *c2 == id) && !m.destroyed.contains(&id) {
                built(&mut c, &mut m, id.0, t);
            }
        }
        tick(&mut c, &mut m, t);
        if !c.take_done().is_empty() {
            break;
        }
        t += 100;
    }
    // Every try counts: DHT_QUERY_TRIES circuits in all. Two are out at a time, so the end
    // comes after three waits of 15 s (and a little), not five.
    assert_eq!(m.built.len(), usize::from(DHT_QUERY_TRIES));
    assert!(t <= 3 * DHT_QUERY_WAIT_MS + 1_000, "ended at {t} ms");
    assert_eq!(c.stats().queries_failed, 1);
    assert!(c.via(token).is_empty());
}

#[test]
fn a_hedge_whose_build_fails_is_replaced_while_the_first_try_waits() {
    let (mut c, mut m) = (DhtClient::new(), Mock::new());
    c.query(&mut m, Instant::ZERO, find([4; 32]), false, Vec::new());
    built(&mut c, &mut m, 1, 0);
    tick(&mut c, &mut m, DHT_HEDGE_INITIAL_MS);
    assert_eq!(m.built.len(), 2);
    // The hedge's build fails: the first try, long past its hedge timeout, gets another at once
    // rather than waiting out its 15 s alone.
    let closed = CircEvent::Closed {
        id: CircId(2),
        why: "EXTEND failed".into(),
    };
    c.on_circuit_event(
        &mut m,
        Instant::from_unix_ms(DHT_HEDGE_INITIAL_MS + 500),
        closed,
    );
    assert_eq!(m.built.len(), 3);
    assert_eq!(c.stats().hedges, 2);
    assert!(!m.destroyed.contains(&CircId(1)));
}
