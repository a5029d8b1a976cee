//! On-demand storage as a source: archived recordings under the same URLs the ingest
//! serves them at, by the layout in [`streamcdn_urls::stored`]. The top tier asks it for
//! what no server has; a recording is served only once its completion marker exists
//! (a half-uploaded recording is never served).

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use streamcdn_archive::Archive;
use streamcdn_urls::stored::{self, Stored};
use streamcdn_urls::{CacheKey, MediaKind, ObjectKind, RecordingName, StreamName, Target};
use tokio::time::Instant;

use crate::object::{CachedObject, Validators};
use crate::source::{FetchError, Source};

/// Stream-level objects change when a newer recording is archived.
pub const STREAM_LEVEL_TTL: Duration = Duration::from_secs(2);
/// A recording's objects never change once it is complete.
const RECORDING_TTL: Duration = Duration::from_secs(24 * 3600);

pub struct ArchivedSource {
    archive: Archive,
    complete: moka::future::Cache<String, bool>,
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("json") => "application/json",
        _ => MediaKind::content_type(name),
    }
}

fn store_error(e: streamcdn_archive::ArchiveError) -> FetchError {
    FetchError::Unreachable(format!("on-demand storage: {e}"))
}

/// A `200` the top tier makes itself (from storage, or a merged listing).
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
        validators: Validators::default(),
        invalidated: Default::default(),
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

    async fn is_complete(&self, recording: &RecordingName) -> Result<bool, FetchError> {
        let prefix = stored::recording_prefix(recording);
        if self.complete.get(&prefix).await.is_some() {
            return Ok(true);
        }
        let complete = self
            .archive
            .is_complete(&prefix)
            .await
            .map_err(store_error)?;
        if complete {
            self.complete.insert(prefix, true).await;
        }
        Ok(complete)
    }

    /// The stream's archived recordings (the archiver's listing), oldest first.
    pub async fn listing(&self, stream: &StreamName) -> Result<Vec<serde_json::Value>, FetchError> {
        match self
            .archive
            .get(&stored::listing_key(stream))
            .await
            .map_err(store_error)?
        {
            Some(bytes) => Ok(serde_json::from_slice(&bytes).unwrap_or_default()),
            None => Ok(Vec::new()),
        }
    }

    /// The stored object serving `target`; `None` if it is not (completely) archived.
    /// A stream-level URL is served from the stream's `current` archived recording if
    /// the caller knows it (the registry's record), else from its newest archived one.
    pub async fn find(
        &self,
        target: &Target,
        current: Option<&str>,
    ) -> Result<Option<CachedObject>, FetchError> {
        let kind = target.kind();
        let Some(stored) = Stored::of(target) else {
            return Ok(None);
        };
        match stored {
            Stored::InRecording { recording, name } => {
                self.recording_file(&recording, &name, kind).await
            }
            Stored::InCurrentRecording { stream, name } => {
                let current = match current {
                    Some(id) => Some(id.to_owned()),
                    None => self.newest(&stream).await?,
                };
                let Some(recording) = current.and_then(|id| stream.recording(&id)) else {
                    return Ok(None);
                };
                let found = self.recording_file(&recording, name, kind).await?;
                Ok(found.map(|o| CachedObject {
                    ttl: STREAM_LEVEL_TTL,
                    cache_control: Some(HeaderValue::from_static("public, max-age=2")),
                    ..o
                }))
            }
            Stored::Listing(stream) => {
                let entries = self.listing(&stream).await?;
                if entries.is_empty() {
                    return Ok(None);
                }
                let body = serde_json::to_vec(&entries)
                    .map_err(|e| FetchError::Unreachable(e.to_string()))?;
                Ok(Some(object(
                    stored::LISTING,
                    Bytes::from(body),
                    kind,
                    STREAM_LEVEL_TTL,
                )))
            }
        }
    }

    async fn newest(&self, stream: &StreamName) -> Result<Option<String>, FetchError> {
        let listing = self.listing(stream).await?;
        Ok(listing
            .iter()
            .filter_map(|e| e["recording_id"].as_str())
            .max()
            .map(str::to_owned))
    }

    async fn recording_file(
        &self,
        recording: &RecordingName,
        name: &str,
        kind: ObjectKind,
    ) -> Result<Option<CachedObject>, FetchError> {
        if !self.is_complete(recording).await? {
            return Ok(None);
        }
        let body = self
            .archive
            .get(&stored::key(recording, name))
            .await
            .map_err(store_error)?;
        Ok(body.map(|b| object(name, b, kind, RECORDING_TTL)))
    }
}

impl Source for ArchivedSource {
    fn fetch<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Result<CachedObject, FetchError>> {
        async move {
            let target = key.target();
            Ok(self
                .find(target, None)
                .await?
                .unwrap_or_else(|| CachedObject::not_found(target.kind())))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use streamcdn_archive::{StoreSettings, COMPLETE_MARKER};

    use super::*;

    fn put(dir: &std::path::Path, key: &str, body: &str) {
        let path = dir.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }

    async fn get(source: &ArchivedSource, path: &str) -> (StatusCode, String) {
        let key = CacheKey::parse(path, None).unwrap();
        let object = source.fetch(&key).await.unwrap();
        (
            object.status,
            String::from_utf8_lossy(&object.body).into_owned(),
        )
    }

    #[tokio::test]
    async fn urls_map_to_the_stored_layout() {
        let dir = std::env::temp_dir().join(format!("streamcdn-archived-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for rec in ["r1", "r2"] {
            put(
                &dir,
                &format!("p/s/{rec}/stream-index.m3u8"),
                &format!("{rec} index"),
            );
            put(
                &dir,
                &format!("p/s/{rec}/stream-live.m3u8"),
                &format!("{rec} live"),
            );
            put(
                &dir,
                &format!("p/s/{rec}/000001.m4s"),
                &format!("{rec} segment"),
            );
            put(&dir, &format!("p/s/{rec}/{COMPLETE_MARKER}"), "{}");
        }
        // Uploaded, not yet marked complete.
        put(&dir, "p/s/r3/000001.m4s", "r3 segment");
        put(
            &dir,
            "p/s/recordings.json",
            r#"[{"recording_id":"r1"},{"recording_id":"r2"}]"#,
        );
        let archive = Archive::open(&StoreSettings::Local { dir: dir.clone() }).unwrap();
        let source = ArchivedSource::new(archive);

        assert_eq!(
            get(&source, "/p/s/index.m3u8").await,
            (StatusCode::OK, "r2 index".into())
        );
        assert_eq!(
            get(&source, "/p/s/live.m3u8").await,
            (StatusCode::OK, "r2 live".into())
        );
        assert_eq!(
            get(&source, "/p/s/r1/000001.m4s").await,
            (StatusCode::OK, "r1 segment".into())
        );
        assert_eq!(
            get(&source, "/p/s/r3/000001.m4s").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&source, "/p/s/r1/000002.m4s").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&source, "/q/s/index.m3u8").await.0,
            StatusCode::NOT_FOUND
        );
        let (status, listing) = get(&source, "/p/s/recordings").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            listing.contains("\"r1\"") && listing.contains("\"r2\""),
            "{listing}"
        );

        // The registry's record names the current recording.
        let target = Target::parse("/p/s/index.m3u8").unwrap();
        let found = source.find(&target, Some("r1")).await.unwrap().unwrap();
        assert_eq!(&found.body[..], b"r1 index");
        assert_eq!(found.ttl, STREAM_LEVEL_TTL);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
