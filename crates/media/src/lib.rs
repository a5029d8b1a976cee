//! Sans-IO media for streamcdn: every type here is a pure state machine over bytes and
//! timestamps. Nothing in this crate opens a socket, reads a clock or touches a file.
//!
//! The ingest path is a protocol's front end → `input` (the one input shape: codec
//! configurations and access units on one 90 kHz timeline) → `segmenter` (keyframe cuts,
//! parts) → `fmp4` or `ts` (container) → `playlist` (HLS text). Front ends: `rtmp`
//! (session) → `flv` (tag bodies, `FlvFrontEnd`); `ts_demux` (MPEG-TS, `TsDemuxer`); `rtp`
//! (H.264 and Opus over RTP from a WebRTC stack, `RtpFrontEnd`).

mod bits;
pub mod codec;
pub mod feed;
mod error;
pub mod flv;
pub mod fmp4;
pub mod input;
pub mod ogg;
pub mod pipeline;
pub mod playlist;
pub mod rtmp;
pub mod rtp;
pub mod segmenter;
pub mod ts;
pub mod ts_demux;
