//! What the API's handlers share ([`ApiState`]), who is calling ([`Caller`], from the
//! interface and the client's certificate), and the plain answers.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use streamcdn_cdni::CdnPid;
use streamcdn_registry::Registry;

use crate::identity::Partner;
use crate::service::{Handle, Mode, PARTNER_TRIGGERS_PATH};
use crate::state::{Caller, Interface, Participant};

pub const TRIGGERS_PATH: &str = "/api/v1/triggers";
pub const FEDERATION_TRIGGERS_PATH: &str = PARTNER_TRIGGERS_PATH;
/// Where a standing-by CIS says the active one is (its admin address).
pub const ACTIVE_CIS_HEADER: &str = "x-streamcdn-active-cis";

/// The participant a federation client's certificate names, put in the request's
/// extensions by the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerParticipant(pub CdnPid);

/// What the API handlers share: the participant, its partners, the registry and the
/// loop's handle.
pub struct ApiState {
    pub participant: Participant,
    pub partners: Arc<BTreeMap<CdnPid, Partner>>,
    pub registry: Registry,
    /// Which of our servers carry partners' configurations (`federation.carry_on`).
    pub carry_on: Vec<String>,
    pub handle: Handle,
    /// Serializes changes to the deployment records.
    pub(crate) deploying: tokio::sync::Mutex<()>,
}

impl ApiState {
    pub fn new(
        participant: Participant,
        partners: Arc<BTreeMap<CdnPid, Partner>>,
        registry: Registry,
        carry_on: Vec<String>,
        handle: Handle,
    ) -> Arc<Self> {
        Arc::new(ApiState {
            participant,
            partners,
            registry,
            carry_on,
            handle,
            deploying: tokio::sync::Mutex::new(()),
        })
    }
}

pub fn path_of_interface(interface: Interface) -> &'static str {
    match interface {
        Interface::Admin => TRIGGERS_PATH,
        Interface::Federation => FEDERATION_TRIGGERS_PATH,
    }
}

/// Who is calling: on the admin listener this participant; on the federation listener
/// the partner its certificate names (anyone else gets `403` and nothing more). Every
/// route of the CIS says which listener it is on with an `Interface` extension.
impl axum::extract::FromRequestParts<Arc<ApiState>> for Caller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        cis: &Arc<ApiState>,
    ) -> Result<Self, Response> {
        let Some(interface) = parts.extensions.get::<Interface>().copied() else {
            return Err(problem(500, "route without an interface".into()));
        };
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("localhost");
        let path = path_of_interface(interface);
        match interface {
            Interface::Admin => Ok(Caller {
                who: cis.participant.us,
                interface,
                base: format!("http://{host}{path}"),
                path,
            }),
            Interface::Federation => {
                let who = parts.extensions.get::<PeerParticipant>().map(|peer| peer.0);
                match who {
                    Some(who) if cis.partners.contains_key(&who) => Ok(Caller {
                        who,
                        interface,
                        base: format!("https://{host}{path}"),
                        path,
                    }),
                    _ => {
                        metrics::counter!("streamcdn_cis_commands_total", "type" => "unknown_peer")
                            .increment(1);
                        Err(problem(403, "not a partner of this participant".into()))
                    }
                }
            }
        }
    }
}

pub fn problem(status: u16, text: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, format!("{text}\n")).into_response()
}

/// `503`, naming the active CIS if known.
pub fn standing_by(mode: Mode) -> Response {
    let holder = match mode {
        Mode::Standby(holder) => holder,
        Mode::Active => None,
    };
    let text = match &holder {
        Some(h) => format!(
            "this CIS stands by: the participant's active CIS is {} ({})",
            h.id, h.address
        ),
        None => "this CIS stands by: no active CIS is known yet".to_owned(),
    };
    let mut response = problem(503, text);
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    if let Some(address) = holder.and_then(|h| HeaderValue::try_from(h.address).ok()) {
        headers.insert(ACTIVE_CIS_HEADER, address);
    }
    response
}
