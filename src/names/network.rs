//! Network-issued names in a running node (docs/protocol.md 18.3): publishing this node's claims
//! and looking other names up in the DHT, with pins. Sans-IO: the daemon asks [`NetNames`] what to
//! send ([`NetNames::poll_query`]), starts the DHT queries, and hands back their outcomes
//! ([`NetNames::on_records`], [`NetNames::on_failed`]); every answer comes out of
//! [`NetNames::poll_answer`].
//!
//! The winner is computed here from the claims the lookup returned, never taken from a storage
//! node's word. Pins then guard against a network whose answer changes (a stronger claim, or
//! storage nodes hiding the pinned owner's claim): the pinned key is kept and the conflict shown.

use ed25519_dalek::SigningKey;
use rand::RngCore;
use std::collections::BTreeMap;

use super::claim::{winner, Claim, PinCheck, Pins, EPOCH_S};

/// Seconds between republications of an own claim (a DHT replica set changes as relays come and
/// go; six hours keeps new replicas filled well within the claim's seven days).
pub const CLAIM_REPUBLISH_S: u64 = 6 * 3600;
/// Seconds a resolved owner is kept before the next lookup.
pub const CLAIM_CACHE_S: u64 = 300;
/// Seconds a name with no claims is remembered as such.
pub const CLAIM_MISS_CACHE_S: u64 = 60;
/// Names looked up at once; more wait for a slot or fail ("busy").
pub const MAX_LOOKUPS: usize = 32;
/// Names in the cache (oldest dropped first).
pub const MAX_CACHED: usize = 1024;
/// First publication after the start: the node needs circuits first.
const FIRST_PUBLISH_MS: u64 = 20_000;
/// With several services hosted, a new own claim waits up to this long more (at random, per
/// claim) before its first publication.
pub const CLAIM_SPREAD_MS: u64 = 30_000;
/// Retry of a failed publication.
const PUBLISH_RETRY_MS: u64 = 60_000;

/// A DHT query to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameQuery {
    /// Publish this claim (through a service circuit).
    Publish {
        /// The label.
        name: String,
        /// The claim's bytes.
        record: Vec<u8>,
    },
    /// Look the claims of this label up (through a client circuit), under [`super::claim::dht_key`].
    Lookup {
        /// The label.
        name: String,
    },
}

/// What the network says about a name, after pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetAnswer {
    /// The key to use (the pinned one), and the key the network now names when it differs.
    Owner {
        /// The key to use.
        key: [u8; 32],
        /// The network's owner, when it is not the pinned key.
        conflict: Option<[u8; 32]>,
    },
    /// No valid claim of the name was found.
    NoSuchName,
    /// The lookup failed (no circuit, no answer); the name may exist.
    Unavailable(String),
}

#[derive(Debug)]
struct Own {
    claim: Claim,
    next_ms: u64,
}

#[derive(Debug, Clone)]
struct Cached {
    answer: Option<[u8; 32]>,
    until_ms: u64,
}

/// This node's claims and its view of other names.
#[derive(Debug)]
pub struct NetNames {
    keys: Vec<SigningKey>,
    own: Vec<Own>,
    cache: BTreeMap<String, Cached>,
    /// Names waiting for a lookup slot, and names whose lookup runs (by token).
    queued: Vec<String>,
    running: BTreeMap<u64, String>,
    publishing: BTreeMap<u64, String>,
    answers: Vec<(String, NetAnswer)>,
    pins: Pins,
    pins_dirty: bool,
    /// The network's owner of each name in conflict with its pin, for `accept`.
    offered: BTreeMap<String, [u8; 32]>,
}

impl NetNames {
    /// Names for a node whose hosted services' keys are `keys` (needed to re-sign `own` claims
    /// daily), with the pins read from disk. `delay` gives each own claim's extra wait before its
    /// first publication (see [`NetNames::set_own`]).
    pub fn new(
        keys: Vec<SigningKey>,
        own: Vec<Claim>,
        pins: Pins,
        now_ms: u64,
        delay: &mut impl RngCore,
    ) -> NetNames {
        let mut n = NetNames {
            keys: Vec::new(),
            own: Vec::new(),
            cache: BTreeMap::new(),
            queued: Vec::new(),
            running: BTreeMap::new(),
            publishing: BTreeMap::new(),
            answers: Vec::new(),
            pins,
            pins_dirty: false,
            offered: BTreeMap::new(),
        };
        n.set_own(keys, own, now_ms + FIRST_PUBLISH_MS, delay);
        n
    }

    /// The hosted services' keys and the claims on disk changed (a service added or removed by a
    /// reload, `globalnet name claim` or `release`): own claims are those signed by a hosted key.
    /// A claim kept goes on as it was; a new one is published from `from_ms`, each after a random
    /// delay of its own (up to [`CLAIM_SPREAD_MS`]) when several services are hosted, so that the
    /// claims of two services made or loaded together do not go out together.
    pub fn set_own(
        &mut self,
        keys: Vec<SigningKey>,
        claims: Vec<Claim>,
        from_ms: u64,
        delay: &mut impl RngCore,
    ) {
        let mut old = std::mem::take(&mut self.own);
        let several = keys.len() > 1;
        for c in claims {
            if !keys.iter().any(|k| k.verifying_key().to_bytes() == c.key) {
                continue;
            }
            match old
                .iter()
                .position(|o| o.claim.name == c.name && o.claim.key == c.key)
            {
                Some(k) => self.own.push(old.swap_remove(k)),
                None => {
                    let jitter = if several {
                        delay.next_u64() % (CLAIM_SPREAD_MS + 1)
                    } else {
                        0
                    };
                    self.own.push(Own {
                        claim: c,
                        next_ms: from_ms + jitter,
                    });
                }
            }
        }
        self.own.sort_by(|a, b| a.claim.name.cmp(&b.claim.name));
        self.keys = keys;
    }

    /// The names this node publishes.
    pub fn own_names(&self) -> impl Iterator<Item = &str> {
        self.own.iter().map(|o| o.claim.name.as_str())
    }

    /// Asks for `name` (a claimable label). The answer comes out of [`NetNames::poll_answer`],
    /// at once when cached. `false` when too many lookups wait already.
    pub fn resolve(&mut self, name: &str, now_ms: u64) -> bool {
        if let Some(c) = self.cache.get(name).filter(|c| c.until_ms > now_ms) {
            let a = match c.answer {
                Some(k) => self.pinned(name, k),
                None => NetAnswer::NoSuchName,
            };
            self.answers.push((name.to_string(), a));
            return true;
        }
        if self.running.values().any(|n| n == name) || self.queued.iter().any(|n| n == name) {
            return true;
        }
        if self.queued.len() >= MAX_LOOKUPS {
            return false;
        }
        self.queued.push(name.to_string());
        true
    }

    fn pinned(&mut self, name: &str, key: [u8; 32]) -> NetAnswer {
        match self.pins.check(name, key) {
            PinCheck::Pinned => {
                self.pins_dirty = true;
                NetAnswer::Owner {
                    key,
                    conflict: None,
                }
            }
            PinCheck::Same => NetAnswer::Owner {
                key,
                conflict: None,
            },
            PinCheck::Conflict { pinned, offered } => {
                if self.offered.len() < MAX_CACHED || self.offered.contains_key(name) {
                    self.offered.insert(name.to_string(), offered);
                }
                NetAnswer::Owner {
                    key: pinned,
                    conflict: Some(offered),
                }
            }
        }
    }

    /// The next DHT query to start (call until `None`, then hand the token to
    /// [`NetNames::started`]).
    pub fn poll_query(&mut self, now_ms: u64) -> Option<NameQuery> {
        if self.running.len() < MAX_LOOKUPS && !self.queued.is_empty() {
            let name = self.queued.remove(0);
            return Some(NameQuery::Lookup { name });
        }
        let epoch = u32::try_from(now_ms / 1000 / EPOCH_S).unwrap_or(u32::MAX);
        for o in &mut self.own {
            if self.publishing.values().any(|n| *n == o.claim.name) {
                continue;
            }
            // Due, or the day changed since it was signed: re-sign with the same nonce.
            if o.next_ms <= now_ms || o.claim.epoch != epoch {
                let key = self
                    .keys
                    .iter()
                    .find(|k| k.verifying_key().to_bytes() == o.claim.key);
                if let (true, Some(key)) = (o.claim.epoch != epoch, key) {
                    if let Ok(c) = Claim::sign(&o.claim.name, key, epoch, o.claim.nonce) {
                        o.claim = c;
                    }
                }
                o.next_ms = now_ms + PUBLISH_RETRY_MS;
                return Some(NameQuery::Publish {
                    name: o.claim.name.clone(),
                    record: o.claim.encode(),
                });
            }
        }
        None
    }

    /// The DHT query for `q` runs under `token`.
    pub fn started(&mut self, token: u64, q: &NameQuery) {
        match q {
            NameQuery::Lookup { name } => self.running.insert(token, name.clone()),
            NameQuery::Publish { name, .. } => self.publishing.insert(token, name.clone()),
        };
    }

    /// Whether `token` is one of ours.
    pub fn owns(&self, token: u64) -> bool {
        self.running.contains_key(&token) || self.publishing.contains_key(&token)
    }

    /// A lookup returned `records` (already through the DHT client's storage checks), or a
    /// publication ended with `accepted` replicas.
    pub fn on_records(&mut self, token: u64, records: &[Vec<u8>], now_ms: u64) {
        let Some(name) = self.running.remove(&token) else {
            return;
        };
        let claims: Vec<Claim> = records
            .iter()
            .filter_map(|r| Claim::decode_at(r, now_ms).ok())
            .filter(|c| c.name == name)
            .collect();
        let owner = winner(&claims).map(|c| c.key);
        self.cache_put(&name, owner, now_ms);
        let a = match owner {
            Some(k) => self.pinned(&name, k),
            None => NetAnswer::NoSuchName,
        };
        self.answers.push((name, a));
    }

    /// A publication ended: `accepted` replicas took the claim.
    pub fn on_published(&mut self, token: u64, accepted: u8, now_ms: u64) {
        let Some(name) = self.publishing.remove(&token) else {
            return;
        };
        if let Some(o) = self.own.iter_mut().find(|o| o.claim.name == name) {
            o.next_ms = now_ms
                + if accepted > 0 {
                    CLAIM_REPUBLISH_S * 1000
                } else {
                    PUBLISH_RETRY_MS
                };
        }
    }

    /// A query ended without records: `not_found` when the DHT holds none, else it failed.
    pub fn on_failed(&mut self, token: u64, not_found: bool, why: &str, now_ms: u64) {
        if self.publishing.remove(&token).is_some() {
            return;
        }
        let Some(name) = self.running.remove(&token) else {
            return;
        };
        let a = if not_found {
            self.cache_put(&name, None, now_ms);
            NetAnswer::NoSuchName
        } else {
            NetAnswer::Unavailable(why.to_string())
        };
        self.answers.push((name, a));
    }

    fn cache_put(&mut self, name: &str, answer: Option<[u8; 32]>, now_ms: u64) {
        if self.cache.len() >= MAX_CACHED && !self.cache.contains_key(name) {
            self.cache.retain(|_, c| c.until_ms > now_ms);
            if self.cache.len() >= MAX_CACHED {
                let oldest = self
                    .cache
                    .iter()
                    .min_by_key(|(_, c)| c.until_ms)
                    .map(|(n, _)| n.clone());
                if let Some(n) = oldest {
                    self.cache.remove(&n);
                }
            }
        }
        let ttl = if answer.is_some() {
            CLAIM_CACHE_S
        } else {
            CLAIM_MISS_CACHE_S
        };
        self.cache.insert(
            name.to_string(),
            Cached {
                answer,
                until_ms: now_ms + ttl * 1000,
            },
        );
    }

    /// The next finished answer.
    pub fn poll_answer(&mut self) -> Option<(String, NetAnswer)> {
        if self.answers.is_empty() {
            None
        } else {
            Some(self.answers.remove(0))
        }
    }

    /// The user accepts the key the network named for `name` in the last conflict shown: it
    /// becomes the pin. `None` when no conflict is known (resolve the name first).
    pub fn accept(&mut self, name: &str) -> Option<[u8; 32]> {
        let key = self.offered.remove(name)?;
        self.pins.accept(name, key);
        self.cache.remove(name);
        self.pins_dirty = true;
        Some(key)
    }

    /// The pins, when they changed since the last call (to be saved).
    pub fn take_pins_to_save(&mut self) -> Option<Pins> {
        std::mem::take(&mut self.pins_dirty).then(|| self.pins.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 20_001 * EPOCH_S * 1000 + 5000;

    fn rng() -> rand::rngs::StdRng {
        rand::SeedableRng::seed_from_u64(11)
    }

    /// The publications `n` starts until `until`, polling every second: (when, name, signer).
    fn publications(n: &mut NetNames, from: u64, until: u64) -> Vec<(u64, String, [u8; 32])> {
        let mut out = Vec::new();
        let mut token = 100;
        for t in (from..=until).step_by(1000) {
            while let Some(q) = n.poll_query(t) {
                if let NameQuery::Publish { name, record } = &q {
                    // 0x01 ‖ len ‖ name ‖ key … (the test claims carry no work, so no decode).
                    let at = 2 + name.len();
                    assert_eq!(&record[2..at], name.as_bytes());
                    out.push((t, name.clone(), record[at..at + 32].try_into().unwrap()));
                }
                token += 1;
                n.started(token, &q);
                n.on_published(token, 3, t);
            }
        }
        out
    }

    fn vector_claims() -> Vec<Vec<u8>> {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/vectors/name_claims.json")).unwrap();
        doc["claims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| hex::decode(c["claim"].as_str().unwrap()).unwrap())
            .collect()
    }

    /// A lookup's claims give the owner with the most work in any order; the first answer is
    /// pinned, a later different owner is a conflict that keeps the pin until accepted; a cached
    /// answer comes at once; no claims is "no such name", a failure is not.
    #[test]
    fn lookups_winner_pins_and_cache() {
        let claims = vector_claims();
        let strong = Claim::decode_at(&claims[0], NOW).unwrap().key;
        let weak = Claim::decode_at(&claims[1], NOW).unwrap().key;
        let mut n = NetNames::new(Vec::new(), Vec::new(), Pins::default(), NOW, &mut rng());
        assert!(n.resolve("cheesy", NOW));
        assert!(n.resolve("cheesy", NOW), "one lookup per name");
        let q = n.poll_query(NOW).unwrap();
        assert_eq!(
            q,
            NameQuery::Lookup {
                name: "cheesy".into()
            }
        );
        assert_eq!(n.poll_query(NOW), None);
        n.started(7, &q);
        // Only the weaker claim reached us first (a partition, or a hiding replica).
        n.on_records(7, &claims[1..], NOW);
        assert_eq!(
            n.poll_answer(),
            Some((
                "cheesy".into(),
                NetAnswer::Owner {
                    key: weak,
                    conflict: None
                }
            ))
        );
        assert!(n.take_pins_to_save().is_some());
        // Cached.
        assert!(n.resolve("cheesy", NOW + 1000));
        assert!(matches!(
            n.poll_answer(),
            Some((_, NetAnswer::Owner { .. }))
        ));
        assert_eq!(n.poll_query(NOW + 1000), None);
        // After the cache time both claims come back, in either order: the stronger owns the
        // name, but the pin holds.
        let later = NOW + CLAIM_CACHE_S * 1000 + 1;
        for (t, recs) in [
            (8, vec![claims[0].clone(), claims[1].clone()]),
            (9, vec![claims[1].clone(), claims[0].clone()]),
        ] {
            n.cache.clear();
            assert!(n.resolve("cheesy", later));
            let q = n.poll_query(later).unwrap();
            n.started(t, &q);
            n.on_records(t, &recs, later);
            assert_eq!(
                n.poll_answer(),
                Some((
                    "cheesy".into(),
                    NetAnswer::Owner {
                        key: weak,
                        conflict: Some(strong)
                    }
                ))
            );
        }
        assert_eq!(n.accept("pizza"), None, "no conflict to accept");
        assert_eq!(n.accept("cheesy"), Some(strong));
        assert!(n.take_pins_to_save().is_some());
        n.cache_put("cheesy", Some(strong), later);
        assert!(n.resolve("cheesy", later));
        assert_eq!(
            n.poll_answer(),
            Some((
                "cheesy".into(),
                NetAnswer::Owner {
                    key: strong,
                    conflict: None
                }
            ))
        );
        // Unknown and failed.
        assert!(n.resolve("nobody", later));
        let q = n.poll_query(later).unwrap();
        n.started(10, &q);
        n.on_failed(10, true, "not found", later);
        assert_eq!(
            n.poll_answer(),
            Some(("nobody".into(), NetAnswer::NoSuchName))
        );
        assert!(n.resolve("other", later));
        let q = n.poll_query(later).unwrap();
        n.started(11, &q);
        n.on_failed(11, false, "no circuit", later);
        assert!(matches!(
            n.poll_answer(),
            Some((_, NetAnswer::Unavailable(_)))
        ));
        // Claims of another name in a lookup's answer are ignored.
        assert!(n.resolve("pizza", later));
        let q = n.poll_query(later).unwrap();
        n.started(12, &q);
        n.on_records(12, &claims, later);
        assert_eq!(
            n.poll_answer(),
            Some(("pizza".into(), NetAnswer::NoSuchName))
        );
    }

    /// Own claims are published after the start, re-signed when the day changes (same nonce),
    /// republished every six hours after a success and a minute after a failure.
    #[test]
    fn own_claims_are_published_and_refreshed() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/vectors/name_claims.json")).unwrap();
        let v = &doc["claims"][1];
        let seed: [u8; 32] = hex::decode(v["seed"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let key = SigningKey::from_bytes(&seed);
        let c = Claim::decode_at(&vector_claims()[1], NOW).unwrap();
        let mut n = NetNames::new(vec![key], vec![c.clone()], Pins::default(), NOW, &mut rng());
        assert_eq!(n.own_names().collect::<Vec<_>>(), ["cheesy"]);
        assert_eq!(n.poll_query(NOW), None);
        let t = NOW + FIRST_PUBLISH_MS;
        let q = n.poll_query(t).unwrap();
        assert_eq!(
            q,
            NameQuery::Publish {
                name: "cheesy".into(),
                record: c.encode()
            }
        );
        n.started(1, &q);
        assert_eq!(n.poll_query(t), None, "one publication at a time");
        n.on_published(1, 0, t);
        assert_eq!(n.poll_query(t + 1000), None);
        let q = n.poll_query(t + PUBLISH_RETRY_MS).unwrap();
        n.started(2, &q);
        n.on_published(2, 3, t + PUBLISH_RETRY_MS);
        assert_eq!(n.poll_query(t + PUBLISH_RETRY_MS + 3_600_000), None);
        // Next day: re-signed at once, same nonce, still valid.
        let tomorrow = NOW + EPOCH_S * 1000;
        let Some(NameQuery::Publish { record, .. }) = n.poll_query(tomorrow) else {
            panic!("republished on a new day")
        };
        let again = Claim::decode_at(&record, tomorrow).unwrap();
        assert_eq!((again.epoch, again.nonce), (c.epoch + 1, c.nonce));
        // A claim by another key is not ours to publish.
        let other = NetNames::new(
            vec![SigningKey::from_bytes(&[9; 32])],
            vec![c],
            Pins::default(),
            NOW,
            &mut rng(),
        );
        assert_eq!(other.own_names().count(), 0);
    }

    /// Every hosted service publishes the claims signed by its own key, each first publication
    /// after a delay of its own; a claim made while the node runs is published without a restart,
    /// a released one or one whose service is gone no longer is (issue #22 item c, #24 item e).
    #[test]
    fn claims_of_several_services_and_claims_made_while_running() {
        let (web, ssh) = (
            SigningKey::from_bytes(&[1; 32]),
            SigningKey::from_bytes(&[2; 32]),
        );
        let day = (NOW / 1000 / EPOCH_S) as u32;
        let cw = Claim::sign("web", &web, day, 1).unwrap();
        let cs = Claim::sign("ssh", &ssh, day, 2).unwrap();
        let keys = vec![web.clone(), ssh.clone()];
        let mut n = NetNames::new(
            keys.clone(),
            vec![cw.clone(), cs.clone()],
            Pins::default(),
            NOW,
            &mut rng(),
        );
        let first = NOW + FIRST_PUBLISH_MS;
        let p = publications(&mut n, NOW, first + CLAIM_SPREAD_MS);
        let at = |name: &str| {
            p.iter()
                .find(|(_, n, _)| n == name)
                .map(|(t, _, k)| (*t, *k))
        };
        let (tw, kw) = at("web").expect("web's claim published");
        let (ts, ks) = at("ssh").expect("ssh's claim published");
        assert_eq!(
            (kw, ks),
            (cw.key, cs.key),
            "each signed by its own service's key"
        );
        assert_ne!(tw, ts, "each after a delay of its own: {p:?}");
        assert!(tw >= first && ts >= first);
        // Next day each is re-signed by its own key.
        let tomorrow = NOW + EPOCH_S * 1000;
        for (_, name, key) in publications(&mut n, tomorrow, tomorrow) {
            assert_eq!(key, if name == "web" { cw.key } else { cs.key });
        }
        // `name claim` while running: published within the spread, the others go on.
        let now = tomorrow + 1000;
        let late = Claim::sign("blog", &web, day, 3).unwrap();
        n.set_own(keys, vec![cw.clone(), cs.clone(), late], now, &mut rng());
        let p = publications(&mut n, now, now + CLAIM_SPREAD_MS);
        assert_eq!(
            p.iter().map(|(_, n, _)| n.as_str()).collect::<Vec<_>>(),
            ["blog"],
            "only the new claim goes out now"
        );
        // ssh removed by a reload, and `release web`: only blog is left.
        let blog = Claim::sign("blog", &web, day, 3).unwrap();
        n.set_own(vec![web], vec![cs.clone(), blog], now, &mut rng());
        assert_eq!(n.own_names().collect::<Vec<_>>(), ["blog"]);
        // One service alone: no delay; a claim by a key not hosted is not ours.
        let mut one = NetNames::new(
            vec![ssh.clone()],
            vec![cw],
            Pins::default(),
            NOW,
            &mut rng(),
        );
        assert_eq!(one.own_names().count(), 0);
        one.set_own(vec![ssh], vec![cs], NOW, &mut rng());
        let p = publications(&mut one, NOW, NOW + 1000);
        assert_eq!(
            p.first().map(|(t, _, _)| *t),
            Some(NOW),
            "one service: at once"
        );
    }
}
