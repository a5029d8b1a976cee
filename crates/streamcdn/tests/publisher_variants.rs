//! What real encoders send beyond the plain case: B-frames (OBS's x264 default), a
//! 32-bit RTMP timestamp wrap mid-stream, and audio-only streams.

mod common;

use common::*;

fn recorded_and_decoded(node: &Node, stream: &str) -> (u64, Decoded) {
    let journal = node.wait_recording_state("demo", stream, "ended");
    let segments = journal["segments"].as_array().unwrap().len() as u64;
    (
        segments,
        decode(&node.play_url(&format!("/demo/{stream}/index.m3u8")), &[]),
    )
}

#[test]
fn b_frames_keep_every_frame_in_order() {
    let node = Node::up("bframes", "");
    let p = publish_with(
        &tool("ffmpeg"),
        &node.publish_url("demo", "bf", KEY),
        10,
        "h264",
        &["-tune", "film", "-bf", "3"],
    );
    assert!(wait_output(p).status.success());
    let (segments, d) = recorded_and_decoded(&node, "bf");
    assert!(d.video_frames.abs_diff(300) <= segments, "{d:?}");
    assert!((d.duration - 10.0).abs() < 0.2, "{d:?}");
    // ffmpeg reports no decoding errors or non-monotonic timestamps.
    let out = std::process::Command::new(tool("ffmpeg"))
        .args([
            "-v",
            "error",
            "-i",
            &node.play_url("/demo/bf/index.m3u8"),
            "-f",
            "null",
            "-",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rtmp_timestamp_wrap_mid_stream_does_not_break_playback() {
    let node = Node::up("wrap", "");
    // Timestamps start 10 s before 2^32 ms and wrap around mid-stream.
    let p = publish_with(
        &tool("ffmpeg"),
        &node.publish_url("demo", "wrap", KEY),
        20,
        "h264",
        &["-output_ts_offset", "4294957"],
    );
    assert!(wait_output(p).status.success());
    let (segments, d) = recorded_and_decoded(&node, "wrap");
    assert!(d.video_frames.abs_diff(600) <= segments, "{d:?}");
    assert!((d.duration - 20.0).abs() < 0.2, "{d:?}");
}

#[test]
fn audio_only_streams_are_recorded_whole() {
    let node = Node::up("audio-only", "");
    let p = std::process::Command::new(tool("ffmpeg"))
        .args([
            "-loglevel",
            "error",
            "-nostdin",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            "10",
            "-c:a",
            "aac",
            "-f",
            "flv",
        ])
        .arg(node.publish_url("demo", "radio", KEY))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_output(p).status.success());
    let (_, d) = recorded_and_decoded(&node, "radio");
    assert_eq!(d.video_frames, 0);
    // 10 s at 44.1 kHz is 430.7 AAC frames.
    assert!(d.audio_frames.abs_diff(431) <= 2, "{d:?}");
    let multivariant = http_get(node.http, "/demo/radio/index.m3u8", &[])
        .unwrap()
        .text();
    assert!(
        multivariant.contains("CODECS=\"mp4a.40.2\""),
        "{multivariant}"
    );
}
