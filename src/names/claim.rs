//! Network-issued names: a claim of `NAME.gn.alt` by a service key (docs/protocol.md 18.3).
//!
//! A claim is signed by the key it binds and priced with proof of work over `(name, key)`
//! ([`crate::crypto::pow`]). Among valid claims of one name the winner is the claim with the
//! lowest work hash (the most work: more leading zero bits is a lower hash; among equal bits the
//! lower hash), computed from the records alone: every node that holds the same claims picks the
//! same owner, whatever order they arrived in, including after two partitions merge. The epoch a
//! claim carries only decides when it expires, never who wins: it is self-asserted.
//!
//! A client pins the key it first resolved for a name ([`Pins`]); a later different winner is
//! shown as a conflict and not used until the user accepts it.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;

use super::keyname::{KeyName, LABEL_LEN};
use super::petnames::is_label;
use crate::crypto::{keys::decode_public_key, labels, pow};

/// Claim format version.
pub const CLAIM_VERSION: u8 = 1;
/// The least work a claim must show, in leading zero bits of its work hash (about 10^6 hashes).
pub const MIN_WORK_BITS: u32 = 20;
/// Days a claim stays valid after its epoch: services refresh daily.
pub const VALID_EPOCHS: u32 = 7;
/// Longest claim on the wire (a 63-character name).
pub const MAX_CLAIM_LEN: usize = 2 + 63 + 32 + 4 + 8 + 64;
/// Shortest claim on the wire (a one-character name).
pub const MIN_CLAIM_LEN: usize = 2 + 1 + 32 + 4 + 8 + 64;
/// Seconds in an epoch (a Unix day).
pub const EPOCH_S: u64 = 86_400;

/// Why bytes are not a valid claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimError {
    /// Too short, too long or inconsistent lengths.
    Length,
    /// Unknown version.
    Version,
    /// The name is not one valid label, or it is a key name.
    Name,
    /// The key is not an acceptable public key.
    Key,
    /// The signature does not verify.
    Signature,
    /// Less than [`MIN_WORK_BITS`].
    Work,
    /// Its epoch is too old or in the future.
    Expired,
}

impl fmt::Display for ClaimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClaimError::Length => "bad length",
            ClaimError::Version => "unknown version",
            ClaimError::Name => "not a claimable name",
            ClaimError::Key => "bad key",
            ClaimError::Signature => "bad signature",
            ClaimError::Work => "too little work",
            ClaimError::Expired => "expired or from the future",
        })
    }
}

impl std::error::Error for ClaimError {}

/// A verified claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The label claimed (`cheesy` for `cheesy.gn.alt`).
    pub name: String,
    /// The claiming service's key.
    pub key: [u8; 32],
    /// Day number (Unix days) the claim was signed on; decides expiry only.
    pub epoch: u32,
    /// The proof-of-work nonce.
    pub nonce: u64,
    /// The signature.
    pub sig: [u8; 64],
}

/// Whether `name` may be claimed: one label, and not a key name (those resolve by themselves).
pub fn claimable(name: &str) -> bool {
    is_label(name) && !(name.len() == LABEL_LEN && KeyName::parse_label(name).is_ok())
}

/// The DHT key under which a name's claims are stored.
pub fn dht_key(name: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(labels::LABEL_NAME_DHT_KEY);
    h.update(name.as_bytes());
    h.finalize().into()
}

fn work_context(name: &str, key: &[u8; 32]) -> Vec<u8> {
    let mut c = Vec::with_capacity(1 + name.len() + 32);
    c.push(name.len() as u8);
    c.extend_from_slice(name.as_bytes());
    c.extend_from_slice(key);
    c
}

impl Claim {
    /// Finds a nonce with at least `bits` of work for `name` and `key` (from a random start, so
    /// two machines of one owner do not repeat each other); `None` after `max_tries`.
    pub fn solve_work(
        name: &str,
        key: &VerifyingKey,
        bits: u32,
        start: u64,
        max_tries: u64,
    ) -> Option<u64> {
        let ctx = work_context(name, &key.to_bytes());
        pow::solve(labels::LABEL_NAME_POW, &ctx, bits, start, max_tries).map(|(n, _)| n)
    }

    /// A signed claim of `name` by `key` with the work `nonce`, for `epoch`.
    pub fn sign(name: &str, key: &SigningKey, epoch: u32, nonce: u64) -> Result<Claim, ClaimError> {
        if !claimable(name) {
            return Err(ClaimError::Name);
        }
        let mut c = Claim {
            name: name.to_string(),
            key: key.verifying_key().to_bytes(),
            epoch,
            nonce,
            sig: [0; 64],
        };
        let mut msg = labels::LABEL_NAME_CLAIM_SIG.to_vec();
        msg.extend_from_slice(&c.body());
        c.sig = key.sign(&msg).to_bytes();
        Ok(c)
    }

    /// The work hash: lower is more work, and the lowest wins.
    pub fn work_hash(&self) -> [u8; 32] {
        pow::pow_hash(
            labels::LABEL_NAME_POW,
            &work_context(&self.name, &self.key),
            self.nonce,
        )
    }

    /// Leading zero bits of the work hash.
    pub fn work_bits(&self) -> u32 {
        pow::leading_zero_bits(&self.work_hash())
    }

    /// The Unix second at which the claim stops being valid (the day after its last valid
    /// epoch begins).
    pub fn expires_s(&self) -> u64 {
        (u64::from(self.epoch) + u64::from(VALID_EPOCHS) + 1) * EPOCH_S
    }

    /// Parses and checks a claim at Unix time `now_ms` ([`Claim::decode`]).
    pub fn decode_at(bytes: &[u8], now_ms: u64) -> Result<Claim, ClaimError> {
        Claim::decode(
            bytes,
            u32::try_from(now_ms / 1000 / EPOCH_S).unwrap_or(u32::MAX),
        )
    }

    /// The key as a key name.
    pub fn key_name(&self) -> Option<KeyName> {
        decode_public_key(&self.key).map(|k| KeyName::of(&k))
    }

    fn body(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(MAX_CLAIM_LEN);
        b.push(CLAIM_VERSION);
        b.push(self.name.len() as u8);
        b.extend_from_slice(self.name.as_bytes());
        b.extend_from_slice(&self.key);
        b.extend_from_slice(&self.epoch.to_be_bytes());
        b.extend_from_slice(&self.nonce.to_be_bytes());
        b
    }

    /// The claim on the wire: `version ‖ name_len ‖ name ‖ key ‖ epoch_be32 ‖ nonce_be64 ‖ sig`.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.body();
        b.extend_from_slice(&self.sig);
        b
    }

    /// Parses and checks a claim from the network: format, name, key, signature, work, and that
    /// `now_epoch` lies in `[epoch, epoch + VALID_EPOCHS]` (one day of clock skew ahead allowed).
    pub fn decode(bytes: &[u8], now_epoch: u32) -> Result<Claim, ClaimError> {
        let (&version, rest) = bytes.split_first().ok_or(ClaimError::Length)?;
        if version != CLAIM_VERSION {
            return Err(ClaimError::Version);
        }
        let (&len, rest) = rest.split_first().ok_or(ClaimError::Length)?;
        let len = usize::from(len);
        if rest.len() != len + 32 + 4 + 8 + 64 {
            return Err(ClaimError::Length);
        }
        let (name, rest) = rest.split_at_checked(len).ok_or(ClaimError::Length)?;
        let name = std::str::from_utf8(name).map_err(|_| ClaimError::Name)?;
        if !claimable(name) {
            return Err(ClaimError::Name);
        }
        let (key, rest) = rest.split_first_chunk::<32>().ok_or(ClaimError::Length)?;
        let (epoch, rest) = rest.split_first_chunk::<4>().ok_or(ClaimError::Length)?;
        let (nonce, rest) = rest.split_first_chunk::<8>().ok_or(ClaimError::Length)?;
        let sig: [u8; 64] = rest.try_into().map_err(|_| ClaimError::Length)?;
        let c = Claim {
            name: name.to_string(),
            key: *key,
            epoch: u32::from_be_bytes(*epoch),
            nonce: u64::from_be_bytes(*nonce),
            sig,
        };
        let vk = decode_public_key(&c.key).ok_or(ClaimError::Key)?;
        // Work before the signature: it is the cheaper check.
        if c.work_bits() < MIN_WORK_BITS {
            return Err(ClaimError::Work);
        }
        let mut msg = labels::LABEL_NAME_CLAIM_SIG.to_vec();
        msg.extend_from_slice(&c.body());
        vk.verify_strict(&msg, &Signature::from_bytes(&c.sig))
            .map_err(|_| ClaimError::Signature)?;
        if !(c.epoch..=c.epoch.saturating_add(VALID_EPOCHS)).contains(&now_epoch)
            && now_epoch.saturating_add(1) != c.epoch
        {
            return Err(ClaimError::Expired);
        }
        Ok(c)
    }
}

/// The owner of a name among `claims` (all of the same name, all verified): the lowest work hash.
/// Order-independent, so every node holding the same claims agrees.
pub fn winner<'a>(claims: impl IntoIterator<Item = &'a Claim>) -> Option<&'a Claim> {
    claims.into_iter().min_by_key(|c| (c.work_hash(), c.key))
}

/// Claims a node holds, per name, bounded: per name only the best [`KEEP_PER_NAME`] keys are
/// kept (a claim that could never win is not worth memory), and at most `max_names` names.
#[derive(Debug, Clone, Default)]
pub struct ClaimStore {
    names: BTreeMap<String, Vec<Claim>>,
    max_names: usize,
}

/// Claims kept per name: the winner and runners-up (in case the winner expires).
pub const KEEP_PER_NAME: usize = 4;

impl ClaimStore {
    /// A store of at most `max_names` names.
    pub fn new(max_names: usize) -> ClaimStore {
        ClaimStore {
            names: BTreeMap::new(),
            max_names,
        }
    }

    /// Adds a verified claim; a newer claim of the same name and key replaces the older one.
    /// Returns whether the store changed.
    pub fn insert(&mut self, c: Claim) -> bool {
        if !self.names.contains_key(&c.name) && self.names.len() >= self.max_names {
            return false;
        }
        let list = self.names.entry(c.name.clone()).or_default();
        if let Some(old) = list.iter_mut().find(|o| o.key == c.key) {
            if c.epoch > old.epoch || (c.epoch == old.epoch && c.work_hash() < old.work_hash()) {
                *old = c;
                return true;
            }
            return false;
        }
        list.push(c);
        list.sort_by_key(|c| (c.work_hash(), c.key));
        list.truncate(KEEP_PER_NAME);
        true
    }

    /// Drops expired claims.
    pub fn expire(&mut self, now_epoch: u32) {
        for list in self.names.values_mut() {
            list.retain(|c| now_epoch <= c.epoch.saturating_add(VALID_EPOCHS));
        }
        self.names.retain(|_, l| !l.is_empty());
    }

    /// The current owner of `name`.
    pub fn owner(&self, name: &str) -> Option<&Claim> {
        winner(self.names.get(name)?)
    }

    /// Every claim held for `name`.
    pub fn claims(&self, name: &str) -> &[Claim] {
        self.names.get(name).map_or(&[], Vec::as_slice)
    }

    /// Every claim held.
    pub fn all(&self) -> impl Iterator<Item = &Claim> {
        self.names.values().flatten()
    }
}

/// What a client decides about a network answer for a name, given its pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinCheck {
    /// First resolution: the key is now pinned.
    Pinned,
    /// The network agrees with the pin.
    Same,
    /// The network now names another key; the pinned one is kept until the user accepts.
    Conflict {
        /// The key the client keeps using.
        pinned: [u8; 32],
        /// The key the network's claims now select.
        offered: [u8; 32],
    },
}

/// Keys pinned per name: the first key a name resolved to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pins {
    pins: BTreeMap<String, [u8; 32]>,
}

impl Pins {
    /// Checks the network's `key` for `name` against the pin (pinning it if there is none) and
    /// returns the decision; the key to use is the pin in every case.
    pub fn check(&mut self, name: &str, key: [u8; 32]) -> PinCheck {
        match self.pins.get(name) {
            None => {
                self.pins.insert(name.to_string(), key);
                PinCheck::Pinned
            }
            Some(p) if *p == key => PinCheck::Same,
            Some(p) => PinCheck::Conflict {
                pinned: *p,
                offered: key,
            },
        }
    }

    /// The pinned key of `name`.
    pub fn get(&self, name: &str) -> Option<[u8; 32]> {
        self.pins.get(name).copied()
    }

    /// The user accepts `key` for `name`.
    pub fn accept(&mut self, name: &str, key: [u8; 32]) {
        self.pins.insert(name.to_string(), key);
    }

    /// The pins as a file holds them: `NAME HEX-KEY` lines.
    pub fn to_text(&self) -> String {
        self.pins
            .iter()
            .map(|(n, k)| format!("{n} {}\n", hex::encode(k)))
            .collect()
    }

    /// Pins read back from [`Pins::to_text`]; lines that do not parse are skipped (the file is
    /// the daemon's own, rewritten whole on every change).
    pub fn from_text(text: &str) -> Pins {
        let pins = text
            .lines()
            .filter_map(|l| {
                let (n, k) = l.split_once(' ')?;
                let k: [u8; 32] = hex::decode(k.trim()).ok()?.try_into().ok()?;
                claimable(n).then(|| (n.to_string(), k))
            })
            .collect();
        Pins { pins }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPOCH: u32 = 20_000;

    fn key(i: u8) -> SigningKey {
        SigningKey::from_bytes(&[i; 32])
    }

    /// The two claims of `cheesy` in the vectors, by different keys, as received: proof of work
    /// at full price is slow in a debug build, so the tests reuse the script's.
    fn vector_claims() -> Vec<Claim> {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/vectors/name_claims.json")).unwrap();
        doc["claims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                let bytes = hex::decode(v["claim"].as_str().unwrap()).unwrap();
                Claim::decode(&bytes, EPOCH).unwrap()
            })
            .collect()
    }

    /// A claim with whatever work `nonce` shows (the store and the winner rule do not check it).
    fn cheap(name: &str, k: &SigningKey, nonce: u64) -> Claim {
        Claim::sign(name, k, EPOCH, nonce).unwrap()
    }

    #[test]
    fn round_trip_and_checks() {
        let c = vector_claims().remove(0);
        let k = key(1);
        let bytes = c.encode();
        let e = c.epoch;
        assert_eq!(Claim::decode(&bytes, e).unwrap(), c);
        assert_eq!(Claim::decode(&bytes, e + VALID_EPOCHS).unwrap(), c);
        assert_eq!(Claim::decode(&bytes, e - 1).unwrap(), c);
        assert_eq!(
            Claim::decode(&bytes, e + VALID_EPOCHS + 1),
            Err(ClaimError::Expired)
        );
        assert_eq!(Claim::decode(&bytes, e - 2), Err(ClaimError::Expired));
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 1;
            assert!(Claim::decode(&b, e).is_err(), "byte {i}");
        }
        assert_eq!(
            Claim::decode(&bytes[..bytes.len() - 1], e),
            Err(ClaimError::Length)
        );
        // Too little work.
        let lazy = (0..)
            .map(|n| cheap("cheesy", &k, n))
            .find(|c| c.work_bits() < MIN_WORK_BITS)
            .unwrap();
        assert_eq!(Claim::decode(&lazy.encode(), EPOCH), Err(ClaimError::Work));
        assert!(c.key_name().is_some());
    }

    /// A claim made by `tests/vectors/make_name_claims.py` (Python, not this code).
    #[test]
    fn matches_independent_vectors() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/vectors/name_claims.json")).unwrap();
        for v in doc["claims"].as_array().unwrap() {
            let seed: [u8; 32] = hex::decode(v["seed"].as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap();
            let name = v["name"].as_str().unwrap();
            let epoch = v["epoch"].as_u64().unwrap() as u32;
            let nonce = v["nonce"].as_u64().unwrap();
            let c = Claim::sign(name, &SigningKey::from_bytes(&seed), epoch, nonce).unwrap();
            assert_eq!(hex::encode(c.encode()), v["claim"].as_str().unwrap());
            assert_eq!(hex::encode(c.work_hash()), v["work_hash"].as_str().unwrap());
            assert_eq!(hex::encode(dht_key(name)), v["dht_key"].as_str().unwrap());
            let bytes = hex::decode(v["claim"].as_str().unwrap()).unwrap();
            assert_eq!(Claim::decode(&bytes, epoch).unwrap(), c);
            // The nonce is the first with enough work from 0, as the script searched.
            assert_eq!(c.work_bits() as u64, v["work_bits"].as_u64().unwrap());
        }
        let w = &doc["winner"];
        let claims: Vec<Claim> = w["claims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| Claim::decode(&hex::decode(c.as_str().unwrap()).unwrap(), 20_001).unwrap())
            .collect();
        for order in [[0, 1], [1, 0]] {
            let owner = winner(order.iter().map(|&i| &claims[i])).unwrap();
            assert_eq!(hex::encode(owner.key), w["owner"].as_str().unwrap());
        }
    }

    #[test]
    fn key_names_and_bad_labels_cannot_be_claimed() {
        let keyname = KeyName::of(&key(3).verifying_key()).label();
        assert!(!claimable(&keyname));
        assert!(!claimable("a.b") && !claimable("") && !claimable("-x") && !claimable("A"));
        assert!(claimable("cheesy"));
        assert_eq!(
            Claim::sign(&keyname, &key(3), EPOCH, 0),
            Err(ClaimError::Name)
        );
    }

    /// Two partitions each issue `cheesy` to a different key; after they merge, every node,
    /// whatever order it saw the claims in, agrees on one owner: the claim with more work.
    #[test]
    fn partitions_that_issued_the_same_name_agree_after_merging() {
        let [ca, cb]: [Claim; 2] = vector_claims().try_into().unwrap();
        assert_ne!(ca.key, cb.key);
        // Each partition's nodes: before the merge each sees its own claim as the owner.
        let mut left: Vec<ClaimStore> = (0..5).map(|_| ClaimStore::new(100)).collect();
        let mut right: Vec<ClaimStore> = (0..5).map(|_| ClaimStore::new(100)).collect();
        for s in &mut left {
            s.insert(ca.clone());
            assert_eq!(s.owner("cheesy").unwrap().key, ca.key);
        }
        for s in &mut right {
            s.insert(cb.clone());
            assert_eq!(s.owner("cheesy").unwrap().key, cb.key);
        }
        // Merge: every node learns the other side's claims (gossip order differs per side).
        for s in &mut left {
            s.insert(cb.clone());
        }
        for s in &mut right {
            s.insert(ca.clone());
        }
        let expected = if ca.work_hash() < cb.work_hash() {
            &ca
        } else {
            &cb
        };
        // The script's choice too: more leading zero bits won (22 against 20).
        assert_eq!(expected.work_bits(), 22);
        for s in left.iter().chain(&right) {
            assert_eq!(s.owner("cheesy").unwrap(), expected);
        }
        // A later claim with less work by a third key changes nothing anywhere.
        let weak = (0..)
            .map(|n| cheap("cheesy", &key(12), n))
            .find(|c| c.work_hash() > expected.work_hash())
            .unwrap();
        for s in left.iter_mut().chain(&mut right) {
            s.insert(weak.clone());
            assert_eq!(s.owner("cheesy").unwrap(), expected);
        }
    }

    #[test]
    fn refresh_replaces_and_expiry_drops() {
        let k = key(20);
        let c = cheap("pizza", &k, 0);
        let mut s = ClaimStore::new(1);
        assert!(s.insert(c.clone()));
        let mut newer = c.clone();
        newer.epoch += 1;
        assert!(s.insert(newer.clone()));
        assert_eq!(s.claims("pizza"), &[newer]);
        // The store is bounded in names.
        assert!(!s.insert(cheap("other", &k, 0)));
        s.expire(EPOCH + 1 + VALID_EPOCHS + 1);
        assert!(s.owner("pizza").is_none());
    }

    #[test]
    fn pins_keep_the_first_key_until_accepted() {
        let mut p = Pins::default();
        assert_eq!(p.check("alice", [1; 32]), PinCheck::Pinned);
        assert_eq!(p.check("alice", [1; 32]), PinCheck::Same);
        assert_eq!(
            p.check("alice", [2; 32]),
            PinCheck::Conflict {
                pinned: [1; 32],
                offered: [2; 32]
            }
        );
        assert_eq!(p.get("alice"), Some([1; 32]));
        p.accept("alice", [2; 32]);
        assert_eq!(p.check("alice", [2; 32]), PinCheck::Same);
        assert_eq!(Pins::from_text(&p.to_text()), p);
        assert_eq!(Pins::from_text("junk\nalice zz\n"), Pins::default());
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(0u8.., 0..200)) {
            let _ = Claim::decode(&bytes, EPOCH);
        }
    }
}
