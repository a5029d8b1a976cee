//! Content providers (publisher accounts), in one place: who they are, how their stream
//! key is checked, and which `archive_after` is in force for each (the provider's own
//! runtime setting in the registry, else its configured one, else the default), and
//! which playback keys sign its URLs (likewise; published in the registry for the
//! edges, which check tokens without asking anyone). The ingest, the archiver and the
//! providers' API ([`api`]) all ask here.

pub mod api;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use streamcdn_config::ProviderConfig;
use streamcdn_registry::{ProviderSettings, Registry, RegistryError};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("unknown provider {0:?}")]
    UnknownProvider(String),
    #[error("wrong stream key")]
    WrongKey,
}

/// The providers of a deployment; cheap to clone.
#[derive(Debug, Clone)]
pub struct Providers {
    by_name: Arc<HashMap<String, ProviderConfig>>,
    default_after: Duration,
    registry: Registry,
}

/// Compares secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Providers {
    /// `default_after` is `archive.default_after`, for providers that set none.
    pub fn new(providers: &[ProviderConfig], default_after: Duration, registry: Registry) -> Self {
        Self {
            by_name: Arc::new(
                providers
                    .iter()
                    .map(|p| (p.name.clone(), p.clone()))
                    .collect(),
            ),
            default_after,
            registry,
        }
    }

    pub fn get(&self, name: &str) -> Option<&ProviderConfig> {
        self.by_name.get(name)
    }

    /// The provider named `name`, if `key` is its stream key.
    pub fn check_key(&self, name: &str, key: &str) -> Result<&ProviderConfig, KeyError> {
        let provider = self
            .get(name)
            .ok_or_else(|| KeyError::UnknownProvider(name.to_owned()))?;
        if constant_time_eq(key.as_bytes(), provider.stream_key.as_bytes()) {
            Ok(provider)
        } else {
            Err(KeyError::WrongKey)
        }
    }

    /// The delay the configuration gives `provider` (before any change through the API).
    pub fn configured_archive_after(&self, provider: &str) -> Duration {
        self.get(provider)
            .and_then(|p| p.archive_after)
            .unwrap_or(self.default_after)
    }

    /// The delay in force for `provider`: its runtime setting, else the configured one.
    /// A registry that does not answer leaves the configured one in force.
    pub async fn archive_after(&self, provider: &str) -> Duration {
        let configured = self.configured_archive_after(provider);
        match self.registry.provider_settings(provider).await {
            Ok(s) => s.archive_after_ms.map_or(configured, Duration::from_millis),
            Err(e) => {
                tracing::debug!(provider, error = %e, "registry unavailable; configured archive_after applies");
                configured
            }
        }
    }

    /// Stores the provider's own `archive_after`, for every server of the deployment.
    pub async fn set_archive_after(
        &self,
        provider: &str,
        after: Duration,
    ) -> Result<(), RegistryError> {
        let mut settings = self.registry.provider_settings(provider).await?;
        settings.archive_after_ms = Some(u64::try_from(after.as_millis()).unwrap_or(u64::MAX));
        self.registry
            .set_provider_settings(provider, &settings)
            .await
    }

    /// The playback keys in force for `provider`: set through the API, else configured.
    pub async fn playback_keys(&self, provider: &str) -> Result<Vec<String>, RegistryError> {
        let configured = self
            .get(provider)
            .map(|p| p.playback_keys.clone())
            .unwrap_or_default();
        let settings: ProviderSettings = self.registry.provider_settings(provider).await?;
        Ok(settings.playback_keys.unwrap_or(configured))
    }

    /// Publishes every configured provider's playback keys in force for the edges (at
    /// start: a provider that turned signing off is published with none).
    pub async fn publish_playback_keys(&self) -> Result<(), RegistryError> {
        for name in self.by_name.keys() {
            let keys = self.playback_keys(name).await?;
            self.registry.set_playback_keys(name, &keys).await?;
        }
        Ok(())
    }

    /// Replaces the provider's playback keys (rotation: the new key first, the old one
    /// second until its URLs expire), for every server of the deployment.
    pub async fn set_playback_keys(
        &self,
        provider: &str,
        keys: Vec<String>,
    ) -> Result<(), RegistryError> {
        let mut settings = self.registry.provider_settings(provider).await?;
        settings.playback_keys = Some(keys.clone());
        self.registry
            .set_provider_settings(provider, &settings)
            .await?;
        self.registry.set_playback_keys(provider, &keys).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn providers() -> Providers {
        let p = |name: &str, after: Option<u64>| ProviderConfig {
            name: name.into(),
            stream_key: format!("{name}-key"),
            format: None,
            archive_after: after.map(Duration::from_secs),
            playback_keys: Vec::new(),
        };
        Providers::new(
            &[p("a", None), p("b", Some(60))],
            Duration::from_secs(300),
            Registry::memory(),
        )
    }

    #[test]
    fn keys_open_only_their_provider() {
        let providers = providers();
        assert_eq!(
            providers.check_key("a", "a-key").map(|p| &p.name[..]),
            Ok("a")
        );
        assert_eq!(
            providers.check_key("a", "b-key").err(),
            Some(KeyError::WrongKey)
        );
        assert_eq!(providers.check_key("a", "").err(), Some(KeyError::WrongKey));
        assert_eq!(
            providers.check_key("c", "a-key").err(),
            Some(KeyError::UnknownProvider("c".into()))
        );
        assert!(constant_time_eq(b"same", b"same") && !constant_time_eq(b"same", b"samf"));
    }

    #[tokio::test]
    async fn archive_after_runtime_then_configured_then_default() {
        let providers = providers();
        assert_eq!(providers.archive_after("a").await, Duration::from_secs(300));
        assert_eq!(providers.archive_after("b").await, Duration::from_secs(60));
        providers
            .set_archive_after("b", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(providers.archive_after("b").await, Duration::from_secs(5));
        assert_eq!(
            providers.configured_archive_after("b"),
            Duration::from_secs(60)
        );
        assert_eq!(providers.archive_after("a").await, Duration::from_secs(300));
    }
}
