//! streamcdn configuration: one TOML file, every field defaulted, validated at load with
//! errors that name the file, line, column and key.
//!
//! This crate knows nothing of servers: it only turns text into checked values. Each
//! top-level section has a module of its own with its types, their defaults and its
//! checks; this file composes them into [`Config`], loads it, and reports errors.

mod admin;
mod archive;
mod checks;
mod configurations;
mod edge;
mod federation;
mod hls;
mod http;
mod humantime_serde;
mod log;
mod node;
mod origin;
mod providers;
mod registry;
mod router;
mod rtmp;
mod srt;
mod units;
mod webrtc;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use admin::{AdminConfig, AdminRole, AdminTokenConfig};
pub use archive::{ArchiveConfig, ArchiveStore, S3Config};
pub use configurations::ConfigurationConfig;
pub use edge::{EdgeConfig, EdgeTier};
pub use federation::{FederationConfig, PartnerConfig};
pub use hls::{HlsConfig, SegmentFormat};
pub use http::HttpConfig;
pub use log::{LogConfig, LogFormat};
pub use node::NodeConfig;
pub use origin::OriginConfig;
pub use providers::{
    hook_url_problem, stream_key_problem, HooksConfig, ProviderConfig, DEFAULT_RECONNECT_WINDOW,
};
pub use registry::{RegistryBackend, RegistryConfig};
pub use router::{NameserverConfig, RouterConfig, RoutingWeights, RumConfig};
pub use rtmp::RtmpConfig;
pub use srt::{SrtConfig, SRT_PASSPHRASE_LEN};
pub use units::{ByteSize, Listen};
pub use webrtc::WebRtcConfig;

#[derive(Debug, Error)]
#[error("{}:{line}:{column}: {}{message}", file.display(), key.as_ref().map(|k| format!("`{k}`: ")).unwrap_or_default())]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Dotted path of the offending key, when there is one.
    pub key: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeConfig,
    pub rtmp: RtmpConfig,
    pub srt: SrtConfig,
    pub webrtc: WebRtcConfig,
    pub origin: OriginConfig,
    pub http: HttpConfig,
    pub admin: AdminConfig,
    pub hls: HlsConfig,
    pub edge: EdgeConfig,
    pub registry: RegistryConfig,
    pub archive: ArchiveConfig,
    pub router: RouterConfig,
    pub providers: Vec<ProviderConfig>,
    pub federation: FederationConfig,
    /// Delivery properties this participant owns besides its default configuration
    /// (which covers every other hostname it is reached by).
    pub configurations: Vec<ConfigurationConfig>,
    pub log: LogConfig,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            line: 0,
            column: 0,
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates; `file` is only used in error messages.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let at = |offset: usize, key: Option<String>, message: String| {
            let before = &text[..offset.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            ConfigError {
                file: file.to_owned(),
                line,
                column,
                key,
                message,
            }
        };
        let deserializer = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let offset = inner.span().map_or(0, |s| s.start);
            at(
                offset,
                (key != ".").then_some(key),
                inner.message().to_owned(),
            )
        })?;
        config
            .validate()
            .map_err(|(key, message)| at(key_offset(text, &key), Some(key), message))?;
        Ok(config)
    }

    /// Checks what types alone cannot, section by section; returns the offending key and
    /// why. No check spans two sections.
    pub fn validate(&self) -> Result<(), (String, String)> {
        self.hls.validate()?;
        self.rtmp.validate()?;
        self.srt.validate()?;
        self.webrtc.validate()?;
        self.edge.validate()?;
        self.origin.validate()?;
        self.http.validate()?;
        self.node.validate()?;
        self.registry.validate()?;
        self.archive.validate()?;
        self.federation.validate()?;
        configurations::validate(&self.configurations)?;
        self.admin.validate()?;
        self.router.validate()?;
        providers::validate(&self.providers)
    }

    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.name == name)
    }
}

/// Byte offset of the value for a dotted key such as `hls.live_window`,
/// `providers[1].name` or `providers[0].hooks.timeout`, found textually; 0 when not
/// present (a default value). A key written as a table header (`[providers.hooks]`), an
/// inline table (`hooks = { ... }`) or a dotted key (`hooks.timeout = ...`) is found too.
fn key_offset(text: &str, key: &str) -> usize {
    let parts = split_key(key);
    let target: Vec<String> = parts.iter().map(|(name, _)| name.clone()).collect();
    // The array of tables the key is in (`providers` for `providers[1].name`), and which.
    let (array, wanted_index) = match parts.iter().rposition(|(_, index)| index.is_some()) {
        Some(at) => (target[..=at].to_vec(), parts[at].1),
        None => (Vec::new(), None),
    };
    let mut table_occurrence = 0usize;
    let mut header: Vec<String> = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        let in_wanted_table = || wanted_index.is_none_or(|i| table_occurrence == i + 1);
        if let Some(name) = trimmed
            .strip_prefix("[[")
            .and_then(|l| l.strip_suffix("]]"))
        {
            header = split_key(name).into_iter().map(|(n, _)| n).collect();
            if header == array {
                table_occurrence += 1;
            }
        } else if let Some(name) = trimmed.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            header = split_key(name).into_iter().map(|(n, _)| n).collect();
            if header == target && in_wanted_table() {
                return offset + line.len() - line.trim_start().len();
            }
        } else if let Some((k, _)) = trimmed
            .split_once('=')
            .filter(|_| !trimmed.starts_with('#'))
        {
            let full: Vec<String> = header
                .iter()
                .cloned()
                .chain(split_key(k.trim()).into_iter().map(|(n, _)| n))
                .collect();
            if in_wanted_table() && full.len() > header.len() && target.starts_with(&full[..]) {
                return offset + line.find('=').map_or(0, |i| i + 1) + 1;
            }
        }
        offset += line.len();
    }
    0
}

/// `providers[1].hooks."on publish"` → `[("providers", Some(1)), ("hooks", None),
/// ("on publish", None)]`: dots inside quotes do not split, quotes are removed.
fn split_key(key: &str) -> Vec<(String, Option<usize>)> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in key.chars().chain(std::iter::once('.')) {
        match c {
            '"' => quoted = !quoted,
            '.' if !quoted => {
                let part = std::mem::take(&mut current);
                let part = part.trim();
                let (name, index) = match part.strip_suffix(']').and_then(|p| p.split_once('[')) {
                    Some((name, index)) => (name, index.parse::<usize>().ok()),
                    None => (part, None),
                };
                parts.push((name.to_owned(), index));
            }
            c => current.push(c),
        }
    }
    parts
}

#[cfg(test)]
mod tests;
