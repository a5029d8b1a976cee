use mp4_atom::{Decode, Moov};

use super::*;
use crate::pipeline::ts_to_cmaf;

const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/h264_aac_pts_wrap.ts");

/// The fixture (3 s, a keyframe every second) as a recording of 1 s segments, or of
/// 2 s segments holding two GOPs each.
fn recording(segment_ms: u64) -> (Vec<u8>, Vec<Vec<u8>>) {
    let (init, segments) = ts_to_cmaf(FIXTURE, segment_ms);
    (init.expect("an init segment"), segments)
}

fn refs(segments: &[Vec<u8>]) -> Vec<&[u8]> {
    segments.iter().map(Vec::as_slice).collect()
}

/// The clip's boxes: `ftyp`, `moov`, `mdat`, in that order, and its moov.
fn parse(clip: &[u8]) -> (Moov, BoxAt) {
    let found = boxes(clip).expect("well-formed boxes");
    let kinds: Vec<&[u8; 4]> = found.iter().map(|b| &b.kind).collect();
    assert_eq!(kinds, [b"ftyp", b"moov", b"mdat"]);
    let moov = Moov::decode(&mut &clip[found[1].start..found[1].end]).expect("a moov");
    assert!(moov.mvex.is_none(), "not fragmented");
    let mdat = found.into_iter().nth(2).unwrap();
    (moov, mdat)
}

fn sample_count(trak: &Trak) -> usize {
    match &trak.mdia.minf.stbl.stsz.samples {
        StszSamples::Different { sizes } => sizes.len(),
        StszSamples::Identical { count, .. } => *count as usize,
    }
}

#[test]
fn a_whole_recording_becomes_one_progressive_file_with_every_sample() {
    let (init, segments) = recording(1000);
    assert!(segments.len() >= 3, "{} segments", segments.len());
    let tracks = tracks(&init).unwrap();
    let all = samples(&tracks, &refs(&segments)).unwrap();
    let clip = build(
        &init,
        &refs(&segments),
        Cut {
            start_secs: 0.0,
            end_secs: 1e9,
        },
    )
    .unwrap();
    let (moov, mdat) = parse(&clip.bytes);
    assert_eq!(moov.trak.len(), 2);
    let total: usize = moov.trak.iter().map(sample_count).sum();
    assert_eq!(total, all.len());
    // The mdat holds every sample's bytes, in file order.
    let expected: Vec<u8> = all
        .iter()
        .flat_map(|s| segments[s.fragment][s.offset..s.offset + s.size as usize].to_vec())
        .collect();
    assert_eq!(&clip.bytes[mdat.body..mdat.end], &expected[..]);
    // Each track's first chunk offset points at its first sample's bytes.
    for trak in &moov.trak {
        let first = trak.mdia.minf.stbl.stco.as_ref().unwrap().entries[0] as usize;
        let id = trak.tkhd.track_id;
        let sample = all
            .iter()
            .find(|s| tracks[s.track].trak.tkhd.track_id == id)
            .unwrap();
        assert_eq!(
            &clip.bytes[first..first + sample.size as usize],
            &segments[sample.fragment][sample.offset..sample.offset + sample.size as usize]
        );
    }
    assert!(
        (clip.duration_secs - 3.0).abs() < 0.1,
        "{}",
        clip.duration_secs
    );
    assert_eq!(clip.start_secs, 0.0);
}

#[test]
fn cuts_start_at_the_keyframe_before_and_end_after_the_gop_covering_the_end() {
    // Two GOPs a segment: the cut falls inside segments, not on their bounds.
    let (init, segments) = recording(2000);
    let clip = build(
        &init,
        &refs(&segments),
        Cut {
            start_secs: 1.4,
            end_secs: 1.6,
        },
    )
    .unwrap();
    assert!((clip.start_secs - 1.0).abs() < 0.05, "{}", clip.start_secs);
    assert!(
        (clip.duration_secs - 1.0).abs() < 0.05,
        "{}",
        clip.duration_secs
    );
    let (moov, _) = parse(&clip.bytes);
    let video = moov
        .trak
        .iter()
        .find(|t| t.mdia.hdlr.handler == mp4_atom::FourCC::new(b"vide"))
        .unwrap();
    // One GOP: its first sample is the only sync sample.
    assert_eq!(video.mdia.minf.stbl.stss.as_ref().unwrap().entries, [1]);
    // Audio covers the same second.
    let audio = moov
        .trak
        .iter()
        .find(|t| t.mdia.hdlr.handler == mp4_atom::FourCC::new(b"soun"))
        .unwrap();
    let audio_secs = audio.mdia.mdhd.duration as f64 / f64::from(audio.mdia.mdhd.timescale);
    assert!((audio_secs - 1.0).abs() < 0.1, "{audio_secs}");

    // An end on a keyframe ends there.
    let clip = build(
        &init,
        &refs(&segments),
        Cut {
            start_secs: 0.0,
            end_secs: 1.0,
        },
    )
    .unwrap();
    assert!(
        (clip.duration_secs - 1.0).abs() < 0.05,
        "{}",
        clip.duration_secs
    );
}

#[test]
fn segments_are_chosen_by_their_durations() {
    let durations = [2.0, 2.0, 2.0, 1.5];
    assert_eq!(segments_for(&durations, 0.0, 1.0), Some((0, 1, 0.0)));
    assert_eq!(segments_for(&durations, 2.0, 4.0), Some((1, 2, 2.0)));
    assert_eq!(segments_for(&durations, 3.0, 4.5), Some((1, 3, 2.0)));
    // Past the end: whatever there is.
    assert_eq!(segments_for(&durations, 6.5, 100.0), Some((3, 4, 6.0)));
    assert_eq!(segments_for(&durations, 7.5, 100.0), None);
    assert_eq!(segments_for(&[], 0.0, 1.0), None);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let (init, segments) = recording(1000);
    let cut = Cut {
        start_secs: 0.0,
        end_secs: 10.0,
    };
    assert!(build(&[], &refs(&segments), cut).is_err());
    assert!(build(&init, &[], cut).is_err());
    assert!(build(&init, &[b"\0\0\0\x10moof\0\0\0\0\0\0\0\0"], cut).is_err());
    for bad in [f64::NAN, f64::INFINITY] {
        let cut = Cut {
            start_secs: bad,
            end_secs: 10.0,
        };
        assert!(build(&init, &refs(&segments), cut).is_err());
    }
    // Every truncation of a segment, and a byte flipped anywhere in one.
    let segment = &segments[0];
    for len in (0..segment.len()).step_by(7) {
        let _ = build(&init, &[&segment[..len]], cut);
    }
    for at in (0..segment.len().min(4000)).step_by(3) {
        let mut bad = segment.clone();
        bad[at] ^= 0x5a;
        let _ = build(&init, &[&bad], cut);
    }
    for at in 0..init.len() {
        let mut bad = init.clone();
        bad[at] ^= 0xa5;
        let _ = build(&bad, &[segment], cut);
    }
}
