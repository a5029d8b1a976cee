//! The RTP front end of the media pipeline (WHIP publishers): the packets of one
//! publisher's video (H.264, RFC 6184; H.265, RFC 7798) and audio (Opus, RFC 7587)
//! tracks, their headers
//! parsed and SRTP removed by the WebRTC stack, become [`MediaInput`] on one continuous
//! 90 kHz timeline. Sans-IO: the caller passes each packet's arrival time and asks
//! [`RtpFrontEnd::keyframe_wanted`] when to send the publisher a PLI.
//!
//! Loss is a clean gap, never garbage downstream: each track's packets go through a small
//! reorder buffer ([`reorder`]); a packet that does not come in time drops the access unit
//! it belonged to, and the video waits for the next keyframe (asking for one), as the
//! MPEG-TS front end does after a continuity gap.
//!
//! The two tracks are put on one timeline by their first packets' arrival (WebRTC
//! senders start both together), then each follows its own RTP clock, unwrapped.

pub mod capture;
mod reorder;
mod video;

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;

use crate::codec::{AudioConfig, VideoCodec, VideoConfig, OPUS_DEFAULT_PRE_SKIP};
use crate::input::{AudioFrame, MediaInput, Timeline, VideoFrame, TIMESCALE};
use reorder::{Held, Ordered, Reorder};
use video::{AccessUnit, Depacketizer};

/// RFC 7587: Opus's RTP clock, whatever the rate it was encoded at.
const OPUS_CLOCK: i64 = 48_000;
/// A step of an RTP clock larger than this (10 s) either way is a restart, not real time.
const MAX_TIMESTAMP_STEP_SECS: i64 = 10;
/// PLIs are asked for at most this often while a keyframe is wanted (about one round
/// trip and an encoder's reaction; browsers answer the first within a frame or two).
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);
/// While the video's first keyframe is awaited, audio is held this long at most (then the
/// stream starts without it rather than lose the audio); the last second of it is kept.
const VIDEO_WAIT: Duration = Duration::from_secs(5);
const HELD_AUDIO: i64 = TIMESCALE as i64;

/// One RTP packet as the WebRTC stack hands it over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub sequence: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: &'a [u8],
}

impl<'a> RtpPacket<'a> {
    /// Parses a plain RTP datagram (RFC 3550 5.1: version 2; CSRCs, a header extension
    /// and padding skipped): the payload type and the packet. For RTP that arrives
    /// without a WebRTC stack (tests, tools); `None` if it is not RTP.
    pub fn parse(datagram: &'a [u8]) -> Option<(u8, RtpPacket<'a>)> {
        let head = datagram.get(..12)?;
        if head[0] >> 6 != 2 {
            return None;
        }
        let mut at = 12 + 4 * usize::from(head[0] & 0x0f);
        if head[0] & 0x10 != 0 {
            let ext = datagram.get(at + 2..at + 4)?;
            at += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
        }
        let mut end = datagram.len();
        if head[0] & 0x20 != 0 {
            end = end.checked_sub(usize::from(*datagram.last()?))?;
        }
        Some((
            head[1] & 0x7f,
            RtpPacket {
                sequence: u16::from_be_bytes([head[2], head[3]]),
                timestamp: u32::from_be_bytes([head[4], head[5], head[6], head[7]]),
                marker: head[1] & 0x80 != 0,
                payload: datagram.get(at..end)?,
            },
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtpVideoCodec {
    /// RFC 6184, packetization mode 0 or 1; 90 kHz clock.
    H264,
    /// RFC 7798 without DONL (`sprop-max-don-diff` 0, as WebRTC sends it); 90 kHz clock.
    H265,
}

/// RFC 7587 Opus; 48 kHz clock. `channels`: what the SDP negotiated (`stereo=1` → 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpOpus {
    pub channels: u8,
}

/// What the front end has seen, both tracks together, for metrics and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RtpStats {
    pub packets: u64,
    /// Sequence numbers that never came in time.
    pub lost: u64,
    /// Packets that came after a later one, in time to be put back in order.
    pub reordered: u64,
    /// Packets that came after their place was given up, and duplicates: dropped.
    pub late: u64,
    /// Payloads that were not valid RFC 6184 / RFC 7587 packets.
    pub malformed: u64,
    /// Video access units dropped: damaged by loss, or before a keyframe that follows
    /// the start or a loss.
    pub dropped_frames: u64,
    /// Times [`RtpFrontEnd::keyframe_wanted`] said yes.
    pub keyframe_requests: u64,
    pub video_frames: u64,
    pub audio_frames: u64,
}

/// Where one track's clock sits on the shared timeline.
#[derive(Debug)]
struct TrackClock {
    timeline: Timeline,
    /// Ticks of the clock per second.
    rate: i64,
    /// Where the track's first packet lies on the shared timeline, in ticks.
    offset: Option<i64>,
}

impl TrackClock {
    fn new(rate: i64) -> Self {
        Self {
            timeline: Timeline::new(32, MAX_TIMESTAMP_STEP_SECS * rate),
            rate,
            offset: None,
        }
    }

    /// The shared-timeline time of an RTP timestamp, in [`TIMESCALE`] ticks.
    fn map(&mut self, timestamp: u32, arrival: Duration, origin: &mut Option<Duration>) -> i64 {
        let offset = *self.offset.get_or_insert_with(|| {
            let origin = *origin.get_or_insert(arrival);
            let since = arrival.saturating_sub(origin);
            (since.as_micros() as i64).saturating_mul(i64::from(TIMESCALE)) / 1_000_000
        });
        let units = self.timeline.map(u64::from(timestamp));
        offset
            + units
                .saturating_mul(i64::from(TIMESCALE))
                .div_euclid(self.rate)
    }
}

#[derive(Debug)]
struct VideoTrack {
    reorder: Reorder,
    depacketizer: Depacketizer,
    clock: TrackClock,
    config: Option<VideoConfig>,
    /// Frames are dropped until a keyframe (at start, and after a loss).
    awaiting_keyframe: bool,
    last_request: Option<Duration>,
}

#[derive(Debug)]
struct AudioTrack {
    reorder: Reorder,
    clock: TrackClock,
    config: AudioConfig,
    config_sent: bool,
}

/// One publisher's RTP front end, both tracks.
#[derive(Debug)]
pub struct RtpFrontEnd {
    video: Option<VideoTrack>,
    audio: Option<AudioTrack>,
    /// The first arrival of any packet: the shared timeline's zero.
    origin: Option<Duration>,
    /// Audio held while the video's first keyframe is awaited (`None` once released).
    held_audio: Option<VecDeque<MediaInput>>,
    stats: RtpStats,
}

impl RtpFrontEnd {
    pub fn new(video: Option<RtpVideoCodec>, audio: Option<RtpOpus>) -> Self {
        Self {
            video: video.map(|codec| VideoTrack {
                reorder: Reorder::default(),
                depacketizer: Depacketizer::new(match codec {
                    RtpVideoCodec::H264 => VideoCodec::H264,
                    RtpVideoCodec::H265 => VideoCodec::H265,
                }),
                clock: TrackClock::new(i64::from(TIMESCALE)),
                config: None,
                awaiting_keyframe: true,
                last_request: None,
            }),
            audio: audio.map(|opus| AudioTrack {
                reorder: Reorder::default(),
                clock: TrackClock::new(OPUS_CLOCK),
                config: AudioConfig::opus(opus.channels, OPUS_DEFAULT_PRE_SKIP),
                config_sent: false,
            }),
            origin: None,
            held_audio: video.is_some().then(VecDeque::new),
            stats: RtpStats::default(),
        }
    }

    pub fn stats(&self) -> &RtpStats {
        &self.stats
    }

    /// A packet of the video track; returns the inputs it completed. Ignored if the front
    /// end has no video track.
    pub fn push_video(&mut self, packet: RtpPacket<'_>, arrival: Duration) -> Vec<MediaInput> {
        let mut out = self.audio_config();
        if let Some(video) = self.video.as_mut() {
            let ordered = order(&mut video.reorder, &mut self.stats, &packet, arrival);
            self.video_ordered(ordered, &mut out);
        }
        out
    }

    /// A packet of the audio track; returns the inputs it completed. Ignored if the front
    /// end has no audio track.
    pub fn push_audio(&mut self, packet: RtpPacket<'_>, arrival: Duration) -> Vec<MediaInput> {
        let mut out = self.audio_config();
        if let Some(audio) = self.audio.as_mut() {
            let ordered = order(&mut audio.reorder, &mut self.stats, &packet, arrival);
            self.audio_ordered(ordered, &mut out);
        }
        out
    }

    /// The audio configuration, once, before anything else: the SDP fixed it, and the
    /// segmenter must know it before the first keyframe starts the tracks (whichever
    /// track's packet comes first).
    fn audio_config(&mut self) -> Vec<MediaInput> {
        match self.audio.as_mut() {
            Some(audio) if !audio.config_sent => {
                audio.config_sent = true;
                vec![MediaInput::AudioConfig(audio.config.clone())]
            }
            _ => Vec::new(),
        }
    }

    /// Whether to send the publisher a PLI now: at start until the first keyframe, and
    /// after a loss broke a frame, at most every [`KEYFRAME_REQUEST_INTERVAL`].
    pub fn keyframe_wanted(&mut self, now: Duration) -> bool {
        let Some(video) = self.video.as_mut() else {
            return false;
        };
        if !video.awaiting_keyframe {
            return false;
        }
        if video
            .last_request
            .is_some_and(|last| now.saturating_sub(last) < KEYFRAME_REQUEST_INTERVAL)
        {
            return false;
        }
        video.last_request = Some(now);
        self.stats.keyframe_requests += 1;
        true
    }

    /// The publisher is gone: what the reorder buffers held, and held audio. An access
    /// unit without its marked packet is dropped (its end may be missing).
    pub fn finish(&mut self) -> Vec<MediaInput> {
        let mut out = Vec::new();
        let mut ordered = Vec::new();
        if let Some(video) = self.video.as_mut() {
            video.reorder.release_all(&mut ordered);
        }
        self.video_ordered(ordered, &mut out);
        let mut units = Vec::new();
        if let Some(video) = self.video.as_mut() {
            video.depacketizer.finish(&mut units);
        }
        for unit in units {
            self.video_unit(unit, &mut out);
        }
        let mut ordered = Vec::new();
        if let Some(audio) = self.audio.as_mut() {
            audio.reorder.release_all(&mut ordered);
        }
        self.audio_ordered(ordered, &mut out);
        self.release_audio(&mut out);
        out
    }

    fn video_ordered(&mut self, ordered: Vec<Ordered>, out: &mut Vec<MediaInput>) {
        let mut units = Vec::new();
        for item in ordered {
            let Some(video) = self.video.as_mut() else {
                return;
            };
            match item {
                Ordered::Gap(n) => {
                    self.stats.lost += n;
                    video.depacketizer.gap();
                }
                Ordered::Packet(p) => {
                    // Every packet moves the clock: the first one's arrival anchors the
                    // video on the shared timeline.
                    let time = video.clock.map(p.timestamp, p.arrival, &mut self.origin);
                    let before = video.depacketizer.malformed;
                    video
                        .depacketizer
                        .push(p.timestamp, time, p.marker, &p.payload, &mut units);
                    self.stats.malformed += video.depacketizer.malformed - before;
                }
            }
            for unit in units.drain(..) {
                self.video_unit(unit, out);
            }
        }
    }

    fn video_unit(&mut self, unit: AccessUnit, out: &mut Vec<MediaInput>) {
        let Some(video) = self.video.as_mut() else {
            return;
        };
        let dts = unit.time;
        let keyframe = unit.keyframe();
        if unit.damaged || unit.nals.is_empty() {
            if unit.damaged {
                self.stats.dropped_frames += 1;
                video.awaiting_keyframe = true;
            }
            return;
        }
        if keyframe {
            if let Some(sets) = unit.parameter_sets() {
                if video.config.as_ref().map(|c| &c.parameter_sets) != Some(&sets) {
                    if let Ok(config) = VideoConfig::from_parameter_sets(unit.codec, &sets) {
                        video.config = Some(config.clone());
                        out.push(MediaInput::VideoConfig(config));
                    }
                }
            }
        }
        if video.awaiting_keyframe && !(keyframe && video.config.is_some()) {
            self.stats.dropped_frames += 1;
            return;
        }
        video.awaiting_keyframe = false;
        self.stats.video_frames += 1;
        let frame = MediaInput::Video(VideoFrame {
            dts,
            composition_offset: 0,
            keyframe,
            data: unit.length_prefixed(),
        });
        // The video starts: the audio held for it goes first, so that the segmenter
        // drops what precedes the keyframe, as it does for every protocol.
        self.release_audio(out);
        out.push(frame);
    }

    fn audio_ordered(&mut self, ordered: Vec<Ordered>, out: &mut Vec<MediaInput>) {
        for item in ordered {
            let Some(audio) = self.audio.as_mut() else {
                return;
            };
            let p = match item {
                Ordered::Gap(n) => {
                    // Opus frames decode on their own: a lost one is a gap in time.
                    self.stats.lost += n;
                    continue;
                }
                Ordered::Packet(p) => p,
            };
            let pts = audio.clock.map(p.timestamp, p.arrival, &mut self.origin);
            if crate::codec::opus_packet_samples(&p.payload).is_none() {
                self.stats.malformed += 1;
                continue;
            }
            self.stats.audio_frames += 1;
            let frame = MediaInput::Audio(AudioFrame {
                pts,
                data: p.payload,
            });
            match self.held_audio.as_mut() {
                Some(held) => {
                    held.push_back(frame);
                    // Keep the last second; give up waiting after a while.
                    while let (Some(MediaInput::Audio(first)), Some(MediaInput::Audio(last))) =
                        (held.front(), held.back())
                    {
                        if last.pts - first.pts <= HELD_AUDIO {
                            break;
                        }
                        held.pop_front();
                    }
                    if p.arrival.saturating_sub(self.origin.unwrap_or(p.arrival)) > VIDEO_WAIT {
                        self.release_audio(out);
                    }
                }
                None => out.push(frame),
            }
        }
    }

    fn release_audio(&mut self, out: &mut Vec<MediaInput>) {
        if let Some(held) = self.held_audio.take() {
            out.extend(held);
        }
    }
}

/// One packet through its track's reorder buffer: what is now in order.
fn order(
    reorder: &mut Reorder,
    stats: &mut RtpStats,
    packet: &RtpPacket<'_>,
    arrival: Duration,
) -> Vec<Ordered> {
    let held = Held {
        timestamp: packet.timestamp,
        marker: packet.marker,
        payload: Bytes::copy_from_slice(packet.payload),
        arrival,
    };
    let mut ordered = Vec::new();
    stats.packets += 1;
    let outcome = reorder.push(packet.sequence, held, &mut ordered);
    stats.reordered += u64::from(outcome.reordered);
    stats.late += u64::from(outcome.late);
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2 s of 160x96 H.264 at 30 fps (keyframe every 30 frames, no B-frames, packets of
    /// at most 400 bytes: FU-A and STAP-A) and mono Opus at 20 ms, as ffmpeg sends them:
    /// `python3 tests/fixtures/capture_rtp.py tests/fixtures/h264_opus.rtp 2`.
    const CAPTURE: &[u8] = include_bytes!("../../tests/fixtures/h264_opus.rtp");

    // SPS and PPS of a 1280x720 High profile stream from x264.
    const SPS: &[u8] = &[
        103, 100, 0, 31, 172, 217, 128, 80, 5, 187, 1, 106, 2, 2, 2, 128, 0, 0, 3, 0, 128, 0, 0,
        30, 7, 140, 24, 205,
    ];
    const PPS: &[u8] = &[104, 233, 123, 44, 139];

    #[derive(Debug, Default)]
    struct Out {
        video_configs: Vec<VideoConfig>,
        audio_configs: Vec<AudioConfig>,
        video: Vec<VideoFrame>,
        audio: Vec<AudioFrame>,
        /// Everything, in order, as letters: C(onfig) V(ideo) K(eyframe) A(udio config) a(udio).
        order: String,
    }

    impl Out {
        fn take(&mut self, inputs: Vec<MediaInput>) {
            for input in inputs {
                match input {
                    MediaInput::VideoConfig(c) => {
                        self.order.push('C');
                        self.video_configs.push(c)
                    }
                    MediaInput::AudioConfig(c) => {
                        self.order.push('A');
                        self.audio_configs.push(c)
                    }
                    MediaInput::Video(v) => {
                        assert!(
                            !self.video_configs.is_empty(),
                            "a frame before its configuration"
                        );
                        self.order.push(if v.keyframe { 'K' } else { 'V' });
                        self.video.push(v)
                    }
                    MediaInput::Audio(a) => {
                        assert!(
                            !self.audio_configs.is_empty(),
                            "a frame before its configuration"
                        );
                        self.order.push('a');
                        self.audio.push(a)
                    }
                }
            }
        }
    }

    /// The same from x265: `capture_rtp.py tests/fixtures/hevc_opus.rtp 2 hevc`.
    const HEVC_CAPTURE: &[u8] = include_bytes!("../../tests/fixtures/hevc_opus.rtp");

    /// Feeds a capture's records (both tracks, H.264) and finishes.
    fn feed<'a>(records: impl IntoIterator<Item = capture::CaptureRecord<'a>>) -> (Out, RtpStats) {
        feed_codec(RtpVideoCodec::H264, records)
    }

    fn feed_codec<'a>(
        codec: RtpVideoCodec,
        records: impl IntoIterator<Item = capture::CaptureRecord<'a>>,
    ) -> (Out, RtpStats) {
        let mut rtp = RtpFrontEnd::new(Some(codec), Some(RtpOpus { channels: 1 }));
        let mut out = Out::default();
        for r in records {
            let inputs = if r.audio {
                rtp.push_audio(r.packet, r.arrival)
            } else {
                rtp.push_video(r.packet, r.arrival)
            };
            out.take(inputs);
        }
        out.take(rtp.finish());
        (out, rtp.stats().clone())
    }

    fn video_packets() -> Vec<capture::CaptureRecord<'static>> {
        capture::records(CAPTURE).filter(|r| !r.audio).collect()
    }

    #[test]
    fn ffmpegs_rtp_gives_every_frame_on_one_timeline() {
        let (out, stats) = feed(capture::records(CAPTURE));
        assert_eq!(out.video_configs.len(), 1);
        let config = &out.video_configs[0];
        assert_eq!((config.width, config.height), (160, 96));
        assert!(
            config.codec_string.starts_with("avc1."),
            "{}",
            config.codec_string
        );
        assert_eq!(
            out.audio_configs,
            [AudioConfig::opus(1, OPUS_DEFAULT_PRE_SKIP)]
        );
        // ffmpeg sent 60 frames (2 s at 30 fps) and 101 Opus packets.
        assert_eq!((out.video.len(), out.audio.len()), (60, 101));
        let keyframes: Vec<usize> = (0..60).filter(|&i| out.video[i].keyframe).collect();
        assert_eq!(keyframes, [0, 30]);
        for pair in out.video.windows(2) {
            assert_eq!(pair[1].dts - pair[0].dts, 3000);
        }
        for pair in out.audio.windows(2) {
            assert_eq!(pair[1].pts - pair[0].pts, 1800, "20 ms at 90 kHz");
        }
        // Aligned by arrival: the first audio packet left with the first frame.
        assert!((out.audio[0].pts - out.video[0].dts).abs() < 9000);
        // Length-prefixed NAL units, parameter sets left to the configuration.
        for frame in &out.video {
            let mut rest = &frame.data[..];
            while !rest.is_empty() {
                let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                assert!(!(7..=9).contains(&(rest[4] & 0x1f)));
                rest = &rest[4 + len..];
            }
        }
        assert_eq!(
            (
                stats.lost,
                stats.late,
                stats.dropped_frames,
                stats.malformed
            ),
            (0, 0, 0, 0)
        );
        assert_eq!(stats.packets as usize, capture::records(CAPTURE).count());
    }

    #[test]
    fn ffmpegs_hevc_rtp_gives_every_frame_and_an_hvcc_configuration() {
        // x265 sends VPS, SPS and PPS in an aggregation packet, big frames in FUs.
        let (out, stats) = feed_codec(RtpVideoCodec::H265, capture::records(HEVC_CAPTURE));
        assert_eq!(out.video_configs.len(), 1);
        let config = &out.video_configs[0];
        assert_eq!(config.codec, VideoCodec::H265);
        assert_eq!((config.width, config.height), (160, 96));
        assert_eq!(config.parameter_sets.len(), 3, "VPS, SPS and PPS");
        assert!(
            config.codec_string.starts_with("hvc1."),
            "{}",
            config.codec_string
        );
        assert_eq!(out.video.len(), 60);
        let keyframes: Vec<usize> = (0..60).filter(|&i| out.video[i].keyframe).collect();
        assert_eq!(keyframes, [0, 30]);
        for pair in out.video.windows(2) {
            assert_eq!(pair[1].dts - pair[0].dts, 3000);
        }
        for frame in &out.video {
            let mut rest = &frame.data[..];
            while !rest.is_empty() {
                let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                assert!(!(32..=35).contains(&((rest[4] >> 1) & 0x3f)));
                rest = &rest[4 + len..];
            }
        }
        assert_eq!(
            (stats.lost, stats.dropped_frames, stats.malformed),
            (0, 0, 0)
        );
        // The same packets as H.264 are nonsense: nothing comes out, nothing breaks.
        let (out, _) = feed(capture::records(HEVC_CAPTURE).filter(|r| !r.audio));
        assert!(out.video.is_empty());
    }

    #[test]
    fn reordered_packets_are_put_back() {
        let mut records: Vec<_> = capture::records(CAPTURE).collect();
        // Swap neighbours of the same track here and there, after each track's first
        // packet (which starts its sequence).
        let mut swapped = 0;
        for i in (30..records.len() - 1).step_by(7) {
            if records[i].audio == records[i + 1].audio {
                let (a, b) = (records[i].arrival, records[i + 1].arrival);
                records.swap(i, i + 1);
                records[i].arrival = a;
                records[i + 1].arrival = b;
                swapped += 1;
            }
        }
        let (clean, _) = feed(capture::records(CAPTURE));
        let (out, stats) = feed(records);
        assert_eq!(stats.reordered, swapped, "{stats:?}");
        assert_eq!((stats.lost, stats.dropped_frames), (0, 0));
        assert_eq!(out.video, clean.video);
        assert_eq!(out.audio, clean.audio);
    }

    #[test]
    fn a_lost_packet_drops_its_frame_and_the_video_resumes_on_the_next_keyframe() {
        // Lose a video packet a third of the way into the first GOP, and an audio one.
        let all: Vec<_> = capture::records(CAPTURE).collect();
        let video: Vec<usize> = (0..all.len()).filter(|&i| !all[i].audio).collect();
        let audio: Vec<usize> = (0..all.len()).filter(|&i| all[i].audio).collect();
        let lost = [video[video.len() / 6], audio[audio.len() / 2]];
        let kept = (0..all.len()).filter(|i| !lost.contains(i)).map(|i| all[i]);
        let mut rtp = RtpFrontEnd::new(Some(RtpVideoCodec::H264), Some(RtpOpus { channels: 1 }));
        let mut out = Out::default();
        let mut wanted = Vec::new();
        for r in kept {
            out.take(if r.audio {
                rtp.push_audio(r.packet, r.arrival)
            } else {
                rtp.push_video(r.packet, r.arrival)
            });
            if rtp.keyframe_wanted(r.arrival) {
                wanted.push(r.arrival);
            }
        }
        out.take(rtp.finish());
        let stats = rtp.stats();
        assert_eq!(stats.lost, 2);
        // Video: every frame up to the damaged one, none after it until frame 30.
        let resumed = out
            .video
            .windows(2)
            .find(|w| w[1].dts - w[0].dts != 3000)
            .map(|w| (w[1].keyframe, w[1].dts - out.video[0].dts));
        assert_eq!(resumed, Some((true, 30 * 3000)));
        assert!(
            out.video.len() > 30 && out.video.len() < 60,
            "{}",
            out.video.len()
        );
        assert_eq!(stats.dropped_frames as usize, 60 - out.video.len());
        // Audio: one frame gone, the rest where they were.
        assert_eq!(out.audio.len(), 100);
        // A keyframe was asked for at the start and after the loss, not in between.
        assert_eq!(wanted.len(), 2, "{wanted:?}");
        assert_eq!(stats.keyframe_requests, 2);
    }

    #[test]
    fn keyframe_requests_are_rate_limited_and_stop_once_video_flows() {
        let mut rtp = RtpFrontEnd::new(Some(RtpVideoCodec::H264), None);
        let ms = Duration::from_millis;
        assert!(rtp.keyframe_wanted(ms(0)));
        assert!(!rtp.keyframe_wanted(ms(100)));
        assert!(rtp.keyframe_wanted(ms(600)));
        // A P-frame is no start; an IDR with parameter sets is.
        let p = RtpPacket {
            sequence: 1,
            timestamp: 0,
            marker: true,
            payload: &[0x41, 1],
        };
        assert!(rtp.push_video(p, ms(700)).is_empty());
        let mut stap = vec![0x78, 0, SPS.len() as u8];
        stap.extend_from_slice(SPS);
        stap.extend_from_slice(&[0, PPS.len() as u8]);
        stap.extend_from_slice(PPS);
        let sets = RtpPacket {
            sequence: 2,
            timestamp: 3000,
            marker: false,
            payload: &stap,
        };
        let idr = RtpPacket {
            sequence: 3,
            timestamp: 3000,
            marker: true,
            payload: &[0x65, 1],
        };
        assert!(rtp.push_video(sets, ms(733)).is_empty());
        let mut out = Out::default();
        out.take(rtp.push_video(idr, ms(734)));
        assert_eq!(out.order, "CK");
        assert_eq!(
            (out.video_configs[0].width, out.video_configs[0].height),
            (1280, 720)
        );
        assert!(!rtp.keyframe_wanted(ms(2000)));
        assert_eq!(rtp.stats().keyframe_requests, 2);
        assert_eq!(rtp.stats().dropped_frames, 1);
    }

    #[test]
    fn a_changed_sps_is_a_new_configuration() {
        let mut rtp = RtpFrontEnd::new(Some(RtpVideoCodec::H264), None);
        let mut out = Out::default();
        let mut other_sps = SPS.to_vec();
        other_sps[3] = 40; // level 4.0
        for (i, sps) in [SPS, SPS, &other_sps[..]].into_iter().enumerate() {
            let i = i as u16;
            let ts = u32::from(i) * 3000;
            for (j, nal) in [sps, PPS, &[0x65, 1][..]].into_iter().enumerate() {
                let packet = RtpPacket {
                    sequence: i * 3 + j as u16,
                    timestamp: ts,
                    marker: j == 2,
                    payload: nal,
                };
                out.take(rtp.push_video(packet, Duration::from_millis(u64::from(i) * 33)));
            }
        }
        assert_eq!(out.order, "CKKCK");
        assert_eq!(out.video_configs[1].codec_string, "avc1.640028");
    }

    #[test]
    fn sequence_numbers_and_timestamps_wrap() {
        // The capture's video, renumbered to wrap both counters in its first second.
        let video = video_packets();
        let (seq0, ts0) = (video[0].packet.sequence, video[0].packet.timestamp);
        let mut rtp = RtpFrontEnd::new(Some(RtpVideoCodec::H264), None);
        let mut out = Out::default();
        for r in &video {
            let mut packet = r.packet;
            packet.sequence = packet.sequence.wrapping_sub(seq0).wrapping_add(65_500);
            packet.timestamp = packet
                .timestamp
                .wrapping_sub(ts0)
                .wrapping_add(u32::MAX - 45_000);
            out.take(rtp.push_video(packet, r.arrival));
        }
        out.take(rtp.finish());
        assert_eq!(out.video.len(), 60);
        for pair in out.video.windows(2) {
            assert_eq!(pair[1].dts - pair[0].dts, 3000);
        }
        assert_eq!(rtp.stats().lost, 0);
    }

    #[test]
    fn opus_alone_is_on_the_90khz_timeline_from_its_first_packet() {
        let mut rtp = RtpFrontEnd::new(None, Some(RtpOpus { channels: 2 }));
        let mut out = Out::default();
        let frame = [0xFC, 0xFF, 0xFE]; // CELT fullband 20 ms
        for k in 0..10u32 {
            let packet = RtpPacket {
                sequence: k as u16,
                timestamp: (u32::MAX - 2000).wrapping_add(k * 960),
                marker: k == 0,
                payload: &frame,
            };
            out.take(rtp.push_audio(packet, Duration::from_millis(u64::from(k) * 20)));
        }
        assert_eq!(out.order, "Aaaaaaaaaaa");
        assert_eq!(out.audio_configs[0].channels, 2);
        let pts: Vec<i64> = out.audio.iter().map(|a| a.pts).collect();
        assert_eq!(pts, (0..10).map(|k| k * 1800).collect::<Vec<_>>());
        // A malformed packet (no TOC) is counted and skipped.
        let empty = RtpPacket {
            sequence: 10,
            timestamp: 0,
            marker: false,
            payload: &[],
        };
        assert!(rtp.push_audio(empty, Duration::from_millis(200)).is_empty());
        assert_eq!(rtp.stats().malformed, 1);
        assert!(!rtp.keyframe_wanted(Duration::ZERO), "no video, no PLI");
    }

    #[test]
    fn audio_waits_for_the_video_and_goes_ahead_of_the_first_keyframe() {
        // The video starts 300 ms after the audio.
        let mut records: Vec<_> = capture::records(CAPTURE)
            .map(|mut r| {
                if !r.audio {
                    r.arrival += Duration::from_millis(300);
                }
                r
            })
            .collect();
        records.sort_by_key(|r| r.arrival);
        let (out, _) = feed(records);
        // The audio was held until the keyframe and goes just before it: the segmenter
        // drops what precedes the keyframe, as for every protocol.
        let first_key = out.order.find('K').unwrap();
        assert!(first_key > 10, "{}", &out.order[..20]);
        assert_eq!(out.order[..2].to_owned(), "AC");
        assert!(out.order[2..first_key].chars().all(|c| c == 'a'));
        let first_video = out.video[0].dts;
        assert!(
            (first_video - out.audio[0].pts - 300 * 90).abs() < 20 * 90,
            "the video lies 300 ms after the audio: {first_video} {}",
            out.audio[0].pts
        );
        assert_eq!(out.audio.len(), 101, "all of it");
    }

    #[test]
    fn rtp_datagrams_parse_with_csrcs_extensions_and_padding() {
        let mut d = vec![0xB1, 0xE0, 0x12, 0x34, 0, 0, 0x0B, 0xB8, 1, 2, 3, 4];
        d.extend_from_slice(&[9, 9, 9, 9]); // one CSRC
        d.extend_from_slice(&[0xBE, 0xDE, 0, 1, 7, 7, 7, 7]); // one word of extension
        d.extend_from_slice(&[0x65, 1, 2]);
        d.extend_from_slice(&[0, 0, 3]); // padding
        let (pt, p) = RtpPacket::parse(&d).unwrap();
        assert_eq!(
            (pt, p.sequence, p.timestamp, p.marker),
            (96, 0x1234, 3000, true)
        );
        assert_eq!(p.payload, &[0x65, 1, 2]);
        assert!(RtpPacket::parse(&d[..14]).is_none());
        assert!(RtpPacket::parse(&[0x40; 12]).is_none(), "version 1");
        let mut bad_padding = d[..12].to_vec();
        bad_padding[0] = 0xA0;
        bad_padding.push(200);
        assert!(RtpPacket::parse(&bad_padding).is_none());
    }
}
