//! The per-hop key schedule (docs/protocol.md sections 6.3 and 8.2): the `HOP_KEYS_LEN` bytes of
//! handshake key material, split into the keys and offsets one hop of a circuit uses.

use core::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::wideblock::WbKeys;

/// Key material derived per hop: `AUTH` 32 ‖ `k_sm` 32 ‖ `bind` 32 ‖ `Kf1..4` 128 ‖ `Kb1..4` 128 ‖
/// `Df` 8 ‖ `Db` 8.
pub const HOP_KEYS_LEN: usize = 368;
/// Gap between a hop's own backward origin sequence and the next hop's (6.6).
pub const BACKWARD_SEQ_GAP: u64 = 64;

/// What one hop of a circuit (and the client, for that hop) keeps from the handshake.
/// Erased on drop; `Debug` shows nothing secret.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct HopKeys {
    pub(crate) kf: WbKeys,
    pub(crate) kb: WbKeys,
    pub(crate) df: u64,
    pub(crate) db: u64,
    bind: [u8; 32],
}

impl fmt::Debug for HopKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HopKeys(<secret>)")
    }
}

/// The parts of the key material only the handshake uses.
pub(crate) struct HandshakeKeys {
    pub(crate) auth: [u8; 32],
    pub(crate) k_sm: [u8; 32],
}

impl Drop for HandshakeKeys {
    fn drop(&mut self) {
        self.auth.zeroize();
        self.k_sm.zeroize();
    }
}

fn take<const N: usize>(src: &mut &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some((head, rest)) = src.split_first_chunk::<N>() {
        out = *head;
        *src = rest;
    }
    out
}

fn take4(src: &mut &[u8]) -> [[u8; 32]; 4] {
    [take(src), take(src), take(src), take(src)]
}

impl HopKeys {
    /// Keys from their parts.
    pub fn new(kf: [[u8; 32]; 4], kb: [[u8; 32]; 4], df: u64, db: u64, bind: [u8; 32]) -> Self {
        HopKeys {
            kf: WbKeys::new(kf),
            kb: WbKeys::new(kb),
            df,
            db,
            bind,
        }
    }

    /// Split `HOP_KEYS_LEN` bytes of key material (8.2 step 4). The material itself is not kept.
    pub fn from_material(km: &[u8; HOP_KEYS_LEN]) -> Self {
        Self::split(km).0
    }

    pub(crate) fn split(km: &[u8; HOP_KEYS_LEN]) -> (Self, HandshakeKeys) {
        let mut rest: &[u8] = km;
        let auth = take(&mut rest);
        let k_sm = take(&mut rest);
        let bind = take(&mut rest);
        let mut kf = take4(&mut rest);
        let mut kb = take4(&mut rest);
        let df = u64::from_be_bytes(take(&mut rest));
        let db = u64::from_be_bytes(take(&mut rest));
        let keys = HopKeys::new(kf, kb, df, db, bind);
        kf.zeroize();
        kb.zeroize();
        (keys, HandshakeKeys { auth, k_sm })
    }

    /// `bind`: a value only this hop and the client know (used by ESTABLISH_INTRO, 10.6).
    pub fn bind(&self) -> &[u8; 32] {
        &self.bind
    }

    /// `Df`, the forward seq offset of this hop.
    pub fn forward_offset(&self) -> u64 {
        self.df
    }

    /// `Db`, the backward seq offset of this hop.
    pub fn backward_offset(&self) -> u64 {
        self.db
    }

    /// Constant-time equality of every key and offset (for known-answer tests).
    pub fn ct_eq(&self, other: &HopKeys) -> bool {
        use subtle::ConstantTimeEq;
        self.kf.ct_eq(&other.kf)
            & self.kb.ct_eq(&other.kb)
            & bool::from(self.bind.ct_eq(&other.bind))
            & bool::from(self.df.ct_eq(&other.df))
            & bool::from(self.db.ct_eq(&other.db))
    }
}

/// `W_{j+1}` from `W_j` and `Db_j` (6.6): `(W_j − Db_j) + BACKWARD_SEQ_GAP`.
pub fn next_backward_seq_start(w_j: u64, db_j: u64) -> u64 {
    w_j.wrapping_sub(db_j).wrapping_add(BACKWARD_SEQ_GAP)
}
