//! Parsing and writing the CI/T objects of RFC 8007 §5, from the RFC's own examples
//! (§6) and from what the RFC says a dCDN must refuse.

use serde_json::{json, Value};
use streamcdn_cdni::pattern::PatternError;
use streamcdn_cdni::pid::PidError;
use streamcdn_cdni::wire::{Problem, MAX_BODY_BYTES, MAX_ENTRIES};
use streamcdn_cdni::*;

const COMMAND: Option<&str> = Some("application/cdni; ptype=ci-trigger-command");

fn us() -> CdnPid {
    "AS64496:0".parse().unwrap()
}

fn parse(body: &Value) -> Result<Command, WireError> {
    parse_command(COMMAND, body.to_string().as_bytes(), us())
}

fn problem(body: Value) -> (String, Problem) {
    match parse(&body) {
        Err(WireError::Invalid { field, problem }) => (field, problem),
        other => panic!("expected an invalid field, got {other:?}"),
    }
}

fn trigger(body: Value) -> TriggerSpec {
    match parse(&body).unwrap().action {
        Action::Trigger(spec) => spec,
        Action::Cancel(_) => panic!("not a trigger"),
    }
}

/// §6.1.1, byte for byte.
const PREPOSITION: &str = r#"{
       "trigger": {
         "type": "preposition",

         "metadata.urls": [ "https://metadata.example.com/a/b/c" ],
         "content.urls": [
             "https://www.example.com/a/b/c/1",
             "https://www.example.com/a/b/c/2",
             "https://www.example.com/a/b/c/3",
             "https://www.example.com/a/b/c/4"
           ]
       },
       "cdn-path": [ "AS64496:1" ]
     }"#;

#[test]
fn rfc_preposition_example() {
    let command = parse_command(COMMAND, PREPOSITION.as_bytes(), us()).unwrap();
    assert_eq!(
        command.envelope.cdn_path.pids(),
        &["AS64496:1".parse().unwrap()]
    );
    let Action::Trigger(spec) = command.action else {
        panic!("not a trigger")
    };
    assert_eq!(spec.trigger_type, TriggerType::Preposition);
    assert_eq!(
        spec.references.metadata_urls.as_deref(),
        Some(&["https://metadata.example.com/a/b/c".to_owned()][..])
    );
    assert_eq!(spec.references.content_urls.as_ref().map(Vec::len), Some(4));
    // The status resource of §6.1.1: the same Trigger Specification, `pending`.
    let trigger = Trigger::accept(
        TriggerId(0),
        spec,
        Envelope::default(),
        vec![vec![TargetId::from("edge-1")]],
        1462351690,
    );
    let status: Value = serde_json::from_slice(&trigger.status_resource().to_json()).unwrap();
    assert_eq!(
        status,
        json!({
            "ctime": 1462351690, "mtime": 1462351690, "status": "pending",
            "trigger": {
                "content.urls": [
                    "https://www.example.com/a/b/c/1", "https://www.example.com/a/b/c/2",
                    "https://www.example.com/a/b/c/3", "https://www.example.com/a/b/c/4"
                ],
                "metadata.urls": ["https://metadata.example.com/a/b/c"],
                "type": "preposition"
            }
        })
    );
}

#[test]
fn rfc_invalidate_example() {
    let spec = trigger(json!({
        "trigger": {
            "type": "invalidate",
            "metadata.patterns": [{ "pattern": "https://metadata.example.com/a/b/*" }],
            "content.urls": ["https://www.example.com/a/index.html"],
            "content.patterns": [{ "pattern": "https://www.example.com/a/b/*", "case-sensitive": true }]
        },
        "cdn-path": ["AS64496:1"]
    }));
    assert_eq!(spec.trigger_type, TriggerType::Invalidate);
    let content = &spec.references.content_patterns.as_ref().unwrap()[0];
    assert!(content.case_sensitive && !content.match_query_string);
    assert!(!spec.references.metadata_patterns.as_ref().unwrap()[0].case_sensitive);
    // Written back as §6.1.2's response has it: absent flags stay absent.
    let written: Value = serde_json::to_value(&spec).unwrap();
    assert_eq!(
        written["metadata.patterns"],
        json!([{ "pattern": "https://metadata.example.com/a/b/*" }])
    );
    assert_eq!(
        written["content.patterns"][0]["case-sensitive"],
        json!(true)
    );
}

#[test]
fn rfc_error_report_example_parses() {
    // §6.2.6, as the uCDN side polls it.
    let body = json!({
        "ctime": 1462351702,
        "errors": [{
            "content.urls": ["https://newsite.example.com/index.html"],
            "description": "newsite.example.com not in HostIndex",
            "error": "emeta"
        }],
        "etime": 1462351710, "mtime": 1462351706, "status": "active",
        "trigger": { "content.urls": ["https://newsite.example.com/index.html"], "type": "preposition" }
    });
    let status = parse_status(
        Some("application/cdni; ptype=ci-trigger-status"),
        body.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(status.status, TriggerStatus::Active);
    assert_eq!(
        (status.ctime, status.mtime, status.etime),
        (1462351702, 1462351706, Some(1462351710))
    );
    assert_eq!(status.errors[0].error, ErrorCode::Emeta);
    assert_eq!(
        status.errors[0].description.as_deref(),
        Some("newsite.example.com not in HostIndex")
    );
}

#[test]
fn rfc_collection_example_parses() {
    // §6.2.1
    let body = json!({
        "cdn-id": "AS64496:0",
        "coll-active": "/triggers/active", "coll-complete": "/triggers/complete",
        "coll-failed": "/triggers/failed", "coll-pending": "/triggers/pending",
        "staleresourcetime": 86400,
        "triggers": ["https://dcdn.example.com/triggers/0", "https://dcdn.example.com/triggers/1"]
    });
    let collection = parse_collection(
        Some("application/cdni; ptype=ci-trigger-collection"),
        body.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(collection.cdn_id, Some(us()));
    assert_eq!(collection.staleresourcetime, Some(86400));
    assert_eq!(collection.triggers.len(), 2);
}

#[test]
fn errata_spellings_are_written_and_both_are_read() {
    let status = |status: &str, error: &str| {
        let body = json!({
            "trigger": { "type": "purge", "content.urls": ["https://e.com/a"] },
            "ctime": 1.5, "mtime": 2, "status": status,
            "errors": [{ "error": error, "content.urls": ["https://e.com/a"] }]
        });
        parse_status(
            Some("application/cdni; ptype=ci-trigger-status"),
            body.to_string().as_bytes(),
        )
        .unwrap()
    };
    let old = status("canceled", "ecanceled");
    assert_eq!(old.status, TriggerStatus::Cancelled);
    assert_eq!(old.errors[0].error, ErrorCode::Ecancelled);
    assert_eq!(old.ctime, 1);
    assert_eq!(
        status("canceling", "ecancelled").status,
        TriggerStatus::Cancelling
    );
    let written: Value = serde_json::from_slice(&old.to_json()).unwrap();
    assert_eq!(
        (
            written["status"].as_str(),
            written["errors"][0]["error"].as_str()
        ),
        (Some("cancelled"), Some("ecancelled"))
    );
    assert_eq!(
        serde_json::to_value(TriggerStatus::Cancelling).unwrap(),
        json!("cancelling")
    );
    // An error code we do not know is kept as it is (§5.2.7: fatal, not retried).
    assert_eq!(
        status("failed", "eweird").errors[0].error,
        ErrorCode::Unknown("eweird".into())
    );
}

#[test]
fn unknown_trigger_type_is_accepted_and_fails_with_eunsupported() {
    // §5.2.2: not a 400, a `failed` Trigger Status Resource.
    let spec = trigger(json!({
        "trigger": { "type": "warm", "content.urls": ["https://e.com/a"] },
        "cdn-path": ["AS64496:1"]
    }));
    assert_eq!(spec.trigger_type, TriggerType::Unsupported("warm".into()));
    let trigger = Trigger::accept(
        TriggerId(7),
        spec,
        Envelope::default(),
        vec![vec![TargetId::from("edge")]],
        100,
    );
    assert_eq!(trigger.status(), TriggerStatus::Failed);
    assert_eq!(trigger.errors()[0].error, ErrorCode::Eunsupported);
    assert_eq!(
        trigger.errors()[0].references.content_urls,
        Some(vec!["https://e.com/a".to_owned()])
    );
    // Uppercase is not the registered name (§5: names and values are lowercase).
    let upper = trigger_of("Purge");
    assert_eq!(upper.trigger_type, TriggerType::Unsupported("Purge".into()));
}

fn trigger_of(trigger_type: &str) -> TriggerSpec {
    trigger(
        json!({ "trigger": { "type": trigger_type, "content.urls": ["https://e.com/a"] }, "cdn-path": ["AS1:1"] }),
    )
}

#[test]
fn media_type_is_checked() {
    let body = PREPOSITION.as_bytes();
    for good in [
        "application/cdni; ptype=ci-trigger-command",
        "Application/CDNI;ptype=\"ci-trigger-command\"",
        "application/cdni; charset=utf-8; ptype=ci-trigger-command",
    ] {
        assert!(parse_command(Some(good), body, us()).is_ok(), "{good}");
    }
    for bad in [
        None,
        Some("application/json"),
        Some("application/cdni"),
        Some("application/cdni; ptype=ci-trigger-status"),
        Some("application/cdni; ptype=CI-TRIGGER-COMMAND"),
    ] {
        let error = parse_command(bad, body, us()).unwrap_err();
        assert_eq!(error.http_status(), 415, "{bad:?}: {error}");
    }
}

#[test]
fn malformed_json_is_a_400_naming_where() {
    let error = parse_command(COMMAND, b"{\"trigger\": ", us()).unwrap_err();
    assert_eq!(error.http_status(), 400);
    let error = parse(&json!({ "trigger": { "type": "purge", "content.urls": ["https://e.com/a", 5] }, "cdn-path": ["AS1:1"] }))
        .unwrap_err();
    let WireError::Json { path, message } = &error else {
        panic!("{error:?}")
    };
    assert!(
        message.starts_with("content.urls: invalid type: integer `5`"),
        "{path}: {message}"
    );
    assert_eq!(error.http_status(), 400);
    // Trailing bytes after the object.
    let mut body = PREPOSITION.as_bytes().to_vec();
    body.extend_from_slice(b" {}");
    assert_eq!(
        parse_command(COMMAND, &body, us())
            .unwrap_err()
            .http_status(),
        400
    );
    // `null` is not an array.
    let error = parse(
        &json!({ "trigger": { "type": "purge", "content.urls": null }, "cdn-path": ["AS1:1"] }),
    )
    .unwrap_err();
    assert!(matches!(error, WireError::Json { .. }), "{error:?}");
}

#[test]
fn exactly_one_of_trigger_and_cancel() {
    let both = json!({ "trigger": { "type": "purge", "content.urls": ["https://e.com/a"] },
        "cancel": ["https://dcdn.example.com/triggers/0"], "cdn-path": ["AS1:1"] });
    assert_eq!(
        problem(both),
        ("trigger".into(), Problem::NotExactlyOneAction)
    );
    assert_eq!(
        problem(json!({ "cdn-path": ["AS1:1"] })),
        ("trigger".into(), Problem::NotExactlyOneAction)
    );
    assert_eq!(
        problem(json!({ "cancel": [], "cdn-path": ["AS1:1"] })),
        ("cancel".into(), Problem::Empty)
    );
    let cancel =
        parse(&json!({ "cancel": ["https://dcdn.example.com/triggers/0"], "cdn-path": ["AS1:1"] }))
            .unwrap();
    assert_eq!(
        cancel.action,
        Action::Cancel(vec!["https://dcdn.example.com/triggers/0".into()])
    );
}

#[test]
fn cdn_path_is_mandatory_well_formed_and_loop_free() {
    let spec = json!({ "type": "purge", "content.urls": ["https://e.com/a"] });
    assert_eq!(
        problem(json!({ "trigger": spec })),
        ("cdn-path".into(), Problem::Missing)
    );
    assert_eq!(
        problem(json!({ "trigger": spec, "cdn-path": [] })),
        ("cdn-path".into(), Problem::Empty)
    );
    assert_eq!(
        problem(json!({ "trigger": spec, "cdn-path": ["AS1:1", "as2:2"] })),
        (
            "cdn-path[1]".into(),
            Problem::Pid(PidError::NoAsPrefix("as2:2".into()))
        )
    );
    let looped =
        parse(&json!({ "trigger": spec, "cdn-path": ["AS64500:1", "AS64496:0", "AS64501:1"] }))
            .unwrap_err();
    assert_eq!(looped, WireError::Loop(us()));
    assert_eq!(looped.http_status(), 400);
    let hops: Vec<String> = (0..33).map(|i| format!("AS{i}:1")).collect();
    assert_eq!(
        problem(json!({ "trigger": spec, "cdn-path": hops })),
        ("cdn-path".into(), Problem::PathTooLong)
    );
}

#[test]
fn trigger_specification_rules() {
    let with = |spec: Value| json!({ "trigger": spec, "cdn-path": ["AS1:1"] });
    let untyped = parse(&with(json!({ "content.urls": ["https://e.com/a"] }))).unwrap_err();
    assert!(
        matches!(&untyped, WireError::Json { path, message } if path == "trigger" && message.contains("`type`")),
        "{untyped}"
    );
    assert_eq!(
        problem(with(
            json!({ "type": "purge", "content.urls": [], "metadata.urls": [] })
        )),
        ("trigger".into(), Problem::NothingToActOn)
    );
    assert_eq!(
        problem(with(
            json!({ "type": "preposition", "content.urls": ["https://e.com/a"], "content.patterns": [] })
        )),
        (
            "trigger.content.patterns".into(),
            Problem::PatternWithPreposition
        )
    );
    assert_eq!(
        problem(with(
            json!({ "type": "preposition", "metadata.patterns": [{ "pattern": "https://e.com/*" }] })
        )),
        (
            "trigger.metadata.patterns".into(),
            Problem::PatternWithPreposition
        )
    );
    assert_eq!(
        problem(with(
            json!({ "type": "purge", "content.patterns": [{ "pattern": "https://e.com/*" }, { "pattern": "https://e.com/$x" }] })
        )),
        (
            "trigger.content.patterns[1].pattern".into(),
            Problem::Pattern(PatternError::BadEscape(14))
        )
    );
    assert_eq!(
        problem(with(
            json!({ "type": "purge", "content.urls": ["https://e.com/a", "ftp://e.com/a"] })
        )),
        ("trigger.content.urls[1]".into(), Problem::NotHttpUrl)
    );
    for bad in [
        "https://",
        "https:///a",
        "e.com/a",
        "https://e.com/a b",
        "https://e.com/\n",
    ] {
        assert_eq!(
            problem(with(json!({ "type": "purge", "metadata.urls": [bad] }))).1,
            Problem::NotHttpUrl,
            "{bad:?}"
        );
    }
    assert_eq!(
        problem(with(json!({ "type": "purge", "content.ccid": [""] }))),
        ("trigger.content.ccid[0]".into(), Problem::Empty)
    );
    let long = format!("https://e.com/{}", "a".repeat(9000));
    assert_eq!(
        problem(with(json!({ "type": "purge", "content.urls": [long] }))).1,
        Problem::TooLong
    );
    let many: Vec<String> = (0..=MAX_ENTRIES)
        .map(|i| format!("https://e.com/{i}"))
        .collect();
    assert_eq!(
        problem(with(json!({ "type": "purge", "content.urls": many }))).1,
        Problem::TooManyEntries
    );
    // A ccid alone is enough, and so is a pattern.
    assert!(parse(&with(json!({ "type": "purge", "content.ccid": ["news"] }))).is_ok());
    assert!(parse(&with(
        json!({ "type": "invalidate", "content.patterns": [{ "pattern": "https://e.com/*" }] })
    ))
    .is_ok());
}

#[test]
fn oversize_bodies_are_refused_before_parsing() {
    let body = vec![b' '; MAX_BODY_BYTES + 1];
    let error = parse_command(COMMAND, &body, us()).unwrap_err();
    assert_eq!(
        (error.http_status(), error),
        (413, WireError::TooLarge(MAX_BODY_BYTES + 1))
    );
}

#[test]
fn unknown_properties_are_passed_on_when_cascading() {
    // §5: ignored in processing, passed on to further dCDNs.
    let command = parse(&json!({
        "trigger": { "type": "purge", "content.urls": ["https://e.com/a"], "x-priority": 3 },
        "cdn-path": ["AS64500:1"],
        "x-note": { "why": "takedown" }
    }))
    .unwrap();
    let cascaded: Value = serde_json::from_slice(&command.cascaded_by(us()).to_json()).unwrap();
    assert_eq!(
        cascaded,
        json!({
            "trigger": { "type": "purge", "content.urls": ["https://e.com/a"], "x-priority": 3 },
            "cdn-path": ["AS64500:1", "AS64496:0"],
            "x-note": { "why": "takedown" }
        })
    );
}

#[test]
fn unknown_numbers_are_passed_on_exactly() {
    // serde_json's default float parser can be one unit in the last place off, so a
    // number in an unknown property changed at every hop and a command written back
    // no longer parsed to itself (found writing the `cdni_trigger` fuzz target's checks).
    let body = r#"{"trigger": {"type": "purge", "content.urls": ["https://e.com/a"],
        "x-weight": 6.162599865641032e196}, "cdn-path": ["AS64500:1"],
        "x-ratio": 1.947700395895162e-169}"#;
    let command = parse_command(COMMAND, body.as_bytes(), us()).unwrap();
    let Action::Trigger(spec) = &command.action else {
        panic!("not a trigger")
    };
    assert_eq!(
        spec.extensions["x-weight"].as_f64(),
        Some("6.162599865641032e196".parse().unwrap())
    );
    assert_eq!(
        command.envelope.extensions["x-ratio"].as_f64(),
        Some("1.947700395895162e-169".parse().unwrap())
    );
    assert_eq!(
        parse_command(COMMAND, &command.to_json(), us()),
        Ok(command.clone())
    );
    let cascaded = parse_command(
        COMMAND,
        &command.cascaded_by(us()).to_json(),
        "AS1:1".parse().unwrap(),
    )
    .unwrap();
    assert_eq!(cascaded.envelope.extensions, command.envelope.extensions);
}

#[test]
fn operator_commands_start_here() {
    let body =
        json!({ "trigger": { "type": "purge", "content.urls": ["https://e.com/a"] } }).to_string();
    let command = parse_operator_command(COMMAND, body.as_bytes()).unwrap();
    assert!(command.envelope.cdn_path.pids().is_empty());
    let sent: Value = serde_json::from_slice(&command.cascaded_by(us()).to_json()).unwrap();
    assert_eq!(sent["cdn-path"], json!(["AS64496:0"]));
}
