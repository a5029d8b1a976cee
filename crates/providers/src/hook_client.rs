//! The HTTP shell of the providers' hooks ([`crate::hooks`] decides): a JSON `POST`
//! per call, bounded by the hook's timeout; `on_publish` asked once and waited for,
//! notifications retried with backoff in the background, never in the way of media.
//! Metric: `streamcdn_hooks_total{hook,outcome}`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, USER_AGENT};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use streamcdn_config::{HooksConfig, ProviderConfig};
use streamcdn_support::http_client::{error_chain, ClientOptions};
use tokio::sync::Notify;

use crate::hooks::{self, Answer, Event, Hook, PublishDecision, Step};

/// The most of an answer's body read (a reason fits in far less).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The hooks of every provider; cheap to clone.
#[derive(Clone)]
pub struct Hooks {
    client: Client<HttpConnector, Full<Bytes>>,
    by_provider: Arc<HashMap<String, HooksConfig>>,
    in_flight: Arc<InFlight>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URLs: they may carry credentials.
        let mut providers: Vec<&String> = self.by_provider.keys().collect();
        providers.sort();
        f.debug_struct("Hooks")
            .field("providers", &providers)
            .finish_non_exhaustive()
    }
}

/// Notifications being sent, for [`Hooks::drain`].
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// How a notification ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// `delivered`, `rejected` or `failed` (see [`hooks::Step`]).
    pub outcome: &'static str,
    pub attempts: u32,
}

/// What one call brought back.
enum Reply {
    Response(u16, Bytes),
    TimedOut,
    Failed(String),
}

impl Reply {
    fn answer(&self) -> Answer<'_> {
        match self {
            Reply::Response(status, body) => Answer::Response {
                status: *status,
                body,
            },
            Reply::TimedOut => Answer::TimedOut,
            Reply::Failed(_) => Answer::Failed,
        }
    }

    /// For logs: the status, or what went wrong.
    fn describe(&self) -> String {
        match self {
            Reply::Response(status, _) => format!("HTTP {status}"),
            Reply::TimedOut => "no answer in time".to_owned(),
            Reply::Failed(e) => e.clone(),
        }
    }
}

impl Hooks {
    pub fn new(providers: &[ProviderConfig]) -> Self {
        // One connection per call (no idle one kept): hooks are rare, and a hook server
        // need not keep connections alive.
        let client = ClientOptions::new().client();
        Self {
            client,
            by_provider: Arc::new(
                providers
                    .iter()
                    .filter_map(|p| Some((p.name.clone(), p.hooks.clone()?)))
                    .collect(),
            ),
            in_flight: Arc::default(),
        }
    }

    /// The provider's URL for `hook`, with its settings.
    fn url(&self, provider: &str, hook: Hook) -> Option<(&str, &HooksConfig)> {
        let config = self.by_provider.get(provider)?;
        let url = match hook {
            Hook::OnPublish => &config.on_publish,
            Hook::OnUnpublish => &config.on_unpublish,
            Hook::OnRecordingEnded => &config.on_recording_ended,
            Hook::OnArchived => &config.on_archived,
        };
        Some((url.as_deref()?, config))
    }

    /// Whether the provider has set `hook`.
    pub fn has(&self, provider: &str, hook: Hook) -> bool {
        self.url(provider, hook).is_some()
    }

    /// Asks the provider's `on_publish` whether this publisher may go live; `None` when
    /// the provider has no such hook.
    pub async fn on_publish(&self, event: &Event) -> Option<PublishDecision> {
        let (url, config) = self.url(&event.provider, Hook::OnPublish)?;
        let started = Instant::now();
        let reply = self.call(url, config.timeout, event).await;
        let decision = hooks::publish_decision(&reply.answer(), config.deny_on_timeout);
        metrics::counter!("streamcdn_hooks_total", "hook" => Hook::OnPublish.name(), "outcome" => decision.outcome)
            .increment(1);
        let ms = started.elapsed().as_millis() as u64;
        if decision.allow {
            tracing::info!(hook = "on_publish", provider = event.provider, stream = event.stream, outcome = decision.outcome, answer = %reply.describe(), ms, "publish hook allowed the publisher");
        } else {
            tracing::warn!(hook = "on_publish", provider = event.provider, stream = event.stream, outcome = decision.outcome, answer = %reply.describe(), reason = decision.reason.as_deref().unwrap_or_default(), ms, "publish hook denied the publisher");
        }
        Some(decision)
    }

    /// Sends a notification in the background, retried with backoff; nothing waits
    /// for it. Nothing happens if the provider has not set the hook.
    pub fn notify(&self, event: Event) {
        if !self.has(&event.provider, event.hook) {
            return;
        }
        self.in_flight.count.fetch_add(1, Ordering::AcqRel);
        let guard = InFlightGuard(self.in_flight.clone());
        let hooks = self.clone();
        tokio::spawn(async move {
            let _guard = guard;
            hooks.deliver(&event).await;
        });
    }

    /// Sends a notification and waits until it is delivered or given up (retries with
    /// backoff); `None` when the provider has not set the hook.
    pub async fn deliver(&self, event: &Event) -> Option<Delivery> {
        let (url, config) = self.url(&event.provider, event.hook)?;
        let hook = event.hook.name();
        let mut attempt = 1;
        loop {
            let reply = self.call(url, config.timeout, event).await;
            let step = hooks::notification_step(&reply.answer(), attempt, config.retries);
            let outcome = match step {
                Step::Delivered => "delivered",
                Step::GiveUp(outcome) => outcome,
                Step::RetryAfter(pause) => {
                    tracing::info!(hook, provider = event.provider, stream = event.stream, recording = event.recording_id, attempt, answer = %reply.describe(), retry_in_ms = pause.as_millis() as u64, "hook not delivered; will retry");
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                    continue;
                }
            };
            metrics::counter!("streamcdn_hooks_total", "hook" => hook, "outcome" => outcome)
                .increment(1);
            if outcome == "delivered" {
                tracing::info!(
                    hook,
                    provider = event.provider,
                    stream = event.stream,
                    recording = event.recording_id,
                    attempts = attempt,
                    "hook delivered"
                );
            } else {
                tracing::warn!(hook, provider = event.provider, stream = event.stream, recording = event.recording_id, attempts = attempt, outcome, answer = %reply.describe(), "hook given up");
            }
            return Some(Delivery {
                outcome,
                attempts: attempt,
            });
        }
    }

    /// Waits (at most `limit`) for the notifications in the background to finish: at
    /// shutdown, after the publishers have ended.
    pub async fn drain(&self, limit: Duration) {
        let idle = async {
            loop {
                let notified = self.in_flight.idle.notified();
                if self.in_flight.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(limit, idle).await.is_err() {
            tracing::warn!(
                pending = self.in_flight.count.load(Ordering::Acquire),
                "shutting down with hook notifications not yet delivered"
            );
        }
    }

    /// One `POST` of `event` to `url`, the answer's body read whole, all within
    /// `timeout`.
    async fn call(&self, url: &str, timeout: Duration, event: &Event) -> Reply {
        let body = match serde_json::to_vec(event) {
            Ok(body) => body,
            Err(e) => return Reply::Failed(format!("cannot encode the event: {e}")),
        };
        let request = hyper::Request::post(url)
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("streamcdn/", env!("CARGO_PKG_VERSION")))
            .header("x-streamcdn-hook", event.hook.name())
            .header("x-streamcdn-event", &event.event_id)
            .body(Full::new(Bytes::from(body)));
        let request = match request {
            Ok(r) => r,
            Err(e) => return Reply::Failed(format!("invalid request: {e}")),
        };
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| error_chain(&e))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok((status, body))) => Reply::Response(status, body),
            Ok(Err(e)) => Reply::Failed(e),
            Err(_) => Reply::TimedOut,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::Event;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A hook server answering each connection with the next of `answers` (`None`:
    /// never), recording the requests.
    async fn server(answers: Vec<Option<&'static str>>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            for answer in answers {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Head and the (small) body: until the body's length is in.
                while !String::from_utf8_lossy(&request).contains("}") {
                    let n = socket.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                record
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&request).into_owned());
                match answer {
                    Some(status_and_body) => {
                        let (status, body) = status_and_body.split_once(' ').unwrap();
                        let response = format!(
                            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        socket.write_all(response.as_bytes()).await.unwrap();
                    }
                    None => {
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            drop(socket);
                        });
                    }
                }
            }
        });
        (url, seen)
    }

    fn hooks(url: &str, timeout_ms: u64) -> Hooks {
        Hooks::new(&[ProviderConfig {
            name: "p".into(),
            stream_key: "provider-key".into(),
            hooks: Some(HooksConfig {
                on_publish: Some(url.to_owned()),
                on_unpublish: Some(url.to_owned()),
                timeout: Duration::from_millis(timeout_ms),
                retries: 1,
                ..HooksConfig::default()
            }),
            ..ProviderConfig::default()
        }])
    }

    fn event(hook: Hook) -> Event {
        Event::new(hook, "p", "s", "r1", "t".into(), "t")
    }

    #[tokio::test]
    async fn publish_answers_and_silence_become_decisions() {
        let (url, seen) = server(vec![
            Some("200 {\"allow\": false, \"reason\": \"no\"}"),
            None,
        ])
        .await;
        let hooks = hooks(&url, 300);
        let decision = hooks.on_publish(&event(Hook::OnPublish)).await.unwrap();
        assert_eq!(
            (decision.allow, decision.reason.as_deref()),
            (false, Some("no"))
        );
        let decision = hooks.on_publish(&event(Hook::OnPublish)).await.unwrap();
        assert_eq!(decision.outcome, "timeout_deny");
        let request = seen.lock().unwrap()[0].clone();
        assert!(request.starts_with("POST /hook HTTP/1.1\r\n"), "{request}");
        assert!(request
            .to_ascii_lowercase()
            .contains("content-type: application/json"));
        assert!(
            request.contains("\"event_id\":\"on_publish:p/s/r1@t\""),
            "{request}"
        );
        // No hook for a provider that set none.
        let none = Hooks::new(&[]);
        assert!(none.on_publish(&event(Hook::OnPublish)).await.is_none());
    }

    #[tokio::test]
    async fn notifications_are_retried_then_delivered() {
        let (url, seen) = server(vec![Some("503 busy"), Some("204 ")]).await;
        let hooks = hooks(&url, 2000);
        let delivery = hooks.deliver(&event(Hook::OnUnpublish)).await.unwrap();
        assert_eq!(
            delivery,
            Delivery {
                outcome: "delivered",
                attempts: 2
            }
        );
        assert_eq!(seen.lock().unwrap().len(), 2);
        // In the background: drain waits for it.
        let (url, seen) = server(vec![Some("200 ok")]).await;
        let hooks = self::hooks(&url, 2000);
        hooks.notify(event(Hook::OnUnpublish));
        hooks.drain(Duration::from_secs(5)).await;
        assert_eq!(seen.lock().unwrap().len(), 1);
        assert_eq!(hooks.in_flight.count.load(Ordering::Acquire), 0);
    }
}
