//! Name claims from the DHT (protocol.md 18.3): any bytes give a verified claim or an error,
//! never a panic; a claim that decodes encodes back to the same bytes.
#![no_main]
use globalnet::names::claim::{Claim, ClaimStore};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&day, bytes)) = data.split_first() else {
        return;
    };
    let epoch = 20_000 + u32::from(day);
    if let Ok(c) = Claim::decode(bytes, epoch) {
        assert_eq!(c.encode(), bytes);
        let mut s = ClaimStore::new(4);
        s.insert(c.clone());
        assert_eq!(s.owner(&c.name), Some(&c));
    }
});
