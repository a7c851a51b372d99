//! Proof of work on introductions (docs/protocol.md 10.12): the extension a client appends to
//! INTRODUCE1 and the puzzle it solves. The puzzle is the project's hashcash
//! ([`crate::crypto::pow`]) on the effort scale: `effort` is the expected number of hashes.
//!
//! The work is bound to what makes an introduction single use: the service's seed (from the
//! descriptor; it rotates, so nothing can be solved before it is published), the intro point's
//! auth key and the client's ephemeral `E_c` (fresh per INTRODUCE1, and authenticated by
//! `msg1`'s AEAD, so a proof cannot be moved to another `msg1`). A service checks it with one
//! hash, before any public-key work.

use crate::crypto::labels::LABEL_INTRO_POW;
use crate::crypto::pow;

/// Length of the extension: `seed_id` (4) ‖ `effort` u32 ‖ `nonce` u64.
pub const INTRO_POW_LEN: usize = 16;
/// Length of a service's puzzle seed.
pub const POW_SEED_LEN: usize = 16;
/// Length of the puzzle context: `seed` ‖ `auth_key` ‖ `E_c` ‖ `effort`.
pub const POW_CONTEXT_LEN: usize = POW_SEED_LEN + 32 + 32 + 4;

/// The default of `[client] pow_max_effort`: about a second of one core's hashing in a release
/// build (docs/benchmarks.md), the most a client pays for one introduction.
pub const POW_CLIENT_MAX_EFFORT: u32 = 1 << 24;
/// The first effort a client offers on its own after an unanswered introduction, where the
/// descriptor asked for less.
pub const POW_CLIENT_FIRST_EFFORT: u32 = 1000;

/// The effort after an introduction left unanswered: twice the last (or the descriptor's, or
/// [`POW_CLIENT_FIRST_EFFORT`]), at most `max`.
pub fn next_effort(last: u32, suggested: u32, max: u32) -> u32 {
    last.max(suggested)
        .saturating_mul(2)
        .max(POW_CLIENT_FIRST_EFFORT)
        .min(max)
}

/// The proof-of-work extension of INTRODUCE1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntroPow {
    /// The first 4 bytes of the seed the work was done for.
    pub seed_id: [u8; 4],
    /// The effort claimed (expected hashes).
    pub effort: u32,
    /// The nonce.
    pub nonce: u64,
}

impl IntroPow {
    /// Reads the 16 extension bytes (every value is well-formed).
    pub fn parse(b: &[u8; INTRO_POW_LEN]) -> IntroPow {
        let [s0, s1, s2, s3, e0, e1, e2, e3, n0, n1, n2, n3, n4, n5, n6, n7] = *b;
        IntroPow {
            seed_id: [s0, s1, s2, s3],
            effort: u32::from_be_bytes([e0, e1, e2, e3]),
            nonce: u64::from_be_bytes([n0, n1, n2, n3, n4, n5, n6, n7]),
        }
    }

    /// The 16 extension bytes.
    pub fn emit(&self) -> [u8; INTRO_POW_LEN] {
        let mut out = [0u8; INTRO_POW_LEN];
        out[..4].copy_from_slice(&self.seed_id);
        out[4..8].copy_from_slice(&self.effort.to_be_bytes());
        out[8..].copy_from_slice(&self.nonce.to_be_bytes());
        out
    }

    /// Whether this proof shows its effort (at least 1) for `seed`, `auth_key` and `E_c`. One
    /// SHA-256 over 110 bytes: cheaper than anything else done for an introduction.
    pub fn verify(&self, seed: &[u8; POW_SEED_LEN], auth_key: &[u8; 32], e_c: &[u8; 32]) -> bool {
        if self.effort == 0 || self.seed_id != seed_id(seed) {
            return false;
        }
        let ctx = context(seed, auth_key, e_c, self.effort);
        pow::meets_effort(
            &pow::pow_hash(LABEL_INTRO_POW, &ctx, self.nonce),
            self.effort,
        )
    }

    /// The hash the proof shows (its replay-cache key at the service).
    pub fn hash(&self, seed: &[u8; POW_SEED_LEN], auth_key: &[u8; 32], e_c: &[u8; 32]) -> [u8; 32] {
        pow::pow_hash(
            LABEL_INTRO_POW,
            &context(seed, auth_key, e_c, self.effort),
            self.nonce,
        )
    }
}

/// A puzzle the session layer wants solved (10.12). Solving at the client's cap takes about a
/// second in a release build, so the layer does not solve on the node's task: it hands this to
/// its driver, which solves it where it likes (the daemon on a blocking thread, the simulator
/// inline) and gives [`SolveRequest::token`] and the answer back to
/// [`crate::node::Node::pow_solved`]. Holds no secret: the seed and the auth key are in the
/// descriptor, `E_c` goes out in clear in `msg1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SolveRequest {
    /// Names the introduction attempt the answer is for.
    pub token: u64,
    /// The service's seed.
    pub seed: [u8; POW_SEED_LEN],
    /// The intro point's auth key.
    pub auth_key: [u8; 32],
    /// The client's ephemeral of this INTRODUCE1.
    pub e_c: [u8; 32],
    /// The effort to show.
    pub effort: u32,
    /// The first nonce to try (random, so that two clients do not search the same nonces).
    pub start: u64,
}

impl SolveRequest {
    /// Solves it (blocks for about `effort` hashes; `None` only if every nonce fails).
    pub fn solve(&self) -> Option<IntroPow> {
        solve(
            &self.seed,
            &self.auth_key,
            &self.e_c,
            self.effort,
            self.start,
            u64::MAX,
        )
    }
}

/// A seed's id: its first 4 bytes.
pub fn seed_id(seed: &[u8; POW_SEED_LEN]) -> [u8; 4] {
    [seed[0], seed[1], seed[2], seed[3]]
}

/// The puzzle context `seed ‖ auth_key ‖ E_c ‖ u32(effort)`.
pub fn context(
    seed: &[u8; POW_SEED_LEN],
    auth_key: &[u8; 32],
    e_c: &[u8; 32],
    effort: u32,
) -> [u8; POW_CONTEXT_LEN] {
    let mut c = [0u8; POW_CONTEXT_LEN];
    c[..16].copy_from_slice(seed);
    c[16..48].copy_from_slice(auth_key);
    c[48..80].copy_from_slice(e_c);
    c[80..].copy_from_slice(&effort.to_be_bytes());
    c
}

/// Solves the puzzle at `effort` (at least 1), trying nonces from `start`; `None` after
/// `max_tries` hashes.
pub fn solve(
    seed: &[u8; POW_SEED_LEN],
    auth_key: &[u8; 32],
    e_c: &[u8; 32],
    effort: u32,
    start: u64,
    max_tries: u64,
) -> Option<IntroPow> {
    let effort = effort.max(1);
    let ctx = context(seed, auth_key, e_c, effort);
    pow::solve_effort(LABEL_INTRO_POW, &ctx, effort, start, max_tries).map(|nonce| IntroPow {
        seed_id: seed_id(seed),
        effort,
        nonce,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_verifies_and_binds() {
        let seed = [7u8; POW_SEED_LEN];
        let p = solve(&seed, &[1; 32], &[2; 32], 2000, 0, 1 << 24).unwrap();
        assert_eq!(IntroPow::parse(&p.emit()), p);
        assert!(p.verify(&seed, &[1; 32], &[2; 32]));
        // Bound to the seed, the auth key, the ephemeral and the effort (fixed inputs, so these
        // hold every run; a random other input would pass with probability 1/2000).
        assert!(!p.verify(&[8u8; POW_SEED_LEN], &[1; 32], &[2; 32]));
        let mut other_seed = seed;
        other_seed[5] ^= 1;
        assert!(!p.verify(&other_seed, &[1; 32], &[2; 32]));
        assert!(!p.verify(&seed, &[9; 32], &[2; 32]));
        assert!(!p.verify(&seed, &[1; 32], &[9; 32]));
        let mut claimed = p;
        claimed.effort = 1 << 30;
        assert!(!claimed.verify(&seed, &[1; 32], &[2; 32]));
        // Effort 0 is no proof at all.
        claimed.effort = 0;
        assert!(!claimed.verify(&seed, &[1; 32], &[2; 32]));
    }

    fn unhex(v: &serde_json::Value) -> Vec<u8> {
        hex::decode(v.as_str().unwrap()).unwrap()
    }

    fn a<const N: usize>(v: &serde_json::Value) -> [u8; N] {
        unhex(v).try_into().unwrap()
    }

    /// Known answers from tests/vectors/make_intro_pow.py (hashlib, not this code).
    #[test]
    fn known_answers() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/vectors/intro_pow.json")).unwrap();
        for c in doc["cases"].as_array().unwrap() {
            let (seed, auth, e_c) = (
                a::<16>(&c["seed"]),
                a::<32>(&c["auth_key"]),
                a::<32>(&c["client_ephemeral"]),
            );
            let effort = c["effort"].as_u64().unwrap() as u32;
            let p = solve(&seed, &auth, &e_c, effort, 0, 1 << 24).unwrap();
            assert_eq!(p.nonce, c["nonce"].as_u64().unwrap());
            assert_eq!(p.hash(&seed, &auth, &e_c).to_vec(), unhex(&c["hash"]));
            assert_eq!(p.emit().to_vec(), unhex(&c["ext"]));
            assert!(p.verify(&seed, &auth, &e_c));
            let mut msg1 = [0u8; crate::session::E2E_MSG1_LEN];
            msg1[..32].copy_from_slice(&e_c);
            msg1[32..].copy_from_slice(&unhex(&c["msg1_rest"]));
            let body = crate::session::Introduce1 {
                auth_key: auth,
                msg1,
                pow: Some(p),
            }
            .emit();
            assert_eq!(body, unhex(&c["introduce1"]));
        }
        for c in doc["effort_checks"].as_array().unwrap() {
            let h = a::<32>(&c["hash"]);
            let effort = c["effort"].as_u64().unwrap() as u32;
            assert_eq!(
                pow::meets_effort(&h, effort),
                c["passes"].as_bool().unwrap()
            );
        }
        let t = &doc["desc_tlv"];
        let params = crate::dht::desc_pow::PowParams {
            seed: a::<16>(&t["seed"]),
            effort: t["effort"].as_u64().unwrap() as u32,
        };
        let mut area = [0u8; 32];
        assert!(params.emit_tlv(&mut area));
        assert_eq!(area.to_vec(), unhex(&t["area"]));
    }
}
