//! Where a cache tier fetches from: its parents (mid-tier caches, chosen per URL by
//! rendezvous hashing, the next one on failure) or, for the top tier, the ingest server
//! that the registry names for the stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{header, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use streamcdn_registry::{Location, Registry, StreamRecord, StreamState};

use crate::archived::ArchivedSource;
use thiserror::Error;

use crate::object::{cacheable_ttl, hash64, CachedObject, ObjectKind, NEGATIVE_TTL};

pub enum UpstreamKind {
    Parents(Vec<String>),
    Registry(Registry),
}

/// Why a fetch produced nothing to cache. Waiters coalesced on the same key all receive
/// the same value.
#[derive(Debug, Error)]
pub enum FetchError {
    /// The upstream answered, but not with something we may cache (403, no-store...).
    #[error("upstream answered {status}")]
    NotCacheable {
        status: StatusCode,
        content_type: Option<axum::http::HeaderValue>,
        body: Bytes,
    },
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    #[error("upstream timed out")]
    Timeout,
    #[error("object larger than the edge's max_object_size")]
    TooLarge,
    /// The registry knows the stream, but no server that could serve it is alive.
    #[error("no live server holds {0}")]
    NoServer(String),
    #[error("registry: {0}")]
    Registry(String),
}

impl FetchError {
    /// Failures another upstream might not have.
    fn try_next(&self) -> bool {
        match self {
            Self::Unreachable(_) | Self::Timeout => true,
            Self::NotCacheable { status, .. } => status.is_server_error(),
            _ => false,
        }
    }
}

/// A failed upstream is skipped for this long (unless every one has failed).
const DOWN_FOR: Duration = Duration::from_secs(3);
/// Registry answers are reused this long; a failure forgets them at once.
const RESOLVE_TTL: Duration = Duration::from_secs(1);
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a stream nobody asks for is remembered for a registry outage.
const LAST_KNOWN_TTL: Duration = Duration::from_secs(600);

pub struct Upstream {
    kind: UpstreamKind,
    /// The top tier's on-demand storage, for archived recordings.
    archived: Option<ArchivedSource>,
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
    max_object_bytes: usize,
    down_until: Mutex<HashMap<String, Instant>>,
    resolved: moka::future::Cache<String, Option<Arc<Location>>>,
    /// The last answer per stream, used while the registry is unreachable: streams
    /// that were being served go on being served from where they were.
    last_known: moka::future::Cache<String, Arc<Location>>,
    /// After a failed lookup the registry is not asked again for a while: each viewer
    /// request would otherwise wait out the lookup timeout.
    registry_down_until: Mutex<Option<Instant>>,
}

/// What a top-tier path names in the registry.
enum Target<'a> {
    /// Provider, stream, and the name under the stream (`index.m3u8`, ...).
    Stream(&'a str, &'a str, &'a str),
    /// Provider, stream, recording, file.
    Recording(&'a str, &'a str, &'a str, &'a str),
}

enum FromServers {
    Served(CachedObject),
    NotThere(Option<StreamRecord>),
}

fn target(path: &str) -> Option<Target<'_>> {
    let parts: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    match parts[..] {
        [p, s, name] => Some(Target::Stream(p, s, name)),
        [p, s, r, file] => Some(Target::Recording(p, s, r, file)),
        _ => None,
    }
}

/// Parents ordered for `path`: highest rendezvous score first. Every edge computes the
/// same order, so a URL lands on one parent, and removing a parent moves only its URLs.
pub fn rendezvous_order(parents: &[String], path: &str) -> Vec<String> {
    let mut scored: Vec<(u64, &String)> = parents
        .iter()
        .map(|p| (hash64(&[p.as_bytes(), path.as_bytes()]), p))
        .collect();
    scored.sort_by_key(|s| std::cmp::Reverse(s.0));
    scored.into_iter().map(|(_, p)| p.clone()).collect()
}

impl Upstream {
    pub fn new(
        kind: UpstreamKind,
        archive: Option<streamcdn_archive::Archive>,
        timeout: Duration,
        max_object_bytes: u64,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        // A dead upstream on a live network refuses at once; a black hole must not
        // hold a viewer for the whole request timeout before the next one is tried.
        connector.set_connect_timeout(Some(timeout.min(Duration::from_secs(2))));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            kind,
            archived: archive.map(ArchivedSource::new),
            client,
            timeout,
            max_object_bytes: usize::try_from(max_object_bytes).unwrap_or(usize::MAX),
            down_until: Mutex::new(HashMap::new()),
            resolved: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(RESOLVE_TTL)
                .build(),
            last_known: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(LAST_KNOWN_TTL)
                .build(),
            registry_down_until: Mutex::new(None),
        }
    }

    /// Fetches `path` from the best upstream that answers.
    pub async fn fetch(&self, path: &str, kind: ObjectKind) -> Result<CachedObject, FetchError> {
        match &self.kind {
            UpstreamKind::Parents(parents) => {
                let order = self.healthy_first(rendezvous_order(parents, path));
                self.fetch_from_any(&order, path, kind).await
            }
            UpstreamKind::Registry(registry) => self.fetch_via_registry(registry, path, kind).await,
        }
    }

    /// The top tier: the server the registry names, or on-demand storage for what is
    /// archived (and for what no server has any more).
    async fn fetch_via_registry(
        &self,
        registry: &Registry,
        path: &str,
        kind: ObjectKind,
    ) -> Result<CachedObject, FetchError> {
        let Some(target) = target(path) else {
            return Ok(not_found(kind));
        };
        if let Target::Stream(p, s, "recordings") = target {
            return self.listing(registry, p, s, path, kind).await;
        }
        let record = match self
            .fetch_from_servers(registry, path, &target, kind)
            .await?
        {
            FromServers::Served(object)
                if object.status == StatusCode::OK || self.archived.is_none() =>
            {
                return Ok(object)
            }
            FromServers::Served(not_found) => {
                // The recording may have been archived and removed since the lookup.
                return Ok(self
                    .archived_object(&target, None, kind)
                    .await?
                    .unwrap_or(not_found));
            }
            FromServers::NotThere(record) => record,
        };
        let archived_id = record
            .as_ref()
            .filter(|r| r.state == StreamState::Archived)
            .map(|r| r.recording_id.as_str());
        match self.archived_object(&target, archived_id, kind).await? {
            Some(object) => Ok(object),
            // Known to the registry, not archived, and no live server has it.
            None if record
                .as_ref()
                .is_some_and(|r| r.state != StreamState::Archived) =>
            {
                Err(FetchError::NoServer(path.to_owned()))
            }
            None => Ok(not_found(kind)),
        }
    }

    async fn archived_object(
        &self,
        target: &Target<'_>,
        archived_recording: Option<&str>,
        kind: ObjectKind,
    ) -> Result<Option<CachedObject>, FetchError> {
        let Some(archived) = &self.archived else {
            return Ok(None);
        };
        match *target {
            Target::Stream(p, s, name) => {
                archived
                    .stream_file(p, s, archived_recording, name, kind)
                    .await
            }
            Target::Recording(p, s, r, file) => archived.recording_file(p, s, r, file, kind).await,
        }
    }

    /// A stream's recordings: those its cluster still holds and those archived.
    async fn listing(
        &self,
        registry: &Registry,
        provider: &str,
        stream: &str,
        path: &str,
        kind: ObjectKind,
    ) -> Result<CachedObject, FetchError> {
        let target = Target::Stream(provider, stream, "recordings");
        let mut entries: Vec<serde_json::Value> =
            match self.fetch_from_servers(registry, path, &target, kind).await {
                Ok(FromServers::Served(o)) if o.status == StatusCode::OK => {
                    serde_json::from_slice(&o.body).unwrap_or_default()
                }
                _ => Vec::new(),
            };
        if let Some(archived) = &self.archived {
            for entry in archived.listing(provider, stream).await? {
                entries.retain(|e| e["recording_id"] != entry["recording_id"]);
                entries.push(entry);
            }
        }
        if entries.is_empty() {
            return Ok(not_found(kind));
        }
        entries.sort_by(|a, b| a["recording_id"].as_str().cmp(&b["recording_id"].as_str()));
        let body =
            serde_json::to_vec(&entries).map_err(|e| FetchError::Unreachable(e.to_string()))?;
        Ok(crate::archived::object(
            "recordings.json",
            Bytes::from(body),
            kind,
            Duration::from_secs(2),
        ))
    }

    /// The object from the servers the registry names; `NotThere` when the registry
    /// names none (with its record, if any).
    async fn fetch_from_servers(
        &self,
        registry: &Registry,
        path: &str,
        target: &Target<'_>,
        kind: ObjectKind,
    ) -> Result<FromServers, FetchError> {
        let mut tried: Vec<String> = Vec::new();
        // The second round runs only if the first failed: the stream may have moved
        // to another server (failover) since the cached answer.
        for round in 0..2 {
            let location = self.resolve(registry, path, target, round > 0).await?;
            let Some(location) = location else {
                return Ok(FromServers::NotThere(None));
            };
            let fresh: Vec<String> = location
                .origins
                .iter()
                .filter(|o| !tried.contains(o))
                .cloned()
                .collect();
            if fresh.is_empty() {
                if tried.is_empty() {
                    return Ok(FromServers::NotThere(Some(location.record.clone())));
                }
                continue;
            }
            match self
                .fetch_from_any(&self.healthy_first(fresh.clone()), path, kind)
                .await
            {
                Err(e) if e.try_next() => tried.extend(fresh),
                outcome => return outcome.map(FromServers::Served),
            }
        }
        Err(FetchError::Unreachable(format!(
            "every server for {path} failed: {}",
            tried.join(", ")
        )))
    }

    async fn resolve(
        &self,
        registry: &Registry,
        path: &str,
        target: &Target<'_>,
        refresh: bool,
    ) -> Result<Option<Arc<Location>>, FetchError> {
        let key = match target {
            Target::Stream(p, s, _) => format!("{p}/{s}"),
            Target::Recording(p, s, r, _) => format!("{p}/{s}/{r}"),
        };
        if refresh {
            self.resolved.invalidate(&key).await;
        }
        let lookup = async {
            let found = async {
                match *target {
                    Target::Stream(p, s, _) => registry.locate_stream(p, s).await,
                    Target::Recording(p, s, r, _) => registry.locate_recording(p, s, r).await,
                }
            };
            // A registry that does not answer must not hold viewers: the last known
            // location serves meanwhile.
            match tokio::time::timeout(LOOKUP_TIMEOUT, found).await {
                Ok(found) => found.map(|l| l.map(Arc::new)).map_err(|e| e.to_string()),
                Err(_) => Err("registry lookup timed out".to_owned()),
            }
        };
        let down = self
            .registry_down_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t > Instant::now());
        if down {
            if let Some(location) = self.last_known_for(&key, target).await {
                return Ok(Some(location));
            }
        }
        match self.resolved.try_get_with(key.clone(), lookup).await {
            Ok(found) => {
                if let Some(location) = &found {
                    self.last_known.insert(key, location.clone()).await;
                }
                Ok(found)
            }
            Err(e) => {
                *self
                    .registry_down_until
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + DOWN_FOR);
                match self.last_known_for(&key, target).await {
                    Some(location) => {
                        tracing::warn!(path, error = %e, "registry lookup failed; using the last known location");
                        Ok(Some(location))
                    }
                    None => {
                        tracing::warn!(path, error = %e, "registry lookup failed");
                        Err(FetchError::Registry(e.to_string()))
                    }
                }
            }
        }
    }

    /// Where `key` was last found; a recording never looked up is where its stream's
    /// current recording was, if it is that one.
    async fn last_known_for(&self, key: &str, target: &Target<'_>) -> Option<Arc<Location>> {
        let found = match self.last_known.get(key).await {
            Some(location) => Some(location),
            None => match *target {
                Target::Recording(p, s, r, _) => self
                    .last_known
                    .get(&format!("{p}/{s}"))
                    .await
                    .filter(|l| l.record.recording_id == r),
                Target::Stream(..) => None,
            },
        };
        if found.is_some() {
            metrics::counter!("streamcdn_edge_registry_fallbacks_total").increment(1);
        }
        found
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

    async fn fetch_from_any(
        &self,
        order: &[String],
        path: &str,
        kind: ObjectKind,
    ) -> Result<CachedObject, FetchError> {
        let mut last = FetchError::Unreachable("no upstream configured".into());
        for base in order {
            let outcome = self.fetch_from(base, path, kind).await;
            let label = match &outcome {
                Ok(_) => "ok",
                Err(e) if e.try_next() => "failed",
                Err(_) => "refused",
            };
            metrics::counter!("streamcdn_edge_upstream_fetches_total", "upstream" => base.clone(), "outcome" => label)
                .increment(1);
            match outcome {
                Err(e) if e.try_next() => {
                    tracing::warn!(upstream = %base, path, error = %e, "upstream failed; trying the next");
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

    async fn fetch_from(
        &self,
        base: &str,
        path: &str,
        kind: ObjectKind,
    ) -> Result<CachedObject, FetchError> {
        let uri: hyper::Uri = format!("{base}{path}")
            .parse()
            .map_err(|e| FetchError::Unreachable(format!("bad upstream URI: {e}")))?;
        let request = hyper::Request::get(uri)
            .header(header::USER_AGENT, "streamcdn-edge")
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
            .map(|t| t.min(kind.max_ttl()));
        match (parts.status, ttl) {
            (StatusCode::OK, Some(ttl)) if ttl > age => Ok(CachedObject {
                status: StatusCode::OK,
                content_type,
                cache_control,
                body,
                kind,
                born: Instant::now(),
                ttl: ttl - age,
            }),
            (StatusCode::NOT_FOUND, _) => Ok(CachedObject {
                content_type,
                body,
                ..not_found(kind)
            }),
            (status, _) => Err(FetchError::NotCacheable {
                status,
                content_type,
                body,
            }),
        }
    }
}

fn not_found(kind: ObjectKind) -> CachedObject {
    CachedObject {
        status: StatusCode::NOT_FOUND,
        content_type: Some(axum::http::HeaderValue::from_static(
            "text/plain; charset=utf-8",
        )),
        cache_control: Some(axum::http::HeaderValue::from_static("max-age=1")),
        body: Bytes::from_static(b"no such stream\n"),
        kind,
        born: Instant::now(),
        ttl: NEGATIVE_TTL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_spreads_urls_and_moves_only_a_removed_parents_share() {
        let parents: Vec<String> = (1..=3).map(|i| format!("http://mid{i}:8080")).collect();
        let paths: Vec<String> = (0..3000).map(|i| format!("/p/s/r/{i:06}.m4s")).collect();
        let first = |ps: &[String], path: &str| rendezvous_order(ps, path)[0].clone();
        let mut share = HashMap::new();
        for path in &paths {
            *share.entry(first(&parents, path)).or_insert(0) += 1;
        }
        for (parent, n) in &share {
            assert!((800..1200).contains(n), "{parent} got {n} of 3000");
        }
        let without_mid2: Vec<String> = parents
            .iter()
            .filter(|p| !p.contains("mid2"))
            .cloned()
            .collect();
        for path in &paths {
            let before = first(&parents, path);
            let after = first(&without_mid2, path);
            if !before.contains("mid2") {
                assert_eq!(before, after, "{path} moved although its parent stayed");
            }
        }
    }

    #[test]
    fn registry_targets_come_from_the_path() {
        assert!(matches!(
            target("/p/s/index.m3u8"),
            Some(Target::Stream("p", "s", "index.m3u8"))
        ));
        assert!(matches!(
            target("/p/s/r1/000001.m4s"),
            Some(Target::Recording("p", "s", "r1", "000001.m4s"))
        ));
        assert!(target("/p").is_none());
        assert!(target("/a/b/c/d/e").is_none());
    }
}
