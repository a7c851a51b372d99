//! Publishing the descriptors of the services this node hosts (10.5, 11): when the intro points
//! change or the republish time comes, per epoch, each through a circuit of its own whose last hop
//! carried no other epoch's record of the service, the first one spread apart from the other
//! services' (docs/threat-model.md 4.2a).

use rand::{Rng, RngCore};

use crate::dht::descriptor::{
    epoch, epochs_to_publish, expires_for, revision_for, Descriptor, IntroEntry, Publication,
    DESC_MAX_INTRO, DESC_REPUBLISH_S, EPOCH_OVERLAP_S,
};
use crate::session::ctx::DhtRequest;
use crate::session::layer::SessionLayer;
use crate::session::limits::*;
use crate::time::Instant;

impl SessionLayer {
    /// Schedules descriptors when the set of established intro points changed or the
    /// republish time came (`force`: now), and publishes those that are due. The current
    /// epoch's goes at once; another epoch's at a random later time, each through a circuit of
    /// its own whose last hop carried no other epoch's record of this service lately.
    pub(in crate::session) fn service_publish(&mut self, now: Instant, svc: [u8; 16], force: bool) {
        let rng = &mut self.rng;
        let hosted = self.services.len();
        let Some(s) = self.services.iter_mut().find(|s| s.address == svc) else {
            return;
        };
        let mut entries: Vec<IntroEntry> = s
            .intros
            .iter()
            .filter(|i| i.listed)
            .filter_map(|i| {
                let r = i.relay.as_ref()?;
                Some(IntroEntry {
                    identity: *r.identity(),
                    link_key: r.fields().link_key,
                    onion_key: r.fields().onion_key,
                    auth_key: i.auth_pub,
                    endpoints: r.fields().endpoints.iter().take(2).copied().collect(),
                })
            })
            .collect();
        entries.truncate(DESC_MAX_INTRO);
        if entries.is_empty() {
            return;
        }
        // The first descriptor waits a moment for all intro points: one listing a single intro
        // point stays in clients' caches, and a client whose guard is that relay cannot use it.
        let first_up = s.intros.iter().filter_map(|i| i.established).min();
        if s.published_keys.is_empty()
            && entries.len() < NUM_INTRO_POINTS
            && first_up.is_some_and(|t| now.saturating_since(t) < FIRST_DESC_WAIT_MS)
        {
            return;
        }
        if s.published_keys.is_empty() && hosted > 1 {
            // Services started together get their intro points at nearly the same time: without
            // a delay of its own, each first descriptor would go out with the others' (a storage
            // node or last hop seeing them arrive together links them). The OS generator: the
            // delay hides a timing the host must not leak.
            let at = *s
                .first_publish_at
                .get_or_insert_with(|| now + self.secrets.gen_range(0..=FIRST_PUBLISH_SPREAD_MS));
            if now < at {
                return;
            }
        }
        let keys: Vec<[u8; 32]> = entries.iter().map(|e| e.auth_key).collect();
        let now_s = now.as_unix_ms() / 1000;
        let current = epoch(now_s);
        let epochs = epochs_to_publish(now_s);
        let stale =
            s.republish_at.is_none_or(|t| now >= t) || s.publish_retry_at.is_some_and(|t| now >= t);
        if force || stale || keys != s.published_keys {
            let mut queued = Vec::new();
            for &e in &epochs {
                let at = if e == current {
                    now
                } else {
                    // A pending later time stays: repeated changes must not postpone it.
                    let spread = now + rng.gen_range(DESC_SPREAD_MS.0..DESC_SPREAD_MS.1);
                    s.queued
                        .iter()
                        .find(|(q, _)| *q == e)
                        .map_or(spread, |(_, t)| (*t).min(spread))
                };
                queued.push((e, at));
            }
            s.queued = queued;
            s.republish_at =
                Some(now + DESC_REPUBLISH_S * 1000 - rng.gen_range(0..DESC_REPUBLISH_JITTER_MS));
            s.built_at = Some(now);
            s.publish_retry_at = None;
            s.published_keys = keys;
            s.descs.retain(|(e, _)| epochs.contains(e));
            s.revisions.retain(|e, _| epochs.contains(e));
            let keep_after = now.saturating_sub(EPOCH_OVERLAP_S * 1000);
            s.via.retain(|(_, _, at)| *at >= keep_after);
        }
        let due: Vec<u64> = s
            .queued
            .iter()
            .filter(|(_, at)| *at <= now)
            .map(|(e, _)| *e)
            .collect();
        if due.is_empty() {
            return;
        }
        s.queued.retain(|(_, at)| *at > now);
        let mut sends = Vec::new();
        for e in due {
            let last = s.revisions.get(&e).copied();
            // The first revision of a run is the time itself, so that a restarted service
            // always publishes above its own older records.
            let at = match last {
                Some(_) => now.saturating_sub(rng.gen_range(0..DESC_REVISION_JITTER_MS)),
                None => now,
            };
            let revision = revision_for(at.as_unix_ms(), last);
            s.revisions.insert(e, revision);
            let mut salt = [0u8; 16];
            self.secrets.fill_bytes(&mut salt);
            let p = Publication {
                revision,
                expires: expires_for(now_s, e),
                salt,
            };
            match Descriptor::build_with_pow(&s.signing, e, &entries, p, Some(s.pow.params())) {
                Ok(d) => {
                    s.pow.published(now);
                    s.descs.retain(|(de, _)| *de != e);
                    s.descs.push((e, d.clone()));
                    sends.push((e, d));
                }
                Err(err) => tracing::warn!("descriptor: {err}"),
            }
        }
        for (e, d) in sends {
            tracing::debug!(at = now.as_unix_ms(), epoch = e, "publishing a descriptor");
            let avoid = self.service_publish_avoid(svc, e);
            self.dht_requests.push_back(DhtRequest::Publish {
                svc,
                epoch: e,
                record: d.bytes().to_vec(),
                avoid,
            });
        }
    }

    /// Relays a publication of `svc` for epoch `e` must not end at: the last hops that carried
    /// its records of other epochs (the node adds those its other running publications go
    /// to, [`SessionLayer::publications_of`]).
    fn service_publish_avoid(&self, svc: [u8; 16], e: u64) -> Vec<[u8; 32]> {
        let mut avoid: Vec<[u8; 32]> = self
            .services
            .iter()
            .filter(|s| s.address == svc)
            .flat_map(|s| s.via.iter())
            .filter(|(ve, _, _)| *ve != e)
            .map(|(_, r, _)| *r)
            .collect();
        avoid.sort_unstable();
        avoid.dedup();
        avoid
    }
}
