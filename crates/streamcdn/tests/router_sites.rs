//! Request routing across an emulated WAN: three edge sites, three client sites, the
//! router and Redis, each in its own network namespace, with round trips set by the
//! WAN emulator. Each client resolves the delivery name with `dig` from its own
//! namespace and must get its nearest edge, measured by the edges' probes (nothing in
//! any configuration says where a client is). When the network changes, the answers
//! follow.

mod common;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use common::wan::Wan;
use common::*;

const ROUTER: &str = "127.70.0.2";
/// A second router for the same zone, sharing measurements through Redis.
const ROUTER2: &str = "127.70.0.3";
const REDIS: &str = "127.70.0.1";
const EDGES: [(&str, &str); 3] = [
    ("e1", "127.71.1.1"),
    ("e2", "127.71.2.1"),
    ("e3", "127.71.3.1"),
];
const CLIENTS: [(&str, &str); 3] = [
    ("a", "127.72.1.1"),
    ("b", "127.72.2.1"),
    ("c", "127.72.3.1"),
];

/// Kills the processes a test started in the sites.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn config(dir: &Path, addr: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("streamcdn.toml");
    std::fs::write(
        &path,
        format!(
            r#"[node]
data_dir = "{data}"
shutdown_grace = "2s"
[rtmp]
listen = "{addr}:1935"
[origin]
listen = "{addr}:8088"
[http]
listen = "{addr}:8080"
[admin]
listen = "{addr}:8081"
[registry]
backend = "redis"
url = "redis://{REDIS}:6379/"
namespace = "sites"
lease = "3s"
[router]
dns_listen = "{addr}:5353"
http_listen = "{addr}:8082"
reprobe_after = "3s"
"#,
            data = dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

/// The answer `dig` gets from `site` for the delivery name, asking `router`.
fn resolve_at(wan: &Wan, site: &str, router: &str) -> String {
    let out = wan
        .exec(site, "dig")
        .args([
            &format!("@{router}"),
            "-p",
            "5353",
            "live.streamcdn.test",
            "A",
        ])
        .args(["+short", "+time=2", "+tries=1"])
        .output()
        .expect("run dig in the client's namespace (apt-get install bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn resolve(wan: &Wan, site: &str) -> String {
    resolve_at(wan, site, ROUTER)
}

/// Resolves from each client until every one gets the edge it should; returns how long
/// that took. Panics with the last answers after `within`.
fn wait_nearest(wan: &Wan, expected: &[(&str, &str)], within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let answers: Vec<(String, String)> = expected
            .iter()
            .map(|(client, _)| (client.to_string(), resolve(wan, client)))
            .collect();
        if answers
            .iter()
            .zip(expected)
            .all(|((_, got), (_, want))| got == want)
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "after {within:?} the answers are {answers:?}, expected {expected:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn each_client_gets_the_edge_nearest_to_it_and_answers_follow_the_network() {
    let mut sites: Vec<(&str, Vec<&str>)> = vec![
        ("core", vec![REDIS]),
        ("router", vec![ROUTER]),
        ("router2", vec![ROUTER2]),
    ];
    sites.extend(EDGES.iter().map(|(n, a)| (*n, vec![*a])));
    sites.extend(CLIENTS.iter().map(|(n, a)| (*n, vec![*a])));
    let site_refs: Vec<(&str, &[&str])> = sites.iter().map(|(n, a)| (*n, a.as_slice())).collect();
    // Client A is 10/40/80 ms from E1/E2/E3, B 80/10/40, C 40/80/10.
    let wan = Wan::start(
        &site_refs,
        &[
            ("a", "e1", 10),
            ("a", "e2", 40),
            ("a", "e3", 80),
            ("b", "e1", 80),
            ("b", "e2", 10),
            ("b", "e3", 40),
            ("c", "e1", 40),
            ("c", "e2", 80),
            ("c", "e3", 10),
        ],
    );
    let dir = temp_dir("router-sites");
    std::fs::create_dir_all(&dir).unwrap();
    let streamcdn = env!("CARGO_BIN_EXE_streamcdn");
    let mut processes = Processes(Vec::new());
    processes.0.push(
        wan.exec(
            "core",
            &tool_or("redis-server", "apt-get install redis-server").to_string_lossy(),
        )
        .args([
            "--port",
            "6379",
            "--bind",
            REDIS,
            "--save",
            "",
            "--appendonly",
            "no",
            // The other sites reach it at 127.70.0.1, which Redis does not count as
            // loopback; the namespaces hold only 127.0.0.0/8 addresses.
            "--protected-mode",
            "no",
        ])
        .stdout(std::fs::File::create(dir.join("redis.log")).unwrap())
        .spawn()
        .expect("redis-server in the core site"),
    );
    let spawn = |site: &str, role: &str, addr: &str| {
        let dir = dir.join(site);
        let config = config(&dir, addr);
        let log = std::fs::File::create(dir.join("streamcdn.log")).unwrap();
        wan.exec(site, streamcdn)
            .args([role, "--config"])
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("streamcdn in its site")
    };
    // Redis must answer before the servers start.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !wan
        .exec("router", "redis-cli")
        .args(["-h", REDIS, "ping"])
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"PONG"))
    {
        assert!(
            Instant::now() < deadline,
            "redis-server did not start in the core site: {}",
            std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for (site, addr) in EDGES {
        processes.0.push(spawn(site, "edge", addr));
    }
    processes.0.push(spawn("router", "router", ROUTER));
    processes.0.push(spawn("router2", "router", ROUTER2));

    let nearest = [("a", EDGES[0].1), ("b", EDGES[1].1), ("c", EDGES[2].1)];
    let took = wait_nearest(&wan, &nearest, Duration::from_secs(40));
    println!("every client got its nearest edge after {took:?}");
    // The second name server of the zone gives the same answers: it takes the
    // measurements the first filed in the registry (or probes the same network).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let second: Vec<String> = CLIENTS
            .iter()
            .map(|(c, _)| resolve_at(&wan, c, ROUTER2))
            .collect();
        if second
            .iter()
            .zip(&nearest)
            .all(|(got, (_, want))| got == want)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second router answers {second:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // A's path to E1 becomes the slowest: A moves to E2 (40 ms), the others stay.
    wan.set_rtt("a", "e1", 200);
    let moved = [("a", EDGES[1].1), ("b", EDGES[1].1), ("c", EDGES[2].1)];
    let took = wait_nearest(&wan, &moved, Duration::from_secs(30));
    println!("answers followed the RTT change after {took:?}");

    // Why: the router explains A's prefix from the measurements.
    let out = wan
        .exec("router", "curl")
        .args([
            "-s",
            &format!(
                "http://{ROUTER}:8081/api/v1/routing/explain?ip={}",
                CLIENTS[0].1
            ),
        ])
        .output()
        .expect("curl in the router's site");
    let explain: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(explain["source"], "measured", "{explain}");
    let rtt = |edge: &str| {
        explain["explain"]
            .as_array()
            .and_then(|c| {
                c.iter().find(|c| {
                    c["site"].is_string() && c["edge"].as_str().is_some_and(|e| e.contains(edge))
                })
            })
            .and_then(|c| c["estimate_rtt_ms"].as_f64())
    };
    let e2 = rtt(EDGES[1].1).unwrap_or_default();
    assert!(
        (35.0..=60.0).contains(&e2),
        "E2 is ~40 ms from A: {explain}"
    );
}
