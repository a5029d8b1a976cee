//! The `cdni_trigger` fuzz target's corpus, replayed on stable with the target's own
//! checks (`fuzz/invariants/`), so that every input it ever kept stays covered by
//! `cargo test`.

use streamcdn_cdni::pattern::host_of;
use streamcdn_cdni::wire::MAX_CDN_PATH;
use streamcdn_cdni::{
    parse_collection, parse_command, parse_operator_command, parse_status, Action, CdnPid,
    PatternMatch, TriggerSpec, WireError,
};

include!("../../../fuzz/invariants/cdni_trigger.rs");
include!("../../../fuzz/invariants/replay.rs");

#[test]
fn the_cdni_trigger_fuzz_corpus_replays_without_panics() {
    replay_corpus("cdni_trigger", check);
}
