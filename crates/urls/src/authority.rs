//! The authority of an absolute URL (`scheme://[userinfo@]host[:port]`), parsed once for
//! every crate that needs a URL's host or port: configured and advertised addresses,
//! hosts in RFC 8007 patterns, certificate names.

/// An absolute URL taken apart: borrowed pieces of the text, nothing decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authority<'a> {
    /// As written (compare with `eq_ignore_ascii_case`).
    pub scheme: &'a str,
    /// The host as written, an IPv6 literal without its brackets; never empty.
    pub host: &'a str,
    pub port: Option<u16>,
    /// What follows the authority (`/path?query#fragment`), possibly empty.
    pub rest: &'a str,
}

impl<'a> Authority<'a> {
    /// `None` for text without `scheme://`, an empty host, an unclosed IPv6 bracket or a
    /// port that is not a number up to 65535. Userinfo (`user@`) is skipped.
    pub fn parse(url: &'a str) -> Option<Self> {
        let (scheme, after) = url.split_once("://")?;
        let valid_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !valid_scheme {
            return None;
        }
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let (authority, rest) = after.split_at(end);
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = match host_port.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']')?;
                match after {
                    "" => (host, None),
                    _ => (host, Some(after.strip_prefix(':')?)),
                }
            }
            None => match host_port.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            },
        };
        let port = match port {
            None | Some("") => None,
            Some(digits) if digits.bytes().all(|b| b.is_ascii_digit()) => {
                Some(digits.parse().ok()?)
            }
            Some(_) => return None,
        };
        (!host.is_empty()).then_some(Authority {
            scheme,
            host,
            port,
            rest,
        })
    }

    /// Whether the scheme is `http` or `https`, in any case.
    pub fn is_http(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("http") || self.scheme.eq_ignore_ascii_case("https")
    }

    /// The host as it goes back into a URL: an IPv6 literal in brackets.
    pub fn host_in_url(&self) -> String {
        match self.host.contains(':') {
            true => format!("[{}]", self.host),
            false => self.host.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Authority;

    fn parsed(url: &str) -> Option<(&str, &str, Option<u16>, &str)> {
        Authority::parse(url).map(|a| (a.scheme, a.host, a.port, a.rest))
    }

    #[test]
    fn hosts_ports_and_what_follows() {
        assert_eq!(
            parsed("http://cdn.example"),
            Some(("http", "cdn.example", None, ""))
        );
        assert_eq!(
            parsed("https://cdn.example:8443/p/s/index.m3u8?x=1"),
            Some(("https", "cdn.example", Some(8443), "/p/s/index.m3u8?x=1"))
        );
        assert_eq!(parsed("http://h?q"), Some(("http", "h", None, "?q")));
        assert_eq!(parsed("http://h#f"), Some(("http", "h", None, "#f")));
        assert_eq!(
            parsed("http://10.0.0.1:80/"),
            Some(("http", "10.0.0.1", Some(80), "/"))
        );
        assert_eq!(parsed("http://h:/"), Some(("http", "h", None, "/")));
    }

    #[test]
    fn ipv6_literals_lose_their_brackets_and_get_them_back() {
        let a = Authority::parse("http://[2001:db8::1]:8080/x").unwrap();
        assert_eq!((a.host, a.port, a.rest), ("2001:db8::1", Some(8080), "/x"));
        assert_eq!(a.host_in_url(), "[2001:db8::1]");
        assert_eq!(parsed("http://[::1]"), Some(("http", "::1", None, "")));
        assert_eq!(parsed("http://[::1"), None);
        assert_eq!(parsed("http://[::1]x"), None);
    }

    #[test]
    fn userinfo_is_skipped() {
        assert_eq!(
            parsed("http://user:pw@Host.Example:81/"),
            Some(("http", "Host.Example", Some(81), "/"))
        );
    }

    #[test]
    fn case_is_kept_and_the_scheme_compared_without_it() {
        let a = Authority::parse("HTTPS://Live.A.Test/").unwrap();
        assert_eq!(a.host, "Live.A.Test");
        assert!(a.is_http());
        assert!(!Authority::parse("rtmp://h/").unwrap().is_http());
    }

    #[test]
    fn text_that_is_no_absolute_url_is_refused() {
        for text in [
            "nonsense",
            "/p/s/",
            "://h",
            "1http://h",
            "http://",
            "http:///x",
        ] {
            assert_eq!(parsed(text), None, "{text}");
        }
        assert_eq!(parsed("http://h:99999/"), None);
        assert_eq!(parsed("http://h:8o/"), None);
    }
}
