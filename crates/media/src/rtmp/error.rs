//! Why an RTMP session cannot go on.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RtmpError {
    #[error("unsupported RTMP version {0} in handshake")]
    UnsupportedVersion(u8),
    #[error("invalid chunk size {0}")]
    InvalidChunkSize(u32),
    #[error("message of {length} bytes exceeds the limit of {limit}")]
    MessageTooLarge { length: u32, limit: u32 },
    #[error("malformed command: {0}")]
    MalformedCommand(#[from] super::amf0::Amf0Error),
    #[error("protocol violation: {0}")]
    Protocol(String),
}
