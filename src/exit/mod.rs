//! Exits to the ordinary internet (issue #23; docs/decisions.md "Exits"): the exit's policy, the
//! signed form it publishes, and choosing an exit for a destination.

pub mod choose;
pub mod policy;
pub mod socks;
