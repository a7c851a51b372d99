//! The WireGuard session of one link, behind a small trait of ours so that the rest of the link
//! layer never names boringtun (docs/protocol.md section 4.1).

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use std::net::IpAddr;
use std::sync::Arc;
use x25519_dalek::{PublicKey, StaticSecret};

/// What a call into the session produced.
#[derive(Debug)]
pub enum NoiseOut<'a> {
    /// Nothing to do.
    Done,
    /// Send these bytes to the peer. After a `decapsulate` that returned this, call
    /// [`NoiseSession::flush`] until it returns `Done`: queued frames may follow.
    Send(&'a [u8]),
    /// A decrypted link frame.
    Frame(&'a [u8]),
    /// The session is dead (handshake gave up).
    Expired,
    /// The datagram was refused (bad MAC, replay, wrong index, ...).
    Refused(&'static str),
}

/// One link's encrypted session.
pub trait NoiseSession: Send {
    /// Encrypts a link frame (queued until the handshake completes if there is no session yet).
    fn encapsulate<'a>(&mut self, frame: &[u8], out: &'a mut [u8]) -> NoiseOut<'a>;
    /// Handles a datagram from the peer.
    fn decapsulate<'a>(&mut self, from: IpAddr, datagram: &[u8], out: &'a mut [u8])
        -> NoiseOut<'a>;
    /// Sends what is queued after a handshake completed.
    fn flush<'a>(&mut self, out: &'a mut [u8]) -> NoiseOut<'a>;
    /// Runs the session's own timers (handshake retransmit, keepalive, expiry).
    fn update_timers<'a>(&mut self, out: &'a mut [u8]) -> NoiseOut<'a>;
    /// Starts (or, with `force`, restarts) a handshake.
    fn initiate<'a>(&mut self, out: &'a mut [u8], force: bool) -> NoiseOut<'a>;
    /// Whether a session key is established.
    fn established(&self) -> bool;
    /// Plaintext bytes sent and received.
    fn traffic(&self) -> (u64, u64);
    /// Seconds since the last completed handshake (sessions rekey every two minutes).
    fn since_handshake(&self) -> Option<u64>;
}

/// A link's session with its `established` flag kept next to the link: the link layer asks it
/// for every link on every timer tick, and reading it through the box cost a cache miss per link
/// (an eighth of a 1,000-node run's CPU, issue #25). The flag can change only in the calls that
/// take `&mut self`, so it is read again after each of them.
pub struct Session {
    inner: Box<dyn NoiseSession>,
    up: bool,
}

impl Session {
    /// Wraps a session.
    pub fn new(inner: Box<dyn NoiseSession>) -> Session {
        let up = inner.established();
        Session { inner, up }
    }

    /// [`NoiseSession::encapsulate`].
    pub fn encapsulate<'a>(&mut self, frame: &[u8], out: &'a mut [u8]) -> NoiseOut<'a> {
        let r = self.inner.encapsulate(frame, out);
        self.up = self.inner.established();
        r
    }

    /// [`NoiseSession::decapsulate`].
    pub fn decapsulate<'a>(
        &mut self,
        from: IpAddr,
        datagram: &[u8],
        out: &'a mut [u8],
    ) -> NoiseOut<'a> {
        let r = self.inner.decapsulate(from, datagram, out);
        self.up = self.inner.established();
        r
    }

    /// [`NoiseSession::flush`].
    pub fn flush<'a>(&mut self, out: &'a mut [u8]) -> NoiseOut<'a> {
        let r = self.inner.flush(out);
        self.up = self.inner.established();
        r
    }

    /// [`NoiseSession::update_timers`].
    pub fn update_timers<'a>(&mut self, out: &'a mut [u8]) -> NoiseOut<'a> {
        let r = self.inner.update_timers(out);
        self.up = self.inner.established();
        r
    }

    /// [`NoiseSession::initiate`].
    pub fn initiate<'a>(&mut self, out: &'a mut [u8], force: bool) -> NoiseOut<'a> {
        let r = self.inner.initiate(out, force);
        self.up = self.inner.established();
        r
    }

    /// [`NoiseSession::established`].
    pub fn established(&self) -> bool {
        self.up
    }

    /// [`NoiseSession::traffic`].
    pub fn traffic(&self) -> (u64, u64) {
        self.inner.traffic()
    }

    /// [`NoiseSession::since_handshake`].
    pub fn since_handshake(&self) -> Option<u64> {
        self.inner.since_handshake()
    }
}

fn refused(e: WireGuardError) -> NoiseOut<'static> {
    match e {
        WireGuardError::ConnectionExpired => NoiseOut::Expired,
        WireGuardError::DuplicateCounter | WireGuardError::InvalidCounter => {
            NoiseOut::Refused("replayed or stale counter")
        }
        WireGuardError::InvalidMac | WireGuardError::InvalidAeadTag => {
            NoiseOut::Refused("authentication failed")
        }
        WireGuardError::UnderLoad => NoiseOut::Refused("under load"),
        WireGuardError::WrongIndex | WireGuardError::NoCurrentSession => {
            NoiseOut::Refused("unknown session")
        }
        WireGuardError::WrongKey => NoiseOut::Refused("wrong key"),
        WireGuardError::InvalidTai64nTimestamp | WireGuardError::WrongTai64nTimestamp => {
            NoiseOut::Refused("stale handshake")
        }
        _ => NoiseOut::Refused("invalid packet"),
    }
}

fn convert(r: TunnResult<'_>) -> NoiseOut<'_> {
    match r {
        TunnResult::Done => NoiseOut::Done,
        TunnResult::Err(e) => refused(e),
        TunnResult::WriteToNetwork(b) => NoiseOut::Send(b),
        TunnResult::WriteToTunnelV6(b, _) => NoiseOut::Frame(b),
        // An IPv4-shaped plaintext is never a link frame.
        TunnResult::WriteToTunnelV4(_, _) => NoiseOut::Refused("IPv4-shaped plaintext"),
    }
}

/// boringtun's `Tunn` as a [`NoiseSession`].
pub struct BoringSession {
    tunn: Tunn,
    established: bool,
}

/// Smallest output buffer every call needs (boringtun panics below `max(src + 32, 148)`).
pub const NOISE_BUF_LEN: usize = 1500;

impl BoringSession {
    /// A session towards `peer` with our `local_index` (24 bits) and the node's shared limiter.
    pub fn new(
        secret: &StaticSecret,
        peer: [u8; 32],
        local_index: u32,
        keepalive_s: Option<u16>,
        limiter: Arc<RateLimiter>,
    ) -> BoringSession {
        BoringSession {
            tunn: Tunn::new(
                secret.clone(),
                PublicKey::from(peer),
                None,
                keepalive_s,
                local_index,
                Some(limiter),
            ),
            established: false,
        }
    }
}

impl NoiseSession for BoringSession {
    fn encapsulate<'a>(&mut self, frame: &[u8], out: &'a mut [u8]) -> NoiseOut<'a> {
        if out.len() < (frame.len() + 32).max(148) {
            return NoiseOut::Refused("output buffer too small");
        }
        convert(self.tunn.encapsulate(frame, out))
    }

    fn decapsulate<'a>(
        &mut self,
        from: IpAddr,
        datagram: &[u8],
        out: &'a mut [u8],
    ) -> NoiseOut<'a> {
        if datagram.is_empty() || out.len() < NOISE_BUF_LEN.min(datagram.len().max(148)) {
            return NoiseOut::Refused("empty datagram or small buffer");
        }
        let r = convert(self.tunn.decapsulate(Some(from), datagram, out));
        if matches!(r, NoiseOut::Send(_) | NoiseOut::Frame(_)) {
            self.established = self.tunn.time_since_last_handshake().is_some();
        }
        r
    }

    fn flush<'a>(&mut self, out: &'a mut [u8]) -> NoiseOut<'a> {
        convert(self.tunn.decapsulate(None, &[], out))
    }

    fn update_timers<'a>(&mut self, out: &'a mut [u8]) -> NoiseOut<'a> {
        convert(self.tunn.update_timers(out))
    }

    fn initiate<'a>(&mut self, out: &'a mut [u8], force: bool) -> NoiseOut<'a> {
        convert(self.tunn.format_handshake_initiation(out, force))
    }

    fn established(&self) -> bool {
        self.established
    }

    fn traffic(&self) -> (u64, u64) {
        let (_, tx, rx, _, _) = self.tunn.stats();
        (tx as u64, rx as u64)
    }

    fn since_handshake(&self) -> Option<u64> {
        self.tunn.time_since_last_handshake().map(|d| d.as_secs())
    }
}

/// The shared handshake limiter of a node, and identification of unknown initiators.
pub struct Responder {
    secret: StaticSecret,
    public: PublicKey,
    limiter: Arc<RateLimiter>,
}

/// Handshakes per second before cookies are demanded.
pub const HANDSHAKE_RATE_LIMIT: u64 = 100;

/// What an unsolicited datagram is.
#[derive(Debug, PartialEq, Eq)]
pub enum Unsolicited {
    /// A handshake initiation from this static key (not yet authenticated beyond the MACs).
    Initiation {
        /// The initiator's static X25519 key.
        peer: [u8; 32],
    },
    /// Under load: send this cookie reply instead.
    CookieReply(usize),
    /// Not a valid initiation.
    Invalid,
}

impl Responder {
    /// The responder for a node's link key.
    pub fn new(secret: StaticSecret) -> Responder {
        let public = PublicKey::from(&secret);
        Responder {
            limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
            secret,
            public,
        }
    }

    /// The limiter shared by every session of the node.
    pub fn limiter(&self) -> Arc<RateLimiter> {
        self.limiter.clone()
    }

    /// Resets the per-second handshake count; call once a second.
    pub fn tick(&self) {
        self.limiter.reset_count();
    }

    /// Checks the MACs (and, under load, the cookie) of a handshake initiation, then learns the
    /// initiator's static key without creating any state. `out` receives a cookie reply if needed.
    pub fn identify(&self, from: IpAddr, datagram: &[u8], out: &mut [u8]) -> Unsolicited {
        use boringtun::noise::Packet;
        match self.limiter.verify_packet(Some(from), datagram, out) {
            Ok(Packet::HandshakeInit(init)) => {
                match boringtun::noise::handshake::parse_handshake_anon(
                    &self.secret,
                    &self.public,
                    &init,
                ) {
                    Ok(half) => Unsolicited::Initiation {
                        peer: half.peer_static_public,
                    },
                    Err(_) => Unsolicited::Invalid,
                }
            }
            Ok(_) => Unsolicited::Invalid,
            Err(TunnResult::WriteToNetwork(cookie)) => Unsolicited::CookieReply(cookie.len()),
            Err(_) => Unsolicited::Invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    #[test]
    fn two_sessions_exchange_frames() {
        let a_sk = StaticSecret::random_from_rng(OsRng);
        let b_sk = StaticSecret::random_from_rng(OsRng);
        let a_pk = PublicKey::from(&a_sk).to_bytes();
        let b_pk = PublicKey::from(&b_sk).to_bytes();
        let resp_b = Responder::new(b_sk.clone());
        let resp_a = Responder::new(a_sk.clone());
        let mut a = BoringSession::new(&a_sk, b_pk, 1, None, resp_a.limiter());
        let ip: IpAddr = "198.18.0.1".parse().unwrap();
        let mut buf = [0u8; NOISE_BUF_LEN];
        let mut out = [0u8; NOISE_BUF_LEN];
        let NoiseOut::Send(init) = a.initiate(&mut buf, false) else {
            panic!()
        };
        let init = init.to_vec();
        assert_eq!(
            resp_b.identify(ip, &init, &mut out),
            Unsolicited::Initiation { peer: a_pk }
        );
        let mut b = BoringSession::new(&b_sk, a_pk, 2, None, resp_b.limiter());
        let NoiseOut::Send(resp) = b.decapsulate(ip, &init, &mut buf) else {
            panic!()
        };
        let resp = resp.to_vec();
        let NoiseOut::Send(keepalive) = a.decapsulate(ip, &resp, &mut buf) else {
            panic!()
        };
        let keepalive = keepalive.to_vec();
        assert!(a.established());
        assert!(matches!(
            b.decapsulate(ip, &keepalive, &mut buf),
            NoiseOut::Done | NoiseOut::Frame(_)
        ));
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
        let NoiseOut::Frame(plain) = b.decapsulate(ip, &data, &mut out) else {
            panic!()
        };
        assert_eq!(plain, &frame[..]);
        // A replay is refused.
        assert!(matches!(
            b.decapsulate(ip, &data, &mut out),
            NoiseOut::Refused(_)
        ));
        // Garbage is refused, never a panic.
        assert_eq!(
            resp_b.identify(ip, &[1, 0, 0, 0, 5], &mut out),
            Unsolicited::Invalid
        );
    }
}
