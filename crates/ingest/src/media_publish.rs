//! A publisher of media already in the pipeline's one shape ([`MediaInput`]), whatever
//! protocol and front end produced it: MPEG-TS (HTTP upload, SRT) through the TS demuxer,
//! WebRTC (WHIP) through the RTP front end. It publishes through the same path as RTMP:
//! the same hub (one publisher per stream, failover takeover of a dead server's
//! recording, `on_publish` and `on_unpublish` hooks), the same segmenter, recording and
//! announcements.
//!
//! ```text
//! let mut publisher = MediaPublisher::begin(&hub, &recorder, request).await?; // refused: tell the client why
//! for input in front_end.push(...) { publisher.push(input).await; }
//! publisher.finish(draining).await; // always, also on errors and timeouts
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use streamcdn_media::input::MediaInput;
use streamcdn_recording::clock::{format_time, new_recording_id};

use crate::hub::{PublishError, StreamHub, TransportReport};
use crate::publish::{self, reason_label};
use crate::publisher::Publisher;
use crate::recorder::Recorder;

/// Who publishes what: the names and key as the protocol carried them (SRT's `streamid`,
/// an upload's path and bearer token, a WHIP offer's), not yet checked.
#[derive(Debug, Clone, Copy)]
pub struct PublishRequest<'a> {
    pub provider: &'a str,
    pub stream: &'a str,
    pub key: Option<&'a str>,
    /// The publisher's address, for hooks and logs.
    pub client: SocketAddr,
    /// The protocol's name for logs and metric labels (`http`, `srt`, `whip`).
    pub protocol: &'static str,
}

/// One publisher, from an accepted request to the end of its stream.
pub struct MediaPublisher {
    hub: Arc<StreamHub>,
    publisher: Publisher,
    client: SocketAddr,
    protocol: &'static str,
    published_at: String,
}

impl MediaPublisher {
    /// Checks the key, takes the stream's slot (or continues the recording a dead server
    /// of the cluster left), asks the provider's `on_publish` hook and opens the
    /// recording. A refused publisher gets the reason (give it to the client: SRT's
    /// handshake rejection, HTTP's status) and nothing is recorded.
    pub async fn begin(
        hub: &Arc<StreamHub>,
        recorder: &Recorder,
        request: PublishRequest<'_>,
    ) -> Result<Self, PublishError> {
        let now = SystemTime::now();
        let published_at = format_time(now);
        let begun = hub
            .begin_publish_stream(
                request.provider,
                request.stream,
                request.key,
                published_at.clone(),
                new_recording_id(now),
                request.client,
            )
            .await;
        let (stream, journal) = match begun {
            Ok(opened) => opened,
            Err(e) => {
                tracing::warn!(
                    provider = request.provider,
                    stream = request.stream,
                    client = %request.client,
                    protocol = request.protocol,
                    error = %e,
                    "publish refused"
                );
                metrics::counter!(
                    "streamcdn_publish_refused_total",
                    "protocol" => request.protocol,
                    "reason" => reason_label(&e)
                )
                .increment(1);
                return Err(e);
            }
        };
        let recording = stream.with_recording(|r| r.recording_id.clone());
        tracing::info!(
            provider = request.provider,
            stream = request.stream,
            recording,
            protocol = request.protocol,
            "publish started"
        );
        metrics::gauge!("streamcdn_live_streams", "protocol" => request.protocol).increment(1.0);
        stream.set_publisher(request.protocol, None);
        let part_target = hub.settings().part_target_secs;
        let publisher = Publisher::new(stream, journal, part_target, recorder).await;
        Ok(Self {
            hub: hub.clone(),
            publisher,
            client: request.client,
            protocol: request.protocol,
            published_at,
        })
    }

    /// The next media. Returns once it is handed to the live edge and the recorder
    /// (which pushes back when storage lags).
    pub async fn push(&mut self, input: MediaInput) {
        self.publisher.push(input).await;
    }

    /// The transport's statistics for the live list (SRT's RTT and losses).
    pub fn report_transport(&self, report: TransportReport) {
        self.publisher
            .stream()
            .set_publisher(self.protocol, Some(report));
    }

    /// The recording's path for logs: `provider/stream/recording`.
    pub fn recording(&self) -> String {
        self.publisher
            .stream()
            .with_recording(|r| format!("{}/{}/{}", r.provider, r.stream, r.recording_id))
    }

    /// Ends the stream: the last segment, the hooks, and the recording made durable.
    /// Call it however the transport ended. `interrupted`: the server is being drained,
    /// so the recording stays live for another server to continue (see
    /// `publish::finish`).
    pub async fn finish(self, interrupted: bool) {
        publish::finish(
            self.publisher,
            &self.hub,
            self.client,
            &self.published_at,
            self.protocol,
            interrupted,
        )
        .await;
    }
}
