//! Circuits we build (the origin role, DESIGN.md section 6; docs/protocol.md sections 6-8):
//! CREATE and EXTEND progress, relay messages to and from our circuits' last hops, and the
//! build, age and resend timers of our own circuits.

use super::{
    CircAction, CircEvent, CircId, CircuitError, CircuitInfo, CircuitLayer, Purpose, Route,
    CIRCUIT_BUILD_TIMEOUT_MS, CIRC_ID_QUARANTINE_MS, CREATE_RETRIES, CREATE_RETRY_MS,
    EXTEND_RESENDS, EXTEND_RESEND_MS, OWN_CIRCUIT_COST,
};
use crate::budget::Charge;
use crate::circuit::client::ClientError;
use crate::circuit::handshake::HopTarget;
use crate::circuit::replay::ReplayError;
use crate::circuit::ClientCircuit;
use crate::link::LinkId;
use crate::time::Instant;
use crate::wire::cell::{DestroyReason, CELL_LEN};
use crate::wire::record::{LinkSpec, RelayRecord};
use crate::wire::relay::{RelayCommand, EXTEND_LINK_SPEC_LEN, RELAY_PAYLOAD_LEN};

/// Where one of our circuits is in its build.
pub(super) enum OwnState {
    /// Waiting for a link to the first hop.
    Linking,
    /// CREATE or EXTEND sent for hop `next` (0-based).
    Extending {
        next: usize,
    },
    Ready,
}

/// One of our circuits.
pub(super) struct Own {
    pub(super) circ: Option<ClientCircuit>,
    pub(super) path: Vec<RelayRecord>,
    pub(super) link: Option<LinkId>,
    pub(super) circ_id: u32,
    pub(super) state: OwnState,
    pub(super) purpose: Purpose,
    pub(super) started: Instant,
    pub(super) built_at: Option<Instant>,
    /// The CREATE or EXTEND cell in flight, resent identically if unanswered.
    pub(super) setup: Option<Box<[u8; CELL_LEN]>>,
    pub(super) setup_sent: Instant,
    pub(super) setup_retries: u8,
    pub(super) _charge: Charge,
}

impl Own {
    /// When `origin_timeouts` next acts on this circuit: its build timeout or retirement, or the
    /// resend of its CREATE or EXTEND (the same conditions, as "since + period").
    pub(super) fn deadline(&self, max_age: crate::time::Millis) -> Instant {
        let end = match self.built_at {
            None => self.started + CIRCUIT_BUILD_TIMEOUT_MS,
            Some(b) => b + max_age,
        };
        let resend = match (self.link, &self.state) {
            (Some(_), OwnState::Extending { next: 0 }) => (self.setup.is_some()
                && self.setup_retries < CREATE_RETRIES)
                .then(|| self.setup_sent + CREATE_RETRY_MS),
            (Some(_), OwnState::Extending { .. }) => (self.circ.is_some()
                && self.setup_retries < EXTEND_RESENDS)
                .then(|| self.setup_sent + EXTEND_RESEND_MS),
            _ => None,
        };
        resend.map_or(end, |r| r.min(end))
    }
}

impl CircuitLayer {
    /// The link to the first hop of our circuit and the circuit id on it, for tests (a cell a
    /// hostile first hop would pass on travels there).
    pub fn first_hop_route(&self, id: CircId) -> Option<Route> {
        let o = self.own.get(&id)?;
        o.link.map(|l| (l, o.circ_id))
    }

    /// The forward counter `c` the next cell of our circuit will carry, for tests.
    pub fn next_forward_seq(&self, id: CircId) -> Option<u64> {
        self.own
            .get(&id)
            .and_then(|o| o.circ.as_ref())
            .map(ClientCircuit::next_forward_seq)
    }

    /// Our circuits.
    pub fn circuits(&self, now: Instant) -> Vec<CircuitInfo> {
        let mut v: Vec<CircuitInfo> = self
            .own
            .iter()
            .map(|(id, o)| CircuitInfo {
                id: *id,
                hops: o.path.len(),
                purpose: o.purpose,
                age_s: now.saturating_since(o.started) / 1000,
                ready: matches!(o.state, OwnState::Ready),
                build_ms: o.built_at.map(|b| b.saturating_since(o.started)),
            })
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }
    /// Our built circuits of a purpose.
    pub fn ready(&self, purpose: Purpose) -> usize {
        self.own
            .values()
            .filter(|o| o.purpose == purpose && matches!(o.state, OwnState::Ready))
            .count()
    }

    /// Our circuits of a purpose, built or building.
    pub fn count(&self, purpose: Purpose) -> usize {
        self.own.values().filter(|o| o.purpose == purpose).count()
    }

    // ---- our own circuits ----------------------------------------------------------------

    /// Starts building a circuit along `path` (first hop first).
    pub fn build(
        &mut self,
        now: Instant,
        purpose: Purpose,
        path: Vec<RelayRecord>,
        first_hop_link: Option<LinkId>,
    ) -> Result<CircId, CircuitError> {
        if path.is_empty() || path.len() > crate::circuit::MAX_CIRCUIT_HOPS {
            return Err(CircuitError::Path("path: empty or too long".into()));
        }
        let charge = self
            .budget
            .try_charge(OWN_CIRCUIT_COST)
            .ok_or(CircuitError::Limit)?;
        let id = CircId(self.next_own);
        self.next_own += 1;
        let first = path.first().cloned();
        self.own.insert(
            id,
            Own {
                circ: None,
                path,
                link: None,
                circ_id: 0,
                state: OwnState::Linking,
                purpose,
                started: now,
                built_at: None,
                setup: None,
                setup_sent: now,
                setup_retries: 0,
                _charge: charge,
            },
        );
        let linked = first_hop_link
            .filter(|l| self.links.contains_key(l))
            .or_else(|| {
                let ident = first.as_ref().map(|r| *r.identity());
                self.links
                    .iter()
                    .find(|(_, l)| l.identity.is_some() && l.identity == ident)
                    .map(|(id, _)| *id)
            });
        match (linked, first) {
            (Some(link), _) => self.start_create(now, id, link),
            (None, Some(r)) => {
                if let Some(ep) = r.fields().endpoints.first() {
                    self.actions.push_back(CircAction::Connect {
                        link_key: r.fields().link_key,
                        endpoint: *ep,
                    });
                }
            }
            (None, None) => {}
        }
        Ok(id)
    }

    pub(super) fn start_create(&mut self, now: Instant, id: CircId, link: LinkId) {
        let Some(circ_id) = self.alloc_id(link, now) else {
            self.close_own(now, id, "no free circuit id", false);
            return;
        };
        let Some(o) = self.own.get_mut(&id) else {
            return;
        };
        let Some(first) = o.path.first() else { return };
        let target = HopTarget {
            identity: *first.identity(),
            onion_key: first.fields().onion_key,
        };
        let mut cell = [0u8; CELL_LEN];
        match ClientCircuit::create(&mut self.secrets, circ_id, &target, &mut cell) {
            Ok(c) => {
                o.circ = Some(c);
                o.link = Some(link);
                o.circ_id = circ_id;
                o.state = OwnState::Extending { next: 0 };
                o.setup = Some(Box::new(cell));
                o.setup_sent = now;
                o.setup_retries = 0;
                self.own_routes.insert((link, circ_id), id);
                if let Some(i) = self.links.get_mut(&link) {
                    i.circuits += 1;
                }
                self.push_cell(link, cell);
            }
            Err(e) => self.close_own(now, id, &format!("CREATE: {e}"), true),
        }
    }

    pub(super) fn own_created(&mut self, now: Instant, id: CircId, cell: &[u8; CELL_LEN]) {
        let Some(o) = self.own.get_mut(&id) else {
            return;
        };
        if !matches!(o.state, OwnState::Extending { next: 0 }) {
            // A duplicate CREATED (we resent CREATE): the first one already counted.
            self.stats.dropped += 1;
            return;
        }
        let Some(c) = o.circ.as_mut() else { return };
        if let Err(e) = c.on_created(cell) {
            self.close_own(now, id, &format!("CREATED: {e}"), true);
            return;
        }
        self.extend_or_finish(now, id, 1);
    }

    fn extend_or_finish(&mut self, now: Instant, id: CircId, next: usize) {
        let Some(o) = self.own.get_mut(&id) else {
            return;
        };
        if next >= o.path.len() {
            o.state = OwnState::Ready;
            o.setup = None;
            if o.built_at.is_some() {
                let hops = o.path.len();
                self.events.push_back(CircEvent::Extended { id, hops });
                return;
            }
            o.built_at = Some(now);
            let build_ms = now.saturating_since(o.started);
            self.stats.built += 1;
            self.events.push_back(CircEvent::Built { id, build_ms });
            return;
        }
        let Some(target_rec) = o.path.get(next) else {
            return;
        };
        let target = HopTarget {
            identity: *target_rec.identity(),
            onion_key: target_rec.fields().onion_key,
        };
        let spec = match LinkSpec::of_record(target_rec).emit() {
            Ok(s) => s,
            Err(e) => {
                self.close_own(now, id, &format!("link specifier: {e}"), true);
                return;
            }
        };
        let spec: [u8; EXTEND_LINK_SPEC_LEN] = spec;
        let (Some(link), Some(c)) = (o.link, o.circ.as_mut()) else {
            return;
        };
        let mut cell = [0u8; CELL_LEN];
        match c.extend(&mut self.secrets, &target, &spec, &mut cell) {
            Ok(()) => {
                o.state = OwnState::Extending { next };
                o.setup = Some(Box::new(cell));
                o.setup_sent = now;
                o.setup_retries = 0;
                self.push_cell(link, cell);
            }
            Err(e) => self.close_own(now, id, &format!("EXTEND: {e}"), true),
        }
    }

    pub(super) fn own_receive(&mut self, now: Instant, id: CircId, cell: &mut [u8; CELL_LEN]) {
        let Some(o) = self.own.get_mut(&id) else {
            return;
        };
        let Some(c) = o.circ.as_mut() else { return };
        let mut buf = self
            .payloads
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(RELAY_PAYLOAD_LEN));
        buf.clear();
        let (cmd, payload) = match c.receive(cell) {
            Ok(m) => {
                buf.extend_from_slice(m.payload());
                (m.cmd_raw(), buf)
            }
            Err(e) => {
                self.stats.dropped += 1;
                if e == ClientError::Replay(ReplayError::TooFarAhead) {
                    self.stats.jumps_too_far += 1;
                }
                if e.tears_down() {
                    self.close_own(now, id, &format!("circuit broken: {e}"), true);
                }
                return;
            }
        };
        if cmd == RelayCommand::Extended as u8 {
            let next = match o.state {
                OwnState::Extending { next } => next,
                _ => {
                    self.stats.dropped += 1;
                    return;
                }
            };
            let target = o.path.get(next).map(|r| *r.identity());
            let Some(c) = o.circ.as_mut() else { return };
            match c.on_extended(&payload) {
                Ok(()) => self.extend_or_finish(now, id, next + 1),
                Err(e) => {
                    // Status 1 (no link) or 6 (timed out): the relay before could not reach
                    // it, which is what a dead relay looks like.
                    if matches!(e, ClientError::ExtendFailed(1 | 6)) {
                        if let Some(t) = target {
                            if self.unreachable.len() < 64 {
                                self.unreachable.push((t, true));
                            }
                        }
                    }
                    self.close_own(now, id, &format!("EXTENDED: {e}"), true)
                }
            }
            return;
        }
        self.events
            .push_back(CircEvent::Message { id, cmd, payload });
    }

    /// Relays an extension of ours failed to reach since the last call, each with whether
    /// another relay said so (EXTENDED status 1 or 6: `true`) or our own link to it as a first
    /// hop never came up (`false`).
    pub fn take_unreachable(&mut self) -> Vec<([u8; 32], bool)> {
        std::mem::take(&mut self.unreachable)
    }

    /// Returns the payload buffer of a [`CircEvent::Message`] for reuse.
    pub fn recycle_payload(&mut self, buf: Vec<u8>) {
        if self.payloads.len() < 64 && buf.capacity() >= RELAY_PAYLOAD_LEN {
            self.payloads.push(buf);
        }
    }

    /// Sends a relay message to the last hop of our built circuit.
    pub fn send(
        &mut self,
        id: CircId,
        cmd: RelayCommand,
        payload: &[u8],
    ) -> Result<(), CircuitError> {
        let o = self.own.get_mut(&id).ok_or(CircuitError::NoCircuit)?;
        if !matches!(o.state, OwnState::Ready) {
            return Err(CircuitError::NoCircuit);
        }
        let link = o.link.ok_or(CircuitError::NoCircuit)?;
        let c = o.circ.as_mut().ok_or(CircuitError::NoCircuit)?;
        let mut cell = [0u8; CELL_LEN];
        c.send(cmd, payload, &mut cell)
            .map_err(|e| CircuitError::Crypto(e.to_string()))?;
        self.push_cell(link, cell);
        Ok(())
    }

    /// Extends our built circuit by one hop to `target` (a 4th hop to an intro or rendezvous
    /// point). [`CircEvent::Extended`] follows, or [`CircEvent::Closed`].
    pub fn extend(
        &mut self,
        now: Instant,
        id: CircId,
        target: RelayRecord,
    ) -> Result<(), CircuitError> {
        let o = self.own.get_mut(&id).ok_or(CircuitError::NoCircuit)?;
        if !matches!(o.state, OwnState::Ready) {
            return Err(CircuitError::NoCircuit);
        }
        if o.path.len() >= crate::circuit::MAX_CIRCUIT_HOPS {
            return Err(CircuitError::Path("path: too long to extend".into()));
        }
        if o.path.iter().any(|h| h.identity() == target.identity()) {
            return Err(CircuitError::Path(
                "path: relay already on the circuit".into(),
            ));
        }
        o.path.push(target);
        let next = o.path.len() - 1;
        self.extend_or_finish(now, id, next);
        Ok(())
    }

    /// Sets what one of our circuits is for (a pool circuit taken for a use).
    pub fn set_purpose(&mut self, id: CircId, purpose: Purpose) {
        if let Some(o) = self.own.get_mut(&id) {
            o.purpose = purpose;
        }
    }

    /// The path of one of our circuits, first hop first.
    pub fn path(&self, id: CircId) -> Option<&[RelayRecord]> {
        self.own.get(&id).map(|o| o.path.as_slice())
    }

    /// Ready circuits of `purpose`, oldest first.
    pub fn ready_ids(&self, purpose: Purpose) -> Vec<CircId> {
        let mut v: Vec<(Instant, CircId)> = self
            .own
            .iter()
            .filter(|(_, o)| o.purpose == purpose && matches!(o.state, OwnState::Ready))
            .map(|(id, o)| (o.built_at.unwrap_or(Instant::ZERO), *id))
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// `bind` of hop `i` of our built circuit (10.6: ESTABLISH_INTRO signs the intro point's).
    pub fn hop_bind(&self, id: CircId, i: usize) -> Option<[u8; 32]> {
        self.own
            .get(&id)
            .and_then(|o| o.circ.as_ref())
            .and_then(|c| c.hop_bind(i).copied())
    }

    /// Tears one of our circuits down.
    pub fn destroy(&mut self, now: Instant, id: CircId) {
        self.close_own(now, id, "closed by us", true);
    }

    pub(super) fn close_own(&mut self, now: Instant, id: CircId, why: &str, tell: bool) {
        let Some(o) = self.own.remove(&id) else {
            return;
        };
        if let Some(link) = o.link {
            self.own_routes.remove(&(link, o.circ_id));
            self.quarantine
                .insert((link, o.circ_id), now + CIRC_ID_QUARANTINE_MS);
            if let Some(i) = self.links.get_mut(&link) {
                i.circuits = i.circuits.saturating_sub(1);
            }
            if tell && o.circ_id != 0 {
                self.send_destroy(link, o.circ_id, DestroyReason::Requested);
            }
        }
        if o.built_at.is_none() {
            self.stats.build_failures += 1;
        }
        tracing::debug!(circuit = id.0, why, "circuit closed");
        self.events.push_back(CircEvent::Closed {
            id,
            why: why.to_string(),
        });
    }

    // ---- timers --------------------------------------------------------------------------

    /// Our circuits' timers: builds that take too long, circuits past their age, and CREATE or
    /// EXTEND cells to resend.
    pub(super) fn origin_timeouts(&mut self, now: Instant) {
        let stale: Vec<CircId> = self
            .own
            .iter()
            .filter(|(_, o)| match o.built_at {
                None => now.saturating_since(o.started) >= CIRCUIT_BUILD_TIMEOUT_MS,
                Some(b) => now.saturating_since(b) >= self.max_age,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            let why = match self.own.get(&id) {
                Some(o) if o.built_at.is_some() => "retired (age)".to_string(),
                Some(o) => match o.state {
                    OwnState::Linking => {
                        if let Some(first) = o.path.first() {
                            if self.unreachable.len() < 64 {
                                self.unreachable.push((*first.identity(), false));
                            }
                        }
                        "build timed out (no link to the first hop)".to_string()
                    }
                    OwnState::Extending { next } => {
                        format!("build timed out (hop {} of {})", next + 1, o.path.len())
                    }
                    OwnState::Ready => "build timed out".to_string(),
                },
                None => continue,
            };
            self.close_own(now, id, &why, true);
        }
        // Resend unanswered CREATE/EXTEND cells, identically (a duplicate that did arrive is
        // answered again by the relay, or dropped by its replay window).
        let mut resend: Vec<(LinkId, [u8; CELL_LEN])> = Vec::new();
        for o in self.own.values_mut() {
            let Some(link) = o.link else { continue };
            match o.state {
                OwnState::Extending { next: 0 } => {
                    if let Some(cell) = o.setup.as_ref() {
                        if now.saturating_since(o.setup_sent) >= CREATE_RETRY_MS
                            && o.setup_retries < CREATE_RETRIES
                        {
                            o.setup_retries += 1;
                            o.setup_sent = now;
                            resend.push((link, **cell));
                        }
                    }
                }
                OwnState::Extending { .. }
                    if now.saturating_since(o.setup_sent) >= EXTEND_RESEND_MS
                        && o.setup_retries < EXTEND_RESENDS =>
                {
                    let mut cell = [0u8; CELL_LEN];
                    if let Some(c) = o.circ.as_mut() {
                        if c.resend_extend(&mut cell).is_ok() {
                            o.setup_retries += 1;
                            o.setup_sent = now;
                            resend.push((link, cell));
                        }
                    }
                }
                _ => {}
            }
        }
        for (link, cell) in resend {
            self.push_cell(link, cell);
        }
    }
}
