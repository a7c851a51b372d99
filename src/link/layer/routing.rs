//! Which link a datagram belongs to and where a link's datagrams go: the link tables (by id, by
//! index, by peer key), creating and removing links, and our own endpoints (configured, learned
//! from where datagrams arrive).

use rand::Rng;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use crate::link::noise::{BoringSession, NoiseSession, Session, NOISE_BUF_LEN};
use crate::time::Instant;
use crate::wire::datagram::{self};
use crate::wire::record::NatClass;

use super::discovery::{Backoff, BACKOFF_MAX_MS, BACKOFF_MIN_MS};
use super::link::{Limits, Link, LinkState};
use super::{LinkError, LinkEvent, LinkId, LinkLayer, Transmit};

/// Approximate bytes one link costs (session, state, maps).
pub const LINK_COST: usize = 4096;

pub(super) fn new_buf() -> Vec<u8> {
    Vec::with_capacity(NOISE_BUF_LEN)
}

/// Host endpoints learned from received datagrams, at most.
pub(super) const MAX_LOCAL_ENDPOINTS: usize = 8;

/// Private, shared, link-local and unique-local addresses: reachable only on their own network.
pub(super) fn is_local_scope(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            a.is_private() || a.is_link_local() || {
                // 100.64.0.0/10, carrier-grade NAT.
                let [x, y, ..] = a.octets();
                x == 100 && (64..128).contains(&y)
            }
        }
        IpAddr::V6(a) => {
            let [s, ..] = a.segments();
            (s & 0xfe00) == 0xfc00 || (s & 0xffc0) == 0xfe80
        }
    }
}

impl LinkLayer {
    pub(super) fn take_buf(&mut self) -> Vec<u8> {
        self.pool.pop().unwrap_or_else(new_buf)
    }

    /// Sends a datagram of a link: in a relay envelope to the introducer if it is relayed.
    pub(super) fn link_out(&mut self, id: LinkId, dst: SocketAddr, bytes: &[u8]) {
        let (relay, local) = match self.links.get(&id) {
            Some(l) => (l.relay, l.local),
            None => (None, None),
        };
        match relay {
            Some(r) => {
                let mut data = self.take_buf();
                datagram::emit_relay_envelope(r.token, bytes, &mut data);
                self.stats.datagrams_out += 1;
                self.transmits.push_back(Transmit {
                    dst: r.via,
                    src: r.via_local,
                    data,
                });
            }
            None => self.push_transmit(dst, local, bytes),
        }
    }

    pub(super) fn push_transmit(&mut self, dst: SocketAddr, src: Option<IpAddr>, bytes: &[u8]) {
        let mut data = self.take_buf();
        data.extend_from_slice(bytes);
        self.stats.datagrams_out += 1;
        self.transmits.push_back(Transmit { dst, src, data });
    }

    /// Our address the datagram being handled arrived at (answers go out from it).
    pub(super) fn rx_src(&self) -> Option<IpAddr> {
        self.rx_local.map(|l| l.ip())
    }

    pub(super) fn new_link(
        &mut self,
        now: Instant,
        peer_key: [u8; 32],
        endpoint: SocketAddr,
        dialed: bool,
    ) -> Result<LinkId, LinkError> {
        if self.links.len() >= self.cfg.max_links {
            return Err(LinkError::Limit);
        }
        let charge = match self.budget.try_charge(LINK_COST) {
            Some(c) => c,
            None => {
                // Strangers' half-open links go first.
                self.evict_unbound(now);
                self.budget.try_charge(LINK_COST).ok_or(LinkError::Limit)?
            }
        };
        let mut local_index;
        loop {
            local_index = self.rng.gen_range(1..(1u32 << 24));
            if !self.by_index.contains_key(&local_index) {
                break;
            }
        }
        let id = LinkId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let session: Box<dyn NoiseSession> = match self.sim_crypto {
            Some(t) => Box::new(t.session(self.link_public, peer_key, local_index)),
            None => Box::new(BoringSession::new(
                &self.keys.link,
                peer_key,
                local_index,
                None,
                self.responder.limiter(),
            )),
        };
        let session = Session::new(session);
        self.links.insert(
            id,
            Link {
                id,
                session,
                peer_key,
                endpoint,
                local: if dialed {
                    None
                } else {
                    self.rx_local.map(|l| l.ip())
                },
                local_index,
                dialed,
                created: now,
                established_at: None,
                handshake_sent: now,
                attempts: 0,
                state: LinkState::Handshake,
                identity: None,
                is_relay: false,
                last_rx: now,
                last_tx: now,
                rtt_ms: None,
                malformed: 0,
                malformed_since: now,
                peer_was_up: false,
                peer_new_session: false,
                last_pex: Instant::ZERO,
                pex_served: Instant::ZERO,
                last_policy_ask: Instant::ZERO,
                policy_served: Instant::ZERO,
                last_cell: Instant::ZERO,
                held_at: Instant::ZERO,
                rpcs: BTreeMap::new(),
                peer_nat: NatClass::Unknown,
                peer_endpoint: None,
                punched_at: None,
                relay: None,
                upgrade_next: Instant::ZERO,
                upgrade_tries: 0,
                upgrade_bytes: 0,
                last_ping: Instant::ZERO,
                peer_flags: 0,
                dht_only: false,
                limits: Limits::default(),
                _charge: charge,
            },
        );
        self.by_index.insert(local_index, id);
        self.by_key.insert(peer_key, id);
        Ok(id)
    }

    pub(super) fn evict_unbound(&mut self, now: Instant) {
        let victim = self
            .links
            .values()
            .filter(|l| !l.state.ready() && !l.dialed)
            .min_by_key(|l| l.created)
            .map(|l| l.id);
        if let Some(v) = victim {
            tracing::debug!("memory budget: evicting a half-open inbound link");
            let _ = now;
            self.remove_link(v, false);
        }
    }

    pub(super) fn remove_link(&mut self, id: LinkId, dead: bool) {
        if let Some(l) = self.links.remove(&id) {
            self.by_index.remove(&l.local_index);
            self.by_key.remove(&l.peer_key);
            self.punches.remove(&id);
            self.dials.remove(&l.peer_key);
            if let Some(r) = l.relay {
                self.relayed_tokens.remove(&r.token);
            }
            // Relayed links that ran over this one (as introducer or endpoint) are gone too.
            self.relay_table.retain(|_, e| e.link != id);
            let over: Vec<LinkId> = self
                .links
                .values()
                .filter(|x| x.relay.is_some_and(|r| r.via_link == id))
                .map(|x| x.id)
                .collect();
            for x in over {
                self.remove_link(x, false);
            }
            let at = l.last_tx.max(l.last_rx);
            self.note_recent(l.endpoint.ip(), at);
            if l.state.ready() {
                self.events.push_back(LinkEvent::Down {
                    link: id,
                    identity: l.identity,
                });
            } else if dead && l.dialed {
                self.events.push_back(LinkEvent::DialFailed {
                    peer_key: l.peer_key,
                });
            }
            if dead && l.dialed {
                let b = self.backoff.entry(l.peer_key).or_insert(Backoff {
                    until: Instant::ZERO,
                    delay: BACKOFF_MIN_MS / 2,
                });
                b.delay = (b.delay * 2).clamp(BACKOFF_MIN_MS, BACKOFF_MAX_MS);
                let jitter = self.rng.gen_range(0..=b.delay / 4);
                b.until = l.last_tx.max(l.last_rx) + b.delay + jitter;
            }
        }
    }

    /// Our endpoints: the configured ones, and for a wildcard listen address the host addresses
    /// datagrams arrived at. Once neighbours tell us where they see us, learned addresses of
    /// another scope (a LAN address on a host that is reached publicly) are left out.
    pub(super) fn advertised(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = self
            .cfg
            .advertise
            .iter()
            .copied()
            .filter(|a| !a.ip().is_unspecified() && a.port() != 0)
            .collect();
        let scope = self.observed.map(|o| is_local_scope(o.ip()));
        for l in &self.locals {
            if !out.contains(l) && scope.is_none_or(|s| s == is_local_scope(l.ip())) {
                out.push(*l);
            }
        }
        // The endpoint neighbours see first: it is known to work.
        if let Some(i) = self.observed.and_then(|o| out.iter().position(|a| *a == o)) {
            out.swap(0, i);
        }
        out
    }

    /// Notes that datagrams reach us at `local`. Only for wildcard listen addresses (a specific
    /// one is advertised as configured) and only a few (a host has few addresses).
    pub(super) fn learn_local(&mut self, now: Instant, local: SocketAddr) {
        if self.locals.contains(&local) || self.locals.len() >= MAX_LOCAL_ENDPOINTS {
            return;
        }
        let wildcard = self
            .cfg
            .advertise
            .iter()
            .any(|a| a.ip().is_unspecified() && a.port() == local.port());
        if !wildcard || local.ip().is_unspecified() || local.ip().is_loopback() {
            return;
        }
        tracing::info!(endpoint = %local, "datagrams reach us at this endpoint");
        self.locals.push(local);
        self.refresh_record(now);
    }

    /// Our endpoints learned from received datagrams (wildcard listen addresses).
    pub fn local_endpoints(&self) -> &[SocketAddr] {
        &self.locals
    }
}
