//! The live path end to end: ffmpeg publishes over RTMP, ffmpeg plays over HLS through
//! the edge while live and after the end, and the recording on disk is complete.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const SECONDS: u32 = 20;
const FPS: u64 = 30;

struct Expect<'a> {
    provider: &'a str,
    stream: &'a str,
    codec: &'a str,
    codec_prefix: &'a str,
    extension: &'a str,
    seconds: u32,
}

fn publish_play_and_record(name: &str, ffmpeg: &Path, e: Expect<'_>) {
    let node = Node::up(name, "");
    let publisher = publish(
        ffmpeg,
        &node.publish_url(e.provider, e.stream, KEY),
        e.seconds,
        e.codec,
    );
    let base = format!("/{}/{}", e.provider, e.stream);

    // Once the publisher is connected, the origin holds playlist requests until the
    // first segment is cut.
    let deadline = Instant::now() + Duration::from_secs(10);
    let live = loop {
        let r = http_get(node.http, &format!("{base}/live.m3u8"), &[]).unwrap();
        if r.status != 404 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(live.status, 200, "{}", live.text());
    assert_eq!(
        live.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert!(live
        .header("cache-control")
        .is_some_and(|c| c.contains("max-age=1")));
    let text = live.text();
    assert_eq!(
        tag_value(&text, "#EXT-X-TARGETDURATION"),
        Some("2"),
        "{text}"
    );
    assert_eq!(
        tag_value(&text, "#EXT-X-MEDIA-SEQUENCE"),
        Some("1"),
        "{text}"
    );
    assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:20"), "{text}");
    assert!(!text.contains("#EXT-X-ENDLIST"), "{text}");
    assert_eq!(
        text.contains("#EXT-X-MAP:URI="),
        e.extension == "m4s",
        "{text}"
    );

    // The whole recording, as it grows: an EVENT playlist from the first segment.
    let first_uri = playlist_segments(&text)[0].1.clone();
    let recording_id = first_uri.split('/').next().unwrap().to_owned();
    let event = http_get(
        node.http,
        &format!("{base}/{recording_id}/playlist.m3u8"),
        &[],
    )
    .unwrap()
    .text();
    assert!(
        event.contains("#EXT-X-PLAYLIST-TYPE:EVENT") && !event.contains("#EXT-X-ENDLIST"),
        "{event}"
    );
    assert!(
        playlist_segments(&event)[0].1.starts_with("000001."),
        "{event}"
    );

    // A player that joins at the first segment and follows the live playlist to its end.
    let live_url = node.play_url(&format!("{base}/index.m3u8"));
    let live_player = std::thread::spawn(move || decode(&live_url, &["-live_start_index", "0"]));

    let published = wait_output(publisher);
    assert!(
        published.status.success(),
        "ffmpeg publish failed: {}",
        String::from_utf8_lossy(&published.stderr)
    );
    let journal = node.wait_recording_state(e.provider, e.stream, "ended");
    let frames = FPS * u64::from(e.seconds);
    let segments = journal["segments"].as_array().unwrap().len() as u64;
    let tolerance = segments;

    let live_decoded = live_player.join().unwrap();
    assert!(
        live_decoded.video_frames.abs_diff(frames) <= tolerance,
        "live player decoded {} video frames, published {frames}",
        live_decoded.video_frames
    );
    assert!(live_decoded.audio_frames > 0);

    // After the end the same URL serves the whole recording.
    let multivariant = http_get(node.http, &format!("{base}/index.m3u8"), &[])
        .unwrap()
        .text();
    let stream_inf = tag_value(&multivariant, "#EXT-X-STREAM-INF")
        .expect("variant")
        .to_owned();
    assert!(
        stream_inf.contains(&format!("CODECS=\"{}", e.codec_prefix)),
        "{stream_inf}"
    );
    assert!(stream_inf.contains("mp4a.40.2\""), "{stream_inf}");
    assert!(stream_inf.contains("RESOLUTION=1280x720"), "{stream_inf}");
    let bandwidth: u64 = stream_inf
        .split(',')
        .find_map(|kv| kv.strip_prefix("BANDWIDTH="))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        (2_000_000..10_000_000).contains(&bandwidth),
        "BANDWIDTH {bandwidth}"
    );
    let variant_uri = multivariant.lines().last().unwrap().to_owned();
    let vod = http_get(node.http, &format!("{base}/{variant_uri}"), &[])
        .unwrap()
        .text();
    assert!(
        vod.contains("#EXT-X-PLAYLIST-TYPE:VOD") && vod.contains("#EXT-X-ENDLIST"),
        "{vod}"
    );
    let entries = playlist_segments(&vod);
    assert_eq!(entries.len() as u64, segments);
    let target: f64 = tag_value(&vod, "#EXT-X-TARGETDURATION")
        .unwrap()
        .parse()
        .unwrap();
    let total: f64 = entries.iter().map(|(d, _)| d).sum();
    assert!(
        (total - f64::from(e.seconds)).abs() < 0.1,
        "EXTINF total {total}"
    );
    for (d, _) in &entries[..entries.len() - 1] {
        assert!(
            d.round() <= target && *d > 1.5,
            "EXTINF {d} vs target {target}"
        );
    }

    let vod_decoded = decode(&node.play_url(&format!("{base}/index.m3u8")), &[]);
    assert!(
        vod_decoded.video_frames.abs_diff(frames) <= tolerance,
        "{vod_decoded:?}, published {frames}"
    );
    assert!(
        (vod_decoded.duration - f64::from(e.seconds)).abs() < 0.2,
        "{vod_decoded:?}"
    );
    let audio_frames = f64::from(e.seconds) * 48000.0 / 1024.0;
    assert!(
        (vod_decoded.audio_frames as f64 - audio_frames).abs() < 50.0,
        "{vod_decoded:?}"
    );
    assert_eq!(vod_decoded.video_codec, e.codec);

    // Every segment on disk is listed, the right size, and acceptable to ffprobe.
    let dir = node.recordings(e.provider, e.stream).pop().unwrap();
    let init = journal["inits"][0]
        .as_str()
        .map(|i| std::fs::read(dir.join(i)).unwrap());
    for (i, s) in journal["segments"].as_array().unwrap().iter().enumerate() {
        let file = dir.join(s["file"].as_str().unwrap());
        assert!(file
            .to_string_lossy()
            .ends_with(&format!("{:06}.{}", i + 1, e.extension)));
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(bytes.len() as u64, s["bytes"].as_u64().unwrap());
        let probe_file = node.dir.join(format!(
            "probe-{i}.{}",
            if init.is_some() { "mp4" } else { "ts" }
        ));
        let mut whole = init.clone().unwrap_or_default();
        whole.extend_from_slice(&bytes);
        std::fs::write(&probe_file, whole).unwrap();
        assert_probe_ok(&probe_file);
    }
}

#[test]
fn h264_aac_as_fmp4_live_and_recorded() {
    publish_play_and_record(
        "fmp4",
        &tool("ffmpeg"),
        Expect {
            provider: "demo",
            stream: "cam",
            codec: "h264",
            codec_prefix: "avc1.",
            extension: "m4s",
            seconds: SECONDS,
        },
    );
}

#[test]
fn h264_aac_as_mpeg_ts_live_and_recorded() {
    publish_play_and_record(
        "ts",
        &tool("ffmpeg"),
        Expect {
            provider: "tsprov",
            stream: "cam",
            codec: "h264",
            codec_prefix: "avc1.",
            extension: "ts",
            seconds: SECONDS,
        },
    );
}

#[test]
fn hevc_over_enhanced_rtmp_as_fmp4() {
    publish_play_and_record(
        "hevc-fmp4",
        &enhanced_rtmp_ffmpeg(),
        Expect {
            provider: "demo",
            stream: "hevc",
            codec: "hevc",
            codec_prefix: "hvc1.",
            extension: "m4s",
            seconds: 12,
        },
    );
}

#[test]
fn hevc_over_enhanced_rtmp_as_mpeg_ts() {
    publish_play_and_record(
        "hevc-ts",
        &enhanced_rtmp_ffmpeg(),
        Expect {
            provider: "tsprov",
            stream: "hevc",
            codec: "hevc",
            codec_prefix: "hvc1.",
            extension: "ts",
            seconds: 12,
        },
    );
}

#[test]
fn coalesces_concurrent_misses_into_one_origin_fetch() {
    let node = Node::up("coalesce", "");
    let publisher = publish(
        &tool("ffmpeg"),
        &node.publish_url("demo", "co", KEY),
        6,
        "h264",
    );
    assert!(wait_output(publisher).status.success());
    let journal = node.wait_recording_state("demo", "co", "ended");
    let id = journal["recording_id"].as_str().unwrap().to_owned();
    let path = format!("/demo/co/{id}/000001.m4s");
    let expected = std::fs::read(node.recordings("demo", "co")[0].join("000001.m4s")).unwrap();

    let before = node.metric("streamcdn_origin_requests_total{kind=\"segment\"");
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(200));
    let threads: Vec<_> = (0..200)
        .map(|_| {
            let (barrier, path, port) = (barrier.clone(), path.clone(), node.http);
            std::thread::spawn(move || {
                barrier.wait();
                http_get(port, &path, &[]).unwrap()
            })
        })
        .collect();
    for t in threads {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200);
        assert!(
            r.body == expected,
            "coalesced response differs from the recorded segment"
        );
    }
    let after = node.metric("streamcdn_origin_requests_total{kind=\"segment\"");
    assert_eq!(
        after - before,
        1.0,
        "200 concurrent misses must cause exactly one origin fetch"
    );

    // Range and HEAD come from the same cached object.
    let r = http_get(node.http, &path, &[("Range", "bytes=100-199")]).unwrap();
    assert_eq!(r.status, 206);
    assert_eq!(r.body, expected[100..200]);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 100-199/{}", expected.len()).as_str())
    );
    let r = http_request(node.http, "HEAD", &path, &[]).unwrap();
    assert_eq!(
        (r.status, r.header("content-length")),
        (200, Some(expected.len().to_string().as_str()))
    );
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(r
        .header("cache-control")
        .is_some_and(|c| c.contains("immutable")));
    assert_eq!(
        node.metric("streamcdn_origin_requests_total{kind=\"segment\"") - before,
        1.0
    );
}

#[test]
fn sigterm_drains_flushing_the_segment_in_progress_and_interrupting_the_recording() {
    let mut node = Node::role_with_node(
        "shutdown",
        "up",
        "127.0.0.1",
        free_port(),
        None,
        "drain_timeout = \"2s\"",
        "",
    );
    let publisher = publish(
        &tool("ffmpeg"),
        &node.publish_url("demo", "bye", KEY),
        30,
        "h264",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while node.recordings("demo", "bye").is_empty()
        || node.metric("streamcdn_ingest_segments_recorded_total") < 2.0
    {
        assert!(Instant::now() < deadline, "no segments recorded");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1000));
    let status = node.stop_with("TERM");
    assert!(status.success(), "exit status {status}");
    let _ = wait_output(publisher);
    let dir = node.recordings("demo", "bye").pop().unwrap();
    let journal: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("journal.json")).unwrap()).unwrap();
    // A drain, not an end: ffmpeg cannot be asked to reconnect, so it was closed after
    // node.drain_timeout, and the recording waits for it to come back.
    assert_eq!(journal["state"], "live", "{journal}");
    assert!(journal["interrupted_at"].is_string(), "{journal}");
    let segments = journal["segments"].as_array().unwrap();
    // Two whole segments and the partial one in progress when the publisher was closed.
    assert!(segments.len() >= 3, "{segments:?}");
    let last = segments.last().unwrap();
    assert!(
        last["duration_secs"].as_f64().unwrap() < 2.0,
        "last segment is the flushed partial one"
    );
    for s in segments {
        assert!(dir.join(s["file"].as_str().unwrap()).is_file());
    }
    let log = node.log_text();
    assert!(log.contains("publish interrupted by the drain"), "{log}");
}

#[test]
fn a_crash_loses_at_most_the_segment_in_progress() {
    // After a crash the recording waits, interrupted, for its publisher to come back;
    // this provider's publishers have 2 s.
    let mut node = Node::up(
        "crash",
        &format!(
            "[[providers]]\nname = \"crashy\"\nstream_key = \"{KEY}\"\nreconnect_window = \"2s\"\n"
        ),
    );
    let publisher = publish(
        &tool("ffmpeg"),
        &node.publish_url("crashy", "boom", KEY),
        30,
        "h264",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while node.metric("streamcdn_ingest_segments_recorded_total") < 3.0 {
        assert!(Instant::now() < deadline, "no segments recorded");
        std::thread::sleep(Duration::from_millis(100));
    }
    let recorded = node.metric("streamcdn_ingest_segments_recorded_total") as usize;
    node.stop_with("KILL");
    let _ = wait_output(publisher);
    node.start();
    let journal = node.wait_recording_state("crashy", "boom", "ended");
    let segments = journal["segments"].as_array().unwrap();
    assert!(
        segments.len() >= recorded,
        "journal lost durable segments: {} < {recorded}",
        segments.len()
    );
    let decoded = decode(&node.play_url("/crashy/boom/index.m3u8"), &[]);
    assert_eq!(
        decoded.video_frames,
        segments.len() as u64 * 60,
        "{decoded:?}"
    );
}

#[test]
fn ingest_and_edge_run_as_separate_processes() {
    let redis = Redis::start();
    let registry = redis.registry_toml("split");
    let ingest = Node::role("split-ingest", "ingest", &registry);
    let edge = Node::role("split-edge", "edge", &registry);
    let publisher = publish(
        &tool("ffmpeg"),
        &ingest.publish_url("demo", "split", KEY),
        6,
        "h264",
    );
    assert!(wait_output(publisher).status.success());
    ingest.wait_recording_state("demo", "split", "ended");
    let decoded = decode(&edge.play_url("/demo/split/index.m3u8"), &[]);
    assert_eq!(decoded.video_frames, 180, "{decoded:?}");
    assert!(edge.metric("streamcdn_edge_upstream_fetches_total") >= 5.0);
    assert_eq!(
        ingest.metric("streamcdn_edge_upstream_fetches_total"),
        0.0,
        "the ingest runs no edge"
    );
}
