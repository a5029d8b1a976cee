//! The whole ingest path of an MPEG-TS publisher's bytes
//! (`streamcdn_media::pipeline::run_ts_ingest`); what it asserts is in
//! `fuzz/invariants/ts_ingest.rs`, shared with the corpus replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamcdn_media::pipeline::run_ts_ingest;

include!("../invariants/ts_ingest.rs");

fuzz_target!(|data: &[u8]| check(data));
