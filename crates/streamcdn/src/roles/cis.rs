//! The command invocation system (CIS) of this participant. It takes RFC 8007 CI/T
//! commands from its own operator (admin API, `POST /api/v1/triggers`) and from
//! partners (the federation listener, `POST /cdni/v1/triggers`, mutual TLS), finds the
//! configurations each command addresses and whether the caller may command them
//! (`streamcdn_cdni::Catalog`: `eperm` otherwise), and runs it:
//!
//! - on every server of ours carrying them, through their control endpoint
//!   ([`super::control`]), top tier first, then mid-tier, then edges; a server that is
//!   down is retried until it answers;
//! - on every partner a configuration is delegated to, as an RFC 8007 command with our
//!   id appended to `cdn-path`, followed by polling its status resource (`ETag`,
//!   `If-None-Match`) until it is final.
//!
//! A trigger is `complete` only when every server and every partner is. Partners'
//! configurations arrive by `PUT /cdni/v1/configurations/<id>` and are kept as
//! deployment records in the registry, which our edges read ([`super::carried`]); ours
//! are pushed to the partners that carry them, again every [`PUSH_EVERY`].
//!
//! The state machine is `streamcdn_cdni`'s `Collection`; this is its shell: the clock,
//! the HTTP calls, the timers, and the state kept after every change, in
//! `<data_dir>/cis/triggers.json` or, with a shared (Redis) registry, in the registry,
//! so a restart resumes every trigger where it was (a partner's status URL included).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Extension;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};
use streamcdn_access::deployment::DeploymentKey;
use streamcdn_cdni::collection::{trigger_id_from_url, trigger_url};
use streamcdn_cdni::wire::{AbsoluteTime, PayloadType, References};
use streamcdn_cdni::{
    parse_command, parse_operator_command, parse_status, Action, Addressed, Catalog, CdnPid,
    Collection, Command, Configuration, Effect, ErrorCode, ErrorDescription, Event, Outcome,
    TargetId, TargetState, TriggerId, TriggerSpec, TriggerStatus, TriggerType, View,
};
use streamcdn_edge::control::{ControlReply, ControlRequest, Operation};
use streamcdn_registry::{DeploymentRecord, Registry};

use super::control::{self, Tier, CONTROL_HEADER};
use crate::clock::now_ms;
use crate::context::{bind, Context, Role};
use crate::federation::{self, ConfigurationDocument, Identity, Partner, CONFIGURATIONS_PATH};
use crate::http::PeerCertificate;

pub const TRIGGERS_PATH: &str = "/api/v1/triggers";
/// How long one control request may take (a preposition fetches every segment).
const SEND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one call to a partner may take.
const PARTNER_TIMEOUT: Duration = Duration::from_secs(10);
/// Polling a partner's status resource: first after this, then 1.5× longer each time
/// up to [`POLL_AT_MOST`].
const POLL_FIRST: Duration = Duration::from_millis(10);
const POLL_AT_MOST: Duration = Duration::from_secs(1);
/// Our configurations are delivered to partners again this often (a partner that
/// restarted with a registry in memory gets them back), every second while one fails.
const PUSH_EVERY: Duration = Duration::from_secs(10);
const PUSH_RETRY: Duration = Duration::from_secs(1);
/// Largest command body taken.
const MAX_COMMAND_BYTES: usize = 1024 * 1024;
/// The registry document holding the triggers when the registry is shared.
const TRIGGERS_DOCUMENT: &str = "cis-triggers";
/// Where a target that is a partner is named: `cdni:<pid>`.
const PARTNER_TARGET: &str = "cdni:";

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
pub async fn call<C>(
    client: &hyper_util::client::legacy::Client<C, Full<Bytes>>,
    method: Method,
    url: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
    timeout: Duration,
) -> anyhow::Result<(StatusCode, HeaderMap, Bytes)>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
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
        Box::pin(start(ctx))
    }
}

async fn start(ctx: &mut Context) -> anyhow::Result<()> {
    let config = ctx.config.clone();
    let us = config.federation.participant;
    let federated =
        config.federation.listen.addr().is_some() || !config.federation.partners.is_empty();
    let identity = if federated {
        let config = config.clone();
        Some(Arc::new(
            tokio::task::spawn_blocking(move || Identity::load(&config))
                .await?
                .context("cannot set up the federation's TLS identity")?,
        ))
    } else {
        None
    };
    let partners = match &identity {
        Some(identity) => federation::partners(&config, identity)?,
        None => BTreeMap::new(),
    };
    let mut own = Vec::new();
    for (i, c) in config.configurations.iter().enumerate() {
        let origin = c
            .origin
            .clone()
            .or_else(|| config.http.advertised_url())
            .with_context(|| {
                format!("configurations[{i}].origin is needed: http.advertise is not set either")
            })?;
        own.push(OwnConfiguration {
            id: c.id.clone(),
            hostnames: c.hostnames.iter().map(|h| h.to_ascii_lowercase()).collect(),
            origin,
            max_ttl_secs: c.max_ttl.map(|t| t.as_secs().max(1)),
        });
    }
    let store = if ctx.registry.is_shared() {
        Store::Registry(ctx.registry.clone())
    } else {
        Store::File(config.node.data_dir.join("cis").join("triggers.json"))
    };
    let cis = Cis::open(
        us,
        store,
        ctx.registry.clone(),
        crate::context::deployment_key(&ctx.registry).await?,
        partners,
        own,
        config.federation.carry_on.clone(),
    )
    .await?;
    let effects = cis.lock().resume(now_secs());
    tracing::info!(participant = %us, store = %cis.store, resumed = effects.len(), "command invocation system ready");
    cis.run(effects);
    ctx.add_admin_routes(routes(cis.clone(), Interface::Admin));
    ctx.add_admin_routes(
        axum::Router::new()
            .route("/api/v1/federation", get(federation_view))
            .with_state(cis.clone()),
    );
    if let (Some(addr), Some(identity)) = (config.federation.listen.addr(), &identity) {
        let acceptor = identity.acceptor()?;
        let listener = bind(addr, "federation").await?;
        tracing::info!(federation = %addr, participant = %us, partners = cis.partners.len(), "federation listener (mutual TLS)");
        let federation_routes = routes(cis.clone(), Interface::Federation).merge(
            axum::Router::new()
                .route(
                    &format!("{CONFIGURATIONS_PATH}/{{id}}"),
                    put(receive_configuration).delete(withdraw_configuration),
                )
                .layer(Extension(Interface::Federation))
                .with_state(cis.clone()),
        );
        ctx.serve_tls(listener, federation_routes, acceptor);
    }
    if !cis.partners.is_empty() {
        ctx.spawn(cis.clone().push_configurations(ctx.shutdown()));
    }
    Ok(())
}

/// A configuration this participant owns, as configured.
struct OwnConfiguration {
    id: String,
    hostnames: Vec<String>,
    origin: String,
    max_ttl_secs: Option<u64>,
}

/// Where the triggers are kept.
enum Store {
    File(PathBuf),
    Registry(Registry),
}

impl std::fmt::Display for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Store::File(path) => write!(f, "{}", path.display()),
            Store::Registry(_) => write!(f, "registry document {TRIGGERS_DOCUMENT}"),
        }
    }
}

/// What is kept: the triggers, and the status resource each partner gave us.
#[derive(Serialize, Deserialize)]
struct Kept {
    collection: Collection,
    /// `<trigger>|<target>` → the partner's status resource URL.
    #[serde(default)]
    remote: BTreeMap<String, String>,
}

fn remote_key(trigger: TriggerId, target: &TargetId) -> String {
    format!("{}|{}", trigger.0, target.0)
}

impl Store {
    async fn load(&self) -> anyhow::Result<Option<Vec<u8>>> {
        match self {
            Store::File(file) => {
                let file = file.clone();
                tokio::task::spawn_blocking(move || -> anyhow::Result<Option<Vec<u8>>> {
                    if let Some(dir) = file.parent() {
                        std::fs::create_dir_all(dir)
                            .with_context(|| format!("creating {}", dir.display()))?;
                    }
                    match std::fs::read(&file) {
                        Ok(bytes) => Ok(Some(bytes)),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                        Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
                    }
                })
                .await?
            }
            Store::Registry(registry) => Ok(registry
                .document(TRIGGERS_DOCUMENT)
                .await?
                .map(String::into_bytes)),
        }
    }

    async fn save(&self, json: Vec<u8>) -> anyhow::Result<()> {
        match self {
            Store::File(file) => {
                let file = file.clone();
                tokio::task::spawn_blocking(move || write_atomically(&file, &json)).await??;
            }
            Store::Registry(registry) => {
                registry
                    .put_document(TRIGGERS_DOCUMENT, String::from_utf8(json)?)
                    .await?;
            }
        }
        Ok(())
    }
}

/// Which interface a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interface {
    /// The operator's admin API: the caller is this participant.
    Admin,
    /// The federation listener: the caller is the partner its certificate names.
    Federation,
}

impl Interface {
    fn path(self) -> &'static str {
        match self {
            Interface::Admin => TRIGGERS_PATH,
            Interface::Federation => federation::TRIGGERS_PATH,
        }
    }
}

/// Who is asking, and the absolute URL of the collection as they reached us (status
/// resource URLs and cancel commands are absolute, §5.1.1).
struct Caller {
    who: CdnPid,
    interface: Interface,
    base: String,
}

/// A target, decoded.
enum Destination {
    /// A server's control URL, and the partner configuration (none: our own content).
    Server {
        control: String,
        configuration: Option<String>,
    },
    Partner(CdnPid),
}

impl Destination {
    fn of(target: &TargetId) -> Option<Destination> {
        if let Some(pid) = target.0.strip_prefix(PARTNER_TARGET) {
            return pid.parse().ok().map(Destination::Partner);
        }
        Some(match target.0.split_once('#') {
            Some((control, configuration)) => Destination::Server {
                control: control.to_owned(),
                configuration: Some(configuration.to_owned()),
            },
            None => Destination::Server {
                control: target.0.clone(),
                configuration: None,
            },
        })
    }
}

struct Cis {
    us: CdnPid,
    state: Mutex<Collection>,
    /// The status resources partners gave us (kept with `state`).
    remote: Mutex<BTreeMap<String, String>>,
    store: Store,
    /// Changes made to the kept state, counted; a change counts before its persist is
    /// asked.
    changes: AtomicU64,
    /// Orders the writes and holds the change count the store has reached: a write
    /// finds the ones queued behind it already kept (one write for a burst of reports).
    written: tokio::sync::Mutex<u64>,
    registry: Registry,
    key: DeploymentKey,
    client: Client,
    partners: BTreeMap<CdnPid, Partner>,
    own: Vec<OwnConfiguration>,
    /// Which of our servers carry partners' configurations (`federation.carry_on`).
    carry_on: Vec<String>,
    /// When each trigger of this run was accepted, for the time to its final status.
    accepted: Mutex<HashMap<TriggerId, Instant>>,
    /// What each unfinished trigger addresses (see [`Cis::addressed`]).
    addressed: Mutex<HashMap<TriggerId, Arc<Vec<Addressed>>>>,
    /// Serializes changes to the deployment records.
    deploying: tokio::sync::Mutex<()>,
}

impl Cis {
    async fn open(
        us: CdnPid,
        store: Store,
        registry: Registry,
        key: DeploymentKey,
        partners: BTreeMap<CdnPid, Partner>,
        own: Vec<OwnConfiguration>,
        carry_on: Vec<String>,
    ) -> anyhow::Result<Arc<Cis>> {
        let loaded = store.load().await?;
        let kept = match loaded {
            None => Kept {
                collection: Collection::new(
                    us,
                    streamcdn_cdni::collection::DEFAULT_STALE_AFTER_SECS,
                ),
                remote: BTreeMap::new(),
            },
            Some(bytes) => match serde_json::from_slice::<Kept>(&bytes) {
                Ok(kept) => kept,
                // Written before partners existed: the collection alone.
                Err(_) => Kept {
                    collection: serde_json::from_slice(&bytes)
                        .with_context(|| format!("reading the triggers from {store}"))?,
                    remote: BTreeMap::new(),
                },
            },
        };
        Ok(Arc::new(Cis {
            us,
            state: Mutex::new(kept.collection),
            remote: Mutex::new(kept.remote),
            store,
            changes: AtomicU64::new(0),
            written: tokio::sync::Mutex::new(0),
            registry,
            key,
            client: client(),
            partners,
            own,
            carry_on,
            accepted: Mutex::new(HashMap::new()),
            addressed: Mutex::new(HashMap::new()),
            deploying: tokio::sync::Mutex::new(()),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Collection> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remote(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.remote.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the state (temp file, fsync, rename, fsync of the directory; or the
    /// registry) unless a write that began after the caller's change already did.
    async fn persist(&self) -> anyhow::Result<()> {
        let wanted = self.changes.fetch_add(1, Ordering::SeqCst) + 1;
        let mut written = self.written.lock().await;
        if *written >= wanted {
            return Ok(());
        }
        let (json, reached) = {
            let mut state = self.lock();
            state.expire(now_secs());
            let kept = serde_json::json!({
                "collection": &*state,
                "remote": &*self.remote(),
            });
            (
                serde_json::to_vec(&kept)?,
                self.changes.load(Ordering::SeqCst),
            )
        };
        self.store.save(json).await?;
        *written = reached;
        Ok(())
    }

    /// Every configuration we know: ours, and those partners delegated to us.
    async fn catalog(&self) -> anyhow::Result<(Catalog, Vec<DeploymentRecord>)> {
        let deployments = self.registry.deployments().await?;
        let delegated_to = |id: &str| -> Vec<CdnPid> {
            self.partners
                .values()
                .filter(|p| p.delegate.iter().any(|d| d == id))
                .map(|p| p.id)
                .collect()
        };
        let mut configurations: Vec<Configuration> = self
            .own
            .iter()
            .map(|c| Configuration {
                id: c.id.clone(),
                owner: self.us,
                hostnames: c.hostnames.clone(),
                delegated_to: delegated_to(&c.id),
            })
            .collect();
        for d in &deployments {
            let Ok(commander) = d.delegated_by.parse() else {
                continue;
            };
            configurations.push(Configuration {
                id: d.configuration.clone(),
                owner: commander,
                hostnames: d.hostnames.clone(),
                delegated_to: d
                    .delegated_to
                    .iter()
                    .filter_map(|p| p.parse().ok())
                    .collect(),
            });
        }
        Ok((Catalog::new(self.us, configurations), deployments))
    }

    /// Applies an event of our side, keeps it, and carries out what follows.
    async fn on_event(self: &Arc<Self>, id: TriggerId, event: Event) {
        let effects = {
            let mut state = self.lock();
            let status = |state: &Collection| {
                let owner = state.owner_of(id)?;
                state
                    .get(owner, id)
                    .ok()
                    .map(|t| (t.status(), t.spec().trigger_type.clone()))
            };
            let before = status(&state);
            let effects = state.on_event(id, event, now_secs());
            if let (Some((was, _)), Some((now, kind))) = (before, status(&state)) {
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
        self.addressed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
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
                Effect::CancelAtTarget { trigger, target } => {
                    // A server's operation is over when it answers; a partner is asked
                    // to cancel, and the polling in flight sees its final status.
                    if let Some(Destination::Partner(pid)) = Destination::of(&target) {
                        let cis = self.clone();
                        tokio::spawn(
                            async move { cis.cancel_at_partner(trigger, &target, pid).await },
                        );
                    }
                }
            }
        }
    }

    /// The trigger's owner, spec and the references that go to `target`.
    async fn share_of(
        &self,
        trigger: TriggerId,
        destination: &Destination,
    ) -> Result<(TriggerSpec, Command, References), Outcome> {
        let (owner, spec, command) = {
            let state = self.lock();
            let owner = state.owner_of(trigger).ok_or(Outcome::Cancelled)?;
            let found = state.get(owner, trigger).map_err(|_| Outcome::Cancelled)?;
            (owner, found.spec().clone(), found.cascaded_command(self.us))
        };
        let addressed = self.addressed(trigger, owner, &spec).await?;
        let mut share = References::default();
        for a in addressed.iter() {
            let mine = match destination {
                Destination::Server { configuration, .. } => cache_of(a, self.us) == *configuration,
                Destination::Partner(pid) => a.delegated_to.contains(pid),
            };
            if mine {
                share.extend(&a.references);
            }
        }
        Ok((spec, command, share))
    }

    /// The configurations a trigger addresses, resolved once per trigger and run (not
    /// once per target: a purge reaches hundreds of servers), again after a restart.
    async fn addressed(
        &self,
        trigger: TriggerId,
        owner: CdnPid,
        spec: &TriggerSpec,
    ) -> Result<Arc<Vec<Addressed>>, Outcome> {
        let known = self
            .addressed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&trigger)
            .cloned();
        if let Some(known) = known {
            return Ok(known);
        }
        let (catalog, _) = self.catalog().await.map_err(|e| {
            Outcome::Failed(vec![ErrorDescription::for_whole(
                spec,
                ErrorCode::Ecdn,
                Some(format!("node directory unavailable: {e}")),
            )])
        })?;
        let addressed = Arc::new(
            catalog
                .resolve(owner, &spec.references)
                .map_err(|e| Outcome::Failed(vec![*e]))?,
        );
        self.addressed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(trigger, addressed.clone());
        Ok(addressed)
    }

    async fn send(self: &Arc<Self>, trigger: TriggerId, target: TargetId) {
        let Some(destination) = Destination::of(&target) else {
            return;
        };
        if let Destination::Partner(pid) = destination {
            return self.send_to_partner(trigger, target, pid).await;
        }
        let share = self.share_of(trigger, &destination).await;
        let (spec, share) = match share {
            Ok((spec, _, share)) => (spec, share),
            Err(outcome) => {
                return self
                    .on_event(trigger, Event::Reported { target, outcome })
                    .await
            }
        };
        let Destination::Server {
            control,
            configuration,
        } = destination
        else {
            return;
        };
        let request = control_request(trigger, &spec, &share, configuration);
        let event = match self.post(&control, &request).await {
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
                                description: Some(format!("{control}: {e}")),
                            })
                            .collect(),
                    )
                };
                Event::Reported { target, outcome }
            }
            Err(e) => {
                metrics::counter!("streamcdn_cis_sends_total", "outcome" => "unreachable")
                    .increment(1);
                tracing::warn!(trigger = trigger.0, server = %control, error = %e, "server not reached; retrying");
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

    /// Sends the command to a partner (unless it already has it) and follows its status
    /// resource until it is final.
    async fn send_to_partner(self: &Arc<Self>, trigger: TriggerId, target: TargetId, pid: CdnPid) {
        let key = remote_key(trigger, &target);
        let known = self.remote().get(&key).cloned();
        let location = match known {
            Some(location) => location,
            None => match self.command_partner(trigger, &target, pid).await {
                Ok(location) => {
                    self.remote().insert(key.clone(), location.clone());
                    if let Err(e) = self.persist().await {
                        tracing::error!(error = %e, "cannot keep the triggers");
                    }
                    location
                }
                Err(event) => return self.on_event(trigger, event).await,
            },
        };
        let outcome = self.follow(trigger, &target, pid, &location).await;
        if let Some(outcome) = outcome {
            self.on_event(trigger, Event::Reported { target, outcome })
                .await;
        }
    }

    /// Posts the cascaded command; the status resource's URL, or what to report.
    async fn command_partner(
        self: &Arc<Self>,
        trigger: TriggerId,
        target: &TargetId,
        pid: CdnPid,
    ) -> Result<String, Event> {
        let failed = |description: String| Event::Reported {
            target: target.clone(),
            outcome: Outcome::Failed(vec![ErrorDescription {
                error: ErrorCode::Ecdn,
                references: References::default(),
                description: Some(description),
            }]),
        };
        let Some(partner) = self.partners.get(&pid) else {
            return Err(failed(format!("{pid} is not a configured partner")));
        };
        let destination = Destination::Partner(pid);
        let (mut command, share) = match self.share_of(trigger, &destination).await {
            Ok((_, command, share)) => (command, share),
            Err(outcome) => {
                return Err(Event::Reported {
                    target: target.clone(),
                    outcome,
                })
            }
        };
        if let Action::Trigger(spec) = &mut command.action {
            spec.references = share;
        }
        let url = format!("{}{}", partner.url, federation::TRIGGERS_PATH);
        let headers = [(
            "content-type",
            PayloadType::Command.content_type().to_owned(),
        )];
        let answer = call(
            &partner.client,
            Method::POST,
            &url,
            &headers,
            command.to_json(),
            PARTNER_TIMEOUT,
        )
        .await;
        match answer {
            Ok((StatusCode::CREATED, headers, _)) => {
                metrics::counter!("streamcdn_cis_partner_calls_total", "outcome" => "created")
                    .increment(1);
                let location = headers
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| failed(format!("{pid} answered 201 without a Location")))?;
                // Relative or absolute; always followed on the partner's listener.
                Ok(format!("{}{}", partner.url, path_of(location)))
            }
            Ok((status, _, body)) if status.is_client_error() => {
                metrics::counter!("streamcdn_cis_partner_calls_total", "outcome" => "refused")
                    .increment(1);
                Err(failed(format!(
                    "{pid} refused the command ({status}): {}",
                    String::from_utf8_lossy(&body)
                        .trim()
                        .chars()
                        .take(300)
                        .collect::<String>()
                )))
            }
            Ok((status, _, _)) => {
                metrics::counter!("streamcdn_cis_partner_calls_total", "outcome" => "unreachable")
                    .increment(1);
                tracing::warn!(trigger = trigger.0, partner = %pid, %status, "partner failed the command; retrying");
                Err(Event::Unreachable {
                    target: target.clone(),
                })
            }
            Err(e) => {
                metrics::counter!("streamcdn_cis_partner_calls_total", "outcome" => "unreachable")
                    .increment(1);
                tracing::warn!(trigger = trigger.0, partner = %pid, error = %e, "partner not reached; retrying");
                Err(Event::Unreachable {
                    target: target.clone(),
                })
            }
        }
    }

    /// Polls a partner's status resource until it is final (the outcome), or until our
    /// trigger no longer waits for this target (`None`).
    async fn follow(
        &self,
        trigger: TriggerId,
        target: &TargetId,
        pid: CdnPid,
        location: &str,
    ) -> Option<Outcome> {
        let partner = self.partners.get(&pid)?;
        let mut wait = POLL_FIRST;
        let mut etag: Option<String> = None;
        loop {
            let waiting = {
                let state = self.lock();
                let owner = state.owner_of(trigger)?;
                let found = state.get(owner, trigger).ok()?;
                let waiting = found
                    .targets()
                    .any(|(t, s)| t == target && matches!(s, TargetState::InFlight { .. }));
                waiting
            };
            if !waiting {
                return None;
            }
            let headers: Vec<(&str, String)> = etag
                .iter()
                .map(|tag| ("if-none-match", tag.clone()))
                .collect();
            match call(
                &partner.client,
                Method::GET,
                location,
                &headers,
                Vec::new(),
                PARTNER_TIMEOUT,
            )
            .await
            {
                Ok((StatusCode::OK, headers, body)) => {
                    let content_type = headers
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok());
                    match parse_status(content_type, &body) {
                        Ok(status) => {
                            if let Some(outcome) = Outcome::from_remote(&status) {
                                return Some(outcome);
                            }
                            etag = headers
                                .get(header::ETAG)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                        }
                        Err(e) => {
                            tracing::warn!(partner = %pid, %location, error = %e, "partner's status resource does not parse");
                        }
                    }
                }
                Ok((StatusCode::NOT_MODIFIED, _, _)) => {}
                Ok((status, _, _))
                    if status == StatusCode::NOT_FOUND || status == StatusCode::FORBIDDEN =>
                {
                    return Some(Outcome::Failed(vec![ErrorDescription {
                        error: ErrorCode::Ecdn,
                        references: References::default(),
                        description: Some(format!(
                            "{pid}: status resource {location} answered {status}"
                        )),
                    }]));
                }
                Ok((status, _, _)) => {
                    tracing::debug!(partner = %pid, %status, "partner status poll failed");
                }
                Err(e) => {
                    tracing::debug!(partner = %pid, error = %e, "partner status poll failed");
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait.mul_f32(1.5)).min(POLL_AT_MOST);
        }
    }

    async fn cancel_at_partner(&self, trigger: TriggerId, target: &TargetId, pid: CdnPid) {
        let location = self.remote().get(&remote_key(trigger, target)).cloned();
        let (Some(location), Some(partner)) = (location, self.partners.get(&pid)) else {
            return;
        };
        let command = serde_json::json!({
            "cancel": [location],
            "cdn-path": [self.us.to_string()],
        });
        let url = format!("{}{}", partner.url, federation::TRIGGERS_PATH);
        let headers = [(
            "content-type",
            PayloadType::Command.content_type().to_owned(),
        )];
        let body = serde_json::to_vec(&command).unwrap_or_default();
        if let Err(e) = call(
            &partner.client,
            Method::POST,
            &url,
            &headers,
            body,
            PARTNER_TIMEOUT,
        )
        .await
        {
            tracing::warn!(trigger = trigger.0, partner = %pid, error = %e, "cannot cancel at the partner");
        }
    }

    /// Every server and partner a new trigger must reach, in stages by tier.
    async fn targets(
        &self,
        addressed: &[Addressed],
        deployments: &[DeploymentRecord],
    ) -> anyhow::Result<Vec<Vec<TargetId>>> {
        let nodes = self.registry.nodes().await?;
        let mut ids = Vec::new();
        for a in addressed {
            match cache_of(a, self.us) {
                None => ids.extend(
                    nodes
                        .iter()
                        .filter_map(|n| n.addresses.get("control").cloned()),
                ),
                Some(configuration) => {
                    let deployment = deployments
                        .iter()
                        .find(|d| d.configuration == configuration);
                    if let Some(deployment) = deployment {
                        ids.extend(
                            nodes
                                .iter()
                                .filter(|n| deployment.carried_by(n))
                                .filter_map(|n| {
                                    n.addresses
                                        .get("control")
                                        .map(|control| format!("{control}#{configuration}"))
                                }),
                        );
                    }
                }
            }
            ids.extend(
                a.delegated_to
                    .iter()
                    .map(|p| format!("{PARTNER_TARGET}{p}")),
            );
        }
        Ok(stages(ids.into_iter()))
    }

    /// Takes a command from `caller`.
    async fn command(
        self: &Arc<Self>,
        caller: Caller,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Response {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let parsed = match caller.interface {
            Interface::Admin => parse_operator_command(content_type, body),
            Interface::Federation => parse_command(content_type, body, self.us),
        };
        let command = match parsed {
            Ok(c) => c,
            Err(e) => {
                metrics::counter!("streamcdn_cis_commands_total", "type" => "invalid").increment(1);
                return problem(e.http_status(), e.to_string());
            }
        };
        if caller.interface == Interface::Federation
            && command.envelope.cdn_path.pids().last() != Some(&caller.who)
        {
            metrics::counter!("streamcdn_cis_commands_total", "type" => "invalid").increment(1);
            return problem(
                400,
                format!("cdn-path must end with the sender's id {}", caller.who),
            );
        }
        let now = now_secs();
        match command.action {
            Action::Cancel(urls) => {
                metrics::counter!("streamcdn_cis_commands_total", "type" => "cancel").increment(1);
                // By path: the client may have reached us under another host name.
                let paths: Vec<String> = urls.iter().map(|u| path_of(u).to_owned()).collect();
                let reply = self
                    .lock()
                    .cancel(caller.who, &paths, caller.interface.path(), now);
                match reply {
                    Ok(reply) => {
                        if let Err(e) = self.persist().await {
                            return problem(500, format!("cannot keep the triggers: {e}"));
                        }
                        let status = reply.http_status();
                        self.run(reply.effects);
                        problem(status, "cancelled".into())
                    }
                    Err(e) => problem(e.http_status(), e.to_string()),
                }
            }
            Action::Trigger(spec) => {
                metrics::counter!("streamcdn_cis_commands_total", "type" => spec.trigger_type.as_str().to_owned())
                    .increment(1);
                let (catalog, deployments) = match self.catalog().await {
                    Ok(found) => found,
                    Err(e) => return problem(503, format!("node directory unavailable: {e}")),
                };
                let id = match catalog.resolve(caller.who, &spec.references) {
                    Err(refused) => {
                        metrics::counter!("streamcdn_cis_refused_total", "error" => "eperm")
                            .increment(1);
                        let description = refused.description.unwrap_or_default();
                        self.lock().refuse(
                            caller.who,
                            spec,
                            command.envelope,
                            ErrorCode::Eperm,
                            description,
                            now,
                        )
                    }
                    Ok(addressed) => {
                        let stages = match self.targets(&addressed, &deployments).await {
                            Ok(stages) => stages,
                            Err(e) => {
                                return problem(503, format!("node directory unavailable: {e}"))
                            }
                        };
                        let sends = stages.iter().any(|stage| !stage.is_empty());
                        let id =
                            self.lock()
                                .accept(caller.who, spec, command.envelope, stages, now);
                        // Kept until the trigger finishes (one with no target is done).
                        if sends {
                            self.addressed
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(id, Arc::new(addressed));
                        }
                        id
                    }
                };
                self.accepted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, Instant::now());
                // Kept before anything is sent: a crash from here on loses nothing.
                if let Err(e) = self.persist().await {
                    return problem(500, format!("cannot keep the triggers: {e}"));
                }
                self.on_event(id, Event::Start).await;
                let Ok(found) = self.lock().render_status(caller.who, id) else {
                    return problem(500, "the trigger vanished".into());
                };
                let mut response = rendered(
                    PayloadType::Status,
                    found,
                    &HeaderMap::new(),
                    StatusCode::CREATED,
                );
                if let Ok(location) = HeaderValue::try_from(trigger_url(&caller.base, id)) {
                    response.headers_mut().insert(header::LOCATION, location);
                }
                response
            }
        }
    }

    /// The configuration documents we deliver to each partner now.
    async fn documents_for(&self, partner: &Partner) -> anyhow::Result<Vec<ConfigurationDocument>> {
        let deployments = self.registry.deployments().await?;
        let mut documents = Vec::new();
        for id in &partner.delegate {
            if let Some(own) = self.own.iter().find(|c| c.id == *id) {
                documents.push(ConfigurationDocument::new(
                    id,
                    self.us,
                    &own.hostnames,
                    &own.origin,
                    own.max_ttl_secs,
                ));
            } else if let Some(d) = deployments.iter().find(|d| d.configuration == *id) {
                let Ok(owner) = d.owner.parse() else { continue };
                documents.push(ConfigurationDocument::new(
                    id,
                    owner,
                    &d.hostnames,
                    &d.origin,
                    d.max_ttl_secs,
                ));
            }
        }
        Ok(documents)
    }

    /// Delivers every delegated configuration to its partners, once; whether all went.
    async fn push_once(&self) -> bool {
        let mut all = true;
        for partner in self.partners.values() {
            let documents = match self.documents_for(partner).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the deployments");
                    return false;
                }
            };
            for document in documents {
                let url = format!("{}{CONFIGURATIONS_PATH}/{}", partner.url, document.id);
                let body = serde_json::to_vec(&document).unwrap_or_default();
                let headers = [("content-type", "application/json".to_owned())];
                match call(
                    &partner.client,
                    Method::PUT,
                    &url,
                    &headers,
                    body,
                    PARTNER_TIMEOUT,
                )
                .await
                {
                    Ok((StatusCode::CREATED, _, _)) => {
                        tracing::info!(partner = %partner.id, configuration = %document.id, "configuration delegated");
                    }
                    Ok((StatusCode::NO_CONTENT, _, _)) => {}
                    Ok((status, _, answer)) => {
                        all = false;
                        tracing::warn!(partner = %partner.id, configuration = %document.id, %status, answer = %String::from_utf8_lossy(&answer).trim(), "partner refused the configuration");
                    }
                    Err(e) => {
                        all = false;
                        tracing::warn!(partner = %partner.id, configuration = %document.id, error = %e, "partner not reached with the configuration");
                    }
                }
            }
        }
        all
    }

    async fn push_configurations(
        self: Arc<Self>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let wait = if self.push_once().await {
                PUSH_EVERY
            } else {
                PUSH_RETRY
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Which cache of our servers an addressed configuration lives in: our own content
/// (the default, and configurations we own) is `None`; a partner's, its id.
fn cache_of(addressed: &Addressed, us: CdnPid) -> Option<String> {
    if addressed.owner == us {
        None
    } else {
        addressed.configuration.clone()
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

/// What one server is asked for a trigger: its share of the content URLs and patterns.
/// `metadata.*` names configuration metadata, which servers do not cache; a
/// `content.ccid` names no objects here either.
fn control_request(
    trigger: TriggerId,
    spec: &TriggerSpec,
    share: &References,
    configuration: Option<String>,
) -> ControlRequest {
    let operation = match spec.trigger_type {
        TriggerType::Purge => Operation::Purge,
        TriggerType::Invalidate => Operation::Invalidate,
        // Unsupported types are refused at creation and never sent.
        TriggerType::Preposition | TriggerType::Unsupported(_) => Operation::Preposition,
    };
    ControlRequest {
        trigger_id: trigger.0.to_string(),
        operation,
        urls: share.content_urls.clone().unwrap_or_default(),
        patterns: share.content_patterns.clone().unwrap_or_default(),
        configuration,
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

fn routes(cis: Arc<Cis>, interface: Interface) -> axum::Router {
    let path = interface.path();
    axum::Router::new()
        .route(path, get(collection_all).post(command))
        .route(&format!("{path}/{{item}}"), get(item).delete(delete))
        .route(&format!("{path}/{{item}}/servers"), get(servers))
        .layer(Extension(interface))
        .with_state(cis)
}

/// Who is calling: on the admin listener this participant; on the federation listener
/// the partner its certificate names (anyone else gets `403` and nothing more). Every
/// route of the CIS says which listener it is on with an `Interface` extension.
impl axum::extract::FromRequestParts<Arc<Cis>> for Caller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        cis: &Arc<Cis>,
    ) -> Result<Self, Response> {
        let Some(interface) = parts.extensions.get::<Interface>().copied() else {
            return Err(problem(500, "route without an interface".into()));
        };
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("localhost");
        match interface {
            Interface::Admin => Ok(Caller {
                who: cis.us,
                interface,
                base: format!("http://{host}{TRIGGERS_PATH}"),
            }),
            Interface::Federation => {
                let who = parts
                    .extensions
                    .get::<PeerCertificate>()
                    .and_then(|c| federation::participant_of(&c.0));
                match who {
                    Some(who) if cis.partners.contains_key(&who) => Ok(Caller {
                        who,
                        interface,
                        base: format!("https://{host}{}", federation::TRIGGERS_PATH),
                    }),
                    _ => {
                        metrics::counter!("streamcdn_cis_commands_total", "type" => "unknown_peer")
                            .increment(1);
                        Err(problem(403, "not a partner of this participant".into()))
                    }
                }
            }
        }
    }
}

/// The absolute URL's path (or the text itself if it has no scheme).
fn path_of(url: &str) -> &str {
    match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => url,
    }
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

async fn command(
    State(cis): State<Arc<Cis>>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if body.len() > MAX_COMMAND_BYTES {
        return problem(
            413,
            format!("a command is at most {MAX_COMMAND_BYTES} bytes"),
        );
    }
    cis.command(caller, &headers, &body).await
}

async fn collection_all(
    State(cis): State<Arc<Cis>>,
    caller: Caller,
    headers: HeaderMap,
) -> Response {
    let found = cis
        .lock()
        .render_collection(caller.who, View::All, &caller.base);
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
    caller: Caller,
    Path(item): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(view) = view_named(&item) {
        let found = cis.lock().render_collection(caller.who, view, &caller.base);
        return rendered(PayloadType::Collection, found, &headers, StatusCode::OK);
    }
    let Some(id) = trigger_named(&item) else {
        return problem(404, "no such trigger".into());
    };
    let found = cis.lock().render_status(caller.who, id);
    match found {
        Ok(found) => rendered(PayloadType::Status, found, &headers, StatusCode::OK),
        Err(e) => problem(e.http_status(), e.to_string()),
    }
}

async fn delete(State(cis): State<Arc<Cis>>, caller: Caller, Path(item): Path<String>) -> Response {
    if view_named(&item).is_some() {
        // A view is not a resource that can be deleted (§4.4 deletes triggers).
        let mut refused = problem(405, "a trigger view cannot be deleted".into());
        refused
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return refused;
    }
    let Some(id) = trigger_named(&item) else {
        return problem(404, "no such trigger".into());
    };
    let deleted = cis.lock().delete(caller.who, id, now_secs());
    match deleted {
        Ok(effects) => {
            metrics::counter!("streamcdn_cis_commands_total", "type" => "delete").increment(1);
            cis.addressed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
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
async fn servers(
    State(cis): State<Arc<Cis>>,
    caller: Caller,
    Path(item): Path<String>,
) -> Response {
    let Some(id) = trigger_named(&item) else {
        return problem(404, "no such trigger".into());
    };
    let state = cis.lock();
    let trigger = match state.get(caller.who, id) {
        Ok(t) => t,
        Err(e) => return problem(e.http_status(), e.to_string()),
    };
    let list: Vec<serde_json::Value> = trigger
        .targets()
        .enumerate()
        .map(|(i, (target, state))| {
            // A partner learns how many of our servers carry its content and their
            // tiers, not their addresses.
            let server = match (caller.interface, Destination::of(target)) {
                (Interface::Federation, Some(Destination::Server { control, .. })) => {
                    format!("{} server {}", Tier::of_address(&control).as_str(), i + 1)
                }
                _ => target.0.clone(),
            };
            serde_json::json!({ "server": server, "state": state_label(state) })
        })
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

/// `GET /api/v1/federation`: this participant, its partners, the configurations it owns
/// and those it carries for partners (for operators and the dashboard).
async fn federation_view(State(cis): State<Arc<Cis>>) -> Response {
    let carried = match cis.registry.deployments().await {
        Ok(d) => d,
        Err(e) => return problem(503, format!("node directory unavailable: {e}")),
    };
    let partners: Vec<serde_json::Value> = cis
        .partners
        .values()
        .map(
            |p| serde_json::json!({ "id": p.id.to_string(), "url": p.url, "delegate": p.delegate }),
        )
        .collect();
    let own: Vec<serde_json::Value> = cis
        .own
        .iter()
        .map(|c| {
            serde_json::json!({
                "id": c.id,
                "hostnames": c.hostnames,
                "origin": c.origin,
                "max_ttl_secs": c.max_ttl_secs,
                "delegated_to": cis.partners.values().filter(|p| p.delegate.contains(&c.id)).map(|p| p.id.to_string()).collect::<Vec<_>>(),
            })
        })
        .collect();
    axum::Json(serde_json::json!({
        "participant": cis.us.to_string(),
        "partners": partners,
        "configurations": own,
        "carried": carried,
    }))
    .into_response()
}

/// `PUT /cdni/v1/configurations/<id>`: a partner delegates a configuration to us; we
/// deploy it on the servers `federation.carry_on` names (`201`; `204` if unchanged).
async fn receive_configuration(
    State(cis): State<Arc<Cis>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let peer = caller.who;
    let document = match ConfigurationDocument::parse(&body) {
        Ok(d) => d,
        Err(e) => return problem(400, format!("configuration document: {e}")),
    };
    if document.id != id {
        return problem(
            400,
            format!("the document is for {:?}, not {id:?}", document.id),
        );
    }
    if cis.own.iter().any(|c| c.id == id) {
        return problem(409, format!("{id:?} is a configuration of ours"));
    }
    let hostnames = document.hostnames();
    let Ok(origin) = document.origin() else {
        return problem(400, "no origin".into());
    };
    let _one = cis.deploying.lock().await;
    let mut deployments = match cis.registry.deployments().await {
        Ok(d) => d,
        Err(e) => return problem(503, format!("node directory unavailable: {e}")),
    };
    let ours = cis.own.iter().flat_map(|c| c.hostnames.iter());
    let theirs = deployments
        .iter()
        .filter(|d| d.configuration != id)
        .flat_map(|d| d.hostnames.iter());
    if let Some(taken) = ours.chain(theirs).find(|h| hostnames.contains(h)) {
        return problem(
            409,
            format!("host {taken:?} belongs to another configuration here"),
        );
    }
    let record = DeploymentRecord {
        configuration: id.clone(),
        owner: document.owner.to_string(),
        delegated_by: peer.to_string(),
        hostnames,
        origin,
        servers: cis.carry_on.clone(),
        delegated_to: cis
            .partners
            .values()
            .filter(|p| p.delegate.contains(&id))
            .map(|p| p.id.to_string())
            .collect(),
        max_ttl_secs: document.max_ttl_secs(),
    };
    let status = match deployments.iter_mut().find(|d| d.configuration == id) {
        Some(existing) if existing.delegated_by != record.delegated_by => {
            return problem(
                409,
                format!("{id:?} was delegated to us by {}", existing.delegated_by),
            );
        }
        Some(existing) if *existing == record => return StatusCode::NO_CONTENT.into_response(),
        Some(existing) => {
            *existing = record.clone();
            StatusCode::CREATED
        }
        None => {
            deployments.push(record.clone());
            StatusCode::CREATED
        }
    };
    if let Err(e) = cis.registry.set_deployments(&deployments).await {
        return problem(503, format!("cannot keep the deployment: {e}"));
    }
    tracing::info!(configuration = %id, owner = %record.owner, from = %peer, hostnames = ?record.hostnames, origin = %record.origin, "configuration received and deployed");
    metrics::counter!("streamcdn_cis_configurations_received_total").increment(1);
    if !record.delegated_to.is_empty() {
        // Delegated onward at once rather than at the next round.
        let cis = cis.clone();
        tokio::spawn(async move { cis.push_once().await });
    }
    status.into_response()
}

/// `DELETE /cdni/v1/configurations/<id>`: the partner that delegated it withdraws it.
async fn withdraw_configuration(
    State(cis): State<Arc<Cis>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Response {
    let peer = caller.who;
    let _one = cis.deploying.lock().await;
    let mut deployments = match cis.registry.deployments().await {
        Ok(d) => d,
        Err(e) => return problem(503, format!("node directory unavailable: {e}")),
    };
    match deployments.iter().position(|d| d.configuration == id) {
        None => problem(404, format!("no configuration {id:?} here")),
        Some(i) if deployments[i].delegated_by != peer.to_string() => {
            problem(403, format!("{id:?} was not delegated to us by {peer}"))
        }
        Some(i) => {
            deployments.remove(i);
            if let Err(e) = cis.registry.set_deployments(&deployments).await {
                return problem(503, format!("cannot keep the deployments: {e}"));
            }
            tracing::info!(configuration = %id, from = %peer, "configuration withdrawn");
            StatusCode::NO_CONTENT.into_response()
        }
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
