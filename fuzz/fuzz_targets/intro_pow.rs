//! Proof of work on introductions (protocol.md 10.12): the descriptor's TLV area and INTRODUCE1's
//! extension never panic; parsed parameters emit a TLV that parses to the same; any extension
//! verifies (or not) without a panic.
#![no_main]
use globalnet::dht::desc_pow::PowParams;
use globalnet::session::intro_pow::{IntroPow, INTRO_POW_LEN};
use globalnet::session::Introduce1;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(p)) = PowParams::from_tlvs(data) {
        let mut area = [0u8; 32];
        assert!(p.emit_tlv(&mut area));
        assert_eq!(PowParams::from_tlvs(&area), Ok(Some(p)));
    }
    if let Some(ext) = data.get(..INTRO_POW_LEN) {
        let mut b = [0u8; INTRO_POW_LEN];
        b.copy_from_slice(ext);
        let p = IntroPow::parse(&b);
        assert_eq!(p.emit(), b);
        let _ = p.verify(&[0u8; 16], &[1u8; 32], &[2u8; 32]);
    }
    if let Ok(i) = Introduce1::parse(data) {
        assert_eq!(Introduce1::parse(&i.emit()).ok(), Some(i.clone()));
        let _ = i.client_ephemeral();
    }
});
