//! MPEG-TS publishers: the one entry point for every protocol that carries a transport
//! stream (an HTTP upload today, SRT next). A [`TsPublisher`] is begun with the stream's
//! identity and key, takes the stream's bytes as they arrive, in chunks of any size, and
//! publishes through the same path as RTMP: the same hub (one publisher per stream,
//! failover takeover of a dead server's recording, `on_publish` and `on_unpublish` hooks),
//! the same segmenter, recording and announcements.
//!
//! ```text
//! let mut publisher = TsPublisher::begin(&hub, &recorder, request).await?; // refused: tell the client why
//! while let Some(bytes) = transport.next().await { publisher.push(&bytes).await; }
//! publisher.finish(draining).await; // always, also on errors and timeouts
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use streamcdn_media::ts_demux::{TsDemuxer, TsStats};
use streamcdn_recording::clock::{format_time, new_recording_id};

use crate::hub::{PublishError, StreamHub, TransportReport};
use crate::publish::{self, reason_label};
use crate::publisher::Publisher;
use crate::recorder::Recorder;

/// Who publishes what: the names and key as the protocol carried them (SRT's `streamid`,
/// an upload's path and bearer token), not yet checked.
#[derive(Debug, Clone, Copy)]
pub struct TsPublishRequest<'a> {
    pub provider: &'a str,
    pub stream: &'a str,
    pub key: Option<&'a str>,
    /// The publisher's address, for hooks and logs.
    pub client: SocketAddr,
    /// The protocol's name for logs and the `protocol` label of the publisher metrics
    /// (`http`, `srt`; RTMP's is `rtmp`).
    pub protocol: &'static str,
}

/// One MPEG-TS publisher, from an accepted request to the end of its stream.
pub struct TsPublisher {
    hub: Arc<StreamHub>,
    publisher: Publisher,
    demuxer: TsDemuxer,
    client: SocketAddr,
    protocol: &'static str,
    published_at: String,
    /// Demuxer counts already reported as metrics.
    reported: TsStats,
}

impl TsPublisher {
    /// Checks the key, takes the stream's slot (or continues the recording a dead server
    /// of the cluster left), asks the provider's `on_publish` hook and opens the
    /// recording. A refused publisher gets the reason (give it to the client: SRT's
    /// handshake rejection, HTTP's status) and nothing is recorded.
    pub async fn begin(
        hub: &Arc<StreamHub>,
        recorder: &Recorder,
        request: TsPublishRequest<'_>,
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
                    "streamcdn_ts_publish_refused_total",
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
            demuxer: TsDemuxer::default(),
            client: request.client,
            protocol: request.protocol,
            published_at,
            reported: TsStats::default(),
        })
    }

    /// The next bytes of the transport stream, split anywhere. Returns once their media
    /// is handed to the live edge and the recorder (which pushes back when storage lags).
    pub async fn push(&mut self, bytes: &[u8]) {
        metrics::counter!("streamcdn_ingest_bytes_in_total", "protocol" => self.protocol)
            .increment(bytes.len() as u64);
        for input in self.demuxer.push(bytes) {
            self.publisher.push(input).await;
        }
        self.report();
    }

    /// The transport's statistics for the live list (SRT's RTT and losses).
    pub fn report_transport(&self, report: TransportReport) {
        self.publisher
            .stream()
            .set_publisher(self.protocol, Some(report));
    }

    /// What the demuxer has seen so far: packets, bytes skipped, gaps, frames dropped.
    pub fn stats(&self) -> &TsStats {
        self.demuxer.stats()
    }

    /// Ends the stream: the last frames, the last segment, the hooks, and the recording
    /// made durable. Call it however the transport ended. `interrupted`: the server is
    /// being drained, so the recording stays live for another server to continue (see
    /// `publish::finish`).
    pub async fn finish(mut self, interrupted: bool) {
        for input in self.demuxer.finish() {
            self.publisher.push(input).await;
        }
        self.report();
        let stats = self.demuxer.stats();
        tracing::info!(
            protocol = self.protocol,
            packets = stats.packets,
            gaps = stats.gaps,
            dropped_units = stats.dropped_units,
            skipped_bytes = stats.skipped_bytes,
            "MPEG-TS publisher ended"
        );
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

    fn report(&mut self) {
        let stats = self.demuxer.stats();
        let protocol = self.protocol;
        let delta = |now: u64, before: u64| now.saturating_sub(before);
        metrics::counter!("streamcdn_ts_gaps_total", "protocol" => protocol)
            .increment(delta(stats.gaps, self.reported.gaps));
        metrics::counter!("streamcdn_ts_dropped_access_units_total", "protocol" => protocol)
            .increment(delta(stats.dropped_units, self.reported.dropped_units));
        metrics::counter!("streamcdn_ts_skipped_bytes_total", "protocol" => protocol)
            .increment(delta(stats.skipped_bytes, self.reported.skipped_bytes));
        self.reported = stats.clone();
    }
}
