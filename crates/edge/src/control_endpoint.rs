//! The edge control endpoint, `POST /_streamcdn/control` on the playback listener:
//! the command invocation system asks a cache to purge, invalidate or preposition
//! ([`crate::control`]). Authenticated like probe requests: the body signed with the
//! deployment key (`streamcdn_access::deployment`) in `CONTROL_HEADER`, a timestamp
//! within `deployment::MAX_SKEW_MS` and a nonce used once. The operations are
//! idempotent, so a command the CIS sends again (after a lost answer) does no harm.
//! Each cache announces the endpoint in the node directory as its `control` address,
//! with its tier (`streamcdn_cdni::Tier::announce`); a request naming a partner's
//! configuration goes to that configuration's cache ([`crate::carried`]).

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use streamcdn_access::deployment::{self, DeploymentKey, ReplayGuard, SignatureError};

use crate::carried::Carried;
use crate::Edge;
use streamcdn_cdni::control::{ControlRequest, CONTROL_HEADER};
use streamcdn_urls::internal::CONTROL_PATH;

struct Controller {
    key: DeploymentKey,
    edge: Arc<Edge>,
    carried: Arc<Carried>,
    guard: Mutex<ReplayGuard>,
}

pub fn routes(key: DeploymentKey, edge: Arc<Edge>, carried: Arc<Carried>) -> axum::Router {
    let controller = Arc::new(Controller {
        key,
        edge,
        carried,
        guard: Mutex::new(ReplayGuard::default()),
    });
    axum::Router::new()
        .route(CONTROL_PATH, axum::routing::post(control_request))
        .with_state(controller)
}

fn refused(outcome: &'static str, status: StatusCode, why: String) -> Response {
    metrics::counter!("streamcdn_edge_control_requests_total", "type" => "unknown", "outcome" => outcome)
        .increment(1);
    (status, format!("{why}\n")).into_response()
}

async fn control_request(
    State(controller): State<Arc<Controller>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = streamcdn_support::clock::now_ms();
    let tag = headers.get(CONTROL_HEADER).and_then(|v| v.to_str().ok());
    // Nothing unauthenticated is parsed.
    if let Err(e) = deployment::verify_signature(&controller.key, &body, tag) {
        let why = match e {
            SignatureError::Missing => format!("no {CONTROL_HEADER} header"),
            SignatureError::Mismatch => format!("{CONTROL_HEADER} does not match the body"),
        };
        return refused("unauthenticated", StatusCode::UNAUTHORIZED, why);
    }
    let request: ControlRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return refused("malformed", StatusCode::BAD_REQUEST, e.to_string()),
    };
    if !deployment::within_skew(request.issued_at_ms, now) {
        let why = format!("issued at {} ms, now {now} ms", request.issued_at_ms);
        return refused("unauthenticated", StatusCode::UNAUTHORIZED, why);
    }
    let admitted = controller
        .guard
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .admit(request.nonce, request.issued_at_ms, now);
    if let Err(e) = admitted {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        return refused("unauthenticated", status, e.to_string());
    }
    let edge = match &request.configuration {
        None => controller.edge.clone(),
        Some(id) => match controller.carried.by_id(id).await {
            Some(edge) => edge,
            None => {
                let why = format!("this server does not carry configuration {id:?}");
                return refused("not_carried", StatusCode::NOT_FOUND, why);
            }
        },
    };
    let reply = edge.control(&request).await;
    let operation = request.operation.label();
    let outcome = if reply.errors.is_empty() {
        "ok"
    } else {
        "errors"
    };
    metrics::counter!("streamcdn_edge_control_requests_total", "type" => operation, "outcome" => outcome)
        .increment(1);
    let objects = reply.purged + reply.invalidated + reply.prepositioned;
    metrics::counter!("streamcdn_edge_control_objects_total", "type" => operation)
        .increment(objects as u64);
    tracing::info!(
        trigger = %request.trigger_id,
        configuration = request.configuration.as_deref().unwrap_or("default"),
        operation,
        purged = reply.purged,
        invalidated = reply.invalidated,
        prepositioned = reply.prepositioned,
        errors = reply.errors.len(),
        "control request done"
    );
    axum::Json(reply).into_response()
}
