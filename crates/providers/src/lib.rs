//! Content providers (publisher accounts), in one place: who they are, how their stream
//! keys are checked (the provider's key opens every stream, a stream key its own
//! stream; stream keys can be changed at runtime), which `archive_after` is in force
//! for each (the provider's own runtime setting in the registry, else its configured
//! one, else the default), which playback keys sign its URLs (likewise; published in
//! the registry for the edges, which check tokens without asking anyone), and its HTTP
//! hooks ([`hooks`], [`hook_client`]). The ingest, the archiver and the providers' API
//! (the `api` module, which depends on this one) all ask here.

pub mod api;
pub mod hook_client;
pub mod hooks;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use streamcdn_config::ProviderConfig;
use streamcdn_registry::{ProviderSettings, Registry, RegistryError};
use thiserror::Error;

use hook_client::Hooks;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("unknown provider {0:?}")]
    UnknownProvider(String),
    #[error("wrong stream key")]
    WrongKey,
}

/// Which key opened a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// The provider's `stream_key`: every stream of the provider.
    Provider,
    /// A key of this one stream.
    Stream,
}

impl KeyKind {
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::Provider => "provider",
            KeyKind::Stream => "stream",
        }
    }
}

/// Where a stream's key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeySource {
    /// The provider's configuration (`stream_keys`).
    Config,
    /// Set through the providers' API.
    Api,
}

/// A stream's key as the API shows it: never the key, only its id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StreamKeyInfo {
    pub stream: String,
    /// The first 4 hex digits of the key's SHA-256.
    pub key_id: String,
    pub source: KeySource,
}

/// The stream key in force for one stream.
enum StreamKey<'a> {
    Configured(&'a str),
    /// SHA-256 (hex) of a key set through the API.
    Digest(String),
}

/// The stream keys changed through the API, by provider, as last read from the registry.
type RuntimeKeys = BTreeMap<String, Option<String>>;

/// The providers of a deployment; cheap to clone.
#[derive(Debug, Clone)]
pub struct Providers {
    by_name: Arc<HashMap<String, ProviderConfig>>,
    default_after: Duration,
    registry: Registry,
    hooks: Hooks,
    /// What the registry last said of each provider's runtime stream keys: used while
    /// it does not answer, so a key removed through the API stays removed.
    last_stream_keys: Arc<Mutex<HashMap<String, RuntimeKeys>>>,
    /// Each provider's rewind window as last read, and when: the live playlist asks
    /// for it on every request, the registry is asked at most once per
    /// [`DVR_WINDOW_FRESH`].
    dvr_windows: Arc<Mutex<HashMap<String, ReadWindow>>>,
}

/// A provider's rewind window as read, and when.
type ReadWindow = (std::time::Instant, Option<Duration>);

/// How long a provider's `dvr_window` read from the registry is used before asking
/// again (a change through the API reaches every origin within this).
pub const DVR_WINDOW_FRESH: Duration = Duration::from_secs(2);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Compares secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The SHA-256 of a key as lowercase hex: how the registry keeps stream keys set
/// through the API.
pub fn key_digest(key: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, key.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
            hooks: Hooks::new(providers),
            last_stream_keys: Arc::default(),
            dvr_windows: Arc::default(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&ProviderConfig> {
        self.by_name.get(name)
    }

    /// The providers' HTTP hooks.
    pub fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    /// The provider named `name`, if `key` is its own stream key (the one that opens
    /// every stream, and its settings where the admin API is open).
    pub fn check_provider_key(&self, name: &str, key: &str) -> Result<&ProviderConfig, KeyError> {
        let provider = self
            .get(name)
            .ok_or_else(|| KeyError::UnknownProvider(name.to_owned()))?;
        if constant_time_eq(key.as_bytes(), provider.stream_key.as_bytes()) {
            Ok(provider)
        } else {
            Err(KeyError::WrongKey)
        }
    }

    /// May `key` publish `stream` of provider `name`? The provider's key opens any of
    /// its streams, a stream key only its own stream. Both are compared in constant
    /// time, whichever matches.
    pub async fn check_key(
        &self,
        name: &str,
        stream: &str,
        key: &str,
    ) -> Result<(&ProviderConfig, KeyKind), KeyError> {
        let provider = self
            .get(name)
            .ok_or_else(|| KeyError::UnknownProvider(name.to_owned()))?;
        let opens_provider = constant_time_eq(key.as_bytes(), provider.stream_key.as_bytes());
        let opens_stream = match self.stream_key(provider, stream).await {
            Some(StreamKey::Configured(k)) => constant_time_eq(key.as_bytes(), k.as_bytes()),
            Some(StreamKey::Digest(d)) => {
                constant_time_eq(key_digest(key).as_bytes(), d.as_bytes())
            }
            None => false,
        };
        match (opens_provider, opens_stream) {
            (true, _) => Ok((provider, KeyKind::Provider)),
            (false, true) => Ok((provider, KeyKind::Stream)),
            (false, false) => Err(KeyError::WrongKey),
        }
    }

    /// The key of `stream` in force: the API's change, else the configured one.
    async fn stream_key<'a>(
        &self,
        provider: &'a ProviderConfig,
        stream: &str,
    ) -> Option<StreamKey<'a>> {
        let runtime = match self.registry.provider_settings(&provider.name).await {
            Ok(settings) => {
                self.remember(&provider.name, &settings.stream_keys);
                settings.stream_keys
            }
            Err(e) => {
                tracing::warn!(provider = provider.name, error = %e, "registry unavailable; stream keys as last read");
                self.last_known(&provider.name)
            }
        };
        match runtime.get(stream) {
            Some(Some(digest)) => Some(StreamKey::Digest(digest.clone())),
            Some(None) => None,
            None => provider
                .stream_keys
                .get(stream)
                .map(|k| StreamKey::Configured(k)),
        }
    }

    fn remember(&self, provider: &str, keys: &RuntimeKeys) {
        let mut last = self
            .last_stream_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.get(provider) != Some(keys) {
            last.insert(provider.to_owned(), keys.clone());
        }
    }

    fn last_known(&self, provider: &str) -> RuntimeKeys {
        let last = self
            .last_stream_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        last.get(provider).cloned().unwrap_or_default()
    }

    /// The provider's stream keys in force, by stream (ids only).
    pub async fn stream_keys(&self, provider: &str) -> Result<Vec<StreamKeyInfo>, RegistryError> {
        let configured = self
            .get(provider)
            .map(|p| p.stream_keys.clone())
            .unwrap_or_default();
        let runtime = self.registry.provider_settings(provider).await?.stream_keys;
        self.remember(provider, &runtime);
        let mut keys: BTreeMap<String, StreamKeyInfo> = configured
            .iter()
            .map(|(stream, key)| {
                let info = StreamKeyInfo {
                    stream: stream.clone(),
                    key_id: key_digest(key)[..4].to_owned(),
                    source: KeySource::Config,
                };
                (stream.clone(), info)
            })
            .collect();
        for (stream, digest) in runtime {
            match digest {
                Some(digest) => {
                    let info = StreamKeyInfo {
                        stream: stream.clone(),
                        key_id: digest.get(..4).unwrap_or_default().to_owned(),
                        source: KeySource::Api,
                    };
                    keys.insert(stream, info);
                }
                None => {
                    keys.remove(&stream);
                }
            }
        }
        Ok(keys.into_values().collect())
    }

    /// Sets `stream`'s key (`Some`, replacing any configured one: a rotation, the old
    /// key stops opening the stream at once) or removes it (`None`), for every server
    /// of the deployment. Returns whether the stream had a key before.
    pub async fn set_stream_key(
        &self,
        provider: &str,
        stream: &str,
        key: Option<&str>,
    ) -> Result<bool, RegistryError> {
        let had = self
            .stream_keys(provider)
            .await?
            .iter()
            .any(|k| k.stream == stream);
        if key.is_none() && !had {
            return Ok(false);
        }
        let mut settings = self.registry.provider_settings(provider).await?;
        settings
            .stream_keys
            .insert(stream.to_owned(), key.map(key_digest));
        self.registry
            .set_provider_settings(provider, &settings)
            .await?;
        self.remember(provider, &settings.stream_keys);
        Ok(had)
    }

    /// How long a stream of `provider` interrupted by a drain waits for its publisher.
    pub fn reconnect_window(&self, provider: &str) -> Duration {
        self.get(provider)
            .map_or(streamcdn_config::DEFAULT_RECONNECT_WINDOW, |p| {
                p.reconnect_window
            })
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

    /// The rewind window the configuration gives `provider`; `None`: off.
    pub fn configured_dvr_window(&self, provider: &str) -> Option<Duration> {
        self.get(provider)
            .and_then(|p| p.dvr_window)
            .filter(|w| !w.is_zero())
    }

    /// The rewind window in force for `provider` (its runtime setting, else the
    /// configured one; `None`: off), read from the registry at most every
    /// [`DVR_WINDOW_FRESH`]. A registry that does not answer leaves the last known one
    /// (else the configured one) in force.
    pub async fn dvr_window(&self, provider: &str) -> Option<Duration> {
        let now = std::time::Instant::now();
        let known = lock(&self.dvr_windows).get(provider).copied();
        if let Some((_, window)) =
            known.filter(|(at, _)| now.duration_since(*at) < DVR_WINDOW_FRESH)
        {
            return window;
        }
        let window = match self.registry.provider_settings(provider).await {
            Ok(s) => match s.dvr_window_ms {
                Some(ms) => Some(Duration::from_millis(ms)).filter(|w| !w.is_zero()),
                None => self.configured_dvr_window(provider),
            },
            Err(e) => {
                tracing::debug!(provider, error = %e, "registry unavailable; last known dvr_window applies");
                known.map_or_else(|| self.configured_dvr_window(provider), |(_, w)| w)
            }
        };
        lock(&self.dvr_windows).insert(provider.to_owned(), (now, window));
        window
    }

    /// Stores the provider's own rewind window (zero turns it off), for every server.
    pub async fn set_dvr_window(
        &self,
        provider: &str,
        window: Duration,
    ) -> Result<(), RegistryError> {
        let mut settings = self.registry.provider_settings(provider).await?;
        settings.dvr_window_ms = Some(u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
        self.registry
            .set_provider_settings(provider, &settings)
            .await?;
        lock(&self.dvr_windows).remove(provider);
        Ok(())
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
            archive_after: after.map(Duration::from_secs),
            stream_keys: [("cam".to_owned(), format!("{name}-cam-key"))].into(),
            ..ProviderConfig::default()
        };
        Providers::new(
            &[p("a", None), p("b", Some(60))],
            Duration::from_secs(300),
            Registry::memory(),
        )
    }

    async fn opens(providers: &Providers, name: &str, stream: &str, key: &str) -> Option<KeyKind> {
        providers
            .check_key(name, stream, key)
            .await
            .ok()
            .map(|(_, kind)| kind)
    }

    #[tokio::test]
    async fn keys_open_only_their_provider_and_stream_keys_only_their_stream() {
        let providers = providers();
        assert_eq!(
            opens(&providers, "a", "cam", "a-key").await,
            Some(KeyKind::Provider)
        );
        assert_eq!(
            opens(&providers, "a", "other", "a-key").await,
            Some(KeyKind::Provider)
        );
        assert_eq!(
            opens(&providers, "a", "cam", "a-cam-key").await,
            Some(KeyKind::Stream)
        );
        assert_eq!(opens(&providers, "a", "other", "a-cam-key").await, None);
        assert_eq!(opens(&providers, "a", "cam", "b-key").await, None);
        assert_eq!(opens(&providers, "a", "cam", "b-cam-key").await, None);
        assert_eq!(opens(&providers, "a", "cam", "").await, None);
        assert_eq!(
            providers.check_key("c", "cam", "a-key").await.err(),
            Some(KeyError::UnknownProvider("c".into()))
        );
        // Only the provider's own key opens its settings.
        assert_eq!(
            providers
                .check_provider_key("a", "a-key")
                .map(|p| &p.name[..]),
            Ok("a")
        );
        assert_eq!(
            providers.check_provider_key("a", "a-cam-key").err(),
            Some(KeyError::WrongKey)
        );
        assert!(constant_time_eq(b"same", b"same") && !constant_time_eq(b"same", b"samf"));
    }

    #[tokio::test]
    async fn stream_keys_rotate_and_are_removed_at_runtime() {
        let providers = providers();
        let listed = providers.stream_keys("a").await.unwrap();
        assert_eq!(
            listed,
            [StreamKeyInfo {
                stream: "cam".into(),
                key_id: key_digest("a-cam-key")[..4].into(),
                source: KeySource::Config
            }]
        );
        // Rotation: the new key opens the stream, the configured one no longer does.
        assert!(providers
            .set_stream_key("a", "cam", Some("rotated-key-1"))
            .await
            .unwrap());
        assert_eq!(
            opens(&providers, "a", "cam", "rotated-key-1").await,
            Some(KeyKind::Stream)
        );
        assert_eq!(opens(&providers, "a", "cam", "a-cam-key").await, None);
        assert_eq!(opens(&providers, "a", "live", "rotated-key-1").await, None);
        // Another server of the deployment (another handle on the registry) agrees.
        let other = Providers::new(
            &providers.by_name.values().cloned().collect::<Vec<_>>(),
            Duration::from_secs(300),
            providers.registry.clone(),
        );
        assert_eq!(
            opens(&other, "a", "cam", "rotated-key-1").await,
            Some(KeyKind::Stream)
        );
        // The registry keeps digests, never keys.
        let stored = providers.registry.provider_settings("a").await.unwrap();
        assert_eq!(
            stored.stream_keys["cam"].as_deref(),
            Some(&key_digest("rotated-key-1")[..])
        );
        // A new stream's key, then removals: the configured key stays removed.
        assert!(!providers
            .set_stream_key("a", "live", Some("live-key-01"))
            .await
            .unwrap());
        assert!(providers.set_stream_key("a", "cam", None).await.unwrap());
        assert!(!providers.set_stream_key("a", "cam", None).await.unwrap());
        assert_eq!(opens(&providers, "a", "cam", "a-cam-key").await, None);
        assert_eq!(opens(&providers, "a", "cam", "rotated-key-1").await, None);
        assert_eq!(
            opens(&providers, "a", "cam", "a-key").await,
            Some(KeyKind::Provider)
        );
        let listed = providers.stream_keys("a").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (&listed[0].stream[..], listed[0].source),
            ("live", KeySource::Api)
        );
        // Provider b is untouched.
        assert_eq!(
            opens(&providers, "b", "cam", "b-cam-key").await,
            Some(KeyKind::Stream)
        );
    }

    #[tokio::test]
    async fn dvr_window_runtime_then_configured_then_off() {
        let providers = providers();
        assert_eq!(providers.dvr_window("a").await, None);
        providers
            .set_dvr_window("a", Duration::from_secs(7200))
            .await
            .unwrap();
        assert_eq!(
            providers.dvr_window("a").await,
            Some(Duration::from_secs(7200))
        );
        providers.set_dvr_window("a", Duration::ZERO).await.unwrap();
        assert_eq!(providers.dvr_window("a").await, None);
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
