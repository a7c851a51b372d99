//! The DNS server's socket on gn0 and its registration with systemd-resolved (docs/protocol.md
//! 18.4). The answers are [`crate::names::dns`]'s; this file only moves datagrams.
//!
//! Only this host reaches the socket: it is bound to the node's overlay address, and packets from
//! the overlay to a port that `[expose]` does not list are refused by the flow layer before they
//! reach the kernel.

use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;

use super::Command;
use super::NodeState;
use crate::names::dns::{asked_key, finish, handle, servfail, Handled};
use crate::names::network::NetAnswer;
use std::time::Duration;

/// The DNS port: stub resolvers (glibc's, systemd-resolved's upstream) only ask port 53.
pub const DNS_PORT: u16 = 53;

/// Binds `[address]:53` before the privilege drop (port 53 needs root or CAP_NET_BIND_SERVICE).
/// A failure leaves the node running without DNS: names still resolve with `globalnet resolve`.
pub(super) fn bind(address: Ipv6Addr) -> Option<UdpSocket> {
    let at = SocketAddr::from((address, DNS_PORT));
    match UdpSocket::bind(at).and_then(|s| s.set_nonblocking(true).map(|()| s)) {
        Ok(s) => {
            tracing::info!(%at, "DNS for gn.alt");
            Some(s)
        }
        Err(e) => {
            tracing::warn!(
                %at,
                error = %e,
                "no DNS for gn.alt on gn0 (binding port 53 needs root or CAP_NET_BIND_SERVICE); `globalnet resolve` still works"
            );
            None
        }
    }
}

/// Tells systemd-resolved, when it runs, to send `*.gn.alt` (and only that: a routing-only
/// domain) to the server on `ifname`. Best effort and logged: without resolved, /etc/resolv.conf
/// or nsswitch does it (README). resolved forgets it when gn0 goes away.
pub(super) fn register_with_resolved(ifname: &str, address: Ipv6Addr) {
    if !std::path::Path::new("/run/systemd/resolve/io.systemd.Resolve").exists() {
        tracing::debug!("systemd-resolved is not running; not registering gn.alt with it");
        return;
    }
    // resolvectl names the link by its index in our namespace and resolved reads it in its own:
    // from another namespace (a test, a container) that would configure some unrelated link.
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
    if let (Some(own), Some(init)) = (ns("self"), ns("1")) {
        if own != init {
            tracing::debug!("not in the host's network namespace; not registering with resolved");
            return;
        }
    }
    // resolvectl needs no capability (resolved checks it over D-Bus/polkit), yet a child inherits
    // the ambient set the unit grants (CAP_NET_ADMIN, CAP_NET_BIND_SERVICE). The daemon's own
    // permitted and effective sets do not depend on it, and the privilege drop clears it anyway.
    if let Err(e) = caps::clear(None, caps::CapSet::Ambient) {
        tracing::warn!(error = %e, "could not clear the ambient capabilities; not running resolvectl");
        return;
    }
    let run = |args: &[&str]| -> Result<(), String> {
        let out = std::process::Command::new("resolvectl")
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    };
    let addr = address.to_string();
    let result = run(&["dns", ifname, &addr])
        .and_then(|()| run(&["domain", ifname, "~gn.alt"]))
        .and_then(|()| run(&["default-route", ifname, "false"]));
    match result {
        Ok(()) => tracing::info!(ifname, "registered ~gn.alt with systemd-resolved"),
        Err(e) => tracing::warn!(
            ifname,
            error = %e,
            "could not register ~gn.alt with systemd-resolved; see the README for resolv.conf"
        ),
    }
}

/// How long a query for a network-issued name waits for the DHT: under the 5 s after which stub
/// resolvers (glibc, resolved) give up or retry. Past it the answer is SERVFAIL (the name may
/// exist; a retry finds the answer cached once the lookup ends), never NXDOMAIN.
pub const DNS_WAIT: Duration = Duration::from_secs(4);
/// Queries waiting for the DHT at once; more get SERVFAIL at once.
const DNS_PENDING: usize = 64;

/// Answers queries until the runtime stops. Local names are answered in turn; a network name
/// is answered by a task of its own that waits for the DHT lookup (at most [`DNS_PENDING`]).
pub(super) async fn serve(socket: UdpSocket, state: Arc<NodeState>) {
    let socket = match tokio::net::UdpSocket::from_std(socket) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::warn!(error = %e, "DNS socket");
            return;
        }
    };
    let pending = Arc::new(tokio::sync::Semaphore::new(DNS_PENDING));
    let mut buf = vec![0u8; 4096];
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "DNS receive");
                continue;
            }
        };
        let query = buf.get(..len).unwrap_or(&[]);
        let handled = handle(query, &state.pets());
        let reply = match handled {
            Handled::Reply(b) => {
                if let Some((address, key)) = asked_key(query, &state.pets()) {
                    expect_key(&state.commands, address, key);
                }
                b
            }
            Handled::Network { query, label } => {
                let Ok(permit) = pending.clone().try_acquire_owned() else {
                    let b = servfail(&query);
                    let _ = socket.send_to(&b, from).await;
                    continue;
                };
                let (socket, commands) = (socket.clone(), state.commands.clone());
                tokio::spawn(async move {
                    let b = match super::names::lookup(&commands, label, DNS_WAIT).await {
                        NetAnswer::Owner { key, .. } => {
                            finish(&query, super::names::key_name(&key).map(|k| k.address()))
                        }
                        NetAnswer::NoSuchName => finish(&query, None),
                        NetAnswer::Unavailable(_) => servfail(&query),
                    };
                    if let Err(e) = socket.send_to(&b, from).await {
                        tracing::debug!(error = %e, %from, "DNS send");
                    }
                    drop(permit);
                });
                continue;
            }
            Handled::Drop => continue,
        };
        if let Err(e) = socket.send_to(&reply, from).await {
            tracing::debug!(error = %e, %from, "DNS send");
        }
    }
}

/// Tells the link task that `address` is the service with the full key `key` (a key name was
/// asked for), so its descriptor is checked against the key. Best effort: a full queue only
/// leaves the check at the address's hash, as for a bare address.
pub(super) fn expect_key(
    commands: &tokio::sync::mpsc::Sender<Command>,
    address: Ipv6Addr,
    key: [u8; 32],
) {
    let _ = commands.try_send(Command::ExpectKey {
        address: address.octets(),
        key,
    });
}
