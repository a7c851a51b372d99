//! Running commands to completion: the `ip` and `nft` calls that build a lab, and commands run
//! in its hosts with a time limit.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// Runs `cmd` to completion in a process group of its own (a Ctrl-C in the terminal reaches only
/// this program, which then tears down in order) and returns its output, whatever its exit
/// status; an error only when it cannot start.
pub fn run(cmd: &mut Command) -> Result<Output> {
    cmd.process_group(0)
        .output()
        .map_err(|e| Error(format!("cannot run {cmd:?}: {e}")))
}

/// Like [`run`], and an error with its output when it fails.
pub fn must(cmd: &mut Command) -> Result<Output> {
    let out = run(cmd)?;
    if out.status.success() {
        return Ok(out);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stdout = stdout.trim();
    Err(Error(format!(
        "{cmd:?} failed ({}): {}{}{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        if stdout.is_empty() { "" } else { "\nstdout: " },
    )))
}

/// `ip <args>`, an error when it fails.
pub fn ip(args: &[&str]) -> Result<()> {
    must(Command::new("ip").args(args)).map(|_| ())
}

/// Why [`run_for`] gave up on a command.
#[derive(Debug)]
pub enum Abandoned {
    /// `stop` said so.
    Stopped,
    /// It could not start, or ran out of time.
    Failed(Error),
}

/// Runs `cmd` to completion, all of its output kept, in a process group of its own; kills it
/// after `timeout` or as soon as `stop` returns true (checked every 10 ms).
pub fn run_for(
    cmd: &mut Command,
    timeout: Duration,
    stop: impl Fn() -> bool,
) -> std::result::Result<Output, Abandoned> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| Abandoned::Failed(Error(format!("cannot run {what}: {e}"))))?;
    // Both pipes drain on threads of their own, so a child writing much to one never blocks.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out_t = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err_t = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {}
            Err(e) => return Err(Abandoned::Failed(Error(format!("waiting for {what}: {e}")))),
        }
        let stopped = stop();
        if stopped || Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(if stopped {
                Abandoned::Stopped
            } else {
                Abandoned::Failed(Error(format!("{what} did not finish within {timeout:?}")))
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_for_keeps_output_and_gives_up_on_time_or_stop() {
        let out = run_for(
            Command::new("sh").args(["-c", "echo out; echo err >&2"]),
            Duration::from_secs(5),
            || false,
        )
        .unwrap();
        assert_eq!(
            (&out.stdout[..], &out.stderr[..]),
            (&b"out\n"[..], &b"err\n"[..])
        );

        let t = Instant::now();
        let late = run_for(
            Command::new("sleep").arg("5"),
            Duration::from_millis(100),
            || false,
        );
        assert!(matches!(late, Err(Abandoned::Failed(Error(m))) if m.contains("did not finish")));
        let stopped = run_for(
            Command::new("sleep").arg("5"),
            Duration::from_secs(5),
            || true,
        );
        assert!(matches!(stopped, Err(Abandoned::Stopped)));
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn must_reports_what_failed() {
        let e = must(Command::new("sh").args(["-c", "echo why >&2; exit 3"])).unwrap_err();
        assert!(e.0.contains("failed") && e.0.contains("why"), "{e}");
        assert!(must(&mut Command::new("true")).is_ok());
    }
}
