//! HTTP answers of the edge: a cached object (with byte ranges and `X-Cache`), a
//! failed fetch, a plain-text error, and the CORS headers every answer carries.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::object::CachedObject;
use crate::range::{self, Range};
use crate::source::FetchError;

/// How the object was found, for `X-Cache` and the request metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    /// Another request's fill, joined.
    Coalesced,
    Miss,
    /// Past freshness, served because its refresh failed.
    Stale,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Coalesced => "coalesced",
            Self::Miss => "miss",
            Self::Stale => "stale",
        }
    }

    fn x_cache(self) -> &'static str {
        match self {
            Self::Hit | Self::Coalesced => "HIT",
            Self::Stale => "STALE",
            Self::Miss => "MISS",
        }
    }
}

/// Browser players read every answer, errors included, cross-origin; pages measuring
/// the edge (rum.js) read its Resource Timing details too.
pub fn cors(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert("timing-allow-origin", HeaderValue::from_static("*"));
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Content-Length, Content-Range, Age, X-Cache"),
    );
}

/// A CORS preflight's answer allowing `methods` with `request_headers`, cached a day by
/// the browser (the allow-origin header is the caller's).
pub fn preflight(methods: &'static str, request_headers: &'static str) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(request_headers),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    response
}

pub fn plain(status: StatusCode, text: &str) -> Response {
    (status, format!("{text}\n")).into_response()
}

pub fn object_response(
    object: &CachedObject,
    request_headers: &HeaderMap,
    outcome: Outcome,
) -> Response {
    if object.status == StatusCode::OK && not_modified(object, request_headers) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        let headers = response.headers_mut();
        validator_headers(object, headers);
        if let Some(v) = &object.cache_control {
            headers.insert(header::CACHE_CONTROL, v.clone());
        }
        headers.insert(header::AGE, HeaderValue::from(object.age().as_secs()));
        headers.insert("x-cache", HeaderValue::from_static(outcome.x_cache()));
        return response;
    }
    let total = object.body.len() as u64;
    let range = request_headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| range::parse(v, total));
    let (status, body, content_range) = match range {
        None | Some(Range::Ignored) => (StatusCode::OK, object.body.clone(), None),
        Some(Range::Satisfiable { start, end }) => (
            StatusCode::PARTIAL_CONTENT,
            object.body.slice(start as usize..=end as usize),
            Some(format!("bytes {start}-{end}/{total}")),
        ),
        Some(Range::Unsatisfiable) => (
            StatusCode::RANGE_NOT_SATISFIABLE,
            Bytes::new(),
            Some(format!("bytes */{total}")),
        ),
    };
    // A cached 404 keeps its status.
    let status = if object.status == StatusCode::OK {
        status
    } else {
        object.status
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Some(v) = &object.content_type {
        headers.insert(header::CONTENT_TYPE, v.clone());
    }
    if let Some(v) = &object.cache_control {
        headers.insert(header::CACHE_CONTROL, v.clone());
    }
    if let Some(v) = content_range.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(header::CONTENT_RANGE, v);
    }
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if object.status == StatusCode::OK {
        validator_headers(object, headers);
    }
    headers.insert(header::AGE, HeaderValue::from(object.age().as_secs()));
    headers.insert("x-cache", HeaderValue::from_static(outcome.x_cache()));
    response
}

fn validator_headers(object: &CachedObject, headers: &mut HeaderMap) {
    if let Some(v) = &object.validators.etag {
        headers.insert(header::ETAG, v.clone());
    }
    if let Some(v) = &object.validators.last_modified {
        headers.insert(header::LAST_MODIFIED, v.clone());
    }
}

/// Whether a conditional request names this copy (RFC 9110 §13.1.2: `If-None-Match`,
/// weak comparison, wins over `If-Modified-Since`, which is compared as the exact date
/// we sent).
fn not_modified(object: &CachedObject, request: &HeaderMap) -> bool {
    let text = |name| {
        request
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(tags) = text(header::IF_NONE_MATCH) {
        let Some(etag) = object
            .validators
            .etag
            .as_ref()
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        return streamcdn_urls::conditional::if_none_match(tags, etag);
    }
    match (
        text(header::IF_MODIFIED_SINCE),
        &object.validators.last_modified,
    ) {
        (Some(since), Some(ours)) => ours.to_str().is_ok_and(|ours| ours == since.trim()),
        _ => false,
    }
}

pub fn error_response(error: &FetchError, path: &str) -> Response {
    match error {
        FetchError::NotCacheable {
            status,
            content_type,
            body,
        } => {
            // A `503` keeps its meaning ("not now, ask again": an origin that held a
            // blocking reload for three target durations); other upstream failures
            // are ours to report as a bad gateway.
            let status = if status.is_server_error() && *status != StatusCode::SERVICE_UNAVAILABLE {
                StatusCode::BAD_GATEWAY
            } else {
                *status
            };
            let mut response = Response::new(Body::from(body.clone()));
            *response.status_mut() = status;
            let headers = response.headers_mut();
            if let Some(v) = content_type {
                headers.insert(header::CONTENT_TYPE, v.clone());
            }
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        FetchError::Timeout => {
            tracing::warn!(path, "upstream timed out");
            plain(StatusCode::GATEWAY_TIMEOUT, "upstream timed out")
        }
        FetchError::Unreachable(e) => {
            tracing::warn!(path, error = %e, "upstream unreachable");
            plain(StatusCode::BAD_GATEWAY, "upstream unreachable")
        }
        FetchError::NoServer(_) => {
            tracing::warn!(path, "no live server holds the stream");
            plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "no server can serve this stream now",
            )
        }
        FetchError::Registry(_) => plain(StatusCode::SERVICE_UNAVAILABLE, "registry unavailable"),
        FetchError::TooLarge => {
            tracing::warn!(path, "object exceeds max_object_size");
            plain(StatusCode::BAD_GATEWAY, "object too large for this edge")
        }
    }
}
