//! `[[service]]`: named hidden services besides `[expose]`'s default one, each with its own key
//! file in `state_dir`, its own overlay address and its own default-deny port list.

use serde::Deserialize;
use toml::Spanned;

use super::{ports, ConfigError, ErrFn};
use crate::crypto::keys::{
    RELAY_IDENTITY_FILE, RELAY_LINK_FILE, RELAY_ONION_FILE, SERVICE_DEFAULT_FILE,
};

/// Most named services one node hosts (each costs intro circuits, publications and a key).
pub const MAX_SERVICES: usize = 32;
/// The name `[expose]`'s service goes by (`globalnet services`, `address --service`).
pub const DEFAULT_SERVICE: &str = "default";

/// One `[[service]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Its name: lowercase letters, digits and '-'.
    pub name: String,
    /// Its key file, a file name inside `state_dir`.
    pub key: String,
    /// TCP ports reachable on its address.
    pub tcp: Vec<u16>,
    /// UDP ports reachable on its address.
    pub udp: Vec<u16>,
}

/// The key file a service named `name` uses unless `key` says otherwise.
pub fn default_key_file(name: &str) -> String {
    format!("service_{name}.key")
}

/// Whether `name` is a valid service name.
pub fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    name: Spanned<String>,
    key: Option<Spanned<String>>,
    tcp: Option<Vec<Spanned<i64>>>,
    udp: Option<Vec<Spanned<i64>>>,
}

pub(super) fn parse(
    raw: Vec<RawService>,
    err: &ErrFn<'_>,
) -> Result<Vec<ServiceConfig>, ConfigError> {
    let mut out: Vec<ServiceConfig> = Vec::new();
    for s in raw {
        let name = s.name.get_ref();
        if !valid_name(name) {
            return Err(err(
                s.name.span(),
                "service.name",
                format!("`{name}` is not a valid service name"),
                "use 1 to 32 lowercase letters, digits and '-', e.g. name = \"web\"",
            ));
        }
        if name == DEFAULT_SERVICE || out.iter().any(|o| &o.name == name) {
            return Err(err(
                s.name.span(),
                "service.name",
                format!("the name `{name}` is taken"),
                "give each [[service]] its own name; `default` is [expose]'s service",
            ));
        }
        if out.len() >= MAX_SERVICES {
            return Err(err(
                s.name.span(),
                "service",
                format!("more than {MAX_SERVICES} services"),
                "host at most 32 services on one node",
            ));
        }
        let key = match &s.key {
            Some(k) => {
                let f = k.get_ref();
                let reserved = [
                    RELAY_IDENTITY_FILE,
                    RELAY_LINK_FILE,
                    RELAY_ONION_FILE,
                    SERVICE_DEFAULT_FILE,
                ];
                let plain = !f.is_empty()
                    && f.len() <= 64
                    && !f.starts_with('.')
                    && f.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
                if !plain || reserved.contains(&f.as_str()) {
                    return Err(err(
                        k.span(),
                        "service.key",
                        format!("`{f}` is not a usable key file name"),
                        "give a file name inside state_dir (letters, digits, '.', '_', '-'; not a node key's file), e.g. key = \"web.key\"",
                    ));
                }
                if out.iter().any(|o| &o.key == f) {
                    return Err(err(
                        k.span(),
                        "service.key",
                        format!("`{f}` is the key of another service"),
                        "give each service its own key file: services that share a key are one service",
                    ));
                }
                f.clone()
            }
            None => default_key_file(name),
        };
        let tcp = ports(s.tcp.as_deref().unwrap_or(&[]), "service.tcp", err)?;
        let udp = ports(s.udp.as_deref().unwrap_or(&[]), "service.udp", err)?;
        if tcp.is_empty() && udp.is_empty() {
            return Err(err(
                s.name.span(),
                "service",
                format!("service `{name}` opens no port"),
                "list the ports it serves, e.g. tcp = [80, 443]; everything else stays closed",
            ));
        }
        out.push(ServiceConfig {
            name: name.clone(),
            key,
            tcp,
            udp,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    fn bad(text: &str) -> ConfigError {
        Config::parse(text, "t.toml").unwrap_err()
    }

    #[test]
    fn services_parse_with_their_own_ports_and_keys() {
        let c = Config::parse(
            "[expose]\ntcp = [22]\n[[service]]\nname = \"web\"\ntcp = [443, 80]\n\
             [[service]]\nname = \"dns-1\"\nkey = \"d.key\"\nudp = [53]\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.services.len(), 2);
        let (web, dns) = (&c.services[0], &c.services[1]);
        assert_eq!(
            (web.name.as_str(), web.key.as_str()),
            ("web", "service_web.key")
        );
        assert_eq!((web.tcp.clone(), web.udp.clone()), (vec![80, 443], vec![]));
        assert_eq!((dns.key.as_str(), dns.udp.clone()), ("d.key", vec![53]));
        assert_eq!(c.expose.tcp, vec![22]);
    }

    #[test]
    fn services_turn_relaying_off_by_default() {
        let c = Config::parse("[[service]]\nname = \"web\"\ntcp = [80]\n", "t").unwrap();
        assert!(!c.relay_enabled());
        let c = Config::parse(
            "[network]\nrelay = true\n[[service]]\nname = \"web\"\ntcp = [80]\n",
            "t",
        )
        .unwrap();
        assert!(c.relay_enabled());
    }

    #[test]
    fn bad_services_name_line_key_and_hint() {
        let e = bad("[[service]]\nname = \"Web\"\ntcp = [80]\n");
        assert_eq!((e.line, e.key.as_str()), (2, "service.name"), "{e}");
        let e = bad("[[service]]\nname = \"default\"\ntcp = [80]\n");
        assert!(e.message.contains("taken"), "{e}");
        let e =
            bad("[[service]]\nname = \"a\"\ntcp = [80]\n[[service]]\nname = \"a\"\ntcp = [81]\n");
        assert_eq!((e.line, e.key.as_str()), (5, "service.name"), "{e}");
        let e = bad("[[service]]\nname = \"a\"\nkey = \"../x\"\ntcp = [80]\n");
        assert_eq!((e.line, e.key.as_str()), (3, "service.key"), "{e}");
        let e = bad("[[service]]\nname = \"a\"\nkey = \"service_default.key\"\ntcp = [80]\n");
        assert_eq!(e.key, "service.key", "{e}");
        let e = bad(
            "[[service]]\nname = \"a\"\nkey = \"k\"\ntcp = [80]\n[[service]]\nname = \"b\"\nkey = \"k\"\ntcp = [81]\n",
        );
        assert!(e.message.contains("another service"), "{e}");
        let e = bad("[[service]]\nname = \"a\"\n");
        assert!(
            e.message.contains("opens no port") && !e.hint.is_empty(),
            "{e}"
        );
        let e = bad("[[service]]\nname = \"a\"\ntcp = [0]\n");
        assert_eq!(e.key, "service.tcp", "{e}");
        let e = bad("[[service]]\ntcp = [80]\n");
        assert!(e.message.contains("name"), "{e}");
        let e = bad("[[service]]\nname = \"a\"\ntcp = [80]\nports = [1]\n");
        assert!(e.message.starts_with("unknown field"), "{e}");
    }
}
