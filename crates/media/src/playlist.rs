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
    /// Its partial segments, listed only near the live edge (LL-HLS).
    pub parts: Vec<PlaylistPart>,
}

/// A partial segment (`EXT-X-PART`).
#[derive(Debug, Clone, PartialEq)]
pub struct PlaylistPart {
    pub uri: String,
    pub duration_secs: f64,
    pub independent: bool,
}

/// What a Low-Latency HLS playlist adds to a live one (rfc8216bis 4.4.3.7–8, 4.4.4.9,
/// 4.4.5.2–3).
#[derive(Debug)]
pub struct LowLatency<'a> {
    pub part_target_secs: f64,
    /// The segment being cut: its parts so far, after the last complete segment.
    pub open: Option<&'a PlaylistSegment>,
    /// The part the server will publish next (`EXT-X-PRELOAD-HINT`).
    pub preload_hint: Option<String>,
    /// Segments left out of a delta update (`EXT-X-SKIP`): the first this many of
    /// `segments` are not written.
    pub skipped_segments: usize,
}

impl LowLatency<'_> {
    /// `CAN-SKIP-UNTIL`: six target durations, the least the draft allows.
    pub fn skip_boundary_secs(target_duration_secs: u64) -> f64 {
        6.0 * target_duration_secs as f64
    }
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
    /// Low-Latency HLS: parts, server control, preload hint, delta updates.
    pub low_latency: Option<LowLatency<'a>>,
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
        let mut out = String::with_capacity(256 + self.segments.len() * 96);
        let _ = writeln!(out, "#EXTM3U");
        // EXT-X-SKIP needs version 9 (rfc8216bis 7); the rest needs 7.
        let low_latency = self.low_latency.as_ref().filter(|_| !self.ended);
        let version = if low_latency.is_some() { 9 } else { 7 };
        let _ = writeln!(out, "#EXT-X-VERSION:{version}");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", self.target_duration_secs);
        if let Some(ll) = low_latency {
            // PART-HOLD-BACK of three part targets (Apple's authoring spec 14.3: at least
            // three); blocking reload; delta updates for segments older than six target
            // durations.
            let _ = writeln!(
                out,
                "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={:.1},PART-HOLD-BACK={:.3}",
                LowLatency::skip_boundary_secs(self.target_duration_secs),
                3.0 * ll.part_target_secs
            );
            let _ = writeln!(
                out,
                "#EXT-X-PART-INF:PART-TARGET={:.3}",
                ll.part_target_secs
            );
        }
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
        let skipped = low_latency.map_or(0, |ll| ll.skipped_segments.min(self.segments.len()));
        if skipped > 0 {
            let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
        }
        let mut current_map: Option<&str> = None;
        for (i, segment) in self.segments.iter().enumerate().skip(skipped) {
            write_segment_head(&mut out, segment, i > 0, &mut current_map);
            if low_latency.is_some() {
                write_parts(&mut out, &segment.parts);
            }
            let _ = writeln!(out, "#EXTINF:{:.3},", segment.duration_secs);
            let _ = writeln!(out, "{}", segment.uri);
        }
        if let Some(ll) = low_latency {
            if let Some(open) = ll.open {
                write_segment_head(&mut out, open, !self.segments.is_empty(), &mut current_map);
                write_parts(&mut out, &open.parts);
            }
            if let Some(hint) = &ll.preload_hint {
                let _ = writeln!(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{hint}\"");
            }
        }
        if self.ended || self.kind == PlaylistKind::Vod {
            let _ = writeln!(out, "#EXT-X-ENDLIST");
        }
        out
    }
}

/// The tags before a segment's parts and `EXTINF`: discontinuity, a new map, its time.
fn write_segment_head<'a>(
    out: &mut String,
    segment: &'a PlaylistSegment,
    after_another: bool,
    current_map: &mut Option<&'a str>,
) {
    if segment.discontinuity && after_another {
        let _ = writeln!(out, "#EXT-X-DISCONTINUITY");
    }
    if let Some(map) = segment.map_uri.as_deref() {
        if *current_map != Some(map) {
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{map}\"");
            *current_map = Some(map);
        }
    }
    let _ = writeln!(
        out,
        "#EXT-X-PROGRAM-DATE-TIME:{}",
        segment.program_date_time
    );
}

fn write_parts(out: &mut String, parts: &[PlaylistPart]) {
    for part in parts {
        let independent = if part.independent {
            ",INDEPENDENT=YES"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "#EXT-X-PART:DURATION={:.5},URI=\"{}\"{independent}",
            part.duration_secs, part.uri
        );
    }
}

/// A media playlist read back: its whole segments (parts and the open segment are left
/// out) and whether it has ended.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedPlaylist {
    pub segments: Vec<PlaylistSegment>,
    pub ended: bool,
}

/// Reads the segments of a media playlist such as [`MediaPlaylist::render`] writes (what
/// a clip is cut from). Tags it does not use are skipped; a segment without a time has
/// an empty `program_date_time`.
pub fn parse_media(text: &str) -> ParsedPlaylist {
    let mut parsed = ParsedPlaylist::default();
    let (mut duration, mut time, mut map, mut discontinuity) = (None, String::new(), None, false);
    for line in text.lines().map(str::trim) {
        if let Some(value) = line.strip_prefix("#EXTINF:") {
            duration = value
                .split(',')
                .next()
                .and_then(|d| d.trim().parse::<f64>().ok())
                .filter(|d| d.is_finite() && *d >= 0.0);
        } else if let Some(value) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            time = value.to_owned();
        } else if let Some(value) = line.strip_prefix("#EXT-X-MAP:") {
            map = value
                .split(',')
                .find_map(|a| a.trim().strip_prefix("URI="))
                .map(|uri| uri.trim_matches('"').to_owned());
        } else if line == "#EXT-X-DISCONTINUITY" {
            discontinuity = true;
        } else if line == "#EXT-X-ENDLIST" {
            parsed.ended = true;
        } else if !line.is_empty() && !line.starts_with('#') {
            if let Some(duration_secs) = duration.take() {
                parsed.segments.push(PlaylistSegment {
                    uri: line.to_owned(),
                    duration_secs,
                    program_date_time: std::mem::take(&mut time),
                    discontinuity: std::mem::take(&mut discontinuity),
                    map_uri: map.clone(),
                    parts: Vec::new(),
                });
            }
        }
    }
    parsed
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
            parts: Vec::new(),
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
            low_latency: None,
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
    fn low_latency_adds_parts_server_control_hint_and_skips() {
        let part = |n: u64, i: u32| PlaylistPart {
            uri: format!("r1/{n:06}.{i}.m4s"),
            duration_secs: 0.33367,
            independent: i == 0,
        };
        let mut segments = [seg(4, false), seg(5, false), seg(6, false)];
        segments[2].parts = (0..6).map(|i| part(6, i)).collect();
        let open = PlaylistSegment {
            parts: vec![part(7, 0), part(7, 1)],
            ..seg(7, true)
        };
        let render = |skipped_segments| {
            MediaPlaylist {
                kind: PlaylistKind::Live,
                target_duration_secs: 2,
                media_sequence: 4,
                discontinuity_sequence: 0,
                segments: &segments,
                ended: false,
                low_latency: Some(LowLatency {
                    part_target_secs: 0.334,
                    open: Some(&open),
                    preload_hint: Some("r1/000007.2.m4s".into()),
                    skipped_segments,
                }),
            }
            .render()
        };
        let text = render(0);
        assert!(text.contains("#EXT-X-VERSION:9\n"));
        assert!(text.contains(
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.0,PART-HOLD-BACK=1.002\n"
        ));
        assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.334\n"));
        assert!(text.contains(
            "#EXT-X-PART:DURATION=0.33367,URI=\"r1/000006.0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.33367,URI=\"r1/000006.1.m4s\"\n"
        ));
        // The open segment: its discontinuity, its parts, no EXTINF; then the hint last.
        assert!(text.ends_with(
            "r1/000006.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2026-11-21T12:00:00.000Z\n\
             #EXT-X-PART:DURATION=0.33367,URI=\"r1/000007.0.m4s\",INDEPENDENT=YES\n\
             #EXT-X-PART:DURATION=0.33367,URI=\"r1/000007.1.m4s\"\n\
             #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"r1/000007.2.m4s\"\n"
        ));
        assert_eq!(text.matches("#EXTINF").count(), 3);
        let delta = render(2);
        assert!(delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=2\n"));
        assert!(!delta.contains("r1/000005.m4s") && delta.contains("r1/000006.m4s"));
        assert!(delta.contains("#EXT-X-MAP:URI=\"r1/init.mp4\""));
    }

    #[test]
    fn a_rendered_playlist_reads_back() {
        let segments = [seg(4, false), seg(5, true), seg(6, false)];
        let text = MediaPlaylist {
            kind: PlaylistKind::Vod,
            target_duration_secs: 2,
            media_sequence: 4,
            discontinuity_sequence: 0,
            segments: &segments,
            ended: true,
            low_latency: None,
        }
        .render();
        let parsed = parse_media(&text);
        assert!(parsed.ended);
        assert_eq!(parsed.segments, segments);
        assert_eq!(
            parse_media("#EXTM3U\n#EXTINF:x,\na.m4s\n"),
            ParsedPlaylist::default()
        );
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
