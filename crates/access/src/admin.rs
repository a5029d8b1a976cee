//! The admin API's bearer tokens: who a request's `Authorization: Bearer <token>` is,
//! and whether that may do what the request asks.
//!
//! Two roles: `read` (GET and HEAD) and `admin` (everything). A token may be scoped to a
//! provider: it then reaches only that provider's resources. Tokens are compared in
//! constant time (`ring::hmac::verify` of a fixed message keyed by the presented token
//! against the configured token's tag, so lengths leak nothing either) and never kept
//! or logged in clear beyond the configuration.

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
}

/// Paths anyone may read: liveness for load balancers and process supervisors, and the
/// dashboard's page and player script (no data in them: the page asks for a token
/// before it calls the API).
const OPEN_PATHS: &[&str] = &["/healthz", "/dashboard", "/dashboard/hls.min.js"];

impl Tokens {
    pub fn new(tokens: Vec<Token>) -> Self {
        Tokens { tokens }
    }

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

    /// Whether the request (`method` is upper case, `path` without query) may go on,
    /// and as whom (`None` when the API is open or the path needs no token).
    pub fn authorize(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
    ) -> Result<Option<Caller>, Denied> {
        if self.is_empty() || OPEN_PATHS.contains(&path) {
            return Ok(None);
        }
        let caller = self.identify(authorization)?;
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
                t.authorize("GET", "/api/v1/streams", header),
                Err(Denied::Unauthenticated),
                "{header:?}"
            );
        }
        assert_eq!(t.authorize("GET", "/healthz", None), Ok(None));
    }

    #[test]
    fn read_tokens_read_and_admin_tokens_write() {
        let t = tokens();
        assert!(t
            .authorize("GET", "/metrics", Some("Bearer reader-secret"))
            .is_ok());
        assert_eq!(
            t.authorize("POST", "/api/v1/triggers", Some("Bearer reader-secret")),
            Err(Denied::Forbidden)
        );
        assert!(t
            .authorize("POST", "/api/v1/triggers", Some("bearer admin-secret"))
            .is_ok());
    }

    #[test]
    fn provider_tokens_reach_their_provider_only() {
        let t = tokens();
        let demo = Some("Bearer demo-secret");
        let caller = t
            .authorize("GET", "/api/v1/streams", demo)
            .unwrap()
            .unwrap();
        assert_eq!(caller.provider.as_deref(), Some("demo"));
        assert!(t
            .authorize("PUT", "/api/v1/providers/demo/settings", demo)
            .is_ok());
        assert!(t.authorize("GET", OPENAPI_PATH, demo).is_ok());
        for path in [
            "/api/v1/providers/demox/settings",
            "/api/v1/providers/news/settings",
            "/api/v1/nodes",
            "/metrics",
            "/api/v1/triggers",
        ] {
            assert_eq!(
                t.authorize("GET", path, demo),
                Err(Denied::Forbidden),
                "{path}"
            );
        }
    }

    #[test]
    fn an_open_api_lets_everything_through() {
        assert_eq!(
            Tokens::default().authorize("DELETE", "/api/v1/triggers/1", None),
            Ok(None)
        );
    }

    #[test]
    fn debug_output_hides_the_token() {
        let text = format!("{:?}", Token::new("admin-secret", Role::Admin, None));
        assert!(!text.contains("secret"), "{text}");
    }
}
