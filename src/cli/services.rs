//! The hidden services of this node on the command line: `globalnet services`, `address
//! --service NAME`, `keygen --service NAME`.

use std::path::{Path, PathBuf};

use super::{duration, table, Failure, StateArgs};
use crate::config::services::{default_key_file, valid_name, DEFAULT_SERVICE};
use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::control::proto::ServiceAnswer;
use crate::crypto::keys::{load_or_create_service_key, load_service_key};
use crate::crypto::{address_of, NodeKeys};
use crate::names::KeyName;

pub(super) fn print_services(list: &[ServiceAnswer]) -> String {
    if list.is_empty() {
        return "no services (list ports under [expose], or add a [[service]], in the config to host one)\n"
            .into();
    }
    let ports = |p: &[u16]| -> String {
        if p.is_empty() {
            "-".into()
        } else {
            p.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
        }
    };
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            vec![
                if c.name.is_empty() {
                    "-".into()
                } else {
                    c.name.clone()
                },
                c.address.clone(),
                ports(&c.tcp),
                ports(&c.udp),
                c.intro_points.len().to_string(),
                c.descriptor_age_s
                    .map_or("not published yet".into(), duration),
                c.sessions.to_string(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "NAME",
            "ADDRESS",
            "TCP",
            "UDP",
            "INTRO POINTS",
            "DESCRIPTOR AGE",
            "SESSIONS",
        ],
        &rows,
    );
    for c in list {
        if let Some(why) = &c.intro_missing {
            out.push_str(&format!("{}: {why}\n", c.address));
        }
    }
    out
}

/// The config that names the services: `--config`, else the system config when readable.
fn config_of(args: &StateArgs) -> Result<Option<Config>, Failure> {
    match &args.config {
        Some(p) => Config::load(p)
            .map(Some)
            .map_err(|e| Failure::Usage(e.to_string())),
        None => Ok(Config::load(Path::new(DEFAULT_CONFIG_PATH)).ok()),
    }
}

/// The key file of the named service `name`: as the config lists it, else the default name.
fn key_file(name: &str, config: Option<&Config>) -> Result<String, Failure> {
    if !valid_name(name) {
        return Err(Failure::Usage(format!(
            "`{name}` is not a service name: 1 to 32 lowercase letters, digits and '-'"
        )));
    }
    Ok(config
        .and_then(|c| c.services.iter().find(|s| s.name == name))
        .map_or_else(|| default_key_file(name), |s| s.key.clone()))
}

fn print_address(service: &str, key: &ed25519_dalek::VerifyingKey, name: bool, json: bool) {
    let address = address_of(&key.to_bytes());
    if json {
        println!(
            "{}",
            serde_json::json!({
                "service": service,
                "address": address.to_string(),
                "key_name": KeyName::of(key).to_string(),
            })
        );
    } else if name {
        println!("{}", KeyName::of(key));
    } else {
        println!("{address}");
    }
}

/// The state directory and the key of the service `service` (`default`: the node's own).
pub(super) fn service_key(
    args: &StateArgs,
    service: &str,
) -> Result<(PathBuf, ed25519_dalek::SigningKey), Failure> {
    let config = config_of(args)?;
    let dir = match (&args.state_dir, &config) {
        (Some(d), _) => d.clone(),
        (None, Some(c)) => c.state_dir.clone(),
        (None, None) => crate::config::DEFAULT_STATE_DIR.into(),
    };
    let key = if service == DEFAULT_SERVICE {
        NodeKeys::load(&dir)
            .map_err(|e| Failure::Runtime(e.to_string()))?
            .service
    } else {
        let file = key_file(service, config.as_ref())?;
        load_service_key(&dir, &file).map_err(|e| {
            Failure::Runtime(format!(
                "service `{service}`: {e} (or `globalnet keygen --service {service}`)"
            ))
        })?
    };
    Ok((dir, key))
}

/// `globalnet address [--service NAME]`.
pub(super) fn address(
    args: &StateArgs,
    service: Option<&str>,
    name: bool,
    json: bool,
) -> Result<(), Failure> {
    let service = service.unwrap_or(DEFAULT_SERVICE);
    let (_, key) = service_key(args, service)?;
    print_address(service, &key.verifying_key(), name, json);
    Ok(())
}

/// `globalnet keygen --service NAME`: the named service's key, created when absent.
pub(super) fn keygen(args: &StateArgs, service: &str, json: bool) -> Result<(), Failure> {
    let config = config_of(args)?;
    let dir = match (&args.state_dir, &config) {
        (Some(d), _) => d.clone(),
        (None, Some(c)) => c.state_dir.clone(),
        (None, None) => crate::config::DEFAULT_STATE_DIR.into(),
    };
    if service == DEFAULT_SERVICE {
        return Err(Failure::Usage(
            "the default service's key is the node's own: `globalnet keygen` without --service"
                .into(),
        ));
    }
    let file = key_file(service, config.as_ref())?;
    let (key, created) =
        load_or_create_service_key(&dir, &file).map_err(|e| Failure::Runtime(e.to_string()))?;
    if created {
        eprintln!("created {}", dir.join(&file).display());
    } else {
        eprintln!(
            "{} already present; nothing changed",
            dir.join(&file).display()
        );
    }
    print_address(service, &key.verifying_key(), false, json);
    Ok(())
}
