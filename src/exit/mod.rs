//! Exits to the ordinary internet (issue #23; docs/decisions.md "Exits"): the exit's policy, the
//! signed form it publishes, choosing an exit for a destination, and the packet path at both ends
//! (`gateway` at the exit, `client` at the client; the IP handling they share in `packet`).

pub mod choose;
pub mod client;
pub mod gateway;
pub mod packet;
pub mod policy;
pub mod session;
pub mod socks;
