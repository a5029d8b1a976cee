//! The whole ingest path of an RTMP publisher's bytes
//! (`streamcdn_media::pipeline::run_ingest`); what it asserts is in
//! `fuzz/invariants/rtmp_ingest.rs`, shared with the corpus replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamcdn_media::pipeline::run_ingest;

include!("../invariants/rtmp_ingest.rs");

fuzz_target!(|data: &[u8]| check(data));
