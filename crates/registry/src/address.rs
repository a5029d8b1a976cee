//! Where the Redis registry is: one server (`redis://`, `rediss://`) or a master set
//! that Redis Sentinel watches (`redis+sentinel://`). Pure parsing, no I/O: the
//! configuration checks a URL with it before anything connects.

use thiserror::Error;

/// The Sentinel port when a sentinel's address names none.
pub const SENTINEL_PORT: u16 = 26379;
/// The scheme of a Sentinel-watched registry.
pub const SENTINEL_SCHEME: &str = "redis+sentinel://";

/// A registry address, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisAddress {
    /// One Redis server, the URL as the `redis` crate takes it.
    Server(String),
    /// `redis+sentinel://[[user]:password@]host[:port],host[:port],.../<master set>[/<db>]`:
    /// the sentinels to ask for the current master of the set; the credentials and
    /// database are the master's.
    Sentinel {
        sentinels: Vec<(String, u16)>,
        master_set: String,
        db: i64,
        username: Option<String>,
        password: Option<String>,
    },
}

/// Why a registry URL is not usable; each says what to write instead.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AddressError {
    #[error("{0:?} is neither a redis:// (or rediss://) URL nor a redis+sentinel:// one")]
    Scheme(String),
    #[error("{url:?}: {reason}")]
    Server { url: String, reason: String },
    #[error(
        "names no sentinel: write redis+sentinel://host:26379,host:26379,host:26379/<master set>"
    )]
    NoSentinel,
    #[error("sentinel {0:?} is not host[:port] (an IPv6 address goes in brackets: [::1]:26379)")]
    SentinelHost(String),
    #[error("sentinel {sentinel:?}: port {port:?} is not a number from 1 to 65535")]
    SentinelPort { sentinel: String, port: String },
    #[error("names no master set after the sentinels: write redis+sentinel://hosts/<master set>, the name in the sentinels' `sentinel monitor` line")]
    NoMasterSet,
    #[error("master set {0:?} is not a plain name (letters, digits, `.`, `-`, `_`)")]
    MasterSet(String),
    #[error("database {0:?} is not a number from 0 to 15 (the path is /<master set>[/<db>])")]
    Database(String),
    #[error("{0:?} after the database: the path is /<master set>[/<db>], and no query is taken")]
    Trailing(String),
    #[error("percent-encoded credentials are not supported; use plain characters other than `@`, `:`, `/`")]
    EncodedCredentials,
}

impl RedisAddress {
    pub fn parse(url: &str) -> Result<Self, AddressError> {
        if let Some(rest) = url.strip_prefix(SENTINEL_SCHEME) {
            return parse_sentinel(rest);
        }
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(AddressError::Scheme(url.to_owned()));
        }
        redis::Client::open(url).map_err(|e| AddressError::Server {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self::Server(url.to_owned()))
    }
}

fn parse_sentinel(rest: &str) -> Result<RedisAddress, AddressError> {
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (credentials, hosts) = match authority.rsplit_once('@') {
        Some((credentials, hosts)) => (Some(credentials), hosts),
        None => (None, authority),
    };
    let (username, password) = match credentials {
        None => (None, None),
        Some(c) if c.contains('%') => return Err(AddressError::EncodedCredentials),
        Some(c) => match c.split_once(':') {
            Some((user, password)) => (
                Some(user.to_owned()).filter(|u| !u.is_empty()),
                Some(password.to_owned()),
            ),
            None => (Some(c.to_owned()).filter(|u| !u.is_empty()), None),
        },
    };
    let mut sentinels = Vec::new();
    for host in hosts.split(',').filter(|h| !h.is_empty()) {
        sentinels.push(parse_host(host)?);
    }
    if sentinels.is_empty() {
        return Err(AddressError::NoSentinel);
    }
    let mut parts = path.split('/');
    let master_set = parts.next().unwrap_or_default();
    if master_set.is_empty() {
        return Err(AddressError::NoMasterSet);
    }
    if !master_set
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(AddressError::MasterSet(master_set.to_owned()));
    }
    let db = match parts.next() {
        None | Some("") => 0,
        Some(db) => db
            .parse::<i64>()
            .ok()
            .filter(|n| (0..=15).contains(n))
            .ok_or_else(|| AddressError::Database(db.to_owned()))?,
    };
    let trailing: Vec<&str> = parts.collect();
    if !trailing.iter().all(|p| p.is_empty()) {
        return Err(AddressError::Trailing(trailing.join("/")));
    }
    Ok(RedisAddress::Sentinel {
        sentinels,
        master_set: master_set.to_owned(),
        db,
        username,
        password,
    })
}

fn parse_host(sentinel: &str) -> Result<(String, u16), AddressError> {
    let bad_host = || AddressError::SentinelHost(sentinel.to_owned());
    let (host, port) = if let Some(bracketed) = sentinel.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or_else(bad_host)?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or_else(bad_host)?)),
        }
    } else {
        match sentinel.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (sentinel, None),
        }
    };
    if host.is_empty()
        || host.contains(['?', '#', '@', ' '])
        || (!sentinel.starts_with('[') && host.contains(':'))
    {
        return Err(bad_host());
    }
    let port = match port {
        None => SENTINEL_PORT,
        Some(port) => port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
            AddressError::SentinelPort {
                sentinel: sentinel.to_owned(),
                port: port.to_owned(),
            }
        })?,
    };
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentinel(url: &str) -> (Vec<(String, u16)>, String, i64, Option<String>) {
        match RedisAddress::parse(url).unwrap() {
            RedisAddress::Sentinel {
                sentinels,
                master_set,
                db,
                password,
                ..
            } => (sentinels, master_set, db, password),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sentinel_urls_name_the_sentinels_and_the_master_set() {
        let (hosts, set, db, password) =
            sentinel("redis+sentinel://a:26379,b:26380,[::1]/mymaster/2");
        assert_eq!(
            hosts,
            [
                ("a".to_owned(), 26379),
                ("b".to_owned(), 26380),
                ("::1".to_owned(), 26379)
            ]
        );
        assert_eq!((set.as_str(), db, password), ("mymaster", 2, None));
        let (hosts, _, db, password) = sentinel("redis+sentinel://:secret@h/m/");
        assert_eq!(
            (hosts, db, password.as_deref()),
            (vec![("h".to_owned(), 26379)], 0, Some("secret"))
        );
    }

    #[test]
    fn plain_urls_pass_through() {
        assert_eq!(
            RedisAddress::parse("redis://127.0.0.1:6379/1").unwrap(),
            RedisAddress::Server("redis://127.0.0.1:6379/1".into())
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let error = |url: &str| RedisAddress::parse(url).unwrap_err();
        assert!(matches!(error("http://x"), AddressError::Scheme(_)));
        assert_eq!(error("redis+sentinel:///m"), AddressError::NoSentinel);
        assert_eq!(error("redis+sentinel://a,b"), AddressError::NoMasterSet);
        assert_eq!(error("redis+sentinel://a,b/"), AddressError::NoMasterSet);
        assert!(matches!(
            error("redis+sentinel://a:x/m"),
            AddressError::SentinelPort { .. }
        ));
        assert!(matches!(
            error("redis+sentinel://a:0/m"),
            AddressError::SentinelPort { .. }
        ));
        assert!(matches!(
            error("redis+sentinel://::1/m"),
            AddressError::SentinelHost(_)
        ));
        assert!(matches!(
            error("redis+sentinel://[::1/m"),
            AddressError::SentinelHost(_)
        ));
        assert!(matches!(
            error("redis+sentinel://a/my master"),
            AddressError::MasterSet(_)
        ));
        assert!(matches!(
            error("redis+sentinel://a/m?x=1"),
            AddressError::MasterSet(_)
        ));
        assert!(matches!(
            error("redis+sentinel://a/m/16"),
            AddressError::Database(_)
        ));
        assert!(matches!(
            error("redis+sentinel://a/m/1/x"),
            AddressError::Trailing(_)
        ));
    }

    #[test]
    fn garbage_never_panics() {
        let pieces = [
            "redis+sentinel://",
            "redis://",
            "[",
            "]",
            ":",
            "/",
            ",",
            "@",
            "%",
            "a",
            "1",
            "65536",
            "::",
            "?",
            "",
        ];
        let mut seed = 7u64;
        for _ in 0..5000 {
            let mut url = String::new();
            for _ in 0..6 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                url.push_str(pieces[(seed >> 33) as usize % pieces.len()]);
            }
            let _ = RedisAddress::parse(&url);
        }
    }
}
