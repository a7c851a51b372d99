//! DHT messages (protocol.md 12.2) and descriptors (11.3): the parsers return errors on bad input,
//! never panic, and whatever parses re-emits to bytes that parse to the same message.
#![no_main]
use globalnet::dht::descriptor::Descriptor;
use globalnet::budget::MemoryBudget;
use globalnet::dht::message::DhtMessage;
use globalnet::dht::store::Store;
use rand::SeedableRng;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = DhtMessage::parse(data) {
        let again = m.emit().expect("a parsed message re-emits");
        assert_eq!(DhtMessage::parse(&again).as_ref(), Ok(&m));
        if let DhtMessage::Store { kind, record } = &m {
            let _ = Descriptor::parse(record, 1_767_225_600_000);
            // The storage checks of every kind (claims included) on whatever a STORE carries.
            let mut store = Store::new([0; 32], MemoryBudget::new(1 << 20));
            let mut rng = rand::rngs::StdRng::seed_from_u64(0);
            let now = globalnet::time::Instant::from_unix_ms(1_767_225_600_000);
            let _ = store.store(*kind, record, (4, 0), now, &mut rng);
        }
    }
    let _ = Descriptor::parse(data, 1_767_225_600_000);
});
