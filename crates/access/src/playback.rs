//! Signed playback URLs: `/t/<token>/<provider>/<stream>/...`.
//!
//! The token rides in the path, so every relative URL inside a playlist (media
//! playlists, init segments, segments, parts) inherits it and a player needs nothing
//! special. It is one path segment of characters that need no escaping:
//!
//! ```text
//! <expires>.<scope>.<client>.<key id>.<signature>
//! 1795340000.demo~cam.c6336400x24.3f9a.<64 hex digits>
//! ```
//!
//! - `expires`: Unix seconds after which the URL is refused;
//! - `scope`: `<provider>` (every stream of it) or `<provider>~<stream>` (names never
//!   hold `.` or `~`);
//! - `client`: `-`, or the client prefix the URL is bound to: the network address in
//!   hex and `x<length>` (`c6336400x24` is 198.51.100.0/24);
//! - `key id`: the first 4 hex digits of SHA-256 of the key, so a provider can have two
//!   keys active while rotating;
//! - `signature`: HMAC-SHA256 with that key over `v1|expires|scope|client`, in hex.
//!
//! The edge checks it without asking anyone: [`check`] over the path, the provider's
//! keys, the client's address and `now`.

use std::net::IpAddr;

use ring::hmac;
use thiserror::Error;

/// The path prefix that introduces a token.
pub const PREFIX: &str = "/t/";
const VERSION: &str = "v1";
const SIGNATURE_BYTES: usize = 32;
/// Longest token taken (a bound on work before the signature is checked).
const MAX_TOKEN_LEN: usize = 256;

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub expires: u64,
    pub provider: String,
    /// `None`: every stream of the provider.
    pub stream: Option<String>,
    /// The client network the URL is bound to.
    pub client: Option<(IpAddr, u8)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Refusal {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token was signed with a key this provider does not hold")]
    UnknownKey,
    #[error("the token's signature does not match")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is for another stream or provider")]
    OtherStream,
    #[error("the token is bound to another client network")]
    OtherClient,
    #[error("this provider's streams need a signed URL")]
    Missing,
}

impl Refusal {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::UnknownKey => "unknown_key",
            Refusal::BadSignature => "bad_signature",
            Refusal::Expired => "expired",
            Refusal::OtherStream => "other_stream",
            Refusal::OtherClient => "other_client",
            Refusal::Missing => "missing",
        }
    }
}

/// The key id of `key`: 4 hex digits of its SHA-256.
pub fn key_id(key: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key);
    hex(&digest.as_ref()[..2])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The network address of `ip/len` (host bits cleared).
fn network(ip: IpAddr, len: u8) -> Option<IpAddr> {
    Some(match ip {
        IpAddr::V4(v4) if len <= 32 => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) if len <= 128 => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            IpAddr::V6((u128::from(v6) & mask).into())
        }
        _ => return None,
    })
}

fn client_text(client: Option<(IpAddr, u8)>) -> String {
    match client {
        None => "-".into(),
        Some((IpAddr::V4(v4), len)) => format!("{}x{len}", hex(&v4.octets())),
        Some((IpAddr::V6(v6), len)) => format!("{}x{len}", hex(&v6.octets())),
    }
}

fn parse_client(text: &str) -> Option<Option<(IpAddr, u8)>> {
    if text == "-" {
        return Some(None);
    }
    let (address, len) = text.split_once('x')?;
    let len: u8 = len.parse().ok()?;
    let bytes = unhex(address)?;
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    // Canonical only: the network address itself, so one grant has one text.
    (network(ip, len)? == ip).then_some(Some((ip, len)))
}

fn message(expires: u64, scope: &str, client: &str) -> String {
    format!("{VERSION}|{expires}|{scope}|{client}")
}

fn signature(key: &[u8], message: &str) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(&key, message.as_bytes()).as_ref().to_vec()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum MintError {
    #[error("provider and stream names are 1-64 letters, digits, '-' or '_'")]
    BadName,
    #[error("a client prefix is at most /32 for IPv4 and /128 for IPv6")]
    BadPrefix,
}

/// A token granting `grant`, signed with `key`.
pub fn mint(key: &[u8], grant: &Grant) -> Result<String, MintError> {
    if !valid_name(&grant.provider) || grant.stream.as_deref().is_some_and(|s| !valid_name(s)) {
        return Err(MintError::BadName);
    }
    let client = match grant.client {
        Some((ip, len)) => Some((network(ip, len).ok_or(MintError::BadPrefix)?, len)),
        None => None,
    };
    let scope = match &grant.stream {
        Some(stream) => format!("{}~{stream}", grant.provider),
        None => grant.provider.clone(),
    };
    let client = client_text(client);
    let signed = signature(key, &message(grant.expires, &scope, &client));
    Ok(format!(
        "{}.{scope}.{client}.{}.{}",
        grant.expires,
        key_id(key),
        hex(&signed)
    ))
}

/// A playback path with its token: `/t/<token><path>` (`path` starts with `/`).
pub fn signed_path(token: &str, path: &str) -> String {
    format!("{PREFIX}{token}{path}")
}

/// A path that starts with a token: the token and the path after it (with its `/`).
pub fn split(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix(PREFIX)?;
    let slash = rest.find('/')?;
    Some((&rest[..slash], &rest[slash..]))
}

/// The provider and stream a playback path (without token) names, if any.
fn names(path: &str) -> Option<(&str, &str)> {
    let mut parts = path.strip_prefix('/')?.split('/');
    Some((parts.next()?, parts.next().unwrap_or("")))
}

/// Checks `token` for a request of `path` (the path after the token) from `client` at
/// `now` against the provider's `keys`; what it grants, or why not.
pub fn check(
    token: &str,
    path: &str,
    keys: &[Vec<u8>],
    client: IpAddr,
    now: u64,
) -> Result<Grant, Refusal> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(Refusal::Malformed);
    }
    let fields: Vec<&str> = token.split('.').collect();
    let [expires, scope, client_field, kid, signed] = fields[..] else {
        return Err(Refusal::Malformed);
    };
    let expires: u64 = expires
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| expires.parse().ok())
        .flatten()
        .ok_or(Refusal::Malformed)?;
    let (provider, stream) = match scope.split_once('~') {
        Some((p, s)) => (p, Some(s)),
        None => (scope, None),
    };
    if !valid_name(provider) || stream.is_some_and(|s| !valid_name(s)) {
        return Err(Refusal::Malformed);
    }
    let bound = parse_client(client_field).ok_or(Refusal::Malformed)?;
    let signed = unhex(signed)
        .filter(|s| s.len() == SIGNATURE_BYTES)
        .ok_or(Refusal::Malformed)?;
    let key = keys
        .iter()
        .find(|k| key_id(k) == kid)
        .ok_or(Refusal::UnknownKey)?;
    // In constant time: the signature must not be guessable byte by byte.
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    if hmac::verify(
        &key,
        message(expires, scope, client_field).as_bytes(),
        &signed,
    )
    .is_err()
    {
        return Err(Refusal::BadSignature);
    }
    if now > expires {
        return Err(Refusal::Expired);
    }
    let (path_provider, path_stream) = names(path).ok_or(Refusal::OtherStream)?;
    if path_provider != provider || stream.is_some_and(|s| s != path_stream) {
        return Err(Refusal::OtherStream);
    }
    if let Some((network_address, len)) = bound {
        let client = match (client, network_address) {
            // An IPv4 client reached over an IPv6 socket.
            (IpAddr::V6(v6), IpAddr::V4(_)) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
            _ => client,
        };
        if network(client, len) != Some(network_address) {
            return Err(Refusal::OtherClient);
        }
    }
    Ok(Grant {
        expires,
        provider: provider.to_owned(),
        stream: stream.map(str::to_owned),
        client: bound,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"a provider's playback key";
    const OLD: &[u8] = b"the key before the rotation";

    fn grant(stream: Option<&str>, client: Option<(&str, u8)>) -> Grant {
        Grant {
            expires: 2_000,
            provider: "demo".into(),
            stream: stream.map(str::to_owned),
            client: client.map(|(ip, len)| (ip.parse().unwrap(), len)),
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_minted_token_opens_its_stream_only() {
        let token = mint(KEY, &grant(Some("cam"), None)).unwrap();
        let keys = vec![KEY.to_vec()];
        let ok = check(
            &token,
            "/demo/cam/index.m3u8",
            &keys,
            ip("192.0.2.1"),
            1_000,
        )
        .unwrap();
        assert_eq!(ok.stream.as_deref(), Some("cam"));
        assert!(check(
            &token,
            "/demo/cam/20261122T000000Z-ab12/000001.m4s",
            &keys,
            ip("192.0.2.1"),
            2_000
        )
        .is_ok());
        assert_eq!(
            check(
                &token,
                "/demo/other/index.m3u8",
                &keys,
                ip("192.0.2.1"),
                1_000
            ),
            Err(Refusal::OtherStream)
        );
        assert_eq!(
            check(
                &token,
                "/news/cam/index.m3u8",
                &keys,
                ip("192.0.2.1"),
                1_000
            ),
            Err(Refusal::OtherStream)
        );
        assert_eq!(
            check(
                &token,
                "/demo/cam/index.m3u8",
                &keys,
                ip("192.0.2.1"),
                2_001
            ),
            Err(Refusal::Expired)
        );
    }

    #[test]
    fn a_provider_token_opens_every_stream_of_it() {
        let token = mint(KEY, &grant(None, None)).unwrap();
        let keys = vec![KEY.to_vec()];
        assert!(check(&token, "/demo/any/index.m3u8", &keys, ip("::1"), 0).is_ok());
        assert_eq!(
            check(&token, "/other/any/index.m3u8", &keys, ip("::1"), 0),
            Err(Refusal::OtherStream)
        );
    }

    #[test]
    fn a_bound_token_opens_for_its_client_network_only() {
        let token = mint(KEY, &grant(Some("cam"), Some(("198.51.100.77", 24)))).unwrap();
        assert!(token.contains(".c6336400x24."), "{token}");
        let keys = vec![KEY.to_vec()];
        let path = "/demo/cam/index.m3u8";
        assert!(check(&token, path, &keys, ip("198.51.100.9"), 0).is_ok());
        assert!(check(&token, path, &keys, ip("::ffff:198.51.100.9"), 0).is_ok());
        assert_eq!(
            check(&token, path, &keys, ip("198.51.101.9"), 0),
            Err(Refusal::OtherClient)
        );
        let v6 = mint(KEY, &grant(Some("cam"), Some(("2001:db8:1:2::5", 48)))).unwrap();
        assert!(check(&v6, path, &keys, ip("2001:db8:1:ffff::1"), 0).is_ok());
        assert_eq!(
            check(&v6, path, &keys, ip("2001:db8:2::1"), 0),
            Err(Refusal::OtherClient)
        );
    }

    #[test]
    fn two_keys_are_active_while_rotating() {
        let old = mint(OLD, &grant(Some("cam"), None)).unwrap();
        let new = mint(KEY, &grant(Some("cam"), None)).unwrap();
        let both = vec![KEY.to_vec(), OLD.to_vec()];
        let path = "/demo/cam/index.m3u8";
        assert!(check(&old, path, &both, ip("192.0.2.1"), 0).is_ok());
        assert!(check(&new, path, &both, ip("192.0.2.1"), 0).is_ok());
        assert_eq!(
            check(&old, path, &[KEY.to_vec()], ip("192.0.2.1"), 0),
            Err(Refusal::UnknownKey)
        );
    }

    #[test]
    fn any_change_to_a_token_breaks_it() {
        let token = mint(KEY, &grant(Some("cam"), Some(("198.51.100.0", 24)))).unwrap();
        let keys = vec![KEY.to_vec()];
        let path = "/demo/cam/index.m3u8";
        // A later expiry, a wider scope, no binding: all signed, all refused.
        let fields: Vec<&str> = token.split('.').collect();
        for forged in [
            format!("9999999999.{}", fields[1..].join(".")),
            format!("{}.demo.{}", fields[0], fields[2..].join(".")),
            format!("{}.{}.-.{}", fields[0], fields[1], fields[3..].join(".")),
        ] {
            assert_eq!(
                check(&forged, path, &keys, ip("198.51.100.1"), 0),
                Err(Refusal::BadSignature),
                "{forged}"
            );
        }
        let mut flipped = token.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(
            check(&flipped, path, &keys, ip("198.51.100.1"), 0),
            Err(Refusal::BadSignature)
        );
        for junk in [
            "",
            "....",
            "1.demo.-.ab.cd",
            "x.demo.-.0000.00",
            &"9".repeat(300),
        ] {
            assert!(
                check(junk, path, &keys, ip("198.51.100.1"), 0).is_err(),
                "{junk:?}"
            );
        }
    }

    #[test]
    fn tokens_ride_in_the_path() {
        let token = mint(KEY, &grant(Some("cam"), None)).unwrap();
        let path = signed_path(&token, "/demo/cam/index.m3u8");
        assert_eq!(split(&path), Some((token.as_str(), "/demo/cam/index.m3u8")));
        assert_eq!(split("/demo/cam/index.m3u8"), None);
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b)));
    }

    #[test]
    fn names_are_checked_when_minting() {
        let mut bad = grant(Some("a/b"), None);
        assert_eq!(mint(KEY, &bad), Err(MintError::BadName));
        bad.stream = None;
        bad.client = Some((ip("10.0.0.0"), 33));
        assert_eq!(mint(KEY, &bad), Err(MintError::BadPrefix));
    }
}
