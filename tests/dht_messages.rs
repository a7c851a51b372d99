//! DHT wire formats from the outside: the fuzz seeds parse, mutated seeds never panic the
//! parsers, and the responder answers version and type errors as 12.2 says.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::IpAddr;

use globalnet::budget::MemoryBudget;
use globalnet::dht::descriptor::Descriptor;
use globalnet::dht::message::{msg_type, DhtMessage, ErrorCode, StoreStatus};
use globalnet::dht::routing::RoutingTable;
use globalnet::dht::server;
use globalnet::dht::store::Store;
use globalnet::time::Instant;

const NOW_MS: u64 = 1_767_225_600_000 + 60_000;

fn seeds() -> Vec<(String, Vec<u8>)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/dht_message");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn seeds_parse_and_re_emit() {
    let seeds = seeds();
    assert!(seeds.len() >= 9);
    for (name, bytes) in &seeds {
        if name == "descriptor.bin" {
            assert!(Descriptor::parse(bytes, NOW_MS).is_ok());
            continue;
        }
        let m = DhtMessage::parse(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&m.emit().unwrap(), bytes, "{name}");
        match &m {
            DhtMessage::Store { record, .. }
            | DhtMessage::Value {
                record: Some(record),
                ..
            } => {
                let relay = globalnet::wire::record::RelayRecord::parse(record, NOW_MS).is_ok();
                let desc = Descriptor::parse(record, NOW_MS).is_ok();
                assert!(relay || desc, "{name}: record does not verify");
            }
            _ => {}
        }
    }
}

#[test]
fn mutated_seeds_never_panic() {
    let mut rng = StdRng::seed_from_u64(99);
    let seeds = seeds();
    for _ in 0..20_000 {
        let (_, base) = &seeds[rng.gen_range(0..seeds.len())];
        let mut b = base.clone();
        for _ in 0..rng.gen_range(1..4) {
            match rng.gen_range(0..3) {
                0 if !b.is_empty() => {
                    let i = rng.gen_range(0..b.len());
                    b[i] = rng.gen();
                }
                1 => b.truncate(rng.gen_range(0..=b.len())),
                _ => b.push(rng.gen()),
            }
        }
        if let Ok(m) = DhtMessage::parse(&b) {
            assert_eq!(DhtMessage::parse(&m.emit().unwrap()).unwrap(), m);
        }
        let _ = Descriptor::parse(&b, NOW_MS);
    }
}

#[test]
fn responder_errors() {
    let mut rng = StdRng::seed_from_u64(1);
    let me = [7u8; 32];
    let table = RoutingTable::new(&me, (16, 48), MemoryBudget::new(1 << 20));
    let mut store = Store::new(globalnet::dht::node_id(&me), MemoryBudget::new(1 << 20));
    let src: IpAddr = "198.18.0.9".parse().unwrap();
    let mut ask = |b: &[u8]| {
        server::respond(
            &table,
            &mut store,
            b,
            src,
            (16, 48),
            Instant::from_unix_ms(NOW_MS),
            &mut rng,
        )
    };
    // Unknown version: ERROR(1) with max_version 1, in a version-1 header.
    let r = ask(&[9, msg_type::FIND_NODE, 0, 0]).unwrap();
    assert_eq!(r.emit().unwrap(), vec![1, msg_type::ERROR, 0, 0, 1, 1]);
    // Unknown type: ERROR(2).
    assert!(matches!(
        ask(&[1, 77, 0, 0]).unwrap(),
        DhtMessage::Error {
            code: ErrorCode::Malformed,
            ..
        }
    ));
    // Replies are never answered.
    assert!(ask(&[1, msg_type::STORE_RESULT, 0, 0, 0]).is_none());
    // An empty table answers FIND_NODE with no contacts and stores what it is closest to.
    assert_eq!(
        ask(&DhtMessage::FindNode { target: [1; 32] }.emit().unwrap()).unwrap(),
        DhtMessage::Nodes { contacts: vec![] }
    );
    let seeds = seeds();
    let store_desc = &seeds.iter().find(|(n, _)| n == "store_desc.bin").unwrap().1;
    assert_eq!(
        ask(store_desc).unwrap(),
        DhtMessage::StoreResult {
            status: StoreStatus::Stored
        }
    );
}
