//! `[registry]`: where servers announce themselves and find each other.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use streamcdn_registry::RedisAddress;

use crate::checks::{registry_name, Invalid};
use crate::humantime_serde;

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RegistryBackend {
    /// In-process: for `up`, where every role runs in one process.
    #[default]
    Memory,
    /// Shared by every ingest server and edge of a deployment.
    Redis,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    pub backend: RegistryBackend,
    /// For the Redis backend: `redis://host:port/db` (one server), or
    /// `redis+sentinel://host:26379,host:26379,host:26379/<master set>[/db]` (the master
    /// of a set that Redis Sentinel watches, followed across failovers).
    pub url: String,
    /// Prefix of every key, so deployments can share a Redis server.
    pub namespace: String,
    /// How long an announcement lives unless refreshed; servers refresh at a third.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            backend: RegistryBackend::Memory,
            url: "redis://127.0.0.1:6379/".into(),
            namespace: "streamcdn".into(),
            lease: Duration::from_secs(10),
        }
    }
}

impl RegistryConfig {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if !(Duration::from_secs(2)..=Duration::from_secs(300)).contains(&self.lease) {
            return Err(("registry.lease".into(), "must be between 2s and 5m".into()));
        }
        if self.backend == RegistryBackend::Redis {
            RedisAddress::parse(&self.url)
                .map_err(|e| ("registry.url".to_owned(), e.to_string()))?;
        }
        registry_name("registry.namespace", &self.namespace)
    }
}
