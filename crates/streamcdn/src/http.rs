//! Serving an axum router with the limits axum::serve does not expose: a cap on request
//! head size (431 beyond it), a header read timeout, and graceful shutdown that lets
//! in-flight requests finish. Plain listeners speak HTTP/1.1, or HTTP/2 to a client
//! that opens with its preface (prior knowledge: lower cache tiers with
//! `edge.upstream_http2`); TLS listeners HTTP/2 or HTTP/1.1 as ALPN decides, through
//! the same per-connection service. Optionally meters
//! the listener's traffic (open connections, response bytes) for the node directory's
//! load summary.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::Response;
use axum::Router;
use http_body::{Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// A client that has not sent its request head (or finished its TLS handshake) by then
/// is disconnected.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 connections are pinged this often, so dead peers do not hold streams.
const H2_KEEPALIVE: Duration = Duration::from_secs(30);
/// Requests one HTTP/2 connection may have open at once. A lower cache tier sends all
/// its requests to us on one connection, LL-HLS requests we hold for seconds among
/// them (two per live stream): hyper's 200 would queue the rest behind them.
const H2_MAX_STREAMS: u32 = 4096;
/// What every HTTP/2 connection opens with (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a listener has carried: connections open now and response body bytes sent,
/// and (for viewers) the kernel's RTT of each new connection per client prefix.
#[derive(Debug, Default)]
pub struct Traffic {
    open_connections: AtomicU64,
    bytes_out: AtomicU64,
    passive_rtts: Option<std::sync::Mutex<streamcdn_probe_agent::PassiveRtts>>,
}

impl Traffic {
    /// A meter that also records each connection's handshake RTT per client prefix.
    pub fn with_passive_rtts(rtts: streamcdn_probe_agent::PassiveRtts) -> Self {
        Self {
            passive_rtts: Some(std::sync::Mutex::new(rtts)),
            ..Self::default()
        }
    }

    /// The per-prefix RTT reports gathered since the last call.
    pub fn drain_passive(
        &self,
        edge: &str,
        now_ms: u64,
    ) -> Vec<streamcdn_routing::probe::ProbeReport> {
        match &self.passive_rtts {
            Some(rtts) => rtts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain_reports(edge, now_ms),
            None => Vec::new(),
        }
    }

    fn record_rtt(&self, stream: &tokio::net::TcpStream, peer: std::net::SocketAddr) {
        let Some(rtts) = &self.passive_rtts else {
            return;
        };
        // Right after accept the kernel's estimate is the handshake's round trip.
        if let Some(rtt) = streamcdn_probe_agent::tcp_info_rtt(stream) {
            let prefix = streamcdn_routing::prefix::ClientPrefix::of(peer.ip());
            rtts.lock().unwrap_or_else(|e| e.into_inner()).record(
                prefix,
                rtt,
                streamcdn_support::clock::now_ms(),
            );
        }
    }

    pub fn open_connections(&self) -> u64 {
        self.open_connections.load(Ordering::Relaxed)
    }

    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }
}

/// Counts the connection as open until dropped.
struct OpenConnection(Arc<Traffic>);

impl OpenConnection {
    fn new(traffic: Arc<Traffic>) -> Self {
        traffic.open_connections.fetch_add(1, Ordering::Relaxed);
        Self(traffic)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that adds its data frames to `traffic` as they are sent. It keeps
/// the inner body's size hint, so `Content-Length` (and HEAD answers) stay as they were.
struct Metered {
    inner: Body,
    traffic: Arc<Traffic>,
}

impl http_body::Body for Metered {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.traffic
                    .bytes_out
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The certificate a client presented on a listener that asks for one (the
/// federation listener), in each request's extensions.
#[derive(Debug, Clone)]
pub struct PeerCertificate(pub Arc<rustls::pki_types::CertificateDer<'static>>);

/// One connection's service: the router, with the client's address in each request's
/// extensions (for handlers that decide by client, as the router's redirects) and, on a
/// metered listener, each response body counted. A plain function around the router
/// rather than layers: layers would be rebuilt for every connection.
fn connection_service(
    router: Router,
    peer: std::net::SocketAddr,
    certificate: Option<PeerCertificate>,
    traffic: Option<Arc<Traffic>>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<Output = Result<Response, std::convert::Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        if let Some(certificate) = &certificate {
            request.extensions_mut().insert(certificate.clone());
        }
        let mut router = router.clone();
        let traffic = traffic.clone();
        async move {
            let response = tower_service::Service::call(&mut router, request).await?;
            Ok(match traffic {
                Some(traffic) => {
                    let (parts, inner) = response.into_parts();
                    Response::from_parts(parts, Body::new(Metered { inner, traffic }))
                }
                None => response,
            })
        }
    })
}

/// The protocol settings shared by every connection of a listener.
fn connection_builder(max_header_bytes: usize) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(H2_MAX_STREAMS)
        .keep_alive_interval(H2_KEEPALIVE);
    builder
}

/// Serves one connection, HTTP/2 or HTTP/1.1 as already decided (never by hyper's
/// sniffing of the preface, which would wait for the first bytes with no timeout: see
/// [`opens_with_h2_preface`]), until it ends or shutdown has drained it.
async fn serve_connection<I>(
    io: I,
    http2: bool,
    builder: auto::Builder<TokioExecutor>,
    service: impl hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = Response,
            Error = std::convert::Infallible,
            Future = impl std::future::Future<Output = Result<Response, std::convert::Infallible>>
                         + Send
                         + 'static,
        > + Clone
        + Send
        + 'static,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let builder = if http2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    let connection = builder.serve_connection(TokioIo::new(io), service);
    let _ = watcher.watch(connection).await;
}

/// Whether a plain connection opens with HTTP/2's preface, from its first bytes, peeked
/// (they stay for the protocol) within [`HEAD_TIMEOUT`]; `None` if it closed or sent
/// nothing in time.
async fn opens_with_h2_preface(stream: &tokio::net::TcpStream) -> Option<bool> {
    let mut first = [0u8; H2_PREFACE.len()];
    let decide = async {
        loop {
            let n = stream.peek(&mut first).await.ok()?;
            if n == 0 {
                return None;
            }
            if !H2_PREFACE.starts_with(&first[..n]) {
                return Some(false);
            }
            if n == H2_PREFACE.len() {
                return Some(true);
            }
            // Part of the preface (or an HTTP/1.1 "P..." method) so far: a peek would
            // return the same bytes at once, so wait a little for the rest.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(HEAD_TIMEOUT, decide)
        .await
        .ok()
        .flatten()
}

pub async fn serve(
    listener: TcpListener,
    router: Router,
    max_header_bytes: usize,
    grace: Duration,
    traffic: Option<Arc<Traffic>>,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let builder = connection_builder(max_header_bytes);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        if let Some(traffic) = &traffic {
            traffic.record_rtt(&stream, peer);
        }
        let router = router.clone();
        let open = traffic.clone().map(OpenConnection::new);
        // Taken now, so a shutdown that starts during a TLS handshake waits for it.
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let tls = tls.clone();
        let metered = traffic.clone();
        tokio::spawn(async move {
            let _open = open;
            // Handlers that decide by the client (the router's redirects) read its
            // address; the federation listener, its certificate.
            let service = |certificate| connection_service(router, peer, certificate, metered);
            match tls {
                None => {
                    let Some(http2) = opens_with_h2_preface(&stream).await else {
                        tracing::debug!(%peer, "no request in time");
                        return;
                    };
                    serve_connection(stream, http2, builder, service(None), watcher).await
                }
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    let session = stream.get_ref().1;
                    let http2 = session.alpn_protocol() == Some(b"h2");
                    let certificate = session
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|leaf| PeerCertificate(Arc::new(leaf.clone().into_owned())));
                    serve_connection(stream, http2, builder, service(certificate), watcher).await;
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after the shutdown grace period");
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// The server's end of a connection after the client wrote `chunks`, one by one.
    async fn decided_after(chunks: &[&[u8]]) -> Option<bool> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let decision = tokio::spawn(async move { opens_with_h2_preface(&server).await });
        for chunk in chunks {
            client.write_all(chunk).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        client.shutdown().await.unwrap();
        decision.await.unwrap()
    }

    #[tokio::test]
    async fn plain_connections_are_told_apart_by_their_first_bytes() {
        assert_eq!(decided_after(&[H2_PREFACE]).await, Some(true));
        assert_eq!(
            decided_after(&[b"PRI * HTTP/2", b".0\r\n\r\nSM\r\n\r\n"]).await,
            Some(true)
        );
        assert_eq!(
            decided_after(&[b"GET / HTTP/1.1\r\n\r\n"]).await,
            Some(false)
        );
        assert_eq!(
            decided_after(&[b"P", b"OST / HTTP/1.1\r\n"]).await,
            Some(false)
        );
        assert_eq!(decided_after(&[]).await, None);
    }
}
