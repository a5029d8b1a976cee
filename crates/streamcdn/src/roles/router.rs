//! The router role: authoritative DNS for the delivery zone and HTTP redirects, sending
//! each viewer to the edge chosen for its network; edges come from the node directory.

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::{anyhow, Context as _};
use futures::future::BoxFuture;
use streamcdn_config::RouterConfig;
use streamcdn_router::service::{RouterService, Settings};
use streamcdn_routing::decision::{DeciderConfig, Weights};
use streamcdn_routing::dns::Zone;
use streamcdn_routing::prefix::StaticMap;
use streamcdn_routing::rum::GateLimits;
use streamcdn_routing::state::RumSettings;
use streamcdn_urls::authority::Authority;

use streamcdn_web::RUM_JS;

use crate::context::{bind, Context, Role};
use crate::roles::edge::asset_response;

pub struct RouterRole;

impl Role for RouterRole {
    fn announced_as(&self) -> Option<streamcdn_registry::Role> {
        Some(streamcdn_registry::Role::Router)
    }

    fn start<'a>(self: Box<Self>, ctx: &'a mut Context) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(start(ctx))
    }
}

/// The zone as configured; by default one name server, `ns1.<zone>`, at the DNS
/// listener's address (loopback when it listens on every address).
fn zone(config: &RouterConfig) -> anyhow::Result<Zone> {
    let default_ns;
    let nameservers: Vec<(&str, Vec<IpAddr>)> = if config.nameservers.is_empty() {
        let ip = match config.dns_listen.ip() {
            ip if ip.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
            ip => ip,
        };
        default_ns = format!("ns1.{}", config.zone.trim_end_matches('.'));
        vec![(default_ns.as_str(), vec![ip])]
    } else {
        config
            .nameservers
            .iter()
            .map(|ns| (ns.name.as_str(), ns.addresses.clone()))
            .collect()
    };
    let mut zone = Zone::new(&config.zone, &config.delivery, &nameservers)
        .map_err(|e| anyhow!("router: {e}"))?;
    zone.ttl = u32::try_from(config.ttl.as_secs()).unwrap_or(u32::MAX);
    // Restarts are the only way the zone's fixed data changes.
    zone.serial = u32::try_from(streamcdn_support::clock::now_secs().max(1)).unwrap_or(1);
    Ok(zone)
}

/// The DNS address's UDP socket, once per core (clones of one socket), each served by a
/// thread of its own. One shared socket rather than one per core with SO_REUSEPORT: the
/// kernel spreads reuseport sockets by source address and port, so one busy resolver
/// (or a benchmark with few source ports) would keep a single core busy while the others
/// idle; threads taking from one queue share any load.
fn udp_sockets(addr: std::net::SocketAddr) -> std::io::Result<Vec<std::net::UdpSocket>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.bind(&addr.into())?;
    let socket: std::net::UdpSocket = socket.into();
    (0..cores).map(|_| socket.try_clone()).collect()
}

/// Where browsers reach the router's HTTP listener (see `router.advertise`).
fn routing_url(config: &streamcdn_config::Config) -> Option<String> {
    let router = &config.router;
    if let Some(url) = &router.advertise {
        return Some(url.trim_end_matches('/').to_owned());
    }
    if !router.http_listen.ip().is_unspecified() {
        return Some(format!("http://{}", router.http_listen));
    }
    let playback = config.http.advertised_url()?;
    let host = Authority::parse(&playback)
        .filter(|a| a.scheme == "http")?
        .host_in_url();
    Some(format!("http://{host}:{}", router.http_listen.port()))
}

async fn start(ctx: &mut Context) -> anyhow::Result<()> {
    let config = &ctx.config.router;
    let static_map = StaticMap::from_entries(config.static_map.iter())
        .map_err(|e| anyhow!("router.static_map: {e}"))?;
    let service = RouterService::new(Settings {
        zone: zone(config)?,
        static_map,
        decider: DeciderConfig {
            probe_after: config.reprobe_after,
            weights: Weights {
                network: config.weights.network,
                rum: config.weights.rum,
            },
            ..DeciderConfig::default()
        },
        rum: RumSettings {
            min_clients: config.rum.min_clients,
            window: config.rum.window,
            limits: GateLimits {
                per_address_per_minute: config.rum.per_address_per_minute,
                per_prefix_per_minute: config.rum.per_prefix_per_minute,
                ..GateLimits::default()
            },
        },
        edge_capacity: (config.edge_capacity > 0).then_some(config.edge_capacity),
        health_interval: config.health_interval,
        deployment_key: crate::context::deployment_key(&ctx.registry).await?,
        registry: ctx.registry.clone(),
    })
    .map_err(|e| anyhow!("router: {e}"))?;
    let udp = udp_sockets(config.dns_listen)
        .with_context(|| format!("cannot listen on {} (UDP) for DNS", config.dns_listen))?;
    let tcp = bind(config.dns_listen, "DNS (TCP)").await?;
    let http = bind(config.http_listen, "the router's HTTP redirects").await?;
    tracing::info!(dns = %config.dns_listen, http = %config.http_listen, zone = config.zone, delivery = config.delivery, "router listening");
    // Listed only where it is a real address (0.0.0.0 says nothing of where to reach it).
    if !config.dns_listen.ip().is_unspecified() {
        ctx.node.addresses.dns = Some(config.dns_listen.to_string());
    }
    if let Some(url) = routing_url(&ctx.config) {
        ctx.node.addresses.routing = Some(url);
    }
    ctx.spawn(Arc::clone(&service).watch_edges(ctx.shutdown()));
    ctx.on_drain(
        "router",
        Arc::clone(&service).handed_over(ctx.node.id.clone()),
    );
    for socket in udp {
        ctx.spawn(Arc::clone(&service).serve_udp(socket, ctx.shutdown()));
    }
    ctx.spawn(Arc::clone(&service).serve_tcp(tcp, ctx.shutdown()));
    // rum.js from the router too, for operators' own pages.
    let rum_js = axum::Router::new().route(
        RUM_JS.path,
        axum::routing::get(|headers: axum::http::HeaderMap| async move {
            asset_response(&RUM_JS, "rum.js", &headers)
        }),
    );
    ctx.serve_http(http, service.redirect_router().merge(rum_js));
    ctx.add_admin_routes(service.admin_router());
    Ok(())
}
