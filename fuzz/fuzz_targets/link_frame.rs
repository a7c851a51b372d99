//! Link frames (protocol.md 4.2) and datagram classification (4.1, 4.6).
#![no_main]
use globalnet::wire::{datagram, link};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = datagram::classify(data);
    let _ = datagram::record_of_response(data);
    if let Ok(f) = link::LinkFrame::new_checked(data) {
        // A frame that parses re-emits to a frame that parses the same way.
        let mut buf = [0u8; link::LINK_FRAME_MAX];
        if let Some(n) = link::emit(&mut buf, f.msg_type(), f.rpc_id(), f.payload()) {
            let again = link::LinkFrame::new_checked(&buf[..n]).expect("re-emitted frame parses");
            assert_eq!(again.payload(), f.payload());
        }
    }
});
