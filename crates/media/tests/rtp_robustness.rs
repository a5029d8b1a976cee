//! Deterministic mutation testing of the RTP ingest path (the `rtp_h264` and `rtp_opus`
//! fuzz targets do the same, coverage-guided): a real capture of ffmpeg's H.264 and Opus
//! RTP, then thousands of corrupted copies: flipped bits, lost, duplicated and reordered
//! packets, jumps of sequence numbers and timestamps, garbage. Nothing may panic, and the
//! valid capture must produce segments.

use streamcdn_media::pipeline::{run_rtp_ingest, RtpTracks};
use streamcdn_media::rtp::capture::{records, write_record, CaptureRecord};
use streamcdn_media::rtp::RtpVideoCodec;

const CAPTURES: [(&[u8], RtpVideoCodec); 2] = [
    (
        include_bytes!("fixtures/h264_opus.rtp"),
        RtpVideoCodec::H264,
    ),
    (
        include_bytes!("fixtures/hevc_opus.rtp"),
        RtpVideoCodec::H265,
    ),
];

#[test]
fn the_valid_captures_produce_segments_and_lose_nothing() {
    for (capture, codec) in CAPTURES {
        let (stats, segments) = run_rtp_ingest(capture, RtpTracks::Both, codec);
        // 2 s, keyframes every second, 2 s segments: the keyframe at 1 s is too early to
        // cut, and the stream ends before the next.
        assert_eq!(segments, 1, "{codec:?}");
        assert_eq!(stats.video_frames, 60, "{codec:?}");
        assert!((100..=101).contains(&stats.audio_frames), "{codec:?}");
        assert_eq!(
            (stats.lost, stats.dropped_frames, stats.malformed),
            (0, 0, 0)
        );
    }
}

fn rewrite(packets: &[CaptureRecord<'_>], steps: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (r, step) in packets.iter().zip(steps) {
        write_record(&mut out, r.audio, *step, &r.packet);
    }
    out
}

#[test]
fn corrupted_captures_never_panic() {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let originals: Vec<Vec<CaptureRecord<'_>>> =
        CAPTURES.iter().map(|(c, _)| records(c).collect()).collect();
    let steps_of = |records: &[CaptureRecord<'_>]| -> Vec<u8> {
        let mut last = std::time::Duration::ZERO;
        records
            .iter()
            .map(|r| {
                let step = (r.arrival - last).as_millis() as u8;
                last = r.arrival;
                step
            })
            .collect()
    };
    for round in 0..4000 {
        let which = (round / 3) % 2;
        let mut packets = originals[which].clone();
        let mut steps = steps_of(&packets);
        let mut payloads: Vec<Vec<u8>> =
            packets.iter().map(|r| r.packet.payload.to_vec()).collect();
        for _ in 0..1 + next() % 12 {
            let at = (next() as usize) % packets.len();
            match next() % 8 {
                0 => {
                    let p = &mut payloads[at];
                    if !p.is_empty() {
                        let i = (next() as usize) % p.len();
                        p[i] ^= 1 << (next() % 8);
                    }
                }
                1 => {
                    // A lost run.
                    let end = (at + 1 + (next() % 20) as usize).min(packets.len());
                    packets.drain(at..end);
                    steps.drain(at..end);
                    payloads.drain(at..end);
                }
                2 => {
                    let to = (next() as usize) % packets.len();
                    packets.swap(at, to);
                    payloads.swap(at, to);
                }
                3 => {
                    packets.insert(at, packets[at]);
                    steps.insert(at, 0);
                    payloads.insert(at, payloads[at].clone());
                }
                4 => packets[at].packet.sequence = next() as u16,
                5 => packets[at].packet.timestamp = next() as u32,
                6 => payloads[at].truncate((next() % 4) as usize),
                _ => {
                    let n = (next() % 1500) as usize;
                    payloads[at] = (0..n).map(|_| next() as u8).collect();
                    steps[at] = next() as u8;
                }
            }
            if packets.is_empty() {
                break;
            }
        }
        let rebuilt: Vec<CaptureRecord<'_>> = packets
            .iter()
            .zip(&payloads)
            .map(|(r, p)| CaptureRecord {
                packet: streamcdn_media::rtp::RtpPacket {
                    payload: p,
                    ..r.packet
                },
                ..*r
            })
            .collect();
        let input = rewrite(&rebuilt, &steps);
        let tracks = [RtpTracks::Both, RtpTracks::Video, RtpTracks::Audio][round % 3];
        run_rtp_ingest(&input, tracks, CAPTURES[which].1);
    }
}
