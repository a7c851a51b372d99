//! The capabilities the daemon holds after set-up (docs/decisions.md, "Privileges"): exactly
//! `CAP_NET_ADMIN` in the effective and permitted sets, nothing inheritable or ambient, a bounding
//! set of `CAP_NET_ADMIN` alone (or the packaged unit's, which it cannot shrink), and
//! no-new-privileges, whether it drops to a user or keeps its own. Read back from
//! `/proc/self/status`, not from the code under test.
//!
//! A plain `main` (no test harness): each case runs in a fresh child process of this binary,
//! single-threaded as the daemon is when it drops, and a drop cannot be undone. Needs root;
//! without it the test says so and passes.

use std::process::{Command, ExitCode};

use globalnet::platform::privdrop::{self, Ids};

use caps::{CapSet, Capability};

const NET_ADMIN_BIT: u64 = 1 << 12;
const NET_BIND_SERVICE_BIT: u64 = 1 << 10;

fn status_field(name: &str) -> String {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
}

fn caps_field(name: &str) -> u64 {
    u64::from_str_radix(&status_field(name), 16).expect("hex capability mask")
}

/// Checks the child's own state after a drop; the exit status tells the parent.
fn check_after(case: &str, uid: Option<u32>) {
    let (inh, prm, eff, bnd, amb) = (
        caps_field("CapInh"),
        caps_field("CapPrm"),
        caps_field("CapEff"),
        caps_field("CapBnd"),
        caps_field("CapAmb"),
    );
    assert_eq!(eff, NET_ADMIN_BIT, "{case}: effective {eff:x}");
    assert_eq!(prm, NET_ADMIN_BIT, "{case}: permitted {prm:x}");
    // Inheritable: empty, or (when the start gave it, as systemd's AmbientCapabilities= does)
    // CAP_NET_ADMIN alone, which is inert with an empty ambient set and no_new_privs and which
    // `limit_capabilities` leaves so that a unit filtering out capset still starts. Under the
    // packaged unit it also held CAP_NET_BIND_SERVICE and so is cleared.
    assert!(
        inh == 0 || (case == "keep-user" && inh == NET_ADMIN_BIT),
        "{case}: inheritable {inh:x}"
    );
    assert_eq!(amb, 0, "{case}: ambient {amb:x}");
    // The packaged unit's bounding set (CapabilityBoundingSet=) stays: without CAP_SETPCAP the
    // daemon cannot shrink it, and no_new_privs keeps it from ever being used.
    let want_bnd = if case == "unit" {
        NET_ADMIN_BIT | NET_BIND_SERVICE_BIT
    } else {
        NET_ADMIN_BIT
    };
    assert_eq!(bnd, want_bnd, "{case}: bounding {bnd:x}");
    assert_eq!(status_field("NoNewPrivs"), "1", "{case}: no_new_privs");
    if let Some(uid) = uid {
        let uids = status_field("Uid");
        assert!(
            uids.split_whitespace().all(|u| u == uid.to_string()),
            "{case}: uids {uids}"
        );
    }
}

fn child(case: &str) {
    match case {
        "drop-to-user" => {
            let ids = Ids {
                uid: 65534,
                gid: 65534,
            };
            let sets = privdrop::drop_to_user(ids).expect("drop");
            eprintln!("{case}: {sets}");
            check_after(case, Some(65534));
        }
        "keep-user" => {
            // Root without `user`, or an unprivileged start with ambient CAP_NET_ADMIN: first
            // give this process an ambient and inheritable capability, as systemd's
            // AmbientCapabilities= does, so the test shows they are taken away.
            caps::raise(None, CapSet::Inheritable, Capability::CAP_NET_ADMIN)
                .expect("raise inheritable");
            caps::raise(None, CapSet::Ambient, Capability::CAP_NET_ADMIN).expect("raise ambient");
            assert_ne!(caps_field("CapAmb"), 0);
            let sets = privdrop::limit_capabilities().expect("limit");
            eprintln!("{case}: {sets}");
            check_after(case, None);
        }
        "unit" => unit_start(case),
        other => panic!("unknown case {other}"),
    }
}

/// As the packaged unit starts the daemon (AmbientCapabilities= and CapabilityBoundingSet=
/// `CAP_NET_ADMIN CAP_NET_BIND_SERVICE`, capset allowed): port 53 binds during set-up, and after
/// `limit_capabilities` CAP_NET_BIND_SERVICE is gone from every set the process can use, so a
/// second privileged port is refused. In a network namespace of its own, which this child
/// process creates and which goes away with it: there `ip_unprivileged_port_start` is the
/// kernel's 1024 whatever the host (a container may set 0) says.
fn unit_start(case: &str) {
    // SAFETY: unshare with CLONE_NEWNET touches no memory; the process has one thread.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET): {}",
        std::io::Error::last_os_error()
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .expect("ip_unprivileged_port_start")
            .trim(),
        "1024"
    );
    let unit: caps::CapsHashSet = [Capability::CAP_NET_ADMIN, Capability::CAP_NET_BIND_SERVICE]
        .into_iter()
        .collect();
    // What systemd hands the unit's process: every set but the bounding one set to the unit's
    // capabilities (ambient ones must be permitted and inheritable), the bounding set shrunk to
    // them. No CAP_SETPCAP afterwards, so the daemon cannot shrink the bounding set itself.
    for cap in caps::runtime::thread_all_supported() {
        if !unit.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).expect("shrink bounding");
        }
    }
    caps::set(None, CapSet::Inheritable, &unit).expect("inheritable");
    caps::set(None, CapSet::Effective, &unit).expect("effective");
    caps::set(None, CapSet::Permitted, &unit).expect("permitted");
    for cap in &unit {
        caps::raise(None, CapSet::Ambient, *cap).expect("raise ambient");
    }
    let both = NET_ADMIN_BIT | NET_BIND_SERVICE_BIT;
    for field in ["CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd"] {
        assert_eq!(caps_field(field), both, "{case}: {field} before set-up");
    }

    // Set-up: the DNS socket, as daemon::dns::bind does (before the drop).
    let dns =
        std::net::UdpSocket::bind(("0.0.0.0", 53)).expect("bind port 53 with the unit's caps");
    let sets = privdrop::limit_capabilities().expect("limit");
    eprintln!("{case}: {sets}");
    check_after(case, None);
    // The socket bound during set-up stays; a new privileged port is refused.
    assert_eq!(dns.local_addr().expect("local addr").port(), 53);
    let err = std::net::UdpSocket::bind(("0.0.0.0", 54)).expect_err("port 54 after set-up");
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::PermissionDenied,
        "{case}: binding port 54 after set-up: {err}"
    );
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--privileges-child") {
        child(args.get(pos + 1).map(String::as_str).unwrap_or(""));
        return ExitCode::SUCCESS;
    }
    // `cargo test` passes harness flags (--nocapture, filters, --list); a listing wants nothing.
    if args.iter().any(|a| a == "--list") {
        return ExitCode::SUCCESS;
    }
    if !nix::unistd::geteuid().is_root() {
        println!("privileges: skipping (needs root)");
        return ExitCode::SUCCESS;
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut failed = 0;
    for case in ["drop-to-user", "keep-user", "unit"] {
        let out = Command::new(&exe)
            .args(["--privileges-child", case])
            .output()
            .expect("run child");
        let ok = out.status.success();
        println!("privileges {case} ... {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failed += 1;
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
