//! The `rtp_h264` and `rtp_opus` fuzz targets' corpora, replayed on stable with the
//! targets' own checks (`fuzz/invariants/`), so that every input they ever kept stays
//! covered by `cargo test`.

use streamcdn_media::pipeline::{run_rtp_ingest, RtpTracks};
use streamcdn_media::rtp::RtpVideoCodec;

mod h264 {
    use super::*;
    include!("../../../fuzz/invariants/rtp_h264.rs");
}

mod opus {
    use super::*;
    include!("../../../fuzz/invariants/rtp_opus.rs");
}

include!("../../../fuzz/invariants/replay.rs");

#[test]
fn the_rtp_h264_fuzz_corpus_replays_without_panics() {
    replay_corpus("rtp_h264", h264::check);
}

#[test]
fn the_rtp_opus_fuzz_corpus_replays_without_panics() {
    replay_corpus("rtp_opus", opus::check);
}
