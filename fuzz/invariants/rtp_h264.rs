/// Everything a WHIP publisher's H.264 or H.265 packets reach once the WebRTC stack has
/// removed SRTP: the reorder buffer (sequence wrap, gaps, restarts), RFC 6184 and RFC 7798
/// depacketizing (single NAL units, STAP-A/AP, FU-A/FU), parameter sets, keyframe
/// requests, the 32-bit RTP clock, then the segmenter and both muxers. The input is an
/// RTP capture (`streamcdn_media::rtp::capture`: records of flags, sequence, timestamp,
/// arrival step, payload), all of it on the video track. Needs `run_rtp_ingest`,
/// `RtpTracks` and `RtpVideoCodec` in scope.
pub fn check(data: &[u8]) {
    // Bit 2 of the first record's flags (unused by the format) picks H.265 (RFC 7798).
    let codec = match data.first() {
        Some(flags) if flags & 4 != 0 => RtpVideoCodec::H265,
        _ => RtpVideoCodec::H264,
    };
    let (stats, _) = run_rtp_ingest(data, RtpTracks::Video, codec);
    // Every access unit, handed on or dropped, came in at least one packet.
    assert!(stats.video_frames + stats.dropped_frames <= stats.packets);
    assert_eq!(stats.audio_frames, 0);
}
