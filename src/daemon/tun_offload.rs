//! The TUN reader and writer for a gn0 opened with TSO/USO offload (`tun.offload`,
//! docs/decisions.md): the same channels and recycled buffers as the plain tasks in `io.rs`, so
//! the link task, the flow layer and the fair queues see the same single packets either way.
//!
//! Reading: one read brings a virtio-net header and up to 64 KiB of one flow, cut here into
//! packets of at most the MTU (`flow::gso`). Writing: what the link task has queued is taken in
//! one batch and each TCP flow's consecutive packets go as one super-segment (`flow::gro`, as
//! wireguard-go does); the kernel's stack takes it as its own GRO would.

use super::*;
use crate::flow::gro;
use crate::flow::gso::{self, VNET_HDR_LEN};

/// Largest read: the header and a 64 KiB IP packet.
const READ_LEN: usize = VNET_HDR_LEN + 65_535;

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

/// Packets taken per write batch at most (the link task keeps the writer's channel 16 deep, so
/// a batch rarely finds more).
const WRITE_BATCH: usize = 64;

/// Writes the link task's packets in batches, a flow's consecutive packets coalesced into one
/// write (`flow::gro`), and hands their buffers back at once: each packet is copied behind room
/// for the virtio-net header into a buffer of the writer's own, sized once for a whole batch.
pub(super) async fn tun_writer(
    dev: Arc<tun_rs::AsyncDevice>,
    mut from_link: mpsc::Receiver<Vec<u8>>,
    bufs: mpsc::Sender<Vec<u8>>,
    state: Arc<NodeState>,
    mtu: usize,
) {
    let cap = 2 * VNET_HDR_LEN + WRITE_BATCH * mtu;
    let mut staged: Vec<Vec<u8>> = (0..WRITE_BATCH).map(|_| Vec::with_capacity(cap)).collect();
    let mut write = [false; WRITE_BATCH];
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
        let (Some(batch), Some(write)) = (staged.get_mut(..n), write.get_mut(..n)) else {
            continue;
        };
        gro::coalesce(batch, write);
        for (buf, w) in batch.iter().zip(write.iter()) {
            if !*w {
                continue;
            }
            state.tun.writes.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = dev.send(buf).await {
                tracing::debug!("writing to the TUN: {e}");
                state.tun.write_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        state.tun.packets_out.fetch_add(n as u64, Ordering::Relaxed);
    }
}
