//! Our NAT class (docs/protocol.md 13.1, 13.3): the reachability probe through two neighbours,
//! what counts as an unsolicited link, and the addresses we sent to lately (which prove nothing).

use rand::Rng;
use std::net::SocketAddr;

use crate::link::nat::{
    MAX_PROBE_PINGS, NAT_ENTRY_COST, NAT_RECHECK_MS, PROBE_REQUEST_RATE, PROBE_RETRY_MS,
    PROBE_WINDOW_MS,
};
use crate::time::{Instant, Millis};
use crate::wire::link::{MsgType, ProbeForward};
use crate::wire::record::NatClass;

use super::{LinkId, LinkLayer};

/// A NAT may keep a flow towards an address this long after our last datagram to it.
pub(super) const RECENT_PEER_MS: Millis = 120_000;
/// Most such addresses remembered.
pub(super) const MAX_RECENT_PEERS: usize = 4096;
/// Approximate bytes of one remembered address.
pub(super) const RECENT_PEER_COST: usize = 64;

/// Our reachability probe in flight.
pub(super) struct Probe {
    pub(super) nonce: u64,
    pub(super) sent: Instant,
    pub(super) endpoint: SocketAddr,
}

impl LinkLayer {
    /// Section 13.1: public if neighbours see us at an address we advertise (or one datagrams
    /// arrive at: no translation on the way), reachable if a probe reached us unsolicited at the
    /// endpoint we are seen at, else what the mappings show.
    pub(super) fn reclassify(&mut self) {
        let advertised = self.advertised();
        self.nat = match self.observed {
            Some(o) if advertised.contains(&o) || self.locals.contains(&o) => NatClass::Public,
            Some(o) if self.probe_ok == Some(o) => NatClass::Reachable,
            _ => self.obs.class(),
        };
    }

    pub(super) fn note_recent(&mut self, ip: std::net::IpAddr, at: Instant) {
        if let Some((t, _)) = self.recent_peers.get_mut(&ip) {
            *t = (*t).max(at);
            return;
        }
        let charge = if self.recent_peers.len() < MAX_RECENT_PEERS {
            self.budget.try_charge(RECENT_PEER_COST)
        } else {
            None
        };
        match charge {
            Some(c) => {
                self.recent_peers.insert(ip, (at, c));
            }
            // Too many to remember: trust no probe until they would have expired.
            None => self.recent_overflow_until = at + RECENT_PEER_MS,
        }
    }

    /// Asks a neighbour to have another one dial us unsolicited (section 13.3).
    pub(super) fn run_probe(&mut self, now: Instant) {
        if let Some(p) = &self.probe {
            if now.saturating_since(p.sent) < PROBE_WINDOW_MS {
                return;
            }
            self.probe = None;
        }
        let Some(observed) = self.observed else {
            return;
        };
        if !self.cfg.relay || self.nat == NatClass::Public {
            return;
        }
        let period = if self.probe_ok == Some(observed) {
            NAT_RECHECK_MS
        } else {
            PROBE_RETRY_MS
        };
        if now.saturating_since(self.last_probe) < period && self.last_probe != Instant::ZERO {
            return;
        }
        let relays: Vec<LinkId> = self
            .links
            .values()
            .filter(|l| l.state.ready() && l.is_relay)
            .map(|l| l.id)
            .collect();
        if relays.len() < 2 {
            return;
        }
        let Some(n1) = relays.get(self.rng.gen_range(0..relays.len())).copied() else {
            return;
        };
        let nonce: u64 = self.rng.gen();
        self.last_probe = now;
        self.probe = Some(Probe {
            nonce,
            sent: now,
            endpoint: observed,
        });
        let rpc: u64 = self.rng.gen_range(1..u64::MAX);
        let _ = self.send_frame(now, n1, MsgType::ProbeRequest, rpc, &nonce.to_be_bytes());
    }

    /// Whether a link came to us unsolicited: we did not dial, punch or relay it, and sent
    /// nothing lately to its address (no closed link, query or punch, no other live link).
    pub(super) fn unsolicited(&self, now: Instant, id: LinkId) -> bool {
        let Some(l) = self.links.get(&id) else {
            return false;
        };
        let ip = l.endpoint.ip();
        let recent = self
            .recent_peers
            .get(&ip)
            .is_some_and(|(t, _)| now.saturating_since(*t) < RECENT_PEER_MS);
        let shared = self
            .links
            .values()
            .any(|x| x.id != id && x.endpoint.ip() == ip);
        !(l.dialed
            || l.punched_at.is_some()
            || l.relay.is_some()
            || recent
            || shared
            || now < self.recent_overflow_until)
    }

    /// An unsolicited inbound link proves what a probe proves (section 13.3): strangers reach
    /// us at our observed endpoint.
    pub(super) fn unsolicited_evidence(&mut self, now: Instant, id: LinkId) {
        let Some(observed) = self.observed else {
            return;
        };
        if !self.cfg.relay || self.probe_ok == Some(observed) || !self.unsolicited(now, id) {
            return;
        }
        self.probe_ok = Some(observed);
        self.stats.probes_ok += 1;
        let before = self.nat;
        self.reclassify();
        if self.nat != before {
            tracing::debug!(nat = self.nat.name(), "reached unsolicited");
            self.refresh_record(now);
        }
    }

    pub(super) fn check_probe_ping(&mut self, now: Instant, id: LinkId, payload: &[u8]) {
        let Some(p) = &self.probe else { return };
        if payload.get(..8) != Some(&p.nonce.to_be_bytes()[..])
            || now.saturating_since(p.sent) > PROBE_WINDOW_MS
        {
            return;
        }
        // Only an unsolicited link proves reachability: one we did not dial, from an address we
        // sent nothing to lately (our NAT may still hold a flow towards it).
        if !self.unsolicited(now, id) {
            tracing::debug!("probe arrived from an address we talked to: inconclusive");
            self.probe = None;
            return;
        }
        self.probe_ok = Some(p.endpoint);
        self.probe = None;
        self.stats.probes_ok += 1;
        let before = self.nat;
        self.reclassify();
        if self.nat != before {
            tracing::debug!(nat = self.nat.name(), "reachability probe succeeded");
            self.refresh_record(now);
        }
    }

    /// As N1: forward a neighbour's probe to another neighbour with a different address.
    pub(super) fn on_probe_request(&mut self, now: Instant, id: LinkId, p: &[u8]) {
        let Some(nonce) = p
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
        else {
            return self.malformed(now, id, "PROBE_REQUEST");
        };
        let Some(a) = self.links.get_mut(&id) else {
            return;
        };
        if !self.cfg.relay || !a.limits.probe.allow(now, 60_000, PROBE_REQUEST_RATE) {
            self.stats.dropped += 1;
            return;
        }
        let fwd = ProbeForward {
            subject: a.identity.unwrap_or([0; 32]),
            subject_link_key: a.peer_key,
            endpoint: a.endpoint,
            nonce,
        };
        let ip = a.endpoint.ip();
        let cands: Vec<LinkId> = self
            .links
            .values()
            .filter(|l| l.state.ready() && l.is_relay && l.id != id && l.endpoint.ip() != ip)
            .filter(|l| l.peer_key != fwd.subject_link_key)
            .map(|l| l.id)
            .collect();
        if cands.is_empty() {
            self.stats.dropped += 1;
            return;
        }
        if let Some(n2) = cands.get(self.rng.gen_range(0..cands.len())).copied() {
            let _ = self.send_frame(now, n2, MsgType::ProbeForward, 0, &fwd.emit());
        }
    }

    /// As N2: dial the subject directly and PING it with its nonce.
    pub(super) fn on_probe_forward(&mut self, now: Instant, id: LinkId, p: &[u8]) {
        let f = match ProbeForward::parse(p) {
            Ok(f) => f,
            Err(e) => return self.malformed(now, id, &e.to_string()),
        };
        let ok = self.links.get_mut(&id).is_some_and(|l| {
            l.is_relay && l.limits.probe.allow(now, 1000, 10 * PROBE_REQUEST_RATE)
        });
        if !ok
            || self.by_key.contains_key(&f.subject_link_key)
            || self.probe_pings.len() >= MAX_PROBE_PINGS
        {
            // Already linked (cannot test unsolicited reachability) or too many pending.
            self.stats.dropped += 1;
            return;
        }
        let Some(charge) = self.budget.try_charge(NAT_ENTRY_COST) else {
            self.stats.dropped += 1;
            return;
        };
        self.probe_pings
            .insert(f.subject_link_key, (f.nonce, now, charge));
        if self
            .connect_direct(now, f.subject_link_key, f.endpoint)
            .is_err()
        {
            self.probe_pings.remove(&f.subject_link_key);
        }
    }
}
