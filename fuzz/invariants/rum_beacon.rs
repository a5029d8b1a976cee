/// Beacons from browsers (`rum::BeaconGate::check`). The first byte picks what the rest
/// is: even, the `results` of a beacon whose token the router really issued, so that
/// every check after the signature is reached; odd, a whole beacon body from anyone,
/// which must never be accepted unless it carries a genuine token. Accepted results are
/// the token's edges, once each, with finite timings, and record into scores without
/// panicking; a beacon is accepted at most once. Needs `rum` (`BeaconGate`, `Claims`,
/// `GateLimits`, `RumScores`, `Rejection`, `issue`), `ClientPrefix` and `DeploymentKey` in scope.
pub fn check(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = DeploymentKey::from_bytes([9; 32]);
    let now = 1_700_000_000_000;
    let client: std::net::IpAddr = [198, 51, 100, 7].into();
    let claims = Claims {
        client,
        prefix: ClientPrefix::of(client),
        edges: vec!["e1".into(), "e2".into()],
        nonce: 42,
        expires_ms: now + 60_000,
    };
    let body = if mode % 2 == 0 {
        let mut body = format!("{{\"token\":\"{}\",\"results\":", issue(&key, &claims)).into_bytes();
        body.extend_from_slice(rest);
        body.push(b'}');
        body
    } else {
        rest.to_vec()
    };
    let mut gate = BeaconGate::new(GateLimits::default());
    match gate.check(&key, &body, client, now) {
        Ok(accepted) => {
            assert_eq!(mode % 2, 0, "only a genuine token is accepted");
            assert!(!accepted.results.is_empty());
            let mut seen = std::collections::HashSet::new();
            for result in &accepted.results {
                assert!(claims.edges.contains(&result.edge));
                assert!(seen.insert(result.edge.clone()), "each edge once");
                assert!(result.cost_ms().is_finite() && result.cost_ms() >= 0.0);
            }
            let mut scores = RumScores::new(600_000, 1);
            scores.record_beacon(&accepted, now);
            for edge in &claims.edges {
                if let Some(score) = scores.score(accepted.prefix, edge, now) {
                    assert!(score.median_ms.is_finite() && score.clients == 1);
                }
            }
            assert_eq!(
                gate.check(&key, &body, client, now),
                Err(Rejection::Replayed),
                "a beacon is taken once"
            );
        }
        Err(rejection) => {
            assert!((400..500).contains(&rejection.status()));
            assert!(!rejection.label().is_empty());
        }
    }
}
