//! The command invocation system end to end: `up` (its CIS, its top-tier edge) and a
//! second edge below it sharing Redis, a published stream, and `streamcdn trigger`
//! purging, invalidating and prepositioning through the edges' control endpoints.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

const COMMAND: &str = "application/cdni; ptype=ci-trigger-command";

/// The sum of the samples of `name` whose line contains every one of `labels`.
fn metric_with(node: &Node, name: &str, labels: &[&str]) -> f64 {
    let text = http_request_at(&node.host, node.admin, "GET", "/metrics", &[])
        .expect("metrics")
        .text();
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn trigger_cli(admin: &Node, operation: &str, urls: &[String]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_streamcdn"))
        .env("STREAMCDN_ADMIN_TOKEN", ADMIN_TOKEN)
        .args(["trigger", operation])
        .args(urls)
        .args([
            "--admin",
            &format!("http://{}:{}", admin.host, admin.admin),
            "--timeout",
            "60",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn streamcdn trigger")
}

/// Posts a purge of `path` to the admin API; the trigger's URL and path.
fn post_purge(up: &Node, path: &str) -> (String, String) {
    post_command(
        up,
        &format!(
            r#"{{"trigger": {{"type": "purge", "content.urls": ["{}"]}}}}"#,
            up.play_url(path)
        ),
    )
}

/// Posts a trigger command to the admin API; the trigger's URL and path.
fn post_command(up: &Node, command: &str) -> (String, String) {
    let created = http_request_body(
        up.admin,
        "POST",
        "/api/v1/triggers",
        &[("Content-Type", COMMAND)],
        command.as_bytes(),
    )
    .unwrap();
    assert_eq!(created.status, 201, "{command}: {}", created.text());
    let location = created.header("location").unwrap().to_owned();
    let path = format!("/api/v1/{}", location.split_once("/api/v1/").unwrap().1);
    (location, path)
}

/// Polls a trigger's status resource (30 s at most) until it says `status`.
fn wait_status(up: &Node, path: &str, status: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = http_request_at(&up.host, up.admin, "GET", path, &[])
            .unwrap()
            .text();
        if text.contains(&format!("\"{status}\"")) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run_trigger(admin: &Node, operation: &str, urls: &[String]) -> (Output, Duration) {
    let started = Instant::now();
    let output = trigger_cli(admin, operation, urls)
        .wait_with_output()
        .unwrap();
    (output, started.elapsed())
}

fn assert_complete(output: &Output, servers: usize) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "trigger failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(&format!("complete, servers {servers}/{servers} done")),
        "{stdout}"
    );
    stdout
}

fn x_cache(node: &Node, path: &str) -> String {
    let answer = http_get(node.http, path, &[]).unwrap();
    assert_eq!(answer.status, 200, "{path}: {}", answer.text());
    answer.header("x-cache").unwrap_or_default().to_owned()
}

/// Publishes `seconds` of video as `stream` and returns its ended recording's path.
fn recording(up: &Node, stream: &str) -> String {
    let publisher = publish(
        &tool("ffmpeg"),
        &up.publish_url("demo", stream, KEY),
        6,
        "h264",
    );
    assert!(wait_output(publisher).status.success());
    up.wait_recording_state("demo", stream, "ended");
    let dir = up.recordings("demo", stream).pop().expect("a recording");
    let id = dir.file_name().unwrap().to_string_lossy().into_owned();
    format!("/demo/{stream}/{id}")
}

fn segments(node: &Node, recording: &str) -> Vec<String> {
    let text = http_get(node.http, &format!("{recording}/playlist.m3u8"), &[])
        .unwrap()
        .text();
    let mut paths: Vec<String> = playlist_segments(&text)
        .into_iter()
        .map(|(_, name)| format!("{recording}/{name}"))
        .collect();
    assert!(paths.len() >= 3, "{text}");
    paths.push(format!("{recording}/init.mp4"));
    paths
}

#[test]
fn purge_invalidate_and_preposition_reach_every_edge() {
    let redis = Redis::start();
    let registry = redis.registry_toml("triggers");
    let mut up = Node::up("trig-up", &registry);
    let edge_config = format!("{registry}[edge]\nparents = [\"{}\"]\n", up.http_base());
    let mut edge = Node::role("trig-edge", "edge", &edge_config);
    let rec = recording(&up, "cam");
    let paths = segments(&up, &rec);
    let segment = paths[0].clone();

    // Both edges warm: the second request is a hit.
    for node in [&up, &edge] {
        x_cache(node, &segment);
        assert_eq!(x_cache(node, &segment), "HIT");
    }
    let origin_fetches = up.metric("streamcdn_edge_upstream_fetches_total");
    let parent_fetches = edge.metric("streamcdn_edge_upstream_fetches_total");

    // Purge: complete on both servers, then a miss at each, refilled from upstream.
    let (output, took) = run_trigger(&up, "purge", &[up.play_url(&segment)]);
    let stdout = assert_complete(&output, 2);
    eprintln!("purge → complete in {took:?} (CLI process included)\n{stdout}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    for node in [&up, &edge] {
        let control = format!("http://{}:{}/_streamcdn/control", node.host, node.http);
        assert!(stdout.contains(&control), "{control} missing:\n{stdout}");
    }
    assert_eq!(x_cache(&edge, &segment), "MISS");
    assert_eq!(
        x_cache(&up, &segment),
        "HIT",
        "refilled by the edge's miss just now"
    );
    assert!(up.metric("streamcdn_edge_upstream_fetches_total") > origin_fetches);
    assert!(edge.metric("streamcdn_edge_upstream_fetches_total") > parent_fetches);
    assert_eq!(x_cache(&edge, &segment), "HIT");

    // The CIS's own measure, acceptance to `complete`, without the CLI.
    let (sum, count) = (
        up.metric("streamcdn_cis_trigger_duration_seconds_sum"),
        up.metric("streamcdn_cis_trigger_duration_seconds_count"),
    );
    eprintln!(
        "CIS: {count} trigger(s), {:.1} ms on average to complete",
        sum / count * 1e3
    );

    // A pattern: every media segment of the recording, whatever the host.
    let pattern = format!("*{rec}/*.m4s");
    let objects = || metric_with(&edge, "streamcdn_edge_control_objects_total", &["purge"]);
    let before = objects();
    let (output, _) = run_trigger(&up, "purge", &["--pattern".into(), pattern]);
    assert_complete(&output, 2);
    assert!(objects() > before, "the pattern purged nothing at the edge");
    assert_eq!(x_cache(&edge, &segment), "MISS");
    assert_eq!(
        x_cache(&up, &segment),
        "HIT",
        "refilled by the edge's miss just now"
    );

    // Invalidate a segment and the playlist: the next request is conditional and
    // answered 304, down to the origin.
    let playlist = format!("{rec}/playlist.m3u8");
    x_cache(&edge, &playlist);
    let not_modified = |node: &Node| {
        metric_with(
            node,
            "streamcdn_edge_revalidations_total",
            &["not_modified"],
        )
    };
    let origin_304 = || metric_with(&up, "streamcdn_origin_requests_total", &["304"]);
    let (edge_304, top_304, origin_before) = (not_modified(&edge), not_modified(&up), origin_304());
    let (output, _) = run_trigger(
        &up,
        "invalidate",
        &[up.play_url(&segment), up.play_url(&playlist)],
    );
    assert_complete(&output, 2);
    assert_eq!(x_cache(&edge, &segment), "MISS");
    x_cache(&edge, &playlist);
    assert!(
        not_modified(&edge) >= edge_304 + 2.0,
        "edge revalidations: {}",
        not_modified(&edge)
    );
    assert!(
        not_modified(&up) >= top_304 + 2.0,
        "top tier revalidations: {}",
        not_modified(&up)
    );
    assert!(
        origin_304() >= origin_before + 2.0,
        "origin 304s: {}",
        origin_304()
    );
    assert_eq!(x_cache(&edge, &segment), "HIT", "a 304 refreshes the copy");

    // Preposition a recording's playlist: every segment is a hit on first request.
    let other = recording(&up, "other");
    let (output, _) = run_trigger(
        &up,
        "preposition",
        &[up.play_url(&format!("{other}/playlist.m3u8"))],
    );
    assert_complete(&output, 2);
    for path in segments(&up, &other) {
        assert_eq!(x_cache(&edge, &path), "HIT", "{path}");
    }

    // A down edge: the trigger stays active and completes once the edge is back; the
    // purge reaches the copy the edge kept on disk across its restart.
    x_cache(&edge, &paths[1]);
    std::thread::sleep(Duration::from_millis(500));
    edge.stop_with("KILL");
    let mut waiting = trigger_cli(&up, "purge", &[up.play_url(&paths[1])]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "the trigger finished without the edge"
    );
    let active =
        http_request_at(&up.host, up.admin, "GET", "/api/v1/triggers/active", &[]).unwrap();
    assert!(
        active.text().contains("/api/v1/triggers/"),
        "{}",
        active.text()
    );
    edge.start();
    let back = Instant::now();
    let output = waiting.wait_with_output().unwrap();
    assert_complete(&output, 2);
    eprintln!("completed {:?} after the edge came back", back.elapsed());
    assert_eq!(x_cache(&edge, &paths[1]), "MISS");

    // The CIS killed mid-command (an edge down): after its restart the trigger goes
    // on from where it was and completes when the edge is back.
    edge.stop_with("KILL");
    let (_, status_path) = post_purge(&up, &paths[2]);
    // Meanwhile another is cancelled: the server not yet reached is dropped.
    let (cancelled, cancelled_path) = post_purge(&up, &paths[3]);
    let cancel = format!(r#"{{"cancel": ["{cancelled}"]}}"#);
    let answer = http_request_body(
        up.admin,
        "POST",
        "/api/v1/triggers",
        &[("Content-Type", COMMAND)],
        cancel.as_bytes(),
    )
    .unwrap();
    // 202 while the request to the dead edge is in flight (`cancelling`).
    assert!([200, 202].contains(&answer.status), "{}", answer.text());
    let status = wait_status(&up, &cancelled_path, "cancelled");
    assert!(
        status.contains("\"cancelled\"") && status.contains("\"ecancelled\""),
        "{status}"
    );
    up.stop_with("KILL");
    up.start();
    edge.start();
    let status = wait_status(&up, &status_path, "complete");
    assert!(
        status.contains("\"complete\""),
        "not resumed after the restart: {status}"
    );
    assert!(metric_with(&up, "streamcdn_cis_triggers_finished_total", &["complete"]) >= 1.0);

    // An unauthenticated control request.
    let body = br#"{"trigger-id":"x","type":"purge","urls":[],"issued_at_ms":0,"nonce":1}"#;
    let forged = http_request_body(
        edge.http,
        "POST",
        "/_streamcdn/control",
        &[("X-Streamcdn-Control", "00")],
        body,
    )
    .unwrap();
    assert_eq!(forged.status, 401);
    let unsigned = http_request_body(edge.http, "POST", "/_streamcdn/control", &[], body).unwrap();
    assert_eq!(unsigned.status, 401);
    let why = String::from_utf8_lossy(&unsigned.body);
    assert!(why.contains("X-Streamcdn-Control"), "{why}");
    assert_eq!(
        metric_with(
            &edge,
            "streamcdn_edge_control_requests_total",
            &["unauthenticated"]
        ),
        2.0
    );
}

/// Purges by `pattern` through the admin API and waits for `complete`.
fn purge_pattern(up: &Node, pattern: &str) {
    assert!(!pattern.contains(['"', '\\']), "{pattern}");
    let (_, path) = post_command(
        up,
        &format!(
            r#"{{"trigger": {{"type": "purge", "content.patterns": [{{"pattern": "{pattern}"}}]}}}}"#
        ),
    );
    let status = wait_status(up, &path, "complete");
    assert!(status.contains("\"complete\""), "{pattern}: {status}");
}

/// RFC 8007 §5.2.4 matches a pattern against the whole URL and §4.8 ignores the scheme:
/// whatever shape a pattern takes, a `complete` purge leaves nothing it names in any
/// cache, and keeps what it does not name.
#[test]
fn every_pattern_shape_purges_what_it_names_from_every_tier() {
    let redis = Redis::start();
    let registry = redis.registry_toml("patterns");
    let up = Node::up("pat-up", &registry);
    let edge_config = format!("{registry}[edge]\nparents = [\"{}\"]\n", up.http_base());
    let edge = Node::role("pat-edge", "edge", &edge_config);
    let rec = recording(&up, "cam");
    let paths = segments(&up, &rec);
    let authority = format!("{}:{}", up.host, up.http);
    let name = |path: &str| path.rsplit('/').next().unwrap().to_owned();

    let (p0, p1, p2, init) = (&paths[0], &paths[1], &paths[2], paths.last().unwrap());
    // (pattern, an object it names, one it does not)
    let shapes: Vec<(String, &String, Option<&String>)> = vec![
        (
            format!("*://{authority}/demo/cam/*/{}", name(p0)),
            p0,
            Some(p1),
        ),
        (format!("*{authority}{p1}"), p1, Some(p0)),
        (format!("http://{authority}{rec}/*"), p2, None),
        (format!("https://other.example{p0}"), p0, Some(p1)),
        (format!("http://*/demo/cam/*/{}", name(p1)), p1, Some(p0)),
        (
            format!("*{rec}/{}", name(p2).replace('0', "?")),
            p2,
            Some(p0),
        ),
        (
            format!("*://{authority}{}", p0.to_uppercase()),
            p0,
            Some(p1),
        ),
        ("*/init.mp4".to_owned(), init, Some(p0)),
    ];
    // The CLI pointed at a server that runs no CIS (the edge) finds it through the
    // node directory; an admin API that is not there is named in the error.
    let (output, _) = run_trigger(&edge, "purge", &[up.play_url(p0)]);
    let stdout = assert_complete(&output, 2);
    let cis = format!("http://{}:{}", up.host, up.admin);
    assert!(
        stdout.contains(&format!("found the CIS at {cis}")),
        "{stdout}"
    );
    let nowhere = Command::new(env!("CARGO_BIN_EXE_streamcdn"))
        .env("STREAMCDN_ADMIN_TOKEN", ADMIN_TOKEN)
        .args([
            "trigger",
            "purge",
            &up.play_url(p0),
            "--admin",
            "http://127.0.0.1:9",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&nowhere.stderr);
    assert!(!nowhere.status.success());
    assert!(
        stderr.contains("cannot reach the admin API at http://127.0.0.1:9"),
        "{stderr}"
    );

    for (pattern, named, kept) in shapes {
        for node in [&up, &edge] {
            for path in std::iter::once(named).chain(kept) {
                x_cache(node, path);
                assert_eq!(x_cache(node, path), "HIT", "{path} warm at {}", node.http);
            }
        }
        purge_pattern(&up, &pattern);
        // The top tier first (the edge's miss refills it).
        assert_eq!(
            x_cache(&up, named),
            "MISS",
            "{pattern} left {named} at the top tier"
        );
        assert_eq!(
            x_cache(&edge, named),
            "MISS",
            "{pattern} left {named} at the edge"
        );
        if let Some(kept) = kept {
            for node in [&up, &edge] {
                assert_eq!(x_cache(node, kept), "HIT", "{pattern} purged {kept} too");
            }
        }
    }
}

#[test]
fn the_admin_api_answers_as_rfc_8007_says_and_keeps_triggers_across_restarts() {
    let mut up = Node::up("trig-api", "");
    let post = |content_type: &str, body: &str| {
        http_request_body(
            up.admin,
            "POST",
            "/api/v1/triggers",
            &[("Content-Type", content_type)],
            body.as_bytes(),
        )
        .unwrap()
    };
    let purge = r#"{"trigger": {"type": "purge", "content.urls": ["http://any.example/demo/x/index.m3u8"]}}"#;
    assert_eq!(post("application/json", purge).status, 415);
    assert_eq!(post(COMMAND, "{\"trigger\": ").status, 400);
    assert_eq!(
        post(COMMAND, r#"{"trigger": {"type": "purge"}}"#).status,
        400
    );

    let unknown = post(
        COMMAND,
        r#"{"trigger": {"type": "refresh", "content.urls": ["http://h/demo/x/index.m3u8"]}}"#,
    );
    assert_eq!(unknown.status, 201, "{}", unknown.text());
    assert!(
        unknown.text().contains("\"eunsupported\""),
        "{}",
        unknown.text()
    );
    assert!(unknown.text().contains("\"failed\""), "{}", unknown.text());

    let created = post(COMMAND, purge);
    assert_eq!(created.status, 201, "{}", created.text());
    let location = created.header("location").unwrap().to_owned();
    let path = location
        .split_once("127.0.0.1")
        .map(|(_, rest)| rest.split_once('/').unwrap().1)
        .unwrap();
    let path = format!("/{path}");
    // The only carrying server is up's own edge: complete at once.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = http_request_at(&up.host, up.admin, "GET", &path, &[]).unwrap();
        if status.text().contains("\"complete\"") || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.text().contains("\"complete\""), "{}", status.text());
    assert_eq!(
        status.header("content-type"),
        Some("application/cdni; ptype=ci-trigger-status")
    );
    // RFC 8007 §4: how long a poller may reuse the answer.
    assert_eq!(status.header("cache-control"), Some("max-age=1"));
    let etag = status.header("etag").unwrap().to_owned();
    let again = http_request_at(
        &up.host,
        up.admin,
        "GET",
        &path,
        &[("If-None-Match", &etag)],
    )
    .unwrap();
    assert_eq!(again.status, 304);

    assert_eq!(again.header("cache-control"), Some("max-age=1"));

    let collection = http_request_at(&up.host, up.admin, "GET", "/api/v1/triggers", &[]).unwrap();
    assert_eq!(collection.header("cache-control"), Some("max-age=1"));
    assert!(
        collection.text().contains("\"coll-active\""),
        "{}",
        collection.text()
    );
    assert!(
        collection.text().contains(&location),
        "{}",
        collection.text()
    );
    let complete =
        http_request_at(&up.host, up.admin, "GET", "/api/v1/triggers/complete", &[]).unwrap();
    assert!(complete.text().contains(&location), "{}", complete.text());

    // Cancelling a complete trigger changes nothing (§4.3).
    let cancel = format!(r#"{{"cancel": ["{location}"]}}"#);
    assert_eq!(post(COMMAND, &cancel).status, 200);
    let cancel_unknown = format!(r#"{{"cancel": ["{location}99"]}}"#);
    assert_eq!(post(COMMAND, &cancel_unknown).status, 404);

    // Kept across a restart.
    up.stop_with("TERM");
    up.start();
    let kept = http_request_at(&up.host, up.admin, "GET", &path, &[]).unwrap();
    assert_eq!(kept.status, 200);
    assert!(kept.text().contains("\"complete\""), "{}", kept.text());

    let deleted = http_request_at(&up.host, up.admin, "DELETE", &path, &[]).unwrap();
    assert_eq!(deleted.status, 204);
    assert_eq!(
        http_request_at(&up.host, up.admin, "GET", &path, &[])
            .unwrap()
            .status,
        404
    );
}
