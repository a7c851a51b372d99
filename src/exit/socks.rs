//! The SOCKS5 wire format (RFC 1928, and RFC 1929 user names for isolation): the messages a local
//! program sends to `[outbound] socks`, parsed without I/O. Every parser takes the bytes read so
//! far and answers "need more", a message and its length, or an error with the reply to send.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// SOCKS version byte.
pub const SOCKS_VERSION: u8 = 5;
/// Method: no authentication.
pub const METHOD_NONE: u8 = 0x00;
/// Method: user name and password (RFC 1929); the name picks the isolation group.
pub const METHOD_USERPASS: u8 = 0x02;
/// Method reply: no acceptable method.
pub const METHOD_UNACCEPTABLE: u8 = 0xff;
/// Longest greeting, user/password message and request (a 255-byte name plus the fixed part).
pub const SOCKS_MAX_MESSAGE: usize = 513;

/// Reply codes (RFC 1928 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    /// Succeeded.
    Succeeded = 0x00,
    /// General failure.
    GeneralFailure = 0x01,
    /// Not allowed by ruleset: no exit lets the destination out.
    NotAllowed = 0x02,
    /// Network unreachable.
    NetworkUnreachable = 0x03,
    /// Host unreachable (also: the name does not resolve).
    HostUnreachable = 0x04,
    /// Connection refused.
    ConnectionRefused = 0x05,
    /// TTL expired (used for timeouts).
    TtlExpired = 0x06,
    /// Command not supported.
    CommandNotSupported = 0x07,
    /// Address type not supported.
    AddressTypeNotSupported = 0x08,
}

/// Why a message was refused, and the reply it earns (none: close the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bad SOCKS message: {what}")]
pub struct SocksError {
    /// What was wrong.
    pub what: &'static str,
    /// The reply to send before closing, if the request stage was reached.
    pub reply: Option<Reply>,
}

fn bad(what: &'static str) -> SocksError {
    SocksError { what, reply: None }
}

fn refuse(what: &'static str, reply: Reply) -> SocksError {
    SocksError {
        what,
        reply: Some(reply),
    }
}

/// What a parser found: a message and the bytes it used, or a need for more.
pub type Parsed<T> = Result<Option<(T, usize)>, SocksError>;

/// The client's greeting: which methods it offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// Whether it offers "no authentication".
    pub none: bool,
    /// Whether it offers user name and password.
    pub userpass: bool,
}

impl Greeting {
    /// The method we pick: user/password when offered (so isolation works), else none.
    pub fn method(&self) -> u8 {
        if self.userpass {
            METHOD_USERPASS
        } else if self.none {
            METHOD_NONE
        } else {
            METHOD_UNACCEPTABLE
        }
    }
}

/// Parses the greeting: VER, NMETHODS, METHODS.
pub fn parse_greeting(b: &[u8]) -> Parsed<Greeting> {
    let Some((&ver, rest)) = b.split_first() else {
        return Ok(None);
    };
    if ver != SOCKS_VERSION {
        return Err(bad("not SOCKS version 5"));
    }
    let Some((&n, rest)) = rest.split_first() else {
        return Ok(None);
    };
    if n == 0 {
        return Err(bad("no methods offered"));
    }
    let Some(methods) = rest.get(..usize::from(n)) else {
        return Ok(None);
    };
    Ok(Some((
        Greeting {
            none: methods.contains(&METHOD_NONE),
            userpass: methods.contains(&METHOD_USERPASS),
        },
        2 + usize::from(n),
    )))
}

/// Parses the RFC 1929 sub-negotiation: VER 1, ULEN, UNAME, PLEN, PASSWD. Returns the user
/// name; the password is ignored (the name only chooses an isolation group).
pub fn parse_userpass(b: &[u8]) -> Parsed<Vec<u8>> {
    let Some((&ver, rest)) = b.split_first() else {
        return Ok(None);
    };
    if ver != 1 {
        return Err(bad("not user/password version 1"));
    }
    let Some((&ulen, rest)) = rest.split_first() else {
        return Ok(None);
    };
    let ulen = usize::from(ulen);
    let Some(name) = rest.get(..ulen) else {
        return Ok(None);
    };
    let Some(&plen) = rest.get(ulen) else {
        return Ok(None);
    };
    let used = 3 + ulen + usize::from(plen);
    if b.len() < used {
        return Ok(None);
    }
    Ok(Some((name.to_vec(), used)))
}

/// A destination as the program names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An address and port.
    Addr(SocketAddr),
    /// A domain name (lower case, checked) and port.
    Name(String, u16),
}

/// Where a target goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// A hidden service: an fd00::/8 address, or a `.gn.alt` name resolved locally (src/names);
    /// never sent to an exit.
    Overlay,
    /// Through an exit; names are resolved there.
    Exit,
}

impl Target {
    /// Where it goes.
    pub fn way(&self) -> Way {
        match self {
            Target::Addr(a) => match a.ip() {
                IpAddr::V6(v6) if crate::crypto::is_overlay(&v6) => Way::Overlay,
                _ => Way::Exit,
            },
            Target::Name(n, _) if n == "gn.alt" || n.ends_with(".gn.alt") => Way::Overlay,
            Target::Name(..) => Way::Exit,
        }
    }
}

/// SOCKS commands we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// CONNECT.
    Connect,
    /// UDP ASSOCIATE.
    UdpAssociate,
}

/// A request: VER, CMD, RSV, ATYP, DST.ADDR, DST.PORT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The command.
    pub command: Command,
    /// The destination.
    pub target: Target,
}

/// Parses a request. Refusals carry the reply RFC 1928 gives them.
pub fn parse_request(b: &[u8]) -> Parsed<Request> {
    let Some(&[ver, cmd, rsv, atyp]) = b.get(..4) else {
        return Ok(None);
    };
    if ver != SOCKS_VERSION {
        return Err(refuse("not SOCKS version 5", Reply::GeneralFailure));
    }
    if rsv != 0 {
        return Err(refuse("reserved byte set", Reply::GeneralFailure));
    }
    let command = match cmd {
        1 => Command::Connect,
        3 => Command::UdpAssociate,
        _ => return Err(refuse("command not supported", Reply::CommandNotSupported)),
    };
    let rest = b.get(4..).unwrap_or(&[]);
    Ok(parse_address(atyp, rest)?.map(|(target, n)| (Request { command, target }, 4 + n)))
}

/// Parses ATYP's DST.ADDR and DST.PORT from `rest` (the bytes after ATYP): the target and the
/// bytes used, or a need for more.
fn parse_address(atyp: u8, rest: &[u8]) -> Parsed<Target> {
    let (addr_len, addr) = match atyp {
        1 => (4, rest.get(..4)),
        4 => (16, rest.get(..16)),
        3 => match rest.split_first() {
            None => return Ok(None),
            Some((&0, _)) => {
                return Err(refuse("empty domain name", Reply::GeneralFailure));
            }
            Some((&n, tail)) => (1 + usize::from(n), tail.get(..usize::from(n))),
        },
        _ => {
            return Err(refuse(
                "address type not supported",
                Reply::AddressTypeNotSupported,
            ))
        }
    };
    let (Some(addr), Some(&[hi, lo])) = (addr, rest.get(addr_len..addr_len + 2)) else {
        return Ok(None);
    };
    let port = u16::from_be_bytes([hi, lo]);
    let target = match atyp {
        1 => {
            let o: [u8; 4] = addr.try_into().map_err(|_| bad("IPv4 address"))?;
            Target::Addr(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(o)), port))
        }
        4 => {
            let o: [u8; 16] = addr.try_into().map_err(|_| bad("IPv6 address"))?;
            Target::Addr(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port))
        }
        _ => name_target(addr, port)?,
    };
    Ok(Some((target, addr_len + 2)))
}

/// Parses the header of a datagram a program sends to a UDP ASSOCIATE relay (RFC 1928 section
/// 7): RSV (2), FRAG, ATYP, DST.ADDR, DST.PORT. Returns the target and the header's length (the
/// data follows). Fragments (FRAG != 0) are refused, as the RFC allows: we never reassemble.
pub fn parse_udp_header(b: &[u8]) -> Result<(Target, usize), SocksError> {
    let Some(&[r0, r1, frag, atyp]) = b.get(..4) else {
        return Err(bad("datagram shorter than its header"));
    };
    if r0 != 0 || r1 != 0 {
        return Err(bad("reserved bytes set"));
    }
    if frag != 0 {
        return Err(bad("fragmented datagram"));
    }
    match parse_address(atyp, b.get(4..).unwrap_or(&[]))? {
        Some((target, n)) => Ok((target, 4 + n)),
        None => Err(bad("datagram shorter than its header")),
    }
}

/// Writes the header of a datagram from `from` to the program (RFC 1928 section 7) into `out`
/// (cleared first); the data goes after it.
pub fn write_udp_header(out: &mut Vec<u8>, from: SocketAddr) {
    out.clear();
    out.extend_from_slice(&[0, 0, 0]);
    match from.ip() {
        IpAddr::V4(a) => {
            out.push(1);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out.push(4);
            out.extend_from_slice(&a.octets());
        }
    }
    out.extend_from_slice(&from.port().to_be_bytes());
}

/// A domain name from a request: an IP literal becomes an address; otherwise LDH labels (and
/// `_`), 1 to 63 bytes each, lower-cased, one optional trailing dot.
fn name_target(raw: &[u8], port: u16) -> Result<Target, SocksError> {
    let text = std::str::from_utf8(raw)
        .map_err(|_| refuse("domain name not ASCII", Reply::HostUnreachable))?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(Target::Addr(SocketAddr::new(ip, port)));
    }
    let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || !name.split('.').all(label_ok) {
        return Err(refuse("malformed domain name", Reply::HostUnreachable));
    }
    Ok(Target::Name(name, port))
}

/// A reply: VER, REP, RSV, ATYP, BND.ADDR, BND.PORT. Returns the buffer and its used length.
pub fn reply(code: Reply, bound: SocketAddr) -> ([u8; 22], usize) {
    let mut out = [0u8; 22];
    out[0] = SOCKS_VERSION;
    out[1] = code as u8;
    let port = bound.port().to_be_bytes();
    match bound.ip() {
        IpAddr::V4(a) => {
            out[3] = 1;
            out[4..8].copy_from_slice(&a.octets());
            out[8..10].copy_from_slice(&port);
            (out, 10)
        }
        IpAddr::V6(a) => {
            out[3] = 4;
            out[4..20].copy_from_slice(&a.octets());
            out[20..22].copy_from_slice(&port);
            (out, 22)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn udp_headers() {
        let to: SocketAddr = "[2001:db8:250::2]:443".parse().unwrap();
        let mut d = Vec::new();
        write_udp_header(&mut d, to);
        assert_eq!(d.len(), 22);
        d.extend_from_slice(b"hi");
        assert_eq!(parse_udp_header(&d), Ok((Target::Addr(to), 22)));
        let mut v4 = Vec::new();
        write_udp_header(&mut v4, "198.19.250.2:443".parse().unwrap());
        assert_eq!(v4, [0, 0, 0, 1, 198, 19, 250, 2, 1, 187]);
        let named = [&[0u8, 0, 0, 3, 7][..], b"a.b.com", &[0, 53], b"q"].concat();
        assert_eq!(
            parse_udp_header(&named),
            Ok((Target::Name("a.b.com".into(), 53), 14))
        );
        // A fragment, reserved bytes, truncations: refused, never a panic.
        let mut frag = v4.clone();
        frag[2] = 1;
        assert!(parse_udp_header(&frag).is_err());
        let mut rsv = v4.clone();
        rsv[0] = 1;
        assert!(parse_udp_header(&rsv).is_err());
        for n in 0..v4.len() {
            assert!(parse_udp_header(&v4[..n]).is_err(), "{n}");
        }
    }

    #[test]
    fn greetings() {
        assert_eq!(parse_greeting(&[]), Ok(None));
        assert_eq!(parse_greeting(&[5, 2, 0]), Ok(None));
        let (g, n) = parse_greeting(&[5, 2, 0, 2, 99]).unwrap().unwrap();
        assert_eq!((g.method(), n), (METHOD_USERPASS, 4));
        let (g, _) = parse_greeting(&[5, 1, 0]).unwrap().unwrap();
        assert_eq!(g.method(), METHOD_NONE);
        let (g, _) = parse_greeting(&[5, 1, 1]).unwrap().unwrap();
        assert_eq!(g.method(), METHOD_UNACCEPTABLE);
        assert!(parse_greeting(&[4, 1, 0]).is_err());
        assert!(parse_greeting(&[5, 0]).is_err());
    }

    #[test]
    fn user_names() {
        let msg = [1, 5, b'a', b'l', b'i', b'c', b'e', 2, b'p', b'w'];
        assert_eq!(
            parse_userpass(&msg),
            Ok(Some((b"alice".to_vec(), msg.len())))
        );
        for n in 0..msg.len() {
            assert_eq!(parse_userpass(&msg[..n]), Ok(None), "{n}");
        }
        assert!(parse_userpass(&[5, 0, 0]).is_err());
        assert_eq!(parse_userpass(&[1, 0, 0]), Ok(Some((vec![], 3))));
    }

    #[test]
    fn requests() {
        let v4 = [5, 1, 0, 1, 198, 19, 250, 2, 0, 80];
        let (r, n) = parse_request(&v4).unwrap().unwrap();
        assert_eq!(n, v4.len());
        assert_eq!(r.command, Command::Connect);
        assert_eq!(r.target, Target::Addr("198.19.250.2:80".parse().unwrap()));
        assert_eq!(r.target.way(), Way::Exit);

        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&"fd52:b1e::9a33".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0, 22]);
        let (r, _) = parse_request(&v6).unwrap().unwrap();
        assert_eq!(r.target.way(), Way::Overlay);

        let mut name = vec![5, 1, 0, 3, 15];
        name.extend_from_slice(b"WWW.Example.COM");
        name.extend_from_slice(&[1, 187]);
        let (r, _) = parse_request(&name).unwrap().unwrap();
        assert_eq!(r.target, Target::Name("www.example.com".into(), 443));
        assert_eq!(r.target.way(), Way::Exit);

        let mut gn = vec![5, 1, 0, 3, 12];
        gn.extend_from_slice(b"alice.gn.alt");
        gn.extend_from_slice(&[0, 80]);
        assert_eq!(
            parse_request(&gn).unwrap().unwrap().0.target.way(),
            Way::Overlay
        );

        let mut literal = vec![5, 1, 0, 3, 7];
        literal.extend_from_slice(b"1.2.3.4");
        literal.extend_from_slice(&[0, 80]);
        assert_eq!(
            parse_request(&literal).unwrap().unwrap().0.target,
            Target::Addr("1.2.3.4:80".parse().unwrap())
        );
        for n in 0..name.len() {
            assert_eq!(parse_request(&name[..n]), Ok(None), "{n}");
        }
    }

    #[test]
    fn malformed_requests_get_the_right_reply() {
        let reply_of = |b: &[u8]| parse_request(b).unwrap_err().reply;
        assert_eq!(reply_of(&[5, 2, 0, 1]), Some(Reply::CommandNotSupported)); // BIND
        assert_eq!(reply_of(&[5, 9, 0, 1]), Some(Reply::CommandNotSupported));
        assert_eq!(
            reply_of(&[5, 1, 0, 2]),
            Some(Reply::AddressTypeNotSupported)
        );
        assert_eq!(reply_of(&[5, 1, 1, 1]), Some(Reply::GeneralFailure));
        assert_eq!(reply_of(&[4, 1, 0, 1]), Some(Reply::GeneralFailure));
        assert_eq!(
            reply_of(&[5, 1, 0, 3, 0, 0, 80]),
            Some(Reply::GeneralFailure)
        );
        for bad_name in [&b"a..b"[..], b"-a.com", b"a b", b"\xff\xfe", b"a/b", b"."] {
            let mut m = vec![5, 1, 0, 3, bad_name.len() as u8];
            m.extend_from_slice(bad_name);
            m.extend_from_slice(&[0, 80]);
            assert_eq!(reply_of(&m), Some(Reply::HostUnreachable), "{bad_name:?}");
        }
        let long = vec![b'a'; 64];
        let mut m = vec![5, 1, 0, 3, 64];
        m.extend_from_slice(&long);
        m.extend_from_slice(&[0, 80]);
        assert_eq!(reply_of(&m), Some(Reply::HostUnreachable));
    }

    #[test]
    fn replies() {
        let (b, n) = reply(Reply::NotAllowed, "127.0.0.1:1080".parse().unwrap());
        assert_eq!(&b[..n], &[5, 2, 0, 1, 127, 0, 0, 1, 4, 56]);
        let (_, n) = reply(Reply::Succeeded, "[::1]:1".parse().unwrap());
        assert_eq!(n, 22);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            for parsed in [parse_greeting(&b).map(|o| o.map(|x| x.1)),
                           parse_userpass(&b).map(|o| o.map(|x| x.1)),
                           parse_request(&b).map(|o| o.map(|x| x.1))] {
                if let Ok(Some(n)) = parsed {
                    prop_assert!(n <= b.len() && n <= SOCKS_MAX_MESSAGE);
                }
            }
        }

        #[test]
        fn requests_near_valid_never_panic(
            cmd in 0u8..5, atyp in 0u8..6, len in any::<u8>(),
            body in proptest::collection::vec(any::<u8>(), 0..300)
        ) {
            let mut b = vec![5, cmd, 0, atyp, len];
            b.extend_from_slice(&body);
            let _ = parse_request(&b);
        }
    }
}
