//! SOCKS5 UDP ASSOCIATE (RFC 1928 section 7, docs/decisions.md "Exits"). Names in datagram
//! headers are resolved at the exit, which takes up to 12 s (four tries): each lookup runs on its
//! own while the association goes on relaying other datagrams, and the datagrams for a name wait
//! for its answer (a few, like packets waiting for a circuit).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};

use tokio::io::AsyncReadExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::task::JoinSet;

use super::{exit_allows, group_source, resolve_at_exit, send_reply, Commands};
use crate::exit::policy::PROTO_UDP;
use crate::exit::socks::{parse_udp_header, write_udp_header, Reply, Target, Way};

/// Names an association resolved at the exit or is resolving, at most (a program naming more is
/// refused).
const UDP_NAMES_MAX: usize = 64;
/// Largest datagram relayed: an exit cell carries one packet of at most 1280 bytes.
const UDP_MAX: usize = 1280;
/// Datagrams an association holds while their names resolve, in all; more are dropped (UDP may
/// lose them), so a program cannot make the daemon hold more than this.
const UDP_HELD_MAX: usize = 16;

/// UDP ASSOCIATE (RFC 1928 section 7): a relay socket on the listener's address takes the
/// program's datagrams (from the control connection's host only; from the port it named, if
/// any), and each leaves from the group's inner address, so through the group's circuit to an
/// exit; answers come back with their source in the header. Names are resolved at the exit.
/// The association ends with the control connection. Fragments and overlay destinations are
/// dropped (hidden services are reached over gn0, not through SOCKS datagrams).
pub(super) async fn udp_associate(
    mut s: TcpStream,
    group: u8,
    client_said: &Target,
    commands: Commands,
) -> Result<(), String> {
    let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
    let peer = s.peer_addr().map_err(|e| e.to_string())?;
    let local = s.local_addr().map_err(|e| e.to_string())?;
    let relay = match UdpSocket::bind(SocketAddr::new(local.ip(), 0)).await {
        Ok(r) => r,
        Err(e) => {
            send_reply(&mut s, Reply::GeneralFailure, unspecified).await?;
            return Err(format!("UDP relay socket: {e}"));
        }
    };
    let bound = relay.local_addr().map_err(|e| e.to_string())?;
    let out4 = UdpSocket::bind(SocketAddr::new(group_source(group, unspecified.ip()), 0)).await;
    let out6 = UdpSocket::bind(SocketAddr::new(
        group_source(group, IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)),
        0,
    ))
    .await;
    let (Ok(out4), Ok(out6)) = (out4, out6) else {
        send_reply(&mut s, Reply::GeneralFailure, unspecified).await?;
        return Err("binding the group's addresses (is [outbound] set up?)".into());
    };
    send_reply(&mut s, Reply::Succeeded, bound).await?;
    // The program's port, if it said (RFC 1928: "the client's expected source"); else the first
    // datagram from its host fixes it.
    let program = match client_said {
        Target::Addr(a) if a.port() != 0 => Some(SocketAddr::new(peer.ip(), a.port())),
        _ => None,
    };
    let sockets = Sockets {
        relay: &relay,
        out4: &out4,
        out6: &out6,
    };
    relay_datagrams(
        &mut s,
        sockets,
        peer.ip(),
        program,
        move |name: String| async move { resolve_at_exit(group, &name).await },
        |dst| exit_allows(&commands, group, dst, PROTO_UDP),
    )
    .await
}

/// An association's sockets: the program's side, and the group's IPv4 and IPv6 sources.
#[derive(Clone, Copy)]
struct Sockets<'a> {
    relay: &'a UdpSocket,
    out4: &'a UdpSocket,
    out6: &'a UdpSocket,
}

/// The association's loop until the control connection `s` closes. `resolve` looks a name up
/// (at the exit) and runs as its own task; `allows` asks whether an exit carries a destination.
async fn relay_datagrams<R, RF, A, AF>(
    s: &mut TcpStream,
    sk: Sockets<'_>,
    peer: IpAddr,
    mut program: Option<SocketAddr>,
    resolve: R,
    allows: A,
) -> Result<(), String>
where
    R: Fn(String) -> RF,
    RF: Future<Output = Result<IpAddr, String>> + Send + 'static,
    A: Fn(SocketAddr) -> AF,
    AF: Future<Output = bool>,
{
    let mut names: BTreeMap<String, IpAddr> = BTreeMap::new();
    // Names being resolved, with the (port, data) of datagrams waiting for them.
    let mut pending: BTreeMap<String, Vec<(u16, Vec<u8>)>> = BTreeMap::new();
    let mut held = 0usize;
    let mut lookups: JoinSet<(String, Result<IpAddr, String>)> = JoinSet::new();
    let mut from_program = vec![0u8; UDP_MAX + 300];
    let mut answer4 = vec![0u8; UDP_MAX];
    let mut answer6 = vec![0u8; UDP_MAX];
    let mut back = Vec::with_capacity(UDP_MAX + 22);
    let mut control = [0u8; 64];
    loop {
        tokio::select! {
            r = s.read(&mut control) => {
                // Closed: the end (the lookups are aborted with the set). Bytes on it mean
                // nothing here and are ignored.
                if !matches!(r, Ok(n) if n > 0) {
                    return Ok(());
                }
            }
            Some(done) = lookups.join_next(), if !lookups.is_empty() => {
                let Ok((name, result)) = done else { continue };
                let waiting = pending.remove(&name).unwrap_or_default();
                held = held.saturating_sub(waiting.len());
                match result {
                    Ok(ip) => {
                        names.insert(name, ip);
                        for (port, data) in waiting {
                            forward(sk, &allows, SocketAddr::new(ip, port), &data).await;
                        }
                    }
                    // Not kept: a later datagram asks again.
                    Err(e) => tracing::debug!("SOCKS UDP: resolving {name}: {e}"),
                }
            }
            r = sk.relay.recv_from(&mut from_program) => {
                let (n, from) = r.map_err(|e| e.to_string())?;
                if from.ip() != peer || program.is_some_and(|p| p != from) {
                    continue;
                }
                program = Some(from);
                let datagram = from_program.get(..n).unwrap_or(&[]);
                let Ok((target, used)) = parse_udp_header(datagram) else {
                    continue;
                };
                if target.way() == Way::Overlay {
                    continue;
                }
                let data = datagram.get(used..).unwrap_or(&[]);
                let dst = match target {
                    Target::Addr(a) => a,
                    Target::Name(name, port) => {
                        if let Some(ip) = names.get(&name) {
                            SocketAddr::new(*ip, port)
                        } else {
                            if held >= UDP_HELD_MAX {
                                continue;
                            }
                            if let Some(w) = pending.get_mut(&name) {
                                w.push((port, data.to_vec()));
                            } else if names.len() + pending.len() < UDP_NAMES_MAX {
                                lookups.spawn({
                                    let lookup = resolve(name.clone());
                                    let name = name.clone();
                                    async move { (name, lookup.await) }
                                });
                                pending.insert(name, vec![(port, data.to_vec())]);
                            } else {
                                continue;
                            }
                            held += 1;
                            continue;
                        }
                    }
                };
                forward(sk, &allows, dst, data).await;
            }
            r = sk.out4.recv_from(&mut answer4) => {
                let (n, from) = r.map_err(|e| e.to_string())?;
                relay_back(sk.relay, program, &mut back, from, answer4.get(..n).unwrap_or(&[])).await;
            }
            r = sk.out6.recv_from(&mut answer6) => {
                let (n, from) = r.map_err(|e| e.to_string())?;
                relay_back(sk.relay, program, &mut back, from, answer6.get(..n).unwrap_or(&[])).await;
            }
        }
    }
}

/// One datagram out from the group's address of `dst`'s family, if an exit lets it out.
async fn forward<A, AF>(sk: Sockets<'_>, allows: &A, dst: SocketAddr, data: &[u8])
where
    A: Fn(SocketAddr) -> AF,
    AF: Future<Output = bool>,
{
    if !allows(dst).await {
        tracing::debug!("SOCKS UDP: no exit lets {dst} out");
        return;
    }
    let out = if dst.is_ipv4() { sk.out4 } else { sk.out6 };
    if let Err(e) = out.send_to(data, dst).await {
        tracing::debug!("SOCKS UDP to {dst}: {e}");
    }
}

/// An answer from the outside, with its source in the header, to the program.
async fn relay_back(
    relay: &UdpSocket,
    program: Option<SocketAddr>,
    back: &mut Vec<u8>,
    from: SocketAddr,
    data: &[u8],
) {
    let Some(to) = program else {
        return;
    };
    let from = SocketAddr::new(from.ip().to_canonical(), from.port());
    write_udp_header(back, from);
    back.extend_from_slice(data);
    if let Err(e) = relay.send_to(back, to).await {
        tracing::debug!("SOCKS UDP back to the program: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::net::TcpListener;
    use tokio::sync::Semaphore;

    fn to_name(name: &str, port: u16, data: &[u8]) -> Vec<u8> {
        let mut d = vec![0, 0, 0, 3, name.len() as u8];
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&port.to_be_bytes());
        d.extend_from_slice(data);
        d
    }

    fn to_addr(a: SocketAddr, data: &[u8]) -> Vec<u8> {
        let mut d = Vec::new();
        write_udp_header(&mut d, a);
        d.extend_from_slice(data);
        d
    }

    async fn recv(sock: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = [0u8; 1500];
        let (n, from) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some((buf[..n].to_vec(), from))
    }

    /// A name that takes long to resolve at the exit does not hold the association: a datagram
    /// to an address sent after it goes out at once, the name's datagrams wait for its one
    /// lookup and then go out in order, and answers come back meanwhile.
    #[tokio::test]
    async fn a_datagram_to_an_address_goes_out_while_a_name_resolves() {
        let lo = IpAddr::from([127, 0, 0, 1]);
        let listener = TcpListener::bind((lo, 0)).await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut control, _) = listener.accept().await.unwrap();
        let bind = || UdpSocket::bind((lo, 0));
        let (relay, out4, out6) = (
            bind().await.unwrap(),
            bind().await.unwrap(),
            bind().await.unwrap(),
        );
        let (server, program) = (bind().await.unwrap(), bind().await.unwrap());
        let (relay_at, server_at) = (relay.local_addr().unwrap(), server.local_addr().unwrap());

        // The exit's resolver answers only when the test lets it.
        let gate = Arc::new(Semaphore::new(0));
        let lookups = Arc::new(AtomicUsize::new(0));
        let resolve = {
            let (gate, lookups) = (gate.clone(), lookups.clone());
            move |name: String| {
                let (gate, lookups) = (gate.clone(), lookups.clone());
                async move {
                    assert_eq!(name, "example.com");
                    lookups.fetch_add(1, Ordering::SeqCst);
                    gate.acquire().await.map_err(|e| e.to_string())?.forget();
                    Ok(lo)
                }
            }
        };
        let sockets = Sockets {
            relay: &relay,
            out4: &out4,
            out6: &out6,
        };
        let association =
            relay_datagrams(&mut control, sockets, lo, None, resolve, |_| async { true });
        let test = async {
            let port = server_at.port();
            program
                .send_to(&to_name("example.com", port, b"first"), relay_at)
                .await
                .unwrap();
            program
                .send_to(&to_addr(server_at, b"second"), relay_at)
                .await
                .unwrap();
            let (got, from) = recv(&server).await.expect("the address's datagram waited");
            assert_eq!(got, b"second");
            assert_eq!(from, out4.local_addr().unwrap());
            // An answer comes back while the lookup is still pending.
            server.send_to(b"answer", from).await.unwrap();
            let (back, _) = recv(&program).await.expect("no answer relayed");
            assert_eq!(back, to_addr(server_at, b"answer"));
            // Another datagram to the name waits for the same lookup.
            program
                .send_to(&to_name("example.com", port, b"third"), relay_at)
                .await
                .unwrap();
            program
                .send_to(&to_addr(server_at, b"fourth"), relay_at)
                .await
                .unwrap();
            assert_eq!(recv(&server).await.unwrap().0, b"fourth");
            assert_eq!(lookups.load(Ordering::SeqCst), 1);
            gate.add_permits(1);
            assert_eq!(recv(&server).await.unwrap().0, b"first");
            assert_eq!(recv(&server).await.unwrap().0, b"third");
            // Resolved now: sent at once, with no new lookup.
            program
                .send_to(&to_name("example.com", port, b"fifth"), relay_at)
                .await
                .unwrap();
            assert_eq!(recv(&server).await.unwrap().0, b"fifth");
            assert_eq!(lookups.load(Ordering::SeqCst), 1);
        };
        tokio::select! {
            r = association => panic!("the association ended: {r:?}"),
            () = test => {}
        }
    }
}
