//! The policy's types: what the listener is told ([`SrtSettings`]), who decides
//! ([`Gate`]), how a caller is refused ([`Refusal`], mapped to SRT rejection codes) and
//! what an admitted one yields ([`Publication`]).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use srt_protocol::packet::{CoreRejectReason, RejectReason, ServerRejectReason};
use tokio::sync::{mpsc, watch};

use crate::stream_id::{PublishRequest, StreamIdError};

#[derive(Debug, Clone)]
pub struct SrtSettings {
    /// Receive latency (TSBPD): how long SRT may spend recovering a lost packet. The
    /// larger of this and the caller's is used.
    pub latency: Duration,
    pub max_connections: usize,
}

/// Why a caller is refused; each is an SRT rejection code the caller reports (ffmpeg
/// and `srt-live-transmit` print it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The streamid does not name a publication (`SRT_REJX_BAD_REQUEST`, 1400).
    BadRequest,
    /// No stream key (`SRT_REJX_UNAUTHORIZED`, 1401).
    Unauthorized,
    /// Too many publishers on this server (`SRT_REJX_OVERLOAD`, 1402).
    Overload,
    /// This server is being drained and takes no new publisher (`SRT_REJX_OVERLOAD`,
    /// 1402: try another; the router's ingest name no longer answers with it).
    Draining,
    /// A wrong stream key, or the provider's hook said no (`SRT_REJX_FORBIDDEN`, 1403).
    Forbidden,
    /// No such provider (`SRT_REJX_NOTFOUND`, 1404).
    NotFound,
    /// Not `m=publish` (`SRT_REJX_BAD_MODE`, 1405).
    BadMode,
    /// The stream is live already (`SRT_REJX_CONFLICT`, 1409).
    Conflict,
    /// One side encrypts and the other does not (`SRT_REJ_UNSECURE`, as libsrt
    /// answers it).
    Unsecure,
    /// The caller's key material does not match the provider's passphrase or its own
    /// key length (`SRT_REJ_BADSECRET`).
    BadSecret,
    /// This server cannot take it (`SRT_REJX_ISE`, 1500).
    Internal,
}

impl Refusal {
    pub(crate) fn reject_reason(self) -> RejectReason {
        use ServerRejectReason as S;
        match self {
            Refusal::BadRequest => S::BadRequest.into(),
            Refusal::Unauthorized => S::Unauthorized.into(),
            Refusal::Overload | Refusal::Draining => S::Overload.into(),
            Refusal::Forbidden => S::Forbidden.into(),
            Refusal::NotFound => S::Notfound.into(),
            Refusal::BadMode => S::BadMode.into(),
            Refusal::Conflict => S::Conflict.into(),
            Refusal::Unsecure => CoreRejectReason::Unsecure.into(),
            Refusal::BadSecret => CoreRejectReason::BadSecret.into(),
            Refusal::Internal => S::InternalServerError.into(),
        }
    }

    /// The `reason` label of `streamcdn_srt_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::BadRequest => "bad_request",
            Refusal::Unauthorized => "missing_key",
            Refusal::Overload => "overload",
            Refusal::Draining => "draining",
            Refusal::Forbidden => "forbidden",
            Refusal::NotFound => "unknown_provider",
            Refusal::BadMode => "bad_mode",
            Refusal::Conflict => "already_live",
            Refusal::Unsecure => "unsecure",
            Refusal::BadSecret => "passphrase",
            Refusal::Internal => "internal",
        }
    }
}

impl From<&StreamIdError> for Refusal {
    fn from(e: &StreamIdError) -> Refusal {
        if e.is_unsupported_mode() {
            Refusal::BadMode
        } else {
            Refusal::BadRequest
        }
    }
}

/// Admitted: the passphrase the caller must encrypt with (the provider's), if any.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    pub passphrase: Option<String>,
}

/// Decides, during the handshake, whether a caller may publish what it asked for.
pub trait Gate: Send + Sync + 'static {
    /// What [`Gate::confirm`] begins for a caller (the ingest: its publish, the
    /// provider's hook asked); handed to the consumer with the publication, or dropped
    /// if the connection then fails to open.
    type Ticket: Send + 'static;

    /// The caller's stream, key and provider: refused, or admitted with the passphrase
    /// its encryption must match.
    fn admit(
        &self,
        request: &PublishRequest,
        peer: SocketAddr,
    ) -> impl Future<Output = Result<Admission, Refusal>> + Send;

    /// The last word on a caller admitted without encryption, asked once nothing else
    /// in the handshake can refuse it, so that a refusal here (a provider's hook) is
    /// still a handshake rejection. An encrypting caller's key is checked by the
    /// protocol only after the handshake is accepted: it is never confirmed, and its
    /// publication comes without a ticket.
    fn confirm(
        &self,
        request: &PublishRequest,
        peer: SocketAddr,
    ) -> impl Future<Output = Result<Self::Ticket, Refusal>> + Send;
}

/// One connection's transport as SRT measured it, refreshed while it lives (about once
/// a second): what operators look at when a publisher's link is bad.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ConnectionStats {
    /// Smoothed round-trip time.
    pub rtt: Duration,
    pub received_bytes: u64,
    /// Data packets found missing (before any retransmission).
    pub lost_packets: u64,
    /// Retransmitted data packets received.
    pub retransmitted_packets: u64,
    /// Data packets given up as too late to play.
    pub dropped_packets: u64,
    /// Whether the connection is encrypted.
    pub encrypted: bool,
}

/// An admitted publisher: `provider/stream` and its payload, the MPEG-TS bytes in the
/// order sent; `chunks` ends when it leaves (dropping it ends the connection).
pub struct Publication<T = ()> {
    pub provider: String,
    pub stream: String,
    /// The key it presented, which the gate accepted: for a consumer that opens the
    /// stream through the same checks (hooks, claims), as any other publisher does.
    pub key: Option<String>,
    pub peer: SocketAddr,
    pub chunks: mpsc::Receiver<Bytes>,
    /// The connection's statistics, as they change.
    pub stats: watch::Receiver<ConnectionStats>,
    /// What the gate's [`Gate::confirm`] began, for a caller without encryption.
    pub ticket: Option<T>,
}
