//! Conditional requests (RFC 9110 §13): whether a request's validators name the copy a
//! server holds, so that it answers `304 Not Modified`. Over header text only; each
//! server puts the status and headers on its own response.

/// Whether an `If-None-Match` header value names `etag`: `*`, or any tag of the
/// comma-separated list equal to it by the weak comparison (RFC 9110 §13.1.2 and §8.8.3.2:
/// `W/"x"` and `"x"` match each other). `true` means the answer to a `GET` is `304`.
pub fn if_none_match(header: &str, etag: &str) -> bool {
    let opaque = |tag: &str| {
        let tag = tag.trim();
        tag.strip_prefix("W/").unwrap_or(tag).to_owned()
    };
    let ours = opaque(etag);
    header
        .split(',')
        .any(|tag| tag.trim() == "*" || opaque(tag) == ours)
}

#[cfg(test)]
mod tests {
    use super::if_none_match;

    #[test]
    fn strong_tags_match_exactly() {
        assert!(if_none_match("\"v1\"", "\"v1\""));
        assert!(!if_none_match("\"v1\"", "\"v2\""));
        assert!(!if_none_match("\"V1\"", "\"v1\""));
    }

    #[test]
    fn weak_comparison_ignores_the_weak_prefix_on_either_side() {
        assert!(if_none_match("W/\"v1\"", "\"v1\""));
        assert!(if_none_match("\"v1\"", "W/\"v1\""));
        assert!(if_none_match("W/\"v1\"", "W/\"v1\""));
        assert!(!if_none_match("W/\"v2\"", "\"v1\""));
    }

    #[test]
    fn lists_match_any_member_and_whitespace_is_ignored() {
        assert!(if_none_match("\"a\", \"b\",\"v1\"", "\"v1\""));
        assert!(if_none_match("  \"a\" ,\tW/\"v1\"  ", "\"v1\""));
        assert!(!if_none_match("\"a\", \"b\"", "\"v1\""));
    }

    #[test]
    fn a_star_matches_any_tag() {
        assert!(if_none_match("*", "\"v1\""));
        assert!(if_none_match(" * ", "W/\"anything\""));
        assert!(if_none_match("\"a\", *", "\"v1\""));
    }

    #[test]
    fn an_empty_header_matches_nothing() {
        assert!(!if_none_match("", "\"v1\""));
    }
}
