//! Proof-of-work benchmark (issue #19 item 3, protocol.md 10.12): how long one client takes to
//! solve an introduction's puzzle at each effort, on one core, with the same code the daemon
//! runs on its blocking pool ([`SolveRequest::solve`]).
//!
//! ```text
//! powbench [--samples N]
//!     prints `pow effort=E samples=N mean_ms=.. min_ms=.. max_ms=.. mhash_s=..` per effort
//! ```
//!
//! The search is geometric (one hash in E passes), so single solves vary by several times; the
//! mean over N independent puzzles (random `E_c` and start nonce, OS generator) is the figure.
//! Build it in release (`scripts/bench-hostile` does) for what a client pays.

use std::time::Instant;

use globalnet::session::intro_pow::SolveRequest;
use rand::rngs::OsRng;
use rand::RngCore;

fn main() {
    let mut samples = 8u32;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--samples" {
            samples = args.next().and_then(|v| v.parse().ok()).unwrap_or(samples);
        }
    }
    let mut rng = OsRng;
    for effort in [1_000u32, 1 << 16, 1 << 20, 1 << 22, 1 << 24] {
        let (mut total, mut min, mut max) = (0f64, f64::MAX, 0f64);
        for _ in 0..samples {
            let mut req = SolveRequest {
                token: 0,
                seed: [0; 16],
                auth_key: [0; 32],
                e_c: [0; 32],
                effort,
                start: rng.next_u64(),
            };
            rng.fill_bytes(&mut req.seed);
            rng.fill_bytes(&mut req.auth_key);
            rng.fill_bytes(&mut req.e_c);
            let t = Instant::now();
            let found = req.solve().is_some();
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            assert!(found, "no nonce found");
            total += ms;
            min = min.min(ms);
            max = max.max(ms);
        }
        let mean = total / f64::from(samples);
        println!(
            "pow effort={effort} samples={samples} mean_ms={mean:.1} min_ms={min:.1} max_ms={max:.1} \
             mhash_s={:.2}",
            f64::from(effort) / mean / 1000.0
        );
    }
}
