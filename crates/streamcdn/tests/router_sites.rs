//! Request routing across an emulated WAN: three edge sites, four client sites, two
//! routers, an ingest server and Redis, each in its own network namespace, with round
//! trips set by the WAN emulator. Every site resolves names through the router. Each
//! client must get its nearest edge, measured by the edges' probes (nothing in any
//! configuration says where a client is, except the fallback map for one site): by
//! `dig`, by ffmpeg playing the delivery name, and by HTTP 302. When the network, the
//! edges' load or their health changes, the answers follow.

mod common;

use std::time::Duration;

use common::sites::{candidate, wait_until, Sites};
use common::*;

const ROUTER: &str = "127.70.0.2";
/// A second router for the same zone, sharing measurements through Redis.
const ROUTER2: &str = "127.70.0.3";
/// Redis and the ingest server.
const CORE: &str = "127.70.0.1";
const EDGES: [(&str, &str); 3] = [
    ("e1", "127.71.1.1"),
    ("e2", "127.71.2.1"),
    ("e3", "127.71.3.1"),
];
const CLIENTS: [(&str, &str); 4] = [
    ("a", "127.72.1.1"),
    ("b", "127.72.2.1"),
    ("c", "127.72.3.1"),
    // Mapped to E3's site by the fallback map, but nearest E2.
    ("d", "127.72.4.1"),
];
const DELIVERY: &str = "live.streamcdn.test";
/// Viewer connections each edge says it can take (announced in the node directory):
/// above it the router sends new viewers elsewhere.
const CAPACITY: usize = 10;

fn edge(site: &str) -> &'static str {
    EDGES
        .iter()
        .find(|(s, _)| *s == site)
        .map(|(_, a)| *a)
        .unwrap_or_default()
}

/// Resolves from each client until every one gets the edge it should; returns how long
/// that took.
fn wait_answers(
    sites: &Sites,
    router: &str,
    expected: &[(&str, &str)],
    within: Duration,
) -> Duration {
    wait_until(within, &format!("the answers of {router}"), || {
        let answers: Vec<(&str, String)> = expected
            .iter()
            .map(|(client, _)| (*client, sites.dig(client, router, DELIVERY)))
            .collect();
        if answers
            .iter()
            .zip(expected)
            .all(|((_, got), (_, want))| got == want)
        {
            Ok(())
        } else {
            Err(format!("{answers:?}, expected {expected:?}"))
        }
    })
    .1
}

/// The first router's explanation for a client address.
fn explain(sites: &Sites, ip: &str) -> serde_json::Value {
    sites.explain("router", ROUTER, ip)
}

#[test]
fn each_client_gets_the_edge_nearest_to_it_and_answers_follow_the_network() {
    let mut site_list: Vec<(&str, Vec<&str>)> = vec![
        ("core", vec![CORE]),
        ("router", vec![ROUTER]),
        ("router2", vec![ROUTER2]),
    ];
    site_list.extend(EDGES.iter().map(|(n, a)| (*n, vec![*a])));
    site_list.extend(CLIENTS.iter().map(|(n, a)| (*n, vec![*a])));
    let site_refs: Vec<(&str, &[&str])> =
        site_list.iter().map(|(n, a)| (*n, a.as_slice())).collect();
    // Client A is 10/40/80 ms from E1/E2/E3, B 80/10/40, C 40/80/10, D 50/10/60.
    let rtts = [
        ("a", [10, 40, 80]),
        ("b", [80, 10, 40]),
        ("c", [40, 80, 10]),
        ("d", [50, 10, 60]),
    ];
    let links: Vec<(&str, &str, u32)> = rtts
        .iter()
        .flat_map(|(c, ms)| EDGES.iter().zip(ms).map(move |((e, _), ms)| (*c, *e, *ms)))
        .collect();
    let mut sites = Sites::start("router-sites", &site_refs, &links, ROUTER, ("core", CORE));

    let router_toml = r#"[router]
dns_listen = "ADDR:53"
http_listen = "ADDR:8082"
reprobe_after = "3s"
[router.static_map]
"127.72.4.0/24" = "e3"
"#;
    for (site, addr) in EDGES {
        sites.spawn(
            site,
            "edge",
            addr,
            &format!("[edge]\ncapacity = {CAPACITY}"),
        );
    }
    sites.spawn(
        "router",
        "router",
        ROUTER,
        &router_toml.replace("ADDR", ROUTER),
    );
    sites.spawn(
        "router2",
        "router",
        ROUTER2,
        &router_toml.replace("ADDR", ROUTER2),
    );
    sites.spawn("core", "ingest", CORE, "");
    let ffmpeg = tool("ffmpeg");
    let mut publisher = sites.wan.exec("core", &ffmpeg.to_string_lossy());
    publisher
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-t",
            "150",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "30",
        ])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv"])
        .arg(format!("rtmp://{CORE}:1935/demo/cam?key={KEY}"))
        .stdout(std::process::Stdio::null());
    sites.spawn_command("publisher", publisher);

    // 1. Every client its nearest edge, from both name servers of the zone (the second
    // takes the measurements the first filed in the registry, or probes the same network).
    let nearest = [("a", edge("e1")), ("b", edge("e2")), ("c", edge("e3"))];
    let took = wait_answers(&sites, ROUTER, &nearest, Duration::from_secs(40));
    println!("every client got its nearest edge after {took:?}");
    wait_answers(&sites, ROUTER2, &nearest, Duration::from_secs(20));

    // 2. A player knows only the delivery name: ffmpeg in C resolves it through the
    // router and plays from E3, whose metrics show it served the segments; E1 and E2
    // served none.
    let playback = format!("http://{DELIVERY}:8080/demo/cam/index.m3u8");
    wait_until(
        Duration::from_secs(30),
        "the live playlist through the delivery name",
        || {
            let body = sites.curl("c", &[&playback.replace("index.m3u8", "live.m3u8")]);
            if body.contains("#EXTINF") {
                Ok(())
            } else {
                Err(body)
            }
        },
    );
    let decoded = decode_with(
        sites.wan.exec("c", &tool("ffprobe").to_string_lossy()),
        &playback,
        &["-read_intervals", "%+3"],
    );
    assert!(decoded.video_frames >= 30, "C played {decoded:?}");
    let segments = |site: &str| {
        sites.metric(
            site,
            &format!("{}:8081", edge(site)),
            "streamcdn_edge_requests_total",
            &["kind=\"segment\""],
        )
    };
    let served: Vec<f64> = EDGES.iter().map(|(s, _)| segments(s)).collect();
    assert!(
        served[2] >= 1.0 && served[0] == 0.0 && served[1] == 0.0,
        "segments served by E1/E2/E3: {served:?}"
    );

    // 3. HTTP redirect mode from B: 302 to the same path on E2, which then serves it.
    let redirect = sites.curl(
        "b",
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            &format!("http://{ROUTER}:8082/demo/cam/index.m3u8"),
        ],
    );
    assert_eq!(
        redirect,
        format!("302 http://{}:8080/demo/cam/index.m3u8", edge("e2"))
    );
    let followed = sites.curl(
        "b",
        &["-L", &format!("http://{ROUTER}:8082/demo/cam/index.m3u8")],
    );
    assert!(
        followed.starts_with("#EXTM3U"),
        "B following the redirect got {followed:?}"
    );

    // 4. A client nobody has measured yet gets the fallback map's site at once, then
    // its measured nearest edge.
    let first = sites.dig("d", ROUTER, DELIVERY);
    assert_eq!(
        first,
        edge("e3"),
        "D's first answer comes from the fallback map"
    );
    let took = wait_answers(
        &sites,
        ROUTER,
        &[("d", edge("e2"))],
        Duration::from_secs(20),
    );
    println!("D moved from the fallback to its measured nearest edge after {took:?}");

    // 5. A's path to E1 becomes the slowest: A moves to E2 (40 ms), the others stay;
    // the router explains why from the measurements.
    sites.wan.set_rtt("a", "e1", 200);
    let moved = [("a", edge("e2")), ("b", edge("e2")), ("c", edge("e3"))];
    let took = wait_answers(&sites, ROUTER, &moved, Duration::from_secs(30));
    println!("answers followed the RTT change after {took:?}");
    let why = explain(&sites, CLIENTS[0].1);
    assert_eq!(why["source"], "measured", "{why}");
    let e2 = candidate(&why, edge("e2"))["estimate_rtt_ms"]
        .as_f64()
        .unwrap_or_default();
    assert!((35.0..=60.0).contains(&e2), "E2 is ~40 ms from A: {why}");

    // 6. E3 fills up with viewers: C's new answers go to the next best, E1 (40 ms),
    // and come back once the viewers leave. With no viewers it has no load: the two
    // routers' health checks and probe requests are not counted as viewers.
    wait_until(Duration::from_secs(10), "an idle E3", || {
        let e3 = candidate(&explain(&sites, CLIENTS[2].1), edge("e3")).clone();
        if e3["viewer_connections"] == 0 {
            Ok(())
        } else {
            Err(e3.to_string())
        }
    });
    let viewers_exe =
        std::path::Path::new(env!("CARGO_BIN_EXE_streamcdn")).with_file_name("hls-viewers");
    let mut viewers = sites.wan.exec("core", &viewers_exe.to_string_lossy());
    viewers
        .args([
            "--url",
            &format!("http://{}:8080/demo/cam/index.m3u8", edge("e3")),
        ])
        .args([
            "--viewers",
            &(CAPACITY + 2).to_string(),
            "--duration",
            "60s",
            "--own-connections",
        ])
        .stdout(std::process::Stdio::null());
    sites.spawn_command("viewers", viewers);
    let (_, took) = wait_until(Duration::from_secs(20), "C away from a full E3", || {
        let answer = sites.dig("c", ROUTER, DELIVERY);
        let why = explain(&sites, CLIENTS[2].1);
        let e3 = candidate(&why, edge("e3"));
        if answer == edge("e1") && e3["excluded"] == "over capacity" {
            Ok(())
        } else {
            Err(format!("C gets {answer}; E3: {e3}"))
        }
    });
    println!("a full E3 lost new viewers to E1 after {took:?}");
    sites.kill("viewers");
    let took = wait_answers(
        &sites,
        ROUTER,
        &[("c", edge("e3"))],
        Duration::from_secs(20),
    );
    println!("C came back to E3 {took:?} after its viewers left");

    // 7. E3 dies: within a few health checks C is sent to E1 and E3 is in no answer.
    sites.kill("e3");
    let took = wait_answers(
        &sites,
        ROUTER,
        &[("c", edge("e1"))],
        Duration::from_secs(10),
    );
    println!("a dead E3 left the answers after {took:?}");
    let why = explain(&sites, CLIENTS[2].1);
    assert_eq!(candidate(&why, edge("e3"))["healthy"], false, "{why}");
}
