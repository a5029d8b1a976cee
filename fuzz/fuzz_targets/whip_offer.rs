//! The WHIP endpoint's inputs: an SDP offer answered by `streamcdn_webrtc::Answerer`
//! (str0m's SDP parser and negotiation) and the WebRTC port's datagrams through our
//! demultiplexer (`streamcdn_webrtc::demux`); what it asserts is in
//! `fuzz/invariants/whip_offer.rs`, shared with the corpus replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamcdn_webrtc::demux::{classify, parse, DatagramKind, Demux};
use streamcdn_webrtc::Answerer;

include!("../invariants/whip_offer.rs");

fuzz_target!(|data: &[u8]| check(data));
