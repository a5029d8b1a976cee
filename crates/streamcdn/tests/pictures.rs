//! Thumbnails and posters end to end: ffmpeg publishes testsrc2 (a moving picture, a
//! keyframe a segment); the live stream's `thumbnail.jpg` through the edge is a JPEG of
//! the stream's size showing its latest keyframe, compared after the stream ends with
//! the pictures ffmpeg extracts from the recording at each keyframe; twenty requests at
//! once to the origin spawn one ffmpeg; `poster.jpg` is the first keyframe.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn thumbnails_and_posters_show_the_right_keyframes() {
    let node = Node::up("pictures", "");
    let publisher = publish(
        &tool("ffmpeg"),
        &node.publish_url("demo", "pic", KEY),
        16,
        "h264",
    );
    wait_until("four segments", Duration::from_secs(30), || {
        segments_recorded(&node, "demo", "pic") >= 4
    });

    // Twenty at once at the origin: one picture made.
    let made = || node.metric("streamcdn_pictures_made_total");
    let before = made();
    let answers: Vec<_> = (0..20)
        .map(|_| {
            let port = node.origin;
            std::thread::spawn(move || http_get(port, "/demo/pic/thumbnail.jpg", &[]).unwrap())
        })
        .collect();
    for answer in answers {
        let answer = answer.join().unwrap();
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let spawned = made() - before;
    // A new keyframe may arrive while they are answered: then two.
    assert!((1.0..=2.0).contains(&spawned), "{spawned} pictures made");

    // Through the edge: a JPEG of the stream's size, fresh for two seconds.
    let recorded = segments_recorded(&node, "demo", "pic");
    let thumbnail = http_get(node.http, "/demo/pic/thumbnail.jpg", &[]).unwrap();
    assert_eq!(thumbnail.status, 200, "{}", thumbnail.text());
    assert_eq!(thumbnail.header("content-type"), Some("image/jpeg"));
    assert_eq!(thumbnail.header("cache-control"), Some("public, max-age=2"));
    let file = node.dir.join("thumbnail.jpg");
    std::fs::write(&file, &thumbnail.body).unwrap();
    let probed = Command::new(tool("ffprobe"))
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height",
        ])
        .args(["-of", "csv=p=0"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&probed.stdout).trim(),
        "mjpeg,1280,720"
    );
    let thumb = gray_picture(&thumbnail.body);

    assert!(wait_output(publisher).status.success());
    node.wait_recording_state("demo", "pic", "ended");
    let rec = node.recordings("demo", "pic").pop().unwrap();
    let rec_path = format!("/demo/pic/{}", rec.file_name().unwrap().to_str().unwrap());
    let playlist = http_get(node.http, &format!("{rec_path}/playlist.m3u8"), &[])
        .unwrap()
        .text();
    // The keyframe it shows: the closest of the recording's keyframes (a segment's
    // first frame), and one of the latest when it was asked for.
    let keyframes: Vec<Vec<u8>> = (0..playlist_segments(&playlist).len())
        .map(|i| gray_picture(&segment_with_init(node.http, &rec_path, &playlist, i)))
        .collect();
    let diffs: Vec<f64> = keyframes.iter().map(|k| mean_abs_diff(&thumb, k)).collect();
    let (best, diff) = diffs
        .iter()
        .copied()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    assert!(diff < 1.0, "closest keyframe differs by {diff}: {diffs:?}");
    assert!(
        best + 1 >= recorded && best <= recorded + 1,
        "keyframe {best} shown, {recorded} segments recorded then: {diffs:?}"
    );
    let others = diffs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != best)
        .map(|(_, d)| *d)
        .fold(f64::MAX, f64::min);
    assert!(
        others > diff + 1.0 && others > 5.0 * diff,
        "pictures do not tell keyframes apart: {diffs:?}"
    );

    // The poster: the first keyframe, immutable.
    let poster = http_get(node.http, &format!("{rec_path}/poster.jpg"), &[]).unwrap();
    assert_eq!(poster.status, 200, "{}", poster.text());
    assert!(poster
        .header("cache-control")
        .unwrap()
        .contains("immutable"));
    let poster_diff = mean_abs_diff(&gray_picture(&poster.body), &keyframes[0]);
    assert!(poster_diff < 1.0, "poster differs by {poster_diff}");
    // A stream that is not live has no thumbnail.
    assert_eq!(
        http_get(node.http, "/demo/pic/thumbnail.jpg", &[])
            .unwrap()
            .status,
        404
    );
}
