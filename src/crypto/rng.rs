//! Where a node's random numbers come from (docs/threat-model.md, "Randomness").
//!
//! Two kinds, kept apart:
//!
//! - **Secrets** (circuit and end-to-end handshake ephemerals, intro-point auth keys, rendezvous
//!   cookies, descriptor salts) come from a [`SecretRng`]. In the daemon that is the operating
//!   system's generator, read afresh for every secret: no generator state in our memory, so a
//!   snapshot of the process gives back no past ephemeral. The only other kind of `SecretRng` is
//!   a seeded one for the in-process network, and its constructor is private to this crate and
//!   called from `src/sim.rs` alone (a test in `tests/randomness.rs` keeps it so).
//! - **Choices** (path selection, jitter, timers, circuit and RPC ids, sampling) come from a
//!   seeded [`StdRng`] per layer, so a simulation repeats for a seed. The daemon seeds it with
//!   256 bits from the operating system; nothing seeds a generator from a `u64` outside the
//!   simulator and test modules. Values that only need to be unguessable while they live (RPC
//!   ids, probe nonces, relayed-link tokens) may come from here: the generator is a CSPRNG and
//!   its 256-bit seed is unknown outside the process.
//!
//! This module never logs or prints a seed or generator state.

use rand::rngs::{OsRng, StdRng};
use rand::{CryptoRng, RngCore, SeedableRng};
use sha2::{Digest, Sha256};

/// Domain separation of the seeds of a node's parts. Local only (never on the wire, so not in
/// `labels::ALL`).
const LABEL_RNG_SPLIT: &[u8] = b"globalnet local rng split v1";

/// The generator for secret material. Implements `RngCore + CryptoRng`.
pub struct SecretRng(Source);

enum Source {
    /// The operating system's generator (getrandom), read for every request.
    Os,
    /// A seeded generator: the in-process network only (see [`Randomness::simulated`]).
    Simulated(Box<StdRng>),
}

impl SecretRng {
    /// The operating system's generator.
    pub fn os() -> SecretRng {
        SecretRng(Source::Os)
    }

    /// Whether this generator reads the operating system's (true everywhere but in the
    /// in-process network).
    pub fn is_os(&self) -> bool {
        matches!(self.0, Source::Os)
    }

    /// An independent generator of the same kind, for another layer of the same node.
    fn fork(&mut self) -> SecretRng {
        match &mut self.0 {
            Source::Os => SecretRng(Source::Os),
            Source::Simulated(r) => {
                let mut seed = [0u8; 32];
                r.fill_bytes(&mut seed);
                SecretRng(Source::Simulated(Box::new(StdRng::from_seed(seed))))
            }
        }
    }
}

impl std::fmt::Debug for SecretRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Source::Os => "SecretRng(os)",
            Source::Simulated(_) => "SecretRng(simulated)",
        })
    }
}

impl RngCore for SecretRng {
    fn next_u32(&mut self) -> u32 {
        match &mut self.0 {
            Source::Os => OsRng.next_u32(),
            Source::Simulated(r) => r.next_u32(),
        }
    }

    fn next_u64(&mut self) -> u64 {
        match &mut self.0 {
            Source::Os => OsRng.next_u64(),
            Source::Simulated(r) => r.next_u64(),
        }
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        match &mut self.0 {
            Source::Os => OsRng.fill_bytes(dest),
            Source::Simulated(r) => r.fill_bytes(dest),
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        match &mut self.0 {
            Source::Os => OsRng.try_fill_bytes(dest),
            Source::Simulated(r) => r.try_fill_bytes(dest),
        }
    }
}

// Both sources are cryptographically secure; the simulated one is merely known to the test.
impl CryptoRng for SecretRng {}

/// The randomness one layer (or one node, split among its layers) is built with: a 256-bit seed
/// for its choices and a generator for its secrets.
#[derive(Debug)]
pub struct Randomness {
    choices: [u8; 32],
    secrets: SecretRng,
}

impl Randomness {
    /// Everything from the operating system: what the daemon uses.
    pub fn from_os() -> Randomness {
        let mut choices = [0u8; 32];
        OsRng.fill_bytes(&mut choices);
        Randomness {
            choices,
            secrets: SecretRng::os(),
        }
    }

    /// Reproducible choices, secrets still from the operating system (benchmarks, tests that
    /// need a repeatable path but no repeatable keys).
    pub fn with_choice_seed(choices: [u8; 32]) -> Randomness {
        Randomness {
            choices,
            secrets: SecretRng::os(),
        }
    }

    /// Reproducible choices and reproducible secrets: the in-process network only, so that a
    /// failing seed replays byte for byte. Never reachable from the daemon.
    pub(crate) fn simulated(seed: [u8; 32]) -> Randomness {
        let secrets = StdRng::from_seed(derive(&seed, b"secrets"));
        Randomness {
            choices: seed,
            secrets: SecretRng(Source::Simulated(Box::new(secrets))),
        }
    }

    /// Randomness for one part of this node, independent of every other part's (`label` names
    /// the part; two parts never share a label).
    pub fn split(&mut self, label: &str) -> Randomness {
        Randomness {
            choices: derive(&self.choices, label.as_bytes()),
            secrets: self.secrets.fork(),
        }
    }

    /// The generator for this part's choices.
    pub fn choices(&self) -> StdRng {
        StdRng::from_seed(self.choices)
    }

    /// The generator for this part's secrets.
    pub fn into_secrets(self) -> SecretRng {
        self.secrets
    }

    /// Both generators.
    pub fn into_parts(self) -> (StdRng, SecretRng) {
        (StdRng::from_seed(self.choices), self.secrets)
    }
}

fn derive(seed: &[u8; 32], label: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(LABEL_RNG_SPLIT);
    h.update(seed);
    h.update(label);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn os_secrets_differ_for_the_same_choice_seed() {
        let (mut c1, mut s1) = Randomness::with_choice_seed([9; 32]).into_parts();
        let (mut c2, mut s2) = Randomness::with_choice_seed([9; 32]).into_parts();
        assert_eq!(c1.gen::<[u8; 32]>(), c2.gen::<[u8; 32]>());
        assert_ne!(s1.gen::<[u8; 32]>(), s2.gen::<[u8; 32]>());
        assert!(s1.is_os() && s2.is_os());
    }

    #[test]
    fn split_parts_are_independent_and_keep_the_kind() {
        let mut r = Randomness::simulated([1; 32]);
        let (mut a, mut sa) = r.split("a").into_parts();
        let (mut b, mut sb) = r.split("b").into_parts();
        assert_ne!(a.gen::<u64>(), b.gen::<u64>());
        assert_ne!(sa.gen::<u64>(), sb.gen::<u64>());
        assert!(!sa.is_os());
        // The same seed replays: the simulator's promise.
        let mut r2 = Randomness::simulated([1; 32]);
        let (_, mut sa2) = r2.split("a").into_parts();
        let (_, mut sa) = Randomness::simulated([1; 32]).split("a").into_parts();
        assert_eq!(sa.gen::<u64>(), sa2.gen::<u64>());
        assert!(Randomness::from_os().into_secrets().is_os());
    }
}
