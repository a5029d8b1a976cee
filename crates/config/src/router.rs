//! `[router]`: the request router — its DNS zone, redirect listener, health checks and
//! the weights of the measurements it routes by.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::checks::{http_url, is_cidr, is_host_name, Invalid};
use crate::humantime_serde;

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

impl RouterConfig {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if let Some(url) = &self.advertise {
            http_url("router.advertise", url)?;
        }
        for (key, name) in [
            ("router.zone", &self.zone),
            ("router.delivery", &self.delivery),
        ] {
            if !is_host_name(name) {
                return Err((key.into(), format!("{name:?} is not a valid DNS name")));
            }
        }
        let zone = self.zone.trim_end_matches('.').to_ascii_lowercase();
        let delivery = self.delivery.trim_end_matches('.').to_ascii_lowercase();
        if !delivery.ends_with(&format!(".{zone}")) {
            return Err((
                "router.delivery".into(),
                format!(
                    "{:?} is not inside router.zone {:?}",
                    self.delivery, self.zone
                ),
            ));
        }
        for (i, ns) in self.nameservers.iter().enumerate() {
            if !is_host_name(&ns.name) {
                return Err((
                    format!("router.nameservers[{i}].name"),
                    format!("{:?} is not a valid DNS name", ns.name),
                ));
            }
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.ttl) {
            return Err(("router.ttl".into(), "must be between 1s and 1h".into()));
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&self.health_interval) {
            return Err((
                "router.health_interval".into(),
                "must be between 100ms and 60s".into(),
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&self.reprobe_after) {
            return Err((
                "router.reprobe_after".into(),
                "must be between 1s and 5m".into(),
            ));
        }
        self.weights.validate()?;
        self.rum.validate()?;
        for (cidr, site) in &self.static_map {
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
        Ok(())
    }
}

impl RoutingWeights {
    fn validate(&self) -> Result<(), Invalid> {
        let weight = |w: f64| w.is_finite() && w >= 0.0;
        for (name, w) in [
            ("router.weights.network", self.network),
            ("router.weights.rum", self.rum),
        ] {
            if !weight(w) {
                return Err((name.into(), "must be a non-negative number".into()));
            }
        }
        if self.network + self.rum == 0.0 {
            return Err(("router.weights".into(), "must not all be 0".into()));
        }
        Ok(())
    }
}

impl RumConfig {
    fn validate(&self) -> Result<(), Invalid> {
        if self.min_clients == 0 {
            return Err(("router.rum.min_clients".into(), "must be at least 1".into()));
        }
        if !(Duration::from_secs(10)..=Duration::from_secs(86_400)).contains(&self.window) {
            return Err((
                "router.rum.window".into(),
                "must be between 10s and 24h".into(),
            ));
        }
        if self.per_address_per_minute == 0 || self.per_prefix_per_minute == 0 {
            return Err((
                "router.rum".into(),
                "per_address_per_minute and per_prefix_per_minute must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
