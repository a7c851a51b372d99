//! Issue #7 with real daemons: a descriptor published by a hidden service is still found, and the
//! service reached through it, by a client that joins after 3 of the 8 relays died at once.

use std::time::{Duration, Instant};

use crate::harness::{globalnet_bin, shipped_listen, Host, Lab};

const READY: Duration = Duration::from_secs(10);

fn config(bootstrap: &[&Host], extra: &str) -> String {
    let boot: Vec<String> = bootstrap
        .iter()
        .map(|b| format!("\"{}:7412\"", b.ip))
        .collect();
    format!(
        "[network]\nlisten = {}\nbootstrap = [{}]\n[paths]\nipv4_subnet_family_prefix = 32\n{extra}",
        shipped_listen(),
        boot.join(", ")
    )
}

#[test]
fn descriptor_survives_three_of_eight_relays_dying() {
    let Some(mut lab) = Lab::new("dht") else {
        return;
    };
    let relays: Vec<Host> = (0..8).map(|i| lab.add_host(&format!("r{i}"))).collect();
    let mut daemons = Vec::new();
    for (i, h) in relays.iter().enumerate() {
        let boot: Vec<&Host> = if i == 0 { vec![] } else { vec![&relays[0]] };
        let cfg = lab.write_config(h, &config(&boot, ""));
        let d = lab.start_daemon(h, &cfg);
        lab.wait_ready(&d, READY);
        daemons.push(d);
    }
    // The service bootstraps from relays that will survive, like the client later.
    let svc = lab.add_host("svc");
    let cfg = lab.write_config(
        &svc,
        &config(&[&relays[6], &relays[7]], "[expose]\ntcp = [8080]\n"),
    );
    let service = lab.start_daemon(&svc, &cfg);
    let status = lab.wait_ready(&service, READY);
    let address = status["address"].as_str().unwrap().to_string();
    let token = format!("dht-token-{}", std::process::id());
    let log = lab.dir.join("web-requests.log");
    let log = log.to_str().unwrap().to_string();
    lab.spawn(
        &svc,
        "web",
        globalnet_bin(),
        &[
            "demo", "serve", "--port", "8080", "--token", &token, "--log", &log,
        ],
        None,
    );
    let t0 = Instant::now();
    lab.wait_for(
        "the service's descriptor to be published",
        Duration::from_secs(60),
        || {
            lab.query(&service, "services")
                .as_array()
                .and_then(|a| a.first().cloned())
                .is_some_and(|s| s["published"] == true)
        },
    );
    let published = t0.elapsed();

    // Three relays die at once (none of them the two the service and the client bootstrap from).
    for d in &daemons[1..4] {
        lab.stop(d, nix::sys::signal::Signal::SIGKILL, Duration::from_secs(5));
    }
    let killed = Instant::now();

    // A client that never saw the network before joins and fetches the token by the address.
    let cli = lab.add_host("cli");
    let cfg = lab.write_config(&cli, &config(&[&relays[6], &relays[7]], ""));
    let client = lab.start_daemon(&cli, &cfg);
    lab.wait_ready(&client, READY);
    let url = format!("http://[{address}]:8080/");
    let mut fetched = None;
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        let out = lab.sh(&cli, &format!("curl -sS -m 10 -g '{url}'"));
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&token) {
            fetched = Some(killed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "descriptor published {published:?} after the service started; after 3 of 8 relays died, \
         a new client fetched the token {fetched:?} after the deaths"
    );
    assert!(
        fetched.is_some(),
        "the new client never reached the service"
    );
}
