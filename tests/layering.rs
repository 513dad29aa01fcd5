//! The server crate's layers, checked from its `crate::` paths.
//!
//! Each top-level module of `src/` sits on one layer; a module may use its own layer's
//! shared parts and the layers below, never one above (the application state `app`
//! included), and one product never reaches into another. `tests/layering.allow` lists
//! arrows allowed to break this (none since the renovation, #23); this test fails on a
//! new one, and on a listed one that is gone (so the list stays true).
//!
//! `cargo test --test layering -- --nocapture` prints the module graph.
#![allow(
    clippy::unwrap_used,
    reason = "a test or bench fails loudly on a broken fixture or server"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Layers from the top. Products sit on one layer and must not use each other.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "assembly",
        &[
            "main",
            "cli",
            "client",
            "app",
            "server",
            "http",
            "extract",
            "worker",
            "bootstrap",
        ],
    ),
    (
        // Transports that carry the products' sessions (WebRTC carries ScaiEcho's and
        // ScaiSpeak's streams): they use products, never the application state.
        "transports",
        &["webrtc", "realtime"],
    ),
    (
        "products",
        &[
            "gateway",
            "instances",
            "scaiecho",
            "scaispeak",
            "webhooks",
            "console",
        ],
    ),
    (
        "shared",
        &[
            "speech",
            "inference",
            "services",
            "firewall",
            "accounting",
            "ratelimit",
            "auth",
            "jobs",
            "slots",
            "ws",
            "cluster",
            "telemetry",
        ],
    ),
    (
        // Storage, configuration, errors and the pure models under everything.
        "base",
        &[
            "rbac",
            "db",
            "store",
            "vault",
            "config",
            "error",
            "records",
            "memory",
            "net",
            "request_id",
            "trace_context",
            "test_support",
        ],
    ),
];

fn layer_of(module: &str) -> Option<(usize, &'static str)> {
    LAYERS
        .iter()
        .enumerate()
        .find(|(_, (_, modules))| modules.contains(&module))
        .map(|(index, (name, _))| (index, *name))
}

/// The top-level module a file of `src/` belongs to (`None`: `lib.rs`).
fn module_of(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib").then(|| name.to_owned())
}

/// Code without comments (string contents are kept: `crate::` rarely appears in them).
fn strip_comments(source: &str) -> String {
    source
        .lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules named by every `crate::` path, grouped ones included
/// (`crate::{a::B, c}`).
fn used_modules(code: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let preceded = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$');
        rest = &rest[at + "crate::".len()..];
        if preceded {
            continue;
        }
        match rest.strip_prefix('{') {
            Some(group) => {
                let mut depth = 0usize;
                let mut start = true;
                for (index, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => start = true,
                        c if start && (c.is_alphabetic() || c == '_') => {
                            used.insert(identifier(&group[index..]));
                            start = false;
                        }
                        c if !c.is_whitespace() => start = false,
                        _ => {}
                    }
                }
            }
            None => {
                let name = identifier(rest);
                if !name.is_empty() {
                    used.insert(name);
                }
            }
        }
    }
    used
}

fn identifier(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// module → the modules it uses.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(file.strip_prefix(src).unwrap()) else {
            continue;
        };
        let code = strip_comments(&std::fs::read_to_string(&file).unwrap());
        let uses = graph.entry(module.clone()).or_default();
        uses.extend(
            used_modules(&code)
                .into_iter()
                .filter(|used| *used != module),
        );
    }
    graph
}

/// The arrows that break the layering: `from -> to`.
fn breaches(graph: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (from, uses) in graph {
        let from_layer =
            layer_of(from).unwrap_or_else(|| panic!("src/{from} is on no layer: add it to LAYERS"));
        for to in uses {
            let Some(to_layer) = layer_of(to) else {
                panic!("src/{to} (used by {from}) is on no layer: add it to LAYERS");
            };
            let upward = to_layer.0 < from_layer.0;
            let sideways_product = to_layer.1 == "products" && from_layer.1 == "products";
            if upward || sideways_product {
                found.insert(format!("{from} -> {to}"));
            }
        }
    }
    found
}

#[test]
fn no_module_reaches_up_a_layer_or_into_another_product() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let graph = graph(&root.join("src"));
    for (index, (layer, modules)) in LAYERS.iter().enumerate() {
        println!("layer {index} {layer}:");
        for module in modules.iter().filter(|m| graph.contains_key(**m)) {
            let uses: Vec<&str> = graph[*module].iter().map(String::as_str).collect();
            println!("  {module} -> {}", uses.join(", "));
        }
    }
    let found = breaches(&graph);
    let allowed: BTreeSet<String> = std::fs::read_to_string(root.join("tests/layering.allow"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect();
    println!(
        "{} arrows break the layering (all listed in tests/layering.allow)",
        found.len()
    );
    let new: Vec<&String> = found.difference(&allowed).collect();
    let gone: Vec<&String> = allowed.difference(&found).collect();
    assert!(
        new.is_empty(),
        "new arrows against the layering (pass what is needed in as a trait or a handle \
         instead): {new:?}"
    );
    assert!(
        gone.is_empty(),
        "these arrows are gone: remove them from tests/layering.allow: {gone:?}"
    );
}

#[test]
fn crate_paths_are_read_in_every_form() {
    let code = "use crate::db::{self, Db};\nuse crate::{app::AppState, error::{ApiError, X}, \
                rbac};\nfn f() { crate::jobs::run(); my_crate::x(); }";
    let used: Vec<String> = used_modules(code).into_iter().collect();
    assert_eq!(used, ["app", "db", "error", "jobs", "rbac"]);
    assert!(
        strip_comments("let a = 1; // crate::app")
            .find("crate")
            .is_none()
    );
}

#[test]
fn breaches_are_upward_or_between_products() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.insert(
        "gateway".into(),
        ["db", "app", "webrtc"].map(String::from).into(),
    );
    graph.insert("http".into(), ["gateway", "db"].map(String::from).into());
    graph.insert("db".into(), ["config", "auth"].map(String::from).into());
    let found: Vec<String> = breaches(&graph).into_iter().collect();
    assert_eq!(found, ["db -> auth", "gateway -> app", "gateway -> webrtc"]);
}
