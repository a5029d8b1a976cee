//! The top tier's source: the ingest server the registry names for a stream or
//! recording, and on-demand storage for what is archived (and for what no server has
//! any more). Registry answers are cached briefly; while the registry is unreachable,
//! and for a lease after it comes back (when "not found" may only mean "not yet
//! re-announced"), streams go on being served from where they last were.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use streamcdn_registry::{Location, Registry, StreamRecord, StreamState};
use streamcdn_urls::{stored, CacheKey, StreamName, Target};

use crate::archived::{self, ArchivedSource};
use crate::http_client::HttpClient;
use crate::object::{CachedObject, Validators};
use crate::source::{FeedBody, FetchError, Revalidated, Source};

/// Registry answers are reused this long; a failure forgets them at once.
const RESOLVE_TTL: Duration = Duration::from_secs(1);
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);
/// After a failed lookup the registry is not asked again for this long.
const REGISTRY_DOWN_FOR: Duration = Duration::from_secs(3);
/// How long a stream nobody asks for is remembered for a registry outage.
const LAST_KNOWN_TTL: Duration = Duration::from_secs(600);

pub struct TopTier {
    registry: Registry,
    http: HttpClient,
    archived: Option<ArchivedSource>,
    resolved: moka::future::Cache<String, Option<Arc<Location>>>,
    /// The last answer per stream, used while the registry is unreachable: streams
    /// that were being served go on being served from where they were.
    last_known: moka::future::Cache<String, Arc<Location>>,
    /// After a failed lookup the registry is not asked again for a while: each viewer
    /// request would otherwise wait out the lookup timeout.
    registry_down_until: Mutex<Option<Instant>>,
}

enum FromServers {
    Served(Revalidated),
    NotThere(Option<StreamRecord>),
}

/// Whether a registry answer says where to fetch from: a server, or on-demand storage.
fn names_a_server(found: Option<&Location>) -> bool {
    found.is_some_and(|l| !l.origins.is_empty() || l.record.state == StreamState::Archived)
}

/// What the registry is asked about for `target`, as a cache key: the stream
/// (`<p>/<s>`) for its stream-level URLs, the recording (`<p>/<s>/<rec>`) for its files.
fn lookup_key(target: &Target) -> String {
    match target.recording() {
        Some(recording) => recording.to_string(),
        None => target.stream().to_string(),
    }
}

impl TopTier {
    pub fn new(registry: Registry, http: HttpClient, archived: Option<ArchivedSource>) -> Self {
        Self {
            registry,
            http,
            archived,
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

    async fn fetch_key(&self, key: &CacheKey) -> Result<CachedObject, FetchError> {
        let target = key.target();
        let kind = target.kind();
        if let Target::Recordings(stream) = target {
            return self.listing(stream, key).await;
        }
        let record = match self.fetch_from_servers(key, None).await? {
            FromServers::Served(Revalidated::NotModified { .. }) => {
                return Err(FetchError::Unreachable(
                    "304 to an unconditional request".into(),
                ))
            }
            FromServers::Served(Revalidated::Modified(object))
                if object.status == StatusCode::OK || self.archived.is_none() =>
            {
                return Ok(*object)
            }
            FromServers::Served(Revalidated::Modified(not_found)) => {
                // The recording may have been archived and removed since the lookup.
                return Ok(self
                    .archived_object(target, None)
                    .await?
                    .unwrap_or(*not_found));
            }
            FromServers::NotThere(record) => record,
        };
        let archived_id = record
            .as_ref()
            .filter(|r| r.state == StreamState::Archived)
            .map(|r| r.recording_id.as_str());
        match self.archived_object(target, archived_id).await? {
            Some(object) => Ok(object),
            // Known to the registry, not archived, and no live server has it.
            None if record
                .as_ref()
                .is_some_and(|r| r.state != StreamState::Archived) =>
            {
                Err(FetchError::NoServer(key.to_string()))
            }
            // A registry that came back less than a lease ago may not know the stream
            // yet (its ingest re-announces within a second): not a 404, which caches
            // and players would take for "gone".
            None if self.registry.settling() => Err(FetchError::NoServer(key.to_string())),
            None => Ok(CachedObject::not_found(kind)),
        }
    }

    async fn archived_object(
        &self,
        target: &Target,
        archived_recording: Option<&str>,
    ) -> Result<Option<CachedObject>, FetchError> {
        match &self.archived {
            Some(archived) => archived.find(target, archived_recording).await,
            None => Ok(None),
        }
    }

    /// A stream's recordings: those its cluster still holds and those archived.
    async fn listing(
        &self,
        stream: &StreamName,
        key: &CacheKey,
    ) -> Result<CachedObject, FetchError> {
        let kind = key.target().kind();
        let mut entries: Vec<serde_json::Value> = match self.fetch_from_servers(key, None).await {
            Ok(FromServers::Served(Revalidated::Modified(o))) if o.status == StatusCode::OK => {
                serde_json::from_slice(&o.body).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        if let Some(archived) = &self.archived {
            for entry in archived.listing(stream).await? {
                entries.retain(|e| e["recording_id"] != entry["recording_id"]);
                entries.push(entry);
            }
        }
        if entries.is_empty() {
            return Ok(CachedObject::not_found(kind));
        }
        entries.sort_by(|a, b| a["recording_id"].as_str().cmp(&b["recording_id"].as_str()));
        let body =
            serde_json::to_vec(&entries).map_err(|e| FetchError::Unreachable(e.to_string()))?;
        Ok(archived::object(
            stored::LISTING,
            Bytes::from(body),
            kind,
            archived::STREAM_LEVEL_TTL,
        ))
    }

    /// The object from the servers the registry names; `NotThere` when the registry
    /// names none (with its record, if any).
    async fn fetch_from_servers(
        &self,
        key: &CacheKey,
        validators: Option<&Validators>,
    ) -> Result<FromServers, FetchError> {
        let mut tried: Vec<String> = Vec::new();
        // The second round runs only if the first failed: the stream may have moved
        // to another server (failover) since the cached answer.
        for round in 0..2 {
            let location = self.resolve(key, round > 0).await?;
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
                .http
                .fetch_conditional(fresh.clone(), key, validators)
                .await
            {
                Err(e) if e.try_next_for(key) => tried.extend(fresh),
                outcome => return outcome.map(FromServers::Served),
            }
        }
        Err(FetchError::Unreachable(format!(
            "every server for {key} failed: {}",
            tried.join(", ")
        )))
    }

    async fn resolve(
        &self,
        key: &CacheKey,
        refresh: bool,
    ) -> Result<Option<Arc<Location>>, FetchError> {
        let target = key.target();
        let lookup_key = lookup_key(target);
        if refresh {
            self.resolved.invalidate(&lookup_key).await;
        }
        let lookup = async {
            let stream = target.stream();
            let found = async {
                match target.recording() {
                    Some(r) => {
                        self.registry
                            .locate_recording(&stream.provider, &stream.stream, &r.id)
                            .await
                    }
                    None => {
                        self.registry
                            .locate_stream(&stream.provider, &stream.stream)
                            .await
                    }
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
            if let Some(location) = self.last_known_for(&lookup_key, target).await {
                return Ok(Some(location));
            }
        }
        match self.resolved.try_get_with(lookup_key.clone(), lookup).await {
            Ok(found) if !names_a_server(found.as_deref()) => {
                // A stream that was somewhere and is nowhere now. If the registry came
                // back less than a lease ago, the ingests may not have re-announced
                // yet, so the last known location is trusted over it until then. A
                // registry flushed since the last background check has not been seen
                // to come back yet: it is checked now.
                let known = self
                    .known_location(&lookup_key, target)
                    .await
                    .filter(|k| !k.origins.is_empty());
                if known.is_some() && !self.registry.settling() {
                    self.registry.recheck().await;
                }
                match known {
                    Some(known) if self.registry.settling() => {
                        metrics::counter!("streamcdn_edge_registry_fallbacks_total").increment(1);
                        tracing::info!(path = %key, "the registry came back and does not place this stream yet; using where it was");
                        Ok(Some(known))
                    }
                    _ => Ok(found),
                }
            }
            Ok(found) => {
                if let Some(location) = &found {
                    self.last_known.insert(lookup_key, location.clone()).await;
                }
                Ok(found)
            }
            Err(e) => {
                *self
                    .registry_down_until
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + REGISTRY_DOWN_FOR);
                match self.last_known_for(&lookup_key, target).await {
                    Some(location) => {
                        tracing::warn!(path = %key, error = %e, "registry lookup failed; using the last known location");
                        Ok(Some(location))
                    }
                    None => {
                        tracing::warn!(path = %key, error = %e, "registry lookup failed");
                        Err(FetchError::Registry(e.to_string()))
                    }
                }
            }
        }
    }

    /// [`Self::known_location`], counted as a fallback.
    async fn last_known_for(&self, lookup_key: &str, target: &Target) -> Option<Arc<Location>> {
        let found = self.known_location(lookup_key, target).await;
        if found.is_some() {
            metrics::counter!("streamcdn_edge_registry_fallbacks_total").increment(1);
        }
        found
    }

    /// Where `lookup_key` was last found; a recording never looked up is where its
    /// stream's current recording was, if it is that one.
    async fn known_location(&self, lookup_key: &str, target: &Target) -> Option<Arc<Location>> {
        match self.last_known.get(lookup_key).await {
            Some(location) => Some(location),
            None => match target.recording() {
                Some(r) => self
                    .last_known
                    .get(&r.stream.to_string())
                    .await
                    .filter(|l| l.record.recording_id == r.id),
                None => None,
            },
        }
    }
}

impl TopTier {
    async fn open_feed_at_servers(
        &self,
        stream: &StreamName,
        retry: bool,
    ) -> Result<FeedBody, FetchError> {
        let key = CacheKey::with_directives(Target::StreamLive(stream.clone()), Default::default());
        let location = self.resolve(&key, retry).await?;
        let origins = match location {
            Some(l) if !l.origins.is_empty() && l.record.state == StreamState::Live => {
                l.origins.clone()
            }
            // Being continued on another server: ask again shortly.
            Some(l) if l.record.state == StreamState::Interrupted => {
                return Err(FetchError::NoServer(stream.to_string()))
            }
            _ => {
                return Err(FetchError::NotCacheable {
                    status: StatusCode::NOT_FOUND,
                    content_type: None,
                    body: Bytes::from_static(b"stream not live\n"),
                })
            }
        };
        self.http
            .open_stream(origins, &streamcdn_urls::feed_path(stream))
            .await
    }
}

impl Source for TopTier {
    fn open_feed<'a>(
        &'a self,
        stream: &'a StreamName,
        retry: bool,
    ) -> BoxFuture<'a, Result<FeedBody, FetchError>> {
        self.open_feed_at_servers(stream, retry).boxed()
    }

    fn fetch<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Result<CachedObject, FetchError>> {
        self.fetch_key(key).boxed()
    }

    /// Conditional at the ingest servers; what they do not hold (archived, listings)
    /// is fetched whole.
    fn revalidate<'a>(
        &'a self,
        key: &'a CacheKey,
        validators: &'a Validators,
    ) -> BoxFuture<'a, Result<Revalidated, FetchError>> {
        async move {
            if !matches!(key.target(), Target::Recordings(_)) {
                // A failure is final here, as in `fetch_key`: asking twice would double
                // the wait before a stale playlist is served.
                match self.fetch_from_servers(key, Some(validators)).await? {
                    FromServers::Served(Revalidated::Modified(o)) if o.status != StatusCode::OK => {
                    }
                    FromServers::Served(answer) => return Ok(answer),
                    FromServers::NotThere(_) => {}
                }
            }
            self.fetch_key(key)
                .await
                .map(|o| Revalidated::Modified(Box::new(o)))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_lookups_come_from_the_target() {
        let lookup = |path: &str| lookup_key(&Target::parse(path).unwrap());
        assert_eq!(lookup("/p/s/index.m3u8"), "p/s");
        assert_eq!(lookup("/p/s/live.m3u8"), "p/s");
        assert_eq!(lookup("/p/s/recordings"), "p/s");
        assert_eq!(lookup("/p/s/r1/000001.m4s"), "p/s/r1");
        assert_eq!(lookup("/p/s/r1/playlist.m3u8"), "p/s/r1");
    }

    fn record(stream: &str, recording: &str, state: StreamState) -> StreamRecord {
        StreamRecord {
            provider: "p".into(),
            stream: stream.into(),
            recording_id: recording.into(),
            cluster: "c".into(),
            node: "gone".into(),
            origin: String::new(),
            state,
        }
    }

    /// Without any server: what the registry's record says decides between storage,
    /// "no server now" and "no such stream".
    #[tokio::test]
    async fn the_registry_record_decides_where_from() {
        use streamcdn_archive::{Archive, StoreSettings, COMPLETE_MARKER};

        let dir = std::env::temp_dir().join(format!("streamcdn-top-tier-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for rec in ["r1", "r2"] {
            let rec_dir = dir.join("p/s").join(rec);
            std::fs::create_dir_all(&rec_dir).unwrap();
            std::fs::write(rec_dir.join("stream-index.m3u8"), rec).unwrap();
            std::fs::write(rec_dir.join(COMPLETE_MARKER), "{}").unwrap();
        }
        std::fs::write(
            dir.join("p/s/recordings.json"),
            r#"[{"recording_id":"r1"},{"recording_id":"r2"}]"#,
        )
        .unwrap();
        let registry = Registry::memory();
        let lease = Duration::from_secs(60);
        // The registry names r1 as the stream's archived recording, though r2 is newer.
        registry
            .announce(&record("s", "r1", StreamState::Archived), lease)
            .await
            .unwrap();
        registry
            .announce(&record("live", "r9", StreamState::Live), lease)
            .await
            .unwrap();
        let archive = Archive::open(&StoreSettings::Local { dir: dir.clone() }).unwrap();
        let top = TopTier::new(
            registry,
            HttpClient::new(Duration::from_secs(1), 1 << 20),
            Some(ArchivedSource::new(archive)),
        );
        let fetch = |path: &'static str| {
            let top = &top;
            async move { top.fetch(&CacheKey::parse(path, None).unwrap()).await }
        };

        let current = fetch("/p/s/index.m3u8").await.unwrap();
        assert_eq!(
            (current.status, &current.body[..]),
            (StatusCode::OK, &b"r1"[..])
        );
        // Its publisher is gone: not a 404, which would be cached as "no such stream".
        assert!(matches!(
            fetch("/p/live/index.m3u8").await,
            Err(FetchError::NoServer(_))
        ));
        assert_eq!(
            fetch("/p/nobody/index.m3u8").await.unwrap().status,
            StatusCode::NOT_FOUND
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
