//! streamcdn configuration: one TOML file, every field defaulted, validated at load with
//! errors that name the file, line, column and key.
//!
//! This crate knows nothing of servers: it only turns text into checked values.

mod units;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use streamcdn_cdni::CdnPid;
use thiserror::Error;

pub use units::{ByteSize, Listen};

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
}

/// This deployment as a participant of a CDN federation (CDNI): its id, the mutual-TLS
/// listener partners send configurations and RFC 8007 trigger commands to, and the
/// partners it delegates to.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// This participant's CDN PID (RFC 8007 §4.6): `AS<number>:<qualifier>`. Its
    /// certificate's subject common name must be this id.
    pub participant: CdnPid,
    /// The federation listener (HTTPS, client certificates required); `"off"` turns it
    /// off.
    pub listen: Listen,
    /// PEM certificate (naming `participant`) and key, used both to serve and to call
    /// partners, and the CA certificates partners' certificates must chain to. None
    /// set: a CA and a certificate generated once in `<node.data_dir>/federation/`
    /// (partners then need that CA).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    /// Which of our servers carry partners' configurations: node ids or sites. Empty:
    /// every edge.
    pub carry_on: Vec<String>,
    pub partners: Vec<PartnerConfig>,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            participant: CdnPid {
                asn: 64496,
                qualifier: 1,
            },
            listen: Listen::At(([0, 0, 0, 0], 9443).into()),
            cert: None,
            key: None,
            ca: None,
            carry_on: Vec::new(),
            partners: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerConfig {
    pub id: CdnPid,
    /// The partner's federation listener, `https://host:port`.
    pub url: String,
    /// Configurations (ours, or ones we carry for their owner) we delegate to it.
    #[serde(default)]
    pub delegate: Vec<String>,
}

/// A configuration this participant owns.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigurationConfig {
    pub id: String,
    /// The hostnames viewers use for it.
    pub hostnames: Vec<String>,
    /// Where partners' edges fetch it from (our top tier); default `http.advertise`.
    #[serde(default)]
    pub origin: Option<String>,
    /// Cache rule for partners' caches (RFC 8006 `MI.CachePolicy` `internal`): no
    /// object stays fresh longer there, whatever its `Cache-Control`.
    #[serde(default, with = "humantime_serde::option")]
    pub max_ttl: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Recordings, journals and generated state live here.
    pub data_dir: PathBuf,
    /// Time allowed on shutdown for in-flight segments and requests.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// This server's name in the registry; defaults to its origin's `host:port`.
    pub id: Option<String>,
    /// Ingest servers that share `data_dir` (one directory or a shared mount) form a
    /// cluster: any of them serves any recording of the cluster.
    pub cluster: String,
    /// Where this server is (a point of presence), announced in the node directory for
    /// routing viewers; defaults to `cluster`.
    pub site: Option<String>,
}

impl NodeConfig {
    pub fn site(&self) -> &str {
        self.site.as_deref().unwrap_or(&self.cluster)
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            shutdown_grace: Duration::from_secs(10),
            id: None,
            cluster: "default".into(),
            site: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtmpConfig {
    pub listen: SocketAddr,
    /// RTMPS (RTMP over TLS, as OBS's `rtmps://`): `"host:port"` or `"off"`. Uses the
    /// playback listener's certificate (`http.tls_cert`/`tls_key`, or the generated one).
    pub tls_listen: Listen,
    pub max_connections: usize,
    /// Largest RTMP message accepted (a video frame is one message).
    pub max_message_size: ByteSize,
    /// A connection that sends nothing for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A publisher's socket is read at most this often: data arriving meanwhile is read
    /// at once, for fewer wake-ups per stream at the cost of at most this much latency.
    /// `"0s"` reads as soon as data arrives.
    #[serde(with = "humantime_serde")]
    pub read_interval: Duration,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        Self {
            listen: ([0, 0, 0, 0], 1935).into(),
            tls_listen: Listen::At(([0, 0, 0, 0], 1936).into()),
            max_connections: 1000,
            max_message_size: ByteSize(8 * 1024 * 1024),
            idle_timeout: Duration::from_secs(10),
            read_interval: Duration::from_millis(20),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OriginConfig {
    /// Where the ingest serves its streams over HTTP to edges.
    pub listen: SocketAddr,
    /// The URL edges reach this origin at, announced in the registry. Defaults to
    /// `http://<listen>`; required when `listen` is a wildcard address.
    pub advertise: Option<String>,
}

impl Default for OriginConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8088).into(),
            advertise: None,
        }
    }
}

impl OriginConfig {
    /// The announced URL, without a trailing slash; `None` when it cannot be derived.
    pub fn advertised_url(&self) -> Option<String> {
        match &self.advertise {
            Some(url) => Some(url.trim_end_matches('/').to_owned()),
            None if self.listen.ip().is_unspecified() => None,
            None => Some(format!("http://{}", self.listen)),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Playback for viewers (the edge cache).
    pub listen: SocketAddr,
    /// Largest request head accepted; larger ones get 431.
    pub max_header_size: ByteSize,
    /// The URL viewers and lower tiers reach this listener at, announced in the node
    /// directory. Defaults to `http://<listen>` unless listen is unspecified (0.0.0.0).
    pub advertise: Option<String>,
    /// Playback over HTTPS (HTTP/2 and HTTP/1.1), the same routes as `listen`; `"off"`
    /// turns it off.
    pub tls_listen: Listen,
    /// PEM certificate chain (leaf first) and private key for `tls_listen`, reloaded
    /// when the files change. Neither set: a self-signed certificate generated once in
    /// `<node.data_dir>/tls/`.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl HttpConfig {
    /// The announced playback URL, without a trailing slash; `None` when it cannot be
    /// derived.
    pub fn advertised_url(&self) -> Option<String> {
        match &self.advertise {
            Some(url) => Some(url.trim_end_matches('/').to_owned()),
            None if self.listen.ip().is_unspecified() => None,
            None => Some(format!("http://{}", self.listen)),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: ([0, 0, 0, 0], 8080).into(),
            max_header_size: ByteSize(16 * 1024),
            advertise: None,
            tls_listen: Listen::At(([0, 0, 0, 0], 8443).into()),
            tls_cert: None,
            tls_key: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// REST admin API and Prometheus `/metrics`.
    pub listen: SocketAddr,
    /// Bearer tokens (`Authorization: Bearer <token>`). None: the API is open, which is
    /// allowed only on a loopback address (`up` generates one in
    /// `<node.data_dir>/admin-token`).
    pub tokens: Vec<AdminTokenConfig>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8081).into(),
            tokens: Vec::new(),
        }
    }
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTokenConfig {
    pub token: String,
    /// `admin` (everything) or `read` (GET and HEAD only).
    #[serde(default)]
    pub role: AdminRole,
    /// Scoped to one provider: its settings, keys and signed URLs, and its streams and
    /// recordings in the lists.
    #[serde(default)]
    pub provider: Option<String>,
}

impl std::fmt::Debug for AdminTokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself: configurations get logged.
        f.debug_struct("AdminTokenConfig")
            .field("role", &self.role)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AdminRole {
    #[default]
    Admin,
    Read,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SegmentFormat {
    /// CMAF fragmented MP4 (`init.mp4` + `.m4s`).
    #[default]
    Fmp4,
    /// MPEG-2 transport stream (`.ts`).
    Ts,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HlsConfig {
    /// Segments are cut on the first keyframe at or near this duration.
    #[serde(with = "humantime_serde")]
    pub segment_duration: Duration,
    /// Segments in the live playlist's sliding window.
    pub live_window: usize,
    pub format: SegmentFormat,
    /// The part target of Low-Latency HLS: segments are muxed and written in parts of at
    /// most this long, and fMP4 streams list them (`EXT-X-PART`). 334ms holds ten frames
    /// at 30 fps exactly.
    #[serde(with = "humantime_serde")]
    pub part_duration: Duration,
}

impl Default for HlsConfig {
    fn default() -> Self {
        Self {
            segment_duration: Duration::from_secs(2),
            live_window: 6,
            format: SegmentFormat::Fmp4,
            part_duration: Duration::from_millis(334),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// Parent caches (mid-tier), as `http://host:port`. Each URL goes to the parent
    /// chosen by rendezvous hashing, then the next on failure. Empty: this is the top
    /// tier, which finds each stream's ingest through the registry.
    pub parents: Vec<String>,
    /// Bound on the memory cache (bodies and keys).
    pub cache_memory: ByteSize,
    /// Bound on the disk cache of segments; 0 turns it off.
    pub cache_disk: ByteSize,
    /// Where the disk cache lives; defaults to `<node.data_dir>/cache`.
    pub cache_dir: Option<PathBuf>,
    /// How long past its freshness a playlist may still be served when the upstream
    /// fails (stale-if-error); 0 turns it off.
    #[serde(with = "humantime_serde")]
    pub stale_if_error: Duration,
    /// Largest object the edge caches; larger ones are streamed through.
    pub max_object_size: ByteSize,
    /// Upstream request timeout. Requests an upstream holds (LL-HLS blocking playlist
    /// reloads, parts) may take at least 40s, longer than an origin holds them.
    #[serde(with = "humantime_serde")]
    pub upstream_timeout: Duration,
    /// Speak HTTP/2 with prior knowledge (h2c) to `parents` or, at the top tier, to the
    /// ingest origins: one connection per upstream multiplexes every request, held
    /// LL-HLS requests included. Every streamcdn listener accepts it; another server
    /// named in `parents` must too.
    pub upstream_http2: bool,
    /// `edge` serves viewers (request routers send them here); `mid` serves only the
    /// tiers below it.
    pub tier: EdgeTier,
    /// Viewer connections this edge can take, announced in the node directory: request
    /// routers send it fewer new viewers near it and none above it. 0: not stated (the
    /// router's `edge_capacity` applies).
    pub capacity: u64,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum EdgeTier {
    #[default]
    Edge,
    Mid,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            parents: Vec::new(),
            cache_memory: ByteSize(256 * 1024 * 1024),
            cache_disk: ByteSize(4 * 1024 * 1024 * 1024),
            cache_dir: None,
            stale_if_error: Duration::from_secs(10),
            max_object_size: ByteSize(32 * 1024 * 1024),
            upstream_timeout: Duration::from_secs(10),
            upstream_http2: false,
            tier: EdgeTier::Edge,
            capacity: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RegistryBackend {
    /// In-process: for `up`, where every role runs in one process.
    #[default]
    Memory,
    /// Shared by every ingest server and edge of a deployment.
    Redis,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    pub backend: RegistryBackend,
    /// `redis://host:port/db` for the Redis backend.
    pub url: String,
    /// Prefix of every key, so deployments can share a Redis server.
    pub namespace: String,
    /// How long an announcement lives unless refreshed; servers refresh at a third.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            backend: RegistryBackend::Memory,
            url: "redis://127.0.0.1:6379/".into(),
            namespace: "streamcdn".into(),
            lease: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// First path segment of publish and play URLs.
    pub name: String,
    /// Publishers present it as `?key=<stream_key>`.
    pub stream_key: String,
    /// Overrides `hls.format` for this provider's streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<SegmentFormat>,
    /// Low-Latency HLS for the provider's fMP4 streams (parts, blocking reload, preload
    /// hints in the live playlist). MPEG-TS streams are always plain HLS.
    #[serde(default = "enabled")]
    pub low_latency: bool,
    /// How long after a stream ends its recording moves to on-demand storage
    /// (`archive.default_after` when unset). A publisher reconnecting within it
    /// continues the same recording. The provider may change it through the API.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub archive_after: Option<Duration>,
    /// Signed playback URLs (`/t/<token>/<provider>/...`): with keys, every playback
    /// request for this provider needs a token signed with one of them (the first signs
    /// new URLs; a second stays valid while rotating). None: playback is open.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub playback_keys: Vec<String>,
    /// Keys that open one stream each (stream name → key), besides `stream_key`, which
    /// opens every stream of the provider. Changed at runtime through the providers' API.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stream_keys: BTreeMap<String, String>,
    /// HTTP callbacks on the provider's publishes and recordings (`[providers.hooks]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<HooksConfig>,
}

fn enabled() -> bool {
    true
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            stream_key: String::new(),
            format: None,
            low_latency: true,
            archive_after: None,
            playback_keys: Vec::new(),
            stream_keys: BTreeMap::new(),
            hooks: None,
        }
    }
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys: configurations end up in logs and panics.
        f.debug_struct("ProviderConfig")
            .field("name", &self.name)
            .field("format", &self.format)
            .field("low_latency", &self.low_latency)
            .field("archive_after", &self.archive_after)
            .field("playback_keys", &self.playback_keys.len())
            .field("stream_keys", &self.stream_keys.keys().collect::<Vec<_>>())
            .field("hooks", &self.hooks)
            .finish_non_exhaustive()
    }
}

/// A provider's HTTP callbacks: a JSON `POST` to each URL set. `on_publish` decides
/// whether a publisher may go live; the others are notifications, retried with backoff.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HooksConfig {
    /// Asked before a publisher goes live: a 2xx allows it (unless its JSON body says
    /// `"allow": false`), anything else refuses it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_publish: Option<String>,
    /// A publisher has gone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_unpublish: Option<String>,
    /// A publisher's recording is ended and durable on the ingest's storage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_recording_ended: Option<String>,
    /// A recording is archived and verified in on-demand storage (once per recording).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_archived: Option<String>,
    /// How long one call may take (connecting, answering, the body).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Further attempts of a notification that failed (with backoff); `on_publish` is
    /// asked once.
    pub retries: u32,
    /// `on_publish` not answering within `timeout` (or unreachable) refuses the
    /// publisher (`true`) or lets it go live (`false`).
    pub deny_on_timeout: bool,
}

impl Default for HooksConfig {
    fn default() -> Self {
        Self {
            on_publish: None,
            on_unpublish: None,
            on_recording_ended: None,
            on_archived: None,
            timeout: Duration::from_secs(2),
            retries: 2,
            deny_on_timeout: true,
        }
    }
}

impl HooksConfig {
    /// Every URL set, with its key below `[providers.hooks]`.
    pub fn urls(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("on_publish", &self.on_publish),
            ("on_unpublish", &self.on_unpublish),
            ("on_recording_ended", &self.on_recording_ended),
            ("on_archived", &self.on_archived),
        ]
        .into_iter()
        .filter_map(|(key, url)| Some((key, url.as_deref()?)))
    }
}

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

/// The request router: authoritative DNS for the delivery zone, and HTTP redirects.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// The zone delegated to the router.
    pub zone: String,
    /// The name viewers resolve (in `zone`); answered with the chosen edge(s).
    pub delivery: String,
    /// DNS over UDP and TCP (53 in production).
    pub dns_listen: SocketAddr,
    /// HTTP redirect mode: any playback URL answers 302 to the chosen edge. Also
    /// measurement jobs and beacons for browsers.
    pub http_listen: SocketAddr,
    /// The URL browsers reach `http_listen` at, announced in the node directory (edges
    /// put it in their player pages). Default: `http://<http_listen>`, or when that is
    /// 0.0.0.0, the host of `http.advertise` with `http_listen`'s port.
    pub advertise: Option<String>,
    /// TTL of the delivery name's answers.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// The zone's name servers and their addresses (glue). Default: `ns1.<zone>` at the
    /// DNS listener's address (loopback when it listens on 0.0.0.0).
    pub nameservers: Vec<NameserverConfig>,
    /// Viewer connections an edge should hold when it does not state its own
    /// (`edge.capacity`); edges near it get fewer new viewers. 0: unknown (never demoted).
    pub edge_capacity: u64,
    /// How often the router checks each edge itself.
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
    /// A prefix's measurements are renewed (edges probe again) once the newest is this
    /// old: how soon answers follow a change in the network.
    #[serde(with = "humantime_serde")]
    pub reprobe_after: Duration,
    /// Fallback until measurements exist: client CIDR → site, longest match wins.
    pub static_map: std::collections::BTreeMap<String, String>,
    /// How much each measurement source counts in an edge's score.
    pub weights: RoutingWeights,
    /// Real-user measurement: browsers' download times from beacons.
    pub rum: RumConfig,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingWeights {
    /// The edges' probes and the passive RTT of viewer connections (ms × weight).
    pub network: f64,
    /// The browsers' median download time of the test object (ms × weight); counts for
    /// a prefix once every candidate edge has enough samples.
    pub rum: f64,
}

impl Default for RoutingWeights {
    fn default() -> Self {
        Self {
            network: 1.0,
            rum: 1.0,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RumConfig {
    /// Distinct client addresses a prefix's RUM score needs (per edge)...
    pub min_clients: usize,
    /// ...that reported within this window.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Beacons accepted per client address per minute.
    pub per_address_per_minute: u32,
    /// Beacons accepted per client prefix (/24, /48) per minute.
    pub per_prefix_per_minute: u32,
}

impl Default for RumConfig {
    fn default() -> Self {
        Self {
            min_clients: 3,
            window: Duration::from_secs(600),
            per_address_per_minute: 6,
            per_prefix_per_minute: 120,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NameserverConfig {
    pub name: String,
    #[serde(default)]
    pub addresses: Vec<std::net::IpAddr>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            zone: "streamcdn.test".into(),
            delivery: "live.streamcdn.test".into(),
            dns_listen: ([0, 0, 0, 0], 5353).into(),
            http_listen: ([0, 0, 0, 0], 8082).into(),
            advertise: None,
            ttl: Duration::from_secs(20),
            nameservers: Vec::new(),
            edge_capacity: 0,
            health_interval: Duration::from_secs(1),
            reprobe_after: Duration::from_secs(60),
            static_map: Default::default(),
            weights: RoutingWeights::default(),
            rum: RumConfig::default(),
        }
    }
}

/// A DNS host name: labels of 1-63 letters, digits and hyphens, 253 characters at most.
impl Config {
    fn validate_federation(&self) -> Result<(), (String, String)> {
        let federation = &self.federation;
        let set = [&federation.cert, &federation.key, &federation.ca];
        if set.iter().any(|p| p.is_some()) && !set.iter().all(|p| p.is_some()) {
            return Err((
                "federation.cert".into(),
                "federation.cert, federation.key and federation.ca go together".into(),
            ));
        }
        let mut ids = std::collections::HashSet::new();
        let mut hostnames = std::collections::HashSet::new();
        for (i, configuration) in self.configurations.iter().enumerate() {
            let key = format!("configurations[{i}]");
            let id = &configuration.id;
            if id.is_empty()
                || id.len() > 64
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            {
                return Err((
                    format!("{key}.id"),
                    format!("{id:?} must be 1-64 letters, digits, '-', '_' or '.'"),
                ));
            }
            if !ids.insert(id.clone()) {
                return Err((format!("{key}.id"), format!("{id:?} is used twice")));
            }
            if configuration.hostnames.is_empty() {
                return Err((format!("{key}.hostnames"), "needs at least one".into()));
            }
            for host in &configuration.hostnames {
                if !is_host_name(host) {
                    return Err((
                        format!("{key}.hostnames"),
                        format!("{host:?} is not a valid DNS name"),
                    ));
                }
                if !hostnames.insert(host.to_ascii_lowercase()) {
                    return Err((
                        format!("{key}.hostnames"),
                        format!("{host:?} belongs to two configurations"),
                    ));
                }
            }
            if let Some(origin) = &configuration.origin {
                if !origin.starts_with("http://") || origin.len() <= 7 {
                    return Err((
                        format!("{key}.origin"),
                        format!("{origin:?} is not an http:// URL"),
                    ));
                }
            }
        }
        let mut partners = std::collections::HashSet::new();
        for (i, partner) in federation.partners.iter().enumerate() {
            let key = format!("federation.partners[{i}]");
            if partner.id == federation.participant {
                return Err((
                    format!("{key}.id"),
                    format!("{} is this participant", partner.id),
                ));
            }
            if !partners.insert(partner.id) {
                return Err((
                    format!("{key}.id"),
                    format!("{} is listed twice", partner.id),
                ));
            }
            if !partner.url.starts_with("https://") || partner.url.len() <= 8 {
                return Err((
                    format!("{key}.url"),
                    format!("{:?} is not an https:// URL", partner.url),
                ));
            }
        }
        Ok(())
    }
}

/// What is wrong with a stream key (a provider's or a stream's), if anything.
pub fn stream_key_problem(key: &str) -> Option<&'static str> {
    (key.len() < 8
        || key.len() > 256
        || !key.bytes().all(|b| b.is_ascii_graphic())
        || key.contains(['&', '?', '/']))
    .then_some("must be 8-256 printable characters, without & ? / or spaces")
}

/// `[providers.stream_keys]`: stream names, and keys a publisher can send.
fn validate_stream_keys(i: usize, p: &ProviderConfig) -> Result<(), (String, String)> {
    for (stream, key) in &p.stream_keys {
        let at = if streamcdn_urls::is_valid_name(stream) {
            format!("providers[{i}].stream_keys.{stream}")
        } else {
            format!("providers[{i}].stream_keys.{stream:?}")
        };
        if !streamcdn_urls::is_valid_name(stream) {
            return Err((
                at,
                format!("{stream:?} is not a stream name (1-64 characters of A-Z a-z 0-9 - _)"),
            ));
        }
        if let Some(problem) = stream_key_problem(key) {
            return Err((at, problem.into()));
        }
        if key == &p.stream_key {
            return Err((
                at,
                "is the provider's stream_key (which opens every stream): give the stream a key of its own"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// What is wrong with a hook's URL, if anything: hooks are plain-HTTP `POST`s.
pub fn hook_url_problem(url: &str) -> Option<&'static str> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Some("is not an http:// URL (hooks are called over plain HTTP)");
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Some("names no host (http://host:port/path)");
    }
    if url.len() > 2048 || url.contains('#') || !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Some("is not a plain URL (printable ASCII, no spaces or #, at most 2048 bytes)");
    }
    None
}

/// `[providers.hooks]`.
fn validate_hooks(i: usize, hooks: &HooksConfig) -> Result<(), (String, String)> {
    let at = |key: &str| format!("providers[{i}].hooks.{key}");
    if hooks.urls().next().is_none() {
        return Err((
            format!("providers[{i}].hooks"),
            "sets no hook: on_publish, on_unpublish, on_recording_ended or on_archived".into(),
        ));
    }
    for (key, url) in hooks.urls() {
        if let Some(problem) = hook_url_problem(url) {
            return Err((at(key), format!("{url:?} {problem}")));
        }
    }
    if !(Duration::from_millis(100)..=Duration::from_secs(30)).contains(&hooks.timeout) {
        return Err((at("timeout"), "must be between 100ms and 30s".into()));
    }
    if hooks.retries > 10 {
        return Err((at("retries"), "must be at most 10".into()));
    }
    Ok(())
}

fn is_host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `address/length` with the length in range for the family.
fn is_cidr(text: &str) -> bool {
    let Some((addr, len)) = text.split_once('/') else {
        return false;
    };
    match (addr.parse::<std::net::IpAddr>(), len.parse::<u8>()) {
        (Ok(std::net::IpAddr::V4(_)), Ok(len)) => len <= 32,
        (Ok(std::net::IpAddr::V6(_)), Ok(len)) => len <= 128,
        _ => false,
    }
}

mod humantime_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?} ({e}); use e.g. \"2s\", \"500ms\", \"5m\""
            ))
        })
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub mod option {
        use std::time::Duration;

        use serde::{Deserializer, Serializer};

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }
    }
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

    /// Checks what types alone cannot; returns the offending key and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let hls = &self.hls;
        if !(Duration::from_millis(500)..=Duration::from_secs(30)).contains(&hls.segment_duration) {
            return Err((
                "hls.segment_duration".into(),
                "must be between 500ms and 30s".into(),
            ));
        }
        if !(3..=100).contains(&hls.live_window) {
            return Err(("hls.live_window".into(), "must be between 3 and 100".into()));
        }
        if hls.part_duration < Duration::from_millis(100)
            || hls.part_duration * 2 > hls.segment_duration
        {
            return Err((
                "hls.part_duration".into(),
                "must be at least 100ms and at most half of hls.segment_duration".into(),
            ));
        }
        if self.rtmp.max_message_size.0 < 64 * 1024
            || self.rtmp.max_message_size.0 > 16 * 1024 * 1024
        {
            return Err((
                "rtmp.max_message_size".into(),
                "must be between 64KiB and 16MiB".into(),
            ));
        }
        if self.rtmp.read_interval > Duration::from_millis(100) {
            return Err((
                "rtmp.read_interval".into(),
                "must be at most 100ms (it adds up to that much latency)".into(),
            ));
        }
        if self.edge.cache_memory.0 < 1024 * 1024 {
            return Err(("edge.cache_memory".into(), "must be at least 1MiB".into()));
        }
        let http_url = |key: &str, url: &str| {
            if url.starts_with("http://") && url.len() > 7 {
                Ok(())
            } else {
                Err((key.to_owned(), format!("{url:?} is not an http:// URL")))
            }
        };
        for (i, parent) in self.edge.parents.iter().enumerate() {
            http_url(&format!("edge.parents[{i}]"), parent)?;
        }
        if let Some(url) = &self.origin.advertise {
            http_url("origin.advertise", url)?;
        }
        if let Some(url) = &self.router.advertise {
            http_url("router.advertise", url)?;
        }
        if let Some(url) = &self.http.advertise {
            http_url("http.advertise", url)?;
        }
        match (&self.http.tls_cert, &self.http.tls_key) {
            (Some(_), None) => {
                return Err((
                    "http.tls_cert".into(),
                    "needs http.tls_key (the certificate's private key) too".into(),
                ))
            }
            (None, Some(_)) => {
                return Err((
                    "http.tls_key".into(),
                    "needs http.tls_cert (the key's certificate) too".into(),
                ))
            }
            _ => {}
        }
        if self.rtmp.tls_listen.addr() == Some(self.rtmp.listen) {
            return Err((
                "rtmp.tls_listen".into(),
                "must differ from rtmp.listen".into(),
            ));
        }
        if self.http.tls_listen.addr() == Some(self.http.listen) {
            return Err((
                "http.tls_listen".into(),
                "must differ from http.listen".into(),
            ));
        }
        if self.edge.cache_disk.0 != 0 && self.edge.cache_disk.0 < 16 * 1024 * 1024 {
            return Err((
                "edge.cache_disk".into(),
                "must be 0 (off) or at least 16MiB".into(),
            ));
        }
        if !(Duration::from_secs(2)..=Duration::from_secs(300)).contains(&self.registry.lease) {
            return Err(("registry.lease".into(), "must be between 2s and 5m".into()));
        }
        if self.registry.backend == RegistryBackend::Redis
            && !(self.registry.url.starts_with("redis://")
                || self.registry.url.starts_with("rediss://"))
        {
            return Err((
                "registry.url".into(),
                format!("{:?} is not a redis:// URL", self.registry.url),
            ));
        }
        for (key, name) in [
            ("node.cluster", Some(&self.node.cluster)),
            ("node.id", self.node.id.as_ref()),
            ("node.site", self.node.site.as_ref()),
            ("registry.namespace", Some(&self.registry.namespace)),
        ] {
            if let Some(name) = name {
                if name.is_empty()
                    || name.len() > 128
                    || !name.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
                {
                    return Err((
                        key.into(),
                        format!("{name:?} must be 1-128 printable characters without /"),
                    ));
                }
            }
        }
        if self.archive.store == ArchiveStore::S3 && self.archive.s3.bucket.is_empty() {
            return Err((
                "archive.s3.bucket".into(),
                "is required when archive.store = \"s3\"".into(),
            ));
        }
        if let Some(endpoint) = &self.archive.s3.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err((
                    "archive.s3.endpoint".into(),
                    format!("{endpoint:?} is not an http(s):// URL"),
                ));
            }
        }
        if !(1..=256).contains(&self.archive.concurrency) {
            return Err((
                "archive.concurrency".into(),
                "must be between 1 and 256".into(),
            ));
        }
        self.validate_federation()?;
        for (i, token) in self.admin.tokens.iter().enumerate() {
            if token.token.len() < 16
                || token.token.len() > 256
                || !token.token.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err((
                    format!("admin.tokens[{i}].token"),
                    "must be 16-256 printable characters without spaces".into(),
                ));
            }
            if let Some(provider) = &token.provider {
                if !streamcdn_urls::is_valid_name(provider) {
                    return Err((
                        format!("admin.tokens[{i}].provider"),
                        format!("{provider:?} is not a provider name"),
                    ));
                }
            }
        }
        let router = &self.router;
        for (key, name) in [
            ("router.zone", &router.zone),
            ("router.delivery", &router.delivery),
        ] {
            if !is_host_name(name) {
                return Err((key.into(), format!("{name:?} is not a valid DNS name")));
            }
        }
        let zone = router.zone.trim_end_matches('.').to_ascii_lowercase();
        let delivery = router.delivery.trim_end_matches('.').to_ascii_lowercase();
        if !delivery.ends_with(&format!(".{zone}")) {
            return Err((
                "router.delivery".into(),
                format!(
                    "{:?} is not inside router.zone {:?}",
                    router.delivery, router.zone
                ),
            ));
        }
        for (i, ns) in router.nameservers.iter().enumerate() {
            if !is_host_name(&ns.name) {
                return Err((
                    format!("router.nameservers[{i}].name"),
                    format!("{:?} is not a valid DNS name", ns.name),
                ));
            }
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&router.ttl) {
            return Err(("router.ttl".into(), "must be between 1s and 1h".into()));
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&router.health_interval)
        {
            return Err((
                "router.health_interval".into(),
                "must be between 100ms and 60s".into(),
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&router.reprobe_after) {
            return Err((
                "router.reprobe_after".into(),
                "must be between 1s and 5m".into(),
            ));
        }
        let weight = |w: f64| w.is_finite() && w >= 0.0;
        for (name, w) in [
            ("router.weights.network", router.weights.network),
            ("router.weights.rum", router.weights.rum),
        ] {
            if !weight(w) {
                return Err((name.into(), "must be a non-negative number".into()));
            }
        }
        if router.weights.network + router.weights.rum == 0.0 {
            return Err(("router.weights".into(), "must not all be 0".into()));
        }
        if router.rum.min_clients == 0 {
            return Err(("router.rum.min_clients".into(), "must be at least 1".into()));
        }
        if !(Duration::from_secs(10)..=Duration::from_secs(86_400)).contains(&router.rum.window) {
            return Err((
                "router.rum.window".into(),
                "must be between 10s and 24h".into(),
            ));
        }
        if router.rum.per_address_per_minute == 0 || router.rum.per_prefix_per_minute == 0 {
            return Err((
                "router.rum".into(),
                "per_address_per_minute and per_prefix_per_minute must be at least 1".into(),
            ));
        }
        for (cidr, site) in &router.static_map {
            if !is_cidr(cidr) {
                return Err((
                    format!("router.static_map.{cidr:?}"),
                    "is not an address/length CIDR".into(),
                ));
            }
            if site.is_empty() {
                return Err((
                    format!("router.static_map.{cidr:?}"),
                    "names no site".into(),
                ));
            }
        }
        for (i, p) in self.providers.iter().enumerate() {
            if !streamcdn_urls::is_valid_name(&p.name) {
                return Err((
                    format!("providers[{i}].name"),
                    format!("{:?} must be 1-64 characters of A-Z a-z 0-9 - _", p.name),
                ));
            }
            if p.playback_keys.len() > 2
                || p.playback_keys
                    .iter()
                    .any(|k| k.len() < 16 || k.len() > 256)
            {
                return Err((
                    format!("providers[{i}].playback_keys"),
                    "one or two keys (two while rotating), each 16-256 characters".into(),
                ));
            }
            if self.providers[..i].iter().any(|q| q.name == p.name) {
                return Err((
                    format!("providers[{i}].name"),
                    format!("provider {:?} is defined twice", p.name),
                ));
            }
            if p.stream_key.len() < 8 || p.stream_key.contains(['&', '?', '/', ' ']) {
                return Err((
                    format!("providers[{i}].stream_key"),
                    "must be at least 8 characters, without & ? / or spaces".into(),
                ));
            }
            validate_stream_keys(i, p)?;
            if let Some(hooks) = &p.hooks {
                validate_hooks(i, hooks)?;
            }
        }
        Ok(())
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
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.rtmp.listen.port(), 1935);
        assert_eq!(c.http.listen.port(), 8080);
        assert_eq!(c.admin.listen.port(), 8081);
        assert_eq!(c.hls.segment_duration, Duration::from_secs(2));
    }

    #[test]
    fn the_documented_example_is_valid() {
        let text = include_str!("../../../examples/streamcdn.toml");
        let c = parse(text).unwrap();
        assert!(!c.providers.is_empty());
    }

    #[test]
    fn type_errors_name_line_and_key() {
        let e = parse("[hls]\nsegment_duration = \"2s\"\nlive_window = \"six\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (3, Some("hls.live_window")));
        let e = parse("[rtmp]\nlisten = \"nowhere\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (2, Some("rtmp.listen")));
        let e = parse("[hls]\nsegment_length = \"2s\"\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.to_string().contains("segment_length"), "{e}");
    }

    #[test]
    fn semantic_errors_name_line_and_key() {
        let text = "[[providers]]\nname = \"a\"\nstream_key = \"secret-key-1\"\n\n[[providers]]\nname = \"a\"\nstream_key = \"secret-key-2\"\n";
        let e = parse(text).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (6, Some("providers[1].name")));
        assert!(e.to_string().starts_with("test.toml:6:"), "{e}");
        let e = parse("[hls]\nsegment_duration = \"1h\"\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse("[rtmp]\nread_interval = \"250ms\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (2, Some("rtmp.read_interval")));
        let c = parse("[rtmp]\nread_interval = \"0s\"\n").unwrap();
        assert!(c.rtmp.read_interval.is_zero());
    }

    #[test]
    fn tls_listener_is_on_by_default_and_can_be_turned_off() {
        let c = parse("").unwrap();
        assert_eq!(c.http.tls_listen, Listen::At(([0, 0, 0, 0], 8443).into()));
        let c = parse("[http]\ntls_listen = \"off\"\n").unwrap();
        assert_eq!(c.http.tls_listen.addr(), None);
        assert_eq!(c.rtmp.tls_listen, Listen::At(([0, 0, 0, 0], 1936).into()));
        let c = parse("[rtmp]\ntls_listen = \"off\"\n").unwrap();
        assert_eq!(c.rtmp.tls_listen.addr(), None);
        let e = parse("[rtmp]\nlisten = \"127.0.0.1:9000\"\ntls_listen = \"127.0.0.1:9000\"\n")
            .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("rtmp.tls_listen"));
        let e = parse("[http]\ntls_listen = \"\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (2, Some("http.tls_listen")));
        assert!(e.to_string().contains("\"off\""), "{e}");
        let e = parse("[http]\nlisten = \"127.0.0.1:9000\"\ntls_listen = \"127.0.0.1:9000\"\n")
            .unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (3, Some("http.tls_listen")));
    }

    #[test]
    fn provider_keys_never_show_in_debug_output() {
        let text = "[[providers]]\nname = \"a\"\nstream_key = \"secret-key-0000001\"\nplayback_keys = [\"playback-secret-00001\"]\n";
        let shown = format!("{:?}", parse(text).unwrap().providers[0]);
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("\"a\""), "{shown}");
    }

    #[test]
    fn federation_is_checked_at_start() {
        let c = parse("").unwrap();
        assert_eq!(c.federation.participant.to_string(), "AS64496:1");
        assert_eq!(c.federation.listen, Listen::At(([0, 0, 0, 0], 9443).into()));
        let text = "[federation]\nparticipant = \"AS64500:1\"\n\n[[federation.partners]]\nid = \"AS64496:1\"\nurl = \"https://127.0.1.1:9443\"\ndelegate = [\"live-b\"]\n\n[[configurations]]\nid = \"live-b\"\nhostnames = [\"live.b.test\"]\n";
        let c = parse(text).unwrap();
        assert_eq!(c.federation.partners[0].delegate, ["live-b"]);
        let e = parse("[federation]\nparticipant = \"64500\"\n").unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (2, Some("federation.participant"))
        );
        let e = parse("[[federation.partners]]\nid = \"AS64496:1\"\nurl = \"https://x\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("is this participant"), "{e}");
        let e = parse("[[federation.partners]]\nid = \"AS1:1\"\nurl = \"http://x\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("federation.partners[0].url"));
        let e = parse("[federation]\ncert = \"c.pem\"\n").unwrap_err();
        assert!(e.to_string().contains("go together"), "{e}");
        let twice = "[[configurations]]\nid = \"a\"\nhostnames = [\"x.test\"]\n\n[[configurations]]\nid = \"b\"\nhostnames = [\"X.test\"]\n";
        let e = parse(twice).unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (7, Some("configurations[1].hostnames"))
        );
        let e = parse("[[configurations]]\nid = \"a/b\"\nhostnames = [\"x.test\"]\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("configurations[0].id"));
    }

    #[test]
    fn stream_keys_and_hooks_are_checked_at_start() {
        let base = "[[providers]]\nname = \"p\"\nstream_key = \"provider-key-1\"\n";
        let text = format!(
            "{base}stream_keys = {{ cam = \"cam-key-0001\" }}\n[providers.hooks]\n\
             on_publish = \"http://127.0.0.1:9000/publish\"\ntimeout = \"500ms\"\ndeny_on_timeout = false\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.providers[0].stream_keys["cam"], "cam-key-0001");
        let hooks = c.providers[0].hooks.as_ref().unwrap();
        assert_eq!(
            (hooks.timeout, hooks.retries, hooks.deny_on_timeout),
            (Duration::from_millis(500), 2, false)
        );
        assert_eq!(
            hooks.urls().collect::<Vec<_>>(),
            [("on_publish", "http://127.0.0.1:9000/publish")]
        );
        // Defaults: 2 s, two retries, and a publish hook that does not answer refuses.
        let c = parse(&format!(
            "{base}[providers.hooks]\non_archived = \"http://h/a\"\n"
        ))
        .unwrap();
        let hooks = c.providers[0].hooks.as_ref().unwrap();
        assert!(hooks.deny_on_timeout && hooks.timeout == Duration::from_secs(2));
        assert!(c.providers[0].stream_keys.is_empty());

        let error = |text: String| {
            let e = parse(&text).unwrap_err();
            (e.line, e.key.clone().unwrap_or_default(), e.to_string())
        };
        let (line, key, text) = error(format!(
            "{base}stream_keys = {{ \"a b\" = \"cam-key-0001\" }}\n"
        ));
        assert_eq!(
            (line, &key[..]),
            (4, "providers[0].stream_keys.\"a b\""),
            "{text}"
        );
        assert!(text.contains("not a stream name"), "{text}");
        let (line, key, text) = error(format!(
            "{base}\n[providers.stream_keys]\ncam = \"short\"\n"
        ));
        assert_eq!(
            (line, &key[..]),
            (6, "providers[0].stream_keys.cam"),
            "{text}"
        );
        assert!(text.contains("8-256"), "{text}");
        let (line, _, text) = error(format!(
            "{base}stream_keys = {{ cam = \"provider-key-1\" }}\n"
        ));
        assert!(line == 4 && text.contains("of its own"), "{text}");
        let (line, key, text) = error(format!(
            "{base}[providers.hooks]\non_publish = \"https://auth.example/p\"\n"
        ));
        assert_eq!(
            (line, &key[..]),
            (5, "providers[0].hooks.on_publish"),
            "{text}"
        );
        assert!(text.contains("http://"), "{text}");
        let (line, key, _) = error(format!(
            "{base}[providers.hooks]\non_unpublish = \"http://h/u\"\n\ntimeout = \"1h\"\n"
        ));
        assert_eq!((line, &key[..]), (7, "providers[0].hooks.timeout"));
        let (line, key, _) = error(format!(
            "{base}hooks = {{ on_unpublish = \"http://h/u\", retries = 11 }}\n"
        ));
        assert_eq!((line, &key[..]), (4, "providers[0].hooks.retries"));
        let (line, key, text) = error(format!("{base}\n[providers.hooks]\ntimeout = \"1s\"\n"));
        assert_eq!((line, &key[..]), (5, "providers[0].hooks"), "{text}");
        assert!(text.contains("sets no hook"), "{text}");
        let (line, _, text) = error(format!(
            "{base}[providers.hooks]\non_connect = \"http://h/c\"\n"
        ));
        assert!(line == 5 && text.contains("on_connect"), "{text}");
        // The second provider's table is the one named.
        let (line, key, _) = error(format!(
            "{base}[providers.hooks]\non_publish = \"http://h/p\"\n\n\
             [[providers]]\nname = \"q\"\nstream_key = \"provider-key-2\"\n\
             [providers.hooks]\non_publish = \"ftp://h/p\"\n"
        ));
        assert_eq!((line, &key[..]), (11, "providers[1].hooks.on_publish"));
    }

    #[test]
    fn tls_cert_and_key_come_together() {
        let c = parse("[http]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n").unwrap();
        assert_eq!(c.http.tls_key.as_deref(), Some(Path::new("k.pem")));
        let e = parse("[http]\ntls_cert = \"c.pem\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (2, Some("http.tls_cert")));
        assert!(e.to_string().contains("http.tls_key"), "{e}");
        let e = parse("[http]\n\ntls_key = \"k.pem\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (3, Some("http.tls_key")));
    }

    #[test]
    fn http2_to_upstreams_is_off_unless_asked() {
        assert!(!parse("").unwrap().edge.upstream_http2);
        let c = parse("[edge]\nparents = [\"http://mid:8080\"]\nupstream_http2 = true\n").unwrap();
        assert!(c.edge.upstream_http2);
        let e = parse("[edge]\n\nupstream_http2 = \"yes\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (3, Some("edge.upstream_http2")));
    }
}
