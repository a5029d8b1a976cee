//! The disk tier of the edge cache: segments (immutable) that fell out of memory or
//! survived a restart.
//!
//! One file per object, named by a hash of its key, holding a small header (key,
//! headers, freshness) and the body. Files are written to a temp name and renamed, so
//! a crash leaves whole files or stray temps (removed on start). The index lives in
//! memory, bounded by bytes; evicting an entry deletes its file. On start the directory
//! is scanned and every intact, still-fresh file is indexed again.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode};
use bytes::Bytes;
use moka::notification::RemovalCause;
use serde::{Deserialize, Serialize};

use streamcdn_support::clock::now_secs;
use streamcdn_urls::{ObjectKind, Target};

use crate::object::{hash64, CachedObject, Policy, Validators};

const MAGIC: &[u8; 6] = b"SCDN1\n";
const MAX_HEADER: usize = 4096;

#[derive(Serialize, Deserialize)]
struct FileHeader {
    key: String,
    content_type: Option<String>,
    cache_control: Option<String>,
    /// Unix seconds until which the object is fresh.
    fresh_until: u64,
}

#[derive(Clone)]
struct DiskEntry {
    path: PathBuf,
    bytes: u64,
    fresh_for: Duration,
}

struct EntryExpiry;

impl moka::Expiry<String, DiskEntry> for EntryExpiry {
    fn expire_after_create(&self, _: &String, entry: &DiskEntry, _: Instant) -> Option<Duration> {
        Some(entry.fresh_for)
    }

    /// A rewritten file is fresh for its own time, not what was left of the old one's.
    fn expire_after_update(
        &self,
        _: &String,
        entry: &DiskEntry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.fresh_for)
    }
}

pub struct DiskCache {
    dir: PathBuf,
    index: moka::sync::Cache<String, DiskEntry>,
}

impl DiskCache {
    /// Opens (creating) the cache directory and indexes what a previous run left.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(dir)?;
        let index = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_: &String, e: &DiskEntry| u32::try_from(e.bytes).unwrap_or(u32::MAX))
            .expire_after(EntryExpiry)
            .eviction_listener(|_, entry: DiskEntry, cause| {
                // A replaced entry's file was just rewritten under the same name.
                if cause != RemovalCause::Replaced {
                    let _ = std::fs::remove_file(&entry.path);
                }
            })
            .build();
        let cache = Arc::new(Self {
            dir: dir.to_owned(),
            index,
        });
        let (kept, removed) = cache.reindex()?;
        tracing::info!(dir = %dir.display(), kept, removed, "disk cache opened");
        Ok(cache)
    }

    fn file_for(&self, key: &str) -> PathBuf {
        let name = format!("{:016x}", hash64(&[key.as_bytes()]));
        self.dir.join(&name[..2]).join(name)
    }

    fn reindex(&self) -> std::io::Result<(usize, usize)> {
        let (mut kept, mut removed) = (0, 0);
        let now = now_secs();
        for shard in std::fs::read_dir(&self.dir)?.flatten() {
            let Ok(files) = std::fs::read_dir(shard.path()) else {
                continue;
            };
            for file in files.flatten() {
                let path = file.path();
                let header = read_header(&path).ok().flatten();
                match header {
                    Some((h, body_len))
                        if h.fresh_until > now
                            && self.file_for(&h.key) == path
                            && belongs_on_disk(&h.key) =>
                    {
                        let entry = DiskEntry {
                            path,
                            bytes: body_len,
                            fresh_for: Duration::from_secs(h.fresh_until - now),
                        };
                        self.index.insert(h.key, entry);
                        kept += 1;
                    }
                    _ => {
                        let _ = std::fs::remove_file(&path);
                        removed += 1;
                    }
                }
            }
        }
        Ok((kept, removed))
    }

    /// Every key indexed.
    pub fn keys(&self) -> Vec<String> {
        self.index
            .iter()
            .map(|(key, _)| key.as_ref().clone())
            .collect()
    }

    /// Forgets `key` and deletes its file; whether it was there.
    pub fn remove(&self, key: &str) -> bool {
        self.index.remove(key).is_some()
    }

    /// Stores a segment in the background; a failure only costs a future disk hit.
    /// `still_current` is asked once the file is written: a purge that landed meanwhile
    /// must not find the object indexed again.
    pub fn store(
        self: &Arc<Self>,
        key: &str,
        object: &Arc<CachedObject>,
        still_current: impl Fn() -> bool + Send + 'static,
    ) {
        let remaining = object.ttl.saturating_sub(object.age());
        if remaining < Duration::from_secs(1) || !Policy::of(object.kind).disk {
            return;
        }
        let (cache, key, object) = (self.clone(), key.to_owned(), object.clone());
        tokio::task::spawn_blocking(move || {
            let header = FileHeader {
                key: key.clone(),
                content_type: header_string(object.content_type.as_ref()),
                cache_control: header_string(object.cache_control.as_ref()),
                fresh_until: now_secs() + remaining.as_secs(),
            };
            let path = cache.file_for(&key);
            match write_file(&path, &header, &object.body) {
                Ok(()) if !still_current() => {
                    let _ = std::fs::remove_file(&path);
                }
                Ok(()) => {
                    metrics::counter!("streamcdn_edge_disk_writes_total").increment(1);
                    cache.index.insert(
                        key.clone(),
                        DiskEntry {
                            path,
                            bytes: object.body.len() as u64,
                            fresh_for: remaining,
                        },
                    );
                    // A purge between the check and the insert.
                    if !still_current() {
                        cache.index.remove(&key);
                    }
                }
                Err(e) => {
                    metrics::counter!("streamcdn_edge_disk_errors_total").increment(1);
                    tracing::warn!(file = %path.display(), error = %e, "disk cache write failed");
                }
            }
        });
    }

    /// A stored segment, if indexed and intact.
    pub async fn load(&self, key: &str) -> Option<CachedObject> {
        let entry = self.index.get(key)?;
        let path = entry.path.clone();
        let read = tokio::task::spawn_blocking(move || std::fs::read(&path)).await;
        let parsed = match read {
            Ok(Ok(bytes)) => parse_file(Bytes::from(bytes)).filter(|(h, _)| h.key == key),
            _ => None,
        };
        let Some((header, body)) = parsed else {
            metrics::counter!("streamcdn_edge_disk_errors_total").increment(1);
            self.index.invalidate(key);
            return None;
        };
        let ttl = Duration::from_secs(header.fresh_until.saturating_sub(now_secs()));
        if ttl.is_zero() {
            // Expired (a cache rule shorter than the object's own lifetime): the
            // source is asked again, never a stale copy served as fresh.
            return None;
        }
        Some(CachedObject {
            status: StatusCode::OK,
            content_type: header.content_type.and_then(|v| v.parse().ok()),
            cache_control: header.cache_control.and_then(|v| v.parse().ok()),
            body,
            kind: ObjectKind::Segment,
            born: tokio::time::Instant::now(),
            ttl,
            validators: Validators::default(),
            invalidated: Default::default(),
        })
    }

    pub fn bytes(&self) -> u64 {
        self.index.run_pending_tasks();
        self.index.weighted_size()
    }
}

/// Whether the object a key names is kept on disk (segments, not parts): a file left
/// by a build with another policy is not indexed again.
fn belongs_on_disk(key: &str) -> bool {
    let path = key.split('?').next().unwrap_or_default();
    Target::parse(path).is_ok_and(|target| Policy::of(target.kind()).disk)
}

fn header_string(value: Option<&HeaderValue>) -> Option<String> {
    value.and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn write_file(path: &Path, header: &FileHeader, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_vec(header).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(MAGIC)?;
    file.write_all(&(json.len() as u32).to_le_bytes())?;
    file.write_all(&json)?;
    file.write_all(body)?;
    drop(file);
    std::fs::rename(&tmp, path)
}

/// Reads only the header of a cache file: its fields and the body's length.
fn read_header(path: &Path) -> std::io::Result<Option<(FileHeader, u64)>> {
    let mut file = std::fs::File::open(path)?;
    let total = file.metadata()?.len();
    let mut head = vec![0u8; (MAGIC.len() + 4 + MAX_HEADER).min(total as usize)];
    file.read_exact(&mut head)?;
    Ok(parse_header(&head).map(|(h, at)| (h, total - at as u64)))
}

fn parse_header(bytes: &[u8]) -> Option<(FileHeader, usize)> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    if len > MAX_HEADER {
        return None;
    }
    let header = serde_json::from_slice(rest.get(4..4 + len)?).ok()?;
    Some((header, MAGIC.len() + 4 + len))
}

fn parse_file(bytes: Bytes) -> Option<(FileHeader, Bytes)> {
    let (header, at) = parse_header(&bytes)?;
    Some((header, bytes.slice(at..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(body: &'static [u8]) -> Arc<CachedObject> {
        object_of(ObjectKind::Segment, body)
    }

    fn object_of(kind: ObjectKind, body: &'static [u8]) -> Arc<CachedObject> {
        Arc::new(CachedObject {
            status: StatusCode::OK,
            content_type: Some(HeaderValue::from_static("video/mp4")),
            cache_control: Some(HeaderValue::from_static("max-age=60")),
            body: Bytes::from_static(body),
            kind,
            born: tokio::time::Instant::now(),
            ttl: Duration::from_secs(60),
            validators: Validators::default(),
            invalidated: Default::default(),
        })
    }

    async fn settle(cache: &DiskCache, key: &str) {
        for _ in 0..100 {
            if cache.index.contains_key(key) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn survives_restart_and_rejects_damage() {
        let dir = std::env::temp_dir().join(format!("streamcdn-disk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = DiskCache::open(&dir, 1 << 20).unwrap();
        cache.store("/p/s/r/1.m4s", &object(b"segment-one"), || true);
        cache.store("/p/s/r/2.m4s", &object(b"segment-two"), || true);
        settle(&cache, "/p/s/r/1.m4s").await;
        settle(&cache, "/p/s/r/2.m4s").await;
        let got = cache.load("/p/s/r/1.m4s").await.unwrap();
        assert_eq!(&got.body[..], b"segment-one");
        drop(cache);

        // A truncated file and a stray temp are dropped on restart; the rest is kept.
        let damaged = DiskCache::open(&dir, 1 << 20)
            .unwrap()
            .file_for("/p/s/r/2.m4s");
        std::fs::write(&damaged, b"SCDN1\n\xff").unwrap();
        std::fs::write(damaged.with_extension("tmp"), b"partial").unwrap();
        let cache = DiskCache::open(&dir, 1 << 20).unwrap();
        assert_eq!(
            &cache.load("/p/s/r/1.m4s").await.unwrap().body[..],
            b"segment-one"
        );
        assert!(cache.load("/p/s/r/2.m4s").await.is_none());
        assert!(!damaged.exists() && !damaged.with_extension("tmp").exists());
    }

    #[tokio::test]
    async fn size_bound_evicts_files() {
        let dir = std::env::temp_dir().join(format!("streamcdn-disk-evict-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = DiskCache::open(&dir, 64).unwrap();
        for n in 0..20 {
            let key = format!("/p/s/r/{n}.m4s");
            cache.store(&key, &object(b"0123456789abcdef"), || true);
            settle(&cache, &key).await;
        }
        assert!(cache.bytes() <= 64, "{}", cache.bytes());
        let files = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
            .count();
        assert!(files <= 5, "{files} files left on disk");
    }

    /// Parts live in memory only: not written, and a part's file (from a build that
    /// wrote them) is not indexed again on start.
    #[tokio::test]
    async fn parts_never_reach_the_disk() {
        let dir = std::env::temp_dir().join(format!("streamcdn-disk-parts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = DiskCache::open(&dir, 1 << 20).unwrap();
        cache.store("/p/s/r/000001.m4s", &object(b"segment"), || true);
        cache.store(
            "/p/s/r/000002.0.m4s",
            &object_of(ObjectKind::Part, b"part"),
            || true,
        );
        settle(&cache, "/p/s/r/000001.m4s").await;
        // Both stores ran on the blocking pool; the segment's is done, give the part's
        // the same time.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(cache.keys(), ["/p/s/r/000001.m4s"]);
        let part_file = cache.file_for("/p/s/r/000002.0.m4s");
        assert!(!part_file.exists());
        // A part written by an older build.
        let header = FileHeader {
            key: "/p/s/r/000002.0.m4s".into(),
            content_type: None,
            cache_control: None,
            fresh_until: now_secs() + 60,
        };
        write_file(&part_file, &header, b"part").unwrap();
        drop(cache);
        let cache = DiskCache::open(&dir, 1 << 20).unwrap();
        assert_eq!(cache.keys(), ["/p/s/r/000001.m4s"]);
        assert!(cache.load("/p/s/r/000002.0.m4s").await.is_none());
        assert!(!part_file.exists(), "the part's file was not removed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
