//! Exit policy records (protocol.md 5.5), EXIT_POLICY_REQUEST payloads (4.4) and the exit's
//! per-packet check: any bytes are a verified record, a list of identities, a verdict, or an error.
#![no_main]
use globalnet::exit::policy::ExitPolicy;
use globalnet::wire::exit_policy::{parse_policy_request, ExitPolicyRecord};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ExitPolicyRecord::parse(data, 1_800_000_000_000);
    if let Ok(ids) = parse_policy_request(data) {
        assert!((1..=4).contains(&ids.len()) && data.len() == 2 + 32 * ids.len());
    }
    let policy = ExitPolicy::new(&[80, 443], &[]);
    let _ = policy.check_packet(data);
});
