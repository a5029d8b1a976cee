//! The shell: reads the node directory, asks every server for its parts over its admin
//! API (all at once, each request within [`REQUEST_TIMEOUT`]), and assembles the answers
//! ([`crate::document::assemble`]). Triggers take a second round: the collection, then
//! the newest [`TRIGGERS_SHOWN`] statuses and their servers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{AUTHORIZATION, USER_AGENT};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use serde_json::Value;
use streamcdn_access::admin::PeerKey;
use streamcdn_registry::{NodeRecord, Registry, RegistryError};
use streamcdn_support::clock::now_ms;
use streamcdn_support::http_client::{error_chain, ClientOptions};

use crate::document::{assemble, Answer, Deployment, Unreachable};
use crate::sources::{parts_of, trigger_paths, Part, SERVER_HEADER};

/// How long one server has to answer one request: a server slower than this is listed
/// as unreachable rather than holding the whole view up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The newest triggers of each command invocation system that the view shows.
pub const TRIGGERS_SHOWN: usize = 15;
/// The most of one answer read.
const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// Assembles the deployment view for one server's admin listener.
pub struct Overview {
    registry: Registry,
    /// This server's id in the node directory.
    server: String,
    /// This server's own admin API (it may announce none, listening on every address).
    own_admin: String,
    key: PeerKey,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Overview {
    pub fn new(registry: Registry, server: String, own_admin: String, key: PeerKey) -> Arc<Self> {
        // Idle connections kept as hyper's pool does by default: the dashboard asks the
        // same servers every two seconds.
        let client = ClientOptions::new()
            .connect_timeout(REQUEST_TIMEOUT)
            .keep_idle_for(Duration::from_secs(90))
            .client();
        Arc::new(Overview {
            registry,
            server,
            own_admin: own_admin.trim_end_matches('/').to_owned(),
            key,
            client,
        })
    }

    /// The whole deployment now. Fails only if the node directory cannot be read.
    pub async fn deployment(&self) -> Result<Deployment, RegistryError> {
        let nodes = self.registry.nodes().await?;
        let mut unreachable = Vec::new();
        let mut asks = Vec::new();
        for node in &nodes {
            let parts = parts_of(&node.roles);
            if parts.is_empty() {
                continue;
            }
            match self.admin_of(node) {
                Some(admin) => {
                    asks.extend(parts.into_iter().map(|part| (node, admin.clone(), part)))
                }
                None => unreachable.push(Unreachable {
                    server: node.id.clone(),
                    admin: None,
                    part: None,
                    error: "announces no admin address (admin.listen is a wildcard address)".into(),
                }),
            }
        }
        let results = join_all(asks.iter().map(|(node, admin, part)| async move {
            let body = match part {
                Part::Triggers => self.triggers(&node.id, admin).await,
                _ => self.get(&node.id, admin, part.path()).await,
            };
            (node, admin, *part, body)
        }))
        .await;
        let mut answers = Vec::new();
        for (node, admin, part, body) in results {
            match body {
                Ok(body) => answers.push(Answer {
                    server: node.id.clone(),
                    part,
                    body,
                }),
                Err(error) => unreachable.push(Unreachable {
                    server: node.id.clone(),
                    admin: Some(admin.clone()),
                    part: Some(part),
                    error,
                }),
            }
        }
        for failed in &unreachable {
            tracing::debug!(server = failed.server, part = ?failed.part, error = failed.error, "deployment view: a part could not be read");
        }
        Ok(assemble(
            &self.server,
            now_ms(),
            &nodes,
            &answers,
            unreachable,
        ))
    }

    fn admin_of(&self, node: &NodeRecord) -> Option<String> {
        if node.id == self.server {
            return Some(self.own_admin.clone());
        }
        node.addresses
            .admin
            .as_ref()
            .map(|a| a.trim_end_matches('/').to_owned())
    }

    /// The CIS's newest triggers, each `{id, status, servers}`.
    async fn triggers(&self, server: &str, admin: &str) -> Result<Value, String> {
        let collection = self.get(server, admin, Part::Triggers.path()).await?;
        let paths = trigger_paths(&collection, TRIGGERS_SHOWN);
        let triggers = join_all(paths.iter().map(|path| async move {
            let servers_path = format!("{path}/servers");
            let (status, servers) = tokio::join!(
                self.get(server, admin, path),
                self.get(server, admin, &servers_path)
            );
            // A trigger gone between the two rounds (expired) is left out.
            let status = status.ok()?;
            let id = path.rsplit('/').next().unwrap_or_default();
            Some(serde_json::json!({
                "id": id,
                "status": status,
                "servers": servers.unwrap_or(Value::Null),
            }))
        }))
        .await;
        Ok(Value::Array(triggers.into_iter().flatten().collect()))
    }

    /// `GET admin+path` as a peer, within [`REQUEST_TIMEOUT`]: the JSON body of a `200`
    /// from `server` itself.
    async fn get(&self, server: &str, admin: &str, path: &str) -> Result<Value, String> {
        let url = format!("{admin}{path}");
        let request = hyper::Request::get(&url)
            .header(AUTHORIZATION, self.key.authorization("GET", path, now_ms()))
            .header(USER_AGENT, "streamcdn-overview")
            .body(Empty::new())
            .map_err(|e| format!("{url}: {e}"))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| error_chain(&e))?;
            let status = response.status();
            let answered_by = response
                .headers()
                .get(SERVER_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("a server that does not say")
                .to_owned();
            if answered_by != server {
                return Err(format!(
                    "answered by {answered_by}: this address does not reach {server} from here \
                     (make its admin.listen an address the other servers reach)"
                ));
            }
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            if !status.is_success() {
                let text = String::from_utf8_lossy(&body);
                return Err(format!(
                    "{status}: {}",
                    text.lines().next().unwrap_or_default()
                ));
            }
            serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(result) => result.map_err(|e| format!("{url}: {e}")),
            Err(_) => Err(format!("{url}: no answer within {REQUEST_TIMEOUT:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::extract::Request;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use streamcdn_access::admin::{Role as TokenRole, Token, Tokens};
    use streamcdn_registry::{NodeAddresses, Role};

    use super::*;

    fn node(id: &str, roles: &[Role], admin: Option<String>) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            cluster: "c1".into(),
            origin: String::new(),
            roles: roles.to_vec(),
            site: "s1".into(),
            addresses: NodeAddresses {
                admin,
                ..NodeAddresses::default()
            },
            load: Default::default(),
            capacity: None,
            draining: false,
        }
    }

    /// An ingest's admin API, naming itself `id`, that lets in only `key`'s peers (and a
    /// token nobody sends).
    async fn ingest_admin(id: &str, key: PeerKey) -> String {
        let tokens = Arc::new(
            Tokens::new(vec![Token::new("unused", TokenRole::Admin, None)]).with_peers(key),
        );
        let app = axum::Router::new()
            .route(
                "/api/v1/streams",
                axum::routing::get(|| async {
                    axum::Json(serde_json::json!([{"provider": "demo", "stream": "cam"}]))
                }),
            )
            .route(
                "/api/v1/recordings",
                axum::routing::get(|| async { axum::Json(serde_json::json!([])) }),
            )
            .layer(axum::middleware::from_fn(
                move |request: Request, next: axum::middleware::Next| {
                    let tokens = tokens.clone();
                    async move {
                        let authorization = request
                            .headers()
                            .get(AUTHORIZATION)
                            .and_then(|v| v.to_str().ok());
                        match tokens.authorize("GET", request.uri().path(), authorization, now_ms())
                        {
                            Ok(_) => next.run(request).await,
                            Err(_) => StatusCode::UNAUTHORIZED.into_response(),
                        }
                    }
                },
            ));
        let app = crate::sources::name_the_server(app, id);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    #[tokio::test]
    async fn servers_are_read_as_peers_and_the_silent_ones_are_listed() {
        let key = PeerKey::new(b"deployment");
        let live = ingest_admin("ingest-1", key.clone()).await;
        // Another deployment's key: every request to it is refused.
        let foreign = ingest_admin("ingest-2", PeerKey::new(b"another deployment")).await;
        // A port nothing listens on.
        let dead = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", listener.local_addr().unwrap())
        };
        let registry = Registry::memory();
        let lease = Duration::from_secs(30);
        for n in [
            node("ingest-1", &[Role::Ingest], Some(live.clone())),
            node("ingest-2", &[Role::Ingest], Some(foreign)),
            node("ingest-3", &[Role::Ingest], Some(dead)),
            node("edge-1", &[Role::Edge], None),
            // Announces ingest-1's address (a loopback address seen from elsewhere).
            node("ingest-4", &[Role::Ingest], Some(live.clone())),
            node("mid-1", &[Role::MidTier], None),
        ] {
            registry.register_node(&n, lease).await.unwrap();
        }
        let overview = Overview::new(registry, "here".into(), "http://127.0.0.1:1".into(), key);
        let started = std::time::Instant::now();
        let doc = overview.deployment().await.unwrap();
        assert!(
            started.elapsed() < REQUEST_TIMEOUT * 2,
            "{:?}",
            started.elapsed()
        );
        assert_eq!(doc.streams.len(), 1);
        assert_eq!(doc.streams[0]["server"], "ingest-1");
        let failed: Vec<(&str, Option<Part>)> = doc
            .unreachable
            .iter()
            .map(|u| (u.server.as_str(), u.part))
            .collect();
        assert_eq!(
            failed,
            vec![
                ("edge-1", None),
                ("ingest-2", Some(Part::Streams)),
                ("ingest-2", Some(Part::Recordings)),
                ("ingest-3", Some(Part::Streams)),
                ("ingest-3", Some(Part::Recordings)),
                ("ingest-4", Some(Part::Streams)),
                ("ingest-4", Some(Part::Recordings)),
            ]
        );
        let misdirected = doc.unreachable.last().unwrap();
        assert!(
            misdirected.error.contains("answered by ingest-1"),
            "{misdirected:?}"
        );
        let refused = &doc.unreachable[1];
        assert!(refused.error.contains("401"), "{refused:?}");
        assert_eq!(doc.nodes.len(), 6);
    }
}
