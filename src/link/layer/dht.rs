//! DHT frames over links (docs/protocol.md 12.1): the link layer carries them between relays,
//! rate-limits them per neighbour, and closes links dialled only for the DHT once idle.

use crate::time::{Instant, Millis};
use crate::wire::link::MsgType;
use crate::wire::record::{Contact, FLAG_DHT};

use super::punch::PunchDial;
use super::{LinkError, LinkEvent, LinkId, LinkLayer};
use crate::link::nat::PUNCH_TRIES;

/// DHT requests a neighbour may send per second (docs/protocol.md 15, `DHT_REQUEST_RATE`).
pub const DHT_REQUEST_RATE: u32 = 50;
/// DHT STOREs a neighbour may send per second (`DHT_STORE_RATE`).
pub const DHT_STORE_RATE: u32 = 10;
/// Byte 1 of a DHT message is its type; 5 is STORE (12.2). The link layer peeks at it only to
/// rate-limit, the DHT parses the message.
pub(super) const DHT_TYPE_STORE: u8 = 5;
/// A link dialed only to carry DHT requests is closed after this long without DHT requests or
/// cells: a relay's lookups touch dozens of contacts, and keeping a link to each would multiply
/// every node's links (and their timers and keepalives) for a request or two each.
pub const DHT_LINK_IDLE_MS: Millis = 30_000;
/// How long a plain handshake to a DHT contact missing from the view runs alone before the
/// relay that named the contact is asked to introduce us (a public contact answers well
/// within it, and a punch request costs the introducer's rate limit).
pub const DHT_VIA_DELAY_MS: Millis = 500;

impl LinkLayer {
    /// Sends a DHT_REQUEST (or, `response`, a DHT_RESPONSE) frame on a link that completed
    /// HELLO with a relay. The link counts as in use, so it is not closed as idle.
    pub fn send_dht(
        &mut self,
        now: Instant,
        link: LinkId,
        rpc_id: u64,
        response: bool,
        data: &[u8],
    ) -> Result<(), LinkError> {
        match self.links.get_mut(&link) {
            Some(l) if l.state.ready() && l.identity.is_some() => l.last_cell = now,
            _ => return Err(LinkError::NoLink),
        }
        let t = if response {
            MsgType::DhtResponse
        } else {
            MsgType::DhtRequest
        };
        self.send_frame(now, link, t, rpc_id, data)
    }

    /// Dials a DHT contact like [`LinkLayer::connect`]; a link this creates is closed again
    /// after `DHT_LINK_IDLE_MS` without DHT requests, unless it came to carry cells.
    ///
    /// A contact whose record is not in our view may sit behind NAT, whose NAT drops a plain
    /// handshake. `via`, the relay that named it in a lookup, is linked to us and answered from
    /// a routing table its links fill, so it is likely linked to the contact: unless the
    /// handshake is up within `DHT_VIA_DELAY_MS`, we ask `via` for a punch and then for a
    /// relayed link, as for a NATed relay in the view (docs/protocol.md 13.2).
    pub fn connect_dht(
        &mut self,
        now: Instant,
        to: &Contact,
        via: Option<&Contact>,
    ) -> Result<LinkId, LinkError> {
        let peer_key = to.link_key;
        let existed = self.by_key.contains_key(&peer_key);
        if !existed && self.recently_dead(&peer_key, now) {
            // It stopped answering our PINGs lately: a new handshake would go unanswered for
            // the whole of `DHT_LINK_WAIT_MS`, and the lookup path waiting on it with it (a
            // service's descriptor publication right after two relays died took 8 s). The
            // request fails at once instead; a peer that came back links to us itself.
            self.stats.dht_dials_dead += 1;
            return Err(LinkError::NoLink);
        }
        let known = self.view.by_link_key(&peer_key).is_some();
        if !existed {
            self.stats.dht_dials += 1;
            if !known {
                self.stats.dht_dials_unknown += 1;
            }
        }
        let id = self.connect(now, peer_key, to.endpoint)?;
        if existed {
            return Ok(id);
        }
        if let Some(l) = self.links.get_mut(&id) {
            l.dht_only = true;
        }
        let via = via
            .filter(|v| !known && v.link_key != peer_key && v.identity != to.identity)
            .filter(|v| self.link_to(&v.identity).is_some());
        if let Some(v) = via {
            if !self.dials.contains_key(&peer_key) {
                self.stats.dht_dials_via += 1;
                self.dials.insert(
                    peer_key,
                    PunchDial {
                        target: to.identity,
                        introducers: vec![*v],
                        // Its NAT class is unknown: one punch, then the relayed link.
                        tries: PUNCH_TRIES - 1,
                        waits: 0,
                        next: now + DHT_VIA_DELAY_MS,
                        relay_asked: false,
                    },
                );
            }
        }
        Ok(id)
    }

    /// Whether a link to `peer_key` is being set up: a link exists that has not completed
    /// HELLO with a relay (a handshake, a punch or a relayed link under way).
    pub fn dialing(&self, peer_key: &[u8; 32]) -> bool {
        self.by_key
            .get(peer_key)
            .and_then(|id| self.links.get(id))
            .is_some_and(|l| !(l.state.ready() && l.identity.is_some()))
    }

    /// Closes links dialed for the DHT that carried nothing for `DHT_LINK_IDLE_MS`.
    pub(super) fn close_idle_dht_links(&mut self, now: Instant) {
        let mut idle: Vec<LinkId> = self
            .links
            .values()
            .filter(|l| l.dht_only && l.state.ready())
            .filter(|l| {
                let since = l.last_cell.max(l.established_at.unwrap_or(l.created));
                now.saturating_since(since) >= DHT_LINK_IDLE_MS
            })
            .map(|l| l.id)
            .collect();
        // In link order, so that a simulation with a fixed seed repeats itself.
        idle.sort_unstable();
        for id in idle {
            if !self.nat_uses(id) {
                tracing::trace!(link = id.0, "closing an idle DHT link");
                self.close(now, id, 0);
            }
        }
    }

    /// DHT contacts among our links: peers past HELLO whose record carries `FLAG_DHT`
    /// (docs/protocol.md 12.1: only these enter a routing table).
    pub fn dht_contacts(&self) -> impl Iterator<Item = (LinkId, Contact)> + '_ {
        self.links
            .values()
            .filter(|l| l.state.ready() && l.peer_flags & FLAG_DHT != 0)
            .filter_map(|l| {
                Some((
                    l.id,
                    Contact {
                        identity: l.identity?,
                        link_key: l.peer_key,
                        endpoint: l.peer_endpoint?,
                    },
                ))
            })
    }

    /// A DHT frame from a neighbour: only relays speak the DHT (12.1); requests are
    /// rate-limited per link, STOREs more tightly. The DHT parses the message.
    pub(super) fn on_dht_frame(
        &mut self,
        now: Instant,
        id: LinkId,
        response: bool,
        rpc_id: u64,
        p: &[u8],
    ) {
        let Some(l) = self.links.get_mut(&id) else {
            return;
        };
        let allowed = l.identity.is_some()
            && (response
                || (l.limits.dht.allow(now, 1000, DHT_REQUEST_RATE)
                    && (p.get(1) != Some(&DHT_TYPE_STORE)
                        || l.limits.dht_store.allow(now, 1000, DHT_STORE_RATE))));
        if !allowed {
            self.stats.dht_dropped += 1;
            return;
        }
        self.stats.dht_frames += 1;
        let mut data = self.take_buf();
        data.extend_from_slice(p);
        self.events.push_back(LinkEvent::Dht {
            link: id,
            rpc_id,
            response,
            data,
        });
    }
}
