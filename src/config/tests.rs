use super::*;

const EXAMPLE: &str = include_str!("../../config.example.toml");

#[test]
fn example_config_is_valid() {
    let c = Config::parse(EXAMPLE, "config.example.toml").unwrap();
    assert_eq!(c.tun.name, "gn0");
    assert_eq!(c.tun.mtu, 1280);
}

#[test]
fn empty_config_gives_defaults() {
    assert_eq!(Config::parse("", "x").unwrap(), Config::default());
    assert!(Config::default().relay_enabled());
}

#[test]
fn full_config() {
    let text = r#"
state_dir = "/tmp/gn"
control_socket = "/tmp/gn/c.sock"
user = "nobody"
[tun]
name = "gn7"
mtu = 1400
[network]
listen = ["0.0.0.0:7412", "[::]:7412"]
bootstrap = ["198.18.0.1:7412"]
[paths]
ipv4_subnet_family_prefix = 32
ipv6_subnet_family_prefix = 128
[expose]
tcp = [80, 22]
udp = [53]
[client]
real_identity = ["fd52:b1e::9a33"]
"#;
    let c = Config::parse(text, "t.toml").unwrap();
    assert_eq!(c.user.as_deref(), Some("nobody"));
    assert_eq!(c.tun.mtu, 1400);
    assert_eq!(c.network.listen.len(), 2);
    assert_eq!(c.expose.tcp, vec![22, 80]);
    assert_eq!(c.paths.ipv6_subnet_family_prefix, 128);
    assert_eq!(
        c.client.real_identity,
        vec!["fd52:b1e::9a33".parse::<Ipv6Addr>().unwrap()]
    );
    // Exposing services turns relaying off by default...
    assert!(!c.relay_enabled());
    // ...unless the operator says otherwise.
    let c = Config::parse(&format!("{text}\n"), "t.toml").unwrap();
    assert!(!c.relay_enabled());
    let c = Config::parse("[network]\nrelay = true\n[expose]\ntcp = [22]\n", "t").unwrap();
    assert!(c.relay_enabled());
}

fn bad(text: &str) -> ConfigError {
    Config::parse(text, "bad.toml").unwrap_err()
}

#[test]
fn errors_name_line_key_and_hint() {
    let e = bad("state_dir = \"/x\"\n[tun]\nmtu = 1000\n");
    assert_eq!((e.line, e.key.as_str()), (3, "tun.mtu"));
    assert!(
        e.to_string()
            .starts_with("bad.toml:3:7: tun.mtu: 1000 is out of range"),
        "{e}"
    );
    assert!(e.to_string().contains("hint:"));

    let e = bad("[tun]\nname = \"gn0\"\nmtuu = 1280\n");
    assert_eq!((e.line, e.key.as_str()), (3, "tun.mtuu"), "{e}");
    assert!(e.message.contains("unknown field"), "{e}");

    let e = bad("\n\nfoo = 1\n");
    assert_eq!((e.line, e.key.as_str()), (3, "foo"), "{e}");

    let e = bad("[tun]\nmtu = \"big\"\n");
    assert_eq!((e.line, e.key.as_str()), (2, "tun.mtu"), "{e}");
    assert!(e.message.contains("invalid type"), "{e}");

    let e = bad("[network]\nlisten = [\"0.0.0.0\"]\n");
    assert_eq!((e.line, e.key.as_str()), (2, "network.listen"), "{e}");

    let e = bad("[network]\nbootstrap = [\"0.0.0.0:7412\"]\n");
    assert_eq!(e.line, 2, "{e}");

    let e = bad("[network]\nlisten = []\n");
    assert!(e.message.contains("empty"), "{e}");

    let e = bad("[expose]\ntcp = [22,\n 70000]\n");
    assert_eq!((e.line, e.key.as_str()), (3, "expose.tcp"), "{e}");

    let e = bad("[expose]\nudp = [53, 53]\n");
    assert!(e.message.contains("twice"), "{e}");

    let e = bad("[tun]\nname = \"much-too-long-name\"\n");
    assert_eq!(e.key, "tun.name");

    let e = bad("state_dir = \"relative\"\n");
    assert_eq!(e.key, "state_dir");

    let e = bad("user = \"-rf\"\n");
    assert_eq!(e.key, "user");

    let e = bad("[limits]\nmemory_budget_mb = 1\n");
    assert_eq!(
        (e.line, e.key.as_str()),
        (2, "limits.memory_budget_mb"),
        "{e}"
    );

    let e = bad("[network]\nlinks = 0\n");
    assert_eq!(e.key, "network.links");

    let e = bad("[paths]\nipv6_subnet_family_prefix = 129\n");
    assert_eq!(e.key, "paths.ipv6_subnet_family_prefix");

    let e = bad("[client]\nreal_identity = [\"2001:db8::1\"]\n");
    assert_eq!((e.line, e.key.as_str()), (2, "client.real_identity"), "{e}");
    let e = bad("[client]\nreal_identity = [\"fd00::1\", \"fd00::1\"]\n");
    assert!(e.message.contains("twice"), "{e}");
    let e = bad("[client]\nreal_identities = []\n");
    assert_eq!(e.key, "client.real_identities", "{e}");

    let e = bad("[tun\nname = 1");
    assert_eq!(e.line, 1, "{e}");

    let e = bad("[tun]\n[tun]\n");
    assert!(e.line >= 1, "{e}");
}

#[test]
fn names_table() {
    let c = Config::parse(
        "[names]\nfile = \"/tmp/names\"\nlocal = [\"alice fd00::1\",\n  \"bob fd00::2\"]\n",
        "t.toml",
    )
    .unwrap();
    assert_eq!(c.names.file, PathBuf::from("/tmp/names"));
    assert_eq!(c.names.local.len(), 2);
    assert_eq!(c.names.local.get("bob.gn.alt").unwrap().origin, "t.toml:4");
    let e = bad("[names]\nlocal = [\"alice 2001:db8::1\"]\n");
    assert_eq!((e.line, e.key.as_str()), (2, "names.local"), "{e}");
    let e = bad("[names]\nfile = \"names\"\n");
    assert_eq!(e.key, "names.file");
    let c = Config::parse("[names]\nfile = \"/nonexistent/names\"\n", "t").unwrap();
    assert!(c.petnames().unwrap().is_empty());
    let c = Config::parse("[names]\nfile = \"/\"\n", "t").unwrap();
    assert!(c.petnames().unwrap_err().to_string().starts_with("/:"));
}

#[test]
fn missing_file_says_what_to_do() {
    let e = Config::load(Path::new("/nonexistent/globalnet.toml")).unwrap_err();
    assert!(e.to_string().contains("config.example.toml"), "{e}");
}

proptest::proptest! {
    #[test]
    fn parser_never_panics(text in "\\PC{0,300}") {
        let _ = Config::parse(&text, "fuzz.toml");
    }

    #[test]
    fn parser_never_panics_on_near_valid(lines in proptest::collection::vec(
        proptest::sample::select(vec![
            "[tun]", "[network]", "[expose]", "[paths]", "mtu = 1280", "mtu = -1",
            "name = \"\"", "listen = [\"1.2.3.4:5\"]", "tcp = [0]", "tcp = [1, 2]",
            "relay = 3", "user = \"\"", "state_dir = \"/\"", "x = 1", "= =", "\"",
        ]), 0..12)) {
        let _ = Config::parse(&lines.join("\n"), "fuzz.toml");
    }
}

#[test]
fn bootstrap_takes_host_names() {
    let c = Config::parse(
        "[network]\nbootstrap = [\"Seed.Example.NET:7412\", \"198.18.0.1:7412\", \"[2001:db8::1]:9\"]\n",
        "t.toml",
    )
    .unwrap();
    assert_eq!(
        c.network.bootstrap,
        vec![
            PeerAddr::Name {
                host: "seed.example.net".into(),
                port: 7412
            },
            PeerAddr::Addr("198.18.0.1:7412".parse().unwrap()),
            PeerAddr::Addr("[2001:db8::1]:9".parse().unwrap()),
        ]
    );
    assert_eq!(c.network.bootstrap[0].to_string(), "seed.example.net:7412");
    for bad_entry in [
        "\"seed.example.net\"",
        "\"seed_x.example:7412\"",
        "\"1.2.3:7412\"",
        "\"-a.example:7412\"",
        "\"seed.example.net:0\"",
        "\"seed.example.net:70000\"",
        "\"a.example:1\", \"A.example:1\"",
    ] {
        let e = Config::parse(&format!("[network]\nbootstrap = [{bad_entry}]\n"), "t.toml")
            .unwrap_err();
        assert_eq!(e.key, "network.bootstrap", "{bad_entry}: {e}");
    }
}

#[test]
fn advertise_lists_reachable_endpoints() {
    assert!(Config::default().network.advertise.is_empty());
    let c = Config::parse(
        "[network]\nadvertise = [\"203.0.113.7:7412\", \"[2001:db8::7]:7412\"]\n",
        "t",
    )
    .unwrap();
    assert_eq!(c.network.advertise.len(), 2);
    for bad_entry in ["\"0.0.0.0:7412\"", "\"203.0.113.7\"", "\"203.0.113.7:0\""] {
        let e = bad(&format!("[network]\nadvertise = [{bad_entry}]\n"));
        assert_eq!((e.line, e.key.as_str()), (2, "network.advertise"), "{e}");
    }
    let e = bad("[network]\nadvertise = [\"203.0.113.7:1\", \"203.0.113.7:1\"]\n");
    assert!(e.message.contains("twice"), "{e}");
}

#[test]
fn send_thread_is_off_unless_set() {
    let c = Config::parse("", "t").unwrap();
    assert!(!c.network.send_thread);
    let c = Config::parse("[network]\nsend_thread = true\n", "t").unwrap();
    assert!(c.network.send_thread);
    let c = Config::parse("[network]\nsend_thread = false\n", "t").unwrap();
    assert!(!c.network.send_thread);
    let e = bad("[network]\n\nsend_thread = 2\n");
    assert_eq!((e.line, e.key.as_str()), (3, "network.send_thread"), "{e}");
}
