//! A reader of a stream's low-latency feed (`GET /<p>/<s>/feed`), as a lower tier or a
//! WebRTC edge reads it: every message with when it arrived.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use streamcdn_media::feed::{FeedDecoder, FeedMessage, CONTENT_TYPE};
use streamcdn_media::input::MediaInput;

pub struct Received {
    pub at: Instant,
    pub message: FeedMessage,
}

/// Reads the feed at `host:port` `path` until `stop` is set or the feed ends; an error
/// names what went wrong (status, content type, a broken body, a malformed message).
pub async fn read_feed(
    host: &str,
    port: u16,
    path: &str,
    stop: Arc<AtomicBool>,
) -> Result<Vec<Received>, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri = format!("http://{host}:{port}{path}");
    let response = client
        .get(uri.parse().map_err(|e| format!("{uri}: {e}"))?)
        .await
        .map_err(|e| format!("{uri}: {e}"))?;
    if response.status() != 200 {
        return Err(format!("{uri}: {}", response.status()));
    }
    let content_type = response.headers().get("content-type").cloned();
    if content_type.as_ref().and_then(|v| v.to_str().ok()) != Some(CONTENT_TYPE) {
        return Err(format!("{uri}: content type {content_type:?}"));
    }
    let mut body = response.into_body().into_data_stream();
    let mut decoder = FeedDecoder::default();
    let mut received = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(100), body.next()).await {
            Err(_) => continue,
            Ok(Some(Ok(chunk))) => {
                let at = Instant::now();
                for message in decoder.push(&chunk).map_err(|e| format!("{uri}: {e}"))? {
                    received.push(Received { at, message });
                }
            }
            Ok(Some(Err(e))) => return Err(format!("{uri}: {e}")),
            Ok(None) => break,
        }
    }
    Ok(received)
}

/// [`read_feed`] on a thread of its own until the returned flag is set.
pub fn watch_feed(
    host: &str,
    port: u16,
    path: &str,
) -> (
    Arc<AtomicBool>,
    std::thread::JoinHandle<Result<Vec<Received>, String>>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let (host, path, flag) = (host.to_owned(), path.to_owned(), stop.clone());
    let reader = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(read_feed(&host, port, &path, flag))
    });
    (stop, reader)
}

/// The video frames received: decode time and keyframe flag.
pub fn video_frames(received: &[Received]) -> Vec<(i64, bool)> {
    received
        .iter()
        .filter_map(|r| match &r.message {
            FeedMessage::Media(MediaInput::Video(f)) => Some((f.dts, f.keyframe)),
            _ => None,
        })
        .collect()
}
