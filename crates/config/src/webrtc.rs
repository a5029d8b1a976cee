//! `[webrtc]`: the WebRTC publishers' UDP port (WHIP: its HTTP side is on the origin
//! listener, `POST /<provider>/<stream>/whip`). ICE-lite: every session shares the one
//! port, and the SDP answer names this server's own addresses as its candidates.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::checks::Invalid;
use crate::humantime_serde;
use crate::origin::OriginConfig;
use crate::units::Listen;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebRtcConfig {
    /// UDP `"host:port"` of every WebRTC session, or `"off"` (no WHIP).
    pub listen: Listen,
    /// The addresses publishers reach that port at, as `"ip"` (the listen port) or
    /// `"ip:port"` (a NAT forwarding another port). Default: the host of
    /// `origin.advertise` (resolved at start when it is a name), else `origin.listen`'s.
    pub candidates: Vec<String>,
    /// A session that sends no media for this long is ended (a browser closed without
    /// `DELETE`, a network gone); its recording is complete.
    #[serde(with = "humantime_serde")]
    pub inactivity_timeout: Duration,
    pub max_sessions: usize,
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        Self {
            listen: Listen::At(([0, 0, 0, 0], 8189).into()),
            candidates: Vec::new(),
            inactivity_timeout: Duration::from_secs(10),
            max_sessions: 1000,
        }
    }
}

/// One configured candidate: an address, or an address and port.
fn parse_candidate(text: &str) -> Option<SocketAddr> {
    text.parse::<SocketAddr>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0)))
        .filter(|a| !a.ip().is_unspecified() && !a.ip().is_multicast())
}

impl WebRtcConfig {
    /// The hosts to name as candidates, `(host, port)` with port 0 for the listen
    /// port: the configured ones, else the origin's advertised host (a name is
    /// resolved by the caller). Empty: nothing to name (set `candidates`).
    pub fn candidate_hosts(&self, origin: &OriginConfig) -> Vec<(String, u16)> {
        if !self.candidates.is_empty() {
            return self
                .candidates
                .iter()
                .filter_map(|c| parse_candidate(c))
                .map(|a| (a.ip().to_string(), a.port()))
                .collect();
        }
        let host = match &origin.advertise {
            Some(url) => url
                .strip_prefix("http://")
                .and_then(|rest| rest.split(['/', '?']).next())
                .map(|authority| match authority.rsplit_once(':') {
                    // `[v6]:port`, `host:port` or a bare host.
                    Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
                    _ => authority,
                })
                .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned()),
            None => Some(origin.listen.ip().to_string()),
        };
        host.filter(|h| {
            !h.is_empty() && h.parse::<IpAddr>().map_or(true, |ip| !ip.is_unspecified())
        })
        .map(|h| vec![(h, 0)])
        .unwrap_or_default()
    }

    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        for (i, c) in self.candidates.iter().enumerate() {
            if parse_candidate(c).is_none() {
                return Err((
                    format!("webrtc.candidates[{i}]"),
                    format!("{c:?} is not an IP address (\"203.0.113.7\") or address and port"),
                ));
            }
        }
        if self.inactivity_timeout < Duration::from_secs(1)
            || self.inactivity_timeout > Duration::from_secs(300)
        {
            return Err((
                "webrtc.inactivity_timeout".into(),
                "must be between 1s and 5m".into(),
            ));
        }
        if self.max_sessions == 0 {
            return Err((
                "webrtc.max_sessions".into(),
                "must be at least 1 (turn WebRTC off with listen = \"off\")".into(),
            ));
        }
        Ok(())
    }
}
