//! Signed playback URLs end to end: `up` (its top-tier edge) and an edge below it. The
//! provider turns signing on through its API; `streamcdn sign-url` mints a URL that
//! ffmpeg plays through the lower edge; expired, tampered, other-stream and
//! other-network tokens and unsigned URLs are `403` at the edge, counted, and nothing is
//! fetched upstream; keys rotate with two active.

mod common;

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use streamcdn_access::playback::{mint, Grant};

const KEY_A: &str = "demo-playback-key-a-000000000001";
const KEY_B: &str = "demo-playback-key-b-000000000002";

fn put_keys(node: &Node, keys: &[&str]) {
    let body = serde_json::json!({ "keys": keys }).to_string();
    let answer = http_request_body(
        node.admin,
        "PUT",
        "/api/v1/providers/demo/playback-keys",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
}

fn sign_url(node: &Node, edge: &Node, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_streamcdn"))
        .env("STREAMCDN_ADMIN_TOKEN", ADMIN_TOKEN)
        .args(["sign-url", "demo"])
        .args(args)
        .args(["--admin", &format!("http://127.0.0.1:{}", node.admin)])
        .args(["--base", &format!("http://127.0.0.1:{}", edge.http)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sign-url: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(key: &str, stream: &str, expires: u64, client: Option<(&str, u8)>) -> String {
    mint(
        key.as_bytes(),
        &Grant {
            expires,
            provider: "demo".into(),
            stream: Some(stream.into()),
            client: client.map(|(ip, len)| (ip.parse::<IpAddr>().unwrap(), len)),
        },
    )
    .unwrap()
}

fn status(edge: &Node, path: &str) -> u16 {
    http_get(edge.http, path, &[]).unwrap().status
}

fn refusals(edge: &Node, reason: &str) -> f64 {
    let text = http_request(edge.admin, "GET", "/metrics", &[])
        .unwrap()
        .text();
    text.lines()
        .filter(|l| {
            l.starts_with("streamcdn_edge_token_checks_total")
                && l.contains(&format!("result=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn signed_urls_play_and_everything_else_is_refused_at_the_edge() {
    let redis = Redis::start();
    let registry = redis.registry_toml("signed");
    let up = Node::up("signed-up", &registry);
    let edge = Node::role(
        "signed-edge",
        "edge",
        &format!(
            "{registry}[edge]\nparents = [\"http://127.0.0.1:{}\"]\n",
            up.http
        ),
    );
    put_keys(&up, &[KEY_A]);
    let publisher = publish(
        &tool("ffmpeg"),
        &up.publish_url("demo", "cam", KEY),
        12,
        "h264",
    );
    let url = sign_url(&up, &edge, &["--stream", "cam", "--expires-in", "10m"]);
    let path = url
        .strip_prefix(&format!("http://127.0.0.1:{}", edge.http))
        .unwrap()
        .to_owned();
    assert!(
        path.starts_with("/t/") && path.ends_with("/demo/cam/index.m3u8"),
        "{url}"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while status(&edge, &path.replace("index.m3u8", "live.m3u8")) != 200 {
        assert!(
            Instant::now() < deadline,
            "the signed live playlist never came"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // ffmpeg plays it through the lower edge (which fetches from the top tier with the
    // tier credential, not the token).
    let decoded = decode(&url, &["-read_intervals", "%+3"]);
    assert!(decoded.video_frames > 30, "{decoded:?}");

    // Refused at the edge, each counted, nothing asked upstream.
    let fetches = edge.metric("streamcdn_edge_upstream_fetches_total");
    let live = "/demo/cam/live.m3u8";
    let expired = token(KEY_A, "cam", now() - 1, None);
    let other_stream = token(KEY_A, "other", now() + 600, None);
    let other_network = token(KEY_A, "cam", now() + 600, Some(("198.51.100.0", 24)));
    let good = token(KEY_A, "cam", now() + 600, None);
    let tampered = format!(
        "{}{}",
        &good[..good.len() - 1],
        if good.ends_with('0') { "1" } else { "0" }
    );
    for (token, reason) in [
        (&expired, "expired"),
        (&other_stream, "other_stream"),
        (&other_network, "other_client"),
        (&tampered, "bad_signature"),
    ] {
        let before = refusals(&edge, reason);
        assert_eq!(status(&edge, &format!("/t/{token}{live}")), 403, "{reason}");
        assert_eq!(refusals(&edge, reason), before + 1.0, "{reason}");
    }
    assert_eq!(status(&edge, live), 403, "an unsigned URL");
    assert_eq!(refusals(&edge, "missing"), 1.0);
    assert_eq!(
        edge.metric("streamcdn_edge_upstream_fetches_total"),
        fetches,
        "a refused request reached upstream"
    );
    // A bound token opens for its own network (the tests come from 127.0.0.1).
    let bound = token(KEY_A, "cam", now() + 600, Some(("127.0.0.0", 8)));
    assert_eq!(status(&edge, &format!("/t/{bound}{live}")), 200);
    // Another provider without keys stays open.
    assert_ne!(status(&edge, "/tsprov/nothing/live.m3u8"), 403);

    // Rotation: B first, A still valid; then A alone is gone.
    put_keys(&up, &[KEY_B, KEY_A]);
    let with_b = token(KEY_B, "cam", now() + 600, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&edge, &format!("/t/{with_b}{live}")) != 200 {
        assert!(
            Instant::now() < deadline,
            "the new key never took effect at the edge"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        status(&edge, &format!("/t/{good}{live}")),
        200,
        "the old key while rotating"
    );
    put_keys(&up, &[KEY_B]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&edge, &format!("/t/{good}{live}")) != 403 {
        assert!(Instant::now() < deadline, "the retired key still opens");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(refusals(&edge, "unknown_key") >= 1.0);
    // Signing off again: open playback.
    put_keys(&up, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&edge, live) != 200 {
        assert!(Instant::now() < deadline, "playback did not open again");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = wait_output(publisher);
}
