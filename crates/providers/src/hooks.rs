//! Publish hooks without I/O: what a call says, what an answer means, and when to try
//! again. `hook_client` is the HTTP shell around it.
//!
//! - [`Event`] is the JSON body of every hook (one shape; fields a hook has no value for
//!   are left out).
//! - [`publish_decision`]: `on_publish`'s answer → allow or deny, with the reason the
//!   publisher is told.
//! - [`notification_step`]: a notification's answer → delivered, try again after a
//!   delay ([`retry_delay`]), or give up.

use std::time::Duration;

use serde::Serialize;

/// The hooks a provider may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    OnPublish,
    OnUnpublish,
    OnRecordingEnded,
    OnArchived,
}

impl Hook {
    /// The hook's name in configuration, bodies, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Hook::OnPublish => "on_publish",
            Hook::OnUnpublish => "on_unpublish",
            Hook::OnRecordingEnded => "on_recording_ended",
            Hook::OnArchived => "on_archived",
        }
    }
}

/// Where an archived recording is stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArchiveLocation {
    /// `file:///...` or `s3://bucket`, then the recording's prefix, ending in `/`.
    pub url: String,
    /// The recording's prefix in the store (`<provider>/<stream>/<recording>`).
    pub prefix: String,
    /// The recording's playlist in the store.
    pub playlist: String,
}

/// The JSON body of a hook call. Every hook has `event_id`, `hook`, `provider`,
/// `stream`, `recording_id` and `at`; the others where they apply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// The same for every attempt of one event, and for `on_archived` the same across
    /// restarts: receivers can drop repeats by it.
    pub event_id: String,
    pub hook: Hook,
    pub provider: String,
    pub stream: String,
    /// The recording the publisher writes (a continued one keeps its id).
    pub recording_id: String,
    /// When the event happened (RFC 3339, UTC).
    pub at: String,
    /// The ingest server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The publisher's address (`ip:port`), for publish and unpublish.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Which key opened the publish: `provider` or `stream`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<&'static str>,
    /// Whether the publisher continues an earlier recording (a reconnect within the
    /// provider's `archive_after`, or a takeover from a dead server).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed: Option<bool>,
    /// The publish's start (`on_unpublish`) or the recording's (the others).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segments: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveLocation>,
    /// Where any edge plays the recording (`/<provider>/<stream>/<recording>/index.m3u8`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub playback: Option<String>,
}

impl Event {
    /// An event with the fields every hook has; `discriminator` tells events of one
    /// hook and recording apart (empty for `on_archived`, which happens once).
    pub fn new(
        hook: Hook,
        provider: &str,
        stream: &str,
        recording_id: &str,
        at: String,
        discriminator: &str,
    ) -> Self {
        let mut event_id = format!("{}:{provider}/{stream}/{recording_id}", hook.name());
        if !discriminator.is_empty() {
            event_id.push('@');
            event_id.push_str(discriminator);
        }
        Self {
            event_id,
            hook,
            provider: provider.to_owned(),
            stream: stream.to_owned(),
            recording_id: recording_id.to_owned(),
            at,
            node: None,
            client: None,
            key: None,
            resumed: None,
            started_at: None,
            ended_at: None,
            duration_secs: None,
            segments: None,
            bytes: None,
            archive: None,
            playback: None,
        }
    }
}

/// What came back from one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<'a> {
    /// An HTTP response, its body read whole.
    Response { status: u16, body: &'a [u8] },
    /// Nothing within the hook's timeout.
    TimedOut,
    /// No HTTP exchange at all (refused connection, reset, bad response).
    Failed,
}

/// What `on_publish`'s answer means for the publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishDecision {
    pub allow: bool,
    /// Told to the publisher (in the RTMP error status) and logged, when denied.
    pub reason: Option<String>,
    /// `streamcdn_hooks_total`'s `outcome`: `allow`, `deny`, `timeout_allow`,
    /// `timeout_deny`, `error_allow` or `error_deny`.
    pub outcome: &'static str,
}

/// The longest reason passed on to a publisher.
const MAX_REASON: usize = 200;

/// `on_publish`: a 2xx allows unless its body is JSON with `"allow": false`; any
/// other status denies. The reason is the JSON body's `reason`, else the first line of
/// a text body, else the status. No answer allows or denies as `deny_on_timeout` says.
pub fn publish_decision(answer: &Answer<'_>, deny_on_timeout: bool) -> PublishDecision {
    let (status, body) = match answer {
        Answer::Response { status, body } => (*status, *body),
        Answer::TimedOut | Answer::Failed => {
            let timed_out = matches!(answer, Answer::TimedOut);
            let outcome = match (timed_out, deny_on_timeout) {
                (true, true) => "timeout_deny",
                (true, false) => "timeout_allow",
                (false, true) => "error_deny",
                (false, false) => "error_allow",
            };
            return PublishDecision {
                allow: !deny_on_timeout,
                reason: deny_on_timeout.then(|| {
                    if timed_out {
                        "the publish hook did not answer in time".to_owned()
                    } else {
                        "the publish hook could not be reached".to_owned()
                    }
                }),
                outcome,
            };
        }
    };
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let json_reason = json
        .as_ref()
        .and_then(|j| j.get("reason"))
        .and_then(|r| r.as_str())
        .map(clean_reason)
        .filter(|r| !r.is_empty());
    let deny = |reason: String| PublishDecision {
        allow: false,
        reason: Some(reason),
        outcome: "deny",
    };
    if (200..300).contains(&status) {
        let allowed = json
            .as_ref()
            .and_then(|j| j.get("allow"))
            .and_then(|a| a.as_bool())
            .unwrap_or(true);
        if allowed {
            PublishDecision {
                allow: true,
                reason: None,
                outcome: "allow",
            }
        } else {
            deny(json_reason.unwrap_or_else(|| "refused by the publish hook".to_owned()))
        }
    } else {
        let text_reason = || {
            let text = String::from_utf8_lossy(body);
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            Some(clean_reason(first)).filter(|r| !r.is_empty() && json.is_none())
        };
        deny(
            json_reason
                .or_else(text_reason)
                .unwrap_or_else(|| format!("refused by the publish hook (HTTP {status})")),
        )
    }
}

/// A reason fit to send to a publisher and to log: printable, one line, bounded.
pub fn clean_reason(text: &str) -> String {
    let mut reason: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned();
    if reason.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    reason
}

/// What to do after a notification's attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A 2xx: done.
    Delivered,
    /// Try again after this long.
    RetryAfter(Duration),
    /// No more attempts; `streamcdn_hooks_total`'s `outcome`: `rejected` (a 4xx other
    /// than 408 and 429, which another attempt would not change) or `failed`.
    GiveUp(&'static str),
}

/// After attempt number `attempt` (1 for the first) of a notification allowed
/// `retries` further attempts: 2xx is delivered; a 4xx other than 408/429 is given up
/// at once; anything else (5xx, 408, 429, no answer) is tried again while attempts
/// remain.
pub fn notification_step(answer: &Answer<'_>, attempt: u32, retries: u32) -> Step {
    if let Answer::Response { status, .. } = answer {
        if (200..300).contains(status) {
            return Step::Delivered;
        }
        if (400..500).contains(status) && *status != 408 && *status != 429 {
            return Step::GiveUp("rejected");
        }
    }
    if attempt > retries {
        Step::GiveUp("failed")
    } else {
        Step::RetryAfter(retry_delay(attempt))
    }
}

/// The pause after failed attempt `attempt` (1 for the first): 1 s, doubling, at most
/// a minute.
pub fn retry_delay(attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(6);
    Duration::from_secs(1 << exponent).min(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> PublishDecision {
        publish_decision(
            &Answer::Response {
                status,
                body: body.as_bytes(),
            },
            true,
        )
    }

    #[test]
    fn a_2xx_allows_unless_its_json_says_otherwise() {
        for (status, body) in [
            (200, ""),
            (204, ""),
            (200, "ok"),
            (200, "{\"allow\": true}"),
            (201, "{\"reason\": \"ignored when allowed\"}"),
            (200, "{\"allow\": \"no\"}"),
        ] {
            let d = answer(status, body);
            assert_eq!(
                (d.allow, d.outcome, d.reason),
                (true, "allow", None),
                "{status} {body}"
            );
        }
        let d = answer(200, "{\"allow\": false, \"reason\": \"stream suspended\"}");
        assert_eq!((d.allow, d.outcome), (false, "deny"));
        assert_eq!(d.reason.as_deref(), Some("stream suspended"));
        let d = answer(200, "{\"allow\": false}");
        assert_eq!(d.reason.as_deref(), Some("refused by the publish hook"));
    }

    #[test]
    fn any_other_status_denies_with_the_best_reason_there_is() {
        let d = answer(403, "{\"allow\": false, \"reason\": \"unpaid\"}");
        assert_eq!((d.allow, d.reason.as_deref()), (false, Some("unpaid")));
        // A 403 that says allow is still a 403.
        assert!(!answer(403, "{\"allow\": true}").allow);
        let d = answer(403, "\n  banned until Monday\nsecond line\n");
        assert_eq!(d.reason.as_deref(), Some("banned until Monday"));
        let d = answer(500, "");
        assert_eq!(
            d.reason.as_deref(),
            Some("refused by the publish hook (HTTP 500)")
        );
        // JSON without a reason does not become the reason itself.
        let d = answer(401, "{\"error\": 1}");
        assert_eq!(
            d.reason.as_deref(),
            Some("refused by the publish hook (HTTP 401)")
        );
        assert!(!answer(302, "").allow && !answer(101, "").allow);
    }

    #[test]
    fn no_answer_allows_or_denies_as_configured() {
        for (answer, deny, outcome) in [
            (Answer::TimedOut, true, "timeout_deny"),
            (Answer::TimedOut, false, "timeout_allow"),
            (Answer::Failed, true, "error_deny"),
            (Answer::Failed, false, "error_allow"),
        ] {
            let d = publish_decision(&answer, deny);
            assert_eq!((d.allow, d.outcome), (!deny, outcome));
            assert_eq!(d.reason.is_some(), deny);
        }
        let d = publish_decision(&Answer::TimedOut, true);
        assert_eq!(
            d.reason.as_deref(),
            Some("the publish hook did not answer in time")
        );
    }

    #[test]
    fn reasons_are_one_bounded_printable_line() {
        assert_eq!(clean_reason("a\tb\r\nc\u{7}"), "a b  c");
        let long = "é".repeat(300);
        let cut = clean_reason(&long);
        assert!(cut.len() <= MAX_REASON && cut.chars().all(|c| c == 'é'));
        let d = answer(
            200,
            &format!("{{\"allow\": false, \"reason\": {:?}}}", "x".repeat(1000)),
        );
        assert_eq!(d.reason.unwrap().len(), MAX_REASON);
    }

    #[test]
    fn notifications_retry_with_backoff_then_give_up() {
        let ok = Answer::Response {
            status: 204,
            body: b"",
        };
        let unavailable = Answer::Response {
            status: 503,
            body: b"",
        };
        let not_found = Answer::Response {
            status: 404,
            body: b"",
        };
        let busy = Answer::Response {
            status: 429,
            body: b"",
        };
        assert_eq!(notification_step(&ok, 1, 2), Step::Delivered);
        assert_eq!(notification_step(&ok, 3, 2), Step::Delivered);
        assert_eq!(
            notification_step(&unavailable, 1, 2),
            Step::RetryAfter(Duration::from_secs(1))
        );
        assert_eq!(
            notification_step(&Answer::TimedOut, 2, 2),
            Step::RetryAfter(Duration::from_secs(2))
        );
        assert_eq!(
            notification_step(&Answer::Failed, 3, 2),
            Step::GiveUp("failed")
        );
        assert_eq!(
            notification_step(&busy, 1, 2),
            Step::RetryAfter(Duration::from_secs(1))
        );
        assert_eq!(
            notification_step(&not_found, 1, 2),
            Step::GiveUp("rejected")
        );
        assert_eq!(
            notification_step(&unavailable, 1, 0),
            Step::GiveUp("failed")
        );
        let delays: Vec<u64> = (1..=9).map(|a| retry_delay(a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn bodies_leave_out_what_a_hook_has_no_value_for() {
        let mut event = Event::new(
            Hook::OnPublish,
            "demo",
            "cam",
            "20250101T000000Z-ab",
            "2025-01-01T00:00:00.000Z".into(),
            "2025-01-01T00:00:00.000Z",
        );
        event.client = Some("192.0.2.1:50000".into());
        event.key = Some("stream");
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "event_id": "on_publish:demo/cam/20250101T000000Z-ab@2025-01-01T00:00:00.000Z",
                "hook": "on_publish",
                "provider": "demo",
                "stream": "cam",
                "recording_id": "20250101T000000Z-ab",
                "at": "2025-01-01T00:00:00.000Z",
                "client": "192.0.2.1:50000",
                "key": "stream",
            })
        );
        let archived = Event::new(Hook::OnArchived, "demo", "cam", "r", "t".into(), "");
        assert_eq!(archived.event_id, "on_archived:demo/cam/r");
    }
}
