//! Tests with real daemons, real TUN devices and real kernel routes in network namespaces.
//!
//! They need root. Without root they are skipped, unless `GN_NETNS_REQUIRED=1` is set (the
//! README's test command and CI set it), which makes that a failure. See `harness/mod.rs`.

mod harness;

mod circuits;
mod demo;
mod deployment;
mod dht;
mod exits;
mod failover;
mod foundation;
mod hostile;
mod links;
mod multiservice;
mod names;
mod nat;
mod nat_minority;
mod services;
