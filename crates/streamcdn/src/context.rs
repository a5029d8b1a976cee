//! Roles as one shape: each role (`ingest`, `edge`, `archiver`, the providers' API, and
//! the ones to come) implements [`Role`] and starts inside a shared [`Context`]: the
//! configuration, the registry, shutdown, listeners, admin routes, metrics hooks and
//! this server's node record. [`run`] starts a list of roles, announces the server in
//! the node directory, and shuts everything down in order. `up` is just every role.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use axum::Router;
use futures::future::BoxFuture;
use streamcdn_access::deployment::DeploymentKey;
use streamcdn_archive::{Archive, StoreSettings};
use streamcdn_config::{ArchiveStore, Config, RegistryBackend};
use streamcdn_providers::Providers;
use streamcdn_recording::RecordingStore;
use streamcdn_registry::{NodeRecord, Registry};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use crate::admin::{self, ScrapeHook};
use crate::directory;
use crate::http::{self, Traffic};

/// Viewer prefixes whose connection RTTs are kept between reports, and samples each.
const PASSIVE_PREFIXES: usize = 16_384;
const PASSIVE_SAMPLES: usize = 16;
const PASSIVE_MAX_AGE: Duration = Duration::from_secs(60);

/// A role of a streamcdn server.
pub trait Role: Send {
    /// What the node directory lists this role as (`None` for helpers such as the
    /// providers' API, which are not a role of their own).
    fn announced_as(&self) -> Option<streamcdn_registry::Role>;

    /// Binds listeners, spawns tasks and registers routes on `ctx`; returns once the
    /// role is serving.
    fn start<'a>(self: Box<Self>, ctx: &'a mut Context) -> BoxFuture<'a, anyhow::Result<()>>;
}

/// What a role waits for, once the server drains, before it may stop.
type DrainWait = BoxFuture<'static, ()>;

/// What every role starts with, and what it leaves for the others.
pub struct Context {
    pub config: Config,
    pub registry: Registry,
    /// This server as the node directory lists it; roles add their addresses.
    pub node: NodeRecord,
    shutdown: watch::Sender<bool>,
    /// Flips to `true` first when the server is asked to stop (SIGTERM, `POST
    /// /api/v1/drain`): roles take nothing new and hand over what they have.
    drain: watch::Sender<bool>,
    drain_waits: Vec<(&'static str, DrainWait)>,
    tasks: JoinSet<()>,
    admin_routes: Router,
    scrape_hooks: Vec<ScrapeHook>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    playback: Arc<Traffic>,
    recordings: Option<RecordingStore>,
    /// Counts this server's publishers for its load in the node directory (ingest role).
    pub publishers: Option<directory::PublisherCount>,
    /// The SHA-256 fingerprint of the certificate playback over TLS started with.
    pub tls_fingerprint: Option<String>,
}

pub async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for {what}"))
}

/// `http://host:port` for a listener, with loopback for an unspecified address.
pub fn local_url(addr: SocketAddr) -> String {
    format!("http://{}", local_authority(addr))
}

/// [`local_url`] for a TLS listener.
pub fn local_https_url(addr: SocketAddr) -> String {
    format!("https://{}", local_authority(addr))
}

fn local_authority(addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        addr.ip().to_string()
    };
    format!("{host}:{}", addr.port())
}

/// The deployment key, shared by every server through the registry (the first server to
/// ask generates it). Stored under the name `probe`, its first use, so deployments keep
/// their key across upgrades.
pub async fn deployment_key(registry: &Registry) -> anyhow::Result<DeploymentKey> {
    let candidate = DeploymentKey::generate().to_hex();
    let stored = registry
        .shared_secret("probe", &candidate)
        .await
        .context("cannot read the deployment key from the registry")?;
    DeploymentKey::from_hex(&stored)
        .map_err(|e| anyhow::anyhow!("the registry's deployment key is corrupt: {e}"))
}

async fn open_registry(config: &Config) -> anyhow::Result<Registry> {
    let registry = &config.registry;
    match registry.backend {
        RegistryBackend::Memory => Ok(Registry::memory()),
        RegistryBackend::Redis => Registry::redis(&registry.url, &registry.namespace)
            .await
            .map(|r| r.with_lease(registry.lease))
            .with_context(|| format!("cannot reach the registry at {}", registry.url)),
    }
}

/// This server's name in the registry: `node.id`, else the address of its origin (an
/// ingest), its playback listener (an edge) or its HTTP listener (a router), else its
/// first role and cluster.
fn node_id(config: &Config, roles: &[streamcdn_registry::Role]) -> String {
    use streamcdn_registry::Role as R;
    if let Some(id) = &config.node.id {
        return id.clone();
    }
    let strip = |url: String| url.trim_start_matches("http://").to_owned();
    let derived = if roles.contains(&R::Ingest) {
        config.origin.advertised_url().map(strip)
    } else if roles.contains(&R::Edge) || roles.contains(&R::MidTier) {
        config.http.advertised_url().map(strip)
    } else if roles.contains(&R::Router) && !config.router.http_listen.ip().is_unspecified() {
        // Two routers of one zone must not share an id (one record would hide the other).
        Some(format!("router-{}", config.router.http_listen))
    } else {
        None
    };
    match (derived, roles.first()) {
        (Some(id), _) => id,
        (None, Some(role)) => format!(
            "{}-{}",
            serde_json::to_value(role)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            config.node.cluster
        ),
        (None, None) => format!("node-{}", config.node.cluster),
    }
}

impl Context {
    async fn new(config: Config, roles: Vec<streamcdn_registry::Role>) -> anyhow::Result<Self> {
        let node = NodeRecord {
            id: node_id(&config, &roles),
            cluster: config.node.cluster.clone(),
            origin: String::new(),
            roles,
            site: config.node.site().to_owned(),
            addresses: Default::default(),
            load: Default::default(),
            capacity: None,
            draining: false,
        };
        Ok(Self {
            registry: open_registry(&config).await?,
            node,
            config,
            shutdown: watch::channel(false).0,
            drain: watch::channel(false).0,
            drain_waits: Vec::new(),
            tasks: JoinSet::new(),
            admin_routes: Router::new(),
            scrape_hooks: Vec::new(),
            metrics: admin::install_metrics()?,
            playback: Arc::new(Traffic::with_passive_rtts(
                streamcdn_probe_agent::PassiveRtts::new(
                    PASSIVE_PREFIXES,
                    PASSIVE_SAMPLES,
                    PASSIVE_MAX_AGE,
                ),
            )),
            recordings: None,
            publishers: None,
            tls_fingerprint: None,
        })
    }

    /// Flips to `true` when the server shuts down.
    pub fn shutdown(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Flips to `true` when the server starts draining, before shutdown.
    pub fn draining(&self) -> watch::Receiver<bool> {
        self.drain.subscribe()
    }

    /// Once the server drains, it stops when `handed_over` has resolved for every role
    /// that registered one (or after `node.drain_timeout`). `role` names it in logs.
    pub fn on_drain(
        &mut self,
        role: &'static str,
        handed_over: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        self.drain_waits.push((role, Box::pin(handed_over)));
    }

    /// Runs `task` until shutdown; a task that ends early stops the server.
    pub fn spawn(&mut self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// Serves `router` on `listener` until shutdown.
    pub fn serve_http(&mut self, listener: TcpListener, router: Router) {
        self.serve(listener, router, None, None);
    }

    /// Serves viewers: like [`Context::serve_http`], and metered for the node's load
    /// and for the passive RTT of viewer connections; over TLS (HTTP/2 or HTTP/1.1 by
    /// ALPN) when `tls` is given.
    pub fn serve_playback(
        &mut self,
        listener: TcpListener,
        router: Router,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) {
        self.serve(listener, router, Some(self.playback.clone()), tls);
    }

    /// Serves over TLS with client certificates (the federation listener): each
    /// request carries the client's certificate ([`crate::http::PeerCertificate`]).
    pub fn serve_tls(
        &mut self,
        listener: TcpListener,
        router: Router,
        tls: tokio_rustls::TlsAcceptor,
    ) {
        self.serve(listener, router, None, Some(tls));
    }

    /// What the playback listener has measured.
    pub fn playback_traffic(&self) -> Arc<Traffic> {
        self.playback.clone()
    }

    fn serve(
        &mut self,
        listener: TcpListener,
        router: Router,
        traffic: Option<Arc<Traffic>>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) {
        let max_header = self.config.http.max_header_size.0 as usize;
        let grace = self.config.node.shutdown_grace;
        let shutdown = self.shutdown();
        self.tasks.spawn(http::serve(
            listener, router, max_header, grace, traffic, tls, shutdown,
        ));
    }

    /// Adds routes to the admin API.
    pub fn add_admin_routes(&mut self, routes: Router) {
        self.admin_routes = std::mem::take(&mut self.admin_routes).merge(routes);
    }

    /// Runs `hook` before every metrics scrape.
    pub fn on_scrape(&mut self, hook: ScrapeHook) {
        self.scrape_hooks.push(hook);
    }

    /// The cluster's recordings (`<node.data_dir>/recordings`), one store shared by the
    /// roles of this process.
    pub fn recordings(&mut self) -> anyhow::Result<RecordingStore> {
        if let Some(store) = &self.recordings {
            return Ok(store.clone());
        }
        let dir = self.config.node.data_dir.join("recordings");
        let store = RecordingStore::open(&dir)
            .with_context(|| format!("cannot open recordings in {}", dir.display()))?;
        self.recordings = Some(store.clone());
        Ok(store)
    }

    pub fn providers(&self) -> Providers {
        Providers::new(
            &self.config.providers,
            self.config.archive.default_after,
            self.registry.clone(),
        )
    }

    /// On-demand storage as `[archive]` configures it.
    pub fn archive(&self) -> anyhow::Result<Archive> {
        let archive = &self.config.archive;
        let settings = match archive.store {
            ArchiveStore::Local => StoreSettings::Local {
                dir: archive
                    .dir
                    .clone()
                    .unwrap_or_else(|| self.config.node.data_dir.join("archive")),
            },
            ArchiveStore::S3 => StoreSettings::S3 {
                bucket: archive.s3.bucket.clone(),
                region: archive.s3.region.clone(),
                endpoint: archive.s3.endpoint.clone(),
                path_style: archive.s3.path_style,
                access_key_id: archive.s3.access_key_id.clone(),
                secret_access_key: archive.s3.secret_access_key.clone(),
            },
        };
        Archive::open(&settings).context("cannot open on-demand storage ([archive])")
    }
}

/// The drain: announced, then each role's hand-over awaited within `node.drain_timeout`;
/// a second signal cuts it short.
async fn drain(ctx: &mut Context) {
    let timeout = ctx.config.node.drain_timeout;
    ctx.drain.send_replace(true);
    metrics::gauge!("streamcdn_draining").set(1.0);
    let started = tokio::time::Instant::now();
    let roles: Vec<&str> = ctx.drain_waits.iter().map(|(role, _)| *role).collect();
    tracing::info!(
        ?roles,
        timeout_secs = timeout.as_secs_f64(),
        "draining: taking nothing new, handing over what this server has"
    );
    let waits = futures::future::join_all(std::mem::take(&mut ctx.drain_waits).into_iter().map(
        |(role, wait)| async move {
            wait.await;
            tracing::info!(role, "drained");
        },
    ));
    // Tasks that end now (a listener closed by the drain) are expected.
    let tasks = async {
        while ctx.tasks.join_next().await.is_some() {}
        std::future::pending::<()>().await
    };
    let outcome = tokio::select! {
        _ = waits => "every role handed over",
        _ = tokio::time::sleep(timeout) => "node.drain_timeout elapsed",
        _ = shutdown_signal() => "a second signal",
        () = tasks => "the roles' tasks ended",
    };
    metrics::histogram!("streamcdn_drain_duration_seconds").record(started.elapsed().as_secs_f64());
    tracing::info!(
        outcome,
        secs = started.elapsed().as_secs_f64(),
        "drain over"
    );
}

/// `POST /api/v1/drain` (admin): starts the drain (as SIGTERM does; the process exits
/// once drained) and answers what it started.
fn drain_route(ctx: &Context) -> Router {
    use axum::routing::post;
    let drain = ctx.drain.clone();
    let node = ctx.node.clone();
    let timeout = ctx.config.node.drain_timeout;
    let grace = ctx.config.node.shutdown_grace;
    Router::new().route(
        "/api/v1/drain",
        post(move || {
            let started = drain.send_if_modified(|draining| !std::mem::replace(draining, true));
            if started {
                tracing::info!("drain requested through the admin API");
            }
            let roles: Vec<serde_json::Value> = node
                .roles
                .iter()
                .map(|role| {
                    serde_json::json!({
                        "role": role,
                        "drain": drain_action(*role),
                    })
                })
                .collect();
            let body = serde_json::json!({
                "node": node.id,
                "started": started,
                "draining": true,
                "roles": roles,
                "drain_timeout_secs": timeout.as_secs_f64(),
                "shutdown_grace_secs": grace.as_secs_f64(),
            });
            async move { (axum::http::StatusCode::ACCEPTED, axum::Json(body)) }
        }),
    )
}

/// What a drain does for `role`, as `POST /api/v1/drain` reports it.
fn drain_action(role: streamcdn_registry::Role) -> &'static str {
    use streamcdn_registry::Role as R;
    match role {
        R::Ingest => "RTMP listener closed (the load balancer's check fails); publishers asked to reconnect (Enhanced RTMP) or closed after drain_timeout; their streams interrupted, not ended, for another server to continue",
        R::Edge | R::MidTier => "announced draining and /healthz 503, so routers stop naming it; viewers served until they have moved or drain_timeout",
        R::Archiver => "no new upload; the current one finishes within drain_timeout or is abandoned for the next archiver",
        R::Router => "announced draining; answers until another router can take over or drain_timeout",
    }
}

/// Resolves when SIGINT or SIGTERM arrives.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Starts `roles` in order, then serves until SIGINT/SIGTERM or `POST /api/v1/drain`:
/// drains (announced as draining, each role takes nothing new and hands over what it
/// has, within `node.drain_timeout`), stops accepting, lets the roles finish (segments
/// in progress, open requests) within `node.shutdown_grace`, and withdraws the server
/// from the node directory last. `started` runs once every role serves.
pub async fn run(
    config: Config,
    roles: Vec<Box<dyn Role>>,
    started: impl FnOnce(&Context),
) -> anyhow::Result<()> {
    let tokens = admin::tokens(&config.admin);
    let admin_addr = config.admin.listen;
    if tokens.is_empty() && !admin_addr.ip().is_loopback() {
        anyhow::bail!(
            "admin.listen {admin_addr} is not a loopback address and no [[admin.tokens]] is configured: \
             anyone who reaches it could run the admin API; add a token (role \"admin\" or \"read\") or listen on 127.0.0.1"
        );
    }
    let announced = roles.iter().filter_map(|r| r.announced_as()).collect();
    let mut ctx = Context::new(config, announced).await?;
    for role in roles {
        role.start(&mut ctx).await?;
    }
    let admin_listener = bind(ctx.config.admin.listen, "the admin API").await?;
    if !ctx.config.admin.listen.ip().is_unspecified() {
        ctx.node.addresses.admin = Some(local_url(ctx.config.admin.listen));
    }
    // Every admin listener shows the whole deployment, read from the other servers'.
    let peers =
        streamcdn_access::admin::PeerKey::of_deployment(&deployment_key(&ctx.registry).await?);
    ctx.add_admin_routes(streamcdn_overview::api::admin_router(
        streamcdn_overview::fetch::Overview::new(
            ctx.registry.clone(),
            ctx.node.id.clone(),
            local_url(ctx.config.admin.listen),
            peers.clone(),
        ),
    ));
    ctx.add_admin_routes(drain_route(&ctx));
    let admin = admin::router(
        ctx.metrics.clone(),
        std::mem::take(&mut ctx.scrape_hooks),
        ctx.registry.clone(),
        std::mem::take(&mut ctx.admin_routes),
        tokens.with_peers(peers),
    );
    let admin = streamcdn_overview::sources::name_the_server(admin, &ctx.node.id);
    ctx.serve_http(admin_listener, admin);
    let (stop_directory, stopped) = oneshot::channel();
    let directory = tokio::spawn(directory::announce(
        ctx.registry.clone(),
        ctx.node.clone(),
        ctx.config.registry.lease,
        ctx.playback.clone(),
        ctx.publishers.clone(),
        ctx.drain.subscribe(),
        stopped,
    ));
    started(&ctx);

    let mut drain_requested = ctx.drain.subscribe();
    tokio::select! {
        // A drain through the API ends tasks at once (a listener closed): not a failure.
        biased;
        _ = shutdown_signal() => {}
        _ = drain_requested.wait_for(|d| *d) => {}
        Some(_) = ctx.tasks.join_next() => {
            if !*ctx.drain.borrow() {
                bail!("a server stopped unexpectedly");
            }
        }
    }
    drain(&mut ctx).await;
    tracing::info!("shutting down: finishing segments in progress and open requests");
    let _ = ctx.shutdown.send(true);
    let grace = ctx.config.node.shutdown_grace + Duration::from_secs(1);
    let drained = tokio::time::timeout(grace, async {
        while ctx.tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("shutdown grace period elapsed; exiting");
    }
    let _ = stop_directory.send(());
    let _ = tokio::time::timeout(Duration::from_secs(3), directory).await;
    tracing::info!("stopped");
    Ok(())
}
