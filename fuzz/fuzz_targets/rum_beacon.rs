//! Beacons from browsers (`streamcdn_routing::rum::BeaconGate::check`); what it asserts is
//! in `fuzz/invariants/rum_beacon.rs`, shared with the corpus replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamcdn_access::deployment::DeploymentKey;
use streamcdn_routing::prefix::ClientPrefix;
use streamcdn_routing::rum::{issue, BeaconGate, Claims, GateLimits, Rejection, RumScores};

include!("../invariants/rum_beacon.rs");

fuzz_target!(|data: &[u8]| check(data));
