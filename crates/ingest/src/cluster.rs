//! This server's place in its ingest cluster: who it is in the registry, whether it
//! may take a stream another server holds, and the announcer that keeps the registry's
//! stream records current (live streams, the switch to `ended` when a stream stops,
//! recordings found on storage, orphans of dead servers). The node's own lease is the
//! node directory's business, not this module's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use streamcdn_recording::{Recording, RecordingStore};
use streamcdn_registry::{NodeRecord, Registry, StreamRecord, StreamState};
use tokio::sync::watch;

use crate::events::{StreamEvent, StreamEvents};

/// An ended stream's record is kept this long: until then edges can find the cluster
/// that holds its recording.
pub const ENDED_RECORD_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// A live recording whose server's lease is gone is ended by another server of the
/// cluster only after this long without a new segment, so a publisher reconnecting
/// through the load balancer can still continue it.
const ORPHAN_GRACE: Duration = Duration::from_secs(60);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Ended recordings on the cluster's storage are announced again this often, well
/// within [`ENDED_RECORD_TTL`], at start (the in-process registry starts empty) and
/// each time the registry comes back (it may have restarted empty).
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
    pub fn record(&self, recording: &Recording, state: StreamState) -> StreamRecord {
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

type StreamKey = (String, String);

fn key_of(recording: &Recording) -> StreamKey {
    (recording.provider.clone(), recording.stream.clone())
}

/// What the announcer knows: the streams the hub reported and what it told the
/// registry about them. Ended streams leave both once their end is announced.
#[derive(Default)]
struct Announced {
    /// The latest recording of each stream the hub reported, until its end is announced.
    current: HashMap<StreamKey, Arc<Recording>>,
    /// The live record this server announced for each stream.
    live: HashMap<StreamKey, StreamRecord>,
}

impl Announced {
    fn apply(&mut self, event: StreamEvent) {
        let (StreamEvent::Live(r) | StreamEvent::Ended(r)) = event;
        self.current.insert(key_of(&r), r);
    }

    fn any_live(&self) -> bool {
        self.current.values().any(|r| r.is_live())
    }
}

/// Keeps the registry's stream records current until shutdown, from the hub's events.
pub async fn run_announcer(
    cluster: Cluster,
    store: RecordingStore,
    mut events: StreamEvents,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut announced = Announced::default();
    let mut last_sweep = tokio::time::Instant::now();
    let mut last_restore: Option<tokio::time::Instant> = None;
    let refresh = cluster.lease / 3;
    let mut comebacks = cluster.registry.continuity();
    loop {
        if last_restore.is_none_or(|t| t.elapsed() > RESTORE_EVERY) {
            match announce_stored(&cluster, &store).await {
                Ok(n) => {
                    last_restore = Some(tokio::time::Instant::now());
                    tracing::info!(recordings = n, "announced the ended recordings on storage");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot announce stored recordings; will retry")
                }
            }
        }
        sync_streams(&cluster, &mut announced).await;
        if last_sweep.elapsed() > ORPHAN_GRACE / 2 {
            last_sweep = tokio::time::Instant::now();
            sweep_orphans(&cluster, &store).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(refresh) => {}
            Some(event) = events.recv() => {
                announced.apply(event);
                while let Ok(event) = events.try_recv() {
                    announced.apply(event);
                }
            }
            // The registry is back after an outage (or restarted, or failed over): it
            // may have lost every lease, so everything is announced again now, not at
            // the next refresh; caches trust where streams were until then.
            Ok(()) = comebacks.changed() => {
                tracing::info!("the registry came back; announcing every stream and recording again");
                last_restore = None;
            }
            _ = shutdown.changed() => break,
        }
    }
    // Publishers are being finished by the RTMP server; announce their end as it comes.
    let grace = tokio::time::Instant::now() + Duration::from_secs(5);
    while announced.any_live() {
        match tokio::time::timeout_at(grace, events.recv()).await {
            Ok(Some(event)) => announced.apply(event),
            Ok(None) | Err(_) => break,
        }
    }
    sync_streams(&cluster, &mut announced).await;
}

/// Announces live streams (refreshing their lease) and turns the records of ended
/// ones into `ended` records that name the cluster.
async fn sync_streams(cluster: &Cluster, announced: &mut Announced) {
    let mut done = Vec::new();
    for (key, recording) in &announced.current {
        let result = if recording.is_live() {
            let record = cluster.record(recording, StreamState::Live);
            let outcome = cluster.registry.announce(&record, cluster.lease).await;
            if outcome.is_ok() {
                announced.live.insert(key.clone(), record);
            }
            outcome
        } else if let Some(previous) = announced.live.get(key) {
            let ended = cluster.record(recording, StreamState::Ended);
            match cluster
                .registry
                .transition(previous, &ended, ENDED_RECORD_TTL)
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
                    done.push(key.clone());
                    Ok(())
                }
                Err(e) => Err(e),
            }
        } else {
            // Never announced live (the registry was down all along): nothing to end.
            done.push(key.clone());
            Ok(())
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "registry announcement failed; will retry");
        }
    }
    for key in done {
        announced.current.remove(&key);
        announced.live.remove(&key);
    }
}

/// Announces every ended recording on the cluster's storage, and a stream's newest one
/// as the stream's record when the registry has none, so recordings stay reachable
/// after a restart. Returns how many were announced.
async fn announce_stored(
    cluster: &Cluster,
    store: &RecordingStore,
) -> Result<usize, streamcdn_registry::RegistryError> {
    let ended: Vec<Arc<Recording>> = store
        .all()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| !r.is_live())
        .collect();
    // Directories are sorted, and recording ids sort by start time: the last of each
    // stream is its newest.
    let mut newest: HashMap<StreamKey, &Recording> = HashMap::new();
    for recording in &ended {
        let mut record = cluster.record(recording, StreamState::Ended);
        if let Some(node) = &recording.node {
            record.node = node.clone();
        }
        cluster
            .registry
            .announce_recording(&record, ENDED_RECORD_TTL)
            .await?;
        newest.insert(key_of(recording), recording);
    }
    for ((provider, stream), recording) in newest {
        if cluster.registry.stream(&provider, &stream).await?.is_none() {
            let record = cluster.record(recording, StreamState::Ended);
            cluster.registry.announce(&record, ENDED_RECORD_TTL).await?;
        }
    }
    Ok(ended.len())
}

/// Ends recordings of this cluster whose server died and whose publisher never came
/// back, so they do not look live forever.
async fn sweep_orphans(cluster: &Cluster, store: &RecordingStore) {
    let Ok(recordings) = store.all().await else {
        return;
    };
    for (dir, recording) in recordings {
        let Some(owner) = recording
            .node
            .clone()
            .filter(|n| recording.is_live() && *n != cluster.node.id)
        else {
            continue;
        };
        if store
            .quiet_for(&dir)
            .await
            .is_none_or(|q| q <= ORPHAN_GRACE)
            || !matches!(cluster.registry.node(&owner).await, Ok(None))
        {
            continue;
        }
        // The stream may have moved on: taken over by another server, or a newer
        // recording. Then only the recording itself is repaired.
        let current = match cluster
            .registry
            .stream(&recording.provider, &recording.stream)
            .await
        {
            Ok(Some(r)) if r.node != owner && r.state == StreamState::Live => continue,
            Ok(r) => r.is_none_or(|r| r.recording_id == recording.recording_id),
            Err(_) => continue,
        };
        match store.repair(&dir).await {
            Ok(true) => {
                tracing::warn!(dir = %dir.display(), dead = %owner, "ended a recording its dead server left live");
                if current {
                    let ended = cluster.record(&recording, StreamState::Ended);
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
