//! The one owner of stream state on an ingest server: who may publish, which streams
//! are live, and the in-memory view of each stream's current recording that the origin
//! serves from. A stream leaves the hub once its recording is ended and durable (the
//! origin then reads it from the [`RecordingStore`]), so memory is bounded by the
//! streams live now, however many a server sees in its life.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock, Weak};

use bytes::Bytes;
use streamcdn_config::{ProviderConfig, SegmentFormat};
use streamcdn_feed::FeedChannel;
use streamcdn_providers::hook_client::Hooks;
use streamcdn_providers::hooks::{Event, Hook};
use streamcdn_providers::{KeyError, KeyKind, Providers};
use streamcdn_recording::hls::{EdgePart, OpenSegment};
use streamcdn_recording::{
    clock, JournalWriter, Recording, RecordingState, RecordingStore, SegmentEntry,
};
use streamcdn_urls::{is_valid_name, StreamName};
use thiserror::Error;
use tokio::sync::{mpsc, watch};

use crate::cluster::{Claim, Cluster};
use crate::events::{EventSender, StreamEvent, StreamEvents};

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
    #[error("refused by the provider's publish hook: {0}")]
    Denied(String),
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
            | PublishError::WrongKey
            | PublishError::Denied(_) => "NetStream.Publish.Unauthorized",
            PublishError::InvalidStreamName(_)
            | PublishError::AlreadyLive(_)
            | PublishError::HeldElsewhere(..) => "NetStream.Publish.BadName",
            PublishError::Storage(_) => "NetStream.Publish.Failed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct HubSettings {
    pub default_format: SegmentFormat,
    pub target_duration_secs: f64,
    pub live_window: usize,
    /// The part target of LL-HLS, and the unit in which segments are written.
    pub part_target_secs: f64,
}

impl HubSettings {
    /// How long a request waits for what the stream has not reached yet (a first
    /// segment, a blocking reload, a hinted part): three target durations (rfc8216bis
    /// 6.2.5.2).
    pub fn hold(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.target_duration_secs * 3.0)
    }

    /// What caches may keep a blocking playlist response or a part: six target
    /// durations (rfc8216bis Appendix B.1), in whole seconds.
    pub fn blocking_max_age_secs(&self) -> u64 {
        (self.target_duration_secs * 6.0).round().max(1.0) as u64
    }
}

/// Segments whose parts stay known: listed for three target durations, downloadable for
/// three more (rfc8216bis 6.2.2), and a margin.
const SEGMENTS_WITH_PARTS: u64 = 8;

/// The hub's streams. A slot is reserved while a recording is being opened, so the
/// file work happens outside the lock and a second publisher is still refused.
#[derive(Debug)]
enum Slot {
    Opening,
    Open(Arc<LiveStream>),
}

type Table = Mutex<HashMap<StreamName, Slot>>;

fn lock(table: &Table) -> std::sync::MutexGuard<'_, HashMap<StreamName, Slot>> {
    table.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the origin needs of a stream: its current recording, the parts of its live edge,
/// and the bytes of what the recorder has not written yet, served from memory so a part
/// is playable the moment it is cut.
#[derive(Debug)]
pub struct LiveStream {
    name: StreamName,
    /// Whether the live playlist is LL-HLS (the provider's setting, fMP4 only).
    low_latency: bool,
    state: RwLock<StreamState>,
    /// Bumped on every new segment and at the end, for requests that wait.
    updates: watch::Sender<u64>,
    /// Frames as the publisher sends them, for the low-latency feed (WebRTC viewers).
    feed: Arc<FeedChannel>,
    events: EventSender,
    /// The hub's table, which this stream leaves once retired.
    table: Weak<Table>,
    /// Who publishes it: the protocol, and its transport's statistics where it has them.
    publisher: Mutex<PublishedBy>,
}

/// A live stream's publisher as the live list shows it.
#[derive(Clone)]
struct PublishedBy {
    protocol: &'static str,
    transport: Option<TransportReport>,
}

/// A publisher's transport statistics, read when the live list is asked for (SRT's
/// round-trip time, losses, retransmissions).
pub type TransportReport = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

impl std::fmt::Debug for PublishedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishedBy")
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct StreamState {
    /// Copy-on-write: readers take a cheap snapshot; a writer copies only if a snapshot
    /// is still held.
    recording: Arc<Recording>,
    /// Init segments until written.
    hot: HashMap<String, Bytes>,
    /// Parts of the recent segments and of the open one, oldest first.
    parts: VecDeque<StoredPart>,
    open: Option<OpenSegment>,
}

/// A part of the live edge and where its bytes are.
#[derive(Debug)]
struct StoredPart {
    part: EdgePart,
    /// The segment file it is appended to, at `offset`.
    file: String,
    offset: u64,
    len: u64,
    /// Its bytes until the recorder has written them.
    hot: Option<Bytes>,
}

/// A part's bytes: in memory, or a range of its segment's file.
#[derive(Debug, Clone, PartialEq)]
pub enum PartBytes {
    Hot(Bytes),
    Written { file: String, offset: u64, len: u64 },
}

/// The live edge as the playlist shows it.
#[derive(Debug, Clone)]
pub struct EdgeView {
    pub recording: Arc<Recording>,
    pub parts: Vec<EdgePart>,
    pub open: Option<OpenSegment>,
}

impl EdgeView {
    /// The last complete segment's sequence number, and how many parts of the next one
    /// exist.
    pub fn position(&self) -> (Option<u64>, u32) {
        let last = self.recording.segments.last().map(|s| s.sequence);
        let open_parts = self.open.as_ref().map_or(0, |o| {
            self.parts
                .iter()
                .filter(|p| p.segment == o.sequence)
                .count() as u32
        });
        (last, open_parts)
    }

    /// How many parts segment `sequence` has, if its parts are known.
    pub fn parts_of(&self, sequence: u64) -> usize {
        self.parts.iter().filter(|p| p.segment == sequence).count()
    }

    /// Whether a blocking playlist request for segment `msn` (and part `part` of it) can
    /// be answered now (rfc8216bis 6.2.5.2), given how many parts may be asked for
    /// ahead of the last one (the Advance Part Limit).
    pub fn readiness(&self, msn: u64, part: Option<u64>, advance_part_limit: u64) -> Readiness {
        let (last, open_parts) = self.position();
        // Before the first segment completes, the open one is the first.
        let last = last.or_else(|| self.open.as_ref().map(|o| o.sequence.saturating_sub(1)));
        let Some(last) = last else {
            return Readiness::Wait;
        };
        let open_parts = u64::from(open_parts);
        if msn > last + 2 {
            return Readiness::TooFarAhead;
        }
        match part {
            None if msn <= last => Readiness::Ready,
            None => Readiness::Wait,
            // A part index past the end of a complete segment is part 0 of the next one.
            Some(p) if msn <= last => {
                let known = self.parts_of(msn) as u64;
                if known == 0 || p < known || msn < last || open_parts > 0 {
                    Readiness::Ready
                } else {
                    Readiness::Wait
                }
            }
            Some(p) if msn == last + 1 => {
                if p < open_parts {
                    Readiness::Ready
                } else if p >= open_parts + advance_part_limit {
                    Readiness::TooFarAhead
                } else {
                    Readiness::Wait
                }
            }
            Some(p) if p >= advance_part_limit => Readiness::TooFarAhead,
            Some(_) => Readiness::Wait,
        }
    }
}

/// What to do with a blocking playlist request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Hold it until the stream advances.
    Wait,
    /// Asks for more than the stream may reach soon: 400.
    TooFarAhead,
}

impl LiveStream {
    fn new(
        name: StreamName,
        recording: Recording,
        low_latency: bool,
        events: EventSender,
        table: Weak<Table>,
    ) -> Self {
        Self {
            name,
            low_latency: low_latency && recording.format == SegmentFormat::Fmp4,
            events,
            table,
            state: RwLock::new(StreamState {
                recording: Arc::new(recording),
                hot: HashMap::new(),
                parts: VecDeque::new(),
                open: None,
            }),
            updates: watch::channel(0).0,
            publisher: Mutex::new(PublishedBy {
                protocol: "rtmp",
                transport: None,
            }),
            feed: FeedChannel::new(),
        }
    }

    /// The stream's low-latency feed: every configuration and access unit as the
    /// publisher sent it.
    pub fn feed(&self) -> &Arc<FeedChannel> {
        &self.feed
    }

    /// Names who publishes the stream: `protocol` (`rtmp` until said otherwise; the
    /// `protocol` label of the publisher metrics) and its transport's statistics.
    pub fn set_publisher(&self, protocol: &'static str, transport: Option<TransportReport>) {
        *self.publisher.lock().unwrap_or_else(|e| e.into_inner()) = PublishedBy {
            protocol,
            transport,
        };
    }

    /// The publishing protocol and, where it reports one, its transport's statistics.
    pub fn publisher(&self) -> (&'static str, Option<serde_json::Value>) {
        let publisher = self
            .publisher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        (
            publisher.protocol,
            publisher.transport.map(|report| report()),
        )
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

    pub fn low_latency(&self) -> bool {
        self.low_latency
    }

    /// The recording with its live edge, in one consistent snapshot.
    pub fn edge(&self) -> EdgeView {
        let state = self.read();
        EdgeView {
            recording: state.recording.clone(),
            parts: state.parts.iter().map(|p| p.part.clone()).collect(),
            open: state.open.clone(),
        }
    }

    /// Part `index` of segment `sequence`, while it is known.
    pub fn part(&self, sequence: u64, index: u32) -> Option<PartBytes> {
        let state = self.read();
        let stored = state
            .parts
            .iter()
            .find(|p| p.part.segment == sequence && p.part.index == index)?;
        Some(match &stored.hot {
            Some(bytes) => PartBytes::Hot(bytes.clone()),
            None => PartBytes::Written {
                file: stored.file.clone(),
                offset: stored.offset,
                len: stored.len,
            },
        })
    }

    /// A segment whose last parts the recorder has not written yet: how many bytes of
    /// its file are written, and the rest in memory. `None` if the file is whole.
    pub fn unwritten_tail(&self, file: &str) -> Option<(u64, Vec<Bytes>)> {
        let state = self.read();
        let mut parts = state.parts.iter().filter(|p| p.file == file).peekable();
        let mut written = 0;
        while let Some(p) = parts.next_if(|p| p.hot.is_none()) {
            written = p.offset + p.len;
        }
        let tail: Vec<Bytes> = parts.filter_map(|p| p.hot.clone()).collect();
        (!tail.is_empty()).then_some((written, tail))
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

    /// A new part: listed and served from memory at once. A segment's last part comes
    /// with the segment's entry (`ends`), so that no playlist shows the segment still
    /// open after its last part (hinting a part that never comes).
    pub(crate) fn add_part(
        &self,
        part: EdgePart,
        file: String,
        offset: u64,
        bytes: Bytes,
        open: impl FnOnce() -> OpenSegment,
        ends: Option<(SegmentEntry, Option<f64>)>,
    ) {
        {
            let mut state = self.write();
            if state.open.is_none() {
                state.open = Some(open());
            }
            state.parts.push_back(StoredPart {
                part,
                file,
                offset,
                len: bytes.len() as u64,
                hot: Some(bytes),
            });
            if let Some((entry, frame_rate)) = ends {
                close_segment(&mut state, entry, frame_rate);
            }
        }
        self.updates.send_modify(|n| *n += 1);
    }

    /// The recorder wrote a part: it is served from its file from now on.
    pub(crate) fn part_written(&self, sequence: u64, index: u32) {
        let mut state = self.write();
        if let Some(p) = state
            .parts
            .iter_mut()
            .find(|p| p.part.segment == sequence && p.part.index == index)
        {
            p.hot = None;
        }
    }

    /// The open segment is complete (its last part came earlier): it enters the
    /// recording (and the playlist).
    pub(crate) fn add_segment(&self, entry: SegmentEntry, frame_rate: Option<f64>) {
        close_segment(&mut self.write(), entry, frame_rate);
        self.updates.send_modify(|n| *n += 1);
    }

    pub(crate) fn end(&self, ended_at: String) {
        self.feed.end();
        let ended = {
            let mut state = self.write();
            let recording = Arc::make_mut(&mut state.recording);
            recording.state = RecordingState::Ended;
            recording.ended_at = Some(ended_at);
            state.recording.clone()
        };
        self.updates.send_modify(|n| *n += 1);
        // The announcer may be gone at shutdown; nothing else listens.
        let _ = self.events.send(StreamEvent::Ended(ended));
    }

    /// The publisher left a server being drained: the recording stays live, marked
    /// interrupted (no playlist of it ends), until another server continues it.
    pub(crate) fn mark_interrupted(&self, at: String) {
        // Cut, not ended: relays reconnect and find the server that continues it.
        self.feed.cut();
        {
            let mut state = self.write();
            Arc::make_mut(&mut state.recording).interrupted_at = Some(at);
        }
        self.updates.send_modify(|n| *n += 1);
    }

    /// Tells the announcer, once the interrupted recording is durable, that another
    /// server may take it.
    pub(crate) fn report_interrupted(&self) {
        let _ = self.events.send(StreamEvent::Interrupted(self.recording()));
    }

    /// An init segment on durable storage is served from there; its memory copy only
    /// bridged the time until it was written.
    pub(crate) fn release_object(&self, file: &str) {
        self.write().hot.remove(file);
    }

    /// The recorder is done with the ended recording (everything it could write is on
    /// storage): memory copies are dropped and the stream leaves the hub, unless a
    /// newer publish of the stream has taken its place.
    pub(crate) fn retire(self: &Arc<Self>) {
        {
            let mut state = self.write();
            state.hot.clear();
            state.parts.clear();
            state.open = None;
        }
        if let Some(table) = self.table.upgrade() {
            let mut streams = lock(&table);
            if matches!(streams.get(&self.name), Some(Slot::Open(s)) if Arc::ptr_eq(s, self)) {
                streams.remove(&self.name);
            }
        }
    }
}

/// The open segment enters the recording; parts older than the last
/// `SEGMENTS_WITH_PARTS` segments are forgotten.
fn close_segment(state: &mut StreamState, entry: SegmentEntry, frame_rate: Option<f64>) {
    let recording = Arc::make_mut(&mut state.recording);
    if recording.frame_rate.is_none() {
        recording.frame_rate = frame_rate;
    }
    let oldest_kept = entry.sequence.saturating_sub(SEGMENTS_WITH_PARTS - 1);
    recording.segments.push(entry);
    state.open = None;
    while state
        .parts
        .front()
        .is_some_and(|p| p.part.segment < oldest_kept)
    {
        state.parts.pop_front();
    }
}

/// Removes a reserved slot if opening the recording is abandoned (an error, or the
/// publisher's task cancelled mid-way).
struct Reservation<'a> {
    table: &'a Table,
    name: Option<StreamName>,
}

impl Reservation<'_> {
    fn fill(mut self, live: Arc<LiveStream>) {
        if let Some(name) = self.name.take() {
            lock(self.table).insert(name, Slot::Open(live));
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            let mut streams = lock(self.table);
            if matches!(streams.get(&name), Some(Slot::Opening)) {
                streams.remove(&name);
            }
        }
    }
}

#[derive(Debug)]
pub struct StreamHub {
    settings: HubSettings,
    providers: Providers,
    store: RecordingStore,
    cluster: Cluster,
    events: EventSender,
    streams: Arc<Table>,
}

/// The stream name and key from an RTMP publishing name `stream?key=secret&...`.
pub fn split_publish_name(name: &str) -> (&str, Option<&str>) {
    let (stream, query) = name.split_once('?').unwrap_or((name, ""));
    let key = query.split('&').find_map(|pair| pair.strip_prefix("key="));
    (stream, key)
}

impl StreamHub {
    /// Opens the hub over `store`, first repairing what a crash of this server left
    /// live. The events go to whoever announces this server's streams.
    pub async fn open(
        settings: HubSettings,
        providers: Providers,
        store: RecordingStore,
        cluster: Cluster,
    ) -> std::io::Result<(Self, StreamEvents)> {
        let repaired = store.recover(&cluster.node.id).await?;
        if repaired > 0 {
            tracing::warn!(repaired, "recovered recordings interrupted by a crash");
        }
        let (events, receiver) = mpsc::unbounded_channel();
        let hub = Self {
            settings,
            providers,
            store,
            cluster,
            events,
            streams: Arc::default(),
        };
        Ok((hub, receiver))
    }

    pub fn settings(&self) -> &HubSettings {
        &self.settings
    }

    pub fn store(&self) -> &RecordingStore {
        &self.store
    }

    /// This server's id in the registry.
    pub fn node_id(&self) -> &str {
        &self.cluster.node.id
    }

    /// The providers' HTTP hooks (notifications go through them).
    pub fn hooks(&self) -> &Hooks {
        self.providers.hooks()
    }

    /// Checks a publisher's provider, stream name and key (the provider's, or one of
    /// this stream's); returns the provider, the stream and which key opened it.
    pub async fn authorize(
        &self,
        app: &str,
        publish_name: &str,
    ) -> Result<(ProviderConfig, StreamName, KeyKind), PublishError> {
        // The key may also ride on the app (`rtmp://host/provider?key=...` as the OBS
        // server, the bare stream name as the stream key).
        let (app, app_key) = split_publish_name(app);
        let (stream, key) = split_publish_name(publish_name);
        self.authorize_stream(app, stream, key.or(app_key)).await
    }

    /// Checks a publisher's key for `provider`'s `stream`, named apart as every protocol
    /// but RTMP names them.
    pub async fn authorize_stream(
        &self,
        app: &str,
        stream: &str,
        key: Option<&str>,
    ) -> Result<(ProviderConfig, StreamName, KeyKind), PublishError> {
        if self.providers.get(app).is_none() {
            return Err(PublishError::UnknownProvider(app.to_owned()));
        }
        if !is_valid_name(stream) {
            return Err(PublishError::InvalidStreamName(stream.to_owned()));
        }
        let key = key.ok_or(PublishError::MissingKey)?;
        let (provider, kind) =
            self.providers
                .check_key(app, stream, key)
                .await
                .map_err(|e| match e {
                    KeyError::UnknownProvider(p) => PublishError::UnknownProvider(p),
                    KeyError::WrongKey => PublishError::WrongKey,
                })?;
        let name = StreamName::new(&provider.name, stream)
            .ok_or_else(|| PublishError::InvalidStreamName(stream.to_owned()))?;
        Ok((provider.clone(), name, kind))
    }

    /// Authorizes a publisher (its key, then the provider's `on_publish` hook, if any)
    /// and opens its recording: a new one, or the one a dead server of the cluster was
    /// writing (continued after a discontinuity). Nothing is recorded for a publisher
    /// refused.
    pub async fn begin_publish(
        &self,
        app: &str,
        publish_name: &str,
        started_at: String,
        recording_id: String,
        client: std::net::SocketAddr,
    ) -> Result<(Arc<LiveStream>, JournalWriter), PublishError> {
        let authorized = self.authorize(app, publish_name).await?;
        self.open_publish(authorized, started_at, recording_id, client)
            .await
    }

    /// [`StreamHub::begin_publish`] for protocols that name the provider, the stream and
    /// the key apart (MPEG-TS over HTTP, SRT).
    pub async fn begin_publish_stream(
        &self,
        provider: &str,
        stream: &str,
        key: Option<&str>,
        started_at: String,
        recording_id: String,
        client: std::net::SocketAddr,
    ) -> Result<(Arc<LiveStream>, JournalWriter), PublishError> {
        let authorized = self.authorize_stream(provider, stream, key).await?;
        self.open_publish(authorized, started_at, recording_id, client)
            .await
    }

    /// The rest of `begin_publish` once the key is checked: the slot, the takeover
    /// decision, the `on_publish` hook, the recording.
    async fn open_publish(
        &self,
        (provider, name, kind): (ProviderConfig, StreamName, KeyKind),
        started_at: String,
        recording_id: String,
        client: std::net::SocketAddr,
    ) -> Result<(Arc<LiveStream>, JournalWriter), PublishError> {
        let reservation = self.reserve(&name)?;
        let resume = match self.cluster.claim(&name.provider, &name.stream).await {
            Claim::Fresh => self.resumable(&name).await,
            Claim::Continue(id) => Some(id),
            Claim::HeldBy(node) => return Err(PublishError::HeldElsewhere(name.to_string(), node)),
        };
        // Asked last, with the slot held: a publisher refused for another reason never
        // reaches the hook, and a second one cannot slip in while it answers.
        let mut event = Event::new(
            Hook::OnPublish,
            &name.provider,
            &name.stream,
            resume.as_deref().unwrap_or(&recording_id),
            started_at.clone(),
            &started_at,
        );
        event.node = Some(self.cluster.node.id.clone());
        event.client = Some(client.to_string());
        event.key = Some(kind.name());
        event.resumed = Some(resume.is_some());
        if let Some(decision) = self.providers.hooks().on_publish(&event).await {
            if !decision.allow {
                return Err(PublishError::Denied(decision.reason.unwrap_or_default()));
            }
        }
        let (recording, journal) = self
            .open_journal(&provider, &name, started_at, recording_id, resume)
            .await?;
        let live = Arc::new(LiveStream::new(
            name,
            recording,
            provider.low_latency,
            self.events.clone(),
            Arc::downgrade(&self.streams),
        ));
        reservation.fill(live.clone());
        let _ = self.events.send(StreamEvent::Live(live.recording()));
        Ok((live, journal))
    }

    /// Takes the stream's slot, refusing if a publisher holds or is opening it.
    fn reserve(&self, name: &StreamName) -> Result<Reservation<'_>, PublishError> {
        let mut streams = lock(&self.streams);
        let busy = match streams.get(name) {
            Some(Slot::Opening) => true,
            Some(Slot::Open(s)) => s.with_recording(Recording::is_live),
            None => false,
        };
        if busy {
            return Err(PublishError::AlreadyLive(name.to_string()));
        }
        streams.insert(name.clone(), Slot::Opening);
        Ok(Reservation {
            table: &self.streams,
            name: Some(name.clone()),
        })
    }

    /// The stream's last recording, if it ended within its provider's `archive_after`
    /// and is not archived: a publisher coming back continues it.
    async fn resumable(&self, name: &StreamName) -> Option<String> {
        let id = self.store.ids(name).await.pop()?;
        let recording = name.recording(&id)?;
        if self.store.is_archived(&self.store.dir(&recording)).await {
            return None;
        }
        let head = self.store.load(&recording).await?;
        let ended = head.ended_at.as_deref().filter(|_| !head.is_live())?;
        let ended_for = clock::seconds_since(ended)?;
        let window = self.providers.archive_after(&name.provider).await;
        (ended_for < window.as_secs_f64()).then_some(id)
    }

    /// The journal of the recording this publisher writes: `resume` continued, else a
    /// new one (created here, not by the recorder, so a storage failure refuses the
    /// publisher).
    async fn open_journal(
        &self,
        provider: &ProviderConfig,
        name: &StreamName,
        started_at: String,
        recording_id: String,
        resume: Option<String>,
    ) -> Result<(Recording, JournalWriter), PublishError> {
        let node = &self.cluster.node.id;
        if let Some(recording) = resume.and_then(|id| name.recording(&id)) {
            match self.store.reopen(&recording, node).await {
                Ok(pair) => return Ok(pair),
                Err(e) => {
                    tracing::warn!(recording = %recording, error = %e, "cannot continue the recording; starting a new one")
                }
            }
        }
        let format = provider.format.unwrap_or(self.settings.default_format);
        let mut recording = Recording::new(
            &name.provider,
            &name.stream,
            &recording_id,
            format,
            started_at,
            self.settings.target_duration_secs,
        );
        recording.node = Some(node.clone());
        let journal = self.store.create(recording.clone()).await?;
        Ok((recording, journal))
    }

    /// The stream, while this server publishes it or is still recording its end.
    pub fn stream(&self, name: &StreamName) -> Option<Arc<LiveStream>> {
        match lock(&self.streams).get(name) {
            Some(Slot::Open(s)) => Some(s.clone()),
            _ => None,
        }
    }

    pub fn live_streams(&self) -> Vec<Arc<Recording>> {
        self.live_publishes().into_iter().map(|(r, _)| r).collect()
    }

    /// The live streams' recordings with the streams themselves (for their publishers),
    /// by provider and stream.
    pub fn live_publishes(&self) -> Vec<(Arc<Recording>, Arc<LiveStream>)> {
        let mut live: Vec<_> = lock(&self.streams)
            .values()
            .filter_map(|slot| match slot {
                Slot::Open(s) => Some((s.recording(), s.clone())),
                Slot::Opening => None,
            })
            .filter(|(r, _)| r.is_live())
            .collect();
        live.sort_by(|(a, _), (b, _)| (&a.provider, &a.stream).cmp(&(&b.provider, &b.stream)));
        live
    }

    /// How many streams the hub holds in memory (live, or ended and being written).
    pub fn held_streams(&self) -> usize {
        lock(&self.streams).len()
    }

    /// A recording by name: from memory for the stream's current one, else storage.
    pub async fn load_recording(&self, name: &StreamName, id: &str) -> Option<Arc<Recording>> {
        if let Some(live) = self.stream(name) {
            let recording = live.recording();
            if recording.recording_id == id {
                return Some(recording);
            }
        }
        self.store.load(&name.recording(id)?).await
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

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("streamcdn-hub-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    async fn test_hub(name: &str, node: &str) -> StreamHub {
        test_hub_in(temp_dir(name), streamcdn_registry::Registry::memory(), node).await
    }

    async fn test_hub_in(
        dir: std::path::PathBuf,
        registry: streamcdn_registry::Registry,
        node: &str,
    ) -> StreamHub {
        let provider = ProviderConfig {
            name: "p".into(),
            stream_key: "secret-key".into(),
            ..ProviderConfig::default()
        };
        test_hub_with(dir, registry, node, provider).await
    }

    async fn test_hub_with(
        dir: std::path::PathBuf,
        registry: streamcdn_registry::Registry,
        node: &str,
        provider: ProviderConfig,
    ) -> StreamHub {
        let providers = Providers::new(
            &[provider],
            std::time::Duration::from_secs(300),
            registry.clone(),
        );
        StreamHub::open(
            HubSettings {
                default_format: SegmentFormat::Fmp4,
                target_duration_secs: 2.0,
                live_window: 6,
                part_target_secs: 0.334,
            },
            providers,
            RecordingStore::open(&dir).unwrap(),
            Cluster {
                registry,
                // Nothing listens on port 9: the node probes as dead.
                node: streamcdn_registry::NodeRecord::ingest(node, "c", "http://127.0.0.1:9"),
                lease: std::time::Duration::from_secs(10),
            },
        )
        .await
        .unwrap()
        .0
    }

    fn stream(name: &str) -> StreamName {
        StreamName::new("p", name).unwrap()
    }

    fn client() -> std::net::SocketAddr {
        ([192, 0, 2, 1], 50000).into()
    }

    #[tokio::test]
    async fn keys_are_checked_and_duplicates_refused() {
        let hub = test_hub("keys", "n1").await;
        let begin = |app: &'static str, name: &'static str, id: &'static str| {
            hub.begin_publish(app, name, "t".into(), id.into(), client())
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
    async fn stream_keys_open_their_stream_only() {
        let provider = ProviderConfig {
            name: "p".into(),
            stream_key: "secret-key".into(),
            stream_keys: [("cam".to_owned(), "cam-only-key".to_owned())].into(),
            ..ProviderConfig::default()
        };
        let registry = streamcdn_registry::Registry::memory();
        let hub = test_hub_with(temp_dir("stream-keys"), registry, "n1", provider).await;
        let (_, _, kind) = hub.authorize("p", "cam?key=cam-only-key").await.unwrap();
        assert_eq!(kind, KeyKind::Stream);
        let (_, _, kind) = hub.authorize("p?key=secret-key", "cam").await.unwrap();
        assert_eq!(kind, KeyKind::Provider);
        assert!(matches!(
            hub.authorize("p", "other?key=cam-only-key").await,
            Err(PublishError::WrongKey)
        ));
    }

    /// A publish hook nobody answers (port 9 refuses): the publisher is refused, and
    /// nothing is recorded, or let through, as `deny_on_timeout` says.
    #[tokio::test]
    async fn an_unreachable_publish_hook_refuses_or_allows_as_configured() {
        for deny in [true, false] {
            let dir = temp_dir(&format!("hook-{deny}"));
            let provider = ProviderConfig {
                name: "p".into(),
                stream_key: "secret-key".into(),
                hooks: Some(streamcdn_config::HooksConfig {
                    on_publish: Some("http://127.0.0.1:9/publish".into()),
                    deny_on_timeout: deny,
                    ..Default::default()
                }),
                ..ProviderConfig::default()
            };
            let registry = streamcdn_registry::Registry::memory();
            let hub = test_hub_with(dir.clone(), registry, "n1", provider).await;
            let result = hub
                .begin_publish("p", "s?key=secret-key", "t".into(), "r1".into(), client())
                .await;
            if deny {
                let Err(PublishError::Denied(reason)) = result else {
                    panic!("the publisher went live")
                };
                assert_eq!(reason, "the publish hook could not be reached");
                assert_eq!(
                    PublishError::Denied(reason).rtmp_code(),
                    "NetStream.Publish.Unauthorized"
                );
                assert!(hub.store.ids(&stream("s")).await.is_empty());
                assert_eq!(hub.held_streams(), 0);
            } else {
                assert!(result.is_ok());
                assert_eq!(hub.store.ids(&stream("s")).await, ["r1"]);
            }
        }
    }

    #[tokio::test]
    async fn a_dead_servers_stream_is_continued_by_another_of_the_cluster() {
        let dir = temp_dir("takeover");
        let registry = streamcdn_registry::Registry::memory();
        let lease = std::time::Duration::from_secs(10);
        let a = test_hub_in(dir.clone(), registry.clone(), "a").await;
        let b = test_hub_in(dir.clone(), registry.clone(), "b").await;
        registry
            .register_node(&a.cluster.node, lease)
            .await
            .unwrap();
        let (live, mut journal) = a
            .begin_publish("p", "s?key=secret-key", "t".into(), "r1".into(), client())
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
        journal.append_part(&entry.file, b"x").unwrap();
        journal.add_written_segment(entry).unwrap();
        let record = a
            .cluster
            .record(&live.recording(), streamcdn_registry::StreamState::Live);
        registry.announce(&record, lease).await.unwrap();

        // a's lease is current and its origin refuses connections: it is dead.
        let (continued, _) = b
            .begin_publish("p", "s?key=secret-key", "t".into(), "r2".into(), client())
            .await
            .unwrap();
        let recording = continued.recording();
        assert_eq!(recording.recording_id, "r1");
        assert_eq!(recording.node.as_deref(), Some("b"));
        assert_eq!(recording.segments.len(), 1);
        // a restarting must not end the recording b now writes.
        drop(a);
        let a = test_hub_in(dir, registry, "a").await;
        let on_disk = a.load_recording(&stream("s"), "r1").await.unwrap();
        assert!(on_disk.is_live());
    }

    #[tokio::test]
    async fn streams_leave_the_hub_once_ended_and_durable() {
        let hub = test_hub("retire", "n1").await;
        for n in 0..20 {
            let name = format!("s{n}?key=secret-key");
            let (live, _journal) = hub
                .begin_publish("p", &name, "t".into(), format!("r{n}"), client())
                .await
                .unwrap();
            assert_eq!(hub.held_streams(), 1);
            live.end("t2".into());
            // Ended but not yet durable: still served from memory.
            assert!(hub.stream(&stream(&format!("s{n}"))).is_some());
            live.retire();
            assert_eq!(hub.held_streams(), 0);
            // The origin now finds it on storage.
            assert!(hub
                .load_recording(&stream(&format!("s{n}")), &format!("r{n}"))
                .await
                .is_some());
        }
        // A retired stream's late retire does not evict a newer publish of the stream.
        let (old, _j) = hub
            .begin_publish("p", "x?key=secret-key", "t".into(), "r1".into(), client())
            .await
            .unwrap();
        old.end("t".into());
        let (new, _j2) = hub
            .begin_publish("p", "x?key=secret-key", "t".into(), "r2".into(), client())
            .await
            .unwrap();
        old.retire();
        assert!(Arc::ptr_eq(&hub.stream(&stream("x")).unwrap(), &new));
    }

    /// A node that sees 100,000 streams in its life holds only the live ones: the
    /// table's memory is bounded by what is live, not by history.
    #[tokio::test]
    async fn a_hundred_thousand_short_streams_leave_nothing_behind() {
        let hub = test_hub("100k", "n1").await;
        let (events, _receiver) = mpsc::unbounded_channel();
        let mut held = Vec::new();
        for n in 0..100_000u32 {
            let name = StreamName::new("p", &format!("s{n}")).unwrap();
            let reservation = hub.reserve(&name).unwrap();
            let recording =
                Recording::new("p", &name.stream, "r", SegmentFormat::Fmp4, "t".into(), 2.0);
            let live = Arc::new(LiveStream::new(
                name,
                recording,
                true,
                events.clone(),
                Arc::downgrade(&hub.streams),
            ));
            reservation.fill(live.clone());
            held.push(live);
            // Streams end in the order they started, ten live at a time.
            if held.len() > 10 {
                let done = held.remove(0);
                done.end("t".into());
                done.retire();
            }
            assert!(hub.held_streams() <= 11);
        }
        for live in held.drain(..) {
            live.end("t".into());
            live.retire();
        }
        assert_eq!(hub.held_streams(), 0);
    }

    #[tokio::test]
    async fn an_abandoned_open_frees_the_slot() {
        let hub = test_hub("abandon", "n1").await;
        let name = stream("s");
        let reservation = hub.reserve(&name).unwrap();
        assert!(matches!(
            hub.reserve(&name),
            Err(PublishError::AlreadyLive(_))
        ));
        drop(reservation);
        assert_eq!(hub.held_streams(), 0);
        assert!(hub.reserve(&name).is_ok());
    }

    #[test]
    fn blocking_requests_wait_for_their_part_and_refuse_what_is_too_far() {
        let mut recording = Recording::new("p", "s", "r", SegmentFormat::Fmp4, "t".into(), 2.0);
        for sequence in 1..=5 {
            recording.segments.push(SegmentEntry {
                sequence,
                file: format!("{sequence:06}.m4s"),
                duration_secs: 2.0,
                program_date_time: "t".into(),
                bytes: 1,
                discontinuity: false,
                init: None,
            });
        }
        let part = |segment, index| EdgePart {
            segment,
            index,
            duration_secs: 0.334,
            independent: index == 0,
        };
        let mut parts: Vec<EdgePart> = (0..6).map(|i| part(5, i)).collect();
        parts.extend([part(6, 0), part(6, 1)]);
        let view = EdgeView {
            recording: Arc::new(recording),
            parts,
            open: Some(OpenSegment {
                sequence: 6,
                program_date_time: "t".into(),
                discontinuity: false,
                init: None,
            }),
        };
        let limit = 8;
        let cases = [
            ((4, None), Readiness::Ready),
            ((5, None), Readiness::Ready),
            ((6, None), Readiness::Wait),
            ((7, None), Readiness::Wait),
            ((8, None), Readiness::TooFarAhead),
            ((5, Some(3)), Readiness::Ready),
            // Past the end of a complete segment: part 0 of the next, which exists.
            ((5, Some(9)), Readiness::Ready),
            ((6, Some(1)), Readiness::Ready),
            ((6, Some(2)), Readiness::Wait),
            ((6, Some(9)), Readiness::Wait),
            ((6, Some(10)), Readiness::TooFarAhead),
            ((7, Some(0)), Readiness::Wait),
            ((7, Some(8)), Readiness::TooFarAhead),
        ];
        for ((msn, part), expected) in cases {
            assert_eq!(view.readiness(msn, part, limit), expected, "{msn} {part:?}");
        }
    }

    /// A segment's last part and its end are one update: no playlist rendered between
    /// them shows the segment open with all its parts (hinting a part that never comes).
    #[tokio::test]
    async fn a_segments_last_part_closes_it_in_the_same_update() {
        let hub = test_hub("last-part", "n1").await;
        let (live, _journal) = hub
            .begin_publish("p", "x?key=secret-key", "t".into(), "r1".into(), client())
            .await
            .unwrap();
        let updates = live.subscribe();
        let open = || OpenSegment {
            sequence: 1,
            program_date_time: "t".into(),
            discontinuity: false,
            init: None,
        };
        let part = |index| EdgePart {
            segment: 1,
            index,
            duration_secs: 0.334,
            independent: index == 0,
        };
        let bytes = Bytes::from_static(b"part");
        live.add_part(part(0), "000001.m4s".into(), 0, bytes.clone(), open, None);
        assert_eq!(live.edge().position(), (None, 1));
        let entry = SegmentEntry {
            sequence: 1,
            file: "000001.m4s".into(),
            duration_secs: 0.668,
            program_date_time: "t".into(),
            bytes: 8,
            discontinuity: false,
            init: None,
        };
        let before = *updates.borrow();
        live.add_part(
            part(1),
            "000001.m4s".into(),
            4,
            bytes,
            open,
            Some((entry, None)),
        );
        assert_eq!(
            *updates.borrow(),
            before + 1,
            "one update for the part and the end"
        );
        let view = live.edge();
        assert_eq!(
            view.position(),
            (Some(1), 0),
            "segment 1 complete, none open"
        );
        assert_eq!(view.parts_of(1), 2);
    }
}
