//! GN-E2E-IK messages (protocol.md 10.3): any bytes as message 1 at a service or message 2 at a
//! client are refused with a typed error, never a panic.
#![no_main]
use globalnet::session::intro::INTRO_PLAINTEXT_LEN;
use globalnet::session::{ClientHandshake, Pseudonym, ServiceIdentity};
use libfuzzer_sys::fuzz_target;
use x25519_dalek::StaticSecret;

fuzz_target!(|data: &[u8]| {
    let service = ServiceIdentity::from_seed(&[1u8; 32]);
    let _ = service.read_msg1(&[4u8; 32], data);
    let p = Pseudonym::derive(&[2u8; 32], &service.address());
    let (c, _) = ClientHandshake::with_ephemeral(
        StaticSecret::from([3u8; 32]),
        service.public(),
        &[4u8; 32],
        &p,
        &[0u8; INTRO_PLAINTEXT_LEN],
    )
    .unwrap();
    if let Err(e) = c.finish(data) {
        let _ = e.to_string();
    }
    // Any 32 bytes as a service key: refused or usable, never a panic.
    if let Some(k) = data.get(..32) {
        let k: [u8; 32] = k.try_into().unwrap();
        let _ = ClientHandshake::with_ephemeral(
            StaticSecret::from([3u8; 32]),
            &k,
            &[4u8; 32],
            &p,
            &[0u8; INTRO_PLAINTEXT_LEN],
        );
    }
});
