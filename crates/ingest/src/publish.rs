//! What every protocol's publisher has in common around its media: the end of a publish
//! (the `on_unpublish` and `on_recording_ended` hooks, the live-streams gauge, the
//! recording made durable) and the reasons a publish is refused, as metric labels.

use std::net::SocketAddr;
use std::time::SystemTime;

use streamcdn_providers::hooks::{Event, Hook};
use streamcdn_recording::clock::format_time;
use streamcdn_recording::Recording;

use crate::hub::{PublishError, StreamHub};
use crate::publisher::Publisher;

/// Ends a publish that `hub` began at `published_at` for `peer`.
pub(crate) async fn finish(
    publisher: Publisher,
    hub: &StreamHub,
    peer: SocketAddr,
    published_at: &str,
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

    publisher.finish().await;
    metrics::gauge!("streamcdn_live_streams").decrement(1.0);
    let recording = stream.recording();
    tracing::info!(
        provider = recording.provider,
        stream = recording.stream,
        segments = recording.segments.len(),
        "publish ended; recording complete"
    );
    let ended_at = recording.ended_at.clone().unwrap_or_default();
    let mut ended = hook_event(
        Hook::OnRecordingEnded,
        &recording,
        hub,
        format_time(SystemTime::now()),
        &ended_at,
    );
    ended.started_at = Some(recording.started_at.clone());
    ended.ended_at = Some(ended_at);
    ended.duration_secs = Some(recording.duration_secs());
    ended.segments = Some(recording.segments.len() as u64);
    ended.bytes = Some(recording.segments.iter().map(|s| s.bytes).sum());
    ended.playback = Some(format!(
        "/{}/{}/{}/index.m3u8",
        recording.provider, recording.stream, recording.recording_id
    ));
    hub.hooks().notify(ended);
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

