//! Server-side archiving end to end: ffmpeg publishes, the same URL plays live, then
//! from the ingest's local copy, then from on-demand storage (a real S3 server,
//! s3s-fs), and the archiver survives kill -9 and storage outages.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn one_url_plays_live_then_local_then_archived() {
    let s3 = S3Server::start();
    let node = Node::up("archive-phases", &s3.archive_toml("12s"));
    let url = node.play_url("/demo/show/index.m3u8");

    // Live: a player that joins at the first segment and follows to the end.
    let publisher = publish(
        &tool("ffmpeg"),
        &node.publish_url("demo", "show", KEY),
        20,
        "h264",
    );
    wait_until("the stream to go live", Duration::from_secs(15), || {
        http_get(node.http, "/demo/show/live.m3u8", &[]).is_ok_and(|r| r.status == 200)
    });
    let live_url = node.play_url("/demo/show/live.m3u8");
    let live_player = std::thread::spawn(move || decode(&live_url, &["-live_start_index", "0"]));
    assert!(wait_output(publisher).status.success());
    let live = live_player.join().unwrap();
    assert_eq!(live.video_frames, 600, "live: {live:?}");

    // Ended, not yet archived: the whole recording from the ingest's local copy.
    let recording = node.wait_recording_state("demo", "show", "ended");
    let dir = node.recordings("demo", "show").pop().unwrap();
    let local = decode(&url, &[]);
    assert_eq!(local.video_frames, 600, "local: {local:?}");
    assert!((local.duration - 20.0).abs() < 0.3, "{local:?}");
    let rec = recording["recording_id"].as_str().unwrap().to_owned();
    let prefix = format!("demo/show/{rec}");
    assert!(
        s3.keys(&prefix)
            .iter()
            .all(|k| !k.ends_with("_complete.json")),
        "archived too early"
    );
    let files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".m4s") || n.ends_with(".mp4"))
        .map(|n| (n.clone(), std::fs::read(dir.join(&n)).unwrap()))
        .collect();

    // Archived: complete in S3, the local copy gone, the same URL plays from storage.
    wait_until("the archive", Duration::from_secs(40), || !dir.exists());
    let keys = s3.keys(&prefix);
    assert!(
        keys.contains(&format!("{prefix}/_complete.json")),
        "{keys:?}"
    );
    for (name, bytes) in &files {
        let stored = s3.object(&format!("{prefix}/{name}")).expect(name);
        assert_eq!(sha256_hex(&stored), sha256_hex(bytes), "{name}");
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&s3.object(&format!("{prefix}/metadata.json")).unwrap()).unwrap();
    let segments = metadata["segments"].as_array().unwrap();
    assert_eq!(
        segments.len(),
        recording["segments"].as_array().unwrap().len()
    );
    for s in segments {
        let stored = s3
            .object(&format!("{prefix}/{}", s["file"].as_str().unwrap()))
            .unwrap();
        assert_eq!(s["bytes"].as_u64().unwrap(), stored.len() as u64);
        assert_eq!(s["sha256"].as_str().unwrap(), sha256_hex(&stored));
    }
    let vod = String::from_utf8(s3.object(&format!("{prefix}/playlist.m3u8")).unwrap()).unwrap();
    assert!(
        vod.contains("#EXT-X-PLAYLIST-TYPE:VOD") && vod.contains("#EXT-X-ENDLIST"),
        "{vod}"
    );
    let archived = decode(&url, &[]);
    assert_eq!(archived.video_frames, 600, "archived: {archived:?}");
    assert!((archived.duration - 20.0).abs() < 0.3, "{archived:?}");
    let by_id = decode(&node.play_url(&format!("/demo/show/{rec}/index.m3u8")), &[]);
    assert_eq!(by_id.video_frames, 600);
    let listing = http_get(node.http, "/demo/show/recordings", &[]).unwrap();
    assert_eq!(listing.status, 200);
    let listing: serde_json::Value = serde_json::from_slice(&listing.body).unwrap();
    assert_eq!(listing[0]["recording_id"], rec.as_str());
    assert_eq!(listing[0]["state"], "archived");
}

#[test]
fn each_provider_is_archived_after_its_own_delay_which_it_can_change() {
    let providers = "[[providers]]\nname = \"fast\"\nstream_key = \"fast-key-000001\"\narchive_after = \"2s\"\n\
         [[providers]]\nname = \"slow\"\nstream_key = \"slow-key-000001\"\narchive_after = \"1h\"\n";
    let node = Node::up("archive-delays", providers);
    let ffmpeg = tool("ffmpeg");
    let fast = publish(
        &ffmpeg,
        &node.publish_url("fast", "a", "fast-key-000001"),
        4,
        "h264",
    );
    let slow = publish(
        &ffmpeg,
        &node.publish_url("slow", "b", "slow-key-000001"),
        4,
        "h264",
    );
    assert!(wait_output(fast).status.success() && wait_output(slow).status.success());
    node.wait_recording_state("slow", "b", "ended");

    // A reconnect within the window continues the recording.
    let again = publish(
        &ffmpeg,
        &node.publish_url("slow", "b", "slow-key-000001"),
        4,
        "h264",
    );
    assert!(wait_output(again).status.success());
    let journal_b = node.wait_recording_state("slow", "b", "ended");
    assert_eq!(node.recordings("slow", "b").len(), 1, "one recording");
    let discontinuities = journal_b["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["discontinuity"] == true)
        .count();
    assert_eq!(discontinuities, 1);

    // fast (2 s) is archived; slow (1 h) is not.
    wait_until("fast to be archived", Duration::from_secs(20), || {
        node.recordings("fast", "a").is_empty()
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        node.recordings("slow", "b").len(),
        1,
        "slow archived before its delay"
    );

    // Only slow's own key may change slow's delay.
    let put = |key: &str, body: &str| {
        http_request_body(
            node.admin,
            "PUT",
            "/api/v1/providers/slow/settings",
            &[
                ("Authorization", &format!("Bearer {key}")),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
        .unwrap()
    };
    assert_eq!(
        put("fast-key-000001", r#"{"archive_after":"1s"}"#).status,
        403
    );
    assert_eq!(
        put("slow-key-000001", r#"{"archive_after":"soon"}"#).status,
        400
    );
    let unauthenticated =
        http_request(node.admin, "GET", "/api/v1/providers/slow/settings", &[]).unwrap();
    assert_eq!(unauthenticated.status, 401);
    let changed = put("slow-key-000001", r#"{"archive_after":"1s"}"#);
    assert_eq!(changed.status, 200, "{}", changed.text());
    assert!(
        changed.text().contains("\"archive_after\":\"1s\""),
        "{}",
        changed.text()
    );
    wait_until(
        "slow to be archived after the change",
        Duration::from_secs(20),
        || node.recordings("slow", "b").is_empty(),
    );
    let decoded = decode(&node.play_url("/slow/b/index.m3u8"), &[]);
    assert_eq!(decoded.video_frames, 240, "{decoded:?}");
    let status = http_get(node.admin, "/api/v1/archive", &[]).unwrap().text();
    assert!(status.contains("\"archived\":2"), "{status}");
}
