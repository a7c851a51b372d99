//! The UDP sockets of the wire layer: one per listen address, with buffers large enough that a
//! burst of cells is not dropped by the kernel before the daemon reads it.
//!
//! A socket bound to a wildcard address (`0.0.0.0`, `[::]`) must still know which of the host's
//! addresses a peer wrote to, to publish it and to answer from it (a multi-homed host would
//! otherwise answer from whatever address the routing table picks, and the peer's NAT or firewall
//! would drop it). So every socket reports each datagram's destination address
//! (`IP_PKTINFO` / `IPV6_RECVPKTINFO`) and sends with a chosen source address; quinn-udp does
//! that, together with `recvmmsg` and UDP GRO, without unsafe code of ours.

use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};

/// Socket buffer size asked for (the kernel may cap it at `net.core.[rw]mem_max`).
pub const SOCKET_BUFFER: usize = 4 << 20;

/// Binds a non-blocking UDP socket on `addr`. An IPv6 socket is IPv6-only unless `dual_stack`
/// (then IPv4 peers arrive as `::ffff:a.b.c.d`; [`Port`] hides that).
pub fn bind_with(addr: SocketAddr, dual_stack: bool) -> io::Result<std::net::UdpSocket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(!dual_stack)?;
    }
    // Best effort: a smaller buffer works, only with more drops under bursts.
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Binds one socket per family (IPv6 sockets are IPv6-only), as the benchmarks use.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    bind_with(addr, false)
}

/// Which listen addresses get a dual-stack socket: `[::]:P` does, unless `0.0.0.0:P` is listed
/// too (both cannot own the IPv4 side of port P).
pub fn dual_stack_for(listen: &[SocketAddr]) -> Vec<bool> {
    listen
        .iter()
        .map(|a| {
            a.is_ipv6()
                && a.ip().is_unspecified()
                && !listen
                    .iter()
                    .any(|b| b.is_ipv4() && b.ip().is_unspecified() && b.port() == a.port())
        })
        .collect()
}

/// One received datagram's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The sender (IPv4 as IPv4, also on a dual-stack socket).
    pub from: SocketAddr,
    /// The address the sender wrote to: one of ours, with the socket's port.
    pub local: Option<SocketAddr>,
}

/// A bound UDP socket with its batching and packet-info state.
pub struct Port {
    socket: tokio::net::UdpSocket,
    state: UdpSocketState,
    port: u16,
    v4: bool,
    v6: bool,
    /// An IPv6 socket that also carries IPv4 (destinations must be written v4-mapped).
    dual: bool,
}

impl Port {
    /// Wraps a socket from [`bind_with`]; needs a tokio runtime.
    pub fn new(socket: std::net::UdpSocket, dual_stack: bool) -> io::Result<Port> {
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        let local = socket.local_addr()?;
        // quinn-udp turns path-MTU discovery to "probe" (DF, interface MTU). Our datagrams are
        // sized for a 1500-byte path, and on a smaller one (PPPoE, tunnels) the kernel's usual
        // behaviour — learn the path MTU, fragment locally — keeps the link working.
        let fd = rustix::fd::AsFd::as_fd(&socket);
        if local.is_ipv4() || dual_stack {
            let _ = rustix::net::sockopt::set_ip_mtu_discover(
                fd,
                rustix::net::sockopt::Ipv4PathMtuDiscovery::WANT,
            );
        }
        if local.is_ipv6() {
            let _ = rustix::net::sockopt::set_ipv6_mtu_discover(
                fd,
                rustix::net::sockopt::Ipv6PathMtuDiscovery::WANT,
            );
            let _ = nix::sys::socket::setsockopt(
                &socket,
                nix::sys::socket::sockopt::Ipv6DontFrag,
                &false,
            );
        }
        Ok(Port {
            socket: tokio::net::UdpSocket::from_std(socket)?,
            state,
            port: local.port(),
            v4: local.is_ipv4() || dual_stack,
            v6: local.is_ipv6(),
            dual: local.is_ipv6() && dual_stack,
        })
    }

    /// Whether this socket can send to `dst`.
    pub fn serves(&self, dst: &SocketAddr) -> bool {
        if dst.is_ipv4() {
            self.v4
        } else {
            self.v6
        }
    }

    /// Receive buffer size that holds the largest batch GRO may hand over at once.
    pub fn buffer_len(&self) -> usize {
        (self.state.gro_segments() * 2048).max(65_536)
    }

    /// Waits for and receives one read's worth (several datagrams of `meta.stride` bytes each
    /// when GRO coalesced them).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, usize, Received)> {
        loop {
            self.socket.readable().await?;
            match self.try_recv(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    }

    /// [`Port::recv`] without waiting: `WouldBlock` when nothing is queued. Returns the bytes
    /// read, the stride (each datagram's length but maybe the last's) and the addresses.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<(usize, usize, Received)> {
        let mut meta = [RecvMeta::default()];
        let n = self.socket.try_io(tokio::io::Interest::READABLE, || {
            let mut bufs = [IoSliceMut::new(buf)];
            self.state
                .recv(UdpSockRef::from(&self.socket), &mut bufs, &mut meta)
        })?;
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let [m] = meta;
        let local = m.dst_ip.map(|ip| SocketAddr::new(canonical(ip), self.port));
        Ok((
            m.len,
            m.stride.max(1),
            Received {
                from: SocketAddr::new(canonical(m.addr.ip()), m.addr.port()),
                local,
            },
        ))
    }

    /// Sends one datagram to `dst` from `src` (our address the peer wrote to; `None` lets the
    /// kernel choose). Waits while the socket's buffer is full.
    pub async fn send(&self, dst: SocketAddr, src: Option<IpAddr>, data: &[u8]) -> io::Result<()> {
        self.send_with(dst, src, data, None).await
    }

    async fn send_with(
        &self,
        dst: SocketAddr,
        src: Option<IpAddr>,
        data: &[u8],
        segment_size: Option<usize>,
    ) -> io::Result<()> {
        let destination = match (dst, self.dual) {
            (SocketAddr::V4(v4), true) => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            _ => dst,
        };
        // A source of the other family than the destination cannot be used.
        let src_ip = src.filter(|s| s.is_ipv4() == dst.is_ipv4());
        let transmit = quinn_udp::Transmit {
            destination,
            ecn: None,
            contents: data,
            segment_size,
            src_ip,
        };
        self.socket
            .async_io(tokio::io::Interest::WRITABLE, || {
                self.state
                    .try_send(UdpSockRef::from(&self.socket), &transmit)
            })
            .await
    }
}

/// Datagram slots per receive call: one `recvmmsg` fills up to this many, each with a GRO batch.
/// Sixteen slots of [`Port::buffer_len`] (128 KiB with GRO: 2 MiB per socket) hold a burst from
/// many links at once.
pub const RECV_SLOTS: usize = if quinn_udp::BATCH_SIZE < 16 {
    quinn_udp::BATCH_SIZE
} else {
    16
};

/// Bytes one GSO send may carry (the kernel's limit is 64 KiB for the whole UDP payload).
const GSO_MAX_BYTES: usize = 65_000;

/// Datagrams per GSO send at most, as quinn-proto's `MAX_TRANSMIT_SEGMENTS`: a batch travels
/// and is queued at the receiver as one unit, so a full receive buffer drops all of it at once;
/// ten consecutive cells lost is a burst inner TCP recovers from, 45 (64 KiB) may not be.
/// Still ten times fewer send calls.
pub const GSO_SEGMENTS: usize = 10;

/// The buffers of one batched receive ([`Port::recv_batch`]), reused for every call: receiving
/// allocates nothing.
pub struct RecvBatch {
    buf: Vec<u8>,
    slot: usize,
    meta: [RecvMeta; RECV_SLOTS],
    rx: [Received; RECV_SLOTS],
    filled: usize,
}

impl RecvBatch {
    /// Buffers sized for `port`'s largest GRO batch in every slot.
    pub fn new(port: &Port) -> RecvBatch {
        let slot = port.buffer_len();
        let none = Received {
            from: SocketAddr::from(([0, 0, 0, 0], 0)),
            local: None,
        };
        RecvBatch {
            buf: vec![0u8; slot * RECV_SLOTS],
            slot,
            meta: [RecvMeta::default(); RECV_SLOTS],
            rx: [none; RECV_SLOTS],
            filled: 0,
        }
    }

    /// Every datagram of the last receive, in arrival order, with its addresses (a GRO slot is
    /// cut into its datagrams here).
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], Received)> + '_ {
        self.buf
            .chunks(self.slot)
            .zip(self.meta.iter().zip(self.rx.iter()))
            .take(self.filled)
            .flat_map(|(b, (m, rx))| {
                b.get(..m.len)
                    .unwrap_or(&[])
                    .chunks(m.stride.max(1))
                    .map(move |d| (d, *rx))
            })
    }
}

/// Datagrams queued for one GSO send ([`Port::queue`]): consecutive datagrams to the same
/// destination, from the same source, all of one length but the last, go to the kernel in one
/// `sendmsg` that the kernel (or the NIC) cuts up again.
pub struct SendBatch {
    buf: Vec<u8>,
    dst: SocketAddr,
    src: Option<IpAddr>,
    segment: usize,
    count: usize,
    /// The last segment was shorter than the others: nothing more may join.
    closed: bool,
}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch {
            buf: Vec::with_capacity(GSO_MAX_BYTES),
            dst: SocketAddr::from(([0, 0, 0, 0], 0)),
            src: None,
            segment: 0,
            count: 0,
            closed: false,
        }
    }
}

impl SendBatch {
    /// Datagrams waiting.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Nothing waits.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn fits(&self, dst: SocketAddr, src: Option<IpAddr>, len: usize, max_segments: usize) -> bool {
        self.count > 0
            && !self.closed
            && self.dst == dst
            && self.src == src
            && len <= self.segment
            && self.count < max_segments
            && self.buf.len() + len <= GSO_MAX_BYTES
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.count = 0;
        self.closed = false;
    }
}

impl Port {
    /// Waits for and receives up to [`RECV_SLOTS`] reads in one `recvmmsg` (each maybe a GRO
    /// batch); returns how many slots were filled. Read them with [`RecvBatch::datagrams`].
    pub async fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        loop {
            self.socket.readable().await?;
            match self.try_recv_batch(batch) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    }

    /// [`Port::recv_batch`] without waiting: `WouldBlock` when nothing is queued.
    pub fn try_recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.filled = 0;
        let slot = batch.slot;
        let meta = &mut batch.meta;
        let n = self.socket.try_io(tokio::io::Interest::READABLE, || {
            let mut chunks = batch.buf.chunks_mut(slot);
            let mut bufs: [IoSliceMut<'_>; RECV_SLOTS] =
                std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
            self.state
                .recv(UdpSockRef::from(&self.socket), &mut bufs, meta)
        })?;
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        for (m, rx) in batch.meta.iter().zip(batch.rx.iter_mut()).take(n) {
            *rx = Received {
                from: SocketAddr::new(canonical(m.addr.ip()), m.addr.port()),
                local: m.dst_ip.map(|ip| SocketAddr::new(canonical(ip), self.port)),
            };
        }
        batch.filled = n;
        Ok(n)
    }

    /// Queues a datagram for `dst` from `src`, sending what was queued first when this one cannot
    /// join it (another destination or source, a longer datagram, a full batch). The caller sends
    /// the rest with [`Port::flush`] before it waits for anything.
    pub async fn queue(
        &self,
        batch: &mut SendBatch,
        dst: SocketAddr,
        src: Option<IpAddr>,
        data: &[u8],
    ) -> io::Result<()> {
        let max = self.state.max_gso_segments().min(GSO_SEGMENTS);
        let mut sent = Ok(());
        if !batch.fits(dst, src, data.len(), max) {
            sent = self.flush(batch).await;
            batch.dst = dst;
            batch.src = src;
            batch.segment = data.len();
        }
        batch.buf.extend_from_slice(data);
        batch.count += 1;
        batch.closed = data.len() < batch.segment;
        if batch.count >= max {
            let r = self.flush(batch).await;
            sent = sent.and(r);
        }
        sent
    }

    /// Sends what is queued in `batch`: one GSO `sendmsg`, or one `sendmsg` per datagram when
    /// segmentation offload is off or just failed (quinn-udp turns it off on the first `EIO`, and
    /// the datagrams of that batch are sent again one by one).
    pub async fn flush(&self, batch: &mut SendBatch) -> io::Result<()> {
        if batch.count == 0 {
            return Ok(());
        }
        let r = if batch.count == 1 {
            self.send(batch.dst, batch.src, &batch.buf).await
        } else {
            let segment = batch.segment;
            let gso = self
                .send_with(batch.dst, batch.src, &batch.buf, Some(segment))
                .await;
            match gso {
                Err(e)
                    if e.kind() != io::ErrorKind::WouldBlock
                        && self.state.max_gso_segments() == 1 =>
                {
                    let mut r = Ok(());
                    for d in batch.buf.chunks(segment) {
                        r = r.and(self.send(batch.dst, batch.src, d).await);
                    }
                    r
                }
                r => r,
            }
        };
        batch.clear();
        r
    }

    /// Largest number of datagrams one send may carry now (1 without GSO).
    pub fn max_segments(&self) -> usize {
        self.state.max_gso_segments()
    }
}

/// Batches in flight per sending thread: filled by the link task, sent by the thread. Each holds
/// up to [`GSO_MAX_BYTES`]; twice this many exist per socket (the rest wait empty or are filled).
pub const SEND_DEPTH: usize = 4;

/// A socket's sends made by a thread of their own (issue #21 item 3): the link task fills
/// [`SendBatch`]es as before and hands each full one over through a bounded channel, getting an
/// empty one back, so the kernel's send path (copy, segmentation, and on a veth the receiver's
/// side too) runs on another core while the link task decrypts and forwards the next cells.
/// Order is kept (one thread, one FIFO); no allocation per datagram (the batches go round).
pub struct SendThread {
    /// std's bounded channels: a fixed ring each, nothing allocated per batch (tokio's channels
    /// allocate a block now and then when two threads race on them).
    to_thread: std::sync::mpsc::SyncSender<SendBatch>,
    back: std::sync::mpsc::Receiver<SendBatch>,
    /// Rung by the thread after each batch it gives back, for a link task waiting for one.
    returned: std::sync::Arc<tokio::sync::Notify>,
    /// Batches handed over and not yet sent: at 0, a partly filled batch is sent inline.
    in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    batch: SendBatch,
    max: usize,
}

impl SendThread {
    /// Starts the thread for `port`'s sends: a duplicate of its socket registered with a runtime
    /// of the thread's own. Fails (and starts nothing) when the socket cannot be duplicated or
    /// the runtime not built; the caller then sends inline.
    pub fn start(port: &Port) -> io::Result<SendThread> {
        let dup: std::net::UdpSocket = socket2::SockRef::from(&port.socket).try_clone()?.into();
        let dual = port.v4 && port.v6;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let own = {
            let _in_rt = rt.enter();
            Port::new(dup, dual)?
        };
        // Every batch is in one of the two channels, at the thread, or at the link task: neither
        // channel can be full, so no send on them waits.
        let (to_thread, full) = std::sync::mpsc::sync_channel::<SendBatch>(SEND_DEPTH + 1);
        let (empty, back) = std::sync::mpsc::sync_channel::<SendBatch>(SEND_DEPTH + 1);
        for _ in 0..SEND_DEPTH {
            let _ = empty.try_send(SendBatch::default());
        }
        let returned = std::sync::Arc::new(tokio::sync::Notify::new());
        let ring = returned.clone();
        let in_flight = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let sent = in_flight.clone();
        std::thread::Builder::new()
            .name("gn-udp-send".into())
            .spawn(move || {
                rt.block_on(async move {
                    // Blocking in the runtime is fine: it drives only this loop's socket.
                    while let Ok(mut b) = full.recv() {
                        if let Err(e) = own.flush(&mut b).await {
                            tracing::debug!("UDP send: {e}");
                        }
                        if empty.try_send(b).is_err() {
                            return;
                        }
                        // After the send: the link task may send inline once this is 0.
                        sent.fetch_sub(1, std::sync::atomic::Ordering::Release);
                        ring.notify_one();
                    }
                })
            })?;
        Ok(SendThread {
            to_thread,
            back,
            returned,
            in_flight,
            batch: SendBatch::default(),
            max: port.state.max_gso_segments().min(GSO_SEGMENTS),
        })
    }

    /// [`Port::queue`] for the thread: a full batch goes to the thread; one that cannot take
    /// `data` is sent as [`SendThread::flush`] says.
    pub async fn queue(
        &mut self,
        port: &Port,
        dst: SocketAddr,
        src: Option<IpAddr>,
        data: &[u8],
    ) -> io::Result<()> {
        let mut r = Ok(());
        if !self.batch.fits(dst, src, data.len(), self.max) {
            r = self.flush(port).await;
            self.batch.dst = dst;
            self.batch.src = src;
            self.batch.segment = data.len();
        }
        self.batch.buf.extend_from_slice(data);
        self.batch.count += 1;
        self.batch.closed = data.len() < self.batch.segment;
        if self.batch.count >= self.max {
            r = r.and(self.hand_over().await);
        }
        r
    }

    /// Sends what is queued ([`Port::flush`]): a partly filled batch inline on `port` (the
    /// socket the thread's is a duplicate of) when the thread has nothing in flight, else
    /// through the thread, behind what it holds. A wake-up of the thread costs more than a
    /// send of a datagram or two: at low rates, when the link task's wake-ups bring only a
    /// cell or two, they stay inline; under load, batches fill and go to the thread.
    pub async fn flush(&mut self, port: &Port) -> io::Result<()> {
        if self.in_flight.load(std::sync::atomic::Ordering::Acquire) == 0 {
            return port.flush(&mut self.batch).await;
        }
        self.hand_over().await
    }

    async fn hand_over(&mut self) -> io::Result<()> {
        if self.batch.count == 0 {
            return Ok(());
        }
        let stopped = || io::Error::other("the UDP send thread stopped");
        let next = loop {
            // Armed before the check: a batch given back in between leaves a permit.
            let returned = self.returned.notified();
            match self.back.try_recv() {
                Ok(b) => break b,
                Err(std::sync::mpsc::TryRecvError::Empty) => returned.await,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return Err(stopped()),
            }
        };
        let full = std::mem::replace(&mut self.batch, next);
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.to_thread.try_send(full).map_err(|_| stopped())
    }
}

/// Where a socket's datagrams go: sent by the link task itself, or handed to a [`SendThread`].
pub enum Sends {
    /// The link task sends (one core, or no thread could be started).
    Inline(SendBatch),
    /// A thread sends.
    Thread(SendThread),
}

impl Sends {
    /// A [`SendThread`] for `port` when `thread`, inline otherwise or when none can be started.
    pub fn new(port: &Port, thread: bool) -> Sends {
        if thread {
            match SendThread::start(port) {
                Ok(t) => return Sends::Thread(t),
                Err(e) => tracing::warn!("UDP sends stay on the link task: no send thread: {e}"),
            }
        }
        Sends::Inline(SendBatch::default())
    }

    /// Queues a datagram ([`Port::queue`], [`SendThread::queue`]).
    pub async fn queue(
        &mut self,
        port: &Port,
        dst: SocketAddr,
        src: Option<IpAddr>,
        data: &[u8],
    ) -> io::Result<()> {
        match self {
            Sends::Inline(b) => port.queue(b, dst, src, data).await,
            Sends::Thread(t) => t.queue(port, dst, src, data).await,
        }
    }

    /// Sends or hands over what is queued ([`Port::flush`], [`SendThread::flush`]).
    pub async fn flush(&mut self, port: &Port) -> io::Result<()> {
        match self {
            Sends::Inline(b) => port.flush(b).await,
            Sends::Thread(t) => t.flush(port).await,
        }
    }
}

/// IPv4-mapped IPv6 addresses as IPv4 (a dual-stack socket reports IPv4 peers that way).
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_v6_is_dual_stack_unless_v4_wildcard_shares_the_port() {
        let a: SocketAddr = "[::]:7412".parse().unwrap();
        let b: SocketAddr = "0.0.0.0:7412".parse().unwrap();
        let c: SocketAddr = "[::1]:7413".parse().unwrap();
        assert_eq!(dual_stack_for(&[a]), vec![true]);
        assert_eq!(dual_stack_for(&[b, a]), vec![false, false]);
        assert_eq!(dual_stack_for(&[c]), vec![false]);
    }

    #[tokio::test]
    async fn wildcard_socket_reports_the_address_written_to_and_answers_from_it() {
        // Two loopback addresses: a wildcard socket must tell them apart and answer from each.
        let server = Port::new(
            bind_with("0.0.0.0:0".parse().unwrap(), false).unwrap(),
            false,
        )
        .unwrap();
        let port = server.socket.local_addr().unwrap().port();
        for dst in ["127.0.0.1", "127.0.0.2"] {
            let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let to: SocketAddr = format!("{dst}:{port}").parse().unwrap();
            client.send_to(b"hello", to).await.unwrap();
            let mut buf = vec![0u8; server.buffer_len()];
            let (n, _, rx) = server.recv(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"hello");
            assert_eq!(rx.local, Some(to));
            server
                .send(rx.from, rx.local.map(|l| l.ip()), b"back")
                .await
                .unwrap();
            let (n, from) = client.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"back");
            assert_eq!(from, to, "the answer comes from the address written to");
        }
    }

    #[tokio::test]
    async fn dual_stack_socket_carries_ipv4_as_ipv4() {
        let Ok(sock) = bind_with("[::]:0".parse().unwrap(), true) else {
            return; // no IPv6 on this host
        };
        let server = Port::new(sock, true).unwrap();
        let port = server.socket.local_addr().unwrap().port();
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        client.send_to(b"v4", to).await.unwrap();
        let mut buf = vec![0u8; server.buffer_len()];
        let (n, _, rx) = server.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"v4");
        assert!(rx.from.is_ipv4(), "{rx:?}");
        assert_eq!(rx.local, Some(to));
        server
            .send(rx.from, rx.local.map(|l| l.ip()), b"ok")
            .await
            .unwrap();
        let (n, from) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"ok");
        assert_eq!(from, to);
    }

    /// Datagrams of one run (equal lengths, a shorter last one) and of interleaved destinations
    /// arrive whole and in order through the GSO send and the `recvmmsg`/GRO receive.
    #[tokio::test]
    async fn batched_send_and_receive_keep_every_datagram_and_its_order() {
        let rx = Port::new(bind("127.0.0.1:0".parse().unwrap()).unwrap(), false).unwrap();
        let rx2 = Port::new(bind("127.0.0.1:0".parse().unwrap()).unwrap(), false).unwrap();
        let tx = Port::new(bind("127.0.0.1:0".parse().unwrap()).unwrap(), false).unwrap();
        let to = rx.socket.local_addr().unwrap();
        let to2 = rx2.socket.local_addr().unwrap();
        let mut sent: Vec<Vec<u8>> = Vec::new();
        let mut sent2: Vec<Vec<u8>> = Vec::new();
        let mut batch = SendBatch::default();
        for i in 0..100u32 {
            // A run of 1424-byte datagrams, a shorter one every 37th (it ends a GSO batch), and
            // every 10th to the other socket (another destination ends it too).
            let len = if i % 37 == 36 { 300 } else { 1424 };
            let d: Vec<u8> = (0..len).map(|j| (i as usize * 7 + j) as u8).collect();
            let dst = if i % 10 == 9 { to2 } else { to };
            tx.queue(&mut batch, dst, None, &d).await.unwrap();
            if dst == to {
                sent.push(d)
            } else {
                sent2.push(d)
            }
        }
        tx.flush(&mut batch).await.unwrap();
        assert!(batch.is_empty());
        for (port, want) in [(&rx, sent), (&rx2, sent2)] {
            let mut got: Vec<Vec<u8>> = Vec::new();
            let mut b = RecvBatch::new(port);
            while got.len() < want.len() {
                port.recv_batch(&mut b).await.unwrap();
                for (d, r) in b.datagrams() {
                    assert_eq!(r.from.port(), tx.socket.local_addr().unwrap().port());
                    got.push(d.to_vec());
                }
            }
            assert_eq!(got.len(), want.len());
            assert!(got == want, "datagrams differ or arrived out of order");
        }
    }
}
