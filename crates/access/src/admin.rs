//! The admin API's bearer tokens: who a request's `Authorization: Bearer <token>` is,
//! and whether that may do what the request asks.
//!
//! Two roles: `read` (GET and HEAD) and `admin` (everything). A token may be scoped to a
//! provider: it then reaches only that provider's resources. Tokens are compared in
//! constant time (`ring::hmac::verify` of a fixed message keyed by the presented token
//! against the configured token's tag, so lengths leak nothing either) and never kept
//! or logged in clear beyond the configuration.
//!
//! Servers of one deployment read each other's admin APIs (the deployment overview)
//! without a configured token: they sign each request with a [`PeerKey`] derived from
//! the deployment key, `Authorization: StreamcdnPeer <issued_at_ms>.<hex HMAC-SHA256 of
//! "<METHOD> <path> <issued_at_ms>">`, and are let in as a `read` caller (GET and HEAD
//! only) while the timestamp is within [`PEER_MAX_SKEW_MS`] of the receiver's clock. A
//! captured header opens only its own path for that long, read-only.

use ring::hmac;
use thiserror::Error;

/// The message each token's tag is computed over.
const CONTEXT: &[u8] = b"streamcdn admin token v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Read,
    Admin,
}

/// One configured token.
#[derive(Clone)]
pub struct Token {
    tag: hmac::Tag,
    pub role: Role,
    /// Scoped to one provider.
    pub provider: Option<String>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.debug_struct("Token")
            .field("role", &self.role)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

fn tag(secret: &[u8]) -> hmac::Tag {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), CONTEXT)
}

impl Token {
    pub fn new(secret: &str, role: Role, provider: Option<String>) -> Token {
        Token {
            tag: tag(secret.as_bytes()),
            role,
            provider,
        }
    }
}

/// The scheme of a signed request from another server of the deployment.
pub const PEER_SCHEME: &str = "StreamcdnPeer";
/// How far a peer request's timestamp may be from the receiver's clock, either way.
pub const PEER_MAX_SKEW_MS: u64 = 30_000;

/// The secret servers of a deployment sign admin requests to each other with.
#[derive(Clone)]
pub struct PeerKey(hmac::Key);

impl std::fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerKey(..)")
    }
}

fn peer_message(method: &str, path: &str, issued_at_ms: u64) -> String {
    format!("{method} {path} {issued_at_ms}")
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

/// What the peer key is derived for: the deployment key signs this, and the result is
/// the peers' secret (so a peer's signature is never valid for another of the key's uses).
const PEER_KEY_PURPOSE: &[u8] = b"streamcdn admin peer v1";

impl PeerKey {
    /// `secret`: a key for this use alone (see [`PeerKey::of_deployment`]).
    pub fn new(secret: &[u8]) -> Self {
        PeerKey(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// The deployment's peer key for admin requests, derived from its deployment key.
    pub fn of_deployment(key: &crate::deployment::DeploymentKey) -> Self {
        PeerKey::new(crate::deployment::sign(key, PEER_KEY_PURPOSE).as_bytes())
    }

    /// The `Authorization` value for `method path` (without query) sent at `now_ms`.
    pub fn authorization(&self, method: &str, path: &str, now_ms: u64) -> String {
        let tag = hmac::sign(&self.0, peer_message(method, path, now_ms).as_bytes());
        format!("{PEER_SCHEME} {now_ms}.{}", hex(tag.as_ref()))
    }

    /// Whether `credentials` (after the scheme) sign `method path` recently enough.
    fn verify(&self, method: &str, path: &str, credentials: &str, now_ms: u64) -> bool {
        let Some((issued_at, tag)) = credentials.trim().split_once('.') else {
            return false;
        };
        let (Ok(issued_at_ms), Some(tag)) = (issued_at.parse::<u64>(), unhex(tag)) else {
            return false;
        };
        issued_at_ms.abs_diff(now_ms) <= PEER_MAX_SKEW_MS
            && hmac::verify(
                &self.0,
                peer_message(method, path, issued_at_ms).as_bytes(),
                &tag,
            )
            .is_ok()
    }
}

/// Who a request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    pub provider: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Denied {
    /// No token, or one we do not know: `401`.
    #[error("a valid bearer token is required")]
    Unauthenticated,
    /// Known, but not allowed to do this: `403`.
    #[error("this token may not do that")]
    Forbidden,
}

impl Denied {
    pub fn http_status(self) -> u16 {
        match self {
            Denied::Unauthenticated => 401,
            Denied::Forbidden => 403,
        }
    }
}

/// The configured tokens. Empty: the API is open (allowed only on loopback).
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    tokens: Vec<Token>,
    /// Other servers of the deployment, read-only.
    peers: Option<PeerKey>,
}

/// Paths anyone may read: liveness for load balancers and process supervisors, the root
/// (a link to the dashboard), and the dashboard's page and player script (no data in them: the page asks for a token
/// before it calls the API).
const OPEN_PATHS: &[&str] = &["/", "/healthz", "/dashboard", "/dashboard/hls.min.js"];

impl Tokens {
    pub fn new(tokens: Vec<Token>) -> Self {
        Tokens {
            tokens,
            peers: None,
        }
    }

    /// Also lets in requests signed with `key` (see [`PeerKey`]), as `read` callers.
    pub fn with_peers(mut self, key: PeerKey) -> Self {
        self.peers = Some(key);
        self
    }

    /// No token is configured (peers do not count: the API is open).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Who presents `authorization` (the header's value).
    pub fn identify(&self, authorization: Option<&str>) -> Result<Caller, Denied> {
        let presented = authorization
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(Denied::Unauthenticated)?;
        let presented = hmac::Key::new(hmac::HMAC_SHA256, presented.as_bytes());
        // Every token compared, so the time taken does not say which one matched.
        let mut found = None;
        for token in &self.tokens {
            if hmac::verify(&presented, CONTEXT, token.tag.as_ref()).is_ok() {
                found = Some(token);
            }
        }
        let token = found.ok_or(Denied::Unauthenticated)?;
        Ok(Caller {
            role: token.role,
            provider: token.provider.clone(),
        })
    }

    /// A peer's signed request: `None` if `authorization` is not one, else whether its
    /// signature holds (a forged or stale one is `Unauthenticated`).
    fn identify_peer(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        now_ms: u64,
    ) -> Option<Result<Caller, Denied>> {
        let (scheme, credentials) = authorization?.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case(PEER_SCHEME) {
            return None;
        }
        let signed = self
            .peers
            .as_ref()
            .is_some_and(|key| key.verify(method, path, credentials, now_ms));
        Some(if signed {
            Ok(Caller {
                role: Role::Read,
                provider: None,
            })
        } else {
            Err(Denied::Unauthenticated)
        })
    }

    /// Whether the request (`method` is upper case, `path` without query) may go on,
    /// and as whom (`None` when the API is open or the path needs no token); `now_ms`
    /// (Unix milliseconds) checks a peer's timestamp.
    pub fn authorize(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        now_ms: u64,
    ) -> Result<Option<Caller>, Denied> {
        if self.is_empty() || OPEN_PATHS.contains(&path) {
            return Ok(None);
        }
        let caller = match self.identify_peer(method, path, authorization, now_ms) {
            Some(peer) => peer?,
            None => self.identify(authorization)?,
        };
        let reads = matches!(method, "GET" | "HEAD");
        if !reads && caller.role != Role::Admin {
            return Err(Denied::Forbidden);
        }
        if let Some(provider) = &caller.provider {
            if !provider_may(provider, path) {
                return Err(Denied::Forbidden);
            }
        }
        Ok(Some(caller))
    }
}

/// The admin API's OpenAPI document: any valid token reads it.
const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// What a provider-scoped token reaches: its own settings, keys and signed URLs, and
/// the live stream and recording lists (which their handlers filter to the provider).
fn provider_may(provider: &str, path: &str) -> bool {
    let own = format!("/api/v1/providers/{provider}");
    path == own
        || path
            .strip_prefix(&own)
            .is_some_and(|rest| rest.starts_with('/'))
        || path == "/api/v1/streams"
        || path == OPENAPI_PATH
        || path == "/api/v1/recordings"
        || path == "/api/v1/recordings/archived"
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn tokens() -> Tokens {
        Tokens::new(vec![
            Token::new("admin-secret", Role::Admin, None),
            Token::new("reader-secret", Role::Read, None),
            Token::new("demo-secret", Role::Admin, Some("demo".into())),
        ])
    }

    #[test]
    fn no_token_and_wrong_token_are_401() {
        let t = tokens();
        for header in [
            None,
            Some("Bearer nope"),
            Some("Basic YWRtaW4="),
            Some("Bearer "),
        ] {
            assert_eq!(
                t.authorize("GET", "/api/v1/streams", header, NOW),
                Err(Denied::Unauthenticated),
                "{header:?}"
            );
        }
        assert_eq!(t.authorize("GET", "/healthz", None, NOW), Ok(None));
    }

    #[test]
    fn read_tokens_read_and_admin_tokens_write() {
        let t = tokens();
        assert!(t
            .authorize("GET", "/metrics", Some("Bearer reader-secret"), NOW)
            .is_ok());
        assert_eq!(
            t.authorize(
                "POST",
                "/api/v1/triggers",
                Some("Bearer reader-secret"),
                NOW
            ),
            Err(Denied::Forbidden)
        );
        assert!(t
            .authorize("POST", "/api/v1/triggers", Some("bearer admin-secret"), NOW)
            .is_ok());
    }

    #[test]
    fn provider_tokens_reach_their_provider_only() {
        let t = tokens();
        let demo = Some("Bearer demo-secret");
        let caller = t
            .authorize("GET", "/api/v1/streams", demo, NOW)
            .unwrap()
            .unwrap();
        assert_eq!(caller.provider.as_deref(), Some("demo"));
        assert!(t
            .authorize("PUT", "/api/v1/providers/demo/settings", demo, NOW)
            .is_ok());
        assert!(t.authorize("GET", OPENAPI_PATH, demo, NOW).is_ok());
        for path in [
            "/api/v1/providers/demox/settings",
            "/api/v1/providers/news/settings",
            "/api/v1/nodes",
            "/metrics",
            "/api/v1/triggers",
        ] {
            assert_eq!(
                t.authorize("GET", path, demo, NOW),
                Err(Denied::Forbidden),
                "{path}"
            );
        }
    }

    #[test]
    fn an_open_api_lets_everything_through() {
        assert_eq!(
            Tokens::default().authorize("DELETE", "/api/v1/triggers/1", None, NOW),
            Ok(None)
        );
    }

    #[test]
    fn debug_output_hides_the_token() {
        let text = format!("{:?}", Token::new("admin-secret", Role::Admin, None));
        assert!(!text.contains("secret"), "{text}");
    }

    fn with_peers() -> (Tokens, PeerKey) {
        let key = PeerKey::new(b"derived from the deployment key");
        (tokens().with_peers(key.clone()), key)
    }

    #[test]
    fn a_signed_peer_request_reads_as_a_read_only_caller() {
        let (t, key) = with_peers();
        let signed = key.authorization("GET", "/api/v1/streams", NOW);
        assert!(signed.starts_with("StreamcdnPeer "), "{signed}");
        let caller = t
            .authorize("GET", "/api/v1/streams", Some(&signed), NOW + 1_000)
            .unwrap()
            .unwrap();
        assert_eq!(
            caller,
            Caller {
                role: Role::Read,
                provider: None
            }
        );
        // Signed for a write: still only a reader.
        let post = key.authorization("POST", "/api/v1/triggers", NOW);
        assert_eq!(
            t.authorize("POST", "/api/v1/triggers", Some(&post), NOW),
            Err(Denied::Forbidden)
        );
    }

    #[test]
    fn forged_stale_and_misdirected_peer_requests_are_refused() {
        let (t, key) = with_peers();
        let signed = key.authorization("GET", "/api/v1/streams", NOW);
        let other_key = PeerKey::new(b"another deployment");
        let forged = other_key.authorization("GET", "/api/v1/streams", NOW);
        let tampered = signed.replace(&NOW.to_string(), &(NOW + 1).to_string());
        for (why, header, path, now) in [
            ("another key", forged.as_str(), "/api/v1/streams", NOW),
            ("tampered time", tampered.as_str(), "/api/v1/streams", NOW),
            ("other path", signed.as_str(), "/api/v1/nodes", NOW),
            ("too old", signed.as_str(), "/api/v1/streams", NOW + 30_001),
            (
                "from the future",
                signed.as_str(),
                "/api/v1/streams",
                NOW - 30_001,
            ),
            ("no signature", "StreamcdnPeer", "/api/v1/streams", NOW),
            ("garbage", "StreamcdnPeer x.zz", "/api/v1/streams", NOW),
            ("no time", "StreamcdnPeer .00", "/api/v1/streams", NOW),
        ] {
            assert_eq!(
                t.authorize("GET", path, Some(header), now),
                Err(Denied::Unauthenticated),
                "{why}"
            );
        }
        // A server that knows no peer key refuses every signed request.
        assert_eq!(
            tokens().authorize("GET", "/api/v1/streams", Some(&signed), NOW),
            Err(Denied::Unauthenticated)
        );
        assert!(!format!("{key:?}").contains("derived"));
    }

    #[test]
    fn the_root_is_open() {
        assert_eq!(tokens().authorize("GET", "/", None, NOW), Ok(None));
    }
}
