//! One publisher's pipeline: the media input (from FLV packets, or from whatever front end
//! the protocol has) → segmenter → container, part by part → the
//! stream's live edge (served at once from memory) and the recorder, which appends each
//! part to its segment's file and makes the segment durable when it is complete.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use streamcdn_config::SegmentFormat;
use streamcdn_media::flv::{self, AudioPacket, FlvFrontEnd, VideoPacket};
use streamcdn_media::input::MediaInput;
use streamcdn_media::segmenter::{MediaPart, SegmentEnd, Segmenter, SegmenterEvent, Tracks};
use streamcdn_media::ts::TsMuxer;
use streamcdn_media::{fmp4, rtmp::amf0::Amf0Value};
use tokio::sync::oneshot;

use streamcdn_recording::clock::format_time;
use streamcdn_recording::hls::{EdgePart, OpenSegment};
use streamcdn_recording::{JournalWriter, SegmentEntry};

use crate::hub::LiveStream;
use crate::recorder::{Recorder, StreamRecorder, WriteJob};

enum Container {
    Fmp4,
    Ts(TsMuxer),
}

pub struct Publisher {
    stream: Arc<LiveStream>,
    segmenter: Segmenter,
    /// RTMP's front end, used by `on_video` and `on_audio`.
    flv: FlvFrontEnd,
    format: SegmentFormat,
    container: Option<Container>,
    init_file: Option<String>,
    started: SystemTime,
    /// Bytes of the open segment so far: where its next part goes in the file.
    segment_offset: u64,
    recorder: StreamRecorder,
    warned_unsupported: bool,
    finished: bool,
    /// Where this publisher's timeline starts in the recording (non-zero when it
    /// continues one), for wall-clock times.
    resumed_at_ms: u64,
}

impl Publisher {
    pub async fn new(
        stream: Arc<LiveStream>,
        journal: JournalWriter,
        part_target_secs: f64,
        recorder: &Recorder,
    ) -> Self {
        let target_ms = stream.with_recording(|r| (r.target_duration_secs * 1000.0) as u64);
        let part_target_ms = (part_target_secs * 1000.0).round() as u64;
        // A continued recording resumes after its last segment, on the same timeline.
        let (last_sequence, resumed_at_ms) = stream.with_recording(|r| {
            let elapsed: f64 = r.segments.iter().map(|s| s.duration_secs).sum();
            (
                r.segments.last().map(|s| s.sequence),
                (elapsed * 1000.0).round() as u64,
            )
        });
        let segmenter = match last_sequence {
            None => Segmenter::new(target_ms, part_target_ms),
            Some(last) => Segmenter::resume(target_ms, part_target_ms, last + 1, resumed_at_ms),
        };
        let recorder = recorder.open(journal, stream.clone()).await;
        Self {
            format: stream.with_recording(|r| r.format),
            stream,
            segmenter,
            flv: FlvFrontEnd::default(),
            container: None,
            init_file: None,
            started: SystemTime::now(),
            segment_offset: 0,
            recorder,
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
                if let Some(input) = self.flv.video(timestamp, packet) {
                    self.push(input).await;
                }
            }
            Ok(_) => {}
            Err(e) => self.warn_once(&e.to_string()),
        }
    }

    pub async fn on_audio(&mut self, timestamp: u32, data: Bytes) {
        match flv::parse_audio(&data) {
            Ok(packet @ (AudioPacket::Config(_) | AudioPacket::Frame(_))) => {
                let input = self.flv.audio(timestamp, packet);
                self.push(input).await;
            }
            Err(e) => self.warn_once(&e.to_string()),
        }
    }

    /// One input of the media pipeline, from any protocol's front end.
    pub async fn push(&mut self, input: MediaInput) {
        self.stream.feed().publish(&input);
        let events = self.segmenter.push(input);
        self.handle(events).await;
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
        let mut events = events.into_iter().peekable();
        while let Some(event) = events.next() {
            match event {
                SegmenterEvent::Tracks(tracks) => self.start_tracks(tracks).await,
                SegmenterEvent::Part(part) => {
                    let segment = part.segment;
                    let ends = events.next_if(
                        |e| matches!(e, SegmenterEvent::SegmentEnd(end) if end.index == segment),
                    );
                    let ends = match ends {
                        Some(SegmenterEvent::SegmentEnd(end)) => Some(end),
                        _ => None,
                    };
                    self.emit_part(part, ends).await;
                }
                SegmenterEvent::SegmentEnd(end) => self.end_segment(end).await,
            }
        }
    }

    async fn start_tracks(&mut self, tracks: Tracks) {
        let codecs_of = |tracks: &Tracks| -> Vec<String> {
            tracks
                .video
                .iter()
                .map(|v| v.codec_string.clone())
                .chain(tracks.audio.iter().map(|a| a.codec_string.clone()))
                .collect()
        };
        let codecs = codecs_of(&tracks);
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
                    let job = WriteJob::Init { file, bytes: init };
                    if !self.recorder.send(job).await {
                        tracing::error!("recorder stopped; init segment not recorded");
                    }
                }
                Err(e) => {
                    self.container = None;
                    self.warn_once(&e.to_string());
                }
            },
            SegmentFormat::Ts => {
                // The muxer leaves out audio TS cannot carry (Opus); the playlist lists
                // what the segments hold.
                let muxer = TsMuxer::new(tracks);
                if let Some(why) = muxer.skipped_audio() {
                    self.warn_once(why);
                }
                self.stream
                    .set_tracks(None, codecs_of(muxer.tracks()), resolution);
                self.container = Some(Container::Ts(muxer));
            }
        }
    }

    fn segment_file(&self, sequence: u64) -> String {
        let extension = match self.format {
            SegmentFormat::Fmp4 => "m4s",
            SegmentFormat::Ts => "ts",
        };
        format!("{sequence:06}.{extension}")
    }

    fn wall_clock(&self, start_ms: u64) -> String {
        format_time(
            self.started
                + std::time::Duration::from_millis(start_ms.saturating_sub(self.resumed_at_ms)),
        )
    }

    /// Muxes a part, lists it and has it written; `ends` when it is its segment's last.
    async fn emit_part(&mut self, part: MediaPart, ends: Option<SegmentEnd>) {
        let muxed = match &mut self.container {
            Some(Container::Fmp4) => fmp4::part(&part).map_err(|e| Some(e.to_string())),
            Some(Container::Ts(muxer)) => Ok(muxer.part(&part)),
            // No container (tracks the ingest cannot package): already warned.
            None => Err(None),
        };
        let bytes = match muxed {
            Ok(bytes) => bytes,
            Err(error) => {
                if let Some(e) = error {
                    self.warn_once(&e);
                }
                // The segment still ends (the recorder will not list it: a part is missing).
                if let Some(end) = ends {
                    self.end_segment(end).await;
                }
                return;
            }
        };
        let file = self.segment_file(part.segment);
        if part.index == 0 {
            self.segment_offset = 0;
        }
        let offset = self.segment_offset;
        self.segment_offset += bytes.len() as u64;
        let ends = ends.map(|end| self.segment_entry(&end));
        let entry = ends.as_ref().map(|(entry, _)| entry.clone());
        let open = || OpenSegment {
            sequence: part.segment,
            program_date_time: self.wall_clock(part.start_ms),
            discontinuity: part.discontinuity,
            init: self.init_file.clone(),
        };
        let edge_part = EdgePart {
            segment: part.segment,
            index: part.index,
            duration_secs: part.duration_secs,
            independent: part.independent,
        };
        let (file_name, hot) = (file.clone(), bytes.clone());
        self.stream
            .add_part(edge_part, file_name, offset, hot, open, ends);
        metrics::counter!("streamcdn_ingest_parts_total").increment(1);
        let job = WriteJob::Part {
            file,
            segment: part.segment,
            index: part.index,
            bytes,
        };
        if !self.recorder.send(job).await {
            tracing::error!("recorder stopped; part kept in memory only");
        }
        if let Some(entry) = entry {
            self.record_segment(entry).await;
        }
    }

    /// The playlist entry of the segment `end` closes, and its frame rate.
    fn segment_entry(&self, end: &SegmentEnd) -> (SegmentEntry, Option<f64>) {
        let entry = SegmentEntry {
            sequence: end.index,
            file: self.segment_file(end.index),
            duration_secs: end.duration_secs,
            program_date_time: self.wall_clock(end.start_ms),
            bytes: self.segment_offset,
            discontinuity: end.discontinuity,
            init: self.init_file.clone(),
        };
        let frame_rate = (end.duration_secs > 0.0 && end.video_frames > 0)
            .then(|| (end.video_frames as f64 / end.duration_secs).round());
        (entry, frame_rate)
    }

    /// A segment ends after its last part was listed.
    async fn end_segment(&mut self, end: SegmentEnd) {
        let (entry, frame_rate) = self.segment_entry(&end);
        self.stream.add_segment(entry.clone(), frame_rate);
        self.record_segment(entry).await;
    }

    /// Has the recorder make a listed segment durable and journal it.
    async fn record_segment(&mut self, entry: SegmentEntry) {
        metrics::counter!("streamcdn_ingest_segments_total").increment(1);
        if !self.recorder.send(WriteJob::Segment(entry)).await {
            tracing::error!("recorder stopped; segment not recorded");
        }
    }

    /// Flushes the last segment, marks the stream ended and waits until the recorder
    /// has made everything durable.
    pub async fn finish(mut self) {
        let events = self.segmenter.finish();
        self.handle(events).await;
        let ended_at = format_time(SystemTime::now());
        self.stream.end(ended_at.clone());
        self.finished = true;
        let (done, recorded) = oneshot::channel();
        if self.recorder.send(WriteJob::End { ended_at, done }).await {
            let _ = recorded.await;
        }
    }
}

impl Publisher {
    /// Like [`Self::finish`], but the recording stays live, marked interrupted: the
    /// publisher left a server being drained and continues through another. The last
    /// segment is flushed and durable before the registry hears of it.
    pub async fn interrupt(mut self) {
        let events = self.segmenter.finish();
        self.handle(events).await;
        let at = format_time(SystemTime::now());
        self.stream.mark_interrupted(at.clone());
        self.finished = true;
        let (done, recorded) = oneshot::channel();
        if self.recorder.send(WriteJob::Interrupt { at, done }).await {
            let _ = recorded.await;
        }
        self.stream.report_interrupted();
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        // A publisher dropped without `finish` (its task was cancelled) must not leave
        // the stream looking live forever.
        if !self.finished {
            let ended_at = format_time(SystemTime::now());
            self.stream.end(ended_at.clone());
            let (done, _) = oneshot::channel();
            if !self.recorder.try_send(WriteJob::End { ended_at, done }) {
                tracing::error!(
                    "recorder queue full; the ended recording stays live until repaired"
                );
            }
        }
    }
}
