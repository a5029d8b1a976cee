//! The deployment document and how the servers' answers become it. Parts are passed
//! through as each server wrote them (so this crate never lags behind a role's API),
//! with `server` added; only what is merged across servers is read: stream and
//! recording names, viewer counts, edge health.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use streamcdn_registry::NodeRecord;

use crate::sources::Part;

/// What one server answered for one part.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub server: String,
    pub part: Part,
    pub body: Value,
}

/// A server, or one of its parts, that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreachable {
    pub server: String,
    /// Its admin address, if it announces one.
    pub admin: Option<String>,
    /// The part that failed; `None`: the server as a whole.
    pub part: Option<Part>,
    pub error: String,
}

/// One stream's viewers, summed over the edges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamViewers {
    pub provider: String,
    pub stream: String,
    pub viewers: u64,
    /// Each edge's own count.
    pub edges: BTreeMap<String, u64>,
}

/// The whole deployment, as one server assembled it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deployment {
    /// The server that assembled this document.
    pub server: String,
    pub generated_at_ms: u64,
    /// Every server of the node directory, as it announces itself, with `health` (from a
    /// router: `healthy`, and `health_from`, the router's id) and, for edges, `viewers`.
    pub nodes: Vec<Value>,
    /// Live streams, each with `server` (the ingest that answered: the holder),
    /// `viewers` (over all edges) and `viewers_by_edge`.
    pub streams: Vec<Value>,
    /// Every recording once (servers of a cluster list the same ones), newest first,
    /// with `server`; archived ones only the archiver lists have `archived: true`.
    pub recordings: Vec<Value>,
    /// Each archiver's queue, with `server`.
    pub archive: Vec<Value>,
    /// Viewers per stream (live or a recording of it) over all edges.
    pub viewers: Vec<StreamViewers>,
    /// Each router's view: `server`, `edges` and `map`.
    pub routing: Vec<Value>,
    /// Each command invocation system's federation view, with `server`.
    pub federation: Vec<Value>,
    /// The newest triggers of each command invocation system, newest first, each
    /// `{server, id, status, servers}`.
    pub triggers: Vec<Value>,
    pub unreachable: Vec<Unreachable>,
}

/// An edge's answer to `GET /api/v1/viewers`.
#[derive(Deserialize)]
struct EdgeViewers {
    provider: String,
    stream: String,
    viewers: u64,
}

/// `value` (an object) with `server` set.
fn from_server(value: &Value, server: &str) -> Value {
    let mut object = match value {
        Value::Object(map) => map.clone(),
        other => Map::from_iter([("value".to_owned(), other.clone())]),
    };
    object.insert("server".into(), server.into());
    Value::Object(object)
}

fn items(body: &Value) -> &[Value] {
    body.as_array().map_or(&[], Vec::as_slice)
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or_default()
}

/// Merges the answers. `nodes` is the node directory; `unreachable` what could not be
/// read; answers arrive in any order, and come out in a stable one.
pub fn assemble(
    server: &str,
    generated_at_ms: u64,
    nodes: &[NodeRecord],
    answers: &[Answer],
    mut unreachable: Vec<Unreachable>,
) -> Deployment {
    let mut answers: Vec<&Answer> = answers.iter().collect();
    answers.sort_by(|a, b| (&a.server, a.part).cmp(&(&b.server, b.part)));
    let of = |part: Part| answers.iter().filter(move |a| a.part == part);

    // Viewers: each edge's count, summed per stream.
    let mut viewers: BTreeMap<(String, String), StreamViewers> = BTreeMap::new();
    let mut by_edge: BTreeMap<&str, u64> = BTreeMap::new();
    for answer in of(Part::Viewers) {
        let counts: Vec<EdgeViewers> =
            serde_json::from_value(answer.body.clone()).unwrap_or_default();
        // An edge that answered with no viewers has 0, not "unknown".
        by_edge.entry(&answer.server).or_default();
        for count in counts {
            *by_edge.entry(&answer.server).or_default() += count.viewers;
            let entry = viewers
                .entry((count.provider.clone(), count.stream.clone()))
                .or_insert_with(|| StreamViewers {
                    provider: count.provider,
                    stream: count.stream,
                    viewers: 0,
                    edges: BTreeMap::new(),
                });
            entry.viewers += count.viewers;
            entry.edges.insert(answer.server.clone(), count.viewers);
        }
    }

    let mut streams: Vec<Value> = of(Part::Streams)
        .flat_map(|a| items(&a.body).iter().map(|s| from_server(s, &a.server)))
        .collect();
    for stream in &mut streams {
        let key = (
            text(stream, "provider").to_owned(),
            text(stream, "stream").to_owned(),
        );
        let counted = viewers.get(&key);
        stream["viewers"] = counted.map_or(0, |v| v.viewers).into();
        stream["viewers_by_edge"] =
            counted.map_or_else(|| serde_json::json!({}), |v| serde_json::json!(v.edges));
    }
    streams.sort_by(|a, b| {
        (text(a, "provider"), text(a, "stream")).cmp(&(text(b, "provider"), text(b, "stream")))
    });

    // Recordings: the cluster's own first, then what only on-demand storage has.
    let mut seen = HashSet::new();
    let mut recordings = Vec::new();
    for part in [Part::Recordings, Part::ArchivedRecordings] {
        for answer in of(part) {
            for recording in items(&answer.body) {
                let key = (
                    text(recording, "provider").to_owned(),
                    text(recording, "stream").to_owned(),
                    text(recording, "recording_id").to_owned(),
                );
                if !seen.insert(key) {
                    continue;
                }
                let mut recording = from_server(recording, &answer.server);
                if part == Part::ArchivedRecordings {
                    recording["archived"] = true.into();
                }
                recordings.push(recording);
            }
        }
    }
    recordings.sort_by(|a, b| text(b, "recording_id").cmp(text(a, "recording_id")));

    // Routing: each router's edges and map side by side; edge health for the nodes.
    let mut routing: BTreeMap<&str, Value> = BTreeMap::new();
    let mut health: BTreeMap<&str, (bool, &str)> = BTreeMap::new();
    for answer in of(Part::RoutingEdges).chain(of(Part::RoutingMap)) {
        let view = routing
            .entry(&answer.server)
            .or_insert_with(|| serde_json::json!({"server": answer.server}));
        if answer.part == Part::RoutingEdges {
            view["edges"] = answer.body.clone();
            for edge in items(&answer.body) {
                if let (Some(id), Some(healthy)) = (edge["id"].as_str(), edge["healthy"].as_bool())
                {
                    // A router that finds it unhealthy wins over one that does not.
                    let known = health.entry(id).or_insert((healthy, &answer.server));
                    if !healthy && known.0 {
                        *known = (false, &answer.server);
                    }
                }
            }
        } else {
            view["map"] = answer.body.clone();
        }
    }

    let nodes = nodes
        .iter()
        .map(|node| {
            let mut value = serde_json::to_value(node).unwrap_or(Value::Null);
            if let Some((healthy, router)) = health.get(node.id.as_str()) {
                value["healthy"] = (*healthy).into();
                value["health_from"] = (*router).into();
            }
            if let Some(count) = by_edge.get(node.id.as_str()) {
                value["viewers"] = (*count).into();
            }
            value
        })
        .collect();

    let passed =
        |part: Part| -> Vec<Value> { of(part).map(|a| from_server(&a.body, &a.server)).collect() };

    let mut triggers: Vec<Value> = of(Part::Triggers)
        .flat_map(|a| items(&a.body).iter().map(|t| from_server(t, &a.server)))
        .collect();
    triggers.sort_by(|a, b| {
        let mtime = |t: &Value| t["status"]["mtime"].as_u64().unwrap_or_default();
        mtime(b).cmp(&mtime(a))
    });

    unreachable.sort_by(|a, b| (&a.server, a.part).cmp(&(&b.server, b.part)));
    Deployment {
        server: server.to_owned(),
        generated_at_ms,
        nodes,
        streams,
        recordings,
        archive: passed(Part::Archive),
        viewers: viewers.into_values().collect(),
        routing: routing.into_values().collect(),
        federation: passed(Part::Federation),
        triggers,
        unreachable,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use streamcdn_registry::Role;

    use super::*;

    fn node(id: &str, roles: &[Role]) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            cluster: "c1".into(),
            origin: String::new(),
            roles: roles.to_vec(),
            site: "s1".into(),
            addresses: Default::default(),
            load: Default::default(),
            capacity: None,
            draining: false,
        }
    }

    fn answer(server: &str, part: Part, body: Value) -> Answer {
        Answer {
            server: server.into(),
            part,
            body,
        }
    }

    /// Two ingests of one cluster, two edges, an archiver and a router.
    fn answers() -> Vec<Answer> {
        let recording = |id: &str| json!({"provider": "demo", "stream": "old", "recording_id": id, "state": "ended"});
        vec![
            answer(
                "edge-b",
                Part::Viewers,
                json!([
                    {"provider": "demo", "stream": "cam", "viewers": 2},
                    {"provider": "demo", "stream": "old", "viewers": 1},
                ]),
            ),
            answer(
                "edge-a",
                Part::Viewers,
                json!([{"provider": "demo", "stream": "cam", "viewers": 3}]),
            ),
            answer("edge-c", Part::Viewers, json!([])),
            answer("ingest-2", Part::Streams, json!([])),
            answer(
                "ingest-1",
                Part::Streams,
                json!([
                    {"provider": "demo", "stream": "cam", "ingest_server": "ingest-1", "codecs": ["avc1.64001f"]},
                ]),
            ),
            // Shared storage: both ingests list r1.
            answer("ingest-1", Part::Recordings, json!([recording("r1")])),
            answer(
                "ingest-2",
                Part::Recordings,
                json!([recording("r1"), recording("r2")]),
            ),
            answer(
                "archiver",
                Part::ArchivedRecordings,
                json!([recording("r1"), recording("r0")]),
            ),
            answer(
                "archiver",
                Part::Archive,
                json!({"archived": 1, "failures": 0, "waiting": []}),
            ),
            answer(
                "router",
                Part::RoutingEdges,
                json!([
                    {"id": "edge-a", "healthy": true}, {"id": "edge-b", "healthy": false},
                ]),
            ),
            answer(
                "router",
                Part::RoutingMap,
                json!({"version": 3, "entries": {}}),
            ),
            answer(
                "router",
                Part::Federation,
                json!({"participant": "AS64496:1"}),
            ),
            answer(
                "router",
                Part::Triggers,
                json!([
                    {"id": "1", "status": {"mtime": 10, "status": "complete"}, "servers": []},
                    {"id": "2", "status": {"mtime": 20, "status": "active"}, "servers": []},
                ]),
            ),
        ]
    }

    fn assembled() -> Deployment {
        let nodes = [
            node("edge-a", &[Role::Edge]),
            node("edge-b", &[Role::Edge]),
            node("ingest-1", &[Role::Ingest]),
            node("edge-c", &[Role::Edge]),
            node("mid", &[Role::MidTier]),
        ];
        let unreachable = vec![Unreachable {
            server: "ingest-3".into(),
            admin: Some("http://10.0.0.3:9090".into()),
            part: None,
            error: "timed out".into(),
        }];
        assemble("router", 42, &nodes, &answers(), unreachable)
    }

    #[test]
    fn streams_name_their_holder_and_sum_viewers_over_edges() {
        let d = assembled();
        assert_eq!(d.streams.len(), 1);
        let cam = &d.streams[0];
        assert_eq!(cam["server"], "ingest-1");
        assert_eq!(cam["ingest_server"], "ingest-1");
        assert_eq!(cam["codecs"], json!(["avc1.64001f"]));
        assert_eq!(cam["viewers"], 5);
        assert_eq!(cam["viewers_by_edge"], json!({"edge-a": 3, "edge-b": 2}));
        assert_eq!(
            d.viewers,
            vec![
                StreamViewers {
                    provider: "demo".into(),
                    stream: "cam".into(),
                    viewers: 5,
                    edges: BTreeMap::from([("edge-a".into(), 3), ("edge-b".into(), 2)]),
                },
                StreamViewers {
                    provider: "demo".into(),
                    stream: "old".into(),
                    viewers: 1,
                    edges: BTreeMap::from([("edge-b".into(), 1)]),
                },
            ]
        );
    }

    #[test]
    fn recordings_appear_once_and_archived_ones_are_marked() {
        let d = assembled();
        let ids: Vec<&str> = d
            .recordings
            .iter()
            .map(|r| text(r, "recording_id"))
            .collect();
        assert_eq!(ids, vec!["r2", "r1", "r0"]);
        assert_eq!(d.recordings[1]["server"], "ingest-1");
        assert_eq!(d.recordings[2]["archived"], true);
        assert_eq!(d.recordings[2]["server"], "archiver");
    }

    #[test]
    fn nodes_carry_health_and_viewers_and_parts_name_their_server() {
        let d = assembled();
        let by_id = |id: &str| d.nodes.iter().find(|n| n["id"] == id).unwrap().clone();
        assert_eq!(by_id("edge-a")["healthy"], true);
        assert_eq!(by_id("edge-a")["health_from"], "router");
        assert_eq!(by_id("edge-a")["viewers"], 3);
        assert_eq!(by_id("edge-b")["healthy"], false);
        assert_eq!(by_id("mid").get("healthy"), None);
        assert_eq!(by_id("edge-c")["viewers"], 0);
        assert_eq!(by_id("mid").get("viewers"), None);
        assert_eq!(
            d.archive,
            vec![json!({"archived": 1, "failures": 0, "waiting": [], "server": "archiver"})]
        );
        assert_eq!(d.routing[0]["server"], "router");
        assert_eq!(d.routing[0]["map"]["version"], 3);
        assert_eq!(d.routing[0]["edges"][0]["id"], "edge-a");
        assert_eq!(d.federation[0]["participant"], "AS64496:1");
        let triggers: Vec<&str> = d.triggers.iter().map(|t| text(t, "id")).collect();
        assert_eq!(triggers, vec!["2", "1"]);
        assert_eq!(d.triggers[0]["server"], "router");
        assert_eq!(d.unreachable[0].server, "ingest-3");
        assert_eq!((d.server.as_str(), d.generated_at_ms), ("router", 42));
    }

    #[test]
    fn the_order_of_answers_does_not_matter() {
        let nodes = [node("edge-a", &[Role::Edge])];
        let mut reversed = answers();
        reversed.reverse();
        assert_eq!(
            assemble("x", 1, &nodes, &answers(), vec![]),
            assemble("x", 1, &nodes, &reversed, vec![])
        );
    }

    #[test]
    fn answers_of_an_unexpected_shape_are_skipped_not_fatal() {
        let odd = vec![
            answer("edge-a", Part::Viewers, json!({"not": "a list"})),
            answer("ingest-1", Part::Streams, json!("text")),
            answer("router", Part::RoutingEdges, json!([{"id": 7}])),
            answer("archiver", Part::Archive, json!(3)),
        ];
        let d = assemble("x", 1, &[], &odd, vec![]);
        assert!(d.streams.is_empty() && d.viewers.is_empty());
        assert_eq!(d.archive, vec![json!({"value": 3, "server": "archiver"})]);
    }
}
