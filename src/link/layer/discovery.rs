//! Finding relays (docs/protocol.md 4.2, 9): bootstrap record queries, peer exchange, dialling
//! towards the target number of links with backoff, and the relays to keep out of the view
//! (suspects, recently dead peers).

use std::net::SocketAddr;

use crate::link::bootstrap::BootstrapInfo;
use crate::link::view::Source;
use crate::time::{Instant, Millis};
use crate::wire::datagram::{self};
use crate::wire::link::MsgType;
use crate::wire::record::{RelayRecord, RELAY_RECORD_LEN};

use super::rpc::Rpc;
use super::{LinkId, LinkLayer, Transmit};

/// How long a relay an extension failed to stays out of the view.
pub const SUSPECT_RELAY_MS: Millis = 120_000;
/// Suspects remembered at most.
pub(super) const MAX_SUSPECTS: usize = 1024;

/// First reconnect delay; doubles per failure.
pub const BACKOFF_MIN_MS: Millis = 1_000;
/// Largest reconnect delay.
pub const BACKOFF_MAX_MS: Millis = 60_000;
/// PEX requests per link at most this often.
pub const PEX_INTERVAL_MS: Millis = 10_000;
/// Below this many records a node asks for more.
pub const VIEW_WANTED: usize = 64;
/// Records per PEX answer.
pub const PEX_MAX: u8 = 3;

/// Record queries answered per second (bootstrap, unauthenticated).
pub const RECORD_QUERY_RATE: u32 = 100;
/// A bootstrap link is closed once the node has enough other links and it carried no cell for
/// this long, so that bootstrap peers do not become hubs that every node stays linked to.
pub const BOOTSTRAP_LINGER_MS: Millis = 60_000;

pub(super) struct Backoff {
    pub(super) until: Instant,
    pub(super) delay: Millis,
}

impl LinkLayer {
    /// Whether the peer with this link key stopped answering PINGs within the last
    /// [`DEAD_PEER_MS`] and has not linked since.
    pub fn recently_dead(&self, peer_key: &[u8; 32], now: Instant) -> bool {
        self.dead_peers.contains(peer_key, now) && !self.by_key.contains_key(peer_key)
    }

    /// A circuit could not be extended to this relay (link failed or timed out): keep it out
    /// of the view, and so out of paths, for `SUSPECT_RELAY_MS`, unless it links to us itself.
    pub fn suspect_relay(&mut self, identity: &[u8; 32], now: Instant) {
        if self.link_to(identity).is_some() {
            // We hold a live link to it: whatever failed, it is not dead.
            return;
        }
        if self.suspects.len() >= MAX_SUSPECTS {
            self.suspects.sweep(now);
            if self.suspects.len() >= MAX_SUSPECTS {
                return;
            }
        }
        self.suspects.insert(*identity, now + SUSPECT_RELAY_MS);
        self.view.remove(identity);
    }

    /// Test hook: drops `identity`'s record from the view (a relay this node never heard of,
    /// as most relays are at scale: the view holds `VIEW_WANTED` records and more only by
    /// chance). Nothing but tests calls it.
    #[doc(hidden)]
    pub fn forget_relay_record(&mut self, identity: &[u8; 32]) {
        self.view.remove(identity);
    }

    /// Whether an extension to this relay failed within `SUSPECT_RELAY_MS` (see
    /// [`LinkLayer::suspect_relay`]).
    pub fn is_suspect(&self, identity: &[u8; 32], now: Instant) -> bool {
        self.suspects.contains(identity, now)
    }

    /// Adds verified relay records learned through the DHT (a SAMPLE answered by the last hop
    /// `via` of one of our circuits) to the view: one more source beside PEX (9.1). Returns how
    /// many were added or refreshed.
    pub fn add_dht_records(
        &mut self,
        records: Vec<RelayRecord>,
        via: [u8; 32],
        now: Instant,
    ) -> usize {
        let mut added = 0;
        for r in records {
            if !r.is_relay() {
                self.stats.bad_records += 1;
                continue;
            }
            if self.is_suspect(r.identity(), now) {
                continue;
            }
            match self.view.insert(r, Source::Dht(via), now) {
                Ok(()) => added += 1,
                Err(why) => tracing::trace!(?why, "DHT record not added to the view"),
            }
        }
        added
    }

    pub(super) fn on_pex_request(&mut self, now: Instant, id: LinkId, rpc_id: u64, p: &[u8]) {
        let max = p.first().copied().unwrap_or(0);
        if !(1..=PEX_MAX).contains(&max) {
            self.malformed(now, id, "PEX max");
            return;
        }
        let (peer_identity, served) = match self.links.get(&id) {
            Some(l) => (l.identity, l.pex_served),
            None => return,
        };
        if !self.cfg.relay
            || (served != Instant::ZERO && now.saturating_since(served) < PEX_INTERVAL_MS)
        {
            // Only relays answer, at most once per interval per link.
            self.stats.dropped += 1;
            return;
        }
        if let Some(l) = self.links.get_mut(&id) {
            l.pex_served = now;
        }
        self.stats.pex_answered += 1;
        let sample: Vec<([u8; RELAY_RECORD_LEN], [u8; 32])> = self
            .view
            .sample(usize::from(max), peer_identity.as_ref(), &mut self.rng)
            .into_iter()
            .filter(|r| r.is_relay())
            .map(|r| (*r.bytes(), *r.identity()))
            .collect();
        let mut payload = Vec::with_capacity(2 + sample.len() * RELAY_RECORD_LEN);
        payload.push(sample.len() as u8);
        payload.push(0);
        for (r, _) in &sample {
            payload.extend_from_slice(r);
        }
        let _ = self.send_frame(now, id, MsgType::PexResponse, rpc_id, &payload);
        // The exits' policies follow their records (4.4 EXIT_POLICY), and ours, which a lost
        // first copy (sent at HELLO) would otherwise never bring again.
        let ids: Vec<[u8; 32]> = sample.iter().map(|(_, k)| *k).collect();
        self.send_exit_policies_of(now, id, &ids);
        self.send_own_exit_policy(now, id);
    }

    pub(super) fn on_pex_response(&mut self, now: Instant, id: LinkId, rpc_id: u64, p: &[u8]) {
        let Some(l) = self.links.get_mut(&id) else {
            return;
        };
        if l.rpcs.remove(&rpc_id).map(|x| x.rpc) != Some(Rpc::Pex) {
            self.stats.dropped += 1;
            return;
        }
        let Some(source) = l.identity else { return };
        let count = usize::from(p.first().copied().unwrap_or(0));
        if count > usize::from(PEX_MAX) || p.len() != 2 + count * RELAY_RECORD_LEN {
            self.malformed(now, id, "PEX response length");
            return;
        }
        for chunk in p.get(2..).unwrap_or(&[]).chunks_exact(RELAY_RECORD_LEN) {
            match RelayRecord::parse(chunk, now.as_unix_ms()) {
                Ok(r) if r.is_relay() && self.is_suspect(r.identity(), now) => {}
                Ok(r) if r.is_relay() => {
                    if let Err(why) = self.view.insert(r, Source::Pex(source), now) {
                        tracing::trace!(?why, "PEX record not added");
                    }
                }
                Ok(_) => self.stats.bad_records += 1,
                Err(e) => {
                    tracing::debug!("PEX record refused: {e}");
                    self.stats.bad_records += 1;
                }
            }
        }
    }

    pub(super) fn on_record_query(&mut self, now: Instant, from: SocketAddr, nonce: u64) {
        // The first node of a network listening on a wildcard address learns its endpoint from
        // the first query (it has no record to answer with before).
        if let Some(local) = self.rx_local {
            self.learn_local(now, local);
        }
        let Some(record) = self.own_record.as_ref().map(|r| *r.bytes()) else {
            self.stats.dropped += 1;
            return;
        };
        if now.saturating_since(self.query_budget.0) >= 1000 {
            self.query_budget = (now, 0);
        }
        if self.query_budget.1 >= RECORD_QUERY_RATE {
            self.stats.dropped += 1;
            return;
        }
        self.query_budget.1 += 1;
        let mut out = self.take_buf();
        datagram::emit_record_response(nonce, &record, &mut out);
        self.stats.datagrams_out += 1;
        self.transmits.push_back(Transmit {
            dst: from,
            src: self.rx_src(),
            data: out,
        });
    }

    pub(super) fn on_record_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        nonce: u64,
        data: &[u8],
    ) {
        if !self.boot.on_response(from, nonce) {
            self.stats.dropped += 1;
            return;
        }
        let Some(bytes) = datagram::record_of_response(data) else {
            return;
        };
        match RelayRecord::parse(bytes, now.as_unix_ms()) {
            Ok(r) => {
                // Trust on first use: whoever answers at the bootstrap address is the bootstrap
                // peer; the view's source caps limit what one peer can decide (threat model).
                let key = r.fields().link_key;
                if let Err(e) = self.connect(now, key, from) {
                    tracing::debug!("bootstrap {from}: {e}");
                }
                let _ = self.view.insert(r, Source::Itself, now);
            }
            Err(e) => {
                tracing::debug!("bootstrap {from} sent a bad record: {e}");
                self.stats.bad_records += 1;
            }
        }
    }

    pub(super) fn bootstrap(&mut self, now: Instant) {
        let have_relay = self.links.values().any(|l| l.state.ready() && l.is_relay);
        let enough = have_relay && self.view.len() >= self.cfg.target_links;
        let links = &self.links;
        let queries = self.boot.due(
            now,
            enough,
            |a| links.values().any(|l| l.endpoint == *a),
            &mut self.rng,
        );
        for q in queries {
            self.note_recent(q.addr.ip(), now);
            let mut out = self.take_buf();
            datagram::emit_record_query(q.nonce, &mut out);
            self.stats.datagrams_out += 1;
            self.transmits.push_back(Transmit {
                dst: q.addr,
                src: None,
                data: out,
            });
        }
        let reason = self.isolation_reason(now);
        self.boot.log_isolation(now, reason.as_deref());
    }

    /// A bootstrap host name the daemon should resolve (off the event loop) and hand back with
    /// [`LinkLayer::on_resolved`].
    pub fn poll_resolve(&mut self) -> Option<String> {
        self.boot.poll_resolve()
    }

    /// The addresses a bootstrap host name resolved to, or why it did not resolve.
    pub fn on_resolved(
        &mut self,
        now: Instant,
        name: &str,
        result: Result<Vec<SocketAddr>, String>,
    ) {
        self.boot.on_resolved(now, name, result);
        self.bootstrap(now);
    }

    /// Each bootstrap peer's state, for `status`.
    pub fn bootstrap_status(&self) -> Vec<BootstrapInfo> {
        let links = &self.links;
        self.boot
            .status(|a| links.values().any(|l| l.endpoint == *a && l.state.ready()))
    }

    /// Why the node has no link, in one line; `None` while a link is up.
    pub fn isolation_reason(&self, now: Instant) -> Option<String> {
        if self.links.values().any(|l| l.state.ready()) {
            return None;
        }
        let listening: Vec<String> = if self.locals.is_empty() {
            self.cfg.advertise.iter().map(|a| a.to_string()).collect()
        } else {
            self.locals.iter().map(|a| a.to_string()).collect()
        };
        Some(self.boot.isolation_reason(now, &listening.join(", ")))
    }

    /// Closes idle bootstrap links once there are enough others, and dials relays from the view
    /// while short of the target. Returns whether it dialled any.
    pub(super) fn maintain_links(&mut self, now: Instant) -> bool {
        let boot = &self.boot;
        let others = self
            .links
            .values()
            .filter(|l| l.state.ready() && l.is_relay && !boot.is_bootstrap(&l.endpoint))
            .count();
        if others >= self.cfg.target_links {
            let idle_bootstrap: Vec<LinkId> = self
                .links
                .values()
                .filter(|l| l.dialed && l.state.ready() && boot.is_bootstrap(&l.endpoint))
                .filter(|l| {
                    l.established_at
                        .is_some_and(|t| now.saturating_since(t) >= BOOTSTRAP_LINGER_MS)
                })
                .filter(|l| now.saturating_since(l.last_cell.max(l.held_at)) >= BOOTSTRAP_LINGER_MS)
                .filter(|l| !self.nat_uses(l.id))
                .map(|l| l.id)
                .collect();
            for id in idle_bootstrap {
                tracing::debug!(link = id.0, "enough links: closing the idle bootstrap link");
                self.close(now, id, 0);
            }
        }
        let relays = self
            .links
            .values()
            .filter(|l| l.is_relay || (l.dialed && !l.state.ready()))
            .count();
        if relays >= self.cfg.target_links {
            return false;
        }
        let want = (self.cfg.target_links - relays).min(2);
        let candidates: Vec<([u8; 32], SocketAddr)> = self
            .view
            .sample(self.view.len(), None, &mut self.rng)
            .into_iter()
            .filter(|r| r.is_relay())
            .filter(|r| !self.by_key.contains_key(&r.fields().link_key))
            .filter(|r| {
                self.backoff
                    .get(&r.fields().link_key)
                    .is_none_or(|b| now >= b.until)
            })
            .filter_map(|r| {
                r.fields()
                    .endpoints
                    .first()
                    .map(|e| (r.fields().link_key, *e))
            })
            .take(want)
            .collect();
        let dialled = !candidates.is_empty();
        for (key, ep) in candidates {
            let _ = self.connect(now, key, ep);
        }
        dialled
    }
}
