//! Configuration errors: the file, line, column and key of a bad value, and what to do about it.

use std::fmt;
use std::ops::Range;

/// A configuration error: where it is and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// 1-based line, 0 when the error is about the whole file.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
    /// The dotted key (`tun.mtu`), empty when unknown.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub hint: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        write!(f, "{}", self.message)?;
        if !self.hint.is_empty() {
            write!(f, "\n  hint: {}", self.hint)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    pub(super) fn whole_file(file: &str, message: &str, hint: &str) -> Self {
        ConfigError {
            file: file.into(),
            line: 0,
            column: 0,
            key: String::new(),
            message: message.into(),
            hint: hint.into(),
        }
    }

    pub(super) fn io(file: &str, e: &std::io::Error) -> Self {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound => {
                "create it from config.example.toml, or give another file with --config"
            }
            std::io::ErrorKind::PermissionDenied => "run as a user that may read it (or with sudo)",
            _ => "check the path given with --config",
        };
        ConfigError::whole_file(file, &format!("cannot read: {e}"), hint)
    }

    pub(super) fn at(
        text: &str,
        file: &str,
        span: Range<usize>,
        key: &str,
        message: String,
        hint: &str,
    ) -> Self {
        let (line, column) = line_col(text, span.start);
        ConfigError {
            file: file.into(),
            line,
            column,
            key: key.into(),
            message,
            hint: hint.into(),
        }
    }

    pub(super) fn from_toml(text: &str, file: &str, e: &toml::de::Error) -> Self {
        let span = e.span().unwrap_or(0..0);
        let (line, column) = line_col(text, span.start);
        let message = e.message().trim().to_string();
        let key = key_at(text, span.start);
        let hint = if message.starts_with("unknown field") {
            "remove it or fix its spelling; globalnet.conf(5) and config.example.toml document every option"
        } else if message.starts_with("invalid type") {
            "give the value the type config.example.toml shows: quoted strings, bare numbers, true/false, [lists]"
        } else if message.contains("duplicate") {
            "each key and table may appear only once"
        } else {
            "this is not valid TOML; compare with config.example.toml"
        };
        ConfigError {
            file: file.into(),
            line,
            column,
            key,
            message,
            hint: hint.into(),
        }
    }
}

/// 1-based line and column of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The dotted key of the `key = value` line containing `offset`, using the last `[table]` header
/// above it. Best effort: it only decorates messages.
pub(super) fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or("");
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text
        .get(line_start..)
        .and_then(|rest| rest.lines().next())
        .unwrap_or("");
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let key = match line.split_once('=') {
        Some((k, _)) if !line.trim_start().starts_with('[') => k.trim().to_string(),
        _ => return table.unwrap_or_default(),
    };
    match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key,
    }
}
