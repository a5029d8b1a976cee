//! What the edge stores, and the cache policy by object type.

use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode};
use bytes::Bytes;

/// Our URL scheme tells an object's type from its name, and the type decides its
/// policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// Changes about once a segment while live: short TTL, stale-if-error.
    Playlist,
    /// Init and media segments never change once published: long TTL, disk cache.
    Segment,
    /// Listings and anything else: the upstream's TTL, memory only.
    Other,
}

impl ObjectKind {
    pub fn of(path: &str) -> Self {
        let name = path.rsplit('/').next().unwrap_or_default();
        match name.rsplit_once('.').map(|(_, ext)| ext) {
            Some("m3u8") => Self::Playlist,
            Some("m4s" | "ts" | "mp4" | "aac" | "m4a") => Self::Segment,
            _ => Self::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Playlist => "playlist",
            Self::Segment => "segment",
            Self::Other => "other",
        }
    }

    /// The longest a cached copy of this type stays fresh, whatever the upstream says:
    /// a playlist cached for long would freeze a live view.
    pub fn max_ttl(self) -> Duration {
        match self {
            Self::Playlist => Duration::from_secs(10),
            Self::Segment => Duration::from_secs(24 * 3600),
            Self::Other => Duration::from_secs(60),
        }
    }
}

/// A 404 is remembered this long so a flood of requests for a missing stream costs
/// the upstream one request a second, not one each.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct CachedObject {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub cache_control: Option<HeaderValue>,
    pub body: Bytes,
    pub kind: ObjectKind,
    /// When the object entered this cache, minus the age it already had upstream.
    pub born: Instant,
    pub ttl: Duration,
}

impl CachedObject {
    pub fn is_fresh(&self) -> bool {
        self.born.elapsed() < self.ttl
    }

    pub fn age(&self) -> Duration {
        self.born.elapsed()
    }
}

/// How long a response may be cached, from its `Cache-Control`; `None` if not at all.
pub fn cacheable_ttl(cache_control: &str) -> Option<Duration> {
    let mut max_age = None;
    for directive in cache_control.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" || lower == "private" {
            return None;
        }
        if let Some(v) = lower.strip_prefix("s-maxage=") {
            max_age = v.parse().ok();
        } else if let Some(v) = lower.strip_prefix("max-age=") {
            max_age = max_age.or(v.parse().ok());
        }
    }
    max_age.filter(|&s: &u64| s > 0).map(Duration::from_secs)
}

/// 64-bit FNV-1a with a final avalanche: stable across builds and platforms, for
/// rendezvous scores and disk cache file names.
pub fn hash64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64 finalizer: FNV alone leaves the high bits poorly mixed.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_follows_cache_control() {
        assert_eq!(
            cacheable_ttl("public, max-age=1"),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            cacheable_ttl("max-age=60, s-maxage=5"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(cacheable_ttl("no-store"), None);
        assert_eq!(cacheable_ttl("max-age=0"), None);
        assert_eq!(cacheable_ttl("public"), None);
    }

    #[test]
    fn kinds_come_from_the_name() {
        assert_eq!(ObjectKind::of("/p/s/index.m3u8"), ObjectKind::Playlist);
        assert_eq!(ObjectKind::of("/p/s/r/000001.m4s"), ObjectKind::Segment);
        assert_eq!(ObjectKind::of("/p/s/r/init.mp4"), ObjectKind::Segment);
        assert_eq!(ObjectKind::of("/p/s/recordings"), ObjectKind::Other);
    }
}
