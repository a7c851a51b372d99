//! Onion key rotation through the node (docs/protocol.md 14.3): after `ONION_KEY_ROTATION_MS` a
//! relay makes a new onion key, its relay record is signed again with it, and the daemon is handed
//! the key to keep; CREATEs to the previous key work for the grace period only (the key schedule
//! itself is tested in `circuit::onion`).

use ed25519_dalek::SigningKey;
use globalnet::budget::MemoryBudget;
use globalnet::circuit::{OnionKey, ONION_KEY_GRACE_MS, ONION_KEY_ROTATION_MS};
use globalnet::crypto::Randomness;
use globalnet::link::{LinkConfig, LinkKeys, LinkLayer};
use globalnet::node::Node;
use globalnet::time::Instant;
use x25519_dalek::{PublicKey, StaticSecret};

const NOW: u64 = 1_800_000_000_000;

fn relay() -> Node {
    let onion = StaticSecret::from([7; 32]);
    let keys = LinkKeys {
        identity: SigningKey::from_bytes(&[5; 32]),
        link: StaticSecret::from([6; 32]),
        onion_public: PublicKey::from(&onion).to_bytes(),
    };
    let cfg = LinkConfig {
        advertise: vec!["198.18.0.1:7412".parse().unwrap()],
        ..LinkConfig::default()
    };
    let link = LinkLayer::new(
        cfg,
        keys,
        MemoryBudget::new(1 << 24),
        Randomness::from_os(),
        Instant::from_unix_ms(NOW),
    );
    Node::new(
        link,
        OnionKey::from_secret(onion),
        Randomness::from_os(),
        Instant::from_unix_ms(NOW),
    )
}

#[test]
fn a_relay_rotates_its_onion_key_and_publishes_it() {
    let mut n = relay();
    let first = n
        .link
        .own_record()
        .expect("a relay record")
        .fields()
        .onion_key;
    n.handle_timeout(Instant::from_unix_ms(NOW + ONION_KEY_ROTATION_MS - 1000));
    assert!(n.take_onion_key_to_save().is_none(), "not yet");
    n.handle_timeout(Instant::from_unix_ms(NOW + ONION_KEY_ROTATION_MS + 1000));
    let k = n.take_onion_key_to_save().expect("rotated");
    assert!(n.take_onion_key_to_save().is_none(), "handed over once");
    assert_ne!(*k.public(), first);
    let published = n.link.own_record().unwrap().fields().onion_key;
    assert_eq!(published, *k.public(), "the record names the new key");
    // The age of a key loaded from disk sets the schedule: a fresh file waits a full period.
    let mut m = relay();
    m.set_onion_key_since(Instant::from_unix_ms(NOW + ONION_KEY_GRACE_MS));
    m.handle_timeout(Instant::from_unix_ms(NOW + ONION_KEY_ROTATION_MS + 1000));
    assert!(m.take_onion_key_to_save().is_none());
}
