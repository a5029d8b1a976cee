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
    // Through a lower cache tier as well: it only knows its parent, `up`'s edge.
    let tier = Node::role(
        "archive-tier",
        "edge",
        &format!("[edge]\nparents = [\"{}\"]\n", node.http_base()),
    );
    let through_tier = decode(&tier.play_url("/demo/show/index.m3u8"), &[]);
    assert_eq!(through_tier.video_frames, 600, "{through_tier:?}");
    let listing = http_get(node.http, "/demo/show/recordings", &[]).unwrap();
    assert_eq!(listing.status, 200);
    let listing: serde_json::Value = serde_json::from_slice(&listing.body).unwrap();
    assert_eq!(listing[0]["recording_id"], rec.as_str());
    assert_eq!(listing[0]["state"], "archived");
}

#[test]
fn each_provider_is_archived_after_its_own_delay_which_it_can_change() {
    let providers = "[[providers]]\nname = \"fast\"\nstream_key = \"fast-key-000001\"\narchive_after = \"2s\"\n\
         [[providers]]\nname = \"slow\"\nstream_key = \"slow-key-000001\"\narchive_after = \"1h\"\n\
         [[admin.tokens]]\ntoken = \"fast-token-0000000001\"\nprovider = \"fast\"\n\
         [[admin.tokens]]\ntoken = \"slow-token-0000000001\"\nprovider = \"slow\"\n";
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

    // Only slow's own token may change slow's delay.
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
        put("fast-token-0000000001", r#"{"archive_after":"1s"}"#).status,
        403
    );
    assert_eq!(
        put("slow-token-0000000001", r#"{"archive_after":"soon"}"#).status,
        400
    );
    let unauthenticated = http_request(
        node.admin,
        "GET",
        "/api/v1/providers/slow/settings",
        &[("Authorization", "")],
    )
    .unwrap();
    assert_eq!(unauthenticated.status, 401);
    let changed = put("slow-token-0000000001", r#"{"archive_after":"1s"}"#);
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

/// Files of every ended recording under `data`, with their SHA-256, keyed by
/// `provider/stream/recording`.
fn snapshot(data: &std::path::Path) -> Vec<(String, Vec<(String, String)>)> {
    let mut out = Vec::new();
    let root = data.join("recordings");
    for provider in std::fs::read_dir(&root).unwrap().flatten() {
        for stream in std::fs::read_dir(provider.path()).unwrap().flatten() {
            for rec in std::fs::read_dir(stream.path()).unwrap().flatten() {
                let key = rec
                    .path()
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let mut files: Vec<(String, String)> = std::fs::read_dir(rec.path())
                    .unwrap()
                    .flatten()
                    .map(|f| f.file_name().into_string().unwrap())
                    .filter(|n| n.ends_with(".m4s") || n.ends_with(".mp4"))
                    .map(|n| {
                        let sum = sha256_hex(&std::fs::read(rec.path().join(&n)).unwrap());
                        (n, sum)
                    })
                    .collect();
                files.sort();
                out.push((key, files));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn archiver_killed_at_random_resumes_without_loss_or_duplicates() {
    let redis = Redis::start();
    let mut s3 = S3Server::start();
    let config = format!(
        "{}{}",
        redis.registry_toml("crash"),
        s3.archive_toml("1s").replace(
            "[archive.s3]",
            "concurrency = 4\nmax_rate = \"1MiB\"\n[archive.s3]"
        )
    );
    let ingest = Node::role("crash-ingest", "ingest", &config);
    let data = ingest.dir.join("data");
    let ffmpeg = tool("ffmpeg");
    let publishers: Vec<_> = ["one", "two", "three"]
        .iter()
        .map(|s| publish(&ffmpeg, &ingest.publish_url("demo", s, KEY), 6, "h264"))
        .collect();
    for p in publishers {
        assert!(wait_output(p).status.success());
    }
    for s in ["one", "two", "three"] {
        ingest.wait_recording_state("demo", s, "ended");
    }
    let before = snapshot(&data);
    assert_eq!(before.len(), 3);

    // kill -9 at random instants while uploads are under way, again and again.
    let mut archiver = Node::role_on(
        "crash-archiver",
        "archiver",
        "127.0.0.1",
        free_port(),
        Some(&data),
        &config,
    );
    let mut seed = Instant::now().elapsed().as_nanos() as u64 ^ u64::from(std::process::id());
    let mut kills = 0;
    for _ in 0..12 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(150 + (seed >> 33) % 1200));
        archiver.stop_with("KILL");
        kills += 1;
        if before
            .iter()
            .all(|(k, _)| !data.join("recordings").join(k).exists())
        {
            break;
        }
        archiver.start();
    }
    assert!(
        kills >= 3,
        "the archiver finished before it could be killed a few times"
    );
    if !archiver.is_running() {
        archiver.start();
    }
    wait_until("every recording archived", Duration::from_secs(90), || {
        before
            .iter()
            .all(|(k, _)| !data.join("recordings").join(k).exists())
    });

    for (key, files) in &before {
        let mut expected: Vec<String> = files.iter().map(|(n, _)| format!("{key}/{n}")).collect();
        for generated in [
            "_complete.json",
            "index.m3u8",
            "metadata.json",
            "playlist.m3u8",
            "stream-index.m3u8",
            "stream-live.m3u8",
        ] {
            expected.push(format!("{key}/{generated}"));
        }
        expected.sort();
        assert_eq!(
            s3.keys(key),
            expected,
            "exactly the recording's objects, once each"
        );
        for (name, sum) in files {
            let stored = s3.object(&format!("{key}/{name}")).unwrap();
            assert_eq!(&sha256_hex(&stored), sum, "{key}/{name}");
        }
    }

    // Storage down: nothing is deleted locally; archiving completes once it is back.
    s3.stop();
    let publisher = publish(
        &ffmpeg,
        &ingest.publish_url("demo", "outage", KEY),
        4,
        "h264",
    );
    assert!(wait_output(publisher).status.success());
    ingest.wait_recording_state("demo", "outage", "ended");
    let local = ingest.recordings("demo", "outage");
    assert_eq!(local.len(), 1);
    // Each object is tried a few times with backoff before the attempt counts as failed.
    wait_until("a failed archive attempt", Duration::from_secs(40), || {
        http_request_at(
            &archiver.host,
            archiver.admin,
            "GET",
            "/api/v1/archive",
            &[],
        )
        .is_ok_and(|r| !r.text().contains("\"failures\":0"))
    });
    assert!(
        local[0].exists(),
        "the local copy stays while storage is down"
    );
    let key = local[0]
        .strip_prefix(data.join("recordings"))
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        s3.keys(&key).is_empty() || !s3.keys(&key).iter().any(|k| k.ends_with("_complete.json"))
    );
    s3.restart();
    wait_until(
        "the archive after the outage",
        Duration::from_secs(60),
        || !local[0].exists(),
    );
    assert!(s3.keys(&key).contains(&format!("{key}/_complete.json")));
}
