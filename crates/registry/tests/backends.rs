//! The same registry scenarios against both backends; Redis is a real `redis-server`.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use streamcdn_registry::{
    LeaseHolder, Load, ManualClock, NodeRecord, Registry, Role, StreamRecord, StreamState,
};

struct RedisServer {
    child: Child,
    url: String,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_server() -> RedisServer {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect(
            "redis-server is required: apt-get install redis-server (scripts/test.sh installs it)",
        );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "redis-server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    RedisServer {
        child,
        url: format!("redis://127.0.0.1:{port}/"),
    }
}

fn record(node: &str, state: StreamState) -> StreamRecord {
    StreamRecord {
        provider: "p".into(),
        stream: "s".into(),
        recording_id: "r1".into(),
        cluster: "c1".into(),
        node: node.into(),
        origin: format!("http://{node}"),
        state,
    }
}

fn node(id: &str, cluster: &str) -> NodeRecord {
    NodeRecord::ingest(id, cluster, &format!("http://{id}"))
}

/// The node directory lists every server with its roles, addresses and load; only
/// servers with an ingest origin are members of their cluster.
async fn the_directory_lists_every_server(registry: Registry) {
    let lease = Duration::from_millis(300);
    let long = Duration::from_secs(60);
    let mut edge = NodeRecord {
        origin: String::new(),
        roles: vec![Role::Edge],
        site: "paris".into(),
        capacity: Some(500),
        ..node("edge-1", "c1")
    };
    edge.addresses.playback = Some("http://127.0.0.9:8080".into());
    edge.load = Load {
        viewer_connections: 12,
        egress_bytes_per_sec: 3_000_000,
        cpu: 0.25,
        publishers: 0,
        measured_at_ms: 1,
    };
    registry.register_node(&edge, long).await.unwrap();
    registry
        .register_node(&node("a", "c1"), lease)
        .await
        .unwrap();
    let archiver = NodeRecord {
        origin: String::new(),
        roles: vec![Role::Archiver],
        ..node("archiver-c1", "c1")
    };
    registry.register_node(&archiver, long).await.unwrap();

    let all = registry.nodes().await.unwrap();
    let ids: Vec<&str> = all.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["a", "archiver-c1", "edge-1"]);
    assert_eq!(all[2], edge, "the record comes back whole");
    let members: Vec<String> = registry
        .cluster_nodes("c1")
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(
        members,
        ["a"],
        "servers without an origin serve no recordings"
    );

    // A refresh replaces the load; an expired lease drops the server.
    edge.load.viewer_connections = 13;
    registry.register_node(&edge, long).await.unwrap();
    tokio::time::sleep(Duration::from_millis(450)).await;
    let all = registry.nodes().await.unwrap();
    let ids: Vec<&str> = all.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["archiver-c1", "edge-1"]);
    assert_eq!(all[1].load.viewer_connections, 13);
    registry.remove_node(&edge).await.unwrap();
    assert_eq!(registry.nodes().await.unwrap().len(), 1);
}

async fn leases_expire_and_lookups_skip_dead_servers(registry: Registry) {
    let lease = Duration::from_millis(300);
    let long = Duration::from_secs(60);
    registry
        .register_node(&node("a", "c1"), lease)
        .await
        .unwrap();
    registry
        .register_node(&node("b", "c1"), long)
        .await
        .unwrap();
    registry
        .register_node(&node("x", "c2"), long)
        .await
        .unwrap();
    registry
        .announce(&record("a", StreamState::Live), long)
        .await
        .unwrap();
    let found = registry.locate_stream("p", "s").await.unwrap().unwrap();
    assert_eq!(found.origins, ["http://a"]);

    tokio::time::sleep(Duration::from_millis(450)).await;
    // The stream record outlives server a here, but a's lease is gone: no origin.
    let found = registry.locate_stream("p", "s").await.unwrap().unwrap();
    assert!(found.origins.is_empty(), "{found:?}");
    let members: Vec<String> = registry
        .cluster_nodes("c1")
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(members, ["b"]);

    // A stream whose own lease ran out is unknown.
    registry
        .announce(&record("b", StreamState::Live), lease)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(registry.locate_stream("p", "s").await.unwrap().is_none());
}

async fn ended_streams_are_served_by_the_cluster(registry: Registry) {
    let long = Duration::from_secs(60);
    for (id, cluster) in [("a", "c1"), ("b", "c1"), ("x", "c2")] {
        registry
            .register_node(&node(id, cluster), long)
            .await
            .unwrap();
    }
    let live_a = record("a", StreamState::Live);
    registry.announce(&live_a, long).await.unwrap();
    // b took the stream over (a's publisher reconnected through b): a, ending late,
    // must not overwrite b's record.
    let live_b = record("b", StreamState::Live);
    registry.announce(&live_b, long).await.unwrap();
    let ended_a = record("a", StreamState::Ended);
    assert!(!registry.transition(&live_a, &ended_a, long).await.unwrap());
    assert_eq!(
        registry.stream("p", "s").await.unwrap(),
        Some(live_b.clone())
    );

    let ended_b = record("b", StreamState::Ended);
    assert!(registry.transition(&live_b, &ended_b, long).await.unwrap());
    let found = registry.locate_stream("p", "s").await.unwrap().unwrap();
    assert_eq!(found.origins, ["http://b", "http://a"]);
    let by_id = registry
        .locate_recording("p", "s", "r1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_id.record.state, StreamState::Ended);
    assert!(registry
        .locate_recording("p", "s", "r2")
        .await
        .unwrap()
        .is_none());

    registry.remove_node(&node("b", "c1")).await.unwrap();
    let found = registry.locate_stream("p", "s").await.unwrap().unwrap();
    assert_eq!(found.origins, ["http://a"]);
}

#[tokio::test]
async fn memory_leases() {
    leases_expire_and_lookups_skip_dead_servers(Registry::memory()).await;
}

#[tokio::test]
async fn memory_ended_streams() {
    ended_streams_are_served_by_the_cluster(Registry::memory()).await;
}

async fn the_first_secret_wins(registry: Registry) {
    let first = registry.shared_secret("probe", "aaaa").await.unwrap();
    let second = registry.shared_secret("probe", "bbbb").await.unwrap();
    assert_eq!((first.as_str(), second.as_str()), ("aaaa", "aaaa"));
    assert_eq!(
        registry.shared_secret("other", "cccc").await.unwrap(),
        "cccc"
    );
}

async fn samples_are_shared_per_prefix(registry: Registry) {
    let long = Duration::from_secs(60);
    let short = Duration::from_millis(300);
    registry
        .record_sample("10.0.1.0/24", "e1", "old".into(), long)
        .await
        .unwrap();
    registry
        .record_sample("10.0.1.0/24", "e1", "new".into(), long)
        .await
        .unwrap();
    registry
        .record_sample("10.0.1.0/24", "e2", "brief".into(), short)
        .await
        .unwrap();
    registry
        .record_sample("10.0.2.0/24", "e1", "other".into(), long)
        .await
        .unwrap();
    let mut got = registry.samples("10.0.1.0/24").await.unwrap();
    got.sort();
    assert_eq!(got, ["brief", "new"]);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(registry.samples("10.0.1.0/24").await.unwrap(), ["new"]);
    assert!(registry.samples("10.9.9.0/24").await.unwrap().is_empty());
}

#[tokio::test]
async fn memory_samples() {
    samples_are_shared_per_prefix(Registry::memory()).await;
}

#[tokio::test]
async fn redis_samples() {
    let server = redis_server();
    samples_are_shared_per_prefix(Registry::redis(&server.url, "t6").await.unwrap()).await;
}

#[tokio::test]
async fn memory_shared_secret() {
    the_first_secret_wins(Registry::memory()).await;
}

#[tokio::test]
async fn redis_shared_secret() {
    let server = redis_server();
    the_first_secret_wins(Registry::redis(&server.url, "t5").await.unwrap()).await;
}

#[tokio::test]
async fn memory_directory() {
    the_directory_lists_every_server(Registry::memory()).await;
}

#[tokio::test]
async fn redis_directory() {
    let server = redis_server();
    let registry = Registry::redis(&server.url, "t4").await.unwrap();
    the_directory_lists_every_server(registry).await;
}

#[tokio::test]
async fn redis_leases() {
    let server = redis_server();
    let registry = Registry::redis(&server.url, "t1").await.unwrap();
    leases_expire_and_lookups_skip_dead_servers(registry).await;
}

#[tokio::test]
async fn redis_ended_streams_and_namespaces() {
    let server = redis_server();
    let registry = Registry::redis(&server.url, "t2").await.unwrap();
    ended_streams_are_served_by_the_cluster(registry).await;
    let other = Registry::redis(&server.url, "other").await.unwrap();
    assert!(other.stream("p", "s").await.unwrap().is_none());
}

#[tokio::test]
async fn redis_down_is_an_error_not_a_hang() {
    let server = redis_server();
    let registry = Registry::redis(&server.url, "t3").await.unwrap();
    drop(server);
    let started = std::time::Instant::now();
    assert!(registry.stream("p", "s").await.is_err());
    assert!(started.elapsed() < Duration::from_secs(5));
}

fn holder(id: &str) -> LeaseHolder {
    LeaseHolder {
        id: id.into(),
        address: format!("http://{id}"),
    }
}

/// One holder at a time: the second waits, renewing keeps it, a release or the
/// holder's silence (`wait` past the lease) hands it over.
async fn one_holder_at_a_time(registry: Registry, wait: impl AsyncFn(Duration)) {
    let ttl = Duration::from_millis(400);
    let (a, b) = (holder("a"), holder("b"));
    assert_eq!(registry.hold_lease("cis", &a, ttl).await.unwrap(), None);
    assert_eq!(
        registry.hold_lease("cis", &b, ttl).await.unwrap(),
        Some(a.clone())
    );
    // Other names are other leases.
    assert_eq!(registry.hold_lease("other", &b, ttl).await.unwrap(), None);
    wait(ttl / 2).await;
    assert_eq!(registry.hold_lease("cis", &a, ttl).await.unwrap(), None);
    wait(ttl / 2 + Duration::from_millis(100)).await;
    // Renewed: still a's.
    assert_eq!(
        registry.hold_lease("cis", &b, ttl).await.unwrap(),
        Some(a.clone())
    );
    // a's release is a's only.
    registry.release_lease("cis", &b).await.unwrap();
    assert_eq!(
        registry.hold_lease("cis", &b, ttl).await.unwrap(),
        Some(a.clone())
    );
    registry.release_lease("cis", &a).await.unwrap();
    assert_eq!(registry.hold_lease("cis", &b, ttl).await.unwrap(), None);
    // b falls silent: a takes over once the lease expires, not before.
    wait(ttl / 2).await;
    assert_eq!(
        registry.hold_lease("cis", &a, ttl).await.unwrap(),
        Some(b.clone())
    );
    wait(ttl).await;
    assert_eq!(registry.hold_lease("cis", &a, ttl).await.unwrap(), None);
}

#[tokio::test]
async fn memory_lease_has_one_holder() {
    let clock = ManualClock::default();
    let registry = Registry::memory_with_clock(clock.clone());
    one_holder_at_a_time(registry, async |by| clock.advance(by)).await;
}

#[tokio::test]
async fn redis_lease_has_one_holder() {
    let server = redis_server();
    let registry = Registry::redis(&server.url, "t7").await.unwrap();
    one_holder_at_a_time(registry, async |by| tokio::time::sleep(by).await).await;
}
