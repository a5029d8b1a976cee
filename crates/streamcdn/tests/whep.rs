//! WebRTC playback (WHEP) at the edge: headless Chromium plays a stream published over
//! RTMP through an ingest, a mid-tier and an edge with the player page, over WebRTC, the
//! ingest serving the stream's feed once, and falls back to HLS, which shows the end,
//! when the stream ends; `?hls` forces HLS; the WHEP endpoint's
//! answers (not live, unsigned, preflight, PATCH, DELETE ending a session).

mod common;

use std::time::{Duration, Instant};

use common::page::Page;
use common::*;
use serde_json::Value;
use str0m::media::{Direction, MediaKind};
use str0m::RtcConfig;

fn frames(sample: &Value) -> u64 {
    sample["frames"].as_u64().unwrap_or(0)
}

/// A browser-like WHEP offer: receive H.264 video and Opus audio.
fn offer() -> String {
    let mut rtc = RtcConfig::new()
        .clear_codecs()
        .enable_h264(true)
        .enable_opus(true, false)
        .build(Instant::now());
    let candidate = str0m::Candidate::host("127.0.0.1:40000".parse().unwrap(), "udp").unwrap();
    rtc.add_local_candidate(candidate);
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, _pending) = api.apply().unwrap();
    offer.to_sdp_string()
}

fn post_offer(port: u16, path: &str, sdp: &str) -> HttpResponse {
    http_request_body(
        port,
        "POST",
        path,
        &[("Content-Type", "application/sdp")],
        sdp.as_bytes(),
    )
    .unwrap()
}

fn wait_live(node: &Node, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http_get(node.http, path, &[])
        .is_ok_and(|a| a.status == 200 && !playlist_segments(&a.text()).is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "{path} never went live:\n{}",
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_player_page_plays_over_webrtc_through_a_mid_tier() {
    require_browser_tools(&["playwright-core"]);
    let redis = Redis::start();
    let registry = redis.registry_toml("whep-tiers");
    let ingest = Node::role("whep-ingest", "ingest", &registry);
    let mid = Node::role(
        "whep-mid",
        "edge",
        &format!("{registry}[edge]\ntier = \"mid\"\n"),
    );
    let edge = Node::role(
        "whep-edge",
        "edge",
        &format!("{registry}[edge]\nparents = [\"{}\"]\n", mid.http_base()),
    );
    let publisher = publish(
        &tool("ffmpeg"),
        &ingest.publish_url("demo", "rtc", KEY),
        45,
        "h264",
    );
    wait_live(&edge, "/demo/rtc/live.m3u8");

    let browser = Page::open(
        "watch_page.mjs",
        &format!("http://127.0.0.1:{}/demo/rtc/", edge.http),
    );
    let mut first = None;
    let playing = browser.wait_for("WebRTC playback", Duration::from_secs(40), |sample| {
        let decoded = frames(sample);
        if sample["mode"] != "webrtc" || decoded == 0 {
            return false;
        }
        // Two seconds of frames decoded after the first seen over WebRTC.
        let first = *first.get_or_insert(decoded);
        decoded >= first + 60
    });
    assert_eq!(playing["mode"], "webrtc", "{playing}");
    assert_eq!(
        edge.metric("streamcdn_edge_webrtc_viewers"),
        1.0,
        "one WebRTC viewer at the edge"
    );
    assert!(edge.metric("streamcdn_edge_webrtc_bytes_total") > 0.0);
    assert_eq!(
        ingest.metric("streamcdn_origin_requests_total{kind=\"feed\",status=\"200\"}"),
        1.0,
        "the ingest served the feed once"
    );

    // `?hls` forces LL-HLS.
    let hls = Page::open(
        "watch_page.mjs",
        &format!("http://127.0.0.1:{}/demo/rtc/?hls", edge.http),
    );
    let mut first = None;
    let forced = hls.wait_for("HLS playback", Duration::from_secs(40), |sample| {
        let decoded = frames(sample);
        let first = *first.get_or_insert(decoded.max(1));
        sample["mode"] == "hls" && decoded >= first + 60
    });
    assert_eq!(forced["mode"], "hls", "{forced}");
    drop(hls);

    // The stream ends: the edge closes the PeerConnection, the page falls back to HLS,
    // which says it ended.
    let _ = wait_output(publisher);
    let ended = browser.wait_for("the end of the stream", Duration::from_secs(40), |sample| {
        sample["state"] == "ended"
    });
    assert_eq!(ended["mode"], "hls", "{ended}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while edge.metric("streamcdn_edge_webrtc_viewers") != 0.0 {
        assert!(
            Instant::now() < deadline,
            "the WebRTC viewer was not let go"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn whep_answers_not_live_unsigned_preflight_and_delete() {
    let node = Node::up("whep-endpoint", "");
    let sdp = offer();

    assert_eq!(
        post_offer(node.http, "/demo/nobody/whep", &sdp).status,
        404,
        "a stream that is not live"
    );
    let preflight = http_request(node.http, "OPTIONS", "/demo/nobody/whep", &[]).unwrap();
    assert_eq!(preflight.status, 204);
    let allowed = preflight
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("content-type") && allowed.contains("authorization"),
        "{allowed}"
    );
    assert!(preflight
        .header("access-control-expose-headers")
        .is_some_and(|v| v.contains("Location")));
    assert_eq!(
        http_request(node.http, "PATCH", "/demo/nobody/whep", &[])
            .unwrap()
            .status,
        405
    );

    let publisher = publish(
        &tool("ffmpeg"),
        &node.publish_url("demo", "live", KEY),
        30,
        "h264",
    );
    wait_live(&node, "/demo/live/live.m3u8");
    assert_eq!(
        post_offer(node.http, "/demo/live/whep", "v=0 garbage").status,
        400
    );
    let created = post_offer(node.http, "/demo/live/whep", &sdp);
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.header("content-type"), Some("application/sdp"));
    assert!(created.text().contains("a=ice-lite"), "{}", created.text());
    let location = created.header("location").expect("a Location").to_owned();
    assert!(location.starts_with("whep/"), "{location}");
    assert_eq!(node.metric("streamcdn_edge_webrtc_viewers"), 1.0);
    let resource = format!("/demo/live/{location}");
    assert_eq!(
        http_request(node.http, "DELETE", &resource, &[])
            .unwrap()
            .status,
        200
    );
    assert_eq!(node.metric("streamcdn_edge_webrtc_viewers"), 0.0);
    assert_eq!(
        http_request(node.http, "DELETE", &resource, &[])
            .unwrap()
            .status,
        404,
        "the session is gone"
    );

    // A provider with playback keys: an unsigned WHEP request is refused like HLS.
    let keys = br#"{"keys": ["demo-playback-key-000000000001"]}"#;
    let set = http_request_body(
        node.admin,
        "PUT",
        "/api/v1/providers/demo/playback-keys",
        &[("Content-Type", "application/json")],
        keys,
    )
    .unwrap();
    assert_eq!(set.status, 200, "{}", set.text());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = post_offer(node.http, "/demo/live/whep", &sdp).status;
        if status == 403 {
            break;
        }
        assert!(Instant::now() < deadline, "unsigned WHEP answered {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = wait_output(publisher);
}
