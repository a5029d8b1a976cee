//! MPEG-TS published over HTTP: `PUT` (or `POST`) `/<provider>/<stream>/ingest.ts` with
//! the stream key as a bearer token and the transport stream as the body, usually chunked
//! and as long as the stream (`ffmpeg ... -f mpegts -method PUT -headers
//! 'Authorization: Bearer <key>' http://<ingest>/<provider>/<stream>/ingest.ts`). For
//! encoders that speak neither RTMP nor SRT, and for tests of the TS path without SRT.
//!
//! The answer comes when the stream ends: `204` once the recording is complete; a refused
//! publisher is answered at once (`401` without a key, `403` with a wrong one or a hook's
//! refusal, `404` for an unknown provider, `409` if the stream is live elsewhere).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::Router;
use http_body_util::BodyExt;
use tokio::sync::watch;

use crate::hub::StreamHub;
use crate::publish;
use crate::recorder::Recorder;
use crate::ts_ingest::{TsPublishRequest, TsPublisher};

/// The upload's path under a stream, beside its playlists.
pub const INGEST_FILE: &str = "ingest.ts";

#[derive(Clone)]
struct Upload {
    hub: Arc<StreamHub>,
    recorder: Recorder,
    /// A publisher that sends nothing for this long is ended.
    idle_timeout: Duration,
    drain: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
}

/// The routes of the upload, to merge into the ingest's origin router. Uploads end when
/// `shutdown` turns true, their recordings complete, or interrupted if `drain` was true
/// first (see `publish::finish`).
pub fn router(
    hub: Arc<StreamHub>,
    recorder: Recorder,
    idle_timeout: Duration,
    drain: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
) -> Router {
    let upload = Upload {
        hub,
        recorder,
        idle_timeout,
        drain,
        shutdown,
    };
    Router::new()
        .route(
            &format!("/{{provider}}/{{stream}}/{INGEST_FILE}"),
            put(publish).post(publish),
        )
        .with_state(upload)
}

async fn publish(
    State(upload): State<Upload>,
    Path((provider, stream)): Path<(String, String)>,
    request: Request,
) -> Response {
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0);
    let key = publish::bearer_key(request.headers());
    let begun = TsPublisher::begin(
        &upload.hub,
        &upload.recorder,
        TsPublishRequest {
            provider: &provider,
            stream: &stream,
            key: key.as_deref(),
            client,
            protocol: "http",
        },
    )
    .await;
    let publisher = match begun {
        Ok(publisher) => publisher,
        Err(e) => return publish::refusal(&e),
    };
    // Its own task: if the connection drops, this handler is dropped with it, and the
    // stream must still end cleanly (hooks, the last segment, the recording).
    let body = request.into_body();
    let task = tokio::spawn(receive(
        publisher,
        body,
        upload.idle_timeout,
        upload.drain,
        upload.shutdown,
    ));
    match task.await {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(why)) => (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Feeds the body to the publisher until it ends, stalls or the server shuts down.
async fn receive(
    mut publisher: TsPublisher,
    mut body: Body,
    idle_timeout: Duration,
    drain: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let result = loop {
        let frame = tokio::select! {
            frame = tokio::time::timeout(idle_timeout, body.frame()) => frame,
            _ = shutdown.changed() => break Ok(()),
        };
        match frame {
            Err(_) => break Err("idle timeout".to_owned()),
            Ok(None) => break Ok(()),
            Ok(Some(Err(e))) => break Err(format!("upload interrupted: {e}")),
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    publisher.push(data).await;
                }
            }
        }
    };
    if let Err(why) = &result {
        tracing::info!(reason = why, "MPEG-TS upload ended");
    }
    let draining = *drain.borrow();
    publisher.finish(draining).await;
    result
}
