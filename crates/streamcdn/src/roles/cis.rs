//! The command invocation system (CIS) of this participant, for its own operator: the
//! admin API takes RFC 8007 CI/T commands (`POST /api/v1/triggers`), runs each on every
//! server carrying the local default configuration (every edge and mid-tier in the node
//! directory announces a `control` address) through their control endpoint
//! ([`super::control`]), top tier first, then mid-tier, then edges, retrying servers
//! that are down, and reports the RFC's status resources and collections.
//!
//! The state machine is `streamcdn_cdni`'s `Collection`; this is its shell: the clock,
//! the HTTP calls, the retry timers, and `<data_dir>/cis/triggers.json` (written
//! atomically after every change, read at start, so a restart resumes every trigger).
//! A target is named by its control URL, so a server that comes back at the same
//! address completes what it missed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use streamcdn_cdni::collection::{trigger_id_from_url, trigger_url};
use streamcdn_cdni::wire::{AbsoluteTime, PayloadType, References};
use streamcdn_cdni::{
    parse_operator_command, Action, CdnPid, Collection, Effect, ErrorCode, ErrorDescription, Event,
    Outcome, TargetId, TargetState, TriggerId, TriggerSpec, TriggerStatus, TriggerType, View,
};
use streamcdn_edge::control::{ControlReply, ControlRequest, Operation};
use streamcdn_registry::Registry;
use streamcdn_router::probe::ProbeKey;

use super::control::{self, Tier, CONTROL_HEADER};
use crate::clock::now_ms;
use crate::context::{Context, Role};

/// The local participant's id until participants are configured (issue 11, item 1):
/// a documentation ASN (RFC 5398).
pub const LOCAL_PARTICIPANT: &str = "AS64496:1";
pub const TRIGGERS_PATH: &str = "/api/v1/triggers";
/// How long one control request may take (a preposition fetches every segment).
const SEND_TIMEOUT: Duration = Duration::from_secs(120);

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// The CIS's (and the CLI's) HTTP client. No idle connections kept: edges count open
/// connections as viewers.
pub fn client() -> Client {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector)
}

/// One HTTP exchange, the body read whole (bounded by `timeout`).
pub async fn call(
    client: &Client,
    method: Method,
    url: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
    timeout: Duration,
) -> anyhow::Result<(StatusCode, HeaderMap, Bytes)> {
    let mut request = hyper::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let request = request.body(Full::new(Bytes::from(body)))?;
    let exchange = async {
        let response = client.request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        anyhow::Ok((parts.status, parts.headers, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .with_context(|| format!("{url}: no answer within {timeout:?}"))?
}

fn now_secs() -> AbsoluteTime {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub struct CisRole;

impl Role for CisRole {
    fn announced_as(&self) -> Option<streamcdn_registry::Role> {
        None
    }

    fn start<'a>(self: Box<Self>, ctx: &'a mut Context) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let dir = ctx.config.node.data_dir.join("cis");
            let cis = Cis::open(
                dir,
                ctx.registry.clone(),
                crate::context::probe_key(&ctx.registry).await?,
            )
            .await?;
            let effects = {
                let mut state = cis.lock();
                state.resume(now_secs())
            };
            tracing::info!(file = %cis.file.display(), resumed = effects.len(), "command invocation system ready");
            cis.run(effects);
            ctx.add_admin_routes(routes(cis));
            Ok(())
        })
    }
}

struct Cis {
    us: CdnPid,
    state: Mutex<Collection>,
    file: PathBuf,
    /// Changes made to `state`, counted; a change counts before its persist is asked.
    changes: AtomicU64,
    /// Orders the writes of `file` and holds the change count the file has reached:
    /// a write finds the ones queued behind it already kept (one write for a burst of
    /// server reports).
    written: tokio::sync::Mutex<u64>,
    registry: Registry,
    key: ProbeKey,
    client: Client,
    /// When each trigger of this run was accepted, for the time to its final status.
    accepted: Mutex<HashMap<TriggerId, Instant>>,
}

impl Cis {
    async fn open(dir: PathBuf, registry: Registry, key: ProbeKey) -> anyhow::Result<Arc<Cis>> {
        let us: CdnPid = LOCAL_PARTICIPANT
            .parse()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let file = dir.join("triggers.json");
        let loaded = tokio::task::spawn_blocking({
            let file = file.clone();
            move || -> anyhow::Result<Option<Collection>> {
                std::fs::create_dir_all(dir.as_path())
                    .with_context(|| format!("creating {}", dir.display()))?;
                match std::fs::read(&file) {
                    Ok(bytes) => Ok(Some(
                        serde_json::from_slice(&bytes)
                            .with_context(|| format!("reading {}", file.display()))?,
                    )),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
                }
            }
        })
        .await??;
        let state = loaded.unwrap_or_else(|| {
            Collection::new(us, streamcdn_cdni::collection::DEFAULT_STALE_AFTER_SECS)
        });
        Ok(Arc::new(Cis {
            us,
            state: Mutex::new(state),
            file,
            changes: AtomicU64::new(0),
            written: tokio::sync::Mutex::new(0),
            registry,
            key,
            client: client(),
            accepted: Mutex::new(HashMap::new()),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Collection> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the collection (temp file, fsync, rename, fsync of the directory) unless
    /// a write that began after the caller's change already did.
    async fn persist(&self) -> anyhow::Result<()> {
        let wanted = self.changes.fetch_add(1, Ordering::SeqCst) + 1;
        let mut written = self.written.lock().await;
        if *written >= wanted {
            return Ok(());
        }
        let (json, reached) = {
            let mut state = self.lock();
            state.expire(now_secs());
            (
                serde_json::to_vec(&*state)?,
                self.changes.load(Ordering::SeqCst),
            )
        };
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || write_atomically(&file, &json)).await??;
        *written = reached;
        Ok(())
    }

    /// Applies an event of our side, keeps it, and carries out what follows.
    async fn on_event(self: &Arc<Self>, id: TriggerId, event: Event) {
        let effects = {
            let mut state = self.lock();
            let status = |state: &Collection| {
                state
                    .get(self.us, id)
                    .map(|t| (t.status(), t.spec().trigger_type.clone()))
            };
            let before = status(&state).ok();
            let effects = state.on_event(id, event, now_secs());
            if let (Some((was, _)), Ok((now, kind))) = (before, status(&state)) {
                if !was.is_final() && now.is_final() {
                    // Counted under the lock: whoever reads the final status also
                    // finds it in the metrics.
                    self.count_finished(id, now, &kind);
                }
            }
            effects
        };
        if let Err(e) = self.persist().await {
            tracing::error!(error = %e, "cannot keep the triggers");
        }
        self.run(effects);
    }

    fn count_finished(&self, id: TriggerId, status: TriggerStatus, kind: &TriggerType) {
        let status = format!("{status:?}").to_lowercase();
        let accepted = self
            .accepted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Some(accepted) = accepted {
            metrics::histogram!("streamcdn_cis_trigger_duration_seconds", "type" => kind.as_str().to_owned())
                .record(accepted.elapsed().as_secs_f64());
        }
        tracing::info!(trigger = id.0, %status, "trigger finished");
        metrics::counter!("streamcdn_cis_triggers_finished_total", "status" => status).increment(1);
    }

    fn run(self: &Arc<Self>, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::SendToTarget { trigger, target } => {
                    let cis = self.clone();
                    tokio::spawn(async move { cis.send(trigger, target).await });
                }
                Effect::RetryAt {
                    trigger,
                    target,
                    at,
                } => {
                    let cis = self.clone();
                    let wait = Duration::from_secs(at.saturating_sub(now_secs()));
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        cis.on_event(trigger, Event::RetryDue { target }).await;
                    });
                }
                // A server's operation is over when it answers; the answer in flight
                // closes the target.
                Effect::CancelAtTarget { .. } => {}
            }
        }
    }

    async fn send(self: &Arc<Self>, trigger: TriggerId, target: TargetId) {
        let request = {
            let state = self.lock();
            let Ok(found) = state.get(self.us, trigger) else {
                return;
            };
            control_request(trigger, found.spec())
        };
        let event = match self.post(&target.0, &request).await {
            Ok(reply) => {
                metrics::counter!("streamcdn_cis_sends_total", "outcome" => "done").increment(1);
                let outcome = if reply.errors.is_empty() {
                    Outcome::Complete
                } else {
                    Outcome::Failed(
                        reply
                            .errors
                            .iter()
                            .map(|e| ErrorDescription {
                                error: ErrorCode::Econtent,
                                references: References::default(),
                                description: Some(format!("{}: {e}", target.0)),
                            })
                            .collect(),
                    )
                };
                Event::Reported { target, outcome }
            }
            Err(e) => {
                metrics::counter!("streamcdn_cis_sends_total", "outcome" => "unreachable")
                    .increment(1);
                tracing::warn!(trigger = trigger.0, server = %target.0, error = %e, "server not reached; retrying");
                Event::Unreachable { target }
            }
        };
        self.on_event(trigger, event).await;
    }

    async fn post(&self, url: &str, request: &ControlRequest) -> anyhow::Result<ControlReply> {
        let (body, tag) = control::signed(&self.key, request)?;
        let headers = [
            (CONTROL_HEADER, tag),
            ("content-type", "application/json".into()),
        ];
        let (status, _, answer) = call(
            &self.client,
            Method::POST,
            url,
            &headers,
            body,
            SEND_TIMEOUT,
        )
        .await?;
        anyhow::ensure!(
            status == StatusCode::OK,
            "{url} answered {status}: {}",
            String::from_utf8_lossy(&answer).trim()
        );
        Ok(serde_json::from_slice(&answer)?)
    }

    /// Every server carrying the local default configuration, in stages by tier.
    async fn targets(&self) -> anyhow::Result<Vec<Vec<TargetId>>> {
        let nodes = self.registry.nodes().await?;
        Ok(stages(
            nodes
                .into_iter()
                .filter_map(|node| node.addresses.get("control").cloned()),
        ))
    }
}

/// Control addresses grouped by tier, top tier first, each address once.
fn stages(addresses: impl Iterator<Item = String>) -> Vec<Vec<TargetId>> {
    let mut servers: Vec<(Tier, String)> =
        addresses.map(|url| (Tier::of_address(&url), url)).collect();
    servers.sort();
    servers.dedup();
    let mut stages: Vec<Vec<TargetId>> = Vec::new();
    let mut last = None;
    for (tier, url) in servers {
        if last != Some(tier) {
            stages.push(Vec::new());
            last = Some(tier);
        }
        if let Some(stage) = stages.last_mut() {
            stage.push(TargetId(url));
        }
    }
    stages
}

/// What one server is asked for a trigger: its content URLs and patterns. `metadata.*`
/// names configuration metadata, which the local default configuration's servers do not
/// cache; `content.ccid` has no objects here either.
fn control_request(trigger: TriggerId, spec: &TriggerSpec) -> ControlRequest {
    let operation = match spec.trigger_type {
        TriggerType::Purge => Operation::Purge,
        TriggerType::Invalidate => Operation::Invalidate,
        // Unsupported types are refused at creation and never sent.
        TriggerType::Preposition | TriggerType::Unsupported(_) => Operation::Preposition,
    };
    ControlRequest {
        trigger_id: trigger.0.to_string(),
        operation,
        urls: spec.references.content_urls.clone().unwrap_or_default(),
        patterns: spec.references.content_patterns.clone().unwrap_or_default(),
        issued_at_ms: now_ms(),
        nonce: rand::random(),
    }
}

fn write_atomically(file: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let temp = file.with_extension("json.tmp");
    let mut out = std::fs::File::create(&temp)?;
    out.write_all(bytes)?;
    out.sync_all()?;
    std::fs::rename(&temp, file)?;
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn routes(cis: Arc<Cis>) -> axum::Router {
    axum::Router::new()
        .route(TRIGGERS_PATH, get(collection_all).post(command))
        .route(
            &format!("{TRIGGERS_PATH}/{{item}}"),
            get(item).delete(delete),
        )
        .route(&format!("{TRIGGERS_PATH}/{{item}}/servers"), get(servers))
        .with_state(cis)
}

/// The absolute URL of the collection, as the client reached us: status resource URLs
/// and cancel commands are absolute URLs (§5.1.1).
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}{TRIGGERS_PATH}")
}

fn problem(status: u16, text: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, format!("{text}\n")).into_response()
}

fn rendered(
    payload: PayloadType,
    found: streamcdn_cdni::Rendered,
    request: &HeaderMap,
    status: StatusCode,
) -> Response {
    let current = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| found.is_current(tags));
    let mut response = if current && status == StatusCode::OK {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (status, found.body).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(payload.content_type()),
    );
    if let Ok(etag) = HeaderValue::try_from(found.etag) {
        headers.insert(header::ETAG, etag);
    }
    response
}

async fn command(State(cis): State<Arc<Cis>>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let command = match parse_operator_command(content_type, &body) {
        Ok(c) => c,
        Err(e) => {
            metrics::counter!("streamcdn_cis_commands_total", "type" => "invalid").increment(1);
            return problem(e.http_status(), e.to_string());
        }
    };
    let base = base_url(&headers);
    let now = now_secs();
    match command.action {
        Action::Cancel(urls) => {
            metrics::counter!("streamcdn_cis_commands_total", "type" => "cancel").increment(1);
            // By path: the client may have reached us under another host name.
            let paths: Vec<String> = urls.iter().map(|u| path_of(u).to_owned()).collect();
            let reply = cis.lock().cancel(cis.us, &paths, TRIGGERS_PATH, now);
            match reply {
                Ok(reply) => {
                    if let Err(e) = cis.persist().await {
                        return problem(500, format!("cannot keep the triggers: {e}"));
                    }
                    let status = reply.http_status();
                    cis.run(reply.effects);
                    problem(status, "cancelled".into())
                }
                Err(e) => problem(e.http_status(), e.to_string()),
            }
        }
        Action::Trigger(spec) => {
            metrics::counter!("streamcdn_cis_commands_total", "type" => spec.trigger_type.as_str().to_owned())
                .increment(1);
            let stages = match cis.targets().await {
                Ok(stages) => stages,
                Err(e) => return problem(503, format!("node directory unavailable: {e}")),
            };
            let id = cis
                .lock()
                .accept(cis.us, spec, command.envelope, stages, now);
            cis.accepted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, Instant::now());
            // Kept before anything is sent: a crash from here on loses nothing.
            if let Err(e) = cis.persist().await {
                return problem(500, format!("cannot keep the triggers: {e}"));
            }
            cis.on_event(id, Event::Start).await;
            let Ok(found) = cis.lock().render_status(cis.us, id) else {
                return problem(500, "the trigger vanished".into());
            };
            let mut response = rendered(
                PayloadType::Status,
                found,
                &HeaderMap::new(),
                StatusCode::CREATED,
            );
            if let Ok(location) = HeaderValue::try_from(trigger_url(&base, id)) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
    }
}

/// The path of an absolute URL (or the text itself if it has no scheme).
fn path_of(url: &str) -> &str {
    match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => url,
    }
}

async fn collection_all(State(cis): State<Arc<Cis>>, headers: HeaderMap) -> Response {
    let found = cis
        .lock()
        .render_collection(cis.us, View::All, &base_url(&headers));
    rendered(PayloadType::Collection, found, &headers, StatusCode::OK)
}

fn view_named(name: &str) -> Option<View> {
    Some(match name {
        "pending" => View::Pending,
        "active" => View::Active,
        "complete" => View::Complete,
        "failed" => View::Failed,
        _ => return None,
    })
}

fn trigger_named(item: &str) -> Option<TriggerId> {
    trigger_id_from_url(TRIGGERS_PATH, &format!("{TRIGGERS_PATH}/{item}"))
}

async fn item(
    State(cis): State<Arc<Cis>>,
    Path(item): Path<String>,
    headers: HeaderMap,
) -> Response {
    let base = base_url(&headers);
    if let Some(view) = view_named(&item) {
        let found = cis.lock().render_collection(cis.us, view, &base);
        return rendered(PayloadType::Collection, found, &headers, StatusCode::OK);
    }
    let Some(id) = trigger_named(&item) else {
        return problem(404, "no such trigger".into());
    };
    let found = cis.lock().render_status(cis.us, id);
    match found {
        Ok(found) => rendered(PayloadType::Status, found, &headers, StatusCode::OK),
        Err(e) => problem(e.http_status(), e.to_string()),
    }
}

async fn delete(State(cis): State<Arc<Cis>>, Path(item): Path<String>) -> Response {
    let Some(id) = trigger_named(&item) else {
        return problem(404, "no such trigger".into());
    };
    let deleted = cis.lock().delete(cis.us, id, now_secs());
    match deleted {
        Ok(effects) => {
            metrics::counter!("streamcdn_cis_commands_total", "type" => "delete").increment(1);
            if let Err(e) = cis.persist().await {
                return problem(500, format!("cannot keep the triggers: {e}"));
            }
            cis.run(effects);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => problem(e.http_status(), e.to_string()),
    }
}

/// Each server of a trigger and where it stands (not part of RFC 8007: for the CLI's
/// progress and for operators).
async fn servers(State(cis): State<Arc<Cis>>, Path(item): Path<String>) -> Response {
    let Some(id) = trigger_named(&item) else {
        return problem(404, "no such trigger".into());
    };
    let state = cis.lock();
    let trigger = match state.get(cis.us, id) {
        Ok(t) => t,
        Err(e) => return problem(e.http_status(), e.to_string()),
    };
    let list: Vec<serde_json::Value> = trigger
        .targets()
        .map(|(target, state)| serde_json::json!({ "server": target.0, "state": state_label(state) }))
        .collect();
    axum::Json(list).into_response()
}

fn state_label(state: TargetState) -> &'static str {
    use streamcdn_cdni::trigger::Finish;
    match state {
        TargetState::Queued => "queued",
        TargetState::InFlight { .. } => "sent",
        TargetState::AwaitingRetry { .. } => "retrying",
        TargetState::Finished(Finish::Complete) => "complete",
        TargetState::Finished(Finish::Processed) => "processed",
        TargetState::Finished(Finish::Failed) => "failed",
        TargetState::Finished(Finish::Cancelled) => "cancelled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_urls() {
        assert_eq!(
            path_of("http://h:1/api/v1/triggers/3"),
            "/api/v1/triggers/3"
        );
        assert_eq!(path_of("https://h"), "/");
        assert_eq!(trigger_named("12"), Some(TriggerId(12)));
        assert_eq!(trigger_named("x1"), None);
        assert_eq!(view_named("active"), Some(View::Active));
    }

    #[test]
    fn parents_come_before_their_children() {
        let urls = [
            "http://e1/c?tier=edge",
            "http://m/c?tier=mid",
            "http://t/c?tier=top",
            "http://e0/c",
            "http://e1/c?tier=edge",
        ];
        let ids = |list: &[&str]| {
            list.iter()
                .map(|u| TargetId((*u).to_owned()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            stages(urls.iter().map(|u| (*u).to_owned())),
            [
                ids(&["http://t/c?tier=top"]),
                ids(&["http://m/c?tier=mid"]),
                ids(&["http://e0/c", "http://e1/c?tier=edge"])
            ]
        );
    }
}
