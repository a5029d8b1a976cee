//! The layout of on-demand storage: which object the archiver writes for what, and
//! which object serves each playback URL once a recording is archived. The archiver
//! writes by these names and the edge reads by them.
//!
//! ```text
//! <p>/<s>/recordings.json             the stream's archived recordings (listing)
//! <p>/<s>/<rec>/init.mp4, 000000.m4s  the recording's media, as on local storage
//! <p>/<s>/<rec>/playlist.m3u8         VOD playlist; index.m3u8 its multivariant
//! <p>/<s>/<rec>/stream-index.m3u8     what /<p>/<s>/index.m3u8 serves when <rec> is current
//! <p>/<s>/<rec>/stream-live.m3u8      what /<p>/<s>/live.m3u8 serves when <rec> is current
//! <p>/<s>/<rec>/metadata.json         provider, times, every segment with its SHA-256
//! ```

use crate::{RecordingName, StreamName, Target};

pub const LISTING: &str = "recordings.json";
pub const STREAM_MULTIVARIANT: &str = "stream-index.m3u8";
pub const STREAM_LIVE: &str = "stream-live.m3u8";
pub const METADATA: &str = "metadata.json";

/// `<p>/<s>`: the prefix of everything stored for a stream.
pub fn stream_prefix(stream: &StreamName) -> String {
    stream.to_string()
}

/// `<p>/<s>/<rec>`: the prefix of one recording's objects (and of its completion marker).
pub fn recording_prefix(recording: &RecordingName) -> String {
    recording.to_string()
}

/// Where the object serving a target is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// `name` under the recording's prefix; served only once the recording is complete.
    InRecording {
        recording: RecordingName,
        name: String,
    },
    /// `name` under the prefix of the stream's current archived recording, which the
    /// caller resolves (the registry's record, else the newest in the listing).
    InCurrentRecording {
        stream: StreamName,
        name: &'static str,
    },
    /// The stream's listing.
    Listing(StreamName),
}

impl Stored {
    /// `None` for the player page, which edges render and nothing stores.
    pub fn of(target: &Target) -> Option<Self> {
        Some(match target {
            Target::StreamMultivariant(s) => Self::InCurrentRecording {
                stream: s.clone(),
                name: STREAM_MULTIVARIANT,
            },
            Target::StreamLive(s) => Self::InCurrentRecording {
                stream: s.clone(),
                name: STREAM_LIVE,
            },
            Target::Recordings(s) => Self::Listing(s.clone()),
            Target::Recording(r, object) => Self::InRecording {
                recording: r.clone(),
                name: object.file_name().to_owned(),
            },
            // Pictures of the live stream are made by its ingest only.
            Target::PlayerPage(_) | Target::Thumbnail(_) => return None,
        })
    }
}

/// The object key of `name` in `recording`.
pub fn key(recording: &RecordingName, name: &str) -> String {
    format!("{}/{name}", recording_prefix(recording))
}

/// The object key of the stream's listing.
pub fn listing_key(stream: &StreamName) -> String {
    format!("{}/{LISTING}", stream_prefix(stream))
}
