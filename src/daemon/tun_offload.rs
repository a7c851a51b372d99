//! The TUN reader and writer for a gn0 opened with TSO/USO offload (`tun.offload`,
//! docs/decisions.md): the same channels and recycled buffers as the plain tasks in `io.rs`, so
//! the link task, the flow layer and the fair queues see the same single packets either way.
//!
//! Reading: one read brings a virtio-net header and up to 64 KiB of one flow, cut here into
//! packets of at most the MTU (`flow::gso`). Writing: one packet per write behind a plain
//! header.

use super::*;
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

/// Writes the link task's packets, each behind a plain virtio-net header (no offload asked).
///
/// Not coalesced: tun-rs's GRO table copies every packet it looks at into a new `Vec`
/// (`tcp_gro`), an allocation per packet on the hot path (tests/flow_alloc.rs
/// `offload_cut_and_coalesce_allocate_nothing` found it); docs/benchmarks.md, "TUN offload".
pub(super) async fn tun_writer(
    dev: Arc<tun_rs::AsyncDevice>,
    mut from_link: mpsc::Receiver<Vec<u8>>,
    bufs: mpsc::Sender<Vec<u8>>,
    state: Arc<NodeState>,
) {
    let plain = [0u8; VNET_HDR_LEN];
    while let Some(p) = from_link.recv().await {
        let iov = [std::io::IoSlice::new(&plain), std::io::IoSlice::new(&p)];
        state.tun.writes.fetch_add(1, Ordering::Relaxed);
        match dev.send_vectored(&iov).await {
            Ok(_) => state.tun.packets_out.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                tracing::debug!("writing to the TUN: {e}");
                state.tun.write_errors.fetch_add(1, Ordering::Relaxed)
            }
        };
        let _ = bufs.try_send(p);
    }
}
