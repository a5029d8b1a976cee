//! Responses to repeated UDP queries, one cache per socket thread (no lock). The
//! responder's output depends only on the request's bytes, the decision for the client's
//! prefix and the zone (fixed), so a query whose bytes after the ID and client prefix
//! were answered before, from the same routing map and edges, gets the same response with
//! its own ID, without being parsed and encoded again (hickory-proto's parse and encode
//! were most of the router's user CPU per query). The caller empties the cache whenever
//! the map or the edges are replaced, and never stores an answer decided afresh.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use streamcdn_routing::prefix::ClientPrefix;

/// Responses kept at most; a full cache starts over (a flood of distinct queries only
/// costs it its hits).
const CAPACITY: usize = 4096;

/// What the caller keeps with a response (`T`: what answering it did besides the bytes).
struct Entry<T> {
    /// The request from byte 2 on (everything but the ID).
    request: Box<[u8]>,
    client: ClientPrefix,
    response: Box<[u8]>,
    extra: T,
}

pub struct ResponseCache<T> {
    entries: HashMap<u64, Entry<T>>,
}

impl<T: Copy> Default for ResponseCache<T> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }
}

/// Requests shorter than a DNS header are never cached (the responder drops them).
const HEADER: usize = 12;

fn key(request: &[u8], client: ClientPrefix) -> u64 {
    let mut hasher = DefaultHasher::new();
    client.hash(&mut hasher);
    request.get(2..).hash(&mut hasher);
    hasher.finish()
}

impl<T: Copy> ResponseCache<T> {
    /// Appends the response stored for the same request bytes (but the ID) from the same
    /// prefix to `out`, with the request's ID, and returns what was kept with it.
    pub fn get(&self, request: &[u8], client: ClientPrefix, out: &mut Vec<u8>) -> Option<T> {
        let entry = self.entries.get(&key(request, client))?;
        let (id, rest) = (request.get(..2)?, request.get(2..)?);
        let response = entry.response.get(2..)?;
        if entry.client != client || rest != &*entry.request {
            return None;
        }
        out.extend_from_slice(id);
        out.extend_from_slice(response);
        Some(entry.extra)
    }

    pub fn insert(&mut self, request: &[u8], client: ClientPrefix, response: &[u8], extra: T) {
        let Some(rest) = request.get(2..).filter(|_| request.len() >= HEADER) else {
            return;
        };
        if self.entries.len() >= CAPACITY {
            self.entries.clear();
        }
        self.entries.insert(
            key(request, client),
            Entry {
                request: rest.into(),
                client,
                response: response.into(),
                extra,
            },
        );
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(s: &str) -> ClientPrefix {
        ClientPrefix::of(s.parse().unwrap())
    }

    #[test]
    fn same_bytes_from_the_same_prefix_get_the_response_with_their_id() {
        let mut cache = ResponseCache::default();
        let request = b"\x12\x34rest of the request".to_vec();
        cache.insert(&request, prefix("192.0.2.1"), b"\x12\x34response", 7);

        let mut out = b"before ".to_vec();
        let extra = cache.get(
            b"\xab\xcdrest of the request",
            prefix("192.0.2.200"),
            &mut out,
        );
        assert_eq!(
            (out.as_slice(), extra),
            (&b"before \xab\xcdresponse"[..], Some(7))
        );
        for (request, client) in [
            (&b"\xab\xcdrest of the request"[..], "192.0.3.1"),
            (b"\xab\xcdrest of the REQUEST", "192.0.2.1"),
            (b"\xab\xcd", "192.0.2.1"),
        ] {
            let mut out = Vec::new();
            assert_eq!(cache.get(request, prefix(client), &mut out), None);
            assert!(out.is_empty());
        }

        cache.clear();
        assert_eq!(
            cache.get(&request, prefix("192.0.2.1"), &mut Vec::new()),
            None
        );
        cache.insert(b"\x12\x34short", prefix("192.0.2.1"), b"x", 1);
        assert_eq!(
            cache.get(b"\x12\x34short", prefix("192.0.2.1"), &mut Vec::new()),
            None
        );
    }
}
