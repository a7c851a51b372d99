//! Names under `.gn.alt` (docs/protocol.md section 18): what a name resolves to.
//!
//! Three layers, strongest first as the resolver tries them: petnames the user wrote down
//! ([`petnames`]), key names that carry their key ([`keyname`]), and names the network issues
//! (claims in the DHT). A petname always wins, so a name the user chose can never be taken over
//! from outside.

pub mod keyname;

pub use keyname::{KeyName, KeyNameError, SUFFIX};
