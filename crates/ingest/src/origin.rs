//! The ingest's HTTP origin: playlists rendered from the hub's view, segments from
//! memory while hot and from local storage after. Edges fetch from here; its
//! `Cache-Control` headers are the cache policy the edges apply.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use streamcdn_config::{is_valid_name, SegmentFormat};
use streamcdn_media::playlist::{
    render_multivariant, target_duration, MediaPlaylist, PlaylistKind, PlaylistSegment, Variant,
};

use crate::hub::{LiveStream, StreamHub};
use crate::recording::Recording;

pub const PLAYLIST_CONTENT_TYPE: &str = "application/vnd.apple.mpegurl";
/// Handlers answer early with the error response (a 404) through `?`.
type Reply = Result<Response, Response>;
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

pub fn router(hub: Arc<StreamHub>) -> Router {
    Router::new()
        .route("/{provider}/{stream}/index.m3u8", get(stream_multivariant))
        .route("/{provider}/{stream}/live.m3u8", get(live_playlist))
        .route("/{provider}/{stream}/recordings", get(list_recordings))
        .route(
            "/{provider}/{stream}/{recording}/index.m3u8",
            get(recording_multivariant),
        )
        .route(
            "/{provider}/{stream}/{recording}/playlist.m3u8",
            get(recording_playlist),
        )
        .route(
            "/{provider}/{stream}/{recording}/{file}",
            get(recording_file),
        )
        .fallback(|| async { not_found("no such object") })
        .with_state(hub)
}

fn not_found(why: &str) -> Response {
    (StatusCode::NOT_FOUND, format!("{why}\n")).into_response()
}

fn count(kind: &'static str, status: StatusCode) {
    metrics::counter!("streamcdn_origin_requests_total", "kind" => kind, "status" => status.as_str().to_owned())
        .increment(1);
}

fn names_ok(names: &[&str]) -> bool {
    names.iter().all(|n| is_valid_name(n))
}

/// A playlist of `recording`, cached for half a target duration while live (it changes
/// about once a segment) and briefly once ended (a new publish may start a new
/// recording at the same URL).
fn playlist_response(recording: &Recording, text: String) -> Response {
    count("playlist", StatusCode::OK);
    let max_age = if recording.is_live() {
        (recording.target_duration_secs / 2.0).floor().max(1.0) as u64
    } else {
        2
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(PLAYLIST_CONTENT_TYPE),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::try_from(format!("public, max-age={max_age}"))
                    .unwrap_or(HeaderValue::from_static("no-cache")),
            ),
        ],
        text,
    )
        .into_response()
}

/// The stream's current recording: from memory if this server holds it, else the most
/// recent one on local storage.
fn current_recording(hub: &StreamHub, provider: &str, stream: &str) -> Option<Arc<Recording>> {
    if let Some(live) = hub.stream(provider, stream) {
        return Some(live.recording());
    }
    let latest = hub.recording_ids(provider, stream).pop()?;
    hub.load_recording(provider, stream, &latest)
}

/// A live stream that has not cut its first segment yet is a few seconds from playable;
/// hold the request rather than answer 404 to a player that just started.
async fn wait_for_first_segment(live: &LiveStream, limit: Duration) {
    let mut updates = live.subscribe();
    let ready = |l: &LiveStream| l.with_recording(|r| !r.segments.is_empty() || !r.is_live());
    let _ = tokio::time::timeout(limit, async {
        while !ready(live) {
            if updates.changed().await.is_err() {
                break;
            }
        }
    })
    .await;
}

/// The stream's current recording once it has a segment, or the 404 to answer with.
async fn ready_recording(
    hub: &StreamHub,
    provider: &str,
    stream: &str,
) -> Result<Arc<Recording>, Response> {
    if names_ok(&[provider, stream]) {
        if let Some(live) = hub.stream(provider, stream) {
            let wait = Duration::from_secs_f64(hub.settings().target_duration_secs * 3.0);
            wait_for_first_segment(&live, wait).await;
        }
        if let Some(r) = current_recording(hub, provider, stream).filter(|r| !r.segments.is_empty())
        {
            return Ok(r);
        }
    }
    count("playlist", StatusCode::NOT_FOUND);
    Err(not_found("no such stream"))
}

/// One entry of a stream's `recordings` listing.
pub fn recording_summary(r: &Recording) -> serde_json::Value {
    serde_json::json!({
        "recording_id": r.recording_id,
        "state": r.state,
        "started_at": r.started_at,
        "ended_at": r.ended_at,
        "duration_secs": r.segments.iter().map(|s| s.duration_secs).sum::<f64>(),
        "segments": r.segments.len(),
        "playlist": format!("/{}/{}/{}/index.m3u8", r.provider, r.stream, r.recording_id),
    })
}

/// A multivariant playlist with the recording as its one variant at `uri`.
pub fn multivariant(recording: &Recording, uri: &str) -> String {
    render_multivariant(&[variant(recording, uri.to_owned())])
}

/// The whole recording as one media playlist (`EVENT` while live, `VOD` after), its
/// URIs prefixed with `prefix`.
pub fn recording_playlist_text(recording: &Recording, prefix: &str) -> String {
    let segments = playlist_segments(recording, prefix, 0);
    MediaPlaylist {
        kind: if recording.is_live() {
            PlaylistKind::Event
        } else {
            PlaylistKind::Vod
        },
        target_duration_secs: target_duration(recording.target_duration_secs, &segments),
        media_sequence: recording.segments.first().map_or(0, |s| s.sequence),
        discontinuity_sequence: 0,
        segments: &segments,
        ended: !recording.is_live(),
    }
    .render()
}

fn variant(recording: &Recording, uri: String) -> Variant {
    let (peak, average) = recording.bandwidth();
    Variant {
        uri,
        bandwidth: peak,
        average_bandwidth: Some(average),
        codecs: recording.codecs.clone(),
        resolution: recording.resolution,
        frame_rate: recording.frame_rate,
    }
}

async fn stream_multivariant(
    State(hub): State<Arc<StreamHub>>,
    Path((provider, stream)): Path<(String, String)>,
) -> Reply {
    let recording = ready_recording(&hub, &provider, &stream).await?;
    // Live viewers follow the sliding window; once the stream has ended, new viewers
    // get the whole recording.
    let uri = if recording.is_live() {
        "live.m3u8".to_owned()
    } else {
        format!("{}/playlist.m3u8", recording.recording_id)
    };
    let text = render_multivariant(&[variant(&recording, uri)]);
    Ok(playlist_response(&recording, text))
}

fn playlist_segments(recording: &Recording, prefix: &str, from: usize) -> Vec<PlaylistSegment> {
    recording.segments[from..]
        .iter()
        .map(|s| PlaylistSegment {
            uri: format!("{prefix}{}", s.file),
            duration_secs: s.duration_secs,
            program_date_time: s.program_date_time.clone(),
            discontinuity: s.discontinuity,
            map_uri: match recording.format {
                SegmentFormat::Fmp4 => s.init.as_ref().map(|i| format!("{prefix}{i}")),
                SegmentFormat::Ts => None,
            },
        })
        .collect()
}

async fn live_playlist(
    State(hub): State<Arc<StreamHub>>,
    Path((provider, stream)): Path<(String, String)>,
) -> Reply {
    let recording = ready_recording(&hub, &provider, &stream).await?;
    let window = hub.settings().live_window;
    let from = recording.segments.len().saturating_sub(window);
    let segments = playlist_segments(&recording, &format!("{}/", recording.recording_id), from);
    let text = MediaPlaylist {
        kind: PlaylistKind::Live,
        target_duration_secs: target_duration(recording.target_duration_secs, &segments),
        media_sequence: recording.segments[from].sequence,
        discontinuity_sequence: recording.segments[..from]
            .iter()
            .filter(|s| s.discontinuity)
            .count() as u64,
        segments: &segments,
        ended: !recording.is_live(),
    }
    .render();
    Ok(playlist_response(&recording, text))
}

/// A recording by id, or the 404 to answer with (counted under `kind`).
#[allow(clippy::result_large_err)] // the error is the response itself, returned at once
fn load(
    hub: &StreamHub,
    kind: &'static str,
    provider: &str,
    stream: &str,
    id: &str,
) -> Result<Arc<Recording>, Response> {
    names_ok(&[provider, stream, id])
        .then(|| hub.load_recording(provider, stream, id))
        .flatten()
        .ok_or_else(|| {
            count(kind, StatusCode::NOT_FOUND);
            not_found("no such recording")
        })
}

async fn recording_multivariant(
    State(hub): State<Arc<StreamHub>>,
    Path((provider, stream, id)): Path<(String, String, String)>,
) -> Reply {
    let recording = load(&hub, "playlist", &provider, &stream, &id)?;
    let text = multivariant(&recording, "playlist.m3u8");
    Ok(playlist_response(&recording, text))
}

async fn recording_playlist(
    State(hub): State<Arc<StreamHub>>,
    Path((provider, stream, id)): Path<(String, String, String)>,
) -> Reply {
    let recording = load(&hub, "playlist", &provider, &stream, &id)?;
    let text = recording_playlist_text(&recording, "");
    Ok(playlist_response(&recording, text))
}

async fn list_recordings(
    State(hub): State<Arc<StreamHub>>,
    Path((provider, stream)): Path<(String, String)>,
) -> Response {
    if !names_ok(&[&provider, &stream]) {
        return not_found("no such stream");
    }
    let summaries: Vec<serde_json::Value> = hub
        .recording_ids(&provider, &stream)
        .iter()
        .filter_map(|id| hub.load_recording(&provider, &stream, id))
        .map(|r| recording_summary(&r))
        .collect();
    if summaries.is_empty() {
        return not_found("no such stream");
    }
    count("recordings", StatusCode::OK);
    (
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=2"),
        )],
        axum::Json(summaries),
    )
        .into_response()
}

fn content_type(file: &str) -> &'static str {
    match file.rsplit('.').next() {
        Some("m4s") => "video/iso.segment",
        Some("mp4") => "video/mp4",
        Some("ts") => "video/mp2t",
        _ => "application/octet-stream",
    }
}

async fn recording_file(
    State(hub): State<Arc<StreamHub>>,
    Path((provider, stream, id, file)): Path<(String, String, String, String)>,
) -> Reply {
    let kind = if file.starts_with("init") {
        "init"
    } else {
        "segment"
    };
    // Only names the journal lists are served, so no request can reach another path.
    let recording = load(&hub, kind, &provider, &stream, &id)?;
    if !recording.contains_file(&file) {
        count(kind, StatusCode::NOT_FOUND);
        return Err(not_found("no such segment"));
    }
    let hot = hub
        .stream(&provider, &stream)
        .filter(|l| l.with_recording(|r| r.recording_id == id))
        .and_then(|l| l.hot_object(&file));
    let body = match hot {
        Some(bytes) => bytes,
        None => match tokio::fs::read(hub.recording_dir(&provider, &stream, &id).join(&file)).await
        {
            Ok(bytes) => Bytes::from(bytes),
            Err(e) => {
                tracing::warn!(provider, stream, recording = id, file, error = %e, "listed file unreadable");
                count(kind, StatusCode::NOT_FOUND);
                return Err(not_found("segment not available"));
            }
        },
    };
    count(kind, StatusCode::OK);
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(&file)),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE)),
        ],
        body,
    )
        .into_response())
}

/// Admin endpoints of the ingest role, merged into the admin API by the binary.
pub fn admin_router(hub: Arc<StreamHub>) -> Router {
    Router::new()
        .route(
            "/api/v1/streams",
            get(|State(hub): State<Arc<StreamHub>>| async move {
                let streams: Vec<serde_json::Value> = hub
                    .live_streams()
                    .into_iter()
                    .map(|r| {
                        let (peak, average) = r.bandwidth();
                        serde_json::json!({
                            "provider": r.provider,
                            "stream": r.stream,
                            "recording_id": r.recording_id,
                            "started_at": r.started_at,
                            "format": r.format,
                            "codecs": r.codecs,
                            "resolution": r.resolution,
                            "segments": r.segments.len(),
                            "peak_bandwidth": peak,
                            "average_bandwidth": average,
                        })
                    })
                    .collect();
                axum::Json(streams)
            }),
        )
        .with_state(hub)
}
