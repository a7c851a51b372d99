//! The hidden services this node hosts, as the daemon keeps them: each one's name, overlay
//! address and open ports. The session layer holds their keys and protocol state
//! ([`crate::session::SessionLayer`]); the flow layer their ports; this list is what ties a
//! name to both for the control socket, and what a reload compares against.

use std::net::Ipv6Addr;
use zeroize::Zeroizing;

use crate::config::services::DEFAULT_SERVICE;
use crate::config::Config;
use crate::crypto::address_of;
use crate::crypto::keys::load_or_create_service_key;
use crate::crypto::KeyError;
use crate::flow::ServicePorts;

/// One hosted service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Hosted {
    /// `default` for `[expose]`.
    pub(super) name: String,
    /// Its overlay address.
    pub(super) address: Ipv6Addr,
    /// TCP ports open on its address.
    pub(super) tcp: Vec<u16>,
    /// UDP ports open on its address.
    pub(super) udp: Vec<u16>,
}

/// A named service's key seed, beside its record.
pub(super) type Seed = Zeroizing<[u8; 32]>;

/// The services `config` hosts, with the seeds of the named ones (created in `state_dir` when
/// absent, never overwritten); `default_address` is the address of the node's default key,
/// hosted when `[expose]` lists ports. The error says which key file and what to do.
pub(super) fn load(
    config: &Config,
    default_address: Ipv6Addr,
) -> Result<Vec<(Hosted, Option<Seed>)>, String> {
    let mut out = Vec::new();
    let e = &config.expose;
    if !e.tcp.is_empty() || !e.udp.is_empty() {
        out.push((
            Hosted {
                name: DEFAULT_SERVICE.into(),
                address: default_address,
                tcp: e.tcp.clone(),
                udp: e.udp.clone(),
            },
            None,
        ));
    }
    for s in &config.services {
        let (key, created) =
            load_or_create_service_key(&config.state_dir, &s.key).map_err(|e| {
                let denied = matches!(&e, KeyError::Io { source, .. }
                    if source.kind() == std::io::ErrorKind::PermissionDenied);
                match (&config.user, denied) {
                    // Root with `user`: after the drop the root-owned state directory is out of
                    // reach (docs/decisions.md, "Several services on one host").
                    (Some(user), true) => format!(
                        "service `{}`: {e}: the daemon runs as `{user}` since set-up and cannot use keys in {} (root's); in this mode a new or changed [[service]] takes a restart (create its key with `globalnet keygen --service {}` if you like, then restart); the packaged unit, whose state directory belongs to the daemon's user, adds services on reload",
                        s.name,
                        config.state_dir.display(),
                        s.name
                    ),
                    _ => format!("service `{}`: {e}", s.name),
                }
            })?;
        let address = address_of(&key.verifying_key().to_bytes());
        if created {
            tracing::info!(service = %s.name, file = %s.key, "created the service's key");
        }
        if address == default_address || out.iter().any(|(h, _): &(Hosted, _)| h.address == address)
        {
            return Err(format!(
                "service `{}`: its key {} is another service's key; give it a key file of its own",
                s.name, s.key
            ));
        }
        out.push((
            Hosted {
                name: s.name.clone(),
                address,
                tcp: s.tcp.clone(),
                udp: s.udp.clone(),
            },
            Some(Zeroizing::new(key.to_bytes())),
        ));
    }
    Ok(out)
}

/// The flow layer's ports of the named services (not the default one: its ports are the node
/// address's own).
pub(super) fn ports(hosted: &[Hosted], default_address: Ipv6Addr) -> Vec<ServicePorts> {
    hosted
        .iter()
        .filter(|h| h.address != default_address)
        .map(|h| ServicePorts {
            address: h.address.octets(),
            tcp: h.tcp.clone(),
            udp: h.udp.clone(),
        })
        .collect()
}
