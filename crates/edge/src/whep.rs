//! WHEP playback (WebRTC-HTTP Egress Protocol) at any tier serving viewers.
//!
//! `POST /<provider>/<stream>/whep` with an SDP offer answers `201` with the SDP answer
//! and `Location: whep/<id>` (relative to the request, so a signed path's token stays
//! in it); `DELETE /<provider>/<stream>/whep/<id>` ends the session. Each viewer reads
//! the stream's low-latency feed on this tier ([`Edge::feed`], its audio in Opus when
//! the viewer takes audio: [`Edge::feed_with_opus`]), so the stream comes from upstream
//! once per tier however many viewers there are. The frames go to the viewer's session
//! on the shared WebRTC server ([`streamcdn_webrtc`]): H.264 as Annex B with SPS and
//! PPS before each keyframe, timed by the feed's 90 kHz presentation time; Opus timed
//! at 48 kHz. A viewer that cannot keep up falls behind the feed, which skips it to the
//! next keyframe. The session ends when the feed ends (the PeerConnection is closed:
//! the player falls back to HLS, which shows the end), on `DELETE`, ICE consent loss or
//! shutdown. The playback access check (signed paths) wraps these routes as it does
//! every playback request.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use streamcdn_feed::FeedSubscriber;
use streamcdn_media::codec::{AudioCodec, VideoCodec, VideoConfig};
use streamcdn_media::feed::FeedMessage;
use streamcdn_media::input::{MediaInput, VideoFrame, TIMESCALE};
use streamcdn_urls::StreamName;
use streamcdn_webrtc::{
    AcceptedViewer, OutFrame, OutgoingMedia, SendStats, Track, WebRtcError, WebRtcHandle,
};

use crate::source::FetchError;
use crate::Edge;

/// The largest SDP offer read.
const MAX_OFFER_BYTES: usize = 64 * 1024;
/// A viewer whose ICE and DTLS are not up by then is dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The addresses to name as ICE candidates: the configured `(host, port)`s (port 0: the
/// socket's), else the host of `advertised` (the edge's playback URL; a name is
/// resolved), else this host's address towards the internet, and loopback.
pub async fn candidates(configured: &[(String, u16)], advertised: Option<&str>) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for (host, port) in configured {
        if let Ok(ip) = host.parse::<IpAddr>() {
            out.push(SocketAddr::new(ip, *port));
        }
    }
    if !out.is_empty() {
        return out;
    }
    let host = advertised
        .and_then(|url| url.split_once("://").map(|(_, rest)| rest))
        .and_then(|rest| rest.split(['/', '?']).next())
        .map(|authority| match authority.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => authority,
        })
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
        .filter(|h| !h.is_empty());
    if let Some(host) = host {
        match host.parse::<IpAddr>() {
            Ok(ip) if !ip.is_unspecified() => return vec![SocketAddr::new(ip, 0)],
            Ok(_) => {}
            Err(_) => {
                if let Ok(found) = tokio::net::lookup_host((host.as_str(), 0)).await {
                    let found: Vec<SocketAddr> = found.collect();
                    if !found.is_empty() {
                        return found;
                    }
                }
            }
        }
    }
    // Nothing advertised: the address a datagram to the internet would leave from (no
    // datagram is sent), and loopback for a browser on this host.
    if let Ok(socket) = std::net::UdpSocket::bind("0.0.0.0:0") {
        if socket.connect("192.0.2.1:9").is_ok() {
            if let Ok(local) = socket.local_addr() {
                if !local.ip().is_unspecified() && !local.ip().is_loopback() {
                    out.push(SocketAddr::new(local.ip(), 0));
                }
            }
        }
    }
    out.push(SocketAddr::from(([127, 0, 0, 1], 0)));
    out
}

/// The WHEP endpoint of one edge: its sessions' streams, for `DELETE`.
pub struct Whep {
    edge: Arc<Edge>,
    webrtc: WebRtcHandle,
    sessions: Mutex<HashMap<String, StreamName>>,
}

impl Whep {
    pub fn new(edge: Arc<Edge>, webrtc: WebRtcHandle) -> Arc<Self> {
        Arc::new(Self {
            edge,
            webrtc,
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// `POST`/`OPTIONS` on `/<p>/<s>/whep`, `DELETE`/`OPTIONS` on `/<p>/<s>/whep/<id>`;
    /// `PATCH` (trickle ICE, which an ICE-lite server has no use for) is 405.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(
                "/{provider}/{stream}/whep",
                post(offer).options(preflight).patch(not_allowed),
            )
            .route(
                "/{provider}/{stream}/whep/{id}",
                axum::routing::delete(delete)
                    .options(preflight)
                    .patch(not_allowed),
            )
            .with_state(self.clone())
    }

    /// WebRTC viewers now.
    pub fn viewers(&self) -> usize {
        self.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }

    fn forget(&self, id: &str) {
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.remove(id);
        }
        metrics::gauge!("streamcdn_edge_webrtc_viewers").set(self.viewers() as f64);
    }
}

fn cors(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location"),
    );
}

fn plain(status: StatusCode, text: &str) -> Response {
    let mut response = (status, text.to_owned()).into_response();
    cors(response.headers_mut());
    response
}

async fn preflight() -> Response {
    let mut response =
        crate::response::preflight("POST, DELETE, OPTIONS", "Content-Type, Authorization");
    cors(response.headers_mut());
    response
}

async fn not_allowed() -> Response {
    let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    response.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_static("POST, DELETE, OPTIONS"),
    );
    response
}

/// The status a failed feed subscription answers: 404 when the stream is not live.
fn feed_status(error: &FetchError) -> StatusCode {
    match error {
        FetchError::NotCacheable { status, .. } if status.is_client_error() => *status,
        FetchError::NoServer(_) => StatusCode::NOT_FOUND,
        FetchError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    }
}

async fn offer(
    State(whep): State<Arc<Whep>>,
    Path((provider, stream)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(stream) = StreamName::new(&provider, &stream) else {
        return plain(StatusCode::NOT_FOUND, "no such stream");
    };
    let sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().starts_with("application/sdp"));
    if !sdp {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the offer must be application/sdp",
        );
    }
    if body.len() > MAX_OFFER_BYTES {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, "offer too large");
    }
    let Ok(offer) = std::str::from_utf8(&body) else {
        return plain(StatusCode::BAD_REQUEST, "the offer is not UTF-8");
    };
    let viewer = match whep.webrtc.accept_viewer(offer).await {
        Ok(viewer) => viewer,
        Err(e @ (WebRtcError::BadOffer(_) | WebRtcError::NoMedia)) => {
            metrics::counter!("streamcdn_edge_webrtc_offers_total", "result" => "bad_offer")
                .increment(1);
            return plain(StatusCode::BAD_REQUEST, &e.to_string());
        }
        Err(e) => {
            metrics::counter!("streamcdn_edge_webrtc_offers_total", "result" => "unavailable")
                .increment(1);
            return plain(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
        }
    };
    let subscribed = match viewer.tracks.audio_channels {
        Some(_) => whep.edge.feed_with_opus(&stream).await,
        None => whep.edge.feed(&stream).await,
    };
    let feed = match subscribed {
        Ok(feed) => feed,
        Err(error) => {
            whep.webrtc.close(&viewer.id).await;
            metrics::counter!("streamcdn_edge_webrtc_offers_total", "result" => "not_live")
                .increment(1);
            return plain(feed_status(&error), &error.to_string());
        }
    };
    metrics::counter!("streamcdn_edge_webrtc_offers_total", "result" => "ok").increment(1);
    let id = viewer.id.clone();
    let answer = viewer.answer.clone();
    if let Ok(mut sessions) = whep.sessions.lock() {
        sessions.insert(id.clone(), stream.clone());
    }
    metrics::gauge!("streamcdn_edge_webrtc_viewers").set(whep.viewers() as f64);
    tokio::spawn(run(whep.clone(), stream, viewer, feed));
    let mut response = (StatusCode::CREATED, answer).into_response();
    let headers = response.headers_mut();
    cors(headers);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(location) = HeaderValue::from_str(&format!("whep/{id}")) {
        headers.insert(header::LOCATION, location);
    }
    response
}

async fn delete(
    State(whep): State<Arc<Whep>>,
    Path((provider, stream, id)): Path<(String, String, String)>,
) -> Response {
    let known = whep
        .sessions
        .lock()
        .ok()
        .and_then(|s| s.get(&id).cloned())
        .is_some_and(|s| StreamName::new(&provider, &stream).as_ref() == Some(&s));
    if !known || !whep.webrtc.close(&id).await {
        return plain(StatusCode::NOT_FOUND, "no such session");
    }
    whep.forget(&id);
    plain(StatusCode::OK, "")
}

/// One viewer: waits for its connection, then sends the feed until either ends.
async fn run(whep: Arc<Whep>, stream: StreamName, viewer: AcceptedViewer, feed: FeedSubscriber) {
    let AcceptedViewer {
        id,
        mut media,
        mut end,
        ..
    } = viewer;
    let mut counted = Counted::default();
    let connected = tokio::select! {
        up = tokio::time::timeout(CONNECT_TIMEOUT, media.connected()) => up.unwrap_or(false),
        _ = end.wait() => false,
    };
    if connected {
        tracing::debug!(stream = %stream, session = id, "WebRTC viewer connected");
        let mut feed = feed;
        let mut frames = Frames::default();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                item = feed.next() => {
                    let Some(item) = item else { break };
                    let FeedMessage::Media(input) = item.message() else { break };
                    if let Some(frame) = frames.frame(input, Instant::now()) {
                        if media.send(frame).await.is_err() {
                            break;
                        }
                    }
                }
                _ = end.wait() => break,
                _ = tick.tick() => counted.publish(&media, feed.skipped()),
            }
        }
        counted.publish(&media, feed.skipped());
    }
    // Ends the PeerConnection if it is still up (the feed ended, or it never connected).
    whep.webrtc.close(&id).await;
    counted.publish(&media, 0);
    whep.forget(&id);
    tracing::debug!(stream = %stream, session = id, "WebRTC viewer gone");
}

/// What of a viewer's counts the metrics already have.
#[derive(Default)]
struct Counted {
    stats: SendStats,
    skipped: u64,
}

impl Counted {
    fn publish(&mut self, media: &OutgoingMedia, skipped: u64) {
        let now = media.stats();
        let was = self.stats;
        metrics::counter!("streamcdn_edge_webrtc_bytes_total")
            .increment(now.bytes.saturating_sub(was.bytes));
        metrics::counter!("streamcdn_edge_webrtc_nacks_total")
            .increment(now.nacks.saturating_sub(was.nacks));
        metrics::counter!("streamcdn_edge_webrtc_plis_total")
            .increment(now.plis.saturating_sub(was.plis));
        metrics::counter!("streamcdn_edge_webrtc_dropped_frames_total").increment(
            now.dropped_frames.saturating_sub(was.dropped_frames)
                + skipped.saturating_sub(self.skipped),
        );
        self.stats = now;
        self.skipped = self.skipped.max(skipped);
    }
}

/// The feed's messages as frames for a viewer: the configurations kept, the clock
/// anchored on the first frame.
#[derive(Default)]
struct Frames {
    video: Option<VideoConfig>,
    opus: bool,
    /// The feed time (90 kHz) of the first frame and when it was sent.
    origin: Option<(i64, Instant)>,
    /// A video frame could not be converted: nothing until the next keyframe.
    broken: bool,
}

/// RTP time starts this far before the first frame, so that frames presented earlier
/// (B-frames, audio just before the video) never go below zero.
const RTP_MARGIN_TICKS: i64 = 10 * TIMESCALE as i64;

impl Frames {
    fn frame(&mut self, input: &MediaInput, now: Instant) -> Option<OutFrame> {
        match input {
            MediaInput::VideoConfig(config) => {
                self.video = (config.codec == VideoCodec::H264).then(|| config.clone());
                None
            }
            MediaInput::AudioConfig(config) => {
                // AAC reaches viewers re-encoded ([`Edge::feed_with_opus`]); a feed read
                // without it (the viewer took no audio) has nothing to send here.
                self.opus = matches!(config.codec, AudioCodec::Opus { .. });
                None
            }
            MediaInput::Video(frame) => {
                let config = self.video.as_ref()?;
                if self.broken && !frame.keyframe {
                    return None;
                }
                let Some(data) = annex_b(frame, config) else {
                    self.broken = true;
                    return None;
                };
                self.broken = false;
                let pts = frame.dts + i64::from(frame.composition_offset);
                let (rtp_time, wallclock) = self.time(pts, now, u64::from(TIMESCALE));
                Some(OutFrame {
                    track: Track::Video,
                    rtp_time,
                    wallclock,
                    keyframe: frame.keyframe,
                    data,
                })
            }
            MediaInput::Audio(frame) => {
                if !self.opus {
                    return None;
                }
                let (rtp_time, wallclock) = self.time(frame.pts, now, 48_000);
                Some(OutFrame {
                    track: Track::Audio,
                    rtp_time,
                    wallclock,
                    keyframe: false,
                    data: frame.data.clone(),
                })
            }
        }
    }

    /// The RTP time at `rate` and the wallclock of feed time `ticks`.
    fn time(&mut self, ticks: i64, now: Instant, rate: u64) -> (u64, Instant) {
        let (first, at) = *self.origin.get_or_insert((ticks, now));
        let since = ticks - first;
        let rtp =
            (since + RTP_MARGIN_TICKS).max(0) as u128 * u128::from(rate) / u128::from(TIMESCALE);
        let offset = Duration::from_micros(since.unsigned_abs() * 1_000_000 / u64::from(TIMESCALE));
        let wallclock = match since >= 0 {
            true => at + offset,
            false => at.checked_sub(offset).unwrap_or(at),
        };
        (rtp as u64, wallclock)
    }
}

/// An access unit's length-prefixed NAL units as Annex B (what str0m's packetizer
/// reads), the configuration's SPS and PPS first on a keyframe; `None` when a length
/// runs past the data.
fn annex_b(frame: &VideoFrame, config: &VideoConfig) -> Option<Bytes> {
    const START: [u8; 4] = [0, 0, 0, 1];
    let size = usize::from(config.nal_length_size);
    if !(1..=4).contains(&size) {
        return None;
    }
    let mut out = Vec::with_capacity(frame.data.len() + 64);
    if frame.keyframe {
        for set in &config.parameter_sets {
            out.extend_from_slice(&START);
            out.extend_from_slice(set);
        }
    }
    let mut rest = &frame.data[..];
    while !rest.is_empty() {
        if rest.len() < size {
            return None;
        }
        let len = rest[..size]
            .iter()
            .fold(0usize, |n, b| (n << 8) | usize::from(*b));
        rest = &rest[size..];
        if len > rest.len() {
            return None;
        }
        if len > 0 {
            out.extend_from_slice(&START);
            out.extend_from_slice(&rest[..len]);
        }
        rest = &rest[len..];
    }
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> VideoConfig {
        VideoConfig {
            codec: VideoCodec::H264,
            record: Bytes::new(),
            parameter_sets: vec![
                Bytes::from_static(&[0x67, 1, 2]),
                Bytes::from_static(&[0x68, 3]),
            ],
            nal_length_size: 4,
            width: 0,
            height: 0,
            codec_string: String::new(),
        }
    }

    fn frame(keyframe: bool, data: &'static [u8]) -> VideoFrame {
        VideoFrame {
            dts: 0,
            composition_offset: 0,
            keyframe,
            data: Bytes::from_static(data),
        }
    }

    #[tokio::test]
    async fn candidates_come_from_the_config_else_the_advertised_host() {
        let configured = [("192.0.2.7".to_owned(), 0), ("192.0.2.8".to_owned(), 3478)];
        assert_eq!(
            candidates(&configured, Some("http://198.51.100.1:8080")).await,
            vec![
                "192.0.2.7:0".parse().unwrap(),
                "192.0.2.8:3478".parse().unwrap()
            ]
        );
        assert_eq!(
            candidates(&[], Some("http://198.51.100.1:8080/")).await,
            vec!["198.51.100.1:0".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            candidates(&[], Some("http://[2001:db8::1]:8080")).await,
            vec!["[2001:db8::1]:0".parse::<SocketAddr>().unwrap()]
        );
        let fallback = candidates(&[], None).await;
        assert!(fallback.contains(&"127.0.0.1:0".parse().unwrap()));
    }

    #[test]
    fn keyframes_carry_parameter_sets_in_annex_b() {
        let key = annex_b(&frame(true, &[0, 0, 0, 2, 0x65, 9]), &config()).unwrap();
        assert_eq!(
            &key[..],
            &[0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 9]
        );
        let delta = annex_b(
            &frame(false, &[0, 0, 0, 1, 0x41, 0, 0, 0, 2, 0x41, 7]),
            &config(),
        )
        .unwrap();
        assert_eq!(&delta[..], &[0, 0, 0, 1, 0x41, 0, 0, 0, 1, 0x41, 7]);
        assert!(annex_b(&frame(false, &[0, 0, 0, 9, 0x41]), &config()).is_none());
        assert!(annex_b(&frame(false, &[0, 0]), &config()).is_none());
    }

    #[test]
    fn times_follow_the_feed_clock_per_track() {
        let mut frames = Frames::default();
        let now = Instant::now();
        let video = frames.time(90_000, now, 90_000);
        assert_eq!(video, (RTP_MARGIN_TICKS as u64, now));
        // Half a second later on the feed: 45 000 video ticks, 24 000 Opus samples.
        let later = frames.time(135_000, now, 90_000);
        assert_eq!(later.0, RTP_MARGIN_TICKS as u64 + 45_000);
        assert_eq!(later.1, now + Duration::from_millis(500));
        let audio = frames.time(135_000, now, 48_000);
        assert_eq!(audio.0, (RTP_MARGIN_TICKS as u64 + 45_000) * 48 / 90);
        // A B-frame presented before the first frame stays above zero.
        assert!(frames.time(87_000, now, 90_000).0 < RTP_MARGIN_TICKS as u64);
    }

    #[test]
    fn a_broken_frame_waits_for_the_next_keyframe() {
        let mut frames = Frames::default();
        let now = Instant::now();
        assert!(frames
            .frame(&MediaInput::VideoConfig(config()), now)
            .is_none());
        let bad = MediaInput::Video(frame(false, &[0, 0, 0, 9]));
        assert!(frames.frame(&bad, now).is_none());
        let delta = MediaInput::Video(frame(false, &[0, 0, 0, 1, 0x41]));
        assert!(frames.frame(&delta, now).is_none());
        let key = MediaInput::Video(frame(true, &[0, 0, 0, 1, 0x65]));
        let sent = frames.frame(&key, now).unwrap();
        assert!(sent.keyframe && sent.track == Track::Video);
        assert!(frames.frame(&delta, now).is_some());
    }
}
