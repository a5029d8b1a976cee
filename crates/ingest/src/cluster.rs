//! This server's place in its ingest cluster: who it is in the registry, whether it
//! may take a stream another server holds, and the announcer that keeps the registry
//! current (node lease, live streams, and the switch to `ended` when a stream stops).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use streamcdn_registry::{NodeRecord, Registry, StreamRecord, StreamState};
use tokio::sync::watch;

use crate::hub::StreamHub;
use crate::recording::{self, Recording};

/// An ended stream's record is kept this long: until then edges can find the cluster
/// that holds its recording.
pub const ENDED_RECORD_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// A live recording whose server's lease is gone is ended by another server of the
/// cluster only after this long without a new segment, so a publisher reconnecting
/// through the load balancer can still continue it.
const ORPHAN_GRACE: Duration = Duration::from_secs(60);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Ended recordings on the cluster's storage are announced again this often, well
/// within [`ENDED_RECORD_TTL`], and at start (the in-process registry starts empty).
const RESTORE_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct Cluster {
    pub registry: Registry,
    pub node: NodeRecord,
    pub lease: Duration,
}

/// What a new publisher of a stream gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// A new recording.
    Fresh,
    /// Go on with this recording of the cluster: its server died mid-stream.
    Continue(String),
    /// Another live server is publishing the stream.
    HeldBy(String),
}

impl Cluster {
    pub(crate) fn record(&self, recording: &Recording, state: StreamState) -> StreamRecord {
        StreamRecord {
            provider: recording.provider.clone(),
            stream: recording.stream.clone(),
            recording_id: recording.recording_id.clone(),
            cluster: self.node.cluster.clone(),
            node: self.node.id.clone(),
            origin: self.node.origin.clone(),
            state,
        }
    }

    /// Decides whether this server may take a publisher of `provider/stream`. A record
    /// naming another server is only overridden when that server is dead: its lease is
    /// gone or its origin refuses connections (killed, its lease not yet expired).
    pub async fn claim(&self, provider: &str, stream: &str) -> Claim {
        let record = match self.registry.stream(provider, stream).await {
            Ok(Some(record)) => record,
            Ok(None) => return Claim::Fresh,
            Err(e) => {
                // Publishing must not depend on the registry being up; announcing
                // catches up when it is back.
                tracing::warn!(error = %e, "registry unavailable; starting a new recording");
                return Claim::Fresh;
            }
        };
        if record.state != StreamState::Live || record.node == self.node.id {
            return Claim::Fresh;
        }
        let alive = match self.registry.node(&record.node).await {
            Ok(Some(node)) => reachable(&node.origin).await,
            Ok(None) => false,
            Err(_) => reachable(&record.origin).await,
        };
        if alive {
            Claim::HeldBy(record.node)
        } else if record.cluster == self.node.cluster {
            tracing::info!(
                provider,
                stream,
                dead = record.node,
                recording = record.recording_id,
                "taking over a stream from a dead server"
            );
            Claim::Continue(record.recording_id)
        } else {
            Claim::Fresh
        }
    }
}

/// Whether something accepts TCP connections at an `http://host:port` origin.
async fn reachable(origin: &str) -> bool {
    let authority = origin
        .strip_prefix("http://")
        .unwrap_or(origin)
        .split('/')
        .next()
        .unwrap_or_default();
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(authority)).await,
        Ok(Ok(_))
    )
}

/// Keeps the registry current until shutdown, then withdraws this server.
pub async fn run_announcer(hub: Arc<StreamHub>, mut shutdown: watch::Receiver<bool>) {
    let cluster = hub.cluster().clone();
    let mut announced: HashMap<(String, String), StreamRecord> = HashMap::new();
    let changes = hub.changes();
    let mut last_sweep = tokio::time::Instant::now();
    let mut last_restore: Option<tokio::time::Instant> = None;
    let refresh = cluster.lease / 3;
    loop {
        if let Err(e) = cluster
            .registry
            .register_node(&cluster.node, cluster.lease)
            .await
        {
            tracing::warn!(error = %e, "cannot renew this server's lease in the registry");
        }
        if last_restore.is_none_or(|t| t.elapsed() > RESTORE_EVERY) {
            match announce_stored(&hub, &cluster).await {
                Ok(n) => {
                    last_restore = Some(tokio::time::Instant::now());
                    tracing::info!(recordings = n, "announced the ended recordings on storage");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot announce stored recordings; will retry")
                }
            }
        }
        sync_streams(&hub, &cluster, &mut announced).await;
        if last_sweep.elapsed() > ORPHAN_GRACE / 2 {
            last_sweep = tokio::time::Instant::now();
            sweep_orphans(&hub, &cluster).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(refresh) => {}
            _ = changes.notified() => {}
            _ = shutdown.changed() => break,
        }
    }
    // Publishers are being finished by the RTMP server; announce their end as it comes.
    let grace = tokio::time::Instant::now() + Duration::from_secs(5);
    while !hub.live_streams().is_empty() && tokio::time::Instant::now() < grace {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sync_streams(&hub, &cluster, &mut announced).await;
    if let Err(e) = cluster.registry.remove_node(&cluster.node).await {
        tracing::warn!(error = %e, "cannot withdraw this server from the registry");
    }
}

/// Announces live streams (refreshing their lease) and turns the records of ended
/// ones into `ended` records that name the cluster.
async fn sync_streams(
    hub: &StreamHub,
    cluster: &Cluster,
    announced: &mut HashMap<(String, String), StreamRecord>,
) {
    for recording in hub.current_recordings() {
        let key = (recording.provider.clone(), recording.stream.clone());
        let previous = announced.get(&key);
        let result = if recording.is_live() {
            let record = cluster.record(&recording, StreamState::Live);
            let outcome = cluster.registry.announce(&record, cluster.lease).await;
            if outcome.is_ok() {
                announced.insert(key, record);
            }
            outcome.map(drop)
        } else if let Some(previous) = previous.filter(|p| p.state == StreamState::Live) {
            let ended = cluster.record(&recording, StreamState::Ended);
            let previous = previous.clone();
            match cluster
                .registry
                .transition(&previous, &ended, ENDED_RECORD_TTL)
                .await
            {
                Ok(replaced) => {
                    if !replaced {
                        tracing::info!(
                            provider = key.0,
                            stream = key.1,
                            "stream was taken over by another server; its record is left as is"
                        );
                    }
                    announced.insert(key, ended);
                    Ok(())
                }
                Err(e) => Err(e),
            }
        } else {
            Ok(())
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "registry announcement failed; will retry");
        }
    }
}

/// Announces every ended recording on the cluster's storage, and a stream's newest one
/// as the stream's record when the registry has none, so recordings stay reachable
/// after a restart. Returns how many were announced.
async fn announce_stored(
    hub: &StreamHub,
    cluster: &Cluster,
) -> Result<usize, streamcdn_registry::RegistryError> {
    let root = hub.settings().recordings_dir.clone();
    let heads = tokio::task::spawn_blocking(move || {
        recording::recording_dirs(&root)
            .unwrap_or_default()
            .iter()
            .filter_map(|dir| recording::read_journal_head(dir).ok())
            .filter(|r| !r.is_live())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    // Directories are sorted, and recording ids sort by start time: the last of each
    // stream is its newest.
    let mut newest: HashMap<(String, String), &Recording> = HashMap::new();
    for head in &heads {
        let mut record = cluster.record(head, StreamState::Ended);
        if let Some(node) = &head.node {
            record.node = node.clone();
        }
        cluster
            .registry
            .announce_recording(&record, ENDED_RECORD_TTL)
            .await?;
        newest.insert((head.provider.clone(), head.stream.clone()), head);
    }
    for ((provider, stream), head) in newest {
        if cluster.registry.stream(&provider, &stream).await?.is_none() {
            let record = cluster.record(head, StreamState::Ended);
            cluster.registry.announce(&record, ENDED_RECORD_TTL).await?;
        }
    }
    Ok(heads.len())
}

/// Ends recordings of this cluster whose server died and whose publisher never came
/// back, so they do not look live forever.
async fn sweep_orphans(hub: &StreamHub, cluster: &Cluster) {
    let root = hub.settings().recordings_dir.clone();
    let Ok(dirs) = tokio::task::spawn_blocking(move || recording::recording_dirs(&root)).await
    else {
        return;
    };
    for dir in dirs.into_iter().flatten() {
        let Ok(head) = recording::read_journal_head(&dir) else {
            continue;
        };
        let Some(owner) = head
            .node
            .clone()
            .filter(|n| head.is_live() && *n != cluster.node.id)
        else {
            continue;
        };
        if !quiet_for(&dir, ORPHAN_GRACE)
            || !matches!(cluster.registry.node(&owner).await, Ok(None))
        {
            continue;
        }
        // The stream may have moved on: taken over by another server, or a newer
        // recording. Then only the recording itself is repaired.
        let current = match cluster.registry.stream(&head.provider, &head.stream).await {
            Ok(Some(r)) if r.node != owner && r.state == StreamState::Live => continue,
            Ok(r) => r.is_none_or(|r| r.recording_id == head.recording_id),
            Err(_) => continue,
        };
        match recording::repair(&dir) {
            Ok(true) => {
                tracing::warn!(dir = %dir.display(), dead = %owner, "ended a recording its dead server left live");
                if current {
                    let ended = cluster.record(&head, StreamState::Ended);
                    if let Err(e) = cluster.registry.announce(&ended, ENDED_RECORD_TTL).await {
                        tracing::warn!(error = %e, "cannot announce the repaired recording");
                    }
                }
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot repair an orphaned recording")
            }
        }
    }
}

fn quiet_for(dir: &Path, grace: Duration) -> bool {
    std::fs::metadata(dir.join(recording::JOURNAL_FILE))
        .and_then(|m| m.modified())
        .is_ok_and(|t| SystemTime::now().duration_since(t).unwrap_or_default() > grace)
}
