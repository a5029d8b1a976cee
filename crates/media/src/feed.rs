//! The low-latency feed's wire format: a live stream's [`MediaInput`] (codec
//! configurations and access units, as the segmenter takes them) framed for one long
//! HTTP response from the ingest through each cache tier to the edges, where WebRTC
//! viewers are served from it frame by frame.
//!
//! A feed starts with [`MAGIC`] and is then a sequence of messages, each
//! `kind: u8, length: u32 (big-endian), body`. Numbers are big-endian.
//!
//! | kind | body |
//! |------|------|
//! | 1 video configuration | codec `u8` (0 H.264, 1 H.265), decoder configuration record (avcC/hvcC) |
//! | 2 audio configuration | codec `u8`: 0 AAC and its AudioSpecificConfig, 1 Opus and its channels `u8`, pre-skip `u16` |
//! | 3 video frame | dts `i64`, composition offset `i32`, flags `u8` (bit 0: keyframe), length-prefixed NAL units |
//! | 4 audio frame | pts `i64`, the raw frame |
//! | 5 end | empty: the stream ended (a feed that stops without it was cut, and is resumed) |
//!
//! A reader skips message kinds it does not know, so kinds can be added without a new
//! magic. Written by hand: it is a dozen lines of framing, and no container format
//! carries configurations and frames with exactly the segmenter's timeline.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::codec::{AudioCodec, AudioConfig, VideoCodec, VideoConfig};
use crate::input::{AudioFrame, MediaInput, VideoFrame};

/// What every feed starts with (the format's name and version).
pub const MAGIC: &[u8; 8] = b"SCFEED01";
/// The media type of a feed response.
pub const CONTENT_TYPE: &str = "application/vnd.streamcdn.feed";
/// The largest message a reader accepts unless told otherwise: a 4K keyframe is a few
/// MiB; anything larger is a broken or hostile upstream.
pub const DEFAULT_MAX_MESSAGE: usize = 16 * 1024 * 1024;

const HEADER_LEN: usize = 5;
const KIND_VIDEO_CONFIG: u8 = 1;
const KIND_AUDIO_CONFIG: u8 = 2;
const KIND_VIDEO: u8 = 3;
const KIND_AUDIO: u8 = 4;
const KIND_END: u8 = 5;

/// One message of a feed.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedMessage {
    Media(MediaInput),
    /// The stream ended: the publisher stopped, no server continues it.
    End,
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum FeedError {
    #[error("not a streamcdn feed (wrong magic)")]
    BadMagic,
    #[error("feed message of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("malformed {0} message")]
    Malformed(&'static str),
    #[error("unknown codec {0} in a configuration message")]
    UnknownCodec(u8),
}

/// The framed bytes of one message.
pub fn encode(message: &FeedMessage) -> Bytes {
    let mut body = BytesMut::new();
    let kind = match message {
        FeedMessage::Media(MediaInput::VideoConfig(config)) => {
            body.put_u8(match config.codec {
                VideoCodec::H264 => 0,
                VideoCodec::H265 => 1,
            });
            body.put_slice(&config.record);
            KIND_VIDEO_CONFIG
        }
        FeedMessage::Media(MediaInput::AudioConfig(config)) => {
            match &config.codec {
                AudioCodec::Aac { asc, .. } => {
                    body.put_u8(0);
                    body.put_slice(asc);
                }
                AudioCodec::Opus { pre_skip } => {
                    body.put_u8(1);
                    body.put_u8(config.channels);
                    body.put_u16(*pre_skip);
                }
            }
            KIND_AUDIO_CONFIG
        }
        FeedMessage::Media(MediaInput::Video(frame)) => {
            body.put_i64(frame.dts);
            body.put_i32(frame.composition_offset);
            body.put_u8(u8::from(frame.keyframe));
            body.put_slice(&frame.data);
            KIND_VIDEO
        }
        FeedMessage::Media(MediaInput::Audio(frame)) => {
            body.put_i64(frame.pts);
            body.put_slice(&frame.data);
            KIND_AUDIO
        }
        FeedMessage::End => KIND_END,
    };
    let mut out = BytesMut::with_capacity(HEADER_LEN + body.len());
    out.put_u8(kind);
    // A body over 4 GiB cannot come from the segmenter's inputs (RTMP and TS frames are
    // bounded far below), so the length always fits.
    out.put_u32(u32::try_from(body.len()).unwrap_or(u32::MAX));
    out.put_slice(&body);
    out.freeze()
}

/// Reads a feed from bytes split anywhere. Sans-IO: push what arrived, take the
/// messages it completed.
#[derive(Debug)]
pub struct FeedDecoder {
    buffer: BytesMut,
    magic_seen: bool,
    max_message: usize,
}

impl Default for FeedDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MESSAGE)
    }
}

impl FeedDecoder {
    pub fn new(max_message: usize) -> Self {
        Self {
            buffer: BytesMut::new(),
            magic_seen: false,
            max_message,
        }
    }

    /// The messages `bytes` completes. An error is final: the feed is broken and its
    /// connection should be dropped.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<FeedMessage>, FeedError> {
        self.buffer.extend_from_slice(bytes);
        let mut messages = Vec::new();
        if !self.magic_seen {
            if self.buffer.len() < MAGIC.len() {
                return Ok(messages);
            }
            if &self.buffer[..MAGIC.len()] != MAGIC {
                return Err(FeedError::BadMagic);
            }
            self.buffer.advance(MAGIC.len());
            self.magic_seen = true;
        }
        while self.buffer.len() >= HEADER_LEN {
            let kind = self.buffer[0];
            let len = u32::from_be_bytes([
                self.buffer[1],
                self.buffer[2],
                self.buffer[3],
                self.buffer[4],
            ]) as usize;
            if len > self.max_message {
                return Err(FeedError::TooLarge(len));
            }
            if self.buffer.len() < HEADER_LEN + len {
                break;
            }
            self.buffer.advance(HEADER_LEN);
            let body = self.buffer.split_to(len).freeze();
            if let Some(message) = decode_body(kind, body)? {
                messages.push(message);
            }
        }
        Ok(messages)
    }
}

fn decode_body(kind: u8, mut body: Bytes) -> Result<Option<FeedMessage>, FeedError> {
    let media = match kind {
        KIND_VIDEO_CONFIG => {
            let codec = match take_u8(&mut body, "video configuration")? {
                0 => VideoCodec::H264,
                1 => VideoCodec::H265,
                other => return Err(FeedError::UnknownCodec(other)),
            };
            let config = VideoConfig::parse(codec, body)
                .map_err(|_| FeedError::Malformed("video configuration"))?;
            MediaInput::VideoConfig(config)
        }
        KIND_AUDIO_CONFIG => {
            let config = match take_u8(&mut body, "audio configuration")? {
                0 => AudioConfig::parse(body)
                    .map_err(|_| FeedError::Malformed("audio configuration"))?,
                1 if body.len() == 3 => AudioConfig::opus(body.get_u8(), body.get_u16()),
                1 => return Err(FeedError::Malformed("Opus configuration")),
                other => return Err(FeedError::UnknownCodec(other)),
            };
            MediaInput::AudioConfig(config)
        }
        KIND_VIDEO => {
            if body.len() < 13 {
                return Err(FeedError::Malformed("video frame"));
            }
            let dts = body.get_i64();
            let composition_offset = body.get_i32();
            let keyframe = body.get_u8() & 1 == 1;
            MediaInput::Video(VideoFrame {
                dts,
                composition_offset,
                keyframe,
                data: body,
            })
        }
        KIND_AUDIO => {
            if body.len() < 8 {
                return Err(FeedError::Malformed("audio frame"));
            }
            let pts = body.get_i64();
            MediaInput::Audio(AudioFrame { pts, data: body })
        }
        KIND_END => return Ok(Some(FeedMessage::End)),
        _ => return Ok(None),
    };
    Ok(Some(FeedMessage::Media(media)))
}

fn take_u8(body: &mut Bytes, what: &'static str) -> Result<u8, FeedError> {
    if body.is_empty() {
        return Err(FeedError::Malformed(what));
    }
    Ok(body.get_u8())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h264_config() -> VideoConfig {
        // SPS of a 640x360 High-profile stream and a PPS, as x264 writes them.
        let sps: &[u8] = &[
            0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00,
            0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2d, 0x96,
        ];
        let pps: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
        VideoConfig::from_parameter_sets(
            VideoCodec::H264,
            &[Bytes::from_static(sps), Bytes::from_static(pps)],
        )
        .expect("valid parameter sets")
    }

    fn messages() -> Vec<FeedMessage> {
        let audio = AudioConfig::parse(Bytes::from_static(&[0x12, 0x10])).expect("AAC-LC 44.1k");
        vec![
            FeedMessage::Media(MediaInput::VideoConfig(h264_config())),
            FeedMessage::Media(MediaInput::AudioConfig(audio)),
            FeedMessage::Media(MediaInput::AudioConfig(AudioConfig::opus(2, 312))),
            FeedMessage::Media(MediaInput::Video(VideoFrame {
                dts: -3000,
                composition_offset: 6000,
                keyframe: true,
                data: Bytes::from_static(&[0, 0, 0, 2, 0x65, 0x88]),
            })),
            FeedMessage::Media(MediaInput::Audio(AudioFrame {
                pts: 1 << 40,
                data: Bytes::from_static(&[1, 2, 3]),
            })),
            FeedMessage::End,
        ]
    }

    fn feed_bytes(messages: &[FeedMessage]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        for m in messages {
            bytes.extend_from_slice(&encode(m));
        }
        bytes
    }

    #[test]
    fn every_message_comes_back_whatever_the_split() {
        let sent = messages();
        let bytes = feed_bytes(&sent);
        for chunk in [1, 2, 5, 7, 64, bytes.len()] {
            let mut decoder = FeedDecoder::default();
            let mut received = Vec::new();
            for piece in bytes.chunks(chunk) {
                received.extend(decoder.push(piece).expect("valid feed"));
            }
            assert_eq!(received, sent, "split every {chunk} bytes");
        }
    }

    #[test]
    fn unknown_kinds_are_skipped_and_bad_input_refused() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[99, 0, 0, 0, 2, 0xaa, 0xbb]);
        bytes.extend_from_slice(&encode(&FeedMessage::End));
        assert_eq!(
            FeedDecoder::default().push(&bytes),
            Ok(vec![FeedMessage::End])
        );

        assert_eq!(
            FeedDecoder::default().push(b"HTTP/1.1 200 OK\r\n"),
            Err(FeedError::BadMagic)
        );
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&[3, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            FeedDecoder::default().push(&huge),
            Err(FeedError::TooLarge(u32::MAX as usize))
        );
        let mut short_frame = MAGIC.to_vec();
        short_frame.extend_from_slice(&[3, 0, 0, 0, 2, 0, 0]);
        assert_eq!(
            FeedDecoder::default().push(&short_frame),
            Err(FeedError::Malformed("video frame"))
        );
    }
}
