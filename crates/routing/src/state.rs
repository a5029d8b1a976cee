//! Everything the router knows and decides, without I/O: the edges, the measurements,
//! the routing map and its history, the prefixes asked about, the probe schedule, the
//! real-user scores and the resolver → client mapping. Every method takes the time it
//! runs at; the service (`streamcdn-router`) holds one `RouterState` behind one lock and
//! only moves bytes between it and sockets, the registry and the edges.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use streamcdn_access::deployment::DeploymentKey;

use streamcdn_urls::internal::{RUM_BEACON_PATH, RUM_OBJECT_PATH};

use crate::decision::{
    CandidateScore, Decider, DeciderConfig, Decision, DecisionError, EdgeState, Inputs,
    Measurements, Millis, RumScore,
};
use crate::ingest::{self, IngestChoice, IngestServer};
use crate::map::{History, MapEntry, RoutingMap, Version};
use crate::prefix::{ClientPrefix, StaticMap};
use crate::probe::ProbeReport;
use crate::rum::{self, Accepted, BeaconGate, GateLimits, Rejection, RumScores};

/// A prefix nobody asked about for this long leaves the routing map.
const PREFIX_IDLE_MS: Millis = 10 * 60 * 1000;
/// Prefixes the router keeps in its tables, at most.
const MAX_PREFIXES: usize = 65_536;
/// A prefix is probed again no sooner than this.
const PROBE_EVERY_MS: Millis = 10_000;
/// Prefixes sent to probing per round, at most (the edges' budgets bound the rest).
const PROBES_PER_ROUND: usize = 32;
/// Client prefixes remembered behind one resolver prefix, at most.
const MAX_CLIENTS_PER_RESOLVER: usize = 256;
/// Client prefixes seen behind one resolver prefix: sightings and when last seen.
type ClientsBehind = HashMap<ClientPrefix, (u32, Millis)>;

/// How real-user measurements are trusted.
#[derive(Debug, Clone, Copy)]
pub struct RumSettings {
    /// A prefix's RUM score for an edge needs this many distinct client addresses...
    pub min_clients: usize,
    /// ...that reported within this window.
    pub window: Duration,
    pub limits: GateLimits,
}

impl Default for RumSettings {
    fn default() -> Self {
        Self {
            min_clients: 3,
            window: Duration::from_secs(600),
            limits: GateLimits::default(),
        }
    }
}

/// The edges in force: their state for the decision and where each plays.
#[derive(Debug, Default)]
pub struct Edges {
    pub states: Vec<EdgeState>,
    /// Edge id → playback base URL (`http://host:port`).
    pub playback: HashMap<String, String>,
}

/// The routing map and edges a batch of queries is answered from: taken once per batch,
/// read without the state's lock.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub map: Arc<RoutingMap>,
    pub edges: Arc<Edges>,
}

impl View {
    /// Whether both views are the same map and edges (answers made from one hold for
    /// the other).
    pub fn same(&self, other: &View) -> bool {
        Arc::ptr_eq(&self.map, &other.map) && Arc::ptr_eq(&self.edges, &other.edges)
    }

    /// The map's entry for `prefix` if every edge it names is still healthy: an edge
    /// that failed since the map was built is not answered until the next round.
    pub fn lookup(&self, prefix: &ClientPrefix) -> Option<&MapEntry> {
        let serving = |id: &String| self.edges.states.iter().any(|e| &e.id == id && e.healthy);
        self.map.get(prefix).filter(|e| e.edges.iter().all(serving))
    }

    /// The addresses of the edges `ids`, in order.
    pub fn addrs(&self, ids: &[String]) -> Vec<IpAddr> {
        ids.iter()
            .filter_map(|id| self.edges.states.iter().find(|e| &e.id == id))
            .flat_map(|e| e.addrs.iter().copied())
            .collect()
    }
}

/// An edge as the router knows it: its state for the decision and where it plays.
#[derive(Debug, Clone, Serialize)]
pub struct KnownEdge {
    #[serde(flatten)]
    pub state: EdgeStateView,
    pub playback: String,
}

/// [`EdgeState`] in a form the API can show.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeStateView {
    pub id: String,
    pub site: String,
    pub addrs: Vec<IpAddr>,
    pub healthy: bool,
    pub viewer_connections: u64,
    pub capacity: Option<u64>,
}

impl From<&EdgeState> for EdgeStateView {
    fn from(e: &EdgeState) -> Self {
        Self {
            id: e.id.clone(),
            site: e.site.clone(),
            addrs: e.addrs.clone(),
            healthy: e.healthy,
            viewer_connections: e.viewer_connections,
            capacity: e.capacity,
        }
    }
}

/// What recording a probe report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    /// A new measurement.
    Measured,
    /// Already recorded (a report pulled again from the registry).
    Known,
    /// No attempt was answered, or the report is not a measurement.
    NoAnswer,
    /// The decider's store refused it.
    Invalid,
}

impl ReportOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Measured => "measured",
            Self::Known => "known",
            Self::NoAnswer => "no_answer",
            Self::Invalid => "invalid",
        }
    }
}

/// What a round did: the map's new version if an answer changed, and the clients to
/// probe (for prefixes whose decision wants measurements and that were not sent to
/// probing lately, the last address asking).
#[derive(Debug, Default)]
pub struct Round {
    pub version: Option<Version>,
    pub probe: Vec<IpAddr>,
}

/// One edge a measurement job asks the browser to download from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RumTarget {
    pub edge: String,
    pub url: String,
}

/// A measurement job for a browser (the body of `GET /_streamcdn/rum/job`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RumJob {
    pub token: String,
    pub targets: Vec<RumTarget>,
    /// The test object through a name only this job uses: its DNS query shows the
    /// router which resolver the client uses.
    pub resolver_url: Option<String>,
    pub beacon: &'static str,
}

pub struct RouterState {
    static_map: StaticMap,
    /// The zone's origin without its final dot, for measurement names.
    zone: String,
    /// Replaced whole, so a view holds one consistent set.
    edges: Arc<Edges>,
    /// The ingest servers publishers may be sent to (the ingest name), replaced whole.
    ingests: Vec<IngestServer>,
    decider: Decider,
    measurements: Measurements,
    /// The answers in force, rebuilt each round and replaced whole.
    map: Arc<RoutingMap>,
    history: History,
    /// Prefixes asked about, with when they last were and the last address asking.
    asked: HashMap<ClientPrefix, (Millis, IpAddr)>,
    /// When each prefix was last sent to probing.
    probed: HashMap<ClientPrefix, Millis>,
    /// A sample younger than this needs no new probe (the decider's `probe_after`).
    reprobe_after_ms: Millis,
    /// The newest report recorded per prefix and edge.
    recorded: HashMap<(ClientPrefix, String), Millis>,
    /// Browsers' download times per prefix and edge, from accepted beacons.
    rum: RumScores,
    beacons: BeaconGate,
    rum_window_ms: Millis,
    /// Nonces of measurement jobs, with the client prefix each was issued to and when it
    /// expires: a query for `<nonce>.rum.<zone>` tells which resolver that client uses.
    rum_nonces: HashMap<u64, (ClientPrefix, Millis)>,
    /// Per resolver prefix, the client prefixes seen behind it: sightings, last seen.
    resolver_clients: HashMap<ClientPrefix, ClientsBehind>,
}

fn millis(d: Duration) -> Millis {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RouterState {
    /// `zone`: the delivery zone's origin (measurement names are `<nonce>.rum.<zone>`).
    pub fn new(
        zone: &str,
        static_map: StaticMap,
        decider: DeciderConfig,
        rum: RumSettings,
    ) -> Result<Self, DecisionError> {
        Ok(Self {
            static_map,
            zone: zone.trim_end_matches('.').to_owned(),
            edges: Arc::default(),
            ingests: Vec::new(),
            reprobe_after_ms: millis(decider.probe_after),
            decider: Decider::new(decider)?,
            measurements: Measurements::default(),
            map: Arc::default(),
            history: History::default(),
            asked: HashMap::new(),
            probed: HashMap::new(),
            recorded: HashMap::new(),
            rum: RumScores::new(millis(rum.window), rum.min_clients),
            beacons: BeaconGate::new(rum.limits),
            rum_window_ms: millis(rum.window),
            rum_nonces: HashMap::new(),
            resolver_clients: HashMap::new(),
        })
    }

    /// The map and edges in force, for answering queries without the state.
    pub fn view(&self) -> View {
        View {
            map: Arc::clone(&self.map),
            edges: Arc::clone(&self.edges),
        }
    }

    /// Replaces the edge set; returns the edges whose health changed (or that are new).
    pub fn set_edges(&mut self, edges: Edges) -> Vec<EdgeStateView> {
        let previous = std::mem::replace(&mut self.edges, Arc::new(edges));
        self.edges
            .states
            .iter()
            .filter(|edge| {
                let before = previous
                    .states
                    .iter()
                    .find(|p| p.id == edge.id)
                    .map(|p| p.healthy);
                before != Some(edge.healthy)
            })
            .map(EdgeStateView::from)
            .collect()
    }

    /// Replaces the ingest servers; returns those whose health changed (or that are new).
    pub fn set_ingests(&mut self, ingests: Vec<IngestServer>) -> Vec<IngestServer> {
        let previous = std::mem::replace(&mut self.ingests, ingests);
        self.ingests
            .iter()
            .filter(|s| {
                let before = previous.iter().find(|p| p.id == s.id).map(|p| p.healthy);
                before != Some(s.healthy)
            })
            .cloned()
            .collect()
    }

    /// The ingest servers to answer a publisher in `client` with: the least loaded of
    /// its nearest cluster (the static map's site for the prefix, then the sites of the
    /// edges the delivery decision would give it; see [`ingest`]). Remembers nothing.
    pub fn choose_ingest(&mut self, client: ClientPrefix, now: Millis) -> IngestChoice {
        if !self.ingests.iter().any(|s| s.healthy) {
            return IngestChoice::default();
        }
        let mut near: Vec<String> = Vec::new();
        if let Some(matched) = self.static_map.lookup(&client) {
            near.push(matched.site.to_owned());
        }
        let decision = self.preview(client, now);
        for id in &decision.edges {
            if let Some(edge) = self.edges.states.iter().find(|e| &e.id == id) {
                near.push(edge.site.clone());
            }
        }
        let near: Vec<&str> = near.iter().map(String::as_str).collect();
        ingest::choose(&self.ingests, &near, ingest::INGEST_ANSWERS)
    }

    /// The edges the router knows now, with their health.
    pub fn known_edges(&self) -> Vec<KnownEdge> {
        self.edges
            .states
            .iter()
            .map(|s| KnownEdge {
                state: s.into(),
                playback: self.edges.playback.get(&s.id).cloned().unwrap_or_default(),
            })
            .collect()
    }

    /// The decision for a client prefix now (remembered for its hysteresis).
    pub fn decide(&mut self, client: ClientPrefix, now: Millis) -> Decision {
        self.decide_as(client, now, true)
    }

    /// What the decision for a client prefix would be now, remembering nothing (for
    /// `explain` and measurement jobs).
    pub fn preview(&mut self, client: ClientPrefix, now: Millis) -> Decision {
        self.decide_as(client, now, false)
    }

    fn decide_as(&mut self, client: ClientPrefix, now: Millis, remember: bool) -> Decision {
        // A resolver's prefix is decided by the clients measured behind it.
        let behind = self.clients_behind(client, now);
        let measured = behind.unwrap_or(client);
        let rum: HashMap<String, RumScore> = self
            .edges
            .states
            .iter()
            .filter_map(|e| Some((e.id.clone(), self.rum.score(measured, &e.id, now)?)))
            .collect();
        let inputs = Inputs {
            edges: &self.edges.states,
            measurements: &self.measurements,
            rum: &rum,
            static_map: &self.static_map,
        };
        let mut decision = if remember {
            self.decider.decide(measured, &inputs, now)
        } else {
            self.decider.preview(measured, &inputs, now)
        };
        if let Some(clients) = behind {
            decision.prefix = client;
            decision.scope_len = client.len();
            decision.measured_as = Some(clients);
        }
        decision
    }

    /// The client prefix seen most often behind the resolver prefix `resolver` within
    /// the RUM window, if it is another prefix.
    fn clients_behind(&self, resolver: ClientPrefix, now: Millis) -> Option<ClientPrefix> {
        self.resolver_clients
            .get(&resolver)?
            .iter()
            .filter(|(_, (_, last))| now.saturating_sub(*last) <= self.rum_window_ms)
            .max_by_key(|(prefix, (count, _))| (*count, std::cmp::Reverse(**prefix)))
            .map(|(prefix, _)| *prefix)
            .filter(|prefix| *prefix != resolver)
    }

    /// A query for a measurement name (`label` of `<label>.rum.<zone>`) from `resolver`:
    /// that resolver serves the client the name's job was issued to. `true` if it was a
    /// live job's and counted.
    pub fn note_measurement(&mut self, label: &[u8], resolver: IpAddr, now: Millis) -> bool {
        let Some(nonce) = std::str::from_utf8(label)
            .ok()
            .and_then(|text| u64::from_str_radix(text, 16).ok())
        else {
            return false;
        };
        let client = match self.rum_nonces.get(&nonce) {
            Some((client, expires)) if *expires >= now => *client,
            _ => return false,
        };
        let resolver = ClientPrefix::of(resolver);
        let table = &mut self.resolver_clients;
        if table.len() >= MAX_PREFIXES && !table.contains_key(&resolver) {
            return false;
        }
        let behind = table.entry(resolver).or_default();
        if behind.len() >= MAX_CLIENTS_PER_RESOLVER && !behind.contains_key(&client) {
            return false;
        }
        let slot = behind.entry(client).or_insert((0, now));
        slot.0 = slot.0.saturating_add(1);
        slot.1 = now;
        true
    }

    /// A measurement job for the browser at `client`: every healthy edge with a playback
    /// address (best first, at most [`rum::MAX_TARGETS`]) to download the test object
    /// from, under a token for this client only; `nonce` names the job.
    pub fn rum_job(
        &mut self,
        key: &DeploymentKey,
        client: IpAddr,
        nonce: u64,
        now: Millis,
    ) -> RumJob {
        let client = client.to_canonical();
        let prefix = ClientPrefix::of(client);
        let decision = self.preview(prefix, now);
        let edges = Arc::clone(&self.edges);
        let mut candidates: Vec<&CandidateScore> = decision
            .explain
            .iter()
            .filter(|c| c.excluded.is_none() && edges.playback.contains_key(&c.edge))
            .collect();
        candidates.sort_by(|a, b| {
            let score = |c: &CandidateScore| c.score.unwrap_or(f64::INFINITY);
            score(a)
                .total_cmp(&score(b))
                .then_with(|| a.edge.cmp(&b.edge))
        });
        candidates.truncate(rum::MAX_TARGETS);
        let claims = rum::Claims {
            client,
            prefix,
            edges: candidates.iter().map(|c| c.edge.clone()).collect(),
            nonce,
            expires_ms: now.saturating_add(rum::TOKEN_TTL_MS),
        };
        if self.rum_nonces.len() >= MAX_PREFIXES {
            self.rum_nonces.retain(|_, (_, expires)| *expires >= now);
        }
        if self.rum_nonces.len() < MAX_PREFIXES {
            self.rum_nonces.insert(nonce, (prefix, claims.expires_ms));
        }
        let targets = candidates
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let base = edges.playback.get(&c.edge)?;
                Some(RumTarget {
                    edge: c.edge.clone(),
                    url: format!("{base}{RUM_OBJECT_PATH}?n={nonce:016x}-{i}"),
                })
            })
            .collect();
        let port = candidates
            .first()
            .and_then(|c| edges.playback.get(&c.edge))
            .and_then(|base| base.rsplit_once(':'))
            .and_then(|(_, port)| port.parse::<u16>().ok());
        let resolver_url = port.map(|port| {
            format!(
                "http://{nonce:016x}.rum.{}:{port}{RUM_OBJECT_PATH}?n={nonce:016x}-r",
                self.zone
            )
        });
        RumJob {
            token: rum::issue(key, &claims),
            targets,
            resolver_url,
            beacon: RUM_BEACON_PATH,
        }
    }

    /// Checks a beacon from `sender` and, if it holds, records its results.
    pub fn rum_beacon(
        &mut self,
        key: &DeploymentKey,
        body: &[u8],
        sender: IpAddr,
        now: Millis,
    ) -> Result<Accepted, Rejection> {
        let accepted = self.beacons.check(key, body, sender, now)?;
        self.rum.record_beacon(&accepted, now);
        Ok(accepted)
    }

    /// A browser's download time that another router accepted (shared in the registry).
    pub fn record_shared_rum(
        &mut self,
        prefix: ClientPrefix,
        edge: &str,
        client: IpAddr,
        at: Millis,
        cost_ms: f64,
    ) {
        self.rum.record(prefix, edge, client, at, cost_ms);
    }

    /// Records prefixes asked about (with the address asking).
    pub fn note_asked(
        &mut self,
        asked: impl IntoIterator<Item = (ClientPrefix, IpAddr)>,
        now: Millis,
    ) {
        for (prefix, client) in asked {
            // A full table takes no new prefix until the next round drops idle ones:
            // looking for the oldest here would cost a scan per query, on the path a
            // flood of spoofed subnets takes. The prefix is still answered, decided afresh.
            if self.asked.len() < MAX_PREFIXES || self.asked.contains_key(&prefix) {
                self.asked.insert(prefix, (now, client));
            }
        }
    }

    /// A round, first step: forgets prefixes idle for [`PREFIX_IDLE_MS`] and returns the
    /// others with the last address asking. The caller decides each (in chunks, so
    /// queries are answered meanwhile) and hands the decisions to [`Self::finish_round`].
    pub fn asked_recently(&mut self, now: Millis) -> Vec<(ClientPrefix, IpAddr)> {
        self.asked
            .retain(|_, (t, _)| now.saturating_sub(*t) < PREFIX_IDLE_MS);
        self.asked.iter().map(|(p, (_, ip))| (*p, *ip)).collect()
    }

    /// A round, last step: replaces the map if an answer changed (keeping the version
    /// in the history) and picks the clients to probe. `decisions` are those of
    /// `asked`, in order.
    pub fn finish_round(
        &mut self,
        asked: &[(ClientPrefix, IpAddr)],
        decisions: Vec<Decision>,
        now: Millis,
    ) -> Round {
        self.probed
            .retain(|_, t| now.saturating_sub(*t) < PROBE_EVERY_MS);
        let mut probe = Vec::new();
        for (decision, (prefix, client)) in decisions.iter().zip(asked) {
            if decision.needs_probe
                && probe.len() < PROBES_PER_ROUND
                && !self.probed.contains_key(prefix)
            {
                self.probed.insert(*prefix, now);
                probe.push(*client);
            }
        }
        let (next, version) = self.map.next(decisions, now);
        if let Some(version) = &version {
            self.history.push(version.clone());
        }
        self.map = Arc::new(next);
        Round { version, probe }
    }

    /// The healthy edges to ask to probe a prefix, with their playback addresses: those
    /// without a sample younger than `probe_after` among `measured` (edge, when), what
    /// other routers and the edges' passive samples already filed.
    pub fn edges_to_probe(
        &self,
        measured: &[(String, Millis)],
        now: Millis,
    ) -> Vec<(String, String)> {
        self.edges
            .states
            .iter()
            .filter(|e| e.healthy)
            .filter(|edge| {
                !measured.iter().any(|(id, at)| {
                    id == &edge.id && now.saturating_sub(*at) < self.reprobe_after_ms
                })
            })
            .filter_map(|edge| {
                let playback = self.edges.playback.get(&edge.id)?;
                Some((edge.id.clone(), playback.clone()))
            })
            .collect()
    }

    /// Records a report once (a report pulled again from the registry is not counted
    /// twice).
    pub fn record_report(&mut self, report: &ProbeReport) -> ReportOutcome {
        let Ok(measurement) = report.to_measurement() else {
            return ReportOutcome::NoAnswer;
        };
        let key = (report.prefix, report.edge.clone());
        if self
            .recorded
            .get(&key)
            .is_some_and(|at| *at >= report.measured_at_ms)
        {
            return ReportOutcome::Known;
        }
        if self.recorded.len() >= MAX_PREFIXES * 4 {
            self.recorded.clear();
        }
        self.recorded.insert(key, report.measured_at_ms);
        match self.measurements.record(report.prefix, measurement) {
            Ok(()) => ReportOutcome::Measured,
            Err(_) => ReportOutcome::Invalid,
        }
    }

    /// The map in force and the history of its versions.
    pub fn map_snapshot(&self) -> serde_json::Value {
        serde_json::json!({ "map": &*self.map, "history": &self.history })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::DecisionSource;
    use crate::probe::ProbeMethod;

    const NOW: Millis = 1_700_000_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn edge(id: &str, healthy: bool) -> EdgeState {
        EdgeState {
            id: id.to_owned(),
            site: format!("site-{id}"),
            addrs: vec![ip("127.0.0.1")],
            healthy,
            viewer_connections: 0,
            capacity: None,
        }
    }

    /// Edges with playback addresses `http://127.0.0.1:80NN`, in order.
    fn edges(list: &[(&str, bool)]) -> Edges {
        let mut edges = Edges::default();
        for (i, (id, healthy)) in list.iter().enumerate() {
            edges.states.push(edge(id, *healthy));
            edges
                .playback
                .insert((*id).to_owned(), format!("http://127.0.0.1:{}", 8081 + i));
        }
        edges
    }

    fn state(list: &[(&str, bool)]) -> RouterState {
        let mut state = RouterState::new(
            "cdn.example.",
            StaticMap::new(),
            DeciderConfig::default(),
            RumSettings::default(),
        )
        .unwrap();
        state.set_edges(edges(list));
        state
    }

    fn report(edge: &str, client: &str, rtt_ms: Option<f64>, at: Millis) -> ProbeReport {
        ProbeReport {
            edge: edge.to_owned(),
            prefix: ClientPrefix::of(ip(client)),
            target: ip(client),
            rtt_ms,
            loss: 0.0,
            attempts: 3,
            method: ProbeMethod::Tcp,
            measured_at_ms: at,
        }
    }

    fn key() -> DeploymentKey {
        DeploymentKey::from_bytes([5; 32])
    }

    impl RouterState {
        /// A whole round at once, as the service runs it in steps.
        fn rebuild_map(&mut self, now: Millis) -> Round {
            let asked = self.asked_recently(now);
            let decisions = asked.iter().map(|(p, _)| self.decide(*p, now)).collect();
            self.finish_round(&asked, decisions, now)
        }
    }

    fn ingest(id: &str, site: &str, ip: &str, publishers: u64) -> IngestServer {
        IngestServer {
            id: id.to_owned(),
            cluster: format!("cluster-{site}"),
            site: site.to_owned(),
            addrs: vec![self::ip(ip)],
            healthy: true,
            publishers,
            cpu: 0.0,
        }
    }

    #[test]
    fn publishers_are_sent_to_the_cluster_of_their_static_site_or_best_edge() {
        let mut s = RouterState::new(
            "cdn.example.",
            StaticMap::from_entries([("198.51.100.0/24", "site-e2")]).unwrap(),
            DeciderConfig::default(),
            RumSettings::default(),
        )
        .unwrap();
        s.set_edges(edges(&[("e1", true), ("e2", true)]));
        let changed = s.set_ingests(vec![
            ingest("i1", "site-e1", "10.0.0.1", 0),
            ingest("i2", "site-e2", "10.0.0.2", 3),
            ingest("i3", "site-e2", "10.0.0.3", 1),
        ]);
        assert_eq!(changed.len(), 3);
        // The static map names site-e2 for this prefix: its cluster, least loaded first.
        let mapped = ClientPrefix::of(ip("198.51.100.7"));
        let choice = s.choose_ingest(mapped, NOW);
        assert_eq!(choice.cluster.as_deref(), Some("cluster-site-e2"));
        assert_eq!(choice.addrs, vec![ip("10.0.0.3"), ip("10.0.0.2")]);
        // Elsewhere, the measured best edge's site decides.
        let client = "192.0.2.7";
        s.record_report(&report("e1", client, Some(10.0), NOW));
        s.record_report(&report("e2", client, Some(80.0), NOW));
        let choice = s.choose_ingest(ClientPrefix::of(ip(client)), NOW + 1);
        assert_eq!(choice.servers, vec!["i1".to_owned()]);
        // i1 drained: the next nearest cluster with a healthy server.
        let mut drained = ingest("i1", "site-e1", "10.0.0.1", 0);
        drained.healthy = false;
        let changed = s.set_ingests(vec![
            drained,
            ingest("i2", "site-e2", "10.0.0.2", 3),
            ingest("i3", "site-e2", "10.0.0.3", 1),
        ]);
        assert_eq!(
            changed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            ["i1"]
        );
        let choice = s.choose_ingest(ClientPrefix::of(ip(client)), NOW + 2);
        assert_eq!(choice.servers, vec!["i3".to_owned(), "i2".to_owned()]);
        // Nothing healthy: no answer.
        s.set_ingests(Vec::new());
        assert_eq!(s.choose_ingest(mapped, NOW + 3), IngestChoice::default());
    }

    #[test]
    fn edges_are_replaced_whole_and_changes_reported() {
        let mut s = state(&[]);
        let changed = s.set_edges(edges(&[("e1", true), ("e2", false)]));
        assert_eq!(changed.len(), 2);
        let view = s.view();
        assert!(s
            .set_edges(edges(&[("e1", true), ("e2", false)]))
            .is_empty());
        // A view taken before keeps its edges; a new one sees the new set.
        assert!(!view.same(&s.view()));
        let changed = s.set_edges(edges(&[("e1", true), ("e2", true)]));
        assert_eq!(changed.len(), 1);
        assert_eq!((changed[0].id.as_str(), changed[0].healthy), ("e2", true));
        let known = s.known_edges();
        assert_eq!(known.len(), 2);
        assert_eq!(known[1].playback, "http://127.0.0.1:8082");
    }

    #[test]
    fn reports_are_recorded_once_and_move_the_map() {
        let mut s = state(&[("e1", true), ("e2", true)]);
        let client = ip("192.0.2.7");
        let prefix = ClientPrefix::of(client);
        s.note_asked([(prefix, client)], NOW);
        // Nothing measured: the prefix is answered by the fallback and sent to probing.
        let round = s.rebuild_map(NOW);
        assert_eq!(round.probe, vec![client]);
        assert_eq!(round.version.map(|v| v.version), Some(1));
        assert_ne!(
            s.view().lookup(&prefix).map(|e| e.source),
            Some(DecisionSource::Measured)
        );

        let fast = report("e2", "192.0.2.7", Some(10.0), NOW + 1);
        assert_eq!(s.record_report(&fast), ReportOutcome::Measured);
        assert_eq!(s.record_report(&fast), ReportOutcome::Known);
        let older = report("e2", "192.0.2.7", Some(90.0), NOW);
        assert_eq!(s.record_report(&older), ReportOutcome::Known);
        let silent = report("e1", "192.0.2.7", None, NOW + 2);
        assert_eq!(s.record_report(&silent), ReportOutcome::NoAnswer);
        let slow = report("e1", "192.0.2.7", Some(60.0), NOW + 3);
        assert_eq!(s.record_report(&slow), ReportOutcome::Measured);

        let round = s.rebuild_map(NOW + 10);
        assert!(round.probe.is_empty(), "{:?}", round.probe);
        assert_eq!(round.version.map(|v| v.version), Some(2));
        let view = s.view();
        let entry = view.lookup(&prefix).unwrap();
        assert_eq!(entry.edges, vec!["e2".to_owned()]);
        assert_eq!(entry.source, DecisionSource::Measured);
        assert_eq!(view.addrs(&entry.edges), vec![ip("127.0.0.1")]);
        // An edge failing takes its entries out of the answers until the next round.
        s.set_edges(edges(&[("e1", true), ("e2", false)]));
        assert!(s.view().lookup(&prefix).is_none());
        let snapshot = s.map_snapshot();
        assert_eq!(snapshot["history"]["versions"].as_array().unwrap().len(), 2);
        // Nobody asks for ten minutes: the prefix leaves the map.
        let round = s.rebuild_map(NOW + PREFIX_IDLE_MS + 10);
        assert!(round.version.is_some());
        assert!(s.view().map.entries.is_empty());
    }

    #[test]
    fn probes_go_to_unmeasured_healthy_edges_a_bounded_number_of_prefixes_a_round() {
        let s = state(&[("e1", true), ("e2", true), ("e3", false)]);
        let measured = vec![("e1".to_owned(), NOW - 1_000)];
        let ask = s.edges_to_probe(&measured, NOW);
        assert_eq!(
            ask,
            vec![("e2".to_owned(), "http://127.0.0.1:8082".to_owned())]
        );
        // A sample older than `probe_after` (60 s) asks again.
        let stale = vec![("e1".to_owned(), NOW - 61_000)];
        assert_eq!(s.edges_to_probe(&stale, NOW).len(), 2);

        let mut s = s;
        let clients: Vec<IpAddr> = (0..40u8).map(|i| IpAddr::from([10, 0, i, 1])).collect();
        s.note_asked(clients.iter().map(|c| (ClientPrefix::of(*c), *c)), NOW);
        let first = s.rebuild_map(NOW).probe;
        assert_eq!(first.len(), PROBES_PER_ROUND);
        // The rest next round; those sent are not sent again within PROBE_EVERY_MS.
        let second = s.rebuild_map(NOW + 1).probe;
        assert_eq!(second.len(), 40 - PROBES_PER_ROUND);
        assert!(second.iter().all(|c| !first.contains(c)));
        assert!(s.rebuild_map(NOW + 2).probe.is_empty());
        assert_eq!(
            s.rebuild_map(NOW + PROBE_EVERY_MS).probe.len(),
            PROBES_PER_ROUND
        );
    }

    #[test]
    fn hysteresis_keeps_a_prefix_on_its_edge_until_another_is_clearly_better() {
        let mut s = state(&[("e1", true)]);
        let client = "198.51.100.9";
        let prefix = ClientPrefix::of(ip(client));
        s.record_report(&report("e1", client, Some(20.0), NOW));
        assert_eq!(s.decide(prefix, NOW + 1).edges, vec!["e1".to_owned()]);
        // A new edge a little faster does not take the prefix...
        s.set_edges(edges(&[("e1", true), ("e2", true)]));
        s.record_report(&report("e2", client, Some(19.0), NOW + 2));
        assert_eq!(s.decide(prefix, NOW + 3).edges, vec!["e1".to_owned()]);
        // ...a much faster one does.
        s.set_edges(edges(&[("e1", true), ("e2", true), ("e3", true)]));
        s.record_report(&report("e3", client, Some(5.0), NOW + 4));
        assert_eq!(s.decide(prefix, NOW + 5).edges, vec!["e3".to_owned()]);
    }

    #[test]
    fn a_resolver_prefix_is_decided_by_the_clients_seen_behind_it() {
        let mut s = state(&[("e1", true), ("e2", true)]);
        let client = ip("198.51.100.7");
        let resolver = ip("203.0.113.53");
        s.record_report(&report("e1", "198.51.100.7", Some(50.0), NOW));
        s.record_report(&report("e2", "198.51.100.7", Some(10.0), NOW));
        let job = s.rum_job(&key(), client, 0xabc, NOW);
        assert!(job.resolver_url.is_some());
        // Names that are not a live job's teach nothing.
        assert!(!s.note_measurement(b"not hex", resolver, NOW));
        assert!(!s.note_measurement(b"0000000000000abd", resolver, NOW));
        let expired = NOW + rum::TOKEN_TTL_MS + 1;
        assert!(!s.note_measurement(b"0000000000000abc", resolver, expired));
        let before = s.preview(ClientPrefix::of(resolver), NOW);
        assert_eq!(before.measured_as, None);

        assert!(s.note_measurement(b"0000000000000abc", resolver, NOW + 1));
        let decision = s.decide(ClientPrefix::of(resolver), NOW + 2);
        assert_eq!(decision.prefix, ClientPrefix::of(resolver));
        assert_eq!(decision.scope_len, 24);
        assert_eq!(decision.measured_as, Some(ClientPrefix::of(client)));
        assert_eq!(decision.edges, vec!["e2".to_owned()]);
        // Past the RUM window (600 s) the sighting no longer counts.
        let later = s.preview(ClientPrefix::of(resolver), NOW + 601_002);
        assert_eq!(later.measured_as, None);
    }

    #[test]
    fn rum_jobs_rank_healthy_edges_with_playback_best_first() {
        let mut s = state(&[("e1", true), ("e2", true), ("e3", false)]);
        let mut with_unplayable = edges(&[("e1", true), ("e2", true), ("e3", false)]);
        with_unplayable.states.push(edge("e4", true));
        s.set_edges(with_unplayable);
        let client = ip("198.51.100.7");
        s.record_report(&report("e1", "198.51.100.7", Some(50.0), NOW));
        s.record_report(&report("e2", "198.51.100.7", Some(10.0), NOW));
        s.record_report(&report("e4", "198.51.100.7", Some(1.0), NOW));
        let job = s.rum_job(&key(), client, 0x1f, NOW);
        assert_eq!(
            job.targets,
            vec![
                RumTarget {
                    edge: "e2".into(),
                    url: "http://127.0.0.1:8082/_streamcdn/rum/object?n=000000000000001f-0".into()
                },
                RumTarget {
                    edge: "e1".into(),
                    url: "http://127.0.0.1:8081/_streamcdn/rum/object?n=000000000000001f-1".into()
                },
            ]
        );
        assert_eq!(
            job.resolver_url.as_deref(),
            Some("http://000000000000001f.rum.cdn.example:8082/_streamcdn/rum/object?n=000000000000001f-r")
        );
        assert_eq!(job.beacon, RUM_BEACON_PATH);
        let claims = rum::open(&key(), &job.token).unwrap();
        assert_eq!(claims.edges, vec!["e2".to_owned(), "e1".to_owned()]);
        assert_eq!((claims.client, claims.nonce), (client, 0x1f));
        assert_eq!(claims.expires_ms, NOW + rum::TOKEN_TTL_MS);
        // A preview: the job moved no answer.
        assert_eq!(
            s.decide(ClientPrefix::of(client), NOW).edges,
            vec!["e4".to_owned()]
        );
        let json = serde_json::to_value(&job).unwrap();
        assert_eq!(json["targets"][0]["edge"], "e2");
        assert_eq!(json["beacon"], "/_streamcdn/rum/beacon");
    }

    #[test]
    fn accepted_beacons_and_shared_samples_feed_the_rum_scores() {
        let mut s = state(&[("e1", true), ("e2", true)]);
        let client = ip("198.51.100.7");
        let job = s.rum_job(&key(), client, 7, NOW);
        let results: Vec<serde_json::Value> = job
            .targets
            .iter()
            .map(|t| serde_json::json!({"edge": t.edge, "ok": true, "bytes": rum::TEST_OBJECT_BYTES, "total_ms": 30.0}))
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({"token": job.token, "results": results}))
            .unwrap();
        let refused = s.rum_beacon(&key(), &body, ip("198.51.100.8"), NOW + 10);
        assert!(refused.is_err());
        let accepted = s.rum_beacon(&key(), &body, client, NOW + 10);
        assert!(accepted.is_ok(), "{accepted:?}");
        assert_eq!(
            s.rum_beacon(&key(), &body, client, NOW + 11),
            Err(Rejection::Replayed)
        );
        // Two more clients (shared by other routers) make e1's score count.
        let prefix = ClientPrefix::of(client);
        for other in ["198.51.100.20", "198.51.100.21"] {
            s.record_shared_rum(prefix, "e1", ip(other), NOW + 12, 30.0);
            s.record_shared_rum(prefix, "e2", ip(other), NOW + 12, 30.0);
        }
        assert!(s.preview(prefix, NOW + 13).rum_used);
    }
}
