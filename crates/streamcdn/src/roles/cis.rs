//! The command invocation system role (in `up` and `router`): wires
//! `streamcdn_federation` to this process — its identity and partners from the
//! configuration, the store (`<data_dir>/cis/triggers.json`, or the registry when it is
//! shared), the deployment key that signs control requests, the lease holder (this node,
//! reached at its admin address), the admin routes and the federation listener.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::Request;
use futures::future::BoxFuture;
use streamcdn_federation::identity::{self, participant_of, Identity};
use streamcdn_federation::service::{Service, Settings, Store};
use streamcdn_federation::shared::{ApiState, PeerParticipant};
use streamcdn_federation::state::{Interface, OwnConfiguration, Participant};
use streamcdn_federation::{api, delegation};
use streamcdn_registry::LeaseHolder;

use crate::context::{bind, local_url, Context, Role};
use crate::http::PeerCertificate;

pub struct CisRole;

impl Role for CisRole {
    fn announced_as(&self) -> Option<streamcdn_registry::Role> {
        None
    }

    fn start<'a>(self: Box<Self>, ctx: &'a mut Context) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(start(ctx))
    }
}

/// The participant's CDN PID named by a federation client's certificate, for the API.
async fn peer_participant(mut request: Request) -> Request {
    let peer = request
        .extensions()
        .get::<PeerCertificate>()
        .and_then(|c| participant_of(&c.0));
    if let Some(peer) = peer {
        request.extensions_mut().insert(PeerParticipant(peer));
    }
    request
}

async fn start(ctx: &mut Context) -> anyhow::Result<()> {
    let config = ctx.config.clone();
    let us = config.federation.participant;
    let federated =
        config.federation.listen.addr().is_some() || !config.federation.partners.is_empty();
    let identity = if federated {
        let config = config.clone();
        Some(Arc::new(
            tokio::task::spawn_blocking(move || Identity::load(&config))
                .await?
                .context("cannot set up the federation's TLS identity")?,
        ))
    } else {
        None
    };
    let partners = Arc::new(match &identity {
        Some(identity) => identity::partners(&config, identity)?,
        None => BTreeMap::new(),
    });
    let mut own = Vec::new();
    for (i, c) in config.configurations.iter().enumerate() {
        let origin = c
            .origin
            .clone()
            .or_else(|| config.http.advertised_url())
            .with_context(|| {
                format!("configurations[{i}].origin is needed: http.advertise is not set either")
            })?;
        own.push(OwnConfiguration {
            id: c.id.clone(),
            hostnames: c.hostnames.iter().map(|h| h.to_ascii_lowercase()).collect(),
            origin,
            max_ttl_secs: c.max_ttl.map(|t| t.as_secs().max(1)),
        });
    }
    let participant = Participant {
        us,
        own,
        partners: partners
            .iter()
            .map(|(pid, p)| (*pid, p.delegate.clone()))
            .collect(),
    };
    let store = if ctx.registry.is_shared() {
        Store::Registry(ctx.registry.clone())
    } else {
        Store::File(config.node.data_dir.join("cis").join("triggers.json"))
    };
    let key = crate::context::deployment_key(&ctx.registry).await?;
    let (mut service, handle) = Service::new(Settings {
        participant: participant.clone(),
        partners: partners.clone(),
        store,
        registry: ctx.registry.clone(),
        holder: LeaseHolder {
            id: ctx.node.id.clone(),
            address: local_url(config.admin.listen),
        },
        key,
    });
    // Active (or standing by) before the API is served.
    service.keep_lease().await;
    ctx.spawn(service.run(ctx.shutdown()));
    let state = ApiState::new(
        participant,
        partners.clone(),
        ctx.registry.clone(),
        config.federation.carry_on.clone(),
        handle,
    );
    ctx.add_admin_routes(api::routes(state.clone(), Interface::Admin));
    ctx.add_admin_routes(delegation::view_routes(state.clone()));
    if let (Some(addr), Some(identity)) = (config.federation.listen.addr(), &identity) {
        let acceptor = identity.acceptor()?;
        let listener = bind(addr, "federation").await?;
        tracing::info!(federation = %addr, participant = %us, partners = partners.len(), "federation listener (mutual TLS)");
        let routes = api::routes(state.clone(), Interface::Federation)
            .merge(delegation::routes(state.clone()))
            .layer(axum::middleware::map_request(peer_participant));
        ctx.serve_tls(listener, routes, acceptor);
    }
    if !partners.is_empty() {
        ctx.spawn(state.push_configurations(ctx.shutdown()));
    }
    Ok(())
}
