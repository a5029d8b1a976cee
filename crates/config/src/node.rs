//! `[node]`: this server itself — its data directory, name, cluster and site.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::checks::{registry_name, Invalid};
use crate::humantime_serde;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Recordings, journals and generated state live here.
    pub data_dir: PathBuf,
    /// Time allowed on shutdown for in-flight segments and requests.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// On SIGTERM or `POST /api/v1/drain`, the longest the server keeps serving what it
    /// has (publishers, viewers, an upload) while taking nothing new, before it stops
    /// (then `shutdown_grace` for what is in flight).
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// This server's name in the registry; defaults to its origin's `host:port`.
    pub id: Option<String>,
    /// Ingest servers that share `data_dir` (one directory or a shared mount) form a
    /// cluster: any of them serves any recording of the cluster.
    pub cluster: String,
    /// Where this server is (a point of presence), announced in the node directory for
    /// routing viewers; defaults to `cluster`.
    pub site: Option<String>,
}

impl NodeConfig {
    pub fn site(&self) -> &str {
        self.site.as_deref().unwrap_or(&self.cluster)
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            shutdown_grace: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            id: None,
            cluster: "default".into(),
            site: None,
        }
    }
}

impl NodeConfig {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        registry_name("node.cluster", &self.cluster)?;
        if self.drain_timeout > Duration::from_secs(3600) {
            return Err((
                "node.drain_timeout".into(),
                "must be at most 1h (0s stops at once)".into(),
            ));
        }
        if let Some(id) = &self.id {
            registry_name("node.id", id)?;
        }
        if let Some(site) = &self.site {
            registry_name("node.site", site)?;
        }
        Ok(())
    }
}
