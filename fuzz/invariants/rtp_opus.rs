/// Everything a WHIP publisher's Opus packets reach, alone and beside H.264: the reorder
/// buffer, RFC 7587 packets and their table-of-contents durations, the 48 kHz clock on the
/// 90 kHz timeline, audio held for the video's first keyframe, then the segmenter, the
/// Opus sample entry and sample durations of fMP4, and the TS muxer (which leaves Opus
/// out). The input is an RTP capture (`streamcdn_media::rtp::capture`); its first byte
/// picks whether the video track exists too (odd: records say which track). Needs
/// `run_rtp_ingest`, `RtpTracks` and `RtpVideoCodec` in scope.
pub fn check(data: &[u8]) {
    let tracks = match data.first() {
        Some(b) if b & 1 == 1 => RtpTracks::Both,
        _ => RtpTracks::Audio,
    };
    let (stats, _) = run_rtp_ingest(data, tracks, RtpVideoCodec::H264);
    assert!(stats.audio_frames <= stats.packets);
}
