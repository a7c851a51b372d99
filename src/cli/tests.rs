use super::*;
use crate::control::proto::ServiceAnswer;
use clap::CommandFactory;

#[test]
fn cli_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn table_aligns() {
    let t = table(
        &["A", "BB"],
        &[
            vec!["long".into(), "x".into()],
            vec!["s".into(), "yy".into()],
        ],
    );
    assert_eq!(t, "A     BB\nlong  x\ns     yy\n");
}

#[test]
fn services_table() {
    let v: Vec<ServiceAnswer> = serde_json::from_value(serde_json::json!([{
        "name": "default", "address": "fd00::1", "tcp": [22, 80], "udp": [],
        "intro_points": ["a", "b", "c"], "descriptor_age_s": 75
    }, {
        "address": "fd00::2", "tcp": [], "udp": [53],
        "intro_points": [], "descriptor_age_s": null,
        "intro_missing": "0 of 3 intro points: no eligible relay (path: no RENDEZVOUS relay)"
    }]))
    .unwrap();
    let t = print_services(&v);
    assert!(
        t.contains("default  fd00::1  22,80  -    3             1m 15s"),
        "{t}"
    );
    assert!(t.contains("not published yet"), "{t}");
    assert!(t.contains("\n-        fd00::2"), "{t}");
    assert!(
        t.contains("fd00::2: 0 of 3 intro points: no eligible relay"),
        "{t}"
    );
    assert!(print_services(&[]).contains("[[service]]"));
}

#[test]
fn ping_refuses_bad_addresses_before_asking_the_daemon() {
    for bad in ["example.com", "2001:db8::1"] {
        let cli = Cli::try_parse_from(["globalnet", "ping", bad]).unwrap();
        let Command::Ping(args) = cli.command else {
            panic!()
        };
        assert!(matches!(ping(&args), Err(Failure::Usage(_))));
    }
}

#[test]
fn durations() {
    assert_eq!(duration(5), "5s");
    assert_eq!(duration(63), "1m 3s");
    assert_eq!(duration(7300), "2h 1m");
    assert_eq!(duration(90000), "1d 1h");
}
