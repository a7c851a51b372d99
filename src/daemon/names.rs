//! The link task's side of network-issued names (docs/protocol.md 18.3): it starts the DHT
//! queries [`NetNames`] asks for, hands their outcomes back, and answers whoever waits for a
//! name (the DNS server, `globalnet resolve`). The decisions are [`NetNames`]'s.

use ed25519_dalek::SigningKey;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokio::sync::oneshot;

use super::hosted::Seed;

use crate::crypto::SecretRng;
use crate::dht::client::{DhtOutcome, DhtQuery};
use crate::dht::message::RecordKind;
use crate::names::claim::{dht_key, Claim, Pins};
use crate::names::claim_files;
use crate::names::network::{NameQuery, NetAnswer, NetNames};
use crate::node::Node;
use crate::time::Instant;

/// Callers waiting for names at once (DNS queries and `resolve`); more are told "busy".
pub(super) const MAX_WAITERS: usize = 256;

/// Network names and who waits for them.
pub(super) struct NameTask {
    pub(super) names: NetNames,
    waiters: BTreeMap<String, Vec<oneshot::Sender<NetAnswer>>>,
    waiting: usize,
    pins_dir: PathBuf,
    /// The hosted services' keys by address (the default service's included): own claims are
    /// those one of them signed.
    keys: BTreeMap<[u8; 16], SigningKey>,
    /// The claims in `state_dir/names` as last read.
    claims: Vec<Claim>,
    /// The node's own key's address: its claims are published whether or not `[expose]` hosts
    /// it as a service (as before there were several services).
    default: [u8; 16],
}

impl NameTask {
    pub(super) fn new(
        keys: &[([u8; 16], [u8; 32])],
        claims: Vec<Claim>,
        pins: Pins,
        pins_dir: PathBuf,
        now: Instant,
    ) -> NameTask {
        let default = keys.first().map_or([0; 16], |(a, _)| *a);
        let keys: BTreeMap<[u8; 16], SigningKey> = keys
            .iter()
            .map(|(a, seed)| (*a, SigningKey::from_bytes(seed)))
            .collect();
        let names = NetNames::new(
            keys.values().cloned().collect(),
            claims.clone(),
            pins,
            now.as_unix_ms(),
            &mut SecretRng::os(),
        );
        let task = NameTask {
            names,
            waiters: BTreeMap::new(),
            waiting: 0,
            pins_dir,
            keys,
            claims,
            default,
        };
        task.log_own();
        task
    }

    fn log_own(&self) {
        let own: Vec<String> = self
            .names
            .own_names()
            .map(|n| format!("{n}.{}", crate::names::SUFFIX))
            .collect();
        tracing::info!(names = ?own, "name claims this node publishes");
    }

    /// A reload removed and added services: their keys' claims follow.
    pub(super) fn set_services(&mut self, remove: &[[u8; 16]], add: &[Seed], now: Instant) {
        for a in remove.iter().filter(|a| **a != self.default) {
            self.keys.remove(a);
        }
        for seed in add {
            let key = SigningKey::from_bytes(seed);
            let address = crate::crypto::address_of(&key.verifying_key().to_bytes()).octets();
            self.keys.insert(address, key);
        }
        self.apply(now);
    }

    /// The claims on disk changed.
    pub(super) fn set_claims(&mut self, claims: Vec<Claim>, now: Instant) {
        if claims == self.claims {
            return;
        }
        self.claims = claims;
        self.apply(now);
    }

    fn apply(&mut self, now: Instant) {
        let keys = self.keys.values().cloned().collect();
        self.names.set_own(
            keys,
            self.claims.clone(),
            now.as_unix_ms(),
            &mut SecretRng::os(),
        );
        self.log_own();
    }

    /// Someone wants `name` (a claimable label).
    pub(super) fn ask(&mut self, name: String, reply: oneshot::Sender<NetAnswer>, now: Instant) {
        if self.waiting >= MAX_WAITERS || !self.names.resolve(&name, now.as_unix_ms()) {
            let _ = reply.send(NetAnswer::Unavailable(
                "too many names being looked up".into(),
            ));
            return;
        }
        self.waiting += 1;
        self.waiters.entry(name).or_default().push(reply);
    }

    /// A DHT query ended; `false` when it was not ours.
    pub(super) fn on_dht(&mut self, token: u64, outcome: &DhtOutcome, now: Instant) -> bool {
        if !self.names.owns(token) {
            return false;
        }
        match outcome {
            DhtOutcome::Records(r) => self.names.on_records(token, r, now.as_unix_ms()),
            DhtOutcome::NotFound => {
                self.names
                    .on_failed(token, true, "no claims", now.as_unix_ms())
            }
            DhtOutcome::Published { accepted, .. } => {
                tracing::info!(accepted, "name claim published");
                self.names.on_published(token, *accepted, now.as_unix_ms())
            }
            DhtOutcome::Failed(why) => self.names.on_failed(token, false, why, now.as_unix_ms()),
            DhtOutcome::Relays(_) => {
                self.names
                    .on_failed(token, false, "unexpected", now.as_unix_ms())
            }
        }
        true
    }

    /// Starts what is due, answers what finished, saves changed pins.
    pub(super) fn pump(&mut self, node: &mut Node, now: Instant) {
        while let Some(q) = self.names.poll_query(now.as_unix_ms()) {
            let token = match &q {
                NameQuery::Lookup { name } => node.dht_query(
                    now,
                    DhtQuery::FindValue {
                        kind: RecordKind::NameClaim,
                        key: dht_key(name),
                    },
                    false,
                ),
                NameQuery::Publish { record, .. } => node.dht_query(
                    now,
                    DhtQuery::Publish {
                        kind: RecordKind::NameClaim,
                        record: record.clone(),
                    },
                    true,
                ),
            };
            self.names.started(token, &q);
        }
        while let Some((name, answer)) = self.names.poll_answer() {
            // A claim names the full key: the descriptor must carry it, not only its address.
            if let NetAnswer::Owner { key, .. } = &answer {
                let address = crate::crypto::address_of(key).octets();
                node.expect_service_key(now, address, *key);
            }
            for w in self.waiters.remove(&name).unwrap_or_default() {
                self.waiting = self.waiting.saturating_sub(1);
                let _ = w.send(answer.clone());
            }
        }
        if let Some(pins) = self.names.take_pins_to_save() {
            let dir = self.pins_dir.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = claim_files::save_pins(&dir, &pins) {
                    tracing::warn!(error = %e, "could not save the name pins");
                }
            });
        }
    }
}

/// Asks the link task for a network name and waits at most `wait`.
pub(super) async fn lookup(
    commands: &tokio::sync::mpsc::Sender<super::Command>,
    name: String,
    wait: std::time::Duration,
) -> NetAnswer {
    let (tx, rx) = oneshot::channel();
    if commands
        .try_send(super::Command::Name { name, reply: tx })
        .is_err()
    {
        return NetAnswer::Unavailable("the daemon is busy".into());
    }
    match tokio::time::timeout(wait, rx).await {
        Ok(Ok(a)) => a,
        Ok(Err(_)) => NetAnswer::Unavailable("the daemon is stopping".into()),
        Err(_) => NetAnswer::Unavailable(format!(
            "no answer from the DHT within {} s",
            wait.as_secs()
        )),
    }
}

/// The key name of a claim's key.
pub(super) fn key_name(key: &[u8; 32]) -> Option<crate::names::KeyName> {
    crate::crypto::keys::decode_public_key(key).map(|k| crate::names::KeyName::of(&k))
}

/// How often the names file's modification time is looked at.
const PETNAMES_POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// Reloads the petnames when the names file changes (its mtime or size), so an edit takes
/// effect without a restart; SIGHUP does the same through [`super::NodeState::reload_petnames`].
pub(super) async fn watch_petnames(state: std::sync::Arc<super::NodeState>) {
    let stamp = |p: &std::path::Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.modified().ok(), m.len()))
    };
    let file = state.config.names.file.clone();
    let mut last = stamp(&file);
    let mut tick = tokio::time::interval(PETNAMES_POLL);
    loop {
        tick.tick().await;
        let now = stamp(&file);
        if now != last {
            last = now;
            state.reload_petnames();
        }
    }
}

/// How often `state_dir/names` is looked at for claims made or released while the daemon runs.
const CLAIMS_POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// What identifies the claims on disk: each file's name, modification time and size.
fn claims_stamp(state_dir: &Path) -> Vec<(std::ffi::OsString, Option<std::time::SystemTime>, u64)> {
    let dir = state_dir.join(claim_files::NAMES_DIR);
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let m = e.metadata().ok()?;
                    Some((e.file_name(), m.modified().ok(), m.len()))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Reads the claims again and hands them to the link task (which ignores an unchanged list).
pub(super) async fn reload_claims(state: &super::NodeState) {
    let (claims, bad) = claim_files::load_all(&state.config.state_dir);
    for e in bad {
        tracing::warn!("{e}");
    }
    let _ = state.commands.send(super::Command::Claims(claims)).await;
}

/// Applies `globalnet name claim` and `release` without a restart: the claims directory is
/// looked at every few seconds (SIGHUP reads it at once, [`reload_claims`]).
pub(super) async fn watch_claims(state: std::sync::Arc<super::NodeState>) {
    let mut last = claims_stamp(&state.config.state_dir);
    let mut tick = tokio::time::interval(CLAIMS_POLL);
    loop {
        tick.tick().await;
        let now = claims_stamp(&state.config.state_dir);
        if now != last {
            last = now;
            tracing::info!("the name claims changed: reading them again");
            reload_claims(&state).await;
        }
    }
}
