//! What the edge stores, and the cache policy by object type: how long an object stays
//! fresh, whether it may be served stale, whether it goes to disk, how long memory
//! keeps it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use bytes::Bytes;
use streamcdn_urls::ObjectKind;
use tokio::time::Instant;

/// How the edge treats one type of object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The longest a cached copy stays fresh, whatever the upstream says: a playlist
    /// cached for long would freeze a live view.
    pub max_ttl: Duration,
    /// Served past freshness (within the edge's bound) while its refresh fails.
    pub stale_if_error: bool,
    /// Kept in the disk tier too, not only in memory.
    pub disk: bool,
}

impl Policy {
    pub fn of(kind: ObjectKind) -> Self {
        match kind {
            // Changes about once a segment (or part) while live; a blocking reload's
            // answer is kept longer (`lifetime::limit`).
            ObjectKind::Playlist => Self {
                max_ttl: Duration::from_secs(10),
                stale_if_error: true,
                disk: false,
            },
            // Never changes once published.
            ObjectKind::Segment => Self {
                max_ttl: Duration::from_secs(24 * 3600),
                stale_if_error: false,
                disk: true,
            },
            // Never changes, but is asked for only near the live edge (rfc8216bis
            // 6.2.2: available for three target durations after it leaves the playlist).
            ObjectKind::Part => Self {
                max_ttl: Duration::from_secs(60),
                stale_if_error: false,
                disk: false,
            },
            ObjectKind::Listing => Self {
                max_ttl: Duration::from_secs(60),
                stale_if_error: false,
                disk: false,
            },
            // Rendered by each edge, never cached: a page has no `CacheKey`.
            ObjectKind::Page => Self {
                max_ttl: Duration::ZERO,
                stale_if_error: false,
                disk: false,
            },
        }
    }
}

/// A 404 is remembered this long so a flood of requests for a missing stream costs
/// the upstream one request a second, not one each.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(1);

/// What identifies a version of an object to its upstream, for conditional requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<HeaderValue>,
    pub last_modified: Option<HeaderValue>,
}

impl Validators {
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

#[derive(Debug)]
pub struct CachedObject {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub cache_control: Option<HeaderValue>,
    pub body: Bytes,
    pub kind: ObjectKind,
    /// When the object entered this cache, minus the age it already had upstream
    /// (whole seconds, as `Age` says): ages here are exact and add up across tiers.
    /// Tokio's clock, so tests can move it.
    pub born: Instant,
    /// How long past `born` it is fresh.
    pub ttl: Duration,
    pub validators: Validators,
    /// Set by an invalidate command: no longer fresh, kept for revalidation.
    pub invalidated: AtomicBool,
}

impl CachedObject {
    /// The answer for something that does not exist, remembered [`NEGATIVE_TTL`].
    pub fn not_found(kind: ObjectKind) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            content_type: Some(HeaderValue::from_static("text/plain; charset=utf-8")),
            cache_control: Some(HeaderValue::from_static("max-age=1")),
            body: Bytes::from_static(b"no such stream\n"),
            kind,
            born: Instant::now(),
            ttl: NEGATIVE_TTL,
            validators: Validators::default(),
            invalidated: AtomicBool::new(false),
        }
    }

    pub fn is_fresh(&self) -> bool {
        self.age() < self.ttl && !self.is_invalidated()
    }

    pub fn is_invalidated(&self) -> bool {
        self.invalidated.load(Ordering::Relaxed)
    }

    pub fn invalidate(&self) {
        self.invalidated.store(true, Ordering::Relaxed);
    }

    /// The same body, confirmed by the upstream (`304`): fresh again for `ttl` from its
    /// birth upstream, `age` ago.
    pub fn revalidated(&self, ttl: Duration, age: Duration) -> CachedObject {
        let now = Instant::now();
        CachedObject {
            status: self.status,
            content_type: self.content_type.clone(),
            cache_control: self.cache_control.clone(),
            body: self.body.clone(),
            kind: self.kind,
            born: now.checked_sub(age).unwrap_or(now),
            ttl,
            validators: self.validators.clone(),
            invalidated: AtomicBool::new(false),
        }
    }

    pub fn age(&self) -> Duration {
        self.born.elapsed()
    }

    /// How long past `born` the object is kept: playlists outlive their freshness by
    /// the stale-if-error bound, so there is something to serve when the upstream
    /// fails.
    fn keep_for(&self, stale_if_error: Duration) -> Duration {
        if self.may_serve_stale() {
            self.ttl + stale_if_error
        } else {
            self.ttl
        }
    }

    fn may_serve_stale(&self) -> bool {
        Policy::of(self.kind).stale_if_error && self.status == StatusCode::OK
    }

    /// Whether this (no longer fresh) copy may answer while its refresh fails.
    pub fn servable_stale(&self, stale_if_error: Duration) -> bool {
        self.may_serve_stale() && self.age() < self.ttl + stale_if_error
    }
}

/// How long the memory cache keeps each object: by its policy, counted from its birth.
pub struct ObjectExpiry {
    pub stale_if_error: Duration,
}

impl ObjectExpiry {
    fn remaining(&self, value: &CachedObject) -> Duration {
        value
            .keep_for(self.stale_if_error)
            .saturating_sub(value.age())
    }
}

impl moka::Expiry<String, Arc<CachedObject>> for ObjectExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<CachedObject>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(self.remaining(value))
    }

    /// A refresh replaces the object: the new one's lifetime counts, not what was left
    /// of its predecessor's (moka's default keeps the latter).
    fn expire_after_update(
        &self,
        _key: &String,
        value: &Arc<CachedObject>,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.remaining(value))
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
    use moka::Expiry;
    use streamcdn_urls::Target;

    use super::*;

    fn playlist(ttl: Duration) -> Arc<CachedObject> {
        Arc::new(CachedObject {
            status: StatusCode::OK,
            content_type: None,
            cache_control: None,
            body: Bytes::from_static(b"#EXTM3U\n"),
            kind: ObjectKind::Playlist,
            born: Instant::now(),
            ttl,
            validators: Validators::default(),
            invalidated: AtomicBool::new(false),
        })
    }

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
    fn policy_comes_from_the_target() {
        let policy = |path: &str| Policy::of(Target::parse(path).unwrap().kind());
        let live = policy("/p/s/index.m3u8");
        assert_eq!(live, policy("/p/s/r/playlist.m3u8"));
        assert_eq!(live.max_ttl, Duration::from_secs(10));
        assert!(live.stale_if_error && !live.disk);
        for segment in ["/p/s/r/000001.m4s", "/p/s/r/init.mp4"] {
            let segment = policy(segment);
            assert!(segment.disk && !segment.stale_if_error);
        }
        let listing = policy("/p/s/recordings");
        assert_eq!(listing.max_ttl, Duration::from_secs(60));
        assert!(!listing.disk && !listing.stale_if_error);
    }

    /// moka's default `expire_after_update` returns what was left of the old entry's
    /// lifetime: a refreshed playlist would inherit it. The update must give the new
    /// value the lifetime a fresh insert would.
    #[test]
    fn an_update_gets_the_new_values_lifetime() {
        let expiry = ObjectExpiry {
            stale_if_error: Duration::from_secs(30),
        };
        let key = "/p/s/live.m3u8".to_owned();
        let refreshed = playlist(Duration::from_secs(2));
        let now = std::time::Instant::now();
        let on_create = expiry.expire_after_create(&key, &refreshed, now);
        let left_of_predecessor = Some(Duration::from_millis(50));
        let on_update = expiry.expire_after_update(&key, &refreshed, now, left_of_predecessor);
        assert!(on_create >= Some(Duration::from_secs(31)), "{on_create:?}");
        assert!(
            on_update >= Some(Duration::from_secs(31)),
            "the refreshed playlist kept its predecessor's {left_of_predecessor:?}: {on_update:?}"
        );
    }

    #[tokio::test]
    async fn a_refreshed_entry_outlives_its_predecessors_deadline() {
        let memory: moka::future::Cache<String, Arc<CachedObject>> = moka::future::Cache::builder()
            .max_capacity(1 << 20)
            .expire_after(ObjectExpiry {
                stale_if_error: Duration::ZERO,
            })
            .build();
        let key = "/p/s/live.m3u8".to_owned();
        memory
            .insert(key.clone(), playlist(Duration::from_millis(50)))
            .await;
        memory
            .insert(key.clone(), playlist(Duration::from_secs(60)))
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let kept = memory.get(&key).await;
        assert!(
            kept.is_some_and(|o| o.ttl == Duration::from_secs(60)),
            "the 60 s playlist expired at its predecessor's 50 ms deadline"
        );
    }
}
