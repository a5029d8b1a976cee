//! Viewers per stream at this cache: the distinct clients (address and `User-Agent`)
//! that fetched one of a stream's playlists, segments or parts (its recordings' too)
//! with success within the last [`VIEWER_WINDOW_MS`]. HLS has no sessions, so this is
//! what an edge can count cheaply: players behind one address with one browser count
//! once. Requests from lower tiers (they carry [`TIER_HEADER`]) are not viewers.
//!
//! [`ViewerCounts`] counts without I/O over a given `now`; [`count_viewers`] is the
//! middleware in front of the cache and [`admin_router`] serves `GET /api/v1/viewers`.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::Response;
use serde::Serialize;
use streamcdn_urls::{StreamName, Target};

use crate::TIER_HEADER;

/// How long after its last request a client still counts as watching: a live player
/// reloads its playlist every target duration (a few seconds), so longer than that.
pub const VIEWER_WINDOW_MS: u64 = 15_000;
/// The most clients remembered across all streams; beyond it new ones are not counted
/// until old ones expire (memory stays bounded whatever requests arrive).
const MAX_CLIENTS: usize = 200_000;

/// One stream's viewers at this cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamViewers {
    pub provider: String,
    pub stream: String,
    pub viewers: u64,
}

/// When each client of each stream was last seen (milliseconds on the caller's clock).
#[derive(Debug, Default)]
pub struct ViewerCounts {
    streams: HashMap<StreamName, HashMap<u64, u64>>,
    clients: usize,
}

impl ViewerCounts {
    /// `client` (an opaque id) fetched something of `stream` at `now_ms`.
    pub fn seen(&mut self, stream: &StreamName, client: u64, now_ms: u64) {
        if let Some(clients) = self.streams.get_mut(stream) {
            if let Some(last) = clients.get_mut(&client) {
                *last = now_ms;
                return;
            }
        }
        if self.clients >= MAX_CLIENTS {
            self.forget_before(now_ms.saturating_sub(VIEWER_WINDOW_MS));
            if self.clients >= MAX_CLIENTS {
                return;
            }
        }
        self.streams
            .entry(stream.clone())
            .or_default()
            .insert(client, now_ms);
        self.clients += 1;
    }

    fn forget_before(&mut self, oldest_ms: u64) {
        for clients in self.streams.values_mut() {
            clients.retain(|_, last| *last >= oldest_ms);
        }
        self.streams.retain(|_, clients| !clients.is_empty());
        self.clients = self.streams.values().map(HashMap::len).sum();
    }

    /// Each stream's viewers at `now_ms` (streams without any left out), by name.
    pub fn counts(&mut self, now_ms: u64) -> Vec<StreamViewers> {
        self.forget_before(now_ms.saturating_sub(VIEWER_WINDOW_MS));
        let mut counts: Vec<StreamViewers> = self
            .streams
            .iter()
            .map(|(name, clients)| StreamViewers {
                provider: name.provider.clone(),
                stream: name.stream.clone(),
                viewers: clients.len() as u64,
            })
            .collect();
        counts.sort_by(|a, b| (&a.provider, &a.stream).cmp(&(&b.provider, &b.stream)));
        counts
    }
}

/// The counts of a serving cache, behind a lock held for a map update.
pub struct Viewers {
    counts: Mutex<ViewerCounts>,
    started: Instant,
    hasher: RandomState,
}

impl Viewers {
    pub fn new() -> Arc<Self> {
        Arc::new(Viewers {
            counts: Mutex::default(),
            started: Instant::now(),
            hasher: RandomState::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn counts(&self) -> Vec<StreamViewers> {
        let now = self.now_ms();
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .counts(now)
    }
}

/// The stream a viewer's request is for: media and playlists, not pages or listings.
fn watched(path: &str) -> Option<StreamName> {
    match Target::parse(path).ok()? {
        Target::PlayerPage(_)
        | Target::Recordings(_)
        | Target::Thumbnail(_)
        | Target::Recording(_, streamcdn_urls::RecordingObject::Poster) => None,
        target => Some(target.stream().clone()),
    }
}

/// Middleware in front of the cache (after signed-URL checks, so paths are plain).
pub async fn count_viewers(
    State(viewers): State<Arc<Viewers>>,
    request: Request,
    next: Next,
) -> Response {
    let viewer = matches!(*request.method(), Method::GET | Method::HEAD)
        && !request.headers().contains_key(TIER_HEADER);
    let watching = viewer
        .then(|| watched(request.uri().path()))
        .flatten()
        .and_then(|stream| {
            let address = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()?
                .0
                .ip();
            let agent = request.headers().get(header::USER_AGENT);
            let client = viewers
                .hasher
                .hash_one((address, agent.map(|a| a.as_bytes())));
            Some((stream, client))
        });
    let response = next.run(request).await;
    if let Some((stream, client)) = watching {
        if response.status().is_success() {
            let now = viewers.now_ms();
            viewers
                .counts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .seen(&stream, client, now);
        }
    }
    response
}

/// `GET /api/v1/viewers`: this cache's viewers per stream.
pub fn admin_router(viewers: Arc<Viewers>) -> axum::Router {
    axum::Router::new().route(
        "/api/v1/viewers",
        axum::routing::get(move || {
            let viewers = viewers.clone();
            async move { axum::Json(viewers.counts()) }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(stream: &str) -> StreamName {
        StreamName::new("demo", stream).unwrap()
    }

    #[test]
    fn distinct_clients_count_once_per_stream_within_the_window() {
        let mut counts = ViewerCounts::default();
        for at in [0, 2_000, 4_000] {
            counts.seen(&name("cam"), 1, at);
        }
        counts.seen(&name("cam"), 2, 5_000);
        counts.seen(&name("other"), 1, 5_000);
        assert_eq!(
            counts.counts(6_000),
            vec![
                StreamViewers {
                    provider: "demo".into(),
                    stream: "cam".into(),
                    viewers: 2
                },
                StreamViewers {
                    provider: "demo".into(),
                    stream: "other".into(),
                    viewers: 1
                },
            ]
        );
        // Client 1 last asked for cam at 4 s: gone once the window has passed.
        let later = counts.counts(4_000 + VIEWER_WINDOW_MS + 1);
        assert_eq!(later.iter().map(|s| s.viewers).sum::<u64>(), 2);
        assert!(counts.counts(6_000 + VIEWER_WINDOW_MS).is_empty());
    }

    #[test]
    fn memory_is_bounded_and_expired_clients_make_room() {
        let mut counts = ViewerCounts::default();
        for client in 0..MAX_CLIENTS as u64 + 10 {
            counts.seen(&name("cam"), client, 0);
        }
        assert_eq!(counts.counts(1)[0].viewers, MAX_CLIENTS as u64);
        counts.seen(&name("cam"), u64::MAX, VIEWER_WINDOW_MS + 1);
        assert_eq!(counts.counts(VIEWER_WINDOW_MS + 1)[0].viewers, 1);
    }

    #[test]
    fn only_media_and_playlists_are_watching() {
        assert_eq!(watched("/demo/cam/index.m3u8"), Some(name("cam")));
        assert_eq!(watched("/demo/cam/live.m3u8"), Some(name("cam")));
        assert_eq!(
            watched("/demo/cam/20260101T000000Z-ab12/000001.m4s"),
            Some(name("cam"))
        );
        assert_eq!(watched("/demo/cam/"), None);
        assert_eq!(watched("/demo/cam/recordings"), None);
        assert_eq!(watched("/_streamcdn/hls.min.js"), None);
    }
}
