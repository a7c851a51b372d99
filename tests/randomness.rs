//! Secrets come from the operating system, not from a seed (docs/threat-model.md, "Randomness";
//! issue 18 item 1).
//!
//! - Two nodes built with the same choice seed make the same non-secret choices (circuit ids)
//!   but different handshake ephemerals.
//! - A source scan: no generator is seeded from a `u64` (or is a `SmallRng`) outside the
//!   simulator and test modules, the seeded secret generator is named only by the simulator, and
//!   the daemon's code never reaches the simulator.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use globalnet::budget::MemoryBudget;
use globalnet::circuit::layer::{CircAction, CircuitLayer, Purpose};
use globalnet::circuit::OnionKey;
use globalnet::crypto::Randomness;
use globalnet::link::{LinkConfig, LinkId, LinkKeys, LinkLayer};
use globalnet::node::Node;
use globalnet::time::Instant;
use globalnet::wire::cell::{CELL_HEADER_LEN, CELL_LEN};
use globalnet::wire::handshake::{CreateHandshake, CREATE_HS_LEN};
use globalnet::wire::record::{NatClass, RecordFields, RelayRecord};
use x25519_dalek::{PublicKey, StaticSecret};

const NOW: u64 = 1_800_000_000_000;

fn relay_record(seed: u8) -> RelayRecord {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let onion = PublicKey::from(&StaticSecret::from([seed.wrapping_add(1); 32])).to_bytes();
    let link = PublicKey::from(&StaticSecret::from([seed.wrapping_add(2); 32])).to_bytes();
    RelayRecord::sign(
        &key,
        RecordFields {
            flags: 0,
            nat: NatClass::Public,
            link_key: link,
            onion_key: onion,
            seq: NOW,
            expires: NOW / 1000 + 3600,
            endpoints: vec!["198.18.0.9:7412".parse().unwrap()],
            introducers: vec![],
        },
    )
    .unwrap()
}

/// Builds one circuit to `first` on `circ` and returns the (circuit id, client ephemeral) of
/// the CREATE cell it sends.
fn first_create(circ: &mut CircuitLayer, first: &RelayRecord) -> (u32, [u8; 32]) {
    let link = LinkId(1);
    circ.on_link_up(
        Instant::from_unix_ms(NOW),
        link,
        Some(*first.identity()),
        [1; 32],
        first.fields().link_key,
    );
    circ.build(
        Instant::from_unix_ms(NOW),
        Purpose::Pool,
        vec![first.clone()],
        Some(link),
    )
    .unwrap();
    loop {
        match circ.poll_action() {
            Some(CircAction::SendCell { cell, .. }) => {
                let cell: [u8; CELL_LEN] = cell;
                let circ_id = u32::from_be_bytes(cell[..4].try_into().unwrap());
                let hs = CreateHandshake::new_checked(
                    &cell[CELL_HEADER_LEN..CELL_HEADER_LEN + CREATE_HS_LEN],
                )
                .unwrap();
                return (circ_id, hs.client_key());
            }
            Some(_) => continue,
            None => panic!("no CREATE cell"),
        }
    }
}

fn node(choice_seed: [u8; 32]) -> Node {
    let keys = LinkKeys {
        identity: SigningKey::from_bytes(&[5; 32]),
        link: StaticSecret::from([6; 32]),
        onion_public: PublicKey::from(&StaticSecret::from([7; 32])).to_bytes(),
    };
    let link = LinkLayer::new(
        LinkConfig::default(),
        keys,
        MemoryBudget::new(1 << 24),
        Randomness::with_choice_seed(choice_seed),
        Instant::from_unix_ms(NOW),
    );
    Node::new(
        link,
        OnionKey::from_secret(StaticSecret::from([7; 32])),
        Randomness::with_choice_seed(choice_seed),
        Instant::from_unix_ms(NOW),
    )
}

#[test]
fn same_seed_same_choices_different_ephemerals() {
    let first = relay_record(40);
    let mut a = node([3; 32]);
    let mut b = node([3; 32]);
    assert!(a.secrets_from_os() && b.secrets_from_os());
    let (id_a, x_a) = first_create(&mut a.circ, &first);
    let (id_b, x_b) = first_create(&mut b.circ, &first);
    // The seed still fixes the choices (this is what keeps simulations repeatable)...
    assert_eq!(id_a, id_b, "circuit ids are choices and follow the seed");
    // ...but no secret.
    assert_ne!(x_a, x_b, "client ephemerals must not follow the seed");
    // And a second circuit of the same node gets yet another one.
    let (_, x_a2) = first_create(&mut a.circ, &first);
    assert_ne!(x_a, x_a2);
}

#[test]
fn os_randomness_differs_per_node() {
    let first = relay_record(41);
    let mut a = CircuitLayer::new(
        [1; 32],
        OnionKey::from_secret(StaticSecret::from([2; 32])),
        false,
        MemoryBudget::new(1 << 24),
        Randomness::from_os(),
        Instant::from_unix_ms(NOW),
    );
    let mut b = CircuitLayer::new(
        [1; 32],
        OnionKey::from_secret(StaticSecret::from([2; 32])),
        false,
        MemoryBudget::new(1 << 24),
        Randomness::from_os(),
        Instant::from_unix_ms(NOW),
    );
    assert!(a.secrets_from_os());
    assert_ne!(
        first_create(&mut a, &first).1,
        first_create(&mut b, &first).1
    );
}

// ---- the source scan ----------------------------------------------------------------------

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Removes comments and the contents of string and char literals, keeping line breaks, so that
/// braces and names in them are not counted.
fn code_only(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == '*' && b[i + 1] == '/') {
                if b[i] == '\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 2;
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !prev_ident(&b, i) {
            // Raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                if b[j] == '\n' {
                    out.push('\n');
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                if b.get(i) == Some(&'\n') {
                    out.push('\n');
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if next == Some('\\') {
                let mut j = i + 2;
                while j < b.len() && b[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
                out.push_str("' '");
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push_str("' '");
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn prev_ident(b: &[char], i: usize) -> bool {
    i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_')
}

/// The code of a file outside its `#[cfg(test)]` items (a module or function: the attribute, the
/// item's header and its braced body).
fn non_test_code(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        // `mod name;` (a file of tests) or an item with a body.
        let semi = after.find(';');
        let open = after.find('{');
        match (open, semi) {
            (Some(o), Some(s)) if s < o => {
                rest = &after[s + 1..];
            }
            (Some(o), _) => {
                let mut depth = 0usize;
                let mut end = after.len();
                for (k, ch) in after[o..].char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = o + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &after[end..];
            }
            _ => rest = "",
        }
    }
    out.push_str(rest);
    out
}

/// Files declared as `#[cfg(test)] mod name;`: wholly test code.
fn test_files(src: &Path, files: &[PathBuf]) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for f in files {
        let code = code_only(&std::fs::read_to_string(f).unwrap());
        let mut rest = code.as_str();
        while let Some(at) = rest.find("#[cfg(test)]") {
            let after = rest[at + "#[cfg(test)]".len()..].trim_start();
            if let Some(decl) = after.strip_prefix("mod ") {
                let name: String = decl
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let tail = decl[name.len()..].trim_start();
                if tail.starts_with(';') {
                    let dir = if f
                        .file_name()
                        .is_some_and(|n| n == "mod.rs" || n == "lib.rs")
                    {
                        f.parent().unwrap().to_path_buf()
                    } else {
                        f.with_extension("")
                    };
                    v.push(dir.join(format!("{name}.rs")));
                    v.push(dir.join(name).join("mod.rs"));
                }
            }
            rest = &rest[at + 1..];
        }
    }
    let _ = src;
    v
}

#[test]
fn no_seeded_generator_outside_the_simulator_and_tests() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 20, "the scan found the sources");
    let tests_only = test_files(&src, &files);
    let rel = |f: &Path| f.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
    let mut bad = Vec::new();
    for f in &files {
        if tests_only.contains(f) {
            continue;
        }
        let name = rel(f);
        let code = non_test_code(&code_only(&std::fs::read_to_string(f).unwrap()));
        // The simulator is `sim.rs` and its scenarios under `sim/`.
        let sim = name == "sim.rs" || name.starts_with("sim/");
        let rng_module = name == "crypto/rng.rs";
        for (needle, allowed) in [
            // A generator seeded from 64 bits (or a non-cryptographic one) anywhere a node runs.
            ("seed_from_u64", sim),
            ("SmallRng", false),
            // The seeded secret generator: only the simulator asks for it.
            ("simulated(", sim || rng_module),
            ("Source::Simulated", rng_module),
            // Every layer's choice generator is made in one place, from a 256-bit seed.
            ("Rng::from_seed(", rng_module),
            ("SeedableRng", sim || rng_module),
        ] {
            if !allowed && code.contains(needle) {
                bad.push(format!("{name}: {needle}"));
            }
        }
        // The daemon's path never reaches the simulator (so never its seeded secrets).
        let daemon_path = [
            "daemon.rs",
            "main.rs",
            "cli/mod.rs",
            "demo.rs",
            "control/mod.rs",
        ];
        if daemon_path.contains(&name.as_str())
            && (code.contains("sim::") || code.contains("Sim::") || code.contains("crate::sim"))
        {
            bad.push(format!("{name}: reaches the simulator"));
        }
    }
    assert!(
        bad.is_empty(),
        "seeded randomness outside the simulator: {bad:#?}"
    );
}

#[test]
fn the_scan_sees_test_modules_and_comments() {
    let code = code_only(
        "fn a() { let s = \"seed_from_u64 { \"; } // seed_from_u64\n\
         #[cfg(test)]\nmod tests { fn b() { StdRng::seed_from_u64(1); if x { '{'; } } }\n\
         fn c<'a>(x: &'a u8) { seed_from_u64 }\n",
    );
    let kept = non_test_code(&code);
    assert!(!kept.contains("StdRng"), "the test module is cut: {kept}");
    assert!(
        kept.contains("fn c"),
        "code after the test module is kept: {kept}"
    );
    assert_eq!(kept.matches("seed_from_u64").count(), 1, "{kept}");
}
