//! The DNS server for `gn.alt` on gn0, sans I/O: query bytes in, answer bytes out (docs/protocol.md
//! section 18.4). The wire format is hickory-proto's; nothing here parses DNS by hand.
//!
//! Answers: AAAA for a name that resolves; NOERROR without records (NODATA) for another type of a
//! name that exists (A included: overlay names have no IPv4 address); NXDOMAIN for a name under
//! `gn.alt` that does not exist; REFUSED for every other domain, so the server is never an open
//! resolver; NOTIMP for opcodes other than QUERY; FORMERR for a query that is not one question.
//! Responses and bytes too short to carry an id are dropped, never answered.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{rdata::AAAA, Name, RData, Record, RecordType};
use std::net::Ipv6Addr;

use super::{resolve_local, Local, Petnames};

/// Seconds a resolver may cache an answer: short, so a changed petname or claim shows soon.
pub const TTL: u32 = 60;
/// The UDP payload size this server announces and keeps to (the DNS flag day value).
pub const UDP_PAYLOAD: u16 = 1232;

/// What to do with one datagram.
#[derive(Debug)]
pub enum Handled {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// The name is one label only the network can resolve: look it up, then [`finish`].
    Network {
        /// The name's label (`cheesy` for `cheesy.gn.alt`).
        label: String,
        /// The parsed query, to answer with [`finish`].
        query: Box<Message>,
    },
    /// Send nothing (a response, or bytes that are not DNS).
    Drop,
}

/// Handles one query datagram with the local layers (petnames, key names).
pub fn handle(bytes: &[u8], pets: &Petnames) -> Handled {
    let msg = match Message::from_vec(bytes) {
        Ok(m) => m,
        Err(_) => return formerr(bytes),
    };
    if msg.message_type() != MessageType::Query {
        return Handled::Drop;
    }
    if msg.op_code() != OpCode::Query {
        return reply(&msg, ResponseCode::NotImp, None);
    }
    let [q] = msg.queries() else {
        return reply(&msg, ResponseCode::FormErr, None);
    };
    let Some(name) = ours(q.name()) else {
        return reply(&msg, ResponseCode::Refused, None);
    };
    if name.is_empty() {
        // The apex `gn.alt` exists and has no address.
        return reply(&msg, ResponseCode::NoError, None);
    }
    match resolve_local(&format!("{name}.{}", super::SUFFIX), pets) {
        Ok(Local::Found(r)) => reply(&msg, ResponseCode::NoError, Some(r.address)),
        Ok(Local::Network(label)) => Handled::Network {
            label,
            query: Box::new(msg),
        },
        Ok(Local::NotFound) | Err(_) => reply(&msg, ResponseCode::NXDomain, None),
    }
}

/// The address and full service key a query's name resolves to locally, when the layer that
/// answers gives a key (a key name, or a petname naming one): the client then checks the
/// service's descriptor against the whole key, not only against the address (18.1).
pub fn asked_key(bytes: &[u8], pets: &Petnames) -> Option<(Ipv6Addr, [u8; 32])> {
    let msg = Message::from_vec(bytes).ok()?;
    let [q] = msg.queries() else {
        return None;
    };
    let name = ours(q.name()).filter(|n| !n.is_empty())?;
    match resolve_local(&format!("{name}.{}", super::SUFFIX), pets) {
        Ok(Local::Found(r)) => Some((r.address, r.key?.key())),
        _ => None,
    }
}

/// The answer to a query [`handle`] left to the network: the address, or `None` for NXDOMAIN.
pub fn finish(query: &Message, found: Option<Ipv6Addr>) -> Vec<u8> {
    let code = if found.is_some() {
        ResponseCode::NoError
    } else {
        ResponseCode::NXDomain
    };
    match reply(query, code, found) {
        Handled::Reply(bytes) => bytes,
        _ => Vec::new(),
    }
}

/// SERVFAIL for a query left to the network whose lookup failed or took too long: the name may
/// exist, so the resolver must not cache a denial (it retries; by then the answer is cached here).
pub fn servfail(query: &Message) -> Vec<u8> {
    match reply(query, ResponseCode::ServFail, None) {
        Handled::Reply(bytes) => bytes,
        _ => Vec::new(),
    }
}

/// The labels of `name` before `gn.alt`, lowercased and joined by dots (empty for the apex), or
/// `None` when the name is not under `gn.alt`.
fn ours(name: &Name) -> Option<String> {
    let labels: Vec<&[u8]> = name.iter().collect();
    let (head, tail) = labels.split_at(labels.len().checked_sub(2)?);
    let is = |l: &[u8], s: &str| l.eq_ignore_ascii_case(s.as_bytes());
    match tail {
        [gn, alt] if is(gn, "gn") && is(alt, "alt") => {}
        _ => return None,
    }
    let mut out = String::new();
    for (i, l) in head.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        // A byte outside printable ASCII cannot be in a valid name; keep it visible as `?` so the
        // resolver refuses the name instead of reading another one.
        out.extend(l.iter().map(|b| {
            if b.is_ascii_graphic() {
                char::from(b.to_ascii_lowercase())
            } else {
                '?'
            }
        }));
    }
    Some(out)
}

/// A FORMERR for bytes that did not parse, when they are long enough to carry a query's header.
fn formerr(bytes: &[u8]) -> Handled {
    let (Some(&[a, b]), Some(&flags)) = (bytes.first_chunk::<2>(), bytes.get(2)) else {
        return Handled::Drop;
    };
    // QR set: a response, which is never answered.
    if bytes.len() < 12 || flags & 0x80 != 0 {
        return Handled::Drop;
    }
    let msg = Message::error_msg(
        u16::from_be_bytes([a, b]),
        OpCode::Query,
        ResponseCode::FormErr,
    );
    msg.to_vec().map_or(Handled::Drop, Handled::Reply)
}

fn reply(query: &Message, code: ResponseCode, addr: Option<Ipv6Addr>) -> Handled {
    let mut out = Message::new();
    out.set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_authoritative(code != ResponseCode::Refused)
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(false)
        .set_response_code(code);
    if query.op_code() == OpCode::Query {
        for q in query.queries() {
            out.add_query(q.clone());
        }
    }
    if let (Some(addr), [q]) = (addr, query.queries()) {
        if matches!(q.query_type(), RecordType::AAAA | RecordType::ANY) {
            out.add_answer(Record::from_rdata(
                q.name().clone(),
                TTL,
                RData::AAAA(AAAA(addr)),
            ));
        }
    }
    if query.extensions().is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_PAYLOAD);
        out.set_edns(edns);
    }
    out.to_vec().map_or(Handled::Drop, Handled::Reply)
}

/// A query for `name` of type `qtype`, as a stub resolver sends it (tests and the fuzz seed).
pub fn query_bytes(id: u16, name: &str, qtype: RecordType) -> Option<Vec<u8>> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).ok()?, qtype));
    m.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::KeyName;

    const KEY: &str = "aoqqpp7tzyil4hlq3umoos6atft6jvrqtosq2xy53sdgiesvgg4lwbyb.gn.alt.";

    fn pets() -> Petnames {
        let mut p = Petnames::default();
        p.add_text("alice fd00::1\n", "names").unwrap();
        p
    }

    fn ask(name: &str, qtype: RecordType) -> Message {
        let q = query_bytes(7, name, qtype).unwrap();
        match handle(&q, &pets()) {
            Handled::Reply(b) => Message::from_vec(&b).unwrap(),
            other => panic!("{name}: {other:?}"),
        }
    }

    fn aaaa(m: &Message) -> Vec<Ipv6Addr> {
        m.answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::AAAA(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn answers_known_names() {
        let m = ask("Alice.GN.alt.", RecordType::AAAA);
        assert_eq!(m.id(), 7);
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert!(m.authoritative());
        assert_eq!(aaaa(&m), vec!["fd00::1".parse::<Ipv6Addr>().unwrap()]);
        assert_eq!(m.queries().len(), 1);
        let m = ask(KEY, RecordType::AAAA);
        assert_eq!(
            aaaa(&m),
            vec!["fdfc:a1e2:e67f:8a0d:e83:d03b:4f4e:6587"
                .parse::<Ipv6Addr>()
                .unwrap()]
        );
    }

    /// A key name (or a petname naming one) gives the key the client then expects; a petname to
    /// a bare address, a network name and another domain give none.
    #[test]
    fn a_key_name_gives_its_full_key() {
        let mut p = pets();
        p.add_text(&format!("bob {}\n", KEY.trim_end_matches('.')), "names")
            .unwrap();
        let key_of = |n: &str| asked_key(&query_bytes(1, n, RecordType::AAAA).unwrap(), &p);
        let want = KeyName::parse(KEY.trim_end_matches('.')).unwrap();
        let (a, k) = key_of(KEY).unwrap();
        assert_eq!((a, k), (want.address(), want.key()));
        assert_eq!(key_of("bob.gn.alt."), Some((want.address(), want.key())));
        for other in ["alice.gn.alt.", "cheesy.gn.alt.", "example.com.", "gn.alt."] {
            assert_eq!(key_of(other), None, "{other}");
        }
    }

    #[test]
    fn nodata_for_a_and_other_types() {
        for t in [RecordType::A, RecordType::MX, RecordType::TXT] {
            let m = ask("alice.gn.alt.", t);
            assert_eq!(m.response_code(), ResponseCode::NoError, "{t}");
            assert!(m.answers().is_empty(), "{t}");
        }
        let m = ask("gn.alt.", RecordType::AAAA);
        assert_eq!(m.response_code(), ResponseCode::NoError);
    }

    #[test]
    fn nxdomain_for_missing_names_refused_for_others() {
        for name in ["www.alice.gn.alt.", "bad_name.gn.alt.", "a.b.c.gn.alt."] {
            assert_eq!(
                ask(name, RecordType::AAAA).response_code(),
                ResponseCode::NXDomain
            );
        }
        for name in [
            "example.com.",
            "alice.gn.",
            "gn.",
            "alt.",
            ".",
            "alice.gn.alt.example.",
        ] {
            let m = ask(name, RecordType::AAAA);
            assert_eq!(m.response_code(), ResponseCode::Refused, "{name}");
            assert!(m.answers().is_empty());
        }
    }

    #[test]
    fn network_names_wait_for_the_network() {
        let q = query_bytes(9, "cheesy.gn.alt.", RecordType::AAAA).unwrap();
        let Handled::Network { label, query } = handle(&q, &pets()) else {
            panic!()
        };
        assert_eq!(label, "cheesy");
        let m = Message::from_vec(&finish(&query, None)).unwrap();
        assert_eq!(m.response_code(), ResponseCode::NXDomain);
        let m = Message::from_vec(&finish(&query, Some("fd00::9".parse().unwrap()))).unwrap();
        assert_eq!(aaaa(&m), vec!["fd00::9".parse::<Ipv6Addr>().unwrap()]);
        assert_eq!(m.id(), 9);
    }

    #[test]
    fn garbage_responses_and_odd_opcodes() {
        assert!(matches!(handle(&[], &pets()), Handled::Drop));
        assert!(matches!(handle(&[1, 2, 3], &pets()), Handled::Drop));
        let mut junk = vec![0xab, 0xcd, 0x01, 0x00];
        junk.extend([0xff; 20]);
        let Handled::Reply(b) = handle(&junk, &pets()) else {
            panic!()
        };
        let m = Message::from_vec(&b).unwrap();
        assert_eq!((m.id(), m.response_code()), (0xabcd, ResponseCode::FormErr));
        // A response is never answered (no loops between two servers).
        let mut resp = query_bytes(1, "alice.gn.alt.", RecordType::AAAA).unwrap();
        resp[2] |= 0x80;
        assert!(matches!(handle(&resp, &pets()), Handled::Drop));
        // NOTIFY (opcode 4).
        let mut notify = query_bytes(1, "alice.gn.alt.", RecordType::AAAA).unwrap();
        notify[2] = (notify[2] & 0x87) | (4 << 3);
        let Handled::Reply(b) = handle(&notify, &pets()) else {
            panic!()
        };
        assert_eq!(
            Message::from_vec(&b).unwrap().response_code(),
            ResponseCode::NotImp
        );
        // Two questions.
        let mut m =
            Message::from_vec(&query_bytes(1, "alice.gn.alt.", RecordType::AAAA).unwrap()).unwrap();
        m.add_query(Query::query(
            Name::from_ascii("x.gn.alt.").unwrap(),
            RecordType::A,
        ));
        let Handled::Reply(b) = handle(&m.to_vec().unwrap(), &pets()) else {
            panic!()
        };
        assert_eq!(
            Message::from_vec(&b).unwrap().response_code(),
            ResponseCode::FormErr
        );
    }

    #[test]
    fn edns_is_echoed() {
        let mut m =
            Message::from_vec(&query_bytes(1, "alice.gn.alt.", RecordType::AAAA).unwrap()).unwrap();
        m.set_edns(Edns::new());
        let Handled::Reply(b) = handle(&m.to_vec().unwrap(), &pets()) else {
            panic!()
        };
        let r = Message::from_vec(&b).unwrap();
        assert_eq!(r.extensions().as_ref().unwrap().max_payload(), UDP_PAYLOAD);
    }

    /// The fuzz seeds are queries as a stub resolver writes them (made by hand, not by hickory).
    #[test]
    fn fuzz_seeds_are_real_queries() {
        let seed = include_bytes!("../../fuzz/seeds/dns_query/alice_aaaa");
        let Handled::Reply(b) = handle(seed, &pets()) else {
            panic!()
        };
        assert_eq!(aaaa(&Message::from_vec(&b).unwrap()).len(), 1);
        let seed = include_bytes!("../../fuzz/seeds/dns_query/other_domain");
        let Handled::Reply(b) = handle(seed, &pets()) else {
            panic!()
        };
        assert_eq!(
            Message::from_vec(&b).unwrap().response_code(),
            ResponseCode::Refused
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(0u8.., 0..600)) {
            let _ = handle(&bytes, &pets());
        }
    }
}
