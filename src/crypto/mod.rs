//! Keys, key files, overlay addresses and the randomness secrets are made from (DESIGN.md
//! section 3).
//!
//! This module never logs or prints secret material: key types implement `Debug` as a short
//! fingerprint of the public half only. Every hash input starts with a label from [`labels`].

pub mod address;
pub mod hmac_midstate;
pub mod keys;
pub mod labels;
pub mod pow;
pub mod rng;
pub mod sigcache;

pub use address::{address_of, is_overlay, OVERLAY_PREFIX, OVERLAY_PREFIX_LEN};
pub use keys::{KeyError, NodeKeys};
pub use rng::{Randomness, SecretRng};
