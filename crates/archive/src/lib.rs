//! On-demand storage for finished recordings, through `object_store`: a local
//! directory (the default) or S3-compatible storage.
//!
//! Uploads are resumable and verified. An object's key is fixed by its name, so a
//! retried or resumed upload overwrites the same key and never leaves a second copy; an
//! object already present with the right size and checksum is not sent again. Every
//! object is verified after upload (size, and the checksum: the S3 ETag of a single
//! PUT is the body's MD5, other stores are read back and hashed). A completion marker
//! is written last: a recording without it is never treated as archived.
//!
//! This crate knows objects and keys, not recordings: the caller decides what a
//! recording's objects are.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use object_store::path::Path as Key;
use object_store::{ObjectStore, PutPayload};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The marker written after every other object of a prefix is stored and verified.
pub const COMPLETE_MARKER: &str = "_complete.json";

#[derive(Debug, Clone)]
pub enum StoreSettings {
    Local {
        dir: PathBuf,
    },
    S3 {
        bucket: String,
        region: String,
        /// `http(s)://host:port` of an S3-compatible server; AWS when `None`.
        endpoint: Option<String>,
        /// `bucket` in the path rather than the host name.
        path_style: bool,
        /// From the environment (`AWS_ACCESS_KEY_ID`, ...) when `None`.
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
    },
}

#[derive(Debug, Error)]
pub enum ArchiveError {
    #[error("storage: {0}")]
    Store(#[from] object_store::Error),
    #[error("cannot read {}: {error}", path.display())]
    Local {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{key}: stored object does not match ({why})")]
    Mismatch { key: String, why: String },
    #[error("invalid storage settings: {0}")]
    Settings(String),
}

pub type Result<T> = std::result::Result<T, ArchiveError>;

#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// Objects in flight at once.
    pub concurrency: usize,
    /// Upload rate cap in bytes per second, over all objects; `None`: no cap.
    pub max_bytes_per_sec: Option<u64>,
    /// Attempts per object before the upload fails (and is retried later as a whole).
    pub attempts: u32,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            concurrency: 8,
            max_bytes_per_sec: None,
            attempts: 5,
        }
    }
}

/// An object as stored and verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredObject {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
    /// Whether it was already there, verified, from an earlier attempt.
    #[serde(skip)]
    pub reused: bool,
}

/// The on-demand store; cheap to clone.
#[derive(Clone)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    description: String,
    /// `file:///dir` or `s3://bucket`: where keys are, as a URL.
    location: String,
    pacer: Arc<Mutex<Instant>>,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Archive({})", self.description)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

fn md5_hex(data: &[u8]) -> String {
    hex(&Md5::digest(data))
}

fn key(prefix: &str, name: &str) -> Result<Key> {
    Key::parse(format!("{prefix}/{name}"))
        .map_err(|e| ArchiveError::Settings(format!("invalid object key {prefix}/{name}: {e}")))
}

impl Archive {
    pub fn open(settings: &StoreSettings) -> Result<Self> {
        let (store, description, location): (Arc<dyn ObjectStore>, String, String) = match settings
        {
            StoreSettings::Local { dir } => {
                std::fs::create_dir_all(dir).map_err(|error| ArchiveError::Local {
                    path: dir.clone(),
                    error,
                })?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(dir)?;
                let absolute = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
                (
                    Arc::new(store),
                    format!("directory {}", dir.display()),
                    format!("file://{}", absolute.display()),
                )
            }
            StoreSettings::S3 {
                bucket,
                region,
                endpoint,
                path_style,
                access_key_id,
                secret_access_key,
            } => {
                let mut builder = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_region(region)
                    .with_virtual_hosted_style_request(!path_style);
                if let Some(endpoint) = endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                if let (Some(id), Some(secret)) = (access_key_id, secret_access_key) {
                    builder = builder
                        .with_access_key_id(id)
                        .with_secret_access_key(secret);
                }
                let store = builder.build()?;
                let at = endpoint.as_deref().unwrap_or("AWS");
                (
                    Arc::new(store),
                    format!("s3 bucket {bucket} at {at}"),
                    format!("s3://{bucket}"),
                )
            }
        };
        Ok(Self {
            store,
            description,
            location,
            pacer: Arc::new(Mutex::new(Instant::now())),
        })
    }

    /// Where the objects under `prefix` are, as a URL ending in `/`: `file:///dir/<prefix>/`
    /// or `s3://bucket/<prefix>/`.
    pub fn url(&self, prefix: &str) -> String {
        format!("{}/{}/", self.location, prefix.trim_matches('/'))
    }

    /// An object's bytes; `None` if there is no such object.
    pub async fn get(&self, key_text: &str) -> Result<Option<Bytes>> {
        let key = Key::parse(key_text)
            .map_err(|e| ArchiveError::Settings(format!("invalid object key {key_text}: {e}")))?;
        match self.store.get(&key).await {
            Ok(result) => Ok(Some(result.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether every object under `prefix` was stored, verified and marked complete.
    pub async fn is_complete(&self, prefix: &str) -> Result<bool> {
        match self.store.head(&key(prefix, COMPLETE_MARKER)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Every object under `prefix` (names relative to it; `""`: every object), for
    /// checks and listings.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let root = Key::parse(prefix)
            .map_err(|e| ArchiveError::Settings(format!("invalid prefix {prefix}: {e}")))?;
        let objects: Vec<_> = self.store.list(Some(&root)).try_collect().await?;
        let mut names: Vec<(String, u64)> = objects
            .into_iter()
            .filter_map(|m| {
                let full = m.location.to_string();
                let name = if prefix.is_empty() {
                    full
                } else {
                    full.strip_prefix(&format!("{prefix}/"))?.to_owned()
                };
                Some((name, m.size))
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// Uploads local files under `prefix` (bounded concurrency, retries with backoff,
    /// the rate cap), verifying each; files already stored intact are not sent again.
    pub async fn upload_files(
        &self,
        prefix: &str,
        files: &[(String, PathBuf)],
        options: &UploadOptions,
    ) -> Result<Vec<StoredObject>> {
        // Collected, not left as an iterator: a lazy `map` closure in the future's type
        // keeps it from being `Send` for every lifetime (rust-lang/rust#102211).
        let uploads: Vec<_> = files
            .iter()
            .map(|(name, path)| self.upload_file(prefix, name, path, options))
            .collect();
        let mut stored: Vec<StoredObject> = stream::iter(uploads)
            .buffer_unordered(options.concurrency.max(1))
            .try_collect()
            .await?;
        stored.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(stored)
    }

    async fn upload_file(
        &self,
        prefix: &str,
        name: &str,
        path: &PathBuf,
        options: &UploadOptions,
    ) -> Result<StoredObject> {
        let data = tokio::fs::read(path)
            .await
            .map_err(|error| ArchiveError::Local {
                path: path.clone(),
                error,
            })?;
        self.put_verified(prefix, name, Bytes::from(data), options)
            .await
    }

    /// Stores one object under `prefix` unless it is already there intact, then
    /// verifies it.
    pub async fn put_verified(
        &self,
        prefix: &str,
        name: &str,
        data: Bytes,
        options: &UploadOptions,
    ) -> Result<StoredObject> {
        let key = key(prefix, name)?;
        let (md5, sha) = (md5_hex(&data), sha256(&data));
        let object = |reused| StoredObject {
            name: name.to_owned(),
            bytes: data.len() as u64,
            sha256: sha.clone(),
            reused,
        };
        if self.verify(&key, &data, &md5, &sha).await.is_ok() {
            metrics::counter!("streamcdn_archive_objects_reused_total").increment(1);
            return Ok(object(true));
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.pace(data.len() as u64, options.max_bytes_per_sec)
                .await;
            let outcome = match self
                .store
                .put(&key, PutPayload::from_bytes(data.clone()))
                .await
            {
                Ok(_) => self.verify(&key, &data, &md5, &sha).await,
                Err(e) => Err(e.into()),
            };
            match outcome {
                Ok(()) => {
                    metrics::counter!("streamcdn_archive_objects_total").increment(1);
                    metrics::counter!("streamcdn_archive_bytes_total").increment(data.len() as u64);
                    return Ok(object(false));
                }
                Err(e) if attempt < options.attempts.max(1) => {
                    metrics::counter!("streamcdn_archive_retries_total").increment(1);
                    let backoff = Duration::from_millis(200 * 2u64.pow(attempt.min(5)))
                        .min(Duration::from_secs(5));
                    tracing::warn!(%key, attempt, error = %e, ?backoff, "upload failed; retrying");
                    tokio::time::sleep(backoff).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Checks a stored object against the bytes it must hold.
    async fn verify(&self, key: &Key, data: &Bytes, md5: &str, sha: &str) -> Result<()> {
        let meta = self.store.head(key).await?;
        let mismatch = |why: String| ArchiveError::Mismatch {
            key: key.to_string(),
            why,
        };
        if meta.size != data.len() as u64 {
            return Err(mismatch(format!(
                "{} bytes, expected {}",
                meta.size,
                data.len()
            )));
        }
        let etag = meta
            .e_tag
            .as_deref()
            .map(|t| t.trim_matches('"').to_ascii_lowercase());
        if etag.as_deref() == Some(md5) {
            return Ok(());
        }
        // Not an S3 single-part ETag: read the object back.
        let stored = self.store.get(key).await?.bytes().await?;
        if sha256(&stored) != sha {
            return Err(mismatch("checksum differs".into()));
        }
        Ok(())
    }

    /// Writes the completion marker, the last object of a prefix.
    pub async fn complete(
        &self,
        prefix: &str,
        manifest: Bytes,
        options: &UploadOptions,
    ) -> Result<()> {
        self.put_verified(prefix, COMPLETE_MARKER, manifest, options)
            .await
            .map(drop)
    }

    /// Holds an upload of `bytes` until the rate cap allows it.
    async fn pace(&self, bytes: u64, max_bytes_per_sec: Option<u64>) {
        let Some(rate) = max_bytes_per_sec.filter(|r| *r > 0) else {
            return;
        };
        let start = {
            let mut next = self.pacer.lock().unwrap_or_else(|e| e.into_inner());
            let start = (*next).max(Instant::now());
            *next = start + Duration::from_secs_f64(bytes as f64 / rate as f64);
            start
        };
        tokio::time::sleep_until(start.into()).await;
    }
}
