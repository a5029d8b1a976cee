//! The binary's `roles/` wire library crates together, and no role's files use another
//! role's crate: only `roles/router.rs` uses the router's (`streamcdn_router`), only
//! `roles/cis.rs` the federation's, only the edge's files the edge's, and so on.
//! The edge side measures with `streamcdn_probe_agent`, speaks the probe wire format of
//! `streamcdn_routing` and signs with `streamcdn_access::deployment`.

use std::fs;
use std::path::Path;

/// A role's own library crate and the files of `roles/` that may use it: each role's
/// wiring uses its own, never another role's.
const ROLE_CRATES: &[(&str, &[&str])] = &[
    ("streamcdn_router", &["router.rs"]),
    ("streamcdn_federation", &["cis.rs"]),
    ("streamcdn_ingest", &["ingest.rs"]),
    ("streamcdn_archiver", &["archiver.rs"]),
    // The edge role: its cache, its signed playback and its measuring agent.
    ("streamcdn_edge", &["edge.rs", "playback_access.rs"]),
    ("streamcdn_probe_agent", &["edge.rs"]),
];

/// `file:line` of every use of a role crate that `file` may not use. Comment lines and
/// longer names (metrics such as `streamcdn_router_probes_total`) do not count.
fn violations(file: &str, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (krate, owners) in ROLE_CRATES {
        if owners.contains(&file) {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            let named = line.match_indices(krate).any(|(at, _)| {
                let before = line[..at].chars().next_back();
                let after = line[at + krate.len()..].chars().next();
                let part_of_name =
                    |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                !part_of_name(before) && !part_of_name(after)
            });
            if named {
                found.push(format!("roles/{file}:{}: uses {krate}", n + 1));
            }
        }
    }
    found
}

#[test]
fn no_role_file_uses_another_roles_service_crate() {
    let roles = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/roles");
    let mut found = Vec::new();
    let mut files = 0;
    for entry in fs::read_dir(&roles).expect("src/roles is readable") {
        let path = entry.expect("a directory entry").path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !name.ends_with(".rs") {
            continue;
        }
        files += 1;
        let text = fs::read_to_string(&path).expect("a readable source file");
        found.extend(violations(name, &text));
    }
    assert!(files > 1, "no role files in {}", roles.display());
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn an_edge_file_using_the_router_crate_is_caught() {
    let edge =
        "use streamcdn_router::probe::ProbeKey;\nfn f() { streamcdn_router::service::x(); }\n";
    assert_eq!(
        violations("edge.rs", edge),
        [
            "roles/edge.rs:1: uses streamcdn_router",
            "roles/edge.rs:2: uses streamcdn_router"
        ]
    );
    let fine = "// streamcdn_router is the router's\nlet m = \"streamcdn_router_probes_total\";\nuse streamcdn_routing::probe;\n";
    assert!(violations("edge.rs", fine).is_empty());
    assert!(violations("router.rs", edge).is_empty());
    let ingest_reaching_into_the_cis = "use streamcdn_federation::call::client;\n";
    assert_eq!(
        violations("ingest.rs", ingest_reaching_into_the_cis),
        ["roles/ingest.rs:1: uses streamcdn_federation"]
    );
}
