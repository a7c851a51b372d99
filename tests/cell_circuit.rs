//! Circuits of 1 to 9 hops built with real handshakes between in-memory relays: round trips over
//! links that lose, duplicate and reorder cells; nothing equal in a cell's bytes at two hops;
//! tampering caught at the ends, where the first failed check closes the circuit; a tagging
//! relay gets one cell per circuit; forward jumps bounded; random sequence starts, so the first
//! hop sees what any hop sees; replays refused; RELAY_EARLY and the extend cap enforced.

mod cell_support;

use cell_support::{build, random_ids, Built, Relay};
use globalnet::circuit::{
    next_backward_seq_start, wideblock, ClientCircuit, ClientError, Forward, HopError, HopKeys,
    RelayHop, ReplayError, SeqStart, MAX_CIRCUIT_HOPS, MAX_RELAY_EARLY, MAX_SEQ_JUMP,
    REPLAY_WINDOW_CELLS,
};
use globalnet::wire::cell::{Cell, CellCommand, CellHeader, DestroyReason, CELL_LEN};
use globalnet::wire::relay::{emit_relay_message, Extend, RelayCommand, EXTEND_LINK_SPEC_LEN};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;

fn circuit(seed: u64, n: usize) -> (Built, StdRng) {
    let mut rng = StdRng::seed_from_u64(seed);
    let relays: Vec<Relay> = (0..n).map(|_| Relay::random(&mut rng)).collect();
    let ids = random_ids(&mut rng, n);
    (build(&mut rng, &relays, &ids), rng)
}

/// A lossy link: drops, duplicates and reorders a batch of cells.
fn lossy<R: Rng>(rng: &mut R, cells: Vec<[u8; CELL_LEN]>) -> Vec<[u8; CELL_LEN]> {
    let mut out = Vec::new();
    for c in cells {
        let r: f64 = rng.gen();
        if r < 0.1 {
            continue; // lost
        }
        if r < 0.2 {
            out.push(c); // duplicated
        }
        out.push(c);
    }
    // reorder: a partial shuffle (neighbours swap, and a few long jumps)
    for i in 1..out.len() {
        if rng.gen_bool(0.3) {
            out.swap(i - 1, i);
        }
    }
    if out.len() > 2 {
        for _ in 0..out.len() / 8 {
            let a = rng.gen_range(0..out.len());
            let b = rng.gen_range(0..out.len());
            out.swap(a, b);
        }
    }
    out
}

fn numbered(i: u32) -> Vec<u8> {
    let mut p = i.to_be_bytes().to_vec();
    p.extend(std::iter::repeat_n(i as u8, (i as usize * 37) % 1200));
    p
}

/// Send `count` messages each way over lossy links; every message that survives every link
/// arrives exactly once and intact; duplicates are refused by the windows.
fn lossy_round_trip(seed: u64, n: usize, count: u32) {
    let (mut c, mut rng) = circuit(seed, n);
    // forward
    let mut batch = Vec::new();
    for i in 0..count {
        let mut cell = [0u8; CELL_LEN];
        c.client
            .send(RelayCommand::Data, &numbered(i), &mut cell)
            .unwrap();
        batch.push(cell);
    }
    let mut delivered = Vec::new();
    for j in 0..n {
        let mut next = Vec::new();
        for mut cell in lossy(&mut rng, batch) {
            match c.hops[j].forward(&mut cell) {
                Ok(Forward::Relayed) => next.push(cell),
                Ok(Forward::Delivered { message, early }) => {
                    assert!(!early);
                    assert_eq!(message.command(), Ok(RelayCommand::Data));
                    delivered.push(message.payload().to_vec());
                }
                Ok(other) => panic!("hop {j}: {other:?}"),
                Err(HopError::Replay(ReplayError::Replay)) => {}
                Err(e) => panic!("hop {j}: {e}"),
            }
        }
        batch = next;
    }
    let got: BTreeSet<u32> = delivered
        .iter()
        .map(|p| u32::from_be_bytes(p[..4].try_into().unwrap()))
        .collect();
    assert_eq!(got.len(), delivered.len(), "a message was delivered twice");
    for p in &delivered {
        let i = u32::from_be_bytes(p[..4].try_into().unwrap());
        assert_eq!(p, &numbered(i));
    }
    assert!(
        got.len() as f64 > count as f64 * 0.9f64.powi(n as i32) * 0.5,
        "too few delivered"
    );

    // backward
    let mut batch = Vec::new();
    for i in 0..count {
        let mut cell = [0u8; CELL_LEN];
        c.hops[n - 1]
            .originate(RelayCommand::Data, &numbered(i), &mut cell)
            .unwrap();
        batch.push(cell);
    }
    for j in (0..n - 1).rev() {
        let mut next = Vec::new();
        for mut cell in lossy(&mut rng, batch) {
            match c.hops[j].backward(&mut cell) {
                Ok(()) => next.push(cell),
                Err(HopError::Replay(ReplayError::Replay)) => {}
                Err(e) => panic!("hop {j}: {e}"),
            }
        }
        batch = next;
    }
    let mut seen = BTreeSet::new();
    for mut cell in lossy(&mut rng, batch) {
        match c.client.receive(&mut cell) {
            Ok(m) => {
                let p = m.payload();
                let i = u32::from_be_bytes(p[..4].try_into().unwrap());
                assert_eq!(p, &numbered(i)[..]);
                assert!(seen.insert(i), "delivered twice");
            }
            Err(ClientError::Replay(ReplayError::Replay)) => {}
            Err(e) => panic!("client: {e}"),
        }
    }
    assert!(!seen.is_empty());
}

#[test]
fn lossy_links_one_to_eight_hops() {
    for n in 1..=8 {
        for seed in 0..2 {
            lossy_round_trip(1000 * n as u64 + seed, n, 48);
        }
    }
}

#[test]
fn nine_hops_and_no_more() {
    let (mut c, mut rng) = circuit(9, MAX_CIRCUIT_HOPS);
    assert_eq!(c.client.hops(), 9);
    let relay = Relay::random(&mut rng);
    let mut cell = [0u8; CELL_LEN];
    assert_eq!(
        c.client.extend(
            &mut rng,
            &relay.target(),
            &[0; EXTEND_LINK_SPEC_LEN],
            &mut cell
        ),
        Err(ClientError::TooManyHops)
    );
    let mut cell = [0u8; CELL_LEN];
    c.client
        .send(RelayCommand::Data, b"far", &mut cell)
        .unwrap();
    assert_eq!(c.forward_all(&mut cell).1, b"far");
    c.hops[8]
        .originate(RelayCommand::Data, b"back", &mut cell)
        .unwrap();
    assert_eq!(c.backward_all(&mut cell).1, b"back");
}

/// Keys for hand-made cells (a hostile client or neighbour).
fn manual_hop(seed: u8) -> (HopKeys, [[u8; 32]; 4]) {
    let kf = [[seed; 32], [seed ^ 1; 32], [seed ^ 2; 32], [seed ^ 3; 32]];
    let kb = [[!seed; 32]; 4];
    (HopKeys::new(kf, kb, 1000, 2000, [0; 32]), kf)
}

fn manual_cell(
    kf: &[[u8; 32]; 4],
    cmd: CellCommand,
    seq: u64,
    rcmd: RelayCommand,
) -> [u8; CELL_LEN] {
    let mut cell = [0u8; CELL_LEN];
    let mut v = Cell::new(&mut cell);
    emit_relay_message(v.body_mut(), rcmd, b"x").unwrap();
    globalnet::circuit::WbKeys::new(*kf)
        .encrypt(&wideblock::tweak(seq, cmd as u8), v.body_mut())
        .unwrap();
    v.emit_header(&CellHeader {
        circ_id: 5,
        cmd,
        seq,
    });
    cell
}

#[test]
fn relay_early_cap_at_a_relay() {
    let (keys, kf) = manual_hop(1);
    let mut hop = RelayHop::new(keys, 0, 5);
    for seq in 0..MAX_RELAY_EARLY as u64 {
        let mut c = manual_cell(&kf, CellCommand::RelayEarly, seq, RelayCommand::Drop);
        assert!(matches!(
            hop.forward(&mut c),
            Ok(Forward::Delivered { early: true, .. })
        ));
    }
    let mut c = manual_cell(&kf, CellCommand::RelayEarly, 8, RelayCommand::Drop);
    let e = hop.forward(&mut c).unwrap_err();
    assert_eq!(e, HopError::TooManyRelayEarly);
    assert_eq!(e.destroy_reason(), Some(DestroyReason::Protocol));
}

#[test]
fn relay_early_after_relay_and_backward() {
    let (keys, kf) = manual_hop(2);
    let mut hop = RelayHop::new(keys, 0, 5);
    let mut c = manual_cell(&kf, CellCommand::Relay, 10, RelayCommand::Drop);
    assert!(matches!(
        hop.forward(&mut c),
        Ok(Forward::Delivered { early: false, .. })
    ));
    // an earlier RELAY_EARLY that was overtaken is fine
    let mut c = manual_cell(&kf, CellCommand::RelayEarly, 9, RelayCommand::Drop);
    assert!(hop.forward(&mut c).is_ok());
    // a later one is not
    let mut c = manual_cell(&kf, CellCommand::RelayEarly, 11, RelayCommand::Drop);
    assert_eq!(
        hop.forward(&mut c).unwrap_err(),
        HopError::RelayEarlyAfterRelay
    );
    // EXTEND only in RELAY_EARLY
    assert_eq!(hop.begin_extend(false), Err(HopError::ExtendRefused));
    // backward RELAY_EARLY
    let mut c = manual_cell(&kf, CellCommand::RelayEarly, 3, RelayCommand::Drop);
    assert_eq!(
        hop.backward(&mut c).unwrap_err(),
        HopError::BackwardRelayEarly
    );
}

#[test]
fn client_never_extends_after_relay() {
    let (mut c, mut rng) = circuit(3, 2);
    let mut cell = [0u8; CELL_LEN];
    c.client.send(RelayCommand::Drop, &[], &mut cell).unwrap();
    let relay = Relay::random(&mut rng);
    assert_eq!(
        c.client.extend(
            &mut rng,
            &relay.target(),
            &[0; EXTEND_LINK_SPEC_LEN],
            &mut cell
        ),
        Err(ClientError::ExtendAfterRelay)
    );
    assert_eq!(
        c.client.send(RelayCommand::Extend, &[], &mut cell),
        Err(ClientError::ExtendViaSend)
    );
}

#[test]
fn extend_refused_once_origin_counter_used_the_gap() {
    let (keys, _) = manual_hop(3);
    let mut hop = RelayHop::new(keys, 0, 5);
    let mut cell = [0u8; CELL_LEN];
    for _ in 0..64 {
        hop.originate(RelayCommand::Drop, &[], &mut cell).unwrap();
    }
    assert_eq!(hop.begin_extend(true), Err(HopError::ExtendRefused));
    let (keys, _) = manual_hop(4);
    let mut hop = RelayHop::new(keys, 0, 5);
    for _ in 0..63 {
        hop.originate(RelayCommand::Drop, &[], &mut cell).unwrap();
    }
    hop.begin_extend(true).unwrap();
    // the EXTENDED itself takes the last value before the next hop's sequence
    hop.finish_extend(&[0; 148], 77, &mut cell).unwrap();
    assert_eq!(
        hop.originate(RelayCommand::Drop, &[], &mut cell),
        Err(HopError::NotLastHop)
    );
}

#[test]
fn replays_are_refused_everywhere() {
    let (mut c, _) = circuit(4, 3);
    let mut cell = [0u8; CELL_LEN];
    c.client
        .send(RelayCommand::Data, b"once", &mut cell)
        .unwrap();
    let first = cell;
    assert_eq!(c.forward_all(&mut cell).1, b"once");
    // the same cell again at hop 1
    let mut again = first;
    assert_eq!(
        c.hops[0].forward(&mut again).unwrap_err(),
        HopError::Replay(ReplayError::Replay)
    );
    // and at the last hop (a copy of what hop 2 sent)
    let mut copy = first;
    c.hops[0].forward(&mut copy).unwrap_err();
    // backward: replay at an intermediate hop and at the client
    c.hops[2]
        .originate(RelayCommand::Data, b"back", &mut cell)
        .unwrap();
    let mut at_hop2 = cell;
    c.hops[1].backward(&mut cell).unwrap();
    assert_eq!(
        c.hops[1].backward(&mut at_hop2).unwrap_err(),
        HopError::Replay(ReplayError::Replay)
    );
    c.hops[0].backward(&mut cell).unwrap();
    let mut twice = cell;
    c.client.receive(&mut cell).unwrap();
    assert_eq!(
        c.client.receive(&mut twice).unwrap_err(),
        ClientError::Replay(ReplayError::Replay)
    );
}

#[test]
fn last_hop_replay_window() {
    let (mut c, _) = circuit(5, 2);
    let mut cell = [0u8; CELL_LEN];
    c.client.send(RelayCommand::Data, b"x", &mut cell).unwrap();
    c.hops[0].forward(&mut cell).unwrap();
    let mut copy = cell;
    assert!(matches!(
        c.hops[1].forward(&mut cell),
        Ok(Forward::Delivered { .. })
    ));
    assert_eq!(
        c.hops[1].forward(&mut copy).unwrap_err(),
        HopError::Replay(ReplayError::Replay)
    );
}

/// 6.5, 6.6: the first failed check field closes the circuit, at the last hop and at the client
/// (loss, duplicates and reordering never cause one: `lossy_links_one_to_eight_hops` fails on any
/// error but a replay).
#[test]
fn the_first_failed_check_closes_the_circuit() {
    let (mut c, _) = circuit(6, 2);
    let mut cell = [0u8; CELL_LEN];
    c.client.send(RelayCommand::Data, b"x", &mut cell).unwrap();
    cell[100] ^= 0x40;
    c.hops[0].forward(&mut cell).unwrap();
    let e = c.hops[1].forward(&mut cell).unwrap_err();
    assert_eq!(e, HopError::Tampered);
    assert_eq!(e.destroy_reason(), Some(DestroyReason::Protocol));
    // the same at the client
    let mut cell = [0u8; CELL_LEN];
    c.hops[1]
        .originate(RelayCommand::Data, b"y", &mut cell)
        .unwrap();
    cell[1000] ^= 1;
    c.hops[0].backward(&mut cell).unwrap();
    let e = c.client.receive(&mut cell).unwrap_err();
    assert_eq!(e, ClientError::Tampered);
    assert!(e.tears_down());
    assert_eq!(e.destroy_reason(), Some(DestroyReason::Protocol));
}

/// Threat model 6.1: a hostile guard tags a cell for a colluder further on, by shifting the seq
/// it passes on by `delta` or by flipping a body bit. The honest middle hop passes a shifted seq
/// only up to `MAX_SEQ_JUMP` ahead of what it has seen (beyond, it destroys the circuit), and the
/// honest last hop destroys the circuit at that first tagged cell. So a tag is one cell per
/// circuit, whose seq is one of fewer than `MAX_SEQ_JUMP + REPLAY_WINDOW_CELLS` values.
#[test]
fn a_tagging_guard_gets_one_cell_per_circuit() {
    let cases: [(u64, Option<u64>, bool); 5] = [
        (20, Some(1), true),
        (21, Some(MAX_SEQ_JUMP - 1), true),
        (22, Some(MAX_SEQ_JUMP), false),
        (23, Some(u64::MAX - 5), true), // 6 back: a seq the middle hop has not seen
        (24, None, true),               // a body bit
    ];
    for (seed, delta, middle_passes) in cases {
        let (mut c, _) = circuit(seed, 3);
        // ordinary traffic first, so every window has a top; the guard drops cells 4..9
        for i in 0..10 {
            let mut cell = [0u8; CELL_LEN];
            c.client.send(RelayCommand::Drop, &[], &mut cell).unwrap();
            if (4..9).contains(&i) {
                c.hops[0].forward(&mut cell).unwrap();
            } else {
                c.forward_all(&mut cell);
            }
        }
        let mut cell = [0u8; CELL_LEN];
        c.client
            .send(RelayCommand::Data, b"tag me", &mut cell)
            .unwrap();
        assert!(matches!(c.hops[0].forward(&mut cell), Ok(Forward::Relayed)));
        // the guard's tag
        match delta {
            Some(d) => {
                let s = Cell::new(&cell).seq();
                Cell::new(&mut cell).set_seq(s.wrapping_add(d));
            }
            None => cell[700] ^= 4,
        }
        match c.hops[1].forward(&mut cell) {
            Ok(Forward::Relayed) => {
                assert!(middle_passes, "delta {delta:?} passed the middle hop");
                let e = c.hops[2].forward(&mut cell).unwrap_err();
                assert_eq!(e, HopError::Tampered);
                assert_eq!(e.destroy_reason(), Some(DestroyReason::Protocol));
            }
            Err(e) => {
                assert!(!middle_passes, "delta {delta:?}: {e}");
                assert_eq!(e, HopError::Replay(ReplayError::TooFarAhead));
                assert_eq!(e.destroy_reason(), Some(DestroyReason::Protocol));
            }
            Ok(other) => panic!("{other:?}"),
        }
    }
    // The values a tag can take at the middle hop: MAX_SEQ_JUMP ahead, 1023 behind.
    assert!(((MAX_SEQ_JUMP as usize + REPLAY_WINDOW_CELLS) as f64).log2() < 13.2);
}

/// A two-hop circuit from hand-made keys, the first hop already extended: the client (with the
/// given starts) and the two relay hops.
fn manual_circuit(start: SeqStart) -> (ClientCircuit, [(HopKeys, u64); 2]) {
    let (k1, _) = manual_hop(30);
    let (k2, _) = manual_hop(31);
    let w2 = next_backward_seq_start(start.backward, k1.backward_offset());
    let client = ClientCircuit::from_hops(5, start, vec![k1.clone(), k2.clone()]).unwrap();
    (client, [(k1, start.backward), (k2, w2)])
}

fn intermediate(keys: &HopKeys, w: u64) -> RelayHop {
    let mut hop = RelayHop::new(keys.clone(), w, 5);
    let mut scratch = [0u8; CELL_LEN];
    hop.begin_extend(true).unwrap();
    hop.finish_extend(&[0; 148], 6, &mut scratch).unwrap();
    hop
}

/// 6.7: a jump of `MAX_SEQ_JUMP` (that many cells lost in a row, less one) is accepted; one more
/// destroys the circuit at the hop or the client that sees it, forward and backward — every later
/// cell would be refused too, so the circuit closes and its flows move as on a relay death.
#[test]
fn a_jump_beyond_max_seq_jump_closes_the_circuit() {
    let start = SeqStart {
        forward: u64::MAX - 2, // the counter wraps on the way
        backward: 1 << 63,
    };
    let (mut client, [(k1, w1), (k2, w2)]) = manual_circuit(start);
    let mut hop1 = intermediate(&k1, w1);
    let mut hop2 = RelayHop::new(k2.clone(), w2, 6);
    // A client whose counter is `ahead` further on, with the same keys: its cells are what the
    // real client would send after losing `ahead - 1` cells.
    let later = |ahead: u64| {
        let s = SeqStart {
            forward: start.forward.wrapping_add(ahead),
            ..start
        };
        manual_circuit(s).0
    };
    let mut cell = [0u8; CELL_LEN];
    client.send(RelayCommand::Data, b"0", &mut cell).unwrap();
    assert!(matches!(hop1.forward(&mut cell), Ok(Forward::Relayed)));
    assert!(matches!(
        hop2.forward(&mut cell),
        Ok(Forward::Delivered { .. })
    ));
    // forward: a jump of exactly MAX_SEQ_JUMP is delivered
    later(MAX_SEQ_JUMP)
        .send(RelayCommand::Data, b"1", &mut cell)
        .unwrap();
    assert!(matches!(hop1.forward(&mut cell), Ok(Forward::Relayed)));
    assert!(matches!(
        hop2.forward(&mut cell),
        Ok(Forward::Delivered { .. })
    ));
    // one more is refused, and the refusal destroys the circuit at an intermediate hop ...
    let mut far = [0u8; CELL_LEN];
    later(2 * MAX_SEQ_JUMP + 1)
        .send(RelayCommand::Data, b"2", &mut far)
        .unwrap();
    let mut copy = far;
    let e = hop1.forward(&mut far).unwrap_err();
    assert_eq!(e, HopError::Replay(ReplayError::TooFarAhead));
    assert_eq!(e.destroy_reason(), Some(DestroyReason::Protocol));
    // ... and at the last hop (reached through a fresh copy of hop 1, whose window is empty)
    assert!(matches!(
        intermediate(&k1, w1).forward(&mut copy),
        Ok(Forward::Relayed)
    ));
    let e = hop2.forward(&mut copy).unwrap_err();
    assert_eq!(e, HopError::Replay(ReplayError::TooFarAhead));
    assert_eq!(e.destroy_reason(), Some(DestroyReason::Protocol));

    // backward: the last hop's origin counter jumps (a last hop whose `W` is further on)
    let back = |w_ahead: u64, cell: &mut [u8; CELL_LEN]| {
        RelayHop::new(k2.clone(), w2.wrapping_add(w_ahead), 6)
            .originate(RelayCommand::Data, b"b", cell)
            .unwrap();
    };
    back(0, &mut cell);
    hop1.backward(&mut cell).unwrap();
    client.receive(&mut cell).unwrap();
    back(MAX_SEQ_JUMP, &mut cell);
    hop1.backward(&mut cell).unwrap();
    client.receive(&mut cell).unwrap();
    back(2 * MAX_SEQ_JUMP + 1, &mut far);
    let mut copy = far;
    let e = hop1.backward(&mut far).unwrap_err();
    assert_eq!(e, HopError::Replay(ReplayError::TooFarAhead));
    assert_eq!(e.destroy_reason(), Some(DestroyReason::Protocol));
    intermediate(&k1, w1).backward(&mut copy).unwrap();
    let e = client.receive(&mut copy).unwrap_err();
    assert_eq!(e, ClientError::Replay(ReplayError::TooFarAhead));
    assert!(e.tears_down());
    // Too old (reordering past the window) and replays only drop the cell.
    assert_eq!(HopError::Replay(ReplayError::TooOld).destroy_reason(), None);
    assert_eq!(HopError::Replay(ReplayError::Replay).destroy_reason(), None);
    assert!(!ClientError::Replay(ReplayError::TooOld).tears_down());
    assert!(!ClientError::Replay(ReplayError::Replay).tears_down());
}

/// Issue #18 item 6: a guard cannot tell a client's own circuit from one it extends for someone
/// else by the sequence numbers. On its own circuits a client draws `c` and `W_1` uniformly at
/// random, so hop 1 sees values distributed like those hop 2 sees (`c + Df_1`, `W_2`).
#[test]
fn the_first_hop_sees_random_sequence_starts() {
    let mut rng = StdRng::seed_from_u64(40);
    let (mut w, mut s) = (
        [BTreeSet::new(), BTreeSet::new()],
        [BTreeSet::new(), BTreeSet::new()],
    );
    for _ in 0..64 {
        let relays: Vec<Relay> = (0..2).map(|_| Relay::random(&mut rng)).collect();
        let mut cell = [0u8; CELL_LEN];
        let mut client =
            ClientCircuit::create(&mut rng, 9, &relays[0].target(), &mut cell).unwrap();
        let hs = relays[0].respond(&mut rng, &Cell::new(&cell).body()[..180]);
        // what hop 1 learns from CREATE, and what hop 2 would learn from its CREATE
        w[0].insert(hs.client_ext.backward_seq_start);
        let db1 = hs.keys.backward_offset();
        let df1 = hs.keys.forward_offset();
        let mut reply = [0u8; CELL_LEN];
        globalnet::wire::cell::emit_plain_cell(
            &mut reply,
            &CellHeader {
                circ_id: 9,
                cmd: CellCommand::Created,
                seq: 0,
            },
            &hs.created,
        );
        client.on_created(&reply).unwrap();
        assert_eq!(
            client.next_backward_seq_start(),
            next_backward_seq_start(hs.client_ext.backward_seq_start, db1)
        );
        w[1].insert(client.next_backward_seq_start());
        // the first forward seq hop 1 sees, and hop 2's for the same cell
        let c0 = client.next_forward_seq();
        s[0].insert(c0);
        s[1].insert(c0.wrapping_add(df1));
    }
    for set in w.iter().chain(&s) {
        assert_eq!(set.len(), 64, "a start repeated");
        assert!(!set.contains(&0));
        // about half have the top bit set, as for uniform values
        let high = set.iter().filter(|v| **v >> 63 == 1).count();
        assert!(
            (16..=48).contains(&high),
            "{high} of 64 with the top bit set"
        );
        let small = set.iter().filter(|v| **v < 1 << 32).count();
        assert_eq!(small, 0, "starts near zero");
    }
}

/// 8.4 with the first failed check fatal: the client's resent EXTEND (its EXTENDED was lost)
/// reaches a hop that has already extended. That hop recognises it by its own check field and
/// does not forward it (the new hop would see garbage and close the circuit); it answers with its
/// EXTENDED again. The client's next cell ends the exception and goes through.
#[test]
fn a_resent_extend_is_answered_by_the_hop_that_extended() {
    let mut rng = StdRng::seed_from_u64(50);
    let relays: Vec<Relay> = (0..3).map(|_| Relay::random(&mut rng)).collect();
    let ids = random_ids(&mut rng, 3);
    let mut c = build(&mut rng, &relays[..2], &ids[..2]);
    let mut cell = [0u8; CELL_LEN];
    c.client
        .extend(
            &mut rng,
            &relays[2].target(),
            &[0; EXTEND_LINK_SPEC_LEN],
            &mut cell,
        )
        .unwrap();
    assert!(matches!(c.hops[0].forward(&mut cell), Ok(Forward::Relayed)));
    let create = match c.hops[1].forward(&mut cell).unwrap() {
        Forward::Delivered {
            early: true,
            message,
        } => Extend::new_checked(message.payload())
            .unwrap()
            .create_handshake()
            .to_vec(),
        other => panic!("{other:?}"),
    };
    c.hops[1].begin_extend(true).unwrap();
    let hs = relays[2].respond(&mut rng, &create);
    let created = hs.created;
    let mut hop3 = RelayHop::from_handshake(hs, ids[2]);
    let mut extended = [0u8; CELL_LEN];
    c.hops[1]
        .finish_extend(&created, ids[2], &mut extended)
        .unwrap();
    // The EXTENDED is lost; the client resends its EXTEND in a fresh cell.
    let mut again = [0u8; CELL_LEN];
    c.client.resend_extend(&mut again).unwrap();
    assert!(matches!(
        c.hops[0].forward(&mut again),
        Ok(Forward::Relayed)
    ));
    match c.hops[1].forward(&mut again).unwrap() {
        Forward::ResentExtend { message } => {
            assert_eq!(message.command(), Ok(RelayCommand::Extend));
            let ext = Extend::new_checked(message.payload()).unwrap();
            assert_eq!(ext.create_handshake(), &create[..]);
        }
        other => panic!("{other:?}"),
    }
    // The relay sends its EXTENDED again (the layer keeps the cell): the client installs hop 3.
    c.hops[0].backward(&mut extended).unwrap();
    let m = c.client.receive(&mut extended).unwrap();
    assert_eq!(m.command(), Ok(RelayCommand::Extended));
    let payload = m.payload().to_vec();
    c.client.on_extended(&payload).unwrap();
    // The next cell goes through to the new last hop.
    c.client
        .send(RelayCommand::Data, b"through", &mut cell)
        .unwrap();
    assert!(matches!(c.hops[0].forward(&mut cell), Ok(Forward::Relayed)));
    assert!(matches!(c.hops[1].forward(&mut cell), Ok(Forward::Relayed)));
    match hop3.forward(&mut cell).unwrap() {
        Forward::Delivered { message, .. } => assert_eq!(message.payload(), b"through"),
        other => panic!("{other:?}"),
    }
}

/// Capture a cell's bytes on every link, forward and backward.
fn trace(c: &mut Built, payload: &[u8]) -> (Vec<[u8; CELL_LEN]>, Vec<[u8; CELL_LEN]>) {
    let n = c.hops.len();
    let mut cell = [0u8; CELL_LEN];
    c.client
        .send(RelayCommand::Data, payload, &mut cell)
        .unwrap();
    let mut fwd = vec![cell];
    for j in 0..n {
        match c.hops[j].forward(&mut cell).unwrap() {
            Forward::Relayed => fwd.push(cell),
            Forward::Delivered { message, .. } => assert_eq!(message.payload(), payload),
            other => panic!("{other:?}"),
        }
    }
    c.hops[n - 1]
        .originate(RelayCommand::Data, payload, &mut cell)
        .unwrap();
    let mut bwd = vec![cell];
    for j in (0..n - 1).rev() {
        c.hops[j].backward(&mut cell).unwrap();
        bwd.push(cell);
    }
    assert_eq!(c.client.receive(&mut cell).unwrap().payload(), payload);
    (fwd, bwd)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// 6.9: no field of a cell is equal at two hops (circuit id, seq, body), and every cell is
    /// CELL_LEN bytes on every link.
    #[test]
    fn no_field_equal_at_two_hops(seed in any::<u64>(), n in 2usize..=8, payload in prop::collection::vec(any::<u8>(), 0..1316), skip in 0u8..8) {
        let (mut c, _) = circuit(seed, n);
        for _ in 0..skip {
            trace(&mut c, b"warm-up");
        }
        let (fwd, bwd) = trace(&mut c, &payload);
        for links in [&fwd, &bwd] {
            prop_assert_eq!(links.len(), n);
            for l in links.iter() {
                // the same size on every link, and a well-formed RELAY cell there
                let v = Cell::new_checked(&l[..]).unwrap();
                prop_assert_eq!(v.as_bytes().len(), CELL_LEN);
                prop_assert_eq!(v.command(), Ok(CellCommand::Relay));
            }
            for a in 0..links.len() {
                for b in a + 1..links.len() {
                    let (x, y) = (Cell::new(&links[a]), Cell::new(&links[b]));
                    prop_assert_ne!(x.circ_id(), y.circ_id());
                    prop_assert_ne!(x.seq(), y.seq());
                    prop_assert_ne!(x.body(), y.body());
                    // no 16-byte block of the body repeats at the same place
                    for (p, q) in x.body().chunks(16).zip(y.body().chunks(16)) {
                        prop_assert_ne!(p, q);
                    }
                }
            }
        }
    }

    /// Any change to a forward cell on any link (body bit, seq, RELAY↔RELAY_EARLY) means the last
    /// hop does not deliver it; the same for backward cells at the client.
    #[test]
    fn tampering_is_caught_at_the_ends(seed in any::<u64>(), n in 1usize..=5, link in 0usize..5, what in 0u8..3, pos in 0usize..1336, bit in 0u8..8) {
        let link = link % n;
        let (mut c, _) = circuit(seed, n);
        // forward
        let mut cell = [0u8; CELL_LEN];
        c.client.send(RelayCommand::Data, b"payload", &mut cell).unwrap();
        let mut delivered = false;
        for j in 0..n {
            if j == link {
                match what {
                    0 => cell[16 + pos] ^= 1 << bit,
                    1 => { let s = Cell::new(&cell).seq(); Cell::new(&mut cell).set_seq(s ^ (1 << (bit * 7))); }
                    _ => Cell::new(&mut cell).set_command(CellCommand::RelayEarly),
                }
            }
            match c.hops[j].forward(&mut cell) {
                Ok(Forward::Relayed) => {}
                Ok(Forward::Delivered { .. } | Forward::ResentExtend { .. }) => delivered = true,
                Err(_) => break,
            }
        }
        prop_assert!(!delivered);
        // backward
        c.hops[n - 1].originate(RelayCommand::Data, b"payload", &mut cell).unwrap();
        let hop_link = n - 1 - link; // tamper on the link leaving this hop
        for j in (0..n).rev() {
            if j == hop_link {
                match what {
                    0 => cell[16 + pos] ^= 1 << bit,
                    _ => { let s = Cell::new(&cell).seq(); Cell::new(&mut cell).set_seq(s ^ (1 << (bit * 7))); }
                }
            }
            if j > 0 && c.hops[j - 1].backward(&mut cell).is_err() {
                return Ok(());
            }
        }
        prop_assert!(c.client.receive(&mut cell).is_err());
    }
}

#[test]
fn reordered_beyond_the_window_is_dropped() {
    let (mut c, _) = circuit(7, 1);
    let mut old = [0u8; CELL_LEN];
    c.client.send(RelayCommand::Data, b"old", &mut old).unwrap();
    let mut cell = [0u8; CELL_LEN];
    for _ in 0..1024 {
        c.client.send(RelayCommand::Drop, &[], &mut cell).unwrap();
        c.hops[0].forward(&mut cell).unwrap();
    }
    assert_eq!(
        c.hops[0].forward(&mut old).unwrap_err(),
        HopError::Replay(ReplayError::TooOld)
    );
}

#[test]
fn debug_output_has_no_secrets() {
    let (c, _) = circuit(8, 2);
    let s = format!("{:?} {:?}", c.client, c.hops);
    assert!(
        !s.contains("kf") && !s.contains("kb") && s.len() < 600,
        "{s}"
    );
}
