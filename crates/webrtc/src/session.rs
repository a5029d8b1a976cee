//! One receiving peer: a str0m `Rtc` in ICE-lite and RTP mode, answering an offer with
//! H.264 and Opus only, and what comes out of it as this crate's values (raw RTP
//! packets per track, loss and feedback counts, why it ended). Sans-IO: the server
//! feeds it datagrams and time and sends what it gives back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use str0m::change::SdpOffer;
use str0m::config::DtlsCert;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid, Pt};
use str0m::net::Transmit;
use str0m::rtp::Ssrc;
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

use crate::error::WebRtcError;

/// Which media an RTP packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Track {
    /// H.264 (RFC 6184 payloads).
    Video,
    /// Opus (RFC 7587 payloads).
    Audio,
}

/// One received RTP packet, decrypted, retransmissions (RTX) already folded back into
/// the original stream, in arrival order (not reordered).
#[derive(Debug, Clone)]
pub struct RtpIn {
    pub track: Track,
    pub sequence: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Bytes,
    pub arrival: Instant,
}

/// What the offer brought that the answer accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OfferedTracks {
    /// An H.264 video track.
    pub video: bool,
    /// An Opus audio track and its channel count (2 when the offer asks for stereo).
    pub audio_channels: Option<u8>,
}

/// A session's counts so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionStats {
    /// RTP packets received (retransmissions included).
    pub packets: u64,
    /// Packets never received: the sequence numbers' span less what arrived, per source
    /// (RFC 3550's cumulative loss).
    pub lost: u64,
    /// NACK feedback sent (str0m asks for lost packets when the offer negotiated it).
    pub nacks: u64,
    /// Keyframe requests (PLI) sent.
    pub plis: u64,
    /// Packets the consumer was too slow to take, dropped here (a gap to it).
    pub dropped: u64,
}

/// One frame for a viewer (a sending session).
#[derive(Debug, Clone)]
pub struct OutFrame {
    pub track: Track,
    /// In the track's RTP clock: 90 kHz for video (presentation time), 48 kHz for Opus.
    pub rtp_time: u64,
    /// This host's time of that instant (RTCP sender reports map `rtp_time` to it; the
    /// same mapping for both tracks keeps them in sync).
    pub wallclock: Instant,
    pub keyframe: bool,
    /// H.264: the access unit in Annex B (start codes), its SPS and PPS before a
    /// keyframe; Opus: one packet.
    pub data: Bytes,
}

/// A sending session's counts so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SendStats {
    /// ICE and DTLS are up: frames written from now on reach the viewer.
    pub connected: bool,
    /// Frames handed to the packetizer.
    pub frames: u64,
    /// RTP payload bytes sent (retransmissions included), as str0m counts them.
    pub bytes: u64,
    /// NACKs received (each answered from str0m's send buffer when still there).
    pub nacks: u64,
    /// Keyframe requests received (PLI and FIR): the viewer skips to the next keyframe.
    pub plis: u64,
    /// Video frames not sent: before the connection, or skipped waiting for a keyframe.
    pub dropped_frames: u64,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The publisher asked (WHIP `DELETE`).
    Deleted,
    /// ICE consent was lost (no more connectivity checks) or the peer closed DTLS.
    Disconnected,
    /// No media for the inactivity timeout.
    Inactive,
    /// The server is shutting down.
    Shutdown,
    /// The protocol failed (a DTLS or SRTP error).
    Failed(String),
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndReason::Deleted => f.write_str("deleted by the client"),
            EndReason::Disconnected => f.write_str("ICE or DTLS disconnected"),
            EndReason::Inactive => f.write_str("no media for the inactivity timeout"),
            EndReason::Shutdown => f.write_str("server shutting down"),
            EndReason::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

impl EndReason {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            EndReason::Deleted => "deleted",
            EndReason::Disconnected => "disconnected",
            EndReason::Inactive => "inactive",
            EndReason::Shutdown => "shutdown",
            EndReason::Failed(_) => "failed",
        }
    }
}

/// The least time between two keyframe requests: a decoder waiting for a keyframe asks
/// on every frame, the encoder needs one request.
const PLI_INTERVAL: Duration = Duration::from_millis(500);

/// What answers offers: the server's DTLS certificate (one for all sessions) and its
/// ICE candidates.
#[derive(Clone)]
pub struct Answerer {
    cert: DtlsCert,
    candidates: Arc<[SocketAddr]>,
}

impl Answerer {
    /// An answerer naming `candidates` (host candidates: the server's public addresses
    /// with the socket's port).
    pub fn new(candidates: Vec<SocketAddr>) -> Result<Self, WebRtcError> {
        let provider = str0m::crypto::from_feature_flags();
        let cert = provider
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| WebRtcError::Setup("cannot generate a DTLS certificate".into()))?;
        for c in &candidates {
            Candidate::host(*c, "udp")
                .map_err(|e| WebRtcError::Setup(format!("candidate {c}: {e}")))?;
        }
        Ok(Self {
            cert,
            candidates: candidates.into(),
        })
    }

    pub fn candidates(&self) -> &[SocketAddr] {
        &self.candidates
    }

    /// Checks an offer as [`Answerer::answer`] would, without keeping the session (for
    /// the fuzzer and tests).
    pub fn check(&self, offer: &str) -> Result<OfferedTracks, WebRtcError> {
        self.answer(offer, Instant::now()).map(|(s, _)| s.tracks)
    }

    /// Accepts a publisher's offer: its media received (sendonly or sendrecv offers),
    /// H.264 and Opus only, raw RTP out (RTP mode). Returns the session and the SDP
    /// answer.
    pub(crate) fn answer(
        &self,
        offer: &str,
        now: Instant,
    ) -> Result<(Session, String), WebRtcError> {
        self.negotiate(offer, now, true)
    }

    /// Accepts a viewer's offer (WHEP): H.264 video and Opus audio sent to it (recvonly
    /// or sendrecv offers), in str0m's frame mode: str0m packetizes each frame, keeps
    /// what it sent to answer NACKs (RTX when negotiated) and sends sender reports.
    pub(crate) fn answer_viewer(
        &self,
        offer: &str,
        now: Instant,
    ) -> Result<(Session, String), WebRtcError> {
        let (mut session, answer) = self.negotiate(offer, now, false)?;
        session.sending = Some(Sending::default());
        Ok((session, answer))
    }

    /// Checks a viewer's offer as a WHEP `POST` would (for the fuzzer and tests).
    pub fn check_viewer(&self, offer: &str) -> Result<OfferedTracks, WebRtcError> {
        self.answer_viewer(offer, Instant::now())
            .map(|(s, _)| s.tracks)
    }

    fn negotiate(
        &self,
        offer: &str,
        now: Instant,
        rtp_mode: bool,
    ) -> Result<(Session, String), WebRtcError> {
        let parsed =
            SdpOffer::from_sdp_string(offer).map_err(|e| WebRtcError::BadOffer(e.to_string()))?;
        let mut rtc = RtcConfig::new()
            .set_ice_lite(true)
            .set_rtp_mode(rtp_mode)
            .set_dtls_cert(self.cert.clone())
            .clear_codecs()
            .enable_h264(true)
            .enable_opus(true, false)
            .set_stats_interval(Some(Duration::from_secs(1)))
            .build(now);
        for c in self.candidates.iter() {
            if let Ok(candidate) = Candidate::host(*c, "udp") {
                rtc.add_local_candidate(candidate);
            }
        }
        let answer = rtc
            .sdp_api()
            .accept_offer(parsed)
            .map_err(|e| WebRtcError::BadOffer(e.to_string()))?
            .to_sdp_string();
        let tracks = accepted_tracks(offer, &answer);
        if !tracks.video && tracks.audio_channels.is_none() {
            return Err(WebRtcError::NoMedia);
        }
        Ok((Session::new(rtc, tracks, now), answer))
    }
}

/// The sending half of a session (WHEP).
#[derive(Debug, Default)]
pub(crate) struct Sending {
    /// Each track's media section and payload type (found on the first frame).
    mids: HashMap<Track, (Mid, Option<Pt>)>,
    /// Video waits for a keyframe: at the start, after a keyframe request, after a frame
    /// that could not be sent.
    waiting_keyframe: bool,
    nacks_by_mid: HashMap<Mid, u64>,
    bytes_by_mid: HashMap<Mid, u64>,
    pub(crate) stats: SendStats,
}

/// The payload type to send `track` with: H.264 in packetization mode 1 (every browser
/// offers it) else any H.264; Opus.
fn pick_pt<'a>(
    track: Track,
    params: impl Iterator<Item = &'a str0m::format::PayloadParams>,
) -> Option<Pt> {
    let mut fallback = None;
    for p in params {
        let spec = p.spec();
        match (track, spec.codec) {
            (Track::Video, Codec::H264) if spec.format.packetization_mode == Some(1) => {
                return Some(p.pt())
            }
            (Track::Video, Codec::H264) => {
                fallback.get_or_insert(p.pt());
            }
            (Track::Audio, Codec::Opus) => return Some(p.pt()),
            _ => {}
        }
    }
    fallback
}

/// The media sections the answer accepted (a port other than 0, a codec of ours);
/// Opus's channel count from the offer's `stereo=1`.
fn accepted_tracks(offer: &str, answer: &str) -> OfferedTracks {
    let mut tracks = OfferedTracks::default();
    let mut section: Option<&str> = None;
    let mut open = false;
    for line in answer.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            let mut words = m.split_whitespace();
            section = words.next();
            open = words.next().is_some_and(|port| port != "0");
            continue;
        }
        let Some(codec) = line.strip_prefix("a=rtpmap:") else {
            continue;
        };
        let codec = codec.to_ascii_lowercase();
        if !open || line.contains("inactive") {
            continue;
        }
        match section {
            Some("video") if codec.contains(" h264/") => tracks.video = true,
            Some("audio") if codec.contains(" opus/") => {
                let stereo = offer
                    .lines()
                    .any(|l| l.starts_with("a=fmtp:") && l.contains("stereo=1"));
                tracks.audio_channels = Some(if stereo { 2 } else { 1 });
            }
            _ => {}
        }
    }
    tracks
}

/// The per-source counts behind [`SessionStats::lost`].
#[derive(Debug, Clone, Copy)]
struct Span {
    first: u64,
    highest: u64,
    received: u64,
}

impl Span {
    fn lost(&self) -> u64 {
        (self.highest - self.first + 1).saturating_sub(self.received)
    }
}

pub(crate) struct Session {
    rtc: Rtc,
    pub(crate) tracks: OfferedTracks,
    kinds: HashMap<Mid, Track>,
    sources: HashMap<Ssrc, Track>,
    spans: HashMap<Ssrc, Span>,
    nacks_by_mid: HashMap<Mid, u64>,
    pub(crate) stats: SessionStats,
    video_source: Option<Ssrc>,
    keyframe_wanted: bool,
    last_pli: Option<Instant>,
    pub(crate) next_timeout: Instant,
    pub(crate) last_media: Instant,
    /// `Some` for a viewer's session (WHEP): what it sends.
    pub(crate) sending: Option<Sending>,
}

/// What one poll of a session gave besides datagrams to send.
pub(crate) enum Happened {
    Media(RtpIn),
    /// A sending session's connection is up (or its counts changed notably).
    SendStats(SendStats),
    Ended(EndReason),
}

impl Session {
    fn new(rtc: Rtc, tracks: OfferedTracks, now: Instant) -> Self {
        Self {
            rtc,
            tracks,
            kinds: HashMap::new(),
            sources: HashMap::new(),
            spans: HashMap::new(),
            nacks_by_mid: HashMap::new(),
            stats: SessionStats::default(),
            video_source: None,
            // The first keyframe is asked for as soon as video flows: a publisher's
            // encoder may have started before the connection was up.
            keyframe_wanted: true,
            last_pli: None,
            next_timeout: now,
            last_media: now,
            sending: None,
        }
    }

    /// Sends a frame to the viewer (a sending session; ignored otherwise). Video waits
    /// for a keyframe whenever the viewer could not decode what follows: before the
    /// connection is up, after the viewer asked for one (PLI, FIR: the feed cannot make
    /// the publisher send one, so this viewer skips to the next), after a failed write.
    pub(crate) fn write(&mut self, frame: OutFrame) {
        let Some(sending) = self.sending.as_mut() else {
            return;
        };
        let video = frame.track == Track::Video;
        if !sending.stats.connected {
            if video {
                sending.stats.dropped_frames += 1;
                sending.waiting_keyframe = true;
            }
            return;
        }
        if video && sending.waiting_keyframe && !frame.keyframe {
            sending.stats.dropped_frames += 1;
            return;
        }
        let Some((mid, pt)) = sending.mids.get(&frame.track).copied() else {
            // The viewer did not take this track.
            return;
        };
        let Some(writer) = self.rtc.writer(mid) else {
            return;
        };
        let pt = match pt {
            Some(pt) => pt,
            None => match pick_pt(frame.track, writer.payload_params()) {
                Some(pt) => {
                    sending.mids.insert(frame.track, (mid, Some(pt)));
                    pt
                }
                None => return,
            },
        };
        let frequency = match frame.track {
            Track::Video => Frequency::NINETY_KHZ,
            Track::Audio => Frequency::FORTY_EIGHT_KHZ,
        };
        let time = MediaTime::new(frame.rtp_time, frequency);
        match writer.write(pt, frame.wallclock, time, &frame.data[..]) {
            Ok(()) => {
                sending.stats.frames += 1;
                if video && frame.keyframe {
                    sending.waiting_keyframe = false;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "WebRTC write failed");
                if video {
                    sending.stats.dropped_frames += 1;
                    sending.waiting_keyframe = true;
                }
            }
        }
    }

    pub(crate) fn accepts(&self, input: &Input) -> bool {
        self.rtc.accepts(input)
    }

    /// Feeds a datagram or the time; an error ends the session.
    pub(crate) fn handle(&mut self, input: Input) -> Result<(), EndReason> {
        if let (Some(_), Input::Receive(at, _)) = (&self.sending, &input) {
            // A viewer sends no media: its RTCP and consent checks keep it alive.
            self.last_media = *at;
        }
        self.rtc
            .handle_input(input)
            .map_err(|e| EndReason::Failed(e.to_string()))
    }

    /// Asks the publisher for a keyframe (PLI), now if its video source is known, else
    /// on its first packet; at most once per [`PLI_INTERVAL`].
    pub(crate) fn request_keyframe(&mut self, now: Instant) {
        self.keyframe_wanted = true;
        self.send_pli(now);
    }

    fn send_pli(&mut self, now: Instant) {
        let Some(ssrc) = self.video_source else {
            return;
        };
        if self
            .last_pli
            .is_some_and(|at| now.saturating_duration_since(at) < PLI_INTERVAL)
        {
            return;
        }
        if let Some(stream) = self.rtc.direct_api().stream_rx(&ssrc) {
            stream.request_keyframe(KeyframeRequestKind::Pli);
            self.keyframe_wanted = false;
            self.last_pli = Some(now);
            self.stats.plis += 1;
        }
    }

    /// Starts closing (DTLS close_notify); the session is over for its consumer.
    pub(crate) fn close(&mut self) {
        let _ = self.rtc.close();
    }

    /// Drains the `Rtc`'s output: datagrams into `transmits`, media and the end into
    /// `happened`; sets `next_timeout`. Returns once str0m waits for input or time.
    pub(crate) fn poll(&mut self, transmits: &mut Vec<Transmit>, happened: &mut Vec<Happened>) {
        loop {
            if !self.rtc.is_alive() {
                happened.push(Happened::Ended(EndReason::Disconnected));
                return;
            }
            let output = match self.rtc.poll_output() {
                Ok(output) => output,
                Err(e) => {
                    happened.push(Happened::Ended(EndReason::Failed(e.to_string())));
                    return;
                }
            };
            match output {
                Output::Timeout(at) => {
                    self.next_timeout = at;
                    return;
                }
                Output::Transmit(t) => transmits.push(t),
                Output::Event(event) => {
                    if let Some(h) = self.event(event) {
                        let ended = matches!(h, Happened::Ended(_));
                        happened.push(h);
                        if ended {
                            return;
                        }
                    }
                }
            }
        }
    }

    fn event(&mut self, event: Event) -> Option<Happened> {
        if let Some(sending) = self.sending.as_mut() {
            return sending.event(event);
        }
        match event {
            Event::MediaAdded(added) => {
                let track = match added.kind {
                    MediaKind::Video => Track::Video,
                    MediaKind::Audio => Track::Audio,
                };
                self.kinds.insert(added.mid, track);
                None
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) | Event::Closed => {
                Some(Happened::Ended(EndReason::Disconnected))
            }
            Event::MediaIngressStats(s) => {
                self.nacks_by_mid.insert(s.mid, s.nacks);
                self.stats.nacks = self.nacks_by_mid.values().sum();
                None
            }
            Event::RtpPacket(packet) => {
                let ssrc = packet.header.ssrc;
                let track = self.track_of(ssrc)?;
                let now = packet.timestamp;
                self.last_media = now;
                self.stats.packets += 1;
                let seq = *packet.seq_no;
                let span = self.spans.entry(ssrc).or_insert(Span {
                    first: seq,
                    highest: seq,
                    received: 0,
                });
                span.first = span.first.min(seq);
                span.highest = span.highest.max(seq);
                span.received += 1;
                self.stats.lost = self.spans.values().map(Span::lost).sum();
                if track == Track::Video {
                    self.video_source = Some(ssrc);
                    if self.keyframe_wanted {
                        self.send_pli(now);
                    }
                }
                Some(Happened::Media(RtpIn {
                    track,
                    sequence: packet.header.sequence_number,
                    timestamp: packet.header.timestamp,
                    marker: packet.header.marker,
                    payload: Bytes::copy_from_slice(&packet.payload),
                    arrival: now,
                }))
            }
            _ => None,
        }
    }

    /// The track of a source, from its media section (the SDP's `a=ssrc` or the
    /// packets' MID extension, as str0m mapped it).
    fn track_of(&mut self, ssrc: Ssrc) -> Option<Track> {
        if let Some(track) = self.sources.get(&ssrc) {
            return Some(*track);
        }
        let mid = self.rtc.direct_api().stream_rx(&ssrc)?.mid();
        let track = match self.kinds.get(&mid) {
            Some(track) => *track,
            None => match self.rtc.media(mid)?.kind() {
                MediaKind::Video => Track::Video,
                MediaKind::Audio => Track::Audio,
            },
        };
        self.sources.insert(ssrc, track);
        Some(track)
    }
}

impl Sending {
    fn event(&mut self, event: Event) -> Option<Happened> {
        match event {
            Event::MediaAdded(added) => {
                let track = match added.kind {
                    MediaKind::Video => Track::Video,
                    MediaKind::Audio => Track::Audio,
                };
                if matches!(added.direction, Direction::SendOnly | Direction::SendRecv) {
                    self.mids.insert(track, (added.mid, None));
                }
                None
            }
            Event::Connected => {
                self.stats.connected = true;
                self.waiting_keyframe = true;
                Some(Happened::SendStats(self.stats))
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) | Event::Closed => {
                Some(Happened::Ended(EndReason::Disconnected))
            }
            Event::KeyframeRequest(_) => {
                self.stats.plis += 1;
                self.waiting_keyframe = true;
                None
            }
            Event::MediaEgressStats(s) => {
                self.nacks_by_mid.insert(s.mid, s.nacks);
                self.bytes_by_mid.insert(s.mid, s.bytes);
                self.stats.nacks = self.nacks_by_mid.values().sum();
                self.stats.bytes = self.bytes_by_mid.values().sum();
                None
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_tracks_read_the_answer() {
        let answer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
                      m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=rtpmap:102 H264/90000\r\n";
        let tracks = accepted_tracks("a=fmtp:111 minptime=10;useinbandfec=1\r\n", answer);
        assert_eq!(
            tracks,
            OfferedTracks {
                video: true,
                audio_channels: Some(1)
            }
        );
        let rejected = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
                        m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n";
        let tracks = accepted_tracks("a=fmtp:111 stereo=1\r\n", rejected);
        assert_eq!(
            tracks,
            OfferedTracks {
                video: false,
                audio_channels: Some(2)
            }
        );
    }

    #[test]
    fn loss_is_the_span_less_what_arrived() {
        let span = Span {
            first: 10,
            highest: 19,
            received: 7,
        };
        assert_eq!(span.lost(), 3);
        let late_duplicates = Span {
            first: 10,
            highest: 11,
            received: 5,
        };
        assert_eq!(late_duplicates.lost(), 0);
    }

    #[test]
    fn garbage_offers_are_refused() {
        let answerer = Answerer::new(vec!["127.0.0.1:9".parse().unwrap()]).unwrap();
        assert!(matches!(
            answerer.check("not sdp"),
            Err(WebRtcError::BadOffer(_))
        ));
        assert!(answerer.check("").is_err());
    }
}
