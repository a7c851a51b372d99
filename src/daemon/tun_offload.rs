//! The TUN reader and writer for a gn0 opened with TSO/USO offload (`tun.offload`,
//! docs/decisions.md): the same channels and recycled buffers as the plain tasks in `io.rs`, so
//! the link task, the flow layer and the fair queues see the same single packets either way.
//!
//! Reading: one read brings a virtio-net header and up to 64 KiB of one flow, cut here into
//! packets of at most the MTU (`flow::gso`). Writing: what the link task has queued is taken in
//! one batch and tun-rs's GRO table coalesces the packets of each TCP (and UDP) flow into one
//! write, as wireguard-go does; the kernel's stack takes the super-segment as its own GRO would.

use super::*;
use crate::flow::gso::{self, VNET_HDR_LEN};

/// Largest read: the header and a 64 KiB IP packet.
const READ_LEN: usize = VNET_HDR_LEN + 65_535;
/// Packets coalesced per write batch at most (the link task keeps the writer's channel 16 deep,
/// so a batch rarely finds more).
const WRITE_BATCH: usize = 64;

/// Reads super-segments from the offload TUN and hands their packets, one recycled buffer each,
/// to the link task.
pub(super) async fn tun_reader(
    dev: Arc<tun_rs::AsyncDevice>,
    to_link: mpsc::Sender<Vec<u8>>,
    mut bufs: mpsc::Receiver<Vec<u8>>,
    buf_len: usize,
    state: Arc<NodeState>,
) -> std::io::Result<()> {
    let mut read = vec![0u8; READ_LEN];
    loop {
        let n = dev.recv(&mut read).await?;
        state.tun.reads.fetch_add(1, Ordering::Relaxed);
        let Some(got) = read.get_mut(..n) else {
            continue;
        };
        let plan = match gso::parse(got, buf_len) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(?e, len = n, "read from the TUN not cut");
                state.tun.read_errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        for i in 0..plan.count() {
            let mut buf = bufs
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(buf_len));
            if plan.write_segment(got, i, &mut buf).is_err() {
                state.tun.read_errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
            state.tun.packets_in.fetch_add(1, Ordering::Relaxed);
            if to_link.send(buf).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// Writes the link task's packets in batches, coalesced per flow, and hands their buffers back
/// at once (each packet is copied behind room for the virtio-net header into a buffer of the
/// writer's own, which GRO may grow a flow's packets into).
pub(super) async fn tun_writer(
    dev: Arc<tun_rs::AsyncDevice>,
    mut from_link: mpsc::Receiver<Vec<u8>>,
    bufs: mpsc::Sender<Vec<u8>>,
    state: Arc<NodeState>,
    mtu: usize,
) {
    let mut gro = tun_rs::GROTable::new();
    // GRO appends a flow's packets to its first one while the buffer's capacity allows, never
    // beyond: sized once for a whole batch, no write allocates.
    let cap = 2 * VNET_HDR_LEN + WRITE_BATCH * mtu;
    let mut staged: Vec<Vec<u8>> = (0..WRITE_BATCH).map(|_| Vec::with_capacity(cap)).collect();
    while let Some(first) = from_link.recv().await {
        let mut n = 0;
        let mut next = Some(first);
        while let Some(p) = next.take() {
            if let Some(s) = staged.get_mut(n) {
                s.clear();
                s.resize(VNET_HDR_LEN, 0);
                s.extend_from_slice(&p);
                n += 1;
            }
            let _ = bufs.try_send(p);
            if n < WRITE_BATCH {
                next = from_link.try_recv().ok();
            }
        }
        let Some(batch) = staged.get_mut(..n) else {
            continue;
        };
        state.tun.writes.fetch_add(1, Ordering::Relaxed);
        match dev.send_multiple(&mut gro, batch, VNET_HDR_LEN).await {
            Ok(_) => state.tun.packets_out.fetch_add(n as u64, Ordering::Relaxed),
            Err(e) => {
                tracing::debug!("writing to the TUN: {e}");
                state.tun.write_errors.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}
