//! Behaviour and property tests of the session layer (docs/protocol.md section 10): pseudonym
//! stability and unlinkability across services, handshake tampering, frame replays, flows moving
//! between circuits, and parsers that never panic.

use globalnet::session::frame::{
    E2E_COUNTER_LIMIT, E2E_FRAME_LEN, E2E_HEADER_LEN, E2E_MAX_COUNTER_JUMP, E2E_MAX_PLAINTEXT,
    E2E_REPLAY_WINDOW, E2E_VERSION,
};
use globalnet::session::intro::{INTRO_PLAINTEXT_LEN, REND_PLAINTEXT_LEN};
use globalnet::session::{
    ClientHandshake, E2eError, E2eMessage, EstablishIntro, FrameError, IntroPlaintext, Introduce1,
    Pseudonym, RendPlaintext, Rendezvous1, Rendezvous2, ReplayWindow, ServiceIdentity,
    SessionChannel, SessionKeys,
};
use proptest::prelude::*;
use rand::rngs::OsRng;
use std::collections::HashSet;

const CLIENT_SEED: [u8; 32] = [0x11; 32];
const AUTH: [u8; 32] = [0x22; 32];

/// A full introduction: returns what the service saw and both ends' keys.
fn introduce(service: &ServiceIdentity, p: &Pseudonym) -> ([u8; 32], SessionKeys, SessionKeys) {
    let (client, msg1) = ClientHandshake::new(
        &mut OsRng,
        service.public(),
        &AUTH,
        p,
        &[1u8; INTRO_PLAINTEXT_LEN],
    )
    .unwrap();
    let introduced = service.read_msg1(&AUTH, &msg1).unwrap();
    let seen = *introduced.pseudonym();
    let (sk, msg2) = introduced
        .accept(&mut OsRng, &[1u8; REND_PLAINTEXT_LEN])
        .unwrap();
    let (ck, _) = client.finish(&msg2).unwrap();
    assert_eq!(ck.c2s(), sk.c2s());
    (seen, ck, sk)
}

#[test]
fn services_see_distinct_stable_pseudonyms() {
    let one = ServiceIdentity::from_seed(&[1u8; 32]);
    let two = ServiceIdentity::from_seed(&[2u8; 32]);
    let p1 = Pseudonym::derive(&CLIENT_SEED, &one.address());
    let p2 = Pseudonym::derive(&CLIENT_SEED, &two.address());
    let (a, k1, _) = introduce(&one, &p1);
    let (b, k2, _) = introduce(&one, &Pseudonym::derive(&CLIENT_SEED, &one.address()));
    let (c, _, _) = introduce(&two, &p2);
    assert_eq!(a, b, "one service sees the same pseudonym every time");
    assert_ne!(a, c, "two services see different pseudonyms");
    assert_ne!(
        globalnet::crypto::address_of(&a),
        globalnet::crypto::address_of(&c)
    );
    let real = Pseudonym::real_identity(&CLIENT_SEED);
    assert_ne!(a, *real.public());
    assert_ne!(c, *real.public());
    // Fresh ephemerals: new session keys every time.
    assert_ne!(k1.session_id(), k2.session_id());
    assert_ne!(k1.c2s(), k2.c2s());
    // Real-identity access shows the real key to both.
    let (r1, _, _) = introduce(&one, &real);
    let (r2, _, _) = introduce(&two, &real);
    assert_eq!(r1, *real.public());
    assert_eq!(r2, *real.public());
}

#[test]
fn handshake_tampering_fails() {
    let service = ServiceIdentity::from_seed(&[1u8; 32]);
    let p = Pseudonym::derive(&CLIENT_SEED, &service.address());
    let intro = [3u8; INTRO_PLAINTEXT_LEN];
    let (_, msg1) = ClientHandshake::new(&mut OsRng, service.public(), &AUTH, &p, &intro).unwrap();
    for i in 0..msg1.len() {
        let mut m = msg1;
        m[i] ^= 0x40;
        assert!(service.read_msg1(&AUTH, &m).is_err(), "byte {i}");
    }
    assert_eq!(
        service.read_msg1(&AUTH, &msg1[1..]).unwrap_err(),
        E2eError::Length
    );
    // Another intro auth key, or another service, does not open it.
    assert!(service.read_msg1(&[0x23; 32], &msg1).is_err());
    let other = ServiceIdentity::from_seed(&[9u8; 32]);
    assert!(other.read_msg1(&AUTH, &msg1).is_err());

    // Message 2: every flipped byte fails at the client; a service without the key cannot answer.
    let (client, msg1) =
        ClientHandshake::new(&mut OsRng, service.public(), &AUTH, &p, &intro).unwrap();
    let (_, msg2) = service
        .read_msg1(&AUTH, &msg1)
        .unwrap()
        .accept(&mut OsRng, &[0u8; REND_PLAINTEXT_LEN])
        .unwrap();
    for i in 0..msg2.len() {
        let mut m = msg2;
        m[i] ^= 0x01;
        let (c, _) = ClientHandshake::new(&mut OsRng, service.public(), &AUTH, &p, &intro).unwrap();
        assert!(c.finish(&m).is_err(), "byte {i}");
    }
    assert!(client.finish(&msg2).is_ok());
    // A service key of small order is refused by the client.
    let mut ident = [0u8; 32];
    ident[0] = 1;
    assert_eq!(
        ClientHandshake::new(&mut OsRng, &ident, &AUTH, &p, &intro).unwrap_err(),
        E2eError::BadServiceKey
    );
}

#[test]
fn replayed_introduction_is_recognisable() {
    let service = ServiceIdentity::from_seed(&[1u8; 32]);
    let p = Pseudonym::derive(&CLIENT_SEED, &service.address());
    let (_, msg1) = ClientHandshake::new(
        &mut OsRng,
        service.public(),
        &AUTH,
        &p,
        &[0u8; INTRO_PLAINTEXT_LEN],
    )
    .unwrap();
    let i1 = Introduce1 {
        auth_key: AUTH,
        msg1,
        pow: None,
    };
    // Same bytes: same intro point tag and same E_c at the service, so both caches catch it.
    let again = Introduce1::parse(&i1.emit()).unwrap();
    assert_eq!(i1.replay_tag(), again.replay_tag());
    let a = service.read_msg1(&AUTH, &i1.msg1).unwrap();
    let b = service.read_msg1(&AUTH, &again.msg1).unwrap();
    assert_eq!(a.client_ephemeral(), b.client_ephemeral());
}

fn session() -> (SessionChannel, SessionChannel) {
    let service = ServiceIdentity::from_seed(&[1u8; 32]);
    let p = Pseudonym::derive(&CLIENT_SEED, &service.address());
    let (_, ck, sk) = introduce(&service, &p);
    (SessionChannel::client(&ck), SessionChannel::service(&sk))
}

fn seal(ch: &mut SessionChannel, pt: &[u8]) -> Vec<u8> {
    let mut buf = [0u8; E2E_FRAME_LEN];
    let n = ch.seal(pt, &mut buf).unwrap();
    buf[..n].to_vec()
}

#[test]
fn frames_tampering_and_replay() {
    let (mut client, mut service) = session();
    let mut out = [0u8; E2E_FRAME_LEN];
    let f = seal(&mut client, b"\x02\0\0\0\0\0\0\0\x07");
    for i in 0..f.len() {
        let mut t = f.clone();
        t[i] ^= 0x80;
        assert!(service.open(&t, &mut out).is_err(), "byte {i}");
    }
    // Garbage did not poison the window: the real frame still opens, once.
    assert_eq!(service.window().top(), None);
    let n = service.open(&f, &mut out).unwrap();
    assert_eq!(E2eMessage::parse(&out[..n]).unwrap(), E2eMessage::Ping(7));
    assert_eq!(service.open(&f, &mut out), Err(FrameError::Duplicate));
    // Wrong direction key: a client frame reflected back at the client does not open. (Its
    // counter unmasks to garbage under the wrong key, so the window usually refuses it first.)
    let g = seal(&mut client, b"\x07");
    assert!(matches!(
        client.open(&g, &mut out),
        Err(FrameError::Decrypt | FrameError::TooFarAhead)
    ));
    assert_eq!(client.window().top(), None);
    // Unknown version, short frames.
    let mut v = g.clone();
    v[0] = E2E_VERSION + 1;
    assert_eq!(
        service.open(&v, &mut out),
        Err(FrameError::Version(E2E_VERSION + 1))
    );
    assert_eq!(
        service.open(&g[..E2E_HEADER_LEN + 15], &mut out),
        Err(FrameError::Length)
    );
    // Every frame has one length: a shorter or longer one is refused.
    assert_eq!(
        service.open(&g[..E2E_FRAME_LEN - 1], &mut out),
        Err(FrameError::Length)
    );
    // Too long a plaintext is refused at the sender.
    let mut buf = [0u8; E2E_FRAME_LEN + 1];
    assert_eq!(
        client.seal(&[0u8; E2E_MAX_PLAINTEXT + 1], &mut buf),
        Err(FrameError::Length)
    );
    assert!(client.seal(&[0u8; E2E_MAX_PLAINTEXT], &mut buf).is_ok());
}

/// What a relay reads of a frame (10.4): one length for every message, and no counter. The
/// bytes where the counter travels differ from the counter, and do not step by one.
#[test]
fn frames_have_one_length_and_no_visible_counter() {
    let (mut client, _) = session();
    let packet = [0x60u8; 1280];
    let mut heads = Vec::new();
    for i in 0..200usize {
        let pt: &[u8] = match i % 4 {
            0 => &packet[..40 + i],
            1 => &packet,
            2 => b"\x02\0\0\0\0\0\0\0\x07",
            _ => b"\x06\0",
        };
        let f = seal(&mut client, pt);
        assert_eq!(f.len(), E2E_FRAME_LEN);
        assert_eq!(f[0], E2E_VERSION);
        heads.push(u64::from_be_bytes(f[1..E2E_HEADER_LEN].try_into().unwrap()));
    }
    let counters: Vec<u64> = (0..200).collect();
    assert!(heads.iter().zip(&counters).all(|(h, c)| h != c));
    assert!(heads.windows(2).all(|w| w[1].wrapping_sub(w[0]) > 1 << 20));
    // A real counter stays below 2^48; a masked one lands there once in 2^16 frames.
    assert!(heads.iter().filter(|h| **h < E2E_COUNTER_LIMIT).count() <= 2);
}

/// Counters belong to the session: a flow that moves from circuit A to circuit B (frames of both
/// in flight, reordered) needs no renegotiation, and a frame replayed on the other circuit is
/// still refused.
#[test]
fn flow_moves_to_another_circuit() {
    let (mut client, mut service) = session();
    let mut circuit_a = Vec::new();
    let mut circuit_b = Vec::new();
    for i in 0..20u64 {
        let mut pt = [0u8; 9];
        pt[0] = 0x02;
        pt[1..].copy_from_slice(&i.to_be_bytes());
        let f = seal(&mut client, &pt);
        if i < 12 {
            circuit_a.push(f);
        } else {
            circuit_b.push(f);
        }
    }
    let mut out = [0u8; E2E_FRAME_LEN];
    let mut got = Vec::new();
    // Circuit B's frames overtake the tail of circuit A's (the old circuit is slow).
    for f in circuit_a[..8]
        .iter()
        .chain(&circuit_b)
        .chain(&circuit_a[8..])
    {
        let n = service.open(f, &mut out).unwrap();
        match E2eMessage::parse(&out[..n]).unwrap() {
            E2eMessage::Ping(id) => got.push(id),
            m => panic!("{m:?}"),
        }
    }
    got.sort_unstable();
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    // A relay on circuit A replays old frames on circuit B: refused.
    for f in &circuit_a {
        assert_eq!(service.open(f, &mut out), Err(FrameError::Duplicate));
    }
    // The other direction keeps its own counter across circuits too.
    let f = seal(&mut service, b"\x03\0\0\0\0\0\0\0\x01");
    assert_eq!(service.next_send_counter(), 1);
    assert!(client.open(&f, &mut out).is_ok());
}

#[test]
fn parsers_refuse_wrong_sizes() {
    for n in [
        0usize, 1, 99, 101, 531, 533, 135, 137, 103, 105, 399, 401, 31, 33,
    ] {
        let b = vec![1u8; n];
        let _ = EstablishIntro::parse(&b);
        let _ = Introduce1::parse(&b);
        let _ = Rendezvous1::parse(&b);
        let _ = Rendezvous2::parse(&b);
        let _ = IntroPlaintext::parse(&b);
        let _ = RendPlaintext::parse(&b);
    }
    assert!(Introduce1::parse(&[1u8; 531]).is_err());
    assert!(EstablishIntro::parse(&[1u8; 101]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The window agrees with a simple model: accept iff not seen, not too old, not too far ahead.
    #[test]
    fn window_matches_model(steps in proptest::collection::vec((0u64..3, 0u64..20_000), 1..200)) {
        let mut w = ReplayWindow::new();
        let mut seen = HashSet::new();
        let mut top: Option<u64> = None;
        let mut base = 1u64 << 30;
        for (kind, x) in steps {
            let c = match kind {
                0 => base + x,
                1 => base.saturating_sub(x),
                _ => { base += x * 60; base }
            };
            let expect_ok = match top {
                None => true,
                Some(t) if c > t => c - t <= E2E_MAX_COUNTER_JUMP,
                Some(t) => t - c < E2E_REPLAY_WINDOW as u64 && !seen.contains(&c),
            };
            let r = w.check_and_mark(c);
            prop_assert_eq!(r.is_ok(), expect_ok, "counter {} top {:?}", c, top);
            if r.is_ok() {
                seen.insert(c);
                top = Some(top.map_or(c, |t| t.max(c)));
            }
        }
    }

    #[test]
    fn frame_round_trip(pts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..E2E_MAX_PLAINTEXT), 1..8)) {
        let (mut client, mut service) = session();
        let frames: Vec<_> = pts.iter().map(|p| seal(&mut client, p)).collect();
        let mut out = [0u8; E2E_FRAME_LEN];
        for (f, p) in frames.iter().zip(&pts).rev() {
            let n = service.open(f, &mut out).unwrap();
            prop_assert_eq!(&out[..n], &p[..]);
        }
    }

    #[test]
    fn message_round_trip(t in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..1300)) {
        let mut pt = vec![t];
        pt.extend_from_slice(&body);
        if let Ok(m) = E2eMessage::parse(&pt) {
            let mut out = vec![0u8; m.buffer_len()];
            let Ok(n) = m.emit(&mut out) else {
                // Only a body that would not fit in one frame is refused.
                prop_assert!(m.buffer_len() > E2E_MAX_PLAINTEXT);
                return Ok(());
            };
            prop_assert_eq!(E2eMessage::parse(&out[..n]).unwrap(), m.clone());
            // Fixed bodies drop trailing bytes; variable ones are kept exactly.
            prop_assert!(n <= pt.len());
        }
    }

    #[test]
    fn parsers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = EstablishIntro::parse(&b);
        let _ = Introduce1::parse(&b);
        let _ = Rendezvous1::parse(&b);
        let _ = Rendezvous2::parse(&b);
        let _ = IntroPlaintext::parse(&b);
        let _ = RendPlaintext::parse(&b);
        let _ = E2eMessage::parse(&b);
        let _ = ServiceIdentity::from_seed(&[1u8; 32]).read_msg1(&AUTH, &b);
        let w = ReplayWindow::new();
        let _ = w.check(u64::MAX);
        let _ = w.check(E2E_COUNTER_LIMIT - 1);
    }

    #[test]
    fn pseudonym_is_deterministic_and_per_destination(seed in any::<[u8; 32]>(), d1 in any::<[u8; 16]>(), d2 in any::<[u8; 16]>()) {
        let a = Pseudonym::derive(&seed, &d1.into());
        prop_assert_eq!(*a.public(), *Pseudonym::derive(&seed, &d1.into()).public());
        if d1 != d2 {
            prop_assert_ne!(*a.public(), *Pseudonym::derive(&seed, &d2.into()).public());
        }
        prop_assert_eq!(globalnet::crypto::address_of(a.public()), a.address());
    }
}
