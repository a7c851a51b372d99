//! The config parser must turn any text into a Config or a ConfigError, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = globalnet::config::Config::parse(text, "fuzz.toml") {
            // Rendering the error (line/column arithmetic) must not panic either.
            let _ = e.to_string();
        }
    }
});
