//! The three descriptions of the config cannot drift apart: the keys the parser accepts, the keys
//! `config.example.toml` shows (set or commented out) and the keys `globalnet.conf(5)` documents
//! must be the same, and the defaults and ranges the man page states must be the parser's.
//!
//! The parser's keys come from the parser itself: every table refuses unknown keys, and serde's
//! "unknown field `x`, expected one of ..." lists the table's fields. Probing each field as a table
//! tells the tables from the keys, so a new key or table needs no change here.

use globalnet::config::Config;
use std::collections::BTreeSet;

const EXAMPLE: &str = include_str!("../config.example.toml");
const MAN_PAGE: &str = include_str!("../packaging/globalnet.conf.5");
const PROBE: &str = "zz_not_a_key";

/// A dotted key: `state_dir`, `tun.mtu`.
fn dotted(table: &str, key: &str) -> String {
    if table.is_empty() {
        key.to_string()
    } else {
        format!("{table}.{key}")
    }
}

/// The fields of the table at `path` ("" for the top level), or None when `path` is not a table.
fn table_fields(path: &str) -> Option<Vec<String>> {
    let headers: Vec<String> = if path.is_empty() {
        vec![String::new()]
    } else {
        vec![format!("[{path}]\n"), format!("[[{path}]]\n")]
    };
    for header in headers {
        let text = format!("{header}{PROBE} = 1\n");
        match Config::parse(&text, "probe.toml") {
            Ok(_) => panic!(
                "table `{path}` accepted the unknown key `{PROBE}`: give its struct #[serde(deny_unknown_fields)]"
            ),
            Err(e) if e.message.starts_with(&format!("unknown field `{PROBE}`")) => {
                let expected = e.message.split_once("expected").map_or("", |(_, rest)| rest);
                let fields: Vec<String> = expected
                    .split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_string)
                    .collect();
                assert!(
                    !fields.is_empty(),
                    "cannot read the fields of `{path}` from: {}",
                    e.message
                );
                return Some(fields);
            }
            Err(_) => {}
        }
    }
    None
}

/// Every key the parser accepts, dotted, and every table.
fn parser_keys() -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut keys, mut tables) = (BTreeSet::new(), BTreeSet::new());
    let mut todo = vec![String::new()];
    while let Some(table) = todo.pop() {
        let fields = table_fields(&table)
            .unwrap_or_else(|| panic!("no field list in the parser's error for `{table}`"));
        for field in fields {
            let path = dotted(&table, &field);
            if table_fields(&path).is_some() {
                tables.insert(path.clone());
                todo.push(path);
            } else {
                keys.insert(path);
            }
        }
    }
    // A sanity floor, so a change of serde's message cannot make every comparison vacuous.
    for known in ["state_dir", "tun.mtu", "network.listen", "expose.tcp"] {
        assert!(keys.contains(known), "probe missed `{known}`: {keys:?}");
    }
    (keys, tables)
}

fn is_key_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Keys of `config.example.toml`: `key = value` lines and commented-out `# key = value` lines,
/// under the last `[table]` (or `# [table]`) header above them.
fn example_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut table = String::new();
    for line in EXAMPLE.lines() {
        let line = line.trim();
        let body = line.strip_prefix('#').map_or(line, str::trim);
        if body.starts_with('[') && body.ends_with(']') {
            table = body
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string();
            continue;
        }
        if let Some((key, _)) = body.split_once('=') {
            let key = key.trim();
            if is_key_name(key) {
                keys.insert(dotted(&table, key));
            }
        }
    }
    keys
}

/// Undoes the roff escapes the man page uses.
fn unescape(s: &str) -> String {
    s.replace("\\(dq", "\"")
        .replace("\\(em", "-")
        .replace("\\-", "-")
        .replace("\\%", "")
        .replace("\\fB", "")
        .replace("\\fI", "")
        .replace("\\fR", "")
        .replace("\\fP", "")
        .replace("\\e", "\\")
}

/// The words of a macro line: `.BI "a = " b` gives ["a = ", "b"].
fn macro_args(args: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = args.trim();
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            out.push(quoted[..end].to_string());
            rest = quoted.get(end + 1..).unwrap_or("").trim_start();
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            out.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
    }
    out
}

/// The text one roff line puts on the page (font changes dropped).
fn roff_text(line: &str) -> String {
    let Some(request) = line.strip_prefix('.') else {
        return unescape(line);
    };
    let (name, args) = request.split_once(' ').unwrap_or((request, ""));
    let args = macro_args(args);
    let text = match name {
        "B" | "I" => args.join(" "),
        "BR" | "RB" | "BI" | "IB" | "IR" | "RI" => args.concat(),
        _ => String::new(),
    };
    unescape(&text)
}

/// A key paragraph of the man page: its table, its key and its text.
struct ManEntry {
    table: String,
    key: String,
    text: String,
}

/// The key paragraphs of the man page (a `.TP` whose tag starts with the key, under
/// `.SH TOP-LEVEL KEYS` or a `.SH` naming a `[table]`), the tables it has sections for, and the
/// TOML of its EXAMPLES.
fn man_page() -> (Vec<ManEntry>, BTreeSet<String>, Vec<String>) {
    let (mut entries, mut tables, mut examples) = (Vec::<ManEntry>::new(), BTreeSet::new(), vec![]);
    let mut section: Option<String> = None;
    let mut in_examples = false;
    let mut example: Option<String> = None;
    let mut tag_next = false;
    let mut in_entry = false;
    for line in MAN_PAGE.lines() {
        if line.starts_with(".\\\"") {
            continue;
        }
        if let Some(header) = line.strip_prefix(".SH ") {
            let header = header.trim_matches('"');
            section = match (header.find('['), header.find(']')) {
                (Some(a), Some(b)) if a < b => {
                    // `[name]` for a table, `[[name]]` for an array of tables.
                    let table = header[a + 1..b].trim_start_matches('[').to_string();
                    tables.insert(table.clone());
                    Some(table)
                }
                _ if header.contains("TOP-LEVEL") => Some(String::new()),
                _ => None,
            };
            in_examples = header == "EXAMPLES";
            in_entry = false;
            continue;
        }
        if in_examples {
            match (line, example.as_mut()) {
                (".EX", _) => example = Some(String::new()),
                (".EE", Some(_)) => examples.extend(example.take()),
                (_, Some(text)) => {
                    text.push_str(&unescape(line));
                    text.push('\n');
                }
                _ => {}
            }
            continue;
        }
        let Some(table) = &section else { continue };
        if line == ".TP" {
            tag_next = true;
            in_entry = false;
        } else if tag_next {
            tag_next = false;
            let tag = roff_text(line);
            let key: String = tag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                is_key_name(&key),
                "man page: tag `{tag}` does not start with a key"
            );
            entries.push(ManEntry {
                table: table.clone(),
                key,
                text: String::new(),
            });
            in_entry = true;
        } else if in_entry {
            if let Some(entry) = entries.last_mut() {
                entry.text.push_str(&roff_text(line));
                entry.text.push(' ');
            }
        }
    }
    // Shell sessions (`$ globalnet check ...`) are not config files.
    examples.retain(|e| !e.trim_start().starts_with('$'));
    (entries, tables, examples)
}

fn man_keys() -> BTreeSet<String> {
    let (entries, _, _) = man_page();
    let mut keys = BTreeSet::new();
    for e in &entries {
        let key = dotted(&e.table, &e.key);
        assert!(keys.insert(key.clone()), "man page documents `{key}` twice");
    }
    keys
}

/// Fails naming what one document lacks and what it names that the parser does not know.
fn assert_same_keys(document: &str, documented: &BTreeSet<String>, parser: &BTreeSet<String>) {
    let missing: Vec<_> = parser.difference(documented).collect();
    let unknown: Vec<_> = documented.difference(parser).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "{document} and the parser disagree.\n  keys of the parser missing from {document}: {missing:?}\n  \
         keys in {document} the parser does not know: {unknown:?}"
    );
}

#[test]
fn example_config_names_every_key_of_the_parser() {
    let (parser, _) = parser_keys();
    assert_same_keys("config.example.toml", &example_keys(), &parser);
}

#[test]
fn man_page_names_every_key_of_the_parser() {
    let (parser, parser_tables) = parser_keys();
    assert_same_keys("packaging/globalnet.conf.5", &man_keys(), &parser);
    let (_, man_tables, _) = man_page();
    assert_eq!(
        man_tables, parser_tables,
        "the man page's [table] sections are not the parser's tables"
    );
}

#[test]
fn example_config_shows_the_defaults() {
    let c = Config::parse(EXAMPLE, "config.example.toml").unwrap();
    assert_eq!(
        c,
        Config::default(),
        "config.example.toml sets a value that is not the default"
    );
}

/// `text` with `table`'s header in front.
fn in_table(table: &str, line: &str) -> String {
    if table.is_empty() {
        format!("{line}\n")
    } else {
        format!("[{table}]\n{line}\n")
    }
}

#[test]
fn man_page_defaults_and_ranges_are_the_parsers() {
    let (entries, _, _) = man_page();
    let default = Config::default();
    for e in &entries {
        let key = dotted(&e.table, &e.key);
        let Some((_, after)) = e.text.split_once("Default:") else {
            panic!("man page: `{key}` states no default");
        };
        let value = after
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_end_matches(['.', ',', ';']);
        if value != "unset" {
            let text = in_table(&e.table, &format!("{} = {value}", e.key));
            let mut c = Config::parse(&text, "man page")
                .unwrap_or_else(|err| panic!("man page: default of `{key}`: {err}"));
            // `relay` has no fixed default: it is documented as what a node without [expose] gets.
            if c.network.relay == Some(default.relay_enabled()) {
                c.network.relay = None;
            }
            assert_eq!(c, default, "man page: `{key}` = {value} is not the default");
        }

        // "Integer, 1 to 64." and "List of integers, 1 to 65535.": both ends are valid, one
        // beyond either is not.
        let range = ["Integer, ", "integers, "]
            .iter()
            .find_map(|p| e.text.split_once(p).map(|(_, r)| r));
        if let Some(range) = range {
            let words: Vec<&str> = range.split_whitespace().take(3).collect();
            let (lo, hi) = match words.as_slice() {
                [lo, "to", hi] => (
                    lo.parse::<i64>().unwrap(),
                    hi.trim_end_matches(['.', ',', ';']).parse::<i64>().unwrap(),
                ),
                _ => panic!("man page: `{key}`: cannot read the range in `{range}`"),
            };
            let list = e.text.contains("List of integers");
            let line = |n: i64| {
                let v = if list {
                    format!("[{n}]")
                } else {
                    n.to_string()
                };
                in_table(&e.table, &format!("{} = {v}", e.key))
            };
            for n in [lo, hi] {
                if let Err(err) = Config::parse(&line(n), "man page") {
                    panic!("man page: `{key}` range {lo} to {hi}, but {n} is refused: {err}");
                }
            }
            for n in [lo - 1, hi + 1] {
                assert!(
                    Config::parse(&line(n), "man page").is_err(),
                    "man page: `{key}` range {lo} to {hi}, but {n} is accepted"
                );
            }
        }
    }
}

#[test]
fn man_page_examples_are_valid() {
    let (_, _, examples) = man_page();
    assert!(!examples.is_empty(), "the man page has no EXAMPLES");
    for example in &examples {
        if let Err(e) = Config::parse(example, "man page example") {
            panic!("an EXAMPLES config of the man page is invalid: {e}\n{example}");
        }
    }
}
