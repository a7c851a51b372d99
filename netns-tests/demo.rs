//! `globalnet demo` as a user runs it: it fetches the token and leaves nothing behind, and tears
//! down on failure, on an interrupt and after a kill.

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::harness::globalnet_bin;

/// `globalnet demo` uses fixed namespace names: its tests must not overlap.
static DEMO_LOCK: Mutex<()> = Mutex::new(());

fn demo(args: &[&str]) -> (std::process::Output, Duration) {
    let t = Instant::now();
    let out = Command::new(globalnet_bin())
        .arg("demo")
        .args(args)
        .output()
        .unwrap();
    (out, t.elapsed())
}

fn demo_leftovers() -> (usize, usize) {
    let ns = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .lines()
    .filter(|l| l.starts_with("gndemo-"))
    .count();
    let procs = String::from_utf8_lossy(
        &Command::new("pgrep")
            .args(["-f", "globalnet-demo/"])
            .output()
            .unwrap()
            .stdout,
    )
    .lines()
    .count();
    (ns, procs)
}

#[test]
fn demo_fetches_the_token_and_leaves_nothing() {
    if !crate::harness::can_run() {
        return;
    }
    let _one = DEMO_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let (out, took) = demo(&["--once", "--timeout", "90"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed ({}):\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("fetched and checked"), "{text}");
    assert!(text.contains("ip netns exec gndemo-client curl"), "{text}");
    assert_eq!(
        demo_leftovers(),
        (0, 0),
        "the demo left namespaces or processes"
    );
    eprintln!(
        "globalnet demo --once took {:.1} s:\n{text}",
        took.as_secs_f64()
    );
}

#[test]
fn demo_tears_down_on_failure_interrupt_and_after_a_kill() {
    if !crate::harness::can_run() {
        return;
    }
    let _one = DEMO_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    // Failure: the network cannot form within 0 s.
    let (out, _) = demo(&["--once", "--timeout", "0", "--relays", "3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("did not form"), "{err}");
    assert_eq!(demo_leftovers(), (0, 0), "left after a failure");

    // Ctrl-C (SIGINT to the demo alone) while the network forms.
    let start_and_wait = || {
        let child = Command::new(globalnet_bin())
            .args(["demo", "--relays", "3"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while demo_leftovers().1 < 5 {
            assert!(
                Instant::now() < deadline,
                "the demo did not start its daemons"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        child
    };
    let child = start_and_wait();
    // One demo at a time: a second one refuses and leaves the first alone.
    let (out, _) = demo(&["--once", "--relays", "3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("another demo is running"), "{err}");
    assert!(
        demo_leftovers().1 >= 5,
        "the second demo disturbed the first"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tearing down"), "{text}");
    assert_eq!(demo_leftovers(), (0, 0), "left after Ctrl-C");

    // Killed outright: the next demo removes what is left.
    let mut child = start_and_wait();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_ne!(
        demo_leftovers().0,
        0,
        "a killed demo should leave its namespaces"
    );
    let (out, _) = demo(&["--once", "--timeout", "0", "--relays", "3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("left by an earlier demo"), "{text}");
    assert_eq!(
        demo_leftovers(),
        (0, 0),
        "left after a killed demo and a new one"
    );
}
