//! The edge role: an HTTP caching proxy for HLS.
//!
//! A request goes through these phases: validate the path → look up the memory cache →
//! on a miss (or a stale playlist), one coalesced fill per key ([`flight`]): the disk
//! tier for segments ([`disk`]), else the upstream ([`upstream`]: parents by rendezvous
//! hashing, or for the top tier the ingest server the registry names) → store by the
//! object's type and the upstream's `Cache-Control` ([`object`]) → respond, with CORS
//! and byte ranges for browser players. A playlist whose refresh fails is served stale
//! within the `stale_if_error` bound.
//!
//! The same code runs every tier; the edge never reads ingest storage.

mod archived;
mod disk;
mod flight;
mod object;
mod range;
mod upstream;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use moka::future::Cache;

use disk::DiskCache;
use flight::Flights;
use object::{CachedObject, ObjectKind};
pub use upstream::UpstreamKind;
use upstream::{FetchError, Upstream};

pub struct EdgeSettings {
    pub upstream: UpstreamKind,
    /// On-demand storage, for a top tier serving archived recordings.
    pub archive: Option<streamcdn_archive::Archive>,
    pub cache_memory_bytes: u64,
    pub max_object_bytes: u64,
    pub upstream_timeout: Duration,
    /// Directory and byte bound of the disk tier; `None` keeps segments in memory only.
    pub disk: Option<(PathBuf, u64)>,
    /// How long past freshness a playlist may be served while the upstream fails.
    pub stale_if_error: Duration,
}

type FillResult = Result<Arc<CachedObject>, Arc<FetchError>>;

struct ObjectExpiry {
    stale_if_error: Duration,
}

impl moka::Expiry<String, Arc<CachedObject>> for ObjectExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<CachedObject>,
        _created_at: Instant,
    ) -> Option<Duration> {
        // Playlists outlive their freshness by the stale-if-error bound, so there is
        // something to serve when the upstream fails; they are never served stale
        // otherwise.
        let keep = match (value.kind, value.status) {
            (ObjectKind::Playlist, StatusCode::OK) => value.ttl + self.stale_if_error,
            _ => value.ttl,
        };
        Some(keep.saturating_sub(value.age()))
    }
}

pub struct Edge {
    stale_if_error: Duration,
    memory: Cache<String, Arc<CachedObject>>,
    disk: Option<Arc<DiskCache>>,
    upstream: Upstream,
    flights: Flights<FillResult>,
}

impl Edge {
    pub fn new(settings: EdgeSettings) -> std::io::Result<Arc<Self>> {
        let memory = Cache::builder()
            .max_capacity(settings.cache_memory_bytes)
            .weigher(|key: &String, value: &Arc<CachedObject>| {
                u32::try_from(key.len() + value.body.len() + 256).unwrap_or(u32::MAX)
            })
            .expire_after(ObjectExpiry {
                stale_if_error: settings.stale_if_error,
            })
            .build();
        let disk = match &settings.disk {
            Some((dir, max_bytes)) => Some(DiskCache::open(dir, *max_bytes)?),
            None => None,
        };
        Ok(Arc::new(Self {
            stale_if_error: settings.stale_if_error,
            memory,
            disk,
            upstream: Upstream::new(
                settings.upstream,
                settings.archive,
                settings.upstream_timeout,
                settings.max_object_bytes,
            ),
            flights: Flights::default(),
        }))
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new().fallback(handle).with_state(self.clone())
    }

    /// Publishes the cache sizes as gauges (called when metrics are scraped).
    pub async fn report_cache_sizes(&self) {
        self.memory.run_pending_tasks().await;
        metrics::gauge!("streamcdn_edge_cache_bytes", "store" => "memory")
            .set(self.memory.weighted_size() as f64);
        metrics::gauge!("streamcdn_edge_cache_objects", "store" => "memory")
            .set(self.memory.entry_count() as f64);
        if let Some(disk) = &self.disk {
            metrics::gauge!("streamcdn_edge_cache_bytes", "store" => "disk")
                .set(disk.bytes() as f64);
        }
    }

    /// Brings `path` into the cache: from disk if it is there, else from upstream.
    async fn fill(&self, path: &str, kind: ObjectKind) -> FillResult {
        // A fill that finished between our cache miss and joining the flight.
        if let Some(object) = self.memory.get(path).await.filter(|o| o.is_fresh()) {
            return Ok(object);
        }
        if kind == ObjectKind::Segment {
            if let Some(object) = self.load_from_disk(path).await {
                return Ok(object);
            }
        }
        let object = Arc::new(self.upstream.fetch(path, kind).await.map_err(Arc::new)?);
        self.memory.insert(path.to_owned(), object.clone()).await;
        if let (Some(disk), ObjectKind::Segment, StatusCode::OK) = (&self.disk, kind, object.status)
        {
            disk.store(path, &object);
        }
        Ok(object)
    }

    async fn load_from_disk(&self, path: &str) -> Option<Arc<CachedObject>> {
        let object = Arc::new(self.disk.as_ref()?.load(path).await?);
        metrics::counter!("streamcdn_edge_disk_hits_total").increment(1);
        self.memory.insert(path.to_owned(), object.clone()).await;
        Some(object)
    }
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
    let kind = ObjectKind::of(&path);
    let cached = edge.memory.get(&path).await;
    let (object, result) = match &cached {
        Some(object) if object.is_fresh() => (object.clone(), "hit"),
        _ => match edge.flights.run(&path, edge.fill(&path, kind)).await {
            (Ok(object), true) => (object, "miss"),
            (Ok(object), false) => (object, "coalesced"),
            (Err(error), _) => match cached.filter(|o| {
                o.kind == ObjectKind::Playlist
                    && o.status == StatusCode::OK
                    && o.age() < o.ttl + edge.stale_if_error
            }) {
                Some(stale) => {
                    tracing::warn!(path, %error, "upstream failed; serving a stale playlist");
                    (stale, "stale")
                }
                None => {
                    metrics::counter!("streamcdn_edge_requests_total", "result" => "error", "kind" => kind.label())
                        .increment(1);
                    return error_response(&error, &path);
                }
            },
        },
    };
    metrics::counter!("streamcdn_edge_requests_total", "result" => result, "kind" => kind.label())
        .increment(1);
    object_response(&object, request.headers(), result)
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
    headers.insert(header::AGE, HeaderValue::from(object.age().as_secs()));
    headers.insert(
        "x-cache",
        HeaderValue::from_static(match result {
            "hit" | "coalesced" => "HIT",
            "stale" => "STALE",
            _ => "MISS",
        }),
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

#[cfg(test)]
mod tests {
    use super::*;

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
