//! The DHT client's timers: tries given up or due for a hedge, multi-record answers that
//! stopped coming, the pool of unused circuits and relay sampling.

use super::*;

impl DhtClient {
    // ---- timers --------------------------------------------------------------------------
    //
    // The timer work comes in steps so that the node can hand each finished query to the
    // layer that asked before the next step runs (that layer may start another query at once).

    /// When the client's timers next have something to do, exactly: a try given up or due
    /// for a hedge, the end of a multi-record answer's collection, a pool circuit's
    /// retirement, the next pool build try while the pool is short of `wanted`, the next DHT
    /// sample. What waits for the next run whenever it is (an outcome deferred while its token
    /// was handed out, a taken circuit whose query is gone) is due at once: [`Instant::ZERO`],
    /// which the node reads as its coarse tick.
    pub fn deadline(&self, wanted: (usize, usize)) -> Option<Instant> {
        if !self.deferred.is_empty() {
            return Some(Instant::ZERO);
        }
        let queries = self
            .queries
            .values()
            .filter_map(|q| q.due(self.hedge_after(&q.query), DHT_QUERY_TRIES));
        let circs = self.circs.iter().map(|(id, c)| {
            if !c.taken {
                c.created + DHT_POOL_MAX_AGE_MS
            } else if self.carries_a_try(*id) {
                Instant::MAX
            } else {
                Instant::ZERO
            }
        });
        let short = [(false, wanted.0), (true, wanted.1)]
            .into_iter()
            .any(|(service, want)| {
                self.circs
                    .values()
                    .filter(|c| c.service == service && !c.taken)
                    .count()
                    < want
            });
        let pool = short.then_some(self.next_pool_try);
        queries
            .chain(circs)
            .chain(pool)
            .chain(Some(self.next_sample))
            .filter(|t| *t != Instant::MAX)
            .min()
    }

    fn carries_a_try(&self, id: CircId) -> bool {
        self.queries
            .values()
            .any(|q| q.tries.iter().any(|t| t.circ == id))
    }

    /// Queries with a try whose reply did not come (it is given up, or due for a hedge), or
    /// whose multi-record answer's rest did not come, in token order: each goes to
    /// [`DhtClient::on_overdue`].
    pub fn overdue(&self, now: Instant) -> Vec<u64> {
        let mut due: Vec<u64> = self
            .queries
            .iter()
            .filter(|(_, q)| {
                q.due(self.hedge_after(&q.query), DHT_QUERY_TRIES)
                    .is_some_and(|d| d <= now)
            })
            .map(|(t, _)| *t)
            .collect();
        due.sort_unstable();
        due
    }

    /// Ends an overdue query with what it collected; else gives up its tries that waited
    /// `DHT_QUERY_WAIT_MS` for nothing, and starts a hedge or a new try where due.
    pub fn on_overdue<C: CircuitContext>(&mut self, ctx: &mut C, now: Instant, token: u64) {
        let Some(q) = self.queries.get(&token) else {
            return;
        };
        let mut give_up: Vec<CircId> = q
            .tries
            .iter()
            .filter(|t| t.gives_up().is_some_and(|d| d <= now))
            .map(|t| t.circ)
            .collect();
        if q.collect_until.is_some_and(|c| c <= now) {
            if !q.records.is_empty() {
                let o = records_outcome(q);
                self.finish(ctx, now, token, o);
                return;
            }
            // Only junk came, and not all of it: ask through other last hops.
            give_up.extend(
                q.tries
                    .iter()
                    .filter(|t| t.first_reply.is_some())
                    .map(|t| t.circ),
            );
            if let Some(q) = self.queries.get_mut(&token) {
                q.collect_until = None;
            }
        }
        for circ in give_up {
            self.retry(ctx, now, token, circ);
        }
        self.top_up(ctx, now, token);
    }

    /// Closes taken circuits whose query is gone and pool circuits grown old unused, keeps the
    /// pools of unused circuits (`wanted`: client lookups, service publications) built, and
    /// looks for relays through the DHT while the view is small (9.1).
    pub fn on_timer<C: CircuitContext>(
        &mut self,
        ctx: &mut C,
        now: Instant,
        wanted: (usize, usize),
    ) {
        let mut idle: Vec<CircId> = self
            .circs
            .iter()
            .filter(|(id, c)| {
                if c.taken {
                    !self.carries_a_try(**id)
                } else {
                    now.saturating_since(c.created) >= DHT_POOL_MAX_AGE_MS
                }
            })
            .map(|(id, _)| *id)
            .collect();
        idle.sort_unstable();
        for id in idle {
            self.retire(ctx, now, Some(id));
        }
        self.fill_pool(ctx, now, wanted);
        if self.next_sample == Instant::ZERO {
            self.next_sample = now + 20_000;
        }
        if now >= self.next_sample {
            self.next_sample = now + DHT_SAMPLE_MS;
            let running = self.queries.values().any(|q| q.internal);
            if ctx.view_is_small() && !running {
                self.start_query(ctx, now, DhtQuery::Sample, false, true, Vec::new());
            }
        }
    }

    fn fill_pool<C: CircuitContext>(&mut self, ctx: &mut C, now: Instant, wanted: (usize, usize)) {
        if now < self.next_pool_try {
            return;
        }
        let (clients, services) = wanted;
        for (service, want) in [(false, clients), (true, services)] {
            let have = self
                .circs
                .values()
                .filter(|c| c.service == service && !c.taken)
                .count();
            for _ in have..want {
                if let Err(e) = self.build(ctx, now, service, &[]) {
                    tracing::debug!("DHT circuit pool: {e}");
                    self.next_pool_try = now + DHT_POOL_RETRY_MS;
                    return;
                }
            }
        }
    }
}
