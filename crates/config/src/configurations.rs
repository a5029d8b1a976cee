//! `[[configurations]]`: the delivery properties this participant owns besides its
//! default one — an id, the hostnames viewers use, and what partners carrying it need.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::checks::{http_url, is_host_name, Invalid};
use crate::humantime_serde;

/// A configuration this participant owns.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigurationConfig {
    pub id: String,
    /// The hostnames viewers use for it.
    pub hostnames: Vec<String>,
    /// Where partners' edges fetch it from (our top tier); default `http.advertise`.
    #[serde(default)]
    pub origin: Option<String>,
    /// Cache rule for partners' caches (RFC 8006 `MI.CachePolicy` `internal`): no
    /// object stays fresh longer there, whatever its `Cache-Control`.
    #[serde(default, with = "humantime_serde::option")]
    pub max_ttl: Option<Duration>,
}

/// Every `[[configurations]]` table: ids and hostnames are each used once.
pub(crate) fn validate(configurations: &[ConfigurationConfig]) -> Result<(), Invalid> {
    let mut ids = HashSet::new();
    let mut hostnames = HashSet::new();
    for (i, configuration) in configurations.iter().enumerate() {
        let key = format!("configurations[{i}]");
        let id = &configuration.id;
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err((
                format!("{key}.id"),
                format!("{id:?} must be 1-64 letters, digits, '-', '_' or '.'"),
            ));
        }
        if !ids.insert(id.clone()) {
            return Err((format!("{key}.id"), format!("{id:?} is used twice")));
        }
        if configuration.hostnames.is_empty() {
            return Err((format!("{key}.hostnames"), "needs at least one".into()));
        }
        for host in &configuration.hostnames {
            if !is_host_name(host) {
                return Err((
                    format!("{key}.hostnames"),
                    format!("{host:?} is not a valid DNS name"),
                ));
            }
            if !hostnames.insert(host.to_ascii_lowercase()) {
                return Err((
                    format!("{key}.hostnames"),
                    format!("{host:?} belongs to two configurations"),
                ));
            }
        }
        if let Some(origin) = &configuration.origin {
            http_url(&format!("{key}.origin"), origin)?;
        }
    }
    Ok(())
}
