//! SIGHUP (`systemctl reload globalnet`): the config file is read again and the hosted services
//! follow it. What a reload applies: `[[service]]` (services added, removed, ports changed) and
//! `[expose]` (the default service's ports, or hosting it at all). Everything else takes a
//! restart and is named in the log and in `status` (`config.restart_needed`). A config that
//! does not parse, a key that cannot be read, or a change that would turn relaying on or off
//! (relaying while hosting links the services to the relay) is refused: the running config
//! stays, and the log and `status` (`config.reload_error`) say why. Services that stay keep
//! their intro points, descriptors, sessions and circuits.

use std::path::Path;

use super::hosted::{self, Hosted, Seed};
use super::*;
use crate::control::proto::ConfigStatus;

/// What the link task applies on a reload.
pub(super) struct ServiceChange {
    /// Addresses no longer hosted.
    pub(super) remove: Vec<[u8; 16]>,
    /// New named services' seeds.
    pub(super) add: Vec<Seed>,
    /// Start hosting the default service (its seed is the node's own).
    pub(super) add_default: bool,
    /// `[expose]`'s ports.
    pub(super) own_ports: (Vec<u16>, Vec<u16>),
    /// Every named service's ports.
    pub(super) ports: Vec<crate::flow::ServicePorts>,
    /// Told when applied.
    pub(super) done: oneshot::Sender<()>,
}

/// The state of the config as `status` shows it.
#[derive(Default)]
pub(super) struct ReloadState {
    pub(super) reloads: u64,
    pub(super) error: Option<String>,
    pub(super) restart_needed: Vec<String>,
}

impl ReloadState {
    pub(super) fn status(&self) -> ConfigStatus {
        ConfigStatus {
            reloads: self.reloads,
            reload_error: self.error.clone(),
            restart_needed: self.restart_needed.clone(),
        }
    }
}

/// Reads `path` again and applies it; logs and records the outcome.
pub(super) async fn reload(path: &Path, state: &NodeState) {
    tracing::info!(config = %path.display(), "SIGHUP: reloading the config");
    let outcome = apply(path, state).await;
    let Ok(mut r) = state.reload.lock() else {
        return;
    };
    match outcome {
        Ok((names, restart)) => {
            if !restart.is_empty() {
                tracing::warn!(
                    keys = ?restart,
                    "reload: these settings changed but take a restart; the running values stay"
                );
            }
            tracing::info!(services = ?names, "reload: config applied");
            r.reloads += 1;
            r.error = None;
            r.restart_needed = restart;
        }
        Err(e) => {
            tracing::error!("reload refused, the running config stays: {e}");
            r.error = Some(e);
        }
    }
}

/// The tables (or top-level keys) whose values differ between the running config and `new`,
/// besides the services, which a reload applies.
pub(super) fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut diff = |name: &str, same: bool| {
        if !same {
            out.push(name.to_string());
        }
    };
    diff("state_dir", old.state_dir == new.state_dir);
    diff("control_socket", old.control_socket == new.control_socket);
    diff("user", old.user == new.user);
    diff("tun", old.tun == new.tun);
    diff("network", old.network == new.network);
    diff("paths", old.paths == new.paths);
    diff("limits", old.limits == new.limits);
    diff("client", old.client == new.client);
    diff("names", old.names == new.names);
    out
}

async fn apply(path: &Path, state: &NodeState) -> Result<(Vec<String>, Vec<String>), String> {
    let mut new = Config::load(path).map_err(|e| e.to_string())?;
    let running = &state.config;
    if new.relay_enabled() != running.relay_enabled() {
        return Err(format!(
            "relaying would turn {} (services {}): that takes a restart, so that a relay never hosts services (or set [network] relay explicitly)",
            if new.relay_enabled() { "on" } else { "off" },
            if new.hosts_services() { "configured" } else { "gone" },
        ));
    }
    let restart = restart_needed(running, &new);
    // Keys live where the running daemon keeps them.
    new.state_dir = running.state_dir.clone();
    let wanted = hosted::load(&new, state.address)?;
    let current: Vec<Hosted> = state
        .hosted
        .lock()
        .map_err(|_| "internal error: state lock poisoned".to_string())?
        .clone();
    let has = |list: &[Hosted], a: Ipv6Addr| list.iter().any(|h| h.address == a);
    let wanted_list: Vec<Hosted> = wanted.iter().map(|(h, _)| h.clone()).collect();
    let remove: Vec<Ipv6Addr> = current
        .iter()
        .filter(|h| !has(&wanted_list, h.address))
        .map(|h| h.address)
        .collect();
    let added: Vec<&(Hosted, Option<Seed>)> = wanted
        .iter()
        .filter(|(h, _)| !has(&current, h.address))
        .collect();
    let new_addrs: Vec<Ipv6Addr> = added
        .iter()
        .filter(|(h, s)| s.is_some() && h.address != state.address)
        .map(|(h, _)| h.address)
        .collect();
    platform::routes::set_service_addresses(&running.tun.name, &new_addrs, &[])
        .await
        .map_err(|e| {
            format!(
                "adding the new services' addresses to {}: {e}",
                running.tun.name
            )
        })?;
    let (done, applied) = oneshot::channel();
    let change = ServiceChange {
        remove: remove.iter().map(|a| a.octets()).collect(),
        add: added.iter().filter_map(|(_, s)| s.clone()).collect(),
        add_default: added.iter().any(|(h, _)| h.address == state.address),
        own_ports: (new.expose.tcp.clone(), new.expose.udp.clone()),
        ports: hosted::ports(&wanted_list, state.address),
        done,
    };
    state
        .commands
        .send(Command::Services(change))
        .await
        .map_err(|_| "the link task is gone".to_string())?;
    applied
        .await
        .map_err(|_| "the link task did not apply the change".to_string())?;
    // Addresses go once nothing uses them (the default one stays: it is the node's own).
    let gone: Vec<Ipv6Addr> = remove.into_iter().filter(|a| *a != state.address).collect();
    if let Err(e) = platform::routes::set_service_addresses(&running.tun.name, &[], &gone).await {
        tracing::warn!("removing old services' addresses: {e}");
    }
    let names = wanted_list.iter().map(|h| h.name.clone()).collect();
    if let Ok(mut h) = state.hosted.lock() {
        *h = wanted_list;
    }
    Ok((names, restart))
}
