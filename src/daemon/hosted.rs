//! The hidden services this node hosts, as the daemon keeps them: each one's name, overlay
//! address and open ports. The session layer holds their keys and protocol state
//! ([`crate::session::SessionLayer`]); the flow layer their ports; this list is what ties a
//! name to both for the control socket.

use std::net::Ipv6Addr;

use crate::config::Config;

/// The name `[expose]`'s service goes by.
pub const DEFAULT_SERVICE: &str = "default";

/// One hosted service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Hosted {
    /// `default` for `[expose]`.
    pub(super) name: String,
    /// Its overlay address.
    pub(super) address: Ipv6Addr,
    /// TCP ports open on its address.
    pub(super) tcp: Vec<u16>,
    /// UDP ports open on its address.
    pub(super) udp: Vec<u16>,
}

/// The services `config` hosts; `default_address` is the address of the node's default key.
/// The default service is hosted when `[expose]` lists ports.
pub(super) fn from_config(config: &Config, default_address: Ipv6Addr) -> Vec<Hosted> {
    let e = &config.expose;
    if e.tcp.is_empty() && e.udp.is_empty() {
        return Vec::new();
    }
    vec![Hosted {
        name: DEFAULT_SERVICE.into(),
        address: default_address,
        tcp: e.tcp.clone(),
        udp: e.udp.clone(),
    }]
}
