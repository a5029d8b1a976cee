//! MPEG-TS publishers: the one entry point for every protocol that carries a transport
//! stream (an HTTP upload today, SRT next). A [`TsPublisher`] is begun with the stream's
//! identity and key, takes the stream's bytes as they arrive, in chunks of any size, and
//! publishes through [`MediaPublisher`], the path every protocol shares with RTMP.
//!
//! ```text
//! let mut publisher = TsPublisher::begin(&hub, &recorder, request).await?; // refused: tell the client why
//! while let Some(bytes) = transport.next().await { publisher.push(&bytes).await; }
//! publisher.finish(draining).await; // always, also on errors and timeouts
//! ```

use std::sync::Arc;

use streamcdn_media::ts_demux::{TsDemuxer, TsStats};

use crate::hub::{PublishError, StreamHub, TransportReport};
use crate::media_publish::{MediaPublisher, PublishRequest};
use crate::recorder::Recorder;

/// Who publishes what (SRT's `streamid`, an upload's path and bearer token).
pub type TsPublishRequest<'a> = PublishRequest<'a>;

/// One MPEG-TS publisher, from an accepted request to the end of its stream: the TS
/// demuxer in front of a [`MediaPublisher`].
pub struct TsPublisher {
    publisher: MediaPublisher,
    demuxer: TsDemuxer,
    protocol: &'static str,
    /// Demuxer counts already reported as metrics.
    reported: TsStats,
}

impl TsPublisher {
    /// See [`MediaPublisher::begin`]: a refused publisher gets the reason and nothing
    /// is recorded.
    pub async fn begin(
        hub: &Arc<StreamHub>,
        recorder: &Recorder,
        request: TsPublishRequest<'_>,
    ) -> Result<Self, PublishError> {
        let publisher = MediaPublisher::begin(hub, recorder, request).await?;
        Ok(Self {
            publisher,
            demuxer: TsDemuxer::default(),
            protocol: request.protocol,
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
        self.publisher.report_transport(report);
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
        self.publisher.finish(interrupted).await;
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
