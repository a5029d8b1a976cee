//! The probe messages between the router and the edges' measuring agent
//! (`streamcdn-probe-agent`), without I/O.
//!
//! - **Wire format**: the router POSTs a [`ProbeRequest`] (JSON) to an edge's
//!   `streamcdn_urls::internal::PROBE_PATH`; the edge answers with a [`ProbeReport`] (JSON), which
//!   [`ProbeReport::to_measurement`] turns into the [`Measurement`] the decision consumes.
//!   Edges also share reports of real viewer connections through the registry.
//! - **Authentication**: an edge must not become a packet cannon for whoever reaches its
//!   HTTP port. The body is signed with the deployment key
//!   (`streamcdn_access::deployment`) and the tag sent in [`PROBE_HEADER`]; [`verify`]
//!   checks the tag (constant time) before parsing anything, then the timestamp (±
//!   `MAX_SKEW_MS`), the target, and the nonce against the bounded `ReplayGuard`.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use streamcdn_access::deployment::{
    self, DeploymentKey, ReplayError, ReplayGuard, SignatureError, MAX_SKEW_MS,
};

use crate::decision::{Measurement, Source};
use crate::prefix::ClientPrefix;

/// Measurements shared through the registry are kept as long as the decision uses them.
pub const SHARED_SAMPLE_TTL: Duration = Duration::from_secs(300);
/// The HTTP header carrying the hex HMAC-SHA256 of the request body.
pub const PROBE_HEADER: &str = "X-Streamcdn-Probe";
/// Most attempts one request may ask for (each attempt sends a SYN per port).
pub const MAX_ATTEMPTS: u8 = 5;
// ---------------------------------------------------------------------------------------
// Wire format
// ---------------------------------------------------------------------------------------

/// What the router asks an edge to measure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRequest {
    /// The address probed: a viewer (or its resolver) the router saw.
    pub target: IpAddr,
    /// The prefix the result is filed under; must contain `target`.
    pub prefix: ClientPrefix,
    /// 1..=[`MAX_ATTEMPTS`].
    pub attempts: u8,
    /// Router clock, Unix milliseconds: bounds how long a captured request is usable.
    pub issued_at_ms: u64,
    /// Random; a request is accepted once per edge.
    pub nonce: u64,
    /// The edge asked to probe: an edge refuses a request meant for another, so a
    /// captured request cannot be replayed across edges (a request naming none is
    /// refused by every edge).
    #[serde(default)]
    pub edge: String,
}

impl ProbeRequest {
    /// A request for `target`'s client prefix with a fresh random nonce.
    pub fn new(target: IpAddr, attempts: u8, issued_at_ms: u64) -> Self {
        let target = target.to_canonical();
        Self {
            target,
            prefix: ClientPrefix::of(target),
            attempts,
            issued_at_ms,
            nonce: rand::random(),
            edge: String::new(),
        }
    }

    /// The same request, addressed to one edge.
    pub fn for_edge(self, edge: impl Into<String>) -> Self {
        Self {
            edge: edge.into(),
            ..self
        }
    }

    /// The body to POST and the [`PROBE_HEADER`] value that authenticates it.
    pub fn signed(&self, key: &DeploymentKey) -> Result<(Vec<u8>, String), serde_json::Error> {
        let body = serde_json::to_vec(self)?;
        let tag = deployment::sign(key, &body);
        Ok((body, tag))
    }
}

/// How a report's RTT was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeMethod {
    /// TCP connect time (SYN → SYN/ACK or RST).
    Tcp,
    /// ICMP echo over an unprivileged ping socket.
    Icmp,
    /// The kernel's smoothed RTT of real viewer connections (`TCP_INFO`).
    Passive,
}

impl ProbeMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Icmp => "icmp",
            Self::Passive => "passive",
        }
    }
}

/// What an edge measured toward a client prefix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// The edge's node id.
    pub edge: String,
    pub prefix: ClientPrefix,
    /// The probed address (for passive reports: the prefix's first address).
    pub target: IpAddr,
    /// Median of the successful attempts; `None` when nothing answered.
    pub rtt_ms: Option<f64>,
    /// Fraction of attempts without an answer, 0..=1 (always 0 for passive reports).
    pub loss: f32,
    /// Attempts made (passive: connections sampled, saturating at 255).
    pub attempts: u8,
    pub method: ProbeMethod,
    /// Edge clock, Unix milliseconds.
    pub measured_at_ms: u64,
}

/// Why a report gives no [`Measurement`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReportError {
    #[error("no attempt was answered")]
    NoAnswer,
    #[error("report RTT {0} ms is not a duration")]
    BadRtt(f64),
    #[error("report loss {0} is not a fraction between 0 and 1")]
    BadLoss(f32),
    #[error("report names no edge")]
    NoEdge,
}

impl ProbeReport {
    /// Whether this report is about what `request` asked (the router should drop
    /// anything else an edge sends back).
    pub fn answers(&self, request: &ProbeRequest) -> bool {
        self.prefix == request.prefix && self.target.to_canonical() == request.target.to_canonical()
    }

    /// The sample the decision consumes.
    ///
    /// A report where **no attempt was answered is not a measurement**
    /// ([`ReportError::NoAnswer`]): most often the viewer's network silently drops
    /// unsolicited SYNs and pings, which says nothing about the path, and an invented
    /// large RTT would push the edge that serves the prefix (and has passive samples)
    /// ahead of every other edge. Skipped, the edge simply stays unmeasured for the prefix
    /// and the decision ranks the measured ones (or falls back). Partial loss is kept and
    /// penalised by the estimator.
    pub fn to_measurement(&self) -> Result<Measurement, ReportError> {
        if self.edge.is_empty() {
            return Err(ReportError::NoEdge);
        }
        if !(self.loss.is_finite() && (0.0..=1.0).contains(&self.loss)) {
            return Err(ReportError::BadLoss(self.loss));
        }
        let rtt_ms = self.rtt_ms.ok_or(ReportError::NoAnswer)?;
        let rtt = Duration::try_from_secs_f64(rtt_ms / 1000.0)
            .map_err(|_| ReportError::BadRtt(rtt_ms))?;
        Ok(Measurement {
            edge: self.edge.clone(),
            rtt,
            loss: self.loss,
            at: self.measured_at_ms,
            source: match self.method {
                ProbeMethod::Tcp | ProbeMethod::Icmp => Source::Probe,
                ProbeMethod::Passive => Source::Passive,
            },
        })
    }
}

// ---------------------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------------------

/// Why a probe request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeAuthError {
    #[error("no {PROBE_HEADER} header")]
    MissingSignature,
    #[error("{PROBE_HEADER} does not match the body")]
    BadSignature,
    #[error("probe request is not valid JSON: {0}")]
    Malformed(String),
    #[error("probe request asks for {0} attempts (1..={MAX_ATTEMPTS})")]
    BadAttempts(u8),
    #[error("probe request issued at {issued_at_ms} ms is more than {MAX_SKEW_MS} ms from now ({now_ms} ms)")]
    Stale { issued_at_ms: u64, now_ms: u64 },
    #[error("probe target {target} is outside the prefix {prefix}")]
    TargetOutsidePrefix {
        target: IpAddr,
        prefix: ClientPrefix,
    },
    #[error("probe target {0} is not a unicast address")]
    TargetNotUnicast(IpAddr),
    #[error("probe request nonce {0} was already used")]
    Replayed(u64),
    #[error("too many probe requests within the replay window")]
    ReplayGuardFull,
}

impl From<SignatureError> for ProbeAuthError {
    fn from(e: SignatureError) -> Self {
        match e {
            SignatureError::Missing => Self::MissingSignature,
            SignatureError::Mismatch => Self::BadSignature,
        }
    }
}

impl From<ReplayError> for ProbeAuthError {
    fn from(e: ReplayError) -> Self {
        match e {
            ReplayError::Replayed(nonce) => Self::Replayed(nonce),
            ReplayError::Full => Self::ReplayGuardFull,
        }
    }
}

impl ProbeAuthError {
    /// The HTTP status the edge answers with.
    pub fn status(&self) -> u16 {
        match self {
            Self::MissingSignature
            | Self::BadSignature
            | Self::Stale { .. }
            | Self::Replayed(_) => 401,
            Self::Malformed(_)
            | Self::BadAttempts(_)
            | Self::TargetOutsidePrefix { .. }
            | Self::TargetNotUnicast(_) => 400,
            Self::ReplayGuardFull => 429,
        }
    }
}

/// Whether an edge may aim packets at `ip`. Loopback is allowed (test sites live in
/// 127.0.0.0/8); unspecified, multicast and broadcast are not: they would probe this
/// host or many hosts at once.
pub fn is_probeable(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_multicast() || a.is_broadcast()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast()),
    }
}

/// Authenticates and parses a probe request: signature first (nothing unauthenticated is
/// parsed), then JSON, attempts, timestamp, target, and last the nonce (so only requests
/// that would be served take room in `guard`). The returned target is canonical
/// (IPv4-mapped IPv6 as IPv4).
pub fn verify(
    key: &DeploymentKey,
    body: &[u8],
    header: Option<&str>,
    now_ms: u64,
    guard: &mut ReplayGuard,
) -> Result<ProbeRequest, ProbeAuthError> {
    deployment::verify_signature(key, body, header)?;
    let mut request: ProbeRequest =
        serde_json::from_slice(body).map_err(|e| ProbeAuthError::Malformed(e.to_string()))?;
    if !(1..=MAX_ATTEMPTS).contains(&request.attempts) {
        return Err(ProbeAuthError::BadAttempts(request.attempts));
    }
    if !deployment::within_skew(request.issued_at_ms, now_ms) {
        return Err(ProbeAuthError::Stale {
            issued_at_ms: request.issued_at_ms,
            now_ms,
        });
    }
    request.target = request.target.to_canonical();
    if !is_probeable(request.target) {
        return Err(ProbeAuthError::TargetNotUnicast(request.target));
    }
    if !request.prefix.contains(request.target) {
        return Err(ProbeAuthError::TargetOutsidePrefix {
            target: request.target,
            prefix: request.prefix,
        });
    }
    guard.admit(request.nonce, request.issued_at_ms, now_ms)?;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamcdn_access::deployment::{sign, KEY_LEN};

    const NOW: u64 = 1_700_000_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn key() -> DeploymentKey {
        DeploymentKey::from_bytes([7; KEY_LEN])
    }

    fn request(target: &str) -> ProbeRequest {
        ProbeRequest {
            target: ip(target),
            prefix: ClientPrefix::of(ip(target)),
            attempts: 3,
            issued_at_ms: NOW,
            nonce: 42,
            edge: "e1".into(),
        }
    }

    fn signed_json(json: &str) -> (Vec<u8>, String) {
        let body = json.as_bytes().to_vec();
        let tag = sign(&key(), &body);
        (body, tag)
    }

    /// A report as an edge would send it.
    fn report(edge: &str, rtt_ms: Option<f64>, loss: f32, method: ProbeMethod) -> ProbeReport {
        let req = request("192.0.2.10");
        ProbeReport {
            edge: edge.into(),
            prefix: req.prefix,
            target: req.target,
            rtt_ms,
            loss,
            attempts: 2,
            method,
            measured_at_ms: NOW,
        }
    }

    #[test]
    fn sign_verify_round_trip() {
        let req = request("127.0.3.9");
        let (body, tag) = req.signed(&key()).unwrap();
        assert_eq!(tag.len(), 64);
        let mut guard = ReplayGuard::default();
        let got = verify(&key(), &body, Some(&tag), NOW + 1_000, &mut guard).unwrap();
        assert_eq!(got, req);
        assert_eq!(guard.len(), 1);
        // Upper-case hex is the same tag.
        let mut guard = ReplayGuard::default();
        assert!(verify(&key(), &body, Some(&tag.to_uppercase()), NOW, &mut guard).is_ok());
    }

    #[test]
    fn tampered_body_is_refused() {
        let (body, tag) = request("192.0.2.10").signed(&key()).unwrap();
        let text = String::from_utf8(body).unwrap();
        let tampered = text.replace("192.0.2.10", "192.0.2.11");
        assert_ne!(tampered, text);
        let mut guard = ReplayGuard::default();
        assert_eq!(
            verify(&key(), tampered.as_bytes(), Some(&tag), NOW, &mut guard),
            Err(ProbeAuthError::BadSignature)
        );
        assert!(guard.is_empty());
    }

    #[test]
    fn wrong_key_is_refused() {
        let (body, tag) = request("192.0.2.10").signed(&key()).unwrap();
        let other = DeploymentKey::generate();
        assert_ne!(other, key());
        let mut guard = ReplayGuard::default();
        let err = verify(&other, &body, Some(&tag), NOW, &mut guard).unwrap_err();
        assert_eq!(err, ProbeAuthError::BadSignature);
        assert_eq!(err.status(), 401);
    }

    #[test]
    fn missing_or_garbled_signature_is_refused() {
        let (body, tag) = request("192.0.2.10").signed(&key()).unwrap();
        let mut guard = ReplayGuard::default();
        assert_eq!(
            verify(&key(), &body, None, NOW, &mut guard),
            Err(ProbeAuthError::MissingSignature)
        );
        for bad in ["", "zz", &tag[..62], "not hex at all", &format!("{tag}00")] {
            assert_eq!(
                verify(&key(), &body, Some(bad), NOW, &mut guard),
                Err(ProbeAuthError::BadSignature),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn stale_timestamp_is_refused() {
        let (body, tag) = request("192.0.2.10").signed(&key()).unwrap();
        let mut guard = ReplayGuard::default();
        for now in [NOW + MAX_SKEW_MS + 1, NOW - MAX_SKEW_MS - 1] {
            let err = verify(&key(), &body, Some(&tag), now, &mut guard).unwrap_err();
            assert!(matches!(err, ProbeAuthError::Stale { .. }), "{err}");
        }
        assert!(guard.is_empty());
        // The edges of the window are accepted.
        assert!(verify(&key(), &body, Some(&tag), NOW + MAX_SKEW_MS, &mut guard).is_ok());
        let mut guard = ReplayGuard::default();
        assert!(verify(&key(), &body, Some(&tag), NOW - MAX_SKEW_MS, &mut guard).is_ok());
    }

    #[test]
    fn replayed_nonce_is_refused() {
        let (body, tag) = request("192.0.2.10").signed(&key()).unwrap();
        let mut guard = ReplayGuard::default();
        assert!(verify(&key(), &body, Some(&tag), NOW, &mut guard).is_ok());
        assert_eq!(
            verify(&key(), &body, Some(&tag), NOW + 5_000, &mut guard),
            Err(ProbeAuthError::Replayed(42))
        );
        // Once the request is stale its nonce is forgotten; the request stays refused.
        let err = verify(&key(), &body, Some(&tag), NOW + MAX_SKEW_MS + 1, &mut guard);
        assert!(matches!(err, Err(ProbeAuthError::Stale { .. })));
        let mut other = request("192.0.2.10");
        other.nonce = 43;
        other.issued_at_ms = NOW + MAX_SKEW_MS;
        let (body, tag) = other.signed(&key()).unwrap();
        assert!(verify(&key(), &body, Some(&tag), NOW + MAX_SKEW_MS + 1, &mut guard).is_ok());
        assert_eq!(guard.len(), 1);
    }

    #[test]
    fn replay_guard_is_bounded() {
        let mut guard = ReplayGuard::new(2);
        for nonce in 1..=2 {
            let mut req = request("192.0.2.10");
            req.nonce = nonce;
            let (body, tag) = req.signed(&key()).unwrap();
            assert!(verify(&key(), &body, Some(&tag), NOW, &mut guard).is_ok());
        }
        let mut req = request("192.0.2.10");
        req.nonce = 3;
        let (body, tag) = req.signed(&key()).unwrap();
        let err = verify(&key(), &body, Some(&tag), NOW, &mut guard).unwrap_err();
        assert_eq!(err, ProbeAuthError::ReplayGuardFull);
        assert_eq!(err.status(), 429);
        // After the window the old nonces expire and there is room again.
        req.issued_at_ms = NOW + MAX_SKEW_MS + 1;
        let (body, tag) = req.signed(&key()).unwrap();
        assert!(verify(&key(), &body, Some(&tag), NOW + MAX_SKEW_MS + 1, &mut guard).is_ok());
        assert_eq!(guard.len(), 1);
    }

    #[test]
    fn target_outside_prefix_is_refused() {
        let mut req = request("192.0.2.10");
        req.prefix = "198.51.100.0/24".parse().unwrap();
        let (body, tag) = req.signed(&key()).unwrap();
        let mut guard = ReplayGuard::default();
        let err = verify(&key(), &body, Some(&tag), NOW, &mut guard).unwrap_err();
        assert!(
            matches!(err, ProbeAuthError::TargetOutsidePrefix { .. }),
            "{err}"
        );
        assert_eq!(err.status(), 400);
        // A shorter (ECS) prefix containing the target is fine; so is a mapped address.
        let (body, tag) = signed_json(
            r#"{"target":"::ffff:192.0.2.10","prefix":"192.0.0.0/16","attempts":1,"issued_at_ms":1700000000000,"nonce":1}"#,
        );
        let got = verify(&key(), &body, Some(&tag), NOW, &mut guard).unwrap();
        assert_eq!(got.target, ip("192.0.2.10"));
        assert_eq!(got.prefix.len(), 16);
    }

    #[test]
    fn non_unicast_target_is_refused_but_loopback_is_probeable() {
        for (target, prefix) in [
            ("0.0.0.0", "0.0.0.0/24"),
            ("255.255.255.255", "255.255.255.0/24"),
            ("224.0.0.1", "224.0.0.0/24"),
            ("::", "::/48"),
            ("ff02::1", "ff02::/48"),
        ] {
            let json = format!(
                r#"{{"target":"{target}","prefix":"{prefix}","attempts":1,"issued_at_ms":{NOW},"nonce":1}}"#
            );
            let (body, tag) = signed_json(&json);
            let mut guard = ReplayGuard::default();
            assert!(
                matches!(
                    verify(&key(), &body, Some(&tag), NOW, &mut guard),
                    Err(ProbeAuthError::TargetNotUnicast(_))
                ),
                "{target}"
            );
        }
        assert!(is_probeable(ip("127.0.0.1")));
        assert!(is_probeable(ip("::1")));
        assert!(is_probeable(ip("2001:db8::1")));
    }

    #[test]
    fn malformed_json_is_refused() {
        let mut guard = ReplayGuard::default();
        for json in [
            "",
            "{",
            "[]",
            r#"{"target":"192.0.2.1"}"#,
            r#"{"target":"nonsense","prefix":"192.0.2.0/24","attempts":1,"issued_at_ms":1,"nonce":1}"#,
            r#"{"target":"192.0.2.1","prefix":"192.0.2.0/99","attempts":1,"issued_at_ms":1,"nonce":1}"#,
            r#"{"target":"192.0.2.1","prefix":"192.0.2.0/24","attempts":300,"issued_at_ms":1,"nonce":1}"#,
        ] {
            let (body, tag) = signed_json(json);
            let err = verify(&key(), &body, Some(&tag), NOW, &mut guard).unwrap_err();
            assert!(matches!(err, ProbeAuthError::Malformed(_)), "{json}: {err}");
            assert_eq!(err.status(), 400);
        }
        assert!(guard.is_empty());
    }

    #[test]
    fn attempts_out_of_range_are_refused() {
        let mut guard = ReplayGuard::default();
        for attempts in [0u8, MAX_ATTEMPTS + 1] {
            let mut req = request("192.0.2.10");
            req.attempts = attempts;
            let (body, tag) = req.signed(&key()).unwrap();
            assert_eq!(
                verify(&key(), &body, Some(&tag), NOW, &mut guard),
                Err(ProbeAuthError::BadAttempts(attempts))
            );
        }
    }

    #[test]
    fn wire_format_is_stable_json() {
        let req = request("192.0.2.10");
        let json: serde_json::Value = serde_json::to_value(&req).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "edge": "e1",
                "target": "192.0.2.10", "prefix": "192.0.2.0/24", "attempts": 3,
                "issued_at_ms": NOW, "nonce": 42
            })
        );
        let report = report("edge-1", Some(10.0), 0.5, ProbeMethod::Tcp);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "edge": "edge-1", "prefix": "192.0.2.0/24", "target": "192.0.2.10",
                "rtt_ms": 10.0, "loss": 0.5, "attempts": 2, "method": "tcp",
                "measured_at_ms": NOW
            })
        );
        let back: ProbeReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
        assert!(report.answers(&req));
        assert!(!report.answers(&request("192.0.2.11")));
        let fresh = ProbeRequest::new(ip("::ffff:10.1.2.3"), 2, NOW);
        assert_eq!(fresh.target, ip("10.1.2.3"));
        assert_eq!(fresh.prefix.to_string(), "10.1.2.0/24");
    }

    #[test]
    fn report_to_measurement() {
        let m = report("e1", Some(12.0), 0.0, ProbeMethod::Icmp)
            .to_measurement()
            .unwrap();
        assert_eq!(m.edge, "e1");
        assert_eq!(m.rtt, Duration::from_millis(12));
        assert_eq!((m.loss, m.at, m.source), (0.0, NOW, Source::Probe));
        let passive = report("e1", Some(12.0), 0.0, ProbeMethod::Passive);
        assert_eq!(passive.to_measurement().unwrap().source, Source::Passive);

        let lost = report("e1", None, 1.0, ProbeMethod::Tcp);
        assert_eq!(lost.to_measurement(), Err(ReportError::NoAnswer));

        let mut bad = report("e1", Some(-1.0), 0.0, ProbeMethod::Tcp);
        assert_eq!(bad.to_measurement(), Err(ReportError::BadRtt(-1.0)));
        bad.rtt_ms = Some(f64::NAN);
        assert!(matches!(bad.to_measurement(), Err(ReportError::BadRtt(_))));
        bad.rtt_ms = Some(5.0);
        bad.loss = 1.5;
        assert_eq!(bad.to_measurement(), Err(ReportError::BadLoss(1.5)));
        bad.loss = 0.0;
        bad.edge.clear();
        assert_eq!(bad.to_measurement(), Err(ReportError::NoEdge));
    }

    /// The `probe_request` fuzz target's corpus, replayed with the target's own checks.
    mod fuzz_corpus {
        use super::*;
        use crate::decision::{Estimator, Measurements};

        include!("../../../fuzz/invariants/probe_request.rs");
        include!("../../../fuzz/invariants/replay.rs");

        #[test]
        fn the_probe_request_fuzz_corpus_replays_without_panics() {
            replay_corpus("probe_request", check);
        }
    }
}
