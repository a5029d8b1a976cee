//! `[archive]`: on-demand storage (a local directory or S3) and the archiver's pace.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::checks::Invalid;
use crate::humantime_serde;
use crate::units::ByteSize;

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveStore {
    /// A local directory (`archive.dir`).
    #[default]
    Local,
    /// S3-compatible storage (`[archive.s3]`).
    S3,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    pub bucket: String,
    pub region: String,
    /// `http(s)://host:port` of an S3-compatible server; AWS when unset.
    pub endpoint: Option<String>,
    /// Bucket in the path (most S3-compatible servers) rather than the host name.
    pub path_style: bool,
    /// Credentials; from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY when unset.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    pub store: ArchiveStore,
    /// The local store's directory; defaults to `<node.data_dir>/archive`.
    pub dir: Option<PathBuf>,
    pub s3: S3Config,
    /// `archive_after` of providers that set none.
    #[serde(with = "humantime_serde")]
    pub default_after: Duration,
    /// The local copy is removed this long after the archive is verified.
    #[serde(with = "humantime_serde")]
    pub local_retention: Duration,
    /// Objects uploaded at once.
    pub concurrency: usize,
    /// Upload rate cap per second ("0": none).
    pub max_rate: ByteSize,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            store: ArchiveStore::Local,
            dir: None,
            s3: S3Config {
                region: "us-east-1".into(),
                path_style: true,
                ..S3Config::default()
            },
            default_after: Duration::from_secs(300),
            local_retention: Duration::ZERO,
            concurrency: 8,
            max_rate: ByteSize(0),
        }
    }
}

impl ArchiveConfig {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if self.store == ArchiveStore::S3 && self.s3.bucket.is_empty() {
            return Err((
                "archive.s3.bucket".into(),
                "is required when archive.store = \"s3\"".into(),
            ));
        }
        if let Some(endpoint) = &self.s3.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err((
                    "archive.s3.endpoint".into(),
                    format!("{endpoint:?} is not an http(s):// URL"),
                ));
            }
        }
        if !(1..=256).contains(&self.concurrency) {
            return Err((
                "archive.concurrency".into(),
                "must be between 1 and 256".into(),
            ));
        }
        Ok(())
    }
}
