//! `[admin]`: the REST admin API and `/metrics` listener, and its bearer tokens.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::checks::Invalid;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// REST admin API and Prometheus `/metrics`.
    pub listen: SocketAddr,
    /// Bearer tokens (`Authorization: Bearer <token>`). None: the API is open, which is
    /// allowed only on a loopback address (`up` generates one in
    /// `<node.data_dir>/admin-token`).
    pub tokens: Vec<AdminTokenConfig>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8081).into(),
            tokens: Vec::new(),
        }
    }
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTokenConfig {
    pub token: String,
    /// `admin` (everything) or `read` (GET and HEAD only).
    #[serde(default)]
    pub role: AdminRole,
    /// Scoped to one provider: its settings, keys and signed URLs, and its streams and
    /// recordings in the lists.
    #[serde(default)]
    pub provider: Option<String>,
}

impl std::fmt::Debug for AdminTokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself: configurations get logged.
        f.debug_struct("AdminTokenConfig")
            .field("role", &self.role)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AdminRole {
    #[default]
    Admin,
    Read,
}

impl AdminConfig {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        for (i, token) in self.tokens.iter().enumerate() {
            if token.token.len() < 16
                || token.token.len() > 256
                || !token.token.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err((
                    format!("admin.tokens[{i}].token"),
                    "must be 16-256 printable characters without spaces".into(),
                ));
            }
            if let Some(provider) = &token.provider {
                if !streamcdn_urls::is_valid_name(provider) {
                    return Err((
                        format!("admin.tokens[{i}].provider"),
                        format!("{provider:?} is not a provider name"),
                    ));
                }
            }
        }
        Ok(())
    }
}
