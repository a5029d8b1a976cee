//! The archiver of an ingest cluster: moves each recording whose stream has been over
//! for its provider's `archive_after` to on-demand storage, then removes the local copy.
//!
//! For one recording, in this order, each step safe to repeat after a crash:
//! 1. upload every file the journal lists (objects already stored intact are kept);
//! 2. upload the generated objects: VOD playlist, multivariant playlists, metadata;
//! 3. write the completion marker (only now may anything treat it as archived);
//! 4. announce it `archived` in the registry and add it to the stream's
//!    `recordings.json` in the store;
//! 5. write `archive.json` locally, then, after the local retention, delete the copy.
//!
//! A recording whose journal changed meanwhile (its publisher came back within the
//! window) is left local and is archived again when it ends again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::Serialize;
use streamcdn_archive::{Archive, StoredObject, UploadOptions};
use streamcdn_registry::{StreamRecord, StreamState};
use tokio::sync::watch;

use crate::cluster::Cluster;
use crate::origin::{multivariant, recording_playlist_text, recording_summary};
use crate::recording::{self, Recording};

use crate::recording::ARCHIVED_MARKER as LOCAL_MARKER;
/// Archived records stay in the registry this long (the store is the lasting truth).
const ARCHIVED_RECORD_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const SCAN_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct ArchiverSettings {
    pub recordings_dir: PathBuf,
    pub default_after: Duration,
    /// Per provider, from the configuration; the registry may override at runtime.
    pub provider_after: HashMap<String, Duration>,
    pub local_retention: Duration,
    pub upload: UploadOptions,
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

/// The delay in force for `provider`: the provider's runtime setting, else the
/// configured one.
pub async fn effective_archive_after(
    configured: Duration,
    cluster: &Cluster,
    provider: &str,
) -> Duration {
    match cluster.registry.provider_settings(provider).await {
        Ok(s) => s.archive_after_ms.map_or(configured, Duration::from_millis),
        Err(_) => configured,
    }
}

async fn archive_after(settings: &ArchiverSettings, cluster: &Cluster, provider: &str) -> Duration {
    let configured = settings
        .provider_after
        .get(provider)
        .copied()
        .unwrap_or(settings.default_after);
    effective_archive_after(configured, cluster, provider).await
}

/// How long ago an RFC 3339 time (a journal's `ended_at`) was, in seconds.
pub fn seconds_since(text: &str) -> Option<f64> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some((time::OffsetDateTime::now_utc() - t).as_seconds_f64())
}

pub async fn run_archiver(
    settings: ArchiverSettings,
    archive: Archive,
    cluster: Cluster,
    status: SharedStatus,
    mut shutdown: watch::Receiver<bool>,
) {
    tracing::info!(store = ?archive, "archiver running");
    loop {
        let pass = scan(&settings, &archive, &cluster, &status);
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

async fn scan(
    settings: &ArchiverSettings,
    archive: &Archive,
    cluster: &Cluster,
    status: &SharedStatus,
) {
    let root = settings.recordings_dir.clone();
    let dirs =
        tokio::task::spawn_blocking(move || recording::recording_dirs(&root).unwrap_or_default())
            .await
            .unwrap_or_default();
    let mut waiting = Vec::new();
    let mut delays: HashMap<String, Duration> = HashMap::new();
    for dir in dirs {
        if dir.join(LOCAL_MARKER).exists() {
            remove_when_retained(&dir, settings.local_retention);
            continue;
        }
        let Ok(head) = recording::read_journal_head(&dir) else {
            continue;
        };
        let Some(ended_for) = head
            .ended_at
            .as_deref()
            .filter(|_| !head.is_live())
            .and_then(seconds_since)
        else {
            continue;
        };
        let delay = match delays.get(&head.provider) {
            Some(d) => *d,
            None => {
                let d = archive_after(settings, cluster, &head.provider).await;
                delays.insert(head.provider.clone(), d);
                d
            }
        };
        let name = format!("{}/{}/{}", head.provider, head.stream, head.recording_id);
        if ended_for < delay.as_secs_f64() {
            waiting.push(name);
            continue;
        }
        lock(status).in_progress = Some(name.clone());
        let started = std::time::Instant::now();
        match archive_recording(settings, archive, cluster, &dir).await {
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

fn lock(status: &SharedStatus) -> std::sync::MutexGuard<'_, ArchiverStatus> {
    status.lock().unwrap_or_else(|e| e.into_inner())
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

/// Archives one recording; `None` if it changed meanwhile and was left local.
async fn archive_recording(
    settings: &ArchiverSettings,
    archive: &Archive,
    cluster: &Cluster,
    dir: &Path,
) -> Result<Option<Vec<StoredObject>>, ArchiveRecordingError> {
    let recording = recording::read_journal(dir)?;
    let prefix = format!(
        "{}/{}/{}",
        recording.provider, recording.stream, recording.recording_id
    );
    let files: Vec<(String, PathBuf)> = recording
        .inits
        .iter()
        .chain(recording.segments.iter().map(|s| &s.file))
        .map(|f| (f.clone(), dir.join(f)))
        .collect();
    let options = &settings.upload;
    let mut objects = archive.upload_files(&prefix, &files, options).await?;
    let by_name: HashMap<&str, &StoredObject> =
        objects.iter().map(|o| (o.name.as_str(), o)).collect();

    let metadata = Metadata {
        provider: &recording.provider,
        stream: &recording.stream,
        recording_id: &recording.recording_id,
        started_at: &recording.started_at,
        ended_at: recording.ended_at.as_deref(),
        duration_secs: recording.segments.iter().map(|s| s.duration_secs).sum(),
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
    let metadata = serde_json::to_vec_pretty(&metadata).map_err(std::io::Error::other)?;
    let rec = &recording.recording_id;
    let generated = [
        ("playlist.m3u8", recording_playlist_text(&recording, "")),
        ("index.m3u8", multivariant(&recording, "playlist.m3u8")),
        // What the stream's own URLs serve once this is its current recording.
        (
            "stream-index.m3u8",
            multivariant(&recording, &format!("{rec}/playlist.m3u8")),
        ),
        (
            "stream-live.m3u8",
            recording_playlist_text(&recording, &format!("{rec}/")),
        ),
    ];
    for (name, text) in generated {
        objects.push(
            archive
                .put_verified(&prefix, name, Bytes::from(text), options)
                .await?,
        );
    }
    objects.push(
        archive
            .put_verified(&prefix, "metadata.json", Bytes::from(metadata), options)
            .await?,
    );

    // The publisher came back within the window: the journal changed, so what was
    // uploaded is not the recording any more.
    let now = recording::read_journal_head(dir)?;
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

    announce_archived(archive, cluster, &recording, options).await?;
    let marker =
        serde_json::json!({ "archived_at": crate::publisher::format_time(SystemTime::now()) });
    recording::write_durable(dir, LOCAL_MARKER, marker.to_string().as_bytes())?;
    remove_when_retained(dir, settings.local_retention);
    Ok(Some(objects))
}

/// Tells the edges: the registry record, and the stream's listing in the store.
async fn announce_archived(
    archive: &Archive,
    cluster: &Cluster,
    recording: &Recording,
    options: &UploadOptions,
) -> Result<(), ArchiveRecordingError> {
    let record = StreamRecord {
        provider: recording.provider.clone(),
        stream: recording.stream.clone(),
        recording_id: recording.recording_id.clone(),
        cluster: cluster.node.cluster.clone(),
        node: recording
            .node
            .clone()
            .unwrap_or_else(|| cluster.node.id.clone()),
        origin: cluster.node.origin.clone(),
        state: StreamState::Archived,
    };
    let registry = &cluster.registry;
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
    let listing_prefix = format!("{}/{}", recording.provider, recording.stream);
    let key = format!("{listing_prefix}/recordings.json");
    let mut listing: Vec<serde_json::Value> = match archive.get(&key).await? {
        Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
        None => Vec::new(),
    };
    listing.retain(|e| e["recording_id"] != recording.recording_id.as_str());
    let mut summary = recording_summary(recording);
    summary["state"] = serde_json::json!("archived");
    listing.push(summary);
    listing.sort_by(|a, b| a["recording_id"].as_str().cmp(&b["recording_id"].as_str()));
    let bytes = serde_json::to_vec_pretty(&listing).map_err(std::io::Error::other)?;
    archive
        .put_verified(
            &listing_prefix,
            "recordings.json",
            Bytes::from(bytes),
            options,
        )
        .await?;
    Ok(())
}

/// Deletes an archived recording's local copy once the retention has passed: files
/// first, the marker last, so an interrupted removal is finished on the next pass.
fn remove_when_retained(dir: &Path, retention: Duration) {
    let archived_for = std::fs::metadata(dir.join(LOCAL_MARKER))
        .and_then(|m| m.modified())
        .map(|t| SystemTime::now().duration_since(t).unwrap_or_default());
    if !archived_for.is_ok_and(|age| age >= retention) {
        return;
    }
    let removal = (|| -> std::io::Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| !p.ends_with(LOCAL_MARKER))
            .collect();
        // The journal goes last of the files, so no reader sees a journal without files.
        entries.sort_by_key(|p| p.ends_with(recording::JOURNAL_FILE));
        for path in entries {
            std::fs::remove_file(path)?;
        }
        std::fs::remove_file(dir.join(LOCAL_MARKER))?;
        std::fs::remove_dir(dir)
    })();
    match removal {
        Ok(()) => {
            tracing::info!(dir = %dir.display(), "local copy of an archived recording removed")
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an archived recording's local copy; will retry")
        }
    }
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

#[derive(Clone)]
struct ProviderApi {
    providers: Arc<HashMap<String, streamcdn_config::ProviderConfig>>,
    default_after: Duration,
    cluster: Cluster,
}

#[derive(serde::Deserialize)]
struct SettingsChange {
    archive_after: String,
}

/// Longest `archive_after` a provider may set through the API.
const MAX_ARCHIVE_AFTER: Duration = Duration::from_secs(30 * 24 * 3600);

/// `GET|PUT /api/v1/providers/<name>/settings`, for the provider itself: it
/// authenticates with its stream key (`Authorization: Bearer <key>`), and a key opens
/// only its own provider's settings.
pub fn provider_router(
    providers: &[streamcdn_config::ProviderConfig],
    default_after: Duration,
    cluster: Cluster,
) -> axum::Router {
    use axum::extract::{Path as UrlPath, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;

    // The error is the response itself, returned at once.
    #[allow(clippy::result_large_err)]
    fn authorize(
        api: &ProviderApi,
        name: &str,
        headers: &HeaderMap,
    ) -> Result<streamcdn_config::ProviderConfig, axum::response::Response> {
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(token) = token else {
            return Err((
                StatusCode::UNAUTHORIZED,
                "send Authorization: Bearer <stream key>\n",
            )
                .into_response());
        };
        let Some(provider) = api.providers.get(name) else {
            return Err((StatusCode::NOT_FOUND, "no such provider\n").into_response());
        };
        if !crate::hub::constant_time_eq(token.as_bytes(), provider.stream_key.as_bytes()) {
            return Err((
                StatusCode::FORBIDDEN,
                "this key does not open this provider\n",
            )
                .into_response());
        }
        Ok(provider.clone())
    }

    async fn current(
        api: &ProviderApi,
        provider: &streamcdn_config::ProviderConfig,
    ) -> serde_json::Value {
        let configured = provider.archive_after.unwrap_or(api.default_after);
        let effective = effective_archive_after(configured, &api.cluster, &provider.name).await;
        serde_json::json!({
            "provider": provider.name,
            "archive_after": humantime::format_duration(effective).to_string(),
            "archive_after_secs": effective.as_secs_f64(),
        })
    }

    async fn get_settings(
        State(api): State<ProviderApi>,
        UrlPath(name): UrlPath<String>,
        headers: HeaderMap,
    ) -> axum::response::Response {
        match authorize(&api, &name, &headers) {
            Ok(provider) => axum::Json(current(&api, &provider).await).into_response(),
            Err(response) => response,
        }
    }

    async fn put_settings(
        State(api): State<ProviderApi>,
        UrlPath(name): UrlPath<String>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        let provider = match authorize(&api, &name, &headers) {
            Ok(p) => p,
            Err(response) => return response,
        };
        let change: SettingsChange = match serde_json::from_slice(&body) {
            Ok(c) => c,
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("expected {{\"archive_after\": \"30m\"}}: {e}\n"),
                )
                    .into_response()
            }
        };
        let after = match humantime::parse_duration(&change.archive_after) {
            Ok(d) if d <= MAX_ARCHIVE_AFTER => d,
            Ok(_) => {
                return (
                    StatusCode::BAD_REQUEST,
                    "archive_after may be at most 30 days\n",
                )
                    .into_response()
            }
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("invalid archive_after {:?}: {e}\n", change.archive_after),
                )
                    .into_response()
            }
        };
        let settings = streamcdn_registry::ProviderSettings {
            archive_after_ms: Some(after.as_millis() as u64),
        };
        if let Err(e) = api
            .cluster
            .registry
            .set_provider_settings(&name, &settings)
            .await
        {
            tracing::warn!(provider = name, error = %e, "cannot store provider settings");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "registry unavailable; try again\n",
            )
                .into_response();
        }
        tracing::info!(provider = name, archive_after = %humantime::format_duration(after), "provider changed its archive delay");
        axum::Json(current(&api, &provider).await).into_response()
    }

    let api = ProviderApi {
        providers: Arc::new(
            providers
                .iter()
                .map(|p| (p.name.clone(), p.clone()))
                .collect(),
        ),
        default_after,
        cluster,
    };
    axum::Router::new()
        .route(
            "/api/v1/providers/{name}/settings",
            axum::routing::get(get_settings).put(put_settings),
        )
        .with_state(api)
}
