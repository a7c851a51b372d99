use super::*;

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn doc() -> serde_json::Value {
    serde_json::from_str(include_str!("../../../tests/vectors/protocol.json")).unwrap()
}

fn num(v: &serde_json::Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap()
}

fn a16(v: &serde_json::Value) -> [u8; 16] {
    unhex(v.as_str().unwrap()).try_into().unwrap()
}

fn a32(v: &serde_json::Value) -> [u8; 32] {
    unhex(v.as_str().unwrap()).try_into().unwrap()
}

/// The service key of a descriptor passes the network-key check (the client's `open` calls
/// `blind_public`): a torsion variant of a real key, which its holder could otherwise publish
/// under up to eight more addresses, is refused.
#[test]
fn service_key_with_torsion_is_refused() {
    let a = SigningKey::from_bytes(&[4; 32]).verifying_key();
    let addr = crate::crypto::address_of(a.as_bytes()).octets();
    assert!(blind_public(a.as_bytes(), &addr, 7).is_ok());
    for t in crate::crypto::keys::eight_torsion().iter().skip(1) {
        let variant = (a.to_edwards() + t).compress().to_bytes();
        let addr = crate::crypto::address_of(&variant).octets();
        assert_eq!(
            blind_public(&variant, &addr, 7).unwrap_err(),
            DescError::BlindedKey
        );
    }
}

#[test]
fn index_vectors() {
    let d = doc();
    for v in d["descriptor_index"].as_array().unwrap() {
        let addr = a16(&v["address_bytes"]);
        let text: std::net::Ipv6Addr = v["address"].as_str().unwrap().parse().unwrap();
        assert_eq!(text.octets(), addr);
        assert_eq!(index(&addr, num(&v["epoch"])), a32(&v["index"]));
    }
}

#[test]
fn blinding_vectors() {
    let d = doc();
    for v in d["key_blinding"].as_array().unwrap() {
        let service = SigningKey::from_bytes(&a32(&v["service_seed"]));
        let a = service.verifying_key().to_bytes();
        assert_eq!(a, a32(&v["A"]));
        let addr = a16(&v["address_bytes"]);
        assert_eq!(address_bytes(&a), addr);
        assert_eq!(
            crate::crypto::address_of(&a).octets(),
            addr,
            "same as crypto::address_of"
        );
        let e = num(&v["epoch"]);
        assert_eq!(blinding_factor(&addr, e).to_bytes(), a32(&v["h_scalar_le"]));
        let bk = BlindedKey::derive(&service, e).unwrap();
        assert_eq!(bk.scalar_bytes(), a32(&v["blinded_scalar_le"]));
        assert_eq!(bk.prefix(), a32(&v["blinded_prefix"]));
        assert_eq!(bk.public(), a32(&v["A_blinded"]));
        assert_eq!(blind_public(&a, &addr, e).unwrap(), a32(&v["A_blinded"]));
        let msg = unhex(v["message"].as_str().unwrap());
        let sig = bk.sign(&msg);
        assert_eq!(sig.to_vec(), unhex(v["signature"].as_str().unwrap()));
        // A standard verifier accepts it.
        VerifyingKey::from_bytes(&bk.public())
            .unwrap()
            .verify_strict(&msg, &Signature::from_bytes(&sig))
            .unwrap();
    }
}

fn vector_intro_points(body: &[u8]) -> Vec<IntroEntry> {
    (0..3)
        .map(|i| IntroEntry::parse(&body[36 + i * 168..36 + (i + 1) * 168]).unwrap())
        .collect()
}

#[test]
fn descriptor_vector() {
    let d = doc();
    let v = &d["descriptor"];
    let service = SigningKey::from_bytes(&a32(&v["service_seed"]));
    let addr = a16(&v["address_bytes"]);
    let e = num(&v["epoch"]);
    let revision = num(&v["revision"]);
    let expires = num(&v["expires"]);
    let salt: [u8; 16] = unhex(v["salt"].as_str().unwrap()).try_into().unwrap();
    let (key, nonce) = body_key(&addr, e, &a32(&v["A_blinded"]), revision, &salt);
    assert_eq!(key, a32(&v["body_key"]));
    assert_eq!(nonce.to_vec(), unhex(v["body_nonce"].as_str().unwrap()));
    assert_eq!(expires_for(revision / 1000, e), expires);
    assert_eq!(revision_for(revision, Some(revision - 5000)), revision);

    let bytes = unhex(v["descriptor"].as_str().unwrap());
    let plain = unhex(v["body_plaintext"].as_str().unwrap());
    let intros = vector_intro_points(&plain);
    // Build from the same inputs: byte-identical (AEAD and Ed25519 are deterministic).
    let built = Descriptor::build(
        &service,
        e,
        &intros,
        Publication {
            revision,
            expires,
            salt,
        },
    )
    .unwrap();
    assert_eq!(built.bytes()[..], bytes[..]);

    // Storage node.
    let now_ms = revision + 60_000;
    let stored = Descriptor::parse(&bytes, now_ms).unwrap();
    assert_eq!(*stored.index(), a32(&v["index"]));
    assert_eq!(*stored.blinded_key(), a32(&v["A_blinded"]));
    assert_eq!(stored.revision(), revision);
    // Client.
    let content = stored.open(&addr, e).unwrap();
    assert_eq!(content.service_key, service.verifying_key().to_bytes());
    assert_eq!(content.intro_points, intros);
    // Wrong epoch or address: refused.
    assert!(stored.open(&addr, e + 1).is_err());
    let mut other = addr;
    other[15] ^= 1;
    assert!(stored.open(&other, e).is_err());
}

fn sample_intro(i: u8) -> IntroEntry {
    IntroEntry {
        identity: SigningKey::from_bytes(&[i; 32]).verifying_key().to_bytes(),
        link_key: [i; 32],
        onion_key: [i.wrapping_add(1); 32],
        auth_key: SigningKey::from_bytes(&[i.wrapping_add(2); 32])
            .verifying_key()
            .to_bytes(),
        endpoints: vec![format!("198.18.0.{i}:7412").parse().unwrap()],
    }
}

const NOW_MS: u64 = 1_767_225_600_000 + 3_600_000;

fn build_at(service: &SigningKey, now_ms: u64) -> Descriptor {
    let e = epoch(now_ms / 1000);
    Descriptor::build(
        service,
        e,
        &[sample_intro(1), sample_intro(2)],
        Publication {
            revision: now_ms,
            expires: expires_for(now_ms / 1000, e),
            salt: [9; 16],
        },
    )
    .unwrap()
}

#[test]
fn round_trip_and_tampering() {
    let service = SigningKey::from_bytes(&[42; 32]);
    let addr = address_bytes(&service.verifying_key().to_bytes());
    let e = epoch(NOW_MS / 1000);
    let desc = build_at(&service, NOW_MS);
    let c = Descriptor::parse_and_open(desc.bytes(), &addr, e, NOW_MS).unwrap();
    assert_eq!(c.intro_points, vec![sample_intro(1), sample_intro(2)]);
    for i in [0, 1, 3, 4, 40, 70, 80, 90, 101, 102, 500, 857, 858, 921] {
        let mut b = *desc.bytes();
        b[i] ^= 1;
        assert!(
            Descriptor::parse_and_open(&b, &addr, e, NOW_MS).is_err(),
            "flip at {i} accepted"
        );
    }
    assert_eq!(
        Descriptor::parse(&desc.bytes()[..921], NOW_MS).unwrap_err(),
        DescError::Length(921)
    );
    // Expiry window and future revisions.
    let late = (desc.expires() + MAX_CLOCK_SKEW_S) * 1000;
    assert_eq!(
        Descriptor::parse(desc.bytes(), late).unwrap_err(),
        DescError::Expired
    );
    let early = NOW_MS - (MAX_CLOCK_SKEW_S + 1) * 1000;
    let short = Descriptor::build(
        &service,
        e,
        &[sample_intro(1)],
        Publication {
            revision: NOW_MS,
            expires: NOW_MS / 1000 + 3600,
            salt: [1; 16],
        },
    )
    .unwrap();
    assert_eq!(
        Descriptor::parse(short.bytes(), early).unwrap_err(),
        DescError::FutureRevision
    );
}

#[test]
fn someone_elses_key_does_not_pass_as_the_service() {
    // A squatter who knows the address signs with its own key: the storage node accepts it
    // (it cannot tell), the client refuses it.
    let service = SigningKey::from_bytes(&[42; 32]);
    let addr = address_bytes(&service.verifying_key().to_bytes());
    let squatter = SigningKey::from_bytes(&[43; 32]);
    let e = epoch(NOW_MS / 1000);
    let fake = build_at(&squatter, NOW_MS);
    let stored = Descriptor::parse(fake.bytes(), NOW_MS).unwrap();
    assert!(stored.open(&addr, e).is_err());
}

#[test]
fn nothing_repeats_across_epochs() {
    let service = SigningKey::from_bytes(&[42; 32]);
    let a = service.verifying_key().to_bytes();
    let d1 = build_at(&service, NOW_MS);
    let d2 = build_at(&service, NOW_MS + EPOCH_LEN_S * 1000);
    assert_ne!(d1.index(), d2.index());
    assert_ne!(d1.blinded_key(), d2.blinded_key());
    for d in [&d1, &d2] {
        let b = d.bytes();
        assert!(!b.windows(8).any(|w| a.windows(8).any(|x| x == w)));
    }
    // Ciphertexts share no 16-byte run (salts differ per publication in practice; here even
    // with the same salt the key differs per epoch).
    let c1 = &d1.bytes()[DESC_HEADER_LEN..];
    let c2 = &d2.bytes()[DESC_HEADER_LEN..];
    assert!(!c1.windows(16).any(|w| c2.windows(16).any(|x| x == w)));
}

#[test]
fn epochs() {
    let start = epoch_start(20454);
    assert_eq!(epochs_to_publish(start + 40_000), vec![20454]);
    assert_eq!(
        epochs_to_publish(start + EPOCH_LEN_S - 100),
        vec![20454, 20455]
    );
    assert_eq!(epochs_to_publish(start + 100), vec![20454, 20453]);
    assert_eq!(epochs_to_look_up(start + 40_000), (20454, None));
    assert_eq!(epochs_to_look_up(start + 100), (20454, Some(20453)));
    assert_eq!(
        expires_for(start + EPOCH_LEN_S - 100, 20454),
        start + EPOCH_LEN_S + EPOCH_OVERLAP_S
    );
    assert_eq!(revision_for(5, Some(10)), 11);
}

proptest::proptest! {
    #[test]
    fn parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 922..=922)) {
        let _ = Descriptor::parse(&bytes, NOW_MS);
    }
}
