//! One publisher's pipeline: FLV packets → segmenter → container → the stream's
//! in-memory view (served at once) and the recorder (made durable in the background).

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use streamcdn_config::SegmentFormat;
use streamcdn_media::flv::{self, AudioPacket, VideoPacket};
use streamcdn_media::segmenter::{MediaSegment, Segmenter, SegmenterEvent, Tracks};
use streamcdn_media::ts::TsMuxer;
use streamcdn_media::{fmp4, rtmp::amf0::Amf0Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use streamcdn_recording::clock::format_time;
use streamcdn_recording::{JournalWriter, SegmentEntry};

use crate::hub::LiveStream;

enum Container {
    Fmp4,
    Ts(TsMuxer),
}

enum WriteJob {
    Init { file: String },
    Segment(SegmentEntry),
    End { ended_at: String },
}

pub struct Publisher {
    stream: Arc<LiveStream>,
    segmenter: Segmenter,
    format: SegmentFormat,
    container: Option<Container>,
    init_file: Option<String>,
    started: SystemTime,
    keep_hot: usize,
    writer: mpsc::Sender<(WriteJob, Bytes)>,
    writer_task: Option<JoinHandle<()>>,
    warned_unsupported: bool,
    finished: bool,
    /// Where this publisher's timeline starts in the recording (non-zero when it
    /// continues one), for wall-clock times.
    resumed_at_ms: u64,
}

impl Publisher {
    pub fn new(stream: Arc<LiveStream>, journal: JournalWriter, live_window: usize) -> Self {
        let target_ms = stream.with_recording(|r| (r.target_duration_secs * 1000.0) as u64);
        // A continued recording resumes after its last segment, on the same timeline.
        let (first_sequence, resumed_at_ms) = stream.with_recording(|r| {
            let next = r.segments.last().map_or(0, |s| s.sequence + 1);
            let elapsed: f64 = r.segments.iter().map(|s| s.duration_secs).sum();
            (next, (elapsed * 1000.0).round() as u64)
        });
        let segmenter = if first_sequence == 0 {
            Segmenter::new(target_ms)
        } else {
            Segmenter::resume(target_ms, first_sequence, resumed_at_ms)
        };
        let (tx, rx) = mpsc::channel(16);
        let writer_task = tokio::spawn(run_recorder(journal, rx, stream.clone()));
        Self {
            format: stream.with_recording(|r| r.format),
            stream,
            segmenter,
            container: None,
            init_file: None,
            started: SystemTime::now(),
            // Segments leave memory once durable; this bounds memory if storage falls
            // behind.
            keep_hot: live_window + 4,
            writer: tx,
            writer_task: Some(writer_task),
            warned_unsupported: false,
            finished: false,
            resumed_at_ms,
        }
    }

    pub fn stream(&self) -> &Arc<LiveStream> {
        &self.stream
    }

    pub async fn on_video(&mut self, timestamp: u32, data: Bytes) {
        match flv::parse_video(&data) {
            Ok(packet @ (VideoPacket::Config(_) | VideoPacket::Frame { .. })) => {
                let events = self.segmenter.push_video(timestamp, packet);
                self.handle(events).await;
            }
            Ok(_) => {}
            Err(e) => self.warn_once(&e.to_string()),
        }
    }

    pub async fn on_audio(&mut self, timestamp: u32, data: Bytes) {
        match flv::parse_audio(&data) {
            Ok(packet @ (AudioPacket::Config(_) | AudioPacket::Frame(_))) => {
                let events = self.segmenter.push_audio(timestamp, packet);
                self.handle(events).await;
            }
            Err(e) => self.warn_once(&e.to_string()),
        }
    }

    pub fn on_metadata(&mut self, metadata: &[(String, Amf0Value)]) {
        let encoder = metadata
            .iter()
            .find(|(k, _)| k == "encoder")
            .and_then(|(_, v)| v.as_str());
        tracing::debug!(encoder, "stream metadata");
    }

    fn warn_once(&mut self, what: &str) {
        if !self.warned_unsupported {
            self.warned_unsupported = true;
            let (provider, stream) = self
                .stream
                .with_recording(|r| (r.provider.clone(), r.stream.clone()));
            tracing::warn!(
                provider,
                stream,
                "dropping media the ingest cannot package: {what}"
            );
        }
    }

    async fn handle(&mut self, events: Vec<SegmenterEvent>) {
        for event in events {
            match event {
                SegmenterEvent::Tracks(tracks) => self.start_tracks(tracks).await,
                SegmenterEvent::Segment(segment) => self.emit_segment(segment).await,
            }
        }
    }

    async fn start_tracks(&mut self, tracks: Tracks) {
        let codecs: Vec<String> = tracks
            .video
            .iter()
            .map(|v| v.codec_string.clone())
            .chain(tracks.audio.iter().map(|a| a.codec_string.clone()))
            .collect();
        let resolution = tracks.video.as_ref().map(|v| (v.width, v.height));
        match self.format {
            SegmentFormat::Fmp4 => match fmp4::init_segment(&tracks) {
                Ok(init) => {
                    let n = self.stream.with_recording(|r| r.inits.len());
                    let file = if n == 0 {
                        "init.mp4".to_owned()
                    } else {
                        format!("init-{}.mp4", n + 1)
                    };
                    self.stream
                        .set_tracks(Some((file.clone(), init.clone())), codecs, resolution);
                    self.init_file = Some(file.clone());
                    self.container = Some(Container::Fmp4);
                    let _ = self.writer.send((WriteJob::Init { file }, init)).await;
                }
                Err(e) => {
                    self.container = None;
                    self.warn_once(&e.to_string());
                }
            },
            SegmentFormat::Ts => {
                self.stream.set_tracks(None, codecs, resolution);
                self.container = Some(Container::Ts(TsMuxer::new(tracks)));
            }
        }
    }

    async fn emit_segment(&mut self, segment: MediaSegment) {
        let sequence = segment.index;
        let bytes = match &mut self.container {
            Some(Container::Fmp4) => match fmp4::media_segment(&segment, sequence as u32 + 1) {
                Ok(b) => b,
                Err(e) => return self.warn_once(&e.to_string()),
            },
            Some(Container::Ts(muxer)) => muxer.media_segment(&segment),
            None => return,
        };
        let extension = match self.format {
            SegmentFormat::Fmp4 => "m4s",
            SegmentFormat::Ts => "ts",
        };
        let start = self.started
            + std::time::Duration::from_millis(segment.start_ms.saturating_sub(self.resumed_at_ms));
        let entry = SegmentEntry {
            sequence,
            file: format!("{sequence:06}.{extension}"),
            duration_secs: segment.duration_secs,
            program_date_time: format_time(start),
            bytes: bytes.len() as u64,
            discontinuity: segment.discontinuity,
            init: self.init_file.clone(),
        };
        let frame_rate = (segment.duration_secs > 0.0 && !segment.video.is_empty())
            .then(|| (segment.video.len() as f64 / segment.duration_secs).round());
        self.stream
            .add_segment(entry.clone(), bytes.clone(), frame_rate, self.keep_hot);
        metrics::counter!("streamcdn_ingest_segments_total").increment(1);
        if self
            .writer
            .send((WriteJob::Segment(entry), bytes))
            .await
            .is_err()
        {
            tracing::error!("recorder stopped; segment kept in memory only");
        }
    }

    /// Flushes the last segment, marks the stream ended and waits until the recorder
    /// has made everything durable.
    pub async fn finish(mut self) {
        if let Some(segment) = self.segmenter.finish() {
            self.emit_segment(segment).await;
        }
        let ended_at = format_time(SystemTime::now());
        self.stream.end(ended_at.clone());
        let _ = self
            .writer
            .send((WriteJob::End { ended_at }, Bytes::new()))
            .await;
        self.finished = true;
        if let Some(task) = self.writer_task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        // A publisher dropped without `finish` (its task was cancelled) must not leave
        // the stream looking live forever.
        if !self.finished {
            let ended_at = format_time(SystemTime::now());
            self.stream.end(ended_at.clone());
            let _ = self
                .writer
                .try_send((WriteJob::End { ended_at }, Bytes::new()));
        }
    }
}

async fn run_recorder(
    mut writer: JournalWriter,
    mut jobs: mpsc::Receiver<(WriteJob, Bytes)>,
    stream: Arc<LiveStream>,
) {
    let dir = writer.dir().to_owned();
    while let Some((job, bytes)) = jobs.recv().await {
        let last = matches!(job, WriteJob::End { .. });
        let header = writer.header();
        if header.codecs.is_empty() || header.frame_rate.is_none() {
            let (codecs, resolution, fps) =
                stream.with_recording(|r| (r.codecs.clone(), r.resolution, r.frame_rate));
            header.codecs = codecs;
            header.resolution = resolution;
            header.frame_rate = fps;
        }
        let written = match &job {
            WriteJob::Segment(entry) => Some((entry.file.clone(), entry.bytes)),
            _ => None,
        };
        // The writer moves into the blocking pool for the file system work and back.
        let outcome = tokio::task::spawn_blocking(move || {
            let result = match job {
                WriteJob::Init { file } => writer.add_init(&file, &bytes),
                WriteJob::Segment(entry) => writer.add_segment(entry, &bytes),
                WriteJob::End { ended_at } => writer.end(ended_at),
            };
            (writer, result)
        })
        .await;
        let result;
        (writer, result) = match outcome {
            Ok(pair) => pair,
            Err(e) => return recorder_failed(&dir, &std::io::Error::other(e)),
        };
        match (result, written) {
            (Ok(()), Some((file, size))) => {
                stream.release_object(&file);
                metrics::counter!("streamcdn_ingest_segments_recorded_total").increment(1);
                metrics::counter!("streamcdn_ingest_recorded_bytes_total").increment(size);
            }
            (Ok(()), None) => {}
            (Err(e), _) => {
                metrics::counter!("streamcdn_ingest_record_errors_total").increment(1);
                tracing::error!(dir = %dir.display(), error = %e, "recording write failed");
            }
        }
        if last {
            // Written as far as storage allowed: the stream is served from there now.
            stream.retire();
            break;
        }
    }
}

fn recorder_failed(dir: &std::path::Path, e: &std::io::Error) {
    metrics::counter!("streamcdn_ingest_record_errors_total").increment(1);
    tracing::error!(dir = %dir.display(), error = %e, "recorder stopped; the stream is served but no longer recorded");
}
