//! WHIP (WebRTC publishing, RFC 9725) end to end with real clients: headless Chromium
//! with a fake camera and microphone publishing from a page on another origin (CORS),
//! aiortc from PyPI as a second, independent client; the live stream appears, the
//! recording decodes with H.264 video and Opus audio; `DELETE` ends the stream cleanly,
//! a killed browser ends it after the inactivity timeout; a wrong key is refused with
//! nothing recorded.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::page::Page;
use common::*;
use serde_json::Value;

/// The harness's `webrtc.inactivity_timeout`.
const INACTIVITY: Duration = Duration::from_secs(4);

fn whip_path(provider: &str, stream: &str) -> String {
    format!("/{provider}/{stream}/whip")
}

fn whip_url(node: &Node, provider: &str, stream: &str) -> String {
    format!(
        "http://{}:{}{}",
        node.host,
        node.origin,
        whip_path(provider, stream)
    )
}

/// Waits until the edge serves the stream's live playlist with a segment.
fn wait_live(node: &Node, base: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let r = http_get(node.http, &format!("{base}/live.m3u8"), &[]).unwrap();
        if r.status == 200 && !playlist_segments(&r.text()).is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the live playlist never came: {} {}\n{}",
            r.status,
            r.text(),
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The codec names ffprobe finds in `input`, video then audio.
fn codecs(input: &str) -> Vec<String> {
    let out = Command::new(tool("ffprobe"))
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
        ])
        .arg(input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_end_matches(',').to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The ended recording decodes with H.264 and Opus, about `seconds` long, with a
/// plausible number of frames; its live playlist has ENDLIST.
fn assert_recorded(node: &Node, base: &str, seconds: f64, min_fps: f64) {
    let url = node.play_url(&format!("{base}/index.m3u8"));
    let recorded = decode(&url, &[]);
    assert_eq!(recorded.video_codec, "h264", "{recorded:?}");
    let found = codecs(&url);
    assert!(found.iter().any(|c| c == "opus"), "codecs {found:?}");
    assert!(
        recorded.duration > seconds * 0.6 && recorded.duration < seconds + 6.0,
        "{recorded:?}, published about {seconds} s"
    );
    assert!(
        recorded.video_frames as f64 >= recorded.duration * min_fps,
        "{recorded:?}"
    );
    // 20 ms Opus packets: 50 a second.
    assert!(
        recorded.audio_frames as f64 >= recorded.duration * 40.0,
        "{recorded:?}"
    );
    let multivariant = http_get(node.http, &format!("{base}/index.m3u8"), &[])
        .unwrap()
        .text();
    assert!(multivariant.contains("avc1."), "{multivariant}");
    assert!(multivariant.contains("opus"), "{multivariant}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let live = http_get(node.http, &format!("{base}/live.m3u8"), &[])
            .unwrap()
            .text();
        if live.contains("#EXT-X-ENDLIST") {
            break;
        }
        assert!(Instant::now() < deadline, "no ENDLIST: {live}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn open_publisher(node: &Node, stream: &str) -> Page {
    require_browser_tools(&["playwright-core"]);
    let page = Page::open_for(
        "whip.mjs",
        &format!("{}?key={KEY}", whip_url(node, "demo", stream)),
        120,
    );
    let connected = page.wait_for(
        "a connected H.264 publisher",
        Duration::from_secs(40),
        |s| {
            assert_ne!(s["state"], "error", "{s:#}");
            s["connection"] == "connected" && s["framesEncoded"].as_u64().unwrap_or(0) > 30
        },
    );
    assert_eq!(connected["status"], 201, "{connected:#}");
    assert_eq!(connected["contentType"], "application/sdp");
    let location = connected["location"].as_str().unwrap();
    assert!(
        location.starts_with(&format!("{}/", whip_path("demo", stream))),
        "{connected:#}"
    );
    assert_eq!(connected["videoCodec"], "video/H264", "{connected:#}");
    assert_eq!(connected["audioCodec"], "audio/opus", "{connected:#}");
    page
}

#[test]
fn chromium_publishes_over_whip_from_another_origin_and_delete_ends_the_stream() {
    let node = Node::up("whip-chromium", "");
    let base = "/demo/cam";
    let page = open_publisher(&node, "cam");
    let started = Instant::now();
    wait_live(&node, base, Duration::from_secs(20));
    // The server asked for a keyframe at the start (PLI); Chromium counts those it got.
    let sample = page.wait_for("a PLI received", Duration::from_secs(10), |s| {
        s["plis"].as_u64().unwrap_or(0) >= 1
    });
    assert!(
        node.metric("streamcdn_webrtc_plis_sent_total{protocol=\"whip\"") >= 1.0,
        "{sample:#}"
    );
    assert_eq!(node.metric("streamcdn_live_streams{protocol=\"whip\""), 1.0);
    std::thread::sleep(Duration::from_secs(6).saturating_sub(started.elapsed()));

    let mut page = page;
    page.command("delete");
    let deleted = page.wait_for("the DELETE answered", Duration::from_secs(30), |s| {
        s["state"] == "deleted" || s["deleteStatus"].is_number()
    });
    let deleted = if deleted["deleteStatus"].is_number() {
        deleted
    } else {
        page.wait_for("the DELETE status", Duration::from_secs(5), |s| {
            s["deleteStatus"].is_number()
        })
    };
    assert_eq!(deleted["deleteStatus"], 200, "{deleted:#}");
    let published = started.elapsed().as_secs_f64();
    // DELETE answers once the recording is complete.
    let journal = node.wait_recording_state("demo", "cam", "ended");
    assert!(
        !journal["segments"].as_array().unwrap().is_empty(),
        "{journal}"
    );
    assert_recorded(&node, base, published, 10.0);
    assert_eq!(node.metric("streamcdn_live_streams{protocol=\"whip\""), 0.0);
}

#[test]
fn a_killed_browser_ends_its_publish_after_the_inactivity_timeout() {
    let node = Node::up("whip-killed", "");
    let base = "/demo/gone";
    let mut page = open_publisher(&node, "gone");
    wait_live(&node, base, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(3));
    page.command("kill");
    page.wait_for("the browser killed", Duration::from_secs(10), |s| {
        s["state"] == "killed"
    });
    let killed = Instant::now();
    let journal = node.wait_recording_state("demo", "gone", "ended");
    let took = killed.elapsed();
    assert!(
        took >= INACTIVITY.saturating_sub(Duration::from_secs(1))
            && took < INACTIVITY + Duration::from_secs(10),
        "ended {took:?} after the kill: {journal}"
    );
    assert_recorded(&node, base, 4.0, 10.0);
    assert!(node
        .log_text()
        .contains("no media for the inactivity timeout"));
}

#[test]
fn aiortc_publishes_h264_and_opus_over_whip() {
    let probe = Command::new("python3")
        .args(["-c", "import aiortc"])
        .output()
        .expect("python3 is required");
    assert!(
        probe.status.success(),
        "aiortc is required: run scripts/test.sh or `pip install aiortc`"
    );
    let node = Node::up("whip-aiortc", "");
    let file = node.dir.join("source.mp4");
    let made = Command::new(tool("ffmpeg"))
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-t",
            "12",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "30",
        ])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac"])
        .arg(&file)
        .status()
        .unwrap();
    assert!(made.success());
    let script = browser_dir().join("../whip_aiortc.py");
    let seconds = 8;
    let child = Command::new("python3")
        .arg(&script)
        .args([&whip_url(&node, "demo", "py"), KEY])
        .arg(&file)
        .arg(seconds.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let result: Value =
        serde_json::from_str(text.lines().last().unwrap_or("{}")).unwrap_or_else(|_| {
            panic!(
                "aiortc printed {text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(
        out.status.success(),
        "{result:#}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        node.log_text()
    );
    assert_eq!(result["status"], 201, "{result:#}");
    assert_eq!(result["delete"], 200, "{result:#}");
    node.wait_recording_state("demo", "py", "ended");
    // aiortc's software encoder may lower its frame rate on a busy machine.
    assert_recorded(&node, "/demo/py", f64::from(seconds), 5.0);
}

#[test]
fn wrong_keys_are_refused_nothing_is_recorded_and_cors_and_patch_are_answered() {
    let node = Node::up("whip-refused", "");
    let offer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
    let post = |path: &str, headers: &[(&str, &str)]| {
        let mut headers = headers.to_vec();
        headers.push(("Content-Type", "application/sdp"));
        http_request_body_at(
            &node.host,
            node.origin,
            "POST",
            path,
            &headers,
            offer.as_bytes(),
        )
        .unwrap()
    };
    let wrong = post(
        &whip_path("demo", "cam"),
        &[("Authorization", "Bearer not-the-key")],
    );
    assert_eq!(wrong.status, 403, "{}", wrong.text());
    assert!(
        wrong.text().contains("wrong stream key"),
        "{}",
        wrong.text()
    );
    assert_eq!(wrong.header("access-control-allow-origin"), Some("*"));
    let wrong_query = post(
        &format!("{}?key=not-the-key", whip_path("demo", "cam")),
        &[("Authorization", "")],
    );
    assert_eq!(wrong_query.status, 403, "{}", wrong_query.text());
    let missing = post(&whip_path("demo", "cam"), &[("Authorization", "")]);
    assert_eq!(missing.status, 401, "{}", missing.text());
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    let unknown = post(
        &whip_path("nobody", "cam"),
        &[("Authorization", &format!("Bearer {KEY}"))],
    );
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    // The right key (in the query) with an offer that has no media: 400, nothing kept.
    let empty = post(
        &format!("{}?key={KEY}", whip_path("demo", "cam")),
        &[("Authorization", "")],
    );
    assert_eq!(empty.status, 400, "{}", empty.text());
    assert!(node.recordings("demo", "cam").is_empty());
    assert!(node.metric("streamcdn_publish_refused_total{protocol=\"whip\"") >= 4.0);

    // The CORS preflight of a browser on another origin.
    let preflight = http_request_at(
        &node.host,
        node.origin,
        "OPTIONS",
        &whip_path("demo", "cam"),
        &[
            ("Authorization", ""),
            ("Origin", "http://publisher.example"),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization, content-type",
            ),
        ],
    )
    .unwrap();
    assert!(
        preflight.status == 204 || preflight.status == 200,
        "{preflight:?}"
    );
    let allowed = preflight
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{preflight:?}"
    );
    assert!(preflight
        .header("access-control-allow-methods")
        .unwrap_or_default()
        .contains("POST"));
    assert!(preflight
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .contains("Location"));
    // Trickle ICE is not supported, and said so.
    let patch = http_request_at(
        &node.host,
        node.origin,
        "PATCH",
        &format!("{}/0123", whip_path("demo", "cam")),
        &[("Authorization", "")],
    )
    .unwrap();
    assert_eq!(patch.status, 405, "{patch:?}");
    assert!(patch.header("allow").unwrap_or_default().contains("DELETE"));
    let gone = http_request_at(
        &node.host,
        node.origin,
        "DELETE",
        &format!("{}/0123", whip_path("demo", "cam")),
        &[("Authorization", "")],
    )
    .unwrap();
    assert_eq!(gone.status, 404, "{gone:?}");
}
