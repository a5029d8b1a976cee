//! The whole network-input path of an ingest in one function per protocol, for fuzzing
//! and robustness tests: RTMP bytes → session → FLV, MPEG-TS bytes → demuxer, or RTP
//! packets (a capture, `rtp::capture`) → RTP front end; then segmenter → fMP4 and TS
//! muxers.

use crate::rtmp::{ServerSession, SessionEvent, SessionLimits};
use crate::rtp::{capture, RtpFrontEnd, RtpOpus, RtpStats, RtpVideoCodec};
use crate::segmenter::{Segmenter, SegmenterEvent};
use crate::ts_demux::TsDemuxer;
use crate::{flv, fmp4, ts};

/// Feeds MPEG-TS `input` in `chunk`-sized pieces to the demuxer and packages whatever
/// media comes out. Returns how many segments were produced. Must never panic, whatever
/// the input.
pub fn run_ts_ingest(input: &[u8], chunk: usize) -> usize {
    let mut demuxer = TsDemuxer::default();
    let mut packager = Packager::default();
    for piece in input.chunks(chunk.max(1)) {
        for media in demuxer.push(piece) {
            let events = packager.segmenter.push(media);
            packager.package(events);
        }
    }
    for media in demuxer.finish() {
        let events = packager.segmenter.push(media);
        packager.package(events);
    }
    let events = packager.segmenter.finish();
    packager.package(events);
    packager.segments
}

/// Which tracks an RTP publisher negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtpTracks {
    /// H.264 only: every record goes to the video track.
    Video,
    /// Opus only: every record goes to the audio track.
    Audio,
    /// Both: each record says which.
    Both,
}

/// Feeds the RTP capture `input` (`rtp::capture`'s records) to a front end with `tracks`
/// (video in `codec`), asking it for keyframe requests as a WebRTC stack would, and
/// packages whatever media comes out. Returns the front end's statistics and how many
/// segments were produced. Must never panic, whatever the input.
pub fn run_rtp_ingest(input: &[u8], tracks: RtpTracks, codec: RtpVideoCodec) -> (RtpStats, usize) {
    let video = (tracks != RtpTracks::Audio).then_some(codec);
    let audio = (tracks != RtpTracks::Video).then_some(RtpOpus { channels: 2 });
    let mut front_end = RtpFrontEnd::new(video, audio);
    let mut packager = Packager::default();
    for record in capture::records(input) {
        let to_audio = match tracks {
            RtpTracks::Video => false,
            RtpTracks::Audio => true,
            RtpTracks::Both => record.audio,
        };
        let inputs = if to_audio {
            front_end.push_audio(record.packet, record.arrival)
        } else {
            front_end.push_video(record.packet, record.arrival)
        };
        for media in inputs {
            let events = packager.segmenter.push(media);
            packager.package(events);
        }
        front_end.keyframe_wanted(record.arrival);
    }
    for media in front_end.finish() {
        let events = packager.segmenter.push(media);
        packager.package(events);
    }
    let events = packager.segmenter.finish();
    packager.package(events);
    (front_end.stats().clone(), packager.segments)
}

/// The segmenter and both muxers, as the ingest runs them.
struct Packager {
    segmenter: Segmenter,
    ts_muxer: Option<ts::TsMuxer>,
    segments: usize,
}

impl Default for Packager {
    fn default() -> Self {
        Self {
            segmenter: Segmenter::new(2000, crate::segmenter::DEFAULT_PART_TARGET_MS),
            ts_muxer: None,
            segments: 0,
        }
    }
}

impl Packager {
    fn package(&mut self, events: Vec<SegmenterEvent>) {
        for event in events {
            match event {
                SegmenterEvent::Tracks(tracks) => {
                    let _ = fmp4::init_segment(&tracks);
                    self.ts_muxer = Some(ts::TsMuxer::new(tracks));
                }
                SegmenterEvent::Part(part) => {
                    let _ = fmp4::part(&part);
                    if let Some(muxer) = self.ts_muxer.as_mut() {
                        muxer.part(&part);
                    }
                }
                SegmenterEvent::SegmentEnd(_) => self.segments += 1,
            }
        }
    }
}

/// Feeds `input` in `chunk`-sized reads to a server session that accepts any publish,
/// and packages whatever media comes out. Returns how many segments were produced.
/// Must never panic, whatever the input.
pub fn run_ingest(input: &[u8], chunk: usize) -> usize {
    let mut session = ServerSession::new(
        SessionLimits {
            max_message_len: 1 << 20,
        },
        [0; 1528],
    );
    let mut front_end = flv::FlvFrontEnd::default();
    let mut packager = Packager::default();
    for piece in input.chunks(chunk.max(1)) {
        if session.handle_input(piece).is_err() {
            break;
        }
        while let Some(event) = session.poll_event() {
            let media = match event {
                SessionEvent::PublishRequested(_) => {
                    session.accept_publish();
                    continue;
                }
                SessionEvent::Video { timestamp, data } => match flv::parse_video(&data) {
                    Ok(packet) => match front_end.video(timestamp, packet) {
                        Some(media) => media,
                        None => continue,
                    },
                    Err(_) => continue,
                },
                SessionEvent::Audio { timestamp, data } => match flv::parse_audio(&data) {
                    Ok(packet) => front_end.audio(timestamp, packet),
                    Err(_) => continue,
                },
                _ => continue,
            };
            let events = packager.segmenter.push(media);
            packager.package(events);
        }
        let _ = session.take_output();
    }
    packager.segments
}
