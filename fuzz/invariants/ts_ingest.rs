/// Everything an MPEG-TS publisher's bytes reach (SRT, HTTP upload): packet sync, PAT and
/// PMT, PES assembly, Annex B and ADTS, parameter sets, the 33-bit timeline, then the
/// segmenter and both muxers. The input is read in pieces of `len % 997 + 1` bytes, so
/// packets split across reads anywhere. Needs `run_ts_ingest` in scope.
pub fn check(data: &[u8]) {
    run_ts_ingest(data, data.len() % 997 + 1);
}
