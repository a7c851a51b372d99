//! Keys, key files and overlay addresses (DESIGN.md section 3).
//!
//! This module never logs or prints secret material: key types implement `Debug` as a short
//! fingerprint of the public half only. Every hash input starts with a label from [`labels`].

pub mod address;
pub mod keys;

pub use address::{address_of, is_overlay, OVERLAY_PREFIX, OVERLAY_PREFIX_LEN};
pub use keys::{KeyError, NodeKeys};

/// Domain-separation labels: every hash, KDF and signature input in GlobalNet starts with one.
/// docs/protocol.md lists the complete set; these are the ones the code uses so far.
pub mod labels {
    /// Input prefix of the overlay address hash.
    pub const ADDRESS_V1: &[u8] = b"globalnet address v1";
}
