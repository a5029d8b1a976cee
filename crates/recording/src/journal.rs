//! The on-disk format of a recording: a directory of segment files and a journal that
//! lists them. The journal is the recording's single source of truth for the archiver: it is
//! rewritten atomically (temp file, fsync, rename, fsync of the directory) after every
//! segment is durable, so a crash loses at most the segment being written.
//!
//! So that a rewrite stays small however long a stream runs, every
//! [`SEGMENTS_PER_PAGE`] entries move out of `journal.json` into an immutable page file
//! (`journal-0001.json`, ...), itself written durably before the journal names it.
//! [`read_journal`] reassembles the whole list.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use streamcdn_config::SegmentFormat;
use streamcdn_support::durable;

pub const JOURNAL_FILE: &str = "journal.json";
/// Written by the archiver once the recording's archive is verified.
pub const ARCHIVED_MARKER: &str = "archive.json";
/// Written once a hook about the recording was delivered or given up
/// (`hook-on_archived.json`), so it is never sent again.
pub const HOOK_MARKER_PREFIX: &str = "hook-";

/// The file that says `hook` (e.g. `on_archived`) is done with the recording.
pub fn hook_marker(hook: &str) -> String {
    format!("{HOOK_MARKER_PREFIX}{hook}.json")
}

fn is_hook_marker(name: &str) -> bool {
    name.strip_prefix(HOOK_MARKER_PREFIX)
        .and_then(|n| n.strip_suffix(".json"))
        .is_some_and(|hook| {
            !hook.is_empty() && hook.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
}
const JOURNAL_VERSION: u32 = 1;
/// About 3 minutes of 2-second segments: the journal is rewritten (and fsynced) after
/// every segment, so its size is a cost paid every segment of every stream (~20 KB of
/// JSON at most; 500 entries were up to ~100 KB a rewrite).
pub const SEGMENTS_PER_PAGE: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordingState {
    Live,
    Ended,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentEntry {
    /// Media sequence number, from 0 for the recording's first segment.
    pub sequence: u64,
    pub file: String,
    pub duration_secs: f64,
    pub program_date_time: String,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub discontinuity: bool,
    /// The init segment this segment decodes with (fMP4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
}

/// What a recording is: its identity, its state and every file it consists of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recording {
    pub version: u32,
    pub provider: String,
    pub stream: String,
    pub recording_id: String,
    /// The server writing (or that last wrote) the recording. In a cluster sharing
    /// storage, only it may repair the recording after a crash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub format: SegmentFormat,
    pub state: RecordingState,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// Set while the recording is live but has no publisher because its server was
    /// drained: the last segment is durable and the recording waits to be continued
    /// (or ended once its reconnect window has passed). A restart of the server does
    /// not end it, as it would one a crash left live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupted_at: Option<String>,
    pub target_duration_secs: f64,
    pub codecs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<(u16, u16)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_rate: Option<f64>,
    /// Init segments, in the order they came into force.
    pub inits: Vec<String>,
    /// Page files holding the entries that precede `segments` on disk, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segment_pages: Vec<String>,
    /// On disk: the entries after the pages. In memory (from [`read_journal`]): all.
    pub segments: Vec<SegmentEntry>,
}

impl Recording {
    pub fn new(
        provider: &str,
        stream: &str,
        recording_id: &str,
        format: SegmentFormat,
        started_at: String,
        target_duration_secs: f64,
    ) -> Self {
        Self {
            version: JOURNAL_VERSION,
            provider: provider.to_owned(),
            stream: stream.to_owned(),
            recording_id: recording_id.to_owned(),
            node: None,
            format,
            state: RecordingState::Live,
            started_at,
            ended_at: None,
            interrupted_at: None,
            target_duration_secs,
            codecs: Vec::new(),
            resolution: None,
            frame_rate: None,
            inits: Vec::new(),
            segment_pages: Vec::new(),
            segments: Vec::new(),
        }
    }

    pub fn is_live(&self) -> bool {
        self.state == RecordingState::Live
    }

    /// Peak and average segment bit rates, for BANDWIDTH and AVERAGE-BANDWIDTH.
    pub fn bandwidth(&self) -> (u64, u64) {
        let peak = self
            .segments
            .iter()
            .filter(|s| s.duration_secs > 0.1)
            .map(|s| (s.bytes as f64 * 8.0 / s.duration_secs) as u64)
            .max()
            .unwrap_or(0);
        let duration: f64 = self.segments.iter().map(|s| s.duration_secs).sum();
        let bytes: u64 = self.segments.iter().map(|s| s.bytes).sum();
        let average = if duration > 0.0 {
            (bytes as f64 * 8.0 / duration) as u64
        } else {
            0
        };
        (peak, average)
    }

    /// The segments' durations added up, to the microsecond: summing floats leaves
    /// noise (`25.467000000000002`) that would otherwise show in metadata and hooks.
    pub fn duration_secs(&self) -> f64 {
        let sum: f64 = self.segments.iter().map(|s| s.duration_secs).sum();
        (sum * 1e6).round() / 1e6
    }

    /// Whether `file` is part of this recording (and so may be served).
    pub fn contains_file(&self, file: &str) -> bool {
        self.inits.iter().any(|i| i == file) || self.segments.iter().any(|s| s.file == file)
    }
}

pub fn recording_dir(root: &Path, provider: &str, stream: &str, recording_id: &str) -> PathBuf {
    root.join(provider).join(stream).join(recording_id)
}

/// Writes the journal as it stands on disk: `on_disk.segments` are the entries after
/// `on_disk.segment_pages`.
fn write_journal(dir: &Path, on_disk: &Recording) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(on_disk).map_err(std::io::Error::other)?;
    durable::write(&dir.join(JOURNAL_FILE), &json)
}

/// The journal file alone (page entries not merged): enough for state and identity.
pub fn read_journal_head(dir: &Path) -> std::io::Result<Recording> {
    let bytes = std::fs::read(dir.join(JOURNAL_FILE))?;
    serde_json::from_slice(&bytes).map_err(std::io::Error::other)
}

/// The whole recording: the journal with its pages' entries put back in front.
pub fn read_journal(dir: &Path) -> std::io::Result<Recording> {
    let mut recording = read_journal_head(dir)?;
    let mut all = Vec::new();
    for page in &recording.segment_pages {
        let bytes = std::fs::read(dir.join(page))?;
        let entries: Vec<SegmentEntry> =
            serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
        all.extend(entries);
    }
    all.append(&mut recording.segments);
    recording.segments = all;
    Ok(recording)
}

/// The one writer of a recording's journal. Holds only what the journal file holds, so
/// each update costs at most a page of entries, not the whole recording.
#[derive(Debug)]
pub struct JournalWriter {
    dir: PathBuf,
    on_disk: Recording,
    page_size: usize,
    /// The segment being written part by part: its name and open file.
    growing: Option<(String, std::fs::File)>,
    /// A segment a part of which could not be written: never listed.
    broken: Option<String>,
}

impl JournalWriter {
    /// Starts the journal of a new recording (writes it at once).
    pub fn create(dir: &Path, recording: &Recording) -> std::io::Result<Self> {
        Self::with_page_size(dir, recording, SEGMENTS_PER_PAGE)
    }

    fn with_page_size(
        dir: &Path,
        recording: &Recording,
        page_size: usize,
    ) -> std::io::Result<Self> {
        let writer = Self {
            dir: dir.to_owned(),
            on_disk: recording.clone(),
            page_size: page_size.max(1),
            growing: None,
            broken: None,
        };
        write_journal(dir, &writer.on_disk)?;
        Ok(writer)
    }

    /// Takes over a recording another server left live (it died) or that ended and is
    /// being continued: the journal is rewritten live, naming `node` as its writer.
    /// Returns the whole recording with the writer.
    pub fn reopen(dir: &Path, node: &str) -> std::io::Result<(Recording, Self)> {
        let mut recording = read_journal(dir)?;
        let mut on_disk = read_journal_head(dir)?;
        for r in [&mut recording, &mut on_disk] {
            r.state = RecordingState::Live;
            r.ended_at = None;
            r.interrupted_at = None;
            r.node = Some(node.to_owned());
        }
        write_journal(dir, &on_disk)?;
        let writer = Self {
            dir: dir.to_owned(),
            on_disk,
            page_size: SEGMENTS_PER_PAGE,
            growing: None,
            broken: None,
        };
        Ok((recording, writer))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The recording's descriptive fields (codecs, resolution...), written with the
    /// next update.
    pub fn header(&mut self) -> &mut Recording {
        &mut self.on_disk
    }

    /// Writes an init segment durably, then the journal that names it.
    pub fn add_init(&mut self, file: &str, bytes: &[u8]) -> std::io::Result<()> {
        durable::write(&self.dir.join(file), bytes)?;
        self.on_disk.inits.push(file.to_owned());
        write_journal(&self.dir, &self.on_disk)
    }

    /// Appends a part to segment `file` (created by its first part). Not durable and not
    /// listed until [`Self::add_written_segment`]: a crash before leaves a file no
    /// journal names, which `repair` removes.
    pub fn append_part(&mut self, file: &str, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        if self.broken.as_deref() == Some(file) {
            return Err(std::io::Error::other(format!("segment {file} lost a part")));
        }
        if self.growing.as_ref().is_none_or(|(name, _)| name != file) {
            self.growing = None;
            let opened = std::fs::File::create(self.dir.join(file));
            let opened = opened.inspect_err(|_| self.broken = Some(file.to_owned()))?;
            self.growing = Some((file.to_owned(), opened));
        }
        let written = match &mut self.growing {
            Some((_, f)) => f.write_all(bytes),
            None => Ok(()),
        };
        if written.is_err() {
            self.growing = None;
            self.broken = Some(file.to_owned());
        }
        written
    }

    /// Makes the segment written by [`Self::append_part`] durable, then lists it.
    pub fn add_written_segment(&mut self, entry: SegmentEntry) -> std::io::Result<()> {
        match self.growing.take() {
            // Its data now; its directory entry with the journal's, whose rewrite ends
            // with an fsync of the same directory (one fewer per segment).
            Some((name, file)) if name == entry.file => file.sync_data()?,
            _ => {
                // A segment with a part missing is not listed (and its file goes).
                let _ = std::fs::remove_file(self.dir.join(&entry.file));
                return Err(std::io::Error::other(format!(
                    "segment {} is incomplete: not recorded",
                    entry.file
                )));
            }
        }
        self.list_segment(entry)
    }

    fn list_segment(&mut self, entry: SegmentEntry) -> std::io::Result<()> {
        self.on_disk.segments.push(entry);
        if self.on_disk.segments.len() >= self.page_size {
            let page = format!("journal-{:04}.json", self.on_disk.segment_pages.len() + 1);
            let json =
                serde_json::to_vec_pretty(&self.on_disk.segments).map_err(std::io::Error::other)?;
            durable::write(&self.dir.join(&page), &json)?;
            self.on_disk.segment_pages.push(page);
            self.on_disk.segments.clear();
        }
        write_journal(&self.dir, &self.on_disk)
    }

    pub fn end(&mut self, ended_at: String) -> std::io::Result<()> {
        self.on_disk.state = RecordingState::Ended;
        self.on_disk.ended_at = Some(ended_at);
        write_journal(&self.dir, &self.on_disk)
    }

    /// The publisher left a server being drained: the recording stays live, marked
    /// interrupted, for another server to continue (see [`Recording::interrupted_at`]).
    pub fn interrupt(&mut self, at: String) -> std::io::Result<()> {
        self.on_disk.interrupted_at = Some(at);
        write_journal(&self.dir, &self.on_disk)
    }
}

/// After a crash of server `node`: removes files the journals of the recordings it left
/// `live` do not list (the segment that was being written) and marks those recordings
/// interrupted, as a drain does: a publisher reconnecting (here or to another server of
/// the cluster) continues the same recording, and the cluster ends it once the
/// provider's reconnect window has passed. Ending it here would show viewers
/// `#EXT-X-ENDLIST` while the publisher is on its way back. Recordings of other servers
/// are left alone. Returns how many recordings were repaired.
pub fn recover(root: &Path, node: &str) -> std::io::Result<usize> {
    let mut repaired = 0;
    for dir in recording_dirs(root)? {
        let Ok(head) = read_journal_head(&dir) else {
            tracing::warn!(dir = %dir.display(), "recording without a readable journal left as is");
            continue;
        };
        if head.node.as_deref().is_some_and(|n| n != node) {
            continue;
        }
        // Left open by a drain, not a crash: continued or ended by the cluster.
        if head.is_live() && head.interrupted_at.is_some() {
            continue;
        }
        repaired += usize::from(interrupt_left_live(&dir)?);
    }
    Ok(repaired)
}

/// Removes the files a recording's journal does not list and, if it is live, marks it
/// interrupted at its last segment. Returns whether it was live.
fn interrupt_left_live(dir: &Path) -> std::io::Result<bool> {
    let (mut on_disk, recording) = (read_journal_head(dir)?, read_journal(dir)?);
    remove_unlisted(dir, &recording)?;
    if !recording.is_live() {
        return Ok(false);
    }
    on_disk.interrupted_at = Some(recording.segments.last().map_or_else(
        || recording.started_at.clone(),
        |s| s.program_date_time.clone(),
    ));
    write_journal(dir, &on_disk)?;
    tracing::info!(dir = %dir.display(), segments = recording.segments.len(), "recording left live by a crash marked interrupted");
    Ok(true)
}

/// Removes files in a recording's directory that its journal does not list.
fn remove_unlisted(dir: &Path, recording: &Recording) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let listed = name == JOURNAL_FILE
            || name == ARCHIVED_MARKER
            || is_hook_marker(&name)
            || recording.contains_file(&name)
            || recording.segment_pages.contains(&name);
        if !listed {
            tracing::info!(file = %entry.path().display(), "removing file not in the journal");
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Ends a recording whose writer is gone, at its last segment, and removes files its
/// journal does not list. Returns whether it was left live.
pub fn repair(dir: &Path) -> std::io::Result<bool> {
    let (mut on_disk, recording) = (read_journal_head(dir)?, read_journal(dir)?);
    remove_unlisted(dir, &recording)?;
    if !recording.is_live() {
        return Ok(false);
    }
    on_disk.state = RecordingState::Ended;
    on_disk.interrupted_at = None;
    on_disk.ended_at = Some(recording.segments.last().map_or_else(
        || recording.started_at.clone(),
        |s| s.program_date_time.clone(),
    ));
    write_journal(dir, &on_disk)?;
    tracing::info!(dir = %dir.display(), segments = recording.segments.len(), "recording left live by a crash marked ended");
    Ok(true)
}

/// Every `<provider>/<stream>/<recording>` directory under `root`.
pub fn recording_dirs(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    let subdirs = |p: &Path| -> std::io::Result<Vec<PathBuf>> {
        match std::fs::read_dir(p) {
            Ok(entries) => Ok(entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    };
    for provider in subdirs(root)? {
        for stream in subdirs(&provider)? {
            dirs.extend(subdirs(&stream)?);
        }
    }
    dirs.sort();
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("streamcdn-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_recordings_duration_carries_no_float_noise() {
        let mut rec = Recording::new("p", "s", "r", SegmentFormat::Fmp4, "t0".into(), 2.0);
        for (n, duration) in [
            2.002, 2.002, 2.002, 2.002, 2.002, 2.002, 2.002, 2.002, 2.002, 2.002, 2.002, 2.002,
            1.443,
        ]
        .into_iter()
        .enumerate()
        {
            rec.segments.push(SegmentEntry {
                sequence: n as u64,
                file: format!("{n:06}.m4s"),
                duration_secs: duration,
                program_date_time: "t".into(),
                bytes: 1,
                discontinuity: false,
                init: None,
            });
        }
        let noisy: f64 = rec.segments.iter().map(|s| s.duration_secs).sum();
        assert_ne!(
            noisy.to_string(),
            "25.467",
            "the sum itself is noisy: {noisy}"
        );
        assert_eq!(rec.duration_secs().to_string(), "25.467");
        assert_eq!(serde_json::json!(rec.duration_secs()).to_string(), "25.467");
    }

    #[test]
    fn recovery_interrupts_live_recordings_and_drops_unlisted_files() {
        let root = temp_dir("recover");
        let dir = recording_dir(&root, "p", "s", "r1");
        std::fs::create_dir_all(&dir).unwrap();
        let mut rec = Recording::new("p", "s", "r1", SegmentFormat::Fmp4, "t0".into(), 2.0);
        rec.inits.push("init.mp4".into());
        rec.segments.push(SegmentEntry {
            sequence: 0,
            file: "000000.m4s".into(),
            duration_secs: 2.0,
            program_date_time: "t1".into(),
            bytes: 3,
            discontinuity: false,
            init: Some("init.mp4".into()),
        });
        write_journal(&dir, &rec).unwrap();
        durable::write(&dir.join("init.mp4"), b"ini").unwrap();
        durable::write(&dir.join("000000.m4s"), b"abc").unwrap();
        std::fs::write(dir.join("000001.m4s"), b"half").unwrap();
        std::fs::write(dir.join(".000001.m4s.tmp"), b"half").unwrap();
        // A hook's marker is the recording's own, not a leftover.
        durable::write(&dir.join(hook_marker("on_archived")), b"{}").unwrap();
        std::fs::write(dir.join("hook-X1.json"), b"").unwrap();

        assert_eq!(recover(&root, "n1").unwrap(), 1);
        let rec = read_journal(&dir).unwrap();
        assert!(
            rec.is_live(),
            "a crash is no end: the publisher may come back"
        );
        assert_eq!(rec.interrupted_at.as_deref(), Some("t1"));
        // The cluster's sweep ends it once nobody came back.
        assert!(repair(&dir).unwrap());
        let rec = read_journal(&dir).unwrap();
        assert_eq!(rec.state, RecordingState::Ended);
        assert_eq!(rec.ended_at.as_deref(), Some("t1"));
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(
            files,
            [
                "000000.m4s",
                "hook-on_archived.json",
                "init.mp4",
                "journal.json"
            ]
        );
        assert_eq!(recover(&root, "n1").unwrap(), 0);
    }

    #[test]
    fn a_recording_interrupted_by_a_drain_survives_recovery_until_continued() {
        let root = temp_dir("interrupted");
        let dir = recording_dir(&root, "p", "s", "r1");
        std::fs::create_dir_all(&dir).unwrap();
        let mut rec = Recording::new("p", "s", "r1", SegmentFormat::Fmp4, "t0".into(), 2.0);
        rec.node = Some("n1".into());
        let mut writer = JournalWriter::create(&dir, &rec).unwrap();
        writer.append_part("000000.m4s", b"abc").unwrap();
        writer
            .add_written_segment(SegmentEntry {
                sequence: 0,
                file: "000000.m4s".into(),
                duration_secs: 1.2,
                program_date_time: "t1".into(),
                bytes: 3,
                discontinuity: false,
                init: None,
            })
            .unwrap();
        writer.interrupt("t2".into()).unwrap();
        // The drained server restarts: not a crash, the recording stays live.
        assert_eq!(recover(&root, "n1").unwrap(), 0);
        let head = read_journal_head(&dir).unwrap();
        assert!(head.is_live());
        assert_eq!(head.interrupted_at.as_deref(), Some("t2"));
        // Another server continues it: live, no longer interrupted, its writer.
        let (continued, _writer) = JournalWriter::reopen(&dir, "n2").unwrap();
        assert!(continued.is_live() && continued.interrupted_at.is_none());
        assert_eq!(continued.segments.len(), 1);
        assert!(read_journal_head(&dir).unwrap().interrupted_at.is_none());
        // Interrupted again and never continued: ending it clears the mark.
        let (_, mut writer) = JournalWriter::reopen(&dir, "n2").unwrap();
        writer.interrupt("t3".into()).unwrap();
        assert!(repair(&dir).unwrap());
        let ended = read_journal(&dir).unwrap();
        assert_eq!(ended.state, RecordingState::Ended);
        assert_eq!(ended.ended_at.as_deref(), Some("t1"));
        assert!(ended.interrupted_at.is_none());
        assert!(!repair(&dir).unwrap(), "ended once");
    }

    #[test]
    fn journal_pages_bound_each_rewrite_and_read_back_whole() {
        let root = temp_dir("pages");
        let dir = recording_dir(&root, "p", "s", "r1");
        std::fs::create_dir_all(&dir).unwrap();
        let rec = Recording::new("p", "s", "r1", SegmentFormat::Ts, "t0".into(), 2.0);
        let mut writer = JournalWriter::with_page_size(&dir, &rec, 4).unwrap();
        for n in 0..10u64 {
            let entry = SegmentEntry {
                sequence: n,
                file: format!("{n:06}.ts"),
                duration_secs: 2.0,
                program_date_time: format!("t{n}"),
                bytes: 1,
                discontinuity: false,
                init: None,
            };
            writer.append_part(&entry.file, b"x").unwrap();
            writer.add_written_segment(entry).unwrap();
        }
        let on_disk = read_journal_head(&dir).unwrap();
        assert_eq!(
            on_disk.segment_pages,
            ["journal-0001.json", "journal-0002.json"]
        );
        assert_eq!(
            on_disk.segments.len(),
            2,
            "the journal itself holds only the tail"
        );
        let whole = read_journal(&dir).unwrap();
        let sequences: Vec<u64> = whole.segments.iter().map(|s| s.sequence).collect();
        assert_eq!(sequences, (0..10).collect::<Vec<_>>());

        // A crash mid-recording: recovery keeps pages and segments and interrupts the
        // recording; the sweep that ends it later keeps them too.
        std::fs::write(dir.join("000010.ts"), b"partial").unwrap();
        assert_eq!(recover(&root, "n1").unwrap(), 1);
        assert!(repair(&dir).unwrap());
        let whole = read_journal(&dir).unwrap();
        assert_eq!(
            (whole.state, whole.segments.len()),
            (RecordingState::Ended, 10)
        );
        assert_eq!(whole.ended_at.as_deref(), Some("t9"));
        assert!(!dir.join("000010.ts").exists() && dir.join("journal-0002.json").exists());
    }
}
