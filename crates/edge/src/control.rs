//! Cache operations a command invocation system asks of an edge (purge, invalidate,
//! preposition): what the control request says, which cached objects it names, and
//! what a playlist references. No I/O; `Edge` applies them.
//!
//! An edge serves every hostname of the local participant's default configuration, so
//! its objects are keyed by path and query only. A URL names the object whose
//! [`CacheKey`] its path and query parse to (its host is not compared). A pattern
//! (RFC 8007 §5.2.4, the scheme ignored as §4.8 says) names every object it matches
//! as `http(s)://<host><key>` for any host at all: `*://live.example:8080/p/*`,
//! `*live.example/p/s/r/000001.m4s`, `http://*.example/p/*` and `*/p/*` all name
//! `/p/s/r/000001.m4s`, since the edge serves that object under whatever host the
//! pattern names. A purge reported done must leave nothing the pattern names.

use streamcdn_cdni::control::{ControlRequest, Operation};
use streamcdn_cdni::{AnyHostPattern, PatternMatch};
use streamcdn_urls::authority::Authority;
use streamcdn_urls::CacheKey;
use thiserror::Error;

/// Objects one preposition may bring in, playlists' references included.
pub const MAX_PREPOSITION_OBJECTS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MatcherError {
    #[error("{0:?} is not an http(s) URL with a path")]
    NotUrl(String),
    #[error("{url:?} names nothing this edge caches: {reason}")]
    NotCacheable { url: String, reason: String },
    #[error("pattern {0:?} is invalid")]
    BadPattern(String),
    #[error("patterns are not allowed in a preposition")]
    PatternInPreposition,
}

/// Which cached objects an operation applies to.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// One object, by its cache key.
    Key(String),
    Pattern {
        pattern: PatternMatch,
        compiled: AnyHostPattern,
    },
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Matcher) -> bool {
        match (self, other) {
            (Matcher::Key(a), Matcher::Key(b)) => a == b,
            (Matcher::Pattern { pattern: a, .. }, Matcher::Pattern { pattern: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl Matcher {
    pub fn url(url: &str) -> Result<Matcher, MatcherError> {
        cache_key(url).map(|key| Matcher::Key(key.as_str().to_owned()))
    }

    pub fn pattern(pattern: PatternMatch) -> Result<Matcher, MatcherError> {
        let compiled = pattern
            .on_any_host()
            .map_err(|_| MatcherError::BadPattern(pattern.pattern.clone()))?;
        Ok(Matcher::Pattern { pattern, compiled })
    }

    /// Whether the object stored under `key` is named.
    pub fn matches(&self, key: &str) -> bool {
        match self {
            Matcher::Key(k) => k == key,
            Matcher::Pattern { compiled, .. } => compiled.matches(key),
        }
    }
}

/// The matchers of a request; a URL or pattern that cannot be one is an error line.
pub fn matchers(request: &ControlRequest) -> (Vec<Matcher>, Vec<String>) {
    let mut errors = Vec::new();
    let mut found = Vec::new();
    for url in &request.urls {
        match Matcher::url(url) {
            Ok(m) => found.push(m),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if request.operation == Operation::Preposition && !request.patterns.is_empty() {
        errors.push(MatcherError::PatternInPreposition.to_string());
    } else {
        for pattern in &request.patterns {
            match Matcher::pattern(pattern.clone()) {
                Ok(m) => found.push(m),
                Err(e) => errors.push(e.to_string()),
            }
        }
    }
    (found, errors)
}

/// The cache key an absolute URL (or a bare path) names.
pub fn cache_key(url: &str) -> Result<CacheKey, MatcherError> {
    let path_and_query = match Authority::parse(url) {
        Some(absolute) if absolute.is_http() => {
            absolute.rest.starts_with('/').then_some(absolute.rest)
        }
        Some(_) => None,
        None => url.starts_with('/').then_some(url),
    }
    .ok_or_else(|| MatcherError::NotUrl(url.chars().take(200).collect()))?;
    let path_and_query = path_and_query.split('#').next().unwrap_or_default();
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    CacheKey::parse(path, query).map_err(|e| MatcherError::NotCacheable {
        url: url.chars().take(200).collect(),
        reason: e.to_string(),
    })
}

/// The objects a playlist at `playlist_key` references, as cache keys: a media
/// playlist's init segment (`EXT-X-MAP`) and segments, a multivariant playlist's media
/// playlists (`EXT-X-MEDIA` URIs and variant lines). Relative URIs resolve against the
/// playlist's directory; absolute ones by their path.
pub fn playlist_references(playlist_key: &str, body: &str) -> Vec<String> {
    let path = playlist_key.split('?').next().unwrap_or_default();
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    let resolve = |uri: &str| -> Option<String> {
        let uri = uri.trim();
        let absolute = if uri.contains("://") || uri.starts_with('/') {
            uri.to_owned()
        } else {
            format!("{dir}{uri}")
        };
        cache_key(&absolute).ok().map(|key| key.as_str().to_owned())
    };
    let mut found: Vec<String> = Vec::new();
    for line in body.lines().map(str::trim) {
        let uri = if let Some(tag) = line.strip_prefix('#') {
            if !(tag.starts_with("EXT-X-MAP:") || tag.starts_with("EXT-X-MEDIA:")) {
                continue;
            }
            match quoted_attribute(tag, "URI") {
                Some(uri) => uri,
                None => continue,
            }
        } else if line.is_empty() {
            continue;
        } else {
            line
        };
        if let Some(key) = resolve(uri) {
            if !found.contains(&key) {
                found.push(key);
            }
        }
    }
    found
}

fn quoted_attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
    let len = tag[start..].find('"')?;
    Some(&tag[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_names_its_cache_key_on_any_host() {
        let m = Matcher::url("https://live.example/p/s/r/000001.m4s").unwrap();
        assert!(m.matches("/p/s/r/000001.m4s"));
        assert!(!m.matches("/p/s/r/000002.m4s"));
        // Ignored parameters are normalized away, directives kept.
        let m = Matcher::url("http://127.0.0.1:8080/p/s/live.m3u8?_HLS_msn=5&t=1").unwrap();
        assert!(m.matches("/p/s/live.m3u8?_HLS_msn=5"));
        assert!(!m.matches("/p/s/live.m3u8"));
        assert!(matches!(
            Matcher::url("ftp://x/p/s/index.m3u8"),
            Err(MatcherError::NotUrl(_))
        ));
        assert!(matches!(
            Matcher::url("http://x/p/s/x.exe"),
            Err(MatcherError::NotCacheable { .. })
        ));
        assert!(Matcher::url("/p/s/index.m3u8").is_ok());
    }

    #[test]
    fn patterns_name_objects_under_any_host() {
        let literal = Matcher::pattern(PatternMatch::new("https://live.example/p/s/*")).unwrap();
        assert!(literal.matches("/p/s/r/000001.m4s"));
        assert!(literal.matches("/p/s/live.m3u8"));
        assert!(!literal.matches("/p/other/live.m3u8"));
        let any = Matcher::pattern(PatternMatch::new("*/r/*.m4s")).unwrap();
        assert!(any.matches("/p/s/r/000001.m4s"));
        assert!(!any.matches("/p/s/r/init.mp4"));
        let query = Matcher::pattern(PatternMatch::new("*/live.m3u8")).unwrap();
        assert!(
            query.matches("/p/s/live.m3u8?_HLS_msn=5"),
            "the query is dropped unless asked"
        );
        // The edge serves its objects under every host, so these name them too.
        for shape in [
            "http://*.example/p/*",
            "*://127.0.0.1:8080/p/s/*/000001.m4s",
            "*127.0.0.1:8080/p/s/r/000001.m4s",
        ] {
            let m = Matcher::pattern(PatternMatch::new(shape)).unwrap();
            assert!(m.matches("/p/s/r/000001.m4s"), "{shape}");
            assert!(!m.matches("/q/s/r/000002.m4s"), "{shape}");
        }
        assert!(Matcher::pattern(PatternMatch::new("bad$")).is_err());
    }

    #[test]
    fn preposition_takes_urls_only() {
        let request = ControlRequest {
            trigger_id: "1".into(),
            operation: Operation::Preposition,
            urls: vec!["http://h/p/s/index.m3u8".into(), "nonsense".into()],
            patterns: vec![PatternMatch::new("*")],
            configuration: None,
            issued_at_ms: 0,
            nonce: 0,
        };
        let (found, errors) = matchers(&request);
        assert_eq!(found, [Matcher::Key("/p/s/index.m3u8".into())]);
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn playlists_expand_to_what_they_reference() {
        let media = "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2.0,\n000000.m4s\n#EXTINF:2.0,\n000001.m4s\n#EXT-X-ENDLIST\n";
        assert_eq!(
            playlist_references("/p/s/r/playlist.m3u8", media),
            ["/p/s/r/init.mp4", "/p/s/r/000000.m4s", "/p/s/r/000001.m4s"]
        );
        let multivariant = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nplaylist.m3u8\n#EXT-X-MEDIA:TYPE=AUDIO,URI=\"playlist.m3u8\"\n";
        assert_eq!(
            playlist_references("/p/s/r/index.m3u8", multivariant),
            ["/p/s/r/playlist.m3u8"]
        );
        let stream_level = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nr/playlist.m3u8?x=1\n/p/s/other/playlist.m3u8\n../../etc\n";
        assert_eq!(
            playlist_references("/p/s/index.m3u8", stream_level),
            ["/p/s/r/playlist.m3u8", "/p/s/other/playlist.m3u8"]
        );
    }
}
