//! The admin API's OpenAPI document (`GET /api/v1/openapi.json`,
//! `crates/streamcdn/src/openapi.json`) is true: it parses, it lists every admin route
//! the code has (`OPERATIONS`, and every `.route("/api/...")` literal in the workspace's
//! sources), any token reads it and the open routes are the documented ones, and
//! schemathesis (PyPI, pinned; scripts/test.sh installs it), run against a live
//! `streamcdn up` as the admin and as a provider's token, finds no server error, no
//! undocumented status, content type or header, and no response that breaks its schema.
//! `openapi_hooks.py` teaches schemathesis the CDNI media types. Seeded (`SEED`, printed)
//! and bounded: about 15 s.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The schemathesis release this test runs (scripts/test.sh installs it).
const SCHEMATHESIS: &str = "4.32.5";
const INSTALL: &str = "python3 -m pip install schemathesis==4.32.5";
/// Fixed, so a failure replays: `--seed` below.
const SEED: u64 = 8007;
const READER: &str = "openapi-reader-token-0001";
const DEMO: &str = "openapi-demo-token-000001";

/// The admin routes that need no token.
const OPEN: &[&str] = &["/", "/healthz", "/dashboard", "/dashboard/hls.min.js"];

/// Every admin route, as `METHOD path` in the document's terms.
const OPERATIONS: &[&str] = &[
    "GET /",
    "GET /healthz",
    "GET /dashboard",
    "GET /dashboard/hls.min.js",
    "GET /metrics",
    "GET /api/v1/openapi.json",
    "GET /api/v1/nodes",
    "POST /api/v1/drain",
    "GET /api/v1/deployment",
    "GET /api/v1/viewers",
    "GET /api/v1/streams",
    "GET /api/v1/recordings",
    "GET /api/v1/recordings/archived",
    "GET /api/v1/archive",
    "GET /api/v1/providers/{name}/settings",
    "PUT /api/v1/providers/{name}/settings",
    "GET /api/v1/providers/{name}/playback-keys",
    "PUT /api/v1/providers/{name}/playback-keys",
    "POST /api/v1/providers/{name}/signed-urls",
    "GET /api/v1/providers/{name}/stream-keys",
    "PUT /api/v1/providers/{name}/stream-keys/{stream}",
    "DELETE /api/v1/providers/{name}/stream-keys/{stream}",
    "GET /api/v1/routing/edges",
    "GET /api/v1/routing/map",
    "GET /api/v1/routing/explain",
    "GET /api/v1/federation",
    "GET /api/v1/triggers",
    "POST /api/v1/triggers",
    "GET /api/v1/triggers/pending",
    "GET /api/v1/triggers/active",
    "GET /api/v1/triggers/complete",
    "GET /api/v1/triggers/failed",
    "GET /api/v1/triggers/{id}",
    "DELETE /api/v1/triggers/{id}",
    "GET /api/v1/triggers/{id}/servers",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The paths of every `.route("/api/...", ...)` in the workspace's crates, and of every
/// route the admin listener itself adds (`crates/streamcdn/src/admin.rs`).
fn routes_in_sources() -> BTreeSet<String> {
    fn walk(dir: &Path, found: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (at, _) in text.match_indices(".route(") {
                    let rest = text[at + ".route(".len()..].trim_start();
                    let Some(literal) = rest.strip_prefix('"') else {
                        continue;
                    };
                    let route = &literal[..literal.find('"').unwrap()];
                    let admin_listener = path.ends_with("streamcdn/src/admin.rs");
                    if route.starts_with("/api/") || admin_listener {
                        found.insert(route.to_owned());
                    }
                }
            }
        }
    }
    let mut found = BTreeSet::new();
    for krate in std::fs::read_dir(workspace_root().join("crates")).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            walk(&src, &mut found);
        }
    }
    found
}

/// `method path` with a JSON `body` to the node's admin API, as the admin; the status.
fn send(node: &Node, method: &str, path: &str, content_type: &str, body: &str) -> u16 {
    let mut stream = std::net::TcpStream::connect((node.host.as_str(), node.admin)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        node.host,
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad answer {answer:?}"))
}

/// `python3 -m schemathesis.cli` at the pinned version, or the test fails saying how
/// to install it.
fn schemathesis() -> Command {
    let out = Command::new("python3")
        .args(["-m", "schemathesis.cli", "--version"])
        .output();
    let version = match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        _ => panic!("schemathesis {SCHEMATHESIS} is required: run scripts/test.sh, or `{INSTALL}`"),
    };
    assert!(
        version.trim_end().ends_with(SCHEMATHESIS),
        "schemathesis {SCHEMATHESIS} is required, found {version:?}: run scripts/test.sh, or `{INSTALL}`"
    );
    let mut command = Command::new("python3");
    command.args(["-m", "schemathesis.cli"]);
    command
}

/// Runs schemathesis on the node's document with `token`, `max_examples` per operation,
/// and fails the test on any failed check.
fn run_schemathesis(node: &Node, token: &str, max_examples: u32) {
    let url = format!("http://{}:{}/api/v1/openapi.json", node.host, node.admin);
    let checks = "not_a_server_error,status_code_conformance,content_type_conformance,\
                  response_schema_conformance,response_headers_conformance";
    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openapi_hooks.py");
    let work = temp_dir("openapi-schemathesis");
    let mut st = schemathesis();
    st.args(["run", &url])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--checks", checks])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", &max_examples.to_string()])
        .args(["--seed", &SEED.to_string()])
        .args(["--workers", "1"])
        .args(["--request-timeout", "10"])
        .args(["--generation-database", "none"])
        .args(["--no-color"])
        // It stops the server: checked by hand once the fuzzing is done.
        .args(["--exclude-path", "/api/v1/drain"])
        .env("SCHEMATHESIS_HOOKS", &hooks)
        .current_dir(&work)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let who = if token == ADMIN_TOKEN {
        "admin"
    } else {
        "provider"
    };
    eprintln!(
        "schemathesis {SCHEMATHESIS} as the {who}: --seed {SEED} --max-examples {max_examples}"
    );
    let started = Instant::now();
    let mut child = st.spawn().expect("run schemathesis");
    let read = |pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::BufReader::new(pipe).read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let limit = Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = started.elapsed();
    let report = format!("{}{}", stdout.join().unwrap(), stderr.join().unwrap());
    eprintln!(
        "{report}\nschemathesis as the {who} took {:.1} s",
        took.as_secs_f64()
    );
    let status = status
        .unwrap_or_else(|| panic!("schemathesis did not finish within {limit:?} and was killed"));
    assert!(
        status.success(),
        "schemathesis as the {who} found the document untrue (--seed {SEED}; its report above)"
    );
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn the_openapi_document_is_true() {
    schemathesis(); // missing or another version: fail before starting anything
    let extra = format!(
        "[[admin.tokens]]\ntoken = \"{READER}\"\nrole = \"read\"\n\
         [[admin.tokens]]\ntoken = \"{DEMO}\"\nprovider = \"demo\"\n"
    );
    let mut node = Node::up("openapi", &extra);
    let get = |authorization: &str| {
        http_request_at(
            &node.host,
            node.admin,
            "GET",
            "/api/v1/openapi.json",
            &[("Authorization", authorization)],
        )
        .unwrap()
    };

    // Any token reads it, a provider's and a read-only one included; none is a 401.
    assert_eq!(get("").status, 401);
    for token in [ADMIN_TOKEN, READER, DEMO] {
        let answer = get(&format!("Bearer {token}"));
        assert_eq!(answer.status, 200, "{token}: {}", answer.text());
        assert_eq!(answer.header("content-type"), Some("application/json"));
    }
    let answer = get(&format!("Bearer {ADMIN_TOKEN}"));
    let document: serde_json::Value =
        serde_json::from_slice(&answer.body).expect("the document is JSON");
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().expect("paths");

    // Every route is documented, and nothing that is not a route.
    let documented: BTreeSet<String> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "put", "post", "delete", "patch"].contains(&k.as_str()))
                .map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    let expected: BTreeSet<String> = OPERATIONS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        documented, expected,
        "documented operations (left) differ from the admin routes (right)"
    );
    for route in routes_in_sources() {
        assert!(
            paths.contains_key(&route),
            "{route} is routed in the sources but missing from crates/streamcdn/src/openapi.json"
        );
    }
    // Only the open routes say so, and the server agrees: without a token, every
    // documented GET is a 401 but theirs.
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            let open = operation["security"] == serde_json::json!([]);
            assert_eq!(
                open,
                OPEN.contains(&path.as_str()),
                "{method} {path}: security"
            );
        }
        if item.get("get").is_some() {
            let concrete = path
                .replace("{name}", "demo")
                .replace("{stream}", "cam")
                .replace("{id}", "0");
            let answer = http_request_at(
                &node.host,
                node.admin,
                "GET",
                &concrete,
                &[("Authorization", "")],
            )
            .unwrap();
            if OPEN.contains(&path.as_str()) {
                assert_eq!(answer.status, 200, "GET {concrete} without a token");
            } else {
                assert_eq!(answer.status, 401, "GET {concrete} without a token");
            }
        }
    }

    // Something for the fuzzer to find: triggers 0 to 2, signed URLs on for `demo`, a
    // stream with a key of its own.
    for stream in ["a", "b", "c"] {
        let command = format!(
            r#"{{"trigger": {{"type": "purge", "content.urls": ["http://127.0.0.1/demo/{stream}/live.m3u8"]}}}}"#
        );
        let ptype = "application/cdni; ptype=ci-trigger-command";
        assert_eq!(
            send(&node, "POST", "/api/v1/triggers", ptype, &command),
            201
        );
    }
    let keys = r#"{"keys": ["openapi-playback-key-0001"]}"#;
    let json = "application/json";
    assert_eq!(
        send(
            &node,
            "PUT",
            "/api/v1/providers/demo/playback-keys",
            json,
            keys
        ),
        200
    );
    let key = r#"{"key": "openapi-cam-key-0001"}"#;
    assert_eq!(
        send(
            &node,
            "PUT",
            "/api/v1/providers/demo/stream-keys/cam",
            json,
            key
        ),
        200
    );

    // schemathesis against the live server, bounded and seeded: as the admin, then as
    // `demo`'s token (403 everywhere but its own provider and the lists).
    run_schemathesis(&node, ADMIN_TOKEN, 15);
    run_schemathesis(&node, DEMO, 5);
    assert!(
        node.is_running(),
        "streamcdn exited during the run:\n{}",
        node.log_text()
    );
    assert!(
        !node.log_text().contains("panicked"),
        "a handler panicked:\n{}",
        node.log_text()
    );

    // The drain, last (the server stops once drained): only the admin may, and the
    // answer is what the document says.
    let drain = |token: &str| {
        http_request_at(
            &node.host,
            node.admin,
            "POST",
            "/api/v1/drain",
            &[("Authorization", &format!("Bearer {token}"))],
        )
    };
    assert_eq!(drain(DEMO).unwrap().status, 403);
    assert_eq!(drain(READER).unwrap().status, 403);
    let answer = drain(ADMIN_TOKEN).unwrap();
    assert_eq!(answer.status, 202, "{}", answer.text());
    let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    let schema = &document["components"]["schemas"]["Drain"];
    for key in schema["required"].as_array().unwrap() {
        assert!(
            body.get(key.as_str().unwrap()).is_some(),
            "{key} missing: {body}"
        );
    }
    assert_eq!(body["started"], true, "{body}");
    assert_eq!(body["draining"], true, "{body}");
    // While it drains, a second request starts nothing.
    if let Some(again) = drain(ADMIN_TOKEN).ok().filter(|a| a.status == 202) {
        let again: serde_json::Value = serde_json::from_slice(&again.body).unwrap();
        assert_eq!(again["started"], false, "{again}");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while node.is_running() {
        assert!(Instant::now() < deadline, "the drained server did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
}
