//! The router's DNS responder (`streamcdn_routing::dns::respond`); what it asserts is in
//! `fuzz/invariants/dns_request.rs`, shared with the corpus replay test.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;
use streamcdn_routing::dns::{respond, Answer, Query, Transport, Zone};

include!("../invariants/dns_request.rs");

fuzz_target!(|data: &[u8]| check(data));
