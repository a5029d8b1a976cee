//! `GET /api/v1/deployment`: the whole deployment as one JSON document
//! ([`crate::document::Deployment`]), assembled anew for each request; and
//! [`name_the_server`], which makes every admin answer say which server gave it.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::fetch::Overview;
use crate::sources::SERVER_HEADER;

/// `admin` with [`SERVER_HEADER`] on every answer.
pub fn name_the_server(admin: axum::Router, server: &str) -> axum::Router {
    let Ok(name) = HeaderValue::try_from(server) else {
        return admin;
    };
    admin.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let name = name.clone();
            async move {
                let mut response = next.run(request).await;
                response.headers_mut().insert(SERVER_HEADER, name);
                response
            }
        },
    ))
}

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
