//! What can go wrong answering an offer or running the server.

use std::net::SocketAddr;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum WebRtcError {
    #[error("cannot bind UDP {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("{0}")]
    Setup(String),
    #[error("the SDP offer cannot be answered: {0}")]
    BadOffer(String),
    #[error("the offer has no H.264 video or Opus audio to send")]
    NoMedia,
    #[error("too many WebRTC sessions")]
    Full,
    #[error("the WebRTC server has stopped")]
    Stopped,
}
