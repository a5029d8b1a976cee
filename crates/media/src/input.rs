//! The one input shape of the segmenter, whatever the publisher speaks: codec
//! configurations and access units on one continuous 90 kHz timeline. Each protocol has a
//! sans-IO front end that produces it (`flv::FlvFrontEnd` for RTMP, `ts_demux::TsDemuxer`
//! for MPEG-TS); the segmenter and everything after it know nothing of protocols.

use bytes::Bytes;

use crate::codec::{AudioConfig, VideoConfig};

/// Ticks per second of every timestamp in [`MediaInput`] (MPEG's system clock / 300, and a
/// whole number of ticks per RTMP millisecond).
pub const TIMESCALE: u32 = 90_000;
/// Ticks per millisecond.
pub const TICKS_PER_MS: i64 = (TIMESCALE / 1000) as i64;

#[derive(Debug, Clone, PartialEq)]
pub enum MediaInput {
    /// The video track's configuration, at start or when it changes (a new one starts new
    /// tracks after a discontinuity).
    VideoConfig(VideoConfig),
    /// The audio track's configuration. AAC today; another codec (Opus) is a new
    /// `AudioConfig` kind, the frames stay as they are.
    AudioConfig(AudioConfig),
    Video(VideoFrame),
    Audio(AudioFrame),
}

/// One video access unit.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoFrame {
    /// Decode time on the stream's continuous timeline, in [`TIMESCALE`] ticks.
    pub dts: i64,
    /// Presentation minus decode time, in ticks.
    pub composition_offset: i32,
    pub keyframe: bool,
    /// NAL units with big-endian length prefixes of the configuration's
    /// `nal_length_size` bytes (as in MP4), parameter sets included if the publisher sent
    /// them in band.
    pub data: Bytes,
}

/// One audio access unit (a raw AAC frame, no ADTS header).
#[derive(Debug, Clone, PartialEq)]
pub struct AudioFrame {
    /// Presentation (= decode) time on the same timeline as the video, in ticks.
    pub pts: i64,
    pub data: Bytes,
}

/// Maps a publisher's wrapping clock (32-bit RTMP milliseconds, 33-bit MPEG ticks) onto
/// one continuous timeline: wraps are unwrapped, and a step larger than `max_step` either
/// way (an encoder restart, a clock jump, a splice) is taken as one ordinary frame step,
/// so the timeline never jumps.
#[derive(Debug)]
pub(crate) struct Timeline {
    wrap_bits: u32,
    max_step: i64,
    last_in: Option<u64>,
    last_out: i64,
    last_forward_step: i64,
}

impl Timeline {
    pub(crate) fn new(wrap_bits: u32, max_step: i64) -> Self {
        Self {
            wrap_bits,
            max_step,
            last_in: None,
            last_out: 0,
            last_forward_step: 0,
        }
    }

    /// The signed distance from `from` to `to` on a clock of `wrap_bits` bits.
    pub(crate) fn wrapping_step(wrap_bits: u32, from: u64, to: u64) -> i64 {
        let modulus = 1u64 << wrap_bits;
        let forward = to.wrapping_sub(from) & (modulus - 1);
        if forward >= modulus / 2 {
            forward as i64 - modulus as i64
        } else {
            forward as i64
        }
    }

    pub(crate) fn map(&mut self, ts: u64) -> i64 {
        let Some(last_in) = self.last_in else {
            self.last_in = Some(ts);
            return 0;
        };
        let step = Self::wrapping_step(self.wrap_bits, last_in, ts);
        self.last_in = Some(ts);
        if step.abs() <= self.max_step {
            self.last_out += step;
            if step > 0 {
                self.last_forward_step = step;
            }
        } else {
            self.last_out += self.last_forward_step;
        }
        self.last_out
    }

    /// Where the timeline is now, without a new timestamp.
    pub(crate) fn last(&self) -> i64 {
        self.last_out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_unwrap_and_jumps_become_one_step() {
        let mut t = Timeline::new(33, 10 * 90_000);
        let near_wrap = (1u64 << 33) - 3000;
        assert_eq!(t.map(near_wrap), 0);
        assert_eq!(t.map(near_wrap + 3000), 3000);
        assert_eq!(t.map(3000), 6000, "33-bit wrap");
        assert_eq!(
            t.map(1000),
            4000,
            "small steps back are real (B-frames, interleaving)"
        );
        assert_eq!(
            t.map(1_000_000_000),
            7000,
            "a jump carries on by the last forward step"
        );
        assert_eq!(t.map(1_000_003_000), 10_000);
        assert_eq!(t.last(), 10_000);
    }
}
