//! Real-user measurement across an emulated WAN: three viewers in one client prefix
//! open the player page through the delivery name in headless Chromium; the page plays
//! and its monitoring tool (rum.js) measures both edges and sends beacons the router
//! accepts. Then the path to the nearest edge starts lying to the probes: its round
//! trip stays 10 ms but its bandwidth is capped, so downloads crawl. The browsers see
//! it, and the router's answer for the prefix moves to the edge they measure best,
//! which `explain` attributes to real-user measurement.
//!
//! The viewers resolve names through a forwarding resolver (dnsmasq, no ECS) in a site
//! of its own, near E1. The router learns from the measurement names rum.js fetches
//! which clients sit behind that resolver, and answers the resolver with the edge its
//! clients' measurements favour, not the one nearest the resolver.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::sites::{candidate, wait_until, Sites};
use common::*;

const ROUTER: &str = "127.70.0.2";
/// A second router of the zone: the pages send their beacons to the first (by id), and
/// this one learns them through the registry.
const ROUTER2: &str = "127.70.0.3";
const CORE: &str = "127.70.0.1";
const E1: &str = "127.71.1.1";
const E2: &str = "127.71.2.1";
const VIEWERS: [(&str, &str); 3] = [
    ("v1", "127.72.1.1"),
    ("v2", "127.72.1.2"),
    ("v3", "127.72.1.3"),
];
const DELIVERY: &str = "live.streamcdn.test";
/// A forwarding resolver the viewers use; it sends no ECS.
const RESOLVER: &str = "127.73.0.1";

/// Opens the player page at `page` in Chromium in `site` until the page has played some
/// frames and rum.js has sent its beacon; returns the last sample the page reported.
fn watch_until_beacon(sites: &Sites, site: &str, page: &str) -> serde_json::Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/browser/watch_page.mjs"
    );
    let mut child = sites
        .wan
        .exec(site, &tool("node").to_string_lossy())
        .arg(script)
        .arg(page)
        .arg("60")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/browser"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect(
            "node in a viewer's site (run scripts/test.sh for node, playwright-core and Chromium)",
        );
    let stdout = child.stdout.take().expect("watch_page stdout");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = serde_json::Value::Null;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        last = serde_json::from_str(&line).unwrap_or(serde_json::Value::Null);
        let played = last["frames"].as_u64().unwrap_or(0) >= 30;
        let rum = last["rum"]["state"].as_str().unwrap_or_default();
        if (played && rum == "sent") || rum == "failed" || Instant::now() > deadline {
            break;
        }
    }
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(last["rum"]["state"], "sent", "the page in {site}: {last}");
    assert!(
        last["frames"].as_u64().unwrap_or(0) >= 30,
        "the page in {site} played: {last}"
    );
    last
}

/// The first router's explanation for a client address.
fn explain(sites: &Sites, ip: &str) -> serde_json::Value {
    sites.explain("router", ROUTER, ip)
}

#[test]
fn browsers_move_a_prefix_off_a_path_that_lies_to_the_probes() {
    let mut site_list: Vec<(&str, Vec<&str>)> = vec![
        ("core", vec![CORE]),
        ("router", vec![ROUTER]),
        ("router2", vec![ROUTER2]),
        ("e1", vec![E1]),
        ("e2", vec![E2]),
        ("resolver", vec![RESOLVER]),
    ];
    site_list.extend(VIEWERS.iter().map(|(n, a)| (*n, vec![*a])));
    let site_refs: Vec<(&str, &[&str])> =
        site_list.iter().map(|(n, a)| (*n, a.as_slice())).collect();
    let mut links: Vec<(&str, &str, u32)> = VIEWERS
        .iter()
        .flat_map(|(v, _)| [(*v, "e1", 10), (*v, "e2", 40)])
        .collect();
    links.extend([("resolver", "e1", 10), ("resolver", "e2", 80)]);
    let mut sites = Sites::start("router-rum", &site_refs, &links, ROUTER, ("core", CORE));
    let dnsmasq = tool_or("dnsmasq", "apt-get install dnsmasq-base");
    let mut resolver = sites.wan.exec("resolver", &dnsmasq.to_string_lossy());
    resolver
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
        ])
        .arg(format!("--listen-address={RESOLVER}"))
        .arg(format!("--server={ROUTER}"))
        .args([
            "--port=53",
            "--cache-size=0",
            "--no-negcache",
            "--user=root",
        ])
        .arg(format!(
            "--pid-file={}",
            sites.dir.join("dnsmasq.pid").display()
        ))
        .stdout(Stdio::null());
    sites.spawn_command("dnsmasq", resolver);
    for (site, _) in VIEWERS {
        let etc = std::path::Path::new("/etc/netns").join(sites.wan.ns(site));
        std::fs::write(etc.join("resolv.conf"), format!("nameserver {RESOLVER}\n")).unwrap();
    }
    sites.spawn("e1", "edge", E1, "");
    sites.spawn("e2", "edge", E2, "");
    for (site, addr) in [("router", ROUTER), ("router2", ROUTER2)] {
        sites.spawn(
            site,
            "router",
            addr,
            &format!("[router]\ndns_listen = \"{addr}:53\"\nhttp_listen = \"{addr}:8082\"\nreprobe_after = \"3s\"\n"),
        );
    }
    sites.spawn("core", "ingest", CORE, "");
    let mut publisher = sites.wan.exec("core", &tool("ffmpeg").to_string_lossy());
    publisher
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-t",
            "170",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "30",
        ])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv"])
        .arg(format!("rtmp://{CORE}:1935/demo/cam?key={KEY}"))
        .stdout(Stdio::null());
    sites.spawn_command("publisher", publisher);

    // The probes find E1 nearest (10 ms against 40 ms), and the stream is live.
    wait_until(Duration::from_secs(40), "V1 answered with E1", || {
        let answer = sites.dig("v1", ROUTER, DELIVERY);
        if answer == E1 {
            Ok(())
        } else {
            Err(answer)
        }
    });
    wait_until(Duration::from_secs(30), "the live playlist", || {
        let body = sites.curl(
            "v1",
            &[&format!("http://{DELIVERY}:8080/demo/cam/live.m3u8")],
        );
        if body.contains("#EXTINF") {
            Ok(())
        } else {
            Err(body)
        }
    });

    // Three viewers play the page; each one's rum.js measures both edges.
    for (site, _) in VIEWERS {
        let sample = watch_until_beacon(&sites, site, &format!("http://{DELIVERY}:8080/demo/cam/"));
        let results = sample["rum"]["results"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            results.len(),
            2,
            "both edges measured from {site}: {sample}"
        );
        assert!(results.iter().all(|r| r["ok"] == true), "{sample}");
    }
    let why = explain(&sites, VIEWERS[0].1);
    assert_eq!(why["rum_used"], true, "three browsers are enough: {why}");
    assert_eq!(candidate(&why, E1)["rum_clients"], 3, "{why}");
    assert_eq!(
        why["edges"][0].as_str().map(|e| e.contains(E1)),
        Some(true),
        "{why}"
    );

    // E1's path keeps its 10 ms round trip but carries only 1 Mbit/s. The viewers now
    // watch from E2 (as an embedding page might), so no video queues on E1's path: only
    // rum.js's test download crosses it, and the probes still see 10 ms.
    for (site, _) in VIEWERS {
        sites
            .wan
            .set(serde_json::json!({"from": site, "to": "e1", "rate_kbps": 1000}));
    }
    for (site, _) in VIEWERS {
        watch_until_beacon(&sites, site, &format!("http://{E2}:8080/demo/cam/"));
    }
    let (_, took) = wait_until(Duration::from_secs(20), "V1 answered with E2", || {
        let answer = sites.dig("v1", ROUTER, DELIVERY);
        if answer == E2 {
            Ok(())
        } else {
            Err(answer)
        }
    });
    println!(
        "the prefix moved to the edge the browsers measure best {took:?} after the last beacon"
    );
    let why = explain(&sites, VIEWERS[0].1);
    let (e1, e2) = (candidate(&why, E1), candidate(&why, E2));
    println!("E1: {e1}\nE2: {e2}");
    assert_eq!(why["rum_used"], true, "{why}");
    assert!(
        e1["estimate_rtt_ms"].as_f64() < e2["estimate_rtt_ms"].as_f64(),
        "the probes still prefer E1: {why}"
    );
    assert!(
        e1["contributions"]["rum"].as_f64() > e2["contributions"]["rum"].as_f64(),
        "the browsers do not: {why}"
    );

    // Through the resolver (no ECS), the router answers for the resolver's prefix with
    // what its clients measured: E2, though E1 is the resolver's nearest edge.
    let (_, took) = wait_until(
        Duration::from_secs(20),
        "the resolver answered with E2",
        || {
            let answer = sites.dig("v1", RESOLVER, DELIVERY);
            if answer == E2 {
                Ok(())
            } else {
                Err(answer)
            }
        },
    );
    println!("the resolver's answer followed its clients' measurements after {took:?}");
    let why = explain(&sites, RESOLVER);
    assert_eq!(why["measured_as"], "127.72.1.0/24", "{why}");
    let beacons = sites.metric(
        "router",
        &format!("{ROUTER}:8081"),
        "streamcdn_router_rum_beacons_total",
        &["accepted"],
    );
    assert_eq!(
        beacons, 6.0,
        "one beacon per page view, all to the first router"
    );

    // The second router took no beacon, but answers the same from what the first filed
    // in the registry.
    let (_, took) = wait_until(
        Duration::from_secs(30),
        "the second router answered with E2",
        || {
            let answer = sites.dig("v1", ROUTER2, DELIVERY);
            if answer == E2 {
                Ok(())
            } else {
                Err(answer)
            }
        },
    );
    println!("the second router followed the shared RUM samples after {took:?}");
    let why = sites.explain("router2", ROUTER2, VIEWERS[0].1);
    assert_eq!(why["rum_used"], true, "{why}");
    assert_eq!(
        sites.metric(
            "router2",
            &format!("{ROUTER2}:8081"),
            "streamcdn_router_rum_beacons_total",
            &[]
        ),
        0.0
    );
}
