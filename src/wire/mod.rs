//! Bytes on the wire: one module per format, each a checked view over a byte buffer plus an
//! `emit` (smoltcp style). Parsing never allocates and never panics; fuzz targets call exactly these
//! constructors. Lengths and offsets are named constants that match docs/protocol.md.

pub mod cell;
pub mod datagram;
pub mod exit_policy;
pub mod handshake;
pub mod link;
pub mod reader;
pub mod record;
pub mod relay;
pub mod udp;
