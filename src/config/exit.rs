//! `[exit]` (serving as an exit) and `[outbound]` (this node's own traffic to the outside), issue
//! #23; docs/decisions.md "Exits".

use ipnet::IpNet;
use serde::Deserialize;
use std::net::SocketAddr;
use toml::Spanned;

use super::{int_in, ports, ConfigError, ErrFn};

/// Ports an exit accepts when `allow_ports` is not given.
pub const DEFAULT_EXIT_PORTS: [u16; 2] = [80, 443];
/// Most ports an exit lists (they travel in its signed policy, protocol.md 5.5).
pub const MAX_EXIT_PORTS: usize = 32;
/// Most extra networks an exit lists.
pub const MAX_EXIT_NETWORKS: usize = 8;
/// Hops to an exit, the exit included: guard, middle, exit, the client path shape
/// (`circuit::path::Shape::Client`). Not configurable: `[outbound] hops` accepts only this
/// (docs/decisions.md "Exits": why other lengths were removed).
pub const EXIT_HOPS: u8 = 3;

/// `[exit]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitConfig {
    /// Serve as an exit.
    pub enabled: bool,
    /// TCP and UDP destination ports the exit accepts.
    pub allow_ports: Vec<u16>,
    /// Ranges accepted although the default policy refuses them (private, CGNAT, test ranges).
    pub allow_networks: Vec<IpNet>,
}

impl Default for ExitConfig {
    fn default() -> Self {
        ExitConfig {
            enabled: false,
            allow_ports: DEFAULT_EXIT_PORTS.to_vec(),
            allow_networks: Vec::new(),
        }
    }
}

/// `[outbound]`
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundConfig {
    /// Prefixes routed through gn0 to an exit.
    pub routes: Vec<IpNet>,
    /// The SOCKS5 listener; none when absent.
    pub socks: Option<SocketAddr>,
    /// An exit pinned by its relay key.
    pub exit: Option<[u8; 32]>,
}

impl OutboundConfig {
    /// Whether this node sends traffic to exits at all.
    pub fn enabled(&self) -> bool {
        !self.routes.is_empty() || self.socks.is_some()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExit {
    enabled: Option<bool>,
    allow_ports: Option<Spanned<Vec<Spanned<i64>>>>,
    allow_networks: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutbound {
    routes: Option<Vec<Spanned<String>>>,
    socks: Option<Spanned<String>>,
    hops: Option<Spanned<i64>>,
    exit: Option<Spanned<String>>,
}

/// Reads `[exit]`.
pub(super) fn exit(raw: RawExit, err: &ErrFn<'_>) -> Result<ExitConfig, ConfigError> {
    let mut c = ExitConfig::default();
    if let Some(v) = raw.enabled {
        c.enabled = v;
    }
    if let Some(list) = raw.allow_ports {
        c.allow_ports = ports(list.get_ref(), "exit.allow_ports", err)?;
        if c.allow_ports.len() > MAX_EXIT_PORTS {
            return Err(err(
                list.span(),
                "exit.allow_ports",
                format!("{} ports listed", c.allow_ports.len()),
                "an exit publishes at most 32 ports; list the ones its users need",
            ));
        }
    }
    if let Some(list) = raw.allow_networks {
        let nets = prefixes(&list, "exit.allow_networks", err)?;
        if let Some(item) = list.get(MAX_EXIT_NETWORKS) {
            return Err(err(
                item.span(),
                "exit.allow_networks",
                format!("{} networks listed", nets.len()),
                "an exit publishes at most 8 extra networks; merge them into larger prefixes",
            ));
        }
        c.allow_networks = nets;
    }
    Ok(c)
}

/// Reads `[outbound]`.
pub(super) fn outbound(raw: RawOutbound, err: &ErrFn<'_>) -> Result<OutboundConfig, ConfigError> {
    let mut c = OutboundConfig::default();
    if let Some(list) = raw.routes {
        c.routes = prefixes(&list, "outbound.routes", err)?;
    }
    if let Some(v) = raw.socks {
        let addr = v.get_ref().parse::<SocketAddr>().ok().filter(|a| {
            // A SOCKS port open to other hosts lets them use this node's circuits as their own.
            a.ip().is_loopback() && a.port() != 0
        });
        c.socks = Some(addr.ok_or_else(|| {
            err(
                v.span(),
                "outbound.socks",
                format!("`{}` is not a loopback address and port", v.get_ref()),
                "give a loopback address and port, e.g. socks = \"127.0.0.1:1080\"; remove the line to turn SOCKS off",
            )
        })?);
    }
    if let Some(v) = raw.hops {
        // Kept only so that old configs saying what happens anyway still load.
        int_in(
            &v,
            i64::from(EXIT_HOPS),
            i64::from(EXIT_HOPS),
            "outbound.hops",
            "exit circuits always have 3 hops (guard, middle, exit); other lengths were removed: delete the line",
            err,
        )?;
    }
    if let Some(v) = raw.exit {
        let key = crate::crypto::keys::unhex32(v.get_ref())
            .filter(|k| crate::wire::record::check_identity(k).is_ok());
        c.exit = Some(key.ok_or_else(|| {
            err(
                v.span(),
                "outbound.exit",
                format!("`{}` is not a relay key", v.get_ref()),
                "give the exit's relay key, 64 hex digits as `globalnet peers` shows it, or remove the line to let the node choose",
            )
        })?);
    }
    Ok(c)
}

/// A list of IPv4/IPv6 prefixes in canonical form (host bits zero), no duplicates. Loopback,
/// multicast and the overlay's fd00::/8 are refused: no exit can reach them.
fn prefixes(
    list: &[Spanned<String>],
    key: &str,
    err: &ErrFn<'_>,
) -> Result<Vec<IpNet>, ConfigError> {
    let mut out: Vec<IpNet> = Vec::with_capacity(list.len());
    for item in list {
        let text = item.get_ref();
        let net = text.parse::<IpNet>().map_err(|_| {
            err(
                item.span(),
                key,
                format!("`{text}` is not an IP prefix"),
                "write prefixes as address/length, e.g. \"198.19.250.0/24\", \"0.0.0.0/0\" or \"::/0\"",
            )
        })?;
        if net.trunc() != net {
            return Err(err(
                item.span(),
                key,
                format!("`{text}` has host bits set"),
                &format!("write the network itself: \"{}\"", net.trunc()),
            ));
        }
        let unreachable = match net {
            IpNet::V4(n) => n.network().is_loopback() || n.network().is_multicast(),
            IpNet::V6(n) => {
                n.network().is_loopback()
                    || n.network().is_multicast()
                    || (n.prefix_len() >= 8 && crate::crypto::is_overlay(&n.network()))
            }
        };
        if unreachable {
            return Err(err(
                item.span(),
                key,
                format!("`{text}` is loopback, multicast or the overlay's fd00::/8"),
                "list networks on the other side of an exit; overlay addresses are reached through gn0 directly",
            ));
        }
        if out.contains(&net) {
            return Err(err(
                item.span(),
                key,
                format!("`{text}` is listed twice"),
                "remove the duplicate",
            ));
        }
        out.push(net);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn the_issue_contract_parses() {
        let c = Config::parse(
            "[exit]\nenabled = true\nallow_ports = [80, 443]\nallow_networks = [\"198.19.250.0/24\"]\n\
             [outbound]\nroutes = [\"198.19.250.0/24\", \"::/0\"]\nsocks = \"127.0.0.1:1080\"\n",
            "t.toml",
        )
        .unwrap();
        assert!(c.exit.enabled);
        assert_eq!(c.exit.allow_ports, vec![80, 443]);
        assert_eq!(c.exit.allow_networks[0].to_string(), "198.19.250.0/24");
        assert_eq!(c.outbound.routes.len(), 2);
        assert_eq!(c.outbound.socks, Some("127.0.0.1:1080".parse().unwrap()));
    }

    #[test]
    fn off_by_default() {
        let c = Config::default();
        assert!(!c.exit.enabled);
        assert!(c.outbound.socks.is_none() && c.outbound.routes.is_empty());
    }

    #[test]
    fn bad_values_name_line_key_and_hint() {
        for (text, key, line) in [
            (
                "[exit]\nallow_networks = [\"198.19.250.1/24\"]\n",
                "exit.allow_networks",
                2,
            ),
            (
                "[exit]\nallow_networks = [\"fd00::/16\"]\n",
                "exit.allow_networks",
                2,
            ),
            (
                "[exit]\nallow_networks = [\"127.0.0.0/8\"]\n",
                "exit.allow_networks",
                2,
            ),
            ("[exit]\nallow_ports = [0]\n", "exit.allow_ports", 2),
            (
                "[outbound]\nroutes = [\"10.0.0.0/33\"]\n",
                "outbound.routes",
                2,
            ),
            (
                "[outbound]\n\nroutes = [\"::/0\", \"::/0\"]\n",
                "outbound.routes",
                3,
            ),
            (
                "[outbound]\nsocks = \"0.0.0.0:1080\"\n",
                "outbound.socks",
                2,
            ),
            ("[outbound]\nsocks = \"127.0.0.1\"\n", "outbound.socks", 2),
            ("[outbound]\nhops = 1\n", "outbound.hops", 2),
            ("[outbound]\nhops = 4\n", "outbound.hops", 2),
            ("[outbound]\nexit = \"abcd\"\n", "outbound.exit", 2),
        ] {
            let e = Config::parse(text, "bad.toml").unwrap_err();
            assert_eq!((e.key.as_str(), e.line), (key, line), "{text}: {e}");
            assert!(!e.hint.is_empty());
        }
        let many: Vec<String> = (1..=33).map(|p| p.to_string()).collect();
        let e = Config::parse(
            &format!("[exit]\nallow_ports = [{}]\n", many.join(", ")),
            "bad.toml",
        )
        .unwrap_err();
        assert_eq!(e.key, "exit.allow_ports");
    }

    #[test]
    fn default_routes_and_a_pinned_exit() {
        let key = crate::crypto::keys::hex(
            ed25519_dalek::SigningKey::from_bytes(&[7; 32])
                .verifying_key()
                .as_bytes(),
        );
        let c = Config::parse(
            &format!(
                "[outbound]\nroutes = [\"0.0.0.0/0\", \"::/0\"]\nhops = 3\nexit = \"{key}\"\n"
            ),
            "t",
        )
        .unwrap();
        assert_eq!(c.outbound.routes[0].prefix_len(), 0);
        assert!(c.outbound.exit.is_some());
    }
}
