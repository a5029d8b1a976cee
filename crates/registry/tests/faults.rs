//! The Redis registry across faults, with real servers: a restart without persistence,
//! a flush, and a Sentinel failover after `kill -9` of the primary.

// Shared with the end-to-end tests, which use all of it.
#[allow(dead_code)]
#[path = "../../streamcdn/tests/common/redis_set.rs"]
mod redis_set;

use std::time::{Duration, Instant};

use redis_set::{redis_cli, RedisProcess, Sentinels};
use streamcdn_registry::{ProviderSettings, Registry};
use tokio::sync::watch;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("streamcdn-registry-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn settings(ms: u64) -> ProviderSettings {
    ProviderSettings {
        archive_after_ms: Some(ms),
        ..ProviderSettings::default()
    }
}

/// Waits for the next comeback; returns how long it took.
async fn next_comeback(
    continuity: &mut watch::Receiver<streamcdn_registry::Continuity>,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    tokio::time::timeout(limit, continuity.changed())
        .await
        .expect("the registry's comeback was never noticed")
        .unwrap();
    started.elapsed()
}

async fn wait_for<F: AsyncFnMut() -> bool>(what: &str, limit: Duration, mut done: F) -> Duration {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// A Redis restarted empty (no persistence) is noticed within a second; the settings
/// this server made through the API are put back, and the registry is "settling"
/// for a lease.
#[tokio::test]
async fn a_registry_restarted_empty_is_noticed_and_settings_put_back() {
    let dir = temp_dir("empty");
    let mut redis = RedisProcess::server(&dir, &["--save", "", "--appendonly", "no"]);
    let registry = Registry::redis(&redis.url(), "t")
        .await
        .unwrap()
        .with_lease(Duration::from_secs(3));
    registry
        .set_provider_settings("p", &settings(1234))
        .await
        .unwrap();
    let mut continuity = registry.continuity();
    assert!(!registry.settling());

    redis.kill9();
    redis.restart();
    let noticed = next_comeback(&mut continuity, Duration::from_secs(3)).await;
    eprintln!("restart noticed after {noticed:?}");
    assert!(registry.settling());
    wait_for(
        "the setting to be put back",
        Duration::from_secs(3),
        async || {
            registry
                .provider_settings("p")
                .await
                .is_ok_and(|s| s.archive_after_ms == Some(1234))
        },
    )
    .await;
    // A later write wins over what an older server would put back.
    registry
        .set_provider_settings("p", &settings(99))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!registry.settling(), "settling lasts one lease");
    assert_eq!(
        registry
            .provider_settings("p")
            .await
            .unwrap()
            .archive_after_ms,
        Some(99)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `FLUSHALL` keeps the connection and the server: the data marker catches it.
#[tokio::test]
async fn a_flushed_registry_is_noticed() {
    let dir = temp_dir("flush");
    let redis = RedisProcess::server(&dir, &["--save", "", "--appendonly", "no"]);
    let registry = Registry::redis(&redis.url(), "t").await.unwrap();
    let mut continuity = registry.continuity();
    // The marker is read by the first background check.
    tokio::time::sleep(Duration::from_millis(800)).await;
    redis_cli(redis.port, &["FLUSHALL"]);
    let noticed = next_comeback(&mut continuity, Duration::from_secs(3)).await;
    eprintln!("flush noticed after {noticed:?}");
    assert!(registry.settling());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kill -9` of the primary: the registry follows the sentinels to the promoted
/// replica, writes work again, and what was set before is still there.
#[tokio::test]
async fn the_registry_follows_a_sentinel_failover() {
    let mut set = Sentinels::start();
    let registry = Registry::redis(&set.url(), "t").await.unwrap();
    registry
        .set_provider_settings("p", &settings(4321))
        .await
        .unwrap();
    let record = |i: u64| streamcdn_registry::StreamRecord {
        provider: "p".into(),
        stream: "s".into(),
        recording_id: format!("r{i}"),
        cluster: "c".into(),
        node: "n".into(),
        origin: "http://n".into(),
        state: streamcdn_registry::StreamState::Live,
    };
    let lease = Duration::from_secs(10);
    registry.announce(&record(0), lease).await.unwrap();
    // Replication is asynchronous: what was written just before the crash must have
    // reached the replica for this test to expect it.
    assert_eq!(
        redis_cli(set.servers[0].port, &["WAIT", "1", "2000"]),
        "1",
        "the replica did not acknowledge"
    );
    let mut continuity = registry.continuity();
    let old_master = set.master_port();

    set.kill_primary();
    let killed = Instant::now();
    let mut i = 1;
    let mut failures = 0;
    let recovered = wait_for(
        "writes to work again",
        Duration::from_secs(30),
        async || {
            i += 1;
            let ok = registry.announce(&record(i), lease).await.is_ok();
            failures += u32::from(!ok);
            ok
        },
    )
    .await;
    let noticed = next_comeback(&mut continuity, Duration::from_secs(1)).await;
    eprintln!(
        "failover: writes failed for {recovered:?} ({failures} failed writes), comeback seen {noticed:?} later"
    );
    assert!(set.promoted());
    assert_ne!(set.master_port(), old_master);
    assert_eq!(set.master_port(), Some(set.servers[1].port));
    assert!(killed.elapsed() < Duration::from_secs(30));
    assert_eq!(
        registry
            .provider_settings("p")
            .await
            .unwrap()
            .archive_after_ms,
        Some(4321)
    );
    assert_eq!(
        registry
            .stream("p", "s")
            .await
            .unwrap()
            .unwrap()
            .recording_id,
        format!("r{i}")
    );
}
