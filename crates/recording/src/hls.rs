//! The HLS views of a recording, as text: pure functions of the recording, shared by the
//! origin (which serves them live) and the archiver (which stores them for VOD).

use streamcdn_config::SegmentFormat;
use streamcdn_media::playlist::{
    render_multivariant, target_duration, MediaPlaylist, PlaylistKind, PlaylistSegment, Variant,
};
use streamcdn_urls::{relative, RecordingName, RecordingObject, StreamName, Target};

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
    }
    .render()
}

/// The sliding live window of the last `window` segments (`/<p>/<s>/live.m3u8`);
/// `None` before the first segment.
pub fn live_playlist(recording: &Recording, window: usize) -> Option<String> {
    let from = recording
        .segments
        .len()
        .checked_sub(1)?
        .saturating_sub(window.max(1) - 1);
    let prefix = relative::stream_prefix(&recording.recording_id);
    let segments = playlist_segments(recording, &prefix, from);
    Some(
        MediaPlaylist {
            kind: PlaylistKind::Live,
            target_duration_secs: target_duration(recording.target_duration_secs, &segments),
            media_sequence: recording.segments[from].sequence,
            discontinuity_sequence: recording.segments[..from]
                .iter()
                .filter(|s| s.discontinuity)
                .count() as u64,
            segments: &segments,
            ended: !recording.is_live(),
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
}
