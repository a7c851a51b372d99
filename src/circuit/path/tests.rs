use super::select::max_disjoint;
use super::*;
use crate::budget::MemoryBudget;
use crate::link::view::{RelayView, Source};
use crate::time::Instant;
use crate::wire::record::{NatClass, RecordFields, RelayRecord, FLAG_RELAY, FLAG_RENDEZVOUS};
use ed25519_dalek::SigningKey;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::net::SocketAddr;

const NOW: Instant = Instant::from_unix_ms(1_800_000_000_000);

fn rec(seed: u8, eps: &[&str], flags: u8, nat: NatClass) -> RelayRecord {
    let key = SigningKey::from_bytes(&[seed; 32]);
    RelayRecord::sign(
        &key,
        RecordFields {
            flags,
            nat,
            link_key: [seed; 32],
            onion_key: [seed; 32],
            seq: NOW.as_unix_ms(),
            expires: NOW.as_unix_ms() / 1000 + 3600,
            endpoints: eps.iter().map(|e| e.parse().unwrap()).collect(),
            introducers: vec![],
        },
    )
    .unwrap()
}

fn view(records: Vec<RelayRecord>) -> RelayView {
    let mut v = RelayView::new([0; 32], (32, 128), MemoryBudget::new(1 << 22));
    for r in records {
        v.insert(r, Source::Itself, NOW).unwrap();
    }
    v
}

fn ctx<'a>(v: &'a RelayView, own: &'a [SocketAddr], rules: PathRules) -> PathContext<'a> {
    PathContext {
        view: v,
        rules,
        own_endpoints: own,
        now: NOW,
    }
}

#[test]
fn families_any_endpoint_and_mapped() {
    let r = PathRules::default();
    let a: Vec<SocketAddr> = vec![
        "10.1.2.3:1".parse().unwrap(),
        "[2001:db8::1]:1".parse().unwrap(),
    ];
    let b: Vec<SocketAddr> = vec!["[2001:db8:ffff::9]:1".parse().unwrap()];
    let c: Vec<SocketAddr> = vec!["[::ffff:10.1.9.9]:1".parse().unwrap()];
    let d: Vec<SocketAddr> = vec!["10.2.0.1:1".parse().unwrap()];
    assert!(r.same_family(&a, &b));
    assert!(r.same_family(&a, &c));
    assert!(!r.same_family(&a, &d));
    assert!(!r.same_family(&[], &a));
    assert!(!PathRules::TEST_NET.same_family(&a, &c));
}

#[test]
fn small_network_names_the_rule() {
    let v = view(vec![
        rec(
            1,
            &["10.1.0.1:7"],
            FLAG_RELAY | FLAG_RENDEZVOUS,
            NatClass::Public,
        ),
        rec(
            2,
            &["10.2.0.1:7"],
            FLAG_RELAY | FLAG_RENDEZVOUS,
            NatClass::Public,
        ),
        rec(3, &["10.2.0.2:7"], FLAG_RELAY, NatClass::Public),
    ]);
    let c = ctx(&v, &[], PathRules::default());
    let mut rng = StdRng::seed_from_u64(1);
    let mut g = Guards::new();
    g.maintain(&c, &mut rng);
    let e = c
        .select(
            PathKind::Client(Target::Any(FLAG_RENDEZVOUS)),
            &g,
            None,
            &mut rng,
        )
        .unwrap_err();
    assert_eq!(
        e,
        PathError::Families {
            needed: 3,
            have: 2,
            rules: PathRules::default()
        }
    );
    assert!(e
        .to_string()
        .starts_with("path: need 3 relays in distinct /16 families, view has 2"));
    // Test-net prefixes: every address is its own family.
    let c = ctx(&v, &[], PathRules::TEST_NET);
    let mut g = Guards::new();
    g.maintain(&c, &mut rng);
    let p = c
        .select(
            PathKind::Client(Target::Any(FLAG_RENDEZVOUS)),
            &g,
            None,
            &mut rng,
        )
        .unwrap();
    assert_eq!(p.hops().len(), 3);
    c.check(&p).unwrap();
}

#[test]
fn max_disjoint_with_multi_endpoint_relays() {
    // A bridges families 1 and 2; B is in 1, C in 2: the best is {B, C}, not {A}.
    let v = view(vec![
        rec(
            1,
            &["10.1.0.1:7", "10.2.0.1:7"],
            FLAG_RELAY,
            NatClass::Public,
        ),
        rec(2, &["10.1.0.2:7"], FLAG_RELAY, NatClass::Public),
        rec(3, &["10.2.0.2:7"], FLAG_RELAY, NatClass::Public),
    ]);
    let c = ctx(&v, &[], PathRules::default());
    let pool = c.pool(&Families::default());
    assert_eq!(max_disjoint(&pool, 5), 2);
    assert_eq!(max_disjoint(&pool, 1), 1);
}

#[test]
fn rendezvous_exception() {
    let v = view(vec![
        rec(1, &["10.1.0.1:7"], FLAG_RELAY, NatClass::Public),
        rec(2, &["10.2.0.1:7"], FLAG_RELAY, NatClass::Public),
        rec(3, &["10.3.0.1:7"], FLAG_RELAY, NatClass::Public),
    ]);
    let c = ctx(&v, &[], PathRules::default());
    let mut rng = StdRng::seed_from_u64(2);
    let mut g = Guards::new();
    g.maintain(&c, &mut rng);
    let mut vg = Vanguards::new();
    vg.maintain(&c, &g, &mut rng);
    let guard = *g.first_hop(&c).unwrap().identity();
    // A rendezvous point in the guard's family, even the guard itself, is accepted.
    let rp = Hop::from_record(v.get(&guard).unwrap());
    let p = c
        .select(
            PathKind::Service(Target::PeerRendezvous(rp.clone())),
            &g,
            Some(&vg),
            &mut rng,
        )
        .unwrap();
    assert!(p.is_peer_rendezvous());
    c.check(&p).unwrap();
    // As a client's own target the next guard is taken (here no middle is left for it).
    let e = c
        .select(
            PathKind::Service(Target::Relay(rp)),
            &g,
            Some(&vg),
            &mut rng,
        )
        .unwrap_err();
    assert!(matches!(e, PathError::NoMiddle { .. }), "{e:?}");
}

#[test]
fn target_that_is_our_guard_goes_through_the_other_guard() {
    let v = view(
        (1..=6)
            .map(|i| {
                rec(
                    i,
                    &[&format!("10.{i}.0.1:7")],
                    FLAG_RELAY | FLAG_RENDEZVOUS,
                    NatClass::Public,
                )
            })
            .collect(),
    );
    let c = ctx(&v, &[], PathRules::default());
    let mut rng = StdRng::seed_from_u64(7);
    let mut g = Guards::new();
    g.maintain(&c, &mut rng);
    assert_eq!(g.len(), NUM_GUARDS);
    let first = *g.first_hop(&c).unwrap().identity();
    let target = Hop::from_record(v.get(&first).unwrap());
    for _ in 0..20 {
        let p = c
            .select(
                PathKind::Client(Target::Relay(target.clone())),
                &g,
                None,
                &mut rng,
            )
            .unwrap();
        c.check(&p).unwrap();
        assert_ne!(p.hops()[0].identity, first);
        assert!(g.list().iter().any(|x| x.identity == p.hops()[0].identity));
        assert_eq!(p.hops().last().unwrap().identity, first);
    }
    // Every other path keeps the first guard.
    let p = c
        .select(
            PathKind::Client(Target::Any(FLAG_RENDEZVOUS)),
            &g,
            None,
            &mut rng,
        )
        .unwrap();
    assert_eq!(p.hops()[0].identity, first);
    // With the other guard gone from the view there is no way round: the error says why.
    let other = g
        .list()
        .iter()
        .find(|x| x.identity != first)
        .unwrap()
        .identity;
    let v2 = view(
        (1..=6)
            .map(|i| {
                rec(
                    i,
                    &[&format!("10.{i}.0.1:7")],
                    FLAG_RELAY | FLAG_RENDEZVOUS,
                    NatClass::Public,
                )
            })
            .filter(|r| *r.identity() != other)
            .collect(),
    );
    let c2 = ctx(&v2, &[], PathRules::default());
    let e = c2
        .select(PathKind::Client(Target::Relay(target)), &g, None, &mut rng)
        .unwrap_err();
    assert_eq!(e.to_string(), "path: the target relay is the guard");
}

fn natted_rec(seed: u8, ep: &str, intro: &RelayRecord) -> RelayRecord {
    let key = SigningKey::from_bytes(&[seed; 32]);
    RelayRecord::sign(
        &key,
        RecordFields {
            flags: FLAG_RELAY,
            nat: NatClass::Cone,
            link_key: [seed; 32],
            onion_key: [seed; 32],
            seq: NOW.as_unix_ms(),
            expires: NOW.as_unix_ms() / 1000 + 3600,
            endpoints: vec![ep.parse().unwrap()],
            introducers: vec![crate::wire::record::Contact {
                identity: *intro.identity(),
                link_key: intro.fields().link_key,
                endpoint: intro.fields().endpoints[0],
            }],
        },
    )
    .unwrap()
}

/// Issue #20 item 3: with two public relays (both guards) a service's vanguard is a NATed
/// stand-in; when public relays outside the guards' families join, the stand-ins are replaced
/// at the next maintenance, not at the end of their 1-12 day lifetime.
#[test]
fn natted_vanguards_are_replaced_when_public_relays_appear() {
    let p1 = rec(1, &["10.1.0.1:7"], FLAG_RELAY, NatClass::Public);
    let p2 = rec(2, &["10.2.0.1:7"], FLAG_RELAY, NatClass::Public);
    let natted: Vec<RelayRecord> = (3..=6)
        .map(|i| natted_rec(i, &format!("10.{i}.0.1:7"), &p1))
        .collect();
    let mut records = vec![p1.clone(), p2.clone()];
    records.extend(natted.iter().cloned());
    let mut v = view(records);
    let mut rng = StdRng::seed_from_u64(3);
    let mut g = Guards::new();
    let mut vg = Vanguards::new();
    {
        let c = ctx(&v, &[], PathRules::default());
        g.maintain(&c, &mut rng);
        vg.maintain(&c, &g, &mut rng);
    }
    assert!(!vg.is_empty());
    assert_eq!(vg.behind_nat(&v), vg.len(), "only NATed relays fit: {vg:?}");
    for i in 7..=8 {
        let r = rec(i, &[&format!("10.{i}.0.1:7")], FLAG_RELAY, NatClass::Public);
        v.insert(r, Source::Itself, NOW).unwrap();
    }
    let c = ctx(&v, &[], PathRules::default());
    // The guards stay (they are kept for 30-60 days); the new public relays fit as vanguards.
    g.maintain(&c, &mut rng);
    let replaced = vg.maintain(&c, &g, &mut rng);
    assert!(replaced >= 1);
    assert!(!vg.is_empty());
    assert_eq!(vg.behind_nat(&v), 0, "{vg:?}");
    // And paths are built with them.
    let p = c
        .select(PathKind::ServiceStem, &g, Some(&vg), &mut rng)
        .unwrap();
    c.check(&p).unwrap();
}

/// A client's rendezvous point that is one of the service's vanguards is joined through another
/// vanguard: through the same one the middle would have to extend back to the relay it came
/// from, which it refuses (seen in tests/sim_intro_failover.rs: EXTEND failed, status 4).
#[test]
fn rendezvous_point_that_is_a_vanguard_is_reached_through_another() {
    let v = view(
        (1..=9)
            .map(|i| rec(i, &[&format!("10.{i}.0.1:7")], FLAG_RELAY, NatClass::Public))
            .collect(),
    );
    let c = ctx(&v, &[], PathRules::default());
    let mut rng = StdRng::seed_from_u64(5);
    let mut g = Guards::new();
    g.maintain(&c, &mut rng);
    let mut vg = Vanguards::new();
    vg.maintain(&c, &g, &mut rng);
    assert!(vg.len() >= 2, "{} vanguards", vg.len());
    let mut checked = 0;
    for van in vg.list().iter().map(|x| x.identity) {
        let rp = Hop::from_record(v.get(&van).unwrap());
        for _ in 0..20 {
            let p = c
                .select(
                    PathKind::Service(Target::PeerRendezvous(rp.clone())),
                    &g,
                    Some(&vg),
                    &mut rng,
                )
                .unwrap();
            let ids: Vec<[u8; 32]> = p.hops().iter().map(|h| h.identity).collect();
            assert_eq!(ids.last(), Some(&van));
            assert_ne!(ids[1], van, "reached through itself: {ids:?}");
            checked += 1;
        }
    }
    assert!(checked >= 40);
}
