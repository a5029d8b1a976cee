//! WebRTC, transport only: a receiving peer for publishers (WHIP) and a sending peer
//! for viewers (WHEP), one server for both. It knows nothing of streams, keys or HLS: an SDP offer goes
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
//! - A viewer's session (WHEP) uses str0m's frame mode instead: str0m packetizes each
//!   H.264 access unit (Annex B) or Opus packet, keeps what it sent to answer NACKs
//!   (RTX when negotiated), and sends sender reports; RTP mode would have us write our
//!   own packetizer and send buffer. A keyframe request (PLI, FIR) makes that viewer
//!   skip to the next keyframe (the feed cannot ask the publisher for one).
//! - `server`: the tokio shell: the socket, the timers, the sessions' lifecycle (DELETE,
//!   ICE consent loss, inactivity).

pub mod demux;
mod error;
mod server;
mod session;

pub use crate::error::WebRtcError;
pub use crate::server::{
    Accepted, AcceptedViewer, IncomingMedia, MediaEvent, OutgoingMedia, SessionEnd, WebRtcHandle,
    WebRtcServer, WebRtcSettings,
};
pub use crate::session::{
    Answerer, EndReason, OfferedTracks, OutFrame, RtpIn, SendStats, SessionStats, Track,
};
