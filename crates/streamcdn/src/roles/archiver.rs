//! The archiver role (one per ingest cluster): finished recordings to on-demand storage
//! after their provider's `archive_after`.

use futures::future::BoxFuture;
use streamcdn_archive::UploadOptions;
use streamcdn_archiver::{run_archiver, status_router, Archiver, ArchiverSettings, SharedStatus};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use streamcdn_access::admin::Caller;
use streamcdn_archive::Archive;
use streamcdn_urls::stored;

use crate::context::{Context, Role};

/// `GET /api/v1/recordings/archived`: every archived recording, from the streams'
/// listings in on-demand storage (a provider's token sees its own).
fn archived_router(archive: Archive) -> axum::Router {
    axum::Router::new()
        .route(
            "/api/v1/recordings/archived",
            axum::routing::get(archived_recordings),
        )
        .with_state(archive)
}

async fn archived_recordings(
    State(archive): State<Archive>,
    caller: Option<Extension<Caller>>,
) -> Response {
    let scope = caller.and_then(|c| c.provider.clone());
    let prefix = scope.as_ref().map_or(String::new(), |p| format!("{p}/"));
    let keys = match archive.list(&prefix).await {
        Ok(keys) => keys,
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("on-demand storage unavailable: {e}\n"),
            )
                .into_response()
        }
    };
    let mut all = Vec::new();
    for (key, _) in keys {
        // `<provider>/<stream>/recordings.json`
        let parts: Vec<&str> = key.split('/').collect();
        let [provider, stream, name] = parts[..] else {
            continue;
        };
        if name != stored::LISTING {
            continue;
        }
        let Ok(Some(bytes)) = archive.get(&key).await else {
            continue;
        };
        let listing: Vec<serde_json::Value> = serde_json::from_slice(&bytes).unwrap_or_default();
        for mut entry in listing {
            entry["provider"] = provider.into();
            entry["stream"] = stream.into();
            all.push(entry);
        }
    }
    all.sort_by(|a, b| b["recording_id"].as_str().cmp(&a["recording_id"].as_str()));
    axum::Json(all).into_response()
}

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
            ctx.add_admin_routes(archived_router(archiver.archive.clone()));
            let (drain, shutdown) = (ctx.draining(), ctx.shutdown());
            // Drained once no upload is in progress (none starts after the drain).
            let uploading = status.clone();
            ctx.on_drain("archiver", async move {
                while uploading
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .in_progress
                    .is_some()
                {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            });
            ctx.spawn(run_archiver(archiver, status, drain, shutdown));
            Ok(())
        })
    }
}
