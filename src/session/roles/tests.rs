use super::*;
use crate::session::intro::{RendHs, Rendezvous2, INTRODUCE1_LEN};
use crate::session::E2E_MSG1_LEN;
use ed25519_dalek::SigningKey;

const L: LinkId = LinkId(1);

fn budget() -> MemoryBudget {
    MemoryBudget::new(64 << 20)
}

#[test]
fn intro_point_registers_forwards_and_drops_replays() {
    let mut role = IntroPointRole::new(budget());
    let auth = SigningKey::from_bytes(&[7; 32]);
    let bind = [3u8; 32];
    let est = EstablishIntro::sign(&auth, &bind).emit();
    // Signed for another circuit: refused.
    assert_eq!(
        role.establish(Instant::ZERO, 1, L, &[4; 32], &est),
        status::REFUSED
    );
    assert_eq!(role.establish(Instant::ZERO, 1, L, &bind, &est), status::OK);
    // Again on the same circuit: already established.
    assert_eq!(
        role.establish(Instant::ZERO, 1, L, &bind, &est),
        status::EXISTS
    );
    let intro = Introduce1 {
        auth_key: auth.verifying_key().to_bytes(),
        msg1: [9; E2E_MSG1_LEN],
        pow: None,
    }
    .emit();
    assert_eq!(
        role.introduce(Instant::ZERO, 100, L, &intro),
        IntroduceOutcome::Forward { service_slot: 1 }
    );
    assert_eq!(
        role.introduce(Instant::from_unix_ms(1), 100, L, &intro),
        IntroduceOutcome::Refuse(status::REPLAY)
    );
    let other = Introduce1 {
        auth_key: [5; 32],
        msg1: [9; E2E_MSG1_LEN],
        pow: None,
    }
    .emit();
    assert_eq!(
        role.introduce(Instant::from_unix_ms(1), 100, L, &other),
        IntroduceOutcome::Refuse(status::UNKNOWN)
    );
    assert_eq!(
        role.introduce(Instant::from_unix_ms(1), 100, L, &[0u8; INTRODUCE1_LEN - 1]),
        IntroduceOutcome::Refuse(status::REFUSED)
    );
    // The key's holder on a second circuit (signed for that circuit's bind): the
    // registration moves there, its replay cache with it; the first circuit no longer has it.
    let bind2 = [6u8; 32];
    let est2 = EstablishIntro::sign(&auth, &bind2).emit();
    assert_eq!(
        role.establish(Instant::ZERO, 2, L, &bind, &est2),
        status::REFUSED
    );
    assert_eq!(
        role.establish(Instant::ZERO, 2, L, &bind2, &est2),
        status::OK
    );
    assert_eq!(role.len(), 1);
    assert_eq!(
        role.introduce(Instant::from_unix_ms(1), 100, L, &intro),
        IntroduceOutcome::Refuse(status::REPLAY)
    );
    let fresh = Introduce1 {
        auth_key: auth.verifying_key().to_bytes(),
        msg1: [10; E2E_MSG1_LEN],
        pow: None,
    }
    .emit();
    assert_eq!(
        role.introduce(Instant::from_unix_ms(1), 100, L, &fresh),
        IntroduceOutcome::Forward { service_slot: 2 }
    );
    role.closed(1);
    assert_eq!(role.len(), 1);
    role.closed(2);
    assert!(role.is_empty());
    assert_eq!(
        role.introduce(Instant::from_unix_ms(2), 100, L, &intro),
        IntroduceOutcome::Refuse(status::UNKNOWN)
    );
}

#[test]
fn intro_point_rate_limits_per_key() {
    let mut role = IntroPointRole::new(budget());
    let auth = SigningKey::from_bytes(&[8; 32]);
    let bind = [1u8; 32];
    assert_eq!(
        role.establish(
            Instant::ZERO,
            1,
            L,
            &bind,
            &EstablishIntro::sign(&auth, &bind).emit()
        ),
        status::OK
    );
    let mut limited = 0;
    for i in 0..400u32 {
        let mut msg1 = [0u8; E2E_MSG1_LEN];
        msg1[..4].copy_from_slice(&i.to_be_bytes());
        let body = Introduce1 {
            auth_key: auth.verifying_key().to_bytes(),
            msg1,
            pow: None,
        }
        .emit();
        // One circuit per introduction, as honest clients do.
        let out = role.introduce(Instant::ZERO, 100 + u64::from(i), L, &body);
        if out == IntroduceOutcome::Refuse(status::RATE_LIMITED) {
            limited += 1;
        }
    }
    assert_eq!(limited, 400 - INTRO_BURST as usize);
}

#[test]
fn replay_cache_is_bounded_and_charged() {
    let b = MemoryBudget::new(1 << 20);
    let mut c = ReplayCache::new(3000, b.clone());
    for i in 0..5000u32 {
        let mut t = [0u8; 32];
        t[..4].copy_from_slice(&i.to_be_bytes());
        c.insert(t).unwrap();
    }
    assert_eq!(c.len(), 3000);
    // Charged per tag held, not per chunk (issue #19: a first tag cost a 1,024-tag chunk).
    assert_eq!(b.used(), 3000 * REPLAY_TAG_COST);
    assert!(c.pop_oldest());
    assert_eq!(b.used(), 2999 * REPLAY_TAG_COST);
    let mut t = [0u8; 32];
    t[..4].copy_from_slice(&4999u32.to_be_bytes());
    assert_eq!(c.insert(t), Err(true));
    drop(c);
    assert_eq!(b.used(), 0);
}

#[test]
fn rendezvous_point_matches_cookies_once() {
    let mut role = RendezvousRole::new(budget());
    let cookie = RendCookie([4; 32]);
    let body = establish_rendezvous_body(&cookie);
    assert_eq!(role.establish(Instant::ZERO, 10, &body), status::OK);
    assert_eq!(role.establish(Instant::ZERO, 11, &body), status::EXISTS);
    let r1 = Rendezvous1 {
        cookie: cookie.clone(),
        hs: RendHs::Join([1; 32]),
    }
    .emit();
    match role.rendezvous1(Instant::from_unix_ms(5), 20, &r1) {
        RendezvousOutcome::Splice {
            client_slot,
            rendezvous2,
        } => {
            assert_eq!(client_slot, 10);
            assert_eq!(
                Rendezvous2::parse(&rendezvous2).unwrap().hs,
                RendHs::Join([1; 32])
            );
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(
        role.rendezvous1(Instant::from_unix_ms(6), 21, &r1),
        RendezvousOutcome::Destroy
    );
    assert!(role.is_empty());
}

#[test]
fn rendezvous_cookies_expire() {
    let mut role = RendezvousRole::new(budget());
    let cookie = RendCookie([5; 32]);
    assert_eq!(
        role.establish(Instant::ZERO, 1, &establish_rendezvous_body(&cookie)),
        status::OK
    );
    let r1 = Rendezvous1 {
        cookie,
        hs: RendHs::Join([1; 32]),
    }
    .emit();
    assert_eq!(
        role.rendezvous1(Instant::from_unix_ms(REND_COOKIE_LIFETIME_MS), 2, &r1),
        RendezvousOutcome::Destroy
    );
    role.expire(Instant::from_unix_ms(REND_COOKIE_LIFETIME_MS));
    assert!(role.is_empty() && !role.holds(1));
}

#[test]
fn roles_refuse_when_the_budget_is_spent() {
    let b = MemoryBudget::new(INTRO_REG_COST + REND_COOKIE_COST);
    let mut intro = IntroPointRole::new(b.clone());
    let mut rend = RendezvousRole::new(b.clone());
    let bind = [2u8; 32];
    let est = |k: u8| EstablishIntro::sign(&SigningKey::from_bytes(&[k; 32]), &bind).emit();
    assert_eq!(
        intro.establish(Instant::ZERO, 1, L, &bind, &est(1)),
        status::OK
    );
    assert_eq!(
        rend.establish(
            Instant::ZERO,
            2,
            &establish_rendezvous_body(&RendCookie([1; 32]))
        ),
        status::OK
    );
    // Full: both refuse with "rate limited" instead of growing.
    assert_eq!(
        intro.establish(Instant::ZERO, 3, L, &bind, &est(2)),
        status::RATE_LIMITED
    );
    assert_eq!(
        rend.establish(
            Instant::ZERO,
            4,
            &establish_rendezvous_body(&RendCookie([2; 32]))
        ),
        status::RATE_LIMITED
    );
    // The first registration cannot store a replay tag either: introductions are refused
    // rather than passed on unrecorded.
    let body = Introduce1 {
        auth_key: SigningKey::from_bytes(&[1; 32]).verifying_key().to_bytes(),
        msg1: [3; E2E_MSG1_LEN],
        pow: None,
    }
    .emit();
    assert_eq!(
        intro.introduce(Instant::ZERO, 100, L, &body),
        IntroduceOutcome::Refuse(status::RATE_LIMITED)
    );
    intro.closed(1);
    rend.closed(2);
    assert_eq!(b.used(), 0);
}

fn made_up_registration(role: &mut IntroPointRole, slot: u64, up: LinkId) -> (u8, [u8; 32]) {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&slot.to_be_bytes());
    let auth = SigningKey::from_bytes(&seed);
    let bind = [slot as u8; 32];
    let code = role.establish(
        Instant::ZERO,
        slot,
        up,
        &bind,
        &EstablishIntro::sign(&auth, &bind).emit(),
    );
    (code, auth.verifying_key().to_bytes())
}

fn introduction(auth_key: [u8; 32], n: u64) -> Vec<u8> {
    let mut msg1 = [0u8; E2E_MSG1_LEN];
    msg1[..8].copy_from_slice(&n.to_be_bytes());
    Introduce1 {
        auth_key,
        msg1,
        pow: None,
    }
    .emit()
    .to_vec()
}

/// Issue #19 item 1: 3,200 registrations with made-up keys and one INTRODUCE1 each used to
/// charge a 1,024-tag chunk apiece, about 256 MiB. Now each charges what it stores.
#[test]
fn registration_flood_charges_what_it_stores() {
    let b = MemoryBudget::default();
    let mut role = IntroPointRole::new(b.clone());
    let mut keys = Vec::new();
    for i in 0..3200u64 {
        let up = LinkId(1000 + (i / MAX_INTRO_REGISTRATIONS_PER_LINK as u64) as u32);
        let (code, key) = made_up_registration(&mut role, 10 + i, up);
        assert_eq!(code, status::OK);
        keys.push(key);
    }
    // The per-link cap: a 65th registration over the same link is refused.
    assert_eq!(
        made_up_registration(&mut role, 9999, LinkId(1000)).0,
        status::RATE_LIMITED
    );
    for (i, key) in keys.iter().enumerate() {
        let client = 100_000 + i as u64;
        let up = LinkId(2000 + (i / 200) as u32);
        let out = role.introduce(Instant::ZERO, client, up, &introduction(*key, 0));
        assert!(matches!(out, IntroduceOutcome::Forward { .. }));
        // A second and third INTRODUCE1 on the same circuit: the third is over the cap.
        role.introduce(Instant::ZERO, client, up, &introduction(*key, 1));
        let third = role.introduce(Instant::ZERO, client, up, &introduction(*key, 2));
        assert_eq!(third, IntroduceOutcome::Refuse(status::RATE_LIMITED));
    }
    let per_reg = INTRO_REG_COST + 2 * REPLAY_TAG_COST + INTRO_CLIENT_COST;
    assert!(b.used() <= 3200 * per_reg, "{} bytes", b.used());
    assert!(b.used() < 2 << 20);
    // An honest service over another link still registers, and its client gets through
    // over a third.
    let (code, key) = made_up_registration(&mut role, 50_000, LinkId(7));
    assert_eq!(code, status::OK);
    assert_eq!(
        role.introduce(
            Instant::from_unix_ms(1),
            50_001,
            LinkId(8),
            &introduction(key, 0)
        ),
        IntroduceOutcome::Forward {
            service_slot: 50_000
        }
    );
    drop(role);
    assert_eq!(b.used(), 0);
}

/// A flood of INTRODUCE1s at the flooder's own registrations sheds the flooder's replay tags
/// once its link holds its share; an honest registration over another link keeps its own.
/// The share is the sending link's (tags are charged to the link an INTRODUCE1 came over), so
/// the flood comes over one link; spread over many, it is held to `MAX_REPLAY_TAGS` instead.
#[test]
fn tag_flood_sheds_the_flooders_tags() {
    let b = MemoryBudget::default();
    let mut role = IntroPointRole::new(b.clone());
    let (_, honest) = made_up_registration(&mut role, 1, LinkId(7));
    for n in 0..100 {
        let out = role.introduce(Instant::ZERO, 10 + n, LinkId(8), &introduction(honest, n));
        assert_eq!(out, IntroduceOutcome::Forward { service_slot: 1 });
    }
    let flooder: Vec<[u8; 32]> = (0..64)
        .map(|i| made_up_registration(&mut role, 100 + i, LinkId(1000)).1)
        .collect();
    let mut now = 0;
    let total = MAX_REPLAY_TAGS_PER_LINK as u64 + 5_000;
    for n in 0..total {
        // Spread over keys, over one sender link, within every rate limit.
        now += 20;
        let key = flooder[(n % 64) as usize];
        let client = 1_000_000 + n;
        let up = LinkId(2000);
        let out = role.introduce(
            Instant::from_unix_ms(now),
            client,
            up,
            &introduction(key, n),
        );
        assert!(
            matches!(out, IntroduceOutcome::Forward { .. }),
            "{n}: {out:?}"
        );
        role.closed(client);
    }
    assert_eq!(role.replay_tags(), MAX_REPLAY_TAGS_PER_LINK + 100);
    assert_eq!(role.replay_tags_of(1), 100);
    assert_eq!(role.stats.tags_shed, 5_000);
    // 65 registrations, the tags kept, and the honest clients' 100 open circuits.
    let bound = 65 * INTRO_REG_COST
        + (MAX_REPLAY_TAGS_PER_LINK + 100) * REPLAY_TAG_COST
        + 100 * INTRO_CLIENT_COST;
    assert_eq!(b.used(), bound);
    // The honest service is still reachable through the flood.
    assert_eq!(
        role.introduce(
            Instant::from_unix_ms(now),
            5,
            LinkId(8),
            &introduction(honest, 1 << 40)
        ),
        IntroduceOutcome::Forward { service_slot: 1 }
    );
}

/// Under memory pressure a registration over the largest link goes, never one over the
/// asking link, and its circuit is handed back to be closed.
#[test]
fn budget_pressure_evicts_the_largest_links_registration() {
    let b = MemoryBudget::new(41 * INTRO_REG_COST);
    let mut role = IntroPointRole::new(b.clone());
    assert_eq!(made_up_registration(&mut role, 1, LinkId(7)).0, status::OK);
    for i in 0..40 {
        let (code, _) = made_up_registration(&mut role, 100 + i, LinkId(1000));
        assert_eq!(code, status::OK, "{i}");
    }
    // Full: the flooder's own link asking gets nothing.
    assert_eq!(
        made_up_registration(&mut role, 200, LinkId(1000)).0,
        status::RATE_LIMITED
    );
    assert!(role.take_evicted().is_empty());
    // A second honest service over another link: the flooder's link gives way.
    assert_eq!(made_up_registration(&mut role, 2, LinkId(8)).0, status::OK);
    let evicted = role.take_evicted();
    assert_eq!(evicted.len(), 1);
    assert!((100..140).contains(&evicted[0]));
    assert!(role.holds(1) && role.holds(2));
    assert_eq!(role.stats.intro_evicted, 1);
}

/// Issue #19 item 1, found by the hostile-node suite: a flood of INTRODUCE1 at a service's key
/// used to count its replay tags against the service's own link, so under memory pressure the
/// flooder's next ESTABLISH_INTRO evicted the service. Tags are charged to the link they came
/// over: the flooder's link is then the largest, and it is refused (or gives up its own tags).
#[test]
fn introduce_flood_cannot_aim_eviction_at_the_service() {
    let (a, b, c) = (LinkId(7), LinkId(1000), LinkId(8));
    let b_budget = MemoryBudget::new(INTRO_REG_COST + 100 * REPLAY_TAG_COST + INTRO_CLIENT_COST);
    let mut role = IntroPointRole::new(b_budget.clone());
    let (code, service) = made_up_registration(&mut role, 1, a);
    assert_eq!(code, status::OK);
    for n in 0..100 {
        let client = 1_000 + n;
        let out = role.introduce(Instant::ZERO, client, b, &introduction(service, n));
        assert_eq!(out, IntroduceOutcome::Forward { service_slot: 1 }, "{n}");
        role.closed(client);
    }
    assert_eq!(role.replay_tags_of(1), 100);
    // The flooder registers over its link: the budget is spent and its link holds the most,
    // so it is refused; the service's registration stays.
    assert_eq!(
        made_up_registration(&mut role, 2, b).0,
        status::RATE_LIMITED
    );
    assert!(role.take_evicted().is_empty());
    assert!(role.holds(1));
    assert_eq!(role.stats.intro_evicted, 0);
    // The tags are the flooder's link's, the service's link holds its registration only.
    assert_eq!(role.link_bytes(b), 100 * REPLAY_TAG_COST);
    assert_eq!(role.link_bytes(a), INTRO_REG_COST);
    // A client over a third link still gets through: the flooder's oldest tag makes room.
    assert_eq!(
        role.introduce(Instant::ZERO, 5_000, c, &introduction(service, 1 << 40)),
        IntroduceOutcome::Forward { service_slot: 1 }
    );
    role.closed(5_000);
    assert_eq!(role.stats.tags_shed, 1);
    // A second service over that link registers: the flooder's tags make room, no
    // registration is evicted.
    assert_eq!(made_up_registration(&mut role, 3, c).0, status::OK);
    assert!(role.take_evicted().is_empty());
    assert!(role.holds(1) && role.holds(3));
    assert!(role.link_bytes(b) < 100 * REPLAY_TAG_COST);
    assert_eq!(role.link_bytes(a), INTRO_REG_COST);
    drop(role);
    assert_eq!(b_budget.used(), 0);
}

/// The in-process reproduction in docs/benchmarks.md ("Hostile nodes"): 6,000 INTRODUCE1 at a
/// service's key over 8 links, then the flooder's ESTABLISH_INTRO over a ninth with the budget
/// full. The largest link is a sender's: its oldest tags make room, the service stays.
#[test]
fn introduce_flood_over_many_links_sheds_their_tags_not_the_service() {
    let b = MemoryBudget::new(INTRO_REG_COST + 6_000 * REPLAY_TAG_COST + INTRO_CLIENT_COST);
    let mut role = IntroPointRole::new(b.clone());
    let (_, service) = made_up_registration(&mut role, 1, LinkId(7));
    let mut now = 0;
    for n in 0..6_000u64 {
        now += 40;
        let client = 10_000 + n;
        let up = LinkId(100 + (n % 8) as u32);
        let out = role.introduce(
            Instant::from_unix_ms(now),
            client,
            up,
            &introduction(service, n),
        );
        assert_eq!(out, IntroduceOutcome::Forward { service_slot: 1 }, "{n}");
        role.closed(client);
    }
    assert_eq!(
        made_up_registration(&mut role, 2, LinkId(200)).0,
        status::OK
    );
    assert!(role.take_evicted().is_empty());
    assert_eq!(role.link_bytes(LinkId(7)), INTRO_REG_COST);
    assert!(role.holds(1) && role.holds(2));
    assert_eq!(role.stats.intro_evicted, 0);
    assert_eq!(role.stats.tags_shed, 4);
    assert_eq!(role.replay_tags_of(1), 6_000 - 4);
}

#[test]
fn status_bodies_round_trip() {
    assert_eq!(parse_status(&status_body(3)), Ok(3));
    assert!(parse_status(&[2, 0, 0, 0]).is_err());
    assert!(parse_status(&[1, 0]).is_err());
}

/// Issue #19 item 3: a service that sheds by proof of work (ESTABLISH_INTRO flag) has its
/// INTRODUCE1s passed on at `INTRO_POW_RATE`, not `INTRO_RATE`, so a flood at the intro point
/// reaches the service's queue, where paying clients go first; the per-circuit and per-link
/// limits still hold for it.
#[test]
fn pow_flag_lifts_the_per_key_rate_not_the_other_limits() {
    use crate::session::intro::ESTABLISH_FLAG_POW;
    let mut role = IntroPointRole::new(budget());
    let bind = [1u8; 32];
    let plain = SigningKey::from_bytes(&[8; 32]);
    let paid = SigningKey::from_bytes(&[9; 32]);
    let est = EstablishIntro::sign(&paid, &bind).with_flags(ESTABLISH_FLAG_POW);
    assert_eq!(EstablishIntro::parse(&est.emit()).unwrap(), est);
    assert_eq!(
        role.establish(
            Instant::ZERO,
            1,
            L,
            &bind,
            &EstablishIntro::sign(&plain, &bind).emit()
        ),
        status::OK
    );
    assert_eq!(
        role.establish(Instant::ZERO, 2, L, &bind, &est.emit()),
        status::OK
    );
    assert!(!role.sheds_by_pow(1) && role.sheds_by_pow(2));
    // 500 introductions per second per key for 4 s, each on its own circuit, over 100 links
    // (so the per-link rate is not what binds).
    let mut passed = [0u32; 2];
    for step in 0..1000u64 {
        for (k, auth) in [&plain, &paid].into_iter().enumerate() {
            for j in 0..2u64 {
                let n = step * 4 + k as u64 * 2 + j;
                let out = role.introduce(
                    Instant::from_unix_ms(step * 4),
                    1000 + n,
                    LinkId(100 + (n % 100) as u32),
                    &introduction(auth.verifying_key().to_bytes(), n),
                );
                if matches!(out, IntroduceOutcome::Forward { .. }) {
                    passed[k] += 1;
                }
            }
        }
    }
    // Without the flag: the burst plus 25/s for 4 s (about 300). With it: all 2,000.
    assert!((295..=301).contains(&passed[0]), "{passed:?}");
    assert_eq!(passed[1], 2000);
    // The per-circuit limit still holds for the lifted key.
    let body = |n: u64| introduction(paid.verifying_key().to_bytes(), 1_000_000 + n);
    assert!(matches!(
        role.introduce(Instant::from_unix_ms(9000), 77, L, &body(0)),
        IntroduceOutcome::Forward { .. }
    ));
    assert!(matches!(
        role.introduce(Instant::from_unix_ms(9000), 77, L, &body(1)),
        IntroduceOutcome::Forward { .. }
    ));
    assert_eq!(
        role.introduce(Instant::from_unix_ms(9000), 77, L, &body(2)),
        IntroduceOutcome::Refuse(status::RATE_LIMITED)
    );
    // And the per-link rate: one link's burst, then refused, whatever the key allows.
    let link = LinkId(9);
    let mut ok = 0;
    for n in 0..2000u64 {
        let out = role.introduce(
            Instant::from_unix_ms(9000),
            10_000 + n,
            link,
            &body(100 + n),
        );
        if matches!(out, IntroduceOutcome::Forward { .. }) {
            ok += 1;
        }
    }
    assert_eq!(ok, INTRO_LINK_BURST as u32);
}
