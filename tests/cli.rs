//! The `globalnet` binary as a user meets it, without root: keygen, address, check, errors, help.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn gn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_globalnet"))
        .args(args)
        .env_remove("GLOBALNET_LOG")
        .output()
        .expect("run globalnet")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn keygen_creates_once_and_address_matches() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let d = dir.to_str().unwrap();
    let first = gn(&["keygen", "--state-dir", d]);
    assert!(first.status.success(), "{}", stderr(&first));
    let addr = stdout(&first).trim().to_string();
    assert!(addr.starts_with("fd"), "{addr}");
    assert!(addr.parse::<std::net::Ipv6Addr>().is_ok());
    assert_eq!(
        stderr(&first).matches("created").count(),
        4,
        "{}",
        stderr(&first)
    );
    for entry in std::fs::read_dir(&dir).unwrap() {
        let mode = entry.unwrap().metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let files = [
        "relay_identity.key",
        "relay_link.key",
        "relay_onion.key",
        "service_default.key",
    ];
    let contents: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();

    let second = gn(&["keygen", "--state-dir", d]);
    assert!(second.status.success());
    assert_eq!(stdout(&second).trim(), addr);
    assert!(
        stderr(&second).contains("nothing changed"),
        "{}",
        stderr(&second)
    );
    for (f, before) in files.iter().zip(&contents) {
        assert_eq!(&std::fs::read(dir.join(f)).unwrap(), before, "{f} changed");
    }

    let address = gn(&["address", "--state-dir", d]);
    assert!(address.status.success());
    assert_eq!(stdout(&address).trim(), addr);

    // --name prints the key name, which resolves to the same address.
    let named = gn(&["address", "--name", "--state-dir", d]);
    assert!(named.status.success());
    let name = stdout(&named).trim().to_string();
    assert!(name.ends_with(".gn.alt") && name.len() == 56 + 7, "{name}");
    let key = globalnet::names::KeyName::parse(&name).unwrap();
    assert_eq!(key.address().to_string(), addr);

    // --config supplies the state directory too.
    let cfg = tmp.path().join("c.toml");
    std::fs::write(&cfg, format!("state_dir = \"{d}\"\n")).unwrap();
    let via_config = gn(&["address", "--config", cfg.to_str().unwrap()]);
    assert_eq!(stdout(&via_config).trim(), addr);
}

#[test]
fn address_without_keys_says_how_to_make_them() {
    let tmp = tempfile::tempdir().unwrap();
    let o = gn(&["address", "--state-dir", tmp.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("globalnet keygen"), "{}", stderr(&o));
}

#[test]
fn check_accepts_the_example_config() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let o = gn(&["check", "--config", example.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("OK"));
}

#[test]
fn check_names_file_line_key_and_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        ("[tun]\nname = \"gn0\"\nmtu = 99999\n", ":3:", "tun.mtu"),
        (
            "[network]\nlisten = [\"0.0.0.0:7412\"]\nbootstrap = [\"peer.example\"]\n",
            ":3:",
            "network.bootstrap",
        ),
        (
            "state_dir = \"/var/lib/globalnet\"\nstate_dri = \"/x\"\n",
            ":2:",
            "state_dri",
        ),
        ("[expose]\ntcp = \"22\"\n", ":2:", "expose.tcp"),
        ("[tun]\nmtu = 1280\n[tun]\n", ":3:", ""),
    ];
    for (i, (text, line, key)) in cases.iter().enumerate() {
        let path = tmp.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let o = gn(&["check", "--config", path.to_str().unwrap()]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!("{}{line}", path.display())),
            "case {i}: {err}"
        );
        assert!(err.contains(key), "case {i}: {err}");
        assert!(err.contains("hint:"), "case {i}: {err}");
    }
    let o = gn(&["check", "--config", "/nonexistent/gn.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("config.example.toml"));
}

#[test]
fn status_without_daemon_says_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("control.sock");
    for cmd in ["status", "peers", "circuits", "services", "sessions"] {
        let o = gn(&[cmd, "--control", sock.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("not running"), "{}", stderr(&o));
    }
    let o = gn(&["ping", "fd00::1", "--control", sock.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not running"), "{}", stderr(&o));
}

#[test]
fn ping_refuses_what_is_not_an_overlay_address() {
    for bad in ["example.com", "192.0.2.1", "2001:db8::1"] {
        let o = gn(&["ping", bad, "--control", "/nonexistent.sock"]);
        assert_eq!(o.status.code(), Some(2), "{bad}");
        assert!(
            stderr(&o).contains("fd00::/8") || stderr(&o).contains("fd52"),
            "{}",
            stderr(&o)
        );
    }
}

#[test]
fn every_subcommand_has_help_with_examples() {
    for cmd in [
        "keygen", "address", "check", "daemon", "status", "peers", "circuits", "services",
        "sessions", "ping", "resolve", "name",
    ] {
        let o = gn(&[cmd, "--help"]);
        assert!(o.status.success(), "{cmd} --help");
        assert!(
            stdout(&o).contains("Examples:"),
            "{cmd} --help lacks examples"
        );
    }
    let o = gn(&["--version"]);
    assert!(stdout(&o).starts_with("globalnet "));
}

#[test]
fn check_reads_the_names_file_and_names_the_bad_line() {
    let tmp = tempfile::tempdir().unwrap();
    let names = tmp.path().join("names");
    std::fs::write(
        &names,
        "# petnames\nalice fd52:b1e::9a33\nbob 2001:db8::1\n",
    )
    .unwrap();
    let cfg = tmp.path().join("c.toml");
    std::fs::write(&cfg, format!("[names]\nfile = \"{}\"\n", names.display())).unwrap();
    let o = gn(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(&format!("{}:3:", names.display())),
        "{}",
        stderr(&o)
    );
    std::fs::write(&names, "alice fd52:b1e::9a33\n").unwrap();
    let o = gn(&["check", "--config", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("1 petname(s)"), "{}", stdout(&o));
}

#[test]
fn name_claim_show_release() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    assert!(gn(&["keygen", "--state-dir", d]).status.success());
    let key = stdout(&gn(&["address", "--name", "--state-dir", d]));
    let t = std::time::Instant::now();
    let o = gn(&["name", "claim", "Cheesy.gn.alt", "--state-dir", d]);
    assert!(o.status.success(), "{}", stderr(&o));
    eprintln!("name claim took {:?}", t.elapsed());
    assert!(stdout(&o).contains("cheesy.gn.alt") && stdout(&o).contains(key.trim()));
    let o = gn(&["name", "claim", "cheesy", "--state-dir", d]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a second claim of one name is refused"
    );
    let o = gn(&["name", "show", "cheesy", "--state-dir", d]);
    assert!(
        o.status.success() && stdout(&o).contains("bits"),
        "{}",
        stdout(&o)
    );
    for bad in [
        "a.b",
        "-x",
        "aoqqpp7tzyil4hlq3umoos6atft6jvrqtosq2xy53sdgiesvgg4lwbyb",
    ] {
        let o = gn(&["name", "claim", bad, "--state-dir", d]);
        assert_eq!(o.status.code(), Some(2), "{bad}");
    }
    // Another service's key (issue #22 item c): refused until the service has a key, then the
    // claim is signed by that key, not the node's.
    let web = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--service", "web", "--state-dir", d]);
        gn(&a)
    };
    let o = web(&["name", "claim", "blog"]);
    assert_eq!(o.status.code(), Some(1), "no key for web yet");
    assert!(
        stderr(&o).contains("keygen --service web"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        gn(&[
            "name",
            "claim",
            "blog",
            "--service",
            "Bad",
            "--state-dir",
            d
        ])
        .status
        .code(),
        Some(2)
    );
    assert!(gn(&["keygen", "--service", "web", "--state-dir", d])
        .status
        .success());
    let web_key = stdout(&web(&["address", "--name"]));
    assert_ne!(web_key.trim(), key.trim());
    let o = web(&["name", "claim", "blog"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(web_key.trim()), "{}", stdout(&o));
    let o = gn(&["name", "show", "blog", "--state-dir", d]);
    assert!(stdout(&o).contains(web_key.trim()), "{}", stdout(&o));
    assert!(gn(&["name", "release", "cheesy", "--state-dir", d])
        .status
        .success());
    assert_eq!(
        gn(&["name", "show", "cheesy", "--state-dir", d])
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn keygen_and_address_for_a_named_service() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let d = dir.to_str().unwrap();
    let first = gn(&["keygen", "--service", "web", "--state-dir", d]);
    assert!(first.status.success(), "{}", stderr(&first));
    let addr = stdout(&first).trim().to_string();
    assert!(addr.parse::<std::net::Ipv6Addr>().is_ok(), "{addr}");
    let key = dir.join("service_web.key");
    let before = std::fs::read(&key).unwrap();
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Never overwritten; the address follows the key.
    let second = gn(&["keygen", "--service", "web", "--state-dir", d]);
    assert_eq!(stdout(&second).trim(), addr);
    assert!(
        stderr(&second).contains("nothing changed"),
        "{}",
        stderr(&second)
    );
    assert_eq!(std::fs::read(&key).unwrap(), before);
    let shown = gn(&["address", "--service", "web", "--state-dir", d]);
    assert_eq!(stdout(&shown).trim(), addr);
    let json = gn(&["address", "--service", "web", "--json", "--state-dir", d]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        (v["service"].as_str(), v["address"].as_str()),
        (Some("web"), Some(addr.as_str()))
    );
    // Another service's key is another address; a missing one says how to make it.
    let other = gn(&["keygen", "--service", "ssh", "--state-dir", d]);
    assert_ne!(stdout(&other).trim(), addr);
    let missing = gn(&["address", "--service", "nope", "--state-dir", d]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("keygen --service nope"),
        "{}",
        stderr(&missing)
    );
    let bad = gn(&["keygen", "--service", "Bad/name", "--state-dir", d]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
}
