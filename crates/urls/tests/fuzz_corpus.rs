//! The `playback_url` fuzz target's corpus, replayed on stable with the target's own
//! checks (`fuzz/invariants/`), so that every input it ever kept stays covered by
//! `cargo test`.

use streamcdn_urls::CacheKey;

include!("../../../fuzz/invariants/playback_url.rs");
include!("../../../fuzz/invariants/replay.rs");

#[test]
fn the_playback_url_fuzz_corpus_replays_without_panics() {
    replay_corpus("playback_url", check);
}
