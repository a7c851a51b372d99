//! The daemon's I/O tasks: the TUN reader and writer, the route refresher, and the link task
//! that owns the UDP sockets, the node and the flow layer.

use super::*;
use crate::flow::fq::{self, FairQueue, Fate};
use rand::RngCore;

/// Reads the kernel's packets from the TUN into recycled buffers and hands them to the link
/// task, waiting when it is behind.
pub(super) async fn tun_reader(
    dev: Arc<tun_rs::AsyncDevice>,
    to_link: mpsc::Sender<Vec<u8>>,
    mut bufs: mpsc::Receiver<Vec<u8>>,
    buf_len: usize,
    state: Arc<NodeState>,
) -> std::io::Result<()> {
    loop {
        let mut buf = bufs
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(buf_len));
        buf.resize(buf_len, 0);
        let n = dev.recv(&mut buf).await?;
        buf.truncate(n);
        state.tun.packets_in.fetch_add(1, Ordering::Relaxed);
        if to_link.send(buf).await.is_err() {
            return Ok(());
        }
    }
}

/// Writes the packets the link task has for the kernel and hands their buffers back.
pub(super) async fn tun_writer(
    dev: Arc<tun_rs::AsyncDevice>,
    mut from_link: mpsc::Receiver<Vec<u8>>,
    bufs: mpsc::Sender<Vec<u8>>,
    state: Arc<NodeState>,
) {
    while let Some(buf) = from_link.recv().await {
        match dev.send(&buf).await {
            Ok(_) => state.tun.packets_out.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                tracing::debug!("writing to the TUN: {e}");
                state.tun.write_errors.fetch_add(1, Ordering::Relaxed)
            }
        };
        let _ = bufs.try_send(buf);
    }
}

/// Reads the routes through other interfaces now and then, for the inbound source check.
pub(super) async fn route_refresher(ifname: String, commands: mpsc::Sender<Command>) {
    let mut warned = false;
    loop {
        match platform::routes::prefixes_elsewhere(&ifname).await {
            Ok(p) => {
                if commands.send(Command::ForeignPrefixes(p)).await.is_err() {
                    return;
                }
            }
            Err(e) if !warned => {
                warned = true;
                tracing::warn!("reading routes for the inbound source check: {e}");
            }
            Err(_) => {}
        }
        tokio::time::sleep(ROUTE_REFRESH).await;
    }
}

/// Receives a batch on up to two sockets; pending forever when there is no such socket.
pub(super) async fn recv_on(
    socket: Option<&udp::Port>,
    batch: Option<&mut udp::RecvBatch>,
) -> std::io::Result<usize> {
    match (socket, batch) {
        (Some(s), Some(b)) => s.recv_batch(b).await,
        _ => std::future::pending().await,
    }
}

/// Hands every datagram of one batched read to the node; returns how many there were.
pub(super) fn deliver(node: &mut Node, now: time::Instant, batch: &udp::RecvBatch) -> usize {
    let mut n = 0;
    for (d, rx) in batch.datagrams() {
        node.handle_datagram_at(now, rx.from, rx.local, d);
        n += 1;
    }
    n
}

/// Datagrams handled per wake-up before the other sources (TUN, timers, commands) get their
/// turn and the node's transmits leave: as many as before batching (64 reads of one datagram).
/// Counted in datagrams, not reads: with GSO senders one read can be 16 GRO slots of several
/// datagrams each, and hundreds per wake-up would hold the TUN and the transmits back.
const DRAIN_DATAGRAMS: usize = 64;

/// Handles what else is already queued on the socket (up to [`DRAIN_DATAGRAMS`] with what the
/// wake-up's read brought) before going back to the event loop: fewer wake-ups and timer
/// re-arms per datagram under load.
pub(super) fn drain(
    socket: Option<&udp::Port>,
    node: &mut Node,
    clock: &Clock,
    batch: Option<&mut udp::RecvBatch>,
    mut handled: usize,
) {
    let (Some(s), Some(batch)) = (socket, batch) else {
        return;
    };
    while handled < DRAIN_DATAGRAMS {
        match s.try_recv_batch(batch) {
            Ok(_) => handled += deliver(node, clock.now(), batch),
            Err(_) => break,
        }
    }
}

/// The channels between the link task and the TUN tasks.
pub(super) struct Pipes {
    pub(super) from_tun: mpsc::Receiver<Vec<u8>>,
    pub(super) read_bufs: mpsc::Sender<Vec<u8>>,
    pub(super) to_tun: mpsc::Sender<Vec<u8>>,
    pub(super) write_bufs: mpsc::Receiver<Vec<u8>>,
}

/// The link task's side of the packet path: the flow layer between the TUN and the node.
pub(super) struct PacketPath {
    pub(super) flow: FlowLayer,
    pub(super) reply: Vec<u8>,
    pub(super) spare: Vec<Vec<u8>>,
    pub(super) to_tun: mpsc::Sender<Vec<u8>>,
    pub(super) read_bufs: mpsc::Sender<Vec<u8>>,
    pub(super) queue_drops: u64,
    pub(super) state: Arc<NodeState>,
    /// `[outbound]` is on: packets from gn0 outside the overlay go to an exit.
    pub(super) outbound: bool,
    /// The kernel's packets between the TUN reader and the node: fair between inner flows,
    /// CoDel in each (the standing queue under a bulk flow builds here: `flow/fq.rs`).
    pub(super) fq: FairQueue<Vec<u8>>,
    /// Origin of the queue's microsecond clock.
    pub(super) fq_epoch: std::time::Instant,
    /// Packets from sessions for the kernel, the same way: the TUN writer's channel is kept
    /// [`TO_KERNEL_CHANNEL`] deep and the rest waits here, fairly and under CoDel.
    pub(super) to_kernel: FairQueue<Vec<u8>>,
    /// The queues' fixed size, charged once for the daemon's life.
    pub(super) _fq_charge: Option<crate::budget::Charge>,
}

/// Packets let into the TUN writer's FIFO channel at once: enough to keep it writing between two
/// wake-ups of the link task, few enough that no standing queue builds there.
const TO_KERNEL_CHANNEL: usize = 16;

impl PacketPath {
    /// A packet the TUN reader brought: into its flow's queue (a full queue gives back the
    /// longest flow's oldest packet, whose buffer goes back to the reader).
    pub(super) fn queue_from_tun(&mut self, buf: Vec<u8>) {
        let now_us = self.fq_epoch.elapsed().as_micros() as u64;
        let flow = self.fq.classify(&buf);
        let len = buf.len();
        if let Some(old) = self.fq.enqueue(flow, buf, len, now_us) {
            let _ = self.read_bufs.try_send(old);
        }
    }

    /// Sends up to [`PACKET_BATCH`] of the queued kernel packets, fairly between flows; CoDel's
    /// drops go back to the reader, ECN-capable packets are marked CE instead.
    pub(super) fn serve_tun(&mut self, node: &mut Node, now: time::Instant) {
        let now_us = self.fq_epoch.elapsed().as_micros() as u64;
        let mut sent = 0;
        while sent < PACKET_BATCH {
            match self.fq.dequeue(now_us, |p| fq::mark_ce(p)) {
                Some((p, Fate::Send | Fate::Marked)) => {
                    self.kernel_packet(node, now, p);
                    sent += 1;
                }
                Some((p, Fate::Dropped | Fate::Overflow)) => {
                    let _ = self.read_bufs.try_send(p);
                }
                None => break,
            }
        }
    }

    /// A packet from the kernel: through the flow layer to a session, or answered locally.
    pub(super) fn kernel_packet(&mut self, node: &mut Node, now: time::Instant, mut buf: Vec<u8>) {
        if self.outbound && !for_overlay(&buf) {
            if let Some(group) = crate::exit::client::for_exit(&buf) {
                if let Err(e) = node.send_exit_packet(now, group, &buf) {
                    tracing::trace!("packet for an exit dropped: {e}");
                }
            }
            let _ = self.read_bufs.try_send(buf);
            return;
        }
        match self.flow.on_tun_packet(now, &mut buf, &mut self.reply) {
            TunVerdict::Send { dst } => {
                if node.send_packet(now, dst, &buf).is_err()
                    && self.flow.on_send_failed(&buf, &mut self.reply)
                {
                    self.reply_to_kernel();
                }
            }
            TunVerdict::Reply(kind) => {
                tracing::trace!(?kind, "ICMPv6 reply to the kernel");
                self.reply_to_kernel();
            }
            TunVerdict::Drop(reason) => tracing::trace!(?reason, "dropped a packet from the TUN"),
        }
        let _ = self.read_bufs.try_send(buf);
    }

    /// A packet from our exit: into the kernel (copied, so the circuit layer keeps its buffer).
    pub(super) fn exit_answer(&mut self, node: &mut Node, buf: Vec<u8>) {
        let mut out = self.spare.pop().unwrap_or_default();
        out.clear();
        out.extend_from_slice(&buf);
        node.recycle_message(buf);
        if let Err(e) = self.to_tun.try_send(out) {
            self.queue_drops += 1;
            self.spare.push(e.into_inner());
        }
    }

    /// A packet from a session: into the kernel, or refused back to the peer.
    pub(super) fn peer_packet(&mut self, node: &mut Node, now: time::Instant, mut buf: Vec<u8>) {
        match self.flow.on_session_packet(now, &mut buf, &mut self.reply) {
            SessionVerdict::Deliver => {
                let now_us = self.fq_epoch.elapsed().as_micros() as u64;
                let flow = self.to_kernel.classify(&buf);
                let len = buf.len();
                if let Some(old) = self.to_kernel.enqueue(flow, buf, len, now_us) {
                    node.recycle_packet(old);
                }
                self.feed_writer(node);
                return;
            }
            SessionVerdict::Refuse { dst } => {
                if let Err(e) = node.send_packet(now, dst, &self.reply) {
                    tracing::trace!(?e, "refusal not sent");
                }
            }
            SessionVerdict::Drop(reason) => {
                tracing::trace!(?reason, "dropped a packet from a session")
            }
        }
        node.recycle_packet(buf);
    }

    /// Moves packets from the fair queue into the TUN writer's channel while it has fewer than
    /// [`TO_KERNEL_CHANNEL`]; CoDel's drops go back to the node.
    pub(super) fn feed_writer(&mut self, node: &mut Node) {
        let now_us = self.fq_epoch.elapsed().as_micros() as u64;
        while self.to_tun.max_capacity() - self.to_tun.capacity() < TO_KERNEL_CHANNEL {
            match self.to_kernel.dequeue(now_us, |p| fq::mark_ce(p)) {
                Some((p, Fate::Send | Fate::Marked)) => {
                    if let Err(e) = self.to_tun.try_send(p) {
                        self.queue_drops += 1;
                        node.recycle_packet(e.into_inner());
                    }
                }
                Some((p, Fate::Dropped | Fate::Overflow)) => node.recycle_packet(p),
                None => break,
            }
        }
    }

    /// The session layer gave up on `dst`: the flows waiting for it learn at once.
    pub(super) fn unreachable(&mut self, dst: &[u8; 16]) {
        let (spare, to_tun, drops) = (&mut self.spare, &self.to_tun, &mut self.queue_drops);
        let counter = &self.state.tun.icmp_replies;
        self.flow.on_unreachable(dst, &mut self.reply, |r| {
            let mut b = spare.pop().unwrap_or_default();
            b.clear();
            b.extend_from_slice(r);
            match to_tun.try_send(b) {
                Ok(()) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    *drops += 1;
                    spare.push(e.into_inner());
                }
            }
        });
    }

    pub(super) fn reply_to_kernel(&mut self) {
        let mut b = self.spare.pop().unwrap_or_default();
        b.clear();
        b.extend_from_slice(&self.reply);
        match self.to_tun.try_send(b) {
            Ok(()) => {
                self.state.tun.icmp_replies.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.queue_drops += 1;
                self.spare.push(e.into_inner());
            }
        }
    }

    /// A buffer the TUN writer is done with: kept for replies, or handed back to the node.
    pub(super) fn returned(&mut self, node: &mut Node, buf: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS {
            self.spare.push(buf);
        } else {
            node.recycle_packet(buf);
        }
        self.feed_writer(node);
    }
}

/// Whether a packet from gn0 is the overlay's (IPv6 to fd00::/8), not an exit's.
fn for_overlay(p: &[u8]) -> bool {
    p.first().is_some_and(|b| b >> 4 == 6) && p.get(24) == Some(&0xfd)
}

/// Where a control answer goes.
pub(super) type AnswerTx = oneshot::Sender<Result<Value, String>>;

/// Pings waiting for their PONG: id -> (destination, answer, sent at).
#[derive(Default)]
pub(super) struct Pings {
    pub(super) waiting: HashMap<u64, (Ipv6Addr, AnswerTx, time::Instant)>,
}

impl Pings {
    pub(super) fn start(
        &mut self,
        node: &mut Node,
        now: time::Instant,
        dst: [u8; 16],
        reply: AnswerTx,
    ) {
        if self.waiting.len() >= MAX_PINGS {
            let _ = reply.send(Err("too many pings in flight; try again".into()));
            return;
        }
        match node.e2e_ping(now, dst) {
            Ok(id) => {
                self.waiting.insert(id, (Ipv6Addr::from(dst), reply, now));
            }
            Err(crate::node::sessions::SendError::Unreachable(why)) => {
                let _ = reply.send(Err(format!(
                    "{} is unreachable: {why}",
                    Ipv6Addr::from(dst)
                )));
            }
        }
    }

    /// The PONG for ping `id` arrived.
    pub(super) fn answer(&mut self, id: u64, rtt_ms: f64) {
        if let Some((dst, reply, _)) = self.waiting.remove(&id) {
            let _ = reply.send(to_result(&PingAnswer {
                addr: dst.to_string(),
                rtt_ms: tenths(rtt_ms),
            }));
        }
    }

    pub(super) fn unreachable(&mut self, dst: &[u8; 16], why: &str) {
        let dst = Ipv6Addr::from(*dst);
        let ids: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, (d, _, _))| *d == dst)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some((_, reply, _)) = self.waiting.remove(&id) {
                let _ = reply.send(Err(format!("{dst} is unreachable: {why}")));
            }
        }
    }

    pub(super) fn expire(&mut self, now: time::Instant) {
        let old: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, (_, _, at))| now.saturating_since(*at) >= PING_TIMEOUT_MS)
            .map(|(id, _)| *id)
            .collect();
        for id in old {
            if let Some((dst, reply, _)) = self.waiting.remove(&id) {
                let _ = reply.send(Err(format!(
                    "no answer from {dst} within {} s; the address may be wrong or its service offline",
                    PING_TIMEOUT_MS / 1000
                )));
            }
        }
    }
}

/// The link task: owns the UDP sockets, the node's state machine and the flow layer.
/// Sends every datagram the node has queued, each on a socket of its address family, from the
/// address the peer wrote to: runs of datagrams to one peer leave in one GSO send per socket.
pub(super) async fn send_transmits(
    node: &mut Node,
    sockets: &[udp::Port],
    batches: &mut [udp::Sends],
) {
    while let Some(t) = node.poll_transmit() {
        let pick = sockets
            .iter()
            .zip(batches.iter_mut())
            .find(|(s, _)| s.serves(&t.dst));
        if let Some((s, b)) = pick {
            if let Err(e) = b.queue(s, t.dst, t.src, &t.data).await {
                tracing::debug!("UDP send to {}: {e}", t.dst);
            }
        }
        node.recycle(t.data);
    }
    for (s, b) in sockets.iter().zip(batches.iter_mut()) {
        if let Err(e) = b.flush(s).await {
            tracing::debug!("UDP send: {e}");
        }
    }
}

pub(super) async fn link_loop(
    sockets: Vec<udp::Port>,
    core: Core,
    pipes: Pipes,
    clock: Clock,
    state: Arc<NodeState>,
) -> std::io::Result<()> {
    if sockets.is_empty() {
        return Ok(());
    }
    let Core {
        node: mut link,
        flow,
        mut commands,
        mut names,
        exit,
    } = core;
    let mut exit = exit
        .map(|(dev, gateway)| super::exit::ExitIo::start(dev, gateway))
        .transpose()
        .map_err(|e| std::io::Error::other(e.0))?;
    let Pipes {
        mut from_tun,
        read_bufs,
        to_tun,
        mut write_bufs,
    } = pipes;
    let mut path = PacketPath {
        flow,
        reply: Vec::with_capacity(usize::from(crate::config::OVERLAY_MTU)),
        spare: Vec::new(),
        to_tun,
        read_bufs,
        queue_drops: 0,
        state: state.clone(),
        outbound: state.config.outbound.enabled(),
        fq: FairQueue::new(crate::crypto::rng::SecretRng::os().next_u64()),
        fq_epoch: std::time::Instant::now(),
        to_kernel: FairQueue::new(crate::crypto::rng::SecretRng::os().next_u64()),
        _fq_charge: None,
    };
    let mtu = usize::from(crate::config::OVERLAY_MTU);
    path._fq_charge = state
        .budget
        .try_charge(path.fq.capacity_bytes(mtu) + path.to_kernel.capacity_bytes(mtu));
    let mut pings = Pings::default();
    let mut rx0 = sockets.first().map(udp::RecvBatch::new);
    let mut rx1 = sockets.get(1).map(udp::RecvBatch::new);
    let threads = state.config.network.send_thread;
    let mut tx: Vec<udp::Sends> = sockets
        .iter()
        .map(|s| udp::Sends::new(s, threads))
        .collect();
    let mut events: Vec<NodeEvent> = Vec::new();
    let mut last_snapshot = time::Instant::ZERO;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // The node's earliest deadline, exact (docs/decisions.md, timers); capped so that a
        // layer that reported none still runs its housekeeping.
        let cap = clock.now() + crate::link::layer::LINK_HOUSEKEEPING_MS;
        let deadline = Some(link.poll_timeout().map_or(cap, |t| t.min(cap)))
            .map(|t| tokio::time::Instant::from_std(clock.instant_at(t)));
        tokio::select! {
            r = recv_on(sockets.first(), rx0.as_mut()) => match r {
                Ok(_) => {
                    let n = rx0.as_ref().map_or(0, |b| deliver(&mut link, clock.now(), b));
                    drain(sockets.first(), &mut link, &clock, rx0.as_mut(), n);
                }
                Err(e) => tracing::debug!("UDP receive: {e}"),
            },
            r = recv_on(sockets.get(1), rx1.as_mut()) => match r {
                Ok(_) => {
                    let n = rx1.as_ref().map_or(0, |b| deliver(&mut link, clock.now(), b));
                    drain(sockets.get(1), &mut link, &clock, rx1.as_mut(), n);
                }
                Err(e) => tracing::debug!("UDP receive: {e}"),
            },
            p = from_tun.recv() => {
                let Some(p) = p else {
                    return Err(std::io::Error::other("the TUN reader stopped"));
                };
                let now = clock.now();
                // Everything waiting moves to the fair queue, so no packet waits in a FIFO.
                path.queue_from_tun(p);
                while let Ok(p) = from_tun.try_recv() {
                    path.queue_from_tun(p);
                }
                path.serve_tun(&mut link, now);
            }
            _ = std::future::ready(()), if !path.fq.is_empty() => {
                path.serve_tun(&mut link, clock.now());
            }
            Some(p) = super::exit::ExitIo::recv(exit.as_mut()) => {
                if let Some(x) = exit.as_mut() {
                    x.gnx_packet(&mut link, clock.now(), p);
                }
            }
            Some(b) = write_bufs.recv() => {
                path.returned(&mut link, b);
                while let Ok(b) = write_bufs.try_recv() {
                    path.returned(&mut link, b);
                }
            }
            Some(cmd) = commands.recv() => match cmd {
                Command::Ping { dst, reply } => pings.start(&mut link, clock.now(), dst, reply),
                Command::GuardsSaved(result) => link.guards_saved(clock.now(), result),
                Command::Services(change) => {
                    let now = clock.now();
                    for a in &change.remove {
                        link.remove_service(now, *a);
                    }
                    for seed in &change.add {
                        link.add_service(now, **seed);
                    }
                    names.set_services(&change.remove, &change.add, now);
                    if change.add_default {
                        link.add_default_service(now);
                    }
                    let policy = path.flow.policy_mut();
                    policy.set_own_ports(&change.own_ports.0, &change.own_ports.1);
                    policy.set_services(change.ports);
                    let _ = change.done.send(());
                }
                Command::Resolved { name, result } => {
                    link.link.on_resolved(clock.now(), &name, result);
                }
                Command::PowSolved { token, pow } => link.pow_solved(clock.now(), token, pow),
                Command::ExitAllows { group, dst, reply } => {
                    let _ = reply.send(link.exit_allows(clock.now(), group, &dst));
                }
                Command::Name { name, reply } => names.ask(name, reply, clock.now()),
                Command::Claims(claims) => names.set_claims(claims, clock.now()),
                Command::ExpectKey { address, key } => {
                    link.expect_service_key(clock.now(), address, key);
                }
                Command::AcceptName { name, reply } => {
                    let _ = reply.send(names.names.accept(&name));
                }
                Command::ForeignPrefixes(p) => {
                    path.flow.policy_mut().set_foreign_prefixes(p);
                    if let Ok(mut snap) = state.links.lock() {
                        snap.foreign_prefixes = path
                            .flow
                            .policy_mut()
                            .foreign_prefixes()
                            .map(|(a, l)| format!("{a}/{l}"))
                            .collect();
                    }
                }
            },
            _ = tick.tick() => {
                let now = clock.now();
                path.flow.sweep(now);
                pings.expire(now);
                if let Some(x) = exit.as_mut() {
                    x.refresh_local(link.link.peers(now).iter().map(|p| p.endpoint));
                    x.gateway.expire(now);
                }
            }
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => link.handle_timeout(clock.now()),
        }
        send_transmits(&mut link, &sockets, &mut tx).await;
        events.extend(link.drain_events());
        for e in events.drain(..) {
            match e {
                NodeEvent::Link(LinkEvent::Up { link: id, identity }) => {
                    tracing::info!(link = id.0, relay = identity.is_some(), "link up")
                }
                NodeEvent::Link(LinkEvent::Identified { link: id, .. }) => {
                    tracing::info!(link = id.0, "link identified: the peer is a relay")
                }
                NodeEvent::Link(LinkEvent::Down { link: id, .. }) => {
                    tracing::info!(link = id.0, "link down")
                }
                NodeEvent::Link(LinkEvent::Observed { endpoint }) => {
                    tracing::info!(%endpoint, "a neighbour sees us at this endpoint")
                }
                NodeEvent::Link(LinkEvent::Cell { .. }) => {}
                NodeEvent::Circuit(CircEvent::Built { id, build_ms }) => {
                    tracing::debug!(circuit = id.0, build_ms, "circuit built")
                }
                NodeEvent::Circuit(CircEvent::Closed { id, why }) => {
                    tracing::debug!(circuit = id.0, why, "circuit closed")
                }
                NodeEvent::Circuit(CircEvent::Message { .. }) => {}
                NodeEvent::Circuit(_) => {}
                NodeEvent::Dht { token, outcome } => {
                    if !names.on_dht(token, &outcome, clock.now()) {
                        tracing::debug!(token, ?outcome, "DHT query done")
                    }
                }
                NodeEvent::Packet { buf } => path.peer_packet(&mut link, clock.now(), buf),
                NodeEvent::ExitAnswer { buf } => path.exit_answer(&mut link, buf),
                NodeEvent::ExitPacket { slot, buf } => match exit.as_mut() {
                    Some(x) => x.client_packet(&mut link, clock.now(), slot, buf),
                    None => link.recycle_message(buf),
                },
                NodeEvent::ExitSession { slot, bind, buf } => {
                    if let Some(x) = exit.as_mut() {
                        x.session(&mut link, clock.now(), slot, &bind, &buf);
                    }
                }
                NodeEvent::ExitClosed { slot } => {
                    if let Some(x) = exit.as_mut() {
                        x.gateway.on_circuit_closed(clock.now(), slot);
                    }
                }
                NodeEvent::Unreachable { dst, why } => {
                    tracing::debug!(why, "an overlay destination is unreachable");
                    path.unreachable(&dst);
                    pings.unreachable(&dst, &why);
                }
                NodeEvent::Pong { id, rtt_ms, .. } => pings.answer(id, rtt_ms as f64),
                NodeEvent::Solve(req) => spawn_solve(req, state.commands.clone()),
                NodeEvent::Link(LinkEvent::Dht { .. } | LinkEvent::DialFailed { .. }) => {}
            }
        }
        names.pump(&mut link, clock.now());
        // Replies made while handling events (refusals) leave now, not at the next wake-up.
        send_transmits(&mut link, &sockets, &mut tx).await;
        while let Some(name) = link.link.poll_resolve() {
            spawn_resolve(name, state.commands.clone());
        }
        if let Some(g) = link.take_guards_to_save(clock.now()) {
            let path = state
                .config
                .state_dir
                .join(platform::state::CACHE_DIR)
                .join(crate::daemon::guard_file::GUARDS_FILE);
            save_guards(path, g, state.commands.clone());
        }
        if let Some(k) = link.take_onion_key_to_save() {
            let dir = state.config.state_dir.clone();
            save_onion_key(dir.clone(), dir.join(platform::state::CACHE_DIR), k);
        }
        let now = clock.now();
        if now.saturating_since(last_snapshot) >= 250 {
            last_snapshot = now;
            if let Ok(mut snap) = state.links.lock() {
                let l = &link.link;
                snap.peers = l.peers(now);
                snap.stats = l.stats().clone();
                snap.view = l.view().len();
                snap.view_sources = l.view().sources();
                snap.nat = l.nat().name();
                snap.observed = l.observed();
                snap.record = l.own_record().is_some();
                snap.circuits = link.circ.circuits(now);
                snap.relayed = link.circ.relayed_count();
                snap.circ_stats = link.circ.stats().clone();
                snap.path_error = link.path_error().map(str::to_string);
                snap.flow = path.flow.stats().clone();
                snap.flows = path.flow.flows();
                snap.queue_drops = path.queue_drops;
                snap.fq = path.fq.stats().clone();
                snap.to_kernel = path.to_kernel.stats().clone();
                snap.exit = exit.as_ref().map(|x| x.gateway.stats());
                snap.exit_circuit = link.exit_circuit_info(now);
                snap.services = link.services_info();
                snap.circuit_services = link.circuit_services();
                snap.sessions = link.sessions_info();
                snap.bootstrap = l.bootstrap_status();
                snap.guards = link.guards().len();
                snap.guards_temporary = link.guards().has_temporary();
                snap.guard_save_error = link.guard_save_error().map(str::to_string);
                snap.paths = link.path_relaxation(now);
                snap.local_endpoints = l.local_endpoints().to_vec();
                snap.at = now;
                let ready = snap.circuits.iter().any(|c| c.ready);
                snap.reason = l.isolation_reason(now).or_else(|| {
                    (!ready).then(|| match &snap.path_error {
                        Some(e) => format!("no circuits: {e}"),
                        None if snap.circuits.is_empty() => {
                            "no circuits yet: waiting for relays to choose paths from".to_string()
                        }
                        None => format!("no circuits yet: {} building", snap.circuits.len()),
                    })
                });
            }
        }
    }
}
