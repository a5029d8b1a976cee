//! The SRT listener's shell: one UDP socket, srt-protocol's `MultiplexListener` for the
//! handshakes, one task per admitted caller running its `DuplexConnection`. Every
//! decision is in srt-protocol, [`crate::guard`] or the [`Gate`]; this file moves
//! datagrams and keeps the metrics.

use std::collections::HashMap;
use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use srt_protocol::connection::{Connection, DuplexConnection};
use srt_protocol::listener::{
    AccessControlRequest, AccessControlResponse, Action, Input, ListenerStatistics,
    MultiplexListener, NextInputContext, SessionId,
};
use srt_protocol::options::SocketOptions;
use srt_protocol::packet::{Packet, ReceivePacketError};
use srt_protocol::settings::ConnInitSettings;
use srt_protocol::statistics::SocketStatistics;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::gate::{ConnectionStats, Gate, Publication, Refusal, SrtSettings};
use crate::guard::{self, CallerCrypto, ToListener};
use crate::stream_id::PublishRequest;

/// Chunks (SRT payloads of up to 1316 bytes) a publication may have in flight to its
/// consumer: about a second at 10 Mbit/s.
const CHUNKS_IN_FLIGHT: usize = 1024;
/// Datagrams queued for one connection's task before more are dropped (SRT recovers
/// them): a burst of about 1.5 MB.
const PACKETS_IN_FLIGHT: usize = 1024;
/// The listening socket's receive buffer (the kernel may cap it at `rmem_max`).
const RECEIVE_BUFFER: usize = 8 * 1024 * 1024;
/// Conclusion handshakes remembered while their callers await a decision; past this
/// (a flood of forged handshakes), the oldest are forgotten and those callers refused.
const HANDSHAKES_REMEMBERED: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum SrtError {
    #[error("cannot listen for SRT on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// A bound SRT listener; [`SrtServer::serve`] runs it.
pub struct SrtServer {
    socket: Arc<UdpSocket>,
    local: SocketAddr,
}

/// A caller the gate admitted, until its connection opens.
struct Admitted<T> {
    request: PublishRequest,
    permit: OwnedSemaphorePermit,
    ticket: Option<T>,
}

impl SrtServer {
    pub async fn bind(addr: SocketAddr) -> Result<SrtServer, SrtError> {
        let bind_error = |e| SrtError::Bind(addr, e);
        let socket = UdpSocket::bind(addr).await.map_err(bind_error)?;
        // Every publisher's packets arrive on this one socket: room for bursts.
        let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(RECEIVE_BUFFER);
        let local = socket.local_addr().map_err(bind_error)?;
        Ok(SrtServer {
            socket: Arc::new(socket),
            local,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Admits callers through `gate` and sends each admitted one to `publications`,
    /// until `shutdown` flips to true or the consumer goes away.
    pub async fn serve<G: Gate>(
        self,
        gate: Arc<G>,
        settings: SrtSettings,
        publications: mpsc::Sender<Publication<G::Ticket>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut options = SocketOptions::default();
        options.receiver.latency = settings.latency;
        options.sender.peer_latency = settings.latency;
        let mut listener =
            MultiplexListener::new(Instant::now(), self.local, ConnInitSettings::from(options));
        let permits = Arc::new(Semaphore::new(settings.max_connections));
        let (responses, mut decided) = mpsc::channel(256);
        let mut handshakes: HashMap<SessionId, CallerCrypto> = HashMap::new();
        let mut awaiting: HashMap<SessionId, Option<Admitted<G::Ticket>>> = HashMap::new();
        let mut connections: HashMap<SessionId, mpsc::Sender<(Packet, SocketAddr)>> =
            HashMap::new();
        let mut tasks = tokio::task::JoinSet::new();
        let mut stats_tick = tokio::time::interval(std::time::Duration::from_millis(100));
        let (mut garbage_seen, mut out) = (0, BytesMut::new());
        let mut buffer = vec![0u8; 65536];
        let is_ipv6 = self.local.is_ipv6();
        let mut input = Input::Timer;
        loop {
            let action = listener.handle_input(Instant::now(), input);
            let next = NextInputContext::for_action(&action);
            input = match action {
                Action::SendPacket(packet) => {
                    next.input_from(send(&self.socket, &mut out, &packet).await)
                }
                Action::RequestAccess(session, request) => {
                    // One decision per caller, taken in its own task: the listener waits
                    // for nothing while a gate (a hook) thinks.
                    if let std::collections::hash_map::Entry::Vacant(slot) = awaiting.entry(session)
                    {
                        slot.insert(None);
                        let crypto = handshakes.remove(&session);
                        tasks.spawn(decide(
                            gate.clone(),
                            permits.clone(),
                            session,
                            request,
                            crypto,
                            responses.clone(),
                        ));
                    }
                    next.input_from(Ok::<_, ()>(()))
                }
                Action::RejectConnection(session, packet) => {
                    if let Some(Some(admitted)) = awaiting.remove(&session) {
                        // Admitted by the gate, refused by the protocol: the caller's
                        // key material did not decrypt with the passphrase.
                        refused(&admitted.request, session.0, Refusal::BadSecret);
                    }
                    let sent = match packet {
                        Some(packet) => send(&self.socket, &mut out, &packet).await,
                        None => Ok(()),
                    };
                    next.input_from(sent)
                }
                Action::OpenConnection(session, opened) => {
                    let (packet, connection) = *opened;
                    let opened = match awaiting.remove(&session).flatten() {
                        Some(admitted) => {
                            let (tx, rx) = mpsc::channel(PACKETS_IN_FLIGHT);
                            connections.insert(session, tx);
                            tasks.spawn(run_connection(
                                connection,
                                admitted,
                                self.socket.clone(),
                                rx,
                                publications.clone(),
                            ));
                            match packet {
                                Some(packet) => send(&self.socket, &mut out, &packet).await,
                                None => Ok(()),
                            }
                        }
                        None => Err(()),
                    };
                    next.input_from(opened)
                }
                Action::DelegatePacket(session, packet) => {
                    let delegated = match connections.get(&session) {
                        Some(connection) if !connection.is_closed() => {
                            // A full queue drops the datagram: SRT asks for it again.
                            let _ = connection.try_send(packet);
                            Ok(())
                        }
                        // Gone: the listener forgets the caller, who may come back.
                        _ => {
                            connections.remove(&session);
                            Err(())
                        }
                    };
                    next.input_from(delegated)
                }
                Action::DropConnection(session) => {
                    connections.remove(&session);
                    next.input_from(Ok::<_, ()>(()))
                }
                Action::UpdateStatistics(stats) => {
                    count_garbage(stats, &mut garbage_seen);
                    next.input_from(Ok::<_, ()>(()))
                }
                Action::Close => break,
                Action::WaitForInput => tokio::select! {
                    received = self.socket.recv_from(&mut buffer) => match received {
                        Ok((n, from)) => match Packet::parse(&mut Cursor::new(&buffer[..n]), is_ipv6) {
                            Ok(packet) => match guard::to_listener(&packet) {
                                ToListener::Drop => {
                                    metrics::counter!("streamcdn_srt_garbage_packets_total").increment(1);
                                    Input::Timer
                                }
                                ToListener::Conclusion(crypto) => {
                                    if handshakes.len() >= HANDSHAKES_REMEMBERED {
                                        handshakes.clear();
                                    }
                                    handshakes.insert(SessionId(from), crypto);
                                    Input::Packet(Ok((packet, from)))
                                }
                                ToListener::Other => Input::Packet(Ok((packet, from))),
                            },
                            Err(e) => Input::Packet(Err(ReceivePacketError::Parse(e))),
                        },
                        // ICMP errors of earlier sends surface here; nothing to do.
                        Err(_) => Input::Timer,
                    },
                    Some((session, response)) = decided.recv() => {
                        let (response, admitted): (AccessControlResponse, Option<Admitted<G::Ticket>>) = response;
                        if let Some(slot) = awaiting.get_mut(&session) {
                            *slot = admitted;
                        }
                        if matches!(response, AccessControlResponse::Rejected(_)) {
                            awaiting.remove(&session);
                        }
                        Input::AccessResponse(Some((session, response)))
                    }
                    _ = stats_tick.tick() => Input::Timer,
                    Some(_) = tasks.join_next(), if !tasks.is_empty() => Input::Timer,
                    _ = shutdown.changed() => break,
                    () = publications.closed() => break,
                },
            };
        }
        // Open connections end when their queues close: each sends its shutdown.
        connections.clear();
        while tasks.join_next().await.is_some() {}
    }
}

type Decision<T> = (SessionId, (AccessControlResponse, Option<Admitted<T>>));

/// Decides one caller: its stream id, a connection slot, the gate, its encryption
/// against the provider's, then (without encryption) the gate's confirmation.
async fn decide<G: Gate>(
    gate: Arc<G>,
    permits: Arc<Semaphore>,
    session: SessionId,
    request: AccessControlRequest,
    crypto: Option<CallerCrypto>,
    responses: mpsc::Sender<Decision<G::Ticket>>,
) {
    let peer = session.0;
    let decision = async {
        let asked =
            PublishRequest::parse(request.stream_id.as_ref().map(|s| s.as_str())).map_err(|e| {
                tracing::info!(%peer, error = %e, "SRT caller refused: bad streamid");
                (None, Refusal::from(&e))
            })?;
        let refuse = |refusal| (Some(asked.clone()), refusal);
        let permit = permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| refuse(Refusal::Overload))?;
        let admission = gate.admit(&asked, peer).await.map_err(refuse)?;
        // Not seen (forgotten in a flood): refused rather than guessed.
        let crypto = crypto.ok_or_else(|| refuse(Refusal::BadRequest))?;
        let keys =
            guard::key_settings(request.key_size, crypto, admission.passphrase).map_err(refuse)?;
        let ticket = match keys {
            None => Some(gate.confirm(&asked, peer).await.map_err(refuse)?),
            Some(_) => None,
        };
        Ok((
            keys,
            Admitted {
                request: asked,
                permit,
                ticket,
            },
        ))
    };
    let response = match decision.await {
        Ok((keys, admitted)) => (AccessControlResponse::Accepted(keys), Some(admitted)),
        Err((asked, refusal)) => {
            if let Some(asked) = asked {
                refused(&asked, peer, refusal);
            } else {
                metrics::counter!("streamcdn_srt_refused_total", "reason" => refusal.label())
                    .increment(1);
            }
            (
                AccessControlResponse::Rejected(refusal.reject_reason()),
                None,
            )
        }
    };
    let _ = responses.send((session, response)).await;
}

fn refused(asked: &PublishRequest, peer: SocketAddr, refusal: Refusal) {
    tracing::info!(
        provider = asked.provider,
        stream = asked.stream,
        %peer,
        reason = refusal.label(),
        "SRT publisher refused"
    );
    metrics::counter!("streamcdn_srt_refused_total", "reason" => refusal.label()).increment(1);
}

async fn send(
    socket: &UdpSocket,
    out: &mut BytesMut,
    (packet, to): &(Packet, SocketAddr),
) -> Result<(), ()> {
    out.clear();
    packet.serialize(out);
    socket.send_to(out, *to).await.map(drop).map_err(drop)
}

/// Datagrams that are not SRT: counted, and dropped by the protocol.
fn count_garbage(stats: &ListenerStatistics, seen: &mut u64) {
    if stats.rx_parse_errors > *seen {
        metrics::counter!("streamcdn_srt_garbage_packets_total")
            .increment(stats.rx_parse_errors - *seen);
        *seen = stats.rx_parse_errors;
    }
}

/// One admitted caller: its connection's state machine, fed the datagrams the
/// listener routes to it, its payloads handed to the consumer in order.
async fn run_connection<T: Send + 'static>(
    connection: Connection,
    admitted: Admitted<T>,
    socket: Arc<UdpSocket>,
    mut packets: mpsc::Receiver<(Packet, SocketAddr)>,
    publications: mpsc::Sender<Publication<T>>,
) {
    let Admitted {
        request,
        permit,
        ticket,
    } = admitted;
    let peer = connection.settings.remote;
    let encrypted = connection.settings.cipher.is_some();
    let (chunks, receiver) = mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    let (stats, stats_receiver) = watch::channel(ConnectionStats {
        encrypted,
        ..ConnectionStats::default()
    });
    let publication = Publication {
        provider: request.provider.clone(),
        stream: request.stream.clone(),
        key: request.key.clone(),
        peer,
        chunks: receiver,
        stats: stats_receiver,
        ticket,
    };
    if publications.send(publication).await.is_err() {
        return;
    }
    tracing::info!(provider = request.provider, stream = request.stream, %peer, encrypted, "SRT publisher connected");
    metrics::gauge!("streamcdn_srt_publishers").increment(1.0);
    let mut connection = DuplexConnection::new(connection);
    let mut reported = Reported::default();
    let mut out = BytesMut::new();
    let mut consumer_gone = false;
    while connection.is_open() {
        let now = Instant::now();
        if connection.should_update_statistics(now) {
            reported.update(connection.statistics());
            stats.send_modify(|s| s.update(connection.statistics()));
        }
        while let Some(packet) = connection.next_packet(now) {
            let _ = send(&socket, &mut out, &packet).await;
        }
        while let Some((_, payload)) = connection.next_data(now) {
            if !consumer_gone && chunks.send(payload).await.is_err() {
                consumer_gone = true;
            }
        }
        if consumer_gone {
            // Nobody takes the stream any more: tell the caller, then stop.
            connection.handle_data_input(Instant::now(), None);
        }
        let wake = connection.check_timers(Instant::now());
        tokio::select! {
            () = tokio::time::sleep_until(wake.into()) => {}
            packet = packets.recv() => match packet {
                Some(packet) if guard::to_connection(&packet.0) => {
                    connection.handle_packet_input(Instant::now(), Ok(packet));
                }
                Some(_) => metrics::counter!("streamcdn_srt_garbage_packets_total").increment(1),
                // The listener is closing.
                None => break,
            },
        }
    }
    let stats = connection.statistics().clone();
    reported.update(&stats);
    drop(permit);
    metrics::gauge!("streamcdn_srt_publishers").decrement(1.0);
    tracing::info!(
        provider = request.provider,
        stream = request.stream,
        %peer,
        bytes = stats.rx_bytes,
        lost = stats.rx_loss_data,
        retransmitted = stats.rx_retransmit_data,
        dropped = stats.rx_dropped_data,
        "SRT publisher left"
    );
}

impl ConnectionStats {
    fn update(&mut self, stats: &SocketStatistics) {
        self.rtt = stats.rx_average_rtt;
        self.received_bytes = stats.rx_bytes;
        self.lost_packets = stats.rx_loss_data;
        self.retransmitted_packets = stats.rx_retransmit_data;
        self.dropped_packets = stats.rx_dropped_data;
    }
}

/// Totals of one connection already added to the process's counters.
#[derive(Default)]
struct Reported {
    bytes: u64,
    lost: u64,
    retransmitted: u64,
    dropped: u64,
}

impl Reported {
    fn update(&mut self, stats: &SocketStatistics) {
        fn add(name: &'static str, reported: &mut u64, total: u64) {
            if total > *reported {
                metrics::counter!(name).increment(total - *reported);
                *reported = total;
            }
        }
        add(
            "streamcdn_srt_received_bytes_total",
            &mut self.bytes,
            stats.rx_bytes,
        );
        add(
            "streamcdn_srt_lost_packets_total",
            &mut self.lost,
            stats.rx_loss_data,
        );
        add(
            "streamcdn_srt_retransmitted_packets_total",
            &mut self.retransmitted,
            stats.rx_retransmit_data,
        );
        add(
            "streamcdn_srt_dropped_packets_total",
            &mut self.dropped,
            stats.rx_dropped_data,
        );
        metrics::histogram!("streamcdn_srt_rtt_seconds").record(stats.rx_average_rtt.as_secs_f64());
    }
}
