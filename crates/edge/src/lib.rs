//! The edge role: an HTTP caching proxy for HLS.
//!
//! A request goes through these phases:
//! 1. parse the URL into a [`CacheKey`] (the target's path and its normalized LL-HLS
//!    directives): not a plain path is `400`, a path outside the URL scheme `404`
//!    without asking anyone;
//! 2. look the key up in the memory cache;
//! 3. on a miss (or a stale playlist), one coalesced fill per key ([`flight`]): the disk
//!    tier for segments ([`disk`]), else the [`Source`] — parents by rendezvous hashing
//!    ([`parents`]), or for the top tier the ingest server the registry names and
//!    on-demand storage ([`top_tier`], [`archived`]);
//! 4. store by the object's type, the upstream's `Cache-Control` and `Age`, and the
//!    LL-HLS lifetimes ([`object`], [`lifetime`]): blocking reloads and parts are
//!    held upstream for as long as the origin holds them, and coalesced meanwhile;
//! 5. respond, with CORS and byte ranges for browser players ([`response`]). A playlist
//!    whose refresh fails is served stale within the `stale_if_error` bound.
//!
//! The same code runs every tier; the edge never reads ingest storage.

mod archived;
pub mod carried;
mod clip;
pub mod control;
pub mod control_endpoint;
mod disk;
pub mod drain;
mod feed;
mod flight;
mod http_client;
mod lifetime;
mod object;
mod opus_feed;
mod parents;
mod range;
mod response;
mod source;
mod top_tier;
pub mod viewers;
pub mod whep;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use moka::future::Cache;
use streamcdn_registry::Registry;
use streamcdn_urls::{CacheKey, UrlError};

use archived::ArchivedSource;
pub use clip::ClipSettings;
use control::Matcher;
use disk::DiskCache;
use flight::Flights;
use http_client::HttpClient;
pub use http_client::TIER_HEADER;
pub use object::CachedObject;
pub use object::Validators;
use object::{ObjectExpiry, Policy};
use parents::Parents;
use response::{cors, error_response, object_response, plain, Outcome};
pub use source::{FetchError, Revalidated, Source};
use streamcdn_cdni::control::{ControlReply, ControlRequest, Operation};
use top_tier::TopTier;

/// Where a tier fills from.
pub enum UpstreamKind {
    /// Mid-tier caches, chosen per URL by rendezvous hashing.
    Parents(Vec<String>),
    /// The top tier: the ingest servers the registry names.
    Registry(Registry),
}

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
    /// The longest any object stays fresh here (a configuration's cache rule).
    pub max_ttl: Option<Duration>,
    /// The deployment's tier credential, presented to parents (which then need no
    /// signed-URL token from us).
    pub tier_credential: Option<String>,
    /// Speak HTTP/2 with prior knowledge (h2c) to parents and ingest origins: one
    /// connection per upstream multiplexes every request.
    pub upstream_http2: bool,
    /// Bounds on the clips this cache cuts.
    pub clip: ClipSettings,
}

/// The caches of an edge, whatever its source.
pub struct CacheSettings {
    pub cache_memory_bytes: u64,
    /// Directory and byte bound of the disk tier; `None` keeps segments in memory only.
    pub disk: Option<(PathBuf, u64)>,
    /// How long past freshness a playlist may be served while the source fails.
    pub stale_if_error: Duration,
    /// Bounds on the clips this cache cuts.
    pub clip: ClipSettings,
}

type FillResult = Result<Arc<CachedObject>, Arc<FetchError>>;

pub struct Edge {
    stale_if_error: Duration,
    /// Keyed by [`CacheKey::as_str`], as are the disk tier and the flights.
    memory: Cache<String, Arc<CachedObject>>,
    disk: Option<Arc<DiskCache>>,
    source: Arc<dyn Source>,
    flights: Flights<FillResult>,
    clip: ClipSettings,
    /// Bumped by every purge and invalidate: a fill that began before one does not
    /// store what it fetched (it may be what was just removed).
    generation: Arc<AtomicU64>,
    /// Live streams' low-latency feeds, one upstream connection each.
    feeds: Arc<feed::FeedRelays>,
    /// The same with Opus audio, for WebRTC viewers.
    opus_feeds: Arc<opus_feed::OpusFeeds>,
}

impl Edge {
    pub fn new(settings: EdgeSettings) -> std::io::Result<Arc<Self>> {
        let http = HttpClient::new(settings.upstream_timeout, settings.max_object_bytes)
            .with_max_ttl(settings.max_ttl)
            .with_tier_credential(settings.tier_credential.as_deref())
            .with_http2(settings.upstream_http2);
        let source: Arc<dyn Source> = match settings.upstream {
            UpstreamKind::Parents(parents) => Arc::new(Parents::new(parents, http)),
            UpstreamKind::Registry(registry) => Arc::new(TopTier::new(
                registry,
                http,
                settings.archive.map(ArchivedSource::new),
            )),
        };
        let caches = CacheSettings {
            cache_memory_bytes: settings.cache_memory_bytes,
            disk: settings.disk,
            stale_if_error: settings.stale_if_error,
            clip: settings.clip,
        };
        Self::with_source(caches, source)
    }

    /// An edge filling from any source (a fake one in tests).
    pub fn with_source(
        settings: CacheSettings,
        source: Arc<dyn Source>,
    ) -> std::io::Result<Arc<Self>> {
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
        let feeds = feed::FeedRelays::new(source.clone());
        Ok(Arc::new(Self {
            stale_if_error: settings.stale_if_error,
            memory,
            disk,
            opus_feeds: opus_feed::OpusFeeds::new(feeds.clone(), "ffmpeg"),
            feeds,
            source,
            flights: Flights::default(),
            clip: settings.clip,
            generation: Arc::new(AtomicU64::new(0)),
        }))
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new().fallback(handle).with_state(self.clone())
    }

    /// Answers one playback request (what [`Self::router`] does for every request).
    pub async fn serve(self: Arc<Self>, request: Request) -> Response {
        handle(State(self), request).await
    }

    /// A reader of `stream`'s low-latency feed, relayed from upstream (one connection
    /// per stream for every reader here), from its latest keyframe on.
    pub async fn feed(
        &self,
        stream: &streamcdn_urls::StreamName,
    ) -> Result<streamcdn_feed::FeedSubscriber, Arc<FetchError>> {
        self.feeds.subscribe(stream).await
    }

    /// [`Self::feed`] with its audio in Opus, what WebRTC viewers hear: AAC is
    /// re-encoded once per stream on this tier, Opus passes through.
    pub async fn feed_with_opus(
        &self,
        stream: &streamcdn_urls::StreamName,
    ) -> Result<streamcdn_feed::FeedSubscriber, Arc<FetchError>> {
        self.opus_feeds.subscribe(stream).await
    }

    /// How many live streams' feeds this tier relays now.
    pub fn relayed_feeds(&self) -> usize {
        self.feeds.len()
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

    /// The cached object for `key`, filled (one coalesced fill per key and
    /// generation) unless fresh; the stale copy, if any, comes along for
    /// stale-if-error.
    async fn lookup(
        self: &Arc<Self>,
        key: &CacheKey,
    ) -> (
        Option<Arc<CachedObject>>,
        Result<(Arc<CachedObject>, Outcome), Arc<FetchError>>,
    ) {
        let cached = self.memory.get(key.as_str()).await;
        if let Some(object) = cached.as_ref().filter(|o| o.is_fresh()) {
            return (cached.clone(), Ok((object.clone(), Outcome::Hit)));
        }
        // A fill begun before a purge must not be joined by requests after it.
        let flight = format!(
            "{}#{}",
            self.generation.load(Ordering::SeqCst),
            key.as_str()
        );
        let fill = {
            let (edge, key) = (self.clone(), key.clone());
            async move { edge.fill(&key).await }
        };
        let result = match self.flights.run(&flight, fill).await {
            (Ok(object), true) => Ok((object, Outcome::Miss)),
            (Ok(object), false) => Ok((object, Outcome::Coalesced)),
            (Err(error), _) => Err(error),
        };
        (cached, result)
    }

    /// Brings `key` into the cache: from disk if it is there, else from the source
    /// (conditionally, when an invalidated or stale copy has validators).
    async fn fill(&self, key: &CacheKey) -> FillResult {
        let generation = self.generation.load(Ordering::SeqCst);
        let text = key.as_str();
        let cached = self.memory.get(text).await;
        // A fill that finished between our cache miss and joining the flight.
        if let Some(object) = cached.as_ref().filter(|o| o.is_fresh()) {
            return Ok(object.clone());
        }
        let on_disk = Policy::of(key.target().kind()).disk;
        if on_disk {
            if let Some(object) = self.load_from_disk(text, generation).await {
                return Ok(object);
            }
        }
        let previous = cached.filter(|o| o.status == StatusCode::OK && !o.validators.is_empty());
        let mut object = match &previous {
            Some(previous) => match self.source.revalidate(key, &previous.validators).await {
                Ok(Revalidated::NotModified { ttl, age }) => {
                    metrics::counter!("streamcdn_edge_revalidations_total", "outcome" => "not_modified").increment(1);
                    previous.revalidated(ttl, age)
                }
                Ok(Revalidated::Modified(object)) => {
                    metrics::counter!("streamcdn_edge_revalidations_total", "outcome" => "modified").increment(1);
                    *object
                }
                Err(e) => return Err(Arc::new(e)),
            },
            None => self.source.fetch(key).await.map_err(Arc::new)?,
        };
        object.ttl = lifetime::limit(key, object.status, &object.body, object.ttl);
        let object = Arc::new(object);
        if self.generation.load(Ordering::SeqCst) != generation || !object.is_fresh() {
            // A purge or invalidate landed while fetching, or the answer is not to be
            // kept: serve, do not store.
            return Ok(object);
        }
        self.memory.insert(text.to_owned(), object.clone()).await;
        if let (Some(disk), true, StatusCode::OK) = (&self.disk, on_disk, object.status) {
            let current = self.generation.clone();
            disk.store(text, &object, move || {
                current.load(Ordering::SeqCst) == generation
            });
        }
        Ok(object)
    }

    /// A clip, cut here from the recording's segments as this cache holds them (each
    /// fetched through [`Self::lookup`], coalesced); kept like a segment once its span
    /// is recorded. Identical clip requests at once each cut their own copy from the
    /// same cached segments.
    async fn clip(
        self: &Arc<Self>,
        key: &CacheKey,
    ) -> Result<(Arc<CachedObject>, Outcome), Arc<FetchError>> {
        let text = key.as_str();
        if let Some(object) = self.memory.get(text).await.filter(|o| o.is_fresh()) {
            return Ok((object, Outcome::Hit));
        }
        let generation = self.generation.load(Ordering::SeqCst);
        if let Some(object) = self.load_from_disk(text, generation).await {
            return Ok((object, Outcome::Hit));
        }
        let object = clip::build(key, self.clip, |part| {
            let edge = self.clone();
            async move { edge.lookup(&part).await.1.map(|(o, _)| o) }
        })
        .await
        .map_err(Arc::new)?;
        let object = Arc::new(object);
        if self.generation.load(Ordering::SeqCst) == generation && object.is_fresh() {
            self.memory.insert(text.to_owned(), object.clone()).await;
            if let (Some(disk), StatusCode::OK) = (&self.disk, object.status) {
                let current = self.generation.clone();
                disk.store(text, &object, move || {
                    current.load(Ordering::SeqCst) == generation
                });
            }
        }
        Ok((object, Outcome::Miss))
    }

    /// Carries out a control request (see [`control`]).
    pub async fn control(self: &Arc<Self>, request: &ControlRequest) -> ControlReply {
        let (matchers, mut errors) = control::matchers(request);
        let mut reply = ControlReply {
            trigger_id: request.trigger_id.clone(),
            ..ControlReply::default()
        };
        match request.operation {
            Operation::Purge => reply.purged = self.purge(&matchers).await,
            Operation::Invalidate => reply.invalidated = self.invalidate(&matchers).await,
            Operation::Preposition => {
                let keys = matchers.iter().filter_map(|m| match m {
                    Matcher::Key(key) => Some(key.clone()),
                    Matcher::Pattern { .. } => None,
                });
                let (count, failed) = self.preposition(keys.collect()).await;
                reply.prepositioned = count;
                errors.extend(failed);
            }
        }
        reply.errors = errors;
        reply
    }

    /// Removes every object a matcher names from memory and disk; how many.
    pub async fn purge(&self, matchers: &[Matcher]) -> usize {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut removed = std::collections::HashSet::new();
        for key in self.matching_in_memory(matchers) {
            if self.memory.remove(&key).await.is_some() {
                removed.insert(key);
            }
        }
        removed.extend(self.remove_from_disk(matchers));
        removed.len()
    }

    /// Marks every object a matcher names stale: the next request revalidates it
    /// upstream. Disk copies are dropped (the memory copy, if any, carries the
    /// validators). How many objects were affected.
    pub async fn invalidate(&self, matchers: &[Matcher]) -> usize {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut affected = std::collections::HashSet::new();
        for key in self.matching_in_memory(matchers) {
            if let Some(object) = self.memory.get(&key).await {
                object.invalidate();
                affected.insert(key);
            }
        }
        affected.extend(self.remove_from_disk(matchers));
        affected.len()
    }

    /// Deletes the matching disk copies; their keys.
    fn remove_from_disk(&self, matchers: &[Matcher]) -> Vec<String> {
        let Some(disk) = &self.disk else {
            return Vec::new();
        };
        disk.keys()
            .into_iter()
            .filter(|k| matchers.iter().any(|m| m.matches(k)) && disk.remove(k))
            .collect()
    }

    fn matching_in_memory(&self, matchers: &[Matcher]) -> Vec<String> {
        self.memory
            .iter()
            .filter(|(key, _)| matchers.iter().any(|m| m.matches(key)))
            .map(|(key, _)| key.as_ref().clone())
            .collect()
    }

    /// Fills each key and, for playlists, what they reference (a multivariant playlist
    /// its media playlists, those their init segment and segments). Returns how many
    /// objects are now cached and one line per failure.
    pub async fn preposition(self: &Arc<Self>, keys: Vec<String>) -> (usize, Vec<String>) {
        let mut queue: std::collections::VecDeque<String> = keys.into();
        let mut seen = std::collections::HashSet::new();
        let (mut cached, mut errors) = (0, Vec::new());
        while let Some(text) = queue.pop_front() {
            if !seen.insert(text.clone()) || seen.len() > control::MAX_PREPOSITION_OBJECTS {
                continue;
            }
            let key = match control::cache_key(&text) {
                Ok(key) => key,
                Err(e) => {
                    errors.push(e.to_string());
                    continue;
                }
            };
            match self.lookup(&key).await.1 {
                Ok((object, _)) if object.status == StatusCode::OK => {
                    cached += 1;
                    if key.target().kind() == streamcdn_urls::ObjectKind::Playlist {
                        let body = String::from_utf8_lossy(&object.body);
                        queue.extend(control::playlist_references(key.as_str(), &body));
                    }
                }
                Ok((object, _)) => {
                    errors.push(format!("{text}: upstream answered {}", object.status))
                }
                Err(e) => errors.push(format!("{text}: {e}")),
            }
        }
        metrics::counter!("streamcdn_edge_prepositioned_total").increment(cached as u64);
        (cached, errors)
    }

    async fn load_from_disk(&self, key: &str, generation: u64) -> Option<Arc<CachedObject>> {
        let object = Arc::new(self.disk.as_ref()?.load(key).await?);
        metrics::counter!("streamcdn_edge_disk_hits_total").increment(1);
        if self.generation.load(Ordering::SeqCst) != generation {
            return None;
        }
        self.memory.insert(key.to_owned(), object.clone()).await;
        Some(object)
    }
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

fn version_label(version: axum::http::Version) -> &'static str {
    match version {
        axum::http::Version::HTTP_09 => "0.9",
        axum::http::Version::HTTP_10 => "1.0",
        axum::http::Version::HTTP_11 => "1.1",
        axum::http::Version::HTTP_2 => "2",
        axum::http::Version::HTTP_3 => "3",
        _ => "other",
    }
}

async fn respond(edge: &Arc<Edge>, request: Request) -> Response {
    match *request.method() {
        Method::GET | Method::HEAD => {}
        Method::OPTIONS => return preflight(),
        _ => {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            response.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, OPTIONS"),
            );
            return response;
        }
    }
    if let Some(stream) = streamcdn_urls::feed_stream(request.uri().path()) {
        let opus = request.uri().query() == Some("audio=opus");
        return feed_response(edge, &stream, opus).await;
    }
    let key = match CacheKey::parse(request.uri().path(), request.uri().query()) {
        Ok(key) => key,
        Err(error) => {
            metrics::counter!("streamcdn_edge_requests_total", "result" => "rejected").increment(1);
            let status = match error {
                // Plain, but nothing our URL scheme names: no upstream has it either.
                UrlError::Unknown => StatusCode::NOT_FOUND,
                UrlError::Invalid | UrlError::BadDirective(_) | UrlError::BadClip(_) => {
                    StatusCode::BAD_REQUEST
                }
            };
            return plain(status, &error.to_string());
        }
    };
    // Whether lower tiers (`upstream_http2`) and viewers speak HTTP/2 to us.
    metrics::counter!("streamcdn_edge_http_requests_total", "version" => version_label(request.version()))
        .increment(1);
    let kind = key.target().kind();
    let (cached, result) = if key.clip().is_some() {
        (None, edge.clip(&key).await)
    } else {
        edge.lookup(&key).await
    };
    let (object, outcome) = match result {
        Ok(found) => found,
        Err(error) => match cached.filter(|o| o.servable_stale(edge.stale_if_error)) {
            Some(stale) => {
                tracing::warn!(path = key.as_str(), %error, "upstream failed; serving a stale playlist");
                (stale, Outcome::Stale)
            }
            None => {
                metrics::counter!("streamcdn_edge_requests_total", "result" => "error", "kind" => kind.label())
                        .increment(1);
                return error_response(&error, key.as_str());
            }
        },
    };
    metrics::counter!("streamcdn_edge_requests_total", "result" => outcome.label(), "kind" => kind.label())
        .increment(1);
    object_response(&object, request.headers(), outcome)
}

/// A lower tier's (or a tool's) read of a stream's feed, relayed from ours; with
/// `opus`, its audio in Opus (as WebRTC viewers get it).
async fn feed_response(
    edge: &Arc<Edge>,
    stream: &streamcdn_urls::StreamName,
    opus: bool,
) -> Response {
    let path = streamcdn_urls::feed_path(stream);
    let subscribed = match opus {
        true => edge.feed_with_opus(stream).await,
        false => edge.feed(stream).await,
    };
    match subscribed {
        Ok(subscriber) => {
            metrics::counter!("streamcdn_edge_requests_total", "result" => "feed", "kind" => "feed")
                .increment(1);
            (
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(streamcdn_media::feed::CONTENT_TYPE),
                    ),
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                ],
                axum::body::Body::from_stream(subscriber.into_body()),
            )
                .into_response()
        }
        Err(error) => {
            metrics::counter!("streamcdn_edge_requests_total", "result" => "error", "kind" => "feed")
                .increment(1);
            error_response(&error, &path)
        }
    }
}

/// The CORS preflight; the allow-origin header is added to every response.
fn preflight() -> Response {
    response::preflight("GET, HEAD, OPTIONS", "Range")
}

#[cfg(test)]
mod tests {
    //! The request pipeline over an in-memory source: no sockets, and tokio's paused
    //! clock, which only moves when every task waits, and which `CachedObject` ages by.

    use std::sync::Mutex;

    use axum::body::Body;
    use axum::http::{HeaderMap, HeaderValue};
    use bytes::Bytes;
    use futures::future::{BoxFuture, FutureExt};

    use super::*;

    const STALE_IF_ERROR: Duration = Duration::from_secs(10);

    #[derive(Clone, Copy)]
    enum Mode {
        /// `200`, fresh for `ttl`, answered after `delay`.
        Serve {
            ttl: Duration,
            delay: Duration,
        },
        Missing,
        Fail,
        /// Answers with this status, not to be cached (`400`, `503`).
        Refuse(StatusCode),
    }

    /// Answers `<n>:<path and query>`, `n` counting its fetches, and records what it
    /// was asked.
    struct Fake {
        mode: Mutex<Mode>,
        asked: Mutex<Vec<String>>,
        unchanged: Mutex<bool>,
    }

    impl Fake {
        fn new(mode: Mode) -> Arc<Self> {
            Arc::new(Self {
                mode: Mutex::new(mode),
                asked: Mutex::new(Vec::new()),
                unchanged: Mutex::new(false),
            })
        }

        fn set(&self, mode: Mode) {
            *self.mode.lock().unwrap() = mode;
        }

        fn asked(&self) -> Vec<String> {
            self.asked.lock().unwrap().clone()
        }
    }

    impl Source for Fake {
        fn fetch<'a>(
            &'a self,
            key: &'a CacheKey,
        ) -> BoxFuture<'a, Result<CachedObject, FetchError>> {
            async move {
                let n = {
                    let mut asked = self.asked.lock().unwrap();
                    asked.push(key.path_and_query().to_owned());
                    asked.len()
                };
                let mode = *self.mode.lock().unwrap();
                let kind = key.target().kind();
                match mode {
                    Mode::Serve { ttl, delay } => {
                        tokio::time::sleep(delay).await;
                        let path = key.target().path();
                        let body = match path.as_str() {
                            "/p/ll/r/playlist.m3u8" => LL_MEDIA_PLAYLIST.to_owned(),
                            p if p.ends_with("/playlist.m3u8") => MEDIA_PLAYLIST.to_owned(),
                            p if p.starts_with("/p/ll/") && p.ends_with(".m3u8") => {
                                format!("{LL_HEAD}{n}:{}", key.path_and_query())
                            }
                            _ => format!("{n}:{}", key.path_and_query()),
                        };
                        let max_age = format!("public, max-age={}", ttl.as_secs());
                        Ok(CachedObject {
                            status: StatusCode::OK,
                            content_type: None,
                            cache_control: HeaderValue::try_from(max_age).ok(),
                            body: Bytes::from(body),
                            kind,
                            born: tokio::time::Instant::now(),
                            ttl,
                            validators: Validators {
                                etag: Some(HeaderValue::from_static("\"v\"")),
                                last_modified: None,
                            },
                            invalidated: Default::default(),
                        })
                    }
                    Mode::Missing => Ok(CachedObject::not_found(kind)),
                    Mode::Fail => Err(FetchError::Unreachable("connection refused".into())),
                    Mode::Refuse(status) => Err(FetchError::NotCacheable {
                        status,
                        content_type: None,
                        body: Bytes::from(format!("{n}:refused\n")),
                    }),
                }
            }
            .boxed()
        }

        /// `304` once told the object is unchanged, else the whole object.
        fn revalidate<'a>(
            &'a self,
            key: &'a CacheKey,
            validators: &'a Validators,
        ) -> BoxFuture<'a, Result<Revalidated, FetchError>> {
            if !*self.unchanged.lock().unwrap() {
                return self
                    .fetch(key)
                    .map(|r| r.map(|o| Revalidated::Modified(Box::new(o))))
                    .boxed();
            }
            let asked = format!("if-none-match {:?} {}", validators.etag, key.as_str());
            self.asked.lock().unwrap().push(asked);
            async {
                Ok(Revalidated::NotModified {
                    ttl: Duration::from_secs(60),
                    age: Duration::ZERO,
                })
            }
            .boxed()
        }
    }

    const MEDIA_PLAYLIST: &str =
        "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2.0,\n000001.m4s\n#EXTINF:2.0,\n000002.m4s\n#EXT-X-ENDLIST\n";

    fn purge_one(path: &str) -> Vec<Matcher> {
        vec![Matcher::url(path).unwrap()]
    }

    #[tokio::test(start_paused = true)]
    async fn a_purged_object_is_fetched_again() {
        let fake = Fake::new(serve(60));
        let edge = edge(&fake);
        get(&edge, "/p/s/r/000001.m4s").await;
        get(&edge, "/p/s/r/000002.m4s").await;
        assert_eq!(
            get(&edge, "/p/s/r/000001.m4s").await.header("x-cache"),
            "HIT"
        );
        assert_eq!(
            edge.purge(&purge_one("http://any.host/p/s/r/000001.m4s"))
                .await,
            1
        );
        assert_eq!(
            edge.purge(&purge_one("/p/s/r/000001.m4s")).await,
            0,
            "idempotent"
        );
        let again = get(&edge, "/p/s/r/000001.m4s").await;
        assert_eq!(
            (again.header("x-cache"), again.body.as_str()),
            ("MISS", "3:/p/s/r/000001.m4s")
        );
        assert_eq!(
            get(&edge, "/p/s/r/000002.m4s").await.header("x-cache"),
            "HIT"
        );
        // A pattern over every segment of the recording.
        let every = Matcher::pattern(streamcdn_cdni::PatternMatch::new("*/p/s/r/*.m4s")).unwrap();
        assert_eq!(edge.purge(&[every]).await, 2);
        assert_eq!(
            get(&edge, "/p/s/r/000002.m4s").await.header("x-cache"),
            "MISS"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_fill_in_flight_during_a_purge_does_not_store() {
        let fake = Fake::new(Mode::Serve {
            ttl: Duration::from_secs(60),
            delay: Duration::from_secs(1),
        });
        let edge = edge(&fake);
        let request = tokio::spawn({
            let edge = edge.clone();
            async move { get(&edge, "/p/s/r/000001.m4s").await }
        });
        while fake.asked().is_empty() {
            tokio::task::yield_now().await;
        }
        edge.purge(&purge_one("/p/s/r/000001.m4s")).await;
        // A request after the purge does not join the fill begun before it.
        let after = get(&edge, "/p/s/r/000001.m4s").await;
        assert_eq!(after.body, "2:/p/s/r/000001.m4s");
        assert_eq!(request.await.unwrap().body, "1:/p/s/r/000001.m4s");
        let next = get(&edge, "/p/s/r/000001.m4s").await;
        assert_eq!(
            (next.header("x-cache"), next.body.as_str()),
            ("HIT", "2:/p/s/r/000001.m4s")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_invalidated_object_is_revalidated_and_keeps_its_body() {
        let fake = Fake::new(serve(60));
        *fake.unchanged.lock().unwrap() = true;
        let edge = edge(&fake);
        let first = get(&edge, "/p/s/live.m3u8").await;
        assert_eq!(first.header("etag"), "\"v\"");
        let conditional = get_with(&edge, "/p/s/live.m3u8", &[("if-none-match", "\"v\"")]).await;
        assert_eq!(conditional.status, StatusCode::NOT_MODIFIED);
        assert_eq!(edge.invalidate(&purge_one("/p/s/live.m3u8")).await, 1);
        let revalidated = get(&edge, "/p/s/live.m3u8").await;
        assert_eq!(
            (revalidated.header("x-cache"), revalidated.body.as_str()),
            ("MISS", "1:/p/s/live.m3u8")
        );
        assert_eq!(get(&edge, "/p/s/live.m3u8").await.header("x-cache"), "HIT");
        assert_eq!(
            fake.asked(),
            [
                "/p/s/live.m3u8",
                "if-none-match Some(\"\\\"v\\\"\") /p/s/live.m3u8"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn preposition_brings_in_a_playlist_and_its_segments() {
        let fake = Fake::new(serve(60));
        let edge = edge(&fake);
        let (cached, errors) = edge
            .preposition(vec![
                "http://h/p/s/r/playlist.m3u8".into(),
                "/p/s/x.exe".into(),
            ])
            .await;
        assert_eq!((cached, errors.len()), (4, 1), "{errors:?}");
        for path in ["/p/s/r/init.mp4", "/p/s/r/000001.m4s", "/p/s/r/000002.m4s"] {
            assert_eq!(get(&edge, path).await.header("x-cache"), "HIT", "{path}");
        }
        assert_eq!(fake.asked().len(), 4);
    }

    fn serve(ttl_secs: u64) -> Mode {
        Mode::Serve {
            ttl: Duration::from_secs(ttl_secs),
            delay: Duration::ZERO,
        }
    }

    fn edge(fake: &Arc<Fake>) -> Arc<Edge> {
        let settings = CacheSettings {
            cache_memory_bytes: 1 << 20,
            disk: None,
            stale_if_error: STALE_IF_ERROR,
            clip: ClipSettings::default(),
        };
        Edge::with_source(settings, fake.clone()).unwrap()
    }

    struct Answer {
        status: StatusCode,
        headers: HeaderMap,
        body: String,
    }

    impl Answer {
        fn header(&self, name: &str) -> &str {
            self.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
        }
    }

    async fn get_with(edge: &Arc<Edge>, uri: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = Request::builder().uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Body::empty()).unwrap();
        let response = handle(State(edge.clone()), request).await;
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn get(edge: &Arc<Edge>, uri: &str) -> Answer {
        get_with(edge, uri, &[]).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_miss_fetches_and_a_hit_does_not() {
        let fake = Fake::new(serve(60));
        let edge = edge(&fake);
        let miss = get(&edge, "/p/s/r/000001.m4s").await;
        assert_eq!(miss.status, StatusCode::OK);
        assert_eq!(miss.header("x-cache"), "MISS");
        assert_eq!(miss.body, "1:/p/s/r/000001.m4s");
        assert_eq!(miss.header("access-control-allow-origin"), "*");
        assert_eq!(miss.header("timing-allow-origin"), "*");
        tokio::time::advance(Duration::from_secs(5)).await;
        let hit = get(&edge, "/p/s/r/000001.m4s").await;
        assert_eq!(hit.header("x-cache"), "HIT");
        assert_eq!(hit.header("age"), "5");
        assert_eq!(hit.body, miss.body);
        assert_eq!(fake.asked(), ["/p/s/r/000001.m4s"]);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_requests_share_one_fetch() {
        let fake = Fake::new(Mode::Serve {
            ttl: Duration::from_secs(60),
            delay: Duration::from_secs(1),
        });
        let edge = edge(&fake);
        let requests: Vec<_> = (0..20)
            .map(|_| {
                let edge = edge.clone();
                tokio::spawn(async move { get(&edge, "/p/s/live.m3u8").await })
            })
            .collect();
        // The fetch's delay only passes once every request waits: all have joined.
        let mut x_cache = Vec::new();
        for request in requests {
            let answer = request.await.unwrap();
            assert_eq!(answer.body, "1:/p/s/live.m3u8");
            x_cache.push(answer.header("x-cache").to_owned());
        }
        assert_eq!(fake.asked().len(), 1);
        assert_eq!(x_cache.iter().filter(|x| *x == "MISS").count(), 1);
        assert_eq!(x_cache.iter().filter(|x| *x == "HIT").count(), 19);
    }

    #[tokio::test(start_paused = true)]
    async fn a_playlist_is_served_stale_within_the_bound_only() {
        let fake = Fake::new(serve(2));
        let edge = edge(&fake);
        assert_eq!(get(&edge, "/p/s/live.m3u8").await.status, StatusCode::OK);
        fake.set(Mode::Fail);

        tokio::time::advance(Duration::from_secs(3)).await;
        let stale = get(&edge, "/p/s/live.m3u8").await;
        assert_eq!(stale.status, StatusCode::OK);
        assert_eq!(stale.header("x-cache"), "STALE");
        assert_eq!(stale.body, "1:/p/s/live.m3u8");
        assert_eq!(fake.asked().len(), 2, "a stale playlist is refreshed first");

        // Freshness (2 s) plus the bound (10 s) have passed.
        tokio::time::advance(Duration::from_secs(10)).await;
        let failed = get(&edge, "/p/s/live.m3u8").await;
        assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
        assert_eq!(failed.header("access-control-allow-origin"), "*");

        // Segments are never served stale.
        fake.set(serve(2));
        get(&edge, "/p/s/r/000001.m4s").await;
        fake.set(Mode::Fail);
        tokio::time::advance(Duration::from_secs(3)).await;
        let segment = get(&edge, "/p/s/r/000001.m4s").await;
        assert_eq!(segment.status, StatusCode::BAD_GATEWAY);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refreshed_playlist_replaces_the_stale_one() {
        let fake = Fake::new(serve(2));
        let edge = edge(&fake);
        get(&edge, "/p/s/live.m3u8").await;
        tokio::time::advance(Duration::from_secs(3)).await;
        let refreshed = get(&edge, "/p/s/live.m3u8").await;
        assert_eq!(refreshed.header("x-cache"), "MISS");
        assert_eq!(refreshed.body, "2:/p/s/live.m3u8");
        assert_eq!(get(&edge, "/p/s/live.m3u8").await.header("x-cache"), "HIT");
        assert_eq!(fake.asked().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_404_is_remembered_for_a_second() {
        let fake = Fake::new(Mode::Missing);
        let edge = edge(&fake);
        let first = get(&edge, "/p/nobody/index.m3u8").await;
        assert_eq!(first.status, StatusCode::NOT_FOUND);
        tokio::time::advance(Duration::from_millis(900)).await;
        let second = get(&edge, "/p/nobody/index.m3u8").await;
        assert_eq!(
            (second.status, second.header("x-cache")),
            (StatusCode::NOT_FOUND, "HIT")
        );
        assert_eq!(fake.asked().len(), 1);
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(
            get(&edge, "/p/nobody/index.m3u8").await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(fake.asked().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn ranges_are_served_from_the_cached_object() {
        let fake = Fake::new(serve(60));
        let edge = edge(&fake);
        // The body is "1:/p/s/r/000001.m4s", 19 bytes.
        let part = get_with(&edge, "/p/s/r/000001.m4s", &[("range", "bytes=2-5")]).await;
        assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(part.header("content-range"), "bytes 2-5/19");
        assert_eq!(part.body, "/p/s");
        let tail = get_with(&edge, "/p/s/r/000001.m4s", &[("range", "bytes=-4")]).await;
        assert_eq!(
            (tail.status, tail.body.as_str()),
            (StatusCode::PARTIAL_CONTENT, ".m4s")
        );
        let beyond = get_with(&edge, "/p/s/r/000001.m4s", &[("range", "bytes=19-")]).await;
        assert_eq!(beyond.status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(beyond.header("content-range"), "bytes */19");
        assert_eq!(beyond.body, "");
        assert_eq!(fake.asked().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn queries_are_normalized_into_the_key() {
        let fake = Fake::new(serve(60));
        let edge = edge(&fake);
        let a = get(&edge, "/p/s/live.m3u8?_HLS_msn=5&_HLS_part=1&player=x").await;
        let b = get(&edge, "/p/s/live.m3u8?t=123&_HLS_part=1&_HLS_msn=5").await;
        assert_eq!(a.body, b.body);
        assert_eq!(b.header("x-cache"), "HIT");
        get(&edge, "/p/s/live.m3u8?_HLS_msn=6").await;
        get(&edge, "/p/s/live.m3u8?token=abc").await;
        get(&edge, "/p/s/live.m3u8").await;
        // Directives mean nothing to a segment.
        get(&edge, "/p/s/r/000001.m4s?_HLS_msn=5").await;
        get(&edge, "/p/s/r/000001.m4s").await;
        assert_eq!(
            fake.asked(),
            [
                "/p/s/live.m3u8?_HLS_msn=5&_HLS_part=1",
                "/p/s/live.m3u8?_HLS_msn=6",
                "/p/s/live.m3u8",
                "/p/s/r/000001.m4s",
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn only_urls_of_the_scheme_reach_the_source() {
        let fake = Fake::new(serve(60));
        let edge = edge(&fake);
        let long = format!("/{}", "a".repeat(600));
        for invalid in [
            "/demo/../etc/passwd",
            "/demo//x",
            "/demo/%2e%2e/x",
            "/a/./b",
            long.as_str(),
        ] {
            let answer = get(&edge, invalid).await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{invalid}");
            assert_eq!(answer.body, "invalid path\n", "{invalid}");
            assert_eq!(answer.header("access-control-allow-origin"), "*");
        }
        for unknown in [
            "/p",
            "/p/s",
            "/p/s/other.m3u8",
            "/p/s/r/file.exe",
            "/p/s/r/.m4s",
            "/-p/s/index.m3u8",
            "/p/s/r/x/y",
            // The player page: rendered in front of the cache, never fetched.
            "/p/s/",
            "/p/s/player",
        ] {
            let answer = get(&edge, unknown).await;
            assert_eq!(answer.status, StatusCode::NOT_FOUND, "{unknown}");
            assert_eq!(answer.body, "no such object\n", "{unknown}");
        }
        // streamcdn-urls calls "/" invalid (its own test expects unknown): either way,
        // not forwarded.
        let root = get(&edge, "/").await.status;
        assert!(matches!(root.as_u16(), 400 | 404), "{root}");
        for bad in ["_HLS_msn=x", "_HLS_part=1", "_HLS_skip=no"] {
            let uri = format!("/p/s/live.m3u8?{bad}");
            assert_eq!(
                get(&edge, &uri).await.status,
                StatusCode::BAD_REQUEST,
                "{uri}"
            );
        }
        assert!(fake.asked().is_empty(), "{:?}", fake.asked());
        let plain = get(&edge, "/demo/cam/20261121T120000Z-1a2b/000001.m4s").await;
        assert_eq!(plain.status, StatusCode::OK);
        assert_eq!(fake.asked().len(), 1);
    }

    /// The head of the fake's live playlists of stream `ll`: LL-HLS, parts of 1 s.
    const LL_HEAD: &str = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-PART-INF:PART-TARGET=1.0\n#";

    const LL_MEDIA_PLAYLIST: &str = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-PART-INF:PART-TARGET=1.0\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=3.0\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:4.0,\n000001.m4s\n#EXT-X-PART:DURATION=1.0,URI=\"000002.0.m4s\",INDEPENDENT=YES\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"000002.1.m4s\"\n";

    /// A cache tier whose source is another tier, through HTTP answers and headers as
    /// they travel between tiers (`http_client::answer`), without sockets.
    struct Tier(Arc<Edge>);

    impl Source for Tier {
        fn fetch<'a>(
            &'a self,
            key: &'a CacheKey,
        ) -> BoxFuture<'a, Result<CachedObject, FetchError>> {
            async move {
                let request = Request::builder()
                    .uri(key.path_and_query())
                    .body(Body::empty())
                    .unwrap();
                let (parts, body) = self.0.clone().serve(request).await.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                match http_client::answer(parts.status, &parts.headers, body, key, false, None)? {
                    Revalidated::Modified(object) => Ok(*object),
                    Revalidated::NotModified { .. } => unreachable!("not asked conditionally"),
                }
            }
            .boxed()
        }
    }

    /// An edge below a mid-tier over `fake`.
    fn two_tiers(fake: &Arc<Fake>) -> (Arc<Edge>, Arc<Edge>) {
        let mid = edge(fake);
        let settings = CacheSettings {
            cache_memory_bytes: 1 << 20,
            disk: None,
            stale_if_error: STALE_IF_ERROR,
            clip: ClipSettings::default(),
        };
        let lower = Edge::with_source(settings, Arc::new(Tier(mid.clone()))).unwrap();
        (lower, mid)
    }

    /// Identical blocking reloads and part requests, in any query order, share one
    /// upstream request while it is held, through two tiers; the answers are then kept
    /// longer than a non-blocking playlist would be.
    #[tokio::test(start_paused = true)]
    async fn held_requests_share_one_upstream_request_through_the_tiers() {
        let fake = Fake::new(Mode::Serve {
            ttl: Duration::from_secs(24),
            delay: Duration::from_secs(5),
        });
        let (lower, _mid) = two_tiers(&fake);
        let blocking = [
            "/p/ll/live.m3u8?_HLS_msn=7&_HLS_part=2",
            "/p/ll/live.m3u8?_HLS_part=2&_HLS_msn=7&player=hls.js",
        ];
        let part = "/p/ll/r/000007.2.m4s";
        let spawn = |uri: String| {
            let lower = lower.clone();
            tokio::spawn(async move { get(&lower, &uri).await })
        };
        let mut requests: Vec<_> = (0..100)
            .map(|i| match i % 3 {
                0 => spawn(part.to_owned()),
                i => spawn(blocking[i - 1].to_owned()),
            })
            .collect();
        while fake.asked().len() < 2 {
            tokio::task::yield_now().await;
        }
        // Four seconds into the hold: newcomers join the held requests.
        tokio::time::advance(Duration::from_secs(4)).await;
        requests.push(spawn(part.to_owned()));
        requests.push(spawn(blocking[1].to_owned()));
        for request in requests {
            let answer = request.await.unwrap();
            assert_eq!(answer.status, StatusCode::OK);
            assert!(
                answer
                    .body
                    .ends_with(":/p/ll/live.m3u8?_HLS_msn=7&_HLS_part=2")
                    || answer.body.ends_with(":/p/ll/r/000007.2.m4s"),
                "{}",
                answer.body
            );
        }
        let mut asked = fake.asked();
        asked.sort();
        assert_eq!(
            asked,
            [
                "/p/ll/live.m3u8?_HLS_msn=7&_HLS_part=2",
                "/p/ll/r/000007.2.m4s"
            ]
        );
        // A blocking answer outlives the 10 s bound of a non-blocking playlist.
        tokio::time::advance(Duration::from_secs(15)).await;
        let later = get(&lower, blocking[0]).await;
        assert_eq!(later.header("x-cache"), "HIT");
        assert_eq!(later.header("age"), "15");
        assert_eq!(fake.asked().len(), 2);
    }

    /// `400` (too far ahead), `503` (not in time) and a part's `404` are the answer of
    /// a moment: the same request a moment later reaches the origin again. A `503`
    /// stays a `503` for the player.
    #[tokio::test(start_paused = true)]
    async fn errors_to_held_requests_are_not_kept() {
        let fake = Fake::new(Mode::Refuse(StatusCode::BAD_REQUEST));
        let (lower, _mid) = two_tiers(&fake);
        let ahead = "/p/ll/live.m3u8?_HLS_msn=99";
        assert_eq!(get(&lower, ahead).await.status, StatusCode::BAD_REQUEST);
        fake.set(Mode::Refuse(StatusCode::SERVICE_UNAVAILABLE));
        let late = get(&lower, ahead).await;
        assert_eq!(late.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(late.header("cache-control"), "no-store");
        fake.set(Mode::Missing);
        let part = "/p/ll/r/000099.0.m4s";
        assert_eq!(get(&lower, part).await.status, StatusCode::NOT_FOUND);
        // The next part arrives: nothing remembered refuses it.
        fake.set(serve(60));
        assert_eq!(get(&lower, ahead).await.status, StatusCode::OK);
        let arrived = get(&lower, part).await;
        assert_eq!(
            (arrived.status, arrived.header("x-cache")),
            (StatusCode::OK, "MISS")
        );
        // One upstream request each time: a 503 after a hold is not tried elsewhere.
        assert_eq!(fake.asked().len(), 5, "{:?}", fake.asked());
    }

    /// The non-blocking playlist of an LL-HLS stream is fresh for half a part target at
    /// each tier, whatever the whole-second max-age says, and a tier's `Age` counts
    /// the time spent above it.
    #[tokio::test(start_paused = true)]
    async fn a_live_ll_playlist_stays_fresh_for_half_a_part_per_tier() {
        let fake = Fake::new(serve(1));
        let (lower, mid) = two_tiers(&fake);
        let live = "/p/ll/live.m3u8";
        assert!(get(&lower, live).await.body.ends_with("1:/p/ll/live.m3u8"));
        tokio::time::advance(Duration::from_millis(400)).await;
        let hit = get(&lower, live).await;
        assert_eq!((hit.header("x-cache"), hit.header("age")), ("HIT", "0"));
        // Half a part target (0.5 s) has passed at both tiers: both ask again.
        tokio::time::advance(Duration::from_millis(200)).await;
        let refreshed = get(&lower, live).await;
        assert_eq!(refreshed.header("x-cache"), "MISS");
        assert!(
            refreshed.body.ends_with("2:/p/ll/live.m3u8"),
            "{}",
            refreshed.body
        );
        assert_eq!(fake.asked().len(), 2);

        // A plain playlist fresh for 2 s: a copy the mid has held for 1.5 s reaches the
        // lower tier with `Age: 1`, so at most the lost half second is added, never a
        // whole lifetime (the lower tier's copy would otherwise live to 3.5 s).
        let plain = "/p/s/live.m3u8";
        fake.set(serve(2));
        get(&mid, plain).await;
        tokio::time::advance(Duration::from_millis(1500)).await;
        let from_mid = get(&lower, plain).await;
        assert_eq!(from_mid.header("age"), "1");
        tokio::time::advance(Duration::from_millis(900)).await;
        assert_eq!(get(&lower, plain).await.header("age"), "1");
        tokio::time::advance(Duration::from_millis(200)).await;
        let expired = get(&lower, plain).await;
        assert_eq!(
            expired.header("x-cache"),
            "MISS",
            "fresh 2.6 s after its birth"
        );
        assert_eq!(expired.header("age"), "0");
    }

    /// A preposition of an LL-HLS playlist brings in its init segment and segments,
    /// never its parts or the hinted part (which the origin would hold).
    #[tokio::test(start_paused = true)]
    async fn preposition_leaves_parts_alone() {
        let fake = Fake::new(serve(60));
        let edge = edge(&fake);
        let (cached, errors) = edge.preposition(vec!["/p/ll/r/playlist.m3u8".into()]).await;
        assert_eq!((cached, errors.len()), (3, 0), "{errors:?}");
        assert_eq!(
            fake.asked(),
            [
                "/p/ll/r/playlist.m3u8",
                "/p/ll/r/init.mp4",
                "/p/ll/r/000001.m4s"
            ]
        );
    }
}
