/// Everything a WHIP publisher's H.264 packets reach once the WebRTC stack has removed
/// SRTP: the reorder buffer (sequence wrap, gaps, restarts), RFC 6184 depacketizing
/// (single NAL units, STAP-A, FU-A), parameter sets, keyframe requests, the 32-bit RTP
/// clock, then the segmenter and both muxers. The input is an RTP capture
/// (`streamcdn_media::rtp::capture`: records of flags, sequence, timestamp, arrival step,
/// payload), all of it on the video track. Needs `run_rtp_ingest`,
/// `RtpTracks` and `RtpVideoCodec` in scope.
pub fn check(data: &[u8]) {
    let (stats, _) = run_rtp_ingest(data, RtpTracks::Video, RtpVideoCodec::H264);
    // Every access unit, handed on or dropped, came in at least one packet.
    assert!(stats.video_frames + stats.dropped_frames <= stats.packets);
    assert_eq!(stats.audio_frames, 0);
}
