//! Issue #22: several hidden services on one host. Seven relays, a client, and a service host
//! whose daemon hosts its default service (`[expose]`, sshd on 22) and a named one (`web`, an HTTP
//! server on 80), each at its own address with its own ports. The client reaches each by its own
//! address; a port one lists is refused on the other's; the host's `circuits --json` shows each
//! service's own intro circuits; a SIGHUP that adds a third service (`wiki`, 8080) leaves a
//! running ssh session to the first alone; a SIGHUP with an invalid file keeps the running
//! config and says so in `status`.

use std::net::Ipv6Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{globalnet_bin, Daemon, Host, Lab};
use crate::services::{node_config, start_sshd};

const READY: Duration = Duration::from_secs(10);

fn services(lab: &Lab, d: &Daemon) -> serde_json::Value {
    lab.query(d, "services")
}

fn address_of(list: &serde_json::Value, name: &str) -> Option<Ipv6Addr> {
    list.as_array()?
        .iter()
        .find(|s| s["name"] == name)
        .and_then(|s| s["address"].as_str())
        .and_then(|a| a.parse().ok())
}

fn ssh(key: &std::path::Path, addr: Ipv6Addr, remote: &str) -> String {
    format!(
        "ssh -i {} -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=20 -o LogLevel=ERROR root@{addr} '{remote}'",
        key.display()
    )
}

/// Runs `cmd` in `host` until it succeeds (a new service's descriptor takes a moment to be
/// published); its output.
fn fetch(lab: &Lab, host: &Host, cmd: &str, what: &str) -> String {
    let mut page = String::new();
    lab.wait_for(what, Duration::from_secs(120), || {
        let out = lab.sh(host, cmd);
        page = String::from_utf8_lossy(&out.stdout).into_owned();
        out.status.success()
    });
    page
}

fn hup(d: &Daemon) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    );
}

#[test]
fn two_services_on_one_host_and_reloads() {
    let Some(mut lab) = Lab::new("multisvc") else {
        return;
    };
    let t0 = Instant::now();
    let relay_hosts: Vec<_> = (1..=7).map(|i| lab.add_host(&format!("r{i}"))).collect();
    let svc_host = lab.add_host("svc");
    let client_host = lab.add_host("client");
    let boot = relay_hosts[0].clone();
    let mut relays = Vec::new();
    for (i, h) in relay_hosts.iter().enumerate() {
        let cfg = node_config(&lab, h, (i > 0).then_some(&boot), "");
        relays.push(lab.start_daemon(h, &cfg));
    }
    let cfg = node_config(&lab, &client_host, Some(&boot), "");
    let client = lab.start_daemon(&client_host, &cfg);
    for d in relays.iter().chain([&client]) {
        lab.wait_ready(d, READY);
    }

    // The applications: sshd on 22, HTTP servers on 80 and (for the third service) 8080, all
    // on every address of the host.
    let ssh_key = start_sshd(&mut lab, &svc_host);
    let gn = globalnet_bin();
    for (port, token) in [("80", "web-page"), ("8080", "wiki-page")] {
        lab.spawn(
            &svc_host,
            &format!("http-{port}"),
            &gn,
            &["demo", "serve", "--port", port, "--token", token],
            Some("ready"),
        );
    }
    let two = "[expose]\ntcp = [22]\n[[service]]\nname = \"web\"\ntcp = [80]\n";
    let svc_cfg = node_config(&lab, &svc_host, Some(&boot), two);
    let svc = lab.start_daemon(&svc_host, &svc_cfg);
    lab.wait_ready(&svc, READY);
    let list = services(&lab, &svc);
    let ssh_addr = address_of(&list, "default").expect("the default service");
    let web_addr = address_of(&list, "web").expect("the web service");
    assert_ne!(ssh_addr, web_addr);
    // `address --service` reads the same key the daemon made (0600).
    let out = crate::harness::must(
        Command::new(&gn)
            .args(["address", "--service", "web", "--json", "--config"])
            .arg(&svc_cfg),
    );
    let a: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(a["address"], web_addr.to_string());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(svc.state_dir.join("service_web.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // Both addresses are on the host's gn0.
    let addrs = lab.sh_ok(&svc_host, "ip -6 addr show dev gn0");
    assert!(
        addrs.contains(&ssh_addr.to_string()) && addrs.contains(&web_addr.to_string()),
        "{addrs}"
    );

    // The client reaches each by its own address (descriptors first have to be published).
    let curl =
        |addr: Ipv6Addr, port: u16| format!("curl -sS -g --max-time 20 http://[{addr}]:{port}/");
    let page = fetch(
        &lab,
        &client_host,
        &curl(web_addr, 80),
        "the web service's page",
    );
    assert!(page.contains("web-page"), "{page}");
    // With several services hosted each first descriptor waits its own random 0-30 s, so the
    // default service may be published well after the web one: retry as for the page.
    let out = fetch(
        &lab,
        &client_host,
        &ssh(&ssh_key, ssh_addr, "echo over-ssh"),
        "ssh to the default service",
    );
    assert!(
        out.contains("over-ssh"),
        "ssh to the default service: {out}"
    );
    eprintln!(
        "both services reached {:.1} s after the lab started",
        t0.elapsed().as_secs_f64()
    );

    // A port one service lists is refused on the other's address, at once.
    for (addr, port) in [(ssh_addr, 80), (web_addr, 22)] {
        let t = Instant::now();
        let out = lab.sh(&client_host, &curl(addr, port));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success() && err.contains("(7)"),
            "[{addr}]:{port}: {err}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "refusal took {:?}",
            t.elapsed()
        );
    }

    // Separate intro circuits per service.
    let intro_of = |lab: &Lab, name: &str| -> Vec<String> {
        lab.query(&svc, "circuits")
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["purpose"] == "intro" && c["service"] == name)
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    };
    lab.wait_for(
        "intro circuits of both services",
        Duration::from_secs(30),
        || !intro_of(&lab, "default").is_empty() && !intro_of(&lab, "web").is_empty(),
    );
    let (i_def, i_web) = (intro_of(&lab, "default"), intro_of(&lab, "web"));
    assert!(
        i_def.iter().all(|c| !i_web.contains(c)),
        "{i_def:?} {i_web:?}"
    );
    eprintln!("intro circuits: default {i_def:?}, web {i_web:?}");

    // A reload adding a third service while an ssh session to the first runs.
    let mut session = lab.cmd(&client_host, "sh");
    session.args([
        "-c",
        &ssh(
            &ssh_key,
            ssh_addr,
            "for i in $(seq 24); do echo line-$i; sleep 0.5; done",
        ),
    ]);
    let running = std::thread::spawn(move || session.output().expect("ssh"));
    std::thread::sleep(Duration::from_secs(3));
    let three = format!("{two}[[service]]\nname = \"wiki\"\ntcp = [8080]\n");
    let svc_cfg = node_config(&lab, &svc_host, Some(&boot), &three);
    hup(&svc);
    lab.wait_for("the third service", Duration::from_secs(10), || {
        address_of(&services(&lab, &svc), "wiki").is_some()
    });
    let wiki_addr = address_of(&services(&lab, &svc), "wiki").unwrap();
    let out = running.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.lines().filter(|l| l.starts_with("line-")).count() == 24,
        "the ssh session across the reload: {:?} {text} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let status = lab.query(&svc, "status");
    assert_eq!(status["config"]["reloads"], 1, "{}", status["config"]);
    let page = fetch(
        &lab,
        &client_host,
        &curl(wiki_addr, 8080),
        "the wiki's page",
    );
    assert!(page.contains("wiki-page"), "{page}");

    // An invalid file: refused, the running config stays, and `status` says why.
    std::fs::write(
        &svc_cfg,
        format!("{three}[[service]]\nname = \"Bad Name\"\ntcp = [1]\n"),
    )
    .unwrap();
    hup(&svc);
    lab.wait_for("the refusal in status", Duration::from_secs(10), || {
        lab.query(&svc, "status")["config"]["reload_error"].is_string()
    });
    let err = lab.query(&svc, "status")["config"]["reload_error"].clone();
    assert!(err.as_str().unwrap().contains("service.name"), "{err}");
    assert!(lab.try_wait(&svc).is_none(), "the daemon ended on SIGHUP");
    let names: Vec<String> = services(&lab, &svc)
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["default", "web", "wiki"]);
    let out = lab.sh(&client_host, &curl(web_addr, 80));
    assert!(out.status.success(), "web after the refused reload");
    let log = std::fs::read_to_string(&svc.log).unwrap_or_default();
    assert!(
        log.contains("reload refused"),
        "the log says the reload was refused"
    );
    eprintln!("multiservice test took {:.1} s", t0.elapsed().as_secs_f64());
}
