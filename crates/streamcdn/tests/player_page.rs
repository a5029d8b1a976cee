//! The edge's player page in headless Chromium: it plays a live stream with the embedded
//! hls.js and says when it is live and when it has ended; the edge serves hls.js and
//! rum.js byte-exact; and rum.js, embedded in an operator's page, measures the edge and
//! beacons to a router (a stub here, answering the job/beacon contract).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use common::page::Page;
use common::*;
use serde_json::{json, Value};

/// The embedded browser assets, as committed.
fn web_asset(name: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../web/assets")).join(name))
        .unwrap()
}

fn frames(sample: &Value) -> u64 {
    sample["frames"].as_u64().unwrap_or(0)
}

#[test]
fn the_player_page_plays_the_stream_live_then_ended() {
    require_browser_tools(&["playwright-core"]);
    let node = Node::up("player-page", "");

    // The embedded assets, byte-exact, long-cached with validators.
    for (path, file) in [
        ("/_streamcdn/hls.min.js", "hls.min.js"),
        ("/_streamcdn/rum.js", "rum.js"),
    ] {
        let served = http_get(node.http, path, &[]).unwrap();
        assert_eq!(served.status, 200, "{path}");
        assert!(served.body == web_asset(file), "{path} differs from {file}");
        let etag = served.header("etag").expect("an ETag").to_owned();
        assert!(
            served
                .header("cache-control")
                .is_some_and(|v| v.contains("max-age=")),
            "{path}"
        );
        let again = http_get(node.http, path, &[("If-None-Match", &etag)]).unwrap();
        assert_eq!(again.status, 304, "{path}");
    }
    assert!(http_get(node.http, "/_streamcdn/hls.min.js", &[])
        .unwrap()
        .header("cache-control")
        .is_some_and(|v| v.contains("max-age=31536000")));

    let ffmpeg = tool("ffmpeg");
    let publisher = publish(&ffmpeg, &node.publish_url("demo", "page", KEY), 20, "h264");
    let deadline = Instant::now() + Duration::from_secs(15);
    while http_get(node.http, "/demo/page/live.m3u8", &[])
        .unwrap()
        .status
        != 200
    {
        assert!(Instant::now() < deadline, "demo/page never went live");
        std::thread::sleep(Duration::from_millis(200));
    }

    for path in ["/demo/page/", "/demo/page/player"] {
        let head = http_request(node.http, "HEAD", path, &[]).unwrap();
        assert_eq!(head.status, 200, "{path}");
        assert_eq!(
            head.header("content-type"),
            Some("text/html; charset=utf-8"),
            "{path}"
        );
    }
    let page = http_get(node.http, "/demo/page/player", &[])
        .unwrap()
        .text();
    assert!(
        page.contains("<h1>demo/page</h1>") && page.contains("/_streamcdn/hls.min.js?v="),
        "{page}"
    );

    let browser = Page::open(
        "watch_page.mjs",
        &format!("http://127.0.0.1:{}/demo/page/", node.http),
    );
    let mut first_frames = None;
    let playing = browser.wait_for("live playback", Duration::from_secs(40), |sample| {
        let decoded = frames(sample);
        // Two seconds of frames decoded after the first.
        let first = *first_frames.get_or_insert(decoded.max(1));
        sample["state"] == "live" && decoded >= first + 60
    });
    let errors = playing["errors"].as_array().cloned().unwrap_or_default();
    assert!(
        !errors
            .iter()
            .any(|e| e.as_str().unwrap_or_default().contains("fatal")),
        "{playing}"
    );

    let published = wait_output(publisher);
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    node.wait_recording_state("demo", "page", "ended");
    let ended = browser.wait_for("the end of the stream", Duration::from_secs(30), |sample| {
        sample["state"] == "ended"
    });
    // `up` serves WHEP, so the page plays over WebRTC; when the stream ends the edge
    // closes the connection and the page plays the recording over HLS (a new source:
    // the video's counts start again).
    assert_eq!(playing["mode"], "webrtc", "{playing}");
    assert_eq!(ended["mode"], "hls", "{ended}");
    assert!(frames(&ended) > 0, "{playing} then {ended}");
}

#[test]
fn a_signed_player_page_plays_with_hls_js() {
    require_browser_tools(&["playwright-core"]);
    let node = Node::up("player-signed", "");
    let keys = br#"{"keys": ["demo-playback-key-000000000001"]}"#;
    let set = http_request_body(
        node.admin,
        "PUT",
        "/api/v1/providers/demo/playback-keys",
        &[("Content-Type", "application/json")],
        keys,
    )
    .unwrap();
    assert_eq!(set.status, 200, "{}", set.text());
    let minted = http_request_body(
        node.admin,
        "POST",
        "/api/v1/providers/demo/signed-urls",
        &[("Content-Type", "application/json")],
        br#"{"stream": "signed", "expires_in": "10m", "path": ""}"#,
    )
    .unwrap();
    assert_eq!(minted.status, 200, "{}", minted.text());
    let minted: Value = serde_json::from_slice(&minted.body).unwrap();
    let page = minted["path"].as_str().unwrap().to_owned();
    assert!(
        page.starts_with("/t/") && page.ends_with("/demo/signed/"),
        "{page}"
    );

    let publisher = publish(
        &tool("ffmpeg"),
        &node.publish_url("demo", "signed", KEY),
        15,
        "h264",
    );
    let live = format!("{page}live.m3u8");
    let deadline = Instant::now() + Duration::from_secs(15);
    while http_get(node.http, &live, &[]).unwrap().status != 200 {
        assert!(Instant::now() < deadline, "demo/signed never went live");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        http_get(node.http, "/demo/signed/", &[]).unwrap().status,
        403
    );
    assert_eq!(
        http_get(node.http, "/demo/signed/live.m3u8", &[])
            .unwrap()
            .status,
        403
    );

    let browser = Page::open(
        "watch_page.mjs",
        &format!("http://127.0.0.1:{}{page}", node.http),
    );
    let mut first_frames = None;
    browser.wait_for("signed live playback", Duration::from_secs(40), |sample| {
        let decoded = frames(sample);
        let first = *first_frames.get_or_insert(decoded.max(1));
        sample["state"] == "live" && decoded >= first + 60
    });
    let _ = wait_output(publisher);
}

/// What the stub router saw.
#[derive(Debug)]
enum Seen {
    Job { origin: Option<String> },
    Resolver,
    Beacon(String),
}

/// A stand-in for the router's side of rum.js's contract: the operator's page that embeds
/// rum.js, the job (two targets on the edge), the resolver name and the beacon.
struct StubRouter {
    port: u16,
    seen: Receiver<Seen>,
}

const TOKEN: &str = "token-for-this-test";

impl StubRouter {
    fn start(edge_port: u16) -> StubRouter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (send, seen) = mpsc::channel();
        std::thread::spawn(move || {
            for connection in listener.incoming().map_while(Result::ok) {
                let send = send.clone();
                // One thread a connection: Chromium opens some it never uses.
                std::thread::spawn(move || answer(connection, port, edge_port, &send));
            }
        });
        StubRouter { port, seen }
    }
}

fn answer(connection: TcpStream, port: u16, edge_port: u16, seen: &Sender<Seen>) {
    let _ = connection.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(&connection);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut headers = Vec::new();
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line.trim() != "" {
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        line.clear();
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = vec![
        0;
        header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    ];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or_default();
    let edge = format!("http://127.0.0.1:{edge_port}");
    let (content_type, text) = match path {
        "/operator-page" => (
            "text/html",
            format!(
                r#"<!doctype html><title>an operator's page</title><p>content
<script src="{edge}/_streamcdn/rum.js" data-router="http://127.0.0.1:{port}" async></script>"#
            ),
        ),
        "/_streamcdn/rum/job" => {
            let _ = seen.send(Seen::Job {
                origin: header("origin"),
            });
            let object = format!("{edge}/_streamcdn/rum/object");
            let job = json!({
                "token": TOKEN,
                "targets": [
                    {"edge": "edge-a", "url": format!("{object}?n=1")},
                    {"edge": "edge-b", "url": format!("{object}?n=2")},
                ],
                "resolver_url": format!("http://127.0.0.1:{port}/resolver-name"),
                "beacon": "/_streamcdn/rum/beacon",
            });
            ("application/json", job.to_string())
        }
        "/resolver-name" => {
            let _ = seen.send(Seen::Resolver);
            ("text/plain", String::new())
        }
        "/_streamcdn/rum/beacon" => {
            let _ = seen.send(Seen::Beacon(String::from_utf8_lossy(&body).into_owned()));
            ("text/plain", String::new())
        }
        _ => ("text/plain", "not here".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Access-Control-Allow-Origin: *\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = (&connection).write_all(response.as_bytes());
}

#[test]
fn rum_js_measures_the_edge_and_beacons_to_the_router() {
    require_browser_tools(&["playwright-core"]);
    let node = Node::up("rum-js", "");
    let object = http_get(node.http, "/_streamcdn/rum/object?n=7", &[]).unwrap();
    assert_eq!(object.body.len(), 65536);
    for (name, value) in [
        ("cache-control", "no-store"),
        ("timing-allow-origin", "*"),
        ("access-control-allow-origin", "*"),
    ] {
        assert_eq!(object.header(name), Some(value), "{name}");
    }

    let router = StubRouter::start(node.http);
    // Another origin than the router's, so the job is fetched cross-origin.
    let browser = Page::open(
        "watch_page.mjs",
        &format!("http://localhost:{}/operator-page", router.port),
    );
    let (mut job_origin, mut resolver_asked, mut beacon) = (None, false, None);
    let deadline = Instant::now() + Duration::from_secs(40);
    while beacon.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match router.seen.recv_timeout(left) {
            Ok(Seen::Job { origin }) => job_origin = origin,
            Ok(Seen::Resolver) => resolver_asked = true,
            Ok(Seen::Beacon(body)) => beacon = Some(body),
            Err(_) => {
                let last = browser.latest();
                panic!("no beacon; the page's last sample: {last:?}");
            }
        }
    }
    assert_eq!(
        job_origin.as_deref(),
        Some(format!("http://localhost:{}", router.port).as_str())
    );
    assert!(resolver_asked, "rum.js never fetched resolver_url");
    let beacon: Value = serde_json::from_str(beacon.as_deref().unwrap_or_default()).unwrap();
    println!("beacon: {beacon}");
    assert_eq!(beacon["token"], TOKEN, "{beacon}");
    let results = beacon["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(results.len(), 2, "{beacon}");
    for (result, edge) in results.iter().zip(["edge-a", "edge-b"]) {
        assert_eq!(result["edge"], edge, "{beacon}");
        assert_eq!(result["ok"], true, "{beacon}");
        assert_eq!(result["bytes"], 65536, "{beacon}");
        assert!(
            result["total_ms"].as_f64().is_some_and(|ms| ms > 0.0),
            "{beacon}"
        );
        for field in ["dns_ms", "connect_ms", "ttfb_ms"] {
            assert!(
                result[field].as_f64().is_some_and(|ms| ms >= 0.0),
                "{field}: {beacon}"
            );
        }
    }
    let sent = browser.wait_for("rum.js done", Duration::from_secs(10), |sample| {
        sample["rum"]["state"] != "measuring" && sample["rum"]["state"] != "idle"
    });
    assert_eq!(sent["rum"]["state"], "sent", "{sent}");
    assert_eq!(sent["rum"]["results"], beacon["results"], "{sent}");
}
