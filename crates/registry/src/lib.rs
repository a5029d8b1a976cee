//! The registry: which servers exist (the node directory) and which ingest server holds
//! which stream.
//!
//! Every server announces itself (a `node` record: roles, cluster or site, addresses,
//! load) and ingest servers their streams, under expiring leases they refresh while
//! alive; edges look streams up, routers and operators list nodes. A server that dies
//! stops refreshing, so its entries expire on their own, and a lookup never answers
//! with a server whose lease is gone.
//!
//! A live stream's record names the one server that holds it. When the stream ends the
//! record is replaced by an `ended` record that names the cluster instead: the
//! recording sits on the cluster's shared storage, so any live server of the cluster can
//! serve it.
//!
//! Two backends keep the same model: [`Registry::memory`] (in-process, for `up`) and
//! [`Registry::redis`] (for several processes and hosts).

mod address;
mod error;
mod link;
mod memory;
mod redis_store;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use address::{AddressError, RedisAddress, SENTINEL_PORT, SENTINEL_SCHEME};
pub use error::{RegistryError, Result};
pub use link::Continuity;
pub use memory::ManualClock;

/// One server of the deployment, as the node directory lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    /// The ingest cluster (servers sharing storage) this server belongs to.
    pub cluster: String,
    /// The ingest origin, `http://host:port`, reachable by the edges' top tier; empty
    /// for a server without the ingest role. Only servers with an origin are members of
    /// their cluster's index.
    #[serde(default)]
    pub origin: String,
    #[serde(default)]
    pub roles: Vec<Role>,
    /// Where the server is, for routing viewers (defaults to the cluster name).
    #[serde(default)]
    pub site: String,
    /// Where the server is reached, by what for.
    #[serde(default)]
    pub addresses: NodeAddresses,
    #[serde(default)]
    pub load: Load,
    /// Viewer connections the server can take, as its operator configured; `None`:
    /// not stated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u64>,
    /// Being drained (SIGTERM or `POST /api/v1/drain`): it takes nothing new (no
    /// publisher, no viewer the router could send elsewhere) and stops soon.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
}

/// Where a server is reached, one field per endpoint a role announces (each `None`
/// where the server has no such endpoint, or listens on an unspecified address).
///
/// On the wire a JSON object of strings, as the records have always held it (a map
/// keyed by these names); a key this version does not know is kept in `other` and
/// written back, so servers of two versions read each other's records during a
/// rolling upgrade.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddresses {
    /// `http://host:port` of the playback listener, which viewers and lower tiers use
    /// (edge role, `http.advertise`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playback: Option<String>,
    /// The cache's control endpoint, with its tier (`cdni::Tier::announce`:
    /// `<playback>/_streamcdn/control?tier=top|mid|edge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
    /// The ingest origin, `http://host:port` (ingest role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The admin API, `http://host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// The authoritative DNS listener, `ip:port` (router role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
    /// The router's HTTP base URL, where players' measurements go (router role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<String>,
    /// The SRT listener publishers reach, `ip:port` (ingest role): what the router's
    /// ingest name (`ingest.<zone>`) answers with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srt: Option<String>,
    /// Keys this version does not know (written by another), kept as they are.
    #[serde(flatten)]
    pub other: BTreeMap<String, String>,
}

/// What a server does; a process may have several roles (`streamcdn up` has them all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Ingest,
    /// A cache that serves viewers.
    Edge,
    /// A cache that serves only lower tiers.
    MidTier,
    Archiver,
    Router,
}

/// How busy a server is, measured over the interval before its last refresh.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// Open HTTP connections on the playback listener.
    pub viewer_connections: u64,
    /// Response body bytes per second sent on the playback listener.
    pub egress_bytes_per_sec: u64,
    /// CPU time used by the process per second of wall time (1.0 is one core busy).
    pub cpu: f64,
    /// Publishers the server holds now, every protocol (ingest role; 0 otherwise, and
    /// in records of versions before it was announced).
    #[serde(default)]
    pub publishers: u64,
    /// When this was measured, in milliseconds since the Unix epoch.
    pub measured_at_ms: u64,
}

impl NodeRecord {
    /// A record with only the fields an ingest cluster member needs (tests, tools).
    pub fn ingest(id: &str, cluster: &str, origin: &str) -> Self {
        Self {
            id: id.to_owned(),
            cluster: cluster.to_owned(),
            origin: origin.to_owned(),
            roles: vec![Role::Ingest],
            site: cluster.to_owned(),
            addresses: NodeAddresses::default(),
            load: Load::default(),
            capacity: None,
            draining: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamState {
    Live,
    /// Its server was drained while the publisher was live: the recording is durable up
    /// to its last segment and stays open (no end, no archiving) for the publisher to
    /// continue it on another server of the cluster, until its reconnect window passes.
    Interrupted,
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
    continuity: watch::Sender<Continuity>,
    /// The deployment's lease: how long a registry that came back is settling.
    lease: Duration,
}

/// The lease assumed until [`Registry::with_lease`] says (the configuration's default).
const DEFAULT_LEASE: Duration = Duration::from_secs(10);

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

fn cluster_index(cluster: &str) -> String {
    format!("cluster:{cluster}")
}

fn sample_key(prefix: &str, edge: &str) -> String {
    format!("sample:{prefix}:{edge}")
}

fn sample_index(prefix: &str) -> String {
    format!("samples:{prefix}")
}

/// The index of every server, whatever its role.
const DIRECTORY_INDEX: &str = "nodes";

fn provider_key(provider: &str) -> String {
    format!("provider:{provider}")
}

/// Settings a provider changed at runtime; they outlive every server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_after_ms: Option<u64>,
    /// Playback keys set through the API (they replace the configured ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playback_keys: Option<Vec<String>>,
    /// Stream keys changed through the API, by stream: the SHA-256 (hex) of the key now
    /// in force, or `None` where the API removed the stream's key (a configured one
    /// too). Streams not named keep their configured key. Keys themselves are not kept.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stream_keys: BTreeMap<String, Option<String>>,
}

fn access_key(provider: &str) -> String {
    format!("access:{provider}")
}

/// A partner's configuration carried by some of this participant's servers (CDNI
/// delegation): edges serving `hostnames` fetch it from `origin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub configuration: String,
    /// The owning participant's CDN PID (`AS64496:1`).
    pub owner: String,
    /// The partner that delegated it to us (the owner, or a partner carrying it for
    /// the owner): the one that may command it here.
    pub delegated_by: String,
    pub hostnames: Vec<String>,
    pub origin: String,
    /// Node ids or sites that carry it; empty: every edge.
    #[serde(default)]
    pub servers: Vec<String>,
    /// Partners (CDN PIDs) we delegated it to in turn.
    #[serde(default)]
    pub delegated_to: Vec<String>,
    /// The owner's cache rule: no object stays fresh longer in our caches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttl_secs: Option<u64>,
}

impl DeploymentRecord {
    pub fn carried_by(&self, node: &NodeRecord) -> bool {
        self.servers.is_empty()
            || self
                .servers
                .iter()
                .any(|s| *s == node.id || *s == node.site)
    }
}

const DEPLOYMENTS_KEY: &str = "deployments";

fn lease_key(name: &str) -> String {
    format!("lease:{name}")
}

/// Who holds a lease (see [`Registry::hold_lease`]) and where it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseHolder {
    /// Unique among the contenders; the same across a holder's restarts, so a restarted
    /// holder takes its lease back at once.
    pub id: String,
    /// Where the holder is reached (for the others to point callers at).
    #[serde(default)]
    pub address: String,
}

fn document_key(name: &str) -> String {
    format!("document:{name}")
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
        Self::memory_with(memory::MemoryStore::default())
    }

    /// An in-process registry whose leases expire by `clock` (tests).
    pub fn memory_with_clock(clock: ManualClock) -> Self {
        Self::memory_with(memory::MemoryStore::with_clock(clock))
    }

    fn memory_with(store: memory::MemoryStore) -> Self {
        Self {
            backend: Backend::Memory(store),
            continuity: watch::Sender::new(Continuity::default()),
            lease: DEFAULT_LEASE,
        }
    }

    /// Connects to Redis at `url`: one server (`redis://host:port/db`) or the master of
    /// a set the sentinels watch (`redis+sentinel://host:port,host:port/<master set>`),
    /// followed across failovers. Keys are prefixed with `namespace:` so several
    /// deployments can share a server.
    pub async fn redis(url: &str, namespace: &str) -> Result<Self> {
        let address = RedisAddress::parse(url)?;
        let continuity = watch::Sender::new(Continuity::default());
        let store =
            redis_store::RedisStore::connect(&address, namespace, continuity.clone()).await?;
        Ok(Self {
            backend: Backend::Redis(store),
            continuity,
            lease: DEFAULT_LEASE,
        })
    }

    /// The lease the deployment's servers announce with (`registry.lease`).
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// The registry's availability as this process sees it; it changes each time the
    /// registry comes back (after an outage, restarted, failed over), when whoever
    /// holds leases re-announces everything at once (the registry may have lost them).
    pub fn continuity(&self) -> watch::Receiver<Continuity> {
        self.continuity.subscribe()
    }

    /// Checks now, rather than at the next background check (every 500 ms), whether
    /// the registry came back (lost its data, or is another server): before believing
    /// that something known is gone.
    pub async fn recheck(&self) {
        if let Backend::Redis(r) = &self.backend {
            r.recheck().await;
        }
    }

    /// Whether the registry came back less than a lease ago: the ingests may not have
    /// re-announced yet, so its "no such stream" (or "its server is gone") is not
    /// trusted over where a stream was last found.
    pub fn settling(&self) -> bool {
        self.continuity
            .borrow()
            .back_at
            .is_some_and(|t| t.elapsed() < self.lease)
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

    /// Stores `value` under `key` for good: settings made through the API and the
    /// like, which no server re-announces.
    async fn put_durable(&self, key: &str, value: String) -> Result<()> {
        match &self.backend {
            Backend::Memory(m) => {
                m.put(key, value, FOREVER);
                Ok(())
            }
            Backend::Redis(r) => r.put_durable(key, value).await,
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

    async fn add_member(&self, index: &str, id: &str, lease: Duration) -> Result<()> {
        match &self.backend {
            Backend::Memory(m) => {
                m.add_member(index, id, lease);
                Ok(())
            }
            Backend::Redis(r) => r.add_member(index, id, lease).await,
        }
    }

    async fn members(&self, index: &str) -> Result<Vec<String>> {
        match &self.backend {
            Backend::Memory(m) => Ok(m.members(index)),
            Backend::Redis(r) => r.members(index).await,
        }
    }

    /// The live nodes whose ids an index lists (a member whose node key expired is
    /// gone, whatever the index says), sorted by id.
    async fn nodes_in(&self, index: &str) -> Result<Vec<NodeRecord>> {
        let keys: Vec<String> = self
            .members(index)
            .await?
            .iter()
            .map(|id| node_key(id))
            .collect();
        let mut nodes = Vec::new();
        for (key, value) in keys.iter().zip(self.get_many(&keys).await?) {
            if let Some(node) = decode::<NodeRecord>(key, value)? {
                nodes.push(node);
            }
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    /// Announces (or refreshes) a server for `lease`: in the node directory, and in its
    /// cluster's index if it has an ingest origin.
    pub async fn register_node(&self, node: &NodeRecord, lease: Duration) -> Result<()> {
        self.put(&node_key(&node.id), encode(node), lease).await?;
        self.add_member(DIRECTORY_INDEX, &node.id, lease).await?;
        if !node.origin.is_empty() {
            self.add_member(&cluster_index(&node.cluster), &node.id, lease)
                .await?;
        }
        Ok(())
    }

    /// Every live server, sorted by id.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>> {
        self.nodes_in(DIRECTORY_INDEX).await
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

    /// The live ingest servers of a cluster, sorted by id.
    pub async fn cluster_nodes(&self, cluster: &str) -> Result<Vec<NodeRecord>> {
        let mut nodes = self.nodes_in(&cluster_index(cluster)).await?;
        nodes.retain(|n| n.cluster == cluster && !n.origin.is_empty());
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

    /// A secret every server of the deployment shares (e.g. the key that authenticates
    /// the router's probe requests to edges): the stored one, or `candidate` stored now
    /// if there is none yet. Concurrent first callers all get the one that won.
    pub async fn shared_secret(&self, name: &str, candidate: &str) -> Result<String> {
        let key = format!("secret:{name}");
        match &self.backend {
            Backend::Memory(m) => Ok(m.put_if_absent(&key, candidate, FOREVER)),
            Backend::Redis(r) => r.put_if_absent(&key, candidate).await,
        }
    }

    /// Files a measurement of `prefix` by `edge` (the latest replaces the one before),
    /// for every router of the deployment, kept for `ttl`.
    pub async fn record_sample(
        &self,
        prefix: &str,
        edge: &str,
        sample: String,
        ttl: Duration,
    ) -> Result<()> {
        self.put(&sample_key(prefix, edge), sample, ttl).await?;
        self.add_member(&sample_index(prefix), edge, ttl).await
    }

    /// The current measurements of `prefix`, one per edge that has one.
    pub async fn samples(&self, prefix: &str) -> Result<Vec<String>> {
        let edges = self.members(&sample_index(prefix)).await?;
        let keys: Vec<String> = edges.iter().map(|e| sample_key(prefix, e)).collect();
        Ok(self.get_many(&keys).await?.into_iter().flatten().collect())
    }

    /// Every partner configuration deployed here.
    pub async fn deployments(&self) -> Result<Vec<DeploymentRecord>> {
        Ok(decode(DEPLOYMENTS_KEY, self.get(DEPLOYMENTS_KEY).await?)?.unwrap_or_default())
    }

    /// Replaces the deployment list (written by the participant's one CIS).
    pub async fn set_deployments(&self, deployments: &[DeploymentRecord]) -> Result<()> {
        self.put_durable(DEPLOYMENTS_KEY, encode(&deployments))
            .await
    }

    /// A document a role keeps for the whole deployment (the CIS's triggers when the
    /// registry is shared), `None` if never written.
    pub async fn document(&self, name: &str) -> Result<Option<String>> {
        self.get(&document_key(name)).await
    }

    pub async fn put_document(&self, name: &str, text: String) -> Result<()> {
        self.put_durable(&document_key(name), text).await
    }

    /// Takes the lease `name` for `ttl` if nobody holds it, or renews it if `us` does:
    /// `None` then. Otherwise the holder, which keeps it until it lets it expire or
    /// releases it. One process of several doing the same job uses this to be the one
    /// that does it (the federation's command invocation system).
    pub async fn hold_lease(
        &self,
        name: &str,
        us: &LeaseHolder,
        ttl: Duration,
    ) -> Result<Option<LeaseHolder>> {
        let key = lease_key(name);
        let value = encode(us);
        let held = match &self.backend {
            Backend::Memory(m) => m.hold(&key, &value, ttl),
            Backend::Redis(r) => r.hold(&key, &value, ttl).await?,
        };
        held.map(|text| {
            serde_json::from_str(&text).map_err(|error| RegistryError::Malformed { key, error })
        })
        .transpose()
    }

    /// Gives the lease up at once if `us` holds it (a clean shutdown), so another
    /// contender takes over without waiting for it to expire.
    pub async fn release_lease(&self, name: &str, us: &LeaseHolder) -> Result<()> {
        self.replace_if(&lease_key(name), &encode(us), None)
            .await
            .map(drop)
    }

    /// Whether servers of this deployment share the registry (Redis), rather than it
    /// living in this process only.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Redis(_))
    }

    /// The playback keys in force for `provider` (empty: its playback is open), as the
    /// servers holding the provider's configuration published them, for edges.
    pub async fn playback_keys(&self, provider: &str) -> Result<Vec<String>> {
        let key = access_key(provider);
        Ok(decode(&key, self.get(&key).await?)?.unwrap_or_default())
    }

    pub async fn set_playback_keys(&self, provider: &str, keys: &[String]) -> Result<()> {
        self.put_durable(&access_key(provider), encode(&keys)).await
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
        self.put_durable(&provider_key(provider), encode(settings))
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
            // announcing one first, so a single-server cluster behaves as before, and
            // servers being drained last.
            StreamState::Ended | StreamState::Interrupted => {
                let mut nodes = self.cluster_nodes(&record.cluster).await?;
                nodes.sort_by_key(|n| (n.draining, n.id != record.node));
                nodes.into_iter().map(|n| n.origin).collect()
            }
            StreamState::Archived => Vec::new(),
        };
        Ok(Location { record, origins })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node record as servers wrote it before the addresses were typed: a string map,
    /// here with a key this version does not know.
    const STRING_MAP_RECORD: &str = r#"{"id":"edge-1","cluster":"c1","origin":"",
        "roles":["edge"],"site":"paris",
        "addresses":{"control":"http://10.0.0.1:8080/_streamcdn/control?tier=edge",
            "playback":"http://10.0.0.1:8080","rtmp":"rtmp://10.0.0.1:1935"},
        "load":{"viewer_connections":3,"egress_bytes_per_sec":0,"cpu":0.5,"measured_at_ms":1}}"#;

    #[test]
    fn records_of_either_version_read_each_other() {
        let record: NodeRecord = serde_json::from_str(STRING_MAP_RECORD).unwrap();
        let addresses = &record.addresses;
        assert_eq!(addresses.playback.as_deref(), Some("http://10.0.0.1:8080"));
        assert_eq!(
            addresses.control.as_deref(),
            Some("http://10.0.0.1:8080/_streamcdn/control?tier=edge")
        );
        assert_eq!((&addresses.admin, &addresses.origin), (&None, &None));
        assert_eq!(
            addresses.other,
            BTreeMap::from([("rtmp".to_owned(), "rtmp://10.0.0.1:1935".to_owned())])
        );
        assert_eq!(record.load.viewer_connections, 3);
        assert_eq!(record.load.publishers, 0, "not announced before: none");
        assert_eq!(addresses.srt, None);

        // What this version writes is the map an older server reads: every key, no nulls.
        let written = serde_json::to_value(&record).unwrap();
        let as_map: BTreeMap<String, String> =
            serde_json::from_value(written["addresses"].clone()).unwrap();
        let old: serde_json::Value = serde_json::from_str(STRING_MAP_RECORD).unwrap();
        let old_map: BTreeMap<String, String> =
            serde_json::from_value(old["addresses"].clone()).unwrap();
        assert_eq!(as_map, old_map);
        let again: NodeRecord = serde_json::from_value(written).unwrap();
        assert_eq!(again, record);

        // An ingest's SRT address is typed; an older server keeps it in its `other`.
        let ingest = r#"{"id":"i","cluster":"c1","addresses":{"srt":"10.0.0.2:8890"}}"#;
        let ingest: NodeRecord = serde_json::from_str(ingest).unwrap();
        assert_eq!(ingest.addresses.srt.as_deref(), Some("10.0.0.2:8890"));
        assert!(ingest.addresses.other.is_empty());

        // A record without addresses (an archiver's) has none.
        let bare = r#"{"id":"a","cluster":"c1"}"#;
        let bare: NodeRecord = serde_json::from_str(bare).unwrap();
        assert_eq!(bare.addresses, NodeAddresses::default());
        assert_eq!(
            serde_json::to_value(&bare.addresses).unwrap(),
            serde_json::json!({})
        );
    }
}
