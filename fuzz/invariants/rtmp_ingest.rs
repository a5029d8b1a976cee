/// Everything an RTMP publisher's bytes reach: handshake, chunk stream, AMF0 commands,
/// FLV tags (legacy and Enhanced RTMP), codec records, the segmenter and both muxers. The
/// second byte also picks the read size: it is the first of C1, which the server only
/// echoes, so any session can be read in any size (the first, C0, must be 3). 0 reads the
/// input whole (ffmpeg's C1 starts with 0), n reads 37n - 36 bytes at a time (1, 38, ...).
/// Needs `run_ingest` in scope.
pub fn check(data: &[u8]) {
    let chunk = match data.get(1) {
        None | Some(0) => data.len(),
        Some(&n) => usize::from(n) * 37 - 36,
    };
    run_ingest(data, chunk);
}
