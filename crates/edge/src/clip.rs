//! Clips: `<recording>/clip.mp4?start=&end=` (or `?from=&to=`) cut by each cache from
//! the recording's segments as it caches them, into one progressive MP4
//! (`media::progressive`, no re-encoding). The recording's media playlist says which
//! segments hold the span (by their durations, or their program date times for a
//! wall-clock span); they are fetched like any segment (coalesced, from memory, disk or
//! the upstream: the live origin, or on-demand storage once archived), so a clip costs
//! the upstream nothing it would not serve a player anyway, and it is the same for live,
//! ended and archived recordings.
//!
//! The clip starts at the keyframe at or before `start` and ends where the GOP that
//! covers `end` ends. It is kept (and marked immutable) once its span is recorded: the
//! recording has ended, or its playlist lists a segment reaching past `end`; until then
//! it is built for each request and marked `no-store`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use streamcdn_media::playlist::{parse_media, ParsedPlaylist};
use streamcdn_media::progressive::{self, Cut};
use streamcdn_urls::{clip::unix_ms, CacheKey, ClipSpan, ObjectKind, RecordingObject, Target};
use tokio::time::Instant;

use crate::object::{CachedObject, Validators};
use crate::source::FetchError;

/// What bounds a clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClipSettings {
    /// The longest span a clip may ask for.
    pub max_duration: Duration,
    /// The largest clip kept in the cache; larger ones are built for each request.
    pub max_cached_bytes: u64,
}

impl Default for ClipSettings {
    fn default() -> Self {
        Self {
            max_duration: Duration::from_secs(3600),
            max_cached_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Segments fetched at once for one clip.
const CONCURRENT_FETCHES: usize = 6;
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// What a cache keeps a clip for at most (`object::Policy` for segments says the same).
const CLIP_TTL: Duration = Duration::from_secs(24 * 3600);

type Fetched = Result<Arc<CachedObject>, Arc<FetchError>>;

/// A refusal of the request itself, not kept: the same key stays refused, but a fix
/// of the configuration or a recording that grows may change the answer.
fn refusal(status: StatusCode, why: String) -> CachedObject {
    CachedObject {
        status,
        content_type: Some(HeaderValue::from_static("text/plain; charset=utf-8")),
        cache_control: Some(HeaderValue::from_static("no-store")),
        body: Bytes::from(format!("{why}\n")),
        kind: ObjectKind::Segment,
        born: Instant::now(),
        ttl: Duration::ZERO,
        validators: Validators::default(),
        invalidated: Default::default(),
    }
}

fn bad(why: impl Into<String>) -> Result<CachedObject, FetchError> {
    Ok(refusal(StatusCode::BAD_REQUEST, why.into()))
}

/// The span in seconds from the recording's start: as asked, or from wall-clock times
/// by the program date time of the segment each falls in.
fn offsets(span: ClipSpan, playlist: &ParsedPlaylist) -> Option<(f64, f64)> {
    match span {
        ClipSpan::Offsets { start_ms, end_ms } => {
            Some((start_ms as f64 / 1000.0, end_ms as f64 / 1000.0))
        }
        ClipSpan::WallClock { from_ms, to_ms } => {
            // Each segment's start on the recording's timeline and on the wall clock.
            let mut at = 0.0;
            let mut marks = Vec::with_capacity(playlist.segments.len());
            for segment in &playlist.segments {
                if let Some(wall) = unix_ms(&segment.program_date_time) {
                    marks.push((at, wall as f64 / 1000.0, segment.duration_secs));
                }
                at += segment.duration_secs;
            }
            let first = marks.first()?;
            let offset = |t_ms: u64| {
                let t = t_ms as f64 / 1000.0;
                let (at, wall, _) = marks
                    .iter()
                    .rev()
                    .find(|(_, wall, _)| *wall <= t)
                    .unwrap_or(first);
                (at + (t - wall)).max(0.0)
            };
            Some((offset(from_ms), offset(to_ms)))
        }
    }
}

/// The clip `key` names, from the objects `get` returns (the cache's own lookup).
pub async fn build<F, Fut>(
    key: &CacheKey,
    settings: ClipSettings,
    get: F,
) -> Result<CachedObject, FetchError>
where
    F: Fn(CacheKey) -> Fut,
    Fut: Future<Output = Fetched>,
{
    let (Some(span), Target::Recording(recording, RecordingObject::Clip)) =
        (key.clip(), key.target())
    else {
        return Ok(CachedObject::not_found(ObjectKind::Segment));
    };
    if span.duration_ms() > settings.max_duration.as_millis() as u64 {
        return bad(format!(
            "a clip may span at most {} s; this one asks for {:.3} s",
            settings.max_duration.as_secs(),
            span.duration_ms() as f64 / 1000.0
        ));
    }
    let key_of = |object: RecordingObject| {
        CacheKey::new(Target::Recording(recording.clone(), object), None)
            .map_err(|e| FetchError::Unreachable(e.to_string()))
    };
    let playlist = get(key_of(RecordingObject::Playlist)?)
        .await
        .map_err(unshared)?;
    if playlist.status != StatusCode::OK {
        return Ok(refusal(playlist.status, "no such recording".into()));
    }
    let playlist = parse_media(&String::from_utf8_lossy(&playlist.body));
    let Some((start, end)) = offsets(span, &playlist) else {
        return bad("the recording has no segments yet");
    };
    let durations: Vec<f64> = playlist.segments.iter().map(|s| s.duration_secs).collect();
    let recorded: f64 = durations.iter().sum();
    let Some((first, last, first_at)) = progressive::segments_for(&durations, start, end) else {
        return bad(format!(
            "the clip starts at {start:.3} s, after what is recorded ({recorded:.3} s)"
        ));
    };
    let chosen = &playlist.segments[first..last];
    let Some(init) = chosen[0].map_uri.clone() else {
        return bad("clips are cut from fMP4 recordings; this one is MPEG-TS");
    };
    if chosen.iter().any(|s| s.map_uri.as_ref() != Some(&init)) {
        return bad("the clip spans a change of the stream's codec configuration");
    }
    // The playlist's URIs are file names beside it; anything else is no file of ours.
    let media = |file: &str| {
        CacheKey::parse(&format!("/{recording}/{file}"), None)
            .ok()
            .filter(|k| {
                matches!(
                    k.target(),
                    Target::Recording(_, RecordingObject::Media { .. })
                )
            })
            .ok_or_else(|| FetchError::Unreachable(format!("playlist lists {file:?}")))
    };
    let mut keys = vec![media(&init)?];
    for segment in chosen {
        keys.push(media(&segment.uri)?);
    }
    let objects: Vec<Arc<CachedObject>> = stream::iter(keys.into_iter().map(&get))
        .buffered(CONCURRENT_FETCHES)
        .map_err(unshared)
        .try_collect()
        .await?;
    if let Some(missing) = objects.iter().find(|o| o.status != StatusCode::OK) {
        return Ok(refusal(
            StatusCode::BAD_GATEWAY,
            format!(
                "a segment of the clip is not available ({})",
                missing.status
            ),
        ));
    }
    let bodies: Vec<Bytes> = objects.iter().map(|o| o.body.clone()).collect();
    let cut = Cut {
        start_secs: start - first_at,
        end_secs: end - first_at,
    };
    // Parsing the fragments and copying their samples: CPU work off the async workers.
    let built = tokio::task::spawn_blocking(move || {
        let fragments: Vec<&[u8]> = bodies[1..].iter().map(|b| b.as_ref()).collect();
        progressive::build(&bodies[0], &fragments, cut)
    })
    .await
    .map_err(|e| FetchError::Unreachable(format!("clip builder: {e}")))?;
    let clip = match built {
        Ok(clip) => clip,
        Err(e) => {
            tracing::warn!(key = key.as_str(), error = %e, "cannot cut a clip");
            return Ok(refusal(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("cannot cut this recording: {e}"),
            ));
        }
    };
    metrics::counter!("streamcdn_edge_clips_total").increment(1);
    let complete = playlist.ended || end <= recorded;
    let keep = complete && clip.bytes.len() as u64 <= settings.max_cached_bytes;
    let etag = {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        (key.as_str(), clip.bytes.len()).hash(&mut hasher);
        HeaderValue::try_from(format!("\"{:016x}\"", hasher.finish())).ok()
    };
    Ok(CachedObject {
        status: StatusCode::OK,
        content_type: Some(HeaderValue::from_static("video/mp4")),
        cache_control: Some(HeaderValue::from_static(if complete {
            IMMUTABLE
        } else {
            "no-store"
        })),
        body: Bytes::from(clip.bytes),
        kind: ObjectKind::Segment,
        born: Instant::now(),
        ttl: if keep { CLIP_TTL } else { Duration::ZERO },
        validators: Validators {
            etag: etag.filter(|_| complete),
            last_modified: None,
        },
        invalidated: Default::default(),
    })
}

/// A fetch error shared by coalesced waiters, as this fill's own.
fn unshared(error: Arc<FetchError>) -> FetchError {
    match Arc::try_unwrap(error) {
        Ok(error) => error,
        Err(shared) => match &*shared {
            FetchError::NotCacheable {
                status,
                content_type,
                body,
            } => FetchError::NotCacheable {
                status: *status,
                content_type: content_type.clone(),
                body: body.clone(),
            },
            FetchError::Timeout => FetchError::Timeout,
            FetchError::TooLarge => FetchError::TooLarge,
            FetchError::NoServer(s) => FetchError::NoServer(s.clone()),
            FetchError::Registry(s) => FetchError::Registry(s.clone()),
            FetchError::Unreachable(s) => FetchError::Unreachable(s.clone()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_spans_map_to_offsets_by_program_date_time() {
        let playlist = parse_media(
            "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-12-08T01:00:00.000Z\n#EXTINF:2.000,\n000000.m4s\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-12-08T01:00:02.000Z\n#EXTINF:2.000,\n000001.m4s\n\
             #EXT-X-DISCONTINUITY\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-12-08T01:00:10.000Z\n#EXTINF:2.000,\n000002.m4s\n",
        );
        let span = |q: &str| ClipSpan::parse(q).unwrap();
        // Within the first segments; across the gap the recording's timeline is the
        // segments' durations, not the wall clock.
        assert_eq!(
            offsets(
                span("from=2026-12-08T01:00:01Z&to=2026-12-08T01:00:11.5Z"),
                &playlist
            ),
            Some((1.0, 5.5))
        );
        // Before the recording: from its start.
        assert_eq!(
            offsets(
                span("from=2026-12-08T00:59:00Z&to=2026-12-08T01:00:03Z"),
                &playlist
            ),
            Some((0.0, 3.0))
        );
        assert_eq!(
            offsets(span("start=1.5&end=3"), &playlist),
            Some((1.5, 3.0))
        );
        assert_eq!(
            offsets(
                span("from=2026-12-08T01:00:01Z&to=2026-12-08T01:00:03Z"),
                &ParsedPlaylist::default()
            ),
            None
        );
    }
}
