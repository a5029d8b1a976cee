//! The whole network-input path of an ingest in one function, for fuzzing and
//! robustness tests: RTMP bytes → session → FLV → segmenter → fMP4 and TS muxers.

use crate::rtmp::{ServerSession, SessionEvent, SessionLimits};
use crate::segmenter::{Segmenter, SegmenterEvent};
use crate::{flv, fmp4, ts};

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
    let mut segmenter = Segmenter::new(2000, crate::segmenter::DEFAULT_PART_TARGET_MS);
    let mut front_end = flv::FlvFrontEnd::default();
    let mut ts_muxer = None;
    let mut segments = 0;
    for piece in input.chunks(chunk.max(1)) {
        if session.handle_input(piece).is_err() {
            break;
        }
        while let Some(event) = session.poll_event() {
            let events = match event {
                SessionEvent::PublishRequested(_) => {
                    session.accept_publish();
                    continue;
                }
                SessionEvent::Video { timestamp, data } => match flv::parse_video(&data) {
                    Ok(packet) => match front_end.video(timestamp, packet) {
                        Some(input) => segmenter.push(input),
                        None => continue,
                    },
                    Err(_) => continue,
                },
                SessionEvent::Audio { timestamp, data } => match flv::parse_audio(&data) {
                    Ok(packet) => segmenter.push(front_end.audio(timestamp, packet)),
                    Err(_) => continue,
                },
                _ => continue,
            };
            for event in events {
                match event {
                    SegmenterEvent::Tracks(tracks) => {
                        let _ = fmp4::init_segment(&tracks);
                        ts_muxer = Some(ts::TsMuxer::new(tracks));
                    }
                    SegmenterEvent::Part(part) => {
                        let _ = fmp4::part(&part);
                        if let Some(muxer) = ts_muxer.as_mut() {
                            muxer.part(&part);
                        }
                    }
                    SegmenterEvent::SegmentEnd(_) => segments += 1,
                }
            }
        }
        let _ = session.take_output();
    }
    segments
}
