//! Introduction and rendezvous bodies (protocol.md 10.6): any bytes give a parsed body or an
//! error, never a panic, and a parsed body emits bytes that parse to the same body.
#![no_main]
use globalnet::session::{
    EstablishIntro, IntroPlaintext, Introduce1, RendPlaintext, Rendezvous1, Rendezvous2,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = EstablishIntro::parse(data) {
        assert_eq!(EstablishIntro::parse(&e.emit()).ok(), Some(e.clone()));
        let _ = e.verify(&[0u8; 32]);
        let _ = e.sheds_by_pow();
        let _ = format!("{e:?}");
    }
    if let Ok(i) = Introduce1::parse(data) {
        assert_eq!(Introduce1::parse(&i.emit()).ok(), Some(i.clone()));
        let _ = i.replay_tag();
    }
    if let Ok(p) = IntroPlaintext::parse(data) {
        assert_eq!(IntroPlaintext::parse(&p.emit()).ok(), Some(p.clone()));
    }
    if let Ok(p) = RendPlaintext::parse(data) {
        assert_eq!(RendPlaintext::parse(&p.emit()).ok(), Some(p));
    }
    if let Ok(r) = Rendezvous1::parse(data) {
        assert_eq!(Rendezvous1::parse(&r.emit()).ok(), Some(r.clone()));
        let r2 = r.to_rendezvous2();
        assert_eq!(Rendezvous2::parse(&r2.emit()).ok(), Some(r2));
    }
    if let Ok(r) = Rendezvous2::parse(data) {
        assert_eq!(Rendezvous2::parse(&r.emit()).ok(), Some(r));
    }
});
