//! The platform layer: the TUN device, its address and routes, and the privilege drop.
//!
//! Only this module and [`crate::flow`] touch the TUN. Nothing here parses packets.
//!
//! Set-up order matters and is fixed by [`crate::daemon`]: create the TUN and routes while
//! privileged, then [`privdrop::drop_to_user`] while the process still has one thread, then start
//! the multi-threaded runtime.

pub mod exit_net;
pub mod privdrop;
pub mod routes;
pub mod state;
pub mod tun;

/// Errors of the platform layer, in its own terms.
#[derive(Debug)]
pub enum PlatformError {
    /// Creating or configuring the TUN device failed.
    Tun(String),
    /// A netlink request (address, route, link) failed.
    Netlink(String),
    /// Changing user or capabilities failed.
    Privileges(String),
}

impl std::fmt::Display for PlatformError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlatformError::Tun(m) => write!(f, "TUN device: {m}"),
            PlatformError::Netlink(m) => write!(f, "netlink: {m}"),
            PlatformError::Privileges(m) => write!(f, "privileges: {m}"),
        }
    }
}

impl std::error::Error for PlatformError {}
