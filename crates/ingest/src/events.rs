//! What the hub tells the rest of the ingest (the registry announcer) about streams:
//! a recording went live, ended, or was interrupted by a drain. Consumers hold a receiver, not the hub.

use std::sync::Arc;

use streamcdn_recording::Recording;
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub enum StreamEvent {
    /// A publisher started (or continued) this recording.
    Live(Arc<Recording>),
    /// The recording's publisher stopped; the recording is as it ended.
    Ended(Arc<Recording>),
    /// The publisher left while this server was being drained: the recording is durable
    /// and stays live (`interrupted_at` set) for another server to continue.
    Interrupted(Arc<Recording>),
}

/// The hub's events, in the order they happened. Unbounded: one event per publish
/// start and end, consumed as they come.
pub type StreamEvents = mpsc::UnboundedReceiver<StreamEvent>;
pub(crate) type EventSender = mpsc::UnboundedSender<StreamEvent>;
