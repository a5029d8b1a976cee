//! The RFC 8007 HTTP API, a thin shell around the [`crate::service`] loop: for the
//! local operator under [`TRIGGERS_PATH`] (admin listener) and for partners under
//! [`FEDERATION_TRIGGERS_PATH`] (the federation listener, mutual TLS, the caller being
//! the participant its certificate names, [`PeerParticipant`]). A CIS standing by
//! answers `503` naming the active one ([`ACTIVE_CIS_HEADER`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use streamcdn_cdni::wire::PayloadType;
use streamcdn_cdni::{Rendered, View};

use crate::service::Mode;
use crate::shared::{path_of_interface, problem, standing_by, ApiState};
use crate::state::{trigger_named, view_named, Answer, Caller, Interface, World};

/// Largest command body taken.
const MAX_COMMAND_BYTES: usize = 1024 * 1024;

/// The triggers' routes on one interface.
pub fn routes(cis: Arc<ApiState>, interface: Interface) -> axum::Router {
    let path = path_of_interface(interface);
    axum::Router::new()
        .route(path, get(collection_all).post(command))
        .route(&format!("{path}/{{item}}"), get(item).delete(delete))
        .route(&format!("{path}/{{item}}/servers"), get(servers))
        .layer(Extension(interface))
        .with_state(cis)
}

fn rendered(
    payload: PayloadType,
    found: Rendered,
    request: &HeaderMap,
    status: StatusCode,
) -> Response {
    let current = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| found.is_current(tags));
    let mut response = if current && status == StatusCode::OK {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (status, found.body).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(payload.content_type()),
    );
    if let Ok(etag) = HeaderValue::try_from(found.etag) {
        headers.insert(header::ETAG, etag);
    }
    // RFC 8007 §4: a status resource says how long a poller may reuse it. A trigger
    // moves in milliseconds, so a second; `If-None-Match` makes each poll after it cheap.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(STATUS_CACHE_CONTROL),
    );
    response
}

/// The `Cache-Control` of trigger status resources and collections.
pub const STATUS_CACHE_CONTROL: &str = "max-age=1";

fn answered(answer: Answer, kept: Result<(), String>) -> Response {
    if let Err(e) = kept {
        return problem(500, format!("cannot keep the triggers: {e}"));
    }
    match answer {
        Answer::Problem { status, text } => problem(status, text),
        Answer::Done => StatusCode::NO_CONTENT.into_response(),
        Answer::Status {
            status,
            rendered: found,
            location,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let mut response = rendered(PayloadType::Status, found, &HeaderMap::new(), status);
            if let Some(location) = location.and_then(|l| HeaderValue::try_from(l).ok()) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
    }
}

async fn command(
    State(cis): State<Arc<ApiState>>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if body.len() > MAX_COMMAND_BYTES {
        return problem(
            413,
            format!("a command is at most {MAX_COMMAND_BYTES} bytes"),
        );
    }
    if let Mode::Standby(holder) = cis.handle.mode() {
        return standing_by(Mode::Standby(holder));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // What the registry says now, for resolving a trigger command (a cancel needs none).
    let world = match (cis.registry.deployments().await, cis.registry.nodes().await) {
        (Ok(deployments), Ok(nodes)) => Ok(World { deployments, nodes }),
        (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
    };
    let asked = cis
        .handle
        .ask(move |state, now| {
            let world = world.as_ref().map_err(String::as_str);
            state.command(&caller, content_type.as_deref(), &body, world, now)
        })
        .await;
    match asked {
        Ok((answer, kept)) => answered(answer, kept),
        Err(mode) => standing_by(mode),
    }
}

async fn collection_all(
    State(cis): State<Arc<ApiState>>,
    caller: Caller,
    headers: HeaderMap,
) -> Response {
    let asked = cis
        .handle
        .ask(move |state, _| state.render_collection(&caller, View::All))
        .await;
    match asked {
        Ok((found, _)) => rendered(PayloadType::Collection, found, &headers, StatusCode::OK),
        Err(mode) => standing_by(mode),
    }
}

async fn item(
    State(cis): State<Arc<ApiState>>,
    caller: Caller,
    Path(item): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(view) = view_named(&item) {
        let asked = cis
            .handle
            .ask(move |state, _| state.render_collection(&caller, view))
            .await;
        return match asked {
            Ok((found, _)) => rendered(PayloadType::Collection, found, &headers, StatusCode::OK),
            Err(mode) => standing_by(mode),
        };
    }
    let Some(id) = trigger_named(&item) else {
        return problem(404, "no such trigger".into());
    };
    let asked = cis
        .handle
        .ask(move |state, _| state.render_status(&caller, id))
        .await;
    match asked {
        Ok((Ok(found), _)) => rendered(PayloadType::Status, found, &headers, StatusCode::OK),
        Ok((Err(answer), _)) => answered(answer, Ok(())),
        Err(mode) => standing_by(mode),
    }
}

async fn delete(
    State(cis): State<Arc<ApiState>>,
    caller: Caller,
    Path(item): Path<String>,
) -> Response {
    if view_named(&item).is_some() {
        // A view is not a resource that can be deleted (§4.4 deletes triggers).
        let mut refused = problem(405, "a trigger view cannot be deleted".into());
        refused
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return refused;
    }
    let Some(id) = trigger_named(&item) else {
        return problem(404, "no such trigger".into());
    };
    let asked = cis
        .handle
        .ask(move |state, now| state.delete(&caller, id, now))
        .await;
    match asked {
        Ok((answer, kept)) => answered(answer, kept),
        Err(mode) => standing_by(mode),
    }
}

/// Each server of a trigger and where it stands (not part of RFC 8007: for the CLI's
/// progress and for operators).
async fn servers(
    State(cis): State<Arc<ApiState>>,
    caller: Caller,
    Path(item): Path<String>,
) -> Response {
    let Some(id) = trigger_named(&item) else {
        return problem(404, "no such trigger".into());
    };
    let asked = cis
        .handle
        .ask(move |state, _| state.servers(&caller, id))
        .await;
    match asked {
        Ok((Ok(list), _)) => {
            let list: Vec<serde_json::Value> = list
                .into_iter()
                .map(|(server, state)| serde_json::json!({ "server": server, "state": state }))
                .collect();
            axum::Json(list).into_response()
        }
        Ok((Err(answer), _)) => answered(answer, Ok(())),
        Err(mode) => standing_by(mode),
    }
}
