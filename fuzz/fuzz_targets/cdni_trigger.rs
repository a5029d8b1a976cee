//! CI/T bodies and patterns (`streamcdn_cdni::wire`, `pattern`, `pid`: RFC 8007); what it
//! asserts is in `fuzz/invariants/cdni_trigger.rs`, shared with the corpus replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamcdn_cdni::pattern::host_of;
use streamcdn_cdni::wire::MAX_CDN_PATH;
use streamcdn_cdni::{
    parse_collection, parse_command, parse_operator_command, parse_status, Action, CdnPid,
    PatternMatch, TriggerSpec, WireError,
};

include!("../invariants/cdni_trigger.rs");

fuzz_target!(|data: &[u8]| check(data));
