//! Why an FLV tag body, or the codec configuration it carries, cannot be used. Its own
//! module so that `flv` (tags) and `codec` (configurations) both use it and neither
//! depends back on the other.

use thiserror::Error;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum FlvError {
    #[error("{0} tag truncated")]
    Truncated(&'static str),
    #[error("unsupported video codec {0}")]
    UnsupportedVideoCodec(String),
    #[error("unsupported audio format {0}")]
    UnsupportedAudioFormat(u8),
    #[error("invalid codec configuration: {0}")]
    InvalidConfig(&'static str),
}
