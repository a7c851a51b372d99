//! The circuit layer's cryptography (DESIGN.md section 5; docs/protocol.md sections 6-8): the
//! GN-NTOR circuit handshake, the per-hop key schedule, the GN-WB per-hop layer, replay windows,
//! and the per-circuit state of a relay ([`RelayHop`]) and of a client ([`ClientCircuit`]).
//!
//! Everything here is a pure state machine over byte buffers: no I/O, no clock, no threads, and no
//! heap allocation per cell. Cell and message formats are in `crate::wire` (`cell`, `relay`,
//! `handshake`). What this module must never do: log or `Debug`-print key material, panic on
//! anything that came from the network, or let a relay learn anything from a cell beyond what 6.9
//! lists.
//!
//! How the pieces fit:
//!
//! - client: [`ClientCircuit::create`] → CREATE cell; [`ClientCircuit::on_created`];
//!   [`ClientCircuit::extend`] → RELAY_EARLY(EXTEND); [`ClientCircuit::receive`] →
//!   EXTENDED → [`ClientCircuit::on_extended`]; then [`ClientCircuit::send`] / `receive`.
//! - relay: [`handshake::respond`] on CREATE → CREATED bytes + [`RelayHop::from_handshake`];
//!   [`RelayHop::forward`] for cells from upstream, [`RelayHop::backward`] for cells from
//!   downstream, [`RelayHop::originate`] at the last hop, and `begin_extend` / `finish_extend` /
//!   `fail_extend` around EXTEND.

pub mod client;
pub mod handshake;
pub mod hop;
pub mod keys;
pub mod layer;
pub mod onion;
pub mod path;
pub mod replay;
pub mod wideblock;

pub use client::{ClientCircuit, ClientError, SeqStart, MAX_CIRCUIT_HOPS};
pub use handshake::{
    respond, ClientHandshake, HandshakeError, HopTarget, OnionKey, RelayHandshake,
};
pub use hop::{Forward, HopError, RelayHop, CIRCUIT_MAX_CELLS, MAX_RELAY_EARLY};
pub use keys::{next_backward_seq_start, HopKeys, BACKWARD_SEQ_GAP, HOP_KEYS_LEN};
pub use onion::{OnionKeys, ONION_KEY_GRACE_MS, ONION_KEY_ROTATION_MS};
pub use replay::{ReplayError, ReplayWindow, MAX_SEQ_JUMP, REPLAY_WINDOW_CELLS};
pub use wideblock::{WbKeys, WB_LEFT_LEN, WB_TWEAK_LEN};
