//! One hostile identity with its own socket: a whole node or a bare link layer, driven by the
//! tool's loop, and what happened at it in the tool's terms.

use crate::*;
use globalnet::budget::MemoryBudget;
use globalnet::circuit::layer::{CircEvent, CircId};
use globalnet::circuit::OnionKey;
use globalnet::crypto::Randomness;
use globalnet::link::{BootstrapPeer, LinkConfig, LinkEvent, LinkId, LinkLayer};
use globalnet::node::dht::DhtOutcome;
use globalnet::node::{Node, NodeEvent};
use globalnet::time::{self, Clock};
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};

/// What an agent drives: a whole node (circuits) or a bare link layer (DHT frames).
pub(crate) enum Engine {
    Node(Box<Node>),
    Link(Box<LinkLayer>),
}

/// What happened at an agent, in the tool's terms.
pub(crate) enum Ev {
    Up(LinkId, Option<[u8; 32]>),
    Down,
    Built(CircId),
    Closed(CircId),
    Msg(CircId, u8, Vec<u8>),
    Dht(u64, DhtOutcome),
    DhtReply(Vec<u8>),
}

/// One hostile identity with its own socket.
pub(crate) struct Agent {
    pub(crate) engine: Engine,
    pub(crate) sock: UdpSocket,
    /// The link to the target, once up.
    pub(crate) link: Option<LinkId>,
    pub(crate) buf: Vec<u8>,
}

impl Agent {
    pub(crate) fn new(
        cli: &Cli,
        clock: &Clock,
        relay: bool,
        links: usize,
    ) -> Result<Agent, String> {
        let sock = globalnet::wire::udp::bind(SocketAddr::new(cli.bind, 0))
            .map_err(|e| format!("bind {}: {e}", cli.bind))?;
        sock.set_nonblocking(true)
            .map_err(|e| format!("set_nonblocking: {e}"))?;
        let local = sock.local_addr().map_err(|e| format!("local_addr: {e}"))?;
        let (keys, onion) = fresh_keys();
        let cfg = LinkConfig {
            relay,
            // A relay identity needs a record at once (its HELLO binds it); a client has none.
            advertise: if relay { vec![local] } else { vec![] },
            bootstrap: vec![BootstrapPeer::Addr(cli.target)],
            target_links: links,
            max_links: 64,
            prefix_bits: (32, 128),
            exit: false,
        };
        let mut rand = Randomness::from_os();
        let link = LinkLayer::new(
            cfg,
            keys,
            MemoryBudget::new(256 << 20),
            rand.split("link"),
            clock.now(),
        );
        let engine = if relay {
            Engine::Link(Box::new(link))
        } else {
            let mut node = Node::new(link, OnionKey::from_secret(onion), rand, clock.now());
            // Our own circuits only (a scout for the descriptor keeps the pool: DHT queries).
            node.set_pool_target(if links > 1 { 2 } else { 0 });
            Engine::Node(Box::new(node))
        };
        Ok(Agent {
            engine,
            sock,
            link: None,
            buf: vec![0u8; 65536],
        })
    }

    pub(crate) fn node(&mut self) -> Option<&mut Node> {
        match &mut self.engine {
            Engine::Node(n) => Some(n),
            Engine::Link(_) => None,
        }
    }

    /// Reads what arrived, runs timers, sends what is queued; returns the events.
    pub(crate) fn step(&mut self, now: time::Instant, out: &mut Vec<Ev>) -> bool {
        let mut busy = false;
        for _ in 0..256 {
            match self.sock.recv_from(&mut self.buf) {
                Ok((n, from)) => {
                    busy = true;
                    if let Some(d) = self.buf.get(..n) {
                        match &mut self.engine {
                            Engine::Node(x) => x.handle_datagram(now, from, d),
                            Engine::Link(x) => x.handle_datagram(now, from, d),
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
        match &mut self.engine {
            Engine::Node(x) => {
                if x.poll_timeout().is_some_and(|t| now >= t) {
                    x.handle_timeout(now);
                }
                x.pump(now);
                while let Some(t) = x.poll_transmit() {
                    let _ = self.sock.send_to(&t.data, t.dst);
                    x.recycle(t.data);
                }
                for e in x.drain_events() {
                    match e {
                        NodeEvent::Link(LinkEvent::Up { link, identity }) => {
                            out.push(Ev::Up(link, identity))
                        }
                        NodeEvent::Link(LinkEvent::Down { .. }) => out.push(Ev::Down),
                        NodeEvent::Circuit(CircEvent::Built { id, .. }) => out.push(Ev::Built(id)),
                        NodeEvent::Circuit(CircEvent::Closed { id, .. }) => {
                            out.push(Ev::Closed(id))
                        }
                        NodeEvent::Circuit(CircEvent::Message { id, cmd, payload }) => {
                            out.push(Ev::Msg(id, cmd, payload))
                        }
                        NodeEvent::Dht { token, outcome } => out.push(Ev::Dht(token, outcome)),
                        _ => {}
                    }
                }
            }
            Engine::Link(x) => {
                if x.poll_timeout().is_some_and(|t| now >= t) {
                    x.handle_timeout(now);
                }
                while let Some(t) = x.poll_transmit() {
                    let _ = self.sock.send_to(&t.data, t.dst);
                    x.recycle(t.data);
                }
                while let Some(e) = x.poll_event() {
                    match e {
                        LinkEvent::Up { link, identity } => out.push(Ev::Up(link, identity)),
                        LinkEvent::Down { .. } => out.push(Ev::Down),
                        LinkEvent::Dht {
                            response: true,
                            data,
                            ..
                        } => out.push(Ev::DhtReply(data)),
                        LinkEvent::Cell { cell, .. } => x.recycle(cell),
                        _ => {}
                    }
                }
            }
        }
        busy
    }

    pub(crate) fn flush(&mut self, now: time::Instant) {
        if let Engine::Node(x) = &mut self.engine {
            x.pump(now);
            while let Some(t) = x.poll_transmit() {
                let _ = self.sock.send_to(&t.data, t.dst);
                x.recycle(t.data);
            }
        } else if let Engine::Link(x) = &mut self.engine {
            while let Some(t) = x.poll_transmit() {
                let _ = self.sock.send_to(&t.data, t.dst);
                x.recycle(t.data);
            }
        }
    }
}
