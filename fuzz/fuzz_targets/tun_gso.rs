//! Reads from the offload TUN (virtio-net header and packet, any local program's bytes in it):
//! parse and cut never panic, and every packet fits the MTU-sized buffer without growing it.
#![no_main]
use globalnet::flow::gso;
use libfuzzer_sys::fuzz_target;

const MTU: usize = 1280;

fuzz_target!(|data: &[u8]| {
    let mut read = data.to_vec();
    let Ok(r) = gso::parse(&mut read, MTU) else {
        return;
    };
    let mut out = Vec::with_capacity(MTU);
    let count = r.count();
    assert!(count >= 1 && count <= 65_535);
    for i in 0..count {
        r.write_segment(&read, i, &mut out).expect("a parsed read cuts");
        assert!(out.len() <= MTU);
        assert_eq!(out.capacity(), MTU);
    }
    assert!(r.write_segment(&read, count + 1, &mut out).is_err() || !r.is_segmented());
});
