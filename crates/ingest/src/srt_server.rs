//! SRT publishers: the ingest's [`Gate`] (stream keys checked as for RTMP, the
//! provider's passphrase) over the transport in `streamcdn-srt`, and the consumer of
//! what it admits.
//!
//! Seam: an admitted publication is `provider/stream`, its key and its MPEG-TS bytes in
//! order. Until the MPEG-TS publisher lands (issue #22, part 1: branch `media-ts`,
//! `ts_ingest::TsPublisher`), `drain` only counts those bytes and says so in the log:
//! nothing is recorded yet. Wiring it: `TsPublisher::begin(&hub, &recorder,
//! TsPublishRequest { provider, stream, key, client: peer, protocol: "srt" })`, then
//! `push` each chunk and `finish`; a refusal there (hook, claim) drops the publication,
//! which closes the caller's connection.

use std::net::SocketAddr;
use std::sync::Arc;

use streamcdn_recording::Recording;
use streamcdn_srt::{Admission, Gate, Publication, PublishRequest, Refusal};
pub use streamcdn_srt::{SrtError, SrtServer, SrtSettings};
use tokio::sync::{mpsc, watch};

use crate::hub::{PublishError, StreamHub};

/// Admits an SRT caller as the RTMP path admits a publisher: a known provider, a valid
/// stream name, a key that opens it, and the stream not live already.
pub struct IngestGate {
    pub hub: Arc<StreamHub>,
}

impl Gate for IngestGate {
    async fn admit(
        &self,
        request: &PublishRequest,
        peer: SocketAddr,
    ) -> Result<Admission, Refusal> {
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

/// Serves SRT publishers on `server` until `shutdown` flips to true.
pub async fn serve(
    server: SrtServer,
    hub: Arc<StreamHub>,
    settings: SrtSettings,
    shutdown: watch::Receiver<bool>,
) {
    let (publications, admitted) = mpsc::channel(16);
    let gate = Arc::new(IngestGate { hub });
    tokio::join!(
        server.serve(gate, settings, publications, shutdown),
        consume(admitted)
    );
}

/// Takes what the SRT listener admits until it stops.
async fn consume(mut publications: mpsc::Receiver<Publication>) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            publication = publications.recv() => match publication {
                Some(publication) => { tasks.spawn(drain(publication)); }
                None => break,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    while tasks.join_next().await.is_some() {}
}

async fn drain(mut publication: Publication) {
    tracing::warn!(
        provider = publication.provider,
        stream = publication.stream,
        peer = %publication.peer,
        "SRT publisher admitted, but MPEG-TS is not published yet (the TS demuxer is not wired): its bytes are counted and dropped"
    );
    let mut bytes = 0u64;
    while let Some(chunk) = publication.chunks.recv().await {
        bytes += chunk.len() as u64;
    }
    tracing::info!(
        provider = publication.provider,
        stream = publication.stream,
        bytes,
        "SRT publisher left"
    );
}
