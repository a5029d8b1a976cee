//! The `feed` fuzz target's corpus, replayed on stable with the target's own checks
//! (`fuzz/invariants/`), so that every input it ever kept stays covered by `cargo test`.

use streamcdn_media::feed::{encode, FeedDecoder, MAGIC};

include!("../../../fuzz/invariants/feed.rs");
include!("../../../fuzz/invariants/replay.rs");

#[test]
fn the_feed_fuzz_corpus_replays_without_panics() {
    replay_corpus("feed", check);
}
