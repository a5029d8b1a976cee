//! The `srt_handshake` fuzz target's corpus, replayed on stable with the target's own
//! checks (`fuzz/invariants/`), so that every input it ever kept stays covered by
//! `cargo test`.

use srt_protocol::packet::Packet;
use streamcdn_srt::PublishRequest;

include!("../../../fuzz/invariants/srt_handshake.rs");
include!("../../../fuzz/invariants/replay.rs");

#[test]
fn the_srt_handshake_fuzz_corpus_replays_without_panics() {
    replay_corpus("srt_handshake", check);
}
