//! `[edge]`: the edge and mid-tier cache — its upstreams, bounds and tier.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use streamcdn_cdni::Tier;

use crate::checks::{http_url, Invalid};
use crate::humantime_serde;
use crate::units::{ByteSize, Listen};

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
    /// The longest span a clip (`<recording>/clip.mp4?start=&end=`) may ask for; a
    /// longer one is refused with `400`. Each cache cuts clips in memory, and keeps
    /// those up to `max_object_size`.
    #[serde(with = "humantime_serde")]
    pub max_clip_duration: Duration,
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
    /// WebRTC playback (WHEP) at an `edge`-tier cache.
    pub webrtc: EdgeWebRtcConfig,
}

/// `[edge.webrtc]`: the UDP port of every WebRTC viewer's session (WHEP: its HTTP side
/// is `POST /<provider>/<stream>/whep` on the playback listener). ICE-lite: every
/// session shares the one port, and the SDP answer names this server's addresses.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeWebRtcConfig {
    /// UDP `"host:port"`, or `"off"` (no WHEP: players use HLS).
    pub listen: Listen,
    /// The addresses viewers reach that port at, as `"ip"` (the listen port) or
    /// `"ip:port"` (a NAT forwarding another port). Default: the host of
    /// `http.advertise` (resolved at start when it is a name), else `http.listen`'s,
    /// else this host's address towards the internet and loopback.
    pub candidates: Vec<String>,
    /// A viewer whose browser sends nothing (no RTCP, no consent checks) for this long
    /// is ended.
    #[serde(with = "humantime_serde")]
    pub inactivity_timeout: Duration,
    pub max_sessions: usize,
}

impl Default for EdgeWebRtcConfig {
    fn default() -> Self {
        Self {
            listen: Listen::At(([0, 0, 0, 0], 8190).into()),
            candidates: Vec::new(),
            inactivity_timeout: Duration::from_secs(15),
            max_sessions: 2000,
        }
    }
}

impl EdgeWebRtcConfig {
    /// The configured candidates as `(host, port)`, port 0 for the listen port; `None`
    /// for one that is neither an address nor `address:port`.
    pub fn candidate_hosts(&self) -> Vec<Option<(String, u16)>> {
        self.candidates
            .iter()
            .map(|c| {
                c.parse::<std::net::SocketAddr>()
                    .ok()
                    .map(|a| (a.ip().to_string(), a.port()))
                    .or_else(|| {
                        c.parse::<std::net::IpAddr>()
                            .ok()
                            .map(|ip| (ip.to_string(), 0))
                    })
            })
            .collect()
    }
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
            max_clip_duration: Duration::from_secs(3600),
            upstream_timeout: Duration::from_secs(10),
            upstream_http2: false,
            tier: EdgeTier::Edge,
            capacity: 0,
            webrtc: EdgeWebRtcConfig::default(),
        }
    }
}

impl EdgeConfig {
    /// Where this cache sits among the tiers (`cdni::Tier`, the one definition: the CIS
    /// stages commands by it and the cache announces it): the top tier without
    /// `parents` (it fills from the ingest origins), else as `tier` says.
    pub fn cache_tier(&self) -> Tier {
        match (self.tier, self.parents.is_empty()) {
            (_, true) => Tier::Top,
            (EdgeTier::Mid, false) => Tier::Mid,
            (EdgeTier::Edge, false) => Tier::Edge,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if self.cache_memory.0 < 1024 * 1024 {
            return Err(("edge.cache_memory".into(), "must be at least 1MiB".into()));
        }
        for (i, parent) in self.parents.iter().enumerate() {
            http_url(&format!("edge.parents[{i}]"), parent)?;
        }
        if self.cache_disk.0 != 0 && self.cache_disk.0 < 16 * 1024 * 1024 {
            return Err((
                "edge.cache_disk".into(),
                "must be 0 (off) or at least 16MiB".into(),
            ));
        }
        if self.max_clip_duration.is_zero() {
            return Err((
                "edge.max_clip_duration".into(),
                "must be more than 0".into(),
            ));
        }
        for (i, candidate) in self.webrtc.candidate_hosts().iter().enumerate() {
            if candidate.is_none() {
                return Err((
                    format!("edge.webrtc.candidates[{i}]"),
                    "must be an IP address or IP:port".into(),
                ));
            }
        }
        if self.webrtc.max_sessions == 0 {
            return Err((
                "edge.webrtc.max_sessions".into(),
                "must be at least 1 (turn WHEP off with listen = \"off\")".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use streamcdn_cdni::Tier;

    use crate::tests::parse;

    #[test]
    fn a_cache_without_parents_is_the_top_tier() {
        assert_eq!(parse("").unwrap().edge.cache_tier(), Tier::Top);
        let parents = "[edge]\nparents = [\"http://mid:8080\"]\n";
        assert_eq!(parse(parents).unwrap().edge.cache_tier(), Tier::Edge);
        let mid = format!("{parents}tier = \"mid\"\n");
        assert_eq!(parse(&mid).unwrap().edge.cache_tier(), Tier::Mid);
        let top_mid = "[edge]\ntier = \"mid\"\n";
        assert_eq!(parse(top_mid).unwrap().edge.cache_tier(), Tier::Top);
    }

    #[test]
    fn whep_listens_by_default_and_checks_its_candidates() {
        let c = parse("").unwrap();
        assert_eq!(c.edge.webrtc.listen.addr().map(|a| a.port()), Some(8190));
        let c = parse(
            "[edge.webrtc]\nlisten = \"off\"\ncandidates = [\"192.0.2.1\", \"192.0.2.2:3478\"]\n",
        )
        .unwrap();
        assert!(c.edge.webrtc.listen.addr().is_none());
        assert_eq!(
            c.edge.webrtc.candidate_hosts(),
            vec![
                Some(("192.0.2.1".into(), 0)),
                Some(("192.0.2.2".into(), 3478))
            ]
        );
        let e = parse("[edge.webrtc]\ncandidates = [\"edge.example\"]\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("edge.webrtc.candidates[0]"));
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
