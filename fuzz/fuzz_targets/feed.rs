//! A low-latency feed from a parent tier (`streamcdn_media::feed::FeedDecoder`); what it
//! asserts is in `fuzz/invariants/feed.rs`, shared with the corpus replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamcdn_media::feed::{encode, FeedDecoder, MAGIC};

include!("../invariants/feed.rs");

fuzz_target!(|data: &[u8]| check(data));
