//! The RTMP listener: a thin async shell that moves bytes between sockets and
//! [`ServerSession`], and hands media to a [`Publisher`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use streamcdn_media::rtmp::{ServerSession, SessionEvent, SessionLimits};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tracing::Instrument;

use streamcdn_recording::clock::{format_time, new_recording_id};

use crate::hub::{split_publish_name, StreamHub};
use crate::publish::{finish, reason_label};
use crate::publisher::Publisher;
use crate::recorder::Recorder;

/// Room offered to each socket read. Reads take what has arrived, up to this: at
/// 3 Mbit/s a read rarely finds more, and a bigger buffer is memory every idle
/// publisher keeps.
const READ_ROOM: usize = 16 * 1024;
/// Received bytes are added to the shared counter in batches of about this many, not
/// per read: every session's add lands on one cache line the worker threads contend for
/// (about 1% of the ingest's CPU at 100 publishers).
const BYTES_IN_BATCH: u64 = 256 * 1024;

#[derive(Debug, Clone)]
pub struct RtmpSettings {
    pub max_connections: usize,
    pub max_message_size: u32,
    pub idle_timeout: Duration,
    /// Least time between two reads of a publishing session's socket.
    pub read_interval: Duration,
}

/// The `protocol` label of this listener's publishers (RTMPS counts as RTMP).
const PROTOCOL: &str = "rtmp";

/// When the server is asked to stop: `drain` flips to true first (the listener closes
/// at once, so the load balancer's health check sends new publishers elsewhere; open
/// sessions are asked to reconnect where the client supports it), then `shutdown`
/// (every session still open is closed).
#[derive(Debug, Clone)]
pub struct Stop {
    pub drain: watch::Receiver<bool>,
    pub shutdown: watch::Receiver<bool>,
}

impl Stop {
    fn draining(&self) -> bool {
        *self.drain.borrow()
    }
}

/// Accepts publishers until the server drains, then lets open sessions go on until
/// their publishers leave or shutdown, and returns. A publish that ends while the
/// server drains is interrupted, not ended (see [`Publisher::interrupt`]).
pub async fn serve(
    listener: TcpListener,
    hub: Arc<StreamHub>,
    recorder: Recorder,
    settings: RtmpSettings,
    stop: Stop,
) {
    serve_wrapped(
        listener,
        hub,
        recorder,
        settings,
        stop,
        |socket| async move { Ok::<_, std::io::Error>(socket) },
    )
    .await;
}

/// [`serve`] over a transport made from each accepted connection by `wrap` (a TLS
/// handshake for RTMPS), which has the idle timeout to finish.
pub async fn serve_wrapped<W, Fut, S>(
    listener: TcpListener,
    hub: Arc<StreamHub>,
    recorder: Recorder,
    settings: RtmpSettings,
    stop: Stop,
    wrap: W,
) where
    W: Fn(TcpStream) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = std::io::Result<S>> + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let pacer = ReadPacer {
        epoch: Instant::now(),
        interval: settings.read_interval,
    };
    let mut sessions = tokio::task::JoinSet::new();
    let mut drain = stop.drain.clone();
    let mut shutdown = stop.shutdown.clone();
    loop {
        if stop.draining() {
            break;
        }
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "RTMP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Ok(()) = drain.changed() => continue,
            _ = shutdown.changed() => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "RTMP connection refused: max_connections reached");
            continue;
        };
        let _ = socket.set_nodelay(true);
        let (hub, settings, stop) = (hub.clone(), settings.clone(), stop.clone());
        let recorder = recorder.clone();
        let wrap = wrap.clone();
        sessions.spawn(
            async move {
                metrics::gauge!("streamcdn_rtmp_connections").increment(1.0);
                match tokio::time::timeout(settings.idle_timeout, wrap(socket)).await {
                    Ok(Ok(stream)) => {
                        if let Err(reason) =
                            run_session(stream, peer, hub, recorder, pacer, settings, stop).await
                        {
                            tracing::info!(%reason, "RTMP session closed");
                        }
                    }
                    Ok(Err(e)) => {
                        metrics::counter!("streamcdn_rtmp_handshake_failures_total").increment(1);
                        tracing::info!(error = %e, "RTMPS handshake failed");
                    }
                    Err(_) => {
                        metrics::counter!("streamcdn_rtmp_handshake_failures_total").increment(1);
                        tracing::info!("RTMPS handshake timed out");
                    }
                }
                metrics::gauge!("streamcdn_rtmp_connections").decrement(1.0);
                drop(permit);
            }
            .instrument(tracing::info_span!("rtmp", %peer)),
        );
        while sessions.try_join_next().is_some() {}
    }
    // Closed now: connections are refused, and the load balancer's check fails.
    drop(listener);
    if stop.draining() {
        tracing::info!(
            sessions = sessions.len(),
            "draining: no new publishers; asking the open sessions to reconnect elsewhere"
        );
    }
    while sessions.join_next().await.is_some() {}
}

/// When a publishing session reads its socket next. Data arrives about a hundred times
/// a second at 3 Mbit/s, and each wake-up (epoll, scheduling, a read) costs more than
/// the bytes it brings; so a session reads at most once per `interval`, what arrived
/// meanwhile waiting in the kernel. The times are on one grid for all sessions, so a
/// worker wakes once per tick for all of them rather than once for each.
#[derive(Debug, Clone, Copy)]
struct ReadPacer {
    epoch: Instant,
    interval: Duration,
}

impl ReadPacer {
    /// The first tick after `last_read` (at most `interval` later); `None` reads at once.
    fn next_read(&self, last_read: Instant) -> Option<Instant> {
        let interval = self.interval.as_nanos();
        if interval == 0 {
            return None;
        }
        let since_epoch = last_read.saturating_duration_since(self.epoch).as_nanos();
        let ticks = since_epoch / interval + 1;
        let since_epoch = u64::try_from(ticks * interval).ok()?;
        Some(self.epoch + Duration::from_nanos(since_epoch))
    }
}

async fn run_session<S: AsyncRead + AsyncWrite + Unpin>(
    mut socket: S,
    peer: SocketAddr,
    hub: Arc<StreamHub>,
    recorder: Recorder,
    pacer: ReadPacer,
    settings: RtmpSettings,
    stop: Stop,
) -> Result<(), String> {
    let (mut drain, mut shutdown) = (stop.drain.clone(), stop.shutdown.clone());
    // Whether this session has been asked to reconnect (or the drain has been seen).
    let mut told_to_go = false;
    let limits = SessionLimits {
        max_message_len: settings.max_message_size,
    };
    let mut session = ServerSession::new(limits, std::array::from_fn(|_| rand::random()));
    let mut publisher: Option<Publisher> = None;
    // When the current publish started, for its `on_unpublish`.
    let mut published_at = String::new();
    // Looked up once: a `counter!` by name is a registry lookup each time.
    let bytes_in = metrics::counter!("streamcdn_ingest_bytes_in_total", "protocol" => PROTOCOL);
    let mut bytes_in_unreported = 0u64;
    // One timer per session, moved only when it fires (not armed anew for every read).
    let idle = tokio::time::sleep(settings.idle_timeout);
    tokio::pin!(idle);
    let mut last_read = Instant::now();
    let result = loop {
        if !told_to_go && stop.draining() {
            told_to_go = true;
            if publisher.is_some()
                && session.request_reconnect("the server is being restarted; reconnect to go on")
            {
                metrics::counter!("streamcdn_rtmp_reconnect_requests_total").increment(1);
                tracing::info!(
                    "asked the publisher to reconnect (Enhanced RTMP reconnect request)"
                );
                let out = session.take_output();
                if let Err(e) = socket.write_all(&out).await {
                    break Err(format!("write error: {e}"));
                }
            } else if publisher.is_some() {
                tracing::info!(
                    "the publisher cannot be asked to reconnect; it stays until node.drain_timeout"
                );
            } else {
                // Not publishing (yet): nothing to lose, and this server takes no new one.
                break Ok(());
            }
        }
        let read = tokio::select! {
            read = socket.read_buf(session.input_buffer(READ_ROOM)) => read,
            () = &mut idle => {
                let quiet_until = last_read + settings.idle_timeout;
                if Instant::now() >= quiet_until {
                    break Err("idle timeout".to_owned());
                }
                idle.as_mut().reset(quiet_until);
                continue;
            }
            Ok(()) = drain.changed(), if !told_to_go => continue,
            _ = shutdown.changed() => break Ok(()),
        };
        let n = match read {
            Err(e) => break Err(format!("read error: {e}")),
            Ok(0) => break Ok(()),
            Ok(n) => n,
        };
        last_read = Instant::now();
        bytes_in_unreported += n as u64;
        if bytes_in_unreported >= BYTES_IN_BATCH {
            bytes_in.increment(std::mem::take(&mut bytes_in_unreported));
        }
        if let Err(e) = session.handle_buffered_input() {
            metrics::counter!("streamcdn_rtmp_protocol_errors_total").increment(1);
            tracing::warn!(error = %e, "RTMP protocol error; closing");
            break Err(e.to_string());
        }
        let mut refused = None;
        while let Some(event) = session.poll_event() {
            match event {
                SessionEvent::PublishRequested(request) => {
                    let now = SystemTime::now();
                    published_at = format_time(now);
                    match hub
                        .begin_publish(
                            &request.app,
                            &request.name,
                            published_at.clone(),
                            new_recording_id(now),
                            peer,
                        )
                        .await
                    {
                        Ok((stream, journal)) => {
                            let (provider, name, id) = stream.with_recording(|r| {
                                (r.provider.clone(), r.stream.clone(), r.recording_id.clone())
                            });
                            tracing::info!(
                                provider,
                                stream = name,
                                recording = id,
                                "publish started"
                            );
                            metrics::gauge!("streamcdn_live_streams", "protocol" => PROTOCOL)
                                .increment(1.0);
                            session.accept_publish();
                            let part_target = hub.settings().part_target_secs;
                            publisher =
                                Some(Publisher::new(stream, journal, part_target, &recorder).await);
                        }
                        Err(e) => {
                            // Names only: the query carries the key, which is never logged.
                            let app = split_publish_name(&request.app).0;
                            let stream = split_publish_name(&request.name).0;
                            tracing::warn!(app, stream, %peer, error = %e, "publish refused");
                            metrics::counter!("streamcdn_rtmp_publish_refused_total", "reason" => reason_label(&e)).increment(1);
                            session.reject_publish(e.rtmp_code(), &e.to_string());
                            refused = Some(e.to_string());
                            break;
                        }
                    }
                }
                SessionEvent::Video { timestamp, data } => {
                    if let Some(p) = publisher.as_mut() {
                        p.on_video(timestamp, data).await;
                    }
                }
                SessionEvent::Audio { timestamp, data } => {
                    if let Some(p) = publisher.as_mut() {
                        p.on_audio(timestamp, data).await;
                    }
                }
                SessionEvent::Metadata(props) => {
                    if let Some(p) = publisher.as_mut() {
                        p.on_metadata(&props);
                    }
                }
                SessionEvent::PublishFinished => {
                    if let Some(p) = publisher.take() {
                        finish(p, &hub, peer, &published_at, PROTOCOL, stop.draining()).await;
                    }
                }
                SessionEvent::UnknownCommand(name) => {
                    tracing::debug!(
                        command = name,
                        "unsupported RTMP command answered with _error"
                    );
                }
            }
        }
        let out = session.take_output();
        if !out.is_empty() {
            if let Err(e) = socket.write_all(&out).await {
                break Err(format!("write error: {e}"));
            }
        }
        // A publisher's socket is read at most once per `read_interval` (see
        // [`ReadPacer`]). Not before publishing: the handshake stays prompt.
        if publisher.is_some() {
            if let Some(next_read) = pacer.next_read(last_read) {
                if Instant::now() < next_read {
                    tokio::time::sleep_until(next_read).await;
                }
            }
        }
        if let Some(reason) = refused {
            let _ = socket.shutdown().await;
            break Err(format!("publish refused: {reason}"));
        }
    };
    bytes_in.increment(bytes_in_unreported);
    if let Some(p) = publisher.take() {
        finish(p, &hub, peer, &published_at, PROTOCOL, stop.draining()).await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_paced_on_one_grid_for_all_sessions() {
        let epoch = Instant::now();
        let pacer = ReadPacer {
            epoch,
            interval: Duration::from_millis(20),
        };
        let at = |ms: u64| epoch + Duration::from_millis(ms);
        // The next tick after the last read: at most one interval later.
        assert_eq!(pacer.next_read(at(0)), Some(at(20)));
        assert_eq!(pacer.next_read(at(3)), Some(at(20)));
        assert_eq!(pacer.next_read(at(20)), Some(at(40)));
        assert_eq!(pacer.next_read(at(39)), Some(at(40)));
        // Sessions that read at different times meet on the same tick.
        assert_eq!(pacer.next_read(at(1)), pacer.next_read(at(19)));
        let unpaced = ReadPacer {
            epoch,
            interval: Duration::ZERO,
        };
        assert_eq!(unpaced.next_read(at(5)), None);
    }
}
