//! The introduction queue on its own: an idle service unchanged, a flood without work shed
//! behind one paid introduction, proofs checked before anything else, the effort controller.

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;
use crate::session::intro_pow::{solve, IntroPow};
use crate::session::E2E_MSG1_LEN;

const AUTH: [u8; 32] = [7; 32];

fn budget() -> MemoryBudget {
    MemoryBudget::new(64 << 20)
}

/// An INTRODUCE2 whose `E_c` is `n`, with work `effort` for the queue's current seed (none at 0).
fn intro(q: &IntroQueue, n: u8, effort: u32) -> Introduce1 {
    let mut msg1 = [0u8; E2E_MSG1_LEN];
    msg1[..32].copy_from_slice(&[n; 32]);
    let pow = (effort > 0)
        .then(|| solve(&q.params().seed, &AUTH, &[n; 32], effort, 0, 1 << 26).expect("solvable"));
    Introduce1 {
        auth_key: AUTH,
        msg1,
        pow,
    }
}

fn flood(q: &mut IntroQueue, now: Instant, count: usize, effort: u32) {
    let b = budget();
    for k in 0..count {
        let mut i = intro(q, 0, 0);
        // Distinct ephemerals; no work unless asked (then the same cheap effort each).
        i.msg1[..8].copy_from_slice(&(k as u64).to_be_bytes());
        if effort > 0 {
            let e_c = i.client_ephemeral();
            i.pow = solve(&q.params().seed, &AUTH, &e_c, effort, 0, 1 << 26);
        }
        q.admit(now, &b, CircId(1), i);
    }
}

#[test]
fn idle_service_serves_at_once_without_a_puzzle() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut q = IntroQueue::new(&mut rng, Instant::ZERO);
    let b = budget();
    assert_eq!(q.params().effort, 0);
    let i = intro(&q, 1, 0);
    assert_eq!(
        q.admit(Instant::from_unix_ms(5), &b, CircId(3), i.clone()),
        Admit::Queued(0)
    );
    let got = q.pop(Instant::from_unix_ms(5)).unwrap();
    assert_eq!((got.circ, got.intro), (CircId(3), i));
    assert!(q.pop(Instant::from_unix_ms(5)).is_none());
    // Quiet windows keep it at 0 and ask for no descriptor.
    for t in 1..=10 {
        assert!(!q.tick(&mut rng, Instant::from_unix_ms(t * EFFORT_UPDATE_MS)));
    }
    assert_eq!(q.effort(), 0);
    assert_eq!(b.used(), 0, "nothing held once served");
}

#[test]
fn a_flood_without_work_is_shed_behind_one_paid_introduction() {
    let mut rng = StdRng::seed_from_u64(2);
    let mut q = IntroQueue::new(&mut rng, Instant::ZERO);
    let b = budget();
    flood(&mut q, Instant::ZERO, INTRO_QUEUE_MAX + 100, 0);
    assert_eq!(q.len(), INTRO_QUEUE_MAX, "bounded");
    assert_eq!(q.stats.shed, 100);
    let honest = intro(&q, 200, 10);
    assert_eq!(
        q.admit(Instant::from_unix_ms(1), &b, CircId(9), honest.clone()),
        Admit::Queued(10)
    );
    assert_eq!(q.len(), INTRO_QUEUE_MAX, "one of the flood made room");
    let first = q.pop(Instant::from_unix_ms(1)).unwrap();
    assert_eq!(first.intro, honest, "the work is served first");
    // More flood cannot push it out: a newcomer below the least queued work is dropped.
    q.admit(Instant::from_unix_ms(1), &b, CircId(9), intro(&q, 201, 10));
    flood(&mut q, Instant::from_unix_ms(1), INTRO_QUEUE_MAX, 0);
    assert_eq!(q.pop(Instant::from_unix_ms(1)).unwrap().intro.msg1[0], 201);
    // Expired flood is dropped, not served.
    assert!(q
        .pop(Instant::from_unix_ms(1 + INTRO_QUEUE_MAX_AGE_MS + 1))
        .is_none());
    assert!(q.stats.expired > 0);
}

#[test]
fn proofs_are_checked_and_single_use() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut q = IntroQueue::new(&mut rng, Instant::ZERO);
    let b = budget();
    let good = intro(&q, 1, 500);
    assert_eq!(
        q.admit(Instant::ZERO, &b, CircId(1), good.clone()),
        Admit::Queued(500)
    );
    // The same proof again (a replaying intro point): dropped before any other work.
    assert_eq!(
        q.admit(Instant::ZERO, &b, CircId(1), good.clone()),
        Admit::Replay
    );
    // The proof moved to another ephemeral does not verify.
    let mut moved = intro(&q, 2, 0);
    moved.pow = good.pow;
    assert_eq!(q.admit(Instant::ZERO, &b, CircId(1), moved), Admit::Invalid);
    // A claimed effort the hash does not show.
    let mut inflated = intro(&q, 3, 1);
    if let Some(p) = inflated.pow.as_mut() {
        p.effort = 1 << 30;
    }
    assert_eq!(
        q.admit(Instant::ZERO, &b, CircId(1), inflated),
        Admit::Invalid
    );
    // A seed we never had: queued without credit for the work.
    let mut stale = intro(&q, 4, 0);
    stale.pow = Some(IntroPow {
        seed_id: [0xee; 4],
        effort: 9,
        nonce: 1,
    });
    assert_eq!(
        q.admit(Instant::ZERO, &b, CircId(1), stale),
        Admit::Queued(0)
    );
    assert_eq!((q.stats.invalid, q.stats.replays, q.stats.stale), (2, 1, 1));
}

#[test]
fn the_seed_rotates_and_the_previous_one_still_counts() {
    let mut rng = StdRng::seed_from_u64(4);
    let mut q = IntroQueue::new(&mut rng, Instant::ZERO);
    let b = budget();
    let old = intro(&q, 1, 50);
    assert!(
        q.tick(&mut rng, Instant::from_unix_ms(POW_SEED_ROTATE_MS)),
        "a new seed is published"
    );
    q.published(Instant::from_unix_ms(POW_SEED_ROTATE_MS));
    assert_ne!(q.params().seed[..4], old.pow.unwrap().seed_id);
    assert_eq!(
        q.admit(Instant::ZERO, &b, CircId(1), old.clone()),
        Admit::Queued(50)
    );
    q.tick(&mut rng, Instant::from_unix_ms(2 * POW_SEED_ROTATE_MS));
    let again = intro(&q, 2, 0);
    let mut older = again;
    older.pow = old.pow;
    assert_eq!(
        q.admit(Instant::ZERO, &b, CircId(1), older),
        Admit::Queued(0),
        "two seeds back: no credit"
    );
}

#[test]
fn the_effort_rises_only_for_paid_losses_and_decays_when_quiet() {
    let mut rng = StdRng::seed_from_u64(5);
    let mut q = IntroQueue::new(&mut rng, Instant::ZERO);
    // A flood without work overflows the queue at effort 0: the service asks for work.
    flood(&mut q, Instant::ZERO, INTRO_QUEUE_MAX * 2, 0);
    assert!(
        q.tick(&mut rng, Instant::from_unix_ms(EFFORT_UPDATE_MS)),
        "first descriptor with an effort"
    );
    q.published(Instant::from_unix_ms(EFFORT_UPDATE_MS));
    assert_eq!(q.effort(), POW_MIN_EFFORT);
    // The same flood goes on below the suggestion: it is shed, the effort holds.
    for w in 2..5 {
        flood(
            &mut q,
            Instant::from_unix_ms(w * EFFORT_UPDATE_MS),
            INTRO_QUEUE_MAX * 2,
            0,
        );
        assert!(!q.tick(&mut rng, Instant::from_unix_ms(w * EFFORT_UPDATE_MS)));
        assert_eq!(q.effort(), POW_MIN_EFFORT);
    }
    // A flood that pays the suggestion and still overflows: up, above the most work lost.
    let t = 5 * EFFORT_UPDATE_MS;
    flood(&mut q, Instant::from_unix_ms(t), INTRO_QUEUE_MAX * 2, 1500);
    q.tick(&mut rng, Instant::from_unix_ms(t));
    assert!(
        q.effort() >= 2 * POW_MIN_EFFORT && q.effort() > 1500,
        "{}",
        q.effort()
    );
    let high = q.effort();
    // The queue drains and stays quiet: down by a third per window, then 0; the descriptor
    // follows at most once a minute.
    while q.pop(Instant::from_unix_ms(t)).is_some() {}
    let mut published = 0;
    for w in 6..40 {
        let now = w * EFFORT_UPDATE_MS;
        if q.tick(&mut rng, Instant::from_unix_ms(now)) {
            q.published(Instant::from_unix_ms(now));
            published += 1;
        }
    }
    assert_eq!(q.effort(), 0, "decayed from {high}");
    assert!((1..=3).contains(&published), "{published} descriptors");
}
