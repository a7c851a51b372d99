//! The simulator's cheap stand-in for public-key work (issue #25, docs/simulation.md "Crypto
//! stand-in"). Profiles of the large in-process network spent ~80% of the CPU in X25519, most of
//! it in boringtun's link handshakes, so a run of thousands of nodes could not finish. With the
//! stand-in, links between simulated nodes run [`SimSession`] (WireGuard's message types, sizes,
//! indices and counters, no cipher and no DH) and the circuit and session handshakes derive their
//! shared secrets by hashing the two public keys instead of X25519.
//!
//! Only the simulator can switch it on: every switch takes a [`SimCrypto`], which only code
//! under `crate::sim` can construct, and the DH switch is a thread-local the daemon never sets.
//! The stand-in is not secure (anyone who knows both public keys knows the shared secret); it
//! exists so that protocol behaviour (who talks to whom, when, with which message sizes) can be
//! measured at scale.

use sha2::{Digest, Sha256};
use std::cell::Cell;
use std::net::IpAddr;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::link::noise::{NoiseOut, NoiseSession, Unsolicited};

/// Proof that the simulator asked for the stand-in; only `crate::sim` can make one.
#[derive(Debug, Clone, Copy)]
pub struct SimCrypto {
    _only_sim: (),
}

impl SimCrypto {
    pub(in crate::sim) fn new() -> SimCrypto {
        SimCrypto { _only_sim: () }
    }

    /// Switches the circuit and session handshakes of this thread to the hashed stand-in DH, or
    /// back to X25519 (every [`crate::sim::Sim`] sets it, so a thread that runs one simulation
    /// after another never mixes them).
    pub(in crate::sim) fn set_dh(on: bool) {
        STAND_IN_DH.with(|c| c.set(on));
    }

    /// A link session towards `peer` (our static public key `own`, our 24-bit `local_index`).
    pub fn session(self, own: [u8; 32], peer: [u8; 32], local_index: u32) -> SimSession {
        SimSession {
            own,
            peer,
            local_index,
            remote_index: None,
            in_progress: false,
            handshakes: 0,
            confirmed: false,
            next_counter: 0,
            window: ReplayWindow::default(),
            queued: Vec::new(),
            tx: 0,
            rx: 0,
        }
    }

    /// What a datagram of type 1 from a stranger is: the stand-in's initiation names the
    /// initiator's static key in clear and ours, which must match (boringtun's MAC1 check).
    /// There is no cookie mechanism: the simulator never puts a node under handshake load.
    pub fn identify(self, own: &[u8; 32], datagram: &[u8]) -> Unsolicited {
        match (datagram.get(8..40), datagram.get(40..72)) {
            (Some(peer), Some(to)) if datagram.len() == INIT_LEN && to == own => {
                let mut p = [0u8; 32];
                p.copy_from_slice(peer);
                Unsolicited::Initiation { peer: p }
            }
            _ => Unsolicited::Invalid,
        }
    }
}

thread_local! {
    static STAND_IN_DH: Cell<bool> = const { Cell::new(false) };
    /// Public keys of secrets the stand-in saw lately (a handshake uses one secret for several
    /// DH): the fixed-base multiplication was a tenth of a 1,000-node run. Keyed by the secret's
    /// first byte; a slot holds the last secret that fell in it.
    static PUBLICS: std::cell::RefCell<Vec<Option<SecretPublic>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// A secret's bytes and its public key.
type SecretPublic = ([u8; 32], [u8; 32]);

fn public_of(secret: &StaticSecret) -> [u8; 32] {
    let s = secret.to_bytes();
    let slot = usize::from(s[0]);
    PUBLICS.with(|p| {
        let mut p = p.borrow_mut();
        if p.is_empty() {
            p.resize(256, None);
        }
        match p.get(slot) {
            Some(Some((k, public))) if *k == s => *public,
            _ => {
                let public = PublicKey::from(secret).to_bytes();
                if let Some(e) = p.get_mut(slot) {
                    *e = Some((s, public));
                }
                public
            }
        }
    })
}

/// The stand-in's shared secret of `secret` and `public` if the simulator switched it on for
/// this thread: SHA-256 of both public keys in sorted order, so both sides agree. The public
/// key of `secret` is a fixed-base multiplication, several times cheaper than the ladder.
pub fn stand_in_dh(secret: &StaticSecret, public: &[u8; 32]) -> Option<[u8; 32]> {
    if !STAND_IN_DH.with(|c| c.get()) {
        return None;
    }
    let own = public_of(secret);
    let (a, b) = if own <= *public {
        (own, *public)
    } else {
        (*public, own)
    };
    let mut h = Sha256::new();
    h.update(b"globalnet sim stand-in dh");
    h.update(a);
    h.update(b);
    Some(h.finalize().into())
}

const INIT_LEN: usize = 148;
const RESPONSE_LEN: usize = 92;
const DATA_HEADER: usize = 16;
const TAG_LEN: usize = 16;

/// Which of the last 128 counters were seen (WireGuard keeps a window so reordered datagrams
/// still count; the simulator's jitter reorders).
#[derive(Default)]
struct ReplayWindow {
    max: Option<u64>,
    bits: u128,
}

impl ReplayWindow {
    fn accept(&mut self, c: u64) -> bool {
        match self.max {
            None => {
                self.max = Some(c);
                self.bits = 1;
                true
            }
            Some(m) if c > m => {
                let shift = c - m;
                self.bits = if shift >= 128 { 0 } else { self.bits << shift };
                self.bits |= 1;
                self.max = Some(c);
                true
            }
            Some(m) => {
                let back = m - c;
                if back >= 128 || self.bits & (1u128 << back) != 0 {
                    return false;
                }
                self.bits |= 1u128 << back;
                true
            }
        }
    }
}

/// A link session of the stand-in: WireGuard's datagram layout (initiation 148 bytes, response
/// 92, data = 16-byte header + plaintext padded to 16 + 16-byte tag) with the plaintext in clear.
pub struct SimSession {
    own: [u8; 32],
    peer: [u8; 32],
    local_index: u32,
    remote_index: Option<u32>,
    in_progress: bool,
    handshakes: u8,
    /// The responder may send only once the initiator's first data datagram confirmed the
    /// session (WireGuard's rule: otherwise its data could overtake the response).
    confirmed: bool,
    next_counter: u64,
    window: ReplayWindow,
    /// Frames waiting for the handshake, as boringtun queues them.
    queued: Vec<Vec<u8>>,
    tx: u64,
    rx: u64,
}

const MAX_QUEUED: usize = 256;

#[allow(clippy::indexing_slicing)] // `o` is exactly the length checked by `get_mut(..n)`
impl SimSession {
    /// The index on the wire: ours in the upper 24 bits and a handshake count in the low 8, as
    /// boringtun does (the link layer routes by `index >> 8`).
    fn wire_index(&self) -> u32 {
        (self.local_index << 8) | u32::from(self.handshakes)
    }

    fn ours(&self, idx: &[u8]) -> bool {
        let mut b = [0u8; 4];
        b.copy_from_slice(idx);
        u32::from_le_bytes(b) >> 8 == self.local_index
    }

    fn data<'a>(&mut self, frame: &[u8], out: &'a mut [u8]) -> NoiseOut<'a> {
        let Some(remote) = self.remote_index else {
            return NoiseOut::Refused("no session");
        };
        let padded = frame.len().div_ceil(16) * 16;
        let n = DATA_HEADER + padded + TAG_LEN;
        let Some(o) = out.get_mut(..n) else {
            return NoiseOut::Refused("output buffer too small");
        };
        o.fill(0);
        o[..4].copy_from_slice(&4u32.to_le_bytes());
        o[4..8].copy_from_slice(&remote.to_le_bytes());
        o[8..16].copy_from_slice(&self.next_counter.to_le_bytes());
        o[DATA_HEADER..DATA_HEADER + frame.len()].copy_from_slice(frame);
        self.next_counter += 1;
        self.tx += frame.len() as u64;
        NoiseOut::Send(o)
    }
}

#[allow(clippy::indexing_slicing)] // every index is behind a length check of the datagram
impl NoiseSession for SimSession {
    fn encapsulate<'a>(&mut self, frame: &[u8], out: &'a mut [u8]) -> NoiseOut<'a> {
        if self.remote_index.is_some() && !self.confirmed {
            if self.queued.len() < MAX_QUEUED {
                self.queued.push(frame.to_vec());
            }
            return NoiseOut::Done;
        }
        if self.remote_index.is_none() {
            if self.queued.len() < MAX_QUEUED {
                self.queued.push(frame.to_vec());
            }
            return if self.in_progress {
                NoiseOut::Done
            } else {
                self.initiate(out, false)
            };
        }
        self.data(frame, out)
    }

    fn decapsulate<'a>(
        &mut self,
        _from: IpAddr,
        datagram: &[u8],
        out: &'a mut [u8],
    ) -> NoiseOut<'a> {
        let Some(t) = datagram.first() else {
            return NoiseOut::Refused("empty datagram");
        };
        match (*t, datagram.len()) {
            (1, INIT_LEN) => {
                if datagram[8..40] != self.peer || datagram[40..72] != self.own {
                    return NoiseOut::Refused("wrong key");
                }
                let mut idx = [0u8; 4];
                idx.copy_from_slice(&datagram[4..8]);
                // A new handshake is a new session: counters restart.
                self.remote_index = Some(u32::from_le_bytes(idx));
                self.in_progress = false;
                self.confirmed = false;
                self.next_counter = 0;
                self.window = ReplayWindow::default();
                let Some(o) = out.get_mut(..RESPONSE_LEN) else {
                    return NoiseOut::Refused("output buffer too small");
                };
                o.fill(0);
                o[..4].copy_from_slice(&2u32.to_le_bytes());
                o[4..8].copy_from_slice(&self.wire_index().to_le_bytes());
                o[8..12].copy_from_slice(&idx);
                NoiseOut::Send(o)
            }
            (2, RESPONSE_LEN) => {
                if !self.in_progress || !self.ours(&datagram[8..12]) {
                    return NoiseOut::Refused("unknown session");
                }
                let mut idx = [0u8; 4];
                idx.copy_from_slice(&datagram[4..8]);
                self.remote_index = Some(u32::from_le_bytes(idx));
                self.in_progress = false;
                self.confirmed = true;
                self.next_counter = 0;
                self.window = ReplayWindow::default();
                // boringtun confirms the session with a keepalive, then flushes the queue.
                self.data(&[], out)
            }
            (4, n) if n >= DATA_HEADER + TAG_LEN && (n - DATA_HEADER - TAG_LEN) % 16 == 0 => {
                if self.remote_index.is_none() || !self.ours(&datagram[4..8]) {
                    return NoiseOut::Refused("unknown session");
                }
                let mut c = [0u8; 8];
                c.copy_from_slice(&datagram[8..16]);
                if !self.window.accept(u64::from_le_bytes(c)) {
                    return NoiseOut::Refused("replayed or stale counter");
                }
                let body = &datagram[DATA_HEADER..n - TAG_LEN];
                if body.is_empty() {
                    if !self.confirmed {
                        // The confirmation: what waited for it goes out now (the caller
                        // flushes the rest).
                        self.confirmed = true;
                        return self.flush(out);
                    }
                    return NoiseOut::Done;
                }
                self.confirmed = true;
                // boringtun's rule: an IPv6-shaped plaintext's length is at bytes 4..6 plus 40.
                if body[0] >> 4 != 6 || body.len() < 40 {
                    return NoiseOut::Refused("invalid packet");
                }
                let len = usize::from(u16::from_be_bytes([body[4], body[5]])) + 40;
                let Some(plain) = body.get(..len) else {
                    return NoiseOut::Refused("invalid packet");
                };
                let Some(o) = out.get_mut(..len) else {
                    return NoiseOut::Refused("output buffer too small");
                };
                o.copy_from_slice(plain);
                self.rx += len as u64;
                NoiseOut::Frame(o)
            }
            _ => NoiseOut::Refused("invalid packet"),
        }
    }

    fn flush<'a>(&mut self, out: &'a mut [u8]) -> NoiseOut<'a> {
        if self.remote_index.is_none() || !self.confirmed || self.queued.is_empty() {
            return NoiseOut::Done;
        }
        let f = self.queued.remove(0);
        self.data(&f, out)
    }

    fn update_timers<'a>(&mut self, _out: &'a mut [u8]) -> NoiseOut<'a> {
        NoiseOut::Done
    }

    fn initiate<'a>(&mut self, out: &'a mut [u8], force: bool) -> NoiseOut<'a> {
        if self.in_progress && !force {
            return NoiseOut::Done;
        }
        let Some(o) = out.get_mut(..INIT_LEN) else {
            return NoiseOut::Refused("output buffer too small");
        };
        self.in_progress = true;
        self.handshakes = self.handshakes.wrapping_add(1);
        o.fill(0);
        o[..4].copy_from_slice(&1u32.to_le_bytes());
        o[4..8].copy_from_slice(&self.wire_index().to_le_bytes());
        o[8..40].copy_from_slice(&self.own);
        o[40..72].copy_from_slice(&self.peer);
        NoiseOut::Send(o)
    }

    fn established(&self) -> bool {
        self.remote_index.is_some() && self.confirmed
    }

    fn traffic(&self) -> (u64, u64) {
        (self.tx, self.rx)
    }

    fn since_handshake(&self) -> Option<u64> {
        self.remote_index.map(|_| 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_stand_in_sessions_exchange_frames_and_refuse_replays() {
        let t = SimCrypto::new();
        let (a_pk, b_pk) = ([1u8; 32], [2u8; 32]);
        let ip: IpAddr = "198.18.0.1".parse().unwrap();
        let mut a = t.session(a_pk, b_pk, 7);
        let mut buf = [0u8; 1500];
        let mut out = [0u8; 1500];
        let NoiseOut::Send(init) = a.initiate(&mut buf, false) else {
            panic!()
        };
        let init = init.to_vec();
        assert_eq!(init.len(), INIT_LEN);
        assert_eq!(
            t.identify(&b_pk, &init),
            Unsolicited::Initiation { peer: a_pk }
        );
        assert_eq!(t.identify(&[3u8; 32], &init), Unsolicited::Invalid);
        let mut b = t.session(b_pk, a_pk, 9);
        let NoiseOut::Send(resp) = b.decapsulate(ip, &init, &mut buf) else {
            panic!()
        };
        let resp = resp.to_vec();
        assert_eq!(resp.len(), RESPONSE_LEN);
        let NoiseOut::Send(ka) = a.decapsulate(ip, &resp, &mut buf) else {
            panic!()
        };
        let ka = ka.to_vec();
        assert!(a.established() && !b.established());
        assert!(matches!(b.decapsulate(ip, &ka, &mut out), NoiseOut::Done));
        assert!(b.established());
        let mut frame = [0u8; 48];
        crate::wire::link::emit(
            &mut frame,
            crate::wire::link::MsgType::Ping,
            9,
            &1u64.to_be_bytes(),
        )
        .unwrap();
        let NoiseOut::Send(data) = a.encapsulate(&frame, &mut buf) else {
            panic!()
        };
        let data = data.to_vec();
        assert_eq!(data.len(), 16 + 48 + 16);
        let NoiseOut::Frame(plain) = b.decapsulate(ip, &data, &mut out) else {
            panic!()
        };
        assert_eq!(plain, &frame[..]);
        assert!(matches!(
            b.decapsulate(ip, &data, &mut out),
            NoiseOut::Refused(_)
        ));
    }

    #[test]
    fn stand_in_dh_agrees_and_is_off_unless_enabled() {
        let a = StaticSecret::from([5u8; 32]);
        let b = StaticSecret::from([6u8; 32]);
        let (pa, pb) = (
            PublicKey::from(&a).to_bytes(),
            PublicKey::from(&b).to_bytes(),
        );
        assert_eq!(stand_in_dh(&a, &pb), None);
        SimCrypto::set_dh(true);
        let s = stand_in_dh(&a, &pb).unwrap();
        assert_eq!(Some(s), stand_in_dh(&b, &pa));
        assert_ne!(Some(s), stand_in_dh(&a, &pa));
        SimCrypto::set_dh(false);
        assert_eq!(stand_in_dh(&a, &pb), None);
    }
}
