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
