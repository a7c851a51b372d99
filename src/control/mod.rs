//! The control socket: a Unix stream socket (mode 0660) that the CLI uses to read the daemon's
//! state. It only reads state or sends commands; it never sits in the packet path.
//!
//! Protocol (version 1): the client sends one JSON object on one line, `{"v":1,"cmd":"status"}`, and
//! the daemon answers with one JSON line: `{"ok":true,"result":...}` or `{"ok":false,"error":"..."}`.
//! Requests are capped in size and time, and connections in number, so a local user in the group
//! cannot tie the daemon up.
//!
//! Who may ask what: the socket's mode (0660) lets its group in; the commands in
//! [`PRIVATE_COMMANDS`] (which destinations this node visits) are answered only to root and the
//! daemon's own user, checked with the peer's credentials (`SO_PEERCRED`) on every connection.
//!
//! Commands: `status`, `peers`, `circuits`, `services`, `sessions`, and `ping` with an `addr`
//! field (`{"v":1,"cmd":"ping","addr":"fd.."}`), whose answer comes when the peer answered or
//! failed: `{"ok":true,"result":{"addr":"fd..","rtt_ms":41.2}}`; `resolve` with a `name` field
//! (`{"v":1,"cmd":"resolve","name":"alice.gn.alt"}`) answers what the name resolves to. It is not
//! private: the DNS server on gn0 tells every local program the same. Fields are only ever added, so a
//! request that omits the optional ones means what it meant before. The request and each
//! command's answer are types in [`proto`], shared by the daemon and the CLI; the transport here
//! carries the answer as a JSON value, so it knows nothing about any one command.

pub mod proto;

use serde::de::DeserializeOwned;
use serde_json::Value;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

pub use proto::{Cmd, Request, CONTROL_VERSION};

/// Longest request line accepted.
pub const MAX_REQUEST_LEN: u64 = 4096;
/// Most control connections served at once.
pub const MAX_CONNECTIONS: usize = 32;
/// Time a client has to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a deferred answer (a `ping`) may take before the daemon answers with an error.
pub const DEFERRED_TIMEOUT: Duration = Duration::from_secs(40);

/// An answer: ready now, or later from the task that owns the state (a ping waits for the peer).
pub enum Answer {
    /// The result or error now.
    Now(Result<Value, String>),
    /// The result or error when it is known.
    Later(tokio::sync::oneshot::Receiver<Result<Value, String>>),
}

/// Answers control requests; implemented by the daemon.
pub trait Handler: Send + Sync + 'static {
    /// The answer to a request.
    fn handle(&self, req: &Request) -> Answer;
}

/// Commands whose answer tells which destinations this node visits and who visits its services
/// (`sessions`): answered only to root and to the daemon's own user, never to the rest of the
/// socket's group.
/// `accept` changes which key the node trusts for a name: the same people only.
pub const PRIVATE_COMMANDS: &[Cmd] = &[Cmd::Sessions, Cmd::Accept];

/// Whether a peer with uid `peer_uid` (from `SO_PEERCRED`; `None` when the kernel gave none) may
/// ask `cmd` of a daemon whose effective uid is `own_uid`. The error says who may and how.
pub fn may_ask(cmd: &str, peer_uid: Option<u32>, own_uid: u32) -> Result<(), String> {
    if !PRIVATE_COMMANDS.contains(&Cmd::from(cmd)) {
        return Ok(());
    }
    match peer_uid {
        Some(uid) if uid == 0 || uid == own_uid => Ok(()),
        _ => Err(format!(
            "`{cmd}` {}, so only root and the daemon's own user (uid {own_uid}) may ask; run it \
             with sudo",
            if cmd == Cmd::Accept.as_str() {
                "changes the key this node trusts for a name"
            } else {
                "shows which destinations this node visits"
            }
        )),
    }
}

/// Parses one request line. Never panics on any bytes.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let req: Request =
        serde_json::from_slice(line).map_err(|e| format!("malformed request: {e}"))?;
    if req.v != CONTROL_VERSION {
        return Err(format!(
            "control protocol version {} is not supported (this daemon speaks {CONTROL_VERSION}); use the globalnet binary that matches the daemon",
            req.v
        ));
    }
    Ok(req)
}

/// Binds the control socket: creates its directory if absent, removes a stale socket left by a
/// daemon that died, refuses to start beside a live one, and sets mode 0660 (owned by `owner`
/// when given, so the group of the unprivileged user may use it). Anything at the path that is
/// not a socket (a file, a directory, a symlink) is an error and stays where it is.
pub fn bind(
    path: &Path,
    owner: Option<(u32, u32)>,
) -> io::Result<std::os::unix::net::UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
            }
        }
    }
    // `symlink_metadata`: a symlink at the path is not followed, and not removed either.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; refusing to remove it (move it away, or set \
                     `control_socket` to another path)",
                    path.display()
                ),
            ));
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "another daemon is serving {}; stop it first",
                        path.display()
                    ),
                ))
            }
            Err(_) => std::fs::remove_file(path)?,
        }
    }
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves control requests until the task is dropped.
pub async fn serve(
    listener: std::os::unix::net::UnixListener,
    handler: Arc<dyn Handler>,
) -> io::Result<()> {
    let listener = UnixListener::from_std(listener)?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = listener.accept().await?;
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Over the cap: close at once rather than queue.
            drop(stream);
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_one(stream, handler.as_ref()).await {
                tracing::debug!("control connection: {e}");
            }
            drop(permit);
        });
    }
}

async fn serve_one(stream: UnixStream, handler: &dyn Handler) -> io::Result<()> {
    // Asked per connection, so a change of the daemon's uid (the privilege drop) is seen.
    let peer_uid = stream.peer_cred().ok().map(|c| c.uid());
    let own_uid = nix::unistd::geteuid().as_raw();
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_REQUEST_LEN + 1));
    let mut line = Vec::new();
    let n = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "request timed out"))??;
    let reply = if n as u64 > MAX_REQUEST_LEN {
        serde_json::json!({"ok": false, "error": "request too long"})
    } else {
        let answer = match parse_request(&line)
            .and_then(|req| may_ask(req.cmd.as_str(), peer_uid, own_uid).map(|()| req))
        {
            Ok(req) => match handler.handle(&req) {
                Answer::Now(r) => r,
                Answer::Later(rx) => match tokio::time::timeout(DEFERRED_TIMEOUT, rx).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(_)) => Err("the daemon dropped the request (shutting down?)".into()),
                    Err(_) => Err("no answer in time".into()),
                },
            },
            Err(e) => Err(e),
        };
        match answer {
            Ok(result) => serde_json::json!({"ok": true, "result": result}),
            Err(error) => serde_json::json!({"ok": false, "error": error}),
        }
    };
    let mut bytes = serde_json::to_vec(&reply).map_err(io::Error::other)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    write.shutdown().await
}

/// Errors of the client side, each with what to do.
#[derive(Debug)]
pub enum ControlError {
    /// No socket: the daemon is not running (or uses another path).
    NotRunning(PathBuf),
    /// The socket exists but nobody listens.
    Stale(PathBuf),
    /// Not allowed to open the socket.
    PermissionDenied(PathBuf),
    /// The daemon answered with an error.
    Daemon(String),
    /// The daemon's answer does not have the shape its command promises.
    Unexpected(String),
    /// Anything else.
    Io(PathBuf, io::Error),
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlError::NotRunning(p) => write!(
                f,
                "the daemon is not running (no control socket at {}); start it with `sudo systemctl start globalnet` or `sudo globalnet daemon`, or give its socket with --control",
                p.display()
            ),
            ControlError::Stale(p) => write!(
                f,
                "nobody answers on {} (the daemon stopped or crashed); start it again",
                p.display()
            ),
            ControlError::PermissionDenied(p) => write!(
                f,
                "permission denied on {}; run with sudo, or add your user to the daemon's group (`sudo usermod -aG globalnet $USER`, then log in again)",
                p.display()
            ),
            ControlError::Daemon(m) => write!(f, "the daemon refused the request: {m}"),
            ControlError::Unexpected(m) => write!(
                f,
                "the daemon's answer is not what this globalnet expects ({m}); use the globalnet binary that matches the daemon"
            ),
            ControlError::Io(p, e) => write!(f, "talking to the daemon on {}: {e}", p.display()),
        }
    }
}

impl std::error::Error for ControlError {}

/// Sends one command to the daemon and returns its result (blocking; the CLI has no runtime).
pub fn request(path: &Path, cmd: impl Into<Cmd>) -> Result<Value, ControlError> {
    request_with(path, &Request::new(cmd), Duration::from_secs(10))
}

/// Sends one command and reads its result as the answer type the command promises, e.g.
/// `ask::<proto::StatusAnswer>(path, Cmd::Status)`.
pub fn ask<T: DeserializeOwned>(path: &Path, cmd: Cmd) -> Result<T, ControlError> {
    decode(request(path, cmd)?)
}

/// Reads a result as the answer type its command promises.
pub fn decode<T: DeserializeOwned>(result: Value) -> Result<T, ControlError> {
    serde_json::from_value(result).map_err(|e| ControlError::Unexpected(e.to_string()))
}

/// Sends `req` and waits up to `timeout` for the answer.
pub fn request_with(path: &Path, req: &Request, timeout: Duration) -> Result<Value, ControlError> {
    use std::io::{BufRead, Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ControlError::NotRunning(path.to_path_buf()),
        io::ErrorKind::ConnectionRefused => ControlError::Stale(path.to_path_buf()),
        io::ErrorKind::PermissionDenied => ControlError::PermissionDenied(path.to_path_buf()),
        _ => ControlError::Io(path.to_path_buf(), e),
    })?;
    let io_err = |e| ControlError::Io(path.to_path_buf(), e);
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    let mut req = serde_json::to_vec(req)
        .map_err(|e| ControlError::Io(path.to_path_buf(), io::Error::other(e)))?;
    req.push(b'\n');
    stream.write_all(&req).map_err(io_err)?;
    let mut line = String::new();
    std::io::BufReader::new(stream.take(1 << 24))
        .read_line(&mut line)
        .map_err(io_err)?;
    let reply: Value = serde_json::from_str(&line)
        .map_err(|e| ControlError::Io(path.to_path_buf(), io::Error::other(e)))?;
    if reply.get("ok") == Some(&Value::Bool(true)) {
        Ok(reply.get("result").cloned().unwrap_or(Value::Null))
    } else {
        Err(ControlError::Daemon(
            reply
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("unknown error")
                .to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;
    impl Handler for Echo {
        fn handle(&self, req: &Request) -> Answer {
            match req.cmd.as_str() {
                "status" => Answer::Now(Ok(serde_json::json!({"uptime_s": 1}))),
                "sessions" => Answer::Now(Ok(serde_json::json!([{"peer": "fd00::2"}]))),
                "ping" => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let addr = req.addr.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        let _ = tx.send(Ok(serde_json::json!({"addr": addr, "rtt_ms": 20})));
                    });
                    Answer::Later(rx)
                }
                other => Answer::Now(Err(format!("unknown command `{other}`"))),
            }
        }
    }

    #[test]
    fn request_parser() {
        assert_eq!(
            parse_request(br#"{"v":1,"cmd":"status"}"#).unwrap().cmd,
            "status"
        );
        assert!(parse_request(br#"{"v":2,"cmd":"status"}"#)
            .unwrap_err()
            .contains("version"));
        assert!(parse_request(br#"{"v":1,"cmd":"status","x":1}"#).is_err());
        // The optional address: absent in old requests, present in pings.
        assert_eq!(
            parse_request(br#"{"v":1,"cmd":"status"}"#).unwrap().addr,
            None
        );
        assert_eq!(
            parse_request(br#"{"v":1,"cmd":"ping","addr":"fd00::1"}"#)
                .unwrap()
                .addr
                .as_deref(),
            Some("fd00::1")
        );
        assert_eq!(
            serde_json::to_string(&Request::new("status")).unwrap(),
            r#"{"v":1,"cmd":"status"}"#
        );
        assert!(parse_request(b"\xff\x00").is_err());
        assert!(parse_request(b"").is_err());
    }

    #[test]
    fn private_commands_only_for_root_and_the_daemon_user() {
        let own = 990;
        assert!(may_ask("sessions", Some(0), own).is_ok());
        assert!(may_ask("sessions", Some(own), own).is_ok());
        let e = may_ask("sessions", Some(1000), own).unwrap_err();
        assert!(e.contains("only root") && e.contains("uid 990"), "{e}");
        assert!(may_ask("sessions", None, own).is_err());
        // Everything else stays open to the socket's group.
        for cmd in ["status", "peers", "circuits", "services", "ping", "nope"] {
            assert!(may_ask(cmd, Some(1000), own).is_ok(), "{cmd}");
        }
    }

    /// A file, a directory or a symlink at the socket's path is refused and left alone.
    #[test]
    fn bind_never_removes_what_is_not_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file.sock");
        std::fs::write(&file, b"precious").unwrap();
        let e = bind(&file, None).unwrap_err();
        assert!(e.to_string().contains("is not a socket"), "{e}");
        assert_eq!(std::fs::read(&file).unwrap(), b"precious");

        let sub = dir.path().join("dir.sock");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("inside"), b"x").unwrap();
        assert!(bind(&sub, None).is_err());
        assert!(sub.join("inside").exists());

        // A symlink, dangling or to a file: neither it nor its target goes.
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(bind(&link, None).is_err());
        assert!(std::fs::symlink_metadata(&link).is_ok());
        assert_eq!(std::fs::read(&file).unwrap(), b"precious");
        let dangling = dir.path().join("dangling.sock");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(bind(&dangling, None).is_err());
        assert!(std::fs::symlink_metadata(&dangling).is_ok());
    }

    #[tokio::test]
    async fn round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/control.sock");
        let listener = bind(&path, None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        // A second daemon on the same socket is refused.
        assert!(bind(&path, None).is_err());
        let server = tokio::spawn(serve(listener, Arc::new(Echo)));
        let p = path.clone();
        let result = tokio::task::spawn_blocking(move || request(&p, "status"))
            .await
            .unwrap();
        assert_eq!(result.unwrap()["uptime_s"], 1);
        // This test's process is the daemon's own user (or root): `sessions` is answered.
        let p = path.clone();
        let sessions = tokio::task::spawn_blocking(move || request(&p, "sessions"))
            .await
            .unwrap();
        assert_eq!(sessions.unwrap()[0]["peer"], "fd00::2");
        let p = path.clone();
        let err = tokio::task::spawn_blocking(move || request(&p, "nope"))
            .await
            .unwrap();
        assert!(matches!(err, Err(ControlError::Daemon(m)) if m.contains("unknown command")));
        // A deferred answer.
        let p = path.clone();
        let pong = tokio::task::spawn_blocking(move || {
            let mut req = Request::new("ping");
            req.addr = Some("fd00::1".into());
            request_with(&p, &req, Duration::from_secs(5))
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(pong["addr"], "fd00::1");
        server.abort();
        let _ = server.await;
        // The listener is gone but the file remains: the client calls it stale, and a new bind
        // replaces it.
        let p = path.clone();
        let err = tokio::task::spawn_blocking(move || request(&p, "status"))
            .await
            .unwrap();
        assert!(matches!(err, Err(ControlError::Stale(_))), "{err:?}");
        bind(&path, None).unwrap();
        let missing = dir.path().join("none.sock");
        assert!(matches!(
            request(&missing, "status"),
            Err(ControlError::NotRunning(_))
        ));
    }
}
