//! SRT publishing: a listener that admits callers at the handshake and yields each
//! admitted publisher as a [`Publication`] (who, and its MPEG-TS bytes in order).
//!
//! The protocol is srt-rs's `srt-protocol`, a sans-IO SRT state machine (why it and
//! not libsrt: docs/ARCHITECTURE.md); `server` is the thin tokio shell around it, as
//! `rtmp_server` is around the RTMP session. What is ours is the policy: [`stream_id`]
//! (what a caller asks for, a pure parser), the guard against inputs that would panic
//! srt-protocol, the [`Gate`] that decides (the ingest checks stream keys and names the
//! provider's passphrase), the mapping of refusals to SRT rejection codes, and the
//! metrics.

mod gate;
mod guard;
mod server;
pub mod stream_id;

pub use crate::gate::{Admission, ConnectionStats, Gate, Publication, Refusal, SrtSettings};
pub use crate::server::{SrtError, SrtServer};
pub use crate::stream_id::{PublishRequest, StreamIdError};
