//! The admin listener: Prometheus `/metrics`, `/healthz`, the node directory
//! (`/api/v1/nodes`), and the REST API of each role running in this process.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use futures::future::BoxFuture;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use streamcdn_registry::Registry;

/// Run before each scrape, so gauges that are costly to keep current (cache sizes) are
/// measured when they are read.
pub type ScrapeHook = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

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

pub fn router(
    metrics: PrometheusHandle,
    scrape_hooks: Vec<ScrapeHook>,
    registry: Registry,
    roles: Router,
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
        .route("/healthz", get(|| async { "ok\n" }))
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
        .merge(roles)
}
