//! WHIP (RFC 9725): WebRTC publishers, on the origin listener beside the playlists.
//!
//! - `POST /<provider>/<stream>/whip`, `Content-Type: application/sdp`, the stream key
//!   as `Authorization: Bearer <key>` (or `?key=` for clients that cannot set it): the
//!   key is checked as for RTMP (a wrong one: `401`/`403` with the reason, nothing
//!   recorded), the offer answered by the WebRTC transport (`streamcdn-webrtc`, which
//!   names this server's own ICE candidates), then the publish begins through
//!   [`MediaPublisher`] (hooks, failover, recording) and the answer goes back as `201`
//!   with `Location: /<provider>/<stream>/whip/<session>`.
//! - `DELETE <Location>`: the session ends and the publish with it; answered `200` once
//!   the recording is complete.
//! - `PATCH <Location>` (trickle ICE, ICE restarts): `405`; the server is ICE-lite and
//!   its answer carries every candidate.
//! - `OPTIONS`: CORS preflight, so a browser page on another origin can publish.
//!
//! Each session's RTP goes through the RTP front end of `streamcdn-media` (H.264 and Opus
//! depacketized into the pipeline's one shape); a keyframe it wants is asked of the
//! publisher with PLI. The session ends on `DELETE`, ICE consent loss, inactivity or
//! shutdown; a server being drained interrupts the recording instead of ending it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::Router;
use streamcdn_media::rtp::{RtpFrontEnd, RtpOpus, RtpPacket, RtpVideoCodec};
use streamcdn_webrtc::{
    Accepted, IncomingMedia, MediaEvent, OfferedTracks, SessionStats, Track, WebRtcError,
    WebRtcHandle,
};
pub use streamcdn_webrtc::{WebRtcServer, WebRtcSettings};
use tokio::sync::watch;

use crate::hub::StreamHub;
use crate::media_publish::{MediaPublisher, PublishRequest};
use crate::publish;
use crate::recorder::Recorder;

/// The endpoint's path under a stream.
pub const WHIP_PATH: &str = "whip";
/// The largest SDP offer taken (browsers send 5-10 KB).
const MAX_OFFER: usize = 64 * 1024;
/// How long a `DELETE` waits for the recording to be complete.
const DELETE_WAIT: Duration = Duration::from_secs(20);
const SDP: &str = "application/sdp";

#[derive(Clone)]
struct Whip {
    hub: Arc<StreamHub>,
    recorder: Recorder,
    webrtc: WebRtcHandle,
    drain: watch::Receiver<bool>,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
}

/// A running publish, for its `DELETE`.
struct Session {
    provider: String,
    stream: String,
    /// Turns true once the publish has ended and its recording is durable.
    done: watch::Receiver<bool>,
}

/// The WHIP routes, to merge into the ingest's origin router. A publish that ends once
/// `drain` is true is interrupted, not ended (see `publish::finish`).
pub fn router(
    hub: Arc<StreamHub>,
    recorder: Recorder,
    webrtc: WebRtcHandle,
    drain: watch::Receiver<bool>,
) -> Router {
    let whip = Whip {
        hub,
        recorder,
        webrtc,
        drain,
        sessions: Arc::default(),
    };
    Router::new()
        .route(
            &format!("/{{provider}}/{{stream}}/{WHIP_PATH}"),
            post(offer).options(preflight).fallback(not_allowed),
        )
        .route(
            &format!("/{{provider}}/{{stream}}/{WHIP_PATH}/{{session}}"),
            any(resource),
        )
        .with_state(whip)
}

/// CORS headers on every answer: any origin may publish (the stream key is the
/// credential, not cookies); the answer's `Location` and `ETag` are readable.
fn cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, ETag, Accept-Patch, Link"),
    );
    response
}

async fn preflight() -> Response {
    cors(
        (
            StatusCode::NO_CONTENT,
            [
                (
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    "POST, DELETE, PATCH, OPTIONS",
                ),
                (
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    "Authorization, Content-Type, If-Match",
                ),
                (header::ACCESS_CONTROL_MAX_AGE, "86400"),
                // Chromium's Private Network Access: a public page may publish to an
                // ingest on a private address.
                (
                    header::HeaderName::from_static("access-control-allow-private-network"),
                    "true",
                ),
                (header::ALLOW, "POST, OPTIONS"),
            ],
        )
            .into_response(),
    )
}

async fn not_allowed() -> Response {
    cors(
        (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "POST, OPTIONS")],
            "WHIP: POST an SDP offer here\n",
        )
            .into_response(),
    )
}

fn client_of(request: &Request) -> SocketAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0)
}

fn plain(status: StatusCode, why: &str) -> Response {
    cors((status, format!("{why}\n")).into_response())
}

async fn offer(
    State(whip): State<Whip>,
    Path((provider, stream)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Response {
    if *whip.drain.borrow() {
        let mut response = plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "this server is being drained; publish to another",
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    let is_sdp = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case(SDP))
        });
    if !is_sdp {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "WHIP: the offer must be Content-Type: application/sdp",
        );
    }
    let client = client_of(&request);
    let key = publish::bearer_key(request.headers()).or_else(|| query.get("key").cloned());
    // The key first: a refused publisher costs no WebRTC session and records nothing.
    if let Err(e) = whip
        .hub
        .authorize_stream(&provider, &stream, key.as_deref())
        .await
    {
        tracing::warn!(provider, stream, %client, error = %e, "WHIP publish refused");
        metrics::counter!("streamcdn_publish_refused_total", "protocol" => "whip", "reason" => publish::reason_label(&e))
            .increment(1);
        return cors(publish::refusal(&e));
    }
    let body = match axum::body::to_bytes(request.into_body(), MAX_OFFER).await {
        Ok(body) => body,
        Err(_) => {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "WHIP: the offer is too large",
            )
        }
    };
    let Ok(offer) = std::str::from_utf8(&body) else {
        return plain(StatusCode::BAD_REQUEST, "WHIP: the offer is not UTF-8 text");
    };
    let accepted = match whip.webrtc.accept(offer).await {
        Ok(accepted) => accepted,
        Err(e @ (WebRtcError::BadOffer(_) | WebRtcError::NoMedia)) => {
            tracing::info!(provider, stream, %client, error = %e, "WHIP offer refused");
            return plain(StatusCode::BAD_REQUEST, &e.to_string());
        }
        Err(e) => return plain(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let request = PublishRequest {
        provider: &provider,
        stream: &stream,
        key: key.as_deref(),
        client,
        protocol: "whip",
    };
    let publisher = match MediaPublisher::begin(&whip.hub, &whip.recorder, request).await {
        Ok(publisher) => publisher,
        Err(e) => {
            whip.webrtc.close(&accepted.id).await;
            return cors(publish::refusal(&e));
        }
    };
    let Accepted {
        id,
        answer,
        tracks,
        media,
    } = accepted;
    tracing::info!(
        provider,
        stream,
        %client,
        session = id,
        video = tracks.video,
        audio_channels = tracks.audio_channels,
        candidates = ?whip.webrtc.candidates(),
        "WHIP session answered"
    );
    let (done_tx, done) = watch::channel(false);
    lock(&whip.sessions).insert(
        id.clone(),
        Session {
            provider: provider.clone(),
            stream: stream.clone(),
            done,
        },
    );
    let sessions = whip.sessions.clone();
    let drain = whip.drain.clone();
    let target_duration_secs = whip.hub.settings().target_duration_secs;
    let session_id = id.clone();
    // Its own task: the HTTP exchange is over once the answer is sent.
    tokio::spawn(async move {
        run(publisher, media, tracks, target_duration_secs, drain).await;
        lock(&sessions).remove(&session_id);
        let _ = done_tx.send(true);
    });
    let location = format!("/{provider}/{stream}/{WHIP_PATH}/{id}");
    cors(
        (
            StatusCode::CREATED,
            [
                (header::CONTENT_TYPE, SDP.to_owned()),
                (header::LOCATION, location),
                (header::ETAG, format!("\"{id}\"")),
            ],
            answer,
        )
            .into_response(),
    )
}

/// `DELETE` ends the session; `PATCH` (trickle, ICE restart) is not supported.
async fn resource(
    State(whip): State<Whip>,
    Path((provider, stream, id)): Path<(String, String, String)>,
    method: Method,
) -> Response {
    match method {
        Method::OPTIONS => preflight().await,
        Method::DELETE => {
            let done = lock(&whip.sessions)
                .get(&id)
                .filter(|s| s.provider == provider && s.stream == stream)
                .map(|s| s.done.clone());
            let Some(mut done) = done else {
                return plain(StatusCode::NOT_FOUND, "WHIP: no such session");
            };
            whip.webrtc.close(&id).await;
            let _ = tokio::time::timeout(DELETE_WAIT, done.wait_for(|d| *d)).await;
            cors(StatusCode::OK.into_response())
        }
        _ => cors(
            (
                StatusCode::METHOD_NOT_ALLOWED,
                [(header::ALLOW, "DELETE, OPTIONS")],
                "WHIP: trickle ICE and ICE restarts (PATCH) are not supported; this server is ICE-lite and its answer names every candidate\n",
            )
                .into_response(),
        ),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Feeds a session's RTP to the front end and its media to the publisher until the
/// session ends; then ends the publish (interrupted if the server is being drained).
async fn run(
    mut publisher: MediaPublisher,
    mut media: IncomingMedia,
    tracks: OfferedTracks,
    target_duration_secs: f64,
    drain: watch::Receiver<bool>,
) {
    let mut front = RtpFrontEnd::new(
        tracks.video.then_some(RtpVideoCodec::H264),
        tracks.audio_channels.map(|channels| RtpOpus { channels }),
    );
    // WebRTC encoders send a keyframe only when asked; segments cut on keyframes near
    // the target duration, so one is asked for every target duration.
    let keyframe_every = Duration::from_secs_f64(target_duration_secs.max(0.5));
    let mut last_keyframe_request = Instant::now();
    let start = Instant::now();
    let mut reported = SessionStats::default();
    let mut last_report = start;
    let reason = loop {
        let packet = match media.next().await {
            MediaEvent::Packet(packet) => packet,
            MediaEvent::Ended(reason) => break reason,
        };
        metrics::counter!("streamcdn_ingest_bytes_in_total").increment(packet.payload.len() as u64);
        let arrival = packet.arrival.saturating_duration_since(start);
        let rtp = RtpPacket {
            sequence: packet.sequence,
            timestamp: packet.timestamp,
            marker: packet.marker,
            payload: &packet.payload,
        };
        let inputs = match packet.track {
            Track::Video => front.push_video(rtp, arrival),
            Track::Audio => front.push_audio(rtp, arrival),
        };
        for input in inputs {
            publisher.push(input).await;
        }
        if front.keyframe_wanted(arrival) || last_keyframe_request.elapsed() >= keyframe_every {
            last_keyframe_request = Instant::now();
            media.request_keyframe();
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            reported = report(media.stats(), reported);
        }
    };
    for input in front.finish() {
        publisher.push(input).await;
    }
    let stats = media.stats();
    report(stats, reported);
    tracing::info!(
        recording = publisher.recording(),
        %reason,
        packets = stats.packets,
        lost = stats.lost,
        nacks = stats.nacks,
        plis = stats.plis,
        dropped = stats.dropped,
        front_end = ?front.stats(),
        "WHIP session ended"
    );
    let interrupted = *drain.borrow();
    publisher.finish(interrupted).await;
}

/// Adds what grew since `before` to the WHIP counters; returns `now`.
fn report(now: SessionStats, before: SessionStats) -> SessionStats {
    let grew = |a: u64, b: u64| a.saturating_sub(b);
    metrics::counter!("streamcdn_webrtc_nacks_sent_total", "protocol" => "whip")
        .increment(grew(now.nacks, before.nacks));
    metrics::counter!("streamcdn_webrtc_plis_sent_total", "protocol" => "whip")
        .increment(grew(now.plis, before.plis));
    metrics::counter!("streamcdn_webrtc_packets_lost_total", "protocol" => "whip")
        .increment(grew(now.lost, before.lost));
    metrics::counter!("streamcdn_webrtc_packets_total", "protocol" => "whip")
        .increment(grew(now.packets, before.packets));
    now
}
