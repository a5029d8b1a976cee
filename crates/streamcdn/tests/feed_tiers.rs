//! The low-latency feed through the cache tiers: an ingest, a mid-tier and two edges
//! below it. Forty readers of the feed, split over the edges, join a live ffmpeg
//! publish: each starts at a keyframe with the codec configurations, then receives
//! every frame in order; what one reader received decodes with ffprobe. However many
//! readers, the ingest serves the feed once (to the mid-tier) and the mid-tier once per
//! edge; once the readers leave, every tier drops its upstream connection.

mod common;

use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use streamcdn_media::feed::FeedMessage;
use streamcdn_media::input::MediaInput;
use streamcdn_media::segmenter::{Segmenter, SegmenterEvent};

use common::feed::{read_feed, video_frames, Received};
use common::*;

const READERS: usize = 40;
const READ_FOR: Duration = Duration::from_secs(5);

/// The received feed packaged as a fragmented MP4, as the ingest packages a stream.
fn package(received: &[Received]) -> Vec<u8> {
    let mut segmenter = Segmenter::new(2000, 500);
    let mut events = Vec::new();
    for r in received {
        if let FeedMessage::Media(input) = &r.message {
            events.extend(segmenter.push(input.clone()));
        }
    }
    events.extend(segmenter.finish());
    let mut file = Vec::new();
    for event in events {
        match event {
            SegmenterEvent::Tracks(tracks) => {
                file.extend_from_slice(&streamcdn_media::fmp4::init_segment(&tracks).unwrap())
            }
            SegmenterEvent::Part(part) => {
                file.extend_from_slice(&streamcdn_media::fmp4::part(&part).unwrap())
            }
            SegmenterEvent::SegmentEnd(_) => {}
        }
    }
    file
}

#[test]
fn feed_readers_through_two_tiers_cost_each_tier_one_upstream_connection() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let redis = Redis::start();
    let registry = redis.registry_toml("feed-tiers");
    let ingest = Node::role("feed-ingest", "ingest", &registry);
    let mid = Node::role(
        "feed-mid",
        "edge",
        &format!("{registry}[edge]\ntier = \"mid\"\n"),
    );
    let below = |name| {
        Node::role(
            name,
            "edge",
            &format!("{registry}[edge]\nparents = [\"{}\"]\n", mid.http_base()),
        )
    };
    let edges = [below("feed-edge-a"), below("feed-edge-b")];
    let mut publisher = publish(
        &tool("ffmpeg"),
        &ingest.publish_url("demo", "cam", KEY),
        40,
        "h264",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http_get(edges[0].http, "/demo/cam/live.m3u8", &[])
        .is_ok_and(|a| a.status == 200 && !playlist_segments(&a.text()).is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "the stream never went live:\n{}",
            ingest.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        http_get(edges[0].http, "/demo/nobody/feed", &[])
            .unwrap()
            .status,
        404,
        "a stream that is not live has no feed"
    );

    let ports = [edges[0].http, edges[1].http];
    let stop = Arc::new(AtomicBool::new(false));
    let readers = runtime.spawn({
        let stop = stop.clone();
        async move {
            // The last reads it as WebRTC viewers get it: with the AAC made Opus.
            let tasks: Vec<_> = (0..=READERS)
                .map(|i| {
                    let path = match i {
                        READERS => "/demo/cam/feed?audio=opus",
                        _ => "/demo/cam/feed",
                    };
                    tokio::spawn(read_feed("127.0.0.1", ports[i % 2], path, stop.clone()))
                })
                .collect();
            let mut received = Vec::new();
            for task in tasks {
                received.push(task.await.unwrap());
            }
            received
        }
    });
    // While they read: the ingest serves the feed once, the mid-tier once per edge.
    let while_reading = Instant::now() + READ_FOR / 2;
    while Instant::now() < while_reading {
        std::thread::sleep(Duration::from_millis(100));
    }
    let origin_feeds =
        ingest.metric("streamcdn_origin_requests_total{kind=\"feed\",status=\"200\"}");
    let mid_feeds = mid.metric("streamcdn_edge_requests_total{result=\"feed\"");
    let edge_feeds: f64 = edges
        .iter()
        .map(|e| e.metric("streamcdn_edge_requests_total{result=\"feed\""))
        .sum();
    while Instant::now() < while_reading + READ_FOR / 2 {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let received = runtime.block_on(readers).unwrap();
    assert_eq!(origin_feeds, 1.0, "the ingest served the feed once");
    assert_eq!(mid_feeds, 2.0, "the mid-tier served it once per edge");
    assert_eq!(
        edge_feeds,
        (READERS + 1) as f64,
        "the edges served every reader"
    );
    let mut received = received;
    let opus = received.pop().unwrap().expect("the Opus reader");

    for (i, messages) in received.iter().enumerate() {
        let messages = messages
            .as_ref()
            .unwrap_or_else(|e| panic!("reader {i}: {e}"));
        assert!(
            matches!(
                messages.first().map(|r| &r.message),
                Some(FeedMessage::Media(MediaInput::VideoConfig(_)))
            ),
            "reader {i} starts with the video configuration"
        );
        assert!(
            messages
                .iter()
                .any(|r| matches!(r.message, FeedMessage::Media(MediaInput::AudioConfig(_)))),
            "reader {i} has the audio configuration"
        );
        let frames = video_frames(messages);
        assert!(
            frames.first().is_some_and(|f| f.1),
            "reader {i} starts at a keyframe"
        );
        // 30 fps for about five seconds, less the part of the first GOP before the join.
        assert!(
            frames.len() >= 100,
            "reader {i}: only {} frames",
            frames.len()
        );
        // Every frame in order, none missing: RTMP's millisecond clock makes each step
        // 33 or 34 ms.
        for pair in frames.windows(2) {
            let step = pair[1].0 - pair[0].0;
            assert!(
                (2900..=3100).contains(&step),
                "reader {i}: a step of {step} ticks between frames"
            );
        }
    }
    let first = received[0].as_ref().unwrap();
    let file = temp_dir("feed-tiers").join("reader.mp4");
    std::fs::write(&file, package(first)).unwrap();
    let decoded = decode(file.to_str().unwrap(), &[]);
    assert_eq!(decoded.video_codec, "h264");
    assert_eq!(
        decoded.video_frames as usize,
        video_frames(first).len(),
        "every received frame decodes"
    );
    assert!(decoded.audio_frames > 100, "audio decodes: {decoded:?}");

    // The Opus reader: the same video, and Opus audio in 20 ms packets on the video's
    // timeline, which decodes.
    let opus_config = opus.iter().find_map(|r| match &r.message {
        FeedMessage::Media(MediaInput::AudioConfig(c)) => Some(c.clone()),
        _ => None,
    });
    assert_eq!(opus_config.map(|c| c.codec_string), Some("opus".to_owned()));
    let audio: Vec<i64> = opus
        .iter()
        .filter_map(|r| match &r.message {
            FeedMessage::Media(MediaInput::Audio(f)) => Some(f.pts),
            _ => None,
        })
        .collect();
    assert!(
        audio.len() >= 150,
        "{} Opus packets in five seconds",
        audio.len()
    );
    assert!(
        audio.windows(2).all(|w| w[1] - w[0] == 1800),
        "Opus packets 20 ms apart"
    );
    let video = video_frames(&opus);
    let (first_video, last_video) = (video[0].0, video[video.len() - 1].0);
    assert!(
        audio[0] >= first_video - 90_000 && *audio.last().unwrap() <= last_video + 90_000,
        "audio {}..{} on the video's timeline {first_video}..{last_video}",
        audio[0],
        audio.last().unwrap()
    );
    let file = temp_dir("feed-tiers").join("opus-reader.mp4");
    std::fs::write(&file, package(&opus)).unwrap();
    let decoded = decode(file.to_str().unwrap(), &[]);
    assert!(decoded.audio_frames >= 150, "Opus decodes: {decoded:?}");
    assert!(decoded.video_frames >= 100, "{decoded:?}");

    // Nobody reads any more: each tier lets its upstream go, tier after tier (each waits
    // 2 s for a returning reader; the Opus feed comes first on edge a).
    let deadline = Instant::now() + Duration::from_secs(20);
    let relays = |node: &Node| {
        node.metric("streamcdn_feed_relays") + node.metric("streamcdn_edge_opus_feeds")
    };
    while [&mid, &edges[0], &edges[1]]
        .iter()
        .any(|node| relays(node) != 0.0)
    {
        assert!(
            Instant::now() < deadline,
            "relays still open: mid {}, edges {} and {}",
            relays(&mid),
            relays(&edges[0]),
            relays(&edges[1])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = publisher.kill();
    let _ = publisher.wait();
}
