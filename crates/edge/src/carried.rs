//! The partners' configurations this server carries (CDNI delegation): one cache per
//! configuration, filled from the owner's top tier, chosen by the request's host. The
//! deployment records in the registry say what is carried where; every server reads
//! them every [`REFRESH_EVERY`] and when a control request names one it does not know
//! yet.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use streamcdn_registry::{DeploymentRecord, NodeRecord, Registry, RegistryError};
use thiserror::Error;

use crate::{Edge, EdgeSettings, UpstreamKind};

pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum CarriedError {
    #[error("cannot read the deployments: {0}")]
    Registry(#[from] RegistryError),
    #[error("cannot open the disk cache of configuration {configuration}: {source}")]
    Disk {
        configuration: String,
        source: std::io::Error,
    },
}

/// How each carried configuration's cache is sized, from the server's own settings.
#[derive(Clone)]
pub struct CacheBudget {
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub max_object_bytes: u64,
    pub upstream_timeout: Duration,
    pub stale_if_error: Duration,
    /// Each configuration's disk tier lives in `<dir>/<configuration>`.
    pub dir: PathBuf,
}

struct Entry {
    record: DeploymentRecord,
    edge: Arc<Edge>,
}

pub struct Carried {
    registry: Registry,
    node: NodeRecord,
    budget: CacheBudget,
    by_id: RwLock<HashMap<String, Entry>>,
    /// Serializes refreshes (a control request may ask for one).
    refreshing: tokio::sync::Mutex<()>,
}

impl Carried {
    pub fn new(registry: Registry, node: NodeRecord, budget: CacheBudget) -> Arc<Self> {
        Arc::new(Carried {
            registry,
            node,
            budget,
            by_id: RwLock::new(HashMap::new()),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    /// The cache of the configuration `host` belongs to, if we carry one.
    pub fn by_host(&self, host: &str) -> Option<Arc<Edge>> {
        let host = host.to_ascii_lowercase();
        let entries = self.by_id.read().unwrap_or_else(|e| e.into_inner());
        entries
            .values()
            .find(|e| e.record.hostnames.contains(&host))
            .map(|e| e.edge.clone())
    }

    /// The cache of configuration `id`, reading the deployments again if it is new.
    pub async fn by_id(&self, id: &str) -> Option<Arc<Edge>> {
        if let Some(edge) = self.cached(id) {
            return Some(edge);
        }
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "cannot read the deployments");
        }
        self.cached(id)
    }

    fn cached(&self, id: &str) -> Option<Arc<Edge>> {
        let entries = self.by_id.read().unwrap_or_else(|e| e.into_inner());
        entries.get(id).map(|e| e.edge.clone())
    }

    /// Brings the carried caches in line with the deployment records.
    pub async fn refresh(&self) -> Result<(), CarriedError> {
        let _one = self.refreshing.lock().await;
        let wanted: Vec<DeploymentRecord> = self
            .registry
            .deployments()
            .await?
            .into_iter()
            .filter(|d| d.carried_by(&self.node))
            .collect();
        let mut new = Vec::new();
        {
            let entries = self.by_id.read().unwrap_or_else(|e| e.into_inner());
            for record in &wanted {
                let same = entries.get(&record.configuration).is_some_and(|e| {
                    e.record.origin == record.origin
                        && e.record.hostnames == record.hostnames
                        && e.record.max_ttl_secs == record.max_ttl_secs
                });
                if !same {
                    new.push(record.clone());
                }
            }
        }
        let mut built = Vec::new();
        for record in new {
            let edge = self.build(&record)?;
            tracing::info!(configuration = %record.configuration, owner = %record.owner, hostnames = ?record.hostnames, origin = %record.origin, "carrying a partner's configuration");
            built.push(Entry { record, edge });
        }
        let mut entries = self.by_id.write().unwrap_or_else(|e| e.into_inner());
        for entry in built {
            entries.insert(entry.record.configuration.clone(), entry);
        }
        entries.retain(|id, entry| {
            let kept = wanted.iter().any(|d| d.configuration == *id);
            if !kept {
                tracing::info!(configuration = %id, owner = %entry.record.owner, "no longer carrying a partner's configuration");
            }
            kept
        });
        metrics::gauge!("streamcdn_edge_carried_configurations").set(entries.len() as f64);
        Ok(())
    }

    fn build(&self, record: &DeploymentRecord) -> Result<Arc<Edge>, CarriedError> {
        let budget = &self.budget;
        let disk = (budget.disk_bytes > 0)
            .then(|| (budget.dir.join(&record.configuration), budget.disk_bytes));
        Edge::new(EdgeSettings {
            upstream: UpstreamKind::Parents(vec![record.origin.trim_end_matches('/').to_owned()]),
            archive: None,
            cache_memory_bytes: budget.memory_bytes,
            max_object_bytes: budget.max_object_bytes,
            upstream_timeout: budget.upstream_timeout,
            disk,
            stale_if_error: budget.stale_if_error,
            max_ttl: record.max_ttl_secs.map(Duration::from_secs),
            // A partner's origin does not share our deployment key.
            tier_credential: None,
            // Nor need it speak HTTP/2 without TLS.
            upstream_http2: false,
            clip: crate::ClipSettings {
                max_cached_bytes: budget.max_object_bytes,
                ..Default::default()
            },
        })
        .map_err(|source| CarriedError::Disk {
            configuration: record.configuration.clone(),
            source,
        })
    }

    /// Re-reads the deployments every [`REFRESH_EVERY`] until shutdown.
    pub async fn keep_current(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "cannot carry the deployments");
            }
            tokio::select! {
                _ = tokio::time::sleep(REFRESH_EVERY) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The host a request is for: `:authority` (HTTP/2) or `Host`, without the port.
fn request_host(request: &Request) -> Option<&str> {
    let host = request.uri().host().or_else(|| {
        request
            .headers()
            .get(axum::http::header::HOST)
            .and_then(|v| v.to_str().ok())
    })?;
    if host.starts_with('[') {
        return Some(host.split(']').next().map_or(host, |h| &host[..=h.len()]));
    }
    Some(host.split(':').next().unwrap_or(host))
}

/// Middleware: a request for a carried configuration's hostname goes to its cache;
/// everything else to the local default.
pub async fn dispatch(
    State(carried): State<Arc<Carried>>,
    request: Request,
    next: Next,
) -> Response {
    match request_host(&request).and_then(|host| carried.by_host(host)) {
        Some(edge) => edge.serve(request).await,
        None => next.run(request).await,
    }
}
