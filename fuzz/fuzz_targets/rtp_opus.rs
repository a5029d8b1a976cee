//! A WHIP publisher's Opus RTP packets, alone or beside H.264, through the RTP front end
//! and the whole packaging path (`streamcdn_media::pipeline::run_rtp_ingest`); what it
//! asserts is in `fuzz/invariants/rtp_opus.rs`, shared with the corpus replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamcdn_media::pipeline::{run_rtp_ingest, RtpTracks};
use streamcdn_media::rtp::RtpVideoCodec;

include!("../invariants/rtp_opus.rs");

fuzz_target!(|data: &[u8]| check(data));
