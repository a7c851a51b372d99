//! GlobalNet: a decentralized, anonymous overlay network that looks like an IPv6 network.
//!
//! The daemon is layered as `../shared/DESIGN.md` section 2 describes; each layer is a module and a
//! lower layer never imports a higher one:
//!
//! | module       | layer / job                                                          |
//! |--------------|----------------------------------------------------------------------|
//! | [`platform`] | TUN device, addresses, routes, privilege drop                        |
//! | [`wire`]     | byte formats: link frames, cells, handshakes, records                |
//! | [`link`]     | one encrypted session per neighbour, relay view, bootstrap, NAT      |
//! | [`circuit`]  | cell crypto, circuit handshake, building and relaying circuits       |
//! | [`dht`]      | records and descriptors stored and looked up over circuits           |
//! | [`session`]  | end-to-end sessions between a client pseudonym and a service         |
//! | [`node`]     | one node's protocol state: the layers joined, sans-IO                |
//! | [`flow`]     | what to do with each packet the kernel hands to the TUN              |
//! | [`crypto`]   | keys, key files and overlay addresses                                |
//! | [`config`]   | the TOML configuration and its validation                            |
//! | [`control`]  | the Unix control socket (daemon side and client side)                |
//! | [`cli`]      | the `globalnet` command line                                         |
//! | [`daemon`]   | wires the layers together and owns the I/O tasks                     |
//! | [`demo`]     | `globalnet demo`: a local network in namespaces reaching a service   |
//! | [`names`]    | names under `.gn.alt`: key names, petnames, network-issued names      |
//! | [`exit`]     | exits to the ordinary internet: policy, published policy, choice     |
//! | [`budget`]   | one memory budget for every queue and table a stranger can fill      |
//! | [`time`]     | instants and durations, the clock, rate limits, repeated-log damping |
//! | [`sim`]      | the in-process network: many nodes under virtual time, repeatable    |
//!
//! docs/protocol.md specifies the wire formats.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod budget;
pub mod circuit;
pub mod cli;
pub mod config;
pub mod control;
pub mod crypto;
pub mod daemon;
pub mod demo;
pub mod dht;
pub mod exit;
pub mod flow;
pub mod link;
pub mod names;
pub mod node;
pub mod platform;
pub mod session;
pub mod sim;
pub mod time;
pub mod wire;
