//! HELLO (docs/protocol.md 4.5): the record exchange that brings a link up, and our own record
//! (re-signed when its contents change, re-sent to every neighbour then).

use std::net::SocketAddr;

use crate::crypto::keys::fingerprint;
use crate::link::view::Source;
use crate::time::{Instant, Millis};
use crate::wire::link::MsgType;
use crate::wire::record::{
    Contact, NatClass, RecordFields, RelayRecord, FLAG_DHT, FLAG_EXIT, FLAG_RELAY, FLAG_RENDEZVOUS,
    RELAY_RECORD_LEN, RELAY_RECORD_LIFETIME_S, RELAY_RECORD_REPUBLISH_S,
};

use super::link::Link;
use super::{LinkEvent, LinkId, LinkLayer};

/// An established link must send HELLO within this time.
pub const HELLO_TIMEOUT_MS: Millis = 10_000;
/// HELLO is resent this often, asking for an answer, until the peer's HELLO arrives (4.5).
pub const HELLO_RETRY_MS: Millis = 1_000;

/// HELLO `role` bit: the sender has not received the receiver's HELLO yet; answer with one.
pub(super) const HELLO_ASK: u8 = 0b100;

impl LinkLayer {
    pub(super) fn send_hello(&mut self, now: Instant, id: LinkId, ask: bool) {
        let mut payload = [0u8; 4 + RELAY_RECORD_LEN];
        let n = match &self.own_record {
            Some(r) => {
                payload[0] = 0b01;
                payload[2..4].copy_from_slice(&(RELAY_RECORD_LEN as u16).to_be_bytes());
                payload[4..].copy_from_slice(r.bytes());
                4 + RELAY_RECORD_LEN
            }
            None => {
                payload[0] = 0b10;
                4
            }
        };
        if ask {
            payload[0] |= HELLO_ASK;
        }
        if self
            .send_frame(now, id, MsgType::Hello, 0, payload.get(..n).unwrap_or(&[]))
            .is_ok()
        {
            if let Some(l) = self.links.get_mut(&id) {
                l.state.on_hello_sent(now);
            }
        }
    }

    pub(super) fn on_hello(&mut self, now: Instant, id: LinkId, p: &[u8]) {
        let role = p.first().copied().unwrap_or(0);
        let len = p
            .get(2..4)
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .map_or(0, |b| usize::from(u16::from_be_bytes(b)));
        let mut identity = None;
        let mut record = None;
        if role & 0b01 != 0 {
            if len != RELAY_RECORD_LEN || p.len() != 4 + RELAY_RECORD_LEN {
                self.malformed(now, id, "HELLO record length");
                return;
            }
            match RelayRecord::parse(p.get(4..).unwrap_or(&[]), now.as_unix_ms()) {
                Ok(r) => {
                    let peer_key = self.links.get(&id).map(|l| l.peer_key);
                    if Some(r.fields().link_key) != peer_key {
                        // The record names another link key than the one that authenticated
                        // this session: a relay can only speak for itself.
                        self.stats.bad_records += 1;
                        self.stats.closed_protocol += 1;
                        self.close(now, id, 1);
                        return;
                    }
                    identity = Some(*r.identity());
                    record = Some(r);
                }
                Err(e) => {
                    tracing::debug!(link = id.0, "HELLO with a bad record: {e}");
                    self.stats.bad_records += 1;
                    self.stats.closed_protocol += 1;
                    self.close(now, id, 1);
                    return;
                }
            }
        } else if role & 0b10 == 0 || len != 0 || p.len() != 4 {
            self.malformed(now, id, "HELLO role");
            return;
        }
        // A peer that was up on this link and asks for our HELLO again in a new session has lost
        // its side of the link (it gave it up, or restarted, and made a new one under the same
        // WireGuard keys): every circuit we run over the link is gone there, and nothing would
        // tell us. Close the link, so both sides see it down and the circuits' owners rebuild
        // them (4.7). An ask without a new session is a HELLO the peer sent before it had ours,
        // reordered or duplicated on the way: answered, never a reason to close.
        if role & HELLO_ASK != 0
            && self
                .links
                .get(&id)
                .is_some_and(|l| l.state.ready() && l.peer_was_up && l.peer_new_session)
        {
            tracing::debug!(link = id.0, "peer lost its side of the link: closing it");
            self.stats.peer_resets += 1;
            self.close(now, id, 0);
            return;
        }
        let mut identified = None;
        let first = match self.links.get_mut(&id) {
            Some(l) => {
                let first = !l.state.ready();
                if !first && l.identity.is_none() {
                    identified = identity;
                }
                if let (Some(old), Some(new)) = (l.identity, identity) {
                    if old != new {
                        // An identity change on a live link is not allowed.
                        drop(record);
                        self.close(now, id, 1);
                        return;
                    }
                }
                l.state.on_hello_received();
                l.identity = identity;
                l.is_relay = record.as_ref().is_some_and(RelayRecord::is_relay);
                l.peer_flags = record.as_ref().map_or(0, |r| r.fields().flags);
                if let Some(r) = &record {
                    l.peer_nat = r.fields().nat;
                    l.peer_endpoint = r.fields().endpoints.first().copied();
                }
                first
            }
            None => return,
        };
        if let Some(r) = record {
            if let Err(why) = self.view.insert(r, Source::Itself, now) {
                tracing::trace!(?why, "record not added to the view");
            }
        }
        // Answer a HELLO that asks (the peer lost ours), at most twice a second so that a
        // peer cannot turn HELLOs into a stream of our records.
        let (hello_sent, answer) = self.links.get(&id).map_or((true, false), |l| {
            (
                l.state.hello_sent(),
                role & HELLO_ASK != 0
                    && now.saturating_since(l.state.hello_at().unwrap_or(Instant::ZERO))
                        >= HELLO_RETRY_MS / 2,
            )
        });
        if !hello_sent || answer {
            self.send_hello(now, id, false);
        }
        if let Some(ident) = identified {
            // The link's users (circuits waiting to extend to this relay, guards) must learn
            // it: otherwise the link stays anonymous to them and every EXTEND to the relay over
            // it waits for a link that is already up, and times out (issue #20).
            tracing::debug!(link = id.0, peer = %fingerprint(&ident), "link identified");
            self.events.push_back(LinkEvent::Identified {
                link: id,
                identity: ident,
            });
        }
        if first {
            let key = self.links.get(&id).map(|l| l.peer_key).unwrap_or_default();
            self.dead_peers.remove(&key);
            if let Some(ident) = identity {
                self.backoff.remove(&key);
                tracing::debug!(link = id.0, peer = %fingerprint(&ident), "link up");
            }
            self.events.push_back(LinkEvent::Up { link: id, identity });
            self.send_own_exit_policy(now, id);
            self.unsolicited_evidence(now, id);
            // Measure RTT and learn our observed endpoint at once; a link we opened for someone's
            // reachability probe carries the probe's nonce (section 13.3).
            let key = self.links.get(&id).map(|l| l.peer_key).unwrap_or_default();
            match self.probe_pings.remove(&key) {
                Some((nonce, _, _)) => self.ping_with(now, id, nonce),
                None => self.ping(now, id),
            }
        }
    }

    pub(super) fn on_observed(&mut self, now: Instant, endpoint: SocketAddr) {
        if self.observed == Some(endpoint) {
            return;
        }
        self.observed = Some(endpoint);
        self.events.push_back(LinkEvent::Observed { endpoint });
        self.refresh_record(now);
    }

    /// Re-signs our record when something in it changed or it is due; sends HELLO again on change.
    pub(super) fn refresh_record(&mut self, now: Instant) {
        self.reclassify();
        if !self.cfg.relay {
            return;
        }
        let advertised = self.advertised();
        let mut endpoints: Vec<SocketAddr> = Vec::new();
        if self.nat == NatClass::Public {
            endpoints.extend(advertised);
        } else {
            // Behind NAT (or not known yet): the endpoint neighbours see is the one to punch to.
            endpoints.extend(self.observed);
            if endpoints.is_empty() {
                endpoints.extend(advertised);
            }
        }
        if let Some(f) = self.forged_endpoint {
            endpoints.retain(|e| *e != f);
            endpoints.insert(0, f);
        }
        endpoints.truncate(4);
        if endpoints.is_empty() {
            return;
        }
        // Introducers: relays others can reach directly that hold a live link to us (13.1).
        let mut introducers: Vec<Contact> = Vec::new();
        if !self.nat.directly_reachable() {
            let mut cands: Vec<&Link> = self
                .links
                .values()
                .filter(|l| l.state.ready() && l.is_relay && l.peer_nat.directly_reachable())
                .filter(|l| l.session.established())
                .collect();
            cands.sort_by_key(|l| l.id);
            for l in cands.into_iter().take(2) {
                if let (Some(identity), Some(endpoint)) = (l.identity, l.peer_endpoint) {
                    introducers.push(Contact {
                        identity,
                        link_key: l.peer_key,
                        endpoint,
                    });
                }
            }
        }
        // A NATed class must name an introducer; without one we publish "unknown".
        let nat = match self.nat {
            NatClass::Cone | NatClass::Symmetric if introducers.is_empty() => NatClass::Unknown,
            n => n,
        };
        let mut flags = FLAG_RELAY;
        // Reachable directly or through a link our introducers help set up (13.2-13.4).
        if nat.directly_reachable() || !introducers.is_empty() {
            flags |= FLAG_DHT | FLAG_RENDEZVOUS;
        }
        if self.cfg.exit {
            flags |= FLAG_EXIT;
        }
        let fields = RecordFields {
            flags,
            nat,
            link_key: self.link_public,
            onion_key: self.keys.onion_public,
            seq: now
                .as_unix_ms()
                .max(self.own_record.as_ref().map_or(0, |r| r.fields().seq + 1)),
            expires: now.as_unix_ms() / 1000 + RELAY_RECORD_LIFETIME_S,
            endpoints,
            introducers,
        };
        let changed = self.own_record.as_ref().is_none_or(|r| {
            let f = r.fields();
            f.flags != fields.flags
                || f.onion_key != fields.onion_key
                || f.nat != fields.nat
                || f.endpoints != fields.endpoints
                || f.introducers != fields.introducers
        });
        let due = now.saturating_since(self.record_signed) >= RELAY_RECORD_REPUBLISH_S * 1000;
        if !changed && !due {
            return;
        }
        match RelayRecord::sign(&self.keys.identity, fields) {
            Ok(r) => {
                self.own_record = Some(r);
                self.record_signed = now;
                self.sign_exit_policy(now);
                if changed {
                    let ids: Vec<LinkId> = self
                        .links
                        .values()
                        .filter(|l| l.state.hello_sent())
                        .map(|l| l.id)
                        .collect();
                    for id in ids {
                        self.send_hello(now, id, false);
                    }
                }
            }
            Err(e) => tracing::warn!("cannot sign our relay record: {e}"),
        }
    }

    /// A new onion key (rotation): the record is signed again with it and sent to neighbours.
    pub fn set_onion_public(&mut self, now: Instant, onion_public: [u8; 32]) {
        self.keys.onion_public = onion_public;
        self.refresh_record(now);
    }
}
