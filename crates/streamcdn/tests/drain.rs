//! Drain end to end (SIGTERM and `POST /api/v1/drain` are drains, never ends), with real
//! processes on their own loopback addresses, a Redis registry and ffmpeg publishers:
//! - SIGTERM of the ingest holding a live stream: a poller at 100 ms on a top-tier
//!   edge's `live.m3u8` never sees `EXT-X-ENDLIST` while the publisher reconnects to the
//!   other ingest of the cluster; the recording goes on (same id, continuous media
//!   sequence); the drained ingest exits by itself within `node.drain_timeout`;
//!   a reader of the stream's low-latency feed on the edge (as a WebRTC viewer reads it)
//!   keeps its one connection: no end, and the continued stream's frames arrive on it
//!   from a keyframe with the configurations;
//! - a publisher that never comes back: the stream ends after its provider's
//!   `reconnect_window`, once (one `on_recording_ended`, though two servers sweep);
//! - a drained edge leaves the router's answers (DNS and 302) before it closes.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const DRAIN_TIMEOUT_SECS: u64 = 3;
/// A provider of these tests, with a short reconnect window and hooks.
const PROVIDER: &str = "drain";

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Records the path of every request it gets (hook notifications) and answers 200.
#[derive(Clone, Default)]
struct Hooks(Arc<Mutex<Vec<(String, serde_json::Value)>>>);

impl Hooks {
    fn start() -> (Hooks, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hooks = Hooks::default();
        let record = hooks.clone();
        std::thread::spawn(move || {
            for socket in listener.incoming().flatten() {
                let record = record.clone();
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
                    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                    record.0.lock().unwrap().push((path, json));
                    let mut socket = socket;
                    let _ = socket.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                });
            }
        });
        (hooks, port)
    }

    fn count(&self, path: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .count()
    }
}

/// Two ingest servers of one cluster (shared storage, Redis) and a top-tier edge, each
/// on its own loopback address.
struct Cluster {
    _redis: Redis,
    data: std::path::PathBuf,
    ingests: Vec<Node>,
    edge: Node,
}

impl Cluster {
    fn start(name: &str, provider_extra: &str) -> Cluster {
        let redis = Redis::start();
        let registry = redis.registry_toml(name);
        let net = loopback_net();
        let data = temp_dir(&format!("{name}-shared"));
        let extra = format!(
            "{registry}[[providers]]\nname = \"{PROVIDER}\"\nstream_key = \"{KEY}\"\n{provider_extra}\n"
        );
        let ingests = (1..=2)
            .map(|i| {
                Node::role_with_node(
                    &format!("{name}-ingest{i}"),
                    "ingest",
                    &format!("{net}.{i}"),
                    free_port(),
                    Some(&data),
                    &format!("drain_timeout = \"{DRAIN_TIMEOUT_SECS}s\""),
                    &extra,
                )
            })
            .collect();
        let edge = Node::role_on(
            &format!("{name}-edge"),
            "edge",
            &format!("{net}.10"),
            free_port(),
            None,
            &registry,
        );
        Cluster {
            _redis: redis,
            data,
            ingests,
            edge,
        }
    }

    fn recordings(&self, stream: &str) -> Vec<std::path::PathBuf> {
        let dir = self.data.join("recordings").join(PROVIDER).join(stream);
        let mut dirs: Vec<_> = std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        dirs.sort();
        dirs
    }

    fn journal(&self, stream: &str) -> serde_json::Value {
        let dir = self.recordings(stream).pop().expect("a recording");
        serde_json::from_slice(&std::fs::read(dir.join("journal.json")).unwrap()).unwrap()
    }

    /// Whether ingest `i`'s admin API lists `stream` as live.
    fn holds(&self, i: usize, stream: &str) -> bool {
        let node = &self.ingests[i];
        http_request_at(&node.host, node.admin, "GET", "/api/v1/streams", &[])
            .is_ok_and(|r| r.text().contains(&format!("\"stream\":\"{stream}\"")))
    }
}

/// The hand-over's outcome as a viewer and the storage see it: one recording (same id,
/// continuous media sequence, one discontinuity where the second server continued it,
/// seen by the poller, which never saw `EXT-X-ENDLIST` or an error), ended once the
/// publisher left for good; the drained server
/// (`ingests[drained]`) interrupted the publish and never ended it.
fn assert_continued(
    cluster: &Cluster,
    stream: &str,
    recording_id: &str,
    seen: &Seen,
    drained: usize,
) {
    assert!(
        seen.endlist_at.is_none(),
        "the poller saw EXT-X-ENDLIST during the hand-over: {seen:?}"
    );
    assert!(seen.errors.is_empty(), "the poller saw errors: {seen:?}");
    let (lowest, highest) = (
        *seen.sequences.first().unwrap(),
        *seen.sequences.last().unwrap(),
    );
    // Same recording, continuous media sequence across the hand-over.
    assert_eq!(
        seen.recordings.iter().collect::<Vec<_>>(),
        [&recording_id],
        "{seen:?}"
    );
    assert_eq!(
        seen.sequences.len() as u64,
        highest - lowest + 1,
        "a gap in the media sequence: {seen:?}"
    );
    assert_eq!(cluster.recordings(stream).len(), 1, "one recording");
    wait_until("the recording to end", Duration::from_secs(20), || {
        cluster.journal(stream)["state"] == "ended"
    });
    let journal = cluster.journal(stream);
    assert_eq!(journal["recording_id"], recording_id);
    let segments = journal["segments"].as_array().unwrap();
    for (i, s) in segments.iter().enumerate() {
        assert_eq!(
            s["sequence"].as_u64(),
            segments[0]["sequence"].as_u64().map(|f| f + i as u64)
        );
    }
    let resumed: Vec<u64> = segments
        .iter()
        .filter(|s| s["discontinuity"] == true)
        .filter_map(|s| s["sequence"].as_u64())
        .collect();
    assert_eq!(resumed.len(), 1, "{journal}");
    assert!(
        highest >= resumed[0],
        "the poller saw the continued stream (from {}): {seen:?}",
        resumed[0]
    );
    let drained_log = cluster.ingests[drained].log_text();
    assert!(
        drained_log.contains("publish interrupted by the drain"),
        "{drained_log}"
    );
    assert!(
        !drained_log.contains("publish ended; recording complete"),
        "{drained_log}"
    );
}

/// Once `stream` plays on the edge and has three segments: its recording id, and a
/// poller of its live playlist on the edge (stop it with the flag), running for 2 s.
fn watch_stream(
    cluster: &Cluster,
    stream: &str,
) -> (String, Arc<AtomicBool>, std::thread::JoinHandle<Seen>) {
    wait_playable(&cluster.edge, &format!("/{PROVIDER}/{stream}/live.m3u8"));
    wait_until("three segments", Duration::from_secs(20), || {
        cluster.journal(stream)["segments"]
            .as_array()
            .is_some_and(|s| s.len() >= 3)
    });
    let recording_id = cluster.journal(stream)["recording_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (stop, poller) = start_poller(&cluster.edge, stream);
    std::thread::sleep(Duration::from_secs(2));
    (recording_id, stop, poller)
}

/// SIGTERM without waiting: the test watches the process drain.
fn sigterm(node: &Node) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &node.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// What a viewer polling `live.m3u8` every 100 ms saw.
#[derive(Debug, Default)]
struct Seen {
    polls: u64,
    errors: Vec<String>,
    /// When `EXT-X-ENDLIST` was first seen.
    endlist_at: Option<Instant>,
    /// Every segment (sequence number) listed, and the recording its URI names.
    sequences: std::collections::BTreeSet<u64>,
    recordings: std::collections::BTreeSet<String>,
    /// The longest time the newest listed segment stayed the same.
    longest_unchanged: Duration,
}

/// `<recording>/000042.m4s` → ("<recording>", 42).
fn segment_of(uri: &str) -> Option<(String, u64)> {
    let uri = uri.split('?').next()?;
    let (recording, file) = uri.rsplit_once('/')?;
    let sequence = file.split('.').next()?.parse().ok()?;
    let recording = recording.rsplit('/').next()?.to_owned();
    Some((recording, sequence))
}

fn poll_live(edge_host: String, edge_port: u16, path: String, stop: Arc<AtomicBool>) -> Seen {
    let mut seen = Seen::default();
    let mut newest: Option<(u64, Instant)> = None;
    while !stop.load(Ordering::Relaxed) {
        seen.polls += 1;
        match http_request_at(&edge_host, edge_port, "GET", &path, &[]) {
            Ok(r) if r.status == 200 => {
                let text = r.text();
                if text.contains("#EXT-X-ENDLIST") && seen.endlist_at.is_none() {
                    seen.endlist_at = Some(Instant::now());
                }
                for (_, uri) in playlist_segments(&text) {
                    if let Some((recording, sequence)) = segment_of(&uri) {
                        seen.sequences.insert(sequence);
                        seen.recordings.insert(recording);
                    }
                }
                let last = seen.sequences.last().copied();
                match (last, newest) {
                    (Some(l), Some((n, since))) if l == n => {
                        seen.longest_unchanged = seen.longest_unchanged.max(since.elapsed());
                    }
                    (Some(l), _) => newest = Some((l, Instant::now())),
                    (None, _) => {}
                }
            }
            Ok(r) => seen
                .errors
                .push(format!("{} {}", r.status, r.text().trim())),
            Err(e) => seen.errors.push(e.to_string()),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    seen
}

fn start_poller(edge: &Node, stream: &str) -> (Arc<AtomicBool>, std::thread::JoinHandle<Seen>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (host, port, path) = (
        edge.host.clone(),
        edge.http,
        format!("/{PROVIDER}/{stream}/live.m3u8"),
    );
    let flag = stop.clone();
    (
        stop,
        std::thread::spawn(move || poll_live(host, port, path, flag)),
    )
}

fn wait_playable(edge: &Node, path: &str) {
    wait_until(
        &format!("{path} on the edge"),
        Duration::from_secs(20),
        || http_request_at(&edge.host, edge.http, "GET", path, &[]).is_ok_and(|r| r.status == 200),
    );
}

fn wait_exited(node: &mut Node, within: Duration) -> Duration {
    let started = Instant::now();
    while node.is_running() {
        assert!(
            started.elapsed() < within,
            "the drained server did not exit within {within:?}:\n{}",
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

#[test]
fn sigterm_of_the_holding_ingest_interrupts_the_stream_and_the_other_continues_it() {
    let mut cluster = Cluster::start("drain-handoff", "");
    let ffmpeg = tool("ffmpeg");
    let stream = "handoff";
    let first = publish(
        &ffmpeg,
        &cluster.ingests[0].publish_url(PROVIDER, stream, KEY),
        60,
        "h264",
    );
    let (recording_id, stop, poller) = watch_stream(&cluster, stream);
    let (stop_feed, feed_reader) = common::feed::watch_feed(
        &cluster.edge.host,
        cluster.edge.http,
        &format!("/{PROVIDER}/{stream}/feed"),
    );

    // SIGTERM: ffmpeg cannot be asked to reconnect, so it is closed after the drain
    // timeout; it then reconnects (as OBS does by itself) to the other server.
    let terminated = Instant::now();
    sigterm(&cluster.ingests[0]);
    // The drained server's RTMP listener is closed at once (what HAProxy checks).
    wait_until("the RTMP listener to close", Duration::from_secs(2), || {
        std::net::TcpStream::connect((cluster.ingests[0].host.as_str(), cluster.ingests[0].rtmp))
            .is_err()
    });
    let closed_after = terminated.elapsed();
    let _ = wait_output(first);
    let publisher_closed = terminated.elapsed();
    let second = publish(
        &ffmpeg,
        &cluster.ingests[1].publish_url(PROVIDER, stream, KEY),
        10,
        "h264",
    );
    wait_exited(
        &mut cluster.ingests[0],
        Duration::from_secs(DRAIN_TIMEOUT_SECS + 5),
    );
    let exited = terminated.elapsed();
    wait_until(
        "the other server to hold the stream",
        Duration::from_secs(10),
        || cluster.holds(1, stream),
    );
    let continued_at = terminated.elapsed();
    // Long enough for the new server's segments to reach the poller.
    std::thread::sleep(Duration::from_secs(6));
    stop.store(true, Ordering::Relaxed);
    stop_feed.store(true, Ordering::Relaxed);
    let seen = poller.join().unwrap();
    let fed = feed_reader
        .join()
        .unwrap()
        .expect("the feed reader's one connection");
    assert!(wait_output(second).status.success());

    eprintln!(
        "listener closed after {closed_after:?}; publisher closed after {publisher_closed:?}; \
         ingest exited {exited:?} after SIGTERM; the other server held the stream after \
         {continued_at:?}; the live playlist's newest segment stood still at most \
         {:?} ({} polls)",
        seen.longest_unchanged, seen.polls
    );
    assert!(
        exited <= Duration::from_secs(DRAIN_TIMEOUT_SECS + 3),
        "drained ingest took {exited:?}"
    );
    assert_continued(&cluster, stream, &recording_id, &seen, 0);
    // The feed: never ended, and the continued stream arrived on the same connection,
    // from its configuration and a keyframe.
    use streamcdn_media::feed::FeedMessage;
    use streamcdn_media::input::MediaInput;
    assert!(
        !fed.iter().any(|r| r.message == FeedMessage::End),
        "the feed ended during the hand-over"
    );
    let since_close: Vec<&common::feed::Received> = fed
        .iter()
        .filter(|r| r.at >= terminated + publisher_closed)
        .collect();
    let first_video = since_close.iter().find_map(|r| match &r.message {
        FeedMessage::Media(MediaInput::Video(f)) => Some(f.keyframe),
        _ => None,
    });
    assert_eq!(
        first_video,
        Some(true),
        "the continued feed starts at a keyframe"
    );
    assert!(
        since_close
            .iter()
            .any(|r| matches!(r.message, FeedMessage::Media(MediaInput::VideoConfig(_)))),
        "the continued feed sends its configuration again"
    );
    let frames_after = since_close
        .iter()
        .filter(|r| r.at >= terminated + continued_at)
        .filter(|r| matches!(r.message, FeedMessage::Media(MediaInput::Video(_))))
        .count();
    eprintln!(
        "feed: {} messages on one connection, {frames_after} video frames after the other server continued",
        fed.len()
    );
    assert!(
        frames_after >= 60,
        "the continued stream reached the feed reader: {frames_after} frames"
    );
}

#[test]
fn a_publisher_that_never_comes_back_ends_after_the_reconnect_window_once() {
    let (hooks, port) = Hooks::start();
    let window = Duration::from_secs(4);
    let provider = format!(
        "reconnect_window = \"{}s\"\n[providers.hooks]\non_recording_ended = \"http://127.0.0.1:{port}/ended\"\n",
        window.as_secs()
    );
    let mut cluster = Cluster::start("drain-gone", &provider);
    let stream = "gone";
    let publisher = publish(
        &tool("ffmpeg"),
        &cluster.ingests[0].publish_url(PROVIDER, stream, KEY),
        60,
        "h264",
    );
    wait_playable(&cluster.edge, &format!("/{PROVIDER}/{stream}/live.m3u8"));
    wait_until("two segments", Duration::from_secs(20), || {
        cluster.journal(stream)["segments"]
            .as_array()
            .is_some_and(|s| s.len() >= 2)
    });
    let (stop, poller) = start_poller(&cluster.edge, stream);
    sigterm(&cluster.ingests[0]);
    let _ = wait_output(publisher);
    let interrupted = Instant::now();
    wait_exited(
        &mut cluster.ingests[0],
        Duration::from_secs(DRAIN_TIMEOUT_SECS + 5),
    );
    // A rolling restart: the drained server comes back; both servers now sweep.
    cluster.ingests[0].start();
    wait_until("EXT-X-ENDLIST", window + Duration::from_secs(20), || {
        poller.is_finished()
            || http_request_at(
                &cluster.edge.host,
                cluster.edge.http,
                "GET",
                &format!("/{PROVIDER}/{stream}/live.m3u8"),
                &[],
            )
            .is_ok_and(|r| r.text().contains("#EXT-X-ENDLIST"))
    });
    let ended_after = interrupted.elapsed();
    // More sweeps by both servers: still one notification.
    std::thread::sleep(Duration::from_secs(8));
    stop.store(true, Ordering::Relaxed);
    let seen = poller.join().unwrap();
    eprintln!(
        "ENDLIST {ended_after:?} after the publisher left (window {window:?}); \
         on_recording_ended sent {} time(s)",
        hooks.count("/ended")
    );
    let first_endlist = seen.endlist_at.expect("the poller saw the end");
    assert!(
        first_endlist.duration_since(interrupted) >= window,
        "ended before the reconnect window passed: {:?}",
        first_endlist.duration_since(interrupted)
    );
    assert!(
        ended_after <= window + Duration::from_secs(12),
        "ended {ended_after:?} after the publisher left"
    );
    assert_eq!(hooks.count("/ended"), 1, "{:?}", hooks.0.lock().unwrap());
    let journal = cluster.journal(stream);
    assert_eq!(journal["state"], "ended", "{journal}");
    assert!(journal.get("interrupted_at").is_none(), "{journal}");
    assert_eq!(cluster.recordings(stream).len(), 1);
}

/// `dig +short` for the delivery name at the router.
fn dns_answer(router: &Node) -> String {
    let out = std::process::Command::new(tool_or("dig", "apt-get install bind9-dnsutils"))
        .args([&format!("@{}", router.host), "-p", &router.dns.to_string()])
        .args(["+time=1", "+tries=1", "+short", "live.streamcdn.test", "A"])
        .output()
        .expect("run dig");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Where the router's 302 sends a viewer.
fn redirect_target(router: &Node) -> String {
    let Ok(mut s) = std::net::TcpStream::connect((router.host.as_str(), router.router_http)) else {
        return String::new();
    };
    let _ =
        s.write_all(b"GET /demo/cam/index.m3u8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    response
        .lines()
        .find_map(|l| {
            l.strip_prefix("location: ")
                .or_else(|| l.strip_prefix("Location: "))
        })
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_drained_edge_leaves_the_routers_answers_before_it_closes() {
    let redis = Redis::start();
    let registry = redis.registry_toml("drain-edge");
    let net = loopback_net();
    let router = Node::role_on(
        "de-router",
        "router",
        &format!("{net}.1"),
        free_port(),
        None,
        &registry,
    );
    let mut edges: Vec<Node> = (2..=3)
        .map(|i| {
            Node::role_with_node(
                &format!("de-edge{i}"),
                "edge",
                &format!("{net}.{i}"),
                free_port(),
                None,
                "drain_timeout = \"6s\"",
                &registry,
            )
        })
        .collect();
    // Both edges known: answers name each in turn or by load; wait for the first.
    wait_until(
        "the router to know both edges",
        Duration::from_secs(15),
        || {
            let r = http_request_at(
                &router.host,
                router.admin,
                "GET",
                "/api/v1/routing/edges",
                &[],
            )
            .unwrap();
            let known: serde_json::Value = serde_json::from_str(&r.text()).unwrap_or_default();
            known
                .as_array()
                .is_some_and(|a| a.iter().filter(|e| e["healthy"] == true).count() == 2)
                && edges.iter().any(|e| e.host == dns_answer(&router))
        },
    );
    let chosen = edges
        .iter()
        .position(|e| e.host == dns_answer(&router))
        .unwrap();
    let (drained_host, other_host) = (edges[chosen].host.clone(), edges[1 - chosen].host.clone());

    // A viewer keeps asking the drained edge (its DNS answer is cached): it is served
    // until the edge closes.
    let viewer_stop = Arc::new(AtomicBool::new(false));
    let viewer = {
        let (host, port, stop) = (
            drained_host.clone(),
            edges[chosen].http,
            viewer_stop.clone(),
        );
        std::thread::spawn(move || {
            let mut served = 0u32;
            while !stop.load(Ordering::Relaxed) {
                match http_request_at(&host, port, "GET", "/_streamcdn/rum.js", &[]) {
                    Ok(r) if r.status == 200 => served += 1,
                    _ => break,
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            served
        })
    };

    let admin = &edges[chosen];
    let answer = http_request_at(
        &admin.host,
        admin.admin,
        "POST",
        "/api/v1/drain",
        &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
    )
    .unwrap();
    assert_eq!(answer.status, 202, "{}", answer.text());
    let drained = Instant::now();
    let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(body["started"], true, "{body}");
    assert_eq!(body["roles"][0]["role"], "edge", "{body}");

    // The router stops naming it (DNS and 302) while the edge still serves: the last
    // answer naming it comes before the edge closes.
    let mut last_named = None;
    let mut closed = None;
    while closed.is_none() {
        assert!(
            drained.elapsed() < Duration::from_secs(15),
            "the drained edge never closed"
        );
        let serving =
            std::net::TcpStream::connect((drained_host.as_str(), edges[chosen].http)).is_ok();
        if !serving {
            closed = Some(drained.elapsed());
            break;
        }
        let asked = drained.elapsed();
        let named = dns_answer(&router) == drained_host
            || redirect_target(&router).contains(&format!("http://{drained_host}:"));
        if named {
            last_named = Some(asked);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    viewer_stop.store(true, Ordering::Relaxed);
    let served = viewer.join().unwrap();
    let exited = wait_exited(&mut edges[chosen], Duration::from_secs(10));
    let closed = closed.unwrap();
    eprintln!(
        "router last named the edge {last_named:?} after the drain began; edge closed after \
         {closed:?}, exited {exited:?} later; the viewer was served {served} times meanwhile; \
         the router now names {other_host}"
    );
    assert!(
        last_named.is_none_or(|named| named + Duration::from_secs(1) < closed),
        "the router named the drained edge at {last_named:?}, it closed at {closed:?}"
    );
    assert_eq!(dns_answer(&router), other_host);
    assert!(served > 0);
    // The viewer never moved, so the edge waited out drain_timeout.
    assert!(closed >= Duration::from_secs(5), "{closed:?}");
}

/// Waits for `child` to exit by itself within `limit`, else kills it; whether it exited.
fn exits_within(child: &mut std::process::Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

#[test]
fn an_srt_publisher_moved_by_a_drain_continues_the_recording_through_the_ingest_name() {
    let mut cluster = Cluster::start("drain-srt", "");
    let net = cluster.ingests[0]
        .host
        .rsplit_once('.')
        .unwrap()
        .0
        .to_owned();
    let router = Node::role_on(
        "drain-srt-router",
        "router",
        &format!("{net}.20"),
        free_port(),
        None,
        &cluster._redis.registry_toml("drain-srt"),
    );
    let node_at = |cluster: &Cluster, ip: &str| {
        cluster
            .ingests
            .iter()
            .position(|n| n.host == ip)
            .unwrap_or_else(|| panic!("{ip} is no ingest of the cluster"))
    };
    let stream = "srt-handoff";

    // The publisher resolves the ingest name: both servers are answered; it takes the
    // first (SRT's URL names the host; the port is the deployment's).
    let mut answer = Vec::new();
    wait_until(
        "both ingests in the ingest name",
        Duration::from_secs(15),
        || {
            answer = ingest_answer(&router.host, router.dns);
            answer.len() == 2
        },
    );
    let first_server = node_at(&cluster, &answer[0]);
    let other = 1 - first_server;
    let mut first = publish_ts(
        &cluster.ingests[first_server].srt_url(PROVIDER, stream, KEY),
        60,
    );
    let (recording_id, stop, poller) = watch_stream(&cluster, stream);

    // SIGTERM: the server is announced draining and the ingest name drops it at once;
    // SRT cannot ask a caller to move, so its connection closes after the drain
    // timeout, and the encoder reconnects (here: ffmpeg restarted, as an encoder's
    // reconnect does) to what the name answers now.
    let terminated = Instant::now();
    sigterm(&cluster.ingests[first_server]);
    let other_ip = cluster.ingests[other].host.clone();
    wait_until(
        "the drained ingest to leave the name",
        Duration::from_secs(5),
        || ingest_answer(&router.host, router.dns) == [other_ip.clone()],
    );
    let left_name = terminated.elapsed();
    assert!(
        exits_within(&mut first, Duration::from_secs(DRAIN_TIMEOUT_SECS + 15)),
        "the SRT publisher was never closed"
    );
    let publisher_closed = terminated.elapsed();
    let reconnect_to = node_at(&cluster, &ingest_answer(&router.host, router.dns)[0]);
    assert_eq!(reconnect_to, other);
    let second = publish_ts(&cluster.ingests[other].srt_url(PROVIDER, stream, KEY), 10);
    wait_exited(
        &mut cluster.ingests[first_server],
        Duration::from_secs(DRAIN_TIMEOUT_SECS + 8),
    );
    wait_until(
        "the other server to hold the stream",
        Duration::from_secs(10),
        || cluster.holds(other, stream),
    );
    let continued_at = terminated.elapsed();
    std::thread::sleep(Duration::from_secs(6));
    stop.store(true, Ordering::Relaxed);
    let seen = poller.join().unwrap();
    let second = wait_output(second);
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    eprintln!(
        "drained ingest left the ingest name after {left_name:?}; SRT publisher closed \
         after {publisher_closed:?}; the other server held the stream after \
         {continued_at:?}; the newest live segment stood still at most {:?} ({} polls)",
        seen.longest_unchanged, seen.polls
    );
    assert_continued(&cluster, stream, &recording_id, &seen, first_server);
    // The whole recording decodes, across the discontinuity.
    let recorded = decode(
        &cluster.edge.play_url(&format!(
            "/{PROVIDER}/{stream}/{recording_id}/playlist.m3u8"
        )),
        &[],
    );
    assert!(
        recorded.video_frames >= 30 * 10 && recorded.audio_frames > 0,
        "{recorded:?}"
    );
    let drained_log = cluster.ingests[first_server].log_text();
    assert!(
        drained_log.contains("SRT publisher connected"),
        "{drained_log}"
    );
}
