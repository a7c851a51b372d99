//! DHT_LOOKUP and DHT_LOOKUP_REPLY payloads (protocol.md 12.6), as a last hop and a client
//! receive them from circuits: the parsers return errors on bad input, never panic, and whatever
//! parses re-emits to bytes that parse to the same payload.
#![no_main]
use globalnet::dht::lookup_msg::{salvage_ids, LookupReply, LookupRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = LookupRequest::parse(data) {
        assert_eq!(LookupRequest::parse(&r.emit()).as_ref(), Ok(&r));
    }
    if let Ok(r) = LookupReply::parse(data) {
        let again = r.emit().expect("a parsed reply re-emits");
        assert_eq!(LookupReply::parse(&again).as_ref(), Ok(&r));
    }
    let _ = salvage_ids(data);
});
