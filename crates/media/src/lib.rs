//! Sans-IO media for streamcdn: every type here is a pure state machine over bytes and
//! timestamps. Nothing in this crate opens a socket, reads a clock or touches a file.
//!
//! The ingest path is `rtmp` (session) → `flv` (tag bodies) → `segmenter` (timeline,
//! keyframe cuts) → `fmp4` or `ts` (container) → `playlist` (HLS text).

mod bits;
pub mod codec;
mod error;
pub mod flv;
pub mod fmp4;
pub mod pipeline;
pub mod playlist;
pub mod rtmp;
pub mod segmenter;
pub mod ts;
