//! Configurations between participants: ours are pushed to the partners we delegate
//! them to (again every [`PUSH_EVERY`]); a partner's arrive by
//! `PUT /cdni/v1/configurations/<id>` and are kept as deployment records in the
//! registry, which our edges read (`edge::carried`). Only the active CIS does either.
//! Also the state every API handler shares ([`ApiState`]) and
//! `GET /api/v1/federation`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Extension;
use streamcdn_registry::DeploymentRecord;

use crate::call::call;
use crate::document::ConfigurationDocument;
use crate::identity::Partner;
use crate::service::{Mode, PARTNER_TIMEOUT};
use crate::shared::{problem, standing_by, ApiState};
use crate::state::{Caller, Interface};

pub const CONFIGURATIONS_PATH: &str = "/cdni/v1/configurations";
/// Our configurations are delivered to partners again this often (a partner that
/// restarted with a registry in memory gets them back), every second while one fails.
const PUSH_EVERY: Duration = Duration::from_secs(10);
const PUSH_RETRY: Duration = Duration::from_secs(1);

impl ApiState {
    /// The configuration documents we deliver to `partner` now.
    async fn documents_for(
        &self,
        partner: &Partner,
    ) -> Result<Vec<ConfigurationDocument>, streamcdn_registry::RegistryError> {
        let deployments = self.registry.deployments().await?;
        let mut documents = Vec::new();
        for id in &partner.delegate {
            if let Some(own) = self.participant.own.iter().find(|c| c.id == *id) {
                documents.push(ConfigurationDocument::new(
                    id,
                    self.participant.us,
                    &own.hostnames,
                    &own.origin,
                    own.max_ttl_secs,
                ));
            } else if let Some(d) = deployments.iter().find(|d| d.configuration == *id) {
                let Ok(owner) = d.owner.parse() else { continue };
                documents.push(ConfigurationDocument::new(
                    id,
                    owner,
                    &d.hostnames,
                    &d.origin,
                    d.max_ttl_secs,
                ));
            }
        }
        Ok(documents)
    }

    /// Delivers every delegated configuration to its partners, once; whether all went.
    pub async fn push_once(&self) -> bool {
        let mut all = true;
        for partner in self.partners.values() {
            let documents = match self.documents_for(partner).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the deployments");
                    return false;
                }
            };
            for document in documents {
                let url = format!("{}{CONFIGURATIONS_PATH}/{}", partner.url, document.id);
                let body = serde_json::to_vec(&document).unwrap_or_default();
                let headers = [("content-type", "application/json".to_owned())];
                match call(
                    &partner.client,
                    Method::PUT,
                    &url,
                    &headers,
                    body,
                    PARTNER_TIMEOUT,
                )
                .await
                {
                    Ok((StatusCode::CREATED, _, _)) => {
                        tracing::info!(partner = %partner.id, configuration = %document.id, "configuration delegated");
                    }
                    Ok((StatusCode::NO_CONTENT, _, _)) => {}
                    Ok((status, _, answer)) => {
                        all = false;
                        tracing::warn!(partner = %partner.id, configuration = %document.id, %status, answer = %String::from_utf8_lossy(&answer).trim(), "partner refused the configuration");
                    }
                    Err(e) => {
                        all = false;
                        tracing::warn!(partner = %partner.id, configuration = %document.id, error = %e, "partner not reached with the configuration");
                    }
                }
            }
        }
        all
    }

    /// Pushes our configurations while this CIS is active, until `shutdown`.
    pub async fn push_configurations(
        self: Arc<Self>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let wait = if self.handle.mode() != Mode::Active {
                PUSH_RETRY
            } else if self.push_once().await {
                PUSH_EVERY
            } else {
                PUSH_RETRY
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// `PUT` and `DELETE /cdni/v1/configurations/<id>` on the federation listener.
pub fn routes(delegation: Arc<ApiState>) -> axum::Router {
    axum::Router::new()
        .route(
            &format!("{CONFIGURATIONS_PATH}/{{id}}"),
            put(receive_configuration).delete(withdraw_configuration),
        )
        .layer(Extension(Interface::Federation))
        .with_state(delegation)
}

/// `GET /api/v1/federation` on the admin API.
pub fn view_routes(delegation: Arc<ApiState>) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/federation", get(federation_view))
        .with_state(delegation)
}

/// `GET /api/v1/federation`: this participant, its partners, the configurations it owns
/// and those it carries for partners (for operators and the dashboard).
async fn federation_view(State(cis): State<Arc<ApiState>>) -> Response {
    let carried = match cis.registry.deployments().await {
        Ok(d) => d,
        Err(e) => return problem(503, format!("node directory unavailable: {e}")),
    };
    let partners: Vec<serde_json::Value> = cis
        .partners
        .values()
        .map(
            |p| serde_json::json!({ "id": p.id.to_string(), "url": p.url, "delegate": p.delegate }),
        )
        .collect();
    let own: Vec<serde_json::Value> = cis
        .participant
        .own
        .iter()
        .map(|c| {
            serde_json::json!({
                "id": c.id,
                "hostnames": c.hostnames,
                "origin": c.origin,
                "max_ttl_secs": c.max_ttl_secs,
                "delegated_to": cis.participant.delegated_to(&c.id).iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            })
        })
        .collect();
    axum::Json(serde_json::json!({
        "participant": cis.participant.us.to_string(),
        "partners": partners,
        "configurations": own,
        "carried": carried,
    }))
    .into_response()
}

/// `PUT /cdni/v1/configurations/<id>`: a partner delegates a configuration to us; we
/// deploy it on the servers `federation.carry_on` names (`201`; `204` if unchanged).
async fn receive_configuration(
    State(cis): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Mode::Standby(holder) = cis.handle.mode() {
        return standing_by(Mode::Standby(holder));
    }
    let peer = caller.who;
    let document = match ConfigurationDocument::parse(&body) {
        Ok(d) => d,
        Err(e) => return problem(400, format!("configuration document: {e}")),
    };
    if document.id != id {
        return problem(
            400,
            format!("the document is for {:?}, not {id:?}", document.id),
        );
    }
    let own = &cis.participant.own;
    if own.iter().any(|c| c.id == id) {
        return problem(409, format!("{id:?} is a configuration of ours"));
    }
    let hostnames = document.hostnames();
    let Ok(origin) = document.origin() else {
        return problem(400, "no origin".into());
    };
    let _one = cis.deploying.lock().await;
    let mut deployments = match cis.registry.deployments().await {
        Ok(d) => d,
        Err(e) => return problem(503, format!("node directory unavailable: {e}")),
    };
    let ours = own.iter().flat_map(|c| c.hostnames.iter());
    let theirs = deployments
        .iter()
        .filter(|d| d.configuration != id)
        .flat_map(|d| d.hostnames.iter());
    if let Some(taken) = ours.chain(theirs).find(|h| hostnames.contains(h)) {
        return problem(
            409,
            format!("host {taken:?} belongs to another configuration here"),
        );
    }
    let record = DeploymentRecord {
        configuration: id.clone(),
        owner: document.owner.to_string(),
        delegated_by: peer.to_string(),
        hostnames,
        origin,
        servers: cis.carry_on.clone(),
        delegated_to: cis
            .participant
            .delegated_to(&id)
            .iter()
            .map(|p| p.to_string())
            .collect(),
        max_ttl_secs: document.max_ttl_secs(),
    };
    let status = match deployments.iter_mut().find(|d| d.configuration == id) {
        Some(existing) if existing.delegated_by != record.delegated_by => {
            return problem(
                409,
                format!("{id:?} was delegated to us by {}", existing.delegated_by),
            );
        }
        Some(existing) if *existing == record => return StatusCode::NO_CONTENT.into_response(),
        Some(existing) => {
            *existing = record.clone();
            StatusCode::CREATED
        }
        None => {
            deployments.push(record.clone());
            StatusCode::CREATED
        }
    };
    if let Err(e) = cis.registry.set_deployments(&deployments).await {
        return problem(503, format!("cannot keep the deployment: {e}"));
    }
    tracing::info!(configuration = %id, owner = %record.owner, from = %peer, hostnames = ?record.hostnames, origin = %record.origin, "configuration received and deployed");
    metrics::counter!("streamcdn_cis_configurations_received_total").increment(1);
    if !record.delegated_to.is_empty() {
        // Delegated onward at once rather than at the next round.
        let cis = cis.clone();
        tokio::spawn(async move { cis.push_once().await });
    }
    status.into_response()
}

/// `DELETE /cdni/v1/configurations/<id>`: the partner that delegated it withdraws it.
async fn withdraw_configuration(
    State(cis): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Response {
    if let Mode::Standby(holder) = cis.handle.mode() {
        return standing_by(Mode::Standby(holder));
    }
    let peer = caller.who;
    let _one = cis.deploying.lock().await;
    let mut deployments = match cis.registry.deployments().await {
        Ok(d) => d,
        Err(e) => return problem(503, format!("node directory unavailable: {e}")),
    };
    match deployments.iter().position(|d| d.configuration == id) {
        None => problem(404, format!("no configuration {id:?} here")),
        Some(i) if deployments[i].delegated_by != peer.to_string() => {
            problem(403, format!("{id:?} was not delegated to us by {peer}"))
        }
        Some(i) => {
            deployments.remove(i);
            if let Err(e) = cis.registry.set_deployments(&deployments).await {
                return problem(503, format!("cannot keep the deployments: {e}"));
            }
            tracing::info!(configuration = %id, from = %peer, "configuration withdrawn");
            StatusCode::NO_CONTENT.into_response()
        }
    }
}
