//! Relay records, link specifiers and endpoints (protocol.md 5): any bytes are a verified record
//! or an error.
#![no_main]
use globalnet::wire::record::{parse_endpoint, LinkSpec, RelayRecord, ENDPOINT_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = RelayRecord::parse(data, 1_800_000_000_000);
    let _ = LinkSpec::parse(data);
    if let Some(ep) = data.get(..ENDPOINT_LEN).and_then(|b| <&[u8; ENDPOINT_LEN]>::try_from(b).ok()) {
        let _ = parse_endpoint(ep);
    }
});
