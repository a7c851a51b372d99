//! Path selection (docs/protocol.md section 9): every selected path satisfies every rule of 9.2
//! over thousands of selections on a random view, the choice is spread over every eligible relay,
//! and small networks fail with the rule named. Guards and vanguards: tests/path_guards.rs.
use globalnet::circuit::path::{
    Conflict, Guards, Hop, Path, PathContext, PathError, PathKind, PathRules, Role, Shape, Target,
    Vanguards, NUM_GUARDS, NUM_L2_GUARDS,
};
use globalnet::wire::record::{NatClass, RelayRecord, FLAG_DHT, FLAG_RELAY, FLAG_RENDEZVOUS};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

mod path_support;
#[allow(unused_imports)]
use path_support::*;

/// The address of relay-family `f`: families 0..20 are IPv4 /16s, 20.. IPv6 /32s.
fn family_addr(f: u32, host: u32) -> SocketAddr {
    if f < 20 {
        ep(&format!("10.{}.{}.{}:7412", f, host / 250, host % 250 + 1))
    } else {
        ep(&format!("[2001:{:x}::{:x}]:7412", 0x100 + f, host + 1))
    }
}

struct RandomNet {
    records: Vec<RelayRecord>,
    own: Vec<SocketAddr>,
}

/// 60 relays over 25 families (20 IPv4 /16, 5 IPv6 /32); some with a second endpoint in another
/// family, some not relays, some expired, some behind NAT. The node itself is in family 3.
fn random_net(seed: u64) -> RandomNet {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut records = Vec::new();
    for i in 0..60u32 {
        let f = i % 25;
        let mut eps = vec![family_addr(f, i)];
        if rng.gen_bool(0.2) {
            let g = rng.gen_range(0..25);
            eps.push(family_addr(g, 100 + i));
            eps.dedup();
        }
        let nat = if rng.gen_bool(0.2) {
            if rng.gen_bool(0.5) {
                NatClass::Cone
            } else {
                NatClass::Symmetric
            }
        } else if rng.gen_bool(0.5) {
            NatClass::Public
        } else {
            NatClass::Reachable
        };
        let mut flags = FLAG_RELAY;
        if nat.directly_reachable() {
            if rng.gen_bool(0.35) {
                flags |= FLAG_RENDEZVOUS;
            }
            if rng.gen_bool(0.3) {
                flags |= FLAG_DHT;
            }
        }
        if rng.gen_bool(0.1) {
            flags = 0;
        }
        let expires = if rng.gen_bool(0.08) {
            NOW.as_unix_ms() / 1000 - 1
        } else {
            NOW.as_unix_ms() / 1000 + 3600
        };
        records.push(record(i, &eps, flags, nat, expires));
    }
    RandomNet {
        records,
        own: vec![ep("10.3.200.9:5000"), ep("[2001:200:1::9]:5000")],
    }
}

/// Every rule of 9.2, checked from scratch.
fn assert_rules(
    c: &PathContext<'_>,
    path: &Path,
    kind: &PathKind,
    guards: &Guards,
    vanguards: &Vanguards,
) {
    let rules = c.rules;
    let hops = path.hops();
    let shape = kind.shape();
    assert_eq!(path.shape(), shape);
    let want_len = match shape {
        Shape::Client => 3,
        Shape::Service => 4,
        Shape::ClientStem => 2,
        Shape::ServiceStem => 3,
    };
    assert_eq!(hops.len(), want_len, "{shape:?}");
    let peer_rp = matches!(kind, PathKind::Service(Target::PeerRendezvous(_)));
    let target_given = matches!(
        kind,
        PathKind::Client(Target::Relay(_)) | PathKind::Service(Target::Relay(_))
    ) || peer_rp;
    let now_s = c.now.as_unix_ms() / 1000;
    for (i, h) in hops.iter().enumerate() {
        let last = i + 1 == hops.len();
        let has_target = matches!(shape, Shape::Client | Shape::Service);
        if !(last && has_target && target_given) {
            let r = c.view.get(&h.identity).expect("hop in the view");
            assert!(r.is_relay(), "hop {i} is not a relay");
            assert!(r.fields().expires > now_s, "hop {i} expired");
            assert_eq!(h.endpoints, r.fields().endpoints);
            assert_eq!(h.onion_key, r.fields().onion_key);
        }
        let exempt = last && peer_rp;
        if !exempt {
            assert!(
                disjoint(&h.endpoints, c.own_endpoints, rules),
                "hop {i} in own family"
            );
        }
        for (j, o) in hops.iter().enumerate().take(i) {
            if exempt && j + 2 != hops.len() {
                continue; // the rendezvous exception: only the middle is kept distinct
            }
            assert_ne!(h.identity, o.identity, "hops {j} and {i} are one relay");
            assert!(
                disjoint(&h.endpoints, &o.endpoints, rules),
                "hops {j} and {i} share a family"
            );
        }
    }
    let guard = guards.first_hop(c).expect("a guard");
    assert_eq!(
        &hops[0].identity,
        guard.identity(),
        "first hop is the guard"
    );
    assert_eq!(path.hop(Role::Guard), hops.first());
    if matches!(shape, Shape::Service | Shape::ServiceStem) {
        assert!(
            vanguards.contains(&hops[1].identity),
            "second hop is a vanguard"
        );
        assert_eq!(path.hop(Role::Vanguard), hops.get(1));
    }
    match kind {
        PathKind::Client(Target::Any(f)) | PathKind::Service(Target::Any(f)) => {
            let r = c.view.get(&hops.last().unwrap().identity).unwrap();
            assert_eq!(r.fields().flags & f, *f, "target flags");
        }
        PathKind::Client(Target::Relay(h))
        | PathKind::Service(Target::Relay(h))
        | PathKind::Service(Target::PeerRendezvous(h)) => {
            assert_eq!(hops.last(), Some(h));
        }
        _ => {}
    }
    c.check(path).unwrap();
}

#[test]
fn ten_thousand_paths_keep_every_rule_and_spread() {
    let net = random_net(7);
    let view = view_of(&net.records);
    let rules = PathRules::default();
    let c = ctx(&view, &net.own, rules, NOW);
    let mut rng = StdRng::seed_from_u64(99);
    let mut guards = Guards::new();
    let events = guards.maintain(&c, &mut rng);
    assert_eq!(guards.len(), NUM_GUARDS, "{events:?}");
    assert!(!guards.has_temporary());
    let mut vanguards = Vanguards::new();
    vanguards.maintain(&c, &guards, &mut rng);
    assert_eq!(vanguards.len(), NUM_L2_GUARDS);
    for g in guards.list() {
        let r = view.get(&g.identity).unwrap();
        assert!(r.fields().nat.directly_reachable());
        assert!(disjoint(&r.fields().endpoints, &net.own, rules));
    }

    let relays: Vec<&RelayRecord> = {
        let mut v: Vec<&RelayRecord> = view.iter().collect();
        v.sort_by_key(|r| *r.identity());
        v
    };
    let usable = |r: &RelayRecord| r.is_relay() && r.fields().expires > NOW.as_unix_ms() / 1000;

    let mut middles: BTreeMap<[u8; 32], usize> = BTreeMap::new();
    let mut targets: BTreeMap<[u8; 32], usize> = BTreeMap::new();
    let mut vanguard_use: BTreeMap<[u8; 32], usize> = BTreeMap::new();
    let mut client_rv = 0usize;
    let first_guard = guards.list()[0].identity;
    let second_guard = guards.list()[1].identity;
    for n in 0..10_000u32 {
        // The second half runs with the first guard unreachable: the second guard is used.
        if n == 6000 {
            guards.mark_down(&first_guard, NOW);
            assert_eq!(guards.first_hop(&c).unwrap().identity(), &second_guard);
        }
        let kind = match n % 8 {
            0..=2 => PathKind::Client(Target::Any(FLAG_RENDEZVOUS)),
            3 => PathKind::Client(Target::Any(FLAG_DHT)),
            4 => PathKind::Service(Target::Any(FLAG_RENDEZVOUS)),
            5 => PathKind::ClientStem,
            6 => PathKind::ServiceStem,
            _ => {
                // A client's rendezvous point: any RENDEZVOUS relay, even the guard's family.
                let rps: Vec<&&RelayRecord> = relays
                    .iter()
                    .filter(|r| usable(r) && r.fields().flags & FLAG_RENDEZVOUS != 0)
                    .collect();
                let rp = rps.choose(&mut rng).unwrap();
                PathKind::Service(Target::PeerRendezvous(Hop::from_record(rp)))
            }
        };
        let path = c
            .select(kind.clone(), &guards, Some(&vanguards), &mut rng)
            .unwrap_or_else(|e| panic!("selection {n} ({kind:?}): {e}"));
        assert_rules(&c, &path, &kind, &guards, &vanguards);
        if n < 6000 {
            if let PathKind::Client(Target::Any(FLAG_RENDEZVOUS)) = kind {
                client_rv += 1;
                *middles.entry(path.hops()[1].identity).or_default() += 1;
                *targets.entry(path.hops()[2].identity).or_default() += 1;
            }
        }
        if path.shape() == Shape::Service {
            *vanguard_use.entry(path.hops()[1].identity).or_default() += 1;
        }
        // Stems extend to full paths under the same rules.
        if n % 8 == 5 {
            if let Ok(full) = c.extend_stem(&path, Target::Any(FLAG_RENDEZVOUS), &mut rng) {
                assert_rules(
                    &c,
                    &full,
                    &PathKind::Client(Target::Relay(full.last().unwrap().clone())),
                    &guards,
                    &vanguards,
                );
            }
        }
    }

    // Spread: every relay that can be a middle (of some valid client path through the first
    // guard) was chosen, and every eligible rendezvous target too; no relay dominates.
    let g = view.get(&first_guard).unwrap();
    let ok_pair = |a: &RelayRecord, b: &RelayRecord| {
        a.identity() != b.identity()
            && disjoint(&a.fields().endpoints, &b.fields().endpoints, rules)
    };
    let candidate = |r: &RelayRecord| {
        usable(r) && ok_pair(r, g) && disjoint(&r.fields().endpoints, &net.own, rules)
    };
    let rv = |r: &RelayRecord| r.fields().flags & FLAG_RENDEZVOUS != 0;
    let eligible_middles: BTreeSet<[u8; 32]> = relays
        .iter()
        .filter(|m| candidate(m))
        .filter(|m| {
            relays
                .iter()
                .any(|t| candidate(t) && rv(t) && ok_pair(m, t))
        })
        .map(|m| *m.identity())
        .collect();
    let eligible_targets: BTreeSet<[u8; 32]> = relays
        .iter()
        .filter(|t| candidate(t) && rv(t))
        .filter(|t| relays.iter().any(|m| candidate(m) && ok_pair(m, t)))
        .map(|t| *t.identity())
        .collect();
    assert!(eligible_middles.len() >= 20, "{}", eligible_middles.len());
    assert_eq!(
        middles.keys().copied().collect::<BTreeSet<_>>(),
        eligible_middles
    );
    assert_eq!(
        targets.keys().copied().collect::<BTreeSet<_>>(),
        eligible_targets
    );
    let mean = client_rv as f64 / eligible_middles.len() as f64;

    for (m, count) in &middles {
        let c = *count as f64;
        assert!(
            c > mean / 4.0 && c < mean * 3.0,
            "middle {:02x?} chosen {count} times, mean {mean:.0}",
            &m[..4]
        );
    }
    let tmean = client_rv as f64 / eligible_targets.len() as f64;
    for count in targets.values() {
        let c = *count as f64;
        assert!(c > tmean / 2.0 && c < tmean * 2.0, "{count} vs {tmean:.0}");
    }
    // Service circuits use every vanguard usable with their guard.
    assert!(vanguard_use.len() >= 2, "{vanguard_use:?}");
    for v in vanguard_use.keys() {
        assert!(vanguards.contains(v));
    }
}

#[test]
fn selection_is_deterministic_whatever_the_map_order() {
    let net = random_net(11);
    let mut shuffled = net.records.clone();
    shuffled.shuffle(&mut StdRng::seed_from_u64(5));
    let run = |records: &[RelayRecord]| {
        let view = view_of(records);
        let c = ctx(&view, &net.own, PathRules::default(), NOW);
        let mut rng = StdRng::seed_from_u64(42);
        let mut guards = Guards::new();
        guards.maintain(&c, &mut rng);
        let mut vg = Vanguards::new();
        vg.maintain(&c, &guards, &mut rng);
        let mut out = Vec::new();
        for n in 0..200 {
            let kind = if n % 2 == 0 {
                PathKind::Client(Target::Any(FLAG_RENDEZVOUS))
            } else {
                PathKind::ServiceStem
            };
            let p = c.select(kind, &guards, Some(&vg), &mut rng).unwrap();
            out.push(p.hops().iter().map(|h| h.identity).collect::<Vec<_>>());
        }
        out
    };
    assert_eq!(run(&net.records), run(&shuffled));
}

#[test]
fn small_networks_fail_loudly_naming_the_rule() {
    let mut rng = StdRng::seed_from_u64(3);
    let rules = PathRules::default();

    // Two /16 families: a 3-hop path is impossible, whatever the guard.
    let view = view_of(&[
        simple(1, "10.1.0.1:7", FLAG_RENDEZVOUS),
        simple(2, "10.1.0.2:7", FLAG_RENDEZVOUS),
        simple(3, "10.2.0.1:7", FLAG_RENDEZVOUS),
        simple(4, "10.2.0.2:7", 0),
    ]);
    let c = ctx(&view, &[], rules, NOW);
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
            rules
        }
    );
    assert!(
        e.to_string()
            .starts_with("path: need 3 relays in distinct /16 families, view has 2"),
        "{e}"
    );
    let e = c.select(PathKind::ClientStem, &g, None, &mut rng);
    assert!(e.is_ok(), "a stem needs only 2 families: {e:?}");

    // Three families: client paths work, service paths (4 hops) do not.
    let view = view_of(&[
        simple(1, "10.1.0.1:7", FLAG_RENDEZVOUS),
        simple(2, "10.2.0.1:7", FLAG_RENDEZVOUS),
        simple(3, "[2001:db8::1]:7", FLAG_RENDEZVOUS),
    ]);
    let c = ctx(&view, &[], rules, NOW);
    let mut g = Guards::new();
    g.maintain(&c, &mut rng);
    let mut vg = Vanguards::new();
    vg.maintain(&c, &g, &mut rng);
    let kind = PathKind::Client(Target::Any(FLAG_RENDEZVOUS));
    let p = c.select(kind.clone(), &g, None, &mut rng).unwrap();
    assert_rules(&c, &p, &kind, &g, &vg);
    let e = c
        .select(
            PathKind::Service(Target::Any(FLAG_RENDEZVOUS)),
            &g,
            Some(&vg),
            &mut rng,
        )
        .unwrap_err();
    assert_eq!(
        e.to_string().split(" (").next().unwrap(),
        "path: need 4 relays in distinct /16 families, view has 3"
    );
    // Service circuits without vanguards: named.
    let e = c
        .select(PathKind::ServiceStem, &g, None, &mut rng)
        .unwrap_err();
    assert!(
        matches!(e, PathError::NoVanguard { vanguards: 0, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("layer-2 vanguard"), "{e}");

    // The node's own family does not count: with the node in 10.1/16, two families are left.
    let own = [ep("10.1.9.9:1")];
    let c = ctx(&view, &own, rules, NOW);
    let mut g = Guards::new();
    g.maintain(&c, &mut rng);
    let e = c.select(kind.clone(), &g, None, &mut rng).unwrap_err();
    assert_eq!(
        e,
        PathError::Families {
            needed: 3,
            have: 2,
            rules
        }
    );

    // Non-relays and expired records do not count either.
    let view = view_of(&[
        simple(1, "10.1.0.1:7", FLAG_RENDEZVOUS),
        simple(2, "10.2.0.1:7", FLAG_RENDEZVOUS),
        record(
            3,
            &[ep("10.3.0.1:7")],
            0,
            NatClass::Public,
            NOW.as_unix_ms() / 1000 + 3600,
        ),
        record(
            4,
            &[ep("10.4.0.1:7")],
            FLAG_RELAY,
            NatClass::Public,
            NOW.as_unix_ms() / 1000,
        ),
    ]);
    let c = ctx(&view, &[], rules, NOW);
    let mut g = Guards::new();
    g.maintain(&c, &mut rng);
    assert_eq!(
        c.select(kind.clone(), &g, None, &mut rng).unwrap_err(),
        PathError::Families {
            needed: 3,
            have: 2,
            rules
        }
    );

    // Enough families, but no relay with the target flag.
    let view = view_of(&[
        simple(1, "10.1.0.1:7", 0),
        simple(2, "10.2.0.1:7", 0),
        simple(3, "10.3.0.1:7", FLAG_DHT),
        simple(4, "10.4.0.1:7", 0),
    ]);
    let c = ctx(&view, &[], rules, NOW);
    let mut g = Guards::new();
    g.maintain(&c, &mut rng);
    let e = c.select(kind.clone(), &g, None, &mut rng).unwrap_err();
    assert_eq!(
        e.to_string(),
        "path: the view has no RENDEZVOUS relay outside this node's /16 family"
    );
    // A given target in the node's own family, or in the guard's: refused, named.
    let own = [ep("10.9.0.1:1")];
    let c = ctx(&view, &own, rules, NOW);
    let mine = Hop::from_record(&simple(9, "10.9.5.5:7", FLAG_RENDEZVOUS));
    let e = c
        .select(PathKind::Client(Target::Relay(mine)), &g, None, &mut rng)
        .unwrap_err();
    assert_eq!(
        e,
        PathError::TargetConflict {
            with: Conflict::ThisNode,
            same_identity: false,
            rules
        }
    );
    assert_eq!(
        e.to_string(),
        "path: the target relay is in the /16 family of this node"
    );
    let guard = g.first_hop(&c).unwrap();
    let addr = guard.fields().endpoints[0];
    let near = format!(
        "{}.{}.77.77:7",
        addr.ip().to_string().split('.').next().unwrap(),
        addr.ip().to_string().split('.').nth(1).unwrap()
    );
    // A target in the first guard's family is reached through the other guard (as Tor does)...
    let beside = Hop::from_record(&simple(10, &near, FLAG_RENDEZVOUS));
    let p = c
        .select(PathKind::Client(Target::Relay(beside)), &g, None, &mut rng)
        .unwrap();
    assert_ne!(p.hops()[0].identity, *guard.identity());
    // ... and one in the families of both guards cannot be reached: the error names the clash.
    let other = g
        .list()
        .iter()
        .find(|x| x.identity != *guard.identity())
        .and_then(|x| view.get(&x.identity))
        .unwrap();
    let oaddr = other.fields().endpoints[0].ip().to_string();
    let near2 = format!(
        "{}.{}.77.78:7",
        oaddr.split('.').next().unwrap(),
        oaddr.split('.').nth(1).unwrap()
    );
    let both = Hop::from_record(&record(
        11,
        &[ep(&near), ep(&near2)],
        FLAG_RELAY | FLAG_RENDEZVOUS,
        NatClass::Public,
        NOW.as_unix_ms() / 1000 + 3600,
    ));
    let e = c
        .select(PathKind::Client(Target::Relay(both)), &g, None, &mut rng)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "path: the target relay is in the /16 family of the guard"
    );

    // No directly reachable relay: no guard.
    let nat = |i: u32, a: &str| {
        record(
            i,
            &[ep(a)],
            FLAG_RELAY,
            NatClass::Cone,
            NOW.as_unix_ms() / 1000 + 3600,
        )
    };
    let view = view_of(&[
        nat(1, "10.1.0.1:7"),
        nat(2, "10.2.0.1:7"),
        nat(3, "10.3.0.1:7"),
    ]);
    let c = ctx(&view, &[], rules, NOW);
    let mut g = Guards::new();
    g.maintain(&c, &mut rng);
    assert!(g.is_empty());
    let e = c
        .select(PathKind::ClientStem, &g, None, &mut rng)
        .unwrap_err();
    assert_eq!(e, PathError::NoGuard { guards: 0 });
    assert!(e.to_string().contains("no directly reachable relay"), "{e}");
}

#[test]
fn test_net_prefixes_make_one_slash16_work() {
    let mut rng = StdRng::seed_from_u64(4);
    let records: Vec<RelayRecord> = (1..=8)
        .map(|i| simple(i, &format!("10.99.0.{i}:7412"), FLAG_RENDEZVOUS | FLAG_DHT))
        .collect();
    let view = view_of(&records);
    let own = [ep("10.99.0.200:7412")];

    let c = ctx(&view, &own, PathRules::default(), NOW);
    let mut g = Guards::new();
    g.maintain(&c, &mut rng);
    assert!(g.is_empty(), "every relay is in the node's own /16");
    let e = c
        .select(PathKind::Client(Target::Any(FLAG_DHT)), &g, None, &mut rng)
        .unwrap_err();
    assert_eq!(
        e,
        PathError::Families {
            needed: 3,
            have: 0,
            rules: PathRules::default()
        }
    );

    let c = ctx(&view, &own, PathRules::TEST_NET, NOW);
    let mut g = Guards::new();
    g.maintain(&c, &mut rng);
    assert_eq!(g.len(), NUM_GUARDS);
    let mut vg = Vanguards::new();
    vg.maintain(&c, &g, &mut rng);
    assert_eq!(vg.len(), NUM_L2_GUARDS);
    for kind in [
        PathKind::Client(Target::Any(FLAG_DHT)),
        PathKind::Service(Target::Any(FLAG_RENDEZVOUS)),
        PathKind::ClientStem,
        PathKind::ServiceStem,
    ] {
        for _ in 0..50 {
            let p = c.select(kind.clone(), &g, Some(&vg), &mut rng).unwrap();
            assert_rules(&c, &p, &kind, &g, &vg);
        }
    }
}

#[test]
fn rendezvous_exception_keeps_only_the_middle_distinct() {
    let mut rng = StdRng::seed_from_u64(8);
    let records: Vec<RelayRecord> = (1..=6)
        .map(|i| simple(i, &format!("10.{i}.0.1:7"), FLAG_RENDEZVOUS))
        .collect();
    let view = view_of(&records);
    let own = [ep("10.200.0.1:1")];
    let rules = PathRules::default();
    let c = ctx(&view, &own, rules, NOW);
    let mut g = Guards::new();
    g.maintain(&c, &mut rng);
    let mut vg = Vanguards::new();
    vg.maintain(&c, &g, &mut rng);
    let guard = g.first_hop(&c).unwrap().clone();
    let gaddr = guard.fields().endpoints[0];
    let oct = gaddr.ip().to_string();
    let second = oct.split('.').nth(1).unwrap().to_string();
    // Rendezvous points in the guard's family, the guard itself, and the node's own family.
    let rps = [
        Hop::from_record(&simple(50, &format!("10.{second}.9.9:7"), FLAG_RENDEZVOUS)),
        Hop::from_record(&guard),
        Hop::from_record(&simple(51, "10.200.5.5:7", FLAG_RENDEZVOUS)),
    ];
    for rp in rps {
        for _ in 0..20 {
            let kind = PathKind::Service(Target::PeerRendezvous(rp.clone()));
            let p = c.select(kind.clone(), &g, Some(&vg), &mut rng).unwrap();
            assert!(p.is_peer_rendezvous());
            assert_rules(&c, &p, &kind, &g, &vg);
        }
        // As the service's own choice of target it never shares a family with a hop: one in
        // the node's family is refused, one that clashes with the first guard is reached
        // through the other guard (or refused when there is no way round).
        match c.select(
            PathKind::Service(Target::Relay(rp.clone())),
            &g,
            Some(&vg),
            &mut rng,
        ) {
            Ok(p) => {
                assert_ne!(p.hops()[0].identity, guard.identity().to_owned());
                assert!(disjoint(&p.hops()[0].endpoints, &rp.endpoints, rules));
                c.check(&p).unwrap();
            }
            Err(e) => assert!(matches!(e, PathError::TargetConflict { .. }), "{e:?}"),
        }
        // Pooled stems: the rendezvous point may follow any stem whose middle is elsewhere.
        let stem = c
            .select(PathKind::ServiceStem, &g, Some(&vg), &mut rng)
            .unwrap();
        let ext = c.extend_stem(&stem, Target::PeerRendezvous(rp.clone()), &mut rng);
        let m = stem.hop(Role::Middle).unwrap();
        if disjoint(&m.endpoints, &rp.endpoints, rules) {
            let full = ext.unwrap();
            assert_eq!(full.hops().len(), 4);
            c.check(&full).unwrap();
        } else {
            assert!(matches!(
                ext,
                Err(PathError::TargetConflict {
                    with: Conflict::Hop(Role::Middle),
                    ..
                })
            ));
        }
    }
    // Only services join a client's rendezvous point.
    assert!(matches!(
        c.select(
            PathKind::Client(Target::PeerRendezvous(Hop::from_record(&guard))),
            &g,
            None,
            &mut rng
        ),
        Err(PathError::Request(_))
    ));
}
