//! Real-user measurement, sans-IO: measurement jobs signed for one client, beacons
//! checked before anything in them is believed, and per-prefix scores that no single
//! client can move.
//!
//! A job's token names the client address it was issued to, the client's prefix, the
//! edges to measure, a nonce and an expiry, signed with the deployment's key (every
//! router can check a token another issued). A beacon is accepted only with a valid,
//! unexpired, unused token, from the address the token names, reporting only the
//! token's edges, each once, with timings a browser could have measured, and within
//! per-address and per-prefix rate limits. Rejections say why ([`Rejection::label`]
//! for metrics) and change nothing. Scores keep one sample per client address per
//! edge and use the median over at least `min_clients` addresses.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::decision::{Millis, RumScore};
use crate::prefix::ClientPrefix;
use streamcdn_access::deployment::{self, DeploymentKey};

/// Bytes of the test object an edge serves at `/_streamcdn/rum/object`; a successful
/// download must report exactly this many.
pub const TEST_OBJECT_BYTES: u64 = 64 * 1024;
/// How long a job's token is good for: a page measures within seconds of asking.
pub const TOKEN_TTL_MS: Millis = 120_000;
/// Largest beacon body read.
pub const MAX_BEACON_BYTES: usize = 16 * 1024;
/// Most edges one job measures.
pub const MAX_TARGETS: usize = 8;
/// Longest timing believed; a fetch that took longer was as good as failed.
const MAX_TIMING_MS: f64 = 60_000.0;
/// What a failed download counts as in a median: worse than any real one.
pub const FAILED_MS: f64 = MAX_TIMING_MS;
/// Domain separation: the deployment's key also signs probe requests.
const TOKEN_CONTEXT: &[u8] = b"streamcdn rum token v1\n";

/// What a job's token vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The address the job was issued to; the beacon must come from it.
    pub client: IpAddr,
    pub prefix: ClientPrefix,
    /// The edges the job asks the browser to measure.
    pub edges: Vec<String>,
    pub nonce: u64,
    pub expires_ms: Millis,
}

/// `hex(claims JSON) "." hex(HMAC-SHA256)`: opaque to the browser, checkable by any
/// router of the deployment.
pub fn issue(key: &DeploymentKey, claims: &Claims) -> String {
    // Serializing plain fields cannot fail; an empty token would simply be refused.
    let body = serde_json::to_vec(claims).unwrap_or_default();
    format!("{}.{}", to_hex(&body), sign(key, &body))
}

fn sign(key: &DeploymentKey, body: &[u8]) -> String {
    let mut message = Vec::with_capacity(TOKEN_CONTEXT.len() + body.len());
    message.extend_from_slice(TOKEN_CONTEXT);
    message.extend_from_slice(body);
    deployment::sign(key, &message)
}

/// The claims of a token whose signature holds (expiry is checked by the caller).
pub fn open(key: &DeploymentKey, token: &str) -> Result<Claims, Rejection> {
    let (body_hex, tag) = token.split_once('.').ok_or(Rejection::MalformedToken)?;
    let body = from_hex(body_hex).ok_or(Rejection::MalformedToken)?;
    let mut message = Vec::with_capacity(TOKEN_CONTEXT.len() + body.len());
    message.extend_from_slice(TOKEN_CONTEXT);
    message.extend_from_slice(&body);
    deployment::verify_signature(key, &message, Some(tag)).map_err(|_| Rejection::BadSignature)?;
    serde_json::from_slice(&body).map_err(|_| Rejection::MalformedToken)
}

/// One edge's download, as the browser's Resource Timing saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeResult {
    pub edge: String,
    pub ok: bool,
    #[serde(default)]
    pub dns_ms: f64,
    #[serde(default)]
    pub connect_ms: f64,
    #[serde(default)]
    pub ttfb_ms: f64,
    #[serde(default)]
    pub total_ms: f64,
    #[serde(default)]
    pub bytes: u64,
}

impl EdgeResult {
    /// What the download counts as in a score: its total time, or [`FAILED_MS`].
    pub fn cost_ms(&self) -> f64 {
        if self.ok {
            self.total_ms
        } else {
            FAILED_MS
        }
    }

    fn implausible(&self) -> Option<&'static str> {
        let timings = [self.dns_ms, self.connect_ms, self.ttfb_ms, self.total_ms];
        if timings
            .iter()
            .any(|t| !t.is_finite() || *t < 0.0 || *t > MAX_TIMING_MS)
        {
            return Some("timing out of range");
        }
        if !self.ok {
            return None;
        }
        if self.bytes != TEST_OBJECT_BYTES {
            return Some("wrong object size");
        }
        if self.total_ms <= 0.0 {
            return Some("zero download time");
        }
        if self.ttfb_ms > self.total_ms
            || self.connect_ms > self.total_ms
            || self.dns_ms > self.total_ms
        {
            return Some("phase longer than the download");
        }
        None
    }
}

#[derive(Debug, Deserialize)]
struct Beacon {
    token: String,
    results: Vec<EdgeResult>,
}

/// Why a beacon was refused; nothing of it was recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("beacon larger than {MAX_BEACON_BYTES} bytes")]
    TooLarge,
    #[error("beacon is not the expected JSON: {0}")]
    Malformed(String),
    #[error("token is malformed")]
    MalformedToken,
    #[error("token signature does not match")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token already used")]
    Replayed,
    #[error("beacon sent from {sender}, token issued to {client}")]
    WrongClient { sender: IpAddr, client: IpAddr },
    #[error("beacon reports edge {0:?}, which the token did not name")]
    UnknownEdge(String),
    #[error("beacon reports edge {0:?} twice")]
    DuplicateEdge(String),
    #[error("beacon reports no result")]
    Empty,
    #[error("implausible result: {0}")]
    Implausible(&'static str),
    #[error("too many beacons from {0}")]
    RateLimitedAddress(IpAddr),
    #[error("too many beacons from {0}")]
    RateLimitedPrefix(ClientPrefix),
    #[error("too many tokens in use")]
    Full,
}

impl Rejection {
    /// A metric label per kind.
    pub fn label(&self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Malformed(_) => "malformed",
            Self::MalformedToken => "malformed_token",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::Replayed => "replayed",
            Self::WrongClient { .. } => "wrong_client",
            Self::UnknownEdge(_) => "unknown_edge",
            Self::DuplicateEdge(_) => "duplicate_edge",
            Self::Empty => "empty",
            Self::Implausible(_) => "implausible",
            Self::RateLimitedAddress(_) => "rate_limited_address",
            Self::RateLimitedPrefix(_) => "rate_limited_prefix",
            Self::Full => "full",
        }
    }

    /// The HTTP status a beacon endpoint answers with.
    pub fn status(&self) -> u16 {
        match self {
            Self::TooLarge => 413,
            Self::BadSignature | Self::Expired | Self::Replayed | Self::WrongClient { .. } => 403,
            Self::RateLimitedAddress(_) | Self::RateLimitedPrefix(_) | Self::Full => 429,
            _ => 400,
        }
    }
}

/// A beacon that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub client: IpAddr,
    pub prefix: ClientPrefix,
    pub results: Vec<EdgeResult>,
}

/// Fixed-window counters per key, bounded: when full of current windows a new key is
/// refused (a flood of new keys cannot evict the keys being limited).
#[derive(Debug)]
struct RateLimit<K> {
    per_window: u32,
    window_ms: Millis,
    capacity: usize,
    counts: HashMap<K, (Millis, u32)>,
}

impl<K: Hash + Eq + Copy> RateLimit<K> {
    fn new(per_window: u32, window_ms: Millis, capacity: usize) -> Self {
        Self {
            per_window,
            window_ms,
            capacity,
            counts: HashMap::new(),
        }
    }

    /// Whether `key` may have one more now; counts it if so.
    fn allow(&mut self, key: K, now: Millis) -> bool {
        if !self.counts.contains_key(&key) && self.counts.len() >= self.capacity {
            let window = self.window_ms;
            self.counts
                .retain(|_, (start, _)| now.saturating_sub(*start) < window);
            if self.counts.len() >= self.capacity {
                return false;
            }
        }
        let slot = self.counts.entry(key).or_insert((now, 0));
        if now.saturating_sub(slot.0) >= self.window_ms {
            *slot = (now, 0);
        }
        if slot.1 >= self.per_window {
            return false;
        }
        slot.1 += 1;
        true
    }
}

/// Limits on beacons.
#[derive(Debug, Clone, Copy)]
pub struct GateLimits {
    /// Beacons per client address per minute.
    pub per_address_per_minute: u32,
    /// Beacons per client prefix per minute.
    pub per_prefix_per_minute: u32,
    /// Addresses and prefixes tracked, and tokens remembered as used.
    pub capacity: usize,
}

impl Default for GateLimits {
    fn default() -> Self {
        Self {
            per_address_per_minute: 6,
            per_prefix_per_minute: 120,
            capacity: 100_000,
        }
    }
}

/// Checks beacons; remembers used tokens until they expire.
#[derive(Debug)]
pub struct BeaconGate {
    used: HashMap<u64, Millis>,
    capacity: usize,
    per_address: RateLimit<IpAddr>,
    per_prefix: RateLimit<ClientPrefix>,
}

impl BeaconGate {
    pub fn new(limits: GateLimits) -> Self {
        Self {
            used: HashMap::new(),
            capacity: limits.capacity,
            per_address: RateLimit::new(limits.per_address_per_minute, 60_000, limits.capacity),
            per_prefix: RateLimit::new(limits.per_prefix_per_minute, 60_000, limits.capacity),
        }
    }

    /// Checks a beacon body sent from `sender`: size, JSON, token (signature, expiry,
    /// client), results (the token's edges, once each, plausible), rate limits, and
    /// last the token's single use, so that a refused beacon does not burn its token.
    pub fn check(
        &mut self,
        key: &DeploymentKey,
        body: &[u8],
        sender: IpAddr,
        now: Millis,
    ) -> Result<Accepted, Rejection> {
        if body.len() > MAX_BEACON_BYTES {
            return Err(Rejection::TooLarge);
        }
        let beacon: Beacon =
            serde_json::from_slice(body).map_err(|e| Rejection::Malformed(e.to_string()))?;
        let claims = open(key, &beacon.token)?;
        if now > claims.expires_ms {
            return Err(Rejection::Expired);
        }
        let sender = sender.to_canonical();
        if claims.client.to_canonical() != sender {
            return Err(Rejection::WrongClient {
                sender,
                client: claims.client,
            });
        }
        if beacon.results.is_empty() {
            return Err(Rejection::Empty);
        }
        let mut seen = HashSet::new();
        for result in &beacon.results {
            if !claims.edges.contains(&result.edge) {
                return Err(Rejection::UnknownEdge(result.edge.clone()));
            }
            if !seen.insert(result.edge.as_str()) {
                return Err(Rejection::DuplicateEdge(result.edge.clone()));
            }
            if let Some(why) = result.implausible() {
                return Err(Rejection::Implausible(why));
            }
        }
        if self.used.contains_key(&claims.nonce) {
            return Err(Rejection::Replayed);
        }
        if !self.per_address.allow(sender, now) {
            return Err(Rejection::RateLimitedAddress(sender));
        }
        if !self.per_prefix.allow(claims.prefix, now) {
            return Err(Rejection::RateLimitedPrefix(claims.prefix));
        }
        if self.used.len() >= self.capacity {
            self.used.retain(|_, expires| *expires >= now);
            if self.used.len() >= self.capacity {
                return Err(Rejection::Full);
            }
        }
        self.used.insert(claims.nonce, claims.expires_ms);
        Ok(Accepted {
            client: sender,
            prefix: claims.prefix,
            results: beacon.results,
        })
    }
}

/// Per prefix and edge, each client address's latest cost, within a window.
#[derive(Debug)]
pub struct RumScores {
    window_ms: Millis,
    min_clients: usize,
    samples: HashMap<(ClientPrefix, String), HashMap<IpAddr, (Millis, f64)>>,
}

impl RumScores {
    pub fn new(window_ms: Millis, min_clients: usize) -> Self {
        Self {
            window_ms,
            min_clients: min_clients.max(1),
            samples: HashMap::new(),
        }
    }

    /// Records one client's cost for one edge (from an accepted beacon, or shared by
    /// another router); a client's newer sample replaces its older one.
    pub fn record(
        &mut self,
        prefix: ClientPrefix,
        edge: &str,
        client: IpAddr,
        at: Millis,
        cost_ms: f64,
    ) {
        let by_client = self.samples.entry((prefix, edge.to_owned())).or_default();
        match by_client.get(&client) {
            Some((previous, _)) if *previous > at => {}
            _ => {
                by_client.insert(client, (at, cost_ms));
            }
        }
    }

    /// Records every result of an accepted beacon.
    pub fn record_beacon(&mut self, accepted: &Accepted, now: Millis) {
        for result in &accepted.results {
            self.record(
                accepted.prefix,
                &result.edge,
                accepted.client,
                now,
                result.cost_ms(),
            );
        }
    }

    /// The score of `edge` for `prefix`, if enough distinct clients measured it lately.
    pub fn score(&self, prefix: ClientPrefix, edge: &str, now: Millis) -> Option<RumScore> {
        let by_client = self.samples.get(&(prefix, edge.to_owned()))?;
        let mut costs: Vec<f64> = by_client
            .values()
            .filter(|(at, _)| now.saturating_sub(*at) <= self.window_ms)
            .map(|(_, cost)| *cost)
            .collect();
        if costs.len() < self.min_clients {
            return None;
        }
        costs.sort_by(f64::total_cmp);
        let mid = costs.len() / 2;
        let median_ms = if costs.len().is_multiple_of(2) {
            (costs[mid - 1] + costs[mid]) / 2.0
        } else {
            costs[mid]
        };
        Some(RumScore {
            median_ms,
            clients: costs.len(),
        })
    }

    /// Drops samples older than the window.
    pub fn prune(&mut self, now: Millis) {
        let window = self.window_ms;
        self.samples.retain(|_, by_client| {
            by_client.retain(|_, (at, _)| now.saturating_sub(*at) <= window);
            !by_client.is_empty()
        });
    }

    pub fn len(&self) -> usize {
        self.samples.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_700_000_000_000;

    fn key() -> DeploymentKey {
        DeploymentKey::from_hex(&"ab".repeat(32)).unwrap()
    }

    fn client() -> IpAddr {
        "198.51.100.7".parse().unwrap()
    }

    fn claims(nonce: u64) -> Claims {
        Claims {
            client: client(),
            prefix: ClientPrefix::of(client()),
            edges: vec!["e1".into(), "e2".into()],
            nonce,
            expires_ms: NOW + TOKEN_TTL_MS,
        }
    }

    fn result(edge: &str, total_ms: f64) -> EdgeResult {
        EdgeResult {
            edge: edge.into(),
            ok: true,
            dns_ms: 0.0,
            connect_ms: total_ms / 4.0,
            ttfb_ms: total_ms / 2.0,
            total_ms,
            bytes: TEST_OBJECT_BYTES,
        }
    }

    fn beacon(token: &str, results: &[EdgeResult]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "token": token, "results": results })).unwrap()
    }

    fn gate() -> BeaconGate {
        BeaconGate::new(GateLimits::default())
    }

    #[test]
    fn a_good_beacon_is_accepted_once() {
        let token = issue(&key(), &claims(1));
        let body = beacon(&token, &[result("e1", 40.0), result("e2", 90.0)]);
        let mut gate = gate();
        let accepted = gate.check(&key(), &body, client(), NOW).unwrap();
        assert_eq!(accepted.prefix, ClientPrefix::of(client()));
        assert_eq!(accepted.results.len(), 2);
        assert_eq!(
            gate.check(&key(), &body, client(), NOW),
            Err(Rejection::Replayed)
        );
    }

    #[test]
    fn forged_expired_and_misdirected_beacons_are_refused() {
        let mut gate = gate();
        let results = [result("e1", 40.0)];
        let other_key = DeploymentKey::from_hex(&"cd".repeat(32)).unwrap();
        let forged = issue(&other_key, &claims(2));
        assert_eq!(
            gate.check(&key(), &beacon(&forged, &results), client(), NOW),
            Err(Rejection::BadSignature)
        );
        // A token whose claims were edited keeps its old tag.
        let token = issue(&key(), &claims(3));
        let (_, tag) = token.split_once('.').unwrap();
        let mut edited = claims(3);
        edited.edges.push("e9".into());
        let tampered = format!("{}.{tag}", to_hex(&serde_json::to_vec(&edited).unwrap()));
        assert_eq!(
            gate.check(&key(), &beacon(&tampered, &results), client(), NOW),
            Err(Rejection::BadSignature)
        );
        for garbage in ["", ".", "zz.zz", "abc", "00.00"] {
            let got = gate.check(&key(), &beacon(garbage, &results), client(), NOW);
            assert!(
                matches!(
                    got,
                    Err(Rejection::MalformedToken | Rejection::BadSignature)
                ),
                "{garbage:?}: {got:?}"
            );
        }
        assert_eq!(
            gate.check(
                &key(),
                &beacon(&token, &results),
                client(),
                NOW + TOKEN_TTL_MS + 1
            ),
            Err(Rejection::Expired)
        );
        let elsewhere: IpAddr = "203.0.113.9".parse().unwrap();
        assert!(matches!(
            gate.check(&key(), &beacon(&token, &results), elsewhere, NOW),
            Err(Rejection::WrongClient { .. })
        ));
        // None of that used the token up.
        assert!(gate
            .check(&key(), &beacon(&token, &results), client(), NOW)
            .is_ok());
    }

    #[test]
    fn results_must_be_the_tokens_edges_once_each_and_plausible() {
        let mut gate = gate();
        let token = issue(&key(), &claims(4));
        let check = |gate: &mut BeaconGate, results: &[EdgeResult]| {
            gate.check(&key(), &beacon(&token, results), client(), NOW)
        };
        assert_eq!(
            check(&mut gate, &[result("e3", 10.0)]),
            Err(Rejection::UnknownEdge("e3".into()))
        );
        assert_eq!(
            check(&mut gate, &[result("e1", 10.0), result("e1", 12.0)]),
            Err(Rejection::DuplicateEdge("e1".into()))
        );
        assert_eq!(check(&mut gate, &[]), Err(Rejection::Empty));
        let mut small = result("e1", 10.0);
        small.bytes = 10;
        let mut negative = result("e1", 10.0);
        negative.connect_ms = -1.0;
        let mut slow_phase = result("e1", 10.0);
        slow_phase.ttfb_ms = 50.0;
        let mut instant = result("e1", 0.0);
        instant.connect_ms = 0.0;
        let mut huge = result("e1", 1e9);
        huge.ttfb_ms = 1.0;
        for bad in [small, negative, slow_phase, instant, huge] {
            assert!(
                matches!(
                    check(&mut gate, std::slice::from_ref(&bad)),
                    Err(Rejection::Implausible(_))
                ),
                "{bad:?}"
            );
        }
        // A failed download needs no size.
        let failed = EdgeResult {
            ok: false,
            bytes: 0,
            ..result("e2", 0.0)
        };
        assert!(check(&mut gate, &[result("e1", 30.0), failed]).is_ok());
        assert!(matches!(
            gate.check(&key(), b"{\"token\":1}", client(), NOW),
            Err(Rejection::Malformed(_))
        ));
        assert_eq!(
            gate.check(&key(), &vec![b' '; MAX_BEACON_BYTES + 1], client(), NOW),
            Err(Rejection::TooLarge)
        );
    }

    #[test]
    fn one_address_cannot_send_many_beacons() {
        let mut gate = BeaconGate::new(GateLimits {
            per_address_per_minute: 2,
            per_prefix_per_minute: 100,
            capacity: 1000,
        });
        let results = [result("e1", 30.0)];
        for nonce in 0..2 {
            let token = issue(&key(), &claims(nonce));
            assert!(gate
                .check(&key(), &beacon(&token, &results), client(), NOW)
                .is_ok());
        }
        let token = issue(&key(), &claims(9));
        assert_eq!(
            gate.check(&key(), &beacon(&token, &results), client(), NOW + 1000),
            Err(Rejection::RateLimitedAddress(client()))
        );
        // A refused beacon did not use its token: it counts in the next window.
        assert!(gate
            .check(&key(), &beacon(&token, &results), client(), NOW + 60_000)
            .is_ok());
    }

    /// The `rum_beacon` fuzz target's corpus, replayed with the target's own checks.
    mod fuzz_corpus {
        use super::*;

        include!("../../../fuzz/invariants/rum_beacon.rs");
        include!("../../../fuzz/invariants/replay.rs");

        #[test]
        fn the_rum_beacon_fuzz_corpus_replays_without_panics() {
            replay_corpus("rum_beacon", check);
        }
    }

    #[test]
    fn scores_need_distinct_clients_and_use_the_median() {
        let prefix = ClientPrefix::of(client());
        let mut scores = RumScores::new(600_000, 3);
        let addr = |i: u8| IpAddr::from([198, 51, 100, i]);
        // One client reporting many times is one client.
        for t in 0..10 {
            scores.record(prefix, "e1", addr(1), NOW + t, 5.0);
        }
        assert_eq!(scores.score(prefix, "e1", NOW + 10), None);
        scores.record(prefix, "e1", addr(2), NOW, 100.0);
        scores.record(prefix, "e1", addr(3), NOW, 110.0);
        let score = scores.score(prefix, "e1", NOW + 10).unwrap();
        assert_eq!(score.clients, 3);
        assert_eq!(
            score.median_ms, 100.0,
            "the liar at 5 ms does not move the median"
        );
        // A client's newer sample replaces its older one; an older one does not.
        scores.record(prefix, "e1", addr(1), NOW + 20, 200.0);
        scores.record(prefix, "e1", addr(1), NOW + 5, 1.0);
        assert_eq!(
            scores.score(prefix, "e1", NOW + 30).unwrap().median_ms,
            110.0
        );
        // Samples age out of the window.
        assert_eq!(scores.score(prefix, "e1", NOW + 600_011), None);
        scores.prune(NOW + 700_000);
        assert!(scores.is_empty());
    }
}
