//! The edge role: the HTTP cache, below `edge.parents` or, with none, the top tier that
//! finds streams through the registry and archived recordings in on-demand storage.

use std::sync::Arc;

use anyhow::Context as _;
use futures::future::BoxFuture;
use streamcdn_config::EdgeTier;
use streamcdn_edge::{Edge, EdgeSettings, UpstreamKind};

use crate::context::{bind, Context, Role};

pub struct EdgeRole {
    tier: EdgeTier,
}

impl EdgeRole {
    pub fn new(config: &streamcdn_config::Config) -> Self {
        Self {
            tier: config.edge.tier,
        }
    }
}

impl Role for EdgeRole {
    fn announced_as(&self) -> Option<streamcdn_registry::Role> {
        Some(match self.tier {
            EdgeTier::Edge => streamcdn_registry::Role::Edge,
            EdgeTier::Mid => streamcdn_registry::Role::MidTier,
        })
    }

    fn start<'a>(self: Box<Self>, ctx: &'a mut Context) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(start(ctx))
    }
}

async fn start(ctx: &mut Context) -> anyhow::Result<()> {
    let config = &ctx.config;
    let parents: Vec<String> = config
        .edge
        .parents
        .iter()
        .map(|p| p.trim_end_matches('/').to_owned())
        .collect();
    let (upstream, archive) = if parents.is_empty() {
        // The top tier also serves archived recordings from on-demand storage.
        (
            UpstreamKind::Registry(ctx.registry.clone()),
            Some(ctx.archive()?),
        )
    } else {
        (UpstreamKind::Parents(parents.clone()), None)
    };
    let disk = (config.edge.cache_disk.0 > 0).then(|| {
        let dir = config
            .edge
            .cache_dir
            .clone()
            .unwrap_or_else(|| config.node.data_dir.join("cache"));
        (dir, config.edge.cache_disk.0)
    });
    let edge = Edge::new(EdgeSettings {
        upstream,
        archive,
        cache_memory_bytes: config.edge.cache_memory.0,
        max_object_bytes: config.edge.max_object_size.0,
        upstream_timeout: config.edge.upstream_timeout,
        disk,
        stale_if_error: config.edge.stale_if_error,
    })
    .context("cannot open the edge's disk cache")?;
    let listener = bind(config.http.listen, "playback (edge)").await?;
    if parents.is_empty() {
        tracing::info!(playback = %config.http.listen, "edge listening (top tier: streams found through the registry)");
    } else {
        tracing::info!(playback = %config.http.listen, ?parents, "edge listening");
    }
    match config.http.advertised_url() {
        Some(url) => {
            ctx.node.addresses.insert("playback".into(), url);
        }
        None => tracing::warn!(
            listen = %config.http.listen,
            "http.advertise is not set: the node directory will not list where viewers reach this edge"
        ),
    }
    ctx.serve_playback(listener, edge.router());
    let sizes = edge.clone();
    ctx.on_scrape(Arc::new(move || {
        let edge = sizes.clone();
        Box::pin(async move { edge.report_cache_sizes().await })
    }));
    Ok(())
}
