//! Known-answer tests for the session layer (docs/protocol.md section 10) against
//! tests/vectors/protocol.json, made by the independent script
//! tests/vectors/make_protocol_vectors.py: pseudonyms, GN-E2E-IK messages, transcript hash and
//! keys, INTRODUCE1 and RENDEZVOUS1 bodies, the intro replay tag, the JOIN MAC, e2e frames in both
//! directions at several counters (padded, counter masked), and ESTABLISH_INTRO.

use ed25519_dalek::SigningKey;
use globalnet::session::frame::{
    frame_counter, open_frame, seal_frame, FrameError, FrameKey, E2E_FRAME_LEN, E2E_HEADER_LEN,
    E2E_PLAINTEXT_OFFSET,
};
use globalnet::session::intro::{
    join_mac, RendCookie, RendPlaintext, ESTABLISH_FLAG_POW, INTRO_PLAINTEXT_LEN,
    REND_PLAINTEXT_LEN,
};
use globalnet::session::{
    ClientHandshake, E2eMessage, EstablishIntro, IntroPlaintext, Introduce1, Pseudonym, RendHs,
    Rendezvous1, Rendezvous2, ServiceIdentity, SessionChannel, SessionKeys,
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::net::Ipv6Addr;
use x25519_dalek::StaticSecret;

fn doc() -> Value {
    serde_json::from_str(include_str!("vectors/protocol.json")).unwrap()
}

fn hex(v: &Value) -> Vec<u8> {
    let s = v.as_str().unwrap();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex32(v: &Value) -> [u8; 32] {
    hex(v).try_into().unwrap()
}

fn addr(v: &Value) -> Ipv6Addr {
    v.as_str().unwrap().parse().unwrap()
}

#[test]
fn pseudonyms() {
    let d = doc();
    let list = d["pseudonyms"].as_array().unwrap();
    assert!(list.len() >= 2);
    for v in list {
        let client_seed = hex32(&v["client_seed"]);
        let dest = addr(&v["destination_address"]);
        assert_eq!(dest.octets().to_vec(), hex(&v["destination_address_bytes"]));
        let p = Pseudonym::derive(&client_seed, &dest);
        // The seed stays inside; the vector's seed must give the same key.
        let from_seed = Pseudonym::real_identity(&hex32(&v["pseudonym_seed"]));
        assert_eq!(from_seed.public(), p.public());
        assert_eq!(from_seed.montgomery(), p.montgomery());
        assert_eq!(p.public(), &hex32(&v["pseudonym_key"]));
        assert_eq!(p.montgomery(), &hex32(&v["pseudonym_x25519"]));
        assert_eq!(p.address(), addr(&v["pseudonym_address"]));
        assert!(!p.is_real_identity());
        // Deterministic, and the option to present the real identity instead.
        assert_eq!(Pseudonym::derive(&client_seed, &dest).public(), p.public());
        let real = Pseudonym::for_destination(&client_seed, &dest, true);
        assert!(real.is_real_identity());
        assert_eq!(real.address(), addr(&v["client_address"]));
        assert_ne!(real.address(), p.address());
        let same = Pseudonym::for_destination(&client_seed, &dest, false);
        assert_eq!(same.public(), p.public());
    }
    assert_ne!(list[0]["pseudonym_key"], list[1]["pseudonym_key"]);
}

/// Runs the vector handshake through the public API with the script's ephemerals.
fn vector_handshake(v: &Value) -> (SessionKeys, SessionKeys, [u8; 496], [u8; 80]) {
    let service = ServiceIdentity::from_seed(&hex32(&v["service_seed"]));
    assert_eq!(service.public(), &hex32(&v["service_key_A"]));
    assert_eq!(service.montgomery(), &hex32(&v["service_x25519_S"]));
    assert_eq!(service.address(), addr(&v["service_address"]));

    let p = Pseudonym::derive(
        &hex32(&doc()["pseudonyms"][0]["client_seed"]),
        &service.address(),
    );
    assert_eq!(
        Pseudonym::real_identity(&hex32(&v["pseudonym_seed"])).public(),
        p.public()
    );
    assert_eq!(p.public(), &hex32(&v["pseudonym_key_P"]));
    assert_eq!(p.montgomery(), &hex32(&v["pseudonym_x25519_C"]));

    let auth = hex32(&v["intro_auth_key"]);
    let payload1: [u8; INTRO_PLAINTEXT_LEN] = hex(&v["payload1"]).try_into().unwrap();
    let payload2: [u8; REND_PLAINTEXT_LEN] = hex(&v["payload2"]).try_into().unwrap();
    let (client, msg1) = ClientHandshake::with_ephemeral(
        StaticSecret::from(hex32(&v["client_ephemeral_secret"])),
        service.public(),
        &auth,
        &p,
        &payload1,
    )
    .unwrap();
    assert_eq!(msg1.to_vec(), hex(&v["msg1"]), "msg1");
    assert_eq!(client.handshake_hash(), &hex32(&v["h_after_msg1"]));

    let introduced = service.read_msg1(&auth, &msg1).unwrap();
    assert_eq!(introduced.pseudonym(), p.public());
    assert_eq!(introduced.address(), p.address());
    assert_eq!(introduced.intro_plaintext(), &payload1);
    assert_eq!(introduced.client_ephemeral(), &msg1[..32]);
    let (service_keys, msg2) = introduced
        .accept_with_ephemeral(
            StaticSecret::from(hex32(&v["service_ephemeral_secret"])),
            &payload2,
        )
        .unwrap();
    assert_eq!(msg2.to_vec(), hex(&v["msg2"]), "msg2");
    let (client_keys, rend) = client.finish(&msg2).unwrap();
    assert_eq!(rend, payload2);
    (client_keys, service_keys, msg1, msg2)
}

#[test]
fn e2e_handshake() {
    let d = doc();
    let v = &d["e2e_handshake"];
    let (ck, sk, _, _) = vector_handshake(v);
    for keys in [&ck, &sk] {
        assert_eq!(keys.session_id(), &hex32(&v["handshake_hash"]));
        assert_eq!(keys.c2s(), &hex32(&v["k_c2s"]));
        assert_eq!(keys.s2c(), &hex32(&v["k_s2c"]));
        assert_eq!(keys.join_key(), &hex32(&v["k_join"]));
    }
}

#[test]
fn intro_and_rendezvous_bodies() {
    let d = doc();
    let v = &d["e2e_handshake"];
    let (ck, sk, msg1, msg2) = vector_handshake(v);
    let auth = hex32(&v["intro_auth_key"]);

    // The intro plaintext inside msg1.
    let payload1 = hex(&v["payload1"]);
    let ip = IntroPlaintext::parse(&payload1).unwrap();
    let cookie: [u8; 32] = Sha256::digest(b"rendezvous cookie 1").into();
    assert_eq!(ip.cookie, RendCookie(cookie));
    assert_eq!(ip.emit().to_vec(), payload1);
    assert_eq!(
        RendPlaintext::parse(&hex(&v["payload2"]))
            .unwrap()
            .emit()
            .to_vec(),
        hex(&v["payload2"])
    );
    assert_eq!(
        RendPlaintext::default().emit().to_vec(),
        hex(&v["payload2"])
    );

    // INTRODUCE1 and its replay tag.
    let intro1 = Introduce1 {
        auth_key: auth,
        msg1,
        pow: None,
    };
    assert_eq!(intro1.emit().to_vec(), hex(&v["introduce1_payload"]));
    let parsed = Introduce1::parse(&hex(&v["introduce1_payload"])).unwrap();
    assert_eq!(parsed, intro1);
    assert_eq!(parsed.replay_tag(), hex32(&v["intro_replay_tag"]));

    // RENDEZVOUS1 (msg2 in hs_data) and the RENDEZVOUS2 it becomes.
    let r1 = Rendezvous1 {
        cookie: RendCookie(cookie),
        hs: RendHs::Ik(msg2),
    };
    assert_eq!(r1.emit().to_vec(), hex(&v["rendezvous1_payload"]));
    let parsed = Rendezvous1::parse(&hex(&v["rendezvous1_payload"])).unwrap();
    assert_eq!(parsed, r1);
    let r2 = Rendezvous2::parse(&parsed.to_rendezvous2().emit()).unwrap();
    assert_eq!(r2.hs, RendHs::Ik(msg2));

    // The JOIN proof.
    let join_cookie = hex32(&v["join"]["cookie"]);
    let mac = hex32(&v["join"]["mac"]);
    assert_eq!(sk.join_mac(&join_cookie), mac);
    assert_eq!(join_mac(ck.join_key(), &join_cookie), mac);
    assert!(ck.verify_join_mac(&join_cookie, &mac));
    let mut bad = mac;
    bad[31] ^= 1;
    assert!(!ck.verify_join_mac(&join_cookie, &bad));
    assert!(!ck.verify_join_mac(&cookie, &mac));
}

#[test]
fn e2e_frames() {
    let d = doc();
    let (ck, sk, _, _) = vector_handshake(&d["e2e_handshake"]);
    let mut service = SessionChannel::service(&sk);
    let mut client = SessionChannel::client(&ck);
    let frames = d["e2e_aead"].as_array().unwrap();
    assert!(frames.len() >= 6);
    for f in frames {
        let counter = f["counter"].as_u64().unwrap();
        let pt = hex(&f["plaintext"]);
        let expected = hex(&f["frame"]);
        // Every frame fills a relay payload, whatever it carries (10.4).
        assert_eq!(expected.len(), E2E_FRAME_LEN);
        let c2s = f["direction"] == "client_to_service";
        let key = FrameKey::new(if c2s { ck.c2s() } else { ck.s2c() });

        // Seal at the vector's counter, in a buffer holding stale bytes past the plaintext.
        let mut buf = [0xa5u8; E2E_FRAME_LEN];
        buf[E2E_PLAINTEXT_OFFSET..E2E_PLAINTEXT_OFFSET + pt.len()].copy_from_slice(&pt);
        let n = seal_frame(&key, counter, &mut buf, pt.len()).unwrap();
        assert_eq!(buf[..n].to_vec(), expected, "frame at counter {counter}");
        // The counter on the wire is the vector's counter under the vector's mask.
        let mask = hex(&f["counter_mask"]);
        let on_wire: Vec<u8> = counter
            .to_be_bytes()
            .iter()
            .zip(&mask)
            .map(|(c, m)| c ^ m)
            .collect();
        assert_eq!(expected[1..E2E_HEADER_LEN].to_vec(), on_wire);
        assert_eq!(frame_counter(&key, &expected), Ok(counter));

        // Open with the pure function and check the message.
        let mut copy = expected.clone();
        let (c, opened) = open_frame(&key, &mut copy).unwrap();
        assert_eq!(c, counter);
        assert_eq!(opened.to_vec(), pt);
        match E2eMessage::parse(opened).unwrap() {
            E2eMessage::Packet(p) => assert!(p.len() == 48 || p.len() == 1280),
            E2eMessage::Ping(id) => assert_eq!(id, 0x0102030405060708),
            m => panic!("unexpected message {m:?}"),
        }

        // Open with the receiving session end, whose window applies.
        let receiver = if c2s { &mut service } else { &mut client };
        let mut out = [0u8; E2E_FRAME_LEN];
        match receiver.open(&expected, &mut out) {
            Ok(m) => assert_eq!(out[..m].to_vec(), pt),
            // 2^32 + 5 after 3 is beyond E2E_MAX_COUNTER_JUMP: refused by a session, accepted
            // by a fresh one.
            Err(FrameError::TooFarAhead) => {
                assert!(counter > (1 << 20));
                let mut fresh = SessionChannel::service(&sk);
                let m = fresh.open(&expected, &mut out).unwrap();
                assert_eq!(out[..m].to_vec(), pt);
                assert_eq!(fresh.open(&expected, &mut out), Err(FrameError::Duplicate));
            }
            Err(e) => panic!("frame at {counter}: {e}"),
        }
        // The same frame again is a replay: the window works on the hidden counter.
        assert!(receiver.open(&expected, &mut out).is_err());
    }
}

#[test]
fn establish_intro() {
    let d = doc();
    let v = &d["establish_intro"];
    let auth = SigningKey::from_bytes(&hex32(&v["auth_seed"]));
    let bind = hex32(&v["circuit_binding"]);
    let e = EstablishIntro::sign(&auth, &bind);
    assert_eq!(e.auth_key, hex32(&v["auth_key"]));
    assert_eq!(e.emit().to_vec(), hex(&v["payload"]));
    let parsed = EstablishIntro::parse(&hex(&v["payload"])).unwrap();
    assert_eq!(parsed, e);
    parsed.verify(&bind).unwrap();
    let mut other = bind;
    other[0] ^= 1;
    assert!(parsed.verify(&other).is_err());
    // With the proof-of-work flag (10.6): byte 1, outside the signature.
    let pow = e.clone().with_flags(ESTABLISH_FLAG_POW);
    assert_eq!(pow.emit().to_vec(), hex(&v["payload_pow"]));
    let parsed = EstablishIntro::parse(&hex(&v["payload_pow"])).unwrap();
    assert!(parsed.sheds_by_pow() && !e.sheds_by_pow());
    parsed.verify(&bind).unwrap();
    // The same auth key is the handshake vector's intro auth key.
    assert_eq!(e.auth_key, hex32(&d["e2e_handshake"]["intro_auth_key"]));
}
