//! What each server is asked for: its roles decide which admin routes it has.

use serde::Serialize;
use serde_json::Value;
use streamcdn_registry::Role;

/// The id (in the node directory) of the server that answered an admin request. The
/// view checks it, so an admin address that reaches another server than the one that
/// announced it (a loopback address seen from another host) is reported, not believed.
pub const SERVER_HEADER: &str = "x-streamcdn-server";

/// One part of the deployment, as one server's admin API answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// An ingest's live streams.
    Streams,
    /// The recordings on an ingest cluster's storage.
    Recordings,
    /// Recordings in on-demand storage (the archiver lists them).
    ArchivedRecordings,
    /// The archiver's queue.
    Archive,
    /// An edge's viewers per stream.
    Viewers,
    /// A router's edges and their health.
    RoutingEdges,
    /// A router's routing map.
    RoutingMap,
    /// The participant and its partners (the CIS, beside each router).
    Federation,
    /// The CIS's trigger collection.
    Triggers,
}

impl Part {
    pub fn path(self) -> &'static str {
        match self {
            Part::Streams => "/api/v1/streams",
            Part::Recordings => "/api/v1/recordings",
            Part::ArchivedRecordings => "/api/v1/recordings/archived",
            Part::Archive => "/api/v1/archive",
            Part::Viewers => "/api/v1/viewers",
            Part::RoutingEdges => "/api/v1/routing/edges",
            Part::RoutingMap => "/api/v1/routing/map",
            Part::Federation => "/api/v1/federation",
            Part::Triggers => "/api/v1/triggers",
        }
    }
}

/// The parts a server with `roles` holds. A mid-tier serves no viewers; the command
/// invocation system runs wherever a router does.
pub fn parts_of(roles: &[Role]) -> Vec<Part> {
    let mut parts = Vec::new();
    for role in roles {
        parts.extend_from_slice(match role {
            Role::Ingest => &[Part::Streams, Part::Recordings][..],
            Role::Archiver => &[Part::Archive, Part::ArchivedRecordings],
            Role::Edge => &[Part::Viewers],
            Role::MidTier => &[],
            Role::Router => &[
                Part::RoutingEdges,
                Part::RoutingMap,
                Part::Federation,
                Part::Triggers,
            ],
        });
    }
    parts.sort();
    parts.dedup();
    parts
}

/// The admin paths of the newest `limit` triggers of a collection
/// (`{"triggers": ["<base>/api/v1/triggers/<id>", ...]}`, oldest first), newest first.
pub fn trigger_paths(collection: &Value, limit: usize) -> Vec<String> {
    let Some(urls) = collection["triggers"].as_array() else {
        return Vec::new();
    };
    urls.iter()
        .rev()
        .filter_map(|url| {
            let (_, rest) = url.as_str()?.split_once("/api/v1/triggers/")?;
            let id = rest.split(['/', '?', '#']).next()?;
            (!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
                .then(|| format!("/api/v1/triggers/{id}"))
        })
        .take(limit)
        .collect()
}

/// `admin` with [`SERVER_HEADER`] on every answer.
pub fn name_the_server(admin: axum::Router, server: &str) -> axum::Router {
    let Ok(name) = axum::http::HeaderValue::try_from(server) else {
        return admin;
    };
    admin.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let name = name.clone();
            async move {
                let mut response = next.run(request).await;
                response.headers_mut().insert(SERVER_HEADER, name);
                response
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_is_asked_for_its_own_parts() {
        assert_eq!(
            parts_of(&[Role::Ingest, Role::Edge, Role::Archiver, Role::Router]),
            vec![
                Part::Streams,
                Part::Recordings,
                Part::ArchivedRecordings,
                Part::Archive,
                Part::Viewers,
                Part::RoutingEdges,
                Part::RoutingMap,
                Part::Federation,
                Part::Triggers,
            ]
        );
        assert_eq!(parts_of(&[Role::MidTier]), vec![]);
        assert_eq!(parts_of(&[Role::Edge, Role::Edge]), vec![Part::Viewers]);
    }

    #[test]
    fn trigger_paths_are_the_newest_and_only_well_formed() {
        let collection = serde_json::json!({"triggers": [
            "http://127.0.0.1:1/api/v1/triggers/1",
            "http://127.0.0.1:1/api/v1/triggers/2",
            "http://evil/api/v1/triggers/../../metrics",
            "not a url",
            "http://127.0.0.1:1/api/v1/triggers/4",
        ]});
        assert_eq!(
            trigger_paths(&collection, 2),
            vec!["/api/v1/triggers/4", "/api/v1/triggers/2"]
        );
        assert!(trigger_paths(&serde_json::json!({}), 5).is_empty());
    }
}
