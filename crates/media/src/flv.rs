//! FLV audio/video tag bodies as carried in RTMP messages, legacy and Enhanced RTMP.

use bytes::Bytes;

use crate::codec::{AudioConfig, VideoCodec, VideoConfig};
pub use crate::error::FlvError;
use crate::input::{AudioFrame, MediaInput, Timeline, VideoFrame, TICKS_PER_MS};

/// An RTMP timestamp step larger than this (either way) is a discontinuity, not real time.
const MAX_TIMESTAMP_STEP_MS: i64 = 10_000;

/// The RTMP front end of the media pipeline: FLV packets with their 32-bit millisecond
/// timestamps (one clock for audio and video) become [`MediaInput`] on one continuous
/// timeline.
#[derive(Debug)]
pub struct FlvFrontEnd {
    timeline: Timeline,
}

impl Default for FlvFrontEnd {
    fn default() -> Self {
        Self {
            timeline: Timeline::new(32, MAX_TIMESTAMP_STEP_MS),
        }
    }
}

impl FlvFrontEnd {
    /// A video packet; every packet moves the timeline, even those with nothing to input.
    pub fn video(&mut self, timestamp: u32, packet: VideoPacket) -> Option<MediaInput> {
        let dts = self.timeline.map(u64::from(timestamp)) * TICKS_PER_MS;
        match packet {
            VideoPacket::Config(config) => Some(MediaInput::VideoConfig(config)),
            VideoPacket::Frame {
                keyframe,
                composition_offset,
                data,
            } => Some(MediaInput::Video(VideoFrame {
                dts,
                composition_offset: composition_offset.saturating_mul(TICKS_PER_MS as i32),
                keyframe,
                data,
            })),
            VideoPacket::EndOfSequence | VideoPacket::Ignored => None,
        }
    }

    pub fn audio(&mut self, timestamp: u32, packet: AudioPacket) -> MediaInput {
        let pts = self.timeline.map(u64::from(timestamp)) * TICKS_PER_MS;
        match packet {
            AudioPacket::Config(config) => MediaInput::AudioConfig(config),
            AudioPacket::Frame(data) => MediaInput::Audio(AudioFrame { pts, data }),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum VideoPacket {
    Config(VideoConfig),
    /// One access unit, NAL units with 4-byte big-endian length prefixes (as in avcC/hvcC).
    Frame {
        keyframe: bool,
        /// Presentation minus decode time, in milliseconds.
        composition_offset: i32,
        data: Bytes,
    },
    EndOfSequence,
    /// Info/command frames and metadata we have no use for.
    Ignored,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AudioPacket {
    Config(AudioConfig),
    Frame(Bytes),
}

fn si24(b: &[u8]) -> i32 {
    let v = i32::from_be_bytes([0, b[0], b[1], b[2]]);
    if v & 0x80_0000 != 0 {
        v - 0x100_0000
    } else {
        v
    }
}

pub fn parse_video(data: &Bytes) -> Result<VideoPacket, FlvError> {
    let first = *data.first().ok_or(FlvError::Truncated("video"))?;
    if first & 0x80 != 0 {
        return parse_enhanced_video(data);
    }
    let frame_type = first >> 4;
    let codec = match first & 0x0f {
        7 => VideoCodec::H264,
        12 => VideoCodec::H265,
        other => {
            return Err(FlvError::UnsupportedVideoCodec(format!(
                "FLV codec id {other}"
            )))
        }
    };
    if frame_type == 5 {
        return Ok(VideoPacket::Ignored);
    }
    if data.len() < 5 {
        return Err(FlvError::Truncated("video"));
    }
    let composition_offset = si24(&data[2..5]);
    match data[1] {
        0 => Ok(VideoPacket::Config(VideoConfig::parse(
            codec,
            data.slice(5..),
        )?)),
        1 => Ok(VideoPacket::Frame {
            keyframe: frame_type == 1,
            composition_offset,
            data: data.slice(5..),
        }),
        2 => Ok(VideoPacket::EndOfSequence),
        _ => Ok(VideoPacket::Ignored),
    }
}

/// Enhanced RTMP (veovera): `IsExHeader | FrameType(3) | PacketType(4)`, then a FourCC.
fn parse_enhanced_video(data: &Bytes) -> Result<VideoPacket, FlvError> {
    if data.len() < 5 {
        return Err(FlvError::Truncated("enhanced video"));
    }
    let frame_type = (data[0] >> 4) & 0x07;
    let packet_type = data[0] & 0x0f;
    let codec = match &data[1..5] {
        b"avc1" => VideoCodec::H264,
        b"hvc1" => VideoCodec::H265,
        other => {
            return Err(FlvError::UnsupportedVideoCodec(
                String::from_utf8_lossy(other).into_owned(),
            ))
        }
    };
    if frame_type == 5 {
        return Ok(VideoPacket::Ignored);
    }
    let body = data.slice(5..);
    match packet_type {
        0 => Ok(VideoPacket::Config(VideoConfig::parse(codec, body)?)),
        1 => {
            if body.len() < 3 {
                return Err(FlvError::Truncated("enhanced video"));
            }
            Ok(VideoPacket::Frame {
                keyframe: frame_type == 1,
                composition_offset: si24(&body[..3]),
                data: body.slice(3..),
            })
        }
        2 => Ok(VideoPacket::EndOfSequence),
        3 => Ok(VideoPacket::Frame {
            keyframe: frame_type == 1,
            composition_offset: 0,
            data: body,
        }),
        _ => Ok(VideoPacket::Ignored),
    }
}

pub fn parse_audio(data: &Bytes) -> Result<AudioPacket, FlvError> {
    let first = *data.first().ok_or(FlvError::Truncated("audio"))?;
    let format = first >> 4;
    if format != 10 {
        return Err(FlvError::UnsupportedAudioFormat(format));
    }
    match data.get(1) {
        Some(0) => Ok(AudioPacket::Config(AudioConfig::parse(data.slice(2..))?)),
        Some(_) => Ok(AudioPacket::Frame(data.slice(2..))),
        None => Err(FlvError::Truncated("audio")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_avc_frame_with_negative_composition_offset() {
        let tag = Bytes::from_static(&[0x27, 1, 0xFF, 0xFF, 0xD8, 0, 0, 0, 1, 0x41]);
        assert_eq!(
            parse_video(&tag).unwrap(),
            VideoPacket::Frame {
                keyframe: false,
                composition_offset: -40,
                data: Bytes::from_static(&[0, 0, 0, 1, 0x41])
            }
        );
    }

    #[test]
    fn enhanced_hevc_coded_frames_x_has_no_offset() {
        let tag = Bytes::from_static(&[0x93, b'h', b'v', b'c', b'1', 0, 0, 0, 1, 0x26]);
        assert_eq!(
            parse_video(&tag).unwrap(),
            VideoPacket::Frame {
                keyframe: true,
                composition_offset: 0,
                data: Bytes::from_static(&[0, 0, 0, 1, 0x26])
            }
        );
    }

    #[test]
    fn unsupported_inputs_are_errors_not_panics() {
        assert!(parse_video(&Bytes::from_static(&[0x12])).is_err());
        assert!(parse_video(&Bytes::from_static(&[0x90, b'a', b'v', b'0', b'1'])).is_err());
        assert!(parse_audio(&Bytes::from_static(&[0x2f, 1])).is_err());
        assert!(parse_video(&Bytes::from_static(&[0x17, 0, 0, 0, 0, 1])).is_err());
    }
}
