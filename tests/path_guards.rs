//! Guards and vanguards (docs/protocol.md section 9.3): guards are persisted, expired, replaced
//! and kept temporary as 9.3 says; vanguards live and are replaced as 9.4 says.
use globalnet::budget::MemoryBudget;
use globalnet::circuit::path::{
    GuardDropReason, GuardEvent, Guards, PathKind, PathRules, Vanguards, GUARD_DOWN_REPLACE_DAYS,
    NUM_GUARDS, NUM_L2_GUARDS,
};
use globalnet::daemon::guard_file::{self, GuardFileError};
use globalnet::link::view::{RelayView, Source};
use globalnet::time::Instant;
use globalnet::wire::record::RelayRecord;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;

mod path_support;
#[allow(unused_imports)]
use path_support::*;

fn guard_net() -> Vec<RelayRecord> {
    (1..=12)
        .map(|i| simple(i, &format!("10.{i}.0.1:7"), 0))
        .collect()
}

#[test]
fn guards_persist_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("guards.json");
    assert!(
        guard_file::load(&file).unwrap().is_empty(),
        "no file: no guards"
    );

    let view = view_of(&guard_net());
    let c = ctx(&view, &[], PathRules::default(), NOW);
    let mut rng = StdRng::seed_from_u64(1);
    let mut g = Guards::new();
    let ev = g.maintain(&c, &mut rng);
    assert_eq!(ev.len(), NUM_GUARDS);
    assert!(g.needs_save());
    for guard in g.list() {
        let life = guard.expires - guard.chosen_at;
        assert!((30 * DAY..=60 * DAY).contains(&life), "{life}");
        assert!(!guard.temporary);
    }
    let first = g.list()[0].identity;
    g.mark_up(&first, NOW + 5);
    let second = g.list()[1].identity;
    g.mark_down(&second, NOW + 6);
    guard_file::save(&mut g, &file).unwrap();
    assert!(!g.needs_save());
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&file).unwrap();
    let hexid: String = first.iter().map(|b| format!("{b:02x}")).collect();
    assert!(text.contains(&hexid), "{text}");
    assert!(text.contains("\"last_seen_up\"") && text.contains("\"down_since\""));
    let back = guard_file::load(&file).unwrap();
    assert_eq!(back.list(), g.list());
    // No stray temporary file.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    // The loaded guards are kept as they are; with one of them down, a temporary stand-in
    // joins them (never saved).
    let mut back = back;
    let ev = back.maintain(&c, &mut rng);
    assert!(
        ev.iter().all(|e| matches!(
            e,
            GuardEvent::Chosen {
                temporary: true,
                ..
            }
        )),
        "{ev:?}"
    );
    assert_eq!(&back.list()[..NUM_GUARDS], g.list());
    assert!(back.list()[NUM_GUARDS..].iter().all(|x| x.temporary));
    // Lifetimes spread over [30, 60] days.
    let lives: BTreeSet<u64> = (0..40)
        .map(|s| {
            let mut g = Guards::new();
            g.maintain(&c, &mut StdRng::seed_from_u64(s));
            (g.list()[0].expires - NOW) / DAY
        })
        .collect();
    assert!(lives.iter().all(|d| (30..=60).contains(d)));
    assert!(lives.len() > 10, "{lives:?}");
}

#[test]
fn corrupt_guard_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("guards.json");
    let good_id = "ab".repeat(32);
    let entry = |id: &str, chosen: Instant, expires: Instant| {
        let (chosen, expires) = (chosen.as_unix_ms(), expires.as_unix_ms());
        format!(
            r#"{{"identity":"{id}","chosen_at":{chosen},"expires":{expires},"last_seen_up":null,"down_since":null}}"#
        )
    };
    let ok = entry(&good_id, NOW, NOW + 40 * DAY);
    let cases = [
        "".to_string(),
        "not json".to_string(),
        "\u{0}\u{1}\u{2}".to_string(),
        r#"{"version":1}"#.to_string(),
        format!(r#"{{"version":2,"guards":[{ok}]}}"#),
        format!(
            r#"{{"version":1,"guards":[{}]}}"#,
            entry("zz", NOW, NOW + DAY)
        ),
        format!(
            r#"{{"version":1,"guards":[{}]}}"#,
            entry(&"g".repeat(64), NOW, NOW + DAY)
        ),
        format!(r#"{{"version":1,"guards":[{ok},{ok}]}}"#),
        format!(
            r#"{{"version":1,"guards":[{},{},{}]}}"#,
            entry(&"01".repeat(32), NOW, NOW + DAY),
            entry(&"02".repeat(32), NOW, NOW + DAY),
            entry(&"03".repeat(32), NOW, NOW + DAY)
        ),
        format!(
            r#"{{"version":1,"guards":[{}]}}"#,
            entry(&good_id, NOW, NOW)
        ),
        format!(
            r#"{{"version":1,"guards":[{}]}}"#,
            entry(&good_id, NOW, NOW + 61 * DAY)
        ),
        format!(r#"{{"version":1,"guards":[{ok}]}}{}"#, " ".repeat(70_000)),
        r#"{"version":1,"guards":[{"identity":5}]}"#.to_string(),
    ];
    for (i, text) in cases.iter().enumerate() {
        std::fs::write(&file, text).unwrap();
        match guard_file::load(&file) {
            Err(GuardFileError::Corrupt { reason, .. }) => {
                let e = guard_file::load(&file).unwrap_err().to_string();
                assert!(e.contains("is corrupt") && e.contains(&reason), "{e}");
            }
            other => panic!("case {i}: {other:?}"),
        }
    }
    std::fs::write(&file, [0xffu8, 0xfe, b'{']).unwrap();
    assert!(matches!(
        guard_file::load(&file),
        Err(GuardFileError::Corrupt { .. })
    ));
    // A directory where the file should be: an I/O error, not a panic.
    assert!(guard_file::load(dir.path()).is_err());
    // A valid file loads; then the caller can always start fresh.
    std::fs::write(&file, format!(r#"{{"version":1,"guards":[{ok}]}}"#)).unwrap();
    assert_eq!(guard_file::load(&file).unwrap().len(), 1);
}

#[test]
fn expired_guards_are_replaced() {
    let view = view_of(&guard_net());
    let mut rng = StdRng::seed_from_u64(2);
    let c = ctx(&view, &[], PathRules::default(), NOW);
    let mut g = Guards::new();
    g.maintain(&c, &mut rng);
    let (a, b) = (g.list()[0].clone(), g.list()[1].clone());
    let (early, late) = if a.expires <= b.expires {
        (a, b)
    } else {
        (b, a)
    };
    // Just before the earlier expiry nothing changes.
    let c = ctx(&view, &[], PathRules::default(), early.expires - 1);
    assert!(g.maintain(&c, &mut rng).is_empty());
    let c = ctx(&view, &[], PathRules::default(), early.expires);
    let ev = g.maintain(&c, &mut rng);
    assert_eq!(
        ev[0],
        GuardEvent::Dropped(early.identity, GuardDropReason::Expired)
    );
    assert!(matches!(
        ev[1],
        GuardEvent::Chosen {
            temporary: false,
            ..
        }
    ));
    assert_eq!(g.len(), NUM_GUARDS);
    assert_eq!(
        g.list()[0].identity,
        late.identity,
        "the survivor is now first"
    );
    assert!(g.list().iter().all(|x| x.identity != early.identity));
    assert!(g.needs_save());
    // The new guard is outside the family of the other.
    let fam = |i: &[u8; 32]| view.get(i).unwrap().fields().endpoints.clone();
    assert!(disjoint(
        &fam(&g.list()[0].identity),
        &fam(&g.list()[1].identity),
        PathRules::default()
    ));
    assert!(ev[0].to_string().contains("lifetime ended"));
}

#[test]
fn down_guards_fall_back_then_are_replaced_after_three_days() {
    let view = view_of(&guard_net());
    let mut rng = StdRng::seed_from_u64(3);
    let rules = PathRules::default();
    let c = ctx(&view, &[], rules, NOW);
    let mut g = Guards::new();
    g.maintain(&c, &mut rng);
    let (first, second) = (g.list()[0].identity, g.list()[1].identity);
    assert_eq!(g.first_hop(&c).unwrap().identity(), &first);

    g.mark_down(&first, NOW);
    assert_eq!(g.first_hop(&c).unwrap().identity(), &second);
    let p = c.select(PathKind::ClientStem, &g, None, &mut rng).unwrap();
    assert_eq!(p.hops()[0].identity, second);
    // Marking down again does not restart the clock.
    g.mark_down(&first, NOW + DAY);
    assert_eq!(g.list()[0].down_since, Some(NOW));
    // Both down: retry the first (never a relay that is not a guard).
    g.mark_down(&second, NOW + 1);
    assert_eq!(g.first_hop(&c).unwrap().identity(), &first);
    g.mark_up(&second, NOW + 2);
    assert_eq!(g.first_hop(&c).unwrap().identity(), &second);

    let limit = NOW + GUARD_DOWN_REPLACE_DAYS * DAY;
    let c = ctx(&view, &[], rules, limit);
    // Kept at exactly 3 days (a temporary stand-in keeps two guards up meanwhile).
    let ev = g.maintain(&c, &mut rng);
    assert!(
        ev.iter().all(|e| matches!(
            e,
            GuardEvent::Chosen {
                temporary: true,
                ..
            }
        )),
        "exactly 3 days: kept {ev:?}"
    );
    assert_eq!(g.list()[0].identity, first);
    let c = ctx(&view, &[], rules, limit + 1);
    let ev = g.maintain(&c, &mut rng);
    assert_eq!(ev[0], GuardEvent::Dropped(first, GuardDropReason::Down));
    assert_eq!(g.len(), NUM_GUARDS);
    assert_eq!(g.list()[0].identity, second);
    assert_ne!(g.list()[1].identity, first);
    // The stand-in goes at the next upkeep (both guards are up now).
    g.maintain(&c, &mut rng);
    assert_eq!(g.len(), NUM_GUARDS);
    assert!(g.list().iter().all(|x| !x.temporary));

    // Up again before the limit: kept and first again.
    let mut g2 = Guards::new();
    let c = ctx(&view, &[], rules, NOW);
    g2.maintain(&c, &mut rng);
    let f2 = g2.list()[0].identity;
    g2.mark_down(&f2, NOW);
    g2.mark_up(&f2, NOW + 2 * DAY);
    let c = ctx(&view, &[], rules, NOW + 10 * DAY);
    assert!(g2.maintain(&c, &mut rng).is_empty());
    assert_eq!(g2.first_hop(&c).unwrap().identity(), &f2);
    assert_eq!(g2.list()[0].last_seen_up, Some(NOW + 2 * DAY));
}

#[test]
fn a_guard_absent_from_the_view_waits_then_is_replaced() {
    let records = guard_net();
    let mut view = view_of(&records);
    let mut rng = StdRng::seed_from_u64(4);
    let rules = PathRules::default();
    let mut g = Guards::new();
    g.maintain(&ctx(&view, &[], rules, NOW), &mut rng);
    let (first, second) = (g.list()[0].identity, g.list()[1].identity);
    let rec = view.get(&first).unwrap().clone();
    view.remove(&first);
    let c = ctx(&view, &[], rules, NOW + 1000);
    // Still a guard; a temporary stand-in keeps two usable while it is missing.
    let ev = g.maintain(&c, &mut rng);
    assert!(
        ev.iter().all(|e| matches!(
            e,
            GuardEvent::Chosen {
                temporary: true,
                ..
            }
        )),
        "{ev:?}"
    );
    assert_eq!(ev.len(), 1, "one stand-in: {ev:?}");
    assert_eq!(g.list()[0].identity, first);
    assert_eq!(g.first_hop(&c).unwrap().identity(), &second);
    // Back: used again.
    view.insert(rec, Source::Itself, NOW + 2000).unwrap();
    let c = ctx(&view, &[], rules, NOW + 3000);
    g.maintain(&c, &mut rng);
    assert_eq!(g.first_hop(&c).unwrap().identity(), &first);
    assert_eq!(g.list()[0].missing_since, None);
    // The stand-in goes once both are usable again.
    g.maintain(&c, &mut rng);
    assert!(g.list().iter().all(|x| !x.temporary), "{:?}", g.list());
    // Gone for more than 3 days: replaced.
    view.remove(&first);
    let t0 = NOW + 4000;
    g.maintain(&ctx(&view, &[], rules, t0), &mut rng);
    let ev = g.maintain(
        &ctx(&view, &[], rules, t0 + GUARD_DOWN_REPLACE_DAYS * DAY + 1),
        &mut rng,
    );
    assert_eq!(ev[0], GuardEvent::Dropped(first, GuardDropReason::Missing));
    assert_eq!(g.len(), NUM_GUARDS);
}

#[test]
fn temporary_guards_under_a_view_with_few_sources() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("guards.json");
    let records = guard_net();
    let mut view = RelayView::new([0; 32], (32, 128), MemoryBudget::new(1 << 24));
    // Everything from one bootstrap peer: one source.
    for r in &records[..8] {
        view.insert(r.clone(), Source::Pex([7; 32]), NOW).unwrap();
    }
    assert!(view.sources() < 3);
    let rules = PathRules::default();
    let mut rng = StdRng::seed_from_u64(5);
    let mut g = Guards::new();
    let ev = g.maintain(&ctx(&view, &[], rules, NOW), &mut rng);
    assert_eq!(g.len(), NUM_GUARDS);
    assert!(g.list().iter().all(|x| x.temporary));
    assert!(ev.iter().all(|e| matches!(
        e,
        GuardEvent::Chosen {
            temporary: true,
            ..
        }
    )));
    assert!(ev[0].to_string().contains("temporary"));
    // Usable for paths, but never saved.
    let c = ctx(&view, &[], rules, NOW);
    assert!(c.select(PathKind::ClientStem, &g, None, &mut rng).is_ok());
    assert!(!g.needs_save());
    guard_file::save(&mut g, &file).unwrap();
    assert!(guard_file::load(&file).unwrap().is_empty());
    // Still not diverse: kept.
    assert!(g.maintain(&c, &mut rng).is_empty());
    // Two relays vouch for themselves: three sources, the temporaries are replaced.
    for r in &records[8..10] {
        view.insert(r.clone(), Source::Itself, NOW).unwrap();
    }
    assert!(view.sources() >= 3);
    let ev = g.maintain(&ctx(&view, &[], rules, NOW + 1), &mut rng);
    let dropped = ev
        .iter()
        .filter(|e| matches!(e, GuardEvent::Dropped(_, GuardDropReason::Temporary)))
        .count();
    assert_eq!(dropped, NUM_GUARDS, "{ev:?}");
    assert_eq!(g.len(), NUM_GUARDS);
    assert!(!g.has_temporary());
    assert!(g.needs_save());
    guard_file::save(&mut g, &file).unwrap();
    assert_eq!(guard_file::load(&file).unwrap().list(), g.list());

    // Saved guards survive a restart into a non-diverse view; an expired one is replaced by a
    // temporary guard, which is not saved.
    let saved = guard_file::load(&file).unwrap();
    let mut small = RelayView::new([0; 32], (32, 128), MemoryBudget::new(1 << 24));
    for r in &records {
        small.insert(r.clone(), Source::Pex([9; 32]), NOW).unwrap();
    }
    let mut g = saved.clone();
    assert!(g
        .maintain(&ctx(&small, &[], rules, NOW + 2), &mut rng)
        .is_empty());
    assert_eq!(g.list(), saved.list());
    let soonest = g.list().iter().map(|x| x.expires).min().unwrap();
    let ev = g.maintain(&ctx(&small, &[], rules, soonest), &mut rng);
    assert!(ev.contains(&GuardEvent::Dropped(
        saved
            .list()
            .iter()
            .find(|x| x.expires == soonest)
            .unwrap()
            .identity,
        GuardDropReason::Expired
    )));
    assert_eq!(g.list().iter().filter(|x| x.temporary).count(), 1);
    guard_file::save(&mut g, &file).unwrap();
    assert_eq!(guard_file::load(&file).unwrap().len(), 1);
}

#[test]
fn a_guard_in_the_nodes_new_family_is_replaced() {
    let view = view_of(&guard_net());
    let rules = PathRules::default();
    let mut rng = StdRng::seed_from_u64(6);
    let mut g = Guards::new();
    g.maintain(&ctx(&view, &[], rules, NOW), &mut rng);
    let first = g.list()[0].identity;
    let near = view.get(&first).unwrap().fields().endpoints[0].ip();
    let own = [SocketAddr::new(near, 9999)];
    let c = ctx(&view, &own, rules, NOW);
    // Unusable at once, replaced at the next maintenance.
    assert_ne!(g.first_hop(&c).unwrap().identity(), &first);
    let ev = g.maintain(&c, &mut rng);
    assert!(ev.contains(&GuardEvent::Dropped(first, GuardDropReason::OwnFamily)));
    assert_eq!(g.len(), NUM_GUARDS);
}

#[test]
fn vanguards_lifetimes_and_replacement() {
    let view = view_of(&guard_net());
    let rules = PathRules::default();
    let mut rng = StdRng::seed_from_u64(7);
    let c = ctx(&view, &[], rules, NOW);
    let mut g = Guards::new();
    g.maintain(&c, &mut rng);
    let mut vg = Vanguards::new();
    assert_eq!(vg.maintain(&c, &g, &mut rng), 0);
    assert_eq!(vg.len(), NUM_L2_GUARDS);
    let guard_fams: Vec<Vec<SocketAddr>> = g
        .list()
        .iter()
        .map(|x| view.get(&x.identity).unwrap().fields().endpoints.clone())
        .collect();
    for v in vg.list() {
        assert!((DAY..=12 * DAY).contains(&(v.expires - NOW)));
        let e = &view.get(&v.identity).unwrap().fields().endpoints;
        assert!(guard_fams.iter().all(|gf| disjoint(gf, e, rules)));
    }
    let ids: BTreeSet<_> = vg.list().iter().map(|v| v.identity).collect();
    assert_eq!(ids.len(), NUM_L2_GUARDS);
    // Service paths use them uniformly.
    let mut used: BTreeMap<[u8; 32], usize> = BTreeMap::new();
    for _ in 0..2000 {
        let p = c
            .select(PathKind::ServiceStem, &g, Some(&vg), &mut rng)
            .unwrap();
        *used.entry(p.hops()[1].identity).or_default() += 1;
    }
    assert_eq!(used.len(), NUM_L2_GUARDS);
    assert!(used.values().all(|n| (350..650).contains(n)), "{used:?}");
    // The earliest expires: only it is replaced.
    let soonest = vg.list().iter().map(|v| v.expires).min().unwrap();
    let c2 = ctx(&view, &[], rules, soonest);
    assert_eq!(vg.maintain(&c2, &g, &mut rng), 1);
    assert_eq!(vg.len(), NUM_L2_GUARDS);
    assert!(vg.list().iter().all(|v| v.expires > soonest));
    // After 25 days all (the replacement too) have been replaced.
    let c3 = ctx(&view, &[], rules, NOW + 25 * DAY);
    assert_eq!(vg.maintain(&c3, &g, &mut rng), NUM_L2_GUARDS);
}

#[test]
fn a_temporary_stand_in_guard_while_every_guard_is_down() {
    let view = view_of(&guard_net());
    let mut rng = StdRng::seed_from_u64(9);
    let rules = PathRules::default();
    let c = ctx(&view, &[], rules, NOW);
    let mut g = Guards::new();
    g.maintain(&c, &mut rng);
    let (first, second) = (g.list()[0].identity, g.list()[1].identity);
    g.mark_down(&first, NOW);
    g.mark_down(&second, NOW);
    // Killed guards: circuits need some first hop, but only temporary ones (not saved), as
    // many as keep NUM_GUARDS up.
    let ev = g.maintain(&c, &mut rng);
    assert_eq!(g.len(), 2 * NUM_GUARDS, "{ev:?}");
    let stand_ins: Vec<[u8; 32]> = g.list()[NUM_GUARDS..].iter().map(|x| x.identity).collect();
    assert!(g.list()[NUM_GUARDS..].iter().all(|x| x.temporary));
    assert!(!stand_ins.contains(&first) && !stand_ins.contains(&second));
    assert_eq!(g.first_hop(&c).unwrap().identity(), &stand_ins[0]);
    // Stable while the guards stay down.
    g.maintain(&c, &mut rng);
    assert_eq!(g.len(), 2 * NUM_GUARDS);
    // One real guard is back: it is the first hop again, and one stand-in stays beside it
    // (a target that is that guard is reached through it).
    g.mark_up(&second, NOW + 1);
    let c = ctx(&view, &[], rules, NOW + 2);
    g.maintain(&c, &mut rng);
    assert_eq!(g.len(), NUM_GUARDS + 1);
    assert_eq!(g.first_hop(&c).unwrap().identity(), &second);
    // Both back: the stand-ins go.
    g.mark_up(&first, NOW + 3);
    let c = ctx(&view, &[], rules, NOW + 4);
    g.maintain(&c, &mut rng);
    assert_eq!(g.len(), NUM_GUARDS);
    assert!(g.list().iter().all(|x| !x.temporary));
    assert_eq!(g.first_hop(&c).unwrap().identity(), &first);
}
