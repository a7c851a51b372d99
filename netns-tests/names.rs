//! Issue #24: names under gn.alt answered by the daemon's DNS server on gn0.
//!
//! The client namespace's resolver is the daemon (`/etc/netns/NS/resolv.conf`, which `ip netns
//! exec` mounts over /etc/resolv.conf), so ordinary programs (`getent`, glibc's stub resolver)
//! resolve names with nothing else set up.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{globalnet_bin, shipped_listen, Lab};

/// A key name from tests/vectors/keynames.json and its address.
const KEY_NAME: &str = "aoqqpp7tzyil4hlq3umoos6atft6jvrqtosq2xy53sdgiesvgg4lwbyb.gn.alt";
const KEY_ADDR: &str = "fdfc:a1e2:e67f:8a0d:e83:d03b:4f4e:6587";

/// Sends one DNS query for `name` of type `qtype` to `[server]:53` and prints `RCODE ANCOUNT`.
const ASK: &str = r#"
import socket, struct, sys
server, name, qtype = sys.argv[1], sys.argv[2], int(sys.argv[3])
q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".") if l) + b"\0"
q += struct.pack(">HH", qtype, 1)
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.settimeout(8)
s.sendto(q, (server, 53))
r = s.recv(1500)
assert r[:2] == b"\x42\x42"
print(r[3] & 15, struct.unpack(">H", r[6:8])[0])
"#;

#[test]
fn dns_on_gn0_answers_gn_alt_and_refuses_the_rest() {
    let Some(mut lab) = Lab::new("names-dns") else {
        return;
    };
    let host = lab.add_host("n1");
    let names = lab.dir.join("names");
    std::fs::write(&names, "# petnames\ncarol fd12::c\n").unwrap();
    let cfg = lab.write_config(
        &host,
        &format!(
            // Dropping to nobody: the socket on port 53 is bound before the drop.
            "user = \"nobody\"\n[network]\nlisten = {}\n[names]\nfile = \"{}\"\nlocal = [\"alice {KEY_NAME}\"]\n",
            shipped_listen(),
            names.display()
        ),
    );
    let d = lab.start_daemon(&host, &cfg);
    let status = lab.wait_ready(&d, Duration::from_secs(10));
    let addr = status["address"].as_str().unwrap().to_string();
    let proc_status = std::fs::read_to_string(format!("/proc/{}/status", d.pid)).unwrap();
    assert!(
        proc_status.contains("CapEff:\t0000000000001000"),
        "only CAP_NET_ADMIN is left: {proc_status}"
    );
    lab.set_resolver(
        &host,
        &format!("nameserver {addr}\noptions attempts:1 timeout:2\n"),
    );

    let getent = |name: &str| lab.sh(&host, &format!("getent ahosts {name}"));
    for (name, want) in [
        ("alice.gn.alt", KEY_ADDR),
        ("ALICE.gn.alt", KEY_ADDR),
        (KEY_NAME, KEY_ADDR),
        ("carol.gn.alt", "fd12::c"),
    ] {
        let out = getent(name);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains(want),
            "{name}: {text}"
        );
    }

    // A name no layer can hold (network names are one label) fails at once: NXDOMAIN, not a
    // timeout.
    let t = Instant::now();
    assert!(!getent("www.nobody.gn.alt").status.success());
    let unknown = t.elapsed();
    assert!(unknown < Duration::from_millis(1500), "{unknown:?}");
    eprintln!("names: NXDOMAIN for an impossible name in {unknown:?}");

    let ask = |name: &str, qtype: u16| {
        let out = lab.sh_ok(&host, &format!("python3 -c '{ASK}' {addr} {name} {qtype}"));
        out.trim().to_string()
    };
    assert_eq!(ask("alice.gn.alt", 28), "0 1", "AAAA");
    assert_eq!(ask("alice.gn.alt", 1), "0 0", "A: NODATA");
    assert_eq!(ask("www.nobody.gn.alt", 28), "3 0", "NXDOMAIN");
    // A one-label name is the DHT's to answer, and this lone node has no network to ask: the
    // query waits at most DNS_WAIT (4 s) and gets SERVFAIL (the name may exist), not NXDOMAIN.
    let t = Instant::now();
    assert_eq!(ask("nobody.gn.alt", 28), "2 0", "SERVFAIL");
    let waited = t.elapsed();
    assert!(waited < Duration::from_millis(5500), "{waited:?}");
    eprintln!("names: SERVFAIL for a network name with no network in {waited:?}");
    assert_eq!(ask("example.com", 28), "5 0", "another domain: REFUSED");
    assert_eq!(ask("alice.gn", 28), "5 0", "Guinea's .gn: REFUSED");

    // `globalnet resolve` says which layer answered.
    let out = crate::harness::must(
        Command::new(globalnet_bin())
            .args(["resolve", "alice", "--control"])
            .arg(&d.control),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(KEY_ADDR) && text.contains("petname"),
        "{text}"
    );
    let out = Command::new(globalnet_bin())
        .args(["resolve", "nobody.gn.alt", "--control"])
        .arg(&d.control)
        .output()
        .unwrap();
    assert!(!out.status.success());

    // An edited names file is read again without a restart (the daemon looks every 5 s).
    std::fs::write(&names, "# petnames\ncarol fd12::c\ndave fd12::d\n").unwrap();
    let t = Instant::now();
    loop {
        let out = getent("dave.gn.alt");
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("fd12::d") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the new petname never resolved"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "names: an added petname resolved {:?} after the edit",
        t.elapsed()
    );
}

/// The client's resolver is its daemon; the service is reached by a petname to its key name (and
/// one to its address) with ssh and curl, and by its key name itself.
#[test]
fn ssh_and_curl_reach_a_service_by_name() {
    use crate::services::{node_config, start_sshd};
    let Some(mut lab) = Lab::new("names-apps") else {
        return;
    };
    let relay_hosts: Vec<_> = (1..=7).map(|i| lab.add_host(&format!("r{i}"))).collect();
    let svc_host = lab.add_host("svc");
    let client_host = lab.add_host("client");
    let boot = relay_hosts[0].clone();

    // The service's keys first, so the client's names file can name them.
    let svc_cfg = node_config(&lab, &svc_host, Some(&boot), "[expose]\ntcp = [22, 80]\n");
    let svc_state = lab.dir.join("svc-state");
    let key_out = crate::harness::must(
        Command::new(globalnet_bin())
            .args(["keygen", "--state-dir"])
            .arg(&svc_state),
    );
    let svc_addr = String::from_utf8_lossy(&key_out.stdout).trim().to_string();
    let name_out = crate::harness::must(
        Command::new(globalnet_bin())
            .args(["address", "--name", "--state-dir"])
            .arg(&svc_state),
    );
    let svc_name = String::from_utf8_lossy(&name_out.stdout).trim().to_string();
    let names = lab.dir.join("client-names");
    std::fs::write(&names, format!("alice {svc_name}\nbob {svc_addr}\n")).unwrap();

    let mut relays = Vec::new();
    for (i, h) in relay_hosts.iter().enumerate() {
        let cfg = node_config(&lab, h, (i > 0).then_some(&boot), "");
        relays.push(lab.start_daemon(h, &cfg));
    }
    let cfg = node_config(
        &lab,
        &client_host,
        Some(&boot),
        &format!(
            "[names]\nfile = \"{}\"\n[outbound]\nsocks = \"127.0.0.1:1080\"\n",
            names.display()
        ),
    );
    let client = lab.start_daemon(&client_host, &cfg);
    for d in relays.iter().chain([&client]) {
        lab.wait_ready(d, Duration::from_secs(10));
    }
    let client_addr = lab.query(&client, "status")["address"]
        .as_str()
        .unwrap()
        .to_string();
    lab.set_resolver(
        &client_host,
        &format!("nameserver {client_addr}\noptions attempts:1 timeout:2\n"),
    );

    let token = "gn-names-page-7d1e";
    let gn = globalnet_bin();
    lab.spawn(
        &svc_host,
        "svc-http",
        &gn,
        &["demo", "serve", "--port", "80", "--token", token],
        Some("ready"),
    );
    let ssh_key = start_sshd(&mut lab, &svc_host);
    let svc = lab.start_daemon(&svc_host, &svc_cfg);
    lab.wait_ready(&svc, Duration::from_secs(10));

    let t = Instant::now();
    let mut last = String::new();
    let reached = loop {
        let out = lab.sh(&client_host, "curl -sS --max-time 5 http://alice.gn.alt/");
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && body.contains(token) {
            break true;
        }
        last = format!("{body}{}", String::from_utf8_lossy(&out.stderr));
        if t.elapsed() > Duration::from_secs(120) {
            break false;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(reached, "curl http://alice.gn.alt/ never worked: {last}");
    eprintln!(
        "names: curl http://alice.gn.alt/ answered after {:?}",
        t.elapsed()
    );

    for name in ["bob.gn.alt", svc_name.as_str()] {
        let out = lab.sh_ok(
            &client_host,
            &format!("curl -sS --max-time 20 http://{name}/"),
        );
        assert!(out.contains(token), "{name}: {out}");
    }
    // The same names through the SOCKS port: resolved by the client's daemon (petname, key name),
    // never sent to an exit (there is none in this network); an address literal too.
    for url in [
        "http://alice.gn.alt/".to_string(),
        format!("http://{svc_name}/"),
        format!("http://[{svc_addr}]/"),
    ] {
        let out = lab.sh_ok(
            &client_host,
            &format!("curl -sS --max-time 20 --socks5-hostname 127.0.0.1:1080 {url}"),
        );
        assert!(out.contains(token), "SOCKS {url}: {out}");
    }
    let out = lab.sh(
        &client_host,
        "curl -sS --max-time 20 --socks5-hostname 127.0.0.1:1080 http://nobody-here.gn.alt/",
    );
    assert!(!out.status.success(), "an unknown overlay name fails");
    let out = lab.sh_ok(
        &client_host,
        &format!(
            "ssh -i {} -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=20 -o LogLevel=ERROR root@alice.gn.alt 'echo over-$((40+2))'",
            ssh_key.display()
        ),
    );
    assert_eq!(out.trim(), "over-42");
}

/// `globalnet resolve NAME --json` on daemon `d`: the answer, or the error text.
fn resolve(d: &crate::harness::Daemon, name: &str) -> Result<serde_json::Value, String> {
    let out = Command::new(globalnet_bin())
        .args(["resolve", name, "--json", "--control"])
        .arg(&d.control)
        .output()
        .unwrap();
    if out.status.success() {
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Resolves `name` on `d` until an answer comes (lookups through fresh circuits may fail at
/// first), at most `within`.
fn resolve_until(d: &crate::harness::Daemon, name: &str, within: Duration) -> serde_json::Value {
    let t = Instant::now();
    loop {
        match resolve(d, name) {
            Ok(v) => return v,
            Err(e) if t.elapsed() > within => panic!("{}: resolve {name}: {e}", d.host.name),
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}

/// Waits until `d` logged that storage nodes accepted its name claim.
fn wait_published(d: &crate::harness::Daemon) {
    let t = Instant::now();
    loop {
        let log = std::fs::read_to_string(&d.log).unwrap_or_default();
        if log
            .lines()
            .any(|l| l.contains("name claim published") && !l.contains("accepted=0"))
        {
            eprintln!(
                "names: {} published its claim after {:?}",
                d.host.name,
                t.elapsed()
            );
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "{}: the claim was never stored",
            d.host.name
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Issue #24 item 6 over the DHT of real daemons: a name one service claimed resolves on a client
/// node that never saw it (`globalnet resolve`, and curl through the client's DNS on gn0); a second
/// claim of the name by another key with less work loses on every node, the relays included; an
/// unclaimed name fails within the resolvers' 5 s; another domain is refused.
#[test]
fn a_claimed_name_resolves_through_the_dht_and_a_weaker_claim_loses_everywhere() {
    use crate::services::node_config;
    use globalnet::names::claim_files;
    let Some(mut lab) = Lab::new("names-dht") else {
        return;
    };
    let relay_hosts: Vec<_> = (1..=7).map(|i| lab.add_host(&format!("r{i}"))).collect();
    let hosts = [lab.add_host("a"), lab.add_host("b")];
    let client_host = lab.add_host("client");
    let boot = relay_hosts[0].clone();
    let gn = globalnet_bin();

    // Two keys claim `alice` (the work is random: whichever did more is the owner).
    let mut claims = Vec::new();
    for h in &hosts {
        let state = lab.dir.join(format!("{}-state", h.name));
        crate::harness::must(
            Command::new(&gn)
                .args(["keygen", "--state-dir"])
                .arg(&state),
        );
        crate::harness::must(
            Command::new(&gn)
                .args(["name", "claim", "alice", "--state-dir"])
                .arg(&state),
        );
        claims.push(claim_files::load(&state, "alice").unwrap().unwrap());
    }
    let (strong, weak) = if claims[0].work_hash() < claims[1].work_hash() {
        (0, 1)
    } else {
        (1, 0)
    };
    let owner = claims[strong].key_name().unwrap();
    eprintln!(
        "names: claims of {} and {} bits; {} owns alice",
        claims[strong].work_bits(),
        claims[weak].work_bits(),
        hosts[strong].name
    );

    let mut daemons = Vec::new();
    for (i, h) in relay_hosts.iter().enumerate() {
        let cfg = node_config(&lab, h, (i > 0).then_some(&boot), "");
        daemons.push(lab.start_daemon(h, &cfg));
    }
    // The client's petnames file starts empty; at the end a petname takes `alice` over.
    let petnames = lab.dir.join("client-names");
    std::fs::write(&petnames, "# petnames\n").unwrap();
    let cfg = node_config(
        &lab,
        &client_host,
        Some(&boot),
        &format!("[names]\nfile = \"{}\"\n", petnames.display()),
    );
    let client = lab.start_daemon(&client_host, &cfg);
    for d in daemons.iter().chain([&client]) {
        lab.wait_ready(d, Duration::from_secs(10));
    }
    let token = "gn-names-dht-5c2a";
    lab.spawn(
        &hosts[strong],
        "owner-http",
        &gn,
        &["demo", "serve", "--port", "80", "--token", token],
        Some("ready"),
    );
    let cfg = node_config(&lab, &hosts[strong], Some(&boot), "[expose]\ntcp = [80]\n");
    let owner_d = lab.start_daemon(&hosts[strong], &cfg);
    lab.wait_ready(&owner_d, Duration::from_secs(10));

    // The client never saw the owner: the name comes from the DHT (published 20 s after start;
    // asking earlier would cache "no such name" for a minute).
    wait_published(&owner_d);
    let t = Instant::now();
    let v = resolve_until(&client, "alice", Duration::from_secs(120));
    assert_eq!(v["address"], owner.address().to_string(), "{v}");
    assert_eq!(v["source"], "network", "{v}");
    eprintln!("names: alice resolved on the client in {:?}", t.elapsed());
    let client_addr = lab.query(&client, "status")["address"]
        .as_str()
        .unwrap()
        .to_string();
    lab.set_resolver(
        &client_host,
        &format!("nameserver {client_addr}\noptions attempts:1 timeout:4\n"),
    );
    let t = Instant::now();
    loop {
        let out = lab.sh(&client_host, "curl -sS --max-time 10 http://alice.gn.alt/");
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains(token) {
            break;
        }
        let last = String::from_utf8_lossy(&out.stderr);
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "curl http://alice.gn.alt/: {last}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!(
        "names: curl http://alice.gn.alt/ through the DHT in {:?}",
        t.elapsed()
    );

    // An unclaimed name: NXDOMAIN after the lookup, within the stub resolver's 5 s; another
    // domain: REFUSED.
    let ask = |name: &str| {
        let out = lab.sh_ok(
            &client_host,
            &format!("python3 -c '{ASK}' {client_addr} {name} 28"),
        );
        out.trim().to_string()
    };
    let t = Instant::now();
    let mut rcode = ask("nosuchname-3f9.gn.alt");
    // A lookup may fail on a fresh circuit (SERVFAIL, the name might exist); the retry is fast.
    if rcode == "2 0" {
        rcode = ask("nosuchname-3f9.gn.alt");
    }
    assert_eq!(rcode, "3 0", "an unclaimed name: NXDOMAIN");
    let unknown = t.elapsed();
    assert!(unknown < Duration::from_secs(5), "{unknown:?}");
    eprintln!("names: NXDOMAIN for an unclaimed name after the DHT lookup in {unknown:?}");
    assert_eq!(ask("example.org"), "5 0", "another domain: REFUSED");

    // The weaker claim is published too (its daemon logs the storage nodes' acceptance) ...
    let cfg = node_config(&lab, &hosts[weak], Some(&boot), "[expose]\ntcp = [81]\n");
    let weak_d = lab.start_daemon(&hosts[weak], &cfg);
    lab.wait_ready(&weak_d, Duration::from_secs(10));
    wait_published(&weak_d);
    // ... and loses on every node: the relays and the weaker claimant itself look it up now for
    // the first time, so no pin decides, only the claims.
    for d in daemons.iter().chain([&weak_d, &client]) {
        let v = resolve_until(d, "alice", Duration::from_secs(60));
        assert_eq!(
            v["key"],
            owner.to_string(),
            "{}: alice names the stronger claim's key: {v}",
            d.host.name
        );
    }
    let out = lab.sh(&client_host, "curl -sS --max-time 10 http://alice.gn.alt/");
    assert!(String::from_utf8_lossy(&out.stdout).contains(token));

    // A local name always wins: a petname `alice` on the client overrides the network's owner
    // (the file is read again within 5 s, no restart).
    std::fs::write(&petnames, "# petnames\nalice fd12::a1\n").unwrap();
    let t = Instant::now();
    loop {
        let v = resolve(&client, "alice").unwrap_or_default();
        if v["source"] == "petname" {
            assert_eq!(v["address"], "fd12::a1", "{v}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the petname never overrode the network name: {v}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
