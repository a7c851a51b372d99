//! What the scenario reads to trace DHT requests in NAT-heavy networks (issue #20).

use serde::Serialize;

use std::collections::BTreeMap;

use crate::sim::Sim;

/// Where the relays' DHT requests went, summed over all nodes for the whole run: the trace of
/// issue #20's NAT-heavy lookups (docs/decisions.md, "NAT-heavy networks").
#[derive(Debug, Clone, Default, Serialize)]
pub struct DhtPaths {
    /// Links dialled for DHT contacts; of them, to peers whose record was not in the view.
    pub dials: u64,
    /// See `dials`.
    pub dials_unknown: u64,
    /// Of `dials_unknown`, those introduced by the relay that named the contact.
    pub dials_via: u64,
    /// Requests that waited for such a dial; sent once the link came up; dropped unsent (the
    /// link attempt ended, or `DHT_LINK_WAIT_MS` passed).
    pub waited: u64,
    /// See `waited`.
    pub waited_sent: u64,
    /// See `waited`.
    pub waited_expired: u64,
    /// Lookups run as a last hop for a client: contacts that answered, that timed out, and
    /// FIND_VALUE lookups that found a record.
    pub role_answered: u64,
    /// See `role_answered`.
    pub role_timed_out: u64,
    /// See `role_answered`.
    pub role_found: u64,
    /// Those lookups (live nodes): how many, their mean time, how many the overall timeout
    /// (`DHT_LOOKUP_TIMEOUT_S`) ended, and the mean time to the first record of those that
    /// found one (virtual ms).
    pub role_lookups: u64,
    /// See `role_lookups`.
    pub role_lookup_ms_mean: u64,
    /// See `role_lookups`.
    pub role_lookup_timeouts: u64,
    /// See `role_lookups`.
    pub role_first_record_ms_mean: u64,
}

pub(super) fn dht_paths(sim: &Sim) -> DhtPaths {
    let mut d = DhtPaths::default();
    for n in &sim.nodes {
        let (h, l) = (n.node.dht_host_stats(), n.node.link.stats());
        d.dials += l.dht_dials;
        d.dials_unknown += l.dht_dials_unknown;
        d.dials_via += l.dht_dials_via;
        d.waited += h.waited;
        d.waited_sent += h.waited_sent;
        d.waited_expired += h.waited_expired;
        d.role_answered += h.role_answered;
        d.role_timed_out += h.role_timed_out;
        d.role_found += h.role_found;
        d.role_lookups += h.role_lookups;
        d.role_lookup_ms_mean += h.role_lookup_ms;
        d.role_lookup_timeouts += h.role_lookup_timeouts;
        d.role_first_record_ms_mean += h.role_first_record_ms;
    }
    // Summed above, divided here.
    d.role_lookup_ms_mean = d
        .role_lookup_ms_mean
        .checked_div(d.role_lookups)
        .unwrap_or(0);
    d.role_first_record_ms_mean = d
        .role_first_record_ms_mean
        .checked_div(d.role_found)
        .unwrap_or(0);
    d
}

/// Mean entries per running node of every table the layers report (`Node::table_sizes`;
/// `budget` is bytes charged to the memory budget): the trace of the heap's growth.
pub(super) fn tables(sim: &Sim) -> BTreeMap<String, f64> {
    let mut m: BTreeMap<String, f64> = BTreeMap::new();
    let mut alive = 0usize;
    for n in sim.nodes.iter().filter(|n| n.alive) {
        alive += 1;
        for (k, v) in n.node.table_sizes() {
            *m.entry(k.to_string()).or_default() += v as f64;
        }
    }
    // Refusals so far (network-wide sums, not means): what a full table or a limit turned away.
    let mut refusals = [0u64; 4];
    for n in sim.nodes.iter().filter(|n| n.alive) {
        let c = n.node.circ.stats();
        refusals[0] += c.creates_refused;
        refusals[1] += c.evicted_for_memory;
        refusals[2] += c.dropped;
        refusals[3] += n.node.link.budget().refused() as u64;
    }
    for (k, v) in [
        "sum.creates_refused",
        "sum.evicted_for_memory",
        "sum.cells_dropped",
        "sum.budget_refused",
    ]
    .iter()
    .zip(refusals)
    {
        m.insert(k.to_string(), v as f64 * alive.max(1) as f64);
    }
    for (k, v) in sim.table_sizes() {
        *m.entry(k.to_string()).or_default() += v as f64;
    }
    for v in m.values_mut() {
        *v = (*v / alive.max(1) as f64 * 10.0).round() / 10.0;
    }
    m
}
