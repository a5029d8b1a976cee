//! The recordings of a data directory, for async code: every file operation runs on
//! tokio's blocking pool, never on an async worker and never under a lock that request
//! handlers take, and whole journals are cached, keyed by the journal file's identity
//! (inode, size, modification time) so a rewrite is seen at once and an unchanged
//! recording is never parsed twice.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use streamcdn_support::durable;
use streamcdn_urls::{RecordingName, StreamName};

use crate::journal::{self, JournalWriter, Recording, ARCHIVED_MARKER, JOURNAL_FILE};

/// Segment entries kept parsed in memory across all cached journals (about 30 MB).
const CACHED_ENTRIES: u64 = 200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Signature {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl Signature {
    fn of(metadata: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(metadata);
        #[cfg(not(unix))]
        let inode = 0;
        Self {
            len: metadata.len(),
            modified: metadata.modified().ok(),
            inode,
        }
    }
}

struct CachedJournal {
    signature: Signature,
    recording: Arc<Recording>,
}

/// A handle on the recordings under one root; cheap to clone.
#[derive(Clone)]
pub struct RecordingStore {
    root: Arc<PathBuf>,
    journals: moka::sync::Cache<PathBuf, Arc<CachedJournal>>,
}

impl std::fmt::Debug for RecordingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecordingStore({})", self.root.display())
    }
}

/// Runs file work on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

impl RecordingStore {
    /// Opens (creating) the directory. Called once at start, before serving.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        Ok(Self {
            root: Arc::new(root.to_owned()),
            journals: moka::sync::Cache::builder()
                .max_capacity(CACHED_ENTRIES)
                .weigher(|_, j: &Arc<CachedJournal>| {
                    u32::try_from(j.recording.segments.len() + 1).unwrap_or(u32::MAX)
                })
                .build(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dir(&self, recording: &RecordingName) -> PathBuf {
        journal::recording_dir(
            &self.root,
            &recording.stream.provider,
            &recording.stream.stream,
            &recording.id,
        )
    }

    /// The whole recording (pages merged), from the cache while its journal is unchanged.
    pub async fn load(&self, recording: &RecordingName) -> Option<Arc<Recording>> {
        self.load_dir(self.dir(recording)).await.ok()
    }

    /// The whole recording in `dir`.
    pub async fn load_dir(&self, dir: PathBuf) -> std::io::Result<Arc<Recording>> {
        let journals = self.journals.clone();
        blocking(move || load_cached(&journals, &dir)).await
    }

    /// Recording ids of a stream, oldest first (ids sort by start time).
    pub async fn ids(&self, stream: &StreamName) -> Vec<String> {
        let dir = self.root.join(&stream.provider).join(&stream.stream);
        blocking(move || Ok(recording_ids(&dir)))
            .await
            .unwrap_or_default()
    }

    /// The stream's most recent recording on this storage.
    pub async fn latest(&self, stream: &StreamName) -> Option<Arc<Recording>> {
        let id = self.ids(stream).await.pop()?;
        self.load(&stream.recording(&id)?).await
    }

    /// Every recording on this storage with its directory, in directory order (so a
    /// stream's recordings oldest first). Unreadable journals are logged and skipped.
    pub async fn all(&self) -> std::io::Result<Vec<(PathBuf, Arc<Recording>)>> {
        let (root, journals) = (self.root.clone(), self.journals.clone());
        blocking(move || {
            let mut found = Vec::new();
            for dir in journal::recording_dirs(&root)? {
                match load_cached(&journals, &dir) {
                    Ok(recording) => found.push((dir, recording)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "unreadable journal skipped")
                    }
                }
            }
            Ok(found)
        })
        .await
    }

    /// Starts a new recording: its directory and first journal, durably.
    pub async fn create(&self, recording: Recording) -> std::io::Result<JournalWriter> {
        let dir = journal::recording_dir(
            &self.root,
            &recording.provider,
            &recording.stream,
            &recording.recording_id,
        );
        blocking(move || {
            std::fs::create_dir_all(&dir)?;
            JournalWriter::create(&dir, &recording)
        })
        .await
    }

    /// Continues a recording (see [`JournalWriter::reopen`]).
    pub async fn reopen(
        &self,
        recording: &RecordingName,
        node: &str,
    ) -> std::io::Result<(Recording, JournalWriter)> {
        let (dir, node) = (self.dir(recording), node.to_owned());
        blocking(move || JournalWriter::reopen(&dir, &node)).await
    }

    /// Repairs what a crash of `node` left live (see [`journal::recover`]).
    pub async fn recover(&self, node: &str) -> std::io::Result<usize> {
        let (root, node) = (self.root.clone(), node.to_owned());
        blocking(move || journal::recover(&root, &node)).await
    }

    /// Ends a recording whose writer is gone (see [`journal::repair`]).
    pub async fn repair(&self, dir: &Path) -> std::io::Result<bool> {
        let dir = dir.to_owned();
        blocking(move || journal::repair(&dir)).await
    }

    /// How long ago the recording's journal was last written.
    pub async fn quiet_for(&self, dir: &Path) -> Option<Duration> {
        let path = dir.join(JOURNAL_FILE);
        let modified = blocking(move || std::fs::metadata(path)?.modified())
            .await
            .ok()?;
        Some(
            SystemTime::now()
                .duration_since(modified)
                .unwrap_or_default(),
        )
    }

    /// Whether the archiver has verified the recording's archive (its local marker).
    pub async fn is_archived(&self, dir: &Path) -> bool {
        let marker = dir.join(ARCHIVED_MARKER);
        blocking(move || Ok(marker.exists())).await.unwrap_or(false)
    }

    /// Records, durably, that the recording's archive is complete and verified.
    pub async fn mark_archived(&self, dir: &Path, archived_at: &str) -> std::io::Result<()> {
        let dir = dir.to_owned();
        let marker = serde_json::json!({ "archived_at": archived_at }).to_string();
        blocking(move || durable::write(&dir.join(ARCHIVED_MARKER), marker.as_bytes())).await
    }

    /// When the archiver marked the recording archived (RFC 3339), if it did.
    pub async fn archived_at(&self, dir: &Path) -> Option<String> {
        let marker = dir.join(ARCHIVED_MARKER);
        let bytes = blocking(move || std::fs::read(marker)).await.ok()?;
        let json: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        json["archived_at"].as_str().map(str::to_owned)
    }

    /// Whether `hook` (e.g. `on_archived`) is done with the recording: delivered, or
    /// given up after its retries.
    pub async fn hook_done(&self, dir: &Path, hook: &str) -> bool {
        let marker = dir.join(journal::hook_marker(hook));
        blocking(move || Ok(marker.exists())).await.unwrap_or(false)
    }

    /// Records, durably, that `hook` is done with the recording (`outcome`: what came
    /// of it, kept for operators).
    pub async fn mark_hook_done(
        &self,
        dir: &Path,
        hook: &str,
        outcome: &serde_json::Value,
    ) -> std::io::Result<()> {
        let (dir, name) = (dir.to_owned(), journal::hook_marker(hook));
        let bytes = serde_json::to_vec_pretty(outcome).map_err(std::io::Error::other)?;
        blocking(move || durable::write(&dir.join(name), &bytes)).await
    }

    /// Deletes an archived recording's local copy once `retention` has passed since it
    /// was marked archived: files first, the journal last of them, the marker at the
    /// very end, so an interrupted removal is finished on the next call and no reader
    /// sees a journal without its files. Returns whether the copy is gone.
    pub async fn remove_archived(&self, dir: &Path, retention: Duration) -> std::io::Result<bool> {
        let dir = dir.to_owned();
        blocking(move || {
            let archived_for = std::fs::metadata(dir.join(ARCHIVED_MARKER))
                .and_then(|m| m.modified())
                .map(|t| SystemTime::now().duration_since(t).unwrap_or_default())?;
            if archived_for < retention {
                return Ok(false);
            }
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)?
                .flatten()
                .map(|e| e.path())
                .filter(|p| !p.ends_with(ARCHIVED_MARKER))
                .collect();
            entries.sort_by_key(|p| p.ends_with(JOURNAL_FILE));
            for path in entries {
                std::fs::remove_file(path)?;
            }
            std::fs::remove_file(dir.join(ARCHIVED_MARKER))?;
            std::fs::remove_dir(&dir)?;
            Ok(true)
        })
        .await
    }
}

fn load_cached(
    journals: &moka::sync::Cache<PathBuf, Arc<CachedJournal>>,
    dir: &Path,
) -> std::io::Result<Arc<Recording>> {
    let signature = match std::fs::metadata(dir.join(JOURNAL_FILE)) {
        Ok(m) => Signature::of(&m),
        Err(e) => {
            journals.invalidate(dir);
            return Err(e);
        }
    };
    if let Some(cached) = journals.get(dir).filter(|c| c.signature == signature) {
        return Ok(cached.recording.clone());
    }
    let recording = Arc::new(journal::read_journal(dir)?);
    journals.insert(
        dir.to_owned(),
        Arc::new(CachedJournal {
            signature,
            recording: recording.clone(),
        }),
    );
    Ok(recording)
}

fn recording_ids(stream_dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(stream_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join(JOURNAL_FILE).is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    ids.sort();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{RecordingState, SegmentEntry};
    use streamcdn_config::SegmentFormat;

    fn temp_root(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("streamcdn-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn entry(n: u64) -> SegmentEntry {
        SegmentEntry {
            sequence: n,
            file: format!("{n:06}.m4s"),
            duration_secs: 2.0,
            program_date_time: format!("t{n}"),
            bytes: 1,
            discontinuity: false,
            init: None,
        }
    }

    #[tokio::test]
    async fn loads_are_cached_until_the_journal_changes() {
        let store = RecordingStore::open(&temp_root("cache")).unwrap();
        let name = StreamName::new("p", "s").unwrap().recording("r1").unwrap();
        let rec = Recording::new("p", "s", "r1", SegmentFormat::Fmp4, "t0".into(), 2.0);
        let writer = store.create(rec).await.unwrap();
        let first = store.load(&name).await.unwrap();
        let again = store.load(&name).await.unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "an unchanged journal is not re-read"
        );

        let mut writer = tokio::task::spawn_blocking(move || {
            let mut writer = writer;
            let first = entry(0);
            writer.append_part(&first.file, b"x")?;
            writer.add_written_segment(first).map(|()| writer)
        })
        .await
        .unwrap()
        .unwrap();
        let changed = store.load(&name).await.unwrap();
        assert_eq!(
            changed.segments.len(),
            1,
            "a rewritten journal is seen at once"
        );
        writer.end("t1".into()).unwrap();
        let ended = store.load(&name).await.unwrap();
        assert_eq!(ended.state, RecordingState::Ended);
        assert_eq!(store.ids(&name.stream).await, ["r1"]);
        assert_eq!(store.latest(&name.stream).await.unwrap().recording_id, "r1");
        assert_eq!(store.all().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn archived_copies_are_removed_after_the_retention_only() {
        let store = RecordingStore::open(&temp_root("remove")).unwrap();
        let name = StreamName::new("p", "s").unwrap().recording("r1").unwrap();
        let rec = Recording::new("p", "s", "r1", SegmentFormat::Ts, "t0".into(), 2.0);
        let mut writer = store.create(rec).await.unwrap();
        writer.append_part(&entry(0).file, b"x").unwrap();
        writer.add_written_segment(entry(0)).unwrap();
        writer.end("t1".into()).unwrap();
        let dir = store.dir(&name);
        assert!(!store.is_archived(&dir).await);
        store.mark_archived(&dir, "t2").await.unwrap();
        assert!(store.is_archived(&dir).await);
        let day = Duration::from_secs(86_400);
        assert!(!store.remove_archived(&dir, day).await.unwrap());
        assert!(store.load(&name).await.is_some());
        assert!(store.remove_archived(&dir, Duration::ZERO).await.unwrap());
        assert!(!dir.exists());
        assert!(
            store.load(&name).await.is_none(),
            "the cache forgets removed recordings"
        );
        assert!(store.ids(&name.stream).await.is_empty());
    }
}
