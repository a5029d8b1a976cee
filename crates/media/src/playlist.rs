//! HLS playlists (RFC 8216 / draft-pantos-hls-rfc8216bis). Written by hand: the m3u8
//! crates model parsing well but not a live window with program date times and
//! discontinuity sequence bookkeeping, and this text is small.

use std::fmt::Write;

#[derive(Debug, Clone, PartialEq)]
pub struct PlaylistSegment {
    pub uri: String,
    pub duration_secs: f64,
    /// Wall-clock time of the segment's first frame, as RFC 3339 with milliseconds.
    pub program_date_time: String,
    pub discontinuity: bool,
    /// URI of the init segment in force for this segment (fMP4 only).
    pub map_uri: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaylistKind {
    /// A sliding live window.
    Live,
    /// The whole recording while it grows.
    Event,
    /// A finished recording.
    Vod,
}

#[derive(Debug)]
pub struct MediaPlaylist<'a> {
    pub kind: PlaylistKind,
    pub target_duration_secs: u64,
    /// Media sequence number of `segments[0]`.
    pub media_sequence: u64,
    /// Discontinuities before `segments[0]`.
    pub discontinuity_sequence: u64,
    pub segments: &'a [PlaylistSegment],
    pub ended: bool,
}

/// The EXT-X-TARGETDURATION for segments: no EXTINF may round above it.
pub fn target_duration(configured_secs: f64, segments: &[PlaylistSegment]) -> u64 {
    segments
        .iter()
        .map(|s| s.duration_secs)
        .fold(configured_secs, f64::max)
        .round()
        .max(1.0) as u64
}

impl MediaPlaylist<'_> {
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(128 + self.segments.len() * 96);
        let _ = writeln!(out, "#EXTM3U");
        let _ = writeln!(out, "#EXT-X-VERSION:7");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", self.target_duration_secs);
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", self.media_sequence);
        if self.discontinuity_sequence > 0 {
            let _ = writeln!(
                out,
                "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
                self.discontinuity_sequence
            );
        }
        match self.kind {
            PlaylistKind::Live => {}
            PlaylistKind::Event => {
                let _ = writeln!(out, "#EXT-X-PLAYLIST-TYPE:EVENT");
            }
            PlaylistKind::Vod => {
                let _ = writeln!(out, "#EXT-X-PLAYLIST-TYPE:VOD");
            }
        }
        let _ = writeln!(out, "#EXT-X-INDEPENDENT-SEGMENTS");
        let mut current_map: Option<&str> = None;
        for (i, segment) in self.segments.iter().enumerate() {
            if segment.discontinuity && i > 0 {
                let _ = writeln!(out, "#EXT-X-DISCONTINUITY");
            }
            if let Some(map) = segment.map_uri.as_deref() {
                if current_map != Some(map) {
                    let _ = writeln!(out, "#EXT-X-MAP:URI=\"{map}\"");
                    current_map = Some(map);
                }
            }
            let _ = writeln!(
                out,
                "#EXT-X-PROGRAM-DATE-TIME:{}",
                segment.program_date_time
            );
            let _ = writeln!(out, "#EXTINF:{:.3},", segment.duration_secs);
            let _ = writeln!(out, "{}", segment.uri);
        }
        if self.ended || self.kind == PlaylistKind::Vod {
            let _ = writeln!(out, "#EXT-X-ENDLIST");
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub uri: String,
    /// Peak segment bit rate, bits per second.
    pub bandwidth: u64,
    pub average_bandwidth: Option<u64>,
    pub codecs: Vec<String>,
    pub resolution: Option<(u16, u16)>,
    pub frame_rate: Option<f64>,
}

pub fn render_multivariant(variants: &[Variant]) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for v in variants {
        let _ = write!(out, "#EXT-X-STREAM-INF:BANDWIDTH={}", v.bandwidth.max(1));
        if let Some(avg) = v.average_bandwidth {
            let _ = write!(out, ",AVERAGE-BANDWIDTH={avg}");
        }
        if !v.codecs.is_empty() {
            let _ = write!(out, ",CODECS=\"{}\"", v.codecs.join(","));
        }
        if let Some((w, h)) = v.resolution.filter(|(w, h)| *w > 0 && *h > 0) {
            let _ = write!(out, ",RESOLUTION={w}x{h}");
        }
        if let Some(fps) = v.frame_rate.filter(|f| *f > 0.0) {
            let _ = write!(out, ",FRAME-RATE={fps:.3}");
        }
        let _ = writeln!(out, "\n{}", v.uri);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(n: u64, discontinuity: bool) -> PlaylistSegment {
        PlaylistSegment {
            uri: format!("r1/{n:06}.m4s"),
            duration_secs: 2.002,
            program_date_time: "2026-11-21T12:00:00.000Z".into(),
            discontinuity,
            map_uri: Some("r1/init.mp4".into()),
        }
    }

    #[test]
    fn live_window_has_sequence_map_and_no_endlist() {
        let segments = [seg(4, false), seg(5, true), seg(6, false)];
        let text = MediaPlaylist {
            kind: PlaylistKind::Live,
            target_duration_secs: target_duration(2.0, &segments),
            media_sequence: 4,
            discontinuity_sequence: 1,
            segments: &segments,
            ended: false,
        }
        .render();
        assert!(text.contains("#EXT-X-TARGETDURATION:2\n"));
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:4\n"));
        assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"));
        assert_eq!(text.matches("#EXT-X-MAP").count(), 1);
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
        assert!(text.contains("#EXTINF:2.002,\nr1/000005.m4s\n"));
        assert!(!text.contains("ENDLIST"));
    }

    #[test]
    fn multivariant_lists_codecs_and_resolution() {
        let text = render_multivariant(&[Variant {
            uri: "live.m3u8".into(),
            bandwidth: 3_200_000,
            average_bandwidth: None,
            codecs: vec!["avc1.64001f".into(), "mp4a.40.2".into()],
            resolution: Some((1280, 720)),
            frame_rate: Some(30.0),
        }]);
        assert!(text.contains(
            "BANDWIDTH=3200000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,FRAME-RATE=30.000\nlive.m3u8\n"
        ));
    }
}
