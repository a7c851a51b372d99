//! SIGINT, SIGTERM and SIGHUP: a lab never outlives the program that made it.
//!
//! Two ways to react, chosen once per process by [`handle_signals`]: [`OnSignal::Stop`] sets a
//! flag that the program's wait loops check ([`stop_requested`]), so it returns and its labs
//! tear down in order as they drop (the demo); [`OnSignal::TeardownAndExit`] kills every child
//! and deletes every namespace of every live lab of the process at once, then exits with 130
//! (the tests, whose threads never look at a flag). Every lab registers its namespaces and
//! children here for the second way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, Once};

use crate::{delete_namespace, pid_of, Error, Result};

/// What a signal does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSignal {
    /// Set the flag [`stop_requested`] reads; the program stops and drops its labs.
    Stop,
    /// Kill every child and delete every namespace of every live lab now, then exit with 130.
    TeardownAndExit,
}

static STOP: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

/// Namespaces and child pids of every live lab of this process.
struct Live {
    namespaces: Vec<String>,
    pids: Vec<u32>,
}

static LIVE: Mutex<Live> = Mutex::new(Live {
    namespaces: Vec::new(),
    pids: Vec::new(),
});

fn live() -> MutexGuard<'static, Live> {
    // A thread that panicked while holding the lock left the lists whole: use them anyway.
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP; the first call's `mode` holds for the
/// process. The handler is in place when this returns.
pub fn handle_signals(mode: OnSignal) -> Result<()> {
    let mut result = Ok(());
    INSTALL.call_once(|| {
        result = ctrlc::set_handler(move || match mode {
            OnSignal::Stop => STOP.store(true, Ordering::SeqCst),
            OnSignal::TeardownAndExit => {
                teardown_live();
                eprintln!("interrupted: namespaces removed");
                std::process::exit(130);
            }
        })
        .map_err(|e| Error(format!("signal handling: {e}")));
    });
    result
}

/// Whether a signal asked the program to stop ([`OnSignal::Stop`]).
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Kills every child and deletes every namespace of every live lab of this process.
pub fn teardown_live() {
    let (namespaces, pids) = {
        let live = live();
        (live.namespaces.clone(), live.pids.clone())
    };
    for pid in pids {
        let _ = nix::sys::signal::kill(pid_of(pid), nix::sys::signal::Signal::SIGKILL);
    }
    for ns in namespaces {
        delete_namespace(&ns);
    }
}

pub(crate) fn register_namespace(ns: &str) {
    live().namespaces.push(ns.to_string());
}

pub(crate) fn register_pid(pid: u32) {
    live().pids.push(pid);
}

/// A lab is gone: its namespaces and children no longer need the handler.
pub(crate) fn forget(namespaces: &[String], pids: &[u32]) {
    let mut live = live();
    live.namespaces.retain(|n| !namespaces.contains(n));
    live.pids.retain(|p| !pids.contains(p));
}
