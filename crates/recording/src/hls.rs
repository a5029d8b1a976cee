//! The HLS views of a recording, as text: pure functions of the recording, shared by the
//! origin (which serves them live) and the archiver (which stores them for VOD).

use std::time::Duration;

use streamcdn_config::SegmentFormat;
use streamcdn_media::playlist::{
    render_multivariant, target_duration, LowLatency, MediaPlaylist, PlaylistKind, PlaylistPart,
    PlaylistSegment, Variant,
};
use streamcdn_urls::{part_file, relative, RecordingName, RecordingObject, StreamName, Target};

use crate::journal::Recording;

/// A multivariant playlist with the recording as its one variant at `uri`.
pub fn multivariant(recording: &Recording, uri: &str) -> String {
    render_multivariant(&[variant(recording, uri.to_owned())])
}

/// The stream's own multivariant playlist (`/<p>/<s>/index.m3u8`) while `recording` is
/// its current one: live viewers follow the sliding window; once the stream has ended,
/// new viewers get the whole recording.
pub fn stream_multivariant(recording: &Recording) -> String {
    let uri = if recording.is_live() {
        relative::LIVE_PLAYLIST.to_owned()
    } else {
        relative::from_stream(&recording.recording_id, relative::RECORDING_PLAYLIST)
    };
    multivariant(recording, &uri)
}

/// The recording's own multivariant playlist (`<rec>/index.m3u8`).
pub fn recording_multivariant(recording: &Recording) -> String {
    multivariant(recording, relative::RECORDING_PLAYLIST)
}

/// The whole recording as one media playlist (`EVENT` while live, `VOD` after), its
/// URIs prefixed with `prefix` (empty from the recording's directory,
/// [`relative::stream_prefix`] from the stream's).
pub fn recording_playlist(recording: &Recording, prefix: &str) -> String {
    let segments = playlist_segments(recording, prefix, 0);
    MediaPlaylist {
        kind: if recording.is_live() {
            PlaylistKind::Event
        } else {
            PlaylistKind::Vod
        },
        target_duration_secs: target_duration(recording.target_duration_secs, &segments),
        media_sequence: recording.segments.first().map_or(0, |s| s.sequence),
        discontinuity_sequence: 0,
        segments: &segments,
        ended: !recording.is_live(),
        low_latency: None,
    }
    .render()
}

/// The sliding live window of the last `window` segments (`/<p>/<s>/live.m3u8`);
/// `None` before the first segment.
pub fn live_playlist(recording: &Recording, window: usize) -> Option<String> {
    live_window(recording, window, None)
}

/// How many of the recording's last segments its live playlist lists: `minimum` (the
/// usual live window), or, with a rewind window (`dvr`), as many as it takes to reach
/// that far back from the live edge, so players can seek back within it.
pub fn window_segments(recording: &Recording, minimum: usize, dvr: Option<Duration>) -> usize {
    let Some(dvr) = dvr else {
        return minimum;
    };
    let mut span = 0.0;
    let mut count = 0;
    for segment in recording.segments.iter().rev() {
        if span >= dvr.as_secs_f64() {
            break;
        }
        span += segment.duration_secs;
        count += 1;
    }
    count.max(minimum)
}

/// A part of the live edge, as the playlist lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgePart {
    pub segment: u64,
    /// From 0 in each segment.
    pub index: u32,
    pub duration_secs: f64,
    pub independent: bool,
}

/// The segment being cut, which has parts but no `EXTINF` yet.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenSegment {
    pub sequence: u64,
    pub program_date_time: String,
    pub discontinuity: bool,
    pub init: Option<String>,
}

/// The live edge of an LL-HLS stream: the parts of its recent segments and of the one
/// being cut.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveEdge<'a> {
    pub part_target_secs: f64,
    /// In order; parts of segments that left the window are ignored.
    pub parts: &'a [EdgePart],
    pub open: Option<OpenSegment>,
    /// Leave out what a delta update may (`_HLS_skip=YES`).
    pub skip: bool,
}

/// The LL-HLS live window: the segments of [`live_playlist`] with the parts of those in
/// the last three target durations (rfc8216bis 6.2.2), the open segment's parts, and a
/// preload hint for the next part.
pub fn low_latency_playlist(
    recording: &Recording,
    window: usize,
    edge: &LiveEdge,
) -> Option<String> {
    live_window(recording, window, Some(edge))
}

fn live_window(recording: &Recording, window: usize, edge: Option<&LiveEdge>) -> Option<String> {
    let from = recording
        .segments
        .len()
        .checked_sub(1)?
        .saturating_sub(window.max(1) - 1);
    let prefix = relative::stream_prefix(&recording.recording_id);
    let mut segments = playlist_segments(recording, &prefix, from);
    let target_duration_secs = target_duration(recording.target_duration_secs, &segments);
    let parts_of = |sequence: u64| -> Vec<PlaylistPart> {
        edge.map_or(&[][..], |e| e.parts)
            .iter()
            .filter(|p| p.segment == sequence)
            .map(|p| PlaylistPart {
                uri: format!("{prefix}{}", part_file(p.segment, p.index)),
                duration_secs: p.duration_secs,
                independent: p.independent,
            })
            .collect()
    };
    let open = edge.and_then(|e| e.open.as_ref()).map(|o| PlaylistSegment {
        uri: String::new(),
        duration_secs: 0.0,
        program_date_time: o.program_date_time.clone(),
        discontinuity: o.discontinuity,
        map_uri: match recording.format {
            SegmentFormat::Fmp4 => o.init.as_ref().map(|i| format!("{prefix}{i}")),
            SegmentFormat::Ts => None,
        },
        parts: parts_of(o.sequence),
    });
    let low_latency = match edge {
        Some(edge) if recording.is_live() => {
            // Parts are listed for segments ending within three target durations of the
            // playlist's end (the open segment's parts count towards that span).
            let open_secs: f64 = open
                .iter()
                .flat_map(|o| &o.parts)
                .map(|p| p.duration_secs)
                .sum();
            let mut from_end = open_secs;
            let listed_span = 3.0 * target_duration_secs as f64;
            for (segment, entry) in segments.iter_mut().zip(&recording.segments[from..]).rev() {
                if from_end >= listed_span {
                    break;
                }
                segment.parts = parts_of(entry.sequence);
                from_end += segment.duration_secs;
            }
            // A delta update leaves out the segments that start more than CAN-SKIP-UNTIL
            // before the end.
            let skip_boundary = LowLatency::skip_boundary_secs(target_duration_secs);
            let mut skipped_segments = 0;
            if edge.skip {
                let mut to_end: f64 =
                    open_secs + segments.iter().map(|s| s.duration_secs).sum::<f64>();
                for segment in &segments {
                    if to_end <= skip_boundary {
                        break;
                    }
                    skipped_segments += 1;
                    to_end -= segment.duration_secs;
                }
            }
            let hint = match &edge.open {
                Some(o) => part_file(
                    o.sequence,
                    open.as_ref().map_or(0, |s| s.parts.len() as u32),
                ),
                None => part_file(recording.segments.last().map_or(1, |s| s.sequence + 1), 0),
            };
            Some((
                edge.part_target_secs,
                format!("{prefix}{hint}"),
                skipped_segments,
            ))
        }
        _ => None,
    };
    Some(
        MediaPlaylist {
            kind: PlaylistKind::Live,
            target_duration_secs,
            media_sequence: recording.segments[from].sequence,
            discontinuity_sequence: recording.segments[..from]
                .iter()
                .filter(|s| s.discontinuity)
                .count() as u64,
            segments: &segments,
            ended: !recording.is_live(),
            low_latency: low_latency.map(|(part_target_secs, hint, skipped_segments)| LowLatency {
                part_target_secs,
                open: open.as_ref(),
                preload_hint: Some(hint),
                skipped_segments,
            }),
        }
        .render(),
    )
}

/// One entry of a stream's `recordings` listing.
pub fn summary(r: &Recording) -> serde_json::Value {
    let playlist = StreamName::new(&r.provider, &r.stream)
        .and_then(|s| s.recording(&r.recording_id))
        .map(|name: RecordingName| Target::Recording(name, RecordingObject::Multivariant).path());
    serde_json::json!({
        "recording_id": r.recording_id,
        "state": r.state,
        "started_at": r.started_at,
        "ended_at": r.ended_at,
        "duration_secs": r.duration_secs(),
        "segments": r.segments.len(),
        "playlist": playlist,
    })
}

fn variant(recording: &Recording, uri: String) -> Variant {
    let (peak, average) = recording.bandwidth();
    Variant {
        uri,
        bandwidth: peak,
        average_bandwidth: Some(average),
        codecs: recording.codecs.clone(),
        resolution: recording.resolution,
        frame_rate: recording.frame_rate,
    }
}

fn playlist_segments(recording: &Recording, prefix: &str, from: usize) -> Vec<PlaylistSegment> {
    recording.segments[from..]
        .iter()
        .map(|s| PlaylistSegment {
            uri: format!("{prefix}{}", s.file),
            duration_secs: s.duration_secs,
            program_date_time: s.program_date_time.clone(),
            discontinuity: s.discontinuity,
            map_uri: match recording.format {
                SegmentFormat::Fmp4 => s.init.as_ref().map(|i| format!("{prefix}{i}")),
                SegmentFormat::Ts => None,
            },
            parts: Vec::new(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{RecordingState, SegmentEntry};

    fn recording(segments: u64) -> Recording {
        let mut r = Recording::new("p", "s", "r1", SegmentFormat::Fmp4, "t0".into(), 2.0);
        r.inits.push("init.mp4".into());
        for n in 0..segments {
            r.segments.push(SegmentEntry {
                sequence: n,
                file: format!("{n:06}.m4s"),
                duration_secs: 2.0,
                program_date_time: format!("2026-11-22T00:00:{:02}.000Z", n * 2),
                bytes: 1000,
                discontinuity: n == 3,
                init: Some("init.mp4".into()),
            });
        }
        r
    }

    #[test]
    fn the_live_window_slides_and_counts_discontinuities_before_it() {
        assert_eq!(live_playlist(&recording(0), 6), None);
        let text = live_playlist(&recording(10), 6).unwrap();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:4"), "{text}");
        assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1"), "{text}");
        assert!(text.contains("r1/000009.m4s") && !text.contains("000003.m4s"));
        assert!(!text.contains("#EXT-X-ENDLIST"));
        let mut ended = recording(2);
        ended.state = RecordingState::Ended;
        let text = live_playlist(&ended, 6).unwrap();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:0") && text.contains("#EXT-X-ENDLIST"));
    }

    #[test]
    fn playlists_point_where_the_recording_is_served() {
        let live = recording(2);
        assert!(stream_multivariant(&live).contains("\nlive.m3u8"));
        let mut ended = live.clone();
        ended.state = RecordingState::Ended;
        assert!(stream_multivariant(&ended).contains("\nr1/playlist.m3u8"));
        assert!(recording_multivariant(&ended).contains("\nplaylist.m3u8"));
        let whole = recording_playlist(&ended, "");
        assert!(whole.contains("#EXT-X-PLAYLIST-TYPE:VOD") && whole.contains("#EXT-X-ENDLIST"));
        assert!(whole.contains("#EXT-X-MAP:URI=\"init.mp4\""));
        assert!(recording_playlist(&live, "").contains("#EXT-X-PLAYLIST-TYPE:EVENT"));
        assert_eq!(summary(&ended)["playlist"], "/p/s/r1/index.m3u8");
        assert_eq!(summary(&ended)["duration_secs"], 4.0);
    }

    fn edge_parts(segments: std::ops::Range<u64>, open: u32) -> Vec<EdgePart> {
        let part = |segment, index| EdgePart {
            segment,
            index,
            duration_secs: 2.0 / 6.0,
            independent: index == 0,
        };
        let mut parts: Vec<EdgePart> = segments
            .flat_map(|s| (0..6).map(move |i| part(s, i)))
            .collect();
        parts.extend((0..open).map(|i| part(10, i)));
        parts
    }

    #[test]
    fn the_low_latency_window_lists_recent_parts_the_open_segment_and_a_hint() {
        let r = recording(10);
        let parts = edge_parts(2..10, 2);
        let edge = LiveEdge {
            part_target_secs: 0.334,
            parts: &parts,
            open: Some(OpenSegment {
                sequence: 10,
                program_date_time: "2026-11-22T00:00:20.000Z".into(),
                discontinuity: false,
                init: Some("init.mp4".into()),
            }),
            skip: false,
        };
        let text = low_latency_playlist(&r, 10, &edge).unwrap();
        // Parts for the last three target durations (6 s): the open segment's 0.67 s and
        // the three segments before it (7, 8, 9); not 6.
        for listed in [
            "000007.5.m4s",
            "000008.0.m4s",
            "000009.5.m4s",
            "000010.1.m4s",
        ] {
            assert!(
                text.contains(&format!("URI=\"r1/{listed}\"")),
                "{listed}: {text}"
            );
        }
        assert!(!text.contains("000006.0.m4s"), "{text}");
        assert!(text.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"r1/000010.2.m4s\"\n"));
        // A delta update skips what starts more than 12 s before the end (20.67 s in
        // all: segments 0-4).
        let delta = low_latency_playlist(
            &r,
            10,
            &LiveEdge {
                skip: true,
                ..edge.clone()
            },
        )
        .unwrap();
        assert!(
            delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=5\n"),
            "{delta}"
        );
        assert!(!delta.contains("r1/000004.m4s") && delta.contains("r1/000005.m4s"));
        // Just after a segment ends, the hint is the next segment's first part.
        let closed = LiveEdge {
            open: None,
            ..edge.clone()
        };
        let text = low_latency_playlist(&r, 10, &closed).unwrap();
        assert!(text.ends_with("URI=\"r1/000010.0.m4s\"\n"), "{text}");
        // Ended: a plain playlist with ENDLIST.
        let mut ended = recording(10);
        ended.state = RecordingState::Ended;
        let text = low_latency_playlist(&ended, 10, &edge).unwrap();
        assert!(
            !text.contains("#EXT-X-PART") && text.contains("#EXT-X-ENDLIST"),
            "{text}"
        );
    }
}
