//! The link layer's public types: what goes in ([`LinkConfig`], [`LinkKeys`]) and what comes
//! out ([`Transmit`], [`LinkEvent`], [`LinkError`], [`LinkStats`], [`PeerInfo`]).

use ed25519_dalek::SigningKey;
use std::net::{IpAddr, SocketAddr};
use x25519_dalek::StaticSecret;

use crate::link::bootstrap::BootstrapPeer;

/// A link, named locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub u32);

/// A datagram to send.
#[derive(Debug)]
pub struct Transmit {
    /// Where to.
    pub dst: SocketAddr,
    /// Our address to send from: the one the peer wrote to (`None`: the kernel chooses).
    pub src: Option<IpAddr>,
    /// The bytes; hand the buffer back with [`LinkLayer::recycle`](super::LinkLayer::recycle) when sent.
    pub data: Vec<u8>,
}

/// What the layers above hear from the link layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A link completed HELLO. `identity` is `None` for a client-only peer.
    Up {
        /// The link.
        link: LinkId,
        /// The peer's relay identity, if it is a relay.
        identity: Option<[u8; 32]>,
    },
    /// A peer that came up without a relay record (a NATed relay that did not know its
    /// endpoint yet) sent one later: from now on it is this relay.
    Identified {
        /// The link.
        link: LinkId,
        /// The peer's relay identity.
        identity: [u8; 32],
    },
    /// A link is gone.
    Down {
        /// The link.
        link: LinkId,
        /// The peer's relay identity, if it was bound.
        identity: Option<[u8; 32]>,
    },
    /// A cell arrived (exactly `CELL_LEN` bytes; hand the buffer back with
    /// [`LinkLayer::recycle`](super::LinkLayer::recycle)).
    Cell {
        /// The link it came on.
        link: LinkId,
        /// The cell.
        cell: Vec<u8>,
    },
    /// A DHT_REQUEST or DHT_RESPONSE frame (docs/protocol.md 12.2) from a neighbour.
    Dht {
        /// The link it came on.
        link: LinkId,
        /// The frame's `rpc_id`.
        rpc_id: u64,
        /// DHT_RESPONSE (else DHT_REQUEST).
        response: bool,
        /// The DHT message.
        data: Vec<u8>,
    },
    /// A neighbour told us the endpoint it sees us at.
    Observed {
        /// Our endpoint as seen from outside.
        endpoint: SocketAddr,
    },
    /// A link we dialled (for [`LinkLayer::connect`](super::LinkLayer::connect)) never came up.
    DialFailed {
        /// The peer's link key.
        peer_key: [u8; 32],
    },
}

/// Errors of the link layer's commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// No such link, or it is not ready.
    NoLink,
    /// The memory budget or a link limit refused it.
    Limit,
    /// The message does not fit a frame.
    TooLarge,
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::NoLink => write!(f, "no such link"),
            LinkError::Limit => write!(f, "link or memory limit reached"),
            LinkError::TooLarge => write!(f, "message too large for a link frame"),
        }
    }
}

impl std::error::Error for LinkError {}

/// The node's keys as the link layer needs them. The service identity is deliberately absent.
pub struct LinkKeys {
    /// Relay identity (signs the relay record).
    pub identity: SigningKey,
    /// X25519 link key.
    pub link: StaticSecret,
    /// Current onion public key (published in the record).
    pub onion_public: [u8; 32],
}

/// Settings of the link layer.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Relay for others: accept links from anyone and publish a relay record.
    pub relay: bool,
    /// Our endpoints as others should dial them; empty means "learn from reflection".
    pub advertise: Vec<SocketAddr>,
    /// Peers to bootstrap from.
    pub bootstrap: Vec<BootstrapPeer>,
    /// Links to relays to keep.
    pub target_links: usize,
    /// Most links at once.
    pub max_links: usize,
    /// Family prefix lengths (IPv4, IPv6) for the view's caps.
    pub prefix_bits: (u8, u8),
    /// Serve as an exit (`[exit] enabled`): our record carries the `EXIT` flag.
    pub exit: bool,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            relay: true,
            advertise: Vec::new(),
            bootstrap: Vec::new(),
            target_links: 8,
            max_links: 1024,
            prefix_bits: (16, 32),
            exit: false,
        }
    }
}

/// Counters, for status and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Datagrams dropped before any link took them (unknown type or index, refused handshakes).
    pub dropped: u64,
    /// Frames refused by a link (malformed, wrong state).
    pub malformed: u64,
    /// Datagrams a session refused (authentication, replay).
    pub refused: u64,
    /// Records refused (bad signature, expired, ...).
    pub bad_records: u64,
    /// Links closed because they broke the protocol.
    pub closed_protocol: u64,
    /// Live links closed because the peer asked for our HELLO again (it lost its side, 4.7).
    pub peer_resets: u64,
    /// Cookie replies sent (handshake load).
    pub cookies: u64,
    /// Punches started (as initiator or target).
    pub punches: u64,
    /// Links that came up while punching.
    pub punched_links: u64,
    /// Punch datagrams not sent: the per-endpoint or per-IP cap was reached (issue #19).
    pub punch_capped: u64,
    /// PUNCH_NOTIFYs sent as an introducer.
    pub introductions: u64,
    /// Reachability probes that succeeded.
    pub probes_ok: u64,
    /// Relayed links set up (as an endpoint).
    pub relayed_links: u64,
    /// Punches asked for to make a relayed link direct.
    pub upgrade_attempts: u64,
    /// Relayed links that became direct.
    pub upgraded_links: u64,
    /// Relay envelopes forwarded as an introducer.
    pub relayed_datagrams: u64,
    /// DHT frames handed up.
    pub dht_frames: u64,
    /// DHT frames dropped (rate limits, not from a relay).
    pub dht_dropped: u64,
    /// PEX requests answered (peer-exchange cost, issue #25).
    pub pex_answered: u64,
    /// EXIT_POLICY_REQUESTs sent for exits whose policy we lack (e.g. known from the DHT).
    pub exit_policy_asks: u64,
    /// Links dialled for DHT contacts, and of those the ones to a peer whose record is not in
    /// the view (a plain handshake: nothing says whether it sits behind a NAT).
    pub dht_dials: u64,
    /// See `dht_dials`.
    pub dht_dials_unknown: u64,
    /// DHT dials refused because the peer stopped answering lately (`recently_dead`).
    pub dht_dials_dead: u64,
    /// Of `dht_dials_unknown`, dials where the relay that named the contact was asked to
    /// introduce us.
    pub dht_dials_via: u64,
    /// Links to relays closed for carrying no circuit for `RELAY_LINK_IDLE_MS`.
    pub idle_closed: u64,
}

/// What `globalnet peers` shows about a link.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerInfo {
    /// Local name.
    pub link: LinkId,
    /// Relay identity (hex), if the peer is a relay.
    pub relay_key: Option<String>,
    /// The peer's link key (hex).
    pub link_key: String,
    /// Current endpoint.
    pub endpoint: SocketAddr,
    /// Direct (not relayed through a neighbour).
    pub direct: bool,
    /// The link came up by simultaneous open through an introducer (section 13.2).
    pub punched: bool,
    /// Seconds since that punch (the last one, when a relayed link was upgraded).
    pub punched_s: Option<u64>,
    /// Last measured round-trip time.
    pub rtt_ms: Option<f64>,
    /// Seconds since the link was established.
    pub established_s: Option<u64>,
    /// Seconds since the last WireGuard handshake (rekey) on it.
    pub last_handshake_s: Option<u64>,
    /// Whether we dialled.
    pub outbound: bool,
    /// Plaintext bytes sent / received.
    pub bytes_out: u64,
    /// Plaintext bytes received.
    pub bytes_in: u64,
}
