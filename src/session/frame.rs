//! End-to-end frames and messages (docs/protocol.md 10.4 and 10.5).
//!
//! A frame is the payload of a DATA relay message and always fills it: `version ‖ protected
//! counter u64 ‖ AEAD(length u16 ‖ plaintext ‖ zero padding)`, [`E2E_FRAME_LEN`] bytes whatever
//! it carries. The rendezvous point splicing two circuits reads relay messages in clear, so a
//! frame that kept its own length would tell it every packet size and control messages from
//! data; a clear counter would let it link a session's circuits through the gaps each leaves in
//! the other. The AEAD uses the key of its direction, nonce `0^4 ‖ u64(counter)` and
//! `version ‖ counter` (unprotected) as associated data; the counter on the wire is masked with
//! ChaCha20 under a key derived from the direction key and a sample of the ciphertext (QUIC's
//! header protection, RFC 9001 5.4), so only the ends can read it. docs/decisions.md says why
//! this construction.
//!
//! The counters and the replay window belong to the session ([`SessionChannel`]), not to a
//! circuit, so a flow can move to another circuit without renegotiating anything.
//!
//! Sealing and opening work in place in caller buffers: no heap allocation per frame. The receive
//! side checks the version and the (unmasked) counter against the window before opening, and
//! marks the counter only after the AEAD opened, so garbage cannot poison the window.

use chacha20::cipher::consts::U10;
use chacha20::cipher::{KeyIvInit, StreamCipherCore, StreamCipherSeekCore};
use chacha20::ChaChaCore;
use core::fmt;
// ring's assembly ChaCha20-Poly1305 (the link layer's, through boringtun): the same AEAD
// (RFC 8439) as the `chacha20poly1305` crate, several times faster on x86-64 (docs/benchmarks.md).
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use zeroize::Zeroizing;

use super::handshake::SessionKeys;
use super::intro::REND_COOKIE_LEN;
use crate::circuit::replay::{ReplayError, SeqWindow};
use crate::crypto::labels::LABEL_E2E_HP;
use crate::wire::record::LINK_SPEC_LEN;
use crate::wire::relay::RELAY_PAYLOAD_LEN;

/// Frame version. Version 1 had a clear counter and no padding; nothing accepts it any more.
pub const E2E_VERSION: u8 = 2;
/// `version` u8 ‖ protected `counter` u64.
pub const E2E_HEADER_LEN: usize = 9;
/// The message's real length, the first field under the AEAD.
pub const E2E_LENGTH_LEN: usize = 2;
/// AEAD tag.
pub const E2E_TAG_LEN: usize = 16;
/// Every frame, whatever it carries: a whole relay payload.
pub const E2E_FRAME_LEN: usize = RELAY_PAYLOAD_LEN;
/// Where the plaintext (an e2e message) starts in a frame buffer.
pub const E2E_PLAINTEXT_OFFSET: usize = E2E_HEADER_LEN + E2E_LENGTH_LEN;
/// Largest plaintext in one frame.
pub const E2E_MAX_PLAINTEXT: usize = E2E_FRAME_LEN - E2E_PLAINTEXT_OFFSET - E2E_TAG_LEN;
/// Bytes of ciphertext (from its start, right after the header) the counter mask is made from.
pub const E2E_SAMPLE_LEN: usize = 16;
/// Bits in the session replay window.
pub const E2E_REPLAY_WINDOW: usize = 8192;
/// Largest forward jump of the counter a receiver accepts.
pub const E2E_MAX_COUNTER_JUMP: u64 = 1 << 20;
/// A session ends before a counter reaches this; frames at or above it are refused.
pub const E2E_COUNTER_LIMIT: u64 = 1 << 48;

const _: () = assert!(E2E_MAX_PLAINTEXT == 1289);
// A full inner packet with its message type byte must fit (DESIGN.md section 12).
const _: () = assert!(PACKET_MAX < E2E_MAX_PLAINTEXT);
const _: () = assert!(E2E_SAMPLE_LEN <= E2E_FRAME_LEN - E2E_HEADER_LEN - E2E_TAG_LEN);

/// Why a frame was refused, or could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Not exactly [`E2E_FRAME_LEN`] bytes, or a length field larger than a frame holds.
    Length,
    /// Unknown version (section 16: drop).
    Version(u8),
    /// Counter already received.
    Duplicate,
    /// Counter older than the window.
    TooOld,
    /// Counter more than `E2E_MAX_COUNTER_JUMP` ahead, or at or above `E2E_COUNTER_LIMIT`.
    TooFarAhead,
    /// The AEAD did not open (wrong key or tampering).
    Decrypt,
    /// The send counter reached `E2E_COUNTER_LIMIT`: the session must end.
    CounterExhausted,
    /// The caller's buffer is too small for the frame or plaintext.
    BufferTooSmall,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Length => f.write_str("e2e frame has a bad length"),
            FrameError::Version(v) => write!(f, "unknown e2e frame version {v}"),
            FrameError::Duplicate => f.write_str("e2e counter replayed"),
            FrameError::TooOld => f.write_str("e2e counter older than the replay window"),
            FrameError::TooFarAhead => f.write_str("e2e counter too far ahead"),
            FrameError::Decrypt => f.write_str("e2e frame does not decrypt"),
            FrameError::CounterExhausted => f.write_str("e2e send counter exhausted"),
            FrameError::BufferTooSmall => f.write_str("buffer too small"),
        }
    }
}

impl std::error::Error for FrameError {}

/// The session replay window over received counters (10.4): the window of 6.7
/// ([`SeqWindow`]) with `E2E_REPLAY_WINDOW` bits and `E2E_MAX_COUNTER_JUMP`, plus the session's
/// counter limit. Counters never wrap (they stay below `E2E_COUNTER_LIMIT` < 2^63), so the
/// window's wrap-around distance is their plain difference.
#[derive(Clone, Default)]
pub struct ReplayWindow(SeqWindow<{ E2E_REPLAY_WINDOW / 64 }, E2E_MAX_COUNTER_JUMP>);

const _: () = assert!(E2E_COUNTER_LIMIT < 1 << 63 && E2E_REPLAY_WINDOW % 64 == 0);

impl fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("top", &self.top())
            .finish()
    }
}

impl From<ReplayError> for FrameError {
    fn from(e: ReplayError) -> Self {
        match e {
            ReplayError::Replay => FrameError::Duplicate,
            ReplayError::TooOld => FrameError::TooOld,
            ReplayError::TooFarAhead => FrameError::TooFarAhead,
        }
    }
}

impl ReplayWindow {
    /// An empty window (accepts any counter below the limit first).
    pub const fn new() -> Self {
        ReplayWindow(SeqWindow::new())
    }

    /// The highest counter marked so far.
    pub fn top(&self) -> Option<u64> {
        self.0.top()
    }

    /// Whether `counter` would be accepted. Changes nothing.
    pub fn check(&self, counter: u64) -> Result<(), FrameError> {
        if counter >= E2E_COUNTER_LIMIT {
            return Err(FrameError::TooFarAhead);
        }
        Ok(self.0.check(counter)?)
    }

    /// Marks `counter` as received. Call only after [`check`](Self::check) passed and the frame
    /// opened.
    pub fn mark(&mut self, counter: u64) {
        self.0.mark(counter);
    }

    /// [`check`](Self::check) then [`mark`](Self::mark).
    pub fn check_and_mark(&mut self, counter: u64) -> Result<(), FrameError> {
        self.check(counter)?;
        self.mark(counter);
        Ok(())
    }
}

/// The direction of a frame, which picks its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client to service: `k_c2s`.
    ClientToService,
    /// Service to client: `k_s2c`.
    ServiceToClient,
}

impl Direction {
    fn key(self, keys: &SessionKeys) -> FrameKey {
        FrameKey::new(match self {
            Direction::ClientToService => keys.c2s(),
            Direction::ServiceToClient => keys.s2c(),
        })
    }

    fn reverse(self) -> Self {
        match self {
            Direction::ClientToService => Direction::ServiceToClient,
            Direction::ServiceToClient => Direction::ClientToService,
        }
    }
}

/// The keys of one direction: the AEAD key (`k_c2s` or `k_s2c`) and the counter protection key
/// `hp = KDF(LABEL_E2E_HP, key, 32)` derived from it once per session.
pub struct FrameKey {
    aead: Zeroizing<[u8; 32]>,
    hp: Zeroizing<[u8; 32]>,
}

impl FrameKey {
    /// The keys for direction key `key`.
    pub fn new(key: &[u8; 32]) -> Self {
        let mut hp = Zeroizing::new([0u8; 32]);
        // HKDF-SHA256 gives up to 8160 bytes; 32 never fails.
        let _ = super::kdf(LABEL_E2E_HP, key, hp.as_mut_slice());
        FrameKey {
            aead: Zeroizing::new(*key),
            hp,
        }
    }
}

impl fmt::Debug for FrameKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FrameKey(..)")
    }
}

/// `version ‖ u64(counter)`, the associated data (with the counter in clear).
fn frame_header(counter: u64) -> [u8; E2E_HEADER_LEN] {
    let mut h = [0u8; E2E_HEADER_LEN];
    h[0] = E2E_VERSION;
    let (_, c) = h.split_at_mut(1);
    c.copy_from_slice(&counter.to_be_bytes());
    h
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    // Unique: a counter is used once per key (the session refuses to go past its limit).
    Nonce::assume_unique_for_key(n)
}

/// The AEAD under `key`. A 32-byte key always fits ChaCha20-Poly1305; `None` cannot happen.
fn aead(key: &[u8; 32]) -> Option<LessSafeKey> {
    UnboundKey::new(&CHACHA20_POLY1305, key)
        .ok()
        .map(LessSafeKey::new)
}

/// The 8-byte counter mask: the first keystream bytes of ChaCha20 under `hp` with the sample as
/// its 16-byte input, block counter `sample[0..4]` little-endian and nonce `sample[4..16]`
/// (RFC 9001 5.4.4). The sample is AEAD output under a nonce never repeated for this key, so
/// masks of two frames are independent unless two 128-bit samples collide.
fn counter_mask(hp: &[u8; 32], sample: &[u8; E2E_SAMPLE_LEN]) -> [u8; 8] {
    let [b0, b1, b2, b3, iv @ ..] = sample;
    let block = u32::from_le_bytes([*b0, *b1, *b2, *b3]);
    let mut core = ChaChaCore::<U10>::new(hp.into(), iv.into());
    // The core, not the stream wrapper: the wrapper refuses the last block position (u32::MAX),
    // which a sample may name; the block function itself is defined there.
    core.set_block_pos(block);
    let mut ks = Default::default();
    core.write_keystream_block(&mut ks);
    let mut mask = [0u8; 8];
    for (m, k) in mask.iter_mut().zip(ks.iter()) {
        *m = *k;
    }
    mask
}

/// The sample a frame's counter mask is made from: the first ciphertext bytes.
fn sample_of(frame: &[u8]) -> Result<&[u8; E2E_SAMPLE_LEN], FrameError> {
    frame
        .get(E2E_HEADER_LEN..E2E_HEADER_LEN + E2E_SAMPLE_LEN)
        .and_then(|s| <&[u8; E2E_SAMPLE_LEN]>::try_from(s).ok())
        .ok_or(FrameError::Length)
}

/// Seals a frame in place: `buf[E2E_PLAINTEXT_OFFSET..E2E_PLAINTEXT_OFFSET + plaintext_len]`
/// holds the plaintext; the header, length, padding and tag are written around it. Returns the
/// frame length, always [`E2E_FRAME_LEN`]. Pure: the caller picks the counter (use
/// [`SessionChannel`] to have the session pick it).
pub fn seal_frame(
    key: &FrameKey,
    counter: u64,
    buf: &mut [u8],
    plaintext_len: usize,
) -> Result<usize, FrameError> {
    if plaintext_len > E2E_MAX_PLAINTEXT {
        return Err(FrameError::Length);
    }
    if counter >= E2E_COUNTER_LIMIT {
        return Err(FrameError::CounterExhausted);
    }
    let frame = buf
        .get_mut(..E2E_FRAME_LEN)
        .ok_or(FrameError::BufferTooSmall)?;
    let (header, rest) = frame.split_at_mut(E2E_HEADER_LEN);
    let (sealed, tag_out) = rest.split_at_mut(E2E_FRAME_LEN - E2E_HEADER_LEN - E2E_TAG_LEN);
    let (length, body) = sealed.split_at_mut(E2E_LENGTH_LEN);
    // plaintext_len <= E2E_MAX_PLAINTEXT < 2^16.
    length.copy_from_slice(&(plaintext_len as u16).to_be_bytes());
    // A reused buffer holds old bytes past the plaintext; the peer must see zeros there.
    if let Some(pad) = body.get_mut(plaintext_len..) {
        pad.fill(0);
    }
    let clear = frame_header(counter);
    let tag = aead(&key.aead)
        .ok_or(FrameError::Length)?
        .seal_in_place_separate_tag(nonce(counter), Aad::from(&clear), sealed)
        .map_err(|_| FrameError::Length)?;
    tag_out.copy_from_slice(tag.as_ref());
    header.copy_from_slice(&clear);
    let mask = counter_mask(&key.hp, sample_of(frame)?);
    for (b, m) in frame.iter_mut().skip(1).zip(mask) {
        *b ^= m;
    }
    Ok(E2E_FRAME_LEN)
}

/// Checks a frame's length and version and unmasks its counter.
pub fn frame_counter(key: &FrameKey, frame: &[u8]) -> Result<u64, FrameError> {
    if frame.len() != E2E_FRAME_LEN {
        return Err(FrameError::Length);
    }
    match frame.first() {
        Some(&E2E_VERSION) => {}
        Some(&v) => return Err(FrameError::Version(v)),
        None => return Err(FrameError::Length),
    }
    let masked = frame
        .get(1..E2E_HEADER_LEN)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .ok_or(FrameError::Length)?;
    let mask = counter_mask(&key.hp, sample_of(frame)?);
    Ok(u64::from_be_bytes(masked) ^ u64::from_be_bytes(mask))
}

/// Opens a frame in place, without any replay check. Returns the counter and the plaintext, which
/// lies in `frame[E2E_PLAINTEXT_OFFSET..E2E_PLAINTEXT_OFFSET + length]`. On failure the frame
/// bytes are garbage.
pub fn open_frame<'a>(
    key: &FrameKey,
    frame: &'a mut [u8],
) -> Result<(u64, &'a mut [u8]), FrameError> {
    let counter = frame_counter(key, frame)?;
    // The ciphertext and its tag: the rest of the frame (its length was checked above).
    let (_, rest) = frame.split_at_mut(E2E_HEADER_LEN);
    let sealed = aead(&key.aead)
        .ok_or(FrameError::Decrypt)?
        .open_in_place(nonce(counter), Aad::from(&frame_header(counter)), rest)
        .map_err(|_| FrameError::Decrypt)?;
    let (length, body) = sealed.split_at_mut(E2E_LENGTH_LEN);
    let n = <[u8; E2E_LENGTH_LEN]>::try_from(&*length)
        .map(u16::from_be_bytes)
        .map_err(|_| FrameError::Length)?;
    let n = usize::from(n);
    // Authentic, but a peer running other code could still write a length past the frame.
    let pt = body.get_mut(..n).ok_or(FrameError::Length)?;
    Ok((counter, pt))
}

/// The frame state of one session end: send keys and counter, receive keys and replay window.
/// Independent of circuits: frames sealed here may travel on any circuit of the session.
pub struct SessionChannel {
    send_key: FrameKey,
    recv_key: FrameKey,
    send_direction: Direction,
    next_send: u64,
    window: ReplayWindow,
}

impl SessionChannel {
    /// The channel of the end that sends in `send_direction`.
    pub fn new(keys: &SessionKeys, send_direction: Direction) -> Self {
        SessionChannel {
            send_key: send_direction.key(keys),
            recv_key: send_direction.reverse().key(keys),
            send_direction,
            next_send: 0,
            window: ReplayWindow::new(),
        }
    }

    /// The client's channel.
    pub fn client(keys: &SessionKeys) -> Self {
        Self::new(keys, Direction::ClientToService)
    }

    /// The service's channel.
    pub fn service(keys: &SessionKeys) -> Self {
        Self::new(keys, Direction::ServiceToClient)
    }

    /// The counter the next sealed frame gets.
    pub fn next_send_counter(&self) -> u64 {
        self.next_send
    }

    /// The receive window.
    pub fn window(&self) -> &ReplayWindow {
        &self.window
    }

    /// Seals in place (see [`seal_frame`]) with the next counter. Returns the frame length.
    pub fn seal_in_place(
        &mut self,
        buf: &mut [u8],
        plaintext_len: usize,
    ) -> Result<usize, FrameError> {
        let n = seal_frame(&self.send_key, self.next_send, buf, plaintext_len)?;
        self.next_send += 1;
        Ok(n)
    }

    /// Copies `plaintext` into `out` and seals it there. Returns the frame length.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut [u8]) -> Result<usize, FrameError> {
        if plaintext.len() > E2E_MAX_PLAINTEXT {
            return Err(FrameError::Length);
        }
        out.get_mut(E2E_PLAINTEXT_OFFSET..E2E_PLAINTEXT_OFFSET + plaintext.len())
            .ok_or(FrameError::BufferTooSmall)?
            .copy_from_slice(plaintext);
        self.seal_in_place(out, plaintext.len())
    }

    /// Checks, opens in place and marks a received frame. Returns the plaintext (inside `frame`).
    pub fn open_in_place<'a>(&mut self, frame: &'a mut [u8]) -> Result<&'a mut [u8], FrameError> {
        let counter = frame_counter(&self.recv_key, frame)?;
        self.window.check(counter)?;
        let (counter, pt) = open_frame(&self.recv_key, frame)?;
        self.window.mark(counter);
        Ok(pt)
    }

    /// Like [`open_in_place`](Self::open_in_place) but leaves `frame` alone and writes the
    /// plaintext to the start of `out`, which must hold the whole frame (it is used as scratch).
    /// Returns the plaintext length.
    pub fn open(&mut self, frame: &[u8], out: &mut [u8]) -> Result<usize, FrameError> {
        let buf = out
            .get_mut(..frame.len())
            .ok_or(FrameError::BufferTooSmall)?;
        buf.copy_from_slice(frame);
        let n = self.open_in_place(buf)?.len();
        out.copy_within(E2E_PLAINTEXT_OFFSET..E2E_PLAINTEXT_OFFSET + n, 0);
        Ok(n)
    }
}

impl fmt::Debug for SessionChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionChannel")
            .field("send_direction", &self.send_direction)
            .field("next_send", &self.next_send)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

/// Message type bytes (10.5).
pub mod msg_type {
    /// One IPv6 packet.
    pub const PACKET: u8 = 0x01;
    /// `id` u64.
    pub const PING: u8 = 0x02;
    /// `id` u64, echoed.
    pub const PONG: u8 = 0x03;
    /// Client asks the service to join a circuit at a new rendezvous point.
    pub const NEW_CIRCUIT: u8 = 0x04;
    /// Service refuses NEW_CIRCUIT.
    pub const NEW_CIRCUIT_REFUSED: u8 = 0x05;
    /// The session ends.
    pub const CLOSE: u8 = 0x06;
    /// Ignored.
    pub const PADDING: u8 = 0x07;
}

/// Smallest and largest PACKET body (an IPv6 packet, 10.9).
pub const PACKET_MIN: usize = 40;
/// Largest PACKET body.
pub const PACKET_MAX: usize = 1280;
/// NEW_CIRCUIT body: `request_id` u32 ‖ cookie ‖ link specifier ‖ onion key.
pub const NEW_CIRCUIT_LEN: usize = 4 + REND_COOKIE_LEN + LINK_SPEC_LEN + 32;

/// NEW_CIRCUIT (client → service, 10.7), borrowing from the plaintext.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NewCircuit<'a> {
    /// Echoed in NEW_CIRCUIT_REFUSED.
    pub request_id: u32,
    /// The fresh cookie at the new rendezvous point.
    pub cookie: &'a [u8; REND_COOKIE_LEN],
    /// The new rendezvous point's link specifier (raw, 5.3).
    pub rendezvous_link_spec: &'a [u8; LINK_SPEC_LEN],
    /// The new rendezvous point's onion key.
    pub rendezvous_onion_key: &'a [u8; 32],
}

impl fmt::Debug for NewCircuit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewCircuit")
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

/// An end-to-end message (10.5), borrowing its body from the plaintext.
///
/// Fixed-size bodies may be followed by bytes a later version adds; they are ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum E2eMessage<'a> {
    /// One IPv6 packet, 40..=1280 bytes.
    Packet(&'a [u8]),
    /// PING with its id.
    Ping(u64),
    /// PONG echoing a PING id.
    Pong(u64),
    /// NEW_CIRCUIT.
    NewCircuit(NewCircuit<'a>),
    /// NEW_CIRCUIT_REFUSED: `request_id` and `reason` (1 overload, 2 policy).
    NewCircuitRefused {
        /// The request refused.
        request_id: u32,
        /// Why.
        reason: u8,
    },
    /// CLOSE with `reason` (0 normal, 1 policy, 2 shutdown).
    Close(u8),
    /// PADDING; ignored.
    Padding(&'a [u8]),
    /// A type this version does not know; ignored (authenticated, so safe).
    Unknown(u8, &'a [u8]),
}

fn be_u64(b: &[u8]) -> Option<u64> {
    b.get(..8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_be_bytes)
}

fn be_u32(b: &[u8]) -> Option<u32> {
    b.get(..4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(u32::from_be_bytes)
}

fn arr<const N: usize>(b: &[u8], at: usize) -> Option<&[u8; N]> {
    b.get(at..at.checked_add(N)?)
        .and_then(|s| <&[u8; N]>::try_from(s).ok())
}

impl<'a> E2eMessage<'a> {
    /// Parses a frame plaintext. Never panics; a short body is [`FrameError::Length`].
    pub fn parse(plaintext: &'a [u8]) -> Result<Self, FrameError> {
        let (&t, body) = plaintext.split_first().ok_or(FrameError::Length)?;
        let m = match t {
            msg_type::PACKET => {
                if !(PACKET_MIN..=PACKET_MAX).contains(&body.len()) {
                    return Err(FrameError::Length);
                }
                E2eMessage::Packet(body)
            }
            msg_type::PING => E2eMessage::Ping(be_u64(body).ok_or(FrameError::Length)?),
            msg_type::PONG => E2eMessage::Pong(be_u64(body).ok_or(FrameError::Length)?),
            msg_type::NEW_CIRCUIT => E2eMessage::NewCircuit(NewCircuit {
                request_id: be_u32(body).ok_or(FrameError::Length)?,
                cookie: arr(body, 4).ok_or(FrameError::Length)?,
                rendezvous_link_spec: arr(body, 4 + REND_COOKIE_LEN).ok_or(FrameError::Length)?,
                rendezvous_onion_key: arr(body, 4 + REND_COOKIE_LEN + LINK_SPEC_LEN)
                    .ok_or(FrameError::Length)?,
            }),
            msg_type::NEW_CIRCUIT_REFUSED => E2eMessage::NewCircuitRefused {
                request_id: be_u32(body).ok_or(FrameError::Length)?,
                reason: *body.get(4).ok_or(FrameError::Length)?,
            },
            msg_type::CLOSE => E2eMessage::Close(*body.first().ok_or(FrameError::Length)?),
            msg_type::PADDING => E2eMessage::Padding(body),
            other => E2eMessage::Unknown(other, body),
        };
        Ok(m)
    }

    /// Bytes [`emit`](Self::emit) writes.
    pub fn buffer_len(&self) -> usize {
        1 + match self {
            E2eMessage::Packet(b) | E2eMessage::Padding(b) | E2eMessage::Unknown(_, b) => b.len(),
            E2eMessage::Ping(_) | E2eMessage::Pong(_) => 8,
            E2eMessage::NewCircuit(_) => NEW_CIRCUIT_LEN,
            E2eMessage::NewCircuitRefused { .. } => 5,
            E2eMessage::Close(_) => 1,
        }
    }

    /// Writes the message into `out` (e.g. the plaintext area of a frame buffer). Returns the
    /// length written.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, FrameError> {
        let n = self.buffer_len();
        if n > E2E_MAX_PLAINTEXT {
            return Err(FrameError::Length);
        }
        let out = out.get_mut(..n).ok_or(FrameError::BufferTooSmall)?;
        let (t, body) = out.split_first_mut().ok_or(FrameError::BufferTooSmall)?;
        let copy = |body: &mut [u8], at: usize, src: &[u8]| {
            if let Some(d) = body.get_mut(at..at + src.len()) {
                d.copy_from_slice(src);
            }
        };
        *t = match self {
            E2eMessage::Packet(b) => {
                if !(PACKET_MIN..=PACKET_MAX).contains(&b.len()) {
                    return Err(FrameError::Length);
                }
                copy(body, 0, b);
                msg_type::PACKET
            }
            E2eMessage::Ping(id) => {
                copy(body, 0, &id.to_be_bytes());
                msg_type::PING
            }
            E2eMessage::Pong(id) => {
                copy(body, 0, &id.to_be_bytes());
                msg_type::PONG
            }
            E2eMessage::NewCircuit(nc) => {
                copy(body, 0, &nc.request_id.to_be_bytes());
                copy(body, 4, nc.cookie);
                copy(body, 4 + REND_COOKIE_LEN, nc.rendezvous_link_spec);
                copy(
                    body,
                    4 + REND_COOKIE_LEN + LINK_SPEC_LEN,
                    nc.rendezvous_onion_key,
                );
                msg_type::NEW_CIRCUIT
            }
            E2eMessage::NewCircuitRefused { request_id, reason } => {
                copy(body, 0, &request_id.to_be_bytes());
                copy(body, 4, &[*reason]);
                msg_type::NEW_CIRCUIT_REFUSED
            }
            E2eMessage::Close(reason) => {
                copy(body, 0, &[*reason]);
                msg_type::CLOSE
            }
            E2eMessage::Padding(b) => {
                copy(body, 0, b);
                msg_type::PADDING
            }
            E2eMessage::Unknown(t, b) => {
                copy(body, 0, b);
                *t
            }
        };
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_rules() {
        let mut w = ReplayWindow::new();
        w.check_and_mark(5).unwrap();
        assert_eq!(w.check(5), Err(FrameError::Duplicate));
        w.check_and_mark(3).unwrap();
        w.check_and_mark(5 + 100).unwrap();
        assert_eq!(w.check(3), Err(FrameError::Duplicate));
        assert_eq!(w.check(5), Err(FrameError::Duplicate));
        w.check_and_mark(4).unwrap();
        let top = 105 + E2E_MAX_COUNTER_JUMP;
        assert_eq!(w.check(top + 1), Err(FrameError::TooFarAhead));
        w.check_and_mark(top).unwrap();
        assert_eq!(
            w.check(top - E2E_REPLAY_WINDOW as u64),
            Err(FrameError::TooOld)
        );
        w.check(top - E2E_REPLAY_WINDOW as u64 + 1).unwrap();
        assert_eq!(w.check(E2E_COUNTER_LIMIT), Err(FrameError::TooFarAhead));
    }

    /// A sample may name ChaCha20's last block (counter u32::MAX): the mask is still made, and
    /// differs from block 0's.
    #[test]
    fn mask_at_the_last_block() {
        let hp = [7u8; 32];
        let mut sample = [0xffu8; E2E_SAMPLE_LEN];
        let last = counter_mask(&hp, &sample);
        sample[..4].fill(0);
        assert_ne!(last, counter_mask(&hp, &sample));
    }

    #[test]
    fn every_frame_fills_the_relay_payload() {
        let key = FrameKey::new(&[9u8; 32]);
        for len in [0usize, 1, 9, 41, 1281, E2E_MAX_PLAINTEXT] {
            let mut buf = [0x5au8; E2E_FRAME_LEN];
            assert_eq!(seal_frame(&key, 3, &mut buf, len), Ok(E2E_FRAME_LEN));
            let (c, pt) = open_frame(&key, &mut buf).unwrap();
            assert_eq!((c, pt.len()), (3, len));
            assert!(pt.iter().all(|b| *b == 0x5a));
            // Stale buffer bytes past the plaintext were replaced by zero padding.
            let end = E2E_PLAINTEXT_OFFSET + len;
            assert!(buf[end..E2E_FRAME_LEN - E2E_TAG_LEN]
                .iter()
                .all(|b| *b == 0));
        }
        let mut buf = [0u8; E2E_FRAME_LEN];
        assert_eq!(
            seal_frame(&key, 0, &mut buf, E2E_MAX_PLAINTEXT + 1),
            Err(FrameError::Length)
        );
        assert_eq!(
            seal_frame(&key, 0, &mut buf[..E2E_FRAME_LEN - 1], 0),
            Err(FrameError::BufferTooSmall)
        );
    }

    #[test]
    fn window_shift_keeps_bits() {
        let mut w = ReplayWindow::new();
        for c in [0u64, 1, 63, 64, 65, 130] {
            w.check_and_mark(c).unwrap();
        }
        for d in [1u64, 63, 64, 65, 127, 1000] {
            let t = w.top().unwrap() + d;
            w.check_and_mark(t).unwrap();
        }
        for c in [0u64, 1, 63, 64, 65, 130] {
            assert_eq!(w.check(c), Err(FrameError::Duplicate), "{c}");
        }
        w.check(2).unwrap();
        w.check(129).unwrap();
    }
}
