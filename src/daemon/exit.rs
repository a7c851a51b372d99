//! The daemon's exit I/O (docs/decisions.md "Exits"): `gnx0`'s reader and writer tasks, and the
//! link task's side: client packets through the gateway into `gnx0`, answers from `gnx0` back on
//! their circuit. Buffers go round (reader → link task → reader, link task → writer → link
//! task), so steady traffic allocates nothing.

use super::*;
use crate::exit::gateway::{ExitGateway, Outbound};

/// Bytes read from `gnx0` at most (its MTU is 1280; room for a larger packet the kernel should
/// not send, which the gateway then drops).
const GNX_BUF: usize = 1500;

/// The link task's exit state.
pub(super) struct ExitIo {
    pub(super) gateway: ExitGateway,
    from_gnx: mpsc::Receiver<Vec<u8>>,
    reader_bufs: mpsc::Sender<Vec<u8>>,
    to_gnx: mpsc::Sender<Vec<u8>>,
    written: mpsc::Receiver<Vec<u8>>,
    reply: Vec<u8>,
    pub(super) queue_drops: u64,
    /// The host's own networks (its interfaces' prefixes), read at start.
    own_networks: Vec<ipnet::IpNet>,
}

/// The prefixes of the host's interfaces but gn0 and gnx0: an exit refuses them (its own LAN,
/// its public network) unless `allow_networks` lists them.
fn own_networks() -> Vec<ipnet::IpNet> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<ipnet::IpNet> = Vec::new();
    for a in addrs {
        if a.interface_name == platform::exit_net::GNX_NAME || a.interface_name.starts_with("gn") {
            continue;
        }
        let (Some(addr), Some(mask)) = (a.address, a.netmask) else {
            continue;
        };
        let net = match (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
            (Some(ip), Some(m)) => ipnet::Ipv4Net::with_netmask(ip.ip(), m.ip())
                .ok()
                .map(|n| ipnet::IpNet::V4(n.trunc())),
            _ => match (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
                (Some(ip), Some(m)) => ipnet::Ipv6Net::with_netmask(ip.ip(), m.ip())
                    .ok()
                    .map(|n| ipnet::IpNet::V6(n.trunc())),
                _ => None,
            },
        };
        if let Some(n) = net.filter(|n| !out.contains(n)) {
            out.push(n);
        }
    }
    out
}

impl ExitIo {
    /// Starts `gnx0`'s tasks (inside the runtime).
    pub(super) fn start(
        dev: tun_rs::SyncDevice,
        gateway: ExitGateway,
    ) -> Result<ExitIo, DaemonError> {
        let dev = Arc::new(platform::tun::into_async(dev).map_err(ctx("gnx0"))?);
        let (from_tx, from_rx) = mpsc::channel(PACKET_QUEUE);
        let (bufs_tx, mut bufs_rx) = mpsc::channel::<Vec<u8>>(PACKET_QUEUE * 2);
        let (to_tx, mut to_rx) = mpsc::channel::<Vec<u8>>(PACKET_QUEUE);
        let (written_tx, written_rx) = mpsc::channel(PACKET_QUEUE * 2);
        let reader = dev.clone();
        tokio::spawn(async move {
            loop {
                let mut buf = bufs_rx
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(GNX_BUF));
                buf.resize(GNX_BUF, 0);
                match reader.recv(&mut buf).await {
                    Ok(n) => buf.truncate(n),
                    Err(e) => {
                        tracing::warn!("reading gnx0: {e}");
                        return;
                    }
                }
                if from_tx.send(buf).await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            while let Some(buf) = to_rx.recv().await {
                if let Err(e) = dev.send(&buf).await {
                    tracing::debug!("writing to gnx0: {e}");
                }
                let _ = written_tx.try_send(buf);
            }
        });
        Ok(ExitIo {
            gateway,
            from_gnx: from_rx,
            reader_bufs: bufs_tx,
            to_gnx: to_tx,
            written: written_rx,
            reply: Vec::with_capacity(GNX_BUF),
            queue_drops: 0,
            own_networks: own_networks(),
        })
    }

    /// Refreshes what the policy refuses beyond the default: the host's own networks and the
    /// underlay addresses of its neighbours (so no client reaches a relay through the exit).
    pub(super) fn refresh_local(&mut self, neighbours: impl Iterator<Item = SocketAddr>) {
        let mut nets = self.own_networks.clone();
        for ip in neighbours.map(|e| e.ip().to_canonical()) {
            let n = ipnet::IpNet::from(ip);
            if !nets.contains(&n) {
                nets.push(n);
            }
        }
        self.gateway.policy_mut().set_local(nets);
    }

    /// The next packet from `gnx0`; pending forever without an exit.
    pub(super) async fn recv(exit: Option<&mut ExitIo>) -> Option<Vec<u8>> {
        match exit {
            Some(e) => e.from_gnx.recv().await,
            None => std::future::pending().await,
        }
    }

    /// A client's packet from circuit `slot`: out through `gnx0`, or refused on the circuit.
    pub(super) fn client_packet(
        &mut self,
        node: &mut Node,
        now: time::Instant,
        slot: u64,
        buf: Vec<u8>,
    ) {
        let mut out = self
            .written
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(GNX_BUF));
        out.clear();
        out.extend_from_slice(&buf);
        node.recycle_message(buf);
        match self
            .gateway
            .on_circuit_packet(now, slot, &mut out, &mut self.reply)
        {
            Outbound::Forward => {
                if self.to_gnx.try_send(out).is_err() {
                    self.queue_drops += 1;
                }
            }
            Outbound::Refuse(why) => {
                tracing::trace!(?why, "refused a packet at the exit");
                if let Err(e) = node.exit_reply(now, slot, &self.reply) {
                    tracing::trace!("refusal not sent: {e}");
                }
                let _ = self.reader_bufs.try_send(out);
            }
            Outbound::Drop(why) => {
                tracing::trace!(?why, "dropped a packet at the exit");
                let _ = self.reader_bufs.try_send(out);
            }
        }
    }

    /// An `EXIT_SESSION` on circuit `slot` (protocol.md 7.4): answered on the circuit.
    pub(super) fn session(
        &mut self,
        node: &mut Node,
        now: time::Instant,
        slot: u64,
        bind: &[u8; 32],
        payload: &[u8],
    ) {
        let Some(ack) = self.gateway.on_session(now, slot, bind, payload) else {
            return;
        };
        tracing::debug!(status = ?ack.status, "exit session request");
        if let Err(e) = node.exit_session_reply(now, slot, &ack) {
            tracing::debug!("exit session answer not sent: {e}");
        }
    }

    /// An answer the kernel wrote to `gnx0`: back on its circuit.
    pub(super) fn gnx_packet(&mut self, node: &mut Node, now: time::Instant, mut buf: Vec<u8>) {
        if let Some(slot) = self.gateway.on_tun_packet(&mut buf) {
            if let Err(e) = node.exit_reply(now, slot, &buf) {
                tracing::trace!("answer not sent: {e}");
            }
        }
        let _ = self.reader_bufs.try_send(buf);
    }
}

#[cfg(test)]
mod tests {
    /// The host's networks are read (loopback is on every host), gn0/gnx0 never among them.
    #[test]
    fn own_networks_are_read() {
        let nets = super::own_networks();
        assert!(
            nets.iter().any(|n| n.to_string() == "127.0.0.0/8"),
            "{nets:?}"
        );
        assert!(!nets.iter().any(|n| n.to_string().starts_with("100.127.")));
    }
}
