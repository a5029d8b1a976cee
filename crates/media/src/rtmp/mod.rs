//! A sans-IO RTMP server session: bytes in, events and bytes out.
//!
//! The caller feeds whatever it read from the socket into [`ServerSession::handle_input`],
//! drains [`ServerSession::poll_event`], answers publish requests with
//! [`ServerSession::accept_publish`] or [`ServerSession::reject_publish`], and writes
//! [`ServerSession::take_output`] to the socket. No I/O or clock lives here.

pub mod amf0;
pub mod chunk;
mod error;
mod session;

pub use error::RtmpError;
pub use session::{PublishRequest, ServerSession, SessionEvent, SessionLimits};
