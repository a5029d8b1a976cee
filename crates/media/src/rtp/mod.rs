//! The RTP front end of the media pipeline (WHIP publishers): the packets of one
//! publisher's video (H.264, RFC 6184) and audio (Opus, RFC 7587) tracks, their headers
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

mod h264;
mod reorder;

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;

use crate::codec::{AudioConfig, VideoCodec, VideoConfig, OPUS_DEFAULT_PRE_SKIP};
use crate::input::{AudioFrame, MediaInput, Timeline, VideoFrame, TIMESCALE};
use h264::{AccessUnit, H264Depacketizer};
use reorder::{Held, Ordered, Reorder};

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
    depacketizer: H264Depacketizer,
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
            video: video.map(|RtpVideoCodec::H264| VideoTrack {
                reorder: Reorder::default(),
                depacketizer: H264Depacketizer::default(),
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
        let mut ordered = Vec::new();
        {
            let Some(video) = self.video.as_mut() else {
                return Vec::new();
            };
            self.stats.packets += 1;
            let outcome = video
                .reorder
                .push(packet.sequence, held(&packet, arrival), &mut ordered);
            self.stats.reordered += u64::from(outcome.reordered);
            self.stats.late += u64::from(outcome.late);
        }
        let mut out = Vec::new();
        self.video_ordered(ordered, &mut out);
        out
    }

    /// A packet of the audio track; returns the inputs it completed. Ignored if the front
    /// end has no audio track.
    pub fn push_audio(&mut self, packet: RtpPacket<'_>, arrival: Duration) -> Vec<MediaInput> {
        let mut ordered = Vec::new();
        {
            let Some(audio) = self.audio.as_mut() else {
                return Vec::new();
            };
            self.stats.packets += 1;
            let outcome = audio
                .reorder
                .push(packet.sequence, held(&packet, arrival), &mut ordered);
            self.stats.reordered += u64::from(outcome.reordered);
            self.stats.late += u64::from(outcome.late);
        }
        let mut out = Vec::new();
        self.audio_ordered(ordered, &mut out);
        out
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
            if let (Some(sps), Some(pps)) = unit.parameter_sets() {
                let current = video
                    .config
                    .as_ref()
                    .map(|c| (c.parameter_sets.first(), c.parameter_sets.get(1)));
                if current != Some((Some(sps), Some(pps))) {
                    if let Ok(config) = VideoConfig::from_parameter_sets(
                        VideoCodec::H264,
                        &[sps.clone(), pps.clone()],
                    ) {
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
            let mut inputs = Vec::with_capacity(2);
            if !audio.config_sent {
                audio.config_sent = true;
                inputs.push(MediaInput::AudioConfig(audio.config.clone()));
            }
            self.stats.audio_frames += 1;
            inputs.push(MediaInput::Audio(AudioFrame {
                pts,
                data: p.payload,
            }));
            match self.held_audio.as_mut() {
                Some(held) => {
                    held.extend(inputs);
                    // Keep the config and the last second; give up waiting after a while.
                    while held.len() > 2
                        && matches!((&held[1], held.back()), (MediaInput::Audio(a), Some(MediaInput::Audio(b))) if b.pts - a.pts > HELD_AUDIO)
                    {
                        held.remove(1);
                    }
                    if p.arrival.saturating_sub(self.origin.unwrap_or(p.arrival)) > VIDEO_WAIT {
                        self.release_audio(out);
                    }
                }
                None => out.extend(inputs),
            }
        }
    }

    fn release_audio(&mut self, out: &mut Vec<MediaInput>) {
        if let Some(held) = self.held_audio.take() {
            out.extend(held);
        }
    }
}

fn held(packet: &RtpPacket<'_>, arrival: Duration) -> Held {
    Held {
        timestamp: packet.timestamp,
        marker: packet.marker,
        payload: Bytes::copy_from_slice(packet.payload),
        arrival,
    }
}
