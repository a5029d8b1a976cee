//! The control request the command invocation system sends each of its servers
//! (`POST /_streamcdn/control`, [`CONTROL_HEADER`] carrying the body's signature with
//! the deployment key) and the server's reply: the wire types both sides share, so the
//! CIS needs no cache's code to speak to one.

use serde::{Deserialize, Serialize};

use crate::PatternMatch;

/// The header holding a control request's signature.
pub const CONTROL_HEADER: &str = "X-Streamcdn-Control";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Purge,
    Invalidate,
    Preposition,
}

impl Operation {
    pub fn label(self) -> &'static str {
        match self {
            Operation::Purge => "purge",
            Operation::Invalidate => "invalidate",
            Operation::Preposition => "preposition",
        }
    }
}

/// The body of `POST /_streamcdn/control` (signed like probe requests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlRequest {
    #[serde(rename = "trigger-id")]
    pub trigger_id: String,
    #[serde(rename = "type")]
    pub operation: Operation,
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default)]
    pub patterns: Vec<PatternMatch>,
    /// The partner configuration the objects belong to; none: the local default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<String>,
    /// Freshness and single use, checked by the endpoint's replay guard.
    pub issued_at_ms: u64,
    pub nonce: u64,
}

/// What the edge did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlReply {
    #[serde(rename = "trigger-id")]
    pub trigger_id: String,
    pub purged: usize,
    pub invalidated: usize,
    pub prepositioned: usize,
    /// One line per URL that could not be acted upon.
    #[serde(default)]
    pub errors: Vec<String>,
}
