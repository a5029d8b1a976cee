//! Turns RTMP audio/video packets into HLS segments made of parts: one timeline for both
//! tracks, unwrapped across 32-bit wrap and rebased across jumps, segments cut on
//! keyframes near the target duration, and each segment cut into parts (the partial
//! segments of LL-HLS) of at most the part target as frames arrive, so that no more than
//! one part's frames are ever held: a part is muxed, served and written the moment its
//! last frame's duration is known.

use bytes::Bytes;

use crate::codec::{AudioConfig, VideoConfig, AAC_FRAME_SAMPLES};
use crate::flv::{AudioPacket, VideoPacket};

pub const VIDEO_TIMESCALE: u32 = 90_000;
/// A timestamp step larger than this (either way) is a discontinuity, not real time.
const MAX_TIMESTAMP_STEP_MS: i64 = 10_000;
/// With no video config after this much audio, the stream is audio-only.
const AUDIO_ONLY_AFTER_MS: i64 = 2_000;
/// A part is cut at this size whatever its duration, so memory stays bounded.
const MAX_PART_BYTES: usize = 64 * 1024 * 1024;
/// What a pending frame costs besides its data (its entry, its `Bytes`), counted against
/// `MAX_PART_BYTES`, so that a flood of empty frames is cut too (after 2^20 of them).
const FRAME_OVERHEAD: usize = 64;
/// The default part target: 334 ms holds exactly ten frames at 30 fps (and 20 at 60)
/// with millisecond RTMP timestamps, where 333 ms would cut every other part a frame
/// short.
pub const DEFAULT_PART_TARGET_MS: u64 = 334;

#[derive(Debug, Clone, PartialEq)]
pub struct Tracks {
    pub video: Option<VideoConfig>,
    pub audio: Option<AudioConfig>,
}

/// One coded frame in its track's timescale.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub dts: u64,
    pub duration: u32,
    pub composition_offset: i32,
    pub keyframe: bool,
    pub data: Bytes,
}

/// A part of a segment: its frames, contiguous with the previous part's. A segment is
/// exactly its parts in order.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPart {
    /// The segment this part belongs to (counts from the stream's first segment).
    pub segment: u64,
    /// Counts from 0 in each segment.
    pub index: u32,
    /// Start on the stream's timeline, in milliseconds since its first frame.
    pub start_ms: u64,
    pub duration_secs: f64,
    pub video: Vec<Sample>,
    pub audio: Vec<Sample>,
    /// Starts with a keyframe (every part of an audio-only stream does).
    pub independent: bool,
    /// The first part of a segment after the tracks changed (new init segment,
    /// `EXT-X-DISCONTINUITY`).
    pub discontinuity: bool,
    /// Bytes of frame data.
    pub bytes: usize,
}

/// A segment is complete: the part just emitted was its last.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentEnd {
    /// Counts from 0 (or the resumed index) across the whole stream.
    pub index: u64,
    /// Start on the stream's timeline, in milliseconds since its first frame.
    pub start_ms: u64,
    pub duration_secs: f64,
    pub parts: u32,
    pub video_frames: usize,
    pub discontinuity: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SegmenterEvent {
    /// Tracks are known (at start, or changed mid-stream): write an init segment.
    Tracks(Tracks),
    Part(MediaPart),
    SegmentEnd(SegmentEnd),
}

/// Maps 32-bit RTMP millisecond timestamps onto one continuous 64-bit timeline.
#[derive(Debug, Default)]
struct Timeline {
    last_in: Option<u32>,
    last_out: i64,
    last_forward_step: i64,
}

impl Timeline {
    fn map(&mut self, ts: u32) -> i64 {
        let Some(last_in) = self.last_in else {
            self.last_in = Some(ts);
            return 0;
        };
        // Wrapping difference handles the 2^32 ms wrap; a huge step is a publisher
        // restart or clock jump, so we carry on from where the timeline was.
        let step = i64::from(ts.wrapping_sub(last_in) as i32);
        self.last_in = Some(ts);
        if step.abs() <= MAX_TIMESTAMP_STEP_MS {
            self.last_out += step;
            if step > 0 {
                self.last_forward_step = step;
            }
        } else {
            self.last_out += self.last_forward_step;
        }
        self.last_out
    }
}

#[derive(Debug)]
struct PendingVideo {
    dts_ms: i64,
    composition_offset_ms: i32,
    keyframe: bool,
    data: Bytes,
}

/// What the segment being cut has had so far.
#[derive(Debug)]
struct OpenSegment {
    start_ms: i64,
    parts: u32,
    duration_secs: f64,
    video_frames: usize,
    discontinuity: bool,
}

#[derive(Debug)]
pub struct Segmenter {
    target_ms: i64,
    part_target_ms: i64,
    timeline: Timeline,
    video_config: Option<VideoConfig>,
    audio_config: Option<AudioConfig>,
    tracks: Option<Tracks>,
    tracks_changed: bool,
    segment: Option<OpenSegment>,
    part_start_ms: Option<i64>,
    pending_video: Vec<PendingVideo>,
    pending_audio: Vec<(i64, Bytes)>,
    pending_bytes: usize,
    last_video_dts_ms: Option<i64>,
    /// The last step between video frames: how long the last frame is taken to last.
    video_step_ms: i64,
    audio_next_sample: Option<u64>,
    first_audio_ms: Option<i64>,
    next_index: u64,
    /// Timeline origin, so segment times start near 0 even if the first frame is late.
    origin_ms: Option<i64>,
    /// Where this publisher's timeline starts on the recording's: non-zero when it
    /// continues a recording, so decode times keep increasing across publishers.
    resume_at_ms: i64,
}

impl Segmenter {
    /// Segments of about `target_ms`, starting at index 1 (LL-HLS media sequence
    /// numbers start at 1), in parts of at most `part_target_ms`.
    pub fn new(target_ms: u64, part_target_ms: u64) -> Self {
        let target_ms = target_ms.max(100) as i64;
        Self {
            target_ms,
            part_target_ms: (part_target_ms.max(50) as i64).min(target_ms),
            timeline: Timeline::default(),
            video_config: None,
            audio_config: None,
            tracks: None,
            tracks_changed: false,
            segment: None,
            part_start_ms: None,
            pending_video: Vec::new(),
            pending_audio: Vec::new(),
            pending_bytes: 0,
            last_video_dts_ms: None,
            video_step_ms: 33,
            audio_next_sample: None,
            first_audio_ms: None,
            next_index: 1,
            origin_ms: None,
            resume_at_ms: 0,
        }
    }

    /// A segmenter that continues a recording: segment indexes from `first_index`,
    /// times from `start_ms`, and a discontinuity before the first segment (new
    /// encoder, new tracks).
    pub fn resume(target_ms: u64, part_target_ms: u64, first_index: u64, start_ms: u64) -> Self {
        Self {
            next_index: first_index,
            resume_at_ms: i64::try_from(start_ms).unwrap_or(i64::MAX / 2),
            tracks_changed: true,
            ..Self::new(target_ms, part_target_ms)
        }
    }

    pub fn push_video(&mut self, timestamp: u32, packet: VideoPacket) -> Vec<SegmenterEvent> {
        let mut events = Vec::new();
        let dts_ms = self.timeline.map(timestamp);
        match packet {
            VideoPacket::Config(config) => {
                if self.video_config.as_ref() != Some(&config) {
                    self.video_config = Some(config);
                    if self.tracks.is_some() {
                        self.restart_tracks(&mut events);
                    }
                }
            }
            VideoPacket::Frame {
                keyframe,
                composition_offset,
                data,
            } => {
                if self.video_config.is_none() {
                    return events;
                }
                if self.tracks.is_none() {
                    if !keyframe {
                        return events;
                    }
                    self.start_tracks(&mut events);
                    // Segments start on this keyframe; earlier audio has no video to
                    // accompany it.
                    self.pending_audio.retain(|(t, _)| *t >= dts_ms);
                    self.pending_bytes = self.pending_audio_bytes();
                }
                if self.tracks.as_ref().is_some_and(|t| t.video.is_none()) {
                    return events;
                }
                if self.segment.is_none() && !keyframe {
                    return events;
                }
                // Decode times must increase strictly within a track.
                let dts_ms = match self.last_video_dts_ms {
                    Some(last) if dts_ms <= last => last + 1,
                    _ => dts_ms,
                };
                if let Some(last) = self.last_video_dts_ms {
                    self.video_step_ms = dts_ms - last;
                }
                let step = self.video_step_ms;
                if keyframe {
                    self.cut_segment_if_due(dts_ms, &mut events);
                }
                self.cut_part_if_due(dts_ms, step, &mut events);
                self.open_segment(dts_ms);
                self.last_video_dts_ms = Some(dts_ms);
                self.pending_bytes += data.len() + FRAME_OVERHEAD;
                self.pending_video.push(PendingVideo {
                    dts_ms,
                    composition_offset_ms: composition_offset,
                    keyframe,
                    data,
                });
            }
            VideoPacket::EndOfSequence | VideoPacket::Ignored => {}
        }
        events
    }

    pub fn push_audio(&mut self, timestamp: u32, packet: AudioPacket) -> Vec<SegmenterEvent> {
        let mut events = Vec::new();
        let ts_ms = self.timeline.map(timestamp);
        match packet {
            AudioPacket::Config(config) => {
                if self.audio_config.as_ref() != Some(&config) {
                    self.audio_config = Some(config);
                    if self.tracks.is_some() {
                        self.restart_tracks(&mut events);
                    }
                }
            }
            AudioPacket::Frame(data) => {
                if self.audio_config.is_none() {
                    return events;
                }
                if self.tracks.is_none() {
                    // Pre-roll: kept until we know whether video is coming, so an
                    // audio-only stream loses nothing; bounded to twice the wait.
                    self.pending_audio.push((ts_ms, data));
                    self.pending_audio
                        .retain(|(t, _)| ts_ms - *t <= 2 * AUDIO_ONLY_AFTER_MS);
                    let first = *self.first_audio_ms.get_or_insert(ts_ms);
                    if self.video_config.is_none() && ts_ms - first >= AUDIO_ONLY_AFTER_MS {
                        self.start_tracks(&mut events);
                        if let Some(start) = self.pending_audio.first().map(|(t, _)| *t) {
                            self.open_segment(start);
                        }
                        self.pending_bytes = self.pending_audio_bytes();
                        // The pre-roll holds several parts' worth.
                        let frame_ms = self.audio_frame_ms().max(1);
                        while let Some(start) = self.part_start_ms {
                            let over = self
                                .pending_audio
                                .iter()
                                .map(|(t, _)| *t)
                                .find(|t| *t + frame_ms - start > self.part_target_ms);
                            match over {
                                Some(end) if end > start => self.cut_part(end, &mut events),
                                _ => break,
                            }
                        }
                    }
                    return events;
                }
                let audio_only = self.tracks.as_ref().is_some_and(|t| t.video.is_none());
                if audio_only {
                    self.cut_segment_if_due(ts_ms, &mut events);
                    self.cut_part_if_due(ts_ms, self.audio_frame_ms(), &mut events);
                    self.open_segment(ts_ms);
                } else if self.pending_bytes > MAX_PART_BYTES {
                    // Audio while the video stalls: cut, and drop audio until the next
                    // keyframe rather than hold it without bound.
                    self.cut_segment(ts_ms, &mut events);
                }
                if !audio_only && self.segment.is_none() {
                    // Video leads: audio before the first keyframe has nowhere to go.
                    return events;
                }
                self.pending_bytes += data.len() + FRAME_OVERHEAD;
                self.pending_audio.push((ts_ms, data));
            }
        }
        events
    }

    /// What the pending audio counts against `MAX_PART_BYTES`.
    fn pending_audio_bytes(&self) -> usize {
        self.pending_audio
            .iter()
            .map(|(_, d)| d.len() + FRAME_OVERHEAD)
            .sum()
    }

    fn audio_frame_ms(&self) -> i64 {
        self.audio_config.as_ref().map_or(21, |c| {
            i64::from(AAC_FRAME_SAMPLES) * 1000 / i64::from(c.sample_rate.max(1))
        })
    }

    /// Ends the stream: the last part and the end of the last, possibly short, segment.
    pub fn finish(&mut self) -> Vec<SegmenterEvent> {
        let mut events = Vec::new();
        if let Some(end) = self.estimated_end_ms() {
            self.cut_segment(end, &mut events);
        }
        events
    }

    fn start_tracks(&mut self, events: &mut Vec<SegmenterEvent>) {
        let tracks = Tracks {
            video: self.video_config.clone(),
            audio: self.audio_config.clone(),
        };
        self.tracks = Some(tracks.clone());
        events.push(SegmenterEvent::Tracks(tracks));
    }

    fn restart_tracks(&mut self, events: &mut Vec<SegmenterEvent>) {
        events.extend(self.finish());
        self.tracks = None;
        self.tracks_changed = true;
        self.last_video_dts_ms = None;
        self.audio_next_sample = None;
        self.first_audio_ms = None;
    }

    fn open_segment(&mut self, start_ms: i64) {
        if self.segment.is_none() {
            self.segment = Some(OpenSegment {
                start_ms,
                parts: 0,
                duration_secs: 0.0,
                video_frames: 0,
                discontinuity: std::mem::take(&mut self.tracks_changed),
            });
        }
        self.part_start_ms.get_or_insert(start_ms);
    }

    fn cut_segment_if_due(&mut self, now_ms: i64, events: &mut Vec<SegmenterEvent>) {
        let Some(segment) = &self.segment else {
            return;
        };
        // Encoders place keyframes on frame boundaries (60 frames at 33 ms is 1.98 s), so
        // a keyframe within a tenth of the target is close enough to cut on.
        if now_ms - segment.start_ms >= self.target_ms - self.target_ms / 10 {
            self.cut_segment(now_ms, events);
        }
    }

    /// Closes the pending part at `now_ms` if a frame lasting `step_ms` from there would
    /// take it past the part target, or it holds too many bytes.
    fn cut_part_if_due(&mut self, now_ms: i64, step_ms: i64, events: &mut Vec<SegmenterEvent>) {
        let Some(start) = self.part_start_ms else {
            return;
        };
        let over_target = now_ms + step_ms.max(1) - start > self.part_target_ms;
        if over_target || self.pending_bytes > MAX_PART_BYTES {
            self.cut_part(now_ms, events);
        }
    }

    /// Closes the pending part and its segment at `end_ms` (exclusive).
    fn cut_segment(&mut self, end_ms: i64, events: &mut Vec<SegmenterEvent>) {
        self.cut_part(end_ms, events);
        let Some(segment) = self.segment.take() else {
            return;
        };
        self.part_start_ms = None;
        if segment.parts == 0 {
            return;
        }
        let origin = self.origin_ms.unwrap_or(segment.start_ms) - self.resume_at_ms;
        let index = self.next_index;
        self.next_index += 1;
        events.push(SegmenterEvent::SegmentEnd(SegmentEnd {
            index,
            start_ms: (segment.start_ms - origin).max(0) as u64,
            duration_secs: segment.duration_secs,
            parts: segment.parts,
            video_frames: segment.video_frames,
            discontinuity: segment.discontinuity,
        }));
    }

    fn estimated_end_ms(&self) -> Option<i64> {
        if let Some(last) = self.pending_video.last() {
            return Some(last.dts_ms + self.video_step_ms.max(1));
        }
        if let Some((last, _)) = self.pending_audio.last() {
            return Some(last + self.audio_frame_ms().max(1));
        }
        // Nothing pending: the segment ends where its last part did.
        self.part_start_ms.filter(|_| self.segment.is_some())
    }

    /// Closes the pending part at `end_ms` (exclusive); audio from `end_ms` on stays for
    /// the next part.
    fn cut_part(&mut self, end_ms: i64, events: &mut Vec<SegmenterEvent>) {
        let (Some(segment_start_ms), Some(start_ms)) = (
            self.segment.as_ref().map(|s| s.start_ms),
            self.part_start_ms,
        ) else {
            return;
        };
        let origin = *self.origin_ms.get_or_insert(segment_start_ms) - self.resume_at_ms;
        let video_frames = std::mem::take(&mut self.pending_video);
        let split = self
            .pending_audio
            .iter()
            .position(|(ts, _)| *ts >= end_ms)
            .unwrap_or(self.pending_audio.len());
        let audio_frames: Vec<_> = self.pending_audio.drain(..split).collect();
        self.pending_bytes = self.pending_audio_bytes();
        self.part_start_ms = Some(end_ms.max(start_ms));
        if video_frames.is_empty() && audio_frames.is_empty() {
            return;
        }

        let to_90k = |ms: i64| ((ms - origin).max(0) as u64) * u64::from(VIDEO_TIMESCALE) / 1000;
        let mut video = Vec::with_capacity(video_frames.len());
        for (i, frame) in video_frames.iter().enumerate() {
            let next_ms = video_frames.get(i + 1).map_or(end_ms, |f| f.dts_ms);
            let dts = to_90k(frame.dts_ms);
            video.push(Sample {
                dts,
                duration: (to_90k(next_ms).saturating_sub(dts)).max(1) as u32,
                composition_offset: frame.composition_offset_ms.saturating_mul(90),
                keyframe: frame.keyframe,
                data: frame.data.clone(),
            });
        }

        let mut audio = Vec::with_capacity(audio_frames.len());
        if let Some(config) = &self.audio_config {
            let rate = u64::from(config.sample_rate);
            for (ts_ms, data) in audio_frames {
                // Count samples for exact AAC timing; resync only if the publisher's
                // clock drifts by more than a couple of frames.
                let from_clock = (ts_ms - origin).max(0) as u64 * rate / 1000;
                let dts = match self.audio_next_sample {
                    Some(next) if next.abs_diff(from_clock) <= 2 * u64::from(AAC_FRAME_SAMPLES) => {
                        next
                    }
                    _ => from_clock,
                };
                self.audio_next_sample = Some(dts + u64::from(AAC_FRAME_SAMPLES));
                audio.push(Sample {
                    dts,
                    duration: AAC_FRAME_SAMPLES,
                    composition_offset: 0,
                    keyframe: true,
                    data,
                });
            }
        }

        let duration_secs = match (video.first(), audio.first(), &self.audio_config) {
            (Some(_), _, _) => {
                video.iter().map(|s| u64::from(s.duration)).sum::<u64>() as f64
                    / f64::from(VIDEO_TIMESCALE)
            }
            (None, Some(_), Some(config)) => {
                audio.len() as f64 * f64::from(AAC_FRAME_SAMPLES) / f64::from(config.sample_rate)
            }
            _ => 0.0,
        };
        let independent = video.first().is_none_or(|v| v.keyframe);
        let bytes = video.iter().chain(&audio).map(|s| s.data.len()).sum();
        let Some(segment) = self.segment.as_mut() else {
            return;
        };
        let index = segment.parts;
        segment.parts += 1;
        segment.duration_secs += duration_secs;
        segment.video_frames += video.len();
        events.push(SegmenterEvent::Part(MediaPart {
            segment: self.next_index,
            index,
            start_ms: (start_ms - origin).max(0) as u64,
            duration_secs,
            video,
            audio,
            independent,
            discontinuity: index == 0 && segment.discontinuity,
            bytes,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::VideoCodec;

    fn video_config() -> VideoConfig {
        VideoConfig {
            codec: VideoCodec::H264,
            record: Bytes::from_static(&[1, 100, 0, 31]),
            parameter_sets: vec![],
            nal_length_size: 4,
            width: 1280,
            height: 720,
            codec_string: "avc1.64001f".into(),
        }
    }

    fn frame(keyframe: bool) -> VideoPacket {
        VideoPacket::Frame {
            keyframe,
            composition_offset: 0,
            data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
        }
    }

    /// A segment as its parts, checked to be whole: parts numbered from 0, in one
    /// segment, adding up to the segment's duration.
    #[derive(Debug)]
    struct Segment {
        end: SegmentEnd,
        parts: Vec<MediaPart>,
        video: Vec<Sample>,
        audio: Vec<Sample>,
    }

    fn segments(events: impl IntoIterator<Item = SegmenterEvent>) -> Vec<Segment> {
        let mut out = Vec::new();
        let mut parts: Vec<MediaPart> = Vec::new();
        for event in events {
            match event {
                SegmenterEvent::Part(part) => parts.push(part),
                SegmenterEvent::SegmentEnd(end) => {
                    let parts = std::mem::take(&mut parts);
                    assert_eq!(parts.len() as u32, end.parts);
                    for (i, part) in parts.iter().enumerate() {
                        assert_eq!((part.segment, part.index), (end.index, i as u32));
                    }
                    let sum: f64 = parts.iter().map(|p| p.duration_secs).sum();
                    assert!((sum - end.duration_secs).abs() < 1e-9);
                    let video = parts.iter().flat_map(|p| p.video.clone()).collect();
                    let audio = parts.iter().flat_map(|p| p.audio.clone()).collect();
                    out.push(Segment {
                        end,
                        parts,
                        video,
                        audio,
                    });
                }
                SegmenterEvent::Tracks(_) => {}
            }
        }
        assert!(parts.is_empty(), "parts after the last segment end");
        out
    }

    fn run(timestamps: impl Iterator<Item = u32>) -> Vec<Segment> {
        let mut s = Segmenter::new(2000, DEFAULT_PART_TARGET_MS);
        let mut events = s.push_video(0, VideoPacket::Config(video_config()));
        for (i, ts) in timestamps.enumerate() {
            events.extend(s.push_video(ts, frame(i % 60 == 0)));
        }
        events.extend(s.finish());
        segments(events)
    }

    #[test]
    fn cuts_on_keyframes_at_target_and_keeps_every_frame() {
        // 30 fps, keyframe every 60 frames: 2 s segments.
        let segments = run((0..300).map(|i| i * 1000 / 30));
        assert_eq!(segments.len(), 5);
        assert_eq!(
            segments[0].end.index, 1,
            "media sequence numbers start at 1"
        );
        assert_eq!(segments.iter().map(|s| s.video.len()).sum::<usize>(), 300);
        for s in &segments {
            assert!(
                (s.end.duration_secs - 2.0).abs() < 0.05,
                "{}",
                s.end.duration_secs
            );
            assert!(s.video[0].keyframe);
            assert_eq!(s.end.video_frames, s.video.len());
        }
    }

    #[test]
    fn parts_hold_at_most_the_part_target_and_only_the_first_is_independent() {
        let segments = run((0..300).map(|i| i * 1000 / 30));
        for s in &segments {
            // Ten frames of 33.3 ms in each part of a 2 s segment.
            assert_eq!(
                s.parts.len(),
                6,
                "{:?}",
                s.parts.iter().map(|p| p.video.len()).collect::<Vec<_>>()
            );
            for part in &s.parts {
                assert!(part.duration_secs <= 0.334 + 1e-9, "{}", part.duration_secs);
                assert_eq!(part.video.len(), 10);
                assert_eq!(part.independent, part.index == 0);
                assert_eq!(part.independent, part.video[0].keyframe);
            }
        }
        // Parts abut: each starts where the previous one ended.
        let parts: Vec<_> = segments.iter().flat_map(|s| &s.parts).collect();
        for pair in parts.windows(2) {
            let end = pair[0].video[0].dts
                + pair[0]
                    .video
                    .iter()
                    .map(|v| u64::from(v.duration))
                    .sum::<u64>();
            assert_eq!(pair[1].video[0].dts, end);
        }
    }

    #[test]
    fn frames_are_released_part_by_part() {
        // Nothing older than the current part is held: after each frame the pending
        // frames span less than a part target.
        let mut s = Segmenter::new(6000, 500);
        s.push_video(0, VideoPacket::Config(video_config()));
        for i in 0..600u32 {
            s.push_video(i * 1000 / 30, frame(i % 180 == 0));
            let held = s.pending_video.len();
            assert!(held <= 15, "{held} frames held at frame {i}");
        }
    }

    #[test]
    fn audio_only_streams_keep_their_first_frames() {
        let asc = crate::codec::AudioConfig::parse(Bytes::from_static(&[0x12, 0x10])).unwrap();
        let mut s = Segmenter::new(2000, DEFAULT_PART_TARGET_MS);
        let mut events = s.push_audio(0, AudioPacket::Config(asc));
        for i in 0..431u32 {
            events.extend(s.push_audio(
                i * 1024 * 1000 / 44100,
                AudioPacket::Frame(Bytes::from_static(&[1, 2, 3])),
            ));
        }
        events.extend(s.finish());
        let segments = segments(events);
        assert_eq!(segments.iter().map(|s| s.audio.len()).sum::<usize>(), 431);
        for part in segments.iter().flat_map(|s| &s.parts) {
            assert!(part.independent);
            assert!(part.duration_secs <= 0.334 + 1e-9, "{}", part.duration_secs);
        }
    }

    #[test]
    fn timestamp_wrap_and_jumps_keep_the_timeline_continuous() {
        let start = u32::MAX - 3000;
        let wrapped = run((0..300u32).map(|i| start.wrapping_add(i * 1000 / 30)));
        let jumped = run((0..300u32).map(|i| if i < 150 { i * 33 } else { 500_000 + i * 33 }));
        let reset = run((0..300u32).map(|i| if i < 150 { 90_000 + i * 33 } else { i * 33 }));
        for segments in [wrapped, jumped, reset] {
            let mut expected_dts = 0;
            for s in &segments {
                assert_eq!(s.video[0].dts, expected_dts, "segments must abut");
                expected_dts =
                    s.video[0].dts + s.video.iter().map(|v| u64::from(v.duration)).sum::<u64>();
                assert!(s.end.duration_secs > 0.0 && s.end.duration_secs < 3.0);
            }
            assert_eq!(segments.iter().map(|s| s.video.len()).sum::<usize>(), 300);
        }
    }

    #[test]
    fn a_new_codec_configuration_starts_new_tracks_after_a_discontinuity() {
        let mut s = Segmenter::new(2000, DEFAULT_PART_TARGET_MS);
        let mut events = s.push_video(0, VideoPacket::Config(video_config()));
        for i in 0..90u32 {
            events.extend(s.push_video(i * 33, frame(i % 60 == 0)));
        }
        let mut smaller = video_config();
        smaller.width = 640;
        smaller.record = Bytes::from_static(&[1, 66, 0, 30]);
        events.extend(s.push_video(2970, VideoPacket::Config(smaller.clone())));
        for i in 90..200u32 {
            events.extend(s.push_video(i * 33, frame(i % 60 == 30)));
        }
        events.extend(s.finish());
        let tracks: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                SegmenterEvent::Tracks(t) => t.video.as_ref().map(|v| v.width),
                _ => None,
            })
            .collect();
        assert_eq!(tracks, [1280, 640]);
        let segments: Vec<_> = segments(events)
            .iter()
            .map(|seg| {
                assert_eq!(seg.parts[0].discontinuity, seg.end.discontinuity);
                (seg.end.discontinuity, seg.video.len())
            })
            .collect();
        // 60 + 30 frames before the change (the second cut short by it), then a
        // discontinuity and 110 frames starting on the next keyframe.
        assert_eq!(
            segments,
            [(false, 60), (false, 30), (true, 60), (false, 50)]
        );
    }

    #[test]
    fn floods_of_empty_video_or_tiny_audio_frames_are_cut_not_held() {
        // Without keyframes or data nothing would ever close the segment: every frame
        // counts against the segment's memory cap. Found by review, not by the fuzzer
        // (its inputs are too short to get there).
        let asc = crate::codec::AudioConfig::parse(Bytes::from_static(&[0x12, 0x10])).unwrap();
        for audio in [false, true] {
            let mut s = Segmenter::new(2000, DEFAULT_PART_TARGET_MS);
            s.push_video(0, VideoPacket::Config(video_config()));
            s.push_audio(0, AudioPacket::Config(asc.clone()));
            s.push_video(0, frame(true));
            let mut cut = false;
            for i in 0..1_200_000u32 {
                let events = if audio {
                    s.push_audio(i / 1000, AudioPacket::Frame(Bytes::from_static(&[1])))
                } else {
                    let empty = VideoPacket::Frame {
                        keyframe: false,
                        composition_offset: 0,
                        data: Bytes::new(),
                    };
                    s.push_video(i / 1000, empty)
                };
                cut |= events.iter().any(|e| matches!(e, SegmenterEvent::Part(_)));
            }
            let pending = s.pending_video.len() + s.pending_audio.len();
            assert!(
                cut && pending < 1 << 20,
                "audio {audio}: {pending} frames pending"
            );
        }
    }

    #[test]
    fn a_resumed_recording_continues_its_timeline_after_a_discontinuity() {
        let mut segmenter = Segmenter::resume(2000, DEFAULT_PART_TARGET_MS, 7, 14_000);
        let mut events = segmenter.push_video(500, VideoPacket::Config(video_config()));
        for ms in (0..4100).step_by(100) {
            events.extend(segmenter.push_video(500 + ms, frame(ms % 2000 == 0)));
        }
        events.extend(segmenter.finish());
        let segments = segments(events);
        assert_eq!(segments[0].end.index, 7);
        assert!(segments[0].end.discontinuity && !segments[1].end.discontinuity);
        assert_eq!(segments[0].end.start_ms, 14_000);
        assert_eq!(segments[0].video[0].dts, 14_000 * 90);
        assert_eq!(segments[1].end.start_ms, 16_000);
    }
}
