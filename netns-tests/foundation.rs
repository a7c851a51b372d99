//! Issue #2 scenarios: one node brings up gn0 correctly, answers for what it cannot reach, keeps
//! the unreachable route after it stops, drops privileges, and refuses bad configs.

use nix::sys::signal::Signal;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{globalnet_bin, must, Lab};

const READY: Duration = Duration::from_secs(10);

fn address_of_state(dir: &std::path::Path) -> String {
    let out = must(
        Command::new(globalnet_bin())
            .args(["address", "--state-dir"])
            .arg(dir),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn gn0_comes_up_with_address_mtu_and_routes() {
    let Some(mut lab) = Lab::new("gn0_up") else {
        return;
    };
    let h = lab.add_host("node");
    let cfg = lab.write_config(&h, "");
    let d = lab.start_daemon(&h, &cfg);
    let status = lab.wait_ready(&d, READY);

    let addr = address_of_state(&d.state_dir);
    assert!(addr.starts_with("fd"), "{addr}");
    assert_eq!(status["address"], addr.as_str());
    assert_eq!(status["interface"], "gn0");
    assert!(status["uptime_s"].is_u64());
    assert!(status["relay_key"].as_str().is_some_and(|k| k.len() == 64));

    let addrs = lab.sh_ok(&h, "ip -6 addr show dev gn0 scope global");
    assert!(addrs.contains(&format!("{addr}/128")), "{addrs}");
    let link = lab.sh_ok(&h, "ip link show gn0");
    assert!(link.contains("mtu 1280") && link.contains("UP"), "{link}");
    let routes = lab.sh_ok(&h, "ip -6 route show table main");
    assert!(
        routes.contains(&format!(
            "fd00::/8 dev gn0 proto static src {addr} metric 256"
        )),
        "{routes}"
    );
    assert!(routes.contains("unreachable fd00::/8"), "{routes}");
    assert!(routes.contains("metric 4000000000"), "{routes}");

    for f in [
        "relay_identity.key",
        "relay_link.key",
        "service_default.key",
    ] {
        let mode = std::fs::metadata(d.state_dir.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let sock = std::fs::metadata(&d.control).unwrap().permissions().mode();
    assert_eq!(sock & 0o777, 0o660);

    // The human-readable status is a table that names the address.
    let out = must(
        Command::new(globalnet_bin())
            .args(["status", "--control"])
            .arg(&d.control),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("address") && text.contains(&addr), "{text}");
}

#[test]
fn unknown_overlay_address_fails_fast() {
    let Some(mut lab) = Lab::new("unreachable") else {
        return;
    };
    let h = lab.add_host("node");
    let cfg = lab.write_config(&h, "");
    let d = lab.start_daemon(&h, &cfg);
    lab.wait_ready(&d, READY);

    let t = Instant::now();
    let out = lab.sh(&h, "ping -6 -c 1 -W 5 fd12:3456::1");
    let took = t.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(text.contains("Destination unreachable"), "{text}");
    assert!(took < Duration::from_secs(1), "ping took {took:?}");

    // TCP fails just as fast: the kernel turns the ICMPv6 error into a failed connect.
    let t = Instant::now();
    let out = lab.sh(&h, "curl -sS -g --max-time 5 'http://[fd12:3456::1]:80/'");
    let took = t.elapsed();
    assert!(!out.status.success());
    assert!(
        took < Duration::from_secs(1),
        "curl took {took:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let status = lab.query(&d, "status");
    assert!(
        status["tun"]["icmp_replies"].as_u64().unwrap() >= 2,
        "{status}"
    );
}

#[test]
fn oversize_packet_gets_packet_too_big() {
    let Some(mut lab) = Lab::new("ptb") else {
        return;
    };
    let h = lab.add_host("node");
    let cfg = lab.write_config(&h, "[tun]\nmtu = 1400\n");
    let d = lab.start_daemon(&h, &cfg);
    lab.wait_ready(&d, READY);
    let link = lab.sh_ok(&h, "ip link show gn0");
    assert!(link.contains("mtu 1400"), "{link}");
    // 1352 bytes of ICMP payload + 8 + 40 = a 1400-byte packet, with DF semantics.
    let out = lab.sh(&h, "ping -6 -c 1 -W 3 -M do -s 1352 fd12:3456::1");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Packet too big: mtu=1280"), "{text}");
    // The kernel learned the path MTU: the next packet of that size is refused locally.
    let out = lab.sh(&h, "ping -6 -c 1 -W 3 -M do -s 1352 fd12:3456::1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mtu: 1280") || err.contains("mtu=1280"),
        "{err}"
    );
}

#[test]
fn sigterm_keeps_unreachable_route_and_removes_tun() {
    let Some(mut lab) = Lab::new("sigterm") else {
        return;
    };
    let h = lab.add_host("node");
    let cfg = lab.write_config(&h, "");
    let d = lab.start_daemon(&h, &cfg);
    lab.wait_ready(&d, READY);
    let status = lab.stop(&d, Signal::SIGTERM, Duration::from_secs(5));
    assert!(status.success(), "exit status {status}");
    let links = lab.sh_ok(&h, "ip link show");
    assert!(!links.contains("gn0"), "{links}");
    let routes = lab.sh_ok(&h, "ip -6 route show table main");
    assert!(routes.contains("unreachable fd00::/8"), "{routes}");
    assert!(!routes.contains("dev gn0"), "{routes}");
    assert!(!d.control.exists(), "control socket left behind");
    // With the daemon down, overlay traffic fails at once instead of leaking.
    let t = Instant::now();
    let out = lab.sh(&h, "ping -6 -c 1 -W 5 fd12:3456::1");
    assert!(!out.status.success());
    assert!(t.elapsed() < Duration::from_secs(1));

    // A restart finds the route in place and comes up again with the same address (SIGINT too).
    let d2 = lab.start_daemon(&h, &cfg);
    let s2 = lab.wait_ready(&d2, READY);
    assert_eq!(s2["address"], address_of_state(&d.state_dir).as_str());
    let status = lab.stop(&d2, Signal::SIGINT, Duration::from_secs(5));
    assert!(status.success(), "exit status {status}");
}

#[test]
fn drops_privileges_keeping_only_net_admin() {
    let Some(mut lab) = Lab::new("privdrop") else {
        return;
    };
    let h = lab.add_host("node");
    let cfg = lab.write_config(&h, "user = \"nobody\"\n");
    let d = lab.start_daemon(&h, &cfg);
    lab.wait_ready(&d, READY);
    let proc_status = std::fs::read_to_string(format!("/proc/{}/status", d.pid)).unwrap();
    let field = |name: &str| -> String {
        proc_status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("{name} missing"))
            .trim()
            .to_string()
    };
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    for uid in field("Uid").split_whitespace() {
        assert_eq!(uid, nobody.to_string(), "Uid: {}", field("Uid"));
    }
    // CAP_NET_ADMIN is bit 12.
    assert_eq!(field("CapEff"), "0000000000001000");
    assert_eq!(field("CapPrm"), "0000000000001000");
    assert_eq!(field("CapBnd"), "0000000000001000");
    assert_eq!(field("CapInh"), "0000000000000000");
    assert_eq!(field("CapAmb"), "0000000000000000");
    assert_eq!(field("NoNewPrivs"), "1");
    // Still fully working after the drop.
    let out = lab.sh(&h, "ping -6 -c 1 -W 5 fd12:3456::1");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Destination unreachable"));
    let status = lab.stop(&d, Signal::SIGTERM, Duration::from_secs(5));
    assert!(status.success());
    assert!(
        !d.control.exists(),
        "the unprivileged daemon could not remove its socket"
    );
}

#[test]
fn daemon_refuses_bad_config_before_touching_anything() {
    let Some(mut lab) = Lab::new("badconfig") else {
        return;
    };
    let h = lab.add_host("node");
    let cfg = lab.write_config(&h, "[tun]\nname = \"gn0\"\nmtu = 9\n");
    let d = lab.start_daemon(&h, &cfg);
    let status = lab.stop(&d, Signal::SIGCONT, Duration::from_secs(5));
    assert_eq!(status.code(), Some(2));
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(log.contains(&format!("{}:5:", cfg.display())), "{log}");
    assert!(log.contains("tun.mtu") && log.contains("hint:"), "{log}");
    let links = lab.sh_ok(&h, "ip link show");
    assert!(!links.contains("gn0"), "{links}");

    // A user that does not exist is refused before gn0 is created.
    let cfg = lab.write_config(&h, "user = \"no-such-user-gn\"\n");
    let d = lab.start_daemon(&h, &cfg);
    let status = lab.stop(&d, Signal::SIGCONT, Duration::from_secs(5));
    assert_eq!(status.code(), Some(1));
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(log.contains("does not exist"), "{log}");
    assert!(!lab.sh_ok(&h, "ip link show").contains("gn0"));
}

#[test]
fn harness_makes_loss_and_delay() {
    let Some(mut lab) = Lab::new("harness") else {
        return;
    };
    let a = lab.add_host("a");
    let b = lab.add_host("b");
    let rtt = |lab: &Lab| -> f64 {
        let out = lab.sh_ok(&a, &format!("ping -c 5 -i 0.05 -q {}", b.ip));
        // rtt min/avg/max/mdev = 0.046/0.060/0.080/0.011 ms
        let line = out
            .lines()
            .find(|l| l.contains("min/avg/max"))
            .expect("ping summary");
        let nums = line.split('=').nth(1).unwrap().trim();
        nums.split('/').nth(1).unwrap().parse().unwrap()
    };
    let base = rtt(&lab);
    assert!(base < 5.0, "baseline RTT {base} ms");
    lab.set_delay(&b, 40);
    let delayed = rtt(&lab);
    assert!(
        (38.0..80.0).contains(&delayed),
        "RTT with 40 ms delay: {delayed} ms"
    );

    lab.set_loss(&a, 50);
    let out = lab.sh(&a, &format!("ping -c 200 -i 0.005 -W 1 -q {}", b.ip));
    let text = String::from_utf8_lossy(&out.stdout);
    let loss: f64 = text
        .split(',')
        .find(|p| p.contains("packet loss"))
        .and_then(|p| p.trim().split('%').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no loss figure in {text}"));
    assert!(
        (30.0..=70.0).contains(&loss),
        "50% configured, {loss}% measured"
    );
}
