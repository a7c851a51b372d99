//! The guard file (docs/protocol.md 9.3): the node's guards kept across restarts, in
//! `state_dir/cache/guards.json` (0600). File I/O lives here, in the daemon, not in the pure
//! path-selection layer: the node hands out the list to keep and takes back the loaded one.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path as FsPath, PathBuf};

use crate::circuit::path::{Guard, Guards, NUM_GUARDS};
use crate::crypto::keys::{hex, unhex32};
use crate::time::Instant;

/// The guard file's name in the state directory's `cache/`.
pub const GUARDS_FILE: &str = "guards.json";
/// Version of the guard file format.
pub const GUARDS_FILE_VERSION: u32 = 1;
/// A guard file larger than this is refused as corrupt (two entries take about 400 bytes).
const MAX_GUARDS_FILE_LEN: u64 = 64 * 1024;

/// A guard file could not be used. The caller logs it and starts with fresh guards.
#[derive(Debug)]
pub enum GuardFileError {
    /// Reading or writing failed.
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        error: io::Error,
    },
    /// The file is not a valid guard file.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl fmt::Display for GuardFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuardFileError::Io { path, error } => {
                write!(f, "guards: {}: {error}", path.display())
            }
            GuardFileError::Corrupt { path, reason } => write!(
                f,
                "guards: {} is corrupt ({reason}); choosing new guards",
                path.display()
            ),
        }
    }
}

impl std::error::Error for GuardFileError {}

#[derive(Serialize, Deserialize)]
struct GuardFile {
    version: u32,
    guards: Vec<GuardEntry>,
}

#[derive(Serialize, Deserialize)]
struct GuardEntry {
    identity: String,
    chosen_at: Instant,
    expires: Instant,
    last_seen_up: Option<Instant>,
    down_since: Option<Instant>,
    #[serde(default)]
    missing_since: Option<Instant>,
}

/// Reads the guard file. A missing file gives no guards; an unreadable or corrupt one is an
/// error (the caller logs it and starts with [`Guards::new`]).
pub fn load(path: &FsPath) -> Result<Guards, GuardFileError> {
    let io_err = |error| GuardFileError::Io {
        path: path.to_path_buf(),
        error,
    };
    let corrupt = |reason: String| GuardFileError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Guards::new()),
        Err(e) => return Err(io_err(e)),
    };
    let mut text = String::new();
    let read = file.take(MAX_GUARDS_FILE_LEN + 1).read_to_string(&mut text);
    match read {
        Ok(n) if n as u64 > MAX_GUARDS_FILE_LEN => {
            return Err(corrupt(format!("longer than {MAX_GUARDS_FILE_LEN} bytes")))
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return Err(corrupt("not UTF-8".to_string()))
        }
        Err(e) => return Err(io_err(e)),
    }
    let parsed: GuardFile =
        serde_json::from_str(&text).map_err(|e| corrupt(format!("JSON: {e}")))?;
    if parsed.version != GUARDS_FILE_VERSION {
        return Err(corrupt(format!("unknown version {}", parsed.version)));
    }
    if parsed.guards.len() > NUM_GUARDS {
        return Err(corrupt(format!("{} guards", parsed.guards.len())));
    }
    let mut list: Vec<Guard> = Vec::with_capacity(parsed.guards.len());
    for e in parsed.guards {
        let identity = unhex32(&e.identity).ok_or_else(|| corrupt("bad identity".to_string()))?;
        list.push(Guard {
            identity,
            chosen_at: e.chosen_at,
            expires: e.expires,
            last_seen_up: e.last_seen_up,
            down_since: e.down_since,
            missing_since: e.missing_since,
            temporary: false,
        });
    }
    Guards::restore(list).map_err(corrupt)
}

/// Writes the guards to keep ([`Guards::to_keep`]) and marks them saved.
pub fn save(guards: &mut Guards, path: &FsPath) -> Result<(), GuardFileError> {
    save_list(&guards.to_keep(), path)?;
    guards.mark_saved();
    Ok(())
}

/// Writes `guards`: to a temporary file in the same directory (mode 0600), synced, then renamed
/// over `path`.
pub fn save_list(guards: &[Guard], path: &FsPath) -> Result<(), GuardFileError> {
    let io_err = |p: &FsPath| {
        let p = p.to_path_buf();
        move |error| GuardFileError::Io { path: p, error }
    };
    let file = GuardFile {
        version: GUARDS_FILE_VERSION,
        guards: guards
            .iter()
            .map(|g| GuardEntry {
                identity: hex(&g.identity),
                chosen_at: g.chosen_at,
                expires: g.expires,
                last_seen_up: g.last_seen_up,
                down_since: g.down_since,
                missing_since: g.missing_since,
            })
            .collect(),
    };
    let mut text = serde_json::to_string_pretty(&file).map_err(|e| GuardFileError::Io {
        path: path.to_path_buf(),
        error: io::Error::other(e),
    })?;
    text.push('\n');
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| GUARDS_FILE.to_string());
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    let written = f.write_all(text.as_bytes()).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(&tmp)(e));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(path)(e));
    }
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            FsPath::new(".")
        } else {
            dir
        };
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}
