//! The SRT listener's inputs: srt-protocol's datagram parser and our `streamid` parser
//! (`streamcdn_srt::PublishRequest::parse`); what it asserts is in
//! `fuzz/invariants/srt_handshake.rs`, shared with the corpus replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;
use srt_protocol::packet::Packet;
use streamcdn_srt::PublishRequest;

include!("../invariants/srt_handshake.rs");

fuzz_target!(|data: &[u8]| check(data));
