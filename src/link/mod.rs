//! The link layer (DESIGN.md section 4, docs/protocol.md section 4): one authenticated, encrypted
//! WireGuard session per neighbour, the relay view, bootstrap and peer exchange. It carries cells
//! without reading them and knows nothing of services.
pub mod bootstrap;
pub mod layer;
pub mod nat;
pub mod noise;
pub mod view;

pub use bootstrap::{BootstrapInfo, BootstrapPeer};
pub use layer::{
    LinkConfig, LinkError, LinkEvent, LinkId, LinkKeys, LinkLayer, LinkStats, PeerInfo, Transmit,
};
