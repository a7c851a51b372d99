//! The UDP sockets of the wire layer: one per address family, with buffers large enough that a
//! burst of cells is not dropped by the kernel before the daemon reads it.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;

/// Socket buffer size asked for (the kernel may cap it at `net.core.[rw]mem_max`).
pub const SOCKET_BUFFER: usize = 4 << 20;

/// Binds a non-blocking UDP socket on `addr` (IPv6 sockets are IPv6-only, so one per family).
pub fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // Best effort: a smaller buffer works, only with more drops under bursts.
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}
