//! Proof that cell processing allocates nothing in steady state (DESIGN.md section 5, issue #5):
//! a counting global allocator, per thread, around the client's wrap/unwrap and every relay's
//! forward, backward and originate on a built 3-hop circuit.

mod alloc_counter;

use alloc_counter::allocations;

mod cell_support;

use cell_support::{build, random_ids, Relay};
use globalnet::circuit::Forward;
use globalnet::wire::cell::CELL_LEN;
use globalnet::wire::relay::RelayCommand;
use rand::rngs::StdRng;
use rand::SeedableRng;

#[test]
fn steady_state_cell_processing_does_not_allocate() {
    let mut rng = StdRng::seed_from_u64(42);
    let relays: Vec<Relay> = (0..3).map(|_| Relay::random(&mut rng)).collect();
    let ids = random_ids(&mut rng, 3);
    let mut c = build(&mut rng, &relays, &ids);
    let payload = [0x5au8; 1200];
    let mut cell = [0u8; CELL_LEN];

    let before = allocations();
    let mut delivered = 0usize;
    for _ in 0..300 {
        // forward: client wraps three layers, each relay removes one
        c.client
            .send(RelayCommand::Data, &payload, &mut cell)
            .unwrap_or_else(|_| panic!("send"));
        for hop in c.hops.iter_mut() {
            match hop.forward(&mut cell) {
                Ok(Forward::Relayed) => {}
                Ok(Forward::Delivered { message, .. }) => delivered += message.payload().len(),
                Ok(Forward::ResentExtend { .. }) | Err(_) => panic!("forward"),
            }
        }
        // backward: the last hop originates, the others add layers, the client removes them
        let (last, rest) = c.hops.split_last_mut().unwrap_or_else(|| panic!("hops"));
        last.originate(RelayCommand::Data, &payload, &mut cell)
            .unwrap_or_else(|_| panic!("originate"));
        for hop in rest.iter_mut().rev() {
            hop.backward(&mut cell)
                .unwrap_or_else(|_| panic!("backward"));
        }
        let m = c
            .client
            .receive(&mut cell)
            .unwrap_or_else(|_| panic!("receive"));
        delivered += m.payload().len();
        // a replay is refused without allocating either
        assert!(c.client.receive(&mut cell).is_err());
    }
    let after = allocations();
    assert_eq!(delivered, 2 * 300 * payload.len());
    assert_eq!(
        after - before,
        0,
        "cell processing allocated {} times",
        after - before
    );
    // the counter works: building a circuit does allocate
    let _ = build(&mut rng, &relays, &ids);
    assert!(allocations() > after);
}
