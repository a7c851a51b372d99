//! Names under `.gn.alt` (docs/protocol.md section 18): what a name resolves to.
//!
//! Three layers, strongest first as the resolver tries them: petnames the user wrote down
//! ([`petnames`]), key names that carry their key ([`keyname`]), and names the network issues
//! (claims in the DHT). A petname always wins, so a name the user chose can never be taken over
//! from outside.

pub mod claim;
pub mod claim_files;
pub mod dns;
pub mod keyname;
pub mod network;
pub mod petnames;

use std::fmt;
use std::net::Ipv6Addr;

pub use keyname::{KeyName, KeyNameError, SUFFIX};
pub use petnames::{Petnames, Target};

/// Which layer answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A petname, written at `origin` (`file:line`).
    Petname {
        /// Where the user wrote it.
        origin: String,
    },
    /// A key name: the name is the key.
    KeyName,
    /// A name the network issued.
    Network,
}

impl Source {
    /// The layer's name as `globalnet resolve` shows it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Source::Petname { .. } => "petname",
            Source::KeyName => "key",
            Source::Network => "network",
        }
    }
}

/// A name resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The canonical name.
    pub name: String,
    /// The overlay address.
    pub address: Ipv6Addr,
    /// The service key, when the layer gave one (a key name, a petname to a key name, a claim).
    pub key: Option<KeyName>,
    /// Which layer answered.
    pub source: Source,
}

/// What the local layers say about a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    /// Resolved without the network.
    Found(Resolution),
    /// Only the network can say: the name's one label (a network-issued name).
    Network(String),
    /// No such name: no layer can resolve it.
    NotFound,
}

/// Why a name cannot be resolved at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// Not under `.gn.alt`: not ours to answer.
    OtherDomain,
    /// Under `.gn.alt` but not a valid name.
    Invalid,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameError::OtherDomain => "GlobalNet names end in .gn.alt",
            NameError::Invalid => {
                "not a valid name: labels of letters, digits and '-', at most 63 characters each"
            }
        })
    }
}

impl std::error::Error for NameError {}

/// Resolves `name` (which must end in `.gn.alt`, any case, final dot allowed) with the local
/// layers: petnames first, then key names. A single other label is left to the network.
pub fn resolve_local(name: &str, pets: &Petnames) -> Result<Local, NameError> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if keyname::split_suffix(trimmed).is_none() {
        return Err(NameError::OtherDomain);
    }
    let canon = petnames::canonical(trimmed).ok_or(NameError::Invalid)?;
    if let Some(p) = pets.get(&canon) {
        let key = match p.target {
            Target::Key(k) => Some(k),
            Target::Address(_) => None,
        };
        return Ok(Local::Found(Resolution {
            name: canon,
            address: p.target.address(),
            key,
            source: Source::Petname {
                origin: p.origin.clone(),
            },
        }));
    }
    let head = keyname::split_suffix(&canon).unwrap_or("");
    if head.contains('.') {
        // Network names are one label; deeper names exist only as petnames.
        return Ok(Local::NotFound);
    }
    if head.len() == keyname::LABEL_LEN {
        if let Ok(k) = KeyName::parse_label(head) {
            return Ok(Local::Found(Resolution {
                name: canon,
                address: k.address(),
                key: Some(k),
                source: Source::KeyName,
            }));
        }
    }
    Ok(Local::Network(head.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "aoqqpp7tzyil4hlq3umoos6atft6jvrqtosq2xy53sdgiesvgg4lwbyb.gn.alt";

    fn pets() -> Petnames {
        let mut p = Petnames::default();
        p.add_text(&format!("alice fd00::1\nkeyed {KEY}\n"), "names")
            .unwrap();
        p
    }

    #[test]
    fn petnames_then_key_names_then_the_network() {
        let p = pets();
        let Local::Found(r) = resolve_local("Alice.gn.alt.", &p).unwrap() else {
            panic!()
        };
        assert_eq!(r.address, "fd00::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(r.source.as_str(), "petname");
        let Local::Found(r) = resolve_local("keyed.gn.alt", &p).unwrap() else {
            panic!()
        };
        assert_eq!(r.key, Some(KeyName::parse(KEY).unwrap()));
        let Local::Found(r) = resolve_local(KEY, &p).unwrap() else {
            panic!()
        };
        assert_eq!(r.source, Source::KeyName);
        assert_eq!(
            r.address.to_string(),
            "fdfc:a1e2:e67f:8a0d:e83:d03b:4f4e:6587"
        );
        assert_eq!(
            resolve_local("cheesy.gn.alt", &p).unwrap(),
            Local::Network("cheesy".into())
        );
        assert_eq!(
            resolve_local("www.cheesy.gn.alt", &p).unwrap(),
            Local::NotFound
        );
    }

    #[test]
    fn other_domains_and_bad_names() {
        let p = Petnames::default();
        for other in ["alice.gn", "example.com", "gn.alt", "alt", ""] {
            assert_eq!(
                resolve_local(other, &p),
                Err(NameError::OtherDomain),
                "{other}"
            );
        }
        assert_eq!(resolve_local("a_b.gn.alt", &p), Err(NameError::Invalid));
    }

    #[test]
    fn a_petname_beats_a_network_name() {
        let mut p = Petnames::default();
        p.add_text("cheesy fd00::7\n", "names").unwrap();
        assert!(matches!(
            resolve_local("cheesy.gn.alt", &p).unwrap(),
            Local::Found(_)
        ));
    }
}
