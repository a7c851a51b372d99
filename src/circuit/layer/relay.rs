//! Circuits we relay for others (the relay role, DESIGN.md sections 5-6; docs/protocol.md
//! sections 6-9): CREATE, forwarding in both directions (the hot path: no allocation per cell),
//! EXTEND, the last hop's messages and splices, teardown, and the relay side's timers.

use std::collections::BTreeMap;

use super::{
    create_digest, CircAction, CircEvent, CircuitError, CircuitLayer, Dir, Route, SplicedMessage,
    CIRCUIT_HARD_MAX_AGE_MS, CIRC_ID_QUARANTINE_MS, CREATE_BURST_PER_LINK, CREATE_RATE_PER_LINK,
    CREATE_RATE_TOTAL, CREATE_RETRIES, CREATE_RETRY_MS, EXTENDED_RESENDS, EXTENDED_RESEND_MS,
    EXTEND_TIMEOUT_MS, MAX_CIRCUITS_PER_LINK, MAX_RELAYED_CIRCUITS, MAX_SPLICED_OBSERVATIONS,
    RELAY_CIRCUIT_COST, RELAY_CIRCUIT_IDLE_TIMEOUT_MS, SPLICED_HEAD_LEN,
};
use crate::budget::Charge;
use crate::circuit::handshake::{respond, OnionKey};
use crate::circuit::hop::{Forward, HopError, RelayHop};
use crate::circuit::replay::ReplayError;
use crate::link::LinkId;
use crate::time::Instant;
use crate::wire::cell::{Cell, CellCommand, CellHeader, DestroyReason, CELL_HEADER_LEN, CELL_LEN};
use crate::wire::handshake::{ServerExt, CREATED_HS_LEN, CREATE_HS_LEN};
use crate::wire::record::LinkSpec;
use crate::wire::relay::{Extend, ExtendedStatus, RelayCommand, RELAY_PAYLOAD_LEN};

/// An EXTEND we are carrying out: the next hop's link and our CREATE to it.
pub(super) struct PendingExtend {
    pub(super) identity: [u8; 32],
    pub(super) link_key: [u8; 32],
    pub(super) create: [u8; CREATE_HS_LEN],
    pub(super) started: Instant,
    pub(super) sent: Option<Instant>,
    pub(super) retries: u8,
}

/// A relay's answer kept for a resend, until the client's next cell shows it arrived.
pub(super) enum Answer {
    /// Our CREATED, with the hash of the CREATE it answers (a resent CREATE gets it again).
    Created([u8; 32], [u8; CELL_LEN]),
    /// Our EXTENDED, resent on a timer up to [`EXTENDED_RESENDS`] times, and again whenever the
    /// client resends the EXTEND with the same CREATE bytes (8.4).
    Extended {
        /// When it was last sent.
        at: Instant,
        /// Timed resends so far.
        resends: u8,
        /// The CREATE handshake bytes of the EXTEND it answers.
        create: [u8; CREATE_HS_LEN],
        /// The cell.
        cell: [u8; CELL_LEN],
    },
}

/// One circuit we relay: our hop state and the two (link, circuit id) pairs it joins.
pub(super) struct Relayed {
    pub(super) hop: RelayHop,
    pub(super) up: (LinkId, u32),
    pub(super) down: Option<(LinkId, u32)>,
    pub(super) created_at: Instant,
    pub(super) last_cell: Instant,
    /// While extending (boxed: most relayed circuits never extend, or only once).
    pub(super) extend: Option<Box<PendingExtend>>,
    /// Hash of the CREATE bytes and our CREATED cell, to answer a resent CREATE identically
    /// (dropped once the first relay cell shows the client got it).
    pub(super) answer: Option<Box<Answer>>,
    /// The circuit this one is spliced to (a rendezvous point joins two circuits, 10.6).
    pub(super) splice: Option<u64>,
    /// Whether a role above saw this circuit (then it hears when it closes).
    pub(super) role: bool,
    pub(super) _charge: Charge,
}

impl CircuitLayer {
    /// Circuits relayed for others now.
    pub fn relayed_count(&self) -> usize {
        self.relayed.len()
    }

    /// The links a relayed circuit touches, for tests (a relay knows only its two neighbours).
    pub fn relayed_neighbours(&self) -> Vec<(LinkId, Option<LinkId>)> {
        self.relayed
            .values()
            .map(|r| (r.up.0, r.down.map(|d| d.0)))
            .collect()
    }

    /// The (link, circuit id) pairs of every relayed circuit, upstream and downstream, for tests
    /// (which cells could reach it, and from whom).
    pub fn relayed_routes(&self) -> Vec<(Route, Option<Route>)> {
        self.relayed.values().map(|r| (r.up, r.down)).collect()
    }
    /// Answers a relayed circuit's pending EXTEND with EXTENDED(link failed).
    pub(super) fn fail_extend_link(&mut self, slot: u64) {
        let Some(r) = self.relayed.get_mut(&slot) else {
            return;
        };
        r.extend = None;
        let mut cell = [0u8; CELL_LEN];
        let up = r.up.0;
        if r.hop
            .fail_extend(ExtendedStatus::LinkFailed, &mut cell)
            .is_ok()
        {
            self.push_cell(up, cell);
        }
    }

    pub(super) fn on_create(
        &mut self,
        now: Instant,
        link: LinkId,
        circ_id: u32,
        cell: &[u8; CELL_LEN],
    ) {
        let Some(info) = self.links.get_mut(&link) else {
            self.stats.dropped += 1;
            return;
        };
        // The peer allocates ids with the other high bit than ours.
        let wrong_half = (circ_id & 0x8000_0000 != 0) == info.high_bit;
        let key = (link, circ_id);
        if let Some((slot, Dir::Up)) = self.routes.get(&key).copied() {
            // A resent CREATE (its CREATED was lost): answer identically.
            let digest = create_digest(cell);
            if let Some(Some(Answer::Created(d, out))) =
                self.relayed.get(&slot).map(|r| r.answer.as_deref())
            {
                if *d == digest {
                    let out = *out;
                    self.push_cell(link, out);
                    return;
                }
            }
        }
        if !self.relay || wrong_half || self.routes.contains_key(&key) || circ_id == 0 {
            self.stats.creates_refused += 1;
            if !self.routes.contains_key(&key) {
                self.send_destroy(link, circ_id, DestroyReason::Protocol);
            }
            return;
        }
        let per_link_ok = info
            .creates
            .take(now, CREATE_RATE_PER_LINK, CREATE_BURST_PER_LINK);
        let over =
            info.circuits >= MAX_CIRCUITS_PER_LINK || self.relayed.len() >= MAX_RELAYED_CIRCUITS;
        if !per_link_ok
            || over
            || !self
                .total_creates
                .take(now, CREATE_RATE_TOTAL, CREATE_RATE_TOTAL)
        {
            self.stats.creates_refused += 1;
            self.send_destroy(link, circ_id, DestroyReason::ResourceLimit);
            return;
        }
        let charge = match self.budget.try_charge(RELAY_CIRCUIT_COST) {
            Some(c) => c,
            None => {
                self.evict_for_memory(now);
                match self.budget.try_charge(RELAY_CIRCUIT_COST) {
                    Some(c) => c,
                    None => {
                        self.stats.creates_refused += 1;
                        self.send_destroy(link, circ_id, DestroyReason::ResourceLimit);
                        return;
                    }
                }
            }
        };
        let create = cell
            .get(CELL_HEADER_LEN..CELL_HEADER_LEN + CREATE_HS_LEN)
            .unwrap_or(&[]);
        let (keys, n) = self.onion.accepted(now);
        let hs = match respond(
            &mut self.secrets,
            create,
            &self.identity,
            keys.get(..n).unwrap_or(&[]),
            &ServerExt::default(),
        ) {
            Ok(hs) => hs,
            Err(e) => {
                self.stats.creates_refused += 1;
                self.send_destroy(link, circ_id, e.destroy_reason());
                return;
            }
        };
        let mut out = [0u8; CELL_LEN];
        crate::wire::cell::emit_plain_cell(
            &mut out,
            &CellHeader {
                circ_id,
                cmd: CellCommand::Created,
                seq: 0,
            },
            &hs.created,
        );
        let hop = RelayHop::from_handshake(hs, circ_id);
        let slot = self.next_slot;
        self.next_slot += 1;
        self.relayed.insert(
            slot,
            Relayed {
                hop,
                up: (link, circ_id),
                down: None,
                created_at: now,
                last_cell: now,
                extend: None,
                answer: Some(Box::new(Answer::Created(create_digest(cell), out))),
                splice: None,
                role: false,
                _charge: charge,
            },
        );
        self.routes.insert((link, circ_id), (slot, Dir::Up));
        if let Some(i) = self.links.get_mut(&link) {
            i.circuits += 1;
        }
        self.push_cell(link, out);
    }

    /// Frees one relayed circuit for a new one: the longest-idle circuit of the upstream link
    /// carrying the most relayed circuits (ties: the higher link id). The longest-idle circuit
    /// overall would be an honest service's quiet intro circuit or a client's spare, while a
    /// flooder keeps its own fresh; by link, the flood pays for itself (protocol.md section 15).
    fn evict_for_memory(&mut self, now: Instant) {
        let mut per_link: BTreeMap<LinkId, usize> = BTreeMap::new();
        for r in self.relayed.values() {
            *per_link.entry(r.up.0).or_default() += 1;
        }
        let Some(link) = per_link
            .into_iter()
            .max_by_key(|&(l, n)| (n, l))
            .map(|(l, _)| l)
        else {
            return;
        };
        let victim = self
            .relayed
            .iter()
            .filter(|(_, r)| r.up.0 == link)
            .min_by_key(|(k, r)| (r.last_cell, **k))
            .map(|(k, _)| *k);
        if let Some(v) = victim {
            self.stats.evicted_for_memory += 1;
            self.destroy_relayed(now, v, None);
        }
    }

    pub(super) fn relay_forward(&mut self, now: Instant, slot: u64, cell: &mut [u8; CELL_LEN]) {
        let Some(r) = self.relayed.get_mut(&slot) else {
            return;
        };
        r.last_cell = now;
        let down = r.down;
        let up = r.up.0;
        match r.hop.forward(cell) {
            Ok(Forward::ResentExtend { message }) => {
                // The client did not get our EXTENDED: send it again, unless this is not the
                // EXTEND we carried out (then drop it: it is not for the next hop either).
                let again = match r.answer.as_deref() {
                    Some(Answer::Extended { create, cell, .. })
                        if message.cmd_raw() == RelayCommand::Extend as u8
                            && Extend::new_checked(message.payload())
                                .is_ok_and(|e| e.create_handshake() == &create[..]) =>
                    {
                        Some(*cell)
                    }
                    _ => None,
                };
                match again {
                    Some(out) => {
                        self.stats.extended_again += 1;
                        self.push_cell(up, out);
                    }
                    None => self.stats.dropped += 1,
                }
            }
            Ok(Forward::Relayed) => {
                // The client's next cell: our CREATED or EXTENDED got through.
                r.answer = None;
                if let Some((link, _)) = down {
                    self.stats.relayed_cells += 1;
                    self.push_cell(link, *cell);
                }
            }
            Ok(Forward::Delivered { early, message }) => {
                r.answer = None;
                let cmd = message.cmd_raw();
                if let Some(other) = r.splice {
                    // A spliced rendezvous point passes DATA across, and nothing else (10.6).
                    if cmd == RelayCommand::Data as u8 {
                        if let Some(seen) = self.spliced_seen.as_mut() {
                            if seen.len() < MAX_SPLICED_OBSERVATIONS {
                                let mut head = [0u8; SPLICED_HEAD_LEN];
                                for (h, b) in head.iter_mut().zip(message.payload()) {
                                    *h = *b;
                                }
                                seen.push(SplicedMessage {
                                    from: slot,
                                    length: message.length(),
                                    head,
                                });
                            }
                        }
                        self.splice_data(other, message.payload());
                    } else {
                        self.stats.dropped += 1;
                    }
                    return;
                }
                let mut payload = [0u8; 1316];
                let p = message.payload();
                let n = p.len().min(payload.len());
                if let (Some(dst), Some(src)) = (payload.get_mut(..n), p.get(..n)) {
                    dst.copy_from_slice(src);
                }
                self.last_hop_message(now, slot, early, cmd, payload.get(..n).unwrap_or(&[]));
            }
            Err(e) => {
                self.count_error(&e);
                if e.destroy_reason().is_some() {
                    self.destroy_relayed(now, slot, None);
                }
            }
        }
    }

    pub(super) fn relay_backward(&mut self, now: Instant, slot: u64, cell: &mut [u8; CELL_LEN]) {
        let Some(r) = self.relayed.get_mut(&slot) else {
            return;
        };
        r.last_cell = now;
        let up = r.up.0;
        match r.hop.backward(cell) {
            Ok(()) => {
                self.stats.relayed_cells += 1;
                self.push_cell(up, *cell);
            }
            Err(e) => {
                self.count_error(&e);
                if e.destroy_reason().is_some() {
                    self.destroy_relayed(now, slot, None);
                }
            }
        }
    }

    fn count_error(&mut self, e: &HopError) {
        self.stats.dropped += 1;
        match e {
            HopError::Tampered => self.stats.tampered += 1,
            HopError::Replay(ReplayError::TooFarAhead) => self.stats.jumps_too_far += 1,
            _ => {}
        }
    }

    /// A relay message for us as the last hop of someone's circuit.
    fn last_hop_message(&mut self, now: Instant, slot: u64, early: bool, cmd: u8, payload: &[u8]) {
        match RelayCommand::try_from(cmd).ok() {
            Some(RelayCommand::Extend) => self.on_extend(now, slot, early, payload),
            Some(RelayCommand::Probe) => {
                // Echo, same size: liveness and RTT checks of a circuit.
                let Some(r) = self.relayed.get_mut(&slot) else {
                    return;
                };
                let mut cell = [0u8; CELL_LEN];
                let up = r.up.0;
                if r.hop
                    .originate(RelayCommand::ProbeReply, payload, &mut cell)
                    .is_ok()
                {
                    self.push_cell(up, cell);
                }
            }
            Some(RelayCommand::Drop) => {}
            Some(RelayCommand::ExitPacket) => {
                // The exit's data path: a recycled buffer, no allocation per packet.
                if let Some(r) = self.relayed.get_mut(&slot) {
                    r.role = true;
                    let mut buf = self
                        .payloads
                        .pop()
                        .unwrap_or_else(|| Vec::with_capacity(RELAY_PAYLOAD_LEN));
                    buf.clear();
                    buf.extend_from_slice(payload);
                    self.events.push_back(CircEvent::LastHop {
                        slot,
                        cmd,
                        payload: buf,
                    });
                }
            }
            Some(
                RelayCommand::DhtLookup
                | RelayCommand::ExitSession
                | RelayCommand::EstablishIntro
                | RelayCommand::Introduce1
                | RelayCommand::EstablishRendezvous
                | RelayCommand::Rendezvous1,
            ) => {
                if let Some(r) = self.relayed.get_mut(&slot) {
                    r.role = true;
                    self.events.push_back(CircEvent::LastHop {
                        slot,
                        cmd,
                        payload: payload.to_vec(),
                    });
                }
            }
            _ => self.stats.dropped += 1,
        }
    }

    fn splice_data(&mut self, other: u64, payload: &[u8]) {
        let Some(r) = self.relayed.get_mut(&other) else {
            self.stats.dropped += 1;
            return;
        };
        let mut cell = [0u8; CELL_LEN];
        let up = r.up.0;
        if r.hop
            .originate(RelayCommand::Data, payload, &mut cell)
            .is_ok()
        {
            self.stats.relayed_cells += 1;
            self.push_cell(up, cell);
        }
    }

    /// Sends a relay message backward, to the client of a relayed circuit that ends at us (the
    /// answer of a last-hop role).
    pub fn reply(
        &mut self,
        slot: u64,
        cmd: RelayCommand,
        payload: &[u8],
    ) -> Result<(), CircuitError> {
        let r = self.relayed.get_mut(&slot).ok_or(CircuitError::NoCircuit)?;
        if r.down.is_some() {
            return Err(CircuitError::NoCircuit);
        }
        let mut cell = [0u8; CELL_LEN];
        let up = r.up.0;
        r.hop
            .originate(cmd, payload, &mut cell)
            .map_err(|e| CircuitError::Crypto(e.to_string()))?;
        self.push_cell(up, cell);
        Ok(())
    }

    /// `bind` of the handshake of a relayed circuit ending at us (binds an intro registration
    /// to its circuit, 10.6).
    pub fn relayed_bind(&self, slot: u64) -> Option<[u8; 32]> {
        self.relayed.get(&slot).map(|r| *r.hop.bind())
    }

    /// The link the client side of a relayed circuit arrives on (for per-source limits).
    pub fn relayed_upstream(&self, slot: u64) -> Option<LinkId> {
        self.relayed.get(&slot).map(|r| r.up.0)
    }

    /// Joins two relayed circuits that both end at us: from now on DATA arriving on one is sent
    /// backward on the other, and destroying one destroys both (10.6).
    pub fn splice(&mut self, a: u64, b: u64) -> Result<(), CircuitError> {
        if a == b {
            return Err(CircuitError::NoCircuit);
        }
        for s in [a, b] {
            let r = self.relayed.get(&s).ok_or(CircuitError::NoCircuit)?;
            if r.down.is_some() || r.splice.is_some() {
                return Err(CircuitError::NoCircuit);
            }
        }
        if let Some(r) = self.relayed.get_mut(&a) {
            r.splice = Some(b);
        }
        if let Some(r) = self.relayed.get_mut(&b) {
            r.splice = Some(a);
        }
        Ok(())
    }

    /// Starts recording what crosses our splices (see [`SplicedMessage`]).
    pub fn observe_splices(&mut self) {
        self.spliced_seen.get_or_insert_with(Vec::new);
    }

    /// What crossed our splices since [`observe_splices`](Self::observe_splices).
    pub fn spliced_seen(&self) -> &[SplicedMessage] {
        self.spliced_seen.as_deref().unwrap_or(&[])
    }

    /// Tears down a relayed circuit that ends at us (a role refused it).
    pub fn close_relayed(&mut self, now: Instant, slot: u64) {
        self.destroy_relayed(now, slot, None);
    }

    fn on_extend(&mut self, now: Instant, slot: u64, early: bool, payload: &[u8]) {
        let refuse = |this: &mut Self, status: ExtendedStatus| {
            if let Some(r) = this.relayed.get_mut(&slot) {
                let mut cell = [0u8; CELL_LEN];
                let up = r.up.0;
                if r.hop.fail_extend(status, &mut cell).is_ok() {
                    this.push_cell(up, cell);
                }
            }
        };
        let Ok(ext) = Extend::new_checked(payload) else {
            refuse(self, ExtendedStatus::Refused);
            return;
        };
        let Ok(spec) = LinkSpec::parse(ext.link_spec()) else {
            refuse(self, ExtendedStatus::Refused);
            return;
        };
        let mut create = [0u8; CREATE_HS_LEN];
        create.copy_from_slice(
            ext.create_handshake()
                .get(..CREATE_HS_LEN)
                .unwrap_or(&[0; CREATE_HS_LEN]),
        );
        let Some(r) = self.relayed.get_mut(&slot) else {
            return;
        };
        let upstream_identity = self.links.get(&r.up.0).and_then(|l| l.identity);
        if spec.identity == self.identity || Some(spec.identity) == upstream_identity {
            refuse(self, ExtendedStatus::Refused);
            return;
        }
        let Some(r) = self.relayed.get_mut(&slot) else {
            return;
        };
        if r.extend.as_ref().is_some_and(|e| e.create == create) {
            // The client resent an EXTEND we are still working on (its timer ran out before
            // our CREATE was answered): our own retries carry on.
            return;
        }
        if r.hop.begin_extend(early).is_err() {
            refuse(self, ExtendedStatus::Refused);
            return;
        }
        r.extend = Some(Box::new(PendingExtend {
            identity: spec.identity,
            link_key: spec.link_key,
            create,
            started: now,
            sent: None,
            retries: 0,
        }));
        self.arm_relay_timer(now + EXTEND_TIMEOUT_MS);
        let existing = self
            .links
            .iter()
            .find(|(_, l)| l.identity == Some(spec.identity))
            .map(|(id, _)| *id);
        match (existing, spec.endpoints.first()) {
            (Some(link), _) => self.send_extend_create(now, slot, link),
            (None, Some(ep)) => self.actions.push_back(CircAction::Connect {
                link_key: spec.link_key,
                endpoint: *ep,
            }),
            (None, None) => self.fail_extend_link(slot),
        }
    }

    pub(super) fn send_extend_create(&mut self, now: Instant, slot: u64, link: LinkId) {
        let Some(id) = self.alloc_id(link, now) else {
            return;
        };
        let Some(r) = self.relayed.get_mut(&slot) else {
            return;
        };
        let Some(ext) = r.extend.as_mut() else { return };
        ext.sent = Some(now);
        let mut cell = [0u8; CELL_LEN];
        crate::wire::cell::emit_plain_cell(
            &mut cell,
            &CellHeader {
                circ_id: id,
                cmd: CellCommand::Create,
                seq: 0,
            },
            &ext.create,
        );
        r.down = Some((link, id));
        self.arm_relay_timer(now + CREATE_RETRY_MS);
        self.routes.insert((link, id), (slot, Dir::Down));
        if let Some(i) = self.links.get_mut(&link) {
            i.circuits += 1;
        }
        self.push_cell(link, cell);
    }

    pub(super) fn extend_created(&mut self, now: Instant, slot: u64, cell: &[u8; CELL_LEN]) {
        let Some(r) = self.relayed.get_mut(&slot) else {
            return;
        };
        let Some((_, down_id)) = r.down else { return };
        let Some(create) = r.extend.as_ref().map(|e| e.create) else {
            self.stats.dropped += 1;
            return;
        };
        let mut created = [0u8; CREATED_HS_LEN];
        created.copy_from_slice(
            Cell::new(cell)
                .body()
                .get(..CREATED_HS_LEN)
                .unwrap_or(&[0; CREATED_HS_LEN]),
        );
        let mut out = [0u8; CELL_LEN];
        let up = r.up.0;
        r.last_cell = now;
        match r.hop.finish_extend(&created, down_id, &mut out) {
            Ok(()) => {
                r.extend = None;
                r.answer = Some(Box::new(Answer::Extended {
                    at: now,
                    resends: 0,
                    create,
                    cell: out,
                }));
                self.arm_relay_timer(now + EXTENDED_RESEND_MS);
                self.push_cell(up, out);
            }
            Err(_) => self.destroy_relayed(now, slot, None),
        }
    }

    /// Tears a relayed circuit down, telling the side(s) other than `from`.
    pub(super) fn destroy_relayed(&mut self, now: Instant, slot: u64, from: Option<LinkId>) {
        let Some(r) = self.relayed.remove(&slot) else {
            return;
        };
        if r.role {
            self.events.push_back(CircEvent::RelayedClosed { slot });
        }
        if let Some(other) = r.splice {
            self.destroy_relayed(now, other, None);
        }
        let mut sides = vec![r.up];
        sides.extend(r.down);
        for (link, id) in sides {
            self.routes.remove(&(link, id));
            self.quarantine
                .insert((link, id), now + CIRC_ID_QUARANTINE_MS);
            if let Some(i) = self.links.get_mut(&link) {
                i.circuits = i.circuits.saturating_sub(1);
            }
            if Some(link) != from && self.links.contains_key(&link) {
                // Reasons never cross hops (6.1).
                self.send_destroy(link, id, DestroyReason::Destroyed);
            }
        }
    }

    // ---- timers --------------------------------------------------------------------------

    /// The onion keys' schedule: expire the previous key, rotate the current one (relays only).
    pub(super) fn onion_key_timers(&mut self, now: Instant) {
        self.onion.expire(now);
        if self.relay && self.onion.due(now) {
            let next = OnionKey::generate(&mut self.secrets);
            tracing::info!(key = ?next, "onion key rotated; the previous one is accepted for 2 days");
            self.rotated = Some(next.clone());
            self.onion.rotate(now, next);
        }
    }

    /// Relayed circuits' timers: extensions that time out, idle and old circuits, and EXTENDED
    /// and CREATE cells to resend.
    pub(super) fn relay_timeouts(&mut self, now: Instant) {
        let mut failed_extends = Vec::new();
        let mut expired = Vec::new();
        for (slot, r) in &self.relayed {
            if r.extend
                .as_ref()
                .is_some_and(|e| now.saturating_since(e.started) >= EXTEND_TIMEOUT_MS)
            {
                failed_extends.push(*slot);
            }
            if now.saturating_since(r.last_cell) >= RELAY_CIRCUIT_IDLE_TIMEOUT_MS
                || now.saturating_since(r.created_at) >= CIRCUIT_HARD_MAX_AGE_MS
            {
                expired.push(*slot);
            }
        }
        // Resend our unanswered EXTENDED and CREATE cells (8.4), as in `origin_timeouts`.
        let mut resend: Vec<(LinkId, [u8; CELL_LEN])> = Vec::new();
        for r in self.relayed.values_mut() {
            let Some(Answer::Extended {
                at, resends, cell, ..
            }) = r.answer.as_deref_mut()
            else {
                continue;
            };
            // After the timed resends the answer stays for a resent EXTEND (8.4), until the
            // client's next cell or the circuit's end.
            if now.saturating_since(*at) >= EXTENDED_RESEND_MS && *resends < EXTENDED_RESENDS {
                *at = now;
                *resends += 1;
                resend.push((r.up.0, *cell));
            }
        }
        for r in self.relayed.values_mut() {
            let Some((link, id)) = r.down else { continue };
            let Some(ext) = r.extend.as_mut() else {
                continue;
            };
            if let Some(sent) = ext.sent {
                if now.saturating_since(sent) >= CREATE_RETRY_MS && ext.retries < CREATE_RETRIES {
                    ext.retries += 1;
                    ext.sent = Some(now);
                    let mut cell = [0u8; CELL_LEN];
                    crate::wire::cell::emit_plain_cell(
                        &mut cell,
                        &CellHeader {
                            circ_id: id,
                            cmd: CellCommand::Create,
                            seq: 0,
                        },
                        &ext.create,
                    );
                    resend.push((link, cell));
                }
            }
        }
        for (link, cell) in resend {
            self.push_cell(link, cell);
        }
        for slot in failed_extends {
            if let Some(r) = self.relayed.get_mut(&slot) {
                r.extend = None;
                if let Some(d) = r.down.take() {
                    self.routes.remove(&d);
                    self.quarantine.insert(d, now + CIRC_ID_QUARANTINE_MS);
                }
                let mut cell = [0u8; CELL_LEN];
                let up = r.up.0;
                if r.hop
                    .fail_extend(ExtendedStatus::Timeout, &mut cell)
                    .is_ok()
                {
                    self.push_cell(up, cell);
                }
            }
        }
        for slot in expired {
            self.destroy_relayed(now, slot, None);
        }
        self.relay_timer = self
            .relayed
            .values()
            .filter_map(Relayed::setup_deadline)
            .min();
    }
}

impl Relayed {
    /// When `relay_timeouts` next acts on this circuit's setup (the EXTEND timeout, a CREATE or
    /// EXTENDED resend); `None` once set up.
    fn setup_deadline(&self) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        let mut at = |t: Instant| d = Some(d.map_or(t, |x| x.min(t)));
        if let Some(e) = self.extend.as_deref() {
            at(e.started + EXTEND_TIMEOUT_MS);
            if let (Some(sent), Some(_)) = (e.sent, self.down) {
                if e.retries < CREATE_RETRIES {
                    at(sent + CREATE_RETRY_MS);
                }
            }
        }
        if let Some(Answer::Extended {
            at: sent, resends, ..
        }) = self.answer.as_deref()
        {
            if *resends < EXTENDED_RESENDS {
                at(*sent + EXTENDED_RESEND_MS);
            }
        }
        d
    }
}

/// Approximate bytes of relay state per circuit (hop state plus the two route entries).
pub fn relay_state_bytes() -> usize {
    std::mem::size_of::<Relayed>()
        + 2 * (std::mem::size_of::<(LinkId, u32)>() + std::mem::size_of::<(u64, Dir)>())
}
