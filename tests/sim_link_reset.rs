//! A link one side lost while the other kept it (issue #19): under an INTRODUCE1 flood a relay
//! gave up its link to a service, the service re-handshook without ever seeing the link go down,
//! and the service's intro circuits over it were dead at the relay but alive at the service. The
//! side that kept the link must find out (docs/protocol.md 4.7): when the peer that was up on it
//! asks for our HELLO again, the link is closed on both sides, so the circuits over it are
//! destroyed at both ends and their owners rebuild them.

use globalnet::link::LinkEvent;
use globalnet::node::NodeEvent;
use globalnet::sim::{Sim, SimConfig};

#[test]
fn a_link_the_peer_forgot_goes_down_on_both_sides() {
    let mut sim = Sim::new(SimConfig {
        seed: 7,
        ..SimConfig::default()
    });
    sim.add_node(true, &[], 3);
    for _ in 1..4 {
        sim.add_node(true, &[0], 3);
    }
    // Long enough for peer exchange on every link (the peer shows it is up on the link).
    sim.run_for(60_000);
    let (a, b) = (1, 2);
    let b_ident = sim.nodes[b].node.link.identity();
    let a_ident = sim.nodes[a].node.link.identity();
    let at_a = sim.nodes[a]
        .node
        .link
        .link_to(&b_ident)
        .expect("a links to b");
    let at_b = sim.nodes[b]
        .node
        .link
        .link_to(&a_ident)
        .expect("b links to a");

    // `a` forgets the link silently and dials `b` again under the same keys: `b` sees only a
    // new WireGuard handshake on a link it holds.
    sim.nodes[a].node.link.forget_link(at_a);
    let (key, addr, now) = (sim.nodes[b].link_key, sim.nodes[b].addr, sim.now);
    sim.nodes[a]
        .node
        .link
        .connect(now, key, addr)
        .expect("dial");
    sim.flush(a);
    let seen = sim.nodes[b].events.len();
    sim.run_for(5_000);
    let down = sim.nodes[b].events[seen..]
        .iter()
        .any(|e| matches!(e, NodeEvent::Link(LinkEvent::Down { link, .. }) if *link == at_b));
    assert!(down, "b never saw its old link to a go down");
    assert_eq!(sim.nodes[b].node.link.stats().peer_resets, 1);

    // Both sides link again afresh.
    sim.run_for(20_000);
    let again = sim.nodes[b].node.link.link_to(&a_ident);
    assert!(
        again.is_some() && again != Some(at_b),
        "b: {again:?} (old {at_b:?})"
    );
    assert!(sim.nodes[a].node.link.link_to(&b_ident).is_some());
}
