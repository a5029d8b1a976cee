//! This server's place in its ingest cluster: who it is in the registry, whether it
//! may take a stream another server holds, and the announcer that keeps the registry's
//! stream records current (live streams, the switch to `ended` when a stream stops,
//! recordings found on storage, orphans of dead servers). The node's own lease is the
//! node directory's business, not this module's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use streamcdn_providers::hooks::{Event, Hook};
use streamcdn_providers::Providers;
use streamcdn_recording::{Recording, RecordingStore};
use streamcdn_registry::{NodeRecord, Registry, StreamRecord, StreamState};
use streamcdn_urls::authority::Authority;
use tokio::sync::watch;

use crate::events::{StreamEvent, StreamEvents};

/// An ended stream's record is kept this long: until then edges can find the cluster
/// that holds its recording.
pub const ENDED_RECORD_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// A live recording whose server's lease is gone is ended by another server of the
/// cluster only after this long without a new segment, so a publisher reconnecting
/// through the load balancer can still continue it.
const ORPHAN_GRACE: Duration = Duration::from_secs(60);
/// Storage is swept for orphans and expired interruptions this often.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// A publisher reconnecting while the server that holds its stream is being drained
/// waits at most this long for that server to make the recording durable and let go.
const HANDOFF_WAIT: Duration = Duration::from_secs(5);
const HANDOFF_POLL: Duration = Duration::from_millis(100);
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
    /// naming another server is only overridden when that server is dead (its lease is
    /// gone or its origin refuses connections: killed, its lease not yet expired) or
    /// has let the stream go while being drained (an `interrupted` record). A publisher
    /// that comes while its server is still draining waits for it to let go.
    pub async fn claim(&self, provider: &str, stream: &str) -> Claim {
        let waited = tokio::time::Instant::now();
        loop {
            match self.claim_once(provider, stream).await {
                Err(holder) if waited.elapsed() < HANDOFF_WAIT => {
                    tracing::debug!(
                        provider,
                        stream,
                        holder,
                        "waiting for a draining server to let the stream go"
                    );
                    tokio::time::sleep(HANDOFF_POLL).await;
                }
                Err(holder) => return Claim::HeldBy(holder),
                Ok(claim) => return claim,
            }
        }
    }

    /// Whether the server `node` is gone: its lease has expired (unless the registry is
    /// settling after a comeback, when a live server may not have announced itself
    /// again yet), or its origin refuses connections. A registry that does not answer
    /// says nothing: not gone.
    pub async fn is_dead(&self, node: &str) -> bool {
        if self.registry.settling() {
            return false;
        }
        match self.registry.node(node).await {
            Ok(Some(record)) => !reachable(&record.origin).await,
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// One look at the registry: the claim, or `Err(holder)` while a server being
    /// drained still holds the stream.
    async fn claim_once(&self, provider: &str, stream: &str) -> Result<Claim, String> {
        let record = match self.registry.stream(provider, stream).await {
            Ok(Some(record)) => record,
            Ok(None) => return Ok(Claim::Fresh),
            Err(e) => {
                // Publishing must not depend on the registry being up; announcing
                // catches up when it is back.
                tracing::warn!(error = %e, "registry unavailable; starting a new recording");
                return Ok(Claim::Fresh);
            }
        };
        if record.state == StreamState::Interrupted && record.cluster == self.node.cluster {
            tracing::info!(
                provider,
                stream,
                drained = record.node,
                recording = record.recording_id,
                "continuing a stream interrupted by the drain of its server"
            );
            return Ok(Claim::Continue(record.recording_id));
        }
        if record.state != StreamState::Live || record.node == self.node.id {
            return Ok(Claim::Fresh);
        }
        let (alive, draining) = match self.registry.node(&record.node).await {
            Ok(Some(node)) => (reachable(&node.origin).await, node.draining),
            Ok(None) => (false, false),
            Err(_) => (reachable(&record.origin).await, false),
        };
        if alive && draining && record.cluster == self.node.cluster {
            Err(record.node)
        } else if alive {
            Ok(Claim::HeldBy(record.node))
        } else if record.cluster == self.node.cluster {
            tracing::info!(
                provider,
                stream,
                dead = record.node,
                recording = record.recording_id,
                "taking over a stream from a dead server"
            );
            Ok(Claim::Continue(record.recording_id))
        } else {
            Ok(Claim::Fresh)
        }
    }
}

/// `on_recording_ended` for `recording`, as the server `node` sends it.
pub fn recording_ended_event(recording: &Recording, node: &str) -> Event {
    let ended_at = recording.ended_at.clone().unwrap_or_default();
    let mut event = Event::new(
        Hook::OnRecordingEnded,
        &recording.provider,
        &recording.stream,
        &recording.recording_id,
        streamcdn_recording::clock::format_time(std::time::SystemTime::now()),
        &ended_at,
    );
    event.node = recording.node.clone().or_else(|| Some(node.to_owned()));
    event.started_at = Some(recording.started_at.clone());
    event.ended_at = Some(ended_at);
    event.duration_secs = Some(recording.duration_secs());
    event.segments = Some(recording.segments.len() as u64);
    event.bytes = Some(recording.segments.iter().map(|s| s.bytes).sum());
    event.playback = Some(format!(
        "/{}/{}/{}/index.m3u8",
        recording.provider, recording.stream, recording.recording_id
    ));
    event
}

/// Whether something accepts TCP connections at an `http://host[:port]` origin.
async fn reachable(origin: &str) -> bool {
    let Some(authority) = Authority::parse(origin) else {
        return false;
    };
    let address = (authority.host, authority.port.unwrap_or(80));
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(address)).await,
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
        let (StreamEvent::Live(r) | StreamEvent::Ended(r) | StreamEvent::Interrupted(r)) = event;
        self.current.insert(key_of(&r), r);
    }

    /// Whether a stream still has its publisher here (not ended, not interrupted).
    fn any_publishing(&self) -> bool {
        self.current
            .values()
            .any(|r| r.is_live() && r.interrupted_at.is_none())
    }
}

/// Keeps the registry's stream records current until shutdown, from the hub's events.
pub async fn run_announcer(
    cluster: Cluster,
    store: RecordingStore,
    providers: Providers,
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
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = tokio::time::Instant::now();
            sweep_orphans(&cluster, &store, &providers).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(refresh.min(SWEEP_EVERY)) => {}
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
    while announced.any_publishing() {
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
        let interrupted = recording.is_live() && recording.interrupted_at.is_some();
        let result = if interrupted {
            // Another server may take it now, without waiting for a lease to expire.
            let next = cluster.record(recording, StreamState::Interrupted);
            let outcome = match announced.live.get(key) {
                Some(previous) => cluster
                    .registry
                    .transition(previous, &next, ENDED_RECORD_TTL)
                    .await
                    .map(drop),
                None => cluster.registry.announce(&next, ENDED_RECORD_TTL).await,
            };
            if outcome.is_ok() {
                tracing::info!(
                    provider = key.0,
                    stream = key.1,
                    "announced the stream interrupted: another server of the cluster may continue it"
                );
                done.push(key.clone());
            }
            outcome
        } else if recording.is_live() {
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
    release_interrupted(cluster, store).await?;
    Ok(ended.len())
}

/// Recordings this server left live when it crashed are interrupted on storage (see
/// `journal::recover`); their streams' records still name this server as the live
/// holder. Marking them interrupted lets whichever server the publisher reconnects to
/// continue them at once, as after a drain.
async fn release_interrupted(
    cluster: &Cluster,
    store: &RecordingStore,
) -> Result<(), streamcdn_registry::RegistryError> {
    let stored = store.all().await.unwrap_or_default();
    let interrupted = stored.iter().map(|(_, r)| r).filter(|r| {
        r.is_live()
            && r.interrupted_at.is_some()
            && r.node.as_deref() == Some(cluster.node.id.as_str())
    });
    for recording in interrupted {
        let Some(record) = cluster
            .registry
            .stream(&recording.provider, &recording.stream)
            .await?
        else {
            continue;
        };
        if record.state == StreamState::Live
            && record.node == cluster.node.id
            && record.recording_id == recording.recording_id
        {
            let next = cluster.record(recording, StreamState::Interrupted);
            if cluster
                .registry
                .transition(&record, &next, ENDED_RECORD_TTL)
                .await?
            {
                tracing::info!(
                    provider = recording.provider,
                    stream = recording.stream,
                    recording = recording.recording_id,
                    "announced a stream left live by a crash interrupted: its publisher may continue it on any server of the cluster"
                );
            }
        }
    }
    Ok(())
}

/// Ends recordings of this cluster whose server died, or was drained, and whose
/// publisher never came back, so they do not look live forever.
async fn sweep_orphans(cluster: &Cluster, store: &RecordingStore, providers: &Providers) {
    let Ok(recordings) = store.all().await else {
        return;
    };
    for (dir, recording) in recordings {
        if recording.is_live() && recording.interrupted_at.is_some() {
            end_if_abandoned(cluster, store, providers, &dir, &recording).await;
            continue;
        }
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

/// Ends a recording interrupted by a drain once its provider's reconnect window has
/// passed with no publisher back: its record turns `ended` (compare-and-set, so of the
/// servers of the cluster that notice, one does it), then its journal, then
/// `on_recording_ended`, once.
async fn end_if_abandoned(
    cluster: &Cluster,
    store: &RecordingStore,
    providers: &Providers,
    dir: &std::path::Path,
    recording: &Recording,
) {
    let window = providers.reconnect_window(&recording.provider);
    if store.quiet_for(dir).await.is_none_or(|q| q <= window) {
        return;
    }
    let ended = cluster.record(recording, StreamState::Ended);
    let mut unannounced = false;
    let won = match cluster
        .registry
        .stream(&recording.provider, &recording.stream)
        .await
    {
        Ok(Some(r)) if r.recording_id == recording.recording_id => match r.state {
            StreamState::Interrupted => {
                match cluster
                    .registry
                    .transition(&r, &ended, ENDED_RECORD_TTL)
                    .await
                {
                    Ok(won) => won,
                    Err(_) => return,
                }
            }
            // Continued (its journal is being reopened), or ended by another server
            // of the cluster a moment ago: not ours to end.
            _ => return,
        },
        // No record (a registry that lost it, or a restarted in-process one), or one of
        // a newer recording: the journal decides alone.
        Ok(record) => {
            unannounced = record.is_none();
            true
        }
        Err(_) => return,
    };
    if !won {
        return;
    }
    match store.repair(dir).await {
        Ok(true) => {
            metrics::counter!("streamcdn_ingest_interruptions_expired_total").increment(1);
            tracing::info!(
                provider = recording.provider,
                stream = recording.stream,
                recording = recording.recording_id,
                window_secs = window.as_secs_f64(),
                "no publisher came back within the reconnect window; the recording is ended"
            );
            if let Ok(now_ended) = store.load_dir(dir.to_owned()).await {
                let record = cluster.record(&now_ended, StreamState::Ended);
                if let Err(e) = cluster
                    .registry
                    .announce_recording(&record, ENDED_RECORD_TTL)
                    .await
                {
                    tracing::warn!(error = %e, "cannot announce the ended recording");
                }
                // The stream's own record too, where there was none: its URL plays
                // the recording that just ended.
                if unannounced {
                    if let Err(e) = cluster.registry.announce(&record, ENDED_RECORD_TTL).await {
                        tracing::warn!(error = %e, "cannot announce the ended stream");
                    }
                }
                providers
                    .hooks()
                    .notify(recording_ended_event(&now_ended, &cluster.node.id));
            }
        }
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot end an interrupted recording")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamcdn_config::{ProviderConfig, SegmentFormat};
    use streamcdn_recording::{JournalWriter, SegmentEntry};

    const LEASE: Duration = Duration::from_secs(10);

    fn member(registry: &Registry, id: &str, origin: &str) -> Cluster {
        Cluster {
            registry: registry.clone(),
            node: NodeRecord::ingest(id, "c", origin),
            lease: LEASE,
        }
    }

    fn recording(id: &str) -> Recording {
        let mut r = Recording::new("p", "s", id, SegmentFormat::Fmp4, "t0".into(), 2.0);
        r.node = Some("a".into());
        r
    }

    #[tokio::test]
    async fn a_stream_a_draining_server_lets_go_is_continued_at_once() {
        let registry = Registry::memory();
        // `a` is alive (its origin accepts connections) and draining.
        let origin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = member(
            &registry,
            "a",
            &format!("http://{}", origin.local_addr().unwrap()),
        );
        let b = member(&registry, "b", "http://127.0.0.1:9");
        let mut draining = a.node.clone();
        draining.draining = true;
        registry.register_node(&draining, LEASE).await.unwrap();
        let live = a.record(&recording("r1"), StreamState::Live);
        registry.announce(&live, LEASE).await.unwrap();

        // A publisher at `b` waits while `a` makes the recording durable and lets go.
        let letting_go = {
            let (registry, live) = (registry.clone(), live.clone());
            let interrupted = a.record(&recording("r1"), StreamState::Interrupted);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                assert!(registry
                    .transition(&live, &interrupted, LEASE)
                    .await
                    .unwrap());
            })
        };
        let asked = tokio::time::Instant::now();
        assert_eq!(b.claim("p", "s").await, Claim::Continue("r1".into()));
        assert!(asked.elapsed() >= Duration::from_millis(300));
        assert!(asked.elapsed() < HANDOFF_WAIT);
        letting_go.await.unwrap();
        // The drained server itself, restarted, continues it as well.
        assert_eq!(a.claim("p", "s").await, Claim::Continue("r1".into()));
        // A live server that is not draining keeps its stream.
        registry.announce(&live, LEASE).await.unwrap();
        registry.register_node(&a.node, LEASE).await.unwrap();
        assert_eq!(b.claim("p", "s").await, Claim::HeldBy("a".into()));
    }

    #[tokio::test]
    async fn an_abandoned_interruption_is_ended_once_by_whichever_server_sweeps_first() {
        let root = std::env::temp_dir().join(format!("streamcdn-abandoned-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let store = RecordingStore::open(&root).unwrap();
        let registry = Registry::memory();
        let (a, b) = (
            member(&registry, "a", "http://127.0.0.1:9"),
            member(&registry, "b", "http://127.0.0.1:9"),
        );
        let provider = ProviderConfig {
            name: "p".into(),
            stream_key: "secret-key".into(),
            reconnect_window: Duration::ZERO,
            ..ProviderConfig::default()
        };
        let providers = Providers::new(&[provider], Duration::from_secs(300), registry.clone());
        let mut writer = store.create(recording("r1")).await.unwrap();
        writer.append_part("000000.m4s", b"abc").unwrap();
        writer
            .add_written_segment(SegmentEntry {
                sequence: 1,
                file: "000000.m4s".into(),
                duration_secs: 2.0,
                program_date_time: "t1".into(),
                bytes: 3,
                discontinuity: false,
                init: None,
            })
            .unwrap();
        writer.interrupt("t2".into()).unwrap();
        registry
            .announce(&a.record(&recording("r1"), StreamState::Interrupted), LEASE)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (dir, seen) = store.all().await.unwrap().pop().unwrap();
        assert!(seen.is_live() && seen.interrupted_at.is_some());

        // Both servers saw it interrupted; `b` sweeps first.
        end_if_abandoned(&b, &store, &providers, &dir, &seen).await;
        end_if_abandoned(&a, &store, &providers, &dir, &seen).await;
        let record = registry.stream("p", "s").await.unwrap().unwrap();
        assert_eq!(record.state, StreamState::Ended);
        assert_eq!(record.node, "b", "the first sweeper's end stands");
        let ended = store.load_dir(dir.clone()).await.unwrap();
        assert!(!ended.is_live());
        assert_eq!(ended.ended_at.as_deref(), Some("t1"));

        // Within the window nothing is ended.
        let patient = Providers::new(
            &[ProviderConfig {
                name: "p".into(),
                stream_key: "secret-key".into(),
                ..ProviderConfig::default()
            }],
            Duration::from_secs(300),
            registry.clone(),
        );
        let (_, mut writer) = JournalWriter::reopen(&dir, "b").unwrap();
        writer.interrupt("t3".into()).unwrap();
        let again = store.load_dir(dir.clone()).await.unwrap();
        end_if_abandoned(&a, &store, &patient, &dir, &again).await;
        assert!(store.load_dir(dir).await.unwrap().is_live());
    }
}
