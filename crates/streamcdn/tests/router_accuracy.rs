//! Routing accuracy over a population: 50 client prefixes and 5 edges in emulated WAN
//! sites, with round trips drawn from a map plus per-path inflation (real paths are
//! rarely as short as the distance between their ends). Each client resolves the
//! delivery name through the router from its own site. The router's fallback is a
//! geography-style static map (each client's /24 → the site of the edge nearest on
//! the map, as a GeoIP database would place it), so the first answers are the
//! baseline and the answers once the edges have probed are ours, in the same run.
//! Printed: the share of clients sent to their lowest-RTT edge and the mean extra
//! round trip, for both.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::sites::{wait_until, Sites};

const ROUTER: &str = "127.70.0.2";
const CORE: &str = "127.70.0.1";
const EDGE_COUNT: usize = 5;
const CLIENT_COUNT: usize = 50;
const DELIVERY: &str = "live.streamcdn.test";

/// SplitMix64: small, seedable, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (self.next() >> 11) as f64 / (1u64 << 53) as f64 * (hi - lo)
    }
}

struct Population {
    edges: Vec<(String, String)>,
    clients: Vec<(String, String)>,
    /// `rtt[client][edge]` in ms.
    rtt: Vec<Vec<u32>>,
    /// The edge nearest each client on the map: the static map's choice.
    geo_nearest: Vec<usize>,
}

/// Edges and clients on a 100 × 60 map (1 unit = 1 ms of round trip at best). A path's
/// round trip is its map distance × an inflation in [1, 1.6), or in [2, 4) for one path
/// in four (a detour through a distant exchange), plus up to 8 ms of access delay, at
/// least 3 ms. The static map places one client in ten somewhere else on the map, as
/// GeoIP databases misplace prefixes.
fn population(rng: &mut Rng) -> Population {
    let point = |rng: &mut Rng| (rng.uniform(0.0, 100.0), rng.uniform(0.0, 60.0));
    let edge_at: Vec<(f64, f64)> = (0..EDGE_COUNT).map(|_| point(rng)).collect();
    let client_at: Vec<(f64, f64)> = (0..CLIENT_COUNT).map(|_| point(rng)).collect();
    let distance =
        |a: (f64, f64), b: (f64, f64)| ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt();
    let rtt = client_at
        .iter()
        .map(|c| {
            edge_at
                .iter()
                .map(|e| {
                    let inflation = if rng.uniform(0.0, 1.0) < 0.25 {
                        rng.uniform(2.0, 4.0)
                    } else {
                        rng.uniform(1.0, 1.6)
                    };
                    let ms = distance(*c, *e) * inflation + rng.uniform(0.0, 8.0);
                    ms.max(3.0).round() as u32
                })
                .collect()
        })
        .collect();
    let located: Vec<(f64, f64)> = client_at
        .iter()
        .map(|c| {
            if rng.uniform(0.0, 1.0) < 0.1 {
                point(rng)
            } else {
                *c
            }
        })
        .collect();
    let geo_nearest = located
        .iter()
        .map(|c| {
            (0..EDGE_COUNT)
                .min_by(|a, b| distance(*c, edge_at[*a]).total_cmp(&distance(*c, edge_at[*b])))
                .unwrap_or(0)
        })
        .collect();
    Population {
        edges: (1..=EDGE_COUNT)
            .map(|j| (format!("s{j}"), format!("127.81.{j}.1")))
            .collect(),
        clients: (1..=CLIENT_COUNT)
            .map(|i| (format!("c{i}"), format!("127.80.{i}.1")))
            .collect(),
        rtt,
        geo_nearest,
    }
}

/// Share of clients answered with their lowest-RTT edge, share within the router's
/// near-equal band (10 % or 1 ms), and the mean extra round trip in ms.
fn score(p: &Population, answers: &[String]) -> (f64, f64, f64) {
    let (mut exact, mut near, mut extra) = (0, 0, 0.0);
    for (i, answer) in answers.iter().enumerate() {
        let best = p.rtt[i].iter().copied().min().unwrap_or(0);
        let got = p
            .edges
            .iter()
            .position(|(_, addr)| addr == answer)
            .map_or(f64::INFINITY, |j| f64::from(p.rtt[i][j]));
        let best = f64::from(best);
        exact += usize::from(got == best);
        near += usize::from(got <= best + (best * 0.10).max(1.0));
        extra += got - best;
    }
    let n = answers.len() as f64;
    (exact as f64 / n, near as f64 / n, extra / n)
}

#[test]
fn measured_routing_sends_more_clients_to_their_nearest_edge_than_a_geographic_map() {
    let seed = std::env::var("ACCURACY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("population seed {seed} (replay with ACCURACY_SEED={seed})");
    let p = population(&mut Rng(seed));

    let mut site_list: Vec<(&str, Vec<&str>)> =
        vec![("core", vec![CORE]), ("router", vec![ROUTER])];
    site_list.extend(p.edges.iter().map(|(n, a)| (n.as_str(), vec![a.as_str()])));
    site_list.extend(
        p.clients
            .iter()
            .map(|(n, a)| (n.as_str(), vec![a.as_str()])),
    );
    let site_refs: Vec<(&str, &[&str])> =
        site_list.iter().map(|(n, a)| (*n, a.as_slice())).collect();
    let rtt = &p.rtt;
    let edges = &p.edges;
    let links: Vec<(&str, &str, u32)> = p
        .clients
        .iter()
        .enumerate()
        .flat_map(|(i, (c, _))| {
            edges
                .iter()
                .enumerate()
                .map(move |(j, (e, _))| (c.as_str(), e.as_str(), rtt[i][j]))
        })
        .collect();
    let mut sites = Sites::start(
        "router-accuracy",
        &site_refs,
        &links,
        ROUTER,
        ("core", CORE),
    );

    let mut static_map = String::from("[router.static_map]\n");
    for (i, (_, addr)) in p.clients.iter().enumerate() {
        let net = addr.rsplit_once('.').map_or(addr.as_str(), |(net, _)| net);
        static_map += &format!("\"{net}.0/24\" = \"{}\"\n", p.edges[p.geo_nearest[i]].0);
    }
    for (site, addr) in &p.edges {
        sites.spawn(site, "edge", addr, "");
    }
    sites.spawn(
        "router",
        "router",
        ROUTER,
        &format!(
            "[router]\ndns_listen = \"{ROUTER}:53\"\nhttp_listen = \"{ROUTER}:8082\"\nreprobe_after = \"5s\"\n{static_map}"
        ),
    );

    // Every edge known and healthy before the first answers, so that the baseline is
    // the static map's answer and not a stopgap.
    wait_until(
        Duration::from_secs(20),
        "five healthy edges at the router",
        || {
            let body = sites.curl(
                "router",
                &[&format!("http://{ROUTER}:8081/api/v1/routing/edges")],
            );
            let edges: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let healthy = edges
                .as_array()
                .map_or(0, |e| e.iter().filter(|e| e["healthy"] == true).count());
            if healthy == EDGE_COUNT {
                Ok(())
            } else {
                Err(body)
            }
        },
    );
    let ask_all = |sites: &Sites| -> Vec<String> {
        p.clients
            .iter()
            .map(|(c, _)| sites.dig(c, ROUTER, DELIVERY))
            .collect()
    };
    let baseline = ask_all(&sites);
    for (i, answer) in baseline.iter().enumerate() {
        assert_eq!(
            answer, &p.edges[p.geo_nearest[i]].1,
            "client {i}'s first answer is the static map's"
        );
    }

    // Then until every client's answer comes from measurements of all five edges and
    // stays the same for a round.
    let mut previous = Vec::new();
    let (measured, took) = wait_until(
        Duration::from_secs(60),
        "measured answers for every client",
        || {
            let answers = ask_all(&sites);
            let unmeasured: Vec<&str> = p
                .clients
                .iter()
                .filter(|(_, addr)| {
                    let why = sites.explain("router", ROUTER, addr);
                    why["source"] != "measured"
                        || why["explain"]
                            .as_array()
                            .is_none_or(|c| c.iter().any(|c| c["estimate_rtt_ms"].is_null()))
                })
                .map(|(c, _)| c.as_str())
                .collect();
            let stable = answers == previous;
            previous = answers.clone();
            if unmeasured.is_empty() && stable {
                Ok(answers)
            } else {
                Err(format!(
                    "not yet measured: {unmeasured:?}; stable: {stable}"
                ))
            }
        },
    );

    let (geo_exact, geo_near, geo_extra) = score(&p, &baseline);
    let (our_exact, our_near, our_extra) = score(&p, &measured);
    println!("{CLIENT_COUNT} client prefixes, {EDGE_COUNT} edges; measured answers after {took:?}");
    println!(
        "static map (geography): {:.0}% to the lowest-RTT edge, {:.0}% within 10%, {geo_extra:.1} ms extra RTT on average",
        geo_exact * 100.0,
        geo_near * 100.0
    );
    println!(
        "measured (streamcdn):   {:.0}% to the lowest-RTT edge, {:.0}% within 10%, {our_extra:.1} ms extra RTT on average",
        our_exact * 100.0,
        our_near * 100.0
    );
    assert!(
        our_near >= 0.95,
        "only {our_near:.2} of clients within 10% of their best edge (seed {seed})"
    );
    assert!(
        our_exact >= geo_exact && our_extra <= geo_extra,
        "measured routing is no better than the static map (seed {seed})"
    );
}
