//! `GET /api/v1/deployment`: the whole deployment as one JSON document
//! ([`crate::document::Deployment`]), assembled anew for each request.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::fetch::Overview;

pub fn admin_router(overview: Arc<Overview>) -> axum::Router {
    axum::Router::new().route(
        "/api/v1/deployment",
        axum::routing::get(move || {
            let overview = overview.clone();
            async move { deployment(&overview).await }
        }),
    )
}

async fn deployment(overview: &Overview) -> Response {
    match overview.deployment().await {
        Ok(document) => axum::Json(document).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("registry unavailable: {e}\n"),
        )
            .into_response(),
    }
}
