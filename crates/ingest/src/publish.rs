//! What every protocol's publisher has in common around its media: the end of a publish
//! (the `on_unpublish` and `on_recording_ended` hooks, the live-streams gauge, the
//! recording made durable) and the reasons a publish is refused, as metric labels.

use std::net::SocketAddr;
use std::time::SystemTime;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use streamcdn_providers::hooks::{Event, Hook};
use streamcdn_recording::clock::format_time;
use streamcdn_recording::Recording;

use crate::cluster::recording_ended_event;
use crate::hub::{PublishError, StreamHub};
use crate::publisher::Publisher;

/// Ends a publish that `hub` began at `published_at` for `peer`: `on_unpublish` at once,
/// the recording made durable, then `on_recording_ended` (hooks go out in the
/// background). On a server being drained (`interrupted`), the recording is made durable
/// but not ended: no `on_recording_ended`; another server continues it, or the cluster
/// ends it once its reconnect window has passed. `protocol` labels the live-streams
/// gauge, as the publish's start did.
pub(crate) async fn finish(
    publisher: Publisher,
    hub: &StreamHub,
    peer: SocketAddr,
    published_at: &str,
    protocol: &'static str,
    interrupted: bool,
) {
    let stream = publisher.stream().clone();
    let ended_at = format_time(SystemTime::now());
    let mut gone = stream
        .with_recording(|r| hook_event(Hook::OnUnpublish, r, hub, ended_at.clone(), published_at));
    gone.client = Some(peer.to_string());
    gone.started_at = Some(published_at.to_owned());
    gone.ended_at = Some(ended_at);
    gone.duration_secs = streamcdn_recording::clock::seconds_since(published_at);
    hub.hooks().notify(gone);

    if interrupted {
        publisher.interrupt().await;
        metrics::gauge!("streamcdn_live_streams", "protocol" => protocol).decrement(1.0);
        metrics::counter!("streamcdn_ingest_streams_interrupted_total").increment(1);
        let recording = stream.recording();
        tracing::info!(
            provider = recording.provider,
            stream = recording.stream,
            recording = recording.recording_id,
            segments = recording.segments.len(),
            "publish interrupted by the drain; the recording stays live for another server to continue"
        );
        return;
    }
    publisher.finish().await;
    metrics::gauge!("streamcdn_live_streams", "protocol" => protocol).decrement(1.0);
    let recording = stream.recording();
    tracing::info!(
        provider = recording.provider,
        stream = recording.stream,
        segments = recording.segments.len(),
        "publish ended; recording complete"
    );
    hub.hooks()
        .notify(recording_ended_event(&recording, hub.node_id()));
}

/// A hook's event for `recording`, from this server.
fn hook_event(
    hook: Hook,
    recording: &Recording,
    hub: &StreamHub,
    at: String,
    discriminator: &str,
) -> Event {
    let mut event = Event::new(
        hook,
        &recording.provider,
        &recording.stream,
        &recording.recording_id,
        at,
        discriminator,
    );
    event.node = recording
        .node
        .clone()
        .or_else(|| Some(hub.node_id().to_owned()));
    event
}

/// The HTTP answer to a refused publisher (an upload, a WHIP offer): `401` without a
/// key (with `WWW-Authenticate: Bearer`), `403` for a wrong one or a hook's refusal,
/// `404` for an unknown provider, `409` if the stream is live elsewhere; the reason as
/// the body.
pub(crate) fn refusal(e: &PublishError) -> Response {
    let status = match e {
        PublishError::MissingKey => StatusCode::UNAUTHORIZED,
        PublishError::WrongKey | PublishError::Denied(_) => StatusCode::FORBIDDEN,
        PublishError::UnknownProvider(_) => StatusCode::NOT_FOUND,
        PublishError::InvalidStreamName(_) => StatusCode::BAD_REQUEST,
        PublishError::AlreadyLive(_) | PublishError::HeldElsewhere(..) => StatusCode::CONFLICT,
        PublishError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut response = (status, format!("{e}\n")).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// The stream key an HTTP publisher sends as `Authorization: Bearer <key>`.
pub(crate) fn bearer_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim().to_owned())
}

pub(crate) fn reason_label(e: &PublishError) -> &'static str {
    match e {
        PublishError::UnknownProvider(_) => "unknown_provider",
        PublishError::InvalidStreamName(_) => "invalid_stream_name",
        PublishError::MissingKey => "missing_key",
        PublishError::WrongKey => "wrong_key",
        PublishError::Denied(_) => "denied_by_hook",
        PublishError::AlreadyLive(_) => "already_live",
        PublishError::HeldElsewhere(..) => "held_elsewhere",
        PublishError::Storage(_) => "storage",
    }
}
