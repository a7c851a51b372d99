//! Datagrams in and out of a link's WireGuard session: handshakes (ours and strangers'),
//! decryption with roaming, and framing of what we send (docs/protocol.md 4.1).

use std::net::SocketAddr;

use crate::link::noise::{NoiseOut, Unsolicited, NOISE_BUF_LEN};
use crate::time::Instant;
use crate::wire::datagram::{self};
use crate::wire::link::{self as frame, MsgType, LINK_FRAME_MAX};

use super::routing::new_buf;
use super::{LinkError, LinkId, LinkLayer, Transmit};

pub(super) fn wrap_envelope(data: &mut Vec<u8>, token: u64) {
    let mut head = [0u8; datagram::RELAY_ENVELOPE_HEADER];
    head[..4].copy_from_slice(&datagram::RELAY_ENVELOPE_TYPE.to_le_bytes());
    head[4..].copy_from_slice(&token.to_be_bytes());
    data.splice(0..0, head);
}

impl LinkLayer {
    pub(super) fn initiate(&mut self, id: LinkId, now: Instant, force: bool) {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.resize(NOISE_BUF_LEN, 0);
        let mut send = None;
        if let Some(l) = self.links.get_mut(&id) {
            l.handshake_sent = now;
            l.attempts += 1;
            l.last_tx = now;
            if let NoiseOut::Send(b) = l.session.initiate(&mut buf, force) {
                send = Some((l.endpoint, b.len()));
            }
        }
        if let Some((dst, n)) = send {
            if let Some(b) = buf.get(..n) {
                let b = b.to_vec();
                self.link_out(id, dst, &b);
            }
        }
        self.scratch = buf;
    }

    pub(super) fn on_initiation(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.resize(NOISE_BUF_LEN, 0);
        let verdict = match self.sim_crypto {
            Some(t) => t.identify(&self.link_public, data),
            None => self.responder.identify(from.ip(), data, &mut buf),
        };
        match verdict {
            Unsolicited::CookieReply(n) => {
                self.stats.cookies += 1;
                if let Some(b) = buf.get(..n) {
                    let b = b.to_vec();
                    self.push_transmit(from, self.rx_src(), &b);
                }
                self.scratch = buf;
            }
            Unsolicited::Invalid => {
                self.stats.dropped += 1;
                self.scratch = buf;
            }
            Unsolicited::Initiation { peer } => {
                self.scratch = buf;
                let id = match self.by_key.get(&peer).copied() {
                    Some(id) => id,
                    None => {
                        let expected = self.expected.contains_key(&peer);
                        if !self.cfg.relay && !expected {
                            // A non-relay only talks to peers it chose (protocol.md 4.1).
                            self.stats.dropped += 1;
                            return;
                        }
                        match self.new_link(now, peer, from, false) {
                            Ok(id) => id,
                            Err(_) => {
                                self.stats.dropped += 1;
                                return;
                            }
                        }
                    }
                };
                self.feed(now, id, from, data);
            }
        }
    }

    /// Hands a datagram to a link's session and processes what comes out. Steady state (data
    /// datagrams carrying frames) allocates nothing: the plaintext lands in a reused buffer and
    /// anything to send goes out in pooled buffers.
    pub(super) fn feed(&mut self, now: Instant, id: LinkId, from: SocketAddr, data: &[u8]) {
        self.feed_via(now, id, from, data, false);
    }

    pub(super) fn feed_via(
        &mut self,
        now: Instant,
        id: LinkId,
        from: SocketAddr,
        data: &[u8],
        relayed: bool,
    ) {
        let mut rx = std::mem::take(&mut self.rx_scratch);
        rx.resize(NOISE_BUF_LEN, 0);
        let mut frame_len = None;
        let mut expired = false;
        let mut newly_established = false;
        let rx_local = self.rx_local;
        let src = rx_local.map(|l| l.ip());
        let mut learned = None;
        if let Some(l) = self.links.get_mut(&id) {
            let was = l.session.established();
            let mut authenticated = false;
            let mut sent = 0u64;
            let relay = if relayed { l.relay } else { None };
            let wrap = |d: &mut Vec<u8>, b: &[u8]| match relay {
                Some(r) => datagram::emit_relay_envelope(r.token, b, d),
                None => d.extend_from_slice(b),
            };
            match l.session.decapsulate(from.ip(), data, &mut rx) {
                NoiseOut::Send(b) => {
                    authenticated = true;
                    let mut d = self.pool.pop().unwrap_or_else(new_buf);
                    wrap(&mut d, b);
                    self.transmits.push_back(Transmit {
                        dst: from,
                        src,
                        data: d,
                    });
                    sent += 1;
                    while let NoiseOut::Send(b) = l.session.flush(&mut rx) {
                        let mut d = self.pool.pop().unwrap_or_else(new_buf);
                        wrap(&mut d, b);
                        self.transmits.push_back(Transmit {
                            dst: from,
                            src,
                            data: d,
                        });
                        sent += 1;
                    }
                }
                // boringtun decrypts into the start of the buffer.
                NoiseOut::Frame(f) => {
                    authenticated = true;
                    frame_len = Some(f.len());
                }
                NoiseOut::Done => authenticated = l.session.established(),
                NoiseOut::Expired => expired = true,
                NoiseOut::Refused(why) => {
                    tracing::trace!(link = id.0, why, "datagram refused");
                    self.stats.refused += 1;
                }
            }
            if authenticated {
                if !relayed {
                    // Roaming: the peer's endpoint is wherever its authenticated packets come
                    // from. A relayed link that hears its peer directly is direct from now on,
                    // once that proves both directions: a handshake response (our initiation
                    // got there) or data (the peer already gets ours). An initiation alone
                    // proves only one.
                    let two_way = matches!(data.first(), Some(2) | Some(4));
                    if l.relay.is_none() || two_way {
                        if let Some(r) = l.relay.take() {
                            tracing::debug!(link = id.0, "relayed link upgraded to direct");
                            self.relayed_tokens.remove(&r.token);
                            self.stats.upgraded_links += 1;
                        }
                        l.endpoint = from;
                        if src.is_some() {
                            l.local = src;
                        }
                        learned = rx_local;
                    }
                }
                l.last_rx = now;
                // A handshake initiation from a peer that was up: it rekeys, or it lost the
                // link and dials again (the HELLO that asks tells which, hello.rs).
                if data.first() == Some(&1) && l.peer_was_up {
                    l.peer_new_session = true;
                }
            }
            if !was && l.session.established() {
                l.established_at = Some(now);
                newly_established = true;
            }
            if sent > 0 {
                l.last_tx = now;
                self.stats.datagrams_out += sent;
            }
        }
        if let Some(local) = learned {
            self.learn_local(now, local);
        }
        if expired {
            self.rx_scratch = rx;
            self.remove_link(id, true);
            return;
        }
        if newly_established {
            if self.punches.remove(&id).is_some() {
                self.stats.punched_links += 1;
                if let Some(l) = self.links.get_mut(&id) {
                    l.punched_at = Some(now);
                }
            }
            if let Some(k) = self.links.get(&id).map(|l| l.peer_key) {
                self.dials.remove(&k);
            }
            self.send_hello(now, id, false);
        }
        if let Some(n) = frame_len {
            self.on_frame(now, id, rx.get(..n).unwrap_or(&[]));
        }
        self.rx_scratch = rx;
    }

    pub(super) fn send_frame(
        &mut self,
        now: Instant,
        id: LinkId,
        t: MsgType,
        rpc_id: u64,
        payload: &[u8],
    ) -> Result<(), LinkError> {
        let mut framebuf = [0u8; LINK_FRAME_MAX];
        let n = frame::emit(&mut framebuf, t, rpc_id, payload).ok_or(LinkError::TooLarge)?;
        let plain = framebuf.get(..n).ok_or(LinkError::TooLarge)?;
        let Some(l) = self.links.get_mut(&id) else {
            return Err(LinkError::NoLink);
        };
        l.last_tx = now;
        let mut data = self.pool.pop().unwrap_or_else(new_buf);
        data.resize(NOISE_BUF_LEN, 0);
        let len = match l.session.encapsulate(plain, &mut data) {
            NoiseOut::Send(b) => Some(b.len()),
            _ => None,
        };
        match len {
            Some(len) => {
                data.truncate(len);
                let (mut dst, mut src) = (l.endpoint, l.local);
                if let Some(r) = l.relay {
                    wrap_envelope(&mut data, r.token);
                    (dst, src) = (r.via, r.via_local);
                }
                self.stats.datagrams_out += 1;
                self.transmits.push_back(Transmit { dst, src, data });
            }
            // Queued inside the session until the handshake completes (or refused).
            None => self.recycle(data),
        }
        Ok(())
    }

    pub(super) fn send_keepalive(&mut self, now: Instant, id: LinkId) {
        let mut data = self.pool.pop().unwrap_or_else(new_buf);
        data.resize(NOISE_BUF_LEN, 0);
        let Some(l) = self.links.get_mut(&id) else {
            self.recycle(data);
            return;
        };
        let len = match l.session.encapsulate(&[], &mut data) {
            NoiseOut::Send(b) => Some(b.len()),
            _ => None,
        };
        match len {
            Some(len) => {
                l.last_tx = now;
                data.truncate(len);
                let (mut dst, mut src) = (l.endpoint, l.local);
                if let Some(r) = l.relay {
                    wrap_envelope(&mut data, r.token);
                    (dst, src) = (r.via, r.via_local);
                }
                self.stats.datagrams_out += 1;
                self.transmits.push_back(Transmit { dst, src, data });
            }
            None => self.recycle(data),
        }
    }
}
