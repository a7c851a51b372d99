//! `reachable_share`: the share of services a client reaches at a moment, measured by reaching
//! them. At a steady rate after the warm-up a random client sends an e2e PING
//! (`Node::e2e_ping`) to a random running service: the real session client looks the descriptor
//! up, builds its rendezvous circuit, introduces itself through an intro point and waits for the
//! service to join; the service was reachable at that moment if the PONG comes back within two
//! virtual minutes.

use super::*;

/// A PING on its way: sent when.
pub(super) struct Probe {
    started: Instant,
    dst: [u8; 16],
}

/// How long a probe may take before the service counts as unreachable (a session's first
/// contact is a lookup, a rendezvous and an introduction: tens of seconds at worst).
const PROBE_TIMEOUT_MS: u64 = 120_000;

/// The probes' state and figures.
#[derive(Default)]
pub(super) struct Reach {
    due: f64,
    pending: BTreeMap<(usize, u64), Probe>,
    /// Probes finished (answered or timed out).
    pub done: u64,
    /// Probes answered.
    pub ok: u64,
    /// Virtual ms from the PING to its PONG (first contact included).
    pub ms: Vec<u64>,
    /// Why probes failed.
    pub failures: BTreeMap<String, u64>,
    /// For each `no_pong` probe: where its PING went (client and service traces).
    pub traces: Vec<String>,
}

impl Scale {
    /// Starts the probes due this virtual second.
    pub(super) fn probes(&mut self) {
        self.reach.due += self.cfg.probes_per_min / 60.0;
        let now = self.sim.now;
        let ready: Vec<usize> = (0..self.services.len())
            .filter(|&s| self.services[s].3.is_some_and(|t| now >= t + 60_000))
            .collect();
        while self.reach.due >= 1.0 {
            self.reach.due -= 1.0;
            let Some(&s) = ready.choose(&mut self.rng) else {
                continue;
            };
            let Some(c) = self.random_client(now) else {
                continue;
            };
            let addr = self.services[s].1;
            match self.sim.nodes[c].node.e2e_ping(now, addr) {
                Ok(id) => {
                    self.sim.flush(c);
                    self.reach.pending.insert(
                        (c, id),
                        Probe {
                            started: now,
                            dst: addr,
                        },
                    );
                }
                Err(e) => {
                    self.reach.done += 1;
                    *self.reach.failures.entry(format!("{e:?}")).or_default() += 1;
                }
            }
        }
    }

    /// A PONG from node `i`.
    pub(super) fn on_pong(&mut self, i: usize, id: u64) {
        if let Some(p) = self.reach.pending.remove(&(i, id)) {
            self.reach.done += 1;
            self.reach.ok += 1;
            self.reach.ms.push(self.sim.now - p.started);
        }
    }

    /// Node `i` gave up on `dst` (its session setup failed): its probes to `dst` failed, for
    /// the reason the node gives.
    pub(super) fn on_unreachable(&mut self, i: usize, dst: [u8; 16], why: &str) {
        let ids: Vec<(usize, u64)> = self
            .reach
            .pending
            .range((i, 0)..=(i, u64::MAX))
            .filter(|(_, p)| p.dst == dst)
            .map(|(k, _)| *k)
            .collect();
        for k in ids {
            self.reach.pending.remove(&k);
            self.reach.done += 1;
            *self
                .reach
                .failures
                .entry(format!("unreachable: {why}"))
                .or_default() += 1;
        }
    }

    /// Probes without a PONG in time failed; those whose client left say nothing about the
    /// service and are dropped.
    pub(super) fn expire_probes(&mut self) {
        let now = self.sim.now;
        let late: Vec<(usize, u64)> = self
            .reach
            .pending
            .iter()
            .filter(|((c, _), p)| now > p.started + PROBE_TIMEOUT_MS || !self.sim.nodes[*c].alive)
            .map(|(k, _)| *k)
            .collect();
        for k in late {
            if let Some(p) = self.reach.pending.remove(&k) {
                if now > p.started + PROBE_TIMEOUT_MS {
                    self.reach.done += 1;
                    // Where the client's session stands: still introducing, or open and the
                    // PING (or its PONG) lost on a session circuit.
                    let stage = self.sim.nodes[k.0]
                        .node
                        .sess
                        .client_intro_stage(now, &p.dst);
                    *self
                        .reach
                        .failures
                        .entry(format!("no_pong [{stage}]"))
                        .or_default() += 1;
                    let t = self.probe_trace(k, &p);
                    self.reach.traces.push(t);
                }
            }
        }
    }
}

impl Scale {
    /// What the client and the service saw of probe `k`'s PING, times from the probe's start.
    fn probe_trace(&mut self, k: (usize, u64), p: &Probe) -> String {
        let now = self.sim.now;
        let rel = |t: Instant| t.as_unix_ms() as i64 - p.started.as_unix_ms() as i64;
        let (c, id) = k;
        let client = &mut self.sim.nodes[c].node;
        let peer = client.sess.client_address_for(&p.dst);
        let summary = client.sess.client_session_summary(now, &p.dst);
        let trail = client
            .session_test_hooks()
            .trace_pings
            .as_ref()
            .and_then(|t| t.client.get(&id))
            .cloned()
            .unwrap_or_default();
        let mut out = format!("probe client {c} ping {id}: {summary}; client:");
        for (t, e) in &trail.events {
            out.push_str(&format!(" [{} ms] {e};", rel(*t)));
        }
        let path: Vec<String> = trail
            .path
            .iter()
            .map(|r| match self.by_identity.get(r) {
                Some(&i) => format!("{i}{}", if self.sim.nodes[i].alive { "" } else { " DEAD" }),
                None => "?".into(),
            })
            .collect();
        out.push_str(&format!(" path [{}];", path.join(", ")));
        let host = self
            .services
            .iter()
            .find(|s| s.1 == p.dst)
            .and_then(|s| s.2);
        match (host, peer) {
            (Some(h), Some(peer)) => {
                let alive = self.sim.nodes[h].alive;
                out.push_str(&format!(" service {h} (alive {alive}):"));
                let sv = self.sim.nodes[h]
                    .node
                    .session_test_hooks()
                    .trace_pings
                    .as_ref()
                    .and_then(|t| t.service.get(&peer))
                    .cloned()
                    .unwrap_or_default();
                for (t, e) in sv.iter().filter(|(t, _)| rel(*t) > -60_000) {
                    out.push_str(&format!(" [{} ms] {e};", rel(*t)));
                }
            }
            _ => out.push_str(" service: unknown"),
        }
        out
    }
}
