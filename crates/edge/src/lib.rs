//! The edge role: an HTTP caching proxy for HLS.
//!
//! A request goes through these phases: validate the path → look up the memory cache →
//! on a miss, fetch from upstream with request coalescing (concurrent misses for one
//! key share one upstream fetch) → store by the upstream's `Cache-Control` → respond,
//! with CORS and byte ranges for browser players.
//!
//! The edge never reads ingest storage: it only speaks HTTP to its upstream.

mod range;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use moka::future::Cache;
use thiserror::Error;

#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// `http://host:port` without a trailing slash.
    pub upstream: String,
    pub cache_memory_bytes: u64,
    pub max_object_bytes: u64,
    pub upstream_timeout: Duration,
}

#[derive(Debug)]
struct CachedObject {
    content_type: Option<HeaderValue>,
    cache_control: Option<HeaderValue>,
    body: Bytes,
    ttl: Duration,
    stored_at: Instant,
}

/// Why a fetch produced nothing to cache. Waiters coalesced on the same key all receive
/// the same value.
#[derive(Debug, Error)]
enum FetchError {
    /// The upstream answered, but not with something we may cache (404, no-store...).
    #[error("upstream answered {status}")]
    NotCacheable {
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
    },
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    #[error("upstream timed out")]
    Timeout,
    #[error("object larger than the edge's max_object_size")]
    TooLarge,
}

struct ObjectExpiry;

impl moka::Expiry<String, Arc<CachedObject>> for ObjectExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<CachedObject>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

pub struct Edge {
    settings: EdgeSettings,
    cache: Cache<String, Arc<CachedObject>>,
    client: Client<HttpConnector, Empty<Bytes>>,
}

/// Objects are kept at most this long even when the upstream allows longer: the memory
/// cache is for the hot set, not an archive.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

impl Edge {
    pub fn new(settings: EdgeSettings) -> Arc<Self> {
        let cache = Cache::builder()
            .max_capacity(settings.cache_memory_bytes)
            .weigher(|key: &String, value: &Arc<CachedObject>| {
                u32::try_from(key.len() + value.body.len() + 256).unwrap_or(u32::MAX)
            })
            .expire_after(ObjectExpiry)
            .build();
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(settings.upstream_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Arc::new(Self {
            settings,
            cache,
            client,
        })
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new().fallback(handle).with_state(self.clone())
    }

    /// Bytes held by the memory cache (bodies, keys and bookkeeping).
    pub async fn cached_bytes(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.weighted_size()
    }

    async fn fetch(&self, path: &str) -> Result<Arc<CachedObject>, FetchError> {
        metrics::counter!("streamcdn_edge_upstream_fetches_total").increment(1);
        let uri = format!("{}{}", self.settings.upstream, path);
        let uri: hyper::Uri = uri
            .parse()
            .map_err(|e| FetchError::Unreachable(format!("bad upstream URI: {e}")))?;
        let request = hyper::Request::get(uri)
            .header(header::USER_AGENT, "streamcdn-edge")
            .body(Empty::new())
            .map_err(|e| FetchError::Unreachable(e.to_string()))?;
        let timeout = self.settings.upstream_timeout;
        let response = tokio::time::timeout(timeout, self.client.request(request))
            .await
            .map_err(|_| FetchError::Timeout)?
            .map_err(|e| FetchError::Unreachable(e.to_string()))?;
        let (parts, body) = response.into_parts();
        let limit = usize::try_from(self.settings.max_object_bytes).unwrap_or(usize::MAX);
        let body = tokio::time::timeout(timeout, Limited::new(body, limit).collect())
            .await
            .map_err(|_| FetchError::Timeout)?
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    FetchError::TooLarge
                } else {
                    FetchError::Unreachable(e.to_string())
                }
            })?
            .to_bytes();
        let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
        let cache_control = parts.headers.get(header::CACHE_CONTROL).cloned();
        let ttl = cache_control
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(cacheable_ttl);
        match (parts.status, ttl) {
            (StatusCode::OK, Some(ttl)) => Ok(Arc::new(CachedObject {
                content_type,
                cache_control,
                body,
                ttl: ttl.min(MAX_TTL),
                stored_at: Instant::now(),
            })),
            (status, _) => Err(FetchError::NotCacheable {
                status,
                content_type,
                body,
            }),
        }
    }
}

/// How long a response may be cached, from its `Cache-Control`; `None` if not at all.
fn cacheable_ttl(cache_control: &str) -> Option<Duration> {
    let mut max_age = None;
    for directive in cache_control.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" || lower == "private" {
            return None;
        }
        if let Some(v) = lower.strip_prefix("s-maxage=") {
            max_age = v.parse().ok();
        } else if let Some(v) = lower.strip_prefix("max-age=") {
            max_age = max_age.or(v.parse().ok());
        }
    }
    max_age.filter(|&s: &u64| s > 0).map(Duration::from_secs)
}

/// Paths the edge forwards: what our URL scheme uses, nothing that could be read as
/// traversal or smuggling.
fn valid_path(path: &str) -> bool {
    path.len() <= 512
        && path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
        && !path
            .split('/')
            .skip(1)
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
}

fn cors(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Content-Length, Content-Range, Age, X-Cache"),
    );
}

fn plain(status: StatusCode, text: &str) -> Response {
    (status, format!("{text}\n")).into_response()
}

async fn handle(State(edge): State<Arc<Edge>>, request: Request) -> Response {
    let started = Instant::now();
    let mut response = respond(&edge, request).await;
    // Every answer, errors included, must be readable by a browser player.
    cors(response.headers_mut());
    metrics::histogram!("streamcdn_edge_request_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    response
}

async fn respond(edge: &Edge, request: Request) -> Response {
    match *request.method() {
        Method::GET | Method::HEAD => {}
        Method::OPTIONS => {
            // CORS preflight; the allow-origin header is added to every response.
            let mut response = StatusCode::NO_CONTENT.into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, HEAD, OPTIONS"),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("Range"),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("86400"),
            );
            return response;
        }
        _ => {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            response.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, OPTIONS"),
            );
            return response;
        }
    }
    let path = request.uri().path().to_owned();
    if !valid_path(&path) {
        metrics::counter!("streamcdn_edge_requests_total", "result" => "rejected").increment(1);
        return plain(StatusCode::BAD_REQUEST, "invalid path");
    }
    let entry = edge
        .cache
        .entry(path.clone())
        .or_try_insert_with(edge.fetch(&path))
        .await;
    match entry {
        Ok(entry) => {
            let result = if entry.is_fresh() { "miss" } else { "hit" };
            metrics::counter!("streamcdn_edge_requests_total", "result" => result).increment(1);
            object_response(entry.value(), request.headers(), result)
        }
        Err(error) => {
            metrics::counter!("streamcdn_edge_requests_total", "result" => "uncached").increment(1);
            error_response(&error, &path)
        }
    }
}

fn object_response(
    object: &CachedObject,
    request_headers: &HeaderMap,
    result: &'static str,
) -> Response {
    let total = object.body.len() as u64;
    let range = request_headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| range::parse(v, total));
    let (status, body, content_range) = match range {
        None | Some(range::Range::Ignored) => (StatusCode::OK, object.body.clone(), None),
        Some(range::Range::Satisfiable { start, end }) => (
            StatusCode::PARTIAL_CONTENT,
            object.body.slice(start as usize..=end as usize),
            Some(format!("bytes {start}-{end}/{total}")),
        ),
        Some(range::Range::Unsatisfiable) => (
            StatusCode::RANGE_NOT_SATISFIABLE,
            Bytes::new(),
            Some(format!("bytes */{total}")),
        ),
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
    headers.insert(
        header::AGE,
        HeaderValue::from(object.stored_at.elapsed().as_secs()),
    );
    headers.insert(
        "x-cache",
        HeaderValue::from_static(if result == "hit" { "HIT" } else { "MISS" }),
    );
    response
}

fn error_response(error: &FetchError, path: &str) -> Response {
    match error {
        FetchError::NotCacheable {
            status,
            content_type,
            body,
        } => {
            let status = if status.is_server_error() {
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
        FetchError::TooLarge => {
            tracing::warn!(path, "object exceeds max_object_size");
            plain(StatusCode::BAD_GATEWAY, "object too large for this edge")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_follows_cache_control() {
        assert_eq!(
            cacheable_ttl("public, max-age=1"),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            cacheable_ttl("max-age=60, s-maxage=5"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(cacheable_ttl("no-store"), None);
        assert_eq!(cacheable_ttl("max-age=0"), None);
        assert_eq!(cacheable_ttl("public"), None);
    }

    #[test]
    fn only_plain_paths_are_forwarded() {
        assert!(valid_path("/demo/cam/20261121T120000Z-1a2b/000001.m4s"));
        for bad in [
            "/demo/../etc/passwd",
            "/demo//x",
            "/demo/%2e%2e/x",
            "demo",
            "/a/./b",
            "/a?b",
        ] {
            assert!(!valid_path(bad), "{bad}");
        }
        assert!(!valid_path(&format!("/{}", "a".repeat(600))));
    }
}
