//! The router as a running service: the thin async shell around [`dns::respond`] and
//! [`RouterState`], which owns every table and all the routing policy. It keeps the set
//! of edges current from the node directory and its own health checks, answers DNS over
//! UDP and TCP, redirects HTTP requests, asks edges to probe, and shares measurements
//! through the registry.

use std::borrow::Cow;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{ConnectInfo, Query as UrlQuery, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Serialize;
use streamcdn_access::deployment::DeploymentKey;
use streamcdn_registry::{NodeRecord, Registry, Role};
use streamcdn_routing::decision::{
    DeciderConfig, Decision, DecisionError, DecisionSource, EdgeState, Millis,
};
use streamcdn_routing::dns::{self, Answer, Transport, Zone};
use streamcdn_routing::ingest::IngestServer;
use streamcdn_routing::prefix::{ClientPrefix, StaticMap};
use streamcdn_routing::probe::{ProbeReport, ProbeRequest, PROBE_HEADER, SHARED_SAMPLE_TTL};
use streamcdn_routing::rum;
use streamcdn_routing::state::{
    Edges, KnownEdge, ReportOutcome, RouterState, RumJob, RumSettings, View,
};
use streamcdn_support::clock::now_ms;
use streamcdn_support::http_client::ClientOptions;
use streamcdn_urls::authority::Authority;
use streamcdn_urls::internal::{PROBE_PATH, RUM_BEACON_PATH, RUM_JOB_PATH};
use streamcdn_urls::{Target, UrlError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::response_cache::ResponseCache;
use crate::responses::{ResponseCounters, Tally};
use crate::udp;

/// A DNS-over-TCP client that sends nothing for this long is disconnected (RFC 7766
/// suggests seconds, not minutes).
const TCP_IDLE: Duration = Duration::from_secs(10);
const MAX_TCP_CLIENTS: usize = 512;
/// How long a UDP thread waits on an idle socket before looking for a shutdown.
const UDP_SHUTDOWN_CHECK: Duration = Duration::from_millis(200);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
const PROBE_ATTEMPTS: u8 = 3;
/// Prefixes decided per hold of the state's lock in a round.
const DECISIONS_PER_LOCK: usize = 256;

pub struct Settings {
    pub zone: Zone,
    pub static_map: StaticMap,
    pub decider: DeciderConfig,
    /// Viewer connections an edge should hold; `None` when unknown.
    pub edge_capacity: Option<u64>,
    pub health_interval: Duration,
    /// The deployment's key that edges check on probe requests.
    pub deployment_key: DeploymentKey,
    /// Where edges are listed and measurements are shared between routers.
    pub registry: Registry,
    pub rum: RumSettings,
}

/// What answering a delivery-name query decided: the prefix is recorded as asked, and a
/// response reused from the cache does the same again.
#[derive(Clone, Copy)]
struct Decided {
    prefix: ClientPrefix,
    /// The ECS address asking, if the query had one (else the address it came from).
    ecs_addr: Option<IpAddr>,
    /// The map entry's source; `None` when decided afresh (such responses are not cached).
    from_map: Option<DecisionSource>,
}

impl Decided {
    fn asked(&self, client: IpAddr) -> (ClientPrefix, IpAddr) {
        (self.prefix, self.ecs_addr.unwrap_or(client))
    }
}

pub struct RouterService {
    zone: Zone,
    edge_capacity: Option<u64>,
    health_interval: Duration,
    deployment_key: DeploymentKey,
    registry: Registry,
    /// How long shared RUM samples are kept in the registry.
    rum_window: Duration,
    /// Every table and all the routing policy; each step holds the lock briefly (a
    /// batch of queries reads a `View` of the map and edges without it).
    state: Mutex<RouterState>,
    /// The threads serving each UDP socket.
    udp_crews: udp::Crews,
    /// Per-query counters, looked up once: a labelled `counter!` per query costs a
    /// registry lookup each time.
    counters: QueryCounters,
    /// Responses by query type and result.
    responses: ResponseCounters,
    client: Client,
}

struct QueryCounters {
    udp: metrics::Counter,
    tcp: metrics::Counter,
    /// Answers from the map, by decision source.
    from_map: [metrics::Counter; 4],
}

const SOURCES: [DecisionSource; 4] = [
    DecisionSource::Measured,
    DecisionSource::StaticMap,
    DecisionSource::LeastLoaded,
    DecisionSource::NoHealthyEdge,
];

impl QueryCounters {
    fn new() -> Self {
        Self {
            udp: metrics::counter!("streamcdn_router_dns_queries_total", "transport" => "udp"),
            tcp: metrics::counter!("streamcdn_router_dns_queries_total", "transport" => "tcp"),
            from_map: SOURCES.map(|source| {
                metrics::counter!("streamcdn_router_decisions_total", "source" => source.as_str(), "from" => "map")
            }),
        }
    }

    fn answered_from_map(&self, source: DecisionSource) -> &metrics::Counter {
        &self.from_map[source_index(source)]
    }

    /// Adds a UDP thread's batch to the shared counters.
    fn add(&self, tally: &mut BatchTally) {
        if tally.queries > 0 {
            self.udp.increment(std::mem::take(&mut tally.queries));
        }
        for (counter, n) in self.from_map.iter().zip(&mut tally.from_map) {
            if *n > 0 {
                counter.increment(std::mem::take(n));
            }
        }
    }
}

fn source_index(source: DecisionSource) -> usize {
    SOURCES.iter().position(|s| *s == source).unwrap_or(0)
}

/// What a UDP thread answered from its response cache in one batch, added to the shared
/// counters once per batch (see [`Tally`]).
#[derive(Debug, Default)]
struct BatchTally {
    queries: u64,
    from_map: [u64; SOURCES.len()],
    responses: Tally,
}

/// What a UDP thread keeps between batches, its own (no lock).
#[derive(Default)]
struct UdpThread {
    cache: ResponseCache<Option<Decided>>,
    /// Prefixes asked in the current batch, recorded under one lock at its end.
    asked: Vec<(ClientPrefix, IpAddr)>,
    tally: BatchTally,
}

/// The address in an `http://host:port` playback URL, if the host is an IP address (a
/// DNS answer needs one).
fn playback_addr(url: &str) -> Option<IpAddr> {
    let authority = Authority::parse(url).filter(|a| a.scheme == "http")?;
    authority.host.parse().ok()
}

/// The router's HTTP client, for edge health checks and probe requests.
type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

fn client() -> Client {
    // No idle connections kept: edges count open connections as viewers, and a pooled
    // check connection per router would sit in every edge's load.
    ClientOptions::new()
        .connect_timeout(HEALTH_TIMEOUT)
        .client()
}

/// Whether the edge at `playback` answers HTTP within the timeout with anything but a
/// server error. Asks for a path outside the URL scheme, which an edge answers at once
/// without touching its upstream.
async fn check_health(client: &Client, playback: &str) -> bool {
    let Ok(request) = hyper::Request::get(format!("{playback}/healthz"))
        .header(hyper::header::USER_AGENT, "streamcdn-router")
        .body(http_body_util::Full::default())
    else {
        return false;
    };
    matches!(
        tokio::time::timeout(HEALTH_TIMEOUT, client.request(request)).await,
        Ok(Ok(response)) if !response.status().is_server_error()
    )
}

impl RouterService {
    pub fn new(settings: Settings) -> Result<Arc<Self>, DecisionError> {
        let state = RouterState::new(
            &settings.zone.origin.to_ascii(),
            settings.static_map,
            settings.decider,
            settings.rum,
        )?;
        Ok(Arc::new(Self {
            state: Mutex::new(state),
            zone: settings.zone,
            edge_capacity: settings.edge_capacity,
            health_interval: settings.health_interval,
            deployment_key: settings.deployment_key,
            registry: settings.registry,
            rum_window: settings.rum.window,
            udp_crews: udp::Crews::default(),
            counters: QueryCounters::new(),
            responses: ResponseCounters::new(),
            client: client(),
        }))
    }

    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    /// The routing state, for one short step.
    fn state(&self) -> MutexGuard<'_, RouterState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The map and edges in force, for answering a batch of queries.
    fn view(&self) -> View {
        self.state().view()
    }

    /// The edges the router knows now, with their health.
    pub fn known_edges(&self) -> Vec<KnownEdge> {
        self.state().known_edges()
    }

    /// What the decision for a client prefix would be now, remembering nothing (for
    /// `explain`).
    pub fn preview(&self, client: ClientPrefix) -> Decision {
        self.state().preview(client, now_ms())
    }

    /// A measurement job for the browser at `client`, under a token for it only.
    pub fn rum_job(&self, client: IpAddr) -> RumJob {
        let job = self
            .state()
            .rum_job(&self.deployment_key, client, rand::random(), now_ms());
        metrics::counter!("streamcdn_router_rum_jobs_total").increment(1);
        job
    }

    /// Checks a beacon from `sender` and, if it holds, records its results (and files
    /// them in the registry for the other routers). Rejections are counted by reason.
    pub async fn rum_beacon(&self, body: &[u8], sender: IpAddr) -> Result<(), rum::Rejection> {
        let now = now_ms();
        let checked = self
            .state()
            .rum_beacon(&self.deployment_key, body, sender, now);
        let accepted = match checked {
            Ok(accepted) => accepted,
            Err(rejection) => {
                metrics::counter!("streamcdn_router_rum_beacons_total", "result" => rejection.label())
                    .increment(1);
                tracing::debug!(%sender, %rejection, "beacon refused");
                return Err(rejection);
            }
        };
        metrics::counter!("streamcdn_router_rum_beacons_total", "result" => "accepted")
            .increment(1);
        for result in &accepted.results {
            let shared = SharedRum {
                rum_edge: result.edge.clone(),
                client: accepted.client,
                cost_ms: result.cost_ms(),
                at_ms: now,
            };
            let Ok(json) = serde_json::to_string(&shared) else {
                continue;
            };
            let key = format!("rum/{}/{}", result.edge, accepted.client);
            if let Err(e) = self
                .registry
                .record_sample(&accepted.prefix.to_string(), &key, json, self.rum_window)
                .await
            {
                tracing::debug!(error = %e, "cannot share a RUM sample");
            }
        }
        Ok(())
    }

    /// Records prefixes asked about (with the address asking), under one lock for a batch.
    fn note_asked(&self, asked: impl IntoIterator<Item = (ClientPrefix, IpAddr)>) {
        self.state().note_asked(asked, now_ms());
    }

    /// The answer to a delivery-name (or ingest-name) query, and what was decided.
    fn answer(&self, view: &View, query: &dns::Query<'_>) -> (Answer, Decided) {
        if let (Some(label), None) = (query.measurement, query.ecs) {
            if self.state().note_measurement(label, query.client, now_ms()) {
                metrics::counter!("streamcdn_router_rum_resolver_sightings_total").increment(1);
            }
        }
        let prefix = match query.ecs {
            Some((addr, len)) => {
                ClientPrefix::from_ecs(addr, len).unwrap_or_else(|_| ClientPrefix::of(query.client))
            }
            None => ClientPrefix::of(query.client),
        };
        if query.ingest {
            // Decided afresh each time (not cached): publishers are few, and a drained
            // server must leave the answers at once.
            let choice = self.state().choose_ingest(prefix, now_ms());
            metrics::counter!("streamcdn_router_ingest_answers_total", "answered" => if choice.addrs.is_empty() { "none" } else { "servers" })
                .increment(1);
            let decided = Decided {
                prefix,
                ecs_addr: query.ecs.map(|(addr, _)| addr),
                from_map: None,
            };
            let scope_len = prefix.len();
            return (
                Answer {
                    addrs: choice.addrs,
                    scope_len,
                },
                decided,
            );
        }
        let (ids, scope_len, from_map) = self.route(view, prefix);
        let decided = Decided {
            prefix,
            ecs_addr: query.ecs.map(|(addr, _)| addr),
            from_map,
        };
        let addrs = view.addrs(&ids);
        (Answer { addrs, scope_len }, decided)
    }

    /// The edges for `prefix` from the routing map (with the entry's source), or decided
    /// now for a prefix the map does not hold yet (it joins the map at the next round).
    fn route<'v>(
        &self,
        view: &'v View,
        prefix: ClientPrefix,
    ) -> (Cow<'v, [String]>, u8, Option<DecisionSource>) {
        match view.lookup(&prefix) {
            Some(entry) => {
                self.counters.answered_from_map(entry.source).increment(1);
                (
                    Cow::Borrowed(&entry.edges),
                    entry.scope_len,
                    Some(entry.source),
                )
            }
            None => {
                let d = self.state().decide(prefix, now_ms());
                metrics::counter!("streamcdn_router_decisions_total", "source" => d.source.as_str(), "from" => "fresh")
                    .increment(1);
                (Cow::Owned(d.edges), d.scope_len, None)
            }
        }
    }

    /// Decides every prefix asked about recently and replaces the map if an answer
    /// changed. Returns the clients to probe.
    fn rebuild_map(&self) -> Vec<IpAddr> {
        let now = now_ms();
        let asked = self.state().asked_recently(now);
        // In chunks: queries that miss the map wait for the lock at most one chunk.
        let mut decisions = Vec::with_capacity(asked.len());
        for chunk in asked.chunks(DECISIONS_PER_LOCK) {
            let mut state = self.state();
            decisions.extend(chunk.iter().map(|(prefix, _)| state.decide(*prefix, now)));
        }
        let round = self.state().finish_round(&asked, decisions, now);
        if let Some(version) = round.version {
            tracing::info!(
                version = version.version,
                changed = version.changed,
                "routing map replaced"
            );
            metrics::gauge!("streamcdn_router_map_version").set(version.version as f64);
        }
        round.probe
    }

    /// The map in force and the history of its versions.
    pub fn map_snapshot(&self) -> serde_json::Value {
        self.state().map_snapshot()
    }

    /// The response to one DNS message, or `None` to drop it.
    pub fn respond(&self, request: &[u8], client: IpAddr, transport: Transport) -> Option<Vec<u8>> {
        let (response, decided) = self.respond_in(&self.view(), request, client, transport);
        if let Some(decided) = decided {
            self.note_asked([decided.asked(client)]);
        }
        response
    }

    /// [`Self::respond`] from `view`, with what was decided (for a delivery-name query).
    fn respond_in(
        &self,
        view: &View,
        request: &[u8],
        client: IpAddr,
        transport: Transport,
    ) -> (Option<Vec<u8>>, Option<Decided>) {
        match transport {
            Transport::Udp => self.counters.udp.increment(1),
            Transport::Tcp => self.counters.tcp.increment(1),
        }
        let mut decided = None;
        let response = dns::respond(request, client, transport, &self.zone, |q| {
            let (answer, d) = self.answer(view, q);
            decided = Some(d);
            answer
        });
        match &response {
            Some(bytes) => self.responses.count(request, bytes),
            None => metrics::counter!("streamcdn_router_dns_dropped_total").increment(1),
        }
        (response, decided)
    }

    /// Appends a UDP query's response to `out` (false: drop the query): from `cache` if
    /// the same query came from the same prefix since `view` was taken (counted and
    /// recorded as asked like any other), else made and cached unless decided afresh.
    fn respond_udp(
        &self,
        view: &View,
        thread: &mut UdpThread,
        request: &[u8],
        client: IpAddr,
        out: &mut Vec<u8>,
    ) -> bool {
        let UdpThread {
            cache,
            asked,
            tally,
        } = thread;
        let prefix = ClientPrefix::of(client);
        let start = out.len();
        if let Some(decided) = cache.get(request, prefix, out) {
            tally.queries += 1;
            if let Some(decided) = decided {
                asked.push(decided.asked(client));
                if let Some(source) = decided.from_map {
                    tally.from_map[source_index(source)] += 1;
                }
            }
            tally.responses.count(request, &out[start..]);
            return true;
        }
        let (response, decided) = self.respond_in(view, request, client, Transport::Udp);
        if let Some(decided) = decided {
            asked.push(decided.asked(client));
        }
        let Some(response) = response else {
            return false;
        };
        if decided.is_none_or(|d| d.from_map.is_some()) {
            cache.insert(request, prefix, &response, decided);
        }
        out.extend_from_slice(&response);
        true
    }

    /// Rebuilds the edge set from the node directory and health checks, every
    /// `health_interval`, until shutdown. A directory that does not answer leaves the
    /// last set in force (health checks still run on it).
    pub async fn watch_edges(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let registry = self.registry.clone();
        let mut known: Vec<NodeRecord> = Vec::new();
        let mut ingests: Vec<NodeRecord> = Vec::new();
        loop {
            match registry.nodes().await {
                Ok(nodes) => {
                    (known, ingests) = nodes
                        .into_iter()
                        .filter(|n| {
                            n.roles.contains(&Role::Edge) || n.roles.contains(&Role::Ingest)
                        })
                        .partition(|n| n.roles.contains(&Role::Edge));
                    // `up` is an edge and an ingest at once.
                    ingests.extend(
                        known
                            .iter()
                            .filter(|n| n.roles.contains(&Role::Ingest))
                            .cloned(),
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "node directory unavailable; keeping the last known edges")
                }
            }
            tokio::join!(self.refresh(&known), self.refresh_ingests(&ingests));
            let clients = self.rebuild_map();
            if !clients.is_empty() {
                tokio::spawn(Arc::clone(&self).probe_clients(clients));
            }
            tokio::select! {
                _ = tokio::time::sleep(self.health_interval) => {}
                _ = shutdown.changed() => break,
            }
        }
    }

    /// Resolves once another router of the deployment, not draining itself, is in the
    /// node directory to answer in this one's place: a draining router answers until
    /// then (or until its server's `drain_timeout`). With no other router at all there
    /// is nobody to wait for.
    pub async fn handed_over(self: Arc<Self>, us: String) {
        loop {
            if let Ok(nodes) = self.registry.nodes().await {
                let mut others = nodes
                    .iter()
                    .filter(|n| n.roles.contains(&Role::Router) && n.id != us)
                    .peekable();
                if others.peek().is_none() {
                    return;
                }
                if others.any(|n| !n.draining) {
                    tracing::info!("router drained: another router answers");
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn refresh(&self, nodes: &[NodeRecord]) {
        let checks = nodes.iter().map(|node| async move {
            let playback = node.addresses.playback.clone()?;
            // A draining edge is named no more (and its health check fails, which tells
            // it routers have seen it go).
            let answers = check_health(&self.client, &playback).await;
            let healthy = answers && !node.draining;
            let state = EdgeState {
                id: node.id.clone(),
                site: node.site.clone(),
                addrs: playback_addr(&playback).into_iter().collect(),
                healthy,
                viewer_connections: node.load.viewer_connections,
                capacity: node.capacity.or(self.edge_capacity),
            };
            Some((state, playback))
        });
        let mut edges = Edges::default();
        for (state, playback) in futures::future::join_all(checks)
            .await
            .into_iter()
            .flatten()
        {
            edges.playback.insert(state.id.clone(), playback);
            edges.states.push(state);
        }
        let healthy = edges.states.iter().filter(|e| e.healthy).count();
        metrics::gauge!("streamcdn_router_edges", "state" => "healthy").set(healthy as f64);
        metrics::gauge!("streamcdn_router_edges", "state" => "unhealthy")
            .set((edges.states.len() - healthy) as f64);
        for edge in self.state().set_edges(edges) {
            tracing::info!(
                edge = edge.id,
                site = edge.site,
                healthy = edge.healthy,
                "edge state"
            );
        }
    }

    /// Rebuilds the ingest servers the ingest name answers with: those announcing an SRT
    /// address, healthy while their origin answers the router's check and they are not
    /// draining.
    async fn refresh_ingests(&self, nodes: &[NodeRecord]) {
        let checks = nodes.iter().map(|node| async move {
            let srt = node.addresses.srt.as_deref()?;
            let addr = srt.parse::<SocketAddr>().ok()?.ip();
            let answers = !node.origin.is_empty() && check_health(&self.client, &node.origin).await;
            Some(IngestServer {
                id: node.id.clone(),
                cluster: node.cluster.clone(),
                site: node.site.clone(),
                addrs: vec![addr],
                healthy: answers && !node.draining,
                publishers: node.load.publishers,
                cpu: node.load.cpu,
            })
        });
        let servers: Vec<IngestServer> = futures::future::join_all(checks)
            .await
            .into_iter()
            .flatten()
            .collect();
        let healthy = servers.iter().filter(|s| s.healthy).count();
        metrics::gauge!("streamcdn_router_ingests", "state" => "healthy").set(healthy as f64);
        metrics::gauge!("streamcdn_router_ingests", "state" => "unhealthy")
            .set((servers.len() - healthy) as f64);
        for server in self.state().set_ingests(servers) {
            tracing::info!(
                ingest = server.id,
                cluster = server.cluster,
                healthy = server.healthy,
                "ingest state"
            );
        }
    }

    /// Asks the healthy edges without a recent sample to probe each client, and records
    /// what they report.
    async fn probe_clients(self: Arc<Self>, clients: Vec<IpAddr>) {
        let (key, http) = (&self.deployment_key, &self.client);
        let now = now_ms();
        let mut asks = Vec::new();
        for client in clients {
            // What other routers (and edges' passive samples) already measured counts:
            // only the edges without a recent sample are asked.
            let shared = self.pull_shared(ClientPrefix::of(client)).await;
            for (edge, playback) in self.state().edges_to_probe(&shared, now) {
                let request = ProbeRequest::new(client, PROBE_ATTEMPTS, now).for_edge(&edge);
                asks.push(async move {
                    let report = ask_probe(http, key, &playback, &request).await;
                    (request, edge, report)
                });
            }
        }
        for (request, edge, report) in futures::future::join_all(asks).await {
            let outcome = match report {
                Ok(report) if report.answers(&request) && report.edge == edge => {
                    let outcome = self.state().record_report(&report);
                    if outcome == ReportOutcome::Measured {
                        metrics::histogram!("streamcdn_router_probe_rtt_seconds")
                            .record(report.rtt_ms.unwrap_or_default() / 1000.0);
                        if let Ok(json) = serde_json::to_string(&report) {
                            let shared = self
                                .registry
                                .record_sample(
                                    &request.prefix.to_string(),
                                    &edge,
                                    json,
                                    SHARED_SAMPLE_TTL,
                                )
                                .await;
                            if let Err(e) = shared {
                                tracing::debug!(error = %e, "cannot share a measurement");
                            }
                        }
                    }
                    outcome.as_str()
                }
                Ok(_) => "mismatched",
                Err(e) => {
                    tracing::debug!(edge, prefix = %request.prefix, error = e, "probe request failed");
                    "failed"
                }
            };
            metrics::counter!("streamcdn_router_probes_total", "outcome" => outcome).increment(1);
        }
    }

    /// Records the measurements of `prefix` that the deployment shares in the registry;
    /// returns which edges they are from and when they were taken.
    async fn pull_shared(&self, prefix: ClientPrefix) -> Vec<(String, Millis)> {
        let samples = match self.registry.samples(&prefix.to_string()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "shared measurements unavailable");
                return Vec::new();
            }
        };
        // Parsed before the state is locked: only the recording holds it.
        let mut rum = Vec::new();
        let mut reports = Vec::new();
        for text in samples {
            if let Ok(shared) = serde_json::from_str::<SharedRum>(&text) {
                rum.push(shared);
            } else if let Ok(report) = serde_json::from_str::<ProbeReport>(&text) {
                if report.prefix == prefix {
                    reports.push(report);
                }
            }
        }
        let mut state = self.state();
        for shared in rum {
            state.record_shared_rum(
                prefix,
                &shared.rum_edge,
                shared.client,
                shared.at_ms,
                shared.cost_ms,
            );
        }
        let mut found = Vec::new();
        for report in reports {
            if state.record_report(&report) != ReportOutcome::NoAnswer {
                found.push((report.edge, report.measured_at_ms));
            }
        }
        found
    }

    /// DNS over UDP until shutdown, on a blocking thread of its own: it sleeps in
    /// `recvmmsg` until queries arrive and answers each batch with one `sendmmsg`, with no
    /// readiness polling or task wakeups per packet (see the `udp` module). Of the
    /// threads given clones of one socket, the first waits on it and the others help
    /// only while it falls behind (`udp::Crew`).
    pub async fn serve_udp(
        self: Arc<Self>,
        socket: std::net::UdpSocket,
        shutdown: watch::Receiver<bool>,
    ) {
        let served = tokio::task::spawn_blocking(move || self.udp_loop(&socket, &shutdown));
        if let Err(e) = served.await {
            tracing::error!(error = %e, "DNS UDP thread failed");
        }
    }

    fn udp_loop(&self, socket: &std::net::UdpSocket, shutdown: &watch::Receiver<bool>) {
        // Blocking, but waking this often to see a shutdown on an idle socket.
        let set_up = socket
            .set_nonblocking(false)
            .and_then(|()| socket.set_read_timeout(Some(UDP_SHUTDOWN_CHECK)))
            .and_then(|()| self.udp_crews.join(socket));
        let (crew, leads) = match set_up {
            Ok(joined) => joined,
            Err(e) => {
                tracing::error!(error = %e, "cannot set up the DNS UDP socket");
                return;
            }
        };
        let mut batch = udp::Batch::default();
        let mut replies = udp::Replies::default();
        let mut thread = UdpThread::default();
        let mut cached_from = self.view();
        // A helper works from a call until it finds the queue drained.
        let mut helping = false;
        while !*shutdown.borrow() {
            if !leads && !helping {
                helping = crew.wait_for_call(UDP_SHUTDOWN_CHECK);
                continue;
            }
            let received = match batch.recv(socket, leads) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    helping = false;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "DNS UDP receive failed");
                    helping = false;
                    continue;
                }
            };
            // A full batch: more are probably queued, so one more thread is called in (a
            // helper keeps going while its batches are full).
            let more_queued = received == udp::BATCH;
            if more_queued {
                crew.call();
            }
            helping = more_queued;
            let view = self.view();
            if !view.same(&cached_from) {
                thread.cache.clear();
                cached_from = view.clone();
            }
            for i in 0..received {
                let Some((request, peer)) = batch.request(i) else {
                    continue;
                };
                replies.add(i, |out| {
                    self.respond_udp(&view, &mut thread, request, peer, out)
                });
            }
            self.counters.add(&mut thread.tally);
            self.responses.add(&mut thread.tally.responses);
            self.note_asked(thread.asked.drain(..));
            let failed = batch.send(socket, &mut replies);
            if failed > 0 {
                tracing::debug!(failed, "DNS UDP send failed");
            }
        }
    }

    /// DNS over TCP (two-byte length prefix, several queries per connection) until
    /// shutdown; idle or stalled clients are disconnected.
    pub async fn serve_tcp(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let permits = Arc::new(Semaphore::new(MAX_TCP_CLIENTS));
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, "DNS TCP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                metrics::counter!("streamcdn_router_dns_tcp_refused_total").increment(1);
                continue;
            };
            let service = self.clone();
            tokio::spawn(async move {
                service.tcp_client(stream, peer).await;
                drop(permit);
            });
        }
    }

    async fn tcp_client(&self, mut stream: TcpStream, peer: SocketAddr) {
        let mut message = Vec::new();
        loop {
            let read = async {
                let len = stream.read_u16().await? as usize;
                message.resize(len, 0);
                stream.read_exact(&mut message).await
            };
            match tokio::time::timeout(TCP_IDLE, read).await {
                Ok(Ok(_)) => {}
                // Closed, broken, or idle/stalled past the limit.
                _ => return,
            }
            let Some(response) = self.respond(&message, peer.ip(), Transport::Tcp) else {
                return;
            };
            let Ok(len) = u16::try_from(response.len()) else {
                return;
            };
            let mut framed = Vec::with_capacity(response.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&response);
            if tokio::time::timeout(TCP_IDLE, stream.write_all(&framed))
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// HTTP redirect mode: any playback URL answers `302` to the same path (and query)
    /// on the edge chosen for the connection's client address. Needs `ConnectInfo` in
    /// the request's extensions.
    pub fn redirect_router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(RUM_JOB_PATH, axum::routing::get(rum_job))
            .route(
                RUM_BEACON_PATH,
                axum::routing::post(rum_beacon)
                    .layer(axum::extract::DefaultBodyLimit::max(rum::MAX_BEACON_BYTES)),
            )
            .fallback(redirect)
            .with_state(self.clone())
    }

    /// `GET /api/v1/routing/edges`, `/api/v1/routing/map` (with its history) and
    /// `/api/v1/routing/explain?ip=ADDR`.
    pub fn admin_router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(
                "/api/v1/routing/edges",
                axum::routing::get(|State(s): State<Arc<Self>>| async move {
                    axum::Json(s.known_edges())
                }),
            )
            .route("/api/v1/routing/explain", axum::routing::get(explain))
            .route(
                "/api/v1/routing/map",
                axum::routing::get(|State(s): State<Arc<Self>>| async move {
                    axum::Json(s.map_snapshot())
                }),
            )
            .with_state(self.clone())
    }
}

fn text(status: StatusCode, body: &str) -> Response {
    (status, format!("{body}\n")).into_response()
}

/// A browser's download time for one edge, as filed in the registry for other routers.
#[derive(Serialize, serde::Deserialize)]
struct SharedRum {
    rum_edge: String,
    client: IpAddr,
    cost_ms: f64,
    at_ms: Millis,
}

/// Jobs and beacons come from pages on any origin.
const RUM_CORS: (header::HeaderName, HeaderValue) = (
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    HeaderValue::from_static("*"),
);

async fn rum_job(
    State(service): State<Arc<RouterService>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    (
        [
            RUM_CORS,
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        axum::Json(service.rum_job(peer.ip())),
    )
        .into_response()
}

async fn rum_beacon(
    State(service): State<Arc<RouterService>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: bytes::Bytes,
) -> Response {
    match service.rum_beacon(&body, peer.ip()).await {
        Ok(()) => ([RUM_CORS], StatusCode::NO_CONTENT).into_response(),
        Err(rejection) => {
            let status =
                StatusCode::from_u16(rejection.status()).unwrap_or(StatusCode::BAD_REQUEST);
            ([RUM_CORS], text(status, &rejection.to_string())).into_response()
        }
    }
}

async fn redirect(
    State(service): State<Arc<RouterService>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let uri = request.uri();
    match Target::parse(uri.path()) {
        Ok(_) => {}
        Err(UrlError::Invalid | UrlError::BadDirective(_)) => {
            return text(StatusCode::BAD_REQUEST, "invalid path")
        }
        Err(UrlError::Unknown) => return text(StatusCode::NOT_FOUND, "no such object"),
    }
    let prefix = ClientPrefix::of(peer.ip());
    service.note_asked([(prefix, peer.ip())]);
    let view = service.view();
    let (chosen, _, _) = service.route(&view, prefix);
    let Some(base) = chosen.first().and_then(|id| view.edges.playback.get(id)) else {
        metrics::counter!("streamcdn_router_redirects_total", "result" => "no_edge").increment(1);
        return text(StatusCode::SERVICE_UNAVAILABLE, "no healthy edge");
    };
    let location = match uri.query() {
        Some(q) => format!("{base}{}?{q}", uri.path()),
        None => format!("{base}{}", uri.path()),
    };
    let Ok(location) = HeaderValue::try_from(location) else {
        return text(StatusCode::BAD_REQUEST, "invalid query");
    };
    metrics::counter!("streamcdn_router_redirects_total", "result" => "redirected").increment(1);
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            // The choice is per client and changes with measurements.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response()
}

/// Largest probe report read from an edge.
const MAX_REPORT_BYTES: usize = 64 * 1024;

/// POSTs a signed probe request to an edge and reads its report.
async fn ask_probe(
    client: &Client,
    key: &DeploymentKey,
    playback: &str,
    request: &ProbeRequest,
) -> Result<ProbeReport, String> {
    let (body, tag) = request.signed(key).map_err(|e| e.to_string())?;
    let http = hyper::Request::post(format!("{playback}{PROBE_PATH}"))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(PROBE_HEADER, tag)
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let response = client.request(http).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(
            response.into_body(),
            MAX_REPORT_BYTES,
        ))
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "edge answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(64)]).trim()
            ));
        }
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    };
    // The edge takes `attempts` probes of at most a second each before it answers.
    let timeout = Duration::from_secs(u64::from(request.attempts) + 2);
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| "probe timed out".to_owned())?
}

#[derive(serde::Deserialize)]
struct ExplainQuery {
    ip: String,
}

async fn explain(
    State(service): State<Arc<RouterService>>,
    UrlQuery(query): UrlQuery<ExplainQuery>,
) -> Response {
    match query.ip.parse::<IpAddr>() {
        Ok(ip) => axum::Json(service.preview(ClientPrefix::of(ip))).into_response(),
        Err(_) => text(
            StatusCode::BAD_REQUEST,
            &format!("{:?} is not an IP address", query.ip),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playback_urls_give_their_address() {
        assert_eq!(
            playback_addr("http://127.0.0.5:8080"),
            "127.0.0.5".parse().ok()
        );
        assert_eq!(playback_addr("http://[::1]:8080"), "::1".parse().ok());
        assert_eq!(playback_addr("http://10.0.0.1"), "10.0.0.1".parse().ok());
        assert_eq!(playback_addr("http://edge.example:8080"), None);
        assert_eq!(playback_addr("ftp://10.0.0.1"), None);
    }
}
