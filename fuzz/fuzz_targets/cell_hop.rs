//! The per-hop cell processing (protocol.md 6.5-6.8) on hostile input: arbitrary cells fed to an
//! intermediate relay (both directions), a last hop and a client must give a result or a typed
//! error, never a panic.
#![no_main]
use globalnet::circuit::{ClientCircuit, Forward, HopKeys, RelayHop, SeqStart};
use globalnet::wire::cell::CELL_LEN;
use libfuzzer_sys::fuzz_target;

fn keys(seed: u8) -> HopKeys {
    HopKeys::new([[seed; 32]; 4], [[seed ^ 0x55; 32]; 4], 17, 99, [0; 32])
}

fuzz_target!(|data: &[u8]| {
    let mut last = RelayHop::new(keys(1), 0, 1);
    let mut middle = RelayHop::new(keys(2), 0, 2);
    let mut scratch = [0u8; CELL_LEN];
    middle.begin_extend(true).unwrap();
    middle.finish_extend(&[0; 148], 3, &mut scratch).unwrap();
    let start = SeqStart {
        forward: 0,
        backward: 0,
    };
    let mut client = ClientCircuit::from_hops(4, start, vec![keys(3), keys(4)]).unwrap();
    // several cells per input: each chunk of CELL_LEN + 1 bytes (a selector and a cell)
    for chunk in data.chunks(CELL_LEN + 1) {
        let Some((&sel, rest)) = chunk.split_first() else {
            continue;
        };
        let mut cell = [0u8; CELL_LEN];
        cell[..rest.len()].copy_from_slice(rest);
        match sel % 4 {
            0 => {
                if let Ok(Forward::Delivered { message, .. }) = last.forward(&mut cell) {
                    let _ = message.command();
                }
            }
            1 => {
                let _ = middle.forward(&mut cell);
            }
            2 => {
                let _ = middle.backward(&mut cell);
            }
            _ => {
                if let Ok(m) = client.receive(&mut cell) {
                    let _ = m.payload();
                }
            }
        }
    }
});
