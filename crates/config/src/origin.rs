//! `[origin]`: where an ingest serves its streams to edges, and the URL it announces.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::checks::{http_url, Invalid};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OriginConfig {
    /// Where the ingest serves its streams over HTTP to edges.
    pub listen: SocketAddr,
    /// The URL edges reach this origin at, announced in the registry. Defaults to
    /// `http://<listen>`; required when `listen` is a wildcard address.
    pub advertise: Option<String>,
}

impl Default for OriginConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8088).into(),
            advertise: None,
        }
    }
}

impl OriginConfig {
    /// The announced URL, without a trailing slash; `None` when it cannot be derived.
    pub fn advertised_url(&self) -> Option<String> {
        match &self.advertise {
            Some(url) => Some(url.trim_end_matches('/').to_owned()),
            None if self.listen.ip().is_unspecified() => None,
            None => Some(format!("http://{}", self.listen)),
        }
    }
}

impl OriginConfig {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if let Some(url) = &self.advertise {
            http_url("origin.advertise", url)?;
        }
        Ok(())
    }
}
