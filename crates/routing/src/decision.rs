//! The decision: which edges answer a client prefix.
//!
//! Pure logic over explicit inputs. Time is a `u64` of milliseconds ([`Millis`]) passed
//! in by the caller, the same clock as the registry's `measured_at_ms` (Unix epoch), so
//! samples can be shared between routers and tests need no sleeps.
//!
//! Order of preference for a prefix:
//! 1. **Measured**: healthy edges with fresh samples, ranked by
//!    `score = effective_rtt × load_multiplier` (see [`Estimator`] and
//!    [`DeciderConfig::capacity_soft_limit`]), with hysteresis against the prefix's last
//!    choice and deterministic spreading among near-equal edges.
//! 2. **Static map**: the least loaded healthy edge of the site the operator's CIDR map
//!    names for the prefix.
//! 3. **Least loaded**: the least loaded healthy edge anywhere.
//!
//! Until every healthy edge has a recent sample, [`Decision::needs_probe`] asks the caller
//! to have the edges probe the client.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::prefix::{Cidr, ClientPrefix, StaticMap};

/// Milliseconds on the caller's clock (Unix epoch in the binary).
pub type Millis = u64;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecisionError {
    #[error("measurement loss {0} is not a fraction between 0 and 1")]
    BadLoss(f32),
    #[error("measurement names no edge")]
    NoEdge,
    #[error("router decision config: {0}")]
    Config(&'static str),
}

/// An edge as the decision sees it (the binary maps node records into these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EdgeState {
    pub id: String,
    pub site: String,
    /// For the DNS answer; not used by the decision (an edge without addresses can still
    /// be a redirect target).
    pub addrs: Vec<IpAddr>,
    /// The router's own health check and the directory agree it serves.
    pub healthy: bool,
    pub viewer_connections: u64,
    /// Most viewer connections it should hold; `None` when unknown (never demoted).
    pub capacity: Option<u64>,
}

/// Where a sample came from; all count alike in the estimate today, kept for explaining.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The edge probed the client (TCP connect or ICMP echo).
    Probe,
    /// The kernel's RTT of a real viewer connection (`TCP_INFO`).
    Passive,
    /// Real-user measurement from a player.
    Rum,
}

/// One sample of the path from an edge to a client prefix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub edge: String,
    pub rtt: Duration,
    /// Fraction of probes lost, 0..=1.
    pub loss: f32,
    pub at: Millis,
    pub source: Source,
}

fn ms(d: Duration) -> Millis {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn ms_f64(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A map keyed by client prefix that keeps at most `cap` entries, evicting the least
/// recently touched: memory stays bounded whatever clients (or spoofed ECS) show up.
#[derive(Debug, Clone)]
struct Lru<V> {
    map: HashMap<ClientPrefix, (u64, V)>,
    order: BTreeMap<u64, ClientPrefix>,
    next: u64,
    cap: usize,
}

impl<V> Lru<V> {
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
            cap: cap.max(1),
        }
    }

    fn get(&self, key: &ClientPrefix) -> Option<&V> {
        self.map.get(key).map(|(_, v)| v)
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values().map(|(_, v)| v)
    }

    /// The entry for `key`, created by `make` if absent, marked most recently used.
    fn touch(&mut self, key: ClientPrefix, make: impl FnOnce() -> V) -> &mut V {
        let tick = self.next;
        self.next += 1;
        if !self.map.contains_key(&key) {
            while self.map.len() >= self.cap {
                match self.order.pop_first() {
                    Some((_, oldest)) => {
                        self.map.remove(&oldest);
                    }
                    None => break,
                }
            }
        }
        let slot = self.map.entry(key).or_insert_with(|| (tick, make()));
        let previous = std::mem::replace(&mut slot.0, tick);
        if previous != tick {
            self.order.remove(&previous);
        }
        self.order.insert(tick, key);
        &mut slot.1
    }
}

/// Bounds of the [`Measurements`] store. Worst case memory is about
/// `max_prefixes × max_edges_per_prefix × samples_per_edge × 24` bytes plus the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    pub max_prefixes: usize,
    pub max_edges_per_prefix: usize,
    pub samples_per_edge: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_prefixes: 65_536,
            max_edges_per_prefix: 16,
            samples_per_edge: 8,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Microseconds, saturating: compact, and finer than any path we route on.
    rtt_us: u32,
    loss: f32,
    at: Millis,
    source: Source,
}

#[derive(Debug, Clone, Default)]
struct PrefixSamples {
    edges: BTreeMap<String, VecDeque<Sample>>,
}

impl PrefixSamples {
    fn newest(&self) -> Option<Millis> {
        self.edges.values().flatten().map(|s| s.at).max()
    }
}

/// How samples turn into one number per edge.
///
/// Samples older than `max_age` are ignored. The rest are averaged with weight
/// `2^(-age / half_life)`, so a path change shows within about a half-life while one odd
/// sample is smoothed:
///
/// `rtt = Σ wᵢ·rttᵢ / Σ wᵢ`, `loss = Σ wᵢ·lossᵢ / Σ wᵢ`,
/// `effective_rtt = rtt × (1 + loss_penalty × loss)`.
///
/// With the default penalty 10, 10 % loss counts like doubling the RTT: lost packets
/// stall a stream far more than a few extra milliseconds do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimator {
    pub max_age: Duration,
    pub half_life: Duration,
    pub loss_penalty: f64,
}

impl Default for Estimator {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(300),
            half_life: Duration::from_secs(60),
            loss_penalty: 10.0,
        }
    }
}

/// The recency-weighted view of one edge's path to one prefix.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub rtt_ms: f64,
    pub loss: f64,
    pub effective_rtt_ms: f64,
    /// Fresh samples used.
    pub samples: usize,
    pub newest_age_ms: u64,
    pub newest_source: Source,
}

/// Recent samples per client prefix per edge, bounded (see [`StoreLimits`]).
#[derive(Debug, Clone)]
pub struct Measurements {
    limits: StoreLimits,
    prefixes: Lru<PrefixSamples>,
}

impl Default for Measurements {
    fn default() -> Self {
        Self::new(StoreLimits::default())
    }
}

impl Measurements {
    /// Limits below 1 are raised to 1.
    pub fn new(limits: StoreLimits) -> Self {
        let limits = StoreLimits {
            max_prefixes: limits.max_prefixes.max(1),
            max_edges_per_prefix: limits.max_edges_per_prefix.max(1),
            samples_per_edge: limits.samples_per_edge.max(1),
        };
        Self {
            limits,
            prefixes: Lru::new(limits.max_prefixes),
        }
    }

    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    /// Keeps the sample, dropping the oldest of that edge beyond `samples_per_edge`, the
    /// edge with the stalest samples beyond `max_edges_per_prefix`, and the least
    /// recently updated prefix beyond `max_prefixes`. Reports come from the network, so
    /// nonsense is refused rather than trusted.
    pub fn record(&mut self, prefix: ClientPrefix, m: Measurement) -> Result<(), DecisionError> {
        if !(m.loss.is_finite() && (0.0..=1.0).contains(&m.loss)) {
            return Err(DecisionError::BadLoss(m.loss));
        }
        if m.edge.is_empty() {
            return Err(DecisionError::NoEdge);
        }
        let limits = self.limits;
        let sample = Sample {
            rtt_us: u32::try_from(m.rtt.as_micros()).unwrap_or(u32::MAX),
            loss: m.loss,
            at: m.at,
            source: m.source,
        };
        let entry = self.prefixes.touch(prefix, PrefixSamples::default);
        if !entry.edges.contains_key(&m.edge) && entry.edges.len() >= limits.max_edges_per_prefix {
            let stalest = entry
                .edges
                .iter()
                .min_by_key(|(_, q)| q.iter().map(|s| s.at).max().unwrap_or(0))
                .map(|(id, _)| id.clone());
            if let Some(id) = stalest {
                entry.edges.remove(&id);
            }
        }
        let queue = entry.edges.entry(m.edge).or_default();
        if queue.len() >= limits.samples_per_edge {
            // Keep the most recent by sample time: reports may arrive out of order.
            let oldest = queue
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.at)
                .map(|(i, s)| (i, s.at));
            match oldest {
                Some((i, at)) if at <= sample.at => {
                    queue.remove(i);
                }
                _ => return Ok(()),
            }
        }
        queue.push_back(sample);
        Ok(())
    }

    /// Whether any sample for the prefix is at most `max_age` old.
    pub fn fresh_for(&self, prefix: ClientPrefix, now: Millis, max_age: Duration) -> bool {
        self.prefixes
            .get(&prefix)
            .and_then(PrefixSamples::newest)
            .is_some_and(|at| now.saturating_sub(at) <= ms(max_age))
    }

    /// The edge's estimate for the prefix from its fresh samples (see [`Estimator`]).
    pub fn estimate(
        &self,
        prefix: ClientPrefix,
        edge: &str,
        now: Millis,
        estimator: &Estimator,
    ) -> Option<Estimate> {
        let queue = self.prefixes.get(&prefix)?.edges.get(edge)?;
        let max_age = ms(estimator.max_age);
        let half_life = ms_f64(estimator.half_life);
        let (mut sum_w, mut rtt, mut loss, mut samples) = (0.0_f64, 0.0_f64, 0.0_f64, 0_usize);
        let mut newest: Option<(u64, Source)> = None;
        for s in queue {
            // A sample stamped in the future (clock skew) counts as new.
            let age = now.saturating_sub(s.at);
            if age > max_age {
                continue;
            }
            let w = if half_life > 0.0 {
                (-(age as f64) / half_life).exp2().max(f64::MIN_POSITIVE)
            } else {
                1.0
            };
            sum_w += w;
            rtt += w * f64::from(s.rtt_us) / 1000.0;
            loss += w * f64::from(s.loss);
            samples += 1;
            if newest.is_none_or(|(a, _)| age < a) {
                newest = Some((age, s.source));
            }
        }
        let (newest_age_ms, newest_source) = newest?;
        let rtt_ms = rtt / sum_w;
        let loss = (loss / sum_w).clamp(0.0, 1.0);
        Some(Estimate {
            rtt_ms,
            loss,
            effective_rtt_ms: rtt_ms * (1.0 + estimator.loss_penalty * loss),
            samples,
            newest_age_ms,
            newest_source,
        })
    }

    /// Prefixes held.
    pub fn prefix_count(&self) -> usize {
        self.prefixes.len()
    }

    /// Samples held (walks the store).
    pub fn sample_count(&self) -> usize {
        self.prefixes
            .values()
            .flat_map(|p| p.edges.values())
            .map(VecDeque::len)
            .sum()
    }
}

/// Tuning of the [`Decider`]; [`DeciderConfig::validate`] at start.
#[derive(Debug, Clone, PartialEq)]
pub struct DeciderConfig {
    pub estimator: Estimator,
    /// Ask for new probes once an edge's newest sample for the prefix is older than this,
    /// well before `max_age`, so a busy prefix never drops to the fallback.
    pub probe_after: Duration,
    /// Leave the previous choice only if the new best scores lower by more than this
    /// fraction of the previous score...
    pub hysteresis_ratio: f64,
    /// ...and by more than this: answers must not flap on noise.
    pub hysteresis_min: Duration,
    /// Edges scoring within `max(best × near_equal, near_equal_min)` of the best share
    /// the prefixes choosing anew, so a newly best edge does not take a herd at once.
    pub near_equal: f64,
    pub near_equal_min: Duration,
    /// Above this fraction of its capacity an edge's score grows linearly, doubling at
    /// 100 %; at or above 100 % it is excluded unless no healthy edge is below.
    pub capacity_soft_limit: f64,
    /// Edges per answer.
    pub answers: usize,
    /// Prefixes whose last choice is remembered (for hysteresis).
    pub max_remembered: usize,
    pub weights: Weights,
}

/// How much each measurement source counts in a score (ms × weight, summed). A source
/// counts for a prefix only when it has a value for every eligible edge, so that edges
/// are compared on the same terms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    /// The network estimate: edges' probes and the passive RTT of viewer connections.
    pub network: f64,
    /// Real-user measurement: the median download time browsers report.
    pub rum: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            network: 1.0,
            rum: 1.0,
        }
    }
}

impl Default for DeciderConfig {
    fn default() -> Self {
        Self {
            estimator: Estimator::default(),
            probe_after: Duration::from_secs(60),
            hysteresis_ratio: 0.15,
            hysteresis_min: Duration::from_millis(5),
            near_equal: 0.10,
            near_equal_min: Duration::from_millis(1),
            capacity_soft_limit: 0.8,
            answers: 1,
            max_remembered: 65_536,
            weights: Weights::default(),
        }
    }
}

impl DeciderConfig {
    pub fn validate(&self) -> Result<(), DecisionError> {
        let e = &self.estimator;
        let fraction = |x: f64| x.is_finite() && (0.0..1.0).contains(&x);
        if e.max_age.is_zero() {
            return Err(DecisionError::Config("max_age must be positive"));
        }
        if e.half_life.is_zero() {
            return Err(DecisionError::Config("half_life must be positive"));
        }
        if !(e.loss_penalty.is_finite() && e.loss_penalty >= 0.0) {
            return Err(DecisionError::Config(
                "loss_penalty must be a non-negative number",
            ));
        }
        if self.probe_after > e.max_age {
            return Err(DecisionError::Config(
                "probe_after must not exceed max_age (samples would expire before re-probing)",
            ));
        }
        if !fraction(self.hysteresis_ratio) {
            return Err(DecisionError::Config("hysteresis_ratio must be in [0, 1)"));
        }
        if !(self.near_equal.is_finite() && self.near_equal >= 0.0) {
            return Err(DecisionError::Config(
                "near_equal must be a non-negative number",
            ));
        }
        if !fraction(self.capacity_soft_limit) {
            return Err(DecisionError::Config(
                "capacity_soft_limit must be in [0, 1)",
            ));
        }
        if self.answers == 0 {
            return Err(DecisionError::Config("answers must be at least 1"));
        }
        if self.max_remembered == 0 {
            return Err(DecisionError::Config("max_remembered must be at least 1"));
        }
        let weight = |w: f64| w.is_finite() && w >= 0.0;
        let Weights { network, rum } = self.weights;
        if !(weight(network) && weight(rum)) || network + rum == 0.0 {
            return Err(DecisionError::Config(
                "weights must be non-negative numbers, not both 0",
            ));
        }
        Ok(())
    }
}

/// Which rule produced a decision (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecisionSource {
    Measured,
    StaticMap,
    LeastLoaded,
    NoHealthyEdge,
}

impl DecisionSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Measured => "measured",
            Self::StaticMap => "static-map",
            Self::LeastLoaded => "least-loaded",
            Self::NoHealthyEdge => "no-healthy-edge",
        }
    }
}

/// Why the first edge is first.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Reason {
    /// It has the best score, alone within the near-equal band.
    Best,
    /// Picked among near-equal edges by rendezvous hash of the prefix.
    Spread {
        among: Vec<String>,
    },
    /// The prefix's previous choice, kept: `best` does not beat it by the hysteresis.
    Kept {
        best: String,
    },
    /// The static map's site for the prefix.
    StaticMap {
        cidr: Cidr,
        site: String,
    },
    /// Least loaded; `map_site` is the static map's site if it had no usable edge.
    LeastLoaded {
        map_site: Option<String>,
    },
    NoHealthyEdge,
}

/// One edge's inputs and score, for `GET /api/v1/routing/explain`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CandidateScore {
    pub edge: String,
    pub site: String,
    pub healthy: bool,
    pub viewer_connections: u64,
    pub capacity: Option<u64>,
    /// Recency-weighted RTT of fresh samples; `None`: no fresh sample.
    pub estimate_rtt_ms: Option<f64>,
    pub loss: Option<f64>,
    pub samples: usize,
    pub newest_age_ms: Option<u64>,
    /// `viewer_connections / capacity`, when the capacity is known.
    pub load_factor: Option<f64>,
    /// The browsers' median download time for this prefix, when enough clients sent it.
    pub rum_ms: Option<f64>,
    pub rum_clients: usize,
    /// What each source added to the score (ms × weight, before load); a source is
    /// absent when it did not count for this prefix.
    pub contributions: Contributions,
    /// The sum of the contributions × load multiplier, lower is better; `None` without
    /// any measurement.
    pub score: Option<f64>,
    pub excluded: Option<&'static str>,
}

/// A prefix's real-user score for one edge (the median the `rum` module keeps).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RumScore {
    /// Median over client addresses of each one's latest download cost.
    pub median_ms: f64,
    /// Distinct client addresses behind it.
    pub clients: usize,
}

/// What each measurement source added to an edge's score.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Contributions {
    pub network: Option<f64>,
    pub rum: Option<f64>,
}

/// The answer for one client prefix.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub prefix: ClientPrefix,
    /// Ranked edge ids, healthy only, at most `answers`; empty only if no edge is healthy.
    pub edges: Vec<String>,
    pub source: DecisionSource,
    /// ECS scope: the prefix length the answer holds for.
    pub scope_len: u8,
    /// Some healthy edge has no sample newer than `probe_after` for this prefix: the
    /// caller should ask the edges whose `newest_age_ms` is `None` or old to probe it
    /// (deduplicated and within the probe budget; this is set on every query until then).
    pub needs_probe: bool,
    /// Real-user measurements counted in the scores.
    pub rum_used: bool,
    /// For a resolver's prefix (a query without ECS): the client prefix behind that
    /// resolver whose measurements decided, learned from measurement names.
    pub measured_as: Option<ClientPrefix>,
    pub reason: Reason,
    /// Every input edge, in input order.
    pub explain: Vec<CandidateScore>,
}

/// What a decision is made from, besides the prefix and the time.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub edges: &'a [EdgeState],
    pub measurements: &'a Measurements,
    /// The prefix's real-user scores by edge id.
    pub rum: &'a HashMap<String, RumScore>,
    pub static_map: &'a StaticMap,
}

struct Remembered {
    edge: String,
    at: Millis,
}

/// Decides per prefix, remembering each prefix's last measured choice (bounded) so that
/// answers do not flap.
pub struct Decider {
    config: DeciderConfig,
    last: Lru<Remembered>,
}

impl std::fmt::Debug for Decider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decider")
            .field("config", &self.config)
            .field("remembered", &self.last.len())
            .finish()
    }
}

struct Candidate<'a> {
    edge: &'a EdgeState,
    estimate: Option<Estimate>,
    rum: Option<RumScore>,
    load_factor: Option<f64>,
    contributions: Contributions,
    score: Option<f64>,
    excluded: Option<&'static str>,
}

impl Candidate<'_> {
    fn eligible(&self) -> bool {
        self.excluded.is_none()
    }
}

impl Decider {
    pub fn new(config: DeciderConfig) -> Result<Self, DecisionError> {
        config.validate()?;
        let last = Lru::new(config.max_remembered);
        Ok(Self { config, last })
    }

    pub fn config(&self) -> &DeciderConfig {
        &self.config
    }

    /// Prefixes whose last choice is remembered.
    pub fn remembered(&self) -> usize {
        self.last.len()
    }

    /// The score multiplier for load: 1 up to the soft limit, then linear to 2 at full
    /// capacity (and on beyond, for when every edge is full).
    fn load_multiplier(&self, load_factor: Option<f64>) -> f64 {
        let soft = self.config.capacity_soft_limit;
        match load_factor {
            Some(lf) if lf > soft => 1.0 + (lf - soft) / (1.0 - soft),
            _ => 1.0,
        }
    }

    /// The decision for `client`; the measured choice is remembered for the prefix's
    /// hysteresis.
    pub fn decide(&mut self, client: ClientPrefix, inputs: &Inputs<'_>, now: Millis) -> Decision {
        self.decide_as(client, inputs, now, true)
    }

    /// What [`Decider::decide`] would answer now, remembering nothing: for explaining
    /// and for measurement jobs, which must not move a prefix's answer.
    pub fn preview(&mut self, client: ClientPrefix, inputs: &Inputs<'_>, now: Millis) -> Decision {
        self.decide_as(client, inputs, now, false)
    }

    /// Measured first, then the static map, then the least loaded edge.
    fn decide_as(
        &mut self,
        client: ClientPrefix,
        inputs: &Inputs<'_>,
        now: Millis,
        remember: bool,
    ) -> Decision {
        let (cands, rum_used) = self.candidates(client, inputs, now);
        let probe_after = ms(self.config.probe_after);
        let needs_probe = cands
            .iter()
            .any(|c| c.eligible() && c.estimate.is_none_or(|e| e.newest_age_ms > probe_after));
        let explain: Vec<CandidateScore> = cands.iter().map(explain_one).collect();
        let answers = self.config.answers;
        let decision = |edges: Vec<String>, source, scope_len, reason| Decision {
            prefix: client,
            edges: edges.into_iter().take(answers).collect(),
            source,
            scope_len,
            needs_probe,
            rum_used,
            measured_as: None,
            reason,
            explain,
        };

        let eligible: Vec<&Candidate<'_>> = cands.iter().filter(|c| c.eligible()).collect();
        if eligible.is_empty() {
            return decision(
                Vec::new(),
                DecisionSource::NoHealthyEdge,
                0,
                Reason::NoHealthyEdge,
            );
        }
        let by_load = least_loaded_order(&eligible);
        if let Some((ranked, reason)) = self.measured(client, &eligible, &by_load, now, remember) {
            return decision(ranked, DecisionSource::Measured, client.len(), reason);
        }
        match static_choice(client, inputs.static_map, &by_load) {
            Ok((ranked, scope_len, reason)) => {
                decision(ranked, DecisionSource::StaticMap, scope_len, reason)
            }
            // Least loaded. The choice does not depend on the client, but it is scoped to
            // the client's prefix all the same: with scope 0 a resolver would serve this
            // stopgap to every prefix for a TTL, hiding measured answers for the others.
            Err(map_site) => decision(
                by_load.iter().map(|c| c.edge.id.clone()).collect(),
                DecisionSource::LeastLoaded,
                client.len(),
                Reason::LeastLoaded { map_site },
            ),
        }
    }

    /// Every input edge as a candidate, excluded or scored; and whether RUM counted.
    fn candidates<'a>(
        &self,
        client: ClientPrefix,
        inputs: &Inputs<'a>,
        now: Millis,
    ) -> (Vec<Candidate<'a>>, bool) {
        let cfg = &self.config;
        let mut seen = HashSet::new();
        let mut cands: Vec<Candidate<'a>> = inputs
            .edges
            .iter()
            .map(|edge| {
                let load_factor = edge
                    .capacity
                    .map(|cap| edge.viewer_connections as f64 / cap.max(1) as f64);
                let excluded = if !seen.insert(edge.id.as_str()) {
                    Some("duplicate id")
                } else if !edge.healthy {
                    Some("unhealthy")
                } else {
                    None
                };
                Candidate {
                    edge,
                    estimate: inputs
                        .measurements
                        .estimate(client, &edge.id, now, &cfg.estimator),
                    rum: inputs.rum.get(&edge.id).copied(),
                    load_factor,
                    contributions: Contributions::default(),
                    score: None,
                    excluded,
                }
            })
            .collect();

        // Full edges take no new viewers, unless every healthy edge is full: an answer
        // to an overloaded edge beats no answer.
        let over = |c: &Candidate<'_>| c.load_factor.is_some_and(|lf| lf >= 1.0);
        if cands.iter().any(|c| c.eligible() && !over(c)) {
            for c in cands.iter_mut().filter(|c| c.eligible() && over(c)) {
                c.excluded = Some("over capacity");
            }
        }
        // RUM counts only when every eligible edge has it; then an edge without a
        // network estimate is taken as the worst one, not as free.
        let weights = cfg.weights;
        let rum_used = weights.rum > 0.0
            && cands.iter().any(Candidate::eligible)
            && cands
                .iter()
                .filter(|c| c.eligible())
                .all(|c| c.rum.is_some());
        let worst_network = cands
            .iter()
            .filter(|c| c.eligible())
            .filter_map(|c| c.estimate.map(|e| e.effective_rtt_ms))
            .max_by(f64::total_cmp);
        for c in cands.iter_mut() {
            let network = c.estimate.map(|e| e.effective_rtt_ms);
            c.contributions = if rum_used {
                Contributions {
                    network: network.or(worst_network).map(|ms| ms * weights.network),
                    rum: c.rum.map(|r| r.median_ms * weights.rum),
                }
            } else {
                // One source: its weight changes no ranking.
                Contributions { network, rum: None }
            };
            let Contributions { network, rum } = c.contributions;
            if network.is_some() || rum.is_some() {
                let sum = network.unwrap_or(0.0) + rum.unwrap_or(0.0);
                c.score = Some(sum * self.load_multiplier(c.load_factor));
            }
        }
        (cands, rum_used)
    }

    /// The measured answer, if any eligible edge has a score: the best, unless the
    /// previous choice is within hysteresis or near-equal edges share the prefixes;
    /// then the other measured edges by score, then unmeasured ones by load.
    fn measured(
        &mut self,
        client: ClientPrefix,
        eligible: &[&Candidate<'_>],
        by_load: &[&Candidate<'_>],
        now: Millis,
        remember: bool,
    ) -> Option<(Vec<String>, Reason)> {
        let mut measured: Vec<(&Candidate<'_>, f64)> = eligible
            .iter()
            .filter_map(|c| c.score.map(|s| (*c, s)))
            .collect();
        measured.sort_by(|a, b| {
            a.1.total_cmp(&b.1)
                .then_with(|| a.0.edge.id.cmp(&b.0.edge.id))
        });
        let &(best, best_score) = measured.first()?;
        let band = best_score
            + (best_score * self.config.near_equal).max(ms_f64(self.config.near_equal_min));
        let near: Vec<(&str, f64)> = measured
            .iter()
            .filter(|(_, s)| *s <= band)
            .map(|(c, s)| (c.edge.id.as_str(), *s))
            .collect();
        let max_age = ms(self.config.estimator.max_age);
        let previous = self
            .last
            .get(&client)
            .filter(|r| now.saturating_sub(r.at) <= max_age)
            .and_then(|r| measured.iter().find(|(c, _)| c.edge.id == r.edge))
            .map(|(c, s)| (c.edge.id.as_str(), *s));
        let spread = || {
            if near.len() > 1 {
                (
                    rendezvous(&client, &near),
                    Reason::Spread {
                        among: near.iter().map(|(id, _)| (*id).to_owned()).collect(),
                    },
                )
            } else {
                (best.edge.id.as_str(), Reason::Best)
            }
        };
        let (chosen, reason) = match previous {
            Some((prev, _)) if prev == best.edge.id => (prev, Reason::Best),
            Some((prev, prev_score)) => {
                let gain = prev_score - best_score;
                let worth_it = gain > prev_score * self.config.hysteresis_ratio
                    && gain > ms_f64(self.config.hysteresis_min);
                if prev_score <= band || !worth_it {
                    (
                        prev,
                        Reason::Kept {
                            best: best.edge.id.clone(),
                        },
                    )
                } else {
                    spread()
                }
            }
            None => spread(),
        };
        let chosen = chosen.to_owned();
        if remember {
            let slot = self.last.touch(client, || Remembered {
                edge: String::new(),
                at: now,
            });
            slot.edge.clone_from(&chosen);
            slot.at = now;
        }
        let rest_measured = measured.iter().map(|(c, _)| c.edge.id.as_str());
        let unmeasured = by_load
            .iter()
            .filter(|c| c.score.is_none())
            .map(|c| c.edge.id.as_str());
        let mut ranked = vec![chosen.clone()];
        ranked.extend(
            rest_measured
                .chain(unmeasured)
                .filter(|id| *id != chosen)
                .map(str::to_owned),
        );
        Some((ranked, reason))
    }
}

/// The static map's answer: the edges of the client's mapped site first (by load), then
/// the others; independent of the client within the map's scope, so ties are broken by
/// id, not by client. `Err` with the mapped site, if any, when no eligible edge is in it.
fn static_choice(
    client: ClientPrefix,
    static_map: &StaticMap,
    by_load: &[&Candidate<'_>],
) -> Result<(Vec<String>, u8, Reason), Option<String>> {
    let Some(m) = static_map.lookup(&client) else {
        return Err(None);
    };
    let mut ranked: Vec<String> = by_load
        .iter()
        .filter(|c| c.edge.site == m.site)
        .map(|c| c.edge.id.clone())
        .collect();
    if ranked.is_empty() {
        return Err(Some(m.site.to_owned()));
    }
    ranked.extend(
        by_load
            .iter()
            .filter(|c| c.edge.site != m.site)
            .map(|c| c.edge.id.clone()),
    );
    let reason = Reason::StaticMap {
        cidr: m.cidr,
        site: m.site.to_owned(),
    };
    Ok((ranked, m.scope_len, reason))
}

fn explain_one(c: &Candidate<'_>) -> CandidateScore {
    CandidateScore {
        edge: c.edge.id.clone(),
        site: c.edge.site.clone(),
        healthy: c.edge.healthy,
        viewer_connections: c.edge.viewer_connections,
        capacity: c.edge.capacity,
        estimate_rtt_ms: c.estimate.map(|e| e.rtt_ms),
        rum_ms: c.rum.map(|r| r.median_ms),
        rum_clients: c.rum.map_or(0, |r| r.clients),
        contributions: c.contributions,
        loss: c.estimate.map(|e| e.loss),
        samples: c.estimate.map_or(0, |e| e.samples),
        newest_age_ms: c.estimate.map(|e| e.newest_age_ms),
        load_factor: c.load_factor,
        score: c.score,
        excluded: c.excluded,
    }
}

/// Eligible edges from least to most loaded, by `viewer_connections / capacity`. An edge
/// of unknown capacity is assumed as large as the largest known one; if none is known,
/// raw connection counts compare. Ties by id, so every router agrees.
fn least_loaded_order<'a, 'b>(eligible: &[&'b Candidate<'a>]) -> Vec<&'b Candidate<'a>> {
    let largest = eligible.iter().filter_map(|c| c.edge.capacity).max();
    let key = |c: &Candidate<'_>| match c.edge.capacity.or(largest) {
        Some(cap) => c.edge.viewer_connections as f64 / cap.max(1) as f64,
        None => c.edge.viewer_connections as f64,
    };
    let mut order = eligible.to_vec();
    order.sort_by(|a, b| {
        key(a)
            .total_cmp(&key(b))
            .then_with(|| a.edge.id.cmp(&b.edge.id))
    });
    order
}

/// FNV-1a over the prefix and edge id, then a SplitMix64 finalizer: stable across
/// processes, builds and routers (std's hasher is not guaranteed to be).
fn stable_hash(client: &ClientPrefix, edge: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    match client.addr() {
        IpAddr::V4(a) => {
            eat(4);
            a.octets().into_iter().for_each(&mut eat);
        }
        IpAddr::V6(a) => {
            eat(6);
            a.octets().into_iter().for_each(&mut eat);
        }
    }
    eat(client.len());
    eat(0xff);
    edge.bytes().for_each(&mut eat);
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Weighted rendezvous hashing: each edge draws `-ln(u) / w` with `u` uniform from the
/// hash of (prefix, edge) and `w = 1 / (1 ms + score)`; the lowest draw wins. Each edge
/// gets a share of prefixes proportional to its weight, a prefix always gets the same
/// edge from the same inputs (on every router, no shared state), and an edge joining or
/// leaving moves only its own share.
fn rendezvous<'a>(client: &ClientPrefix, among: &[(&'a str, f64)]) -> &'a str {
    let draw = |id: &str, score: f64| {
        let u = ((stable_hash(client, id) >> 11) as f64 + 0.5) / (1_u64 << 53) as f64;
        -u.ln() * (1.0 + score.max(0.0))
    };
    among
        .iter()
        .map(|&(id, score)| (id, draw(id, score)))
        .min_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(b.0)))
        .map_or("", |(id, _)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_700_000_000_000;

    fn edge(id: &str, site: &str) -> EdgeState {
        EdgeState {
            id: id.to_owned(),
            site: site.to_owned(),
            addrs: vec!["127.0.0.1".parse().unwrap()],
            healthy: true,
            viewer_connections: 0,
            capacity: None,
        }
    }

    fn edges3() -> Vec<EdgeState> {
        vec![edge("e1", "s1"), edge("e2", "s2"), edge("e3", "s3")]
    }

    fn prefix(s: &str) -> ClientPrefix {
        s.parse().unwrap()
    }

    fn sample(edge: &str, rtt_ms: u64, loss: f32, at: Millis) -> Measurement {
        Measurement {
            edge: edge.to_owned(),
            rtt: Duration::from_millis(rtt_ms),
            loss,
            at,
            source: Source::Probe,
        }
    }

    fn record_all(store: &mut Measurements, p: ClientPrefix, rtts: &[(&str, u64)], at: Millis) {
        for &(e, rtt) in rtts {
            store.record(p, sample(e, rtt, 0.0, at)).unwrap();
        }
    }

    fn decider() -> Decider {
        Decider::new(DeciderConfig::default()).unwrap()
    }

    #[test]
    fn matrix_3x3_picks_the_nearest_edge() {
        let (a, b, c) = (
            prefix("10.0.1.0/24"),
            prefix("10.0.2.0/24"),
            prefix("10.0.3.0/24"),
        );
        let mut store = Measurements::default();
        record_all(&mut store, a, &[("e1", 10), ("e2", 40), ("e3", 80)], T0);
        record_all(&mut store, b, &[("e1", 80), ("e2", 10), ("e3", 40)], T0);
        record_all(&mut store, c, &[("e1", 40), ("e2", 80), ("e3", 10)], T0);
        let mut d = decider();
        let map = StaticMap::new();
        for (p, want) in [(a, "e1"), (b, "e2"), (c, "e3")] {
            let got = d.decide(
                p,
                &Inputs {
                    edges: &edges3(),
                    measurements: &store,
                    rum: &HashMap::new(),
                    static_map: &map,
                },
                T0 + 1_000,
            );
            assert_eq!(got.edges, vec![want.to_owned()], "{p}");
            assert_eq!(got.source, DecisionSource::Measured);
            assert_eq!(got.scope_len, 24);
            assert!(!got.needs_probe);
            assert_eq!(got.reason, Reason::Best);
            assert_eq!(got.explain.len(), 3);
        }
        // More answers come ranked.
        let mut d = Decider::new(DeciderConfig {
            answers: 3,
            ..DeciderConfig::default()
        })
        .unwrap();
        let got = d.decide(
            b,
            &Inputs {
                edges: &edges3(),
                measurements: &store,
                rum: &HashMap::new(),
                static_map: &map,
            },
            T0 + 1_000,
        );
        assert_eq!(got.edges, ["e2", "e3", "e1"]);
    }

    #[test]
    fn an_unhealthy_edge_is_never_chosen() {
        let p = prefix("10.0.1.0/24");
        let mut store = Measurements::default();
        record_all(&mut store, p, &[("e1", 10), ("e2", 40), ("e3", 80)], T0);
        let mut edges = edges3();
        edges[0].healthy = false;
        let map = StaticMap::from_entries([("10.0.0.0/8", "s1")]).unwrap();
        let mut d = Decider::new(DeciderConfig {
            answers: 3,
            ..DeciderConfig::default()
        })
        .unwrap();
        let got = d.decide(
            p,
            &Inputs {
                edges: &edges,
                measurements: &store,
                rum: &HashMap::new(),
                static_map: &map,
            },
            T0,
        );
        assert_eq!(got.edges, ["e2", "e3"]);
        assert_eq!(got.explain[0].excluded, Some("unhealthy"));
        // Nor from the fallbacks: the map's site has only the unhealthy edge.
        let got = d.decide(
            p,
            &Inputs {
                edges: &edges,
                measurements: &Measurements::default(),
                rum: &HashMap::new(),
                static_map: &map,
            },
            T0,
        );
        assert_eq!(got.source, DecisionSource::LeastLoaded);
        assert_eq!(
            got.reason,
            Reason::LeastLoaded {
                map_site: Some("s1".into())
            }
        );
        assert!(!got.edges.contains(&"e1".to_owned()));
        assert_eq!(got.edges.len(), 2);
        // None healthy: nothing to answer.
        edges.iter_mut().for_each(|e| e.healthy = false);
        let got = d.decide(
            p,
            &Inputs {
                edges: &edges,
                measurements: &store,
                rum: &HashMap::new(),
                static_map: &map,
            },
            T0,
        );
        assert!(got.edges.is_empty());
        assert_eq!(got.source, DecisionSource::NoHealthyEdge);
        assert!(!got.needs_probe);
    }

    #[test]
    fn stale_measurements_fall_back_to_the_static_map_then_least_loaded() {
        let mapped = prefix("10.1.7.0/24");
        let unmapped = prefix("172.16.0.0/24");
        let mut store = Measurements::default();
        record_all(
            &mut store,
            mapped,
            &[("e1", 10), ("e2", 40), ("e3", 80)],
            T0,
        );
        record_all(
            &mut store,
            unmapped,
            &[("e1", 10), ("e2", 40), ("e3", 80)],
            T0,
        );
        let mut edges = edges3();
        edges[0].viewer_connections = 30;
        edges[1].viewer_connections = 20;
        edges[2].viewer_connections = 10;
        let map = StaticMap::from_entries([("10.1.0.0/16", "s2")]).unwrap();
        let mut d = decider();
        let later = T0 + ms(d.config().estimator.max_age) + 1;
        assert!(store.fresh_for(mapped, T0 + 1_000, d.config().estimator.max_age));
        assert!(!store.fresh_for(mapped, later, d.config().estimator.max_age));

        let got = d.decide(
            mapped,
            &Inputs {
                edges: &edges,
                measurements: &store,
                rum: &HashMap::new(),
                static_map: &map,
            },
            later,
        );
        assert_eq!(got.edges, ["e2"]);
        assert_eq!(got.source, DecisionSource::StaticMap);
        assert_eq!(got.scope_len, 16);
        assert!(got.needs_probe);
        assert!(got.explain.iter().all(|c| c.estimate_rtt_ms.is_none()));

        let got = d.decide(
            unmapped,
            &Inputs {
                edges: &edges,
                measurements: &store,
                rum: &HashMap::new(),
                static_map: &map,
            },
            later,
        );
        assert_eq!(got.edges, ["e3"]);
        assert_eq!(got.source, DecisionSource::LeastLoaded);
        assert_eq!(got.scope_len, 24);
        assert!(got.needs_probe);

        // Fresh again: measured, and no more probing wanted.
        record_all(
            &mut store,
            unmapped,
            &[("e1", 10), ("e2", 40), ("e3", 80)],
            later,
        );
        let got = d.decide(
            unmapped,
            &Inputs {
                edges: &edges,
                measurements: &store,
                rum: &HashMap::new(),
                static_map: &map,
            },
            later + 10,
        );
        assert_eq!(
            (got.edges[0].as_str(), got.source),
            ("e1", DecisionSource::Measured)
        );
        assert!(!got.needs_probe);
        // Samples older than probe_after (but not stale) ask for a re-probe.
        let got = d.decide(
            unmapped,
            &Inputs {
                edges: &edges,
                measurements: &store,
                rum: &HashMap::new(),
                static_map: &map,
            },
            later + 61_000,
        );
        assert_eq!(got.source, DecisionSource::Measured);
        assert!(got.needs_probe);
    }

    #[test]
    fn hysteresis_keeps_on_small_improvements_and_switches_on_large_ones() {
        let p = prefix("10.0.1.0/24");
        let edges = vec![edge("e1", "s1"), edge("e2", "s2")];
        let map = StaticMap::new();
        let mut d = decider();
        let at = |rtts: &[(&str, u64)]| {
            let mut store = Measurements::default();
            record_all(&mut store, p, rtts, T0);
            store
        };
        let got = d.decide(
            p,
            &Inputs {
                edges: &edges,
                measurements: &at(&[("e1", 10), ("e2", 20)]),
                rum: &HashMap::new(),
                static_map: &map,
            },
            T0,
        );
        assert_eq!(got.edges, ["e1"]);
        // e2 is better by 4 ms (17 %): under the 5 ms floor.
        let got = d.decide(
            p,
            &Inputs {
                edges: &edges,
                measurements: &at(&[("e1", 24), ("e2", 20)]),
                rum: &HashMap::new(),
                static_map: &map,
            },
            T0,
        );
        assert_eq!(got.edges, ["e1"]);
        assert_eq!(got.reason, Reason::Kept { best: "e2".into() });
        // e2 is better by 8 ms but only 12.5 %.
        let got = d.decide(
            p,
            &Inputs {
                edges: &edges,
                measurements: &at(&[("e1", 64), ("e2", 56)]),
                rum: &HashMap::new(),
                static_map: &map,
            },
            T0,
        );
        assert_eq!(got.edges, ["e1"]);
        // Better by 20 ms (50 %): switch.
        let got = d.decide(
            p,
            &Inputs {
                edges: &edges,
                measurements: &at(&[("e1", 40), ("e2", 20)]),
                rum: &HashMap::new(),
                static_map: &map,
            },
            T0,
        );
        assert_eq!(got.edges, ["e2"]);
        assert_eq!(got.reason, Reason::Best);
        // And it sticks to e2 the same way.
        let got = d.decide(
            p,
            &Inputs {
                edges: &edges,
                measurements: &at(&[("e1", 18), ("e2", 20)]),
                rum: &HashMap::new(),
                static_map: &map,
            },
            T0,
        );
        assert_eq!(got.edges, ["e2"]);
        // A fresh decider (no memory) would take e1 outright.
        let got = decider().decide(
            p,
            &Inputs {
                edges: &edges,
                measurements: &at(&[("e1", 10), ("e2", 20)]),
                rum: &HashMap::new(),
                static_map: &map,
            },
            T0,
        );
        assert_eq!(got.edges, ["e1"]);
    }

    fn rum(scores: &[(&str, f64)]) -> HashMap<String, RumScore> {
        scores
            .iter()
            .map(|&(e, median_ms)| {
                let score = RumScore {
                    median_ms,
                    clients: 5,
                };
                (e.to_owned(), score)
            })
            .collect()
    }

    #[test]
    fn browsers_outvote_a_path_that_lies_to_probes() {
        // e1 answers probes in 10 ms but its downloads crawl (a bandwidth cap); e2 is
        // 40 ms away and fast; e3 is far.
        let p = prefix("10.0.1.0/24");
        let mut store = Measurements::default();
        record_all(&mut store, p, &[("e1", 10), ("e2", 40), ("e3", 80)], T0);
        let map = StaticMap::new();
        let mut d = decider();
        let before = d.decide(
            p,
            &Inputs {
                edges: &edges3(),
                measurements: &store,
                rum: &HashMap::new(),
                static_map: &map,
            },
            T0,
        );
        assert_eq!(before.edges[0], "e1");
        assert!(!before.rum_used);
        let browsers = rum(&[("e1", 2600.0), ("e2", 170.0), ("e3", 330.0)]);
        let after = d.decide(
            p,
            &Inputs {
                edges: &edges3(),
                measurements: &store,
                rum: &browsers,
                static_map: &map,
            },
            T0,
        );
        assert_eq!(after.edges, ["e2"]);
        assert!(after.rum_used);
        let e2 = &after.explain[1];
        assert_eq!(e2.contributions.network, Some(40.0));
        assert_eq!(e2.contributions.rum, Some(170.0));
        assert_eq!(e2.score, Some(210.0));
        // Weights scale each source: with RUM weighted 0 the probes decide again.
        let mut probes_only = Decider::new(DeciderConfig {
            weights: Weights {
                network: 1.0,
                rum: 0.0,
            },
            ..DeciderConfig::default()
        })
        .unwrap();
        let got = probes_only.decide(
            p,
            &Inputs {
                edges: &edges3(),
                measurements: &store,
                rum: &browsers,
                static_map: &map,
            },
            T0,
        );
        assert_eq!(got.edges[0], "e1");
        assert!(!got.rum_used);
    }

    #[test]
    fn rum_counts_only_when_every_eligible_edge_has_it() {
        let p = prefix("10.0.1.0/24");
        let mut store = Measurements::default();
        record_all(&mut store, p, &[("e1", 10), ("e2", 40), ("e3", 80)], T0);
        let map = StaticMap::new();
        // e3 has no RUM score: comparing e1/e2 with RUM against e3 without would favour e3.
        let partial = rum(&[("e1", 2600.0), ("e2", 170.0)]);
        let got = decider().decide(
            p,
            &Inputs {
                edges: &edges3(),
                measurements: &store,
                rum: &partial,
                static_map: &map,
            },
            T0,
        );
        assert!(!got.rum_used);
        assert_eq!(got.edges[0], "e1");
        assert_eq!(got.explain[0].contributions.rum, None);
        assert_eq!(got.explain[0].rum_ms, Some(2600.0), "shown, not counted");
        // An unhealthy edge without RUM does not block it.
        let mut edges = edges3();
        edges[2].healthy = false;
        let got = decider().decide(
            p,
            &Inputs {
                edges: &edges,
                measurements: &store,
                rum: &partial,
                static_map: &map,
            },
            T0,
        );
        assert!(got.rum_used);
        assert_eq!(got.edges[0], "e2");
        // RUM alone, without probes, is a measurement too.
        let got = decider().decide(
            p,
            &Inputs {
                edges: &edges,
                measurements: &Measurements::default(),
                rum: &partial,
                static_map: &map,
            },
            T0,
        );
        assert_eq!(got.source, DecisionSource::Measured);
        assert_eq!(got.edges[0], "e2");
    }

    #[test]
    fn a_preview_remembers_nothing() {
        let p = prefix("10.0.1.0/24");
        let mut store = Measurements::default();
        record_all(&mut store, p, &[("e1", 10), ("e2", 40)], T0);
        let map = StaticMap::new();
        let mut d = decider();
        let preview = d.preview(
            p,
            &Inputs {
                edges: &edges3(),
                measurements: &store,
                rum: &HashMap::new(),
                static_map: &map,
            },
            T0,
        );
        assert_eq!(preview.edges[0], "e1");
        assert_eq!(d.remembered(), 0);
        d.decide(
            p,
            &Inputs {
                edges: &edges3(),
                measurements: &store,
                rum: &HashMap::new(),
                static_map: &map,
            },
            T0,
        );
        assert_eq!(d.remembered(), 1);
    }

    #[test]
    fn weights_are_validated() {
        for (network, rum) in [(0.0, 0.0), (-1.0, 1.0), (1.0, f64::NAN)] {
            let config = DeciderConfig {
                weights: Weights { network, rum },
                ..DeciderConfig::default()
            };
            assert!(Decider::new(config).is_err(), "{network} {rum}");
        }
    }

    #[test]
    fn an_edge_over_capacity_loses_new_viewers_to_the_next_best() {
        let p = prefix("10.0.1.0/24");
        let mut store = Measurements::default();
        record_all(&mut store, p, &[("e1", 10), ("e2", 12), ("e3", 80)], T0);
        let map = StaticMap::new();
        let mut edges = edges3();
        edges[0].capacity = Some(100);
        edges[0].viewer_connections = 100;
        let got = decider().decide(
            p,
            &Inputs {
                edges: &edges,
                measurements: &store,
                rum: &HashMap::new(),
                static_map: &map,
            },
            T0,
        );
        assert_eq!(got.edges, ["e2"]);
        assert_eq!(got.explain[0].excluded, Some("over capacity"));
        // Near its capacity (90 %): demoted ×1.5 to 15 ms, behind e2's 12 ms (out of its 10 % band).
        edges[0].viewer_connections = 90;
        let got = decider().decide(
            p,
            &Inputs {
                edges: &edges,
                measurements: &store,
                rum: &HashMap::new(),
                static_map: &map,
            },
            T0,
        );
        assert_eq!(got.edges, ["e2"]);
        assert!((got.explain[0].score.unwrap() - 15.0).abs() < 1e-9);
        // Under the soft limit: not demoted.
        edges[0].viewer_connections = 50;
        let got = decider().decide(
            p,
            &Inputs {
                edges: &edges,
                measurements: &store,
                rum: &HashMap::new(),
                static_map: &map,
            },
            T0,
        );
        assert_eq!(got.edges, ["e1"]);
        // A remembered choice does not keep a full edge either.
        let mut d = decider();
        assert_eq!(
            d.decide(
                p,
                &Inputs {
                    edges: &edges,
                    measurements: &store,
                    rum: &HashMap::new(),
                    static_map: &map
                },
                T0
            )
            .edges,
            ["e1"]
        );
        edges[0].viewer_connections = 120;
        assert_eq!(
            d.decide(
                p,
                &Inputs {
                    edges: &edges,
                    measurements: &store,
                    rum: &HashMap::new(),
                    static_map: &map
                },
                T0
            )
            .edges,
            ["e2"]
        );
        // Every edge full: still answered, with the best score.
        for e in &mut edges {
            e.capacity = Some(10);
            e.viewer_connections = 12;
        }
        let got = decider().decide(
            p,
            &Inputs {
                edges: &edges,
                measurements: &store,
                rum: &HashMap::new(),
                static_map: &map,
            },
            T0,
        );
        assert_eq!(got.edges, ["e1"]);
        assert!(got.explain.iter().all(|c| c.excluded.is_none()));
    }

    #[test]
    fn near_equal_edges_share_prefixes_and_a_clearly_better_edge_takes_all() {
        let edges = vec![edge("e1", "s1"), edge("e2", "s2")];
        let map = StaticMap::new();
        let prefixes: Vec<ClientPrefix> = (0..1000_u32)
            .map(|i| ClientPrefix::of(IpAddr::V4((0x0a00_0000 + (i << 8)).into())))
            .collect();
        let share = |rtts: &[(&str, u64)]| {
            let mut store = Measurements::default();
            let mut d = decider();
            let mut e1 = 0;
            for &p in &prefixes {
                record_all(&mut store, p, rtts, T0);
                let got = d.decide(
                    p,
                    &Inputs {
                        edges: &edges,
                        measurements: &store,
                        rum: &HashMap::new(),
                        static_map: &map,
                    },
                    T0,
                );
                if got.edges[0] == "e1" {
                    e1 += 1;
                }
            }
            e1
        };
        let e1 = share(&[("e1", 20), ("e2", 21)]);
        assert!((350..=650).contains(&e1), "e1 got {e1} of 1000");
        assert_eq!(share(&[("e1", 10), ("e2", 20)]), 1000);
        assert_eq!(share(&[("e1", 20), ("e2", 10)]), 0);
        // Same inputs, same answers: two routers agree without sharing state.
        assert_eq!(share(&[("e1", 20), ("e2", 21)]), e1);
    }

    #[test]
    fn loss_penalizes_an_edge() {
        let p = prefix("10.0.1.0/24");
        let mut store = Measurements::default();
        store.record(p, sample("e1", 10, 0.2, T0)).unwrap();
        store.record(p, sample("e2", 20, 0.0, T0)).unwrap();
        let edges = vec![edge("e1", "s1"), edge("e2", "s2")];
        let got = decider().decide(
            p,
            &Inputs {
                edges: &edges,
                measurements: &store,
                rum: &HashMap::new(),
                static_map: &StaticMap::new(),
            },
            T0,
        );
        assert_eq!(got.edges, ["e2"]);
        // 10 ms × (1 + 10 × 0.2) = 30 ms.
        assert!((got.explain[0].score.unwrap() - 30.0).abs() < 1e-4);
        assert_eq!(got.explain[0].loss, Some(f64::from(0.2_f32)));
        assert_eq!(got.explain[0].estimate_rtt_ms, Some(10.0));
        // Nonsense loss is refused.
        assert_eq!(
            store.record(p, sample("e1", 10, 1.5, T0)),
            Err(DecisionError::BadLoss(1.5))
        );
        assert!(store.record(p, sample("e1", 10, f32::NAN, T0)).is_err());
        assert_eq!(
            store.record(p, sample("", 10, 0.0, T0)),
            Err(DecisionError::NoEdge)
        );
    }

    #[test]
    fn estimate_weights_recent_samples_more() {
        let p = prefix("10.0.1.0/24");
        let est = Estimator::default();
        let mut store = Measurements::default();
        // 60 ms one half-life ago, 20 ms now: weights 1/2 and 1.
        store.record(p, sample("e1", 60, 0.0, T0)).unwrap();
        store.record(p, sample("e1", 20, 0.0, T0 + 60_000)).unwrap();
        let e = store.estimate(p, "e1", T0 + 60_000, &est).unwrap();
        assert!(
            (e.rtt_ms - (0.5 * 60.0 + 20.0) / 1.5).abs() < 1e-9,
            "{}",
            e.rtt_ms
        );
        assert_eq!((e.samples, e.newest_age_ms), (2, 0));
        // Past max_age the old one drops out.
        let e = store.estimate(p, "e1", T0 + 300_001, &est).unwrap();
        assert_eq!(e.samples, 1);
        assert!(store.estimate(p, "e2", T0, &est).is_none());
        // Only the latest samples_per_edge are kept, by sample time.
        let mut store = Measurements::default();
        for i in 0..20 {
            store
                .record(p, sample("e1", 100 + i, 0.0, T0 + 1_000 * i))
                .unwrap();
        }
        store.record(p, sample("e1", 1, 0.0, T0)).unwrap(); // older than all kept: dropped
        assert_eq!(store.sample_count(), 8);
        let e = store.estimate(p, "e1", T0 + 19_000, &est).unwrap();
        assert!(e.rtt_ms > 112.0);
    }

    #[test]
    fn memory_is_bounded() {
        let mut store = Measurements::default();
        let mut d = Decider::new(DeciderConfig {
            max_remembered: 1_000,
            ..DeciderConfig::default()
        })
        .unwrap();
        let edges = vec![edge("e1", "s1")];
        let map = StaticMap::new();
        for i in 0..100_000_u32 {
            let p = ClientPrefix::of(IpAddr::V4((i << 8).into()));
            store
                .record(p, sample("e1", 10, 0.0, T0 + u64::from(i)))
                .unwrap();
            if i % 50 == 0 {
                d.decide(
                    p,
                    &Inputs {
                        edges: &edges,
                        measurements: &store,
                        rum: &HashMap::new(),
                        static_map: &map,
                    },
                    T0 + u64::from(i),
                );
            }
        }
        let limit = store.limits().max_prefixes;
        assert_eq!(store.prefix_count(), limit);
        assert_eq!(store.sample_count(), limit);
        assert_eq!(d.remembered(), 1_000);
        // The most recently updated prefixes survive, the oldest went.
        assert!(store.fresh_for(
            ClientPrefix::of(IpAddr::V4((99_999_u32 << 8).into())),
            T0 + 100_000,
            Duration::from_secs(60)
        ));
        assert!(!store.fresh_for(
            ClientPrefix::of(IpAddr::V4(0_u32.into())),
            T0 + 100_000,
            Duration::from_secs(60)
        ));
        // Edges per prefix are bounded too (reports come from the network).
        let p = prefix("10.0.1.0/24");
        let mut store = Measurements::new(StoreLimits {
            max_prefixes: 4,
            max_edges_per_prefix: 3,
            samples_per_edge: 2,
        });
        for i in 0..50_u64 {
            store
                .record(p, sample(&format!("e{i}"), 10, 0.0, T0 + i))
                .unwrap();
        }
        assert_eq!(store.sample_count(), 3);
        assert!(store
            .estimate(p, "e49", T0 + 50, &Estimator::default())
            .is_some());
    }

    #[test]
    fn config_is_validated() {
        assert!(DeciderConfig::default().validate().is_ok());
        let bad = [
            DeciderConfig {
                answers: 0,
                ..DeciderConfig::default()
            },
            DeciderConfig {
                capacity_soft_limit: 1.0,
                ..DeciderConfig::default()
            },
            DeciderConfig {
                hysteresis_ratio: f64::NAN,
                ..DeciderConfig::default()
            },
            DeciderConfig {
                probe_after: Duration::from_secs(600),
                ..DeciderConfig::default()
            },
            DeciderConfig {
                estimator: Estimator {
                    half_life: Duration::ZERO,
                    ..Estimator::default()
                },
                ..DeciderConfig::default()
            },
        ];
        for config in bad {
            assert!(Decider::new(config).is_err());
        }
    }
}
