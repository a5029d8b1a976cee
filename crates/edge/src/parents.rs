//! A lower tier's source: its parent caches, chosen per URL by rendezvous hashing, the
//! next one on failure.

use futures::future::{BoxFuture, FutureExt};
use streamcdn_urls::{CacheKey, StreamName, Target};

use crate::http_client::HttpClient;
use crate::object::{hash64, CachedObject, Validators};
use crate::source::{FeedBody, FetchError, Revalidated, Source};

pub struct Parents {
    parents: Vec<String>,
    http: HttpClient,
}

impl Parents {
    pub fn new(parents: Vec<String>, http: HttpClient) -> Self {
        Self { parents, http }
    }

    /// By the path alone: every variant of a playlist (its LL-HLS directives) goes to
    /// the parent that already has the playlist.
    fn order_for(&self, key: &CacheKey) -> Vec<String> {
        rendezvous_order(&self.parents, &key.target().path())
    }
}

impl Source for Parents {
    fn fetch<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Result<CachedObject, FetchError>> {
        self.http.fetch(self.order_for(key), key).boxed()
    }

    fn revalidate<'a>(
        &'a self,
        key: &'a CacheKey,
        validators: &'a Validators,
    ) -> BoxFuture<'a, Result<Revalidated, FetchError>> {
        self.http
            .fetch_conditional(self.order_for(key), key, Some(validators))
            .boxed()
    }

    /// From the parent that has the stream's live playlist: one parent relays the
    /// stream for every edge.
    fn open_feed<'a>(
        &'a self,
        stream: &'a StreamName,
        _retry: bool,
    ) -> BoxFuture<'a, Result<FeedBody, FetchError>> {
        let playlist = Target::StreamLive(stream.clone()).path();
        let order = rendezvous_order(&self.parents, &playlist);
        async move {
            self.http
                .open_stream(order, &streamcdn_urls::feed_path(stream))
                .await
        }
        .boxed()
    }
}

/// Parents ordered for `path`: highest rendezvous score first. Every edge computes the
/// same order, so a URL lands on one parent, and removing a parent moves only its URLs.
pub fn rendezvous_order(parents: &[String], path: &str) -> Vec<String> {
    let mut scored: Vec<(u64, &String)> = parents
        .iter()
        .map(|p| (hash64(&[p.as_bytes(), path.as_bytes()]), p))
        .collect();
    scored.sort_by_key(|s| std::cmp::Reverse(s.0));
    scored.into_iter().map(|(_, p)| p.clone()).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn rendezvous_spreads_urls_and_moves_only_a_removed_parents_share() {
        let parents: Vec<String> = (1..=3).map(|i| format!("http://mid{i}:8080")).collect();
        let paths: Vec<String> = (0..3000).map(|i| format!("/p/s/r/{i:06}.m4s")).collect();
        let first = |ps: &[String], path: &str| rendezvous_order(ps, path)[0].clone();
        let mut share = HashMap::new();
        for path in &paths {
            *share.entry(first(&parents, path)).or_insert(0) += 1;
        }
        for (parent, n) in &share {
            assert!((800..1200).contains(n), "{parent} got {n} of 3000");
        }
        let without_mid2: Vec<String> = parents
            .iter()
            .filter(|p| !p.contains("mid2"))
            .cloned()
            .collect();
        for path in &paths {
            let before = first(&parents, path);
            let after = first(&without_mid2, path);
            if !before.contains("mid2") {
                assert_eq!(before, after, "{path} moved although its parent stayed");
            }
        }
    }

    #[test]
    fn every_variant_of_a_playlist_goes_to_one_parent() {
        let parents: Vec<String> = (1..=5).map(|i| format!("http://mid{i}:8080")).collect();
        let source = Parents::new(
            parents.clone(),
            HttpClient::new(std::time::Duration::from_secs(1), 1 << 20),
        );
        let mut firsts = std::collections::HashSet::new();
        for stream in 0..50 {
            let path = format!("/p/s{stream}/live.m3u8");
            let order =
                |query: Option<&str>| source.order_for(&CacheKey::parse(&path, query).unwrap());
            let plain = order(None);
            assert_eq!(plain, rendezvous_order(&parents, &path));
            for query in ["_HLS_msn=5", "_HLS_msn=6&_HLS_part=2", "_HLS_skip=YES&x=1"] {
                assert_eq!(order(Some(query)), plain, "{path}?{query}");
            }
            firsts.insert(plain[0].clone());
        }
        // Different playlists still spread over the parents.
        assert!(firsts.len() > 1);
    }
}
