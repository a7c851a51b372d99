//! Control socket requests (local users in the daemon's group can send anything).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = globalnet::control::parse_request(data);
});
