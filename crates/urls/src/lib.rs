//! The URL scheme of streamcdn, in one place: every playback URL parses into a typed
//! [`Target`] and every [`Target`] builds its URL, so the origin's router, the edge's
//! cache policy and upstream mapping, and the archived mapping agree by construction.
//!
//! ```text
//! /<provider>/<stream>/                           the player page (also `.../player`), rendered by the edge
//! /<provider>/<stream>/index.m3u8                 multivariant: live window, or the last recording
//! /<provider>/<stream>/live.m3u8                  the live window
//! /<provider>/<stream>/recordings                 JSON list of the stream's recordings
//! /<provider>/<stream>/<recording>/index.m3u8     multivariant of one recording
//! /<provider>/<stream>/<recording>/playlist.m3u8  the whole recording
//! /<provider>/<stream>/<recording>/init.mp4       init segment (init-2.mp4, ... after a codec change)
//! /<provider>/<stream>/<recording>/000042.m4s     media segment (.ts for MPEG-TS)
//! ```
//!
//! A [`CacheKey`] is a target's path plus the query parameters that change the response
//! (the LL-HLS delivery directives), normalized; every other parameter is ignored.
//! `stored` names the objects the archiver writes for a recording; `internal` the
//! paths streamcdn serves for itself under `/_streamcdn/` (both build on this module's
//! names, so it does not link them); [`conditional`] answers
//! conditional requests the same way on every server; [`authority`] takes the host and
//! port out of absolute URLs.

pub mod authority;
pub mod conditional;
pub mod internal;
pub mod stored;

use std::fmt;

use thiserror::Error;

/// Provider, stream and recording names: 1-64 of `A-Z a-z 0-9 - _`, not starting with
/// `-`. Safe as a path segment, a file name and a registry key.
pub fn is_valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.starts_with('-')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum UrlError {
    /// Not a plain path: traversal, empty segments, characters outside the scheme, or
    /// too long. Answered `400`.
    #[error("invalid path")]
    Invalid,
    /// A plain path that names nothing in the scheme. Answered `404`.
    #[error("no such object")]
    Unknown,
    /// An LL-HLS delivery directive with a malformed value, or `_HLS_part` without
    /// `_HLS_msn` (rfc8216bis 6.2.5.2). Answered `400`.
    #[error("invalid delivery directive {0}")]
    BadDirective(&'static str),
}

const MAX_PATH: usize = 512;

/// A stream: `<provider>/<stream>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamName {
    pub provider: String,
    pub stream: String,
}

impl StreamName {
    /// Both names checked with [`is_valid_name`].
    pub fn new(provider: &str, stream: &str) -> Option<Self> {
        (is_valid_name(provider) && is_valid_name(stream)).then(|| Self {
            provider: provider.to_owned(),
            stream: stream.to_owned(),
        })
    }

    pub fn recording(&self, id: &str) -> Option<RecordingName> {
        is_valid_name(id).then(|| RecordingName {
            stream: self.clone(),
            id: id.to_owned(),
        })
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.stream)
    }
}

/// One recording of a stream: `<provider>/<stream>/<recording>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordingName {
    pub stream: StreamName,
    pub id: String,
}

impl fmt::Display for RecordingName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.stream, self.id)
    }
}

/// A file of a recording's media: `init.mp4`, `init-2.mp4`, `000042.m4s`, `000042.ts`,
/// or a partial segment of LL-HLS, `000042.3.m4s` (part 3 of segment 42).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Init,
    Segment,
    Part,
}

/// The file name of part `part` of segment `sequence` (both count from the start of
/// their sequence; parts from 0 in each segment).
pub fn part_file(sequence: u64, part: u32) -> String {
    format!("{sequence:06}.{part}.m4s")
}

/// The segment and part a part's file name names, if it is one.
pub fn parse_part_file(file: &str) -> Option<(u64, u32)> {
    let stem = file.strip_suffix(".m4s")?;
    let (sequence, part) = stem.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 12 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(sequence) || !digits(part) || (part.len() > 1 && part.starts_with('0')) {
        return None;
    }
    Some((sequence.parse().ok()?, part.parse().ok()?))
}

impl MediaKind {
    /// What a file name is, from its extension; `None` for anything else.
    pub fn of_file(file: &str) -> Option<Self> {
        if parse_part_file(file).is_some() {
            return Some(Self::Part);
        }
        let (stem, ext) = file.rsplit_once('.')?;
        if !is_valid_name(stem) {
            return None;
        }
        match ext {
            "mp4" => Some(Self::Init),
            "m4s" | "ts" | "aac" | "m4a" => Some(Self::Segment),
            _ => None,
        }
    }

    pub fn content_type(file: &str) -> &'static str {
        match file.rsplit('.').next() {
            Some("m4s") => "video/iso.segment",
            Some("mp4") => "video/mp4",
            Some("ts") => "video/mp2t",
            Some("aac") => "audio/aac",
            Some("m4a") => "audio/mp4",
            _ => "application/octet-stream",
        }
    }
}

/// What under a recording a URL names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RecordingObject {
    /// `index.m3u8`: multivariant playlist of the recording.
    Multivariant,
    /// `playlist.m3u8`: the whole recording as one media playlist.
    Playlist,
    /// A media file listed in the recording's journal.
    Media { file: String, kind: MediaKind },
}

/// Everything a playback URL can name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// `/<p>/<s>/index.m3u8`
    StreamMultivariant(StreamName),
    /// `/<p>/<s>/live.m3u8`
    StreamLive(StreamName),
    /// `/<p>/<s>/recordings`
    Recordings(StreamName),
    /// `/<p>/<s>/<rec>/...`
    Recording(RecordingName, RecordingObject),
    /// `/<p>/<s>/` (and `/<p>/<s>/player`): the stream's player page, rendered by the
    /// edge that serves it; no cache stores it and no upstream is asked for it.
    PlayerPage(StreamName),
}

/// The type of a target's response, which decides how caches treat it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// An HLS playlist: changes about once a segment while live.
    Playlist,
    /// Init and media segments: never change once published.
    Segment,
    /// A partial segment of LL-HLS: never changes once published, but is asked for
    /// only while the stream is at the live edge, so caches keep it in memory only.
    Part,
    /// The JSON listing of recordings.
    Listing,
    /// An HTML page rendered by the edge itself.
    Page,
}

impl ObjectKind {
    pub fn label(self) -> &'static str {
        match self {
            Self::Playlist => "playlist",
            Self::Segment => "segment",
            Self::Part => "part",
            Self::Listing => "other",
            Self::Page => "page",
        }
    }
}

/// Whether `path` is plain: `/`-separated segments of `A-Z a-z 0-9 - _ .`, none empty,
/// `.` or `..`, at most 512 bytes. Nothing else is ever parsed or forwarded.
pub fn is_plain_path(path: &str) -> bool {
    path == "/"
        || path.len() <= MAX_PATH
            && path.starts_with('/')
            && path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
            && !path
                .split('/')
                .skip(1)
                .any(|seg| seg.is_empty() || seg == "." || seg == "..")
}

/// The stream whose low-latency feed `path` names (`/<provider>/<stream>/feed`): frames
/// as the publisher sends them, pulled by cache tiers for their WebRTC viewers. Not a
/// [`Target`]: a feed is a stream of messages that no cache keeps.
pub fn feed_stream(path: &str) -> Option<StreamName> {
    let rest = path.strip_prefix('/')?.strip_suffix("/feed")?;
    let (provider, stream) = rest.split_once('/')?;
    StreamName::new(provider, stream)
}

/// The path of `stream`'s low-latency feed.
pub fn feed_path(stream: &StreamName) -> String {
    format!("/{stream}/feed")
}

impl Target {
    /// Parses a request path (without the query).
    pub fn parse(path: &str) -> Result<Self, UrlError> {
        // The player page's own URL is the one path of the scheme that ends in `/`, so
        // that the page's relative `index.m3u8` is the stream's playlist.
        // Any other path ending in `/` has an empty segment: invalid, as ever.
        if let Some(dir) = path.strip_suffix('/').filter(|dir| !dir.is_empty()) {
            if !is_plain_path(dir) {
                return Err(UrlError::Invalid);
            }
            let parts: Vec<&str> = dir[1..].split('/').collect();
            return match parts[..] {
                [p, s] => StreamName::new(p, s)
                    .map(Self::PlayerPage)
                    .ok_or(UrlError::Invalid),
                _ => Err(UrlError::Invalid),
            };
        }
        if !is_plain_path(path) {
            return Err(UrlError::Invalid);
        }
        let parts: Vec<&str> = path[1..].split('/').collect();
        let stream = |p: &str, s: &str| StreamName::new(p, s).ok_or(UrlError::Unknown);
        match parts[..] {
            [p, s, "index.m3u8"] => Ok(Self::StreamMultivariant(stream(p, s)?)),
            [p, s, "live.m3u8"] => Ok(Self::StreamLive(stream(p, s)?)),
            [p, s, "recordings"] => Ok(Self::Recordings(stream(p, s)?)),
            [p, s, "player"] => Ok(Self::PlayerPage(stream(p, s)?)),
            [p, s, r, file] => {
                let recording = stream(p, s)?.recording(r).ok_or(UrlError::Unknown)?;
                let object = match file {
                    "index.m3u8" => RecordingObject::Multivariant,
                    "playlist.m3u8" => RecordingObject::Playlist,
                    _ => RecordingObject::Media {
                        kind: MediaKind::of_file(file).ok_or(UrlError::Unknown)?,
                        file: file.to_owned(),
                    },
                };
                Ok(Self::Recording(recording, object))
            }
            _ => Err(UrlError::Unknown),
        }
    }

    /// The URL path of this target.
    pub fn path(&self) -> String {
        match self {
            Self::StreamMultivariant(s) => format!("/{s}/index.m3u8"),
            Self::StreamLive(s) => format!("/{s}/live.m3u8"),
            Self::Recordings(s) => format!("/{s}/recordings"),
            Self::Recording(r, object) => format!("/{r}/{}", object.file_name()),
            Self::PlayerPage(s) => format!("/{s}/"),
        }
    }

    pub fn stream(&self) -> &StreamName {
        match self {
            Self::StreamMultivariant(s)
            | Self::StreamLive(s)
            | Self::Recordings(s)
            | Self::PlayerPage(s) => s,
            Self::Recording(r, _) => &r.stream,
        }
    }

    pub fn recording(&self) -> Option<&RecordingName> {
        match self {
            Self::Recording(r, _) => Some(r),
            _ => None,
        }
    }

    pub fn kind(&self) -> ObjectKind {
        match self {
            Self::StreamMultivariant(_) | Self::StreamLive(_) => ObjectKind::Playlist,
            Self::Recordings(_) => ObjectKind::Listing,
            Self::Recording(_, RecordingObject::Multivariant | RecordingObject::Playlist) => {
                ObjectKind::Playlist
            }
            Self::Recording(
                _,
                RecordingObject::Media {
                    kind: MediaKind::Part,
                    ..
                },
            ) => ObjectKind::Part,
            Self::Recording(_, RecordingObject::Media { .. }) => ObjectKind::Segment,
            Self::PlayerPage(_) => ObjectKind::Page,
        }
    }

    /// A finer label than [`ObjectKind`], for metrics: `init` apart from `segment`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Recording(
                _,
                RecordingObject::Media {
                    kind: MediaKind::Init,
                    ..
                },
            ) => "init",
            other => other.kind().label(),
        }
    }

    /// Whether LL-HLS delivery directives apply: only media playlists take them.
    fn takes_directives(&self) -> bool {
        matches!(
            self,
            Self::StreamLive(_) | Self::Recording(_, RecordingObject::Playlist)
        )
    }
}

impl RecordingObject {
    pub fn file_name(&self) -> &str {
        match self {
            Self::Multivariant => "index.m3u8",
            Self::Playlist => "playlist.m3u8",
            Self::Media { file, .. } => file,
        }
    }
}

/// URIs written inside playlists, relative to the playlist's own URL.
pub mod relative {
    /// From a stream-level playlist (`/<p>/<s>/index.m3u8`, `live.m3u8`) to a file of
    /// one of its recordings.
    pub fn from_stream(recording_id: &str, file: &str) -> String {
        format!("{recording_id}/{file}")
    }

    /// The prefix that [`from_stream`] puts before a recording's file names.
    pub fn stream_prefix(recording_id: &str) -> String {
        format!("{recording_id}/")
    }

    /// From the stream's multivariant playlist to the live window.
    pub const LIVE_PLAYLIST: &str = "live.m3u8";
    /// From a recording's multivariant playlist to its media playlist.
    pub const RECORDING_PLAYLIST: &str = "playlist.m3u8";
}

/// LL-HLS delivery directives of a playlist request (rfc8216bis 6.2.5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Directives {
    /// `_HLS_msn`: hold the response until this media sequence number is available.
    pub msn: Option<u64>,
    /// `_HLS_part`: ... and this part of it.
    pub part: Option<u64>,
    /// `_HLS_skip`: a delta update (`YES`), also skipping date ranges (`v2`).
    pub skip: Option<Skip>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Skip {
    Yes,
    V2,
}

impl Directives {
    /// The directives in `query`; other parameters are ignored. The first occurrence of
    /// a directive counts.
    pub fn parse(query: &str) -> Result<Self, UrlError> {
        let mut directives = Self::default();
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "_HLS_msn" if directives.msn.is_none() => {
                    directives.msn = Some(number(value).ok_or(UrlError::BadDirective("_HLS_msn"))?)
                }
                "_HLS_part" if directives.part.is_none() => {
                    directives.part =
                        Some(number(value).ok_or(UrlError::BadDirective("_HLS_part"))?)
                }
                "_HLS_skip" if directives.skip.is_none() => {
                    directives.skip = Some(match value {
                        "YES" => Skip::Yes,
                        "v2" => Skip::V2,
                        _ => return Err(UrlError::BadDirective("_HLS_skip")),
                    })
                }
                _ => {}
            }
        }
        if directives.part.is_some() && directives.msn.is_none() {
            return Err(UrlError::BadDirective("_HLS_part"));
        }
        Ok(directives)
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The canonical query: directives in a fixed order, nothing else.
    pub fn query(&self) -> String {
        let mut parts = Vec::new();
        if let Some(msn) = self.msn {
            parts.push(format!("_HLS_msn={msn}"));
        }
        if let Some(part) = self.part {
            parts.push(format!("_HLS_part={part}"));
        }
        match self.skip {
            Some(Skip::Yes) => parts.push("_HLS_skip=YES".to_owned()),
            Some(Skip::V2) => parts.push("_HLS_skip=v2".to_owned()),
            None => {}
        }
        parts.join("&")
    }
}

/// Decimal without sign or leading `+`, as the spec's decimal-integer.
fn number(text: &str) -> Option<u64> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// What a cache stores a response under: the target's path and the directives that
/// change the response, normalized, so `?_HLS_part=1&_HLS_msn=5&player=x` and
/// `?_HLS_msn=5&_HLS_part=1` share one entry, and the URL to fetch upstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    target: Target,
    directives: Directives,
    /// `path` or `path?query`: the key's one string form, also the upstream URL path.
    text: String,
}

impl CacheKey {
    /// The key of a request for `target` with `query` (the raw query string, if any).
    /// A page has none: each edge renders it, so to a cache it names nothing.
    pub fn new(target: Target, query: Option<&str>) -> Result<Self, UrlError> {
        if target.kind() == ObjectKind::Page {
            return Err(UrlError::Unknown);
        }
        let directives = match query {
            Some(q) if target.takes_directives() => Directives::parse(q)?,
            _ => Directives::default(),
        };
        Ok(Self::with_directives(target, directives))
    }

    pub fn with_directives(target: Target, directives: Directives) -> Self {
        let mut text = target.path();
        if !directives.is_empty() {
            text.push('?');
            text.push_str(&directives.query());
        }
        Self {
            target,
            directives,
            text,
        }
    }

    /// Parses a request's path and query.
    pub fn parse(path: &str, query: Option<&str>) -> Result<Self, UrlError> {
        Self::new(Target::parse(path)?, query)
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn directives(&self) -> Directives {
        self.directives
    }

    /// The key as one string: the path and the canonical query.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The URL path and query to request from an upstream for this key.
    pub fn path_and_query(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests;
