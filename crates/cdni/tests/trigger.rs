//! The trigger state machine: status derived from targets (§2.3, §4.1, §4.7), stages,
//! retries, cancellation (§4.3), restarts.

use serde_json::json;
use streamcdn_cdni::trigger::MAX_RETRY_DELAY_SECS;
use streamcdn_cdni::*;

fn purge() -> TriggerSpec {
    serde_json::from_value(json!({ "type": "purge", "content.urls": ["https://e.com/a"] })).unwrap()
}

fn ids(names: &[&str]) -> Vec<TargetId> {
    names.iter().map(|&n| n.into()).collect()
}

fn trigger(stages: &[&[&str]]) -> Trigger {
    Trigger::accept(
        TriggerId(1),
        purge(),
        Envelope::default(),
        stages.iter().map(|s| ids(s)).collect(),
        1000,
    )
}

fn send(target: &str) -> Effect {
    Effect::SendToTarget {
        trigger: TriggerId(1),
        target: target.into(),
    }
}

fn report(t: &mut Trigger, target: &str, outcome: Outcome, now: u64) -> Vec<Effect> {
    t.on_event(
        Event::Reported {
            target: target.into(),
            outcome,
        },
        now,
    )
}

fn failure() -> Outcome {
    Outcome::Failed(vec![ErrorDescription::for_whole(
        &purge(),
        ErrorCode::Ecdn,
        Some("disk error".into()),
    )])
}

#[test]
fn pending_then_active_then_complete() {
    let mut t = trigger(&[&["e1", "e2"]]);
    assert_eq!(
        (t.status(), t.ctime(), t.mtime()),
        (TriggerStatus::Pending, 1000, 1000)
    );
    assert_eq!(t.on_event(Event::Start, 1001), vec![send("e1"), send("e2")]);
    assert_eq!((t.status(), t.mtime()), (TriggerStatus::Active, 1001));
    assert!(report(&mut t, "e1", Outcome::Complete, 1002).is_empty());
    assert_eq!(
        (t.status(), t.mtime()),
        (TriggerStatus::Active, 1001),
        "no visible change, no new mtime"
    );
    report(&mut t, "e2", Outcome::Complete, 1003);
    assert_eq!((t.status(), t.mtime()), (TriggerStatus::Complete, 1003));
    // Later reports change nothing.
    report(&mut t, "e2", failure(), 1004);
    assert_eq!(
        (t.status(), t.mtime(), t.errors().len()),
        (TriggerStatus::Complete, 1003, 0)
    );
}

#[test]
fn no_target_means_complete_at_once() {
    assert_eq!(trigger(&[]).status(), TriggerStatus::Complete);
    assert_eq!(trigger(&[&[], &[]]).status(), TriggerStatus::Complete);
}

#[test]
fn stages_run_in_order_and_duplicates_run_once() {
    let mut t = trigger(&[&["parent"], &["child-1", "child-2", "parent"]]);
    assert_eq!(t.on_event(Event::Start, 1), vec![send("parent")]);
    assert_eq!(t.targets().count(), 3);
    // A failed parent still lets the children go: they are purged either way.
    assert_eq!(
        report(&mut t, "parent", failure(), 2),
        vec![send("child-1"), send("child-2")]
    );
    assert_eq!(t.status(), TriggerStatus::Active);
    assert_eq!(
        t.errors()[0].error,
        ErrorCode::Ecdn,
        "errors show while the trigger runs (§4.7)"
    );
    report(&mut t, "child-1", Outcome::Complete, 3);
    report(&mut t, "child-2", Outcome::Complete, 4);
    assert_eq!(t.status(), TriggerStatus::Failed);
}

#[test]
fn processed_anywhere_means_processed() {
    // §2.3: if any dCDN reports processed, we report processed, not complete.
    let mut t = trigger(&[&["edge", "partner"]]);
    t.on_event(Event::Start, 1);
    report(&mut t, "partner", Outcome::Processed, 2);
    assert_eq!(t.status(), TriggerStatus::Active);
    report(&mut t, "edge", Outcome::Complete, 3);
    assert_eq!(t.status(), TriggerStatus::Processed);
}

#[test]
fn unreachable_targets_are_retried_with_backoff_and_the_trigger_waits() {
    let mut t = trigger(&[&["down", "up"]]);
    t.on_event(Event::Start, 100);
    report(&mut t, "up", Outcome::Complete, 100);
    let mut now = 100;
    let mut delays = Vec::new();
    for _ in 0..9 {
        let effects = t.on_event(
            Event::Unreachable {
                target: "down".into(),
            },
            now,
        );
        let [Effect::RetryAt { at, .. }] = effects[..] else {
            panic!("{effects:?}")
        };
        delays.push(at - now);
        now = at;
        assert_eq!(
            t.on_event(
                Event::RetryDue {
                    target: "down".into()
                },
                now
            ),
            vec![send("down")]
        );
        assert_eq!(t.status(), TriggerStatus::Active);
    }
    assert_eq!(
        delays,
        [
            1,
            2,
            4,
            8,
            16,
            32,
            MAX_RETRY_DELAY_SECS,
            MAX_RETRY_DELAY_SECS,
            MAX_RETRY_DELAY_SECS
        ]
    );
    // A stale timer or a second failure report for the same attempt does nothing.
    assert!(t
        .on_event(
            Event::RetryDue {
                target: "down".into()
            },
            now
        )
        .is_empty());
    report(&mut t, "down", Outcome::Complete, now + 1);
    assert_eq!(t.status(), TriggerStatus::Complete);
}

#[test]
fn cancel_of_a_pending_trigger_is_immediate() {
    let mut t = trigger(&[&["e1"]]);
    assert!(t.on_event(Event::Cancel, 5).is_empty());
    assert_eq!(
        (t.status(), t.mtime()),
        (TriggerStatus::Cancelled, 1000),
        "mtime never goes back"
    );
    assert_eq!(
        t.errors().last().map(|e| &e.error),
        Some(&ErrorCode::Ecancelled)
    );
    assert!(
        t.on_event(Event::Start, 1001).is_empty(),
        "a cancelled trigger never starts"
    );
}

#[test]
fn cancel_of_an_active_trigger_stops_what_runs_and_drops_the_rest() {
    let mut t = trigger(&[&["e1", "e2"], &["child"]]);
    t.on_event(Event::Start, 1);
    t.on_event(
        Event::Unreachable {
            target: "e2".into(),
        },
        1,
    );
    let effects = t.on_event(Event::Cancel, 2);
    assert_eq!(
        effects,
        vec![Effect::CancelAtTarget {
            trigger: TriggerId(1),
            target: "e1".into()
        }]
    );
    assert_eq!(t.status(), TriggerStatus::Cancelling);
    assert!(t
        .on_event(
            Event::RetryDue {
                target: "e2".into()
            },
            3
        )
        .is_empty());
    report(&mut t, "e1", Outcome::Complete, 4);
    assert_eq!(
        t.status(),
        TriggerStatus::Cancelled,
        "e2 and the child never ran"
    );
}

#[test]
fn a_target_unreachable_after_cancel_is_not_retried() {
    let mut t = trigger(&[&["e1", "e2"]]);
    t.on_event(Event::Start, 1);
    t.on_event(Event::Cancel, 2);
    report(&mut t, "e1", Outcome::Cancelled, 3);
    assert_eq!(t.status(), TriggerStatus::Cancelling);
    assert!(t
        .on_event(
            Event::Unreachable {
                target: "e2".into()
            },
            4
        )
        .is_empty());
    assert_eq!(t.status(), TriggerStatus::Cancelled);
}

#[test]
fn cancel_too_late_to_stop_anything_leaves_the_true_result() {
    let mut t = trigger(&[&["e1"]]);
    t.on_event(Event::Start, 1);
    t.on_event(Event::Cancel, 2);
    assert_eq!(t.status(), TriggerStatus::Cancelling);
    report(&mut t, "e1", Outcome::Complete, 3);
    assert_eq!(t.status(), TriggerStatus::Complete);
    assert!(
        t.errors().is_empty(),
        "no ecancelled on a trigger that completed"
    );
}

#[test]
fn complete_and_failed_triggers_are_never_cancelled() {
    // §4.3
    let mut done = trigger(&[&["e1"]]);
    done.on_event(Event::Start, 1);
    report(&mut done, "e1", Outcome::Complete, 2);
    let mut failed = trigger(&[&["e1"]]);
    failed.on_event(Event::Start, 1);
    report(&mut failed, "e1", failure(), 2);
    for (mut t, status) in [
        (done, TriggerStatus::Complete),
        (failed, TriggerStatus::Failed),
    ] {
        let before = t.status_resource();
        assert!(t.on_event(Event::Cancel, 2000).is_empty());
        assert_eq!((t.status(), t.status_resource()), (status, before));
    }
}

#[test]
fn cancel_of_a_processed_trigger_reaches_the_targets_that_still_run() {
    let mut t = trigger(&[&["edge", "partner"]]);
    t.on_event(Event::Start, 1);
    report(&mut t, "edge", Outcome::Complete, 2);
    report(&mut t, "partner", Outcome::Processed, 2);
    let effects = t.on_event(Event::Cancel, 3);
    assert_eq!(
        effects,
        vec![Effect::CancelAtTarget {
            trigger: TriggerId(1),
            target: "partner".into()
        }]
    );
    assert_eq!(t.status(), TriggerStatus::Cancelled);
}

#[test]
fn a_target_that_cancels_unasked_fails_the_trigger() {
    let mut t = trigger(&[&["partner"]]);
    t.on_event(Event::Start, 1);
    report(&mut t, "partner", Outcome::Cancelled, 2);
    assert_eq!(t.status(), TriggerStatus::Failed);
}

#[test]
fn refused_triggers_fail_and_never_start() {
    let mut t = Trigger::refuse(
        TriggerId(3),
        purge(),
        Envelope::default(),
        ErrorCode::Eperm,
        "not yours".into(),
        9,
    );
    assert_eq!(t.status(), TriggerStatus::Failed);
    assert_eq!(t.errors()[0].error, ErrorCode::Eperm);
    assert_eq!(
        t.errors()[0].references.content_urls,
        Some(vec!["https://e.com/a".to_owned()])
    );
    assert!(t.on_event(Event::Start, 10).is_empty());
    assert!(t.on_event(Event::Cancel, 10).is_empty());
    assert_eq!(t.status(), TriggerStatus::Failed);
}

#[test]
fn estimate_is_shown_as_etime() {
    let mut t = trigger(&[&["e1"]]);
    t.on_event(Event::Estimated { etime: 1010 }, 1001);
    let resource = t.status_resource();
    assert_eq!((resource.etime, resource.mtime), (Some(1010), 1001));
}

#[test]
fn a_restart_sends_again_what_was_in_flight() {
    let mut t = trigger(&[&["e1", "e2", "e3"]]);
    t.on_event(Event::Start, 1);
    t.on_event(
        Event::Unreachable {
            target: "e2".into(),
        },
        1,
    );
    report(&mut t, "e3", Outcome::Complete, 1);
    let stored = serde_json::to_vec(&t).unwrap();
    let mut restored: Trigger = serde_json::from_slice(&stored).unwrap();
    assert_eq!(restored, t);
    assert_eq!(
        restored.on_event(Event::Resumed, 50),
        vec![
            send("e1"),
            Effect::RetryAt {
                trigger: TriggerId(1),
                target: "e2".into(),
                at: 2
            }
        ]
    );
}

#[test]
fn remote_statuses_become_outcomes_when_final() {
    let mut resource = trigger(&[&["e1"]]).status_resource();
    for (status, outcome) in [
        (TriggerStatus::Pending, None),
        (TriggerStatus::Active, None),
        (TriggerStatus::Cancelling, None),
        (TriggerStatus::Complete, Some(Outcome::Complete)),
        (TriggerStatus::Processed, Some(Outcome::Processed)),
        (TriggerStatus::Failed, Some(Outcome::Failed(Vec::new()))),
        (TriggerStatus::Cancelled, Some(Outcome::Cancelled)),
    ] {
        resource.status = status;
        assert_eq!(Outcome::from_remote(&resource), outcome, "{status:?}");
    }
}

#[test]
fn cascaded_commands_carry_our_pid() {
    let a: CdnPid = "AS64496:1".parse().unwrap();
    let b: CdnPid = "AS64500:1".parse().unwrap();
    let envelope = Envelope {
        cdn_path: CdnPath::new(vec![a]),
        ..Envelope::default()
    };
    let t = Trigger::accept(
        TriggerId(1),
        purge(),
        envelope,
        Vec::<Vec<TargetId>>::new(),
        1,
    );
    let command = t.cascaded_command(b);
    assert_eq!(command.envelope.cdn_path.pids(), &[a, b]);
    assert_eq!(command.action, Action::Trigger(purge()));
}

#[test]
fn each_target_is_sent_its_share_or_the_whole_command() {
    let share: wire::References =
        serde_json::from_value(json!({ "content.urls": ["https://e.com/a"] })).unwrap();
    let spec: TriggerSpec = serde_json::from_value(json!({
        "type": "purge",
        "content.urls": ["https://e.com/a", "https://f.com/b"],
    }))
    .unwrap();
    let shared = Assignment {
        target: "e1".into(),
        references: share.clone(),
    };
    let whole = Assignment::from(TargetId::from("e2"));
    let t = Trigger::accept(
        TriggerId(1),
        spec.clone(),
        Envelope::default(),
        vec![vec![shared, whole]],
        1,
    );
    assert_eq!(t.references_for(&"e1".into()), Some(&share));
    assert_eq!(t.references_for(&"e2".into()), Some(&spec.references));
    assert_eq!(t.references_for(&"e3".into()), None);
    // Shares are kept with the trigger.
    let kept: Trigger = serde_json::from_slice(&serde_json::to_vec(&t).unwrap()).unwrap();
    assert_eq!(kept.references_for(&"e1".into()), Some(&share));
}
