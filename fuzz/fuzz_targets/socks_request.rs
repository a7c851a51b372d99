//! SOCKS5 messages from local programs (RFC 1928/1929, src/exit/socks.rs): any bytes are a
//! message, a need for more, or an error with its reply; any datagram to a UDP ASSOCIATE relay
//! is a target and header length within it, or an error.
#![no_main]
use globalnet::exit::socks::{parse_greeting, parse_request, parse_udp_header, parse_userpass};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_greeting(data);
    let _ = parse_userpass(data);
    if let Ok(Some((r, n))) = parse_request(data) {
        assert!(n <= data.len());
        let _ = r.target.way();
    }
    if let Ok((t, n)) = parse_udp_header(data) {
        assert!(n <= data.len());
        let _ = t.way();
    }
});
