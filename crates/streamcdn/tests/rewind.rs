//! Rewind (`dvr_window`): a provider sets it through the API, and the live playlist
//! then lists that much of the recording (its oldest segment decodes), while the live
//! edge keeps LL-HLS (parts near the end only, blocking reload); turned off, the
//! playlist is the short live window again.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn set_dvr_window(node: &Node, window: &str) -> String {
    let response = http_request_body(
        node.admin,
        "PUT",
        "/api/v1/providers/demo/settings",
        &[("Content-Type", "application/json")],
        format!("{{\"dvr_window\":\"{window}\"}}").as_bytes(),
    )
    .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    response.text()
}

#[test]
fn the_live_playlist_reaches_back_over_the_dvr_window() {
    let node = Node::up("rewind", "");
    let settings = set_dvr_window(&node, "2m");
    assert!(settings.contains("\"dvr_window\":\"2m\""), "{settings}");
    let refused = http_request_body(
        node.admin,
        "PUT",
        "/api/v1/providers/demo/settings",
        &[("Content-Type", "application/json")],
        br#"{"dvr_window":"30days"}"#,
    )
    .unwrap();
    assert_eq!(refused.status, 400, "{}", refused.text());

    let publisher = publish(
        &tool("ffmpeg"),
        &node.publish_url("demo", "dvr", KEY),
        40,
        "h264",
    );
    // Ten segments (the usual window is six).
    let live = || {
        http_get(node.http, "/demo/dvr/live.m3u8", &[])
            .ok()
            .filter(|r| r.status == 200)
            .map(|r| r.text())
            .unwrap_or_default()
    };
    wait_until(
        "ten segments in the live playlist",
        Duration::from_secs(40),
        || playlist_segments(&live()).len() >= 10,
    );
    let text = live();
    let segments = playlist_segments(&text);
    // From the recording's first segment, and still LL-HLS at the end.
    let journal = node.wait_recording_state("demo", "dvr", "live");
    let first = &journal["segments"][0];
    assert!(
        segments[0].1.ends_with(first["file"].as_str().unwrap()),
        "{text}"
    );
    let first_sequence = first["sequence"].as_u64().unwrap();
    assert_eq!(
        tag_value(&text, "#EXT-X-MEDIA-SEQUENCE"),
        Some(first_sequence.to_string().as_str()),
        "{text}"
    );
    assert!(
        !text.contains("#EXT-X-PLAYLIST-TYPE"),
        "a sliding window: {text}"
    );
    assert!(text.contains("#EXT-X-PART-INF:"), "{text}");
    assert!(text.contains("#EXT-X-PRELOAD-HINT:"), "{text}");
    let before_parts = text.split("#EXT-X-PART:").next().unwrap();
    assert!(
        playlist_segments(before_parts).len() >= segments.len() - 3,
        "parts only near the live edge: {text}"
    );
    // A blocking reload of the next segment answers, with the window.
    let next = first_sequence + segments.len() as u64;
    let held = http_get(
        node.http,
        &format!("/demo/dvr/live.m3u8?_HLS_msn={next}"),
        &[],
    )
    .unwrap();
    assert_eq!(held.status, 200);
    assert!(playlist_segments(&held.text()).len() > segments.len());
    // A delta update skips the old segments.
    let delta = http_get(node.http, "/demo/dvr/live.m3u8?_HLS_skip=YES", &[]).unwrap();
    assert!(
        delta.text().contains("#EXT-X-SKIP:SKIPPED-SEGMENTS="),
        "{}",
        delta.text()
    );

    // The oldest listed segment plays: its init segment and it, decoded by ffmpeg.
    let map = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
        .map(|l| l.trim_end_matches('"').to_owned())
        .unwrap();
    let init = http_get(node.http, &format!("/demo/dvr/{map}"), &[]).unwrap();
    let oldest = http_get(node.http, &format!("/demo/dvr/{}", segments[0].1), &[]).unwrap();
    assert_eq!((init.status, oldest.status), (200, 200));
    let file = node.dir.join("oldest.mp4");
    std::fs::write(&file, [init.body, oldest.body].concat()).unwrap();
    let decoded = Command::new(tool("ffmpeg"))
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(&file)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        decoded.status.success() && decoded.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&decoded.stderr)
    );
    let frames = decode(file.to_str().unwrap(), &[]);
    assert!(frames.video_frames >= 50, "{frames:?}");

    // Off again: the usual six segments.
    set_dvr_window(&node, "0s");
    wait_until("the short window", Duration::from_secs(10), || {
        let n = playlist_segments(&live()).len();
        (1..=6).contains(&n)
    });
    assert!(wait_output(publisher).status.success());
}
