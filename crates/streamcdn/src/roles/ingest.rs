//! The ingest role: RTMP, SRT and WHIP in (and MPEG-TS uploaded to the origin), the HTTP origin out, recordings on local storage, streams
//! announced in the registry.

use std::sync::Arc;

use anyhow::{bail, Context as _};
use futures::future::BoxFuture;
use streamcdn_ingest::cluster::{self, Cluster};
use streamcdn_ingest::hub::{HubSettings, StreamHub};
use streamcdn_ingest::recorder::Recorder;
use streamcdn_ingest::rtmp_server::{self, RtmpSettings};
use streamcdn_ingest::srt_server::{self, SrtServer, SrtSettings};
use streamcdn_ingest::ts_upload;
use streamcdn_ingest::whip::{self, WebRtcServer, WebRtcSettings};

use crate::context::{bind, Context, Role};
use crate::tls::Certificates;

pub struct Ingest;

impl Role for Ingest {
    fn announced_as(&self) -> Option<streamcdn_registry::Role> {
        Some(streamcdn_registry::Role::Ingest)
    }

    fn start<'a>(self: Box<Self>, ctx: &'a mut Context) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(start(ctx))
    }
}

async fn start(ctx: &mut Context) -> anyhow::Result<()> {
    // Checked first: a certificate that cannot be served fails the start before any
    // listener of this role is bound.
    let rtmps = match ctx.config.rtmp.tls_listen.addr() {
        Some(addr) => {
            let config = &ctx.config;
            // RTMP has no ALPN name.
            let (certificates, acceptor) =
                Certificates::load(&config.http, &config.node.data_dir, &[], "RTMPS").await?;
            Some((addr, certificates, acceptor))
        }
        None => None,
    };
    let Some(origin) = ctx.config.origin.advertised_url() else {
        bail!(
            "origin.listen is {}: set origin.advertise to the URL edges reach this server at",
            ctx.config.origin.listen
        );
    };
    ctx.node.origin = origin.clone();
    ctx.node.addresses.origin = Some(origin);
    let cluster = Cluster {
        registry: ctx.registry.clone(),
        node: ctx.node.clone(),
        lease: ctx.config.registry.lease,
    };
    tracing::info!(
        node = cluster.node.id,
        cluster = cluster.node.cluster,
        origin = cluster.node.origin,
        "ingest server identity"
    );
    let store = ctx.recordings()?;
    let config = &ctx.config;
    let settings = HubSettings {
        default_format: config.hls.format,
        target_duration_secs: config.hls.segment_duration.as_secs_f64(),
        live_window: config.hls.live_window,
        part_target_secs: config.hls.part_duration.as_secs_f64(),
    };
    // The edges check signed playback URLs with the keys published here.
    if let Err(e) = ctx.providers().publish_playback_keys().await {
        tracing::warn!(error = %e, "cannot publish the providers' playback keys; edges keep the last ones");
    }
    let (hub, events) = StreamHub::open(settings, ctx.providers(), store.clone(), cluster.clone())
        .await
        .with_context(|| format!("cannot recover recordings in {}", store.root().display()))?;
    let hub = Arc::new(hub);
    let counted = hub.clone();
    ctx.publishers = Some(Arc::new(move || counted.live_streams().len() as u64));
    let rtmp = bind(config.rtmp.listen, "RTMP").await?;
    let origin = bind(config.origin.listen, "the HTTP origin").await?;
    let rtmp_settings = RtmpSettings {
        max_connections: config.rtmp.max_connections,
        max_message_size: config.rtmp.max_message_size.0 as u32,
        idle_timeout: config.rtmp.idle_timeout,
        read_interval: config.rtmp.read_interval,
    };
    let srt_settings = SrtSettings {
        latency: config.srt.latency,
        max_connections: config.srt.max_connections,
    };
    let srt = match config.srt.listen.addr() {
        Some(addr) => Some(SrtServer::bind(addr).await?),
        None => None,
    };
    // The router's ingest name answers with this address: the listener's, or on an
    // unspecified one the origin's advertised host with the listener's port.
    let srt_address = srt
        .as_ref()
        .and_then(|srt| advertised_srt(srt.local_addr(), &cluster.node.origin));
    if srt.is_some() && srt_address.is_none() {
        tracing::warn!(srt = %config.srt.listen, origin = cluster.node.origin, "the SRT listener's address cannot be announced (an unspecified listen address and an origin named by host name): the router's ingest name will not answer with this server");
    }
    ctx.node.addresses.srt = srt_address.map(|a| a.to_string());
    let candidates = match config.webrtc.listen.addr() {
        Some(_) => webrtc_candidates(config).await?,
        None => Vec::new(),
    };
    let webrtc = match config.webrtc.listen.addr() {
        Some(addr) if !candidates.is_empty() => {
            let settings = WebRtcSettings {
                candidates,
                inactivity_timeout: config.webrtc.inactivity_timeout,
                max_sessions: config.webrtc.max_sessions,
            };
            let server = WebRtcServer::bind(addr, settings).await?;
            tracing::info!(webrtc = %addr, candidates = ?server.handle().candidates(), "ingest listening for WebRTC (WHIP)");
            Some(server)
        }
        _ => None,
    };
    tracing::info!(rtmp = %config.rtmp.listen, srt = %config.srt.listen, origin = %config.origin.listen, "ingest listening");
    // Once a listener's publishers have ended, their last hook notifications get the
    // rest of the grace period.
    let grace = config.node.shutdown_grace;
    let drained = |server: BoxFuture<'static, ()>| {
        let hooks = hub.hooks().clone();
        async move {
            server.await;
            hooks.drain(grace).await;
        }
    };
    // One recorder thread per core, at least two: they mostly wait on storage.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let recorder = Recorder::start(cores.max(2)).context("starting the recorder threads")?;
    let rtmp_stop = rtmp_server::Stop {
        drain: ctx.draining(),
        shutdown: ctx.shutdown(),
    };
    let rtmps_stop = rtmp_stop.clone();
    if let Some((addr, certificates, acceptor)) = rtmps {
        let listener = bind(addr, "RTMPS").await?;
        tracing::info!(rtmps = %addr, certificate = %certificates.fingerprint(), "ingest listening for RTMPS");
        ctx.spawn(drained(Box::pin(rtmp_server::serve_wrapped(
            listener,
            hub.clone(),
            recorder.clone(),
            rtmp_settings.clone(),
            rtmps_stop,
            move |socket| {
                let acceptor = acceptor.clone();
                async move { acceptor.accept(socket).await }
            },
        ))));
        ctx.spawn(certificates.watch(ctx.shutdown()));
    }
    if let Some(srt) = srt {
        ctx.spawn(drained(Box::pin(srt_server::serve(
            srt,
            hub.clone(),
            recorder.clone(),
            srt_settings,
            ctx.draining(),
            ctx.shutdown(),
        ))));
    }
    let mut uploads = ts_upload::router(
        hub.clone(),
        recorder.clone(),
        rtmp_settings.idle_timeout,
        ctx.draining(),
        ctx.shutdown(),
    );
    if let Some(webrtc) = webrtc {
        uploads = uploads.merge(whip::router(
            hub.clone(),
            recorder.clone(),
            webrtc.handle(),
            ctx.draining(),
        ));
        ctx.spawn(drained(Box::pin(webrtc.serve(ctx.shutdown()))));
    }
    ctx.spawn(drained(Box::pin(rtmp_server::serve(
        rtmp,
        hub.clone(),
        recorder,
        rtmp_settings,
        rtmp_stop,
    ))));
    // Drained once every publisher has gone (reconnected elsewhere) and its recording
    // is durable and announced interrupted.
    let held = hub.clone();
    ctx.on_drain("ingest", async move {
        while held.held_streams() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
    ctx.serve_http(
        origin,
        streamcdn_ingest::origin::router(hub.clone()).merge(uploads),
    );
    let shutdown = ctx.shutdown();
    ctx.spawn(cluster::run_announcer(
        cluster,
        store,
        ctx.providers(),
        events,
        shutdown,
    ));
    ctx.add_admin_routes(streamcdn_ingest::origin::admin_router(hub));
    Ok(())
}

/// Where publishers reach the SRT listener bound at `bound`: itself when it has an
/// address, else the origin's advertised IP address with its port.
fn advertised_srt(bound: std::net::SocketAddr, origin: &str) -> Option<std::net::SocketAddr> {
    if !bound.ip().is_unspecified() {
        return Some(bound);
    }
    let host = streamcdn_urls::authority::Authority::parse(origin)?.host;
    let ip: std::net::IpAddr = host.parse().ok()?;
    (!ip.is_unspecified()).then_some(std::net::SocketAddr::new(ip, bound.port()))
}

#[cfg(test)]
mod tests {
    use super::advertised_srt;

    #[test]
    fn the_srt_address_is_the_listeners_or_the_origins_host() {
        let at = |s: &str| s.parse().unwrap();
        assert_eq!(
            advertised_srt(at("127.0.0.5:8890"), "http://10.0.0.1:8081"),
            Some(at("127.0.0.5:8890"))
        );
        assert_eq!(
            advertised_srt(at("0.0.0.0:8890"), "http://10.0.0.1:8081"),
            Some(at("10.0.0.1:8890"))
        );
        assert_eq!(
            advertised_srt(at("[::]:8890"), "http://[2001:db8::1]:8081"),
            Some(at("[2001:db8::1]:8890"))
        );
        assert_eq!(
            advertised_srt(at("0.0.0.0:8890"), "http://ingest-1.example:8081"),
            None
        );
    }
}

/// The ICE candidates WHIP answers name: `webrtc.candidates`, else the host publishers
/// reach the origin at (a name resolved now). Configured ones must resolve; without
/// them, a default that does not (or none at all) turns WHIP off with a warning.
async fn webrtc_candidates(
    config: &streamcdn_config::Config,
) -> anyhow::Result<Vec<std::net::SocketAddr>> {
    let configured = !config.webrtc.candidates.is_empty();
    let mut candidates = Vec::new();
    for (host, port) in config.webrtc.candidate_hosts(&config.origin) {
        match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(found) => candidates.extend(found),
            Err(e) if configured => {
                bail!("cannot resolve the WebRTC candidate host {host}: {e}")
            }
            Err(e) => {
                tracing::warn!(host, error = %e, "cannot resolve the origin's host for WebRTC candidates")
            }
        }
    }
    if candidates.is_empty() && !configured {
        tracing::warn!(
            "WHIP is off: no ICE candidate known; set webrtc.candidates to the addresses publishers reach this server at"
        );
    } else if candidates.is_empty() {
        bail!(
            "webrtc.listen is {} but no ICE candidate is known: set webrtc.candidates to the addresses publishers reach this server at (or webrtc.listen = \"off\")",
            config.webrtc.listen
        );
    }
    Ok(candidates)
}
