//! The top tier's second source: recordings in on-demand storage, under the same URLs
//! the ingest serves them at.
//!
//! `/<p>/<s>/<rec>/<file>` is the object `<p>/<s>/<rec>/<file>`, served only once the
//! recording's completion marker exists (a half-uploaded recording is never served).
//! The stream's own URLs map to what the archiver wrote for them: `index.m3u8` to
//! `<rec>/stream-index.m3u8`, `live.m3u8` to `<rec>/stream-live.m3u8` (the whole
//! recording, ended), and `recordings` to `<p>/<s>/recordings.json`.

use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode};
use bytes::Bytes;
use streamcdn_archive::Archive;

use crate::object::{CachedObject, ObjectKind};
use crate::upstream::FetchError;

/// Stream-level objects change when a newer recording is archived.
const STREAM_LEVEL_TTL: Duration = Duration::from_secs(2);
/// A recording's objects never change once it is complete.
const RECORDING_TTL: Duration = Duration::from_secs(24 * 3600);

pub struct ArchivedSource {
    archive: Archive,
    complete: moka::future::Cache<String, bool>,
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("m4s") => "video/iso.segment",
        Some("mp4") => "video/mp4",
        Some("ts") => "video/mp2t",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn store_error(e: streamcdn_archive::ArchiveError) -> FetchError {
    FetchError::Unreachable(format!("on-demand storage: {e}"))
}

pub fn object(name: &str, body: Bytes, kind: ObjectKind, ttl: Duration) -> CachedObject {
    let cache_control = if ttl >= RECORDING_TTL {
        "public, max-age=31536000, immutable".to_owned()
    } else {
        format!("public, max-age={}", ttl.as_secs().max(1))
    };
    CachedObject {
        status: StatusCode::OK,
        content_type: Some(HeaderValue::from_static(content_type(name))),
        cache_control: HeaderValue::try_from(cache_control).ok(),
        body,
        kind,
        born: Instant::now(),
        ttl,
    }
}

impl ArchivedSource {
    pub fn new(archive: Archive) -> Self {
        Self {
            archive,
            // Only positive answers are kept long: an incomplete recording may
            // complete any moment.
            complete: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
        }
    }

    async fn is_complete(&self, prefix: &str) -> Result<bool, FetchError> {
        if self.complete.get(prefix).await.is_some() {
            return Ok(true);
        }
        let complete = self
            .archive
            .is_complete(prefix)
            .await
            .map_err(store_error)?;
        if complete {
            self.complete.insert(prefix.to_owned(), true).await;
        }
        Ok(complete)
    }

    /// The stream's archived recordings (the archiver's listing), oldest first.
    pub async fn listing(
        &self,
        provider: &str,
        stream: &str,
    ) -> Result<Vec<serde_json::Value>, FetchError> {
        let key = format!("{provider}/{stream}/recordings.json");
        match self.archive.get(&key).await.map_err(store_error)? {
            Some(bytes) => Ok(serde_json::from_slice(&bytes).unwrap_or_default()),
            None => Ok(Vec::new()),
        }
    }

    /// A file of an archived recording; `None` if the recording is not (completely)
    /// archived or has no such file.
    pub async fn recording_file(
        &self,
        provider: &str,
        stream: &str,
        recording: &str,
        file: &str,
        kind: ObjectKind,
    ) -> Result<Option<CachedObject>, FetchError> {
        let prefix = format!("{provider}/{stream}/{recording}");
        if !self.is_complete(&prefix).await? {
            return Ok(None);
        }
        let body = self
            .archive
            .get(&format!("{prefix}/{file}"))
            .await
            .map_err(store_error)?;
        Ok(body.map(|b| object(file, b, kind, RECORDING_TTL)))
    }

    /// A stream-level URL (`index.m3u8`, `live.m3u8`) served from the stream's
    /// archived `recording`, or its newest archived one.
    pub async fn stream_file(
        &self,
        provider: &str,
        stream: &str,
        recording: Option<&str>,
        name: &str,
        kind: ObjectKind,
    ) -> Result<Option<CachedObject>, FetchError> {
        let stored_name = match name {
            "index.m3u8" => "stream-index.m3u8",
            "live.m3u8" => "stream-live.m3u8",
            _ => return Ok(None),
        };
        let recording = match recording {
            Some(r) => r.to_owned(),
            None => {
                let listing = self.listing(provider, stream).await?;
                let newest = listing
                    .iter()
                    .filter_map(|e| e["recording_id"].as_str())
                    .max()
                    .map(str::to_owned);
                let Some(newest) = newest else {
                    return Ok(None);
                };
                newest
            }
        };
        let found = self
            .recording_file(provider, stream, &recording, stored_name, kind)
            .await?;
        Ok(found.map(|o| CachedObject {
            ttl: STREAM_LEVEL_TTL,
            cache_control: Some(HeaderValue::from_static("public, max-age=2")),
            ..o
        }))
    }
}
