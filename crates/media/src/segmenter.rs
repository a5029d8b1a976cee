//! Turns the media pipeline's input (codec configurations and access units on one 90 kHz
//! timeline, from any protocol's front end) into HLS segments made of parts: segments cut on
//! keyframes near the target duration, and each segment cut into parts (the partial
//! segments of LL-HLS) of at most the part target as frames arrive, so that no more than
//! one part's frames are ever held: a part is muxed, served and written the moment its
//! last frame's duration is known.

use bytes::Bytes;

use crate::codec::{AudioConfig, VideoConfig, AAC_FRAME_SAMPLES};
use crate::input::{AudioFrame, MediaInput, VideoFrame, TICKS_PER_MS};

pub const VIDEO_TIMESCALE: u32 = crate::input::TIMESCALE;
/// With no video config after this much audio (in ticks), the stream is audio-only.
const AUDIO_ONLY_AFTER: i64 = 2_000 * TICKS_PER_MS;
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

#[derive(Debug)]
struct PendingVideo {
    dts: i64,
    composition_offset: i32,
    keyframe: bool,
    data: Bytes,
}

/// What the segment being cut has had so far.
#[derive(Debug)]
struct OpenSegment {
    start: i64,
    parts: u32,
    duration_secs: f64,
    video_frames: usize,
    discontinuity: bool,
}

#[derive(Debug)]
pub struct Segmenter {
    /// Durations and times below are in ticks of the input's timescale.
    target: i64,
    part_target: i64,
    video_config: Option<VideoConfig>,
    audio_config: Option<AudioConfig>,
    tracks: Option<Tracks>,
    tracks_changed: bool,
    segment: Option<OpenSegment>,
    part_start: Option<i64>,
    pending_video: Vec<PendingVideo>,
    pending_audio: Vec<(i64, Bytes)>,
    pending_bytes: usize,
    last_video_dts: Option<i64>,
    /// The last step between video frames: how long the last frame is taken to last.
    video_step: i64,
    audio_next_sample: Option<u64>,
    first_audio: Option<i64>,
    next_index: u64,
    /// Timeline origin, so segment times start near 0 even if the first frame is late.
    origin: Option<i64>,
    /// Where this publisher's timeline starts on the recording's: non-zero when it
    /// continues a recording, so decode times keep increasing across publishers.
    resume_at: i64,
}

impl Segmenter {
    /// Segments of about `target_ms`, starting at index 1 (LL-HLS media sequence
    /// numbers start at 1), in parts of at most `part_target_ms`.
    pub fn new(target_ms: u64, part_target_ms: u64) -> Self {
        let target_ms = target_ms.max(100) as i64;
        Self {
            target: target_ms * TICKS_PER_MS,
            part_target: (part_target_ms.max(50) as i64).min(target_ms) * TICKS_PER_MS,
            video_config: None,
            audio_config: None,
            tracks: None,
            tracks_changed: false,
            segment: None,
            part_start: None,
            pending_video: Vec::new(),
            pending_audio: Vec::new(),
            pending_bytes: 0,
            last_video_dts: None,
            video_step: 33 * TICKS_PER_MS,
            audio_next_sample: None,
            first_audio: None,
            next_index: 1,
            origin: None,
            resume_at: 0,
        }
    }

    /// A segmenter that continues a recording: segment indexes from `first_index`,
    /// times from `start_ms`, and a discontinuity before the first segment (new
    /// encoder, new tracks).
    pub fn resume(target_ms: u64, part_target_ms: u64, first_index: u64, start_ms: u64) -> Self {
        Self {
            next_index: first_index,
            resume_at: i64::try_from(start_ms)
                .unwrap_or(i64::MAX / 2)
                .saturating_mul(TICKS_PER_MS),
            tracks_changed: true,
            ..Self::new(target_ms, part_target_ms)
        }
    }

    /// Takes one input of the pipeline, from whichever protocol's front end.
    pub fn push(&mut self, input: MediaInput) -> Vec<SegmenterEvent> {
        let mut events = Vec::new();
        match input {
            MediaInput::VideoConfig(config) => {
                if self.video_config.as_ref() != Some(&config) {
                    self.video_config = Some(config);
                    if self.tracks.is_some() {
                        self.restart_tracks(&mut events);
                    }
                }
            }
            MediaInput::AudioConfig(config) => {
                if self.audio_config.as_ref() != Some(&config) {
                    self.audio_config = Some(config);
                    if self.tracks.is_some() {
                        self.restart_tracks(&mut events);
                    }
                }
            }
            MediaInput::Video(frame) => self.push_video(frame, &mut events),
            MediaInput::Audio(frame) => self.push_audio(frame, &mut events),
        }
        events
    }

    fn push_video(&mut self, frame: VideoFrame, events: &mut Vec<SegmenterEvent>) {
        let VideoFrame {
            dts,
            composition_offset,
            keyframe,
            data,
        } = frame;
        if self.video_config.is_none() {
            return;
        }
        if self.tracks.is_none() {
            if !keyframe {
                return;
            }
            self.start_tracks(events);
            // Segments start on this keyframe; earlier audio has no video to
            // accompany it.
            self.pending_audio.retain(|(t, _)| *t >= dts);
            self.pending_bytes = self.pending_audio_bytes();
        }
        if self.tracks.as_ref().is_some_and(|t| t.video.is_none()) {
            return;
        }
        if self.segment.is_none() && !keyframe {
            return;
        }
        // Decode times must increase strictly within a track (by a millisecond,
        // the finest step RTMP has).
        let dts = match self.last_video_dts {
            Some(last) if dts <= last => last + TICKS_PER_MS,
            _ => dts,
        };
        if let Some(last) = self.last_video_dts {
            self.video_step = dts - last;
        }
        let step = self.video_step;
        if keyframe {
            self.cut_segment_if_due(dts, events);
        }
        self.cut_part_if_due(dts, step, events);
        self.open_segment(dts);
        self.last_video_dts = Some(dts);
        self.pending_bytes += data.len() + FRAME_OVERHEAD;
        self.pending_video.push(PendingVideo {
            dts,
            composition_offset,
            keyframe,
            data,
        });
    }

    fn push_audio(&mut self, frame: AudioFrame, events: &mut Vec<SegmenterEvent>) {
        let AudioFrame { pts, data } = frame;
        if self.audio_config.is_none() {
            return;
        }
        if self.tracks.is_none() {
            // Pre-roll: kept until we know whether video is coming, so an
            // audio-only stream loses nothing; bounded to twice the wait.
            self.pending_audio.push((pts, data));
            self.pending_audio
                .retain(|(t, _)| pts - *t <= 2 * AUDIO_ONLY_AFTER);
            let first = *self.first_audio.get_or_insert(pts);
            if self.video_config.is_none() && pts - first >= AUDIO_ONLY_AFTER {
                self.start_tracks(events);
                if let Some(start) = self.pending_audio.first().map(|(t, _)| *t) {
                    self.open_segment(start);
                }
                self.pending_bytes = self.pending_audio_bytes();
                // The pre-roll holds several parts' worth.
                let frame = self.audio_frame_ticks().max(1);
                while let Some(start) = self.part_start {
                    let over = self
                        .pending_audio
                        .iter()
                        .map(|(t, _)| *t)
                        .find(|t| *t + frame - start > self.part_target);
                    match over {
                        Some(end) if end > start => self.cut_part(end, events),
                        _ => break,
                    }
                }
            }
            return;
        }
        let audio_only = self.tracks.as_ref().is_some_and(|t| t.video.is_none());
        if audio_only {
            self.cut_segment_if_due(pts, events);
            self.cut_part_if_due(pts, self.audio_frame_ticks(), events);
            self.open_segment(pts);
        } else if self.pending_bytes > MAX_PART_BYTES {
            // Audio while the video stalls: cut, and drop audio until the next
            // keyframe rather than hold it without bound.
            self.cut_segment(pts, events);
        }
        if !audio_only && self.segment.is_none() {
            // Video leads: audio before the first keyframe has nowhere to go.
            return;
        }
        self.pending_bytes += data.len() + FRAME_OVERHEAD;
        self.pending_audio.push((pts, data));
    }

    /// What the pending audio counts against `MAX_PART_BYTES`.
    fn pending_audio_bytes(&self) -> usize {
        self.pending_audio
            .iter()
            .map(|(_, d)| d.len() + FRAME_OVERHEAD)
            .sum()
    }

    fn audio_frame_ticks(&self) -> i64 {
        match self.audio_config.as_ref() {
            // Opus: 20 ms, what WebRTC and ffmpeg send (each frame says its own length).
            Some(c) if c.fixed_frame_samples().is_none() => 20 * TICKS_PER_MS,
            // In whole milliseconds, as RTMP timestamps step (and as the segmenter has
            // always estimated it: RTMP streams are cut exactly as before).
            config => {
                config.map_or(21, |c| {
                    i64::from(AAC_FRAME_SAMPLES) * 1000 / i64::from(c.sample_rate.max(1))
                }) * TICKS_PER_MS
            }
        }
    }

    /// A part's audio frames as samples in the track's timescale (its sample rate).
    /// Fixed-size frames (AAC) are counted for exact timing, resynchronised only if the
    /// publisher's clock drifts by more than a couple of frames. Frames that say their own
    /// length (Opus) sit where their timestamps put them, each lasting until the next
    /// (so a lost packet is a longer sample, not a shift of those after it), the last
    /// as long as it says.
    fn audio_samples(
        &mut self,
        config: AudioConfig,
        origin: i64,
        frames: Vec<(i64, Bytes)>,
    ) -> Vec<Sample> {
        let rate = u64::from(config.sample_rate);
        let to_samples =
            |pts: i64| (pts - origin).max(0) as u64 * rate / u64::from(VIDEO_TIMESCALE);
        let mut audio: Vec<Sample> = Vec::with_capacity(frames.len());
        if let Some(fixed) = config.fixed_frame_samples() {
            for (pts, data) in frames {
                let from_clock = to_samples(pts);
                let dts = match self.audio_next_sample {
                    Some(next) if next.abs_diff(from_clock) <= 2 * u64::from(fixed) => next,
                    _ => from_clock,
                };
                self.audio_next_sample = Some(dts + u64::from(fixed));
                audio.push(Sample {
                    dts,
                    duration: fixed,
                    composition_offset: 0,
                    keyframe: true,
                    data,
                });
            }
            return audio;
        }
        for (pts, data) in frames {
            let said = config.frame_samples(&data);
            // Never before the end of the previous frame; a frame that says nothing
            // (malformed) lasts as long as the one before it.
            let from_clock = to_samples(pts);
            let dts = self
                .audio_next_sample
                .map_or(from_clock, |next| from_clock.max(next));
            if let Some(previous) = audio.last_mut() {
                previous.duration = u32::try_from(dts - previous.dts).unwrap_or(u32::MAX).max(1);
            }
            let duration = said
                .or(audio.last().map(|s| s.duration))
                .unwrap_or(960)
                .max(1);
            self.audio_next_sample = Some(dts + u64::from(duration));
            audio.push(Sample {
                dts,
                duration,
                composition_offset: 0,
                keyframe: true,
                data,
            });
        }
        audio
    }

    /// Ends the stream: the last part and the end of the last, possibly short, segment.
    pub fn finish(&mut self) -> Vec<SegmenterEvent> {
        let mut events = Vec::new();
        if let Some(end) = self.estimated_end() {
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
        self.last_video_dts = None;
        self.audio_next_sample = None;
        self.first_audio = None;
    }

    fn open_segment(&mut self, start: i64) {
        if self.segment.is_none() {
            self.segment = Some(OpenSegment {
                start,
                parts: 0,
                duration_secs: 0.0,
                video_frames: 0,
                discontinuity: std::mem::take(&mut self.tracks_changed),
            });
        }
        self.part_start.get_or_insert(start);
    }

    fn cut_segment_if_due(&mut self, now: i64, events: &mut Vec<SegmenterEvent>) {
        let Some(segment) = &self.segment else {
            return;
        };
        // Encoders place keyframes on frame boundaries (60 frames at 33 ms is 1.98 s), so
        // a keyframe within a tenth of the target is close enough to cut on.
        if now - segment.start >= self.target - self.target / 10 {
            self.cut_segment(now, events);
        }
    }

    /// Closes the pending part at `now` if a frame lasting `step` from there would
    /// take it past the part target, or it holds too many bytes.
    fn cut_part_if_due(&mut self, now: i64, step: i64, events: &mut Vec<SegmenterEvent>) {
        let Some(start) = self.part_start else {
            return;
        };
        let over_target = now + step.max(1) - start > self.part_target;
        if over_target || self.pending_bytes > MAX_PART_BYTES {
            self.cut_part(now, events);
        }
    }

    /// Closes the pending part and its segment at `end` (exclusive).
    fn cut_segment(&mut self, end: i64, events: &mut Vec<SegmenterEvent>) {
        self.cut_part(end, events);
        let Some(segment) = self.segment.take() else {
            return;
        };
        self.part_start = None;
        if segment.parts == 0 {
            return;
        }
        let origin = self.origin.unwrap_or(segment.start) - self.resume_at;
        let index = self.next_index;
        self.next_index += 1;
        events.push(SegmenterEvent::SegmentEnd(SegmentEnd {
            index,
            start_ms: ((segment.start - origin).max(0) / TICKS_PER_MS) as u64,
            duration_secs: segment.duration_secs,
            parts: segment.parts,
            video_frames: segment.video_frames,
            discontinuity: segment.discontinuity,
        }));
    }

    fn estimated_end(&self) -> Option<i64> {
        if let Some(last) = self.pending_video.last() {
            return Some(last.dts + self.video_step.max(1));
        }
        if let Some((last, _)) = self.pending_audio.last() {
            return Some(last + self.audio_frame_ticks().max(1));
        }
        // Nothing pending: the segment ends where its last part did.
        self.part_start.filter(|_| self.segment.is_some())
    }

    /// Closes the pending part at `end` (exclusive); audio from `end` on stays for
    /// the next part.
    fn cut_part(&mut self, end: i64, events: &mut Vec<SegmenterEvent>) {
        let (Some(segment_start), Some(start)) =
            (self.segment.as_ref().map(|s| s.start), self.part_start)
        else {
            return;
        };
        let origin = *self.origin.get_or_insert(segment_start) - self.resume_at;
        let video_frames = std::mem::take(&mut self.pending_video);
        let split = self
            .pending_audio
            .iter()
            .position(|(ts, _)| *ts >= end)
            .unwrap_or(self.pending_audio.len());
        let audio_frames: Vec<_> = self.pending_audio.drain(..split).collect();
        self.pending_bytes = self.pending_audio_bytes();
        self.part_start = Some(end.max(start));
        if video_frames.is_empty() && audio_frames.is_empty() {
            return;
        }

        let to_90k = |t: i64| (t - origin).max(0) as u64;
        let mut video = Vec::with_capacity(video_frames.len());
        for (i, frame) in video_frames.iter().enumerate() {
            let next = video_frames.get(i + 1).map_or(end, |f| f.dts);
            let dts = to_90k(frame.dts);
            video.push(Sample {
                dts,
                duration: (to_90k(next).saturating_sub(dts)).max(1) as u32,
                composition_offset: frame.composition_offset,
                keyframe: frame.keyframe,
                data: frame.data.clone(),
            });
        }

        let audio = match &self.audio_config {
            Some(config) => self.audio_samples(config.clone(), origin, audio_frames),
            None => Vec::new(),
        };

        let duration_secs = match (video.first(), audio.first(), &self.audio_config) {
            (Some(_), _, _) => {
                video.iter().map(|s| u64::from(s.duration)).sum::<u64>() as f64
                    / f64::from(VIDEO_TIMESCALE)
            }
            (None, Some(_), Some(config)) => {
                audio.iter().map(|s| u64::from(s.duration)).sum::<u64>() as f64
                    / f64::from(config.sample_rate.max(1))
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
            start_ms: ((start - origin).max(0) / TICKS_PER_MS) as u64,
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
    use crate::flv::{AudioPacket, FlvFrontEnd, VideoPacket};

    /// The segmenter behind the RTMP front end, as the ingest drives it.
    struct Rtmp {
        segmenter: Segmenter,
        front_end: FlvFrontEnd,
    }

    fn rtmp(segmenter: Segmenter) -> Rtmp {
        Rtmp {
            segmenter,
            front_end: FlvFrontEnd::default(),
        }
    }

    impl Rtmp {
        fn push_video(&mut self, timestamp: u32, packet: VideoPacket) -> Vec<SegmenterEvent> {
            match self.front_end.video(timestamp, packet) {
                Some(input) => self.segmenter.push(input),
                None => Vec::new(),
            }
        }

        fn push_audio(&mut self, timestamp: u32, packet: AudioPacket) -> Vec<SegmenterEvent> {
            let input = self.front_end.audio(timestamp, packet);
            self.segmenter.push(input)
        }

        fn finish(&mut self) -> Vec<SegmenterEvent> {
            self.segmenter.finish()
        }
    }

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
        let mut s = rtmp(Segmenter::new(2000, DEFAULT_PART_TARGET_MS));
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
        let mut s = rtmp(Segmenter::new(6000, 500));
        s.push_video(0, VideoPacket::Config(video_config()));
        for i in 0..600u32 {
            s.push_video(i * 1000 / 30, frame(i % 180 == 0));
            let held = s.segmenter.pending_video.len();
            assert!(held <= 15, "{held} frames held at frame {i}");
        }
    }

    #[test]
    fn audio_only_streams_keep_their_first_frames() {
        let asc = crate::codec::AudioConfig::parse(Bytes::from_static(&[0x12, 0x10])).unwrap();
        let mut s = rtmp(Segmenter::new(2000, DEFAULT_PART_TARGET_MS));
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
        let mut s = rtmp(Segmenter::new(2000, DEFAULT_PART_TARGET_MS));
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
            let mut s = rtmp(Segmenter::new(2000, DEFAULT_PART_TARGET_MS));
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
            let pending = s.segmenter.pending_video.len() + s.segmenter.pending_audio.len();
            assert!(
                cut && pending < 1 << 20,
                "audio {audio}: {pending} frames pending"
            );
        }
    }

    #[test]
    fn a_resumed_recording_continues_its_timeline_after_a_discontinuity() {
        let mut segmenter = rtmp(Segmenter::resume(2000, DEFAULT_PART_TARGET_MS, 7, 14_000));
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

    #[test]
    fn opus_samples_last_as_their_packets_say_and_a_lost_one_is_a_longer_sample() {
        // Audio only, 20 ms packets (CELT fullband, TOC 0xFC) at 90 kHz: 1800 ticks;
        // packet 40 is lost, packet 60 is 10 ms (TOC 0xF4) and the next follows it.
        let mut s = Segmenter::new(2000, DEFAULT_PART_TARGET_MS);
        let config = AudioConfig::opus(2, crate::codec::OPUS_DEFAULT_PRE_SKIP);
        let mut events = s.push(MediaInput::AudioConfig(config));
        let mut pts = 0i64;
        for k in 0..200 {
            let short = k == 60;
            if k != 40 {
                let toc = if short { 0xF4 } else { 0xFC };
                events.extend(s.push(MediaInput::Audio(AudioFrame {
                    pts,
                    data: Bytes::from(vec![toc, 1, 2]),
                })));
            }
            pts += if short { 900 } else { 1800 };
        }
        events.extend(s.finish());
        let tracks = events.iter().find_map(|e| match e {
            SegmenterEvent::Tracks(t) => Some(t.clone()),
            _ => None,
        });
        assert_eq!(tracks.unwrap().audio.unwrap().sample_rate, 48000);
        let segments = segments(events);
        let audio: Vec<Sample> = segments.iter().flat_map(|s| s.audio.clone()).collect();
        assert_eq!(audio.len(), 199);
        // Samples abut, in 48 kHz samples: 960 each, 1920 where one was lost, 480 for
        // the short one.
        for pair in audio.windows(2) {
            assert_eq!(pair[0].dts + u64::from(pair[0].duration), pair[1].dts);
        }
        let durations: Vec<u32> = audio.iter().map(|a| a.duration).collect();
        assert_eq!(durations[39], 1920);
        assert_eq!(durations[59], 480);
        assert!(durations
            .iter()
            .enumerate()
            .all(|(i, d)| i == 39 || i == 59 || *d == 960));
        let total: f64 = segments.iter().map(|s| s.end.duration_secs).sum();
        assert!((total - 3.99).abs() < 1e-9, "{total}");
    }
}
