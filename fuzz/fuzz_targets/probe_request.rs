//! The probe requests and reports between router and edges
//! (`streamcdn_routing::probe::verify`, `ProbeReport`); what it asserts is in
//! `fuzz/invariants/probe_request.rs`, shared with the corpus replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamcdn_access::deployment::{sign, DeploymentKey, ReplayGuard, KEY_LEN, MAX_SKEW_MS};
use streamcdn_routing::decision::{Estimator, Measurements};
use streamcdn_routing::probe::{is_probeable, verify, ProbeAuthError, ProbeReport, MAX_ATTEMPTS};

include!("../invariants/probe_request.rs");

fuzz_target!(|data: &[u8]| check(data));
