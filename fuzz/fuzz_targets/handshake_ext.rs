//! Handshake extension TLVs (protocol.md 8.3): any 64-byte area parses or is refused, never a
//! panic; an accepted area re-encodes to one that parses to the same values.
#![no_main]
use globalnet::wire::handshake::{ClientExt, ExtTlvs, ServerExt};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for tlv in ExtTlvs::new(data) {
        if let Ok(t) = tlv {
            let _ = (t.is_critical(), t.value.len());
        }
    }
    let mut area = [0u8; 64];
    let n = data.len().min(64);
    area[..n].copy_from_slice(&data[..n]);
    if let Ok(c) = ClientExt::parse(&area) {
        assert_eq!(ClientExt::parse(&c.emit()), Ok(c));
    }
    if let Ok(s) = ServerExt::parse(&area) {
        assert_eq!(ServerExt::parse(&s.emit()), Ok(s));
    }
});
