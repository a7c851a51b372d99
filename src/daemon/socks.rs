//! The SOCKS5 server of `[outbound] socks` (docs/decisions.md "Exits"): RFC 1928 CONNECT and UDP
//! ASSOCIATE to IPv4 and IPv6 addresses and to names (resolved at the exit, A then AAAA), RFC
//! 1929 user names as isolation groups (Tor's IsolateSOCKSAuth). Each connection is a kernel TCP
//! socket, and each association's outward side a UDP socket, bound to its group's inner address
//! on gn0; the source rule sends them to gn0, where the node puts each group on its own circuit
//! to an exit. Overlay addresses are connected directly (never through an exit), and overlay
//! names (`*.gn.alt`) are resolved here as the DNS server on gn0 resolves them (petnames, key
//! names, claims through the DHT): never sent to an exit. The messages are parsed by
//! `crate::exit::socks`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::exit::choose::Destination;
use crate::exit::gateway::{client_v4, client_v6, CLIENT_GROUPS, RESOLVER_V4};
use crate::exit::policy::PROTO_TCP;
use crate::exit::socks::{
    parse_greeting, parse_request, parse_userpass, reply, Command, Parsed, Reply, Target, Way,
    METHOD_UNACCEPTABLE, METHOD_USERPASS, SOCKS_MAX_MESSAGE,
};

mod udp;

/// The link task's command channel (asks whether an exit would carry a destination).
type Commands = mpsc::Sender<super::Command>;

/// How long a CONNECT may take (the exit circuit may be building).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for the exit's resolver before asking again.
const DNS_RETRY: Duration = Duration::from_millis(1500);
/// How long a client may take to say what it wants.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// User names and their isolation groups (2..=`CLIENT_GROUPS`; group 1 has no name), first come.
type Groups = Arc<Mutex<BTreeMap<Vec<u8>, u8>>>;

/// Accepts SOCKS connections until the daemon stops.
pub(super) async fn serve(listener: std::net::TcpListener, state: Arc<super::NodeState>) {
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
                let state = state.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(s, groups, state).await {
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

/// Asks the exit's virtual resolver for `name`'s address, from isolation group `group`'s
/// address (so the query rides the group's circuit, as its connection will): an IPv4 address
/// if the name has one, else an IPv6 one (a v6-only name).
async fn resolve_at_exit(group: u8, name: &str) -> Result<IpAddr, String> {
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;
    let sock = UdpSocket::bind(SocketAddr::new(IpAddr::V4(client_v4(group)), 0))
        .await
        .map_err(|e| e.to_string())?;
    let fqdn = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    let (a, code) = ask_exit(&sock, &fqdn, RecordType::A).await?;
    if let Some(ip) = a {
        return Ok(ip);
    }
    if code == ResponseCode::NXDomain {
        return Err(format!("no address ({code})"));
    }
    match ask_exit(&sock, &fqdn, RecordType::AAAA).await? {
        (Some(ip), _) => Ok(ip),
        (None, code) => Err(format!("no address ({code})")),
    }
}

/// One question to the exit's resolver: the first address of type `kind` in the answer, and
/// the answer's code.
async fn ask_exit(
    sock: &UdpSocket,
    fqdn: &str,
    kind: hickory_proto::rr::RecordType,
) -> Result<(Option<IpAddr>, hickory_proto::op::ResponseCode), String> {
    use hickory_proto::op::Message;
    use hickory_proto::rr::RData;
    use rand::RngCore;
    let id = (rand::rngs::OsRng.next_u32() & 0xffff) as u16;
    let query = crate::names::dns::query_bytes(id, fqdn, kind)
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
        let ip = m.answers().iter().find_map(|r| match r.data() {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        });
        return Ok((ip, m.response_code()));
    }
    Err("the exit's resolver did not answer".into())
}

/// Whether an exit would carry `dst` (`proto`) for `group`, asked of the link task.
async fn exit_allows(commands: &Commands, group: u8, dst: SocketAddr, proto: u8) -> bool {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let ask = super::Command::ExitAllows {
        group,
        dst: Destination {
            ip: dst.ip(),
            proto,
            port: dst.port(),
        },
        reply: tx,
    };
    // If the link task cannot answer, let the packet path decide (it refuses with ICMP).
    commands.send(ask).await.is_err() || rx.await.unwrap_or(true)
}

/// The inner source address of `group` for a destination of `ip`'s family.
fn group_source(group: u8, ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(client_v4(group)),
        IpAddr::V6(_) => IpAddr::V6(client_v6(group)),
    }
}

/// How long a network-issued overlay name may wait for the DHT.
const OVERLAY_NAME_WAIT: Duration = Duration::from_secs(8);

/// An overlay name's address, resolved on this node like the DNS server on gn0 does; with a
/// name that carries the full key (a key name, a petname to one, a claim) the node is told to
/// accept only that key's descriptors for the address.
async fn resolve_overlay(state: &super::NodeState, name: &str) -> Result<IpAddr, String> {
    use crate::names::{network::NetAnswer, resolve_local, Local};
    // The petnames' guard must not live across the wait below.
    let local = resolve_local(name, &state.pets());
    let (address, key) = match local {
        Ok(Local::Found(r)) => (r.address, r.key.map(|k| k.key())),
        Ok(Local::Network(label)) => {
            match super::names::lookup(&state.commands, label, OVERLAY_NAME_WAIT).await {
                NetAnswer::Owner { key, .. } => {
                    let k = super::names::key_name(&key)
                        .ok_or_else(|| format!("{name}: the claim's key is not usable"))?;
                    (k.address(), Some(k.key()))
                }
                NetAnswer::NoSuchName => return Err(format!("{name}: no such name")),
                NetAnswer::Unavailable(why) => return Err(format!("{name}: {why}")),
            }
        }
        Ok(Local::NotFound) => return Err(format!("{name}: no such name")),
        Err(e) => return Err(format!("{name}: {e}")),
    };
    if let Some(key) = key {
        super::dns::expect_key(&state.commands, address, key);
    }
    Ok(IpAddr::V6(address))
}

async fn connection(
    mut s: TcpStream,
    groups: Groups,
    state: Arc<super::NodeState>,
) -> Result<(), String> {
    let commands = state.commands.clone();
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
    if request.command == Command::UdpAssociate {
        return udp::udp_associate(s, group, &request.target, commands).await;
    }
    let dst = match &request.target {
        Target::Addr(a) => *a,
        // Resolved at the exit, through the group's own circuit: never here, where the query
        // would leave outside the overlay.
        Target::Name(name, port) if request.target.way() == Way::Exit => {
            match resolve_at_exit(group, name).await {
                Ok(ip) => SocketAddr::new(ip, *port),
                Err(e) => {
                    send_reply(&mut s, Reply::HostUnreachable, unspecified).await?;
                    return Err(format!("resolving {name} at the exit: {e}"));
                }
            }
        }
        Target::Name(name, port) => match resolve_overlay(&state, name).await {
            Ok(ip) => SocketAddr::new(ip, *port),
            Err(e) => {
                send_reply(&mut s, Reply::HostUnreachable, unspecified).await?;
                return Err(e);
            }
        },
    };
    if request.target.way() == Way::Exit && !exit_allows(&commands, group, dst, PROTO_TCP).await {
        send_reply(&mut s, Reply::NotAllowed, unspecified).await?;
        return Err(format!("no exit lets {dst} out"));
    }
    let socket = match dst.ip() {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| e.to_string())?;
    if request.target.way() == Way::Exit {
        socket
            .bind(SocketAddr::new(group_source(group, dst.ip()), 0))
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
