//! The registry failing under a live stream, end to end: an ingest, a mid-tier (the top
//! tier) and an edge, real processes on loopback, ffmpeg publishing, a poller on both
//! caches' `live.m3u8` every 100 ms. A Sentinel failover (`kill -9` of the primary),
//! and a Redis restarted from an old snapshot and then flushed: no viewer sees a 404 or
//! an `EXT-X-ENDLIST`, the playlist keeps moving, announcements resume, and settings
//! made through the API survive.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::redis_set::{redis_cli, RedisProcess, Sentinels};
use common::*;

const LIGHT: &[&str] = &[
    "-s", "640x360", "-b:v", "600k", "-maxrate", "600k", "-bufsize", "600k",
];
const LIVE: &str = "/demo/s/live.m3u8";

fn registry_toml(url: &str, namespace: &str) -> String {
    format!(
        "[registry]\nbackend = \"redis\"\nurl = \"{url}\"\nnamespace = \"{namespace}\"\nlease = \"3s\"\n"
    )
}

struct Deployment {
    ingest: Node,
    mid: Node,
    edge: Node,
}

impl Deployment {
    fn start(registry: &str) -> Deployment {
        let ingest = Node::role("ingest", "ingest", registry);
        let mid = Node::role("mid", "edge", &format!("{registry}[edge]\nparents = []\n"));
        let edge = Node::role(
            "edge",
            "edge",
            &format!("{registry}[edge]\nparents = [\"{}\"]\n", mid.http_base()),
        );
        Deployment { ingest, mid, edge }
    }

    fn wait_live(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !http_get(self.edge.http, LIVE, &[]).is_ok_and(|r| r.status == 200) {
            assert!(
                Instant::now() < deadline,
                "the stream never played at the edge"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// What a cache answered for `live.m3u8`, from one poll.
struct Answer {
    at: Instant,
    status: u16,
    endlist: bool,
    /// The newest segment listed.
    newest: Option<String>,
}

/// Polls `live.m3u8` on each port every 100 ms (and fetches each newest segment once)
/// until stopped.
struct Poller {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<(u16, Answer)>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Poller {
    fn start(ports: &[u16]) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let threads = ports
            .iter()
            .map(|&port| {
                let (stop, answers) = (stop.clone(), answers.clone());
                std::thread::spawn(move || {
                    let mut fetched: Option<String> = None;
                    while !stop.load(Ordering::Relaxed) {
                        let at = Instant::now();
                        let answer = match http_get(port, LIVE, &[]) {
                            Ok(r) => {
                                let text = r.text();
                                let newest =
                                    playlist_segments(&text).last().map(|(_, u)| u.clone());
                                if r.status == 200 && newest != fetched {
                                    if let Some(uri) = &newest {
                                        let path = format!("/demo/s/{uri}");
                                        let segment = http_get(port, &path, &[]);
                                        assert!(
                                            segment.as_ref().is_ok_and(
                                                |s| s.status == 200 && !s.body.is_empty()
                                            ),
                                            "{path} on {port}: {:?}",
                                            segment.map(|s| s.status)
                                        );
                                        fetched = newest.clone();
                                    }
                                }
                                Answer {
                                    at,
                                    status: r.status,
                                    endlist: text.contains("#EXT-X-ENDLIST"),
                                    newest,
                                }
                            }
                            Err(_) => Answer {
                                at,
                                status: 0,
                                endlist: false,
                                newest: None,
                            },
                        };
                        answers.lock().unwrap().push((port, answer));
                        std::thread::sleep(Duration::from_millis(100).saturating_sub(at.elapsed()));
                    }
                })
            })
            .collect();
        Poller {
            stop,
            answers,
            threads,
        }
    }

    /// Stops polling; checks that every answer was a 200 without `EXT-X-ENDLIST` and
    /// that the playlist moved on after `fault`; returns the longest time each port's
    /// newest segment stood still.
    fn finish(self, fault: Instant) -> Vec<(u16, Duration)> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().expect("a poller failed");
        }
        let answers = self.answers.lock().unwrap();
        let mut ports: Vec<u16> = answers.iter().map(|(p, _)| *p).collect();
        ports.sort();
        ports.dedup();
        ports
            .into_iter()
            .map(|port| {
                let mine: Vec<&Answer> = answers
                    .iter()
                    .filter(|(p, _)| *p == port)
                    .map(|(_, a)| a)
                    .collect();
                for a in &mine {
                    assert_eq!(
                        a.status,
                        200,
                        "port {port} answered {} {:?} after the fault",
                        a.status,
                        a.at.checked_duration_since(fault)
                    );
                    assert!(!a.endlist, "port {port} ended the live playlist");
                }
                let before = mine
                    .iter()
                    .rev()
                    .find(|a| a.at < fault)
                    .and_then(|a| a.newest.clone());
                assert!(
                    mine.last().unwrap().newest > before,
                    "port {port}: the playlist stopped at {before:?}"
                );
                let mut still = Duration::ZERO;
                let mut since = mine[0];
                for a in &mine {
                    if a.newest != since.newest {
                        since = a;
                    }
                    still = still.max(a.at - since.at);
                }
                (port, still)
            })
            .collect()
    }
}

fn provider_settings(node: &Node) -> String {
    http_request(node.admin, "GET", "/api/v1/providers/demo/settings", &[])
        .unwrap()
        .text()
}

fn set_archive_after(node: &Node, value: &str) {
    let response = http_request_body(
        node.admin,
        "PUT",
        "/api/v1/providers/demo/settings",
        &[("Content-Type", "application/json")],
        format!(r#"{{"archive_after":"{value}"}}"#).as_bytes(),
    )
    .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

/// Lease left on the stream's record on the server at `port`, in ms (negative: none).
fn stream_pttl(port: u16, namespace: &str) -> i64 {
    redis_cli(port, &["PTTL", &format!("{namespace}:stream:demo/s")])
        .parse()
        .unwrap_or(-2)
}

#[test]
fn kill_9_of_the_redis_primary_under_a_live_stream() {
    let mut set = Sentinels::start();
    let deployment = Deployment::start(&set.registry_toml("ha"));
    set_archive_after(&deployment.ingest, "7m");
    let publisher = publish_with(
        &tool("ffmpeg"),
        &deployment.ingest.publish_url("demo", "s", KEY),
        40,
        "h264",
        LIGHT,
    );
    deployment.wait_live();
    let poller = Poller::start(&[deployment.mid.http, deployment.edge.http]);
    std::thread::sleep(Duration::from_secs(4));

    let fault = Instant::now();
    set.kill_primary();
    let failover = wait_until(
        "the sentinels to promote the replica",
        Duration::from_secs(30),
        || set.promoted(),
    );
    let new_master = set.master_port().unwrap();
    assert_eq!(new_master, set.servers[1].port);
    // Announcements resume on the new master: two leases on, the stream's record is
    // still there, so it was renewed there.
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        stream_pttl(new_master, "ha") > 0,
        "the stream's lease lapsed"
    );
    std::thread::sleep(Duration::from_secs(4));
    let still = poller.finish(fault);
    eprintln!(
        "failover took {failover:?}; longest stand-still of the newest segment per port: {still:?}"
    );
    assert!(
        provider_settings(&deployment.ingest).contains("\"archive_after\":\"7m\""),
        "{}",
        provider_settings(&deployment.ingest)
    );
    for node in [&deployment.ingest, &deployment.mid, &deployment.edge] {
        assert!(
            node.log_text().contains("the registry is back"),
            "{}",
            node.log_text()
        );
    }
    let _ = wait_output(publisher);
}

#[test]
fn redis_restarted_from_an_old_snapshot_then_flushed_under_a_live_stream() {
    let dir = temp_dir("snapshot");
    let mut redis = RedisProcess::server(&dir, &["--save", "", "--appendonly", "no"]);
    let deployment = Deployment::start(&registry_toml(&redis.url(), "snap"));
    let publisher = publish_with(
        &tool("ffmpeg"),
        &deployment.ingest.publish_url("demo", "s", KEY),
        50,
        "h264",
        LIGHT,
    );
    deployment.wait_live();
    let poller = Poller::start(&[deployment.mid.http, deployment.edge.http]);
    // A snapshot with the stream in it, then a change made through the API, then more
    // than a lease: loaded again, the snapshot holds only expired leases and an old
    // setting.
    assert_eq!(redis_cli(redis.port, &["SAVE"]), "OK");
    set_archive_after(&deployment.ingest, "9m");
    std::thread::sleep(Duration::from_secs(4));
    let fault = Instant::now();
    redis.kill9();
    redis.restart();
    let reannounced = wait_until(
        "the stream to be announced again",
        Duration::from_secs(5),
        || stream_pttl(redis.port, "snap") > 0,
    );
    eprintln!("stream announced again {reannounced:?} after the restart");
    assert!(reannounced < Duration::from_millis(1500), "{reannounced:?}");
    wait_until(
        "the lost setting to be put back",
        Duration::from_secs(3),
        || provider_settings(&deployment.ingest).contains("\"archive_after\":\"9m\""),
    );
    assert!(deployment
        .ingest
        .log_text()
        .contains("THE REGISTRY LOST SETTINGS"));
    std::thread::sleep(Duration::from_secs(5));

    assert_eq!(redis_cli(redis.port, &["FLUSHALL"]), "OK");
    let reannounced = wait_until(
        "the stream to be announced again",
        Duration::from_secs(5),
        || stream_pttl(redis.port, "snap") > 0,
    );
    eprintln!("stream announced again {reannounced:?} after the flush");
    std::thread::sleep(Duration::from_secs(6));
    let still = poller.finish(fault);
    eprintln!("longest stand-still of the newest segment per port: {still:?}");
    let _ = wait_output(publisher);
    let _ = std::fs::remove_dir_all(&dir);
}
