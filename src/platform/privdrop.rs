//! Dropping root after set-up, keeping only `CAP_NET_ADMIN` (for later route and address changes).
//!
//! Capabilities are per thread on Linux, so this must run while the process has exactly one
//! thread; [`drop_to_user`] checks that and refuses otherwise.

use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{setgid, setgroups, setuid, Gid, Uid, User};

use super::PlatformError;

/// The uid and gid a user name resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

fn perr(what: &str) -> impl FnOnce(String) -> PlatformError + '_ {
    move |e| PlatformError::Privileges(format!("{what}: {e}"))
}

/// Looks a user up in the system's user database.
pub fn lookup(name: &str) -> Result<Ids, PlatformError> {
    match User::from_name(name) {
        Ok(Some(u)) => Ok(Ids {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        }),
        Ok(None) => Err(PlatformError::Privileges(format!(
            "user `{name}` does not exist; create it (`useradd --system {name}`) or remove `user` from the config"
        ))),
        Err(e) => Err(PlatformError::Privileges(format!("looking up user `{name}`: {e}"))),
    }
}

fn thread_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/task").ok().map(|d| d.count())
}

/// Switches to `ids`, keeping `CAP_NET_ADMIN` as the only capability in the permitted, effective
/// and bounding sets; the inheritable and ambient sets end up empty, and no-new-privileges is set.
pub fn drop_to_user(ids: Ids) -> Result<(), PlatformError> {
    if ids.uid == 0 {
        return Err(PlatformError::Privileges(
            "refusing to \"drop\" to uid 0; name an unprivileged user".into(),
        ));
    }
    match thread_count() {
        Some(1) => {}
        Some(n) => {
            return Err(PlatformError::Privileges(format!(
                "the process has {n} threads; capabilities are per thread, so the drop must happen before any thread starts"
            )))
        }
        None => {
            return Err(PlatformError::Privileges(
                "cannot read /proc/self/task to count threads".into(),
            ))
        }
    }
    let keep: CapsHashSet = [Capability::CAP_NET_ADMIN].into_iter().collect();

    // Shrink the bounding set while we still hold CAP_SETPCAP.
    for cap in caps::all() {
        if cap != Capability::CAP_NET_ADMIN {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| perr("bounding set")(e.to_string()))?;
        }
    }
    nix::sys::prctl::set_keepcaps(true).map_err(|e| perr("PR_SET_KEEPCAPS")(e.to_string()))?;
    setgroups(&[Gid::from_raw(ids.gid)]).map_err(|e| perr("setgroups")(e.to_string()))?;
    setgid(Gid::from_raw(ids.gid)).map_err(|e| perr("setgid")(e.to_string()))?;
    setuid(Uid::from_raw(ids.uid)).map_err(|e| perr("setuid")(e.to_string()))?;
    nix::sys::prctl::set_keepcaps(false).map_err(|e| perr("PR_SET_KEEPCAPS")(e.to_string()))?;

    caps::clear(None, CapSet::Ambient).map_err(|e| perr("ambient set")(e.to_string()))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| perr("inheritable set")(e.to_string()))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(|e| perr("permitted set")(e.to_string()))?;
    caps::set(None, CapSet::Effective, &keep).map_err(|e| perr("effective set")(e.to_string()))?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| perr("PR_SET_NO_NEW_PRIVS")(e.to_string()))?;

    // Check rather than trust: a failed drop must not leave a root daemon running unnoticed.
    if nix::unistd::geteuid().is_root() || nix::unistd::getuid().is_root() {
        return Err(PlatformError::Privileges("still root after setuid".into()));
    }
    let effective =
        caps::read(None, CapSet::Effective).map_err(|e| perr("reading caps")(e.to_string()))?;
    if effective != keep {
        return Err(PlatformError::Privileges(format!(
            "unexpected effective capabilities after the drop: {effective:?}"
        )));
    }
    Ok(())
}
