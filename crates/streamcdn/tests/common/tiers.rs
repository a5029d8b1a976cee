//! The cache tiers of one deployment on loopback: an ingest, a mid-tier (the top tier,
//! finding streams through a Redis registry) and edges below it, each a real process.

use std::time::{Duration, Instant};

use super::{http_get, playlist_segments, Node, Redis};

pub struct Tiers {
    pub ingest: Node,
    pub mid: Node,
    pub edges: Vec<Node>,
    _redis: Redis,
}

impl Tiers {
    /// `edges` edges under one mid-tier; `edge_extra` is added to each edge's `[edge]`
    /// section.
    pub fn start(name: &str, edges: usize, edge_extra: &str) -> Tiers {
        let redis = Redis::start();
        let registry = redis.registry_toml(name);
        let ingest = Node::role(&format!("{name}-ingest"), "ingest", &registry);
        let mid = Node::role(
            &format!("{name}-mid"),
            "edge",
            &format!("{registry}[edge]\ntier = \"mid\"\n"),
        );
        let edges = (0..edges)
            .map(|i| {
                Node::role(
                    &format!("{name}-edge{i}"),
                    "edge",
                    &format!(
                        "{registry}[edge]\nparents = [\"{}\"]\n{edge_extra}",
                        mid.http_base()
                    ),
                )
            })
            .collect();
        Tiers {
            ingest,
            mid,
            edges,
            _redis: redis,
        }
    }

    /// Waits until the first edge lists a segment of `path`'s live playlist
    /// (`/<p>/<s>/live.m3u8`).
    pub fn wait_live(&self, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !http_get(self.edges[0].http, path, &[])
            .is_ok_and(|a| a.status == 200 && !playlist_segments(&a.text()).is_empty())
        {
            assert!(
                Instant::now() < deadline,
                "{path} never went live:\n{}",
                self.ingest.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
