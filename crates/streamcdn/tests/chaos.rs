//! Chaos: the README's cluster — two ingest servers behind HAProxy, an archiver to a real
//! S3 server, two mid-tier caches, two edges behind a load-balanced address, a router,
//! and Redis with Sentinel — with ffmpeg publishers, simulated viewers and hls.js in
//! Chromium watching, while every process is restarted the way an operator does it
//! (SIGTERM, start again), a few are killed with SIGKILL at random (seed printed), and
//! the Redis primary dies. No viewer may see an error or `#EXT-X-ENDLIST` while its
//! publisher is live; every recording must be whole (one continuous media sequence, no
//! segment twice), archived exactly once and playable from storage under its URL.

mod common;

use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::page::Page;
use common::*;

const STREAMS: [&str; 2] = ["chaos-a", "chaos-b"];

/// Low bit rate: a dozen processes and a browser share two cores.
const LIGHT: &[&str] = &[
    "-s", "426x240", "-b:v", "300k", "-maxrate", "300k", "-bufsize", "300k",
];

/// How long a drained server waits for its publishers and viewers to leave.
const DRAIN: &str = "2s";

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An encoder that reconnects, as OBS does: ffmpeg through HAProxy, started again
/// whenever its connection ends, until `stop`.
struct Publisher {
    stop: Arc<AtomicBool>,
    reconnects: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Publisher {
    fn start(url: String) -> Publisher {
        let stop = Arc::new(AtomicBool::new(false));
        let reconnects = Arc::new(AtomicU64::new(0));
        let (stop_flag, count) = (stop.clone(), reconnects.clone());
        let thread = std::thread::spawn(move || {
            let ffmpeg = tool("ffmpeg");
            while !stop_flag.load(Ordering::SeqCst) {
                let mut child = publish_with(&ffmpeg, &url, 600, "h264", LIGHT);
                while !stop_flag.load(Ordering::SeqCst) {
                    if child.try_wait().ok().flatten().is_some() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                if stop_flag.load(Ordering::SeqCst) {
                    finish(child);
                    return;
                }
                // Exited (its connection ended): reap it, then reconnect.
                let _ = child.wait();
                count.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Publisher {
            stop,
            reconnects,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("publisher thread");
        }
    }
}

/// Ends an ffmpeg publisher cleanly (SIGINT: it closes the stream, then exits).
fn finish(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let _ = wait_exit(&mut child, "ffmpeg did not stop on SIGINT");
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Polls every stream's `live.m3u8` through the viewers' address every 100 ms and keeps
/// what a player would have stopped on: an `#EXT-X-ENDLIST`, or an answer other than 200.
struct Watchdog {
    live: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<String>>>,
    polls: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn start(host: String, port: u16) -> Watchdog {
        let live = Arc::new(AtomicBool::new(true));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let polls = Arc::new(AtomicU64::new(0));
        let (flag, log, count) = (live.clone(), seen.clone(), polls.clone());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            while flag.load(Ordering::SeqCst) {
                for stream in STREAMS {
                    let path = format!("/demo/{stream}/live.m3u8");
                    let problem = match http_request_at(&host, port, "GET", &path, &[]) {
                        Ok(r) if r.status == 200 && r.text().contains("#EXT-X-ENDLIST") => {
                            Some("#EXT-X-ENDLIST".to_owned())
                        }
                        Ok(r) if r.status == 200 => None,
                        Ok(r) => Some(format!("HTTP {}", r.status)),
                        Err(e) => Some(format!("{e}")),
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    if let Some(problem) = problem {
                        if flag.load(Ordering::SeqCst) {
                            log.lock().unwrap().push(format!(
                                "{:>6.1} s {path}: {problem}",
                                started.elapsed().as_secs_f64()
                            ));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Watchdog {
            live,
            seen,
            polls,
            thread: Some(thread),
        }
    }

    /// Stops watching (the publishers are about to end) and returns what it saw.
    fn finish(&mut self) -> Vec<String> {
        self.live.store(false, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("watchdog thread");
        }
        self.seen.lock().unwrap().clone()
    }
}

/// HAProxy in HTTP mode in front of the edges: the viewers' one address. Its health
/// check asks each edge's playback `/healthz`, which a draining edge fails, so new connections
/// go to the other edge while the draining one finishes what it serves.
struct ViewerAddress {
    child: Child,
    host: String,
    port: u16,
    dir: std::path::PathBuf,
}

impl ViewerAddress {
    fn start(host: &str, edges: &[&Node]) -> ViewerAddress {
        let dir = temp_dir("viewer-haproxy");
        let port = free_port();
        let servers: String = edges
            .iter()
            .enumerate()
            .map(|(i, e)| format!("    server edge{i} {}:{} check\n", e.host, e.http))
            .collect();
        let config = format!(
            "defaults\n    mode http\n    timeout connect 1s\n    timeout client 60s\n    timeout server 60s\n    retries 3\n    option redispatch 1\n    retry-on conn-failure empty-response response-timeout\n\
             frontend viewers\n    bind {host}:{port}\n    default_backend edges\n\
             backend edges\n    balance roundrobin\n    option httpchk GET /healthz\n    default-server inter 300ms fall 1 rise 1\n{servers}"
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = Command::new(tool_or("haproxy", "apt-get install haproxy"))
            .args(["-db", "-f"])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("haproxy.log")).unwrap())
            .spawn()
            .expect("spawn haproxy");
        wait_listening(host, port, "haproxy");
        ViewerAddress {
            child,
            host: host.to_owned(),
            port,
            dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.host, self.port)
    }
}

impl Drop for ViewerAddress {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A rolling upgrade's step: SIGTERM (a drain), then the same server again.
fn restart(node: &mut Node, name: &str) {
    let began = Instant::now();
    let status = node.stop_with("TERM");
    let drained = began.elapsed();
    assert!(status.success(), "{name} exited with {status} on SIGTERM");
    assert!(
        drained < Duration::from_secs(15),
        "{name} took {drained:?} to drain"
    );
    node.start();
    println!(
        "restarted {name}: drained in {:.1} s",
        drained.as_secs_f64()
    );
}

/// The highest media sequence number of each stream's live playlist, through the
/// viewers' address.
fn live_positions(viewers: &ViewerAddress) -> Vec<Option<u64>> {
    STREAMS
        .iter()
        .map(|stream| {
            let path = format!("/demo/{stream}/live.m3u8");
            let text = http_request_at(&viewers.host, viewers.port, "GET", &path, &[])
                .ok()
                .filter(|r| r.status == 200)?
                .text();
            let first: u64 = tag_value(&text, "#EXT-X-MEDIA-SEQUENCE")?.parse().ok()?;
            Some(first + playlist_segments(&text).len() as u64)
        })
        .collect()
}

/// Waits until every stream has new segments past where it was: the deployment has
/// recovered from the last step.
fn wait_flowing(viewers: &ViewerAddress, what: &str) {
    let before = live_positions(viewers);
    let began = Instant::now();
    wait_until(
        &format!("the streams to flow again after {what}"),
        Duration::from_secs(40),
        || {
            live_positions(viewers)
                .iter()
                .zip(&before)
                .all(|(now, then)| {
                    matches!((now, then), (Some(n), Some(t)) if n > t)
                        || matches!((now, then), (Some(_), None))
                })
        },
    );
    println!(
        "after {what}: new segments on every stream within {:.1} s",
        began.elapsed().as_secs_f64()
    );
}

/// The media sequence numbers of an archived recording's playlist, in order.
fn archived_sequence(s3: &S3Server, key: &str) -> Vec<u64> {
    let playlist = s3
        .object(&format!("{key}/playlist.m3u8"))
        .unwrap_or_else(|| panic!("{key}/playlist.m3u8 not in storage"));
    let text = String::from_utf8_lossy(&playlist).into_owned();
    playlist_segments(&text)
        .iter()
        .map(|(_, uri)| {
            let name = uri.rsplit('/').next().unwrap_or(uri);
            name.split('.')
                .next()
                .unwrap_or(name)
                .parse()
                .unwrap_or_else(|_| panic!("segment name {uri}"))
        })
        .collect()
}

#[test]
fn rolling_restarts_kills_and_a_registry_failover_go_unnoticed() {
    require_browser_tools(&["playwright-core"]);
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("chaos seed {seed} (CHAOS_SEED={seed} repeats this run's choices)");

    let mut registry = Sentinels::start();
    let s3 = S3Server::start();
    let config = format!(
        "{}{}",
        registry.registry_toml("chaos"),
        s3.archive_toml("1h")
    );
    let node_extra = format!("drain_timeout = \"{DRAIN}\"");
    let net = loopback_net();
    let rtmp_port = free_port();
    let data = temp_dir("chaos-shared");
    let slots: Vec<String> = (1..=2).map(|i| format!("{net}.{i}:{rtmp_port}")).collect();
    let haproxy = Haproxy::start(&format!("{net}.100"), free_port(), &slots);
    let server =
        |name: &str, role: &'static str, host: u8, data: Option<&std::path::Path>, extra: &str| {
            Node::role_with_node(
                &format!("chaos-{name}"),
                role,
                &format!("{net}.{host}"),
                if role == "ingest" {
                    rtmp_port
                } else {
                    free_port()
                },
                data,
                &node_extra,
                &format!("{config}{extra}"),
            )
        };
    let mut ingest1 = server("ingest1", "ingest", 1, Some(&data), "");
    let mut ingest2 = server("ingest2", "ingest", 2, Some(&data), "");
    let mut archiver = server("archiver", "archiver", 20, Some(&data), "");
    let mid = "[edge]\ntier = \"mid\"\ncache_disk = \"64MiB\"\n";
    let mut mid1 = server("mid1", "edge", 11, None, mid);
    let mut mid2 = server("mid2", "edge", 12, None, mid);
    let below = format!(
        "[edge]\nparents = [\"{}\", \"{}\"]\ncache_disk = \"64MiB\"\n",
        mid1.http_base(),
        mid2.http_base()
    );
    let mut edge1 = server("edge1", "edge", 21, None, &below);
    let mut edge2 = server("edge2", "edge", 22, None, &below);
    let mut router = server("router", "router", 30, None, "");
    let viewers = ViewerAddress::start(&format!("{net}.200"), &[&edge1, &edge2]);

    // Set through the API, kept by the registry: the recordings are archived 5 s after
    // they end (the configuration says an hour), so archiving at the end shows the
    // setting survived the registry's failover.
    let set = http_request_body_at(
        &ingest1.host,
        ingest1.admin,
        "PUT",
        "/api/v1/providers/demo/settings",
        &[("Content-Type", "application/json")],
        br#"{"archive_after":"5s"}"#,
    )
    .expect("provider settings");
    assert_eq!(set.status, 200, "{}", set.text());

    let mut publishers: Vec<Publisher> = STREAMS
        .iter()
        .map(|s| Publisher::start(haproxy.publish_url("demo", s)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !live_positions(&viewers).iter().all(Option::is_some) {
        if Instant::now() > deadline {
            let path = format!("/demo/{}/live.m3u8", STREAMS[0]);
            let through = http_request_at(&viewers.host, viewers.port, "GET", &path, &[]);
            let direct = http_request_at(&edge1.host, edge1.http, "GET", &path, &[]);
            let mid = http_request_at(&mid1.host, mid1.http, "GET", &path, &[]);
            panic!(
                "the streams never played through the edges: through HAProxy {:?}, edge1 {:?}, mid1 {:?}; HAProxy: {}",
                through.map(|r| (r.status, r.text())),
                direct.map(|r| (r.status, r.text())),
                mid.map(|r| (r.status, r.text())),
                std::fs::read_to_string(viewers.dir.join("haproxy.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut watchdog = Watchdog::start(viewers.host.clone(), viewers.port);
    let load = hls_viewers_with(
        &STREAMS.map(|s| viewers.url(&format!("/demo/{s}/index.m3u8"))),
        20,
        600,
        &["--retries", "3"],
    );
    let browser = Page::open_for(
        "watch_page.mjs",
        // LL-HLS (`?hls`): this test follows hls.js through the chaos.
        &viewers.url(&format!("/demo/{}/player?hls", STREAMS[0])),
        600,
    );
    let first = browser.wait_for("hls.js playing", Duration::from_secs(30), |s| {
        s["state"] == "live" && s["frames"].as_u64().unwrap_or(0) > 30
    });
    let began = Instant::now();

    // 1. A rolling restart of every process, one by one.
    let mut all: Vec<(&str, &mut Node)> = vec![
        ("ingest1", &mut ingest1),
        ("ingest2", &mut ingest2),
        ("archiver", &mut archiver),
        ("mid1", &mut mid1),
        ("mid2", &mut mid2),
        ("edge1", &mut edge1),
        ("edge2", &mut edge2),
        ("router", &mut router),
    ];
    for (name, node) in all.iter_mut() {
        restart(node, name);
        wait_flowing(&viewers, &format!("restarting {name}"));
    }

    // 2. A few SIGKILLs at random.
    let mut rng = seed;
    for _ in 0..3 {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let victim = (rng >> 33) as usize % all.len();
        let (name, node) = &mut all[victim];
        let status = node.stop_with("KILL");
        assert!(!status.success());
        node.start();
        println!("killed {name} (SIGKILL) and started it again");
        wait_flowing(&viewers, &format!("killing {name}"));
    }
    drop(all);

    // 3. The Redis primary dies; Sentinel promotes the replica; every role follows.
    let failed_over = Instant::now();
    registry.kill_primary();
    wait_until(
        "Sentinel to promote the replica",
        Duration::from_secs(30),
        || registry.promoted(),
    );
    wait_flowing(&viewers, "the registry's failover");
    wait_until(
        "every server announced on the new primary",
        Duration::from_secs(20),
        || {
            http_request_at(&router.host, router.admin, "GET", "/api/v1/nodes", &[])
                .is_ok_and(|r| r.status == 200 && r.text().matches("\"roles\"").count() >= 8)
        },
    );
    println!(
        "registry failover: every server announced again {:.1} s after the primary died",
        failed_over.elapsed().as_secs_f64()
    );

    // What the viewers saw while the publishers were live.
    let problems = watchdog.finish();
    let summary = {
        let _ = Command::new("kill")
            .args(["-INT", &load.id().to_string()])
            .status();
        viewers_summary(load)
    };
    let samples = browser.samples();
    let last = samples.last().cloned().unwrap_or(first.clone());
    println!(
        "{:.0} s of chaos; watchdog: {} polls, {} problems; viewers: {summary}; hls.js: {last}",
        began.elapsed().as_secs_f64(),
        watchdog.polls.load(Ordering::SeqCst),
        problems.len(),
    );
    for publisher in &mut publishers {
        println!(
            "publisher reconnected {} times",
            publisher.reconnects.load(Ordering::SeqCst)
        );
        publisher.stop();
    }
    assert!(
        problems.is_empty(),
        "viewers' playlists broke:\n{}",
        problems.join("\n")
    );
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(summary["live_ended"], 0, "{summary}");
    assert_eq!(summary["never_started"], 0, "{summary}");
    for sample in &samples {
        assert_eq!(
            sample["state"], "live",
            "hls.js left live playback: {sample}"
        );
        let fatal = sample["errors"].as_array().is_some_and(|e| {
            e.iter()
                .any(|e| e.as_str().is_some_and(|e| e.contains("fatal")))
        });
        assert!(!fatal, "hls.js: {sample}");
    }
    let played = last["frames"].as_u64().unwrap_or(0) - first["frames"].as_u64().unwrap_or(0);
    assert!(
        played as f64 > began.elapsed().as_secs_f64() * 15.0,
        "hls.js decoded only {played} frames in {:.0} s",
        began.elapsed().as_secs_f64()
    );

    // Every recording: archived once, whole, and playable from storage under its URL.
    for stream in STREAMS {
        let prefix = format!("demo/{stream}");
        wait_until(
            &format!("{prefix} archived"),
            Duration::from_secs(60),
            || {
                s3.keys(&prefix)
                    .iter()
                    .any(|k| k.ends_with("/_complete.json"))
                    && !data
                        .join("recordings")
                        .join(&prefix)
                        .read_dir()
                        .is_ok_and(|mut d| d.next().is_some())
            },
        );
        let recordings: std::collections::BTreeSet<String> = s3
            .keys(&prefix)
            .iter()
            .filter_map(|k| {
                Some(
                    k.strip_prefix(&format!("{prefix}/"))?
                        .split_once('/')?
                        .0
                        .to_owned(),
                )
            })
            .collect();
        assert_eq!(
            recordings.len(),
            1,
            "one recording of {stream}: {recordings:?}"
        );
        let recording = recordings.iter().next().unwrap();
        let key = format!("{prefix}/{recording}");
        let sequence = archived_sequence(&s3, &key);
        let expected: Vec<u64> = (sequence[0]..sequence[0] + sequence.len() as u64).collect();
        assert_eq!(sequence, expected, "{key}: media sequence not continuous");
        let objects = s3.keys(&key);
        for n in &sequence {
            let stored = objects
                .iter()
                .filter(|k| k.contains(&format!("/{n:06}.")))
                .count();
            assert_eq!(stored, 1, "{key}: segment {n} stored {stored} times");
        }
        let decoded = decode(&viewers.url(&format!("/{key}/index.m3u8")), &[]);
        assert!(
            decoded.video_frames as f64 > began.elapsed().as_secs_f64() * 25.0,
            "{key} from storage: {decoded:?}"
        );
        println!("{key}: {} segments, {decoded:?}", sequence.len());
    }
}
