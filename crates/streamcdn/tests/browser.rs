//! hls.js in headless Chromium plays live streams from the edge, fMP4 and TS, from a
//! page on another origin (so CORS is exercised as a browser player sees it).

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
        assert!(state["t"].as_f64().unwrap() >= 6.0, "{state}");
        assert_eq!(
            (state["w"].as_u64(), state["h"].as_u64()),
            (Some(1280), Some(720)),
            "{state}"
        );
        let codecs = state["levels"][0][0].as_str().unwrap_or_default();
        assert!(
            codecs.starts_with("avc1.42") && codecs.ends_with(",mp4a.40.2"),
            "{state}"
        );
        assert!(state["errors"].as_array().unwrap().is_empty(), "{state}");
    }
    for p in publishers {
        let _ = wait_output(p);
    }
}
