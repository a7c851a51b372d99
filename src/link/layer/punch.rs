//! Hole punching (docs/protocol.md 13.2): dials to relays behind NAT through their introducers,
//! simultaneous opens, and the introducer's side of a PUNCH_REQUEST.

use rand::Rng;
use std::net::SocketAddr;

use crate::budget::Charge;
use crate::link::nat::{
    MAX_PUNCHES, NAT_ENTRY_COST, PUNCH_DURATION_MS, PUNCH_PROBE_AT_MS, PUNCH_REINIT_MS,
    PUNCH_REQUEST_RATE, PUNCH_TRIES,
};
use crate::link::noise::{NoiseOut, NOISE_BUF_LEN};
use crate::time::Instant;
use crate::wire::link::{parse_target, MsgType, PunchNotify};
use crate::wire::record::Contact;

use super::link::Link;
use super::rpc::{Rpc, LINK_RPC_TIMEOUT_MS};
use super::{LinkId, LinkLayer};

/// A dial to a relay behind NAT: punch through its introducers.
pub(super) struct PunchDial {
    pub(super) target: [u8; 32],
    pub(super) introducers: Vec<Contact>,
    pub(super) tries: u8,
    pub(super) waits: u8,
    pub(super) next: Instant,
    pub(super) relay_asked: bool,
}

/// A running simultaneous open on one link.
pub(super) struct Punch {
    pub(super) endpoints: Vec<SocketAddr>,
    pub(super) until: Instant,
    pub(super) next: Instant,
    /// The initiation being repeated, and when it was made: the same bytes go out every
    /// interval (a fresh one each `PUNCH_REINIT_MS`), so a response to any copy completes it.
    pub(super) init: Vec<u8>,
    pub(super) init_at: Instant,
    pub(super) started: Instant,
    /// Steps of [`PUNCH_PROBE_AT_MS`] done.
    pub(super) probes: usize,
    pub(super) _charge: Charge,
}

impl LinkLayer {
    /// Drives dials to NATed relays: ask an introducer for a punch, in turn, a few times.
    pub(super) fn run_dials(&mut self, now: Instant) {
        let keys: Vec<[u8; 32]> = self.dials.keys().copied().collect();
        for key in keys {
            let Some(id) = self.by_key.get(&key).copied() else {
                self.dials.remove(&key);
                continue;
            };
            if self.links.get(&id).is_some_and(|l| l.session.established()) {
                self.dials.remove(&key);
                continue;
            }
            let Some(d) = self.dials.get(&key) else {
                continue;
            };
            if now < d.next || self.punches.contains_key(&id) {
                continue;
            }
            if d.tries >= PUNCH_TRIES || d.introducers.is_empty() {
                if !d.relay_asked {
                    // Fall back to a relayed link through an introducer we are linked to.
                    let il = d.introducers.iter().find_map(|c| self.link_to(&c.identity));
                    let target = d.target;
                    if let Some(il) = il {
                        if let Some(d) = self.dials.get_mut(&key) {
                            d.relay_asked = true;
                            d.next = now + 4 * LINK_RPC_TIMEOUT_MS;
                        }
                        tracing::debug!(link = id.0, "punching failed: asking for a relayed link");
                        self.send_rpc(
                            now,
                            il,
                            Rpc::Relay { target_key: key },
                            MsgType::RelayRequest,
                            &target,
                        );
                        continue;
                    }
                }
                tracing::debug!(link = id.0, "punching gave up");
                self.dials.remove(&key);
                self.remove_link(id, true);
                continue;
            }
            let n = d.introducers.len();
            let Some(intro) = d.introducers.get(usize::from(d.tries) % n).copied() else {
                continue;
            };
            let target = d.target;
            let il = self.link_to(&intro.identity);
            let Some(d) = self.dials.get_mut(&key) else {
                continue;
            };
            match il {
                Some(il) => {
                    d.tries += 1;
                    d.next = now + PUNCH_DURATION_MS + LINK_RPC_TIMEOUT_MS / 4;
                    self.send_rpc(
                        now,
                        il,
                        Rpc::Punch { target_key: key },
                        MsgType::PunchRequest,
                        &target,
                    );
                }
                None => {
                    // Link to the introducer first (it is directly reachable).
                    d.waits += 1;
                    if d.waits > 4 {
                        d.tries += 1;
                        d.waits = 0;
                    }
                    d.next = now + 2 * LINK_RPC_TIMEOUT_MS;
                    if intro.link_key != key {
                        let _ = self.connect_direct(now, intro.link_key, intro.endpoint);
                    }
                }
            }
        }
    }

    pub(super) fn start_punch(&mut self, now: Instant, id: LinkId, endpoints: Vec<SocketAddr>) {
        if endpoints.is_empty() || self.punches.len() >= MAX_PUNCHES {
            self.stats.dropped += 1;
            return;
        }
        let Some(charge) = self.budget.try_charge(NAT_ENTRY_COST) else {
            self.stats.dropped += 1;
            return;
        };
        if let Some(l) = self.links.get_mut(&id) {
            if let Some(e) = endpoints.first() {
                l.endpoint = *e;
            }
        }
        self.stats.punches += 1;
        for e in &endpoints {
            self.note_recent(e.ip(), now + PUNCH_DURATION_MS);
        }
        self.punches.insert(
            id,
            Punch {
                endpoints,
                until: now + PUNCH_DURATION_MS,
                next: now,
                init: Vec::new(),
                init_at: Instant::ZERO,
                started: now,
                probes: 0,
                _charge: charge,
            },
        );
        self.run_punches(now);
    }

    /// Re-sends handshake initiations to every endpoint of every running punch.
    pub(super) fn run_punches(&mut self, now: Instant) {
        if self.punches.is_empty() {
            return;
        }
        let ids: Vec<LinkId> = self.punches.keys().copied().collect();
        for id in ids {
            let Some(p) = self.punches.get_mut(&id) else {
                continue;
            };
            // Done once the session is up and the peer was heard directly since the punch
            // began (a relayed link being upgraded hears it through the relay all along).
            let done = self
                .links
                .get(&id)
                .map(|l| l.session.established() && l.last_rx > p.started && l.relay.is_none());
            match done {
                None => {
                    self.punches.remove(&id);
                    continue;
                }
                Some(true) => {
                    self.punches.remove(&id);
                    self.stats.punched_links += 1;
                    if let Some(l) = self.links.get_mut(&id) {
                        l.punched_at = Some(now);
                    }
                    continue;
                }
                Some(false) => {}
            }
            if now >= p.until {
                self.punches.remove(&id);
                let key = self.links.get(&id).map(|l| l.peer_key);
                // The dial (if we asked) decides whether to try again; a punch we were told
                // about just ends (an upgrade of a live relayed link leaves it as it was).
                let live = self.links.get(&id).is_some_and(|l| l.session.established());
                if !live && key.is_some_and(|k| !self.dials.contains_key(&k)) {
                    self.remove_link(id, false);
                }
                continue;
            }
            if now < p.next {
                continue;
            }
            p.probes += 1;
            // After the last step the punch only waits for the peer until it ends.
            p.next = PUNCH_PROBE_AT_MS
                .get(p.probes)
                .map_or(p.until, |at| p.started + *at);
            let fresh = p.init.is_empty() || now.saturating_since(p.init_at) >= PUNCH_REINIT_MS;
            if fresh {
                let mut buf = std::mem::take(&mut self.scratch);
                buf.resize(NOISE_BUF_LEN, 0);
                if let Some(l) = self.links.get_mut(&id) {
                    l.handshake_sent = now;
                    if let NoiseOut::Send(b) = l.session.initiate(&mut buf, true) {
                        p.init.clear();
                        p.init.extend_from_slice(b);
                        p.init_at = now;
                    }
                }
                self.scratch = buf;
            }
            if let Some(l) = self.links.get_mut(&id) {
                l.last_tx = now;
            }
            let (endpoints, init) = (p.endpoints.clone(), p.init.clone());
            if !init.is_empty() {
                for ep in endpoints {
                    // Over all punches, whoever asked for them: a stranger named as an endpoint
                    // gets a bounded number of datagrams per window (issue #19).
                    if self.punch_caps.allow(now, ep, &self.budget) {
                        self.push_transmit(ep, None, &init);
                    } else {
                        self.stats.punch_capped += 1;
                    }
                }
            }
        }
    }

    /// As an introducer: tell both sides to punch (section 13.2).
    pub(super) fn on_punch_request(&mut self, now: Instant, id: LinkId, rpc_id: u64, p: &[u8]) {
        let target = match parse_target(p) {
            Ok(t) => t,
            Err(e) => return self.malformed(now, id, &e.to_string()),
        };
        let allowed = self
            .links
            .get_mut(&id)
            .is_some_and(|l| l.limits.punch.allow(now, 1000, PUNCH_REQUEST_RATE));
        if !allowed || !self.cfg.relay {
            self.stats.dropped += 1;
            return;
        }
        // Only endpoints we observed ourselves: where each side's authenticated datagrams come
        // from on its direct link to us. The endpoints in a record are self-signed claims;
        // forwarding one would let a requester aim the target's punches at any third party
        // (issue #19). A side we reach only through a relay has no endpoint we saw: "failed".
        let observed = |l: &Link| l.relay.is_none().then_some(l.endpoint);
        let t = self.link_to(&target).filter(|t| *t != id);
        let pair = self.links.get(&id).zip(t.and_then(|t| self.links.get(&t)));
        let Some((a, t, ea, et)) = pair.and_then(|(a, t)| Some((a, t, observed(a)?, observed(t)?)))
        else {
            // No live direct link to the target: "failed".
            let failed = PunchNotify {
                peer: target,
                peer_link_key: [0; 32],
                endpoints: Vec::new(),
                attempt_id: 0,
            };
            let _ = self.send_frame(now, id, MsgType::PunchNotify, rpc_id, &failed.emit());
            return;
        };
        let attempt_id: u64 = self.rng.gen();
        let to_a = PunchNotify {
            peer: target,
            peer_link_key: t.peer_key,
            endpoints: vec![et],
            attempt_id,
        };
        let to_t = PunchNotify {
            peer: a.identity.unwrap_or([0; 32]),
            peer_link_key: a.peer_key,
            endpoints: vec![ea],
            attempt_id,
        };
        let tid = t.id;
        let fresh: u64 = self.rng.gen_range(1..u64::MAX);
        self.stats.introductions += 1;
        let _ = self.send_frame(now, tid, MsgType::PunchNotify, fresh, &to_t.emit());
        let _ = self.send_frame(now, id, MsgType::PunchNotify, rpc_id, &to_a.emit());
    }

    pub(super) fn on_punch_notify(&mut self, now: Instant, id: LinkId, rpc_id: u64, p: &[u8]) {
        let n = match PunchNotify::parse(p) {
            Ok(n) => n,
            Err(e) => return self.malformed(now, id, &e.to_string()),
        };
        let answer = self
            .links
            .get_mut(&id)
            .and_then(|l| l.rpcs.remove(&rpc_id))
            .map(|pending| pending.rpc);
        if let Some(Rpc::Punch { target_key }) = answer {
            // The answer to our request.
            let link = self.by_key.get(&target_key).copied();
            match link {
                Some(link) if !n.endpoints.is_empty() && n.peer_link_key == target_key => {
                    self.start_punch(now, link, n.endpoints);
                }
                _ => {
                    // Failed: the next introducer soon.
                    if let Some(d) = self.dials.get_mut(&target_key) {
                        d.next = now + LINK_RPC_TIMEOUT_MS / 2;
                    }
                }
            }
            return;
        }
        // Unsolicited: an introducer tells us someone wants to link to us.
        let from_relay = self.links.get_mut(&id).is_some_and(|l| {
            l.is_relay
                && l.identity.is_some()
                && l.limits.punch_notify.allow(now, 1000, PUNCH_REQUEST_RATE)
        });
        if !from_relay || n.endpoints.is_empty() || n.peer_link_key == self.link_public {
            self.stats.dropped += 1;
            return;
        }
        let Some(first) = n.endpoints.first().copied() else {
            return;
        };
        let link = match self.by_key.get(&n.peer_link_key).copied() {
            // Even over a session we think is up: the peer asking for a punch means it lost it
            // (a new handshake on a live session is just a rekey).
            Some(l) => l,
            None => {
                if self.punches.len() >= MAX_PUNCHES {
                    self.stats.dropped += 1;
                    return;
                }
                match self.new_link(now, n.peer_link_key, first, true) {
                    Ok(l) => l,
                    Err(_) => {
                        self.stats.dropped += 1;
                        return;
                    }
                }
            }
        };
        self.expected.insert(n.peer_link_key, now);
        self.start_punch(now, link, n.endpoints);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::MemoryBudget;
    use crate::crypto::Randomness;
    use crate::link::nat::{PUNCH_CAP_PER_ENDPOINT, PUNCH_CAP_PER_IP, PUNCH_CAP_WINDOW_MS};
    use crate::link::{LinkConfig, LinkKeys};
    use ed25519_dalek::SigningKey;
    use x25519_dalek::StaticSecret;

    /// Issue #19 item 4, a hostile introducer: a relay we are linked to sends PUNCH_NOTIFYs as
    /// fast as we act on them, each for a new made-up peer, naming a victim's endpoints (one
    /// port, then many ports of one IP). Every datagram we send to the victim's IP is counted.
    #[test]
    fn a_hostile_introducer_gets_few_datagrams_sent_to_a_victim() {
        let now0: Instant = Instant::from_unix_ms(1_800_000_000_000);
        let keys = LinkKeys {
            identity: SigningKey::from_bytes(&[1; 32]),
            link: StaticSecret::from([2; 32]),
            onion_public: [3; 32],
        };
        let cfg = LinkConfig {
            advertise: vec!["198.18.0.1:7412".parse().unwrap()],
            ..LinkConfig::default()
        };
        let budget = MemoryBudget::new(64 << 20);
        let mut l = LinkLayer::new(cfg, keys, budget, Randomness::simulated([4; 32]), now0);
        let relay: SocketAddr = "198.18.0.2:7412".parse().unwrap();
        let id = l.new_link(now0, [5; 32], relay, true).unwrap();
        if let Some(link) = l.links.get_mut(&id) {
            link.is_relay = true;
            link.identity = Some([6; 32]);
        }
        let victim: SocketAddr = "198.18.250.9:7412".parse().unwrap();
        let count = |l: &mut LinkLayer| {
            let mut n = 0u64;
            while let Some(t) = l.poll_transmit() {
                n += u64::from(t.dst.ip() == victim.ip());
            }
            n
        };
        // One notify: one punch's schedule, not one datagram per 100 ms for 5 s.
        let mut now = now0;
        let mut sent = 0;
        let mut notifies = 0u64;
        let mut notify = |l: &mut LinkLayer, now: Instant, endpoints: Vec<SocketAddr>| {
            notifies += 1;
            let mut peer_link_key = [9u8; 32];
            peer_link_key[..8].copy_from_slice(&notifies.to_be_bytes());
            let n = PunchNotify {
                peer: [8; 32],
                peer_link_key,
                endpoints,
                attempt_id: notifies,
            };
            l.on_punch_notify(now, id, 1_000 + notifies, &n.emit());
        };
        notify(&mut l, now, vec![victim]);
        while now < now0 + PUNCH_DURATION_MS + 1_000 {
            l.run_punches(now);
            sent += count(&mut l);
            now += 10;
        }
        println!("one notify: {sent} datagrams to the victim");
        assert_eq!(sent, PUNCH_PROBE_AT_MS.len() as u64);
        // A minute of notifies at the most we act on, one endpoint: the per-endpoint cap (in a
        // fresh window: fixed windows let twice the cap through across a boundary).
        now = now0 + PUNCH_CAP_WINDOW_MS;
        let start = now;
        let mut sent = 0;
        while now < start + PUNCH_CAP_WINDOW_MS - 1_000 {
            if (now - start) % 500 == 0 {
                notify(&mut l, now, vec![victim]);
            }
            l.run_punches(now);
            sent += count(&mut l);
            now += 10;
        }
        println!("a minute at one endpoint: {sent} datagrams to the victim");
        assert!(sent <= u64::from(PUNCH_CAP_PER_ENDPOINT), "{sent}");
        assert!(l.stats.punch_capped > 0);
        // A minute of notifies naming ever new ports of the victim's IP: the per-IP cap.
        now = start + PUNCH_CAP_WINDOW_MS;
        let start = now;
        let mut sent = 0;
        let mut port = 1000u16;
        while now < start + PUNCH_CAP_WINDOW_MS - 1_000 {
            if (now - start) % 500 == 0 {
                port += 2;
                let eps = vec![
                    SocketAddr::new(victim.ip(), port),
                    SocketAddr::new(victim.ip(), port + 1),
                ];
                notify(&mut l, now, eps);
            }
            l.run_punches(now);
            sent += count(&mut l);
            now += 10;
        }
        println!("a minute at many ports: {sent} datagrams to the victim");
        assert!(sent <= u64::from(PUNCH_CAP_PER_IP), "{sent}");
    }
}
