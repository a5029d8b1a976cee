//! The stream registry: which ingest server holds which stream.
//!
//! Ingest servers announce themselves (`node` records, grouped by cluster) and their
//! streams under expiring leases they refresh while alive; edges look streams up. A
//! server that dies stops refreshing, so its entries expire on their own, and a lookup
//! never answers with a server whose lease is gone.
//!
//! A live stream's record names the one server that holds it. When the stream ends the
//! record is replaced by an `ended` record that names the cluster instead: the
//! recording sits on the cluster's shared storage, so any live server of the cluster can
//! serve it.
//!
//! Two backends keep the same model: [`Registry::memory`] (in-process, for `up`) and
//! [`Registry::redis`] (for several processes and hosts).

mod memory;
mod redis_store;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("registry backend: {0}")]
    Backend(#[from] redis::RedisError),
    #[error("registry holds a malformed record under {key}: {error}")]
    Malformed {
        key: String,
        error: serde_json::Error,
    },
}

pub type Result<T> = std::result::Result<T, RegistryError>;

/// One streaming server: where its HTTP origin answers and which cluster (shared
/// storage) it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    pub cluster: String,
    /// `http://host:port`, reachable by the edges' top tier.
    pub origin: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamState {
    Live,
    Ended,
    /// In on-demand storage, complete and verified: served from there, not by a server.
    Archived,
}

/// What the registry knows of a stream's current recording (and, under the recording's
/// own key, of each recording).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRecord {
    pub provider: String,
    pub stream: String,
    pub recording_id: String,
    pub cluster: String,
    /// The server that announced the record (the one publishing, while live).
    pub node: String,
    pub origin: String,
    pub state: StreamState,
}

/// Where to fetch a stream or recording from: the record and the origins to try, best
/// first. Empty `origins` means no live server can serve it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub record: StreamRecord,
    pub origins: Vec<String>,
}

#[derive(Clone)]
enum Backend {
    Memory(memory::MemoryStore),
    Redis(redis_store::RedisStore),
}

/// A handle on the registry; cheap to clone.
#[derive(Clone)]
pub struct Registry {
    backend: Backend,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.backend {
            Backend::Memory(_) => "Registry(memory)",
            Backend::Redis(_) => "Registry(redis)",
        })
    }
}

fn node_key(id: &str) -> String {
    format!("node:{id}")
}

fn stream_key(provider: &str, stream: &str) -> String {
    format!("stream:{provider}/{stream}")
}

fn recording_key(provider: &str, stream: &str, recording_id: &str) -> String {
    format!("recording:{provider}/{stream}/{recording_id}")
}

fn provider_key(provider: &str) -> String {
    format!("provider:{provider}")
}

/// Settings a provider changed at runtime; they outlive every server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_after_ms: Option<u64>,
}

/// Provider settings never expire; a very long lease stands for "no expiry".
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn encode<T: Serialize>(value: &T) -> String {
    // Records are plain structs of strings: serializing them cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

fn decode<T: for<'de> Deserialize<'de>>(key: &str, text: Option<String>) -> Result<Option<T>> {
    text.map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|error| RegistryError::Malformed {
            key: key.to_owned(),
            error,
        })
}

impl Registry {
    pub fn memory() -> Self {
        Self {
            backend: Backend::Memory(memory::MemoryStore::default()),
        }
    }

    /// Connects to Redis at `url` (`redis://host:port/db`). Keys are prefixed with
    /// `namespace:` so several deployments can share a server.
    pub async fn redis(url: &str, namespace: &str) -> Result<Self> {
        Ok(Self {
            backend: Backend::Redis(redis_store::RedisStore::connect(url, namespace).await?),
        })
    }

    async fn put(&self, key: &str, value: String, ttl: Duration) -> Result<()> {
        match &self.backend {
            Backend::Memory(m) => {
                m.put(key, value, ttl);
                Ok(())
            }
            Backend::Redis(r) => r.put(key, value, ttl).await,
        }
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<String>>> {
        match &self.backend {
            Backend::Memory(m) => Ok(keys.iter().map(|k| m.get(k)).collect()),
            Backend::Redis(r) => r.get_many(keys).await,
        }
    }

    async fn get(&self, key: &str) -> Result<Option<String>> {
        Ok(self.get_many(&[key.to_owned()]).await?.pop().flatten())
    }

    /// Sets `key` to `new` only if it holds exactly `expected` now.
    async fn replace_if(
        &self,
        key: &str,
        expected: &str,
        new: Option<(String, Duration)>,
    ) -> Result<bool> {
        match &self.backend {
            Backend::Memory(m) => Ok(m.replace_if(key, expected, new)),
            Backend::Redis(r) => r.replace_if(key, expected, new).await,
        }
    }

    /// Announces (or refreshes) a server for `lease`.
    pub async fn register_node(&self, node: &NodeRecord, lease: Duration) -> Result<()> {
        self.put(&node_key(&node.id), encode(node), lease).await?;
        match &self.backend {
            Backend::Memory(m) => {
                m.add_member(&node.cluster, &node.id, lease);
                Ok(())
            }
            Backend::Redis(r) => r.add_member(&node.cluster, &node.id, lease).await,
        }
    }

    /// Withdraws a server at once (graceful shutdown) rather than waiting for its lease.
    pub async fn remove_node(&self, node: &NodeRecord) -> Result<()> {
        self.replace_if(&node_key(&node.id), &encode(node), None)
            .await
            .map(drop)
    }

    /// A server, if its lease is current.
    pub async fn node(&self, id: &str) -> Result<Option<NodeRecord>> {
        let key = node_key(id);
        decode(&key, self.get(&key).await?)
    }

    /// The live servers of a cluster, in no particular order.
    pub async fn cluster_nodes(&self, cluster: &str) -> Result<Vec<NodeRecord>> {
        let ids = match &self.backend {
            Backend::Memory(m) => m.members(cluster),
            Backend::Redis(r) => r.members(cluster).await?,
        };
        let keys: Vec<String> = ids.iter().map(|id| node_key(id)).collect();
        let mut nodes = Vec::new();
        for (key, value) in keys.iter().zip(self.get_many(&keys).await?) {
            // A member whose node key expired is gone, whatever the index says.
            if let Some(node) = decode::<NodeRecord>(key, value)? {
                if node.cluster == cluster {
                    nodes.push(node);
                }
            }
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    /// Announces a stream's recording under the stream's key and the recording's own.
    /// A live record is leased (the announcing server refreshes it); an ended record
    /// names the cluster and is kept for `lease` as well, refreshed by whoever holds
    /// the recording.
    pub async fn announce(&self, record: &StreamRecord, lease: Duration) -> Result<()> {
        let value = encode(record);
        self.put(
            &recording_key(&record.provider, &record.stream, &record.recording_id),
            value.clone(),
            lease,
        )
        .await?;
        self.put(&stream_key(&record.provider, &record.stream), value, lease)
            .await
    }

    /// Announces one recording under its own key only (the stream's current record is
    /// left as is).
    pub async fn announce_recording(&self, record: &StreamRecord, lease: Duration) -> Result<()> {
        let key = recording_key(&record.provider, &record.stream, &record.recording_id);
        self.put(&key, encode(record), lease).await
    }

    /// Replaces `previous` (as this server announced it) with `next`, unless another
    /// server has announced the stream since: a server that lost its stream to another
    /// must not overwrite the newer record.
    pub async fn transition(
        &self,
        previous: &StreamRecord,
        next: &StreamRecord,
        lease: Duration,
    ) -> Result<bool> {
        let key = stream_key(&previous.provider, &previous.stream);
        let replaced = self
            .replace_if(&key, &encode(previous), Some((encode(next), lease)))
            .await?;
        let recording = recording_key(&next.provider, &next.stream, &next.recording_id);
        self.replace_if(&recording, &encode(previous), Some((encode(next), lease)))
            .await?;
        Ok(replaced)
    }

    /// What a provider changed at runtime (empty if nothing).
    pub async fn provider_settings(&self, provider: &str) -> Result<ProviderSettings> {
        let key = provider_key(provider);
        Ok(decode(&key, self.get(&key).await?)?.unwrap_or_default())
    }

    pub async fn set_provider_settings(
        &self,
        provider: &str,
        settings: &ProviderSettings,
    ) -> Result<()> {
        self.put(&provider_key(provider), encode(settings), FOREVER)
            .await
    }

    /// The stream's current record, whatever its state.
    pub async fn stream(&self, provider: &str, stream: &str) -> Result<Option<StreamRecord>> {
        let key = stream_key(provider, stream);
        decode(&key, self.get(&key).await?)
    }

    /// Where the stream's current recording is served from now.
    pub async fn locate_stream(&self, provider: &str, stream: &str) -> Result<Option<Location>> {
        match self.stream(provider, stream).await? {
            Some(record) => self.locate(record).await.map(Some),
            None => Ok(None),
        }
    }

    /// Where one recording of a stream is served from now.
    pub async fn locate_recording(
        &self,
        provider: &str,
        stream: &str,
        recording_id: &str,
    ) -> Result<Option<Location>> {
        let key = recording_key(provider, stream, recording_id);
        match decode::<StreamRecord>(&key, self.get(&key).await?)? {
            Some(record) => self.locate(record).await.map(Some),
            None => Ok(None),
        }
    }

    async fn locate(&self, record: StreamRecord) -> Result<Location> {
        let origins = match record.state {
            // Only the publishing server has the live edge of the stream, and only
            // while its lease holds.
            StreamState::Live => self
                .node(&record.node)
                .await?
                .map(|n| vec![n.origin])
                .unwrap_or_default(),
            // Any server of the cluster reads the recording from shared storage; the
            // announcing one first, so a single-server cluster behaves as before.
            StreamState::Ended => {
                let mut nodes = self.cluster_nodes(&record.cluster).await?;
                nodes.sort_by_key(|n| n.id != record.node);
                nodes.into_iter().map(|n| n.origin).collect()
            }
            StreamState::Archived => Vec::new(),
        };
        Ok(Location { record, origins })
    }
}
