//! The figures of a run (the JSON line of `examples/simulate.rs`): computed from the scenario's
//! members and the nodes' own counters at the end.

use super::*;

/// Anonymity figures for one adversarial share.
#[derive(Debug, Clone, Serialize)]
pub struct AdversaryFigures {
    /// Share of the relays it runs.
    pub share: f64,
    /// Relays it runs.
    pub relays: usize,
    /// Share of the client–service pairs where both sides' guard sets hold one of its relays
    /// (it sees both ends of their flows).
    pub both_ends_share: f64,
    /// Share of the clients whose guards held one of its relays at some minute.
    pub clients_with_adversarial_guard: f64,
    /// Of those, the mean virtual minutes from joining until it was first seen.
    pub minutes_to_adversarial_guard: f64,
    /// Mean relays of its that learned one service's blinded key this epoch (as the DHT last hop
    /// of a lookup or publication, or as a replica holding the descriptor).
    pub its_relays_learning_blinded_key: f64,
}

/// The figures of one run: what the JSON line of `examples/simulate.rs` holds.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    /// Nodes at the start, virtual minutes, churn per hour, seed.
    pub nodes: usize,
    /// See `nodes`.
    pub minutes: u64,
    /// See `nodes`.
    pub churn_per_hour: f64,
    /// See `nodes`.
    pub seed: u64,
    /// Relays, clients, services and NATed hosts at the start.
    pub relays: usize,
    /// See `relays`.
    pub clients: usize,
    /// See `relays`.
    pub services: usize,
    /// See `relays`.
    pub nated: usize,
    /// Nodes that left and joined.
    pub left: usize,
    /// See `left`.
    pub joined: usize,
    /// Descriptor lookups started after the warm-up and finished (or timed out).
    pub lookups: u64,
    /// Share of them that returned the service's valid descriptor.
    pub lookup_success: f64,
    /// Lookup latency in virtual milliseconds (median, 99th percentile) and in round trips of
    /// the mean underlay round trip.
    pub lookup_ms_p50: u64,
    /// See `lookup_ms_p50`.
    pub lookup_ms_p99: u64,
    /// See `lookup_ms_p50`.
    pub lookup_rtts_p50: f64,
    /// Share of reachability probes (a random client's e2e PING to a random running service,
    /// through a session it opens, `scale/reach.rs`) answered within two virtual minutes: the
    /// share of services a client reaches at a moment.
    pub reachable_share: f64,
    /// Probes finished, their time to the PONG (median, 99th percentile, virtual ms; first
    /// contact: lookup, rendezvous and introduction) and why the others failed.
    pub probes: u64,
    /// See `probes`.
    pub probe_ms_p50: u64,
    /// See `probes`.
    pub probe_ms_p99: u64,
    /// See `probes`.
    pub probe_failures: BTreeMap<String, u64>,
    /// For each probe that got no PONG: where its PING went, as client and service saw it.
    pub probe_traces: Vec<String>,
    /// Share of lookups whose descriptor names at least one intro point that is running (a
    /// cheaper proxy for reachability, kept for comparison with older runs).
    pub intro_up_share: f64,
    /// Circuits built and build failures, network-wide.
    pub circuits_built: u64,
    /// See `circuits_built`.
    pub circuit_build_failures: u64,
    /// Share of builds that succeeded.
    pub circuit_build_success: f64,
    /// Build time of the circuits whose build the node reported (pool circuits), virtual ms.
    pub circuit_build_ms_p50: u64,
    /// See `circuit_build_ms_p50`.
    pub circuit_build_ms_p99: u64,
    /// Relays that died, and the circuits each carried for others at that moment (mean).
    pub relay_deaths: usize,
    /// See `relay_deaths`.
    pub circuits_per_dead_relay: f64,
    /// Circuit closures the nodes reported, per relay death (teardowns the death caused, plus
    /// the background rate of ordinary closures).
    pub closures_per_relay_death: f64,
    /// Anonymity figures, one per adversarial share.
    pub adversary: Vec<AdversaryFigures>,
    /// Mean relays (any) that learned a service's blinded key over the run, and the run's
    /// virtual minutes after the warm-up it covers.
    pub relays_learning_blinded_key: f64,
    /// Heap bytes per running node at the end (churned-out nodes are freed), when the caller
    /// measures.
    pub heap_bytes_per_node: u64,
    /// DHT requests a relay sent per virtual minute (routing-table upkeep, replication,
    /// lookups it runs as a last hop), after the warm-up.
    pub dht_messages_per_relay_min: f64,
    /// PEX requests answered per node per virtual minute, after the warm-up.
    pub pex_per_node_min: f64,
    /// Underlay datagrams per node per virtual minute, after the warm-up.
    pub datagrams_per_node_min: f64,
    /// Links between two NATed nodes at the end (each link once), and the shares of them that
    /// are direct and that a punch made direct.
    pub natted_links: usize,
    /// See `natted_links`.
    pub natted_links_direct: f64,
    /// See `natted_links`.
    pub natted_links_punched: f64,
    /// Where DHT requests went, summed over all nodes (docs/simulation.md).
    pub dht_paths: DhtPaths,
    /// Failed lookups by cause: `not_found`, `no_answer` (none in two minutes), `unopened` (no
    /// record opened as the descriptor), or the client's reason for `Failed`.
    pub lookup_failures: BTreeMap<String, u64>,
    /// Session setup failures network-wide by step and reason (`SessionStats::setup_failures`:
    /// client retries, rounds and failures with the introduction's stage; service rendezvous
    /// circuits): where unreached probes failed.
    pub setup_failures: BTreeMap<String, u64>,
    /// E2e PINGs sent again after a later probe's PONG showed them lost (`pings_resent` of
    /// the running nodes at the end).
    pub pings_resent: u64,
    /// Mean relays holding each started service's descriptor of the epoch at the end.
    pub descriptor_replicas: f64,
    /// Mean entries per running node of each table (`Node::table_sizes`; `budget` in bytes) at
    /// the end of the warm-up and at the end: which table grows.
    pub tables_at_warm: BTreeMap<String, f64>,
    /// See `tables_at_warm`.
    pub tables_at_end: BTreeMap<String, f64>,
    /// The nodes' own DHT queries that got an answer, by kind (`find_descriptor`,
    /// `find_relay`, `publish`, `sample`, ...): time and where it went, over the whole run.
    pub dht_query_times: BTreeMap<String, DhtQueryFigures>,
    /// Mean time of the session layer's relay-record lookups (a client looking up an intro
    /// point's record, a service a rendezvous point's), virtual ms, over the whole run.
    pub relay_lookup_ms_mean: u64,
    /// The nodes' own DHT queries' hedges (a second try while the first is out) and re-sends
    /// (a try given up), over the whole run.
    pub dht_hedges: u64,
    /// See `dht_hedges`.
    pub dht_retries: u64,
    /// Wall-clock seconds of the run.
    pub wall_s: f64,
}

impl Scale {
    pub(super) fn report(&mut self, heap: u64, wall_s: f64) -> ScaleReport {
        let now = self.sim.now;
        let e = epoch(now.as_unix_ms() / 1000);
        // Who learned each service's blinded key: last hops that saw it, replicas holding it.
        let keys: BTreeMap<[u8; 32], usize> = self
            .services
            .iter()
            .enumerate()
            .map(|(s, x)| (index(&x.1, e), s))
            .collect();
        let mut learners: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); self.services.len()];
        let mut replicas = 0usize;
        for (i, n) in self.sim.nodes.iter().enumerate() {
            for seen in n.node.dht_observed() {
                if let Some(&s) = keys.get(&seen.key) {
                    learners[s].insert(i);
                }
            }
            if let Some(r) = n.node.dht_relay() {
                for (k, &s) in &keys {
                    if r.store.get(k, RecordKind::Descriptor, 0, now).1.is_some() {
                        replicas += usize::from(n.alive && self.services[s].3.is_some());
                        learners[s].insert(i);
                    }
                }
            }
        }
        for &(i, k) in &self.dead.learned {
            if let Some(&s) = keys.get(&k) {
                learners[s].insert(i);
            }
        }
        let started: Vec<usize> = (0..self.services.len())
            .filter(|&s| self.services[s].3.is_some())
            .collect();
        let mean_learners = |filter: &dyn Fn(usize) -> bool| -> f64 {
            let total: usize = started
                .iter()
                .map(|&s| learners[s].iter().filter(|&&i| filter(i)).count())
                .sum();
            ratio(total as f64, started.len() as f64)
        };
        let hosts: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.sim.nodes[i].alive && self.members[i].role == Role::Client)
            .collect();
        let service_hosts: Vec<usize> = self.services.iter().filter_map(|s| s.2).collect();
        let ever_clients: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].role == Role::Client)
            .collect();
        let mut adversary = Vec::new();
        for (k, share) in self.cfg.adversary.iter().enumerate() {
            let (bad, first) = &self.adversaries[k];
            let bad_clients: Vec<usize> = hosts
                .iter()
                .copied()
                .filter(|&c| self.bad_guard(c, bad))
                .collect();
            let bad_services = service_hosts
                .iter()
                .filter(|&&s| self.bad_guard(s, bad))
                .count();
            let pairs = (hosts.len() * service_hosts.len()) as f64;
            let both = (bad_clients.len() * bad_services) as f64;
            let seen: Vec<Millis> = ever_clients
                .iter()
                .filter_map(|c| {
                    first
                        .get(c)
                        .map(|t| t.saturating_since(self.members[*c].joined))
                })
                .collect();
            adversary.push(AdversaryFigures {
                share: *share,
                relays: bad.len(),
                both_ends_share: ratio(both, pairs),
                clients_with_adversarial_guard: ratio(seen.len() as f64, ever_clients.len() as f64),
                minutes_to_adversarial_guard: ratio(
                    seen.iter().sum::<u64>() as f64 / 60_000.0,
                    seen.len() as f64,
                ),
                its_relays_learning_blinded_key: mean_learners(&|i| {
                    bad.contains(&self.sim.nodes[i].identity)
                }),
            });
        }
        let (built, failed) =
            self.sim
                .nodes
                .iter()
                .fold((self.dead.built, self.dead.failed), |a, n| {
                    let s = n.node.circ.stats();
                    (a.0 + s.built, a.1 + s.build_failures)
                });
        let mut end = relay_stats(&self.sim);
        end.0 += self.dead.requests_out;
        end.1 += self.dead.pex_answered;
        let w = self.at_warm.unwrap_or(end);
        let measured_min = (now.saturating_since(self.warm) as f64 / 60_000.0).max(1.0 / 60.0);
        let alive = self.sim.nodes.iter().filter(|n| n.alive).count() as f64;
        let alive_relays = (0..self.members.len())
            .filter(|&i| self.sim.nodes[i].alive && self.members[i].role == Role::Relay)
            .count() as f64;
        let rtt = 2.0 * (self.cfg.latency_ms as f64 + self.cfg.jitter_ms as f64 / 2.0);
        let mut lat = std::mem::take(&mut self.lookup_ms);
        let p50 = percentile(&mut lat, 0.5);
        let p99 = percentile(&mut lat, 0.99);
        let mut bms = std::mem::take(&mut self.build_ms);
        let mut pms = std::mem::take(&mut self.reach.ms);
        let (natted_links, direct, punched) = self.natted_links(now);
        let (dht_query_times, relay_lookup_ms_mean, (dht_hedges, dht_retries)) = self
            .dead
            .times
            .figures(self.sim.nodes.iter().map(|n| &n.node));
        let relays = self
            .members
            .iter()
            .take(self.cfg.nodes)
            .filter(|m| m.role == Role::Relay)
            .count();
        ScaleReport {
            nodes: self.cfg.nodes,
            minutes: self.cfg.minutes,
            churn_per_hour: self.cfg.churn_per_hour,
            seed: self.cfg.seed,
            relays,
            clients: self.cfg.nodes.saturating_sub(relays + self.services.len()),
            services: self.services.len(),
            nated: self
                .members
                .iter()
                .take(self.cfg.nodes)
                .filter(|m| m.nat.is_some())
                .count(),
            left: self.left,
            joined: self.joined,
            lookups: self.lookups_done,
            lookup_success: ratio(self.lookups_ok as f64, self.lookups_done as f64),
            lookup_ms_p50: p50,
            lookup_ms_p99: p99,
            lookup_rtts_p50: ratio(p50 as f64, rtt),
            reachable_share: ratio(self.reach.ok as f64, self.reach.done as f64),
            probes: self.reach.done,
            probe_ms_p50: percentile(&mut pms, 0.5),
            probe_ms_p99: percentile(&mut pms, 0.99),
            probe_failures: std::mem::take(&mut self.reach.failures),
            probe_traces: std::mem::take(&mut self.reach.traces),
            intro_up_share: ratio(self.intro_up as f64, self.lookups_done as f64),
            circuits_built: built,
            circuit_build_failures: failed,
            circuit_build_success: ratio(built as f64, (built + failed) as f64),
            circuit_build_ms_p50: percentile(&mut bms, 0.5),
            circuit_build_ms_p99: percentile(&mut bms, 0.99),
            relay_deaths: self.relay_deaths,
            circuits_per_dead_relay: ratio(self.relayed_at_death as f64, self.relay_deaths as f64),
            closures_per_relay_death: ratio(self.closures as f64, self.relay_deaths as f64),
            adversary,
            relays_learning_blinded_key: mean_learners(&|_| true),
            heap_bytes_per_node: heap / (alive as u64).max(1),
            dht_messages_per_relay_min: ratio((end.0 - w.0) as f64, alive_relays * measured_min),
            pex_per_node_min: ratio((end.1 - w.1) as f64, alive * measured_min),
            datagrams_per_node_min: ratio((end.2 - w.2) as f64, alive * measured_min),
            natted_links,
            natted_links_direct: ratio(direct as f64, natted_links as f64),
            natted_links_punched: ratio(punched as f64, natted_links as f64),
            dht_paths: dht_paths(&self.sim),
            lookup_failures: std::mem::take(&mut self.failures),
            setup_failures: {
                let mut m = std::mem::take(&mut self.dead.setup_failures);
                for n in &self.sim.nodes {
                    for (k, c) in &n.node.session_stats().setup_failures {
                        *m.entry(k.clone()).or_default() += c;
                    }
                }
                m
            },
            pings_resent: self
                .sim
                .nodes
                .iter()
                .filter(|n| n.alive)
                .map(|n| n.node.session_stats().pings_resent)
                .sum(),
            descriptor_replicas: ratio(replicas as f64, started.len() as f64),
            tables_at_warm: std::mem::take(&mut self.tables_at_warm),
            tables_at_end: super::tables(&self.sim),
            dht_query_times,
            relay_lookup_ms_mean,
            dht_hedges,
            dht_retries,
            wall_s,
        }
    }

    /// Links between two running NATed nodes, seen from the side with the smaller index: (all,
    /// direct, punched).
    fn natted_links(&self, now: Instant) -> (usize, usize, usize) {
        let natted: BTreeMap<String, usize> = (0..self.members.len())
            .filter(|&i| self.members[i].nat.is_some() && self.sim.nodes[i].alive)
            .map(|i| (crate::crypto::keys::hex(&self.sim.nodes[i].link_key), i))
            .collect();
        let mut n = (0, 0, 0);
        for &i in natted.values() {
            for p in self.sim.nodes[i].node.link.peers(now) {
                if natted.get(&p.link_key).is_some_and(|&j| j > i) {
                    n.0 += 1;
                    n.1 += usize::from(p.direct);
                    n.2 += usize::from(p.punched);
                }
            }
        }
        n
    }
}
