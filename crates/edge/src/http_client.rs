//! The HTTP fetch from upstream servers, shared by the parents and the top tier: tries
//! servers in preference order, skips the ones that just failed (passive health), and
//! turns a response into a cacheable object by its `Cache-Control` and `Age`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use streamcdn_urls::ObjectKind;

use crate::object::{cacheable_ttl, CachedObject, Policy, Validators};
use crate::source::{FetchError, Revalidated};

/// A failed upstream is skipped for this long (unless every one has failed).
const DOWN_FOR: Duration = Duration::from_secs(3);

/// The header carrying the deployment's tier credential upstream: parents let a lower
/// tier through without a signed-URL token.
pub const TIER_HEADER: &str = "x-streamcdn-tier";

pub struct HttpClient {
    client: Client<HttpConnector, Empty<Bytes>>,
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

    pub fn new(timeout: Duration, max_object_bytes: u64) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        // A dead upstream on a live network refuses at once; a black hole must not
        // hold a viewer for the whole request timeout before the next one is tried.
        connector.set_connect_timeout(Some(timeout.min(Duration::from_secs(2))));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            client,
            timeout,
            max_object_bytes: usize::try_from(max_object_bytes).unwrap_or(usize::MAX),
            max_ttl: None,
            tier_credential: None,
            down_until: Mutex::new(HashMap::new()),
        }
    }

    /// Fetches `path_and_query` from the first of `preference` that answers, servers
    /// that recently failed last.
    pub async fn fetch(
        &self,
        preference: Vec<String>,
        path_and_query: &str,
        kind: ObjectKind,
    ) -> Result<CachedObject, FetchError> {
        match self
            .fetch_conditional(preference, path_and_query, kind, None)
            .await?
        {
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
        path_and_query: &str,
        kind: ObjectKind,
        validators: Option<&Validators>,
    ) -> Result<Revalidated, FetchError> {
        let order = self.healthy_first(preference);
        let mut last = FetchError::Unreachable("no upstream configured".into());
        for base in &order {
            let outcome = self
                .fetch_from(base, path_and_query, kind, validators)
                .await;
            let label = match &outcome {
                Ok(_) => "ok",
                Err(e) if e.try_next() => "failed",
                Err(_) => "refused",
            };
            metrics::counter!("streamcdn_edge_upstream_fetches_total", "upstream" => base.clone(), "outcome" => label)
                .increment(1);
            match outcome {
                Err(e) if e.try_next() => {
                    tracing::warn!(upstream = %base, path = path_and_query, error = %e, "upstream failed; trying the next");
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
        path_and_query: &str,
        kind: ObjectKind,
        validators: Option<&Validators>,
    ) -> Result<Revalidated, FetchError> {
        let uri: hyper::Uri = format!("{base}{path_and_query}")
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
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| FetchError::Timeout)?
            .map_err(|e| FetchError::Unreachable(e.to_string()))?;
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(
            self.timeout,
            Limited::new(body, self.max_object_bytes).collect(),
        )
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
        // A parent tier's copy has already aged; it must not stay fresh longer here.
        let age = parts
            .headers
            .get(header::AGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(Duration::ZERO, Duration::from_secs);
        let ttl = cache_control
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(cacheable_ttl)
            .map(|t| t.min(Policy::of(kind).max_ttl));
        // Fresh here for what is left of the upstream's lifetime, and no longer than a
        // configuration's cache rule allows (counted from now: the parent's age is
        // already taken off).
        let remaining = ttl.filter(|t| *t > age).map(|t| {
            let left = t - age;
            self.max_ttl.map_or(left, |cap| left.min(cap))
        });
        let received = Validators {
            etag: parts.headers.get(header::ETAG).cloned(),
            last_modified: parts.headers.get(header::LAST_MODIFIED).cloned(),
        };
        match (parts.status, remaining) {
            (StatusCode::NOT_MODIFIED, Some(ttl)) if validators.is_some() => {
                Ok(Revalidated::NotModified { ttl })
            }
            (StatusCode::OK, Some(ttl)) => Ok(Revalidated::Modified(Box::new(CachedObject {
                status: StatusCode::OK,
                content_type,
                cache_control,
                body,
                kind,
                born: tokio::time::Instant::now(),
                ttl,
                validators: received,
                invalidated: Default::default(),
            }))),
            (StatusCode::NOT_FOUND, _) => Ok(Revalidated::Modified(Box::new(CachedObject {
                content_type,
                body,
                ..CachedObject::not_found(kind)
            }))),
            (status, _) => Err(FetchError::NotCacheable {
                status,
                content_type,
                body,
            }),
        }
    }
}
