//! Collections (§3): isolation between uCDNs, filtered views, ETags (§4.2), cancel
//! (§4.3), delete (§4.4), expiry (§4.5), persistence.

use serde_json::{json, Value};
use streamcdn_cdni::collection::{trigger_id_from_url, trigger_url, DEFAULT_STALE_AFTER_SECS};
use streamcdn_cdni::*;

const BASE: &str = "https://cis.b.test:9443/triggers";

fn pid(text: &str) -> CdnPid {
    text.parse().unwrap()
}

fn purge() -> TriggerSpec {
    serde_json::from_value(json!({ "type": "purge", "content.urls": ["https://e.com/a"] })).unwrap()
}

fn accept(c: &mut Collection, owner: &str, targets: &[&str], now: u64) -> TriggerId {
    let stages: Vec<Vec<TargetId>> = vec![targets.iter().map(|&t| t.into()).collect()];
    c.accept(pid(owner), purge(), Envelope::default(), stages, now)
}

fn listed(c: &Collection, owner: &str, view: View) -> Value {
    serde_json::from_slice::<Value>(&c.render_collection(pid(owner), view, BASE).body).unwrap()
        ["triggers"]
        .clone()
}

#[test]
fn each_ucdn_sees_only_its_own() {
    let mut c = Collection::new(pid("AS64500:0"), DEFAULT_STALE_AFTER_SECS);
    let a = accept(&mut c, "AS64496:1", &["e1"], 1);
    let b = accept(&mut c, "AS64497:1", &["e1"], 1);
    assert!(c.get(pid("AS64496:1"), a).is_ok());
    assert_eq!(
        c.get(pid("AS64496:1"), b).err(),
        Some(AccessError::Forbidden)
    );
    assert_eq!(
        c.render_status(pid("AS64496:1"), b)
            .err()
            .map(AccessError::http_status),
        Some(403)
    );
    assert_eq!(
        c.get(pid("AS64496:1"), TriggerId(99))
            .err()
            .map(AccessError::http_status),
        Some(404)
    );
    assert_eq!(
        listed(&c, "AS64496:1", View::All),
        json!([trigger_url(BASE, a)])
    );
    assert_eq!(listed(&c, "AS64499:1", View::All), json!([]));
    let urls = [trigger_url(BASE, b)];
    assert_eq!(
        c.cancel(pid("AS64496:1"), &urls, BASE, 2).err(),
        Some(AccessError::Forbidden)
    );
    assert_eq!(
        c.delete(pid("AS64496:1"), b, 2).err(),
        Some(AccessError::Forbidden)
    );
    assert_eq!(
        c.get(pid("AS64497:1"), b).map(Trigger::status),
        Ok(TriggerStatus::Pending)
    );
}

#[test]
fn views_follow_the_status() {
    let owner = "AS64496:1";
    let mut c = Collection::new(pid("AS64500:0"), 600);
    let pending = accept(&mut c, owner, &["e1"], 1);
    let active = accept(&mut c, owner, &["e1"], 1);
    let processed = accept(&mut c, owner, &["e1"], 1);
    let cancelled = accept(&mut c, owner, &["e1"], 1);
    c.on_event(active, Event::Start, 2);
    c.on_event(processed, Event::Start, 2);
    c.on_event(
        processed,
        Event::Reported {
            target: "e1".into(),
            outcome: Outcome::Processed,
        },
        3,
    );
    c.cancel(pid(owner), &[trigger_url(BASE, cancelled)], BASE, 3)
        .unwrap();
    let url = |id| json!([trigger_url(BASE, id)]);
    assert_eq!(listed(&c, owner, View::Pending), url(pending));
    assert_eq!(listed(&c, owner, View::Active), url(active));
    assert_eq!(listed(&c, owner, View::Complete), url(processed));
    assert_eq!(listed(&c, owner, View::Failed), url(cancelled));
    // The collection of all links the views and names us; the views do not need to.
    let all: Value =
        serde_json::from_slice(&c.render_collection(pid(owner), View::All, BASE).body).unwrap();
    assert_eq!(all["cdn-id"], json!("AS64500:0"));
    assert_eq!(all["staleresourcetime"], json!(600));
    assert_eq!(all["coll-all"], json!(BASE));
    assert_eq!(all["coll-pending"], json!(format!("{BASE}/pending")));
    assert_eq!(all["coll-failed"], json!(format!("{BASE}/failed")));
    let failed: Value =
        serde_json::from_slice(&c.render_collection(pid(owner), View::Failed, BASE).body).unwrap();
    assert_eq!(failed.get("cdn-id"), None);
    assert_eq!(failed["staleresourcetime"], json!(600));
}

#[test]
fn etags_change_with_the_resource_only() {
    let owner = pid("AS64496:1");
    let mut c = Collection::new(pid("AS64500:0"), 600);
    let id = accept(&mut c, "AS64496:1", &["e1"], 1);
    let before = c.render_status(owner, id).unwrap();
    assert_eq!(
        c.render_status(owner, id).unwrap(),
        before,
        "stable while nothing changes"
    );
    assert!(before.is_current(&before.etag));
    assert!(before.is_current(&format!("\"x\", W/{}", before.etag)));
    assert!(before.is_current("*"));
    assert!(!before.is_current("\"x\""));
    let list_before = c.render_collection(owner, View::Pending, BASE);
    c.on_event(id, Event::Start, 2);
    let after = c.render_status(owner, id).unwrap();
    assert_ne!(after.etag, before.etag);
    assert!(!after.is_current(&before.etag));
    assert_ne!(
        c.render_collection(owner, View::Pending, BASE).etag,
        list_before.etag
    );
}

#[test]
fn cancel_answers_200_when_done_and_202_while_cancelling() {
    let owner = pid("AS64496:1");
    let mut c = Collection::new(pid("AS64500:0"), 600);
    let pending = accept(&mut c, "AS64496:1", &["e1"], 1);
    let running = accept(&mut c, "AS64496:1", &["e1"], 1);
    c.on_event(running, Event::Start, 1);
    let reply = c
        .cancel(owner, &[trigger_url(BASE, pending)], BASE, 2)
        .unwrap();
    assert_eq!((reply.http_status(), reply.effects.len()), (200, 0));
    let reply = c
        .cancel(owner, &[trigger_url(BASE, running)], BASE, 2)
        .unwrap();
    assert_eq!(reply.http_status(), 202);
    assert_eq!(
        reply.effects,
        vec![Effect::CancelAtTarget {
            trigger: running,
            target: "e1".into()
        }]
    );
    // One unknown URL and nothing is cancelled.
    let fresh = accept(&mut c, "AS64496:1", &["e1"], 3);
    let urls = [trigger_url(BASE, fresh), format!("{BASE}/nope")];
    assert_eq!(
        c.cancel(owner, &urls, BASE, 4).err(),
        Some(AccessError::NotFound)
    );
    assert_eq!(
        c.get(owner, fresh).map(Trigger::status),
        Ok(TriggerStatus::Pending)
    );
}

#[test]
fn urls_map_back_to_ids() {
    assert_eq!(
        trigger_url(&format!("{BASE}/"), TriggerId(42)),
        format!("{BASE}/42")
    );
    assert_eq!(
        trigger_id_from_url(BASE, &format!("{BASE}/42")),
        Some(TriggerId(42))
    );
    for bad in [
        format!("{BASE}/"),
        format!("{BASE}/+1"),
        format!("{BASE}/1/2"),
        format!("{BASE}42"),
        "https://x/1".into(),
    ] {
        assert_eq!(trigger_id_from_url(BASE, &bad), None, "{bad}");
    }
}

#[test]
fn delete_removes_and_ids_are_never_reused() {
    let owner = pid("AS64496:1");
    let mut c = Collection::new(pid("AS64500:0"), 600);
    let id = accept(&mut c, "AS64496:1", &["e1"], 1);
    c.on_event(id, Event::Start, 1);
    let effects = c.delete(owner, id, 2).unwrap();
    assert_eq!(
        effects,
        vec![Effect::CancelAtTarget {
            trigger: id,
            target: "e1".into()
        }]
    );
    assert_eq!(c.get(owner, id).err(), Some(AccessError::NotFound));
    assert!(c
        .on_event(
            id,
            Event::Reported {
                target: "e1".into(),
                outcome: Outcome::Complete
            },
            3
        )
        .is_empty());
    assert_ne!(accept(&mut c, "AS64496:1", &[], 3), id);
}

#[test]
fn finished_triggers_expire_after_staleresourcetime() {
    let owner = pid("AS64496:1");
    let mut c = Collection::new(pid("AS64500:0"), 600);
    let done = accept(&mut c, "AS64496:1", &[], 100);
    let running = accept(&mut c, "AS64496:1", &["e1"], 100);
    c.on_event(running, Event::Start, 100);
    assert_eq!(c.next_expiry(), Some(700));
    assert!(c.expire(699).is_empty());
    assert_eq!(c.expire(700), vec![done]);
    assert_eq!(c.get(owner, done).err(), Some(AccessError::NotFound));
    assert_eq!(c.next_expiry(), None, "running triggers never expire");
    c.on_event(
        running,
        Event::Reported {
            target: "e1".into(),
            outcome: Outcome::Complete,
        },
        800,
    );
    assert_eq!(c.next_expiry(), Some(1400));
}

#[test]
fn a_restarted_cis_resumes_where_it_was() {
    let mut c = Collection::new(pid("AS64500:0"), 600);
    let id = accept(&mut c, "AS64496:1", &["e1", "e2"], 1);
    c.on_event(id, Event::Start, 1);
    c.on_event(
        id,
        Event::Reported {
            target: "e2".into(),
            outcome: Outcome::Complete,
        },
        2,
    );
    let stored = serde_json::to_vec(&c).unwrap();
    let mut restored: Collection = serde_json::from_slice(&stored).unwrap();
    assert_eq!(restored, c);
    assert_eq!(
        restored.resume(10),
        vec![Effect::SendToTarget {
            trigger: id,
            target: "e1".into()
        }]
    );
    restored.on_event(
        id,
        Event::Reported {
            target: "e1".into(),
            outcome: Outcome::Complete,
        },
        11,
    );
    assert_eq!(
        restored.get(pid("AS64496:1"), id).map(Trigger::status),
        Ok(TriggerStatus::Complete)
    );
    // Ids go on from where they were.
    assert_eq!(accept(&mut restored, "AS64496:1", &[], 12), TriggerId(1));
}
