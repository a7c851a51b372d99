//! A service's own claims on disk: `state_dir/names/NAME.claim`, the claim's bytes
//! (docs/protocol.md 18.3). `globalnet name claim` writes one after doing the work; the daemon is
//! to publish and re-sign them daily (with the same nonce: the work binds the name and key, not the
//! epoch) once claims are a DHT record kind.

use ed25519_dalek::SigningKey;
use rand::RngCore;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::claim::{claimable, Claim, Pins, MIN_WORK_BITS};
use crate::crypto::SecretRng;

/// The directory under the state directory.
pub const NAMES_DIR: &str = "names";
/// Tries before giving up on the work: 2^32 is ~4000 times the expected 2^20.
const MAX_TRIES: u64 = 1 << 32;

/// Today's epoch: Unix days.
pub fn now_epoch() -> u32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (secs / 86_400) as u32
}

/// The file of a claim of `name`.
pub fn claim_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join(NAMES_DIR).join(format!("{name}.claim"))
}

/// A new claim of `name` by `key`: does the work from a random start, signs for today, writes the
/// file (atomically) and returns the claim and the seconds the work took. Refuses to replace an
/// existing claim of the name (release it first).
pub fn claim(state_dir: &Path, name: &str, key: &SigningKey) -> Result<(Claim, f64), String> {
    claim_with(state_dir, name, key, MIN_WORK_BITS)
}

fn claim_with(
    state_dir: &Path,
    name: &str,
    key: &SigningKey,
    bits: u32,
) -> Result<(Claim, f64), String> {
    if !claimable(name) {
        return Err(format!(
            "`{name}` cannot be claimed: give one label of letters, digits and '-' (not a key name)"
        ));
    }
    let path = claim_path(state_dir, name);
    if path.exists() {
        return Err(format!(
            "{} exists: this node already claims {name}.gn.alt (globalnet name release {name} first)",
            path.display()
        ));
    }
    let t = Instant::now();
    let start = SecretRng::os().next_u64();
    let nonce = Claim::solve_work(name, &key.verifying_key(), bits, start, MAX_TRIES)
        .ok_or("no proof of work found; try again")?;
    let secs = t.elapsed().as_secs_f64();
    let c = Claim::sign(name, key, now_epoch(), nonce).map_err(|e| e.to_string())?;
    let dir = path.parent().unwrap_or(state_dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = path.with_extension("claim.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&c.encode())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((c, secs))
}

/// The claim of `name` on disk, checked as a claim from the network would be (without expiry:
/// the daemon re-signs it).
pub fn load(state_dir: &Path, name: &str) -> Result<Option<Claim>, String> {
    let path = claim_path(state_dir, name);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let epoch = bytes
        .len()
        .checked_sub(64 + 12)
        .and_then(|at| bytes.get(at..at + 4))
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_be_bytes);
    Claim::decode(&bytes, epoch).map(Some).map_err(|e| {
        format!(
            "{}: not a valid claim ({e}); release it and claim again",
            path.display()
        )
    })
}

/// The file of the pins (18.3), in the daemon's cache directory (writable after the privilege
/// drop).
pub const PINS_FILE: &str = "name-pins";

/// Every claim under `state_dir/names/`, checked; unreadable or invalid ones are reported.
pub fn load_all(state_dir: &Path) -> (Vec<Claim>, Vec<String>) {
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    let Ok(dir) = std::fs::read_dir(state_dir.join(NAMES_DIR)) else {
        return (ok, bad);
    };
    for e in dir.flatten() {
        let file = e.file_name();
        let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".claim")) else {
            continue;
        };
        match load(state_dir, name) {
            Ok(Some(c)) => ok.push(c),
            Ok(None) => {}
            Err(e) => bad.push(e),
        }
    }
    ok.sort_by(|a, b| a.name.cmp(&b.name));
    (ok, bad)
}

/// The pins in `cache_dir` (none when there is no file yet).
pub fn load_pins(cache_dir: &Path) -> Result<Pins, String> {
    let path = cache_dir.join(PINS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(Pins::from_text(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Pins::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes the pins to `cache_dir` atomically, mode 0600.
pub fn save_pins(cache_dir: &Path, pins: &Pins) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = cache_dir.join(PINS_FILE);
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(pins.to_text().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| format!("{}: {e}", path.display()))
}

/// Removes the claim of `name`; whether there was one.
pub fn release(state_dir: &Path, name: &str) -> Result<bool, String> {
    let path = claim_path(state_dir, name);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_show_release() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[5; 32]);
        // Full work is slow in a debug build; a claim with too little is refused when read.
        let (c, _) = claim_with(dir.path(), "cheesy", &key, 4).unwrap();
        if c.work_bits() < MIN_WORK_BITS {
            assert!(load(dir.path(), "cheesy").is_err());
        } else {
            assert_eq!(load(dir.path(), "cheesy").unwrap(), Some(c));
        }
        assert!(claim(dir.path(), "cheesy", &key)
            .unwrap_err()
            .contains("release"));
        assert!(claim(dir.path(), "a.b", &key).is_err());
        assert!(release(dir.path(), "cheesy").unwrap());
        assert!(!release(dir.path(), "cheesy").unwrap());
        assert_eq!(load(dir.path(), "cheesy").unwrap(), None);
        std::fs::write(claim_path(dir.path(), "bad"), b"junk").unwrap();
        assert!(load(dir.path(), "bad").is_err());
        assert_eq!(load_all(dir.path()).1.len(), 1);
    }

    #[test]
    fn pins_survive_a_restart_in_a_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_pins(dir.path()).unwrap(), Pins::default());
        let mut p = Pins::default();
        p.accept("cheesy", [7; 32]);
        save_pins(dir.path(), &p).unwrap();
        assert_eq!(load_pins(dir.path()).unwrap(), p);
        let mode = std::fs::metadata(dir.path().join(PINS_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
