//! The RTP front end against a real sender: ffmpeg encodes H.264 (x264, zero latency as
//! WebRTC encoders are) and Opus and sends them as RTP to loopback UDP sockets here; the
//! packets go through `RtpFrontEnd` → `Segmenter` → fMP4, and ffmpeg's own decoders
//! check the result: every frame decodes, the Opus track is 48 kHz `opus`, and with
//! packets lost the output still decodes without one error, only shorter.
//!
//! Needs `ffmpeg` and `ffprobe` (Debian: `apt-get install ffmpeg`; scripts/test.sh
//! installs them).

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use streamcdn_media::fmp4;
use streamcdn_media::input::MediaInput;
use streamcdn_media::playlist::{
    render_multivariant, target_duration, MediaPlaylist, PlaylistKind, PlaylistSegment, Variant,
};
use streamcdn_media::rtp::{RtpFrontEnd, RtpOpus, RtpPacket, RtpStats, RtpVideoCodec};
use streamcdn_media::segmenter::{Segmenter, SegmenterEvent, Tracks, DEFAULT_PART_TARGET_MS};

const SECONDS: u32 = 4;

/// One datagram as it arrived.
struct Datagram {
    arrival: Duration,
    audio: bool,
    bytes: Vec<u8>,
}

fn require(tool: &str) {
    let found = Command::new(tool)
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is needed: apt-get install ffmpeg (scripts/test.sh installs it)"
    );
}

/// Runs ffmpeg for `SECONDS` of 640x360 test pattern at 30 fps and a 440 Hz tone,
/// sending H.264 and Opus RTP to two sockets here; returns every datagram in arrival
/// order once ffmpeg has exited and both sockets are drained.
fn capture(codec: RtpVideoCodec) -> Vec<Datagram> {
    require("ffmpeg");
    let bind = || UdpSocket::bind("127.0.0.1:0").expect("a loopback UDP socket");
    let (video, video_rtcp, audio, audio_rtcp) = (bind(), bind(), bind(), bind());
    let port = |s: &UdpSocket| s.local_addr().expect("a bound socket").port();
    let start = Instant::now();
    let got = Arc::new(Mutex::new(Vec::new()));
    let exited = Arc::new(AtomicBool::new(false));
    let receivers: Vec<_> = [
        (video.try_clone().expect("socket"), false),
        (audio.try_clone().expect("socket"), true),
    ]
    .into_iter()
    .map(|(socket, is_audio)| {
        let (got, exited) = (got.clone(), exited.clone());
        std::thread::spawn(move || {
            socket
                .set_read_timeout(Some(Duration::from_millis(200)))
                .expect("a read timeout");
            let mut buf = vec![0u8; 65536];
            loop {
                match socket.recv(&mut buf) {
                    Ok(n) => got.lock().expect("lock").push(Datagram {
                        arrival: start.elapsed(),
                        audio: is_audio,
                        bytes: buf[..n].to_vec(),
                    }),
                    // Quiet for 200 ms after ffmpeg exited: drained.
                    Err(_) if exited.load(Ordering::SeqCst) => return,
                    Err(_) => {}
                }
            }
        })
    })
    .collect();
    let secs = SECONDS.to_string();
    let lavfi =
        |source: &'static str| ["-t", &secs, "-f", "lavfi", "-i", source].map(str::to_owned);
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(lavfi("testsrc2=size=640x360:rate=30"))
        .args(lavfi("sine=frequency=440:sample_rate=48000"))
        .args(["-map", "0:v"])
        .args(match codec {
            RtpVideoCodec::H264 => ["-c:v", "libx264", "-tune", "zerolatency", "-g", "30"],
            RtpVideoCodec::H265 => [
                "-c:v",
                "libx265",
                "-tune",
                "zerolatency",
                "-x265-params",
                "keyint=30:log-level=error",
            ],
        })
        .args(["-pix_fmt", "yuv420p", "-f", "rtp", "-payload_type", "96"])
        .arg(format!(
            "rtp://127.0.0.1:{}?rtcpport={}&pkt_size=1200",
            port(&video),
            port(&video_rtcp)
        ))
        .args([
            "-map",
            "1:a",
            "-c:a",
            "libopus",
            "-b:a",
            "64k",
            "-f",
            "rtp",
            "-payload_type",
            "111",
        ])
        .arg(format!(
            "rtp://127.0.0.1:{}?rtcpport={}",
            port(&audio),
            port(&audio_rtcp)
        ))
        .stdout(std::process::Stdio::null())
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg failed: {status}");
    exited.store(true, Ordering::SeqCst);
    for r in receivers {
        r.join().expect("a receiver thread");
    }
    let mut got = std::mem::take(&mut *got.lock().expect("lock"));
    got.sort_by_key(|d| d.arrival);
    got
}

/// What came out of the pipeline.
struct Packaged {
    dir: PathBuf,
    file: PathBuf,
    tracks: Vec<Tracks>,
    stats: RtpStats,
    video_frames: usize,
    audio_frames: usize,
}

/// Feeds the datagrams that `keep` keeps (given each one's index in its track) to the
/// front end and the segmenter, and writes the init segment and every part to one fMP4
/// file, and beside it the same as HLS (`master.m3u8`, `index.m3u8`, `init.mp4`,
/// segments) for a player to try (`KEEP_RTP_OUTPUT=1` keeps the directory).
fn package(
    codec: RtpVideoCodec,
    name: &str,
    datagrams: &[Datagram],
    keep: impl Fn(usize, &Datagram) -> bool,
) -> Packaged {
    let mut rtp = RtpFrontEnd::new(Some(codec), Some(RtpOpus { channels: 2 }));
    let mut segmenter = Segmenter::new(2000, DEFAULT_PART_TARGET_MS);
    let mut events = Vec::new();
    let (mut video_frames, mut audio_frames) = (0, 0);
    let mut count = |inputs: &Vec<MediaInput>| {
        for input in inputs {
            match input {
                MediaInput::Video(_) => video_frames += 1,
                MediaInput::Audio(_) => audio_frames += 1,
                _ => {}
            }
        }
    };
    let mut index = [0, 0];
    for d in datagrams {
        let i = &mut index[usize::from(d.audio)];
        *i += 1;
        if !keep(*i - 1, d) {
            continue;
        }
        let (_, packet) = RtpPacket::parse(&d.bytes).expect("ffmpeg sends RTP");
        let inputs = if d.audio {
            rtp.push_audio(packet, d.arrival)
        } else {
            rtp.push_video(packet, d.arrival)
        };
        count(&inputs);
        for input in inputs {
            events.extend(segmenter.push(input));
        }
        // The WebRTC stack would send a PLI here.
        rtp.keyframe_wanted(d.arrival);
    }
    let inputs = rtp.finish();
    count(&inputs);
    for input in inputs {
        events.extend(segmenter.push(input));
    }
    events.extend(segmenter.finish());

    let dir = std::env::temp_dir().join(format!("streamcdn-rtp-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let mut bytes = Vec::new();
    let mut tracks = Vec::new();
    let (mut segment, mut segments) = (Vec::new(), Vec::new());
    for event in events {
        match event {
            SegmenterEvent::Tracks(t) => {
                let init = fmp4::init_segment(&t).expect("an init segment");
                bytes.extend_from_slice(&init);
                std::fs::write(dir.join("init.mp4"), init).expect("writes the init segment");
                tracks.push(t);
            }
            SegmenterEvent::Part(part) => {
                let part = fmp4::part(&part).expect("a part");
                bytes.extend_from_slice(&part);
                segment.extend_from_slice(&part);
            }
            SegmenterEvent::SegmentEnd(end) => {
                let uri = format!("{:06}.m4s", end.index);
                std::fs::write(dir.join(&uri), std::mem::take(&mut segment))
                    .expect("writes a segment");
                segments.push(PlaylistSegment {
                    uri,
                    duration_secs: end.duration_secs,
                    program_date_time: "2026-01-01T00:00:00.000Z".into(),
                    discontinuity: end.discontinuity,
                    map_uri: Some("init.mp4".into()),
                    parts: Vec::new(),
                });
            }
        }
    }
    let playlist = MediaPlaylist {
        kind: PlaylistKind::Vod,
        target_duration_secs: target_duration(2.0, &segments),
        media_sequence: 1,
        discontinuity_sequence: 0,
        segments: &segments,
        ended: true,
        low_latency: None,
    };
    std::fs::write(dir.join("index.m3u8"), playlist.render()).expect("writes the playlist");
    if let Some(t) = tracks.first() {
        let master = render_multivariant(&[Variant {
            uri: "index.m3u8".into(),
            bandwidth: 1_000_000,
            average_bandwidth: None,
            codecs: codecs(t),
            resolution: t.video.as_ref().map(|v| (v.width, v.height)),
            frame_rate: None,
        }]);
        std::fs::write(dir.join("master.m3u8"), master).expect("writes the playlist");
    }
    let file = dir.join("stream.mp4");
    std::fs::write(&file, bytes).expect("writes the fMP4");
    Packaged {
        dir,
        file,
        tracks,
        stats: rtp.stats().clone(),
        video_frames,
        audio_frames,
    }
}

/// The video frames ffmpeg sent: its marked packets.
fn sent_frames(datagrams: &[Datagram]) -> usize {
    datagrams
        .iter()
        .filter(|d| !d.audio && RtpPacket::parse(&d.bytes).is_some_and(|(_, p)| p.marker))
        .count()
}

/// What the multivariant playlist's `CODECS` lists, as the ingest writes it.
fn codecs(tracks: &Tracks) -> Vec<String> {
    tracks
        .video
        .iter()
        .map(|v| v.codec_string.clone())
        .chain(tracks.audio.iter().map(|a| a.codec_string.clone()))
        .collect()
}

#[derive(Debug, PartialEq)]
struct Probed {
    codec: String,
    frames: usize,
    sample_rate: Option<u32>,
}

/// ffprobe's decoded frame count per stream (video first).
fn probe(file: &Path) -> Vec<Probed> {
    require("ffprobe");
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-show_entries"])
        .args([
            "stream=codec_type,codec_name,nb_read_frames,sample_rate",
            "-of",
            "csv=p=0",
        ])
        .arg(file)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut streams: Vec<Probed> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            // codec_name,codec_type,sample_rate (audio only),nb_read_frames
            let fields: Vec<&str> = line.split(',').collect();
            Probed {
                codec: fields[0].to_owned(),
                sample_rate: (fields[1] == "audio").then(|| fields[2].parse().expect("a rate")),
                frames: fields
                    .last()
                    .and_then(|f| f.parse().ok())
                    .expect("a frame count"),
            }
        })
        .collect();
    streams.sort_by_key(|s| s.sample_rate.is_some());
    streams
}

/// What ffmpeg's decoders say about the file: nothing, if it is clean.
fn decode_errors(file: &Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(file)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn ffmpeg_h264_and_opus_rtp_become_fmp4_that_decodes_every_frame() {
    let datagrams = capture(RtpVideoCodec::H264);
    let sent_frames = sent_frames(&datagrams);
    let sent_audio = datagrams.iter().filter(|d| d.audio).count();
    // ffmpeg sent what it was asked to.
    assert_eq!(sent_frames, 30 * SECONDS as usize);
    assert!((50 * SECONDS as usize..=50 * SECONDS as usize + 2).contains(&sent_audio));

    let out = package(RtpVideoCodec::H264, "clean", &datagrams, |_, _| true);
    assert_eq!(out.tracks.len(), 1, "one init segment: {:#?}", out.tracks);
    let codecs = codecs(&out.tracks[0]);
    assert!(
        codecs[0].starts_with("avc1.42") || codecs[0].starts_with("avc1.64"),
        "{codecs:?}"
    );
    assert_eq!(codecs[1], "opus");
    let multivariant = render_multivariant(&[Variant {
        uri: "live.m3u8".into(),
        bandwidth: 1_000_000,
        average_bandwidth: None,
        codecs: codecs.clone(),
        resolution: Some((640, 360)),
        frame_rate: None,
    }]);
    assert!(multivariant.contains(&format!("CODECS=\"{},opus\"", codecs[0])));
    assert_eq!(
        (
            out.stats.lost,
            out.stats.dropped_frames,
            out.stats.malformed
        ),
        (0, 0, 0)
    );
    assert_eq!(out.video_frames, sent_frames);

    let probed = probe(&out.file);
    eprintln!(
        "sent {sent_frames} frames and {sent_audio} Opus packets; decoded {probed:?}; {:?}",
        out.stats
    );
    assert_eq!(probed.len(), 2, "{probed:?}");
    assert_eq!(probed[0].codec, "h264");
    assert_eq!(probed[0].frames, sent_frames, "every video frame decodes");
    assert_eq!(probed[1].codec, "opus");
    assert_eq!(probed[1].sample_rate, Some(48000));
    // Audio before the first keyframe has no video to go with: a frame or two.
    assert!(
        probed[1].frames + 3 >= sent_audio && probed[1].frames <= sent_audio,
        "{} of {sent_audio} Opus frames",
        probed[1].frames
    );
    assert_eq!(decode_errors(&out.file), "");
    if std::env::var_os("KEEP_RTP_OUTPUT").is_none() {
        std::fs::remove_dir_all(&out.dir).expect("removes the temp dir");
    }
}

#[test]
fn lost_packets_leave_a_shorter_stream_that_decodes_without_errors() {
    let datagrams = capture(RtpVideoCodec::H264);
    let clean = package(RtpVideoCodec::H264, "reference", &datagrams, |_, _| true);
    // Every 150th video datagram (about one a second) and every 25th audio one.
    let lossy = package(RtpVideoCodec::H264, "lossy", &datagrams, |i, d| {
        i % if d.audio { 25 } else { 150 } != 20
    });
    assert!(lossy.stats.lost > 0);
    assert!(lossy.stats.dropped_frames > 0 && lossy.stats.keyframe_requests > 1);
    let (clean_probe, lossy_probe) = (probe(&clean.file), probe(&lossy.file));
    eprintln!(
        "decoded {clean_probe:?} clean, {lossy_probe:?} lossy; {:?}",
        lossy.stats
    );
    assert_eq!(lossy_probe.len(), 2, "{lossy_probe:?}");
    assert!(
        lossy_probe[0].frames < clean_probe[0].frames && lossy_probe[0].frames > 30,
        "{lossy_probe:?} against {clean_probe:?}"
    );
    assert!(lossy_probe[1].frames < clean_probe[1].frames);
    // Audio after the last frame the video got has no segment to go into.
    assert!(lossy_probe[1].frames <= lossy.audio_frames);
    assert_eq!(
        lossy_probe[0].frames, lossy.video_frames,
        "every frame handed on decodes"
    );
    assert_eq!(decode_errors(&lossy.file), "", "a clean gap, no garbage");
    for dir in [&clean.dir, &lossy.dir] {
        std::fs::remove_dir_all(dir).expect("removes the temp dir");
    }
}

#[test]
fn ffmpeg_hevc_rtp_becomes_fmp4_that_decodes_every_frame() {
    let datagrams = capture(RtpVideoCodec::H265);
    let sent_frames = sent_frames(&datagrams);
    assert_eq!(sent_frames, 30 * SECONDS as usize);
    let out = package(RtpVideoCodec::H265, "hevc", &datagrams, |_, _| true);
    assert_eq!(out.tracks.len(), 1, "one init segment");
    let codecs = codecs(&out.tracks[0]);
    assert!(codecs[0].starts_with("hvc1.1."), "{codecs:?}");
    assert_eq!(out.video_frames, sent_frames);
    let probed = probe(&out.file);
    eprintln!(
        "sent {sent_frames} HEVC frames; decoded {probed:?}; {:?}",
        out.stats
    );
    assert_eq!(probed[0].codec, "hevc");
    assert_eq!(probed[0].frames, sent_frames, "every video frame decodes");
    assert_eq!(probed[1].codec, "opus");
    assert_eq!(decode_errors(&out.file), "");
    std::fs::remove_dir_all(&out.dir).expect("removes the temp dir");
}
