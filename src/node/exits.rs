//! Exits joined to the node (docs/decisions.md "Exits"): at an exit, `EXIT_PACKET`s from
//! circuits that end here go up to the daemon's `gnx0` path and answers go back on their circuit;
//! at a client, one circuit to an exit carries the packets gn0 routes outside the overlay.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::circuit::layer::{CircEvent, CircId, Purpose};
use crate::circuit::path::{Hop, PathContext, PathKind, Target};
use crate::exit::choose::{ChooseError, Destination, ExitCandidate, StickyExits};
use crate::exit::client::accept_from_exit;
use crate::exit::gateway::{EXIT_SESSION_LINGER_MS, EXIT_SESSION_MAX_AGE_MS, RESOLVER_V4};
use crate::exit::packet::{prohibited, IpView};
use crate::exit::session::{AckStatus, SessionAck, SessionRequest};
use crate::time::{Instant, Millis};
use crate::wire::record::{RelayRecord, FLAG_EXIT};
use crate::wire::relay::RelayCommand;

use super::{Node, NodeEvent};

/// Wait after a failed exit circuit before building another.
pub const EXIT_RETRY_MS: Millis = 1_000;
/// Packets a group keeps while its circuit is built (a new connection's SYN, a DNS query), sent
/// when it is ready instead of waiting for the sender's retransmission.
pub const EXIT_PENDING_MAX: usize = 16;
/// Circuits to exits at most, over every (isolation group, exit) pair; the least recently used
/// goes first.
pub const EXIT_CIRCUITS_MAX: usize = 32;
/// An unanswered `EXIT_SESSION` is sent again after this long ...
pub const EXIT_SESSION_RESEND_MS: Millis = 1_000;
/// ... and a circuit sends at most this many (the exit answers up to four); then it carries
/// packets without a session (an exit that does not answer: its connections end with the
/// circuit, as before sessions).
pub const EXIT_SESSION_TRIES: u8 = 3;

/// A group's exit session (protocol.md 7.4): the key the exit binds the inner address to, kept
/// across circuits to the same exit, never shared by two groups or two exits.
struct ClientSession {
    key: zeroize::Zeroizing<[u8; 32]>,
    opened: Instant,
    /// The exit acknowledged it once: later circuits resume it.
    established: bool,
}

impl std::fmt::Debug for ClientSession {
    // The key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSession")
            .field("opened", &self.opened)
            .field("established", &self.established)
            .finish_non_exhaustive()
    }
}

/// Why a packet did not go to an exit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExitSendError {
    /// `[outbound]` is off.
    #[error("no outbound traffic configured")]
    Off,
    /// The exit circuit is being built (the packet is dropped; TCP sends it again).
    #[error("the exit circuit is not ready yet")]
    NotReady,
    /// The circuit layer refused it.
    #[error("the exit circuit refused the packet: {0}")]
    Circuit(String),
    /// No known exit lets the destination out (answered at once with ICMP, not sent).
    #[error("refused: {0}")]
    NoExit(ChooseError),
    /// Not an IP packet an exit could carry.
    #[error("not a packet for an exit")]
    Malformed,
}

/// One isolation group's circuit to one exit.
#[derive(Debug, Default)]
struct GroupCircuit {
    circ: Option<CircId>,
    ready: bool,
    /// Last packet sent, for eviction at [`EXIT_CIRCUITS_MAX`].
    used: Instant,
    retry_at: Instant,
    last_error: Option<String>,
    /// Packets waiting for the circuit.
    pending: Vec<Vec<u8>>,
    /// The exit session, outliving the circuit.
    session: Option<ClientSession>,
    /// `EXIT_SESSION`s sent on the current circuit, the last one when, and the request.
    attach: Option<(u8, Instant, SessionRequest)>,
}

/// The node's exit state, both roles.
#[derive(Debug, Default)]
pub(crate) struct NodeExits {
    /// We are an exit: `EXIT_PACKET`s ending here go up.
    serving: bool,
    /// We send traffic to exits (`[outbound] routes` or `socks`).
    outbound: bool,
    /// A pinned exit.
    pin: Option<[u8; 32]>,
    /// Circuits by (isolation group, exit) (group 1: routes and SOCKS without a user name);
    /// groups never share a circuit, and a group has one per exit its destinations need.
    groups: BTreeMap<(u8, [u8; 32]), GroupCircuit>,
    /// Which exit each (group, destination) used last (one site sees one exit address).
    sticky: StickyExits,
    /// Why group 1 has no circuit, for status.
    last_error: Option<String>,
    /// Next try at group 1's first circuit.
    first_try: Instant,
    /// Packets answered at the client because no known exit lets them out.
    pub(crate) refused_no_exit: u64,
    /// `EXIT_PACKET`s that arrived here while we are not an exit.
    pub(crate) refused_not_exit: u64,
    /// Answers from our exit that failed the client's checks.
    pub(crate) refused_answers: u64,
}

/// The client's exit circuit, for status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitCircuitInfo {
    /// The exit's relay key (hex), once chosen.
    pub exit: Option<String>,
    /// Built and carrying packets.
    pub ready: bool,
    /// Why no circuit could be built, if so.
    pub error: Option<String>,
    /// Isolation groups with a ready circuit (group 1 and SOCKS user names).
    pub groups: usize,
    /// Exits whose signed policy is known and bound to their relay record.
    #[serde(default)]
    pub policies: usize,
    /// Packets refused at once because no known exit lets their destination out.
    #[serde(default)]
    pub refused: u64,
}

impl NodeExits {
    pub(super) fn owns(&self, id: CircId) -> bool {
        self.group_of(id).is_some()
    }

    fn group_of(&self, id: CircId) -> Option<(u8, [u8; 32])> {
        self.groups
            .iter()
            .find(|(_, g)| g.circ == Some(id))
            .map(|(k, _)| *k)
    }

    /// Group 1's circuit used last (ready ones first), for status.
    fn main_circuit(&self) -> Option<(&[u8; 32], &GroupCircuit)> {
        self.groups
            .iter()
            .filter(|((g, _), _)| *g == 1)
            .max_by_key(|(_, c)| (c.ready, c.used))
            .map(|((_, k), c)| (k, c))
    }
}

impl Node {
    /// Serve as an exit: `EXIT_PACKET`s on circuits ending here are reported as
    /// [`NodeEvent::ExitPacket`] (the daemon's `gnx0` path decides on them).
    pub fn set_exit_role(&mut self, on: bool) {
        self.exits.serving = on;
    }

    /// Send traffic to exits: each destination goes to an exit whose published policy lets it
    /// out (the pinned one, if any), chosen under the path rules and kept for a while.
    pub fn set_outbound(&mut self, on: bool, pin: Option<[u8; 32]>) {
        self.exits.outbound = on;
        self.exits.pin = pin;
    }

    /// The client's exit circuit, when outbound traffic is on.
    pub fn exit_circuit_info(&self, now: Instant) -> Option<ExitCircuitInfo> {
        let g = self.exits.main_circuit();
        let mut ready: Vec<u8> = self
            .exits
            .groups
            .iter()
            .filter(|(_, c)| c.ready)
            .map(|((g, _), _)| *g)
            .collect();
        ready.dedup();
        self.exits.outbound.then(|| ExitCircuitInfo {
            exit: g.map(|(k, _)| crate::crypto::keys::hex(k)),
            ready: g.is_some_and(|(_, c)| c.ready),
            error: g
                .and_then(|(_, c)| c.last_error.clone())
                .or_else(|| self.exits.last_error.clone()),
            groups: ready.len(),
            policies: self
                .link
                .view()
                .iter()
                .filter(|r| self.link.exit_policy(r.identity(), now).is_some())
                .count(),
            refused: self.exits.refused_no_exit,
        })
    }

    /// The exit for destination `d` of `group`: the one it used lately if its policy still lets
    /// `d` out, else one chosen by [`crate::exit::choose::choose`]. The exit's virtual resolver
    /// is not a destination on the internet: any exit the group already uses answers it.
    fn exit_for(
        &mut self,
        now: Instant,
        group: u8,
        d: &Destination,
    ) -> Result<[u8; 32], ChooseError> {
        let own = self.link.identity();
        let rules = self.path_rules();
        let own_endpoints = self.own_endpoints();
        let avoid: [&[std::net::SocketAddr]; 1] = [&own_endpoints];
        let view = self.link.view();
        let exits: Vec<(
            &RelayRecord,
            Option<&crate::wire::exit_policy::ExitPolicyRecord>,
        )> = view
            .iter()
            .filter(|r| r.fields().flags & FLAG_EXIT != 0 && *r.identity() != own)
            .map(|r| (r, self.link.exit_policy(r.identity(), now)))
            .collect();
        let candidates: Vec<ExitCandidate> = exits
            .iter()
            .filter_map(|(record, p)| p.map(|policy| ExitCandidate { record, policy }))
            .collect();
        let usable = |k: &[u8; 32], d: &Destination| {
            crate::exit::choose::eligible(&candidates, d, &rules, &avoid, now)
                .iter()
                .any(|c| c.record.identity() == k)
        };
        let resolver = d.ip == IpAddr::V4(RESOLVER_V4);
        if let Some(k) = self.exits.sticky.get(u32::from(group), d.ip, now) {
            if resolver || usable(&k, d) {
                self.exits.sticky.remember(u32::from(group), d.ip, k, now);
                return Ok(k);
            }
        }
        let chosen = match self.exits.pin {
            // A pinned exit whose policy we have not learned is tried: it refuses itself.
            Some(pin)
                if (resolver || candidates.iter().all(|c| c.record.identity() != &pin))
                    && exits.iter().any(|(r, _)| r.identity() == &pin) =>
            {
                Ok(pin)
            }
            None if resolver => {
                let used = self
                    .exits
                    .groups
                    .keys()
                    .find(|(g, _)| *g == group)
                    .map(|(_, k)| *k);
                use rand::seq::SliceRandom;
                used.or_else(|| {
                    candidates
                        .choose(&mut self.rng)
                        .map(|c| *c.record.identity())
                })
                .ok_or(ChooseError::NoExit)
            }
            pin => crate::exit::choose::choose(
                &candidates,
                d,
                &rules,
                &avoid,
                pin.as_ref(),
                now,
                &mut self.rng,
            )
            .map(|r| *r.identity()),
        }?;
        self.exits
            .sticky
            .remember(u32::from(group), d.ip, chosen, now);
        Ok(chosen)
    }

    /// Whether some exit would carry `d` for isolation group `group` (SOCKS asks before it
    /// connects, to answer "not allowed by ruleset" rather than the ICMP refusal's "host
    /// unreachable"). The exit chosen is remembered, so the connection's packets go to it.
    pub fn exit_allows(&mut self, now: Instant, group: u8, d: &Destination) -> bool {
        self.exits.outbound && self.exit_for(now, group, d).is_ok()
    }

    /// Whether the exit a destination used lately may carry `d` (a site keeps its exit per
    /// address, but another port may need another exit): its policy allows it, or `d` is the
    /// virtual resolver, or it is the pinned exit whose policy we have not learned.
    fn still_allows(&self, k: &[u8; 32], d: &Destination, now: Instant) -> bool {
        match self.link.exit_policy(k, now) {
            _ if d.ip == IpAddr::V4(RESOLVER_V4) => true,
            Some(p) => crate::exit::choose::policy_allows(p.fields(), d),
            None => self.exits.pin == Some(*k),
        }
    }

    /// Answers `p` at once with ICMP "administratively prohibited", as if from its destination.
    fn refuse_exit_packet(&mut self, p: &[u8], v: &IpView) {
        let mut out = self.packet_bufs.pop().unwrap_or_default();
        if prohibited(&mut out, p, v) {
            self.events.push(NodeEvent::ExitAnswer { buf: out });
        } else {
            self.packet_bufs.push(out);
        }
    }

    /// Sends one packet from gn0 of isolation group `group` (as
    /// [`crate::exit::client::for_exit`] says) to that group's exit.
    pub fn send_exit_packet(
        &mut self,
        now: Instant,
        group: u8,
        p: &[u8],
    ) -> Result<(), ExitSendError> {
        if !self.exits.outbound {
            return Err(ExitSendError::Off);
        }
        let v = IpView::parse(p).ok_or(ExitSendError::Malformed)?;
        let d = Destination {
            ip: v.dst,
            proto: v.proto,
            port: v.dst_port(p).unwrap_or(0),
        };
        // The common case, per packet: the destination's exit, with a ready circuit.
        let fast = self
            .exits
            .sticky
            .get(u32::from(group), d.ip, now)
            .filter(|k| self.exits.groups.get(&(group, *k)).is_some_and(|c| c.ready))
            .filter(|k| self.still_allows(k, &d, now));
        if fast.is_some() {
            self.exits.sticky.touch(u32::from(group), d.ip, now);
        }
        let exit = match fast.map_or_else(|| self.exit_for(now, group, &d), Ok) {
            Ok(k) => k,
            Err(e) => {
                self.exits.refused_no_exit += 1;
                self.refuse_exit_packet(p, &v);
                return Err(ExitSendError::NoExit(e));
            }
        };
        let key = (group, exit);
        self.make_room_for(now, key);
        let g = self.exits.groups.entry(key).or_default();
        g.used = now;
        match g.circ {
            Some(id) if g.ready => {
                let r = self
                    .circ
                    .send(id, RelayCommand::ExitPacket, p)
                    .map_err(|e| ExitSendError::Circuit(e.to_string()));
                self.pump(now);
                r
            }
            Some(_) => {
                self.queue_exit_packet(key, p);
                Err(ExitSendError::NotReady)
            }
            None => {
                self.queue_exit_packet(key, p);
                self.build_exit_circuit(now, key);
                self.pump(now);
                Err(ExitSendError::NotReady)
            }
        }
    }

    /// Before a new (group, exit) circuit: at [`EXIT_CIRCUITS_MAX`] the least recently used one
    /// is closed.
    fn make_room_for(&mut self, now: Instant, key: (u8, [u8; 32])) {
        if self.exits.groups.contains_key(&key) || self.exits.groups.len() < EXIT_CIRCUITS_MAX {
            return;
        }
        let Some(old) = self
            .exits
            .groups
            .iter()
            .min_by_key(|(_, g)| g.used)
            .map(|(k, _)| *k)
        else {
            return;
        };
        if let Some(g) = self.exits.groups.remove(&old) {
            if let Some(id) = g.circ {
                self.circ.destroy(now, id);
            }
            for p in g.pending {
                self.recycle_packet(p);
            }
        }
    }

    /// Keeps a copy of `p` until `group`'s circuit is ready (at most [`EXIT_PENDING_MAX`]).
    fn queue_exit_packet(&mut self, key: (u8, [u8; 32]), p: &[u8]) {
        let mut buf = self.packet_bufs.pop().unwrap_or_default();
        let Some(g) = self.exits.groups.get_mut(&key) else {
            return;
        };
        if g.pending.len() < EXIT_PENDING_MAX {
            buf.clear();
            buf.extend_from_slice(p);
            g.pending.push(buf);
        } else {
            self.packet_bufs.push(buf);
        }
    }

    /// Sends an answer from `gnx0` (or a refusal) back on the circuit `slot` that ends here.
    pub fn exit_reply(&mut self, now: Instant, slot: u64, p: &[u8]) -> Result<(), String> {
        let r = self
            .circ
            .reply(slot, RelayCommand::ExitPacket, p)
            .map_err(|e| e.to_string());
        self.pump(now);
        r
    }

    /// When [`Node::exit_timeout`] next acts (its conditions as "since + period"): on the
    /// coarse tick ([`Instant::ZERO`]) while a group that needs a circuit has none, at the resend
    /// of an unanswered `EXIT_SESSION`, at the next try of group 1's first circuit. `None`
    /// when we send nothing to exits.
    pub(super) fn exit_deadline(&self) -> Option<Instant> {
        if !self.exits.outbound {
            return None;
        }
        let mut d: Option<Instant> = None;
        let mut at = |t: Instant| d = Some(d.map_or(t, |x| x.min(t)));
        for ((g, _), c) in &self.exits.groups {
            let lingering = |used: Instant| {
                c.session.as_ref().is_some_and(|s| s.established)
                    && used + EXIT_SESSION_LINGER_MS > self.upper_last
            };
            if c.circ.is_none() && (*g == 1 || lingering(c.used)) {
                at(Instant::ZERO);
            }
            if let Some((_, sent, _)) = &c.attach {
                at(*sent + EXIT_SESSION_RESEND_MS);
            }
        }
        if !self.exits.groups.keys().any(|(g, _)| *g == 1) {
            at(self.exits.first_try);
        }
        d
    }

    /// Timer upkeep: a client with outbound traffic keeps group 1's circuits built, and one to
    /// an exit (the pinned one, else one with a known policy) before any traffic, so the first
    /// connection does not wait for a build.
    pub(super) fn exit_timeout(&mut self, now: Instant) {
        if !self.exits.outbound {
            return;
        }
        // Group 1 always has a circuit; a group with an exit session in use gets its next one
        // at once, so the exit still holds the session (and its connections) when it arrives.
        let keys: Vec<(u8, [u8; 32])> = self
            .exits
            .groups
            .iter()
            .filter(|((g, _), c)| {
                c.circ.is_none()
                    && (*g == 1
                        || c.session.as_ref().is_some_and(|s| {
                            s.established && now.saturating_since(c.used) < EXIT_SESSION_LINGER_MS
                        }))
            })
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            self.build_exit_circuit(now, k);
        }
        let unanswered: Vec<(u8, [u8; 32])> = self
            .exits
            .groups
            .iter()
            .filter(|(_, c)| {
                c.attach
                    .as_ref()
                    .is_some_and(|a| now.saturating_since(a.1) >= EXIT_SESSION_RESEND_MS)
            })
            .map(|(k, _)| *k)
            .collect();
        for k in unanswered {
            self.exit_attach(now, k, true);
        }
        if self.exits.groups.keys().any(|(g, _)| *g == 1) || now < self.exits.first_try {
            return;
        }
        self.exits.first_try = now + EXIT_RETRY_MS;
        let own = self.link.identity();
        let first = match self.exits.pin {
            Some(pin) => Some(pin),
            None => {
                use rand::seq::SliceRandom;
                let known: Vec<[u8; 32]> = self
                    .link
                    .view()
                    .iter()
                    .filter(|r| r.fields().flags & FLAG_EXIT != 0 && *r.identity() != own)
                    .filter(|r| self.link.exit_policy(r.identity(), now).is_some())
                    .map(|r| *r.identity())
                    .collect();
                known.choose(&mut self.rng).copied()
            }
        };
        match first {
            Some(k) => self.build_exit_circuit(now, (1, k)),
            None => {
                self.exits.last_error = Some("no exit with a known policy yet".into());
            }
        }
    }

    /// Builds the circuit of isolation group `key.0` to exit `key.1` (a new path: groups never
    /// share a circuit).
    fn build_exit_circuit(&mut self, now: Instant, key: (u8, [u8; 32])) {
        let g = self.exits.groups.entry(key).or_default();
        if g.circ.is_some() || now < g.retry_at {
            return;
        }
        g.retry_at = now + EXIT_RETRY_MS;
        let own_endpoints = self.own_endpoints();
        let ctx = PathContext {
            view: self.link.view(),
            rules: self.path_rules(),
            own_endpoints: &own_endpoints,
            now,
        };
        let mut error = |e: String| {
            if let Some(g) = self.exits.groups.get_mut(&key) {
                if g.last_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!("cannot build a circuit to an exit: {e}");
                }
                g.last_error = Some(e);
            }
        };
        // Chosen first, then reached like an intro point: a guard that is the exit itself or in
        // its family is passed over for the next one (Tor's guard restriction).
        let target = match ctx.view.get(&key.1) {
            Some(r) if r.fields().flags & FLAG_EXIT != 0 => Target::Relay(Hop::from_record(r)),
            _ => {
                error("the exit is not in the view with the EXIT flag".into());
                return;
            }
        };
        let path = ctx
            .select(PathKind::Client(target), &self.guards, None, &mut self.rng)
            .map_err(|e| e.to_string())
            .and_then(|p| {
                p.hops()
                    .iter()
                    .map(|h| ctx.view.get(&h.identity).cloned())
                    .collect::<Option<Vec<RelayRecord>>>()
                    .ok_or_else(|| "path: a hop left the view".to_string())
            });
        let path = match path {
            Ok(p) => p,
            Err(e) => {
                error(e);
                return;
            }
        };
        let first = path.first().and_then(|r| self.link.link_to(r.identity()));
        let built = self.circ.build(now, Purpose::Exit, path, first);
        if let Some(g) = self.exits.groups.get_mut(&key) {
            match built {
                Ok(id) => {
                    g.circ = Some(id);
                    g.ready = false;
                }
                Err(e) => g.last_error = Some(e.to_string()),
            }
        }
    }

    /// Sends `EXIT_SESSION` on the group's new circuit: a resume when the exit knows the
    /// session, else an open of a fresh one (a new key from the OS generator). `again`: the
    /// last request went unanswered; send it once more.
    fn exit_attach(&mut self, now: Instant, key: (u8, [u8; 32]), again: bool) {
        let Some(g) = self.exits.groups.get_mut(&key) else {
            return;
        };
        let Some(id) = g.circ else {
            return;
        };
        let tries = g.attach.as_ref().map_or(0, |a| a.0);
        if tries >= EXIT_SESSION_TRIES {
            tracing::warn!(
                group = key.0,
                exit = %crate::crypto::keys::fingerprint(&key.1),
                "the exit does not attach a session: its connections end with this circuit"
            );
            self.exit_ready(now, key, false);
            return;
        }
        let req = match (again, g.attach.take()) {
            (true, Some((_, _, req))) => req,
            _ => {
                let fresh = g
                    .session
                    .as_ref()
                    .is_none_or(|s| now.saturating_since(s.opened) >= EXIT_SESSION_MAX_AGE_MS);
                if fresh {
                    let mut k = zeroize::Zeroizing::new([0u8; 32]);
                    rand::RngCore::fill_bytes(&mut self.exit_secrets, &mut k[..]);
                    g.session = Some(ClientSession {
                        key: k,
                        opened: now,
                        established: false,
                    });
                }
                let bind = self
                    .circ
                    .path(id)
                    .and_then(|p| p.len().checked_sub(1))
                    .and_then(|last| self.circ.hop_bind(id, last));
                match (g.session.as_ref(), bind) {
                    (Some(s), Some(b)) if s.established => SessionRequest::resume(&s.key, &b),
                    (Some(s), _) => SessionRequest::open(&s.key),
                    (None, _) => return,
                }
            }
        };
        if let Err(e) = self
            .circ
            .send(id, RelayCommand::ExitSession, &req.to_bytes())
        {
            tracing::debug!("EXIT_SESSION not sent: {e}");
        }
        g.attach = Some((tries + 1, now, req));
        self.pump(now);
    }

    /// The exit's answer to our `EXIT_SESSION`.
    fn exit_on_ack(&mut self, now: Instant, key: (u8, [u8; 32]), ack: SessionAck) {
        let Some(g) = self.exits.groups.get_mut(&key) else {
            return;
        };
        let ours = g
            .attach
            .as_ref()
            .is_some_and(|(_, _, req)| *req.sid() == ack.sid);
        if g.ready || !ours {
            return;
        }
        match ack.status {
            AckStatus::Ok => {
                if let Some(s) = g.session.as_mut() {
                    s.established = true;
                }
                self.exit_ready(now, key, true);
            }
            // The exit forgot the session (expired, restarted) or refused the proof: the old
            // connections are gone either way; a new session keeps the next ones.
            AckStatus::Unknown | AckStatus::Refused | AckStatus::Taken => {
                g.session = None;
                self.exit_attach(now, key, false);
            }
            AckStatus::Full => self.exit_ready(now, key, false),
        }
    }

    /// The group's circuit carries packets now; those kept while it was built and attached go.
    fn exit_ready(&mut self, now: Instant, key: (u8, [u8; 32]), session: bool) {
        let Some(g) = self.exits.groups.get_mut(&key) else {
            return;
        };
        let Some(id) = g.circ else {
            return;
        };
        g.ready = true;
        let resumed = g
            .attach
            .as_ref()
            .is_some_and(|a| matches!(a.2, SessionRequest::Resume { .. }));
        g.attach = None;
        let pending = std::mem::take(&mut g.pending);
        tracing::info!(
            circuit = id.0,
            group = key.0,
            session,
            resumed,
            exit = %crate::crypto::keys::fingerprint(&key.1),
            "circuit to an exit ready"
        );
        for p in pending {
            if let Err(e) = self.circ.send(id, RelayCommand::ExitPacket, &p) {
                tracing::trace!("a packet kept for the exit circuit was lost: {e}");
            }
            self.recycle_packet(p);
        }
        self.pump(now);
    }

    /// An event of our exit circuit.
    pub(super) fn exit_on_circuit_event(&mut self, now: Instant, e: CircEvent) {
        let id = match &e {
            CircEvent::Built { id, .. }
            | CircEvent::Closed { id, .. }
            | CircEvent::Message { id, .. }
            | CircEvent::Extended { id, .. } => *id,
            CircEvent::LastHop { .. } | CircEvent::RelayedClosed { .. } => return,
        };
        let Some(key) = self.exits.group_of(id) else {
            return;
        };
        let group = key.0;
        let Some(g) = self.exits.groups.get_mut(&key) else {
            return;
        };
        match e {
            CircEvent::Built { id, build_ms } => {
                g.last_error = None;
                tracing::debug!(
                    circuit = id.0,
                    build_ms,
                    group,
                    "circuit to an exit built; attaching the exit session"
                );
                self.exit_attach(now, key, false);
            }
            CircEvent::Closed { id, why } => {
                tracing::info!(circuit = id.0, group, why, "circuit to an exit closed");
                g.circ = None;
                g.ready = false;
                g.attach = None;
                g.last_error = Some(why);
                let dropped = std::mem::take(&mut g.pending);
                for p in dropped {
                    self.recycle_packet(p);
                }
            }
            CircEvent::Message { cmd, payload, .. } => {
                if cmd == RelayCommand::ExitSessionAck as u8 {
                    let ack = SessionAck::parse(&payload);
                    self.circ.recycle_payload(payload);
                    match ack {
                        Ok(ack) => self.exit_on_ack(now, key, ack),
                        Err(_) => self.exits.refused_answers += 1,
                    }
                } else if cmd == RelayCommand::ExitPacket as u8 && accept_from_exit(&payload, group)
                {
                    g.used = now;
                    self.events.push(NodeEvent::ExitAnswer { buf: payload });
                } else {
                    self.exits.refused_answers += 1;
                    self.circ.recycle_payload(payload);
                }
            }
            CircEvent::Extended { .. }
            | CircEvent::LastHop { .. }
            | CircEvent::RelayedClosed { .. } => {}
        }
    }

    /// An `EXIT_SESSION` on a circuit that ends here: up to the daemon's gateway with our hop
    /// value, which the proof must be bound to.
    pub(super) fn exit_on_session(&mut self, slot: u64, payload: Vec<u8>) {
        match self.circ.relayed_bind(slot).filter(|_| self.exits.serving) {
            Some(bind) => self.events.push(NodeEvent::ExitSession {
                slot,
                bind,
                buf: payload,
            }),
            None => {
                self.exits.refused_not_exit += 1;
                self.circ.recycle_payload(payload);
            }
        }
    }

    /// Sends the answer to an `EXIT_SESSION` back on circuit `slot`.
    pub fn exit_session_reply(
        &mut self,
        now: Instant,
        slot: u64,
        ack: &SessionAck,
    ) -> Result<(), String> {
        let r = self
            .circ
            .reply(slot, RelayCommand::ExitSessionAck, &ack.to_bytes())
            .map_err(|e| e.to_string());
        self.pump(now);
        r
    }

    /// An `EXIT_PACKET` on a circuit that ends here.
    pub(super) fn exit_on_last_hop(&mut self, slot: u64, payload: Vec<u8>) {
        if self.exits.serving {
            self.events
                .push(NodeEvent::ExitPacket { slot, buf: payload });
        } else {
            self.exits.refused_not_exit += 1;
            self.circ.recycle_payload(payload);
        }
    }

    /// A circuit ending here is gone.
    pub(super) fn exit_on_relayed_closed(&mut self, slot: u64) {
        if self.exits.serving {
            self.events.push(NodeEvent::ExitClosed { slot });
        }
    }
}
