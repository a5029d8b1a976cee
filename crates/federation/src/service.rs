//! The one owner of the CIS state: an event loop holding the [`Cis`] (`&mut`), fed by
//! a channel. API requests and the results of what the loop sent out arrive as jobs
//! run on the state with `now`. The state is kept (to a file or the registry) by one
//! write at a time beside the loop, which goes on taking jobs meanwhile: the next write
//! takes every change made during the one before. A request that changed the state
//! (a command, a cancel, a delete) is answered, and what it started is sent, only once
//! a write holding its change has finished: a trigger is kept before it is
//! acknowledged or acted on. Reads are answered at once, and what the results of
//! earlier actions lead to (the next tier's control requests, polls, retries) is sent
//! at once: after a crash, the kept state sends again what had not been kept as done,
//! and every operation sent is idempotent.
//!
//! **One CIS per participant.** Every `router` (and `up`) runs a CIS; they contend for
//! the participant's lease in the registry ([`LEASE_NAME`], [`LEASE_TTL`], renewed
//! every [`LEASE_RENEW`]). The holder is active: it loads the kept state, resumes every
//! trigger and serves the API. The others stand by and answer the API with `503`,
//! naming the active CIS's admin address (the `x-streamcdn-active-cis` header); one of
//! them takes over (loading the state the active one kept) when the holder's lease
//! expires, or at once when it shuts down cleanly and releases it. A CIS that cannot
//! renew its lease for [`LEASE_TTL`] stops acting (it may have been replaced). The
//! lease holder is the node id, so a CIS that restarts takes its lease back at once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::http::{header, Method, StatusCode};
use streamcdn_access::deployment::{self, DeploymentKey};
use streamcdn_cdni::control::{ControlReply, ControlRequest, CONTROL_HEADER};
use streamcdn_cdni::wire::PayloadType;
use streamcdn_cdni::{parse_status, CdnPid};
use streamcdn_registry::{LeaseHolder, Registry, RegistryError};
use streamcdn_support::clock::now_ms;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::call::{call, client, Client};
use crate::identity::Partner;
use crate::state::{
    path_of, Action, Cis, ControlOrder, Millis, Participant, PartnerAnswer, PollAnswer, StateError,
};

/// The registry lease naming the participant's active CIS.
pub const LEASE_NAME: &str = "cis";
pub const LEASE_TTL: Duration = Duration::from_secs(10);
pub const LEASE_RENEW: Duration = Duration::from_secs(3);
/// The registry document holding the triggers when the registry is shared.
pub const TRIGGERS_DOCUMENT: &str = "cis-triggers";
/// The federation interface's collection of triggers on a partner's listener.
pub const PARTNER_TRIGGERS_PATH: &str = "/cdni/v1/triggers";
/// How long one control request may take (a preposition fetches every segment).
const SEND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one call to a partner may take.
pub const PARTNER_TIMEOUT: Duration = Duration::from_secs(10);
/// Jobs taken before a write of the state is started (if none is under way).
const BATCH: usize = 256;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("the kept triggers are not text: {0}")]
    NotText(#[from] std::string::FromUtf8Error),
    #[error("the file task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Where the triggers are kept.
#[derive(Clone)]
pub enum Store {
    /// `<data_dir>/cis/triggers.json`.
    File(PathBuf),
    /// The registry document [`TRIGGERS_DOCUMENT`] (a shared registry: every CIS of the
    /// participant finds it).
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

impl Store {
    pub async fn load(&self) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::File(file) => {
                let file = file.clone();
                let read = tokio::task::spawn_blocking(move || {
                    let io = |source| StoreError::File {
                        path: file.clone(),
                        source,
                    };
                    if let Some(dir) = file.parent() {
                        std::fs::create_dir_all(dir).map_err(io)?;
                    }
                    match std::fs::read(&file) {
                        Ok(bytes) => Ok(Some(bytes)),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                        Err(e) => Err(io(e)),
                    }
                });
                read.await?
            }
            Store::Registry(registry) => Ok(registry
                .document(TRIGGERS_DOCUMENT)
                .await?
                .map(String::into_bytes)),
        }
    }

    /// Keeps `json` (temp file, fsync, rename, fsync of the directory; or the registry).
    pub async fn save(&self, json: Vec<u8>) -> Result<(), StoreError> {
        match self {
            Store::File(file) => {
                let file = file.clone();
                let written = tokio::task::spawn_blocking(move || {
                    streamcdn_support::durable::write_with_mode(&file, &json, 0o644)
                        .map_err(|source| StoreError::File { path: file, source })
                });
                written.await?
            }
            Store::Registry(registry) => Ok(registry
                .put_document(TRIGGERS_DOCUMENT, String::from_utf8(json)?)
                .await?),
        }
    }
}

/// Whether this CIS is the participant's active one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Active,
    /// Another CIS holds the lease (`None`: not known yet, or the registry is down).
    Standby(Option<LeaseHolder>),
}

/// What a job's caller gets once the state is kept: its result, and whether keeping
/// the state failed.
type Deliver = Box<dyn FnOnce(Result<(), String>) + Send>;
type Job = Box<dyn FnOnce(&mut Cis, Millis) -> Option<Deliver> + Send>;

/// A request that changed the state: its answer and the actions it led to, held until
/// a write holding its change has finished.
struct Held {
    /// [`Cis::changes`] after the request.
    changes: u64,
    deliver: Option<Deliver>,
    actions: Vec<Action>,
}

/// The write of the state under way.
struct Keeping {
    /// [`Cis::changes`] when the state written was taken.
    changes: u64,
    write: tokio::task::JoinHandle<Result<(), StoreError>>,
}

enum Message {
    /// From the API: answered `Err(Standby)` when not active.
    Request(Job, oneshot::Sender<Mode>),
    /// A result of an action of run `epoch` (dropped if the CIS stepped down since).
    Result(u64, Job),
}

/// How the API reaches the loop; cheap to clone.
#[derive(Clone)]
pub struct Handle {
    sender: mpsc::UnboundedSender<Message>,
    mode: watch::Receiver<Mode>,
}

impl Handle {
    /// Whether this CIS is active now.
    pub fn mode(&self) -> Mode {
        self.mode.borrow().clone()
    }

    /// Runs `job` on the state; its result (if the job changed the state, once the
    /// state is kept; `Err` inside if keeping it failed), or the mode if this CIS is not
    /// active.
    pub async fn ask<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Cis, Millis) -> R + Send + 'static,
    ) -> Result<(R, Result<(), String>), Mode> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |cis, now| {
            let result = job(cis, now);
            Some(Box::new(move |kept| {
                let _ = reply.send((result, kept));
            }) as Deliver)
        });
        let (refused, standby) = oneshot::channel();
        if self.sender.send(Message::Request(job, refused)).is_err() {
            return Err(Mode::Standby(None));
        }
        // Refused (the job is dropped with it), or answered.
        tokio::select! {
            biased;
            Ok(mode) = standby => Err(mode),
            answered = answer => answered.map_err(|_| Mode::Standby(None)),
        }
    }
}

/// What the CIS is and where it keeps its state.
pub struct Settings {
    pub participant: Participant,
    pub partners: Arc<BTreeMap<CdnPid, Partner>>,
    pub store: Store,
    pub registry: Registry,
    /// This CIS in the lease: the node id and its admin address.
    pub holder: LeaseHolder,
    /// Signs control requests.
    pub key: DeploymentKey,
}

/// The loop's side: the state while active, and what carries out the actions.
pub struct Service {
    settings: Settings,
    cis: Option<Cis>,
    /// Bumped at every change of mode: results of an earlier run are dropped.
    epoch: u64,
    mode: watch::Sender<Mode>,
    /// When the lease was last renewed.
    renewed: Option<Instant>,
    sender: mpsc::UnboundedSender<Message>,
    receiver: mpsc::UnboundedReceiver<Message>,
    client: Client,
    keeping: Option<Keeping>,
    held: Vec<Held>,
}

impl Service {
    pub fn new(settings: Settings) -> (Service, Handle) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let (mode, watching) = watch::channel(Mode::Standby(None));
        let handle = Handle {
            sender: sender.clone(),
            mode: watching,
        };
        let service = Service {
            settings,
            cis: None,
            epoch: 0,
            mode,
            renewed: None,
            sender,
            receiver,
            client: client(),
            keeping: None,
            held: Vec::new(),
        };
        (service, handle)
    }

    pub fn mode(&self) -> Mode {
        self.mode.borrow().clone()
    }

    /// The state, while active.
    pub fn state(&mut self) -> Option<&mut Cis> {
        self.cis.as_mut()
    }

    /// Takes or renews the lease, taking over or stepping down as it says.
    pub async fn keep_lease(&mut self) {
        let registry = self.settings.registry.clone();
        let held = registry
            .hold_lease(LEASE_NAME, &self.settings.holder, LEASE_TTL)
            .await;
        match held {
            Ok(None) => {
                self.renewed = Some(Instant::now());
                if self.cis.is_none() {
                    self.take_over().await;
                }
            }
            Ok(Some(holder)) => {
                if self.cis.is_some() {
                    tracing::warn!(active = %holder.id, "another CIS holds the lease: standing by");
                }
                self.stand_by(Some(holder));
            }
            Err(e) => {
                let expired = self.renewed.is_none_or(|at| at.elapsed() >= LEASE_TTL);
                if self.cis.is_some() && expired {
                    tracing::warn!(error = %e, "cannot renew the CIS lease: standing by");
                    self.stand_by(None);
                } else {
                    tracing::debug!(error = %e, "cannot renew the CIS lease");
                }
            }
        }
    }

    async fn take_over(&mut self) {
        // A write of an earlier run lands before the state is read back.
        if let Some(keeping) = self.keeping.take() {
            let _ = outcome(keeping.write.await);
        }
        let opened = match self.settings.store.load().await {
            Ok(kept) => Cis::open(self.settings.participant.clone(), kept.as_deref())
                .map_err(|e: StateError| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let mut cis = match opened {
            Ok(cis) => cis,
            Err(e) => {
                tracing::error!(store = %self.settings.store, error = %e, "cannot read the triggers; leaving the lease");
                let _ = self
                    .settings
                    .registry
                    .release_lease(LEASE_NAME, &self.settings.holder)
                    .await;
                return;
            }
        };
        let resumed = cis.resume(now_ms());
        tracing::info!(participant = %self.settings.participant.us, store = %self.settings.store, resumed, "command invocation system active");
        self.epoch += 1;
        self.cis = Some(cis);
        self.mode.send_replace(Mode::Active);
        self.settle().await;
    }

    fn stand_by(&mut self, holder: Option<LeaseHolder>) {
        if self.cis.take().is_some() {
            self.epoch += 1;
        }
        // Their callers are told this CIS stands by; what they started is not sent.
        self.held.clear();
        self.mode.send_replace(Mode::Standby(holder));
    }

    /// Serves until `shutdown`, then keeps the state and gives the lease up.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut lease = tokio::time::interval(LEASE_RENEW);
        lease.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let write = self.keeping.as_mut().map(|keeping| &mut keeping.write);
            let written = async move {
                match write {
                    Some(write) => outcome(write.await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = lease.tick() => self.keep_lease().await,
                result = written => self.written(result),
                Some(message) = self.receiver.recv() => {
                    self.handle(message);
                    for _ in 1..BATCH {
                        let Ok(message) = self.receiver.try_recv() else { break };
                        self.handle(message);
                    }
                    self.keep();
                }
                _ = shutdown.changed() => break,
            }
        }
        if self.cis.is_some() {
            self.settle().await;
            if let Err(e) = self
                .settings
                .registry
                .release_lease(LEASE_NAME, &self.settings.holder)
                .await
            {
                tracing::debug!(error = %e, "cannot release the CIS lease");
            }
        }
    }

    /// Runs one job: a request that changed the state waits for it to be kept; anything
    /// else is answered, and what it led to carried out, at once.
    fn handle(&mut self, message: Message) {
        let now = now_ms();
        let (job, request) = match message {
            Message::Request(job, refused) => {
                if self.cis.is_none() {
                    let _ = refused.send(self.mode());
                    return;
                }
                (job, true)
            }
            Message::Result(epoch, job) if epoch == self.epoch => (job, false),
            Message::Result(..) => return,
        };
        let Some(cis) = self.cis.as_mut() else {
            return;
        };
        let before = cis.changes();
        let deliver = job(cis, now);
        let changes = cis.changes();
        let actions: Vec<Action> = std::iter::from_fn(|| cis.poll_action()).collect();
        if request && changes != before {
            self.held.push(Held {
                changes,
                deliver,
                actions,
            });
            return;
        }
        if let Some(deliver) = deliver {
            deliver(Ok(()));
        }
        for action in actions {
            self.carry_out(action);
        }
    }

    /// Starts writing the state if it changed and no write is under way.
    fn keep(&mut self) {
        if self.keeping.is_some() {
            return;
        }
        let Some(cis) = self.cis.as_mut() else {
            return;
        };
        let changes = cis.changes();
        let Some(json) = cis.snapshot(now_ms()) else {
            return;
        };
        let store = self.settings.store.clone();
        self.keeping = Some(Keeping {
            changes,
            write: tokio::spawn(async move { store.save(json).await }),
        });
    }

    /// The write under way has finished: the requests it holds are answered and what
    /// they started is carried out; the next write takes what changed meanwhile.
    fn written(&mut self, result: Result<(), String>) {
        let Some(keeping) = self.keeping.take() else {
            return;
        };
        let (ready, waiting) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|held| held.changes <= keeping.changes);
        self.held = waiting;
        for held in ready {
            if let Some(deliver) = held.deliver {
                deliver(result.clone());
            }
            for action in held.actions {
                self.carry_out(action);
            }
        }
        self.keep();
    }

    /// Keeps the state now (after the write under way), answers every request waiting
    /// for it and carries out every action due.
    pub async fn settle(&mut self) {
        loop {
            if self.keeping.is_none() {
                self.keep();
            }
            let Some(keeping) = self.keeping.as_mut() else {
                break;
            };
            let result = outcome((&mut keeping.write).await);
            self.written(result);
        }
        let actions: Vec<Action> = match self.cis.as_mut() {
            Some(cis) => std::iter::from_fn(|| cis.poll_action()).collect(),
            None => Vec::new(),
        };
        for action in actions {
            self.carry_out(action);
        }
    }

    /// Sends a job to the loop from a task of this epoch.
    fn reporter(&self) -> impl Fn(Job) + Send + Sync + 'static {
        let (sender, epoch) = (self.sender.clone(), self.epoch);
        move |job| {
            let _ = sender.send(Message::Result(epoch, job));
        }
    }

    fn carry_out(&self, action: Action) {
        let report = self.reporter();
        match action {
            Action::Control {
                trigger,
                target,
                control,
                order,
            } => {
                let (client, key) = (self.client.clone(), self.settings.key.clone());
                tokio::spawn(async move {
                    let answer = control_request(&client, &key, &control, order).await;
                    report(Box::new(move |cis, now| {
                        cis.server_answered(trigger, target, answer, now);
                        None
                    }));
                });
            }
            Action::CommandPartner {
                trigger,
                target,
                partner,
                command,
            } => {
                let partners = self.settings.partners.clone();
                tokio::spawn(async move {
                    let answer = match partners.get(&partner) {
                        Some(p) => command_partner(p, command.to_json()).await,
                        None => {
                            PartnerAnswer::Refused(format!("{partner} is not a configured partner"))
                        }
                    };
                    report(Box::new(move |cis, now| {
                        cis.partner_commanded(trigger, target, answer, now);
                        None
                    }));
                });
            }
            Action::PollPartner {
                trigger,
                target,
                partner,
                location,
                etag,
                after,
            } => {
                let partners = self.settings.partners.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let answer = match partners.get(&partner) {
                        Some(p) => poll_partner(p, &location, etag).await,
                        None => PollAnswer::Gone("has no partner to ask".into()),
                    };
                    report(Box::new(move |cis, now| {
                        cis.partner_polled(trigger, target, answer, now);
                        None
                    }));
                });
            }
            Action::CancelAtPartner { partner, command } => {
                let partners = self.settings.partners.clone();
                tokio::spawn(async move {
                    if let Some(p) = partners.get(&partner) {
                        cancel_at_partner(p, command).await;
                    }
                });
            }
            Action::WakeAt {
                trigger,
                target,
                at,
            } => {
                let wait = Duration::from_millis(at.saturating_sub(now_ms()));
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    report(Box::new(move |cis: &mut Cis, now| {
                        cis.retry_due(trigger, target, now);
                        None
                    }));
                });
            }
        }
    }
}

/// How a write of the state ended (logged when it failed).
fn outcome(written: Result<Result<(), StoreError>, tokio::task::JoinError>) -> Result<(), String> {
    let result = written.map_err(StoreError::from).and_then(|kept| kept);
    result.map_err(|e| {
        tracing::error!(error = %e, "cannot keep the triggers");
        e.to_string()
    })
}

/// Asks one of our servers; its reply, or why there is none.
async fn control_request(
    client: &Client,
    key: &DeploymentKey,
    url: &str,
    order: ControlOrder,
) -> Result<ControlReply, String> {
    let request = ControlRequest {
        trigger_id: order.trigger_id,
        operation: order.operation,
        urls: order.urls,
        patterns: order.patterns,
        configuration: order.configuration,
        issued_at_ms: now_ms(),
        nonce: rand::random(),
    };
    let body = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
    let headers = [
        (CONTROL_HEADER, deployment::sign(key, &body)),
        ("content-type", "application/json".into()),
    ];
    let (status, _, answer) = call(client, Method::POST, url, &headers, body, SEND_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    if status != StatusCode::OK {
        return Err(format!(
            "{url} answered {status}: {}",
            String::from_utf8_lossy(&answer).trim()
        ));
    }
    serde_json::from_slice(&answer).map_err(|e| format!("{url}: {e}"))
}

/// Posts the cascaded command to a partner.
async fn command_partner(partner: &Partner, command: Vec<u8>) -> PartnerAnswer {
    let pid = partner.id;
    let url = format!("{}{PARTNER_TRIGGERS_PATH}", partner.url);
    let headers = [(
        "content-type",
        PayloadType::Command.content_type().to_owned(),
    )];
    let answer = call(
        &partner.client,
        Method::POST,
        &url,
        &headers,
        command,
        PARTNER_TIMEOUT,
    )
    .await;
    match answer {
        Ok((StatusCode::CREATED, headers, _)) => {
            match headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) {
                // Relative or absolute; always followed on the partner's listener.
                Some(location) => {
                    PartnerAnswer::Created(format!("{}{}", partner.url, path_of(location)))
                }
                None => PartnerAnswer::Refused(format!("{pid} answered 201 without a Location")),
            }
        }
        Ok((status, _, body)) if status.is_client_error() => PartnerAnswer::Refused(format!(
            "{pid} refused the command ({status}): {}",
            String::from_utf8_lossy(&body)
                .trim()
                .chars()
                .take(300)
                .collect::<String>()
        )),
        Ok((status, _, _)) => {
            tracing::warn!(partner = %pid, %status, "partner failed the command");
            PartnerAnswer::Unreachable
        }
        Err(e) => {
            tracing::warn!(partner = %pid, error = %e, "partner not reached");
            PartnerAnswer::Unreachable
        }
    }
}

/// Reads a partner's status resource.
async fn poll_partner(partner: &Partner, location: &str, etag: Option<String>) -> PollAnswer {
    let pid = partner.id;
    let headers: Vec<(&str, String)> = etag.map(|tag| ("if-none-match", tag)).into_iter().collect();
    let answer = call(
        &partner.client,
        Method::GET,
        location,
        &headers,
        Vec::new(),
        PARTNER_TIMEOUT,
    )
    .await;
    match answer {
        Ok((StatusCode::OK, headers, body)) => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            match parse_status(content_type, &body) {
                Ok(status) => PollAnswer::Status {
                    status: Box::new(status),
                    etag: headers
                        .get(header::ETAG)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned),
                },
                Err(e) => {
                    tracing::warn!(partner = %pid, %location, error = %e, "partner's status resource does not parse");
                    PollAnswer::Failed
                }
            }
        }
        Ok((StatusCode::NOT_MODIFIED, _, _)) => PollAnswer::NotModified,
        Ok((status, _, _))
            if status == StatusCode::NOT_FOUND || status == StatusCode::FORBIDDEN =>
        {
            PollAnswer::Gone(format!("answered {status}"))
        }
        Ok((status, _, _)) => {
            tracing::debug!(partner = %pid, %status, "partner status poll failed");
            PollAnswer::Failed
        }
        Err(e) => {
            tracing::debug!(partner = %pid, error = %e, "partner status poll failed");
            PollAnswer::Failed
        }
    }
}

async fn cancel_at_partner(partner: &Partner, command: Vec<u8>) {
    let url = format!("{}{PARTNER_TRIGGERS_PATH}", partner.url);
    let headers = [(
        "content-type",
        PayloadType::Command.content_type().to_owned(),
    )];
    if let Err(e) = call(
        &partner.client,
        Method::POST,
        &url,
        &headers,
        command,
        PARTNER_TIMEOUT,
    )
    .await
    {
        tracing::warn!(partner = %partner.id, error = %e, "cannot cancel at the partner");
    }
}

#[cfg(test)]
mod tests;
