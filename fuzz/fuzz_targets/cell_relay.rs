//! Relay messages (protocol.md 7.1) and EXTEND / EXTENDED payloads (8.4): any bytes give a view
//! or an error, never a panic, and a valid message's payload lies inside the body.
#![no_main]
use globalnet::wire::relay::{
    emit_relay_message, Extend, Extended, RelayMessage, RELAY_HEADER_LEN, RELAY_PAYLOAD_LEN,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match RelayMessage::new_checked(data) {
        Ok(m) => {
            let p = m.payload();
            assert!(p.len() <= RELAY_PAYLOAD_LEN);
            assert_eq!(p.len(), usize::from(m.length()));
            if let Ok(cmd) = m.command() {
                // re-emitting gives a message with the same command and payload
                let mut body = *m.as_bytes();
                emit_relay_message(&mut body, cmd, p).unwrap();
                let again = RelayMessage::new_checked(&body).unwrap();
                assert_eq!(
                    again.payload(),
                    &data[RELAY_HEADER_LEN..RELAY_HEADER_LEN + p.len()]
                );
            }
            let _ =
                Extend::new_checked(p).map(|e| (e.link_spec().len(), e.create_handshake().len()));
            let _ = Extended::new_checked(p).map(|e| (e.status(), e.created_handshake().len()));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    // the payload parsers on raw input too
    let _ = Extend::new_checked(data).map(|e| format!("{e:?}"));
    let _ = Extended::new_checked(data).map(|e| format!("{e:?}"));
});
