//! The one owner of stream state on an ingest server: who may publish, which streams
//! are live, and the in-memory view of each stream's current recording that the origin
//! serves from.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use streamcdn_config::{is_valid_name, ProviderConfig, SegmentFormat};
use thiserror::Error;
use tokio::sync::{watch, Notify};

use crate::cluster::{Claim, Cluster};
use crate::recording::{self, JournalWriter, Recording, RecordingState, SegmentEntry};

#[derive(Debug, Error)]
pub enum PublishError {
    #[error("unknown provider {0:?}")]
    UnknownProvider(String),
    #[error("invalid stream name {0:?}: use 1-64 characters of A-Z a-z 0-9 - _")]
    InvalidStreamName(String),
    #[error("missing stream key (publish to <stream>?key=<secret>)")]
    MissingKey,
    #[error("wrong stream key")]
    WrongKey,
    #[error("stream {0} is already being published")]
    AlreadyLive(String),
    #[error("stream {0} is being published through server {1}")]
    HeldElsewhere(String, String),
    #[error("cannot create the recording: {0}")]
    Storage(#[from] std::io::Error),
}

impl PublishError {
    /// The NetStream status code an RTMP client is refused with.
    pub fn rtmp_code(&self) -> &'static str {
        match self {
            PublishError::UnknownProvider(_)
            | PublishError::MissingKey
            | PublishError::WrongKey => "NetStream.Publish.Unauthorized",
            PublishError::InvalidStreamName(_)
            | PublishError::AlreadyLive(_)
            | PublishError::HeldElsewhere(..) => "NetStream.Publish.BadName",
            PublishError::Storage(_) => "NetStream.Publish.Failed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct HubSettings {
    pub recordings_dir: PathBuf,
    pub default_format: SegmentFormat,
    pub target_duration_secs: f64,
    pub live_window: usize,
    /// `archive_after` of providers that set none: within it, a publisher that comes
    /// back continues its stream's last recording.
    pub default_archive_after: std::time::Duration,
}

/// What the origin needs of a stream: its current recording and the bytes of recent
/// objects, which are served from memory so a segment is playable the moment it is cut.
#[derive(Debug)]
pub struct LiveStream {
    state: RwLock<StreamState>,
    /// Bumped on every new segment and at the end, for requests that wait.
    updates: watch::Sender<u64>,
    /// The hub's: told when the stream starts or ends, for the registry announcer.
    hub_changes: Arc<Notify>,
}

#[derive(Debug)]
struct StreamState {
    /// Copy-on-write: readers take a cheap snapshot; a writer copies only if a snapshot
    /// is still held.
    recording: Arc<Recording>,
    hot: HashMap<String, Bytes>,
    hot_order: Vec<String>,
}

impl LiveStream {
    fn new(recording: Recording, hub_changes: Arc<Notify>) -> Self {
        Self {
            hub_changes,
            state: RwLock::new(StreamState {
                recording: Arc::new(recording),
                hot: HashMap::new(),
                hot_order: Vec::new(),
            }),
            updates: watch::channel(0).0,
        }
    }

    pub fn recording(&self) -> Arc<Recording> {
        self.read().recording.clone()
    }

    /// Runs `f` on the recording without cloning it.
    pub fn with_recording<T>(&self, f: impl FnOnce(&Recording) -> T) -> T {
        f(&self.read().recording)
    }

    pub fn hot_object(&self, file: &str) -> Option<Bytes> {
        self.read().hot.get(file).cloned()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.updates.subscribe()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, StreamState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, StreamState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_tracks(
        &self,
        init: Option<(String, Bytes)>,
        codecs: Vec<String>,
        resolution: Option<(u16, u16)>,
    ) {
        let mut state = self.write();
        let state = &mut *state;
        let recording = Arc::make_mut(&mut state.recording);
        if let Some((file, bytes)) = init {
            recording.inits.push(file.clone());
            state.hot.insert(file, bytes);
        }
        recording.codecs = codecs;
        recording.resolution = resolution;
    }

    pub(crate) fn add_segment(
        &self,
        entry: SegmentEntry,
        bytes: Bytes,
        frame_rate: Option<f64>,
        keep_hot: usize,
    ) {
        {
            let mut state = self.write();
            let recording = Arc::make_mut(&mut state.recording);
            if recording.frame_rate.is_none() {
                recording.frame_rate = frame_rate;
            }
            recording.segments.push(entry.clone());
            state.hot.insert(entry.file.clone(), bytes);
            state.hot_order.push(entry.file);
            let excess = state.hot_order.len().saturating_sub(keep_hot);
            for file in state.hot_order.drain(..excess).collect::<Vec<_>>() {
                state.hot.remove(&file);
            }
        }
        self.updates.send_modify(|n| *n += 1);
    }

    pub(crate) fn end(&self, ended_at: String) {
        {
            let mut state = self.write();
            let recording = Arc::make_mut(&mut state.recording);
            recording.state = RecordingState::Ended;
            recording.ended_at = Some(ended_at);
        }
        self.updates.send_modify(|n| *n += 1);
        self.hub_changes.notify_one();
    }

    /// A segment on durable storage is served from there; its memory copy only bridged
    /// the time until it was written.
    pub(crate) fn release_object(&self, file: &str) {
        let mut state = self.write();
        if state.hot.remove(file).is_some() {
            state.hot_order.retain(|f| f != file);
        }
    }

    /// Once the recorder has made every segment durable, memory copies are not needed.
    pub(crate) fn release_hot(&self) {
        let mut state = self.write();
        state.hot.clear();
        state.hot_order.clear();
    }
}

#[derive(Debug)]
pub struct StreamHub {
    settings: HubSettings,
    cluster: Cluster,
    changes: Arc<Notify>,
    providers: RwLock<HashMap<String, ProviderConfig>>,
    streams: Mutex<HashMap<(String, String), Arc<LiveStream>>>,
}

/// The stream name and key from an RTMP publishing name `stream?key=secret&...`.
pub fn split_publish_name(name: &str) -> (&str, Option<&str>) {
    let (stream, query) = name.split_once('?').unwrap_or((name, ""));
    let key = query.split('&').find_map(|pair| pair.strip_prefix("key="));
    (stream, key)
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl StreamHub {
    pub fn new(
        settings: HubSettings,
        providers: &[ProviderConfig],
        cluster: Cluster,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(&settings.recordings_dir)?;
        let repaired = recording::recover(&settings.recordings_dir, &cluster.node.id)?;
        if repaired > 0 {
            tracing::warn!(repaired, "recovered recordings interrupted by a crash");
        }
        Ok(Self {
            settings,
            cluster,
            changes: Arc::new(Notify::new()),
            providers: RwLock::new(
                providers
                    .iter()
                    .map(|p| (p.name.clone(), p.clone()))
                    .collect(),
            ),
            streams: Mutex::new(HashMap::new()),
        })
    }

    pub fn settings(&self) -> &HubSettings {
        &self.settings
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Notified when a stream starts or ends.
    pub fn changes(&self) -> Arc<Notify> {
        self.changes.clone()
    }

    fn streams(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Arc<LiveStream>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks a publisher's provider, stream name and key; returns the provider and
    /// stream.
    pub fn authorize(
        &self,
        app: &str,
        publish_name: &str,
    ) -> Result<(ProviderConfig, String), PublishError> {
        // The key may also ride on the app (`rtmp://host/provider?key=...` as the OBS
        // server, the bare stream name as the stream key).
        let (app, app_key) = split_publish_name(app);
        let provider = self
            .providers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(app)
            .cloned()
            .ok_or_else(|| PublishError::UnknownProvider(app.to_owned()))?;
        let (stream, key) = split_publish_name(publish_name);
        if !is_valid_name(stream) {
            return Err(PublishError::InvalidStreamName(stream.to_owned()));
        }
        let key = key.or(app_key).ok_or(PublishError::MissingKey)?;
        if !constant_time_eq(key.as_bytes(), provider.stream_key.as_bytes()) {
            return Err(PublishError::WrongKey);
        }
        Ok((provider, stream.to_owned()))
    }

    /// Authorizes a publisher and opens its recording: a new one, or the one a dead
    /// server of the cluster was writing (continued after a discontinuity).
    pub async fn begin_publish(
        &self,
        app: &str,
        publish_name: &str,
        started_at: String,
        recording_id: String,
    ) -> Result<(Arc<LiveStream>, JournalWriter), PublishError> {
        let (provider, stream) = self.authorize(app, publish_name)?;
        let name = format!("{}/{stream}", provider.name);
        if self
            .stream(&provider.name, &stream)
            .is_some_and(|s| s.with_recording(Recording::is_live))
        {
            return Err(PublishError::AlreadyLive(name));
        }
        let resume = match self.cluster.claim(&provider.name, &stream).await {
            Claim::Fresh => self.resumable(&provider, &stream).await,
            Claim::Continue(id) => Some(id),
            Claim::HeldBy(node) => return Err(PublishError::HeldElsewhere(name, node)),
        };
        self.open_recording(&provider, &stream, started_at, recording_id, resume)
    }

    /// The stream's last recording, if it ended within its provider's `archive_after`
    /// and is not archived: a publisher coming back continues it.
    async fn resumable(&self, provider: &ProviderConfig, stream: &str) -> Option<String> {
        let id = self.recording_ids(&provider.name, stream).pop()?;
        let dir = self.recording_dir(&provider.name, stream, &id);
        if dir.join(recording::ARCHIVED_MARKER).exists() {
            return None;
        }
        let head = recording::read_journal_head(&dir).ok()?;
        let ended = head.ended_at.as_deref().filter(|_| !head.is_live())?;
        let ended_for = crate::archiver::seconds_since(ended)?;
        let configured = provider
            .archive_after
            .unwrap_or(self.settings.default_archive_after);
        let window =
            crate::archiver::effective_archive_after(configured, &self.cluster, &provider.name)
                .await;
        (ended_for < window.as_secs_f64()).then_some(id)
    }

    fn open_recording(
        &self,
        provider: &ProviderConfig,
        stream: &str,
        started_at: String,
        recording_id: String,
        resume: Option<String>,
    ) -> Result<(Arc<LiveStream>, JournalWriter), PublishError> {
        let id = (provider.name.clone(), stream.to_owned());
        let mut streams = self.streams();
        if streams
            .get(&id)
            .is_some_and(|s| s.with_recording(Recording::is_live))
        {
            return Err(PublishError::AlreadyLive(format!("{}/{}", id.0, id.1)));
        }
        let node = &self.cluster.node.id;
        let resumed = resume.and_then(|rid| {
            let dir = recording::recording_dir(&self.settings.recordings_dir, &id.0, &id.1, &rid);
            JournalWriter::reopen(&dir, node)
                .inspect_err(|e| tracing::warn!(dir = %dir.display(), error = %e, "cannot continue the recording; starting a new one"))
                .ok()
        });
        let (recording, journal) = match resumed {
            Some(pair) => pair,
            None => {
                let format = provider.format.unwrap_or(self.settings.default_format);
                let mut recording = Recording::new(
                    &id.0,
                    &id.1,
                    &recording_id,
                    format,
                    started_at,
                    self.settings.target_duration_secs,
                );
                recording.node = Some(node.clone());
                let dir = recording::recording_dir(
                    &self.settings.recordings_dir,
                    &id.0,
                    &id.1,
                    &recording_id,
                );
                std::fs::create_dir_all(&dir)?;
                // Created here, not by the recorder, so a storage failure refuses the
                // publisher.
                let journal = JournalWriter::create(&dir, &recording)?;
                (recording, journal)
            }
        };
        let live = Arc::new(LiveStream::new(recording, self.changes.clone()));
        streams.insert(id, live.clone());
        drop(streams);
        self.changes.notify_one();
        Ok((live, journal))
    }

    /// The stream's current (or most recent) recording held in memory.
    pub fn stream(&self, provider: &str, stream: &str) -> Option<Arc<LiveStream>> {
        self.streams()
            .get(&(provider.to_owned(), stream.to_owned()))
            .cloned()
    }

    /// The current recording of every stream this server has held since it started.
    pub fn current_recordings(&self) -> Vec<Arc<Recording>> {
        self.streams().values().map(|s| s.recording()).collect()
    }

    pub fn live_streams(&self) -> Vec<Arc<Recording>> {
        let mut live: Vec<_> = self
            .streams()
            .values()
            .map(|s| s.recording())
            .filter(|r| r.is_live())
            .collect();
        live.sort_by(|a, b| (&a.provider, &a.stream).cmp(&(&b.provider, &b.stream)));
        live
    }

    pub fn recording_dir(&self, provider: &str, stream: &str, recording_id: &str) -> PathBuf {
        recording::recording_dir(
            &self.settings.recordings_dir,
            provider,
            stream,
            recording_id,
        )
    }

    /// Recording ids of a stream on local storage, oldest first.
    pub fn recording_ids(&self, provider: &str, stream: &str) -> Vec<String> {
        let dir = self.settings.recordings_dir.join(provider).join(stream);
        let mut ids: Vec<String> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join(recording::JOURNAL_FILE).is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        ids
    }

    /// A recording by id: from memory for the stream's current one, else its journal.
    pub fn load_recording(&self, provider: &str, stream: &str, id: &str) -> Option<Arc<Recording>> {
        if let Some(live) = self.stream(provider, stream) {
            let recording = live.recording();
            if recording.recording_id == id {
                return Some(recording);
            }
        }
        recording::read_journal(&self.recording_dir(provider, stream, id))
            .ok()
            .map(Arc::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_names_carry_the_key_in_the_query() {
        assert_eq!(split_publish_name("cam?key=abc"), ("cam", Some("abc")));
        assert_eq!(split_publish_name("cam?x=1&key=abc"), ("cam", Some("abc")));
        assert_eq!(split_publish_name("cam"), ("cam", None));
    }

    fn test_hub(name: &str, node: &str) -> StreamHub {
        let dir = std::env::temp_dir().join(format!("streamcdn-hub-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        test_hub_in(dir, streamcdn_registry::Registry::memory(), node)
    }

    fn test_hub_in(dir: PathBuf, registry: streamcdn_registry::Registry, node: &str) -> StreamHub {
        StreamHub::new(
            HubSettings {
                recordings_dir: dir,
                default_format: SegmentFormat::Fmp4,
                target_duration_secs: 2.0,
                live_window: 6,
                default_archive_after: std::time::Duration::from_secs(300),
            },
            &[ProviderConfig {
                name: "p".into(),
                stream_key: "secret-key".into(),
                format: None,
                archive_after: None,
            }],
            Cluster {
                registry,
                node: streamcdn_registry::NodeRecord {
                    id: node.into(),
                    cluster: "c".into(),
                    // Nothing listens on port 9: the node probes as dead.
                    origin: "http://127.0.0.1:9".into(),
                },
                lease: std::time::Duration::from_secs(10),
            },
        )
        .unwrap()
    }

    #[tokio::test]
    async fn keys_are_checked_and_duplicates_refused() {
        let hub = test_hub("keys", "n1");
        let begin = |app: &'static str, name: &'static str, id: &'static str| {
            hub.begin_publish(app, name, "t".into(), id.into())
        };
        assert!(matches!(
            begin("p", "s?key=nope", "r0").await,
            Err(PublishError::WrongKey)
        ));
        assert!(matches!(
            begin("p", "s", "r0").await,
            Err(PublishError::MissingKey)
        ));
        assert!(matches!(
            begin("q", "s?key=secret-key", "r0").await,
            Err(PublishError::UnknownProvider(_))
        ));
        assert!(matches!(
            begin("p", "../x?key=secret-key", "r0").await,
            Err(PublishError::InvalidStreamName(_))
        ));
        let (live, _) = begin("p", "s?key=secret-key", "r1").await.unwrap();
        assert!(matches!(
            begin("p", "s?key=secret-key", "r2").await,
            Err(PublishError::AlreadyLive(_))
        ));
        live.end("t2".into());
        let (live, _) = begin("p?key=secret-key", "s", "r3").await.unwrap();
        live.end("t3".into());
        assert!(begin("p", "s?key=secret-key", "r4").await.is_ok());
    }

    #[tokio::test]
    async fn a_dead_servers_stream_is_continued_by_another_of_the_cluster() {
        let dir =
            std::env::temp_dir().join(format!("streamcdn-hub-takeover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let registry = streamcdn_registry::Registry::memory();
        let lease = std::time::Duration::from_secs(10);
        let a = test_hub_in(dir.clone(), registry.clone(), "a");
        let b = test_hub_in(dir.clone(), registry.clone(), "b");
        registry
            .register_node(&a.cluster.node, lease)
            .await
            .unwrap();
        let (live, mut journal) = a
            .begin_publish("p", "s?key=secret-key", "t".into(), "r1".into())
            .await
            .unwrap();
        let entry = SegmentEntry {
            sequence: 0,
            file: "000000.m4s".into(),
            duration_secs: 2.0,
            program_date_time: "t".into(),
            bytes: 1,
            discontinuity: false,
            init: None,
        };
        journal.add_segment(entry, b"x").unwrap();
        let record = a
            .cluster
            .record(&live.recording(), streamcdn_registry::StreamState::Live);
        registry.announce(&record, lease).await.unwrap();

        // a's lease is current and its origin refuses connections: it is dead.
        let (continued, _) = b
            .begin_publish("p", "s?key=secret-key", "t".into(), "r2".into())
            .await
            .unwrap();
        let recording = continued.recording();
        assert_eq!(recording.recording_id, "r1");
        assert_eq!(recording.node.as_deref(), Some("b"));
        assert_eq!(recording.segments.len(), 1);
        // a restarting must not end the recording b now writes.
        drop(a);
        let a = test_hub_in(dir, registry, "a");
        let on_disk = a.load_recording("p", "s", "r1").unwrap();
        assert!(on_disk.is_live());
    }
}
