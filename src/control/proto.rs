//! The control protocol's messages as types: the request and one answer type per command, shared
//! by the daemon (which serializes them) and the CLI (which reads them back).
//!
//! The JSON these types make is the contract documented in `control`'s module docs and in
//! docs/decisions.md: field names, nesting and `null`s are part of it, so a rename here is a
//! protocol change. Fields are only ever added; every answer type reads a missing field as its
//! default, so a CLI can still show what an older daemon sends, and unknown fields are ignored, so
//! an older CLI can read a newer daemon. Addresses and endpoints stay text, as on the wire.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Version of the control protocol.
pub const CONTROL_VERSION: u32 = 1;

/// A command the client asks for (`cmd` on the wire).
///
/// A name the daemon does not know still parses, as [`Cmd::Unknown`], so the daemon can answer it
/// with the list of the commands it does know instead of a parse error.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Cmd {
    /// The node's state: [`StatusAnswer`].
    Status,
    /// Neighbour links: a list of [`PeerAnswer`].
    Peers,
    /// Own circuits: a list of [`CircuitAnswer`].
    Circuits,
    /// Hosted services: a list of [`ServiceAnswer`].
    Services,
    /// End-to-end sessions: a list of [`SessionAnswer`].
    Sessions,
    /// An end-to-end ping of `addr`: a [`PingAnswer`].
    Ping,
    /// What a `.gn.alt` name (`name`) resolves to: a [`ResolveAnswer`].
    Resolve,
    /// Accept the key the network now names for `name` (a pin conflict): a [`ResolveAnswer`].
    Accept,
    /// Any other name.
    Unknown(String),
}

impl Cmd {
    /// Every command a daemon of this version answers.
    pub const KNOWN: [Cmd; 8] = [
        Cmd::Status,
        Cmd::Peers,
        Cmd::Circuits,
        Cmd::Services,
        Cmd::Sessions,
        Cmd::Ping,
        Cmd::Resolve,
        Cmd::Accept,
    ];

    /// The command's name on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Cmd::Status => "status",
            Cmd::Peers => "peers",
            Cmd::Circuits => "circuits",
            Cmd::Services => "services",
            Cmd::Sessions => "sessions",
            Cmd::Ping => "ping",
            Cmd::Resolve => "resolve",
            Cmd::Accept => "accept",
            Cmd::Unknown(name) => name,
        }
    }
}

impl From<&str> for Cmd {
    fn from(name: &str) -> Cmd {
        Cmd::KNOWN
            .into_iter()
            .find(|c| c.as_str() == name)
            .unwrap_or_else(|| Cmd::Unknown(name.to_string()))
    }
}

impl From<String> for Cmd {
    fn from(name: String) -> Cmd {
        match Cmd::from(name.as_str()) {
            Cmd::Unknown(_) => Cmd::Unknown(name),
            known => known,
        }
    }
}

impl From<Cmd> for String {
    fn from(cmd: Cmd) -> String {
        match cmd {
            Cmd::Unknown(name) => name,
            known => known.as_str().to_string(),
        }
    }
}

impl PartialEq<&str> for Cmd {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A control request: `{"v":1,"cmd":"status"}`, or `{"v":1,"cmd":"ping","addr":"fd.."}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Protocol version.
    pub v: u32,
    /// The command.
    pub cmd: Cmd,
    /// The overlay address a command is about (`ping`). Text, so the daemon can say why an
    /// address is refused in its own words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// The name a command is about (`resolve`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Request {
    /// A request for `cmd` with no arguments.
    pub fn new(cmd: impl Into<Cmd>) -> Request {
        Request {
            v: CONTROL_VERSION,
            cmd: cmd.into(),
            addr: None,
            name: None,
        }
    }

    /// What `name` resolves to.
    pub fn resolve(name: impl Into<String>) -> Request {
        Request {
            name: Some(name.into()),
            ..Request::new(Cmd::Resolve)
        }
    }

    /// Accept the network's key for `name`.
    pub fn accept(name: impl Into<String>) -> Request {
        Request {
            name: Some(name.into()),
            ..Request::new(Cmd::Accept)
        }
    }

    /// An end-to-end ping of `addr`.
    pub fn ping(addr: impl Into<String>) -> Request {
        Request {
            addr: Some(addr.into()),
            ..Request::new(Cmd::Ping)
        }
    }
}

/// The answer to `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusAnswer {
    /// The daemon's version.
    pub version: String,
    /// The node's overlay address.
    pub address: String,
    /// Relay identity key (hex).
    pub relay_key: String,
    /// Link key (hex).
    pub link_key: String,
    /// The TUN interface's name.
    pub interface: String,
    /// The TUN interface's MTU.
    pub mtu: u16,
    /// Whether the node relays for others.
    pub relay: bool,
    /// Neighbour links.
    pub peers: usize,
    /// The NAT class the node found itself behind.
    pub nat: String,
    /// The endpoint neighbours see the node at, once one said.
    pub observed_endpoint: Option<String>,
    /// Whether the node publishes a relay record.
    pub relay_record: bool,
    /// The local endpoints the node listens on.
    pub local_endpoints: Vec<String>,
    /// Each configured bootstrap peer.
    pub bootstrap: Vec<BootstrapStatus>,
    /// Why the node has no links or no circuits, in one line; `null` when it has both.
    pub reason: Option<String>,
    /// Guards.
    pub guards: GuardStatus,
    /// The relays the node knows of.
    pub view: ViewStatus,
    /// Path rules relaxed for a view with few public relays.
    pub paths: PathStatus,
    /// Link-layer counters.
    pub links: LinkCounts,
    /// The memory budget.
    pub memory: MemoryStatus,
    /// Circuit counts.
    pub circuits: CircuitCounts,
    /// Open sessions.
    pub sessions: usize,
    /// Hosted services.
    pub services: usize,
    /// The config's reloads.
    pub config: ConfigStatus,
    /// Flow-layer counters.
    pub flows: FlowCounts,
    /// Seconds since the daemon started.
    pub uptime_s: u64,
    /// The daemon's process id.
    pub pid: u32,
    /// TUN counters.
    pub tun: TunCounts,
    /// Exit counters, when the node is an exit (`[exit] enabled`).
    pub exit: Option<crate::exit::gateway::ExitStats>,
    /// The circuit to an exit, when `[outbound]` is on.
    pub exit_circuit: Option<crate::node::exits::ExitCircuitInfo>,
}

/// The config's reloads in `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConfigStatus {
    /// Reloads applied (SIGHUP).
    pub reloads: u64,
    /// Why the last reload was refused (the running config stays); `null` when it was applied.
    pub reload_error: Option<String>,
    /// Settings changed in the file that take a restart (tables or top-level keys).
    pub restart_needed: Vec<String>,
}

/// One bootstrap peer in `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BootstrapStatus {
    /// As configured.
    pub peer: String,
    /// Its addresses (resolved, for a name).
    pub addrs: Vec<String>,
    /// `linked`, `answered`, `waiting`, `resolving`, `not answering` or `unresolved`.
    pub state: String,
    /// Seconds it has been failing, if it is.
    pub failing_s: Option<u64>,
    /// Queries (or resolutions) without an answer since the last answer.
    pub tries: u32,
    /// The last error.
    pub last_error: Option<String>,
}

/// Guards in `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GuardStatus {
    /// Guards chosen.
    pub count: usize,
    /// Whether some are stand-ins until enough relays are known.
    pub temporary: bool,
    /// Why the guards could not be saved, if they could not.
    pub save_error: Option<String>,
}

/// Path selection in a NAT-heavy view, in `status` (threat-model.md 5.4).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PathStatus {
    /// Directly reachable relays in the view: the only guard (and, normally, vanguard) candidates.
    pub public_relays: usize,
    /// Vanguards behind NAT, taken because no public relay fits outside the guards' families.
    pub natted_vanguards: usize,
    /// One line per relaxed rule or warning; empty when the usual rules hold.
    pub relaxed: Vec<String>,
}

/// The relay view in `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ViewStatus {
    /// Relays known.
    pub relays: usize,
    /// Neighbours they were learnt from.
    pub sources: usize,
}

/// Link-layer counters in `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinkCounts {
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Datagrams dropped.
    pub dropped: u64,
    /// Handshakes refused.
    pub refused: u64,
    /// Malformed datagrams.
    pub malformed: u64,
    /// Relay records that failed their checks.
    pub bad_records: u64,
}

/// The memory budget in `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryStatus {
    /// Bytes charged.
    pub used: usize,
    /// The budget's limit in bytes.
    pub limit: usize,
}

/// Circuit counts in `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CircuitCounts {
    /// The node's own circuits, built or building.
    pub own: usize,
    /// Own circuits that are built.
    pub ready: usize,
    /// Circuits relayed for others.
    pub relayed: usize,
    /// Cells relayed for others.
    pub relayed_cells: u64,
    /// Circuits built.
    pub built: u64,
    /// Builds that failed.
    pub build_failures: u64,
    /// CREATE cells refused.
    pub creates_refused: u64,
    /// Why no path could be chosen, if none could.
    pub path_error: Option<String>,
}

/// Flow-layer counters in `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FlowCounts {
    /// Flows tracked.
    pub active: usize,
    /// Packets sent to peers.
    pub to_peers: u64,
    /// Packets delivered to the kernel.
    pub to_kernel: u64,
    /// Packets refused by the exposure policy.
    pub refused: u64,
    /// ICMPv6 errors written to the kernel.
    pub icmp_to_kernel: u64,
    /// Packets from the kernel dropped.
    pub dropped_from_kernel: u64,
    /// Packets from peers dropped.
    pub dropped_from_peers: u64,
    /// Packets from the kernel with a source routed elsewhere.
    pub foreign_sources: u64,
    /// The prefixes routed through other interfaces (`addr/len`).
    pub foreign_prefixes: Vec<String>,
}

/// TUN counters in `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TunCounts {
    /// Packets read from the TUN.
    pub packets_in: u64,
    /// Packets written to the TUN.
    pub packets_out: u64,
    /// ICMPv6 errors written to the TUN.
    pub icmp_replies: u64,
    /// Packets dropped on the way in or out.
    pub dropped: u64,
    /// Writes to the TUN that failed.
    pub write_errors: u64,
    /// Kernel packets CoDel dropped in the fair queue (their flow's queue stood above target).
    pub aqm_drops: u64,
    /// Kernel packets CoDel marked ECN CE instead of dropping.
    pub ce_marked: u64,
    /// Most kernel packets the fair queue held at once.
    pub queue_peak: u64,
    /// Longest a kernel packet waited in the fair queue, microseconds.
    pub queue_max_sojourn_us: u64,
    /// The same four for packets from sessions waiting for the TUN writer: drops,
    pub in_aqm_drops: u64,
    /// CE marks,
    pub in_ce_marked: u64,
    /// most held at once,
    pub in_queue_peak: u64,
    /// and the longest wait, microseconds.
    pub in_queue_max_sojourn_us: u64,
    /// gn0 was opened with TSO/USO offload (`tun.offload` and the kernel agreed).
    pub offload: bool,
    /// With offload: reads from the TUN (each one packet or a super-segment cut into several),
    pub offload_reads: u64,
    /// writes to it (each one packet or a flow's packets coalesced),
    pub offload_writes: u64,
    /// and reads dropped because they could not be cut.
    pub read_errors: u64,
}

/// One neighbour link in `peers`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerAnswer {
    /// Relay identity (hex); `null` for a client.
    pub relay_key: Option<String>,
    /// The peer's link key (hex).
    pub link_key: String,
    /// Its current endpoint.
    pub endpoint: String,
    /// Direct, not relayed through a neighbour.
    pub direct: bool,
    /// Came up by simultaneous open through an introducer.
    pub punched: bool,
    /// Seconds since the punch that made it direct (first contact or an upgrade of a relayed
    /// link).
    pub punched_s: Option<u64>,
    /// Last measured round-trip time, to a tenth of a millisecond.
    pub rtt_ms: Option<f64>,
    /// Seconds since the link was established.
    pub established_s: Option<u64>,
    /// Seconds since the last handshake on it.
    pub last_handshake_s: Option<u64>,
    /// Whether this node dialled.
    pub outbound: bool,
    /// Plaintext bytes received.
    pub bytes_in: u64,
    /// Plaintext bytes sent.
    pub bytes_out: u64,
}

/// One own circuit in `circuits`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CircuitAnswer {
    /// Local id (hex).
    pub id: String,
    /// Path length.
    pub hops: usize,
    /// `pool`, `intro`, `dht`, ...
    pub purpose: String,
    /// Seconds since the build started.
    pub age_s: u64,
    /// Built or not.
    pub state: CircuitState,
    /// Build time, once built.
    pub build_ms: Option<u64>,
    /// The hosted service it works for (intro, rendezvous and session circuits), by name.
    pub service: Option<String>,
}

/// Whether a circuit is built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CircuitState {
    /// Still being extended.
    #[default]
    Building,
    /// Built and usable.
    Ready,
}

impl CircuitState {
    /// The state's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Building => "building",
            CircuitState::Ready => "ready",
        }
    }
}

/// One hosted service in `services`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceAnswer {
    /// Its name: `default` for `[expose]`'s, else the `[[service]]`'s.
    pub name: String,
    /// The service's overlay address.
    pub address: String,
    /// TCP ports open on it.
    pub tcp: Vec<u16>,
    /// UDP ports open on it.
    pub udp: Vec<u16>,
    /// Its established intro points (relay key fingerprints).
    pub intro_points: Vec<String>,
    /// Seconds since its descriptors were last built; `null` before the first.
    pub descriptor_age_s: Option<u64>,
    /// Whether a descriptor is published.
    pub published: bool,
    /// Open sessions (clients).
    pub sessions: usize,
    /// Why intro points are missing ("1 of 3 intro points: ..."), while some are.
    pub intro_missing: Option<String>,
    /// The proof-of-work effort its descriptor asks introductions for now (0 while idle).
    pub pow_effort: u32,
    /// Introductions it received with a valid proof of work.
    pub intros_with_pow: u64,
}

/// One end-to-end session in `sessions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionAnswer {
    /// The peer's overlay address (the service, or the client's pseudonym).
    pub peer: String,
    /// `client` or `service`.
    pub role: String,
    /// This node's address in the session.
    pub local: String,
    /// `lookup`, `introducing` or `open`.
    pub state: String,
    /// Circuits joined to the session.
    pub circuits: usize,
    /// Flows tracked.
    pub flows: usize,
    /// Age in seconds.
    pub age_s: u64,
}

/// The answer to `ping`, sent when the PONG arrived.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PingAnswer {
    /// The address pinged.
    pub addr: String,
    /// The round-trip time, to a tenth of a millisecond.
    pub rtt_ms: f64,
}

/// The answer to `resolve`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResolveAnswer {
    /// The canonical name (lowercase, ending in `.gn.alt`).
    pub name: String,
    /// The overlay address it resolves to.
    pub address: String,
    /// The service's key name, when the answering layer knows the key.
    pub key: Option<String>,
    /// `petname`, `key` or `network`.
    pub source: String,
    /// Where a petname was written (`file:line`).
    pub origin: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_keep_their_names() {
        for cmd in Cmd::KNOWN {
            assert_eq!(Cmd::from(cmd.as_str()), cmd);
            assert_eq!(
                serde_json::to_string(&cmd).unwrap(),
                format!("\"{}\"", cmd.as_str())
            );
        }
        let nope: Cmd = serde_json::from_str("\"nope\"").unwrap();
        assert_eq!(nope, Cmd::Unknown("nope".into()));
        assert_eq!(serde_json::to_string(&nope).unwrap(), "\"nope\"");
    }

    /// Every field is on the wire, `None` as `null`, and an empty object reads as the defaults.
    #[test]
    fn answers_keep_nulls_and_read_missing_fields_as_defaults() {
        let v = serde_json::to_value(CircuitAnswer::default()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": "", "hops": 0, "purpose": "", "age_s": 0,
                "state": "building", "build_ms": null, "service": null})
        );
        let s: StatusAnswer = serde_json::from_str("{}").unwrap();
        assert_eq!(s, StatusAnswer::default());
        let v = serde_json::to_value(StatusAnswer::default()).unwrap();
        assert!(v["circuits"]["path_error"].is_null() && v["reason"].is_null());
        assert_eq!(v["guards"]["save_error"], serde_json::Value::Null);
    }
}
