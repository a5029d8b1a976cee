//! Which ingest servers answer the ingest name (`ingest.<zone>`), without I/O.
//!
//! SRT (and any UDP publishing protocol) cannot go through the TCP load balancer in
//! front of a cluster, so publishers resolve one name instead: the router answers it
//! with the healthy, least-loaded ingest servers of the cluster nearest the publisher.
//! "Nearest" is what the router already knows about the publisher's prefix: the site
//! the static map gives it, then the sites of the edges the delivery decision ranks
//! for it, best first; a cluster with a healthy server at the first of those sites is
//! the publisher's. Without any, the cluster of the least-loaded healthy server.
//!
//! Within the cluster, servers are ranked by publishers held, then CPU (in steps of a
//! tenth of a core, so noise does not reorder equals), then id: deterministic, so every
//! router answers alike. A draining server, or one whose origin does not answer the
//! router's check, is not healthy and is never answered.

use std::net::IpAddr;

use serde::Serialize;

/// Ingest servers answered per query, at most: a publisher tries the first, and a
/// resolver that rotates answers spreads publishers over the two least loaded.
pub const INGEST_ANSWERS: usize = 2;

/// An ingest server as the router knows it (from the node directory and its check).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IngestServer {
    pub id: String,
    pub cluster: String,
    pub site: String,
    /// Where publishers reach its SRT listener (the port is the deployment's).
    pub addrs: Vec<IpAddr>,
    /// Its origin answered the router's check and it is not draining.
    pub healthy: bool,
    /// Publishers it holds now (as it last announced).
    pub publishers: u64,
    /// CPU cores it used, as it last announced.
    pub cpu: f64,
}

/// The decision for one ingest-name query.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IngestChoice {
    /// The chosen cluster; `None` when no ingest server is healthy.
    pub cluster: Option<String>,
    /// Server ids, best first, at most `answers`.
    pub servers: Vec<String>,
    /// The addresses to answer, in the servers' order.
    pub addrs: Vec<IpAddr>,
}

/// Ranks `servers` for a publisher whose nearest sites are `near` (best first; see the
/// module documentation) and keeps the best `answers`.
pub fn choose(servers: &[IngestServer], near: &[&str], answers: usize) -> IngestChoice {
    let healthy = || servers.iter().filter(|s| s.healthy && !s.addrs.is_empty());
    let cluster = near
        .iter()
        .find_map(|site| healthy().find(|s| s.site == *site))
        .or_else(|| healthy().min_by(|a, b| rank(a, b)))
        .map(|s| s.cluster.clone());
    let Some(cluster) = cluster else {
        return IngestChoice::default();
    };
    let mut chosen: Vec<&IngestServer> = healthy().filter(|s| s.cluster == cluster).collect();
    chosen.sort_by(|a, b| rank(a, b));
    chosen.truncate(answers);
    IngestChoice {
        cluster: Some(cluster),
        servers: chosen.iter().map(|s| s.id.clone()).collect(),
        addrs: chosen
            .iter()
            .flat_map(|s| s.addrs.iter().copied())
            .collect(),
    }
}

/// Least loaded first: publishers, then CPU in tenths of a core, then id.
fn rank(a: &IngestServer, b: &IngestServer) -> std::cmp::Ordering {
    let tenths = |s: &IngestServer| (s.cpu.max(0.0) * 10.0).round() as u64;
    (a.publishers, tenths(a), &a.id).cmp(&(b.publishers, tenths(b), &b.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(id: &str, cluster: &str, ip: &str, publishers: u64) -> IngestServer {
        IngestServer {
            id: id.to_owned(),
            cluster: cluster.to_owned(),
            site: cluster.to_owned(),
            addrs: vec![ip.parse().unwrap()],
            healthy: true,
            publishers,
            cpu: 0.2,
        }
    }

    fn ids(choice: &IngestChoice) -> Vec<&str> {
        choice.servers.iter().map(String::as_str).collect()
    }

    #[test]
    fn the_least_loaded_healthy_servers_of_the_nearest_cluster_are_answered() {
        let servers = vec![
            server("eu-1", "eu", "10.0.0.1", 5),
            server("eu-2", "eu", "10.0.0.2", 1),
            server("eu-3", "eu", "10.0.0.3", 3),
            server("us-1", "us", "10.1.0.1", 0),
        ];
        let choice = choose(&servers, &["eu"], INGEST_ANSWERS);
        assert_eq!(choice.cluster.as_deref(), Some("eu"));
        assert_eq!(ids(&choice), ["eu-2", "eu-3"]);
        assert_eq!(
            choice.addrs,
            ["10.0.0.2", "10.0.0.3"].map(|a| a.parse::<IpAddr>().unwrap())
        );
        // A site without ingest servers is passed over for the next one named.
        let choice = choose(&servers, &["ap", "us", "eu"], INGEST_ANSWERS);
        assert_eq!(ids(&choice), ["us-1"]);
    }

    #[test]
    fn draining_or_dead_servers_are_dropped() {
        let mut servers = vec![
            server("eu-1", "eu", "10.0.0.1", 0),
            server("eu-2", "eu", "10.0.0.2", 4),
        ];
        servers[0].healthy = false;
        let choice = choose(&servers, &["eu"], INGEST_ANSWERS);
        assert_eq!(ids(&choice), ["eu-2"]);
        servers[1].healthy = false;
        assert_eq!(
            choose(&servers, &["eu"], INGEST_ANSWERS),
            IngestChoice::default()
        );
        // A server with no SRT address cannot be answered either.
        servers[1].healthy = true;
        servers[1].addrs.clear();
        assert!(choose(&servers, &["eu"], INGEST_ANSWERS).servers.is_empty());
    }

    #[test]
    fn without_a_near_site_the_least_loaded_server_picks_the_cluster() {
        let servers = vec![
            server("eu-1", "eu", "10.0.0.1", 2),
            server("us-1", "us", "10.1.0.1", 1),
            server("us-2", "us", "10.1.0.2", 7),
        ];
        let choice = choose(&servers, &[], INGEST_ANSWERS);
        assert_eq!(choice.cluster.as_deref(), Some("us"));
        assert_eq!(ids(&choice), ["us-1", "us-2"]);
        // A near site whose only server is unhealthy does not count.
        let mut servers = servers;
        servers[0].healthy = false;
        assert_eq!(choose(&servers, &["eu"], 1).cluster.as_deref(), Some("us"));
    }

    #[test]
    fn cpu_breaks_ties_in_tenths_then_the_id_keeps_answers_stable() {
        let mut servers = vec![
            server("b", "eu", "10.0.0.2", 1),
            server("a", "eu", "10.0.0.1", 1),
            server("c", "eu", "10.0.0.3", 1),
        ];
        servers[0].cpu = 0.21;
        servers[1].cpu = 0.24;
        servers[2].cpu = 0.9;
        // 0.21 and 0.24 are the same tenth: the id decides.
        assert_eq!(ids(&choose(&servers, &["eu"], 3)), ["a", "b", "c"]);
        let ipv6 = IngestServer {
            addrs: vec!["2001:db8::1".parse().unwrap(), "10.0.0.9".parse().unwrap()],
            ..server("d", "eu", "10.0.0.9", 0)
        };
        servers.push(ipv6);
        let choice = choose(&servers, &["eu"], 1);
        assert_eq!(ids(&choice), ["d"]);
        assert_eq!(choice.addrs.len(), 2, "both families of the chosen server");
    }
}
