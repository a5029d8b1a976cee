//! hls.js in headless Chromium plays live streams from the edge, fMP4 and TS, from a
//! page on another origin (so CORS is exercised as a browser player sees it); and a
//! stream published over SRT, which the live list shows as `srt` with its connection's
//! measurements.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A static file server for the test page, on its own origin.
struct PageServer(std::process::Child, u16);

impl PageServer {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "-d",
            ])
            .arg(browser_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while http_get(port, "/www/index.html", &[]).map_or(true, |r| r.status != 200) {
            assert!(Instant::now() < deadline, "page server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        PageServer(child, port)
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn play_in_browser(page: &PageServer, src: &str, seconds: u32) -> serde_json::Value {
    let url = format!("http://127.0.0.1:{}/www/index.html?src={src}", page.1);
    let out = Command::new(tool("node"))
        .arg(browser_dir().join("play.mjs"))
        .args([&url, &seconds.to_string()])
        .output()
        .unwrap();
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "player output: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success(), "hls.js did not play {src}: {state}");
    state
}

/// hls.js played 6 s of the 1280x720 H.264 (codec string starting `avc1`) and AAC
/// stream without an error.
fn assert_played_6s_of_720p(state: &serde_json::Value, avc1: &str) {
    assert!(state["t"].as_f64().unwrap() >= 6.0, "{state}");
    assert_eq!(
        (state["w"].as_u64(), state["h"].as_u64()),
        (Some(1280), Some(720)),
        "{state}"
    );
    let codecs = state["levels"][0][0].as_str().unwrap_or_default();
    assert!(
        codecs.starts_with(avc1) && codecs.ends_with(",mp4a.40.2"),
        "{state}"
    );
    assert!(state["errors"].as_array().unwrap().is_empty(), "{state}");
}

#[test]
fn hls_js_in_chromium_plays_fmp4_and_ts_live() {
    require_browser_tools(&["hls.js", "playwright-core"]);
    let node = Node::up("browser", "");
    let ffmpeg = tool("ffmpeg");
    let publishers = [
        publish(&ffmpeg, &node.publish_url("demo", "web", KEY), 25, "h264"),
        publish(&ffmpeg, &node.publish_url("tsprov", "web", KEY), 25, "h264"),
    ];
    let page = PageServer::start();
    for provider in ["demo", "tsprov"] {
        let deadline = Instant::now() + Duration::from_secs(15);
        while http_get(node.http, &format!("/{provider}/web/live.m3u8"), &[])
            .unwrap()
            .status
            != 200
        {
            assert!(Instant::now() < deadline, "{provider}/web never went live");
            std::thread::sleep(Duration::from_millis(200));
        }
        let state = play_in_browser(
            &page,
            &node.play_url(&format!("/{provider}/web/index.m3u8")),
            6,
        );
        assert_played_6s_of_720p(&state, "avc1.42");
    }
    for p in publishers {
        let _ = wait_output(p);
    }
}

#[test]
fn hls_js_in_chromium_plays_a_stream_published_over_srt() {
    require_browser_tools(&["hls.js", "playwright-core"]);
    let node = Node::up("browser-srt", "");
    let publisher = publish_ts(&node.srt_url("demo", "srtweb", KEY), 25);
    let page = PageServer::start();
    let deadline = Instant::now() + Duration::from_secs(15);
    while http_get(node.http, "/demo/srtweb/live.m3u8", &[])
        .unwrap()
        .status
        != 200
    {
        assert!(Instant::now() < deadline, "demo/srtweb never went live");
        std::thread::sleep(Duration::from_millis(200));
    }
    let state = play_in_browser(&page, &node.play_url("/demo/srtweb/index.m3u8"), 6);
    assert_played_6s_of_720p(&state, "avc1.");
    // The live list says how it is published, with the SRT connection's measurements.
    let streams = http_request_at(&node.host, node.admin, "GET", "/api/v1/streams", &[]).unwrap();
    let streams: serde_json::Value = serde_json::from_slice(&streams.body).unwrap();
    let live = streams
        .as_array()
        .and_then(|a| a.iter().find(|s| s["stream"] == "srtweb"))
        .unwrap_or_else(|| panic!("srtweb not live: {streams}"));
    assert_eq!(live["protocol"], "srt", "{live}");
    assert!(
        live["transport"]["received_bytes"].as_u64() > Some(100_000),
        "{live}"
    );
    assert!(live["transport"]["rtt_ms"].as_f64().is_some(), "{live}");
    assert!(
        node.metric("streamcdn_live_streams{protocol=\"srt\"}") >= 1.0,
        "the publishers gauge by protocol"
    );
    assert!(node.metric("streamcdn_ingest_bytes_in_total{protocol=\"srt\"}") > 100_000.0);
    let _ = wait_output(publisher);
}
