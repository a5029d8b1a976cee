//! The `whip_offer` fuzz target's corpus, replayed on stable with the target's own
//! checks (`fuzz/invariants/`), so that every input it ever kept stays covered by
//! `cargo test`.

use streamcdn_webrtc::demux::{classify, parse, DatagramKind, Demux};
use streamcdn_webrtc::Answerer;

include!("../../../fuzz/invariants/whip_offer.rs");
include!("../../../fuzz/invariants/replay.rs");

#[test]
fn the_whip_offer_fuzz_corpus_replays_without_panics() {
    replay_corpus("whip_offer", check);
}
