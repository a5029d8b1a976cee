//! The operator dashboard in headless Chromium, over a running deployment: `up` and a
//! second edge below it on Redis, a live stream, an archived recording and a purge. Each
//! section must show that real state (asserted on the page's text), the player plays
//! the live stream, the forms work, and screenshots are kept in
//! `target/test-artifacts/dashboard/`.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::page::Page;
use common::*;
use serde_json::Value;

fn text<'a>(sample: &'a Value, section: &str) -> &'a str {
    sample[section].as_str().unwrap_or_default()
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/test-artifacts/dashboard"
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_dashboard_shows_a_running_deployment() {
    require_browser_tools(&["playwright-core"]);
    let redis = Redis::start();
    let registry = redis.registry_toml("dashboard");
    let up = Node::up(
        "dashboard-up",
        &format!("{registry}[archive]\ndefault_after = \"1s\"\n"),
    );
    let edge = Node::role(
        "dashboard-edge",
        "edge",
        &format!(
            "{registry}[edge]\nparents = [\"http://127.0.0.1:{}\"]\n",
            up.http
        ),
    );
    let ffmpeg = tool("ffmpeg");
    // A recording archived before the page opens, then a live stream.
    let old = publish(&ffmpeg, &up.publish_url("demo", "old", KEY), 4, "h264");
    assert!(wait_output(old).status.success());
    let recording = up.recordings("demo", "old").pop().expect("a recording");
    let recording_id = recording
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http_get(up.admin, "/api/v1/recordings/archived", &[])
        .unwrap()
        .text()
        .contains(&recording_id)
    {
        assert!(
            Instant::now() < deadline,
            "the recording was never archived: {}",
            http_get(up.admin, "/api/v1/recordings/archived", &[])
                .unwrap()
                .text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let live = publish(&ffmpeg, &up.publish_url("demo", "cam", KEY), 30, "h264");
    // A trigger.
    let purge = format!(
        r#"{{"trigger": {{"type": "purge", "content.urls": ["http://127.0.0.1:{}/demo/old/{recording_id}/playlist.m3u8"]}}}}"#,
        up.http
    );
    let created = http_request_body(
        up.admin,
        "POST",
        "/api/v1/triggers",
        &[("Content-Type", "application/cdni; ptype=ci-trigger-command")],
        purge.as_bytes(),
    )
    .unwrap();
    assert_eq!(created.status, 201, "{}", created.text());

    // `up` says where the dashboard is.
    assert!(
        up.log_text().contains(&format!(
            "Dashboard (the whole deployment): http://127.0.0.1:{}/dashboard",
            up.admin
        )),
        "{}",
        up.log_text()
    );

    // Without a token the page asks for one and shows nothing.
    let url = format!("http://127.0.0.1:{}/dashboard", up.admin);
    {
        let anonymous = Page::open("dashboard.mjs", &url);
        anonymous.wait_for("the token form", Duration::from_secs(20), |s| {
            s["login"] == true
        });
    }
    let mut page = Page::open("dashboard.mjs", &format!("{url}#token={ADMIN_TOKEN}"));
    let up_id = format!("127.0.0.1:{}", up.origin);
    let sample = page.wait_for("the deployment's state", Duration::from_secs(40), |s| {
        text(s, "streams").contains("demo/cam")
            && text(s, "recordings").contains(&recording_id)
            && text(s, "recordings").contains("archived")
            && text(s, "nodes").contains(&up_id)
            && text(s, "nodes").contains(&format!("127.0.0.1:{}", edge.http))
            && text(s, "nodes").contains("healthy")
            && text(s, "triggers").contains("complete")
            && text(s, "federation").contains("default configuration")
            && text(s, "participant").contains("AS64496:1")
            && s["frames"].as_u64().unwrap_or(0) > 30
    });
    assert!(
        text(&sample, "player").contains("demo/cam (live)"),
        "{sample:#}"
    );
    assert!(
        text(&sample, "streams").contains("avc1"),
        "codecs: {sample:#}"
    );
    assert!(
        text(&sample, "streams").contains("RTMP"),
        "the publishing protocol: {sample:#}"
    );
    let shots = artifacts();
    page.command(&format!("shot {}", shots.join("overview.png").display()));

    // The forms: explain one client, purge a URL (a second trigger appears).
    page.command("explain 127.0.0.1");
    page.command(&format!(
        "purge http://127.0.0.1:{}/demo/cam/*.m4s",
        up.http
    ));
    let after = page.wait_for(
        "the explain answer and the new purge",
        Duration::from_secs(20),
        |s| {
            text(s, "routing").contains("\"prefix\"")
                && text(s, "triggers").matches("purge").count() >= 2
        },
    );
    assert!(!text(&after, "updated").contains("failed"), "{after:#}");
    page.command(&format!("shot {}", shots.join("after-forms.png").display()));
    page.wait_for("the screenshots", Duration::from_secs(10), |_| {
        shots.join("after-forms.png").exists()
    });
    assert!(std::fs::metadata(shots.join("overview.png")).unwrap().len() > 10_000);
    let _ = wait_output(live);
}

/// `GET /api/v1/deployment` on one server's admin listener, once it says `ready`.
fn deployment(node: &Node) -> Value {
    let answer = http_request_at(&node.host, node.admin, "GET", "/api/v1/deployment", &[])
        .expect("the deployment view");
    assert_eq!(answer.status, 200, "{}", answer.text());
    serde_json::from_slice(&answer.body).expect("the deployment view is JSON")
}

fn id_with_role(doc: &Value, role: &str) -> String {
    doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["roles"].as_array().unwrap().iter().any(|r| r == role))
        .and_then(|n| n["id"].as_str())
        .unwrap_or_else(|| panic!("no {role} in {doc:#}"))
        .to_owned()
}

/// Every part filled from the whole deployment: the live stream with its holder and the
/// edge's viewer, the recording, the archiver's queue, healthy nodes, routing, the trigger.
fn whole(doc: &Value, recording_id: &str) -> bool {
    let list = |key: &str| doc[key].as_array().cloned().unwrap_or_default();
    let ids: Vec<String> = list("nodes")
        .iter()
        .filter_map(|n| n["id"].as_str().map(str::to_owned))
        .collect();
    if ids.len() < 4 {
        return false;
    }
    let edge = id_with_role(doc, "edge");
    let cam = list("streams")
        .into_iter()
        .find(|s| s["provider"] == "demo" && s["stream"] == "cam");
    cam.is_some_and(|cam| {
        cam["server"] == id_with_role(doc, "ingest").as_str()
            && cam["viewers"].as_u64().unwrap_or(0) >= 1
            && cam["viewers_by_edge"][&edge].as_u64().unwrap_or(0) >= 1
    }) && list("recordings")
        .iter()
        .any(|r| r["recording_id"] == recording_id)
        && list("archive")
            .iter()
            .any(|a| a["server"] == id_with_role(doc, "archiver").as_str())
        && list("nodes")
            .iter()
            .any(|n| n["id"] == edge.as_str() && n["healthy"] == true)
        && list("routing")
            .iter()
            .any(|r| r["server"] == id_with_role(doc, "router").as_str())
        && list("triggers")
            .iter()
            .any(|t| t["status"]["status"] == "complete")
        && list("federation")
            .iter()
            .any(|f| f["participant"] == "AS64496:1")
        && list("unreachable").is_empty()
}

#[test]
fn any_admin_listener_shows_the_whole_split_deployment() {
    require_browser_tools(&["playwright-core"]);
    let redis = Redis::start();
    let shared_archive = temp_dir("deployment-archive");
    let registry = format!(
        "{}[archive]\ndefault_after = \"1s\"\ndir = \"{}\"\n",
        redis.registry_toml("deployment"),
        shared_archive.display()
    );
    let ingest = Node::role("deployment-ingest", "ingest", &registry);
    let archiver = Node::role_on(
        "deployment-archiver",
        "archiver",
        "127.0.0.1",
        free_port(),
        Some(&ingest.dir.join("data")),
        &registry,
    );
    let edge = Node::role("deployment-edge", "edge", &registry);
    let router = Node::role("deployment-router", "router", &registry);
    let ffmpeg = tool("ffmpeg");

    // An ended recording, then a live stream played on the edge.
    let old = publish(&ffmpeg, &ingest.publish_url("demo", "old", KEY), 4, "h264");
    assert!(wait_output(old).status.success());
    let recording = ingest.recordings("demo", "old").pop().expect("a recording");
    let recording_id = recording
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let live = publish(&ffmpeg, &ingest.publish_url("demo", "cam", KEY), 40, "h264");
    let playlist = edge.play_url("/demo/cam/index.m3u8");
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_request_at(&edge.host, edge.http, "GET", "/demo/cam/index.m3u8", &[])
        .map_or(true, |r| r.status != 200)
    {
        assert!(
            Instant::now() < deadline,
            "the edge never served {playlist}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let viewer = std::process::Command::new(&ffmpeg)
        .args([
            "-v", "error", "-i", &playlist, "-t", "25", "-f", "null", "-",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the ffmpeg viewer");
    let purge = format!(
        r#"{{"trigger": {{"type": "purge", "content.urls": ["{}"]}}}}"#,
        edge.play_url(&format!("/demo/old/{recording_id}/playlist.m3u8"))
    );
    let created = http_request_body(
        router.admin,
        "POST",
        "/api/v1/triggers",
        &[("Content-Type", "application/cdni; ptype=ci-trigger-command")],
        purge.as_bytes(),
    )
    .unwrap();
    assert_eq!(created.status, 201, "{}", created.text());

    // The edge holds no stream, runs no router and no archiver: its view is whole.
    let deadline = Instant::now() + Duration::from_secs(40);
    let doc = loop {
        let doc = deployment(&edge);
        if whole(&doc, &recording_id) {
            break doc;
        }
        assert!(
            Instant::now() < deadline,
            "the edge's view never showed the whole deployment: {doc:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let ingest_id = id_with_role(&doc, "ingest");
    assert_eq!(doc["server"], id_with_role(&doc, "edge").as_str());
    assert_eq!(doc["streams"][0]["ingest_server"], ingest_id.as_str());
    // So is any other server's, the holder's own and the router's.
    for node in [&ingest, &archiver, &router] {
        let other = deployment(node);
        assert!(
            other["streams"][0]["server"] == ingest_id.as_str()
                && other["nodes"].as_array().unwrap().len() == 4
                && other["triggers"].as_array().is_some_and(|t| !t.is_empty()),
            "{other:#}"
        );
    }

    // Servers read each other as peers of the deployment; a forged signature is refused.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let forged = format!("StreamcdnPeer {now_ms}.{}", "ab".repeat(32));
    let refused = http_request_at(
        &ingest.host,
        ingest.admin,
        "GET",
        "/api/v1/streams",
        &[("Authorization", &forged)],
    )
    .unwrap();
    assert_eq!(refused.status, 401, "{}", refused.text());

    // The page on the edge's admin listener renders it; the root leads there.
    let root =
        http_request_at(&edge.host, edge.admin, "GET", "/", &[("Authorization", "")]).unwrap();
    assert!(root.status == 200 && root.text().contains("/dashboard"));
    let url = format!(
        "http://127.0.0.1:{}/dashboard#token={ADMIN_TOKEN}",
        edge.admin
    );
    let mut page = Page::open("dashboard.mjs", &url);
    let router_id = id_with_role(&doc, "router");
    let archiver_id = id_with_role(&doc, "archiver");
    let sample = page.wait_for(
        "the whole deployment on the page",
        Duration::from_secs(40),
        |s| {
            text(s, "streams").contains("demo/cam")
                && text(s, "streams").contains(&ingest_id)
                && text(s, "recordings").contains(&recording_id)
                && text(s, "archive").contains(&archiver_id)
                && text(s, "nodes").contains(&router_id)
                && text(s, "nodes").contains("healthy")
                && text(s, "routing").contains(&router_id)
                && text(s, "triggers").contains("complete")
                && text(s, "triggers").contains(&router_id)
                && text(s, "participant").contains("AS64496:1")
        },
    );
    assert!(
        text(&sample, "nodes").contains("Every server answered"),
        "{sample:#}"
    );
    assert!(!text(&sample, "updated").contains("failed"), "{sample:#}");
    let shots = artifacts();
    page.command(&format!("shot {}", shots.join("deployment.png").display()));
    page.wait_for("the screenshot", Duration::from_secs(10), |_| {
        shots.join("deployment.png").exists()
    });
    let _ = wait_output(viewer);
    let _ = wait_output(live);
}
