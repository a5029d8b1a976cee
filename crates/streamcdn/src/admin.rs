//! The admin listener: Prometheus `/metrics`, `/healthz`, the node directory
//! (`/api/v1/nodes`), and the REST API of each role running in this process, behind
//! bearer tokens (`streamcdn_access::admin`): `401` without a known token, `403` for a
//! read-only token on a write or a provider token outside its provider. Handlers that
//! list several providers' things filter by the [`Caller`] in the request's extensions.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::future::BoxFuture;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use streamcdn_access::admin::{Role, Token, Tokens};
use streamcdn_config::{AdminConfig, AdminRole};
use streamcdn_registry::Registry;

/// Run before each scrape, so gauges that are costly to keep current (cache sizes) are
/// measured when they are read.
pub type ScrapeHook = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// The OpenAPI 3.1 document of the whole admin API, every role's routes (served at
/// `/api/v1/openapi.json`; `tests/openapi.rs` runs schemathesis against it).
pub const OPENAPI: &str = include_str!("openapi.json");

pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("duration_seconds".into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ],
        )?
        .install_recorder()?;
    Ok(handle)
}

/// The configured tokens.
pub fn tokens(config: &AdminConfig) -> Tokens {
    Tokens::new(
        config
            .tokens
            .iter()
            .map(|t| {
                let role = match t.role {
                    AdminRole::Admin => Role::Admin,
                    AdminRole::Read => Role::Read,
                };
                Token::new(&t.token, role, t.provider.clone())
            })
            .collect(),
    )
}

/// Lets a request through as its [`Caller`], or answers `401`/`403`.
async fn authorize(
    State(tokens): State<Arc<Tokens>>,
    mut request: Request,
    next: Next,
) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match tokens.authorize(
        request.method().as_str(),
        request.uri().path(),
        authorization,
        streamcdn_support::clock::now_ms(),
    ) {
        Ok(caller) => {
            if let Some(caller) = caller {
                request.extensions_mut().insert(caller);
            }
            next.run(request).await
        }
        Err(denied) => {
            metrics::counter!("streamcdn_admin_denied_total", "status" => denied.http_status().to_string())
                .increment(1);
            let status =
                StatusCode::from_u16(denied.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
            let mut response = (status, format!("{denied}\n")).into_response();
            if status == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"streamcdn admin\""),
                );
            }
            response
        }
    }
}

/// The admin root: leads a browser (at once) and a person (a link) to the dashboard.
const ROOT_PAGE: &str = "<!doctype html>\n<meta http-equiv=\"refresh\" content=\"0; url=/dashboard\">\n\
<title>streamcdn admin</title>\n<p>streamcdn admin API: the <a href=\"/dashboard\">dashboard</a> shows the whole \
deployment; the API is described at /api/v1/openapi.json.</p>\n";

/// An embedded page or script, as is; revalidated every time (the page names the
/// script without a version).
fn embedded(asset: &'static streamcdn_web::Asset) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        asset.body,
    )
        .into_response()
}

pub fn router(
    metrics: PrometheusHandle,
    scrape_hooks: Vec<ScrapeHook>,
    registry: Registry,
    roles: Router,
    tokens: Tokens,
) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let (metrics, hooks) = (metrics.clone(), scrape_hooks.clone());
                async move {
                    for hook in &hooks {
                        hook().await;
                    }
                    metrics.render()
                }
            }),
        )
        .route("/", get(|| async { axum::response::Html(ROOT_PAGE) }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/dashboard",
            get(|| async { embedded(&streamcdn_web::DASHBOARD) }),
        )
        .route(
            "/dashboard/hls.min.js",
            get(|| async { embedded(&streamcdn_web::HLS_JS) }),
        )
        .route(
            "/api/v1/nodes",
            get(move || {
                let registry = registry.clone();
                async move {
                    match registry.nodes().await {
                        Ok(nodes) => axum::Json(nodes).into_response(),
                        Err(e) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("registry unavailable: {e}\n"),
                        )
                            .into_response(),
                    }
                }
            }),
        )
        .route(
            "/api/v1/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .merge(roles)
        // A role that does not run here: a 404 that says so, like the handlers' own.
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such endpoint on this server\n") })
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(tokens),
            authorize,
        ))
}
