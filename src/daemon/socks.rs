//! The SOCKS5 server of `[outbound] socks` (docs/decisions.md "Exits"): RFC 1928 CONNECT to IPv4
//! and IPv6 addresses, RFC 1929 user names as isolation groups (Tor's IsolateSOCKSAuth). Each
//! connection is a kernel TCP socket bound to its group's inner address on gn0; the source rule
//! sends it to gn0, where the node puts each group on its own circuit to an exit. Overlay
//! addresses are connected directly (never through an exit). The messages are parsed by
//! `crate::exit::socks`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::exit::gateway::{client_v4, client_v6, CLIENT_GROUPS, RESOLVER_V4};
use crate::exit::socks::{
    parse_greeting, parse_request, parse_userpass, reply, Command, Parsed, Reply, Target, Way,
    METHOD_UNACCEPTABLE, METHOD_USERPASS, SOCKS_MAX_MESSAGE,
};

/// How long a CONNECT may take (the exit circuit may be building).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for the exit's resolver before asking again.
const DNS_RETRY: Duration = Duration::from_millis(1500);
/// How long a client may take to say what it wants.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// User names and their isolation groups (2..=`CLIENT_GROUPS`; group 1 has no name), first come.
type Groups = Arc<Mutex<BTreeMap<Vec<u8>, u8>>>;

/// Accepts SOCKS connections until the daemon stops.
pub(super) async fn serve(listener: std::net::TcpListener) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("SOCKS listener: {e}");
            return;
        }
    };
    let groups: Groups = Arc::default();
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                let groups = groups.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(s, groups).await {
                        tracing::debug!("SOCKS connection: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::debug!("SOCKS accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads until `parse` has a message; returns it and drops its bytes from `buf`.
async fn read_message<T>(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    parse: fn(&[u8]) -> Parsed<T>,
) -> Result<Result<T, Option<Reply>>, String> {
    loop {
        match parse(buf) {
            Ok(Some((m, used))) => {
                buf.drain(..used.min(buf.len()));
                return Ok(Ok(m));
            }
            Ok(None) => {}
            Err(e) => return Ok(Err(e.reply)),
        }
        if buf.len() >= SOCKS_MAX_MESSAGE {
            return Err("SOCKS message too long".into());
        }
        let mut chunk = [0u8; SOCKS_MAX_MESSAGE];
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed during the handshake".into());
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
    }
}

fn group_for(groups: &Groups, name: &[u8]) -> Option<u8> {
    if name.is_empty() {
        return Some(1);
    }
    let mut g = groups.lock().ok()?;
    if let Some(&k) = g.get(name) {
        return Some(k);
    }
    let next = u8::try_from(g.len() + 2)
        .ok()
        .filter(|&k| k <= CLIENT_GROUPS)?;
    g.insert(name.to_vec(), next);
    Some(next)
}

async fn send_reply(s: &mut TcpStream, code: Reply, bound: SocketAddr) -> Result<(), String> {
    let (b, n) = reply(code, bound);
    s.write_all(b.get(..n).unwrap_or(&[]))
        .await
        .map_err(|e| e.to_string())
}

fn reply_for(e: &std::io::Error) -> Reply {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => Reply::ConnectionRefused,
        Some(libc::ENETUNREACH) => Reply::NetworkUnreachable,
        Some(libc::EHOSTUNREACH) => Reply::HostUnreachable,
        Some(libc::EACCES) | Some(libc::EPERM) => Reply::NotAllowed,
        _ => Reply::GeneralFailure,
    }
}

/// Asks the exit's virtual resolver for `name`'s IPv4 address, from isolation group `group`'s
/// address (so the query rides the group's circuit, as its connection will).
async fn resolve_at_exit(group: u8, name: &str) -> Result<std::net::Ipv4Addr, String> {
    use hickory_proto::op::Message;
    use hickory_proto::rr::{RData, RecordType};
    use rand::RngCore;
    let sock = tokio::net::UdpSocket::bind(SocketAddr::new(IpAddr::V4(client_v4(group)), 0))
        .await
        .map_err(|e| e.to_string())?;
    let id = (rand::rngs::OsRng.next_u32() & 0xffff) as u16;
    let fqdn = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    let query = crate::names::dns::query_bytes(id, &fqdn, RecordType::A)
        .ok_or_else(|| "not a domain name".to_string())?;
    let mut buf = [0u8; 1500];
    // The first query of a new group may be dropped while its circuit is built.
    for _ in 0..4 {
        sock.send_to(&query, (RESOLVER_V4, 53))
            .await
            .map_err(|e| e.to_string())?;
        let Ok(Ok(n)) = tokio::time::timeout(DNS_RETRY, sock.recv(&mut buf)).await else {
            continue;
        };
        let Ok(m) = Message::from_vec(buf.get(..n).unwrap_or(&[])) else {
            continue;
        };
        if m.id() != id {
            continue;
        }
        return m
            .answers()
            .iter()
            .find_map(|r| match r.data() {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .ok_or_else(|| format!("no address ({})", m.response_code()));
    }
    Err("the exit's resolver did not answer".into())
}

async fn connection(mut s: TcpStream, groups: Groups) -> Result<(), String> {
    let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
    let mut buf = Vec::with_capacity(SOCKS_MAX_MESSAGE);
    let handshake = async {
        let greeting = match read_message(&mut s, &mut buf, parse_greeting).await? {
            Ok(g) => g,
            Err(_) => return Err("bad greeting".to_string()),
        };
        let method = greeting.method();
        s.write_all(&[5, method]).await.map_err(|e| e.to_string())?;
        if method == METHOD_UNACCEPTABLE {
            return Err("no acceptable method".into());
        }
        let group = if method == METHOD_USERPASS {
            let name = match read_message(&mut s, &mut buf, parse_userpass).await? {
                Ok(n) => n,
                Err(_) => return Err("bad user name message".into()),
            };
            let group = group_for(&groups, &name);
            let status = if group.is_some() { 0 } else { 1 };
            s.write_all(&[1, status]).await.map_err(|e| e.to_string())?;
            group.ok_or("no isolation group left for another user name")?
        } else {
            1
        };
        let request = match read_message(&mut s, &mut buf, parse_request).await? {
            Ok(r) => r,
            Err(code) => {
                send_reply(&mut s, code.unwrap_or(Reply::GeneralFailure), unspecified).await?;
                return Err("bad request".into());
            }
        };
        Ok((group, request))
    };
    let (group, request) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| "handshake timed out".to_string())??;
    if request.command != Command::Connect {
        send_reply(&mut s, Reply::CommandNotSupported, unspecified).await?;
        return Err("only CONNECT is supported".into());
    }
    let dst = match &request.target {
        Target::Addr(a) => *a,
        // Resolved at the exit, through the group's own circuit: never here, where the query
        // would leave outside the overlay.
        Target::Name(name, port) if request.target.way() == Way::Exit => {
            match resolve_at_exit(group, name).await {
                Ok(ip) => SocketAddr::new(IpAddr::V4(ip), *port),
                Err(e) => {
                    send_reply(&mut s, Reply::HostUnreachable, unspecified).await?;
                    return Err(format!("resolving {name} at the exit: {e}"));
                }
            }
        }
        Target::Name(..) => {
            // Overlay names through SOCKS are not built yet (use gn0 and the gn.alt resolver).
            send_reply(&mut s, Reply::AddressTypeNotSupported, unspecified).await?;
            return Err("overlay names through SOCKS are not supported yet".into());
        }
    };
    let socket = match dst.ip() {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| e.to_string())?;
    if request.target.way() == Way::Exit {
        let src = match dst.ip() {
            IpAddr::V4(_) => IpAddr::V4(client_v4(group)),
            IpAddr::V6(_) => IpAddr::V6(client_v6(group)),
        };
        socket
            .bind(SocketAddr::new(src, 0))
            .map_err(|e| e.to_string())?;
    }
    let out = match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(dst)).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            send_reply(&mut s, reply_for(&e), unspecified).await?;
            return Err(format!("connect to the destination: {e}"));
        }
        Err(_) => {
            send_reply(&mut s, Reply::TtlExpired, unspecified).await?;
            return Err("connect timed out".into());
        }
    };
    let bound = out.local_addr().unwrap_or(unspecified);
    send_reply(&mut s, Reply::Succeeded, bound).await?;
    let mut out = out;
    if !buf.is_empty() {
        out.write_all(&buf).await.map_err(|e| e.to_string())?;
    }
    tokio::io::copy_bidirectional(&mut s, &mut out)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
