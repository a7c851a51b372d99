//! The capabilities the daemon holds after set-up (docs/decisions.md, "Privileges"): exactly
//! `CAP_NET_ADMIN` in the effective and permitted sets, nothing inheritable or ambient, a bounding
//! set of `CAP_NET_ADMIN` alone, and no-new-privileges, whether it drops to a user or keeps its
//! own. Read back from `/proc/self/status`, not from the code under test.
//!
//! A plain `main` (no test harness): each case runs in a fresh child process of this binary,
//! single-threaded as the daemon is when it drops, and a drop cannot be undone. Needs root;
//! without it the test says so and passes.

use std::process::{Command, ExitCode};

use globalnet::platform::privdrop::{self, Ids};

const NET_ADMIN_BIT: u64 = 1 << 12;

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
    // CAP_NET_ADMIN alone, which is inert with an empty ambient set and no_new_privs; the unit's
    // seccomp filter refuses the capset that would clear it.
    assert!(
        inh == 0 || (case == "keep-user" && inh == NET_ADMIN_BIT),
        "{case}: inheritable {inh:x}"
    );
    assert_eq!(amb, 0, "{case}: ambient {amb:x}");
    assert_eq!(bnd, NET_ADMIN_BIT, "{case}: bounding {bnd:x}");
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
            caps::raise(
                None,
                caps::CapSet::Inheritable,
                caps::Capability::CAP_NET_ADMIN,
            )
            .expect("raise inheritable");
            caps::raise(None, caps::CapSet::Ambient, caps::Capability::CAP_NET_ADMIN)
                .expect("raise ambient");
            assert_ne!(caps_field("CapAmb"), 0);
            let sets = privdrop::limit_capabilities().expect("limit");
            eprintln!("{case}: {sets}");
            check_after(case, None);
        }
        other => panic!("unknown case {other}"),
    }
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
    for case in ["drop-to-user", "keep-user"] {
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
