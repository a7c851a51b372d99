//! DHT frames over links (docs/protocol.md 12.1): the link layer carries them between relays,
//! rate-limits them per neighbour, and closes links dialled only for the DHT once idle.

use std::net::SocketAddr;

use crate::time::{Instant, Millis};
use crate::wire::link::MsgType;
use crate::wire::record::{Contact, FLAG_DHT};

use super::{LinkError, LinkEvent, LinkId, LinkLayer};

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
    pub fn connect_dht(
        &mut self,
        now: Instant,
        peer_key: [u8; 32],
        endpoint: SocketAddr,
    ) -> Result<LinkId, LinkError> {
        let existed = self.by_key.contains_key(&peer_key);
        if !existed {
            self.stats.dht_dials += 1;
            if self.view.by_link_key(&peer_key).is_none() {
                self.stats.dht_dials_unknown += 1;
            }
        }
        let id = self.connect(now, peer_key, endpoint)?;
        if !existed {
            if let Some(l) = self.links.get_mut(&id) {
                l.dht_only = true;
            }
        }
        Ok(id)
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
