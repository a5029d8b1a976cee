//! Clips cut from recorded CMAF segments (`streamcdn_media::progressive::build`); what it
//! asserts is in `fuzz/invariants/progressive_clip.rs`, shared with the corpus replay
//! test.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamcdn_media::progressive::{build, Cut};

include!("../invariants/progressive_clip.rs");

fuzz_target!(|data: &[u8]| check(data));
