//! The daemon's batched UDP path (GSO send, `recvmmsg`/GRO receive through `wire::udp`) allocates
//! nothing per datagram in steady state, counted with a global allocator on this thread.

mod alloc_counter;

use globalnet::wire::udp::{bind, Port, RecvBatch, SendBatch};
use std::net::SocketAddr;

/// Sends `n` datagrams of 1424 bytes (the size of a cell's datagram) and receives them all.
async fn round(
    tx: &Port,
    rx: (&Port, SocketAddr),
    sb: &mut SendBatch,
    rb: &mut RecvBatch,
    d: &[u8],
    n: usize,
) {
    let (rx, to) = rx;
    for _ in 0..n {
        tx.queue(sb, to, None, d).await.unwrap();
    }
    tx.flush(sb).await.unwrap();
    let mut got = 0;
    while got < n {
        rx.recv_batch(rb).await.unwrap();
        for (p, _) in rb.datagrams() {
            assert_eq!(p, d);
            got += 1;
        }
    }
    assert_eq!(got, n);
}

#[test]
fn batched_udp_allocates_nothing_per_datagram() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    rt.block_on(async {
        let rs = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = rs.local_addr().unwrap();
        let rx = Port::new(rs, false).unwrap();
        let tx = Port::new(bind("127.0.0.1:0".parse().unwrap()).unwrap(), false).unwrap();
        let mut sb = SendBatch::default();
        let mut rb = RecvBatch::new(&rx);
        let d = vec![0x5a; 1424];
        println!("GSO segments per send: {}", tx.max_segments());
        // Warm-up: the runtime's readiness registrations and any lazily built state.
        for _ in 0..20 {
            round(&tx, (&rx, to), &mut sb, &mut rb, &d, 64).await;
        }
        let before = alloc_counter::allocations();
        for _ in 0..50 {
            round(&tx, (&rx, to), &mut sb, &mut rb, &d, 64).await;
        }
        let n = alloc_counter::allocations() - before;
        assert_eq!(
            n, 0,
            "{n} allocations for 3,200 datagrams sent and received"
        );
    });
}
