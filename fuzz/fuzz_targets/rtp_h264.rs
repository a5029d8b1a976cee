//! A WHIP publisher's H.264 RTP packets through the RTP front end and the whole packaging
//! path (`streamcdn_media::pipeline::run_rtp_ingest`); what it asserts is in
//! `fuzz/invariants/rtp_h264.rs`, shared with the corpus replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamcdn_media::pipeline::{run_rtp_ingest, RtpTracks};
use streamcdn_media::rtp::RtpVideoCodec;

include!("../invariants/rtp_h264.rs");

fuzz_target!(|data: &[u8]| check(data));
