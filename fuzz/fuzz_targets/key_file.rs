//! Key files in the state directory.
#![no_main]
use libfuzzer_sys::fuzz_target;
use globalnet::crypto::keys::{parse_key_file, KeyKind};

fuzz_target!(|data: &[u8]| {
    let _ = parse_key_file(data, KeyKind::Ed25519);
    let _ = parse_key_file(data, KeyKind::X25519);
});
