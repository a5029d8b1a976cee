//! The URL scheme's parsers (`streamcdn_urls::CacheKey::parse`); what it asserts is in
//! `fuzz/invariants/playback_url.rs`, shared with the corpus replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamcdn_urls::CacheKey;

include!("../invariants/playback_url.rs");

fuzz_target!(|data: &[u8]| check(data));
