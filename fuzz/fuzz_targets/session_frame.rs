//! End-to-end frames and messages (protocol.md 10.4, 10.5): any bytes, and any bytes at the start
//! of a whole frame, are opened or refused by a session end without a panic, and any plaintext parses to a message or an error; a parsed
//! message emits bytes that parse to the same message.
#![no_main]
use globalnet::session::frame::{E2E_FRAME_LEN, E2E_VERSION};
use globalnet::session::intro::{INTRO_PLAINTEXT_LEN, REND_PLAINTEXT_LEN};
use globalnet::session::{
    ClientHandshake, E2eMessage, Pseudonym, ReplayWindow, ServiceIdentity, SessionChannel,
    SessionKeys,
};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use x25519_dalek::StaticSecret;

fn keys() -> &'static SessionKeys {
    static KEYS: OnceLock<SessionKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let service = ServiceIdentity::from_seed(&[1u8; 32]);
        let p = Pseudonym::derive(&[2u8; 32], &service.address());
        let (c, msg1) = ClientHandshake::with_ephemeral(
            StaticSecret::from([3u8; 32]),
            service.public(),
            &[4u8; 32],
            &p,
            &[0u8; INTRO_PLAINTEXT_LEN],
        )
        .unwrap();
        let (_, msg2) = service
            .read_msg1(&[4u8; 32], &msg1)
            .unwrap()
            .accept_with_ephemeral(StaticSecret::from([5u8; 32]), &[0u8; REND_PLAINTEXT_LEN])
            .unwrap();
        c.finish(&msg2).unwrap().0
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = E2eMessage::parse(data) {
        let mut out = [0u8; 2048];
        if let Ok(n) = m.emit(&mut out) {
            assert_eq!(E2eMessage::parse(&out[..n]).ok(), Some(m));
        }
    }
    let mut ch = SessionChannel::service(keys());
    let mut out = [0u8; E2E_FRAME_LEN];
    let _ = ch.open(data, &mut out);
    let mut buf = data.to_vec();
    let _ = ch.open_in_place(&mut buf);
    // Only whole frames get past the length check: also try the input as the start of one, so
    // the counter unmasking and the AEAD see fuzzed bytes.
    let mut full = [0u8; E2E_FRAME_LEN];
    let n = data.len().min(E2E_FRAME_LEN);
    full[..n].copy_from_slice(&data[..n]);
    full[0] = E2E_VERSION;
    let _ = ch.open_in_place(&mut full);
    // A frame the client seals around the input opens to the input.
    let mut client = SessionChannel::client(keys());
    if let Ok(n) = client.seal(data, &mut out) {
        let mut frame = out;
        let pt = ch.open_in_place(&mut frame[..n]).unwrap();
        assert_eq!(pt, data);
    }
    // Counter sequences never panic the window.
    let mut w = ReplayWindow::new();
    for c in data.chunks_exact(8) {
        let _ = w.check_and_mark(u64::from_le_bytes(c.try_into().unwrap()) >> (c[0] % 64));
    }
});
