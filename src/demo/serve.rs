//! `globalnet demo serve`: the small HTTP server behind the service's exposed port.

use super::*;

/// The demo's HTTP server: every GET gets the token and the address the request came from; one
/// log line per request. Threads per connection, requests capped in size and time.
pub(super) fn serve(port: u16, token: &str, log: Option<&Path>) -> Result<(), String> {
    let listener = std::net::TcpListener::bind(("::", port))
        .map_err(|e| format!("cannot listen on port {port}: {e}"))?;
    println!("ready: listening on [::]:{port}");
    let _ = std::io::stdout().flush();
    let log = log.map(Path::to_path_buf);
    for conn in listener.incoming() {
        let Ok(mut stream) = conn else { continue };
        let token = token.to_string();
        let log = log.clone();
        std::thread::spawn(move || {
            let peer = stream
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_else(|_| "?".into());
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = std::io::BufReader::new(match stream.try_clone() {
                Ok(s) => s.take(16 * 1024),
                Err(_) => return,
            });
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                return;
            }
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if line.trim().is_empty() => break,
                    Ok(_) => {}
                }
            }
            if let Some(path) = &log {
                if let Ok(mut f) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                {
                    let _ = writeln!(f, "{peer} {}", request.trim());
                }
            }
            let body = format!("token {token}\nyou are {peer}\n");
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        });
    }
    Ok(())
}
