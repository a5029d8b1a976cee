//! Everything an RTMP publisher's bytes reach: handshake, chunk stream, AMF0 commands,
//! FLV tags (legacy and Enhanced RTMP), codec records, the segmenter and both muxers.
//! Seed with `valid-session.bin` from `cargo test -p streamcdn-media` output, or let
//! libFuzzer start from nothing (the first 3073 bytes are the handshake).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let chunk = data.first().map_or(1, |b| usize::from(*b) * 37 + 1);
    streamcdn_media::pipeline::run_ingest(data, chunk);
});
