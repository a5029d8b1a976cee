//! The archiver of an ingest cluster: moves each recording whose stream has been over
//! for its provider's `archive_after` to on-demand storage, then removes the local copy.
//!
//! For one recording, in this order, each step safe to repeat after a crash:
//! 1. upload every file the journal lists (objects already stored intact are kept);
//! 2. upload the generated objects: VOD playlist, multivariant playlists, metadata;
//! 3. write the completion marker (only now may anything treat it as archived);
//! 4. announce it `archived` in the registry and add it to the stream's
//!    `recordings.json` in the store;
//! 5. write `archive.json` locally;
//! 6. send the provider's `on_archived` hook, if it has one (in the background, retried
//!    with backoff), and mark it done next to the journal (`hook-on_archived.json`)
//!    once it is delivered or given up: it is sent again only if the archiver stopped
//!    before that (at least once, never again after the marker);
//! 7. after the local retention, and once the hook is done, delete the local copy.
//!
//! A recording whose journal changed meanwhile (its publisher came back within the
//! window) is left local and is archived again when it ends again.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::Serialize;
use streamcdn_archive::{Archive, StoredObject, UploadOptions};
use streamcdn_providers::hooks::{ArchiveLocation, Event, Hook};
use streamcdn_providers::Providers;
use streamcdn_recording::{clock, hls, Recording, RecordingStore};
use streamcdn_registry::{NodeRecord, Registry, StreamRecord, StreamState};
use streamcdn_urls::{relative, stored, RecordingName, StreamName};
use tokio::sync::watch;

/// Archived records stay in the registry this long (the store is the lasting truth).
const ARCHIVED_RECORD_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const SCAN_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct ArchiverSettings {
    pub local_retention: Duration,
    pub upload: UploadOptions,
}

/// What the archiver works with.
#[derive(Debug, Clone)]
pub struct Archiver {
    pub settings: ArchiverSettings,
    /// The cluster's recordings.
    pub store: RecordingStore,
    pub archive: Archive,
    pub providers: Providers,
    pub registry: Registry,
    /// This server, as archived records name it (cluster, and the node for recordings
    /// whose journal names none).
    pub node: NodeRecord,
}

/// What the archiver is doing, for the admin API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ArchiverStatus {
    /// Ended recordings waiting for their provider's delay.
    pub waiting: Vec<String>,
    pub in_progress: Option<String>,
    pub archived: u64,
    pub failures: u64,
    pub last_error: Option<String>,
}

pub type SharedStatus = Arc<Mutex<ArchiverStatus>>;

/// Recordings whose `on_archived` is being sent now (so a scan does not send it twice).
type Sending = Arc<Mutex<HashSet<PathBuf>>>;

/// Archives until shutdown. Once `drain` flips, no new recording is started (the one
/// in progress goes on until shutdown; one cut short is resumed by the next archiver,
/// nothing counting as archived before its completion marker).
pub async fn run_archiver(
    archiver: Archiver,
    status: SharedStatus,
    drain: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    tracing::info!(store = ?archiver.archive, "archiver running");
    let sending = Sending::default();
    loop {
        let pass = archiver.scan(&status, &sending, &drain);
        tokio::select! {
            _ = pass => {}
            // An upload cut short is resumed at the next start.
            _ = shutdown.changed() => break,
        }
        tokio::select! {
            _ = tokio::time::sleep(SCAN_EVERY) => {}
            _ = shutdown.changed() => break,
        }
    }
}

impl Archiver {
    async fn scan(&self, status: &SharedStatus, sending: &Sending, drain: &watch::Receiver<bool>) {
        let recordings = match self.store.all().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the recordings; will retry");
                return;
            }
        };
        let mut waiting = Vec::new();
        let mut delays: HashMap<String, Duration> = HashMap::new();
        for (dir, recording) in recordings {
            if self.store.is_archived(&dir).await {
                if self.archived_hook_done(&dir, &recording, sending).await {
                    self.remove_when_retained(&dir).await;
                }
                continue;
            }
            let Some(ended_for) = recording
                .ended_at
                .as_deref()
                .filter(|_| !recording.is_live())
                .and_then(clock::seconds_since)
            else {
                continue;
            };
            let delay = match delays.get(&recording.provider) {
                Some(d) => *d,
                None => {
                    let d = self.providers.archive_after(&recording.provider).await;
                    delays.insert(recording.provider.clone(), d);
                    d
                }
            };
            let name = format!(
                "{}/{}/{}",
                recording.provider, recording.stream, recording.recording_id
            );
            if ended_for < delay.as_secs_f64() {
                waiting.push(name);
                continue;
            }
            if *drain.borrow() {
                tracing::info!(recording = name, "draining: left for the next archiver");
                continue;
            }
            lock(status).in_progress = Some(name.clone());
            let started = std::time::Instant::now();
            match self.archive_recording(&dir).await {
                Ok(Some(objects)) => {
                    let bytes: u64 = objects.iter().map(|o| o.bytes).sum();
                    let reused = objects.iter().filter(|o| o.reused).count();
                    tracing::info!(
                        recording = name,
                        objects = objects.len(),
                        reused,
                        bytes,
                        seconds = started.elapsed().as_secs_f64(),
                        "recording archived and verified"
                    );
                    metrics::counter!("streamcdn_archive_recordings_total").increment(1);
                    lock(status).archived += 1;
                    if self.archived_hook_done(&dir, &recording, sending).await {
                        self.remove_when_retained(&dir).await;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    metrics::counter!("streamcdn_archive_failures_total").increment(1);
                    tracing::warn!(recording = name, error = %e, "archiving failed; the local copy stays and it will be retried");
                    let mut s = lock(status);
                    s.failures += 1;
                    s.last_error = Some(format!("{name}: {e}"));
                }
            }
            lock(status).in_progress = None;
        }
        lock(status).waiting = waiting;
    }

    /// Deletes an archived recording's local copy once the retention has passed.
    async fn remove_when_retained(&self, dir: &Path) {
        match self
            .store
            .remove_archived(dir, self.settings.local_retention)
            .await
        {
            Ok(true) => {
                tracing::info!(dir = %dir.display(), "local copy of an archived recording removed")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an archived recording's local copy; will retry")
            }
        }
    }
}

fn lock(status: &SharedStatus) -> std::sync::MutexGuard<'_, ArchiverStatus> {
    status.lock().unwrap_or_else(|e| e.into_inner())
}

fn lock_set(sending: &Sending) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
    sending.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveRecordingError {
    #[error(transparent)]
    Store(#[from] streamcdn_archive::ArchiveError),
    #[error("local storage: {0}")]
    Local(#[from] std::io::Error),
}

#[derive(Serialize)]
struct Metadata<'a> {
    provider: &'a str,
    stream: &'a str,
    recording_id: &'a str,
    started_at: &'a str,
    ended_at: Option<&'a str>,
    duration_secs: f64,
    format: streamcdn_config::SegmentFormat,
    codecs: &'a [String],
    resolution: Option<(u16, u16)>,
    frame_rate: Option<f64>,
    inits: Vec<&'a StoredObject>,
    segments: Vec<SegmentMetadata<'a>>,
}

#[derive(Serialize)]
struct SegmentMetadata<'a> {
    sequence: u64,
    file: &'a str,
    duration_secs: f64,
    program_date_time: &'a str,
    discontinuity: bool,
    bytes: u64,
    sha256: &'a str,
}

impl Archiver {
    /// Archives one recording; `None` if it changed meanwhile and was left local.
    async fn archive_recording(
        &self,
        dir: &Path,
    ) -> Result<Option<Vec<StoredObject>>, ArchiveRecordingError> {
        let recording = self.store.load_dir(dir.to_owned()).await?;
        let name = StreamName::new(&recording.provider, &recording.stream)
            .and_then(|s| s.recording(&recording.recording_id))
            .ok_or_else(|| {
                std::io::Error::other(format!(
                    "journal in {} names no valid recording",
                    dir.display()
                ))
            })?;
        let prefix = stored::recording_prefix(&name);
        let files: Vec<(String, std::path::PathBuf)> = recording
            .inits
            .iter()
            .chain(recording.segments.iter().map(|s| &s.file))
            .map(|f| (f.clone(), dir.join(f)))
            .collect();
        let options = &self.settings.upload;
        let archive = &self.archive;
        let mut objects = archive.upload_files(&prefix, &files, options).await?;
        let metadata = metadata(&recording, &objects)?;
        let generated = [
            (
                streamcdn_urls::RecordingObject::Playlist
                    .file_name()
                    .to_owned(),
                hls::recording_playlist(&recording, ""),
            ),
            (
                streamcdn_urls::RecordingObject::Multivariant
                    .file_name()
                    .to_owned(),
                hls::recording_multivariant(&recording),
            ),
            // What the stream's own URLs serve once this is its current recording.
            (
                stored::STREAM_MULTIVARIANT.to_owned(),
                hls::stream_multivariant(&recording),
            ),
            (
                stored::STREAM_LIVE.to_owned(),
                hls::recording_playlist(
                    &recording,
                    &relative::stream_prefix(&recording.recording_id),
                ),
            ),
        ];
        for (file, text) in generated {
            objects.push(
                archive
                    .put_verified(&prefix, &file, Bytes::from(text), options)
                    .await?,
            );
        }
        objects.push(
            archive
                .put_verified(&prefix, stored::METADATA, Bytes::from(metadata), options)
                .await?,
        );

        // The publisher came back within the window: the journal changed, so what was
        // uploaded is not the recording any more.
        let now = self.store.load_dir(dir.to_owned()).await?;
        if now.is_live() || now.ended_at != recording.ended_at {
            tracing::info!(
                recording = prefix,
                "recording continued while archiving; left local"
            );
            return Ok(None);
        }
        let manifest = serde_json::to_vec_pretty(&serde_json::json!({
            "recording": prefix,
            "objects": objects,
        }))
        .map_err(std::io::Error::other)?;
        archive
            .complete(&prefix, Bytes::from(manifest), options)
            .await?;

        self.announce_archived(&name, &recording).await?;
        self.store
            .mark_archived(dir, &clock::format_time(SystemTime::now()))
            .await?;
        Ok(Some(objects))
    }

    /// Whether the provider's `on_archived` is done with this archived recording (it
    /// has none, or the hook's marker is there), so its local copy may go. If not, the
    /// hook is sent in the background (unless it is already being sent), and its
    /// marker written once it is delivered or given up.
    async fn archived_hook_done(
        &self,
        dir: &Path,
        recording: &Recording,
        sending: &Sending,
    ) -> bool {
        let hooks = self.providers.hooks();
        let hook = Hook::OnArchived.name();
        if !hooks.has(&recording.provider, Hook::OnArchived)
            || self.store.hook_done(dir, hook).await
        {
            return true;
        }
        if !lock_set(sending).insert(dir.to_owned()) {
            return false;
        }
        let archived_at = self
            .store
            .archived_at(dir)
            .await
            .unwrap_or_else(|| clock::format_time(SystemTime::now()));
        let event = self.archived_event(recording, archived_at);
        let (hooks, store, dir, sending) = (
            hooks.clone(),
            self.store.clone(),
            dir.to_owned(),
            sending.clone(),
        );
        tokio::spawn(async move {
            if let Some(delivery) = hooks.deliver(&event).await {
                let marker = serde_json::json!({
                    "hook": hook,
                    "event_id": event.event_id,
                    "outcome": delivery.outcome,
                    "attempts": delivery.attempts,
                    "at": clock::format_time(SystemTime::now()),
                });
                if let Err(e) = store.mark_hook_done(&dir, hook, &marker).await {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot mark on_archived done; it will be sent again");
                }
            }
            lock_set(&sending).remove(&dir);
        });
        false
    }

    /// `on_archived`'s body: the recording, and where it is stored now.
    fn archived_event(&self, recording: &Recording, archived_at: String) -> Event {
        let mut event = Event::new(
            Hook::OnArchived,
            &recording.provider,
            &recording.stream,
            &recording.recording_id,
            archived_at,
            "",
        );
        let prefix = StreamName::new(&recording.provider, &recording.stream)
            .and_then(|s| s.recording(&recording.recording_id))
            .map_or_else(
                || {
                    format!(
                        "{}/{}/{}",
                        recording.provider, recording.stream, recording.recording_id
                    )
                },
                |name| stored::recording_prefix(&name),
            );
        let url = self.archive.url(&prefix);
        event.playback = Some(format!("/{prefix}/index.m3u8"));
        event.archive = Some(ArchiveLocation {
            playlist: format!(
                "{url}{}",
                streamcdn_urls::RecordingObject::Playlist.file_name()
            ),
            url,
            prefix,
        });
        event.node = Some(self.node.id.clone());
        event.started_at = Some(recording.started_at.clone());
        event.ended_at = recording.ended_at.clone();
        event.duration_secs = Some(recording.duration_secs());
        event.segments = Some(recording.segments.len() as u64);
        event.bytes = Some(recording.segments.iter().map(|s| s.bytes).sum());
        event
    }

    /// Tells the edges: the registry record, and the stream's listing in the store.
    async fn announce_archived(
        &self,
        name: &RecordingName,
        recording: &Recording,
    ) -> Result<(), ArchiveRecordingError> {
        let record = StreamRecord {
            provider: recording.provider.clone(),
            stream: recording.stream.clone(),
            recording_id: recording.recording_id.clone(),
            cluster: self.node.cluster.clone(),
            node: recording
                .node
                .clone()
                .unwrap_or_else(|| self.node.id.clone()),
            origin: self.node.origin.clone(),
            state: StreamState::Archived,
        };
        let registry = &self.registry;
        let current = registry.stream(&record.provider, &record.stream).await;
        let result = match current {
            Ok(Some(r)) if r.recording_id != record.recording_id => {
                registry
                    .announce_recording(&record, ARCHIVED_RECORD_TTL)
                    .await
            }
            Ok(_) => registry.announce(&record, ARCHIVED_RECORD_TTL).await,
            Err(e) => Err(e),
        };
        // Edges also find archived recordings in the store itself, so a registry outage
        // delays nothing but this announcement.
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot announce the archived recording in the registry");
        }
        let listing_key = stored::listing_key(&name.stream);
        let mut listing: Vec<serde_json::Value> = match self.archive.get(&listing_key).await? {
            Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            None => Vec::new(),
        };
        listing.retain(|e| e["recording_id"] != recording.recording_id.as_str());
        let mut summary = hls::summary(recording);
        summary["state"] = serde_json::json!("archived");
        listing.push(summary);
        listing.sort_by(|a, b| a["recording_id"].as_str().cmp(&b["recording_id"].as_str()));
        let bytes = serde_json::to_vec_pretty(&listing).map_err(std::io::Error::other)?;
        self.archive
            .put_verified(
                &stored::stream_prefix(&name.stream),
                stored::LISTING,
                Bytes::from(bytes),
                &self.settings.upload,
            )
            .await?;
        Ok(())
    }
}

/// `metadata.json`: the recording's identity and times, every segment with its SHA-256.
fn metadata(recording: &Recording, objects: &[StoredObject]) -> std::io::Result<Vec<u8>> {
    let by_name: HashMap<&str, &StoredObject> =
        objects.iter().map(|o| (o.name.as_str(), o)).collect();
    let metadata = Metadata {
        provider: &recording.provider,
        stream: &recording.stream,
        recording_id: &recording.recording_id,
        started_at: &recording.started_at,
        ended_at: recording.ended_at.as_deref(),
        duration_secs: recording.duration_secs(),
        format: recording.format,
        codecs: &recording.codecs,
        resolution: recording.resolution,
        frame_rate: recording.frame_rate,
        inits: recording
            .inits
            .iter()
            .filter_map(|i| by_name.get(i.as_str()).copied())
            .collect(),
        segments: recording
            .segments
            .iter()
            .filter_map(|s| {
                let stored = by_name.get(s.file.as_str())?;
                Some(SegmentMetadata {
                    sequence: s.sequence,
                    file: &s.file,
                    duration_secs: s.duration_secs,
                    program_date_time: &s.program_date_time,
                    discontinuity: s.discontinuity,
                    bytes: stored.bytes,
                    sha256: &stored.sha256,
                })
            })
            .collect(),
    };
    serde_json::to_vec_pretty(&metadata).map_err(std::io::Error::other)
}

/// `GET /api/v1/archive`: what the archiver is doing.
pub fn status_router(status: SharedStatus) -> axum::Router {
    axum::Router::new().route(
        "/api/v1/archive",
        axum::routing::get(move || {
            let status = status.clone();
            async move { axum::Json(lock(&status).clone()) }
        }),
    )
}
