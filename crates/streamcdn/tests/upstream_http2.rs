//! HTTP/2 between cache tiers: `up` (an ingest and its top-tier edge, which speaks h2c
//! to the ingest origin) and an edge below it, both with `edge.upstream_http2 = true`.
//! ffmpeg publishes; many objects are asked of the lower edge at once. The top tier
//! receives the lower edge's requests as HTTP/2 only, on one connection, and the top
//! tier reaches the origin (a plain listener that must recognise the preface) on one
//! connection too.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Established TCP connections from process `pid` to `port` on loopback.
fn connections(pid: u32, port: u16) -> usize {
    let out = Command::new(tool_or("ss", "apt-get install iproute2"))
        .args(["-Htnp", "state", "established"])
        .arg(format!("( dport = :{port} )"))
        .output()
        .expect("ss");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| line.contains(&format!("pid={pid},")))
        .count()
}

#[test]
fn lower_tiers_speak_http2_on_one_connection() {
    let redis = Redis::start();
    let registry = redis.registry_toml("h2tiers");
    let up = Node::up(
        "h2-up",
        &format!("{registry}[edge]\nupstream_http2 = true\n"),
    );
    let edge = Node::role(
        "h2-edge",
        "edge",
        &format!(
            "{registry}[edge]\nparents = [\"{}\"]\nupstream_http2 = true\n",
            up.http_base()
        ),
    );
    let publisher = publish(
        &tool("ffmpeg"),
        &up.publish_url("demo", "cam", KEY),
        14,
        "h264",
    );
    let live = "/demo/cam/live.m3u8";
    let deadline = Instant::now() + Duration::from_secs(20);
    let playlist = loop {
        if let Ok(answer) = http_get(edge.http, live, &[]) {
            if answer.status == 200 && playlist_segments(&answer.text()).len() >= 3 {
                break answer.text();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the live playlist never had 3 segments at the lower edge"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut paths: Vec<String> = playlist_segments(&playlist)
        .into_iter()
        .map(|(_, uri)| format!("/demo/cam/{uri}"))
        .collect();
    let map = tag_value(&playlist, "#EXT-X-MAP").expect("an fMP4 playlist");
    let init = map.split('"').nth(1).expect("EXT-X-MAP:URI");
    paths.push(format!("/demo/cam/{init}"));
    paths.push("/demo/cam/index.m3u8".to_owned());
    // All at once: over HTTP/1.1 each would need a connection of its own upstream.
    let fetches: Vec<_> = paths
        .iter()
        .cloned()
        .map(|path| {
            let port = edge.http;
            std::thread::spawn(move || (http_get(port, &path, &[]).map(|a| a.status), path))
        })
        .collect();
    for fetch in fetches {
        let (status, path) = fetch.join().unwrap();
        assert_eq!(status.ok(), Some(200), "{path}");
    }

    // `+ 0.0`: an empty sum is -0.
    let received = |version: &str| {
        up.metric(&format!(
            "streamcdn_edge_http_requests_total{{version=\"{version}\"}}"
        )) + 0.0
    };
    let (http2, http1) = (received("2"), received("1.1"));
    eprintln!(
        "top tier received {http2} HTTP/2 and {http1} HTTP/1.1 requests; connections: edge → top tier {}, top tier → origin {}",
        connections(edge.pid(), up.http),
        connections(up.pid(), up.origin)
    );
    assert!(
        http2 >= paths.len() as f64 + 1.0,
        "{http2} HTTP/2 requests for {} objects and the live playlist",
        paths.len()
    );
    assert_eq!(http1, 0.0, "the lower edge spoke HTTP/1.1");
    assert_eq!(connections(edge.pid(), up.http), 1, "edge → top tier");
    assert_eq!(connections(up.pid(), up.origin), 1, "top tier → origin");
    let _ = wait_output(publisher);
}
