//! Where a cache tier fills from, as one trait: parents, the top tier's ingest servers
//! and on-demand storage are [`Source`]s, and so is a test's fake.

use axum::http::{HeaderValue, StatusCode};
use bytes::Bytes;
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use streamcdn_urls::{CacheKey, StreamName};
use thiserror::Error;

use crate::lifetime;
use crate::object::{CachedObject, Validators};

/// A long response's body (a stream's feed) as it arrives; an error ends it.
pub type FeedBody = std::pin::Pin<Box<dyn futures::Stream<Item = Result<Bytes, String>> + Send>>;

/// Fetches the object a cache key names. A `404` is an object (cached briefly), not
/// an error.
pub trait Source: Send + Sync {
    fn fetch<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Result<CachedObject, FetchError>>;

    /// Asks whether the copy `validators` identify is still current
    /// (`If-None-Match`/`If-Modified-Since`). A source that cannot ask conditionally
    /// fetches the whole object.
    fn revalidate<'a>(
        &'a self,
        key: &'a CacheKey,
        validators: &'a Validators,
    ) -> BoxFuture<'a, Result<Revalidated, FetchError>> {
        let _ = validators;
        self.fetch(key)
            .map(|r| r.map(|o| Revalidated::Modified(Box::new(o))))
            .boxed()
    }

    /// Opens `stream`'s low-latency feed upstream (see `streamcdn_feed`). `retry`: the
    /// last one broke, so where the stream is is looked up again, not taken from a
    /// cache. A source without live streams has none.
    fn open_feed<'a>(
        &'a self,
        stream: &'a StreamName,
        retry: bool,
    ) -> BoxFuture<'a, Result<FeedBody, FetchError>> {
        let _ = (stream, retry);
        async { Err(FetchError::NoServer("no live source".into())) }.boxed()
    }
}

/// The answer to a conditional fetch.
#[derive(Debug)]
pub enum Revalidated {
    /// `304`: the cached body stands, fresh for `ttl` from its birth upstream, which
    /// was `age` ago.
    NotModified {
        ttl: Duration,
        age: Duration,
    },
    Modified(Box<CachedObject>),
}

/// Why a fetch produced nothing to cache. Waiters coalesced on the same key all receive
/// the same value.
#[derive(Debug, Error)]
pub enum FetchError {
    /// The upstream answered, but not with something we may cache (403, no-store...).
    #[error("upstream answered {status}")]
    NotCacheable {
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
    },
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    #[error("upstream timed out")]
    Timeout,
    #[error("object larger than the edge's max_object_size")]
    TooLarge,
    /// The registry knows the stream, but no server that could serve it is alive.
    #[error("no live server holds {0}")]
    NoServer(String),
    #[error("registry: {0}")]
    Registry(String),
}

impl FetchError {
    /// Failures another upstream might not have: the next one is tried.
    pub fn try_next(&self) -> bool {
        match self {
            Self::Unreachable(_) | Self::Timeout => true,
            Self::NotCacheable { status, .. } => status.is_server_error(),
            Self::TooLarge | Self::NoServer(_) | Self::Registry(_) => false,
        }
    }

    /// [`Self::try_next`] for a request of `key`. A held request's `503` or `504` (or
    /// our own timeout) comes after the upstream held it as long as it could
    /// (rfc8216bis §6.2.5.2): the next upstream would only hold it as long again.
    pub fn try_next_for(&self, key: &CacheKey) -> bool {
        match self {
            _ if !lifetime::is_held(key) => self.try_next(),
            Self::Timeout => false,
            Self::NotCacheable { status, .. } => {
                status.is_server_error()
                    && !matches!(
                        *status,
                        StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
                    )
            }
            _ => self.try_next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_upstream_failures_move_on_to_the_next() {
        let answered = |status| FetchError::NotCacheable {
            status,
            content_type: None,
            body: Bytes::new(),
        };
        assert!(FetchError::Timeout.try_next());
        assert!(FetchError::Unreachable("refused".into()).try_next());
        assert!(answered(StatusCode::BAD_GATEWAY).try_next());
        assert!(!answered(StatusCode::FORBIDDEN).try_next());
        assert!(!FetchError::TooLarge.try_next());
        assert!(!FetchError::Registry("down".into()).try_next());
    }

    #[test]
    fn a_held_requests_verdict_is_final() {
        let answered = |status| FetchError::NotCacheable {
            status,
            content_type: None,
            body: Bytes::new(),
        };
        let held = CacheKey::parse("/p/s/live.m3u8", Some("_HLS_msn=9")).unwrap();
        let part = CacheKey::parse("/p/s/r/000009.2.m4s", None).unwrap();
        let plain = CacheKey::parse("/p/s/live.m3u8", None).unwrap();
        for key in [&held, &part] {
            assert!(!answered(StatusCode::SERVICE_UNAVAILABLE).try_next_for(key));
            assert!(!answered(StatusCode::GATEWAY_TIMEOUT).try_next_for(key));
            assert!(!FetchError::Timeout.try_next_for(key));
            assert!(answered(StatusCode::BAD_GATEWAY).try_next_for(key));
            assert!(FetchError::Unreachable("refused".into()).try_next_for(key));
            assert!(!answered(StatusCode::BAD_REQUEST).try_next_for(key));
        }
        assert!(answered(StatusCode::SERVICE_UNAVAILABLE).try_next_for(&plain));
        assert!(FetchError::Timeout.try_next_for(&plain));
    }
}
