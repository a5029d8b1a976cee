//! The node directory end to end: every server announces itself (roles, cluster, site,
//! addresses, load) with no configuration beyond its own, `GET /api/v1/nodes` lists
//! them, and a server that stops (gracefully or killed) leaves the list.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

fn nodes(host: &str, admin: u16) -> Vec<serde_json::Value> {
    let r = http_request_at(host, admin, "GET", "/api/v1/nodes", &[]).expect("admin API");
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_str(&r.text()).expect("a JSON array of nodes")
}

/// Polls the directory until `done` holds for it; panics with the last listing.
fn wait_nodes(
    host: &str,
    admin: u16,
    what: &str,
    mut done: impl FnMut(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let list = nodes(host, admin);
        if done(&list) {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "{what}; the directory lists: {list:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn roles(node: &serde_json::Value) -> Vec<&str> {
    node["roles"]
        .as_array()
        .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default()
}

#[test]
fn up_lists_itself_with_its_roles_addresses_and_load() {
    let node = Node::up("dir-up", "[registry]\nlease = \"3s\"\n");
    let list = wait_nodes(&node.host, node.admin, "up never announced itself", |l| {
        l.len() == 1
    });
    let me = &list[0];
    assert_eq!(roles(me), ["ingest", "edge", "archiver", "router"]);
    assert_eq!(me["cluster"], "default");
    assert_eq!(me["site"], "default");
    let origin = format!("http://{}:{}", node.host, node.origin);
    assert_eq!(me["origin"], origin.as_str());
    assert_eq!(me["addresses"]["origin"], origin.as_str());
    assert_eq!(me["addresses"]["playback"], node.http_base().as_str());
    assert_eq!(me["id"], origin.trim_start_matches("http://"));

    // Viewer traffic shows in the load: an open connection, and bytes going out.
    let _viewer = TcpStream::connect((node.host.as_str(), node.http)).expect("connect");
    let list = wait_nodes(
        &node.host,
        node.admin,
        "the load never showed the viewer traffic",
        |l| {
            let r = http_get(node.http, "/demo/nothing/index.m3u8", &[]).expect("edge");
            assert_eq!(r.status, 404);
            let load = &l[0]["load"];
            load["viewer_connections"].as_u64() >= Some(1)
                && load["egress_bytes_per_sec"].as_u64() > Some(0)
        },
    );
    let load = &list[0]["load"];
    assert!(
        load["cpu"]
            .as_f64()
            .is_some_and(|c| (0.0..=2.0).contains(&c)),
        "{load}"
    );
    assert!(
        load["measured_at_ms"].as_u64() > Some(1_700_000_000_000),
        "{load}"
    );
}

#[test]
fn servers_join_and_leave_the_directory_with_no_configuration_elsewhere() {
    let redis = Redis::start();
    let registry = redis.registry_toml("directory");
    let net = loopback_net();
    let ingest = Node::role_on(
        "dir-ingest",
        "ingest",
        &format!("{net}.1"),
        free_port(),
        None,
        &registry,
    );
    let mut edge = Node::role_on(
        "dir-edge",
        "edge",
        &format!("{net}.2"),
        free_port(),
        None,
        &registry,
    );
    let mut mid = Node::role_on(
        "dir-mid",
        "edge",
        &format!("{net}.3"),
        free_port(),
        None,
        &format!("{registry}[edge]\ntier = \"mid\"\n"),
    );

    // Any server's admin API lists them all.
    let list = wait_nodes(&edge.host, edge.admin, "not every server appeared", |l| {
        l.len() == 3
    });
    let by_playback = |base: &str| {
        list.iter()
            .find(|n| n["addresses"]["playback"] == base)
            .unwrap_or_else(|| panic!("no node plays at {base}: {list:#?}"))
    };
    let e = by_playback(&edge.http_base());
    assert_eq!(roles(e), ["edge"]);
    assert_eq!(e["origin"], "", "an edge serves no recordings");
    assert_eq!(roles(by_playback(&mid.http_base())), ["mid-tier"]);
    let i = list
        .iter()
        .find(|n| roles(n) == ["ingest"])
        .expect("the ingest server");
    assert_eq!(
        i["origin"],
        format!("http://{}:{}", ingest.host, ingest.origin).as_str()
    );

    // A graceful stop withdraws the server; a killed one drops out when its lease ends.
    assert!(edge.stop_with("TERM").success());
    wait_nodes(
        &ingest.host,
        ingest.admin,
        "the stopped edge stayed listed",
        |l| {
            l.len() == 2
                && l.iter()
                    .all(|n| n["addresses"]["playback"] != edge.http_base().as_str())
        },
    );
    mid.stop_with("KILL");
    wait_nodes(
        &ingest.host,
        ingest.admin,
        "the killed mid-tier stayed listed",
        |l| l.len() == 1 && roles(&l[0]) == ["ingest"],
    );
}
