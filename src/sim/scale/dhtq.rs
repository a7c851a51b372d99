//! How long the nodes' own DHT queries took (`ClientStats::times`), summed over the run:
//! where a lookup's time goes (issue #25, the DHT-lookup helper's measurements).

use serde::Serialize;
use std::collections::BTreeMap;

use crate::dht::client::QueryTimes;
use crate::node::Node;

/// Answered DHT queries of one kind, network-wide.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DhtQueryFigures {
    /// Queries that got an answer.
    pub answered: u64,
    /// Their mean time, and the upper bounds of the histogram buckets holding the median and
    /// the 99th percentile (`u64::MAX`: over 60 s), virtual ms.
    pub mean_ms: u64,
    /// See `mean_ms`.
    pub p50_ms_le: u64,
    /// See `mean_ms`.
    pub p99_ms_le: u64,
    /// Mean split of the time: waiting for a ready circuit, lost on tries that did not answer,
    /// the answering try's round trip (circuit and last-hop lookup), collecting the rest of a
    /// multi-record answer.
    pub wait_ms: u64,
    /// See `wait_ms`.
    pub lost_ms: u64,
    /// See `wait_ms`.
    pub reply_ms: u64,
    /// See `wait_ms`.
    pub collect_ms: u64,
}

/// What buried nodes contributed: query times by kind, relay-record lookups of the session
/// layer (count, summed ms).
#[derive(Default)]
pub(super) struct DeadTimes {
    times: BTreeMap<&'static str, QueryTimes>,
    relay_lookups: (u64, u64),
    /// Hedges and re-sends of the nodes' own queries.
    tries: (u64, u64),
}

impl DeadTimes {
    pub(super) fn bury(&mut self, n: &Node) {
        for (k, t) in n.dht_query_times() {
            self.times.entry(k).or_default().merge(t);
        }
        let s = n.session_stats();
        self.relay_lookups.0 += s.relay_lookups_done;
        self.relay_lookups.1 += s.relay_lookups_ms;
        let d = n.dht_stats();
        self.tries.0 += d.hedges;
        self.tries.1 += d.retries;
    }

    /// The figures over the buried nodes and `alive`: by kind, the mean time of the session
    /// layer's relay-record lookups, and the hedges and re-sends of all queries.
    pub(super) fn figures<'a>(
        &self,
        alive: impl Iterator<Item = &'a Node>,
    ) -> (BTreeMap<String, DhtQueryFigures>, u64, (u64, u64)) {
        let mut times = self.times.clone();
        let mut relay = self.relay_lookups;
        let mut tries = self.tries;
        for n in alive {
            let d = n.dht_stats();
            tries.0 += d.hedges;
            tries.1 += d.retries;
            for (k, t) in n.dht_query_times() {
                times.entry(k).or_default().merge(t);
            }
            let s = n.session_stats();
            relay.0 += s.relay_lookups_done;
            relay.1 += s.relay_lookups_ms;
        }
        let per = |v: u64, n: u64| v.checked_div(n).unwrap_or(0);
        let figures = times
            .iter()
            .map(|(k, t)| {
                let f = DhtQueryFigures {
                    answered: t.answered,
                    mean_ms: per(t.total_ms, t.answered),
                    p50_ms_le: t.quantile_ms(0.5),
                    p99_ms_le: t.quantile_ms(0.99),
                    wait_ms: per(t.wait_ms, t.answered),
                    lost_ms: per(t.lost_ms, t.answered),
                    reply_ms: per(t.reply_ms, t.answered),
                    collect_ms: per(t.collect_ms, t.answered),
                };
                (k.to_string(), f)
            })
            .collect();
        (figures, per(relay.1, relay.0), tries)
    }
}
