//! Who the control socket answers (docs/decisions.md, "Control socket and privileges"): a member
//! of the socket's group gets `status` but not `sessions`; root does get `sessions`. The server
//! is the control module itself with a stand-in handler (no daemon); the clients are the real
//! `globalnet` CLI, run as another user. Needs root to run a process as another user; without
//! it the test says so and passes.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};
use std::sync::Arc;

use globalnet::control::{self, Answer, Handler, Request};

/// The unprivileged user and group the client runs as (`nobody`/`nogroup` on Debian).
const OTHER: u32 = 65534;

struct StandIn;

impl Handler for StandIn {
    fn handle(&self, req: &Request) -> Answer {
        Answer::Now(match req.cmd.as_str() {
            "status" => Ok(serde_json::json!({"uptime_s": 1})),
            "sessions" => Ok(serde_json::json!([{"peer": "fd00::2", "role": "client"}])),
            other => Err(format!("unknown command `{other}`")),
        })
    }
}

fn cli(sock: &std::path::Path, cmd: &str, as_other: bool) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_globalnet"));
    c.args([cmd, "--json", "--control", sock.to_str().unwrap()])
        .env_remove("GLOBALNET_LOG");
    if as_other {
        c.uid(OTHER).gid(OTHER);
    }
    c.output().expect("run globalnet")
}

#[test]
fn sessions_only_for_root_and_the_daemon_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: needs root to run the CLI as another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.path().join("run/control.sock");
    // Owned by root, group `OTHER`: the other user is a member of the socket's group, as a user
    // in the daemon's group is.
    let listener = control::bind(&sock, Some((0, OTHER))).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.spawn(control::serve(listener, Arc::new(StandIn)));

    let status = cli(&sock, "status", true);
    assert!(
        status.status.success(),
        "the group may read status: {}",
        String::from_utf8_lossy(&status.stderr)
    );

    let refused = cli(&sock, "sessions", true);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "the group must not get sessions");
    assert!(
        err.contains("only root and the daemon's own user"),
        "a clear error: {err}"
    );
    assert!(!String::from_utf8_lossy(&refused.stdout).contains("fd00::2"));

    let root = cli(&sock, "sessions", false);
    assert!(
        root.status.success(),
        "{}",
        String::from_utf8_lossy(&root.stderr)
    );
    assert!(String::from_utf8_lossy(&root.stdout).contains("fd00::2"));
    server.abort();
}
