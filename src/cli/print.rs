//! Printing the daemon's answers as tables and lines (`status`, `peers`, `circuits`, `sessions`,
//! `resolve`); `--json` prints the answers themselves instead.

use crate::control::proto::{
    CircuitAnswer, PeerAnswer, ResolveAnswer, SessionAnswer, StatusAnswer,
};

pub(super) fn print_resolve(a: &ResolveAnswer) -> String {
    let mut out = format!("{:<8} {}\n{:<8} {}\n", "name", a.name, "address", a.address);
    if let Some(k) = &a.key {
        out.push_str(&format!("{:<8} {k}\n", "key"));
    }
    let from = match &a.origin {
        Some(o) => format!("{} ({o})", a.source),
        None => a.source.clone(),
    };
    out.push_str(&format!("{:<8} {from}\n", "from"));
    out
}

/// An optional value, `-` when absent.
pub(super) fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or("-".into(), T::to_string)
}

/// A number as JSON writes it (`41.0`, not `41`), as the tables always showed it.
pub(super) fn float(x: f64) -> String {
    serde_json::Number::from_f64(x).map_or("-".into(), |n| n.to_string())
}

pub(super) fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// Left-aligned columns, each as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
    out
}

pub(super) fn print_status(v: &StatusAnswer) -> String {
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let rows = [
        ("address", v.address.clone()),
        ("interface", format!("{} (mtu {})", v.interface, v.mtu)),
        ("relay key", v.relay_key.clone()),
        ("relaying", yes_no(v.relay).into()),
        ("peers", v.peers.to_string()),
        (
            "circuits",
            format!(
                "{} own ({} ready), {} relayed for others",
                v.circuits.own, v.circuits.ready, v.circuits.relayed
            ),
        ),
        (
            "sessions",
            format!(
                "{}, {} flows ({} refused, {} dropped)",
                v.sessions,
                v.flows.active,
                v.flows.refused,
                v.flows.dropped_from_peers + v.flows.dropped_from_kernel
            ),
        ),
        ("nat", v.nat.clone()),
        (
            "view",
            format!("{} relays from {} sources", v.view.relays, v.view.sources),
        ),
        ("uptime", duration(v.uptime_s)),
        ("version", v.version.clone()),
    ];
    let mut out: String = rows
        .iter()
        .map(|(k, val)| format!("{k:<10} {val}\n"))
        .collect();
    for b in &v.bootstrap {
        let mut line = format!("{} {}", b.peer, b.state);
        if let Some(f) = b.failing_s {
            line.push_str(&format!(" for {} ({} tries)", duration(f), b.tries));
        }
        if let Some(e) = &b.last_error {
            line.push_str(&format!(": {e}"));
        }
        out.push_str(&format!("{:<10} {line}\n", "bootstrap"));
    }
    for r in &v.paths.relaxed {
        out.push_str(&format!("{:<10} {r}\n", "paths"));
    }
    if let Some(x) = &v.exit {
        out.push_str(&format!(
            "{:<10} {} circuits, out {} packets ({}), in {} ({}), {} refused, {} rate-limited, {} dropped\n",
            "exit",
            x.circuits,
            x.packets_out,
            bytes(x.bytes_out),
            x.packets_in,
            bytes(x.bytes_in),
            x.refused,
            x.rate_limited,
            x.dropped
        ));
    }
    if let Some(c) = &v.exit_circuit {
        let exit = c
            .exit
            .as_deref()
            .map_or("none chosen", |k| k.get(..16).unwrap_or(k));
        let state = match (&c.error, c.ready) {
            (_, true) => "ready".to_string(),
            (Some(e), false) => format!("not ready: {e}"),
            (None, false) => "building".to_string(),
        };
        out.push_str(&format!("{:<10} via {exit}: {state}\n", "outbound"));
    }
    if let Some(r) = &v.reason {
        out.push_str(&format!("{:<10} {r}\n", "why"));
    }
    if let Some(e) = &v.config.reload_error {
        out.push_str(&format!(
            "{:<10} last reload refused, running the previous one: {e}\n",
            "config"
        ));
    }
    if !v.config.restart_needed.is_empty() {
        out.push_str(&format!(
            "{:<10} changed, takes a restart: {}\n",
            "config",
            v.config.restart_needed.join(", ")
        ));
    }
    out
}

pub(super) fn print_peers(list: &[PeerAnswer]) -> String {
    if list.is_empty() {
        return "no peers yet\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|p| {
            let key = match &p.relay_key {
                Some(k) => k.get(..16).unwrap_or(k).to_string(),
                None => "(client)".to_string(),
            };
            vec![
                key,
                p.endpoint.clone(),
                match (p.direct, p.punched_s) {
                    (false, _) => "relayed".into(),
                    (true, Some(t)) => format!("punched {} ago", duration(t)),
                    (true, None) => "direct".into(),
                },
                if p.outbound { "out" } else { "in" }.into(),
                p.rtt_ms.map_or("-".into(), float),
                p.last_handshake_s
                    .map_or("-".into(), |t| duration(t) + " ago"),
                bytes(p.bytes_in),
                bytes(p.bytes_out),
            ]
        })
        .collect();
    table(
        &[
            "RELAY KEY",
            "ENDPOINT",
            "PATH",
            "DIR",
            "RTT MS",
            "HANDSHAKE",
            "IN",
            "OUT",
        ],
        &rows,
    )
}

pub(super) fn bytes(n: u64) -> String {
    match n {
        0..=9999 => format!("{n} B"),
        10_000..=9_999_999 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1048576.0),
    }
}

pub(super) fn print_circuits(list: &[CircuitAnswer]) -> String {
    if list.is_empty() {
        return "no circuits yet\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            vec![
                c.id.clone(),
                c.hops.to_string(),
                c.purpose.clone(),
                c.state.as_str().into(),
                opt(&c.build_ms),
                duration(c.age_s),
            ]
        })
        .collect();
    table(
        &["ID", "HOPS", "PURPOSE", "STATE", "BUILD MS", "AGE"],
        &rows,
    )
}

pub(super) fn print_sessions(list: &[SessionAnswer]) -> String {
    if list.is_empty() {
        return "no sessions\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            vec![
                c.peer.clone(),
                c.role.clone(),
                c.state.clone(),
                c.circuits.to_string(),
                c.flows.to_string(),
                duration(c.age_s),
                c.local.clone(),
            ]
        })
        .collect();
    table(
        &[
            "PEER",
            "ROLE",
            "STATE",
            "CIRCUITS",
            "FLOWS",
            "AGE",
            "OUR ADDRESS",
        ],
        &rows,
    )
}
