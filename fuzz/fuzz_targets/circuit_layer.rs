//! The circuit layer on hostile cells from an authenticated neighbour: any sequence of cells
//! (CREATE, RELAY, DESTROY, ... with any bytes) and timer ticks must never panic.
#![no_main]
use globalnet::budget::MemoryBudget;
use globalnet::crypto::Randomness;
use globalnet::circuit::layer::CircuitLayer;
use globalnet::circuit::OnionKey;
use globalnet::link::LinkId;
use globalnet::time::Instant;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let onion = OnionKey::from_secret(x25519_dalek::StaticSecret::from([3u8; 32]));
    let mut now = Instant::from_unix_ms(1_800_000_000_000);
    let mut c = CircuitLayer::new([7; 32], onion, true, MemoryBudget::new(1 << 20), Randomness::with_choice_seed([1; 32]), now);
    c.on_link_up(now, LinkId(1), Some([9; 32]), [1; 32], [2; 32]);
    c.on_link_up(now, LinkId(2), Some([8; 32]), [5; 32], [2; 32]);
    // Input: repeated [link u8][cell 1352 bytes] (short input is padded), or a timer tick.
    let mut cell = [0u8; 1352];
    for chunk in data.chunks(1353) {
        let Some((&first, rest)) = chunk.split_first() else { continue };
        match first % 4 {
            3 => {
                now += 1_000;
                c.handle_timeout(now);
            }
            2 => c.on_link_down(now, LinkId(2)),
            l => {
                cell.fill(0);
                cell[..rest.len()].copy_from_slice(rest);
                c.on_cell(now, LinkId(u32::from(l)), &cell);
            }
        }
        while c.poll_action().is_some() {}
        while c.poll_event().is_some() {}
    }
});
