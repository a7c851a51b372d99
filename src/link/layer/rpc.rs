//! Link requests (docs/protocol.md 4.4): requests waiting for an answer, their retries, and the
//! PING/PONG that measures round-trip time and tells us where neighbours see us.

use rand::Rng;

use crate::budget::Charge;
use crate::time::{Instant, Millis};
use crate::wire::link::MsgType;
use crate::wire::record::{parse_endpoint, ENDPOINT_LEN};

use super::{LinkId, LinkLayer};

/// Link request timeout.
pub const LINK_RPC_TIMEOUT_MS: Millis = 2_000;
/// Retries of a link request.
pub const LINK_RPC_RETRIES: u8 = 2;

/// Approximate bytes one pending request costs.
pub const RPC_COST: usize = 128;
/// Most requests outstanding on one link.
pub const MAX_RPC_PER_LINK: usize = 16;

/// What a request of ours was for, so that its answer (matched by rpc id) is taken as such.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rpc {
    Ping { nonce: u64, sent: Instant },
    Pex,
    Punch { target_key: [u8; 32] },
    Relay { target_key: [u8; 32] },
}

/// A request of ours waiting for its answer, charged to the memory budget.
pub(super) struct Pending {
    pub(super) rpc: Rpc,
    /// When the current try times out.
    pub(super) deadline: Instant,
    /// Each try's timeout.
    pub(super) timeout: Millis,
    /// Tries left after this one.
    pub(super) retries: u8,
    /// The frame's type byte and payload, to send again.
    pub(super) frame: Vec<u8>,
    pub(super) _charge: Charge,
}

impl LinkLayer {
    /// Sends a request with the usual timeout; its answer or its timeouts come back through the
    /// link's `rpcs`.
    pub(super) fn send_rpc(
        &mut self,
        now: Instant,
        id: LinkId,
        rpc: Rpc,
        t: MsgType,
        payload: &[u8],
    ) {
        self.send_rpc_timeout(now, id, rpc, t, payload, LINK_RPC_TIMEOUT_MS);
    }

    pub(super) fn send_rpc_timeout(
        &mut self,
        now: Instant,
        id: LinkId,
        rpc: Rpc,
        t: MsgType,
        payload: &[u8],
        timeout: Millis,
    ) {
        let rpc_id: u64 = self.rng.gen_range(1..u64::MAX);
        let Some(l) = self.links.get(&id) else { return };
        if l.rpcs.len() >= MAX_RPC_PER_LINK {
            return;
        }
        let Some(charge) = self.budget.try_charge(RPC_COST) else {
            return;
        };
        if self.send_frame(now, id, t, rpc_id, payload).is_err() {
            return;
        }
        let mut framecopy = Vec::with_capacity(payload.len() + 1);
        framecopy.push(t as u8);
        framecopy.extend_from_slice(payload);
        if let Some(l) = self.links.get_mut(&id) {
            l.rpcs.insert(
                rpc_id,
                Pending {
                    rpc,
                    deadline: now + timeout,
                    timeout,
                    retries: LINK_RPC_RETRIES,
                    frame: framecopy,
                    _charge: charge,
                },
            );
        }
    }

    pub(super) fn ping(&mut self, now: Instant, id: LinkId) {
        let nonce: u64 = self.rng.gen();
        self.ping_with(now, id, nonce);
    }

    pub(super) fn ping_with(&mut self, now: Instant, id: LinkId, nonce: u64) {
        self.ping_timeout(now, id, nonce, LINK_RPC_TIMEOUT_MS);
    }

    pub(super) fn ping_timeout(&mut self, now: Instant, id: LinkId, nonce: u64, timeout: Millis) {
        if let Some(l) = self.links.get_mut(&id) {
            l.last_ping = now;
        }
        self.send_rpc_timeout(
            now,
            id,
            Rpc::Ping { nonce, sent: now },
            MsgType::Ping,
            &nonce.to_be_bytes(),
            timeout,
        );
    }

    pub(super) fn on_pong(&mut self, now: Instant, id: LinkId, rpc_id: u64, p: &[u8]) {
        let Some(l) = self.links.get_mut(&id) else {
            return;
        };
        let Some(pending) = l.rpcs.remove(&rpc_id) else {
            self.stats.dropped += 1;
            return;
        };
        let Rpc::Ping { nonce, sent } = pending.rpc else {
            self.stats.dropped += 1;
            return;
        };
        if p.get(..8) != Some(&nonce.to_be_bytes()[..]) {
            self.stats.dropped += 1;
            return;
        }
        let sample = now.saturating_since(sent) as f64;
        l.rtt_ms = Some(match l.rtt_ms {
            Some(old) => 0.875 * old + 0.125 * sample,
            None => sample,
        });
        let ep: Option<&[u8; ENDPOINT_LEN]> =
            p.get(8..8 + ENDPOINT_LEN).and_then(|b| b.try_into().ok());
        let reporter = l.endpoint.ip();
        // Only a direct link's reflection counts: through a relay the peer saw the relay's
        // address (an older peer still reflects it), and the relay is no reporter of ours.
        let direct = l.relay.is_none();
        if let (true, Some(Ok(Some(endpoint)))) = (direct, ep.map(parse_endpoint)) {
            self.obs.add(reporter, endpoint);
            if let Some(stable) = self.obs.endpoint() {
                self.on_observed(now, stable);
            }
            let before = self.nat;
            self.reclassify();
            if self.nat != before {
                tracing::debug!(nat = self.nat.name(), "NAT class");
                self.refresh_record(now);
            }
        }
    }
}
