//! The providers' own API, for the provider itself:
//! - `GET|PUT /api/v1/providers/<name>/settings`: its `archive_after` and `dvr_window`
//!   (a `PUT` changes those it names);
//! - `GET|PUT /api/v1/providers/<name>/playback-keys`: the keys that sign its playback
//!   URLs (GET shows their ids only), rotated by putting the new key first;
//! - `POST /api/v1/providers/<name>/signed-urls`: mints a signed playback URL;
//! - `GET /api/v1/providers/<name>/stream-keys`: the streams that have a key of their
//!   own (key ids only), `PUT|DELETE .../stream-keys/<stream>`: sets (rotates) or
//!   removes one; a `PUT` without a key generates one, shown in that answer only.
//!
//! Behind the
//! admin API's tokens: an admin token, or a token scoped to this provider (the admin
//! layer refuses one scoped to another). Where the admin API has no tokens (loopback
//! only), the provider's stream key opens its own settings (`Authorization: Bearer
//! <key>`).

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

use axum::Extension;
use streamcdn_access::admin::Caller;
use streamcdn_access::playback::{key_id, mint, signed_path, Grant};

use crate::{KeyError, Providers};

/// Longest `archive_after` a provider may set through the API.
const MAX_ARCHIVE_AFTER: Duration = Duration::from_secs(30 * 24 * 3600);

/// Longest `dvr_window` a provider may set through the API.
const MAX_DVR_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsChange {
    #[serde(default)]
    archive_after: Option<String>,
    #[serde(default)]
    dvr_window: Option<String>,
}

/// A duration the API takes, at most `max`; or the refusal naming `field`.
#[allow(clippy::result_large_err)] // the error is the response itself, returned at once
fn duration_setting(
    field: &str,
    text: &str,
    max: Duration,
    max_text: &str,
) -> Result<Duration, Response> {
    match humantime::parse_duration(text) {
        Ok(d) if d <= max => Ok(d),
        Ok(_) => Err(refuse(
            StatusCode::BAD_REQUEST,
            &format!("{field} may be at most {max_text}"),
        )),
        Err(e) => Err(refuse(
            StatusCode::BAD_REQUEST,
            &format!("invalid {field} {text:?}: {e}"),
        )),
    }
}

pub fn router(providers: Providers) -> Router {
    Router::new()
        .route(
            "/api/v1/providers/{name}/settings",
            axum::routing::get(get_settings).put(put_settings),
        )
        .route(
            "/api/v1/providers/{name}/playback-keys",
            axum::routing::get(get_keys).put(put_keys),
        )
        .route(
            "/api/v1/providers/{name}/signed-urls",
            axum::routing::post(mint_url),
        )
        .route(
            "/api/v1/providers/{name}/stream-keys",
            axum::routing::get(get_stream_keys),
        )
        .route(
            "/api/v1/providers/{name}/stream-keys/{stream}",
            axum::routing::put(put_stream_key).delete(delete_stream_key),
        )
        .with_state(providers)
}

/// Longest lifetime of a minted URL.
const MAX_URL_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);

fn unavailable(name: &str, e: impl std::fmt::Display) -> Response {
    tracing::warn!(provider = name, error = %e, "registry unavailable");
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        "registry unavailable; try again",
    )
}

async fn get_keys(
    State(providers): State<Providers>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = authorize(&providers, &name, &headers, caller.as_deref()) {
        return response;
    }
    match providers.playback_keys(&name).await {
        Ok(keys) => {
            let ids: Vec<String> = keys.iter().map(|k| key_id(k.as_bytes())).collect();
            axum::Json(
                serde_json::json!({ "provider": name, "signed": !ids.is_empty(), "key_ids": ids }),
            )
            .into_response()
        }
        Err(e) => unavailable(&name, e),
    }
}

#[derive(serde::Deserialize)]
struct KeysChange {
    keys: Vec<String>,
}

async fn put_keys(
    State(providers): State<Providers>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(response) = authorize(&providers, &name, &headers, caller.as_deref()) {
        return response;
    }
    let change: KeysChange = match json_body(&body, "{\"keys\": [\"new key\", \"old key\"]}") {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    if change.keys.len() > 2 || change.keys.iter().any(|k| k.len() < 16 || k.len() > 256) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "zero (open playback), one, or two keys while rotating; each 16-256 characters",
        );
    }
    let ids: Vec<String> = change.keys.iter().map(|k| key_id(k.as_bytes())).collect();
    if let Err(e) = providers.set_playback_keys(&name, change.keys).await {
        return unavailable(&name, e);
    }
    tracing::info!(provider = name, key_ids = ?ids, "provider changed its playback keys");
    axum::Json(serde_json::json!({ "provider": name, "signed": !ids.is_empty(), "key_ids": ids }))
        .into_response()
}

#[derive(serde::Deserialize)]
struct MintRequest {
    /// None: every stream of the provider.
    stream: Option<String>,
    /// e.g. `"1h"`.
    expires_in: String,
    /// `198.51.100.0/24`, `2001:db8::/48`.
    client: Option<String>,
    /// What the URL opens under the stream, default `index.m3u8` (the player page: `""`).
    path: Option<String>,
}

fn parse_prefix(text: &str) -> Option<(std::net::IpAddr, u8)> {
    let (ip, len) = text.split_once('/')?;
    Some((ip.parse().ok()?, len.parse().ok()?))
}

async fn mint_url(
    State(providers): State<Providers>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(response) = authorize(&providers, &name, &headers, caller.as_deref()) {
        return response;
    }
    let request: MintRequest = match json_body(
        &body,
        "{\"stream\": \"cam\", \"expires_in\": \"1h\", \"client\": \"198.51.100.0/24\"}",
    ) {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    let lifetime = match humantime::parse_duration(&request.expires_in) {
        Ok(d) if d <= MAX_URL_LIFETIME && !d.is_zero() => d,
        _ => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "expires_in: a duration up to a year, e.g. \"1h\"",
            )
        }
    };
    let client = match request.client.as_deref().map(parse_prefix) {
        None => None,
        Some(Some(prefix)) => Some(prefix),
        Some(None) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "client: a prefix such as 198.51.100.0/24",
            )
        }
    };
    let keys = match providers.playback_keys(&name).await {
        Ok(keys) => keys,
        Err(e) => return unavailable(&name, e),
    };
    let Some(key) = keys.first() else {
        return refuse(
            StatusCode::CONFLICT,
            "signed URLs are off for this provider: set playback_keys first",
        );
    };
    let now = streamcdn_support::clock::now_secs();
    let grant = Grant {
        expires: now + lifetime.as_secs(),
        provider: name.clone(),
        stream: request.stream.clone(),
        client,
    };
    let token = match mint(key.as_bytes(), &grant) {
        Ok(t) => t,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let target = match (&request.stream, request.path.as_deref()) {
        (Some(stream), Some(path)) => format!("/{name}/{stream}/{}", path.trim_start_matches('/')),
        (Some(stream), None) => format!("/{name}/{stream}/index.m3u8"),
        (None, Some(path)) => format!("/{name}/{}", path.trim_start_matches('/')),
        (None, None) => format!("/{name}/"),
    };
    if target.contains("..") || target.contains("//") {
        return refuse(StatusCode::BAD_REQUEST, "path: a path under the stream");
    }
    metrics::counter!("streamcdn_provider_signed_urls_total").increment(1);
    axum::Json(serde_json::json!({
        "provider": name,
        "stream": request.stream,
        "token": token,
        "path": signed_path(&token, &target),
        "expires": grant.expires,
    }))
    .into_response()
}

/// The request's JSON body, or a `400` saying what was `expected` and what was wrong.
#[allow(clippy::result_large_err)] // the error is the response itself, returned at once
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8], expected: &str) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| {
        refuse(
            StatusCode::BAD_REQUEST,
            &format!("expected {expected}: {e}"),
        )
    })
}

fn refuse(status: StatusCode, text: &str) -> Response {
    (status, format!("{text}\n")).into_response()
}

/// The provider the request's bearer key opens, or the response refusing it.
#[allow(clippy::result_large_err)] // the error is the response itself, returned at once
fn authorize(
    providers: &Providers,
    name: &str,
    headers: &HeaderMap,
    caller: Option<&Caller>,
) -> Result<(), Response> {
    if let Some(caller) = caller {
        if caller.provider.as_deref().is_some_and(|p| p != name) {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "this token does not open this provider",
            ));
        }
        return match providers.get(name) {
            None => Err(refuse(StatusCode::NOT_FOUND, "no such provider")),
            Some(_) => Ok(()),
        };
    }
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
    match providers.check_provider_key(name, token) {
        Ok(_) => Ok(()),
        Err(KeyError::UnknownProvider(_)) => Err(refuse(StatusCode::NOT_FOUND, "no such provider")),
        Err(KeyError::WrongKey) => Err(refuse(
            StatusCode::FORBIDDEN,
            "this key does not open this provider",
        )),
    }
}

async fn get_stream_keys(
    State(providers): State<Providers>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = authorize(&providers, &name, &headers, caller.as_deref()) {
        return response;
    }
    match providers.stream_keys(&name).await {
        Ok(keys) => {
            axum::Json(serde_json::json!({ "provider": name, "streams": keys })).into_response()
        }
        Err(e) => unavailable(&name, e),
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StreamKeyChange {
    /// None: generate one.
    key: Option<String>,
}

/// A new stream key: 32 characters from an alphabet without look-alikes.
fn generate_key() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the system's random source");
    // 56 symbols: the modulo's bias (256 % 56) is far below what could matter here.
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

async fn put_stream_key(
    State(providers): State<Providers>,
    caller: Option<Extension<Caller>>,
    Path((name, stream)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(response) = authorize(&providers, &name, &headers, caller.as_deref()) {
        return response;
    }
    if !streamcdn_urls::is_valid_name(&stream) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "not a stream name (1-64 characters of A-Z a-z 0-9 - _)",
        );
    }
    let change: StreamKeyChange = if body.iter().all(u8::is_ascii_whitespace) {
        StreamKeyChange::default()
    } else {
        match json_body(
            &body,
            "{\"key\": \"the new key\"}, or no key to generate one",
        ) {
            Ok(c) => c,
            Err(refused) => return refused,
        }
    };
    let generated = change.key.is_none();
    let key = change.key.unwrap_or_else(generate_key);
    if let Some(problem) = streamcdn_config::stream_key_problem(&key) {
        return refuse(StatusCode::BAD_REQUEST, &format!("key {problem}"));
    }
    if providers.check_provider_key(&name, &key).is_ok() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "that is the provider's key, which opens every stream: give the stream a key of its own",
        );
    }
    let key_id = crate::key_digest(&key)[..4].to_owned();
    if let Err(e) = providers.set_stream_key(&name, &stream, Some(&key)).await {
        return unavailable(&name, e);
    }
    tracing::info!(
        provider = name,
        stream,
        key_id,
        generated,
        "stream key set through the API"
    );
    let mut answer = serde_json::json!({ "provider": name, "stream": stream, "key_id": key_id });
    if generated {
        // The one time this key is shown.
        answer["key"] = serde_json::Value::String(key);
    }
    axum::Json(answer).into_response()
}

async fn delete_stream_key(
    State(providers): State<Providers>,
    caller: Option<Extension<Caller>>,
    Path((name, stream)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = authorize(&providers, &name, &headers, caller.as_deref()) {
        return response;
    }
    match providers.set_stream_key(&name, &stream, None).await {
        Ok(true) => {
            tracing::info!(
                provider = name,
                stream,
                "stream key removed through the API"
            );
            axum::Json(serde_json::json!({ "provider": name, "stream": stream, "removed": true }))
                .into_response()
        }
        Ok(false) => refuse(StatusCode::NOT_FOUND, "this stream has no key of its own"),
        Err(e) => unavailable(&name, e),
    }
}

async fn current(providers: &Providers, name: &str) -> serde_json::Value {
    let effective = providers.archive_after(name).await;
    let dvr = providers.dvr_window(name).await.unwrap_or_default();
    serde_json::json!({
        "provider": name,
        "archive_after": humantime::format_duration(effective).to_string(),
        "archive_after_secs": effective.as_secs_f64(),
        "dvr_window": humantime::format_duration(dvr).to_string(),
        "dvr_window_secs": dvr.as_secs_f64(),
    })
}

async fn get_settings(
    State(providers): State<Providers>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    match authorize(&providers, &name, &headers, caller.as_deref()) {
        Ok(()) => axum::Json(current(&providers, &name).await).into_response(),
        Err(response) => response,
    }
}

#[allow(clippy::result_large_err)] // refusals are responses, returned at once
async fn put_settings(
    State(providers): State<Providers>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(response) = authorize(&providers, &name, &headers, caller.as_deref()) {
        return response;
    }
    let expected = "{\"archive_after\": \"30m\", \"dvr_window\": \"2h\"} (either or both)";
    let change: SettingsChange = match json_body(&body, expected) {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    if change.archive_after.is_none() && change.dvr_window.is_none() {
        return refuse(StatusCode::BAD_REQUEST, &format!("expected {expected}"));
    }
    let after = match change
        .archive_after
        .as_deref()
        .map(|text| duration_setting("archive_after", text, MAX_ARCHIVE_AFTER, "30 days"))
    {
        Some(Err(refused)) => return refused,
        Some(Ok(after)) => Some(after),
        None => None,
    };
    let dvr = match change
        .dvr_window
        .as_deref()
        .map(|text| duration_setting("dvr_window", text, MAX_DVR_WINDOW, "7 days"))
    {
        Some(Err(refused)) => return refused,
        Some(Ok(dvr)) => Some(dvr),
        None => None,
    };
    let stored = async {
        if let Some(after) = after {
            providers.set_archive_after(&name, after).await?;
            tracing::info!(provider = name, archive_after = %humantime::format_duration(after), "provider changed its archive delay");
        }
        if let Some(dvr) = dvr {
            providers.set_dvr_window(&name, dvr).await?;
            tracing::info!(provider = name, dvr_window = %humantime::format_duration(dvr), "provider changed its rewind window");
        }
        Ok::<(), crate::RegistryError>(())
    };
    if let Err(e) = stored.await {
        tracing::warn!(provider = name, error = %e, "cannot store provider settings");
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "registry unavailable; try again",
        );
    }
    axum::Json(current(&providers, &name).await).into_response()
}
