//! The daemon's batched UDP path (GSO send, `recvmmsg`/GRO receive through `wire::udp`) allocates
//! nothing per datagram in steady state, counted with a global allocator on this thread.

mod alloc_counter;

use globalnet::wire::udp::{bind, Port, RecvBatch, SendBatch, SendThread, Sends};
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

/// Sends `n` numbered datagrams through `tx` (a send thread's or inline) and checks that all
/// arrive, in order, starting at number `first`.
async fn numbered_round(
    port: &Port,
    tx: &mut Sends,
    rx: (&Port, SocketAddr),
    rb: &mut RecvBatch,
    d: &mut [u8],
    first: u32,
    n: u32,
) {
    let (rx, to) = rx;
    for i in first..first + n {
        d[..4].copy_from_slice(&i.to_be_bytes());
        tx.queue(port, to, None, d).await.unwrap();
    }
    tx.flush(port).await.unwrap();
    let mut next = first;
    while next < first + n {
        rx.recv_batch(rb).await.unwrap();
        for (p, _) in rb.datagrams() {
            assert_eq!(p.len(), d.len());
            assert_eq!(
                u32::from_be_bytes(p[..4].try_into().unwrap()),
                next,
                "out of order"
            );
            next += 1;
        }
    }
}

#[test]
fn send_thread_keeps_order_and_the_link_side_allocates_nothing_per_datagram() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let rs = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = rs.local_addr().unwrap();
        let rx = Port::new(rs, false).unwrap();
        let port = Port::new(bind("127.0.0.1:0".parse().unwrap()).unwrap(), false).unwrap();
        let mut tx = Sends::Thread(SendThread::start(&port).unwrap());
        let mut rb = RecvBatch::new(&rx);
        let mut d = vec![0x5a; 1424];
        let mut first = 0;
        // Warm-up: the channels' blocks, the runtime's readiness registrations.
        for _ in 0..20 {
            numbered_round(&port, &mut tx, (&rx, to), &mut rb, &mut d, first, 64).await;
            first += 64;
        }
        // The thread's half (Port::flush) is the inline path the test above counts; this thread's
        // half is the batches' filling and the hand-over through the channels.
        let before = alloc_counter::allocations();
        for _ in 0..50 {
            numbered_round(&port, &mut tx, (&rx, to), &mut rb, &mut d, first, 64).await;
            first += 64;
        }
        let n = alloc_counter::allocations() - before;
        assert_eq!(
            n, 0,
            "{n} allocations for 3,200 datagrams handed to the send thread"
        );
        // A short datagram closes its batch; the next full-size one starts another, in order.
        let mut short = vec![0x11; 200];
        for (i, len) in [(first, 1424), (first + 1, 200), (first + 2, 1424)] {
            let buf: &mut [u8] = if len == 200 { &mut short } else { &mut d };
            buf[..4].copy_from_slice(&i.to_be_bytes());
            tx.queue(&port, to, None, buf).await.unwrap();
        }
        tx.flush(&port).await.unwrap();
        let mut got = Vec::new();
        while got.len() < 3 {
            rx.recv_batch(&mut rb).await.unwrap();
            for (p, _) in rb.datagrams() {
                got.push((u32::from_be_bytes(p[..4].try_into().unwrap()), p.len()));
            }
        }
        assert_eq!(
            got,
            vec![(first, 1424), (first + 1, 200), (first + 2, 1424)]
        );
    });
}
