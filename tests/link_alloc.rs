//! The link layer's data path allocates nothing per cell in steady state (sending a cell on one
//! node, receiving it on the other), counted with a global allocator.

use globalnet::budget::MemoryBudget;
use globalnet::crypto::Randomness;
use globalnet::link::{LinkConfig, LinkEvent, LinkKeys, LinkLayer};
use globalnet::time::Instant;
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn node(i: u8, addr: SocketAddr) -> LinkLayer {
    let keys = LinkKeys {
        identity: ed25519_dalek::SigningKey::from_bytes(&[i; 32]),
        link: x25519_dalek::StaticSecret::from([i + 100; 32]),
        onion_public: [i; 32],
    };
    let cfg = LinkConfig {
        advertise: vec![addr],
        prefix_bits: (32, 128),
        ..LinkConfig::default()
    };
    LinkLayer::new(
        cfg,
        keys,
        MemoryBudget::new(1 << 24),
        Randomness::with_choice_seed([i; 32]),
        Instant::from_unix_ms(1_800_000_000_000),
    )
}

/// Moves every datagram between the two nodes; returns the cells node b received.
fn pump(a: &mut LinkLayer, b: &mut LinkLayer, aa: SocketAddr, ba: SocketAddr, now: u64) -> usize {
    let mut cells = 0;
    loop {
        let mut moved = false;
        while let Some(t) = a.poll_transmit() {
            b.handle_datagram(Instant::from_unix_ms(now), aa, &t.data);
            a.recycle(t.data);
            moved = true;
        }
        while let Some(t) = b.poll_transmit() {
            a.handle_datagram(Instant::from_unix_ms(now), ba, &t.data);
            b.recycle(t.data);
            moved = true;
        }
        while let Some(e) = b.poll_event() {
            if let LinkEvent::Cell { cell, .. } = e {
                cells += 1;
                b.recycle(cell);
            }
        }
        while a.poll_event().is_some() {}
        if !moved {
            return cells;
        }
    }
}

#[test]
fn no_allocation_per_cell() {
    let (aa, ba): (SocketAddr, SocketAddr) = (
        "198.18.0.1:7412".parse().unwrap(),
        "198.18.0.2:7412".parse().unwrap(),
    );
    let mut a = node(1, aa);
    let mut b = node(2, ba);
    let now = 1_800_000_000_000;
    let b_key =
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([102u8; 32])).to_bytes();
    let link = a.connect(Instant::from_unix_ms(now), b_key, ba).unwrap();
    pump(&mut a, &mut b, aa, ba, now);
    let cell = [0x5au8; 1352];
    // Warm up: pools, queues and maps reach their steady size.
    for _ in 0..200 {
        a.send_cell(Instant::from_unix_ms(now), link, &cell)
            .unwrap();
    }
    assert_eq!(pump(&mut a, &mut b, aa, ba, now), 200);
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..10 {
        for _ in 0..100 {
            a.send_cell(Instant::from_unix_ms(now), link, &cell)
                .unwrap();
        }
        assert_eq!(pump(&mut a, &mut b, aa, ba, now), 100);
    }
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    assert_eq!(allocs, 0, "{allocs} allocations for 1000 cells");
}
