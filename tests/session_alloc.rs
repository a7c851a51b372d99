//! Proof that end-to-end frames allocate nothing in steady state (docs/protocol.md 10.4): a
//! counting global allocator, per thread, around sealing, opening and message parsing/emitting
//! in caller buffers.

mod alloc_counter;

use alloc_counter::allocations;

use globalnet::session::frame::{E2E_FRAME_LEN, E2E_PLAINTEXT_OFFSET};
use globalnet::session::intro::{INTRO_PLAINTEXT_LEN, REND_PLAINTEXT_LEN};
use globalnet::session::{ClientHandshake, E2eMessage, Pseudonym, ServiceIdentity, SessionChannel};
use rand::rngs::OsRng;

#[test]
fn frames_allocate_nothing() {
    let service = ServiceIdentity::from_seed(&[1u8; 32]);
    let p = Pseudonym::derive(&[2u8; 32], &service.address());
    let (client_hs, msg1) = ClientHandshake::new(
        &mut OsRng,
        service.public(),
        &[3u8; 32],
        &p,
        &[0u8; INTRO_PLAINTEXT_LEN],
    )
    .unwrap();
    let (sk, msg2) = service
        .read_msg1(&[3u8; 32], &msg1)
        .unwrap()
        .accept(&mut OsRng, &[0u8; REND_PLAINTEXT_LEN])
        .unwrap();
    let (ck, _) = client_hs.finish(&msg2).unwrap();
    let mut client = SessionChannel::client(&ck);
    let mut svc = SessionChannel::service(&sk);
    let packet = [0x60u8; 1280];
    let mut buf = [0u8; E2E_FRAME_LEN];
    let mut out = [0u8; E2E_FRAME_LEN];

    let before = allocations();
    for i in 0..1000u64 {
        let msg = if i % 2 == 0 {
            E2eMessage::Packet(&packet)
        } else {
            E2eMessage::Ping(i)
        };
        let n = msg.emit(&mut buf[E2E_PLAINTEXT_OFFSET..]).unwrap();
        let len = client.seal_in_place(&mut buf, n).unwrap();
        let pt = svc.open_in_place(&mut buf[..len]).unwrap();
        let got = E2eMessage::parse(pt).unwrap();
        assert_eq!(got.buffer_len(), n);
        // The other direction, copying into a separate buffer.
        let len = svc.seal(&packet[..40], &mut out).unwrap();
        let m = client.open(&out[..len], &mut buf).unwrap();
        assert_eq!(m, 40);
    }
    assert_eq!(allocations() - before, 0, "allocations per frame");
}
