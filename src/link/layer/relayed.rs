//! Relayed links (docs/protocol.md 13.4): the introducer's token table and envelope forwarding,
//! the endpoint's relayed links, and the tries to make them direct.

use rand::Rng;
use std::net::{IpAddr, SocketAddr};

use crate::budget::Charge;
use crate::link::nat::{
    RateWindow, MAX_RELAYED_LINKS, NAT_ENTRY_COST, RELAYED_LINK_IDLE_MS, RELAYED_LINK_RATE,
    RELAY_REQUEST_RATE, RELAY_UPGRADE_BUSY_BYTES, RELAY_UPGRADE_BUSY_MAX_MS,
    RELAY_UPGRADE_FIRST_MS, RELAY_UPGRADE_MAX_MS,
};
use crate::time::Instant;
use crate::wire::datagram::{self};
use crate::wire::link::{parse_target, MsgType, RelayOffer, RELAY_OK, RELAY_REFUSED};
use crate::wire::record::NatClass;

use super::rpc::Rpc;
use super::{Link, LinkId, LinkLayer, Transmit};

/// How a relayed link reaches its peer: envelopes with our token to the introducer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RelayPath {
    pub(super) via: SocketAddr,
    pub(super) via_link: LinkId,
    pub(super) token: u64,
    /// Our address the introducer writes to (the via link's).
    pub(super) via_local: Option<IpAddr>,
}

/// One relayed link as the introducer sees it: one entry per token (two per link).
pub(super) struct RelayEntry {
    /// The link the token was offered on; envelopes must come from its endpoint.
    pub(super) link: LinkId,
    /// The other side's token.
    pub(super) other: u64,
    pub(super) last: Instant,
    pub(super) rate: RateWindow,
    pub(super) _charge: Option<Charge>,
}

impl LinkLayer {
    pub(super) fn fresh_token(&mut self) -> u64 {
        loop {
            let t: u64 = self.rng.gen_range(1..u64::MAX);
            if !self.relay_table.contains_key(&t) && !self.relayed_tokens.contains_key(&t) {
                return t;
            }
        }
    }

    /// As an introducer: set up a relayed link between the requester and the target.
    pub(super) fn on_relay_request(&mut self, now: Instant, id: LinkId, rpc_id: u64, p: &[u8]) {
        let target = match parse_target(p) {
            Ok(t) => t,
            Err(e) => return self.malformed(now, id, &e.to_string()),
        };
        let allowed = self
            .links
            .get_mut(&id)
            .is_some_and(|l| l.limits.relay.allow(now, 1000, RELAY_REQUEST_RATE));
        if !allowed || !self.cfg.relay {
            self.stats.dropped += 1;
            return;
        }
        let refuse = |l: &mut LinkLayer| {
            let o = RelayOffer {
                status: RELAY_REFUSED,
                peer: target,
                peer_link_key: [0; 32],
                token: 0,
                lifetime_s: 0,
            };
            let _ = l.send_frame(now, id, MsgType::RelayOffer, rpc_id, &o.emit());
        };
        let t = self.link_to(&target).filter(|t| *t != id);
        let (Some(t), true) = (t, self.relay_table.len() / 2 < MAX_RELAYED_LINKS) else {
            return refuse(self);
        };
        let (Some(c1), Some(c2)) = (
            self.budget.try_charge(NAT_ENTRY_COST),
            self.budget.try_charge(NAT_ENTRY_COST),
        ) else {
            return refuse(self);
        };
        let (Some(a), Some(tl)) = (self.links.get(&id), self.links.get(&t)) else {
            return;
        };
        let (a_ident, a_key, t_key) = (a.identity.unwrap_or([0; 32]), a.peer_key, tl.peer_key);
        let ta = self.fresh_token();
        let tt = self.fresh_token();
        for (tok, link, other, c) in [(ta, id, tt, c1), (tt, t, ta, c2)] {
            self.relay_table.insert(
                tok,
                RelayEntry {
                    link,
                    other,
                    last: now,
                    rate: RateWindow::default(),
                    _charge: Some(c),
                },
            );
        }
        let lifetime_s = (RELAYED_LINK_IDLE_MS / 1000) as u32;
        let to_t = RelayOffer {
            status: RELAY_OK,
            peer: a_ident,
            peer_link_key: a_key,
            token: tt,
            lifetime_s,
        };
        let to_a = RelayOffer {
            status: RELAY_OK,
            peer: target,
            peer_link_key: t_key,
            token: ta,
            lifetime_s,
        };
        let fresh: u64 = self.rng.gen_range(1..u64::MAX);
        let _ = self.send_frame(now, t, MsgType::RelayOffer, fresh, &to_t.emit());
        let _ = self.send_frame(now, id, MsgType::RelayOffer, rpc_id, &to_a.emit());
    }

    pub(super) fn set_relayed(&mut self, now: Instant, id: LinkId, via_link: LinkId, token: u64) {
        let Some((via, via_local)) = self.links.get(&via_link).map(|l| (l.endpoint, l.local))
        else {
            return;
        };
        self.punches.remove(&id);
        if let Some(l) = self.links.get_mut(&id) {
            if let Some(old) = l.relay.replace(RelayPath {
                via,
                via_link,
                token,
                via_local,
            }) {
                self.relayed_tokens.remove(&old.token);
            }
            self.relayed_tokens.insert(token, id);
            self.stats.relayed_links += 1;
            l.upgrade_next = now + RELAY_UPGRADE_FIRST_MS;
            l.upgrade_tries = 0;
        }
    }

    /// Whether `run_upgrades` tries to make this link direct once `upgrade_next` comes (also
    /// what `poll_timeout` wakes for).
    pub(super) fn upgrade_wanted(&self, l: &Link) -> bool {
        l.relay.is_some()
            && l.session.established()
            && l.state.ready()
            && l.identity.is_some()
            && self.link_public < l.peer_key
            && !(self.nat == NatClass::Symmetric && l.peer_nat == NatClass::Symmetric)
            && !self.punches.contains_key(&l.id)
    }

    /// Tries now and then to turn relayed links into direct ones by punching again (13.4): a
    /// punch can fail for passing reasons (loss, a NAT that was still holding a stale mapping).
    /// One side asks (the one with the smaller link key), through an introducer of the peer; the
    /// relayed link carries on meanwhile and is upgraded when the peer answers directly.
    pub(super) fn run_upgrades(&mut self, now: Instant) {
        let due: Vec<(LinkId, [u8; 32], [u8; 32])> = self
            .links
            .values()
            .filter(|l| now >= l.upgrade_next && self.upgrade_wanted(l))
            .filter_map(|l| Some((l.id, l.identity?, l.peer_key)))
            .collect();
        for (id, identity, key) in due {
            let intro = self.view.get(&identity).and_then(|r| {
                r.fields()
                    .introducers
                    .iter()
                    .find_map(|c| self.link_to(&c.identity))
            });
            if let Some(l) = self.links.get_mut(&id) {
                let (tx, rx) = l.session.traffic();
                let bytes = tx.saturating_add(rx);
                let busy = bytes.saturating_sub(l.upgrade_bytes) >= RELAY_UPGRADE_BUSY_BYTES;
                l.upgrade_bytes = bytes;
                let cap = if busy {
                    RELAY_UPGRADE_BUSY_MAX_MS
                } else {
                    RELAY_UPGRADE_MAX_MS
                };
                let wait = RELAY_UPGRADE_FIRST_MS
                    .saturating_mul(1 << l.upgrade_tries.min(6))
                    .min(cap);
                l.upgrade_tries = l.upgrade_tries.saturating_add(1);
                l.upgrade_next = now + wait;
            }
            if let Some(il) = intro.filter(|il| *il != id) {
                tracing::debug!(link = id.0, "trying to make a relayed link direct");
                self.stats.upgrade_attempts += 1;
                self.send_rpc(
                    now,
                    il,
                    Rpc::Punch { target_key: key },
                    MsgType::PunchRequest,
                    &identity,
                );
            }
        }
    }

    pub(super) fn on_relay_offer(&mut self, now: Instant, id: LinkId, rpc_id: u64, p: &[u8]) {
        let o = match RelayOffer::parse(p) {
            Ok(o) => o,
            Err(e) => return self.malformed(now, id, &e.to_string()),
        };
        let answer = self
            .links
            .get_mut(&id)
            .and_then(|l| l.rpcs.remove(&rpc_id))
            .map(|pending| pending.rpc);
        if let Some(Rpc::Relay { target_key }) = answer {
            let link = self.by_key.get(&target_key).copied();
            match link {
                Some(link) if o.status == RELAY_OK && o.peer_link_key == target_key => {
                    self.set_relayed(now, link, id, o.token);
                    self.initiate(link, now, true);
                }
                _ => {
                    if let Some(d) = self.dials.get_mut(&target_key) {
                        d.next = now;
                    }
                }
            }
            return;
        }
        // Unsolicited: someone asked our neighbour for a relayed link to us.
        let ok = self.links.get_mut(&id).is_some_and(|l| {
            l.is_relay
                && l.identity.is_some()
                && l.limits.relay.allow(now, 1000, 2 * RELAY_REQUEST_RATE)
        });
        if !ok || o.status != RELAY_OK || o.peer_link_key == self.link_public {
            self.stats.dropped += 1;
            return;
        }
        let Some(via) = self.links.get(&id).map(|l| l.endpoint) else {
            return;
        };
        let link = match self.by_key.get(&o.peer_link_key).copied() {
            Some(l) => l,
            None => match self.new_link(now, o.peer_link_key, via, false) {
                Ok(l) => l,
                Err(_) => {
                    self.stats.dropped += 1;
                    return;
                }
            },
        };
        self.expected.insert(o.peer_link_key, now);
        self.set_relayed(now, link, id, o.token);
    }

    /// A relay envelope: forward it as an introducer, or take it as a relayed link's datagram.
    pub(super) fn on_envelope(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let Some((token, inner)) = datagram::parse_relay_envelope(data) else {
            self.stats.dropped += 1;
            return;
        };
        if let Some(e) = self.relay_table.get_mut(&token) {
            let src_ok = self.links.get(&e.link).map(|l| l.endpoint) == Some(from);
            if !src_ok || !e.rate.allow(now, 1000, RELAYED_LINK_RATE) {
                self.stats.dropped += 1;
                return;
            }
            e.last = now;
            let other = e.other;
            let dst = match self.relay_table.get_mut(&other) {
                Some(o) => {
                    o.last = now;
                    self.links.get(&o.link).map(|l| (l.endpoint, l.local))
                }
                None => None,
            };
            let Some((dst, src)) = dst else {
                self.stats.dropped += 1;
                return;
            };
            // Only the token changes: the introducer sees WireGuard ciphertext, nothing else.
            let mut out = self.take_buf();
            datagram::emit_relay_envelope(other, inner, &mut out);
            self.stats.datagrams_out += 1;
            self.stats.relayed_datagrams += 1;
            self.transmits.push_back(Transmit {
                dst,
                src,
                data: out,
            });
            return;
        }
        if let Some(id) = self.relayed_tokens.get(&token).copied() {
            let via = self.links.get(&id).and_then(|l| l.relay).map(|r| r.via);
            if via != Some(from) {
                self.stats.dropped += 1;
                return;
            }
            self.feed_via(now, id, from, inner, true);
            return;
        }
        self.stats.dropped += 1;
    }

    /// Whether NAT traversal needs this link kept: it carries relayed links (as introducer or
    /// endpoint), or its peer is one of our introducers.
    pub(super) fn nat_uses(&self, id: LinkId) -> bool {
        if self.relay_table.values().any(|e| e.link == id)
            || self
                .links
                .values()
                .any(|l| l.relay.is_some_and(|r| r.via_link == id))
        {
            return true;
        }
        let ident = self.links.get(&id).and_then(|l| l.identity);
        match (ident, &self.own_record) {
            (Some(i), Some(r)) => r.fields().introducers.iter().any(|c| c.identity == i),
            _ => false,
        }
    }
}
