//! How long a response stays fresh at this tier and how long its upstream request may
//! take, by what was asked (the [`CacheKey`]) and what came back: the LL-HLS rules of
//! rfc8216bis (§6.2.5, Appendix B.1) on top of the upstream's `Cache-Control`. No I/O.

use std::time::Duration;

use axum::http::StatusCode;
use streamcdn_urls::{CacheKey, ObjectKind};

use crate::object::Policy;

/// How long a held request may take upstream. An origin answers a blocking reload
/// `503` after three target durations (rfc8216bis §6.2.5.2) and holds a hinted part
/// until it is complete; this exceeds three target durations up to 12 s (Apple
/// recommends 6 s), so the origin's answer, not our timeout, ends a held request.
pub const HELD_TIMEOUT: Duration = Duration::from_secs(40);

/// A blocking playlist response answers "segment/part N or later": it never becomes
/// wrong, so it is kept as long as the upstream says (B.1: six target durations), up to
/// this.
pub const BLOCKING_PLAYLIST_MAX_TTL: Duration = Duration::from_secs(120);

/// Requests an upstream may hold before answering: a blocking playlist reload
/// (`_HLS_msn`) until the segment or part exists, a part (hinted or not) until it is
/// complete.
pub fn is_held(key: &CacheKey) -> bool {
    key.directives().msn.is_some() || key.target().kind() == ObjectKind::Part
}

/// The upstream timeout for `key`: `normal`, or at least [`HELD_TIMEOUT`] for a held
/// request.
pub fn upstream_timeout(key: &CacheKey, normal: Duration) -> Duration {
    if is_held(key) {
        normal.max(HELD_TIMEOUT)
    } else {
        normal
    }
}

/// The longest an upstream's `Cache-Control` may keep a response to `key` fresh here:
/// the policy of its kind, longer for a blocking playlist reload.
pub fn max_ttl(key: &CacheKey) -> Duration {
    let kind = key.target().kind();
    if kind == ObjectKind::Playlist && key.directives().msn.is_some() {
        BLOCKING_PLAYLIST_MAX_TTL
    } else {
        Policy::of(kind).max_ttl
    }
}

/// How long (counted from its birth upstream) a response to `key` may stay fresh here,
/// whatever its source allowed (`ttl`); zero: not stored at all.
pub fn limit(key: &CacheKey, status: StatusCode, body: &[u8], ttl: Duration) -> Duration {
    if status != StatusCode::OK {
        // A 404 to a held request means "not yet" (a part beyond the hint, a stream
        // about to start): the same request may succeed a moment later, and identical
        // requests in flight are coalesced anyway.
        return if is_held(key) { Duration::ZERO } else { ttl };
    }
    if key.target().kind() != ObjectKind::Playlist || key.directives().msn.is_some() {
        return ttl;
    }
    // A non-blocking LL-HLS playlist gains a part every part target. Like B.1's "half
    // the Target Duration" for whole segments, a tier keeps it fresh for at most half
    // a part target: then each tier adds less than half a part (well under a second)
    // to how far behind the live edge a tuning-in player starts, however many tiers
    // and whatever whole-second max-age and Age the upstream sent.
    match part_target(body) {
        Some(part_target) => ttl.min(part_target / 2),
        None => ttl,
    }
}

/// The `PART-TARGET` of a media playlist's `#EXT-X-PART-INF`, if it has one.
pub fn part_target(body: &[u8]) -> Option<Duration> {
    const TAG: &[u8] = b"#EXT-X-PART-INF:";
    let line = body
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(TAG))?;
    let attributes = std::str::from_utf8(line).ok()?.trim_end();
    let value = attributes
        .split(',')
        .find_map(|a| a.trim().strip_prefix("PART-TARGET="))?;
    let seconds: f64 = value.parse().ok()?;
    (seconds.is_finite() && seconds > 0.0 && seconds <= 60.0)
        .then(|| Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(path: &str, query: Option<&str>) -> CacheKey {
        CacheKey::parse(path, query).unwrap()
    }

    const LL_PLAYLIST: &[u8] = b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART-INF:PART-TARGET=0.33334\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0\n";

    #[test]
    fn the_part_target_is_read_from_the_playlist() {
        assert_eq!(
            part_target(LL_PLAYLIST),
            Some(Duration::from_micros(333_340))
        );
        assert_eq!(
            part_target(b"#EXTM3U\r\n#EXT-X-PART-INF:PART-TARGET=1.0\r\n"),
            Some(Duration::from_secs(1))
        );
        for plain in [
            &b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n"[..],
            b"#EXT-X-PART-INF:PART-TARGET=x\n",
            b"#EXT-X-PART-INF:PART-TARGET=-1\n",
            b"#EXT-X-PART-INF:PART-TARGET=inf\n",
            b"\xff#EXT-X-PART-INF:PART-TARGET=1\n",
        ] {
            assert_eq!(part_target(plain), None, "{plain:?}");
        }
    }

    #[test]
    fn held_requests_are_blocking_reloads_and_parts() {
        let normal = Duration::from_secs(10);
        for (path, query, held) in [
            ("/p/s/live.m3u8", Some("_HLS_msn=5"), true),
            ("/p/s/live.m3u8", Some("_HLS_msn=5&_HLS_part=2"), true),
            ("/p/s/live.m3u8", Some("_HLS_skip=YES"), false),
            ("/p/s/live.m3u8", None, false),
            ("/p/s/r/000042.3.m4s", None, true),
            ("/p/s/r/000042.m4s", None, false),
        ] {
            let key = key(path, query);
            assert_eq!(is_held(&key), held, "{key}");
            let timeout = upstream_timeout(&key, normal);
            assert_eq!(
                timeout > Duration::from_secs(30),
                held,
                "{key}: {timeout:?}"
            );
        }
        let patient = Duration::from_secs(60);
        assert_eq!(
            upstream_timeout(&key("/p/s/r/1.0.m4s", None), patient),
            patient
        );
    }

    #[test]
    fn lifetimes_follow_appendix_b() {
        let ok = StatusCode::OK;
        let long = Duration::from_secs(12);
        let live = key("/p/s/live.m3u8", None);
        // Non-blocking LL playlist: half a part target, whatever the upstream said.
        assert_eq!(
            limit(&live, ok, LL_PLAYLIST, Duration::from_secs(1)),
            Duration::from_micros(166_670)
        );
        let delta = key("/p/s/live.m3u8", Some("_HLS_skip=YES"));
        assert_eq!(
            limit(&delta, ok, LL_PLAYLIST, long),
            Duration::from_micros(166_670)
        );
        // A plain playlist keeps its source's lifetime, within the policy's bound.
        let plain = b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n";
        assert_eq!(limit(&live, ok, plain, long), long);
        assert_eq!(max_ttl(&live), Duration::from_secs(10));
        // Blocking: as long as the upstream says (six target durations), past the
        // ten seconds of a non-blocking playlist.
        let blocking = key("/p/s/live.m3u8", Some("_HLS_msn=7&_HLS_part=1"));
        assert_eq!(limit(&blocking, ok, LL_PLAYLIST, long), long);
        assert_eq!(max_ttl(&blocking), BLOCKING_PLAYLIST_MAX_TTL);
        // Parts: never changed once complete.
        let part = key("/p/s/r/000007.1.m4s", None);
        assert_eq!(limit(&part, ok, b"moof", long), long);
        // Errors to held requests are not kept; to others, as the source said.
        let missing = StatusCode::NOT_FOUND;
        let second = Duration::from_secs(1);
        assert_eq!(limit(&part, missing, b"", second), Duration::ZERO);
        assert_eq!(limit(&blocking, missing, b"", second), Duration::ZERO);
        assert_eq!(limit(&live, missing, b"", second), second);
        let segment = key("/p/s/r/000007.m4s", None);
        assert_eq!(limit(&segment, missing, b"", second), second);
    }
}
