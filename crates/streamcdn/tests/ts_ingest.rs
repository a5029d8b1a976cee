//! MPEG-TS publishing end to end, without SRT: ffmpeg uploads a transport stream to the
//! ingest (`PUT /<provider>/<stream>/ingest.ts` on the origin listener, the stream key as
//! bearer), a player follows the live stream through the edge, the recording decodes to
//! every published frame, and a wrong or missing key is refused with nothing recorded.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const FPS: u64 = 30;

fn ingest_url(node: &Node, provider: &str, stream: &str) -> String {
    format!(
        "http://{}:{}/{provider}/{stream}/ingest.ts",
        node.host, node.origin
    )
}

/// ffmpeg publishing `seconds` of generated 640x360 video at 30 fps (keyframe every 2 s)
/// and 48 kHz AAC as MPEG-TS over a chunked HTTP `PUT`.
fn publish_ts(url: &str, key: &str, codec: &str, seconds: u32) -> Child {
    let video: &[&str] = match codec {
        "hevc" => &[
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            "keyint=60:min-keyint=60:log-level=error",
        ],
        _ => &[
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "60",
            "-keyint_min",
            "60",
            "-sc_threshold",
            "0",
            "-bf",
            "2",
        ],
    };
    Command::new(tool("ffmpeg"))
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string()])
        .args(video)
        .args([
            "-b:v", "1M", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k",
        ])
        .args(["-f", "mpegts", "-method", "PUT", "-headers"])
        .arg(format!("Authorization: Bearer {key}\r\n"))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ffmpeg")
}

/// Waits until the edge serves the stream's live playlist.
fn wait_live(node: &Node, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = http_get(node.http, &format!("{base}/live.m3u8"), &[]).unwrap();
        if r.status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the live playlist never came: {} {}",
            r.status,
            r.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn publish_play_and_record(name: &str, provider: &str, codec: &str, seconds: u32) {
    let node = Node::up(name, "");
    let stream = "cam";
    let base = format!("/{provider}/{stream}");
    let publisher = publish_ts(&ingest_url(&node, provider, stream), KEY, codec, seconds);
    wait_live(&node, &base);

    // A player that joins at the first segment and follows the live stream to its end.
    let live_url = node.play_url(&format!("{base}/index.m3u8"));
    let live_player = std::thread::spawn(move || decode(&live_url, &["-live_start_index", "0"]));

    let published = wait_output(publisher);
    assert!(
        published.status.success(),
        "ffmpeg publish failed: {}",
        String::from_utf8_lossy(&published.stderr)
    );
    let journal = node.wait_recording_state(provider, stream, "ended");
    let frames = FPS * u64::from(seconds);
    let segments = journal["segments"].as_array().unwrap().len() as u64;
    assert!(segments >= u64::from(seconds) / 2, "{journal}");

    let live = live_player.join().unwrap();
    assert!(
        live.video_frames.abs_diff(frames) <= segments,
        "the live player decoded {live:?}, published {frames} frames"
    );
    assert!(live.audio_frames > 0, "{live:?}");

    let multivariant = http_get(node.http, &format!("{base}/index.m3u8"), &[])
        .unwrap()
        .text();
    let codec_prefix = if codec == "hevc" { "hvc1." } else { "avc1." };
    assert!(
        multivariant.contains(&format!("CODECS=\"{codec_prefix}")),
        "{multivariant}"
    );
    assert!(multivariant.contains("mp4a.40.2\""), "{multivariant}");
    assert!(
        multivariant.contains("RESOLUTION=640x360"),
        "{multivariant}"
    );

    // The recording holds every frame the publisher sent.
    let recorded = decode(&node.play_url(&format!("{base}/index.m3u8")), &[]);
    assert_eq!(recorded.video_frames, frames, "{recorded:?}");
    assert_eq!(recorded.video_codec, codec);
    assert!(
        (recorded.duration - f64::from(seconds)).abs() < 0.2,
        "{recorded:?}"
    );
    let audio_frames = f64::from(seconds) * 48000.0 / 1024.0;
    assert!(
        (recorded.audio_frames as f64 - audio_frames).abs() < 10.0,
        "{recorded:?}"
    );
    let dir = node.recordings(provider, stream).pop().unwrap();
    let init = journal["inits"][0]
        .as_str()
        .map(|i| std::fs::read(dir.join(i)).unwrap());
    for (i, s) in journal["segments"].as_array().unwrap().iter().enumerate() {
        let mut whole = init.clone().unwrap_or_default();
        whole.extend(std::fs::read(dir.join(s["file"].as_str().unwrap())).unwrap());
        let ext = if init.is_some() { "mp4" } else { "ts" };
        let probe = node.dir.join(format!("probe-{i}.{ext}"));
        std::fs::write(&probe, whole).unwrap();
        assert_probe_ok(&probe);
    }
}

#[test]
fn h264_aac_over_http_put_plays_live_through_the_edge_and_is_recorded_whole() {
    publish_play_and_record("ts-put-h264", "demo", "h264", 12);
}

#[test]
fn hevc_aac_over_http_put_is_recorded_whole_as_ts_segments() {
    publish_play_and_record("ts-put-hevc", "tsprov", "hevc", 8);
}

#[test]
fn a_wrong_or_missing_key_is_refused_and_nothing_is_recorded() {
    let node = Node::up("ts-put-refused", "");
    let put = |path: &str, headers: &[(&str, &str)]| {
        let mut headers = headers.to_vec();
        headers.push(("Content-Length", "0"));
        http_request_at(&node.host, node.origin, "PUT", path, &headers).unwrap()
    };
    let wrong = put(
        "/demo/cam/ingest.ts",
        &[("Authorization", "Bearer not-the-key")],
    );
    assert_eq!(wrong.status, 403, "{}", wrong.text());
    assert!(
        wrong.text().contains("wrong stream key"),
        "{}",
        wrong.text()
    );
    // (An empty value keeps the harness from sending its admin token.)
    let missing = put("/demo/cam/ingest.ts", &[("Authorization", "")]);
    assert_eq!(missing.status, 401, "{}", missing.text());
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    let unknown = put(
        "/nobody/cam/ingest.ts",
        &[("Authorization", &format!("Bearer {KEY}"))],
    );
    assert_eq!(unknown.status, 404, "{}", unknown.text());

    // ffmpeg with a wrong key publishes nothing.
    wait_output(publish_ts(
        &ingest_url(&node, "demo", "cam"),
        "not-the-key",
        "h264",
        2,
    ));
    assert!(node.recordings("demo", "cam").is_empty());
    assert!(node.metric("streamcdn_publish_refused_total{protocol=\"http\"") >= 4.0);
    assert!(
        http_get(node.http, "/demo/cam/live.m3u8", &[])
            .unwrap()
            .status
            != 200,
        "a refused publisher must not be live"
    );
}
