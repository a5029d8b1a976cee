//! Recordings on local storage, with one owner: the on-disk format ([`journal`]), the
//! async [`store::RecordingStore`] that reads it off the async workers with cached
//! journals, the time and id helpers ([`clock`]), and the pure HLS views of a recording
//! ([`hls`]). Knows nothing of HTTP, RTMP or the registry.

pub mod clock;
pub mod hls;
pub mod journal;
pub mod store;

pub use journal::{JournalWriter, Recording, RecordingState, SegmentEntry};
pub use store::RecordingStore;
