//! `GET|PUT /api/v1/providers/<name>/settings`, for the provider itself: it
//! authenticates with its stream key (`Authorization: Bearer <key>`), and a key opens
//! only its own provider's settings.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::{KeyError, Providers};

/// Longest `archive_after` a provider may set through the API.
const MAX_ARCHIVE_AFTER: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(serde::Deserialize)]
struct SettingsChange {
    archive_after: String,
}

pub fn router(providers: Providers) -> Router {
    Router::new()
        .route(
            "/api/v1/providers/{name}/settings",
            axum::routing::get(get_settings).put(put_settings),
        )
        .with_state(providers)
}

fn refuse(status: StatusCode, text: &str) -> Response {
    (status, format!("{text}\n")).into_response()
}

/// The provider the request's bearer key opens, or the response refusing it.
#[allow(clippy::result_large_err)] // the error is the response itself, returned at once
fn authorize(providers: &Providers, name: &str, headers: &HeaderMap) -> Result<(), Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            refuse(
                StatusCode::UNAUTHORIZED,
                "send Authorization: Bearer <stream key>",
            )
        })?;
    match providers.check_key(name, token) {
        Ok(_) => Ok(()),
        Err(KeyError::UnknownProvider(_)) => Err(refuse(StatusCode::NOT_FOUND, "no such provider")),
        Err(KeyError::WrongKey) => Err(refuse(
            StatusCode::FORBIDDEN,
            "this key does not open this provider",
        )),
    }
}

async fn current(providers: &Providers, name: &str) -> serde_json::Value {
    let effective = providers.archive_after(name).await;
    serde_json::json!({
        "provider": name,
        "archive_after": humantime::format_duration(effective).to_string(),
        "archive_after_secs": effective.as_secs_f64(),
    })
}

async fn get_settings(
    State(providers): State<Providers>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    match authorize(&providers, &name, &headers) {
        Ok(()) => axum::Json(current(&providers, &name).await).into_response(),
        Err(response) => response,
    }
}

async fn put_settings(
    State(providers): State<Providers>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(response) = authorize(&providers, &name, &headers) {
        return response;
    }
    let change: SettingsChange = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"archive_after\": \"30m\"}}: {e}"),
            )
        }
    };
    let after = match humantime::parse_duration(&change.archive_after) {
        Ok(d) if d <= MAX_ARCHIVE_AFTER => d,
        Ok(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "archive_after may be at most 30 days",
            )
        }
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("invalid archive_after {:?}: {e}", change.archive_after),
            )
        }
    };
    if let Err(e) = providers.set_archive_after(&name, after).await {
        tracing::warn!(provider = name, error = %e, "cannot store provider settings");
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "registry unavailable; try again",
        );
    }
    tracing::info!(provider = name, archive_after = %humantime::format_duration(after), "provider changed its archive delay");
    axum::Json(current(&providers, &name).await).into_response()
}
