/// Every request path and query an edge or origin receives goes through the URL scheme's
/// parsers before anything else: they must never panic, and whatever parses must build
/// back to a key that parses to itself. Needs `CacheKey` in scope.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = match text.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (text, None),
    };
    if let Ok(key) = CacheKey::parse(path, query) {
        let (p, q) = match key.as_str().split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (key.as_str(), None),
        };
        assert_eq!(CacheKey::parse(p, q).as_ref(), Ok(&key));
    }
}
