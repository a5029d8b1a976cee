//! One command invocation system per participant: two routers on one Redis both run a
//! CIS; the first holds the registry lease and serves, the second answers `503` naming
//! it, and takes over with the first's triggers once the first is killed and its lease
//! expires.

mod common;

use std::time::{Duration, Instant};

use common::*;

const COMMAND: &str = "application/cdni; ptype=ci-trigger-command";

fn post_purge(node: &Node) -> common::HttpResponse {
    let command =
        r#"{"trigger": {"type": "purge", "content.urls": ["http://live.test/demo/s/index.m3u8"]}}"#;
    http_request_body(
        node.admin,
        "POST",
        "/api/v1/triggers",
        &[("Content-Type", COMMAND)],
        command.as_bytes(),
    )
    .unwrap()
}

/// Waits until `check` holds, for at most `within`.
fn wait_for(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_second_cis_stands_by_and_takes_over_when_the_first_dies() {
    let redis = Redis::start();
    let registry = redis.registry_toml("cis-lease");
    let mut first = Node::role("cis-lease-1", "router", &registry);
    wait_for(
        Duration::from_secs(10),
        "the first CIS never became active",
        || http_request(first.admin, "GET", "/api/v1/triggers", &[]).is_ok_and(|r| r.status == 200),
    );
    let second = Node::role("cis-lease-2", "router", &registry);

    let created = post_purge(&first);
    // No cache in the directory: nothing to reach, complete at once.
    assert_eq!(created.status, 201, "{}", created.text());
    let location = created.header("location").unwrap().to_owned();
    let path = format!("/api/v1/{}", location.split_once("/api/v1/").unwrap().1);

    let standing_by = http_request(second.admin, "GET", "/api/v1/triggers", &[]).unwrap();
    assert_eq!(standing_by.status, 503, "{}", standing_by.text());
    assert_eq!(
        standing_by.header("x-streamcdn-active-cis"),
        Some(format!("http://127.0.0.1:{}", first.admin).as_str())
    );
    assert_eq!(post_purge(&second).status, 503);

    first.stop_with("KILL");
    let killed = Instant::now();
    wait_for(
        Duration::from_secs(20),
        "the second CIS never took over",
        || http_request(second.admin, "GET", &path, &[]).is_ok_and(|r| r.status == 200),
    );
    // Not before the first's lease (10 s) could expire.
    assert!(
        killed.elapsed() > Duration::from_secs(5),
        "{:?}",
        killed.elapsed()
    );
    let status = http_request(second.admin, "GET", &path, &[]).unwrap();
    assert!(status.text().contains("\"complete\""), "{}", status.text());
    assert_eq!(post_purge(&second).status, 201);
}
