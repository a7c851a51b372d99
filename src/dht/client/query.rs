//! One query of the DHT client and its tries: each try has a circuit of its own (never another
//! query's or another try's, so a last hop sees one key per circuit) and, once sent, a
//! `lookup_id` of its own. At most [`DHT_TRIES_OUTSTANDING`] tries of a query are out at once:
//! a try that got no answer within the smoothed round trip's timeout gets a hedge on a second
//! fresh circuit, and whichever answers first wins.

use std::collections::BTreeMap;

use crate::budget::Charge;
use crate::circuit::layer::CircId;
use crate::dht::lookup_msg::{LookupOp, LookupRequest};
use crate::dht::message::RecordKind;
use crate::time::{Instant, Millis};

use super::{DhtOutcome, DhtQuery, DHT_QUERY_WAIT_MS};

/// Tries of one query out at once: the first and one hedge.
pub const DHT_TRIES_OUTSTANDING: usize = 2;
/// A try unanswered for the hedge timeout gets a hedge; the timeout follows answered queries
/// (smoothed round trip + 4 × its mean deviation, RFC 6298) within these bounds, and starts
/// at `DHT_HEDGE_INITIAL_MS` before any answered.
pub const DHT_HEDGE_MIN_MS: Millis = 1_500;
/// See [`DHT_HEDGE_MIN_MS`].
pub const DHT_HEDGE_INITIAL_MS: Millis = 4_000;

/// The smoothed round trip of a node's answered queries of one op (RFC 6298 without Karn's
/// ambiguity: each try has its own lookup id).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Rtt {
    srtt: Millis,
    rttvar: Millis,
    samples: u64,
}

impl Rtt {
    pub(super) fn sample(&mut self, r: Millis) {
        if self.samples == 0 {
            self.srtt = r;
            self.rttvar = r / 2;
        } else {
            self.rttvar = (3 * self.rttvar + self.srtt.abs_diff(r)) / 4;
            self.srtt = (7 * self.srtt + r) / 8;
        }
        self.samples += 1;
    }

    /// How long a sent try waits for its first reply before it gets a hedge.
    pub(super) fn hedge_after(&self) -> Millis {
        if self.samples == 0 {
            return DHT_HEDGE_INITIAL_MS;
        }
        (self.srtt + 4 * self.rttvar).clamp(DHT_HEDGE_MIN_MS, DHT_QUERY_WAIT_MS)
    }
}

/// One try: a circuit and the request sent on it.
pub(super) struct Try {
    pub(super) circ: CircId,
    /// When it was given its circuit: a build that hangs is hedged like an unanswered send.
    pub(super) dispatched: Instant,
    pub(super) sent: bool,
    pub(super) lookup_id: u32,
    pub(super) sent_at: Instant,
    /// FIND_VALUE: the `seq_no`s that came and the `total` announced.
    pub(super) seen: Vec<u8>,
    pub(super) total: u8,
    /// Its last hop sent a record that failed verification.
    pub(super) junk: bool,
    pub(super) first_reply: Option<Instant>,
    /// It got its hedge (or one was tried): it never asks for another.
    pub(super) hedged: bool,
}

impl Try {
    pub(super) fn new(circ: CircId, now: Instant) -> Try {
        Try {
            circ,
            dispatched: now,
            sent: false,
            lookup_id: 0,
            sent_at: Instant::ZERO,
            seen: Vec::new(),
            total: 0,
            junk: false,
            first_reply: None,
            hedged: false,
        }
    }

    /// When it is given up if no reply came (the requester's wait of 12.6).
    pub(super) fn gives_up(&self) -> Option<Instant> {
        (self.sent && self.first_reply.is_none()).then(|| self.sent_at + DHT_QUERY_WAIT_MS)
    }
}

pub(super) struct ClientQuery {
    pub(super) query: DhtQuery,
    pub(super) service: bool,
    pub(super) internal: bool,
    /// The tries out now (at most `DHT_TRIES_OUTSTANDING`).
    pub(super) tries: Vec<Try>,
    /// Tries started, counted against `DHT_QUERY_TRIES`.
    pub(super) started_tries: u8,
    /// After a first FIND_VALUE reply: the rest of the answer is awaited until then.
    pub(super) collect_until: Option<Instant>,
    /// Relays that must not be the last hop of this query's circuits.
    pub(super) avoid: Vec<[u8; 32]>,
    /// Last hops the request went to (every try).
    pub(super) via: Vec<[u8; 32]>,
    pub(super) records: BTreeMap<[u8; 32], (u64, Vec<u8>)>,
    /// When the query started and its first try went out; the first answer: its circuit, when
    /// its try went out and when the answer came (the stats' split of the time).
    pub(super) started: Instant,
    pub(super) first_sent: Option<Instant>,
    pub(super) answer: Option<(CircId, Instant, Instant)>,
    pub(super) _charge: Charge,
}

impl ClientQuery {
    pub(super) fn new(
        query: DhtQuery,
        service: bool,
        internal: bool,
        avoid: Vec<[u8; 32]>,
        now: Instant,
        charge: Charge,
    ) -> ClientQuery {
        ClientQuery {
            query,
            service,
            internal,
            tries: Vec::new(),
            started_tries: 0,
            collect_until: None,
            avoid,
            via: Vec::new(),
            records: BTreeMap::new(),
            started: now,
            first_sent: None,
            answer: None,
            _charge: charge,
        }
    }

    /// When a try of it is due for a hedge (`hedge_after` after its send, or after it was
    /// given its circuit while that is still building), if one may still start: fewer tries
    /// out than allowed, tries left, no answer being collected.
    pub(super) fn hedge_at(&self, hedge_after: Millis, max_tries: u8) -> Option<Instant> {
        if self.tries.len() >= DHT_TRIES_OUTSTANDING
            || self.started_tries >= max_tries
            || self.collect_until.is_some()
        {
            return None;
        }
        self.tries
            .iter()
            .filter(|t| t.first_reply.is_none() && !t.hedged)
            .map(|t| if t.sent { t.sent_at } else { t.dispatched } + hedge_after)
            .min()
    }

    /// When its timers next have work.
    pub(super) fn due(&self, hedge_after: Millis, max_tries: u8) -> Option<Instant> {
        self.tries
            .iter()
            .filter_map(Try::gives_up)
            .chain(self.collect_until)
            .chain(self.hedge_at(hedge_after, max_tries))
            .min()
    }

    pub(super) fn try_on(&mut self, circ: CircId) -> Option<&mut Try> {
        self.tries.iter_mut().find(|t| t.circ == circ)
    }
}

/// Index of a query's op in the client's round-trip estimators.
pub(super) fn op_index(q: &DhtQuery) -> usize {
    match q {
        DhtQuery::FindValue { .. } => 0,
        DhtQuery::Publish { .. } => 1,
        DhtQuery::Sample => 2,
    }
}

pub(super) fn request_of(q: &DhtQuery, lookup_id: u32) -> LookupRequest {
    let (op, kind, key, record) = match q {
        DhtQuery::FindValue { kind, key } => (LookupOp::FindValue, Some(*kind), *key, Vec::new()),
        DhtQuery::Publish { kind, record } => {
            (LookupOp::Publish, Some(*kind), [0; 32], record.clone())
        }
        DhtQuery::Sample => (LookupOp::Sample, None, [0; 32], Vec::new()),
    };
    LookupRequest {
        op,
        kind,
        lookup_id,
        key,
        record,
    }
}

/// The name of a query's kind in [`super::ClientStats::times`].
pub(super) fn kind_name(q: &DhtQuery) -> &'static str {
    match q {
        DhtQuery::FindValue { kind, .. } => match kind {
            RecordKind::Relay => "find_relay",
            RecordKind::Descriptor => "find_descriptor",
            RecordKind::NameClaim => "find_name",
        },
        DhtQuery::Publish { .. } => "publish",
        DhtQuery::Sample => "sample",
    }
}

pub(super) fn op_of(q: &DhtQuery) -> LookupOp {
    match q {
        DhtQuery::FindValue { .. } => LookupOp::FindValue,
        DhtQuery::Publish { .. } => LookupOp::Publish,
        DhtQuery::Sample => LookupOp::Sample,
    }
}

pub(super) fn records_outcome(q: &ClientQuery) -> DhtOutcome {
    if q.records.is_empty() {
        return DhtOutcome::NotFound;
    }
    let mut v: Vec<Vec<u8>> = q.records.values().map(|(_, b)| b.clone()).collect();
    v.sort();
    DhtOutcome::Records(v)
}
