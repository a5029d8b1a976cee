//! The tokio shell: one UDP socket, every session's `Rtc`, their timers, one task.
//!
//! ```text
//! let server = WebRtcServer::bind(listen, settings).await?;
//! let handle = server.handle();           // to the HTTP handlers (WHIP)
//! tokio::spawn(server.serve(shutdown));
//! let accepted = handle.accept(&offer).await?;   // → 201 with accepted.answer
//! while let MediaEvent::Packet(p) = accepted.media.next().await { depacketize(p) }
//! ```
//!
//! Viewers (WHEP) share the same loop: `handle.accept_viewer(&offer)` gives an
//! [`OutgoingMedia`] that frames are written to, and a [`SessionEnd`].
//!
//! A session ends on [`WebRtcHandle::close`] (WHIP or WHEP `DELETE`), when ICE consent is lost
//! or DTLS closes, after `inactivity_timeout` without media, when its consumer drops
//! its [`IncomingMedia`], or at shutdown; the consumer then gets
//! [`MediaEvent::Ended`] with the reason.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use str0m::net::{Protocol, Receive, Transmit};
use str0m::Input;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

use crate::demux::{local_destination, parse, Demux};
use crate::error::WebRtcError;
use crate::session::EndReason;
use crate::session::{
    Answerer, Happened, OfferedTracks, OutFrame, RtpIn, SendStats, Session, SessionStats,
};

#[derive(Debug, Clone)]
pub struct WebRtcSettings {
    /// The addresses clients reach the socket at (host candidates in every answer); a
    /// port of 0 stands for the socket's own port.
    pub candidates: Vec<SocketAddr>,
    /// A session without media for this long is ended.
    pub inactivity_timeout: Duration,
    /// Sessions at once; more offers are refused.
    pub max_sessions: usize,
}

/// What a consumer of a session gets.
#[derive(Debug)]
pub enum MediaEvent {
    Packet(RtpIn),
    /// The last event of a session.
    Ended(EndReason),
}

/// An answered offer.
pub struct Accepted {
    /// The session's id (for the WHIP resource URL): 32 hex digits, unguessable.
    pub id: String,
    /// The SDP answer.
    pub answer: String,
    pub tracks: OfferedTracks,
    pub media: IncomingMedia,
}

/// One session's media, for its consumer.
pub struct IncomingMedia {
    key: u64,
    packets: mpsc::Receiver<RtpIn>,
    ended: oneshot::Receiver<EndReason>,
    stats: watch::Receiver<SessionStats>,
    commands: mpsc::Sender<Command>,
}

impl IncomingMedia {
    /// The next packet, or how the session ended (then nothing more comes).
    pub async fn next(&mut self) -> MediaEvent {
        match self.packets.recv().await {
            Some(packet) => MediaEvent::Packet(packet),
            None => MediaEvent::Ended(self.ended.try_recv().unwrap_or(EndReason::Shutdown)),
        }
    }

    /// Asks the publisher for a keyframe (RTCP PLI), rate-limited.
    pub fn request_keyframe(&self) {
        let _ = self.commands.try_send(Command::Keyframe(self.key));
    }

    /// The session's counts so far (updated about once a second and at its end).
    pub fn stats(&self) -> SessionStats {
        *self.stats.borrow()
    }
}

/// An answered viewer's offer (WHEP).
pub struct AcceptedViewer {
    /// The session's id (for the WHEP resource URL): 32 hex digits, unguessable.
    pub id: String,
    /// The SDP answer.
    pub answer: String,
    /// What the viewer takes.
    pub tracks: OfferedTracks,
    pub media: OutgoingMedia,
    pub end: SessionEnd,
}

/// One viewer's session, for the task that feeds it.
pub struct OutgoingMedia {
    key: u64,
    commands: mpsc::Sender<Command>,
    stats: watch::Receiver<SendStats>,
}

impl OutgoingMedia {
    /// Waits until ICE and DTLS are up (frames written before are lost); `false` if the
    /// session ended first.
    pub async fn connected(&mut self) -> bool {
        self.stats.wait_for(|s| s.connected).await.is_ok()
    }

    /// Hands a frame to the session. Waits while the server is busy: a caller reading a
    /// feed then falls behind it, and the feed skips it to a later keyframe, so no queue
    /// grows here.
    pub async fn send(&self, frame: OutFrame) -> Result<(), WebRtcError> {
        self.commands
            .send(Command::Frame(self.key, frame))
            .await
            .map_err(|_| WebRtcError::Stopped)
    }

    /// The session's counts so far (updated about once a second and at its end).
    pub fn stats(&self) -> SendStats {
        *self.stats.borrow()
    }
}

/// How a session ended, once it has.
pub struct SessionEnd(oneshot::Receiver<EndReason>);

impl SessionEnd {
    /// Waits for the session's end.
    pub async fn wait(&mut self) -> EndReason {
        (&mut self.0).await.unwrap_or(EndReason::Shutdown)
    }
}

enum Command {
    Add(Box<Entry>, u64, String),
    Close(String, oneshot::Sender<bool>),
    Keyframe(u64),
    Frame(u64, OutFrame),
}

/// Who a session's output goes to: the consumer of a publisher's packets (WHIP), or
/// the feeder of a viewer's frames (WHEP), which only needs its counts.
enum Consumer {
    Receiving {
        packets: mpsc::Sender<RtpIn>,
        stats: watch::Sender<SessionStats>,
    },
    Sending {
        stats: watch::Sender<SendStats>,
    },
}

impl Consumer {
    fn publish(&self, session: &Session) {
        match self {
            Consumer::Receiving { stats, .. } => {
                stats.send_replace(session.stats);
            }
            Consumer::Sending { stats } => {
                if let Some(sending) = &session.sending {
                    stats.send_replace(sending.stats);
                }
            }
        }
    }
}

struct Entry {
    session: Session,
    consumer: Consumer,
    ended: Option<oneshot::Sender<EndReason>>,
    id: String,
}

/// Offers in, sessions out; cheap to clone.
#[derive(Clone)]
pub struct WebRtcHandle {
    commands: mpsc::Sender<Command>,
    answerer: Answerer,
    live: Arc<AtomicUsize>,
    max_sessions: usize,
}

impl WebRtcHandle {
    /// The candidates every answer names.
    pub fn candidates(&self) -> &[SocketAddr] {
        self.answerer.candidates()
    }

    /// Answers a publisher's offer and starts its session on the server's socket.
    pub async fn accept(&self, offer: &str) -> Result<Accepted, WebRtcError> {
        self.check_room()?;
        let (session, answer) = self.answerer.answer(offer, Instant::now())?;
        let tracks = session.tracks;
        // About two seconds of a 5 Mbit/s stream: a consumer slower than that loses
        // packets (a gap to it, and a keyframe request) rather than holding the socket.
        let (packets_tx, packets) = mpsc::channel(1024);
        let (stats_tx, stats) = watch::channel(SessionStats::default());
        let consumer = Consumer::Receiving {
            packets: packets_tx,
            stats: stats_tx,
        };
        let (key, id, ended) = self.start(session, consumer).await?;
        Ok(Accepted {
            id,
            answer,
            tracks,
            media: IncomingMedia {
                key,
                packets,
                ended,
                stats,
                commands: self.commands.clone(),
            },
        })
    }

    /// Answers a viewer's offer (WHEP) and starts its session on the server's socket.
    pub async fn accept_viewer(&self, offer: &str) -> Result<AcceptedViewer, WebRtcError> {
        self.check_room()?;
        let (session, answer) = self.answerer.answer_viewer(offer, Instant::now())?;
        let tracks = session.tracks;
        let (stats_tx, stats) = watch::channel(SendStats::default());
        let consumer = Consumer::Sending { stats: stats_tx };
        let (key, id, ended) = self.start(session, consumer).await?;
        Ok(AcceptedViewer {
            id,
            answer,
            tracks,
            media: OutgoingMedia {
                key,
                commands: self.commands.clone(),
                stats,
            },
            end: SessionEnd(ended),
        })
    }

    fn check_room(&self) -> Result<(), WebRtcError> {
        match self.live.load(Ordering::Relaxed) >= self.max_sessions {
            true => Err(WebRtcError::Full),
            false => Ok(()),
        }
    }

    /// Hands a new session to the server loop: its key, id and end.
    async fn start(
        &self,
        session: Session,
        consumer: Consumer,
    ) -> Result<(u64, String, oneshot::Receiver<EndReason>), WebRtcError> {
        let key = rand::rng().random::<u64>();
        let id = format!("{key:016x}{:016x}", rand::rng().random::<u64>());
        let (ended_tx, ended) = oneshot::channel();
        let entry = Entry {
            session,
            consumer,
            ended: Some(ended_tx),
            id: id.clone(),
        };
        self.live.fetch_add(1, Ordering::Relaxed);
        if self
            .commands
            .send(Command::Add(Box::new(entry), key, id.clone()))
            .await
            .is_err()
        {
            self.live.fetch_sub(1, Ordering::Relaxed);
            return Err(WebRtcError::Stopped);
        }
        Ok((key, id, ended))
    }

    /// Ends the session `id` (WHIP `DELETE`); false if there is none.
    pub async fn close(&self, id: &str) -> bool {
        let (reply, answer) = oneshot::channel();
        if self
            .commands
            .send(Command::Close(id.to_owned(), reply))
            .await
            .is_err()
        {
            return false;
        }
        answer.await.unwrap_or(false)
    }
}

pub struct WebRtcServer {
    socket: UdpSocket,
    local: SocketAddr,
    candidates: Vec<SocketAddr>,
    inactivity_timeout: Duration,
    commands: mpsc::Receiver<Command>,
    handle: WebRtcHandle,
}

impl WebRtcServer {
    /// Binds the one UDP socket of every session.
    pub async fn bind(listen: SocketAddr, settings: WebRtcSettings) -> Result<Self, WebRtcError> {
        let socket = UdpSocket::bind(listen)
            .await
            .map_err(|e| WebRtcError::Bind(listen, e))?;
        let local = socket
            .local_addr()
            .map_err(|e| WebRtcError::Bind(listen, e))?;
        let candidates: Vec<SocketAddr> = settings
            .candidates
            .iter()
            .map(|c| match c.port() {
                0 => SocketAddr::new(c.ip(), local.port()),
                _ => *c,
            })
            .collect();
        if candidates.is_empty() {
            return Err(WebRtcError::Setup(
                "no ICE candidate: name the address clients reach the WebRTC port at".into(),
            ));
        }
        let answerer = Answerer::new(candidates.clone())?;
        let (commands_tx, commands) = mpsc::channel(256);
        Ok(Self {
            socket,
            local,
            candidates,
            inactivity_timeout: settings.inactivity_timeout,
            commands,
            handle: WebRtcHandle {
                commands: commands_tx,
                answerer,
                live: Arc::new(AtomicUsize::new(0)),
                max_sessions: settings.max_sessions,
            },
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn handle(&self) -> WebRtcHandle {
        self.handle.clone()
    }

    /// Runs every session until `shutdown` turns true; then ends them all
    /// ([`EndReason::Shutdown`]).
    pub async fn serve(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut shell = Shell {
            socket: &self.socket,
            sessions: HashMap::new(),
            ids: HashMap::new(),
            demux: Demux::default(),
            live: self.handle.live.clone(),
            transmits: Vec::new(),
            happened: Vec::new(),
        };
        let mut buf = vec![0u8; 2048];
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_timeout = shell
                .sessions
                .values()
                .map(|e| e.session.next_timeout)
                .min();
            let timer = async {
                match next_timeout {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                Some(command) = self.commands.recv() => shell.command(command),
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((n, source)) => shell.datagram(&buf[..n], source, &self.candidates),
                    // ICMP errors of earlier sends surface here on some systems.
                    Err(e) => tracing::debug!(error = %e, "WebRTC socket receive error"),
                },
                _ = timer => shell.timeouts(),
                _ = tick.tick() => shell.housekeeping(self.inactivity_timeout),
            }
        }
        let keys: Vec<u64> = shell.sessions.keys().copied().collect();
        for key in keys {
            if let Some(entry) = shell.sessions.get_mut(&key) {
                entry.session.close();
            }
            shell.drive(key);
            shell.end(key, EndReason::Shutdown);
        }
    }
}

/// The server loop's state, borrowed from the server.
struct Shell<'a> {
    socket: &'a UdpSocket,
    sessions: HashMap<u64, Entry>,
    ids: HashMap<String, u64>,
    demux: Demux<u64>,
    live: Arc<AtomicUsize>,
    transmits: Vec<Transmit>,
    happened: Vec<Happened>,
}

impl Shell<'_> {
    fn command(&mut self, command: Command) {
        match command {
            Command::Add(entry, key, id) => {
                metrics::gauge!("streamcdn_webrtc_sessions").increment(1.0);
                self.ids.insert(id, key);
                self.sessions.insert(key, *entry);
                self.drive(key);
            }
            Command::Close(id, reply) => {
                let Some(key) = self.ids.get(&id).copied() else {
                    let _ = reply.send(false);
                    return;
                };
                if let Some(entry) = self.sessions.get_mut(&key) {
                    entry.session.close();
                }
                self.drive(key);
                self.end(key, EndReason::Deleted);
                let _ = reply.send(true);
            }
            Command::Keyframe(key) => {
                if let Some(entry) = self.sessions.get_mut(&key) {
                    entry.session.request_keyframe(Instant::now());
                }
                self.drive(key);
            }
            Command::Frame(key, frame) => {
                let Some(entry) = self.sessions.get_mut(&key) else {
                    return;
                };
                entry.session.write(frame);
                self.drive(key);
            }
        }
    }

    fn datagram(&mut self, datagram: &[u8], source: SocketAddr, candidates: &[SocketAddr]) {
        let now = Instant::now();
        let (Some(destination), Some(contents)) =
            (local_destination(candidates, source), parse(datagram))
        else {
            metrics::counter!("streamcdn_webrtc_datagrams_dropped_total", "reason" => "unparsable")
                .increment(1);
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents,
            },
        );
        let sessions = &self.sessions;
        let Some(key) = self.demux.route(source, sessions.keys().copied(), |k| {
            sessions.get(&k).is_some_and(|e| e.session.accepts(&input))
        }) else {
            metrics::counter!("streamcdn_webrtc_datagrams_dropped_total", "reason" => "no_session")
                .increment(1);
            return;
        };
        let Some(entry) = self.sessions.get_mut(&key) else {
            return;
        };
        match entry.session.handle(input) {
            Ok(()) => self.drive(key),
            Err(reason) => self.end(key, reason),
        }
    }

    fn timeouts(&mut self) {
        let now = Instant::now();
        let due: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, e)| e.session.next_timeout <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            let Some(entry) = self.sessions.get_mut(&key) else {
                continue;
            };
            match entry.session.handle(Input::Timeout(now)) {
                Ok(()) => self.drive(key),
                Err(reason) => self.end(key, reason),
            }
        }
    }

    /// Ends sessions without media for `inactivity`; publishes every session's counts.
    fn housekeeping(&mut self, inactivity: Duration) {
        let now = Instant::now();
        let idle: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.session.last_media) >= inactivity)
            .map(|(k, _)| *k)
            .collect();
        for entry in self.sessions.values() {
            entry.consumer.publish(&entry.session);
        }
        for key in idle {
            if let Some(entry) = self.sessions.get_mut(&key) {
                entry.session.close();
            }
            self.drive(key);
            self.end(key, EndReason::Inactive);
        }
    }

    /// Sends what session `key` has to send and hands its media to the consumer.
    fn drive(&mut self, key: u64) {
        let Some(entry) = self.sessions.get_mut(&key) else {
            return;
        };
        entry.session.poll(&mut self.transmits, &mut self.happened);
        for t in self.transmits.drain(..) {
            if self.socket.try_send_to(&t.contents, t.destination).is_err() {
                metrics::counter!("streamcdn_webrtc_datagrams_dropped_total", "reason" => "send")
                    .increment(1);
            }
        }
        let mut ended = None;
        for happened in self.happened.drain(..) {
            match happened {
                Happened::Media(packet) => {
                    let Consumer::Receiving { packets, .. } = &entry.consumer else {
                        continue;
                    };
                    match packets.try_send(packet) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => entry.session.stats.dropped += 1,
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            ended.get_or_insert(EndReason::Shutdown);
                        }
                    }
                }
                Happened::SendStats(stats) => {
                    if let Consumer::Sending { stats: to } = &entry.consumer {
                        to.send_replace(stats);
                    }
                }
                Happened::Ended(reason) => {
                    ended.get_or_insert(reason);
                }
            }
        }
        if let Some(reason) = ended {
            self.end(key, reason);
        }
    }

    /// Removes session `key`: its consumer gets the reason, then the end of its media.
    fn end(&mut self, key: u64, reason: EndReason) {
        let Some(mut entry) = self.sessions.remove(&key) else {
            return;
        };
        self.demux.forget(key);
        self.ids.remove(&entry.id);
        self.live.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("streamcdn_webrtc_sessions").decrement(1.0);
        metrics::counter!("streamcdn_webrtc_sessions_ended_total", "reason" => reason.label())
            .increment(1);
        tracing::debug!(session = entry.id, %reason, "WebRTC session ended");
        entry.consumer.publish(&entry.session);
        if let Some(ended) = entry.ended.take() {
            let _ = ended.send(reason);
        }
    }
}
