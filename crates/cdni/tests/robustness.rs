//! Seeded random tests (the seed is printed; `CDNI_SEED=<seed>` replays a run):
//! random event sequences never bring a trigger into a state the RFC forbids, and no
//! input, however mangled, makes a parser panic.

use serde_json::{json, Value};
use streamcdn_cdni::trigger::{Finish, MAX_ERRORS};
use streamcdn_cdni::wire::References;
use streamcdn_cdni::*;

struct Rng(u64);

impl Rng {
    fn from_env(test: &str) -> (Rng, u64) {
        let seed = std::env::var("CDNI_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        println!("{test}: seed {seed} (replay with CDNI_SEED={seed})");
        (Rng(seed | 1), seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const TARGETS: [&str; 6] = ["t0", "t1", "t2", "t3", "t4", "t5"];

fn random_event(rng: &mut Rng) -> Event {
    let target = TargetId::from(*rng.pick(&TARGETS));
    match rng.below(9) {
        0 => Event::Start,
        1 | 2 => {
            let outcome = match rng.below(4) {
                0 => Outcome::Complete,
                1 => Outcome::Processed,
                2 => Outcome::Cancelled,
                _ => Outcome::Failed(vec![ErrorDescription {
                    error: ErrorCode::Ecdn,
                    references: References::default(),
                    description: None,
                }]),
            };
            Event::Reported { target, outcome }
        }
        3 => Event::Unreachable { target },
        4 | 5 => Event::RetryDue { target },
        6 => Event::Cancel,
        7 => Event::Estimated {
            etime: rng.next() % 10_000,
        },
        _ => Event::Resumed,
    }
}

/// What the RFC allows, given the targets.
fn check(trigger: &Trigger, stage_of: &dyn Fn(&TargetId) -> usize, context: &str) {
    let states: Vec<(usize, TargetState)> =
        trigger.targets().map(|(id, s)| (stage_of(id), s)).collect();
    let finished = |s: &TargetState| matches!(s, TargetState::Finished(_));
    let all = |f: &dyn Fn(&TargetState) -> bool| states.iter().all(|(_, s)| f(s));
    let any = |f: &dyn Fn(&TargetState) -> bool| states.iter().any(|(_, s)| f(s));
    let in_flight = |s: &TargetState| matches!(s, TargetState::InFlight { .. });
    let is = |finish: Finish| move |s: &TargetState| *s == TargetState::Finished(finish);
    let ok = match trigger.status() {
        TriggerStatus::Pending => !states.is_empty() && all(&|s| *s == TargetState::Queued),
        TriggerStatus::Active => !all(&finished) && !all(&|s| *s == TargetState::Queued),
        TriggerStatus::Complete => all(&is(Finish::Complete)),
        TriggerStatus::Processed => {
            all(&finished)
                && any(&is(Finish::Processed))
                && !any(&is(Finish::Failed))
                && !any(&is(Finish::Cancelled))
        }
        TriggerStatus::Failed => {
            all(&finished) && (any(&is(Finish::Failed)) || any(&is(Finish::Cancelled)))
        }
        TriggerStatus::Cancelling => any(&in_flight),
        TriggerStatus::Cancelled => !any(&in_flight) && any(&is(Finish::Cancelled)),
    };
    assert!(
        ok,
        "{context}: status {:?} with targets {states:?}",
        trigger.status()
    );
    // A later stage is only ever started once every earlier stage has finished.
    for (stage, state) in &states {
        if !matches!(
            state,
            TargetState::Queued | TargetState::Finished(Finish::Cancelled)
        ) {
            let earlier_unfinished = states.iter().any(|(s, st)| s < stage && !finished(st));
            assert!(
                !earlier_unfinished,
                "{context}: stage {stage} started early: {states:?}"
            );
        }
    }
    assert!(trigger.mtime() >= trigger.ctime(), "{context}");
    assert!(trigger.errors().len() <= MAX_ERRORS, "{context}");
}

#[test]
fn random_event_sequences_keep_triggers_valid() {
    let (mut rng, seed) = Rng::from_env("random_event_sequences_keep_triggers_valid");
    let spec: TriggerSpec = serde_json::from_value(
        json!({ "type": "invalidate", "content.urls": ["https://e.com/a"] }),
    )
    .unwrap();
    for run in 0..3_000 {
        let stages: Vec<Vec<TargetId>> = (0..rng.below(4))
            .map(|_| {
                (0..rng.below(4))
                    .map(|_| TargetId::from(*rng.pick(&TARGETS)))
                    .collect()
            })
            .collect();
        let first_stage = |id: &TargetId| {
            stages
                .iter()
                .position(|s| s.contains(id))
                .unwrap_or(usize::MAX)
        };
        let mut now = 1_000 + rng.below(1_000) as u64;
        let mut trigger = Trigger::accept(
            TriggerId(run),
            spec.clone(),
            Envelope::default(),
            stages.clone(),
            now,
        );
        check(
            &trigger,
            &first_stage,
            &format!("seed {seed} run {run} at creation"),
        );
        for step in 0..60 {
            let context = format!("seed {seed} run {run} step {step}");
            let before = (trigger.status(), trigger.mtime());
            // The clock mostly moves on, and sometimes jumps back.
            now = if rng.below(8) == 0 {
                now.saturating_sub(rng.below(500) as u64)
            } else {
                now + rng.below(30) as u64
            };
            let event = random_event(&mut rng);
            let effects = trigger.on_event(event.clone(), now);
            check(
                &trigger,
                &first_stage,
                &format!("{context} after {event:?}"),
            );
            assert!(trigger.mtime() >= before.1, "{context}: mtime went back");
            let status = trigger.status();
            match before.0 {
                TriggerStatus::Complete | TriggerStatus::Failed | TriggerStatus::Cancelled => {
                    assert_eq!(status, before.0, "{context}: a finished trigger changed")
                }
                TriggerStatus::Processed => {
                    assert!(
                        matches!(status, TriggerStatus::Processed | TriggerStatus::Cancelled),
                        "{context}"
                    )
                }
                _ => {}
            }
            if matches!(status, TriggerStatus::Cancelling | TriggerStatus::Cancelled) {
                let sends = effects
                    .iter()
                    .any(|e| matches!(e, Effect::SendToTarget { .. }));
                assert!(!sends, "{context}: sent after cancel: {effects:?}");
            }
            let resource = trigger.status_resource();
            let reparsed = parse_status(
                Some("application/cdni; ptype=ci-trigger-status"),
                &resource.to_json(),
            );
            assert_eq!(reparsed.as_ref(), Ok(&resource), "{context}");
        }
    }
}

fn seeds() -> Vec<Value> {
    vec![
        json!({ "trigger": { "type": "preposition", "metadata.urls": ["https://m.example.com/a"],
            "content.urls": ["https://www.example.com/a/b/c/1"] }, "cdn-path": ["AS64496:1"] }),
        json!({ "trigger": { "type": "invalidate", "metadata.patterns": [{ "pattern": "https://m.example.com/a/b/*" }],
            "content.patterns": [{ "pattern": "https://e.com/a/$?x*", "case-sensitive": true, "match-query-string": true }] },
            "cdn-path": ["AS64496:1", "AS1:2"], "x": [1, {"y": null}] }),
        json!({ "cancel": ["https://cis.b.test/triggers/1"], "cdn-path": ["AS64496:1"] }),
        json!({ "trigger": { "type": "purge", "content.ccid": ["news"] }, "cdn-path": ["AS64496:1"] }),
        json!({ "ctime": 1462351702, "errors": [{ "content.urls": ["https://n.example.com/"], "error": "emeta" }],
            "etime": 1.5, "mtime": 1462351706, "status": "active",
            "trigger": { "content.urls": ["https://n.example.com/"], "type": "preposition" } }),
        json!({ "cdn-id": "AS64496:0", "coll-active": "/triggers/active", "staleresourcetime": 86400,
            "triggers": ["https://dcdn.example.com/triggers/0"] }),
    ]
}

fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    const PIECES: [&[u8]; 14] = [
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"",
        b",",
        b":",
        b"null",
        b"-1e999",
        b"\\u0000",
        b"\"AS:\"",
        b"$",
        b"*",
        b"\"type\":\"purge\"",
    ];
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(5) {
            0 if !bytes.is_empty() => {
                let i = at.min(bytes.len() - 1);
                bytes[i] = rng.next() as u8;
            }
            1 => bytes
                .splice(at..at, rng.pick(&PIECES).iter().copied())
                .for_each(drop),
            2 => bytes.truncate(at),
            3 if !bytes.is_empty() => {
                let end = (at + rng.below(20)).min(bytes.len());
                bytes.drain(at.min(end)..end);
            }
            _ => {
                let end = (at + rng.below(40)).min(bytes.len());
                let copy = bytes[at.min(end)..end].to_vec();
                bytes.splice(at..at, copy).for_each(drop);
            }
        }
    }
}

#[test]
fn mangled_and_random_input_never_panics() {
    let (mut rng, seed) = Rng::from_env("mangled_and_random_input_never_panics");
    let us: CdnPid = "AS64500:0".parse().unwrap();
    let seeds: Vec<Vec<u8>> = seeds().iter().map(|v| v.to_string().into_bytes()).collect();
    let mut accepted = 0;
    for case in 0..30_000 {
        let mut body = if rng.below(10) == 0 {
            (0..rng.below(64)).map(|_| rng.next() as u8).collect()
        } else {
            rng.pick(&seeds).clone()
        };
        mutate(&mut rng, &mut body);
        let context = format!(
            "seed {seed} case {case}: {}",
            String::from_utf8_lossy(&body)
        );
        for payload in ["ci-trigger-status", "ci-trigger-collection"] {
            let content_type = format!("application/cdni; ptype={payload}");
            let _ = parse_status(Some(&content_type), &body);
            let _ = parse_collection(Some(&content_type), &body);
        }
        let _ = parse_operator_command(Some("application/cdni; ptype=ci-trigger-command"), &body);
        match parse_command(
            Some("application/cdni; ptype=ci-trigger-command"),
            &body,
            us,
        ) {
            Ok(command) => {
                accepted += 1;
                // What we accept we can pass on, and the next CDN reads it as we do.
                let next: CdnPid = "AS64501:0".parse().unwrap();
                let cascaded = command.cascaded_by(us);
                let reread = parse_command(
                    Some("application/cdni; ptype=ci-trigger-command"),
                    &cascaded.to_json(),
                    next,
                );
                assert_eq!(reread.as_ref(), Ok(&cascaded), "{context}");
                if let Action::Trigger(spec) = &command.action {
                    for pattern in spec.references.content_patterns.iter().flatten() {
                        let _ = pattern.matches("https://e.com/a/?x=1");
                    }
                    let mut trigger = Trigger::accept(
                        TriggerId(0),
                        spec.clone(),
                        command.envelope,
                        vec![vec![TargetId::from("t")]],
                        1,
                    );
                    trigger.on_event(Event::Start, 2);
                    let _ = trigger.status_resource().to_json();
                }
            }
            Err(error) => assert!(
                [400, 413, 415].contains(&error.http_status()),
                "{context}: {error}"
            ),
        }
    }
    println!("{accepted} mangled commands were still valid");
}
