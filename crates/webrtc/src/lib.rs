//! WebRTC, transport only: a receiving peer for publishers (WHIP today; the edge reuses
//! it for WHEP playback). It knows nothing of streams, keys or HLS: an SDP offer goes
//! in, an answer and a stream of raw RTP packets come out.
//!
//! The protocol is str0m, a sans-IO WebRTC stack (ICE, DTLS-SRTP, RTP/RTCP with NACK
//! and PLI): it owns no thread, no task and no socket, so every session of the server
//! is driven by one tokio task over ONE UDP socket we own ([`WebRtcServer`]). webrtc-rs
//! was the alternative: it spawns tasks and binds a socket (an ICE agent) per peer
//! connection, which is the opposite of a one-port ICE-lite server.
//!
//! - [`demux`]: which session an incoming datagram belongs to (pure): by the remote
//!   address once known, else by asking each session (`Rtc::accepts`: the STUN
//!   username carries the session's ICE ufrag).
//! - `session`: one `Rtc` in ICE-lite, RTP mode (raw packets out, so the caller's own
//!   depacketizer consumes them), H.264 and Opus only, NACK as negotiated, PLI on
//!   request; the media's loss and feedback counts.
//! - `server`: the tokio shell: the socket, the timers, the sessions' lifecycle (DELETE,
//!   ICE consent loss, inactivity).

pub mod demux;
mod error;
mod server;
mod session;

pub use crate::error::WebRtcError;
pub use crate::server::{
    Accepted, IncomingMedia, MediaEvent, WebRtcHandle, WebRtcServer, WebRtcSettings,
};
pub use crate::session::{Answerer, EndReason, OfferedTracks, RtpIn, SessionStats, Track};
