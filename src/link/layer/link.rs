//! One link: the per-neighbour record and its timers (handshake retries, HELLO, request
//! timeouts, liveness PINGs, keepalives, PEX).

use rand::Rng;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use crate::budget::Charge;
use crate::link::nat::{behind_nat, RateWindow, LINK_KEEPALIVE_MS, NAT_KEEPALIVE_MS};
use crate::link::noise::{NoiseOut, Session, NOISE_BUF_LEN};
use crate::time::{Instant, Millis};
use crate::wire::link::MsgType;
use crate::wire::record::NatClass;

use super::discovery::{PEX_INTERVAL_MS, PEX_MAX, VIEW_WANTED};
use super::hello::{HELLO_RETRY_MS, HELLO_TIMEOUT_MS};
use super::relayed::RelayPath;
use super::rpc::{Pending, Rpc, LINK_RPC_RETRIES, LINK_RPC_TIMEOUT_MS};
use super::{LinkId, LinkLayer};

/// Liveness ping on links with no traffic for this long: a dead neighbour on an idle link shows
/// within this plus the PING's tries (~11 s). It must stay above the NATed side's keepalive
/// period (`NAT_KEEPALIVE_MS`) minus the tries, so a NAT that lost its state (conntrack flush)
/// is repaired by that keepalive before the link is given up.
pub const PING_INTERVAL_MS: Millis = 5_000;
/// A link we sent on that has received nothing for this long is pinged without waiting for
/// `PING_INTERVAL_MS` (its death then shows within this plus the PING's timeouts).
pub const SILENT_PING_MS: Millis = 1_000;
/// The timeout of each try of such a PING: a killed neighbour is noticed ~4 s after it died
/// (every flow through it stalls until then). Only a link that stays silent through all tries
/// is dropped, so a lost PONG on a busy link costs nothing.
pub const SILENT_PING_TIMEOUT_MS: Millis = 1_000;
/// How long a peer whose link died of unanswered PINGs counts as dead for extensions (unless it
/// links to us again first).
pub const DEAD_PEER_MS: Millis = 30_000;
/// Such peers remembered at most.
pub(super) const MAX_DEAD_PEERS: usize = 1024;

/// CLOSE reason: we gave the link up as dead (its PINGs went unanswered), circuits and all.
pub(super) const CLOSE_DEAD: u8 = 4;

/// A handshake is resent after this long without an answer.
pub const HANDSHAKE_RETRY_MS: Millis = 1_000;
/// Handshake attempts before a dial gives up.
pub const HANDSHAKE_ATTEMPTS: u8 = 4;

/// Where a link is in coming up, past its WireGuard handshake (docs/protocol.md 4.5). The
/// handshake itself is the session's (`Session::established`); a link carries cells, DHT
/// frames and requests only once both HELLOs are through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LinkState {
    /// No HELLO either way yet.
    Handshake,
    /// Ours went out, last at `hello_at` (resent every `HELLO_RETRY_MS` until the peer's
    /// arrives); the peer's has not come.
    HelloSent { hello_at: Instant },
    /// The peer's came before we sent ours (we answer at once).
    HelloReceived,
    /// Both HELLOs are through. Ours last went out at `hello_at` (again when our record
    /// changes, or when the peer asks).
    Ready { hello_at: Instant },
}

impl LinkState {
    /// The peer's HELLO arrived: the link is up for the layers above.
    pub(super) fn ready(self) -> bool {
        matches!(self, LinkState::HelloReceived | LinkState::Ready { .. })
    }

    /// We sent HELLO.
    pub(super) fn hello_sent(self) -> bool {
        self.hello_at().is_some()
    }

    /// When we last sent HELLO.
    pub(super) fn hello_at(self) -> Option<Instant> {
        match self {
            LinkState::HelloSent { hello_at } | LinkState::Ready { hello_at } => Some(hello_at),
            LinkState::Handshake | LinkState::HelloReceived => None,
        }
    }

    /// We sent HELLO at `now`.
    pub(super) fn on_hello_sent(&mut self, now: Instant) {
        *self = match *self {
            LinkState::Handshake | LinkState::HelloSent { .. } => {
                LinkState::HelloSent { hello_at: now }
            }
            LinkState::HelloReceived | LinkState::Ready { .. } => {
                LinkState::Ready { hello_at: now }
            }
        };
    }

    /// The peer's HELLO arrived.
    pub(super) fn on_hello_received(&mut self) {
        *self = match *self {
            LinkState::Handshake => LinkState::HelloReceived,
            LinkState::HelloSent { hello_at } => LinkState::Ready { hello_at },
            s => s,
        };
    }
}

/// One neighbour link: its session, how far it came up, and what its timers need.
pub(super) struct Link {
    pub(super) id: LinkId,
    pub(super) session: Session,
    /// The peer's X25519 link key (authenticated by the handshake).
    pub(super) peer_key: [u8; 32],
    /// Where the peer's authenticated datagrams last came from (roaming).
    pub(super) endpoint: SocketAddr,
    /// Our address the peer's authenticated datagrams arrive at; we answer from it.
    pub(super) local: Option<IpAddr>,
    /// Our session index (the receiver index peers put in their datagrams, shifted).
    pub(super) local_index: u32,
    /// We dialled it (else the peer did).
    pub(super) dialed: bool,
    pub(super) created: Instant,
    /// When the session first came up.
    pub(super) established_at: Option<Instant>,
    /// The handshake retry timer: our last initiation and how many we sent.
    pub(super) handshake_sent: Instant,
    pub(super) attempts: u8,
    /// How far HELLO got.
    pub(super) state: LinkState,
    /// The peer's relay identity and whether its record is a relay's (from its HELLO).
    pub(super) identity: Option<[u8; 32]>,
    pub(super) is_relay: bool,
    /// Last authenticated datagram from the peer, last datagram to it.
    pub(super) last_rx: Instant,
    pub(super) last_tx: Instant,
    /// Smoothed PING round trip.
    pub(super) rtt_ms: Option<f64>,
    /// The peer sent something only a peer that has our HELLO sends (a cell, a request): it
    /// holds state for this link, so a HELLO that asks again means it lost that state (4.7).
    pub(super) peer_was_up: bool,
    /// The peer began a new WireGuard session (sent a handshake initiation) after it showed it
    /// was up: only then can a HELLO that asks mean it lost its side. A HELLO that asks from the
    /// session it was up in is one it sent before it had ours, arriving late or twice (4.7).
    pub(super) peer_new_session: bool,
    /// Malformed frames since `malformed_since` (a minute's window).
    pub(super) malformed: u32,
    pub(super) malformed_since: Instant,
    /// Our last PEX request on it, our last PEX answer on it.
    pub(super) last_pex: Instant,
    pub(super) pex_served: Instant,
    /// Our last EXIT_POLICY_REQUEST on it, our last answer to one on it.
    pub(super) last_policy_ask: Instant,
    pub(super) policy_served: Instant,
    /// Last use: a cell either way or a DHT frame we sent (what arms the silence PING).
    pub(super) last_cell: Instant,
    /// Last `LinkLayer::mark_in_use` (circuits run over it): keeps it, arms nothing.
    pub(super) held_at: Instant,
    /// Our requests waiting for an answer, by rpc id.
    pub(super) rpcs: BTreeMap<u64, Pending>,
    /// The NAT class and first endpoint of the peer's record.
    pub(super) peer_nat: NatClass,
    pub(super) peer_endpoint: Option<SocketAddr>,
    /// When a punch made it direct (at first contact, or upgrading a relayed link).
    pub(super) punched_at: Option<Instant>,
    /// Relayed through an introducer (section 13.4).
    pub(super) relay: Option<RelayPath>,
    /// When to try again to make a relayed link direct, and how many tries so far (13.4).
    pub(super) upgrade_next: Instant,
    pub(super) upgrade_tries: u8,
    /// Bytes both ways on the link at the last try, to tell a busy link from an idle one.
    pub(super) upgrade_bytes: u64,
    /// Our last PING on it.
    pub(super) last_ping: Instant,
    /// Flags of the peer's record (0 for clients).
    pub(super) peer_flags: u8,
    /// Dialed for DHT requests and not used for anything else (yet).
    pub(super) dht_only: bool,
    /// What the peer may ask of us, per second or minute.
    pub(super) limits: Limits,
    pub(super) _charge: Charge,
}

/// Rate windows of the requests a neighbour may send us, each bounded per link.
#[derive(Default)]
pub(super) struct Limits {
    /// RELAY_REQUEST and unsolicited RELAY_OFFER.
    pub(super) relay: RateWindow,
    /// PUNCH_REQUEST.
    pub(super) punch: RateWindow,
    /// Unsolicited PUNCH_NOTIFY.
    pub(super) punch_notify: RateWindow,
    /// PROBE_REQUEST and PROBE_FORWARD.
    pub(super) probe: RateWindow,
    /// DHT requests.
    pub(super) dht: RateWindow,
    /// DHT STOREs.
    pub(super) dht_store: RateWindow,
    /// EXIT_POLICY messages (each new one costs a signature check).
    pub(super) exit_policy: RateWindow,
}

/// What a link's handshake timer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HandshakeTimer {
    Wait,
    /// Send another initiation.
    Retry,
    /// The peer never answered: drop the link.
    GiveUp,
}

/// What a link's HELLO timer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HelloTimer {
    Wait,
    /// Ours or theirs was lost: resend and ask for theirs.
    Resend,
    /// No HELLO within `HELLO_TIMEOUT_MS` of the handshake: close the link.
    GiveUp,
}

/// What keeps a NAT mapping open on a link (section 13.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keepalive {
    /// Behind NAT: a PING, whose PONG also tells us at once when our NAT rebound and gave us a
    /// new public port, and which shows every neighbour where we went.
    Ping,
    /// An empty WireGuard keepalive.
    Empty,
}

/// A link's own timers: each says what is due at `now`, the layer does it (sans-IO, like the
/// session's `update_timers`).
impl Link {
    /// Handshake retries on our clock (boringtun retries on the wall clock too; in virtual time
    /// only this one runs). For a link whose session is not up and that no punch drives.
    pub(super) fn handshake_timer(&self, now: Instant) -> HandshakeTimer {
        // 1 s, 2 s, 4 s between attempts: a lost initiation costs a second, not five, and a
        // dead peer is given up after about 7 s.
        let wait = HANDSHAKE_RETRY_MS << self.attempts.saturating_sub(1).min(4);
        if now.saturating_since(self.handshake_sent) < wait {
            HandshakeTimer::Wait
        } else if self.dialed && self.attempts < HANDSHAKE_ATTEMPTS {
            HandshakeTimer::Retry
        } else {
            HandshakeTimer::GiveUp
        }
    }

    /// HELLO until the peer's arrives, for a link whose session is up.
    pub(super) fn hello_timer(&self, now: Instant) -> HelloTimer {
        if self.state.ready() {
            HelloTimer::Wait
        } else if self
            .established_at
            .is_some_and(|t| now.saturating_since(t) >= HELLO_TIMEOUT_MS)
        {
            HelloTimer::GiveUp
        } else if self
            .state
            .hello_at()
            .is_some_and(|at| now.saturating_since(at) >= HELLO_RETRY_MS)
        {
            HelloTimer::Resend
        } else {
            HelloTimer::Wait
        }
    }

    /// Request timeouts: pushes the requests to send again onto `retry` (their ids and frames)
    /// and forgets those out of tries. Returns, if a PING ran out of tries, the time it waited in
    /// all (its tries' timeouts).
    pub(super) fn expire_rpcs(
        &mut self,
        now: Instant,
        retry: &mut Vec<(u64, Vec<u8>)>,
    ) -> Option<Millis> {
        let mut failed_ping: Option<Millis> = None;
        let mut gone = Vec::new();
        for (rid, p) in self.rpcs.iter_mut() {
            if now >= p.deadline {
                if p.retries > 0 {
                    p.retries -= 1;
                    p.deadline = now + p.timeout;
                    retry.push((*rid, p.frame.clone()));
                } else {
                    gone.push(*rid);
                    if matches!(p.rpc, Rpc::Ping { .. }) {
                        let waited = p.timeout * (u64::from(LINK_RPC_RETRIES) + 1);
                        failed_ping = Some(failed_ping.map_or(waited, |w| w.min(waited)));
                    }
                }
            }
        }
        for rid in gone {
            self.rpcs.remove(&rid);
        }
        failed_ping
    }

    /// Whether the peer sent nothing for `waited`. Dead only if a PING went unanswered *and*
    /// nothing else arrived meanwhile: on a lossy path a lost PONG is not a dead neighbour.
    pub(super) fn silent_for(&self, now: Instant, waited: Millis) -> bool {
        now.saturating_since(self.last_rx) >= waited
    }

    /// A PING of ours is waiting for its PONG.
    pub(super) fn pinging(&self) -> bool {
        self.rpcs
            .values()
            .any(|p| matches!(p.rpc, Rpc::Ping { .. }))
    }

    /// A liveness PING due on a link that completed HELLO, with each try's timeout.
    pub(super) fn liveness_ping(&self, now: Instant, pinging: bool) -> Option<Millis> {
        // A link we keep sending on that has gone quiet is checked at once: a killed neighbour
        // sends nothing, and circuits through it should not wait the idle interval to close.
        let quiet = now.saturating_since(self.last_rx);
        // Cells (not keepalives or PINGs): a link that only keeps a NAT mapping open may be
        // silent for a few seconds after the NAT lost its state (the NATed side's next
        // keepalive restores it); dropping it then would cost every circuit on it.
        let unanswered = self.last_cell > self.last_rx
            && quiet >= SILENT_PING_MS
            && now.saturating_since(self.last_ping) >= SILENT_PING_MS;
        if !pinging && unanswered {
            Some(SILENT_PING_TIMEOUT_MS)
        } else if !pinging && quiet >= PING_INTERVAL_MS {
            Some(LINK_RPC_TIMEOUT_MS)
        } else {
            None
        }
    }

    /// A keepalive due to hold NAT mappings (section 13.5): behind NAT (`natted`) a PING on a
    /// fixed period, else an empty keepalive on links that need one (punched, or the peer is
    /// behind NAT).
    pub(super) fn keepalive(&self, now: Instant, natted: bool, pinging: bool) -> Option<Keepalive> {
        if natted {
            (!pinging && now.saturating_since(self.last_ping) >= NAT_KEEPALIVE_MS)
                .then_some(Keepalive::Ping)
        } else {
            ((self.punched_at.is_some() || behind_nat(self.peer_nat))
                && now.saturating_since(self.last_tx) >= LINK_KEEPALIVE_MS)
                .then_some(Keepalive::Empty)
        }
    }

    /// When [`LinkLayer::link_timers`] next has something to do for this link: the earliest
    /// of the timers above, exactly (each is "at least X since Y", so its deadline is Y + X).
    /// `None` while a punch or dial drives the link. A deadline that passes with nothing to do
    /// (the state moved on meanwhile) costs one wake-up; one that comes too late is bounded by
    /// the layer's once-a-second housekeeping, so a caller that forgets to look again after a
    /// change loses at most a second, not a timer.
    pub(super) fn deadline(
        &self,
        natted: bool,
        view_small: bool,
        punched: bool,
    ) -> Option<Instant> {
        if !self.session.established() {
            if punched {
                return None;
            }
            let wait = HANDSHAKE_RETRY_MS << self.attempts.saturating_sub(1).min(4);
            return Some(self.handshake_sent + wait);
        }
        if !self.state.ready() {
            let give_up = self.established_at.map(|t| t + HELLO_TIMEOUT_MS);
            let resend = self.state.hello_at().map(|t| t + HELLO_RETRY_MS);
            return earliest(give_up, resend);
        }
        let mut d = self.rpcs.values().map(|p| p.deadline).min();
        let pinging = self.pinging();
        if !pinging {
            // `liveness_ping`: a link we sent cells on that has gone quiet, else an idle one.
            // Not before the cell that armed it: a link idle for long is pinged at the first
            // cell, not at a deadline already past (which would read as a stale one).
            if self.last_cell > self.last_rx {
                let at = (self.last_rx.max(self.last_ping) + SILENT_PING_MS).max(self.last_cell);
                d = earliest(d, Some(at));
            }
            d = earliest(d, Some(self.last_rx + PING_INTERVAL_MS));
        }
        if natted {
            if !pinging {
                d = earliest(d, Some(self.last_ping + NAT_KEEPALIVE_MS));
            }
        } else if self.punched_at.is_some() || behind_nat(self.peer_nat) {
            d = earliest(d, Some(self.last_tx + LINK_KEEPALIVE_MS));
        }
        if self.is_relay {
            let interval = if view_small {
                PEX_INTERVAL_MS
            } else {
                30 * PEX_INTERVAL_MS
            };
            d = earliest(d, Some(self.last_pex + interval));
            // `ask_exit_policies`, at the end of the link's timers.
            d = earliest(d, Some(self.last_policy_ask + PEX_INTERVAL_MS));
        }
        d
    }

    /// A PEX request due to a relay: every `PEX_INTERVAL_MS` while the view is small
    /// (`view_small`), thirty times less often after.
    pub(super) fn pex_due(&self, now: Instant, view_small: bool) -> bool {
        let interval = if view_small {
            PEX_INTERVAL_MS
        } else {
            30 * PEX_INTERVAL_MS
        };
        self.is_relay && now.saturating_since(self.last_pex) >= interval
    }
}

/// The earlier of two optional instants.
pub(super) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl LinkLayer {
    /// Runs one link's timers: the session's, then the link's own (handshake, HELLO, requests,
    /// liveness, keepalive, PEX), and does what they ask.
    /// boringtun's (`update_timers`) run on every call: it cannot say when it is next due, so it
    /// relies on housekeeping's period at the latest.
    pub(super) fn link_timers(&mut self, now: Instant, id: LinkId) {
        // The session's own timers.
        let mut buf = std::mem::take(&mut self.scratch);
        buf.resize(NOISE_BUF_LEN, 0);
        let mut send = None;
        let mut expired = false;
        if let Some(l) = self.links.get_mut(&id).filter(|_| !self.virtual_time) {
            match l.session.update_timers(&mut buf) {
                NoiseOut::Send(b) => send = Some((l.endpoint, b.to_vec())),
                NoiseOut::Expired => expired = true,
                _ => {}
            }
        }
        self.scratch = buf;
        if let Some((dst, b)) = send {
            self.link_out(id, dst, &b);
        }
        if expired {
            self.remove_link(id, true);
            return;
        }
        let Some(l) = self.links.get(&id) else { return };
        if !l.session.established() {
            if self.dials.contains_key(&l.peer_key) || self.punches.contains_key(&id) {
                // Punching owns this link's handshakes and lifetime.
                return;
            }
            match l.handshake_timer(now) {
                HandshakeTimer::Wait => {}
                HandshakeTimer::Retry => self.initiate(id, now, true),
                HandshakeTimer::GiveUp => self.remove_link(id, true),
            }
            return;
        }
        if !l.state.ready() {
            match l.hello_timer(now) {
                HelloTimer::Wait => {}
                HelloTimer::Resend => self.send_hello(now, id, true),
                HelloTimer::GiveUp => self.close(now, id, 1),
            }
            return;
        }
        let mut retry: Vec<(u64, Vec<u8>)> = Vec::new();
        let failed_ping = match self.links.get_mut(&id) {
            Some(l) => l.expire_rpcs(now, &mut retry),
            None => None,
        };
        let silent = failed_ping.is_some_and(|waited| {
            self.links
                .get(&id)
                .is_some_and(|l| l.silent_for(now, waited))
        });
        if silent {
            tracing::debug!(link = id.0, "no answer to PING: link is dead");
            if let Some(key) = self.links.get(&id).map(|l| l.peer_key) {
                if self.dead_peers.len() >= MAX_DEAD_PEERS {
                    self.dead_peers.sweep(now);
                }
                if self.dead_peers.len() < MAX_DEAD_PEERS {
                    self.dead_peers.insert(key, now + DEAD_PEER_MS);
                }
            }
            // Tell the peer, if it is only slow: else it keeps the link, and the circuits over
            // it, which are gone here, for good (4.7).
            let _ = self.send_frame(now, id, MsgType::Close, 0, &[CLOSE_DEAD]);
            self.remove_link(id, true);
            return;
        }
        for (rid, f) in retry {
            if let (Some(t), Some(payload)) = (
                f.first().and_then(|b| MsgType::try_from(*b).ok()),
                f.get(1..),
            ) {
                let _ = self.send_frame(now, id, t, rid, payload);
            }
        }
        let Some(l) = self.links.get(&id) else { return };
        let pinging = l.pinging();
        if let Some(timeout) = l.liveness_ping(now, pinging) {
            let nonce: u64 = self.rng.gen();
            self.ping_timeout(now, id, nonce, timeout);
        }
        let Some(l) = self.links.get(&id) else { return };
        match l.keepalive(now, behind_nat(self.nat), pinging) {
            Some(Keepalive::Ping) => self.ping(now, id),
            Some(Keepalive::Empty) => self.send_keepalive(now, id),
            None => {}
        }
        let Some(l) = self.links.get(&id) else { return };
        if l.pex_due(now, self.view.len() < VIEW_WANTED) {
            if let Some(l) = self.links.get_mut(&id) {
                l.last_pex = now;
            }
            self.send_rpc(now, id, Rpc::Pex, MsgType::PexRequest, &[PEX_MAX, 0]);
        }
        self.ask_exit_policies(now, id);
    }
}

#[cfg(test)]
mod tests {
    use super::LinkState;
    use crate::time::Instant;

    #[test]
    fn hello_progress_either_order() {
        let mut s = LinkState::Handshake;
        assert!(!s.ready() && !s.hello_sent());
        s.on_hello_sent(Instant::from_unix_ms(5));
        assert_eq!(
            s,
            LinkState::HelloSent {
                hello_at: Instant::from_unix_ms(5)
            }
        );
        assert!(!s.ready());
        s.on_hello_sent(Instant::from_unix_ms(7));
        assert_eq!(s.hello_at(), Some(Instant::from_unix_ms(7)));
        s.on_hello_received();
        assert_eq!(
            s,
            LinkState::Ready {
                hello_at: Instant::from_unix_ms(7)
            }
        );

        // The peer's first: up at once, ours still owed.
        let mut t = LinkState::Handshake;
        t.on_hello_received();
        assert!(t.ready() && !t.hello_sent());
        t.on_hello_sent(Instant::from_unix_ms(9));
        assert_eq!(
            t,
            LinkState::Ready {
                hello_at: Instant::from_unix_ms(9)
            }
        );
        // Another HELLO from the peer (a record change) changes nothing here.
        t.on_hello_received();
        assert_eq!(
            t,
            LinkState::Ready {
                hello_at: Instant::from_unix_ms(9)
            }
        );
    }
}
