//! The admin listener: Prometheus `/metrics`, `/healthz`, and the REST API of each role
//! running in this process.

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use streamcdn_edge::Edge;

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

pub fn router(metrics: PrometheusHandle, edge: Option<Arc<Edge>>, roles: Router) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let (metrics, edge) = (metrics.clone(), edge.clone());
                async move {
                    if let Some(edge) = edge {
                        edge.report_cache_sizes().await;
                    }
                    metrics.render()
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(roles)
}
