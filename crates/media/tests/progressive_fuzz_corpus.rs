//! The `progressive_clip` fuzz target's corpus, replayed on stable with the target's own
//! checks (`fuzz/invariants/`), so that every input it ever kept stays covered by
//! `cargo test`.

use streamcdn_media::progressive::{build, Cut};

include!("../../../fuzz/invariants/progressive_clip.rs");
include!("../../../fuzz/invariants/replay.rs");

#[test]
fn the_progressive_clip_fuzz_corpus_replays_without_panics() {
    replay_corpus("progressive_clip", check);
}
