//! The CIS without sockets: commands, the answers of servers and partners and timers
//! go in with an explicit `now`; the actions that come out are checked.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use streamcdn_cdni::wire::PayloadType;
use streamcdn_cdni::StatusResource;
use streamcdn_registry::NodeRecord;

use super::*;

const A: &str = "AS64496:1";
const B: &str = "AS64497:1";
const TOP: &str = "http://top:1/_streamcdn/control?tier=top";
const MID: &str = "http://mid:1/_streamcdn/control?tier=mid";
const EDGE: &str = "http://edge:1/_streamcdn/control?tier=edge";
const URL: &str = "http://live.a.test/p/s/000001.m4s";

fn pid(text: &str) -> CdnPid {
    text.parse().unwrap()
}

fn node(id: &str, control: &str) -> NodeRecord {
    let mut node = NodeRecord::ingest(id, "c1", "");
    node.addresses.control = Some(control.into());
    node
}

/// Participant A owns `live-a` (delegated to B); three servers, one per tier.
fn participant() -> Participant {
    Participant {
        us: pid(A),
        own: vec![OwnConfiguration {
            id: "live-a".into(),
            hostnames: vec!["live.a.test".into()],
            origin: "http://origin.a.test".into(),
            max_ttl_secs: None,
        }],
        partners: BTreeMap::from([(pid(B), vec!["live-a".into()])]),
    }
}

fn world() -> World {
    World {
        deployments: Vec::new(),
        nodes: vec![node("e", EDGE), node("m", MID), node("t", TOP)],
    }
}

fn operator() -> Caller {
    Caller {
        who: pid(A),
        interface: Interface::Admin,
        base: "http://admin/api/v1/triggers".into(),
        path: "/api/v1/triggers",
    }
}

fn command(cis: &mut Cis, caller: &Caller, body: Value, now: Millis) -> Answer {
    let body = serde_json::to_vec(&body).unwrap();
    let content_type = Some(PayloadType::Command.content_type());
    cis.command(caller, content_type, &body, Ok(&world()), now)
}

fn purge(cis: &mut Cis, now: Millis) -> TriggerId {
    let answer = command(
        cis,
        &operator(),
        json!({ "trigger": { "type": "purge", "content.urls": [URL] } }),
        now,
    );
    let Answer::Status {
        status: 201,
        location: Some(location),
        ..
    } = answer
    else {
        panic!("{answer:?}");
    };
    assert!(
        location.starts_with("http://admin/api/v1/triggers/"),
        "{location}"
    );
    trigger_named(path_of(&location).rsplit('/').next().unwrap()).unwrap()
}

fn actions(cis: &mut Cis) -> Vec<Action> {
    std::iter::from_fn(|| cis.poll_action()).collect()
}

/// The control addresses the actions ask, in order.
fn asked(actions: &[Action]) -> Vec<&str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Control { control, .. } => Some(control.as_str()),
            _ => None,
        })
        .collect()
}

fn status(cis: &Cis, id: TriggerId) -> TriggerStatus {
    cis.collection().get(pid(A), id).unwrap().status()
}

fn server(control: &str) -> TargetId {
    TargetId::server(control, None)
}

fn ok(trigger: TriggerId) -> Result<ControlReply, String> {
    Ok(ControlReply {
        trigger_id: trigger.0.to_string(),
        purged: 1,
        ..ControlReply::default()
    })
}

fn remote(status: &str) -> PollAnswer {
    let resource: StatusResource = serde_json::from_value(json!({
        "trigger": { "type": "purge", "content.urls": [URL] },
        "ctime": 1, "mtime": 2, "status": status,
    }))
    .unwrap();
    PollAnswer::Status {
        status: Box::new(resource),
        etag: Some(format!("\"{status}\"")),
    }
}

/// Runs a purge through the top and mid tiers, to where the edge and the partner
/// have been sent theirs.
fn purge_to_the_last_stage(cis: &mut Cis) -> (TriggerId, Vec<Action>) {
    let id = purge(cis, 1_000);
    let first = actions(cis);
    assert_eq!(asked(&first), [TOP], "the top tier goes first");
    assert_eq!(status(cis, id), TriggerStatus::Active);
    cis.server_answered(id, server(TOP), ok(id), 1_100);
    assert_eq!(asked(&actions(cis)), [MID], "then the mid-tier");
    cis.server_answered(id, server(MID), ok(id), 1_200);
    (id, actions(cis))
}

#[test]
fn tiers_are_staged_top_then_mid_then_edge() {
    let mut cis = Cis::open(participant(), None).unwrap();
    let (id, last) = purge_to_the_last_stage(&mut cis);
    assert_eq!(asked(&last), [EDGE], "then the edges");
    let Some(Action::Control { order, .. }) =
        last.iter().find(|a| matches!(a, Action::Control { .. }))
    else {
        panic!("{last:?}");
    };
    assert_eq!(order.urls, [URL]);
    assert_eq!(order.operation, Operation::Purge);
    assert_eq!(order.configuration, None);
    // Partners come with the edges.
    assert!(last
        .iter()
        .any(|a| matches!(a, Action::CommandPartner { partner, .. } if *partner == pid(B))));
    cis.server_answered(id, server(EDGE), ok(id), 1_300);
    assert_eq!(
        status(&cis, id),
        TriggerStatus::Active,
        "the partner is not done"
    );
}

#[test]
fn an_unreachable_server_is_retried_at_its_time() {
    let mut cis = Cis::open(participant(), None).unwrap();
    let id = purge(&mut cis, 5_000);
    actions(&mut cis);
    cis.server_answered(id, server(TOP), Err("refused".into()), 5_100);
    let retry = actions(&mut cis);
    assert_eq!(
        retry,
        [Action::WakeAt {
            trigger: id,
            target: server(TOP),
            at: 6_000
        }]
    );
    cis.retry_due(id, server(TOP), 6_000);
    assert_eq!(asked(&actions(&mut cis)), [TOP]);
}

#[test]
fn partners_get_their_share_and_are_polled_to_the_end() {
    let mut cis = Cis::open(participant(), None).unwrap();
    let (id, last) = purge_to_the_last_stage(&mut cis);
    let Some(Action::CommandPartner {
        target, command, ..
    }) = last
        .iter()
        .find(|a| matches!(a, Action::CommandPartner { .. }))
        .cloned()
    else {
        panic!("{last:?}");
    };
    assert_eq!(target, TargetId::Partner(pid(B)));
    let sent: Value = serde_json::from_slice(&command.to_json()).unwrap();
    assert_eq!(sent["cdn-path"], json!([A]), "we append ourselves");
    assert_eq!(sent["trigger"]["content.urls"], json!([URL]));
    cis.server_answered(id, server(EDGE), ok(id), 1_300);

    let location = "https://b.test/cdni/v1/triggers/7".to_owned();
    cis.partner_commanded(
        id,
        target.clone(),
        PartnerAnswer::Created(location.clone()),
        1_400,
    );
    let poll = |after: Duration, etag: Option<&str>| Action::PollPartner {
        trigger: id,
        target: target.clone(),
        partner: pid(B),
        location: location.clone(),
        etag: etag.map(str::to_owned),
        after,
    };
    assert_eq!(actions(&mut cis), [poll(Duration::ZERO, None)]);
    cis.partner_polled(id, target.clone(), remote("active"), 1_500);
    assert_eq!(actions(&mut cis), [poll(POLL_FIRST, Some("\"active\""))]);
    cis.partner_polled(id, target.clone(), PollAnswer::NotModified, 1_600);
    assert_eq!(
        actions(&mut cis),
        [poll(POLL_FIRST.mul_f32(1.5), Some("\"active\""))]
    );
    assert_eq!(status(&cis, id), TriggerStatus::Active);
    cis.partner_polled(id, target.clone(), remote("complete"), 1_700);
    assert!(actions(&mut cis).is_empty());
    assert_eq!(status(&cis, id), TriggerStatus::Complete);
}

#[test]
fn a_partner_that_refuses_fails_the_trigger() {
    let mut cis = Cis::open(participant(), None).unwrap();
    let (id, _) = purge_to_the_last_stage(&mut cis);
    cis.server_answered(id, server(EDGE), ok(id), 1_300);
    let refused = PartnerAnswer::Refused("AS64497:1 refused the command (403)".into());
    cis.partner_commanded(id, TargetId::Partner(pid(B)), refused, 1_400);
    assert_eq!(status(&cis, id), TriggerStatus::Failed);
}

#[test]
fn a_cancel_stops_what_is_queued_and_asks_the_partner() {
    let mut cis = Cis::open(participant(), None).unwrap();
    let (id, _) = purge_to_the_last_stage(&mut cis);
    let location = "https://b.test/cdni/v1/triggers/7";
    cis.partner_commanded(
        id,
        TargetId::Partner(pid(B)),
        PartnerAnswer::Created(location.into()),
        1_300,
    );
    actions(&mut cis);
    let url = format!("http://other-host/api/v1/triggers/{}", id.0);
    let answer = command(&mut cis, &operator(), json!({ "cancel": [url] }), 1_400);
    // The edge and the partner are in flight: cancelling until they answer.
    assert_eq!(
        answer,
        Answer::Problem {
            status: 202,
            text: "cancelled".into()
        }
    );
    assert_eq!(status(&cis, id), TriggerStatus::Cancelling);
    let cancels = actions(&mut cis);
    let [Action::CancelAtPartner {
        partner,
        command: sent,
    }] = cancels.as_slice()
    else {
        panic!("{cancels:?}");
    };
    assert_eq!(*partner, pid(B));
    let sent: Value = serde_json::from_slice(sent).unwrap();
    assert_eq!(sent, json!({ "cancel": [location], "cdn-path": [A] }));
    cis.server_answered(id, server(EDGE), ok(id), 1_500);
    cis.partner_polled(id, TargetId::Partner(pid(B)), remote("cancelled"), 1_600);
    assert_eq!(status(&cis, id), TriggerStatus::Cancelled);
    // Cancelling something else's, or nothing, is refused.
    let answer = command(
        &mut cis,
        &operator(),
        json!({ "cancel": ["http://admin/api/v1/triggers/99"] }),
        1_700,
    );
    assert!(
        matches!(answer, Answer::Problem { status: 404, .. }),
        "{answer:?}"
    );
}

#[test]
fn a_restart_resumes_from_what_was_kept() {
    let mut cis = Cis::open(participant(), None).unwrap();
    let (id, _) = purge_to_the_last_stage(&mut cis);
    let location = "https://b.test/cdni/v1/triggers/7";
    cis.partner_commanded(
        id,
        TargetId::Partner(pid(B)),
        PartnerAnswer::Created(location.into()),
        1_300,
    );
    let kept = cis.snapshot(1_300).expect("changed");
    assert_eq!(cis.snapshot(1_300), None, "nothing changed since");
    // The kept form is the one before typed targets: text ids, `remote` by them.
    let text: Value = serde_json::from_slice(&kept).unwrap();
    assert_eq!(
        text["remote"],
        json!({ format!("{}|cdni:{B}", id.0): location })
    );

    let mut restarted = Cis::open(participant(), Some(&kept)).unwrap();
    assert_eq!(status(&restarted, id), TriggerStatus::Active);
    assert_eq!(restarted.resume(2_000), 2);
    let resumed = actions(&mut restarted);
    // The edge is asked again; the partner, which has the command, is only polled.
    assert_eq!(asked(&resumed), [EDGE]);
    assert!(resumed.iter().any(|a| matches!(
        a,
        Action::PollPartner { location: l, after, .. } if l == location && after.is_zero()
    )));
    assert!(!resumed
        .iter()
        .any(|a| matches!(a, Action::CommandPartner { .. })));
    restarted.server_answered(id, server(EDGE), ok(id), 2_100);
    restarted.partner_polled(id, TargetId::Partner(pid(B)), remote("complete"), 2_200);
    assert_eq!(status(&restarted, id), TriggerStatus::Complete);
}

#[test]
fn partners_command_only_what_they_delegated_and_see_no_addresses() {
    let mut cis = Cis::open(participant(), None).unwrap();
    let partner = Caller {
        who: pid(B),
        interface: Interface::Federation,
        base: "https://a.test/cdni/v1/triggers".into(),
        path: "/cdni/v1/triggers",
    };
    // Our own configuration: B may not command it.
    let answer = command(
        &mut cis,
        &partner,
        json!({ "trigger": { "type": "purge", "content.urls": [URL] }, "cdn-path": [B] }),
        1_000,
    );
    let Answer::Status { rendered, .. } = answer else {
        panic!("{answer:?}");
    };
    let body: Value = serde_json::from_slice(&rendered.body).unwrap();
    assert_eq!(body["status"], "failed");
    assert_eq!(body["errors"][0]["error"], "eperm");
    // A cdn-path that does not end with the sender is refused.
    let answer = command(
        &mut cis,
        &partner,
        json!({ "trigger": { "type": "purge", "content.urls": [URL] }, "cdn-path": [A] }),
        1_000,
    );
    assert!(
        matches!(answer, Answer::Problem { status: 400, .. }),
        "{answer:?}"
    );

    // B's configuration carried by our mid server: the target names the cache.
    let mut carried = world();
    carried
        .deployments
        .push(streamcdn_registry::DeploymentRecord {
            configuration: "live-b".into(),
            owner: B.into(),
            delegated_by: B.into(),
            hostnames: vec!["live.b.test".into()],
            origin: "http://origin.b.test".into(),
            servers: vec!["m".into()],
            delegated_to: Vec::new(),
            max_ttl_secs: None,
        });
    let body = serde_json::to_vec(&json!({
        "trigger": { "type": "invalidate", "content.urls": ["http://live.b.test/x/y/1.m4s"] },
        "cdn-path": [B],
    }))
    .unwrap();
    let content_type = Some(PayloadType::Command.content_type());
    let answer = cis.command(&partner, content_type, &body, Ok(&carried), 1_000);
    let Answer::Status {
        location: Some(location),
        ..
    } = answer
    else {
        panic!("{answer:?}");
    };
    let id = trigger_named(location.rsplit('/').next().unwrap()).unwrap();
    let sent = actions(&mut cis);
    let [Action::Control { control, order, .. }] = sent.as_slice() else {
        panic!("{sent:?}");
    };
    assert_eq!(control, MID);
    assert_eq!(order.configuration.as_deref(), Some("live-b"));
    assert_eq!(order.operation, Operation::Invalidate);
    assert_eq!(
        cis.servers(&partner, id).unwrap(),
        [("mid server 1".to_owned(), "sent")]
    );
    assert_eq!(
        cis.servers(&operator(), id).err(),
        Some(Answer::Problem {
            status: 403,
            text: "the trigger belongs to another CDN".into()
        })
    );
}

#[test]
fn a_registry_that_cannot_be_read_refuses_triggers_not_cancels() {
    let mut cis = Cis::open(participant(), None).unwrap();
    let body =
        serde_json::to_vec(&json!({ "trigger": { "type": "purge", "content.urls": [URL] } }))
            .unwrap();
    let content_type = Some(PayloadType::Command.content_type());
    let answer = cis.command(&operator(), content_type, &body, Err("down"), 1_000);
    assert_eq!(
        answer,
        Answer::Problem {
            status: 503,
            text: "node directory unavailable: down".into()
        }
    );
    assert!(
        cis.collection()
            .render_collection(pid(A), View::All, "x")
            .body
            .len()
            > 2
    );
    assert_eq!(cis.snapshot(1_000), None, "nothing was accepted");
}
