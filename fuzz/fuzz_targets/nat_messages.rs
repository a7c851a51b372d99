//! NAT traversal payloads (protocol.md 13.2-13.4) and relay envelopes: every parser returns an
//! error on bad input, and whatever parses re-emits to the same bytes' meaning.
#![no_main]
use globalnet::wire::{datagram, link};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(n) = link::PunchNotify::parse(data) {
        assert_eq!(link::PunchNotify::parse(&n.emit()).as_ref(), Ok(&n));
    }
    if let Ok(o) = link::RelayOffer::parse(data) {
        assert_eq!(link::RelayOffer::parse(&o.emit()).as_ref(), Ok(&o));
    }
    if let Ok(f) = link::ProbeForward::parse(data) {
        assert_eq!(link::ProbeForward::parse(&f.emit()).as_ref(), Ok(&f));
    }
    let _ = link::parse_target(data);
    if let Some((token, inner)) = datagram::parse_relay_envelope(data) {
        let mut out = Vec::new();
        datagram::emit_relay_envelope(token, inner, &mut out);
        assert_eq!(out, data);
    }
});
