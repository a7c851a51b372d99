//! Exit policy records (protocol.md 5.5) and the exit's per-packet check: any bytes are a verified
//! record, a verdict, or an error.
#![no_main]
use globalnet::exit::policy::ExitPolicy;
use globalnet::wire::exit_policy::ExitPolicyRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ExitPolicyRecord::parse(data, 1_800_000_000_000);
    let policy = ExitPolicy::new(&[80, 443], &[]);
    let _ = policy.check_packet(data);
});
