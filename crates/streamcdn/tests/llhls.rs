//! Low-Latency HLS at the ingest's origin, with ffmpeg publishing: the live playlist's
//! tags (rfc8216bis), blocking reload (held, 400, 503, ended), delta updates, preload
//! hints held until their part is complete, parts that decode and add up to their
//! segment, and a provider that turned LL-HLS off.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[derive(Debug, Clone, PartialEq)]
struct Part {
    duration: f64,
    uri: String,
    independent: bool,
}

#[derive(Debug)]
struct Segment {
    msn: u64,
    duration: f64,
    uri: String,
    parts: Vec<Part>,
}

/// A live LL-HLS playlist, parsed.
#[derive(Debug)]
struct Playlist {
    version: u32,
    target_duration: f64,
    part_target: f64,
    part_hold_back: f64,
    can_skip_until: f64,
    skipped: u64,
    segments: Vec<Segment>,
    /// Parts after the last `EXTINF`: the segment being cut.
    open_parts: Vec<Part>,
    hint: Option<String>,
    ended: bool,
}

fn attribute<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let (_, attributes) = line.split_once(':')?;
    attributes.split(',').find_map(|a| {
        let (k, v) = a.split_once('=')?;
        (k == name).then(|| v.trim_matches('"'))
    })
}

fn parse(text: &str) -> Playlist {
    let number = |tag: &str| tag_value(text, tag).and_then(|v| v.parse::<f64>().ok());
    let control = text
        .lines()
        .find(|l| l.starts_with("#EXT-X-SERVER-CONTROL:"))
        .unwrap_or("");
    let part_inf = text
        .lines()
        .find(|l| l.starts_with("#EXT-X-PART-INF:"))
        .unwrap_or("");
    let skip = text
        .lines()
        .find(|l| l.starts_with("#EXT-X-SKIP:"))
        .unwrap_or("");
    let skipped = attribute(skip, "SKIPPED-SEGMENTS").map_or(0, |v| v.parse().unwrap());
    let mut msn = number("#EXT-X-MEDIA-SEQUENCE").unwrap() as u64 + skipped;
    let mut playlist = Playlist {
        version: number("#EXT-X-VERSION").unwrap() as u32,
        target_duration: number("#EXT-X-TARGETDURATION").unwrap(),
        part_target: attribute(part_inf, "PART-TARGET").map_or(0.0, |v| v.parse().unwrap()),
        part_hold_back: attribute(control, "PART-HOLD-BACK").map_or(0.0, |v| v.parse().unwrap()),
        can_skip_until: attribute(control, "CAN-SKIP-UNTIL").map_or(0.0, |v| v.parse().unwrap()),
        skipped,
        segments: Vec::new(),
        open_parts: Vec::new(),
        hint: None,
        ended: text.contains("#EXT-X-ENDLIST"),
    };
    let mut duration = None;
    for line in text.lines() {
        if line.starts_with("#EXT-X-PART:") {
            playlist.open_parts.push(Part {
                duration: attribute(line, "DURATION").unwrap().parse().unwrap(),
                uri: attribute(line, "URI").unwrap().to_owned(),
                independent: attribute(line, "INDEPENDENT") == Some("YES"),
            });
        } else if line.starts_with("#EXT-X-PRELOAD-HINT:") {
            assert_eq!(attribute(line, "TYPE"), Some("PART"), "{line}");
            playlist.hint = attribute(line, "URI").map(str::to_owned);
        } else if let Some(d) = line.strip_prefix("#EXTINF:") {
            duration = d.trim_end_matches(',').parse().ok();
        } else if !line.starts_with('#') && !line.is_empty() {
            playlist.segments.push(Segment {
                msn,
                duration: duration.take().unwrap(),
                uri: line.to_owned(),
                parts: std::mem::take(&mut playlist.open_parts),
            });
            msn += 1;
        }
    }
    playlist
}

fn get(node: &Node, path: &str) -> HttpResponse {
    http_request_at("127.0.0.1", node.origin, "GET", path, &[]).unwrap()
}

/// The live playlist once it has `segments` and lists parts of the segment being cut.
fn live_playlist(node: &Node, base: &str, segments: usize) -> Playlist {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = get(node, &format!("{base}/live.m3u8"));
        if r.status == 200 {
            let p = parse(&r.text());
            if p.segments.len() >= segments && !p.open_parts.is_empty() {
                return p;
            }
        }
        assert!(Instant::now() < deadline, "no LL playlist: {}", r.text());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// (msn, part) of a part URI such as `<rec>/000042.3.m4s`.
fn part_position(uri: &str) -> (u64, u64) {
    let file = uri.rsplit('/').next().unwrap();
    let mut fields = file.split('.');
    let msn = fields.next().unwrap().parse().unwrap();
    let part = fields.next().unwrap().parse().unwrap();
    (msn, part)
}

#[test]
fn low_latency_hls_at_the_origin() {
    let ffmpeg = tool("ffmpeg");
    let node = Node::up("llhls", "[hls]\nlive_window = 12\n");
    let publisher = publish(&ffmpeg, &node.publish_url("demo", "ll", KEY), 30, "h264");
    let plain = publish(&ffmpeg, &node.publish_url("plain", "cam", KEY), 8, "h264");
    let base = "/demo/ll";

    // The playlist's tags (rfc8216bis 4.4.3.7-8, 4.4.4.9, 4.4.5.2; Apple 14.3).
    let p = live_playlist(&node, base, 5);
    assert!(p.version >= 9, "{p:?}");
    assert_eq!(p.part_target, 0.334);
    assert!(p.part_hold_back >= 3.0 * p.part_target, "{p:?}");
    assert!(p.can_skip_until >= 6.0 * p.target_duration, "{p:?}");
    assert!(p.segments[0].msn >= 1, "media sequence numbers start at 1");
    let hint = p.hint.clone().expect("a preload hint");
    let last_open = p.open_parts.last().unwrap();
    let (open_msn, open_part) = part_position(&last_open.uri);
    assert_eq!(open_msn, p.segments.last().unwrap().msn + 1);
    assert_eq!(
        part_position(&hint),
        (open_msn, open_part + 1),
        "the hint is the next part"
    );
    // Parts are listed for the last three target durations only; each at most the part
    // target, at least 85% of it unless independent or the last of its segment.
    let listed: Vec<&Segment> = p.segments.iter().filter(|s| !s.parts.is_empty()).collect();
    assert!(
        !listed.is_empty() && listed.len() < p.segments.len(),
        "{p:?}"
    );
    let listed_span: f64 = listed.iter().skip(1).map(|s| s.duration).sum();
    assert!(listed_span <= 3.0 * p.target_duration, "{p:?}");
    for s in &listed {
        let sum: f64 = s.parts.iter().map(|x| x.duration).sum();
        assert!(
            (sum - s.duration).abs() < 0.01,
            "segment {} is its parts: {s:?}",
            s.msn
        );
        assert!(s.parts[0].independent, "{s:?}");
        for (i, part) in s.parts.iter().enumerate() {
            assert!(part.duration <= p.part_target + 1e-6, "{part:?}");
            if !part.independent && i + 1 < s.parts.len() {
                assert!(part.duration >= 0.85 * p.part_target, "{part:?}");
            }
        }
    }

    // A hinted part is held until complete, then sent whole; the segment is exactly its
    // parts, and init + parts decode.
    let hinted = get(&node, &format!("{base}/{hint}"));
    assert_eq!(hinted.status, 200, "{}", hinted.text());
    assert!(!hinted.body.is_empty());
    let blocked = get(
        &node,
        &format!("{base}/live.m3u8?_HLS_msn={}&_HLS_part={}", open_msn + 1, 0),
    );
    assert_eq!(blocked.status, 200);
    assert!(blocked
        .header("cache-control")
        .is_some_and(|c| c.contains("max-age=12")));
    let after = parse(&blocked.text());
    let whole = after
        .segments
        .iter()
        .find(|s| s.msn == open_msn)
        .expect("the open segment completed");
    let mut joined = Vec::new();
    for part in &whole.parts {
        joined.extend(get(&node, &format!("{base}/{}", part.uri)).body);
    }
    let segment = get(&node, &format!("{base}/{}", whole.uri));
    assert_eq!(segment.status, 200);
    assert_eq!(
        sha256_hex(&segment.body),
        sha256_hex(&joined),
        "segment = its parts"
    );
    if part_position(&hint).0 == open_msn {
        let index = part_position(&hint).1 as usize;
        assert_eq!(whole.parts[index].uri, hint);
        assert_eq!(
            sha256_hex(&hinted.body),
            sha256_hex(&get(&node, &format!("{base}/{hint}")).body)
        );
    }
    let recording = whole.uri.split('/').next().unwrap();
    let init = get(&node, &format!("{base}/{recording}/init.mp4")).body;
    let dir = temp_dir("llhls-parts");
    let file = dir.join("parts.mp4");
    std::fs::write(&file, [init, joined].concat()).unwrap();
    let decoded = decode(file.to_str().unwrap(), &[]);
    assert!(
        decoded.video_frames >= 55 && decoded.audio_frames > 0,
        "{decoded:?}"
    );

    // Blocking reload: answered once the part exists, with it in the playlist.
    let now = live_playlist(&node, base, 1);
    let (msn, part) = part_position(now.hint.as_ref().unwrap());
    let held = get(
        &node,
        &format!("{base}/live.m3u8?_HLS_msn={msn}&_HLS_part={part}"),
    );
    assert_eq!(held.status, 200);
    assert!(
        held.text().contains(&format!("{msn:06}.{part}.m4s")),
        "{}",
        held.text()
    );
    // Too far ahead (more than two segments, or more parts than the Advance Part Limit),
    // or _HLS_part without _HLS_msn: 400, never cached.
    let last = now.segments.last().unwrap().msn;
    for query in [
        format!("_HLS_msn={}", last + 3),
        format!("_HLS_msn={}&_HLS_part=20", last + 1),
        "_HLS_part=1".to_owned(),
        "_HLS_msn=x".to_owned(),
    ] {
        let r = get(&node, &format!("{base}/live.m3u8?{query}"));
        assert_eq!(r.status, 400, "{query}: {}", r.text());
        assert_eq!(r.header("cache-control"), Some("no-store"), "{query}");
    }

    // A stalled publisher: a blocking request gives up with 503 after three target
    // durations.
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &publisher.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    std::thread::sleep(Duration::from_millis(500));
    let stalled = live_playlist(&node, base, 1);
    let (msn, part) = part_position(stalled.hint.as_ref().unwrap());
    let started = Instant::now();
    let r = get(
        &node,
        &format!("{base}/live.m3u8?_HLS_msn={msn}&_HLS_part={}", part + 1),
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    std::process::Command::new("kill")
        .args(["-CONT", &publisher.id().to_string()])
        .status()
        .unwrap();

    // Delta updates leave out segments older than CAN-SKIP-UNTIL.
    let deadline = Instant::now() + Duration::from_secs(20);
    let full = loop {
        let full = parse(&get(&node, &format!("{base}/live.m3u8")).text());
        if full.segments.len() >= 9 {
            break full;
        }
        assert!(Instant::now() < deadline, "{full:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let delta_text = get(&node, &format!("{base}/live.m3u8?_HLS_skip=YES")).text();
    let delta = parse(&delta_text);
    assert!(delta.skipped >= 1, "{delta_text}");
    let first_kept = delta.segments.first().unwrap();
    let kept_span: f64 = delta.segments.iter().map(|s| s.duration).sum();
    assert!(
        kept_span >= delta.can_skip_until - p.target_duration,
        "{delta_text}"
    );
    assert!(full.segments.iter().any(|s| s.msn == first_kept.msn));
    assert!(full.segments.len() > delta.segments.len());

    // A provider with LL-HLS off: a plain live playlist.
    let plain_text = get(&node, "/plain/cam/live.m3u8").text();
    assert!(plain_text.contains("#EXTINF"), "{plain_text}");
    assert!(
        !plain_text.contains("#EXT-X-PART") && !plain_text.contains("PRELOAD-HINT"),
        "{plain_text}"
    );
    wait_output(plain);

    // Once ended, directives are ignored: answered at once with ENDLIST.
    let published = wait_output(publisher);
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    node.wait_recording_state("demo", "ll", "ended");
    let ended = get(&node, &format!("{base}/live.m3u8?_HLS_msn=999&_HLS_part=0"));
    assert_eq!(ended.status, 200);
    let ended = parse(&ended.text());
    assert!(ended.ended && ended.hint.is_none() && ended.open_parts.is_empty());
}
