//! The TOML configuration (DESIGN.md sections 9 and 11) and its validation.
//!
//! Parsing is two steps: serde reads the text into `Raw*` structs that keep each value's byte span
//! (unknown keys and wrong types are refused there), then [`Config::from_raw`] checks every value
//! and builds the typed [`Config`]. Every error names the file, the line, the key and what to do.
//! `config.example.toml` and `globalnet.conf(5)` document every option; tests/config_reference.rs
//! keeps the three in step.

use serde::Deserialize;
use std::collections::BTreeSet;
use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

mod error;
mod exit;
use error::line_col;
pub use error::ConfigError;
pub use exit::{ExitConfig, OutboundConfig};
pub mod services;
pub use services::ServiceConfig;

/// Where the daemon looks for its configuration when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/globalnet/config.toml";
/// Default state directory (keys and caches).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/globalnet";
/// Default control socket.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/globalnet/control.sock";
/// Default TUN name.
pub const DEFAULT_TUN_NAME: &str = "gn0";
/// `tun.offload` when the config does not say (docs/benchmarks.md, "TUN offload").
pub const DEFAULT_TUN_OFFLOAD: bool = true;
/// The MTU every overlay path carries (DESIGN.md section 12). IPv6 requires at least this much.
pub const OVERLAY_MTU: u16 = 1280;
/// Default UDP port.
pub const DEFAULT_PORT: u16 = 7412;
/// Largest config file read, so a wrong path (a device, a huge log) fails fast.
const MAX_CONFIG_LEN: u64 = 1 << 20;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Keys and caches.
    pub state_dir: PathBuf,
    /// The Unix control socket the CLI talks to.
    pub control_socket: PathBuf,
    /// Drop privileges to this user after setup.
    pub user: Option<String>,
    /// The TUN device.
    pub tun: TunConfig,
    /// Underlay networking.
    pub network: NetworkConfig,
    /// Path-selection rules.
    pub paths: PathsConfig,
    /// Local services reachable over the overlay.
    pub expose: ExposeConfig,
    /// Named services besides `[expose]`'s (`[[service]]`).
    pub services: Vec<ServiceConfig>,
    /// Resource limits.
    pub limits: LimitsConfig,
    /// How this node appears to the services it visits.
    pub client: ClientConfig,
    /// Names under `.gn.alt`.
    pub names: NamesConfig,
    /// Serving as an exit (`[exit]`).
    pub exit: ExitConfig,
    /// This node's own traffic to the outside (`[outbound]`).
    pub outbound: OutboundConfig,
}

/// `[names]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamesConfig {
    /// The names file (petnames, one `NAME TARGET` per line).
    pub file: PathBuf,
    /// Petnames written in the config itself (`local`).
    pub local: crate::names::petnames::Petnames,
    /// Answer DNS for gn.alt on the node's address on gn0, port 53.
    pub dns: bool,
}

impl Default for NamesConfig {
    fn default() -> Self {
        NamesConfig {
            file: crate::names::petnames::DEFAULT_NAMES_FILE.into(),
            local: Default::default(),
            dns: true,
        }
    }
}

/// `[client]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Destinations shown this node's real address instead of a per-destination pseudonym.
    pub real_identity: Vec<Ipv6Addr>,
    /// The most proof of work (expected hashes) put into one introduction (protocol.md 10.12).
    pub pow_max_effort: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            real_identity: Vec::new(),
            pow_max_effort: crate::session::intro_pow::POW_CLIENT_MAX_EFFORT,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// One memory budget, in MiB, for every queue and table a stranger can fill.
    pub memory_budget_mb: u32,
    /// Most neighbour links at once.
    pub max_links: u32,
}

/// `[tun]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunConfig {
    /// Interface name.
    pub name: String,
    /// Interface MTU; packets above [`OVERLAY_MTU`] get ICMPv6 Packet Too Big.
    pub mtu: u16,
    /// Open the TUN with TSO/USO offload (Linux): one read brings a super-segment we cut, one
    /// write takes a flow's packets coalesced. Falls back to plain reads and writes when the
    /// kernel refuses (docs/benchmarks.md, "TUN offload").
    pub offload: bool,
}

/// `[network]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// UDP sockets to bind.
    pub listen: Vec<SocketAddr>,
    /// Endpoints to publish instead of learning them (a port forward, a 1:1 NAT); empty: learn.
    pub advertise: Vec<SocketAddr>,
    /// Peers to start from.
    pub bootstrap: Vec<PeerAddr>,
    /// Relay for others; `None` means the default (true unless the node hosts services).
    pub relay: Option<bool>,
    /// Links to relays to keep.
    pub links: u32,
    /// UDP sends on a thread of their own per socket (off by default: on the 2-core test
    /// machine it cost more CPU per cell than it saved; docs/benchmarks.md).
    pub send_thread: bool,
}

/// A peer as the config names it: an address, or a host name resolved when it is dialled (at
/// start and again on every retry, as WireGuard's `Endpoint` does).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerAddr {
    /// An IP address and port.
    Addr(SocketAddr),
    /// A DNS name and port (`seed.example.net:7412`).
    Name {
        /// The host name.
        host: String,
        /// The UDP port.
        port: u16,
    },
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Addr(a) => write!(f, "{a}"),
            PeerAddr::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl PeerAddr {
    /// Parses `IP:port`, `[IPv6]:port` or `host.name:port`.
    pub fn parse(text: &str) -> Option<PeerAddr> {
        if let Ok(a) = text.parse::<SocketAddr>() {
            return Some(PeerAddr::Addr(a));
        }
        let (host, port) = text.rsplit_once(':')?;
        let port: u16 = port.parse().ok()?;
        let host = host.trim_end_matches('.');
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        // A name is not all digits and dots (that is a mistyped IPv4 address).
        let named = host.chars().any(|c| c.is_ascii_alphabetic());
        (host.len() <= 253 && named && host.split('.').all(label_ok)).then(|| PeerAddr::Name {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// `[paths]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathsConfig {
    /// No two relays of a path share an IPv4 prefix of this length.
    pub ipv4_subnet_family_prefix: u8,
    /// No two relays of a path share an IPv6 prefix of this length.
    pub ipv6_subnet_family_prefix: u8,
}

/// `[expose]`
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExposeConfig {
    /// TCP ports reachable on the node's own overlay address.
    pub tcp: Vec<u16>,
    /// UDP ports reachable on the node's own overlay address.
    pub udp: Vec<u16>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state_dir: DEFAULT_STATE_DIR.into(),
            control_socket: DEFAULT_CONTROL_SOCKET.into(),
            user: None,
            tun: TunConfig {
                name: DEFAULT_TUN_NAME.into(),
                mtu: OVERLAY_MTU,
                offload: DEFAULT_TUN_OFFLOAD,
            },
            network: NetworkConfig {
                listen: vec![SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))],
                advertise: Vec::new(),
                bootstrap: Vec::new(),
                relay: None,
                links: 8,
                send_thread: false,
            },
            paths: PathsConfig {
                ipv4_subnet_family_prefix: 16,
                ipv6_subnet_family_prefix: 32,
            },
            expose: ExposeConfig::default(),
            services: Vec::new(),
            limits: LimitsConfig {
                memory_budget_mb: 256,
                max_links: 1024,
            },
            client: ClientConfig::default(),
            names: NamesConfig::default(),
            exit: ExitConfig::default(),
            outbound: OutboundConfig::default(),
        }
    }
}

impl Config {
    /// Whether this node relays for others: the explicit setting, else true unless it hosts
    /// services (a relay's uptime is public and would be linkable to its services').
    pub fn relay_enabled(&self) -> bool {
        self.network.relay.unwrap_or(!self.hosts_services())
    }

    /// Whether `[expose]` lists ports or a `[[service]]` is configured.
    pub fn hosts_services(&self) -> bool {
        !self.expose.tcp.is_empty() || !self.expose.udp.is_empty() || !self.services.is_empty()
    }

    /// Every petname: the config's `[names] local` list, then the names file. Read at start and
    /// by `globalnet check`; errors name the file and line.
    pub fn petnames(&self) -> Result<crate::names::petnames::Petnames, ConfigError> {
        let mut p = self.names.local.clone();
        // An absent file is no names, as an absent /etc/hosts line is no host: the file is
        // optional and the package does not ship one.
        p.add_file(&self.names.file, true)?;
        Ok(p)
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|e| ConfigError::io(&file, &e))?;
        if !meta.is_file() {
            return Err(ConfigError::whole_file(
                &file,
                "is not a regular file",
                "give the path of a TOML file with --config",
            ));
        }
        if meta.len() > MAX_CONFIG_LEN {
            return Err(ConfigError::whole_file(
                &file,
                "is larger than 1 MiB",
                "give the path of the GlobalNet config file",
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(&file, &e))?;
        Config::parse(&text, &file)
    }

    /// Parses and validates config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::from_toml(text, file, &e))?;
        Config::from_raw(raw, text, file)
    }

    fn from_raw(raw: RawConfig, text: &str, file: &str) -> Result<Config, ConfigError> {
        let err = |span: Range<usize>, key: &str, message: String, hint: &str| {
            ConfigError::at(text, file, span, key, message, hint)
        };
        let mut c = Config::default();

        if let Some(v) = raw.state_dir {
            c.state_dir = absolute_path(&v, "state_dir", &err)?;
        }
        if let Some(v) = raw.control_socket {
            c.control_socket = absolute_path(&v, "control_socket", &err)?;
        }
        if let Some(v) = raw.user {
            let name = v.get_ref();
            let ok = !name.is_empty()
                && name.len() <= 32
                && name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch))
                && !name.starts_with('-');
            if !ok {
                return Err(err(
                    v.span(),
                    "user",
                    format!("`{name}` is not a valid user name"),
                    "give the name of an existing system user, e.g. user = \"globalnet\", or remove the line to keep running as the starting user",
                ));
            }
            c.user = Some(name.clone());
        }
        if let Some(tun) = raw.tun {
            if let Some(v) = tun.name {
                let name = v.get_ref();
                let ok = !name.is_empty()
                    && name.len() <= 15
                    && name != "."
                    && name != ".."
                    && name
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || "_.-".contains(ch));
                if !ok {
                    return Err(err(
                        v.span(),
                        "tun.name",
                        format!("`{name}` is not a valid interface name"),
                        "use 1 to 15 letters, digits, '_', '-' or '.', e.g. name = \"gn0\"",
                    ));
                }
                c.tun.name = name.clone();
            }
            if let Some(v) = tun.mtu {
                let mtu = *v.get_ref();
                if !(i64::from(OVERLAY_MTU)..=65535).contains(&mtu) {
                    return Err(err(
                        v.span(),
                        "tun.mtu",
                        format!("{mtu} is out of range"),
                        "IPv6 needs at least 1280 and the largest is 65535; 1280 is what every overlay path carries",
                    ));
                }
                c.tun.mtu = mtu as u16;
            }
            if let Some(v) = tun.offload {
                c.tun.offload = v;
            }
        }
        if let Some(net) = raw.network {
            if let Some(list) = net.listen {
                let addrs = socket_addrs(&list, "network.listen", true, &err)?;
                if addrs.is_empty() {
                    return Err(err(
                        list.span(),
                        "network.listen",
                        "is empty".into(),
                        "list at least one UDP address to listen on, e.g. listen = [\"0.0.0.0:7412\"]",
                    ));
                }
                c.network.listen = addrs;
            }
            if let Some(list) = net.advertise {
                c.network.advertise = socket_addrs(&list, "network.advertise", false, &err)?;
            }
            if let Some(list) = net.bootstrap {
                c.network.bootstrap = peer_addrs(&list, "network.bootstrap", &err)?;
            }
            c.network.relay = net.relay;
            if let Some(v) = net.send_thread {
                c.network.send_thread = v;
            }
            if let Some(v) = net.links {
                c.network.links = int_in(
                    &v,
                    1,
                    64,
                    "network.links",
                    "links to relays: 1 to 64; 8 is a good default",
                    &err,
                )?;
            }
        }
        if let Some(limits) = raw.limits {
            if let Some(v) = limits.memory_budget_mb {
                c.limits.memory_budget_mb = int_in(
                    &v,
                    16,
                    65536,
                    "limits.memory_budget_mb",
                    "give the budget in MiB, 16 to 65536; 256 suits most hosts",
                    &err,
                )?;
            }
            if let Some(v) = limits.max_links {
                c.limits.max_links = int_in(
                    &v,
                    8,
                    65536,
                    "limits.max_links",
                    "8 to 65536 links; 1024 is the default",
                    &err,
                )?;
            }
        }
        if let Some(paths) = raw.paths {
            if let Some(v) = paths.ipv4_subnet_family_prefix {
                c.paths.ipv4_subnet_family_prefix =
                    prefix_len(&v, 32, "paths.ipv4_subnet_family_prefix", &err)?;
            }
            if let Some(v) = paths.ipv6_subnet_family_prefix {
                c.paths.ipv6_subnet_family_prefix =
                    prefix_len(&v, 128, "paths.ipv6_subnet_family_prefix", &err)?;
            }
        }
        if let Some(expose) = raw.expose {
            if let Some(list) = expose.tcp {
                c.expose.tcp = ports(&list, "expose.tcp", &err)?;
            }
            if let Some(list) = expose.udp {
                c.expose.udp = ports(&list, "expose.udp", &err)?;
            }
        }
        c.services = services::parse(raw.service.unwrap_or_default(), &err)?;
        if let Some(client) = raw.client {
            if let Some(v) = client.pow_max_effort {
                c.client.pow_max_effort = int_in(
                    &v,
                    0,
                    i64::from(u32::MAX),
                    "client.pow_max_effort",
                    "expected hashes per introduction, 0 (never pay) to 4294967295; 16777216 is the default",
                    &err,
                )?;
            }
            if let Some(list) = client.real_identity {
                for item in list {
                    let addr = item
                        .get_ref()
                        .parse::<Ipv6Addr>()
                        .ok()
                        .filter(crate::crypto::is_overlay)
                        .ok_or_else(|| {
                            err(
                                item.span(),
                                "client.real_identity",
                                format!("`{}` is not an overlay address", item.get_ref()),
                                "list fd00::/8 addresses of services that may see this node's own address, e.g. [\"fd52:0b1e::9a33\"]",
                            )
                        })?;
                    if c.client.real_identity.contains(&addr) {
                        return Err(err(
                            item.span(),
                            "client.real_identity",
                            format!("`{addr}` is listed twice"),
                            "remove the duplicate",
                        ));
                    }
                    c.client.real_identity.push(addr);
                }
            }
        }
        if let Some(names) = raw.names {
            if let Some(v) = names.file {
                c.names.file = absolute_path(&v, "names.file", &err)?;
            }
            if let Some(v) = names.dns {
                c.names.dns = v;
            }
            for item in names.local.unwrap_or_default() {
                let (line, column) = line_col(text, item.span().start);
                c.names
                    .local
                    .add_line(item.get_ref(), file, line, column, "names.local")?;
            }
        }
        if let Some(v) = raw.exit {
            c.exit = exit::exit(v, &err)?;
        }
        if let Some(v) = raw.outbound {
            c.outbound = exit::outbound(v, &err)?;
        }
        Ok(c)
    }
}

type ErrFn<'a> = dyn Fn(Range<usize>, &str, String, &str) -> ConfigError + 'a;

fn absolute_path(v: &Spanned<String>, key: &str, err: &ErrFn<'_>) -> Result<PathBuf, ConfigError> {
    let p = PathBuf::from(v.get_ref());
    if !p.is_absolute() || v.get_ref().contains('\0') {
        return Err(err(
            v.span(),
            key,
            format!("`{}` is not an absolute path", v.get_ref()),
            "give a path that starts with '/'",
        ));
    }
    Ok(p)
}

fn socket_addrs(
    list: &Spanned<Vec<Spanned<String>>>,
    key: &str,
    listen: bool,
    err: &ErrFn<'_>,
) -> Result<Vec<SocketAddr>, ConfigError> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for item in list.get_ref() {
        let addr: SocketAddr = item.get_ref().parse().map_err(|_| {
            err(
                item.span(),
                key,
                format!("`{}` is not an IP address with a port", item.get_ref()),
                "write \"198.18.0.1:7412\" for IPv4 or \"[2001:db8::1]:7412\" for IPv6 (an IP address, not a host name)",
            )
        })?;
        if !listen && (addr.ip().is_unspecified() || addr.port() == 0) {
            return Err(err(
                item.span(),
                key,
                format!("`{addr}` is not a specific address and port"),
                "give an address and port others can reach (no 0.0.0.0, [::] or port 0)",
            ));
        }
        if out.contains(&addr) {
            return Err(err(
                item.span(),
                key,
                format!("`{addr}` is listed twice"),
                "remove the duplicate",
            ));
        }
        out.push(addr);
    }
    Ok(out)
}

fn peer_addrs(
    list: &Spanned<Vec<Spanned<String>>>,
    key: &str,
    err: &ErrFn<'_>,
) -> Result<Vec<PeerAddr>, ConfigError> {
    let mut out: Vec<PeerAddr> = Vec::new();
    for item in list.get_ref() {
        let peer =
            PeerAddr::parse(item.get_ref()).ok_or_else(|| {
                err(
                item.span(),
                key,
                format!("`{}` is not an address or host name with a port", item.get_ref()),
                "write \"198.18.0.1:7412\", \"[2001:db8::1]:7412\" or \"seed.example.net:7412\"",
            )
            })?;
        match &peer {
            PeerAddr::Addr(a) if a.ip().is_unspecified() || a.port() == 0 => {
                return Err(err(
                    item.span(),
                    key,
                    format!("`{a}` cannot be dialled"),
                    "give a peer's real address and port",
                ))
            }
            PeerAddr::Name { port: 0, .. } => {
                return Err(err(
                    item.span(),
                    key,
                    format!("`{peer}` has port 0"),
                    "give the peer's real port (7412 by default)",
                ))
            }
            _ => {}
        }
        if out.contains(&peer) {
            return Err(err(
                item.span(),
                key,
                format!("`{peer}` is listed twice"),
                "remove the duplicate",
            ));
        }
        out.push(peer);
    }
    Ok(out)
}

fn int_in(
    v: &Spanned<i64>,
    min: i64,
    max: i64,
    key: &str,
    hint: &str,
    err: &ErrFn<'_>,
) -> Result<u32, ConfigError> {
    let n = *v.get_ref();
    if !(min..=max).contains(&n) {
        return Err(err(v.span(), key, format!("{n} is out of range"), hint));
    }
    Ok(n as u32)
}

fn prefix_len(v: &Spanned<i64>, max: i64, key: &str, err: &ErrFn<'_>) -> Result<u8, ConfigError> {
    let n = *v.get_ref();
    if !(1..=max).contains(&n) {
        return Err(err(
            v.span(),
            key,
            format!("{n} is not a prefix length between 1 and {max}"),
            "real networks use 16 (IPv4) and 32 (IPv6); test networks in one subnet use 32 and 128",
        ));
    }
    Ok(n as u8)
}

fn ports(list: &[Spanned<i64>], key: &str, err: &ErrFn<'_>) -> Result<Vec<u16>, ConfigError> {
    let mut seen = BTreeSet::new();
    for item in list {
        let p = *item.get_ref();
        if !(1..=65535).contains(&p) {
            return Err(err(
                item.span(),
                key,
                format!("{p} is not a port number"),
                "ports are 1 to 65535",
            ));
        }
        if !seen.insert(p as u16) {
            return Err(err(
                item.span(),
                key,
                format!("port {p} is listed twice"),
                "remove the duplicate",
            ));
        }
    }
    Ok(seen.into_iter().collect())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Option<Spanned<String>>,
    control_socket: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    tun: Option<RawTun>,
    network: Option<RawNetwork>,
    paths: Option<RawPaths>,
    expose: Option<RawExpose>,
    service: Option<Vec<services::RawService>>,
    limits: Option<RawLimits>,
    client: Option<RawClient>,
    names: Option<RawNames>,
    exit: Option<exit::RawExit>,
    outbound: Option<exit::RawOutbound>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNames {
    dns: Option<bool>,
    file: Option<Spanned<String>>,
    local: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    real_identity: Option<Vec<Spanned<String>>>,
    pow_max_effort: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory_budget_mb: Option<Spanned<i64>>,
    max_links: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTun {
    name: Option<Spanned<String>>,
    mtu: Option<Spanned<i64>>,
    offload: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    listen: Option<Spanned<Vec<Spanned<String>>>>,
    advertise: Option<Spanned<Vec<Spanned<String>>>>,
    bootstrap: Option<Spanned<Vec<Spanned<String>>>>,
    relay: Option<bool>,
    links: Option<Spanned<i64>>,
    send_thread: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPaths {
    ipv4_subnet_family_prefix: Option<Spanned<i64>>,
    ipv6_subnet_family_prefix: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpose {
    tcp: Option<Vec<Spanned<i64>>>,
    udp: Option<Vec<Spanned<i64>>>,
}

#[cfg(test)]
mod tests;
