//! The archiver role (one per ingest cluster): finished recordings to on-demand storage
//! after their provider's `archive_after`.

use futures::future::BoxFuture;
use streamcdn_archive::UploadOptions;
use streamcdn_archiver::{run_archiver, status_router, Archiver, ArchiverSettings, SharedStatus};

use crate::context::{Context, Role};

pub struct ArchiverRole;

impl Role for ArchiverRole {
    fn announced_as(&self) -> Option<streamcdn_registry::Role> {
        Some(streamcdn_registry::Role::Archiver)
    }

    fn start<'a>(self: Box<Self>, ctx: &'a mut Context) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let config = &ctx.config.archive;
            let settings = ArchiverSettings {
                local_retention: config.local_retention,
                upload: UploadOptions {
                    concurrency: config.concurrency,
                    max_bytes_per_sec: (config.max_rate.0 > 0).then_some(config.max_rate.0),
                    attempts: 5,
                },
            };
            let archiver = Archiver {
                settings,
                store: ctx.recordings()?,
                archive: ctx.archive()?,
                providers: ctx.providers(),
                registry: ctx.registry.clone(),
                node: ctx.node.clone(),
            };
            let status = SharedStatus::default();
            ctx.add_admin_routes(status_router(status.clone()));
            let shutdown = ctx.shutdown();
            ctx.spawn(run_archiver(archiver, status, shutdown));
            Ok(())
        })
    }
}
