//! Dropping root after set-up, keeping only `CAP_NET_ADMIN` (for later route and address changes),
//! and limiting a daemon that keeps its user to the same one capability.
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

/// The one capability the running daemon keeps (docs/decisions.md, "Privileges"):
/// `CAP_NET_ADMIN`, for changes to gn0's addresses and routes over rtnetlink after set-up.
pub const KEPT_CAPABILITY: Capability = Capability::CAP_NET_ADMIN;

fn single_thread() -> Result<(), PlatformError> {
    match thread_count() {
        Some(1) => Ok(()),
        Some(n) => Err(PlatformError::Privileges(format!(
            "the process has {n} threads; capabilities are per thread, so the drop must happen before any thread starts"
        ))),
        None => Err(PlatformError::Privileges(
            "cannot read /proc/self/task to count threads".into(),
        )),
    }
}

/// Switches to `ids`, keeping [`KEPT_CAPABILITY`] as the only capability in the permitted,
/// effective and bounding sets; the inheritable and ambient sets end up empty, and
/// no-new-privileges is set. Every set is read back and checked.
pub fn drop_to_user(ids: Ids) -> Result<CapSets, PlatformError> {
    if ids.uid == 0 {
        return Err(PlatformError::Privileges(
            "refusing to \"drop\" to uid 0; name an unprivileged user".into(),
        ));
    }
    single_thread()?;
    let keep: CapsHashSet = [KEPT_CAPABILITY].into_iter().collect();

    // Shrink the bounding set while we still hold CAP_SETPCAP.
    shrink_bounding()?;
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
    let sets = CapSets::read()?;
    sets.check(true)?;
    Ok(sets)
}

/// Limits a process that keeps its user (started unprivileged by systemd with an ambient
/// `CAP_NET_ADMIN`, or as root without `user`) to [`KEPT_CAPABILITY`]: permitted and effective
/// hold at most it, inheritable and ambient are empty (nothing is handed to a child), the
/// bounding set shrinks to it where `CAP_SETPCAP` allows (else no-new-privileges makes the rest
/// unusable: no exec can gain a capability), and no-new-privileges is set. Same one-thread rule
/// as [`drop_to_user`].
pub fn limit_capabilities() -> Result<CapSets, PlatformError> {
    single_thread()?;
    let setpcap = caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP)
        .map_err(|e| perr("reading caps")(e.to_string()))?;
    if setpcap {
        shrink_bounding()?;
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| perr("ambient set")(e.to_string()))?;
    // capset only where a set holds more than it may. The packaged unit starts us with
    // CAP_NET_ADMIN and CAP_NET_BIND_SERVICE (port 53, bound before this) effective, permitted and
    // inheritable (ambient capabilities must be inheritable) and lets capset through its seccomp
    // filter for this drop. A unit without capset (a local drop-in back to CAP_NET_ADMIN alone and
    // `~@privileged`) still starts: then nothing here needs capset. An inheritable CAP_NET_ADMIN
    // left that way is inert once the ambient set is empty and no_new_privs is set: no child can
    // gain it.
    let read = |set| caps::read(None, set).map_err(|e| perr("reading caps")(e.to_string()));
    let only_kept = |s: &CapsHashSet| s.iter().all(|c| *c == KEPT_CAPABILITY);
    if !only_kept(&read(CapSet::Inheritable)?) {
        caps::clear(None, CapSet::Inheritable)
            .map_err(|e| perr("inheritable set")(e.to_string()))?;
    }
    let permitted = read(CapSet::Permitted)?;
    let keep: CapsHashSet = permitted
        .iter()
        .copied()
        .filter(|c| *c == KEPT_CAPABILITY)
        .collect();
    // Effective first: it must stay within the permitted set at every step.
    if read(CapSet::Effective)? != keep {
        caps::set(None, CapSet::Effective, &keep)
            .map_err(|e| perr("effective set")(e.to_string()))?;
    }
    if permitted != keep {
        caps::set(None, CapSet::Permitted, &keep)
            .map_err(|e| perr("permitted set")(e.to_string()))?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| perr("PR_SET_NO_NEW_PRIVS")(e.to_string()))?;
    let sets = CapSets::read()?;
    sets.check(setpcap)?;
    Ok(sets)
}

/// Drops every capability but [`KEPT_CAPABILITY`] from the bounding set (needs `CAP_SETPCAP`).
fn shrink_bounding() -> Result<(), PlatformError> {
    // Only the capabilities this kernel knows: dropping an unknown one is EINVAL.
    for cap in caps::runtime::thread_all_supported() {
        if cap != KEPT_CAPABILITY {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| perr("bounding set")(e.to_string()))?;
        }
    }
    Ok(())
}

/// The five capability sets of the calling thread, read back after a drop (for the check and
/// the log line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapSets {
    /// Effective.
    pub effective: CapsHashSet,
    /// Permitted.
    pub permitted: CapsHashSet,
    /// Inheritable.
    pub inheritable: CapsHashSet,
    /// Ambient.
    pub ambient: CapsHashSet,
    /// Bounding.
    pub bounding: CapsHashSet,
}

impl CapSets {
    /// Reads the calling thread's sets.
    pub fn read() -> Result<CapSets, PlatformError> {
        let r = |set| caps::read(None, set).map_err(|e| perr("reading caps")(e.to_string()));
        Ok(CapSets {
            effective: r(CapSet::Effective)?,
            permitted: r(CapSet::Permitted)?,
            inheritable: r(CapSet::Inheritable)?,
            ambient: r(CapSet::Ambient)?,
            bounding: r(CapSet::Bounding)?,
        })
    }

    /// Refuses anything beyond [`KEPT_CAPABILITY`] in the effective and permitted sets, anything
    /// at all in the inheritable and ambient sets, and (when `bounding`) in the bounding set.
    pub fn check(&self, bounding: bool) -> Result<(), PlatformError> {
        let extra = |s: &CapsHashSet| s.iter().any(|c| *c != KEPT_CAPABILITY);
        let bad = [
            ("effective", extra(&self.effective)),
            ("permitted", extra(&self.permitted)),
            // Only the kept capability, and inert (see `limit_capabilities`).
            ("inheritable", extra(&self.inheritable)),
            ("ambient", !self.ambient.is_empty()),
            ("bounding", bounding && extra(&self.bounding)),
        ];
        match bad.iter().find(|(_, b)| *b) {
            Some((name, _)) => Err(PlatformError::Privileges(format!(
                "unexpected {name} capabilities after the drop: {self}"
            ))),
            None => Ok(()),
        }
    }
}

impl std::fmt::Display for CapSets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |s: &CapsHashSet| {
            let mut v: Vec<String> = s.iter().map(|c| c.to_string()).collect();
            v.sort();
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(",")
            }
        };
        let bounding = if self.bounding.iter().any(|c| *c != KEPT_CAPABILITY) {
            format!("{} capabilities", self.bounding.len())
        } else {
            names(&self.bounding)
        };
        write!(
            f,
            "effective={} permitted={} inheritable={} ambient={} bounding={}",
            names(&self.effective),
            names(&self.permitted),
            names(&self.inheritable),
            names(&self.ambient),
            bounding
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(caps: &[Capability]) -> CapsHashSet {
        caps.iter().copied().collect()
    }

    #[test]
    fn the_check_allows_net_admin_only() {
        let good = CapSets {
            effective: set(&[KEPT_CAPABILITY]),
            permitted: set(&[KEPT_CAPABILITY]),
            inheritable: set(&[]),
            ambient: set(&[]),
            bounding: set(&[KEPT_CAPABILITY]),
        };
        good.check(true).unwrap();
        // As systemd starts a unit granting CAP_NET_ADMIN alone with capset filtered out: the
        // ambient capability is also inheritable, which is inert once ambient is empty.
        CapSets {
            inheritable: set(&[KEPT_CAPABILITY]),
            ..good.clone()
        }
        .check(true)
        .unwrap();
        // Nothing at all is fine too (an unprivileged start without the ambient capability).
        let none = CapSets {
            effective: set(&[]),
            permitted: set(&[]),
            bounding: set(&[Capability::CAP_SYS_ADMIN, KEPT_CAPABILITY]),
            ..good.clone()
        };
        none.check(false).unwrap();
        assert!(
            none.check(true).is_err(),
            "a wide bounding set when it could shrink"
        );
        for bad in [
            CapSets {
                effective: set(&[KEPT_CAPABILITY, Capability::CAP_NET_RAW]),
                ..good.clone()
            },
            CapSets {
                permitted: set(&[KEPT_CAPABILITY, Capability::CAP_SYS_ADMIN]),
                ..good.clone()
            },
            CapSets {
                inheritable: set(&[Capability::CAP_NET_RAW]),
                ..good.clone()
            },
            CapSets {
                ambient: set(&[KEPT_CAPABILITY]),
                ..good.clone()
            },
        ] {
            let e = bad.check(false).unwrap_err().to_string();
            assert!(e.contains("unexpected"), "{e}");
        }
    }
}
