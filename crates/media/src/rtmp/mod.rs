//! A sans-IO RTMP server session: bytes in, events and bytes out.
//!
//! The caller feeds whatever it read from the socket into [`ServerSession::handle_input`],
//! drains [`ServerSession::poll_event`], answers publish requests with
//! [`ServerSession::accept_publish`] or [`ServerSession::reject_publish`], and writes
//! [`ServerSession::take_output`] to the socket. No I/O or clock lives here.

pub mod amf0;
pub mod chunk;
mod session;

pub use session::{PublishRequest, ServerSession, SessionEvent, SessionLimits};

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
    MalformedCommand(#[from] amf0::Amf0Error),
    #[error("protocol violation: {0}")]
    Protocol(String),
}
