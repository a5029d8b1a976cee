//! The edge role: the HTTP cache, below `edge.parents` or, with none, the top tier that
//! finds streams through the registry and archived recordings in on-demand storage; in
//! front of it, each stream's player page, the browser assets and rum.js's test object.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use streamcdn_access::deployment::{self, DeploymentKey, ReplayGuard};
use streamcdn_config::EdgeTier;
use streamcdn_edge::carried::{self, CacheBudget, Carried};
use streamcdn_edge::{control_endpoint, whep};
use streamcdn_edge::{ClipSettings, Edge, EdgeSettings, UpstreamKind};
use streamcdn_probe_agent::ProbeBudget;
use streamcdn_registry::Registry;
use streamcdn_routing::probe::{self, PROBE_HEADER, SHARED_SAMPLE_TTL};
use streamcdn_support::clock::now_ms;
use streamcdn_urls::internal::{CONTROL_PATH, PROBE_PATH, RUM_OBJECT_PATH};
use streamcdn_urls::{StreamName, Target};
use streamcdn_web::{Asset, HLS_JS, RUM_JS, RUM_OBJECT};

use super::playback_access::{self, PlaybackAccess};
use crate::context::{bind, Context, Role};
use crate::tls::Certificates;

/// Probes an edge runs for routers, per second, and in a burst.
const PROBES_PER_SEC: u32 = 20;
const PROBE_BURST: u32 = 40;
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Measures toward viewers when a router asks, if it proves it holds the deployment's
/// key (and within the edge's probe budget).
struct Prober {
    key: DeploymentKey,
    edge: String,
    guard: Mutex<ReplayGuard>,
    budget: Mutex<ProbeBudget>,
}

/// How often the RTTs of viewer connections are shared with the routers.
const PASSIVE_EVERY: Duration = Duration::from_secs(5);

/// Shares the kernel's RTT of real viewer connections, per client prefix, with every
/// router through the registry: a passive signal beside the probes.
async fn share_passive_rtts(
    traffic: Arc<crate::http::Traffic>,
    registry: streamcdn_registry::Registry,
    edge: String,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PASSIVE_EVERY) => {}
            _ = shutdown.changed() => return,
        }
        for report in traffic.drain_passive(&edge, now_ms()) {
            let Ok(json) = serde_json::to_string(&report) else {
                continue;
            };
            let prefix = report.prefix.to_string();
            if let Err(e) = registry
                .record_sample(&prefix, &edge, json, SHARED_SAMPLE_TTL)
                .await
            {
                tracing::debug!(error = %e, "cannot share viewer RTTs");
                break;
            }
            metrics::counter!("streamcdn_edge_passive_rtt_reports_total").increment(1);
        }
    }
}

async fn probe_request(
    State(prober): State<Arc<Prober>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = now_ms();
    let header = headers.get(PROBE_HEADER).and_then(|v| v.to_str().ok());
    let verified = {
        let mut guard = prober.guard.lock().unwrap_or_else(|e| e.into_inner());
        probe::verify(&prober.key, &body, header, now, &mut guard)
    };
    let request = match verified {
        Ok(r) => r,
        Err(e) => {
            metrics::counter!("streamcdn_edge_probes_total", "outcome" => "refused").increment(1);
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            return (status, format!("{e}\n")).into_response();
        }
    };
    if request.edge != prober.edge {
        metrics::counter!("streamcdn_edge_probes_total", "outcome" => "refused").increment(1);
        return (StatusCode::FORBIDDEN, "request meant for another edge\n").into_response();
    }
    let admitted = prober
        .budget
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .try_take(now);
    if !admitted {
        metrics::counter!("streamcdn_edge_probes_total", "outcome" => "over_budget").increment(1);
        return (StatusCode::TOO_MANY_REQUESTS, "probe budget exhausted\n").into_response();
    }
    let outcome =
        streamcdn_probe_agent::probe(request.target, request.attempts, PROBE_TIMEOUT).await;
    metrics::counter!("streamcdn_edge_probes_total", "outcome" => outcome.method.as_str())
        .increment(1);
    axum::Json(outcome.report(&prober.edge, &request, now_ms())).into_response()
}

/// How long the router found in the node directory is trusted before looking again.
const ROUTER_LOOKUP_TTL: Duration = Duration::from_secs(5);

/// What this edge serves browsers besides media: player pages (embedding rum.js when a
/// router is known) and the assets.
struct Web {
    registry: Registry,
    /// The router's HTTP base URL (`None`: no router announces one), and when it was
    /// looked up.
    router: Mutex<Option<(Instant, Option<String>)>>,
}

impl Web {
    /// The `routing` address of a router in the node directory, looked up at most every
    /// [`ROUTER_LOOKUP_TTL`]; while the registry fails, the last one found.
    async fn router_url(&self) -> Option<String> {
        let cached = self
            .router
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some((looked_up, url)) = &cached {
            if looked_up.elapsed() < ROUTER_LOOKUP_TTL {
                return url.clone();
            }
        }
        let url = match self.registry.nodes().await {
            Ok(nodes) => nodes
                .into_iter()
                .filter(|node| node.roles.contains(&streamcdn_registry::Role::Router))
                .find_map(|node| node.addresses.routing),
            Err(e) => {
                tracing::debug!(error = %e, "cannot look up routers; keeping the last one");
                cached.and_then(|(_, url)| url)
            }
        };
        *self.router.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), url.clone()));
        url
    }

    async fn player_page(&self, stream: &StreamName) -> Response {
        count_web("player");
        let page = streamcdn_web::player_page(
            &stream.provider,
            &stream.stream,
            self.router_url().await.as_deref(),
        );
        (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                // Small, and names the current router: asked for anew each time.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            page,
        )
            .into_response()
    }
}

fn count_web(object: &'static str) {
    metrics::counter!("streamcdn_edge_web_requests_total", "object" => object).increment(1);
}

/// Answers the player page's URLs (`urls::Target::PlayerPage`) in front of the cache,
/// which would answer them 404.
async fn player_pages(State(web): State<Arc<Web>>, request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        if let Ok(Target::PlayerPage(stream)) = Target::parse(request.uri().path()) {
            return web.player_page(&stream).await;
        }
    }
    next.run(request).await
}

/// Pages on any origin may load these and read their Resource Timing.
fn allow_cross_origin(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert("timing-allow-origin", HeaderValue::from_static("*"));
}

/// An embedded asset, with its digest as the ETag (`304` when the browser has it).
pub(crate) fn asset_response(
    asset: &'static Asset,
    label: &'static str,
    request: &HeaderMap,
) -> Response {
    count_web(label);
    let etag = format!("\"{}\"", asset.digest());
    let cached = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| streamcdn_urls::conditional::if_none_match(tags, &etag));
    let mut response = if cached {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        Response::new(Body::from(asset.body))
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(asset.cache_control),
    );
    if let Ok(etag) = HeaderValue::try_from(etag) {
        headers.insert(header::ETAG, etag);
    }
    allow_cross_origin(headers);
    response
}

/// rum.js's test object: the same static bytes every time, never cached (each download
/// must cross the network), timing readable from any page.
async fn rum_object() -> Response {
    count_web("rum_object");
    let mut response = Response::new(Body::from(Bytes::from_static(&RUM_OBJECT)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    allow_cross_origin(headers);
    response
}

/// The player pages, assets and test object, layered over `media` (the cache).
fn web_routes(registry: Registry, media: axum::Router) -> axum::Router {
    let web = Arc::new(Web {
        registry,
        router: Mutex::new(None),
    });
    axum::Router::new()
        .route(
            HLS_JS.path,
            get(|headers: HeaderMap| async move { asset_response(&HLS_JS, "hls.js", &headers) }),
        )
        .route(
            RUM_JS.path,
            get(|headers: HeaderMap| async move { asset_response(&RUM_JS, "rum.js", &headers) }),
        )
        .route(RUM_OBJECT_PATH, get(rum_object))
        .merge(media)
        .layer(axum::middleware::from_fn_with_state(web, player_pages))
}

pub struct EdgeRole {
    tier: EdgeTier,
}

impl EdgeRole {
    pub fn new(config: &streamcdn_config::Config) -> Self {
        Self {
            tier: config.edge.tier,
        }
    }
}

impl Role for EdgeRole {
    fn announced_as(&self) -> Option<streamcdn_registry::Role> {
        Some(match self.tier {
            EdgeTier::Edge => streamcdn_registry::Role::Edge,
            EdgeTier::Mid => streamcdn_registry::Role::MidTier,
        })
    }

    fn start<'a>(self: Box<Self>, ctx: &'a mut Context) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(start(ctx))
    }
}

async fn start(ctx: &mut Context) -> anyhow::Result<()> {
    // Checked first: a certificate that cannot be served fails the start before any
    // listener of this role is bound.
    let tls = match ctx.config.http.tls_listen.addr() {
        Some(addr) => {
            let config = &ctx.config;
            // HTTP/2, then HTTP/1.1, by ALPN.
            let (certificates, acceptor) = Certificates::load(
                &config.http,
                &config.node.data_dir,
                &[b"h2", b"http/1.1"],
                "playback",
            )
            .await?;
            Some((addr, certificates, acceptor))
        }
        None => None,
    };
    let config = &ctx.config;
    let parents: Vec<String> = config
        .edge
        .parents
        .iter()
        .map(|p| p.trim_end_matches('/').to_owned())
        .collect();
    let (upstream, archive) = if parents.is_empty() {
        // The top tier also serves archived recordings from on-demand storage.
        (
            UpstreamKind::Registry(ctx.registry.clone()),
            Some(ctx.archive()?),
        )
    } else {
        (UpstreamKind::Parents(parents.clone()), None)
    };
    let disk = (config.edge.cache_disk.0 > 0).then(|| {
        let dir = config
            .edge
            .cache_dir
            .clone()
            .unwrap_or_else(|| config.node.data_dir.join("cache"));
        (dir, config.edge.cache_disk.0)
    });
    let key = crate::context::deployment_key(&ctx.registry).await?;
    let tier_credential = deployment::tier_credential(&key);
    let edge = Edge::new(EdgeSettings {
        upstream,
        archive,
        cache_memory_bytes: config.edge.cache_memory.0,
        max_object_bytes: config.edge.max_object_size.0,
        upstream_timeout: config.edge.upstream_timeout,
        disk,
        stale_if_error: config.edge.stale_if_error,
        max_ttl: None,
        tier_credential: Some(tier_credential.clone()),
        upstream_http2: config.edge.upstream_http2,
        clip: ClipSettings {
            max_duration: config.edge.max_clip_duration,
            max_cached_bytes: config.edge.max_object_size.0,
        },
    })
    .context("cannot open the edge's disk cache")?;
    let listener = bind(config.http.listen, "playback (edge)").await?;
    if parents.is_empty() {
        tracing::info!(playback = %config.http.listen, "edge listening (top tier: streams found through the registry)");
    } else {
        tracing::info!(playback = %config.http.listen, ?parents, "edge listening");
    }
    ctx.node.capacity = (config.edge.capacity > 0).then_some(config.edge.capacity);
    match config.http.advertised_url() {
        Some(url) => {
            ctx.node.addresses.playback = Some(url);
        }
        None => tracing::warn!(
            listen = %config.http.listen,
            "http.advertise is not set: the node directory will not list where viewers reach this edge"
        ),
    }
    let tier = ctx.config.edge.cache_tier();
    if let Some(playback) = &ctx.node.addresses.playback {
        let url = format!("{}{CONTROL_PATH}", playback.trim_end_matches('/'));
        ctx.node.addresses.control = Some(tier.announce(&url));
    }
    let prober = Arc::new(Prober {
        key: key.clone(),
        edge: ctx.node.id.clone(),
        guard: Mutex::new(ReplayGuard::new(100_000)),
        budget: Mutex::new(ProbeBudget::new(PROBES_PER_SEC, PROBE_BURST)),
    });
    let probes = axum::Router::new()
        .route(PROBE_PATH, axum::routing::post(probe_request))
        .with_state(prober);
    let carried = Carried::new(
        ctx.registry.clone(),
        ctx.node.clone(),
        CacheBudget {
            memory_bytes: (config.edge.cache_memory.0 / 4).max(1024 * 1024),
            disk_bytes: config.edge.cache_disk.0 / 4,
            max_object_bytes: config.edge.max_object_size.0,
            upstream_timeout: config.edge.upstream_timeout,
            stale_if_error: config.edge.stale_if_error,
            dir: config.node.data_dir.join("carried"),
        },
    );
    let whep = match (config.edge.tier, config.edge.webrtc.listen.addr()) {
        (EdgeTier::Edge, Some(listen)) => {
            let configured: Vec<(String, u16)> = config
                .edge
                .webrtc
                .candidate_hosts()
                .into_iter()
                .flatten()
                .collect();
            let advertised = config.http.advertised_url();
            let settings = streamcdn_webrtc::WebRtcSettings {
                candidates: whep::candidates(&configured, advertised.as_deref()).await,
                inactivity_timeout: config.edge.webrtc.inactivity_timeout,
                max_sessions: config.edge.webrtc.max_sessions,
            };
            let server = streamcdn_webrtc::WebRtcServer::bind(listen, settings)
                .await
                .context("cannot start WebRTC playback (edge.webrtc)")?;
            let handle = server.handle();
            tracing::info!(webrtc = %server.local_addr(), candidates = ?handle.candidates(), "WHEP playback listening");
            ctx.spawn(server.serve(ctx.shutdown()));
            Some(whep::Whep::new(edge.clone(), handle))
        }
        _ => None,
    };
    let media = edge
        .router()
        .layer(axum::middleware::from_fn_with_state(
            carried.clone(),
            carried::dispatch,
        ))
        .merge(whep.as_ref().map(whep::Whep::router).unwrap_or_default())
        .merge(probes)
        .merge(control_endpoint::routes(key, edge.clone(), carried.clone()));
    ctx.spawn(carried.keep_current(ctx.shutdown()));
    let viewers = streamcdn_edge::viewers::Viewers::new();
    ctx.add_admin_routes(streamcdn_edge::viewers::admin_router(viewers.clone()));
    let routes = web_routes(ctx.registry.clone(), media)
        .layer(axum::middleware::from_fn_with_state(
            viewers,
            streamcdn_edge::viewers::count_viewers,
        ))
        .layer(axum::middleware::from_fn_with_state(
            PlaybackAccess::new(ctx.registry.clone(), &tier_credential),
            playback_access::check,
        ));
    // Outermost: a drained edge's /healthz fails whatever else would answer it.
    let drain = streamcdn_edge::drain::Drain::new(ctx.draining());
    let routes = routes.layer(axum::middleware::from_fn_with_state(
        drain.clone(),
        streamcdn_edge::drain::layer,
    ));
    ctx.on_drain("edge", drain.handed_over());
    if let Some((addr, certificates, acceptor)) = tls {
        let tls_listener = bind(addr, "playback over TLS (edge)").await?;
        let fingerprint = certificates.fingerprint();
        tracing::info!(playback_tls = %addr, certificate = %fingerprint, generated = ?certificates.generated_at(), "edge listening over TLS (HTTP/2, HTTP/1.1)");
        ctx.tls_fingerprint = Some(fingerprint);
        ctx.serve_playback(tls_listener, routes.clone(), Some(acceptor));
        ctx.spawn(certificates.watch(ctx.shutdown()));
    }
    ctx.serve_playback(listener, routes, None);
    ctx.spawn(share_passive_rtts(
        ctx.playback_traffic(),
        ctx.registry.clone(),
        ctx.node.id.clone(),
        ctx.shutdown(),
    ));
    let sizes = edge.clone();
    ctx.on_scrape(Arc::new(move || {
        let edge = sizes.clone();
        Box::pin(async move { edge.report_cache_sizes().await })
    }));
    Ok(())
}
