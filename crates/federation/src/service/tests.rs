//! The single-CIS lease: two CIS of one participant on one in-process registry, its
//! time moved by hand; no sockets.

use std::collections::BTreeMap;

use streamcdn_cdni::wire::PayloadType;
use streamcdn_cdni::{TriggerStatus, View};
use streamcdn_registry::ManualClock;

use super::*;
use crate::state::{Answer, Caller, Interface, World};

fn us() -> CdnPid {
    "AS64496:1".parse().unwrap()
}

fn holder(id: &str) -> LeaseHolder {
    LeaseHolder {
        id: id.into(),
        address: format!("http://{id}:9000"),
    }
}

fn settings(registry: &Registry, id: &str) -> Settings {
    Settings {
        participant: Participant {
            us: us(),
            own: Vec::new(),
            partners: BTreeMap::new(),
        },
        partners: Arc::new(BTreeMap::new()),
        store: Store::Registry(registry.clone()),
        registry: registry.clone(),
        holder: holder(id),
        key: streamcdn_access::deployment::DeploymentKey::generate(),
    }
}

fn operator() -> Caller {
    Caller {
        who: us(),
        interface: Interface::Admin,
        base: "http://admin/api/v1/triggers".into(),
        path: "/api/v1/triggers",
    }
}

/// A purge that reaches no server (the directory is empty): complete at once.
fn purge(cis: &mut Cis, now: Millis) -> Answer {
    let body = br#"{"trigger": {"type": "purge", "content.urls": ["http://x.test/p/s/1.m4s"]}}"#;
    let content_type = Some(PayloadType::Command.content_type());
    cis.command(&operator(), content_type, body, Ok(&World::default()), now)
}

fn triggers(cis: &Cis) -> usize {
    let rendered = cis.collection().render_collection(us(), View::All, "x");
    let listed: serde_json::Value = serde_json::from_slice(&rendered.body).unwrap();
    listed["triggers"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn one_cis_is_active_and_another_takes_over_when_it_dies() {
    let clock = ManualClock::default();
    let registry = Registry::memory_with_clock(clock.clone());
    let (mut a, _) = Service::new(settings(&registry, "a"));
    let (mut b, _) = Service::new(settings(&registry, "b"));
    a.keep_lease().await;
    b.keep_lease().await;
    assert_eq!(a.mode(), Mode::Active);
    assert_eq!(b.mode(), Mode::Standby(Some(holder("a"))));
    assert!(b.state().is_none());

    // Kept with the real time: `snapshot` drops what is finished for a day.
    let answer = purge(a.state().unwrap(), now_ms());
    assert!(
        matches!(answer, Answer::Status { status: 201, .. }),
        "{answer:?}"
    );
    a.settle().await;

    // a renews in time: b keeps waiting.
    for _ in 0..5 {
        clock.advance(LEASE_RENEW);
        a.keep_lease().await;
        b.keep_lease().await;
        assert_eq!(b.mode(), Mode::Standby(Some(holder("a"))));
    }
    // a dies: once its lease has expired, b takes over with what a kept.
    clock.advance(LEASE_TTL - LEASE_RENEW);
    b.keep_lease().await;
    assert_eq!(
        b.mode(),
        Mode::Standby(Some(holder("a"))),
        "not before expiry"
    );
    clock.advance(LEASE_RENEW);
    b.keep_lease().await;
    assert_eq!(b.mode(), Mode::Active);
    let state = b.state().unwrap();
    assert_eq!(triggers(state), 1);
    let kept = state.collection().get(us(), streamcdn_cdni::TriggerId(0));
    assert_eq!(kept.map(|t| t.status()), Ok(TriggerStatus::Complete));
    // Its ids go on from a's.
    let Answer::Status { location, .. } = purge(state, now_ms()) else {
        panic!("not accepted");
    };
    assert_eq!(location.as_deref(), Some("http://admin/api/v1/triggers/1"));
    b.settle().await;

    // a comes back (it was cut off, not dead): it finds b active and stands by.
    a.keep_lease().await;
    assert_eq!(a.mode(), Mode::Standby(Some(holder("b"))));
    assert!(a.state().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_standing_by_cis_names_the_active_one_and_follows_a_clean_shutdown() {
    let registry = Registry::memory();
    let (a, a_handle) = Service::new(settings(&registry, "a"));
    let (stop_a, stopped_a) = watch::channel(false);
    let a_running = tokio::spawn(a.run(stopped_a));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(a_handle.mode(), Mode::Active);
    let (b, b_handle) = Service::new(settings(&registry, "b"));
    let (_stop_b, stopped_b) = watch::channel(false);
    tokio::spawn(b.run(stopped_b));
    tokio::time::sleep(Duration::from_millis(10)).await;

    let (answer, kept) = a_handle.ask(purge).await.unwrap();
    assert!(
        matches!(answer, Answer::Status { status: 201, .. }),
        "{answer:?}"
    );
    assert_eq!(kept, Ok(()));
    let refused = b_handle.ask(|cis, _| triggers(cis)).await;
    assert_eq!(refused.err(), Some(Mode::Standby(Some(holder("a")))));

    // a shuts down and releases the lease: b takes over at its next renewal.
    stop_a.send(true).unwrap();
    a_running.await.unwrap();
    tokio::time::sleep(LEASE_RENEW + Duration::from_millis(10)).await;
    assert_eq!(b_handle.mode(), Mode::Active);
    let (listed, _) = b_handle.ask(|cis, _| triggers(cis)).await.unwrap();
    assert_eq!(listed, 1);
}

#[tokio::test]
async fn the_file_store_keeps_what_it_is_given() {
    let dir = std::env::temp_dir().join(format!("streamcdn-cis-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::File(dir.join("cis").join("triggers.json"));
    assert_eq!(store.load().await.unwrap(), None, "nothing kept yet");
    store.save(b"{\"kept\":1}".to_vec()).await.unwrap();
    store.save(b"{\"kept\":2}".to_vec()).await.unwrap();
    assert_eq!(
        store.load().await.unwrap().as_deref(),
        Some(&b"{\"kept\":2}"[..])
    );
    let names: Vec<_> = std::fs::read_dir(dir.join("cis"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["triggers.json"], "no temporary file left");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn a_command_waits_for_its_write_and_a_read_for_none() {
    let dir = std::env::temp_dir().join(format!("streamcdn-cis-held-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let registry = Registry::memory();
    let mut settings = settings(&registry, "a");
    settings.store = Store::File(dir.join("cis").join("triggers.json"));
    let (service, handle) = Service::new(settings);
    let (_stop, stopped) = watch::channel(false);
    tokio::spawn(service.run(stopped));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(handle.mode(), Mode::Active);

    let (answer, kept) = handle.ask(purge).await.unwrap();
    assert!(matches!(answer, Answer::Status { status: 201, .. }));
    assert_eq!(kept, Ok(()), "answered once its write ended");
    assert!(dir.join("cis/triggers.json").exists());

    // The directory becomes a file: every write fails from now on.
    std::fs::remove_dir_all(dir.join("cis")).unwrap();
    std::fs::write(dir.join("cis"), b"in the way").unwrap();
    let (answer, kept) = handle.ask(purge).await.unwrap();
    assert!(matches!(answer, Answer::Status { status: 201, .. }));
    let failed = kept.expect_err("the command's write failed, and its caller is told");
    assert!(failed.contains("triggers.json"), "{failed}");
    // A read changes nothing: answered at once, with nothing to keep.
    let (listed, kept) = handle.ask(|cis, _| triggers(cis)).await.unwrap();
    assert_eq!((listed, kept), (2, Ok(())));
    let _ = std::fs::remove_file(dir.join("cis"));
    let _ = std::fs::remove_dir_all(&dir);
}
