//! Replay windows over received cell sequence numbers (docs/protocol.md section 6.7).
//!
//! A window is `top` plus a bitmap of [`REPLAY_WINDOW_CELLS`] bits, empty until the first marked
//! seq. For a received `seq`, with `d = signed(seq − top)`:
//!
//! - `0 < d ≤ MAX_SEQ_JUMP`: accepted; marking shifts the bitmap by `d` and sets `top = seq`;
//! - `d > MAX_SEQ_JUMP`: refused, and the caller destroys the circuit: every later seq would be
//!   refused too, and a circuit that lost that many cells in a row is treated like one whose
//!   relay died (its flows move);
//! - `−1024 < d ≤ 0`: accepted if the bit for `seq` is clear; marking sets it;
//! - otherwise: refused as too old.
//!
//! Checking and marking are separate: the ends of a circuit mark only after the check field
//! passed, so garbage cannot poison their windows. Fixed size, no allocation.
//!
//! The mechanism is [`SeqWindow`], generic over its size and largest jump; the session layer's
//! window over e2e counters (10.4) is the same one with its own sizes.

use core::fmt;

/// Bits in a replay window.
pub const REPLAY_WINDOW_CELLS: usize = 1024;
/// The largest forward jump a window accepts (6.7). A jump of `d` means `d − 1` cells lost in a
/// row upstream (or `d − 1` overtaken by this one). Reordering needs at most
/// [`REPLAY_WINDOW_CELLS`] (older cells are refused anyway); a TCP flow, one per circuit, never
/// has more than its window in flight — Linux's largest default receive buffer, 6 MiB, is about
/// 5,200 cells of 1,220-byte segments — and 8,192 cells are ~240 ms of total loss for a sender
/// that does not back off at 400 Mbit/s. A bigger jump destroys the circuit (reason 1), and its
/// flows move as on a relay death. It also bounds what a tagging relay can say with one cell's
/// seq: fewer than 2^13.2 values (threat model, 6.1).
pub const MAX_SEQ_JUMP: u64 = 8_192;

/// Why a seq was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayError {
    /// Seen before.
    Replay,
    /// More than [`MAX_SEQ_JUMP`] (the window's largest jump) ahead of the newest seq: the
    /// circuit is destroyed.
    TooFarAhead,
    /// [`REPLAY_WINDOW_CELLS`] (the window's size) or more behind the newest seq.
    TooOld,
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplayError::Replay => "replayed cell",
            ReplayError::TooFarAhead => "cell seq too far ahead",
            ReplayError::TooOld => "cell seq too old",
        })
    }
}

impl std::error::Error for ReplayError {}

/// A replay window for one hop and one direction.
pub type ReplayWindow = SeqWindow<{ REPLAY_WINDOW_CELLS / 64 }, MAX_SEQ_JUMP>;

/// A replay window of `64 × WORDS` bits over sequence numbers that may wrap around 2^64, which
/// accepts forward jumps of at most `MAX_JUMP` (the rules above, with these sizes).
#[derive(Clone, PartialEq, Eq)]
pub struct SeqWindow<const WORDS: usize, const MAX_JUMP: u64> {
    /// Newest marked seq (meaningless before the first mark).
    top: u64,
    /// Bit `i` (word `i / 64`, bit `i % 64`) stands for `top − i`. Bit 0 (`top` itself) is set
    /// from the first mark on and only then, so it doubles as the "started" flag: a separate
    /// `bool` cost 8 bytes per window with padding, which a relayed circuit's 1 KiB
    /// (protocol.md 6.3) needs for GN-WB's HMAC midstates.
    bits: [u64; WORDS],
}

impl<const WORDS: usize, const MAX_JUMP: u64> Default for SeqWindow<WORDS, MAX_JUMP> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const WORDS: usize, const MAX_JUMP: u64> fmt::Debug for SeqWindow<WORDS, MAX_JUMP> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("started", &self.started())
            .field("top", &self.top)
            .finish_non_exhaustive()
    }
}

enum Position {
    Ahead(u64),
    Behind(usize),
}

impl<const WORDS: usize, const MAX_JUMP: u64> SeqWindow<WORDS, MAX_JUMP> {
    /// Bits in the window.
    const BITS: u64 = WORDS as u64 * 64;
    /// A window needs a bit for the newest seq, and a jump must stay a forward one in signed
    /// terms.
    const SIZES_OK: () = assert!(WORDS > 0 && MAX_JUMP < 1 << 63);

    /// An empty window.
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)] // evaluates the size check for each instance
        let () = Self::SIZES_OK;
        SeqWindow {
            top: 0,
            bits: [0; WORDS],
        }
    }

    /// Whether any seq has been marked (bit 0, `top`, is set by every mark).
    fn started(&self) -> bool {
        self.bits.first().is_some_and(|w| w & 1 != 0)
    }

    /// The newest marked seq, if any.
    pub fn top(&self) -> Option<u64> {
        self.started().then_some(self.top)
    }

    fn position(&self, seq: u64) -> Result<Position, ReplayError> {
        let d = seq.wrapping_sub(self.top) as i64;
        if d > 0 {
            if d as u64 > MAX_JUMP {
                Err(ReplayError::TooFarAhead)
            } else {
                Ok(Position::Ahead(d as u64))
            }
        } else {
            let back = d.unsigned_abs();
            if back < Self::BITS {
                Ok(Position::Behind(back as usize))
            } else {
                Err(ReplayError::TooOld)
            }
        }
    }

    fn bit(&self, i: usize) -> bool {
        self.bits
            .get(i / 64)
            .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }

    /// Whether `seq` would be accepted. Does not change the window.
    pub fn check(&self, seq: u64) -> Result<(), ReplayError> {
        if !self.started() {
            return Ok(());
        }
        match self.position(seq)? {
            Position::Ahead(_) => Ok(()),
            Position::Behind(i) if self.bit(i) => Err(ReplayError::Replay),
            Position::Behind(_) => Ok(()),
        }
    }

    /// Record `seq` as received. Call only after [`check`](Self::check) accepted it; a seq the
    /// window would refuse is ignored.
    pub fn mark(&mut self, seq: u64) {
        if !self.started() {
            self.top = seq;
            self.bits = [0; WORDS];
            self.set_newest();
            return;
        }
        match self.position(seq) {
            Ok(Position::Ahead(d)) => {
                self.shift(d);
                self.top = seq;
                self.set_newest();
            }
            Ok(Position::Behind(i)) => {
                if let Some(w) = self.bits.get_mut(i / 64) {
                    *w |= 1u64 << (i % 64);
                }
            }
            Err(_) => {}
        }
    }

    fn set_newest(&mut self) {
        if let Some(w) = self.bits.first_mut() {
            *w |= 1;
        }
    }

    /// Check and mark in one step (for intermediate hops, which mark immediately).
    pub fn check_and_mark(&mut self, seq: u64) -> Result<(), ReplayError> {
        self.check(seq)?;
        self.mark(seq);
        Ok(())
    }

    /// Move every bit `d` places towards older seqs.
    fn shift(&mut self, d: u64) {
        if d >= Self::BITS {
            self.bits = [0; WORDS];
            return;
        }
        let d = d as usize;
        let (words, bits) = (d / 64, d % 64);
        for i in (0..WORDS).rev() {
            let hi = i
                .checked_sub(words)
                .and_then(|j| self.bits.get(j))
                .copied()
                .unwrap_or(0);
            let lo = if bits == 0 {
                0
            } else {
                i.checked_sub(words + 1)
                    .and_then(|j| self.bits.get(j))
                    .copied()
                    .unwrap_or(0)
                    >> (64 - bits)
            };
            if let Some(w) = self.bits.get_mut(i) {
                *w = (hi << bits) | lo;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn the_rules_of_6_7() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.check(u64::MAX - 3), Ok(()));
        w.mark(u64::MAX - 3);
        assert_eq!(w.check(u64::MAX - 3), Err(ReplayError::Replay));
        // wraps around 2^64
        assert_eq!(w.check(5), Ok(()));
        w.mark(5);
        assert_eq!(w.top(), Some(5));
        assert_eq!(w.check(u64::MAX - 3), Err(ReplayError::Replay));
        assert_eq!(w.check(u64::MAX - 2), Ok(()));
        // d = MAX_SEQ_JUMP accepted, one more refused
        assert_eq!(w.check(5 + MAX_SEQ_JUMP), Ok(()));
        assert_eq!(w.check(5 + MAX_SEQ_JUMP + 1), Err(ReplayError::TooFarAhead));
        // d = -1023 accepted, -1024 too old
        assert_eq!(w.check(5u64.wrapping_sub(1023)), Ok(()));
        assert_eq!(w.check(5u64.wrapping_sub(1024)), Err(ReplayError::TooOld));
        // far behind in signed terms (a huge forward jump is "old")
        assert_eq!(w.check(5 + (1 << 63)), Err(ReplayError::TooOld));
        // marking a seq the window refuses changes nothing
        let before = w.clone();
        w.mark(5 + MAX_SEQ_JUMP + 1);
        assert!(w == before);
    }

    #[test]
    fn shifting_keeps_old_bits() {
        let mut w = ReplayWindow::new();
        for s in [100u64, 101, 103, 164, 165, 1124] {
            w.check_and_mark(s).unwrap();
        }
        for s in [101u64, 103, 164, 165, 1124] {
            assert_eq!(w.check(s), Err(ReplayError::Replay), "{s}");
        }
        assert_eq!(w.check(100), Err(ReplayError::TooOld));
        assert_eq!(w.check(102), Ok(()));
        assert_eq!(w.check(1123), Ok(()));
    }

    proptest! {
        /// The window agrees with a reference model: a set of seen seqs plus the same rules.
        #[test]
        fn matches_a_reference_model(start in any::<u64>(), steps in prop::collection::vec(-1100i64..1200, 1..300)) {
            let mut w = ReplayWindow::new();
            let mut seen = BTreeSet::new();
            let mut top: Option<u64> = None;
            let mut cur = start;
            for s in steps {
                cur = cur.wrapping_add(s as u64);
                let expect = match top {
                    None => Ok(()),
                    Some(t) => {
                        let d = cur.wrapping_sub(t) as i64;
                        if d > MAX_SEQ_JUMP as i64 { Err(ReplayError::TooFarAhead) }
                        else if d > 0 { Ok(()) }
                        else if d > -1024 { if seen.contains(&cur) { Err(ReplayError::Replay) } else { Ok(()) } }
                        else { Err(ReplayError::TooOld) }
                    }
                };
                prop_assert_eq!(w.check(cur), expect);
                if expect.is_ok() {
                    w.mark(cur);
                    seen.insert(cur);
                    if top.is_none_or(|t| (cur.wrapping_sub(t) as i64) > 0) { top = Some(cur); }
                }
            }
        }
    }
}
