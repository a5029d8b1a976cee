//! The `ts_ingest` fuzz target's corpus, replayed on stable with the target's own checks
//! (`fuzz/invariants/`), so that every input it ever kept stays covered by `cargo test`.

use streamcdn_media::pipeline::run_ts_ingest;

include!("../../../fuzz/invariants/ts_ingest.rs");
include!("../../../fuzz/invariants/replay.rs");

#[test]
fn the_ts_ingest_fuzz_corpus_replays_without_panics() {
    replay_corpus("ts_ingest", check);
}
