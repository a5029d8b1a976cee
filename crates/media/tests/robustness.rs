//! Deterministic mutation testing of the ingest path (the fuzz target in `fuzz/` does
//! the same, coverage-guided): a valid publish session, then thousands of corrupted
//! copies of it. Nothing may panic, and the valid session must produce segments.

use bytes::Bytes;
use streamcdn_media::pipeline::run_ingest;
use streamcdn_media::rtmp::amf0::{self, Amf0Value};
use streamcdn_media::rtmp::chunk::{self, Message};

const AVCC_720P: &[u8] = &[
    1, 100, 0, 31, 255, 225, 0, 28, 103, 100, 0, 31, 172, 217, 128, 80, 5, 187, 1, 106, 2, 2, 2,
    128, 0, 0, 3, 0, 128, 0, 0, 30, 7, 140, 24, 205, 1, 0, 5, 104, 233, 123, 44, 139,
];

fn message(
    out: &mut Vec<u8>,
    csid: u8,
    type_id: u8,
    stream_id: u32,
    timestamp: u32,
    payload: Vec<u8>,
) {
    let m = Message {
        type_id,
        stream_id,
        timestamp,
        payload: Bytes::from(payload),
    };
    chunk::encode(csid, &m, 128, out);
}

fn command(out: &mut Vec<u8>, stream_id: u32, values: &[Amf0Value]) {
    let mut payload = Vec::new();
    for v in values {
        amf0::encode(v, &mut payload);
    }
    message(out, 3, 20, stream_id, 0, payload);
}

/// A publish session as ffmpeg sends it: handshake, connect, createStream, publish,
/// sequence headers, 10 s of 30 fps video with a keyframe every 2 s, and AAC.
pub fn valid_session() -> Vec<u8> {
    let s = |v: &str| Amf0Value::String(v.into());
    let mut out = vec![3u8];
    out.extend(std::iter::repeat_n(1u8, 1536 * 2));
    command(
        &mut out,
        0,
        &[
            s("connect"),
            Amf0Value::Number(1.0),
            amf0::object(&[("app", s("demo"))]),
        ],
    );
    command(
        &mut out,
        0,
        &[s("createStream"), Amf0Value::Number(2.0), Amf0Value::Null],
    );
    command(
        &mut out,
        1,
        &[
            s("publish"),
            Amf0Value::Number(3.0),
            Amf0Value::Null,
            s("cam?key=k"),
            s("live"),
        ],
    );
    let mut config = vec![0x17, 0, 0, 0, 0];
    config.extend_from_slice(AVCC_720P);
    message(&mut out, 6, 9, 1, 0, config);
    message(&mut out, 4, 8, 1, 0, vec![0xAF, 0, 0x11, 0x90]);
    for i in 0..300u32 {
        let key = i % 60 == 0;
        let mut frame = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0, 0, 0, 0, 4];
        frame.extend_from_slice(&[if key { 0x65 } else { 0x41 }, 0x88, 0x84, 0x21]);
        message(&mut out, 6, 9, 1, i * 1000 / 30, frame);
        if i % 2 == 0 {
            message(
                &mut out,
                4,
                8,
                1,
                i * 1000 / 30,
                vec![0xAF, 1, 0x21, 0x10, 0x04],
            );
        }
    }
    out
}

#[test]
fn the_valid_session_produces_segments() {
    let session = valid_session();
    // `STREAMCDN_FUZZ_SEED=fuzz/corpus/rtmp_ingest/valid` writes this session as a seed.
    if let Some(path) = std::env::var_os("STREAMCDN_FUZZ_SEED") {
        std::fs::write(path, &session).unwrap();
    }
    // Keyframes at 0, 2, 4, 6, 8 s: four segments are cut; the fifth waits for the end.
    assert_eq!(run_ingest(&session, 4096), 4);
    assert_eq!(
        run_ingest(&session, 1),
        4,
        "byte-at-a-time reads give the same result"
    );
}

#[test]
fn corrupted_sessions_never_panic() {
    let session = valid_session();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..3000 {
        let mut input = session.clone();
        for _ in 0..1 + next() % 8 {
            if input.len() <= 3074 {
                break;
            }
            let at = 3073 + (next() as usize) % (input.len() - 3073);
            match next() % 4 {
                0 => input[at] = next() as u8,
                1 => input[at] ^= 1 << (next() % 8),
                2 => {
                    input.truncate(at);
                }
                _ => {
                    let n = (next() % 64) as usize;
                    let bytes: Vec<u8> = (0..n).map(|_| next() as u8).collect();
                    input.splice(at..at, bytes);
                }
            }
        }
        run_ingest(&input, 1 + (next() % 9000) as usize);
    }
}
