//! Signed bytes already verified (relay records, exit policies, descriptors) and public keys
//! already checked (`crypto::keys::decode_public_key`: canonical, torsion-free), so the same
//! bytes arriving again cost a SHA-256 instead of an Ed25519 verification or a scalar
//! multiplication.
//!
//! The same relay record reaches a node many times (every HELLO of a relay, every PEX answer,
//! every DHT reply naming it, replicas of one descriptor): a stranger resending a valid record
//! would otherwise buy a ~50 µs verification for one datagram, a cheap CPU flood. A verification
//! is a pure function of the bytes, so remembering that exactly these bytes (key, signature and
//! message all inside them) passed is as good as verifying them again.
//!
//! What it must never do: say "verified" for bytes that were not. Only successes are stored, and
//! the key is a SHA-256 of the whole signed object under a label of its kind, so bytes that
//! differ anywhere (the signature included) miss. The table is fixed-size and direct-mapped: a
//! new entry overwrites whatever shared its slot, so the worst a flooder can do is make us verify
//! as if there were no cache. It is one table per process (one node in the daemon, which charges
//! [`SIG_CACHE_BYTES`] to its memory budget; in the in-process network all nodes share it, which
//! changes CPU time only, never what a node decides).

use sha2::{Digest, Sha256};
use std::sync::Mutex;

/// Entries in the table (a power of two).
pub const SIG_CACHE_ENTRIES: usize = 1 << 15;
/// Bytes the table holds once used (32 per entry: 1 MiB).
pub const SIG_CACHE_BYTES: usize = SIG_CACHE_ENTRIES * 32;

/// Prefix of the memo's hash input; it never leaves the process.
const LABEL_SIG_CACHE: &[u8] = b"globalnet verified-signature cache v1";

static TABLE: Mutex<Vec<[u8; 32]>> = Mutex::new(Vec::new());

/// The memo key of one signed object of kind `kind` (a label of its signature), whose `bytes`
/// hold the key, the message and the signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Verified([u8; 32]);

impl Verified {
    /// The key of `bytes`, which must contain everything the verification reads.
    pub fn key(kind: &[u8], bytes: &[u8]) -> Verified {
        let mut h = Sha256::new();
        h.update(LABEL_SIG_CACHE);
        h.update((kind.len() as u64).to_be_bytes());
        h.update(kind);
        h.update(bytes);
        Verified(h.finalize().into())
    }

    /// Whether these exact bytes passed before.
    pub fn seen(&self) -> bool {
        // A poisoned lock only means another thread panicked mid-update of a slot: treat it as
        // a miss and verify (never a false "seen").
        let Ok(t) = TABLE.lock() else { return false };
        t.get(self.slot()).is_some_and(|e| *e == self.0)
    }

    /// Records that these bytes passed; call only after a successful verification.
    pub fn remember(&self) {
        let Ok(mut t) = TABLE.lock() else { return };
        if t.is_empty() {
            t.resize(SIG_CACHE_ENTRIES, [0u8; 32]);
        }
        let i = self.slot();
        if let Some(e) = t.get_mut(i) {
            *e = self.0;
        }
    }

    fn slot(&self) -> usize {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        (u64::from_le_bytes(b) as usize) & (SIG_CACHE_ENTRIES - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_bytes_of_the_same_kind_hit() {
        let a = Verified::key(b"kind a", b"some signed bytes 1");
        assert!(!a.seen());
        a.remember();
        assert!(a.seen());
        assert!(!Verified::key(b"kind b", b"some signed bytes 1").seen());
        assert!(!Verified::key(b"kind a", b"some signed bytes 2").seen());
        // A kind that ends where the bytes begin does not collide.
        assert!(!Verified::key(b"kind a", b"some signed bytes 1")
            .eq(&Verified::key(b"kind as", b"ome signed bytes 1")));
    }

    #[test]
    fn a_colliding_slot_evicts() {
        let a = Verified::key(b"k", b"x");
        a.remember();
        // Find another key in the same slot.
        let b = (0u32..)
            .map(|i| Verified::key(b"k", &i.to_be_bytes()))
            .find(|b| b.slot() == a.slot() && *b != a)
            .unwrap();
        b.remember();
        assert!(b.seen());
        assert!(!a.seen());
    }
}
