//! The ingest's HTTP origin: playlists rendered from the hub's view, segments from
//! memory while hot and from local storage after. Edges fetch from here; its
//! `Cache-Control` headers are the cache policy the edges apply. Every URL is parsed
//! into a [`Target`] by `streamcdn-urls`; nothing else decides what a path means.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use streamcdn_access::admin::Caller;
use streamcdn_recording::hls::{self, LiveEdge};
use streamcdn_recording::Recording;
use streamcdn_urls::{
    parse_part_file, Directives, MediaKind, RecordingName, RecordingObject, StreamName, Target,
};

use crate::hub::{LiveStream, PartBytes, Readiness, StreamHub};

pub const PLAYLIST_CONTENT_TYPE: &str = "application/vnd.apple.mpegurl";
/// Handlers answer early with the error response (a 404) through `?`.
type Reply = Result<Response, Response>;
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

pub fn router(hub: Arc<StreamHub>) -> Router {
    Router::new().fallback(serve).with_state(hub)
}

async fn serve(State(hub): State<Arc<StreamHub>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    if let Some(stream) = streamcdn_urls::feed_stream(&path) {
        return feed(&hub, &stream);
    }
    let response = match Directives::parse(request.uri().query().unwrap_or("")) {
        Ok(directives) => answer(&hub, &path, directives).await,
        Err(e) => {
            count("playlist", StatusCode::BAD_REQUEST);
            uncached(StatusCode::BAD_REQUEST, &e.to_string())
        }
    };
    if_none_match(request.headers(), response)
}

/// An error answer no cache may keep: the same request may succeed a moment later.
fn uncached(status: StatusCode, why: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        format!("{why}\n"),
    )
        .into_response()
}

/// A `200` whose `ETag` the request names becomes a `304` with the same headers: an
/// edge revalidating an invalidated copy keeps its body (RFC 9110 §13.1.2).
fn if_none_match(request: &axum::http::HeaderMap, response: Response) -> Response {
    let tags = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    let etag = response
        .headers()
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok());
    let (Some(tags), Some(etag), StatusCode::OK) = (tags, etag, response.status()) else {
        return response;
    };
    if !streamcdn_urls::conditional::if_none_match(tags, etag) {
        return response;
    }
    count("not_modified", StatusCode::NOT_MODIFIED);
    let (mut parts, _) = response.into_parts();
    parts.status = StatusCode::NOT_MODIFIED;
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::empty())
}

/// A strong validator from what identifies a representation. SipHash with fixed keys:
/// the same on every server running this build, so a copy fetched from one server
/// revalidates at another of its cluster.
fn etag(parts: &[&[u8]]) -> HeaderValue {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    parts.hash(&mut hasher);
    HeaderValue::try_from(format!("\"{:016x}\"", hasher.finish()))
        .unwrap_or(HeaderValue::from_static("\"0\""))
}

async fn answer(hub: &Arc<StreamHub>, path: &str, directives: Directives) -> Response {
    let Ok(target) = Target::parse(path) else {
        count("other", StatusCode::NOT_FOUND);
        return not_found("no such object");
    };
    let reply = match &target {
        // Edges render the player page; an origin serves media only.
        Target::PlayerPage(_) => {
            count("other", StatusCode::NOT_FOUND);
            Err(not_found("no such object"))
        }
        Target::StreamMultivariant(stream) => stream_multivariant(hub, stream).await,
        Target::StreamLive(stream) => live_playlist(hub, stream, directives).await,
        Target::Recordings(stream) => list_recordings(hub, stream).await,
        Target::Recording(recording, object) => match object {
            RecordingObject::Multivariant => recording_multivariant(hub, recording).await,
            RecordingObject::Playlist => recording_playlist(hub, recording).await,
            RecordingObject::Media {
                file,
                kind: MediaKind::Part,
            } => part(hub, recording, file).await,
            RecordingObject::Media { file, kind } => {
                recording_file(hub, recording, file, *kind).await
            }
        },
    };
    reply.unwrap_or_else(|response| response)
}

/// The stream's low-latency feed from its latest keyframe on, for as long as it is
/// published here: ended with the stream, cut when the publisher leaves without ending
/// it (a relay then finds the server that continues it).
fn feed(hub: &StreamHub, name: &StreamName) -> Response {
    let live = hub
        .stream(name)
        .filter(|s| s.with_recording(|r| r.is_live()) && s.feed().stopped().is_none());
    let Some(live) = live else {
        count("feed", StatusCode::NOT_FOUND);
        return uncached(StatusCode::NOT_FOUND, "stream not live here");
    };
    count("feed", StatusCode::OK);
    let subscriber = live.feed().subscribe();
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

fn not_found(why: &str) -> Response {
    (StatusCode::NOT_FOUND, format!("{why}\n")).into_response()
}

fn count(kind: &'static str, status: StatusCode) {
    metrics::counter!("streamcdn_origin_requests_total", "kind" => kind, "status" => status.as_str().to_owned())
        .increment(1);
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
            (header::ETAG, etag(&[text.as_bytes()])),
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

/// The stream's current recording once it has a segment: from memory if this server
/// holds it, else the most recent one on storage; or the 404 to answer with.
async fn ready_recording(hub: &StreamHub, stream: &StreamName) -> Result<Arc<Recording>, Response> {
    let current = match hub.stream(stream) {
        Some(live) => {
            wait_for_first_segment(&live, hub.settings().hold()).await;
            Some(live.recording())
        }
        None => hub.store().latest(stream).await,
    };
    match current.filter(|r| !r.segments.is_empty()) {
        Some(r) => Ok(r),
        None => {
            count("playlist", StatusCode::NOT_FOUND);
            Err(not_found("no such stream"))
        }
    }
}

async fn stream_multivariant(hub: &StreamHub, stream: &StreamName) -> Reply {
    let recording = ready_recording(hub, stream).await?;
    Ok(playlist_response(
        &recording,
        hls::stream_multivariant(&recording),
    ))
}

async fn live_playlist(hub: &StreamHub, stream: &StreamName, directives: Directives) -> Reply {
    let recording = ready_recording(hub, stream).await?;
    let live = hub.stream(stream).filter(|l| {
        l.low_latency() && l.with_recording(|r| r.recording_id == recording.recording_id)
    });
    let Some(live) = live else {
        let text = hls::live_playlist(&recording, hub.settings().live_window)
            .ok_or_else(|| not_found("no such stream"))?;
        return Ok(playlist_response(&recording, text));
    };
    low_latency_playlist(hub, &live, directives).await
}

/// The LL-HLS live playlist, held until it holds what `_HLS_msn`/`_HLS_part` ask for
/// (rfc8216bis 6.2.5.2): 400 if that is too far ahead, 503 after three target
/// durations; directives are ignored once the stream has ended.
async fn low_latency_playlist(hub: &StreamHub, live: &LiveStream, directives: Directives) -> Reply {
    let settings = hub.settings();
    let part_target = settings.part_target_secs;
    // Parts that may be asked for ahead of the last one: three seconds' worth.
    let advance_part_limit = if part_target < 1.0 {
        (3.0 / part_target).floor() as u64
    } else {
        3
    };
    let hold = settings.hold();
    let mut updates = live.subscribe();
    let blocking = directives.msn.is_some();
    let view = tokio::time::timeout(hold, async {
        loop {
            let view = live.edge();
            let readiness = match directives.msn {
                Some(msn) if view.recording.is_live() => {
                    view.readiness(msn, directives.part, advance_part_limit)
                }
                _ => Readiness::Ready,
            };
            if readiness != Readiness::Wait || updates.changed().await.is_err() {
                return (view, readiness);
            }
        }
    })
    .await;
    let (view, readiness) = match view {
        Ok(pair) => pair,
        Err(_) => {
            count("playlist", StatusCode::SERVICE_UNAVAILABLE);
            return Err(uncached(
                StatusCode::SERVICE_UNAVAILABLE,
                "the stream has not reached the requested segment or part",
            ));
        }
    };
    if readiness == Readiness::TooFarAhead {
        count("playlist", StatusCode::BAD_REQUEST);
        return Err(uncached(
            StatusCode::BAD_REQUEST,
            "_HLS_msn/_HLS_part too far ahead of the live edge",
        ));
    }
    let edge = LiveEdge {
        part_target_secs: part_target,
        parts: &view.parts,
        open: view.open.clone(),
        skip: directives.skip.is_some() && view.recording.is_live(),
    };
    let text = hls::low_latency_playlist(&view.recording, settings.live_window, &edge)
        .ok_or_else(|| not_found("no such stream"))?;
    let mut response = playlist_response(&view.recording, text);
    if view.recording.is_live() {
        // rfc8216bis Appendix B.1: a blocking response for six target durations (what a
        // request names never changes); a non-blocking one for half a target duration
        // (our tiers keep it for half a part target: see the edge's policy).
        let max_age = if blocking {
            settings.blocking_max_age_secs()
        } else {
            (settings.target_duration_secs / 2.0).floor().max(1.0) as u64
        };
        if let Ok(value) = HeaderValue::try_from(format!("public, max-age={max_age}")) {
            response.headers_mut().insert(header::CACHE_CONTROL, value);
        }
    }
    Ok(response)
}

/// A part of the live edge: from memory until written, then from its segment's file.
/// A part not yet cut (the preload hint) is held until it is complete.
async fn part(hub: &StreamHub, name: &RecordingName, file: &str) -> Reply {
    let Some((sequence, index)) = parse_part_file(file) else {
        count("part", StatusCode::NOT_FOUND);
        return Err(not_found("no such part"));
    };
    let live = hub
        .stream(&name.stream)
        .filter(|l| l.with_recording(|r| r.recording_id == name.id));
    let Some(live) = live else {
        count("part", StatusCode::NOT_FOUND);
        return Err(not_found("no such part"));
    };
    let hold = hub.settings().hold();
    let mut updates = live.subscribe();
    let found = tokio::time::timeout(hold, async {
        loop {
            if let Some(bytes) = live.part(sequence, index) {
                return Some(bytes);
            }
            // Not coming: its segment is complete (with fewer parts, or so old its parts
            // are forgotten), it is too far ahead, or the stream ended.
            let view = live.edge();
            let (last, _) = view.position();
            let next = last.map_or(1, |l| l + 1);
            if last.is_some_and(|l| sequence <= l)
                || sequence > next + 1
                || !view.recording.is_live()
            {
                return None;
            }
            if updates.changed().await.is_err() {
                return None;
            }
        }
    })
    .await;
    let bytes = match found {
        Ok(Some(PartBytes::Hot(bytes))) => bytes,
        Ok(Some(PartBytes::Written { file, offset, len })) => {
            read_range(&hub.store().dir(name).join(&file), offset, len)
                .await
                .map_err(|e| {
                    tracing::warn!(recording = %name, file, error = %e, "part unreadable");
                    count("part", StatusCode::NOT_FOUND);
                    not_found("part not available")
                })?
        }
        Ok(None) => {
            count("part", StatusCode::NOT_FOUND);
            return Err(uncached(StatusCode::NOT_FOUND, "no such part"));
        }
        Err(_) => {
            count("part", StatusCode::SERVICE_UNAVAILABLE);
            return Err(uncached(StatusCode::SERVICE_UNAVAILABLE, "part not ready"));
        }
    };
    count("part", StatusCode::OK);
    let len = bytes.len().to_le_bytes();
    let tag = etag(&[name.to_string().as_bytes(), file.as_bytes(), &len]);
    // Never changes; wanted only near the live edge (rfc8216bis Appendix B.1: six target
    // durations).
    let max_age = hub.settings().blocking_max_age_secs();
    Ok((
        [
            (header::ETAG, tag),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(MediaKind::content_type(file)),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::try_from(format!("public, max-age={max_age}"))
                    .unwrap_or(HeaderValue::from_static("no-cache")),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// `len` bytes of `path` from `offset`.
async fn read_range(path: &std::path::Path, offset: u64, len: u64) -> std::io::Result<Bytes> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut buffer = vec![0; usize::try_from(len).map_err(std::io::Error::other)?];
    file.read_exact(&mut buffer).await?;
    Ok(buffer.into())
}

/// A recording by name, or the 404 to answer with (counted under `kind`).
async fn load(
    hub: &StreamHub,
    kind: &'static str,
    recording: &RecordingName,
) -> Result<Arc<Recording>, Response> {
    hub.load_recording(&recording.stream, &recording.id)
        .await
        .ok_or_else(|| {
            count(kind, StatusCode::NOT_FOUND);
            not_found("no such recording")
        })
}

async fn recording_multivariant(hub: &StreamHub, name: &RecordingName) -> Reply {
    let recording = load(hub, "playlist", name).await?;
    Ok(playlist_response(
        &recording,
        hls::recording_multivariant(&recording),
    ))
}

async fn recording_playlist(hub: &StreamHub, name: &RecordingName) -> Reply {
    let recording = load(hub, "playlist", name).await?;
    Ok(playlist_response(
        &recording,
        hls::recording_playlist(&recording, ""),
    ))
}

async fn list_recordings(hub: &StreamHub, stream: &StreamName) -> Reply {
    let mut summaries = Vec::new();
    for id in hub.store().ids(stream).await {
        if let Some(recording) = hub.load_recording(stream, &id).await {
            summaries.push(hls::summary(&recording));
        }
    }
    if summaries.is_empty() {
        return Err(not_found("no such stream"));
    }
    count("recordings", StatusCode::OK);
    Ok((
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=2"),
        )],
        axum::Json(summaries),
    )
        .into_response())
}

async fn recording_file(
    hub: &StreamHub,
    name: &RecordingName,
    file: &str,
    media: MediaKind,
) -> Reply {
    let kind = match media {
        MediaKind::Init => "init",
        MediaKind::Segment => "segment",
        MediaKind::Part => "part",
    };
    // Only names the journal lists are served, so no request can reach another path.
    let recording = load(hub, kind, name).await?;
    if !recording.contains_file(file) {
        count(kind, StatusCode::NOT_FOUND);
        return Err(not_found("no such segment"));
    }
    let live = hub
        .stream(&name.stream)
        .filter(|l| l.with_recording(|r| r.recording_id == name.id));
    let path = hub.store().dir(name).join(file);
    let body = match live.as_ref().and_then(|l| l.hot_object(file)) {
        Some(bytes) => Ok(bytes),
        // A segment whose last parts are still on their way to the file.
        None => match live.and_then(|l| l.unwritten_tail(file)) {
            Some((written, tail)) => read_range(&path, 0, written).await.map(|head| {
                let mut whole =
                    Vec::with_capacity(head.len() + tail.iter().map(Bytes::len).sum::<usize>());
                whole.extend_from_slice(&head);
                tail.iter().for_each(|t| whole.extend_from_slice(t));
                Bytes::from(whole)
            }),
            None => tokio::fs::read(&path).await.map(Bytes::from),
        },
    };
    let body = match body {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(recording = %name, file, error = %e, "listed file unreadable");
            count(kind, StatusCode::NOT_FOUND);
            return Err(not_found("segment not available"));
        }
    };
    count(kind, StatusCode::OK);
    // Never rewritten once listed: its name and size identify it.
    let len = body.len().to_le_bytes();
    let tag = etag(&[name.to_string().as_bytes(), file.as_bytes(), &len]);
    Ok((
        [
            (header::ETAG, tag),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(MediaKind::content_type(file)),
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
            get(|State(hub): State<Arc<StreamHub>>, caller: Option<axum::Extension<Caller>>| async move {
                // A provider's token lists its own streams only.
                let scope = caller.and_then(|c| c.provider.clone());
                let streams: Vec<serde_json::Value> = hub
                    .live_publishes()
                    .into_iter()
                    .filter(|(r, _)| scope.as_ref().is_none_or(|p| *p == r.provider))
                    .map(|(r, live)| {
                        let (peak, average) = r.bandwidth();
                        let (protocol, transport) = live.publisher();
                        let mut json = serde_json::json!({
                            "provider": r.provider,
                            "stream": r.stream,
                            "recording_id": r.recording_id,
                            "ingest_server": r.node,
                            "started_at": r.started_at,
                            "format": r.format,
                            "codecs": r.codecs,
                            "resolution": r.resolution,
                            "segments": r.segments.len(),
                            "peak_bandwidth": peak,
                            "average_bandwidth": average,
                            "protocol": protocol,
                        });
                        if let Some(transport) = transport {
                            json["transport"] = transport;
                        }
                        json
                    })
                    .collect();
                axum::Json(streams)
            }),
        )
        .route(
            "/api/v1/recordings",
            get(|State(hub): State<Arc<StreamHub>>, caller: Option<axum::Extension<Caller>>| async move {
                let scope = caller.and_then(|c| c.provider.clone());
                let store = hub.store();
                let all = match store.all().await {
                    Ok(all) => all,
                    Err(e) => {
                        return (StatusCode::SERVICE_UNAVAILABLE, format!("cannot list recordings: {e}\n"))
                            .into_response()
                    }
                };
                let mut list = Vec::new();
                for (dir, r) in all {
                    if scope.as_ref().is_some_and(|p| *p != r.provider) {
                        continue;
                    }
                    let duration: f64 = r.segments.iter().map(|s| s.duration_secs).sum();
                    list.push(serde_json::json!({
                        "provider": r.provider,
                        "stream": r.stream,
                        "recording_id": r.recording_id,
                        "state": r.state,
                        "started_at": r.started_at,
                        "ended_at": r.ended_at,
                        "segments": r.segments.len(),
                        "duration_secs": duration,
                        "node": r.node,
                        "archived": store.is_archived(&dir).await,
                    }));
                }
                list.sort_by(|a, b| b["started_at"].as_str().cmp(&a["started_at"].as_str()));
                axum::Json(list).into_response()
            }),
        )
        .with_state(hub)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tagged() -> Response {
        ([(header::ETAG, etag(&[b"#EXTM3U\n"]))], "#EXTM3U\n").into_response()
    }

    #[test]
    fn a_matching_etag_is_answered_304_with_the_headers() {
        let tag = tagged().headers()[header::ETAG].clone();
        let mut request = axum::http::HeaderMap::new();
        request.insert(header::IF_NONE_MATCH, tag.clone());
        let answer = if_none_match(&request, tagged());
        assert_eq!(answer.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(answer.headers()[header::ETAG], tag);
        request.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert_eq!(if_none_match(&request, tagged()).status(), StatusCode::OK);
        assert_eq!(
            if_none_match(&axum::http::HeaderMap::new(), tagged()).status(),
            StatusCode::OK
        );
    }
}
