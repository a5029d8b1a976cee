//! Glass to glass, honestly measured: ffmpeg draws each frame's capture wall clock into
//! the picture (`tests/browser/stamp.py`), publishes it in real time to an ingest server,
//! and a player in headless Chromium plays it over HTTPS (HTTP/2) from an edge whose parent
//! is a mid-tier (two cache tiers, a Redis registry). The page (`tests/browser/glass.html`)
//! reads the time back from every presented frame and records (when it is shown) −
//! (when it was captured): network, segmenting, both caches, the player's buffer,
//! decoding and the publisher's own encoding all count. Players: hls.js in low-latency
//! mode, allowed to catch up to its target latency ([`CATCH_UP_RATE`]); Shaka Player in
//! its low-latency mode, nothing else configured; hls.js without low-latency mode.
//!
//! Nothing here is random but the free ports.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::page::Page;
use common::tiers::Tiers;
use common::*;
use serde_json::Value;

/// How long the page measures, from the first frame it shows.
const MEASURE_SECONDS: u64 = 60;
/// Margin for everything before the first frame (four segments at the edge, Chromium
/// starting, hls.js's first fetches); the publisher is stopped once measured.
const PUBLISH_SECONDS: u64 = MEASURE_SECONDS + 40;
const FPS: u64 = 30;
/// hls.js's `maxLiveSyncPlaybackRate`: how fast it may play to reach its target latency
/// (PART-HOLD-BACK, 1.002 s, in low-latency mode). With hls.js's default, 1, it never
/// catches up and keeps, for the whole session, how far behind its target it started,
/// which the server cannot correct (measured 2026-11-22 with glass.html's trace: five runs
/// at load 4-12, medians 1.50-1.74 s; the three traced to the millisecond were 1.002 s +
/// 0.30-0.38 s + 0.23-0.38 s):
/// - it computes its start position from the first (non-blocking) playlist as if the last
///   listed part had ended when the playlist arrived; it had ended up to a part earlier,
///   plus ~65 ms from capture to a listed part (by PROGRAM-DATE-TIME: 0.30-0.38 s in those
///   runs; 0.07-0.38 s, median 0.20 s, polling the origin itself at random times);
/// - it begins playing only once it has loaded, one request after another, every listed
///   part from the independent part before that position up to the newest (3-6 parts),
///   and decoded from that keyframe to the position: 0.23-0.38 s here, of which our
///   tiers' share is ~3 ms a part (a part missing at both tiers: 4.7 ms against 1.5 ms
///   at the origin).
///
/// The player page and this test let hls.js catch up (median 1.36-1.39 s).
const CATCH_UP_RATE: f64 = 1.5;

/// stamp.py's own check, offline: the codes it draws are the wall clock of capture
/// within a frame, and survive the H.264 encoding code for code.
#[test]
fn the_timestamp_drawn_into_each_frame_is_the_capture_wall_clock() {
    let out = Command::new(tool("python3"))
        .arg(browser_dir().join("stamp.py"))
        .arg("--ffmpeg")
        .arg(tool("ffmpeg"))
        .args(["selftest", "--seconds", "3"])
        .output()
        .expect("run stamp.py");
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("stamp.py selftest: {report}");
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&report).expect("a JSON report");
    assert_eq!(report["frames"], 3 * FPS, "{report}");
    assert_eq!(report["encoded_frames"], report["frames"], "{report}");
}

/// An ingest server, a mid-tier (top cache tier, resolving streams through the registry)
/// and an edge whose parent is the mid-tier. Dropped edge first.
/// The stamped publisher (1280x720p30, x264 zerolatency, keyframe every second, AAC).
fn publish_stamped(url: &str) -> Child {
    Command::new(tool("python3"))
        .arg(browser_dir().join("stamp.py"))
        .arg("--ffmpeg")
        .arg(tool("ffmpeg"))
        .args(["publish", url, "--gop", "1", "--seconds"])
        .arg(PUBLISH_SECONDS.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stamp.py")
}

/// Who plays, as glass.html's query says it.
#[derive(Clone, Copy, Debug)]
enum Player {
    /// hls.js (the edges' copy), `lowLatencyMode` on or off, catching up at
    /// [`CATCH_UP_RATE`].
    HlsJs { low_latency: bool },
    /// Shaka Player (tests/browser/package.json) with `streaming.lowLatencyMode: true`.
    ShakaLowLatency,
    /// The browser's own WebRTC over WHEP from the edge.
    WebRtc,
}

impl Player {
    fn query(self) -> String {
        match self {
            Player::HlsJs { low_latency } => format!(
                "player=hls.js&lowLatency={}&maxLiveSyncPlaybackRate={CATCH_UP_RATE}",
                u8::from(low_latency)
            ),
            Player::ShakaLowLatency => "player=shaka&lowLatency=1".into(),
            Player::WebRtc => "player=webrtc".into(),
        }
    }

    fn package(self) -> &'static str {
        match self {
            Player::HlsJs { .. } => "hls.js",
            Player::ShakaLowLatency => "shaka-player",
            // glass.mjs reads Shaka's build whichever player runs.
            Player::WebRtc => "shaka-player",
        }
    }
}

/// Publishes `provider/stream` to the ingest server, waits for it at the edge and plays
/// it over HTTPS from the edge; the page's final summary (without the samples and the
/// trace, which are printed).
fn glass_to_glass(tiers: &Tiers, provider: &str, stream: &str, player: Player) -> Value {
    require_browser_tools(&["playwright-core", player.package()]);
    let mut publisher = publish_stamped(&tiers.ingest.publish_url(provider, stream, KEY));
    // A viewer joining a running stream: the edge's playlist holds four segments (hls.js
    // starts three target durations back; from a shorter playlist it would start closer
    // to live than any later viewer).
    let live = format!("/{provider}/{stream}/live.m3u8");
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(tiers.edges[0].http, &live, &[]).map_or(true, |r| {
        r.status != 200 || playlist_segments(&r.text()).len() < 4
    }) {
        if let Ok(Some(status)) = publisher.try_wait() {
            let out = publisher.wait_with_output().unwrap();
            panic!(
                "the publisher exited ({status}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            Instant::now() < deadline,
            "{live} never listed four segments at the edge"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let page_url = format!(
        "https://{}:{}/__glass__.html?src=/{provider}/{stream}/index.m3u8&seconds={MEASURE_SECONDS}&{}",
        tiers.edges[0].host,
        tiers.edges[0].tls,
        player.query()
    );
    let page = Page::open("glass.mjs", &page_url);
    let last = page.wait_for(
        "the end of the measurement",
        Duration::from_secs(MEASURE_SECONDS + 40),
        |sample| sample["final"] == true,
    );
    drop(page);
    let _ = publisher.kill();
    let _ = publisher.wait();

    let mut summary = last.clone();
    let samples = summary
        .as_object_mut()
        .and_then(|o| o.remove("samples"))
        .unwrap_or_default();
    let trace = summary
        .as_object_mut()
        .and_then(|o| o.remove("trace"))
        .unwrap_or_default();
    // What the player did until it played (and a few seconds after): where its latency
    // came from.
    for event in trace.as_array().into_iter().flatten() {
        if event["what"] != "second" {
            eprintln!("trace: {event}");
        }
    }
    eprintln!(
        "glass to glass, {player:?}, {} over HTTPS from the edge \
         (ingest {}, mid-tier {}, edge {}): median {} ms, p90 {} ms, max {} ms, min {} ms \
         over {} frames\nsummary: {summary}",
        provider,
        tiers.ingest.host,
        tiers.mid.http,
        tiers.edges[0].tls,
        last["median"],
        last["p90"],
        last["max"],
        last["min"],
        last["frames"],
    );
    // One line per second of the run: how latency moved while playing.
    if let Some(samples) = samples.as_array() {
        let per_second: Vec<String> = samples
            .chunks(FPS as usize)
            .filter_map(|c| c.first()?.get(1)?.as_u64())
            .map(|ms| ms.to_string())
            .collect();
        eprintln!("latency each second (ms): {}", per_second.join(" "));
    }
    summary
}

/// What every run must show, low latency or not: the page measured the whole time, read
/// (nearly) every frame it showed, never stalled, and spoke HTTP/2 only.
fn assert_played_cleanly(last: &Value) {
    assert_eq!(last["state"], "done", "{last}");
    let frames = last["frames"].as_u64().unwrap_or(0);
    assert!(
        frames >= MEASURE_SECONDS * FPS * 2 / 3,
        "{frames} frames shown in {MEASURE_SECONDS} s: {last}"
    );
    let invalid = last["invalidFrames"].as_u64().unwrap_or(u64::MAX);
    assert!(
        invalid * 100 <= frames,
        "{invalid} shown frames had no readable timestamp: {last}"
    );
    assert_eq!(
        last["stalls"].as_array().map(Vec::len),
        Some(0),
        "stalls after the first frame: {last}"
    );
    let protocols = last["protocols"].as_object().cloned().unwrap_or_default();
    assert!(
        !protocols.is_empty() && protocols.keys().all(|p| p == "h2"),
        "the stream's requests were not all HTTP/2: {last}"
    );
}

/// The player fetched parts and reloaded the playlist blocking (from what it requested).
fn assert_used_low_latency_delivery(last: &Value) {
    let requests = &last["requests"];
    assert!(
        requests["parts"].as_u64().unwrap_or(0) > 0
            && requests["blockingReloads"].as_u64().unwrap_or(0) > 0,
        "the player did not fetch parts with blocking playlist reloads: {last}"
    );
}

#[test]
fn ll_hls_through_two_tiers_over_http2_is_within_1_5_s_glass_to_glass() {
    let tiers = Tiers::start("g2g-ll", 1, "");
    let last = glass_to_glass(&tiers, "demo", "g2g", Player::HlsJs { low_latency: true });
    assert_played_cleanly(&last);
    let ll = &last["ll"];
    assert!(
        ll["partList"].as_u64().unwrap_or(0) > 0 && ll["canBlockReload"] == true,
        "hls.js did not see a low-latency playlist (parts, blocking reload): {last}"
    );
    assert_used_low_latency_delivery(&last);
    let median = last["median"].as_u64().unwrap_or(u64::MAX);
    assert!(
        median <= 1500,
        "median glass to glass {median} ms > 1500 ms: {last}"
    );
}

/// Shaka Player's low-latency mode, with nothing else configured, through the same tiers:
/// parts, blocking reloads and hinted parts, no stall. Like hls.js without catch-up it
/// starts PART-HOLD-BACK behind the first playlist's last part and stays there (its
/// `liveSync` is off by default), so the same tune-in error is kept: measured 2026-11-22
/// medians 1.22-1.25 s (release build) and 1.43-1.60 s (this test's debug build at load
/// 4-7). Hence PART-HOLD-BACK plus at most a second, not 1.5 s.
///
/// Shaka requests every hinted part and stops on a 404 (fatal error 1001): it failed two
/// runs in seven while the origin could hint part N.6 of a segment whose last part was
/// N.5 (the hub learned of the last part before the segment's end; now one update).
#[test]
fn shaka_low_latency_through_two_tiers_over_http2_is_within_2_s_glass_to_glass() {
    let tiers = Tiers::start("g2g-shaka", 1, "");
    let last = glass_to_glass(&tiers, "demo", "g2g", Player::ShakaLowLatency);
    assert_played_cleanly(&last);
    assert_used_low_latency_delivery(&last);
    let median = last["median"].as_u64().unwrap_or(u64::MAX);
    assert!(
        median <= 2000,
        "median glass to glass {median} ms > 2000 ms: {last}"
    );
}

/// The harness on plain HLS (hls.js with lowLatencyMode off): a player that knows nothing
/// of LL-HLS plays the same LL stream through both tiers without a stall, about three
/// segments behind. bench/latency.sh measures the same beside nginx-rtmp.
#[test]
fn plain_hls_through_two_tiers_plays_without_stalls() {
    let tiers = Tiers::start("g2g-plain", 1, "");
    let last = glass_to_glass(&tiers, "demo", "g2g", Player::HlsJs { low_latency: false });
    assert_played_cleanly(&last);
}

/// WebRTC (WHEP) from the edge, fed through the mid-tier by the low-latency feed: the
/// picture's clock against the page's, frame by frame (issue 23's target: 500 ms).
#[test]
fn webrtc_through_two_tiers_is_within_500_ms_glass_to_glass() {
    let tiers = Tiers::start("g2g-webrtc", 1, "");
    let last = glass_to_glass(&tiers, "demo", "webrtc", Player::WebRtc);
    // Its one HTTP request, the WHEP offer, over HTTP/2 too.
    assert_played_cleanly(&last);
    let median = last["median"].as_u64().unwrap_or(u64::MAX);
    assert!(
        median <= 500,
        "median glass to glass {median} ms > 500 ms: {last}"
    );
}
