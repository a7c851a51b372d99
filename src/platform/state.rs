//! The state directory as the daemon uses it after the privilege drop.
//!
//! `state_dir` holds the keys (0600) and stays as it is: when the daemon starts as root with
//! `user = ...`, it is root's, and the dropped user cannot write into it. What the running
//! daemon must write (the guard list) lives in `state_dir/cache/`, a directory this module
//! creates before the drop and gives to the drop user; `state_dir` becomes 0711 then, so the user
//! can pass through it without listing it or reading the keys. The packaged unit runs as its user
//! from the start; then the daemon creates the directory as that user.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The subdirectory of `state_dir` the running daemon writes.
pub const CACHE_DIR: &str = "cache";

/// Makes `state_dir/cache` (0700) and, when `owner` is given (a root daemon that will drop to
/// that user), hands it to the drop user. A file `name` that an older version kept in
/// `state_dir` itself is moved in (read while still privileged). Returns the directory.
pub fn prepare_cache(
    state_dir: &Path,
    owner: Option<(u32, u32)>,
    legacy: &[&str],
) -> io::Result<PathBuf> {
    let dir = state_dir.join(CACHE_DIR);
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = fs::symlink_metadata(&dir)?;
    if !meta.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory; move it away",
            dir.display()
        )));
    }
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
    for name in legacy {
        let old = state_dir.join(name);
        let new = dir.join(name);
        if old.is_file() && !new.exists() {
            fs::rename(&old, &new)?;
        }
    }
    if let Some((uid, gid)) = owner {
        // The dropped user must pass through `state_dir` to reach its cache: execute-only for
        // others (no listing; the keys in it stay 0600 root).
        let mode = fs::metadata(state_dir)?.permissions().mode() & 0o7777;
        if mode & 0o011 != 0o011 {
            fs::set_permissions(state_dir, fs::Permissions::from_mode(mode | 0o011))?;
        }
        let ids = (
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        );
        nix::unistd::chown(&dir, ids.0, ids.1).map_err(io::Error::from)?;
        for entry in fs::read_dir(&dir)? {
            let p = entry?.path();
            if fs::symlink_metadata(&p)?.is_file() {
                nix::unistd::chown(&p, ids.0, ids.1).map_err(io::Error::from)?;
            }
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_is_made_private_and_legacy_files_move_in() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("guards.json"), "{}").unwrap();
        let dir = prepare_cache(tmp.path(), None, &["guards.json"]).unwrap();
        assert_eq!(dir, tmp.path().join("cache"));
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(dir.join("guards.json").is_file());
        assert!(!tmp.path().join("guards.json").exists());
        // Again: nothing changes, nothing fails.
        prepare_cache(tmp.path(), None, &["guards.json"]).unwrap();
        std::fs::write(tmp.path().join("x"), "").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::write(&dir, "").unwrap();
        assert!(
            prepare_cache(tmp.path(), None, &[]).is_err(),
            "a file in the way"
        );
    }
}
