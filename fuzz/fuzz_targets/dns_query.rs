//! The gn.alt DNS server (protocol.md 18.4): any datagram gives an answer that parses as a DNS
//! response with the query's id, or nothing; never a panic. Key names in the query pass the key
//! name decoder too, and the key a key name gives hashes to the address it answers.
#![no_main]
use globalnet::names::dns::{asked_key, finish, handle, Handled};
use globalnet::names::{KeyName, Petnames};
use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut pets = Petnames::default();
    let _ = pets.add_text("alice fd00::1\nbob.x fd00::2\n", "fuzz");
    // The key a query carries, for the client's descriptor check: only ever for an answer.
    if let Some((address, key)) = asked_key(data, &pets) {
        assert_eq!(globalnet::crypto::address_of(&key), address);
    }
    let reply = match handle(data, &pets) {
        Handled::Reply(b) => b,
        Handled::Network { label, query } => {
            let _ = KeyName::parse_label(&label);
            finish(&query, Some("fd00::3".parse().unwrap()))
        }
        Handled::Drop => return,
    };
    let m = Message::from_vec(&reply).expect("the server's answer parses");
    assert_eq!(m.message_type(), MessageType::Response);
    assert_eq!(data.get(..2), Some(&m.id().to_be_bytes()[..]));
    assert!(reply.len() <= 1232);
});
