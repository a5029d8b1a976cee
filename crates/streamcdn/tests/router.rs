//! The request router end to end, queried with `dig` (BIND's client, not ours): the
//! authoritative answers for the delivery zone inside `up`, ECS scope, TCP, hostile
//! packets, HTTP redirects to the chosen edge; and with a Redis directory, an edge that
//! dies leaves the answers.

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn dig(host: &str, port: u16, args: &[&str]) -> String {
    let out = Command::new(tool_or("dig", "apt-get install bind9-dnsutils"))
        .args([&format!("@{host}"), "-p", &port.to_string()])
        .args(["+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("run dig");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `dig ... +short` until it prints `expected`; panics with the last output.
fn wait_answer(host: &str, port: u16, args: &[&str], expected: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut all = args.to_vec();
        all.push("+short");
        let out = dig(host, port, &all);
        if out.trim() == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "dig {args:?} never answered {expected:?}; last: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn up_answers_for_the_delivery_zone_and_redirects_to_its_edge() {
    let node = Node::up("router-up", "");
    let (host, port) = (node.host.as_str(), node.dns);
    // The edge is known once the directory lists it and the router's check passed.
    wait_answer(
        host,
        port,
        &["live.streamcdn.test", "A"],
        host,
        Duration::from_secs(15),
    );

    let a = dig(host, port, &["live.streamcdn.test", "A", "+norecurse"]);
    assert!(a.contains("status: NOERROR") && a.contains(" aa"), "{a}");
    assert!(
        a.contains(&format!("live.streamcdn.test.\t20\tIN\tA\t{host}")),
        "{a}"
    );

    let soa = dig(host, port, &["streamcdn.test", "SOA"]);
    assert!(
        soa.contains("IN\tSOA\tns1.streamcdn.test. hostmaster.streamcdn.test."),
        "{soa}"
    );
    let ns = dig(host, port, &["streamcdn.test", "NS"]);
    assert!(ns.contains("IN\tNS\tns1.streamcdn.test."), "{ns}");
    assert!(
        ns.contains(&format!("ns1.streamcdn.test.\t3600\tIN\tA\t{host}")),
        "glue: {ns}"
    );

    let nx = dig(host, port, &["nope.streamcdn.test", "A"]);
    assert!(
        nx.contains("status: NXDOMAIN") && nx.contains("IN\tSOA"),
        "{nx}"
    );
    let nodata = dig(host, port, &["live.streamcdn.test", "AAAA"]);
    assert!(
        nodata.contains("status: NOERROR")
            && nodata.contains("ANSWER: 0")
            && nodata.contains("IN\tSOA"),
        "{nodata}"
    );
    let refused = dig(host, port, &["example.com", "A"]);
    assert!(
        refused.contains("status: REFUSED") && refused.contains("ANSWER: 0"),
        "{refused}"
    );

    // ECS: the decision is scoped to the client's /24 and says so.
    let ecs = dig(
        host,
        port,
        &["live.streamcdn.test", "A", "+subnet=198.51.100.0/24"],
    );
    assert!(ecs.contains("CLIENT-SUBNET: 198.51.100.0/24/24"), "{ecs}");
    let ecs0 = dig(
        host,
        port,
        &["live.streamcdn.test", "A", "+subnet=0.0.0.0/0"],
    );
    assert!(ecs0.contains("CLIENT-SUBNET: 0.0.0.0/0/0"), "{ecs0}");

    // TCP gives the same answer.
    wait_answer(
        host,
        port,
        &["live.streamcdn.test", "A", "+tcp"],
        host,
        Duration::from_secs(2),
    );

    // Hostile packets and a stalled TCP client do not stop it answering.
    let udp = UdpSocket::bind((host, 0)).unwrap();
    for packet in [
        &b""[..],
        &[0u8; 5],
        &[0xff; 12],
        &[0x12; 600],
        b"\x00\x01\x01\x00\x00\x01",
    ] {
        udp.send_to(packet, (host, port)).unwrap();
    }
    let mut stalled = TcpStream::connect((host, port)).unwrap();
    stalled.write_all(&[0x00]).unwrap();
    wait_answer(
        host,
        port,
        &["live.streamcdn.test", "A"],
        host,
        Duration::from_secs(2),
    );
    wait_answer(
        host,
        port,
        &["live.streamcdn.test", "A", "+tcp"],
        host,
        Duration::from_secs(2),
    );
    // An oversize length prefix is read as a message that never arrives: dropped later.
    stalled.write_all(&[0xff]).unwrap();
    drop(stalled);

    // The edge probed the asking client for the router: its answer is now measured.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http_request_at(host, node.admin, "GET", "/api/v1/routing/map", &[]).unwrap();
        let map: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
        let measured = map["map"]["entries"]
            .as_object()
            .is_some_and(|e| e.values().any(|v| v["source"] == "measured"));
        if measured {
            break;
        }
        assert!(Instant::now() < deadline, "no measured answer: {map}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(node.metric("streamcdn_edge_probes_total{outcome=\"tcp\"") >= 1.0);
    // Viewer connections' RTTs are shared too (passively, every few seconds).
    let deadline = Instant::now() + Duration::from_secs(15);
    while node.metric("streamcdn_edge_passive_rtt_reports_total") < 1.0 {
        let _ = http_get(node.http, "/demo/cam/index.m3u8", &[]);
        assert!(Instant::now() < deadline, "no passive RTT was ever shared");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Probe requests need the deployment's key.
    let mut s = TcpStream::connect((host, node.http)).unwrap();
    let body = r#"{"target":"127.0.0.1","prefix":"127.0.0.0/24","attempts":1,"issued_at_ms":0,"nonce":1,"edge":"x"}"#;
    write!(
        s,
        "POST /_streamcdn/probe HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nX-Streamcdn-Probe: 00\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut refused = String::new();
    s.read_to_string(&mut refused).unwrap();
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");

    // HTTP redirect mode: the same path and query on the chosen edge.
    let r = http_request_at(
        host,
        node.router_http,
        "GET",
        "/demo/cam/index.m3u8?token=abc",
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 302, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("{}/demo/cam/index.m3u8?token=abc", node.http_base()).as_str())
    );
    let r = http_request_at(host, node.router_http, "GET", "/demo/../etc/passwd", &[]).unwrap();
    assert_eq!(r.status, 400);
    let r = http_request_at(
        host,
        node.router_http,
        "GET",
        "/not/a/playback/url/at/all",
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 404);

    // The routing API explains the choice.
    let r = http_request_at(
        host,
        node.admin,
        "GET",
        "/api/v1/routing/explain?ip=198.51.100.7",
        &[],
    )
    .unwrap();
    let explain: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
    assert_eq!(explain["prefix"], "198.51.100.0/24", "{explain}");
    assert_eq!(
        explain["edges"].as_array().map(Vec::len),
        Some(1),
        "{explain}"
    );
    // The prefixes asked about are in the versioned routing map.
    let deadline = Instant::now() + Duration::from_secs(5);
    let map = loop {
        let r = http_request_at(host, node.admin, "GET", "/api/v1/routing/map", &[]).unwrap();
        let map: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
        if map["map"]["entries"]["198.51.100.0/24"]["edges"].is_array() {
            break map;
        }
        assert!(
            Instant::now() < deadline,
            "the map never held the prefix: {map}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(map["map"]["version"].as_u64() >= Some(1), "{map}");
    assert!(
        map["history"]["versions"]
            .as_array()
            .is_some_and(|v| !v.is_empty()),
        "{map}"
    );
    let r = http_request_at(host, node.admin, "GET", "/api/v1/routing/edges", &[]).unwrap();
    let edges: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
    assert_eq!(edges[0]["healthy"], true, "{edges}");
    assert_eq!(edges[0]["playback"], node.http_base().as_str(), "{edges}");
    // Real-user measurement: a job names the edge's test object under a token for this
    // client; the edge serves the object; a beacon with the token is taken once, and
    // forged, misreported or replayed ones are refused and counted by reason.
    let r = http_request_at(host, node.router_http, "GET", "/_streamcdn/rum/job", &[]).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let job: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
    let edge_id = job["targets"][0]["edge"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let object_url = job["targets"][0]["url"].as_str().unwrap_or_default();
    let object_path = object_url
        .strip_prefix(&node.http_base())
        .unwrap_or_else(|| panic!("the test object is on the edge: {job}"));
    let rum_js = http_request_at(host, node.router_http, "GET", "/_streamcdn/rum.js", &[]).unwrap();
    assert_eq!(rum_js.status, 200);
    assert_eq!(
        rum_js.body,
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../web/assets/rum.js")).unwrap(),
        "the router serves rum.js for operators' pages"
    );
    let object = http_request_at(host, node.http, "GET", object_path, &[]).unwrap();
    assert_eq!(object.status, 200);
    assert_eq!(object.body.len(), 65536);
    assert_eq!(object.header("timing-allow-origin"), Some("*"));
    let token = job["token"].as_str().unwrap_or_default();
    let beacon = |token: &str, edge: &str, bytes: u64| {
        serde_json::json!({"token": token, "results": [{"edge": edge, "ok": true,
            "dns_ms": 0.0, "connect_ms": 0.2, "ttfb_ms": 1.0, "total_ms": 2.5, "bytes": bytes}]})
        .to_string()
    };
    let post = |body: &str| {
        http_request_body(
            node.router_http,
            "POST",
            "/_streamcdn/rum/beacon",
            &[("Content-Type", "text/plain")],
            body.as_bytes(),
        )
        .unwrap()
        .status
    };
    let mut forged = token.to_owned();
    forged.replace_range(0..2, "ff");
    assert_eq!(
        post(&beacon(&forged, &edge_id, 65536)),
        403,
        "a tampered token"
    );
    assert_eq!(
        post(&beacon(token, "some-other-edge", 65536)),
        400,
        "an edge not in the job"
    );
    assert_eq!(
        post(&beacon(token, &edge_id, 12)),
        400,
        "an implausible size"
    );
    assert_eq!(post("{not json"), 400);
    assert_eq!(
        post(&beacon(token, &edge_id, 65536)),
        204,
        "the good beacon"
    );
    assert_eq!(post(&beacon(token, &edge_id, 65536)), 403, "its replay");
    assert_eq!(
        node.metric("streamcdn_router_rum_beacons_total{result=\"accepted\"}"),
        1.0
    );
    assert_eq!(
        node.metric("streamcdn_router_rum_beacons_total{result=\"replayed\"}"),
        1.0
    );
    assert_eq!(
        node.metric("streamcdn_router_rum_beacons_total{result=\"bad_signature\"}"),
        1.0
    );
}

#[test]
fn a_dead_edge_leaves_the_answers() {
    let redis = Redis::start();
    let registry = redis.registry_toml("router");
    let net = loopback_net();
    let router = Node::role_on(
        "rt-router",
        "router",
        &format!("{net}.1"),
        free_port(),
        None,
        &registry,
    );
    let mut edges: Vec<Node> = (2..=3)
        .map(|i| {
            Node::role_on(
                &format!("rt-edge{i}"),
                "edge",
                &format!("{net}.{i}"),
                free_port(),
                None,
                &registry,
            )
        })
        .collect();
    let (host, port) = (router.host.as_str(), router.dns);

    // Both edges are known and healthy: the answer is one of them.
    let deadline = Instant::now() + Duration::from_secs(15);
    let first = loop {
        let out = dig(host, port, &["live.streamcdn.test", "A", "+short"]);
        let answer = out.trim().to_owned();
        let r = http_request_at(host, router.admin, "GET", "/api/v1/routing/edges", &[]).unwrap();
        let known: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
        let healthy = known
            .as_array()
            .map_or(0, |a| a.iter().filter(|e| e["healthy"] == true).count());
        if healthy == 2 && edges.iter().any(|e| e.host == answer) {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "edges never all known: {known} / {out:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let chosen = edges.iter().position(|e| e.host == first).unwrap();
    let other = edges[1 - chosen].host.clone();

    // Killed: the router's own check drops it before its directory lease ends (3 s).
    let killed = Instant::now();
    edges[chosen].stop_with("KILL");
    wait_answer(
        host,
        port,
        &["live.streamcdn.test", "A"],
        &other,
        Duration::from_secs(5),
    );
    println!("dead edge left the answers after {:?}", killed.elapsed());

    // HTTP redirects follow the same choice.
    let mut s = TcpStream::connect((host, router.router_http)).unwrap();
    s.write_all(b"GET /demo/cam/index.m3u8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 302") && response.contains(&format!("http://{other}:")),
        "{response}"
    );
}

/// Polls the ingest name until it answers exactly `expected` (in order); panics with
/// the last answer.
fn wait_ingests(host: &str, port: u16, expected: &[&str], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let answer = ingest_answer(host, port);
        if answer == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the ingest name never answered {expected:?}; last: {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_ingest_name_answers_live_ingests_least_loaded_first_and_drops_drained_and_dead_ones() {
    let redis = Redis::start();
    let registry = redis.registry_toml("ingest-name");
    let net = loopback_net();
    let router = Node::role_on(
        "in-router",
        "router",
        &format!("{net}.1"),
        free_port(),
        None,
        &registry,
    );
    let data = temp_dir("in-shared");
    let mut ingests: Vec<Node> = (2..=3)
        .map(|i| {
            Node::role_on(
                &format!("in-ingest{i}"),
                "ingest",
                &format!("{net}.{i}"),
                free_port(),
                Some(&data),
                &registry,
            )
        })
        .collect();
    let (host, port) = (router.host.as_str(), router.dns);
    let (a, b) = (ingests[0].host.clone(), ingests[1].host.clone());

    // Both live and idle: both answered (in an order their CPU decides), authoritative,
    // with the short TTL.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    loop {
        let mut answered = ingest_answer(host, port);
        answered.sort();
        if answered == both {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "both ingests never answered: {answered:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let full = dig(host, port, &["ingest.streamcdn.test", "A", "+norecurse"]);
    assert!(
        full.contains("status: NOERROR") && full.contains(" aa"),
        "{full}"
    );
    assert!(
        full.contains(&format!("ingest.streamcdn.test.\t5\tIN\tA\t{a}")),
        "{full}"
    );

    // A publisher on A (over SRT, as a publisher that resolved the name would): A has
    // the load now, B is answered first.
    let mut publisher = publish_ts(&ingests[0].srt_url("demo", "cam", KEY), 60);
    wait_ingests(host, port, &[&b, &a], Duration::from_secs(10));
    let _ = publisher.kill();
    let _ = publisher.wait();

    // A drained: it leaves the answers (announced draining, then gone).
    let answer = http_request_at(
        &a,
        ingests[0].admin,
        "POST",
        "/api/v1/drain",
        &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
    )
    .unwrap();
    assert_eq!(answer.status, 202, "{}", answer.text());
    let drained = Instant::now();
    wait_ingests(host, port, &[&b], Duration::from_secs(5));
    println!(
        "drained ingest left the answers after {:?}",
        drained.elapsed()
    );

    // B killed: the router's check drops it before its lease ends; no ingest is left,
    // and the name exists with no address (NODATA).
    let killed = Instant::now();
    ingests[1].stop_with("KILL");
    wait_ingests(host, port, &[], Duration::from_secs(5));
    println!("dead ingest left the answers after {:?}", killed.elapsed());
    let none = dig(host, port, &["ingest.streamcdn.test", "A"]);
    assert!(
        none.contains("status: NOERROR") && none.contains("ANSWER: 0"),
        "{none}"
    );
}
