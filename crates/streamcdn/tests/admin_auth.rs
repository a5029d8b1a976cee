//! Admin API authentication: bearer tokens with roles and provider scopes, the token
//! `up` generates for the quickstart, and the refusal to serve an open admin API on a
//! non-loopback address.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const READER: &str = "reader-token-00000000001";
const DEMO: &str = "demo-provider-token-0001";

fn get(node: &Node, path: &str, authorization: &str) -> HttpResponse {
    http_request_at(
        &node.host,
        node.admin,
        "GET",
        path,
        &[("Authorization", authorization)],
    )
    .unwrap()
}

fn providers_in(list: &HttpResponse) -> Vec<String> {
    let streams: serde_json::Value = serde_json::from_slice(&list.body).unwrap();
    let mut names: Vec<String> = streams
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["provider"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn tokens_decide_who_reads_writes_and_sees_which_provider() {
    let extra = format!(
        "[[admin.tokens]]\ntoken = \"{READER}\"\nrole = \"read\"\n\
         [[admin.tokens]]\ntoken = \"{DEMO}\"\nprovider = \"demo\"\n"
    );
    let node = Node::up("admin-auth", &extra);
    let admin = format!("Bearer {ADMIN_TOKEN}");

    // No token, a wrong one: 401 with a challenge. Liveness needs none.
    let none = get(&node, "/api/v1/streams", "");
    assert_eq!(none.status, 401);
    assert!(none
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Bearer")));
    assert_eq!(
        get(&node, "/api/v1/streams", "Bearer not-a-token-at-all").status,
        401
    );
    assert_eq!(get(&node, "/metrics", "").status, 401);
    assert_eq!(get(&node, "/healthz", "").status, 200);

    // A read-only token reads, and may not write.
    assert_eq!(
        get(&node, "/metrics", &format!("Bearer {READER}")).status,
        200
    );
    let command =
        br#"{"trigger": {"type": "purge", "content.urls": ["http://h/demo/cam/index.m3u8"]}}"#;
    let post = |authorization: &str| {
        http_request_body(
            node.admin,
            "POST",
            "/api/v1/triggers",
            &[
                ("Authorization", authorization),
                ("Content-Type", "application/cdni; ptype=ci-trigger-command"),
            ],
            command,
        )
        .unwrap()
    };
    assert_eq!(post(&format!("Bearer {READER}")).status, 403);
    assert_eq!(post(&admin).status, 201);

    // Two providers live: the admin sees both, demo's token only demo.
    let ffmpeg = tool("ffmpeg");
    let publishers = [
        publish(&ffmpeg, &node.publish_url("demo", "cam", KEY), 8, "h264"),
        publish(&ffmpeg, &node.publish_url("tsprov", "cam", KEY), 8, "h264"),
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = get(&node, "/api/v1/streams", &admin);
        if providers_in(&all) == ["demo", "tsprov"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "both streams never went live: {}",
            all.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let scoped = get(&node, "/api/v1/streams", &format!("Bearer {DEMO}"));
    assert_eq!(scoped.status, 200);
    assert_eq!(providers_in(&scoped), ["demo"]);
    // Its own provider's settings, nothing of another's, nothing deployment-wide.
    let demo = format!("Bearer {DEMO}");
    assert_eq!(
        get(&node, "/api/v1/providers/demo/settings", &demo).status,
        200
    );
    assert_eq!(
        get(&node, "/api/v1/providers/tsprov/settings", &demo).status,
        403
    );
    assert_eq!(get(&node, "/api/v1/nodes", &demo).status, 403);
    assert_eq!(get(&node, "/metrics", &demo).status, 403);
    for publisher in publishers {
        assert!(wait_output(publisher).status.success());
    }
    let denied = node.metric("streamcdn_admin_denied_total");
    // 401: none, a wrong one, /metrics without; 403: a read-only write, three out of scope.
    assert_eq!(denied, 7.0);
    assert!(
        !node.log_text().contains(ADMIN_TOKEN) && !node.log_text().contains(DEMO),
        "a token was logged"
    );
}

/// A configuration with every listener on a free loopback port and no admin token.
fn bare_config(dir: &std::path::Path, admin: &str) -> std::path::PathBuf {
    let port = free_port;
    let text = format!(
        "[node]\ndata_dir = \"{data}\"\n[rtmp]\nlisten = \"127.0.0.1:{}\"\ntls_listen = \"off\"\n\
         [srt]\nlisten = \"127.0.0.1:{}\"\n[webrtc]\nlisten = \"off\"\n[origin]\nlisten = \"127.0.0.1:{}\"\n[http]\nlisten = \"127.0.0.1:{}\"\ntls_listen = \"off\"\n\
         [admin]\nlisten = \"{admin}\"\n[router]\ndns_listen = \"127.0.0.1:{}\"\nhttp_listen = \"127.0.0.1:{}\"\n\
         [federation]\nlisten = \"off\"\n\
         [[providers]]\nname = \"demo\"\nstream_key = \"{KEY}\"\n",
        port(),
        free_dual_port(),
        port(),
        port(),
        free_dual_port(),
        port(),
        data = dir.join("data").display()
    );
    let path = dir.join("streamcdn.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn up_generates_a_token_and_an_open_api_stays_on_loopback() {
    let dir = temp_dir("admin-generated");
    let errors = dir.join("stderr.log");
    let start = |config: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_streamcdn"))
            .args(["up", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&errors).unwrap())
            .spawn()
            .unwrap()
    };
    let token_file = dir.join("data").join("admin-token");
    // Free ports are picked before `up` binds them: a test starting beside this one may
    // take one first, and `up` then exits; such a start is tried again on other ports.
    let mut attempts = 0;
    let (up, admin_port, config) = loop {
        attempts += 1;
        let admin_port = free_port();
        let config = bare_config(&dir, &format!("127.0.0.1:{admin_port}"));
        let mut up = start(&config);
        let deadline = Instant::now() + Duration::from_secs(20);
        let exited = loop {
            if http_request(admin_port, "GET", "/healthz", &[("Authorization", "")]).is_ok() {
                break None;
            }
            if let Ok(Some(status)) = up.try_wait() {
                break Some(status);
            }
            assert!(
                Instant::now() < deadline,
                "up did not start within 20 s:\n{}",
                std::fs::read_to_string(&errors).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let Some(status) = exited else {
            break (up, admin_port, config);
        };
        let stderr = std::fs::read_to_string(&errors).unwrap_or_default();
        assert!(
            attempts < 3 && stderr.contains("cannot listen"),
            "up exited ({status}):\n{stderr}"
        );
    };
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    assert!(token.len() >= 32, "{token}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the token file is readable by others: {mode:o}"
        );
    }
    let with = |authorization: &str| {
        http_request(
            admin_port,
            "GET",
            "/api/v1/streams",
            &[("Authorization", authorization)],
        )
        .unwrap()
        .status
    };
    assert_eq!(with(""), 401);
    assert_eq!(with(&format!("Bearer {token}")), 200);
    let _ = Command::new("kill").arg(up.id().to_string()).status();
    let output = up.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("Admin token: {token}")),
        "up does not print the token beside the stream key:\n{stdout}"
    );
    // Kept across restarts.
    let mut again = start(&config);
    while http_request(admin_port, "GET", "/healthz", &[("Authorization", "")]).is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(with(&format!("Bearer {token}")), 200);
    let _ = again.kill();
    let _ = again.wait();

    // An ingest server with its admin API on every address and no token: refused.
    let open = bare_config(&dir, &format!("0.0.0.0:{}", free_port()));
    let mut refused = Command::new(env!("CARGO_BIN_EXE_streamcdn"))
        .args(["ingest", "--config"])
        .arg(&open)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut refused, "an open admin API on 0.0.0.0 was served");
    let mut stderr = String::new();
    std::io::Read::read_to_string(refused.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("not a loopback address"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
