/// The probe messages between router and edges. An edge parses a request with `verify`
/// (HMAC tag, then JSON, attempts, clock, target, nonce); the router parses an edge's
/// `ProbeReport` (from the edge or the registry) and records its measurement. The first
/// byte picks how the rest is sent: even, as a body signed with the key, which only a key
/// holder can send, so that everything after the tag check is reached; odd, as
/// `header\nbody` from someone without the key, which must be refused before any parsing.
/// Either way the rest is also read as a report. Needs `verify`, `sign`, `is_probeable`,
/// `DeploymentKey`, `ProbeReport`, `ProbeAuthError`, `ReplayGuard`, `Measurements`,
/// `Estimator`, `KEY_LEN`, `MAX_ATTEMPTS` and `MAX_SKEW_MS` in scope.
pub fn check(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = DeploymentKey::from_bytes([7; KEY_LEN]);
    let now_ms = 1_700_000_000_000;
    let mut guard = ReplayGuard::new(4);
    if mode % 2 == 0 {
        let tag = sign(&key, rest);
        if let Ok(request) = verify(&key, rest, Some(&tag), now_ms, &mut guard) {
            assert!((1..=MAX_ATTEMPTS).contains(&request.attempts));
            assert!(request.issued_at_ms.abs_diff(now_ms) <= MAX_SKEW_MS);
            assert_eq!(request.target, request.target.to_canonical());
            assert!(is_probeable(request.target));
            assert!(request.prefix.contains(request.target));
            assert_eq!(
                verify(&key, rest, Some(&tag), now_ms, &mut guard),
                Err(ProbeAuthError::Replayed(request.nonce)),
                "a request is served once"
            );
        }
    } else {
        let (header, body) = match rest.iter().position(|&b| b == b'\n') {
            Some(at) => (std::str::from_utf8(&rest[..at]).ok(), &rest[at + 1..]),
            None => (None, rest),
        };
        assert!(matches!(
            verify(&key, body, header, now_ms, &mut guard),
            Err(ProbeAuthError::MissingSignature | ProbeAuthError::BadSignature)
        ));
    }
    let Ok(report) = serde_json::from_slice::<ProbeReport>(rest) else {
        return;
    };
    if let Ok(measurement) = report.to_measurement() {
        let (edge, at) = (measurement.edge.clone(), measurement.at);
        let mut measurements = Measurements::default();
        assert!(measurements.record(report.prefix, measurement).is_ok());
        let estimator = Estimator::default();
        let estimate = measurements.estimate(report.prefix, &edge, at, &estimator);
        assert!(estimate.is_some_and(|e| e.effective_rtt_ms.is_finite()));
    }
}
