//! Draining a cache (SIGTERM, `POST /api/v1/drain`): it leaves the routers' answers
//! first, its `/healthz` answering `503` so their health checks drop it, then keeps
//! serving whoever still comes until its viewers have moved (no request for a while)
//! or the server's `drain_timeout`. Responses while draining close their connection,
//! so a player opens its next one to wherever the name resolves now.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;
use tokio::time::Instant;

/// What routers ask an edge (see the router's health checks).
const HEALTH_PATH: &str = "/healthz";
/// After the first health check refused, routers finish the round they were in and
/// replace their edge set: this long.
const ROUTERS_LEAVE: Duration = Duration::from_secs(2);
/// No health check at all for this long: no router watches this cache (a mid-tier).
const NO_ROUTER_AFTER: Duration = Duration::from_secs(3);
/// Viewers have moved once nobody has asked for anything for this long.
const VIEWERS_QUIET: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(100);

/// The drain state of one cache's playback listener(s).
pub struct Drain {
    draining: watch::Receiver<bool>,
    epoch: Instant,
    /// Milliseconds since `epoch` of the last viewer request (not a health check).
    last_request_ms: AtomicU64,
    /// Milliseconds since `epoch` of the first health check refused, plus one (0: none).
    first_refusal_ms: AtomicU64,
    health_checked: AtomicBool,
}

impl Drain {
    pub fn new(draining: watch::Receiver<bool>) -> Arc<Self> {
        Arc::new(Self {
            draining,
            epoch: Instant::now(),
            last_request_ms: AtomicU64::new(0),
            first_refusal_ms: AtomicU64::new(0),
            health_checked: AtomicBool::new(false),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Resolves once the routers have stopped naming this cache and its viewers have
    /// moved (the server stops earlier if `drain_timeout` comes first).
    pub async fn handed_over(self: Arc<Self>) {
        let mut draining = self.draining.clone();
        if draining.wait_for(|d| *d).await.is_err() {
            return;
        }
        let began = self.now_ms();
        // Requests before the drain do not count towards the quiet.
        self.last_request_ms.fetch_max(began, Ordering::Relaxed);
        self.health_checked.store(false, Ordering::Relaxed);
        loop {
            let now = self.now_ms();
            let refused = self.first_refusal_ms.load(Ordering::Relaxed);
            let left_routers = if refused > 0 {
                now >= refused - 1 + ms(ROUTERS_LEAVE)
            } else {
                !self.health_checked.load(Ordering::Relaxed) && now >= began + ms(NO_ROUTER_AFTER)
            };
            let quiet = now >= self.last_request_ms.load(Ordering::Relaxed) + ms(VIEWERS_QUIET);
            if left_routers && quiet {
                tracing::info!(
                    "edge drained: routers no longer name it and its viewers have moved"
                );
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The middleware on the playback listener: `/healthz` answers `200` (a load balancer's
/// health check), `503` while draining;
/// other requests are served as usual, noted, and (while draining) close their
/// connection after the response.
pub async fn layer(State(drain): State<Arc<Drain>>, request: Request, next: Next) -> Response {
    if request.uri().path() == HEALTH_PATH {
        drain.health_checked.store(true, Ordering::Relaxed);
        if drain.is_draining() {
            let now = drain.now_ms();
            let _ = drain.first_refusal_ms.compare_exchange(
                0,
                now + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            metrics::counter!("streamcdn_edge_drain_health_refused_total").increment(1);
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
                "draining\n",
            )
                .into_response();
        }
        return (
            StatusCode::OK,
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            "ok\n",
        )
            .into_response();
    }
    drain
        .last_request_ms
        .fetch_max(drain.now_ms(), Ordering::Relaxed);
    // HTTP/2 has no `Connection` header (RFC 9113 §8.2.2).
    let http1 = request.version() <= axum::http::Version::HTTP_11;
    let mut response = next.run(request).await;
    if http1 && drain.is_draining() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
