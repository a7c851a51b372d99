//! Relay records, views and path contexts shared by the path-selection tests (tests/path_rules.rs)
//! and the guard and vanguard tests (tests/path_guards.rs).
#![allow(dead_code)]

use ed25519_dalek::SigningKey;
use globalnet::budget::MemoryBudget;
use globalnet::circuit::path::{PathContext, PathRules};
use globalnet::link::view::{family_prefix, RelayView, Source};
use globalnet::time::{Instant, Millis};
use globalnet::wire::record::{Contact, NatClass, RecordFields, RelayRecord, FLAG_RELAY};
use std::collections::BTreeSet;
use std::net::SocketAddr;

pub const NOW: Instant = Instant::from_unix_ms(1_800_000_000_000);
pub const DAY: Millis = 86_400_000;

pub fn key(i: u32) -> SigningKey {
    let mut k = [0x5au8; 32];
    k[..4].copy_from_slice(&i.to_le_bytes());
    SigningKey::from_bytes(&k)
}

pub fn id(i: u32) -> [u8; 32] {
    key(i).verifying_key().to_bytes()
}

pub fn record(i: u32, eps: &[SocketAddr], flags: u8, nat: NatClass, expires_s: u64) -> RelayRecord {
    RelayRecord::sign(
        &key(i),
        RecordFields {
            flags,
            nat,
            link_key: [i as u8 | 1; 32],
            onion_key: [i as u8 | 2; 32],
            seq: NOW.as_unix_ms(),
            expires: expires_s,
            endpoints: eps.to_vec(),
            introducers: if nat.directly_reachable() {
                vec![]
            } else {
                vec![Contact {
                    identity: id(10_000 + i),
                    link_key: [7; 32],
                    endpoint: ep("10.250.0.1:7412"),
                }]
            },
        },
    )
    .unwrap()
}

pub fn ep(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A relay at one address, public, relay flag plus `extra`, valid for 100 days.
pub fn simple(i: u32, addr: &str, extra: u8) -> RelayRecord {
    record(
        i,
        &[ep(addr)],
        FLAG_RELAY | extra,
        NatClass::Public,
        NOW.as_unix_ms() / 1000 + 100 * 86_400,
    )
}

/// A view that does not cap per prefix (every test address is distinct under /32, /128).
pub fn view_of(records: &[RelayRecord]) -> RelayView {
    let mut v = RelayView::new([0; 32], (32, 128), MemoryBudget::new(1 << 24));
    for r in records {
        v.insert(r.clone(), Source::Itself, NOW).unwrap();
    }
    v
}

pub fn ctx<'a>(
    view: &'a RelayView,
    own: &'a [SocketAddr],
    rules: PathRules,
    now: Instant,
) -> PathContext<'a> {
    PathContext {
        view,
        rules,
        own_endpoints: own,
        now,
    }
}

/// The families of some endpoints, computed independently of the module.
pub fn fams(eps: &[SocketAddr], rules: PathRules) -> BTreeSet<(u8, u128)> {
    eps.iter()
        .map(|e| family_prefix(e.ip(), rules.ipv4_bits, rules.ipv6_bits))
        .collect()
}

pub fn disjoint(a: &[SocketAddr], b: &[SocketAddr], rules: PathRules) -> bool {
    fams(a, rules).is_disjoint(&fams(b, rules))
}
