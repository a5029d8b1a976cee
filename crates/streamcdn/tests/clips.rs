//! Clips (`<recording>/clip.mp4?start=&end=`, `?from=&to=`) end to end: ffmpeg publishes
//! a 2 s GOP stream to `up`; clips of the live, the ended and the archived recording
//! are fetched from the edge, probed and decoded with ffmpeg, their first picture
//! compared with the recording's own at the keyframe they should start on, and a
//! range of one checked byte for byte.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// ffprobe's view of a file: its duration and the first video frame's time.
fn probe(file: &Path) -> (f64, f64) {
    let out = Command::new(tool("ffprobe"))
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration:format=format_name",
        ])
        .args(["-of", "default=nw=1:nk=1"])
        .arg(file)
        .output()
        .expect("run ffprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    let duration: f64 = text
        .lines()
        .find_map(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("no duration: {text}"));
    let out = Command::new(tool("ffprobe"))
        .args([
            "-v",
            "error",
            "-select_streams",
            "v",
            "-read_intervals",
            "%+#1",
        ])
        .args(["-show_entries", "frame=pts_time", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .expect("run ffprobe");
    let first: f64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .expect("a first frame");
    (duration, first)
}

/// `ffmpeg -v error -i clip -f null -` prints nothing and succeeds.
fn decodes_cleanly(file: &Path) {
    let out = Command::new(tool("ffmpeg"))
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(file)
        .args(["-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where each segment of the recording's playlist starts, in seconds.
fn segment_starts(playlist: &str) -> Vec<f64> {
    let mut at = 0.0;
    playlist_segments(playlist)
        .into_iter()
        .map(|(duration, _)| {
            let start = at;
            at += duration;
            start
        })
        .collect()
}

/// The keyframe a clip starting at `start` begins with: its segment's start (the
/// publisher's GOP is one segment).
fn keyframe_before(starts: &[f64], start: f64) -> f64 {
    starts
        .iter()
        .copied()
        .filter(|s| *s <= start + 1e-6)
        .fold(0.0, f64::max)
}

struct Fetched {
    status: u16,
    cache_control: String,
    body: Vec<u8>,
}

fn fetch(node: &Node, path: &str, headers: &[(&str, &str)]) -> Fetched {
    let response = http_get(node.http, path, headers).expect("the edge answers");
    Fetched {
        status: response.status,
        cache_control: response.header("cache-control").unwrap_or("").to_owned(),
        body: response.body.clone(),
    }
}

/// Fetches a clip, writes it beside the test, and checks it as a whole: decodable, and
/// its first picture the recording's at the keyframe at or before `start`.
fn check_clip(node: &Node, rec_path: &str, start: f64, end: f64, name: &str) -> (Vec<u8>, f64) {
    let clip = fetch(
        node,
        &format!("{rec_path}/clip.mp4?start={start}&end={end}"),
        &[],
    );
    assert_eq!(clip.status, 200, "{}", String::from_utf8_lossy(&clip.body));
    assert_eq!(&clip.body[4..8], b"ftyp");
    // Faststart: the moov comes before the mdat.
    let moov = clip.body.windows(4).position(|w| w == b"moov").unwrap();
    let mdat = clip.body.windows(4).position(|w| w == b"mdat").unwrap();
    assert!(moov < mdat, "moov at {moov}, mdat at {mdat}");
    let file = node.dir.join(name);
    std::fs::write(&file, &clip.body).unwrap();
    decodes_cleanly(&file);
    let playlist = http_get(node.http, &format!("{rec_path}/playlist.m3u8"), &[])
        .unwrap()
        .text();
    let starts = segment_starts(&playlist);
    let keyframe = keyframe_before(&starts, start);
    let (duration, first_pts) = probe(&file);
    // Within one GOP (2 s) of what was asked, and starting on the keyframe.
    assert!(first_pts.abs() < 0.1, "first frame at {first_pts}");
    assert!(
        duration >= end - start - 0.1 && duration <= end - keyframe + 2.1,
        "{name}: {duration} s for {start}..{end} (keyframe {keyframe})"
    );
    let ours = gray_picture(&clip.body);
    let index = starts.iter().rposition(|s| *s <= keyframe + 1e-6).unwrap();
    let theirs = gray_picture(&segment_with_init(node.http, rec_path, &playlist, index));
    let diff = mean_abs_diff(&ours, &theirs);
    assert!(diff < 2.0, "{name}: first picture differs by {diff}");
    // And not the picture a GOP later (testsrc2 moves).
    let later = gray_picture(&segment_with_init(
        node.http,
        rec_path,
        &playlist,
        index + 1,
    ));
    assert!(
        mean_abs_diff(&ours, &later) > diff,
        "{name}: pictures do not move"
    );
    (clip.body, duration)
}

#[test]
fn clips_of_live_ended_and_archived_recordings() {
    let node = Node::up(
        "clips",
        "[archive]\ndefault_after = \"4s\"\n[edge]\nmax_clip_duration = \"60s\"\n",
    );
    let publisher = publish(
        &tool("ffmpeg"),
        &node.publish_url("demo", "clip", KEY),
        16,
        "h264",
    );
    // Live: three segments recorded.
    wait_until("three segments", Duration::from_secs(30), || {
        segments_recorded(&node, "demo", "clip") >= 3
    });
    let dir = node.recordings("demo", "clip").pop().unwrap();
    let rec = dir.file_name().unwrap().to_str().unwrap().to_owned();
    let rec_path = format!("/demo/clip/{rec}");

    // A recorded span of a live recording: kept.
    let live = fetch(
        &node,
        &format!("{rec_path}/clip.mp4?start=0.5&end=2.5"),
        &[],
    );
    assert_eq!(live.status, 200, "{}", String::from_utf8_lossy(&live.body));
    assert!(
        live.cache_control.contains("immutable"),
        "{}",
        live.cache_control
    );
    // A span not recorded yet: what there is, not kept.
    let open = fetch(&node, &format!("{rec_path}/clip.mp4?start=0&end=50"), &[]);
    assert_eq!(open.status, 200);
    assert_eq!(open.cache_control, "no-store");
    // Refusals.
    for (query, status, says) in [
        ("start=0&end=61", 400, "at most 60 s"),
        ("start=3&end=1", 400, "start must come before end"),
        ("start=-1&end=2", 400, "start"),
        ("start=NaN&end=2", 400, "start"),
        ("end=2", 400, "start and end"),
        ("start=500&end=510", 400, "after what is recorded"),
    ] {
        let refused = fetch(&node, &format!("{rec_path}/clip.mp4?{query}"), &[]);
        let text = String::from_utf8_lossy(&refused.body);
        assert_eq!(refused.status, status, "{query}: {text}");
        assert!(text.contains(says), "{query}: {text}");
    }
    let unknown = fetch(
        &node,
        "/demo/clip/20200101T000000Z-0000/clip.mp4?start=0&end=2",
        &[],
    );
    assert_eq!(unknown.status, 404);

    // Ended: a span across segments, cut at keyframes.
    assert!(wait_output(publisher).status.success());
    let journal = node.wait_recording_state("demo", "clip", "ended");
    let (whole, _) = check_clip(&node, &rec_path, 2.5, 7.5, "ended.mp4");
    // Again: from the cache, identical.
    let again = fetch(
        &node,
        &format!("{rec_path}/clip.mp4?start=2.5&end=7.5"),
        &[],
    );
    assert_eq!(again.body, whole);
    assert!(again.cache_control.contains("immutable"));
    // A range of the middle.
    let (from, to) = (whole.len() / 3, whole.len() / 3 + 9999);
    let range = http_get(
        node.http,
        &format!("{rec_path}/clip.mp4?start=2.5&end=7.5"),
        &[("Range", &format!("bytes={from}-{to}"))],
    )
    .unwrap();
    assert_eq!(range.status, 206);
    assert_eq!(
        range.header("content-range"),
        Some(format!("bytes {from}-{to}/{}", whole.len()).as_str())
    );
    assert_eq!(range.body, whole[from..=to]);
    // By wall-clock time: segments 1 to 3 by their program date times are segments 1
    // to 3 by their offsets.
    let time_of = |n: usize| {
        journal["segments"][n]["program_date_time"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let by_time = fetch(
        &node,
        &format!("{rec_path}/clip.mp4?from={}&to={}", time_of(1), time_of(3)),
        &[],
    );
    assert_eq!(
        by_time.status,
        200,
        "{}",
        String::from_utf8_lossy(&by_time.body)
    );
    let playlist = http_get(node.http, &format!("{rec_path}/playlist.m3u8"), &[])
        .unwrap()
        .text();
    let starts = segment_starts(&playlist);
    let by_offset = fetch(
        &node,
        &format!(
            "{rec_path}/clip.mp4?start={:.3}&end={:.3}",
            starts[1], starts[3]
        ),
        &[],
    );
    assert_eq!(by_offset.status, 200);
    assert!(by_time.body == by_offset.body, "the same span, two ways");

    // Archived: the local copy gone, a span no one asked for yet comes from storage.
    wait_until("the archive", Duration::from_secs(40), || !dir.exists());
    check_clip(&node, &rec_path, 8.5, 12.0, "archived.mp4");
}
