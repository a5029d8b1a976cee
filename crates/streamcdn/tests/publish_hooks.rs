//! Publish hooks and per-stream keys end to end: a hook server in the test records what
//! `up` sends it and answers as each test says; real ffmpeg publishes.
//! - `on_publish` denies → ffmpeg's publish fails with the reason, nothing is recorded;
//! - `on_publish` does not answer → allowed or refused, as `deny_on_timeout` says;
//! - allowed → recorded, and `on_unpublish` (retried after a 503) and
//!   `on_recording_ended` arrive with the recording's JSON;
//! - SRT publishers meet the same hooks and keys (denied by the hook or a wrong key:
//!   rejected in the handshake, nothing recorded; allowed: recorded and announced);
//! - a stream key opens its own stream only, and is rotated, generated and removed
//!   through the providers' API, whose answers never show a key;
//! - `on_archived` arrives once per recording: again after the archiver was killed
//!   while sending it, never again once it was delivered, whatever restarts follow.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// What the hook server answers one request.
enum Reply {
    /// Status and body.
    Answer(u16, String),
    /// Nothing, the connection held open for a minute.
    Hang,
}

type Responder = dyn Fn(&str, &Value, usize) -> Reply + Send + Sync;

/// A hook server on a loopback port: every request's path and JSON body is recorded
/// before it is answered by `respond(path, body, how many earlier requests had this
/// path)`.
struct HookServer {
    port: u16,
    requests: Arc<Mutex<Vec<(String, Value)>>>,
}

impl HookServer {
    fn start(respond: impl Fn(&str, &Value, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let respond: Arc<Responder> = Arc::new(respond);
        let record = requests.clone();
        std::thread::spawn(move || {
            for socket in listener.incoming().flatten() {
                let (record, respond) = (record.clone(), respond.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(socket.try_clone().unwrap());
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let mut length = 0;
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                length = v.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let earlier = {
                        let mut requests = record.lock().unwrap();
                        let earlier = requests.iter().filter(|(p, _)| *p == path).count();
                        requests.push((path.clone(), json.clone()));
                        earlier
                    };
                    let mut socket = socket;
                    match respond(&path, &json, earlier) {
                        Reply::Answer(status, body) => {
                            let _ = write!(
                                socket,
                                "HTTP/1.1 {status} Hook\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                        }
                        Reply::Hang => std::thread::sleep(Duration::from_secs(60)),
                    }
                });
            }
        });
        Self { port, requests }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The bodies received on `path`, oldest first.
    fn bodies(&self, path: &str) -> Vec<Value> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, body)| body.clone())
            .collect()
    }

    /// Waits until `path` has received `n` requests (whose bodies match `filter`).
    fn wait_for(&self, path: &str, n: usize, filter: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let bodies: Vec<Value> = self.bodies(path).into_iter().filter(&filter).collect();
            if bodies.len() >= n {
                return bodies;
            }
            assert!(
                Instant::now() < deadline,
                "{path} received {} of {n} requests: {bodies:?}",
                bodies.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A provider section for `extra`: `name`, keyed `<name>-provider-key`, then `more`
/// (its own keys and tables).
fn provider(name: &str, more: &str) -> String {
    format!("[[providers]]\nname = \"{name}\"\nstream_key = \"{name}-provider-key\"\n{more}\n")
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// An RFC 3339 time as the server writes them (`2025-01-02T03:04:05.678Z`).
fn is_time(value: &Value) -> bool {
    value.as_str().is_some_and(|t| {
        t.len() >= 20 && t.as_bytes()[4] == b'-' && t.as_bytes()[10] == b'T' && t.ends_with('Z')
    })
}

#[test]
fn a_hook_that_denies_refuses_the_publisher_and_nothing_is_recorded() {
    let hooks = HookServer::start(|_, body, _| match body["stream"].as_str() {
        Some("banned") => Reply::Answer(
            200,
            r#"{"allow": false, "reason": "banned until Monday"}"#.into(),
        ),
        Some("forbidden") => Reply::Answer(403, "no entry for this stream\n".into()),
        _ => Reply::Answer(204, String::new()),
    });
    let extra = provider(
        "hooked",
        &format!(
            "[providers.hooks]\non_publish = \"{}\"\n",
            hooks.url("/publish")
        ),
    );
    let node = Node::up("hooks-deny", &extra);
    let ffmpeg = tool("ffmpeg");
    for (stream, reason) in [
        ("banned", "banned until Monday"),
        ("forbidden", "no entry for this stream"),
    ] {
        let url = node.publish_url("hooked", stream, "hooked-provider-key");
        let refused = wait_output(publish(&ffmpeg, &url, 3, "h264"));
        assert!(!refused.status.success(), "{stream}: the publish went on");
        assert!(
            stderr(&refused).contains(reason),
            "{stream}: ffmpeg was not told why: {}",
            stderr(&refused)
        );
        assert!(
            node.recordings("hooked", stream).is_empty(),
            "{stream}: a refused publisher recorded something"
        );
    }
    let asked = hooks.bodies("/publish");
    assert_eq!(asked.len(), 2, "{asked:?}");
    for body in &asked {
        assert_eq!(body["hook"], "on_publish");
        assert_eq!(body["provider"], "hooked");
        assert_eq!(body["key"], "provider");
        assert_eq!(body["resumed"], false);
        assert!(is_time(&body["at"]), "{body}");
        assert!(body["recording_id"].as_str().is_some_and(|r| !r.is_empty()));
        let client = body["client"].as_str().unwrap();
        assert!(client.starts_with("127.0.0.1:"), "{body}");
        assert!(body["event_id"]
            .as_str()
            .unwrap()
            .starts_with("on_publish:hooked/"));
    }
    assert_eq!(
        node.metric("streamcdn_hooks_total{hook=\"on_publish\",outcome=\"deny\"}"),
        2.0
    );
    assert_eq!(
        node.metric("streamcdn_rtmp_publish_refused_total{reason=\"denied_by_hook\"}"),
        2.0
    );
    assert!(node
        .log_text()
        .contains("refused by the provider's publish hook: banned until Monday"));
    // A wrong key is refused before the hook is asked.
    let url = node.publish_url("hooked", "banned", "not-the-key");
    assert!(!wait_output(publish(&ffmpeg, &url, 3, "h264"))
        .status
        .success());
    assert_eq!(hooks.bodies("/publish").len(), 2);
}

#[test]
fn a_publish_hook_that_does_not_answer_allows_or_refuses_as_configured() {
    let hooks = HookServer::start(|_, _, _| Reply::Hang);
    let section = |deny: bool| {
        format!(
            "[providers.hooks]\non_publish = \"{}\"\ntimeout = \"500ms\"\ndeny_on_timeout = {deny}\n",
            hooks.url("/slow")
        )
    };
    let extra = format!(
        "{}{}",
        provider("open", &section(false)),
        provider("closed", &section(true))
    );
    let node = Node::up("hooks-timeout", &extra);
    let ffmpeg = tool("ffmpeg");
    let open = publish(
        &ffmpeg,
        &node.publish_url("open", "cam", "open-provider-key"),
        3,
        "h264",
    );
    let closed = publish(
        &ffmpeg,
        &node.publish_url("closed", "cam", "closed-provider-key"),
        3,
        "h264",
    );
    let (open, closed) = (wait_output(open), wait_output(closed));
    assert!(open.status.success(), "{}", stderr(&open));
    assert!(!closed.status.success(), "the publish went on");
    assert!(
        stderr(&closed).contains("did not answer in time"),
        "{}",
        stderr(&closed)
    );
    let journal = node.wait_recording_state("open", "cam", "ended");
    assert!(!journal["segments"].as_array().unwrap().is_empty());
    assert!(node.recordings("closed", "cam").is_empty());
    assert_eq!(hooks.bodies("/slow").len(), 2);
    for outcome in ["timeout_allow", "timeout_deny"] {
        let metric = format!("streamcdn_hooks_total{{hook=\"on_publish\",outcome=\"{outcome}\"}}");
        assert_eq!(node.metric(&metric), 1.0, "{metric}");
    }
}

#[test]
fn an_allowed_publisher_is_recorded_and_its_end_is_announced() {
    // The first on_unpublish is answered 503: it is sent again.
    let hooks = HookServer::start(|path, _, earlier| match (path, earlier) {
        ("/publish", _) => Reply::Answer(200, r#"{"allow": true}"#.into()),
        ("/unpublish", 0) => Reply::Answer(503, "busy".into()),
        _ => Reply::Answer(204, String::new()),
    });
    let extra = provider(
        "hooked",
        &format!(
            "[providers.hooks]\non_publish = \"{}\"\non_unpublish = \"{}\"\non_recording_ended = \"{}\"\n",
            hooks.url("/publish"),
            hooks.url("/unpublish"),
            hooks.url("/ended")
        ),
    );
    let node = Node::up("hooks-allow", &extra);
    let publisher = publish(
        &tool("ffmpeg"),
        &node.publish_url("hooked", "show", "hooked-provider-key"),
        4,
        "h264",
    );
    let output = wait_output(publisher);
    assert!(output.status.success(), "{}", stderr(&output));
    let journal = node.wait_recording_state("hooked", "show", "ended");
    let recording = journal["recording_id"].as_str().unwrap();

    let published = hooks.wait_for("/publish", 1, |_| true).remove(0);
    assert_eq!(published["recording_id"], recording);
    let unpublished = hooks.wait_for("/unpublish", 2, |_| true);
    assert_eq!(
        unpublished[0], unpublished[1],
        "a retry sends the same event"
    );
    let gone = &unpublished[1];
    assert_eq!(gone["hook"], "on_unpublish");
    assert_eq!(
        (&gone["provider"], &gone["stream"], &gone["recording_id"]),
        (&"hooked".into(), &"show".into(), &recording.into())
    );
    // The publish it ends: same client, started when on_publish was asked.
    assert_eq!(gone["client"], published["client"]);
    assert_eq!(gone["started_at"], published["at"]);
    assert!(is_time(&gone["ended_at"]) && gone["ended_at"] == gone["at"]);
    let seconds = gone["duration_secs"].as_f64().unwrap();
    assert!((3.0..15.0).contains(&seconds), "{gone}");
    assert_eq!(
        gone["event_id"]
            .as_str()
            .unwrap()
            .split_once('/')
            .unwrap()
            .1,
        published["event_id"]
            .as_str()
            .unwrap()
            .split_once('/')
            .unwrap()
            .1,
        "publish and unpublish of one publish share their id's tail"
    );

    let ended = hooks.wait_for("/ended", 1, |_| true).remove(0);
    let segments = journal["segments"].as_array().unwrap();
    assert_eq!(ended["hook"], "on_recording_ended");
    assert_eq!(ended["recording_id"], recording);
    assert_eq!(ended["started_at"], journal["started_at"]);
    assert_eq!(ended["ended_at"], journal["ended_at"]);
    assert_eq!(ended["segments"], segments.len());
    let bytes: u64 = segments.iter().map(|s| s["bytes"].as_u64().unwrap()).sum();
    assert_eq!(ended["bytes"], bytes);
    let duration: f64 = segments
        .iter()
        .map(|s| s["duration_secs"].as_f64().unwrap())
        .sum();
    assert!((ended["duration_secs"].as_f64().unwrap() - duration).abs() < 0.01);
    let playback = ended["playback"].as_str().unwrap();
    assert_eq!(playback, format!("/hooked/show/{recording}/index.m3u8"));
    assert_eq!(http_get(node.http, playback, &[]).unwrap().status, 200);

    for (hook, outcome) in [
        ("on_publish", "allow"),
        ("on_unpublish", "delivered"),
        ("on_recording_ended", "delivered"),
    ] {
        let metric = format!("streamcdn_hooks_total{{hook=\"{hook}\",outcome=\"{outcome}\"}}");
        wait_until(&metric, Duration::from_secs(5), || {
            node.metric(&metric) == 1.0
        });
    }
}

#[test]
fn srt_publishers_go_through_the_same_hooks_and_keys() {
    let hooks = HookServer::start(|path, body, _| match (path, body["stream"].as_str()) {
        ("/publish", Some("banned")) => Reply::Answer(
            200,
            r#"{"allow": false, "reason": "banned until Monday"}"#.into(),
        ),
        _ => Reply::Answer(204, String::new()),
    });
    let extra = provider(
        "hooked",
        &format!(
            "[providers.hooks]\non_publish = \"{}\"\non_unpublish = \"{}\"\non_recording_ended = \"{}\"\n",
            hooks.url("/publish"),
            hooks.url("/unpublish"),
            hooks.url("/ended")
        ),
    );
    let node = Node::up("hooks-srt", &extra);

    // Denied by the hook: the handshake is rejected (1403, which libsrt prints as an
    // application-defined rejection reason), nothing is recorded.
    let denied = wait_output(publish_ts(
        &node.srt_url("hooked", "banned", "hooked-provider-key"),
        3,
    ));
    assert!(!denied.status.success(), "the denied SRT publish went on");
    assert!(
        stderr(&denied).contains("rejection reason"),
        "not rejected in the handshake: {}",
        stderr(&denied)
    );
    assert_eq!(
        node.metric("streamcdn_srt_publishers"),
        0.0,
        "a denied caller was connected"
    );
    assert!(node.recordings("hooked", "banned").is_empty());
    let asked = hooks.wait_for("/publish", 1, |_| true).remove(0);
    assert_eq!(
        (
            &asked["hook"],
            &asked["stream"],
            &asked["key"],
            &asked["resumed"]
        ),
        (
            &"on_publish".into(),
            &"banned".into(),
            &"provider".into(),
            &false.into()
        )
    );
    assert!(
        asked["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{asked}"
    );
    assert_eq!(
        node.metric("streamcdn_publish_refused_total{protocol=\"srt\",reason=\"denied_by_hook\"}"),
        1.0
    );
    // A wrong key is refused at the handshake, before the hook is asked.
    let wrong = wait_output(publish_ts(
        &node.srt_url("hooked", "show", "not-the-key"),
        2,
    ));
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains("rejection reason"),
        "{}",
        stderr(&wrong)
    );
    assert_eq!(hooks.bodies("/publish").len(), 1);
    assert_eq!(
        node.metric("streamcdn_srt_refused_total{reason=\"forbidden\"}"),
        2.0,
        "the hook's denial and the wrong key"
    );

    // Allowed: recorded, and its end announced as for RTMP.
    let allowed = wait_output(publish_ts(
        &node.srt_url("hooked", "show", "hooked-provider-key"),
        3,
    ));
    assert!(allowed.status.success(), "{}", stderr(&allowed));
    let journal = node.wait_recording_state("hooked", "show", "ended");
    let recording = journal["recording_id"].as_str().unwrap();
    let published = hooks.wait_for("/publish", 2, |_| true).remove(1);
    assert_eq!(published["recording_id"], recording);
    let gone = hooks.wait_for("/unpublish", 1, |_| true).remove(0);
    assert_eq!(
        (&gone["stream"], &gone["recording_id"], &gone["client"]),
        (&"show".into(), &recording.into(), &published["client"])
    );
    let ended = hooks.wait_for("/ended", 1, |_| true).remove(0);
    assert_eq!(ended["recording_id"], recording);
    assert_eq!(
        ended["segments"],
        journal["segments"].as_array().unwrap().len()
    );
}

#[test]
fn stream_keys_open_their_own_stream_and_rotate_through_the_api() {
    let extra = format!(
        "{}[[admin.tokens]]\ntoken = \"keyed-token-000000001\"\nprovider = \"keyed\"\n\
         [[admin.tokens]]\ntoken = \"other-token-000000001\"\nprovider = \"demo\"\n",
        provider("keyed", "stream_keys = { cam = \"cam-stream-key-01\" }"),
    );
    let node = Node::up("stream-keys", &extra);
    let ffmpeg = tool("ffmpeg");
    let publish_with_key = |stream: &str, key: &str| {
        publish(&ffmpeg, &node.publish_url("keyed", stream, key), 2, "h264")
    };
    let api = |method: &str, path: &str, token: &str, body: &str| {
        let response = http_request_body(
            node.admin,
            method,
            &format!("/api/v1/providers/keyed/stream-keys{path}"),
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
        .unwrap();
        let json: Value = serde_json::from_str(&response.text()).unwrap_or(Value::Null);
        (response.status, response.text(), json)
    };

    // The stream key opens its stream, not another; the provider's key opens any.
    let cam = publish_with_key("cam", "cam-stream-key-01");
    let other = publish_with_key("other", "cam-stream-key-01");
    let any = publish_with_key("any", "keyed-provider-key");
    assert!(
        !wait_output(other).status.success(),
        "a stream key opened another stream"
    );
    assert!(wait_output(cam).status.success());
    assert!(wait_output(any).status.success());
    assert!(node.recordings("keyed", "other").is_empty());
    node.wait_recording_state("keyed", "cam", "ended");

    // Listed by id, never by key.
    let (status, text, listed) = api("GET", "", "keyed-token-000000001", "");
    assert_eq!(status, 200, "{text}");
    assert_eq!(listed["streams"][0]["stream"], "cam");
    assert_eq!(listed["streams"][0]["source"], "config");
    assert_eq!(listed["streams"][0]["key_id"].as_str().unwrap().len(), 4);
    assert!(!text.contains("cam-stream-key-01"), "{text}");

    // Another provider's token may not; a bad key or stream name is a 400.
    let (status, ..) = api(
        "PUT",
        "/cam",
        "other-token-000000001",
        r#"{"key": "x-key-0000001"}"#,
    );
    assert_eq!(status, 403);
    let (status, ..) = api(
        "PUT",
        "/cam",
        "keyed-token-000000001",
        r#"{"key": "short"}"#,
    );
    assert_eq!(status, 400);
    let (status, ..) = api(
        "PUT",
        "/cam",
        "keyed-token-000000001",
        r#"{"key": "keyed-provider-key"}"#,
    );
    assert_eq!(status, 400);
    let (status, ..) = api(
        "PUT",
        "/c.m",
        "keyed-token-000000001",
        r#"{"key": "cam-rotated-key-02"}"#,
    );
    assert_eq!(status, 400);

    // Rotation: the new key opens the stream, the old one no longer; a key generated
    // for a new stream is shown once.
    let (status, text, rotated) = api(
        "PUT",
        "/cam",
        "keyed-token-000000001",
        r#"{"key": "cam-rotated-key-02"}"#,
    );
    assert_eq!(status, 200, "{text}");
    assert!(
        rotated.get("key").is_none() && !text.contains("cam-rotated-key-02"),
        "{text}"
    );
    assert_ne!(rotated["key_id"], listed["streams"][0]["key_id"]);
    let (status, text, generated) = api("PUT", "/side", "keyed-token-000000001", "");
    assert_eq!(status, 200, "{text}");
    let side_key = generated["key"].as_str().unwrap().to_owned();
    assert_eq!(side_key.len(), 32);
    let old = publish_with_key("cam", "cam-stream-key-01");
    let new = publish_with_key("cam", "cam-rotated-key-02");
    let side = publish_with_key("side", &side_key);
    assert!(
        !wait_output(old).status.success(),
        "a rotated-out key still opens"
    );
    assert!(wait_output(new).status.success());
    assert!(wait_output(side).status.success());
    node.wait_recording_state("keyed", "side", "ended");
    let (_, text, listed) = api("GET", "", "keyed-token-000000001", "");
    let streams: Vec<(&str, &str)> = listed["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["stream"].as_str().unwrap(), s["source"].as_str().unwrap()))
        .collect();
    assert_eq!(streams, [("cam", "api"), ("side", "api")], "{text}");
    assert!(!text.contains(&side_key));

    // Removed: the stream key no longer opens, the provider's still does.
    let (status, ..) = api("DELETE", "/cam", "keyed-token-000000001", "");
    assert_eq!(status, 200);
    let (status, ..) = api("DELETE", "/cam", "keyed-token-000000001", "");
    assert_eq!(status, 404);
    node.wait_recording_state("keyed", "cam", "ended");
    let removed = publish_with_key("cam", "cam-rotated-key-02");
    assert!(
        !wait_output(removed).status.success(),
        "a removed key still opens"
    );
    assert_eq!(
        node.metric("streamcdn_rtmp_publish_refused_total{reason=\"wrong_key\"}"),
        3.0
    );
    assert!(!node.log_text().contains("cam-rotated-key-02"));
}

#[test]
fn on_archived_fires_once_per_recording_across_restarts() {
    // The first on_archived is held unanswered: the archiver is killed meanwhile.
    let hooks = HookServer::start(|_, _, earlier| match earlier {
        0 => Reply::Hang,
        _ => Reply::Answer(200, "thanks".into()),
    });
    let extra = format!(
        "[archive]\nlocal_retention = \"1h\"\n{}",
        provider(
            "arch",
            &format!(
                "archive_after = \"1s\"\n[providers.hooks]\non_archived = \"{}\"\ntimeout = \"30s\"\n",
                hooks.url("/archived")
            ),
        )
    );
    let mut node = Node::up("hooks-archived", &extra);
    let ffmpeg = tool("ffmpeg");
    let key = "arch-provider-key";
    assert!(wait_output(publish(
        &ffmpeg,
        &node.publish_url("arch", "one", key),
        3,
        "h264"
    ))
    .status
    .success());
    let one = node.wait_recording_state("arch", "one", "ended");
    let one_id = one["recording_id"].as_str().unwrap().to_owned();
    let one_dir = node.recordings("arch", "one").pop().unwrap();
    let of = |id: &str| {
        let id = id.to_owned();
        move |body: &Value| body["recording_id"] == id.as_str()
    };

    // Killed while the hook is unanswered: no marker, so it is sent again at the start.
    let first = hooks.wait_for("/archived", 1, of(&one_id)).remove(0);
    assert!(
        one_dir.join("archive.json").exists(),
        "hooked before archived"
    );
    assert!(!one_dir.join("hook-on_archived.json").exists());
    node.stop_with("KILL");
    node.start();
    let sent = hooks.wait_for("/archived", 2, of(&one_id));
    assert_eq!(sent[0], sent[1], "the same event, with the same id");
    wait_until("on_archived's marker", Duration::from_secs(10), || {
        one_dir.join("hook-on_archived.json").exists()
    });
    let marker: Value = serde_json::from_str(
        &std::fs::read_to_string(one_dir.join("hook-on_archived.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(marker["outcome"], "delivered");

    // The body: the recording, and where the archive is.
    assert_eq!(first["hook"], "on_archived");
    assert_eq!(first["event_id"], format!("on_archived:arch/one/{one_id}"));
    assert_eq!(first["segments"], one["segments"].as_array().unwrap().len());
    assert_eq!(first["ended_at"], one["ended_at"]);
    assert!(is_time(&first["at"]));
    let archive = &first["archive"];
    assert_eq!(archive["prefix"], format!("arch/one/{one_id}"));
    let url = archive["url"].as_str().unwrap();
    let dir = std::path::PathBuf::from(url.strip_prefix("file://").unwrap());
    assert!(dir.join("_complete.json").exists(), "{archive}");
    let playlist = archive["playlist"].as_str().unwrap();
    assert_eq!(playlist, format!("{url}playlist.m3u8"));
    assert!(dir.join("playlist.m3u8").exists());
    assert_eq!(first["playback"], format!("/arch/one/{one_id}/index.m3u8"));

    // Delivered: neither a clean restart nor a kill sends it again.
    node.stop_with("TERM");
    node.start();
    node.stop_with("KILL");
    node.start();
    assert!(wait_output(publish(
        &ffmpeg,
        &node.publish_url("arch", "two", key),
        3,
        "h264"
    ))
    .status
    .success());
    let two = node.wait_recording_state("arch", "two", "ended");
    let two_id = two["recording_id"].as_str().unwrap().to_owned();
    hooks.wait_for("/archived", 1, of(&two_id));
    let two_dir = node.recordings("arch", "two").pop().unwrap();
    wait_until("two's marker", Duration::from_secs(10), || {
        two_dir.join("hook-on_archived.json").exists()
    });
    // A scan goes through the recordings in directory order: the one that sent two's
    // hook had looked at one, marker and all, after the last restart.
    assert_eq!(
        hooks
            .bodies("/archived")
            .iter()
            .filter(|b| of(&one_id)(b))
            .count(),
        2
    );
    assert_eq!(
        hooks
            .bodies("/archived")
            .iter()
            .filter(|b| of(&two_id)(b))
            .count(),
        1
    );
    assert_eq!(
        node.metric("streamcdn_hooks_total{hook=\"on_archived\",outcome=\"delivered\"}"),
        1.0,
        "this process delivered two's only"
    );
}
