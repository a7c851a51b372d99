//! Petnames: names the user assigns locally (docs/protocol.md section 18.2), from the names file
//! (`/etc/globalnet/names`) and the config's `[names] local` list. They are never published and
//! always win over every other layer.
//!
//! One line is `NAME TARGET`: `NAME` with or without `.gn.alt`, `TARGET` a key name or an overlay
//! address; `#` starts a comment. Errors carry the file and line, as config errors do.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv6Addr;
use std::path::Path;

use super::keyname::{split_suffix, KeyName, LABEL_LEN, SUFFIX};
use crate::config::ConfigError;

/// The default names file.
pub const DEFAULT_NAMES_FILE: &str = "/etc/globalnet/names";
/// Largest names file read: a wrong path (a device, a log) fails fast.
const MAX_NAMES_FILE: u64 = 1 << 20;
/// Most petnames: the table lives for the daemon's life and is searched per DNS query.
pub const MAX_PETNAMES: usize = 10_000;

/// What a name points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A service key: the client can check the service against all of it.
    Key(KeyName),
    /// An overlay address (120 bits of a key's hash).
    Address(Ipv6Addr),
}

impl Target {
    /// The overlay address.
    pub fn address(&self) -> Ipv6Addr {
        match self {
            Target::Key(k) => k.address(),
            Target::Address(a) => *a,
        }
    }

    /// Parses a key name or an overlay address.
    pub fn parse(text: &str) -> Result<Target, String> {
        if let Ok(addr) = text.parse::<Ipv6Addr>() {
            return if crate::crypto::is_overlay(&addr) {
                Ok(Target::Address(addr))
            } else {
                Err(format!("`{text}` is not an overlay address (fd00::/8)"))
            };
        }
        KeyName::parse(text)
            .map(Target::Key)
            .map_err(|e| format!("`{text}` is neither an overlay address nor a key name: {e}"))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Key(k) => k.fmt(f),
            Target::Address(a) => a.fmt(f),
        }
    }
}

/// Whether `s` is a DNS label GlobalNet accepts in a name: 1 to 63 of `a-z 0-9 -`, not starting
/// or ending with `-` (lowercase: callers fold case first).
pub fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The canonical form of a name: lowercase, no final dot, ending in `.gn.alt` (added when the
/// user wrote only the labels before it). `None` when it is not a valid name.
pub fn canonical(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let head = split_suffix(&name).unwrap_or(&name).to_string();
    if head.len() > 200 || !head.split('.').all(is_label) {
        return None;
    }
    Some(format!("{head}.{SUFFIX}"))
}

/// One petname and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Petname {
    /// What it points at.
    pub target: Target,
    /// `file:line`, for `globalnet resolve` and for error messages.
    pub origin: String,
}

/// The petname table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Petnames {
    names: BTreeMap<String, Petname>,
}

impl Petnames {
    /// The petname for a canonical name.
    pub fn get(&self, name: &str) -> Option<&Petname> {
        self.names.get(name)
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Every petname, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Petname)> {
        self.names.iter()
    }

    /// Adds the entry on one line of `file` (1-based `line`, `column` of the entry); comments and
    /// blank lines add nothing.
    pub fn add_line(
        &mut self,
        text: &str,
        file: &str,
        line: usize,
        column: usize,
        key: &str,
    ) -> Result<(), ConfigError> {
        let err = |message: String, hint: &str| ConfigError {
            file: file.to_string(),
            line,
            column,
            key: key.to_string(),
            message,
            hint: hint.to_string(),
        };
        let body = text.split('#').next().unwrap_or("").trim();
        if body.is_empty() {
            return Ok(());
        }
        let mut words = body.split_whitespace();
        let (Some(name), Some(target), None) = (words.next(), words.next(), words.next()) else {
            return Err(err(
                format!("`{body}` is not `NAME TARGET`"),
                "write one name and one target per line, e.g. `alice fd52:b1e::9a33` or `alice <key>.gn.alt`",
            ));
        };
        let canon = canonical(name).ok_or_else(|| {
            err(
                format!("`{name}` is not a valid name"),
                "use labels of letters, digits and '-', e.g. alice or alice.gn.alt",
            )
        })?;
        // A petname shaped like a key name would hide the key it spells.
        if canon
            .split('.')
            .next()
            .is_some_and(|l| l.len() == LABEL_LEN)
            && KeyName::parse(&canon).is_ok()
        {
            return Err(err(
                format!("`{name}` is a key name"),
                "key names resolve by themselves; choose a shorter name",
            ));
        }
        let target = Target::parse(target).map_err(|m| {
            err(
                m,
                "give a key name (globalnet address --name) or an fd00::/8 address",
            )
        })?;
        if let Some(old) = self.names.get(&canon) {
            return Err(err(
                format!("`{canon}` is already defined at {}", old.origin),
                "each name may appear once; remove one of the two",
            ));
        }
        if self.names.len() >= MAX_PETNAMES {
            return Err(err(
                format!("more than {MAX_PETNAMES} names"),
                "keep the names file to the names you use",
            ));
        }
        self.names.insert(
            canon,
            Petname {
                target,
                origin: format!("{file}:{line}"),
            },
        );
        Ok(())
    }

    /// Adds every entry of a names file's text.
    pub fn add_text(&mut self, text: &str, file: &str) -> Result<(), ConfigError> {
        for (i, line) in text.lines().enumerate() {
            self.add_line(line, file, i + 1, 1, "")?;
        }
        Ok(())
    }

    /// Adds the names file at `path`; a missing file adds nothing when `optional`.
    pub fn add_file(&mut self, path: &Path, optional: bool) -> Result<(), ConfigError> {
        let file = path.display().to_string();
        let whole = |message: String, hint: &str| ConfigError {
            file: file.clone(),
            line: 0,
            column: 0,
            key: String::new(),
            message,
            hint: hint.to_string(),
        };
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(whole(
                    format!("cannot read: {e}"),
                    "create it (one `NAME TARGET` per line) or set [names] file in the config",
                ))
            }
        };
        if !meta.is_file() || meta.len() > MAX_NAMES_FILE {
            return Err(whole(
                "is not a regular file of at most 1 MiB".into(),
                "give the path of a names file in [names] file",
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            whole(
                format!("cannot read: {e}"),
                "make it readable by the daemon (it is read before the privilege drop)",
            )
        })?;
        self.add_text(&text, &file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "aoqqpp7tzyil4hlq3umoos6atft6jvrqtosq2xy53sdgiesvgg4lwbyb.gn.alt";

    #[test]
    fn parses_names_and_targets() {
        let mut p = Petnames::default();
        p.add_text(
            &format!("# my names\nalice fd52:b1e::9a33\n\nBob.GN.alt. {KEY}  # bob's key\nwww.carol {KEY}\n"),
            "names",
        )
        .unwrap();
        assert_eq!(p.len(), 3);
        let a = p.get("alice.gn.alt").unwrap();
        assert_eq!(a.target, Target::Address("fd52:b1e::9a33".parse().unwrap()));
        assert_eq!(a.origin, "names:2");
        assert!(matches!(
            p.get("bob.gn.alt").unwrap().target,
            Target::Key(_)
        ));
        assert!(p.get("www.carol.gn.alt").is_some());
    }

    #[test]
    fn errors_name_file_and_line() {
        for (text, line, what) in [
            ("alice\n", 1, "NAME TARGET"),
            ("\nalice fd00::1 extra\n", 2, "NAME TARGET"),
            ("al_ice fd00::1\n", 1, "valid name"),
            ("alice 2001:db8::1\n", 1, "overlay"),
            ("alice bob.gn.alt\n", 1, "neither"),
            ("alice fd00::1\nALICE.gn.alt fd00::2\n", 2, "names:1"),
            (&format!("{KEY} fd00::1\n"), 1, "key name"),
        ] {
            let e = Petnames::default().add_text(text, "names").unwrap_err();
            assert_eq!(e.line, line, "{text}: {e}");
            assert!(e.to_string().starts_with(&format!("names:{line}:")), "{e}");
            assert!(e.to_string().contains(what), "{text}: {e}");
            assert!(!e.hint.is_empty());
        }
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(canonical("Alice").as_deref(), Some("alice.gn.alt"));
        assert_eq!(canonical("alice.gn.alt.").as_deref(), Some("alice.gn.alt"));
        assert_eq!(canonical("a.b").as_deref(), Some("a.b.gn.alt"));
        assert_eq!(canonical("-a"), None);
        assert_eq!(canonical(""), None);
        assert_eq!(canonical("a..b"), None);
    }

    #[test]
    fn missing_optional_file_is_empty() {
        let mut p = Petnames::default();
        p.add_file(Path::new("/nonexistent/names"), true).unwrap();
        assert!(p.is_empty());
        let e = p
            .add_file(Path::new("/nonexistent/names"), false)
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/names"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,200}") {
            let _ = Petnames::default().add_text(&text, "fuzz");
        }
    }
}
