//! What the demo prints about the network it built: circuits by the demo's node names, the
//! service list, why an overlay ping failed; and the random token it fetches.

use super::*;

/// A one-line summary of a node's ready circuits by purpose ("3 flow (3 hops), 2 intro (2
/// hops), ..."), with the relays of one flow circuit by demo name when the daemon reports a
/// circuit's path (relay keys or endpoints); and the hop count of its flow circuits.
pub(super) fn describe_circuits(
    circuits: &Value,
    names: &[(String, String, Ipv4Addr)],
) -> (String, Option<u64>) {
    let list: Vec<Value> = circuits
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["state"] == "ready")
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if list.is_empty() {
        return ("no circuits ready".into(), None);
    }
    let mut purposes: Vec<&str> = Vec::new();
    for c in &list {
        let p = c["purpose"].as_str().unwrap_or("?");
        if !purposes.contains(&p) {
            purposes.push(p);
        }
    }
    // Flows first, the pool last: the order of interest.
    let rank = |p: &str| match p {
        "flow" => 0,
        "rendezvous" => 1,
        "intro" => 2,
        "pool" => 9,
        _ => 5,
    };
    purposes.sort_by_key(|p| rank(p));
    let hops_of = |p: &str| -> Vec<u64> {
        let mut h: Vec<u64> = list
            .iter()
            .filter(|c| c["purpose"] == p)
            .filter_map(|c| c["hops"].as_u64())
            .collect();
        h.sort_unstable();
        h.dedup();
        h
    };
    let parts: Vec<String> = purposes
        .iter()
        .map(|p| {
            let n = list.iter().filter(|c| c["purpose"] == *p).count();
            let hops: Vec<String> = hops_of(p).iter().map(u64::to_string).collect();
            format!("{n} {p} ({} hops)", hops.join("/"))
        })
        .collect();
    let name_of = |id: &str| -> String {
        names
            .iter()
            .find(|(_, key, ip)| {
                (!key.is_empty() && (key.starts_with(id) || id.starts_with(key.as_str())))
                    || id.split(':').next() == Some(ip.to_string().as_str())
            })
            .map(|(n, _, _)| n.clone())
            .unwrap_or_else(|| id.get(..12).unwrap_or(id).to_string())
    };
    let path = list
        .iter()
        .filter(|c| c["purpose"] == "flow")
        .find_map(|c| ["path", "relays"].iter().find_map(|k| c[*k].as_array()))
        .map(|hops| {
            let hops: Vec<String> = hops
                .iter()
                .map(|h| match h {
                    Value::String(s) => name_of(s),
                    other => name_of(
                        other["relay_key"]
                            .as_str()
                            .or(other["endpoint"].as_str())
                            .unwrap_or("?"),
                    ),
                })
                .collect();
            format!("; a flow goes through {}", hops.join(" → "))
        })
        .unwrap_or_default();
    (
        format!("{}{path}", parts.join(", ")),
        hops_of("flow").last().copied(),
    )
}

/// The services a node hosts; none when its daemon does not answer.
pub(super) fn services(control_socket: &Path) -> Vec<ServiceAnswer> {
    control::ask(control_socket, Cmd::Services).unwrap_or_default()
}

/// Why the client's daemon cannot reach `addr`, in its own words (`globalnet ping`).
pub(super) fn overlay_ping_error(exe: &Path, client: &Node, addr: &str) -> String {
    let out = run_cmd(
        Command::new(exe)
            .args(["ping", "--json", "-c", "1", addr, "--control"])
            .arg(&client.control),
        Duration::from_secs(50),
    );
    match out {
        Ok(o) => {
            let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
            match (&v["errors"][0], &v["rtt_ms"][0]) {
                (Value::String(e), _) => e.clone(),
                (_, Value::Number(ms)) => format!("it answers globalnet ping in {ms} ms"),
                _ => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            }
        }
        Err(e) => e,
    }
}

pub(super) fn random_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}
