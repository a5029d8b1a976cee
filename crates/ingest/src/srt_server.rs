//! SRT publishers: the ingest's [`Gate`] (stream keys checked as for RTMP, the
//! provider's passphrase) over the transport in `streamcdn-srt`, and the consumer of
//! what it admits.
//!
//! Each admitted publication (provider, stream, key, its MPEG-TS bytes in order) is
//! published through [`TsPublisher`], as every MPEG-TS protocol is. A caller without
//! encryption is begun in the handshake ([`Gate::confirm`]), so that a refusal there
//! (the provider's hook, another server holding the stream) rejects the handshake; an
//! encrypting caller's passphrase is checked by the protocol once the handshake is
//! accepted, so it is begun after, and a refusal then closes its connection.

use std::net::SocketAddr;
use std::sync::Arc;

use streamcdn_recording::Recording;
use streamcdn_srt::{Admission, ConnectionStats, Gate, Publication, PublishRequest, Refusal};
pub use streamcdn_srt::{SrtError, SrtServer, SrtSettings};
use tokio::sync::{mpsc, watch};

use crate::hub::{PublishError, StreamHub};
use crate::recorder::Recorder;
use crate::ts_ingest::{TsPublishRequest, TsPublisher};

/// Admits an SRT caller as the RTMP path admits a publisher: a known provider, a valid
/// stream name, a key that opens it, and the stream not live already; nobody while the
/// server is being drained (as its RTMP listener closes).
pub struct IngestGate {
    pub hub: Arc<StreamHub>,
    pub recorder: Recorder,
    pub drain: watch::Receiver<bool>,
}

/// A publish begun in the handshake, until its publication takes it; finished (an
/// end, with whatever it recorded) if the connection never opened.
pub struct Begun(Option<TsPublisher>);

impl Drop for Begun {
    fn drop(&mut self) {
        if let (Some(publisher), Ok(runtime)) =
            (self.0.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(publisher.finish(false));
        }
    }
}

impl Gate for IngestGate {
    type Ticket = Begun;

    /// Begins the publish (the slot, the takeover decision, the provider's
    /// `on_publish` hook, the recording): refused, the handshake is rejected.
    async fn confirm(&self, request: &PublishRequest, peer: SocketAddr) -> Result<Begun, Refusal> {
        let begun = TsPublisher::begin(
            &self.hub,
            &self.recorder,
            ts_request(
                &request.provider,
                &request.stream,
                request.key.as_deref(),
                peer,
            ),
        )
        .await;
        begun.map(|p| Begun(Some(p))).map_err(|e| refusal(&e))
    }

    async fn admit(
        &self,
        request: &PublishRequest,
        peer: SocketAddr,
    ) -> Result<Admission, Refusal> {
        if *self.drain.borrow() {
            tracing::info!(provider = request.provider, stream = request.stream, %peer, "SRT publish refused: draining");
            return Err(Refusal::Draining);
        }
        let authorized = self
            .hub
            .authorize_stream(&request.provider, &request.stream, request.key.as_deref())
            .await;
        let (provider, name, _) = authorized.map_err(|e| {
            tracing::warn!(provider = request.provider, stream = request.stream, %peer, error = %e, "SRT publish refused");
            refusal(&e)
        })?;
        if self
            .hub
            .stream(&name)
            .is_some_and(|s| s.with_recording(Recording::is_live))
        {
            tracing::warn!(stream = %name, %peer, "SRT publish refused: already live");
            return Err(Refusal::Conflict);
        }
        Ok(Admission {
            passphrase: provider.srt_passphrase,
        })
    }
}

/// What an SRT caller asks to publish, as every MPEG-TS protocol names it.
fn ts_request<'a>(
    provider: &'a str,
    stream: &'a str,
    key: Option<&'a str>,
    client: SocketAddr,
) -> TsPublishRequest<'a> {
    TsPublishRequest {
        provider,
        stream,
        key,
        client,
        protocol: "srt",
    }
}

/// An SRT connection's statistics as the live list shows them.
fn transport_json(stats: &ConnectionStats) -> serde_json::Value {
    serde_json::json!({
        "rtt_ms": (stats.rtt.as_secs_f64() * 1e4).round() / 10.0,
        "received_bytes": stats.received_bytes,
        "lost_packets": stats.lost_packets,
        "retransmitted_packets": stats.retransmitted_packets,
        "dropped_packets": stats.dropped_packets,
        "encrypted": stats.encrypted,
    })
}

fn refusal(e: &PublishError) -> Refusal {
    match e {
        PublishError::UnknownProvider(_) => Refusal::NotFound,
        PublishError::InvalidStreamName(_) => Refusal::BadRequest,
        PublishError::MissingKey => Refusal::Unauthorized,
        PublishError::WrongKey | PublishError::Denied(_) => Refusal::Forbidden,
        PublishError::AlreadyLive(_) | PublishError::HeldElsewhere(..) => Refusal::Conflict,
        PublishError::Storage(_) => Refusal::Internal,
    }
}

/// Serves SRT publishers on `server` until `shutdown` flips to true. A publish that
/// ends once `drain` is true is interrupted, not ended (see `publish::finish`).
pub async fn serve(
    server: SrtServer,
    hub: Arc<StreamHub>,
    recorder: Recorder,
    settings: SrtSettings,
    drain: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
) {
    let (publications, admitted) = mpsc::channel(16);
    let gate = Arc::new(IngestGate {
        hub: hub.clone(),
        recorder: recorder.clone(),
        drain: drain.clone(),
    });
    tokio::join!(
        server.serve(gate, settings, publications, shutdown),
        consume(admitted, hub, recorder, drain)
    );
}

/// Takes what the SRT listener admits until it stops.
async fn consume(
    mut publications: mpsc::Receiver<Publication<Begun>>,
    hub: Arc<StreamHub>,
    recorder: Recorder,
    drain: watch::Receiver<bool>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            publication = publications.recv() => match publication {
                Some(publication) => {
                    tasks.spawn(publish(publication, hub.clone(), recorder.clone(), drain.clone()));
                }
                None => break,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    while tasks.join_next().await.is_some() {}
}

async fn publish(
    mut publication: Publication<Begun>,
    hub: Arc<StreamHub>,
    recorder: Recorder,
    drain: watch::Receiver<bool>,
) {
    let begun = publication
        .ticket
        .take()
        .and_then(|mut begun| begun.0.take());
    let mut publisher = match begun {
        Some(publisher) => publisher,
        None => {
            // An encrypting caller: begun now. Refusals are logged and counted by
            // `begin`; dropping the publication closes the connection.
            let request = ts_request(
                &publication.provider,
                &publication.stream,
                publication.key.as_deref(),
                publication.peer,
            );
            let Ok(publisher) = TsPublisher::begin(&hub, &recorder, request).await else {
                return;
            };
            publisher
        }
    };
    let stats = publication.stats.clone();
    publisher.report_transport(Arc::new(move || transport_json(&stats.borrow())));
    while let Some(chunk) = publication.chunks.recv().await {
        publisher.push(&chunk).await;
    }
    let draining = *drain.borrow();
    publisher.finish(draining).await;
}
