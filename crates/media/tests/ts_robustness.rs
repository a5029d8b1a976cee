//! Deterministic mutation testing of the MPEG-TS ingest path (the `ts_ingest` fuzz target
//! does the same, coverage-guided): real transport streams from ffmpeg, then thousands of
//! corrupted copies. Nothing may panic, and the valid streams must produce segments.

use streamcdn_media::pipeline::run_ts_ingest;

const STREAMS: [&[u8]; 2] = [
    include_bytes!("fixtures/h264_aac_pts_wrap.ts"),
    include_bytes!("fixtures/hevc_aac.ts"),
];

#[test]
fn valid_streams_produce_segments_whatever_the_reads() {
    for (stream, segments) in STREAMS.into_iter().zip([2, 1]) {
        // Keyframes every second, 2 s segments: 3 s make two segments, 2 s one (as the
        // stream ends it is cut where it is).
        for chunk in [1, 188, 1316, 4096, stream.len()] {
            assert_eq!(run_ts_ingest(stream, chunk), segments, "reads of {chunk}");
        }
    }
}

#[test]
fn corrupted_streams_never_panic() {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..3000 {
        let mut input = STREAMS[round % 2].to_vec();
        for _ in 0..1 + next() % 16 {
            let at = (next() as usize) % input.len();
            match next() % 5 {
                0 => input[at] = next() as u8,
                1 => input[at] ^= 1 << (next() % 8),
                2 => {
                    // A lost run of packets.
                    let end = (at + 188 * (1 + (next() % 8) as usize)).min(input.len());
                    input.drain(at..end);
                }
                3 => input.truncate(at.max(1)),
                _ => {
                    let n = (next() % 400) as usize;
                    let bytes: Vec<u8> = (0..n).map(|_| next() as u8).collect();
                    input.splice(at..at, bytes);
                }
            }
        }
        run_ts_ingest(&input, 1 + (next() % 5000) as usize);
    }
}
