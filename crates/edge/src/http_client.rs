//! The HTTP fetch from upstream servers, shared by the parents and the top tier: tries
//! servers in preference order, skips the ones that just failed (passive health), and
//! turns a response into a cacheable object by its `Cache-Control` and `Age`. Speaks
//! HTTP/1.1, or HTTP/2 with prior knowledge (h2c: one connection per upstream carries
//! every request, held ones included).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use streamcdn_support::http_client::ClientOptions;
use streamcdn_urls::CacheKey;

use crate::lifetime;
use crate::object::{cacheable_ttl, CachedObject, Validators};
use crate::source::{FeedBody, FetchError, Revalidated};

/// A failed upstream is skipped for this long (unless every one has failed).
const DOWN_FOR: Duration = Duration::from_secs(3);
/// An HTTP/2 connection to an upstream is pinged this often, idle or not, so a dead
/// one is found before the requests multiplexed on it wait out their timeouts.
const H2_KEEPALIVE: Duration = Duration::from_secs(10);

/// The header carrying the deployment's tier credential upstream: parents let a lower
/// tier through without a signed-URL token.
pub const TIER_HEADER: &str = "x-streamcdn-tier";

pub struct HttpClient {
    client: Client<HttpConnector, Empty<Bytes>>,
    /// For requests the upstream answers at once; held ones get
    /// [`lifetime::upstream_timeout`].
    timeout: Duration,
    max_object_bytes: usize,
    /// A configuration's cache rule: nothing stays fresh here longer, whatever the
    /// upstream says.
    max_ttl: Option<Duration>,
    /// The deployment's tier credential, sent upstream as [`TIER_HEADER`].
    tier_credential: Option<hyper::header::HeaderValue>,
    down_until: Mutex<HashMap<String, Instant>>,
}

impl HttpClient {
    pub fn with_max_ttl(mut self, max_ttl: Option<Duration>) -> Self {
        self.max_ttl = max_ttl;
        self
    }

    pub fn with_tier_credential(mut self, credential: Option<&str>) -> Self {
        self.tier_credential = credential.and_then(|c| c.parse().ok());
        self
    }

    /// Speaks HTTP/2 with prior knowledge (h2c) to every upstream, or HTTP/1.1.
    pub fn with_http2(mut self, http2: bool) -> Self {
        self.client = client(self.timeout, http2);
        self
    }

    pub fn new(timeout: Duration, max_object_bytes: u64) -> Self {
        Self {
            client: client(timeout, false),
            timeout,
            max_object_bytes: usize::try_from(max_object_bytes).unwrap_or(usize::MAX),
            max_ttl: None,
            tier_credential: None,
            down_until: Mutex::new(HashMap::new()),
        }
    }

    /// Fetches `key` from the first of `preference` that answers, servers that recently
    /// failed last.
    pub async fn fetch(
        &self,
        preference: Vec<String>,
        key: &CacheKey,
    ) -> Result<CachedObject, FetchError> {
        match self.fetch_conditional(preference, key, None).await? {
            Revalidated::Modified(object) => Ok(*object),
            // Only a conditional request may be answered 304.
            Revalidated::NotModified { .. } => Err(FetchError::NotCacheable {
                status: StatusCode::NOT_MODIFIED,
                content_type: None,
                body: Bytes::new(),
            }),
        }
    }

    /// Like [`HttpClient::fetch`], asking only for a copy newer than `validators`.
    pub async fn fetch_conditional(
        &self,
        preference: Vec<String>,
        key: &CacheKey,
        validators: Option<&Validators>,
    ) -> Result<Revalidated, FetchError> {
        let order = self.healthy_first(preference);
        let mut last = FetchError::Unreachable("no upstream configured".into());
        for base in &order {
            let outcome = self.fetch_from(base, key, validators).await;
            let label = match &outcome {
                Ok(_) => "ok",
                Err(e) if e.try_next_for(key) => "failed",
                Err(_) => "refused",
            };
            metrics::counter!("streamcdn_edge_upstream_fetches_total", "upstream" => base.clone(), "outcome" => label)
                .increment(1);
            match outcome {
                Err(e) if e.try_next_for(key) => {
                    tracing::warn!(upstream = %base, path = key.as_str(), error = %e, "upstream failed; trying the next");
                    self.mark(base, false);
                    last = e;
                }
                outcome => {
                    self.mark(base, true);
                    return outcome;
                }
            }
        }
        Err(last)
    }

    /// Opens `path` as a long response (a stream's feed) at the first of `preference`
    /// that answers `200`: the body as it arrives. A `404` is final (that upstream
    /// speaks for the stream); failures move on to the next.
    pub async fn open_stream(
        &self,
        preference: Vec<String>,
        path: &str,
    ) -> Result<FeedBody, FetchError> {
        let mut last = FetchError::Unreachable("no upstream configured".into());
        for base in self.healthy_first(preference) {
            match self.open_stream_at(&base, path).await {
                Ok(body) => {
                    self.mark(&base, true);
                    return Ok(body);
                }
                Err(e) if e.try_next() => {
                    tracing::info!(upstream = %base, path, error = %e, "feed upstream failed; trying the next");
                    self.mark(&base, false);
                    last = e;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    async fn open_stream_at(&self, base: &str, path: &str) -> Result<FeedBody, FetchError> {
        let uri: hyper::Uri = format!("{base}{path}")
            .parse()
            .map_err(|e| FetchError::Unreachable(format!("bad upstream URI: {e}")))?;
        let mut request = hyper::Request::get(uri).header(header::USER_AGENT, "streamcdn-edge");
        if let Some(credential) = &self.tier_credential {
            request = request.header(TIER_HEADER, credential.clone());
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| FetchError::Unreachable(e.to_string()))?;
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| FetchError::Timeout)?
            .map_err(|e| FetchError::Unreachable(e.to_string()))?;
        let (parts, body) = response.into_parts();
        if parts.status != StatusCode::OK {
            return Err(FetchError::NotCacheable {
                status: parts.status,
                content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
                body: Bytes::new(),
            });
        }
        Ok(Box::pin(futures::StreamExt::filter_map(
            body.into_data_stream(),
            |chunk| async move { Some(chunk.map_err(|e| e.to_string())) },
        )))
    }

    fn healthy_first(&self, mut order: Vec<String>) -> Vec<String> {
        let now = Instant::now();
        let down = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        // Stable: among the healthy, and among the down, the preference order holds.
        order.sort_by_key(|u| down.get(u).is_some_and(|t| *t > now));
        order
    }

    fn mark(&self, upstream: &str, up: bool) {
        let mut down = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        if up {
            down.remove(upstream);
        } else {
            down.insert(upstream.to_owned(), Instant::now() + DOWN_FOR);
        }
    }

    async fn fetch_from(
        &self,
        base: &str,
        key: &CacheKey,
        validators: Option<&Validators>,
    ) -> Result<Revalidated, FetchError> {
        let timeout = lifetime::upstream_timeout(key, self.timeout);
        let uri: hyper::Uri = format!("{base}{}", key.path_and_query())
            .parse()
            .map_err(|e| FetchError::Unreachable(format!("bad upstream URI: {e}")))?;
        let mut request = hyper::Request::get(uri).header(header::USER_AGENT, "streamcdn-edge");
        if let Some(credential) = &self.tier_credential {
            request = request.header(TIER_HEADER, credential.clone());
        }
        if let Some(v) = validators {
            if let Some(etag) = &v.etag {
                request = request.header(header::IF_NONE_MATCH, etag.clone());
            }
            if let Some(date) = &v.last_modified {
                request = request.header(header::IF_MODIFIED_SINCE, date.clone());
            }
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| FetchError::Unreachable(e.to_string()))?;
        let response = tokio::time::timeout(timeout, self.client.request(request))
            .await
            .map_err(|_| FetchError::Timeout)?
            .map_err(|e| FetchError::Unreachable(e.to_string()))?;
        let (parts, body) = response.into_parts();
        let body =
            tokio::time::timeout(timeout, Limited::new(body, self.max_object_bytes).collect())
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
        answer(
            parts.status,
            &parts.headers,
            body,
            key,
            validators.is_some(),
            self.max_ttl,
        )
    }
}

/// What an upstream's response to `key` becomes here: a cacheable object, a `304`'s
/// new lifetime, or an error for what may not be cached. `max_ttl` is a
/// configuration's cache rule.
pub fn answer(
    status: StatusCode,
    headers: &HeaderMap,
    body: Bytes,
    key: &CacheKey,
    conditional: bool,
    max_ttl: Option<Duration>,
) -> Result<Revalidated, FetchError> {
    let kind = key.target().kind();
    let content_type = headers.get(header::CONTENT_TYPE).cloned();
    let cache_control = headers.get(header::CACHE_CONTROL).cloned();
    // A parent tier's copy has already aged: it is as old here (RFC 9111 §4.2.3,
    // so our `Age` downstream adds our residence to it) and fresh only for what is
    // left of its lifetime. The lifetime by the key and body is `lifetime::limit`'s.
    let age = headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    // No longer than a configuration's cache rule allows, counted from now.
    let ttl = cache_control
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .and_then(cacheable_ttl)
        .map(|t| t.min(lifetime::max_ttl(key)))
        .map(|t| max_ttl.map_or(t, |cap| t.min(age + cap)))
        .filter(|t| *t > age);
    let now = tokio::time::Instant::now();
    let born = now.checked_sub(age).unwrap_or(now);
    let received = Validators {
        etag: headers.get(header::ETAG).cloned(),
        last_modified: headers.get(header::LAST_MODIFIED).cloned(),
    };
    match (status, ttl) {
        // A `304` confirms our copy even when the parent's own has no freshness left
        // (its `Age` has reached `max-age`): the copy stands, stale, and the next
        // request revalidates again. Not an upstream failure.
        (StatusCode::NOT_MODIFIED, ttl) if conditional => Ok(Revalidated::NotModified {
            ttl: ttl.unwrap_or(Duration::ZERO),
            age,
        }),
        (StatusCode::OK, Some(ttl)) => Ok(Revalidated::Modified(Box::new(CachedObject {
            status: StatusCode::OK,
            content_type,
            cache_control,
            body,
            kind,
            born,
            ttl,
            validators: received,
            invalidated: Default::default(),
        }))),
        (StatusCode::NOT_FOUND, _) => {
            let missing = CachedObject::not_found(kind);
            // Remembered briefly, unless the upstream says not at all (an origin's
            // "not yet" to a held request is `no-store`).
            let ttl = match cache_control.as_ref().and_then(|v| v.to_str().ok()) {
                Some(directives) => {
                    cacheable_ttl(directives).map_or(Duration::ZERO, |t| t.min(missing.ttl))
                }
                None => missing.ttl,
            };
            Ok(Revalidated::Modified(Box::new(CachedObject {
                content_type,
                cache_control: cache_control.or(missing.cache_control.clone()),
                body,
                ttl,
                ..missing
            })))
        }
        (status, _) => Err(FetchError::NotCacheable {
            status,
            content_type,
            body,
        }),
    }
}

fn client(timeout: Duration, http2: bool) -> Client<HttpConnector, Empty<Bytes>> {
    // A dead upstream on a live network refuses at once; a black hole must not hold a
    // viewer for the whole request timeout before the next one is tried.
    let options = ClientOptions::new()
        .connect_timeout(timeout.min(Duration::from_secs(2)))
        .keep_idle_for(Duration::from_secs(30));
    match http2 {
        true => options.http2(H2_KEEPALIVE).client(),
        false => options.client(),
    }
}

#[cfg(test)]
mod tests {
    //! Against a real upstream on loopback, in tokio's paused clock: the server's hold
    //! is a tokio sleep, so the clock jumps to its end unless a timeout fires first.

    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use http_body_util::Full;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;

    use super::*;

    /// An upstream answering every request `status` after `hold`, with `Age: 2`;
    /// counts connections and HTTP/2 requests.
    struct Upstream {
        base: String,
        connections: Arc<AtomicUsize>,
        http2_requests: Arc<AtomicUsize>,
    }

    async fn upstream(hold: Duration, status: StatusCode, cache_control: &'static str) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let http2_requests = Arc::new(AtomicUsize::new(0));
        let (counted, http2) = (connections.clone(), http2_requests.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let http2 = http2.clone();
                let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
                    if request.version() == hyper::Version::HTTP_2 {
                        http2.fetch_add(1, Ordering::SeqCst);
                    }
                    async move {
                        tokio::time::sleep(hold).await;
                        let response = hyper::Response::builder()
                            .status(status)
                            .header(header::CACHE_CONTROL, cache_control)
                            .header(header::AGE, "2")
                            .body(Full::new(Bytes::from_static(b"held")))
                            .unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(async move {
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream {
            base,
            connections,
            http2_requests,
        }
    }

    fn key(path: &str, query: Option<&str>) -> CacheKey {
        CacheKey::parse(path, query).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn held_requests_wait_for_the_origin_and_others_do_not() {
        let hold = Duration::from_secs(15);
        let upstream = upstream(hold, StatusCode::OK, "public, max-age=12").await;
        let client = HttpClient::new(Duration::from_secs(2), 1 << 20);
        for held in [
            key("/p/s/r/000007.2.m4s", None),
            key("/p/s/live.m3u8", Some("_HLS_msn=7&_HLS_part=3")),
        ] {
            let started = tokio::time::Instant::now();
            let object = client
                .fetch(vec![upstream.base.clone()], &held)
                .await
                .unwrap_or_else(|e| panic!("{held}: {e}"));
            assert!(started.elapsed() >= hold, "{held}");
            assert_eq!(&object.body[..], b"held");
            // Its age upstream counts: two seconds of its twelve are gone.
            assert_eq!(object.age(), Duration::from_secs(2));
            assert_eq!(object.ttl, Duration::from_secs(12));
        }
        let plain = key("/p/s/r/000007.m4s", None);
        assert!(matches!(
            client.fetch(vec![upstream.base.clone()], &plain).await,
            Err(FetchError::Timeout)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn http2_carries_every_held_request_on_one_connection() {
        let upstream = upstream(Duration::from_secs(5), StatusCode::OK, "max-age=12").await;
        let client = Arc::new(HttpClient::new(Duration::from_secs(2), 1 << 20).with_http2(true));
        let fetches: Vec<_> = (0..50)
            .map(|part| {
                let (client, base) = (client.clone(), upstream.base.clone());
                tokio::spawn(async move {
                    let key = key(&format!("/p/s/r/000007.{part}.m4s"), None);
                    client.fetch(vec![base], &key).await.map(|o| o.body)
                })
            })
            .collect();
        for fetch in fetches {
            assert_eq!(&fetch.await.unwrap().unwrap()[..], b"held");
        }
        assert_eq!(upstream.connections.load(Ordering::SeqCst), 1);
        assert_eq!(upstream.http2_requests.load(Ordering::SeqCst), 50);
    }

    #[tokio::test(start_paused = true)]
    async fn a_304_with_no_freshness_left_still_confirms_the_copy() {
        let client = HttpClient::new(Duration::from_secs(2), 1 << 20);
        let playlist = key("/p/s/live.m3u8", None);
        // `Age: 2` against `max-age=1`: the parent's own copy is already stale.
        let parent = upstream(Duration::ZERO, StatusCode::NOT_MODIFIED, "max-age=1").await;
        let validators = Validators {
            etag: Some(http::HeaderValue::from_static("\"v1\"")),
            last_modified: None,
        };
        let answer = client
            .fetch_conditional(vec![parent.base], &playlist, Some(&validators))
            .await;
        assert!(
            matches!(answer, Ok(Revalidated::NotModified { ttl, .. }) if ttl == Duration::ZERO),
            "{answer:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_no_store_404_is_not_remembered() {
        let client = HttpClient::new(Duration::from_secs(2), 1 << 20);
        let part = key("/p/s/r/000009.0.m4s", None);
        let not_yet = upstream(Duration::ZERO, StatusCode::NOT_FOUND, "no-store").await;
        let object = client.fetch(vec![not_yet.base], &part).await.unwrap();
        assert_eq!(
            (object.status, object.ttl),
            (StatusCode::NOT_FOUND, Duration::ZERO)
        );
        let brief = upstream(Duration::ZERO, StatusCode::NOT_FOUND, "max-age=60").await;
        let object = client.fetch(vec![brief.base], &part).await.unwrap();
        assert_eq!(object.ttl, Duration::from_secs(1));
    }
}
