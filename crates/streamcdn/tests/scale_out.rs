//! Scale-out end to end: ingest servers of one cluster behind HAProxy, a Redis registry,
//! a mid-tier and two edges, each a real process on its own loopback address. ffmpeg
//! publishes through HAProxy and plays from the edges; `hls-viewers` plays the part of
//! hundreds of viewers.

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::*;

/// Low bit rate so hundreds of simulated viewers do not saturate a 2-core machine.
const LIGHT: &[&str] = &[
    "-s", "640x360", "-b:v", "600k", "-maxrate", "600k", "-bufsize", "600k",
];

fn publish_light(url: &str, seconds: u32) -> Child {
    publish_with(&tool("ffmpeg"), url, seconds, "h264", LIGHT)
}

struct Cluster {
    redis: Option<Redis>,
    haproxy: Haproxy,
    net: String,
    rtmp_port: u16,
    data: std::path::PathBuf,
    registry: String,
    ingests: Vec<Node>,
}

impl Cluster {
    /// `servers` ingest servers sharing one data directory, behind HAProxy with slots
    /// for up to four.
    fn start(name: &str, servers: usize) -> Cluster {
        let redis = Redis::start();
        let net = loopback_net();
        let rtmp_port = free_port();
        let data = temp_dir(&format!("{name}-shared"));
        let registry = redis.registry_toml(name);
        let slots: Vec<String> = (1..=4).map(|i| format!("{net}.{i}:{rtmp_port}")).collect();
        let haproxy = Haproxy::start(&format!("{net}.100"), free_port(), &slots);
        let mut cluster = Cluster {
            redis: Some(redis),
            haproxy,
            net,
            rtmp_port,
            data,
            registry,
            ingests: Vec::new(),
        };
        for _ in 0..servers {
            cluster.add_ingest();
        }
        cluster
    }

    fn add_ingest(&mut self) {
        let i = self.ingests.len() + 1;
        let node = Node::role_on(
            &format!("ingest{i}"),
            "ingest",
            &format!("{}.{i}", self.net),
            self.rtmp_port,
            Some(&self.data),
            &self.registry,
        );
        self.ingests.push(node);
        // HAProxy's health check (every 500 ms) must see the new server up.
        self.haproxy.wait_up(&format!("ingest{i}"));
    }

    fn tier(&self, name: &str, host: u8, parents: &[&Node]) -> Node {
        let parents: Vec<String> = parents
            .iter()
            .map(|p| format!("\"{}\"", p.http_base()))
            .collect();
        let extra = format!(
            "{}[edge]\nparents = [{}]\ncache_disk = \"64MiB\"\n",
            self.registry,
            parents.join(", ")
        );
        Node::role_on(
            name,
            "edge",
            &format!("{}.{host}", self.net),
            free_port(),
            None,
            &extra,
        )
    }

    fn origin_metric(&self, prefix: &str) -> f64 {
        self.ingests.iter().map(|n| n.metric(prefix)).sum()
    }

    /// The ingest server (index) whose admin API lists `stream` as live.
    fn holder(&self, stream: &str) -> Option<usize> {
        self.ingests.iter().position(|n| {
            http_request_at(&n.host, n.admin, "GET", "/api/v1/streams", &[])
                .is_ok_and(|r| r.text().contains(&format!("\"stream\":\"{stream}\"")))
        })
    }

    fn journal(&self, stream: &str) -> (usize, serde_json::Value) {
        let dir = self.data.join("recordings/demo").join(stream);
        let mut recordings: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        recordings.sort();
        let last = recordings.last().expect("a recording");
        let text = std::fs::read_to_string(last.join("journal.json")).unwrap();
        (recordings.len(), serde_json::from_str(&text).unwrap())
    }
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_playable(edge: &Node, path: &str) {
    wait_until(
        &format!("{path} on {}", edge.host),
        Duration::from_secs(20),
        || http_request_at(&edge.host, edge.http, "GET", path, &[]).is_ok_and(|r| r.status == 200),
    );
}

#[test]
fn cluster_behind_haproxy_serves_every_viewer_through_the_tiers() {
    let mut cluster = Cluster::start("tiers", 2);
    let mid = cluster.tier("mid", 10, &[]);
    let edge1 = cluster.tier("edge1", 11, &[&mid]);
    let edge2 = cluster.tier("edge2", 12, &[&mid]);
    let started = Instant::now();

    let publisher = publish_light(&cluster.haproxy.publish_url("demo", "main"), 20);
    wait_playable(&edge1, "/demo/main/index.m3u8");
    let urls = [
        edge1.play_url("/demo/main/index.m3u8"),
        edge2.play_url("/demo/main/index.m3u8"),
    ];
    let viewers = hls_viewers(&urls, 500, 12);
    let summary = viewers_summary(viewers);
    assert!(wait_output(publisher).status.success());
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(summary["never_started"], 0, "{summary}");
    assert!(
        summary["segments"].as_u64().unwrap() >= 500 * 4,
        "{summary}"
    );

    // ffmpeg plays the whole recording from both edges, every frame there.
    wait_until("the recording to end", Duration::from_secs(20), || {
        cluster.journal("main").1["state"] == "ended"
    });
    let (recordings, journal) = cluster.journal("main");
    assert_eq!(recordings, 1);
    let segments = journal["segments"].as_array().unwrap().len() as u64;
    for edge in [&edge1, &edge2] {
        let decoded = decode(&edge.play_url("/demo/main/index.m3u8"), &[]);
        assert_eq!(decoded.video_frames, 600, "{decoded:?}");
        assert!((decoded.duration - 20.0).abs() < 0.3, "{decoded:?}");
    }

    // Offload: the ingest cluster saw each object once, from the mid-tier only.
    let segment_requests =
        cluster.origin_metric("streamcdn_origin_requests_total{kind=\"segment\"");
    let init_requests = cluster.origin_metric("streamcdn_origin_requests_total{kind=\"init\"");
    assert_eq!(segment_requests, segments as f64, "one request per segment");
    assert_eq!(init_requests, 1.0);
    // Playlists: index.m3u8 and the recording's playlist.m3u8 at most once per one-second
    // TTL while the test ran; live.m3u8, an LL-HLS playlist that these plain viewers
    // poll without directives, at most once per half part target (167 ms).
    let playlist_requests =
        cluster.origin_metric("streamcdn_origin_requests_total{kind=\"playlist\"");
    let bound = (2.0 + 1.0 / 0.167) * (started.elapsed().as_secs_f64() + 1.0);
    assert!(
        playlist_requests <= bound,
        "{playlist_requests} playlist fetches > {bound}"
    );
    assert_eq!(edge1.metric("streamcdn_origin_requests_total"), 0.0);
    assert!(
        mid.metric("streamcdn_edge_requests_total{result=\"coalesced\"")
            + mid.metric("streamcdn_edge_requests_total{result=\"hit\"")
            > 0.0
    );

    // Zero configuration: a third server joins; nothing else is touched. Three
    // publishers at once: HAProxy's leastconn gives the newcomer one of them.
    cluster.add_ingest();
    let names = ["late-a", "late-b", "late-c"];
    let publishers: Vec<Child> = names
        .iter()
        .map(|n| publish_light(&cluster.haproxy.publish_url("demo", n), 8))
        .collect();
    for name in names {
        wait_playable(&edge2, &format!("/demo/{name}/index.m3u8"));
    }
    let on_third = names
        .iter()
        .find(|n| cluster.holder(n) == Some(2))
        .expect("the new server took a publisher");
    for p in publishers {
        assert!(wait_output(p).status.success());
    }
    wait_until("the recordings to end", Duration::from_secs(20), || {
        names
            .iter()
            .all(|n| cluster.journal(n).1["state"] == "ended")
    });
    let decoded = decode(
        &edge2.play_url(&format!("/demo/{on_third}/index.m3u8")),
        &[],
    );
    assert_eq!(decoded.video_frames, 240, "{decoded:?}");
}

#[test]
fn killed_ingest_fails_over_to_another_server_of_the_cluster() {
    let cluster = Cluster::start("failover", 2);
    let mid = cluster.tier("mid", 10, &[]);
    let edge = cluster.tier("edge", 11, &[&mid]);

    let first = publish_light(&cluster.haproxy.publish_url("demo", "fo"), 60);
    wait_playable(&edge, "/demo/fo/index.m3u8");
    let viewers = hls_viewers(&[edge.play_url("/demo/fo/index.m3u8")], 20, 30);
    std::thread::sleep(Duration::from_secs(8));

    let holder = cluster.holder("fo").expect("a server holds the stream");
    let (_, before) = cluster.journal("fo");
    let listed_before: Vec<String> = before["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["file"].as_str().unwrap().to_owned())
        .collect();
    // kill -9, as a crash: no goodbye to the registry, the publisher's socket reset.
    let pid = cluster.ingests[holder].pid();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let killed_at = Instant::now();
    let _ = wait_output(first);
    // OBS reconnects to the same address; HAProxy sends it to the other server.
    let second = publish_light(&cluster.haproxy.publish_url("demo", "fo"), 12);
    let reconnect = killed_at.elapsed().as_secs_f64();
    wait_until(
        "the other server to hold the stream",
        Duration::from_secs(10),
        || cluster.holder("fo").is_some_and(|h| h != holder),
    );
    let summary = viewers_summary(viewers);
    assert!(wait_output(second).status.success());

    // Player side: playback went on; the gap is the reconnect plus about a segment.
    assert_eq!(summary["never_started"], 0, "{summary}");
    let max_stall = summary["max_stall_seconds"].as_f64().unwrap();
    assert!(
        max_stall <= reconnect + 2.0 + 2.5,
        "stall {max_stall:.1}s after a {reconnect:.1}s reconnect: {summary}"
    );
    assert_eq!(
        summary["errors"], 0,
        "viewers saw failed requests: {summary}"
    );

    // Recording side: one recording, continued after a discontinuity, nothing that was
    // durable before the kill lost.
    wait_until("the recording to end", Duration::from_secs(20), || {
        cluster.journal("fo").1["state"] == "ended"
    });
    let (recordings, journal) = cluster.journal("fo");
    assert_eq!(recordings, 1, "the reconnect continued the same recording");
    let segments = journal["segments"].as_array().unwrap();
    let files: Vec<&str> = segments
        .iter()
        .map(|s| s["file"].as_str().unwrap())
        .collect();
    for file in &listed_before {
        assert!(
            files.contains(&file.as_str()),
            "{file} lost in the failover"
        );
    }
    let discontinuities = segments
        .iter()
        .filter(|s| s["discontinuity"] == true)
        .count();
    assert_eq!(discontinuities, 1, "{journal}");
    let decoded = decode(&edge.play_url("/demo/fo/index.m3u8"), &[]);
    let recorded: f64 = segments
        .iter()
        .map(|s| s["duration_secs"].as_f64().unwrap())
        .sum();
    assert_eq!(
        decoded.video_frames,
        (recorded * 30.0).round() as u64,
        "{decoded:?}"
    );
    assert!(
        decoded.video_frames >= listed_before.len() as u64 * 60 + 360 - 60,
        "{decoded:?}"
    );
}

#[test]
fn killed_mid_tier_costs_viewers_nothing() {
    let cluster = Cluster::start("midkill", 1);
    let mid1 = cluster.tier("mid1", 10, &[]);
    let mut mid2 = cluster.tier("mid2", 11, &[]);
    let edge = cluster.tier("edge", 12, &[&mid1, &mid2]);

    let publisher = publish_light(&cluster.haproxy.publish_url("demo", "mk"), 30);
    wait_playable(&edge, "/demo/mk/index.m3u8");
    // Viewers join once the live window holds three segments, as players need to
    // start three behind the live edge without stalling.
    std::thread::sleep(Duration::from_secs(6));
    let viewers = hls_viewers(&[edge.play_url("/demo/mk/index.m3u8")], 50, 16);
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        mid2.metric("streamcdn_edge_requests_total") > 0.0,
        "both parents in use"
    );
    let mid2_base = mid2.http_base();
    mid2.stop_with("KILL");
    let summary = viewers_summary(viewers);
    assert!(wait_output(publisher).status.success());
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(summary["stalls"], 0, "{summary}");
    assert!(mid1.metric("streamcdn_edge_requests_total") > 0.0);
    let failed_on_mid2 = edge.metric(&format!(
        "streamcdn_edge_upstream_fetches_total{{upstream=\"{mid2_base}\",outcome=\"failed\"}}"
    ));
    assert!(
        failed_on_mid2 > 0.0,
        "the edge did try the dead parent first"
    );
}

#[test]
fn playlists_are_served_stale_within_the_bound_when_the_ingest_is_gone() {
    let mut cluster = Cluster::start("stale", 1);
    let edge = cluster.tier("edge", 11, &[]);
    let publisher = publish_light(&cluster.haproxy.publish_url("demo", "st"), 60);
    wait_playable(&edge, "/demo/st/live.m3u8");
    let fresh = http_request_at(&edge.host, edge.http, "GET", "/demo/st/live.m3u8", &[]).unwrap();
    cluster.ingests[0].stop_with("KILL");
    let killed = Instant::now();
    let _ = wait_output(publisher);

    // Within the stale-if-error bound (10 s past freshness) the last playlist is served.
    std::thread::sleep(Duration::from_millis(1500));
    let stale = http_request_at(&edge.host, edge.http, "GET", "/demo/st/live.m3u8", &[]).unwrap();
    assert_eq!(stale.status, 200);
    assert_eq!(stale.header("x-cache"), Some("STALE"));
    assert_eq!(stale.body, fresh.body, "the last playlist it had");
    assert!(edge.metric("streamcdn_edge_requests_total{result=\"stale\"") >= 1.0);

    // Past the bound, the viewer is told the truth rather than a frozen live view (the
    // dead server's live record has expired too: the stream is unknown).
    std::thread::sleep(Duration::from_secs(12).saturating_sub(killed.elapsed()));
    let gone = http_request_at(&edge.host, edge.http, "GET", "/demo/st/live.m3u8", &[]).unwrap();
    assert!(
        [404, 502, 503].contains(&gone.status),
        "{} {}",
        gone.status,
        gone.text()
    );
}

#[test]
fn streams_keep_playing_while_the_registry_is_down() {
    let mut cluster = Cluster::start("regdown", 1);
    let edge = cluster.tier("edge", 11, &[]);
    let publisher = publish_light(&cluster.haproxy.publish_url("demo", "rd"), 16);
    wait_playable(&edge, "/demo/rd/index.m3u8");
    std::thread::sleep(Duration::from_secs(4));
    let viewers = hls_viewers(&[edge.play_url("/demo/rd/index.m3u8")], 10, 8);
    // Redis goes away: the edge keeps fetching from the server it last knew.
    drop(cluster.redis.take());
    let summary = viewers_summary(viewers);
    assert!(wait_output(publisher).status.success());
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(summary["stalls"], 0, "{summary}");
    assert!(edge.metric("streamcdn_edge_registry_fallbacks_total") >= 1.0);
}
