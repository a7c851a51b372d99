//! Where a DHT query's time goes (per kind of query, for the stats), and the smoothed round
//! trip of answered queries that decides when an unanswered try gets a hedge.

use crate::time::Millis;

/// Upper bounds (ms) of the histogram buckets of [`QueryTimes`]; the last is open.
pub const TIME_BUCKETS_MS: [Millis; 16] = [
    500, 1_000, 1_500, 2_000, 3_000, 4_000, 5_000, 6_000, 8_000, 10_000, 12_000, 15_000, 20_000,
    25_000, 30_000, 60_000,
];

/// The time of the queries of one kind that got an answer (not `Failed`), split where it
/// went: `wait` (start until the first try was sent: a ready circuit), `lost` (first send
/// until the send of the try that answered: tries that never answered, circuits that closed),
/// `reply` (that try's send until its first reply: the circuit's round trip and the last hop's
/// lookup) and `collect` (the rest of a multi-record answer). They add up to `total`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QueryTimes {
    /// Answered queries.
    pub answered: u64,
    /// Their summed time, ms.
    pub total_ms: u64,
    /// See the type.
    pub wait_ms: u64,
    /// See the type.
    pub lost_ms: u64,
    /// See the type.
    pub reply_ms: u64,
    /// See the type.
    pub collect_ms: u64,
    /// Answered queries by total time, bucket `i` up to `TIME_BUCKETS_MS[i]` (the last: more).
    pub hist: [u64; TIME_BUCKETS_MS.len() + 1],
}

impl QueryTimes {
    /// Counts one answered query.
    pub fn add(&mut self, wait: Millis, lost: Millis, reply: Millis, collect: Millis) {
        let total = wait + lost + reply + collect;
        self.answered += 1;
        self.total_ms += total;
        self.wait_ms += wait;
        self.lost_ms += lost;
        self.reply_ms += reply;
        self.collect_ms += collect;
        let b = TIME_BUCKETS_MS
            .iter()
            .position(|&up| total <= up)
            .unwrap_or(TIME_BUCKETS_MS.len());
        if let Some(n) = self.hist.get_mut(b) {
            *n += 1;
        }
    }

    /// Adds another node's figures.
    pub fn merge(&mut self, o: &QueryTimes) {
        self.answered += o.answered;
        self.total_ms += o.total_ms;
        self.wait_ms += o.wait_ms;
        self.lost_ms += o.lost_ms;
        self.reply_ms += o.reply_ms;
        self.collect_ms += o.collect_ms;
        for (a, b) in self.hist.iter_mut().zip(o.hist.iter()) {
            *a += b;
        }
    }

    /// The bucket bound at quantile `q` (0..=1) of the total times; `Millis::MAX` if it falls in
    /// the open bucket, 0 without data.
    pub fn quantile_ms(&self, q: f64) -> Millis {
        if self.answered == 0 {
            return 0;
        }
        let want = ((self.answered as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.hist.iter().enumerate() {
            seen += n;
            if seen >= want {
                return TIME_BUCKETS_MS.get(i).copied().unwrap_or(Millis::MAX);
            }
        }
        Millis::MAX
    }
}
